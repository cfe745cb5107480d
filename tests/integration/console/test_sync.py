"""The sync screen on both databases: asking for runs (and what is refused), progress with an
estimate, resuming, and a worker's scheduler running what was asked against a fake Stripe."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from snapshots import connections, flowfile, schedule, sync, sync_requests, vault
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import ACCOUNT, WEBHOOK_SECRET
from tests.integration.console.conftest import Browser
from tests.support.fake_stripe import run_fake_stripe


def requests(db: Database) -> list[sync_requests.SyncRequest]:
    with db.read() as tx:
        return sync_requests.open_requests(tx)


def add_run(db: Database, connection_id: str, **values: object) -> None:
    now = time.time()
    row = {
        "id": f"sync_{values.get('status')}{int(now * 1000) % 100000}{len(str(values))}",
        "connection_id": connection_id,
        "kind": "backfill",
        "object": "customers",
        "status": "done",
        "objects": 0,
        "enqueued": 0,
        "pages": 0,
        "started_at": now - 100,
        "updated_at": now,
        **values,
    }
    with db.write() as tx:
        tx.execute(tables.sync_runs.insert().values(**row))


def test_asking_for_a_backfill_and_a_reconciliation(
    browser: Browser, db: Database, connection: connections.Connection
) -> None:
    page = browser.get("/sync")
    assert "Start a sync" in page.text
    asked = browser.post(
        "/sync",
        {
            "connection": connection.id,
            "kind": "backfill",
            "objects": ["customers", "invoices"],
            "since": "2026-01-01",
        },  # type: ignore[dict-item]
    )
    assert asked.status_code == 303
    assert "Asked for a backfill of customers, invoices" in browser.get("/sync").text
    [made] = requests(db)
    assert (made.kind, made.objects, made.status) == (
        "backfill",
        ["customers", "invoices"],
        "requested",
    )
    assert made.since == 1767225600
    again = browser.post("/sync", {"connection": connection.id, "kind": "backfill"})
    assert again.status_code == 409
    assert "already asked for" in again.text
    reconcile = browser.post("/sync", {"connection": connection.id, "kind": "reconcile"})
    assert reconcile.status_code == 303
    page = browser.get("/sync").text
    assert "waiting for a worker" in page
    assert 'hx-trigger="every 5s"' in page
    with db.read() as tx:
        actions = tx.execute(
            sa.select(tables.audit_entries.c.action, tables.audit_entries.c.actor)
        ).all()
    assert ("sync.backfill_requested", "ui:admin@example.com") in [tuple(a) for a in actions]


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        pytest.param(
            {"kind": "backfill", "objects": "planets"}, 400, "unknown planets", id="object"
        ),
        pytest.param({"kind": "rebuild"}, 400, "unknown kind", id="kind"),
        pytest.param(
            {"kind": "backfill", "since": "soon"}, 400, "since &#39;soon&#39;", id="since"
        ),
        pytest.param(
            {"kind": "backfill", "since": "2999-01-01"}, 400, "in the future", id="future"
        ),
        pytest.param(
            {"kind": "backfill", "connection": "conn_nope"},
            400,
            "no connection conn_nope",
            id="connection",
        ),
    ],
)
def test_bad_requests_say_what_to_fix(
    browser: Browser,
    db: Database,
    connection: connections.Connection,
    form: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = browser.post("/sync", {"connection": connection.id, **form})
    assert response.status_code == status
    assert message in response.text
    assert requests(db) == []


def test_progress_with_an_estimate_and_resuming(
    browser: Browser, viewer: Browser, db: Database, connection: connections.Connection
) -> None:
    now = time.time()
    add_run(db, connection.id, status="done", objects=1000, finished_at=now - 50)
    add_run(
        db,
        connection.id,
        status="running",
        objects=250,
        lease_until=now + 60,
        started_at=now - 10,
        updated_at=now,
    )
    add_run(
        db,
        connection.id,
        kind="reconcile",
        object="events",
        status="running",
        objects=5,
        lease_until=now - 1,
        started_at=now - 500,
    )
    page = browser.get("/sync").text
    assert '<progress value="250" max="1000"' in page
    assert "about 1,000 last time" in page
    assert "Time left</dt><dd>about 30 s" in page  # 750 left at 25 a second
    assert "state-interrupted" in page  # the lease ran out
    assert "Resume this reconcile" in page
    assert "Resume" not in viewer.get("/sync").text
    with db.read() as tx:
        stopped = next(p for p in sync_requests.progress(tx) if p.state == "interrupted")
    assert viewer.post(f"/sync/runs/{stopped.run.id}/resume").status_code == 403
    resumed = browser.post(f"/sync/runs/{stopped.run.id}/resume")
    assert resumed.status_code == 303
    [made] = requests(db)
    assert (made.kind, made.objects) == ("reconcile", [])
    with db.read() as tx:
        done = next(p for p in sync_requests.progress(tx) if p.state == "done")
    refused = browser.post(f"/sync/runs/{done.run.id}/resume")
    assert refused.status_code == 409


def test_a_viewer_is_refused(
    viewer: Browser, db: Database, connection: connections.Connection
) -> None:
    page = viewer.get("/sync").text
    assert "Start a sync" not in page
    assert (
        viewer.post("/sync", {"connection": connection.id, "kind": "backfill"}).status_code == 403
    )
    assert requests(db) == []


@pytest.mark.acceptance
def test_a_worker_runs_what_was_asked(browser: Browser, db: Database, settings: Settings) -> None:
    with run_fake_stripe(customers=3) as fake:
        with db.write() as tx:
            linked = connections.add(
                tx,
                vault.load(settings),
                account=ACCOUNT,
                secret_key=fake.secret_key,
                webhook_secrets=[WEBHOOK_SECRET],
                name="fake",
                api_base=fake.api_base,
            )
        browser.post("/sync", {"connection": linked.id, "kind": "backfill", "objects": "customers"})
        cache = connections.Cache(db, vault.load(settings), rps=0, retries=0)
        scheduler = schedule.Scheduler(
            db, sync.scheduled_jobs(db, cache, flowfile.load(), settings), holder="test:1"
        )
        scheduler.tick()
        with db.read() as tx:
            [request] = tx.execute(sa.select(tables.sync_requests)).all()
            items = tx.execute(
                sa.select(sa.func.count()).select_from(tables.inbox_items)
            ).scalar_one()
        assert request.status == "done", request.error
        assert items == 3
        page = browser.get("/sync").text
        assert "backfill of customers" in page
        assert "3 read, 3 new" in page
        assert "waiting for a worker" not in page
