"""API rate limits shared by a fleet without a write per request: `limits.Reserving` (the
database) and `limits.Redis` (`SNAPSHOTS_REDIS_URL`), two limiters standing for two processes
(each its own engine), then two real `snapshots serve` processes. The limit holds within 10%
(never above it) whichever process a request reaches."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots import keys, limits
from snapshots.store import tables
from snapshots.store.db import Database
from tests.acceptance.conftest import PROCESSES, Snapshots, free_port
from tests.conftest import SqliteCopy, _empty_postgres

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 200
WINDOW = 3600  # seconds: one window for the whole test, unless it starts at an hour's end


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis does not answer at {REDIS_URL}: {exc} (start redis-server)")
    yield REDIS_URL
    client.close()


def hammer(limiters: list[limits.Limiter], bucket: str, requests: int) -> list[limits.Usage]:
    """`requests` hits from 8 threads, spread evenly over `limiters`."""
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(
                lambda n: limiters[n % len(limiters)].hit(bucket, limit=LIMIT, window=WINDOW),
                range(requests),
            )
        )


def check(answers: list[limits.Usage]) -> int:
    allowed = [a for a in answers if not a.exceeded]
    assert LIMIT * 0.9 <= len(allowed) <= LIMIT, len(allowed)
    assert all(0 <= a.remaining < LIMIT for a in allowed)
    assert min(a.remaining for a in allowed) <= LIMIT * 0.1
    refused = [a for a in answers if a.exceeded]
    assert refused and all(a.remaining == 0 and a.retry_after() >= 1 for a in refused)
    return len(allowed)


def reservations(db: Database, bucket: str) -> int:
    with db.read() as tx:
        found = tx.execute(
            sa.select(sa.func.sum(tables.rate_limits.c["count"])).where(
                tables.rate_limits.c.bucket == bucket
            )
        ).scalar_one()
    return int(found or 0)


def test_two_processes_share_one_limit_in_the_database(database_url: str) -> None:
    databases = [Database(database_url), Database(database_url)]
    try:
        limiters: list[limits.Limiter] = [limits.Reserving(db) for db in databases]
        writes = []

        def count_writes(*_: object) -> None:
            writes.append(1)

        for db in databases:
            sa.event.listen(db.engine, "before_cursor_execute", count_writes)
        answers = hammer(limiters, "key:shared", 3 * LIMIT)
        check(answers)
        # The store never grants more than the limit, whoever asked.
        assert reservations(databases[0], "key:shared") >= sum(not a.exceeded for a in answers)
        # Far fewer statements than requests: reservations shrink only near the limit.
        assert len(writes) < LIMIT
    finally:
        for db in databases:
            db.dispose()


def test_a_high_limit_costs_a_few_writes_per_window(database_url: str) -> None:
    db = Database(database_url)
    try:
        limiter = limits.Reserving(db)
        writes = []
        sa.event.listen(db.engine, "before_cursor_execute", lambda *_: writes.append(1))
        for _ in range(2000):
            usage = limiter.hit("key:busy", limit=1_000_000, window=WINDOW)
            assert not usage.exceeded
        assert len(writes) <= 2  # one reservation of an eighth of a million (and BEGIN)
        assert usage.remaining == 1_000_000 - 2000
    finally:
        db.dispose()


def test_spend_counts_in_memory_and_leaves_writes_to_hit(database_url: str) -> None:
    """What the event loop calls: a request out of the share held, never a write; None when
    a share must be reserved first (then `hit`, in a thread, reserves it)."""
    db = Database(database_url)
    try:
        limiter = limits.Reserving(db)
        writes = []
        sa.event.listen(db.engine, "before_cursor_execute", lambda *_: writes.append(1))
        assert limiter.spend("key:loop", limit=16, window=WINDOW) is None  # nothing held yet
        assert writes == []
        first = limiter.hit("key:loop", limit=16, window=WINDOW)  # reserves 16 // 8 = 2
        reserved = len(writes)
        second = limiter.spend("key:loop", limit=16, window=WINDOW)
        assert second is not None and second.remaining == first.remaining - 1
        assert len(writes) == reserved  # counted in memory
        assert limiter.spend("key:loop", limit=16, window=WINDOW) is None  # the share is spent
        spent = [limiter.hit("key:loop", limit=16, window=WINDOW) for _ in range(20)]
        assert sum(not u.exceeded for u in spent) == 14  # 16 in all, never more
        over = limiter.spend("key:loop", limit=16, window=WINDOW)
        assert over is not None and over.exceeded and over.remaining == 0
        assert reservations(db, "key:loop") == 16
    finally:
        db.dispose()


def test_two_processes_share_one_limit_in_redis(redis_url: str) -> None:
    limiters: list[limits.Limiter] = [limits.Redis(redis_url), limits.Redis(redis_url)]
    try:
        answers = hammer(limiters, f"key:{uuid.uuid4().hex}", 3 * LIMIT)
        assert check(answers) == LIMIT  # exact: one INCR per request
    finally:
        for limiter in limiters:
            limiter.close()


def test_redis_away_is_a_503_not_a_crash() -> None:
    limiter = limits.Redis(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(limits.errors.Unavailable, match="SNAPSHOTS_REDIS_URL"):
        limiter.hit("key:x", limit=10, window=10)


# Two real `serve` processes.


def _two_serves(tmp_path: Path, database_url: str, extra: dict[str, str]) -> None:
    database = Database(database_url)
    with database.write() as tx:
        secret = keys.create(tx, name="shared", scopes=["contacts.readonly"]).secret
    database.dispose()
    env = {
        "SNAPSHOTS_DATABASE_URL": database_url,
        "SNAPSHOTS_API_RATE_LIMIT": "100",
        "SNAPSHOTS_API_RATE_WINDOW": "3600",
        **extra,
    }
    master_key = Fernet.generate_key().decode()
    servers = []
    for name in ("one", "two"):
        home = tmp_path / name
        home.mkdir()
        servers.append(Snapshots(home=home, port=free_port(), master_key=master_key, extra_env=env))
    apis: list[httpx.Client] = []
    try:
        for server in servers:
            server.serve("--no-worker")
        apis = [server.api(secret) for server in servers]
        lock = threading.Lock()

        def get(n: int) -> httpx.Response:
            answer = apis[n % 2].get("/v1/customers?limit=1")
            with lock:
                return answer

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(get, range(300)))
        try:
            assert {a.status_code for a in answers} == {200, 429}
            allowed = [a for a in answers if a.status_code == 200]
            assert 90 <= len(allowed) <= 100, len(allowed)
            for answer in answers:
                assert answer.headers["x-ratelimit-limit"] == "100"
                assert 0 <= int(answer.headers["x-ratelimit-remaining"]) < 100
            for refused in (a for a in answers if a.status_code == 429):
                assert refused.headers["x-ratelimit-remaining"] == "0"
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"]["code"] == "rate_limited"
        except AssertionError as exc:
            logs = "\n".join(f"--- {name}\n{text}" for s in servers for name, text in s.logs())
            raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        for api in apis:
            api.close()
        for server in servers:
            server.stop_all()


@pytest.mark.acceptance
@PROCESSES
def test_two_serve_processes_on_sqlite(tmp_path: Path, sqlite_copy: SqliteCopy) -> None:
    _two_serves(tmp_path, sqlite_copy(tmp_path / "db"), {})


@pytest.mark.acceptance
@PROCESSES
@pytest.mark.postgres
def test_two_serve_processes_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    _empty_postgres(postgres_url)
    _two_serves(tmp_path, postgres_url, {})


@pytest.mark.acceptance
@PROCESSES
@pytest.mark.postgres
def test_two_serve_processes_with_redis(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    _empty_postgres(postgres_url)
    _two_serves(tmp_path, postgres_url, {"SNAPSHOTS_REDIS_URL": redis_url})
