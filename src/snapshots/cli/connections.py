"""Linked Stripe accounts: `connect stripe [--repair]`, `connections list|check|remove`,
`rotate-master-key`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from snapshots import connections, errors, revisions, times, vault
from snapshots.cli.base import JsonOpt, actor, app, state
from snapshots.cli.output import clean, err, out, print_json, row, show
from snapshots.onboarding import capabilities, health, setup
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
        typer.Option(
            help="Webhook signing secret (whsec_...) of an endpoint you registered by hand; "
            "repeat during a rotation. Without it Snapshots creates the endpoint in Stripe."
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="The URL Stripe reaches this server at (default SNAPSHOTS_PUBLIC_URL).",
            show_default=False,
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Re-enable or re-create --connection's managed webhook endpoint and send it "
            "the flows' event types.",
        ),
    ] = False,
    rotate_webhook_secret: Annotated[
        str | None,
        typer.Option(
            help="Add this new signing secret to --connection; the old ones retire after "
            "--overlap.",
            show_default=False,
        ),
    ] = None,
    connection_id: Annotated[
        str | None,
        typer.Option("--connection", help="The connection (with --rotate-... or --repair)."),
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
    """Check a Stripe key and what it may do, store it encrypted, and create the webhook endpoint
    in Stripe (or take --webhook-secret of one registered by hand); --repair puts a managed
    endpoint right; --rotate-webhook-secret rolls a signing secret."""
    context = state(ctx)
    database = context.db()
    secrets_vault = vault.load(context.settings)
    public_url = public_url or context.settings.public_url
    if repair:
        if secret_key or webhook_secret or rotate_webhook_secret:
            raise errors.BadRequest("--repair changes a connection: give it with --connection")
        chosen = one_connection(database, secrets_vault, connection_id)
        repaired = setup.repair(
            database, secrets_vault, chosen.id, public_url=public_url, actor=actor()
        )
        if as_json:
            print_json(repaired)
            return
        _say_endpoint(repaired)
        return
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
    if not secret_key:
        raise errors.BadRequest("give --secret-key (sk_... or rk_...; or set STRIPE_SECRET_KEY)")
    connected = setup.connect(
        database,
        secrets_vault,
        secret_key=secret_key,
        webhook_secrets=webhook_secret,
        # a manual endpoint's URL is only printed: the local address will do without a public one
        public_url=public_url or (context.settings.base_url if webhook_secret else None),
        name=name,
        api_base=api_base,
        api_version=api_version,
        ordering=ordering,
        actor=actor(),
    )
    if as_json:
        print_json(connected)
        return
    show(
        f"connected {connected.name} as {connected.id}"
        f" ({'live' if connected.livemode else 'test'} mode, key {connected.secret_key})",
    )
    show_capabilities(connected.capabilities or [])
    if connected.endpoint_created:
        _say_endpoint(connected)
    else:
        show(f"register this webhook URL in Stripe: {connected.webhook_url}")


def show_capabilities(found: list[capabilities.Capability]) -> None:
    """What the key may do, one capability a line, when it may not do everything."""
    if all(c.allowed for c in found):
        return
    show("what this key may do:")
    for c in found:
        show(f"  {capabilities.off([c], c.name) or c.label + ': allowed'}")


def _say_endpoint(done: setup.Connected) -> None:
    endpoint_id = done.endpoint_id
    if done.endpoint_created:
        show(
            f"created the webhook endpoint {endpoint_id} in Stripe: {done.webhook_url}, "
            f"{done.events} event types; its signing secret is stored encrypted"
        )
    else:
        enabled = "enabled it again, " if done.endpoint_enabled else ""
        show(
            f"repaired the webhook endpoint {endpoint_id}: {enabled}{done.webhook_url}, "
            f"{done.events} event types"
        )


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
    table = Table("id", "name", "account", "mode", "key", "endpoint", "health", "reason")
    for c in found:
        row(
            table,
            c.id,
            c.name,
            c.account_id or "",
            "live" if c.livemode else "test",
            c.secret_key,
            (c.endpoint_id or "") + (" (pending)" if c.endpoint_pending else "")
            if c.managed
            else "manual",
            c.health or "unchecked",
            health.reason(c),
        )
    out.print(table)
    for c in found:
        for capability in c.capabilities or ():
            if not capability.allowed:
                show(f"{c.id}: {capabilities.off([capability], capability.name)}")


@connections_app.command("check")
def connections_check(
    ctx: typer.Context,
    connection_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Default: every connection.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check now that each connection works: its key, its managed webhook endpoint, webhooks
    arriving. Each problem comes with its fix; exits 1 when one fails."""
    context = state(ctx)
    database = context.db()
    secrets_vault = vault.load(context.settings)
    with database.read() as tx:
        chosen = connections.choose(tx, secrets_vault, connection_id)
        registry = revisions.current(tx)
    results = [
        health.check(
            database,
            secrets_vault,
            c,
            registry,
            public_url=context.settings.public_url,
            actor=actor(),
        )
        for c in chosen
    ]
    if as_json:
        print_json(results)
    else:
        for result in results:
            show(f"{result.connection_id}: {result.health}: {result.reason}")
            for problem in result.problems:
                show(f"  {problem.problem}: {problem.fix}")
    if any(r.health != "healthy" for r in results):
        raise typer.Exit(1)


@connections_app.command("remove")
def connections_remove(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Forget a connection and its secrets (its records and events stay); its managed webhook
    endpoint is deleted in Stripe (an endpoint registered by hand is left alone)."""
    context = state(ctx)
    removed = setup.remove(context.db(), vault.load(context.settings), connection_id, actor=actor())
    if as_json:
        print_json(removed)
        return
    deleted = (
        f"; deleted its webhook endpoint {removed.endpoint_id} in Stripe"
        if removed.endpoint_deleted
        else ""
    )
    show(f"removed {removed.id} ({removed.name}){deleted}")
    if removed.note:
        show(removed.note)


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
