"""inbox payloads: each inbox item's raw bytes in a table of their own (`inbox_payloads`),
written once, so a worker's claim and settle no longer rewrite them (SQLite rewrites a row
whole: the payload went through its WAL three times); a pruned item has no row there

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_payloads",
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    # One statement inside the database: no payload passes through this process. A pruned
    # item's payload was emptied; it gets no row.
    op.execute(
        "INSERT INTO inbox_payloads (item_id, payload) "
        "SELECT id, payload FROM inbox_items WHERE pruned_at IS NULL"
    )
    op.drop_column("inbox_items", "payload")


def downgrade() -> None:
    # A pruned item's payload is empty again. SQLite adds a NOT NULL column only with a
    # default; PostgreSQL fills the column, then makes it NOT NULL as it was.
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column(
        "inbox_items",
        sa.Column(
            "payload",
            sa.LargeBinary,
            nullable=not sqlite,
            server_default=sa.text("X''") if sqlite else None,
        ),
    )
    empty = "X''" if sqlite else "''::bytea"
    op.execute(
        "UPDATE inbox_items SET payload = COALESCE("
        f"(SELECT payload FROM inbox_payloads WHERE item_id = inbox_items.id), {empty})"
    )
    if not sqlite:
        op.alter_column("inbox_items", "payload", nullable=False)
    op.drop_table("inbox_payloads")
