"""Flows: trigger + filter + mapping + action, loaded from YAML and validated with pydantic.

The prebuilt flows ship as `defaults/flows.yaml`. A trigger is an event type or a pattern with
`*` (`invoice.*`); it must match at least one known event type (Stripe's 265 plus the synthetic
`terminal.location.*` events of the location watcher).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from sqlalchemy.engine import Connection

from snapshots import actions, errors, mapping

# Events Stripe never sends, made by Snapshots itself: the location watcher's, and the
# `*.synced` events of a backfill (an object as a list endpoint returned it).
SYNTHETIC_TYPES = (
    "terminal.location.created",
    "terminal.location.updated",
    "terminal.location.deleted",
    "customer.synced",
    "invoice.synced",
)


@cache
def known_event_types() -> tuple[str, ...]:
    data = resources.files("snapshots").joinpath("data/event-types.json").read_text()
    return tuple(entry["type"] for entry in json.loads(data)) + SYNTHETIC_TYPES


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    trigger: list[str]
    filter: str | None = None
    action: str
    options: dict[str, Any] = {}
    fields: dict[str, str] = {}

    @field_validator("trigger", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FlowsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flows: list[FlowSpec]


@dataclass(frozen=True)
class Flow:
    name: str
    triggers: tuple[str, ...]
    action: actions.Action
    filter: mapping.Expression | None
    fields: tuple[tuple[str, mapping.Expression], ...]
    options: dict[str, Any]

    def matches(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.triggers)

    def map(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Filter and mapping (no database): the fields to write, or None when the filter
        leaves the event out."""
        obj = event["data"]["object"]
        if self.filter is not None:
            keep = self.filter.evaluate(obj)
            if not isinstance(keep, bool):
                raise errors.DeadLetter(
                    f"flow {self.name}: filter {self.filter.source!r} gave {keep!r}, not a boolean",
                    code="filter_not_boolean",
                )
            if not keep:
                return None
        return {target: expression.evaluate(obj) for target, expression in self.fields}

    def run(
        self, conn: Connection, *, connection_id: str, event: dict[str, Any], test: bool
    ) -> str | None:
        """Apply this flow to one event; None when its filter leaves the event out."""
        values = self.map(event)
        if values is None:
            return None
        return self.write(conn, values, connection_id=connection_id, event=event, test=test)

    def write(
        self,
        conn: Connection,
        values: dict[str, Any],
        *,
        connection_id: str,
        event: dict[str, Any],
        test: bool,
    ) -> str:
        """The action, with fields `map` produced; returns the record id."""
        ctx = actions.Context(
            connection_id=connection_id, event=event, test=test, options=self.options
        )
        return self.action.run(conn, ctx, values)


Plan = list[tuple[Flow, dict[str, Any]]]


def _compile(spec: FlowSpec, where: str) -> Flow:
    here = f"{where}: flow {spec.name!r}"
    action = actions.ACTIONS.get(spec.action)
    if action is None:
        raise errors.ConfigError(
            f"{here}: unknown action {spec.action!r}; actions are: {', '.join(sorted(actions.ACTIONS))}"
        )
    for pattern in spec.trigger:
        if not any(fnmatch.fnmatchcase(t, pattern) for t in known_event_types()):
            raise errors.ConfigError(f"{here}: trigger {pattern!r} matches no Stripe event type")
    unknown_options = set(spec.options) - set(action.options)
    if unknown_options:
        raise errors.ConfigError(
            f"{here}: unknown option(s) {', '.join(sorted(unknown_options))} for {action.name}"
        )
    fields = []
    for target, source in spec.fields.items():
        if target not in action.targets:
            raise errors.ConfigError(
                f"{here}: field {target!r}: {action.name} has no such target; "
                f"targets are: {', '.join(sorted(action.targets))}"
            )
        try:
            fields.append((target, mapping.Expression(source)))
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"{here}: field {target!r}: {exc}") from exc
    try:
        filter_ = mapping.Expression(spec.filter) if spec.filter else None
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{here}: filter: {exc}") from exc
    return Flow(spec.name, tuple(spec.trigger), action, filter_, tuple(fields), dict(spec.options))


class Registry:
    """The active flows, and which of them an event type starts (memoised per type)."""

    def __init__(self, flows: list[Flow]) -> None:
        self.flows = flows
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
        conn: Connection,
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
                flow.write(conn, values, connection_id=connection_id, event=event, test=test),
            )
            for flow, values in plan
        ]

    def apply(
        self, conn: Connection, *, connection_id: str, event: dict[str, Any], test: bool = False
    ) -> list[tuple[str, str]]:
        """Run every flow the event starts; returns (flow name, record id) for those that ran."""
        return self.execute(
            conn, self.plan(event), connection_id=connection_id, event=event, test=test
        )


def _describe_invalid(data: Any, exc: ValidationError) -> str:
    """The first schema error, naming the flow (`flow 'x' (flows[0]): action: Field required`)."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    if len(loc) >= 2 and loc[0] == "flows" and isinstance(loc[1], int):
        index = loc[1]
        flow = data["flows"][index] if isinstance(data.get("flows"), list) else None
        name = flow.get("name") if isinstance(flow, dict) else None
        here = f"flow {name!r} (flows[{index}])" if name else f"flows[{index}]"
        rest = ".".join(str(part) for part in loc[2:])
        return f"{here}: {rest}: {first['msg']}" if rest else f"{here}: {first['msg']}"
    return f"{'.'.join(str(part) for part in loc) or 'file'}: {first['msg']}"


def parse(text: str, where: str) -> Registry:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"{where}: not valid YAML: {exc}") from exc
    try:
        spec = FlowsFile.model_validate(data)
    except ValidationError as exc:
        raise errors.ConfigError(f"{where}: {_describe_invalid(data, exc)}") from exc
    names = [flow.name for flow in spec.flows]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise errors.ConfigError(f"{where}: flow names must be unique: {', '.join(duplicates)}")
    return Registry([_compile(flow, where) for flow in spec.flows])


def load(path: Path | None = None) -> Registry:
    """The flows in `path`, or the prebuilt ones."""
    if path is None:
        text = resources.files("snapshots").joinpath("defaults/flows.yaml").read_text()
        return parse(text, "defaults/flows.yaml")
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse(text, str(path))
