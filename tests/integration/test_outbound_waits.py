"""Flows with steps, `wait` and `if`, on SQLite and PostgreSQL, with an injected clock: a 3-day
wait survives a restart (a new database handle and resumer), fires once, reads the record as
it is when it fires (skipped when the invoice was paid meanwhile), two resumers racing send
once, and a removed flow's waits are cancelled."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import connections, flowfile, revisions, vault
from snapshots.outbound import endpoints, guard, resume, waits
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory

DUNNING = """\
flows:
  - name: invoices
    trigger: [invoice.payment_failed, invoice.paid]
    action: log_invoice
    fields:
      stripe_invoice_id: id
      stripe_customer_id: customer
      amount_due: amount_due
      currency: currency
      status: status
      customer_email: customer_email
  - name: dunning
    trigger: invoice.payment_failed
    steps:
      - action: add_tag
        options: {tags: [payment-failed]}
        fields: {stripe_customer_id: customer}
      - wait: 3d
      - if: "status != 'paid'"
        action: send_webhook
        options: {endpoint: crm, type: invoice.reminder}
        fields: {invoice: stripe_invoice_id, amount: amount_due, email: customer_email}
"""
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def crm(db: Database, settings: Settings) -> None:
    endpoints.create(
        db,
        vault.load(settings),
        name="crm",
        url="http://127.0.0.1:9/hook",
        allow=guard.Allow.parse("127.0.0.1/32"),
    )


def invoice_event(event_factory: EventFactory, kind: str, status: str, **more: Any) -> Any:
    event = event_factory(
        kind,
        customer="cus_late",
        status=status,
        amount_due=4200,
        currency="usd",
        customer_email="late@example.com",
        **more,
    )
    event["data"]["object"]["id"] = "in_late"
    return event


def store(db: Database, connection_id: str, *events: dict[str, Any]) -> None:
    """Apply events as the worker does, keeping them in the inbox (a wait re-reads its event)."""
    registry = flowfile.parse(DUNNING, "dunning.yaml")
    t = tables.inbox_items
    for event in events:
        with db.write() as tx:
            item_id = tx.execute(
                t.insert()
                .values(
                    connection_id=connection_id,
                    event_id=event["id"],
                    event_type=event["type"],
                    event_created=event["created"],
                    livemode=False,
                    source="webhook",
                    status="done",
                    run_after=0,
                    received_at=time.time(),
                )
                .returning(t.c.id)
            ).scalar_one()
            tx.execute(
                tables.inbox_payloads.insert().values(
                    item_id=item_id, payload=json.dumps(event).encode()
                )
            )
            registry.apply(tx, connection_id=connection_id, event=event)


def resumer(url: str, clock: Clock, name: str = "w1") -> tuple[Database, resume.Resumer]:
    database = Database(url)
    registry = flowfile.parse(DUNNING, "dunning.yaml")
    return database, resume.Resumer(database, lambda: registry, name=name, clock=clock)


def rows(db: Database, table: sa.Table) -> list[Any]:
    with db.read() as tx:
        return tx.execute(sa.select(table).order_by(table.c.seq)).all()


def test_a_3_day_wait_survives_a_restart_and_fires_once(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: None,
    event_factory: EventFactory,
) -> None:
    clock = Clock()
    store(db, connection.id, invoice_event(event_factory, "invoice.payment_failed", "open"))
    (wait,) = rows(db, tables.waits)
    assert wait.status == "waiting" and wait.step == 2 and wait.record_kind == "invoice"
    assert wait.due_at == pytest.approx(clock.now + 3 * DAY, abs=5)
    with db.read() as tx:  # the tag was added before the wait
        contact = tx.execute(sa.select(tables.contacts.c.tags)).scalar_one()
    assert contact == ["payment-failed"]

    first, early = resumer(settings.database_url, clock)
    clock.now += 2 * DAY
    assert early.run_due() == 0
    first.dispose()  # every process stops...

    clock.now += DAY + 1
    second, later = resumer(settings.database_url, clock)  # ...and a new one starts
    assert later.run_due() == 1
    assert later.run_due() == 0
    second.dispose()
    (sent,) = rows(db, tables.deliveries)
    assert (sent.flow, sent.step, sent.type) == ("dunning", 2, "invoice.reminder")
    assert json.loads(sent.body)["data"] == {
        "invoice": "in_late",
        "amount": 4200,
        "email": "late@example.com",
    }
    assert rows(db, tables.waits)[0].status == "done"


def test_the_wait_is_skipped_when_the_invoice_was_paid_meanwhile(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: None,
    event_factory: EventFactory,
) -> None:
    clock = Clock()
    failed = invoice_event(event_factory, "invoice.payment_failed", "open")
    store(db, connection.id, failed)
    paid = invoice_event(event_factory, "invoice.paid", "paid", created=failed["created"] + 60)
    store(db, connection.id, paid)
    clock.now += 3 * DAY + 1
    database, waiter = resumer(settings.database_url, clock)
    assert waiter.run_due() == 1
    database.dispose()
    (wait,) = rows(db, tables.waits)
    assert wait.status == "skipped"
    assert "status != 'paid'" in wait.reason
    assert rows(db, tables.deliveries) == []


def test_two_resumers_racing_on_due_waits_send_once(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: None,
    event_factory: EventFactory,
) -> None:
    clock = Clock()
    for n in range(6):
        event = invoice_event(event_factory, "invoice.payment_failed", "open")
        event["data"]["object"]["id"] = f"in_race_{n}"
        store(db, connection.id, event)
    clock.now += 3 * DAY + 1
    handles = [resumer(settings.database_url, clock, name=f"w{n}") for n in range(2)]
    barrier = threading.Barrier(2)

    def race(waiter: resume.Resumer) -> None:
        barrier.wait()
        while waiter.run_due():
            pass

    threads = [threading.Thread(target=race, args=(w,)) for _, w in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for database, _ in handles:
        database.dispose()
    assert len(rows(db, tables.deliveries)) == 6
    assert {w.status for w in rows(db, tables.waits)} == {"done"}


def test_removing_the_flow_cancels_its_waits(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: None,
    event_factory: EventFactory,
) -> None:
    store(db, connection.id, invoice_event(event_factory, "invoice.payment_failed", "open"))
    without = DUNNING[: DUNNING.index("  - name: dunning")]
    revisions.import_text(db, without, where="t.yaml", actor="test")
    (wait,) = rows(db, tables.waits)
    assert (wait.status, wait.reason) == ("cancelled", "its flow was removed")


def test_a_wait_whose_flow_is_gone_at_resume_is_cancelled(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: None,
    event_factory: EventFactory,
) -> None:
    store(db, connection.id, invoice_event(event_factory, "invoice.payment_failed", "open"))
    clock = Clock()
    clock.now += 3 * DAY + 1
    without = flowfile.parse(DUNNING[: DUNNING.index("  - name: dunning")], "t.yaml")
    waiter = resume.Resumer(db, lambda: without, name="w", clock=clock)
    assert waiter.run_due() == 1
    assert rows(db, tables.waits)[0].status == "cancelled"
    with db.read() as tx:
        assert waits.figures(tx, clock.now).due == 0


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        pytest.param(
            "      - wait: 3\n      - action: add_tag\n        options: {tags: [x]}\n",
            "wait",
            id="wait-without-unit",
        ),
        pytest.param(
            "      - wait: 3x\n      - action: add_tag\n        options: {tags: [x]}\n",
            "a number with s, m, h or d",
            id="wait-unit",
        ),
        pytest.param("      - wait: 1d\n", "at least one action", id="no-action"),
        pytest.param(
            '      - action: add_tag\n        if: "status =="\n        options: {tags: [x]}\n',
            "steps[0].if",
            id="if-syntax",
        ),
        pytest.param("      - action: nope\n", "unknown action 'nope'", id="unknown-action"),
        pytest.param('      - wait: 1d\n        if: "x"\n', "nothing else", id="wait-with-if"),
    ],
)
def test_the_validator_names_the_line_of_a_bad_step(steps: str, problem: str) -> None:
    text = "flows:\n  - name: dunning\n    trigger: invoice.payment_failed\n    steps:\n" + steps
    checked = flowfile.check(text, "dunning.yaml")
    assert checked.registry is None
    message = str(checked.problems[0])
    assert problem in message, message
    assert message.startswith("dunning.yaml:") and message.split(":")[1].isdigit()
