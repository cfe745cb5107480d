"""Retention on SQLite and PostgreSQL: old payloads of settled items are pruned in small
batches, rows (and so dedup) stay, dead items wait 90 days, audit entries only on request."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import audit, connections, errors, flowfile, inbox, intake, retention, schedule
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.worker import Worker
from tests.conftest import EventFactory, drain, fixture
from tests.integration.helpers import Cli, row

REGISTRY = flowfile.load()
T = tables.inbox_items
DAY = retention.DAY


def customer(event_factory: EventFactory, n: int, **changes: Any) -> dict[str, Any]:
    obj = {**fixture("customer"), "id": f"cus_keep{n}", "email": f"k{n}@example.com"}
    return event_factory("customer.created", object={**obj, **changes})


def store(db: Database, connection_id: str, event: dict[str, Any]) -> intake.Receipt:
    payload = json.dumps(event).encode()
    return intake.store(db, REGISTRY, connection_id=connection_id, event=event, payload=payload)


def settled_ago(db: Database, item_id: int, days: float) -> None:
    """Move when the item settled back by `days` (the test's clock)."""
    with db.write() as tx:
        tx.execute(
            T.update().where(T.c.id == item_id).values(processed_at=time.time() - days * DAY)
        )


def items(db: Database, connection_id: str, event_factory: EventFactory) -> dict[str, int]:
    """A done, an ignored and a dead item, each 31 days and 91 days old, and recent ones."""
    found = {}
    for n, age in enumerate((31, 91, 0)):
        good = store(db, connection_id, customer(event_factory, n))
        bad = store(db, connection_id, customer(event_factory, 10 + n, id=""))  # dead: no id
        other = store(db, connection_id, event_factory("payout.paid"))  # ignored
        found |= {f"done{age}": good.item_id, f"dead{age}": bad.item_id}
        found[f"ignored{age}"] = other.item_id
    drain(Worker(db, REGISTRY, Settings(database_url=db.url)))
    for name, item_id in found.items():
        assert row(db, item_id).status == name.rstrip("0123456789"), name
        settled_ago(db, item_id, int(name.lstrip("adeignorp")))
    found["pending"] = store(db, connection_id, customer(event_factory, 99)).item_id
    return found


def test_pruning_takes_old_settled_payloads_dead_ones_after_90_days_and_keeps_rows(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    found = items(db, connection.id, event_factory)
    cutoffs = retention.Cutoffs.of(settings)
    with db.read() as tx:
        due = retention.due(tx, cutoffs)
    assert (due.payloads, due.dead_payloads, due.audit_entries) == (4, 1, 0)
    went = retention.prune(db, cutoffs, limit=2)  # in batches smaller than what is due
    assert (went.payloads, went.dead_payloads, went.audit_entries) == (4, 1, 0)
    pruned = {"done31", "ignored31", "done91", "ignored91", "dead91"}
    for name, item_id in found.items():
        item = row(db, item_id)
        assert (item.payload is None) is (name in pruned), name
        assert (item.pruned_at is not None) is (name in pruned), name
    with db.read() as tx:
        assert retention.due(tx, cutoffs).payloads == 0
        assert tx.execute(sa.select(sa.func.count()).select_from(T)).scalar() == len(found)


def test_a_redelivered_event_stays_a_duplicate_after_its_payload_is_pruned(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    event = customer(event_factory, 1)
    first = store(db, connection.id, event)
    drain(Worker(db, REGISTRY, settings))
    short = settings.model_copy(update={"event_retention": 3600.0})  # shorter than Stripe's 3 days
    settled_ago(db, first.item_id, 1 / 24 + 0.01)
    assert retention.prune(db, retention.Cutoffs.of(short)).payloads == 1
    again = store(db, connection.id, event)  # Stripe retries within its 3 days
    assert (again.item_id, again.duplicate, again.status) == (first.item_id, True, "done")
    assert row(db, first.item_id).status == "done"
    with db.write() as tx, pytest.raises(errors.Conflict, match="pruned"):
        inbox.replay(tx, str(first.item_id))


def test_audit_entries_are_kept_unless_a_retention_is_set(db: Database, settings: Settings) -> None:
    with db.write() as tx:
        old = {"at": time.time() - 400 * DAY, "actor": "test", "details": {}}
        for _ in range(3):
            tx.execute(tables.audit_entries.insert().values(action="key.created", **old))
        audit.record(tx, actor="test", action="key.revoked")
    assert retention.prune(db, retention.Cutoffs.of(settings)).audit_entries == 0
    year = settings.model_copy(update={"audit_retention": 365 * DAY})
    assert retention.prune(db, retention.Cutoffs.of(year)).audit_entries == 3
    with db.read() as tx:
        left = tx.execute(sa.select(tables.audit_entries.c.action)).scalars().all()
    assert left == ["key.revoked"]


def test_the_schedule_prunes_one_process_at_a_time(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    items(db, connection.id, event_factory)
    job = retention.job(db, settings)
    assert schedule.claim(db, job.name, holder="host:other") is True  # another process runs it
    assert schedule.run_job(db, job, holder="host:me", force=True) is False
    schedule.release(db, job.name, holder="host:other", next_run_at=0)
    assert schedule.run_job(db, job, holder="host:me") is True
    with db.read() as tx:
        assert retention.due(tx, retention.Cutoffs.of(settings)).payloads == 0


def test_prune_dry_run_says_what_would_go_and_changes_nothing(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    run: Cli,
) -> None:
    found = items(db, connection.id, event_factory)
    result = run("prune", "--dry-run")
    assert result.code == 0, result.err
    assert "would prune the payloads of 4 done or ignored inbox item(s)" in result.out
    assert "1 dead inbox item(s)" in result.out
    assert "audit entries are kept" in result.out
    assert row(db, found["done31"]).payload is not None
    result = run("prune", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["payloads"] == 4
    assert row(db, found["done31"]).payload is None
    shown = run("events", "show", str(found["done31"]))
    assert "payload: pruned" in shown.out


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"SNAPSHOTS_EVENT_RETENTION": "30"}, "greater than or equal to 3600", id="too-short"
        ),
        pytest.param({"SNAPSHOTS_EVENT_RETENTION": "soon"}, "SNAPSHOTS_EVENT_RETENTION", id="bad"),
        pytest.param({"SNAPSHOTS_AUDIT_RETENTION": "30d"}, "greater than or equal", id="audit"),
    ],
)
def test_retention_settings_are_checked(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match=message):
        Settings()


def test_the_database_still_refuses_to_delete_an_audit_entry_younger_than_a_year(
    db: Database,
) -> None:
    with db.write() as tx:
        audit.record(tx, actor="test", action="key.created")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write() as tx:
        tx.execute(tables.audit_entries.delete())
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.write() as tx:
        tx.execute(tables.audit_entries.update().values(actor="someone else"))
