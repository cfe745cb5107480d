"""Rotating secrets: a connection's webhook signing secrets (with an overlap, through the API's
intake and the CLI), removing a connection, and the master key that encrypts them all (a key
file beside SQLite, or SNAPSHOTS_MASTER_KEY=new,old), including a rotation cut short between
its commit and the key file's replacement.

Webhooks go through the real endpoint (TestClient) signed as Stripe signs them. The app's
secrets cache is replaced by one with no TTL, so each delivery sees the stored secrets."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from snapshots import audit, cli, connections, errors, vault
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import ACCOUNT, WEBHOOK_SECRET, EventFactory, sign
from tests.integration.helpers import Cli, Result

NEW_SECRET = "whsec_Q7vLx2Rk9PzT4mWbHc3N9876"  # random-looking: no word of it is in any text
NEWER_SECRET = "whsec_Zt5Kq8MwYp2Lr6Vd4Xg7Jb5555"
STRANGER = "whsec_not_this_connections_0000"


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """`run_cli(*args, env={...})`: the CLI in this process with these environment variables
    (None removes one); restores the logging set-up the command changes."""
    names = ["", "stripe", "alembic", "snapshots.stripe", "httpx"]
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)

    def invoke(*args: str, env: dict[str, str | None]) -> Result:
        with monkeypatch.context() as patched:
            for name, value in ({"SNAPSHOTS_NEW_MASTER_KEY": None, "COLUMNS": "200"} | env).items():
                if value is None:
                    patched.delenv(name, raising=False)
                else:
                    patched.setenv(name, value)
            capsys.readouterr()
            try:
                cli.main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield invoke
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = handlers


@pytest.fixture
def run(settings: Settings, run_cli: Cli) -> Cli:
    """`run(*args, env={...})`: the CLI against the test's database and master key (the
    shared `run` sets neither the master key nor other variables)."""

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
        variables: dict[str, str | None] = {
            "SNAPSHOTS_DATABASE_URL": settings.database_url,
            "SNAPSHOTS_MASTER_KEY": settings.master_key,
        }
        return run_cli(*args, env=variables | (env or {}))

    return invoke


def fresh_cache(client: TestClient) -> None:
    """Make the app read a connection's signing secrets on every delivery."""
    state = client.app.state.snapshots  # type: ignore[attr-defined]
    state.secrets = connections.SecretsCache(state.db, state.secrets._vault, ttl=0)


@pytest.fixture
def client(client: TestClient) -> TestClient:
    """The shared `client`, reading a connection's signing secrets on every delivery."""
    fresh_cache(client)
    return client


def deliver(
    client: TestClient, connection_id: str, secret: str, event: dict[str, Any]
) -> httpx.Response:
    payload = json.dumps(event).encode()
    return client.post(
        f"/webhooks/stripe/{connection_id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload, secret)},
    )


def accepted(
    client: TestClient, connection_id: str, secret: str, event_factory: EventFactory
) -> bool:
    """True when a new event signed with `secret` is stored; False when its signature is
    refused (anything else fails the test)."""
    response = deliver(client, connection_id, secret, event_factory("customer.created"))
    if response.status_code == 200:
        return True
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "signature_mismatch", response.text
    return False


def entries(db: Database, action: str) -> list[dict[str, Any]]:
    with db.read() as tx:
        found = audit.page(tx, action=action, limit=100).data
    return [entry.model_dump(mode="json") for entry in found]


def rotate_webhook_secret(
    db: Database, secrets_vault: vault.Vault, connection_id: str, secret: str, **options: Any
) -> connections.Connection:
    with db.write() as tx:
        return connections.rotate_webhook_secret(
            tx, secrets_vault, connection_id, secret, **options
        )


class Later:
    """Stands in for the `time` module in snapshots.connections: `offset` seconds from now."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


# Webhook signing secrets.


def test_during_the_overlap_the_old_and_new_secrets_both_verify(
    db: Database,
    settings: Settings,
    client: TestClient,
    connection: connections.Connection,
    event_factory: EventFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
    assert not accepted(client, connection.id, NEW_SECRET, event_factory)
    changed = rotate_webhook_secret(
        db, vault.load(settings), connection.id, NEW_SECRET, overlap=3600
    )
    assert changed.webhook_secrets == 2
    assert accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
    assert accepted(client, connection.id, NEW_SECRET, event_factory)
    assert not accepted(client, connection.id, STRANGER, event_factory)

    # An hour later the old secret has retired.
    monkeypatch.setattr(connections, "time", Later(3601))
    assert not accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
    assert accepted(client, connection.id, NEW_SECRET, event_factory)
    with db.read() as tx:
        (shown,) = connections.list_all(tx, vault.load(settings))
    assert shown.webhook_secrets == 1


def test_rotating_with_no_overlap_retires_the_old_secret_at_once(
    db: Database,
    settings: Settings,
    client: TestClient,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    rotate_webhook_secret(db, vault.load(settings), connection.id, NEW_SECRET, overlap=3600)
    rotate_webhook_secret(db, vault.load(settings), connection.id, NEWER_SECRET, overlap=0)
    assert not accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
    assert not accepted(client, connection.id, NEW_SECRET, event_factory)
    assert accepted(client, connection.id, NEWER_SECRET, event_factory)


def test_the_app_sees_a_rotation_once_its_cache_expires(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TestClient(create_app(settings)) as client:  # the default cache (SECRETS_TTL)
        assert accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
        rotate_webhook_secret(db, vault.load(settings), connection.id, NEW_SECRET, overlap=0)
        monkeypatch.setattr(connections, "time", Later(connections.SECRETS_TTL + 1))
        assert accepted(client, connection.id, NEW_SECRET, event_factory)
        assert not accepted(client, connection.id, WEBHOOK_SECRET, event_factory)


def test_a_later_rotation_never_extends_an_earlier_secrets_retirement(
    db: Database, settings: Settings, connection: connections.Connection
) -> None:
    secrets_vault = vault.load(settings)
    rotate_webhook_secret(db, secrets_vault, connection.id, NEW_SECRET, overlap=60)
    rotate_webhook_secret(db, secrets_vault, connection.id, NEWER_SECRET, overlap=3600)
    with db.read() as conn:
        token = conn.execute(
            sa.select(tables.connections.c.webhook_secrets).where(
                tables.connections.c.id == connection.id
            )
        ).scalar_one()
    # Ten minutes on, the first secret's minute is long over; the second is in its hour.
    in_force = connections.signing_secrets(secrets_vault, token, now=time.time() + 600)
    assert NEWER_SECRET in in_force and NEW_SECRET in in_force
    assert WEBHOOK_SECRET not in in_force


@pytest.mark.parametrize(
    ("secret", "overlap", "error", "says"),
    [
        pytest.param(WEBHOOK_SECRET, 60.0, errors.Conflict, "already in force", id="in-force"),
        pytest.param("sk_test_not_a_whsec", 60.0, errors.BadRequest, "whsec_", id="not-whsec"),
        pytest.param(NEW_SECRET, 8 * 86400.0, errors.BadRequest, "7 days", id="overlap-8d"),
        pytest.param(NEW_SECRET, -1.0, errors.BadRequest, "0 seconds", id="overlap-negative"),
    ],
)
def test_a_refused_rotation_changes_nothing(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    secret: str,
    overlap: float,
    error: type[errors.SnapshotsError],
    says: str,
) -> None:
    secrets_vault = vault.load(settings)
    with pytest.raises(error, match=says):
        rotate_webhook_secret(db, secrets_vault, connection.id, secret, overlap=overlap)
    with pytest.raises(errors.NotFound):
        rotate_webhook_secret(db, secrets_vault, "conn_nothere", NEW_SECRET)
    assert connections.SecretsCache(db, secrets_vault).get(connection.id) == [WEBHOOK_SECRET]
    assert entries(db, "connection.changed") == []


def test_the_cli_rotates_a_webhook_secret_and_audits_only_its_last_4(
    db: Database,
    client: TestClient,
    connection: connections.Connection,
    event_factory: EventFactory,
    run: Cli,
) -> None:
    result = run(
        "connect",
        "stripe",
        "--rotate-webhook-secret",
        NEW_SECRET,
        "--connection",
        connection.id,
        "--overlap",
        "0s",
    )
    assert result.code == 0, result.err
    assert f"…{NEW_SECRET[-4:]}" in result.out
    assert NEW_SECRET not in result.out + result.err
    assert not accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
    assert accepted(client, connection.id, NEW_SECRET, event_factory)

    (entry,) = entries(db, "connection.changed")
    assert entry["target"] == connection.id
    assert entry["actor"] == "cli" or entry["actor"].startswith("cli:")
    assert entry["outcome"] == "ok"
    assert entry["details"]["webhook_secret_added"] == f"…{NEW_SECRET[-4:]}"
    assert entry["details"]["retiring"] == 1
    details = json.dumps(entry["details"])
    assert WEBHOOK_SECRET[:-4] not in details
    body = NEW_SECRET[len("whsec_") :]  # no 6 characters of it beyond its last 4
    assert all(body[i : i + 6] not in details for i in range(len(body) - 6 + 1))

    # --json shows the connection, never a secret; a second rotation keeps an overlap.
    shown = run(
        "connect",
        "stripe",
        "--rotate-webhook-secret",
        NEWER_SECRET,
        "--connection",
        connection.id,
        "--overlap",
        "1h",
        "--json",
    ).json()
    assert shown["id"] == connection.id and shown["webhook_secrets"] == 2
    assert NEWER_SECRET not in json.dumps(shown)
    assert accepted(client, connection.id, NEW_SECRET, event_factory)
    assert accepted(client, connection.id, NEWER_SECRET, event_factory)


def test_the_cli_refuses_an_unclear_rotation(
    db: Database, settings: Settings, connection: connections.Connection, run: Cli
) -> None:
    mixed = run(
        "connect", "stripe", "--rotate-webhook-secret", NEW_SECRET, "--secret-key", "sk_test_x"
    )
    assert mixed.code == 2 and "--connection only" in mixed.err
    with db.write() as tx:
        connections.add(
            tx,
            vault.load(settings),
            account=ACCOUNT,
            secret_key="sk_test_second5678",
            webhook_secrets=["whsec_second_connection"],
            name="second",
        )
    several = run("connect", "stripe", "--rotate-webhook-secret", NEW_SECRET)
    assert several.code == 2 and "several connections" in several.err
    bad = run(
        "connect",
        "stripe",
        "--rotate-webhook-secret",
        NEW_SECRET,
        "--connection",
        connection.id,
        "--overlap",
        "later",
    )
    assert bad.code == 2 and "later" in bad.err
    assert entries(db, "connection.changed") == []


def test_removing_a_connection(
    db: Database,
    client: TestClient,
    connection: connections.Connection,
    event_factory: EventFactory,
    run: Cli,
) -> None:
    assert accepted(client, connection.id, WEBHOOK_SECRET, event_factory)
    result = run("connections", "remove", connection.id)
    assert result.code == 0, result.err
    assert connection.id in result.out
    assert "sk_test_fixture1234" not in result.out + result.err
    response = deliver(client, connection.id, WEBHOOK_SECRET, event_factory("customer.created"))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "unknown_connection"
    assert run("connections", "list", "--json").json() == []

    (entry,) = entries(db, "connection.removed")
    assert entry["target"] == connection.id
    assert entry["actor"] == "cli" or entry["actor"].startswith("cli:")
    assert entry["details"]["secret_key"] == "…1234"
    assert "fixture1234" not in json.dumps(entry["details"])
    again = run("connections", "remove", connection.id)
    assert again.code == 2 and "no connection" in again.err
    assert len(entries(db, "connection.removed")) == 1


# The master key.


@dataclass
class Stored:
    """A connection made for a master-key test, with the clear secrets it must keep."""

    id: str
    secret_key: str
    webhook_secrets: list[str]


def make_connections(db: Database, secrets_vault: vault.Vault) -> list[Stored]:
    """Two connections; the second has rotated its signing secret (two in force)."""
    made = []
    for n in (1, 2):
        with db.write() as tx:
            connection = connections.add(
                tx,
                secrets_vault,
                account=ACCOUNT,
                secret_key=f"sk_test_master{n}000{n}",
                webhook_secrets=[f"whsec_master_{n}_first"],
                name=f"master {n}",
            )
        made.append(Stored(connection.id, f"sk_test_master{n}000{n}", [f"whsec_master_{n}_first"]))
    rotate_webhook_secret(db, secrets_vault, made[1].id, "whsec_master_2_second", overlap=3600)
    made[1].webhook_secrets.append("whsec_master_2_second")
    return made


def tokens(db: Database) -> dict[str, tuple[str, str]]:
    t = tables.connections
    with db.read() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.secret_key, t.c.webhook_secrets)).all()
    return {r.id: (r.secret_key, r.webhook_secrets) for r in rows}


def assert_secrets_kept(
    db: Database, secrets_vault: vault.Vault, made: list[Stored], *, not_with: str | None = None
) -> None:
    """Every connection's secrets decrypt to what was stored; with `not_with`, that (old)
    master key alone decrypts none of them (they were re-encrypted)."""
    stored = tokens(db)
    for expected in made:
        secret_key, webhook_secrets = stored[expected.id]
        assert secrets_vault.decrypt(secret_key) == expected.secret_key
        assert connections.signing_secrets(secrets_vault, webhook_secrets) == (
            expected.webhook_secrets
        )
        if not_with is not None:
            for token in (secret_key, webhook_secrets):
                with pytest.raises(errors.ConfigError):
                    vault.Vault(not_with).decrypt(token)


def assert_webhooks_verify(
    settings: Settings, made: list[Stored], event_factory: EventFactory
) -> None:
    with TestClient(create_app(settings)) as client:
        for stored in made:
            for secret in stored.webhook_secrets:
                assert accepted(client, stored.id, secret, event_factory)
            assert not accepted(client, stored.id, STRANGER, event_factory)


@pytest.fixture
def key_file_settings(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Database]]:
    """SQLite with no SNAPSHOTS_MASTER_KEY: the master key lives in `<database>.key`."""
    monkeypatch.delenv("SNAPSHOTS_MASTER_KEY", raising=False)
    settings = Settings(database_url=sqlite_url, master_key=None)
    database = Database(sqlite_url)
    yield settings, database
    database.dispose()


def key_paths(settings: Settings) -> tuple[Path, Path]:
    path = vault.key_file(settings)
    assert path is not None
    return path, path.with_name(path.name + ".new")


def test_rotate_master_key_with_a_key_file(
    key_file_settings: tuple[Settings, Database],
    event_factory: EventFactory,
    run_cli: Cli,
) -> None:
    settings, db = key_file_settings
    made = make_connections(db, vault.load(settings))
    path, pending = key_paths(settings)
    old_key = path.read_text().strip()

    result = run_cli(
        "rotate-master-key",
        env={"SNAPSHOTS_DATABASE_URL": settings.database_url, "SNAPSHOTS_MASTER_KEY": None},
    )
    assert result.code == 0, result.err
    assert "2 connection(s)" in result.out
    new_key = path.read_text().strip()
    assert new_key != old_key and not pending.exists()
    assert path.stat().st_mode & 0o777 == 0o600
    assert new_key not in result.out + result.err  # the key is never printed
    vault.Vault(new_key)  # a Fernet key
    assert_secrets_kept(db, vault.load(settings), made, not_with=old_key)
    assert_webhooks_verify(settings, made, event_factory)

    (entry,) = entries(db, "vault.master_key_rotated")
    assert entry["details"] == {"connections": 2, "key_file": True}
    assert entry["actor"] == "cli" or entry["actor"].startswith("cli:")
    assert old_key not in json.dumps(entry) and new_key not in json.dumps(entry)


class Crash(Exception):
    """The process dies here."""


class NoReplace:
    """Stands in for `os` in snapshots.vault: the process dies before the key file is
    replaced (after the database committed)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def replace(source: Any, target: Any) -> None:
        if str(source).endswith(".tmp"):  # writing a file whole: let it happen
            os.replace(source, target)
            return
        raise Crash("killed before os.replace")


def test_a_rotation_cut_short_after_its_commit_still_loads(
    key_file_settings: tuple[Settings, Database],
    event_factory: EventFactory,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Cli,
) -> None:
    settings, db = key_file_settings
    made = make_connections(db, vault.load(settings))
    path, pending = key_paths(settings)
    old_key = path.read_text().strip()
    with monkeypatch.context() as patched:
        patched.setattr(vault, "os", NoReplace())
        with pytest.raises(Crash):
            vault.rotate(db, settings)
    # Both files remain: the database is encrypted with the pending key.
    assert path.read_text().strip() == old_key
    new_key = pending.read_text().strip()
    assert_secrets_kept(db, vault.Vault(new_key), made, not_with=old_key)
    # Loading tries both keys: every secret decrypts and every webhook verifies.
    assert_secrets_kept(db, vault.load(settings), made)
    assert_webhooks_verify(settings, made, event_factory)
    assert len(entries(db, "vault.master_key_rotated")) == 1  # it committed

    # A later rotation completes: one key file again, with a key that decrypts everything.
    result = run_cli(
        "rotate-master-key",
        env={"SNAPSHOTS_DATABASE_URL": settings.database_url, "SNAPSHOTS_MASTER_KEY": None},
    )
    assert result.code == 0, result.err
    assert not pending.exists()
    final = path.read_text().strip()
    assert_secrets_kept(db, vault.Vault(final), made, not_with=new_key)
    assert_webhooks_verify(settings, made, event_factory)


def test_a_failed_rotation_after_an_interrupted_one_loses_no_key(
    key_file_settings: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, db = key_file_settings
    made = make_connections(db, vault.load(settings))
    with monkeypatch.context() as patched:
        patched.setattr(vault, "os", NoReplace())
        with pytest.raises(Crash):
            vault.rotate(db, settings)
    assert_secrets_kept(db, vault.load(settings), made)

    def broken(self: vault.Vault, text: str) -> str:
        raise Crash("killed while re-encrypting")

    with monkeypatch.context() as patched:
        patched.setattr(vault.Vault, "encrypt", broken)
        with pytest.raises(Crash):
            vault.rotate(db, settings)
    # The second rotation rolled back: the database is as the first one left it.
    assert_secrets_kept(db, vault.load(settings), made)


def test_rotate_master_key_with_new_and_old_in_the_variable(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
    run: Cli,
) -> None:
    old_key = settings.master_key
    assert old_key is not None
    made = [Stored(connection.id, "sk_test_fixture1234", [WEBHOOK_SECRET])]
    new_key = Fernet.generate_key().decode()
    result = run("rotate-master-key", env={"SNAPSHOTS_MASTER_KEY": f"{new_key},{old_key}"})
    assert result.code == 0, result.err
    assert "1 connection(s)" in result.out
    assert "SNAPSHOTS_MASTER_KEY to the new key alone" in " ".join(result.out.split())
    assert new_key not in result.out and old_key not in result.out
    assert_secrets_kept(db, vault.Vault(new_key), made, not_with=old_key)
    assert_webhooks_verify(settings.model_copy(update={"master_key": new_key}), made, event_factory)
    (entry,) = entries(db, "vault.master_key_rotated")
    assert entry["details"] == {"connections": 1, "key_file": False}


def test_rotate_master_key_with_a_new_key_option(
    db: Database, settings: Settings, connection: connections.Connection, run: Cli
) -> None:
    old_key = settings.master_key
    assert old_key is not None
    new_key = Fernet.generate_key().decode()
    result = run("rotate-master-key", "--new-key", new_key)
    assert result.code == 0, result.err
    made = [Stored(connection.id, "sk_test_fixture1234", [WEBHOOK_SECRET])]
    assert_secrets_kept(db, vault.Vault(new_key), made, not_with=old_key)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param((), "give the new key (--new-key), or set SNAPSHOTS_MASTER_KEY", id="none"),
        pytest.param(("--new-key", "not-a-fernet-key"), "not a Fernet key", id="bad-new-key"),
    ],
)
def test_rotate_master_key_refuses_without_a_new_key(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    run: Cli,
    args: tuple[str, ...],
    says: str,
) -> None:
    before = tokens(db)
    result = run("rotate-master-key", *args)
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.err
    assert tokens(db) == before
    assert entries(db, "vault.master_key_rotated") == []
    assert settings.master_key is not None and settings.master_key not in result.err
