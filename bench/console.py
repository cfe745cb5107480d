"""Console benchmark: server time of the console's busiest pages with 100,000 contacts, 5,000
invoices and 1,000,000 inbox items in SQLite, against `GET /healthz` in the same run.

The store: `snapshots migrate`, then contacts written straight into their table as bench/api.py
does (copies of a contact the prebuilt flows made from a real `customer.created`), invoices
likewise (copies of one made from a real `invoice.paid`, each linked to a contact), and inbox
items in batches: small real-shaped events of the usual types, 97% `done` (each linked to the
contact it wrote), 2% `dead` and 1% `failed` with a handful of errors that group into causes,
each carrying its object id and e-mail as intake stores them. A console admin and a session.

Server time is measured in this process: the whole app (API and console, every middleware) is
called as ASGI with no server and no sockets, and each request's time is taken from the call to
the last byte of its answer. Each target gets `--warmup` untimed requests, then `--requests`
timed ones, one at a time; figures are p50 and p99 in milliseconds and each page's p99 over
`/healthz`'s p99 (target: under 10, and no page over 100 ms). Reported, never asserted.

Targets: `/healthz`; the overview (`/`); the events list filtered by status (`/events?status=
dead`); the contacts list with a search (`/records/contacts?q=...`); a contact's page
(`/records/contacts/{id}`, a contact with events); an event's page; the flow editor of the
prebuilt `contacts` flow, whose page runs the flow preview on the server (the worker's own
filter and mappings, the output diffed against the current record, the recent events of its
types to pick from), once on Stripe's example event and once on the newest inbox item.

Run from the repository root: `.venv/bin/python -m bench.console [--items 1000000] [--json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import api, common

BATCH = 20_000  # rows per INSERT
STATUS_MIX = (("done", 0.97), ("dead", 0.02), ("failed", 0.01))
TYPES = ("customer.updated", "customer.created", "invoice.paid", "invoice.finalized")
ERRORS = (
    "flow 'contacts': field 'custom.plan': expression 'abs(name)' failed: In function abs(), "
    "invalid type for value: {name}, expected one of: ['number'], received: \"string\"",
    "the customer has no id to match a contact on",
    "flow 'invoices': the event names no contact: map stripe_customer_id ({cus})",
    "waiting for Stripe: Stripe refused the key of connection conn_{n}",
)
ADMIN = "bench@example.com"
TARGET_RATIO = 10.0  # a page's p99 over /healthz's p99, at most
TARGET_MS = 100.0  # a page's p99, at most


@dataclass
class Figure:
    target: str
    path: str
    p50_ms: float
    p99_ms: float
    ratio_p99: float  # over /healthz's p99
    requests: int


def seed_invoices(url: str, count: int, contact_ids: list[str], connection_id: str) -> None:
    import sqlalchemy as sa

    from snapshots import flowfile, ids
    from snapshots.store import tables
    from snapshots.store.db import Database

    db = Database(url)
    try:
        invoice = common.load_fixture("invoice")
        event = common.event(
            "evt_bench_console_invoice", "invoice.paid", invoice, created=int(time.time()) - 86_400
        )
        with db.write() as conn:
            flowfile.load().apply(conn, connection_id=connection_id, event=event)
            model = dict(conn.execute(sa.select(tables.invoices)).one()._mapping)
            conn.execute(tables.invoices.delete())
            conn.execute(
                tables.contacts.delete().where(tables.contacts.c.id == model["customer_id"])
            )
        model.pop("seq")
        now = time.time()
        rows = []
        for n in range(count):
            row = copy.copy(model)
            contact = n % len(contact_ids)
            row.update(
                id=ids.new("inv_"),
                stripe_invoice_id=f"in_bench{n:07d}",
                stripe_customer_id=f"cus_bench{contact:07d}",
                customer_id=contact_ids[contact],
                number=f"BENCH-{n:06d}",
                created_at=now - count + n,
                updated_at=now - count + n,
            )
            rows.append(row)
        with db.write() as conn:
            conn.execute(tables.invoices.insert(), rows)
    finally:
        db.dispose()


def seed_inbox(url: str, count: int, contact_ids: list[str], connection_id: str) -> None:
    """`count` inbox items, oldest first, received over the last 30 days."""
    from snapshots import causes
    from snapshots.store import tables
    from snapshots.store.db import Database

    db = Database(url)
    rng = random.Random(7)
    statuses = [s for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    now = time.time()
    span = 30 * 86_400
    try:
        for start in range(0, count, BATCH):
            items: list[dict[str, Any]] = []
            payloads: list[dict[str, Any]] = []
            links: list[dict[str, Any]] = []
            for n in range(start, min(start + BATCH, count)):
                contact = n % len(contact_ids)
                cus = f"cus_bench{contact:07d}"
                event_type = TYPES[n % len(TYPES)]
                obj_id = cus if event_type.startswith("customer") else f"in_bench{n:07d}"
                email = f"bench{contact}@example.com"
                created = int(now - span + span * n / count)
                payload = json.dumps(
                    {
                        "id": f"evt_bench{n:08d}",
                        "object": "event",
                        "api_version": common.API_VERSION,
                        "created": created,
                        "data": {"object": {"id": obj_id, "object": "customer", "email": email}},
                        "livemode": False,
                        "type": event_type,
                    },
                    separators=(",", ":"),
                ).encode()
                status = rng.choices(statuses, weights)[0]
                error = None
                if status != "done":
                    error = ERRORS[n % len(ERRORS)].format(name=f"Person {n}", cus=cus, n=n)
                items.append(
                    {
                        "id": n + 1,
                        "connection_id": connection_id,
                        "event_id": f"evt_bench{n:08d}",
                        "event_type": event_type,
                        "event_created": created,
                        "api_version": common.API_VERSION,
                        "livemode": False,
                        "source": "webhook",
                        "status": status,
                        "attempts": 1 if status == "done" else 5,
                        "run_after": created,
                        "received_at": float(created),
                        "processed_at": float(created) + 0.05,
                        "last_error": error,
                        "error_cause": causes.of(error),
                        "flows": "contacts" if status == "done" else None,
                        "records": contact_ids[contact] if status == "done" else None,
                        "object_id": obj_id,
                        "email": email,
                    }
                )
                payloads.append({"item_id": n + 1, "payload": payload})
                if status == "done":
                    links.append({"item_id": n + 1, "record_id": contact_ids[contact]})
            with db.write() as conn:
                conn.execute(tables.inbox_items.insert(), items)
                conn.execute(tables.inbox_payloads.insert(), payloads)
                conn.execute(tables.inbox_item_records.insert(), links)
    finally:
        db.dispose()


def count_arrivals(url: str) -> None:
    """The inbox's hourly counts of arrivals, made from the items written above by hand (intake
    keeps them as it stores items)."""
    from snapshots import arrivals
    from snapshots.store.db import Database

    db = Database(url)
    try:
        with db.write() as tx:
            arrivals.recount(tx)
    finally:
        db.dispose()


def seed(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The whole store; returns what the targets need (a session cookie, ids to open)."""
    import sqlalchemy as sa

    from snapshots import users
    from snapshots.store import tables
    from snapshots.store.db import Database

    started = time.perf_counter()
    api.seed(url, args.contacts)
    db = Database(url)
    try:
        with db.read() as tx:
            connection_id = tx.execute(sa.select(tables.connections.c.id)).scalar_one()
            contact_ids = list(
                tx.execute(
                    sa.select(tables.contacts.c.id).order_by(tables.contacts.c.seq)
                ).scalars()
            )
    finally:
        db.dispose()
    seed_invoices(url, args.invoices, contact_ids, connection_id)
    seed_inbox(url, args.items, contact_ids, connection_id)
    count_arrivals(url)
    db = Database(url)
    try:
        with db.write() as tx:
            users.create(
                tx,
                email=ADMIN,
                password="bench console 1",
                role="admin",
                actor="bench",
            )
    finally:
        db.dispose()
    # A contact with events: the newest ones are linked to contacts n % contacts.
    busy = contact_ids[(args.items - 1) % len(contact_ids)]
    return {
        "contact": busy,
        "item": args.items,  # the newest item
        "search": f"bench{len(contact_ids) // 2}@",
        "seconds": time.perf_counter() - started,
    }


def sign_in(url: str) -> str:
    """A new session of the bench's admin: its cookie."""
    from snapshots import sessions, users
    from snapshots.settings import Settings
    from snapshots.store.db import Database

    settings = Settings(database_url=url, master_key=None)
    db = Database(url)
    try:
        with db.write() as tx:
            token, _ = sessions.start(
                tx,
                users.find(tx, ADMIN),
                lifetime=settings.session_lifetime,
                idle=settings.session_idle,
                ip="127.0.0.1",
            )
    finally:
        db.dispose()
    return f"{sessions.COOKIE}={token}"


def targets(seeded: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    return {
        "/healthz": ("/healthz", b""),
        "overview": ("/", b""),
        "events, status=dead": ("/events", b"status=dead"),
        "contacts, search": ("/records/contacts", f"q={seeded['search']}".encode()),
        "contact page": (f"/records/contacts/{seeded['contact']}", b""),
        "event page": (f"/events/{seeded['item']}", b""),
        "flow preview, Stripe's sample": ("/flows/edit/contacts", b""),
        "flow preview, an inbox event": (
            "/flows/edit/contacts",
            f"sample=item:{seeded['item']}".encode(),
        ),
    }


def measure(app: Any, cookie: str, path: str, query: bytes, n: int, warmup: int) -> list[float]:
    """Server time of `n` sequential requests (after `warmup` untimed ones), in seconds."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"accept", b"text/html"),
        (b"cookie", cookie.encode()),
    ]

    async def call() -> float:
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
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        started = time.perf_counter()
        await app(scope, receive, send)
        took = time.perf_counter() - started
        assert status == [200], (path, status)
        return took

    async def repeat(count: int) -> list[float]:
        return [await call() for _ in range(count)]

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(repeat(warmup))
        return loop.run_until_complete(repeat(n))
    finally:
        loop.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    from snapshots.app import create_app
    from snapshots.settings import Settings
    from snapshots.store import db as store

    with contextlib.ExitStack() as stack:
        if args.dir is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snapshots-bench-")))
        else:
            home = Path(args.dir)
            home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{home / 'snapshots.db'}"
        kept = home / "seeded.json"
        database = store.Database(url)
        store.migrate(database)  # a store kept by an earlier run: brought to this schema
        database.dispose()
        if kept.exists():  # seeded by an earlier run with --dir: reused as it is
            seeded = json.loads(kept.read_text())
        else:
            seeded = seed(url, args)
            kept.write_text(json.dumps(seeded))
        cookie = sign_in(url)
        app = create_app(Settings(database_url=url, master_key=None))
        # As `serve` does once its app is built: what start-up made stays out of the garbage
        # collector's full collections (else one, walking it all, takes a request 0.2 s).
        gc.collect()
        gc.freeze()
        figures: list[Figure] = []
        timed: dict[str, list[float]] = {}

        for name, (path, query) in targets(seeded).items():
            timed[name] = measure(app, cookie, path, query, args.requests, args.warmup)
        base = percentile(timed["/healthz"], 0.99)
        for name, (path, query) in targets(seeded).items():
            values = timed[name]
            p99 = percentile(values, 0.99)
            figures.append(
                Figure(
                    target=name,
                    path=path + (f"?{query.decode()}" if query else ""),
                    p50_ms=statistics.median(values) * 1000,
                    p99_ms=p99 * 1000,
                    ratio_p99=p99 / base,
                    requests=len(values),
                )
            )
        return figures, seeded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--invoices", type=int, default=5_000)
    p.add_argument("--items", type=int, default=1_000_000, help="inbox items")
    p.add_argument("--requests", type=int, default=200, help="timed requests per target")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests per target")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--dir",
        help="keep the store in this directory, and reuse it when a run seeded it already "
        "(the size options are then those of that run)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    figures, seeded = run(args)
    if args.json:
        print(json.dumps([asdict(f) for f in figures], indent=2))
        return
    print(
        f"{args.contacts:,} contacts, {args.invoices:,} invoices, {args.items:,} inbox items "
        f"(seeded in {seeded['seconds']:.0f} s); server time in this process, "
        f"{args.requests} sequential requests each:"
    )
    print(f"  {'target':<22}{'p50 ms':>9}{'p99 ms':>9}{'p99 / healthz':>15}")
    for f in figures:
        flag = ""
        if f.target != "/healthz" and (f.ratio_p99 > TARGET_RATIO or f.p99_ms > TARGET_MS):
            flag = "  (over target)"
        print(f"  {f.target:<22}{f.p50_ms:9.2f}{f.p99_ms:9.2f}{f.ratio_p99:15.1f}{flag}")


if __name__ == "__main__":
    main()
