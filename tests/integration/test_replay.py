"""Bulk replay on SQLite and PostgreSQL: filters, the count and commonest errors, the cap, jobs
that resume, the audit entry, and the API (`POST /v1/events/replay`, its progress)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import audit, connections, errors, replay, times
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory
from tests.integration.helpers import MakeKey, assert_error, enqueue

T = tables.inbox_items


def put(
    db: Database,
    connection_id: str,
    event: dict[str, Any],
    *,
    status: str,
    error: str | None = None,
    received_at: float | None = None,
) -> int:
    """An item in the inbox in `status`, after three attempts."""
    item_id, _, _ = enqueue(db, connection_id, event)
    values: dict[str, Any] = {"status": status, "last_error": error, "attempts": 3}
    if received_at is not None:
        values["received_at"] = received_at
    with db.write() as conn:
        conn.execute(T.update().where(T.c.id == item_id).values(**values))
    return item_id


def statuses(db: Database) -> dict[int, tuple[str, int]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(T.c.id, T.c.status, T.c.attempts)).all()
    return {r.id: (r.status, r.attempts) for r in rows}


@pytest.fixture
def inbox_items(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> dict[str, list[int]]:
    """Dead, failed and done items of several types, errors and ages."""
    old = time.time() - 3 * 86400
    made: dict[str, list[int]] = {"dead_invoice": [], "dead_customer": [], "other": []}
    for n in range(6):
        made["dead_invoice"].append(
            put(
                db,
                connection.id,
                event_factory("invoice.paid", id=f"evt_inv{n}"),
                status="dead",
                error="flow 'invoices': field 'total': expression failed: 'ZZZ' is not a currency",
                received_at=old if n < 2 else None,
            )
        )
    for n in range(3):
        made["dead_customer"].append(
            put(
                db,
                connection.id,
                event_factory("customer.updated", id=f"evt_cus{n}"),
                status="dead",
                error="a stored secret cannot be decrypted: the MASTER KEY is wrong",
            )
        )
    made["other"].append(
        put(
            db,
            connection.id,
            event_factory("invoice.paid", id="evt_f1"),
            status="failed",
            error="database is locked",
        )
    )
    made["other"].append(
        put(db, connection.id, event_factory("invoice.paid", id="evt_d1"), status="done")
    )
    return made


def preview(db: Database, **filter: Any) -> replay.Preview:
    with db.read() as conn:
        return replay.preview(conn, replay.Filter(**filter))


@pytest.mark.usefixtures("inbox_items")
def test_filters_match_status_time_type_error_and_connection(
    db: Database, connection: connections.Connection
) -> None:
    assert preview(db).matched == 9  # dead is the default
    assert preview(db, status="failed").matched == 1
    assert preview(db, type="invoice.*").matched == 6
    assert preview(db, type="invoice.paid").matched == 6
    assert preview(db, type="customer.*").matched == 3
    assert preview(db, type="invoice").matched == 0  # a type is whole unless it says `*`
    assert preview(db, type="invoice_paid").matched == 0  # `_` is not a wildcard
    assert preview(db, error="master key").matched == 3  # any case
    assert preview(db, error="100%").matched == 0  # `%` is not a wildcard either
    assert preview(db, since=time.time() - 86400).matched == 7
    assert preview(db, since=times.parse_since("2d")).matched == 7
    assert preview(db, connection_id=connection.id).matched == 9
    assert preview(db, connection_id="conn_other").matched == 0
    found = preview(db)
    assert [(e.error, e.count) for e in found.top_errors] == [
        ("flow 'invoices': field 'total': expression failed: 'ZZZ' is not a currency", 6),
        ("a stored secret cannot be decrypted: the MASTER KEY is wrong", 3),
    ]
    assert (found.quota, found.capped) == (9, False)


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"status": "done"}, "a bulk replay takes items whose status is dead or failed"),
        ({"status": "pending"}, "not 'pending'"),
        ({"type": ""}, "type: 1 to 255 printable characters"),
        ({"error": "x" * 501}, "error: 1 to 500 characters"),
        ({"connection_id": "conn one"}, "no connection"),
    ],
)
def test_a_bad_filter_is_refused(filter: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        replay.Filter(**filter)
    assert message in caught.value.message


def test_a_job_requeues_what_matched_with_one_audit_entry(
    db: Database,
    inbox_items: dict[str, list[int]],
    event_factory: EventFactory,
    connection: connections.Connection,
) -> None:
    flt = replay.Filter(status="dead", type="invoice.*")
    with db.write() as conn:
        job = replay.start(conn, flt, actor="cli:ops")
    assert (job.status, job.matched, job.quota, job.requeued) == ("queued", 6, 6, 0)
    # An item that goes dead after the job was made is not the job's.
    late = put(db, connection.id, event_factory("invoice.paid", id="evt_late"), status="dead")
    seen: list[int] = []
    done = replay.run(db, job.id, holder="test", progress=lambda j: seen.append(j.requeued))
    assert (done.status, done.requeued) == ("done", 6)
    assert seen[-1] == 6 and done.finished_at is not None
    found = statuses(db)
    assert all(found[i] == ("pending", 0) for i in inbox_items["dead_invoice"])
    assert all(found[i] == ("dead", 3) for i in inbox_items["dead_customer"])
    assert found[late] == ("dead", 3)
    with db.read() as tx:
        entries = audit.page(tx, action="events.replayed").data
    [entry] = [e.model_dump(mode="json") for e in entries]
    assert entry["actor"] == "cli:ops" and entry["target"] == job.id
    assert entry["details"] == {
        "filter": {
            "status": "dead",
            "since": None,
            "until": None,
            "type": "invoice.*",
            "error": None,
            "cause": None,
            "connection_id": None,
            "source": None,
            "test": None,
            "q": None,
            "connections": None,
        },
        "matched": 6,
        "count": 6,
    }
    # Running it again changes nothing.
    assert replay.run(db, job.id, holder="test").requeued == 6


def test_a_run_is_capped_oldest_first_and_says_so(
    db: Database, inbox_items: dict[str, list[int]]
) -> None:
    with db.write() as conn:
        job = replay.start(conn, replay.Filter(), actor="test", cap=4)
    assert (job.matched, job.quota, job.capped) == (9, 4, True)
    assert replay.run(db, job.id, holder="test").requeued == 4
    oldest = sorted(inbox_items["dead_invoice"] + inbox_items["dead_customer"])[:4]
    assert [i for i, (status, _) in sorted(statuses(db).items()) if status == "pending"] == oldest
    with db.write() as conn:  # the next run takes the rest
        rest = replay.start(conn, replay.Filter(), actor="test", cap=4)
    assert (rest.matched, rest.quota) == (5, 4)


def test_a_job_cut_short_resumes_after_its_cursor(
    db: Database, inbox_items: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "BATCH", 2)
    with db.write() as conn:
        job = replay.start(conn, replay.Filter(), actor="test")

    def crash(j: replay.Job) -> None:
        if j.requeued >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay.run(db, job.id, holder="first", progress=crash)
    with db.read() as conn:
        assert replay.get(conn, job.id).status == "running"
    assert replay.run_due(db, holder="second") is None  # the first holder's lease is alive
    with db.write() as conn:
        conn.execute(tables.replay_jobs.update().values(lease_until=0))
    resumed = replay.run_due(db, holder="second")
    assert resumed is not None and (resumed.status, resumed.requeued) == ("done", 9)


def test_nothing_to_replay_is_a_finished_job(db: Database) -> None:
    with db.write() as conn:
        job = replay.start(conn, replay.Filter(), actor="test")
    assert (job.status, job.matched, job.requeued) == ("done", 0, 0)
    assert replay.run_due(db, holder="x") is None


# The API.


@pytest.mark.usefixtures("inbox_items")
def test_the_api_previews_starts_and_shows_a_job(
    client: TestClient, db: Database, make_key: MakeKey
) -> None:
    writer = make_key("integrations.write", "events.readonly").headers
    dry = client.post(
        "/v1/events/replay", json={"error": "master key", "dry_run": True}, headers=writer
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["matched"] == 3 and dry.json()["dry_run"] is True
    assert preview(db, error="master key").matched == 3  # nothing changed
    started = client.post(
        "/v1/events/replay",
        json={"status": "dead", "since": "2d", "type": "invoice.*"},
        headers=writer,
    )
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["object"] == "replay_job" and job["id"].startswith("rpl_")
    assert (job["status"], job["matched"], job["quota"], job["capped"]) == ("queued", 4, 4, False)
    assert job["filter"]["type"] == "invoice.*" and job["filter"]["since"].endswith("Z")
    assert job["top_errors"][0]["count"] == 4
    replay.run_due(db, holder="worker")  # what a worker's scheduler does
    shown = client.get(f"/v1/events/replay/{job['id']}", headers=writer)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["status"], shown.json()["requeued"]) == ("done", 4)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"status": "done"}, "parameter_invalid"),
        ({"since": "yesterday"}, "parameter_invalid"),
        ({"since": "72"}, "parameter_invalid"),
        ({"type": "x" * 256}, "parameter_invalid"),
        ({"colour": "red"}, "parameter_invalid"),
    ],
)
def test_the_api_refuses_a_bad_filter(
    client: TestClient, make_key: MakeKey, body: dict[str, Any], code: str
) -> None:
    response = client.post("/v1/events/replay", json=body, headers=make_key("admin").headers)
    assert_error(response, 400, code, checks="envelope")


def test_the_api_needs_its_scopes(client: TestClient, make_key: MakeKey) -> None:
    reader = make_key("events.readonly").headers
    assert_error(
        client.post("/v1/events/replay", json={}, headers=reader),
        403,
        "missing_scope",
        checks="envelope",
    )
    assert_error(client.get("/v1/events/replay/rpl_nope", headers=reader), 404, checks="envelope")
    writer_only = make_key("integrations.write").headers
    assert_error(
        client.get("/v1/events/replay/rpl_nope", headers=writer_only),
        403,
        "missing_scope",
        checks="envelope",
    )
