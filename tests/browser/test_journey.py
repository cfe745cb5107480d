"""The console's whole journey in one browser session, against one real `snapshots serve` with
no user yet and the Stripe-compatible test server (issue 10, "How it is tested"):

first-admin link -> sign in -> connect Stripe (managed) -> open the contacts flow -> click a
sample leaf to map `custom.city` -> the preview shows it -> save -> send a test event -> the
trace shows the record -> the record page shows the field and which event set it -> break the
mapping so an event goes dead -> find it grouped by cause -> fix the flow -> replay it -> done
-> create an API key (shown once) -> the audit page lists each step with `ui:<email>`.

axe runs on every page the journey reaches."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.acceptance.conftest import eventually
from tests.browser.conftest import (
    DESKTOP,
    Console,
    a_customer,
    axe,
    deployment,
    fill_connect_form,
    new_page,
    send_test_event,
    sign_in,
)
from tests.support.fake_stripe import FakeStripe

EMAIL = "ops@example.com"
PASSWORD = "a long journey password"
ACTOR = f"ui:{EMAIL}"
SHOP = "Journey shop"
BROKEN = "abs(address.city)"  # a number function given a string: fails on every event
# What the audit page lists for the journey, newest first, each by `ui:<email>`.
STEPS = [
    "key.created",
    "event.replayed",
    "flows.imported",  # fixed
    "event.test_sent",  # Marseille
    "flows.imported",  # broken
    "event.test_sent",  # Paris
    "flows.imported",  # city mapped
    "event.test_sent",  # Lyon
    "event.test_sent",  # Stripe's example customer
    "connection.created",
    "console.signed_in",
    "console.signed_out",
    "user.created",  # by the set-up link
]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A deployment of its own: nobody has used its set-up link, no user exists."""
    with deployment(tmp_path_factory.mktemp("journey")) as made:
        yield made


@pytest.fixture
def journey(request: pytest.FixtureRequest, chromium: Browser, fresh: Console) -> Iterator[Page]:
    yield from new_page(request, chromium, fresh, DESKTOP)


def open_flow(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Flows").click()
    expect(page.get_by_role("heading", name="Flows", exact=True)).to_be_visible()
    axe(page)
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=f"Flow “{name}”")).to_be_visible()


def row_of(page: Page, target: str) -> int:
    """The number (1-based) of the editor's mapping row for `target`, or of its first blank row."""
    rows = page.locator('input[name="target"]')
    values = [rows.nth(i).input_value() for i in range(rows.count())]
    return (values.index(target) if target in values else values.index("")) + 1


def save(page: Page, comment: str) -> None:
    """Save the flow as a new version: an event sent from now on is applied by it (no wait)."""
    page.get_by_label("Comment").fill(comment)
    page.get_by_role("button", name="Check and save as a new version").click()
    expect(page.locator("#notices")).to_contain_text("is in force")


def trace_record(page: Page) -> Locator:
    """The record link of the trace on the Test page."""
    record = page.locator("#trace").get_by_role("link", name=re.compile(r"^con_"))
    expect(record).to_have_attribute("href", re.compile(r"^/records/contacts/con_"))
    return record


def test_the_whole_journey(journey: Page, fresh: Console, fake: FakeStripe) -> None:
    page = journey

    # The first admin: the link `serve` printed, then sign out and in again.
    page.goto(fresh.setup_link)
    expect(page.get_by_role("heading", name="Set up your account")).to_be_visible()
    axe(page)
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Save and sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    axe(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    axe(page)
    sign_in(page, EMAIL, PASSWORD)
    expect(page.get_by_role("link", name=EMAIL)).to_be_visible()

    # Connect Stripe with a managed webhook endpoint, made in the fake Stripe.
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Connections").click()
    axe(page)
    page.get_by_role("button", name="Connect Stripe").click()
    expect(page.get_by_role("heading", name="Connect Stripe")).to_be_visible()
    axe(page)
    fill_connect_form(page, key=fake.secret_key, name=SHOP, api_base=fake.api_base)
    page.get_by_role("button", name="Check the key and connect").click()
    expect(page.get_by_role("heading", name=f"Connected {SHOP}")).to_be_visible()
    (endpoint,) = fake.webhook_endpoints()
    expect(page.get_by_text(endpoint["id"])).to_be_visible()
    assert fake.secret_key not in page.content()
    axe(page)

    # Its first test event (Stripe's example customer), then one of a customer in Lyon, so
    # the flow editor has a real event with a city to offer as its sample.
    page.get_by_role("button", name="Send a test event").click()
    expect(page.get_by_text("Status: done")).to_be_visible(timeout=20_000)
    axe(page)
    send_test_event(page, "customer.created", a_customer("Lyon"))

    # The contacts flow: the Lyon event as the sample, a click on its city maps custom.city.
    open_flow(page, "contacts")
    expect(page.get_by_text("Nothing on this screen writes records")).to_be_visible()
    axe(page)
    sample = page.get_by_label("Try the flow on")
    lyon = sample.locator("option", has_text="evt_snptest_").first
    sample.select_option(value=lyon.get_attribute("value"))
    tree = page.get_by_role("region", name="The sample's Stripe object")
    expect(tree).to_contain_text('"Lyon"')
    row = row_of(page, "")
    page.get_by_label(f"Target of row {row}").fill("custom.city")
    expression = page.get_by_label(f"Expression of row {row}")
    expression.focus()
    tree.locator('button[data-path="address.city"]').click()
    expect(expression).to_have_value("address.city")
    expect(page.locator(f"#row-{row - 1}-value")).to_contain_text('"Lyon"')
    output = page.locator("#output")
    expect(output.get_by_role("row", name=re.compile("custom.city"))).to_contain_text('"Lyon"')
    axe(page)
    save(page, "map the city")
    expect(page.get_by_label(f"Target of row {row}")).to_have_value("custom.city")

    # A test event of the flow's trigger: the trace shows the field and the record.
    page.get_by_role("button", name="Send a test event of this flow's trigger").click()
    send_test_event(page, "customer.created", a_customer("Paris"))
    trace = page.locator("#trace")
    expect(trace).to_contain_text('custom.city = "Paris"')
    paris_event = trace.locator("h2 small").inner_text()
    assert paris_event.startswith("evt_snptest_")
    axe(page)

    # The record page: the field, and the event that set it last.
    trace_record(page).click()
    expect(page.get_by_role("heading", name="Custom fields")).to_be_visible()
    city = page.get_by_role("table", name="Custom fields").get_by_role(
        "row", name=re.compile("city")
    )
    expect(city).to_contain_text("Paris")
    expect(city.get_by_role("link", name=paris_event)).to_be_visible()
    axe(page)

    # Break the mapping: the expression fails at run time on every customer event.
    open_flow(page, "contacts")
    row = row_of(page, "custom.city")
    page.get_by_label(f"Expression of row {row}").fill(BROKEN)
    expect(page.locator("#output")).to_contain_text("The event would fail")
    axe(page)
    save(page, "break the city")
    page.get_by_role("button", name="Send a test event of this flow's trigger").click()
    send_test_event(page, "customer.created", a_customer("Marseille"), status="dead")
    marseille_event = page.locator("#trace h2 small").inner_text()

    # On the events list, the dead event is grouped by its cause.
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Events").click()
    causes = page.get_by_role("region", name="Failures by cause")
    cause = causes.get_by_role("row", name=re.compile(re.escape(BROKEN)))
    expect(cause).to_contain_text("dead")
    axe(page)
    cause.get_by_role("link", name="1", exact=True).click()
    expect(page.get_by_text("Only events whose error is")).to_be_visible()
    listed = page.get_by_role("region", name="Matching events").get_by_role("row")
    expect(listed.filter(has_text="evt_")).to_have_count(1)
    expect(listed.filter(has_text=marseille_event)).to_have_count(1)
    axe(page)
    listed.filter(has_text=marseille_event).get_by_role("link", name="customer.created").click()
    expect(page.get_by_role("heading", name=re.compile("^Gave up"))).to_be_visible()
    event_url = page.url
    axe(page)

    # Fix the flow from the event's advice, then replay the event: it ends done.
    page.get_by_role("link", name="Open flow contacts").click()
    expect(page.get_by_role("heading", name="Flow “contacts”")).to_be_visible()
    row = row_of(page, "custom.city")
    page.get_by_label(f"Expression of row {row}").fill("address.city")
    expect(page.locator("#output")).not_to_contain_text("The event would fail")
    save(page, "fix the city")
    page.goto(event_url)
    page.get_by_role("button", name="Replay this event").click()
    expect(page.locator("#notices")).to_contain_text(f"Event {marseille_event} is queued again")
    status = page.locator("dt:text('Status') + dd")

    def replayed() -> None:
        page.reload()
        expect(status).to_have_text("done", timeout=500)

    eventually(replayed, timeout=20)
    runs = page.get_by_role("region", name="Flows that ran")
    axe(page)
    runs.get_by_role("link", name=re.compile("^contact ")).click()
    city = page.get_by_role("table", name="Custom fields").get_by_role(
        "row", name=re.compile("city")
    )
    expect(city).to_contain_text("Marseille")
    expect(city.get_by_role("link", name=marseille_event)).to_be_visible()

    # An API key, shown once.
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="API keys").click()
    axe(page)
    page.get_by_role("button", name="Create a key").click()
    expect(page.get_by_role("heading", name="Create an API key")).to_be_visible()
    axe(page)
    page.get_by_label(re.compile("^Name")).fill("journey reporting")
    page.get_by_role("checkbox", name="contacts.readonly").check()
    page.get_by_role("button", name="Create the key").click()
    secret = page.get_by_label("The key")
    expect(secret).to_have_value(re.compile(r"^snp_live_"))
    shown = secret.input_value()
    expect(page.get_by_text("it is shown this once")).to_be_visible()
    axe(page)
    page.get_by_role("link", name="Back to the API keys").click()
    expect(page.get_by_role("heading", name=re.compile("journey reporting"))).to_be_visible()
    assert shown not in page.content()

    # The audit page: each step, by this admin.
    page.get_by_role("navigation", name="Screens").get_by_role("link", name="Audit").click()
    page.get_by_label(re.compile("^Actor")).fill(ACTOR)
    page.get_by_label(re.compile("^Actor")).press("Enter")
    expect(page).to_have_url(re.compile(r"actor=ui%3Aops%40example\.com"))
    entries = page.get_by_role("region", name="Audit entries").locator("tbody tr")
    expect(entries).to_have_count(len(STEPS))
    axe(page)
    rows = [[cell.inner_text() for cell in entry.locator("td").all()] for entry in entries.all()]
    # Newest first; a key made outside working hours also says so after its action.
    assert [row[2].split(" (")[0] for row in rows] == STEPS
    assert {row[1] for row in rows} == {ACTOR}
    saved = [row[5] for row in rows if row[2] == "flows.imported"]
    for comment, details in zip(
        ("fix the city", "break the city", "map the city"), saved, strict=True
    ):
        assert f"comment: {comment}" in details
