"""Rate limits shared by every `serve` process: counted in the database, or in Redis.

A fixed window per bucket (`key:<api key id>`, `audit:<kind>:<ip>`): one UPSERT counts hits and
returns the count. Old windows are pruned now and then. API requests go through a `Limiter`
(`Reserving` in the database, without a write per request, or `Redis`); the audit's own
once-a-window buckets call `hit` directly (they count refusals only).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa

from snapshots import errors
from snapshots.store import dialect, tables
from snapshots.store.db import Database, Tx

T = tables.rate_limits
PRUNE_CHANCE = 0.01  # of hits that also delete windows over an hour old


@dataclass(frozen=True)
class Usage:
    limit: int
    count: int
    reset_at: int  # unix seconds when the window ends

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def retry_after(self, now: float | None = None) -> int:
        return max(1, int(self.reset_at - (time.time() if now is None else now) + 0.999))


def hit(tx: Tx, bucket: str, *, limit: int, window: int, now: float | None = None) -> Usage:
    """Count one hit in `bucket`'s current window."""
    now = time.time() if now is None else now
    start = int(now) // window * window
    stmt = (
        dialect.insert(tx, T)
        .values(bucket=bucket, window_start=start, count=1)
        .on_conflict_do_update(
            index_elements=[T.c.bucket, T.c.window_start], set_={"count": T.c["count"] + 1}
        )
        .returning(T.c["count"])
    )
    count = int(tx.execute(stmt).scalar_one())
    if random.random() < PRUNE_CHANCE:
        tx.execute(T.delete().where(T.c.window_start < start - 3600))
    return Usage(limit, count, start + window)


def count(tx: Tx, bucket: str, *, window: int, now: float | None = None) -> int:
    """The hits counted in `bucket`'s window holding `now` (0 when none)."""
    now = time.time() if now is None else now
    start = int(now) // window * window
    found = tx.execute(
        sa.select(T.c["count"]).where(T.c.bucket == bucket, T.c.window_start == start)
    ).scalar_one_or_none()
    return int(found or 0)


def first_in_window(tx: Tx, bucket: str, *, window: int) -> bool:
    """True for the first hit of a window: lets something happen at most once a window."""
    return hit(tx, bucket, limit=1, window=window).count == 1


def reserve(tx: Tx, bucket: str, *, amount: int, window: int, now: float | None = None) -> int:
    """Add `amount` hits to `bucket`'s current window at once; returns the window's new count."""
    now = time.time() if now is None else now
    start = int(now) // window * window
    stmt = (
        dialect.insert(tx, T)
        .values(bucket=bucket, window_start=start, count=amount)
        .on_conflict_do_update(
            index_elements=[T.c.bucket, T.c.window_start], set_={"count": T.c["count"] + amount}
        )
        .returning(T.c["count"])
    )
    count = int(tx.execute(stmt).scalar_one())
    if random.random() < PRUNE_CHANCE:
        tx.execute(T.delete().where(T.c.window_start < start - 3600))
    return count


class Limiter(Protocol):
    """Counts API requests per bucket and window, shared by every process of a fleet."""

    def hit(self, bucket: str, *, limit: int, window: int) -> Usage: ...

    def spend(self, bucket: str, *, limit: int, window: int) -> Usage | None:
        """`hit` when it can be counted in memory at once; None when it cannot (a write or a
        round trip to make, or a thread doing one): then call `hit` off the event loop."""
        ...

    def close(self) -> None: ...


SHARE = 8  # a process reserves 1/SHARE of what is left of a window's budget at a time


@dataclass
class _Held:
    """What this process holds of one bucket's window."""

    window_start: int
    tokens: int = 0  # reserved in the store and not used yet
    total: int = 0  # the window's count in the store when this process last reserved
    lock: threading.Lock = field(default_factory=threading.Lock)


class Reserving:
    """Rate limits in the database without a write per request: a process reserves a share
    of the window's remaining budget in one UPSERT (`reserve`: the count in the store is what
    every process has reserved) and spends it in memory. Each reservation is 1/SHARE of what
    is left, so near the limit they shrink to one request; the store never grants more than
    the limit, so the limit holds exactly across processes, and what a process reserved and
    did not use is lost only when its traffic stops (at most 1/SHARE of the limit per idle
    process). A high limit costs one write per window and process and a few more."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def _slot(self, bucket: str, start: int) -> _Held:
        with self._lock:
            held = self._held.get(bucket)
            if held is None or held.window_start != start:
                if held is None and len(self._held) > MAX_BUCKETS:
                    self._held = {k: v for k, v in self._held.items() if v.window_start >= start}
                held = self._held[bucket] = _Held(start)
            return held

    def hit(self, bucket: str, *, limit: int, window: int) -> Usage:
        now = time.time()
        start = int(now) // window * window
        held = self._slot(bucket, start)
        with held.lock:
            if held.tokens == 0 and held.total < limit:
                amount = max(1, (limit - held.total) // SHARE)
                with self._db.write() as tx:
                    total = reserve(tx, bucket, amount=amount, window=window, now=now)
                held.total = total
                held.tokens = max(0, min(amount, limit - (total - amount)))
            return _take(held, limit, start + window)

    def spend(self, bucket: str, *, limit: int, window: int) -> Usage | None:
        start = int(time.time()) // window * window
        held = self._slot(bucket, start)
        if not held.lock.acquire(blocking=False):  # a thread is reserving: `hit` waits for it
            return None
        try:
            if held.tokens == 0 and held.total < limit:
                return None  # a share to reserve first
            return _take(held, limit, start + window)
        finally:
            held.lock.release()

    def close(self) -> None:
        self._held.clear()


MAX_BUCKETS = 10_000  # windows held in memory before the past ones are dropped


def _take(held: _Held, limit: int, reset_at: int) -> Usage:
    """One request out of what `held` holds (over the limit when it holds nothing)."""
    if held.tokens == 0:
        return Usage(limit, limit + 1, reset_at)
    held.tokens -= 1
    return Usage(limit, min(held.total, limit) - held.tokens, reset_at)


class Redis:
    """Rate limits in Redis (`SNAPSHOTS_REDIS_URL`): one INCR per request, exact across every
    process; the key expires with its window."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    def hit(self, bucket: str, *, limit: int, window: int) -> Usage:
        now = time.time()
        start = int(now) // window * window
        name = f"snapshots:rate:{bucket}:{start}"
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, window + 1)
            count, _ = pipe.execute()
        except self._redis.RedisError as exc:
            raise errors.Unavailable(
                f"the rate-limit store does not answer ({exc}); check SNAPSHOTS_REDIS_URL",
                code="rate_limit_store_unavailable",
            ) from exc
        return Usage(limit, int(count), start + window)

    def spend(self, bucket: str, *, limit: int, window: int) -> Usage | None:
        return None  # every request is a round trip to Redis

    def close(self) -> None:
        self._client.close()


def limiter(db: Database, redis_url: str | None) -> Limiter:
    """Redis when a URL is given, else the database."""
    return Redis(redis_url) if redis_url else Reserving(db)
