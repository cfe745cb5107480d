"""Ingest benchmark: signed Stripe webhooks into `snapshots serve` (SQLite) vs. a floor app.

In one run, against each target in its own temporary directory and port on 127.0.0.1:
1. the floor (`bench/floor_app.py`: Starlette + the `stripe` signature check + one stdlib
   `sqlite3` INSERT per request, under uvicorn in one process);
2. `snapshots serve` (API + embedded worker, SQLite), connected to a local stub Stripe API.

Both get the same pre-rendered, pre-signed `customer.updated` / `invoice.*` events at
`--concurrency` in-flight requests for `--duration` seconds, after a short warm-up. The report
gives acknowledged events/s (2xx), p50/p99 latency, the Snapshots/floor ratio, and the
end-to-end rate: events accepted / seconds from the first post until every inbox item has
settled (none `pending`, `processing` or `failed`). Once settled, it checks Snapshots' records
against the events it acknowledged (2xx): each invoice must show the most advanced state among
its acknowledged events, each customer with an acknowledged `customer.updated` must be one
contact carrying one of its newest acknowledged versions; it counts the wrong ones and shows
the first few. Figures are reported, never asserted.

Run from the repository root: `.venv/bin/python -m bench.ingest [--duration 10] [--json]`
(`python bench/ingest.py` works too). `--floor-only` measures the floor alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import itertools
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
WEBHOOK_SECRET = "whsec_bench_0123456789abcdefghijklmnopqrstuv"
SECRET_KEY = "sk_test_bench_0123456789abcdefghijklmnop"
UNSETTLED = ("pending", "processing", "failed")
TARGET_RATIO = 0.6  # Snapshots ack/s over floor ack/s
TARGET_END_TO_END = 500.0  # events/s
LIFECYCLE = {"draft": 0, "open": 1, "paid": 2}  # the bench's invoice states, in order
EXAMPLES = 10  # wrong records shown


# --- results ------------------------------------------------------------------------------


@dataclass
class Drain:
    """How the Snapshots inbox settled after the timed run. Times in seconds."""

    counts: dict[str, int] = field(default_factory=dict)  # status -> items, timed run only
    backlog_at_end: int = 0  # unsettled items when the timed run ended
    settled: bool = False
    seconds: float = math.nan  # first post -> all settled

    @property
    def total(self) -> int:
        """Inbox items the timed run added."""
        return sum(self.counts.values())


@dataclass
class Check:
    """Snapshots' records against the events it acknowledged (see `check_records`)."""

    invoices: int = 0  # invoices with an acknowledged event
    contacts: int = 0  # customers with an acknowledged `customer.updated`
    wrong_invoices: list[str] = field(default_factory=list)  # "in_bench<n>: what differs"
    wrong_contacts: list[str] = field(default_factory=list)  # "cus_bench<n>: what differs"

    def as_dict(self) -> dict[str, Any]:
        """Counts, the first `EXAMPLES` wrong ids of each kind, and their descriptions."""
        wrong = self.wrong_invoices + self.wrong_contacts
        return {
            "invoices_checked": self.invoices,
            "invoices_wrong": len(self.wrong_invoices),
            "contacts_checked": self.contacts,
            "contacts_wrong": len(self.wrong_contacts),
            "wrong_invoice_ids": [w.split(":", 1)[0] for w in self.wrong_invoices[:EXAMPLES]],
            "wrong_contact_ids": [w.split(":", 1)[0] for w in self.wrong_contacts[:EXAMPLES]],
            "wrong_examples": wrong[:EXAMPLES],
        }


@dataclass
class Phase:
    """One target's figures."""

    name: str
    load: common.LoadResult
    server_cpu: float  # seconds, server process(es), during the timed run
    machine_cpu: float  # seconds, all CPUs busy, during the timed run
    warmup: int  # requests sent before the timed run
    drain: Drain | None = None
    check: Check | None = None  # None: not checked (no inbox, or it never settled)

    @property
    def end_to_end(self) -> float:
        """Accepted events / seconds from first post until all settled; NaN if never settled."""
        if self.drain is None or not self.drain.settled:
            return math.nan
        return self.load.acked / self.drain.seconds

    def as_dict(self) -> dict[str, Any]:
        """The phase as JSON-ready figures (rates in events/s, latencies in ms, times in s)."""
        load = self.load
        out: dict[str, Any] = {
            "acked": load.acked,
            "rejected": load.rejected,
            "errors": load.errors,
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "seconds": round(load.elapsed, 3),
            "ack_per_s": round(load.rate, 1),
            "p50_ms": round(load.percentile(0.50) * 1000, 2),
            "p90_ms": round(load.percentile(0.90) * 1000, 2),
            "p99_ms": round(load.percentile(0.99) * 1000, 2),
            "max_ms": round(load.percentile(1.0) * 1000, 2),
            "server_cpu_s": round(self.server_cpu, 2),
            "client_cpu_s": round(load.client_cpu, 2),
            # Anything else running on the machine meanwhile (skews the comparison).
            "other_cpu_s": round(max(0.0, self.machine_cpu - self.server_cpu - load.client_cpu), 2),
            "warmup_requests": self.warmup,
            "pool_exhausted": load.exhausted,
        }
        if self.drain is not None:
            out |= {
                "end_to_end_per_s": None
                if math.isnan(self.end_to_end)
                else round(self.end_to_end, 1),
                "settled": self.drain.settled,
                "settle_seconds": None
                if math.isnan(self.drain.seconds)
                else round(self.drain.seconds, 3),
                "backlog_at_end": self.drain.backlog_at_end,
                "inbox": dict(sorted(self.drain.counts.items())),
            }
        if self.check is not None:
            out |= self.check.as_dict()
        return out


# --- the floor ----------------------------------------------------------------------------


def uvicorn_argv(port: int) -> list[str]:
    """The floor under uvicorn as `snapshots serve` runs it: one process, the default (`auto`)
    loop and HTTP implementation, `log_level="warning"`, no access log."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(BENCH_DIR),
        "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
        "floor_app:create_app",
    ]  # fmt: skip


def uvicorn_implementations() -> dict[str, str]:
    """Which event loop and HTTP parser uvicorn's `auto` picks in this environment."""

    def have(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    return {
        "loop": "uvloop" if have("uvloop") else "asyncio",
        "http": "httptools" if have("httptools") else "h11",
    }


def bench_floor(args: argparse.Namespace, pool: common.EventPool, workdir: Path) -> Phase:
    """Start the floor app, warm it up, run the timed load, stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = common.free_port()
    env = {
        **os.environ,
        "FLOOR_DATABASE": str(workdir / "floor.db"),
        "FLOOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "FLOOR_SYNCHRONOUS": args.floor_synchronous,
    }
    with common.Server("floor", uvicorn_argv(port), env=env, log=workdir / "floor.log") as server:
        server.wait_healthy(f"http://{HOST}:{port}/healthz", timeout=args.start_timeout)
        return timed_run(args, pool, server=server, port=port, path="/webhooks/stripe/conn_floor")


# --- Snapshots ----------------------------------------------------------------------------


def snapshots_argv() -> list[str]:
    """How to invoke the `snapshots` CLI: the script beside this Python, else `-m snapshots`."""
    script = Path(sys.executable).with_name("snapshots")
    return [str(script)] if script.exists() else [sys.executable, "-m", "snapshots"]


class _StubStripe(BaseHTTPRequestHandler):
    """Just enough of the Stripe API for `snapshots connect` to accept the key."""

    ACCOUNT: dict[str, Any] = {  # noqa: RUF012
        "id": "acct_bench",
        "object": "account",
        "business_profile": {"name": "Snapshots Bench"},
        "charges_enabled": True,
        "country": "US",
        "created": 1_700_000_000,
        "default_currency": "usd",
        "details_submitted": True,
        "email": "bench@example.com",
        "payouts_enabled": True,
        "settings": {"dashboard": {"display_name": "Snapshots Bench"}},
        "type": "standard",
    }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/v1/account":
            self._send(200, self.ACCOUNT)
        elif path in ("/v1/customers", "/v1/terminal/locations", "/v1/invoices", "/v1/events"):
            self._send(200, {"object": "list", "data": [], "has_more": False, "url": path})
        else:
            self._send(
                404,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": f"Unrecognized request URL (GET: {path})",
                    }
                },
            )

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_bench")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stub_stripe() -> Iterator[str]:
    """Serve the stub Stripe API on a free port of 127.0.0.1; yield its base URL."""
    httpd = ThreadingHTTPServer((HOST, 0), _StubStripe)
    thread = threading.Thread(target=httpd.serve_forever, name="stub-stripe", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def run_cli(argv: list[str], env: dict[str, str], timeout: float) -> str:
    """Run a `snapshots` command; return its stdout, or raise with its output."""
    proc = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        shown = [
            "***" if i and argv[i - 1] in ("--secret-key", "--webhook-secret") else arg
            for i, arg in enumerate(argv)
        ]
        raise RuntimeError(
            f"{' '.join(shown[1:])} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def parse_json_output(text: str) -> dict[str, Any]:
    """The JSON object a `--json` command printed (tolerating lines around it)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise RuntimeError(f"no JSON in output: {text!r}")
    data: dict[str, Any] = json.loads(text[start : end + 1])
    return data


def bench_snapshots(args: argparse.Namespace, pool: common.EventPool, workdir: Path) -> Phase:
    """Migrate, connect (against the stub), serve, warm up, run the timed load, wait to settle."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "bench.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
    env["SNAPSHOTS_DATABASE_URL"] = f"sqlite:///{db}"
    cli = snapshots_argv()
    run_cli([*cli, "migrate"], env, args.start_timeout)
    with stub_stripe() as api_base:
        out = run_cli(
            [
                *cli,
                "connect",
                "stripe",
                "--secret-key",
                SECRET_KEY,
                "--webhook-secret",
                WEBHOOK_SECRET,
                "--api-base",
                api_base,
                "--json",
            ],
            env,
            args.start_timeout,
        )
    connection_id = parse_json_output(out)["id"]
    port = common.free_port()
    argv = [*cli, "serve", "--host", HOST, "--port", str(port)]
    with common.Server("snapshots serve", argv, env=env, log=workdir / "serve.log") as server:
        server.wait_healthy(f"http://{HOST}:{port}/healthz", timeout=args.start_timeout)
        phase = timed_run(
            args,
            pool,
            server=server,
            port=port,
            path=f"/webhooks/stripe/{connection_id}",
            inbox=db,
        )
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"snapshots serve died:\n{server.log_tail()}")
    return phase


def inbox_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Inbox items per status."""
    return {
        str(status): int(n)
        for status, n in conn.execute("SELECT status, COUNT(*) FROM inbox_items GROUP BY status")
    }


def wait_settled(
    conn: sqlite3.Connection, *, timeout: float, interval: float = 0.05
) -> tuple[dict[str, int], bool]:
    """Poll the inbox until nothing is pending, processing or failed; (counts, settled)."""
    deadline = time.perf_counter() + timeout
    while True:
        counts = inbox_counts(conn)
        if not any(counts.get(s, 0) for s in UNSETTLED):
            return counts, True
        if time.perf_counter() >= deadline:
            return counts, False
        time.sleep(interval)


# --- correctness ------------------------------------------------------------------------


def payment_status(invoice: dict[str, Any]) -> str | None:
    """Where an invoice stands for the payer, as Snapshots documents `invoice_payment_status`."""
    status = invoice.get("status")
    if status in ("draft", "paid", "void", "uncollectible"):
        return str(status)
    if status != "open":
        return None
    if (invoice.get("attempt_count") or 0) > 0 and invoice.get("attempted"):
        return "failed"
    return "partially_paid" if (invoice.get("amount_paid") or 0) > 0 else "unpaid"


def _event(pool: common.EventPool, n: int) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(pool.bodies[n])
    return event


def _acked_list(pool: common.EventPool, indexes: list[int]) -> str:
    """`type evt_id, ...` of the events at pool `indexes`."""
    return ", ".join(f"{pool.types[n]} {_event(pool, n)['id']}" for n in indexes)


def check_records(conn: sqlite3.Connection, pool: common.EventPool, acked: list[int]) -> Check:
    """Compare Snapshots' `invoices` and `contacts` with what the acknowledged events imply.

    `acked`: pool indexes answered 2xx (warm-up and timed run). An invoice must exist once,
    with the fields of its acknowledged event of the most advanced state (draft < open < paid)
    and `customer_id` naming the contact of its customer. A customer with an acknowledged
    `customer.updated` must be exactly one contact, with the email, name, phone and metadata
    of one of its acknowledged events with the greatest `created`.
    """
    by_object: dict[str, list[int]] = {}
    for n in sorted(set(acked)):
        by_object.setdefault(pool.objects[n], []).append(n)
    conn.row_factory = sqlite3.Row
    try:
        invoices: dict[str, list[sqlite3.Row]] = {}
        for row in conn.execute(
            "SELECT stripe_invoice_id, status, payment_status, amount_due, amount_paid,"
            " amount_remaining, currency, stripe_customer_id, customer_id FROM invoices"
        ):
            invoices.setdefault(row["stripe_invoice_id"], []).append(row)
        contacts: dict[str, list[sqlite3.Row]] = {}
        contact_customer: dict[str, str | None] = {}  # contact id -> Stripe customer id
        for row in conn.execute(
            "SELECT id, stripe_customer_id, email, name, phone, metadata FROM contacts"
        ):
            contacts.setdefault(row["stripe_customer_id"], []).append(row)
            contact_customer[row["id"]] = row["stripe_customer_id"]
    finally:
        conn.row_factory = None
    check = Check()
    for object_id, indexes in by_object.items():
        if object_id.startswith("in_"):
            check.invoices += 1
            problem = _invoice_problem(pool, indexes, invoices.get(object_id, []), contact_customer)
            if problem:
                check.wrong_invoices.append(
                    f"{object_id}: {problem}; acknowledged: {_acked_list(pool, indexes)}"
                )
        else:
            check.contacts += 1
            problem = _contact_problem(pool, indexes, contacts.get(object_id, []))
            if problem:
                check.wrong_contacts.append(f"{object_id}: {problem}")
    check.wrong_invoices.sort(key=lambda w: int(w.split(":", 1)[0].removeprefix("in_bench")))
    check.wrong_contacts.sort(key=lambda w: int(w.split(":", 1)[0].removeprefix("cus_bench")))
    return check


def _invoice_problem(
    pool: common.EventPool,
    indexes: list[int],
    rows: list[sqlite3.Row],
    contact_customer: dict[str, str | None],
) -> str:
    """What is wrong with one invoice's stored rows ("" if nothing)."""
    if len(rows) != 1:
        return f"{len(rows)} rows"
    row = rows[0]
    best = max(indexes, key=lambda n: LIFECYCLE[common.INVOICE_STAGE[pool.types[n]]["status"]])
    invoice = _event(pool, best)["data"]["object"]
    expected = {
        "status": invoice["status"],
        "payment_status": payment_status(invoice),
        "amount_due": invoice["amount_due"],
        "amount_paid": invoice["amount_paid"],
        "amount_remaining": invoice["amount_remaining"],
        "currency": invoice["currency"],
        "stripe_customer_id": invoice["customer"],
    }
    diffs = [f"{k} {row[k]!r} (expected {v!r})" for k, v in expected.items() if row[k] != v]
    contact = row["customer_id"]
    if contact not in contact_customer:
        diffs.append(f"customer_id {contact!r} names no contact")
    elif contact_customer[contact] != invoice["customer"]:
        diffs.append(
            f"customer_id {contact!r} is the contact of {contact_customer[contact]!r} "
            f"(expected {invoice['customer']!r})"
        )
    return ", ".join(diffs)


def _contact_problem(pool: common.EventPool, indexes: list[int], rows: list[sqlite3.Row]) -> str:
    """What is wrong with one customer's stored contacts ("" if nothing)."""
    if len(rows) != 1:
        return f"{len(rows)} contacts"
    row = rows[0]
    customers = [_event(pool, n) for n in indexes]
    newest = max(e["created"] for e in customers)
    allowed = [
        (c["email"], c["name"], c["phone"], c["metadata"])
        for e in customers
        if e["created"] == newest
        for c in (e["data"]["object"],)
    ]
    stored = (row["email"], row["name"], row["phone"], json.loads(row["metadata"] or "{}"))
    if stored in allowed:
        return ""
    return f"stored {stored!r}, expected one of {allowed[:3]!r}" + (
        f" (+{len(allowed) - 3} more)" if len(allowed) > 3 else ""
    )


# --- the timed run ------------------------------------------------------------------------


def timed_run(
    args: argparse.Namespace,
    pool: common.EventPool,
    *,
    server: common.Server,
    port: int,
    path: str,
    inbox: Path | None = None,
) -> Phase:
    """Warm up, then post the pool for `args.duration` s; with `inbox`, wait until it settles
    and check the records against the acknowledged events.

    Requests are signed just before each step (Stripe's tolerance is 300 s).
    """
    warmup = common.render_requests(
        pool.bodies[: args.warmup], host=HOST, port=port, path=path, secret=WEBHOOK_SECRET
    )
    warm = common.run_load(
        host=HOST,
        port=port,
        requests=warmup,
        concurrency=args.concurrency,
        duration=60.0,
        loop=args.client_loop,
    )
    conn: sqlite3.Connection | None = None
    baseline: dict[str, int] = {}
    if inbox is not None:
        conn = sqlite3.connect(f"file:{inbox}?mode=ro", uri=True, timeout=10.0)
        baseline, _ = wait_settled(conn, timeout=args.drain_timeout)
    timed = common.render_requests(
        pool.bodies[args.warmup :], host=HOST, port=port, path=path, secret=WEBHOOK_SECRET
    )
    try:
        cpu_before, machine_before = server.cpu(), common.machine_cpu()
        load = common.run_load(
            host=HOST,
            port=port,
            requests=timed,
            concurrency=args.concurrency,
            duration=args.duration,
            loop=args.client_loop,
        )
        phase = Phase(
            server.name,
            load,
            server_cpu=server.cpu() - cpu_before,
            machine_cpu=common.machine_cpu() - machine_before,
            warmup=len(warmup),
        )
        if conn is not None:
            drain = Drain()
            drain.backlog_at_end = sum(inbox_counts(conn).get(s, 0) for s in UNSETTLED)
            counts, drain.settled = wait_settled(conn, timeout=args.drain_timeout)
            if drain.settled:
                drain.seconds = time.perf_counter() - load.started
            drain.counts = {
                s: n - baseline.get(s, 0) for s, n in counts.items() if n - baseline.get(s, 0)
            }
            phase.drain = drain
            if drain.settled:
                acked = warm.acked_indexes + [len(warmup) + i for i in load.acked_indexes]
                phase.check = check_records(conn, pool, acked)
        return phase
    finally:
        if conn is not None:
            conn.close()


# --- report -------------------------------------------------------------------------------


def median_phase(phases: list[Phase]) -> Phase | None:
    """The phase with the median acknowledged rate (the lower middle one for an even count)."""
    if not phases:
        return None
    return sorted(phases, key=lambda p: p.load.rate)[(len(phases) - 1) // 2]


def figures(
    args: argparse.Namespace, pool: common.EventPool, floors: list[Phase], snaps: list[Phase]
) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data: the median round of each target."""
    floor, snap = median_phase(floors), median_phase(snaps)
    out: dict[str, Any] = {
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "uvicorn": uvicorn_implementations(),
        "client_loop": "asyncio"
        if args.client_loop == "asyncio" or uvicorn_implementations()["loop"] == "asyncio"
        else "uvloop",
        "event_bytes_mean": round(pool.size_bytes / max(1, len(pool.bodies))),
        "rounds": args.rounds,
        "floor": floor.as_dict() if floor else None,
        "snapshots": snap.as_dict() if snap else None,
    }
    if floor and snap:
        ratio = snap.load.rate / floor.load.rate if floor.load.rate else math.nan
        e2e = snap.end_to_end
        out["ratio"] = round(ratio, 3)
        out["targets"] = {
            "ratio": TARGET_RATIO,
            "ratio_met": ratio >= TARGET_RATIO,
            "end_to_end_per_s": TARGET_END_TO_END,
            "end_to_end_met": not math.isnan(e2e) and e2e >= TARGET_END_TO_END,
        }
    if args.rounds > 1:
        out["each_round"] = [
            {
                "floor_ack_per_s": round(f.load.rate, 1) if f else None,
                "snapshots_ack_per_s": round(n.load.rate, 1) if n else None,
                "end_to_end_per_s": None
                if n is None or math.isnan(n.end_to_end)
                else round(n.end_to_end, 1),
                "other_cpu_s": [x.as_dict()["other_cpu_s"] for x in (f, n) if x is not None],
            }
            for f, n in itertools.zip_longest(floors, snaps)
        ]
    return out


def render_table(data: dict[str, Any]) -> str:
    """The figures as an aligned text table."""
    cols = [(k, data[k]) for k in ("floor", "snapshots") if data.get(k)]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, key: str, fmt: str = "{}") -> None:
        cells = ["" if c.get(key) is None else fmt.format(c[key]) for _, c in cols]
        if any(cells):
            rows.append((label, cells))

    row("acknowledged (2xx)", "acked")
    row("rejected (non-2xx)", "rejected")
    row("transport errors", "errors")
    row("timed seconds", "seconds", "{:.2f}")
    row("ack events/s", "ack_per_s", "{:,.0f}")
    row("p50 latency ms", "p50_ms", "{:.1f}")
    row("p99 latency ms", "p99_ms", "{:.1f}")
    row("server CPU s", "server_cpu_s", "{:.1f}")
    row("client CPU s", "client_cpu_s", "{:.1f}")
    row("other CPU s", "other_cpu_s", "{:.1f}")
    row("backlog at end", "backlog_at_end")
    row("settle seconds", "settle_seconds", "{:.2f}")
    row("end-to-end events/s", "end_to_end_per_s", "{:,.0f}")
    row("invoices checked", "invoices_checked", "{:,}")
    row("invoices wrong", "invoices_wrong", "{:,}")
    row("contacts checked", "contacts_checked", "{:,}")
    row("contacts wrong", "contacts_wrong", "{:,}")
    for status in ("done", "ignored", "dead", "failed", "pending", "processing"):
        cells = [str(c.get("inbox", {}).get(status, 0)) if "inbox" in c else "" for _, c in cols]
        if any(cells):
            rows.append((f"inbox {status}", cells))
    names = [name for name, _ in cols]
    width = max(len(label) for label, _ in rows) if rows else 10
    colw = [max(len(n), *(len(cells[i]) for _, cells in rows)) for i, n in enumerate(names)]
    rounds = f", median of {data['rounds']} rounds" if data["rounds"] > 1 else ""
    lines = [
        f"ingest bench: {data['duration_s']:g} s at concurrency {data['concurrency']}{rounds}, "
        f"{data['cpus']} CPUs, mean event {data['event_bytes_mean']:,} bytes, "
        f"uvicorn loop={data['uvicorn']['loop']} http={data['uvicorn']['http']}, "
        f"client loop={data['client_loop']}",
        "  ".join([" " * width, *(n.rjust(w) for n, w in zip(names, colw, strict=True))]),
    ]
    lines += [
        "  ".join([label.ljust(width), *(c.rjust(w) for c, w in zip(cells, colw, strict=True))])
        for label, cells in rows
    ]
    if "ratio" in data:
        t = data["targets"]
        e2e = data["snapshots"].get("end_to_end_per_s")
        lines.append(
            f"ratio snapshots/floor: {data['ratio']:.2f} (target >= {t['ratio']}: "
            f"{'met' if t['ratio_met'] else 'NOT met'})"
        )
        lines.append(
            f"end-to-end: {'n/a' if e2e is None else f'{e2e:,.0f}'} events/s "
            f"(target >= {t['end_to_end_per_s']:.0f}: "
            f"{'met' if t['end_to_end_met'] else 'NOT met'})"
        )
    for n, r in enumerate(data.get("each_round", []), 1):
        parts = [
            f"{label} {r[key]:,.0f}"
            for label, key in (
                ("floor ack/s", "floor_ack_per_s"),
                ("snapshots ack/s", "snapshots_ack_per_s"),
                ("end-to-end/s", "end_to_end_per_s"),
            )
            if r[key] is not None
        ]
        other = "/".join(f"{x:.1f}" for x in r["other_cpu_s"])
        lines.append(f"round {n}: {', '.join(parts)}, other CPU s {other}")
    for name, c in cols:
        if c["pool_exhausted"]:
            lines.append(f"warning: {name} used up the event pool; raise --max-rate")
        if c.get("settled") is False:
            lines.append(f"{name}: records not checked (the inbox never settled)")
        for kind in ("invoice", "contact"):
            if c.get(f"wrong_{kind}_ids"):
                lines.append(
                    f"{name}: wrong {kind}s (first {EXAMPLES}): {', '.join(c[f'wrong_{kind}_ids'])}"
                )
        lines += [f"  {w}" for w in c.get("wrong_examples", [])]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=10.0, help="timed seconds per target")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate floor and Snapshots this many times; report each one's median round",
    )
    p.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    p.add_argument(
        "--max-rate",
        type=float,
        default=6000.0,
        help="events/s the pre-built pool allows for (pool = rate x duration)",
    )
    p.add_argument("--customers", type=int, default=2000, help="distinct customers")
    p.add_argument("--invoices", type=int, default=4000, help="distinct invoices")
    p.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for the inbox to settle"
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a server or CLI command",
    )
    p.add_argument(
        "--floor-synchronous",
        default="NORMAL",
        choices=["OFF", "NORMAL", "FULL"],
        help="floor's PRAGMA synchronous",
    )
    p.add_argument(
        "--client-loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="load generator's event loop (auto: uvloop when installed)",
    )
    p.add_argument("--floor-only", action="store_true", help="measure the floor alone")
    p.add_argument("--snapshots-only", action="store_true", help="measure Snapshots alone")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the report. Exit 0 with figures, 1 on a setup failure, 130 on ^C."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # Even when started with SIGINT ignored (a background job of a script): ^C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = Path(tempfile.mkdtemp(prefix="snapshots-bench-"))
    log = sys.stderr
    try:
        count = args.warmup + math.ceil(args.max_rate * args.duration)
        started = time.perf_counter()
        pool = common.build_events(
            count, customers=args.customers, invoices=args.invoices, tag=f"{os.getpid():x}"
        )
        # The pool lives through the whole run; keep the cyclic GC from rescanning it.
        gc.collect()
        gc.freeze()
        print(
            f"built {count:,} events ({pool.size_bytes / 1e6:.0f} MB) "
            f"in {time.perf_counter() - started:.1f} s",
            file=log,
        )
        floors: list[Phase] = []
        snaps: list[Phase] = []
        for r in range(1, args.rounds + 1):
            if not args.snapshots_only:
                print(f"round {r}: floor ...", file=log)
                floors.append(bench_floor(args, pool, root / f"floor-{r}"))
            if not args.floor_only:
                print(f"round {r}: snapshots serve ...", file=log)
                snaps.append(bench_snapshots(args, pool, root / f"snapshots-{r}"))
        data = figures(args, pool, floors, snaps)
        print(json.dumps(data, indent=2) if args.json else render_table(data))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=log)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError, sqlite3.Error) as exc:
        print(f"ingest bench failed: {exc}", file=log)
        return 1
    finally:
        if args.keep:
            print(f"kept {root}", file=log)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
