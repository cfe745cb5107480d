"""inbox failures: how many items of a connection are failed or dead with each cause, so the
events list's failures by cause and its replay count read a few rows instead of thousands of
index entries; on SQLite, filled here from the items and kept from then on by triggers on
`inbox_items` (PostgreSQL counts with the index: the table stays empty there)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

FAILING = "('failed', 'dead')"
TRIGGERS = ("inbox_failures_insert", "inbox_failures_update", "inbox_failures_delete")


def _counted(row: str) -> str:
    """The statement that counts `row` (NEW) in, for a trigger's body."""
    return (
        "INSERT INTO inbox_failures (connection_id, status, cause, count) "
        f"SELECT {row}.connection_id, {row}.status, coalesce({row}.error_cause, ''), 1 "
        f"WHERE {row}.status IN {FAILING} "
        "ON CONFLICT (status, cause, connection_id) DO UPDATE SET count = count + 1;"
    )


def _uncounted(row: str) -> str:
    """The statements that count `row` (OLD) out (a row counted down to none goes)."""
    key = (
        f"connection_id = {row}.connection_id AND status = {row}.status "
        f"AND cause = coalesce({row}.error_cause, '')"
    )
    return (
        f"UPDATE inbox_failures SET count = count - 1 WHERE {key} "
        f"AND {row}.status IN {FAILING}; "
        f"DELETE FROM inbox_failures WHERE {key} AND count = 0;"
    )


def upgrade() -> None:
    op.create_table(
        "inbox_failures",
        sa.Column("status", sa.String(20), primary_key=True),
        sa.Column("cause", sa.String(200), primary_key=True),
        sa.Column("connection_id", sa.String(40), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,  # the key is the table: a status's causes in one range
    )
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO inbox_failures (connection_id, status, cause, count) "
        "SELECT connection_id, status, coalesce(error_cause, ''), count(*) FROM inbox_items "
        f"WHERE status IN {FAILING} GROUP BY connection_id, status, coalesce(error_cause, '')"
    )
    # Each trigger's condition is all an event on its ordinary path costs (pending,
    # processing, done): its body runs only for an item that enters or leaves failed or dead.
    op.execute(
        "CREATE TRIGGER inbox_failures_insert AFTER INSERT ON inbox_items "
        f"WHEN NEW.status IN {FAILING} BEGIN {_counted('NEW')} END"
    )
    op.execute(
        "CREATE TRIGGER inbox_failures_update "
        "AFTER UPDATE OF status, error_cause, connection_id ON inbox_items "
        f"WHEN OLD.status IN {FAILING} OR NEW.status IN {FAILING} "
        f"BEGIN {_uncounted('OLD')} {_counted('NEW')} END"
    )
    op.execute(
        "CREATE TRIGGER inbox_failures_delete AFTER DELETE ON inbox_items "
        f"WHEN OLD.status IN {FAILING} BEGIN {_uncounted('OLD')} END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("inbox_failures")
