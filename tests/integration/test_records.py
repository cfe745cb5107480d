"""Records written by the prebuilt flows, on SQLite and PostgreSQL.

Events go through the real flows (`flowfile.load().apply` inside `db.write()`), or through intake
and the worker where the inbox matters."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import connections, flowfile, intake, worker
from snapshots.records import kinds, reads
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.times import iso
from tests.conftest import EventFactory, drain, fixture
from tests.integration import helpers

REGISTRY = flowfile.load()
T0 = 1_700_000_000

ADDRESS = {
    "line1": "1 Rue de la Paix",
    "line2": "Étage 2",
    "city": "Paris",
    "state": None,
    "postal_code": "75002",
    "country": "FR",
}


def customer(id: str = "cus_ada", **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(fixture("customer"))
    obj.update(
        id=id,
        email="ada@example.com",
        name="Ada Lovelace",
        phone="+33 1 23 45 67 89",
        address=ADDRESS,
        metadata={"crm_tier": "gold"},
    )
    return obj | changes


def invoice(id: str = "in_1", customer_id: str = "cus_ada", **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(fixture("invoice"))
    obj.update(
        id=id,
        customer=customer_id,
        customer_email="ada@example.com",
        customer_name="Ada Lovelace",
        customer_phone=None,
        status="open",
        amount_due=2500,
        amount_paid=0,
        amount_remaining=2500,
        total=2500,
        currency="eur",
        number="ABC-0001",
        metadata={"order": "42"},
    )
    return obj | changes


def apply(db: Database, connection_id: str, *events: dict[str, Any]) -> None:
    for event in events:
        with db.write() as conn:
            REGISTRY.apply(conn, connection_id=connection_id, event=event)


def page(db: Database, kind: str, *, limit: int) -> list[dict[str, Any]]:
    """A page of records of `kind`, as the API shows them."""
    with db.read() as tx:
        found = reads.page(tx, kinds.KINDS[kind], limit=limit).data
    return [record.model_dump(mode="json") for record in found]


def contacts(db: Database) -> list[dict[str, Any]]:
    found = page(db, "contact", limit=100)
    return sorted(found, key=lambda c: c["id"])


def invoices(db: Database) -> list[dict[str, Any]]:
    found = page(db, "invoice", limit=100)
    return found


def insert_unlinked_contact(
    db: Database,
    *,
    email: str,
    connection_id: str | None = None,
    archived: bool = False,
    name: str = "Hand Made",
) -> str:
    """A contact made in Snapshots by hand: no Stripe customer behind it yet."""
    now = time.time()
    record_id = f"con_manual{uuid.uuid4().hex[:12]}"
    with db.write() as conn:
        conn.execute(
            tables.contacts.insert().values(
                id=record_id,
                connection_id=connection_id,
                stripe_customer_id=None,
                email=email,
                name=name,
                metadata={"source": "manual"},
                tags=["vip"],
                archived=archived,
                created_at=now,
                updated_at=now,
            )
        )
    return record_id


# Contacts from customers.


def test_customer_created_makes_one_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    [contact] = contacts(db)
    assert contact["id"].startswith("con_")
    assert contact["stripe_customer_id"] == "cus_ada"
    assert contact["email"] == "ada@example.com"
    assert contact["name"] == "Ada Lovelace"
    assert contact["phone"] == "+33 1 23 45 67 89"
    assert contact["address"] == ADDRESS
    assert contact["metadata"] == {"crm_tier": "gold"}
    assert contact["archived"] is False
    assert contact["livemode"] is False
    assert contact["connection_id"] == connection.id
    assert contact["stripe_created"] == iso(1234567890)
    with db.read() as tx:
        assert reads.get(tx, kinds.CONTACT, contact["id"]).model_dump(mode="json") == contact


def test_customer_updated_updates_the_same_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    [before] = contacts(db)
    new_address = ADDRESS | {"line1": "2 Avenue Foch", "line2": None, "postal_code": "75116"}
    apply(
        db,
        connection.id,
        event_factory(
            "customer.updated",
            customer(
                email="ada@lovelace.example",
                name="Ada King",
                phone=None,
                address=new_address,
                metadata={"crm_tier": "platinum", "ünï": "cödé"},
            ),
            created=T0 + 5,
        ),
    )
    [after] = contacts(db)
    assert after["id"] == before["id"]
    assert after["email"] == "ada@lovelace.example"
    assert after["name"] == "Ada King"
    assert after["phone"] is None
    assert after["address"] == new_address
    assert after["metadata"] == {"crm_tier": "platinum", "ünï": "cödé"}


def test_customer_updated_for_an_unseen_customer_creates_the_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.updated", customer(), created=T0))
    [contact] = contacts(db)
    assert contact["stripe_customer_id"] == "cus_ada"
    assert contact["email"] == "ada@example.com"


def test_customers_are_matched_on_their_stripe_id(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    # Same email, two Stripe customers: two contacts (email only matches unlinked contacts).
    apply(
        db,
        connection.id,
        event_factory("customer.created", customer("cus_a"), created=T0),
        event_factory("customer.created", customer("cus_b"), created=T0),
        event_factory("customer.updated", customer("cus_a", name="A again"), created=T0 + 1),
    )
    by_customer = {c["stripe_customer_id"]: c for c in contacts(db)}
    assert set(by_customer) == {"cus_a", "cus_b"}
    assert by_customer["cus_a"]["name"] == "A again"
    assert by_customer["cus_b"]["name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    "manual_connection",
    [pytest.param(False, id="no-connection"), pytest.param(True, id="same-connection")],
)
def test_a_customer_is_matched_on_the_email_of_an_unlinked_contact(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    manual_connection: bool,
) -> None:
    manual = insert_unlinked_contact(
        db, email="ada@example.com", connection_id=connection.id if manual_connection else None
    )
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    [contact] = contacts(db)
    assert contact["id"] == manual
    assert contact["stripe_customer_id"] == "cus_ada"
    assert contact["name"] == "Ada Lovelace"
    assert contact["tags"] == ["vip"]  # kept: no flow maps tags
    # Linked now: a later update finds it by Stripe id, even with another email.
    apply(
        db,
        connection.id,
        event_factory("customer.updated", customer(email="new@example.com"), created=T0 + 1),
    )
    found = contacts(db)
    assert [(c["id"], c["email"]) for c in found] == [(manual, "new@example.com")]
    assert found[0]["connection_id"] == connection.id


def test_email_matching_skips_linked_and_archived_contacts(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    archived = insert_unlinked_contact(db, email="ada@example.com", archived=True)
    apply(db, connection.id, event_factory("customer.created", customer("cus_a"), created=T0))
    apply(db, connection.id, event_factory("customer.created", customer("cus_b"), created=T0))
    found = contacts(db)
    assert len(found) == 3
    by_customer = {c["stripe_customer_id"]: c["id"] for c in found}
    assert by_customer[None] == archived
    assert by_customer["cus_a"] != by_customer["cus_b"]


def test_matching_on_email_can_be_turned_off(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    registry = flowfile.parse(
        """
flows:
  - name: contacts
    trigger: [customer.created]
    action: upsert_contact
    options: {match_on: [stripe_customer_id]}
    fields: {stripe_customer_id: id, email: email}
""",
        "custom.yaml",
    )
    manual = insert_unlinked_contact(db, email="ada@example.com")
    with db.write() as conn:
        registry.apply(
            conn,
            connection_id=connection.id,
            event=event_factory("customer.created", customer(), created=T0),
        )
    found = {c["id"]: c for c in contacts(db)}
    assert len(found) == 2
    assert found[manual]["stripe_customer_id"] is None


def test_customer_deleted_archives_the_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    [before] = contacts(db)
    apply(db, connection.id, event_factory("customer.deleted", customer(), created=T0 + 10))
    [after] = contacts(db)
    assert after["id"] == before["id"]
    assert after["archived"] is True
    assert after["email"] == "ada@example.com"


def test_customer_deleted_for_an_unseen_customer_keeps_an_archived_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.deleted", customer(), created=T0))
    [contact] = contacts(db)
    assert contact["stripe_customer_id"] == "cus_ada"
    assert contact["archived"] is True


def test_customer_deleted_links_and_archives_an_unlinked_contact_by_email(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    # As customer.created would have linked it first: any arrival order ends the same way.
    manual = insert_unlinked_contact(db, email="ada@example.com")
    apply(db, connection.id, event_factory("customer.deleted", customer(), created=T0))
    found = {c["id"]: c for c in contacts(db)}
    assert list(found) == [manual]
    assert found[manual]["archived"] is True
    assert found[manual]["stripe_customer_id"] == customer()["id"]


def test_records_are_kept_per_connection(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, "conn_other", event_factory("customer.created", customer(name="Other"), created=T0))
    found = {c["connection_id"]: c for c in contacts(db)}
    assert set(found) == {connection.id, "conn_other"}
    assert found[connection.id]["name"] == "Ada Lovelace"
    assert found["conn_other"]["name"] == "Other"


# Invoices.


def test_invoice_is_logged_with_its_payment_status(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, connection.id, event_factory("invoice.finalized", invoice(), created=T0 + 1))
    [contact] = contacts(db)
    [logged] = invoices(db)
    assert logged["id"].startswith("inv_")
    assert logged["stripe_invoice_id"] == "in_1"
    assert logged["stripe_customer_id"] == "cus_ada"
    assert logged["customer_id"] == contact["id"]
    assert (logged["amount_due"], logged["amount_paid"], logged["amount_remaining"]) == (
        2500,
        0,
        2500,
    )
    assert logged["total"] == 2500
    assert logged["currency"] == "eur"
    assert logged["status"] == "open"
    assert logged["payment_status"] == "unpaid"
    assert logged["number"] == "ABC-0001"
    assert logged["metadata"] == {"order": "42"}
    assert logged["paid_at"] is None

    paid_at = T0 + 60
    apply(
        db,
        connection.id,
        event_factory(
            "invoice.paid",
            invoice(
                status="paid",
                amount_paid=2500,
                amount_remaining=0,
                attempted=True,
                attempt_count=1,
                status_transitions={"paid_at": paid_at, "finalized_at": T0 + 1},
            ),
            created=paid_at,
        ),
    )
    [logged] = invoices(db)
    assert (logged["status"], logged["payment_status"]) == ("paid", "paid")
    assert logged["amount_paid"] == 2500
    assert logged["paid_at"] == iso(paid_at)


def test_invoice_with_an_expanded_customer_links_by_its_id(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(
        db,
        connection.id,
        event_factory("invoice.created", invoice(customer=customer()), created=T0 + 1),
    )
    [contact] = contacts(db)
    [logged] = invoices(db)
    assert logged["stripe_customer_id"] == "cus_ada"
    assert logged["customer_id"] == contact["id"]


def test_invoice_for_an_unknown_customer_creates_a_minimal_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        connection.id,
        event_factory(
            "invoice.created",
            invoice(
                customer_id="cus_new",
                customer_email="grace@example.com",
                customer_name="Grace Hopper",
                customer_phone="+1 555 0100",
                customer_address=ADDRESS,
            ),
            created=T0,
        ),
    )
    [contact] = contacts(db)
    [logged] = invoices(db)
    assert logged["customer_id"] == contact["id"]
    assert contact["stripe_customer_id"] == "cus_new"
    assert contact["email"] == "grace@example.com"
    assert contact["name"] == "Grace Hopper"
    assert contact["phone"] == "+1 555 0100"
    assert contact["address"] == ADDRESS
    assert contact["archived"] is False
    assert contact["connection_id"] == connection.id


def test_a_second_invoice_reuses_the_contact_made_from_the_first(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        connection.id,
        event_factory("invoice.created", invoice("in_1", "cus_new"), created=T0),
        event_factory("invoice.created", invoice("in_2", "cus_new"), created=T0 + 1),
    )
    [contact] = contacts(db)
    assert {i["customer_id"] for i in invoices(db)} == {contact["id"]}


def test_a_later_customer_created_fills_in_the_contact_made_from_an_invoice(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        connection.id,
        event_factory(
            "invoice.created",
            invoice(customer_id="cus_ada", customer_email="ADA@EXAMPLE.COM", customer_name=None),
            created=T0 + 10,
        ),
    )
    [made] = contacts(db)
    assert (made["email"], made["name"]) == ("ADA@EXAMPLE.COM", None)
    # customer.created is older than the invoice event: a contact made from an invoice has no
    # version, so the first real event about the customer still fills it in.
    apply(db, connection.id, event_factory("customer.created", customer(), created=T0))
    [filled] = contacts(db)
    assert filled["id"] == made["id"]
    assert filled["email"] == "ada@example.com"
    assert filled["name"] == "Ada Lovelace"
    assert filled["phone"] == "+33 1 23 45 67 89"
    assert filled["metadata"] == {"crm_tier": "gold"}
    [logged] = invoices(db)
    assert logged["customer_id"] == made["id"]


def test_invoice_deleted_archives_the_invoice(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        connection.id,
        event_factory("invoice.created", invoice(status="draft"), created=T0),
        event_factory("invoice.deleted", invoice(status="draft"), created=T0 + 1),
    )
    [logged] = invoices(db)
    assert logged["archived"] is True


# Locations.


def test_terminal_location_events_upsert_and_archive_a_location(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, connection.id, event_factory("terminal.location.created", created=T0))
    [location] = page(db, "location", limit=10)
    stripe_id = location["stripe_location_id"]
    assert stripe_id
    assert location["archived"] is False
    apply(
        db,
        connection.id,
        event_factory(
            "terminal.location.deleted",
            {"id": stripe_id, "object": "terminal.location", "deleted": True},
            created=T0 + 1,
        ),
    )
    [location] = page(db, "location", limit=10)
    assert location["stripe_location_id"] == stripe_id
    assert location["archived"] is True
    assert location["name"]  # the delete carries no name and must not wipe it


# Through intake and the worker: the one path every source takes.


def test_intake_and_worker_write_the_records(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    events = [
        event_factory("invoice.created", invoice(status="draft"), created=T0),
        event_factory("customer.created", customer(), created=T0),
        event_factory("charge.succeeded", created=T0),
        event_factory("invoice.finalized", invoice(), created=T0 + 1),
    ]
    events.append(events[0])  # a duplicate delivery
    for event in events:
        intake.store(
            db,
            REGISTRY,
            connection_id=connection.id,
            event=event,
            payload=json.dumps(event).encode(),
        )
    work = worker.Worker(db, REGISTRY, settings, name="test-worker")
    drain(work)
    assert (work.stats.done, work.stats.ignored, work.stats.dead) == (3, 0, 0)
    [contact] = contacts(db)
    [logged] = invoices(db)
    assert contact["name"] == "Ada Lovelace"
    assert logged["customer_id"] == contact["id"]
    assert logged["status"] == "open"
    with db.read() as conn:
        rows = conn.execute(
            sa.select(tables.inbox_items.c.event_type, tables.inbox_items.c.status)
        ).all()
    statuses = {event_type: status for event_type, status in rows}
    assert len(rows) == 4  # the duplicate was stored once
    assert statuses == {
        "invoice.created": "done",
        "customer.created": "done",
        "charge.succeeded": "ignored",
        "invoice.finalized": "done",
    }


# The lists' fast path: rows straight to JSON, as the public models would dump them.


def test_lists_answer_exactly_what_the_public_models_dump(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    for event in (
        event_factory("customer.created", helpers.customer(1)),
        event_factory("customer.created", helpers.customer(2, address=None)),
        event_factory("invoice.paid", helpers.invoice(1, "cus_000001")),
        event_factory("terminal.location.created", helpers.location(1)),
    ):
        helpers.put(db, connection.id, event)
    drain(worker.Worker(db, flowfile.load(), settings))
    deep: Any = "bottom"
    for _ in range(80):
        deep = {"d": deep}
    with db.write() as tx:  # values stored before today's bounds, or by odd mappings
        odd: dict[str, Any] = {"big": 2**70}  # over 64 bits: orjson refuses it
        if db.dialect == "sqlite":
            odd["nan"] = float("nan")  # json.dumps writes NaN; PostgreSQL refuses it
        tx.execute(tables.invoices.update().values(custom=odd))
    for kind in (kinds.CONTACT, kinds.INVOICE, kinds.LOCATION):
        with db.read() as tx:
            fast = json.loads(reads.page_json(tx, kind, limit=100))
            models = reads.page(tx, kind, limit=100)
        assert fast["data"], kind.name
        assert fast == json.loads(models.model_dump_json()), kind.name
