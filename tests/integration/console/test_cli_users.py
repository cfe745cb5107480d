"""`snapshots users ...` in this process, against both databases."""

from __future__ import annotations

import io
import json
import re

import pytest

from snapshots import users
from snapshots.store.db import Database
from tests.integration.helpers import Cli


def with_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_create_admin_then_viewer_list_and_remove(
    run: Cli, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_stdin(monkeypatch, "a long password\n")
    made = run("users", "create-admin", "--email", "Boss@Example.com", "--password-stdin")
    assert made.code == 0, made.err
    assert "created admin boss@example.com" in made.out
    with_stdin(monkeypatch, "another password\n")
    viewer = run(
        "users",
        "create",
        "--email",
        "v@example.com",
        "--role",
        "viewer",
        "--password-stdin",
        "--json",
    )
    assert viewer.code == 0, viewer.err
    assert json.loads(viewer.out)["role"] == "viewer"
    listed = json.loads(run("users", "list", "--json").out)
    assert [(u["email"], u["role"]) for u in listed] == [
        ("boss@example.com", "admin"),
        ("v@example.com", "viewer"),
    ]
    assert "password" not in run("users", "list", "--json").out
    with db.write() as tx:
        assert isinstance(
            users.authenticate(tx, email="boss@example.com", password="a long password", ip=None),
            users.User,
        )
    refused = run("users", "remove", "boss@example.com")
    assert refused.code == 2
    assert (
        refused.err.strip() == "error: boss@example.com is the only admin: make another admin first"
    )
    removed = run("users", "remove", "v@example.com")
    assert removed.code == 0
    assert "removed v@example.com" in removed.out


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        pytest.param(
            ["--email", "not-an-email"], "a long password\n", "is not an email address", id="email"
        ),
        pytest.param(["--email", "a@example.com"], "short\n", "at least 10 characters", id="short"),
    ],
)
def test_bad_input_is_one_line(
    run: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: str, message: str
) -> None:
    with_stdin(monkeypatch, stdin)
    result = run("users", "create-admin", *args, "--password-stdin")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert message in result.err


def test_a_taken_email_and_an_unknown_role_are_refused(
    run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_stdin(monkeypatch, "a long password\n")
    assert run("users", "create-admin", "--email", "a@example.com", "--password-stdin").code == 0
    with_stdin(monkeypatch, "a long password\n")
    taken = run("users", "create", "--email", "A@example.com", "--password-stdin")
    assert taken.code == 2
    assert "exists" in taken.err
    with_stdin(monkeypatch, "a long password\n")
    role = run("users", "create", "--email", "b@example.com", "--role", "owner", "--password-stdin")
    assert role.code == 2
    assert "unknown role 'owner'" in role.err


def test_the_prompted_password_must_be_typed_twice_alike(
    run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = iter(["a long password", "a long passwork"])
    monkeypatch.setattr("typer.prompt", lambda *a, **k: next(prompts))
    result = run("users", "create-admin", "--email", "a@example.com")
    assert result.code == 2
    assert "the two passwords differ" in result.err


def test_set_up_link_prints_a_link_that_works_once(run: Cli, db: Database) -> None:
    result = run("users", "set-up-link", "--role", "viewer")
    assert result.code == 0, result.err
    found = re.search(r"http://127\.0\.0\.1:8000/setup/([A-Za-z0-9_-]+)", result.out)
    assert found, result.out
    with db.write() as tx:
        assert users.setup_link(tx, found.group(1)).role == "viewer"
        user = users.use_setup_link(
            tx, found.group(1), email="new@example.com", password="a long password"
        )
    assert user.role == "viewer"
    with db.read() as tx, pytest.raises(Exception, match="unknown, used or expired"):
        users.setup_link(tx, found.group(1))
