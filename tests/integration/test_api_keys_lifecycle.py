"""API keys from birth to revocation, on SQLite and PostgreSQL: their shape and checksum, what is
stored (a hash only), last use, `/v1/api-keys` (create, list, get, rotate, revoke) and
`snapshots keys rotate`, the overlap of a rotation, and the audit entries of each change.

Time passing is simulated by rewriting `expires_at` / `last_used_at` in the database."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import audit, errors, ids, keys
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.integration.helpers import CLIENT_IP, Cli, Key, assert_error, bearer, settle_uses

SHAPE = re.compile(r"^snp_(live|test)_[0-9A-Za-z]{32}[0-9A-Za-z]{6}$")
ENV_PREFIX = {"live": "snp_live_", "test": "snp_test_"}
DAY = 86400.0


def create(db: Database, **fields: Any) -> keys.ApiKeyCreated:
    """A key made in its own transaction (as the CLI makes one)."""
    with db.write() as tx:
        return keys.create(tx, **fields)


def list_all(db: Database) -> list[keys.ApiKey]:
    with db.read() as tx:
        return keys.list_all(tx)


def revoke(db: Database, key_id: str) -> keys.ApiKey:
    with db.write() as tx:
        return keys.revoke(tx, key_id)


def verify(db: Database, presented: str | None, *, ip: str | None = None) -> keys.ApiKey:
    """What a request does with a bearer key: verify it (a read), then note its use (written
    at once here, as the app's background flush writes it)."""
    with db.read() as tx:
        found = keys.verify(tx, presented)
    uses = keys.Uses()
    uses.note(found, ip=ip)
    with db.write() as tx:
        uses.flush(tx)
    return found


def when(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement `db`'s engine runs inside the block."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)


def touching(seen: list[str], table: str) -> list[str]:
    return [s for s in seen if re.search(rf"\b{table}\b", s)]


def expire_now(db: Database, key_id: str) -> None:
    """As if the key's overlap or lifetime ended a second ago."""
    with db.write() as conn:
        conn.execute(
            tables.api_keys.update()
            .where(tables.api_keys.c.id == key_id)
            .values(expires_at=time.time() - 1)
        )


def row(db: Database, key_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.id == key_id)).one()


def entries(db: Database, action: str | None = None) -> list[dict[str, Any]]:
    with db.read() as tx:
        found = audit.page(tx, action=action, limit=100).data
    return [e.model_dump(mode="json") for e in reversed(found)]  # oldest first


def works(client: TestClient, secret: str) -> bool:
    """True when the key reads contacts; a refused key must say why (401 with a code)."""
    response = client.get("/v1/customers", headers=bearer(secret))
    if response.status_code == 200:
        return True
    assert response.status_code == 401, response.text
    return False


# The key's shape and checksum.


@pytest.mark.parametrize("env", ["live", "test"])
def test_a_key_has_its_environment_prefix_and_at_least_128_random_bits(
    settings: Settings, db: Database, env: str
) -> None:
    app_settings = settings.model_copy(update={"key_env": env})
    admin_secret = create(db, name="admin", scopes=["admin"], env=env).secret
    with TestClient(create_app(app_settings), client=(CLIENT_IP, 50000)) as client:
        created = client.post(
            "/v1/api-keys",
            json={"name": "shape", "scopes": ["contacts.readonly"]},
            headers=bearer(admin_secret),
        )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert SHAPE.match(secret) and secret.startswith(ENV_PREFIX[env]), secret
    # 32 base62 characters of randomness (the last 6 are the checksum): ~190 bits.
    random_part = secret[len(ENV_PREFIX[env]) : -keys.CHECKSUM_LENGTH]
    assert len(random_part) * math.log2(62) >= 128
    generated = [keys.generate(env) for _ in range(300)]
    assert len(set(generated)) == len(generated)
    assert all(SHAPE.match(k) and k.startswith(ENV_PREFIX[env]) for k in generated)
    randoms = [k[len(ENV_PREFIX[env]) : -keys.CHECKSUM_LENGTH] for k in generated]
    # The random characters really span base62, in every position.
    assert len(set("".join(randoms))) >= 60
    for position in range(len(random_part)):
        assert len({r[position] for r in randoms}) >= 30, position


def test_one_changed_character_is_refused_without_a_database_lookup(
    db: Database, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = create(db, name="checked", scopes=["contacts.readonly"]).secret
    changed_keys = []
    for position, char in enumerate(secret):
        for replacement in {ids.ALPHABET[(ids.ALPHABET.find(char) + 1) % 62], "_", "0", "z"}:
            if replacement != char:
                changed_keys.append(secret[:position] + replacement + secret[position + 1 :])
    assert all(not keys.well_formed(k) for k in changed_keys)

    def no_database(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a malformed key reached the database")

    class NoDatabase:
        """A transaction whose every use fails the test."""

        def __getattr__(self, name: str) -> Any:
            return no_database

    with monkeypatch.context() as patched:
        patched.setattr(db, "read", no_database)
        patched.setattr(db, "write", no_database)
        for changed in changed_keys:
            with pytest.raises(errors.Unauthorized) as refused:
                keys.verify(NoDatabase(), changed)  # type: ignore[arg-type]
            assert refused.value.code == "invalid_api_key"
            assert "checksum" in refused.value.message

    # Through the API: the refusal is audited, but api_keys is never read.
    app_db: Database = client.app.state.snapshots.db  # type: ignore[attr-defined]
    changed = secret[:20] + ("A" if secret[20] != "A" else "B") + secret[21:]
    with statements(app_db) as seen:
        response = client.get("/v1/customers", headers=bearer(changed))
    assert_error(response, 401, "invalid_api_key", checks="request_id")
    assert touching(seen, "api_keys") == []
    with statements(app_db) as seen:
        assert client.get("/v1/customers", headers=bearer(secret)).status_code == 200
    assert touching(seen, "api_keys")  # the listener does see the lookup of a good key


def test_only_a_hash_of_a_key_is_stored(
    db: Database, client: TestClient, admin: Key, run: Cli
) -> None:
    created = client.post(
        "/v1/api-keys",
        json={"name": "stored", "scopes": ["contacts.readonly"], "expires_in": "30d"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    first = created.json()
    rotated = client.post(
        f"/v1/api-keys/{first['id']}/rotate", json={"overlap": "1h"}, headers=admin.headers
    )
    assert rotated.status_code == 201, rotated.text
    second = rotated.json()
    by_cli = run("keys", "rotate", second["id"], "--overlap", "0s", "--json").json()
    secrets = [first["secret"], second["secret"], by_cli["secret"], admin.secret]
    # The first is in its hour of overlap; the second stopped at once.
    assert [works(client, s) for s in secrets[:3]] == [True, False, True]
    assert client.delete(f"/v1/api-keys/{by_cli['id']}", headers=admin.headers).status_code == 200

    with db.read() as conn:
        stored = {r.id: r.key_hash for r in conn.execute(sa.select(tables.api_keys)).all()}
        dump = "\n".join(
            repr(dict(r._mapping))
            for table in tables.metadata.sorted_tables
            for r in conn.execute(sa.select(table)).all()
        )
    for key_id, secret in zip(
        [first["id"], second["id"], by_cli["id"], admin.id], secrets, strict=True
    ):
        assert stored[key_id] == hashlib.sha256(secret.encode()).hexdigest()
        random_part = secret[9:]
        # No 8 characters of the secret beyond the stored prefix (4) and last 4 characters.
        for start in range(len(random_part) - 8 + 1):
            assert random_part[start : start + 8] not in dump, (key_id, start)
    # Nor does any read of keys or of the audit log show one.
    listed = client.get("/v1/api-keys", headers=admin.headers).text
    logged = client.get("/v1/audit", params={"limit": 100}, headers=admin.headers).text
    for secret in secrets:
        assert secret not in listed and secret not in logged


def test_the_final_comparison_is_constant_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = create(db, name="compared", scopes=["contacts.readonly"])
    secret = key.secret
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    assert verify(db, secret).id == key.id
    assert (row(db, key.id).key_hash, keys.digest(secret)) in calls
    with pytest.raises(errors.Unauthorized, match="not known"):
        verify(db, keys.generate("live"))


# Last use.


def test_last_use_is_written_at_most_once_a_minute(
    db: Database, client: TestClient, admin: Key
) -> None:
    key = create(db, name="used", scopes=["contacts.readonly"])
    secret = key.secret
    assert (row(db, key.id).last_used_at, row(db, key.id).last_used_ip) == (None, None)
    before = time.time()
    assert works(client, secret)
    settle_uses(client)
    first = row(db, key.id)
    assert first.last_used_ip == CLIENT_IP
    assert before - 1 <= first.last_used_at <= time.time() + 1

    # Within the minute, from another address: no write at all.
    other = TestClient(client.app, client=("192.0.2.7", 4321))
    app_db: Database = client.app.state.snapshots.db  # type: ignore[attr-defined]
    with statements(app_db) as seen:
        assert other.get("/v1/customers", headers=bearer(secret)).status_code == 200
        settle_uses(client)
    assert [s for s in touching(seen, "api_keys") if s.lstrip().upper().startswith("UPDATE")] == []
    again = row(db, key.id)
    assert (again.last_used_at, again.last_used_ip) == (first.last_used_at, CLIENT_IP)

    # A minute later, the next use is written, with its address.
    with db.write() as conn:
        conn.execute(
            tables.api_keys.update()
            .where(tables.api_keys.c.id == key.id)
            .values(last_used_at=first.last_used_at - 61)
        )
    assert other.get("/v1/customers", headers=bearer(secret)).status_code == 200
    settle_uses(client)
    later = row(db, key.id)
    assert later.last_used_ip == "192.0.2.7"
    assert later.last_used_at >= first.last_used_at
    shown = client.get(f"/v1/api-keys/{key.id}", headers=admin.headers).json()
    assert shown["last_used_ip"] == "192.0.2.7"
    assert when(shown["last_used_at"]) == pytest.approx(later.last_used_at, abs=1e-3)


# /v1/api-keys


def test_create_list_get_revoke_through_the_api(
    db: Database, client: TestClient, admin: Key
) -> None:
    before = time.time()
    created = client.post(
        "/v1/api-keys",
        json={
            "name": "reporting",
            "scopes": ["invoices.readonly", "contacts.readonly"],
            "expires_in": "90d",
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert SHAPE.match(secret) and secret.startswith("snp_live_")
    assert body["object"] == "api_key" and body["id"].startswith("key_")
    assert body["name"] == "reporting" and body["status"] == "active"
    assert body["scopes"] == ["contacts.readonly", "invoices.readonly"]
    assert body["key"] == f"{secret[:13]}…{secret[-4:]}"
    assert before + 90 * DAY - 5 <= when(body["expires_at"]) <= time.time() + 90 * DAY + 5
    assert body["revoked_at"] is None and body["last_used_at"] is None
    assert works(client, secret)
    assert_error(
        client.get("/v1/locations", headers=bearer(secret)),
        403,
        "missing_scope",
        checks="request_id",
    )
    settle_uses(client)

    listed = client.get("/v1/api-keys", headers=admin.headers)
    assert listed.status_code == 200
    found = {k["id"]: k for k in listed.json()["data"]}
    assert set(found) == {admin.id, body["id"]}
    shown = client.get(f"/v1/api-keys/{body['id']}", headers=admin.headers)
    assert shown.status_code == 200
    for answer, key in ((listed, found[body["id"]]), (shown, shown.json())):
        assert secret not in answer.text and "secret" not in key
        assert key["key"] == body["key"] and key["status"] == "active"
        assert key["last_used_ip"] == CLIENT_IP  # the request above used it

    revoked = client.delete(f"/v1/api-keys/{body['id']}", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    assert secret not in revoked.text
    error = assert_error(
        client.get("/v1/customers", headers=bearer(secret)), 401, checks="request_id"
    )
    assert error["code"] == "api_key_revoked" and "revoked" in error["message"]
    again = client.delete(f"/v1/api-keys/{body['id']}", headers=admin.headers)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]

    # Each change is audited once, by the admin key, with the request's id and address.
    for action, response in (("key.created", created), ("key.revoked", revoked)):
        (entry,) = [e for e in entries(db, action) if e["target"] == body["id"]]
        assert entry["actor"] == f"key:{admin.id}"
        assert entry["outcome"] == "ok"
        assert entry["request_id"] == response.headers["x-request-id"]
        assert entry["ip"] == CLIENT_IP
    (created_entry,) = [e for e in entries(db, "key.created") if e["target"] == body["id"]]
    assert created_entry["details"]["key"] == body["key"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param({"scopes": ["admin"]}, "parameter_invalid", id="no-name"),
        pytest.param({"name": "x", "scopes": []}, "parameter_invalid", id="no-scopes"),
        pytest.param({"name": "x", "scopes": ["root"]}, "unknown_scope", id="unknown-scope"),
        pytest.param(
            {"name": "x", "scopes": ["admin"], "expires_in": "soon"}, None, id="bad-expiry"
        ),
        pytest.param({"name": "x", "scopes": ["admin"], "owner": "me"}, None, id="extra-field"),
        pytest.param({"name": " ", "scopes": ["admin"]}, None, id="blank-name"),
    ],
)
def test_a_bad_create_is_400_and_makes_nothing(
    db: Database, client: TestClient, admin: Key, payload: dict[str, Any], code: str | None
) -> None:
    response = client.post("/v1/api-keys", json=payload, headers=admin.headers)
    assert_error(response, 400, code, checks="request_id")
    assert [k.id for k in list_all(db)] == [admin.id]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/api-keys/key_doesnotexist00000"),
        ("DELETE", "/v1/api-keys/key_doesnotexist00000"),
        ("POST", "/v1/api-keys/key_doesnotexist00000/rotate"),
    ],
)
def test_an_unknown_key_is_404(client: TestClient, admin: Key, method: str, path: str) -> None:
    assert_error(
        client.request(method, path, headers=admin.headers),
        404,
        "resource_missing",
        checks="request_id",
    )


def test_an_odd_key_id_is_404_not_500(
    db: Database, client: TestClient, admin: Key, request: pytest.FixtureRequest
) -> None:
    for method, path in (
        ("GET", "/v1/api-keys/%00"),
        ("POST", "/v1/api-keys/%00/rotate"),
        ("DELETE", "/v1/api-keys/%00"),
    ):
        response = client.request(method, path, headers=admin.headers)
        assert response.status_code == 404, (method, response.status_code)


# Rotation.


def test_rotation_through_the_api_keeps_the_old_key_for_the_overlap(
    db: Database, client: TestClient, admin: Key
) -> None:
    old = create(db, name="app", scopes=["contacts.readonly", "events.readonly"])
    old_secret = old.secret
    before = time.time()
    response = client.post(
        f"/v1/api-keys/{old.id}/rotate", json={"overlap": "24h"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    new_secret = body["secret"]
    assert SHAPE.match(new_secret) and new_secret != old_secret
    assert body["id"] != old.id and body["rotated_from"] == old.id
    assert body["name"] == "app" and body["scopes"] == ["contacts.readonly", "events.readonly"]
    assert body["expires_at"] is None  # the old key had no expiry
    previous = body["previous"]
    assert previous["id"] == old.id and previous["status"] == "active"
    assert "secret" not in previous and old_secret not in response.text
    assert before + DAY - 5 <= when(previous["expires_at"]) <= time.time() + DAY + 5
    shown = client.get(f"/v1/api-keys/{body['id']}", headers=admin.headers)
    assert new_secret not in shown.text and "secret" not in shown.json()

    # During the overlap both keys work.
    assert works(client, old_secret) and works(client, new_secret)
    # After it, only the new one.
    expire_now(db, old.id)
    error = assert_error(
        client.get("/v1/customers", headers=bearer(old_secret)), 401, checks="request_id"
    )
    assert error["code"] == "api_key_expired" and "expired" in error["message"]
    assert works(client, new_secret)
    assert client.get(f"/v1/api-keys/{old.id}", headers=admin.headers).json()["status"] == (
        "expired"
    )

    # Audited: the new key's creation and the rotation, in the same request.
    (rotated,) = entries(db, "key.rotated")
    assert rotated["target"] == old.id
    assert rotated["details"]["new_key"] == body["id"]
    assert rotated["details"]["overlap_seconds"] == DAY
    (made,) = [e for e in entries(db, "key.created") if e["target"] == body["id"]]
    for entry in (rotated, made):
        assert entry["actor"] == f"key:{admin.id}"
        assert entry["request_id"] == response.headers["x-request-id"]
        assert entry["ip"] == CLIENT_IP
    assert made["details"]["rotated_from"] == old.id


def test_rotation_with_no_overlap_stops_the_old_key_at_once(
    db: Database, client: TestClient, admin: Key
) -> None:
    old = create(db, name="app", scopes=["contacts.readonly"])
    old_secret = old.secret
    response = client.post(
        f"/v1/api-keys/{old.id}/rotate", json={"overlap": "0s"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    assert_error(
        client.get("/v1/customers", headers=bearer(old_secret)),
        401,
        "api_key_expired",
        checks="request_id",
    )
    assert works(client, response.json()["secret"])


def test_rotation_defaults_to_a_day_of_overlap(
    db: Database, client: TestClient, admin: Key
) -> None:
    old = create(db, name="app", scopes=["contacts.readonly"])
    response = client.post(f"/v1/api-keys/{old.id}/rotate", headers=admin.headers)
    assert response.status_code == 201, response.text
    expires = when(response.json()["previous"]["expires_at"])
    assert expires == pytest.approx(time.time() + DAY, abs=10)


def test_rotation_never_lengthens_the_old_keys_life(
    db: Database, client: TestClient, admin: Key
) -> None:
    old = create(db, name="short", scopes=["contacts.readonly"], expires_in=3600)
    response = client.post(
        f"/v1/api-keys/{old.id}/rotate", json={"overlap": "7d"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    assert row(db, old.id).expires_at == pytest.approx(old.expires_at)
    new = response.json()
    assert when(new["expires_at"]) == pytest.approx(time.time() + 3600, abs=10)


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_only_an_active_key_rotates(
    db: Database, client: TestClient, admin: Key, run: Cli, state: str
) -> None:
    old = create(db, name="gone", scopes=["contacts.readonly"])
    old_secret = old.secret
    if state == "revoked":
        revoke(db, old.id)
    else:
        expire_now(db, old.id)
    count = len(list_all(db))
    response = client.post(
        f"/v1/api-keys/{old.id}/rotate", json={"overlap": "1h"}, headers=admin.headers
    )
    error = assert_error(response, 409, "conflict", checks="request_id")
    assert state in error["message"]
    result = run("keys", "rotate", old.id, "--overlap", "1h")
    assert result.code == 2 and state in result.err and result.out == ""
    assert len(list_all(db)) == count  # no new key
    assert entries(db, "key.rotated") == []
    assert not works(client, old_secret)


@pytest.mark.parametrize("overlap", ["31d", "soon", "-1h", ""])
def test_a_bad_overlap_is_400_and_changes_nothing(
    db: Database, client: TestClient, admin: Key, overlap: str
) -> None:
    old = create(db, name="app", scopes=["contacts.readonly"])
    old_secret = old.secret
    response = client.post(
        f"/v1/api-keys/{old.id}/rotate", json={"overlap": overlap}, headers=admin.headers
    )
    assert_error(response, 400, checks="request_id")
    assert row(db, old.id).expires_at is None
    assert len(list_all(db)) == 2
    assert works(client, old_secret)


def test_rotation_through_the_cli(db: Database, client: TestClient, run: Cli) -> None:
    old = create(db, name="ci", scopes=["contacts.readonly"])
    old_secret = old.secret
    before = time.time()
    rotated = run("keys", "rotate", old.id, "--overlap", "24h", "--json").json()
    new_secret = rotated["secret"]
    assert SHAPE.match(new_secret) and rotated["rotated_from"] == old.id
    assert rotated["previous"]["id"] == old.id
    assert before + DAY - 5 <= when(rotated["previous"]["expires_at"]) <= time.time() + DAY + 5
    assert works(client, old_secret) and works(client, new_secret)
    expire_now(db, old.id)
    assert_error(
        client.get("/v1/customers", headers=bearer(old_secret)),
        401,
        "api_key_expired",
        checks="request_id",
    )
    assert works(client, new_secret)

    (entry,) = entries(db, "key.rotated")
    assert entry["target"] == old.id and entry["details"]["new_key"] == rotated["id"]
    assert entry["actor"] == "cli" or entry["actor"].startswith("cli:")
    assert entry["request_id"] is None and entry["ip"] is None

    # In text, the new key is printed once, on a line of its own.
    text = run("keys", "rotate", rotated["id"], "--overlap", "0s")
    assert text.code == 0, text.err
    printed = [line for line in text.out.splitlines() if SHAPE.match(line)]
    assert len(printed) == 1 and text.out.count(printed[0]) == 1
    assert not works(client, new_secret) and works(client, printed[0])


@pytest.mark.parametrize("overlap", ["0m", "0h"])
def test_the_cli_takes_the_same_overlaps_as_the_api(
    db: Database, client: TestClient, run: Cli, overlap: str
) -> None:
    old = create(db, name="ci", scopes=["contacts.readonly"])
    old_secret = old.secret
    result = run("keys", "rotate", old.id, "--overlap", overlap, "--json")
    assert result.code == 0, result.err
    assert not works(client, old_secret)


def test_revocation_through_the_cli_is_immediate_and_audited(
    db: Database, client: TestClient, run: Cli
) -> None:
    key = create(db, name="ci", scopes=["contacts.readonly"])
    secret = key.secret
    assert works(client, secret)
    result = run("keys", "revoke", key.id, "--json")
    assert result.json()["status"] == "revoked"
    assert_error(
        client.get("/v1/customers", headers=bearer(secret)),
        401,
        "api_key_revoked",
        checks="request_id",
    )
    (entry,) = entries(db, "key.revoked")
    assert entry["target"] == key.id
    assert entry["actor"] == "cli" or entry["actor"].startswith("cli:")
