"""Sync against the fake Stripe server, on SQLite and PostgreSQL: backfill (checkpoints,
resuming, conflicts), the ordering of `*.synced` snapshots against real events, reconciliation
and its silent-endpoint warning, refetch mode, and the /v1/sync-runs API."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import (
    connections,
    errors,
    flowfile,
    flows,
    inbox,
    mapping,
    stripe_api,
    sync,
    vault,
    worker,
)
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import WEBHOOK_SECRET, EventFactory, drain
from tests.integration.helpers import MakeKey, inbox_items
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

CUSTOMERS = 250
INVOICES = 120
ACCOUNT = stripe_api.Account(id="acct_fake", livemode=False, default_currency="usd", country="US")
_numbers = itertools.count(1)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_server() -> Iterator[FakeStripe]:
    """250 customers and 120 invoices, never changed by the tests (faults only)."""
    with run_fake_stripe(customers=CUSTOMERS, invoices=INVOICES) as fake:
        yield fake


@pytest.fixture(scope="module")
def live_server() -> Iterator[FakeStripe]:
    """A fake Stripe the tests change (customers made, updated, deleted: events)."""
    with run_fake_stripe() as fake:
        yield fake


def _fresh(server: FakeStripe) -> Iterator[FakeStripe]:
    server.clear_faults()
    server.clear_requests()
    yield server
    server.clear_faults()


@pytest.fixture
def seeded(seeded_server: FakeStripe) -> Iterator[FakeStripe]:
    yield from _fresh(seeded_server)


@pytest.fixture
def live(live_server: FakeStripe) -> Iterator[FakeStripe]:
    yield from _fresh(live_server)


@pytest.fixture
def registry() -> flows.Registry:
    return flowfile.load()


@pytest.fixture
def per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page commits on its own (a local server is fast enough for a backfill to
    batch its pages into fewer commits; see `sync.COMMIT_EVERY`)."""
    monkeypatch.setattr(sync, "COMMIT_EVERY", 0.0)


def link(
    db: Database,
    settings: Settings,
    fake: FakeStripe,
    *,
    ordering: str = "payload",
    secret_key: str | None = None,
) -> connections.Connection:
    with db.write() as tx:
        return connections.add(
            tx,
            vault.load(settings),
            account=ACCOUNT,
            secret_key=secret_key or fake.secret_key,
            webhook_secrets=[WEBHOOK_SECRET],
            name=f"fake {next(_numbers)}",
            api_base=fake.api_base,
            ordering=ordering,
        )


def stripe_of(
    db: Database, settings: Settings, connection: connections.Connection
) -> stripe_api.Stripe:
    with db.read() as tx:
        return connections.stripe_client(tx, vault.load(settings), connection, rps=0, retries=0)


def page_runs(db: Database, *, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
    """Runs newest first as the API shows them, and whether there are more."""
    with db.read() as tx:
        found = sync.page_runs(tx, limit=limit)
    return [run.model_dump(mode="json") for run in found.data], found.has_more


@pytest.fixture
def apply(db: Database, settings: Settings, registry: flows.Registry) -> Callable[[], None]:
    def apply_all() -> None:
        applier = worker.Worker(db, registry, settings)
        drain(applier)
        assert applier.stats.failed == applier.stats.dead == 0, applier.stats

    return apply_all


def rows(db: Database, table: sa.Table, *where: Any) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(table).where(*where)).all())


def run_row(db: Database, run_id: str) -> Any:
    (row,) = rows(db, tables.sync_runs, tables.sync_runs.c.id == run_id)
    return row


def gets(fake: FakeStripe, path: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] == "GET" and r["path"] == path]


def all_objects(fake: FakeStripe, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while True:
        page = fake.v1("get", path, limit=100, **params)
        out.extend(page["data"])
        if not page["has_more"]:
            return out
        params["starting_after"] = page["data"][-1]["id"]


CONTACT_COLUMNS = ("email", "name", "phone", "address", "metadata", "livemode", "stripe_created")
INVOICE_COLUMNS = (
    "number",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "total",
    "currency",
    "status",
    "payment_status",
    "customer_email",
    "customer_name",
    "hosted_invoice_url",
    "due_date",
    "paid_at",
    "metadata",
    "livemode",
    "stripe_created",
    "stripe_customer_id",
    "customer_id",
    "archived",
)


def record_values(
    db: Database, table: sa.Table, key: str, columns: tuple[str, ...]
) -> dict[str, Any]:
    return {row._mapping[key]: tuple(row._mapping[c] for c in columns) for row in rows(db, table)}


# -- backfill ---------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_backfill_lands_every_customer_and_invoice(
    per_page: None,
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)
    seen: list[int] = []

    customers = sync.backfill(
        db, client, connection, registry, obj="customers", progress=lambda r: seen.append(r.objects)
    )
    assert seen == [100, 200, 250]
    assert (customers.status, customers.kind, customers.object) == ("done", "backfill", "customers")
    assert (customers.pages, customers.objects, customers.enqueued) == (3, CUSTOMERS, CUSTOMERS)
    assert customers.resumed_from == 0 and customers.error is None
    assert customers.finished_at is not None and customers.cursor == "cus_000001"
    invoices = sync.backfill(db, client, connection, registry, obj="invoices")
    assert (invoices.status, invoices.pages, invoices.objects) == ("done", 2, INVOICES)

    items = inbox_items(db)
    assert len(items) == CUSTOMERS + INVOICES
    assert {i.source for i in items} == {"sync"} and {i.status for i in items} == {"pending"}
    assert {i.event_type for i in items} == {"customer.synced", "invoice.synced"}
    prefix = f"evt_snp_{customers.id.removeprefix('sync_')}_"
    assert all(
        i.event_id == prefix + json.loads(i.payload)["data"]["object"]["id"]
        for i in items
        if i.event_type == "customer.synced"
    )
    apply()

    contacts = {row.stripe_customer_id: row for row in rows(db, tables.contacts)}
    stripe_customers = all_objects(seeded, "/v1/customers")
    assert len(contacts) == CUSTOMERS
    for customer in stripe_customers:
        row = contacts[customer["id"]]
        assert row.email == customer["email"] and row.name == customer["name"]
        assert row.phone == customer["phone"]
        assert row.address == customer["address"]
        assert row.metadata == customer["metadata"]
        assert row.stripe_created == customer["created"]
        assert row.livemode is False and row.archived is False
        assert row.connection_id == connection.id

    found = {row.stripe_invoice_id: row for row in rows(db, tables.invoices)}
    stripe_invoices = all_objects(seeded, "/v1/invoices")
    assert len(found) == INVOICES
    for invoice in stripe_invoices:
        row = found[invoice["id"]]
        for column in ("number", "amount_due", "amount_paid", "amount_remaining", "total"):
            assert row._mapping[column] == invoice[column], column
        assert row.currency == invoice["currency"] and row.status == invoice["status"]
        assert row.payment_status == mapping.invoice_payment_status(invoice)
        assert row.customer_email == invoice["customer_email"]
        assert row.customer_name == invoice["customer_name"]
        assert row.hosted_invoice_url == invoice["hosted_invoice_url"]
        assert row.due_date == invoice["due_date"]
        assert row.paid_at == invoice["status_transitions"]["paid_at"]
        assert row.metadata == invoice["metadata"]
        assert row.stripe_created == invoice["created"]
        assert row.stripe_customer_id == invoice["customer"]
        assert row.customer_id == contacts[invoice["customer"]].id
    assert {row.status for row in found.values()} >= {"paid", "open", "draft", "void"}
    # The invoices' customer fields borrowed by the contacts never overwrote the customers'.
    assert {row.applied_authority for row in contacts.values()} == {1}


@pytest.mark.acceptance
def test_a_second_backfill_is_a_new_run_and_changes_no_record(
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)
    first = [sync.backfill(db, client, connection, registry, obj=o) for o in sync.LISTS]
    apply()
    contacts = record_values(db, tables.contacts, "stripe_customer_id", CONTACT_COLUMNS)
    invoices = record_values(db, tables.invoices, "stripe_invoice_id", INVOICE_COLUMNS)

    again = [sync.backfill(db, client, connection, registry, obj=o) for o in sync.LISTS]
    assert {r.id for r in again}.isdisjoint({r.id for r in first})
    assert [(r.status, r.objects, r.resumed_from) for r in again] == [
        ("done", CUSTOMERS, 0),
        ("done", INVOICES, 0),
    ]
    apply()
    assert record_values(db, tables.contacts, "stripe_customer_id", CONTACT_COLUMNS) == contacts
    assert record_values(db, tables.invoices, "stripe_invoice_id", INVOICE_COLUMNS) == invoices
    assert len(rows(db, tables.contacts)) == CUSTOMERS
    assert len(rows(db, tables.invoices)) == INVOICES
    runs, more = page_runs(db, limit=10)
    assert [r["id"] for r in runs] == [r.id for r in reversed(first + again)] and not more


@pytest.mark.acceptance
def test_a_second_backfill_leaves_updated_at_alone(
    monkeypatch: pytest.MonkeyPatch,
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)
    sync.backfill(db, client, connection, registry, obj="customers")
    apply()
    before = record_values(db, tables.contacts, "stripe_customer_id", ("updated_at",))
    later = SimpleNamespace(time=lambda: time.time() + 2, monotonic=time.monotonic)
    monkeypatch.setattr(sync, "time", later)  # a later second: the snapshots apply
    sync.backfill(db, client, connection, registry, obj="customers")
    monkeypatch.undo()
    apply()
    assert record_values(db, tables.contacts, "stripe_customer_id", ("updated_at",)) == before


@pytest.mark.acceptance
def test_a_failed_backfill_resumes_after_its_last_page(
    per_page: None,
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)  # retries=0
    seeded.fault("/v1/customers", delay=0.001)  # page 1: fine
    seeded.fault("/v1/customers", status=500, count=5)  # page 2: Stripe fails
    with pytest.raises(errors.StripeUnavailable, match="HTTP 500"):
        sync.backfill(db, client, connection, registry, obj="customers", holder="a:1")
    (failed,) = page_runs(db)[0]
    row = run_row(db, failed["id"])
    assert row.status == "failed" and "HTTP 500" in row.error
    assert (row.cursor, row.pages, row.objects) == ("cus_000151", 1, 100)
    assert row.holder is None and row.finished_at is None
    assert len(rows(db, tables.inbox_items)) == 100  # page 1 committed with its checkpoint

    seeded.clear_faults()
    seeded.clear_requests()
    resumed = sync.backfill(db, client, connection, registry, obj="customers", holder="b:2")
    assert resumed.id == failed["id"]
    assert resumed.resumed_from == 100
    assert (resumed.status, resumed.pages, resumed.objects, resumed.enqueued) == (
        "done",
        3,
        CUSTOMERS,
        CUSTOMERS,
    )
    assert resumed.error is None
    requests = gets(seeded, "/v1/customers")
    assert [r["query"].get("starting_after") for r in requests] == ["cus_000151", "cus_000051"]
    apply()
    assert len(rows(db, tables.contacts)) == CUSTOMERS
    assert len(page_runs(db)[0]) == 1


@pytest.mark.acceptance
@pytest.mark.parametrize(
    ("commit_max", "expected"), [(1000, [(3, 250)]), (150, [(2, 200), (3, 250)])]
)
def test_fast_pages_are_committed_together(
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    monkeypatch: pytest.MonkeyPatch,
    commit_max: int,
    expected: list[tuple[int, int]],
) -> None:
    monkeypatch.setattr(sync, "COMMIT_EVERY", 60.0)
    monkeypatch.setattr(sync, "COMMIT_MAX", commit_max)
    connection = link(db, settings, seeded)
    seen: list[tuple[int, int]] = []
    run = sync.backfill(
        db,
        stripe_of(db, settings, connection),
        connection,
        registry,
        obj="customers",
        progress=lambda r: seen.append((r.pages, r.objects)),
    )
    assert seen == expected
    assert (run.status, run.pages, run.objects, run.enqueued) == ("done", 3, 250, 250)
    assert len(rows(db, tables.inbox_items)) == CUSTOMERS


@pytest.mark.acceptance
def test_pages_read_before_a_failure_are_kept_when_pages_are_batched(
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync, "COMMIT_EVERY", 60.0)  # pages faster than commits
    connection = link(db, settings, seeded)
    seeded.fault("/v1/customers", delay=0.001)  # page 1: fine
    seeded.fault("/v1/customers", status=500, count=5)  # page 2: Stripe fails
    with pytest.raises(errors.StripeUnavailable):
        sync.backfill(
            db, stripe_of(db, settings, connection), connection, registry, obj="customers"
        )
    (failed,) = page_runs(db)[0]
    assert failed["status"] == "failed"
    assert (failed["pages"], failed["objects"]) == (1, 100)
    assert run_row(db, failed["id"]).cursor == "cus_000151"


@pytest.mark.acceptance
def test_ctrl_c_interrupts_a_backfill_that_then_resumes(
    per_page: None,
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)

    def ctrl_c(run: sync.Run) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync.backfill(db, client, connection, registry, obj="customers", progress=ctrl_c)
    (interrupted,) = page_runs(db)[0]
    assert interrupted["status"] == "interrupted"
    assert "interrupted" in interrupted["error"]
    assert (interrupted["pages"], interrupted["objects"]) == (1, 100)
    assert run_row(db, interrupted["id"]).cursor == "cus_000151"

    resumed = sync.backfill(db, client, connection, registry, obj="customers")
    assert (resumed.id, resumed.resumed_from, resumed.status) == (interrupted["id"], 100, "done")
    assert (resumed.pages, resumed.objects) == (3, CUSTOMERS)
    apply()
    assert len(rows(db, tables.contacts)) == CUSTOMERS


@pytest.mark.acceptance
def test_a_backfill_live_in_another_process_is_refused(
    per_page: None, db: Database, settings: Settings, seeded: FakeStripe, registry: flows.Registry
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)
    refused: list[errors.Conflict] = []

    def second(run: sync.Run) -> None:
        if run.pages == 1:
            with pytest.raises(errors.Conflict) as caught:
                sync.backfill(db, client, connection, registry, obj="customers", holder="b:2")
            refused.append(caught.value)

    run = sync.backfill(
        db, client, connection, registry, obj="customers", holder="a:1", progress=second
    )
    assert run.status == "done" and run.objects == CUSTOMERS
    (conflict,) = refused
    assert "a:1" in str(conflict) and "100 objects so far" in str(conflict)
    # Other objects, or another `since`, are other runs: not refused.
    assert len(page_runs(db)[0]) == 1


@pytest.mark.acceptance
def test_a_crashed_backfill_is_taken_over_when_its_lease_runs_out(
    per_page: None,
    monkeypatch: pytest.MonkeyPatch,
    db: Database,
    settings: Settings,
    seeded: FakeStripe,
    registry: flows.Registry,
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)

    def crash(run: sync.Run) -> None:
        raise SystemExit(9)

    with monkeypatch.context() as patch:  # a kill -9: nothing recorded after the last page
        patch.setattr(sync, "_end", lambda *args, **kwargs: None)
        with pytest.raises(SystemExit):
            sync.backfill(
                db, client, connection, registry, obj="customers", holder="a:1", progress=crash
            )
    (crashed,) = page_runs(db)[0]
    assert crashed["status"] == "running"
    with pytest.raises(errors.Conflict):
        sync.backfill(db, client, connection, registry, obj="customers", holder="b:2")
    with db.write() as conn:
        conn.execute(
            tables.sync_runs.update()
            .where(tables.sync_runs.c.id == crashed["id"])
            .values(lease_until=time.time() - 1)
        )
    run = sync.backfill(db, client, connection, registry, obj="customers", holder="b:2")
    assert (run.id, run.resumed_from, run.status, run.objects) == (
        crashed["id"],
        100,
        "done",
        CUSTOMERS,
    )


@pytest.mark.acceptance
def test_since_filters_on_created(
    db: Database, settings: Settings, seeded: FakeStripe, registry: flows.Registry
) -> None:
    connection = link(db, settings, seeded)
    client = stripe_of(db, settings, connection)
    since = int(seeded.v1("get", "/v1/customers/cus_000200")["created"])
    run = sync.backfill(db, client, connection, registry, obj="customers", since=since)
    assert (run.status, run.since, run.objects, run.pages) == ("done", since, 51, 1)
    (request,) = gets(seeded, "/v1/customers")
    assert request["query"]["created"] == {"gte": str(since)}
    stored = {json.loads(i.payload)["data"]["object"]["id"] for i in inbox_items(db)}
    assert stored == {f"cus_{n:06d}" for n in range(200, 251)}
    # A run without `since` is another run.
    other = sync.backfill(db, client, connection, registry, obj="customers")
    assert other.id != run.id and other.since is None and other.objects == CUSTOMERS


@pytest.mark.acceptance
def test_locations_backfill_is_a_watcher_poll(
    db: Database, settings: Settings, live: FakeStripe, registry: flows.Registry
) -> None:
    connection = link(db, settings, live)
    client = stripe_of(db, settings, connection)
    location = live.create_location("Backfilled", {"line1": "1 Main", "country": "US"})
    try:
        run = sync.backfill(db, client, connection, registry, obj="locations")
        assert (run.status, run.object, run.objects) == ("done", "locations", 1)
        assert run.enqueued == 1
        (item,) = rows(db, tables.inbox_items)
        assert (item.event_type, item.source) == ("terminal.location.created", "watcher")
        again = sync.backfill(db, client, connection, registry, obj="locations")
        assert (again.objects, again.enqueued) == (1, 0)
    finally:
        live.delete_location(location["id"])


# -- ordering of snapshots against real events -----------------------------------------------


def _enqueue(db: Database, connection_id: str, event: dict[str, Any], source: str) -> None:
    with db.write() as conn:
        inbox.enqueue_many(
            conn,
            [inbox.Arrival(connection_id, event, json.dumps(event).encode(), source, True)],
        )


def _synced(event_factory: EventFactory, customer: dict[str, Any], created: int) -> dict[str, Any]:
    return event_factory(
        "customer.synced", object=customer, created=created, id=f"evt_snp_run_{customer['id']}"
    )


def _contact_name(db: Database, customer_id: str) -> str:
    (row,) = rows(db, tables.contacts, tables.contacts.c.stripe_customer_id == customer_id)
    return str(row.name)


@pytest.mark.parametrize("synced_first", [True, False])
def test_a_real_event_wins_a_same_second_tie_with_a_snapshot(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    apply: Callable[[], None],
    synced_first: bool,
) -> None:
    now = int(time.time())
    base = {"id": "cus_tie", "email": "tie@example.com"}
    synced = _synced(event_factory, {**base, "name": "From the list"}, now)
    real = event_factory("customer.updated", object={**base, "name": "From the event"}, created=now)
    for event, source in [(synced, "sync"), (real, "webhook")][:: 1 if synced_first else -1]:
        _enqueue(db, connection.id, event, source)
        apply()  # one at a time: each arrival order is exercised
    assert _contact_name(db, "cus_tie") == "From the event"


@pytest.mark.parametrize("synced_first", [True, False])
def test_a_snapshot_beats_a_real_event_of_an_earlier_second(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    apply: Callable[[], None],
    synced_first: bool,
) -> None:
    now = int(time.time())
    base = {"id": "cus_late", "email": "late@example.com"}
    synced = _synced(event_factory, {**base, "name": "Read just now"}, now)
    real = event_factory("customer.updated", object={**base, "name": "Older"}, created=now - 1)
    for event, source in [(synced, "sync"), (real, "webhook")][:: 1 if synced_first else -1]:
        _enqueue(db, connection.id, event, source)
        apply()
    assert _contact_name(db, "cus_late") == "Read just now"


def test_a_snapshot_never_resurrects_a_deleted_customer_of_the_same_second(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    apply: Callable[[], None],
) -> None:
    now = int(time.time())
    base = {"id": "cus_gone", "email": "gone@example.com", "name": "Gone"}
    _enqueue(
        db, connection.id, event_factory("customer.deleted", object=base, created=now), "webhook"
    )
    apply()
    _enqueue(db, connection.id, _synced(event_factory, base, now), "sync")
    apply()
    (row,) = rows(db, tables.contacts)
    assert row.archived is True


# -- reconciliation ---------------------------------------------------------------------------


def _make_activity(live: FakeStripe) -> list[dict[str, Any]]:
    made = [live.create_customer(email=f"r{next(_numbers)}@example.com") for _ in range(3)]
    live.update_customer(made[0]["id"], name="Renamed")
    return made


def _events_since(live: FakeStripe, since: int) -> set[str]:
    return {e["id"] for e in live.events(created={"gte": since})}


@pytest.mark.acceptance
def test_reconcile_enqueues_every_missed_event_once(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    connection = link(db, settings, live)
    client = stripe_of(db, settings, connection)
    since = int(time.time()) - 1
    made = _make_activity(live)
    expected = _events_since(live, since)
    assert len(expected) >= 4
    live.clear_requests()

    run = sync.reconcile(db, client, connection, registry, settings, since=since)
    assert (run.kind, run.object, run.status, run.since) == ("reconcile", "events", "done", since)
    assert run.enqueued == len(expected) and run.objects == len(expected)
    items = rows(db, tables.inbox_items)
    assert {i.event_id for i in items} == expected
    assert {i.source for i in items} == {"reconcile"}
    (request,) = gets(live, "/v1/events")
    assert request["query"]["created"] == {"gte": str(since)}
    # No webhook ever came while Stripe lists events: the endpoint is probably off.
    assert run.warning is not None and "no webhook received ever" in run.warning
    assert run_row(db, run.id).warning == run.warning

    again = sync.reconcile(db, client, connection, registry, settings, since=since)
    assert again.id != run.id
    assert (again.status, again.enqueued, again.objects) == ("done", 0, len(expected))
    assert again.warning is None
    assert len(rows(db, tables.inbox_items)) == len(expected)

    apply()
    names = {r.stripe_customer_id: r.name for r in rows(db, tables.contacts)}
    assert names[made[0]["id"]] == "Renamed"
    assert {c["id"] for c in made} <= set(names)


@pytest.mark.acceptance
def test_reconcile_skips_events_older_than_since(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    registry: flows.Registry,
    event_factory: EventFactory,
) -> None:
    """A server that ignores `created[gte]` (localstripe) lists older events too."""
    connection = link(db, settings, live)
    client = stripe_of(db, settings, connection)
    since = int(time.time()) - 60
    old = event_factory("customer.updated", created=since - 1)
    new = event_factory("customer.updated", created=since)
    page = {"object": "list", "url": "/v1/events", "has_more": False, "data": [new, old]}
    live.fault("/v1/events", status=200, body=page)
    run = sync.reconcile(db, client, connection, registry, settings, since=since)
    assert (run.objects, run.enqueued) == (2, 1)
    assert [i.event_id for i in rows(db, tables.inbox_items)] == [new["id"]]


@pytest.mark.acceptance
def test_no_warning_when_webhooks_arrive(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    registry: flows.Registry,
    event_factory: EventFactory,
) -> None:
    connection = link(db, settings, live)
    client = stripe_of(db, settings, connection)
    _enqueue(db, connection.id, event_factory("customer.created"), "webhook")
    since = int(time.time()) - 1
    _make_activity(live)
    run = sync.reconcile(db, client, connection, registry, settings, since=since)
    assert run.enqueued >= 4 and run.warning is None


@pytest.mark.acceptance
def test_the_first_reconcile_looks_back_the_window_and_later_ones_overlap(
    db: Database, settings: Settings, live: FakeStripe, registry: flows.Registry
) -> None:
    connection = link(db, settings, live)
    client = stripe_of(db, settings, connection)
    start = time.time()
    first = sync.reconcile(db, client, connection, registry, settings)
    assert first.since == pytest.approx(start - settings.reconcile_window, abs=5)
    second = sync.reconcile(db, client, connection, registry, settings)
    assert second.since == pytest.approx(first.started_at - sync.RECONCILE_OVERLAP, abs=2)
    old = sync.reconcile(db, client, connection, registry, settings, since=0)
    assert old.since == pytest.approx(time.time() - sync.EVENTS_KEPT, abs=5)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("last_webhook", "newest_event", "missed", "expected"),
    [
        (None, int(NOW) - 10, 3, "no webhook received ever"),  # never a webhook, events missed
        (NOW - 7200, int(NOW) - 10, 3, "no webhook received since 2027-01-15T06:00:00Z"),
        (NOW - 60, int(NOW) - 10, 3, None),  # a recent webhook: the endpoint works
        (NOW - 3600, int(NOW) - 10, 3, None),  # exactly at the threshold
        (None, int(NOW) - 10, 0, None),  # nothing missed
        (NOW - 7200, None, 0, None),
        (NOW - 7200, int(NOW) - 7300, 2, None),  # the missed events predate the last webhook
    ],
)
def test_silence_warning(
    last_webhook: float | None, newest_event: int | None, missed: int, expected: str | None
) -> None:
    warning = sync.silence_warning(
        last_webhook, newest_event, missed=missed, threshold=3600, connection_id="conn_x", now=NOW
    )
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning
        assert warning.startswith("conn_x: ") and f"{missed} events" in warning
        assert "webhook endpoint is enabled" in warning


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ["customers", "invoices", "locations"]),
        ("customers,invoices", ["customers", "invoices"]),
        (" invoices , customers,invoices ", ["invoices", "customers"]),
        ("locations", ["locations"]),
    ],
)
def test_parse_objects(text: str | None, expected: list[str]) -> None:
    assert sync.parse_objects(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("charges", "--objects: unknown charges; choose from customers,invoices,locations"),
        ("customers,bogus,x", "unknown bogus, x"),
        ("", "unknown (none given)"),
        (" , ", "unknown (none given)"),
    ],
)
def test_parse_objects_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        sync.parse_objects(text)
    assert message in str(caught.value)


# -- refetch mode -----------------------------------------------------------------------------


@pytest.fixture
def refetching(
    db: Database, settings: Settings, registry: flows.Registry
) -> Callable[[], worker.Worker]:
    """A worker that re-reads objects for `refetch` connections (made before it is called)."""

    def make() -> worker.Worker:
        cache = connections.Cache(db, vault.load(settings), rps=0, retries=0)
        applier = worker.Worker(db, registry, settings, stripe=cache)
        drain(applier)
        return applier

    return make


@pytest.mark.acceptance
def test_refetch_applies_stripes_current_object(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    event_factory: EventFactory,
    refetching: Callable[[], worker.Worker],
) -> None:
    refetch = link(db, settings, live, ordering="refetch")
    payload = link(db, settings, live, ordering="payload")
    current = live.create_customer(email=f"now{next(_numbers)}@example.com", name="Current")
    gone = live.create_customer(email=f"gone{next(_numbers)}@example.com", name="Gone")
    live.delete_customer(gone["id"])
    old = int(time.time()) - 100
    stale = event_factory("customer.updated", object={**current, "name": "Stale"}, created=old)
    late = event_factory("customer.updated", object=gone, created=old)
    for connection in (refetch, payload):
        _enqueue(db, connection.id, stale, "webhook")
        _enqueue(db, connection.id, late, "webhook")
    live.clear_requests()
    started = int(time.time())

    applier = refetching()
    assert applier.stats.done == 4 and applier.stats.failed == applier.stats.dead == 0

    def contact(connection: connections.Connection, customer_id: str) -> Any:
        (row,) = rows(
            db,
            tables.contacts,
            tables.contacts.c.connection_id == connection.id,
            tables.contacts.c.stripe_customer_id == customer_id,
        )
        return row

    fresh = contact(refetch, current["id"])
    assert fresh.name == "Current" and fresh.archived is False
    assert fresh.applied_created >= started  # applied as of the read
    assert contact(refetch, gone["id"]).archived is True  # turned into customer.deleted
    assert contact(payload, current["id"]).name == "Stale"  # as delivered
    assert contact(payload, gone["id"]).archived is False
    reads = [r["path"] for r in live.requests()]
    assert sorted(reads) == sorted(
        [f"/v1/customers/{current['id']}", f"/v1/customers/{gone['id']}"]
    )


@pytest.mark.acceptance
def test_refetch_while_stripe_is_down_waits_uncharged_for_a_retry(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    event_factory: EventFactory,
    refetching: Callable[[], worker.Worker],
) -> None:
    refetch = link(db, settings, live, ordering="refetch")
    customer = live.create_customer(email=f"down{next(_numbers)}@example.com", name="Up")
    event = event_factory("customer.updated", object=customer)
    _enqueue(db, refetch.id, event, "webhook")
    live.fault("/v1/customers/", status=503, count=None)
    applier = refetching()
    # Stripe being away is not the event's fault (issue 13): it waits, no attempt charged.
    assert (applier.stats.failed, applier.stats.dead) == (0, 0)
    (item,) = rows(db, tables.inbox_items)
    assert (item.status, item.attempts) == ("pending", 0)
    assert "waiting for Stripe" in item.last_error and "HTTP 503" in item.last_error
    assert item.run_after > time.time()
    assert rows(db, tables.contacts) == []

    live.clear_faults()
    with db.write() as conn:
        conn.execute(tables.inbox_items.update().values(run_after=time.time()))
    applier = refetching()
    assert applier.stats.done == 1
    assert rows(db, tables.inbox_items)[0].status == "done"
    assert rows(db, tables.contacts)[0].name == "Up"


@pytest.mark.acceptance
def test_refetch_with_a_revoked_key_waits_uncharged_never_dead(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    event_factory: EventFactory,
    refetching: Callable[[], worker.Worker],
) -> None:
    key = f"sk_test_refetch_revoked_{next(_numbers):04d}"
    refetch = link(db, settings, live, ordering="refetch", secret_key=key)
    live.revoke(key)
    customer = live.create_customer(email=f"rev{next(_numbers)}@example.com")
    _enqueue(db, refetch.id, event_factory("customer.updated", object=customer), "webhook")
    live.clear_requests()
    applier = refetching()
    # A refused key is the connection's fault, not the event's (issue 13): the item waits,
    # uncharged, until the key is fixed; it never goes dead for it.
    assert (applier.stats.dead, applier.stats.failed) == (0, 0)
    (item,) = rows(db, tables.inbox_items)
    assert (item.status, item.attempts) == ("pending", 0)
    assert "refused the key" in item.last_error
    assert item.run_after > time.time()
    assert len(live.requests()) == 1  # not retried at once


@pytest.mark.acceptance
def test_refetch_leaves_synced_and_unknown_objects_alone(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    event_factory: EventFactory,
    refetching: Callable[[], worker.Worker],
) -> None:
    refetch = link(db, settings, live, ordering="refetch")
    synced = event_factory(
        "customer.synced", object={"id": "cus_syncedonly", "object": "customer", "name": "Listed"}
    )
    _enqueue(db, refetch.id, synced, "sync")
    live.clear_requests()
    applier = refetching()
    assert applier.stats.done == 1
    assert live.requests() == []
    assert rows(db, tables.contacts)[0].name == "Listed"


# -- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The app without the shared `client`'s connection: the test links its own."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.acceptance
def test_sync_runs_api(
    db: Database,
    settings: Settings,
    live: FakeStripe,
    registry: flows.Registry,
    api: TestClient,
    make_key: MakeKey,
) -> None:
    connection = link(db, settings, live)
    client = stripe_of(db, settings, connection)
    since = int(time.time())
    made = [
        sync.reconcile(db, client, connection, registry, settings, since=since + i)
        for i in range(3)
    ]
    headers = make_key("events.readonly").headers

    response = api.get("/v1/sync-runs", params={"limit": 2}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["id"] for r in body["data"]] == [made[2].id, made[1].id]
    assert body["has_more"] is True
    first = body["data"][0]
    assert first == made[2].model_dump(mode="json")
    assert (first["kind"], first["object"], first["status"]) == ("reconcile", "events", "done")
    assert first["since"].endswith("Z") and first["finished_at"] is not None

    response = api.get(
        "/v1/sync-runs", params={"limit": 2, "starting_after": made[1].id}, headers=headers
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["data"]] == [made[0].id]
    assert response.json()["has_more"] is False

    response = api.get(f"/v1/sync-runs/{made[0].id}", headers=headers)
    assert response.status_code == 200 and response.json() == made[0].model_dump(mode="json")

    response = api.get("/v1/sync-runs", params={"starting_after": "sync_nope"}, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"
    response = api.get("/v1/sync-runs/sync_nope", headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"
    response = api.get("/v1/sync-runs/bad%20id", headers=headers)
    assert response.status_code == 404

    other = make_key("contacts.readonly").headers
    for path in ("/v1/sync-runs", f"/v1/sync-runs/{made[0].id}"):
        response = api.get(path, headers=other)
        assert response.status_code == 403
        assert response.json()["error"]["scope"] == "events.readonly"
        assert api.get(path).status_code == 401
    assert api.get("/v1/sync-runs", headers=make_key("admin").headers).status_code == 200
