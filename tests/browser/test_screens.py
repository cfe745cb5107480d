"""Each screen of part A in chromium, at 360 px and on a desktop: it loads, fits, passes axe,
works from the keyboard, and does its job against the real `serve`."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from snapshots import connections, vault
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.browser.conftest import ROOT, VIEWER, Console, axe, fits, sign_in
from tests.conftest import ACCOUNT, WEBHOOK_SECRET, fixture, sign

WIDTHS = ["page", "phone"]
SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def linked(console: Console) -> Iterator[connections.Connection]:
    """A connection in the deployment's database (its key taken as checked)."""
    settings = Settings(database_url=console.snapshots.database_url)
    database = Database(settings.database_url)
    with database.write() as tx:
        made = connections.add(
            tx,
            vault.load(settings),
            account=ACCOUNT,
            secret_key="sk_test_browser1234",
            webhook_secrets=[WEBHOOK_SECRET],
            name="Main shop",
            # Nothing listens there: a sync the worker runs fails at once, never leaving 127/8.
            api_base="http://127.0.0.1:9",
        )
    database.dispose()
    yield made


def send_webhook(console: Console, connection: connections.Connection, number: int) -> None:
    customer = fixture("customer") | {
        "id": f"cus_browser{number:04d}",
        "email": f"c{number}@example.com",
    }
    event = {
        "id": f"evt_browser{number:06d}_{time.time_ns()}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": int(time.time()),
        "data": {"object": customer},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.updated",
    }
    payload = json.dumps(event).encode()
    response = httpx.post(
        f"{console.url}/webhooks/stripe/{connection.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload)},
        trust_env=False,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("width", WIDTHS)
def test_overview(
    request: pytest.FixtureRequest, width: str, console: Console, linked: connections.Connection
) -> None:
    page: Page = request.getfixturevalue(width)
    send_webhook(console, linked, 1)
    sign_in(page)
    panel = page.get_by_role("article").filter(
        has=page.get_by_role("heading", name=re.compile("Main shop"))
    )
    expect(panel.get_by_role("heading", level=2)).to_contain_text("Main shop")
    expect(panel.get_by_role("img", name=re.compile("Events per hour"))).to_be_visible()
    expect(panel.get_by_role("link", name=re.compile("dead"))).to_have_attribute(
        "href", f"/events?status=dead&connection={linked.id}"
    )
    fits(page)
    axe(page)
    if width == "page" and os.environ.get("SNAPSHOTS_SCREENSHOTS"):
        # SNAPSHOTS_SCREENSHOTS=1 rewrites the README's picture of the overview.
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)
    if width == "page":
        # It refreshes itself: a new webhook shows without reloading.
        before = int(
            panel.locator("dt:text('Events, last 24 h') + dd").inner_text().replace(",", "")
        )
        send_webhook(console, linked, 2)
        expect(panel.locator("dt:text('Events, last 24 h') + dd")).to_have_text(
            str(before + 1), timeout=15_000
        )


@pytest.mark.parametrize("width", WIDTHS)
def test_keys_made_from_the_keyboard_and_copied(
    request: pytest.FixtureRequest, width: str, console: Console
) -> None:
    page: Page = request.getfixturevalue(width)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    sign_in(page)
    page.goto("/keys")
    axe(page)
    create = page.get_by_role("button", name="Create a key")
    create.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Create an API key")).to_be_visible()
    axe(page)
    fits(page)
    page.get_by_label("Name").fill(f"reporting {width}")
    page.get_by_role("checkbox", name="contacts.readonly").focus()
    page.keyboard.press("Space")
    expect(page.get_by_role("checkbox", name="contacts.readonly")).to_be_checked()
    page.get_by_role("button", name="Create the key").press("Enter")
    secret = page.get_by_label("The key")
    expect(secret).to_have_value(re.compile(r"^snp_live_"))
    axe(page)
    page.get_by_role("button", name="Copy the key").click()
    expect(page.get_by_role("status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == secret.input_value()
    page.get_by_role("link", name="Back to the API keys").click()
    key = page.get_by_role("article").filter(
        has=page.get_by_role("heading", name=re.compile(f"reporting {width}"))
    )
    expect(key).to_contain_text("contacts.readonly")
    # Revoke, with the confirmation the disclosure holds.
    key.get_by_text("Revoke…").click()
    key.get_by_role("button", name=f"Revoke reporting {width}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Revoked reporting {width}")
    fits(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_audit(request: pytest.FixtureRequest, width: str) -> None:
    page: Page = request.getfixturevalue(width)
    sign_in(page)
    page.goto("/audit")
    expect(page.get_by_role("heading", name="Audit")).to_be_visible()
    axe(page)
    fits(page)
    page.get_by_label(re.compile("^Action")).fill("console.*")
    page.get_by_label(re.compile("^Action")).press("Enter")
    expect(page).to_have_url(re.compile(r"action=console\.\*"))
    expect(page.get_by_role("cell", name="console.signed_in").first).to_be_visible()
    cell_time = page.locator("td time").first
    expect(cell_time).to_have_attribute("title", re.compile("UTC$"))
    axe(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_sync(request: pytest.FixtureRequest, width: str, linked: connections.Connection) -> None:
    page: Page = request.getfixturevalue(width)
    sign_in(page)
    page.goto("/sync")
    expect(page.get_by_role("heading", name="Sync", exact=True)).to_be_visible()
    axe(page)
    fits(page)
    page.get_by_label("Reconciliation").check()
    page.get_by_role("button", name="Start").click()
    said = page.get_by_text(re.compile("Asked for a reconciliation|is already asked for"))
    expect(said).to_be_visible()
    axe(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_users_and_account(request: pytest.FixtureRequest, width: str) -> None:
    page: Page = request.getfixturevalue(width)
    sign_in(page)
    page.goto("/users")
    expect(page.get_by_role("cell", name=VIEWER, exact=True)).to_be_visible()
    axe(page)
    fits(page)
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Make a set-up link").click()
    expect(page.locator("#setup-link")).to_contain_text("/setup/")
    axe(page)
    page.goto("/account")
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    axe(page)
    fits(page)


def test_a_viewer_sees_no_write_control(page: Page, linked: connections.Connection) -> None:
    sign_in(page, VIEWER)
    for path in ("/", "/keys", "/sync", "/audit"):
        page.goto(path)
        expect(
            page.get_by_role("button", name=re.compile("Create|Start|Revoke|Rotate|Resume"))
        ).to_have_count(0)
        axe(page)
