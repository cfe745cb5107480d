"""API keys for the Snapshots API: `snp_<env>_<random><checksum>`, shown once, stored hashed.

The random part is 32 base62 characters (~190 bits); the checksum is the CRC32 of everything
before it, in 6 base62 characters, so a mistyped or truncated key is refused without a database
lookup (and secret scanners can recognise ours). Keys are high-entropy, so a plain SHA-256 is the
right hash: it is what the lookup index holds, and the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import zlib
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from snapshots import audit, errors, ids, paging
from snapshots.store import dialect, tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

T = tables.api_keys

# Every scope with what it lets a key do, in the order they are offered (the CLI's `init`,
# `keys create` and the console show these words).
SCOPE_DESCRIPTIONS = {
    "saas/location.read": "Read locations (Stripe Terminal locations).",
    "saas/location.write": "Create and change locations.",
    "contacts.readonly": "Read contacts (Stripe customers) and their timelines.",
    "contacts.write": "Create, change and archive contacts.",
    "invoices.readonly": "Read invoices and their payment status.",
    "invoices.write": "Change invoices (notes, fields a flow may set).",
    "events.readonly": "Read the event log (the inbox) and sync runs.",
    "workflows.readonly": "Read the flows in force, their versions and the catalog.",
    "workflows.write": "Import flows and roll them back (every connection).",
    "integrations.write": "Replay events, one or in bulk.",
    "admin": "Everything, including API keys and the audit log (every scope).",
}
SCOPES = tuple(SCOPE_DESCRIPTIONS)
NAME_MAX = 200  # characters
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
LAST_USED_EVERY = 60.0  # seconds between writes of last_used_at for one key
KEY_PATTERN = re.compile(rf"^snp_(live|test)_([0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}})$")
MAX_LIFETIME = 10 * 366 * 86400  # seconds


class ApiKey(BaseModel):
    """An API key as every shell shows it: never the secret, only its prefix and last 4."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    key: str = Field(description="The key's prefix and last 4 characters, never the secret")
    scopes: tuple[str, ...]
    status: str = Field(description="active, expired or revoked")
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    last_used_ip: str | None = None
    revoked_at: Timestamp | None
    rotated_from: str | None = None
    connections: list[str] | None = Field(
        None, description="The only connections whose records and events it may see (null: all)"
    )

    @property
    def actor(self) -> str:
        """Who acts with this key, in audit entries."""
        return f"key:{self.id}"

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class ApiKeyCreated(ApiKey):
    secret: str = Field(description="The key itself: shown in this answer only")


class ApiKeyRotated(ApiKeyCreated):
    previous: ApiKey = Field(description="The old key, working until its expires_at")


def status(row: Any, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ids.ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate(env: str) -> str:
    body = f"snp_{env}_" + "".join(secrets.choice(ids.ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + _checksum(body)


def well_formed(key: str) -> bool:
    """True when the key has our shape and its checksum matches (no database needed)."""
    if not KEY_PATTERN.match(key):
        return False
    return hmac.compare_digest(_checksum(key[:-CHECKSUM_LENGTH]), key[-CHECKSUM_LENGTH:])


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _from_row(row: Any) -> ApiKey:
    return ApiKey.model_validate(
        {**row._mapping, "key": f"{row.prefix}…{row.last4}", "status": status(row)}
    )


def create(
    tx: Tx,
    *,
    name: str,
    scopes: list[str],
    env: str = "live",
    expires_in: float | None = None,
    actor: str = "cli",
    rotated_from: str | None = None,
    connections: list[str] | None = None,
) -> ApiKeyCreated:
    """Make a key; the answer carries its clear text, which is never available again. With
    `connections`, the key sees the records and events of those connections alone (an agency
    gives each client a key of its own); such a key cannot hold `admin` or `workflows.write`,
    which reach every connection."""
    name = name.strip()
    if not name:
        raise errors.BadRequest("a key needs a name")
    if len(name) > NAME_MAX:
        raise errors.BadRequest(f"a key's name has at most {NAME_MAX} characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise errors.BadRequest(
            f"unknown scope {', '.join(unknown)}; scopes are: {', '.join(SCOPES)}",
            code="unknown_scope",
        )
    if not scopes:
        raise errors.BadRequest("a key needs at least one scope")
    if expires_in is not None and not 0 < expires_in <= MAX_LIFETIME:
        raise errors.BadRequest("a key's lifetime is between 1 second and 10 years")
    if connections is not None:
        connections = _known_connections(tx, connections)
        wide = sorted(set(scopes) & set(EVERY_CONNECTION))
        if wide:
            raise errors.BadRequest(
                f"a key limited to connections cannot have {' or '.join(wide)}: "
                f"{', '.join(wide)} reach every connection",
                code="scope_reaches_every_connection",
            )
    secret = generate(env)
    now = time.time()
    row = {
        "id": ids.new("key_", 16),
        "name": name,
        "prefix": secret[: len(f"snp_{env}_") + 4],
        "last4": secret[-4:],
        "key_hash": digest(secret),
        "scopes": sorted(set(scopes)),
        "created_at": now,
        "expires_at": None if expires_in is None else now + expires_in,
        "rotated_from": rotated_from,
        "connections": connections,
    }
    tx.execute(T.insert().values(**row))
    audit.record(
        tx,
        actor=actor,
        action="key.created",
        target=str(row["id"]),
        details={
            "name": name,
            "scopes": row["scopes"],
            "expires_at": row["expires_at"],
            "key": f"{row['prefix']}…{row['last4']}",
            "rotated_from": rotated_from,
            "connections": connections,
        },
    )
    made = get(tx, str(row["id"]))
    return ApiKeyCreated(**made.model_dump(), secret=secret)


EVERY_CONNECTION = ("admin", "workflows.write")  # scopes that reach every connection
MAX_CONNECTIONS = 100  # a key may be limited to this many connections


def _known_connections(tx: Tx, connections: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(connections))
    if not 0 < len(wanted) <= MAX_CONNECTIONS:
        raise errors.BadRequest(f"a key is limited to 1 to {MAX_CONNECTIONS} connections")
    t = tables.connections
    found = set(tx.execute(sa.select(t.c.id).where(t.c.id.in_(wanted))).scalars())
    unknown = [c for c in wanted if c not in found]
    if unknown:
        raise errors.BadRequest(
            f"no connection {', '.join(unknown)} (see `snapshots connections list`)",
            code="unknown_connection",
        )
    return wanted


def page(tx: Tx, *, limit: int = 20, starting_after: str | None = None) -> paging.Page[ApiKey]:
    """Keys, newest first."""
    return paging.paginate(tx, T, "API key", _from_row, limit=limit, starting_after=starting_after)


def list_all(tx: Tx) -> list[ApiKey]:
    """Every key, oldest first."""
    return [_from_row(r) for r in tx.execute(sa.select(T).order_by(T.c.seq))]


def get(tx: Tx, key_id: str) -> ApiKey:
    row = None
    if ids.plausible(key_id):
        row = tx.execute(sa.select(T).where(T.c.id == key_id)).one_or_none()
    if row is None:
        raise errors.NotFound(f"no API key {key_id}")
    return _from_row(row)


MAX_OVERLAP = 30 * 86400  # seconds an old key may keep working after a rotation


def rotate(
    tx: Tx,
    key_id: str,
    *,
    overlap: float = 86400.0,
    env: str = "live",
    actor: str = "cli",
) -> ApiKeyRotated:
    """A new key with the same name and scopes; the old one keeps working for `overlap`
    seconds (0: stops now), then expires. The new key, the old key's new expiry and the
    `key.rotated` entry are one change: in the caller's transaction, all or nothing."""
    if not 0 <= overlap <= MAX_OVERLAP:
        raise errors.BadRequest("the overlap is between 0 seconds and 30 days")
    old = get(tx, key_id)
    if old.status != "active":
        raise errors.Conflict(f"API key {key_id} is {old.status}: only an active key rotates")
    lifetime = None if old.expires_at is None else max(old.expires_at - old.created_at, 1.0)
    new = create(
        tx,
        name=old.name,
        scopes=list(old.scopes),
        env=env,
        expires_in=None if lifetime is None else min(lifetime, MAX_LIFETIME),
        actor=actor,
        rotated_from=old.id,
        connections=old.connections,
    )
    until = time.time() + overlap
    if old.expires_at is None or old.expires_at > until:
        tx.execute(T.update().where(T.c.id == old.id).values(expires_at=until))
    audit.record(
        tx,
        actor=actor,
        action="key.rotated",
        target=old.id,
        details={"new_key": new.id, "overlap_seconds": overlap, "old_key_expires_at": until},
    )
    return ApiKeyRotated(**new.model_dump(), previous=get(tx, old.id))


def revoke(tx: Tx, key_id: str, *, actor: str = "cli") -> ApiKey:
    row = None
    if ids.plausible(key_id):
        row = tx.execute(dialect.locked(tx, sa.select(T).where(T.c.id == key_id))).one_or_none()
    if row is None:
        raise errors.NotFound(f"no API key {key_id}")
    if row.revoked_at is None:
        tx.execute(T.update().where(T.c.id == key_id).values(revoked_at=time.time()))
        audit.record(tx, actor=actor, action="key.revoked", target=key_id)
    return get(tx, key_id)


# Built once: every authenticated request runs it, and a statement made afresh costs more to
# build and to look up in SQLAlchemy's cache than the lookup itself.
_BY_HASH = sa.select(T).where(T.c.key_hash == sa.bindparam("key_hash"))


def verify(tx: Tx, presented: str | None, *, env: str | None = None) -> ApiKey:
    """The key behind a bearer token, or Unauthorized saying why not (a read). With `env`, a
    key of the other environment (`snp_test_` on a `live` server) is refused."""
    if not presented:
        raise errors.Unauthorized(
            "no API key: send `Authorization: Bearer snp_...`", code="missing_api_key"
        )
    if not well_formed(presented):
        raise errors.Unauthorized("the API key is malformed (bad checksum or shape)")
    if env is not None and not presented.startswith(f"snp_{env}_"):
        other = "test" if env == "live" else "live"
        raise errors.Unauthorized(
            f"this is a snp_{other}_ key and this server takes snp_{env}_ keys (SNAPSHOTS_KEY_ENV)",
            code="api_key_wrong_environment",
        )
    hashed = digest(presented)
    row = tx.execute(_BY_HASH, {"key_hash": hashed}).one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, hashed):
        raise errors.Unauthorized("the API key is not known")
    found = status(row)
    if found == "revoked":
        raise errors.Unauthorized("the API key was revoked", code="api_key_revoked")
    if found == "expired":
        raise errors.Unauthorized("the API key has expired", code="api_key_expired")
    return _from_row(row)


class Uses:
    """`last_used_at` / `last_used_ip` noted in memory as requests come and written by `flush`
    (the app calls it every USES_FLUSH seconds, and when it stops): a request never waits for
    a write. A key whose stored last use is under LAST_USED_EVERY old is not noted, as in
    `note_use`; the stored value lags the real one by USES_FLUSH at most."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def note(self, api_key: ApiKey, *, ip: str | None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_EVERY:
            return
        with self._lock:  # the same key again before the flush: one write, the latest use
            self._pending[api_key.id] = (now, ip)

    def flush(self, tx: Tx) -> int:
        """Write what was noted since the last flush; returns how many keys."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for key_id, (at, ip) in pending.items():
            tx.execute(T.update().where(T.c.id == key_id).values(last_used_at=at, last_used_ip=ip))
        return len(pending)

    def __bool__(self) -> bool:
        return bool(self._pending)


USES_FLUSH = 1.0  # seconds between two writes of the keys' last uses
