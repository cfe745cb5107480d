"""Helpers that several integration test modules import: the API's error shape, API keys and
their headers, a Stripe stand-in that sends signed webhooks, inbox items, CLI results.
The fixtures that go with them are in conftest.py next to this file."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from snapshots import connections, flowfile, inbox, intake, worker
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import drain, fixture, sign

# The API's errors.

ERROR_KEYS = {"type", "code", "message", "request_id"}
CLIENT_IP = "127.0.0.1"  # the address the test clients call from

Checks = Literal["status", "request_id", "json", "envelope", "all"]
_LEVELS: tuple[Checks, ...] = ("status", "request_id", "json", "envelope", "all")


def assert_error(
    response: httpx.Response,
    status: int,
    code: str | None = None,
    *,
    type: str | None = None,
    checks: Checks = "all",
) -> dict[str, Any]:
    """Assert that `response` is an API error and return its `error` object.

    Always checked: the status, and `code` and `type` when given. `checks` says what else;
    each level adds to the ones before it, and the default checks everything:

    - "status": nothing else
    - "request_id": `error.request_id` is the response's X-Request-Id
    - "json": the response is declared `application/json`
    - "envelope": the body is `{"error": {...}}` alone, the error holds at least ERROR_KEYS
      (a 403 adds `scope`) and a non-empty message
    - "all": the error holds exactly ERROR_KEYS, and its request id starts with `req_`
    """
    level = _LEVELS.index(checks)
    assert response.status_code == status, response.text
    if level >= _LEVELS.index("json"):
        assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if level >= _LEVELS.index("envelope"):
        assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    if level >= _LEVELS.index("all"):
        assert set(error) == ERROR_KEYS
    elif level >= _LEVELS.index("envelope"):
        assert ERROR_KEYS <= set(error)
    if code is not None:
        assert error["code"] == code, error
    if type is not None:
        assert error["type"] == type, error
    if level >= _LEVELS.index("envelope"):
        assert isinstance(error["message"], str) and error["message"]
    if level >= _LEVELS.index("request_id"):
        assert error["request_id"] == response.headers["x-request-id"]
    if level >= _LEVELS.index("all"):
        assert error["request_id"].startswith("req_")
    return error


# API keys.


def settle_uses(client: TestClient) -> None:
    """Write the API keys' last uses the app noted in memory now, as its background thread
    does every second."""
    state = client.app.state.snapshots  # type: ignore[attr-defined]
    with state.db.write() as tx:
        state.uses.flush(tx)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Key:
    """An API key as the `make_key` and `admin` fixtures made it."""

    id: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.secret)


MakeKey = Callable[..., Key]


# Records made the way production makes them: signed webhooks through the app.

CONTACT_KEYS = {
    "id",
    "object",
    "email",
    "name",
    "phone",
    "address",
    "tags",
    "stripe_customer_id",
    "stripe_created",
    "connection_id",
    "metadata",
    "custom",
    "archived",
    "livemode",
    "test",
    "created_at",
    "updated_at",
}


@dataclass
class Stripe:
    """Sends signed events through the webhook endpoint and lets a worker apply them."""

    client: TestClient
    connection: connections.Connection
    db: Database
    settings: Settings

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(event).encode()
        response = self.client.post(
            f"/webhooks/stripe/{self.connection.id}",
            content=payload,
            headers={"Stripe-Signature": sign(payload)},
        )
        assert response.status_code == 200, response.text
        receipt: dict[str, Any] = response.json()
        return receipt

    def watch(self, event: dict[str, Any]) -> None:
        """A synthetic event, enqueued as the location watcher does."""
        intake.store(
            self.db,
            flowfile.load(),
            connection_id=self.connection.id,
            event=event,
            payload=json.dumps(event).encode(),
            source="watcher",
        )

    def drain(self) -> None:
        applier = worker.Worker(self.db, flowfile.load(), self.settings)
        drain(applier)
        assert applier.stats.failed == applier.stats.dead == 0, applier.stats


def customer(number: int, **changes: Any) -> dict[str, Any]:
    return (
        fixture("customer")
        | {
            "id": f"cus_{number:06d}",
            "email": f"c{number}@example.com",
            "name": f"Customer {number}",
        }
        | changes
    )


def invoice(number: int, customer_id: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(fixture("invoice"))
    body.update(id=f"in_{number:06d}", customer=customer_id, status="open", attempted=False)
    body.update(attempt_count=0, amount_due=1000 + number, amount_paid=0, currency="usd")
    body.update(changes)
    return body


def location(number: int) -> dict[str, Any]:
    return fixture("terminal.location") | {
        "id": f"tml_{number:06d}",
        "display_name": f"Store {number}",
    }


# Inbox items and tables.


def enqueue(
    db: Database,
    connection_id: str,
    event: dict[str, Any],
    *,
    wanted: bool = True,
    source: str = "webhook",
) -> tuple[int, str, bool]:
    """One arrival through `inbox.enqueue_many`, in a transaction of its own, with the event
    as the payload; returns (item id, status, duplicate)."""
    arrival = inbox.Arrival(connection_id, event, json.dumps(event).encode(), source, wanted)
    with db.write() as tx:
        (stored,) = inbox.enqueue_many(tx, [arrival])
    return stored.item_id, stored.status, stored.duplicate


def put(db: Database, connection_id: str, event: dict[str, Any]) -> int:
    """A wanted webhook event in the inbox; returns the item's id."""
    item_id, _, _ = enqueue(db, connection_id, event)
    return item_id


def inbox_items(db: Database, *where: Any) -> list[Any]:
    """The inbox items (of `where`), oldest first, each with its `payload` (None once retention
    pruned it)."""
    t, p = tables.inbox_items, tables.inbox_payloads
    with db.read() as conn:
        query = sa.select(t, p.c.payload).outerjoin(p, p.c.item_id == t.c.id)
        return list(conn.execute(query.where(*where).order_by(t.c.id)).all())


def row(db: Database, item_id: int) -> Any:
    """The inbox item's row, with its `payload` (None once retention pruned it)."""
    (found,) = inbox_items(db, tables.inbox_items.c.id == item_id)
    return found


def count(db: Database, table: sa.Table) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# The CLI, run in this process (the `run` fixture).


class Result(NamedTuple):
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


Cli = Callable[..., Result]


def before(revision: str) -> str:
    """The revision `revision` follows (the chain is set when branches merge)."""
    return str(ScriptDirectory(str(store.MIGRATIONS)).get_revision(revision).down_revision)


def downgrade(database: Database, revision: str) -> None:
    """Take `database` down to `revision` (a migration's test, after its upgrade)."""
    config = store.alembic_config(database)
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def insert_items(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Inbox items written as at an older revision: each row's columns over a webhook item's
    (`conn_1`, `customer.updated`, pending) defaults; only the columns named are written."""
    made = [
        {
            "connection_id": "conn_1",
            "event_type": "customer.updated",
            "event_created": 1,
            "livemode": False,
            "source": "webhook",
            "status": "pending",
            "attempts": 0,
            "run_after": 0.0,
            "received_at": 0.0,
            **row,
        }
        for row in rows
    ]
    items = sa.table("inbox_items", *(sa.column(name) for name in made[0]))
    conn.execute(items.insert(), made)


@contextmanager
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, unmigrated database of its own, SQLite or PostgreSQL by `request.param` (for
    tests that migrate or downgrade, which must not touch the shared one); dropped after."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path}/own.db")
        try:
            yield database
        finally:
            database.dispose()
        return
    base = sa.make_url(request.getfixturevalue("postgres_url"))
    name = f"snapshots_own_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    database = Database(base.set(database=name).render_as_string(hide_password=False))
    try:
        yield database
    finally:
        database.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def migrated_to(
    request: pytest.FixtureRequest, tmp_path: Path, revision: str
) -> Iterator[Database]:
    """`own_database` migrated to `revision` (a migration's test fills it as the code of then
    did, then migrates)."""
    with own_database(request, tmp_path) as database:
        config = store.alembic_config(database)
        with database.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        yield database
