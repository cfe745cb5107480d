"""The audit log: `audit`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from snapshots import audit, times
from snapshots.cli.base import JsonOpt, app, state
from snapshots.cli.output import out, print_json, row, when


@app.command("audit")
def audit_command(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="A date, a UTC time, or a duration back (24h, 7d).")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="One action (key.rotated) or a prefix (key.*).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The audit log, newest first: who changed what, when, from where."""
    since_at = None if since is None else times.parse_since(since)
    with state(ctx).db().read() as tx:
        entries = audit.page(tx, since=since_at, action=action, limit=limit).data
    if as_json:
        print_json(entries)
        return
    table = Table("when", "actor", "action", "target", "outcome", "from", "details")
    for e in entries:
        row(
            table,
            when(e.at),
            e.actor,
            e.action,
            e.target or "",
            e.outcome,
            e.ip or "",
            json.dumps(e.details, default=str, ensure_ascii=False),
        )
    out.print(table)
