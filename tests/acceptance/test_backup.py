"""Backup and restore with real processes: `snapshots backup` while `snapshots serve` takes a
steady stream of signed webhooks, then `snapshots restore` into a new home and a `serve` on the
restored copy with the master key that was copied beside the backup. Every event acknowledged
before the backup began must be there, applied, with the contact it describes."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fixture, sign
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

from .conftest import Snapshots, eventually, free_port

pytestmark = pytest.mark.acceptance

WEBHOOK_SECRET = "whsec_backup_acceptance_0123456789"
SETTINGS = {
    "SNAPSHOTS_LOCATION_POLL_INTERVAL": "86400",  # no pulls from Stripe in the way
    "SNAPSHOTS_RECONCILE_INTERVAL": "86400",
    # Items the first serve's worker had claimed when the backup was taken come back this soon.
    "SNAPSHOTS_LEASE": "3",
}
BEFORE_BACKUP = 100  # events acknowledged before the backup starts, at least
LOAD_TIMEOUT = 30.0  # seconds to get them acknowledged
DRAIN_TIMEOUT = 60.0  # seconds for the restored serve's worker to apply everything


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe() as running:
        yield running


def customer_event(n: int) -> dict[str, Any]:
    """`customer.created` number n: a customer of its own, so the expected contact is plain."""
    obj = fixture("customer")
    obj.update(
        id=f"cus_backup{n:06d}",
        email=f"customer{n}@example.com",
        name=f"Customer {n}",
        phone=None,
        metadata={"n": str(n)},
        created=int(time.time()) - 60,
    )
    return {
        "id": f"evt_backup{n:08d}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created",
    }


class Load:
    """Posts signed webhooks one after another from a thread; remembers which were
    acknowledged (200), in order."""

    def __init__(self, base_url: str, connection_id: str) -> None:
        self.url = f"{base_url}/webhooks/stripe/{connection_id}"
        self.events: dict[str, dict[str, Any]] = {}
        self.acknowledged: list[str] = []
        self.refused: list[tuple[str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-load")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=10.0) as http:
            n = 0
            while not self._stop.is_set():
                event = customer_event(n)
                payload = json.dumps(event).encode()
                self.events[event["id"]] = event
                response = http.post(
                    self.url,
                    content=payload,
                    headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
                )
                if response.status_code == 200:
                    self.acknowledged.append(event["id"])
                else:
                    self.refused.append((event["id"], response.status_code, response.text))
                n += 1


def inbox(deployment: Snapshots) -> dict[str, dict[str, Any]]:
    items = deployment.cli_json("events", "list", "--limit", "10000", "--json")
    return {item["event_id"]: item for item in items}


def contacts(deployment: Snapshots, key: str) -> dict[str, dict[str, Any]]:
    """Every contact, by Stripe customer id, through the REST API."""
    found: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 100}
    with deployment.api(key) as api:
        for _ in range(1000):
            response = api.get("/v1/customers", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            found |= {c["stripe_customer_id"]: c for c in body["data"]}
            if not body["has_more"]:
                return found
            params["starting_after"] = body["data"][-1]["id"]
    raise AssertionError("/v1/customers did not stop paging")


def test_a_backup_under_webhook_load_restores_every_acknowledged_event(
    snapshots: Snapshots, fake: FakeStripe, tmp_path: Path
) -> None:
    # 1. A deployment with its master key in a generated key file, taking webhooks.
    snapshots.extra_env.update(SETTINGS)
    snapshots.cli("migrate")
    connection = snapshots.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        fake.secret_key,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--api-base",
        fake.api_base,
        "--json",
    )
    key_file = snapshots.home / "snapshots.db.key"
    assert key_file.exists()
    snapshots.serve()
    backups = tmp_path / "backups"
    backups.mkdir()
    copy = backups / "snapshots-backup.db"

    # 2. `snapshots backup` in the middle of the load.
    with Load(snapshots.base_url, connection["id"]) as load:

        def enough() -> None:
            assert len(load.acknowledged) >= BEFORE_BACKUP, load.refused[:3]

        eventually(enough, timeout=LOAD_TIMEOUT, interval=0.05)
        before = list(load.acknowledged)
        made = snapshots.cli("backup", str(copy))
        during = len(load.acknowledged) - len(before)
        # A restore while serve runs is refused, and changes nothing.
        refused = snapshots.cli("restore", str(copy), ok=False)
        time.sleep(0.5)
    assert not load.refused, f"webhooks refused during the backup: {load.refused[:5]}"
    assert during > 0, "no webhook was acknowledged while the backup ran"
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: the database is in use by a running snapshots process (serve, worker or sync): "
        "stop them first"
    )
    lines = made.stdout.splitlines()
    assert lines[0].startswith(f"backed up {snapshots.home / 'snapshots.db'} to {copy} (")
    assert lines[1].startswith(f"master key copied to {copy}.key (0600): keep it with the backup")
    for path in (copy, Path(f"{copy}.key")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert Path(f"{copy}.key").read_text() == key_file.read_text()
    snapshots.stop_all()

    # 3. Restore into a new home (no database, no key), then serve the restored copy.
    restored = Snapshots(home=tmp_path / "restored", port=free_port(), extra_env=dict(SETTINGS))
    restored.home.mkdir()
    try:
        done = restored.cli("restore", str(copy))
        assert done.stdout.splitlines()[0].startswith(
            f"restored {copy} into {restored.home / 'snapshots.db'} ("
        )
        assert done.stderr == "", done.stderr  # no warning: the key decrypts the secrets
        assert (restored.home / "snapshots.db.key").read_text() == key_file.read_text()
        restored.serve()

        def drained() -> dict[str, dict[str, Any]]:
            items = inbox(restored)
            missing = [e for e in before if e not in items]
            assert not missing, f"{len(missing)} acknowledged events are not in the copy"
            unfinished = {
                i["event_id"]: i["status"] for i in items.values() if i["status"] != "done"
            }
            assert not unfinished, f"not applied yet: {list(unfinished.items())[:5]}"
            return items

        items = eventually(drained, timeout=DRAIN_TIMEOUT, interval=1.0)
        assert set(items) <= set(load.events), "the copy holds events nobody sent"

        # 4. The records are what those events say.
        created = restored.cli_json(
            "keys", "create", "--name", "check", "--scope", "contacts.readonly", "--json"
        )
        found = contacts(restored, created["secret"])
        wrong = {}
        for event_id in items:
            customer = load.events[event_id]["data"]["object"]
            contact = found.get(customer["id"])
            shown = (
                None if contact is None else {k: contact[k] for k in ("email", "name", "metadata")}
            )
            if shown != {k: customer[k] for k in ("email", "name", "metadata")}:
                wrong[customer["id"]] = shown
        assert not wrong, f"contacts that do not match their event: {list(wrong.items())[:5]}"
        assert len(found) == len(items)

        # 5. The restored serve decrypts the signing secret with the restored key: a new
        # webhook is accepted and applied.
        event = customer_event(999_999)
        payload = json.dumps(event).encode()
        with httpx.Client(base_url=restored.base_url, trust_env=False, timeout=10.0) as http:
            response = http.post(
                f"/webhooks/stripe/{connection['id']}",
                content=payload,
                headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
            )
        assert response.status_code == 200, response.text

        def applied() -> None:
            assert inbox(restored)[event["id"]]["status"] == "done"

        eventually(applied, timeout=DRAIN_TIMEOUT, interval=0.5)
    except AssertionError as exc:
        logs = "".join(f"\n--- {name} (restored home)\n{text}" for name, text in restored.logs())
        raise AssertionError(f"{exc}{logs}") from None
    finally:
        restored.stop_all()
