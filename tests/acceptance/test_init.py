"""`snapshots init --no-input` on an empty directory, then again: the second run finds
everything, says so, and changes nothing (real CLI processes, the fake Stripe)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Snapshots
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

pytestmark = pytest.mark.acceptance
TABLES = ("connections", "api_keys", "sync_runs", "inbox_items", "audit_entries")


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with run_fake_stripe(customers=3, invoices=2, locations=1) as server:
        yield server


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_init_unattended_then_again_changes_nothing(snapshots: Snapshots, fake: FakeStripe) -> None:
    assert list(snapshots.home.iterdir()) == []
    args = (
        "init",
        "--no-input",
        "--secret-key",
        fake.secret_key,
        "--public-url",
        snapshots.base_url,
        "--api-base",
        fake.api_base,
    )
    first = snapshots.cli(*args)
    text = " ".join(first.stdout.split())
    assert "created the schema" in text
    assert "created the webhook endpoint" in text
    assert re.search(r"snp_live_[A-Za-z0-9]{30,}", first.stdout)  # the key, shown once
    (made,) = fake.webhook_endpoints()
    counts = _counts(snapshots.home / "snapshots.db")
    assert counts["connections"] == counts["api_keys"] == 1
    assert counts["inbox_items"] == 3 + 2 + 1  # the backfill read customers, invoices, locations

    second = snapshots.cli(*args)
    again = " ".join(second.stdout.split())
    assert "schema up to date" in again
    assert "found, kept" in again
    assert "found, not run again" in again
    assert "created" not in again
    assert not re.search(r"snp_live_[A-Za-z0-9]{30,}", second.stdout)  # no new key
    assert _counts(snapshots.home / "snapshots.db") == counts
    assert fake.webhook_endpoints() == [made]


def test_init_without_a_key_says_what_to_give(snapshots: Snapshots) -> None:
    failed = snapshots.cli("init", "--no-input", "--public-url", "https://x.example", ok=False)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "error: give --secret-key (sk_... or rk_...) to connect Stripe"
    ]


def test_init_with_a_public_url_that_is_not_one(snapshots: Snapshots, fake: FakeStripe) -> None:
    failed = snapshots.cli(
        "init",
        "--no-input",
        "--secret-key",
        fake.secret_key,
        "--public-url",
        "not a url",
        "--api-base",
        fake.api_base,
        ok=False,
    )
    assert failed.returncode == 2
    (line,) = failed.stderr.strip().splitlines()
    assert "is not a URL like https://snapshots.example.com" in line
    assert fake.webhook_endpoints() == []
    assert _counts(snapshots.home / "snapshots.db")["connections"] == 0
