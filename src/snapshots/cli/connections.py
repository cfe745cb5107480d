"""Linked Stripe accounts: `connect stripe`, `connections list|remove`, `rotate-master-key`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from snapshots import connections, errors, times, vault
from snapshots.cli.base import JsonOpt, actor, app, state
from snapshots.cli.output import clean, err, out, print_json, row, show
from snapshots.outbound import endpoints
from snapshots.store.db import Database

connect_app = typer.Typer(no_args_is_help=True, help="Link an account.")
connections_app = typer.Typer(no_args_is_help=True, help="Linked Stripe accounts.")
app.add_typer(connections_app, name="connections")
app.add_typer(connect_app, name="connect")


def one_connection(
    database: Database, secrets_vault: vault.Vault, connection_id: str | None
) -> connections.Connection:
    """The connection named, or the only one there is."""
    with database.read() as tx:
        found = connections.choose(tx, secrets_vault, connection_id)
    if len(found) > 1:
        raise errors.BadRequest("there are several connections: give --connection")
    return found[0]


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
    context = state(ctx)
    database = context.db()
    secrets_vault = vault.load(context.settings)
    if rotate_webhook_secret is not None:
        if secret_key or webhook_secret:
            raise errors.BadRequest(
                "--rotate-webhook-secret changes a connection: give it with --connection only"
            )
        chosen = one_connection(database, secrets_vault, connection_id)
        seconds = times.parse_duration(overlap, zero=True, name="overlap")
        with database.write() as tx:
            changed = connections.rotate_webhook_secret(
                tx,
                secrets_vault,
                chosen.id,
                rotate_webhook_secret,
                overlap=seconds,
                actor=actor(),
            )
        if as_json:
            print_json(changed)
            return
        show(
            f"{changed.id}: new signing secret …{rotate_webhook_secret.strip()[-4:]} in force; "
            f"the earlier ones work for {overlap} more",
        )
        return
    if not secret_key or not webhook_secret:
        raise errors.BadRequest("give --secret-key and --webhook-secret (whsec_...)")
    connection = connections.connect(
        database,
        secrets_vault,
        secret_key=secret_key,
        webhook_secrets=webhook_secret,
        name=name,
        api_base=api_base,
        api_version=api_version,
        ordering=ordering,
        actor=actor(),
    )
    webhook_url = f"{context.settings.base_url}/webhooks/stripe/{connection.id}"
    if as_json:
        print_json(connection.model_dump(mode="json") | {"webhook_url": webhook_url})
        return
    show(
        f"connected {connection.name} as {connection.id}"
        f" ({'live' if connection.livemode else 'test'} mode, key {connection.secret_key})",
    )
    show(f"register this webhook URL in Stripe: {webhook_url}")


@connections_app.command("list")
def connections_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The linked Stripe accounts (never their secrets: the key's last 4 characters)."""
    context = state(ctx)
    with context.db().read() as tx:
        found = connections.list_all(tx, vault.load(context.settings))
        disabled = endpoints.disabled_names(tx)
    if as_json:
        print_json(found)
        return
    for name in disabled:
        err.print(
            f"warning: webhook endpoint {clean(name)} is disabled; its deliveries are held "
            "(`snapshots endpoints show` says why, `endpoints recover` sends them)",
            markup=False,
        )
    table = Table("id", "name", "account", "mode", "key", "signing secrets", "ordering")
    for c in found:
        row(
            table,
            c.id,
            c.name,
            c.account_id or "",
            "live" if c.livemode else "test",
            c.secret_key,
            str(c.webhook_secrets),
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
    context = state(ctx)
    with context.db().write() as tx:
        removed = connections.remove(tx, vault.load(context.settings), connection_id, actor=actor())
    if as_json:
        print_json(removed)
        return
    show(
        f"removed {removed.id} ({removed.name}); remove its webhook endpoint in Stripe too",
    )


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
    context = state(ctx)
    count = vault.rotate(context.db(), context.settings, new_key=new_key, actor=actor())
    show(f"re-encrypted the secrets of {count} connection(s) with the new master key")
    if context.settings.master_key:
        out.print("now set SNAPSHOTS_MASTER_KEY to the new key alone")
    out.print("restart `snapshots serve` and every `snapshots worker`: they read the key at start")
