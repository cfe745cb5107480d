"""Signing in and out, sessions (expiry, idle, log out everywhere), set-up links, re-typing the
password, and the refusals that go with them, on both databases."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import users
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.integration.console.conftest import ADMIN, PASSWORD, VIEWER, Browser, NewBrowser
from tests.integration.helpers import CLIENT_IP


def audit_actions(db: Database) -> list[tuple[str, str, str | None, str | None]]:
    a = tables.audit_entries
    with db.read() as tx:
        rows = tx.execute(sa.select(a.c.action, a.c.actor, a.c.target, a.c.ip).order_by(a.c.id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_page_without_a_session_sends_the_browser_to_sign_in(new_browser: NewBrowser) -> None:
    browser = new_browser()
    response = browser.get("/account?tab=1", follow=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=%2Faccount%3Ftab%3D1"
    htmx = browser.client.get("/", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"] == "/sign-in?next=%2F"
    form = browser.client.post(
        "/sign-out", data={"csrf_token": "x"}, headers={"Origin": "http://testserver"}
    )
    assert form.status_code == 401
    assert "text/html" in form.headers["content-type"]
    assert "Sign in needed" in form.text


def test_sign_in_sets_a_session_cookie_and_lands_on_next(
    new_browser: NewBrowser, people: dict[str, users.User], db: Database
) -> None:
    browser = new_browser()
    browser.get("/sign-in?next=/account")
    response = browser.post(
        "/sign-in", {"email": "Admin@Example.com ", "password": PASSWORD, "next": "/account"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("snapshots_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie
    page = browser.get("/account")
    assert page.status_code == 200
    assert ADMIN in page.text
    assert ("console.signed_in", f"ui:{ADMIN}", people["admin"].id, CLIENT_IP) in audit_actions(db)
    with db.read() as tx:
        stored = tx.execute(sa.select(tables.console_sessions.c.token_hash)).scalars().all()
    assert browser.session_cookie not in stored  # only its hash is kept


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"],
)
def test_next_never_leaves_the_console(
    new_browser: NewBrowser, people: dict[str, users.User], target: str
) -> None:
    browser = new_browser()
    browser.get("/sign-in")
    response = browser.post("/sign-in", {"email": ADMIN, "password": PASSWORD, "next": target})
    assert response.headers["location"] == "/"


def test_failed_sign_ins_are_audited_and_limited_per_account(
    new_browser: NewBrowser, people: dict[str, users.User], db: Database
) -> None:
    browser = new_browser()
    browser.get("/sign-in")
    for _ in range(users.FAILURES_PER_ACCOUNT):
        response = browser.post("/sign-in", {"email": ADMIN, "password": "wrong password!"})
        assert response.status_code == 401
        assert "wrong email or password" in response.text
    failures = [e for e in audit_actions(db) if e[0] == "console.sign_in_failed"]
    assert failures == [("console.sign_in_failed", "anonymous", ADMIN, CLIENT_IP)] * 5
    # The right password is refused now too, without being looked at.
    response = browser.post("/sign-in", {"email": ADMIN, "password": PASSWORD})
    assert response.status_code == 429
    assert "too many failed sign-ins" in response.text
    assert browser.session_cookie is None
    # Another account from the same address is not locked by these five.
    assert browser.post("/sign-in", {"email": VIEWER, "password": PASSWORD}).status_code == 303


def test_failed_sign_ins_are_limited_per_address(
    new_browser: NewBrowser, people: dict[str, users.User]
) -> None:
    browser = new_browser()
    browser.get("/sign-in")
    for n in range(users.FAILURES_PER_ADDRESS):
        response = browser.post(
            "/sign-in", {"email": f"nobody{n}@example.com", "password": "x" * 12}
        )
        assert response.status_code == 401
    response = browser.post("/sign-in", {"email": VIEWER, "password": PASSWORD})
    assert response.status_code == 429


def test_an_echoed_email_is_escaped(new_browser: NewBrowser) -> None:
    browser = new_browser()
    browser.get("/sign-in")
    payload = '"><img src=x onerror=alert(1)>{{7*7}}'
    response = browser.post("/sign-in", {"email": payload, "password": "whatever123"})
    assert response.status_code == 401
    assert "<img src=x" not in response.text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in response.text


def test_sign_out_ends_the_session_on_the_server(browser: Browser, new_browser: NewBrowser) -> None:
    stolen = browser.session_cookie
    assert stolen
    response = browser.post("/sign-out")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in"
    replay = new_browser()
    replay.client.cookies.set("snapshots_session", stolen)
    assert replay.get("/", follow=False).status_code == 303


def test_log_out_everywhere_ends_every_session_of_the_user(
    new_browser: NewBrowser, people: dict[str, users.User], db: Database
) -> None:
    laptop, phone, other = new_browser(), new_browser(), new_browser()
    laptop.sign_in(ADMIN)
    phone.sign_in(ADMIN)
    other.sign_in(VIEWER)
    response = phone.post("/sign-out-everywhere")
    assert response.status_code == 303
    assert phone.get("/", follow=False).status_code == 303
    assert laptop.get("/", follow=False).status_code == 303
    assert other.get("/", follow=False).status_code == 200
    assert (
        "console.sessions_ended",
        f"ui:{ADMIN}",
        people["admin"].id,
        CLIENT_IP,
    ) in audit_actions(db)


class TestExpiry:
    @pytest.fixture
    def console_settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"session_lifetime": 7200.0})

    def test_a_session_ends_at_its_lifetime(self, browser: Browser, db: Database) -> None:
        s = tables.console_sessions
        with db.read() as tx:
            row = tx.execute(sa.select(s.c.created_at, s.c.expires_at)).one()
        assert row.expires_at - row.created_at == 7200.0
        assert browser.get("/", follow=False).status_code == 200
        with db.write() as tx:  # two hours later
            tx.execute(s.update().values(expires_at=time.time() - 1))
        response = browser.get("/", follow=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/sign-in")


class TestIdle:
    @pytest.fixture
    def console_settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"session_idle": 300.0})

    def set_last_seen(self, db: Database, seconds_ago: float) -> None:
        with db.write() as tx:
            tx.execute(
                tables.console_sessions.update().values(last_seen_at=time.time() - seconds_ago)
            )

    def last_seen(self, db: Database) -> float:
        with db.read() as tx:
            return float(tx.execute(sa.select(tables.console_sessions.c.last_seen_at)).scalar_one())

    def test_an_idle_session_ends(self, browser: Browser, db: Database) -> None:
        self.set_last_seen(db, 301)
        assert browser.get("/", follow=False).status_code == 303

    def test_a_page_refreshing_itself_does_not_keep_the_session_alive(
        self, browser: Browser, db: Database
    ) -> None:
        self.set_last_seen(db, 120)
        before = self.last_seen(db)
        refresh = {"HX-Request": "true", "X-Snapshots-Refresh": "1"}
        assert browser.get("/", headers=refresh).status_code == 200
        assert self.last_seen(db) == before
        assert browser.get("/").status_code == 200
        assert self.last_seen(db) > before + 100


def test_secure_cookies_over_https(settings: Settings, people: dict[str, users.User]) -> None:
    secure = settings.model_copy(update={"public_url": "https://snapshots.example.com"})
    with TestClient(
        create_app(secure), base_url="https://snapshots.example.com", client=(CLIENT_IP, 1)
    ) as client:
        page = client.get("/sign-in")
        anonymous = page.headers["set-cookie"]
        assert anonymous.startswith("__Host-snapshots_csrf=")
        assert "Secure" in anonymous
        token = client.cookies["__Host-snapshots_csrf"]
        response = client.post(
            "/sign-in",
            data={"email": ADMIN, "password": PASSWORD, "csrf_token": token},
            headers={"Origin": "https://snapshots.example.com"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if "snapshots_session" in c
        )
        assert cookie.startswith("__Host-snapshots_session=")
        assert "Secure" in cookie
        assert "Path=/" in cookie
        assert "HttpOnly" in cookie
        assert client.get("/account").status_code == 200


def test_the_api_never_accepts_the_session_cookie(browser: Browser) -> None:
    response = browser.client.get("/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["code"]


# Set-up links.


def make_link(db: Database, **options: str) -> str:
    with db.write() as tx:
        return users.new_setup_link(tx, actor="test", **options)


def test_a_set_up_link_makes_the_first_admin_once(new_browser: NewBrowser, db: Database) -> None:
    token = make_link(db)
    with db.read() as tx:
        assert not users.admin_exists(tx)
        stored = tx.execute(sa.select(tables.setup_links.c.token_hash)).scalars().all()
    assert token not in stored
    browser = new_browser()
    page = browser.get(f"/setup/{token}")
    assert page.status_code == 200
    assert "a new <strong>admin</strong> account" in page.text
    response = browser.post(
        f"/setup/{token}",
        {
            "email": "first@example.com",
            "password": "a long password",
            "password_again": "a long password",
        },
    )
    assert response.status_code == 303
    assert "first@example.com" in browser.get("/account").text
    with db.read() as tx:
        assert users.find(tx, "first@example.com").role == "admin"
    again = new_browser()
    again.get("/sign-in")  # a form's token, as if the page were still open
    assert again.get(f"/setup/{token}").status_code == 404
    reused = again.post(
        f"/setup/{token}",
        {
            "email": "second@example.com",
            "password": "another password",
            "password_again": "another password",
        },
    )
    assert reused.status_code == 404
    assert "unknown, used or expired" in reused.text
    with db.read() as tx:
        assert [u.email for u in users.list_all(tx)] == ["first@example.com"]


def test_a_set_up_link_expires(new_browser: NewBrowser, db: Database) -> None:
    token = make_link(db)
    with db.write() as tx:
        tx.execute(tables.setup_links.update().values(expires_at=time.time() - 1))
    browser = new_browser()
    browser.get("/sign-in")
    assert browser.get(f"/setup/{token}").status_code == 404
    response = browser.post(
        f"/setup/{token}",
        {
            "email": "late@example.com",
            "password": "a long password",
            "password_again": "a long password",
        },
    )
    assert response.status_code == 404
    with db.read() as tx:
        assert users.list_all(tx) == []


def test_a_refused_password_leaves_the_link_usable(new_browser: NewBrowser, db: Database) -> None:
    token = make_link(db, role="viewer")
    browser = new_browser()
    browser.get(f"/setup/{token}")
    short = browser.post(
        f"/setup/{token}",
        {"email": "v@example.com", "password": "short", "password_again": "short"},
    )
    assert short.status_code == 400
    assert "at least 10 characters" in short.text
    differ = browser.post(
        f"/setup/{token}",
        {
            "email": "v@example.com",
            "password": "a long password",
            "password_again": "another long one",
        },
    )
    assert differ.status_code == 400
    ok = browser.post(
        f"/setup/{token}",
        {
            "email": "v@example.com",
            "password": "a long password",
            "password_again": "a long password",
        },
    )
    assert ok.status_code == 303
    with db.read() as tx:
        assert users.find(tx, "v@example.com").role == "viewer"


def test_a_set_up_link_for_an_email_sets_a_forgotten_password(
    new_browser: NewBrowser, people: dict[str, users.User], db: Database
) -> None:
    token = make_link(db, email=VIEWER, role="viewer")
    browser = new_browser()
    page = browser.get(f"/setup/{token}")
    assert VIEWER in page.text
    response = browser.post(
        f"/setup/{token}",
        {
            "email": "someone-else@example.com",
            "password": "a new password",
            "password_again": "a new password",
        },
    )
    assert response.status_code == 303
    fresh = new_browser()
    fresh.get("/sign-in")
    assert (
        fresh.post("/sign-in", {"email": VIEWER, "password": "a new password"}).status_code == 303
    )
    with db.read() as tx:
        assert len(users.list_all(tx)) == 2


# Typing the password again.


def test_a_secret_step_asks_for_the_password_after_15_minutes(
    browser: Browser, db: Database
) -> None:
    made = browser.post("/users/setup-link", {"role": "viewer"})
    assert made.status_code == 200
    assert "/setup/" in made.text
    with db.write() as tx:
        tx.execute(tables.console_sessions.update().values(confirmed_at=time.time() - 16 * 60))
    refused = browser.post("/users/setup-link", {"role": "viewer"})
    assert refused.status_code == 403
    assert "/confirm?next=" in refused.text
    confirm = browser.get("/confirm?next=/users")
    assert confirm.status_code == 200
    wrong = browser.post("/confirm", {"password": "not it at all", "next": "/users"})
    assert wrong.status_code == 401
    right = browser.post("/confirm", {"password": PASSWORD, "next": "/users"})
    assert right.status_code == 303
    assert right.headers["location"] == "/users"
    browser.get("/users")
    assert browser.post("/users/setup-link", {"role": "viewer"}).status_code == 200
