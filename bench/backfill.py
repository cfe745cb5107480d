"""Backfill: `snapshots sync` objects/s against a bare SDK paging loop, and its peak memory.

A Stripe-compatible server (`tests/support/fake_stripe.py`, its own process) serves N
customers. In the same run, on the same server:

1. **bare loop**: the official SDK pages `GET /v1/customers` (`limit=100`, `starting_after`)
   and does nothing else with the objects: `raw_request`, the call `snapshots sync` makes, and
   the typed `customers.list(...).auto_paging_iter()` for reference.
2. **snapshots sync**: `snapshots migrate`, `connect stripe --api-base`, then a timed
   `snapshots sync --objects customers --json` process (SQLite, Stripe budget off as the bare
   loop has none). Its rate is objects over the run's own start-to-finish time (the process's
   wall time, start-up included, is shown too); its peak RSS comes from `wait4`.

The target ratio (>= 0.7) is sync's rate over the SDK's own list paging (`auto_paging_iter`,
how the SDK pages a list); the ratio over the bare `raw_request` loop, which skips the SDK's
objects as sync does, is printed too: the stricter floor. Peak RSS target: < 200 MB.
Optionally `--drain` then applies the inbox with `snapshots worker` and checks every contact.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import stripe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fake_stripe import FakeStripe, run_fake_stripe  # noqa: E402

SNAPSHOTS = Path(sys.executable).with_name("snapshots")
WEBHOOK_SECRET = "whsec_bench_backfill_0000"


def bare_raw(fake: FakeStripe) -> tuple[int, float]:
    client = stripe.StripeClient(
        fake.secret_key, base_addresses={"api": fake.api_base}, max_network_retries=0
    )
    count, after, started = 0, None, time.perf_counter()
    while True:
        params: dict[str, Any] = {"limit": 100}
        if after is not None:
            params["starting_after"] = after
        page = client.raw_request("get", "/v1/customers", **params).data
        data = page["data"]
        count += len(data)
        if not page["has_more"] or not data:
            break
        after = data[-1]["id"]
    return count, time.perf_counter() - started


def bare_typed(fake: FakeStripe) -> tuple[int, float]:
    client = stripe.StripeClient(
        fake.secret_key, base_addresses={"api": fake.api_base}, max_network_retries=0
    )
    count, started = 0, time.perf_counter()
    for _ in client.v1.customers.list({"limit": 100}).auto_paging_iter():
        count += 1
    return count, time.perf_counter() - started


def run(argv: list[str], env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def timed_sync(env: dict[str, str]) -> tuple[dict[str, Any], float, float]:
    """`snapshots sync` once: (its run JSON, wall seconds, peak RSS in MB)."""
    argv = [str(SNAPSHOTS), "sync", "--objects", "customers", "--json"]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"snapshots sync failed ({proc.returncode}):\n{err.read().decode()}")
        (result,) = json.loads(out.read())
    return result, wall, usage.ru_maxrss / 1024  # Linux: kilobytes


def drain_and_check(env: dict[str, str], db_path: Path, expected: int) -> str:
    """Apply the inbox with a real worker, then count contacts and synced items."""
    worker = subprocess.Popen([str(SNAPSHOTS), "worker"], env=env, stderr=subprocess.DEVNULL)
    started = time.perf_counter()
    try:
        while True:
            with sqlite3.connect(db_path) as conn:
                pending = conn.execute(
                    "select count(*) from inbox_items where status in ('pending','processing')"
                ).fetchone()[0]
            if not pending:
                break
            time.sleep(0.5)
        took = time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    with sqlite3.connect(db_path) as conn:
        contacts = conn.execute(
            "select count(distinct stripe_customer_id) from contacts"
        ).fetchone()[0]
        dead = conn.execute("select count(*) from inbox_items where status='dead'").fetchone()[0]
    state = "ok" if contacts == expected and not dead else "WRONG"
    return f"worker applied it in {took:.1f} s: {contacts:,} contacts of {expected:,}, {dead} dead ({state})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drain", action="store_true", help="apply the inbox and check it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    with run_fake_stripe(customers=args.customers) as fake, tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")},
            "SNAPSHOTS_DATABASE_URL": f"sqlite:///{db_path}",
            "SNAPSHOTS_STRIPE_RPS": "0",
        }
        run([str(SNAPSHOTS), "migrate"], env)
        run(
            [
                str(SNAPSHOTS),
                "connect",
                "stripe",
                "--secret-key",
                fake.secret_key,
                "--webhook-secret",
                WEBHOOK_SECRET,
                "--api-base",
                fake.api_base,
                "--json",
            ],
            env,
        )
        bare_raw(fake)  # warm the server's and the OS's caches once
        for _ in range(args.rounds):
            raw_count, raw_secs = bare_raw(fake)
            typed_count, typed_secs = bare_typed(fake)
            result, wall, rss = timed_sync(env)
            assert raw_count == typed_count == result["objects"] == args.customers, (
                raw_count,
                typed_count,
                result["objects"],
            )
            rows.append(
                {
                    "bare_raw": raw_count / raw_secs,
                    "bare_typed": typed_count / typed_secs,
                    "sync": float(result["rate"]),
                    "sync_wall": result["objects"] / wall,
                    "peak_rss_mb": rss,
                    "enqueued": result["enqueued"],
                }
            )
        check = drain_and_check(env, db_path, args.customers) if args.drain else None

    for row in rows:
        row["ratio"] = row["sync"] / row["bare_typed"]
        row["ratio_raw"] = row["sync"] / row["bare_raw"]
    median = sorted(rows, key=lambda r: r["ratio"])[len(rows) // 2]
    figures = {
        "customers": args.customers,
        "rounds": rows,
        "median": median,
        "ratio_spread": [round(r["ratio"], 2) for r in rows],
        "ratio_raw_spread": [round(r["ratio_raw"], 2) for r in rows],
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows),
        "check": check,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"backfill of {args.customers:,} customers, {args.rounds} rounds (median round shown)")
    print(f"  bare SDK loop, raw_request       {median['bare_raw']:>10,.0f} objects/s")
    print(f"  bare SDK loop, auto_paging_iter  {median['bare_typed']:>10,.0f} objects/s")
    print(f"  snapshots sync (run time)        {median['sync']:>10,.0f} objects/s")
    print(f"  snapshots sync (process wall)    {median['sync_wall']:>10,.0f} objects/s")
    print(f"  ratio to the SDK's list paging   {median['ratio']:>10.2f}   (target >= 0.7)")
    print(f"  ratio to the raw_request loop    {median['ratio_raw']:>10.2f}   (the stricter floor)")
    print(
        f"  ratios of all rounds             {figures['ratio_spread']} / {figures['ratio_raw_spread']}"
    )
    print(
        f"  peak RSS of snapshots sync       {figures['peak_rss_mb_max']:>10.0f} MB (target < 200)"
    )
    print(
        f"  spread of the median rate        {statistics.pstdev(r['sync'] for r in rows):>10,.0f}"
    )
    if check:
        print(f"  {check}")


if __name__ == "__main__":
    main()
