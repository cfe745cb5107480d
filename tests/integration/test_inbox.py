"""The inbox on SQLite and PostgreSQL: dedup, claims under a lease, reading, replay, and the
`snapshots events` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import connections, errors, flowfile, inbox, keys, worker
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.worker import Worker
from tests.conftest import EventFactory, fixture
from tests.integration.helpers import enqueue, row

T = tables.inbox_items
SNAPSHOTS = Path(sys.executable).with_name("snapshots")


def claim(db: Database, *, worker_id: str, limit: int, lease: float) -> list[inbox.Item]:
    with db.write() as tx:
        return inbox.claim(tx, worker_id=worker_id, limit=limit, lease=lease)


def get(db: Database, ref: str) -> inbox.Event:
    with db.read() as tx:
        return inbox.get(tx, ref)


def list_items(
    db: Database, *, status: str | None = None, limit: int = 50, before: int | None = None
) -> list[inbox.Event]:
    with db.read() as tx:
        return inbox.page(tx, status=status, limit=limit, starting_after=before).data


def replay(db: Database, ref: str) -> inbox.Event:
    with db.write() as tx:
        return inbox.replay(tx, ref)


def customer_event(event_factory: EventFactory, n: int, **changes: Any) -> dict[str, Any]:
    obj = {**fixture("customer"), "id": f"cus_inbox{n:05d}", "email": f"c{n}@example.com"}
    return event_factory("customer.created", object={**obj, **changes})


# Enqueue


def test_enqueue_stores_once_per_connection_and_event_id(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = customer_event(event_factory, 1)
    first = enqueue(db, connection.id, event)
    again = enqueue(db, connection.id, event)
    assert first[1:] == ("pending", False)
    assert again == (first[0], "pending", True)
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one() == 1


def test_a_duplicate_reports_the_current_status_and_changes_nothing(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = customer_event(event_factory, 1)
    item_id, _, _ = enqueue(db, connection.id, event)
    claim(db, worker_id="w", limit=10, lease=30)
    # A resend with other bytes (Stripe retried) is still the same event: stored once, raw
    # bytes of the first arrival kept.
    changed = {**event, "pending_webhooks": 2}
    assert enqueue(db, connection.id, changed) == (item_id, "processing", True)
    stored = row(db, item_id)
    assert stored.payload == json.dumps(event).encode()
    assert stored.locked_by == "w"
    assert stored.attempts == 1


def test_the_same_event_id_on_two_connections_is_two_items(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = customer_event(event_factory, 1)
    a = enqueue(db, connection.id, event)
    b = enqueue(db, "conn_other", event)
    assert a[0] != b[0]
    assert not a[2] and not b[2]


def test_an_unwanted_event_is_stored_ignored_and_never_claimed(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = event_factory("charge.succeeded")
    item_id, status, duplicate = enqueue(db, connection.id, event, wanted=False)
    assert (status, duplicate) == ("ignored", False)
    stored = row(db, item_id)
    assert stored.processed_at is not None
    assert claim(db, worker_id="w", limit=10, lease=30) == []


def test_enqueue_keeps_the_envelope_fields(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = event_factory("customer.updated", created=1_700_000_000, livemode=True)
    item_id, _, _ = enqueue(db, connection.id, event, source="test")
    stored = row(db, item_id)
    assert stored.event_id == event["id"]
    assert stored.event_type == "customer.updated"
    assert stored.event_created == 1_700_000_000
    assert stored.api_version == event["api_version"]
    assert stored.livemode is True
    assert stored.source == "test"
    assert stored.attempts == 0
    assert stored.run_after <= time.time()


# Claims


def test_claim_takes_the_oldest_first_up_to_the_limit(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    made = [enqueue(db, connection.id, customer_event(event_factory, n))[0] for n in range(7)]
    before = time.time()
    first = claim(db, worker_id="w1", limit=3, lease=30)
    second = claim(db, worker_id="w2", limit=3, lease=30)
    third = claim(db, worker_id="w3", limit=3, lease=30)
    assert [i.id for i in first] == made[:3]
    assert [i.id for i in second] == made[3:6]
    assert [i.id for i in third] == made[6:]
    assert claim(db, worker_id="w4", limit=3, lease=30) == []

    item = first[0]
    assert item.attempts == 1
    assert item.event_type == "customer.created"
    assert item.connection_id == connection.id
    assert json.loads(item.payload)["data"]["object"]["id"] == "cus_inbox00000"
    stored = row(db, item.id)
    assert stored.status == "processing"
    assert stored.locked_by == "w1"
    assert before + 30 <= stored.lease_until <= time.time() + 30


@contextmanager
def _claims_sent(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The claims' statements and parameters sent to the database meanwhile."""
    claims: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "UPDATE inbox_items SET status" in statement:  # (PostgreSQL's begins WITH claimed)
            claims.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        yield claims
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)


def test_a_claim_on_sqlite_reads_the_claim_index_not_every_due_item(sqlite_url: str) -> None:
    """Left to choose, SQLite merged the due items of the (status, run_after) index and sorted
    them all, on every claim: a drain's claims cost more the longer its backlog."""
    db = Database(sqlite_url)
    try:
        with _claims_sent(db) as claims:
            assert claim(db, worker_id="w1", limit=200, lease=30) == []
        [(statement, parameters)] = claims
        with db.read() as tx:
            explained = tx.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = " ".join(str(r[-1]) for r in explained)
    finally:
        db.dispose()
    assert "ix_inbox_items_claimable" in plan, plan
    assert "TEMP B-TREE" not in plan and "MULTI-INDEX OR" not in plan, plan


def _claim_plan(db: Database, connection_id: str) -> tuple[str, str, dict[str, str]]:
    """EXPLAIN of a claim of 200 items on PostgreSQL, in the claim's own transaction, with
    statistics older than the inbox: taken when 500 items were due, before 20,000 more were
    stored and settled (an inbox grows faster than autovacuum looks). Returns the plan of the
    pick, the whole plan, and the planner and commit settings the claim ran with."""

    def items(tx: Any, first: int, last: int, status: str) -> None:
        tx.execute(
            sa.text(
                "INSERT INTO inbox_items (connection_id, event_id, event_type, event_created,"
                " livemode, source, status, run_after, received_at) SELECT :c, 'evt_' || n,"
                " 'customer.updated', n, false, 'webhook', :s, 0, n"
                " FROM generate_series(CAST(:first AS INTEGER), CAST(:last AS INTEGER)) AS n"
            ),
            {"c": connection_id, "s": status, "first": first, "last": last},
        )

    with db.write() as tx:
        items(tx, 1, 500, "pending")
        tx.exec_driver_sql("ANALYZE inbox_items")
        tx.execute(T.update().values(status="done"))
        items(tx, 501, 20_300, "done")
        items(tx, 20_301, 20_500, "pending")
    with db.write() as tx, _claims_sent(db) as claims:
        assert len(inbox.claim(tx, worker_id="w1", limit=200, lease=30)) == 200
        [(statement, parameters)] = claims
        explained = tx.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        plan = "\n".join(r[0] for r in explained)
        names = ("enable_sort", "enable_bitmapscan", "synchronous_commit")
        ran_with = {name: tx.exec_driver_sql(f"SHOW {name}").scalar_one() for name in names}
    picking = plan.split("InitPlan", 1)[1].split("->  Index Scan using pk_", 1)[0]
    return picking, plan, ran_with


def test_a_claim_on_postgresql_finds_its_items_by_the_primary_key(
    db: Database, connection: connections.Connection
) -> None:
    """The claim picks its ids, then updates those rows found by the primary key. Written
    `id IN (...)`, PostgreSQL joined the picked ids to a scan of every item."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner")
    _, plan, _ = _claim_plan(db, connection.id)
    update = plan.split("Update on inbox_items", 1)[1]
    assert "Index Scan using pk_inbox_items" in update, plan
    assert "Seq Scan on inbox_items" not in update, plan


def test_a_claim_on_postgresql_picks_from_the_claim_index_whatever_the_statistics(
    db: Database, connection: connections.Connection
) -> None:
    """The claim picks its ids from the claim index, in claim order. Seeing few items due (a
    worker keeps up), PostgreSQL took a bitmap of a status index (which keeps an entry for
    every version of every item until a vacuum) and sorted what it found: 2.3 ms of a 10 ms
    claim in the peers harness, against 0.7 ms. The claim's transaction turns both off."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner")
    picking, plan, ran_with = _claim_plan(db, connection.id)
    assert ran_with == {
        "enable_sort": "off",
        "enable_bitmapscan": "off",
        "synchronous_commit": "off",
    }
    assert "Index Scan using ix_inbox_items_claimable" in picking, plan
    assert "Bitmap" not in picking and "Sort" not in picking, plan


def test_a_claim_takes_the_payloads_as_stored_in_binary_on_postgresql(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    """PostgreSQL sends the claim's rows in binary (a BYTEA as text is two hex digits a
    byte, written by the server and read back by psycopg); every other statement stays text."""
    event = customer_event(event_factory, 1, name='Zoë \u00e9\u4e2d\U0001f600 \\x00 "q"')
    item_id, _, _ = enqueue(db, connection.id, event)
    with db.read() as tx:
        stored = inbox.payload(tx, item_id)
    formats: list[tuple[str, list[int]]] = []

    def seen(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        result = getattr(cursor, "pgresult", None)  # psycopg's; SQLite has none
        if result is not None and result.nfields:
            formats.append((statement, [result.fformat(n) for n in range(result.nfields)]))

    sa.event.listen(db.engine, "after_cursor_execute", seen)
    try:
        [claimed] = claim(db, worker_id="w1", limit=10, lease=30)
        with db.read() as tx:
            assert inbox.payload(tx, item_id) == stored
    finally:
        sa.event.remove(db.engine, "after_cursor_execute", seen)
    assert claimed.payload == stored and isinstance(claimed.payload, bytes)
    assert json.loads(claimed.payload)["data"]["object"]["name"] == event["data"]["object"]["name"]
    if db.dialect == "postgresql":
        claims = [f for s, f in formats if "UPDATE inbox_items SET status" in s]
        others = [f for s, f in formats if "UPDATE inbox_items SET status" not in s]
        assert claims == [[1] * len(claims[0])], formats  # binary, every column
        assert others and all(f == [0] * len(f) for f in others), formats


def test_claim_skips_items_not_due_and_finished_ones(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    due_failed, later_failed, done, dead, pending = (
        enqueue(db, connection.id, customer_event(event_factory, n))[0] for n in range(5)
    )
    now = time.time()
    with db.write() as conn:
        conn.execute(T.update().where(T.c.id == due_failed).values(status="failed", run_after=0))
        conn.execute(
            T.update().where(T.c.id == later_failed).values(status="failed", run_after=now + 60)
        )
        conn.execute(T.update().where(T.c.id == done).values(status="done"))
        conn.execute(T.update().where(T.c.id == dead).values(status="dead"))
    claimed = claim(db, worker_id="w", limit=10, lease=30)
    assert [i.id for i in claimed] == [due_failed, pending]


def test_a_held_claim_is_not_claimed_again_until_its_lease_runs_out(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    item_id, _, _ = enqueue(db, connection.id, customer_event(event_factory, 1))
    [held] = claim(db, worker_id="worker-a", limit=10, lease=0.3)
    assert held.id == item_id
    assert claim(db, worker_id="worker-b", limit=10, lease=30) == []

    time.sleep(0.4)
    [taken] = claim(db, worker_id="worker-b", limit=10, lease=30)
    assert taken.id == item_id
    assert taken.attempts == 2  # every claim counts as an attempt
    stored = row(db, item_id)
    assert stored.locked_by == "worker-b"
    assert stored.lease_until > time.time() + 25

    with db.write() as conn:
        assert inbox.still_mine(conn, [item_id], worker_id="worker-a") == set()
        assert inbox.still_mine(conn, [item_id], worker_id="worker-b") == {item_id}


def test_still_mine_only_counts_items_being_processed(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    ids = [enqueue(db, connection.id, customer_event(event_factory, n))[0] for n in range(3)]
    claim(db, worker_id="w", limit=3, lease=30)
    with db.write() as conn:
        inbox.finish(conn, [(ids[0], "done", ["contacts"])])
        inbox.fail(conn, ids[1], error="boom", dead=False, delay=60)
    with db.write() as conn:
        assert inbox.still_mine(conn, ids, worker_id="w") == {ids[2]}


def test_only_failed_attempts_are_kept_oldest_first(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    failing, applied = (
        enqueue(db, connection.id, customer_event(event_factory, n))[0] for n in range(2)
    )
    claim(db, worker_id="w", limit=2, lease=30)
    with db.write() as conn:
        inbox.finish(conn, [(applied, "done", ["contacts"])])
        inbox.fail(conn, failing, error="first: boom", dead=False, delay=0, worker="w")
    claim(db, worker_id="v", limit=1, lease=30)
    with db.write() as conn:
        inbox.fail(conn, failing, error="second: " + "x" * 5000, dead=True, delay=0, worker="v")
    with db.read() as conn:
        kept = inbox.attempts_of(conn, failing)
        assert inbox.attempts_of(conn, applied) == []
        assert inbox.attempts_of(conn, failing, limit=1) == kept[1:]
    assert [(a.error[:6], a.worker) for a in kept] == [("first:", "w"), ("second", "v")]
    assert len(kept[1].error) == inbox.ATTEMPT_ERROR and kept[0].at <= kept[1].at


# Reading


def test_get_by_number_or_event_id(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = customer_event(event_factory, 1)
    item_id, _, _ = enqueue(db, connection.id, event)
    assert get(db, str(item_id)).event_id == event["id"]
    assert get(db, event["id"]).id == item_id
    with pytest.raises(errors.NotFound, match="no inbox item evt_missing"):
        get(db, "evt_missing")
    with pytest.raises(errors.NotFound):
        get(db, "987654")


def test_get_by_an_event_id_seen_on_two_connections_asks_for_the_number(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = customer_event(event_factory, 1)
    enqueue(db, connection.id, event)
    other, _, _ = enqueue(db, "conn_other", event)
    with pytest.raises(errors.Conflict, match="2 connections"):
        get(db, event["id"])
    assert get(db, str(other)).connection_id == "conn_other"


def test_list_is_newest_first_filters_by_status_and_pages(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    ids = [enqueue(db, connection.id, customer_event(event_factory, n))[0] for n in range(4)]
    ignored, _, _ = enqueue(db, connection.id, event_factory("charge.succeeded"), wanted=False)
    listed = list_items(db)
    assert [r.id for r in listed] == [ignored, *reversed(ids)]
    assert all("payload" not in r.model_dump() for r in listed)
    assert [r.id for r in list_items(db, status="ignored")] == [ignored]
    assert [r.id for r in list_items(db, limit=2, before=ids[3])] == [ids[2], ids[1]]
    assert list_items(db, status="dead") == []


def test_counts_by_status(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    for n in range(4):
        enqueue(db, connection.id, customer_event(event_factory, n))
    enqueue(db, connection.id, event_factory("charge.succeeded"), wanted=False)
    claim(db, worker_id="w", limit=1, lease=30)
    with db.read() as tx:
        counts = inbox.counts(tx)
    assert counts == {
        "pending": 3,
        "processing": 1,
        "done": 0,
        "ignored": 1,
        "failed": 0,
        "dead": 0,
    }


def test_list_refuses_an_unknown_status(db: Database) -> None:
    with pytest.raises(errors.BadRequest, match="unknown status 'finished'"):
        list_items(db, status="finished")


def test_public_shape(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = customer_event(event_factory, 1)
    item_id, _, _ = enqueue(db, connection.id, event)
    with db.write() as conn:
        inbox.finish(conn, [(item_id, "done", ["contacts", "tags"])])
    shown = get(db, str(item_id)).model_dump(mode="json")
    assert shown["flows"] == ["contacts", "tags"]
    assert shown["status"] == "done"
    assert shown["livemode"] is False
    assert shown["received_at"].endswith("Z")
    assert shown["processed_at"].endswith("Z")
    assert "payload" not in shown
    json.dumps(shown)  # JSON-ready as it is


# Replay: every status reached the way the system reaches it.


def _reach(
    status: str,
    db: Database,
    settings: Settings,
    connection_id: str,
    event_factory: EventFactory,
) -> int:
    if status == "ignored":
        return enqueue(db, connection_id, event_factory("charge.succeeded"), wanted=False)[0]
    if status == "dead":
        # A customer without an id cannot be matched to a contact: dead at once.
        event = customer_event(event_factory, 1, id=None)
    else:
        event = customer_event(event_factory, 1)
    item_id = enqueue(db, connection_id, event)[0]
    if status == "processing":
        claim(db, worker_id="someone", limit=1, lease=60)
    elif status == "failed":
        [item] = claim(db, worker_id="someone", limit=1, lease=60)
        with db.write() as conn:
            inbox.fail(conn, item.id, error="stripe is down", dead=False, delay=600)
    elif status in ("done", "dead"):
        Worker(db, flowfile.load(), settings).step()
    assert row(db, item_id).status == status
    return item_id


@pytest.mark.parametrize(
    "status",
    [
        pytest.param("done", id="done"),
        pytest.param("dead", id="dead"),
        pytest.param("ignored", id="ignored"),
        pytest.param("failed", id="failed"),
    ],
)
def test_replay_queues_a_finished_item_again(
    status: str,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    item_id = _reach(status, db, settings, connection.id, event_factory)
    before = time.time()
    replayed = replay(db, str(item_id))
    assert replayed.status == "pending"
    assert replayed.attempts == 0
    assert replayed.last_error is None
    assert replayed.processed_at is None
    stored = row(db, item_id)  # what the public model does not show
    assert stored.locked_by is None
    assert stored.lease_until is None
    assert before - 1 <= stored.run_after <= time.time()
    [claimed] = claim(db, worker_id="w", limit=10, lease=30)
    assert claimed.id == item_id
    assert claimed.attempts == 1


@pytest.mark.parametrize(
    "status",
    [pytest.param("pending", id="pending"), pytest.param("processing", id="processing")],
)
def test_replay_refuses_an_item_still_in_flight(
    status: str,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    item_id = _reach(status, db, settings, connection.id, event_factory)
    before = row(db, item_id)
    with pytest.raises(errors.Conflict, match=f"is {status} already") as caught:
        replay(db, str(item_id))
    assert caught.value.status == 409
    assert caught.value.code == "conflict"
    assert row(db, item_id) == before


def test_replay_of_an_unknown_item_is_not_found(db: Database) -> None:
    with pytest.raises(errors.NotFound):
        replay(db, "evt_nope")


def test_a_dead_item_replayed_after_the_fix_is_applied(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    event = customer_event(event_factory, 1)
    item_id = enqueue(db, connection.id, event)[0]
    broken = flowfile.parse(
        "flows:\n  - name: contacts\n    trigger: customer.created\n    action: upsert_contact\n"
        "    fields: {stripe_customer_id: \"to_number('x')\"}\n",
        "broken.yaml",
    )
    Worker(db, broken, settings).step()
    assert row(db, item_id).status == "dead"
    replay(db, event["id"])
    Worker(db, flowfile.load(), settings).step()
    fixed = row(db, item_id)
    assert (fixed.status, fixed.flows, fixed.last_error) == ("done", "contacts", None)
    with db.read() as conn:
        contact = conn.execute(sa.select(tables.contacts)).one()
    assert contact.stripe_customer_id == "cus_inbox00001"


def test_replay_through_the_api_answers_409_for_an_item_in_flight(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    pending = _reach("pending", db, settings, connection.id, event_factory)
    ignored = enqueue(db, connection.id, event_factory("charge.succeeded"), wanted=False)[0]
    with db.write() as tx:
        secret = keys.create(tx, name="ops", scopes=["integrations.write"]).secret
    auth = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(settings)) as client:
        refused = client.post(f"/v1/events/{pending}/replay", headers=auth)
        accepted = client.post(f"/v1/events/{ignored}/replay", headers=auth)
        missing = client.post("/v1/events/evt_nope/replay", headers=auth)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "conflict"
    assert f"inbox item {pending} is pending already" in error["message"]
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "pending"
    assert missing.status_code == 404


# The `snapshots events` commands.


@pytest.fixture
def logged(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> dict[str, Any]:
    """A done item and a dead one, processed by a real worker."""
    good = customer_event(event_factory, 1)
    bad = customer_event(event_factory, 2, id=None)
    done_id = enqueue(db, connection.id, good)[0]
    dead_id = enqueue(db, connection.id, bad)[0]
    Worker(db, flowfile.load(), settings).step()
    return {"done": done_id, "dead": dead_id, "good": good, "bad": bad}


def snapshots(
    database_url: str, cwd: Path, *commands: tuple[str, ...]
) -> list[subprocess.CompletedProcess[str]]:
    """Run the real `snapshots` entry point once per command (in parallel: each start costs
    most of a second), against `database_url`, with no SNAPSHOTS_* variables of our own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
    env["COLUMNS"] = "250"

    def run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SNAPSHOTS), "--database-url", database_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            env=env,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(run, commands))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.mark.acceptance
def test_cli_events_list(logged: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    everything, dead, table = snapshots(
        settings.database_url,
        tmp_path,
        ("events", "list", "--json"),
        ("events", "list", "--status", "dead", "--json"),
        ("events", "list", "--limit", "1"),
    )
    listed = json.loads(ok(everything))
    assert [(r["id"], r["status"]) for r in listed] == [
        (logged["dead"], "dead"),
        (logged["done"], "done"),
    ]
    dead_item, done_item = listed
    assert "no id" in dead_item["last_error"]
    assert dead_item["attempts"] == 1
    assert done_item["flows"] == ["contacts"]
    assert done_item["event_id"] == logged["good"]["id"]
    assert "payload" not in done_item

    assert [r["id"] for r in json.loads(ok(dead))] == [logged["dead"]]

    text = ok(table)
    assert logged["bad"]["id"] in text  # the newest only
    assert logged["good"]["id"] not in text
    assert "dead" in text


@pytest.mark.acceptance
def test_cli_events_show(logged: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    as_json, by_event_id = snapshots(
        settings.database_url,
        tmp_path,
        ("events", "show", str(logged["done"]), "--json"),
        ("events", "show", logged["good"]["id"]),
    )
    shown = json.loads(ok(as_json))
    assert shown["payload"] == logged["good"]
    assert shown["status"] == "done"
    assert shown["id"] == logged["done"]
    text = ok(by_event_id)
    assert "cus_inbox00001" in text  # the raw payload is printed
    assert "done" in text


@pytest.mark.acceptance
def test_cli_events_replay(
    db: Database, logged: dict[str, Any], settings: Settings, tmp_path: Path
) -> None:
    as_json, text = snapshots(
        settings.database_url,
        tmp_path,
        ("events", "replay", str(logged["dead"]), "--json"),
        ("events", "replay", logged["good"]["id"]),
    )
    replayed = json.loads(ok(as_json))
    assert (replayed["id"], replayed["status"], replayed["attempts"]) == (
        logged["dead"],
        "pending",
        0,
    )
    assert replayed["last_error"] is None
    assert row(db, logged["dead"]).status == "pending"
    assert f"inbox item {logged['done']} ({logged['good']['id']}) is pending again" in ok(text)
    assert row(db, logged["done"]).status == "pending"


CLI_ERRORS = [
    pytest.param(
        ("events", "list", "--status", "finished"),
        "error: unknown status 'finished'; one of: pending, processing, done, ignored, failed, dead",
        id="bad-status",
    ),
    pytest.param(
        ("events", "show", "evt_unknown"), "error: no inbox item evt_unknown", id="show-unknown"
    ),
    pytest.param(
        ("events", "replay", "424242"), "error: no inbox item 424242", id="replay-unknown"
    ),
    pytest.param(("events", "replay", "PENDING"), "is pending already", id="replay-pending"),
    pytest.param(
        ("events", "replay", "PROCESSING"), "is processing already", id="replay-processing"
    ),
]


@pytest.mark.acceptance
def test_cli_errors_are_one_line_without_traceback(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    processing = enqueue(db, connection.id, customer_event(event_factory, 1))[0]
    claim(db, worker_id="someone", limit=10, lease=60)
    pending = enqueue(db, connection.id, customer_event(event_factory, 2))[0]
    before = {i: row(db, i) for i in (pending, processing)}
    names = {"PENDING": str(pending), "PROCESSING": str(processing)}
    commands = [tuple(names.get(a, a) for a in case.values[0]) for case in CLI_ERRORS]
    results = snapshots(settings.database_url, tmp_path, *commands)
    for case, result in zip(CLI_ERRORS, results, strict=True):
        message = case.values[1]
        assert result.returncode == 2, (case.id, result.stderr)
        assert result.stdout == "", case.id
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (case.id, result.stderr)
        assert lines[0].startswith("error: "), case.id
        assert message in lines[0], (case.id, lines[0])
        assert "Traceback" not in result.stderr
    assert {i: row(db, i) for i in (pending, processing)} == before


def test_a_worker_refreshes_the_statistics_first_after_a_few_settled_items(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A young inbox's statistics are the furthest off: the first refresh comes after
    `FIRST_ANALYZE` settled items, not after `SETTLED_BETWEEN_ANALYZE`."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's statistics")

    def analyses() -> dict[str, int]:  # (the database serves the whole session: counts)
        with db.read() as tx:
            found = tx.execute(sa.text("SELECT relname, analyze_count FROM pg_stat_user_tables"))
            return {name: n for name, n in found if name in {t.name for t in worker.CHURNED}}

    monkeypatch.setattr(worker, "FIRST_ANALYZE", 4)
    applying = Worker(db, flowfile.load(), settings)
    before = analyses()
    for n in range(3):
        enqueue(db, connection.id, customer_event(event_factory, n))
    assert applying.step() == 3
    assert analyses() == before  # 3 settled: not yet
    enqueue(db, connection.id, customer_event(event_factory, 3))
    assert applying.step() == 1
    assert analyses() == {name: n + 1 for name, n in before.items()}
    assert len(before) == len(worker.CHURNED)


def test_the_inbox_statistics_are_refreshed_on_postgresql_by_one_worker_at_a_time(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    """A drain settles items faster than autovacuum looks; workers refresh the planner's
    statistics of the inbox and the records themselves (`worker.refresh_statistics`), one
    at a time."""
    for n in range(3):
        enqueue(db, connection.id, customer_event(event_factory, n))
    with db.write() as tx:
        refreshed = worker.refresh_statistics(tx)
        if db.engine.dialect.name == "sqlite":
            assert refreshed is False  # SQLite plans from its indexes: nothing to refresh
            return
        assert refreshed is True
        with db.write() as other:  # another worker meanwhile: the lock is taken, it skips
            assert worker.refresh_statistics(other) is False
    with db.read() as tx:
        counted = tx.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE relname = 'inbox_items'")
        ).scalar_one()
        analyzed = tx.execute(
            sa.text("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")
        ).scalars()
        assert set(analyzed) >= {"inbox_items", "contacts", "invoices", "locations"}
    assert counted == 3  # ANALYZE read every row of the small table
