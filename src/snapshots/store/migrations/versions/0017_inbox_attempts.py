"""inbox attempts: each failed attempt at applying an inbox item (when, the error, the worker),
written with the failure, shown on the console's event page

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("worker", sa.String(100)),
    )
    op.create_index("ix_inbox_attempts_item_id", "inbox_attempts", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_inbox_attempts_item_id", "inbox_attempts")
    op.drop_table("inbox_attempts")
