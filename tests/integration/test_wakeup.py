"""Wake-ups: an idle worker hears that work arrived (PostgreSQL LISTEN/NOTIFY; on SQLite the
flag `serve`'s intake raises for its embedded worker) instead of polling."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import connections, errors, flowfile, inbox, intake, wakeup, worker
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.conftest import EventFactory, fixture
from tests.integration.helpers import row

REGISTRY = flowfile.load()


def customer(event_factory: EventFactory, n: int) -> dict[str, Any]:
    return event_factory("customer.created", object={**fixture("customer"), "id": f"cus_wake{n}"})


def store(db: Database, connection_id: str, event: dict[str, Any]) -> intake.Receipt:
    payload = json.dumps(event).encode()
    return intake.store(db, REGISTRY, connection_id=connection_id, event=event, payload=payload)


def later(seconds: float, work: Any) -> threading.Thread:
    thread = threading.Timer(seconds, work)
    thread.start()
    return thread


def test_a_listener_wakes_when_an_event_is_stored_and_not_for_a_duplicate(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    listener = wakeup.Listener(db.engine.url)
    stop = threading.Event()
    try:
        assert listener.wait(stop, 0.3) is False  # listening now; nothing arrived
        event = customer(event_factory, 1)
        later(0.2, lambda: store(db, connection.id, event)).join()
        assert listener.wait(stop, 30.0) is True
        assert listener.wait(stop, 0.3) is False
        store(db, connection.id, event)  # a redelivery: nothing new to claim
        assert listener.wait(stop, 0.5) is False
        with db.write() as tx:  # a replay makes an item claimable again
            inbox.requeue(tx, [store(db, connection.id, event).item_id], statuses=("pending",))
        assert listener.wait(stop, 30.0) is True
        stop.set()
        assert listener.wait(stop, 30.0) is False  # a stopping worker does not wait
    finally:
        listener.close()


def test_a_flag_wakes_its_waiter_once() -> None:
    event = threading.Event()
    flag = wakeup.Flag(event)
    stop = threading.Event()
    assert flag.wait(stop, 0.3) is False
    later(0.2, event.set)
    assert flag.wait(stop, 30.0) is True
    assert flag.wait(stop, 0.3) is False


def test_group_commit_raises_the_flag_for_new_items_only(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    told: list[int] = []
    commits = intake.GroupCommit(db, REGISTRY, arrived=lambda: told.append(1))
    event = customer(event_factory, 2)
    payload = json.dumps(event).encode()

    async def submit() -> intake.Receipt:
        return await commits.submit(connection_id=connection.id, event=event, payload=payload)

    try:
        first = asyncio.run(submit())
        again = asyncio.run(submit())
    finally:
        commits.close()
    assert (first.duplicate, again.duplicate) == (False, True)
    if db.dialect == "sqlite":  # on PostgreSQL a worker LISTENs instead
        assert told == [1]


def test_group_commit_answers_503_when_its_connection_is_lost_then_takes_a_new_one(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("the writer thread and its own connection are PostgreSQL's")
    commits = intake.GroupCommit(db, REGISTRY)
    events = [customer(event_factory, n) for n in (3, 4, 5)]

    async def submit(event: dict[str, Any]) -> intake.Receipt:
        payload = json.dumps(event).encode()
        return await commits.submit(connection_id=connection.id, event=event, payload=payload)

    try:
        assert asyncio.run(submit(events[0])).duplicate is False
        with db.write() as tx:  # the server drops the writer's connection (a restart, a proxy)
            killed = tx.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND query LIKE 'WITH v AS %'"
                )
            ).scalar_one()
        assert killed == 1
        with pytest.raises(errors.Unavailable):
            asyncio.run(submit(events[1]))
        stored = asyncio.run(submit(events[2]))
    finally:
        commits.close()
    assert stored.duplicate is False
    assert row(db, stored.item_id).status == "pending"
    with db.read() as tx:
        assert inbox.counts(tx)["pending"] == 2  # the refused one was not stored


def test_a_waiting_worker_applies_what_arrives(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    if db.dialect == "postgresql":
        waker: wakeup.Wakeup = wakeup.Listener(db.engine.url)
    else:
        event = threading.Event()
        waker = wakeup.Flag(event)
    slow = settings.model_copy(update={"worker_idle": 3600.0})
    work = worker.Worker(db, REGISTRY, slow, wakeup=waker)
    stop = threading.Event()
    thread = threading.Thread(target=work.run, args=(stop,))
    thread.start()
    try:
        receipt = store(db, connection.id, customer(event_factory, 3))
        if isinstance(waker, wakeup.Flag):
            event.set()
        stop.wait(0.1)
        for _ in range(300):
            if row(db, receipt.item_id).status == "done":
                break
            stop.wait(0.1)
        assert row(db, receipt.item_id).status == "done"
    finally:
        stop.set()
        thread.join(10)
        if isinstance(waker, wakeup.Listener):
            waker.close()
    assert not thread.is_alive()
