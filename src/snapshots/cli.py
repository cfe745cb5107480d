"""The `snapshots` command. Thin: each command parses, calls one domain function, prints."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Annotated, Any

import click
import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from snapshots import connections, errors, flows, inbox, keys, sync, vault
from snapshots.settings import Settings
from snapshots.store import db as store

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Keep Snapshots locations, contacts and invoices in step with Stripe.",
)
connect_app = typer.Typer(no_args_is_help=True, help="Link an account.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys for the Snapshots API.")
events_app = typer.Typer(no_args_is_help=True, help="The event log (inbox items).")
app.add_typer(connect_app, name="connect")
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")

out = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@dataclass
class Context:
    settings: Settings
    click_context: typer.Context

    def db(self, *, migrated: bool = True) -> store.Database:
        database = store.Database(self.settings.database_url)
        self.click_context.call_on_close(database.dispose)
        if migrated and not store.is_migrated(database):
            raise errors.ConfigError(
                "the database has no schema yet: run `snapshots migrate` first"
            )
        return database


def _ctx(ctx: typer.Context) -> Context:
    obj: Context = ctx.obj
    return obj


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="SNAPSHOTS_DATABASE_URL", help="Database URL (default sqlite:///snapshots.db)."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Log more; full tracebacks.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for noisy in ("stripe", "alembic", "snapshots.stripe"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    ctx.obj = Context(Settings(**overrides), ctx)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema."""
    database = _ctx(ctx).db(migrated=False)
    store.migrate(database)
    out.print("database is up to date")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (SNAPSHOTS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (SNAPSHOTS_PORT).")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run a worker inside.")
    ] = True,
) -> None:
    """Migrate, then serve the API and webhooks (with an embedded worker)."""
    import uvicorn

    from snapshots.app import create_app

    settings = _ctx(ctx).settings
    updates: dict[str, Any] = {}
    if host:
        updates["host"] = host
    if port:
        updates["port"] = port
    settings = settings.model_copy(update=updates)
    database = store.Database(settings.database_url)
    store.migrate(database)
    database.dispose()
    application = create_app(settings, embedded_worker=worker)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@app.command("worker")
def worker_command(ctx: typer.Context) -> None:
    """Run a standalone worker (many may run at once on PostgreSQL)."""
    from snapshots import worker

    context = _ctx(ctx)
    context.db()  # refuses an unmigrated database with a clear error
    worker.main(context.settings)


@connect_app.command("stripe")
def connect_stripe(
    ctx: typer.Context,
    secret_key: Annotated[
        str,
        typer.Option(
            help="Secret (sk_...) or restricted (rk_...) key.",
            envvar="STRIPE_SECRET_KEY",
            show_envvar=False,
        ),
    ],
    webhook_secret: Annotated[
        list[str],
        typer.Option(help="Webhook signing secret (whsec_...); repeat during a rotation."),
    ],
    name: Annotated[str | None, typer.Option(help="A name for the connection.")] = None,
    api_base: Annotated[str | None, typer.Option(help="A Stripe-compatible API base URL.")] = None,
    api_version: Annotated[
        str | None, typer.Option(help="Pin this Stripe API version (default: the SDK's).")
    ] = None,
    ordering: Annotated[
        str,
        typer.Option(
            help="payload: apply events as delivered; refetch: re-read each object from Stripe "
            "before applying it."
        ),
    ] = "payload",
    as_json: JsonOpt = False,
) -> None:
    """Check a Stripe key, store it encrypted, print the webhook URL to register."""
    context = _ctx(ctx)
    database = context.db()
    connection = connections.create(
        database,
        vault.load(context.settings),
        secret_key=secret_key,
        webhook_secrets=webhook_secret,
        name=name,
        api_base=api_base,
        api_version=api_version,
        ordering=ordering,
    )
    webhook_url = f"{context.settings.base_url}/webhooks/stripe/{connection.id}"
    if as_json:
        _print_json(connection.public() | {"webhook_url": webhook_url})
        return
    out.print(
        f"connected [bold]{connection.name}[/] as [bold]{connection.id}[/]"
        f" ({'live' if connection.livemode else 'test'} mode, key …{connection.secret_key_last4})"
    )
    out.print(f"register this webhook URL in Stripe: [bold]{webhook_url}[/]")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option(help=f"Repeat for each scope: {', '.join(keys.SCOPES)}.")
    ],
    expires_in: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d or 12h.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; it is printed once and never again."""
    context = _ctx(ctx)
    lifetime = keys.parse_duration(expires_in) if expires_in else None
    api_key, secret = keys.create(
        context.db(), name=name, scopes=scope, env=context.settings.key_env, expires_in=lifetime
    )
    if as_json:
        _print_json(api_key.public() | {"secret": secret})
        return
    out.print(f"created {api_key.id} with scopes {', '.join(api_key.scopes)}")
    out.print("the key (shown once; store it now):")
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List API keys (never the keys themselves)."""
    found = keys.list_all(_ctx(ctx).db())
    if as_json:
        _print_json([k.public() for k in found])
        return
    table = Table("id", "name", "key", "scopes", "expires", "last used", "revoked")
    for k in found:
        p = k.public()
        table.add_row(
            k.id,
            k.name,
            p["key"],
            " ".join(k.scopes),
            _when(k.expires_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key at once."""
    api_key = keys.revoke(_ctx(ctx).db(), key_id)
    if as_json:
        _print_json(api_key.public())
        return
    out.print(f"revoked {api_key.id}")


def _when(seconds: float | None) -> str:
    from snapshots.records import iso

    return iso(seconds) or "-"


@events_app.command("list")
def events_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help=f"One of: {', '.join(inbox.STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List received events, newest first."""
    rows = [inbox.public(r) for r in inbox.list_items(_ctx(ctx).db(), status=status, limit=limit)]
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "event", "type", "status", "tries", "received", "flows / error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["event_id"],
            r["event_type"],
            r["status"],
            str(r["attempts"]),
            r["received_at"],
            r["last_error"] or ", ".join(r["flows"]),
        )
    out.print(table)


@events_app.command("show")
def events_show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Show one event (inbox item number or Stripe event id) with its raw payload."""
    item = inbox.get(_ctx(ctx).db(), ref)
    shown = inbox.public(item) | {"payload": json.loads(item["payload"])}
    if as_json:
        _print_json(shown)
        return
    for key, value in shown.items():
        if key != "payload":
            out.print(f"[bold]{key}[/]: {value}")
    out.print_json(data=shown["payload"])


@events_app.command("replay")
def events_replay(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Queue a done, dead, failed or ignored event again."""
    item = inbox.public(inbox.replay(_ctx(ctx).db(), ref))
    if as_json:
        _print_json(item)
        return
    out.print(f"inbox item {item['id']} ({item['event_id']}) is pending again")


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
    context = _ctx(ctx)
    database = context.db()
    if status:
        runs, _ = sync.page_runs(database, limit=20)
        _show_runs(runs, as_json=as_json)
        return
    names = sync.parse_objects(objects)
    since_at = None if since is None else sync.parse_since(since)
    secrets = vault.load(context.settings)
    chosen = connections.choose(database, secrets, connection)
    registry = flows.current(database)
    settings = context.settings
    done: list[sync.Run] = []
    err = Console(stderr=True)
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
            for conn in chosen:
                client = connections.stripe_client(
                    database,
                    secrets,
                    conn,
                    rps=settings.stripe_rps,
                    retries=settings.stripe_retries,
                )
                for name in ["events"] if reconcile else names:
                    label = f"{conn.id} {name}"
                    task = progress.add_task(label, total=None, rate=0.0)
                    started = time.monotonic()

                    def show(run: sync.Run, task: Any = task, started: float = started) -> None:
                        read = run.objects - run.resumed_from
                        elapsed = max(time.monotonic() - started, 1e-9)
                        progress.update(task, completed=run.objects, rate=read / elapsed)

                    try:
                        if reconcile:
                            run = sync.reconcile(
                                database,
                                client,
                                conn,
                                registry,
                                settings,
                                since=since_at,
                                progress=show,
                            )
                        else:
                            run = sync.backfill(
                                database,
                                client,
                                conn,
                                registry,
                                obj=name,
                                since=since_at,
                                progress=show,
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
            err.print(f"[yellow]warning:[/] {run.warning}")
    if as_json:
        _print_json([run.public() | {"resumed_from": run.resumed_from} for run in done])
    for run in done if not as_json else ():
        what = "new events" if run.kind == "reconcile" else "new inbox items"
        out.print(
            f"{run.connection_id} {run.object}: {run.objects:,} read, {run.enqueued:,} {what} "
            f"({run.id})"
        )
    if failures:
        for failure in failures:
            sys.stderr.write(f"error: {failure}\n")
        raise typer.Exit(1)


def _show_runs(runs: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        _print_json(runs)
        return
    table = Table("id", "connection", "run", "status", "read", "new", "rate/s", "started")
    for r in runs:
        table.add_row(
            r["id"],
            r["connection_id"],
            f"{r['kind']} {r['object']}",
            r["status"],
            f"{r['objects']:,}",
            f"{r['enqueued']:,}",
            f"{r['rate']:,.0f}",
            r["started_at"],
        )
    out.print(table)
    for r in runs:
        if r["error"] or r["warning"]:
            out.print(f"{r['id']}: {r['error'] or r['warning']}", soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one readable line and a non-zero exit on error; `-v` adds the traceback."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="snapshots", standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n): click returns n here
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except errors.SnapshotsError as exc:
        if verbose:
            traceback.print_exc()
        sys.stderr.write(f"error: {errors.describe(exc)}\n")
        sys.exit(2 if isinstance(exc, errors.Rejected | errors.ConfigError) else 1)
    except sa.exc.OperationalError as exc:
        if verbose:
            traceback.print_exc()
        reason = " ".join(str(exc.orig).split())
        sys.stderr.write(f"error: the database is unavailable: {reason}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug, but the user still gets one line
        if verbose:
            traceback.print_exc()
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}: {errors.describe(exc)} (run with -v for details)\n"
        )
        sys.exit(1)
