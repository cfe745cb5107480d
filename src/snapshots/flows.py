"""Flows: trigger + filter + mapping + action, as they run.

A `Flow` is one compiled flow of a flows file (see `flowfile`): the event types it is
triggered by (`*` wildcards allowed: `invoice.*`), an optional filter (a JMESPath expression
that must give a boolean), its action with the action's options, and its mapped fields
(target field: JMESPath expression over the event's Stripe object; `$event` is the whole
event). A `Registry` holds the flows in force and says which an event starts; `preview`
shows what they would write without writing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel

from snapshots import actions, errors, mapping, samples
from snapshots.records import batch
from snapshots.store.db import Tx


@cache
def known_event_types() -> tuple[str, ...]:
    return tuple(samples.event_objects())


@dataclass(frozen=True)
class Flow:
    name: str
    triggers: tuple[str, ...]
    action: actions.Action
    filter: mapping.Expression | None
    fields: tuple[tuple[str, mapping.Expression], ...]
    options: dict[str, Any]
    description: str | None = None

    def matches(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.triggers)

    def keeps(self, event: dict[str, Any]) -> bool:
        """The filter's verdict on the event (True without a filter)."""
        if self.filter is None:
            return True
        with mapping.for_event(event):
            try:
                keep = self.filter.evaluate(event["data"]["object"])
            except errors.DeadLetter as exc:
                raise errors.DeadLetter(
                    f"flow {self.name!r}: filter: {exc}", code=exc.code
                ) from exc
        if not isinstance(keep, bool):
            raise errors.DeadLetter(
                f"flow {self.name!r}: filter {self.filter.source!r} gave {keep!r}, not a boolean",
                code="filter_not_boolean",
            )
        return keep

    def map(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Filter and mapping (no database): the fields to write, or None when the filter
        leaves the event out."""
        if not self.keeps(event):
            return None
        obj = event["data"]["object"]
        values = {}
        with mapping.for_event(event):
            for target, expression in self.fields:
                try:
                    values[target] = expression.evaluate(obj)
                except errors.DeadLetter as exc:
                    raise errors.DeadLetter(
                        f"flow {self.name!r}: field {target!r}: {exc}", code=exc.code
                    ) from exc
        return values

    def write(
        self,
        tx: Tx,
        values: dict[str, Any],
        *,
        connection_id: str,
        event: dict[str, Any],
        test: bool,
    ) -> str:
        """The action, with fields `map` produced; returns the record id."""
        call = actions.Invocation(
            connection_id=connection_id,
            event=event,
            test=test,
            options=self.options,
            flow=self.name,
        )
        return self.action.run(tx, call, values)


Plan = list[tuple[Flow, dict[str, Any]]]


class Registry:
    """The active flows, and which of them an event type starts (memoised per type)."""

    def __init__(self, flows: list[Flow], *, version: int = 0) -> None:
        self.flows = flows
        self.version = version
        self._by_type: dict[str, list[Flow]] = {}

    def for_type(self, event_type: str) -> list[Flow]:
        found = self._by_type.get(event_type)
        if found is None:
            found = [flow for flow in self.flows if flow.matches(event_type)]
            if len(self._by_type) < 10_000:
                self._by_type[event_type] = found
        return found

    def wants(self, event_type: str) -> bool:
        return bool(self.for_type(event_type))

    def plan(self, event: dict[str, Any]) -> Plan:
        """Filter and map the event for every flow it starts (no database, so a worker does
        this before it takes a write lock); the flows whose filter passed, with their fields."""
        planned = []
        for flow in self.for_type(event["type"]):
            values = flow.map(event)
            if values is not None:
                planned.append((flow, values))
        return planned

    def execute(
        self,
        tx: Tx,
        plan: Plan,
        *,
        connection_id: str,
        event: dict[str, Any],
        test: bool = False,
    ) -> list[tuple[str, str]]:
        """Run the actions of a plan; returns (flow name, record id) for each."""
        return [
            (
                flow.name,
                flow.write(tx, values, connection_id=connection_id, event=event, test=test),
            )
            for flow, values in plan
        ]

    def upserts(
        self, plan: Plan, *, connection_id: str, event: dict[str, Any], test: bool = False
    ) -> list[batch.Upsert] | None:
        """The plan's writes as whole-record upserts, for `records.batch`; None when one of its
        actions is another kind of write (it then runs alone, through `execute`)."""
        found = []
        for flow, values in plan:
            if flow.action.upsert is None:
                return None
            call = actions.Invocation(
                connection_id=connection_id,
                event=event,
                test=test,
                options=flow.options,
                flow=flow.name,
            )
            found.append(flow.action.upsert(call, values))
        return found

    def apply(
        self, tx: Tx, *, connection_id: str, event: dict[str, Any], test: bool = False
    ) -> list[tuple[str, str]]:
        """Run every flow the event starts; returns (flow name, record id) for those that ran."""
        return self.execute(
            tx, self.plan(event), connection_id=connection_id, event=event, test=test
        )


class Outcome(BaseModel):
    """What one flow would do with an event: write (and what), leave it out, or fail."""

    flow: str
    action: str
    outcome: Literal["would write", "filtered out", "error"]
    record: str | None = None
    fields: dict[str, Any] | None = None
    error: str | None = None


def preview(registry: Registry, event: dict[str, Any], *, flow: str | None = None) -> list[Outcome]:
    """Run the filters and mappings of the flows `event` triggers (only `flow`, when named) and
    say what each would write; nothing is written. The same code the worker runs."""
    if flow is not None and not any(f.name == flow for f in registry.flows):
        raise errors.BadRequest(f"no flow named {flow!r}")
    found = []
    for candidate in registry.for_type(event["type"]):
        if flow is not None and candidate.name != flow:
            continue
        name, action = candidate.name, candidate.action
        try:
            values = candidate.map(event)
        except errors.SnapshotsError as exc:
            error = errors.describe(exc)
            found.append(Outcome(flow=name, action=action.name, outcome="error", error=error))
            continue
        if values is None:
            found.append(Outcome(flow=name, action=action.name, outcome="filtered out"))
        else:
            found.append(
                Outcome(
                    flow=name,
                    action=action.name,
                    outcome="would write",
                    record=action.record,
                    fields=values,
                )
            )
    return found
