"""Flows: trigger + filter + mapping + action, as configuration users own.

A flows file (YAML) lists flows; each has a `name`, a `trigger` (event types, `*` wildcards
allowed: `invoice.*`), an optional `filter` (a JMESPath expression that must give a boolean),
an `action`, the action's `options`, and `fields` (target field: JMESPath expression over the
event's Stripe object; `$event` is the whole event). Targets may reach into JSON fields
(`address.city`, `metadata.tier`, `custom.plan`).

The prebuilt flows ship as `defaults/flows.yaml`. Imported flows are stored in the database
as numbered versions (version 0 is the prebuilt file); the newest is in force, every change is
an audit entry, and a rollback imports an earlier version again. Every check names the file,
the line, the flow and the field: unknown action, target or option, bad JMESPath, unknown
function, a trigger that matches no event type, and a filter that is not a boolean on a sample
event of each type it triggers on.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from snapshots import __version__, actions, audit, errors, mapping, samples
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

# Events Stripe never sends, made by Snapshots itself: the location watcher's, and the
# `*.synced` events of a backfill (an object as a list endpoint returned it).
SYNTHETIC_TYPES = tuple(samples.SYNTHETIC_OBJECTS)
DEFAULTS = "defaults/flows.yaml"
MAX_TEXT = 1024 * 1024  # characters in a flows file


@cache
def known_event_types() -> tuple[str, ...]:
    return tuple(samples.event_objects())


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str | None = None
    trigger: list[str] = Field(min_length=1)
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


# Checking a flows file.


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a flows file, with where it is."""

    where: str
    line: int | None
    flow: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        place = f"{self.where}:{self.line}" if self.line else self.where
        parts = [place]
        if self.flow is not None:
            parts.append(f"flow {self.flow!r}")
        if self.field is not None:
            parts.append(self.field)
        return ": ".join([*parts, self.message])


@dataclass
class _Lines:
    """Line numbers (1-based) of the nodes of a YAML document, by path."""

    root: yaml.Node | None

    def of(self, *path: str | int) -> int | None:
        node = self.root
        line = None if node is None else node.start_mark.line + 1
        for part in path:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        line = key.start_mark.line + 1
                        node = value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


@dataclass
class Checked:
    """The result of checking a flows file: its flows when it is good, else what is wrong."""

    registry: Registry | None
    problems: list[Problem] = field(default_factory=list)


def check(text: str, where: str, *, version: int = 0) -> Checked:
    """Check a flows file completely (see the module docstring)."""
    if len(text) > MAX_TEXT:
        return Checked(None, [Problem(where, None, None, None, "the file is over 1 MiB")])
    try:
        data = yaml.load(text, Loader=_UniqueKeys)
        lines = _Lines(yaml.compose(text, Loader=_UniqueKeys))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        reason = getattr(exc, "problem", None) or str(exc)
        return Checked(None, [Problem(where, line, None, None, f"not valid YAML: {reason}")])
    try:
        spec = FlowsFile.model_validate(data)
    except ValidationError as exc:
        return Checked(None, [_schema_problem(data, e, where, lines) for e in exc.errors()])
    problems: list[Problem] = []
    seen: set[str] = set()
    compiled = []
    for index, flow_spec in enumerate(spec.flows):
        if flow_spec.name in seen:
            problems.append(
                Problem(
                    where,
                    lines.of("flows", index, "name"),
                    flow_spec.name,
                    None,
                    "flow names must be unique: another flow has this name",
                )
            )
        seen.add(flow_spec.name)
        flow, found = _compile(flow_spec, index, where, lines)
        problems += found
        if flow is not None:
            compiled.append(flow)
    if problems:
        return Checked(None, problems)
    return Checked(Registry(compiled, version=version))


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the last would win
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key!r} is given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _schema_problem(data: Any, first: Any, where: str, lines: _Lines) -> Problem:
    """A schema error, naming the flow (`flow 'x': action: Field required`)."""
    loc = list(first["loc"])
    if len(loc) >= 2 and loc[0] == "flows" and isinstance(loc[1], int):
        index = loc[1]
        flow = data["flows"][index] if isinstance(data.get("flows"), list) else None
        name = flow.get("name") if isinstance(flow, dict) else None
        rest = ".".join(str(part) for part in loc[2:]) or None
        label = str(name) if name else f"flows[{index}]"
        return Problem(where, lines.of(*loc), label, rest, first["msg"])
    if not isinstance(data, dict):
        return Problem(where, 1, None, None, "a flows file is a mapping with a `flows:` list")
    return Problem(where, lines.of(*loc[:1]), None, ".".join(map(str, loc)) or None, first["msg"])


def _compile(
    spec: FlowSpec, index: int, where: str, lines: _Lines
) -> tuple[Flow | None, list[Problem]]:
    problems: list[Problem] = []

    def problem(message: str, *path: str | int, field: str | None = None) -> None:
        problems.append(Problem(where, lines.of("flows", index, *path), spec.name, field, message))

    action = actions.ACTIONS.get(spec.action)
    if action is None:
        problem(
            f"unknown action {spec.action!r}; actions are: {', '.join(sorted(actions.ACTIONS))}",
            "action",
            field="action",
        )
    else:
        unknown = sorted(set(spec.options) - set(action.options))
        if unknown:
            known = ", ".join(action.options) or "none"
            problem(
                f"unknown option(s) {', '.join(unknown)} for {action.name} (its options: {known})",
                "options",
                field="options",
            )
        else:
            wrong = action.check(spec.options)
            if wrong:
                problem(wrong, "options", field="options")
            action = action.resolve(spec.options)
    matched: list[str] = []
    for pattern in spec.trigger:
        found = [t for t in known_event_types() if fnmatch.fnmatchcase(t, pattern)]
        if not found:
            problem(f"{pattern!r} matches no Stripe event type", "trigger", field="trigger")
        matched += found
    fields = []
    for target, source in spec.fields.items():
        label = f"field {target!r}"
        if action is not None and not action.accepts(target):
            nested = ", ".join(f"{name}.*" for name in sorted(action.nested))
            problem(
                f"{action.name} has no target {target!r}; targets are: "
                f"{', '.join(sorted(action.targets))}" + (f" (and {nested})" if nested else ""),
                "fields",
                target,
                field=label,
            )
            continue
        try:
            fields.append((target, mapping.Expression(source)))
        except errors.ConfigError as exc:
            problem(str(exc), "fields", target, field=label)
    if action is not None and action.required:
        given = set(spec.fields) | set(spec.options)
        if not given & set(action.required):
            problem(
                f"{action.name} needs {' or '.join(action.required)} (an option or a field)",
                "action",
                field="action",
            )
    filter_ = None
    if spec.filter is not None:
        try:
            filter_ = mapping.Expression(spec.filter)
        except errors.ConfigError as exc:
            problem(str(exc), "filter", field="filter")
        else:
            wrong = _filter_problem(filter_, matched)
            if wrong:
                problem(wrong, "filter", field="filter")
    if problems or action is None:
        return None, problems
    flow = Flow(
        spec.name,
        tuple(spec.trigger),
        action,
        filter_,
        tuple(fields),
        dict(spec.options),
        spec.description,
    )
    return flow, []


def _filter_problem(expression: mapping.Expression, event_types: list[str]) -> str | None:
    """What is wrong with a filter on a sample event of each type it triggers on."""
    for event_type in dict.fromkeys(event_types):
        event = samples.sample_event(event_type, event_id="evt_sample")
        try:
            with mapping.for_event(event):
                result = expression.evaluate(event["data"]["object"])
        except errors.DeadLetter as exc:
            return f"{exc} (on a sample {event_type} event)"
        if not isinstance(result, bool):
            return (
                f"{expression.source!r} gives {json.dumps(result, default=str)} on a sample "
                f"{event_type} event, not a "
                "boolean (compare with ==, or wrap it in to_string(...) == '...')"
            )
    return None


def parse(text: str, where: str, *, version: int = 0) -> Registry:
    """The flows of a file, or ConfigError naming every problem."""
    checked = check(text, where, version=version)
    if checked.registry is None:
        raise errors.ConfigError("; ".join(str(p) for p in checked.problems))
    return checked.registry


def default_text() -> str:
    return resources.files("snapshots").joinpath(DEFAULTS).read_text()


def load(path: Path | None = None) -> Registry:
    """The flows in `path`, or the prebuilt ones."""
    if path is None:
        return parse(default_text(), DEFAULTS)
    return parse(read(path), str(path))


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise errors.ConfigError(f"cannot read {path}: {reason}") from exc


# Revisions: every version of the flows file in force, kept in the database.

V = tables.flow_versions
PREBUILT = "the prebuilt flows"


class Revision(BaseModel):
    """One version of the flows file (0 is the prebuilt one)."""

    model_config = ConfigDict(frozen=True)

    version: int
    actor: str
    comment: str | None
    created_at: Timestamp | None
    text: str | None = Field(None, description="The flows file (YAML)")


class Invalid(errors.BadRequest):
    """A flows file with problems: each one names its file, line, flow and field."""

    code = "invalid_flows"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def _prebuilt(with_text: bool = True) -> Revision:
    return Revision(
        version=0,
        actor="snapshots",
        comment=PREBUILT,
        created_at=None,
        text=default_text() if with_text else None,
    )


def _revision(row: Any, with_text: bool = True) -> Revision:
    return Revision(
        version=row.version,
        actor=row.actor,
        comment=row.comment,
        created_at=row.created_at,
        text=row.text if with_text else None,
    )


def current_version(tx: Tx) -> int:
    found = tx.execute(sa.select(sa.func.max(V.c.version))).scalar_one_or_none()
    return int(found or 0)


def get_revision(tx: Tx, version: int | None = None) -> Revision:
    """A stored version (the one in force by default), with its text; 0 is the prebuilt one."""
    stmt = sa.select(V).order_by(V.c.version.desc()).limit(1)
    if version is not None:
        stmt = sa.select(V).where(V.c.version == version)
    row = tx.execute(stmt).first()
    if row is None:
        if version not in (None, 0):
            raise errors.NotFound(f"no flows version {version} (see `snapshots flows versions`)")
        return _prebuilt()
    return _revision(row)


def revisions(tx: Tx, *, with_text: bool = False) -> list[Revision]:
    """Every version, newest first (the first is in force; the prebuilt one comes last)."""
    rows = tx.execute(sa.select(V).order_by(V.c.version.desc())).all()
    return [*(_revision(r, with_text) for r in rows), _prebuilt(with_text)]


def current(tx: Tx) -> Registry:
    """The flows in force; FlowsIncompatible when they do not load with this code (a newer
    Snapshots imported them during a rolling upgrade, or today's checks refuse them)."""
    return _load(get_revision(tx))


def _load(stored: Revision) -> Registry:
    where = DEFAULTS if stored.version == 0 else f"flows version {stored.version}"
    try:
        return parse(stored.text or "", where, version=stored.version)
    except errors.ConfigError as exc:
        back = (
            f"`snapshots flows rollback {stored.version - 1}`" if stored.version else "a rollback"
        )
        raise errors.FlowsIncompatible(
            f"the flows in force (version {stored.version}) do not load with this Snapshots "
            f"({__version__}): {exc.message[:300]}: upgrade this process, or put back flows "
            f"it can run with {back}"
        ) from exc


@dataclass(frozen=True)
class Imported:
    """What an import or rollback did: the version now in force, the one before, and how
    many flows it holds."""

    revision: Revision
    previous: int
    flows: int


def import_text(
    db: Database,
    text: str,
    *,
    where: str,
    actor: str,
    comment: str | None = None,
    action: str = "flows.imported",
) -> Imported:
    """Check `text` once, holding no transaction (a check evaluates sample events), then make
    it the flows in force as a new version with its audit entry (the old and the new version)
    in one short transaction. A file with a problem changes nothing: `Invalid` lists them."""
    checked = check(text, where)
    if checked.registry is None:
        raise Invalid(checked.problems)
    comment = None if comment is None else comment[:500]
    now = time.time()
    with db.write() as tx:
        old = current_version(tx)
        new = old + 1
        tx.execute(
            V.insert().values(version=new, text=text, actor=actor, comment=comment, created_at=now)
        )
        audit.record(
            tx,
            actor=actor,
            action=action,
            target=f"flows:{new}",
            details={"old_version": old, "new_version": new, "comment": comment},
        )
    revision = Revision(version=new, actor=actor, comment=comment, created_at=now, text=text)
    return Imported(revision, old, len(checked.registry.flows))


def rollback(db: Database, version: int, *, actor: str) -> Imported:
    """Put an earlier version back in force, as a new version (history is never rewritten);
    `Invalid` when that version no longer passes today's checks."""
    with db.read() as tx:
        earlier = get_revision(tx, version)
    return import_text(
        db,
        earlier.text or "",
        where=f"flows version {version}",
        actor=actor,
        comment=f"rollback to version {version}",
        action="flows.rolled_back",
    )


class Live:
    """The flows in force for a long-running process: re-read when a new version appears,
    looked for at most every `ttl` seconds (a cheap read).

    When the version in force does not load with this code, calling it raises
    FlowsIncompatible (a worker claims nothing until it loads or is rolled back), while
    `wants` says yes to every event type, so intake keeps every event pending for a worker
    that can run the flows, instead of marking one `ignored` by the flows of the past."""

    def __init__(self, db: Database, *, ttl: float = 2.0) -> None:
        self._db = db
        self._ttl = ttl
        self._lock = threading.Lock()
        self._registry: Registry | None = None
        self.fault: errors.FlowsIncompatible | None = None
        self._version = self._current_version()  # the version in force, loaded or not
        self._load()
        self._next = time.monotonic() + ttl

    def __call__(self) -> Registry:
        if time.monotonic() >= self._next:
            self._refresh()
        if self.fault is not None or self._registry is None:
            raise self.fault or errors.FlowsIncompatible("no flows loaded")
        return self._registry

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() < self._next:
                return
            self._next = time.monotonic() + self._ttl
            version = self._current_version()
            if version == self._version:
                return
            self._version = version
            self._load()

    def _current_version(self) -> int:
        with self._db.read() as tx:
            return current_version(tx)

    def _load(self) -> None:
        try:
            with self._db.read() as tx:
                self._registry = current(tx)
            self.fault = None
        except errors.FlowsIncompatible as exc:
            self.fault = exc

    def wants(self, event_type: str) -> bool:
        try:
            return self().wants(event_type)
        except errors.FlowsIncompatible:
            return True


Wants = Registry | Live  # what intake and the pull paths ask whether a flow wants an event type
