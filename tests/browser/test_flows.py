"""The Flows and Test screens in chromium, against a real `snapshots serve` and the
Stripe-compatible test server: the flow part of the journey (open the contacts flow, click a
sample leaf to map `custom.city`, the preview shows it, save, send a test event, the trace
shows the record), the keyboard, a phone's width, and axe on every screen."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    ROOT,
    Console,
    a_customer,
    axe,
    fits,
    send_test_event,
    sign_in,
)
from tests.support.fake_stripe import FakeStripe

WEBHOOK_SECRET = "whsec_browser_flows_0123456789"


def screenshot(page: Page, name: str) -> None:
    """SNAPSHOTS_SCREENSHOTS=1 rewrites the README's picture `docs/screenshots/NAME.png`."""
    if os.environ.get("SNAPSHOTS_SCREENSHOTS"):
        folder = ROOT / "docs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def connected(console: Console, fake: FakeStripe) -> dict[str, Any]:
    """A connection of the console's deployment to the Stripe-compatible test server."""
    return _connect(console, fake)


def _connect(console: Console, fake: FakeStripe) -> dict[str, Any]:
    found: dict[str, Any] = console.snapshots.cli_json(
        "connect",
        "stripe",
        "--secret-key",
        fake.secret_key,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--api-base",
        fake.api_base,
        "--name",
        "browser flows",
        "--json",
    )
    return found


def test_map_a_field_from_a_sample_then_send_a_test_event(
    page: Page, connected: dict[str, Any]
) -> None:
    sign_in(page)
    # A first test event, so the editor can offer a real event with a city as its sample.
    page.goto("/test")
    axe(page)
    send_test_event(page, "customer.created", a_customer("Lyon"))
    axe(page)

    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Flows").click()
    expect(page.get_by_role("heading", name="Flows")).to_be_visible()
    axe(page)
    page.get_by_role("link", name="contacts", exact=True).click()
    expect(page.get_by_role("heading", name="Flow “contacts”")).to_be_visible()
    expect(page.get_by_text("Nothing on this screen writes records")).to_be_visible()
    axe(page)

    # Pick the real event as the sample; its tree shows the city.
    sample = page.get_by_label("Try the flow on")
    real = sample.locator("option", has_text="evt_snptest_").first
    sample.select_option(value=real.get_attribute("value"))
    tree = page.get_by_role("region", name="The sample's Stripe object")
    expect(tree).to_contain_text('"Lyon"')

    # A new row: type the target, then click the sample's leaf to write the expression.
    rows = page.locator('input[name="target"]')
    blank = next(i for i in range(rows.count()) if rows.nth(i).input_value() == "")
    page.get_by_label(f"Target of row {blank + 1}").fill("custom.city")
    expression = page.get_by_label(f"Expression of row {blank + 1}")
    expression.focus()
    tree.locator('button[data-path="address.city"]').click()
    expect(expression).to_have_value("address.city")
    expect(page.locator(f"#row-{blank}-value")).to_contain_text('"Lyon"')
    output = page.locator("#output")
    expect(output).to_contain_text("custom.city")
    expect(output).to_contain_text("Would update the contact")
    axe(page)
    screenshot(page, "flow-editor")

    page.get_by_label("Comment").fill("map the city")
    page.get_by_role("button", name="Check and save as a new version").click()
    expect(page.locator("#notices")).to_contain_text("is in force")
    expect(page.get_by_label(f"Target of row {blank + 1}")).to_have_value("custom.city")

    # From the editor: a test event of the flow's trigger; the trace shows the record.
    page.get_by_role("button", name="Send a test event of this flow's trigger").click()
    expect(page.get_by_label("Event type")).to_have_value("customer.created")
    send_test_event(page, "customer.created", a_customer("Paris"))
    trace = page.locator("#trace")
    expect(trace).to_contain_text("contacts")
    expect(trace).to_contain_text('custom.city = "Paris"')
    record = trace.get_by_role("link", name=re.compile(r"^con_"))
    expect(record).to_have_attribute("href", re.compile(r"^/records/contacts/con_"))
    axe(page)

    # The versions page shows the change.
    page.goto("/flows/versions")
    axe(page)
    page.get_by_role("button", name="Show the difference").click()
    expect(page.locator("pre.diff")).to_contain_text("custom.city: address.city")


def test_the_editor_by_keyboard_on_a_phone(phone: Page, connected: dict[str, Any]) -> None:
    sign_in(phone)
    for path in ("/flows", "/flows/versions", "/flows/yaml", "/test", "/flows/new"):
        phone.goto(path)
        fits(phone)
        axe(phone)
    phone.goto("/flows/edit/contacts")
    fits(phone)
    axe(phone)
    phone.get_by_label("Filter (optional: a JMESPath expression that must be true)").focus()
    leaf = phone.locator('#sample-tree button[data-path="email"]')
    leaf.focus()
    expect(leaf).to_be_focused()
    phone.keyboard.press("Enter")
    filter_field = phone.get_by_label("Filter (optional: a JMESPath expression that must be true)")
    expect(filter_field).to_have_value("email")
    # "email" gives null on Stripe's example: not a boolean, said at the filter.
    expect(phone.locator("#output")).to_contain_text("not a boolean")
    fits(phone)


def test_the_yaml_tab_shows_problems_with_their_line(page: Page) -> None:
    sign_in(page)
    page.goto("/flows/yaml")
    axe(page)
    text = page.get_by_label("Flows file (YAML)")
    text.fill("flows:\n  - name: x\n    trigger: customer.created\n    action: upsert_kontakt\n")
    expect(page.locator("#problems")).to_contain_text("line 4")
    expect(page.locator("#problems")).to_contain_text("unknown action 'upsert_kontakt'")
    axe(page)
