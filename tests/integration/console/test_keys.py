"""API keys in the console on both databases: made once and shown once, scopes with what they
grant, rotation with an overlap, revocation, last use, and the refusals."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import keys
from snapshots.store import tables
from snapshots.store.db import Database
from tests.integration.console.conftest import Browser
from tests.integration.helpers import CLIENT_IP

SECRET = re.compile(r'id="secret" readonly value="(snp_live_[0-9A-Za-z]+)"')


def test_a_key_is_made_with_scopes_and_shown_once(browser: Browser, db: Database) -> None:
    form = browser.get("/keys/new")
    assert form.status_code == 200
    # Each scope with its description and the operations it grants, read from the API.
    assert "Read contacts (Stripe customers) and their timelines." in form.text
    assert "GET /v1/customers/{contact_id}" in form.text
    assert "POST /v1/api-keys" in form.text  # under admin
    made = browser.post(
        "/keys",
        {
            "name": "reporting",
            "scope": ["contacts.readonly", "invoices.readonly"],
            "expires_in": "90d",
        },
    )  # type: ignore[dict-item]
    assert made.status_code == 201
    secret = SECRET.search(made.text)
    assert secret, made.text
    assert 'data-copy="secret"' in made.text
    with db.read() as tx:
        [stored] = keys.list_all(tx)
    assert stored.scopes == ("contacts.readonly", "invoices.readonly")
    assert stored.expires_at is not None and stored.expires_at > time.time() + 89 * 86400
    listed = browser.get("/keys").text
    assert secret.group(1) not in listed
    assert stored.key in listed  # prefix … last 4
    with db.read() as tx:
        entries = tx.execute(
            sa.select(tables.audit_entries.c.action, tables.audit_entries.c.actor)
        ).all()
    assert ("key.created", "ui:admin@example.com") in [tuple(e) for e in entries]
    assert secret.group(1) not in str(entries)


def test_the_key_made_works_on_the_api_and_its_use_shows(
    browser: Browser, console_app: object
) -> None:
    made = browser.post("/keys", {"name": "reader", "scope": "contacts.readonly"})
    secret = SECRET.search(made.text)
    assert secret
    api = TestClient(console_app, client=("203.0.113.9", 1))  # type: ignore[arg-type]
    assert (
        api.get("/v1/customers", headers={"Authorization": f"Bearer {secret.group(1)}"}).status_code
        == 200
    )
    # The last use is written by the app's settler, keys.USES_FLUSH seconds later at most.
    deadline = time.monotonic() + 10 * keys.USES_FLUSH
    page = browser.get("/keys").text
    while "from 203.0.113.9" not in page and time.monotonic() < deadline:
        time.sleep(0.05)
        page = browser.get("/keys").text
    assert "from 203.0.113.9" in page
    assert CLIENT_IP  # the console's own requests never count as a key's use


def test_bad_input_is_shown_on_the_form(browser: Browser, db: Database) -> None:
    no_scope = browser.post("/keys", {"name": "nothing"})
    assert no_scope.status_code == 400
    assert "at least one scope" in no_scope.text
    assert 'value="nothing"' in no_scope.text  # what was typed stays
    bad_life = browser.post("/keys", {"name": "x", "scope": "admin", "expires_in": "soon"})
    assert bad_life.status_code == 400
    assert "bad lifetime" in bad_life.text
    unknown = browser.post("/keys", {"name": "x", "scope": "root"})
    assert unknown.status_code == 400
    assert "unknown scope root" in unknown.text
    with db.read() as tx:
        assert keys.list_all(tx) == []


def test_rotate_with_an_overlap_then_revoke(browser: Browser, db: Database) -> None:
    browser.post("/keys", {"name": "sync job", "scope": "events.readonly"})
    with db.read() as tx:
        [old] = keys.list_all(tx)
    browser.get("/keys")
    rotated = browser.post(f"/keys/{old.id}/rotate", {"overlap": "2h"})
    assert rotated.status_code == 201
    assert SECRET.search(rotated.text)
    assert "works until" in rotated.text
    with db.read() as tx:
        previous, new = keys.list_all(tx)
    assert previous.expires_at is not None and 7000 < previous.expires_at - time.time() <= 7200
    assert new.rotated_from == old.id
    bad = browser.post(f"/keys/{new.id}/rotate", {"overlap": "90d"})
    assert bad.status_code == 400
    assert "at most 30 days" in bad.text
    revoked = browser.post(f"/keys/{new.id}/revoke")
    assert revoked.status_code == 303
    page = browser.get("/keys").text
    assert "Revoked sync job" in page
    with db.read() as tx:
        assert keys.get(tx, new.id).status == "revoked"


def test_a_viewer_sees_keys_but_no_control_and_is_refused(
    browser: Browser, viewer: Browser, db: Database
) -> None:
    browser.post("/keys", {"name": "k", "scope": "admin"})
    with db.read() as tx:
        [made] = keys.list_all(tx)
    page = viewer.get("/keys")
    assert page.status_code == 200
    assert made.key in page.text
    assert "Create a key" not in page.text
    assert "Revoke" not in page.text and "Rotate" not in page.text
    assert viewer.get("/keys/new").status_code == 403
    for path, form in [
        ("/keys", {"name": "v", "scope": "admin"}),
        (f"/keys/{made.id}/rotate", {}),
        (f"/keys/{made.id}/revoke", {}),
    ]:
        assert viewer.post(path, form).status_code == 403, path
    with db.read() as tx:
        [still] = keys.list_all(tx)
    assert still.status == "active"


def test_creating_a_key_asks_for_the_password_after_15_minutes(
    browser: Browser, db: Database
) -> None:
    with db.write() as tx:
        tx.execute(tables.console_sessions.update().values(confirmed_at=time.time() - 901))
    page = browser.get("/keys/new", follow=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/confirm?next=%2Fkeys%2Fnew"
    assert browser.post("/keys", {"name": "x", "scope": "admin"}).status_code == 403
    with db.read() as tx:
        assert keys.list_all(tx) == []
