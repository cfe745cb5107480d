"""How many app processes `serve` runs by default (`app.processes`)."""

from __future__ import annotations

import pytest

from snapshots import app, errors
from snapshots.settings import Settings


def _settings(url: str, processes: int | None = None) -> Settings:
    return Settings(database_url=url, processes=processes)


@pytest.mark.parametrize(
    ("url", "here"),
    [
        ("postgresql://postgres@127.0.0.1:5432/snapshots", True),
        ("postgresql://postgres@127.0.0.2/snapshots", True),
        ("postgresql://u@localhost/snapshots", True),
        ("postgresql://u@[::1]:5432/snapshots", True),
        ("postgresql:///snapshots", True),  # libpq's default: the local Unix socket
        ("postgresql:///snapshots?host=/var/run/postgresql", True),
        ("postgresql+psycopg://u@db.internal:5432/snapshots", False),
        ("postgresql://u@10.0.0.5/snapshots", False),
        ("postgresql://u@localhost.example.com/snapshots", False),
        ("not a url", False),
    ],
)
def test_the_database_is_here_when_it_is_reached_on_this_machine(url: str, here: bool) -> None:
    assert app._database_here(url) is here


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (3, 1), (8, 4), (None, 1)])
def test_postgresql_here_gets_half_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, expected: int
) -> None:
    monkeypatch.setattr(app.os, "cpu_count", lambda: cores)
    assert app.processes(_settings("postgresql://postgres@127.0.0.1:5432/x")) == expected


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (8, 8), (None, 1)])
def test_postgresql_elsewhere_gets_every_core(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, expected: int
) -> None:
    monkeypatch.setattr(app.os, "cpu_count", lambda: cores)
    assert app.processes(_settings("postgresql://u@db.internal/x")) == expected


def test_the_setting_wins_and_sqlite_keeps_one_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.os, "cpu_count", lambda: 8)
    assert app.processes(_settings("postgresql://postgres@127.0.0.1/x", processes=3)) == 3
    assert app.processes(_settings("postgresql://u@db.internal/x", processes=1)) == 1
    assert app.processes(_settings("sqlite:///snapshots.db")) == 1
    assert app.processes(_settings("sqlite:///snapshots.db", processes=1)) == 1
    with pytest.raises(errors.ConfigError, match="--processes 1"):
        app.processes(_settings("sqlite:///snapshots.db", processes=2))
