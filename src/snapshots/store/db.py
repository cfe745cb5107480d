"""Engine set-up for SQLite (embedded default) and PostgreSQL (scale-out), and migrations.

SQLite runs in WAL mode with `synchronous=NORMAL` (durable across process crashes, which is
what "committed" promises the webhook sender) and writers start with `BEGIN IMMEDIATE`, so two
processes never deadlock upgrading a read lock; readers never block writers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from snapshots import errors
from snapshots.store import dialect

log = logging.getLogger("snapshots.store")

# A database connection inside a transaction, as domain functions take it (`tx`): "connection"
# alone means a linked Stripe account here.
Tx = Connection

BUSY_TIMEOUT = 30_000  # milliseconds a SQLite writer waits for the lock
LOCK_POLL = 0.0003  # seconds between tries for SQLite's write lock
# SQLite's WAL is copied back into the database (a checkpoint: the pages written since the last
# one, then two fsyncs) by the connection whose commit takes the WAL past this many pages. The
# default, 1,000 pages (4 MB), is a few hundred events: a checkpoint every fraction of a second
# under load, 15-40 ms each, and every page an index shares between events copied again each
# time. At 10,000 pages intake spent 0.17 ms of CPU an event instead of 0.21 (0.21 ms of time
# instead of 0.37-0.49) in `bench.drain`'s stream.
WAL_CHECKPOINT = 10_000  # pages (40 MB)
# Intake's connection checkpoints only past this many: it runs on the event loop, where a
# checkpoint stalls every request, and another process (the worker) checkpoints at
# WAL_CHECKPOINT anyway. It is the bound for when nothing else writes.
INTAKE_WAL_CHECKPOINT = 50_000  # pages (200 MB)
MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATE_LOCK = 0x536E617073686F74  # PostgreSQL advisory lock held while migrating ("Snapshot")


class Database:
    """One engine plus the two kinds of transaction the code needs."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = _create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise errors.ConfigError(f"bad database URL {url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        self._writer = self.engine.execution_options(snapshots_write="wait")
        self._disposed = False
        sa.event.listen(self.engine, "checkin", self._close_after_dispose)

    def _close_after_dispose(self, dbapi_connection: Any, _record: Any) -> None:
        """A connection handed back after `dispose` (a thread that was still at work) goes to
        a pool nobody holds any more: close it rather than leave it to the garbage collector."""
        if self._disposed and dbapi_connection is not None:
            dbapi_connection.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write (`BEGIN IMMEDIATE` on SQLite); commits on success."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot)."""
        with self.engine.begin() as conn:
            yield conn

    def lookup(self, stmt: sa.Select[Any], params: dict[str, Any]) -> dict[str, Any] | None:
        """The first row of one read statement as a dict of its columns, or None. On SQLite the
        statement goes to sqlite3 itself, outside a transaction (one statement reads one
        snapshot): SQLAlchemy's connection, transaction and result cost four times what SQLite
        takes to look a row up by key, and every console request looks its session up. Its
        columns must be ones sqlite3 returns as they are (text, numbers: no type to convert);
        a database error is SQLAlchemy's, as through a transaction."""
        if self.dialect != "sqlite":
            with self.read() as tx:
                row = tx.execute(stmt, params).first()
                return None if row is None else fields(row)
        sql, names, keys = sqlite_text(stmt, self.engine.dialect)
        values = [params[name] for name in names]
        conn = self.engine.raw_connection()
        driver: Any = conn.driver_connection  # sqlite3
        try:
            row = driver.execute(sql, values).fetchone()
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
        finally:
            conn.close()
        return None if row is None else dict(zip(keys, row, strict=True))

    @contextmanager
    def trial(self) -> Iterator[Connection]:
        """A write transaction that is always rolled back: to see what a write would do
        (a flow preview) while nothing is written."""
        with self._writer.connect() as conn:
            trans = conn.begin()
            try:
                yield conn
            finally:
                trans.rollback()

    def dispose(self) -> None:
        self._disposed = True
        self.engine.dispose()


def fields(row: Any) -> dict[str, Any]:
    """A row as a dict of its columns, for a model to validate: pydantic reads a dict 2.4
    times faster than the row's mapping view (a page of 50 inbox events: 0.17 ms, not 0.42).
    The column names are those of the last result seen (`Row._fields` builds them again at
    each call: half the cost of a row), kept with the result's metadata they belong to."""
    global _last_keys
    parent, keys = _last_keys
    if row._parent is not parent:
        keys = row._fields
        _last_keys = (row._parent, keys)
    return dict(zip(keys, row, strict=True))


_last_keys: tuple[Any, tuple[str, ...]] = (None, ())  # (a result's metadata, its column names)


@functools.lru_cache(maxsize=16)
def sqlite_text(
    stmt: sa.Select[Any], dialect: sa.Dialect
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """A statement built once as SQLite's text, for sqlite3 itself: the text, its parameters'
    names in order, and its columns' names (`Database.lookup`, `inbox`'s redeliveries)."""
    compiled = stmt.compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ()), tuple(stmt.selected_columns.keys())


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value: orjson (records are read by the page), or the standard library
    for what orjson refuses and `json.dumps` writes (integers over 64 bits, NaN)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = sa.create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, json_deserializer=json_loads
    )
    # An executemany INSERT (upserts included) goes out as multi-row INSERTs, a page of rows a
    # statement, instead of one statement per row.
    engine.dialect.use_insertmanyvalues_wo_returning = True
    sa.event.listen(engine, "before_cursor_execute", dialect.results_in_binary)
    return engine


def _sqlite_engine(url: str) -> Engine:
    path = sa.engine.make_url(url).database
    if path and path != ":memory:":
        _private_file(Path(path))
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT / 1000},
        pool_size=20,
        max_overflow=20,
        json_deserializer=json_loads,
    )

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so we can say BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("snapshots_write")
        if write == "held":
            return  # LockTaker began the transaction itself
        if write:
            _begin_immediate(conn.connection.driver_connection)
        else:
            _begin_read(conn.connection.driver_connection)

    return engine


def _private_file(path: Path) -> None:
    """Make the SQLite file 0600 before SQLite opens it (its -wal and -shm files take its
    mode), and warn about a directory others may write to (they could replace the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning(
                "%s can be read by other users (mode %o): chmod 600 it and its -wal and -shm files",
                path,
                path.stat().st_mode & 0o777,
            )
    mode = path.parent.stat().st_mode
    if mode & 0o022 and not mode & stat.S_ISVTX:
        log.warning(
            "the directory %s can be written by other users (mode %o): they could replace the "
            "database; chmod go-w it",
            path.parent,
            mode & 0o777,
        )


def _begin_read(dbapi_conn: Any) -> None:
    """A read's BEGIN, said to the driver (not through SQLAlchemy's statement machinery):
    every API request begins a read or two."""
    dbapi_conn.execute("BEGIN")


def _begin_immediate(dbapi_conn: Any) -> None:
    """Take SQLite's write lock, polling every `LOCK_POLL` seconds for up to `BUSY_TIMEOUT`.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries, so a writer
    that just missed the lock often sleeps through the next free moment; with two busy
    writers (intake and a worker) that halves throughput. Polling finely gets in at once."""
    deadline = time.monotonic() + BUSY_TIMEOUT / 1000
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_POLL)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")


class LockTaker:
    """One connection kept by a single SQLite writer that must never wait for the write lock
    (intake on the event loop). `transaction()` raises errors.Busy at the cost of one SQLite
    call when the lock is taken, instead of a full connection checkout and begin."""

    def __init__(self, db: Database) -> None:
        self._conn = db.engine.connect().execution_options(snapshots_write="held")
        dbapi: Any = self._conn.connection.driver_connection
        dbapi.execute("PRAGMA busy_timeout=0")
        dbapi.execute(f"PRAGMA wal_autocheckpoint={INTAKE_WAL_CHECKPOINT}")
        self._dbapi = dbapi

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            self._dbapi.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise errors.Busy("the SQLite write lock is taken") from exc
            raise
        with self._conn.begin():
            yield self._conn

    def close(self) -> None:
        # The connection goes back to the pool as the others are.
        self._dbapi.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        self._dbapi.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT}")
        self._conn.close()


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return config


def migrate(db: Database) -> None:
    """Bring the schema up to the newest migration (idempotent). One process migrates at a
    time: the others wait, then find nothing to do (a PostgreSQL advisory lock held for the
    transaction; SQLite's write lock)."""
    config = alembic_config(db)
    try:
        with db.write() as conn:
            dialect.lock_number(conn, MIGRATE_LOCK)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split())
        raise errors.ConfigError(f"cannot migrate the database: {reason}") from exc
    except CommandError as exc:  # a revision this code does not know: a newer Snapshots's
        raise errors.SchemaMismatch(
            f"the database schema is newer than this Snapshots ({exc}): this is an older "
            "Snapshots than the database: upgrade it"
        ) from exc


def is_migrated(db: Database) -> bool:
    return sa.inspect(db.engine).has_table("inbox_items")


@dataclass(frozen=True)
class Schema:
    """Where the database's schema stands against this code's migrations."""

    current: str | None  # the database's revision; None when it has no schema
    head: str  # the newest revision this code knows
    known: bool  # this code knows `current` (False: a newer Snapshots migrated it)

    @property
    def state(self) -> str:
        """`current`, `behind`, `ahead` or `empty`."""
        if self.current is None:
            return "empty"
        if self.current == self.head:
            return "current"
        return "behind" if self.known else "ahead"


@functools.cache
def revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision it knows (read once per process)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None  # the package ships its migrations
    return head, frozenset(rev.revision for rev in script.walk_revisions())


def schema(db: Database) -> Schema:
    head, known = revisions()
    with db.read() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return Schema(current, head, current is None or current in known)
