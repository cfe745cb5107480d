"""Checks for tests/support/localstripe.py: a real localstripe, real signed webhooks."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from .localstripe import run_localstripe

pytestmark = pytest.mark.acceptance  # starts real localstripe subprocesses

SECRET = "whsec_snapshots_test"


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, queue.Queue[Delivery]]]:
    """A tiny HTTP server on 127.0.0.1 that records every POST and answers 200."""
    deliveries: queue.Queue[Delivery] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            deliveries.put(Delivery(self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/stripe/test", deliveries
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _next_event(
    deliveries: queue.Queue[Delivery], event_type: str, timeout: float = 10.0
) -> Delivery:
    while True:
        d = deliveries.get(timeout=timeout)  # raises queue.Empty on timeout
        if json.loads(d.body)["type"] == event_type:
            return d


def test_customer_created_webhook_is_signed_and_verifies() -> None:
    with run_localstripe() as ls, webhook_receiver() as (url, deliveries):
        assert ls.api_base.startswith("http://127.0.0.1:")
        ls.register_webhook(url, SECRET)

        client = stripe.StripeClient(
            "sk_test_snapshots", base_addresses={"api": ls.api_base}, max_network_retries=0
        )
        customer = client.v1.customers.create(
            {
                "email": "ada@example.com",
                "name": "Ada Lovelace",
                "metadata": {"snapshots_id": "42"},
            }
        )

        delivery = _next_event(deliveries, "customer.created")
        sig_header = delivery.headers["Stripe-Signature"]
        assert sig_header.startswith("t=") and ",v1=" in sig_header

        event = stripe.Webhook.construct_event(delivery.body, sig_header, SECRET)
        assert event.type == "customer.created"
        assert event.data.object.id == customer.id
        assert event.data.object.email == "ada@example.com"
        assert event.data.object.metadata.to_dict() == {"snapshots_id": "42"}

        # A wrong secret must not verify.
        try:
            stripe.Webhook.construct_event(delivery.body, sig_header, "whsec_wrong")
        except stripe.SignatureVerificationError:
            pass
        else:  # pragma: no cover
            raise AssertionError("signature verified with the wrong secret")

        # The same event is listed by GET /v1/events.
        listed = client.v1.events.list({"type": "customer.created", "limit": 100})
        assert event.id in [e.id for e in listed.data]


def _connect_refused(host: str, port: int, family: socket.AddressFamily) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect((host, port))
    except OSError:
        return True
    return False


def test_instances_are_isolated_and_loopback_only() -> None:
    pickle_path = "/tmp/localstripe.pickle"
    before = os.stat(pickle_path).st_mtime_ns if os.path.exists(pickle_path) else None

    with run_localstripe() as a, run_localstripe() as b:
        assert a.port != b.port
        a.client().v1.customers.create({"email": "only-in-a@example.com"})
        assert [c.email for c in a.client().v1.customers.list().data] == ["only-in-a@example.com"]
        assert b.client().v1.customers.list().data == []

        # Bound to 127.0.0.1 only: other loopback addresses are refused.
        port = a.port
        assert not _connect_refused("127.0.0.1", port, socket.AF_INET)
        assert _connect_refused("127.0.0.2", port, socket.AF_INET)
        if socket.has_ipv6:
            assert _connect_refused("::1", port, socket.AF_INET6)

        process = a.process

    assert process.poll() is not None  # stopped on exit
    after = os.stat(pickle_path).st_mtime_ns if os.path.exists(pickle_path) else None
    assert after == before  # the shared pickle was neither created nor rewritten


def test_register_webhook_event_filter() -> None:
    with run_localstripe() as ls, webhook_receiver() as (url, deliveries):
        ls.register_webhook(url, SECRET, events=["customer.deleted"], id="only-deletes")
        client: stripe.StripeClient = ls.client()
        customer = client.v1.customers.create({"email": "gone@example.com"})
        client.v1.customers.delete(customer.id)

        delivery = deliveries.get(timeout=10)
        event = stripe.Webhook.construct_event(
            delivery.body, delivery.headers["Stripe-Signature"], SECRET
        )
        assert event.type == "customer.deleted"
        assert event.data.object.id == customer.id
        assert deliveries.empty()  # customer.created was filtered out
