"""Four real `snapshots worker` processes drain one PostgreSQL inbox.

"Applied exactly once" is observed, not inferred: the test installs its own triggers in the
test database that log every write to `contacts` and every inbox item marked `done`, into side
tables it reads afterwards. Rows written by a transaction that never committed (a worker killed
mid-batch) vanish with it, so the logs show exactly what was applied for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots import connections, inbox, vault
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import ACCOUNT, WEBHOOK_SECRET, EventFactory, fixture

pytestmark = [pytest.mark.postgres, pytest.mark.acceptance]  # real `snapshots worker` processes

SNAPSHOTS = Path(sys.executable).with_name("snapshots")
ITEMS = 2_000
WORKERS = 4
TIMEOUT = 120.0  # seconds any wait may last

PROBES = """
CREATE TABLE probe_contact_writes (
    seq bigserial PRIMARY KEY,
    stripe_customer_id text NOT NULL,
    op text NOT NULL,
    backend integer NOT NULL DEFAULT pg_backend_pid(),
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION probe_log_contact_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO probe_contact_writes (stripe_customer_id, op) VALUES (NEW.stripe_customer_id, TG_OP);
    RETURN NULL;
END $$;
CREATE TRIGGER probe_contact_writes AFTER INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION probe_log_contact_write();

CREATE TABLE probe_items_done (
    seq bigserial PRIMARY KEY,
    item_id integer NOT NULL,
    worker text,
    attempts integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION probe_log_item_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO probe_items_done (item_id, worker, attempts)
        VALUES (NEW.id, OLD.locked_by, NEW.attempts);
    RETURN NULL;
END $$;
CREATE TRIGGER probe_items_done AFTER UPDATE OF status ON inbox_items
    FOR EACH ROW WHEN (NEW.status = 'done') EXECUTE FUNCTION probe_log_item_done();
"""
DROP_PROBES = """
DROP TRIGGER IF EXISTS probe_contact_writes ON contacts;
DROP TRIGGER IF EXISTS probe_items_done ON inbox_items;
DROP FUNCTION IF EXISTS probe_log_contact_write();
DROP FUNCTION IF EXISTS probe_log_item_done();
DROP TABLE IF EXISTS probe_contact_writes;
DROP TABLE IF EXISTS probe_items_done;
"""


def _empty(engine: sa.Engine) -> None:
    names = ", ".join(t.name for t in tables.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(DROP_PROBES)
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")


@pytest.fixture
def probed(postgres_url: str) -> Iterator[sa.Engine]:
    """The session's PostgreSQL database, emptied, with the test's write probes installed."""
    engine = sa.create_engine(postgres_url)
    _empty(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(PROBES)
    yield engine
    _empty(engine)
    engine.dispose()


@dataclass
class Fleet:
    """`snapshots worker` processes, each logging to its own file."""

    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def log(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def assert_running(self, *, except_: int | None = None) -> None:
        for i, process in enumerate(self.processes):
            if i != except_ and process.poll() is not None:
                pytest.fail(f"worker {i} exited with {process.returncode}:\n{self.log(i)}")


def start_workers(
    tmp_path: Path, database_url: str, master_key: str, *, lease: float, batches: list[int]
) -> Fleet:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
    base |= {
        "SNAPSHOTS_DATABASE_URL": database_url,
        "SNAPSHOTS_MASTER_KEY": master_key,
        "SNAPSHOTS_LEASE": str(lease),
        "SNAPSHOTS_WORKER_IDLE": "0.05",
    }
    fleet = Fleet([], [])
    for i, batch in enumerate(batches):
        log = tmp_path / f"worker-{i}.log"
        with log.open("wb") as sink:
            fleet.processes.append(
                subprocess.Popen(
                    [str(SNAPSHOTS), "worker"],
                    env=base | {"SNAPSHOTS_WORKER_BATCH": str(batch)},
                    cwd=tmp_path,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
        fleet.logs.append(log)
    return fleet


def stop_all(fleet: Fleet) -> None:
    for process in fleet.processes:
        if process.poll() is None:
            process.kill()
    for process in fleet.processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel owes us this one
            pass


def wait_for(what: str, check: Callable[[], bool], fleet: Fleet, **running: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        fleet.assert_running(**running)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {TIMEOUT:.0f}s waiting for {what}")
        time.sleep(0.01)


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def enqueue_customers(
    postgres_url: str, master_key: str, event_factory: EventFactory, n: int
) -> str:
    """`n` customer.created events for distinct customers, committed at once."""
    db = Database(postgres_url)
    try:
        settings = Settings(database_url=postgres_url, master_key=master_key)
        with db.write() as tx:
            connection = connections.add(
                tx,
                vault.load(settings),
                account=ACCOUNT,
                secret_key="sk_test_concurrency1",
                webhook_secrets=[WEBHOOK_SECRET],
                name="concurrency",
            )
        base = fixture("customer")
        with db.write() as conn:
            for i in range(n):
                customer = {**base, "id": f"cus_conc{i:05d}", "email": f"c{i}@example.com"}
                event = event_factory("customer.created", object=customer)
                inbox.enqueue_many(
                    conn,
                    [
                        inbox.Arrival(
                            connection_id=connection.id,
                            event=event,
                            payload=json.dumps(event).encode(),
                            source="webhook",
                            wanted=True,
                        )
                    ],
                )
        return connection.id
    finally:
        db.dispose()


def assert_applied_exactly_once(engine: sa.Engine) -> list[Any]:
    """Every item done, every customer's contact written once; returns the done log."""
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(sa.text("SELECT status, count(*) FROM inbox_items GROUP BY status")).all()
        )
        assert statuses == {"done": ITEMS}
        assert conn.execute(sa.text("SELECT count(*) FROM contacts")).scalar_one() == ITEMS
        writes = conn.execute(
            sa.text(
                "SELECT stripe_customer_id, count(*) AS n, array_agg(op) AS ops"
                " FROM probe_contact_writes GROUP BY stripe_customer_id"
            )
        ).all()
        assert len(writes) == ITEMS
        twice = [w for w in writes if w.n != 1 or w.ops != ["INSERT"]]
        assert twice == [], f"contacts written more than once: {twice[:5]}"
        done = conn.execute(
            sa.text(
                "SELECT item_id, worker, attempts, extract(epoch FROM at)::float AS at"
                " FROM probe_items_done ORDER BY seq"
            )
        ).all()
        assert len(done) == ITEMS
        assert len({d.item_id for d in done}) == ITEMS, "an item was marked done twice"
        assert all(d.worker for d in done), "an item was marked done without being held"
    return done


def test_four_worker_processes_drain_the_inbox_exactly_once(
    probed: sa.Engine, postgres_url: str, event_factory: EventFactory, tmp_path: Path
) -> None:
    master_key = Fernet.generate_key().decode()
    fleet = start_workers(tmp_path, postgres_url, master_key, lease=30.0, batches=[25] * WORKERS)
    try:
        # Enqueued while the workers import (each start costs a second or more of CPU).
        enqueue_customers(postgres_url, master_key, event_factory, ITEMS)
        wait_for(
            "every worker to start",
            lambda: all("started" in fleet.log(i) for i in range(WORKERS)),
            fleet,
        )
        wait_for(
            f"{ITEMS} items done",
            lambda: scalar(probed, "SELECT count(*) FROM probe_items_done") >= ITEMS,
            fleet,
        )
        time.sleep(0.3)  # let a late double application, if any, show up in the probes
        fleet.assert_running()
        for process in fleet.processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in fleet.processes]
    finally:
        stop_all(fleet)

    assert codes == [0] * WORKERS
    done = assert_applied_exactly_once(probed)
    # No lease ran out and nothing failed: each item was claimed and applied once.
    assert {d.attempts for d in done} == {1}
    assert scalar(probed, "SELECT max(attempts) FROM inbox_items") == 1
    per_worker: dict[str, int] = {}
    for d in done:
        per_worker[d.worker] = per_worker.get(d.worker, 0) + 1
    assert len(per_worker) == WORKERS, f"the work was not shared: {per_worker}"
    for i in range(WORKERS):
        log = fleet.log(i)
        assert "Traceback" not in log and " ERROR " not in log, log


def test_a_killed_worker_loses_nothing_and_nothing_is_applied_twice(
    probed: sa.Engine, postgres_url: str, event_factory: EventFactory, tmp_path: Path
) -> None:
    master_key = Fernet.generate_key().decode()
    lease = 2.0
    # The victim takes big batches so that it is almost always holding claims when it dies.
    fleet = start_workers(
        tmp_path, postgres_url, master_key, lease=lease, batches=[200, 25, 25, 25]
    )
    victim = fleet.processes[0]
    mine = f"%:{victim.pid}:%"
    try:
        # Enqueued while the workers import (each start costs a second or more of CPU).
        enqueue_customers(postgres_url, master_key, event_factory, ITEMS)
        wait_for(
            "every worker to start",
            lambda: all("started" in fleet.log(i) for i in range(WORKERS)),
            fleet,
        )

        def victim_busy() -> bool:
            with probed.connect() as conn:
                applied = conn.execute(
                    sa.text("SELECT count(*) FROM probe_items_done WHERE worker LIKE :w"),
                    {"w": mine},
                ).scalar_one()
                holding = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM inbox_items"
                        " WHERE status = 'processing' AND locked_by LIKE :w"
                    ),
                    {"w": mine},
                ).scalar_one()
            return bool(applied > 0 and holding > 0)

        wait_for("the victim to have applied a batch and hold another", victim_busy, fleet)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        with probed.connect() as conn:
            held = dict(
                conn.execute(
                    sa.text(
                        "SELECT id, lease_until FROM inbox_items"
                        " WHERE status = 'processing' AND locked_by LIKE :w"
                    ),
                    {"w": mine},
                ).all()
            )
            remaining = conn.execute(
                sa.text("SELECT count(*) FROM inbox_items WHERE status <> 'done'")
            ).scalar_one()
        assert held, "the victim died holding no claims: the takeover was not exercised"
        assert remaining > len(held), "the victim died too late to matter"

        wait_for(
            f"{ITEMS} items done",
            lambda: scalar(probed, "SELECT count(*) FROM probe_items_done") >= ITEMS,
            fleet,
            except_=0,
        )
        time.sleep(0.3)
        fleet.assert_running(except_=0)
        survivors = fleet.processes[1:]
        for process in survivors:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in survivors]
    finally:
        stop_all(fleet)

    assert victim.returncode == -signal.SIGKILL
    assert codes == [0] * (WORKERS - 1)
    done = assert_applied_exactly_once(probed)
    by_item = {d.item_id: d for d in done}
    victim_name = next(d.worker for d in done if f":{victim.pid}:" in d.worker)
    for item_id, lease_until in held.items():
        # Taken over by another worker on a later attempt, and not before the lease ran out.
        assert by_item[item_id].worker != victim_name
        assert by_item[item_id].attempts == 2
        assert by_item[item_id].at >= lease_until
    # Only the victim's claims needed a second attempt.
    assert {i for i, d in by_item.items() if d.attempts > 1} == set(held)
    for i in range(1, WORKERS):
        log = fleet.log(i)
        assert "Traceback" not in log and " ERROR " not in log, log
