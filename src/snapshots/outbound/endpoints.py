"""Webhook endpoints: where flows send messages, each with its own signing secrets.

A secret is `whsec_` + base64 of 32 random bytes (Standard Webhooks), printed once when it is
made and stored encrypted with the master key (`vault`) as a list of `{secret, expires_at}`:
after `rotate-secret` the old one keeps signing until its overlap ends, so a receiver can move
to the new secret without losing a message. An endpoint is `enabled` or `disabled`; while it is
disabled its deliveries are `held`, never dropped.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from snapshots import audit, errors, ids
from snapshots.outbound import guard
from snapshots.store import dialect, tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp
from snapshots.vault import Vault

T = tables.webhook_endpoints
D = tables.deliveries
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DESCRIPTION_MAX = 500  # characters
MAX_OVERLAP = 30 * 86400.0  # seconds an old secret may keep signing after a rotation
UNDELIVERED = ("pending", "processing", "failed", "held")


class WebhookEndpoint(BaseModel):
    """An endpoint as every shell shows it: never a secret, only the last 4 characters."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    name: str
    url: str
    description: str | None
    status: str = Field(description="enabled or disabled (its deliveries are held meanwhile)")
    disabled_reason: str | None
    disabled_at: Timestamp | None
    last_success_at: Timestamp | None
    failures: int = Field(description="Failed attempts since the last success")
    secrets: list[str] = Field(description="The signing secrets in force, as their last 4")
    created_at: Timestamp
    updated_at: Timestamp


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(description="The new signing secret: shown in this answer only")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def active(entries: list[dict[str, Any]], now: float | None = None) -> list[str]:
    """The secrets of `entries` (see `entries`) that sign at `now`."""
    now = time.time() if now is None else now
    return [
        str(entry["secret"])
        for entry in entries
        if entry.get("expires_at") is None or entry["expires_at"] > now
    ]


def entries(vault: Vault, token: str) -> list[dict[str, Any]]:
    """An endpoint's stored `secrets`, decrypted: `{secret, expires_at}`, newest first."""
    found: list[dict[str, Any]] = json.loads(vault.decrypt(token))
    return found


def signing_secrets(vault: Vault, token: str, now: float | None = None) -> list[str]:
    """The secrets that sign now (newest first) from an endpoint's stored `secrets`."""
    return active(entries(vault, token), now)


def _model(row: Any, vault: Vault) -> WebhookEndpoint:
    shown = ["…" + s[-4:] for s in signing_secrets(vault, row.secrets)]
    return WebhookEndpoint.model_validate({**row._mapping, "secrets": shown})


def _row(tx: Tx, ref: str, *, lock: bool = False) -> Any:
    row = None
    if ids.plausible(ref):
        stmt = sa.select(T).where(sa.or_(T.c.id == ref, T.c.name == ref))
        row = tx.execute(dialect.locked(tx, stmt) if lock else stmt).first()
    if row is None:
        raise errors.NotFound(f"no webhook endpoint {ref} (see `snapshots endpoints list`)")
    return row


def get(tx: Tx, vault: Vault, ref: str) -> WebhookEndpoint:
    """One endpoint by its id or its name."""
    return _model(_row(tx, ref), vault)


def list_all(tx: Tx, vault: Vault) -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return [_model(row, vault) for row in tx.execute(sa.select(T).order_by(T.c.seq))]


def _check_fields(name: str, description: str | None) -> tuple[str, str | None]:
    name = name.strip()
    if not NAME.match(name):
        raise errors.BadRequest(
            "an endpoint's name is 1 to 100 letters, digits, `_`, `-` or `.`, starting with a "
            "letter or digit",
            code="name_invalid",
        )
    if description is not None and len(description) > DESCRIPTION_MAX:
        raise errors.BadRequest(f"a description has at most {DESCRIPTION_MAX} characters")
    return name, description


def create(
    db: Database,
    vault: Vault,
    *,
    name: str,
    url: str,
    description: str | None = None,
    allow: guard.Allow,
    resolver: guard.Resolver = guard.system_resolver,
    actor: str = "cli",
) -> WebhookEndpointCreated:
    """Register an endpoint (its URL checked by the guard first, outside the transaction) and
    make its first signing secret, which the answer carries once."""
    name, description = _check_fields(name, description)
    guard.check(url, allow=allow, resolver=resolver)
    secret = new_secret()
    now = time.time()
    row = {
        "id": ids.new("we_", 16),
        "name": name,
        "url": url,
        "description": description,
        "secrets": vault.encrypt(json.dumps([{"secret": secret, "expires_at": None}])),
        "status": "enabled",
        "failures": 0,
        "created_at": now,
        "updated_at": now,
    }
    with db.write() as tx:
        if tx.execute(sa.select(T.c.id).where(T.c.name == name)).first() is not None:
            raise errors.Conflict(f"an endpoint named {name!r} exists already")
        tx.execute(T.insert().values(**row))
        audit.record(
            tx,
            actor=actor,
            action="endpoint.created",
            target=str(row["id"]),
            details={"name": name, "url": url, "secret": "…" + secret[-4:]},
        )
        made = get(tx, vault, str(row["id"]))
    return WebhookEndpointCreated(**made.model_dump(), secret=secret)


def disable(tx: Tx, vault: Vault, ref: str, *, reason: str, actor: str = "cli") -> WebhookEndpoint:
    """Stop sending to an endpoint: its deliveries waiting to be sent are held (kept, never
    dropped) until `recover`."""
    row = _row(tx, ref, lock=True)
    if row.status != "disabled":
        now = time.time()
        tx.execute(
            T.update()
            .where(T.c.id == row.id)
            .values(
                status="disabled", disabled_reason=reason[:500], disabled_at=now, updated_at=now
            )
        )
        held = tx.execute(
            D.update()
            .where(D.c.endpoint_id == row.id, D.c.status.in_(("pending", "failed")))
            .values(status="held", updated_at=now)
        ).rowcount
        audit.record(
            tx,
            actor=actor,
            action="endpoint.disabled",
            target=row.id,
            details={"name": row.name, "reason": reason, "held": held},
        )
    return get(tx, vault, row.id)


def enable(tx: Tx, vault: Vault, ref: str, *, actor: str = "cli") -> WebhookEndpoint:
    """Send to the endpoint again: new deliveries go out; held ones wait for `recover`."""
    row = _row(tx, ref, lock=True)
    if row.status != "enabled":
        tx.execute(
            T.update()
            .where(T.c.id == row.id)
            .values(
                status="enabled",
                disabled_reason=None,
                disabled_at=None,
                failures=0,
                failing_since=None,
                updated_at=time.time(),
            )
        )
        audit.record(
            tx, actor=actor, action="endpoint.enabled", target=row.id, details={"name": row.name}
        )
    return get(tx, vault, row.id)


def remove(
    tx: Tx, vault: Vault, ref: str, *, force: bool = False, actor: str = "cli"
) -> WebhookEndpoint:
    """Delete an endpoint with its deliveries and their attempts. Refused while deliveries are
    still to be sent, unless `force` (they are dropped, and the audit entry counts them)."""
    row = _row(tx, ref, lock=True)
    found = _model(row, vault)
    waiting = tx.execute(
        sa.select(sa.func.count()).where(D.c.endpoint_id == row.id, D.c.status.in_(UNDELIVERED))
    ).scalar_one()
    if waiting and not force:
        raise errors.Conflict(
            f"endpoint {row.name} has {waiting} deliveries still to send (pending, failed or "
            "held): recover them first, or remove it with --force to drop them"
        )
    delivery_ids = sa.select(D.c.id).where(D.c.endpoint_id == row.id).scalar_subquery()
    attempts = tables.delivery_attempts
    tx.execute(attempts.delete().where(attempts.c.delivery_id.in_(delivery_ids)))
    dropped = tx.execute(D.delete().where(D.c.endpoint_id == row.id)).rowcount
    tx.execute(T.delete().where(T.c.id == row.id))
    audit.record(
        tx,
        actor=actor,
        action="endpoint.removed",
        target=row.id,
        details={"name": row.name, "deliveries": dropped, "undelivered": waiting},
    )
    return found


def rotate_secret(
    tx: Tx, vault: Vault, ref: str, *, overlap: float = 86400.0, actor: str = "cli"
) -> WebhookEndpointCreated:
    """A new signing secret; the ones in force keep signing for `overlap` seconds (0: stop
    now), so every message carries both signatures meanwhile."""
    if not 0 <= overlap <= MAX_OVERLAP:
        raise errors.BadRequest("the overlap is between 0 seconds and 30 days")
    row = _row(tx, ref, lock=True)
    now = time.time()
    until = now + overlap
    kept = [
        {"secret": entry["secret"], "expires_at": min(entry.get("expires_at") or until, until)}
        for entry in json.loads(vault.decrypt(row.secrets))
        if overlap > 0 and (entry.get("expires_at") is None or entry["expires_at"] > now)
    ]
    secret = new_secret()
    stored = [{"secret": secret, "expires_at": None}, *kept]
    tx.execute(
        T.update()
        .where(T.c.id == row.id)
        .values(secrets=vault.encrypt(json.dumps(stored)), updated_at=now)
    )
    audit.record(
        tx,
        actor=actor,
        action="endpoint.secret_rotated",
        target=row.id,
        details={"name": row.name, "overlap_seconds": overlap, "secret": "…" + secret[-4:]},
    )
    return WebhookEndpointCreated(**get(tx, vault, row.id).model_dump(), secret=secret)


def disabled_names(tx: Tx) -> list[str]:
    """The names of the endpoints that are disabled (for warnings)."""
    stmt = sa.select(T.c.name).where(T.c.status == "disabled").order_by(T.c.seq)
    return list(tx.execute(stmt).scalars())
