"""Connect, repair and remove a Stripe connection in one step each, leaving nothing half-done.

`connect` checks the key and what it may do, then either stores pasted signing secrets (a
manual endpoint) or creates the webhook endpoint in Stripe itself (managed) and stores the
secret from Stripe's answer; if storing fails after Stripe made the endpoint, the endpoint is
deleted again, so Stripe never keeps an endpoint no connection knows. `repair` re-enables or
re-creates a managed endpoint; `remove` deletes it with the connection. The CLI, the API and
the console call these; each returns one public model.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from snapshots import connections, errors, ids, revisions, stripe_api
from snapshots.connections import Connection
from snapshots.onboarding import capabilities, endpoint
from snapshots.store.db import Database
from snapshots.vault import Vault

log = logging.getLogger("snapshots.onboarding")


class Connected(Connection):
    """What `connect` or `repair` did: the connection, its webhook URL, the endpoint."""

    webhook_url: str
    endpoint_created: bool = Field(description="Snapshots made a webhook endpoint in Stripe")
    endpoint_enabled: bool = Field(False, description="A disabled endpoint was enabled again")
    events: int = Field(0, description="Event types the managed endpoint listens to")


def _connected(connection: Connection, **what: Any) -> Connected:
    return Connected(**(connection.model_dump() | what))


def connect(
    db: Database,
    vault: Vault,
    *,
    secret_key: str,
    webhook_secrets: list[str] | None,
    public_url: str | None,
    name: str | None = None,
    api_base: str | None = None,
    api_version: str | None = None,
    ordering: str = "payload",
    actor: str = "cli",
) -> Connected:
    """Link a Stripe account. Without `webhook_secrets`, make its webhook endpoint in Stripe
    (`public_url` + `/webhooks/stripe/{id}`, the flows' event types). No transaction is open
    while Stripe is asked."""
    secret_key = secret_key.strip()
    managed = not webhook_secrets
    secrets = [s.strip() for s in webhook_secrets or []]
    connections.validate(secret_key, None if managed else secrets, ordering, name)
    if managed:
        base = endpoint.public_base(public_url, api_base=api_base)
    else:
        base = (public_url or "").rstrip("/")
    api_version = api_version or stripe_api.PINNED_VERSION
    account = stripe_api.check_key(
        secret_key=secret_key, api_base=api_base, api_version=api_version
    )
    client = stripe_api.Stripe(
        secret_key=secret_key, api_base=api_base, api_version=api_version, retries=2
    )
    found = capabilities.probe(client, managed=managed)
    capabilities.require_enough(found)
    connection_id = ids.new("conn_")
    url = endpoint.webhook_url(base, connection_id)
    made = None
    if managed:
        with db.read() as tx:
            registry = revisions.current(tx)
        events = endpoint.desired_events(registry)
        made = endpoint.create(
            client,
            url=url,
            events=events,
            connection_id=connection_id,
            name=name,
            api_version=api_version,
        )
        secrets = [str(made.get("secret") or "")]
    try:
        with db.write() as tx:
            connection = connections.add(
                tx,
                vault,
                account=account,
                secret_key=secret_key,
                webhook_secrets=secrets,
                name=name,
                api_base=api_base,
                api_version=api_version,
                ordering=ordering,
                actor=actor,
                connection_id=connection_id,
                endpoint=None if made is None else (str(made["id"]), url),
                capabilities=found,
            )
    except BaseException:
        if made is not None:
            _undo(client, str(made["id"]))
        raise
    return _connected(
        connection,
        webhook_url=url,
        endpoint_created=made is not None,
        events=len(made.get("enabled_events") or []) if made else 0,
    )


def _undo(client: stripe_api.Stripe, endpoint_id: str) -> None:
    try:
        endpoint.delete(client, endpoint_id)
    except errors.StripeError as exc:
        log.error(
            "the webhook endpoint %s was made in Stripe but could not be stored nor deleted "
            "(%s): delete it in the Stripe dashboard",
            endpoint_id,
            errors.describe(exc),
        )


def repair(
    db: Database, vault: Vault, connection_id: str, *, public_url: str | None, actor: str = "cli"
) -> Connected:
    """Put a managed endpoint right: enable it, point it at the public URL, send the flows'
    event list; make a new one (and store its secret) when Stripe lost it."""
    with db.read() as tx:
        connection = connections.get(tx, vault, connection_id)
        client = connections.stripe_client(tx, vault, connection, retries=2)
        registry = revisions.current(tx)
    if not connection.managed:
        raise errors.BadRequest(
            f"{connection.id} uses a webhook endpoint registered by hand: fix it in the Stripe "
            "dashboard (repair only manages endpoints Snapshots made)",
            code="not_managed",
        )
    assert connection.endpoint_id is not None
    base = endpoint.public_base(
        public_url or _base_of(connection.endpoint_url, connection.id),
        api_base=connection.api_base,
    )
    url = endpoint.webhook_url(base, connection.id)
    events = endpoint.desired_events(registry)
    allowed = capabilities.probe(client, managed=True)  # the key's permissions may have changed
    with db.write() as tx:
        connections.set_capabilities(tx, connection.id, allowed)
    found = endpoint.retrieve(client, connection.endpoint_id)
    if found is not None:
        enable = found.get("status") != "enabled"
        endpoint.update(client, connection.endpoint_id, events=events, url=url, enable=enable)
        with db.write() as tx:
            connections.set_endpoint(
                tx, vault, connection.id, endpoint_id=connection.endpoint_id, url=url, actor=actor
            )
            changed = connections.get(tx, vault, connection.id)
        return _connected(
            changed,
            webhook_url=url,
            endpoint_created=False,
            endpoint_enabled=enable,
            events=len(events),
        )
    made = endpoint.create(
        client,
        url=url,
        events=events,
        connection_id=connection.id,
        name=connection.name,
        api_version=connection.api_version,
    )
    try:
        with db.write() as tx:
            connections.set_endpoint(
                tx,
                vault,
                connection.id,
                endpoint_id=str(made["id"]),
                url=url,
                secret=str(made.get("secret") or ""),
                actor=actor,
            )
            changed = connections.get(tx, vault, connection.id)
    except BaseException:
        _undo(client, str(made["id"]))
        raise
    return _connected(changed, webhook_url=url, endpoint_created=True, events=len(events))


def _base_of(url: str | None, connection_id: str) -> str | None:
    suffix = f"/webhooks/stripe/{connection_id}"
    return url[: -len(suffix)] if url and url.endswith(suffix) else None


class Removed(Connection):
    """The connection as it was, and what became of its webhook endpoint."""

    endpoint_deleted: bool = Field(description="Its managed webhook endpoint was deleted")
    note: str | None = Field(None, description="What was left to do by hand, if anything")


def remove(db: Database, vault: Vault, connection_id: str, *, actor: str = "cli") -> Removed:
    """Delete a connection's managed endpoint in Stripe (one already gone is fine), then forget
    the connection. A manual endpoint is never touched. If Stripe cannot be reached, nothing
    changes: the endpoint would keep posting to a connection that no longer exists."""
    with db.read() as tx:
        connection = connections.get(tx, vault, connection_id)
        client = connections.stripe_client(tx, vault, connection, retries=2)
    deleted = False
    note = None
    if connection.endpoint_id is not None:
        try:
            deleted = endpoint.delete(client, connection.endpoint_id)
        except errors.StripeAuthError:  # a refused key can delete nothing, ever
            note = (
                f"Stripe refuses the key, so the webhook endpoint {connection.endpoint_id} stays "
                "in Stripe: delete it in the dashboard (Developers > Webhooks)"
            )
        if not deleted and note is None:
            note = f"the webhook endpoint {connection.endpoint_id} was gone from Stripe already"
    else:
        note = "its webhook endpoint was registered by hand: remove it in the Stripe dashboard"
    with db.write() as tx:
        removed = connections.remove(tx, vault, connection_id, actor=actor)
    return Removed(**(removed.model_dump() | {"endpoint_deleted": deleted, "note": note}))
