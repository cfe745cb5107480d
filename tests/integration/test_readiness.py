"""Safe operations on SQLite and PostgreSQL: the start-up self-check, and faults of a running
process (a wrong master key, the database away, flows this code cannot run) that must never
cost an event an attempt."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet

from snapshots import connections, errors, flowfile, readiness, revisions, vault
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.worker import Worker
from tests.conftest import EventFactory, fixture
from tests.integration.helpers import put

T = tables.inbox_items
BROKEN_FLOWS = """
flows:
  - name: texts
    trigger: customer.created
    action: send_sms
    fields: {phone: phone}
"""


def items(db: Database) -> list[tuple[int, str, int, str | None]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(T.c.id, T.c.status, T.c.attempts, T.c.locked_by).order_by(T.c.id)
        ).all()
    return [tuple(r) for r in rows]


def customer(event_factory: EventFactory, n: int) -> dict[str, Any]:
    obj = {**fixture("customer"), "id": f"cus_ready{n:05d}", "email": f"r{n}@example.com"}
    return event_factory("customer.created", object=obj)


def store_flows_version(db: Database, text: str) -> None:
    """A flows version this code cannot load, as a newer Snapshots would have imported it."""
    with db.write() as conn:
        newest = conn.execute(sa.select(sa.func.max(tables.flow_versions.c.version))).scalar()
        conn.execute(
            tables.flow_versions.insert().values(
                version=(newest or 0) + 1, text=text, actor="newer", created_at=time.time()
            )
        )


def reencrypt(db: Database, old: vault.Vault, new: vault.Vault) -> None:
    """What `rotate-master-key` on another host does to the stored secrets."""
    t = tables.connections
    with db.write() as conn:
        for row in conn.execute(sa.select(t.c.id, t.c.secret_key, t.c.webhook_secrets)).all():
            conn.execute(
                t.update()
                .where(t.c.id == row.id)
                .values(
                    secret_key=new.encrypt(old.decrypt(row.secret_key)),
                    webhook_secrets=new.encrypt(old.decrypt(row.webhook_secrets)),
                )
            )


# The start-up self-check.


def test_startup_passes_on_a_sound_deployment(
    db: Database, settings: Settings, connection: connections.Connection
) -> None:
    secrets = readiness.startup(db, settings)
    assert secrets.decrypt(secrets.encrypt("x")) == "x"


def test_a_wrong_master_key_is_refused_naming_the_setting(
    db: Database, settings: Settings, connection: connections.Connection
) -> None:
    wrong = settings.model_copy(update={"master_key": Fernet.generate_key().decode()})
    with pytest.raises(errors.WrongMasterKey) as caught:
        readiness.startup(db, wrong)
    message = caught.value.message
    assert message.startswith("SNAPSHOTS_MASTER_KEY does not decrypt the stored secrets of 1 of 1")
    assert connection.id in message and "new,old" in message
    # A key list with the right key in it is fine (`new,old` during a rotation).
    both = f"{wrong.master_key},{settings.master_key}"
    readiness.startup(db, settings.model_copy(update={"master_key": both}))


@pytest.fixture
def back_at_head(db: Database) -> Iterator[None]:
    """Whatever a test does to the schema, it is at head again afterwards (the PostgreSQL
    database is shared by the session's tests)."""
    yield
    store.migrate(db)


@pytest.mark.usefixtures("back_at_head")
def test_a_schema_behind_says_to_migrate_and_is_not_migrated(
    db: Database, settings: Settings
) -> None:
    config = store.alembic_config(db)
    with db.write() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    with pytest.raises(errors.SchemaMismatch) as caught:
        readiness.startup(db, settings)
    head = store.schema(db).head
    assert caught.value.message.endswith(f"this Snapshots needs {head}: run `snapshots migrate`")
    assert store.schema(db).state == "behind"  # a worker or sync never migrates
    readiness.startup(db, settings, migrate=True)  # serve does
    assert store.schema(db).state == "current"


@pytest.fixture
def ahead(db: Database) -> Iterator[None]:
    """The schema one revision ahead of this code (a newer Snapshots migrated it), put back
    afterwards (the PostgreSQL database is shared by the session's tests)."""
    head = store.schema(db).head
    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    yield
    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :head"), {"head": head})


@pytest.mark.usefixtures("ahead")
def test_a_schema_ahead_says_to_upgrade_snapshots(db: Database, settings: Settings) -> None:
    for migrate in (False, True):
        with pytest.raises(errors.SchemaMismatch) as caught:
            readiness.startup(db, settings, migrate=migrate)
        assert str(caught.value).endswith(
            "this is an older Snapshots than the database: upgrade it"
        )
    with pytest.raises(errors.SchemaMismatch) as caught:
        store.migrate(db)  # `snapshots migrate` says the same
    assert str(caught.value).endswith("this is an older Snapshots than the database: upgrade it")
    with pytest.raises(errors.SchemaMismatch) as caught:
        readiness.check_schema(db)
    assert caught.value.message == (
        "the database schema is at revision 0099, which this Snapshots (0.1.0, revision "
        f"{store.schema(db).head}) does not know: this is an older Snapshots than the database: "
        "upgrade it"
    )


def test_flows_this_code_cannot_run_are_refused_with_the_fix(
    db: Database, settings: Settings
) -> None:
    store_flows_version(db, BROKEN_FLOWS)
    with pytest.raises(errors.FlowsIncompatible) as caught:
        readiness.startup(db, settings)
    message = caught.value.message
    assert message.startswith("the flows in force (version 1) do not load with this Snapshots")
    assert "unknown action 'send_sms'" in message
    assert message.endswith("or put back flows it can run with `snapshots flows rollback 0`")


def test_a_database_that_does_not_answer_names_the_setting(tmp_path: Any) -> None:
    url = "postgresql://nobody:secret-pw@127.0.0.1:9/nowhere"
    settings = Settings(database_url=url, master_key=Fernet.generate_key().decode())
    db = Database(url)
    try:
        with pytest.raises(errors.DatabaseUnavailable) as caught:
            readiness.startup(db, settings)
    finally:
        db.dispose()
    message = caught.value.message
    assert message.startswith("the database does not answer (postgresql://nobody:***@127.0.0.1:9/")
    assert "secret-pw" not in message and "SNAPSHOTS_DATABASE_URL" in message


@pytest.mark.usefixtures("back_at_head")
def test_concurrent_migrations_run_once(settings: Settings, db: Database) -> None:
    """Several `serve` starting at once: one migrates, the others wait and find it done."""
    config = store.alembic_config(db)
    with db.write() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    failures: list[BaseException] = []

    def migrate() -> None:
        other = Database(settings.database_url)
        try:
            store.migrate(other)
        except BaseException as exc:
            failures.append(exc)
        finally:
            other.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert store.schema(db).state == "current"


# Faults while running: nothing is charged to an event.


def test_a_worker_with_a_fault_claims_nothing_and_catches_up_when_it_clears(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    """The master key in force stops decrypting (another host rotated it): the worker stops
    claiming, reports the fault, and applies everything once it has the right key."""
    right = vault.load(settings)
    for n in range(5):
        put(db, connection.id, customer(event_factory, n))
    rotated = vault.Vault(Fernet.generate_key().decode())
    reencrypt(db, right, rotated)
    faults = readiness.Faults()
    monitor = readiness.Monitor(db, right, settings, faults)
    worker = Worker(db, flowfile.load(), settings, faults=faults, monitor=monitor)
    before = items(db)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    try:
        time.sleep(1.5)
        assert items(db) == before  # nothing claimed, nothing charged
        [fault] = faults.active()
        assert fault.kind == "master_key"
        assert readiness.answer(faults.active())[0] == 503
        monitor._vault = rotated  # the process restarted with the new key
        deadline = time.monotonic() + 30
        while any(status != "done" for _, status, _, _ in items(db)):
            assert time.monotonic() < deadline, items(db)
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(30)
    assert faults.active() == []
    assert [attempts for _, _, attempts, _ in items(db)] == [1] * 5


def test_a_database_fault_mid_batch_releases_the_items_uncharged(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    from tests.integration.test_worker import failing

    ids = [put(db, connection.id, customer(event_factory, n)) for n in range(3)]
    gone = sa.exc.OperationalError("INSERT ...", {}, Exception("server closed the connection"))
    worker = Worker(db, failing(gone), settings)
    with pytest.raises(sa.exc.OperationalError):
        worker.step()
    assert items(db) == [(i, "pending", 0, None) for i in ids]
    assert worker.stats.failed == worker.stats.dead == 0
    # The same fault on the loop: reported once, nothing charged however often it recurs.
    faults = readiness.Faults()
    worker = Worker(db, failing(gone), settings, faults=faults)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    time.sleep(1.0)
    stop.set()
    runner.join(30)
    assert [f.kind for f in faults.active()] == ["database"]
    assert items(db) == [(i, "pending", 0, None) for i in ids]


def test_flows_a_newer_snapshots_imported_stop_the_worker_not_the_events(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    live = revisions.Live(db, ttl=0.0)
    worker = Worker(db, live(), settings, live=live)
    ids = [put(db, connection.id, customer(event_factory, n)) for n in range(2)]
    store_flows_version(db, BROKEN_FLOWS)
    with pytest.raises(errors.FlowsIncompatible):
        worker.step()
    assert items(db) == [(i, "pending", 0, None) for i in ids]
    # Intake keeps every event type pending meanwhile: a worker that can run the flows decides.
    assert live.wants("balance.available") is True
    assert flowfile.load().wants("balance.available") is False
    # A rollback (or an upgraded worker) and everything is applied.
    revisions.rollback(db, 0, actor="test")
    worker.step()
    assert [status for _, status, _, _ in items(db)] == ["done", "done"]


def test_readyz_names_each_fault_and_what_fixes_it() -> None:
    faults = readiness.Faults()
    assert readiness.answer(faults.active()) == (200, {"status": "ready"})
    faults.report(errors.WrongMasterKey("SNAPSHOTS_MASTER_KEY does not decrypt ..."))
    faults.report(errors.WrongMasterKey("SNAPSHOTS_MASTER_KEY does not decrypt ..."))  # once
    status, body = readiness.answer(faults.active())
    assert status == 503 and body["status"] == "unready"
    assert [(p["check"], p["message"]) for p in body["problems"]] == [
        ("master_key", "SNAPSHOTS_MASTER_KEY does not decrypt ...")
    ]
    faults.clear("master_key")
    assert not faults
