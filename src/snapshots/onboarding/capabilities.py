"""What a Stripe key may do: each capability Snapshots needs, probed with a one-object read.

A restricted key (`rk_...`) may lack some. A missing one turns something off for its
connection (the table says what) instead of failing every poll: the watcher and sync consult
the stored result (`off`) and skip with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from snapshots import errors, stripe_api

Name = Literal["customers", "invoices", "terminal_locations", "events", "webhook_endpoints"]


class Capability(BaseModel):
    """One thing Snapshots needs from a key: allowed or not, and what a missing one turns off."""

    model_config = ConfigDict(frozen=True)

    name: Name
    label: str
    allowed: bool
    consequence: str | None = None


# name, label, the path read to probe it, what is off without it
NEEDS: tuple[tuple[Name, str, str, str], ...] = (
    (
        "customers",
        "Customers",
        "/v1/customers",
        "contacts are not backfilled and customer events are not re-read for this connection",
    ),
    (
        "invoices",
        "Invoices",
        "/v1/invoices",
        "invoices are not backfilled and invoice events are not re-read for this connection",
    ),
    (
        "terminal_locations",
        "Terminal locations",
        "/v1/terminal/locations",
        "the location watcher is off for this connection",
    ),
    (
        "events",
        "Events",
        "/v1/events",
        "missed webhooks are not reconciled from Stripe's event list for this connection",
    ),
    (
        "webhook_endpoints",
        "Webhook endpoints (write)",
        "/v1/webhook_endpoints",
        "Snapshots cannot create or update its webhook endpoint: give --webhook-secret and "
        "register the endpoint in the Stripe dashboard",
    ),
)


def probe(client: stripe_api.Stripe, *, managed: bool) -> list[Capability]:
    """Ask Stripe what the key may do (one `limit=1` read each). Only a permission refusal
    (403) counts as "not allowed": a server that lacks an endpoint (localstripe has no
    Terminal) is not the key's fault. A refused key or an unreachable Stripe raises."""
    found = []
    for name, label, path, consequence in NEEDS:
        if name == "webhook_endpoints" and not managed:
            continue
        try:
            client.get(f"checking that the key may read {label.lower()}", path, limit=1)
            allowed = True
        except errors.StripeForbidden:
            allowed = False
        except errors.StripeError as exc:
            if isinstance(exc, errors.StripeAuthError | errors.StripeUnavailable):
                raise
            allowed = True
        found.append(
            Capability(
                name=name,
                label=label,
                allowed=allowed,
                consequence=None if allowed else consequence,
            )
        )
    return found


def off(found: Sequence[Capability] | None, name: str) -> str | None:
    """Why `name` is off for a connection (its consequence), or None when it is allowed or
    was never probed (a connection made before probing existed keeps working as it did)."""
    for capability in found or ():
        if capability.name == name and not capability.allowed:
            return f"{capability.label}: not allowed by this key: {capability.consequence}"
    return None


def require_enough(found: Sequence[Capability]) -> None:
    """A key must read customers or invoices to be worth connecting."""
    allowed = {c.name for c in found if c.allowed}
    if not allowed & {"customers", "invoices"}:
        raise errors.BadRequest(
            "this key may read neither customers nor invoices: give the restricted key read "
            "access to them in the Stripe dashboard (or use a secret key)",
            code="key_not_enough",
        )
