"""The browser tests' harness: Debian's chromium (`scripts/chromium` installs it; never
Playwright's own download) driven by playwright from PyPI, headless, against a real
`snapshots serve` subprocess on a free loopback port with a fresh SQLite database.

- `console`: the deployment (session-wide): the set-up link `serve` printed, and an admin and
  a viewer made with the CLI (`ADMIN`, `VIEWER`, password `PASSWORD`). `deployment(home)`
  starts another one with no user at all (its set-up link makes the first admin).
- `fake`: the Stripe-compatible test server (`tests/support/fake_stripe.py`), one a module.
- `page` (desktop) and `phone` (360 px wide): a fresh browser context each, watched by a
  `Watch` that fails the test on any dialog, console error, uncaught error or failed
  subresource; on failure a screenshot and the page's HTML go to
  `test-artifacts/browser/<test>/`.
- `axe(page)`: runs the committed axe-core on the page; serious or critical violations fail.
- `sign_in(page, email)`; `fill_connect_form(page, ...)` (Connect Stripe, managed, against
  the fake); `send_test_event(page, type, obj)` on the Test page, with `a_customer(city)`.

Every test here is marked `browser` and `acceptance` (it starts processes), and
`xdist_group("browser-<module>")`: under `--dist loadgroup` one worker runs a whole module.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    Request,
    expect,
    sync_playwright,
)

from tests.acceptance.conftest import EXECUTABLE, Snapshots, eventually, free_port
from tests.conftest import fixture
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
TIMEZONE = "America/New_York"  # not UTC: pages must show times in the browser's zone
SUBRESOURCES = frozenset({"stylesheet", "script", "image", "font", "fetch", "xhr"})


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (`--dist loadgroup`)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.acceptance)
            # A module's tests share its servers and browser: one worker runs them all.
            item.add_marker(pytest.mark.xdist_group(f"browser-{item.path.stem}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@dataclass
class Console:
    """The deployment the browser tests use."""

    snapshots: Snapshots
    setup_link: str

    @property
    def url(self) -> str:
        return self.snapshots.base_url


def _cli_with_password(snapshots: Snapshots, *args: str) -> None:
    result = subprocess.run(
        [str(EXECUTABLE), *args, "--password-stdin"],
        cwd=snapshots.home,
        env=snapshots.env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@contextmanager
def deployment(home: Path) -> Iterator[Console]:
    """`snapshots serve` on a fresh SQLite database in `home`, with no user yet: the console
    of that deployment and the set-up link `serve` printed."""
    assert EXECUTABLE.exists(), f"{EXECUTABLE} is missing: install the package into the venv"
    # Webhook endpoints may reach the receivers on 127.0.0.1 and nothing else.
    allow = {"SNAPSHOTS_OUTBOUND_ALLOW": "127.0.0.1/32"}
    snapshots = Snapshots(home=home, port=free_port(), extra_env=allow)
    try:
        running = snapshots.serve()

        def printed() -> str:
            found = re.search(r"http://\S+/setup/\S+", running.log_path.read_text())
            assert found, running.log_path.read_text()
            return found.group(0)

        yield Console(snapshots, eventually(printed, timeout=10))
    finally:
        snapshots.stop_all()


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with deployment(tmp_path_factory.mktemp("console")) as made:
        _cli_with_password(made.snapshots, "users", "create-admin", "--email", ADMIN)
        _cli_with_password(made.snapshots, "users", "create", "--email", VIEWER, "--role", "viewer")
        yield made


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe() as server:
        yield server


@pytest.fixture(scope="module")  # its event loop must stop before the tests after these
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/chromium (scripts/test does)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
    yield browser
    browser.close()


@dataclass
class Watch:
    """What went wrong in a page that a person would notice (or that hides a bug)."""

    problems: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"a {dialog.type} dialog opened: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and "Failed to load resource" not in message.text:
            self.problems.append(f"console {message.type}: {message.text}")

    def _failed(self, request: Request) -> None:
        if request.resource_type in SUBRESOURCES:
            self.problems.append(f"failed {request.resource_type} {request.url}: {request.failure}")

    def _response(self, response: Any) -> None:
        request = response.request
        if request.resource_type in SUBRESOURCES - {"fetch", "xhr"} and response.status >= 400:
            self.problems.append(
                f"{request.resource_type} {request.url} answered {response.status}"
            )

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def new_page(
    request: pytest.FixtureRequest, chromium: Browser, console: Console, viewport: dict[str, int]
) -> Iterator[Page]:
    """A page of `console` in a fresh browser context, watched; kept on failure."""
    context = chromium.new_context(
        base_url=console.url, viewport=viewport, timezone_id=TIMEZONE, locale="en-US"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    page.watch = watch  # type: ignore[attr-defined]  # tests may look at it
    try:
        yield page
        if not request.node.stash.get(FAILED, False):
            watch.check()
    finally:
        if request.node.stash.get(FAILED, False) or watch.problems:
            _keep(request.node.name, page, watch)
        context.close()


def _keep(name: str, page: Page, watch: Watch) -> None:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        page.screenshot(path=str(folder / "page.png"), full_page=True)
        (folder / "page.html").write_text(page.content())
    except Exception as exc:  # the page may be gone: keep what there is
        (folder / "error.txt").write_text(f"{type(exc).__name__}: {exc}")
    (folder / "problems.txt").write_text("\n".join(watch.problems))


@pytest.fixture
def page(request: pytest.FixtureRequest, chromium: Browser, console: Console) -> Iterator[Page]:
    """A desktop-sized page."""
    yield from new_page(request, chromium, console, DESKTOP)


@pytest.fixture
def phone(request: pytest.FixtureRequest, chromium: Browser, console: Console) -> Iterator[Page]:
    """A page 360 px wide."""
    yield from new_page(request, chromium, console, PHONE)


def axe(page: Page) -> None:
    """Run axe-core on the page as it is; fail on serious or critical violations. (Evaluated
    through the DevTools protocol, which the page's Content-Security-Policy does not govern.)"""
    page.evaluate(AXE.read_text() + "\n;true")
    found = page.evaluate("async () => (await axe.run(document)).violations")
    bad = [v for v in found if v.get("impact") in ("serious", "critical")]
    assert not bad, json.dumps(
        [
            {
                "id": v["id"],
                "impact": v["impact"],
                "help": v["help"],
                "nodes": [n["html"] for n in v["nodes"][:3]],
            }
            for v in bad
        ],
        indent=2,
    )


def sign_in(page: Page, email: str = ADMIN, password: str = PASSWORD) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/$"))


def fits(page: Page) -> None:
    """Nothing wider than the viewport (no sideways scrolling)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size
    assert viewport is not None
    assert width <= viewport["width"], f"the page is {width} px wide in {viewport['width']} px"


def fill_connect_form(page: Page, *, key: str, name: str, api_base: str) -> None:
    """On the Connect Stripe form: the key, the name, a managed webhook endpoint (the default)
    for a public URL, and the fake Stripe as the API base. Not sent."""
    page.get_by_label(re.compile("^Stripe secret or restricted key")).fill(key)
    page.get_by_label(re.compile("^Name")).fill(name)
    expect(page.get_by_role("radio", name=re.compile("^Managed"))).to_be_checked()
    page.get_by_label(re.compile("^Public URL")).fill("https://snapshots.example.com")
    page.get_by_text("More options").click()
    page.get_by_label(re.compile("^Stripe API base URL")).fill(api_base)


def a_customer(city: str) -> str:
    """A Stripe customer living in `city`, as JSON for the Test page."""
    obj = fixture("customer") | {
        "id": f"cus_browser{secrets.token_hex(4)}",
        "email": f"{city.lower()}@example.com",
        "name": f"Someone in {city}",
        "address": {
            "city": city,
            "country": "FR",
            "line1": None,
            "line2": None,
            "postal_code": None,
            "state": None,
        },
    }
    return json.dumps(obj)


def send_test_event(page: Page, event_type: str, obj: str, *, status: str = "done") -> None:
    """On the Test page: send a test event carrying `obj`, and wait for its trace to end with
    `status`."""
    page.get_by_label("Event type").fill(event_type)
    page.get_by_text("Carry your own Stripe object").click()
    page.get_by_label("Stripe object (JSON)").fill(obj)
    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Trace of"))).to_be_visible()
    expect(page.get_by_text(f"Status: {status}")).to_be_visible(timeout=20_000)
