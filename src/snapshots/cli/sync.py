"""Pulling from Stripe: `sync` (a backfill, resumable), `sync --reconcile`, `sync --status`."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from snapshots import connections, errors, readiness, revisions, sync, times
from snapshots.cli.base import JsonOpt, app, state
from snapshots.cli.output import clean, err, out, print_json, row, show, when


@app.command("sync")
def sync_command(
    ctx: typer.Context,
    connection: Annotated[
        str | None, typer.Option(help="The connection (default: every connection).")
    ] = None,
    objects: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated, from {','.join(sync.OBJECTS)} (default: all)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only what was created since: 2024-01-31, a UTC time, or 72h / 30d."),
    ] = None,
    reconcile: Annotated[
        bool,
        typer.Option("--reconcile", help="Fetch missed events from Stripe's event list instead."),
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Show recent sync runs and their progress.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Backfill from Stripe's lists (resumable), or reconcile missed events."""
    context = state(ctx)
    database = context.db()
    if status:
        with database.read() as tx:
            runs = sync.page_runs(tx, limit=20).data
        _show_runs(runs, as_json=as_json)
        return
    names = sync.parse_objects(objects)
    since_at = None if since is None else int(times.parse_since(since))
    context.in_use()
    secrets = readiness.startup(database, context.settings)
    settings = context.settings
    with database.read() as tx:
        chosen = connections.choose(tx, secrets, connection)
        registry = revisions.current(tx)
        clients = {
            found.id: connections.stripe_client(
                tx, secrets, found, rps=settings.stripe_rps, retries=settings.stripe_retries
            )
            for found in chosen
        }
    done: list[sync.Run] = []
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>9,.0f} objects"),
        TextColumn("{task.fields[rate]:>7,.0f}/s"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json,
    )
    failures: list[str] = []
    try:
        with progress:
            for linked in chosen:
                client = clients[linked.id]
                for name in ["events"] if reconcile else names:
                    label = f"{linked.id} {name}"
                    task = progress.add_task(label, total=None, rate=0.0)
                    started = time.monotonic()

                    def advance(run: sync.Run, task: Any = task, started: float = started) -> None:
                        read = run.objects - run.resumed_from
                        elapsed = max(time.monotonic() - started, 1e-9)
                        progress.update(task, completed=run.objects, rate=read / elapsed)

                    try:
                        if reconcile:
                            run = sync.reconcile(
                                database,
                                client,
                                linked,
                                registry,
                                settings,
                                since=since_at,
                                progress=advance,
                            )
                        else:
                            run = sync.backfill(
                                database,
                                client,
                                linked,
                                registry,
                                obj=name,
                                since=since_at,
                                progress=advance,
                            )
                    except errors.StripeError as exc:
                        if isinstance(exc, errors.StripeAuthError):
                            raise  # every other object would be refused too
                        failures.append(f"{label}: {errors.describe(exc)}")
                        progress.remove_task(task)
                        continue
                    if run.resumed_from:
                        progress.console.print(
                            f"{label}: resumed after {run.resumed_from:,} objects read before"
                        )
                    progress.update(task, total=run.objects, completed=run.objects)
                    done.append(run)
    except KeyboardInterrupt:
        err.print("interrupted: run the same `snapshots sync` again to resume where it stopped")
        raise typer.Exit(130) from None
    for run in done:
        if run.warning:
            err.print(f"[yellow]warning:[/] {escape(clean(run.warning))}")
    if as_json:
        print_json(
            [run.model_dump(mode="json") | {"resumed_from": run.resumed_from} for run in done]
        )
    for run in done if not as_json else ():
        what = "new events" if run.kind == "reconcile" else "new inbox items"
        show(
            f"{run.connection_id} {run.object}: {run.objects:,} read, {run.enqueued:,} {what} "
            f"({run.id})"
        )
    if failures:
        for failure in failures:
            sys.stderr.write(f"error: {clean(failure)}\n")
        raise typer.Exit(1)


def _show_runs(runs: list[sync.Run], *, as_json: bool) -> None:
    if as_json:
        print_json(runs)
        return
    table = Table("id", "connection", "run", "status", "read", "new", "rate/s", "started")
    for r in runs:
        row(
            table,
            r.id,
            r.connection_id,
            f"{r.kind} {r.object}",
            r.status,
            f"{r.objects:,}",
            f"{r.enqueued:,}",
            f"{r.rate:,.0f}",
            when(r.started_at),
        )
    out.print(table)
    for r in runs:
        if r.error or r.warning:
            show(f"{r.id}: {r.error or r.warning}")
