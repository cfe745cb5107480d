"""batched worker and retention: the claim index (unsettled inbox items only, covering the
claim condition); `inbox_items.pruned_at` and the index of items retention may prune; audit
entries older than a year (the shortest audit retention) may be deleted, no others

Revision ID: 0012
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0008"
branch_labels = None
depends_on = None

UNSETTLED = "status IN ('pending', 'failed', 'processing')"
APPEND_ONLY = "audit entries are append-only"
YEAR = 365 * 86400  # seconds: audit entries younger than this can never be deleted


def _audit_triggers(deletable_after: int | None) -> None:
    """The audit log's guard: no update, no delete (of an entry younger than
    `deletable_after` seconds, when given)."""
    if op.get_bind().dialect.name == "postgresql":
        old_enough = (
            "FALSE"
            if deletable_after is None
            else f"OLD.at < extract(epoch from now()) - {deletable_after}"
        )
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' AND {old_enough} THEN RETURN OLD; END IF;
              RAISE EXCEPTION '{APPEND_ONLY}';
            END; $$ LANGUAGE plpgsql
            """
        )
        return
    op.execute("DROP TRIGGER audit_entries_no_delete")
    young = (
        ""
        if deletable_after is None
        else f" WHEN OLD.at >= strftime('%s', 'now') - {deletable_after}"
    )
    op.execute(
        f"CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries{young} "
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
    )


def upgrade() -> None:
    _audit_triggers(YEAR)
    with op.batch_alter_table("inbox_items") as batch:
        batch.add_column(sa.Column("pruned_at", sa.Float(), nullable=True))
    op.create_index(
        "ix_inbox_items_unpruned",
        "inbox_items",
        ["processed_at"],
        postgresql_where=sa.text("pruned_at IS NULL"),
        sqlite_where=sa.text("pruned_at IS NULL"),
    )
    op.create_index(
        "ix_inbox_items_claimable",
        "inbox_items",
        ["id"],
        postgresql_include=["status", "run_after", "lease_until"],
        postgresql_where=sa.text(UNSETTLED),
        sqlite_where=sa.text(UNSETTLED),
    )


def downgrade() -> None:
    _audit_triggers(None)
    op.drop_index("ix_inbox_items_claimable", table_name="inbox_items")
    op.drop_index("ix_inbox_items_unpruned", table_name="inbox_items")
    with op.batch_alter_table("inbox_items") as batch:
        batch.drop_column("pruned_at")
