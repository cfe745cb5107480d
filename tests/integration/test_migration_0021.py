"""Migration 0021 on SQLite and PostgreSQL: the payloads of items stored before it move to
`inbox_payloads` (a pruned item's gets no row), the column goes, and it comes back down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from snapshots import inbox
from snapshots.store import db as store
from snapshots.store.db import Database
from tests.integration import helpers

BEFORE = helpers.before("0021")

ITEMS = sa.table(
    "inbox_items",
    *(
        sa.column(n)
        for n in (
            "connection_id",
            "event_id",
            "event_type",
            "event_created",
            "livemode",
            "source",
            "payload",
            "status",
            "attempts",
            "run_after",
            "received_at",
            "processed_at",
            "pruned_at",
        )
    ),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def before_0021(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own migrated to the revision before 0021."""
    with helpers.migrated_to(request, tmp_path, BEFORE) as database:
        yield database


def _payload(number: int) -> bytes:
    return json.dumps({"id": f"evt_old{number}", "data": {"object": {"n": number}}}).encode()


def test_payloads_move_to_their_table_and_back(before_0021: Database) -> None:
    rows = [
        {"event_id": "evt_old1", "payload": _payload(1), "status": "pending", "pruned_at": None},
        {"event_id": "evt_old2", "payload": _payload(2), "status": "done", "pruned_at": None},
        {"event_id": "evt_old3", "payload": b"", "status": "done", "pruned_at": 5.0},
        {"event_id": "evt_old4", "payload": b"not json", "status": "dead", "pruned_at": None},
    ]
    with before_0021.engine.begin() as conn:
        conn.execute(
            ITEMS.insert(),
            [
                {
                    "connection_id": "conn_1",
                    "event_type": "customer.updated",
                    "event_created": 1,
                    "livemode": False,
                    "source": "webhook",
                    "attempts": 0,
                    "run_after": 0.0,
                    "received_at": 0.0,
                    "processed_at": None if row["status"] == "pending" else 1.0,
                    **row,
                }
                for row in rows
            ],
        )
    store.migrate(before_0021)
    assert "payload" not in {
        c["name"] for c in sa.inspect(before_0021.engine).get_columns("inbox_items")
    }
    with before_0021.engine.connect() as conn:
        moved = conn.exec_driver_sql(
            "SELECT i.event_id, p.payload FROM inbox_items i "
            "JOIN inbox_payloads p ON p.item_id = i.id ORDER BY i.id"
        ).all()
    assert [(event_id, bytes(payload)) for event_id, payload in moved] == [
        ("evt_old1", _payload(1)),
        ("evt_old2", _payload(2)),
        ("evt_old4", b"not json"),
    ]
    with before_0021.read() as tx:  # as the code reads them
        ids = dict(tx.execute(sa.text("SELECT event_id, id FROM inbox_items")).all())
        assert inbox.payload(tx, ids["evt_old2"]) == _payload(2)
        assert inbox.payload(tx, ids["evt_old3"]) == b""  # pruned
    with before_0021.write() as tx:
        (claimed,) = inbox.claim(tx, worker_id="w", limit=10, lease=30)
    assert (claimed.event_id, claimed.payload) == ("evt_old1", _payload(1))

    helpers.downgrade(before_0021, BEFORE)
    assert "inbox_payloads" not in sa.inspect(before_0021.engine).get_table_names()
    with before_0021.engine.connect() as conn:
        back = conn.exec_driver_sql("SELECT event_id, payload FROM inbox_items ORDER BY id").all()
    assert [(event_id, bytes(payload)) for event_id, payload in back] == [
        (row["event_id"], row["payload"]) for row in rows
    ]
