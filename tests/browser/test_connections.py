"""Connect Stripe in chromium, at 360 px and on a desktop, against the fake Stripe: a restricted
key without Terminal connects with a managed endpoint -> the table says what is off -> the
endpoint is shown -> the connection page -> check now -> remove with its confirmation."""

from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import axe, fill_connect_form, fits, sign_in
from tests.support.fake_stripe import FakeStripe

WIDTHS = ["page", "phone"]
_keys = itertools.count(1)


@pytest.mark.parametrize("width", WIDTHS)
def test_connect_managed_with_a_restricted_key_check_and_remove(
    request: pytest.FixtureRequest, width: str, fake: FakeStripe
) -> None:
    page: Page = request.getfixturevalue(width)
    key = f"rk_test_browser{next(_keys):06d}"
    fake.set_permissions(
        key, ["customers:read", "invoices:read", "events:read", "webhook_endpoints:write"]
    )
    name = f"Shop {width}"
    before = {e["id"] for e in fake.webhook_endpoints()}
    sign_in(page)
    page.goto("/connections")
    axe(page)
    fits(page)
    connect = page.get_by_role("button", name="Connect Stripe")
    connect.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Connect Stripe")).to_be_visible()
    axe(page)
    fits(page)
    fill_connect_form(page, key=key, name=name, api_base=fake.api_base)
    page.get_by_role("button", name="Check the key and connect").press("Enter")

    expect(page.get_by_role("heading", name=f"Connected {name}")).to_be_visible()
    table = page.get_by_role("table", name="What this key may do")
    terminal = table.get_by_role("row", name=re.compile("Terminal locations"))
    expect(terminal).to_contain_text("not allowed by this key")
    expect(terminal).to_contain_text("the location watcher is off for this connection")
    expect(table.get_by_role("row", name=re.compile("Customers"))).to_contain_text("allowed")
    (made,) = [e for e in fake.webhook_endpoints() if e["id"] not in before]
    expect(page.get_by_text(made["id"])).to_be_visible()
    expect(page.get_by_role("button", name="Start backfill")).to_be_visible()
    expect(page.get_by_role("button", name="Send a test event")).to_be_visible()
    assert key not in page.content()
    axe(page)
    fits(page)

    page.get_by_role("link", name="Open the connection").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.locator(".health")).to_contain_text("unchecked")
    axe(page)
    fits(page)
    page.get_by_role("button", name="Check now").click()
    expect(page.get_by_role("status")).to_contain_text("Checked now: healthy")
    expect(page.locator(".health")).to_contain_text("healthy")
    expect(page.locator(".timeline")).to_contain_text("ui:admin@example.com")

    page.get_by_text("Remove…").click()
    expect(
        page.get_by_text(f"Its webhook endpoint {made['id']} is deleted in Stripe")
    ).to_be_visible()
    axe(page)
    page.get_by_role("button", name=f"Remove {name}").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"deleted its webhook endpoint {made['id']} in Stripe"
    )
    assert made["id"] not in [e["id"] for e in fake.webhook_endpoints()]
    expect(page.get_by_role("link", name=name)).to_have_count(0)
    fits(page)
