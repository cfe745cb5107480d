"""applied by: each inbox item records the flows version a worker applied it with, so a trace
shows the fields that version wrote (not the newest version's)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbox_items", sa.Column("flows_version", sa.Integer))  # no rewrite of the table


def downgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.drop_column("flows_version")
