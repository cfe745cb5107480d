"""Intake on SQLite while another process holds the write lock: the webhook waits (the event
loop goes on serving), is stored once the lock is free, and answers 503 (nothing stored) if
the lock stays taken past the limit."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from snapshots import connections, intake
from snapshots.app import create_app
from snapshots.settings import Settings
from tests.conftest import EventFactory, sign


@pytest.fixture
def sqlite_settings(settings: Settings) -> Settings:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the write lock is SQLite's")
    return settings


@pytest.fixture
def locked(sqlite_settings: Settings) -> Iterator[sqlite3.Connection]:
    path = Path(sqlite_settings.database_url.removeprefix("sqlite:///"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield other
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()


def _stored(settings: Settings) -> int:
    with sqlite3.connect(settings.database_url.removeprefix("sqlite:///")) as conn:
        (count,) = conn.execute("SELECT count(*) FROM inbox_items").fetchone()
    conn.close()
    return int(count)


def _post(client: TestClient, connection_id: str, body: bytes) -> httpx.Response:
    return client.post(
        f"/webhooks/stripe/{connection_id}", content=body, headers={"Stripe-Signature": sign(body)}
    )


def test_a_webhook_waits_for_the_lock_and_is_stored_once_it_is_free(
    sqlite_settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
    locked: sqlite3.Connection,
) -> None:
    body = json.dumps(event_factory("customer.created")).encode()
    answers: list[httpx.Response] = []
    with TestClient(create_app(sqlite_settings)) as client:
        thread = threading.Thread(target=lambda: answers.append(_post(client, connection.id, body)))
        thread.start()
        time.sleep(0.5)
        assert not answers, "answered while the lock was held: not committed"
        assert client.get("/healthz").status_code == 200  # the loop still serves
        locked.execute("COMMIT")
        thread.join(timeout=10)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["duplicate"] is False
    assert _stored(sqlite_settings) == 1


def test_a_lock_held_too_long_answers_503_and_stores_nothing(
    sqlite_settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
    locked: sqlite3.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(intake.GroupCommit, "LOCK_WAIT", 0.3)
    body = json.dumps(event_factory("customer.created")).encode()
    with TestClient(create_app(sqlite_settings)) as client:
        response = _post(client, connection.id, body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    locked.execute("ROLLBACK")
    assert _stored(sqlite_settings) == 0
