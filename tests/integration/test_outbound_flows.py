"""The `send_webhook` action in flows, on SQLite and PostgreSQL: the message is written with the
flow's records (an outbox, no HTTP), once per (event, flow, step) however often the event is
applied, with mapped fields or, without any, the record the event is about; `mappings test`
shows what would be sent; a missing endpoint fails the item, not the worker."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import connections, flowfile, flows, inbox, vault, worker
from snapshots.outbound import delivery, endpoints, guard
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, drain
from tests.integration.helpers import Cli

FLOWS = """\
flows:
  - name: invoices
    trigger: [invoice.created, invoice.payment_failed, invoice.paid]
    action: log_invoice
    fields:
      stripe_invoice_id: id
      stripe_customer_id: customer
      amount_due: amount_due
      currency: currency
      status: status
      customer_email: customer_email
  - name: notify
    trigger: invoice.payment_failed
    action: send_webhook
    options: {endpoint: crm, type: invoice.reminder}
  - name: mapped
    trigger: invoice.payment_failed
    action: send_webhook
    options: {endpoint: crm}
    fields: {invoice.id: id, invoice.amount: amount_due, email: customer_email}
"""


def messages(db: Database) -> list[Any]:
    d = tables.deliveries
    with db.read() as tx:
        return tx.execute(sa.select(d).order_by(d.c.seq)).all()


@pytest.fixture
def crm(db: Database, settings: Settings) -> endpoints.WebhookEndpointCreated:
    return endpoints.create(
        db,
        vault.load(settings),
        name="crm",
        url="http://127.0.0.1:9/hook",
        allow=guard.Allow.parse("127.0.0.1/32"),
    )


def test_a_message_is_written_once_with_the_flows_records(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: endpoints.WebhookEndpointCreated,
    event_factory: EventFactory,
) -> None:
    registry = flowfile.parse(FLOWS, "t.yaml")
    event = event_factory(
        "invoice.payment_failed",
        id="in_failed1",
        customer="cus_1",
        status="open",
        amount_due=4200,
        customer_email="ada@example.com",
    )
    event["data"]["object"]["id"] = "in_failed1"
    payload = json.dumps(event).encode()
    arrival = inbox.Arrival(connection.id, event, payload, "webhook", True)
    with db.write() as tx:
        inbox.enqueue_many(tx, [arrival, arrival])  # the same Stripe event delivered twice
    applier = worker.Worker(db, registry, settings)
    drain(applier)
    with db.write() as tx:
        item = inbox.get(tx, event["id"])
        assert item.status == "done"
        inbox.replay(tx, event["id"])  # and replayed
    drain(applier)
    found = messages(db)
    assert [(m.flow, m.type, m.status) for m in found] == [
        ("notify", "invoice.reminder", "pending"),
        ("mapped", "invoice.payment_failed", "pending"),
    ]
    default = json.loads(found[0].body)
    assert default["type"] == "invoice.reminder"
    assert default["data"]["event"] == {"id": event["id"], "type": "invoice.payment_failed"}
    assert default["data"]["invoice"]["stripe_invoice_id"] == "in_failed1"
    assert default["data"]["invoice"]["amount_due"] == 4200
    mapped = json.loads(found[1].body)["data"]
    assert mapped == {
        "invoice": {"id": "in_failed1", "amount": 4200},
        "email": "ada@example.com",
    }
    with db.read() as tx:
        assert inbox.get(tx, event["id"]).records[-1] == found[1].id


def test_a_missing_endpoint_fails_the_item_with_a_clear_message(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    registry = flowfile.parse(FLOWS, "t.yaml")
    event = event_factory("invoice.payment_failed")
    with db.write() as tx:
        inbox.enqueue_many(
            tx, [inbox.Arrival(connection.id, event, json.dumps(event).encode(), "webhook", True)]
        )
    drain(worker.Worker(db, registry, settings))
    with db.read() as tx:
        item = inbox.get(tx, event["id"])
    assert item.status == "dead"
    assert "no webhook endpoint 'crm'" in (item.last_error or "")
    assert messages(db) == []


def test_a_disabled_endpoint_holds_new_messages(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    crm: endpoints.WebhookEndpointCreated,
    event_factory: EventFactory,
) -> None:
    with db.write() as tx:
        endpoints.disable(tx, vault.load(settings), "crm", reason="test")
    registry = flowfile.parse(FLOWS, "t.yaml")
    with db.write() as tx:
        registry.apply(
            tx, connection_id=connection.id, event=event_factory("invoice.payment_failed")
        )
    assert {m.status for m in messages(db)} == {"held"}
    with db.read() as tx:
        assert delivery.page(tx, status="held").data


@pytest.mark.parametrize(
    ("flow", "problem"),
    [
        pytest.param("options: {type: x}", "needs an `endpoint` option", id="no-endpoint"),
        pytest.param("options: {endpoint: crm, color: red}", "unknown option", id="unknown"),
        pytest.param("options: {endpoint: crm}\n    fields: {a..b: id}", "no target", id="target"),
    ],
)
def test_the_validator_checks_send_webhook(flow: str, problem: str) -> None:
    head = "flows:\n  - name: notify\n    trigger: invoice.payment_failed\n"
    text = head + "    action: send_webhook\n    " + flow + "\n"
    checked = flowfile.check(text, "t.yaml")
    assert checked.registry is None
    assert problem in str(checked.problems[0])
    assert str(checked.problems[0]).startswith("t.yaml:")


def test_mappings_test_shows_what_would_be_sent(
    tmp_path: Any, run: Cli, event_factory: EventFactory
) -> None:
    flows_file = tmp_path / "flows.yaml"
    flows_file.write_text(FLOWS)
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event_factory("invoice.payment_failed", amount_due=99)))
    shown = run("mappings", "test", "--event", str(event_file), "--flows", str(flows_file))
    assert shown.code == 0, shown.err
    assert "notify (send_webhook): would send to endpoint crm" in shown.out
    assert '"amount": 99' in shown.out
    assert messages_count(run) == 0


def messages_count(run: Cli) -> int:
    listed = run("deliveries", "list", "--json")
    return len(json.loads(listed.out)) if listed.code == 0 else -1


def test_preview_of_a_message_without_fields() -> None:
    registry = flowfile.parse(FLOWS, "t.yaml")
    event = {"id": "evt_1", "type": "invoice.payment_failed", "data": {"object": {"id": "in_1"}}}
    found = {o.flow: o for o in flows.preview(registry, event)}
    assert found["notify"].outcome == "would send"
    assert found["notify"].fields == {
        "type": "invoice.reminder",
        "data": {
            "event": {"id": "evt_1", "type": "invoice.payment_failed"},
            "object": {"id": "in_1"},
        },
    }
