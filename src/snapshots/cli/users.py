"""Console users: `users create-admin|create|list|remove|set-up-link`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from snapshots import errors, users
from snapshots.cli.base import CliState, JsonOpt, actor, app, state
from snapshots.cli.output import out, print_json, row, say, show, when
from snapshots.settings import Settings

users_app = typer.Typer(no_args_is_help=True, help="Who may use the web console.")
app.add_typer(users_app, name="users")

Email = Annotated[str, typer.Option(help="The person's email (their sign-in name).")]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin (no prompt)."
    ),
]


def new_password(from_stdin: bool) -> str:
    """A new password: the first line of stdin, or typed twice (hidden)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Password again", hide_input=True) != first:
        raise errors.BadRequest("the two passwords differ")
    return str(first)


def _create(context: CliState, email: str, role: str, from_stdin: bool, as_json: bool) -> None:
    database = context.db()
    password = new_password(from_stdin)
    with database.write() as tx:
        user = users.create(tx, email=email, password=password, role=role, actor=actor())
    if as_json:
        print_json(user)
        return
    show(
        f"created {user.role} {user.email} ({user.id}); sign in at {context.settings.base_url}/sign-in"
    )


@users_app.command("create-admin")
def users_create_admin(
    ctx: typer.Context,
    email: Email,
    password_stdin: PasswordStdin = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a console admin (the password is prompted for, or read with --password-stdin)."""
    _create(state(ctx), email, "admin", password_stdin, as_json)


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    email: Email,
    role: Annotated[
        str, typer.Option(help="admin (everything) or viewer (reads only).")
    ] = "viewer",
    password_stdin: PasswordStdin = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a console user with a role."""
    _create(state(ctx), email, role, password_stdin, as_json)


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List console users."""
    with state(ctx).db().read() as tx:
        found = users.list_all(tx)
    if as_json:
        print_json(found)
        return
    table = Table("id", "email", "role", "created")
    for user in found:
        row(table, user.id, user.email, user.role, when(user.created_at))
    out.print(table)


@users_app.command("remove")
def users_remove(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(metavar="ID_OR_EMAIL")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a console user and end their sessions (never the last admin)."""
    with state(ctx).db().write() as tx:
        found = users.find(tx, user) if "@" in user else users.get(tx, user)
        removed = users.remove(tx, found.id, actor=actor())
    if as_json:
        print_json(removed)
        return
    show(f"removed {removed.email} ({removed.id})")


def setup_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/setup/{token}"


@users_app.command("set-up-link")
def users_set_up_link(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="The role of the user the link makes.")] = "admin",
    email: Annotated[
        str | None,
        typer.Option(help="Only for this email; for an existing user it sets a new password."),
    ] = None,
) -> None:
    """Print a one-time set-up link (15 minutes) where someone sets their email and password."""
    context = state(ctx)
    with context.db().write() as tx:
        token = users.new_setup_link(tx, role=role, email=email, actor=actor())
    out.print(f"set-up link for a new {role} (works once, for 15 minutes):")
    say(setup_url(context.settings, token))
