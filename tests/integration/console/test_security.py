"""CSRF, the headers of every console answer, the viewer's refusals, error pages, and the
route table (every state-changing route is guarded), on both databases."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

from snapshots import users
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.ui import console, deps
from tests.integration.console.conftest import ADMIN, PASSWORD, VIEWER, Browser, NewBrowser


def role_of(db: Database, email: str) -> str:
    with db.read() as tx:
        return users.find(tx, email).role


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        pytest.param({"Sec-Fetch-Site": "cross-site"}, None, id="cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, None, id="same-site"),
        pytest.param(
            {"Sec-Fetch-Site": "", "Origin": "http://evil.example"}, None, id="other-origin"
        ),
        pytest.param({"Sec-Fetch-Site": "", "Origin": "null"}, None, id="null-origin"),
        pytest.param({}, "", id="missing-token"),
        pytest.param({}, "forged", id="wrong-token"),
    ],
)
def test_csrf_refuses_and_changes_nothing(
    browser: Browser,
    db: Database,
    people: dict[str, users.User],
    headers: dict[str, str],
    token: str | None,
) -> None:
    sent = {k: v for k, v in headers.items() if v}
    dropped = [k for k, v in headers.items() if not v]
    client_headers = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin", **sent}
    for name in dropped:
        client_headers.pop(name)
    response = browser.client.post(
        f"/users/{people['viewer'].id}/role",
        data={"role": "admin", "csrf_token": browser.csrf if token is None else token},
        headers=client_headers,
    )
    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    assert role_of(db, VIEWER) == "viewer"


def test_the_token_of_another_session_is_refused(
    browser: Browser, new_browser: NewBrowser, db: Database, people: dict[str, users.User]
) -> None:
    other = new_browser()
    other.sign_in(ADMIN)
    response = browser.post(
        f"/users/{people['viewer'].id}/role", {"role": "admin"}, csrf=other.csrf
    )
    assert response.status_code == 403
    assert role_of(db, VIEWER) == "viewer"
    # The header works as the field does (htmx sends it so).
    ok = browser.client.post(
        f"/users/{people['viewer'].id}/role",
        data={"role": "admin"},
        headers={"X-CSRF-Token": browser.csrf, "Origin": "http://testserver"},
    )
    assert ok.status_code == 303
    assert role_of(db, VIEWER) == "admin"


def test_sign_in_without_the_double_submit_cookie_is_refused(
    new_browser: NewBrowser, people: dict[str, users.User], db: Database
) -> None:
    browser = new_browser()
    page = browser.get("/sign-in")
    assert page.status_code == 200
    browser.client.cookies.clear()
    response = browser.post("/sign-in", {"email": ADMIN, "password": PASSWORD})
    assert response.status_code == 403
    with db.read() as tx:
        assert (
            tx.execute(sa.select(sa.func.count()).select_from(tables.console_sessions)).scalar()
            == 0
        )
    cross = new_browser()
    cross.get("/sign-in")
    refused = cross.post(
        "/sign-in", {"email": ADMIN, "password": PASSWORD}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert refused.status_code == 403


HEADERS = {
    "content-security-policy": console.POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def test_every_console_answer_carries_the_security_headers(
    browser: Browser, viewer: Browser, new_browser: NewBrowser
) -> None:
    anonymous = new_browser()
    answers = [
        anonymous.get("/sign-in"),
        anonymous.get("/", follow=False),
        anonymous.get("/no/such/page"),
        anonymous.get("/setup/not-a-link"),
        browser.get("/"),
        browser.get("/account"),
        browser.get("/users"),
        browser.get("/confirm"),
        browser.get("/", headers={"HX-Request": "true"}),
        browser.post("/users/usr_nobody/remove"),
        viewer.get("/users"),
        viewer.post("/sign-out", csrf="forged"),
    ]
    for response in answers:
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)
    assert "unsafe-inline" not in console.POLICY
    assert "frame-ancestors 'none'" in console.POLICY


def test_the_viewer_reads_but_every_write_is_refused(
    viewer: Browser, db: Database, people: dict[str, users.User]
) -> None:
    page = viewer.get("/")
    assert page.status_code == 200
    assert 'href="/users"' not in page.text  # an admin's screen is not offered
    assert viewer.get("/users").status_code == 403
    admin = people["admin"]
    writes = [
        (f"/users/{admin.id}/role", {"role": "viewer"}),
        (f"/users/{admin.id}/remove", {}),
        ("/users/setup-link", {"role": "admin"}),
    ]
    for path, form in writes:
        response = viewer.post(path, form)
        assert response.status_code == 403, path
        assert "only an admin" in response.text
    with db.read() as tx:
        assert [(u.email, u.role) for u in users.list_all(tx)] == [
            (ADMIN, "admin"),
            (VIEWER, "viewer"),
        ]
    # Their own account is theirs to change.
    assert viewer.get("/account").status_code == 200


def test_every_state_changing_route_is_guarded() -> None:
    """A POST route takes `Viewer` (or `Admin`/`Confirmed`, which build on it) or `Anonymous`:
    each runs the CSRF check. A route added without one fails here."""
    guards = {deps.viewer, deps.anonymous}
    for screen in console.SCREENS:
        for route in screen.router.routes:
            assert isinstance(route, APIRoute)
            if route.methods <= deps.SAFE_METHODS:
                continue
            calls: set[object] = set()
            pending = list(route.dependant.dependencies)
            while pending:
                found = pending.pop()
                calls.add(found.call)
                pending.extend(found.dependencies)
            assert calls & guards, f"{route.path} has no CSRF guard"


def test_error_pages_are_console_pages(browser: Browser) -> None:
    missing = browser.get("/no/such/page")
    assert missing.status_code == 404
    assert "text/html" in missing.headers["content-type"]
    assert "There is no page at /no/such/page" in missing.text
    assert 'aria-label="Screens"' in missing.text or "Sign in" in missing.text
    gone = browser.post("/users/usr_nobody/remove")
    assert gone.status_code == 404
    assert "no user usr_nobody" in gone.text
    htmx = browser.client.post(
        "/users/usr_nobody/remove",
        headers={"HX-Request": "true", "X-CSRF-Token": browser.csrf, "Origin": "http://testserver"},
    )
    assert htmx.status_code == 404
    assert htmx.headers["HX-Retarget"] == "#notices"
    assert "<html" not in htmx.text


def test_users_are_managed_and_the_last_admin_stays(
    browser: Browser, db: Database, people: dict[str, users.User], new_browser: NewBrowser
) -> None:
    admin, viewer = people["admin"], people["viewer"]
    signed_in = new_browser()
    signed_in.sign_in(VIEWER)
    refused = browser.post(f"/users/{admin.id}/role", {"role": "viewer"})
    assert refused.status_code == 409
    assert "only admin" in refused.text
    assert browser.post(f"/users/{admin.id}/remove").status_code == 409
    made = browser.post(f"/users/{viewer.id}/role", {"role": "admin"})
    assert made.status_code == 303
    assert browser.get("/users").text.count(">admin</option>") >= 2
    removed = browser.post(f"/users/{viewer.id}/remove")
    assert removed.status_code == 303
    assert f"{VIEWER} was removed" in browser.get("/users").text
    assert signed_in.get("/", follow=False).status_code == 303  # their session went with them
    actions = [e[0] for e in _audit(db)]
    assert "user.role_changed" in actions
    assert "user.removed" in actions


def test_changing_the_password_signs_out_the_other_sessions(
    browser: Browser, new_browser: NewBrowser, people: dict[str, users.User]
) -> None:
    other = new_browser()
    other.sign_in(ADMIN)
    browser.get("/account")
    wrong = browser.post(
        "/account/password",
        {
            "current": "not my password",
            "password": "a brand new one",
            "password_again": "a brand new one",
        },
    )
    assert wrong.status_code == 401
    assert "current password is wrong" in wrong.text
    ok = browser.post(
        "/account/password",
        {"current": PASSWORD, "password": "a brand new one", "password_again": "a brand new one"},
    )
    assert ok.status_code == 303
    assert "Password changed" in browser.get("/account").text
    assert other.get("/", follow=False).status_code == 303
    fresh = new_browser()
    fresh.get("/sign-in")
    assert (
        fresh.post("/sign-in", {"email": ADMIN, "password": "a brand new one"}).status_code == 303
    )


def _audit(db: Database) -> list[tuple[str, str]]:
    a = tables.audit_entries
    with db.read() as tx:
        return [tuple(r) for r in tx.execute(sa.select(a.c.action, a.c.actor))]  # type: ignore[misc]


def test_every_admin_route_refuses_a_viewer(viewer: Browser, db: Database) -> None:
    """Whatever screen adds it: a route that needs `Admin` (or `Confirmed`) answers a viewer
    with 403, and no audit entry is written by the viewer."""
    refused = 0
    for screen in console.SCREENS:
        for route in screen.router.routes:
            assert isinstance(route, APIRoute)
            calls: set[object] = set()
            pending = list(route.dependant.dependencies)
            while pending:
                found = pending.pop()
                calls.add(found.call)
                pending.extend(found.dependencies)
            if deps.admin not in calls:
                continue
            path = re.sub(r"\{[^}]+\}", "x_1", route.path)
            for method in route.methods:
                if method in deps.SAFE_METHODS:
                    response = viewer.client.request(method, path)
                else:
                    response = (
                        viewer.post(path)
                        if method == "POST"
                        else viewer.client.request(
                            method,
                            path,
                            headers={"X-CSRF-Token": viewer.csrf, "Origin": "http://testserver"},
                        )
                    )
                assert response.status_code == 403, (method, path, response.status_code)
                refused += 1
    assert refused >= 8
    with db.read() as tx:
        actors = set(tx.execute(sa.select(tables.audit_entries.c.actor)).scalars())
    assert f"ui:{VIEWER}" in actors  # signed in...
    with db.read() as tx:
        done = (
            tx.execute(
                sa.select(tables.audit_entries.c.action).where(
                    tables.audit_entries.c.actor == f"ui:{VIEWER}"
                )
            )
            .scalars()
            .all()
        )
    assert set(done) == {"console.signed_in"}  # ...and changed nothing


def test_odd_input_is_a_page_that_says_what_to_fix(
    new_browser: NewBrowser, browser: Browser
) -> None:
    anonymous = new_browser()
    anonymous.get("/sign-in")
    missing = anonymous.post("/sign-in", {"email": ADMIN})
    assert missing.status_code == 400
    assert "text/html" in missing.headers["content-type"]
    assert "password: Field required" in missing.text
    huge = anonymous.post(
        "/sign-in", {"email": "a" * 5000 + "@example.com", "password": "p" * 5000}
    )
    assert huge.status_code == 401
    assert anonymous.get("/setup/" + "x" * 3000).status_code == 404
    assert anonymous.get("/setup/%00").status_code == 404
    assert browser.get("/audit?starting_after=-1").status_code in (200, 400)
    assert browser.post("/users/%00/remove").status_code == 404
