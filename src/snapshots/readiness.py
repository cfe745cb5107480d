"""Readiness: can this process do its work right now, and if not, what fixes it?

`startup` runs before `serve` accepts a request and before a `worker` or `sync` claims
anything: the database answers, its schema is at this code's head, the master key decrypts
every stored secret, and the flows version in force loads with this code. A failure is one
`errors.ProcessFault` whose message names the setting or command that fixes it.

While a process runs, a `Monitor` repeats the same checks every few seconds and keeps the
result in `Faults`, which `/readyz` shows and the worker consults before it claims: a process
with a fault claims nothing, so a misconfigured host of a fleet never charges an attempt to an
event. A fault is logged once when it appears and once when it clears, never once per item.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa

from snapshots import __version__, connections, errors, metrics, revisions, times, vault
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database

log = logging.getLogger("snapshots.readiness")
CHECK_EVERY = 2.0  # seconds between two checks of a running process


def _database_label(db: Database) -> str:
    return sa.make_url(db.url).render_as_string(hide_password=True)


def check_database(db: Database) -> None:
    try:
        with db.read() as tx:
            tx.execute(sa.text("SELECT 1"))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        reason = " ".join(str(exc.orig or exc).split())[:300]
        raise errors.DatabaseUnavailable(
            f"the database does not answer ({_database_label(db)}): {reason}; check "
            "SNAPSHOTS_DATABASE_URL and that the server runs"
        ) from exc


def check_schema(db: Database) -> None:
    """Refuse a schema this code cannot work with (it never migrates: see `store.migrate`)."""
    found = store.schema(db)
    if found.state == "empty":
        raise errors.SchemaMismatch("the database has no schema yet: run `snapshots migrate`")
    if found.state == "behind":
        raise errors.SchemaMismatch(
            f"the database schema is at revision {found.current} and this Snapshots needs "
            f"{found.head}: run `snapshots migrate`"
        )
    if found.state == "ahead":
        raise errors.SchemaMismatch(
            f"the database schema is at revision {found.current}, which this Snapshots "
            f"({__version__}, revision {found.head}) does not know: this is an older Snapshots "
            "than the database: upgrade it"
        )


def check_master_key(db: Database, secrets: vault.Vault, settings: Settings) -> None:
    """Every stored secret decrypts with the master key in force (`new,old` lists count)."""
    t = tables.connections
    with db.read() as tx:
        rows = tx.execute(sa.select(t.c.id, t.c.secret_key, t.c.webhook_secrets)).all()
    failing = []
    for row in rows:
        try:
            secrets.decrypt(row.secret_key)
            connections.signing_secrets(secrets, row.webhook_secrets)
        except errors.WrongMasterKey:
            failing.append(row.id)
    if not failing:
        return
    named = ", ".join(failing[:3]) + (" ..." if len(failing) > 3 else "")
    source = (
        "SNAPSHOTS_MASTER_KEY"
        if settings.master_key
        else f"the key file {vault.key_file(settings)} (SNAPSHOTS_MASTER_KEY is unset)"
    )
    raise errors.WrongMasterKey(
        f"{source} does not decrypt the stored secrets of {len(failing)} of {len(rows)} "
        f"connection(s) ({named}): set SNAPSHOTS_MASTER_KEY to the key they were encrypted "
        "with (during a rotation, `new,old`)"
    )


def check_flows(db: Database, live: revisions.Live | None = None) -> None:
    """The flows version in force loads with this code (a newer one may use a newer action):
    FlowsIncompatible otherwise. A process's `live` flows answer without parsing again."""
    if live is None:
        with db.read() as tx:
            revisions.current(tx)
    else:
        live.refresh()
        live()


def check(
    db: Database, secrets: vault.Vault, settings: Settings, live: revisions.Live | None = None
) -> None:
    """Every check, in the order an operator would fix them; raises the first failure."""
    check_database(db)
    check_schema(db)
    check_master_key(db, secrets, settings)
    check_flows(db, live)


def startup(db: Database, settings: Settings, *, migrate: bool = False) -> vault.Vault:
    """The checks a process makes before it does anything; `serve` migrates first (under a
    lock, so several starting at once are safe), `worker` and `sync` never do. Returns the
    vault of the master key in force."""
    check_database(db)
    if migrate and store.schema(db).state != "ahead":
        store.migrate(db)
    check_schema(db)
    secrets = vault.load(settings)
    check_master_key(db, secrets, settings)
    check_flows(db)
    return secrets


@dataclass(frozen=True)
class Fault:
    kind: str  # the check or part that fails: database, schema, master_key, flows, worker
    message: str
    since: float  # unix seconds


def fault_of(exc: BaseException) -> Fault:
    """The fault a process-level error stands for (see `errors.is_process_fault`)."""
    if isinstance(exc, errors.ProcessFault):
        return Fault(exc.kind, exc.message, time.time())
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    return Fault("database", f"the database is unavailable: {reason}", time.time())


class Faults:
    """The faults a process has now, by kind. `report` and `clear` log a change once;
    `on_change` (given) hears every change (the embedded worker tells `serve` this way)."""

    def __init__(self, on_change: Callable[[list[Fault]], object] | None = None) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Fault] = {}
        self._on_change = on_change

    def report(self, exc: BaseException | Fault) -> Fault:
        fault = exc if isinstance(exc, Fault) else fault_of(exc)
        with self._lock:
            known = self._active.get(fault.kind)
            if known is not None and known.message == fault.message:
                return known
            self._active[fault.kind] = (
                fault if known is None else Fault(fault.kind, fault.message, known.since)
            )
            active = list(self._active.values())
        log.error("not ready: %s: %s", fault.kind, fault.message)
        self._changed(active)
        return fault

    def clear(self, *kinds: str) -> None:
        """Clear these kinds of fault (all of them when none is named)."""
        with self._lock:
            gone = [k for k in (kinds or tuple(self._active)) if k in self._active]
            for kind in gone:
                del self._active[kind]
            active = list(self._active.values())
        for kind in gone:
            log.warning("ready again: %s recovered", kind)
        if gone:
            self._changed(active)

    def replace(self, found: list[Fault]) -> None:
        """Hold exactly these faults (what another process reported)."""
        with self._lock:
            self._active = {fault.kind: fault for fault in found}

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._active.values())

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._active)

    def _changed(self, active: list[Fault]) -> None:
        if self._on_change is not None:
            try:
                self._on_change(active)
            except Exception:  # the listener is gone (serve stopping): nothing to tell
                log.debug("could not pass on a change of faults", exc_info=True)


CHECKED_KINDS = ("database", "schema", "master_key", "flows")


class Monitor:
    """Repeats `check` every `interval` seconds on a thread and keeps `faults` in step: a
    failing check is reported, a passing one clears every checked kind."""

    def __init__(
        self,
        db: Database,
        secrets: vault.Vault,
        settings: Settings,
        faults: Faults,
        *,
        live: revisions.Live | None = None,
        interval: float = CHECK_EVERY,
    ) -> None:
        self._db = db
        self._vault = secrets
        self._settings = settings
        self.faults = faults
        self._live = live
        self._interval = interval

    def check_now(self) -> Fault | None:
        try:
            check(self._db, self._vault, self._settings, self._live)
        except Exception as exc:
            if not errors.is_process_fault(exc):
                log.exception("a readiness check failed unexpectedly")
                exc = errors.ProcessFault(f"a readiness check failed: {errors.describe(exc)}")
            fault = self.faults.report(exc)
            self.faults.clear(*(k for k in CHECKED_KINDS if k != fault.kind))
            return fault
        self.faults.clear(*CHECKED_KINDS)
        return None

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            self.check_now()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="readiness", daemon=True)
        thread.start()
        return thread


def answer(found: list[Fault]) -> tuple[int, dict[str, object]]:
    """`/readyz`'s status code and body for these faults."""
    if not found:
        return 200, {"status": "ready"}
    problems = [{"check": f.kind, "message": f.message, "since": times.iso(f.since)} for f in found]
    return 503, {"status": "unready", "problems": problems}


def serve_health(
    host: str, port: int, faults: Faults, db: Database | None = None
) -> ThreadingHTTPServer:
    """`/healthz` and `/readyz` for a process without the HTTP app (a standalone worker), on a
    thread of its own, and `/metrics` (its own counters) given its database; `shutdown()`
    stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body: dict[str, object]
            if self.path == "/metrics" and db is not None:
                self._metrics(db)
                return
            if self.path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif self.path == "/readyz":
                status, body = answer(faults.active())
            else:
                status, body = (
                    404,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "not_found",
                            "message": "not found",
                        }
                    },
                )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _metrics(self, db: Database) -> None:
            try:
                data = metrics.exposition(db)
            except sa.exc.SQLAlchemyError:  # the inbox's gauges need the database
                self.send_response(503)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", metrics.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would drown the log

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot listen on {host}:{port} for /readyz: {exc.strerror} "
            "(SNAPSHOTS_WORKER_HEALTH_PORT)"
        ) from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
