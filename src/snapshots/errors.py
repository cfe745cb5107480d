"""The error tree. Branches say what the caller should do.

SnapshotsError
├── Rejected                  the caller's input is wrong: HTTP 4xx, CLI exit 2; never retried
│   ├── BadRequest            400 (flowfile.Invalid: a flows file's problems, each with its line)
│   ├── Unauthorized          401 (no key, bad key, revoked, expired)
│   ├── Forbidden             403 (missing scope; names it)
│   ├── NotFound              404
│   ├── Conflict              409
│   ├── PayloadTooLarge       413
│   └── RateLimited           429 (with the seconds to wait)
├── RetryLater                transient: the worker retries with backoff (network, lock, 5xx)
│   ├── Busy                  SQLite's write lock is taken and the caller asked not to wait
│   └── Unavailable           not now (the database is down or locked too long): HTTP 503
├── DeadLetter                the item can never succeed as it is: goes `dead` at once
├── StripeError               Stripe refused or could not be reached (translated at the boundary)
│   ├── StripeAuthError       the key is refused: stop, tell the user (a worker in refetch mode
│   │                         postpones the connection's items, uncharged)
│   ├── StripeNotFound        Stripe has no such object
│   ├── StripeForbidden       a restricted key may not do this (a capability it lacks)
│   └── StripeUnavailable     network error, 5xx, rate limit: retry later (a worker postpones
│                             the connection's items, uncharged)
├── ConfigError               bad settings, files or flows: fix configuration
└── ProcessFault              this process cannot work now, whatever the item: a worker releases
    │                         what it holds without charging an attempt, reports it on /readyz
    │                         and in the log once, and tries again with backoff (HTTP 503)
    ├── DatabaseUnavailable   the database does not answer (or a library error that says so)
    ├── SchemaMismatch        the schema is behind this code (`snapshots migrate`) or ahead of it
    ├── WrongMasterKey        a stored secret does not decrypt (also a ConfigError: the fix is
    │                         SNAPSHOTS_MASTER_KEY)
    └── FlowsIncompatible     the flows version in force does not load with this code (a rolling
                              upgrade: a newer process imported it)

`is_process_fault` also counts the database library's connection-level errors (SQLAlchemy's
OperationalError and InterfaceError) as faults of the process, never of the item.
"""

from __future__ import annotations

import sqlalchemy as sa


class SnapshotsError(Exception):
    """Root of every error Snapshots raises on purpose. Outside `Rejected`, an error that
    reaches an HTTP caller means "not now": 503, so the caller (Stripe) retries."""

    status = 503
    type = "api_error"
    code = "snapshots_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Rejected(SnapshotsError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BadRequest(Rejected):
    pass


class Unauthorized(Rejected):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(Rejected):
    status = 403
    type = "permission_error"
    code = "missing_scope"

    def __init__(self, message: str, *, scope: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.scope = scope


class NotFound(Rejected):
    status = 404
    code = "resource_missing"


class Conflict(Rejected):
    status = 409
    code = "conflict"


class PayloadTooLarge(Rejected):
    status = 413
    code = "payload_too_large"


class RateLimited(Rejected):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RetryLater(SnapshotsError):
    code = "retry_later"


class Busy(RetryLater):
    """SQLite's write lock is taken and the caller asked not to wait for it."""

    code = "busy"


class Unavailable(RetryLater):
    """We could not do it now (the database is down or locked too long): HTTP 503."""

    code = "unavailable"


class DeadLetter(SnapshotsError):
    code = "dead_letter"


class StripeError(SnapshotsError):
    code = "stripe_error"


class StripeAuthError(StripeError):
    code = "stripe_key_refused"


class StripeNotFound(StripeError):
    code = "stripe_not_found"


class StripeForbidden(StripeError):
    code = "stripe_permission"


class StripeUnavailable(StripeError, RetryLater):
    code = "stripe_unavailable"


class ConfigError(SnapshotsError):
    code = "config_error"


class ProcessFault(SnapshotsError):
    """Not the item's fault: the process is misconfigured or its database is away."""

    code = "process_fault"
    kind = "process"  # the name of the readiness check it fails


class DatabaseUnavailable(ProcessFault):
    code = "database_unavailable"
    kind = "database"


class SchemaMismatch(ProcessFault):
    code = "schema_mismatch"
    kind = "schema"


class WrongMasterKey(ProcessFault, ConfigError):
    code = "wrong_master_key"
    kind = "master_key"


class FlowsIncompatible(ProcessFault):
    code = "flows_incompatible"
    kind = "flows"


def is_process_fault(exc: BaseException) -> bool:
    """Is `exc` about the process (its settings, its database) rather than the item in hand?
    The database library's connection-level errors count: a lost connection, a server that is
    down or restarting, SQLite's lock held too long, a full disk. Errors about the data (a
    value too long, a constraint) do not."""
    return isinstance(exc, ProcessFault | sa.exc.OperationalError | sa.exc.InterfaceError)


# Libraries whose errors we translate at the boundary, keeping the gist in our message.
TRANSLATED = ("stripe", "sqlalchemy", "psycopg")


def describe(exc: BaseException) -> str:
    """One line with the cause chain: `outer: cause: root cause`.

    The chain stops at an error of a library in TRANSLATED (the stripe SDK, SQLAlchemy): the
    message we raised from it already says what happened, and theirs (with what they wrap)
    span many lines (`-v` shows them)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if parts and type(current).__module__.startswith(TRANSLATED):
            break  # a library's error we translated: our message already says it
        text = " ".join((str(current) or type(current).__name__).split())
        if not any(text in part for part in parts):
            parts.append(text[:300])
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return ": ".join(parts)
