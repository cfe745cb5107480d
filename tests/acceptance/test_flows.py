"""No-code flows end to end, through the public surfaces only: a custom flows file checked
and imported with the real `snapshots` CLI, signed test events posted to the webhook endpoint of
a real `snapshots serve` (its embedded worker applies them), the records and the timeline read
back through the REST API, a rollback and a failing mapping followed by the running serve, and
one test event of every type in the catalog.

A connection needs a Stripe account behind it: the fake Stripe server (tests/support) stands
in; nothing here makes Stripe send anything, every event is posted by the test or by
`snapshots send-test-event`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
import yaml
from cryptography.fernet import Fernet

from tests.conftest import fixture
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

from .conftest import STOP_GRACE, Snapshots, eventually
from .test_end_to_end import iso, list_all

pytestmark = pytest.mark.acceptance

WEBHOOK_SECRET = "whsec_flows_acceptance_0123456789"
SCOPES = ("contacts.readonly", "events.readonly")
APPLY_TIMEOUT = 30.0  # seconds for a posted event to be applied
ALL_TIMEOUT = 120  # seconds `send-test-event --all` waits for the worker
ALL_CLI_TIMEOUT = 240.0  # seconds the whole `send-test-event --all` command may take
# The prebuilt flows kept in the custom file.
INVOICE_FLOWS = ("invoices", "invoice-payments", "invoice-deletions")
FINISHED = ("done", "ignored", "failed", "dead")

CUSTOM_FLOWS = """\
# Custom flows: contacts renamed and filtered, subscribers tagged, refunds on the timeline.
flows:
  - name: contacts
    description: Contacts, upper-cased, without live-mode customers or blocked.example emails.
    trigger: [customer.created, customer.updated]
    filter: "livemode == `false` && !ends_with(email || '', '@blocked.example')"
    action: upsert_contact
    options:
      match_on: [stripe_customer_id, email]
    fields:
      stripe_customer_id: id
      email: email
      name: upper(name)
      phone: "default(phone, 'n/a')"
      metadata.tier: metadata.plan_tier
      address.city: address.city
      custom.source: $event.type
      livemode: livemode
      stripe_created: created

  - name: subscribers
    trigger: customer.subscription.created
    action: add_tag
    options:
      tags: [subscriber]
    fields:
      stripe_customer_id: customer

  - name: unsubscribers
    trigger: customer.subscription.deleted
    action: remove_tag
    options:
      tags: [subscriber]
    fields:
      stripe_customer_id: customer

  - name: refunds
    trigger: charge.refunded
    filter: "customer != null"
    action: log_event
    fields:
      stripe_customer_id: customer
      title: "template('Refund of {amount_refunded} {currency} on {id}', @)"
      amount: cents_to_decimal(amount_refunded, currency)
      currency: currency

  # The prebuilt invoice flows, as `snapshots flows export` printed them:
"""

# A flow whose mapping validates (metadata.count is missing on the samples: lower(null) is
# null) but fails on an event whose metadata.count is a number.
FAILING_FLOWS = """\
flows:
  - name: lowered
    trigger: [customer.created]
    action: upsert_contact
    fields:
      stripe_customer_id: id
      email: email
      name: lower(metadata.count)
"""


# -- setting up --------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe() as running:
        yield running


def deploy(snapshots: Snapshots, fake: FakeStripe) -> dict[str, Any]:
    """Migrate, connect to the fake Stripe (the pulls it would do are pushed out of the test's
    way); returns the connection."""
    snapshots.master_key = Fernet.generate_key().decode()
    snapshots.extra_env.update(
        {
            "SNAPSHOTS_LOCATION_POLL_INTERVAL": "86400",
            "SNAPSHOTS_RECONCILE_INTERVAL": "86400",
        }
    )
    snapshots.cli("migrate")
    connection: dict[str, Any] = snapshots.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        fake.secret_key,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--api-base",
        fake.api_base,
        "--name",
        "flows",
        "--json",
    )
    assert connection["id"].startswith("conn_")
    assert connection["webhook_url"] == f"{snapshots.base_url}/webhooks/stripe/{connection['id']}"
    return connection


def create_key(snapshots: Snapshots, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    created = snapshots.cli_json("keys", "create", "--name", "flows", *args, "--json")
    secret: str = created["secret"]
    return secret


# -- Stripe objects ----------------------------------------------------------------------------


def customer(
    customer_id: str,
    *,
    email: str | None,
    name: str | None,
    phone: str | None = None,
    city: str | None = None,
    metadata: dict[str, Any] | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    obj = fixture("customer")
    obj.update(
        id=customer_id,
        email=email,
        name=name,
        phone=phone,
        metadata=metadata or {},
        livemode=livemode,
        created=int(time.time()) - 60,
    )
    obj["address"] = dict.fromkeys(obj["address"]) | {"city": city, "country": "GB"}
    return obj


def subscription(customer_id: str) -> dict[str, Any]:
    obj = fixture("subscription")
    obj.update(id=f"sub_{secrets.token_hex(6)}", customer=customer_id)
    return obj


def refunded_charge(customer_id: str, amount: int, currency: str) -> dict[str, Any]:
    obj = fixture("charge")
    obj.update(
        id=f"ch_{secrets.token_hex(6)}",
        customer=customer_id,
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount,
        currency=currency,
        refunded=True,
    )
    return obj


def invoice(customer_id: str) -> dict[str, Any]:
    obj = fixture("invoice")
    obj.update(
        id=f"in_{secrets.token_hex(6)}",
        customer=customer_id,
        customer_email="someone.else@example.com",
        customer_name="Invoice Name",
    )
    return obj


# -- sending events ----------------------------------------------------------------------------


def send_test_event(
    snapshots: Snapshots, event_type: str, obj: dict[str, Any], *, ok: bool = True
) -> tuple[dict[str, Any], int]:
    """`snapshots send-test-event TYPE --object FILE --json`: (the event's trace, exit code)."""
    path = snapshots.home / f"object-{secrets.token_hex(4)}.json"
    path.write_text(json.dumps(obj))
    result = snapshots.cli("send-test-event", event_type, "--object", str(path), "--json", ok=ok)
    try:
        traces = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON from send-test-event:\n{result}") from exc
    assert isinstance(traces, list) and len(traces) == 1, traces
    trace: dict[str, Any] = traces[0]
    assert trace["type"] == event_type
    assert trace["event_id"].startswith("evt_snptest_")
    assert trace["http_status"] == 200, trace
    assert isinstance(trace["item_id"], int)
    return trace, result.returncode


def applied(snapshots: Snapshots, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A test event that must be applied by exactly one flow; its trace."""
    trace, _ = send_test_event(snapshots, event_type, obj)
    assert trace["status"] == "done", trace
    assert trace["error"] is None, trace
    assert len(trace["flows"]) == 1 and len(trace["records"]) == 1, trace
    return trace


def ignored(snapshots: Snapshots, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A test event every flow's filter leaves out: ignored, nothing written."""
    trace, _ = send_test_event(snapshots, event_type, obj)
    assert (trace["status"], trace["flows"], trace["records"], trace["error"]) == (
        "ignored",
        [],
        [],
        None,
    ), trace
    assert trace["fields"] == {}, trace
    return trace


def post_event(
    snapshots: Snapshots, connection_id: str, event_type: str, obj: dict[str, Any], *, created: int
) -> dict[str, Any]:
    """Post a test event with a chosen `created`, signed like Stripe signs, to the webhook
    endpoint; returns the event once it is stored (not yet applied)."""
    event = {
        "id": f"evt_snptest_{time.time_ns():016x}{secrets.token_hex(4)}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": created,
        "data": {"object": obj},
        "livemode": bool(obj.get("livemode", False)),
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
    with httpx.Client(base_url=snapshots.base_url, trust_env=False, timeout=10.0) as http:
        response = http.post(
            f"/webhooks/stripe/{connection_id}",
            content=payload.encode(),
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert (receipt["event_id"], receipt["status"], receipt["duplicate"]) == (
        event["id"],
        "pending",
        False,
    ), receipt
    return event


def finished_item(api: httpx.Client, event_id: str) -> dict[str, Any]:
    """The inbox item of an event once a worker has finished with it."""

    def check() -> dict[str, Any]:
        response = api.get(f"/v1/events/{event_id}")
        assert response.status_code == 200, response.text
        item: dict[str, Any] = response.json()
        assert item["status"] in FINISHED, item
        return item

    return eventually(check, timeout=APPLY_TIMEOUT)


def get_contact(api: httpx.Client, contact_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/customers/{contact_id}")
    assert response.status_code == 200, response.text
    contact: dict[str, Any] = response.json()
    return contact


# -- the tests ---------------------------------------------------------------------------------


def flows_file_text(snapshots: Snapshots) -> str:
    """The custom flows, with the prebuilt invoice flows copied from `flows export`."""
    exported = snapshots.cli("flows", "export").stdout
    prebuilt = yaml.safe_load(exported)["flows"]
    kept = [flow for flow in prebuilt if flow["name"] in INVOICE_FLOWS]
    assert [flow["name"] for flow in kept] == list(INVOICE_FLOWS)
    dumped = yaml.safe_dump(kept, sort_keys=False, allow_unicode=True)
    return CUSTOM_FLOWS + "".join(f"  {line}\n" for line in dumped.splitlines())


def test_custom_flows_end_to_end(fake: FakeStripe, snapshots: Snapshots) -> None:
    connection = deploy(snapshots, fake)
    key = create_key(snapshots, *SCOPES)
    prebuilt_text = snapshots.cli("flows", "export").stdout

    # 1. A custom flows file: checked, refused when broken, imported as version 1.
    text = flows_file_text(snapshots)
    path = snapshots.home / "flows.yaml"
    path.write_text(text)
    checked = snapshots.cli("mappings", "validate", str(path))
    assert f"ok, {4 + len(INVOICE_FLOWS)} flows" in checked.stdout, checked.stdout

    broken = snapshots.home / "broken.yaml"
    broken.write_text(text.replace("name: upper(name)", "name: upper(name, email)"))
    refused = snapshots.cli("flows", "import", str(broken), ok=False)
    assert refused.returncode == 2, refused
    line = text.splitlines().index("      name: upper(name)") + 1
    assert (
        f"error: {broken}:{line}: flow 'contacts': field 'name': bad expression "
        "'upper(name, email)': upper() takes 1 argument(s), not 2"
    ) in refused.stderr, refused.stderr
    assert [v["version"] for v in snapshots.cli_json("flows", "versions", "--json")] == [0]

    imported = snapshots.cli_json(
        "flows", "import", str(path), "--comment", "custom contacts and timeline", "--json"
    )
    assert (imported["version"], imported["previous_version"]) == (1, 0), imported
    history = snapshots.cli_json("flows", "versions", "--json")
    assert [(v["version"], v["comment"]) for v in history] == [
        (1, "custom contacts and timeline"),
        (0, "the prebuilt flows"),
    ], history
    assert history[0]["actor"].startswith("cli")
    assert snapshots.cli("flows", "export").stdout == text
    shown = snapshots.cli_json("mappings", "show", "--json")
    assert shown["version"] == 1
    assert [f["name"] for f in shown["flows"]] == [
        "contacts",
        "subscribers",
        "unsubscribers",
        "refunds",
        *INVOICE_FLOWS,
    ]

    snapshots.serve()
    api = snapshots.api(key)
    try:
        sent: dict[str, str] = {}  # event id -> the status its inbox item must end in

        # 2. Customers: one kept (and renamed), one live-mode and one blocked left out.
        ada = customer(
            "cus_flowsAda01",
            email="ada@example.com",
            name="Ada Lovelace",
            city="London",
            metadata={"plan_tier": "gold", "crm_note": "not mapped"},
        )
        trace = applied(snapshots, "customer.created", ada)
        sent[trace["event_id"]] = "done"
        assert trace["flows"] == ["contacts"]
        contact_id = trace["records"][0]
        assert contact_id.startswith("con_")
        assert trace["fields"] == {
            "contacts": {
                "stripe_customer_id": "cus_flowsAda01",
                "email": "ada@example.com",
                "name": "ADA LOVELACE",
                "phone": "n/a",
                "metadata.tier": "gold",
                "address.city": "London",
                "custom.source": "customer.created",
                "livemode": False,
                "stripe_created": ada["created"],
            }
        }, trace

        live = customer("cus_flowsLive1", email="liv@example.com", name="Liv", livemode=True)
        live_event = ignored(snapshots, "customer.created", live)["event_id"]
        sent[live_event] = "ignored"
        blocked = customer("cus_flowsBlock", email="eve@blocked.example", name="Eve")
        sent[ignored(snapshots, "customer.created", blocked)["event_id"]] = "ignored"

        # 3. A subscription tags the contact; the invoice flows still work and leave the
        # contact as its own events made it.
        sub = subscription("cus_flowsAda01")
        trace = applied(snapshots, "customer.subscription.created", sub)
        sent[trace["event_id"]] = "done"
        assert (trace["flows"], trace["records"]) == (["subscribers"], [contact_id]), trace
        subscribed_at = int(api.get(f"/v1/events/{trace['event_id']}").json()["event_created"])
        assert get_contact(api, contact_id)["tags"] == ["subscriber"]

        trace = applied(snapshots, "invoice.created", invoice("cus_flowsAda01"))
        sent[trace["event_id"]] = "done"
        assert trace["flows"] == ["invoices"] and trace["records"][0].startswith("inv_")

        # 4. Refunds on the timeline: title from a template, amount in the currency's unit.
        usd = refunded_charge("cus_flowsAda01", 1999, "usd")
        jpy = refunded_charge("cus_flowsAda01", 500, "jpy")
        refunds = {}
        for charge in (usd, jpy):
            trace = applied(snapshots, "charge.refunded", charge)
            sent[trace["event_id"]] = "done"
            assert (trace["flows"], trace["records"]) == (["refunds"], [contact_id]), trace
            refunds[trace["event_id"]] = charge

        # 5. The subscription ends (a later event): the tag goes. Its creation arriving again,
        # late (an older event), does not bring the tag back.
        ended = post_event(
            snapshots,
            connection["id"],
            "customer.subscription.deleted",
            sub | {"status": "canceled"},
            created=subscribed_at + 60,
        )
        item = finished_item(api, ended["id"])
        sent[ended["id"]] = "done"
        assert (item["status"], item["flows"], item["records"]) == (
            "done",
            ["unsubscribers"],
            [contact_id],
        ), item
        assert get_contact(api, contact_id)["tags"] == []
        late = post_event(
            snapshots,
            connection["id"],
            "customer.subscription.created",
            sub,
            created=subscribed_at - 60,
        )
        item = finished_item(api, late["id"])
        sent[late["id"]] = "done"
        assert (item["status"], item["flows"]) == ("done", ["subscribers"]), item

        # 6. What the API shows.
        contact = get_contact(api, contact_id)
        assert contact == contact | {
            "object": "contact",
            "email": "ada@example.com",
            "name": "ADA LOVELACE",
            "phone": "n/a",
            "address": {
                "line1": None,
                "line2": None,
                "city": "London",
                "state": None,
                "postal_code": None,
                "country": None,
            },
            "metadata": {"tier": "gold"},
            "custom": {"source": "customer.created"},
            "tags": [],
            "stripe_customer_id": "cus_flowsAda01",
            "stripe_created": iso(ada["created"]),
            "connection_id": connection["id"],
            "archived": False,
            "livemode": False,
            "test": True,
        }, contact
        contacts = list_all(api, "/v1/customers")
        assert [c["id"] for c in contacts] == [contact_id], contacts

        timeline = api.get(f"/v1/customers/{contact_id}/activities")
        assert timeline.status_code == 200, timeline.text
        body = timeline.json()
        assert body["has_more"] is False
        activities = {a["event_id"]: a for a in body["data"]}
        assert set(activities) == set(refunds), body
        amounts = {"usd": 19.99, "jpy": 500}
        for event_id, charge in refunds.items():
            activity = activities[event_id]
            currency = charge["currency"]
            assert activity == activity | {
                "object": "activity",
                "contact_id": contact_id,
                "type": "charge.refunded",
                "title": f"Refund of {charge['amount_refunded']} {currency} on {charge['id']}",
                "data": {"amount": amounts[currency], "currency": currency},
                "flow": "refunds",
                "test": True,
            }, activity
            assert activity["id"].startswith("act_")
        walked: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1}
        for _ in range(5):
            page = api.get(f"/v1/customers/{contact_id}/activities", params=params).json()
            walked += page["data"]
            if not page["has_more"]:
                break
            params["starting_after"] = page["data"][-1]["id"]
        assert walked == body["data"], walked
        missing = api.get("/v1/customers/con_doesnotexist/activities")
        assert missing.status_code == 404, missing.text

        items = {i["event_id"]: i for i in list_all(api, "/v1/events")}
        assert set(items) == set(sent), items
        wrong = {
            event_id: item
            for event_id, item in items.items()
            if (item["status"], item["source"], item["connection_id"])
            != (sent[event_id], "test", connection["id"])
        }
        assert not wrong, wrong
        assert items[live_event]["livemode"] is True
        assert {i["livemode"] for e, i in items.items() if e != live_event} == {False}

        # 7. A rollback to the prebuilt flows; the running serve applies the next event by it.
        rolled = snapshots.cli_json("flows", "rollback", "0", "--json")
        assert (rolled["version"], rolled["previous_version"]) == (2, 1), rolled
        assert rolled["comment"] == "rollback to version 0"
        history = snapshots.cli_json("flows", "versions", "--json")
        assert [v["version"] for v in history] == [2, 1, 0]
        assert snapshots.cli("flows", "export").stdout == prebuilt_text

        def prebuilt_mapping() -> dict[str, Any]:
            bea = customer(
                f"cus_flowsBea{secrets.token_hex(3)}",
                email="bea@example.com",
                name="Bea Rolled",
                metadata={"plan_tier": "silver"},
            )
            trace = applied(snapshots, "customer.created", bea)
            contact = get_contact(api, trace["records"][0])
            assert (contact["name"], contact["phone"]) == ("Bea Rolled", None), contact
            assert (contact["metadata"], contact["custom"]) == ({"plan_tier": "silver"}, {})
            return contact

        prebuilt_mapping()

        # 8. A mapping that fails on a real event makes its item dead, naming the flow and the
        # expression; the worker goes on with the next event.
        failing = snapshots.home / "failing.yaml"
        failing.write_text(FAILING_FLOWS)
        snapshots.cli("mappings", "validate", str(failing))
        assert snapshots.cli_json("flows", "import", str(failing), "--json")["version"] == 3

        def dead() -> dict[str, Any]:
            counted = customer(
                f"cus_flowsCnt{secrets.token_hex(3)}",
                email="count@example.com",
                name="Counted",
                metadata={"count": 5},
            )
            trace, code = send_test_event(snapshots, "customer.created", counted, ok=False)
            assert trace["status"] == "dead", trace
            assert code == 1, trace
            return trace

        trace = dead()
        assert trace["flows"] == [] and trace["records"] == []
        assert "flow 'lowered'" in trace["error"], trace
        assert "lower(metadata.count)" in trace["error"], trace
        shown = snapshots.cli_json("events", "show", trace["event_id"], "--json")
        assert (shown["status"], shown["attempts"], shown["source"]) == ("dead", 1, "test")
        assert "flow 'lowered'" in shown["last_error"], shown
        assert "expression 'lower(metadata.count)' failed" in shown["last_error"], shown
        assert shown["payload"]["data"]["object"]["metadata"] == {"count": 5}

        mixed = customer(
            "cus_flowsMixed", email="mixed@example.com", name="x", metadata={"count": "MiXeD"}
        )
        trace = applied(snapshots, "customer.created", mixed)
        assert trace["flows"] == ["lowered"]
        assert get_contact(api, trace["records"][0])["name"] == "mixed"
        health = api.get("/healthz")
        assert health.status_code == 200, health.text
        assert snapshots.running[-1].process.poll() is None, "serve exited"
    finally:
        api.close()


def test_every_event_type_is_applied_or_ignored(fake: FakeStripe, snapshots: Snapshots) -> None:
    connection = deploy(snapshots, fake)
    key = create_key(snapshots, "events.readonly")
    catalog = snapshots.cli_json("catalog", "--json")
    triggers = [t["type"] for t in catalog["triggers"]]
    assert len(triggers) == catalog["counts"]["triggers"] == len(set(triggers))
    snapshots.serve()

    started = time.monotonic()
    process = snapshots.popen_cli(
        "send-test-event", "--all", "--json", "--timeout", str(ALL_TIMEOUT)
    )
    try:
        stdout, stderr = process.communicate(timeout=ALL_CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate(timeout=STOP_GRACE)
        raise AssertionError(f"send-test-event --all ran over {ALL_CLI_TIMEOUT}s") from None
    elapsed = time.monotonic() - started
    print(f"send-test-event --all: {len(triggers)} event types in {elapsed:.1f} s")
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout[-4000:]}\n{stderr}"
    traces = json.loads(stdout)

    assert sorted(t["type"] for t in traces) == sorted(triggers)
    assert len({t["event_id"] for t in traces}) == len(traces)
    wrong = [
        t
        for t in traces
        if t["status"] not in ("done", "ignored")
        or t["http_status"] != 200
        or t["error"] is not None
        or (t["status"] == "done") != bool(t["flows"])
        or len(t["flows"]) != len(t["records"])
    ]
    assert not wrong, wrong
    by_type = {t["type"]: t for t in traces}
    # What the prebuilt flows make of a few of them.
    expected = {
        "customer.created": ("done", ["contacts"]),
        "customer.deleted": ("done", ["contact-deletions"]),
        "invoice.paid": ("done", ["invoice-payments"]),
        "terminal.location.created": ("done", ["locations"]),
        "customer.subscription.created": ("done", ["timeline"]),
        "charge.refunded": ("ignored", []),  # the sample charge has no customer
        "account.updated": ("ignored", []),
    }
    assert {t: (by_type[t]["status"], by_type[t]["flows"]) for t in expected} == expected
    counts = {s: sum(t["status"] == s for t in traces) for s in ("done", "ignored")}
    print(f"send-test-event --all: {counts}")

    with snapshots.api(key) as api:
        items = list_all(api, "/v1/events")
    assert sorted(i["event_type"] for i in items) == sorted(triggers)
    assert {(i["source"], i["connection_id"]) for i in items} == {("test", connection["id"])}
    assert {i["event_id"]: i["status"] for i in items} == {
        t["event_id"]: t["status"] for t in traces
    }


FAILING_FILTER_FLOWS = """\
flows:
  - name: picky
    trigger: [customer.created]
    filter: "lower(metadata.count) != 'skip'"
    action: upsert_contact
    fields:
      stripe_customer_id: id
      name: name
"""


def test_a_filter_failing_at_run_time_names_its_flow(
    fake: FakeStripe, snapshots: Snapshots
) -> None:
    deploy(snapshots, fake)
    path = snapshots.home / "picky.yaml"
    path.write_text(FAILING_FILTER_FLOWS)
    snapshots.cli("mappings", "validate", str(path))  # metadata.count is missing on samples
    snapshots.cli("flows", "import", str(path))
    snapshots.serve()
    counted = customer("cus_flowsPicky", email="p@example.com", name="P", metadata={"count": 7})
    trace, code = send_test_event(snapshots, "customer.created", counted, ok=False)
    assert (trace["status"], code) == ("dead", 1), trace
    shown = snapshots.cli_json("events", "show", trace["event_id"], "--json")
    assert "lower(metadata.count)" in shown["last_error"], shown
    assert "flow 'picky'" in shown["last_error"], shown["last_error"]
    assert "filter" in shown["last_error"], shown["last_error"]
