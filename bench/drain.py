"""Drain benchmark: real `snapshots worker` processes applying a pre-filled inbox.

For each database (SQLite file, PostgreSQL database of its own) and each worker count: a fresh
database is migrated by the code under test, the inbox is filled with `--events` distinct
events of the peers' mixed stream (`../shared/peers-bench/gen_events.py`: customer lifecycles,
invoices, Terminal locations, 5% redeliveries, shuffled; redeliveries are dropped here, as the
inbox's dedup would) held back (`run_after` in the future), the workers are started and waited
for (`/readyz` on a health port), then every item is released at once and the clock runs until
none is `pending`, `processing` or `failed`. Reported: items/s, and per worker.

`--code DIR` runs another checkout's `src` (e.g. an export of `main`: `git archive main | tar -x
-C /tmp/main`) with this virtualenv, for a before/after in one session. Figures are printed,
never asserted. Run from the repository root:

    .venv/bin/python -m bench.drain [--events 100000] [--workers 1,2] [--databases sqlite,postgres]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers-bench"
ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "conn_bench"


def stream(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """The peers' stream: `count` deliveries, 5% redeliveries, shuffled; distinct events only,
    in the order of their first delivery."""
    spec = importlib.util.spec_from_file_location("gen_events", PEERS / "gen_events.py")
    assert spec is not None and spec.loader is not None
    gen: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fixtures = Path("/work/shared/stripe/fixtures")
    args = types.SimpleNamespace(
        count=count,
        dup_rate=0.05,
        shuffle=True,
        shuffle_window=0,
        objects=None,
        fixtures=str(fixtures) if fixtures.is_dir() else "",
        api_version=None,
        concurrency=64,
        locations=25,
        location_rate=0.04,
        delete_rate=0.08,
        fail_rate=0.12,
        history_seconds=86400,
    )
    rng = random.Random(seed)
    world = gen.World(args, rng, int(time.time()))
    events = gen.build_events(args, rng, world, count - round(count * args.dup_rate))
    order, _ = gen.deliver_order(args, rng, events)
    seen: set[int] = set()
    found = []
    for index in order:
        if index not in seen:
            seen.add(index)
            found.append(events[index])
    return found


def fill(url: str, events: list[dict[str, Any]]) -> None:
    """Insert the events as pending inbox items, held back until `release`."""
    engine = sa.create_engine(url)
    with warnings.catch_warnings():  # the claim index's key is an expression: not reflected
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        inbox = sa.Table("inbox_items", sa.MetaData(), autoload_with=engine)
    # Payloads in a table of their own (0021), or in the item's row (a checkout before it).
    apart = "payload" not in inbox.c
    payloads = sa.table("inbox_payloads", sa.column("item_id"), sa.column("payload"))
    now = time.time()
    rows = [
        {
            "id": n + 1,  # a fresh database
            "connection_id": CONNECTION,
            "event_id": event["id"],
            "event_type": event["type"],
            "event_created": event["created"],
            "api_version": event.get("api_version"),
            "livemode": False,
            "source": "webhook",
            "payload": json.dumps(event, indent=2).encode(),
            "status": "pending",
            "attempts": 0,
            "run_after": now + 10**9,
            "received_at": now,
        }
        for n, event in enumerate(events)
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            chunk = rows[start : start + 5000]
            if apart:
                conn.execute(
                    payloads.insert(),
                    [{"item_id": r["id"], "payload": r["payload"]} for r in chunk],
                )
                chunk = [{k: v for k, v in r.items() if k != "payload"} for r in chunk]
            conn.execute(inbox.insert(), chunk)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE inbox_items")
    engine.dispose()


def release(url: str) -> None:
    """Make every item due at once, and (PostgreSQL) tell the workers at commit.

    The statistics are refreshed in the same transaction (ANALYZE counts its own transaction's
    rows): the ones taken after `fill` say every `run_after` lies far in the future, and with
    them PostgreSQL estimates that one item is claimable and plans each claim as a bitmap scan
    of every due item, sorted, 38 ms at 19,000 due items against 0.3 ms through the claim
    index: a drain quadratic in the inbox's size. A real backlog's `run_after` is its arrival
    time, in the past, so the statistics mislead only here."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE inbox_items SET run_after = 0")
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE inbox_items")
            conn.exec_driver_sql("SELECT pg_notify('snapshots_inbox', '')")
    engine.dispose()


def statuses(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT status, count(*) FROM inbox_items GROUP BY status")
        return {status: n for status, n in rows}


# Polled while the workers drain: the claim index's own condition. PostgreSQL still counts by
# scanning the table while its statistics say most items are unsettled (176 ms at 34,200 done
# of 95,000): polled every 50 ms that kept a backend busy, a core the workers lacked with two
# of them on two cores. So it is polled rarely, and the drain ends at its last settled item.
UNSETTLED_COUNT = (
    "SELECT count(*) FROM inbox_items WHERE status IN ('pending', 'failed', 'processing')"
)
POLL = 1.0  # seconds between two counts


def unsettled(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(UNSETTLED_COUNT).scalar_one())


def last_settled(engine: sa.Engine) -> float:
    """When the last item was settled (its worker's clock: this machine's)."""
    with engine.connect() as conn:
        return float(conn.exec_driver_sql("SELECT max(processed_at) FROM inbox_items").scalar_one())


def backends_cpu(engine: sa.Engine) -> dict[int, float]:
    """CPU seconds so far of the database's other PostgreSQL backends (the workers' sessions),
    by process id, read from /proc (the server runs on this machine)."""
    with engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).scalars()
        return {pid: _cpu(pid) for pid in pids}


def ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the worker on port {port} never became ready")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_one(
    database: str, workers: int, events: list[dict[str, Any]], code: Path, batch: int | None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="snapshots-drain-"))
    pg_name = f"bench_drain_{os.getpid()}"
    admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if database == "sqlite":
        url = f"sqlite:///{workdir / 'snapshots.db'}"
    else:
        admin = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"))
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {pg_name}")
            conn.exec_driver_sql(f"CREATE DATABASE {pg_name}")
        admin.dispose()
        url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        url += f"/{pg_name}"
    env = os.environ | {
        "PYTHONPATH": str(code),
        "SNAPSHOTS_DATABASE_URL": url,
        "SNAPSHOTS_MASTER_KEY": Fernet.generate_key().decode(),
    }
    if batch is not None:
        env["SNAPSHOTS_WORKER_BATCH"] = str(batch)
    python = [sys.executable, "-m", "snapshots"]
    subprocess.run([*python, "migrate"], env=env, check=True, capture_output=True)
    fill(url, events)
    ports = [free_port() for _ in range(workers)]
    logs = [(workdir / f"worker{n}.log").open("w") for n in range(workers)]
    procs = [
        subprocess.Popen(
            [*python, "worker", "--health-port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    engine = sa.create_engine(url)
    try:
        for port in ports:
            ready(port, time.monotonic() + 120)
        postgresql = engine.dialect.name == "postgresql"
        server_before = backends_cpu(engine) if postgresql else {}
        cpu_before = _children_cpu(procs)
        load = os.getloadavg()[0]
        release(url)
        started = time.time()  # the workers start at the release's commit
        while unsettled(engine):
            time.sleep(POLL)
        elapsed = last_settled(engine) - started
        cpu = _children_cpu(procs) - cpu_before
        server = backends_cpu(engine) if postgresql else {}
        server_cpu = sum(cpu - server_before.get(pid, 0.0) for pid, cpu in server.items())
        counts = statuses(engine)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()
        engine.dispose()
    rate = len(events) / elapsed
    result = {
        "database": database,
        "workers": workers,
        "items": len(events),
        "seconds": round(elapsed, 2),
        "items_per_s": round(rate),
        "per_worker": round(rate / workers),
        "worker_cpu_s": round(cpu, 1),
        "worker_cpu_ms_per_item": round(cpu * 1000 / len(events), 3),
        "server_cpu_s": round(server_cpu, 1) if server else None,
        "load_average": round(load, 2),
        "statuses": counts,
    }
    if database != "sqlite":
        admin = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"))
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")
        admin.dispose()
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _children_cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    return sum(_cpu(proc.pid) for proc in procs)


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="deliveries in the stream")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--code", type=Path, default=ROOT / "src", help="the src to run")
    parser.add_argument("--batch", type=int, default=None, help="SNAPSHOTS_WORKER_BATCH")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    events = stream(args.events)
    results = []
    for database in args.databases.split(","):
        for workers in (int(n) for n in args.workers.split(",")):
            found = run_one(database, workers, events, args.code.resolve(), args.batch)
            results.append(found)
            if not args.json:
                print(
                    f"{database:8} workers={workers} items={found['items']} "
                    f"{found['seconds']:7.1f} s {found['items_per_s']:6}/s "
                    f"({found['per_worker']}/s per worker, worker CPU {found['worker_cpu_s']} s"
                    f" = {found['worker_cpu_ms_per_item']} ms/item, PostgreSQL backends CPU "
                    f"{found['server_cpu_s']} s, load {found['load_average']}) {found['statuses']}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
