"""The REST API on SQLite and PostgreSQL: authentication and scopes on every read endpoint,
pagination, the shape of records made from real signed events, and the service endpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import connections, keys
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.times import iso
from tests.conftest import EventFactory, fixture
from tests.integration.helpers import (
    CONTACT_KEYS,
    Key,
    MakeKey,
    Stripe,
    assert_error,
    bearer,
    customer,
    invoice,
    location,
    settle_uses,
)

# Endpoints and authentication.

MISSING = {"contact": "con_doesnotexist", "invoice": "inv_doesnotexist"}
MISSING |= {"location": "loc_doesnotexist", "event": "evt_doesnotexist"}
# (path template, the scope it needs, the kind of record in the path or None for a list)
ENDPOINT_ROWS: list[tuple[str, str, str | None]] = [
    ("/v1/customers", "contacts.readonly", None),
    ("/v1/customers/{}", "contacts.readonly", "contact"),
    ("/v1/invoices", "invoices.readonly", None),
    ("/v1/invoices/{}", "invoices.readonly", "invoice"),
    ("/v1/locations", "saas/location.read", None),
    ("/v1/locations/{}", "saas/location.read", "location"),
    ("/v1/events", "events.readonly", None),
    ("/v1/events/{}", "events.readonly", "event"),
]
ENDPOINTS = [
    pytest.param(*row, id=("get-" if row[2] else "list-") + row[0].split("/")[2])
    for row in ENDPOINT_ROWS
]


@pytest.fixture
def seeded(stripe: Stripe) -> dict[str, str]:
    """One record of each kind, made the way production makes them; kind -> id."""
    stripe.send(_event(stripe, "customer.created", customer(1)))
    receipt = stripe.send(_event(stripe, "invoice.created", invoice(1, "cus_000001")))
    stripe.watch(_event(stripe, "terminal.location.created", location(1)))
    stripe.drain()
    with stripe.db.read() as conn:
        ids = {
            kind: conn.execute(sa.select(table.c.id)).scalar_one()
            for kind, table in (
                ("contact", tables.contacts),
                ("invoice", tables.invoices),
                ("location", tables.locations),
            )
        }
    return ids | {"event": str(receipt["item_id"])}


_sequence = iter(range(1, 10**9))


def _event(
    stripe: Stripe, event_type: str, obj: dict[str, Any], created: int | None = None
) -> dict[str, Any]:
    number = next(_sequence)
    return {
        "id": f"evt_api{number:010d}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": created if created is not None else 1_700_000_000 + number,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def _revoked(db: Database, make_key: MakeKey, scope: str) -> str:
    key = make_key(scope)
    with db.write() as tx:
        keys.revoke(tx, key.id)
    return key.secret


def _expired(db: Database, make_key: MakeKey, scope: str) -> str:
    with db.write() as tx:
        secret = keys.create(tx, name="expiring", scopes=[scope], expires_in=3600).secret
    with db.write() as conn:
        conn.execute(
            tables.api_keys.update()
            .where(tables.api_keys.c.key_hash == keys.digest(secret))
            .values(expires_at=time.time() - 1)
        )
    return secret


def _malformed(db: Database, make_key: MakeKey, scope: str) -> str:
    secret = make_key(scope).secret
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


AUTH_FAILURES = [
    pytest.param(lambda db, mk, scope: None, "missing_api_key", "no API key", id="no-key"),
    pytest.param(
        lambda db, mk, scope: "not-a-key", "invalid_api_key", "malformed", id="not-our-shape"
    ),
    pytest.param(_malformed, "invalid_api_key", "malformed", id="bad-checksum"),
    pytest.param(
        lambda db, mk, scope: keys.generate("live"), "invalid_api_key", "not known", id="unknown"
    ),
    pytest.param(_revoked, "api_key_revoked", "revoked", id="revoked"),
    pytest.param(_expired, "api_key_expired", "expired", id="expired"),
]


def _path(template: str, kind: str | None, ids: dict[str, str]) -> str:
    return template.format(ids[kind]) if kind else template


@pytest.mark.parametrize(("template", "scope", "kind"), ENDPOINTS)
@pytest.mark.parametrize(("presented", "code", "says"), AUTH_FAILURES)
def test_refused_keys_are_401(
    client: TestClient,
    db: Database,
    make_key: MakeKey,
    template: str,
    scope: str,
    kind: str | None,
    presented: Callable[..., str | None],
    code: str,
    says: str,
) -> None:
    # The key carries the right scope: only its state is wrong. Authentication comes before
    # any lookup, so the id need not exist.
    secret = presented(db, make_key, scope)
    headers = {} if secret is None else bearer(secret)
    response = client.get(_path(template, kind, MISSING), headers=headers)
    error = assert_error(response, 401, code, checks="envelope")
    assert error["type"] == "authentication_error"
    assert says in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Bearer", id="bearer-no-token"),
        pytest.param("Bearer    ", id="bearer-blank"),
        pytest.param("snp_live_x", id="no-scheme"),
    ],
)
def test_a_malformed_authorization_header_is_401(client: TestClient, authorization: str) -> None:
    response = client.get("/v1/customers", headers={"Authorization": authorization})
    assert_error(response, 401, checks="envelope")


@pytest.mark.parametrize(("template", "scope", "kind"), ENDPOINTS)
def test_every_other_scope_is_403_naming_the_scope(
    client: TestClient,
    make_key: MakeKey,
    template: str,
    scope: str,
    kind: str | None,
) -> None:
    path = _path(template, kind, MISSING)
    for other in keys.SCOPES:
        if other in (scope, "admin"):
            continue
        response = client.get(path, headers=make_key(other).headers)
        error = assert_error(response, 403, "missing_scope", checks="envelope")
        assert error["type"] == "permission_error"
        assert error["scope"] == scope
        assert scope in error["message"]
        assert response.headers["x-accepted-scopes"] == scope


@pytest.mark.parametrize(("template", "scope", "kind"), ENDPOINTS)
def test_the_right_scope_or_admin_is_200(
    client: TestClient,
    make_key: MakeKey,
    seeded: dict[str, str],
    template: str,
    scope: str,
    kind: str | None,
) -> None:
    path = _path(template, kind, seeded)
    for scopes in ([scope], ["admin"], ["workflows.readonly", scope, "integrations.write"]):
        response = client.get(path, headers=make_key(*scopes).headers)
        assert response.status_code == 200, (scopes, response.text)
        body = response.json()
        if kind is None:
            assert len(body["data"]) >= 1
            assert body["has_more"] is False
        else:
            assert str(body["id"]) == seeded[kind]


def test_location_read_grants_locations_and_nothing_else(
    client: TestClient, make_key: MakeKey, seeded: dict[str, str]
) -> None:
    headers = make_key("saas/location.read").headers
    for template, _, kind in ENDPOINT_ROWS:
        response = client.get(_path(template, kind, seeded), headers=headers)
        if template.startswith("/v1/locations"):
            assert response.status_code == 200, (template, response.text)
        else:
            assert_error(response, 403, "missing_scope", checks="envelope")


def test_a_key_works_on_a_server_of_its_environment_only(
    client: TestClient, make_key: MakeKey, settings: Settings
) -> None:
    """Issue 15: a `snp_test_` key worked on a `live` server; now it is refused there (401
    naming the mismatch) and works on a `test` server."""
    secret = make_key("contacts.readonly", env="test").secret
    assert secret.startswith("snp_test_")
    refused = client.get("/v1/customers", headers=bearer(secret))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_wrong_environment"
    testing = settings.model_copy(update={"key_env": "test"})
    with TestClient(create_app(testing)) as test_server:
        assert test_server.get("/v1/customers", headers=bearer(secret)).status_code == 200


def test_a_used_key_records_last_used_at(
    client: TestClient, db: Database, make_key: MakeKey
) -> None:
    secret = make_key("contacts.readonly").secret
    with db.read() as tx:
        (key,) = keys.list_all(tx)
    assert key.last_used_at is None
    before = time.time()
    assert client.get("/v1/customers", headers=bearer(secret)).status_code == 200
    settle_uses(client)
    with db.read() as tx:
        (key,) = keys.list_all(tx)
    assert key.last_used_at is not None and key.last_used_at >= before - 1


def test_a_revoked_key_stops_working_at_once(
    client: TestClient, db: Database, make_key: MakeKey
) -> None:
    secret = make_key("contacts.readonly").secret
    assert client.get("/v1/customers", headers=bearer(secret)).status_code == 200
    with db.write() as tx:
        (key,) = keys.list_all(tx)
        keys.revoke(tx, key.id)
    assert_error(
        client.get("/v1/customers", headers=bearer(secret)),
        401,
        "api_key_revoked",
        checks="envelope",
    )


# Pagination.

LISTS = [
    pytest.param("/v1/customers", "contact", id="customers"),
    pytest.param("/v1/invoices", "invoice", id="invoices"),
    pytest.param("/v1/locations", "location", id="locations"),
    pytest.param("/v1/events", "event", id="events"),
]
COUNT = 7


def make_records(stripe: Stripe, kind: str, count: int) -> list[str]:
    """`count` records of `kind`, oldest first; returns their Stripe ids in creation order."""
    made = []
    for n in range(1, count + 1):
        if kind == "contact":
            stripe.send(_event(stripe, "customer.created", customer(n)))
            made.append(f"cus_{n:06d}")
        elif kind == "invoice":
            stripe.send(_event(stripe, "invoice.created", invoice(n, "cus_shared")))
            made.append(f"in_{n:06d}")
        elif kind == "location":
            stripe.watch(_event(stripe, "terminal.location.created", location(n)))
            made.append(f"tml_{n:06d}")
        else:
            receipt = stripe.send(_event(stripe, "charge.succeeded", {"id": f"ch_{n}"}))
            made.append(receipt["event_id"])
    stripe.drain()
    return made


def stripe_id(kind: str, record: dict[str, Any]) -> str:
    field = {
        "contact": "stripe_customer_id",
        "invoice": "stripe_invoice_id",
        "location": "stripe_location_id",
        "event": "event_id",
    }[kind]
    return str(record[field])


def walk(client: TestClient, path: str, headers: dict[str, str], limit: int) -> list[list[Any]]:
    pages: list[list[Any]] = []
    after: Any = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["starting_after"] = after
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "has_more"}
        pages.append(body["data"])
        assert len(body["data"]) <= limit
        if not body["has_more"]:
            return pages
        assert len(body["data"]) == limit
        after = body["data"][-1]["id"]
        assert len(pages) <= COUNT + 1, "paging does not end"


@pytest.mark.parametrize(("path", "kind"), LISTS)
def test_paging_visits_every_record_once_newest_first(
    client: TestClient, stripe: Stripe, admin: Key, path: str, kind: str
) -> None:
    made = make_records(stripe, kind, COUNT)
    for limit in (1, 2, 3, COUNT, COUNT + 1, 100):
        pages = walk(client, path, admin.headers, limit)
        assert len(pages) == math.ceil(COUNT / limit), limit
        seen = [stripe_id(kind, r) for page in pages for r in page]
        assert seen == list(reversed(made)), limit
        ids = [r["id"] for page in pages for r in page]
        assert len(set(ids)) == len(ids) == COUNT, limit


@pytest.mark.parametrize(("path", "kind"), LISTS)
def test_the_default_page_is_20(
    client: TestClient, stripe: Stripe, admin: Key, path: str, kind: str
) -> None:
    make_records(stripe, kind, 21)
    body = client.get(path, headers=admin.headers).json()
    assert len(body["data"]) == 20
    assert body["has_more"] is True
    rest = client.get(
        path, params={"starting_after": body["data"][-1]["id"]}, headers=admin.headers
    )
    assert len(rest.json()["data"]) == 1
    assert rest.json()["has_more"] is False


@pytest.mark.parametrize(("path", "kind"), LISTS)
def test_an_empty_list(client: TestClient, admin: Key, path: str, kind: str) -> None:
    response = client.get(path, headers=admin.headers)
    assert response.status_code == 200
    assert response.json() == {"data": [], "has_more": False}


BAD_LIMITS = ("0", "101", "-1", "ten", "1.5", "")


@pytest.mark.parametrize(("path", "kind"), LISTS)
def test_limit_is_1_to_100(client: TestClient, admin: Key, path: str, kind: str) -> None:
    for limit in ("1", "100"):
        response = client.get(path, params={"limit": limit}, headers=admin.headers)
        assert response.status_code == 200, (limit, response.text)
    for limit in BAD_LIMITS:
        response = client.get(path, params={"limit": limit}, headers=admin.headers)
        error = assert_error(response, 400, "parameter_invalid", checks="envelope")
        assert "limit" in error["message"], limit


@pytest.mark.parametrize(
    ("path", "kind", "cursor"),
    [
        pytest.param("/v1/customers", "contact", "con_doesnotexist", id="customers"),
        pytest.param("/v1/invoices", "invoice", "inv_doesnotexist", id="invoices"),
        pytest.param("/v1/locations", "location", "loc_doesnotexist", id="locations"),
        pytest.param("/v1/events", "event", "999999", id="events"),
    ],
)
def test_an_unknown_cursor_is_400(
    client: TestClient, stripe: Stripe, admin: Key, path: str, kind: str, cursor: str
) -> None:
    make_records(stripe, kind, 2)
    response = client.get(path, params={"starting_after": cursor}, headers=admin.headers)
    assert_error(response, 400, checks="envelope")


def test_a_cursor_of_another_kind_is_400(
    client: TestClient, stripe: Stripe, admin: Key, seeded: dict[str, str]
) -> None:
    response = client.get(
        "/v1/customers", params={"starting_after": seeded["invoice"]}, headers=admin.headers
    )
    assert_error(response, 400, "invalid_cursor", checks="envelope")


def test_an_event_cursor_must_be_an_item_number(client: TestClient, admin: Key) -> None:
    response = client.get("/v1/events", params={"starting_after": "evt_1"}, headers=admin.headers)
    assert_error(response, 400, "parameter_invalid", checks="envelope")


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        pytest.param("/v1/events", "99999999999999999999999", id="events-huge"),
        pytest.param("/v1/events", "-1", id="events-negative"),
        pytest.param("/v1/customers", "con_\x00", id="customers-nul"),
        pytest.param("/v1/invoices", "x" * 5000, id="invoices-very-long"),
    ],
)
def test_odd_cursors_are_answered_without_a_500(
    settings: Settings,
    connection: connections.Connection,
    admin: Key,
    path: str,
    cursor: str,
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get(path, params={"starting_after": cursor}, headers=admin.headers)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert_error(response, 400, checks="envelope")


def test_events_filter_by_status(client: TestClient, stripe: Stripe, admin: Key) -> None:
    stripe.send(_event(stripe, "customer.created", customer(1)))
    stripe.send(_event(stripe, "charge.succeeded", {"id": "ch_1"}))
    stripe.drain()
    statuses = {
        s: [
            e["event_type"]
            for e in client.get("/v1/events", params={"status": s}, headers=admin.headers).json()[
                "data"
            ]
        ]
        for s in ("done", "ignored", "pending")
    }
    assert statuses == {
        "done": ["customer.created"],
        "ignored": ["charge.succeeded"],
        "pending": [],
    }
    assert_error(
        client.get("/v1/events", params={"status": "nope"}, headers=admin.headers),
        400,
        checks="envelope",
    )


# Records made from events.


def test_a_customer_becomes_a_contact_with_exactly_its_fields(
    client: TestClient,
    stripe: Stripe,
    admin: Key,
    connection: connections.Connection,
) -> None:
    address = {
        "line1": "12 Analytical Row",
        "line2": "Flat 3",
        "city": "London",
        "state": None,
        "postal_code": "NW1 6XE",
        "country": "GB",
    }
    fields = {
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "phone": "+44 20 7946 0000",
        "address": address,
        "metadata": {"crm_id": "42", "tier": "gold"},
    }
    stripe.send(_event(stripe, "customer.created", customer(7, created=1_600_000_000, **fields)))
    stripe.drain()
    (contact,) = client.get("/v1/customers", headers=admin.headers).json()["data"]
    assert set(contact) == CONTACT_KEYS
    assert {k: contact[k] for k in fields} == fields
    assert contact["id"].startswith("con_")
    assert contact["object"] == "contact"
    assert contact["stripe_customer_id"] == "cus_000007"
    assert contact["archived"] is False
    assert contact["tags"] == []
    assert contact["connection_id"] == connection.id
    assert contact["livemode"] is False
    assert contact["test"] is False
    assert contact["stripe_created"] == iso(1_600_000_000)
    one = client.get(f"/v1/customers/{contact['id']}", headers=admin.headers)
    assert one.status_code == 200
    assert one.json() == contact


@pytest.mark.parametrize(
    ("changes", "payment_status"),
    [
        pytest.param({"status": "draft"}, "draft", id="draft"),
        pytest.param({"status": "open"}, "unpaid", id="open"),
        pytest.param({"status": "open", "amount_paid": 500}, "partially_paid", id="partial"),
        pytest.param(
            {"status": "open", "attempted": True, "attempt_count": 1}, "failed", id="failed"
        ),
        pytest.param({"status": "paid", "amount_paid": 5000}, "paid", id="paid"),
        pytest.param({"status": "void"}, "void", id="void"),
        pytest.param({"status": "uncollectible"}, "uncollectible", id="uncollectible"),
    ],
)
def test_an_invoice_is_logged_and_linked_to_its_contact(
    client: TestClient,
    stripe: Stripe,
    admin: Key,
    changes: dict[str, Any],
    payment_status: str,
) -> None:
    stripe.send(_event(stripe, "customer.created", customer(3)))
    body = invoice(9, "cus_000003", amount_due=5000, currency="eur") | changes
    stripe.send(_event(stripe, "invoice.created", body))
    stripe.drain()
    (contact,) = client.get("/v1/customers", headers=admin.headers).json()["data"]
    (logged,) = client.get("/v1/invoices", headers=admin.headers).json()["data"]
    assert logged["id"].startswith("inv_")
    assert logged["object"] == "invoice"
    assert logged["amount_due"] == 5000
    assert logged["amount_paid"] == changes.get("amount_paid", 0)
    assert logged["currency"] == "eur"
    assert logged["status"] == changes["status"]
    assert logged["payment_status"] == payment_status
    assert logged["customer_id"] == contact["id"]
    assert logged["stripe_invoice_id"] == "in_000009"
    assert logged["stripe_customer_id"] == "cus_000003"
    assert logged["archived"] is False
    assert client.get(f"/v1/invoices/{logged['id']}", headers=admin.headers).json() == logged


def test_a_paid_event_updates_the_logged_invoice(
    client: TestClient, stripe: Stripe, admin: Key
) -> None:
    stripe.send(_event(stripe, "invoice.created", invoice(4, "cus_000004", amount_due=700)))
    paid = invoice(4, "cus_000004", amount_due=700, amount_paid=700, status="paid")
    stripe.send(_event(stripe, "invoice.paid", paid))
    stripe.drain()
    (logged,) = client.get("/v1/invoices", headers=admin.headers).json()["data"]
    assert (logged["status"], logged["payment_status"], logged["amount_paid"]) == (
        "paid",
        "paid",
        700,
    )


def test_an_invoice_for_an_unknown_customer_makes_the_contact(
    client: TestClient, stripe: Stripe, admin: Key
) -> None:
    body = invoice(5, "cus_new", customer_email="new@example.com", customer_name="New One")
    stripe.send(_event(stripe, "invoice.created", body))
    stripe.drain()
    (contact,) = client.get("/v1/customers", headers=admin.headers).json()["data"]
    (logged,) = client.get("/v1/invoices", headers=admin.headers).json()["data"]
    assert logged["customer_id"] == contact["id"]
    assert (contact["stripe_customer_id"], contact["email"], contact["name"]) == (
        "cus_new",
        "new@example.com",
        "New One",
    )


def test_a_location_from_the_watcher(client: TestClient, stripe: Stripe, admin: Key) -> None:
    stripe.watch(_event(stripe, "terminal.location.created", location(2)))
    stripe.drain()
    (loc,) = client.get("/v1/locations", headers=admin.headers).json()["data"]
    assert loc["id"].startswith("loc_")
    assert (loc["object"], loc["name"], loc["stripe_location_id"]) == (
        "location",
        "Store 2",
        "tml_000002",
    )
    assert loc["address"] == fixture("terminal.location")["address"]
    assert loc["country"] == "US"
    assert loc["archived"] is False


def test_an_event_by_number_and_by_stripe_id(
    client: TestClient, stripe: Stripe, admin: Key
) -> None:
    receipt = stripe.send(_event(stripe, "customer.created", customer(1)))
    stripe.drain()
    by_number = client.get(f"/v1/events/{receipt['item_id']}", headers=admin.headers)
    by_stripe_id = client.get(f"/v1/events/{receipt['event_id']}", headers=admin.headers)
    assert by_number.status_code == by_stripe_id.status_code == 200
    assert by_number.json() == by_stripe_id.json()
    assert by_number.json()["status"] == "done"
    assert by_number.json()["flows"] == ["contacts"]
    assert by_number.json()["source"] == "webhook"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/customers/con_doesnotexist", id="customer"),
        pytest.param("/v1/customers/inv_wrongkind", id="customer-with-invoice-prefix"),
        pytest.param("/v1/invoices/inv_doesnotexist", id="invoice"),
        pytest.param("/v1/locations/loc_doesnotexist", id="location"),
        pytest.param("/v1/events/evt_doesnotexist", id="event-by-stripe-id"),
        pytest.param("/v1/events/424242", id="event-by-number"),
        pytest.param("/v1/events/%C2%B2", id="event-superscript-digit"),
        pytest.param("/v1/events/99999999999999999999999", id="event-huge-number"),
        pytest.param("/v1/customers/con_%00", id="customer-nul"),
        pytest.param("/v1/events/evt_%00", id="event-nul"),
    ],
)
def test_unknown_ids_are_404(
    settings: Settings, connection: connections.Connection, admin: Key, path: str
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get(path, headers=admin.headers)
    assert_error(response, 404, "resource_missing", checks="envelope")


def test_a_real_record_of_another_kind_is_404(
    client: TestClient, admin: Key, seeded: dict[str, str]
) -> None:
    response = client.get(f"/v1/invoices/{seeded['contact']}", headers=admin.headers)
    assert_error(response, 404, "resource_missing", checks="envelope")


def test_an_unknown_route_is_a_json_404(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found", checks="envelope")


# Service endpoints.


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["x-request-id"].startswith("req_")


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    assert {
        "/v1/customers",
        "/v1/customers/{contact_id}",
        "/v1/invoices",
        "/v1/invoices/{invoice_id}",
        "/v1/locations",
        "/v1/locations/{location_id}",
        "/v1/events",
        "/v1/events/{ref}",
        "/webhooks/stripe/{connection_id}",
        "/healthz",
    } <= set(spec.json()["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


def test_metrics_count_inbox_items_by_status(client: TestClient, stripe: Stripe) -> None:
    stripe.send(_event(stripe, "customer.created", customer(1)))
    stripe.send(_event(stripe, "charge.succeeded", {"id": "ch_1"}))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'snapshots_inbox_items{status="pending"} 1.0' in text
    assert 'snapshots_inbox_items{status="ignored"} 1.0' in text
    assert 'snapshots_inbox_items{status="dead"} 0.0' in text


def test_every_response_has_a_distinct_request_id(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert first != second


def test_event_factory_events_flow_through(
    client: TestClient, stripe: Stripe, admin: Key, event_factory: EventFactory
) -> None:
    stripe.send(event_factory("customer.created", email="factory@example.com"))
    stripe.drain()
    (contact,) = client.get("/v1/customers", headers=admin.headers).json()["data"]
    assert contact["email"] == "factory@example.com"
