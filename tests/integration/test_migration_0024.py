"""Migration 0024 on SQLite and PostgreSQL: on SQLite the failed and dead items stored before it
are counted per connection, status and cause, its triggers keep the counts from then on, and it
goes down again (triggers and table); PostgreSQL gets the table alone, left empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from snapshots.store import db as store
from snapshots.store.db import Database
from tests.integration import helpers

BEFORE = helpers.before("0024")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def before_0024(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own migrated to the revision before 0024."""
    with helpers.migrated_to(request, tmp_path, BEFORE) as database:
        yield database


def _kept(database: Database) -> dict[tuple[str, str, str], int]:
    with database.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT connection_id, status, cause, count FROM inbox_failures")
        )
        return {(c, s, cause): int(n) for c, s, cause, n in rows}


def _set(database: Database, item_id: int, **values: str) -> None:
    items = sa.table("inbox_items", sa.column("id"), *(sa.column(name) for name in values))
    with database.engine.begin() as conn:
        conn.execute(items.update().where(items.c.id == item_id).values(**values))


def test_failing_items_stored_before_are_counted_and_kept(before_0024: Database) -> None:
    made = [
        ("conn_a", "dead", "a cause"),
        ("conn_a", "dead", "a cause"),
        ("conn_a", "failed", "a cause"),
        ("conn_b", "dead", None),
        ("conn_b", "done", None),
        ("conn_b", "pending", "waits"),
    ]
    with before_0024.engine.begin() as conn:
        helpers.insert_items(
            conn,
            [
                {
                    "id": n + 1,
                    "connection_id": connection_id,
                    "event_id": f"evt_old{n}",
                    "status": status,
                    "error_cause": cause,
                }
                for n, (connection_id, status, cause) in enumerate(made)
            ],
        )
    store.migrate(before_0024)
    sqlite = before_0024.engine.dialect.name == "sqlite"
    expected = {
        ("conn_a", "dead", "a cause"): 2,
        ("conn_a", "failed", "a cause"): 1,
        ("conn_b", "dead", ""): 1,
    }
    assert _kept(before_0024) == (expected if sqlite else {})
    _set(before_0024, 1, status="pending")  # a dead item replayed
    _set(before_0024, 5, status="dead", error_cause="other")  # a done one dead
    if sqlite:
        expected[("conn_a", "dead", "a cause")] = 1
        expected[("conn_b", "dead", "other")] = 1
    assert _kept(before_0024) == (expected if sqlite else {})
    helpers.downgrade(before_0024, BEFORE)
    assert "inbox_failures" not in sa.inspect(before_0024.engine).get_table_names()
    _set(before_0024, 2, status="pending")  # no trigger left behind to fail on the table
