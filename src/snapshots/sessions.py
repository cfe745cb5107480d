"""Console sessions: server-side rows keyed by the sha256 of the cookie's random token, so the
database never holds a usable cookie. Each carries its own CSRF token.

A session ends at `expires_at` (`SNAPSHOTS_SESSION_LIFETIME` after sign-in) or after
`SNAPSHOTS_SESSION_IDLE` without a request that counts as activity (a page refreshing itself
does not); `last_seen_at` is written at most once per `TOUCH_EVERY`. Signing out deletes the
row; "log out everywhere" deletes every row of the user. `confirmed_at` is when the password was
last typed: showing a secret or creating a key asks for it again after `CONFIRM_WINDOW`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from snapshots import audit, ids, users
from snapshots.store import db, tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

T = tables.console_sessions
COOKIE = "snapshots_session"
TOUCH_EVERY = 60.0  # seconds between writes of last_seen_at
CONFIRM_WINDOW = 15 * 60.0  # seconds a typed password counts for sensitive steps


class Session(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    user: users.User
    csrf_token: str
    created_at: Timestamp
    expires_at: Timestamp
    last_seen_at: Timestamp
    confirmed_at: Timestamp

    def stale(self, now: float | None = None) -> bool:
        """Is `last_seen_at` due a write (an active request moves the idle deadline)?"""
        return (time.time() if now is None else now) - self.last_seen_at >= TOUCH_EVERY

    def confirmed(self, now: float | None = None) -> bool:
        """Was the password typed within `CONFIRM_WINDOW`?"""
        return (time.time() if now is None else now) - self.confirmed_at < CONFIRM_WINDOW


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(
    tx: Tx, user: users.User, *, lifetime: float, idle: float, ip: str | None
) -> tuple[str, Session]:
    """A new session for `user`: the cookie's token (never stored) and the session. Sessions
    that ended by expiry or idleness are deleted on the way."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    _prune(tx, idle=idle, now=now)
    session_id = ids.new("ses_", 16)
    tx.execute(
        T.insert().values(
            id=session_id,
            token_hash=_digest(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + lifetime,
            last_seen_at=now,
            confirmed_at=now,
            ip=ip,
        )
    )
    found = find(tx, token, idle=idle, active=False)
    assert found is not None
    return token, found


_U = tables.users
# Built once: every console request looks its session up (building the statement again, and
# its cache key, cost as much as running it).
_BY_TOKEN = (
    sa.select(T, _U.c.email, _U.c.role, _U.c.created_at.label("user_created_at"), _U.c.updated_at)
    .join(_U, _U.c.id == T.c.user_id)
    .where(T.c.token_hash == sa.bindparam("token_hash"))
)


def find(
    tx: Tx, token: str | None, *, idle: float, active: bool = True, now: float | None = None
) -> Session | None:
    """The live session of this cookie token, or None (unknown, expired or idle too long).
    An `active` request moves the idle deadline (writing at most once per TOUCH_EVERY)."""
    if not token:
        return None
    now = time.time() if now is None else now
    row = tx.execute(_BY_TOKEN, {"token_hash": _digest(token)}).one_or_none()
    if row is None or not _live(row.expires_at, row.last_seen_at, idle=idle, now=now):
        return None
    last_seen = row.last_seen_at
    if active and now - last_seen >= TOUCH_EVERY:
        tx.execute(T.update().where(T.c.id == row.id).values(last_seen_at=now))
        last_seen = now
    return _session(db.fields(row), last_seen)


def look_up(
    database: Database, token: str | None, *, idle: float, now: float | None = None
) -> Session | None:
    """`find` for a request that does not count as activity (or leaves the touch to a write
    of its own), in one statement of its own (`Database.lookup`): no transaction to open."""
    if not token:
        return None
    now = time.time() if now is None else now
    row = database.lookup(_BY_TOKEN, {"token_hash": _digest(token)})
    if row is None or not _live(row["expires_at"], row["last_seen_at"], idle=idle, now=now):
        return None
    return _session(row, row["last_seen_at"])


def _live(expires_at: float, last_seen_at: float, *, idle: float, now: float) -> bool:
    return expires_at > now and last_seen_at + idle > now


def _session(row: dict[str, Any], last_seen: float) -> Session:
    user = users.User(
        id=row["user_id"],
        email=row["email"],
        role=row["role"],
        created_at=row["user_created_at"],
        updated_at=row["updated_at"],
    )
    return Session(
        id=row["id"],
        user=user,
        csrf_token=row["csrf_token"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_seen_at=last_seen,
        confirmed_at=row["confirmed_at"],
    )


def end(tx: Tx, session: Session) -> None:
    """Sign out: the session's row goes."""
    tx.execute(T.delete().where(T.c.id == session.id))
    audit.record(tx, actor=session.user.actor, action="console.signed_out", target=session.user.id)


def end_all(tx: Tx, user: users.User, *, actor: str, keep: Session | None = None) -> int:
    """End every session of `user` ("log out everywhere"), but `keep`; how many ended."""
    where = [T.c.user_id == user.id]
    if keep is not None:
        where.append(T.c.id != keep.id)
    ended = tx.execute(T.delete().where(*where)).rowcount
    audit.record(
        tx,
        actor=actor,
        action="console.sessions_ended",
        target=user.id,
        details={"email": user.email, "ended": ended},
    )
    return int(ended)


def confirm(tx: Tx, session: Session) -> None:
    """The password was just typed again (for `CONFIRM_WINDOW`)."""
    tx.execute(T.update().where(T.c.id == session.id).values(confirmed_at=time.time()))


def _prune(tx: Tx, *, idle: float, now: float) -> None:
    tx.execute(T.delete().where(sa.or_(T.c.expires_at <= now, T.c.last_seen_at + idle <= now)))
