"""events.py on SQLite and PostgreSQL: the inbox search (every condition, the search box,
paging), failures grouped by cause, an event in full, the events that touched a record, and a
bulk replay of a search's items."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import audit, connections, errors, events, flowfile, replay, retention, revisions
from snapshots import inbox as queue  # `inbox` is this module's fixture
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.worker import Worker
from tests.conftest import EventFactory, drain, fixture
from tests.integration.helpers import enqueue

T = tables.inbox_items

BROKEN = (
    "flows:\n  - name: broken\n    trigger: customer.*\n    action: upsert_contact\n"
    "    fields: {stripe_customer_id: id, custom.n: abs(name)}\n"
)


def customer(event_factory: EventFactory, n: int, type: str = "customer.created") -> Any:
    obj = {
        **fixture("customer"),
        "id": f"cus_Search{n:04d}",
        "email": f"Person{n}@Example.com",
        "name": f"Person {n}",
    }
    return event_factory(type, object=obj, id=f"evt_Search{n:04d}")


@pytest.fixture
def inbox(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> dict[str, Any]:
    """Two customers applied by the prebuilt flows (done), three that a broken mapping made
    dead (one cause), an invoice from a backfill (done), and a test event."""
    made: dict[str, Any] = {}
    made["done"] = [enqueue(db, connection.id, customer(event_factory, n))[0] for n in (1, 2)]
    invoice = {
        **fixture("invoice"),
        "id": "in_Search0001",
        "customer": "cus_Search0001",
        "customer_email": "Billing@Example.com",
    }
    made["invoice"] = enqueue(
        db, connection.id, event_factory("invoice.paid", object=invoice), source="sync"
    )[0]
    drain(Worker(db, flowfile.load(), settings, name="good"))
    made["dead"] = [enqueue(db, connection.id, customer(event_factory, n))[0] for n in (3, 4, 5)]
    made["test"] = enqueue(
        db, connection.id, customer(event_factory, 6, "customer.updated"), source="test"
    )[0]
    drain(Worker(db, flowfile.parse(BROKEN, "broken.yaml"), settings, name="bad"))
    return made


def found(db: Database, **conditions: Any) -> list[int]:
    with db.read() as tx:
        return [e.id for e in events.page(tx, events.Search(**conditions), limit=100).data]


def test_the_search_narrows_by_each_condition(
    db: Database, inbox: dict[str, Any], connection: connections.Connection
) -> None:
    dead, done = inbox["dead"], inbox["done"]
    assert found(db, status="dead") == [inbox["test"], *reversed(dead)]
    assert found(db, status="done") == [inbox["invoice"], *reversed(done)]
    assert found(db, type="invoice.*") == [inbox["invoice"]]
    assert found(db, type="customer.updated") == [inbox["test"]]
    assert found(db, type="customer") == []  # no wildcard: the exact type
    assert found(db, source="sync") == [inbox["invoice"]]
    assert found(db, source="test") == [inbox["test"]]
    assert len(found(db, connection_id=connection.id)) == 7
    assert found(db, connection_id="conn_other") == []
    assert found(db, connections=[]) == []
    assert found(db, until=time.time() - 3600) == []
    assert len(found(db, since=time.time() - 3600)) == 7


@pytest.mark.parametrize(
    ("text", "which"),
    [
        pytest.param("cus_Search0003", "dead0", id="object id"),
        pytest.param("evt_Search0004", "dead1", id="event id"),
        pytest.param("person5@example.COM", "dead2", id="email, any case"),
        pytest.param("in_Search0001", "invoice", id="invoice id"),
        pytest.param("  cus_Search0003 ", "dead0", id="spaces around"),
    ],
)
def test_the_search_box_finds_by_object_event_or_email(
    db: Database, inbox: dict[str, Any], text: str, which: str
) -> None:
    expected = inbox["dead"][int(which[-1])] if which.startswith("dead") else inbox[which]
    assert found(db, q=text) == [expected]


def test_the_search_box_takes_an_item_number_and_finds_nothing_else(
    db: Database, inbox: dict[str, Any]
) -> None:
    assert found(db, q=str(inbox["invoice"])) == [inbox["invoice"]]
    assert found(db, q="99999999999999") == []
    assert found(db, q="cus_nobody") == []
    # An invoice's customer's e-mail finds the invoice too.
    assert found(db, q="BILLING@example.com") == [inbox["invoice"]]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        pytest.param({"status": "lost"}, "status: one of", id="status"),
        pytest.param({"source": "fax"}, "source: one of", id="source"),
        pytest.param({"q": "a\x00b"}, "search: 1 to 512", id="NUL"),
        pytest.param({"since": 10.0, "until": 5.0}, "until is before since", id="range"),
        pytest.param({"connection_id": "x y"}, "no connection", id="connection"),
    ],
)
def test_a_bad_search_is_a_bad_request(conditions: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.BadRequest, match=message):
        events.Search(**conditions)


def test_pages_follow_the_cursor(db: Database, inbox: dict[str, Any]) -> None:
    every = found(db)
    seen: list[int] = []
    after = None
    while True:
        with db.read() as tx:
            page = events.page(tx, events.Search(), limit=3, starting_after=after)
        seen += [e.id for e in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == every and len(seen) == 7


def test_failures_are_grouped_by_cause_and_link_to_their_items(
    db: Database, inbox: dict[str, Any]
) -> None:
    with db.read() as tx:
        groups = events.failures(tx)
    [group] = groups
    assert (group.status, group.count) == ("dead", 4)
    assert "abs()" in group.cause and "<value>" in group.cause
    assert "Person 6" in group.example  # the newest item's error, as it was
    assert found(db, cause=group.cause) == [inbox["test"], *reversed(inbox["dead"])]
    with db.read() as tx:
        assert events.failures(tx, events.Search(source="test"))[0].count == 1
        assert events.failures(tx, events.Search(status="done")) == []


def test_an_event_in_full_puts_what_to_do_first(db: Database, inbox: dict[str, Any]) -> None:
    with db.read() as tx:
        dead = events.detail(tx, str(inbox["dead"][0]))
        done = events.detail(tx, "evt_Search0001")
        version = revisions.current_version(tx)
    assert dead.advice is not None and dead.advice.flow == "broken"
    assert "custom.n" in dead.advice.action
    assert dead.payload["data"]["object"]["id"] == "cus_Search0003" and dead.raw is None
    assert dead.runs == [] and dead.replayable and dead.event.attempts == 1
    assert done.advice is None and done.flows_version == version
    [run] = done.runs
    assert run.flow == "contacts" and run.record is not None
    assert (run.record.kind, run.record.label, run.record.exists) == ("contact", "Person 1", True)
    with db.read() as tx, pytest.raises(errors.NotFound):
        events.detail(tx, "evt_nobody")


def test_a_payload_that_is_not_json_is_shown_as_text(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    item_id = enqueue(db, connection.id, event_factory("customer.created"))[0]
    with db.write() as tx:
        P = tables.inbox_payloads
        tx.execute(P.update().where(P.c.item_id == item_id).values(payload=b"<not json>"))
    with db.read() as tx:
        shown = events.detail(tx, str(item_id))
    assert (shown.payload, shown.raw) == (None, "<not json>")


def test_the_events_that_touched_a_record(
    db: Database,
    inbox: dict[str, Any],
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    """The events whose flows wrote it, and those about its Stripe object that wrote nothing
    (a failure)."""
    failing = customer(event_factory, 1, "customer.updated")
    failing["id"] = "evt_Search0099"
    later = enqueue(db, connection.id, failing)[0]
    with db.write() as tx:
        tx.execute(T.update().where(T.c.id == later).values(status="dead", last_error="boom"))
    c, i = tables.contacts, tables.invoices
    with db.read() as tx:
        contact = tx.execute(sa.select(c).where(c.c.stripe_customer_id == "cus_Search0001")).one()
        invoice = tx.execute(sa.select(i)).one()
        touched = events.touching(tx, contact.id, contact.stripe_customer_id)
        billed = events.touching(tx, invoice.id, invoice.stripe_invoice_id)
        links = tx.execute(sa.select(tables.inbox_item_records)).all()
    assert [e.id for e in touched] == [later, inbox["done"][0]]
    assert [e.id for e in billed] == [inbox["invoice"]]
    assert {(link.item_id, link.record_id) for link in links} == {
        (inbox["done"][0], contact.id),
        (inbox["done"][1], tx_contact_id(db, "cus_Search0002")),
        (inbox["invoice"], invoice.id),
    }


def tx_contact_id(db: Database, stripe_id: str) -> str:
    c = tables.contacts
    with db.read() as tx:
        return str(
            tx.execute(sa.select(c.c.id).where(c.c.stripe_customer_id == stripe_id)).scalar_one()
        )


def test_a_search_is_replayed_as_a_job(db: Database, inbox: dict[str, Any]) -> None:
    with db.read() as tx:
        [group] = events.failures(tx)
        flt = replay.Filter(status="dead", cause=group.cause, source="webhook")
        plan = replay.preview(tx, flt, cap=2)
    assert (plan.matched, plan.quota, plan.capped) == (3, 2, True)
    with db.write() as tx:
        job = replay.start(tx, flt, actor="ui:ops@example.com", cap=2)
    done = replay.run(db, job.id, holder="test")
    assert (done.status, done.requeued) == ("done", 2)
    assert found(db, status="pending") == inbox["dead"][:2][::-1]
    # Queued again: no longer failing, so no cause.
    with db.read() as tx:
        assert (
            tx.execute(sa.select(T.c.error_cause).where(T.c.id == inbox["dead"][0])).scalar_one()
            is None
        )


def test_one_event_replayed_is_audited(db: Database, inbox: dict[str, Any]) -> None:
    item = inbox["dead"][0]
    with db.write() as tx:
        event = events.replay_one(tx, str(item), actor="ui:ops@example.com")
    assert (event.status, event.last_error) == ("pending", None)
    with db.read() as tx:
        [entry] = audit.page(tx, action="event.replayed").data
        with pytest.raises(errors.Conflict):
            events.replay_one(tx, str(item), actor="ui:ops@example.com")
    assert (entry.actor, entry.target) == ("ui:ops@example.com", str(item))
    assert entry.details == {"event_id": "evt_Search0003", "type": "customer.created"}


def test_causes_beyond_the_window_are_counted_exactly(
    db: Database, inbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "WINDOW", 2)
    with db.read() as tx:
        [group] = events.failures(tx)
    assert group.count == 4


def test_test_events_can_be_left_out_or_alone(db: Database, inbox: dict[str, Any]) -> None:
    assert found(db, test=True) == [inbox["test"]]
    assert inbox["test"] not in found(db, test=False) and len(found(db, test=False)) == 6


def _counted_directly(tx: Any, **where: Any) -> dict[tuple[str, str], int]:
    """(status, cause) -> how many failed or dead items, counted from the items themselves."""
    conditions = [T.c[name] == value for name, value in where.items()]
    rows = tx.execute(
        sa.select(T.c.status, T.c.error_cause, sa.func.count())
        .where(T.c.status.in_(events.FAILING), *conditions)
        .group_by(T.c.status, T.c.error_cause)
    )
    return {(status, cause or ""): int(n) for status, cause, n in rows}


def _assert_counts_exact(db: Database, connection_id: str) -> None:
    """The failures by cause and the replay's count equal a direct count of the items, for a
    status alone, with the connection and with a cause; on SQLite `inbox_failures` holds
    exactly what the items say."""
    with db.read() as tx:
        for where in ({}, {"connection_id": connection_id}):
            direct = _counted_directly(tx, **where)
            for status in events.FAILING:
                search = events.Search(status=status, **where)
                shown = {(c.status, c.cause): c.count for c in events.failures(tx, search)}
                assert shown == {k: n for k, n in direct.items() if k[0] == status and k[1]}
                plan = replay.preview(tx, replay.Filter(status=status, **where), top_errors=False)
                assert plan.matched == sum(n for k, n in direct.items() if k[0] == status)
                for (_, cause), n in shown.items():
                    flt = replay.Filter(status=status, cause=cause, **where)
                    assert replay.preview(tx, flt, top_errors=False).matched == n
        if tx.dialect.name == "sqlite":
            kept = tables.inbox_failures
            rows = tx.execute(sa.select(kept.c.status, kept.c.cause, kept.c["count"]))
            assert {(s, c): int(n) for s, c, n in rows} == _counted_directly(tx)


def test_failing_counts_follow_every_transition(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    """failed -> done on a retry, failed -> dead, dead -> replayed -> done, a bulk replay, a
    pruned payload, a failure whose error has no cause: the counts stay exact at each step."""
    ids = [enqueue(db, connection.id, customer(event_factory, n))[0] for n in range(6)]

    def claimed() -> list[int]:
        with db.write() as tx:
            return [i.id for i in queue.claim(tx, worker_id="w", limit=10, lease=60)]

    def fail(item_ids: list[int], error: str, *, dead: bool) -> None:
        with db.write() as tx:
            for item_id in item_ids:
                queue.fail(tx, item_id, error=error, dead=dead, delay=0, worker="w")

    assert sorted(claimed()) == ids
    fail(ids[:3], "waiting for Stripe: refused by Stripe (cus_Search0001)", dead=False)
    fail(ids[3:5], "flow 'contacts': the customer has no id", dead=True)
    fail(ids[5:], "", dead=True)  # an error without text: counted, under no cause
    _assert_counts_exact(db, connection.id)
    assert sorted(claimed()) == ids[:3]  # the failed ones, tried again: processing now
    _assert_counts_exact(db, connection.id)
    with db.write() as tx:
        queue.finish(tx, [(ids[0], "done", [])])  # failed -> done on a retry
    fail(ids[1:2], "waiting for Stripe: refused by Stripe (cus_Search0002)", dead=True)
    fail(ids[2:3], "waiting for Stripe: refused by Stripe (cus_Search0003)", dead=False)
    _assert_counts_exact(db, connection.id)
    with db.write() as tx:  # dead -> replayed -> done
        events.replay_one(tx, str(ids[3]), actor="test")
    _assert_counts_exact(db, connection.id)
    assert sorted(claimed()) == [ids[2], ids[3]]
    with db.write() as tx:
        queue.finish(tx, [(ids[2], "done", []), (ids[3], "done", [])])
    _assert_counts_exact(db, connection.id)
    # Retention takes a dead item's payload; it stays dead, and counted.
    retention.prune(db, retention.Cutoffs(settled=0.0, dead=time.time() + 1, audit=None))
    _assert_counts_exact(db, connection.id)
    with db.write() as tx:  # a bulk replay of what is left dead (the pruned ones stay)
        job = replay.start(tx, replay.Filter(status="dead"), actor="test")
    replay.run(db, job.id, holder="test")
    _assert_counts_exact(db, connection.id)
    with db.read() as tx:
        statuses = dict(tx.execute(sa.select(T.c.id, T.c.status).where(T.c.id.in_(ids))).all())
    assert statuses == {
        ids[0]: "done",
        ids[1]: "dead",
        ids[2]: "done",
        ids[3]: "done",
        ids[4]: "dead",
        ids[5]: "dead",
    }
