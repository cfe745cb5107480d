"""Fixtures of the console's integration tests: the app under TestClient on both databases,
an admin and a viewer, and `Browser`s (each with its own cookies) that sign in, keep the page's
CSRF token and send forms as a browser on this site does."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from snapshots import users, vault
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.integration.helpers import CLIENT_IP

PASSWORD = "correct horse battery"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
ORIGIN = "http://testserver"  # TestClient's base URL: the console's own origin
CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


class Browser:
    """One browser: its cookies, and the CSRF token of the last page that had a form."""

    def __init__(self, app: ASGIApp) -> None:
        self.client = TestClient(app, client=(CLIENT_IP, 50000), follow_redirects=False)
        self.csrf = ""

    def _seen(self, response: httpx.Response) -> httpx.Response:
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def get(self, path: str, *, follow: bool = True, **options: Any) -> httpx.Response:
        return self._seen(self.client.get(path, follow_redirects=follow, **options))

    def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        csrf: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A form sent from this site (Origin and Sec-Fetch-Site as a browser sets them), with
        the page's token unless `csrf` says otherwise; redirects are not followed."""
        form = {"csrf_token": self.csrf if csrf is None else csrf, **(data or {})}
        sent = {"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin", **(headers or {})}
        return self._seen(self.client.post(path, data=form, headers=sent))

    def sign_in(self, email: str = ADMIN, password: str = PASSWORD) -> httpx.Response:
        self.get("/sign-in")
        response = self.post("/sign-in", {"email": email, "password": password})
        assert response.status_code == 303, response.text
        self.get("/")
        return response

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get("snapshots_session")


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    """The settings the console runs with; a test module overrides it to change some."""
    return settings


@pytest.fixture
def console_app(console_settings: Settings) -> Iterator[ASGIApp]:
    """The whole app (API and console), started (its lifespan runs for the test)."""
    app = create_app(console_settings)
    with TestClient(app, client=(CLIENT_IP, 50000)):
        yield app


@pytest.fixture
def people(db: Database) -> dict[str, users.User]:
    """An admin (ADMIN) and a viewer (VIEWER), both with PASSWORD."""
    with db.write() as tx:
        return {
            "admin": users.create(tx, email=ADMIN, password=PASSWORD, role="admin", actor="test"),
            "viewer": users.create(
                tx, email=VIEWER, password=PASSWORD, role="viewer", actor="test"
            ),
        }


NewBrowser = Callable[[], Browser]


@pytest.fixture
def new_browser(console_app: ASGIApp) -> NewBrowser:
    return lambda: Browser(console_app)


@pytest.fixture
def browser(new_browser: NewBrowser, people: dict[str, users.User]) -> Browser:
    """A browser signed in as the admin."""
    found = new_browser()
    found.sign_in(ADMIN)
    return found


@pytest.fixture
def viewer(new_browser: NewBrowser, people: dict[str, users.User]) -> Browser:
    """A browser signed in as the viewer."""
    found = new_browser()
    found.sign_in(VIEWER)
    return found


@pytest.fixture
def secrets(settings: Settings) -> vault.Vault:
    """The master key's vault (to add connections)."""
    return vault.load(settings)
