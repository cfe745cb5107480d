"""Hardening, on SQLite and PostgreSQL: client addresses and proxies, refusals that cannot flood
the audit log, flows under a budget, depth limits, the small items, and API keys limited to
connections. (Bounded HTTP against a real `serve`: tests/acceptance/test_hardening.py.)"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from snapshots import (
    audit,
    connections,
    flowfile,
    inbox,
    keys,
    limits,
    mapping,
    nesting,
    stripe_api,
    vault,
)
from snapshots.api import edge
from snapshots.app import create_app
from snapshots.records import kinds
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, sign
from tests.integration.helpers import Key, MakeKey, Stripe, assert_error, bearer, customer

# Client addresses and proxies.


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        pytest.param("203.0.113.9", None, "", "203.0.113.9", id="no-proxy"),
        pytest.param("127.0.0.1", b"198.51.100.7", "", "127.0.0.1", id="untrusted-loopback"),
        pytest.param("10.0.0.2", b"198.51.100.7", "10.0.0.0/8", "198.51.100.7", id="trusted"),
        pytest.param(
            "10.0.0.2", b"198.51.100.7, 10.0.0.9", "10.0.0.0/8", "198.51.100.7", id="two-proxies"
        ),
        pytest.param(
            "10.0.0.2", b"6.6.6.6, 198.51.100.7", "10.0.0.0/8", "198.51.100.7", id="forged-left"
        ),
        pytest.param("10.0.0.2", b"evil", "10.0.0.0/8", "10.0.0.2", id="garbage"),
        pytest.param("10.0.0.2", b"x" * 1_000_000, "10.0.0.0/8", "10.0.0.2", id="a-megabyte"),
        pytest.param("10.0.0.2", b"[2001:db8::1]:443", "10.0.0.0/8", "2001:db8::1", id="v6-port"),
        pytest.param("10.0.0.2", b"198.51.100.7:1234", "10.0.0.0/8", "198.51.100.7", id="port"),
        pytest.param("::ffff:10.0.0.2", b"198.51.100.7", "10.0.0.0/8", "198.51.100.7", id="mapped"),
        pytest.param("testclient", b"198.51.100.7", "10.0.0.0/8", None, id="peer-not-an-ip"),
        pytest.param("testclient", None, "", None, id="no-proxy-peer-not-an-ip"),
        pytest.param("::ffff:203.0.113.9", None, "", "203.0.113.9", id="no-proxy-mapped"),
        pytest.param("[2001:db8::1]:443", None, "", "2001:db8::1", id="no-proxy-v6-port"),
    ],
)
def test_client_addresses(
    peer: str, forwarded: bytes | None, trusted: str, expected: str | None
) -> None:
    assert edge.client_address(peer, forwarded, edge.trusted_networks(trusted)) == expected


def test_a_bad_trusted_proxies_setting_is_one_clear_line() -> None:
    with pytest.raises(Exception) as caught:
        edge.trusted_networks("10.0.0.0/8, not-a-network")
    assert "SNAPSHOTS_TRUSTED_PROXIES: 'not-a-network' is not an address or a CIDR" in str(
        caught.value
    )


def denied_entries(db: Database) -> list[dict[str, Any]]:
    with db.read() as tx:
        page = audit.page(tx, action="auth.bad_key", limit=100)
    return [entry.model_dump(mode="json") for entry in page.data]


def _client(settings: Settings, peer: str) -> TestClient:
    return TestClient(create_app(settings), client=(peer, 50000))


@pytest.fixture
def one_minute(monkeypatch: pytest.MonkeyPatch) -> float:
    """Refusals are counted in the clock's minutes: the clock stands still at the start of one,
    so a test's requests never straddle two (CI once ran 50 of them across a minute's turn)."""
    now = time.time() // audit.DENIED_EVERY * audit.DENIED_EVERY + 1
    clock = SimpleNamespace(time=lambda: now, gmtime=time.gmtime)
    monkeypatch.setattr(limits, "time", clock)
    monkeypatch.setattr(audit, "time", clock)
    return now


@pytest.mark.usefixtures("connection", "one_minute")
def test_forged_forwarded_for_is_ignored_without_a_trusted_proxy(
    settings: Settings, db: Database
) -> None:
    with _client(settings, "127.0.0.1") as client:
        for n in range(50):
            response = client.get(
                "/v1/customers",
                headers={"Authorization": "Bearer nope", "X-Forwarded-For": f"198.51.100.{n}"},
            )
            assert_error(response, 401)
    entries = denied_entries(db)
    assert [e["ip"] for e in entries] == ["127.0.0.1"]  # one entry: one address


@pytest.mark.usefixtures("connection", "one_minute")
def test_a_trusted_proxy_is_believed_and_refusals_are_capped_in_total(
    settings: Settings, db: Database
) -> None:
    trusting = settings.model_copy(update={"trusted_proxies": "127.0.0.0/8"})
    with _client(trusting, "127.0.0.1") as client:
        for n in range(50):
            response = client.get(
                "/v1/customers",
                headers={"Authorization": "Bearer nope", "X-Forwarded-For": f"198.51.100.{n}"},
            )
            assert_error(response, 401)
        garbage = client.get(
            "/v1/customers",
            headers={"Authorization": "Bearer nope", "X-Forwarded-For": "x" * 1_000_000},
        )
        assert_error(garbage, 401)
    entries = denied_entries(db)
    assert len(entries) == audit.DENIED_MAX  # 50 addresses, at most 30 entries a minute
    assert {e["ip"] for e in entries} <= {f"198.51.100.{n}" for n in range(50)}
    assert all(len(e["ip"] or "") <= 45 for e in entries)


def test_the_next_window_says_how_many_refusals_were_left_out(
    db: Database, one_minute: float
) -> None:
    window = int(one_minute) // audit.DENIED_EVERY * audit.DENIED_EVERY
    with db.write() as tx:  # the window before: 45 refusals from as many addresses
        tx.execute(
            tables.rate_limits.insert().values(
                bucket="audit:denied", window_start=window - audit.DENIED_EVERY, count=45
            )
        )
        audit.denied(tx, action="auth.bad_key", actor="anonymous", ip="198.51.100.1", reason="x")
    [entry] = denied_entries(db)
    assert entry["details"] == {"reason": "x", "suppressed": 45 - audit.DENIED_MAX}


# Depth.


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


def test_depth_is_measured_without_exhausting_the_stack() -> None:
    assert not nesting.too_deep(deep(64))
    assert nesting.too_deep(deep(65))
    assert nesting.too_deep(deep(100_000))  # no RecursionError
    assert nesting.cut(deep(70))["a"]["a"] is not None
    cut = nesting.cut(deep(70))
    for _ in range(63):
        cut = cut["a"]
    assert cut == {"a": nesting.CUT}


JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.sampled_from(["", "{}", "[]", "{", "]", "[{}]", "x"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, limit=st.integers(0, 8), indent=st.sampled_from([None, 2]))
def test_the_quick_look_never_passes_over_a_value_too_deep(
    value: Any, limit: int, indent: int | None
) -> None:
    raw = json.dumps(value, indent=indent).encode()
    if nesting.too_deep(value, limit):
        assert nesting.may_be_too_deep(raw, limit)
    assert nesting.too_deep(deep(limit + 1), limit)
    assert nesting.may_be_too_deep(json.dumps(deep(limit + 1), indent=indent).encode(), limit)


def test_a_deeply_nested_webhook_is_refused_naming_the_limit(
    client: TestClient, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = event_factory("customer.created", metadata={}, invoice_settings=deep(300))
    payload = json.dumps(event).encode()
    response = client.post(
        f"/webhooks/stripe/{connection.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload)},
    )
    error = assert_error(response, 400, "too_deep")
    assert "deeper than 64 levels" in error["message"]
    fine = event_factory("customer.created", invoice_settings=deep(20))
    payload = json.dumps(fine).encode()
    ok = client.post(
        f"/webhooks/stripe/{connection.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload)},
    )
    assert ok.status_code == 200, ok.text


def test_no_stored_record_makes_a_read_fail(
    client: TestClient, db: Database, make_key: MakeKey, stripe: Stripe
) -> None:
    """A contact stored before the bound existed, with a value nested 900 levels deep."""
    stripe.send(stripe_event("cus_deep0001"))
    stripe.drain()
    with db.write() as tx:
        tx.execute(
            tables.contacts.update().values(
                custom={"deep": deep(900)}, address={"city": deep(900), "line1": 42}
            )
        )
    key = make_key("contacts.readonly")
    listed = client.get("/v1/customers", headers=key.headers)
    assert listed.status_code == 200, listed.text
    [shown] = listed.json()["data"]
    assert json.dumps(shown).count(nesting.CUT) == 2
    assert shown["address"]["line1"] == "42"
    one = client.get(f"/v1/customers/{shown['id']}", headers=key.headers)
    assert one.status_code == 200 and one.json() == shown


def stripe_event(customer_id: str) -> dict[str, Any]:
    return {
        "id": f"evt_{customer_id}",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": int(time.time()),
        "data": {"object": customer(1, id=customer_id)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created",
    }


@pytest.mark.parametrize("levels", [65, 200, 5_000])
def test_a_deeply_nested_write_is_a_400(client: TestClient, make_key: MakeKey, levels: int) -> None:
    key = make_key("contacts.write")
    nested = '{"a": ' * levels + "1" + "}" * levels
    body = '{"email": "deep@example.com", "custom": {"x": ' + nested + "}}"
    response = client.post(
        "/v1/customers/upsert",
        content=body,
        headers=key.headers | {"Content-Type": "application/json"},
    )
    assert_error(response, 400)


# Flows under a budget.


def flows_problem(text: str) -> str:
    checked = flowfile.check(text, "flows.yaml")
    assert checked.registry is None
    return "; ".join(str(p) for p in checked.problems)


def test_a_big_flows_file_is_refused_at_once() -> None:
    flow = "  - {name: f%d, trigger: ['*'], action: log_event, fields: {email: email}}\n"
    text = "flows:\n" + "".join(flow % n for n in range(20_000))
    started = time.monotonic()
    assert "the file is over 256 KiB" in flows_problem(text)
    assert time.monotonic() - started < 1.0


def test_a_flows_file_too_costly_to_check_is_refused() -> None:
    flow = "  - {name: f%d, trigger: ['*'], filter: \"email != 'x'\", action: log_event}\n"
    text = "flows:\n" + "".join(flow % n for n in range(40))
    problem = flows_problem(text)
    assert "would be tried on over 5,000 sample events" in problem


def test_too_many_flows_and_too_many_nodes_and_too_deep() -> None:
    many = "flows:\n" + "".join(
        f"  - {{name: f{n}, trigger: customer.created, action: upsert_contact}}\n"
        for n in range(flowfile.MAX_FLOWS + 1)
    )
    assert f"over {flowfile.MAX_FLOWS}" in flows_problem(many)
    nodes = "flows: []\nx: [" + ",".join("1" for _ in range(25_000)) + "]\n"
    assert "over 20,000 YAML values" in flows_problem(nodes)
    assert "nests deeper than 64 levels" in flows_problem("flows: " + "[" * 100 + "]" * 100)
    assert "nests deeper than 64 levels" in flows_problem("flows: " + "[" * 5000 + "]" * 5000)


def test_aliases_count_once_and_cannot_multiply_flows() -> None:
    first = "&b {name: x, trigger: customer.created, action: upsert_contact}"
    text = "flows: [" + ", ".join([first] + ["*b"] * 600) + "]\n"
    assert f"over {flowfile.MAX_FLOWS}" in flows_problem(text)


def test_match_on_with_a_list_inside_is_a_problem_not_a_crash() -> None:
    text = (
        "flows:\n  - name: c\n    trigger: customer.created\n    action: upsert_contact\n"
        "    options: {match_on: [[a]]}\n"
    )
    assert "match_on must be a list of stripe_customer_id and/or email" in flows_problem(text)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("template('{id:>100000000}', @)", "width is at most 64"),
        ("template('{id:{name}}', @)", "may not hold another {field}"),
        ("template('{id:.999}', @)", "precision is at most 64"),
    ],
)
def test_templates_may_not_ask_for_memory(expression: str, message: str) -> None:
    text = (
        "flows:\n  - name: c\n    trigger: customer.created\n    action: upsert_contact\n"
        f'    fields: {{stripe_customer_id: id, name: "{expression}"}}\n'
    )
    assert message in flows_problem(text)


def test_a_template_built_from_the_data_fails_the_item_not_the_worker() -> None:
    expression = mapping.Expression("template(name, @)")
    for name in ("{id:>100000000}", "{id:{email}}"):
        with pytest.raises(Exception) as caught:
            expression.evaluate({"id": "x", "name": name, "email": ">9"})
        assert type(caught.value).__name__ == "DeadLetter"


def test_the_api_refuses_costly_flows_with_a_clear_error(
    client: TestClient, make_key: MakeKey
) -> None:
    key = make_key("workflows.write")
    flow = "  - {name: f%d, trigger: ['*'], filter: \"email != 'x'\", action: log_event}\n"
    response = client.post(
        "/v1/flows",
        json={"text": "flows:\n" + "".join(flow % n for n in range(40))},
        headers=key.headers,
    )
    error = assert_error(response, 400, "invalid_flows")
    assert "5,000 sample events" in error["message"]


# The smaller items.


def test_authenticated_and_secret_bearing_answers_are_never_cached(
    client: TestClient, admin: Key
) -> None:
    created = client.post(
        "/v1/api-keys", json={"name": "crm", "scopes": ["contacts.readonly"]}, headers=admin.headers
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    listed = client.get("/v1/customers", headers=admin.headers)
    assert listed.headers["cache-control"] == "no-store"
    refused = client.get("/v1/customers")
    assert refused.headers["cache-control"] == "no-store"


def test_redirects_never_come_from_the_host_header(client: TestClient, admin: Key) -> None:
    response = client.get(
        "/v1/customers/?limit=2",
        headers=admin.headers | {"Host": "evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 307
    assert response.headers["location"] == "/v1/customers?limit=2"
    sneaky = client.get("http://testserver//evil.example/", follow_redirects=False)
    assert sneaky.status_code == 307
    assert sneaky.headers["location"] == "/evil.example"  # a path here, never another host


def test_the_docs_load_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = [part.split('"')[1] for part in page.text.split("src=")[1:]]
    links = [part.split('"')[1] for part in page.text.split("href=")[1:]]
    assert sources and all(s.startswith("/static/") for s in sources + links)
    assert "<script>" not in page.text  # no inline script: the CSP can forbid them
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in sources + links:
        assert client.get(path).status_code == 200, path


def test_a_key_of_the_other_environment_is_refused(client: TestClient, make_key: MakeKey) -> None:
    test_key = make_key("contacts.readonly", env="test")
    error = assert_error(
        client.get("/v1/customers", headers=test_key.headers), 401, "api_key_wrong_environment"
    )
    assert "snp_test_" in error["message"] and "snp_live_" in error["message"]


def test_a_signature_from_the_future_is_refused(
    client: TestClient, connection: connections.Connection, event_factory: EventFactory
) -> None:
    payload = json.dumps(event_factory("customer.created")).encode()
    future = int(time.time()) + 10 * 365 * 86400
    response = client.post(
        f"/webhooks/stripe/{connection.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload, timestamp=future)},
    )
    error = assert_error(response, 400, "timestamp_outside_tolerance")
    assert "in the future" in error["message"]


def test_an_unexpected_error_is_a_json_500_in_one_log_line(
    client: TestClient,
    make_key: MakeKey,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from snapshots.records import reads

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(reads, "page_json", broken)  # the lists' path
    key = make_key("contacts.readonly")
    with caplog.at_level("ERROR"):
        response = client.get("/v1/customers", headers=key.headers)
    error = assert_error(response, 500, "internal_error")
    assert error["type"] == "api_error"
    lines = [r for r in caplog.records if r.name == "snapshots.http"]
    assert len(lines) == 1 and "RuntimeError: a bug" in lines[0].getMessage()
    assert lines[0].exc_info is None  # one line, no traceback at the default level


def test_a_new_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'snapshots.db'}"
    database = Database(url)
    try:
        store.migrate(database)
        files = [p for p in (tmp_path / "fresh").iterdir() if p.name.startswith("snapshots.db")]
        assert {p.name for p in files} >= {"snapshots.db", "snapshots.db-wal"}
        for path in files:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    finally:
        database.dispose()


def test_the_cli_shows_names_without_their_control_characters(db: Database, run: Any) -> None:
    with db.write() as tx:
        keys.create(tx, name="crm\x1b[2J\x1b[31mFORGED ROW\x07", scopes=["contacts.readonly"])
    shown = run("keys", "list")
    assert shown.code == 0
    assert "\x1b" not in shown.out and "\x07" not in shown.out
    assert "FORGED ROW" in shown.out


# API keys limited to connections.


def second_connection(db: Database, settings: Settings) -> connections.Connection:
    account = stripe_api.Account(
        id="acct_other", livemode=False, default_currency="eur", country="DE"
    )
    with db.write() as tx:
        return connections.add(
            tx,
            vault.load(settings),
            account=account,
            secret_key="sk_test_other1234",
            webhook_secrets=["whsec_other_secret_0123456789"],
            name="other",
        )


def limited_key(db: Database, *scopes: str, to: list[str]) -> Key:
    with db.write() as tx:
        made = keys.create(tx, name="client", scopes=list(scopes), connections=to)
    return Key(made.id, made.secret)


def test_a_limited_key_cannot_hold_scopes_that_reach_every_connection(
    db: Database, connection: connections.Connection, client: TestClient, admin: Key
) -> None:
    for scope in ("admin", "workflows.write"):
        with pytest.raises(Exception) as caught, db.write() as tx:
            keys.create(tx, name="x", scopes=[scope], connections=[connection.id])
        assert "reach every connection" in str(caught.value)
    response = client.post(
        "/v1/api-keys",
        json={"name": "x", "scopes": ["contacts.readonly"], "connections": ["conn_nope"]},
        headers=admin.headers,
    )
    assert_error(response, 400, "unknown_connection")


def test_a_limited_key_sees_and_writes_its_connections_alone(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    client: TestClient,
    stripe: Stripe,
    admin: Key,
) -> None:
    other = second_connection(db, settings)
    stripe.send(stripe_event("cus_mine00001"))
    stripe.drain()
    theirs = stripe_event("cus_theirs001")
    payload = json.dumps(theirs).encode()
    sent = client.post(
        f"/webhooks/stripe/{other.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload, "whsec_other_secret_0123456789")},
    )
    assert sent.status_code == 200
    stripe.drain()
    made = client.post(
        "/v1/api-keys",
        json={
            "name": "client",
            "scopes": ["contacts.readonly", "contacts.write", "events.readonly"],
            "connections": [connection.id],
        },
        headers=admin.headers,
    )
    assert made.status_code == 201, made.text
    assert made.json()["connections"] == [connection.id]
    headers = bearer(made.json()["secret"])
    listed = client.get("/v1/customers", headers=headers).json()["data"]
    assert [c["stripe_customer_id"] for c in listed] == ["cus_mine00001"]
    everything = client.get("/v1/customers", headers=admin.headers).json()["data"]
    mine = next(c for c in everything if c["stripe_customer_id"] == "cus_mine00001")
    foreign = next(c for c in everything if c["stripe_customer_id"] == "cus_theirs001")
    assert client.get(f"/v1/customers/{mine['id']}", headers=headers).status_code == 200
    assert_error(client.get(f"/v1/customers/{foreign['id']}", headers=headers), 404)
    assert_error(
        client.patch(f"/v1/customers/{foreign['id']}", json={"name": "x"}, headers=headers), 404
    )
    assert_error(client.delete(f"/v1/customers/{foreign['id']}", headers=headers), 404)
    events = client.get("/v1/events", headers=headers).json()["data"]
    assert {e["connection_id"] for e in events} == {connection.id}
    assert_error(client.get(f"/v1/events/{theirs['id']}", headers=headers), 404)
    # Upsert: the other connection's contact does not match; the new one is the key's.
    upserted = client.post(
        "/v1/customers/upsert",
        json={"stripe_customer_id": "cus_theirs001", "name": "Mine now?"},
        headers=headers,
    )
    assert upserted.status_code == 201, upserted.text
    assert upserted.json()["customer"]["connection_id"] == connection.id
    foreign_after = client.get(f"/v1/customers/{foreign['id']}", headers=admin.headers).json()
    assert foreign_after["name"] == foreign["name"]


def test_a_key_limited_to_several_connections_names_the_one_it_creates_in(
    db: Database, settings: Settings, connection: connections.Connection, client: TestClient
) -> None:
    other = second_connection(db, settings)
    key = limited_key(db, "contacts.write", "saas/location.write", to=[connection.id, other.id])
    missing = client.post("/v1/locations", json={"name": "Shop"}, headers=key.headers)
    assert_error(missing, 400, "connection_required")
    made = client.post(
        "/v1/locations", json={"name": "Shop", "connection_id": other.id}, headers=key.headers
    )
    assert made.status_code == 201 and made.json()["connection_id"] == other.id
    outside = client.post(
        "/v1/locations",
        json={"name": "Shop", "connection_id": "conn_notmine0000000000"},
        headers=key.headers,
    )
    assert_error(outside, 404)


def test_a_limited_key_replays_its_own_events_only(
    db: Database, settings: Settings, connection: connections.Connection, client: TestClient
) -> None:
    other = second_connection(db, settings)
    for conn_id, event_id in ((connection.id, "evt_a"), (other.id, "evt_b")):
        event = {**stripe_event("cus_x"), "id": event_id}
        with db.write() as tx:
            inbox.enqueue_many(
                tx,
                [inbox.Arrival(conn_id, event, json.dumps(event).encode(), "webhook", True)],
            )
            tx.execute(tables.inbox_items.update().values(status="dead", last_error="x"))
    key = limited_key(db, "integrations.write", "events.readonly", to=[connection.id])
    dry = client.post("/v1/events/replay", json={"dry_run": True}, headers=key.headers)
    assert dry.json()["matched"] == 1
    job = client.post("/v1/events/replay", json={}, headers=key.headers).json()
    assert client.get(f"/v1/events/replay/{job['id']}", headers=key.headers).status_code == 200
    wide = limited_key(db, "events.readonly", to=[other.id])
    assert_error(client.get(f"/v1/events/replay/{job['id']}", headers=wide.headers), 404)


# Random nesting and sizes against every write endpoint: only 2xx or 4xx, always JSON.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=40,
)
WRITES = [
    ("POST", "/v1/customers/upsert"),
    ("PATCH", "/v1/customers/{contact}"),
    ("POST", "/v1/locations"),
    ("PATCH", "/v1/locations/{location}"),
    ("PATCH", "/v1/invoices/{invoice}"),
    ("POST", "/v1/flows"),
    ("POST", "/v1/flows/rollback"),
    ("POST", "/v1/events/replay"),
    ("POST", "/v1/api-keys"),
]


@pytest.fixture
def fuzzed(client: TestClient, admin: Key) -> Iterator[tuple[TestClient, Key, dict[str, str]]]:
    contact = client.post(
        "/v1/customers/upsert", json={"email": "f@example.com"}, headers=admin.headers
    ).json()["customer"]["id"]
    location = client.post("/v1/locations", json={"name": "F"}, headers=admin.headers).json()["id"]
    yield client, admin, {"contact": contact, "location": location, "invoice": "inv_nope"}


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_random_nesting_and_sizes_get_only_2xx_or_4xx_json(
    fuzzed: tuple[TestClient, Key, dict[str, str]], method: str, path: str
) -> None:
    client, admin, ids_ = fuzzed

    @hypothesis_settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        body=st.one_of(
            JSON,
            st.dictionaries(
                st.sampled_from(["name", "email", "custom", "metadata", "text", "address", "tags"]),
                JSON,
            ),
            st.integers(min_value=1, max_value=3000).map(deep),
            st.integers(min_value=1, max_value=3000).map(lambda n: {"custom": {"x": deep(n)}}),
        )
    )
    def check(body: Any) -> None:
        try:
            content = json.dumps(body)
        except (ValueError, RecursionError):
            return
        response = client.request(
            method,
            path.format(**ids_),
            content=content,
            headers=admin.headers | {"Content-Type": "application/json"},
        )
        assert response.status_code < 500, (response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/json"), response.text

    check()


def test_kinds_declare_no_column_longer_than_it_stores() -> None:
    """Every text a request can store has a cap (addresses, names)."""
    assert tables.audit_entries.c.ip.type.length == 64  # type: ignore[attr-defined]
    assert tables.api_keys.c.last_used_ip.type.length == 64  # type: ignore[attr-defined]
    assert kinds.CONTACT.table.c.name.type.length == 512  # type: ignore[attr-defined]
