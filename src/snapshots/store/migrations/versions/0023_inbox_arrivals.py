"""inbox arrivals: how many items of a connection arrived in each hour, kept by the statement
that stores them, so the overview's hourly bars read 24 rows rather than a day of the
(connection_id, received_at) index; filled here from the items already there

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_arrivals",
        sa.Column("connection_id", sa.String(40), primary_key=True),
        sa.Column("hour", sa.BigInteger, primary_key=True),
        sa.Column("shard", sa.SmallInteger, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    # The hour an item arrived in, as `inbox.hour_of` computes it (received_at is positive:
    # SQLite's CAST truncates, which is the floor there).
    if op.get_bind().dialect.name == "postgresql":
        hour = "CAST(floor(received_at) AS BIGINT) / 3600 * 3600"
    else:
        hour = "CAST(received_at AS INTEGER) / 3600 * 3600"
    op.execute(
        "INSERT INTO inbox_arrivals (connection_id, hour, shard, count) "
        f"SELECT connection_id, {hour}, 0, count(*) FROM inbox_items "
        f"GROUP BY connection_id, {hour}"
    )


def downgrade() -> None:
    op.drop_table("inbox_arrivals")
