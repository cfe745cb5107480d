"""Refetch mode: re-read an event's object from Stripe before applying it.

A connection set to `--ordering refetch` trusts Stripe's current object over the event's
snapshot, which settles same-second ties and late deliveries with Stripe's truth. The event is
applied as of the moment of the read (its `created` becomes that second), so whichever copy of
an object was read last wins. An object Stripe no longer has turns the event into its
`.deleted` kind. Objects Snapshots cannot re-read, and `*.synced` events (read just now
anyway), are applied as delivered.
"""

from __future__ import annotations

import time
from typing import Any

from snapshots import errors, stripe_api

# Stripe `object` -> the path its objects are read at.
PATHS = {
    "customer": "/v1/customers",
    "invoice": "/v1/invoices",
    "terminal.location": "/v1/terminal/locations",
    "charge": "/v1/charges",
    "payment_intent": "/v1/payment_intents",
    "subscription": "/v1/subscriptions",
    "product": "/v1/products",
    "price": "/v1/prices",
    "refund": "/v1/refunds",
}


def refetched(client: stripe_api.Stripe, event: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """`event` with its object as Stripe has it now (see the module docstring). `known` is the
    set of event types, to name the `.deleted` kind of an object that is gone."""
    obj = event.get("data", {}).get("object") or {}
    kind, object_id = obj.get("object"), obj.get("id")
    path = PATHS.get(str(kind))
    if path is None or not isinstance(object_id, str) or event["type"].endswith(".synced"):
        return event
    what = f"re-reading {kind} {object_id}"
    try:
        fresh = client.get(what, f"{path}/{object_id}")
    except errors.StripeNotFound:
        fresh = {"deleted": True}
    if fresh.get("deleted"):  # Stripe keeps only a stub: the last fields known are the event's
        fresh = {**obj, "deleted": True}
    read_at = int(time.time())
    event_type = event["type"]
    deleted_type = f"{kind}.deleted"
    if fresh.get("deleted") and not event_type.endswith(".deleted") and deleted_type in known:
        event_type = deleted_type
    return {
        **event,
        "type": event_type,
        "created": max(int(event["created"]), read_at),
        "data": {"object": fresh},
    }
