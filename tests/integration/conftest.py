"""Fixtures shared by the integration tests: the app under a TestClient, API keys, a Stripe
stand-in and the CLI in this process. A module that needs something else overrides one of
them locally, with a docstring saying how it differs (pytest uses the nearest definition)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from snapshots import cli, connections, keys
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.integration.helpers import CLIENT_IP, Cli, Key, MakeKey, Result, Stripe
from tests.support.fake_stripe import FakeStripe, run_fake_stripe


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """The settings the `client` fixture's app runs with; a module overrides this to change
    some (`settings.model_copy(update={...})`)."""
    return settings


@pytest.fixture
def client(app_settings: Settings, connection: connections.Connection) -> Iterator[TestClient]:
    """The app, started, over the test's database, which holds one connection (`connection`),
    called from CLIENT_IP (TestClient's own "testclient" is no IP address: the app drops it)."""
    with TestClient(create_app(app_settings), client=(CLIENT_IP, 50000)) as test_client:
        yield test_client


@pytest.fixture
def make_key(db: Database) -> MakeKey:
    """`make_key(*scopes, env="live")` -> a new API key named "test" with those scopes."""

    def make(*scopes: str, env: str = "live") -> Key:
        with db.write() as tx:
            api_key = keys.create(tx, name="test", scopes=list(scopes), env=env)
        return Key(api_key.id, api_key.secret)

    return make


@pytest.fixture
def admin(db: Database) -> Key:
    """An API key named "admin" with the `admin` scope."""
    with db.write() as tx:
        api_key = keys.create(tx, name="admin", scopes=["admin"])
    return Key(api_key.id, api_key.secret)


@pytest.fixture
def stripe(
    client: TestClient, connection: connections.Connection, db: Database, settings: Settings
) -> Stripe:
    return Stripe(client, connection, db, settings)


@pytest.fixture
def run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    """`run("keys", "rotate", ID)` -> Result: the CLI in this process, against the test's
    database; restores the logging set-up the command changes."""
    monkeypatch.setenv("SNAPSHOTS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("COLUMNS", "200")
    names = ["", "stripe", "alembic", "snapshots.stripe", "httpx"]
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield invoke
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = handlers


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeStripe]:
    """The Stripe-compatible test server (tests/support/fake_stripe.py), one per module."""
    with run_fake_stripe() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeStripe) -> Iterator[FakeStripe]:
    """`fake_server` without faults, and without the webhook endpoints a test left behind."""
    fake_server.clear_faults()
    yield fake_server
    fake_server.clear_faults()
    client = fake_server.client()
    for found in fake_server.webhook_endpoints():
        client.v1.webhook_endpoints.delete(found["id"])
