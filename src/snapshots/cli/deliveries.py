"""The delivery log: `deliveries list|show`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from snapshots import times, vault
from snapshots.cli.base import JsonOpt, app, state
from snapshots.cli.output import out, print_json, row, show, when
from snapshots.outbound import delivery, endpoints

deliveries_app = typer.Typer(no_args_is_help=True, help="Messages sent to webhook endpoints.")
app.add_typer(deliveries_app, name="deliveries")


@deliveries_app.command("list")
def deliveries_list(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's (name or id).")] = None,
    status: Annotated[
        str | None, typer.Option(help=f"One of: {', '.join(delivery.STATUSES)}.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Made since: 2h, 2024-01-31, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List deliveries, newest first."""
    context = state(ctx)
    moment = None if since is None else times.parse_since(since)
    with context.db().read() as tx:
        endpoint_id = (
            None
            if endpoint is None
            else endpoints.get(tx, vault.load(context.settings), endpoint).id
        )
        found = delivery.page(
            tx, endpoint_id=endpoint_id, status=status, since=moment, limit=limit
        ).data
    if as_json:
        print_json(found)
        return
    table = Table("id", "endpoint", "type", "status", "tries", "made", "flow", "last error")
    for d in found:
        row(
            table,
            d.id,
            d.endpoint,
            d.type,
            d.status,
            str(d.attempts),
            when(d.created_at),
            d.flow or "-",
            d.last_error or "",
        )
    out.print(table)


@deliveries_app.command("show")
def deliveries_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Show a delivery with its body and every attempt."""
    with state(ctx).db().read() as tx:
        found = delivery.get(tx, ref)
    if as_json:
        print_json(found)
        return
    for key, value in found.model_dump(mode="json").items():
        if key not in ("attempt_log", "body"):
            show(f"{key}: {value}")
    show(f"body: {found.body}")
    for number, attempt in enumerate(found.attempt_log, 1):
        outcome = attempt.error or f"HTTP {attempt.status_code}"
        show(
            f"attempt {number} at {when(attempt.at)}: {outcome} in {attempt.duration:.3f}s "
            f"via {attempt.address or '-'}"
        )
        if attempt.response:
            show(f"  response: {attempt.response}")
