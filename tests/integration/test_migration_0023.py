"""Migration 0023 on SQLite and PostgreSQL: the hourly counts of arrivals are made from the items
stored before it (hours cut at whole seconds, as `arrivals.hour_of` cuts them), intake keeps
them from then on, and it goes down again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from snapshots import arrivals, inbox
from snapshots.store import db as store
from snapshots.store.db import Database
from tests.conftest import EventFactory
from tests.integration import helpers
from tests.integration.test_arrivals import arrival, counted, kept

BEFORE = helpers.before("0023")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def before_0023(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own migrated to the revision before 0023."""
    with helpers.migrated_to(request, tmp_path, BEFORE) as database:
        yield database


def test_items_stored_before_are_counted(
    before_0023: Database, event_factory: EventFactory
) -> None:
    items = sa.table(
        "inbox_items",
        *(
            sa.column(n)
            for n in (
                "connection_id",
                "event_id",
                "event_type",
                "event_created",
                "livemode",
                "source",
                "status",
                "attempts",
                "run_after",
                "received_at",
            )
        ),
    )
    # On an hour's edge, a hair before one, and a fraction of a second in.
    times = [1_800_000_000.0, 1_800_000_000.0 - 1e-6, 1_800_003_599.999, 1_800_003_600.5, 7.25]
    with before_0023.engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {
                    "connection_id": f"conn_{n % 2}",
                    "event_id": f"evt_old{n}",
                    "event_type": "customer.updated",
                    "event_created": 1,
                    "livemode": False,
                    "source": "webhook",
                    "status": "done",
                    "attempts": 1,
                    "run_after": 0.0,
                    "received_at": at,
                }
                for n, at in enumerate(times)
            ],
        )
    store.migrate(before_0023)
    with before_0023.write() as tx:
        inbox.enqueue_many(tx, [arrival("conn_0", event_factory("customer.updated"))])
    with before_0023.read() as tx:
        found = kept(tx)
        assert found == counted(tx)
    edge = arrivals.hour_of(1_800_000_000.5)  # an hour starting at 1_800_000_000.0
    assert edge == 1_800_000_000
    assert found[("conn_0", edge)] == 2
    assert found[("conn_1", edge - 3600)] == 1
    assert found[("conn_1", edge + 3600)] == 1
    assert sum(found.values()) == len(times) + 1
    helpers.downgrade(before_0023, BEFORE)
    assert "inbox_arrivals" not in sa.inspect(before_0023.engine).get_table_names()
