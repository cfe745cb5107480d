"""Migration 0011 on SQLite and PostgreSQL: items stored before it become searchable (object
id, e-mail, error cause) and their written records linked, and it goes down again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from snapshots import causes
from snapshots.store import db as store
from snapshots.store.db import Database
from tests.integration import helpers

BEFORE = helpers.before("0011")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def before_0011(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own migrated to the revision before 0011."""
    with helpers.migrated_to(request, tmp_path, BEFORE) as database:
        yield database


def test_items_stored_before_are_backfilled(before_0011: Database) -> None:
    items = sa.table(
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
                "last_error",
                "records",
            )
        ),
    )
    error = "flow 'contacts': field 'email': expression failed on cus_OldOne99"
    rows = [
        {
            "event_id": "evt_old1",
            "payload": json.dumps(
                {"data": {"object": {"id": "cus_OldOne99", "email": " Old@Example.com"}}}
            ).encode(),
            "status": "dead",
            "last_error": error,
            "records": None,
        },
        {
            "event_id": "evt_old2",
            "payload": json.dumps(
                {"data": {"object": {"id": "in_Old2", "customer_email": "b@x.io"}}}
            ).encode(),
            "status": "done",
            "last_error": None,
            "records": "inv_a,con_b,inv_a",
        },
        {
            "event_id": "evt_old3",
            "payload": b"not json",
            "status": "done",
            "last_error": None,
            "records": None,
        },
    ]
    with before_0011.engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {
                    "connection_id": "conn_1",
                    "event_type": "customer.updated",
                    "event_created": 1,
                    "livemode": False,
                    "source": "webhook",
                    "attempts": 1,
                    "run_after": 0.0,
                    "received_at": 0.0,
                    **row,
                }
                for row in rows
            ],
        )
    store.migrate(before_0011)
    with before_0011.engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT event_id, object_id, email, error_cause FROM inbox_items ORDER BY id"
        ).all()
        links = conn.exec_driver_sql(
            "SELECT i.event_id, l.record_id FROM inbox_item_records l "
            "JOIN inbox_items i ON i.id = l.item_id ORDER BY l.record_id"
        ).all()
    assert [tuple(r) for r in found] == [
        ("evt_old1", "cus_OldOne99", "old@example.com", causes.of(error)),
        ("evt_old2", "in_Old2", "b@x.io", None),
        ("evt_old3", None, None, None),
    ]
    assert [tuple(r) for r in links] == [("evt_old2", "con_b"), ("evt_old2", "inv_a")]
    with before_0011.engine.connect() as conn:  # reflection cannot read them on SQLite: ask
        if conn.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
        else:
            sql = "SELECT indexname FROM pg_indexes"
        made = {name for name in conn.exec_driver_sql(sql).scalars() if "_lower_" in name}
    assert made == {
        "ix_contacts_lower_name",
        "ix_contacts_lower_email",
        "ix_invoices_lower_number",
        "ix_invoices_lower_customer_email",
        "ix_invoices_lower_customer_name",
        "ix_locations_lower_name",
    }
    helpers.downgrade(before_0011, BEFORE)
    assert "inbox_item_records" not in sa.inspect(before_0011.engine).get_table_names()
