"""The audit screen on both databases: filters, paging, highlights, escaping, and `ui:<email>`
as the actor of console actions."""

from __future__ import annotations

import calendar
import time

import pytest

from snapshots import audit
from snapshots.store.db import Database
from tests.integration.console.conftest import ADMIN, Browser


def record(db: Database, action: str, *, actor: str = "cli:ops", **details: object) -> None:
    with db.write() as tx:
        audit.record(tx, actor=actor, action=action, details=details)


def test_console_actions_are_entries_with_the_ui_actor(browser: Browser) -> None:
    browser.post("/keys", {"name": "one", "scope": "events.readonly"})
    page = browser.get("/audit?actor=ui:*").text
    assert f"ui:{ADMIN}" in page
    assert "key.created" in page
    assert "console.signed_in" in page
    assert "user.created" not in page  # the fixture made its users as "test"


def test_filters_by_action_actor_and_time(browser: Browser, db: Database) -> None:
    record(db, "flows.imported", actor="cli:ops")
    record(db, "key.revoked", actor="key:key_abc")
    by_action = browser.get("/audit?action=key.*").text
    assert "key.revoked" in by_action and "flows.imported" not in by_action
    by_actor = browser.get("/audit?actor=cli:ops").text
    assert "flows.imported" in by_actor and "key.revoked" not in by_actor
    future = browser.get("/audit?since=2999-01-01").text
    assert "No entry matches." in future
    past = browser.get("/audit?until=2000-01-01").text
    assert "No entry matches." in past
    bad = browser.get("/audit?since=yesterday")
    assert bad.status_code == 400
    assert "since &#39;yesterday&#39;" in bad.text
    assert browser.get("/audit?starting_after=x").status_code == 400


def test_pages_go_back_in_time(browser: Browser, db: Database) -> None:
    for n in range(55):
        record(db, "test.entry", n=n)
    first = browser.get("/audit?action=test.entry").text
    assert first.count("test.entry</td>") == 50
    assert "n: 54" in first and "n: 4<" not in first
    link = first.split('<a href="/audit?')[1].split('"')[0].replace("&amp;", "&")
    second = browser.get("/audit?" + link).text
    assert second.count("test.entry</td>") == 5
    assert "n: 0<" in second


def test_unusual_entries_are_highlighted(browser: Browser, db: Database) -> None:
    record(db, "auth.scope_denied", actor="key:key_x", reason="lacks admin")
    page = browser.get("/audit?action=auth.*").text
    assert 'class="unusual"' in page
    assert "(refused)" in page


@pytest.mark.parametrize(
    ("action", "at", "outcome", "expected"),
    [
        pytest.param(
            "key.created",
            "2026-12-05T23:30:00",
            "ok",
            "key made outside working hours (UTC)",
            id="late",
        ),
        pytest.param(
            "key.created",
            "2026-12-06T10:00:00",
            "ok",
            "key made outside working hours (UTC)",
            id="sunday",
        ),
        pytest.param("key.created", "2026-12-07T10:00:00", "ok", None, id="monday-morning"),
        pytest.param(
            "connection.webhook_secret_rotated",
            "2026-12-07T10:00:00",
            "ok",
            "secret rotated",
            id="rotated",
        ),
        pytest.param(
            "console.sign_in_failed",
            "2026-12-07T10:00:00",
            "denied",
            "sign-in refused",
            id="sign-in",
        ),
        pytest.param("auth.bad_key", "2026-12-07T10:00:00", "denied", "refused", id="bad-key"),
        pytest.param("flows.imported", "2026-12-07T03:00:00", "ok", None, id="plain"),
    ],
)
def test_what_counts_as_unusual(action: str, at: str, outcome: str, expected: str | None) -> None:
    seconds = calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%S"))
    entry = audit.AuditEntry(
        id=1,
        at=seconds,
        actor="x",
        action=action,
        target=None,
        outcome=outcome,
        details={},
        request_id=None,
        ip=None,
    )
    assert audit.unusual(entry) == expected


def test_values_are_escaped(browser: Browser, db: Database) -> None:
    record(
        db,
        "test.entry",
        actor="cli:<script>alert(1)</script>",
        name="<img src=x onerror=alert(1)>{{7*7}}",
    )
    page = browser.get("/audit?action=test.entry").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in page
