"""The operations catalog: every trigger and every action, generated from the registry.

Triggers are the event types Snapshots knows (Stripe's list shipped as package data, plus the
synthetic ones it makes itself); actions are `actions.ACTIONS`. Nothing here is a hand-kept
list, so the catalog cannot drift from what a flows file may use.
"""

from __future__ import annotations

import functools

from pydantic import BaseModel, Field

from snapshots import actions, samples

# What the last part of an event type says happened, in words.
_VERBS = {
    "created": "was created",
    "updated": "was updated",
    "deleted": "was deleted",
    "synced": "was read by a backfill (`snapshots sync`)",
}
_MADE_BY_SNAPSHOTS = {
    "terminal.location.created": "the location watcher",
    "terminal.location.updated": "the location watcher",
    "terminal.location.deleted": "the location watcher",
    "customer.synced": "a backfill",
    "invoice.synced": "a backfill",
}


def describe(event_type: str, obj: str) -> str:
    """A sentence for an event type, from its name and object (`A customer was created.`)."""
    verb = event_type.rsplit(".", 1)[-1]
    noun = obj.replace("_", " ").replace(".", " ")
    happened = _VERBS.get(verb, verb.replace("_", " "))
    if verb in _VERBS:
        text = f"A {noun} {happened}."
    else:
        text = f"A {noun}: {happened}."
    made_by = _MADE_BY_SNAPSHOTS.get(event_type)
    return f"{text} Made by Snapshots ({made_by})." if made_by else text


class Trigger(BaseModel):
    type: str
    object: str
    description: str
    synthetic: bool = Field(description="Made by Snapshots, not sent by Stripe")


class ActionSpec(BaseModel):
    name: str
    records: list[str]
    targets: list[str]
    nested_targets: list[str]
    options: list[str]
    required: list[str]
    scopes: list[str] = Field(description="The API scopes that may write what it writes")
    description: str


class StepKind(BaseModel):
    name: str
    syntax: str
    description: str


# What a flow's `steps` may hold besides actions (flowfile.StepSpec).
STEP_KINDS = (
    StepKind(
        name="wait",
        syntax="- wait: 3d",
        description="Wait a number of seconds, minutes, hours or days (s, m, h, d), then run "
        "the next steps. A row in the database: survives restarts, fires once, cancelled when "
        "its flow is removed.",
    ),
    StepKind(
        name="if",
        syntax="- if: \"status != 'paid'\"\n  action: ...",
        description="A JMESPath condition on an action step: false ends the run as skipped, "
        "with the reason. Before any wait it reads the Stripe object; after a wait, the "
        "record the event is about as the API shows it now.",
    ),
)


class Catalog(BaseModel):
    counts: dict[str, int]
    triggers: list[Trigger]
    actions: list[ActionSpec]
    steps: list[StepKind] = Field(description="What `steps` may hold besides actions")


def triggers() -> list[Trigger]:
    return [
        Trigger(
            type=event_type,
            object=obj,
            description=describe(event_type, obj),
            synthetic=event_type in samples.SYNTHETIC_OBJECTS,
        )
        for event_type, obj in sorted(samples.event_objects().items())
    ]


def _action(action: actions.Action) -> ActionSpec:
    variants = [action, *action.variants]
    return ActionSpec(
        name=action.name,
        records=[v.record for v in variants],
        targets=sorted(action.targets),
        nested_targets=sorted(f"{name}.*" for name in action.nested),
        options=list(action.options),
        required=list(action.required),
        scopes=sorted({v.scope for v in variants}),
        description=action.description,
    )


@functools.cache
def catalog() -> Catalog:
    """Every trigger and action (built once: it depends on the code only)."""
    found_triggers = triggers()
    found_actions = [_action(action) for _, action in sorted(actions.ACTIONS.items())]
    return Catalog(
        counts={
            "triggers": len(found_triggers),
            "stripe_triggers": sum(not t.synthetic for t in found_triggers),
            "synthetic_triggers": sum(t.synthetic for t in found_triggers),
            "actions": len(found_actions),
        },
        triggers=found_triggers,
        actions=found_actions,
        steps=list(STEP_KINDS),
    )
