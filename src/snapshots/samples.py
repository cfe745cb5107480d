"""Sample events of any type, for validating filters and for `snapshots send-test-event`.

The object of a sample is Stripe's example object for its type (`data/fixtures/`, from
Stripe's OpenAPI fixtures), with a fresh id; an object type without an example gets the fields
every Stripe object has. Event types and their objects come from `data/event-types.json`.
"""

from __future__ import annotations

import copy
import json
import time
from functools import cache
from importlib import resources
from typing import Any

from snapshots import ids

API_VERSION = "2026-07-29.dahlia"  # the version of the shipped event list and examples
TEST_PREFIX = "evt_snptest_"  # the id of an event `send-test-event` makes
# Synthetic event types (made by Snapshots) -> the object they carry.
SYNTHETIC_OBJECTS = {
    "terminal.location.created": "terminal.location",
    "terminal.location.updated": "terminal.location",
    "terminal.location.deleted": "terminal.location",
    "customer.synced": "customer",
    "invoice.synced": "invoice",
}


@cache
def event_objects() -> dict[str, str]:
    """Every event type Snapshots knows -> the Stripe object it carries (the first, for types
    Stripe documents with several: `bank_account|card`)."""
    data = resources.files("snapshots").joinpath("data/event-types.json").read_text()
    found = {entry["type"]: entry["object"].split("|")[0] for entry in json.loads(data)}
    return found | SYNTHETIC_OBJECTS


@cache
def _fixture(name: str) -> dict[str, Any] | None:
    path = resources.files("snapshots").joinpath(f"data/fixtures/{name}.json")
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def sample_object(obj: str, *, deleted: bool = False) -> dict[str, Any]:
    """Stripe's example of `obj` (a copy), or the fields every Stripe object has."""
    found = _fixture(obj)
    if found is None:
        prefix = obj.rsplit(".", 1)[-1][:8]
        return {
            "id": ids.new(f"{prefix}_test_", 14),
            "object": obj,
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
        }
    sample = copy.deepcopy(found)
    if deleted and obj == "terminal.location":
        sample = copy.deepcopy(_fixture("deleted_terminal.location") or sample)
    return sample


def sample_event(
    event_type: str, *, obj: dict[str, Any] | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """A Stripe-shaped event of `event_type` carrying `obj` (default: a sample object)."""
    if obj is None:
        kind = event_objects().get(event_type, event_type.rsplit(".", 1)[0])
        obj = sample_object(kind, deleted=event_type.endswith(".deleted"))
    return {
        "id": event_id or ids.ordered(TEST_PREFIX),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": bool(obj.get("livemode", False)),
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
