"""Snapshot tests of mapped output: what the flows would write for Stripe's example objects.

For every event type whose object has an example in `data/fixtures/`, a sample event
(`samples.sample_event(type, event_id="evt_snapshot")`) goes through the prebuilt flows'
`plan` and the result, `{flow name: mapped fields}`, is compared with
`snapshots/mapped/<type>.json` (`{}` when no prebuilt flow takes the type). A small custom
flows file (nested targets, `$event`, `template`, `cents_to_decimal`, `country_currency`) is
compared with `snapshots/mapped-custom/<case>.json` the same way.

To regenerate after a deliberate change: `SNAPSHOTS_UPDATE_SNAPSHOTS=1 pytest
tests/unit/test_mapped_snapshots.py`, review the diff, run again without the variable. A run
with the variable set always fails (saying what it wrote), so CI can never pass by writing.
"""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from snapshots import flowfile, flows, samples
from tests.conftest import fixture

HERE = Path(__file__).parent / "snapshots"
MAPPED = HERE / "mapped"
CUSTOM = HERE / "mapped-custom"
UPDATE = os.environ.get("SNAPSHOTS_UPDATE_SNAPSHOTS") == "1"
EVENT_ID = "evt_snapshot"


def _has_fixture(obj: str) -> bool:
    return resources.files("snapshots").joinpath(f"data/fixtures/{obj}.json").is_file()


FIXTURE_TYPES = sorted(t for t, obj in samples.event_objects().items() if _has_fixture(obj))


def _render(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _mapped(registry: flows.Registry, event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {flow.name: values for flow, values in registry.plan(event)}


def _mapped_at_any_time(registry: flows.Registry, event: dict[str, Any]) -> dict[str, Any]:
    """The mapped fields, after checking that none depends on when the event was made: the
    same event stamped at two other times maps the same."""
    mapped = _mapped(registry, event)
    for created in (0, 4_102_444_800):
        other = copy.deepcopy(event) | {"created": created}
        assert _mapped(registry, other) == mapped, f"a mapped field depends on the time ({created})"
    return mapped


def _compare(path: Path, data: Any) -> None:
    text = _render(data)
    if UPDATE:
        changed = not path.is_file() or path.read_text(encoding="utf-8") != text
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        pytest.fail(
            f"SNAPSHOTS_UPDATE_SNAPSHOTS=1: {'wrote' if changed else 'unchanged:'} {path}; "
            "review it, then run again without the variable"
        )
    if not path.is_file():
        pytest.fail(f"no snapshot {path}: run with SNAPSHOTS_UPDATE_SNAPSHOTS=1 and review it")
    golden = path.read_text(encoding="utf-8")
    assert json.loads(text) == json.loads(golden), f"{path} differs"
    assert text == golden, f"{path} differs in formatting or number types (1 vs 1.0)"


# The prebuilt flows over every fixture object.


@pytest.fixture(scope="module")
def prebuilt() -> flows.Registry:
    return flowfile.load()


def test_there_are_fixture_types() -> None:
    assert len(FIXTURE_TYPES) > 100
    for must in ("customer.created", "invoice.paid", "terminal.location.deleted"):
        assert must in FIXTURE_TYPES


@pytest.mark.parametrize("event_type", FIXTURE_TYPES)
def test_prebuilt_mapping_snapshot(prebuilt: flows.Registry, event_type: str) -> None:
    event = samples.sample_event(event_type, event_id=EVENT_ID)
    _compare(MAPPED / f"{event_type}.json", _mapped_at_any_time(prebuilt, event))


def test_no_stale_snapshots() -> None:
    stale = sorted(
        path.name for path in MAPPED.glob("*.json") if path.stem not in set(FIXTURE_TYPES)
    )
    if UPDATE:
        for name in stale:
            (MAPPED / name).unlink()
        if stale:
            pytest.fail(f"SNAPSHOTS_UPDATE_SNAPSHOTS=1: removed stale snapshots {stale}")
    assert stale == [], "snapshots of event types no longer known (delete them)"


def test_the_sample_objects_are_the_fixtures(prebuilt: flows.Registry) -> None:
    """Spot checks of the snapshots against the example objects they come from."""
    customer = fixture("customer")
    contact = _mapped(prebuilt, samples.sample_event("customer.created", event_id=EVENT_ID))
    assert contact["contacts"]["stripe_customer_id"] == customer["id"]
    assert contact["contacts"]["email"] == customer["email"]
    assert contact["contacts"]["address"] == customer["address"]
    invoice = fixture("invoice")
    paid = _mapped(prebuilt, samples.sample_event("invoice.paid", event_id=EVENT_ID))
    assert paid["invoice-payments"]["stripe_invoice_id"] == invoice["id"]
    assert paid["invoice-payments"]["stripe_customer_id"] == invoice["customer"]
    assert paid["invoice-payments"]["amount_due"] == invoice["amount_due"]


# Stripe's example invoice is a draft whatever the event; a sample of a state-changing event
# should carry the state the event announces (what `send-test-event` sends as "realistic").


@pytest.mark.parametrize(
    ("event_type", "status", "payment_status"),
    [
        pytest.param("invoice.paid", "paid", "paid", id="invoice.paid"),
        pytest.param("invoice.payment_succeeded", "paid", "paid", id="invoice.payment_succeeded"),
        pytest.param("invoice.payment_failed", "open", "failed", id="invoice.payment_failed"),
        pytest.param("invoice.voided", "void", "void", id="invoice.voided"),
        pytest.param(
            "invoice.marked_uncollectible",
            "uncollectible",
            "uncollectible",
            id="invoice.marked_uncollectible",
        ),
        pytest.param("invoice.finalized", "open", "unpaid", id="invoice.finalized"),
    ],
)
def test_sample_invoice_is_in_the_state_of_its_event(
    prebuilt: flows.Registry, event_type: str, status: str, payment_status: str
) -> None:
    mapped = _mapped(prebuilt, samples.sample_event(event_type, event_id=EVENT_ID))
    (values,) = mapped.values()
    assert (values["status"], values["payment_status"]) == (status, payment_status)


# A custom flows file over customer.json and invoice.json.

CUSTOM_FLOWS = """\
flows:
  - name: custom-contacts
    trigger: [customer.created, customer.updated]
    action: upsert_contact
    fields:
      stripe_customer_id: id
      email: lower(default(email, concat(id, '@example.invalid')))
      name: "template('{name} <{id}>', @)"
      address.city: default(address.city, 'Unknown')
      address.country: address.country
      metadata.tier: default(metadata.tier, 'free')
      metadata.source: $event.type
      custom.plan: "concat('plan-', upper(currency))"
      custom.home_currency: country_currency(address.country || 'US')
      custom.event: "$event.id"
  - name: custom-invoices
    trigger: ['invoice.*']
    filter: "$event.type != 'invoice.deleted'"
    action: log_invoice
    fields:
      stripe_invoice_id: id
      stripe_customer_id: customer.id || customer
      currency: currency
      total: cents_to_decimal(total, currency)
      amount_due: cents_to_decimal(amount_due, currency)
      metadata.first_line: lines.data[0].description
      metadata.lines: to_string(length(lines.data))
      custom.plan: "template('{billing_reason}/{collection_method}', @)"
      custom.event_type: $event.type
      custom.account_currency: country_currency(account_country)
      custom.due: iso_datetime(due_date)
      custom.status: invoice_payment_status(@)
"""


def _custom_customer() -> dict[str, Any]:
    return fixture("customer") | {
        "email": "Zoë.Weiß@Example.COM",
        "name": "Zoë Weiß",
        "address": fixture("customer")["address"] | {"city": "München", "country": "DE"},
        "metadata": {"tier": "gold"},
        "currency": "eur",
    }


CUSTOM_CASES = [
    pytest.param("customer.created", None, id="customer.created-example"),
    pytest.param("customer.updated", _custom_customer(), id="customer.updated-munich"),
    pytest.param("invoice.paid", None, id="invoice.paid-example"),
    pytest.param(
        "invoice.finalized",
        fixture("invoice") | {"currency": "jpy", "total": 1999, "amount_due": 1999},
        id="invoice.finalized-jpy",
    ),
    pytest.param(
        "invoice.updated",
        fixture("invoice") | {"currency": "kwd", "total": 1999, "amount_due": 1999},
        id="invoice.updated-kwd",
    ),
    pytest.param("invoice.deleted", None, id="invoice.deleted-filtered-out"),
]


@pytest.fixture(scope="module")
def custom() -> flows.Registry:
    return flowfile.parse(CUSTOM_FLOWS, "custom-flows.yaml")


@pytest.mark.parametrize(("event_type", "obj"), CUSTOM_CASES)
def test_custom_mapping_snapshot(
    request: pytest.FixtureRequest,
    custom: flows.Registry,
    event_type: str,
    obj: dict[str, Any] | None,
) -> None:
    event = samples.sample_event(event_type, obj=copy.deepcopy(obj), event_id=EVENT_ID)
    case = request.node.callspec.id
    _compare(CUSTOM / f"{case}.json", _mapped_at_any_time(custom, event))


def test_no_stale_custom_snapshots() -> None:
    cases = {param.id for param in CUSTOM_CASES}
    stale = sorted(path.name for path in CUSTOM.glob("*.json") if path.stem not in cases)
    assert stale == [], "snapshots of custom cases no longer tested (delete them)"


def test_custom_mapping_values(custom: flows.Registry) -> None:
    """The custom snapshots' key values, spelled out."""
    munich = samples.sample_event("customer.updated", obj=_custom_customer(), event_id=EVENT_ID)
    contact = _mapped(custom, munich)["custom-contacts"]
    assert contact["email"] == "zoë.weiß@example.com"
    assert contact["name"] == "Zoë Weiß <cus_QXg1o8vcGmoR32>"
    assert contact["address.city"] == "München"
    assert contact["metadata.source"] == "customer.updated"
    assert contact["custom.plan"] == "plan-EUR"
    assert contact["custom.home_currency"] == "eur"
    assert contact["custom.event"] == EVENT_ID
    jpy = fixture("invoice") | {"currency": "jpy", "total": 1999, "amount_due": 1999}
    invoice = _mapped(custom, samples.sample_event("invoice.finalized", obj=jpy))
    assert invoice["custom-invoices"]["total"] == 1999
    assert _mapped(custom, samples.sample_event("invoice.deleted")) == {}
