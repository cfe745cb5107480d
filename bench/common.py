"""Shared pieces of the benchmarks: Stripe events, signed requests, the load generator, processes.

The load generator shares two cores with the server under test, so everything it can do before
the clock starts it does then: event bodies are rendered once, and each target gets complete
pre-signed HTTP/1.1 requests (`render_requests`). During the timed run each of `concurrency`
asyncio workers owns one keep-alive connection and does only write-request / read-response.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import hmac
import itertools
import json
import os
import random
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

DATA_DIR = Path(__file__).resolve().parent / "data"
API_VERSION = "2026-07-29.dahlia"
EVENT_MIX = (
    "customer.updated",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_succeeded",
)
# `paid` sets amount_paid / amount_remaining; the API version has no `paid` field any more.
INVOICE_STAGE: dict[str, dict[str, Any]] = {
    "invoice.created": {"status": "draft", "paid": False},
    "invoice.finalized": {"status": "open", "paid": False},
    "invoice.paid": {"status": "paid", "paid": True},
    "invoice.payment_succeeded": {"status": "paid", "paid": True},
}
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # per second
PR_SET_PDEATHSIG = 1  # prctl(2) option


def load_fixture(name: str) -> dict[str, Any]:
    """A Stripe example object from `bench/data/<name>.json`."""
    with (DATA_DIR / f"{name}.json").open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventPool:
    """Pre-rendered event bodies (raw JSON bytes, as Stripe would send them), their types and
    the Stripe object each one is about (`cus_bench<n>` / `in_bench<n>`)."""

    bodies: list[bytes]
    types: list[str]
    objects: list[str]

    @property
    def size_bytes(self) -> int:
        """Total body size, bytes."""
        return sum(map(len, self.bodies))


def event(event_id: str, event_type: str, obj: dict[str, Any], *, created: int) -> dict[str, Any]:
    """A Stripe event envelope around `obj`, as Stripe sends it."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def _placeholder(name: str) -> str:
    return f"@@{name}@@"


def event_templates(*, created: int) -> dict[str, str]:
    """Per event type, the pretty-printed event JSON with `@@NAME@@` placeholders.

    Stripe delivers bodies indented by two spaces; rendering each template once and filling
    in ids by string replacement keeps the real body size without a slow `indent=2` dump per
    event. Placeholders: EVT, N, C, C7 (zero-padded), I, AMOUNT, AMOUNT_PAID, AMOUNT_REMAINING
    (the AMOUNTs replace a quoted string, so they render as JSON numbers).
    """
    customer_fx = load_fixture("customer")
    invoice_fx = load_fixture("invoice")
    line_fx = invoice_fx["lines"]["data"][0]
    ph = _placeholder
    out: dict[str, str] = {}
    for kind in EVENT_MIX:
        if kind == "customer.updated":
            obj: dict[str, Any] = {
                **customer_fx,
                "id": f"cus_bench{ph('C')}",
                "email": f"bench{ph('C')}@example.com",
                "name": f"Bench Customer {ph('C')}",
                "phone": f"+1555{ph('C7')}",
                "created": created - 86_400,
                "metadata": {"bench": "ingest", "revision": ph("N")},
            }
            previous: dict[str, Any] = {"metadata": {"revision": None}}
        else:
            stage = INVOICE_STAGE[kind]
            invoice_id = f"in_bench{ph('I')}"
            obj = {
                **invoice_fx,
                "id": invoice_id,
                "customer": f"cus_bench{ph('C')}",
                "customer_email": f"bench{ph('C')}@example.com",
                "customer_name": f"Bench Customer {ph('C')}",
                "number": f"BENCH-{ph('I')}",
                "status": stage["status"],
                "amount_due": ph("AMOUNT"),
                "amount_paid": ph("AMOUNT_PAID"),
                "amount_remaining": ph("AMOUNT_REMAINING"),
                "subtotal": ph("AMOUNT"),
                "total": ph("AMOUNT"),
                "created": created - 3600,
                "lines": {
                    **invoice_fx["lines"],
                    "data": [{**line_fx, "amount": ph("AMOUNT"), "invoice": invoice_id}],
                    "url": f"/v1/invoices/{invoice_id}/lines",
                },
            }
            previous = {"status": "draft"} if kind == "invoice.finalized" else {}
        data: dict[str, Any] = {"object": obj}
        if previous:
            data["previous_attributes"] = previous
        event = {
            "id": f"evt_bench{ph('EVT')}",
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        text = json.dumps(event, indent=2)
        for name in ("AMOUNT_PAID", "AMOUNT_REMAINING", "AMOUNT"):
            text = text.replace(f'"{ph(name)}"', ph(name))
        out[kind] = text
    return out


def build_events(
    count: int,
    *,
    customers: int = 2000,
    invoices: int = 4000,
    seed: int = 1,
    tag: str = "",
    created: int | None = None,
) -> EventPool:
    """Render `count` unique events over `customers` customers and `invoices` invoices.

    Every fifth event is `customer.updated`; the other four walk one invoice through
    created -> finalized -> paid -> payment_succeeded, so a burst of concurrent requests carries
    the same-second, any-order deliveries Stripe really makes. Ids: `evt_bench<tag><n>`,
    `cus_bench<n>`, `in_bench<n>`; `created` is unix seconds (default: now).
    """
    rng = random.Random(seed)
    templates = event_templates(created=int(time.time()) if created is None else created)
    invoice_customer = [rng.randrange(customers) for _ in range(invoices)]
    invoice_amount = [rng.randrange(500, 50_000) for _ in range(invoices)]
    ph = _placeholder
    bodies: list[bytes] = []
    types: list[str] = []
    objects: list[str] = []
    for n in range(count):
        kind = EVENT_MIX[n % len(EVENT_MIX)]
        text = templates[kind].replace(ph("EVT"), f"{tag}{n:010d}").replace(ph("N"), str(n))
        if kind == "customer.updated":
            c = rng.randrange(customers)
            text = text.replace(ph("C7"), f"{c:07d}").replace(ph("C"), str(c))
            objects.append(f"cus_bench{c}")
        else:
            i = (n // len(EVENT_MIX)) % invoices
            amount = invoice_amount[i]
            paid = INVOICE_STAGE[kind]["paid"]
            text = (
                text.replace(ph("I"), str(i))
                .replace(ph("C"), str(invoice_customer[i]))
                .replace(ph("AMOUNT_PAID"), str(amount if paid else 0))
                .replace(ph("AMOUNT_REMAINING"), str(0 if paid else amount))
                .replace(ph("AMOUNT"), str(amount))
            )
            objects.append(f"in_bench{i}")
        bodies.append(text.encode())
        types.append(kind)
    return EventPool(bodies=bodies, types=types, objects=objects)


def sign(body: bytes, *, secret: str, timestamp: int) -> str:
    """A `Stripe-Signature` header value (`t=<unix s>,v1=<hex HMAC-SHA256>`)."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def render_requests(
    bodies: Sequence[bytes],
    *,
    host: str,
    port: int,
    path: str,
    secret: str,
    timestamp: int | None = None,
) -> list[bytes]:
    """Complete HTTP/1.1 keep-alive POST requests, signed at `timestamp` (unix s, default now)."""
    t = int(time.time()) if timestamp is None else timestamp
    prefix = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: */*; q=0.5, application/xml\r\n"
        "Cache-Control: no-cache\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
    ).encode()
    return [
        prefix
        + f"Stripe-Signature: {sign(body, secret=secret, timestamp=t)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]


# --- load generator -----------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one timed run measured. Times are seconds on the `time.perf_counter` clock."""

    started: float = 0.0
    finished: float = 0.0
    acked: int = 0
    rejected: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged requests
    acked_indexes: list[int] = field(default_factory=list)  # into `requests`, in answer order
    client_cpu: float = 0.0  # seconds of this process's CPU (user + system)
    exhausted: bool = False

    @property
    def sent(self) -> int:
        """Requests that got any answer or failed in flight."""
        return self.acked + self.rejected + self.errors

    @property
    def elapsed(self) -> float:
        """First request written to last response read, seconds."""
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        """Acknowledged (2xx) requests per second."""
        return self.acked / self.elapsed

    def percentile(self, q: float) -> float:
        """Latency at quantile `q` (0..1, nearest rank), seconds; NaN without data."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class ProtocolError(Exception):
    """The server's answer was not a parsable HTTP/1.1 response."""


def parse_response(buf: bytes | bytearray) -> tuple[int, bool, int] | None:
    """Parse one HTTP/1.1 response from the start of `buf`.

    Returns (status, keep_alive, bytes consumed), or None while it is incomplete. Bodies must be
    framed by `Content-Length` or chunked encoding (what uvicorn sends).
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buf[: head_end + 2]).lower()
    try:
        status = int(head[9:12])
    except ValueError as exc:
        raise ProtocolError(head[:80].decode(errors="replace")) from exc
    keep_alive = b"\r\nconnection: close\r\n" not in head
    body = head_end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        return (status, keep_alive, body + length) if len(buf) >= body + length else None
    if b"\r\ntransfer-encoding: chunked\r\n" in head:
        pos = body
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", eol)
                if buf[eol : eol + 4] == b"\r\n\r\n":
                    return status, keep_alive, eol + 4
                return None if trailer_end < 0 else (status, keep_alive, trailer_end + 4)
            pos = eol + 2 + size + 2
            if len(buf) < pos:
                return None
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive, body
    raise ProtocolError(f"response {status} without Content-Length or chunked body")


class _Shared:
    """State shared by all connections of one run."""

    def __init__(self, requests: Sequence[bytes], deadline: float, result: LoadResult) -> None:
        self.requests = requests
        self.cursor = itertools.count()
        self.deadline = deadline
        self.result = result

    def next_request(self) -> int:
        """The index of the next unsent request; -1 once the deadline passed or the pool ran
        out."""
        if time.perf_counter() >= self.deadline:
            return -1
        n = next(self.cursor)
        if n >= len(self.requests):
            self.result.exhausted = True
            return -1
        return n


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send, parse the answer in `data_received`, send the next.

    Everything happens in protocol callbacks, so a request costs no task switch on the client.
    """

    def __init__(self, shared: _Shared, closed: asyncio.Future[None]) -> None:
        self.shared = shared
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.sent_at = 0.0
        self.index = -1  # of the request in flight, into `shared.requests`
        self.in_flight = False
        self.finished = False  # no more requests for this run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        index = self.shared.next_request()
        if index < 0:
            self.finished = True
            self.transport.close()
            return
        self.index = index
        self.in_flight = True
        self.sent_at = time.perf_counter()
        self.transport.write(self.shared.requests[index])

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        try:
            parsed = parse_response(self.buf)
        except (ProtocolError, ValueError):
            self.shared.result.errors += 1
            self.in_flight = False
            self.transport.close()
            return
        if parsed is None:
            return
        status, keep_alive, consumed = parsed
        end = time.perf_counter()
        del self.buf[:consumed]
        self.in_flight = False
        result = self.shared.result
        result.finished = end
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.acked += 1
            result.latencies.append(end - self.sent_at)
            result.acked_indexes.append(self.index)
        else:
            result.rejected += 1
        if keep_alive:
            self._send_next()
        else:
            self.transport.close()

    def abort(self) -> None:
        """Give up on this connection (and any request in flight)."""
        self.finished = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.shared.result.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _client(
    host: str, port: int, shared: _Shared, max_connects: int = 1000, grace: float = 60.0
) -> None:
    """Keep one connection open (reconnecting when the server closes it) until the run ends.

    A request still unanswered `grace` s after the deadline counts as an error.
    """
    loop = asyncio.get_running_loop()
    for _ in range(max_connects):
        closed: asyncio.Future[None] = loop.create_future()
        try:
            _, proto = await loop.create_connection(
                functools.partial(_Connection, shared, closed), host, port
            )
        except OSError:
            shared.result.errors += 1
            if time.perf_counter() >= shared.deadline:
                return
            await asyncio.sleep(0.05)
            continue
        try:
            await asyncio.wait_for(closed, max(shared.deadline - time.perf_counter(), 0) + grace)
        except TimeoutError:
            proto.abort()
            return
        if proto.finished:
            return


async def _run(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, duration: float
) -> LoadResult:
    result = LoadResult()
    result.started = time.perf_counter()
    result.finished = result.started
    shared = _Shared(requests, result.started + duration, result)
    await asyncio.gather(*(_client(host, port, shared) for _ in range(concurrency)))
    return result


def run_load(
    *,
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    duration: float,
    loop: str = "auto",
) -> LoadResult:
    """Post `requests` in order over `concurrency` keep-alive connections for `duration` s.

    Stops early (with `exhausted` set) if the requests run out. Latency is per request, from
    the write to the last byte of the answer; `acked_indexes` lists the requests answered 2xx.
    """
    cpu_before = _self_cpu()
    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        result = runner.run(_run(host, port, requests, concurrency, duration))
    result.client_cpu = _self_cpu() - cpu_before
    return result


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The client's event loop: `uvloop`, `asyncio`, or `auto` (uvloop when installed)."""
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- processes ----------------------------------------------------------------------------


def machine_cpu() -> float:
    """CPU seconds all CPUs of this machine have been busy (not idle or waiting on I/O)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) used so far by all live processes of session `sid`."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # Fields after the parenthesised command name; see proc(5).
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[3]) == sid:
                total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Server:
    """A server subprocess in its own session, logging to a file, killed (whole group) on exit."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Server:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's process id (also its session and process-group id)."""
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds used so far by the server and its children."""
        return session_cpu(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after `timeout` s."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, url: str, timeout: float = 60.0) -> float:
        """Poll `url` until it answers 200; return seconds waited. Raises if it never does."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy at {url} after {timeout:.0f} s")
