"""Shared fixtures. Databases: every `db` test runs on SQLite and on PostgreSQL (a fresh database
per session, taken from SNAPSHOTS_TEST_POSTGRES_URL; scripts/test sets it). The SQLite schema is
migrated once per session and each test gets a copy of that file (`sqlite_copy`)."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stripe
from cryptography.fernet import Fernet

from snapshots import connections, stripe_api, vault, worker
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment (a plain run
# has neither). Rich fixes a console's width when COLUMNS is set as it is made, so the CLI's
# consoles (made when `snapshots.cli.output` is imported) would print 80 columns whatever a
# test sets later, and tables would come out cut short: drop them before a test module imports the CLI.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)

WEBHOOK_SECRET = "whsec_test_secret_0123456789"
_counter = itertools.count(1)


def fixture(name: str) -> dict[str, Any]:
    """A Stripe example object shipped with the package (`customer`, `invoice`, ...)."""
    text = resources.files("snapshots").joinpath(f"data/fixtures/{name}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe makes it."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp
    )


EventFactory = Callable[..., dict[str, Any]]


def drain(applier: worker.Worker, *, timeout: float = 30.0) -> None:
    """Apply everything claimable now (what `worker.drain` did before it left src/)."""
    deadline = time.monotonic() + timeout
    while applier.step() and time.monotonic() < deadline:
        pass


@pytest.fixture
def event_factory() -> EventFactory:
    """`event_factory("customer.updated", object={...}, created=..., id=...)` -> event dict.

    The object defaults to the package's fixture for the type's object, with a fresh id."""

    def make(
        type: str,
        object: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        created: int | None = None,
        livemode: bool = False,
        **changes: Any,
    ) -> dict[str, Any]:
        if object is None:
            object = copy.deepcopy(fixture(type.rsplit(".", 1)[0]))
        object = {**object, **changes}
        return {
            "id": id or f"evt_test{next(_counter):08d}",
            "object": "event",
            "api_version": "2026-07-29.dahlia",
            "created": created if created is not None else int(time.time()),
            "data": {"object": object},
            "livemode": livemode,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }

    return make


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    base = os.environ.get("SNAPSHOTS_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("SNAPSHOTS_TEST_POSTGRES_URL is not set (scripts/test sets it)")
    base_url = sa.make_url(base).set(drivername="postgresql+psycopg")
    name = f"snapshots_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = base_url.set(database=name).render_as_string(hide_password=False)
    database = store.Database(url)
    store.migrate(database)
    database.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _empty_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    names = ", ".join(t.name for t in tables.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file migrated to the newest revision, once per session. Never open
    it: tests get copies (`sqlite_copy`)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "snapshots.db"
    database = store.Database(f"sqlite:///{path}")
    store.migrate(database)
    database.dispose()  # closing the last connection checkpoints the WAL into the file
    leftovers = sorted(p.name for p in path.parent.iterdir() if p != path)
    assert not leftovers, f"the template is more than one file: {leftovers}"
    return path


SqliteCopy = Callable[[Path], str]


@pytest.fixture(scope="session")
def sqlite_copy(sqlite_template: Path) -> SqliteCopy:
    """`sqlite_copy(directory)` -> the URL of a new, migrated, empty SQLite database in
    `directory` (a copy of the session's template; any earlier one there is replaced)."""

    def copy_to(directory: Path) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "snapshots.db"
        for stale in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        shutil.copyfile(sqlite_template, path)
        path.chmod(0o600)  # as Snapshots makes its databases (it warns about others)
        return f"sqlite:///{path}"

    return copy_to


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite in a temporary file, or the session's PostgreSQL."""
    if request.param == "sqlite":
        copy_to: SqliteCopy = request.getfixturevalue("sqlite_copy")
        return copy_to(tmp_path)
    url = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return str(url)


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_copy: SqliteCopy) -> str:
    """A migrated SQLite database, for unit tests that need one store but not both engines."""
    return sqlite_copy(tmp_path)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, master_key=Fernet.generate_key().decode())


@pytest.fixture
def db(settings: Settings) -> Iterator[store.Database]:
    database = store.Database(settings.database_url)
    yield database
    database.dispose()


ACCOUNT = stripe_api.Account(id="acct_test", livemode=False, default_currency="usd", country="US")


@pytest.fixture
def connection(db: store.Database, settings: Settings) -> connections.Connection:
    """A connection whose key is taken as checked (no Stripe call), signing with WEBHOOK_SECRET."""
    with db.write() as tx:
        return connections.add(
            tx,
            vault.load(settings),
            account=ACCOUNT,
            secret_key="sk_test_fixture1234",
            webhook_secrets=[WEBHOOK_SECRET],
            name="test",
        )
