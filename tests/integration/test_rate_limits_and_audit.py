"""Per-key rate limits (in the database, so shared by every `serve` process) and the audit log:
denied requests recorded at most once a minute per kind and address, `GET /v1/audit` and
`snapshots audit` with their filters, and entries no one can edit or delete.

The rate-limit window follows `time.time()` in snapshots.limits, which the tests replace with a
clock they move by hand; the two-process test runs on real time and reads each response's
window from its X-RateLimit-Reset header."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from snapshots import keys, limits
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.acceptance.conftest import PROCESSES, Snapshots, free_port
from tests.conftest import _empty_postgres
from tests.integration.helpers import CLIENT_IP, Cli, Key, assert_error, bearer

T = tables.audit_entries
START = 1_800_000_000.0  # a multiple of 60: the start of a rate-limit window
ENTRY_KEYS = {"id", "at", "actor", "action", "target", "outcome", "details", "request_id", "ip"}


def create(db: Database, **fields: Any) -> keys.ApiKeyCreated:
    """A key made in its own transaction (as the CLI makes one)."""
    with db.write() as tx:
        return keys.create(tx, **fields)


def revoke(db: Database, key_id: str) -> keys.ApiKey:
    with db.write() as tx:
        return keys.revoke(tx, key_id)


class Clock:
    """Stands in for the `time` module in snapshots.limits."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(START)
    monkeypatch.setattr(limits, "time", fake)
    return fake


def app_client(settings: Settings, **changes: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)), client=(CLIENT_IP, 50000))


# Rate limits.


@pytest.fixture
def limited(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    with app_client(settings, api_rate_limit=5, api_rate_window=60) as client:
        yield client


def test_the_sixth_request_in_a_window_is_429(
    db: Database, limited: TestClient, clock: Clock
) -> None:
    first = create(db, name="busy", scopes=["contacts.readonly"]).secret
    second = create(db, name="calm", scopes=["contacts.readonly"]).secret
    for remaining in (4, 3, 2, 1, 0):
        response = limited.get("/v1/customers", headers=bearer(first))
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "5"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert response.headers["x-ratelimit-reset"] == str(int(START) + 60)

    refused = limited.get("/v1/customers", headers=bearer(first))
    error = assert_error(refused, 429, "rate_limited", checks="request_id")
    assert error["type"] == "rate_limit_error"
    assert "5 requests" in error["message"] and "60 s" in error["message"]
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-limit"] == "5"
    assert refused.headers["x-ratelimit-remaining"] == "0"

    # Another key is not affected.
    other = limited.get("/v1/customers", headers=bearer(second))
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "4"

    # Later in the window: still refused, told to wait less (whole seconds, at least 1).
    clock.now = START + 30
    assert limited.get("/v1/customers", headers=bearer(first)).headers["retry-after"] == "30"
    clock.now = START + 59.5
    last = limited.get("/v1/customers", headers=bearer(first))
    assert last.status_code == 429 and last.headers["retry-after"] == "1"

    # The next window starts afresh.
    clock.now = START + 60
    fresh = limited.get("/v1/customers", headers=bearer(first))
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["x-ratelimit-remaining"] == "4"
    assert fresh.headers["x-ratelimit-reset"] == str(int(START) + 120)


def test_every_endpoint_counts_against_the_same_key(
    db: Database, limited: TestClient, clock: Clock
) -> None:
    secret = create(db, name="mixed", scopes=["contacts.readonly", "events.readonly"]).secret
    paths = ["/v1/customers", "/v1/events", "/v1/customers/con_doesnotexist", "/v1/sync-runs"]
    statuses = [limited.get(paths[n % 4], headers=bearer(secret)).status_code for n in range(7)]
    assert statuses == [200, 200, 404, 200, 200, 429, 429]
    # A refused key is not counted against anyone (it has no key to count against).
    assert_error(limited.get("/v1/customers"), 401, "missing_api_key", checks="request_id")


@pytest.mark.acceptance
@PROCESSES
@pytest.mark.postgres
def test_two_serve_processes_share_one_limit(postgres_url: str, tmp_path: Path) -> None:
    """Two real `snapshots serve` processes on one PostgreSQL database, requests alternating
    between them with one key: exactly 10 succeed per window, the rest are 429."""
    _empty_postgres(postgres_url)
    database = Database(postgres_url)
    secret = create(database, name="shared", scopes=["contacts.readonly"]).secret
    database.dispose()
    master_key = Fernet.generate_key().decode()
    env = {
        "SNAPSHOTS_DATABASE_URL": postgres_url,
        "SNAPSHOTS_API_RATE_LIMIT": "10",
        "SNAPSHOTS_API_RATE_WINDOW": "60",
    }
    servers = []
    for name in ("one", "two"):
        home = tmp_path / name
        home.mkdir()
        servers.append(Snapshots(home=home, port=free_port(), master_key=master_key, extra_env=env))
    apis: list[httpx.Client] = []
    try:
        for server in servers:
            server.serve("--no-worker")
        apis = [server.api(secret) for server in servers]
        answers = [apis[n % 2].get("/v1/customers") for n in range(30)]
        try:
            _check_shared_limit(answers)
        except AssertionError as exc:
            logs = "\n".join(f"--- {name}\n{text}" for s in servers for name, text in s.logs())
            raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        for api in apis:
            api.close()
        for server in servers:
            server.stop_all()


def _check_shared_limit(answers: list[httpx.Response]) -> None:
    windows: dict[str, list[httpx.Response]] = {}
    for answer in answers:
        assert answer.status_code in (200, 429), answer.text
        assert answer.headers["x-ratelimit-limit"] == "10"
        windows.setdefault(answer.headers["x-ratelimit-reset"], []).append(answer)
    # 30 requests meet at most two windows (a boundary may fall in the run): in each, the
    # first 10 succeed, counting down, and every later one is refused.
    assert len(windows) <= 2
    for group in windows.values():
        allowed = min(len(group), 10)
        assert [a.status_code for a in group] == [200] * allowed + [429] * (len(group) - allowed)
        remaining = [int(a.headers["x-ratelimit-remaining"]) for a in group[:allowed]]
        assert remaining == list(range(9, 9 - allowed, -1))
        for refused in group[allowed:]:
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "rate_limited"
    assert sum(a.status_code == 429 for a in answers) >= 10
    if len(windows) == 1:
        assert sum(a.status_code == 200 for a in answers) == 10


# Audited refusals.


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """The shared `client` here allows 1000 requests a minute per key."""
    return settings.model_copy(update={"api_rate_limit": 1000, "api_rate_window": 60})


def stored(db: Database, action: str | None = None) -> list[Any]:
    with db.read() as conn:
        stmt = sa.select(T).order_by(T.c.id)
        if action is not None:
            stmt = stmt.where(T.c.action == action)
        return list(conn.execute(stmt).all())


def bad_keys(db: Database) -> list[str | None]:
    """One key of every kind that is refused with 401."""
    revoked = create(db, name="revoked", scopes=["contacts.readonly"])
    revoked_secret = revoked.secret
    revoke(db, revoked.id)
    expired = create(db, name="expired", scopes=["contacts.readonly"])
    expired_secret = expired.secret
    with db.write() as conn:
        conn.execute(
            tables.api_keys.update()
            .where(tables.api_keys.c.id == expired.id)
            .values(expires_at=time.time() - 1)
        )
    good = create(db, name="good", scopes=["contacts.readonly"]).secret
    bad_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    return [None, bad_checksum, keys.generate("live"), revoked_secret, expired_secret]


def test_bad_keys_are_audited_once_a_minute_per_address(
    db: Database, client: TestClient, clock: Clock
) -> None:
    kinds = bad_keys(db)
    answers = []
    for n in range(50):
        secret = kinds[n % len(kinds)]
        answers.append(client.get("/v1/customers", headers=bearer(secret) if secret else {}))
    assert {a.status_code for a in answers} == {401}
    (entry,) = stored(db, "auth.bad_key")
    assert entry.outcome == "denied"
    assert entry.actor == "anonymous"
    assert entry.ip == CLIENT_IP
    assert entry.request_id == answers[0].headers["x-request-id"]
    assert entry.details["reason"] == answers[0].json()["error"]["message"]

    # Another address gets its own entry; the same one again only in the next minute.
    elsewhere = TestClient(client.app, client=("198.51.100.4", 50000))
    for _ in range(5):
        assert elsewhere.get("/v1/customers").status_code == 401
    assert [e.ip for e in stored(db, "auth.bad_key")] == [CLIENT_IP, "198.51.100.4"]
    clock.now = START + 60
    for _ in range(5):
        assert client.get("/v1/customers", headers=bearer(kinds[1] or "")).status_code == 401
    assert [e.ip for e in stored(db, "auth.bad_key")] == [
        CLIENT_IP,
        "198.51.100.4",
        CLIENT_IP,
    ]


def test_missing_scopes_are_audited_once_a_minute_per_address(
    db: Database, client: TestClient, clock: Clock
) -> None:
    key = create(db, name="narrow", scopes=["contacts.readonly"])
    secret = key.secret
    answers = [client.get("/v1/locations", headers=bearer(secret)) for _ in range(25)]
    answers += [client.get("/v1/audit", headers=bearer(secret)) for _ in range(25)]
    assert {a.status_code for a in answers} == {403}
    (entry,) = stored(db, "auth.scope_denied")
    assert entry.outcome == "denied"
    assert entry.actor == f"key:{key.id}"
    assert entry.ip == CLIENT_IP
    assert entry.request_id == answers[0].headers["x-request-id"]
    assert "saas/location.read" in entry.details["reason"]
    # Bad keys are another kind: their first refusal is still recorded.
    assert client.get("/v1/locations").status_code == 401
    assert len(stored(db, "auth.bad_key")) == 1
    clock.now = START + 60
    assert client.get("/v1/locations", headers=bearer(secret)).status_code == 403
    assert len(stored(db, "auth.scope_denied")) == 2


def test_a_malformed_authorization_header_is_audited_too(
    db: Database, client: TestClient, clock: Clock
) -> None:
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Token snp_live_x"):
        response = client.get("/v1/customers", headers={"Authorization": header})
        assert_error(response, 401, "malformed_authorization", checks="request_id")
    recorded = stored(db, "auth.bad_key")
    assert len(recorded) == 1
    assert recorded[0].outcome == "denied" and recorded[0].ip == CLIENT_IP


# GET /v1/audit and `snapshots audit`.


@pytest.fixture
def history(db: Database, client: TestClient, admin: Key) -> dict[str, Any]:
    """Entries of several kinds: key.created x3 (admin, app, rotated), key.rotated, key.revoked,
    connection.created (the connection fixture), and one from two hours ago."""
    app_key = create(db, name="app", scopes=["contacts.readonly"])
    rotated = client.post(
        f"/v1/api-keys/{app_key.id}/rotate", json={"overlap": "1h"}, headers=admin.headers
    )
    assert rotated.status_code == 201, rotated.text
    revoked = client.delete(f"/v1/api-keys/{app_key.id}", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    with db.write() as conn:  # appending is allowed, with any time
        conn.execute(
            T.insert().values(
                at=time.time() - 7200,
                actor="cli:old",
                action="flows.imported",
                outcome="ok",
                details={"version": 1},
            )
        )
    return {"app_key": app_key.id, "rotate": rotated, "revoke": revoked}


def audit_page(client: TestClient, admin: Key, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/audit", params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"data", "has_more"}
    return body


def test_the_audit_log_through_the_api(
    db: Database, client: TestClient, admin: Key, history: dict[str, Any]
) -> None:
    every = audit_page(client, admin, limit=100)["data"]
    assert all(set(e) == ENTRY_KEYS for e in every)
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    actions = [e["action"] for e in every]
    assert sorted(actions) == sorted(
        ["connection.created", "flows.imported", "key.revoked", "key.rotated"] + ["key.created"] * 3
    )
    (revoked,) = [e for e in every if e["action"] == "key.revoked"]
    assert revoked["target"] == history["app_key"]
    assert revoked["actor"] == f"key:{admin.id}"
    assert revoked["request_id"] == history["revoke"].headers["x-request-id"]
    assert revoked["ip"] == CLIENT_IP and revoked["outcome"] == "ok"
    assert revoked["at"].endswith("Z")
    (connection,) = [e for e in every if e["action"] == "connection.created"]
    assert connection["details"]["secret_key"] == "…1234"
    assert "sk_test_fixture1234" not in json.dumps(every)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        pytest.param("1h", 6, id="duration-1h"),
        pytest.param("3h", 7, id="duration-3h"),
        pytest.param("2000-01-01", 7, id="date-past"),
        pytest.param("2999-01-01", 0, id="date-future"),
        pytest.param("2999-01-01T00:00:00Z", 0, id="time-future"),
    ],
)
def test_audit_since(
    client: TestClient, admin: Key, history: dict[str, Any], since: str, expected: int
) -> None:
    assert len(audit_page(client, admin, since=since, limit=100)["data"]) == expected


@pytest.mark.parametrize("since", ["yesterday", "0h", "2024-13-45", "-1h", "1y"])
def test_a_bad_since_is_400(client: TestClient, admin: Key, since: str) -> None:
    response = client.get("/v1/audit", params={"since": since}, headers=admin.headers)
    error = assert_error(response, 400, checks="request_id")
    assert error["message"].startswith("since ") and "--since" not in error["message"]


def test_audit_action_filters(client: TestClient, admin: Key, history: dict[str, Any]) -> None:
    exact = audit_page(client, admin, action="key.created", limit=100)["data"]
    assert len(exact) == 3 and {e["action"] for e in exact} == {"key.created"}
    prefix = audit_page(client, admin, action="key.*", limit=100)["data"]
    assert sorted(e["action"] for e in prefix) == sorted(
        ["key.created"] * 3 + ["key.rotated", "key.revoked"]
    )
    assert audit_page(client, admin, action="key", limit=100)["data"] == []
    assert audit_page(client, admin, action="nothing.*")["data"] == []
    both = audit_page(client, admin, action="key.*", since="1h", limit=100)["data"]
    assert len(both) == 5


def test_audit_pagination(client: TestClient, admin: Key, history: dict[str, Any]) -> None:
    every = [e["id"] for e in audit_page(client, admin, limit=100)["data"]]
    walked: list[int] = []
    after = None
    for _ in range(len(every) + 1):
        params: dict[str, Any] = {"limit": 2}
        if after is not None:
            params["starting_after"] = after
        page = audit_page(client, admin, **params)
        walked += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        assert len(page["data"]) == 2
        after = page["data"][-1]["id"]
    assert walked == every
    assert audit_page(client, admin)["has_more"] is False  # 7 entries, 20 a page
    unknown = client.get("/v1/audit", params={"starting_after": 10**9}, headers=admin.headers)
    assert_error(unknown, 400, "invalid_cursor", checks="request_id")
    for limit in (0, 101):
        too = client.get("/v1/audit", params={"limit": limit}, headers=admin.headers)
        assert_error(too, 400, "parameter_invalid", checks="request_id")


def test_an_odd_action_filter_is_not_a_500(
    db: Database, client: TestClient, admin: Key, request: pytest.FixtureRequest
) -> None:
    response = client.get("/v1/audit", params={"action": "key.\x00"}, headers=admin.headers)
    assert response.status_code in (200, 400), response.text


def test_snapshots_audit(
    client: TestClient,
    admin: Key,
    history: dict[str, Any],
    run: Cli,
) -> None:
    code, out, err = run("audit", "--json", "--since", "1h")
    assert code == 0, err
    shown = json.loads(out)
    assert shown == audit_page(client, admin, since="1h", limit=100)["data"]
    assert len(shown) == 6 and "flows.imported" not in {e["action"] for e in shown}
    code, out, err = run("audit", "--json", "--action", "key.*")
    assert code == 0, err
    assert {e["action"] for e in json.loads(out)} == {"key.created", "key.rotated", "key.revoked"}
    code, out, err = run("audit", "--since", "3h")
    assert code == 0, err
    assert "key.revoked" in out and "flows.imported" in out and CLIENT_IP in out
    code, out, err = run("audit", "--since", "soon")
    assert code == 2 and out == "" and err.startswith("error: --since 'soon'")


# Append-only.


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE audit_entries SET actor = 'someone else'", id="update"),
        pytest.param("UPDATE audit_entries SET outcome = 'ok' WHERE id = {id}", id="update-one"),
        pytest.param("DELETE FROM audit_entries", id="delete"),
        pytest.param("DELETE FROM audit_entries WHERE id = {id}", id="delete-one"),
    ],
)
def test_the_database_refuses_to_edit_or_delete_an_entry(
    db: Database, admin: Key, statement: str
) -> None:
    before = [tuple(r) for r in stored(db)]
    assert len(before) == 1  # the admin key's creation
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.write() as conn:
        conn.execute(sa.text(statement.format(id=before[0][0])))
    assert [tuple(r) for r in stored(db)] == before
    with db.write() as conn:  # appending still works
        conn.execute(T.insert().values(at=time.time(), actor="t", action="t", details={}))
    assert len(stored(db)) == 2


def test_no_route_edits_or_deletes_audit_entries(
    client: TestClient, admin: Key, history: dict[str, Any]
) -> None:
    document = client.get("/openapi.json").json()
    audit_paths = {p: set(ops) for p, ops in document["paths"].items() if "audit" in p}
    assert audit_paths == {"/v1/audit": {"get"}}
    entry = audit_page(client, admin, limit=1)["data"][0]
    for method, path in (
        ("DELETE", "/v1/audit"),
        ("PATCH", "/v1/audit"),
        ("PUT", "/v1/audit"),
        ("POST", "/v1/audit"),
        ("DELETE", f"/v1/audit/{entry['id']}"),
        ("PATCH", f"/v1/audit/{entry['id']}"),
    ):
        response = client.request(method, path, headers=admin.headers, json={})
        assert response.status_code in (404, 405), (method, path, response.status_code)
    assert audit_page(client, admin, limit=1)["data"][0] == entry
