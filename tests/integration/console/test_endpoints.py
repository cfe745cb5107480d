"""Webhook endpoints and deliveries in the console on both databases, with a real receiver on
127.0.0.1 (the only address endpoints may reach here): the guard's refusal at the URL field,
the secret shown once, a test message and its attempt, disable (new deliveries held), recover
(the count first, then the queue), rotation, removal, filters and escaping."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from snapshots.app import create_app
from snapshots.outbound import delivery, endpoints, guard
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.vault import Vault
from tests.integration.console.conftest import Browser
from tests.integration.helpers import CLIENT_IP
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.acceptance  # a receiver in a thread
SECRET = re.compile(r'id="secret" readonly value="(whsec_[A-Za-z0-9+/=]+)"')
EVIL = "<script>alert(1)</script>"


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    """Endpoints may reach 127.0.0.1 (the receivers) and nothing else."""
    return settings.model_copy(update={"outbound_allow": "127.0.0.1/32"})


def _held(db: Database, name: str, event: str) -> str:
    """A flow's message to `name` (held while it is disabled), as the worker writes it."""
    with db.write() as tx:
        return delivery.enqueue(
            tx,
            endpoint=name,
            connection_id="conn_1",
            event_id=event,
            flow="dunning",
            step=2,
            message_type="invoice.reminder",
            data={"note": EVIL},
        )


def _status(db: Database, delivery_id: str) -> str:
    with db.read() as tx:
        return delivery.get(tx, delivery_id).status


def _actions(db: Database) -> list[tuple[str, str]]:
    with db.read() as tx:
        audit = tables.audit_entries
        rows = tx.execute(sa.select(audit.c.action, audit.c.actor).order_by(audit.c.id)).all()
    return [(r.action, r.actor) for r in rows]


def test_an_endpoint_from_creation_to_removal(
    browser: Browser, db: Database, secrets: Vault
) -> None:
    form = browser.get("/endpoints/new")
    assert form.status_code == 200 and 'name="url"' in form.text
    refused = browser.post("/endpoints", {"name": "crm", "url": "http://10.0.0.5/hook"})
    assert refused.status_code == 400
    # The guard's refusal sits at the URL field, and the form keeps what was typed.
    assert 'id="url-problem"' in refused.text and "10.0.0.5" in refused.text
    assert 'aria-invalid="true" aria-describedby="url-problem"' in refused.text
    assert 'value="crm"' in refused.text
    bad_name = browser.post("/endpoints", {"name": "no spaces", "url": "http://127.0.0.1/"})
    assert bad_name.status_code == 400 and 'id="name-problem"' in bad_name.text

    with Receiver() as receiver:
        receiver.script(Reply(200, body=EVIL.encode()))
        made = browser.post(
            "/endpoints", {"name": "crm", "url": receiver.url, "description": f"the CRM {EVIL}"}
        )
        assert made.status_code == 201, made.text
        secret = SECRET.search(made.text)
        assert secret, made.text
        assert 'data-copy="secret"' in made.text
        receiver.secrets = [secret.group(1)]
        again = browser.post("/endpoints", {"name": "crm", "url": receiver.url})
        assert again.status_code == 409 and 'id="name-problem"' in again.text

        listed = browser.get("/endpoints").text
        assert "crm" in listed and receiver.url in listed
        assert secret.group(1) not in listed
        page = browser.get("/endpoints/crm")
        assert page.status_code == 200
        assert secret.group(1) not in page.text and "…" + secret.group(1)[-4:] in page.text
        assert EVIL not in page.text and "&lt;script&gt;" in page.text

        sent = browser.post("/endpoints/crm/test")
        assert sent.status_code == 303
        target = sent.headers["location"]
        assert target.startswith("/deliveries/msg_")
        shown = browser.get(target)
        assert "Sent a test message to crm: succeeded." in shown.text
        assert "HTTP 200" in shown.text and "127.0.0.1" in shown.text
        assert EVIL not in shown.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
        assert "snapshots.test" in shown.text
        assert len(receiver.received) == 1 and receiver.received[0].verified_by == [0]

        disabled = browser.post("/endpoints/crm/disable")
        assert disabled.status_code == 303
        page = browser.get("/endpoints/crm").text
        assert "disabled by admin@example.com in the console" in page
        assert "Send a test message" not in page
        held = _held(db, "crm", "evt_1")
        assert _status(db, held) == "held"
        listed = browser.get("/endpoints").text
        assert re.search(r"<td>0</td>\s*<td>1</td>\s*<td>0</td>", listed), listed  # due, held, dead

        # Recover shows the count first and queues nothing until confirmed.
        counted = browser.post("/endpoints/crm/recover", {"since": "2d"})
        assert counted.status_code == 200
        assert "1 failed, dead or held delivery was made since" in counted.text
        assert _status(db, held) == "held"
        refused_recover = browser.post("/endpoints/crm/recover", {"since": "2d", "confirm": "2d"})
        assert refused_recover.status_code == 409 and "enable" in refused_recover.text
        assert _status(db, held) == "held"
        assert browser.post("/endpoints/crm/enable").status_code == 303
        queued = browser.post("/endpoints/crm/recover", {"since": "2d", "confirm": "2d"})
        assert queued.status_code == 303
        assert "Queued 1 deliveries to crm again" in browser.get(queued.headers["location"]).text
        assert _status(db, held) == "pending"
        bad_since = browser.post("/endpoints/crm/recover", {"since": "yesterday-ish"})
        assert bad_since.status_code == 400 and "since" in bad_since.text

        rotated = browser.post("/endpoints/crm/rotate", {"overlap": "1h"})
        assert rotated.status_code == 201
        new_secret = SECRET.search(rotated.text)
        assert new_secret and new_secret.group(1) != secret.group(1)
        assert "signs too until" in rotated.text
        with db.read() as tx:
            assert len(endpoints.list_all(tx, secrets)[0].secrets) == 2

    # Removing says what goes, and refuses to drop undelivered messages unticked.
    page = browser.get("/endpoints/crm").text
    assert "deletes it with its 2 deliveries and their attempts" in page
    assert "Drop the 1 delivery still to send" in page
    kept = browser.post("/endpoints/crm/remove")
    assert kept.status_code == 409
    removed = browser.post("/endpoints/crm/remove", {"drop": "yes"})
    assert removed.status_code == 303
    assert "Removed crm with its deliveries" in browser.get("/endpoints").text
    actions = _actions(db)
    for action in (
        "endpoint.created",
        "endpoint.disabled",
        "endpoint.enabled",
        "endpoint.recovered",
        "endpoint.secret_rotated",
        "endpoint.removed",
    ):
        assert (action, "ui:admin@example.com") in actions, action


def test_deliveries_are_filtered_and_the_viewer_reads_them(
    browser: Browser, viewer: Browser, db: Database
) -> None:
    with Receiver() as receiver:
        assert browser.post("/endpoints", {"name": "crm", "url": receiver.url}).status_code == 201
        assert browser.post("/endpoints", {"name": "ops", "url": receiver.url}).status_code == 201
    assert browser.post("/endpoints/ops/disable").status_code == 303
    first = _held(db, "crm", "evt_1")
    second = _held(db, "ops", "evt_2")

    every = viewer.get("/deliveries")
    assert every.status_code == 200 and first in every.text and second in every.text
    only_ops = viewer.get("/deliveries?endpoint=ops").text
    assert second in only_ops and first not in only_ops
    held = viewer.get("/deliveries?status=held").text
    assert second in held and first not in held
    assert first not in viewer.get("/deliveries?since=2000-01-01&status=succeeded").text
    assert first in viewer.get("/deliveries?since=1h").text
    for query, problem in (
        ("since=someday", "since"),
        ("status=lost", "unknown status"),
        ("endpoint=nobody", "no webhook endpoint nobody"),
    ):
        answer = viewer.get(f"/deliveries?{query}")
        assert answer.status_code == 400 and problem in answer.text, query
        assert 'role="alert"' in answer.text

    # The message, escaped; the viewer sees it but not the admin's buttons.
    shown = viewer.get(f"/deliveries/{first}")
    assert shown.status_code == 200
    assert "invoice.reminder" in shown.text and "No attempt yet." in shown.text
    assert EVIL not in shown.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    assert "Send it again" not in shown.text
    assert "Remove…" not in viewer.get("/endpoints/crm").text
    assert viewer.post(f"/deliveries/{first}/recover").status_code == 403
    assert viewer.get("/deliveries/msg_nothing").status_code == 404
    assert viewer.get("/endpoints/nothing").status_code == 404

    # Requeue one delivery from its page (the endpoint must be enabled).
    assert "Send it again" in browser.get(f"/deliveries/{second}").text
    assert browser.post(f"/deliveries/{second}/recover").status_code == 409
    assert browser.post("/endpoints/ops/enable").status_code == 303
    assert browser.post(f"/deliveries/{second}/recover").status_code == 303
    assert _status(db, second) == "pending"


def test_a_secret_is_shown_only_after_a_recent_password(
    browser: Browser, db: Database, secrets: Vault
) -> None:
    with Receiver() as receiver:
        assert browser.post("/endpoints", {"name": "crm", "url": receiver.url}).status_code == 201
        with db.write() as tx:
            tx.execute(tables.console_sessions.update().values(confirmed_at=time.time() - 901))
        page = browser.get("/endpoints/new", follow=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/confirm?next=%2Fendpoints%2Fnew"
        assert browser.post("/endpoints", {"name": "ops", "url": receiver.url}).status_code == 403
        rotated = browser.post("/endpoints/crm/rotate", {"overlap": "1h"})
        assert rotated.status_code == 403 and "whsec_" not in rotated.text
    with db.read() as tx:
        [only] = endpoints.list_all(tx, secrets)
    assert only.name == "crm" and len(only.secrets) == 1


RECEIVER_HOST = "crm.invalid"  # a name no real resolver knows: only the injected one does


class Resolver:
    """The seam a test hands to the app: `crm.invalid` is 127.0.0.1; it notes each look-up."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host != RECEIVER_HOST:
            raise guard.Blocked(f"cannot resolve {host}: no lookups in tests", kind="dns")
        return ["127.0.0.1"]


@pytest.fixture
def resolver() -> Resolver:
    return Resolver()


@pytest.fixture
def console_app(console_settings: Settings, resolver: Resolver) -> Iterator[ASGIApp]:
    """The app with the resolver above as its outbound seam (the API's and the console's)."""
    app = create_app(console_settings, outbound=guard.Seams(resolver=resolver))
    with TestClient(app, client=(CLIENT_IP, 50000)):
        yield app


def test_the_console_resolves_endpoints_through_the_apps_seams(
    browser: Browser, resolver: Resolver
) -> None:
    with Receiver() as receiver:
        url = receiver.url.replace("127.0.0.1", RECEIVER_HOST)
        made = browser.post("/endpoints", {"name": "crm", "url": url})
        assert made.status_code == 201, made.text
        secret = SECRET.search(made.text)
        assert secret, made.text
        receiver.secrets = [secret.group(1)]
        sent = browser.post("/endpoints/crm/test")
        assert sent.status_code == 303
        assert (
            "Sent a test message to crm: succeeded." in browser.get(sent.headers["location"]).text
        )
        assert len(receiver.received) == 1
    assert resolver.asked == [RECEIVER_HOST, RECEIVER_HOST]  # the URL's check, then the send
