"""The processes: `migrate`, `serve` (API, webhooks and an embedded worker) and `worker`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from snapshots import metrics, readiness, users
from snapshots.cli import users as cli_users
from snapshots.cli.base import app, state
from snapshots.cli.output import out, say
from snapshots.store import db as store


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema."""
    database = state(ctx).db(migrated=False)
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
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="App processes sharing the port (SNAPSHOTS_PROCESSES; default on PostgreSQL: "
            "one per core, half the cores when the database is on this machine; one on SQLite).",
        ),
    ] = None,
) -> None:
    """Migrate, then serve the API and webhooks (with an embedded worker, one however many
    processes serve)."""
    from snapshots import app as http

    context = state(ctx)
    metrics.setup()  # before anything counts: its processes count into shared files
    updates: dict[str, Any] = {}
    if host:
        updates["host"] = host
    if port:
        updates["port"] = port
    if processes:
        updates["processes"] = processes
    settings = context.settings.model_copy(update=updates)
    http.processes(settings)  # SQLite with several: refused before anything starts
    context.in_use()
    database = store.Database(settings.database_url)
    try:
        readiness.startup(database, settings, migrate=True)
        with database.write() as tx:
            token = None if users.admin_exists(tx) else users.new_setup_link(tx, actor="serve")
    finally:
        database.dispose()
    if token is not None:
        out.print("No console admin yet. Open this link within 15 minutes to set one up:")
        say(cli_users.setup_url(settings, token))
        out.print("(or run `snapshots users create-admin --email you@example.com`)")
    http.serve(settings, embedded_worker=worker)


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

    context = state(ctx)
    settings = context.settings
    if health_port is not None:
        settings = settings.model_copy(update={"worker_health_port": health_port})
    readiness.startup(context.db(migrated=False), settings)
    worker.main(settings)
