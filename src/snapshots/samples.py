"""Sample events of any type, for validating filters and for `snapshots send-test-event`.

The object of a sample is Stripe's example object for its type (`data/fixtures/`, from
Stripe's OpenAPI fixtures), moved to the state its event type says (a sample `invoice.paid`
carries a paid invoice). Example ids are kept, so the examples refer to each other (a sample
subscription's customer is the sample customer); an object type without an example gets the
fields every Stripe object has and a fresh id. Event types and their objects come from
`data/event-types.json`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import httpx
import stripe
from pydantic import BaseModel, Field

from snapshots import audit, errors, ids, inbox
from snapshots.store.db import Database, Tx

if TYPE_CHECKING:
    from snapshots.flows import Registry

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


def _later(obj: dict[str, Any], now: int) -> int:
    """A moment after the example was created (a fixed one: samples map the same each time)."""
    created = obj.get("created")
    return int(created) + 3600 if isinstance(created, int) else now


def _paid(obj: dict[str, Any], now: int) -> dict[str, Any]:
    due = obj.get("amount_due") or 0
    transitions = dict(obj.get("status_transitions") or {}) | {"paid_at": _later(obj, now)}
    return {
        "status": "paid",
        "amount_paid": due,
        "amount_remaining": 0,
        "attempted": True,
        "attempt_count": 1,
        "status_transitions": transitions,
    }


# Event type -> the changes that put the example object in the state the event reports.
_STATES: dict[str, Any] = {
    "invoice.finalized": lambda o, now: {"status": "open"},
    "invoice.sent": lambda o, now: {"status": "open"},
    "invoice.overdue": lambda o, now: {"status": "open", "due_date": _later(o, now)},
    "invoice.payment_failed": lambda o, now: {
        "status": "open",
        "attempted": True,
        "attempt_count": 1,
    },
    "invoice.payment_action_required": lambda o, now: {"status": "open", "attempted": True},
    "invoice.paid": _paid,
    "invoice.payment_succeeded": _paid,
    "invoice.voided": lambda o, now: {"status": "void"},
    "invoice.marked_uncollectible": lambda o, now: {"status": "uncollectible"},
    "customer.subscription.deleted": lambda o, now: {
        "status": "canceled",
        "ended_at": _later(o, now),
    },
    "customer.subscription.paused": lambda o, now: {"status": "paused"},
    "charge.refunded": lambda o, now: {"refunded": True, "amount_refunded": o.get("amount")},
    "charge.failed": lambda o, now: {"status": "failed", "paid": False},
}


def sample_event(
    event_type: str, *, obj: dict[str, Any] | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """A Stripe-shaped event of `event_type` carrying `obj` (default: a sample object)."""
    if obj is None:
        kind = event_objects().get(event_type, event_type.rsplit(".", 1)[0])
        obj = sample_object(kind, deleted=event_type.endswith(".deleted"))
        state = _STATES.get(event_type)
        if state is not None:
            obj |= state(obj, int(time.time()))
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


def as_event(data: Any, event_type: str | None, *, where: str) -> dict[str, Any]:
    """A Stripe event to try flows on: `data` when it is one, else `data` as the object of a
    sample `event_type` event (`where` names the source in errors)."""
    if not isinstance(data, dict):
        raise errors.BadRequest(f"{where}: give a Stripe event or object (a JSON object)")
    if data.get("object") == "event" and isinstance(data.get("data"), dict):
        if not isinstance(data["data"].get("object"), dict) or not data.get("type"):
            raise errors.BadRequest(f"{where}: the event has no type or no data.object")
        return data
    if event_type is None:
        raise errors.BadRequest(
            f"{where} holds a {data.get('object') or 'JSON'} object, not an event: give --type"
        )
    return sample_event(event_type, obj=data, event_id="evt_mappings_test")


# `snapshots send-test-event`: a signed test event through the real webhook endpoint.

WAIT_POLL = 0.1  # seconds between looks at the inbox item


class Trace(BaseModel):
    """What became of a test event: received -> flows matched -> fields written -> records."""

    event_id: str
    type: str
    http_status: int
    item_id: int | None = None
    status: str = "not received"
    flows: list[str] = Field(default_factory=list)
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict)
    records: list[str] = Field(default_factory=list)
    error: str | None = None
    flows_version: int | None = Field(
        default=None,
        description="The flows version of `fields`: the one that applied the event, once one did",
    )


def send_test_events(
    db: Database,
    secrets: list[str],
    registry: Registry,
    *,
    url: str,
    events: list[dict[str, Any]],
    sender: Sender,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
    flows_at: FlowsAt | None = None,
) -> list[Trace]:
    """Post each event, signed with the connection's first signing secret, to `url` (the
    connection's webhook endpoint), then wait until a worker has applied each one."""
    http = client or httpx.Client(timeout=10.0)
    try:
        traces = [
            send(db, secrets, registry, url=url, event=event, client=http, sender=sender)
            for event in events
        ]
    finally:
        if client is None:
            http.close()
    _wait(db, traces, timeout, flows_at)
    return traces


@dataclass(frozen=True)
class Sender:
    """Who sends test events (`cli:<user>`, `ui:<email>`) and through which connection."""

    actor: str
    connection_id: str


def send(
    db: Database,
    secrets: list[str],
    registry: Registry,
    *,
    url: str,
    event: dict[str, Any],
    client: httpx.Client,
    sender: Sender,
) -> Trace:
    """`post` one test event, with an audit entry (`event.test_sent`: who, which event through
    which connection, and the endpoint's answer)."""
    trace = post(secrets, registry, url=url, event=event, client=client)
    with db.write() as tx:
        audit.record(
            tx,
            actor=sender.actor,
            action="event.test_sent",
            target=trace.event_id,
            outcome="ok" if trace.http_status < 300 else "error",
            details={
                "type": trace.type,
                "connection_id": sender.connection_id,
                "http_status": trace.http_status,
            },
        )
    return trace


def post(
    secrets: list[str],
    registry: Registry,
    *,
    url: str,
    event: dict[str, Any],
    client: httpx.Client,
) -> Trace:
    """Post one event, signed with the connection's first signing secret, to `url` (the
    connection's webhook endpoint): its trace as received, with the fields the flows in force
    would write (`follow` sees what the worker did)."""
    if not secrets:
        raise errors.ConfigError("the connection has no webhook signing secret")
    payload = json.dumps(event, indent=2).encode()
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), secrets[0])
    try:
        response = client.post(
            url,
            content=payload,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise errors.Unavailable(
            f"cannot reach the webhook endpoint {url}: {exc}; is `snapshots serve` "
            "running there (SNAPSHOTS_PUBLIC_URL, or --url)?"
        ) from exc
    trace = Trace(event_id=event["id"], type=event["type"], http_status=response.status_code)
    if response.status_code >= 300:
        trace.error = _error_of(response)
    else:
        _fields(trace, registry, event)
    return trace


FlowsAt = Callable[[Tx, int], "Registry"]  # the flows of a version (`revisions.at`)


def follow(tx: Tx, trace: Trace, flows_at: FlowsAt | None = None) -> bool:
    """Bring a trace up to date with its inbox item; True once the worker is done with it.
    The fields are the ones the version that applied it writes (from `flows_at`), when that
    is not the version they were computed with (a save between the post and the apply)."""
    if trace.http_status >= 300:
        return True
    item = inbox.get(tx, trace.event_id)
    trace.item_id = item.id
    trace.status = item.status
    if item.status in ("pending", "processing"):
        return False
    trace.flows, trace.records = item.flows, item.records
    trace.error = item.last_error
    version = item.flows_version
    if flows_at is not None and version is not None and version != trace.flows_version:
        _fields(trace, flows_at(tx, version), json.loads(inbox.payload(tx, item.id)))
    trace.fields = {k: v for k, v in trace.fields.items() if k in trace.flows}
    return True


def trace(
    tx: Tx, registry: Registry, event_id: str, *, http_status: int = 200, flows_at: FlowsAt
) -> Trace:
    """The trace of a test event received earlier (`post` answered `http_status`), read again
    from its inbox item: for a page that follows it while the worker applies it. Its fields
    are the ones of the version that applied it (`flows_at`), else of `registry`."""
    item = inbox.get(tx, event_id)
    found = Trace(event_id=event_id, type=item.event_type, http_status=http_status)
    if item.flows_version is None:
        _fields(found, registry, json.loads(inbox.payload(tx, item.id)))
    follow(tx, found, flows_at)
    return found


def _fields(trace: Trace, registry: Registry, event: dict[str, Any]) -> None:
    trace.fields = {flow.name: values for flow, values in _plan(registry, event)}
    trace.flows_version = registry.version


def _plan(registry: Registry, event: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    try:
        return registry.plan(event)
    except errors.SnapshotsError:
        return []  # the worker records the failure on the item: the trace shows it


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _wait(db: Database, traces: list[Trace], timeout: float, flows_at: FlowsAt | None) -> None:
    deadline = time.monotonic() + timeout
    waiting = [t for t in traces if t.http_status < 300]
    while waiting:
        with db.read() as tx:
            waiting = [trace for trace in waiting if not follow(tx, trace, flows_at)]
        if waiting and time.monotonic() > deadline:
            for trace in waiting:
                trace.error = (
                    f"no worker applied it within {timeout:.0f} s: is `snapshots serve` (with "
                    "its worker) or `snapshots worker` running?"
                )
            return
        if waiting:
            time.sleep(WAIT_POLL)
