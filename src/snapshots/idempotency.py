"""Idempotent API writes: a request with an `Idempotency-Key` header runs once per API key; a
retry of it gets the first response back (with `Idempotent-Replayed: true`), as Stripe does.

A key is claimed in its own transaction (committed, so a concurrent retry sees it in flight and
gets 409 `idempotency_key_in_use`); the write and its stored response then commit together, so
a write that happened always has its response to replay. The same key with another method, path
or body is 409 `idempotency_key_reused`. Responses that the write itself gave are kept, errors
(4xx) included; a request refused before it ran (bad body, missing scope) or that failed with a
5xx keeps nothing, so it can be retried with the same key. Keys are forgotten after `TTL`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from snapshots import errors
from snapshots.store import dialect, tables
from snapshots.store.db import Database, Tx

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII
TTL = 24 * 3600.0  # seconds a key and its response are kept
IN_FLIGHT = 60.0  # seconds after which an unfinished first request counts as abandoned
PRUNE_ONE_IN = 100  # claims; one in this many deletes every expired key

# A write: given the transaction, returns the status code and the JSON body of its response.
Work = Callable[[Tx], tuple[int, dict[str, Any]]]

log = logging.getLogger("snapshots.idempotency")
t = tables.idempotency_keys


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests the same: method, path and body (JSON compared by value, so key
    order and spacing do not matter)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
        text = canonical.encode()
    except ValueError:
        text = body
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + text).hexdigest()


def check_key(key: str | None) -> None:
    if key is not None and not KEY.fullmatch(key):
        raise errors.BadRequest(
            f"the {HEADER} header must be 1 to 255 printable ASCII characters",
            code="idempotency_key_invalid",
        )


def once(
    db: Database,
    api_key_id: str,
    key: str | None,
    request: tuple[str, str, bytes],
    rid: str,
    work: Work,
) -> tuple[int, dict[str, Any], bool]:
    """Run `work` in a write transaction: once per `key` (the request's Idempotency-Key) and
    API key when a key is given, replaying the first answer to the same request after.
    `request` is (method, path with query, body); returns (status, body, replayed)."""
    check_key(key)
    if key is None:
        with db.write() as tx:
            return (*work(tx), False)
    stored, claimed_at = _claim(db, api_key_id, key, request)
    if stored is not None:
        return (*stored, True)
    where = (t.c.api_key_id == api_key_id, t.c.key == key, t.c.created_at == claimed_at)
    try:
        with db.write() as tx:
            status, payload = work(tx)
            tx.execute(t.update().where(*where).values(status_code=status, response=_dump(payload)))
    except errors.Rejected as exc:  # kept: the same request would be refused again
        error = {"type": exc.type, "code": exc.code, "message": exc.message, "request_id": rid}
        try:
            with db.write() as tx:
                tx.execute(
                    t.update()
                    .where(*where)
                    .values(status_code=exc.status, response=_dump({"error": error}))
                )
        except Exception as failure:  # the claim lapses after IN_FLIGHT seconds
            log.warning("could not keep a refused request's response: %s", errors.describe(failure))
        raise
    except BaseException:
        _release(db, where)
        raise
    return status, payload, False


def _claim(
    db: Database, api_key_id: str, key: str, request: tuple[str, str, bytes]
) -> tuple[tuple[int, dict[str, Any]] | None, float]:
    """Claim `key` for this request, or return the response stored for it (and the claim's
    time, which the request's own updates match on, so an abandoned claim taken over is not
    overwritten by its first holder)."""
    method, path, body = request
    request_hash = fingerprint(method, path, body)
    now = time.time()
    with db.write() as tx:
        if random.randrange(PRUNE_ONE_IN) == 0:
            prune(tx, now)
        insert = dialect.insert(tx, t)
        claim = {
            "method": method[:10],
            "path": path[:500],
            "request_hash": request_hash,
            "status_code": None,
            "response": None,
            "created_at": now,
        }
        # RETURNING says whether the row is new (psycopg reports no rowcount for DO NOTHING).
        new = tx.execute(
            insert.values(api_key_id=api_key_id, key=key, **claim)
            .on_conflict_do_nothing()
            .returning(t.c.key)
        ).first()
        if new is not None:
            return None, now
        stmt = sa.select(t).where(t.c.api_key_id == api_key_id, t.c.key == key)
        row = tx.execute(stmt.with_for_update() if tx.dialect.name == "postgresql" else stmt).one()
        expired = row.created_at < now - TTL
        abandoned = row.status_code is None and row.created_at < now - IN_FLIGHT
        if expired or (abandoned and row.request_hash == request_hash):
            tx.execute(
                t.update().where(t.c.api_key_id == api_key_id, t.c.key == key).values(**claim)
            )
            return None, now
        if row.request_hash != request_hash:
            raise errors.Conflict(
                f"this {HEADER} was used with another request (method, path or body) in the "
                "last 24 hours; use a new key for a new request",
                code="idempotency_key_reused",
            )
        if row.status_code is None:
            raise errors.Conflict(
                f"a request with this {HEADER} is still in progress; retry once it has finished",
                code="idempotency_key_in_use",
            )
        return (int(row.status_code), json.loads(row.response)), now


def _release(db: Database, where: tuple[sa.ColumnElement[bool], ...]) -> None:
    """Forget the claim of a request that failed (5xx), so a retry runs it again."""
    try:
        with db.write() as tx:
            tx.execute(t.delete().where(*where))
    except Exception as exc:  # the claim lapses after IN_FLIGHT seconds anyway
        log.warning("could not release an idempotency key: %s", errors.describe(exc))


def prune(tx: Tx, now: float | None = None) -> int:
    """Delete keys older than `TTL`; returns how many."""
    cutoff = (time.time() if now is None else now) - TTL
    return int(tx.execute(t.delete().where(t.c.created_at < cutoff)).rowcount)


def _dump(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
