"""The key check of `connect`, against a small Stripe-compatible server (localstripe lacks
GET /v1/account, so this is the seam where a fake server stands in)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from snapshots import errors, stripe_api

ACCOUNT = {"id": "acct_123", "object": "account", "default_currency": "eur", "country": "FR"}


class FakeStripe(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, Any]]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path.split("?")[0], (404, "Not Found"))
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header(
            "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_stripe() -> Iterator[tuple[str, dict[str, tuple[int, Any]]]]:
    routes: ClassVar[dict[str, tuple[int, Any]]] = {}
    handler = type("Handler", (FakeStripe,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.acceptance
def test_the_account_behind_a_key(fake_stripe: tuple[str, dict[str, tuple[int, Any]]]) -> None:
    base, routes = fake_stripe
    routes["/v1/account"] = (200, ACCOUNT)
    account = stripe_api.check_key(secret_key="sk_live_abc123", api_base=base)
    assert account == stripe_api.Account(
        id="acct_123", livemode=True, default_currency="eur", country="FR"
    )


@pytest.mark.acceptance
def test_without_the_account_endpoint_the_key_is_checked_by_listing_customers(
    fake_stripe: tuple[str, dict[str, tuple[int, Any]]],
) -> None:
    base, routes = fake_stripe
    routes["/v1/customers"] = (200, {"object": "list", "data": [], "has_more": False})
    account = stripe_api.check_key(secret_key="sk_test_abc123", api_base=base)
    assert account == stripe_api.Account(
        id=None, livemode=False, default_currency=None, country=None
    )


@pytest.mark.acceptance
def test_a_refused_key_says_so(fake_stripe: tuple[str, dict[str, tuple[int, Any]]]) -> None:
    base, routes = fake_stripe
    refused = {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
    routes["/v1/account"] = (401, refused)
    with pytest.raises(errors.StripeAuthError, match="refused the key"):
        stripe_api.check_key(secret_key="sk_test_abc123", api_base=base)


def test_an_unreachable_api_is_a_retryable_error_in_one_line() -> None:
    with pytest.raises(errors.StripeUnavailable) as caught:
        stripe_api.check_key(secret_key="sk_test_abc123", api_base="http://127.0.0.1:9")
    assert errors.describe(caught.value) == (
        "Stripe could not be reached while reading the account (after 3 attempts): "
        "connection refused"
    )
