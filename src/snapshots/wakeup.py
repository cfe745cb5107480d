"""Wake-ups: an idle worker waits for work to arrive instead of polling the inbox.

On PostgreSQL, whatever makes inbox items claimable NOTIFYs `inbox.ARRIVED` inside its
transaction (PostgreSQL delivers it when that commits) and each worker LISTENs on a connection
of its own (`Listener`). On SQLite, `serve`'s intake raises a flag that its embedded worker, a
child process, waits on (`Flag`). Either way an idle worker still looks by itself every
`LOOK_EVERY` seconds (a read, no lock): a retry comes due, a lease runs out, or an item came
from a process that cannot signal it (a standalone worker on SQLite polls at `worker_idle`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa

from snapshots import inbox

log = logging.getLogger("snapshots.wakeup")

LOOK_EVERY = 1.0  # seconds an idle worker with a wake-up waits at most before it looks
SLICE = 0.25  # seconds between looks at the stop event while waiting


class Wakeup(Protocol):
    def wait(self, stop: threading.Event, timeout: float) -> bool:
        """Wait until work may have arrived (True), `timeout` passed or `stop` is set."""
        ...


class Flag:
    """A flag shared with the process that stores events (a `multiprocessing.Event`)."""

    def __init__(self, event: Any) -> None:
        self._event = event

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._event.wait(min(SLICE, left)):
                self._event.clear()
                return True
        return False


class Listener:
    """LISTEN on PostgreSQL, on a connection of its own (reconnected when it drops)."""

    def __init__(self, url: sa.URL) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: psycopg.Connection[Any] | None = None

    def _connected(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            self._conn.execute(f"LISTEN {inbox.ARRIVED}")
        return self._conn

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                conn = self._connected()
                for _ in conn.notifies(timeout=min(SLICE, left), stop_after=1):
                    return True
            except psycopg.Error as exc:
                log.info("listening for new inbox items failed (%s); polling meanwhile", exc)
                self.close()
                stop.wait(left)
                return False
        return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None
