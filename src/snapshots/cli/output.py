"""What commands print: JSON of a public model (`--json`), tables, one-line facts, times."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console

from snapshots import flowfile, times

out = Console()
err = Console(stderr=True)


def _plain(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [_plain(item) for item in data]
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    return data


def print_json(data: Any) -> None:
    """`data` (public models, lists or dicts of them) as indented JSON on stdout."""
    sys.stdout.write(json.dumps(_plain(data), indent=2, default=str) + "\n")


def say(line: str) -> None:
    """One line to stdout as it is (no markup, never wrapped: paths and commands stay whole)."""
    sys.stdout.write(line + "\n")


def when(seconds: float | None) -> str:
    return times.iso(seconds) or "-"


def size(count: int) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 100_000 else f"{count / 1e3:,.1f} kB"


def problems(found: list[flowfile.Problem]) -> NoReturn:
    """Print a flows file's problems, one a line, and exit 2."""
    for problem in found:
        sys.stderr.write(f"error: {problem}\n")
    raise typer.Exit(2)
