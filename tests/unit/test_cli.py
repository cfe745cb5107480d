"""The CLI's answer to a database it cannot use: one readable line, a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance  # runs the real `snapshots` entry point

SNAPSHOTS = [str(Path(sys.executable).with_name("snapshots"))]


@pytest.mark.parametrize(
    ("url", "command", "expected"),
    [
        pytest.param("bogus://x", ["migrate"], "error: bad database URL", id="unknown-dialect"),
        pytest.param(
            "postgresql://nobody@127.0.0.1:1/x",
            ["migrate"],
            "error: cannot migrate the database: connection failed",
            id="migrate-unreachable",
        ),
        pytest.param(
            "postgresql://nobody@127.0.0.1:1/x",
            ["keys", "list"],
            "error: the database is unavailable: connection failed",
            id="command-unreachable",
        ),
    ],
)
def test_an_unusable_database_is_one_line(url: str, command: list[str], expected: str) -> None:
    done = subprocess.run(
        [*SNAPSHOTS, "--database-url", url, *command], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(expected), lines[0]
    assert "Traceback" not in done.stderr


def test_an_unmigrated_database_says_what_to_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SNAPSHOTS, "--database-url", f"sqlite:///{tmp_path / 'new.db'}", "events", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: the database has no schema yet: run `snapshots migrate` first"
    )
