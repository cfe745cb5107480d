"""The `snapshots` command: a module per command group, each thin (parse, call one domain
function, print). `main` turns every error into one readable line and a non-zero exit."""

from __future__ import annotations

import sys
import traceback

import click
import sqlalchemy as sa
import typer

from snapshots import errors

# Each command group's module adds its commands to `app` when it is imported.
from snapshots.cli import (  # noqa: F401
    audit,
    backup,
    connections,
    deliveries,
    endpoints,
    events,
    flows,
    init,
    keys,
    output,
    prune,
    serve,
    sync,
    users,
)
from snapshots.cli.base import app


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
        sys.stderr.write(f"error: {output.clean(errors.describe(exc))}\n")
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
            f"error: unexpected {type(exc).__name__}: {output.clean(errors.describe(exc))} "
            "(run with -v for details)\n"
        )
        sys.exit(1)
