"""Checks for tests/support/fake_stripe.py, driven through the official stripe SDK."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from stripe.params import CustomerListParams

from .fake_stripe import FakeStripe, FakeStripeError, parse_form, run_fake_stripe

ADDRESS: Any = {
    "line1": "1 Market Street",
    "city": "San Francisco",
    "postal_code": "94103",
    "state": "CA",
    "country": "US",
}


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe(customers=250, invoices=40, locations=3) as server:
        yield server


def _ids(objects: Any) -> list[str]:
    return [o["id"] for o in objects]


# -- plumbing -----------------------------------------------------------------------------


def test_parse_form_nested_brackets() -> None:
    assert parse_form(
        "display_name=A+B&address[line1]=1+Main&metadata[tier]=gold&metadata[x]="
        "&types[]=a&types[]=b&expand[0]=c&created[gte]=5"
    ) == {
        "display_name": "A B",
        "address": {"line1": "1 Main"},
        "metadata": {"tier": "gold", "x": ""},
        "types": ["a", "b"],
        "expand": {"0": "c"},  # the SDK's indexed arrays; list params accept both forms
        "created": {"gte": "5"},
    }


@pytest.mark.acceptance
def test_startup_failure_reports_stderr() -> None:
    with pytest.raises(FakeStripeError, match="--invoices needs --customers"):
        with run_fake_stripe(invoices=5):
            pass  # pragma: no cover


@pytest.mark.acceptance
def test_keep_alive_and_content_length(fake: FakeStripe) -> None:
    host, port = fake.api_base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for _ in range(3):  # one connection, several requests
            conn.request(
                "GET", "/v1/account", headers={"Authorization": f"Bearer {fake.secret_key}"}
            )
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == len(body)
            assert resp.headers["Request-Id"].startswith("req_")
            assert not resp.will_close
        conn.request("GET", "/v1/account")  # no key at all
        resp = conn.getresponse()
        assert resp.status == 401
        assert json.loads(resp.read())["error"]["type"] == "invalid_request_error"
    finally:
        conn.close()


@pytest.mark.acceptance
def test_stops_on_exit() -> None:
    with run_fake_stripe() as fake:
        process = fake.process
        assert fake.is_running()
    assert process.returncode == 0  # SIGTERM -> clean shutdown, no SIGKILL needed


# -- auth and account ---------------------------------------------------------------------


@pytest.mark.acceptance
def test_bad_key_raises_authentication_error(fake: FakeStripe) -> None:
    with pytest.raises(stripe.AuthenticationError) as info:
        fake.client("pk_test_notasecretkey").v1.customers.list()
    assert info.value.http_status == 401
    assert "Invalid API Key provided: " in str(info.value)
    assert "notasecretkey" not in str(info.value)  # masked: pk_****tkey

    with pytest.raises(stripe.AuthenticationError):
        fake.client("sk_test_").v1.accounts.retrieve_current()


@pytest.mark.acceptance
def test_revoked_key_gets_401_other_keys_still_work(fake: FakeStripe) -> None:
    client = fake.client()
    assert client.v1.accounts.retrieve_current().id == "acct_fake"
    fake.revoke(fake.secret_key)
    with pytest.raises(stripe.AuthenticationError) as info:
        client.v1.accounts.retrieve_current()
    assert f"sk_test_****{fake.secret_key[-4:]}" in str(info.value)
    assert fake.client("sk_test_another_key").v1.customers.list({"limit": 1}).data


@pytest.mark.acceptance
def test_account_and_set_account(fake: FakeStripe) -> None:
    account = fake.client().v1.accounts.retrieve_current().to_dict()
    assert account["id"] == "acct_fake" and account["object"] == "account"
    assert (account["country"], account["default_currency"]) == ("US", "usd")
    assert account["email"]
    fake.set_account(default_currency="eur", country="DE")
    account = fake.account()
    assert (account["country"], account["default_currency"]) == ("DE", "eur")


@pytest.mark.acceptance
def test_seed_options_reach_the_account() -> None:
    with run_fake_stripe(currency="gbp", country="GB", locations=1) as fake:
        assert fake.account()["default_currency"] == "gbp"
        assert fake.locations()[0]["address"]["country"] == "GB"


# -- terminal locations -------------------------------------------------------------------


@pytest.mark.acceptance
def test_location_create_list_update_delete(fake: FakeStripe) -> None:
    client = fake.client()
    seeded = client.v1.terminal.locations.list({"limit": 100})
    assert _ids(seeded.data) == ["tml_000003", "tml_000002", "tml_000001"]

    created = client.v1.terminal.locations.create(
        {"display_name": "Pier 39", "address": ADDRESS, "metadata": {"tier": "gold", "k": "v"}}
    )
    assert created.id == "tml_000004"
    assert set(created.to_dict()) == {
        "id",
        "object",
        "address",
        "display_name",
        "livemode",
        "metadata",
    }
    assert created.object == "terminal.location" and created.livemode is False
    assert created.address.to_dict() == {**ADDRESS, "line2": None}
    assert _ids(client.v1.terminal.locations.list().data)[0] == created.id  # newest first

    updated = client.v1.terminal.locations.update(
        created.id, {"display_name": "Pier 40", "metadata": {"tier": "", "new": "1"}}
    )
    assert updated.display_name == "Pier 40"
    assert updated.metadata.to_dict() == {"k": "v", "new": "1"}  # merged, "" deleted a key
    assert updated.address.city == "San Francisco"

    deleted = client.v1.terminal.locations.delete(created.id)
    assert deleted.to_dict() == {"id": created.id, "object": "terminal.location", "deleted": True}
    assert created.id not in _ids(client.v1.terminal.locations.list({"limit": 100}).data)
    # Like Stripe: retrieving a deleted location answers the deletion stub ...
    assert client.v1.terminal.locations.retrieve(created.id).to_dict()["deleted"] is True
    # ... while changing it, or retrieving an id that never existed, is a 404.
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.terminal.locations.update(created.id, {"display_name": "x"})
    assert info.value.http_status == 404 and info.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.terminal.locations.retrieve("tml_nope")
    assert info.value.http_status == 404 and info.value.code == "resource_missing"

    assert fake.events() == []  # real Stripe has no terminal.location events


@pytest.mark.acceptance
def test_location_helpers_and_validation(fake: FakeStripe) -> None:
    location = fake.create_location("Shop", ADDRESS, {"a": "1"})
    assert fake.update_location(location["id"], metadata={"a": ""})["metadata"] == {}
    assert fake.delete_location(location["id"])["deleted"] is True
    with pytest.raises(stripe.InvalidRequestError) as info:
        fake.create_location("No country", {"line1": "x"})
    assert (info.value.http_status, info.value.param) == (400, "address[country]")
    with pytest.raises(stripe.InvalidRequestError) as info:  # Stripe has no created filter here
        fake.v1("get", "/v1/terminal/locations", created={"gte": 1})
    assert info.value.code == "parameter_unknown"


@pytest.mark.acceptance
def test_live_key_makes_livemode_objects(fake: FakeStripe) -> None:
    live = fake.client("sk_live_fake_key")
    assert live.v1.terminal.locations.create({"display_name": "L", "address": ADDRESS}).livemode
    assert live.v1.customers.create({"email": "x@example.com"}).livemode


# -- lists --------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_starting_after_pages_every_customer_once_newest_first(fake: FakeStripe) -> None:
    client = fake.client()
    seen: list[stripe.Customer] = []
    params: CustomerListParams = {"limit": 100}
    pages = 0
    while True:
        page = client.v1.customers.list(params)
        pages += 1
        seen.extend(page.data)
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    assert pages == 3
    ids = [c.id for c in seen]
    assert len(ids) == len(set(ids)) == 250
    assert ids == [f"cus_{i:06d}" for i in range(250, 0, -1)]
    created = [c.created for c in seen]
    assert created == sorted(created, reverse=True)
    assert len({c.email for c in seen}) == 250 and len({c.name for c in seen}) == 250
    first = seen[-1]
    assert first.metadata is not None and first.metadata.to_dict()["seed"] == "1"
    assert first.address is not None and first.address.line1 == "1 Main Street"
    # the SDK's own pager agrees
    assert [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()] == ids


@pytest.mark.acceptance
def test_ending_before_and_limits(fake: FakeStripe) -> None:
    client = fake.client()
    page = client.v1.customers.list({"limit": 3, "ending_before": "cus_000100"})
    assert _ids(page.data) == ["cus_000103", "cus_000102", "cus_000101"] and page.has_more
    page = client.v1.customers.list({"limit": 5, "ending_before": "cus_000248"})
    assert _ids(page.data) == ["cus_000250", "cus_000249"] and not page.has_more
    assert len(client.v1.customers.list().data) == 10  # default limit

    for bad in (0, 101):
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.customers.list({"limit": bad})
        assert (info.value.http_status, info.value.param) == (400, "limit")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.list({"starting_after": "cus_nope"})
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")
    assert info.value.param == "starting_after"


@pytest.mark.acceptance
def test_created_filter(fake: FakeStripe) -> None:
    client = fake.client()
    everyone = list(client.v1.customers.list({"limit": 100}).auto_paging_iter())
    cutoff = everyone[49].created  # the 50th newest; seeded one minute apart
    recent = list(
        client.v1.customers.list({"limit": 100, "created": {"gte": cutoff}}).auto_paging_iter()
    )
    assert [c.id for c in recent] == [c.id for c in everyone[:50]]
    assert all(c.created >= cutoff for c in recent)
    window = client.v1.customers.list(
        {"limit": 100, "created": {"gt": cutoff, "lte": everyone[10].created}}
    )
    assert _ids(window.data) == _ids(everyone[10:49])
    exact = fake.v1("get", "/v1/customers", created=cutoff)
    assert _ids(exact["data"]) == [everyone[49].id]


@pytest.mark.acceptance
def test_raw_request_returns_a_dict_page(fake: FakeStripe) -> None:
    client = fake.client()
    response = client.raw_request("get", "/v1/customers", limit=100)
    page = response.data
    assert isinstance(page, dict)
    assert (page["object"], page["url"], page["has_more"]) == ("list", "/v1/customers", True)
    second = client.raw_request(
        "get", "/v1/customers", limit=100, starting_after=page["data"][-1]["id"]
    )
    assert second.data["data"][0]["id"] == "cus_000150"


@pytest.mark.acceptance
def test_unknown_url_is_a_stripe_404(fake: FakeStripe) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        fake.v1("get", "/v1/foo")
    assert info.value.http_status == 404
    assert "Unrecognized request URL (GET: /v1/foo)" in str(info.value)


# -- customers, invoices, events ----------------------------------------------------------


@pytest.mark.acceptance
def test_customer_changes_produce_events(fake: FakeStripe) -> None:
    client = fake.client()
    customer = client.v1.customers.create(
        {
            "email": "ada@example.com",
            "name": "Ada",
            "metadata": {"tier": "gold"},
            "address": {"line1": "12 Analytical Way", "country": "GB"},
        }
    )
    assert customer.id == "cus_000251" and customer.created >= int(time.time()) - 5
    client.v1.customers.update(
        customer.id, {"name": "Ada Lovelace", "metadata": {"tier": "platinum"}}
    )
    client.v1.customers.update(customer.id, {"name": "Ada Lovelace"})  # no change, no event
    client.v1.customers.delete(customer.id)
    assert client.v1.customers.retrieve(customer.id).to_dict() == {
        "id": customer.id,
        "object": "customer",
        "deleted": True,
    }
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, {"name": "ghost"})

    events = client.v1.events.list({"types": ["customer.*"]}).data
    assert [e.type for e in events] == ["customer.deleted", "customer.updated", "customer.created"]
    deleted, updated, created = (e.to_dict() for e in events)
    assert set(created) == {
        "id",
        "object",
        "api_version",
        "created",
        "data",
        "livemode",
        "pending_webhooks",
        "request",
        "type",
    }
    assert created["object"] == "event" and created["id"].startswith("evt_")
    assert created["data"]["object"]["email"] == "ada@example.com"
    assert "previous_attributes" not in created["data"]
    assert created["request"]["id"].startswith("req_") and created["request"]["idempotency_key"]
    assert updated["data"]["object"]["name"] == "Ada Lovelace"
    assert updated["data"]["previous_attributes"] == {"name": "Ada", "metadata": {"tier": "gold"}}
    assert deleted["data"]["object"]["id"] == customer.id  # a full customer, as Stripe sends
    assert client.v1.events.retrieve(created["id"]).type == "customer.created"
    assert [e.type for e in client.v1.events.list({"type": "customer.updated"}).data] == [
        "customer.updated"
    ]
    assert client.v1.events.list({"created": {"gte": int(time.time()) + 60}}).data == []


@pytest.mark.acceptance
def test_invoices_seeded_created_and_paid(fake: FakeStripe) -> None:
    client = fake.client()
    seeded = list(client.v1.invoices.list({"limit": 100}).auto_paging_iter())
    assert len(seeded) == 40
    assert {i.status for i in seeded} == {"draft", "open", "paid", "void"}
    assert {i.customer for i in seeded} == {f"cus_{n:06d}" for n in range(1, 41)}  # round robin
    paid = next(i for i in seeded if i.status == "paid")
    assert paid.amount_paid == paid.amount_due > 0 and paid.amount_remaining == 0
    assert paid.status_transitions.paid_at and paid.currency == "usd"
    opened = client.v1.invoices.list({"status": "open", "limit": 100}).data
    assert opened and all(i.status == "open" for i in opened)
    assert fake.events() == []  # seeding emits nothing

    draft = fake.create_invoice("cus_000007", amount_due=4200, metadata={"order": "7"})
    assert (draft["status"], draft["amount_due"], draft["customer"]) == (
        "draft",
        4200,
        "cus_000007",
    )
    assert draft["customer_email"] == "customer000007@example.com"
    invoice = client.v1.invoices.pay(draft["id"])
    assert invoice.status == "paid" and invoice.amount_paid == 4200 and invoice.number
    assert invoice.status_transitions.paid_at
    assert [e["type"] for e in fake.events()] == [
        "invoice.payment_succeeded",
        "invoice.paid",
        "invoice.finalized",
        "invoice.created",
    ]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(draft["id"])  # already paid

    old = fake.seed_invoice("cus_000001", status="open", amount_due=100, created=1_600_000_000)
    assert old["created"] == 1_600_000_000
    assert _ids(client.v1.invoices.list({"created": {"lt": 1_600_000_001}}).data) == [old["id"]]
    with pytest.raises(stripe.InvalidRequestError) as info:
        fake.create_invoice("cus_nope")
    assert (info.value.http_status, info.value.param) == (400, "customer")


@pytest.mark.acceptance
def test_idempotency_key_replays(fake: FakeStripe) -> None:
    client = fake.client()
    first = client.v1.customers.create({"email": "once@example.com"}, {"idempotency_key": "k-1"})
    again = client.v1.customers.create({"email": "once@example.com"}, {"idempotency_key": "k-1"})
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(fake.events(type="customer.created")) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"email": "other@example.com"}, {"idempotency_key": "k-1"})


# -- faults and the request log -----------------------------------------------------------


@pytest.mark.acceptance
def test_rate_limit_fault_then_success(fake: FakeStripe) -> None:
    client = fake.client()
    fake.fault(
        "/v1/terminal/locations",
        method="GET",
        status=429,
        count=1,
        headers={"Retry-After": "1", "Stripe-Should-Retry": "true"},
    )
    client.v1.terminal.locations.create({"display_name": "POST is not faulted", "address": ADDRESS})
    with pytest.raises(stripe.RateLimitError) as info:
        client.v1.terminal.locations.list()
    exc = info.value
    assert exc.http_status == 429
    # The SDK builds RateLimitError without `code`: it is only in the error object/body.
    assert exc.code is None
    assert exc.error is not None and exc.error.code == "rate_limit"
    assert isinstance(exc.json_body, dict) and exc.json_body["error"]["code"] == "rate_limit"
    assert exc.headers is not None and exc.headers["Retry-After"] == "1"
    assert exc.headers["retry-after"] == "1"  # a case-insensitive dict of response headers
    assert len(client.v1.terminal.locations.list().data) == 4
    assert fake.faults() == []


@pytest.mark.acceptance
def test_server_error_fault_and_count(fake: FakeStripe) -> None:
    client = fake.client()
    fake.fault("/v1/customers", status=500, count=2)
    for _ in range(2):
        with pytest.raises(stripe.APIError) as info:
            client.v1.customers.list()
        assert info.value.http_status == 500
    assert client.v1.customers.list().data


@pytest.mark.acceptance
def test_custom_fault_body_and_disconnect(fake: FakeStripe) -> None:
    client = fake.client()
    fake.fault("/v1/account", status=502, body="<html>bad gateway</html>")
    with pytest.raises(stripe.APIError, match="Invalid response"):
        client.v1.accounts.retrieve_current()
    fake.fault("/v1/account", disconnect=True)
    with pytest.raises(stripe.APIConnectionError):
        client.v1.accounts.retrieve_current()
    assert client.v1.accounts.retrieve_current().id == "acct_fake"


@pytest.mark.acceptance
def test_delay_fault_is_slow_but_successful(fake: FakeStripe) -> None:
    client = fake.client()
    fake.fault("/v1/customers", delay=0.3)
    started = time.monotonic()
    page = client.v1.customers.list({"limit": 100})
    assert time.monotonic() - started >= 0.3
    assert len(page.data) == 100
    started = time.monotonic()
    client.v1.customers.list({"limit": 100})
    assert time.monotonic() - started < 0.3  # the fault was used up


@pytest.mark.acceptance
def test_request_log(fake: FakeStripe) -> None:
    client = fake.client()
    fake.clear_requests()
    client.v1.customers.list({"limit": 2, "created": {"gte": 5}})
    fake.fault("/v1/events", status=429)
    with pytest.raises(stripe.RateLimitError):
        client.v1.events.list({"types": ["customer.created", "customer.updated"]})
    client.v1.terminal.locations.create(
        {"display_name": "Logged", "address": ADDRESS, "metadata": {"a": "b"}}
    )
    log = fake.requests()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", "/v1/customers", 200),
        ("GET", "/v1/events", 429),
        ("POST", "/v1/terminal/locations", 200),
    ]
    assert log[0]["query"] == {"limit": "2", "created": {"gte": "5"}}
    assert log[1]["query"] == {"types": {"0": "customer.created", "1": "customer.updated"}}
    assert log[2]["body"]["metadata"] == {"a": "b"}
    assert all(isinstance(r["at"], float) for r in log)
    fake.clear_requests()
    assert fake.requests() == []


# -- a large backfill ---------------------------------------------------------------------


@pytest.mark.acceptance
def test_fifty_thousand_customers_page_fast() -> None:
    started = time.perf_counter()
    with run_fake_stripe(customers=50_000) as fake:
        ready = time.perf_counter()
        client = fake.client()
        count, after, last_created = 0, None, None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after is not None:
                params["starting_after"] = after
            page = client.raw_request("get", "/v1/customers", **params).data
            data = page["data"]
            count += len(data)
            assert last_created is None or data[0]["created"] <= last_created
            last_created = data[-1]["created"]
            if not page["has_more"]:
                break
            after = data[-1]["id"]
        paged = time.perf_counter() - ready
    assert count == 50_000
    print(
        f"\nfake stripe: started with 50,000 customers in {ready - started:.2f}s; paged them "
        f"in {paged:.2f}s = {count / paged:,.0f} customers/s through the SDK"
    )


# -- webhook endpoints, restricted keys, deliveries ------------------------------------------


@pytest.fixture
def small_fake() -> Iterator[FakeStripe]:
    with run_fake_stripe() as server:
        yield server


@pytest.mark.acceptance
def test_webhook_endpoint_create_retrieve_list_update_delete(small_fake: FakeStripe) -> None:
    client = small_fake.client()
    created = client.v1.webhook_endpoints.create(
        {
            "url": "https://example.com/hook",
            "enabled_events": ["customer.created", "invoice.paid"],
            "api_version": "2026-10-28.endive",
            "description": "Snapshots",
            "metadata": {"snapshots_connection": "conn_1"},
        }
    )
    assert created.secret is not None and created.secret.startswith("whsec_")
    assert created.status == "enabled"
    assert created.enabled_events == ["customer.created", "invoice.paid"]
    got = client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in got  # only the create answer carries it
    assert got.metadata.to_dict() == {"snapshots_connection": "conn_1"}
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [created.id]
    updated = client.v1.webhook_endpoints.update(
        created.id, {"enabled_events": ["customer.updated"], "disabled": True}
    )
    assert (updated.enabled_events, updated.status) == (["customer.updated"], "disabled")
    deleted = client.v1.webhook_endpoints.delete(created.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.webhook_endpoints.retrieve(created.id)
    assert caught.value.http_status == 404


@pytest.mark.acceptance
def test_endpoint_status_set_by_the_test(small_fake: FakeStripe) -> None:
    endpoint = small_fake.client().v1.webhook_endpoints.create(
        {"url": "https://example.com/hook", "enabled_events": ["customer.created"]}
    )
    small_fake.set_endpoint_status(endpoint.id, "disabled")
    assert small_fake.client().v1.webhook_endpoints.retrieve(endpoint.id).status == "disabled"
    (listed,) = small_fake.webhook_endpoints()
    assert listed["secret"] == endpoint.secret


@pytest.mark.acceptance
def test_restricted_key_gets_403_outside_its_permissions(small_fake: FakeStripe) -> None:
    key = "rk_test_restricted0001"
    small_fake.set_permissions(key, ["customers:read", "webhook_endpoints:write"])
    client = small_fake.client(key)
    client.v1.customers.list()
    client.v1.webhook_endpoints.list()  # write includes read
    with pytest.raises(stripe.PermissionError) as caught:
        client.v1.terminal.locations.list()
    assert caught.value.http_status == 403
    assert "rak_terminal_locations_read" in str(caught.value)
    with pytest.raises(stripe.PermissionError):
        client.v1.customers.create({"email": "a@example.com"})


@pytest.mark.acceptance
def test_events_are_delivered_signed_to_matching_enabled_endpoints(
    small_fake: FakeStripe,
) -> None:
    import http.server
    import threading

    received: list[tuple[bytes, str]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers["Stripe-Signature"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        client = small_fake.client()
        endpoint = client.v1.webhook_endpoints.create(
            {"url": url, "enabled_events": ["customer.*"]}
        )
        client.v1.webhook_endpoints.create(
            {"url": url, "enabled_events": ["invoice.paid"]}  # does not match
        )
        client.v1.customers.create({"email": "a@example.com"})
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(received) == 1
        body, signature = received[0]
        event = stripe.Webhook.construct_event(body.decode(), signature, endpoint.secret or "")
        assert event.type == "customer.created"
        # The fake records a delivery once the answer is back, after the hook has the body.
        while not small_fake.deliveries() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [d["status"] for d in small_fake.deliveries()] == [200]
    finally:
        server.shutdown()
        server.server_close()
