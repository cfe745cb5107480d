"""Onboarding on SQLite and PostgreSQL, against tests/support/fake_stripe.py: the managed
webhook endpoint (connect, follow the flows, repair, remove), what a key may do, the
connection check, and every bad input leaving nothing half-done."""

from __future__ import annotations

import io
import itertools
import socket
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import connections, errors, keys, revisions, schedule, sync, vault
from snapshots.app import create_app
from snapshots.onboarding import endpoint, health, setup
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.support.fake_stripe import FakeStripe

pytestmark = pytest.mark.acceptance  # starts the fake Stripe
PUBLIC = "https://snapshots.example.com"
_keys = itertools.count(1)

EXTRA = """
  - name: paused
    trigger: customer.subscription.paused
    action: add_tag
    options: {tags: [paused]}
    fields: {stripe_customer_id: customer}
"""


@pytest.fixture
def secrets(settings: Settings) -> vault.Vault:
    return vault.load(settings)


def _key() -> str:
    return f"sk_test_onboarding{next(_keys):06d}"


def _connect(db: Database, secrets: vault.Vault, fake: FakeStripe, **given: Any) -> setup.Connected:
    options: dict[str, Any] = {
        "secret_key": _key(),
        "webhook_secrets": None,
        "public_url": PUBLIC,
        "api_base": fake.api_base,
    }
    return setup.connect(db, secrets, **(options | given))


def _rows(db: Database) -> int:
    with db.read() as tx:
        return int(
            tx.execute(sa.select(sa.func.count()).select_from(tables.connections)).scalar_one()
        )


def _audit(db: Database, action: str) -> list[Any]:
    t = tables.audit_entries
    with db.read() as tx:
        return list(tx.execute(sa.select(t).where(t.c.action == action).order_by(t.c.id)))


def _secrets_of(db: Database, secrets: vault.Vault, connection_id: str) -> list[str]:
    t = tables.connections
    with db.read() as tx:
        token = tx.execute(
            sa.select(t.c.webhook_secrets).where(t.c.id == connection_id)
        ).scalar_one()
    return connections.signing_secrets(secrets, token)


def _get(db: Database, secrets: vault.Vault, connection_id: str) -> connections.Connection:
    with db.read() as tx:
        return connections.get(tx, secrets, connection_id)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- connect ----------------------------------------------------------------------------------


def test_managed_connect_makes_the_endpoint_and_stores_the_secret_stripe_issued(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    done = _connect(db, secrets, fake, name="shop")
    connection = done
    (made,) = fake.webhook_endpoints()
    with db.read() as tx:
        wanted = endpoint.desired_events(revisions.current(tx))
    assert made["url"] == f"{PUBLIC}/webhooks/stripe/{connection.id}"
    assert made["enabled_events"] == wanted
    assert made["api_version"] == connection.api_version
    assert made["metadata"] == {"managed_by": "snapshots", "snapshots_connection": connection.id}
    assert "Snapshots" in made["description"]
    assert _secrets_of(db, secrets, connection.id) == [made["secret"]]
    assert (connection.endpoint_id, connection.endpoint_url) == (made["id"], made["url"])
    assert done.events == len(wanted)
    assert all(c.allowed for c in done.capabilities or [])
    (entry,) = _audit(db, "connection.created")
    assert entry.details["endpoint_id"] == made["id"]
    assert made["secret"] not in str(entry.details)


def test_manual_connect_never_touches_stripe_endpoints(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    done = _connect(db, secrets, fake, webhook_secrets=["whsec_manual_0123456789"])
    assert done.endpoint_created is False
    assert done.endpoint_id is None
    assert fake.webhook_endpoints() == []
    assert _secrets_of(db, secrets, done.id) == ["whsec_manual_0123456789"]


BAD_INPUT = [
    pytest.param({"public_url": None}, "no public URL: Stripe cannot reach", id="no-public-url"),
    pytest.param({"public_url": "snapshots dot example"}, "is not a URL", id="not-a-url"),
    pytest.param({"public_url": "ftp://example.com"}, "is not a URL", id="not-http"),
    pytest.param(
        {"public_url": "http://127.0.0.1:8000", "api_base": None},
        "a local or private address that Stripe cannot reach",
        id="loopback-for-real-stripe",
    ),
    pytest.param(
        {"public_url": "https://10.1.2.3", "api_base": None},
        "a local or private address",
        id="private-for-real-stripe",
    ),
    pytest.param(
        {"webhook_secrets": ["whsec_f"]},
        "the webhook signing secret is too short (7 characters): it is whsec_ and at least 8",
        id="short-secret",
    ),
    pytest.param({"secret_key": "pk_test_123"}, "must be a secret (sk_...)", id="publishable-key"),
]


@pytest.mark.parametrize(("given", "message"), BAD_INPUT)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    db: Database, secrets: vault.Vault, fake: FakeStripe, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        _connect(db, secrets, fake, **given)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    assert (_rows(db), fake.webhook_endpoints()) == (0, [])


def test_a_refused_key_changes_nothing(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    key = _key()
    fake.revoke(key)
    with pytest.raises(errors.StripeAuthError, match="Stripe refused the key"):
        _connect(db, secrets, fake, secret_key=key)
    assert (_rows(db), fake.webhook_endpoints()) == (0, [])


def test_unreachable_stripe_changes_nothing(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    with pytest.raises(errors.StripeUnavailable, match="could not be reached"):
        _connect(db, secrets, fake, api_base=f"http://127.0.0.1:{_closed_port()}")
    assert _rows(db) == 0


def test_a_key_that_reads_neither_customers_nor_invoices_is_refused(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    key = f"rk_test_onboarding{next(_keys):06d}"
    fake.set_permissions(key, ["terminal_locations:read", "webhook_endpoints:write"])
    with pytest.raises(errors.BadRequest, match="may read neither customers nor invoices"):
        _connect(db, secrets, fake, secret_key=key)
    assert (_rows(db), fake.webhook_endpoints()) == (0, [])


def test_a_key_that_may_not_write_endpoints_makes_nothing(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    key = f"rk_test_onboarding{next(_keys):06d}"
    fake.set_permissions(key, ["customers:read", "invoices:read"])
    with pytest.raises(errors.StripeForbidden, match="creating the webhook endpoint"):
        _connect(db, secrets, fake, secret_key=key)
    assert (_rows(db), fake.webhook_endpoints()) == (0, [])


def test_when_storing_fails_the_endpoint_stripe_made_is_deleted(
    db: Database, secrets: vault.Vault, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise errors.Unavailable("the database is down")

    monkeypatch.setattr(connections, "add", database_gone)  # the write after Stripe's answer
    with pytest.raises(errors.Unavailable):
        _connect(db, secrets, fake)
    assert (_rows(db), fake.webhook_endpoints()) == (0, [])


def test_a_restricted_key_connects_and_what_it_may_not_read_is_skipped(
    db: Database, secrets: vault.Vault, fake: FakeStripe, settings: Settings
) -> None:
    key = f"rk_test_onboarding{next(_keys):06d}"
    fake.set_permissions(
        key, ["customers:read", "invoices:read", "events:read", "webhook_endpoints:write"]
    )
    done = _connect(db, secrets, fake, secret_key=key)
    off = {c.name: c.consequence for c in done.capabilities or [] if not c.allowed}
    assert off == {"terminal_locations": "the location watcher is off for this connection"}
    connection = _get(db, secrets, done.id)
    assert connection.off("terminal_locations") == (
        "Terminal locations: not allowed by this key: the location watcher is off for this "
        "connection"
    )
    cache = connections.Cache(db, secrets)
    with db.read() as tx:
        registry = revisions.current(tx)
    names = [job.name for job in sync.scheduled_jobs(db, cache, registry, settings)()]
    assert names == [sync.reconcile_job_name(connection.id)]  # no watcher
    fake.clear_requests()
    run = sync.backfill(db, cache.client(connection), connection, registry, obj="locations")
    assert (run.status, run.warning) == ("skipped", connection.off("terminal_locations"))
    assert fake.requests() == []


# -- the endpoint follows the flows ------------------------------------------------------------


def test_a_flows_import_updates_every_managed_endpoint(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    managed = _connect(db, secrets, fake)
    _connect(db, secrets, fake, webhook_secrets=["whsec_manual_0123456789"])
    with db.read() as tx:
        text = revisions.get_revision(tx).text or ""
    imported = revisions.import_text(db, text + EXTRA, where="flows.yaml", actor="test")
    done = endpoint.after_import(db, lambda: secrets, imported)
    (sent,) = done.endpoints
    assert (sent.connection_id, sent.synced) == (managed.id, True)
    (made,) = fake.webhook_endpoints()
    assert "customer.subscription.paused" in made["enabled_events"]
    assert sent.events == len(made["enabled_events"])
    assert _get(db, secrets, managed.id).endpoint_pending is False


def test_stripe_down_during_a_flows_import_keeps_the_version_and_the_worker_retries(
    db: Database, secrets: vault.Vault, fake: FakeStripe, settings: Settings
) -> None:
    managed = _connect(db, secrets, fake)
    with db.read() as tx:
        text = revisions.get_revision(tx).text or ""
    fake.fault("/v1/webhook_endpoints/", method="POST", status=503, count=None)
    imported = revisions.import_text(db, text + EXTRA, where="flows.yaml", actor="test")
    done = endpoint.after_import(db, lambda: secrets, imported)
    (sent,) = done.endpoints
    assert sent.synced is False
    assert sent.error is not None and "the worker sends it again" in sent.error
    with db.read() as tx:
        assert revisions.current_version(tx) == imported.revision.version  # still in force
    assert _get(db, secrets, managed.id).endpoint_pending is True

    cache = connections.Cache(db, secrets, ttl=0)
    with db.read() as tx:
        registry = revisions.current(tx)
    jobs = {
        j.name: j for j in health.scheduled_jobs(db, secrets, cache, lambda: registry, settings)()
    }
    resend = jobs[f"endpoint:{managed.id}"]
    assert schedule.run_job(db, resend, holder="test")  # fails: Stripe still down
    assert _get(db, secrets, managed.id).endpoint_pending is True
    fake.clear_faults()
    assert schedule.run_job(db, resend, holder="test", force=True)
    assert _get(db, secrets, managed.id).endpoint_pending is False
    (made,) = fake.webhook_endpoints()
    assert "customer.subscription.paused" in made["enabled_events"]
    names = [
        j.name for j in health.scheduled_jobs(db, secrets, cache, lambda: registry, settings)()
    ]
    assert f"endpoint:{managed.id}" not in names


# -- check, repair, remove -------------------------------------------------------------------


def _check(db: Database, secrets: vault.Vault, connection_id: str) -> health.Health:
    with db.read() as tx:
        registry = revisions.current(tx)
    return health.check(
        db, secrets, _get(db, secrets, connection_id), registry, public_url=PUBLIC, actor="test"
    )


def test_check_finds_a_disabled_endpoint_and_repair_enables_it(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    connection = _connect(db, secrets, fake)
    assert _check(db, secrets, connection.id).health == "healthy"
    fake.set_endpoint_status(connection.endpoint_id or "", "disabled")
    found = _check(db, secrets, connection.id)
    assert found.health == "failing"
    (problem,) = found.problems
    assert "Stripe has disabled the webhook endpoint" in problem.problem
    assert f"--repair --connection {connection.id}" in problem.fix
    stored = _get(db, secrets, connection.id)
    assert (stored.health, health.reason(stored)) == ("failing", problem.problem)
    changes = _audit(db, "connection.health_changed")
    assert [(e.details["old"], e.details["new"]) for e in changes] == [
        (None, "healthy"),
        ("healthy", "failing"),
    ]
    _check(db, secrets, connection.id)  # the same state again: no new entry
    assert len(_audit(db, "connection.health_changed")) == 2

    repaired = setup.repair(db, secrets, connection.id, public_url=None, actor="test")
    assert (repaired.endpoint_created, repaired.endpoint_enabled) == (False, True)
    assert fake.webhook_endpoints()[0]["status"] == "enabled"
    assert _check(db, secrets, connection.id).health == "healthy"


def test_repair_makes_a_new_endpoint_when_stripe_lost_it_and_stores_its_secret(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    connection = _connect(db, secrets, fake)
    fake.client().v1.webhook_endpoints.delete(connection.endpoint_id or "")
    found = _check(db, secrets, connection.id)
    assert found.health == "failing"
    assert "is gone from Stripe" in found.reason
    repaired = setup.repair(db, secrets, connection.id, public_url=None, actor="test")
    (made,) = fake.webhook_endpoints()
    assert repaired.endpoint_created is True
    assert repaired.endpoint_id == made["id"] != connection.endpoint_id
    assert made["url"] == f"{PUBLIC}/webhooks/stripe/{connection.id}"
    assert _secrets_of(db, secrets, connection.id) == [made["secret"]]


def test_repair_refuses_a_manual_connection(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    manual = _connect(db, secrets, fake, webhook_secrets=["whsec_manual_0123456789"])
    with pytest.raises(errors.BadRequest, match="registered by hand"):
        setup.repair(db, secrets, manual.id, public_url=PUBLIC)


def test_remove_deletes_the_managed_endpoint_and_a_gone_one_is_fine(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    first = _connect(db, secrets, fake)
    second = _connect(db, secrets, fake)
    removed = setup.remove(db, secrets, first.id, actor="test")
    assert removed.endpoint_deleted is True
    assert [e["id"] for e in fake.webhook_endpoints()] == [second.endpoint_id]
    fake.client().v1.webhook_endpoints.delete(second.endpoint_id or "")
    gone = setup.remove(db, secrets, second.id, actor="test")
    assert gone.endpoint_deleted is False
    assert gone.note is not None and "gone from Stripe already" in gone.note
    assert _rows(db) == 0


def test_remove_leaves_nothing_changed_when_stripe_is_down(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    connection = _connect(db, secrets, fake)
    fake.fault("/v1/webhook_endpoints/", method="DELETE", status=503, count=None)
    with pytest.raises(errors.StripeUnavailable):
        setup.remove(db, secrets, connection.id, actor="test")
    assert _rows(db) == 1
    assert len(fake.webhook_endpoints()) == 1


# -- the API reports what became of each managed endpoint -------------------------------------


def test_post_flows_updates_managed_endpoints_and_reports_stripe_down(
    db: Database, secrets: vault.Vault, fake: FakeStripe, settings: Settings
) -> None:
    managed = _connect(db, secrets, fake)
    with db.write() as tx:
        token = keys.create(tx, name="flows", scopes=["workflows.write"]).secret
    with db.read() as tx:
        text = revisions.get_revision(tx).text or ""
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        fine = client.post("/v1/flows", json={"text": text + EXTRA}, headers=headers)
        assert fine.status_code == 201, fine.text
        (sent,) = fine.json()["endpoints"]
        assert (sent["connection_id"], sent["synced"]) == (managed.id, True)
        assert "customer.subscription.paused" in fake.webhook_endpoints()[0]["enabled_events"]

        fake.fault("/v1/webhook_endpoints/", method="POST", status=503, count=None)
        back = client.post("/v1/flows/rollback", json={"version": 0}, headers=headers)
        assert back.status_code == 201, back.text
        body = back.json()
        assert body["version"] == 2 and body["previous_version"] == 1
        (waiting,) = body["endpoints"]
        assert waiting["synced"] is False
        assert "the worker sends it again" in waiting["error"]
    assert _get(db, secrets, managed.id).endpoint_pending is True
    assert "customer.subscription.paused" in fake.webhook_endpoints()[0]["enabled_events"]


# -- `snapshots init`, answering its prompts -----------------------------------------------


def test_init_asks_each_question_and_makes_the_key_with_the_scopes_picked(
    fake: FakeStripe,
    settings: Settings,
    secrets: vault.Vault,
    db: Database,
    run: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAPSHOTS_MASTER_KEY", settings.master_key or "")
    answers = [
        "",  # database URL: the default (the test's database)
        "",  # no console admin now
        PUBLIC,  # public URL
        "y",  # let Snapshots create the webhook endpoint
        "n",  # no backfill now
        "1,contacts.readonly",  # scopes: by number and by name
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(answers) + "\n"))
    done = run("init", "--secret-key", _key(), "--api-base", fake.api_base)
    assert done.code == 0, done.err
    text = " ".join(done.out.split())
    assert "created the webhook endpoint" in text
    assert "what it allows" in text and keys.SCOPE_DESCRIPTIONS["contacts.readonly"] in text
    assert "with scopes contacts.readonly, saas/location.read" in text
    with db.read() as tx:
        (connection,) = connections.list_all(tx, secrets)
        (made,) = keys.list_all(tx)
        assert sync.last_backfill(tx, connection.id) is None
    assert made.scopes == ("contacts.readonly", "saas/location.read")
    assert fake.webhook_endpoints()[0]["url"].startswith(PUBLIC)


def test_cli_flows_import_with_stripe_down_keeps_the_version_and_says_so(
    fake: FakeStripe,
    settings: Settings,
    secrets: vault.Vault,
    db: Database,
    run: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    monkeypatch.setenv("SNAPSHOTS_MASTER_KEY", settings.master_key or "")
    managed = _connect(db, secrets, fake)
    with db.read() as tx:
        text = revisions.get_revision(tx).text or ""
    path = tmp_path / "flows.yaml"
    path.write_text(text + EXTRA)
    fake.fault("/v1/webhook_endpoints/", method="POST", status=503, count=None)
    done = run("flows", "import", str(path))
    assert done.code == 0, done.err
    lines = [" ".join(line.split()) for line in done.out.strip().splitlines()]
    assert lines[0] == "flows version 1 is in force (9 flows; was version 0)"
    assert lines[1].startswith(
        f"{managed.id}: the webhook endpoint {managed.endpoint_id} still has the old event list: "
        "Stripe failed while updating the webhook endpoint"
    )
    assert lines[1].endswith("the worker sends it again until Stripe has it")
    listed = run("connections", "list")
    assert "(pending)" in listed.out


def test_check_of_a_refused_key_says_to_rotate_it(
    db: Database, secrets: vault.Vault, fake: FakeStripe
) -> None:
    key = _key()
    connection = _connect(db, secrets, fake, secret_key=key)
    fake.revoke(key)
    found = _check(db, secrets, connection.id)
    assert found.health == "failing"
    (problem,) = found.problems
    assert problem.problem == "Stripe refuses the key (revoked, expired or rolled)"
    assert "make a new key in the Stripe dashboard" in problem.fix
    (entry,) = _audit(db, "connection.health_changed")
    assert (entry.outcome, entry.details["new"]) == ("failed", "failing")
