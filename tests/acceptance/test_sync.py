"""Pulling from Stripe, end to end: `snapshots sync` (backfill, resume after a crash,
reconciliation) as real processes against a real localstripe, checked through the REST API of a
real `snapshots serve` (whose embedded worker drains the inbox)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.localstripe import LocalStripe

from .conftest import Snapshots, eventually, stop
from .test_end_to_end import expected_invoice, iso, list_all, subset

pytestmark = pytest.mark.acceptance

STRIPE_KEY = "sk_test_syncacceptance1234"
WEBHOOK_SECRET = "whsec_sync_acceptance_0123456789"
SCOPES = ("contacts.readonly", "invoices.readonly", "events.readonly")
CUSTOMERS = 500
DRAIN_TIMEOUT = 60.0  # seconds for the worker to apply everything a sync enqueued
WEBHOOK_TIMEOUT = 30.0  # seconds for localstripe's webhooks to arrive and be applied
ADDRESS_KEYS = ("line1", "line2", "city", "state", "postal_code", "country")
UNFINISHED_ITEMS = ("pending", "processing", "failed", "dead")


# -- setting up --------------------------------------------------------------------------------


def connect(deployment: Snapshots, ls: LocalStripe) -> dict[str, Any]:
    """`snapshots connect stripe` aimed at localstripe (no webhook is registered here)."""
    connection: dict[str, Any] = deployment.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        STRIPE_KEY,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--api-base",
        ls.api_base,
        "--name",
        "shop",
        "--json",
    )
    assert connection["id"].startswith("conn_") and connection["api_base"] == ls.api_base
    return connection


def create_key(deployment: Snapshots) -> str:
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    created = deployment.cli_json("keys", "create", "--name", "t", *scopes, "--json")
    secret: str = created["secret"]
    return secret


FIRST = ["Ada", "Zoë", "José", "Mary-Jane", "Li", "Åsa", "Chinedu", "O'Neil", "Renée", "Søren"]
LAST = ["Lovelace", "Ångström", "Núñez", "van der Berg", "王", "Smith", "D'Arcy", "Müller"]
CITIES = [
    ("London", "LDN", "N1 9GU", "GB"),
    ("San Francisco", "CA", "94105", "US"),
    ("Paris", None, "75001", "FR"),
    ("München", "BY", "80331", "DE"),
    ("東京", None, "100-0001", "JP"),
]


def customer_params(i: int) -> dict[str, Any]:
    """Customer `i`: varied (unicode, missing fields, partial addresses), every email unique."""
    rng = random.Random(i)
    params: dict[str, Any] = {
        "payment_method": "pm_card_visa",
        "invoice_settings": {"default_payment_method": "pm_card_visa"},
    }
    if i % 17 != 3:
        params["name"] = f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}"
    if i % 19 != 5:
        domain = rng.choice(["example.com", "example.org", "mail.example.net"])
        params["email"] = f"user.{i}+{rng.randrange(1000)}@{domain}"
    if i % 7 != 0:
        params["phone"] = rng.choice(
            ["+44 20 7946 {:04d}", "+1 (555) 01{:04d}", "0{:04d}-22"]
        ).format(i)
    if i % 11 != 0:
        city, state, postal_code, country = rng.choice(CITIES)
        address = {"line1": f"{i} {rng.choice(['High St', 'Rue de Rivoli', 'Main Street'])}"}
        if i % 3 == 0:
            address["line2"] = f"Apt {rng.randrange(1, 99)}"
        address |= {"city": city, "postal_code": postal_code, "country": country}
        if state is not None and i % 5 != 0:
            address["state"] = state
        params["address"] = address
    metadata = {}
    if i % 4 != 0:
        metadata["crm_tier"] = rng.choice(["gold", "silver", "bronze"])
    if i % 6 == 1:
        metadata["note"] = f"imported #{i} — ünïcode"
    if metadata:
        params["metadata"] = metadata
    return params


def make_customers(
    ls: LocalStripe, count: int, *, invoices: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`count` customers, and with `invoices` one invoice each (every other one paid), made with
    the SDK on a few threads. Returns what the SDK returned, customers in creation order."""
    client = ls.client()
    plan = None
    if invoices:
        plan = client.v1.plans.create(
            {"amount": 0, "currency": "usd", "interval": "month", "product": {"name": "Base"}}
        )

    def one(i: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        customer = client.v1.customers.create(customer_params(i))  # type: ignore[arg-type]
        if plan is None:
            return customer.to_dict(), None
        # localstripe bills only a customer with a subscription.
        client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"plan": plan.id}], "trial_period_days": 30}
        )
        client.v1.invoice_items.create(
            {"customer": customer.id, "amount": 100 + 7 * i, "currency": "usd"}
        )
        invoice = client.v1.invoices.create({"customer": customer.id})
        if i % 2 == 0:
            invoice = client.v1.invoices.pay(invoice.id)
        return customer.to_dict(), invoice.to_dict()

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(one, range(count)))
    return [c for c, _ in made], [i for _, i in made if i is not None]


# -- reading back ------------------------------------------------------------------------------


def stripe_list(ls: LocalStripe, path: str) -> list[dict[str, Any]]:
    """Every object of a localstripe list, in its order, paging like Snapshots does."""
    found: list[dict[str, Any]] = []
    query = "limit=100"
    for _ in range(1000):
        body = ls.request("GET", f"{path}?{query}")
        found.extend(body["data"])
        if not body["has_more"]:
            return found
        query = f"limit=100&starting_after={body['data'][-1]['id']}"
    raise AssertionError(f"{path} did not stop paging")


def sdk_customers(ls: LocalStripe) -> list[dict[str, Any]]:
    client = ls.client()
    return [c.to_dict() for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()]


def sdk_invoices(ls: LocalStripe) -> list[dict[str, Any]]:
    client = ls.client()
    return [i.to_dict() for i in client.v1.invoices.list({"limit": 100}).auto_paging_iter()]


def expected_contact(customer: dict[str, Any], connection_id: str) -> dict[str, Any]:
    address = customer.get("address")
    return {
        "object": "contact",
        "connection_id": connection_id,
        "email": customer.get("email"),
        "name": customer.get("name"),
        "phone": customer.get("phone"),
        "address": None if address is None else {k: address.get(k) for k in ADDRESS_KEYS},
        "metadata": customer.get("metadata") or {},
        "stripe_customer_id": customer["id"],
        "stripe_created": iso(customer["created"]),
        "archived": False,
        "livemode": False,
        "test": False,
        "tags": [],
    }


def check_records(
    api: httpx.Client,
    ls: LocalStripe,
    connection_id: str,
    *,
    customers: int,
    invoices: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every contact and invoice in Snapshots is what localstripe has, and nothing else.
    Returns the contacts and invoices by Stripe id."""
    contact_list = list_all(api, "/v1/customers")
    contacts = {c["stripe_customer_id"]: c for c in contact_list}
    assert len(contacts) == len(contact_list), "a Stripe customer has two contacts"
    stripe_customers = {c["id"]: c for c in sdk_customers(ls)}
    assert len(stripe_customers) == customers
    assert set(contacts) == set(stripe_customers)
    wrong = {}
    for customer_id, customer in stripe_customers.items():
        want = expected_contact(customer, connection_id)
        got = subset(contacts[customer_id], want)
        if got != want:
            wrong[customer_id] = (got, want)
    assert not wrong, f"{len(wrong)} contacts differ from Stripe, e.g. {next(iter(wrong.items()))}"

    invoice_list = list_all(api, "/v1/invoices")
    found = {i["stripe_invoice_id"]: i for i in invoice_list}
    assert len(found) == len(invoice_list), "a Stripe invoice was logged twice"
    stripe_invoices = {i["id"]: i for i in sdk_invoices(ls)}
    assert len(stripe_invoices) == invoices
    assert set(found) == set(stripe_invoices)
    wrong = {}
    for invoice_id, invoice in stripe_invoices.items():
        want = expected_invoice(invoice, contacts[invoice["customer"]]["id"])
        want["connection_id"] = connection_id
        got = subset(found[invoice_id], want)
        if got != want:
            wrong[invoice_id] = (got, want)
    assert not wrong, f"{len(wrong)} invoices differ from Stripe, e.g. {next(iter(wrong.items()))}"
    return contacts, found


def runs_of(api: httpx.Client) -> list[dict[str, Any]]:
    return list_all(api, "/v1/sync-runs")


def drained(api: httpx.Client, *, reconciled: bool = True) -> None:
    """Nothing left to apply; with `reconciled`, the embedded worker's reconciliation ran."""
    if reconciled:
        kinds = {(r["kind"], r["status"]) for r in runs_of(api)}
        assert ("reconcile", "done") in kinds, kinds
    for status in UNFINISHED_ITEMS:
        response = api.get("/v1/events", params={"status": status, "limit": 5})
        assert response.status_code == 200, response.text
        items = response.json()["data"]
        assert items == [], f"{status} inbox items: {items}"


def wait_drained(api: httpx.Client, *, reconciled: bool = True) -> None:
    eventually(lambda: drained(api, reconciled=reconciled), timeout=DRAIN_TIMEOUT, interval=0.5)


def without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}


def check_backfill_runs(runs: list[dict[str, Any]], connection_id: str) -> None:
    assert [r["object"] for r in runs] == ["customers", "invoices"], runs
    for run in runs:
        assert run["id"].startswith("sync_")
        assert (run["kind"], run["status"], run["connection_id"]) == (
            "backfill",
            "done",
            connection_id,
        ), run
        assert (run["objects"], run["enqueued"], run["pages"]) == (CUSTOMERS, CUSTOMERS, 5), run
        assert (run["resumed_from"], run["error"], run["warning"]) == (0, None, None), run
        assert run["finished_at"] is not None


# -- 1. backfill -------------------------------------------------------------------------------


def test_backfill_500_customers_and_invoices(
    snapshots: Snapshots, localstripe: LocalStripe
) -> None:
    ls = localstripe
    made_customers, made_invoices = make_customers(ls, CUSTOMERS, invoices=True)
    assert len(made_invoices) == CUSTOMERS
    assert Counter(i["status"] for i in made_invoices) == {"paid": 250, "draft": 250}

    snapshots.cli("migrate")
    connection = connect(snapshots, ls)
    key = create_key(snapshots)

    first = snapshots.cli_json("sync", "--objects", "customers,invoices", "--json")
    check_backfill_runs(first, connection["id"])

    snapshots.serve()
    api = snapshots.api(key)
    try:
        wait_drained(api)
        contacts, invoices = check_records(
            api, ls, connection["id"], customers=CUSTOMERS, invoices=CUSTOMERS
        )
        # Spelled out once, not only derived from what localstripe lists.
        by_made = {c["id"]: c for c in made_customers}
        assert {cid: contacts[cid]["email"] for cid in by_made} == {
            cid: c.get("email") for cid, c in by_made.items()
        }
        assert Counter(i["payment_status"] for i in invoices.values()) == {
            "paid": 250,
            "draft": 250,
        }
        for made in made_invoices:
            invoice = invoices[made["id"]]
            assert invoice["amount_due"] == made["amount_due"] > 0
            assert invoice["amount_paid"] == (made["amount_due"] if made["status"] == "paid" else 0)
            assert invoice["currency"] == "usd"
            assert invoice["customer_id"] == contacts[made["customer"]]["id"]
        assert sum(c["address"] is None for c in contacts.values()) == len(
            [i for i in range(CUSTOMERS) if i % 11 == 0]
        )
        assert sum(c["email"] is None for c in contacts.values()) == len(
            [i for i in range(CUSTOMERS) if i % 19 == 5]
        )

        # The runs, through the API and the CLI.
        runs = {r["id"]: r for r in runs_of(api)}
        for run in first:
            assert runs[run["id"]] == without(run, "resumed_from"), run["id"]
        status = snapshots.cli_json("sync", "--status", "--json")
        assert status == api.get("/v1/sync-runs", params={"limit": 20}).json()["data"]

        # The inbox holds one `*.synced` item per object, from the sync.
        events = list_all(api, "/v1/events")
        synced = Counter(e["event_type"] for e in events if e["source"] == "sync")
        assert synced == {"customer.synced": CUSTOMERS, "invoice.synced": CUSTOMERS}
        assert {e["status"] for e in events if e["source"] == "sync"} == {"done"}

        # Syncing again: new runs, new inbox items, no record changed.
        before = (list_all(api, "/v1/customers"), list_all(api, "/v1/invoices"))
        second = snapshots.cli_json("sync", "--objects", "customers,invoices", "--json")
        check_backfill_runs(second, connection["id"])
        assert {r["id"] for r in second}.isdisjoint(r["id"] for r in first)
        wait_drained(api)

        # All objects: localstripe has no Terminal locations, so that one fails (exit 1, one
        # `error:` line) while customers and invoices are done.
        everything = snapshots.cli("sync", "--json", ok=False)
        assert everything.returncode == 1, everything
        errors = [line for line in everything.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), everything.stderr
        assert "locations" in errors[0] and "Traceback" not in everything.stderr

        check_backfill_runs(json.loads(everything.stdout), connection["id"])
        wait_drained(api)

        after = (list_all(api, "/v1/customers"), list_all(api, "/v1/invoices"))
        for was, now in zip(before, after, strict=True):
            assert [without(r, "updated_at") for r in now] == [
                without(r, "updated_at") for r in was
            ]
        check_records(api, ls, connection["id"], customers=CUSTOMERS, invoices=CUSTOMERS)
        runs_now = runs_of(api)
        backfills = Counter((r["object"], r["status"]) for r in runs_now if r["kind"] == "backfill")
        assert backfills == {
            ("customers", "done"): 3,
            ("invoices", "done"): 3,
            ("locations", "failed"): 1,
        }
    finally:
        api.close()


# -- 2. kill and resume ------------------------------------------------------------------------


def sync_run_row(snapshots: Snapshots) -> dict[str, Any] | None:
    """The newest sync run, read straight from the SQLite file (a CLI call takes too long to
    catch a run between two pages)."""
    path = snapshots.home / "snapshots.db"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as db:
            db.row_factory = sqlite3.Row
            row = db.execute(
                "SELECT id, status, pages, objects, cursor FROM sync_runs ORDER BY seq DESC LIMIT 1"
            ).fetchone()
    except sqlite3.OperationalError:  # locked for a moment, or no table yet
        return None
    return None if row is None else dict(row)


def customer_list_requests(log: str) -> list[dict[str, list[str]]]:
    """The query of every `GET /v1/customers` the SDK (Snapshots) sent, from the access log."""
    found = []
    for line in log.splitlines():
        if '"GET /v1/customers?' in line and "PythonBindings" in line:
            target = line.split('"GET ', 1)[1].split(" ", 1)[0]
            found.append(urllib.parse.parse_qs(urllib.parse.urlsplit(target).query))
    return found


def test_killed_sync_resumes_after_its_last_page(
    snapshots: Snapshots, localstripe: LocalStripe
) -> None:
    ls = localstripe
    make_customers(ls, CUSTOMERS, invoices=False)
    listed = [c["id"] for c in stripe_list(ls, "/v1/customers")]  # the order Snapshots pages in
    assert len(listed) == CUSTOMERS == len(set(listed))
    snapshots.cli("migrate")
    connection = connect(snapshots, ls)

    # 2 requests a second: each page of 100 takes about half a second.
    process = snapshots.popen_cli(
        "sync", "--objects", "customers", "--json", env={"SNAPSHOTS_STRIPE_RPS": "2"}
    )
    try:

        def two_pages() -> dict[str, Any]:
            assert process.poll() is None, process.communicate()
            row = sync_run_row(snapshots)
            assert row is not None and row["pages"] >= 2, row
            return row

        seen = eventually(two_pages, timeout=20, interval=0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert 2 <= seen["pages"] < 5, seen

    # Left as it was at the last committed page: running, 200 to 400 objects read.
    killed = sync_run_row(snapshots)
    assert killed is not None and killed["id"] == seen["id"]
    assert killed["status"] == "running"
    assert 200 <= killed["objects"] <= 400 and killed["objects"] == 100 * killed["pages"]
    assert killed["cursor"] == listed[killed["objects"] - 1]
    status = snapshots.cli_json("sync", "--status", "--json")
    assert [(r["id"], r["status"], r["objects"]) for r in status] == [
        (killed["id"], "running", killed["objects"])
    ]

    # Run again, without a budget: the same run carries on after its checkpoint.
    log_before = len(ls.read_log())
    [resumed] = snapshots.cli_json(
        "sync", "--objects", "customers", "--json", env={"SNAPSHOTS_STRIPE_RPS": "0"}
    )
    assert (resumed["id"], resumed["connection_id"]) == (killed["id"], connection["id"])
    assert resumed["resumed_from"] == killed["objects"]
    assert (resumed["status"], resumed["objects"], resumed["pages"]) == ("done", CUSTOMERS, 5)
    assert resumed["enqueued"] == CUSTOMERS
    assert resumed["objects"] - resumed["resumed_from"] == CUSTOMERS - killed["objects"]

    # Independently: localstripe saw the second process start after the checkpoint cursor and
    # read each remaining page once.
    requests = customer_list_requests(ls.read_log()[log_before:])
    assert requests, ls.read_log()[log_before:]
    assert requests[0].get("starting_after") == [killed["cursor"]], requests
    assert len(requests) == (CUSTOMERS - killed["objects"]) // 100, requests
    cursors = [r["starting_after"][0] for r in requests]
    assert cursors == [listed[n - 1] for n in range(killed["objects"], CUSTOMERS, 100)]

    # Applied: every customer exactly once.
    key = create_key(snapshots)
    snapshots.serve()
    with snapshots.api(key) as api:
        wait_drained(api, reconciled=False)
        contacts = list_all(api, "/v1/customers")
        assert len(contacts) == CUSTOMERS
        assert sorted(c["stripe_customer_id"] for c in contacts) == sorted(listed)
        synced = [e for e in list_all(api, "/v1/events") if e["source"] == "sync"]
        assert len(synced) == CUSTOMERS
        assert {e["status"] for e in synced} == {"done"}
        assert len({e["event_id"] for e in synced}) == CUSTOMERS
        assert api.get(f"/v1/sync-runs/{killed['id']}").json() == without(resumed, "resumed_from")


# -- 3. reconcile after downtime ---------------------------------------------------------------


def stripe_event_ids(ls: LocalStripe) -> list[str]:
    return [e["id"] for e in stripe_list(ls, "/v1/events")]


def test_reconcile_fetches_what_webhooks_missed_while_serve_was_down(
    snapshots: Snapshots, localstripe: LocalStripe
) -> None:
    ls = localstripe
    snapshots.cli("migrate")
    connection = connect(snapshots, ls)
    webhook_url = f"{snapshots.base_url}/webhooks/stripe/{connection['id']}"
    ls.register_webhook(webhook_url, WEBHOOK_SECRET)
    key = create_key(snapshots)
    client = ls.client()

    serve = snapshots.serve()
    api = snapshots.api(key)
    try:
        # The embedded worker's first reconciliation runs at start; let it finish first, so
        # what follows arrives by webhook only.
        def first_reconcile() -> dict[str, Any]:
            reconciles = [r for r in runs_of(api) if r["kind"] == "reconcile"]
            assert [r["status"] for r in reconciles] == ["done"], reconciles
            return reconciles[0]

        assert eventually(first_reconcile, timeout=WEBHOOK_TIMEOUT)["enqueued"] == 0

        ann = client.v1.customers.create(customer_params(1) | {"name": "Ann Before"})
        ben = client.v1.customers.create(customer_params(2) | {"name": "Ben Leaving"})

        def by_webhook() -> dict[str, Any]:
            items = {e["event_id"]: e for e in list_all(api, "/v1/events")}
            sent = stripe_event_ids(ls)
            assert sorted(items) == sorted(sent), (items, sent)
            assert {(e["source"], e["status"]) for e in items.values()} <= {
                ("webhook", "done"),
                ("webhook", "ignored"),
            }, items
            contacts = {c["stripe_customer_id"]: c for c in list_all(api, "/v1/customers")}
            assert set(contacts) == {ann.id, ben.id}, contacts
            return contacts

        contacts = eventually(by_webhook, timeout=WEBHOOK_TIMEOUT)
        assert contacts[ann.id]["name"] == "Ann Before"
        before_downtime = set(stripe_event_ids(ls))
        # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
        assert stop(serve.process) in (0, -signal.SIGTERM)
        log = serve.log_path.read_text()
        assert any("snapshots.worker" in line and "stopped" in line for line in log.splitlines())

        # Serve is down: every webhook of these fails, and localstripe never retries.
        log_before = len(ls.read_log())
        client.v1.customers.update(ann.id, {"name": "Ann After", "metadata": {"crm_tier": "vip"}})
        client.v1.customers.delete(ben.id)
        cal = client.v1.customers.create(customer_params(3) | {"email": "cal@example.com"})
        plan = client.v1.plans.create(
            {"amount": 0, "currency": "usd", "interval": "month", "product": {"name": "Base"}}
        )
        client.v1.subscriptions.create(
            {"customer": cal.id, "items": [{"plan": plan.id}], "trial_period_days": 30}
        )
        client.v1.invoice_items.create({"customer": cal.id, "amount": 4200, "currency": "usd"})
        invoice = client.v1.invoices.create({"customer": cal.id})
        invoice = client.v1.invoices.pay(invoice.id)
        missed = [e for e in stripe_event_ids(ls) if e not in before_downtime]
        assert len(missed) >= 6, missed

        def all_failed() -> None:
            log = ls.read_log()[log_before:]
            failed = [line for line in log.splitlines() if 'webhook "' in line and "failed" in line]
            assert len(failed) == len(missed), log
            assert "successfully delivered" not in log

        eventually(all_failed, timeout=WEBHOOK_TIMEOUT)

        # Back up (same database): nothing arrived while it was down.
        serve = snapshots.serve()
        assert {e["event_id"] for e in list_all(api, "/v1/events")} == before_downtime

        [run] = snapshots.cli_json("sync", "--reconcile", "--json")
        assert (run["kind"], run["object"], run["status"]) == ("reconcile", "events", "done"), run
        assert run["connection_id"] == connection["id"]
        assert run["enqueued"] == len(missed), (run, missed)
        assert run["objects"] >= len(missed)
        assert run["warning"] is None and run["error"] is None

        wait_drained(api)
        contacts = {c["stripe_customer_id"]: c for c in list_all(api, "/v1/customers")}
        assert set(contacts) == {ann.id, ben.id, cal.id}
        assert (contacts[ann.id]["name"], contacts[ann.id]["archived"]) == ("Ann After", False)
        assert contacts[ann.id]["metadata"]["crm_tier"] == "vip"
        assert contacts[ben.id]["archived"] is True
        assert contacts[cal.id]["email"] == "cal@example.com"
        assert contacts[cal.id]["archived"] is False
        [logged] = list_all(api, "/v1/invoices")
        want = expected_invoice(invoice.to_dict(), contacts[cal.id]["id"])
        assert subset(logged, want) == want
        assert (logged["amount_paid"], logged["payment_status"]) == (4200, "paid")

        # Again: everything is known, nothing is enqueued twice.
        [again] = snapshots.cli_json("sync", "--reconcile", "--json")
        assert again["id"] != run["id"] and again["status"] == "done"
        assert again["enqueued"] == 0 and again["objects"] >= len(missed), again

        items = list_all(api, "/v1/events")
        counts = Counter(e["event_id"] for e in items)
        assert set(counts.values()) == {1}, [k for k, n in counts.items() if n > 1]
        assert set(counts) == set(stripe_event_ids(ls))
        sources = {e["event_id"]: e["source"] for e in items}
        assert {sources[e] for e in missed} == {"reconcile"}
        assert {sources[e] for e in before_downtime} == {"webhook"}
        assert {e["status"] for e in items} <= {"done", "ignored"}
    finally:
        api.close()
