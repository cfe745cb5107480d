"""API keys: shape and checksum, creation, verification, storage as hashes, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import errors, ids, keys
from snapshots.store import tables
from snapshots.store.db import Database

SNAPSHOTS = Path(sys.executable).parent / "snapshots"


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    yield database
    database.dispose()


def stored(db: Database, key_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.id == key_id)).one()


def set_column(db: Database, key_id: str, **values: object) -> None:
    with db.write() as conn:
        conn.execute(
            tables.api_keys.update().where(tables.api_keys.c.id == key_id).values(**values)
        )


# Shape and checksum.


@pytest.mark.parametrize("env", ["live", "test"])
def test_a_generated_key_has_our_shape(env: str) -> None:
    key = keys.generate(env)
    prefix = f"snp_{env}_"
    assert key.startswith(prefix)
    rest = key[len(prefix) :]
    assert len(rest) == keys.RANDOM_LENGTH + keys.CHECKSUM_LENGTH == 38
    assert set(rest) <= set(ids.ALPHABET)
    assert keys.well_formed(key)


def test_generated_keys_differ() -> None:
    assert len({keys.generate("live") for _ in range(200)}) == 200


def test_every_single_character_change_breaks_the_checksum() -> None:
    key = keys.generate("live")
    alphabet = set(ids.ALPHABET) | set("_-. ")
    for position, original in enumerate(key):
        for replacement in sorted(alphabet - {original}):
            changed = key[:position] + replacement + key[position + 1 :]
            assert not keys.well_formed(changed), (position, replacement)


@pytest.mark.parametrize(
    "candidate",
    [
        pytest.param(lambda k: "", id="empty"),
        pytest.param(lambda k: k[:-1], id="truncated"),
        pytest.param(lambda k: k + "a", id="extended"),
        pytest.param(lambda k: k + "\n", id="trailing-newline"),
        pytest.param(lambda k: " " + k, id="leading-space"),
        pytest.param(lambda k: k.upper(), id="upper-case"),
        pytest.param(lambda k: k.replace("snp_live_", "snp_prod_"), id="unknown-env"),
        pytest.param(lambda k: k.replace("snp_live_", "sk_live_"), id="stripe-prefix"),
        pytest.param(lambda k: k[:-7] + k[-6] + k[-7] + k[-5:], id="swapped-neighbours"),
        pytest.param(lambda k: k.replace("snp_live_", "snp_test_"), id="env-swapped"),
    ],
)
def test_malformed_keys(candidate: Callable[[str], str]) -> None:
    key = keys.generate("live")
    changed = candidate(key)
    if changed != key:
        assert not keys.well_formed(changed)


# Creation.


def create(db: Database, **kwargs: Any) -> keys.ApiKeyCreated:
    with db.write() as tx:
        return keys.create(tx, **kwargs)


def verify(db: Database, presented: str | None, *, ip: str | None = None) -> keys.ApiKey:
    """What a request does with a bearer key: verify it, then note its use (written
    at once here, as the app's background flush writes it)."""
    with db.read() as tx:
        found = keys.verify(tx, presented)
    uses = keys.Uses()
    uses.note(found, ip=ip)
    with db.write() as tx:
        uses.flush(tx)
    return found


def revoke(db: Database, key_id: str) -> keys.ApiKey:
    with db.write() as tx:
        return keys.revoke(tx, key_id)


def list_all(db: Database) -> list[keys.ApiKey]:
    with db.read() as tx:
        return keys.list_all(tx)


def test_create_returns_the_key_once_and_stores_its_public_parts(db: Database) -> None:
    made = create(db, name="  reporting  ", scopes=["contacts.readonly"])
    api_key, secret = made, made.secret
    assert keys.well_formed(secret)
    assert secret.startswith("snp_live_")
    assert api_key.id.startswith("key_")
    assert api_key.name == "reporting"
    assert api_key.scopes == ("contacts.readonly",)
    assert api_key.expires_at is None
    assert api_key.last_used_at is None
    assert api_key.revoked_at is None
    with db.read() as tx:
        public = keys.get(tx, api_key.id).model_dump(mode="json")
    assert secret not in json.dumps(public)
    assert public["key"] == f"{secret[:13]}…{secret[-4:]}"


def test_create_dedups_and_sorts_scopes(db: Database) -> None:
    api_key = create(
        db, name="n", scopes=["invoices.readonly", "contacts.readonly", "invoices.readonly"]
    )
    assert api_key.scopes == ("contacts.readonly", "invoices.readonly")


def test_create_with_an_expiry(db: Database) -> None:
    before = time.time()
    api_key = create(db, name="n", scopes=["admin"], expires_in=3600)
    assert api_key.expires_at is not None
    assert before + 3600 <= api_key.expires_at <= time.time() + 3600


def test_create_writes_an_audit_entry(db: Database) -> None:
    made = create(db, name="n", scopes=["admin"], actor="tester")
    api_key, secret = made, made.secret
    with db.read() as conn:
        entries = conn.execute(sa.select(tables.audit_entries)).all()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("tester", "key.created", api_key.id)
    ]
    assert secret not in json.dumps(entries[0].details)


@pytest.mark.parametrize(
    ("name", "scopes", "says"),
    [
        pytest.param("n", ["contacts.read"], "unknown scope contacts.read", id="unknown-scope"),
        pytest.param("n", ["admin", "root"], "unknown scope root", id="one-unknown-among-good"),
        pytest.param("n", ["ADMIN"], "unknown scope ADMIN", id="case-matters"),
        pytest.param("n", [], "at least one scope", id="no-scopes"),
        pytest.param("", ["admin"], "name", id="empty-name"),
        pytest.param("   ", ["admin"], "name", id="blank-name"),
    ],
)
def test_create_refuses(db: Database, name: str, scopes: list[str], says: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        create(db, name=name, scopes=scopes)
    assert says in caught.value.message
    assert list_all(db) == []


def test_a_name_longer_than_the_column_is_refused_on_both_engines(database_url: str) -> None:
    # api_keys.name is VARCHAR(200): PostgreSQL raises a raw DataError, SQLite stores anything.
    database = Database(database_url)
    try:
        with pytest.raises(errors.BadRequest):
            create(database, name="x" * 201, scopes=["admin"])
        assert list_all(database) == []
    finally:
        database.dispose()


def test_an_unknown_scope_error_lists_the_scopes(db: Database) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        create(db, name="n", scopes=["nope"])
    assert caught.value.code == "unknown_scope"
    for scope in keys.SCOPES:
        assert scope in caught.value.message


def test_every_documented_scope_is_accepted(db: Database) -> None:
    documented = [
        "saas/location.read",
        "saas/location.write",
        "contacts.readonly",
        "contacts.write",
        "invoices.readonly",
        "invoices.write",
        "events.readonly",
        "workflows.readonly",
        "workflows.write",
        "integrations.write",
        "admin",
    ]
    api_key = create(db, name="n", scopes=documented)
    assert set(api_key.scopes) == set(documented)


# Verification.


def test_verify_returns_the_key(db: Database) -> None:
    made = create(db, name="n", scopes=["contacts.readonly"])
    api_key, secret = made, made.secret
    found = verify(db, secret)
    assert found.id == api_key.id
    assert found.allows("contacts.readonly")
    assert not found.allows("invoices.readonly")


def test_admin_allows_every_scope(db: Database) -> None:
    secret = create(db, name="n", scopes=["admin"]).secret
    found = verify(db, secret)
    assert all(found.allows(scope) for scope in keys.SCOPES)


def _unauthorized(db: Database, presented: str | None) -> errors.Unauthorized:
    with pytest.raises(errors.Unauthorized) as caught:
        verify(db, presented)
    assert caught.value.status == 401
    return caught.value


@pytest.mark.parametrize("presented", [None, ""])
def test_verify_a_missing_key(db: Database, presented: str | None) -> None:
    error = _unauthorized(db, presented)
    assert error.code == "missing_api_key"


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param("snp_live_short", id="short"),
        pytest.param("Bearer snp_live_x", id="with-scheme"),
        pytest.param("sk_test_4eC39HqLyjWDarjtT1zdp7dc", id="stripe-key"),
    ],
)
def test_verify_a_malformed_key(db: Database, presented: str) -> None:
    error = _unauthorized(db, presented)
    assert "malformed" in error.message


def test_verify_a_key_with_a_bad_checksum(db: Database) -> None:
    secret = create(db, name="n", scopes=["admin"]).secret
    flipped = secret[:-1] + ("a" if secret[-1] != "a" else "b")
    assert "malformed" in _unauthorized(db, flipped).message


def test_verify_an_unknown_key(db: Database) -> None:
    create(db, name="n", scopes=["admin"])
    error = _unauthorized(db, keys.generate("live"))
    assert "not known" in error.message


def test_verify_a_revoked_key(db: Database) -> None:
    made = create(db, name="n", scopes=["admin"])
    api_key, secret = made, made.secret
    revoked = revoke(db, api_key.id)
    assert revoked.revoked_at is not None
    error = _unauthorized(db, secret)
    assert error.code == "api_key_revoked"
    assert "revoked" in error.message


def test_revoking_twice_keeps_the_first_time(db: Database) -> None:
    api_key = create(db, name="n", scopes=["admin"])
    first = revoke(db, api_key.id)
    second = revoke(db, api_key.id)
    assert first.revoked_at == second.revoked_at


def test_revoking_an_unknown_key_is_not_found(db: Database) -> None:
    with pytest.raises(errors.NotFound):
        revoke(db, "key_doesnotexist")


def test_verify_an_expired_key(db: Database) -> None:
    made = create(db, name="n", scopes=["admin"], expires_in=3600)
    api_key, secret = made, made.secret
    verify(db, secret)
    set_column(db, api_key.id, expires_at=time.time() - 1)
    error = _unauthorized(db, secret)
    assert error.code == "api_key_expired"
    assert "expired" in error.message


def test_last_used_at_is_written_at_most_once_a_minute(db: Database) -> None:
    made = create(db, name="n", scopes=["admin"])
    api_key, secret = made, made.secret
    assert stored(db, api_key.id).last_used_at is None
    before = time.time()
    verify(db, secret)
    first = stored(db, api_key.id).last_used_at
    assert first is not None and before <= first <= time.time()
    verify(db, secret)
    assert stored(db, api_key.id).last_used_at == first
    # A minute later (moved back in the database, not by sleeping) it is written again.
    set_column(db, api_key.id, last_used_at=first - keys.LAST_USED_EVERY - 1)
    verify(db, secret)
    assert stored(db, api_key.id).last_used_at >= first
    # Just under a minute: not rewritten.
    recent = time.time() - keys.LAST_USED_EVERY + 5
    set_column(db, api_key.id, last_used_at=recent)
    verify(db, secret)
    assert stored(db, api_key.id).last_used_at == recent


def test_a_refused_key_is_not_marked_used(db: Database) -> None:
    made = create(db, name="n", scopes=["admin"])
    api_key, secret = made, made.secret
    revoke(db, api_key.id)
    _unauthorized(db, secret)
    assert stored(db, api_key.id).last_used_at is None


# Storage.


def _database_bytes(sqlite_url: str) -> bytes:
    path = Path(sa.make_url(sqlite_url).database or "")
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_only_the_sha256_of_a_key_is_stored(db: Database, sqlite_url: str) -> None:
    made = create(db, name="n", scopes=["admin"])
    api_key, secret = made, made.secret
    verify(db, secret)
    revoke(db, api_key.id)
    assert stored(db, api_key.id).key_hash == keys.digest(secret)
    contents = _database_bytes(sqlite_url)
    db.dispose()  # checkpoint the WAL into the main file too
    contents += _database_bytes(sqlite_url)
    assert keys.digest(secret).encode() in contents
    assert secret.encode() not in contents
    # Not even the part after the shown prefix.
    prefix = api_key.key.split("…")[0]
    assert secret[len(prefix) :].encode() not in contents


# The CLI (the installed entry point, which formats errors).


def cli(sqlite_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SNAPSHOTS), "--database-url", sqlite_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"COLUMNS": "200"},  # wide enough that Rich does not wrap table cells
    )


@pytest.mark.acceptance
def test_cli_create_list_revoke(db: Database, sqlite_url: str) -> None:
    created = cli(
        sqlite_url,
        "keys",
        "create",
        "--name",
        "n",
        "--scope",
        "contacts.readonly",
        "--scope",
        "invoices.readonly",
        "--expires-in",
        "90d",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    shown = json.loads(created.stdout)
    secret = shown["secret"]
    assert keys.well_formed(secret)
    assert shown["scopes"] == ["contacts.readonly", "invoices.readonly"]
    lifetime = datetime.fromisoformat(shown["expires_at"]) - datetime.fromisoformat(
        shown["created_at"]
    )
    assert lifetime.total_seconds() == pytest.approx(90 * 86_400, abs=1)
    assert verify(db, secret).id == shown["id"]

    listed = cli(sqlite_url, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [k["id"] for k in json.loads(listed.stdout)] == [shown["id"]]
    assert secret not in listed.stdout
    table = cli(sqlite_url, "keys", "list")
    assert table.returncode == 0, table.stderr
    assert shown["id"] in table.stdout
    assert secret not in table.stdout

    revoked = cli(sqlite_url, "keys", "revoke", shown["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert shown["id"] in revoked.stdout
    with pytest.raises(errors.Unauthorized):
        verify(db, secret)


@pytest.mark.acceptance
def test_cli_create_prints_the_key_once_in_text(db: Database, sqlite_url: str) -> None:
    created = cli(sqlite_url, "keys", "create", "--name", "n", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    (secret,) = [line for line in created.stdout.splitlines() if line.startswith("snp_")]
    assert verify(db, secret)


@pytest.mark.acceptance
@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(
            ["keys", "create", "--name", "n", "--scope", "contacts.read"],
            "unknown scope contacts.read",
            id="unknown-scope",
        ),
        pytest.param(
            ["keys", "create", "--name", "n", "--scope", "admin", "--expires-in", "soon"],
            "bad duration",
            id="bad-duration",
        ),
        pytest.param(["keys", "revoke", "key_doesnotexist"], "no API key", id="revoke-unknown"),
    ],
)
def test_cli_errors_are_one_line(sqlite_url: str, args: list[str], says: str) -> None:
    result = cli(sqlite_url, *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert says in lines[0]
    assert result.stdout == ""
