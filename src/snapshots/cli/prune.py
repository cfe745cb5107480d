"""Retention: `prune`."""

from __future__ import annotations

from typing import Annotated

import typer

from snapshots import retention, times
from snapshots.cli.base import JsonOpt, app, state
from snapshots.cli.output import print_json, say


@app.command("prune")
def prune_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would go; change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Prune what retention lets go now: payloads of settled inbox items older than
    SNAPSHOTS_EVENT_RETENTION (dead ones after 90 days), audit entries older than
    SNAPSHOTS_AUDIT_RETENTION when set. The worker does this by itself, in small batches."""
    settings = state(ctx).settings
    db = state(ctx).db()
    cutoffs = retention.Cutoffs.of(settings)
    if dry_run:
        with db.read() as tx:
            found = retention.due(tx, cutoffs)
    else:
        state(ctx).in_use()
        found = retention.prune(db, cutoffs)
    if as_json:
        print_json(found.model_dump(mode="json") | {"dry_run": dry_run})
        return
    verb = "would prune" if dry_run else "pruned"
    say(
        f"{verb} the payloads of {found.payloads} done or ignored inbox item(s) settled before "
        f"{times.iso(found.settled_before)}"
    )
    say(
        f"{verb} the payloads of {found.dead_payloads} dead inbox item(s) settled before "
        f"{times.iso(found.dead_before)}"
    )
    if found.audit_before is None:
        say("audit entries are kept (SNAPSHOTS_AUDIT_RETENTION is not set)")
    else:
        say(f"{verb} {found.audit_entries} audit entries before {times.iso(found.audit_before)}")
    say("item rows stay (dedup keys and history); only their raw bytes go")
