"""console speed: the inbox's (status, error_cause) index also carries connection_id and
received_at, so the overview counts what waits, failed or died per connection, and the age of
the oldest waiting item, from the index alone (no extra index to write per item)

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0011"
branch_labels = None
depends_on = None

OLD = ("ix_inbox_items_status_error_cause", ["status", "error_cause"])
NEW = (
    "ix_inbox_items_status_error_cause_connection_id_received_at",
    ["status", "error_cause", "connection_id", "received_at"],
)


def upgrade() -> None:
    op.create_index(NEW[0], "inbox_items", NEW[1])
    op.drop_index(OLD[0], table_name="inbox_items")


def downgrade() -> None:
    op.create_index(OLD[0], "inbox_items", OLD[1])
    op.drop_index(NEW[0], table_name="inbox_items")
