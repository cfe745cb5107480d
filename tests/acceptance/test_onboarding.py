"""Onboarding in one step, with real processes: `snapshots serve` and the CLI as subprocesses,
tests/support/fake_stripe.py as Stripe (it keeps webhook endpoints, restricted keys, and
delivers signed events to enabled endpoints)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from snapshots import flowfile
from snapshots.onboarding import endpoint
from tests.acceptance.conftest import Snapshots, eventually
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

pytestmark = pytest.mark.acceptance

EXTRA_TRIGGER = "customer.subscription.paused"
EXTRA_FLOW = {
    "name": "paused",
    "trigger": EXTRA_TRIGGER,
    "action": "add_tag",
    "options": {"tags": ["paused"]},
    "fields": {"stripe_customer_id": "customer"},
}


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe(locations=1) as server:
        yield server


def _deploy(snapshots: Snapshots) -> None:
    snapshots.extra_env["SNAPSHOTS_PUBLIC_URL"] = snapshots.base_url
    snapshots.cli("migrate")
    snapshots.serve()


def _prebuilt_events() -> list[str]:
    return endpoint.desired_events(flowfile.parse(flowfile.default_text(), "prebuilt"))


def _only_endpoint(fake: FakeStripe) -> dict[str, Any]:
    (found,) = fake.webhook_endpoints()
    return found


def test_connect_without_a_secret_manages_the_endpoint_from_start_to_removal(
    snapshots: Snapshots, fake: FakeStripe
) -> None:
    _deploy(snapshots)

    # 1. One command: the endpoint is made in Stripe with the right URL and event list.
    done = snapshots.cli_json(
        "connect", "stripe", "--secret-key", fake.secret_key, "--api-base", fake.api_base, "--json"
    )
    connection_id = done["id"]
    made = _only_endpoint(fake)
    assert made["url"] == f"{snapshots.base_url}/webhooks/stripe/{connection_id}"
    assert made["enabled_events"] == _prebuilt_events()
    assert "*" not in made["enabled_events"]
    assert "customer.synced" not in made["enabled_events"]  # made by Snapshots, not Stripe
    assert made["metadata"]["snapshots_connection"] == connection_id
    assert done["endpoint_created"] is True
    assert done["events"] == len(made["enabled_events"])
    assert done["endpoint_id"] == made["id"]
    assert made["secret"] not in str(done)  # stored encrypted, never printed

    # 2. An event Stripe signs with the secret it issued is accepted and applied.
    customer = fake.create_customer(email="onboarded@example.com", name="Onboarded")

    def applied() -> None:
        assert [d["status"] for d in fake.deliveries()] == [200]
        listed = snapshots.cli_json("events", "list", "--json")
        received = [e for e in listed if e["event_type"] == "customer.created"]
        assert [e["status"] for e in received] == ["done"]  # (the watcher adds its own)

    eventually(applied, timeout=30)
    assert customer["id"]

    # 3. Flows that add a trigger: the endpoint's list grows in the same command.
    exported = yaml.safe_load(snapshots.cli("flows", "export").stdout)
    exported["flows"].append(EXTRA_FLOW)
    (snapshots.home / "flows.yaml").write_text(yaml.safe_dump(exported, sort_keys=False))
    imported = snapshots.cli("flows", "import", "flows.yaml")
    assert f"now listens to {len(_prebuilt_events()) + 1} event types" in imported.stdout
    assert EXTRA_TRIGGER in _only_endpoint(fake)["enabled_events"]

    # 4. Stripe disables the endpoint: the check says so and fails; --repair fixes it.
    assert snapshots.cli("connections", "check").returncode == 0
    fake.set_endpoint_status(made["id"], "disabled")
    checked = snapshots.cli("connections", "check", ok=False)
    assert checked.returncode == 1
    assert "Stripe has disabled the webhook endpoint" in checked.stdout
    assert "--repair" in checked.stdout
    listed = snapshots.cli("connections", "list").stdout
    assert "failing" in listed
    repaired = snapshots.cli("connect", "stripe", "--repair")
    assert "enabled it again" in repaired.stdout
    assert _only_endpoint(fake)["status"] == "enabled"
    assert snapshots.cli("connections", "check").returncode == 0

    # 5. Removing the connection deletes its endpoint.
    removed = snapshots.cli("connections", "remove", connection_id)
    assert f"deleted its webhook endpoint {made['id']}" in removed.stdout
    assert fake.webhook_endpoints() == []


def test_a_restricted_key_without_terminal_connects_and_the_watcher_does_not_poll(
    snapshots: Snapshots, fake: FakeStripe
) -> None:
    key = f"rk_test_{secrets.token_hex(8)}"
    fake.set_permissions(
        key, ["customers:read", "invoices:read", "events:read", "webhook_endpoints:write"]
    )
    snapshots.extra_env["SNAPSHOTS_PUBLIC_URL"] = snapshots.base_url
    snapshots.cli("migrate")
    connected = snapshots.cli("connect", "stripe", "--secret-key", key, "--api-base", fake.api_base)
    text = " ".join(connected.stdout.split())
    assert "Terminal locations" in text
    assert "the location watcher is off for this connection" in text
    assert "created the webhook endpoint" in text

    snapshots.serve()

    def checked() -> None:  # the worker's schedule ran: its connection check is stored
        found = snapshots.cli_json("connections", "list", "--json")
        assert found[0]["health"] == "healthy"

    eventually(checked, timeout=30)
    polled = [r for r in fake.requests() if r["path"] == "/v1/terminal/locations"]
    assert len(polled) == 1  # the probe at connect time, never the watcher
    listed = " ".join(snapshots.cli("connections", "list").stdout.split())
    assert "location watcher is off" in listed

    synced = snapshots.cli("sync", "--objects", "locations")
    assert synced.returncode == 0
    status = " ".join(snapshots.cli("sync", "--status").stdout.split())
    assert "skipped" in status
    assert "Terminal locations: not allowed by this key" in status
