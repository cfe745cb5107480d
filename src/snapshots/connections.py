"""Connections: linked Stripe accounts, their encrypted key and webhook signing secrets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from snapshots import audit, errors, ids, stripe_api
from snapshots.onboarding import capabilities as caps
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp
from snapshots.vault import Vault

T = tables.connections

ORDERINGS = ("payload", "refetch")
NAME_MAX = 200  # characters
SECRETS_TTL = 5.0  # seconds intake trusts its cached copy of a connection's signing secrets


class Connection(BaseModel):
    """A linked Stripe account, as every shell shows it: never a secret, only the key's last 4
    characters and how many signing secrets are in force."""

    model_config = ConfigDict(frozen=True)

    id: str
    object: Literal["connection"] = "connection"
    name: str
    account_id: str | None
    livemode: bool
    api_base: str | None
    api_version: str | None
    default_currency: str | None
    ordering: str
    secret_key: str = Field(description="The key's last 4 characters: …abcd")
    webhook_secrets: int = Field(description="Signing secrets in force")
    created_at: Timestamp
    endpoint_id: str | None = Field(
        None, description="The webhook endpoint Snapshots manages in Stripe (null: a manual one)"
    )
    endpoint_url: str | None = None
    endpoint_pending: bool = Field(
        False, description="Its event list waits to be sent to Stripe (the worker retries)"
    )
    capabilities: list[caps.Capability] | None = Field(
        None, description="What the key may do (null: not probed)"
    )
    health: str | None = Field(None, description="healthy or failing (null: never checked)")
    health_problems: list[dict[str, str]] = Field(
        default_factory=list, description="Each problem with its fix: {problem, fix}"
    )
    health_checked_at: Timestamp | None = None

    @property
    def managed(self) -> bool:
        return self.endpoint_id is not None

    def off(self, capability: str) -> str | None:
        """Why what needs `capability` is off for this connection, or None."""
        return caps.off(self.capabilities, capability)


SECRET_MIN = 8  # characters of a signing secret after whsec_ (Stripe's have 32)


def _validate_secret(secret: str) -> None:
    if not secret.startswith("whsec_"):
        raise errors.BadRequest(
            "a webhook signing secret starts with whsec_ (copy it from the Stripe dashboard)",
            code="bad_secret",
        )
    if len(secret) - len("whsec_") < SECRET_MIN:
        raise errors.BadRequest(
            f"the webhook signing secret is too short ({len(secret)} characters): it is whsec_ "
            f"and at least {SECRET_MIN} more letters and digits (Stripe's have 32); copy all of "
            "it from the Stripe dashboard",
            code="bad_secret",
        )


def validate(
    secret_key: str, webhook_secrets: list[str] | None, ordering: str, name: str | None
) -> None:
    """Check what a connection is made of before asking Stripe; `webhook_secrets=None`: they
    come from Stripe later (a managed endpoint)."""
    if not secret_key.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
        raise errors.BadRequest(
            "the Stripe key must be a secret (sk_...) or restricted (rk_...) key", code="bad_key"
        )
    if webhook_secrets is not None and not webhook_secrets:
        raise errors.BadRequest("give at least one webhook signing secret", code="bad_secret")
    for secret in webhook_secrets or ():
        _validate_secret(secret)
    if name is not None and not 0 < len(name) <= NAME_MAX:
        raise errors.BadRequest(f"a connection's name has 1 to {NAME_MAX} characters")
    if ordering not in ORDERINGS:
        raise errors.BadRequest(f"ordering must be one of {', '.join(ORDERINGS)}")


def add(
    tx: Tx,
    vault: Vault,
    *,
    account: stripe_api.Account,
    secret_key: str,
    webhook_secrets: list[str],
    name: str | None = None,
    api_base: str | None = None,
    api_version: str | None = None,
    ordering: str = "payload",
    actor: str = "cli",
    connection_id: str | None = None,
    endpoint: tuple[str, str] | None = None,
    capabilities: list[caps.Capability] | None = None,
) -> Connection:
    """Store a connection whose key was checked already (`onboarding.setup.connect` checks it
    and what it may do); `endpoint` is
    (id, url) of a webhook endpoint Snapshots made for it in Stripe."""
    validate(secret_key, webhook_secrets, ordering, name)
    now = time.time()
    row = {
        "id": connection_id or ids.new("conn_"),
        "name": name or account.id or "stripe",
        "account_id": account.id,
        "livemode": account.livemode,
        "api_base": api_base,
        "api_version": api_version,
        "default_currency": account.default_currency,
        "ordering": ordering,
        "secret_key": vault.encrypt(secret_key),
        "secret_key_last4": secret_key[-4:],
        "webhook_secrets": vault.encrypt(json.dumps(webhook_secrets)),
        "created_at": now,
        "updated_at": now,
        "endpoint_id": None if endpoint is None else endpoint[0],
        "endpoint_url": None if endpoint is None else endpoint[1],
        "endpoint_pending": False,
        "capabilities": None
        if capabilities is None
        else [c.model_dump(mode="json") for c in capabilities],
        "health": None,
        "health_problems": None,
        "health_checked_at": None,
    }
    tx.execute(T.insert().values(**row))
    audit.record(
        tx,
        actor=actor,
        action="connection.created",
        target=str(row["id"]),
        details={
            "name": row["name"],
            "account_id": account.id,
            "livemode": account.livemode,
            "secret_key": f"…{row['secret_key_last4']}",
            "webhook_secrets": len(webhook_secrets),
            "endpoint_id": row["endpoint_id"],
            "capabilities_off": [c.name for c in capabilities or () if not c.allowed],
        },
    )
    return _from_row(row, len(webhook_secrets))


def _from_row(row: Any, secret_count: int) -> Connection:
    return Connection(
        id=row["id"],
        name=row["name"],
        account_id=row["account_id"],
        livemode=bool(row["livemode"]),
        api_base=row["api_base"],
        api_version=row["api_version"],
        default_currency=row["default_currency"],
        ordering=row["ordering"],
        secret_key=f"…{row['secret_key_last4']}",
        webhook_secrets=secret_count,
        created_at=row["created_at"],
        endpoint_id=row["endpoint_id"],
        endpoint_url=row["endpoint_url"],
        endpoint_pending=bool(row["endpoint_pending"]),
        capabilities=None
        if row["capabilities"] is None
        else [caps.Capability.model_validate(c) for c in row["capabilities"]],
        health=row["health"],
        health_problems=row["health_problems"] or [],
        health_checked_at=row["health_checked_at"],
    )


def _entries(vault: Vault, token: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The signing secrets in force in a stored token, as `{"secret", "expires_at"}`: the
    token holds a JSON list of secrets, or (after a rotation) of such entries; expired ones
    are left out."""
    now = time.time() if now is None else now
    found = []
    for entry in json.loads(vault.decrypt(token)):
        if isinstance(entry, str):
            entry = {"secret": entry, "expires_at": None}
        if entry.get("expires_at") is None or entry["expires_at"] > now:
            found.append({"secret": str(entry["secret"]), "expires_at": entry.get("expires_at")})
    return found


def signing_secrets(vault: Vault, token: str, *, now: float | None = None) -> list[str]:
    return [entry["secret"] for entry in _entries(vault, token, now=now)]


# Built once: console pages read them at every view (building a statement again, with its
# cache key, cost about as much as running it).
_FIRST = sa.select(T.c.id).order_by(T.c.created_at).limit(1)
_ALL = sa.select(T).order_by(T.c.created_at)
_NAMES = sa.select(T.c.id, T.c.name).order_by(T.c.created_at)


def first_id(tx: Tx) -> str | None:
    """The id of the oldest connection (None when there is none), decrypting nothing."""
    return tx.execute(_FIRST).scalar_one_or_none()


def names(tx: Tx) -> list[tuple[str, str]]:
    """Each connection's id and name, oldest first (a filter's choices), decrypting nothing."""
    return [(row.id, row.name) for row in tx.execute(_NAMES)]


def list_all(tx: Tx, vault: Vault) -> list[Connection]:
    rows = tx.execute(_ALL)
    return [_from_row(r._mapping, len(signing_secrets(vault, r.webhook_secrets))) for r in rows]


MAX_SECRET_OVERLAP = 7 * 86400  # seconds an old signing secret may keep working (Stripe: 24 h)


def rotate_webhook_secret(
    tx: Tx,
    vault: Vault,
    connection_id: str,
    new_secret: str,
    *,
    overlap: float = 86400.0,
    actor: str = "cli",
) -> Connection:
    """Add a new signing secret; the ones in force now keep working for `overlap` seconds (as
    Stripe keeps the old one when you roll it in the dashboard), then retire."""
    new_secret = new_secret.strip()
    _validate_secret(new_secret)
    if not 0 <= overlap <= MAX_SECRET_OVERLAP:
        raise errors.BadRequest("the overlap is between 0 seconds and 7 days")
    now = time.time()
    token = tx.execute(
        sa.select(T.c.webhook_secrets).where(T.c.id == connection_id)
    ).scalar_one_or_none()
    if token is None:
        raise errors.NotFound(f"no connection {connection_id!r}")
    current = _entries(vault, token, now=now)
    if any(e["secret"] == new_secret for e in current):
        raise errors.Conflict("that signing secret is already in force")
    until = now + overlap
    entries: list[dict[str, Any]] = [  # a secret already retiring never lives longer
        {"secret": e["secret"], "expires_at": min(e["expires_at"] or until, until)} for e in current
    ]
    entries.append({"secret": new_secret, "expires_at": None})
    tx.execute(
        T.update()
        .where(T.c.id == connection_id)
        .values(webhook_secrets=vault.encrypt(json.dumps(entries)), updated_at=now)
    )
    audit.record(
        tx,
        actor=actor,
        action="connection.changed",
        target=connection_id,
        details={
            "webhook_secret_added": f"…{new_secret[-4:]}",
            "retiring": len(current),
            "retire_at": now + overlap,
        },
    )
    return get(tx, vault, connection_id)


def change(
    tx: Tx,
    vault: Vault,
    connection_id: str,
    *,
    name: str | None = None,
    ordering: str | None = None,
    actor: str = "cli",
) -> Connection:
    """Rename a connection or change its ordering mode (what is None stays); audited."""
    found = get(tx, vault, connection_id)
    values: dict[str, Any] = {}
    if name is not None:
        name = name.strip()
        if not 0 < len(name) <= NAME_MAX:
            raise errors.BadRequest(f"a connection's name has 1 to {NAME_MAX} characters")
        if name != found.name:
            values["name"] = name
    if ordering is not None and ordering != found.ordering:
        if ordering not in ORDERINGS:
            raise errors.BadRequest(f"ordering must be one of {', '.join(ORDERINGS)}")
        values["ordering"] = ordering
    if not values:
        return found
    tx.execute(T.update().where(T.c.id == connection_id).values(**values, updated_at=time.time()))
    audit.record(tx, actor=actor, action="connection.changed", target=connection_id, details=values)
    return get(tx, vault, connection_id)


def remove(tx: Tx, vault: Vault, connection_id: str, *, actor: str = "cli") -> Connection:
    """Forget a connection and its secrets (its records and events stay)."""
    found = get(tx, vault, connection_id)
    tx.execute(T.delete().where(T.c.id == connection_id))
    audit.record(
        tx,
        actor=actor,
        action="connection.removed",
        target=connection_id,
        details={"name": found.name, "secret_key": found.secret_key},
    )
    return found


def get(tx: Tx, vault: Vault, connection_id: str) -> Connection:
    row = None
    if ids.plausible(connection_id):
        row = tx.execute(sa.select(T).where(T.c.id == connection_id)).first()
    if row is None:
        raise errors.NotFound(f"no connection {connection_id!r} (see `snapshots connect stripe`)")
    return _from_row(row._mapping, len(signing_secrets(vault, row.webhook_secrets)))


def choose(tx: Tx, vault: Vault, connection_id: str | None) -> list[Connection]:
    """The connections a command works on: the one named, or all of them."""
    if connection_id is not None:
        return [get(tx, vault, connection_id)]
    found = list_all(tx, vault)
    if not found:
        raise errors.BadRequest("no Stripe connection yet: run `snapshots connect stripe` first")
    return found


def stripe_client(
    tx: Tx,
    vault: Vault,
    connection: Connection,
    *,
    rps: float | None = None,
    retries: int = 5,
    sleep: Callable[[float], object] = time.sleep,
) -> stripe_api.Stripe:
    """The Stripe client of a connection: its key, API base and pinned API version."""
    token = tx.execute(
        sa.select(T.c.secret_key).where(T.c.id == connection.id)
    ).scalar_one_or_none()
    if token is None:
        raise errors.NotFound(f"no connection {connection.id!r}")
    return stripe_api.Stripe(
        secret_key=vault.decrypt(token),
        api_base=connection.api_base,
        api_version=connection.api_version,
        rps=rps,
        retries=retries,
        sleep=sleep,
    )


def set_endpoint(
    tx: Tx,
    vault: Vault,
    connection_id: str,
    *,
    endpoint_id: str,
    url: str,
    secret: str | None = None,
    actor: str = "cli",
) -> None:
    """Remember the webhook endpoint Snapshots manages for a connection, its event list in
    step; a new endpoint's `secret` replaces the signing secrets (the old endpoint is gone)."""
    values: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "endpoint_url": url,
        "endpoint_pending": False,
        "updated_at": time.time(),
    }
    if secret is not None:
        _validate_secret(secret)
        values["webhook_secrets"] = vault.encrypt(json.dumps([secret]))
    found = tx.execute(T.update().where(T.c.id == connection_id).values(**values))
    if found.rowcount != 1:
        raise errors.NotFound(f"no connection {connection_id!r}")
    details: dict[str, Any] = {"endpoint_id": endpoint_id, "endpoint_url": url}
    if secret is not None:
        details["webhook_secret_replaced"] = f"…{secret[-4:]}"
    audit.record(
        tx, actor=actor, action="connection.changed", target=connection_id, details=details
    )


def set_endpoint_pending(tx: Tx, connection_id: str | None, pending: bool) -> None:
    """Mark the managed endpoint of one connection (None: of every connection) as waiting for
    its event list to reach Stripe, or as in step."""
    where: list[sa.ColumnElement[bool]] = [T.c.endpoint_id.is_not(None)]
    if connection_id is not None:
        where.append(T.c.id == connection_id)
    tx.execute(T.update().where(*where).values(endpoint_pending=pending))


def pending_endpoints(tx: Tx) -> int:
    """How many managed endpoints wait for their event list to reach Stripe."""
    return int(
        tx.execute(
            sa.select(sa.func.count()).select_from(T).where(T.c.endpoint_pending.is_(True))
        ).scalar_one()
    )


def set_capabilities(tx: Tx, connection_id: str, found: list[caps.Capability]) -> None:
    tx.execute(
        T.update()
        .where(T.c.id == connection_id)
        .values(capabilities=[c.model_dump(mode="json") for c in found], updated_at=time.time())
    )


def set_health(
    tx: Tx, connection_id: str, health: str, problems: list[dict[str, str]], checked_at: float
) -> tuple[str | None, list[dict[str, str]]]:
    """Store a connection check's result; returns the health and problems it had before."""
    before = tx.execute(
        sa.select(T.c.health, T.c.health_problems).where(T.c.id == connection_id)
    ).first()
    if before is None:
        raise errors.NotFound(f"no connection {connection_id!r}")
    tx.execute(
        T.update()
        .where(T.c.id == connection_id)
        .values(health=health, health_problems=problems, health_checked_at=checked_at)
    )
    return before.health, before.health_problems or []


def set_default_currency(tx: Tx, connection_id: str, currency: str | None) -> None:
    """Remember the account's default currency (the watcher refreshes it)."""
    tx.execute(
        T.update()
        .where(T.c.id == connection_id, T.c.default_currency.is_distinct_from(currency))
        .values(default_currency=currency, updated_at=time.time())
    )


def default_currency(tx: Tx, connection_id: str) -> str | None:
    """The default currency of the Stripe account behind a connection, when known."""
    currency = tx.execute(
        sa.select(T.c.default_currency).where(T.c.id == connection_id)
    ).scalar_one_or_none()
    return None if currency is None else str(currency)


class SecretsCache:
    """Signing secrets per connection for intake, re-read at most every `SECRETS_TTL` seconds,
    so a webhook costs no extra query or decryption. A connection that does not exist is
    remembered as such for the same time."""

    def __init__(self, db: Database, vault: Vault, ttl: float = SECRETS_TTL) -> None:
        self._db = db
        self._vault = vault
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, list[str] | None]] = {}

    def cached(self, connection_id: str) -> tuple[bool, list[str] | None]:
        """(found, secrets) from memory only; found is False when the database must be asked."""
        entry = self._entries.get(connection_id)
        if entry is not None and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    def get(self, connection_id: str) -> list[str] | None:
        found, secrets = self.cached(connection_id)
        if found:
            return secrets
        if not ids.plausible(connection_id):
            return None
        now = time.monotonic()
        with self._db.read() as tx:
            token = tx.execute(
                sa.select(T.c.webhook_secrets).where(T.c.id == connection_id)
            ).scalar_one_or_none()
        secrets = None if token is None else signing_secrets(self._vault, token)
        with self._lock:
            if len(self._entries) > 10_000:  # bounded: ids come from the URL, i.e. from anyone
                self._entries.clear()
            self._entries[connection_id] = (now + self._ttl, secrets)
        return secrets


class Cache:
    """Connections and their Stripe clients for a long-running process (worker, scheduler),
    re-read every `ttl` seconds so a new or changed connection is picked up."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        *,
        rps: float | None = None,
        retries: int = 5,
        ttl: float = 30.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._sleep = sleep  # a process that stops passes its stop event's wait
        self._db = db
        self._vault = vault
        self._rps = rps
        self._retries = retries
        self._ttl = ttl
        self._lock = threading.Lock()
        self._until = 0.0
        self._connections: dict[str, Connection] = {}
        self._clients: dict[str, tuple[Connection, stripe_api.Stripe]] = {}

    def _by_id(self) -> dict[str, Connection]:
        with self._lock:
            if time.monotonic() >= self._until:
                with self._db.read() as tx:
                    self._connections = {c.id: c for c in list_all(tx, self._vault)}
                self._until = time.monotonic() + self._ttl
            return self._connections

    def all(self) -> list[Connection]:
        return list(self._by_id().values())

    def get(self, connection_id: str) -> Connection | None:
        """The connection, from memory (the worker asks once per inbox item)."""
        return self._by_id().get(connection_id)

    def client(self, connection: Connection) -> stripe_api.Stripe:
        with self._lock:
            cached = self._clients.get(connection.id)
            if cached is not None and cached[0] == connection:
                return cached[1]
        with self._db.read() as tx:
            client = stripe_client(
                tx,
                self._vault,
                connection,
                rps=self._rps,
                retries=self._retries,
                sleep=self._sleep,
            )
        with self._lock:
            self._clients[connection.id] = (connection, client)
        return client
