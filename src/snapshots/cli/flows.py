"""Flows as configuration: `flows export|import|rollback|versions|diff`, `mappings
show|validate|test`, `send-test-event` and `catalog`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from snapshots import catalog, connections, errors, flowfile, flows, revisions, samples, vault
from snapshots.cli.base import JsonOpt, actor, app, state
from snapshots.cli.connections import one_connection
from snapshots.cli.output import out, print_json, problems, row, show, when
from snapshots.onboarding import endpoint

flows_app = typer.Typer(
    no_args_is_help=True, help="The flows in force: export, import, roll back (versioned)."
)
mappings_app = typer.Typer(no_args_is_help=True, help="Check and try flows files and mappings.")
app.add_typer(flows_app, name="flows")
app.add_typer(mappings_app, name="mappings")


@flows_app.command("export")
def flows_export(
    ctx: typer.Context,
    version: Annotated[
        int | None, typer.Option(min=0, help="A stored version (default: the one in force).")
    ] = None,
) -> None:
    """Print the flows file (YAML) in force, to edit and import again."""
    with state(ctx).db().read() as tx:
        text = revisions.get_revision(tx, version).text or ""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _imported(ctx: typer.Context, imported: revisions.Imported, as_json: bool, said: str) -> None:
    context = state(ctx)
    done = endpoint.after_import(context.db(), lambda: vault.load(context.settings), imported)
    if as_json:
        print_json(done.model_dump(mode="json", exclude={"text"}))
        return
    show(said)
    for sent in done.endpoints:
        if sent.synced:
            show(
                f"{sent.connection_id}: the webhook endpoint {sent.endpoint_id} now listens to "
                f"{sent.events} event types"
            )
        else:
            show(
                f"{sent.connection_id}: the webhook endpoint {sent.endpoint_id} still has the "
                f"old event list: {sent.error}"
            )


@flows_app.command("import")
def flows_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A flows file (YAML).")],
    comment: Annotated[str | None, typer.Option(help="Why, for the history.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a flows file, then put it in force as a new version (a bad file changes nothing)."""
    database = state(ctx).db()
    try:
        imported = revisions.import_text(
            database, flowfile.read(file), where=str(file), actor=actor(), comment=comment
        )
    except flowfile.Invalid as exc:
        problems(exc.problems)
    _imported(
        ctx,
        imported,
        as_json,
        f"flows version {imported.revision.version} is in force ({imported.flows} flows; was "
        f"version {imported.previous})",
    )


@flows_app.command("rollback")
def flows_rollback(
    ctx: typer.Context,
    version: Annotated[
        int, typer.Argument(min=0, max=2**31 - 1, help="The version to put back (0: prebuilt).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Put an earlier version back in force (as a new version: history stays)."""
    imported = revisions.rollback(state(ctx).db(), version, actor=actor())
    _imported(
        ctx,
        imported,
        as_json,
        f"flows version {imported.revision.version} is in force: the flows of version "
        f"{version} (was version {imported.previous})",
    )


@flows_app.command("versions")
def flows_versions(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every version of the flows, newest first (the first is in force)."""
    with state(ctx).db().read() as tx:
        found = revisions.revisions(tx)
    if as_json:
        print_json([v.model_dump(mode="json", exclude={"text"}) for v in found])
        return
    table = Table("version", "in force", "by", "when", "comment")
    for index, v in enumerate(found):
        row(
            table,
            str(v.version),
            "yes" if index == 0 else "",
            v.actor,
            when(v.created_at),
            v.comment or "",
        )
    out.print(table)


@flows_app.command("diff")
def flows_diff(
    ctx: typer.Context,
    old: Annotated[int, typer.Argument(min=0, max=2**31 - 1, help="A version (0: prebuilt).")],
    new: Annotated[
        int | None, typer.Argument(min=0, max=2**31 - 1, help="Another (default: in force).")
    ] = None,
) -> None:
    """What changed in the flows file from one version to another (a unified diff)."""
    with state(ctx).db().read() as tx:
        lines = revisions.diff(tx, old, revisions.current_version(tx) if new is None else new)
    sys.stdout.write("".join(f"{line}\n" for line in lines) or "the two versions are the same\n")


@mappings_app.command("show")
def mappings_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The flows in force: triggers, filter, action and mapped fields."""
    with state(ctx).db().read() as tx:
        registry = revisions.current(tx)
    shown: list[dict[str, Any]] = [
        {
            "name": f.name,
            "trigger": list(f.triggers),
            "filter": None if f.filter is None else f.filter.source,
            "action": f.action.name,
            "options": f.options,
            "fields": {target: e.source for target, e in f.fields},
        }
        for f in registry.flows
    ]
    if as_json:
        print_json({"version": registry.version, "flows": shown})
        return
    show(f"flows version {registry.version}")
    table = Table("flow", "trigger", "filter", "action", "fields")
    for f in shown:
        row(
            table,
            f["name"],
            ", ".join(f["trigger"]),
            f["filter"] or "",
            f["action"],
            "\n".join(f"{k} <- {v}" for k, v in f["fields"].items()),
        )
    out.print(table)


def _checked(file: Path) -> flows.Registry:
    checked = flowfile.check(flowfile.read(file), str(file))
    if checked.registry is None:
        problems(checked.problems)
    return checked.registry


@mappings_app.command("validate")
def mappings_validate(
    file: Annotated[Path, typer.Argument(help="A flows file (YAML).")],
) -> None:
    """Check a flows file: exit 0 when good; else each problem with its file, line, flow and
    field, and exit 2."""
    registry = _checked(file)
    show(f"{file}: ok, {len(registry.flows)} flows")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(flowfile.read(path))
    except ValueError as exc:
        raise errors.BadRequest(f"{path} is not JSON: {exc}") from exc


@mappings_app.command("test")
def mappings_test(
    ctx: typer.Context,
    event_file: Annotated[
        Path, typer.Option("--event", help="A Stripe event (JSON), or an object with --type.")
    ],
    event_type: Annotated[
        str | None, typer.Option("--type", help="The event type, when --event is an object.")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    flows_file: Annotated[
        Path | None,
        typer.Option("--flows", help="Try this flows file instead of the one in force."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run filters and mappings on a sample event and print what would be written (nothing is)."""
    event = samples.as_event(_read_json(event_file), event_type, where=str(event_file))
    if flows_file is not None:
        registry = _checked(flows_file)
    else:
        with state(ctx).db().read() as tx:
            registry = revisions.current(tx)
    results = flows.preview(registry, event, flow=flow)
    if as_json:
        print_json(
            {
                "event_type": event["type"],
                "flows": [r.model_dump(mode="json", exclude_none=True) for r in results],
            }
        )
        return
    if not results:
        show(f"no flow is triggered by {event['type']}: the event would be ignored")
    for r in results:
        target = f" to endpoint {r.record}" if r.outcome == "would send" else ""
        show(f"{r.flow} ({r.action}): {r.outcome}{target}")
        if r.error:
            show(f"  {r.error}")
        for target, value in (r.fields or {}).items():
            show(f"  {target} = {json.dumps(value, default=str)}")
    if any(r.outcome == "error" for r in results):
        raise typer.Exit(1)


@app.command("send-test-event")
def send_test_event(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None, typer.Argument(metavar="TYPE...", help="Event types to send.")
    ] = None,
    all_types: Annotated[
        bool, typer.Option("--all", help="Send one event of every type in the catalog.")
    ] = False,
    connection: Annotated[
        str | None, typer.Option(help="The connection (default: the only one).")
    ] = None,
    object_file: Annotated[
        Path | None, typer.Option("--object", help="The Stripe object to carry (JSON).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="The Snapshots base URL (default SNAPSHOTS_PUBLIC_URL).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the worker.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Send signed test events through the real webhook endpoint and trace what they did."""
    context = state(ctx)
    database = context.db()
    chosen = list(samples.event_objects()) if all_types else list(types or [])
    if not chosen:
        raise errors.BadRequest("give one or more event types, or --all (see `snapshots catalog`)")
    unknown = [t for t in chosen if t not in samples.event_objects()]
    if unknown:
        raise errors.BadRequest(f"unknown event type(s): {', '.join(unknown)}")
    obj = None
    if object_file is not None:
        obj = _read_json(object_file)
        if not isinstance(obj, dict):
            raise errors.BadRequest(f"{object_file}: give a Stripe object (a JSON object)")
    secrets_vault = vault.load(context.settings)
    linked = one_connection(database, secrets_vault, connection)
    secrets = connections.SecretsCache(database, secrets_vault).get(linked.id) or []
    base = (url or context.settings.base_url).rstrip("/")
    events = [samples.sample_event(t, obj=None if obj is None else dict(obj)) for t in chosen]
    with database.read() as tx:
        registry = revisions.current(tx)
    traces = samples.send_test_events(
        database,
        secrets,
        registry,
        url=f"{base}/webhooks/stripe/{linked.id}",
        events=events,
        sender=samples.Sender(actor(), linked.id),
        timeout=timeout,
        flows_at=revisions.at,
    )
    if as_json:
        print_json(traces)
    else:
        for t in traces:
            show(
                f"{t.type} {t.event_id}: received (HTTP {t.http_status}, item "
                f"{t.item_id}) -> {t.status}",
            )
            for name, record in zip(t.flows, t.records, strict=False):
                show(f"  flow {name} -> {record}")
                for target, value in t.fields.get(name, {}).items():
                    show(f"    {target} = {json.dumps(value, default=str)}")
            if t.error:
                show(f"  {t.error}")
    if any(t.status in ("dead", "failed", "not received") or t.error for t in traces):
        raise typer.Exit(1)


@app.command("catalog")
def catalog_command(as_json: JsonOpt = False) -> None:
    """Every trigger (event type) and action a flow may use."""
    found = catalog.catalog()
    if as_json:
        print_json(found)
        return
    table = Table("action", "records", "options", "scopes", "description")
    for a in found.actions:
        row(
            table,
            a.name,
            ", ".join(a.records),
            ", ".join(a.options),
            ", ".join(a.scopes),
            a.description,
        )
    out.print(table)
    for step in found.steps:
        show(f"step `{step.name}`: {step.description}")
    counts = found.counts
    out.print(
        f"{counts['triggers']} triggers ({counts['stripe_triggers']} Stripe event types and "
        f"{counts['synthetic_triggers']} made by Snapshots; `--json` lists them) and "
        f"{counts['actions']} actions"
    )
