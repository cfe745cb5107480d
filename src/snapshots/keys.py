"""API keys for the Snapshots API: `snp_<env>_<random><checksum>`, shown once, stored hashed.

The random part is 32 base62 characters (~190 bits); the checksum is the CRC32 of everything
before it, in 6 base62 characters, so a mistyped or truncated key is refused without a database
lookup (and secret scanners can recognise ours). Keys are high-entropy, so a plain SHA-256 is the
right hash: it is what the lookup index holds, and the final comparison is constant-time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from snapshots import audit, errors, ids
from snapshots.store import tables
from snapshots.store.db import Database

SCOPES = (
    "saas/location.read",
    "saas/location.write",
    "contacts.readonly",
    "contacts.write",
    "invoices.readonly",
    "invoices.write",
    "events.readonly",
    "workflows.readonly",
    "workflows.write",
    "integrations.write",
    "admin",
)
NAME_MAX = 200  # characters
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
LAST_USED_EVERY = 60.0  # seconds between writes of last_used_at for one key
KEY_PATTERN = re.compile(rf"^snp_(live|test)_([0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}})$")
DURATION = re.compile(r"^(\d+)([smhdw])$")
MAX_LIFETIME = 10 * 366 * 86400  # seconds
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    last4: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None
    last_used_ip: str | None = None
    rotated_from: str | None = None

    @property
    def actor(self) -> str:
        """Who acts with this key, in audit entries."""
        return f"key:{self.id}"

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def public(self) -> dict[str, Any]:
        """The key without its secret (only its prefix and last 4 characters)."""
        from snapshots.records import iso

        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "key": f"{self.prefix}…{self.last4}",
            "scopes": list(self.scopes),
            "status": self.status(),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "last_used_ip": self.last_used_ip,
            "revoked_at": iso(self.revoked_at),
            "rotated_from": self.rotated_from,
        }


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


def parse_duration(text: str) -> float:
    """'90d' -> seconds. Units: s, m, h, d, w."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise errors.BadRequest(f"bad duration {text!r}: use a number and a unit, e.g. 90d or 12h")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_LIFETIME:
        raise errors.BadRequest(f"bad duration {text!r}: at most 10 years")
    return seconds


def parse_overlap(text: str) -> float:
    """An overlap: a duration (`24h`), or zero in any unit (`0s`, `0h`): stop now."""
    match = DURATION.match(text.strip())
    if match and int(match.group(1)) == 0:
        return 0.0
    if text.strip() == "0":
        return 0.0
    return parse_duration(text)


def _from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        last4=row.last4,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        last_used_ip=row.last_used_ip,
        rotated_from=row.rotated_from,
    )


def create(
    db: Database,
    *,
    name: str,
    scopes: list[str],
    env: str = "live",
    expires_in: float | None = None,
    actor: str = "cli",
    rotated_from: str | None = None,
) -> tuple[ApiKey, str]:
    """Make a key; returns it and its clear text, which is never available again."""
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
    }
    with db.write() as conn:
        conn.execute(tables.api_keys.insert().values(**row))
        audit.record(
            conn,
            actor=actor,
            action="key.created",
            target=str(row["id"]),
            details={
                "name": name,
                "scopes": row["scopes"],
                "expires_at": row["expires_at"],
                "key": f"{row['prefix']}…{row['last4']}",
                "rotated_from": rotated_from,
            },
        )
        stored = conn.execute(
            sa.select(tables.api_keys).where(tables.api_keys.c.id == row["id"])
        ).one()
    return _from_row(stored), secret


def list_all(db: Database) -> list[ApiKey]:
    with db.read() as conn:
        rows = conn.execute(sa.select(tables.api_keys).order_by(tables.api_keys.c.seq))
        return [_from_row(r) for r in rows]


def get(db: Database, key_id: str) -> ApiKey:
    row = None
    if ids.plausible(key_id):
        with db.read() as conn:
            row = conn.execute(
                sa.select(tables.api_keys).where(tables.api_keys.c.id == key_id)
            ).one_or_none()
    if row is None:
        raise errors.NotFound(f"no API key {key_id}")
    return _from_row(row)


MAX_OVERLAP = 30 * 86400  # seconds an old key may keep working after a rotation


def rotate(
    db: Database,
    key_id: str,
    *,
    overlap: float = 86400.0,
    env: str = "live",
    actor: str = "cli",
) -> tuple[ApiKey, str, ApiKey]:
    """A new key with the same name and scopes; the old one keeps working for `overlap`
    seconds (0: stops now), then expires. Returns (new key, its secret, old key)."""
    if not 0 <= overlap <= MAX_OVERLAP:
        raise errors.BadRequest("the overlap is between 0 seconds and 30 days")
    old = get(db, key_id)
    if old.status() != "active":
        raise errors.Conflict(f"API key {key_id} is {old.status()}: only an active key rotates")
    lifetime = None if old.expires_at is None else max(old.expires_at - old.created_at, 1.0)
    new, secret = create(
        db,
        name=old.name,
        scopes=list(old.scopes),
        env=env,
        expires_in=None if lifetime is None else min(lifetime, MAX_LIFETIME),
        actor=actor,
        rotated_from=old.id,
    )
    until = time.time() + overlap
    with db.write() as conn:
        t = tables.api_keys
        current = conn.execute(sa.select(t.c.expires_at).where(t.c.id == old.id)).scalar()
        if current is None or current > until:
            conn.execute(t.update().where(t.c.id == old.id).values(expires_at=until))
        audit.record(
            conn,
            actor=actor,
            action="key.rotated",
            target=old.id,
            details={"new_key": new.id, "overlap_seconds": overlap, "old_key_expires_at": until},
        )
    return new, secret, get(db, old.id)


def revoke(db: Database, key_id: str, *, actor: str = "cli") -> ApiKey:
    if not ids.plausible(key_id):
        raise errors.NotFound(f"no API key {key_id}")
    with db.write() as conn:
        row = conn.execute(
            sa.select(tables.api_keys).where(tables.api_keys.c.id == key_id)
        ).one_or_none()
        if row is None:
            raise errors.NotFound(f"no API key {key_id}")
        if row.revoked_at is None:
            conn.execute(
                tables.api_keys.update()
                .where(tables.api_keys.c.id == key_id)
                .values(revoked_at=time.time())
            )
            audit.record(conn, actor=actor, action="key.revoked", target=key_id)
        row = conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.id == key_id)).one()
    return _from_row(row)


def verify(db: Database, presented: str | None, *, ip: str | None = None) -> ApiKey:
    """The key behind a bearer token, or Unauthorized saying why not. Notes when and from
    which address it was used, at most once a minute per key."""
    if not presented:
        raise errors.Unauthorized(
            "no API key: send `Authorization: Bearer snp_...`", code="missing_api_key"
        )
    if not well_formed(presented):
        raise errors.Unauthorized("the API key is malformed (bad checksum or shape)")
    hashed = digest(presented)
    with db.read() as conn:
        row = conn.execute(
            sa.select(tables.api_keys).where(tables.api_keys.c.key_hash == hashed)
        ).one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, hashed):
        raise errors.Unauthorized("the API key is not known")
    now = time.time()
    if row.revoked_at is not None:
        raise errors.Unauthorized("the API key was revoked", code="api_key_revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise errors.Unauthorized("the API key has expired", code="api_key_expired")
    api_key = _from_row(row)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        with db.write() as conn:
            conn.execute(
                tables.api_keys.update()
                .where(tables.api_keys.c.id == row.id)
                .values(last_used_at=now, last_used_ip=ip)
            )
        api_key = dataclasses.replace(api_key, last_used_at=now, last_used_ip=ip)
    return api_key
