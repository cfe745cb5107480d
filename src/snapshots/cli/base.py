"""The `snapshots` command's root: the Typer app, its global options, and what every command
shares (its settings, its database, who it acts as)."""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from snapshots import errors
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import lock as store_lock

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Keep Snapshots locations, contacts and invoices in step with Stripe.",
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@dataclass
class CliState:
    """The command being run: its settings, and what it opens (closed when it ends)."""

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


def state(ctx: typer.Context) -> CliState:
    found: CliState = ctx.obj
    return found


def actor() -> str:
    """Who changes something from this shell, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


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
    ctx.obj = CliState(Settings(**overrides), ctx)
