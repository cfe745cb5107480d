"""Console users: an email, an argon2id password hash and a role (`admin` does everything,
`viewer` only reads), and one-time set-up links.

There is no default password and no "first visitor becomes admin": the first admin comes from a
set-up link (`serve` prints one while no admin exists; `snapshots users set-up-link` makes
another) or from the terminal (`snapshots users create-admin`). A set-up link is a random token
stored as its sha256, good for `SETUP_LINK_LIFETIME` and used once.

Failed sign-ins are audit entries (`console.sign_in_failed`, target the email, with the client
address), and the limits are counted from them: `FAILURES_PER_ACCOUNT` per email and
`FAILURES_PER_ADDRESS` per address within `FAILURE_WINDOW`; beyond that, sign-in is refused
without looking at the password.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import argon2
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from snapshots import audit, errors, ids
from snapshots.store import tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

T = tables.users
LINKS = tables.setup_links
ROLES = ("admin", "viewer")
Role = Literal["admin", "viewer"]
PASSWORD_MIN = 10  # characters
PASSWORD_MAX = 1000  # characters (argon2 takes any length; a bound keeps hashing cheap)
EMAIL_MAX = 254  # characters
SETUP_LINK_LIFETIME = 15 * 60  # seconds
FAILURE_WINDOW = 15 * 60  # seconds over which failed sign-ins are counted
FAILURES_PER_ACCOUNT = 5
FAILURES_PER_ADDRESS = 20
SIGN_IN_FAILED = "console.sign_in_failed"

# argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane): the library's default (64 MiB,
# 4 lanes) takes most of a second on a small shared machine, for every sign-in.
_hasher = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class User(BaseModel):
    """A console user as every shell shows it (never the hash)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    object: Literal["user"] = "user"
    email: str
    role: Role
    created_at: Timestamp
    updated_at: Timestamp

    @property
    def actor(self) -> str:
        """Who acts in the console, in audit entries."""
        return f"ui:{self.email}"

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Refusal:
    """A sign-in that did not succeed: what to tell the person, and when to try again."""

    message: str
    retry_after: int | None = None  # seconds, when refused for too many failures


def _user(row: sa.Row[tuple[object, ...]]) -> User:
    return User.model_validate(row._mapping)


def _email(text: str) -> str:
    email = text.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > EMAIL_MAX or " " in email:
        raise errors.BadRequest(f"{text.strip()[:100]!r} is not an email address", code="email")
    return email


def _role(role: str) -> Role:
    if role not in ROLES:
        raise errors.BadRequest(f"unknown role {role!r}; roles are: admin, viewer", code="role")
    return "admin" if role == "admin" else "viewer"


def _hash(password: str) -> str:
    _check(password)
    return _hasher.hash(password)


def _check(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise errors.BadRequest(
            f"a password has at least {PASSWORD_MIN} characters", code="password_too_short"
        )
    if len(password) > PASSWORD_MAX:
        raise errors.BadRequest(
            f"a password has at most {PASSWORD_MAX} characters", code="password_too_long"
        )


def _matches(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password[:PASSWORD_MAX])
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def create(tx: Tx, *, email: str, password: str, role: str, actor: str) -> User:
    """A new user; `errors.Conflict` when the email is taken."""
    email = _email(email)
    role = _role(role)
    if tx.execute(sa.select(T.c.id).where(T.c.email == email)).first() is not None:
        raise errors.Conflict(f"a user with the email {email} exists")
    now = time.time()
    user_id = ids.new("usr_", 16)
    tx.execute(
        T.insert().values(
            id=user_id,
            email=email,
            password_hash=_hash(password),
            role=role,
            created_at=now,
            updated_at=now,
        )
    )
    audit.record(
        tx,
        actor=actor,
        action="user.created",
        target=user_id,
        details={"email": email, "role": role},
    )
    return get(tx, user_id)


def get(tx: Tx, user_id: str) -> User:
    row = None
    if ids.plausible(user_id):
        row = tx.execute(sa.select(T).where(T.c.id == user_id)).one_or_none()
    if row is None:
        raise errors.NotFound(f"no user {user_id}")
    return _user(row)


def find(tx: Tx, email: str) -> User:
    """The user with this email (any case); `errors.NotFound` otherwise."""
    wanted = email.strip().lower()
    row = tx.execute(sa.select(T).where(T.c.email == wanted)).one_or_none()
    if row is None:
        raise errors.NotFound(f"no user with the email {wanted[:100]}")
    return _user(row)


def list_all(tx: Tx) -> list[User]:
    """Every user, by email."""
    return [_user(r) for r in tx.execute(sa.select(T).order_by(T.c.email))]


def admin_exists(tx: Tx) -> bool:
    return tx.execute(sa.select(T.c.id).where(T.c.role == "admin").limit(1)).first() is not None


def _admins(tx: Tx) -> int:
    return int(tx.execute(sa.select(sa.func.count()).where(T.c.role == "admin")).scalar_one())


def set_role(tx: Tx, user_id: str, role: str, *, actor: str) -> User:
    """Change a user's role; the last admin stays an admin."""
    role = _role(role)
    user = get(tx, user_id)
    if user.role == role:
        return user
    if user.admin and _admins(tx) <= 1:
        raise errors.Conflict(f"{user.email} is the only admin: make another admin first")
    tx.execute(T.update().where(T.c.id == user.id).values(role=role, updated_at=time.time()))
    audit.record(
        tx,
        actor=actor,
        action="user.role_changed",
        target=user.id,
        details={"email": user.email, "role": role},
    )
    return get(tx, user.id)


def remove(tx: Tx, user_id: str, *, actor: str) -> User:
    """Remove a user and end their sessions (the rows go with the user); never the last admin."""
    user = get(tx, user_id)
    if user.admin and _admins(tx) <= 1:
        raise errors.Conflict(f"{user.email} is the only admin: make another admin first")
    tx.execute(tables.console_sessions.delete().where(tables.console_sessions.c.user_id == user.id))
    tx.execute(T.delete().where(T.c.id == user.id))
    audit.record(
        tx, actor=actor, action="user.removed", target=user.id, details={"email": user.email}
    )
    return user


def change_password(tx: Tx, user_id: str, *, current: str, new: str, actor: str) -> User:
    """Set a new password after checking the current one (`errors.Unauthorized` if wrong)."""
    row = tx.execute(sa.select(T).where(T.c.id == user_id)).one_or_none()
    if row is None:
        raise errors.NotFound(f"no user {user_id}")
    if not _matches(row.password_hash, current):
        raise errors.Unauthorized("the current password is wrong", code="wrong_password")
    _set_password(tx, row.id, new)
    audit.record(
        tx, actor=actor, action="user.password_changed", target=row.id, details={"email": row.email}
    )
    return get(tx, row.id)


def _set_password(tx: Tx, user_id: str, password: str) -> None:
    hashed = _hash(password)
    tx.execute(
        T.update().where(T.c.id == user_id).values(password_hash=hashed, updated_at=time.time())
    )


def _failures(tx: Tx, *, since: float, email: str | None = None, ip: str | None = None) -> int:
    a = tables.audit_entries
    where = [a.c.action == SIGN_IN_FAILED, a.c.at >= since]
    where.append(a.c.target == email if email is not None else a.c.ip == ip)
    return int(tx.execute(sa.select(sa.func.count()).where(*where)).scalar_one())


def authenticate(
    tx: Tx, *, email: str, password: str, ip: str | None, action: str = "console.signed_in"
) -> User | Refusal:
    """The user whose email and password these are, or why not. A failure is an audit entry
    written in the caller's transaction, which must commit whatever the outcome; a success is
    one with `action` (`console.confirmed` when a signed-in user types the password again)."""
    wanted = email.strip().lower()[:EMAIL_MAX]
    now = time.time()
    since = now - FAILURE_WINDOW
    limited = _failures(tx, since=since, email=wanted) >= FAILURES_PER_ACCOUNT or (
        ip is not None and _failures(tx, since=since, ip=ip) >= FAILURES_PER_ADDRESS
    )
    if limited:
        audit.denied(
            tx,
            action="console.sign_in_limited",
            actor="anonymous",
            ip=ip,
            reason=f"too many failed sign-ins ({wanted})",
        )
        minutes = FAILURE_WINDOW // 60
        return Refusal(
            f"too many failed sign-ins: try again in {minutes} minutes", retry_after=FAILURE_WINDOW
        )
    row = tx.execute(sa.select(T).where(T.c.email == wanted)).one_or_none()
    if row is None or not _matches(row.password_hash, password):
        if row is None:
            _matches(_DUMMY_HASH, password)
        audit.record(
            tx,
            actor="anonymous",
            action=SIGN_IN_FAILED,
            target=wanted,
            outcome="denied",
            details={"reason": "unknown email" if row is None else "wrong password"},
        )
        return Refusal("wrong email or password")
    if _hasher.check_needs_rehash(row.password_hash):
        _set_password(tx, row.id, password)
    audit.record(tx, actor=f"ui:{row.email}", action=action, target=row.id)
    return _user(row)


# One-time set-up links.


class SetupLink(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Role
    email: str | None
    expires_at: Timestamp


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_setup_link(tx: Tx, *, role: str = "admin", email: str | None = None, actor: str) -> str:
    """A set-up link's token (the only time it is seen). The link makes a user of `role` with
    the email and password the visitor types; with `email`, it is for that address only, and
    when that user exists it sets their password (a forgotten password)."""
    role = _role(role)
    email = None if email is None else _email(email)
    token = secrets.token_urlsafe(32)
    now = time.time()
    tx.execute(
        LINKS.insert().values(
            token_hash=_digest(token),
            role=role,
            email=email,
            actor=actor[:200],
            created_at=now,
            expires_at=now + SETUP_LINK_LIFETIME,
        )
    )
    audit.record(
        tx, actor=actor, action="user.setup_link_created", details={"role": role, "email": email}
    )
    return token


def setup_link(tx: Tx, token: str) -> SetupLink:
    """The link of this token while it may be used; `errors.NotFound` when it is unknown,
    used or expired (one message for the three: the token is the only secret)."""
    row = tx.execute(
        sa.select(LINKS).where(
            LINKS.c.token_hash == _digest(token),
            LINKS.c.used_at.is_(None),
            LINKS.c.expires_at > time.time(),
        )
    ).one_or_none()
    if row is None:
        raise _link_invalid()
    return SetupLink.model_validate(row._mapping)


def _link_invalid() -> errors.NotFound:
    return errors.NotFound(
        "this set-up link is unknown, used or expired: ask an admin for a new one "
        "(`snapshots users set-up-link`)",
        code="setup_link_invalid",
    )


def use_setup_link(tx: Tx, token: str, *, email: str, password: str) -> User:
    """Spend the link: make its user (or set the password of the user it is for). Once."""
    link = setup_link(tx, token)
    wanted = _email(link.email or email)
    _check(password)  # a refused password leaves the link unused
    spent = tx.execute(
        LINKS.update()
        .where(LINKS.c.token_hash == _digest(token), LINKS.c.used_at.is_(None))
        .values(used_at=time.time())
    )
    if spent.rowcount != 1:  # another request spent it meanwhile
        raise _link_invalid()
    actor = f"ui:{wanted}"
    existing = tx.execute(sa.select(T.c.id).where(T.c.email == wanted)).one_or_none()
    if existing is None:
        return create(tx, email=wanted, password=password, role=link.role, actor=actor)
    if link.email is None:
        raise errors.Conflict(f"a user with the email {wanted} exists: sign in instead")
    _set_password(tx, existing.id, password)
    audit.record(
        tx, actor=actor, action="user.password_reset", target=existing.id, details={"email": wanted}
    )
    return get(tx, existing.id)
