"""The location watcher: Stripe sends no event when a Terminal location changes, so it is polled.

A poll lists `GET /v1/terminal/locations`, compares each location with the fingerprint of what
the last poll saw, and enqueues synthetic `terminal.location.created|updated|deleted` events,
which the worker applies like any other (one path for every event). The new fingerprints and
the events commit in one transaction: a poll that dies half-way leaves the last one standing.
It also refreshes the account's default currency (a location's currency unless mapped).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from snapshots import connections, errors, ids, inbox, stripe_api
from snapshots.connections import Connection
from snapshots.store import tables
from snapshots.store.db import Database

log = logging.getLogger("snapshots.watcher")
W = tables.watched_locations
PATH = "/v1/terminal/locations"
SOURCE = "watcher"


@dataclass(frozen=True)
class Poll:
    seen: int
    created: int
    updated: int
    deleted: int

    @property
    def changes(self) -> int:
        return self.created + self.updated + self.deleted


def fingerprint(location: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(location, sort_keys=True).encode()).hexdigest()


def synthetic_event(
    event_type: str, obj: dict[str, Any], *, connection: Connection, created: int
) -> dict[str, Any]:
    """A Stripe-shaped event made by Snapshots (Stripe has none for this change)."""
    return {
        "id": ids.ordered("evt_snp_"),  # a later poll's event wins a same-second tie
        "object": "event",
        "api_version": connection.api_version,
        "created": created,
        "data": {"object": obj},
        "livemode": bool(obj.get("livemode", connection.livemode)),
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def refresh_account(db: Database, client: stripe_api.Stripe, connection: Connection) -> None:
    """Re-read the account's default currency. A server without `/v1/account` (localstripe)
    or a restricted key without access leaves the remembered one."""
    try:
        account = client.account()
    except errors.StripeError as exc:
        if isinstance(exc, errors.StripeAuthError | errors.StripeUnavailable):
            raise
        return
    currency = account.get("default_currency")
    if currency:  # (the connection in hand may be a cached copy: the UPDATE skips no-ops)
        with db.write() as tx:
            connections.set_default_currency(tx, connection.id, currency)


def poll(
    db: Database, client: stripe_api.Stripe, connection: Connection, registry: inbox.Wants
) -> Poll:
    """Compare Stripe's locations with what the last poll saw and enqueue the differences."""
    refresh_account(db, client, connection)
    current: dict[str, str] = {}
    objects: dict[str, dict[str, Any]] = {}
    for page in client.pages("listing Terminal locations", PATH):
        for location in page.data:
            current[location["id"]] = fingerprint(location)
            objects[location["id"]] = location
    now = time.time()
    created = int(now)
    arrivals: list[inbox.Arrival] = []
    counts = {"created": 0, "updated": 0, "deleted": 0}

    def add(kind: str, obj: dict[str, Any]) -> None:
        event = synthetic_event(
            f"terminal.location.{kind}", obj, connection=connection, created=created
        )
        payload = json.dumps(event, separators=(",", ":")).encode()
        arrivals.append(
            inbox.Arrival(connection.id, event, payload, SOURCE, registry.wants(event["type"]))
        )
        counts[kind] += 1

    with db.write() as tx:
        seen = {
            row.stripe_location_id: row.fingerprint
            for row in tx.execute(
                sa.select(W.c.stripe_location_id, W.c.fingerprint).where(
                    W.c.connection_id == connection.id
                )
            )
        }
        for location_id, print_ in current.items():
            if location_id not in seen:
                add("created", objects[location_id])
            elif seen[location_id] != print_:
                add("updated", objects[location_id])
        gone = sorted(seen.keys() - current.keys())
        for location_id in gone:
            add("deleted", {"id": location_id, "object": "terminal.location", "deleted": True})
        if arrivals:
            inbox.enqueue_many(tx, arrivals)
        if gone:
            tx.execute(
                W.delete().where(
                    W.c.connection_id == connection.id, W.c.stripe_location_id.in_(gone)
                )
            )
        changed = [
            {
                "connection_id": connection.id,
                "stripe_location_id": k,
                "fingerprint": v,
                "seen_at": now,
            }
            for k, v in current.items()
            if seen.get(k) != v
        ]
        if changed:
            tx.execute(
                W.delete().where(
                    W.c.connection_id == connection.id,
                    W.c.stripe_location_id.in_([row["stripe_location_id"] for row in changed]),
                )
            )
            tx.execute(W.insert(), changed)
    result = Poll(len(current), counts["created"], counts["updated"], counts["deleted"])
    if result.changes:
        log.info(
            "%s: %d locations, %d new, %d changed, %d gone",
            connection.id,
            result.seen,
            result.created,
            result.updated,
            result.deleted,
        )
    return result
