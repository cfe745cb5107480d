"""The webhook endpoint Snapshots manages in Stripe for a connection.

Its `enabled_events` are exactly the real Stripe event types the flows in force trigger on:
wildcards expanded against the catalog, never `*` (Stripe would send everything), the types
Snapshots makes itself left out. An import or rollback of flows marks every managed endpoint
`endpoint_pending` in its own transaction (`revisions`); `follow_flows` then sends the new list,
at once from the command or request that imported, and again from the worker's schedule until
Stripe has it.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from snapshots import connections, errors, flows, revisions, samples, stripe_api
from snapshots.connections import Connection
from snapshots.store.db import Database
from snapshots.vault import Vault

log = logging.getLogger("snapshots.onboarding")
PATH = "/v1/webhook_endpoints"
RETRY_INTERVAL = 60.0  # seconds between the worker's tries to send a pending event list


class EndpointSync(BaseModel):
    """What sending the flows' event list to one managed endpoint did."""

    connection_id: str
    endpoint_id: str
    events: int
    synced: bool
    error: str | None = None


def desired_events(registry: flows.Registry) -> list[str]:
    """The Stripe event types the flows trigger on, wildcards expanded, synthetic ones out."""
    return sorted(
        t
        for t in flows.known_event_types()
        if t not in samples.SYNTHETIC_OBJECTS and registry.wants(t)
    )


def webhook_url(base: str, connection_id: str) -> str:
    return f"{base.rstrip('/')}/webhooks/stripe/{connection_id}"


def _local(host: str) -> bool:
    """A loopback, private or link-local address, or a name that means this machine."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def public_base(url: str | None, *, api_base: str | None) -> str:
    """The base URL Stripe will post webhooks to, checked: an http(s) URL with a host that
    Stripe can reach. A loopback or private address is refused, unless the Stripe API itself is
    a local Stripe-compatible server (`--api-base` on this machine or network), which can."""
    fix = "set SNAPSHOTS_PUBLIC_URL (or --public-url) to the address Stripe reaches this server at"
    manual = "or give --webhook-secret and register the endpoint by hand"
    if not url:
        raise errors.BadRequest(
            f"no public URL: Stripe cannot reach this server to send webhooks; {fix}, {manual}",
            code="public_url_missing",
        )
    try:
        parsed = urllib.parse.urlsplit(url.strip())
        host = parsed.hostname
    except ValueError:  # a broken [IPv6] host
        parsed, host = urllib.parse.urlsplit(""), None
    if parsed.scheme not in ("http", "https") or not host or parsed.query or parsed.fragment:
        raise errors.BadRequest(
            f"the public URL {url!r} is not a URL like https://snapshots.example.com; {fix}",
            code="public_url_invalid",
        )
    try:
        api_host = urllib.parse.urlsplit(api_base).hostname if api_base else None
    except ValueError:
        api_host = None
    if _local(host) and not (api_host and _local(api_host)):
        raise errors.BadRequest(
            f"the public URL {url!r} is a local or private address that Stripe cannot reach; "
            f"{fix}, {manual}",
            code="public_url_private",
        )
    return url.strip().rstrip("/")


def create(
    client: stripe_api.Stripe,
    *,
    url: str,
    events: list[str],
    connection_id: str,
    name: str | None,
    api_version: str | None,
) -> dict[str, Any]:
    """Make the endpoint in Stripe; the answer carries its signing secret (only this once)."""
    if not events:
        raise errors.BadRequest(
            "the flows in force trigger on no Stripe event type: there is nothing to send to "
            "Snapshots; import flows first, or give --webhook-secret",
            code="no_events",
        )
    params: dict[str, Any] = {
        "url": url,
        "enabled_events": events,
        "description": f"Snapshots: {name or connection_id} ({connection_id})"[:500],
        "metadata": {"managed_by": "snapshots", "snapshots_connection": connection_id},
    }
    if api_version:
        params["api_version"] = api_version
    return client.send("creating the webhook endpoint", "post", PATH, **params)


def retrieve(client: stripe_api.Stripe, endpoint_id: str) -> dict[str, Any] | None:
    """The endpoint as Stripe has it, or None when it is gone."""
    try:
        return client.get("reading the webhook endpoint", f"{PATH}/{endpoint_id}")
    except errors.StripeNotFound:
        return None


def update(
    client: stripe_api.Stripe,
    endpoint_id: str,
    *,
    events: list[str],
    url: str | None = None,
    enable: bool = False,
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if events:  # none wanted: the list stays (Stripe needs one); intake ignores the rest
        params["enabled_events"] = events
    if url is not None:
        params["url"] = url
    if enable:
        params["disabled"] = False
    return client.send("updating the webhook endpoint", "post", f"{PATH}/{endpoint_id}", **params)


def delete(client: stripe_api.Stripe, endpoint_id: str) -> bool:
    """Delete the endpoint in Stripe; False when it was gone already (fine)."""
    try:
        client.send("deleting the webhook endpoint", "delete", f"{PATH}/{endpoint_id}")
    except errors.StripeNotFound:
        return False
    return True


def follow_flows(
    db: Database,
    vault: Vault,
    registry: flows.Registry,
    *,
    only_pending: bool = True,
    connection_id: str | None = None,
) -> list[EndpointSync]:
    """Send the flows' event list to each managed endpoint waiting for it (every managed one
    with `only_pending=False`). A failure leaves it pending for the worker's schedule."""
    events = desired_events(registry)
    with db.read() as tx:
        chosen: list[tuple[Connection, stripe_api.Stripe]] = [
            (c, connections.stripe_client(tx, vault, c, retries=1))
            for c in connections.list_all(tx, vault)
            if c.managed
            and (c.endpoint_pending or not only_pending)
            and connection_id in (None, c.id)
        ]
    found = []
    for connection, client in chosen:
        assert connection.endpoint_id is not None
        try:
            update(client, connection.endpoint_id, events=events)
        except errors.StripeError as exc:
            error = errors.describe(exc)
            log.warning("%s: the webhook endpoint's event list waits: %s", connection.id, error)
            found.append(
                EndpointSync(
                    connection_id=connection.id,
                    endpoint_id=connection.endpoint_id,
                    events=len(events),
                    synced=False,
                    error=f"{error}; the worker sends it again until Stripe has it",
                )
            )
            continue
        with db.write() as tx:  # a newer version imported meanwhile keeps it pending
            if revisions.current_version(tx) == registry.version:
                connections.set_endpoint_pending(tx, connection.id, False)
        found.append(
            EndpointSync(
                connection_id=connection.id,
                endpoint_id=connection.endpoint_id,
                events=len(events),
                synced=True,
            )
        )
    return found


class ImportedFlows(revisions.Revision):
    """A flows version just put in force, and what became of each managed endpoint's list."""

    previous_version: int
    endpoints: list[EndpointSync] = Field(
        default_factory=list,
        description="Each managed webhook endpoint: its new event list sent, or why not yet",
    )


def after_import(
    db: Database, vault: Callable[[], Vault], imported: revisions.Imported
) -> ImportedFlows:
    """Send the new flows' event list to every managed endpoint (the import marked them
    pending); Stripe being away leaves the version in force and the worker retrying. The
    vault is opened only when there is a managed endpoint."""
    with db.read() as tx:
        registry = revisions.current(tx)
        pending = connections.pending_endpoints(tx)
    return ImportedFlows(
        **imported.revision.model_dump(),
        previous_version=imported.previous,
        endpoints=follow_flows(db, vault(), registry) if pending else [],
    )
