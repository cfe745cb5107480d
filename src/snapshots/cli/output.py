"""What commands print: JSON of a public model (`--json`), tables, one-line facts, times."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

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


# C0 and C1 control characters but newline and tab: a name or an error from a user or from
# Stripe could otherwise move the cursor or recolour the terminal (forging table rows).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """`text` as a terminal may safely show it."""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", str(text))


def table(*headers: str) -> Table:
    return Table(*headers)


def row(found: Table, *cells: object) -> None:
    """Add a row, each cell cleaned of control characters."""
    found.add_row(*(clean(cell) for cell in cells))


def show(text: str) -> None:
    """A line that may hold values from users or Stripe: cleaned, no markup, wrapped softly."""
    out.print(clean(text), markup=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """`data` (public models, lists or dicts of them) as indented JSON on stdout."""
    sys.stdout.write(json.dumps(_plain(data), indent=2, default=str) + "\n")


def say(line: str) -> None:
    """One line to stdout (no markup, never wrapped: paths and commands stay whole; cleaned of
    control characters)."""
    sys.stdout.write(clean(line) + "\n")


def when(seconds: float | None) -> str:
    return times.iso(seconds) or "-"


def size(count: int) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 100_000 else f"{count / 1e3:,.1f} kB"


def problems(found: list[flowfile.Problem]) -> NoReturn:
    """Print a flows file's problems, one a line, and exit 2."""
    for problem in found:
        sys.stderr.write(f"error: {clean(problem)}\n")
    raise typer.Exit(2)
