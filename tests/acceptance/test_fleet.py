"""A fleet on PostgreSQL with real processes: `serve --processes N` (N app processes on one
port, one embedded worker, metrics summed over the processes), and two `serve --processes 2`
plus two `worker` under webhook load, one `serve` and one `worker` SIGKILLed in the middle,
what was not acknowledged delivered again (as Stripe does): every acknowledged event stored,
each applied exactly once, every record right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots import arrivals, connections, vault
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.acceptance.conftest import EXECUTABLE, Snapshots, eventually, free_port, stop
from tests.conftest import ACCOUNT, WEBHOOK_SECRET, SqliteCopy, _empty_postgres, fixture, sign

pytestmark = [pytest.mark.acceptance]


def add_connection(url: str, master_key: str) -> str:
    database = Database(url)
    try:
        with database.write() as tx:
            found = connections.add(
                tx,
                vault.load(Settings(database_url=url, master_key=master_key)),
                account=ACCOUNT,
                secret_key="sk_test_fleet1234",
                webhook_secrets=[WEBHOOK_SECRET],
                name="fleet",
                # Nothing listens there: the workers' location polls and reconciliations
                # fail at once, on loopback, instead of looking for Stripe on the network.
                api_base=f"http://127.0.0.1:{free_port()}",
            )
        return found.id
    finally:
        database.dispose()


def customer_event(n: int, version: int) -> dict[str, Any]:
    """`customer.updated` number `version` of customer `n`: the newest must win."""
    obj = fixture("customer") | {
        "id": f"cus_fleet{n:05d}",
        "email": f"fleet{n}@example.com",
        "name": f"Fleet {n} v{version}",
    }
    return {
        "id": f"evt_fleet{n:05d}_{version}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": 1_800_000_000 + version,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created" if version == 0 else "customer.updated",
    }


def post(http: httpx.Client, connection_id: str, event: dict[str, Any]) -> bool:
    """One delivery; True when acknowledged (2xx)."""
    payload = json.dumps(event).encode()
    try:
        answer = http.post(
            f"/webhooks/stripe/{connection_id}",
            content=payload,
            headers={"Stripe-Signature": sign(payload), "Content-Type": "application/json"},
        )
    except httpx.TransportError:
        return False
    return answer.is_success


def children(pid: int) -> list[str]:
    """The command lines of `pid`'s child processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(cmdline)
    return found


def test_sqlite_refuses_several_processes(tmp_path: Path, sqlite_copy: SqliteCopy) -> None:
    deployment = Snapshots(home=tmp_path, port=free_port())
    deployment.extra_env["SNAPSHOTS_DATABASE_URL"] = sqlite_copy(tmp_path / "db")
    result = deployment.cli("serve", "--processes", "2", ok=False)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "PostgreSQL" in result.stderr and "--processes 1" in result.stderr


@pytest.mark.postgres
def test_serve_processes_share_a_port_one_worker_and_their_metrics(
    tmp_path: Path, postgres_url: str
) -> None:
    _empty_postgres(postgres_url)
    master_key = Fernet.generate_key().decode()
    connection_id = add_connection(postgres_url, master_key)
    deployment = Snapshots(
        home=tmp_path,
        port=free_port(),
        master_key=master_key,
        extra_env={"SNAPSHOTS_DATABASE_URL": postgres_url, "SNAPSHOTS_WORKER_IDLE": "0.05"},
    )
    try:
        serve = deployment.serve("--processes", "2")
        spawned = eventually(
            lambda: _spawned(serve.process.pid, 3), timeout=20
        )  # two app processes and the embedded worker
        assert sum("multiprocessing" in c for c in spawned) >= 3, spawned
        events = [customer_event(n, 0) for n in range(200)]
        with (
            httpx.Client(base_url=deployment.base_url, trust_env=False, timeout=10) as http,
            ThreadPoolExecutor(8) as pool,
        ):
            acknowledged = list(pool.map(lambda e: post(http, connection_id, e), events))
            assert all(acknowledged)

            def applied() -> None:
                assert _count(postgres_url, tables.contacts) == 200

            eventually(applied, timeout=60)

            def counted() -> None:
                # Any process answers for all of them: the counters are summed over the files.
                # The worker counts a batch's items once the whole batch is applied, so the
                # contacts can be there a moment before the last counts are.
                for _ in range(4):
                    text = http.get("/metrics").text
                    assert _sample(text, "snapshots_webhooks_total", 'outcome="stored"') == 200
                    assert _sample(text, "snapshots_worker_items_total", 'status="done"') == 200

            eventually(counted, timeout=10)
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert http.get("/healthz").json()["worker"] is True
    except AssertionError as exc:
        logs = "\n".join(f"--- {name}\n{text}" for name, text in deployment.logs())
        raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        deployment.stop_all()


def _spawned(pid: int, at_least: int) -> list[str]:
    found = children(pid)
    assert len([c for c in found if "multiprocessing" in c]) >= at_least, found
    return found


def _count(url: str, table: sa.Table) -> int:
    database = Database(url)
    try:
        with database.read() as tx:
            return int(tx.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    finally:
        database.dispose()


def _sample(text: str, name: str, labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# Two serves and two workers, one of each killed under load.


def _start(home: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """A snapshots process in a session of its own (so its whole group can be SIGKILLed)."""
    with open(home / f"{args[0]}-{len(list(home.iterdir()))}.log", "wb") as log:
        return subprocess.Popen(
            [str(EXECUTABLE), *args],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _healthy(port: int) -> None:
    with httpx.Client(trust_env=False, timeout=2) as http:
        try:
            answer = http.get(f"http://127.0.0.1:{port}/readyz")
        except httpx.TransportError as exc:
            raise AssertionError(f"127.0.0.1:{port} does not answer: {exc}") from exc
        assert answer.status_code == 200, answer.text


@pytest.mark.postgres
def test_a_fleet_loses_nothing_when_a_serve_and_a_worker_are_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    _empty_postgres(postgres_url)
    master_key = Fernet.generate_key().decode()
    connection_id = add_connection(postgres_url, master_key)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SNAPSHOTS_") and not k.lower().endswith("_proxy")
    } | {
        "SNAPSHOTS_DATABASE_URL": postgres_url,
        "SNAPSHOTS_MASTER_KEY": master_key,
        "SNAPSHOTS_WORKER_IDLE": "0.05",
        "SNAPSHOTS_LEASE": "3",
        "PYTHONUNBUFFERED": "1",
    }
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        serves = [
            _start(tmp_path, env, "serve", "--no-worker", "--processes", "2", "--port", str(p))
            for p in ports
        ]
        workers = [_start(tmp_path, env, "worker") for _ in range(2)]
        processes = [*serves, *workers]
        for port in ports:
            eventually(lambda port=port: _healthy(port), timeout=30)

        customers, versions = 150, 4
        # Every customer's versions in order, customers interleaved: 600 events.
        events = [customer_event(n, v) for v in range(versions) for n in range(customers)]
        acknowledged: set[str] = set()
        lock = threading.Lock()
        clients = [
            httpx.Client(base_url=f"http://127.0.0.1:{p}", trust_env=False, timeout=5)
            for p in ports
        ]
        killed = threading.Event()

        def deliver(index: int) -> None:
            event = events[index]
            # Spread over both serves; after the kill, the dead one refuses and Stripe retries.
            if post(clients[index % 2], connection_id, event):
                with lock:
                    acknowledged.add(event["id"])
            if index == len(events) // 2 and not killed.is_set():
                killed.set()
                os.killpg(serves[0].pid, signal.SIGKILL)
                os.killpg(workers[0].pid, signal.SIGKILL)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(deliver, range(len(events))))
        assert killed.is_set()
        # Stripe delivers again what was not acknowledged, to the endpoint that answers.
        missing = [e for e in events if e["id"] not in acknowledged]
        assert missing  # the dead serve's share after the kill, and what it had in hand
        for event in missing:
            assert post(clients[1], connection_id, event), event["id"]
            acknowledged.add(event["id"])
        for client in clients:
            client.close()

        def all_applied() -> None:
            database = Database(postgres_url)
            try:
                with database.read() as tx:
                    items = tx.execute(
                        sa.select(tables.inbox_items.c.event_id, tables.inbox_items.c.status)
                    ).all()
            finally:
                database.dispose()
            assert {i.event_id for i in items} == {e["id"] for e in events}
            assert len(items) == len(events)  # stored once each
            pending = [i for i in items if i.status != "done"]
            assert not pending, pending[:5]

        eventually(all_applied, timeout=120, interval=1)
        database = Database(postgres_url)
        try:
            with database.read() as tx:
                contacts = tx.execute(sa.select(tables.contacts)).all()
                # Each stored item counted once in its hour, by whichever process stored it.
                hourly = Counter(
                    (row.connection_id, arrivals.hour_of(row.received_at))
                    for row in tx.execute(
                        sa.select(
                            tables.inbox_items.c.connection_id, tables.inbox_items.c.received_at
                        )
                    )
                )
                a = tables.inbox_arrivals
                kept = {
                    (row.connection_id, int(row.hour)): int(row.n)
                    for row in tx.execute(
                        sa.select(
                            a.c.connection_id, a.c.hour, sa.func.sum(a.c["count"]).label("n")
                        ).group_by(a.c.connection_id, a.c.hour)
                    )
                }
        finally:
            database.dispose()
        assert kept == dict(hourly)
        assert len(contacts) == customers  # each customer once, never twice
        wrong = [c for c in contacts if not c.name.endswith(f"v{versions - 1}")]
        assert not wrong, [(c.stripe_customer_id, c.name) for c in wrong[:5]]
    except AssertionError as exc:
        logs = "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(tmp_path.glob("*.log"))
        )
        raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
