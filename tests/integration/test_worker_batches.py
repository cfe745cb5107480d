"""The batched worker (`records.batch`) on SQLite and PostgreSQL: a shuffled stream with
redeliveries, claimed in batches of random sizes, ends in the same records as the same stream
applied one event at a time; an item whose own data is bad fails alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from snapshots import connections, flowfile, intake, worker
from snapshots.records import batch
from snapshots.records.kinds import CONTACT, INVOICE, LOCATION
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, fixture
from tests.integration import test_ordering as ordering
from tests.integration.helpers import put, row

REGISTRY = flowfile.load()


def location_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A few watcher events about Terminal locations, some of them in one second."""
    found = []
    for n in range(draw(st.integers(0, 2))):
        kinds = ["terminal.location.created", "terminal.location.updated"]
        if draw(st.booleans()):
            kinds.append("terminal.location.deleted")
        for version, kind in enumerate(kinds):
            obj = {**fixture("terminal.location"), "id": f"tml_{n}"}
            obj["display_name"] = f"Shop {n} v{version}"
            found.append(
                {
                    "id": f"evt_loc{n}_{version}",
                    "object": "event",
                    "created": ordering.T0 + draw(st.integers(0, 1)) + version,
                    "data": {"object": obj},
                    "livemode": False,
                    "type": kind,
                }
            )
    return found


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """A shuffled stream with redeliveries, and the sizes of the batches that claim it."""
    scenario = draw(ordering.scenarios())
    events = scenario.arrival + location_events(draw)
    events = list(draw(st.permutations(events)))
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=10))
    return events, sizes


def one_at_a_time(db: Database, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Each distinct event in its own transaction, item by item, in the order it arrived."""
    ordering.wipe(db)
    seen = set()
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        ordering.apply(db, ordering.CONNECTION_ID, event)
    return final_records(db)


def in_batches(
    db: Database, settings: Settings, events: list[dict[str, Any]], sizes: list[int]
) -> dict[str, Any]:
    ordering.wipe(db)
    for event in events:
        intake.store(
            db,
            REGISTRY,
            connection_id=ordering.CONNECTION_ID,
            event=event,
            payload=json.dumps(event).encode(),
        )
    work = worker.Worker(db, REGISTRY, settings, name="batch-worker")
    turn = 0
    while True:
        size = sizes[turn % len(sizes)]
        turn += 1
        work.settings = settings.model_copy(update={"worker_batch": size})
        if not work.step():
            break
    distinct = len({event["id"] for event in events})
    assert (work.stats.failed, work.stats.dead, work.stats.fallbacks) == (0, 0, 0)
    assert work.stats.done == work.stats.together == distinct
    return final_records(db)


def final_records(db: Database) -> dict[str, Any]:
    found = ordering.final_records(db)
    locations = ordering._all(db, "location")
    found["locations"] = {
        loc["stripe_location_id"]: {k: v for k, v in loc.items() if k not in ordering.IGNORED}
        for loc in locations
    }
    assert len(found["locations"]) == len(locations), "two locations for one Stripe location"
    return found


def check(db: Database, settings: Settings, stream: tuple[list[dict[str, Any]], list[int]]) -> None:
    events, sizes = stream
    expected = one_at_a_time(db, events)
    assert in_batches(db, settings, events, sizes) == expected


@hypothesis_settings(max_examples=60, deadline=None)
@given(stream=streams())
def test_batches_of_any_size_give_the_one_at_a_time_records_sqlite(
    sqlite_store: tuple[Database, Settings], stream: tuple[list[dict[str, Any]], list[int]]
) -> None:
    check(*sqlite_store, stream)


@pytest.mark.postgres
@hypothesis_settings(max_examples=20, deadline=None)
@given(stream=streams())
def test_batches_of_any_size_give_the_one_at_a_time_records_postgres(
    postgres_store: tuple[Database, Settings], stream: tuple[list[dict[str, Any]], list[int]]
) -> None:
    check(*postgres_store, stream)


sqlite_store = ordering.sqlite_store
postgres_store = ordering.postgres_store


# A bad item fails alone.


def customer(event_factory: EventFactory, n: int, **changes: Any) -> dict[str, Any]:
    obj = {**fixture("customer"), "id": f"cus_batch{n}", "email": f"b{n}@example.com"}
    return event_factory("customer.created", object={**obj, **changes})


def test_an_item_whose_data_is_bad_fails_alone_and_the_batch_is_applied(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    good = [put(db, connection.id, customer(event_factory, n)) for n in range(3)]
    bad = put(db, connection.id, customer(event_factory, 9, id=""))  # no id to match on
    good += [put(db, connection.id, customer(event_factory, n)) for n in range(3, 6)]
    work = worker.Worker(db, REGISTRY, settings.model_copy(update={"worker_batch": 50}))
    assert work.step() == 7
    assert work.stats.fallbacks == 1
    assert [row(db, item).status for item in good] == ["done"] * 6
    assert row(db, bad).status == "dead"
    assert "no id" in (row(db, bad).last_error or "")
    with db.read() as tx:
        assert tx.execute(sa.select(sa.func.count()).select_from(tables.contacts)).scalar() == 6


def test_a_value_the_database_refuses_fails_its_item_alone(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite does not enforce column lengths")
    good = [put(db, connection.id, customer(event_factory, n)) for n in range(4)]
    bad = put(db, connection.id, customer(event_factory, 9, phone="5" * 300))
    work = worker.Worker(db, REGISTRY, settings.model_copy(update={"worker_batch": 50}))
    assert work.step() == 5
    assert work.stats.fallbacks == 1
    assert [row(db, item).status for item in good] == ["done"] * 4
    assert row(db, bad).status == "dead"  # a DataError is permanent


@pytest.mark.parametrize("kind", [CONTACT, INVOICE, LOCATION], ids=lambda kind: kind.name)
def test_a_batch_reads_its_records_on_sqlite_by_index_not_by_scanning(
    sqlite_url: str, kind: Any
) -> None:
    """Every batch reads the records it touches: a scan of the table made each batch cost
    more the more records there were (invoices were scanned)."""
    db = Database(sqlite_url)
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    by_email = kind is CONTACT
    params = {"stripe_ids": ["id_a", "id_b"], "connection_ids": ["conn_a"]}
    if by_email:
        params["emails"] = ["ada@example.com"]
    try:
        with db.read() as tx:
            tx.execute(batch._reading(tx.dialect, kind, by_email=by_email), params).all()
            statement, parameters = seen[-1]
            explained = tx.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = " ".join(str(r[-1]) for r in explained)
    finally:
        db.dispose()
    assert "SEARCH" in plan and "SCAN" not in plan, plan
