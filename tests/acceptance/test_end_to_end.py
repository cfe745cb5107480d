"""End to end, through the public surfaces only: the `snapshots` CLI, `snapshots serve` and
`snapshots worker` as real processes, localstripe as Stripe (real signed webhooks), the SDK to
make changes in "Stripe" and the REST API to read what Snapshots made of them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support.localstripe import LocalStripe

from .conftest import Snapshots, eventually, free_port, stop

pytestmark = pytest.mark.acceptance

WEBHOOK_SECRET = "whsec_acceptance_0123456789"
STRIPE_KEY = "sk_test_acceptance1234"
APPLY_TIMEOUT = 30.0  # seconds for webhooks to arrive and be applied
# What the default flows do with each event type localstripe sends; every other type is ignored.
APPLIED_TYPES = frozenset(
    {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "invoice.created",
        "invoice.payment_succeeded",
        "customer.subscription.created",  # the prebuilt timeline flow
    }
)
ADDRESS_KEYS = ("line1", "line2", "city", "state", "postal_code", "country")


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def connect(deployment: Snapshots, ls: LocalStripe, name: str) -> dict[str, Any]:
    """`snapshots connect stripe ... --json`, checked, and the webhook registered."""
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
        name,
        "--json",
    )
    assert connection["id"].startswith("conn_")
    assert connection["name"] == name
    assert connection["livemode"] is False
    assert connection["api_base"] == ls.api_base
    assert connection["secret_key"].endswith(STRIPE_KEY[-4:])
    assert STRIPE_KEY not in str(connection) and WEBHOOK_SECRET not in str(connection)
    webhook_url = f"{deployment.base_url}/webhooks/stripe/{connection['id']}"
    assert connection["webhook_url"] == webhook_url
    ls.register_webhook(webhook_url, WEBHOOK_SECRET)
    return connection


def create_key(deployment: Snapshots, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    created = deployment.cli_json("keys", "create", "--name", "acceptance", *args, "--json")
    assert sorted(created["scopes"]) == sorted(scopes)
    secret: str = created["secret"]
    assert secret.startswith("snp_")
    return secret


def list_all(api: httpx.Client, path: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, page by page (100 a page)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    for _ in range(100):
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["data"])
        if not body["has_more"]:
            return found
        params["starting_after"] = body["data"][-1]["id"]
    raise AssertionError(f"{path} did not stop paging")


def stripe_events(ls: LocalStripe) -> list[dict[str, Any]]:
    """Every event localstripe made (and so sent to the registered webhook)."""
    body = ls.request("GET", "/v1/events?limit=100")
    assert body["has_more"] is False, "more than 100 localstripe events; page through them"
    events: list[dict[str, Any]] = body["data"]
    return events


def check_inbox(api: httpx.Client, ls: LocalStripe, connection_id: str) -> dict[str, Any]:
    """Every event localstripe sent is in the inbox, processed: done when a default flow
    wants its type, ignored otherwise. Returns the inbox items by event id."""
    items = {item["event_id"]: item for item in list_all(api, "/v1/events")}
    sent = stripe_events(ls)
    missing = sorted(f"{e['id']} ({e['type']})" for e in sent if e["id"] not in items)
    assert not missing, f"events localstripe sent but Snapshots has not stored: {missing}"
    assert len(items) == len(sent), "the inbox holds events localstripe never sent"
    wrong = {}
    for event in sent:
        item = items[event["id"]]
        expected = "done" if event["type"] in APPLIED_TYPES else "ignored"
        if (item["status"], item["event_type"], item["connection_id"], item["source"]) != (
            expected,
            event["type"],
            connection_id,
            "webhook",
        ):
            wrong[event["id"]] = (event["type"], expected, item)
    assert not wrong, f"inbox items not (yet) as expected: {wrong}"
    return items


def expected_contact(customer: dict[str, Any], *, archived: bool) -> dict[str, Any]:
    """The contact Snapshots should hold for a Stripe customer (as the SDK returned it)."""
    address = customer["address"]
    return {
        "object": "contact",
        "email": customer["email"],
        "name": customer["name"],
        "phone": customer["phone"],
        "address": {key: address.get(key) for key in ADDRESS_KEYS},
        "metadata": customer["metadata"],
        "stripe_customer_id": customer["id"],
        "stripe_created": iso(customer["created"]),
        "archived": archived,
        "livemode": False,
        "test": False,
        "tags": [],
    }


def expected_invoice(invoice: dict[str, Any], contact_id: str) -> dict[str, Any]:
    return {
        "object": "invoice",
        "stripe_invoice_id": invoice["id"],
        "stripe_customer_id": invoice["customer"],
        "customer_id": contact_id,
        "amount_due": invoice["amount_due"],
        "amount_paid": invoice["amount_paid"],
        "total": invoice["total"],
        "currency": invoice["currency"],
        "status": invoice["status"],
        "payment_status": invoice["status"],  # paid -> paid, draft -> draft
        "customer_email": invoice["customer_email"],
        "stripe_created": iso(invoice["created"]),
        "archived": False,
        "livemode": False,
    }


def subset(record: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    return {key: record.get(key, "<missing>") for key in like}


def make_stripe_data(ls: LocalStripe) -> dict[str, dict[str, Any]]:
    """Three customers (one updated, one deleted), a paid invoice and a draft invoice, made
    with the official SDK. Returns the last state the SDK returned for each object."""
    client = ls.client()
    address = {
        "line1": "1 Analytical Way",
        "line2": "Suite 2",
        "city": "London",
        "state": "LDN",
        "postal_code": "N1 9GU",
        "country": "GB",
    }
    ada = client.v1.customers.create(
        {
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "phone": "+44 20 7946 0001",
            "address": address,
            "metadata": {"crm_tier": "gold", "origin": "acceptance"},
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    bea = client.v1.customers.create(
        {
            "email": "bea@example.com",
            "name": "Bea Before",
            "phone": "+1 555 0102",
            "address": {
                "line1": "2 Market St",
                "city": "San Francisco",
                "state": "CA",
                "postal_code": "94105",
                "country": "US",
            },
            "metadata": {"crm_tier": "silver"},
        }
    )
    cyd = client.v1.customers.create(
        {
            "email": "cyd@example.com",
            "name": "Cyd Gone",
            "phone": "+33 1 23 45 67 89",
            "address": {
                "line1": "3 Rue de Rivoli",
                "city": "Paris",
                "postal_code": "75001",
                "country": "FR",
            },
            "metadata": {"crm_tier": "bronze"},
        }
    )
    bea = client.v1.customers.update(
        bea.id, {"name": "Bea After", "metadata": {"crm_tier": "platinum", "renamed": "yes"}}
    )
    deleted = client.v1.customers.delete(cyd.id)
    assert deleted.deleted is True

    # localstripe bills only a customer with a subscription.
    plan = client.v1.plans.create(
        {"amount": 0, "currency": "usd", "interval": "month", "product": {"name": "Base"}}
    )
    client.v1.subscriptions.create(
        {"customer": ada.id, "items": [{"plan": plan.id}], "trial_period_days": 30}
    )
    client.v1.invoice_items.create(
        {"customer": ada.id, "amount": 2500, "currency": "usd", "description": "Consulting"}
    )
    paid = client.v1.invoices.create({"customer": ada.id})
    paid = client.v1.invoices.pay(paid.id)
    assert (paid.status, paid.amount_paid) == ("paid", 2500)
    client.v1.invoice_items.create(
        {"customer": ada.id, "amount": 1200, "currency": "usd", "description": "Extras"}
    )
    draft = client.v1.invoices.create({"customer": ada.id})
    assert (draft.status, draft.amount_due) == ("draft", 1200)
    return {
        "ada": ada.to_dict(),
        "bea": bea.to_dict(),
        "cyd": cyd.to_dict(),
        "paid": paid.to_dict(),
        "draft": draft.to_dict(),
    }


def check_connect_errors(deployment: Snapshots, ls: LocalStripe) -> None:
    """A key or API base that does not work: one readable `error:` line, a non-zero exit."""
    cases = {
        "unreachable api base": (STRIPE_KEY, f"http://127.0.0.1:{free_port()}"),
        "malformed key": ("sk_x", ls.api_base),
        "key refused by Stripe": ("rk_test_refusedbylocalstripe", ls.api_base),
    }
    started = {
        case: deployment.popen_cli(
            "connect",
            "stripe",
            "--secret-key",
            key,
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--api-base",
            base,
            "--json",
        )
        for case, (key, base) in cases.items()
    }
    outputs: dict[str, tuple[int, str, str]] = {}
    try:
        for case, process in started.items():
            stdout, stderr = process.communicate(timeout=30)
            outputs[case] = (process.returncode, stdout, stderr)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=5)
    for case, (returncode, stdout, stderr) in outputs.items():
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert returncode != 0, f"{case}: exit 0\n{stdout}\n{stderr}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {stderr!r}"
        assert "Traceback" not in stderr and len(lines[0]) < 400, f"{case}: {stderr!r}"
        assert stdout.strip() == "", f"{case}: printed {stdout!r}"
        assert "rk_test_refusedbylocalstripe" not in stderr, f"{case}: the key was printed"


def test_stripe_to_snapshots_end_to_end(snapshots: Snapshots, localstripe: LocalStripe) -> None:
    ls = localstripe
    # 1. Schema, connection (and its refusals), webhook registration.
    snapshots.cli("migrate")
    check_connect_errors(snapshots, ls)
    connection = connect(snapshots, ls, "shop")
    key_file = snapshots.home / "snapshots.db.key"
    assert key_file.exists() and key_file.stat().st_mode & 0o777 == 0o600

    # 2. An API key.
    key = create_key(snapshots, "contacts.readonly", "invoices.readonly", "events.readonly")

    snapshots.serve()
    api = snapshots.api(key)
    anonymous = snapshots.api()
    try:
        assert api.get("/healthz").json()["worker"] is True

        # 3. Changes in "Stripe".
        made = make_stripe_data(ls)
        ada, bea, cyd = made["ada"], made["bea"], made["cyd"]
        assert bea["name"] == "Bea After" and bea["metadata"]["crm_tier"] == "platinum"

        # 4. Everything arrives and is applied.
        want_contacts = {
            ada["id"]: expected_contact(ada, archived=False),
            bea["id"]: expected_contact(bea, archived=False),
            cyd["id"]: expected_contact(cyd, archived=True),
        }

        def applied() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            items = check_inbox(api, ls, connection["id"])
            contacts = {c["stripe_customer_id"]: c for c in list_all(api, "/v1/customers")}
            assert set(contacts) == set(want_contacts), contacts
            for customer_id, want in want_contacts.items():
                assert subset(contacts[customer_id], want) == want, customer_id
            invoices = {i["stripe_invoice_id"]: i for i in list_all(api, "/v1/invoices")}
            ada_contact = contacts[ada["id"]]["id"]
            want_invoices = {
                made[name]["id"]: expected_invoice(made[name], ada_contact)
                for name in ("paid", "draft")
            }
            assert set(invoices) == set(want_invoices), invoices
            for invoice_id, want in want_invoices.items():
                assert subset(invoices[invoice_id], want) == want, invoice_id
            return items, contacts, invoices

        items, contacts, invoices = eventually(applied, timeout=APPLY_TIMEOUT)

        # Spelled out once, so the expectations above are not only derived from the SDK.
        assert contacts[bea["id"]]["name"] == "Bea After"
        assert contacts[bea["id"]]["metadata"]["crm_tier"] == "platinum"
        assert contacts[ada["id"]]["address"]["city"] == "London"
        assert [c["archived"] for c in (contacts[x["id"]] for x in (ada, bea, cyd))] == [
            False,
            False,
            True,
        ]
        paid, draft = invoices[made["paid"]["id"]], invoices[made["draft"]["id"]]
        assert (paid["amount_due"], paid["amount_paid"], paid["currency"]) == (2500, 2500, "usd")
        assert (paid["status"], paid["payment_status"]) == ("paid", "paid")
        assert (draft["amount_due"], draft["amount_paid"]) == (1200, 0)
        assert (draft["status"], draft["payment_status"]) == ("draft", "draft")
        for contact in contacts.values():
            assert contact["id"].startswith("con_")
            assert contact["connection_id"] == connection["id"]
        for invoice in invoices.values():
            assert invoice["id"].startswith("inv_")
            assert invoice["customer_id"] == contacts[ada["id"]]["id"]

        # Pagination walks every contact exactly once; newest first.
        walked: list[str] = []
        params: dict[str, Any] = {"limit": 1}
        for _ in range(10):
            page = api.get("/v1/customers", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["data"]) == 1
            walked.append(body["data"][0]["id"])
            if not body["has_more"]:
                break
            params["starting_after"] = walked[-1]
        assert walked == [c["id"] for c in list_all(api, "/v1/customers")]
        assert sorted(walked) == sorted(c["id"] for c in contacts.values())

        # Single records match the lists.
        for contact in contacts.values():
            one = api.get(f"/v1/customers/{contact['id']}")
            assert one.status_code == 200 and one.json() == contact
        for invoice in invoices.values():
            one = api.get(f"/v1/invoices/{invoice['id']}")
            assert one.status_code == 200 and one.json() == invoice
        assert api.get("/v1/customers/con_doesnotexist").status_code == 404

        # Scopes: a missing one is a 403 naming it; no key is a 401.
        forbidden = api.get("/v1/locations")
        assert forbidden.status_code == 403, forbidden.text
        assert "saas/location.read" in forbidden.json()["error"]["message"]
        for path in ("/v1/customers", "/v1/invoices", "/v1/events", "/v1/locations"):
            response = anonymous.get(path)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["type"] == "authentication_error"
        with snapshots.api("snp_live_" + "x" * 38) as wrong_key:
            assert wrong_key.get("/v1/customers").status_code == 401

        # 5. The event log, from the CLI.
        listed = snapshots.cli_json("events", "list", "--limit", "1000", "--json")
        assert {e["event_id"] for e in listed} == set(items)
        statuses = {e["event_id"]: e["status"] for e in listed}
        assert statuses == {event_id: item["status"] for event_id, item in items.items()}
        assert set(statuses.values()) <= {"done", "ignored"}

        created_event = next(
            e
            for e in stripe_events(ls)
            if e["type"] == "customer.created" and e["data"]["object"]["id"] == bea["id"]
        )
        shown = snapshots.cli_json("events", "show", created_event["id"], "--json")
        assert shown["event_id"] == created_event["id"]
        assert shown["status"] == "done"
        payload = shown["payload"]
        assert (payload["id"], payload["type"], payload["object"]) == (
            created_event["id"],
            "customer.created",
            "event",
        )
        assert payload["created"] == created_event["created"]
        assert payload["data"]["object"]["id"] == bea["id"]
        assert payload["data"]["object"]["name"] == "Bea Before"  # as it was, raw
        assert payload["data"]["object"]["metadata"] == {"crm_tier": "silver"}

        # Replaying older events (Bea's creation, the paid invoice's draft) re-runs them to
        # `done` without undoing the newer state.
        invoice_created = next(
            e
            for e in stripe_events(ls)
            if e["type"] == "invoice.created" and e["data"]["object"]["id"] == made["paid"]["id"]
        )
        before = (list_all(api, "/v1/customers"), list_all(api, "/v1/invoices"))
        for event in (created_event, invoice_created):
            previous = items[event["id"]]
            replayed = snapshots.cli("events", "replay", event["id"])
            assert event["id"] in replayed.stdout

            def replay_done(event_id: str = event["id"], was: Any = previous) -> None:
                item = api.get(f"/v1/events/{event_id}").json()
                assert item["status"] == "done", item
                processed = datetime.fromisoformat(item["processed_at"])
                assert processed > datetime.fromisoformat(was["processed_at"]), item

            eventually(replay_done, timeout=15)
        after = (list_all(api, "/v1/customers"), list_all(api, "/v1/invoices"))
        assert after == before
    finally:
        api.close()
        anonymous.close()


def test_standalone_worker_applies_what_serve_received(
    snapshots: Snapshots, localstripe: LocalStripe
) -> None:
    ls = localstripe
    snapshots.master_key = Fernet.generate_key().decode()
    snapshots.cli("migrate")
    connection = connect(snapshots, ls, "shop")
    assert not (snapshots.home / "snapshots.db.key").exists()  # the given master key is used
    key = create_key(snapshots, "contacts.readonly", "events.readonly")
    snapshots.serve("--no-worker")
    api = snapshots.api(key)
    try:
        assert api.get("/healthz").json()["worker"] is False

        client = ls.client()
        dee = client.v1.customers.create(
            {"email": "dee@example.com", "name": "Dee", "metadata": {"crm_tier": "gold"}}
        )

        # Received and stored, but with no worker nothing is applied.
        def received() -> dict[str, Any]:
            items = {i["event_id"]: i for i in list_all(api, "/v1/events")}
            sent = stripe_events(ls)
            assert sent and all(e["id"] in items for e in sent), (sent, items)
            return items

        items = eventually(received, timeout=APPLY_TIMEOUT)
        assert [i["status"] for i in items.values()] == ["pending"], items
        # Give a stray worker time to show itself (an embedded one polls every 0.2 s).
        time.sleep(1.5)
        assert {i["status"] for i in received().values()} == {"pending"}
        assert list_all(api, "/v1/customers") == []

        # The standalone worker applies them, and what arrives while it runs.
        worker = snapshots.worker()

        def applied() -> dict[str, Any]:
            assert worker.process.poll() is None, "the worker exited"
            contacts = list_all(api, "/v1/customers")
            assert len(contacts) == 1, contacts
            statuses = {i["status"] for i in list_all(api, "/v1/events")}
            assert statuses == {"done"}, statuses
            return contacts[0]

        contact = eventually(applied, timeout=APPLY_TIMEOUT)
        assert subset(contact, {"email": "dee@example.com", "name": "Dee"}) == {
            "email": "dee@example.com",
            "name": "Dee",
        }
        assert contact["stripe_customer_id"] == dee.id
        assert contact["connection_id"] == connection["id"]

        client.v1.customers.update(dee.id, {"name": "Dee Updated"})

        def updated() -> None:
            contacts = list_all(api, "/v1/customers")
            assert [c["name"] for c in contacts] == ["Dee Updated"], contacts
            events = list_all(api, "/v1/events")
            assert [(e["event_type"], e["status"]) for e in events] == [
                ("customer.updated", "done"),
                ("customer.created", "done"),
            ], events

        eventually(updated, timeout=APPLY_TIMEOUT)

        assert stop(worker.process) == 0, "the worker did not stop cleanly on SIGTERM"
        listed = snapshots.cli_json("events", "list", "--json")
        assert {e["status"] for e in listed} == {"done"}
        assert all(e["attempts"] == 1 for e in listed), listed
    finally:
        api.close()
