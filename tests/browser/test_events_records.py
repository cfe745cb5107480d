"""The events and records screens in chromium: a customer named like an attack arrives through
a real signed webhook and is shown as text on every page (no dialog, no script); axe on each
screen; a phone's width; the keyboard through the filters to an event and its record."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from snapshots import connections, stripe_api, vault
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.acceptance.conftest import eventually
from tests.browser.conftest import Console, axe, fits, sign_in
from tests.conftest import fixture, sign

SECRET = "whsec_browser_events_0123456789"
XSS = "<img src=x onerror=alert(1)>"
TEMPLATE = "{{7*7}}"


@pytest.fixture(scope="module")
def arrived(console: Console) -> dict[str, Any]:
    """A connection (made in the deployment's database, its key taken as checked), and a
    customer named XSS with TEMPLATE in its metadata, sent as a signed webhook and applied by
    the embedded worker."""
    url = console.snapshots.database_url
    db = Database(url)
    try:
        with db.write() as tx:
            linked = connections.add(
                tx,
                vault.load(Settings(database_url=url, master_key=None)),
                account=stripe_api.Account(
                    id="acct_browser", livemode=False, default_currency="usd", country="US"
                ),
                secret_key="sk_test_browser_events_0000",
                webhook_secrets=[SECRET],
                name="browser",
            )
    finally:
        db.dispose()
    customer = {
        **fixture("customer"),
        "id": "cus_BrowserXss01",
        "email": "xss@example.com",
        "name": XSS,
        "metadata": {"note": TEMPLATE, XSS: "key"},
    }
    event = {
        "id": "evt_BrowserXss01",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": int(time.time()),
        "data": {"object": customer},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created",
    }
    payload = json.dumps(event).encode()
    answer = httpx.post(
        f"{console.url}/webhooks/stripe/{linked.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload, SECRET), "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text

    def applied() -> dict[str, Any]:
        db = Database(url)
        try:
            with db.read() as tx:
                row = tx.exec_driver_sql(
                    "SELECT i.id, i.status, r.record_id FROM inbox_items i "
                    "JOIN inbox_item_records r ON r.item_id = i.id "
                    "WHERE i.event_id = 'evt_BrowserXss01'"
                ).first()
        finally:
            db.dispose()
        assert row is not None and row.status == "done"
        return {"item": row.id, "contact": row.record_id}

    return eventually(applied, timeout=20)


def shows_as_text(page: Page) -> None:
    """The attack's text is on the page as text, and no element came of it."""
    expect(page.get_by_text(XSS).first).to_be_visible()
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("() => window.__xss === undefined")


def test_an_attacking_name_is_text_on_every_page(page: Page, arrived: dict[str, Any]) -> None:
    sign_in(page)
    item, contact = arrived["item"], arrived["contact"]
    for path in (
        f"/events/{item}",
        f"/records/contacts/{contact}",
        "/records/contacts?q=%3Cimg",
        "/records/contacts",
    ):
        page.goto(path)
        shows_as_text(page)
        axe(page)
    page.goto(f"/records/contacts/{contact}")
    expect(page.get_by_text(TEMPLATE).first).to_be_visible()
    page.goto(f"/events/{item}")
    expect(page.get_by_text(f'"{TEMPLATE}"').first).to_be_attached()  # in a closed branch
    page.goto("/events?q=xss%40example.com")
    expect(page.get_by_role("link", name="customer.created")).to_be_visible()
    axe(page)


def test_the_screens_fit_a_phone(phone: Page, arrived: dict[str, Any]) -> None:
    sign_in(phone)
    for path in (
        "/events",
        f"/events/{arrived['item']}",
        "/records/contacts",
        f"/records/contacts/{arrived['contact']}",
        "/records/invoices",
        "/records/locations",
    ):
        phone.goto(path)
        fits(phone)
        axe(phone)


def test_from_the_filters_to_a_record_with_the_keyboard(
    page: Page, arrived: dict[str, Any]
) -> None:
    sign_in(page)
    page.goto("/events")
    search = page.get_by_label(re.compile("^Search"))
    search.focus()
    page.keyboard.type("cus_BrowserXss01")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"q=cus_BrowserXss01"))  # htmx swapped the results
    page.wait_for_load_state("networkidle")
    link = page.get_by_role("link", name="customer.created")
    expect(link).to_have_count(1)
    link.focus()
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("customer.created"))).to_be_visible()
    record = page.get_by_role("link", name=re.compile("^contact "))
    record.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Fields", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="evt_BrowserXss01").first).to_be_visible()
    axe(page)
