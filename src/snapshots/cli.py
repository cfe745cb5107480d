"""The `snapshots` command. Thin: each command parses, calls one domain function, prints."""

from __future__ import annotations

import getpass
import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from snapshots import (
    audit,
    catalog,
    connections,
    errors,
    flows,
    inbox,
    keys,
    readiness,
    replay,
    samples,
    schedule,
    sync,
    times,
    vault,
)
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import lock as store_lock

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Keep Snapshots locations, contacts and invoices in step with Stripe.",
)
connect_app = typer.Typer(no_args_is_help=True, help="Link an account.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys for the Snapshots API.")
events_app = typer.Typer(no_args_is_help=True, help="The event log (inbox items).")
flows_app = typer.Typer(
    no_args_is_help=True, help="The flows in force: export, import, roll back (versioned)."
)
mappings_app = typer.Typer(no_args_is_help=True, help="Check and try flows files and mappings.")
connections_app = typer.Typer(no_args_is_help=True, help="Linked Stripe accounts.")
app.add_typer(connections_app, name="connections")
app.add_typer(connect_app, name="connect")
app.add_typer(flows_app, name="flows")
app.add_typer(mappings_app, name="mappings")
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

    def in_use(self) -> None:
        """Mark the SQLite database as used by this process until the command ends, so
        `restore` refuses meanwhile (errors.Conflict now if a restore is running)."""
        held = store_lock.shared(self.settings.sqlite_path)
        self.click_context.call_on_close(held.release)


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
        for noisy in ("stripe", "alembic", "snapshots.stripe", "httpx"):
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
    _ctx(ctx).in_use()
    database = store.Database(settings.database_url)
    try:
        readiness.startup(database, settings, migrate=True)
    finally:
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
def worker_command(
    ctx: typer.Context,
    health_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Answer /healthz and /readyz on this port (SNAPSHOTS_WORKER_HEALTH_PORT).",
        ),
    ] = None,
) -> None:
    """Run a standalone worker (many may run at once on PostgreSQL). It checks the database,
    its schema, the master key and the flows first, and never migrates."""
    from snapshots import worker

    context = _ctx(ctx)
    settings = context.settings
    if health_port is not None:
        settings = settings.model_copy(update={"worker_health_port": health_port})
    readiness.startup(context.db(migrated=False), settings)
    worker.main(settings)


@connect_app.command("stripe")
def connect_stripe(
    ctx: typer.Context,
    secret_key: Annotated[
        str | None,
        typer.Option(
            help="Secret (sk_...) or restricted (rk_...) key.",
            envvar="STRIPE_SECRET_KEY",
            show_envvar=False,
        ),
    ] = None,
    webhook_secret: Annotated[
        list[str] | None,
        typer.Option(help="Webhook signing secret (whsec_...); repeat during a rotation."),
    ] = None,
    rotate_webhook_secret: Annotated[
        str | None,
        typer.Option(
            help="Add this new signing secret to --connection; the old ones retire after "
            "--overlap.",
            show_default=False,
        ),
    ] = None,
    connection_id: Annotated[
        str | None, typer.Option("--connection", help="The connection (with --rotate-...).")
    ] = None,
    overlap: Annotated[
        str, typer.Option(help="How long old signing secrets keep working (0s: retire now).")
    ] = "24h",
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
    """Check a Stripe key, store it encrypted, print the webhook URL to register; or roll a
    connection's webhook signing secret (--rotate-webhook-secret)."""
    context = _ctx(ctx)
    database = context.db()
    secrets_vault = vault.load(context.settings)
    if rotate_webhook_secret is not None:
        if secret_key or webhook_secret:
            raise errors.BadRequest(
                "--rotate-webhook-secret changes a connection: give it with --connection only"
            )
        (chosen,) = _one_connection(database, secrets_vault, connection_id)
        seconds = keys.parse_overlap(overlap)
        changed = connections.rotate_webhook_secret(
            database,
            secrets_vault,
            chosen.id,
            rotate_webhook_secret,
            overlap=seconds,
            actor=_actor(),
        )
        if as_json:
            _print_json(changed.public())
            return
        out.print(
            f"{changed.id}: new signing secret …{rotate_webhook_secret.strip()[-4:]} in force; "
            f"the earlier ones work for {overlap} more"
        )
        return
    if not secret_key or not webhook_secret:
        raise errors.BadRequest("give --secret-key and --webhook-secret (whsec_...)")
    connection = connections.create(
        database,
        secrets_vault,
        secret_key=secret_key,
        webhook_secrets=webhook_secret,
        name=name,
        api_base=api_base,
        api_version=api_version,
        ordering=ordering,
        actor=_actor(),
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
        context.db(),
        name=name,
        scopes=scope,
        env=context.settings.key_env,
        expires_in=lifetime,
        actor=_actor(),
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
    table = Table("id", "name", "key", "scopes", "status", "expires", "last used", "from")
    for k in found:
        p = k.public()
        table.add_row(
            k.id,
            k.name,
            p["key"],
            " ".join(k.scopes),
            p["status"],
            _when(k.expires_at),
            _when(k.last_used_at),
            k.last_used_ip or "",
        )
    out.print(table)


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    overlap: Annotated[
        str, typer.Option(help="How long the old key keeps working: 24h, 7d, or 0s (now).")
    ] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """A new key with the same scopes; the old one keeps working until the overlap ends."""
    context = _ctx(ctx)
    seconds = keys.parse_overlap(overlap)
    new, secret, old = keys.rotate(
        context.db(), key_id, overlap=seconds, env=context.settings.key_env, actor=_actor()
    )
    if as_json:
        _print_json(new.public() | {"secret": secret, "previous": old.public()})
        return
    out.print(
        f"created {new.id} with scopes {', '.join(new.scopes)}; {old.id} works until "
        f"{_when(old.expires_at)}"
    )
    out.print("the new key (shown once; store it now):")
    sys.stdout.write(secret + "\n")


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key at once."""
    api_key = keys.revoke(_ctx(ctx).db(), key_id, actor=_actor())
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
    context = _ctx(ctx)
    bulk = any(v is not None for v in (status, since, event_type, error, connection))
    if ref is not None:
        if bulk or dry_run:
            raise errors.BadRequest("give an inbox item ID, or filters (--status ...), not both")
        item = inbox.public(inbox.replay(context.db(), ref))
        if as_json:
            _print_json(item)
            return
        out.print(f"inbox item {item['id']} ({item['event_id']}) is pending again")
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
        with database.read() as conn:
            found = replay.preview(conn, flt)
        if as_json:
            _print_json(
                {
                    "filter": flt.public(),
                    "matched": found.matched,
                    "quota": found.quota,
                    "capped": found.capped,
                    "top_errors": [{"error": e, "count": n} for e, n in found.top_errors],
                    "dry_run": True,
                }
            )
            return
        _show_matches(flt, found.matched, found.quota, found.top_errors)
        out.print("dry run: nothing was queued")
        return
    with database.write() as conn:
        job = replay.start(conn, flt, actor=_actor())
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
        _print_json(job.public())
        return
    out.print(f"{job.requeued:,} item(s) are pending again ({job.id})")


def _show_matches(
    flt: replay.Filter, matched: int, quota: int, top_errors: list[tuple[str, int]]
) -> None:
    what = ", ".join(
        f"{name} {value}" for name, value in flt.public().items() if value and name != "status"
    )
    out.print(
        f"{matched:,} {flt.status} item(s) match" + (f" ({what})" if what else ""), markup=False
    )
    if top_errors:
        out.print("most common errors:")
        for text, count in top_errors:
            out.print(f"  {count:>8,}  {text or '(none)'}", markup=False, soft_wrap=True)
    if matched > quota:
        out.print(
            f"this run queues the oldest {quota:,} (the cap of one run): run it again for the rest"
        )


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
    context.in_use()
    secrets = readiness.startup(database, context.settings)
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


def _one_connection(
    database: store.Database, secrets_vault: vault.Vault, connection_id: str | None
) -> list[connections.Connection]:
    found = connections.choose(database, secrets_vault, connection_id)
    if len(found) > 1:
        raise errors.BadRequest("there are several connections: give --connection")
    return found


@connections_app.command("list")
def connections_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The linked Stripe accounts (never their secrets: the key's last 4 characters)."""
    context = _ctx(ctx)
    found = connections.list_all(context.db(), vault.load(context.settings))
    if as_json:
        _print_json([c.public() for c in found])
        return
    table = Table("id", "name", "account", "mode", "key", "signing secrets", "ordering")
    for c in found:
        table.add_row(
            c.id,
            c.name,
            c.account_id or "",
            "live" if c.livemode else "test",
            f"…{c.secret_key_last4}",
            str(c.webhook_secret_count),
            c.ordering,
        )
    out.print(table)


@connections_app.command("remove")
def connections_remove(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Forget a connection and its secrets (its records and events stay)."""
    context = _ctx(ctx)
    removed = connections.remove(
        context.db(), vault.load(context.settings), connection_id, actor=_actor()
    )
    if as_json:
        _print_json(removed.public())
        return
    out.print(f"removed {removed.id} ({removed.name}); remove its webhook endpoint in Stripe too")


@app.command("rotate-master-key")
def rotate_master_key(
    ctx: typer.Context,
    new_key: Annotated[
        str | None,
        typer.Option(
            help="The new Fernet key (default: generated, for a key file; with "
            "SNAPSHOTS_MASTER_KEY=new,old the first one).",
            envvar="SNAPSHOTS_NEW_MASTER_KEY",
            show_envvar=False,
        ),
    ] = None,
) -> None:
    """Re-encrypt every stored Stripe secret with a new master key."""
    context = _ctx(ctx)
    count = vault.rotate(context.db(), context.settings, new_key=new_key, actor=_actor())
    out.print(f"re-encrypted the secrets of {count} connection(s) with the new master key")
    if context.settings.master_key:
        out.print("now set SNAPSHOTS_MASTER_KEY to the new key alone")
    out.print("restart `snapshots serve` and every `snapshots worker`: they read the key at start")


def _say(line: str) -> None:
    """One line to stdout as it is (no markup, never wrapped: paths and commands stay whole)."""
    sys.stdout.write(line + "\n")


def _size(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


def _postgres_commands(url: str, file: Path, *, as_json: bool, restoring: bool) -> None:
    from snapshots import backup

    dump, restore = backup.postgres_commands(url, file)
    if as_json:
        _print_json({"database": "postgresql", "backup": dump, "restore": restore})
        return
    if restoring:
        _say("PostgreSQL: stop every snapshots serve and worker, then restore with pg_restore:")
        _say(f"  {restore}")
    else:
        _say("PostgreSQL: back up with pg_dump (it copies a live database consistently):")
        _say(f"  {dump}")
        _say("restore it later (every snapshots serve and worker stopped) with:")
        _say(f"  {restore}")
    if dump.startswith(backup.PASSWORD_PLACEHOLDER):
        _say("put the password in place of <password> (or in ~/.pgpass); it is never printed")
    _say(
        "the Stripe secrets in it decrypt only with SNAPSHOTS_MASTER_KEY: keep that key with "
        "the backup"
    )


@app.command("backup")
def backup_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Where to write the copy (SQLite).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy the database while snapshots runs, and its master key (SQLite); for PostgreSQL,
    print the pg_dump and pg_restore commands."""
    from snapshots import backup

    settings = _ctx(ctx).settings
    if backup.is_postgres(settings.database_url):
        _postgres_commands(settings.database_url, file, as_json=as_json, restoring=False)
        return
    result = backup.backup(settings, file, force=force)
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if as_json:
        _print_json(result.public())
        return
    _say(
        f"backed up {settings.sqlite_path} to {result.database} ({_size(result.size)}, schema "
        f"{result.revision}, {result.seconds:.2f} s)"
    )
    if result.key_file is not None:
        _say(
            f"master key copied to {result.key_file} (0600): keep it with the backup, the Stripe "
            "secrets in it decrypt only with that key"
        )
    elif result.key_source == "env":
        _say(
            "the secrets in it decrypt only with SNAPSHOTS_MASTER_KEY: keep that key with the "
            "backup"
        )
    else:
        _say("no master key file exists yet: nothing in the database is encrypted")
    _say(f"restore it with: snapshots restore {result.database}")


@app.command("restore")
def restore_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A backup made by `snapshots backup`.")],
    as_json: JsonOpt = False,
) -> None:
    """Put a backup in place of the database (SQLite; snapshots must be stopped): the current
    one is kept aside. For PostgreSQL, print the pg_restore command."""
    from snapshots import backup

    settings = _ctx(ctx).settings
    if backup.is_postgres(settings.database_url):
        _postgres_commands(settings.database_url, file, as_json=as_json, restoring=True)
        return
    result = backup.restore(settings, file)
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if as_json:
        _print_json(result.public())
        return
    _say(
        f"restored {result.source} into {result.database} ({_size(result.size)}, schema "
        f"{result.revision}, {result.seconds:.2f} s)"
    )
    if result.upgraded_to:
        _say(f"upgraded its schema from {result.revision} to {result.upgraded_to}")
    for kept in result.kept:
        _say(f"kept the previous file as {kept}")
    if result.key_file is not None:
        _say(f"master key restored to {result.key_file} from {backup.key_path(file.absolute())}")
    elif result.key_source == "env":
        _say("the master key in force is SNAPSHOTS_MASTER_KEY")
    elif result.key_source == "file":
        _say("no master key beside the backup: the key file in force stays")
    _say("start snapshots serve (and any workers) again")


def _actor() -> str:
    """Who changes something from this shell, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _problems(checked: flows.Checked) -> NoReturn:
    """Print a flows file's problems, one a line, and exit 2."""
    for problem in checked.problems:
        sys.stderr.write(f"error: {problem}\n")
    raise typer.Exit(2)


@flows_app.command("export")
def flows_export(
    ctx: typer.Context,
    version: Annotated[
        int | None, typer.Option(min=0, help="A stored version (default: the one in force).")
    ] = None,
) -> None:
    """Print the flows file (YAML) in force, to edit and import again."""
    stored = flows.get_version(_ctx(ctx).db(), version)
    sys.stdout.write(stored.text if stored.text.endswith("\n") else stored.text + "\n")


@flows_app.command("import")
def flows_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A flows file (YAML).")],
    comment: Annotated[str | None, typer.Option(help="Why, for the history.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a flows file, then put it in force as a new version (a bad file changes nothing)."""
    database = _ctx(ctx).db()
    text = flows.read(file)
    checked = flows.check(text, str(file))
    if checked.registry is None:
        _problems(checked)
    old = flows.current_version(database)
    stored = flows.import_text(database, text, where=str(file), actor=_actor(), comment=comment)
    if as_json:
        _print_json(stored.public() | {"previous_version": old})
        return
    count = len(checked.registry.flows) if checked.registry else 0
    out.print(f"flows version {stored.version} is in force ({count} flows; was version {old})")


@flows_app.command("rollback")
def flows_rollback(
    ctx: typer.Context,
    version: Annotated[
        int, typer.Argument(min=0, max=2**31 - 1, help="The version to put back (0: prebuilt).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Put an earlier version back in force (as a new version: history stays)."""
    database = _ctx(ctx).db()
    old = flows.current_version(database)
    stored = flows.rollback(database, version, actor=_actor())
    if as_json:
        _print_json(stored.public() | {"previous_version": old})
        return
    out.print(
        f"flows version {stored.version} is in force: the flows of version {version} "
        f"(was version {old})"
    )


@flows_app.command("versions")
def flows_versions(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every version of the flows, newest first (the first is in force)."""
    found = flows.versions(_ctx(ctx).db())
    if as_json:
        _print_json([v.public() for v in found])
        return
    table = Table("version", "in force", "by", "when", "comment")
    for index, v in enumerate(found):
        table.add_row(
            str(v.version),
            "yes" if index == 0 else "",
            v.actor,
            _when(v.created_at),
            v.comment or "",
        )
    out.print(table)


@mappings_app.command("show")
def mappings_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The flows in force: triggers, filter, action and mapped fields."""
    registry = flows.current(_ctx(ctx).db())
    shown: list[dict[str, Any]] = [
        {
            "name": f.name,
            "trigger": list(f.triggers),
            "filter": None if f.filter is None else f.filter.source,
            "action": f.action.name,
            "options": f.options,
            "fields": {target: e.source for target, e in f.fields},
        }
        for f in registry.flows
    ]
    if as_json:
        _print_json({"version": registry.version, "flows": shown})
        return
    out.print(f"flows version {registry.version}")
    table = Table("flow", "trigger", "filter", "action", "fields")
    for f in shown:
        table.add_row(
            f["name"],
            ", ".join(f["trigger"]),
            f["filter"] or "",
            f["action"],
            "\n".join(f"{k} <- {v}" for k, v in f["fields"].items()),
        )
    out.print(table)


@mappings_app.command("validate")
def mappings_validate(
    file: Annotated[Path, typer.Argument(help="A flows file (YAML).")],
) -> None:
    """Check a flows file: exit 0 when good; else each problem with its file, line, flow and
    field, and exit 2."""
    checked = flows.check(flows.read(file), str(file))
    if checked.registry is None:
        _problems(checked)
    count = len(checked.registry.flows) if checked.registry else 0
    out.print(f"{file}: ok, {count} flows")


def _read_event(path: Path, event_type: str | None) -> dict[str, Any]:
    try:
        data = json.loads(flows.read(path))
    except ValueError as exc:
        raise errors.BadRequest(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise errors.BadRequest(f"{path}: give a Stripe event or object (a JSON object)")
    if data.get("object") == "event" and isinstance(data.get("data"), dict):
        if not isinstance(data["data"].get("object"), dict) or not data.get("type"):
            raise errors.BadRequest(f"{path}: the event has no type or no data.object")
        return data
    if event_type is None:
        raise errors.BadRequest(
            f"{path} holds a {data.get('object') or 'JSON'} object, not an event: give --type"
        )
    return samples.sample_event(event_type, obj=data, event_id="evt_mappings_test")


@mappings_app.command("test")
def mappings_test(
    ctx: typer.Context,
    event_file: Annotated[
        Path, typer.Option("--event", help="A Stripe event (JSON), or an object with --type.")
    ],
    event_type: Annotated[
        str | None, typer.Option("--type", help="The event type, when --event is an object.")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    flows_file: Annotated[
        Path | None,
        typer.Option("--flows", help="Try this flows file instead of the one in force."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run filters and mappings on a sample event and print what would be written (nothing is)."""
    event = _read_event(event_file, event_type)
    if flows_file is not None:
        checked = flows.check(flows.read(flows_file), str(flows_file))
        if checked.registry is None:
            _problems(checked)
        registry = checked.registry
    else:
        registry = flows.current(_ctx(ctx).db())
    matched = [f for f in registry.for_type(event["type"]) if flow is None or f.name == flow]
    if flow is not None and not any(f.name == flow for f in registry.flows):
        raise errors.BadRequest(f"no flow named {flow!r}")
    results = []
    for f in matched:
        result: dict[str, Any] = {"flow": f.name, "action": f.action.name}
        try:
            values = f.map(event)
        except errors.SnapshotsError as exc:
            result |= {"outcome": "error", "error": errors.describe(exc)}
        else:
            if values is None:
                result |= {"outcome": "filtered out"}
            else:
                result |= {"outcome": "would write", "record": f.action.record, "fields": values}
        results.append(result)
    if as_json:
        _print_json({"event_type": event["type"], "flows": results})
        return
    if not results:
        out.print(f"no flow is triggered by {event['type']}: the event would be ignored")
    for r in results:
        out.print(f"[bold]{r['flow']}[/] ({r['action']}): {r['outcome']}")
        if r.get("error"):
            out.print(f"  {r['error']}", soft_wrap=True)
        for target, value in (r.get("fields") or {}).items():
            out.print(
                f"  {target} = {json.dumps(value, default=str)}", soft_wrap=True, markup=False
            )
    if any(r["outcome"] == "error" for r in results):
        raise typer.Exit(1)


@app.command("send-test-event")
def send_test_event(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None, typer.Argument(metavar="TYPE...", help="Event types to send.")
    ] = None,
    all_types: Annotated[
        bool, typer.Option("--all", help="Send one event of every type in the catalog.")
    ] = False,
    connection: Annotated[
        str | None, typer.Option(help="The connection (default: the only one).")
    ] = None,
    object_file: Annotated[
        Path | None, typer.Option("--object", help="The Stripe object to carry (JSON).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="The Snapshots base URL (default SNAPSHOTS_PUBLIC_URL).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the worker.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Send signed test events through the real webhook endpoint and trace what they did."""
    context = _ctx(ctx)
    database = context.db()
    chosen = list(samples.event_objects()) if all_types else list(types or [])
    if not chosen:
        raise errors.BadRequest("give one or more event types, or --all (see `snapshots catalog`)")
    unknown = [t for t in chosen if t not in samples.event_objects()]
    if unknown:
        raise errors.BadRequest(f"unknown event type(s): {', '.join(unknown)}")
    obj = None
    if object_file is not None:
        try:
            obj = json.loads(flows.read(object_file))
        except ValueError as exc:
            raise errors.BadRequest(f"{object_file} is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise errors.BadRequest(f"{object_file}: give a Stripe object (a JSON object)")
    secrets_vault = vault.load(context.settings)
    conns = connections.choose(database, secrets_vault, connection)
    if len(conns) > 1:
        raise errors.BadRequest("there are several connections: give --connection")
    conn = conns[0]
    secrets = connections.SecretsCache(database, secrets_vault).get(conn.id) or []
    base = (url or context.settings.base_url).rstrip("/")
    events = [samples.sample_event(t, obj=None if obj is None else dict(obj)) for t in chosen]
    traces = samples.send_test_events(
        database,
        secrets,
        flows.current(database),
        url=f"{base}/webhooks/stripe/{conn.id}",
        events=events,
        timeout=timeout,
    )
    if as_json:
        _print_json([t.public() for t in traces])
    else:
        for t in traces:
            out.print(
                f"[bold]{t.type}[/] {t.event_id}: received (HTTP {t.http_status}, item "
                f"{t.item_id}) -> {t.status}"
            )
            for name, record in zip(t.flows, t.records, strict=False):
                out.print(f"  flow {name} -> {record}")
                for target, value in t.fields.get(name, {}).items():
                    out.print(f"    {target} = {json.dumps(value, default=str)}", markup=False)
            if t.error:
                out.print(f"  {t.error}", soft_wrap=True, markup=False)
    if any(t.status in ("dead", "failed", "not received") or t.error for t in traces):
        raise typer.Exit(1)


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
    since_at = None if since is None else sync.parse_since(since)
    entries, _ = audit.page(_ctx(ctx).db(), since=since_at, action=action, limit=limit)
    if as_json:
        _print_json(entries)
        return
    table = Table("when", "actor", "action", "target", "outcome", "from", "details")
    for e in entries:
        table.add_row(
            e["at"],
            e["actor"],
            e["action"],
            e["target"] or "",
            e["outcome"],
            e["ip"] or "",
            json.dumps(e["details"], default=str, ensure_ascii=False),
        )
    out.print(table)


@app.command("catalog")
def catalog_command(as_json: JsonOpt = False) -> None:
    """Every trigger (event type) and action a flow may use."""
    found = catalog.catalog()
    if as_json:
        _print_json(found)
        return
    counts = found["counts"]
    table = Table("action", "records", "options", "scopes", "description")
    for a in found["actions"]:
        table.add_row(
            a["name"],
            ", ".join(a["records"]),
            ", ".join(a["options"]),
            ", ".join(a["scopes"]),
            a["description"],
        )
    out.print(table)
    out.print(
        f"{counts['triggers']} triggers ({counts['stripe_triggers']} Stripe event types and "
        f"{counts['synthetic_triggers']} made by Snapshots; `--json` lists them) and "
        f"{counts['actions']} actions"
    )


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
        sys.exit(
            2 if isinstance(exc, errors.Rejected | errors.ConfigError | errors.ProcessFault) else 1
        )
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
