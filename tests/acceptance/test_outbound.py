"""Outbound workflows with real processes: signed webhooks posted to the real webhook endpoint
of `snapshots serve`, flows that tag, wait (compressed to seconds) and send, a real receiver on
127.0.0.1 verifying every message with the `standardwebhooks` package, and real worker
processes, one of them SIGKILLed while the receiver holds its request.

The fake Stripe server (tests/support) stands behind the connection; nothing here makes Stripe
send anything."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe

from tests.conftest import fixture
from tests.support.fake_stripe import FakeStripe, run_fake_stripe
from tests.support.receiver import Receiver

from .conftest import Snapshots, eventually

pytestmark = pytest.mark.acceptance

WEBHOOK_SECRET = "whsec_outbound_acceptance_0123456789"
OUTBOUND_ENV = {
    "SNAPSHOTS_LOCATION_POLL_INTERVAL": "86400",
    "SNAPSHOTS_RECONCILE_INTERVAL": "86400",
    "SNAPSHOTS_OUTBOUND_ALLOW": "127.0.0.1/32",
    "SNAPSHOTS_OUTBOUND_RETRY_SCHEDULE": "0s,1s,1s,1s,1s",
    "SNAPSHOTS_OUTBOUND_RETRY_JITTER": "0",
    "SNAPSHOTS_OUTBOUND_TIMEOUT": "1",
    "SNAPSHOTS_LEASE": "2",
}
FLOWS = """\
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
      - wait: WAIT
      - if: "status != 'paid'"
        action: send_webhook
        options: {endpoint: crm, type: invoice.reminder}
        fields: {invoice: stripe_invoice_id, amount: amount_due, email: customer_email}
"""


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe() as running:
        yield running


def deploy(snapshots: Snapshots, fake: FakeStripe, wait: str) -> str:
    """Migrate, connect, import the dunning flows; returns the connection id."""
    snapshots.master_key = stripe_master_key()
    snapshots.extra_env.update(OUTBOUND_ENV)
    snapshots.cli("migrate")
    connection = snapshots.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        fake.secret_key,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--api-base",
        fake.api_base,
        "--json",
    )
    path = snapshots.home / "flows.yaml"
    path.write_text(FLOWS.replace("WAIT", wait))
    snapshots.cli("mappings", "validate", str(path))
    snapshots.cli("flows", "import", str(path))
    return str(connection["id"])


def stripe_master_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def invoice_object(invoice_id: str, status: str) -> dict[str, Any]:
    obj = fixture("invoice")
    obj.update(
        id=invoice_id,
        customer="cus_dunning",
        status=status,
        amount_due=4200,
        currency="usd",
        customer_email="late@example.com",
    )
    return obj


def post(snapshots: Snapshots, connection_id: str, event_type: str, obj: dict[str, Any]) -> str:
    """A Stripe event, signed as Stripe signs, to the real webhook endpoint; its id."""
    event = {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
    with httpx.Client(base_url=snapshots.base_url, trust_env=False, timeout=10.0) as http:
        response = http.post(
            f"/webhooks/stripe/{connection_id}",
            content=payload.encode(),
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    return str(event["id"])


def create_endpoint(snapshots: Snapshots, receiver: Receiver) -> str:
    made = snapshots.cli_json(
        "endpoints", "create", "--name", "crm", "--url", receiver.url, "--json"
    )
    secret: str = made["secret"]
    receiver.secrets = [secret]
    return secret


def deliveries(snapshots: Snapshots) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = snapshots.cli_json("deliveries", "list", "--json")
    return found


def waits(snapshots: Snapshots) -> list[Any]:
    engine = sa.create_engine(snapshots.database_url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT event_id, status, reason FROM waits ORDER BY seq"
            ).all()
    finally:
        engine.dispose()


def test_failed_payment_tag_wait_then_a_signed_reminder_or_skipped_when_paid(
    snapshots: Snapshots, fake: FakeStripe
) -> None:
    connection_id = deploy(snapshots, fake, wait="6s")
    with Receiver() as receiver:
        create_endpoint(snapshots, receiver)
        snapshots.serve()
        post(
            snapshots, connection_id, "invoice.payment_failed", invoice_object("in_unpaid", "open")
        )
        post(snapshots, connection_id, "invoice.payment_failed", invoice_object("in_paid", "open"))
        time.sleep(1.1)  # the payment comes a second later, during the wait
        post(snapshots, connection_id, "invoice.paid", invoice_object("in_paid", "paid"))

        def waiting() -> None:
            assert [w.status for w in waits(snapshots)] == ["waiting", "waiting"]

        eventually(waiting, timeout=30)
        # Every process stops during the wait, and starts again.
        snapshots.stop_all()
        snapshots.running.clear()
        snapshots.serve()

        def sent() -> None:
            assert {w.status for w in waits(snapshots)} == {"done", "skipped"}
            assert len(receiver.received) == 1

        eventually(sent, timeout=40)
        time.sleep(2)  # nothing else comes
        assert len(receiver.received) == 1
        message = receiver.received[0]
        assert message.verified_by == [0]
        assert message.json()["type"] == "invoice.reminder"
        assert message.json()["data"] == {
            "invoice": "in_unpaid",
            "amount": 4200,
            "email": "late@example.com",
        }
        skipped = [w for w in waits(snapshots) if w.status == "skipped"]
        assert len(skipped) == 1 and "status != 'paid'" in skipped[0].reason
        (shown,) = deliveries(snapshots)
        assert shown["status"] == "succeeded" and shown["id"] == message.id
        with httpx.Client(base_url=snapshots.base_url, trust_env=False) as http:
            metrics = http.get("/metrics").text
        assert 'snapshots_delivery_attempts_total{error_kind="",outcome="success"} 1.0' in metrics
        assert "snapshots_waits_due 0.0" in metrics


def test_a_worker_killed_mid_send_leaves_the_message_to_be_sent_again_with_its_id(
    snapshots: Snapshots, fake: FakeStripe
) -> None:
    connection_id = deploy(snapshots, fake, wait="1s")
    with Receiver() as receiver:
        create_endpoint(snapshots, receiver)
        receiver.hold = threading.Event()
        snapshots.serve("--no-worker")
        first = snapshots.worker()
        post(snapshots, connection_id, "invoice.payment_failed", invoice_object("in_k", "open"))
        assert receiver.entered.wait(40), "no message reached the receiver"
        first.process.kill()  # SIGKILL while the receiver holds the request
        first.process.wait(10)
        receiver.hold.set()
        receiver.hold = None
        snapshots.worker()

        def succeeded() -> None:
            (found,) = deliveries(snapshots)
            assert found["status"] == "succeeded"

        eventually(succeeded, timeout=60)
        time.sleep(2)
    ids = [r.id for r in receiver.received]
    assert len(ids) == 2 and len(set(ids)) == 1
    assert all(r.verified_by == [0] for r in receiver.received)
    (found,) = deliveries(snapshots)
    shown = snapshots.cli_json("deliveries", "show", found["id"], "--json")
    assert [a["status_code"] for a in shown["attempt_log"]] == [200]
