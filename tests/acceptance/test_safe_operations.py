"""Safe operations with real processes: a misconfigured process, a schema from another release,
PostgreSQL stopped under load, and a bulk recovery, none of which may cost an event."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots.store import db as store
from tests.conftest import fixture, sign
from tests.support.localstripe import LocalStripe

from .conftest import Snapshots, eventually, free_port, stop

pytestmark = pytest.mark.acceptance

WEBHOOK_SECRET = "whsec_safe_operations_0123456789"
STRIPE_KEY = "sk_test_safeoperations1234"
K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))
APPLY_TIMEOUT = 60.0


def connect(deployment: Snapshots, ls: LocalStripe) -> str:
    deployment.cli("migrate")
    found = deployment.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        STRIPE_KEY,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--api-base",
        ls.api_base,
        "--json",
    )
    connection_id: str = found["id"]
    return connection_id


def customer_event(n: int, *, name: str = "Ada") -> dict[str, Any]:
    obj = {
        **fixture("customer"),
        "id": f"cus_safe{n:06d}",
        "email": f"safe{n}@example.com",
        "name": f"{name} {n}",
    }
    return {
        "id": f"evt_safe{n:06d}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created",
    }


def post(http: httpx.Client, connection_id: str, event: dict[str, Any]) -> int:
    payload = json.dumps(event).encode()
    try:
        response = http.post(
            f"/webhooks/stripe/{connection_id}",
            content=payload,
            headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
        )
    except httpx.TransportError:
        return 0
    return response.status_code


def inbox_rows(deployment: Snapshots) -> list[tuple[str, str, int]]:
    """(event id, status, attempts) of every inbox item, read straight from the database."""
    engine = sa.create_engine(
        deployment.env["SNAPSHOTS_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT event_id, status, attempts FROM inbox_items ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    with httpx.Client(trust_env=False, timeout=5.0) as http:
        response = http.get(f"http://127.0.0.1:{port}/readyz")
    return response.status_code, response.json()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_process_with_the_wrong_master_key_refuses_to_start_and_changes_nothing(
    snapshots: Snapshots, localstripe: LocalStripe
) -> None:
    snapshots.master_key = K1
    connection_id = connect(snapshots, localstripe)
    snapshots.serve("--no-worker")
    with snapshots.api() as http:
        for n in range(20):
            assert post(http, connection_id, customer_event(n)) == 200
    before = inbox_rows(snapshots)
    assert [status for _, status, _ in before] == ["pending"] * 20

    error = one_line_error(snapshots.cli("worker", ok=False, env={"SNAPSHOTS_MASTER_KEY": K2}))
    assert error.startswith("error: SNAPSHOTS_MASTER_KEY does not decrypt the stored secrets")
    assert inbox_rows(snapshots) == before
    error = one_line_error(snapshots.cli("sync", ok=False, env={"SNAPSHOTS_MASTER_KEY": K2}))
    assert "SNAPSHOTS_MASTER_KEY" in error
    port = free_port()
    error = one_line_error(
        snapshots.cli("serve", "--port", str(port), ok=False, env={"SNAPSHOTS_MASTER_KEY": K2})
    )
    assert error.startswith("error: SNAPSHOTS_MASTER_KEY does not decrypt")
    assert inbox_rows(snapshots) == before
    # With the right key, everything is applied.
    snapshots.worker()
    eventually(
        lambda: [s for _, s, _ in inbox_rows(snapshots)] == ["done"] * 20 or _fail(snapshots),
        timeout=APPLY_TIMEOUT,
    )


def _fail(deployment: Snapshots) -> bool:
    raise AssertionError(f"not applied yet: {inbox_rows(deployment)}")


def test_a_running_worker_whose_key_goes_wrong_charges_nothing_and_catches_up(
    snapshots: Snapshots, localstripe: LocalStripe
) -> None:
    """Another host rotates the master key; this worker still has the old one. It stops
    claiming, says so on /readyz, and applies everything once restarted with the new key."""
    snapshots.master_key = K1
    connection_id = connect(snapshots, localstripe)
    snapshots.master_key = f"{K1},{K3}"  # serve can decrypt what either key encrypted
    snapshots.serve("--no-worker")
    snapshots.master_key = K1
    health = free_port()
    worker = snapshots.start("worker", "worker", "--health-port", str(health))
    eventually(lambda: _ready(health), timeout=20)
    with snapshots.api() as http:
        for n in range(5):
            assert post(http, connection_id, customer_event(n)) == 200
    eventually(
        lambda: [s for _, s, _ in inbox_rows(snapshots)] == ["done"] * 5 or _fail(snapshots),
        timeout=APPLY_TIMEOUT,
    )
    # Another host rotates the key: serve keeps working (it has `K1,K3`), the worker with K1
    # alone cannot decrypt any more.
    snapshots.cli("rotate-master-key", env={"SNAPSHOTS_MASTER_KEY": f"{K3},{K1}"})
    status, body = eventually(lambda: _unready(health), timeout=20)
    assert status == 503
    [problem] = body["problems"]
    assert problem["check"] == "master_key"
    assert "SNAPSHOTS_MASTER_KEY does not decrypt" in problem["message"]
    with snapshots.api() as http:
        for n in range(5, 25):
            assert post(http, connection_id, customer_event(n)) == 200
    time.sleep(3)  # the worker would have claimed them by now
    rows = inbox_rows(snapshots)
    assert [(s, a) for _, s, a in rows[5:]] == [("pending", 0)] * 20
    assert readyz(health)[0] == 503
    log = worker.log_path.read_text()
    assert log.count("not ready: master_key") == 1, log  # once, not once per item or check
    # Restarted with the new key: everything is applied, nothing went dead.
    stop(worker.process)
    snapshots.master_key = K3
    snapshots.start("worker2", "worker", "--health-port", str(health))
    eventually(
        lambda: [s for _, s, _ in inbox_rows(snapshots)] == ["done"] * 25 or _fail(snapshots),
        timeout=APPLY_TIMEOUT,
    )
    assert readyz(health)[0] == 200


def _ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        found = readyz(port)
    except httpx.TransportError as exc:
        raise AssertionError(str(exc)) from exc
    assert found[0] == 200, found
    return found


def _unready(port: int) -> tuple[int, dict[str, Any]]:
    found = readyz(port)
    assert found[0] == 503, found
    return found


def test_a_schema_from_another_release_is_refused_with_the_fix(snapshots: Snapshots) -> None:
    snapshots.cli("migrate")
    database = store.Database(snapshots.database_url)
    try:
        config = store.alembic_config(database)
        with database.write() as conn:
            config.attributes["connection"] = conn
            from alembic import command

            command.downgrade(config, "-1")
        behind = store.schema(database).current
    finally:
        database.dispose()
    error = one_line_error(snapshots.cli("worker", ok=False))
    assert error.endswith("run `snapshots migrate`"), error
    assert _revision(snapshots) == behind  # a worker never migrates
    snapshots.cli("migrate")
    with sqlite3.connect(snapshots.home / "snapshots.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for command_line in (("worker",), ("sync",), ("serve", "--port", str(free_port()))):
        error = one_line_error(snapshots.cli(*command_line, ok=False))
        assert error.endswith("this is an older Snapshots than the database: upgrade it"), error
    assert _revision(snapshots) == "9999"


def _revision(deployment: Snapshots) -> str:
    with sqlite3.connect(deployment.home / "snapshots.db") as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


BROKEN_FLOWS = """flows:
  - name: contacts
    trigger: [customer.created, customer.updated]
    action: upsert_contact
    fields:
      stripe_customer_id: id
      email: email
      name: name
      custom.balance: cents_to_decimal(balance, 'zzz')
"""


def test_four_thousand_dead_items_are_recovered_in_one_command(
    snapshots: Snapshots, localstripe: LocalStripe, tmp_path: Path
) -> None:
    snapshots.master_key = K1
    connection_id = connect(snapshots, localstripe)
    flows_file = tmp_path / "broken.yaml"
    flows_file.write_text(BROKEN_FLOWS)
    snapshots.cli("flows", "import", str(flows_file), "--comment", "a mistake")
    snapshots.serve()
    total = 4000

    def send(numbers: range) -> None:
        with snapshots.api() as http:
            for n in numbers:
                assert post(http, connection_id, customer_event(n)) == 200

    threads = [threading.Thread(target=send, args=(range(k, total, 8),)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    eventually(
        lambda: _count(snapshots, "dead") == total or _fail_count(snapshots),
        timeout=180,
        interval=1.0,
    )
    # The flow is fixed; the dry run counts and shows the cause; the replay applies them all.
    snapshots.cli("flows", "rollback", "0")
    dry = snapshots.cli("events", "replay", "--status", "dead", "--error", "zzz", "--dry-run")
    assert "4,000 dead item(s) match" in dry.stdout, dry.stdout
    assert "'zzz' is not an ISO 4217 currency code" in dry.stdout
    assert "dry run: nothing was queued" in dry.stdout
    assert _count(snapshots, "dead") == total
    done = snapshots.cli_json(
        "events", "replay", "--status", "dead", "--error", "zzz", "--since", "1h", "--json"
    )
    assert (done["status"], done["matched"], done["requeued"]) == ("done", total, total)
    eventually(
        lambda: _count(snapshots, "done") == total or _fail_count(snapshots),
        timeout=180,
        interval=1.0,
    )
    [entry] = snapshots.cli_json("audit", "--action", "events.replayed", "--json")
    assert entry["details"]["count"] == total and entry["details"]["matched"] == total
    assert entry["details"]["filter"]["error"] == "zzz"
    assert entry["details"]["filter"]["status"] == "dead"
    assert entry["target"] == done["id"]


def _count(deployment: Snapshots, status: str) -> int:
    return sum(1 for _, s, _ in inbox_rows(deployment) if s == status)


def _fail_count(deployment: Snapshots) -> bool:
    found: dict[str, int] = {}
    for _, status, _ in inbox_rows(deployment):
        found[status] = found.get(status, 0) + 1
    raise AssertionError(f"inbox: {found}")


# PostgreSQL stopped and started under load, on a private server of the test's own.


@dataclass
class PrivatePostgres:
    bindir: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # the server refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=100"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert versions, "PostgreSQL's server binaries are missing (scripts/postgres installs them)"
    bindir = versions[-1].parent
    home = Path(tempfile.mkdtemp(prefix="snapshots-pg-"))
    data = home / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    server = PrivatePostgres(bindir, data, free_port())
    server._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(home, ignore_errors=True)


def test_postgresql_stopped_and_started_under_load_loses_nothing(
    snapshots: Snapshots, localstripe: LocalStripe, private_postgres: PrivatePostgres
) -> None:
    snapshots.master_key = K1
    snapshots.extra_env["SNAPSHOTS_DATABASE_URL"] = private_postgres.url
    snapshots.cli("migrate")
    connection_id = connect(snapshots, localstripe)
    snapshots.serve("--no-worker")
    health = [free_port(), free_port()]
    workers = [
        snapshots.start(f"worker{i}", "worker", "--health-port", str(port))
        for i, port in enumerate(health)
    ]
    for port in health:
        eventually(lambda port=port: _ready(port), timeout=20)
    acknowledged: set[int] = set()
    refused: list[int] = []
    total = 600
    done_sending = threading.Event()

    def send() -> None:
        with snapshots.api() as http:
            for n in range(total):
                if post(http, connection_id, customer_event(n)) == 200:
                    acknowledged.add(n)
                else:
                    refused.append(n)
                time.sleep(0.01)
        done_sending.set()

    sender = threading.Thread(target=send)
    sender.start()
    eventually(lambda: len(acknowledged) >= 100 or _fail_acks(acknowledged), timeout=30)
    private_postgres.stop()
    eventually(lambda: _unready(snapshots.port), timeout=20)
    time.sleep(3)
    private_postgres.start()
    sender.join(300)
    assert done_sending.is_set()
    assert refused, "the outage refused no webhook: it came too late to matter"
    # Stripe retries what was not acknowledged.
    with snapshots.api() as http:
        for n in refused:
            eventually(
                lambda n=n: (
                    post(http, connection_id, customer_event(n)) == 200 or _fail_acks(acknowledged)
                ),
                timeout=30,
            )
            acknowledged.add(n)
    assert acknowledged == set(range(total))

    def applied() -> None:
        rows = inbox_rows(snapshots)
        assert [e for e, _, _ in rows] and len(rows) == total, len(rows)
        counts: dict[str, int] = {}
        for _, status, _ in rows:
            counts[status] = counts.get(status, 0) + 1
        assert counts == {"done": total}, counts

    eventually(applied, timeout=APPLY_TIMEOUT, interval=1.0)
    assert sorted(e for e, _, _ in inbox_rows(snapshots)) == sorted(
        customer_event(n)["id"] for n in range(total)
    )
    for running in workers:  # nothing was restarted
        assert running.process.poll() is None
    for port in health:
        eventually(lambda port=port: _ready(port), timeout=30)
    eventually(lambda: _ready(snapshots.port), timeout=30)
    engine = sa.create_engine(
        private_postgres.url.replace("postgresql://", "postgresql+psycopg://")
    )
    try:
        with engine.connect() as conn:
            contacts = dict(
                conn.execute(sa.text("SELECT stripe_customer_id, email FROM contacts")).all()
            )
    finally:
        engine.dispose()
    assert contacts == {f"cus_safe{n:06d}": f"safe{n}@example.com" for n in range(total)}


def _fail_acks(acknowledged: set[int]) -> bool:
    raise AssertionError(f"{len(acknowledged)} acknowledged so far")
