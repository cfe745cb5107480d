"""The Connect Stripe screens on both databases against tests/support/fake_stripe.py: connecting
(managed with a restricted key, manual, refusals), the connection page (check now, repair,
settings, rotating the signing secret, removing), the overview's health word, and a viewer."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

from snapshots import connections, vault
from snapshots.store import tables
from snapshots.store.db import Database
from tests.integration.console.conftest import Browser
from tests.support.fake_stripe import FakeStripe

pytestmark = pytest.mark.acceptance  # starts the fake Stripe
PUBLIC = "https://snapshots.example.com"
_keys = itertools.count(1)


def _restricted(fake: FakeStripe, *allow: str) -> str:
    key = f"rk_test_console{next(_keys):06d}"
    fake.set_permissions(key, list(allow))
    return key


def _all(db: Database, secrets: vault.Vault) -> list[connections.Connection]:
    with db.read() as tx:
        return connections.list_all(tx, secrets)


def _actions(db: Database) -> list[tuple[str, str]]:
    t = tables.audit_entries
    with db.read() as tx:
        rows = tx.execute(sa.select(t.c.action, t.c.actor).order_by(t.c.id)).all()
    return [(r.action, r.actor) for r in rows]


def _connect(browser: Browser, fake: FakeStripe, key: str, **form: str) -> str:
    browser.get("/connections/new")
    sent = {
        "secret_key": key,
        "name": "shop",
        "mode": "managed",
        "public_url": PUBLIC,
        "api_base": fake.api_base,
        **form,
    }
    response = browser.post("/connections", sent)
    assert response.status_code == 201, response.text
    return response.text


def test_connect_managed_with_a_restricted_key_then_check_repair_and_remove(
    browser: Browser, db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    key = _restricted(
        fake, "customers:read", "invoices:read", "events:read", "webhook_endpoints:write"
    )
    page = _connect(browser, fake, key)
    assert key not in page and key[-4:] in page  # last 4 only
    assert "Terminal locations" in page and "not allowed by this key" in page
    assert "the location watcher is off for this connection" in page
    (made,) = fake.webhook_endpoints()
    (connection,) = _all(db, secrets)
    assert made["id"] in page
    assert f"{PUBLIC}/webhooks/stripe/{connection.id}" in page
    assert f"<dd>{len(made['enabled_events'])}</dd>" in page
    assert 'action="/sync"' in page and "Start backfill" in page
    assert 'action="/test"' in page and 'name="type" value="customer.created"' in page
    assert str(made.get("secret") or "whsec_never") not in page

    listing = browser.get("/connections").text
    assert f'href="/connections/{connection.id}"' in listing and "unchecked" in listing

    checked = browser.post(f"/connections/{connection.id}/check")
    assert checked.status_code == 303
    shown = browser.get(f"/connections/{connection.id}").text
    assert "Checked now: healthy" in shown
    overview = browser.get("/").text
    assert "healthy" in overview and f'href="/connections/{connection.id}"' in overview

    fake.set_endpoint_status(made["id"], "disabled")
    browser.post(f"/connections/{connection.id}/check")
    shown = browser.get(f"/connections/{connection.id}").text
    assert "failing" in shown and "--repair" in shown
    assert "failing" in browser.get("/").text
    repaired = browser.post(f"/connections/{connection.id}/repair")
    assert repaired.status_code == 303
    shown = browser.get(f"/connections/{connection.id}").text
    assert "enabled it again" in shown
    assert fake.webhook_endpoints()[0]["status"] == "enabled"

    assert (
        "is deleted in Stripe" in shown and "Records and inbox events it brought in stay" in shown
    )
    removed = browser.post(f"/connections/{connection.id}/remove")
    assert removed.status_code == 303
    gone = browser.get("/connections").text
    assert f"deleted its webhook endpoint {made['id']} in Stripe" in gone
    assert (_all(db, secrets), fake.webhook_endpoints()) == ([], [])
    actions = _actions(db)
    for action in ("connection.created", "connection.health_changed", "connection.removed"):
        assert (action, "ui:admin@example.com") in actions, action


def test_connect_manual_settings_rotate_and_timeline(
    browser: Browser, db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    page = _connect(
        browser,
        fake,
        "sk_test_console_manual1",
        mode="manual",
        webhook_secret="whsec_first0secret0value",
        public_url="",
    )
    assert "Register this URL in the Stripe dashboard" in page
    assert fake.webhook_endpoints() == []
    (connection,) = _all(db, secrets)

    browser.get(f"/connections/{connection.id}")
    saved = browser.post(
        f"/connections/{connection.id}/settings",
        {"name": "<b>renamed</b>", "ordering": "refetch"},
    )
    assert saved.status_code == 303
    (changed,) = _all(db, secrets)
    assert (changed.name, changed.ordering) == ("<b>renamed</b>", "refetch")
    shown = browser.get(f"/connections/{connection.id}").text
    assert "&lt;b&gt;renamed&lt;/b&gt;" in shown and "<b>renamed</b>" not in shown
    assert "Repair the webhook endpoint" not in shown  # a manual endpoint
    assert "Snapshots leaves it in Stripe" in shown

    bad = browser.post(f"/connections/{connection.id}/settings", {"name": "", "ordering": "x"})
    assert bad.status_code == 400 and "1 to 200 characters" in bad.text

    rotated = browser.post(
        f"/connections/{connection.id}/rotate-secret",
        {"webhook_secret": "whsec_second0secret0value", "overlap": "1h"},
    )
    assert rotated.status_code == 303
    shown = browser.get(f"/connections/{connection.id}").text
    assert "New signing secret …alue in force" in shown
    assert "whsec_second0secret0value" not in shown and "whsec_first0secret0value" not in shown
    with db.read() as tx:
        token = tx.execute(
            sa.select(tables.connections.c.webhook_secrets).where(
                tables.connections.c.id == connection.id
            )
        ).scalar_one()
    assert connections.signing_secrets(secrets, token) == [
        "whsec_first0secret0value",
        "whsec_second0secret0value",
    ]
    refused = browser.post(
        f"/connections/{connection.id}/rotate-secret",
        {"webhook_secret": "whsec_f", "overlap": "1h"},
    )
    assert refused.status_code == 400 and "too short" in refused.text

    timeline = shown.split('id="timeline-title"', 1)[1]
    assert "ui:admin@example.com" in timeline and "connection.changed" in timeline
    assert "connection.created" in timeline


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"secret_key": "nope"}, "must be a secret (sk_...) or restricted (rk_...) key"),
        ({"public_url": ""}, "no public URL: Stripe cannot reach this server"),
        ({"public_url": "http://10.0.0.5"}, "a local or private address that Stripe cannot reach"),
        ({"mode": "manual"}, "paste the webhook signing secret"),
        ({"mode": "manual", "webhook_secret": "whsec_f"}, "too short"),
    ],
)
def test_bad_input_shows_the_form_again_with_what_to_fix(
    browser: Browser,
    db: Database,
    secrets: vault.Vault,
    fake: FakeStripe,
    form: dict[str, str],
    says: str,
) -> None:
    browser.get("/connections/new")
    sent = {"secret_key": "sk_test_console_bad1", "public_url": PUBLIC, **form}
    response = browser.post("/connections", sent)  # no api_base: Stripe itself, never asked
    assert response.status_code == 400, response.text
    assert says in response.text
    assert "sk_test_console_bad1" not in response.text
    assert (_all(db, secrets), fake.webhook_endpoints()) == ([], [])


def test_a_key_stripe_refuses_and_a_key_that_reads_nothing(
    browser: Browser, db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    fake.revoke("sk_test_console_revoked1")
    browser.get("/connections/new")
    refused = browser.post(
        "/connections",
        {
            "secret_key": "sk_test_console_revoked1",
            "public_url": PUBLIC,
            "api_base": fake.api_base,
        },
    )
    assert refused.status_code == 400 and "Stripe said no" in refused.text
    useless = _restricted(fake, "terminal_locations:read", "webhook_endpoints:write")
    answer = browser.post(
        "/connections", {"secret_key": useless, "public_url": PUBLIC, "api_base": fake.api_base}
    )
    assert answer.status_code == 400 and "may read neither customers nor invoices" in answer.text
    assert (_all(db, secrets), fake.webhook_endpoints()) == ([], [])


def test_a_viewer_reads_and_is_refused_every_write(
    viewer: Browser, db: Database, secrets: vault.Vault, connection: connections.Connection
) -> None:
    page = viewer.get(f"/connections/{connection.id}").text
    assert connection.name in page
    assert "Check now" not in page and "Remove…" not in page and "Save settings" not in page
    assert "Connect Stripe</a>" not in viewer.get("/connections").text
    assert viewer.get("/connections/new").status_code == 403
    for action in ("check", "repair", "settings", "rotate-secret", "remove"):
        refused = viewer.post(f"/connections/{connection.id}/{action}")
        assert refused.status_code == 403, action
    assert viewer.post("/connections", {"secret_key": "sk_test_x"}).status_code == 403
    with db.read() as tx:
        assert connections.get(tx, secrets, connection.id).name == connection.name


def test_remove_while_stripe_is_down_changes_nothing_and_unknown_ids_are_404(
    browser: Browser, db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    _connect(browser, fake, "sk_test_console_down1")
    (connection,) = _all(db, secrets)
    fake.fault("/v1/webhook_endpoints/", method="DELETE", status=503, count=None)
    browser.get(f"/connections/{connection.id}")
    refused = browser.post(f"/connections/{connection.id}/remove")
    assert refused.status_code == 503 and "try again in a moment" in refused.text
    assert [c.id for c in _all(db, secrets)] == [connection.id]
    assert len(fake.webhook_endpoints()) == 1
    missing = browser.get("/connections/conn_doesnotexist1")
    assert missing.status_code == 404 and "no connection" in missing.text
