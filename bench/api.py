"""API benchmark: `GET /v1/customers` with 100,000 contacts, and the cost of key verification,
against `GET /healthz` on the same `snapshots serve` in the same run.

One real `snapshots serve --no-worker` on SQLite in a temporary directory (`SNAPSHOTS_API_RATE
_LIMIT=1000000`, so the limit never answers 429 but is still counted, as in
production). Before it starts: `snapshots migrate`, then `--contacts` contacts written straight
into the `contacts` table in batches (each a copy, with its own ids, email and name, of a
contact the prebuilt flows made from a real `customer.created` event, so rows carry what real
ones carry: address, metadata, field versions), an `admin` key and a `contacts.readonly` key.

Targets, each for `--duration` seconds at `--concurrency` keep-alive connections (the load
generator of bench/common.py: pre-rendered HTTP/1.1 requests, one asyncio protocol per
connection), after `--warmup` untimed requests; `--rounds` alternates them and reports each
one's median round:

1. `GET /healthz`, no key: the baseline (the app's middleware, routing and one `SELECT 1`);
2. `GET /v1/customers?limit=100` with the contacts.readonly key: the list;
3. `GET /v1/customers?limit=1` with the same key: mostly the per-request cost of
   authentication (key lookup, the rate-limit count in memory, the scope check).

Figures: 2xx requests/s, p50 and p99 latency, each target's ratio to /healthz (target for
`limit=100`: >= 0.3 on SQLite), server and client CPU seconds per 1,000 requests. Every answer
must be 200 (others are counted and shown). Reported, never asserted.

Run from the repository root: `.venv/bin/python -m bench.api [--duration 10] [--json]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

HOST = "127.0.0.1"
SNAPSHOTS = Path(sys.executable).with_name("snapshots")
TARGET_RATIO = 0.3  # customers?limit=100 req/s over healthz req/s
TARGETS = {
    "healthz": ("/healthz", False),
    "customers?limit=100": ("/v1/customers?limit=100", True),
    "customers?limit=1": ("/v1/customers?limit=1", True),
}
BATCH = 10_000  # contacts per INSERT


@dataclass
class Round:
    target: str
    rate: float  # 2xx requests/s
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: dict[int, int]
    errors: int
    server_cpu_per_1k: float  # seconds of server CPU per 1,000 requests
    client_cpu_per_1k: float


def seed(url: str, contacts: int) -> tuple[str, str]:
    """Contacts straight into the table, and two keys; returns (admin key, readonly key)."""
    import sqlalchemy as sa

    from snapshots import connections, flowfile, ids, keys, stripe_api, vault
    from snapshots.settings import Settings
    from snapshots.store import tables
    from snapshots.store.db import Database

    db = Database(url)
    try:
        # The key file beside the database, which `snapshots serve` (no SNAPSHOTS_MASTER_KEY)
        # reads too: its start-up check refuses secrets it cannot decrypt.
        settings = Settings(database_url=url, master_key=None)
        with db.write() as tx:
            connection = connections.add(
                tx,
                vault.load(settings),
                account=stripe_api.Account(
                    id="acct_bench", livemode=False, default_currency="usd", country="US"
                ),
                secret_key="sk_test_bench_api_0000",
                webhook_secrets=["whsec_bench_api_0000"],
                name="bench",
            )
        customer = common.load_fixture("customer")
        event = common.event(
            "evt_bench_api_model", "customer.created", customer, created=int(time.time()) - 86_400
        )
        with db.write() as conn:
            flowfile.load().apply(conn, connection_id=connection.id, event=event)
            model = dict(conn.execute(sa.select(tables.contacts)).one()._mapping)
            conn.execute(tables.contacts.delete())
        model.pop("seq")
        now = time.time()
        for start in range(0, contacts, BATCH):
            rows = []
            for n in range(start, min(start + BATCH, contacts)):
                row = copy.copy(model)
                row.update(
                    id=ids.new("con_"),
                    stripe_customer_id=f"cus_bench{n:07d}",
                    email=f"bench{n}@example.com",
                    name=f"Bench Customer {n}",
                    created_at=now - contacts + n,
                    updated_at=now - contacts + n,
                )
                rows.append(row)
            with db.write() as conn:
                conn.execute(tables.contacts.insert(), rows)
        with db.write() as tx:
            admin = keys.create(tx, name="bench admin", scopes=["admin"], actor="bench")
            reader = keys.create(
                tx, name="bench reader", scopes=["contacts.readonly"], actor="bench"
            )
        return admin.secret, reader.secret
    finally:
        db.dispose()


def request(path: str, key: str | None, port: int) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/json\r\n{auth}\r\n"
    ).encode()


def check(port: int, path: str, key: str | None) -> dict[str, Any]:
    """One request through urllib: the answer must be 200 JSON."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        assert resp.status == 200, (path, resp.status)
    return body


def measure(
    name: str, server: common.Server, port: int, key: str, args: argparse.Namespace
) -> Round:
    path, keyed = TARGETS[name]
    one = request(path, key if keyed else None, port)
    common.run_load(
        host=HOST,
        port=port,
        requests=[one] * args.warmup,
        concurrency=args.concurrency,
        duration=60.0,
    )
    # Far more requests than any run can send: the same bytes, referenced.
    pool = [one] * 5_000_000
    cpu_before = server.cpu()
    result = common.run_load(
        host=HOST, port=port, requests=pool, concurrency=args.concurrency, duration=args.duration
    )
    server_cpu = server.cpu() - cpu_before
    sent = max(result.sent, 1)
    return Round(
        target=name,
        rate=result.rate,
        p50_ms=result.percentile(0.50) * 1000,
        p99_ms=result.percentile(0.99) * 1000,
        requests=result.sent,
        non_2xx={s: c for s, c in result.statuses.items() if not 200 <= s < 300},
        errors=result.errors,
        server_cpu_per_1k=server_cpu / sent * 1000,
        client_cpu_per_1k=result.client_cpu / sent * 1000,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=10.0, help="timed seconds per target")
    p.add_argument("--rounds", type=int, default=3, help="rounds over every target")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    p.add_argument("--warmup", type=int, default=300, help="untimed requests per target")
    p.add_argument("--contacts", type=int, default=100_000, help="contacts in the store")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--profile",
        type=int,
        metavar="N",
        default=0,
        help="instead: time the parts of a request in this process, N requests each, and "
        "print cProfile's top functions for customers?limit=100",
    )
    return p.parse_args(argv)


def profile(args: argparse.Namespace) -> None:
    """Where a request's time goes, in this process: the app called as ASGI (no server, no
    sockets) with `run_in_threadpool` done inline (FastAPI's, which runs the routes and their
    dependencies, and the health route's) so cProfile sees the work, then each part timed
    alone. Figures are per request, sequential, without the profiler unless it says."""
    import asyncio
    import cProfile
    import io
    import pstats
    import sqlite3

    import fastapi.dependencies.utils
    import fastapi.routing
    import sqlalchemy as sa
    from cryptography.fernet import Fernet
    from pydantic import TypeAdapter

    import snapshots.api.routes.health
    from snapshots import keys, limits, paging, times
    from snapshots.app import create_app
    from snapshots.records import kinds, models, reads
    from snapshots.settings import Settings
    from snapshots.store import db as store
    from snapshots.store import tables

    n = args.profile
    with tempfile.TemporaryDirectory(prefix="snapshots-bench-api-") as home:
        path = Path(home) / "snapshots.db"
        url = f"sqlite:///{path}"
        database = store.Database(url)
        store.migrate(database)
        _, reader = seed(url, args.contacts)
        settings = Settings(
            database_url=url, master_key=Fernet.generate_key().decode(), api_rate_limit=10**9
        )
        app = create_app(settings)

        async def inline(func: Any, *a: Any, **kw: Any) -> Any:
            return func(*a, **kw)

        for module in (
            fastapi.routing,
            fastapi.dependencies.utils,
            snapshots.api.routes.health,
        ):
            module.run_in_threadpool = inline  # type: ignore[attr-defined]

        async def call(path: str, query: bytes, key: str | None) -> None:
            headers = [(b"host", b"bench"), (b"accept", b"application/json")]
            if key:
                headers.append((b"authorization", f"Bearer {key}".encode()))
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": query,
                "root_path": "",
                "headers": headers,
                "client": (HOST, 50000),
                "server": (HOST, 80),
                "state": {},
            }
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app(scope, receive, send)
            assert sent[0]["status"] == 200, sent

        async def repeat(target: tuple[str, bytes, str | None], times: int) -> None:
            for _ in range(times):
                await call(*target)

        targets = {
            "healthz": ("/healthz", b"", None),
            "customers?limit=100": ("/v1/customers", b"limit=100", reader),
            "customers?limit=1": ("/v1/customers", b"limit=1", reader),
        }
        print(f"in this process, {n} sequential requests each, threadpool work inline:")
        loop = asyncio.new_event_loop()
        try:
            for name, target in targets.items():
                loop.run_until_complete(repeat(target, 30))
                started = time.perf_counter()
                loop.run_until_complete(repeat(target, n))
                took = (time.perf_counter() - started) / n * 1000
                print(f"  {name:<22}{took:8.3f} ms a request")
            profiler = cProfile.Profile()
            profiler.enable()
            loop.run_until_complete(repeat(targets["customers?limit=100"], n))
            profiler.disable()
        finally:
            loop.close()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print("\ncProfile, customers?limit=100, by own time:")
        print(out.getvalue().split("\n\n", 2)[-1].rstrip())

        def timed(label: str, work: Any) -> None:
            for _ in range(20):
                work()
            started = time.perf_counter()
            for _ in range(n):
                work()
            print(f"  {label:<56}{(time.perf_counter() - started) / n * 1000:8.3f} ms")

        contacts = tables.contacts
        with database.read() as conn:
            rows = conn.execute(
                sa.select(contacts).order_by(contacts.c.seq.desc()).limit(101)
            ).all()
        data = [kinds.CONTACT.public(row) for row in rows[:100]]
        adapter = TypeAdapter(paging.Page[models.ContactPublic])
        validated = adapter.validate_python({"data": data, "has_more": True})
        with database.read() as tx:
            api_key = keys.verify(tx, reader)
        raw = sqlite3.connect(path)

        def page(limit: int) -> None:
            with database.read() as tx:
                reads.page(tx, kinds.CONTACT, limit=limit)

        uses = keys.Uses()
        limiter = limits.Reserving(database)

        def verify() -> None:
            with database.read() as tx:
                found = keys.verify(tx, reader)
            uses.note(found, ip=HOST)

        def hit() -> None:
            limiter.hit(f"key:{api_key.id}", limit=10**9, window=10)

        def select_all() -> None:
            with database.read() as conn:
                conn.execute(sa.select(contacts).order_by(contacts.c.seq.desc()).limit(101)).all()

        def select_one() -> None:
            with database.read() as conn:
                conn.execute(sa.text("SELECT 1"))

        def page_json(limit: int) -> None:
            with database.read() as tx:
                reads.page_json(tx, kinds.CONTACT, limit=limit)

        print("\nthe parts, each alone:")
        timed("reads.page_json(contact, limit=100) (what lists answer)", lambda: page_json(100))
        timed("reads.page(contact, limit=100) (public models)", lambda: page(100))
        timed("reads.page(contact, limit=1)", lambda: page(1))
        timed("  SQLAlchemy select(contacts), 101 rows", select_all)
        timed(
            "  sqlite3, the same rows, no type processing",
            lambda: raw.execute("SELECT * FROM contacts ORDER BY seq DESC LIMIT 101").fetchall(),
        )
        timed(
            "  kinds.CONTACT.public() of 100 rows",
            lambda: [kinds.CONTACT.public(r) for r in rows[:100]],
        )
        with database.read() as conn:
            shown = conn.execute(
                kinds.CONTACT.json_select.order_by(contacts.c.seq.desc()).limit(101)
            ).all()
        timed(
            "  kinds.CONTACT.row_json of 100 rows (what lists do)",
            lambda: [kinds.CONTACT.row_json(r) for r in shown[:100]],
        )
        timed(
            "    times.iso() x 300",
            lambda: [times.iso(r.created_at) for r in rows[:100] for _ in "abc"],
        )
        timed(
            "response_model: validate 100 contacts",
            lambda: adapter.validate_python({"data": data, "has_more": True}),
        )
        timed("response_model: dump_json", lambda: adapter.dump_json(validated))
        timed("keys.verify and Uses.note", verify)
        timed("Reserving.hit (in memory)", hit)
        timed("healthz's SELECT 1", select_one)
        raw.close()
        app.state.snapshots.db.dispose()
        database.dispose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile:
        profile(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="snapshots-bench-api-"))
    rounds: list[Round] = []
    try:
        db_path = workdir / "snapshots.db"
        url = f"sqlite:///{db_path}"
        port = common.free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")},
            "SNAPSHOTS_DATABASE_URL": url,
            "SNAPSHOTS_API_RATE_LIMIT": "1000000",
            "SNAPSHOTS_MASTER_KEY": "",
        }
        env.pop("SNAPSHOTS_MASTER_KEY")
        subprocess.run([str(SNAPSHOTS), "migrate"], env=env, check=True, capture_output=True)
        started = time.perf_counter()
        admin, reader = seed(url, args.contacts)
        seeded_in = time.perf_counter() - started
        argv_serve = [str(SNAPSHOTS), "serve", "--no-worker", "--host", HOST, "--port", str(port)]
        with common.Server(
            "snapshots serve", argv_serve, env=env, log=workdir / "serve.log"
        ) as srv:
            srv.wait_healthy(f"http://{HOST}:{port}/healthz")
            page = check(port, "/v1/customers?limit=100", reader)
            assert len(page["data"]) == 100 and page["has_more"], "the list is not full"
            listed = check(port, "/v1/api-keys", admin)["data"]
            assert {k["name"] for k in listed} >= {"bench admin", "bench reader"}
            page_bytes = len(json.dumps(page, separators=(",", ":")))
            for _ in range(args.rounds):
                for name in TARGETS:
                    rounds.append(measure(name, srv, port, reader, args))
            log_tail = srv.log_tail()
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    median = {
        name: sorted((r for r in rounds if r.target == name), key=lambda r: r.rate)[
            args.rounds // 2
        ]
        for name in TARGETS
    }
    base = median["healthz"].rate
    ratios = {name: r.rate / base if base else 0.0 for name, r in median.items()}
    figures = {
        "contacts": args.contacts,
        "seeded_in_s": round(seeded_in, 1),
        "page_bytes_limit_100": page_bytes,
        "duration": args.duration,
        "concurrency": args.concurrency,
        "rounds": [asdict(r) for r in rounds],
        "median": {name: asdict(r) for name, r in median.items()},
        "ratio_to_healthz": ratios,
        "ratio_spread": {
            name: [
                round(r.rate / b.rate, 2)
                for r, b in zip(
                    (r for r in rounds if r.target == name),
                    (r for r in rounds if r.target == "healthz"),
                    strict=True,
                )
            ]
            for name in TARGETS
        },
        "target_ratio": TARGET_RATIO,
        "met": ratios["customers?limit=100"] >= TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"snapshots serve --no-worker, SQLite, {args.contacts:,} contacts (seeded in "
        f"{seeded_in:.1f} s), concurrency {args.concurrency}, {args.duration:g} s a target, "
        f"{args.rounds} round(s) (median shown)"
    )
    print(
        f"  {'target':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}"
        f"{'srv cpu/1k':>12}{'cli cpu/1k':>12}  other answers"
    )
    for name, r in median.items():
        other = ", ".join(f"{s}: {c}" for s, c in sorted(r.non_2xx.items()))
        if r.errors:
            other += f" transport errors: {r.errors}"
        print(
            f"  {name:<22}{r.rate:>9,.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{ratios[name]:>8.2f}"
            f"{r.server_cpu_per_1k:>11.2f}s{r.client_cpu_per_1k:>11.2f}s  {other or '-'}"
        )
    print(f"  ratios of all rounds: {figures['ratio_spread']}")
    verdict = "met" if figures["met"] else "NOT met"
    print(
        f"  customers?limit=100 / healthz = {ratios['customers?limit=100']:.2f} "
        f"(target >= {TARGET_RATIO}: {verdict}); a page of 100 is {page_bytes:,} bytes"
    )
    if any(r.non_2xx or r.errors for r in rounds):
        print("  some answers were not 200; the server's log ends with:\n" + log_tail)


if __name__ == "__main__":
    main()
