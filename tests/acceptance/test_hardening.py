"""A real `snapshots serve` under hostile clients, on loopback only: a head that never ends,
slow heads, unfinished bodies, too many connections, and flows files made to stall a check.
Meanwhile `/healthz` keeps answering fast, and memory comes back afterwards."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.localstripe import LocalStripe

from .conftest import Snapshots, eventually
from .test_safe_operations import connect

pytestmark = pytest.mark.acceptance

HEALTHY_MEDIAN = 0.1  # seconds: /healthz answers this fast meanwhile (the median of its tries)
HEALTHY_WORST = 1.0  # seconds: and never slower than this


class Prober:
    """Times `GET /healthz` every 50 ms on a thread while an attack runs."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        self._stop = threading.Event()
        self.times: list[float] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self._base, trust_env=False, timeout=5.0) as http:
            while not self._stop.wait(0.05):
                started = time.monotonic()
                try:
                    status = http.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.times.append(time.monotonic() - started)
                if status != 200:
                    self.failures.append(f"HTTP {status}")

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        deadline = time.monotonic() + 2
        while len(self.times) < 5 and time.monotonic() < deadline:  # a short attack
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(10)
        assert not self.failures, self.failures
        assert len(self.times) >= 5, self.times
        assert statistics.median(self.times) < HEALTHY_MEDIAN, sorted(self.times)[-5:]
        assert max(self.times) < HEALTHY_WORST, sorted(self.times)[-5:]


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def closed(sock: socket.socket) -> bool:
    """Has the server closed this connection (EOF or reset)?"""
    sock.settimeout(0.01)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (BlockingIOError, TimeoutError):
        return False
    except OSError:
        return True


@pytest.fixture
def served(snapshots: Snapshots) -> Iterator[Snapshots]:
    snapshots.extra_env.update(
        {
            "SNAPSHOTS_HEADER_TIMEOUT": "3",
            "SNAPSHOTS_BODY_TIMEOUT": "3",
            "SNAPSHOTS_MAX_CONNECTIONS": "400",
        }
    )
    snapshots.cli("migrate")
    yield snapshots


def test_a_head_that_never_ends_is_cut_off_at_the_limit(served: Snapshots) -> None:
    serving = served.serve("--no-worker")
    before = rss(serving.process.pid)
    with Prober(served.base_url):
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Never-Ends: ")
        sent = 0
        try:
            while sent < 128 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed the connection: the point
        sock.settimeout(5)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code": "headers_too_large"' in answer
    assert rss(serving.process.pid) - before < 10 * 1024 * 1024  # it kept none of it


def test_two_hundred_slow_heads_are_closed_after_the_deadline(served: Snapshots) -> None:
    served.serve("--no-worker")
    socks = []
    with Prober(served.base_url):
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        started = time.monotonic()
        while time.monotonic() - started < 8 and not all(closed(s) for s in socks):
            for sock in socks:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")  # one header line a second, never the end
                except OSError:
                    pass
            time.sleep(1.0)
        assert all(closed(s) for s in socks), "slow heads still open after 8 s (deadline 3 s)"
    for sock in socks:
        sock.close()


def test_unfinished_bodies_are_closed_and_released(
    served: Snapshots, localstripe: LocalStripe
) -> None:
    connection_id = connect(served, localstripe)
    serving = served.serve("--no-worker")
    with httpx.Client(base_url=served.base_url, trust_env=False) as http:
        for _ in range(20):
            http.get("/healthz")
    before = rss(serving.process.pid)
    socks = []
    with Prober(served.base_url):
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.sendall(
                f"POST /webhooks/stripe/{connection_id} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\n"
                "Content-Length: 1000000\r\n\r\n".encode()
            )
            sock.sendall(b"{" + b" " * 900_000)  # and never the rest
            socks.append(sock)
        eventually(lambda: all(closed(s) for s in socks) or _open(socks), timeout=15)
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    after = rss(serving.process.pid)
    assert after - before < 30 * 1024 * 1024, (before, after)


def _open(socks: list[socket.socket]) -> bool:
    raise AssertionError(f"{sum(not closed(s) for s in socks)} bodies still open")


def test_connections_over_the_cap_are_refused_at_once(served: Snapshots) -> None:
    served.extra_env["SNAPSHOTS_MAX_CONNECTIONS"] = "50"
    served.serve("--no-worker")
    socks = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(70)]
    time.sleep(0.5)
    refused = 0
    for sock in socks:
        sock.settimeout(0.5)
        try:
            if sock.recv(100).startswith(b"HTTP/1.1 503 "):
                refused += 1
        except OSError:
            pass
        sock.close()
    assert refused >= 20, refused


def test_flows_files_made_to_stall_the_check_are_refused_quickly(served: Snapshots) -> None:
    served.serve("--no-worker")
    created = served.cli_json(
        "keys", "create", "--name", "flows", "--scope", "workflows.write", "--json"
    )
    wild = "  - {name: f%d, trigger: ['*'], filter: \"email != 'x'\", action: log_event}\n"
    big = "flows:\n" + "".join(wild % n for n in range(12_000))  # about 1 MB
    costly = "flows:\n" + "".join(wild % n for n in range(40))  # 40 x 270 sample events
    with served.api(created["secret"]) as api, Prober(served.base_url):
        for text, expected in ((big, "over 256 KiB"), (costly, "5,000 sample events")):
            started = time.monotonic()
            response = api.post("/v1/flows", json={"text": text})
            took = time.monotonic() - started
            assert response.status_code == 400, response.text
            assert expected in response.json()["error"]["message"]
            assert took < 10, took
