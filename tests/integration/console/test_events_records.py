"""The events and records screens on SQLite and PostgreSQL: filters and search, failures by
cause, an event in full, replaying one and "replay these N" (count, cap, progress, audit,
admin only, CSRF), record lists and pages; every value from Stripe escaped."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import audit, connections, flowfile
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.worker import Worker
from tests.conftest import EventFactory, drain, fixture, sign
from tests.integration.console.conftest import ADMIN, Browser

T = tables.inbox_items
BROKEN = (
    "flows:\n  - name: broken\n    trigger: customer.*\n    action: upsert_contact\n"
    "    fields: {stripe_customer_id: id, custom.n: abs(name)}\n"
)
XSS_NAME = "<img src=x onerror=alert(1)>"
TEMPLATE_NAME = "{{7*7}}"


def send(browser: Browser, connection: connections.Connection, event: dict[str, Any]) -> None:
    """A signed webhook, through the real endpoint."""
    payload = json.dumps(event).encode()
    response = browser.client.post(
        f"/webhooks/stripe/{connection.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload)},
    )
    assert response.status_code == 200, response.text


def customer(event_factory: EventFactory, n: int, **changes: Any) -> dict[str, Any]:
    obj = {
        **fixture("customer"),
        "id": f"cus_Screen{n:04d}",
        "email": f"screen{n}@example.com",
        "name": f"Screen {n}",
        **changes,
    }
    return event_factory("customer.created", object=obj, id=f"evt_Screen{n:04d}")


@pytest.fixture
def inbox(
    browser: Browser,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> dict[str, Any]:
    """Two customers applied (done), three a broken mapping made dead."""
    for n in (1, 2):
        send(browser, connection, customer(event_factory, n))
    drain(Worker(db, flowfile.load(), settings, name="good"))
    for n in (3, 4, 5):
        send(browser, connection, customer(event_factory, n))
    drain(Worker(db, flowfile.parse(BROKEN, "broken.yaml"), settings, name="bad"))
    with db.read() as tx:
        rows = tx.execute(sa.select(T.c.id, T.c.event_id, T.c.status).order_by(T.c.id)).all()
        contact = tx.execute(
            sa.select(tables.contacts).where(tables.contacts.c.name == "Screen 1")
        ).one()
    return {
        "items": {r.event_id: r.id for r in rows},
        "dead": [r.id for r in rows if r.status == "dead"],
        "contact": contact,
    }


def statuses(db: Database) -> dict[int, str]:
    with db.read() as tx:
        return {r.id: r.status for r in tx.execute(sa.select(T.c.id, T.c.status))}


def test_the_list_filters_and_groups_failures_by_cause(
    browser: Browser, inbox: dict[str, Any]
) -> None:
    page = browser.get("/events")
    assert page.status_code == 200
    assert all(f"evt_Screen{n:04d}" in page.text for n in range(1, 6))
    assert "Failures by cause" in page.text
    link = re.search(r'href="(/events\?[^"]*cause=[^"]*)">3</a>', page.text)
    assert link is not None, page.text
    grouped = browser.get(link.group(1).replace("&amp;", "&"))
    assert grouped.status_code == 200
    assert "evt_Screen0001" not in grouped.text and "evt_Screen0005" in grouped.text
    assert "Replay these 3" in grouped.text and "flows version" in grouped.text
    found = browser.get("/events", params={"q": "SCREEN2@example.com"})
    assert "evt_Screen0002" in found.text and "evt_Screen0003" not in found.text
    by_type = browser.get("/events", params={"type": "invoice.*"})
    assert "No event matches." in by_type.text


def test_an_htmx_request_gets_the_results_alone(browser: Browser, inbox: dict[str, Any]) -> None:
    fragment = browser.get("/events", params={"status": "dead"}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="results">')
    assert "<html" not in fragment.text and "evt_Screen0004" in fragment.text


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"since": "72"}, id="a number without a unit"),
        pytest.param({"status": "lost"}, id="an unknown status"),
        pytest.param({"source": "fax"}, id="an unknown source"),
        pytest.param({"since": "1d", "until": "2d"}, id="until before since"),
    ],
)
def test_a_bad_filter_is_a_page_saying_what_to_fix(
    browser: Browser, inbox: dict[str, Any], query: dict[str, str]
) -> None:
    page = browser.get("/events", params=query)
    assert page.status_code == 400
    assert 'class="problem" role="alert"' in page.text and "Traceback" not in page.text


def test_pages_follow_the_cursor(
    browser: Browser,
    connection: connections.Connection,
    event_factory: EventFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from snapshots.ui.routes import events as screen

    monkeypatch.setattr(screen, "PAGE", 2)
    for n in range(1, 6):
        send(browser, connection, customer(event_factory, n))
    seen: list[list[str]] = []
    path = "/events"
    while True:
        page = browser.get(path)
        seen.append(re.findall(r"<small>(evt_Screen\d+)</small>", page.text))
        assert ("Newer events" in page.text) == (len(seen) > 1)
        older = re.search(r'href="(/events\?after=\d+)"', page.text)
        if older is None:
            break
        path = older.group(1)
    names = [f"evt_Screen{n:04d}" for n in range(5, 0, -1)]
    assert seen == [names[:2], names[2:4], names[4:]]
    # Back by the "newer" links, page by page, to the first page (which has none).
    back: list[list[str]] = []
    while newer := re.search(r'href="(/events\?before=\d+)"', page.text):
        page = browser.get(newer.group(1))
        back.append(re.findall(r"<small>(evt_Screen\d+)</small>", page.text))
        assert "Older events" in page.text
    assert back == [names[2:4], names[:2]]
    assert browser.get("/events?before=0").status_code == 400


def test_an_event_page_puts_the_error_first(browser: Browser, inbox: dict[str, Any]) -> None:
    page = browser.get(f"/events/{inbox['dead'][0]}")
    assert page.status_code == 200
    text = page.text
    assert text.index("what to do") < text.index("Payload")
    assert "Fix the mapping of &#39;custom.n&#39; in flow &#39;broken&#39;" in text
    assert 'href="/flows/edit/broken"' in text
    attempts = text[text.index("Failed attempts") : text.index("Payload")]
    assert "<time datetime=" in attempts and 'UTC">' in attempts  # the browser's zone, UTC on hover
    assert "abs(name)" in attempts and "<td><small>bad</small></td>" in attempts
    done = browser.get("/events/evt_Screen0001")
    assert "Failed attempts</h2>\n  <p>None.</p>" in done.text
    contact = inbox["contact"]
    assert f'href="/records/contacts/{contact.id}">contact Screen 1</a>' in done.text
    assert browser.get("/events/evt_nobody").status_code == 404


def test_replaying_one_event(browser: Browser, db: Database, inbox: dict[str, Any]) -> None:
    item = inbox["dead"][0]
    browser.get(f"/events/{item}")
    answer = browser.post(f"/events/{item}/replay")
    assert answer.status_code == 303 and answer.headers["location"] == f"/events/{item}"
    assert statuses(db)[item] == "pending"
    shown = browser.get(f"/events/{item}")
    assert "is queued again" in shown.text
    with db.read() as tx:
        [entry] = audit.page(tx, action="event.replayed").data
    assert entry.actor == f"ui:{ADMIN}"


def test_replay_these_runs_in_the_background_and_shows_progress(
    browser: Browser, db: Database, inbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapshots.ui.routes import events as screen

    monkeypatch.setattr(screen, "CAP", 2)
    page = browser.get("/events", params={"status": "dead"})
    assert "Replay these 2" in page.text and "oldest 2" in page.text
    answer = browser.post("/events/replay", {"status": "dead"})
    assert answer.status_code == 303
    job_path = answer.headers["location"]
    assert job_path.startswith("/events/replay/rpl_")
    progress = browser.get(job_path)
    assert "Done: 2 of 2 event(s) queued again." in progress.text
    assert 'hx-trigger="every 1s"' not in progress.text  # done: it stops polling
    found = statuses(db)
    assert [found[i] for i in inbox["dead"]] == ["pending", "pending", "dead"]
    with db.read() as tx:
        [entry] = audit.page(tx, action="events.replayed").data
    assert entry.actor == f"ui:{ADMIN}" and entry.details["count"] == 2


def test_a_viewer_sees_no_replay_and_is_refused_one(
    viewer: Browser, db: Database, inbox: dict[str, Any]
) -> None:
    item = inbox["dead"][0]
    page = viewer.get("/events", params={"status": "dead"})
    assert "3 dead event(s) match" in page.text and "Replay these" not in page.text
    assert "Replay this event" not in viewer.get(f"/events/{item}").text
    assert viewer.post(f"/events/{item}/replay").status_code == 403
    assert viewer.post("/events/replay", {"status": "dead"}).status_code == 403
    assert statuses(db)[item] == "dead"


def test_replay_refuses_a_forged_request(
    browser: Browser, db: Database, inbox: dict[str, Any]
) -> None:
    item = inbox["dead"][0]
    assert browser.post(f"/events/{item}/replay", csrf="forged").status_code == 403
    cross = browser.post(
        "/events/replay", {"status": "dead"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert statuses(db)[item] == "dead"


def test_record_lists_search_filter_and_link(browser: Browser, inbox: dict[str, Any]) -> None:
    assert browser.get("/records", follow=False).headers["location"] == "/records/contacts"
    contact = inbox["contact"]
    page = browser.get("/records/contacts", params={"q": "screen1@EXAMPLE"})
    assert page.status_code == 200
    assert f'href="/records/contacts/{contact.id}">Screen 1</a>' in page.text
    assert "Screen 2" not in page.text
    assert "No invoice matches." in browser.get("/records/invoices").text
    bad = browser.get("/records/invoices", params={"status": "lost"})
    assert bad.status_code == 400 and "status: one of" in bad.text
    assert browser.get("/records/widgets").status_code in (400, 404, 422)


def test_a_record_page_says_which_event_set_each_field(
    browser: Browser, inbox: dict[str, Any]
) -> None:
    contact = inbox["contact"]
    page = browser.get(f"/records/contacts/{contact.id}")
    assert page.status_code == 200
    item = inbox["items"]["evt_Screen0001"]
    row = re.search(r"<code>email</code></th>.*?</tr>", page.text, re.DOTALL)
    assert row is not None
    assert "screen1@example.com" in row.group(0)
    assert f'href="/events/{item}">evt_Screen0001</a>' in row.group(0)
    # Values as the API writes them: a time in ISO 8601, a flag or a number as JSON.
    created = re.search(r"<code>stripe_created</code></th>\s*<td>(.*?)</td>", page.text)
    assert created is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:]+Z", created.group(1))
    assert re.search(r"<code>archived</code></th>\s*<td><code>false</code></td>", page.text)
    assert "Events that touched it" in page.text
    assert browser.get("/records/contacts/con_nobody").status_code == 404
    assert browser.get(f"/records/invoices/{contact.id}").status_code == 404


def test_values_from_stripe_are_shown_as_text_everywhere(
    browser: Browser,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    event = customer(
        event_factory, 9, name=XSS_NAME, metadata={"note": TEMPLATE_NAME, XSS_NAME: "k"}
    )
    send(browser, connection, event)
    drain(Worker(db, flowfile.load(), settings))
    with db.read() as tx:
        contact = tx.execute(sa.select(tables.contacts)).one()
        item = tx.execute(sa.select(T.c.id)).scalar_one()
    pages = [
        "/events",
        f"/events/{item}",
        "/records/contacts",
        f"/records/contacts/{contact.id}",
        "/records/contacts?q=%3Cimg",
    ]
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for path in pages:
        page = browser.get(path)
        assert page.status_code == 200, path
        assert "<img src=x" not in page.text, path
        assert escaped in page.text or path == "/events", path
    record = browser.get(f"/records/contacts/{contact.id}").text
    assert TEMPLATE_NAME in record
    assert TEMPLATE_NAME in browser.get(f"/events/{item}").text


def test_test_events_and_records_can_be_hidden(
    browser: Browser,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    send(browser, connection, customer(event_factory, 1))
    drain(Worker(db, flowfile.load(), settings))
    with db.write() as tx:
        tx.execute(T.update().values(source="test"))
        tx.execute(tables.contacts.update().values(test=True))
    assert "evt_Screen0001" in browser.get("/events", params={"test": "only"}).text
    assert "evt_Screen0001" not in browser.get("/events", params={"test": "hide"}).text
    assert "Screen 1" in browser.get("/records/contacts", params={"test": "only"}).text
    hidden = browser.get("/records/contacts", params={"test": "hide"})
    assert "Screen 1" not in hidden.text and "No contact matches." in hidden.text
