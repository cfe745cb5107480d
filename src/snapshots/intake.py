"""Intake: a webhook becomes an inbox item, or a clear refusal.

Order of checks: the signature first, over the raw bytes (never trust an unsigned body), then
the shape of the event. The raw bytes are what is stored. Nothing here applies an event: the
answer goes back as soon as the item is committed, and a worker does the rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import stripe

from snapshots import errors, ids, inbox
from snapshots.flows import Registry
from snapshots.store.db import Database

API_VERSION = re.compile(r"[A-Za-z0-9_.\-]{1,100}")  # 2026-07-29.dahlia
EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


@dataclass(frozen=True)
class Receipt:
    item_id: int
    event_id: str
    event_type: str
    status: str
    duplicate: bool

    def public(self) -> dict[str, Any]:
        return {
            "received": True,
            "item_id": self.item_id,
            "event_id": self.event_id,
            "type": self.event_type,
            "status": self.status,
            "duplicate": self.duplicate,
        }


def _signature_error(message: str) -> errors.BadRequest:
    if message.startswith("Timestamp outside the tolerance zone"):
        return errors.BadRequest(
            "the Stripe-Signature timestamp is outside the tolerance window (replayed or the clock is off)",
            code="timestamp_outside_tolerance",
        )
    if message.startswith(("Unable to extract", "No signatures found with expected scheme")):
        return errors.BadRequest(
            "the Stripe-Signature header is malformed: expected t=<unix time>,v1=<hex signature>",
            code="malformed_signature",
        )
    return errors.BadRequest(
        "no v1 signature in Stripe-Signature matches any signing secret of this connection",
        code="signature_mismatch",
    )


def verify(payload: bytes, header: str | None, secrets: list[str], *, tolerance: int) -> None:
    """Raise BadRequest unless one `v1` signature matches one of `secrets` (rotation)."""
    if not header:
        raise errors.BadRequest("the Stripe-Signature header is missing", code="missing_signature")
    if not header.isascii():
        # The SDK's constant-time compare refuses non-ASCII strings; no real signature has any.
        raise _signature_error("Unable to extract timestamp and signatures from header")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BadRequest("the body is not UTF-8 JSON", code="invalid_body") from exc
    failures: list[str] = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            failures.append(str(exc.user_message or exc))
    # A stale timestamp is only reported after a signature matched: say that, it is the cause.
    stale = [f for f in failures if f.startswith("Timestamp outside")]
    raise _signature_error((stale or failures or [""])[0])


def parse_event(payload: bytes) -> dict[str, Any]:
    """The event envelope, checked enough to store and route it."""
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise errors.BadRequest("the body is not valid JSON", code="invalid_json") from exc
    if not isinstance(event, dict) or event.get("object") != "event":
        raise errors.BadRequest(
            'the body is not a Stripe event (object != "event")', code="not_an_event"
        )
    problems = []
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    if not isinstance(event_id, str) or not ids.plausible(event_id):
        problems.append("id")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        problems.append("type")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**62:
        problems.append("created")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        problems.append("data.object")
    if not isinstance(event.get("livemode", False), bool):
        problems.append("livemode")
    api_version = event.get("api_version")
    if api_version is not None and not (
        isinstance(api_version, str) and API_VERSION.fullmatch(api_version)
    ):
        problems.append("api_version")
    if problems:
        raise errors.BadRequest(
            f"the Stripe event is missing or has a bad {', '.join(problems)}", code="not_an_event"
        )
    return event


def store(
    db: Database,
    registry: Registry,
    *,
    connection_id: str,
    event: dict[str, Any],
    payload: bytes,
    source: str = "webhook",
) -> Receipt:
    """Commit the raw event to the inbox (once per connection and event id)."""
    with db.write() as conn:
        item_id, status, duplicate = inbox.enqueue(
            conn,
            connection_id=connection_id,
            event=event,
            payload=payload,
            source=source,
            wanted=registry.wants(event["type"]),
        )
    return Receipt(item_id, event["id"], event["type"], status, duplicate)


def receive(
    db: Database,
    registry: Registry,
    *,
    connection_id: str,
    secrets: list[str],
    payload: bytes,
    signature: str | None,
    tolerance: int,
) -> Receipt:
    """Verify, parse and store one webhook delivery."""
    verify(payload, signature, secrets, tolerance=tolerance)
    event = parse_event(payload)
    return store(db, registry, connection_id=connection_id, event=event, payload=payload)
