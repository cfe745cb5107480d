"""The event log: `events list|show|replay` (one item, or every dead or failed one a filter
matches)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from snapshots import errors, inbox, replay, schedule, times
from snapshots.cli.base import JsonOpt, actor, app, state
from snapshots.cli.output import out, print_json, row, show, when

events_app = typer.Typer(no_args_is_help=True, help="The event log (inbox items).")
app.add_typer(events_app, name="events")


@events_app.command("list")
def events_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help=f"One of: {', '.join(inbox.STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    test: Annotated[
        bool | None,
        typer.Option("--test/--no-test", help="Only test events, or none of them (default: all)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List received events, newest first."""
    with state(ctx).db().read() as tx:
        found = inbox.page(tx, status=status, limit=limit, test=test).data
    if as_json:
        print_json(found)
        return
    table = Table("id", "event", "type", "status", "tries", "received", "flows / error")
    for item in found:
        row(
            table,
            str(item.id),
            item.event_id,
            item.event_type,
            item.status,
            str(item.attempts),
            when(item.received_at),
            item.last_error or ", ".join(item.flows),
        )
    out.print(table)


@events_app.command("show")
def events_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Show one event (inbox item number or Stripe event id) with its raw payload."""
    with state(ctx).db().read() as tx:
        item = inbox.get(tx, ref)
        raw = inbox.payload(tx, item.id)
        payload = json.loads(raw) if raw else None  # None: pruned (SNAPSHOTS_EVENT_RETENTION)
    shown = item.model_dump(mode="json")
    if as_json:
        print_json(shown | {"payload": payload})
        return
    for key, value in shown.items():
        show(f"{key}: {value}")
    if payload is None:
        show("payload: pruned (SNAPSHOTS_EVENT_RETENTION)")
    else:
        out.print_json(data=payload)


@events_app.command("replay")
def events_replay(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One inbox item, or filters for many.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help="Replay every item with this status: dead or failed (with filters)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only items received since: 2h, 2024-01-31, ...")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only this event type (invoice.* works).")
    ] = None,
    error: Annotated[
        str | None, typer.Option(help="Only items whose error contains this text (any case).")
    ] = None,
    connection: Annotated[str | None, typer.Option(help="Only this connection's items.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the items and show their errors only.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Queue an event again (done, dead, failed or ignored), or every dead or failed item a
    filter matches (at most 50,000 a run; the count and the commonest errors first)."""
    context = state(ctx)
    bulk = any(v is not None for v in (status, since, event_type, error, connection))
    if ref is not None:
        if bulk or dry_run:
            raise errors.BadRequest("give an inbox item ID, or filters (--status ...), not both")
        with context.db().write() as tx:
            item = inbox.replay(tx, ref)
        if as_json:
            print_json(item)
            return
        show(f"inbox item {item.id} ({item.event_id}) is pending again")
        return
    if status is None:
        raise errors.BadRequest(
            "give an inbox item ID, or --status dead|failed (and --since, --type, --error, "
            "--connection) to replay many"
        )
    flt = replay.Filter(
        status=status,
        since=None if since is None else times.parse_since(since),
        type=event_type,
        error=error,
        connection_id=connection,
    )
    database = context.db()
    if dry_run:
        with database.read() as tx:
            found = replay.preview(tx, flt)
        if as_json:
            print_json(found)
            return
        _show_matches(flt, found.matched, found.quota, found.top_errors)
        out.print("dry run: nothing was queued")
        return
    with database.write() as tx:
        job = replay.start(tx, flt, actor=actor())
    if not as_json:
        _show_matches(flt, job.matched, job.quota, job.top_errors)
    progress = Progress(
        TextColumn("[bold]re-queueing"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} of {task.total:,.0f}"),
        console=Console(stderr=True),
        disable=as_json or job.quota == 0,
    )
    with progress:
        task = progress.add_task("replay", total=job.quota)
        job = replay.run(
            database,
            job.id,
            holder=schedule.holder_name(),
            progress=lambda j: progress.update(task, completed=j.requeued),
        )
    if as_json:
        print_json(job)
        return
    show(f"{job.requeued:,} item(s) are pending again ({job.id})")


def _show_matches(
    flt: replay.Filter, matched: int, quota: int, top_errors: list[replay.ErrorCount]
) -> None:
    what = ", ".join(
        f"{name} {value}"
        for name, value in flt.model_dump(mode="json").items()
        if value and name != "status"
    )
    show(f"{matched:,} {flt.status} item(s) match" + (f" ({what})" if what else ""))
    if top_errors:
        out.print("most common errors:")
        for found in top_errors:
            show(f"  {found.count:>8,}  {found.error or '(none)'}")
    if matched > quota:
        out.print(
            f"this run queues the oldest {quota:,} (the cap of one run): run it again for the rest"
        )
