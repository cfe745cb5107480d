"""`/readyz` of a real `serve` on PostgreSQL flips to 503 while the database is unreachable
(a TCP proxy between them is cut, rather than stopping the shared server) or its schema is
behind this code's, and back to 200 when that is repaired."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots.store.db import Database
from tests.acceptance.conftest import Snapshots, eventually, free_port
from tests.conftest import _empty_postgres

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres]


class Proxy:
    """127.0.0.1:port -> upstream, byte for byte, until `cut()` closes every connection and
    refuses new ones; `mend()` lets them through again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            found, self.sockets = self.sockets, []
        for end in found:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    with httpx.Client(trust_env=False, timeout=15) as http:
        answer = http.get(f"{base_url}/readyz")
        return answer.status_code, answer.json()


def test_readyz_follows_the_database_and_its_schema(tmp_path: Path, postgres_url: str) -> None:
    _empty_postgres(postgres_url)
    real = sa.make_url(postgres_url)
    proxy = Proxy((real.host or "127.0.0.1", real.port or 5432))
    through = real.set(port=proxy.port).render_as_string(hide_password=False)
    deployment = Snapshots(
        home=tmp_path,
        port=free_port(),
        master_key=Fernet.generate_key().decode(),
        extra_env={"SNAPSHOTS_DATABASE_URL": through},
    )
    try:
        deployment.serve("--processes", "2")
        assert readyz(deployment.base_url)[0] == 200

        proxy.cut()

        def unready(check: str) -> None:
            status, body = readyz(deployment.base_url)
            assert status == 503, body
            assert check in [p["check"] for p in body["problems"]], body

        eventually(lambda: unready("database"), timeout=20)
        with httpx.Client(trust_env=False, timeout=15) as http:
            assert http.get(f"{deployment.base_url}/healthz").status_code == 503

        proxy.mend()
        eventually(lambda: _ready(deployment.base_url), timeout=30)

        # Migrations behind this code's: `snapshots migrate` is what fixes it.
        database = Database(postgres_url)
        with database.write() as tx:
            head = tx.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
            tx.execute(sa.text("UPDATE alembic_version SET version_num = '0005'"))
        try:
            eventually(lambda: unready("schema"), timeout=20)
        finally:
            with database.write() as tx:
                tx.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": head})
            database.dispose()
        eventually(lambda: _ready(deployment.base_url), timeout=30)
    except AssertionError as exc:
        logs = "\n".join(f"--- {name}\n{text[-4000:]}" for name, text in deployment.logs())
        raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        deployment.stop_all()
        proxy.close()


def _ready(base_url: str) -> None:
    status, body = readyz(base_url)
    assert status == 200, body
