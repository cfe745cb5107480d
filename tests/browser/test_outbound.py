"""The webhook endpoint and delivery screens in chromium, at 360 px and on a desktop, against
the real `serve` and a receiver on 127.0.0.1: create an endpoint from the keyboard -> the secret
shown once and copied -> a test message -> its attempt -> disable -> recover (count, then
queue). Each page passes axe and fits."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from snapshots.outbound import delivery
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.browser.conftest import VIEWER, Console, axe, fits, sign_in
from tests.support.receiver import Receiver

WIDTHS = ["page", "phone"]


def _held(console: Console, name: str) -> None:
    """A flow's message to `name`, written as the worker writes it (held: it is disabled)."""
    database = Database(Settings(database_url=console.snapshots.database_url).database_url)
    with database.write() as tx:
        delivery.enqueue(
            tx,
            endpoint=name,
            connection_id="conn_browser",
            event_id=f"evt_{name}",
            flow="dunning",
            step=2,
            message_type="invoice.reminder",
            data={"invoice": "in_1"},
        )
    database.dispose()


def _checked(page: Page) -> None:
    axe(page)
    fits(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_an_endpoint_is_made_tested_disabled_and_recovered(
    request: pytest.FixtureRequest, width: str, console: Console
) -> None:
    page: Page = request.getfixturevalue(width)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    name = f"crm-{width}"
    sign_in(page)
    with Receiver() as receiver:
        page.goto("/endpoints")
        _checked(page)
        add = page.get_by_role("button", name="Add an endpoint")
        add.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Add a webhook endpoint")).to_be_visible()
        _checked(page)
        page.get_by_label("Name").fill(name)
        # A private address is refused at the field, which says why.
        page.get_by_label("URL").fill("http://10.0.0.5/hook")
        page.get_by_role("button", name="Add the endpoint").press("Enter")
        url = page.get_by_label("URL")
        expect(url).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#url-problem")).to_contain_text("10.0.0.5")
        _checked(page)
        url.fill(receiver.url)
        page.get_by_label("Description").fill("the CRM <b>relay</b>")
        page.get_by_role("button", name="Add the endpoint").press("Enter")
        secret = page.get_by_label("The signing secret")
        expect(secret).to_have_value(re.compile(r"^whsec_"))
        shown = secret.input_value()
        receiver.secrets = [shown]
        _checked(page)
        page.get_by_role("button", name="Copy the secret").click()
        expect(page.get_by_role("status")).to_have_text("Copied.")
        assert page.evaluate("navigator.clipboard.readText()") == shown

        page.get_by_role("link", name=f"Go to {name}").click()
        expect(page.get_by_role("heading", name=re.compile(name))).to_be_visible()
        assert shown not in page.content()  # shown once
        expect(page.get_by_text("the CRM <b>relay</b>")).to_be_visible()  # escaped
        _checked(page)
        page.get_by_role("button", name="Send a test message").click()
        expect(page.get_by_role("status")).to_contain_text(
            f"Sent a test message to {name}: succeeded."
        )
        attempt = page.get_by_role("article").filter(
            has=page.get_by_role("heading", name="Attempt 1: HTTP 200")
        )
        expect(attempt).to_contain_text("127.0.0.1")
        _checked(page)
        assert receiver.received and receiver.received[0].verified_by == [0]

    page.get_by_role("link", name=name).first.click()
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_contain_text(f"Disabled {name}")
    expect(page.get_by_text(re.compile("disabled by admin@example.com"))).to_be_visible()
    _held(console, name)
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("status")).to_contain_text(f"Enabled {name}")
    page.get_by_text("Recover…").click()
    since = page.get_by_label("Failed, dead and held deliveries made since")
    since.fill("1h")
    since.press("Enter")
    expect(page.get_by_text("1 failed, dead or held delivery was made since")).to_be_visible()
    _checked(page)
    page.get_by_role("button", name="Queue 1 again").click()
    expect(page.get_by_role("status")).to_contain_text(f"Queued 1 deliveries to {name} again")
    _checked(page)

    page.goto(f"/deliveries?endpoint={name}")
    expect(page.get_by_role("cell", name="invoice.reminder")).to_be_visible()
    _checked(page)


def test_a_viewer_reads_endpoints_but_changes_nothing(page: Page, console: Console) -> None:
    sign_in(page, VIEWER)
    for path in ("/endpoints", "/deliveries"):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(
            page.get_by_role("button", name=re.compile("Add|Disable|Enable|Remove|Send|Rotate"))
        ).to_have_count(0)
        axe(page)
