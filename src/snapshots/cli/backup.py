"""Copies of the database: `backup` and `restore` (SQLite), or the PostgreSQL commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from snapshots import backup
from snapshots.cli.base import JsonOpt, app, state
from snapshots.cli.output import print_json, say, size


def _postgres_commands(url: str, file: Path, *, as_json: bool, restoring: bool) -> None:
    dump, restore = backup.postgres_commands(url, file)
    if as_json:
        print_json({"database": "postgresql", "backup": dump, "restore": restore})
        return
    if restoring:
        say("PostgreSQL: stop every snapshots serve and worker, then restore with pg_restore:")
        say(f"  {restore}")
    else:
        say("PostgreSQL: back up with pg_dump (it copies a live database consistently):")
        say(f"  {dump}")
        say("restore it later (every snapshots serve and worker stopped) with:")
        say(f"  {restore}")
    if dump.startswith(backup.PASSWORD_PLACEHOLDER):
        say("put the password in place of <password> (or in ~/.pgpass); it is never printed")
    say(
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
    settings = state(ctx).settings
    if backup.is_postgres(settings.database_url):
        _postgres_commands(settings.database_url, file, as_json=as_json, restoring=False)
        return
    result = backup.backup(settings, file, force=force)
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if as_json:
        print_json(result)
        return
    say(
        f"backed up {settings.sqlite_path} to {result.database} ({size(result.size)}, schema "
        f"{result.revision}, {result.seconds:.2f} s)"
    )
    if result.key_file is not None:
        say(
            f"master key copied to {result.key_file} (0600): keep it with the backup, the Stripe "
            "secrets in it decrypt only with that key"
        )
    elif result.key_source == "env":
        say(
            "the secrets in it decrypt only with SNAPSHOTS_MASTER_KEY: keep that key with the "
            "backup"
        )
    else:
        say("no master key file exists yet: nothing in the database is encrypted")
    say(f"restore it with: snapshots restore {result.database}")


@app.command("restore")
def restore_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A backup made by `snapshots backup`.")],
    as_json: JsonOpt = False,
) -> None:
    """Put a backup in place of the database (SQLite; snapshots must be stopped): the current
    one is kept aside. For PostgreSQL, print the pg_restore command."""
    settings = state(ctx).settings
    if backup.is_postgres(settings.database_url):
        _postgres_commands(settings.database_url, file, as_json=as_json, restoring=True)
        return
    result = backup.restore(settings, file)
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if as_json:
        print_json(result)
        return
    say(
        f"restored {result.source} into {result.database} ({size(result.size)}, schema "
        f"{result.revision}, {result.seconds:.2f} s)"
    )
    if result.upgraded_to:
        say(f"upgraded its schema from {result.revision} to {result.upgraded_to}")
    for kept in result.kept:
        say(f"kept the previous file as {kept}")
    if result.key_file is not None:
        say(f"master key restored to {result.key_file} from {backup.key_path(file.absolute())}")
    elif result.key_source == "env":
        say("the master key in force is SNAPSHOTS_MASTER_KEY")
    elif result.key_source == "file":
        say("no master key beside the backup: the key file in force stays")
    say("start snapshots serve (and any workers) again")
