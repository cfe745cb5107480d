"""Intake with `serve --processes N` on PostgreSQL: signed webhooks acknowledged per second by
one `snapshots serve --no-worker --processes N` for each N of `--processes` (default 1 and 2),
the same pool of events, in the same run, rounds alternating; reports each N's median round
and its ratio to N = 1. Nothing is applied (no worker): this measures intake alone.

A fresh database on the PostgreSQL server of `scripts/postgres` (or `--postgres URL`), one
connection stored directly (no Stripe involved), the inbox emptied before each round.

Run from the repository root: `.venv/bin/python -m bench.processes [--duration 10]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

HOST = "127.0.0.1"
SNAPSHOTS = Path(sys.executable).with_name("snapshots")
WEBHOOK_SECRET = "whsec_bench_processes_0123456789"


def database(base: str) -> str:
    """A new, empty database on `base`'s server; returns its URL."""
    import sqlalchemy as sa

    url = sa.make_url(base).set(drivername="postgresql+psycopg")
    name = f"snapshots_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop(url: str) -> None:
    import sqlalchemy as sa

    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    admin.dispose()


def connect(url: str, master_key: str) -> str:
    from snapshots import connections, stripe_api, vault
    from snapshots.settings import Settings
    from snapshots.store.db import Database

    db = Database(url)
    account = stripe_api.Account(
        id="acct_bench", livemode=False, default_currency="usd", country="US"
    )
    with db.write() as tx:
        found = connections.add(
            tx,
            vault.load(Settings(database_url=url, master_key=master_key)),
            account=account,
            secret_key="sk_test_bench1234",
            webhook_secrets=[WEBHOOK_SECRET],
            name="bench",
            api_base=f"http://127.0.0.1:{common.free_port()}",  # no Stripe: nothing listens
        )
    db.dispose()
    return str(found.id)


def empty_inbox(url: str) -> None:
    from snapshots.store.db import Database

    db = Database(url)
    with db.write() as tx:
        tx.exec_driver_sql("TRUNCATE inbox_items, inbox_payloads RESTART IDENTITY")
    db.dispose()


def one_round(
    args: argparse.Namespace, env: dict[str, str], url: str, path: str, n: int, workdir: Path
) -> dict[str, Any]:
    empty_inbox(url)
    port = common.free_port()
    argv = [str(SNAPSHOTS), "serve", "--no-worker", "--processes", str(n), "--port", str(port)]
    pool = common.build_events(args.events, tag=uuid.uuid4().hex[:6])
    with common.Server(f"serve x{n}", argv, env=env, log=workdir / f"serve-{n}.log") as server:
        deadline = time.monotonic() + 120  # N processes import everything at once
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve x{n} did not start:\n{server.log_tail()}")
            time.sleep(0.2)
        warm = common.render_requests(
            pool.bodies[: args.warmup], host=HOST, port=port, path=path, secret=WEBHOOK_SECRET
        )
        common.run_load(
            host=HOST, port=port, requests=warm, concurrency=args.concurrency, duration=60.0
        )
        timed = common.render_requests(
            pool.bodies[args.warmup :], host=HOST, port=port, path=path, secret=WEBHOOK_SECRET
        )
        cpu = server.cpu()
        load = common.run_load(
            host=HOST,
            port=port,
            requests=timed,
            concurrency=args.concurrency,
            duration=args.duration,
        )
        return {
            "processes": n,
            "acknowledged_per_s": round(load.rate, 1),
            "p50_ms": round(load.percentile(0.5) * 1000, 2),
            "p99_ms": round(load.percentile(0.99) * 1000, 2),
            "non_2xx": load.rejected,
            "errors": load.errors,
            "server_cpu_s": round(server.cpu() - cpu, 2),
        }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="timed seconds per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--events", type=int, default=60_000, help="events in the pool")
    p.add_argument("--processes", default="1,2", help="comma-separated values of N")
    p.add_argument("--postgres", help="server URL (default: what scripts/postgres prints)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    base = (
        args.postgres
        or subprocess.run(
            ["scripts/postgres"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    url = database(base)
    workdir = Path(tempfile.mkdtemp(prefix="snapshots-bench-processes-"))
    try:
        from cryptography.fernet import Fernet

        master_key = Fernet.generate_key().decode()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
        env |= {"SNAPSHOTS_DATABASE_URL": url, "SNAPSHOTS_MASTER_KEY": master_key}
        subprocess.run([str(SNAPSHOTS), "migrate"], env=env, check=True, capture_output=True)
        path = f"/webhooks/stripe/{connect(url, master_key)}"
        counts = [int(n) for n in args.processes.split(",")]
        rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for r in range(args.rounds):
            for n in counts:
                found = one_round(args, env, url, path, n, workdir)
                rounds[n].append(found)
                print(f"round {r + 1}: {found}", file=sys.stderr)
        medians = {
            n: sorted(found, key=lambda f: f["acknowledged_per_s"])[len(found) // 2]
            for n, found in rounds.items()
        }
        base_rate = medians[counts[0]]["acknowledged_per_s"] or 1.0
        if args.json:
            print(json.dumps({"medians": medians, "rounds": rounds}, indent=2))
            return
        print(f"intake on PostgreSQL, concurrency {args.concurrency}, {args.duration:g} s rounds")
        print("| processes | acknowledged/s | p50 / p99 ms | ratio | all rounds |")
        print("|---|---|---|---|---|")
        for n, m in medians.items():
            each = ", ".join(f"{f['acknowledged_per_s']:,.0f}" for f in rounds[n])
            print(
                f"| {n} | {m['acknowledged_per_s']:,.0f} | {m['p50_ms']} / {m['p99_ms']} "
                f"| {m['acknowledged_per_s'] / base_rate:.2f} | {each} |"
            )

    finally:
        drop(url)


if __name__ == "__main__":
    main()
