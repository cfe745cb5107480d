"""Out-of-order and duplicate events: an older event never overwrites newer state, and
same-second ties are broken by the object's own state order. On SQLite and PostgreSQL.

The examples pin the cases DESIGN.md names; the property tests check that any arrival order of
a Stripe-like stream, with redeliveries, ends in the same records as the stream in order."""

from __future__ import annotations

import copy
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from snapshots import connections, flowfile, intake, worker
from snapshots.records import kinds, reads
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, SqliteCopy, drain, fixture

REGISTRY = flowfile.load()
T0 = 1_700_000_000


def customer_object(id: str = "cus_ada", version: int = 0, **changes: Any) -> dict[str, Any]:
    """A customer whose data all differ from one `version` to the next."""
    obj = copy.deepcopy(fixture("customer"))
    obj.update(
        id=id,
        email=f"{id}.v{version}@example.com",
        name=f"Name {id} v{version}",
        phone=f"+1 555 {version:04d}",
        address={
            "line1": f"{version} Main St",
            "line2": None,
            "city": "Zürich" if version % 2 else "Paris",
            "state": None,
            "postal_code": f"{1000 + version}",
            "country": "CH" if version % 2 else "FR",
        },
        metadata={"version": str(version)},
    )
    return obj | changes


# An invoice's state along Stripe's lifecycle: draft -> open -> paid | void | uncollectible
# (-> paid | void). `draft2` is a draft edited before finalizing; `failed` an open invoice
# after a failed payment attempt.
STATES: dict[str, dict[str, Any]] = {
    "draft": {"status": "draft", "attempted": False, "attempt_count": 0},
    "draft2": {"status": "draft", "attempted": False, "attempt_count": 0, "number": "DRAFT-2"},
    "open": {"status": "open", "attempted": False, "attempt_count": 0},
    "failed": {"status": "open", "attempted": True, "attempt_count": 1},
    "paid": {"status": "paid", "attempted": True, "attempt_count": 1, "paid": True},
    "void": {"status": "void"},
    "uncollectible": {"status": "uncollectible", "attempted": True, "attempt_count": 2},
}


def invoice_object(
    id: str = "in_1",
    state: str = "open",
    *,
    customer: str = "cus_ada",
    amount_due: int = 1000,
    **changes: Any,
) -> dict[str, Any]:
    spec = dict(STATES[state])
    paid = spec.pop("paid", False)
    obj = copy.deepcopy(fixture("invoice"))
    obj.update(
        id=id,
        customer=customer,
        customer_email=f"{customer}.v0@example.com",
        customer_name=f"Name {customer} v0",
        currency="usd",
        amount_due=amount_due,
        total=amount_due,
        amount_paid=amount_due if paid else 0,
        amount_remaining=0 if paid else amount_due,
        status_transitions={
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": T0 + 100 if paid else None,
            "voided_at": None,
        },
        metadata={"state": state},
        **spec,
    )
    return obj | changes


def apply(db: Database, connection_id: str, *events: dict[str, Any]) -> None:
    for event in events:
        with db.write() as conn:
            REGISTRY.apply(conn, connection_id=connection_id, event=event)


def _all(db: Database, kind: str) -> list[dict[str, Any]]:
    table = kinds.KINDS[kind].table
    with db.read() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.seq)).all()
    return [kinds.KINDS[kind].public(row).model_dump(mode="json") for row in rows]


def contacts(db: Database) -> list[dict[str, Any]]:
    return _all(db, "contact")


def invoices_by_stripe_id(db: Database) -> dict[str, dict[str, Any]]:
    return {i["stripe_invoice_id"]: i for i in _all(db, "invoice")}


# Examples: an older event never overwrites newer state.

CUSTOMER_TIMELINE = [
    ("customer.created", 0, T0),
    ("customer.updated", 1, T0 + 10),
    ("customer.updated", 2, T0 + 20),
]


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(order, id="-".join(str(i) for i in order))
        for order in itertools.permutations(range(len(CUSTOMER_TIMELINE)))
    ],
)
def test_an_older_customer_event_never_overwrites_newer_data(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    order: tuple[int, ...],
) -> None:
    events = [
        event_factory(kind, customer_object(version=version), created=created)
        for kind, version, created in CUSTOMER_TIMELINE
    ]
    apply(db, connection.id, *(events[i] for i in order))
    [contact] = contacts(db)
    newest = customer_object(version=2)
    assert (contact["email"], contact["name"], contact["phone"]) == (
        newest["email"],
        newest["name"],
        newest["phone"],
    )
    assert contact["address"] == newest["address"]
    assert contact["metadata"] == {"version": "2"}


def test_an_older_invoice_update_never_overwrites_a_newer_one(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        connection.id,
        event_factory("invoice.paid", invoice_object(state="paid"), created=T0 + 20),
        event_factory("invoice.updated", invoice_object(state="open"), created=T0 + 10),
        event_factory("invoice.created", invoice_object(state="draft"), created=T0),
    )
    [invoice] = invoices_by_stripe_id(db).values()
    assert (invoice["status"], invoice["payment_status"], invoice["amount_paid"]) == (
        "paid",
        "paid",
        1000,
    )


def test_an_older_location_update_never_overwrites_a_newer_one(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    location = copy.deepcopy(fixture("terminal.location"))
    apply(
        db,
        connection.id,
        event_factory("terminal.location.updated", location, created=T0 + 5, display_name="New"),
        event_factory("terminal.location.created", location, created=T0, display_name="Old"),
    )
    with db.read() as tx:
        [found] = reads.page(tx, kinds.LOCATION, limit=10).data
    assert found.name == "New"


# Examples: same-second ties, broken by the invoice's state order.

PAID_SAME_SECOND = [
    ("invoice.created", "draft"),
    ("invoice.finalized", "open"),
    ("invoice.updated", "open"),
    ("invoice.payment_succeeded", "paid"),
    ("invoice.paid", "paid"),
]


@pytest.mark.parametrize(
    "updated_state",
    [pytest.param("open", id="updated-open"), pytest.param("paid", id="updated-paid")],
)
def test_a_paid_invoice_never_goes_back_whatever_the_same_second_order(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    updated_state: str,
) -> None:
    timeline = [
        (kind, updated_state if kind == "invoice.updated" else state)
        for kind, state in PAID_SAME_SECOND
    ]
    orders = list(itertools.permutations(range(len(timeline))))
    # One invoice per arrival order, all in one database: 120 orders, 600 events.
    for n, order in enumerate(orders):
        events = [
            event_factory(kind, invoice_object(f"in_{n:03d}", state), created=T0)
            for kind, state in timeline
        ]
        apply(db, connection.id, *(events[i] for i in order))
    found = invoices_by_stripe_id(db)
    assert len(found) == len(orders)
    wrong = {
        orders[int(stripe_id[3:])]: (invoice["status"], invoice["payment_status"])
        for stripe_id, invoice in found.items()
        if (invoice["status"], invoice["payment_status"], invoice["amount_paid"])
        != ("paid", "paid", 1000)
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("final_type", "final_state"),
    [
        pytest.param("invoice.voided", "void", id="void"),
        pytest.param("invoice.marked_uncollectible", "uncollectible", id="uncollectible"),
    ],
)
def test_void_and_uncollectible_are_final_against_same_second_open_events(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    final_type: str,
    final_state: str,
) -> None:
    timeline = [
        ("invoice.finalized", "open"),
        ("invoice.updated", "open"),
        ("invoice.payment_failed", "failed"),
        ("invoice.updated", "failed"),
        (final_type, final_state),
    ]
    orders = list(itertools.permutations(range(len(timeline))))
    for n, order in enumerate(orders):
        events = [
            event_factory(kind, invoice_object(f"in_{n:03d}", state), created=T0)
            for kind, state in timeline
        ]
        apply(db, connection.id, *(events[i] for i in order))
    found = invoices_by_stripe_id(db)
    assert len(found) == len(orders)
    wrong = {
        orders[int(stripe_id[3:])]: invoice["status"]
        for stripe_id, invoice in found.items()
        if (invoice["status"], invoice["payment_status"]) != (final_state, final_state)
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("later_type", "later_state", "gap"),
    [
        pytest.param("invoice.paid", "paid", 60, id="paid-later"),
        pytest.param("invoice.paid", "paid", 0, id="paid-same-second"),
        pytest.param("invoice.payment_succeeded", "paid", 0, id="payment-succeeded-same-second"),
        pytest.param("invoice.voided", "void", 60, id="void-later"),
        pytest.param("invoice.voided", "void", 0, id="void-same-second"),
    ],
)
@pytest.mark.parametrize(
    "reverse", [pytest.param(False, id="in-order"), pytest.param(True, id="reversed")]
)
def test_an_uncollectible_invoice_can_still_be_paid_or_voided(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    later_type: str,
    later_state: str,
    gap: int,
    reverse: bool,
) -> None:
    events = [
        event_factory("invoice.finalized", invoice_object(state="open"), created=T0),
        event_factory(
            "invoice.marked_uncollectible", invoice_object(state="uncollectible"), created=T0
        ),
        event_factory("invoice.updated", invoice_object(state="uncollectible"), created=T0 + gap),
        event_factory(later_type, invoice_object(state=later_state), created=T0 + gap),
    ]
    apply(db, connection.id, *(reversed(events) if reverse else events))
    [invoice] = invoices_by_stripe_id(db).values()
    assert (invoice["status"], invoice["payment_status"]) == (later_state, later_state)


@pytest.mark.parametrize(
    ("late_type", "late_created"),
    [
        pytest.param("customer.updated", T0 - 10, id="older-update"),
        pytest.param("customer.updated", T0, id="same-second-update"),
        pytest.param("customer.created", T0, id="same-second-create"),
        pytest.param("customer.created", T0 - 20, id="older-create"),
    ],
)
def test_a_deleted_customer_stays_archived(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    late_type: str,
    late_created: int,
) -> None:
    apply(
        db,
        connection.id,
        event_factory("customer.deleted", customer_object(version=3), created=T0),
        event_factory(late_type, customer_object(version=1), created=late_created),
    )
    [contact] = contacts(db)
    assert contact["archived"] is True
    assert contact["name"] == customer_object(version=3)["name"]


def test_a_deleted_draft_invoice_stays_archived(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        connection.id,
        event_factory("invoice.deleted", invoice_object(state="draft"), created=T0),
        event_factory("invoice.updated", invoice_object(state="draft2"), created=T0),
        event_factory("invoice.created", invoice_object(state="draft"), created=T0),
    )
    [invoice] = invoices_by_stripe_id(db).values()
    assert invoice["archived"] is True


def test_redelivered_events_are_applied_once(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    newer = event_factory("customer.updated", customer_object(version=2), created=T0 + 5)
    older = event_factory("customer.updated", customer_object(version=1), created=T0)
    work = worker.Worker(db, REGISTRY, settings, name="w1")
    for event in (newer, older, newer, older):
        receipt = intake.store(
            db,
            REGISTRY,
            connection_id=connection.id,
            event=event,
            payload=json.dumps(event).encode(),
        )
        drain(work)
    assert receipt.duplicate is True
    assert work.stats.done == 2
    [contact] = contacts(db)
    assert contact["metadata"] == {"version": "2"}


# Examples: the placeholder contact made from an invoice, and contacts matched on email, must
# not depend on arrival order either.


def test_a_contact_made_from_invoices_does_not_depend_on_their_arrival_order(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    """The customer's own events never arrive (missed webhooks); the customer was renamed
    between two invoices, so the invoices carry different customer fields."""

    def events(customer: str) -> list[dict[str, Any]]:
        return [
            event_factory(
                "invoice.finalized",
                invoice_object(f"in_a_{customer}", customer=customer, customer_name="Old Name"),
                created=T0,
            ),
            event_factory(
                "invoice.finalized",
                invoice_object(f"in_b_{customer}", customer=customer, customer_name="New Name"),
                created=T0 + 3600,
            ),
        ]

    apply(db, connection.id, *events("cus_in_order"))
    apply(db, connection.id, *reversed(events("cus_reversed")))
    names = {c["stripe_customer_id"]: c["name"] for c in contacts(db)}
    assert names["cus_in_order"] == names["cus_reversed"]


def _insert_unlinked_contact(db: Database, *, email: str, connection_id: str) -> str:
    now = time.time()
    record_id = f"con_manual{uuid.uuid4().hex[:12]}"
    with db.write() as conn:
        conn.execute(
            tables.contacts.insert().values(
                id=record_id,
                connection_id=connection_id,
                email=email,
                name="Hand Made",
                metadata={},
                tags=["vip"],
                created_at=now,
                updated_at=now,
            )
        )
    return record_id


CUSTOMER_AND_FIRST_INVOICE = [
    ("customer.created", T0),
    ("invoice.created", T0 + 1),
]
CUSTOMER_AND_DELETE = [
    ("customer.created", T0),
    ("customer.deleted", T0 + 1),
]


@pytest.mark.parametrize(
    "timeline",
    [
        pytest.param(CUSTOMER_AND_FIRST_INVOICE, id="customer-then-invoice"),
        pytest.param(CUSTOMER_AND_DELETE, id="customer-then-delete"),
    ],
)
@pytest.mark.parametrize(
    "reverse", [pytest.param(False, id="in-order"), pytest.param(True, id="reversed")]
)
def test_an_unlinked_contact_is_linked_whatever_the_arrival_order(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    timeline: list[tuple[str, int]],
    reverse: bool,
) -> None:
    """A contact made by hand with the customer's email is the customer's contact: the first
    event about the customer links it, whichever event that is."""
    email = customer_object()["email"]
    manual = _insert_unlinked_contact(db, email=email, connection_id=connection.id)
    events = [
        event_factory(
            kind,
            invoice_object(customer_email=email)
            if kind.startswith("invoice.")
            else customer_object(),
            created=created,
        )
        for kind, created in timeline
    ]
    apply(db, connection.id, *(reversed(events) if reverse else events))
    found = contacts(db)
    assert [(c["id"], c["stripe_customer_id"]) for c in found] == [(manual, "cus_ada")]
    assert found[0]["archived"] is (timeline is CUSTOMER_AND_DELETE)


# Property: any arrival order, with redeliveries, gives the records of the stream in order.

CONNECTION_ID = "conn_property"
INVOICE_PATHS = [
    ["draft"],
    ["draft", "deleted"],
    ["draft", "open"],
    ["draft", "open", "paid"],
    ["draft", "open", "void"],
    ["draft", "open", "uncollectible"],
    ["draft", "open", "uncollectible", "paid"],
    ["draft", "open", "uncollectible", "void"],
]


class Scenario:
    """A plain class, not a dataclass: hypothesis prints it with `__repr__`, which is short
    enough to show a falsifying example in full (one line per event)."""

    def __init__(
        self,
        *,
        events: list[dict[str, Any]],
        arrival: list[dict[str, Any]],
        final_invoices: dict[str, tuple[str, bool]],
        final_customers: dict[str, tuple[int, bool, bool]],
    ) -> None:
        self.events = events  # in the order Stripe made them
        self.arrival = arrival  # a permutation, with redeliveries
        self.final_invoices = final_invoices  # stripe id -> (final state, deleted)
        # stripe id -> (last version, deleted, whether that version is the unique newest)
        self.final_customers = final_customers

    def __repr__(self) -> str:
        def brief(events: list[dict[str, Any]]) -> str:
            return "".join(f"\n    {_brief(event)}" for event in events)

        return f"Scenario(\n  events:{brief(self.events)}\n  arrival:{brief(self.arrival)}\n)"


def _brief(event: dict[str, Any]) -> str:
    obj = event["data"]["object"]
    return f"{event['id']} T0+{event['created'] - T0} {event['type']} {obj['id']} {obj['metadata']}"


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    spans: list[tuple[str, int, dict[str, Any]]] = []  # (type, created, object)
    final_customers: dict[str, tuple[int, bool, bool]] = {}
    final_invoices: dict[str, tuple[str, bool]] = {}
    customer_ids = [f"cus_{n}" for n in range(draw(st.integers(1, 3)))]
    # 0: every event in one second (ties everywhere); 1: each event 0 or 1 s after the last.
    spread = draw(st.integers(0, 1))

    def later() -> int:
        return draw(st.integers(0, spread))

    for customer in customer_ids:
        if draw(st.integers(0, 3)) == 0:
            continue  # missed webhooks: the customer is only known from its invoices
        created = T0 + 2 * later()
        timeline = [("customer.created", created, 0)]
        for version in range(1, draw(st.integers(0, 3)) + 1):
            created += later()
            timeline.append(("customer.updated", created, version))
        deleted = draw(st.booleans())
        if deleted:
            created += later()
            timeline.append(("customer.deleted", created, timeline[-1][2]))
        last_version = timeline[-1][2]
        data_events = [(c, v) for kind, c, v in timeline if kind != "customer.deleted"]
        newest_second = data_events[-1][0]
        unique = deleted or sum(1 for c, _ in data_events if c == newest_second) == 1
        final_customers[customer] = (last_version, deleted, unique)
        spans += [(kind, c, customer_object(customer, v)) for kind, c, v in timeline]

    for n in range(draw(st.integers(1, 4))):
        invoice_id = f"in_{n}"
        customer = draw(st.sampled_from(customer_ids))
        path = draw(st.sampled_from(INVOICE_PATHS))
        created = T0 + 2 * later()
        timeline_i: list[tuple[str, str]] = [("invoice.created", "draft")]
        state = "draft"
        for step in path[1:]:
            if step == "deleted":
                timeline_i.append(("invoice.deleted", state))
                continue
            if step == "open":
                if draw(st.booleans()):
                    state = "draft2"
                    timeline_i.append(("invoice.updated", state))
                timeline_i.append(("invoice.finalized", "open"))
                if draw(st.booleans()):
                    timeline_i.append(("invoice.updated", "open"))
                state = "open"
                if draw(st.booleans()):
                    state = "failed"
                    timeline_i.append(("invoice.payment_failed", state))
                    if draw(st.booleans()):
                        timeline_i.append(("invoice.updated", state))
            elif step == "paid":
                state = "paid"
                kinds = ["invoice.updated", "invoice.paid", "invoice.payment_succeeded"]
                timeline_i += [(kind, state) for kind in draw(st.permutations(kinds))]
            elif step == "void":
                state = "void"
                timeline_i.append(("invoice.voided", state))
                if draw(st.booleans()):
                    timeline_i.append(("invoice.updated", state))
            elif step == "uncollectible":
                state = "uncollectible"
                timeline_i.append(("invoice.marked_uncollectible", state))
                if draw(st.booleans()):
                    timeline_i.append(("invoice.updated", state))
        for i, (kind, event_state) in enumerate(timeline_i):
            if i:
                created += later()
            obj = invoice_object(invoice_id, event_state, customer=customer)
            spans.append((kind, created, obj))
        final_invoices[invoice_id] = (state, path[-1] == "deleted")

    # Event ids in random order, so that the id never stands in for the true order of a tie.
    ids = draw(st.permutations(range(len(spans))))
    events = [
        {
            "id": f"evt_{ids[i]:04d}",
            "object": "event",
            "api_version": "2026-07-29.dahlia",
            "created": created,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        for i, (kind, created, obj) in enumerate(spans)
    ]
    # Stripe's order: by second; within a second, each object's own order is kept.
    events.sort(key=lambda event: event["created"])
    redelivered = draw(st.lists(st.sampled_from(events), max_size=5))
    arrival = draw(st.permutations(events + redelivered))
    return Scenario(
        events=events,
        arrival=list(arrival),
        final_invoices=final_invoices,
        final_customers=final_customers,
    )


IGNORED = ("id", "created_at", "updated_at")


def comparable_contact(contact: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in contact.items() if k not in IGNORED}


def final_records(db: Database) -> dict[str, Any]:
    """Records without Snapshots' own ids and times; an invoice's contact by its Stripe id."""
    found = contacts(db)
    by_id = {contact["id"]: contact["stripe_customer_id"] for contact in found}
    by_customer = {c["stripe_customer_id"]: comparable_contact(c) for c in found}
    assert len(by_customer) == len(found), "two contacts for one Stripe customer"
    invoices = {}
    for stripe_id, invoice in invoices_by_stripe_id(db).items():
        shown = {k: v for k, v in invoice.items() if k not in IGNORED}
        shown["customer_id"] = by_id.get(invoice["customer_id"], "<missing contact>")
        invoices[stripe_id] = shown
    return {"contacts": by_customer, "invoices": invoices}


def wipe(db: Database) -> None:
    with db.write() as conn:
        for table in reversed(tables.metadata.sorted_tables):
            if table is not tables.audit_entries:  # append-only (and no part of the records)
                conn.execute(sa.delete(table))


def run_through_inbox(db: Database, settings: Settings, events: list[dict[str, Any]]) -> None:
    wipe(db)
    for event in events:
        intake.store(
            db,
            REGISTRY,
            connection_id=CONNECTION_ID,
            event=event,
            payload=json.dumps(event).encode(),
        )
    work = worker.Worker(db, REGISTRY, settings, name="property-worker")
    drain(work)
    assert (work.stats.failed, work.stats.dead) == (0, 0)
    assert work.stats.done == len({event["id"] for event in events})


def check_scenario(db: Database, settings: Settings, scenario: Scenario) -> None:
    run_through_inbox(db, settings, scenario.events)
    expected = final_records(db)
    run_through_inbox(db, settings, scenario.arrival)
    assert final_records(db) == expected

    # And the stream in order ends where Stripe's objects ended.
    for stripe_id, (state, deleted) in scenario.final_invoices.items():
        invoice = expected["invoices"][stripe_id]
        truth = invoice_object(stripe_id, state)
        assert invoice["status"] == truth["status"], stripe_id
        assert invoice["amount_due"] == truth["amount_due"], stripe_id
        assert invoice["amount_paid"] == truth["amount_paid"], stripe_id
        assert invoice["metadata"] == {"state": state}, stripe_id
        assert invoice["archived"] is deleted, stripe_id
        assert invoice["customer_id"] == invoice["stripe_customer_id"], stripe_id
    for stripe_id, (version, deleted, unique) in scenario.final_customers.items():
        contact = expected["contacts"][stripe_id]
        assert contact["archived"] is deleted, stripe_id
        if unique:
            assert contact["metadata"] == {"version": str(version)}, stripe_id
            truth = customer_object(stripe_id, version)
            assert (contact["email"], contact["name"], contact["phone"]) == (
                truth["email"],
                truth["name"],
                truth["phone"],
            ), stripe_id
            assert contact["address"] == truth["address"], stripe_id


@pytest.fixture(scope="module")
def sqlite_store(
    tmp_path_factory: pytest.TempPathFactory, sqlite_copy: SqliteCopy
) -> Iterator[tuple[Database, Settings]]:
    database = store.Database(sqlite_copy(tmp_path_factory.mktemp("ordering")))
    yield database, Settings(database_url=database.url, master_key=Fernet.generate_key().decode())
    database.dispose()


@pytest.fixture(scope="module")
def postgres_store(postgres_url: str) -> Iterator[tuple[Database, Settings]]:
    database = store.Database(postgres_url)
    yield database, Settings(database_url=postgres_url, master_key=Fernet.generate_key().decode())
    database.dispose()


# Both stores are module-scoped and wiped at the start of every run, so hypothesis's examples
# never share state and no function-scoped fixture is involved.


@hypothesis_settings(max_examples=100, deadline=None)
@given(scenario=scenarios())
def test_any_arrival_order_gives_the_same_records_sqlite(
    sqlite_store: tuple[Database, Settings], scenario: Scenario
) -> None:
    check_scenario(*sqlite_store, scenario)


@pytest.mark.postgres
@hypothesis_settings(max_examples=25, deadline=None)
@given(scenario=scenarios())
def test_any_arrival_order_gives_the_same_records_postgres(
    postgres_store: tuple[Database, Settings], scenario: Scenario
) -> None:
    check_scenario(*postgres_store, scenario)
