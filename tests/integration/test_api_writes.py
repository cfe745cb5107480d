"""The API's writes on SQLite and PostgreSQL: upsert, change and archive contacts, create and
change locations, set an invoice's payment status and notes; validation, read-only fields,
scopes, idempotency keys, how API edits and Stripe events settle, and the list filters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import connections, errors, idempotency, keys
from snapshots.app import create_app
from snapshots.records import edits, models, ordering
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.times import iso
from tests.integration.helpers import (
    CONTACT_KEYS,
    MakeKey,
    Stripe,
    assert_error,
    count,
    customer,
    invoice,
    location,
)

WRITE_SCOPES = ["contacts.write", "saas/location.write", "invoices.write"]
READ_SCOPES = ["contacts.readonly", "saas/location.read", "invoices.readonly"]


@pytest.fixture
def client(app_settings: Settings, connection: connections.Connection) -> Iterator[TestClient]:
    """The shared `client`, but a server error comes back as a 500 response instead of being
    raised in the test (some tests here check what a caller sees then)."""
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def h(make_key: MakeKey) -> dict[str, str]:
    """Headers of a key that may read and write every record."""
    return make_key(*WRITE_SCOPES, *READ_SCOPES).headers


_numbers = iter(range(1, 10**9))


def event(event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": f"evt_w{next(_numbers):010d}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def from_stripe(stripe: Stripe, number: int = 1, created: int | None = None, **changes: Any) -> str:
    """A contact made from a customer.created event; returns its id."""
    created = created if created is not None else int(time.time()) - 1000
    stripe.send(event("customer.created", customer(number, **changes), created))
    stripe.drain()
    with stripe.db.read() as conn:
        t = tables.contacts
        return str(
            conn.execute(
                sa.select(t.c.id).where(t.c.stripe_customer_id == f"cus_{number:06d}")
            ).scalar_one()
        )


def logged_invoice(stripe: Stripe, number: int = 1, created: int | None = None) -> str:
    created = created if created is not None else int(time.time()) - 1000
    stripe.send(event("invoice.created", invoice(number, "cus_000001"), created))
    stripe.drain()
    with stripe.db.read() as conn:
        t = tables.invoices
        return str(
            conn.execute(
                sa.select(t.c.id).where(t.c.stripe_invoice_id == f"in_{number:06d}")
            ).scalar_one()
        )


# Contacts: upsert.


def test_upsert_creates_then_updates_by_stripe_customer_id(
    client: TestClient, h: dict[str, str], db: Database
) -> None:
    body = {
        "stripe_customer_id": "cus_api1",
        "email": "ada@example.com",
        "name": "Ada",
        "phone": "+44 20 7946 0000",
        "address": {"line1": "12 Analytical Row", "country": "GB"},
        "metadata": {"tier": "gold"},
        "custom": {"plan": {"seats": 3}},
        "tags": ["vip", " vip ", "new"],
    }
    created = ok(client.post("/v1/customers/upsert", json=body, headers=h), 201)
    contact = created["customer"]
    assert created["created"] is True
    assert set(contact) == CONTACT_KEYS
    assert contact["id"].startswith("con_")
    assert contact["stripe_customer_id"] == "cus_api1"
    assert (contact["email"], contact["name"], contact["phone"]) == (
        "ada@example.com",
        "Ada",
        "+44 20 7946 0000",
    )
    assert contact["address"] == {
        "line1": "12 Analytical Row",
        "line2": None,
        "city": None,
        "state": None,
        "postal_code": None,
        "country": "GB",
    }
    assert contact["metadata"] == {"tier": "gold"}
    assert contact["custom"] == {"plan": {"seats": 3}}
    assert contact["tags"] == ["vip", "new"]
    assert contact["connection_id"] is None  # until an event about cus_api1 claims it
    assert contact["archived"] is False
    assert ok(client.get(f"/v1/customers/{contact['id']}", headers=h)) == contact

    again = client.post(
        "/v1/customers/upsert",
        json={"stripe_customer_id": "cus_api1", "name": "Ada L.", "metadata": {"crm": "7"}},
        headers=h,
    )
    updated = ok(again, 200)
    assert updated["created"] is False
    assert updated["customer"]["id"] == contact["id"]
    assert updated["customer"]["name"] == "Ada L."
    assert updated["customer"]["email"] == "ada@example.com"  # untouched
    assert updated["customer"]["metadata"] == {"tier": "gold", "crm": "7"}
    assert updated["customer"]["updated_at"] >= contact["updated_at"]
    assert count(db, tables.contacts) == 1


def test_upsert_matches_an_unarchived_contact_by_email(
    client: TestClient, h: dict[str, str], stripe: Stripe, db: Database
) -> None:
    contact_id = from_stripe(stripe, 1, email="match@example.com")
    response = client.post(
        "/v1/customers/upsert", json={"email": "match@example.com", "name": "Matched"}, headers=h
    )
    body = ok(response)
    assert body["created"] is False
    assert body["customer"]["id"] == contact_id
    assert body["customer"]["stripe_customer_id"] == "cus_000001"
    # An archived contact with that email is not matched: a new contact is made.
    ok(client.delete(f"/v1/customers/{contact_id}", headers=h))
    again = ok(
        client.post("/v1/customers/upsert", json={"email": "match@example.com"}, headers=h), 201
    )
    assert again["customer"]["id"] != contact_id
    assert count(db, tables.contacts) == 2


def test_upsert_with_a_customer_id_links_an_unlinked_contact_found_by_email(
    client: TestClient, h: dict[str, str], stripe: Stripe, db: Database
) -> None:
    unlinked = ok(
        client.post("/v1/customers/upsert", json={"email": "u@example.com"}, headers=h), 201
    )["customer"]
    linked = ok(
        client.post(
            "/v1/customers/upsert",
            json={"stripe_customer_id": "cus_link", "email": "u@example.com"},
            headers=h,
        )
    )
    assert linked["created"] is False
    assert linked["customer"]["id"] == unlinked["id"]
    assert linked["customer"]["stripe_customer_id"] == "cus_link"
    # A contact linked to another customer is not taken over by email.
    other = ok(
        client.post(
            "/v1/customers/upsert",
            json={"stripe_customer_id": "cus_other", "email": "u@example.com"},
            headers=h,
        ),
        201,
    )
    assert other["customer"]["id"] != unlinked["id"]
    assert count(db, tables.contacts) == 2


def test_a_contact_made_through_the_api_is_claimed_by_its_customer_s_events(
    client: TestClient,
    h: dict[str, str],
    stripe: Stripe,
    db: Database,
    connection: connections.Connection,
) -> None:
    made = ok(
        client.post(
            "/v1/customers/upsert",
            json={"stripe_customer_id": "cus_000005", "custom": {"source": "crm"}},
            headers=h,
        ),
        201,
    )["customer"]
    stripe.send(event("customer.created", customer(5), int(time.time()) + 10))
    stripe.send(event("invoice.created", invoice(5, "cus_000005"), int(time.time()) + 11))
    stripe.drain()
    assert count(db, tables.contacts) == 1
    contact = ok(client.get(f"/v1/customers/{made['id']}", headers=h))
    assert contact["connection_id"] == connection.id
    assert contact["email"] == "c5@example.com"
    assert contact["custom"] == {"source": "crm"}
    (logged,) = ok(client.get("/v1/invoices", headers=h))["data"]
    assert logged["customer_id"] == made["id"]


def test_upsert_needs_a_customer_id_or_an_email(
    client: TestClient, h: dict[str, str], db: Database
) -> None:
    for body in ({"name": "Nobody"}, {"stripe_customer_id": None, "email": None}, {}):
        error = assert_error(
            client.post("/v1/customers/upsert", json=body, headers=h),
            400,
            "parameter_invalid",
            checks="envelope",
        )
        assert "stripe_customer_id or email" in error["message"]
    assert count(db, tables.contacts) == 0


# Contacts: change and archive.


def test_patch_changes_only_what_it_names(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    contact_id = from_stripe(stripe, 1, metadata={"tier": "gold", "old": "x"}, phone="+1 555 0100")
    before = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    time.sleep(0.01)
    response = client.patch(
        f"/v1/customers/{contact_id}",
        json={
            "name": "Renamed",
            "metadata": {"tier": "platinum", "old": None, "new": "1"},
            "custom": {"plan": "pro"},
            "tags": ["a", "b"],
            "address": {"city": "Paris", "country": "FR"},
        },
        headers=h,
    )
    after = ok(response)
    assert after["name"] == "Renamed"
    assert after["email"] == before["email"]
    assert after["phone"] == "+1 555 0100"
    assert after["metadata"] == {"tier": "platinum", "new": "1"}
    assert after["custom"] == {"plan": "pro"}
    assert after["tags"] == ["a", "b"]
    assert after["address"]["city"] == "Paris"
    assert after["address"]["line1"] is None  # an address is replaced whole
    assert after["stripe_customer_id"] == "cus_000001"
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    assert ok(client.get(f"/v1/customers/{contact_id}", headers=h)) == after

    merged = ok(
        client.patch(
            f"/v1/customers/{contact_id}",
            json={"custom": {"score": 9}, "tags": [], "phone": None},
            headers=h,
        )
    )
    assert merged["custom"] == {"plan": "pro", "score": 9}
    assert merged["tags"] == []
    assert merged["phone"] is None


def test_a_patch_that_changes_nothing_keeps_updated_at(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    contact_id = from_stripe(stripe, 1)
    before = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    time.sleep(0.01)
    same = {"name": before["name"], "metadata": {"absent": None}, "custom": {}}
    after = ok(client.patch(f"/v1/customers/{contact_id}", json=same, headers=h))
    assert after == before
    assert ok(client.patch(f"/v1/customers/{contact_id}", json={}, headers=h)) == before


def rows(db: Database) -> dict[str, list[Any]]:
    """Every record and idempotency key as stored, to show that a refused write changed
    nothing."""
    found = {}
    with db.read() as conn:
        for t in (tables.contacts, tables.locations, tables.invoices, tables.idempotency_keys):
            found[t.name] = [tuple(r) for r in conn.execute(sa.select(t)).all()]
    return found


READ_ONLY_CASES = [
    pytest.param("contact", {"stripe_customer_id": "cus_new"}, "stripe_customer_id", id="c-cus"),
    pytest.param("contact", {"name": "X", "id": "con_x"}, "id", id="c-id"),
    pytest.param("contact", {"archived": True}, "archived", id="c-archived"),
    pytest.param("contact", {"created_at": "2020-01-01T00:00:00Z"}, "created_at", id="c-created"),
    pytest.param("location", {"stripe_location_id": "tml_x"}, "stripe_location_id", id="l-tml"),
    pytest.param("invoice", {"amount_due": 1}, "amount_due", id="i-amount"),
    pytest.param("invoice", {"notes": "n", "status": "paid"}, "status", id="i-status"),
    pytest.param("invoice", {"currency": "eur"}, "currency", id="i-currency"),
    pytest.param("invoice", {"stripe_invoice_id": "in_x"}, "stripe_invoice_id", id="i-stripe-id"),
    pytest.param("invoice", {"customer_id": "con_x"}, "customer_id", id="i-customer"),
]
PATHS = {"contact": "/v1/customers", "invoice": "/v1/invoices", "location": "/v1/locations"}


@pytest.fixture
def one_of_each(client: TestClient, h: dict[str, str], stripe: Stripe) -> dict[str, str]:
    contact_id = from_stripe(stripe, 1)
    invoice_id = logged_invoice(stripe, 1)
    loc = ok(client.post("/v1/locations", json={"name": "Shop"}, headers=h), 201)
    return {"contact": contact_id, "invoice": invoice_id, "location": loc["id"]}


@pytest.mark.parametrize(("kind", "body", "field"), READ_ONLY_CASES)
def test_read_only_fields_are_refused_and_say_why(
    client: TestClient,
    h: dict[str, str],
    db: Database,
    one_of_each: dict[str, str],
    kind: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = rows(db)
    response = client.patch(
        f"{PATHS[kind]}/{one_of_each[kind]}",
        json=body,
        headers=h | {"Idempotency-Key": "read-only"},
    )
    error = assert_error(response, 400, "read_only_field", checks="envelope")
    assert error["message"].startswith(f"{field} ")
    assert "read-only" in error["message"]
    if field.startswith("stripe_") or kind == "invoice":
        assert "owned by Stripe" in error["message"]
    assert rows(db) == before


def test_a_read_only_field_on_create_is_refused(client: TestClient, h: dict[str, str]) -> None:
    response = client.post(
        "/v1/locations", json={"name": "Shop", "stripe_location_id": "tml_1"}, headers=h
    )
    assert (
        "owned by Stripe"
        in assert_error(response, 400, "read_only_field", checks="envelope")["message"]
    )


BAD_BODIES = [
    pytest.param("contact", {"name": 5}, "name", id="c-name-int"),
    pytest.param("contact", {"email": "not-an-email"}, "email", id="c-email"),
    pytest.param("contact", {"nickname": "x"}, "nickname", id="c-unknown"),
    pytest.param("contact", {"metadata": {"a": 1}}, "metadata.a", id="c-metadata-int"),
    pytest.param("contact", {"metadata": {"a.b": "1"}}, "metadata", id="c-metadata-dot"),
    pytest.param("contact", {"metadata": None}, "metadata", id="c-metadata-null"),
    pytest.param("contact", {"metadata": {"k": "v" * 501}}, "metadata.k", id="c-metadata-long"),
    pytest.param("contact", {"tags": "vip"}, "tags", id="c-tags-str"),
    pytest.param("contact", {"tags": [""]}, "tags.0", id="c-tags-empty"),
    pytest.param("contact", {"name": "a\x00b"}, "name", id="c-name-nul"),
    pytest.param("contact", {"address": {"street": "x"}}, "address.street", id="c-address"),
    pytest.param("contact", {"phone": "1" * 101}, "phone", id="c-phone-long"),
    pytest.param("location", {"name": None}, "name", id="l-name-null"),
    pytest.param("location", {"currency": "us"}, "currency", id="l-currency"),
    pytest.param("location", {"country": "USA"}, "country", id="l-country"),
    pytest.param("location", {"custom": []}, "custom", id="l-custom-list"),
    pytest.param("invoice", {"payment_status": "settled"}, "payment_status", id="i-status"),
    pytest.param("invoice", {"payment_status": None}, "payment_status", id="i-status-null"),
    pytest.param("invoice", {"notes": "n" * 10_001}, "notes", id="i-notes-long"),
    pytest.param("invoice", {"notes": 3}, "notes", id="i-notes-int"),
    pytest.param("invoice", {"memo": "x"}, "memo", id="i-unknown"),
]


@pytest.mark.parametrize(("kind", "body", "field"), BAD_BODIES)
def test_invalid_bodies_are_400_naming_the_field_and_change_nothing(
    client: TestClient,
    h: dict[str, str],
    db: Database,
    one_of_each: dict[str, str],
    kind: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = rows(db)
    response = client.patch(
        f"{PATHS[kind]}/{one_of_each[kind]}", json=body, headers=h | {"Idempotency-Key": "bad"}
    )
    error = assert_error(response, 400, "parameter_invalid", checks="envelope")
    assert error["message"].startswith(f"{field}"), error["message"]
    assert rows(db) == before


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{not json", "application/json", id="broken-json"),
        pytest.param(b"[1, 2]", "application/json", id="a-list"),
        pytest.param(b'"text"', "application/json", id="a-string"),
        pytest.param(b"name=x", "application/x-www-form-urlencoded", id="a-form"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(
    client: TestClient,
    h: dict[str, str],
    db: Database,
    one_of_each: dict[str, str],
    content: bytes,
    content_type: str,
) -> None:
    before = rows(db)
    for method, path in (
        ("PATCH", f"/v1/customers/{one_of_each['contact']}"),
        ("POST", "/v1/customers/upsert"),
        ("POST", "/v1/locations"),
    ):
        response = client.request(
            method, path, content=content, headers=h | {"Content-Type": content_type}
        )
        assert_error(response, 400, checks="envelope")
    assert rows(db) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("PATCH", "/v1/customers/con_doesnotexist", {"name": "x"}, id="patch-contact"),
        pytest.param("DELETE", "/v1/customers/con_doesnotexist", None, id="delete-contact"),
        pytest.param("PATCH", "/v1/locations/loc_doesnotexist", {"name": "x"}, id="patch-loc"),
        pytest.param("PATCH", "/v1/invoices/inv_doesnotexist", {"notes": "x"}, id="patch-inv"),
        pytest.param("PATCH", "/v1/customers/con_%00", {"name": "x"}, id="nul-id"),
        pytest.param("DELETE", "/v1/customers/" + "x" * 300, None, id="long-id"),
    ],
)
def test_unknown_records_are_404(
    client: TestClient, h: dict[str, str], method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body, headers=h)
    assert_error(response, 404, "resource_missing", checks="envelope")


def test_a_record_of_another_kind_is_404(
    client: TestClient, h: dict[str, str], one_of_each: dict[str, str]
) -> None:
    response = client.patch(f"/v1/customers/{one_of_each['invoice']}", json={}, headers=h)
    assert_error(response, 404, "resource_missing", checks="envelope")


def test_delete_archives_once(client: TestClient, h: dict[str, str], stripe: Stripe) -> None:
    contact_id = from_stripe(stripe, 1)
    before = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    archived = ok(client.delete(f"/v1/customers/{contact_id}", headers=h))
    assert archived["archived"] is True
    assert archived["updated_at"] >= before["updated_at"]
    assert {k: v for k, v in archived.items() if k not in ("archived", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("archived", "updated_at")
    }
    assert ok(client.get(f"/v1/customers/{contact_id}", headers=h)) == archived
    assert ok(client.delete(f"/v1/customers/{contact_id}", headers=h)) == archived


# Locations.


def test_create_and_change_a_location(client: TestClient, h: dict[str, str], db: Database) -> None:
    body = {
        "name": "Flagship",
        "address": {"line1": "1 Main St", "city": "Springfield", "country": "us"},
        "currency": "USD",
        "metadata": {"region": "west"},
        "custom": {"floor": 2},
    }
    made = ok(client.post("/v1/locations", json=body, headers=h), 201)
    assert made["id"].startswith("loc_")
    assert made["object"] == "location"
    assert made["name"] == "Flagship"
    assert made["currency"] == "usd"
    assert made["country"] == "US"  # from the address
    assert made["stripe_location_id"] is None
    assert made["connection_id"] is None
    assert made["metadata"] == {"region": "west"}
    assert made["custom"] == {"floor": 2}
    assert ok(client.get(f"/v1/locations/{made['id']}", headers=h)) == made

    changed = ok(
        client.patch(
            f"/v1/locations/{made['id']}",
            json={"name": "Flagship 2", "country": "ca", "metadata": {"region": None}},
            headers=h,
        )
    )
    assert (changed["name"], changed["country"], changed["currency"]) == ("Flagship 2", "CA", "usd")
    assert changed["metadata"] == {}
    assert changed["address"] == made["address"]
    assert ok(client.get(f"/v1/locations/{made['id']}", headers=h)) == changed
    assert count(db, tables.locations) == 1


def test_a_location_needs_a_name(client: TestClient, h: dict[str, str], db: Database) -> None:
    for body in ({}, {"name": ""}, {"name": None}, {"currency": "usd"}):
        error = assert_error(
            client.post("/v1/locations", json=body, headers=h),
            400,
            "parameter_invalid",
            checks="envelope",
        )
        assert "name" in error["message"]
    assert count(db, tables.locations) == 0


def test_a_stripe_location_can_be_renamed_until_stripe_changes_it(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    now = int(time.time())
    stripe.watch(event("terminal.location.created", location(1), now - 1000))
    stripe.drain()
    (loc,) = ok(client.get("/v1/locations", headers=h))["data"]
    ok(client.patch(f"/v1/locations/{loc['id']}", json={"name": "Ours"}, headers=h))
    older = location(1) | {"display_name": "Theirs, late"}
    stripe.watch(event("terminal.location.updated", older, now - 500))
    stripe.drain()
    assert ok(client.get(f"/v1/locations/{loc['id']}", headers=h))["name"] == "Ours"
    newer = location(1) | {"display_name": "Theirs, new"}
    stripe.watch(event("terminal.location.updated", newer, now + 100))
    stripe.drain()
    assert ok(client.get(f"/v1/locations/{loc['id']}", headers=h))["name"] == "Theirs, new"


# Invoices.


def test_set_an_invoice_s_payment_status_and_notes(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    invoice_id = logged_invoice(stripe, 1)
    before = ok(client.get(f"/v1/invoices/{invoice_id}", headers=h))
    assert before["notes"] is None
    assert before["payment_status"] == "unpaid"
    after = ok(
        client.patch(
            f"/v1/invoices/{invoice_id}",
            json={"payment_status": "paid", "notes": "paid by bank transfer"},
            headers=h,
        )
    )
    assert (after["payment_status"], after["notes"]) == ("paid", "paid by bank transfer")
    assert (after["status"], after["amount_due"]) == (before["status"], before["amount_due"])
    assert ok(client.get(f"/v1/invoices/{invoice_id}", headers=h)) == after
    cleared = ok(client.patch(f"/v1/invoices/{invoice_id}", json={"notes": None}, headers=h))
    assert (cleared["payment_status"], cleared["notes"]) == ("paid", None)
    long_notes = "n" * 10_000
    kept = ok(client.patch(f"/v1/invoices/{invoice_id}", json={"notes": long_notes}, headers=h))
    assert kept["notes"] == long_notes


def test_notes_survive_stripe_events(client: TestClient, h: dict[str, str], stripe: Stripe) -> None:
    invoice_id = logged_invoice(stripe, 1)
    ok(client.patch(f"/v1/invoices/{invoice_id}", json={"notes": "call first"}, headers=h))
    paid = invoice(1, "cus_000001", status="paid", amount_paid=1001)
    stripe.send(event("invoice.paid", paid, int(time.time()) + 100))
    stripe.drain()
    after = ok(client.get(f"/v1/invoices/{invoice_id}", headers=h))
    assert (after["notes"], after["status"], after["payment_status"]) == (
        "call first",
        "paid",
        "paid",
    )


def test_an_older_invoice_event_keeps_the_api_payment_status(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    now = int(time.time())
    invoice_id = logged_invoice(stripe, 1, created=now - 1000)
    ok(client.patch(f"/v1/invoices/{invoice_id}", json={"payment_status": "paid"}, headers=h))
    stripe.send(event("invoice.updated", invoice(1, "cus_000001"), now - 500))
    stripe.drain()
    assert ok(client.get(f"/v1/invoices/{invoice_id}", headers=h))["payment_status"] == "paid"


def test_a_newer_invoice_event_overwrites_the_api_payment_status(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    now = int(time.time())
    invoice_id = logged_invoice(stripe, 1, created=now - 1000)
    ok(client.patch(f"/v1/invoices/{invoice_id}", json={"payment_status": "paid"}, headers=h))
    stripe.send(event("invoice.voided", invoice(1, "cus_000001", status="void"), now + 100))
    stripe.drain()
    assert ok(client.get(f"/v1/invoices/{invoice_id}", headers=h))["payment_status"] == "void"


# Ordering: API edits and Stripe events.


def test_an_older_customer_event_keeps_api_edits_and_a_newer_one_overwrites_them(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    now = int(time.time())
    contact_id = from_stripe(stripe, 1, created=now - 1000, metadata={"tier": "bronze"})
    edit = {"name": "From the CRM", "metadata": {"tier": "gold"}}
    ok(client.patch(f"/v1/customers/{contact_id}", json=edit, headers=h))

    # Made before the edit, delivered after it: the edited fields stay, the others apply.
    late = customer(1, name="Stripe, earlier", phone="+1 555 0199", metadata={"tier": "silver"})
    stripe.send(event("customer.updated", late, now - 500))
    stripe.drain()
    contact = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    assert contact["name"] == "From the CRM"
    assert contact["metadata"] == {"tier": "gold"}
    assert contact["phone"] == "+1 555 0199"

    newer = customer(1, name="Stripe, later", metadata={"tier": "silver", "x": "1"})
    stripe.send(event("customer.updated", newer, now + 100))
    stripe.drain()
    contact = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    assert contact["name"] == "Stripe, later"
    assert contact["metadata"] == {"tier": "silver", "x": "1"}


def test_an_archive_through_the_api_settles_like_a_field(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    now = int(time.time())
    contact_id = from_stripe(stripe, 1, created=now - 1000)
    ok(client.delete(f"/v1/customers/{contact_id}", headers=h))
    stripe.send(event("customer.updated", customer(1, name="late"), now - 500))
    stripe.drain()
    contact = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    assert (contact["archived"], contact["name"]) == (True, "late")
    stripe.send(event("customer.updated", customer(1, name="later"), now + 100))
    stripe.drain()
    contact = ok(client.get(f"/v1/customers/{contact_id}", headers=h))
    assert (contact["archived"], contact["name"]) == (False, "later")


def test_an_api_edit_made_before_the_newest_event_still_applies(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    # The edit is made now; an event from the future (a skewed clock) was applied before it.
    now = int(time.time())
    contact_id = from_stripe(stripe, 1, created=now + 1000)
    after = ok(client.patch(f"/v1/customers/{contact_id}", json={"name": "Edited"}, headers=h))
    assert after["name"] == "Edited"


# Scopes.

WRITES = [
    pytest.param("POST", "/v1/customers/upsert", "contacts.write", id="upsert"),
    pytest.param("PATCH", "/v1/customers/{contact}", "contacts.write", id="patch-contact"),
    pytest.param("DELETE", "/v1/customers/{contact}", "contacts.write", id="delete-contact"),
    pytest.param("POST", "/v1/locations", "saas/location.write", id="create-location"),
    pytest.param("PATCH", "/v1/locations/{location}", "saas/location.write", id="patch-location"),
    pytest.param("PATCH", "/v1/invoices/{invoice}", "invoices.write", id="patch-invoice"),
]
GOOD_BODIES = {
    "/v1/customers/upsert": {"email": "scope@example.com"},
    "/v1/customers/{contact}": {"name": "Scoped"},
    "/v1/locations": {"name": "Scoped"},
    "/v1/locations/{location}": {"name": "Scoped"},
    "/v1/invoices/{invoice}": {"notes": "scoped"},
}


@pytest.mark.parametrize(("method", "template", "scope"), WRITES)
def test_writes_need_their_scope(
    client: TestClient,
    make_key: MakeKey,
    db: Database,
    one_of_each: dict[str, str],
    method: str,
    template: str,
    scope: str,
) -> None:
    path = template.format(**one_of_each)
    body = GOOD_BODIES.get(template)
    before = rows(db)
    assert_error(client.request(method, path, json=body), 401, "missing_api_key", checks="envelope")
    for other in keys.SCOPES:
        if other in (scope, "admin"):
            continue
        response = client.request(method, path, json=body, headers=make_key(other).headers)
        error = assert_error(response, 403, "missing_scope", checks="envelope")
        assert error["scope"] == scope
        assert scope in error["message"]
        assert response.headers["x-accepted-scopes"] == scope
    assert rows(db) == before
    for scopes in ([scope], ["admin"]):
        response = client.request(method, path, json=body, headers=make_key(*scopes).headers)
        assert response.status_code in (200, 201), response.text


def test_the_openapi_document_shows_writes_with_their_scope_and_idempotency_key(
    client: TestClient,
) -> None:
    spec = ok(client.get("/openapi.json"))
    paths = spec["paths"]
    for method, template, scope in (p.values for p in WRITES):
        path = template.replace("{contact}", "{contact_id}").replace("{location}", "{location_id}")
        path = path.replace("{invoice}", "{invoice_id}")
        operation = paths[path][method.lower()]
        assert scope in operation["summary"]
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert "description" in headers["Idempotency-Key"]
    for path in ("/v1/customers", "/v1/invoices", "/v1/locations"):
        for parameter in paths[path]["get"]["parameters"]:
            assert parameter.get("description"), (path, parameter["name"])
    names = {p["name"] for p in paths["/v1/invoices"]["get"]["parameters"]}
    assert {"status", "payment_status", "customer_id", "updated_since", "order"} <= names


# Idempotency.


def test_a_repeated_request_returns_the_first_response(
    client: TestClient, h: dict[str, str], db: Database
) -> None:
    headers = h | {"Idempotency-Key": "upsert-ada-1"}
    body = {"email": "ada@example.com", "name": "Ada", "tags": ["x"]}
    first = client.post("/v1/customers/upsert", json=body, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    # Same body in another key order and spacing: the same request.
    again = client.post(
        "/v1/customers/upsert",
        content=json.dumps({"tags": ["x"], "name": "Ada", "email": "ada@example.com"}, indent=2),
        headers=headers | {"Content-Type": "application/json"},
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert count(db, tables.contacts) == 1


@pytest.mark.parametrize(
    ("method", "template", "body", "status"),
    [
        pytest.param("POST", "/v1/locations", {"name": "L"}, 201, id="create-location"),
        pytest.param("PATCH", "/v1/customers/{contact}", {"tags": ["t"]}, 200, id="patch"),
        pytest.param("DELETE", "/v1/customers/{contact}", None, 200, id="delete"),
        pytest.param("PATCH", "/v1/invoices/{invoice}", {"notes": "n"}, 200, id="invoice"),
        pytest.param("PATCH", "/v1/customers/con_doesnotexist", {"name": "x"}, 404, id="a-404"),
    ],
)
def test_every_write_replays(
    client: TestClient,
    h: dict[str, str],
    db: Database,
    one_of_each: dict[str, str],
    method: str,
    template: str,
    body: Any,
    status: int,
) -> None:
    path = template.format(**one_of_each)
    headers = h | {"Idempotency-Key": f"key-{method}-{template}"}
    first = client.request(method, path, json=body, headers=headers)
    assert first.status_code == status, first.text
    stored = rows(db)
    time.sleep(0.01)
    again = client.request(method, path, json=body, headers=headers)
    assert again.status_code == status
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert rows(db) == stored


def test_the_same_key_for_another_request_is_409(
    client: TestClient, h: dict[str, str], db: Database, one_of_each: dict[str, str]
) -> None:
    headers = h | {"Idempotency-Key": "once"}
    ok(client.post("/v1/locations", json={"name": "First"}, headers=headers), 201)
    before = rows(db)
    for method, path, body in (
        ("POST", "/v1/locations", {"name": "Second"}),
        ("PATCH", f"/v1/locations/{one_of_each['location']}", {"name": "First"}),
        ("POST", "/v1/customers/upsert", {"email": "x@example.com"}),
    ):
        response = client.request(method, path, json=body, headers=headers)
        error = assert_error(response, 409, "idempotency_key_reused", checks="envelope")
        assert "Idempotency-Key" in error["message"]
    assert rows(db) == before


def test_api_keys_do_not_share_idempotency_keys(
    client: TestClient, make_key: MakeKey, db: Database
) -> None:
    body = {"name": "Shop"}
    one = make_key("saas/location.write").headers | {"Idempotency-Key": "shared"}
    two = make_key("saas/location.write").headers | {"Idempotency-Key": "shared"}
    first = ok(client.post("/v1/locations", json=body, headers=one), 201)
    second = client.post("/v1/locations", json=body, headers=two)
    assert second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first["id"]
    assert count(db, tables.locations) == 2


def test_a_refused_body_keeps_no_response(
    client: TestClient, h: dict[str, str], db: Database
) -> None:
    headers = h | {"Idempotency-Key": "fix-and-retry"}
    assert_error(
        client.post("/v1/locations", json={"nam": "typo"}, headers=headers), 400, checks="envelope"
    )
    assert count(db, tables.idempotency_keys) == 0
    ok(client.post("/v1/locations", json={"name": "fixed"}, headers=headers), 201)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="too-long"),
        pytest.param("tab\tinside", id="control-character"),
    ],
)
def test_a_malformed_idempotency_key_is_400(
    client: TestClient, h: dict[str, str], db: Database, key: str
) -> None:
    response = client.post(
        "/v1/locations", json={"name": "x"}, headers=h | {"Idempotency-Key": key}
    )
    error = assert_error(response, 400, "idempotency_key_invalid", checks="envelope")
    assert "Idempotency-Key" in error["message"]
    assert count(db, tables.locations) == 0


def test_the_longest_key_works(client: TestClient, h: dict[str, str]) -> None:
    key = "~" + "k" * 253 + " "
    headers = h | {"Idempotency-Key": key}
    ok(client.post("/v1/locations", json={"name": "x"}, headers=headers), 201)
    again = client.post("/v1/locations", json={"name": "x"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"


def _set_key(db: Database, **values: Any) -> None:
    with db.write() as conn:
        conn.execute(tables.idempotency_keys.update().values(**values))


def test_a_request_in_flight_is_409_until_it_is_abandoned(
    client: TestClient, h: dict[str, str], db: Database
) -> None:
    headers = h | {"Idempotency-Key": "in-flight"}
    ok(client.post("/v1/locations", json={"name": "x"}, headers=headers), 201)
    # As the first request is seen while it runs: claimed, no response yet.
    _set_key(db, status_code=None, response=None, created_at=time.time())
    error = assert_error(
        client.post("/v1/locations", json={"name": "x"}, headers=headers),
        409,
        "idempotency_key_in_use",
        checks="envelope",
    )
    assert "in progress" in error["message"]
    # Its process died: after a while the key is taken over and the request runs.
    _set_key(db, created_at=time.time() - idempotency.IN_FLIGHT - 1)
    again = client.post("/v1/locations", json={"name": "x"}, headers=headers)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert count(db, tables.locations) == 2


def test_keys_are_forgotten_after_24_hours(
    client: TestClient, h: dict[str, str], db: Database
) -> None:
    headers = h | {"Idempotency-Key": "yesterday"}
    first = ok(client.post("/v1/locations", json={"name": "x"}, headers=headers), 201)
    _set_key(db, created_at=time.time() - idempotency.TTL - 1)
    again = client.post("/v1/locations", json={"name": "other"}, headers=headers)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first["id"]
    with db.write() as conn:
        assert idempotency.prune(conn, time.time() + idempotency.TTL + 1) == 1


# List filters.


def ids_of(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> list[str]:
    """Every record of a list, following the cursor two at a time."""
    found: list[str] = []
    after = None
    while True:
        query = params | {"limit": 2} | ({"starting_after": after} if after else {})
        body = ok(client.get(path, params=query, headers=headers))
        found += [r["id"] for r in body["data"]]
        if not body["has_more"]:
            return found
        after = body["data"][-1]["id"]
        assert len(found) < 100


def test_customers_filter_and_page_in_both_orders(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    made = [from_stripe(stripe, n) for n in range(1, 8)]  # oldest first
    for contact_id in made[1::2]:
        ok(client.delete(f"/v1/customers/{contact_id}", headers=h))
    live, archived = made[0::2], made[1::2]
    path = "/v1/customers"
    assert ids_of(client, path, h) == made[::-1]
    assert ids_of(client, path, h, order="asc") == made
    assert ids_of(client, path, h, archived="false") == live[::-1]
    assert ids_of(client, path, h, archived="false", order="asc") == live
    assert ids_of(client, path, h, archived="true", order="asc") == archived
    assert ids_of(client, path, h, email="c3@example.com") == [made[2]]
    assert ids_of(client, path, h, email="C3@example.com") == []
    assert ids_of(client, path, h, stripe_customer_id="cus_000004") == [made[3]]
    assert ids_of(client, path, h, stripe_customer_id="cus_000004", archived="false") == []
    # A cursor that the filter leaves out still marks a place.
    page = ok(client.get(path, params={"archived": "false", "starting_after": made[3]}, headers=h))
    assert [r["id"] for r in page["data"]] == [made[2], made[0]]
    page = ok(
        client.get(
            path,
            params={"archived": "false", "starting_after": made[3], "order": "asc"},
            headers=h,
        )
    )
    assert [r["id"] for r in page["data"]] == [made[4], made[6]]


def test_invoices_filter(client: TestClient, h: dict[str, str], stripe: Stripe) -> None:
    now = int(time.time())
    stripe.send(event("customer.created", customer(1), now - 2000))
    stripe.send(event("customer.created", customer(2), now - 2000))
    stripe.send(event("invoice.created", invoice(1, "cus_000001"), now - 1000))
    stripe.send(event("invoice.created", invoice(2, "cus_000001", status="draft"), now - 1000))
    paid = invoice(3, "cus_000002", status="paid", amount_paid=1003)
    stripe.send(event("invoice.created", paid, now - 1000))
    stripe.send(event("invoice.created", invoice(4, "cus_000002"), now - 1000))
    stripe.drain()
    every = ids_of(client, "/v1/invoices", h, order="asc")
    assert len(every) == 4
    ok(client.patch(f"/v1/invoices/{every[3]}", json={"payment_status": "failed"}, headers=h))
    contacts = {
        c["stripe_customer_id"]: c["id"] for c in ok(client.get("/v1/customers", headers=h))["data"]
    }
    path = "/v1/invoices"
    assert ids_of(client, path, h, status="open") == [every[3], every[0]]
    assert ids_of(client, path, h, status="open", order="asc") == [every[0], every[3]]
    assert ids_of(client, path, h, status="draft") == [every[1]]
    assert ids_of(client, path, h, payment_status="paid") == [every[2]]
    assert ids_of(client, path, h, payment_status="failed") == [every[3]]
    assert ids_of(client, path, h, customer_id=contacts["cus_000002"], order="asc") == every[2:]
    assert ids_of(client, path, h, stripe_customer_id="cus_000001", order="asc") == every[:2]
    assert ids_of(client, path, h, stripe_customer_id="cus_000001", status="draft") == [every[1]]
    assert ids_of(client, path, h, archived="true") == []
    assert ids_of(client, path, h, archived="false", order="asc") == every
    assert ids_of(client, path, h, customer_id="con_nobody") == []
    for params in ({"status": "settled"}, {"payment_status": "open"}, {"order": "newest"}):
        assert_error(
            client.get(path, params=params, headers=h), 400, "parameter_invalid", checks="envelope"
        )


def test_locations_filter(client: TestClient, h: dict[str, str]) -> None:
    made = [
        ok(client.post("/v1/locations", json={"name": f"L{n}", "country": c}, headers=h), 201)["id"]
        for n, c in enumerate(["US", "FR", "US", "DE", "US"])
    ]
    path = "/v1/locations"
    assert ids_of(client, path, h, country="US") == [made[4], made[2], made[0]]
    assert ids_of(client, path, h, country="us", order="asc") == [made[0], made[2], made[4]]
    assert ids_of(client, path, h, country="FR") == [made[1]]
    assert ids_of(client, path, h, archived="true") == []
    assert ids_of(client, path, h, archived="false", order="asc") == made
    assert_error(
        client.get(path, params={"country": "USA"}, headers=h),
        400,
        "parameter_invalid",
        checks="envelope",
    )


def test_updated_since(client: TestClient, h: dict[str, str], db: Database, stripe: Stripe) -> None:
    made = [from_stripe(stripe, n) for n in range(1, 5)]
    moments = [1_700_000_000.0, 1_750_000_000.0, 1_760_000_000.5, 1_800_000_000.0]
    with db.write() as conn:
        for contact_id, moment in zip(made, moments, strict=True):
            conn.execute(
                tables.contacts.update()
                .where(tables.contacts.c.id == contact_id)
                .values(updated_at=moment)
            )
    path = "/v1/customers"
    cases = {
        "1750000000": made[1:],
        "1750000000.0": made[1:],
        "1760000000.5": made[2:],
        "1760000000.6": made[3:],
        iso(1_750_000_000): made[1:],
        "2025-06-15T15:06:40+00:00": made[1:],  # 1750000000
        "2025-06-15T17:06:40+02:00": made[1:],
        "2025-06-15T15:06:41Z": made[2:],
        "2025-06-15": made[1:],  # midnight UTC
        "2025-06-15T15:06:40": made[1:],  # no offset: UTC
        "2030-01-01": [],
        "0": made,
    }
    for since, expected in cases.items():
        assert ids_of(client, path, h, updated_since=since, order="asc") == expected, since
    assert ids_of(client, path, h, updated_since="1750000000", archived="false") == made[:0:-1]
    for bad in ("yesterday", "nan", "inf", "-5", "2025-13-01", "2025-06-15T25:00:00Z", ""):
        response = client.get(path, params={"updated_since": bad}, headers=h)
        error = assert_error(response, 400, "parameter_invalid", checks="envelope")
        assert "updated_since" in error["message"], bad


def test_an_edit_moves_a_record_into_updated_since(
    client: TestClient, h: dict[str, str], stripe: Stripe
) -> None:
    first, second = from_stripe(stripe, 1), from_stripe(stripe, 2)
    since = str(time.time())
    assert ids_of(client, "/v1/customers", h, updated_since=since) == []
    ok(client.patch(f"/v1/customers/{first}", json={"name": "changed"}, headers=h))
    ok(client.patch(f"/v1/customers/{second}", json={}, headers=h))  # changes nothing
    assert ids_of(client, "/v1/customers", h, updated_since=since) == [first]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"email": "a\x00b"}, id="email-nul"),
        pytest.param({"stripe_customer_id": "cus_\x00"}, id="customer-nul"),
        pytest.param({"email": "e" * 513}, id="email-long"),
        pytest.param({"archived": "maybe"}, id="archived-not-bool"),
        pytest.param({"order": "random"}, id="order"),
    ],
)
def test_odd_filters_are_400_not_500(
    client: TestClient, h: dict[str, str], params: dict[str, str]
) -> None:
    assert_error(
        client.get("/v1/customers", params=params, headers=h),
        400,
        "parameter_invalid",
        checks="envelope",
    )


# Concurrency: two processes (threads here) writing at once.


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_repeat_while_the_first_runs_waits_or_is_409(db: Database) -> None:
    """PostgreSQL answers a repeat made while the first request runs with 409 at once; SQLite
    has one writer, so the repeat waits for the first to commit and replays its response."""
    started, release = threading.Event(), threading.Event()
    request = ("POST", "/v1/locations", b'{"name": "x"}')

    def slow(conn: Any) -> tuple[int, dict[str, Any]]:
        started.set()
        assert release.wait(10)
        return 201, {"made": True}

    first, first_outcome = _in_thread(
        lambda: idempotency.once(db, "key_a", "k", request, "req_1", slow)
    )
    assert started.wait(10)
    second, second_outcome = _in_thread(
        lambda: idempotency.once(db, "key_a", "k", request, "req_2", slow)
    )
    second.join(0.5)
    release.set()
    first.join(10)
    second.join(10)
    assert first_outcome == {"result": (201, {"made": True}, False)}
    if db.dialect == "postgresql":
        error = second_outcome["error"]
        assert isinstance(error, errors.Conflict)
        assert error.code == "idempotency_key_in_use"
    else:
        assert second_outcome == {"result": (201, {"made": True}, True)}


def test_a_write_that_fails_keeps_no_claim(db: Database) -> None:
    def broken(conn: Any) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("the write failed")

    request = ("PATCH", "/v1/customers/con_x", b"{}")
    with pytest.raises(RuntimeError):
        idempotency.once(db, "key_a", "k", request, "req_1", broken)
    assert count(db, tables.idempotency_keys) == 0
    assert idempotency.once(db, "key_a", "k", request, "req_2", lambda conn: (200, {})) == (
        200,
        {},
        False,
    )


def test_two_upserts_of_one_new_customer_make_one_contact(db: Database) -> None:
    started, release = threading.Event(), threading.Event()
    fields = {"stripe_customer_id": "cus_race", "email": "race@example.com"}

    def first() -> tuple[bool, models.ContactPublic]:
        with db.write() as tx:
            made = edits.upsert_contact(tx, fields=fields, key=ordering.api_write("req_1"))
            started.set()
            assert release.wait(10)
            return made

    def second() -> tuple[bool, models.ContactPublic]:
        with db.write() as tx:
            return edits.upsert_contact(
                tx, fields=fields | {"name": "B"}, key=ordering.api_write("req_2")
            )

    one, one_outcome = _in_thread(first)
    assert started.wait(10)
    two, two_outcome = _in_thread(second)
    two.join(0.5)
    assert two.is_alive()  # waiting for the first to commit
    release.set()
    one.join(10)
    two.join(10)
    created, contact = one_outcome["result"]
    again, updated = two_outcome["result"]
    assert (created, again) == (True, False)
    assert updated.id == contact.id
    assert updated.name == "B"
    assert count(db, tables.contacts) == 1
