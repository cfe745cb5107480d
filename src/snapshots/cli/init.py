"""`snapshots init`: the first-run guide for a terminal.

It asks (Rich prompts) for what a first deployment needs, each question also a flag, so
`--no-input` does the same unattended: the database (migrated), the public URL, the Stripe key
(hidden), a managed or pasted webhook signing secret (`connect stripe`), a first backfill
(`sync`), an API key with scopes picked from the catalog, and the web console's first admin
(email, hidden password). It is safe to run again: what
exists already (the schema, an admin, a connection, the backfill, the key) is found, kept and said so.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
import typer
from rich.prompt import Confirm, Prompt
from rich.table import Table

from snapshots import connections, errors, keys, sync, users, vault
from snapshots.cli import connections as connections_cli
from snapshots.cli import sync as sync_cli
from snapshots.cli import users as users_cli
from snapshots.cli.base import actor, app, state
from snapshots.cli.output import out, row, say, show
from snapshots.onboarding import setup
from snapshots.store import db as store

KEY_NAME = "first key (snapshots init)"
DEFAULT_SCOPES = ("saas/location.read", "contacts.readonly", "invoices.readonly", "events.readonly")


def _shown(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _ask(
    question: str,
    given: str | None,
    *,
    no_input: bool,
    default: str | None = None,
    secret: bool = False,
) -> str | None:
    """The flag's value, else (interactive) the answer, else the default."""
    if given is not None or no_input:
        return given if given is not None else default
    answer = Prompt.ask(question, default=default, password=secret, show_default=not secret)
    return answer.strip() or None if answer is not None else None


def _pick_scopes(no_input: bool, given: list[str] | None) -> list[str]:
    if given:
        return given
    if no_input:
        return list(DEFAULT_SCOPES)
    table = Table("#", "scope", "what it allows")
    for number, (scope, description) in enumerate(keys.SCOPE_DESCRIPTIONS.items(), 1):
        row(table, str(number), scope, description)
    out.print(table)
    default = ",".join(str(list(keys.SCOPES).index(s) + 1) for s in DEFAULT_SCOPES)
    answer = Prompt.ask(
        "Scopes for the API key (numbers or names, comma-separated)", default=default
    )
    picked = []
    for part in (p.strip() for p in answer.split(",")):
        if part.isdigit() and 1 <= int(part) <= len(keys.SCOPES):
            picked.append(keys.SCOPES[int(part) - 1])
        elif part:
            picked.append(part)
    return picked


def _first_admin(
    database: store.Database, email: str | None, password_stdin: bool, *, no_input: bool
) -> None:
    """The web console's first admin: found and kept, or made from the answers; skipped (with
    how to make one later) when `--no-input` names none."""
    with database.read() as tx:
        admins = [u for u in users.list_all(tx) if u.admin]
    if admins:
        show(f"console admin {admins[0].email}: found, kept")
        return
    email = _ask("Email of the web console's first admin", email, no_input=no_input)
    if not email:
        show(
            "console admin: none yet; `snapshots serve` prints a one-time set-up link, or run "
            "`snapshots users create-admin --email ...`"
        )
        return
    if no_input and not password_stdin:
        raise errors.BadRequest("give the admin's password with --admin-password-stdin")
    password = users_cli.new_password(password_stdin)
    with database.write() as tx:
        made = users.create(tx, email=email, password=password, role="admin", actor=actor())
    show(f"console admin {made.email}: created; sign in at /sign-in")


@app.command("init")
def init(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option("--database", help="Database URL (default: SQLite here).")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL Stripe reaches this server at (SNAPSHOTS_PUBLIC_URL)."),
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option(
            help="Stripe secret (sk_...) or restricted (rk_...) key.",
            envvar="STRIPE_SECRET_KEY",
            show_envvar=False,
        ),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            help="A signing secret (whsec_...) of an endpoint you registered by hand; "
            "without it Snapshots creates the endpoint in Stripe."
        ),
    ] = None,
    api_base: Annotated[str | None, typer.Option(help="A Stripe-compatible API base URL.")] = None,
    backfill: Annotated[
        bool | None,
        typer.Option("--backfill/--no-backfill", help="Run a first backfill (default: yes)."),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="A scope of the first API key; repeat (default: the read scopes)."),
    ] = None,
    api_key: Annotated[
        bool, typer.Option("--api-key/--no-api-key", help="Make a first API key.")
    ] = True,
    admin_email: Annotated[
        str | None, typer.Option(help="Email of the web console's first admin.")
    ] = None,
    admin_password_stdin: Annotated[
        bool,
        typer.Option(
            "--admin-password-stdin",
            help="Read the first admin's password from the first line of stdin (no prompt).",
        ),
    ] = False,
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Ask nothing: flags, settings and defaults.")
    ] = False,
) -> None:
    """First-run guide: database, Stripe connection and webhook endpoint, first backfill, first
    API key. Safe to run again: it keeps what exists and says so."""
    context = state(ctx)
    settings = context.settings
    url = _ask("Database URL", database_url, no_input=no_input, default=settings.database_url)
    settings = settings.model_copy(update={"database_url": url or settings.database_url})
    context.settings = settings
    database = context.db(migrated=False)
    if store.is_migrated(database):
        show(f"database {_shown(settings.database_url)}: found, schema up to date")
    else:
        store.migrate(database)
        show(f"database {_shown(settings.database_url)}: created the schema")
    _first_admin(database, admin_email, admin_password_stdin, no_input=no_input)
    secrets = vault.load(settings)
    with database.read() as tx:
        found = connections.list_all(tx, secrets)
    if found:
        for c in found:
            kind = (
                f"managed endpoint {c.endpoint_id}" if c.managed else "endpoint registered by hand"
            )
            show(f"connection {c.id} ({c.name}, key {c.secret_key}, {kind}): found, kept")
        connection = found[0]
    else:
        public = _ask(
            "Public URL Stripe reaches this server at",
            public_url,
            no_input=no_input,
            default=settings.public_url,
        )
        key = _ask(
            "Stripe secret key (sk_... or rk_...)", secret_key, no_input=no_input, secret=True
        )
        if not key:
            raise errors.BadRequest("give --secret-key (sk_... or rk_...) to connect Stripe")
        pasted = webhook_secret
        if (
            pasted is None
            and not no_input
            and not Confirm.ask(
                "Let Snapshots create the webhook endpoint in Stripe?", default=True
            )
        ):
            pasted = _ask("Webhook signing secret (whsec_...)", None, no_input=False, secret=True)
        connected = setup.connect(
            database,
            secrets,
            secret_key=key,
            webhook_secrets=[pasted] if pasted else None,
            public_url=public or (settings.base_url if pasted else None),
            api_base=api_base,
            actor=actor(),
        )
        connection = connected
        show(f"connection {connection.id}: connected ({connection.secret_key})")
        connections_cli.show_capabilities(connected.capabilities or [])
        if connected.endpoint_created:
            show(
                f"created the webhook endpoint {connection.endpoint_id}: {connected.webhook_url}, "
                f"{connected.events} event types"
            )
        else:
            show(f"register this webhook URL in Stripe: {connected.webhook_url}")
    with database.read() as tx:
        done = sync.last_backfill(tx, connection.id)
    if done is not None:
        show(f"backfill {done.id} of {connection.id}: found, not run again")
    elif (
        backfill
        if backfill is not None
        else (no_input or Confirm.ask("Run a first backfill from Stripe now?", default=True))
    ):
        sync_cli.sync_command(
            ctx,
            connection=connection.id,
            objects=None,
            since=None,
            reconcile=False,
            status=False,
            as_json=False,
        )
    with database.read() as tx:
        made = [k for k in keys.list_all(tx) if k.name == KEY_NAME and k.status == "active"]
    if made:
        show(f"API key {made[0].id} ({made[0].key}): found, kept (its secret was shown once)")
    elif api_key:
        chosen = _pick_scopes(no_input, scope)
        with database.write() as tx:
            created = keys.create(
                tx, name=KEY_NAME, scopes=chosen, env=settings.key_env, actor=actor()
            )
        show(f"API key {created.id} with scopes {', '.join(created.scopes)}; shown once:")
        say(created.secret)
    show("ready: start `snapshots serve` (it applies what Stripe sends and a backfill read)")
