"""Outbound deliveries against real HTTP receivers on 127.0.0.1 (each verifying signatures with
the `standardwebhooks` package), sent by the worker's dispatcher in this process, on SQLite and
PostgreSQL. The client's connector refuses (fails the test) any address outside loopback, so
nothing here can connect anywhere else. Processes (a worker SIGKILLed mid-send) are in
tests/acceptance/test_outbound.py."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from snapshots import errors, vault
from snapshots.outbound import delivery, endpoints, guard
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.acceptance  # HTTP servers in threads

LOOPBACK = guard.Allow.parse("127.0.0.1/32")
NONE = guard.Allow()


def loopback_only() -> httpx.BaseTransport:
    """The connector under test: any address outside 127.0.0.0/8 and ::1 fails the test
    instead of being connected to."""
    real = httpx.HTTPTransport(retries=0)

    class Checked(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            address = ipaddress.ip_address(request.url.host)
            if not address.is_loopback:
                pytest.fail(f"the guard let a connection to {address} through")
            return real.handle_request(request)

        def close(self) -> None:
            real.close()

    return Checked()


@pytest.fixture
def out_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "outbound_allow": "127.0.0.1/32",
            "outbound_retry_schedule": "0s,1s,1s,1s,1s",
            "outbound_retry_jitter": 0.0,
            "outbound_timeout": 1.0,
            "worker_idle": 0.05,
        }
    )


@pytest.fixture
def keys_vault(out_settings: Settings) -> vault.Vault:
    return vault.load(out_settings)


Make = Callable[..., Any]


@pytest.fixture
def make_dispatcher(
    db: Database, out_settings: Settings, keys_vault: vault.Vault
) -> Iterator[Callable[..., delivery.Dispatcher]]:
    made: list[delivery.Dispatcher] = []

    def make(
        resolver: guard.Resolver = guard.system_resolver, **changes: Any
    ) -> delivery.Dispatcher:
        settings = out_settings.model_copy(update=changes)
        client = guard.client(
            allow=guard.Allow.parse(settings.outbound_allow),
            timeout=settings.outbound_timeout,
            resolver=resolver,
            connector=loopback_only,
        )
        dispatcher = delivery.Dispatcher(
            db, keys_vault, settings, name=f"test-{len(made)}", client=client
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.client.close()


def create(db: Database, v: vault.Vault, name: str, url: str, **kw: Any) -> Any:
    return endpoints.create(db, v, name=name, url=url, allow=kw.pop("allow", LOOPBACK), **kw)


def message(db: Database, endpoint: str, event_id: str, data: Any = None) -> str:
    with db.write() as tx:
        return delivery.enqueue(
            tx,
            endpoint=endpoint,
            connection_id="conn_test",
            event_id=event_id,
            flow="tests",
            step=0,
            message_type="invoice.payment_failed",
            data=data if data is not None else {"event": event_id},
        )


def shown(db: Database, delivery_id: str) -> delivery.DeliveryDetail:
    with db.read() as tx:
        return delivery.get(tx, delivery_id)


def until(check: Callable[[], bool], step: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        step()
        time.sleep(0.05)


def test_a_receiver_failing_n_times_gets_n_plus_1_attempts_with_one_webhook_id(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as receiver:
        made = create(db, keys_vault, "crm", receiver.url)
        receiver.secrets = [made.secret]
        receiver.script(500, 503, Reply(429, {"Retry-After": "1"}))
        sent = message(db, "crm", "evt_1", {"amount": 1200, "name": "Zoë <b>"})
        dispatcher = make_dispatcher()
        until(lambda: shown(db, sent).status == "succeeded", dispatcher.step)
    assert len(receiver.received) == 4
    assert {r.id for r in receiver.received} == {sent}
    stamps = [r.timestamp for r in receiver.received]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
    assert all(r.verified_by == [0] for r in receiver.received)
    assert len({r.body for r in receiver.received}) == 1  # resent byte for byte
    body = receiver.received[0].json()
    assert body["type"] == "invoice.payment_failed"
    assert body["data"] == {"amount": 1200, "name": "Zoë <b>"}
    assert body["timestamp"].endswith("Z")
    found = shown(db, sent)
    assert [a.status_code for a in found.attempt_log] == [500, 503, 429, 200]
    assert [a.error_kind for a in found.attempt_log] == ["http", "http", "http", None]
    assert all(a.address == "127.0.0.1" for a in found.attempt_log)
    assert found.attempts == 4 and found.succeeded_at is not None


def test_a_slow_receiver_times_out_and_is_retried_while_another_keeps_flowing(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as slow, Receiver() as fast:
        create(db, keys_vault, "slow", slow.url)
        create(db, keys_vault, "fast", fast.url)
        slow.default = Reply(delay=3.0)
        stuck = message(db, "slow", "evt_slow")
        quick = [message(db, "fast", f"evt_fast_{n}") for n in range(5)]
        dispatcher = make_dispatcher()
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,))
        thread.start()
        try:
            until(lambda: all(shown(db, q).status == "succeeded" for q in quick), lambda: None)
            until(lambda: shown(db, stuck).attempts >= 2, lambda: None)
            slow.default = Reply()
            until(lambda: shown(db, stuck).status == "succeeded", lambda: None)
        finally:
            stop.set()
            thread.join(20)
    kinds = [a.error_kind for a in shown(db, stuck).attempt_log]
    assert kinds[0] == "timeout" and kinds[-1] is None
    assert len(fast.received) == 5


def test_a_redirect_is_not_followed(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as redirecting, Receiver() as elsewhere:
        create(db, keys_vault, "moved", redirecting.url)
        redirecting.default = Reply(302, {"Location": elsewhere.url})
        sent = message(db, "moved", "evt_r")
        make_dispatcher().step()
    found = shown(db, sent)
    assert found.status == "failed"
    attempt = found.attempt_log[0]
    assert (attempt.status_code, attempt.error_kind) == (302, "redirect")
    assert elsewhere.url in (attempt.error or "")
    assert elsewhere.received == []


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(["10.0.0.5"], id="private"),
        pytest.param(["169.254.169.254"], id="metadata"),
        pytest.param(["::ffff:127.0.0.1"], id="mapped-loopback"),
        pytest.param(["0.0.0.0"], id="unspecified"),
        pytest.param(["::1"], id="loopback-v6"),
        pytest.param(["93.184.216.34", "127.0.0.1"], id="public-then-loopback"),
    ],
)
def test_names_resolving_to_refused_addresses_are_refused_at_create_and_at_send(
    db: Database,
    keys_vault: vault.Vault,
    make_dispatcher: Make,
    answers: list[str],
) -> None:
    def resolve(host: str, port: int) -> list[str]:
        return answers if host == "hooks.example" else ["127.0.0.1"]

    with pytest.raises(guard.Blocked):
        create(db, keys_vault, "bad", "http://hooks.example/in", resolver=resolve, allow=NONE)
    # Allowed at create (it resolved to loopback then), refused at send (it does not now).
    with Receiver() as receiver:
        create(
            db,
            keys_vault,
            "later",
            f"http://rebinding.example:{receiver.port}/in",
            resolver=lambda h, p: ["127.0.0.1"],
        )
        sent = message(db, "later", "evt_x")
        make_dispatcher(resolver=lambda h, p: answers, outbound_allow="").step()
    found = shown(db, sent)
    assert found.status == "failed"
    assert found.attempt_log[0].error_kind == "blocked"
    assert receiver.received == []


def test_allowed_names_and_networks_pass(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as receiver:
        url = f"http://internal.example:{receiver.port}/in"
        local = lambda h, p: ["127.0.0.1"]  # noqa: E731
        allow = guard.Allow.parse("internal.example")
        create(db, keys_vault, "internal", url, resolver=local, allow=allow)
        sent = message(db, "internal", "evt_i")
        make_dispatcher(resolver=local, outbound_allow="internal.example").step()
    assert shown(db, sent).status == "succeeded"
    assert receiver.received[0].headers["host"] == f"internal.example:{receiver.port}"


def test_a_rotation_signs_with_both_secrets_during_the_overlap_then_the_new_one(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as receiver:
        old = create(db, keys_vault, "crm", receiver.url).secret
        with db.write() as tx:
            new = endpoints.rotate_secret(tx, keys_vault, "crm", overlap=2.0).secret
        receiver.secrets = [old, new]
        dispatcher = make_dispatcher()
        message(db, "crm", "evt_during")
        dispatcher.step()
        time.sleep(2.1)
        message(db, "crm", "evt_after")
        dispatcher.step()
    during, after = receiver.received
    assert len(during.signatures) == 2 and sorted(during.verified_by) == [0, 1]
    assert len(after.signatures) == 1 and after.verified_by == [1]


def test_a_410_disables_holds_new_deliveries_and_recover_delivers_each_once(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as receiver:
        create(db, keys_vault, "gone", receiver.url)
        receiver.script(410)
        first = message(db, "gone", "evt_1")
        dispatcher = make_dispatcher()
        dispatcher.step()
        with db.read() as tx:
            assert endpoints.get(tx, keys_vault, "gone").status == "disabled"
            entries = tx.execute(
                sa.select(tables.audit_entries.c.action, tables.audit_entries.c.actor)
            ).all()
        assert ("endpoint.disabled", "worker") in [tuple(e) for e in entries]
        second = message(db, "gone", "evt_2")
        assert shown(db, first).status == "held"
        assert shown(db, second).status == "held"
        dispatcher.step()
        assert len(receiver.received) == 1  # nothing goes out while it is disabled
        with db.write() as tx, pytest.raises(errors.Conflict, match="enable"):
            delivery.recover(tx, keys_vault, "gone", since=0)
        with db.write() as tx:
            endpoints.enable(tx, keys_vault, "gone")
            assert delivery.recover(tx, keys_vault, "gone", since=0) == 2
        dispatcher.step()
        dispatcher.step()
    ids = [r.id for r in receiver.received]
    assert ids[0] == first
    assert sorted(ids[1:]) == sorted([first, second])  # each once more (sent concurrently)
    assert shown(db, first).status == shown(db, second).status == "succeeded"


def test_no_success_for_5_days_and_10_failures_disables_the_endpoint(
    db: Database, keys_vault: vault.Vault, make_dispatcher: Make
) -> None:
    with Receiver() as receiver:
        made = create(db, keys_vault, "flaky", receiver.url)
        receiver.default = Reply(500)
        t = tables.webhook_endpoints
        with db.write() as tx:
            tx.execute(
                t.update()
                .where(t.c.id == made.id)
                .values(failures=8, failing_since=time.time() - 6 * 86400)
            )
        dispatcher = make_dispatcher()
        message(db, "flaky", "evt_a")
        dispatcher.step()
        with db.read() as tx:
            assert endpoints.get(tx, keys_vault, "flaky").status == "enabled"  # 9 failures
        message(db, "flaky", "evt_b")
        dispatcher.step()
        with db.read() as tx:
            found = endpoints.get(tx, keys_vault, "flaky")
    assert found.status == "disabled"
    assert "5 days" in (found.disabled_reason or "")


def test_the_same_key_makes_one_message(db: Database, keys_vault: vault.Vault) -> None:
    create(db, keys_vault, "crm", "http://127.0.0.1:9/")
    first = message(db, "crm", "evt_same")
    again = message(db, "crm", "evt_same")
    assert first == again
    with db.read() as tx:
        assert tx.execute(sa.select(sa.func.count()).select_from(tables.deliveries)).scalar() == 1


def test_a_message_over_256_kib_is_refused(db: Database, keys_vault: vault.Vault) -> None:
    create(db, keys_vault, "crm", "http://127.0.0.1:9/")
    with pytest.raises(errors.DeadLetter, match="256 KiB"):
        message(db, "crm", "evt_big", {"blob": "x" * (256 * 1024)})


def test_endpoints_test_sends_now_and_shows_the_attempt(
    db: Database, keys_vault: vault.Vault, out_settings: Settings
) -> None:
    with Receiver() as receiver:
        made = create(db, keys_vault, "crm", receiver.url)
        receiver.secrets = [made.secret]
        receiver.default = Reply(200, body=b"thanks")
        with guard.client(allow=LOOPBACK, timeout=2.0, connector=loopback_only) as client:
            sent = delivery.send_test(
                db, keys_vault, client, "crm", schedule=delivery.Schedule.of(out_settings)
            )
    assert sent.status == "succeeded" and sent.type == "snapshots.test"
    assert sent.attempt_log[0].response == "thanks"
    assert receiver.received[0].verified_by == [0]


def test_removing_an_endpoint_with_undelivered_messages_needs_force(
    db: Database, keys_vault: vault.Vault
) -> None:
    create(db, keys_vault, "crm", "http://127.0.0.1:9/")
    message(db, "crm", "evt_1")
    with db.write() as tx, pytest.raises(errors.Conflict, match="force"):
        endpoints.remove(tx, keys_vault, "crm")
    with db.write() as tx:
        endpoints.remove(tx, keys_vault, "crm", force=True)
    with db.read() as tx:
        assert tx.execute(sa.select(sa.func.count()).select_from(tables.deliveries)).scalar() == 0


def test_metrics_figures(db: Database, keys_vault: vault.Vault, make_dispatcher: Make) -> None:
    with Receiver() as receiver:
        create(db, keys_vault, "crm", receiver.url)
        receiver.script(500)
        message(db, "crm", "evt_1")
        make_dispatcher().step()
    with db.read() as tx:
        found = delivery.figures(tx)
    assert found.attempts == {("failure", "http"): 1}
    assert found.statuses["failed"] == 1 and found.endpoints_disabled == 0
