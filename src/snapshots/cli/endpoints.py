"""Webhook endpoints: `endpoints create|list|show|test|rotate-secret|recover|disable|enable|remove`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from snapshots import times, vault
from snapshots.cli.base import JsonOpt, actor, app, state
from snapshots.cli.output import out, print_json, row, say, show, when
from snapshots.outbound import delivery, endpoints, guard

endpoints_app = typer.Typer(no_args_is_help=True, help="Where flows send webhooks.")
app.add_typer(endpoints_app, name="endpoints")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The endpoint's name or id.")]


def _show(endpoint: endpoints.WebhookEndpoint) -> None:
    for key, value in endpoint.model_dump(mode="json").items():
        if key != "secret":
            show(f"{key}: {value}")


@endpoints_app.command("create")
def endpoints_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A short name flows use (`endpoint: crm`).")],
    url: Annotated[str, typer.Option(help="Where messages are POSTed (https://...).")],
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an endpoint; its signing secret is printed once and never again."""
    context = state(ctx)
    settings = context.settings
    made = endpoints.create(
        context.db(),
        vault.load(settings),
        name=name,
        url=url,
        description=description,
        allow=guard.Allow.parse(settings.outbound_allow),
        actor=actor(),
    )
    if as_json:
        print_json(made)
        return
    show(f"created endpoint {made.name} ({made.id}) for {made.url}")
    out.print("the signing secret (shown once; give it to the receiver now):")
    say(made.secret)


@endpoints_app.command("list")
def endpoints_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List endpoints (never their secrets)."""
    context = state(ctx)
    with context.db().read() as tx:
        found = endpoints.list_all(tx, vault.load(context.settings))
    if as_json:
        print_json(found)
        return
    table = Table("id", "name", "url", "status", "last success", "failures", "secrets")
    for e in found:
        status = e.status if e.disabled_reason is None else f"{e.status}: {e.disabled_reason}"
        row(
            table,
            e.id,
            e.name,
            e.url,
            status,
            when(e.last_success_at),
            str(e.failures),
            " ".join(e.secrets),
        )
    out.print(table)


@endpoints_app.command("show")
def endpoints_show(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Show one endpoint."""
    context = state(ctx)
    with context.db().read() as tx:
        found = endpoints.get(tx, vault.load(context.settings), name)
    if as_json:
        print_json(found)
        return
    _show(found)


@endpoints_app.command("disable")
def endpoints_disable(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Stop sending; its deliveries are held (kept) until `endpoints recover`."""
    context = state(ctx)
    with context.db().write() as tx:
        found = endpoints.disable(
            tx, vault.load(context.settings), name, reason="disabled by hand", actor=actor()
        )
    if as_json:
        print_json(found)
        return
    show(f"disabled {found.name}: new deliveries are held until `snapshots endpoints recover`")


@endpoints_app.command("enable")
def endpoints_enable(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Send again (held deliveries wait for `endpoints recover`)."""
    context = state(ctx)
    with context.db().write() as tx:
        found = endpoints.enable(tx, vault.load(context.settings), name, actor=actor())
    if as_json:
        print_json(found)
        return
    show(f"enabled {found.name}")


@endpoints_app.command("remove")
def endpoints_remove(
    ctx: typer.Context,
    name: NameArg,
    force: Annotated[
        bool, typer.Option(help="Remove it even with deliveries still to send (dropped).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove an endpoint, its deliveries and their attempts."""
    context = state(ctx)
    with context.db().write() as tx:
        found = endpoints.remove(tx, vault.load(context.settings), name, force=force, actor=actor())
    if as_json:
        print_json(found)
        return
    show(f"removed {found.name}")


@endpoints_app.command("rotate-secret")
def endpoints_rotate_secret(
    ctx: typer.Context,
    name: NameArg,
    overlap: Annotated[
        str, typer.Option(help="How long the old secret keeps signing: 24h, 7d, or 0s (now).")
    ] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """A new signing secret; both sign every message until the overlap ends."""
    context = state(ctx)
    seconds = times.parse_duration(overlap, zero=True, name="overlap")
    with context.db().write() as tx:
        found = endpoints.rotate_secret(
            tx, vault.load(context.settings), name, overlap=seconds, actor=actor()
        )
    if as_json:
        print_json(found)
        return
    show(f"new secret for {found.name}; the old one signs too until {when(time.time() + seconds)}")
    out.print("the new signing secret (shown once):")
    say(found.secret)


@endpoints_app.command("test")
def endpoints_test(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Send a `snapshots.test` message now and print the attempt."""
    context = state(ctx)
    settings = context.settings
    client = guard.client(
        allow=guard.Allow.parse(settings.outbound_allow), timeout=settings.outbound_timeout
    )
    ctx.call_on_close(client.close)
    sent = delivery.send_test(
        context.db(),
        vault.load(settings),
        client,
        name,
        schedule=delivery.Schedule.of(settings),
    )
    if as_json:
        print_json(sent)
        return
    _attempts(sent)
    if sent.status != "succeeded":
        raise typer.Exit(1)


def _attempts(sent: delivery.DeliveryDetail) -> None:
    show(f"delivery {sent.id} to {sent.endpoint}: {sent.status}")
    for number, attempt in enumerate(sent.attempt_log, 1):
        outcome = attempt.error or f"HTTP {attempt.status_code}"
        show(
            f"  attempt {number} at {when(attempt.at)}: {outcome} in {attempt.duration:.3f}s"
            f" via {attempt.address or '-'}"
        )
        if attempt.response:
            show(f"    response: {attempt.response[:500]}")


@endpoints_app.command("recover")
def endpoints_recover(
    ctx: typer.Context,
    name: NameArg,
    since: Annotated[str, typer.Option(help="Deliveries made since: 2d, 2024-01-31, ...")],
    as_json: JsonOpt = False,
) -> None:
    """Queue failed, dead and held deliveries again, oldest first."""
    context = state(ctx)
    moment = times.parse_since(since)
    with context.db().write() as tx:
        count = delivery.recover(
            tx, vault.load(context.settings), name, since=moment, actor=actor()
        )
    if as_json:
        print_json({"requeued": count})
        return
    show(f"queued {count} deliveries again")
