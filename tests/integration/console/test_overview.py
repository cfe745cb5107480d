"""The overview on both databases: per connection what arrived, waits, failed and syncs, the
silence warning, the bursts of refusals, the refresh fragment, and escaping."""

from __future__ import annotations

import time

import sqlalchemy as sa

from snapshots import arrivals, audit, connections, events, inbox, overview, stripe_api
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.ui.routes import events as event_screen
from snapshots.vault import Vault
from tests.conftest import EventFactory
from tests.integration.console.conftest import Browser
from tests.integration.helpers import Stripe


def _send(stripe: Stripe, event_factory: EventFactory) -> str:
    event = event_factory("customer.updated")
    stripe.send(event)
    return str(event["id"])


def item_ids(db: Database) -> list[int]:
    with db.read() as tx:
        return list(
            tx.execute(
                sa.select(tables.inbox_items.c.id).order_by(tables.inbox_items.c.id)
            ).scalars()
        )


def test_a_connection_at_a_glance(
    browser: Browser,
    stripe: Stripe,
    event_factory: EventFactory,
    db: Database,
    connection: connections.Connection,
) -> None:
    for _ in range(4):
        _send(stripe, event_factory)
    first, second, *_ = item_ids(db)
    with db.write() as tx:
        inbox.fail(tx, first, error="boom", dead=True, delay=0)
        inbox.fail(tx, second, error="later", dead=False, delay=60)
        # An hour-old arrival: in the 24 h count, not in the last hour's.
        tx.execute(
            tables.inbox_items.update()
            .where(tables.inbox_items.c.id == second)
            .values(received_at=time.time() - 2 * 3600)
        )
        arrivals.recount(tx)  # the hourly counts follow the item moved by hand
        now = time.time()
        tx.execute(
            tables.sync_runs.insert().values(
                id="sync_test1",
                connection_id=connection.id,
                kind="backfill",
                object="customers",
                status="running",
                objects=1200,
                enqueued=1200,
                pages=12,
                holder="h:1",
                lease_until=now + 60,
                started_at=now - 10,
                updated_at=now,
            )
        )
    page = browser.get("/")
    assert page.status_code == 200
    text = page.text
    assert connection.name in text
    assert "Events, last hour</dt><dd>3</dd>" in text
    assert "Events, last 24 h</dt><dd>4</dd>" in text
    assert "Waiting</dt><dd>2, oldest" in text
    assert f'href="/events?status=dead&amp;connection={connection.id}"' in text
    assert ">1 dead</a>" in text
    assert ">1 failed</a>" in text
    assert "backfill of customers: 1,200 read" in text
    assert "<svg" in text and text.count('class="bar"') == 24
    assert "Last webhook</dt><dd><time" in text


def test_the_refresh_is_a_fragment(browser: Browser, connection: connections.Connection) -> None:
    fragment = browser.get("/", headers={"HX-Request": "true", "X-Snapshots-Refresh": "1"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert connection.name in fragment.text
    whole = browser.get("/")
    assert 'hx-trigger="every 10s"' in whole.text


def test_the_silence_warning_shows_until_a_webhook_comes(
    browser: Browser,
    stripe: Stripe,
    event_factory: EventFactory,
    db: Database,
    connection: connections.Connection,
) -> None:
    now = time.time()
    with db.write() as tx:
        tx.execute(
            tables.sync_runs.insert().values(
                id="sync_rec1",
                connection_id=connection.id,
                kind="reconcile",
                object="events",
                status="done",
                started_at=now - 5,
                updated_at=now - 1,
                finished_at=now - 1,
                warning=f"{connection.id}: no webhook received ever, but Stripe lists 3 events that never arrived",
            )
        )
    assert "Webhooks look silent" in browser.get("/").text
    _send(stripe, event_factory)
    assert "Webhooks look silent" not in browser.get("/").text


def test_bursts_of_refusals_are_summarised(browser: Browser, db: Database) -> None:
    with db.write() as tx:
        for n in range(overview.BURST_MIN):
            audit.REQUEST.set((None, f"10.0.0.{n % 2}"))
            audit.record(
                tx,
                actor="anonymous",
                action="console.sign_in_failed",
                target="x@example.com",
                outcome="denied",
            )
        audit.record(tx, actor="anonymous", action="auth.bad_key", outcome="denied")
    audit.REQUEST.set((None, None))
    page = browser.get("/").text
    assert "Unusual activity in the last hour" in page
    # The admin's own sign-in in the fixture did not fail: exactly the five above.
    assert "<strong>5</strong> failed console sign-ins</a> from 2 addresses" in page
    assert 'href="/audit?action=console.sign_in_failed&amp;since=1h"' in page
    assert "refused API keys" not in page  # one is no burst


def test_names_from_stripe_or_users_are_escaped(
    browser: Browser, db: Database, secrets: Vault
) -> None:
    account = stripe_api.Account(id="acct_x", livemode=False, default_currency="usd", country="US")
    with db.write() as tx:
        connections.add(
            tx,
            secrets,
            account=account,
            secret_key="sk_test_xss1234",
            webhook_secrets=["whsec_x1234567890"],
            name="<img src=x onerror=alert(1)>{{7*7}}",
        )
    page = browser.get("/").text
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in page


def test_no_connection_says_how_to_connect(browser: Browser, db: Database) -> None:
    with db.write() as tx:
        tx.execute(tables.connections.delete())
    assert "No Stripe account yet" in browser.get("/").text


def test_many_failures_are_counted_up_to_a_cap(
    browser: Browser, db: Database, connection: connections.Connection
) -> None:
    """Past the caps, the overview, the causes and the replay say "N+" (the work is bounded);
    under them the counts are exact."""
    many = event_screen.CAP + 1
    now = time.time()
    rows = [
        {
            "connection_id": connection.id,
            "event_id": f"evt_many{n:06d}",
            "event_type": "customer.updated",
            "event_created": int(now),
            "livemode": False,
            "source": "webhook",
            "status": "dead" if n < many else "failed",
            "attempts": 5,
            "run_after": now,
            "received_at": now - 7200,
            "last_error": f"no contact for cus_Many{n:06d}" if n % 2 else "the customer has no id",
            "error_cause": "no contact for <id>" if n % 2 else "the customer has no id",
        }
        for n in range(many + 3)
    ]
    with db.write() as tx:
        tx.execute(tables.inbox_items.insert(), rows)
        arrivals.recount(tx)
    text = browser.get("/").text
    assert f">{overview.COUNT_CAP:,}+ dead</a>" in text
    assert ">3 failed</a>" in text
    dead = browser.get("/events", params={"status": "dead"}).text
    assert f">{events.COUNT_CAP:,}+</a>" in dead  # each cause has more than the cap
    assert f"{event_screen.CAP:,}+ dead event(s) match" in dead
    assert f"Replay these {event_screen.CAP:,}" in dead
    failed = browser.get("/events", params={"status": "failed"}).text
    assert "3 failed event(s) match" in failed
