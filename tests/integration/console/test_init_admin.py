"""`snapshots init` makes the web console's first admin (unattended: `--admin-email` and the
password on stdin), finds it the second time, and says how to make one when none is named."""

from __future__ import annotations

import io
from typing import Any

import pytest

from snapshots import users
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.integration.console.conftest import PASSWORD, Browser, NewBrowser


def test_init_makes_the_first_admin_then_finds_it(
    run: Any,
    db: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    new_browser: NewBrowser,
) -> None:
    monkeypatch.setenv("SNAPSHOTS_MASTER_KEY", settings.master_key or "")
    args = ("--admin-email", "boss@example.com", "--admin-password-stdin")
    first = _first_admin_only(run, monkeypatch, *args, stdin=PASSWORD + "\n")
    assert "console admin boss@example.com: created" in " ".join(first.out.split())
    second = _first_admin_only(run, monkeypatch, *args, stdin="another password here\n")
    assert "console admin boss@example.com: found, kept" in " ".join(second.out.split())
    with db.read() as tx:
        (admin,) = users.list_all(tx)
    assert admin.admin and admin.email == "boss@example.com"
    browser: Browser = new_browser()
    browser.sign_in("boss@example.com", PASSWORD)  # the first password is the one kept


def test_init_without_an_admin_email_says_how_to_make_one(
    run: Any, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPSHOTS_MASTER_KEY", settings.master_key or "")
    done = _first_admin_only(run, monkeypatch)
    assert "console admin: none yet" in " ".join(done.out.split())
    refused = _first_admin_only(run, monkeypatch, "--admin-email", "boss@example.com")
    assert refused.code == 2
    assert "--admin-password-stdin" in refused.err
    with db.read() as tx:
        assert users.list_all(tx) == []


def _first_admin_only(
    run: Any, monkeypatch: pytest.MonkeyPatch, *extra: str, stdin: str = ""
) -> Any:
    """`init` up to its Stripe step, which stops it here (no --secret-key): the admin step
    comes before it."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return run("init", "--no-input", "--no-api-key", "--no-backfill", *extra)
