"""API keys: `keys create|list|rotate|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from snapshots import keys, times
from snapshots.cli.base import JsonOpt, actor, app, state
from snapshots.cli.output import out, print_json, row, say, show, when

keys_app = typer.Typer(no_args_is_help=True, help="API keys for the Snapshots API.")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option(help=f"Repeat for each scope: {', '.join(keys.SCOPES)}.")
    ],
    expires_in: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d or 12h.")] = None,
    connection: Annotated[
        list[str] | None,
        typer.Option(
            help="Limit the key to this connection's records and events; repeat for several."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; it is printed once and never again."""
    context = state(ctx)
    lifetime = times.parse_duration(expires_in, longest=keys.MAX_LIFETIME) if expires_in else None
    with context.db().write() as tx:
        made = keys.create(
            tx,
            name=name,
            scopes=scope,
            env=context.settings.key_env,
            expires_in=lifetime,
            actor=actor(),
            connections=connection or None,
        )
    if as_json:
        print_json(made)
        return
    limited = f", for {', '.join(made.connections)} only" if made.connections else ""
    show(f"created {made.id} with scopes {', '.join(made.scopes)}{limited}")
    out.print("the key (shown once; store it now):")
    say(made.secret)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List API keys (never the keys themselves)."""
    with state(ctx).db().read() as tx:
        found = keys.list_all(tx)
    if as_json:
        print_json(found)
        return
    table = Table(
        "id", "name", "key", "scopes", "connections", "status", "expires", "last used", "from"
    )
    for k in found:
        row(
            table,
            k.id,
            k.name,
            k.key,
            " ".join(k.scopes),
            " ".join(k.connections) if k.connections is not None else "all",
            k.status,
            when(k.expires_at),
            when(k.last_used_at),
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
    context = state(ctx)
    seconds = times.parse_duration(overlap, zero=True, name="overlap")
    with context.db().write() as tx:
        new = keys.rotate(tx, key_id, overlap=seconds, env=context.settings.key_env, actor=actor())
    if as_json:
        print_json(new)
        return
    show(
        f"created {new.id} with scopes {', '.join(new.scopes)}; {new.previous.id} works until "
        f"{when(new.previous.expires_at)}",
    )
    out.print("the new key (shown once; store it now):")
    say(new.secret)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key at once."""
    with state(ctx).db().write() as tx:
        api_key = keys.revoke(tx, key_id, actor=actor())
    if as_json:
        print_json(api_key)
        return
    show(f"revoked {api_key.id}")
