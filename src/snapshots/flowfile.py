"""The flows file: YAML that lists flows, checked completely before anything uses it.

Every check names the file, the line, the flow and the field: YAML and schema errors, unknown
action, target or option, bad JMESPath, unknown function, a trigger that matches no event
type, and a filter that is not a boolean on a sample event of each type it triggers on. The
prebuilt flows ship as `defaults/flows.yaml`.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from snapshots import actions, errors, mapping, nesting, samples, times
from snapshots.flows import Flow, Registry, Step, known_event_types

DEFAULTS = "defaults/flows.yaml"
# A flows file is checked under a budget: someone who may import flows must not be able to
# make a check run for minutes or fill the memory.
MAX_TEXT = 256 * 1024  # characters in a flows file
MAX_FLOWS = 500  # flows in one file
MAX_NODES = 20_000  # YAML nodes (scalars, lists, mappings), aliases counted once
MAX_SAMPLES = 5_000  # filters evaluated on sample events (flows x event types they match)
CHECK_SECONDS = 5.0  # a check that runs longer is refused
MAX_STEPS = 20  # steps in one flow


class StepSpec(BaseModel):
    """One step of a flow with `steps`: a `wait`, or an action with an optional `if`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    wait: str | None = None
    if_: str | None = Field(None, alias="if")
    action: str | None = None
    options: dict[str, Any] = {}
    fields: dict[str, str] = {}

    @model_validator(mode="after")
    def _wait_or_action(self) -> StepSpec:
        if (self.wait is None) == (self.action is None):
            raise ValueError("a step is either `wait: 3d` or an `action` (with an optional `if`)")
        if self.wait is not None and (self.if_ is not None or self.options or self.fields):
            raise ValueError("a `wait` step has nothing else (put `if` on the next step)")
        return self


class FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str | None = None
    trigger: list[str] = Field(min_length=1)
    filter: str | None = None
    action: str | None  # required, unless the flow has `steps`
    options: dict[str, Any] = {}
    fields: dict[str, str] = {}
    steps: list[StepSpec] | None = Field(None, min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="before")
    @classmethod
    def _steps_need_no_action(cls, data: Any) -> Any:
        if isinstance(data, dict) and "steps" in data and "action" not in data:
            return {**data, "action": None}
        return data

    @model_validator(mode="after")
    def _action_or_steps(self) -> FlowSpec:
        if (self.action is None) == (self.steps is None):
            raise ValueError("a flow has either one `action` or a list of `steps`, not both")
        if self.steps is not None:
            if self.options or self.fields:
                raise ValueError("with `steps`, options and fields go on each step")
            if all(step.action is None for step in self.steps):
                raise ValueError("`steps` need at least one action")
        return self

    @field_validator("trigger", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FlowsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flows: list[FlowSpec]


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


class _OverBudget(Exception):
    """A check that would cost more than a flows file may."""


@dataclass
class _Budget:
    deadline: float  # time.monotonic()
    samples: int = MAX_SAMPLES  # sample evaluations left

    def spend(self) -> None:
        self.samples -= 1
        if self.samples < 0:
            raise _OverBudget(
                f"its filters would be tried on over {MAX_SAMPLES:,} sample events (flows x the "
                "event types they match): narrow the triggers, or split the flows"
            )
        if time.monotonic() > self.deadline:
            raise _OverBudget(
                f"checking it took over {CHECK_SECONDS:.0f} s: narrow the triggers, or split "
                "the flows"
            )


def _shape_problem(root: yaml.Node | None) -> str | None:
    """What is wrong with the size or depth of a composed YAML document (aliases count once)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [] if root is None else [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > MAX_NODES:
            return f"it holds over {MAX_NODES:,} YAML values"
        if depth > nesting.MAX_DEPTH:
            return f"it nests deeper than {nesting.MAX_DEPTH} levels"
        if isinstance(node, yaml.MappingNode):
            stack.extend((part, depth + 1) for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)
    return None


def check(text: str, where: str, *, version: int = 0) -> Checked:
    """Check a flows file completely (see the module docstring), within the budget above: a
    file that is too big, too deep or too costly to check is refused, saying which."""
    if len(text) > MAX_TEXT:
        return Checked(
            None, [Problem(where, None, None, None, f"the file is over {MAX_TEXT // 1024} KiB")]
        )
    try:
        try:
            root, data, shape = _read(text, _FastUniqueKeys)
        except yaml.YAMLError:
            # libyaml words some problems differently: say them as PyYAML's parser does
            # (it also refuses what nests deeper than libyaml's 1,000 levels by its own limit).
            root, data, shape = _read(text, _UniqueKeys)
        if shape is not None:
            return Checked(
                None, [Problem(where, None, None, None, f"the file is refused: {shape}")]
            )
        lines = _Lines(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        reason = getattr(exc, "problem", None) or str(exc)
        return Checked(None, [Problem(where, line, None, None, f"not valid YAML: {reason}")])
    except RecursionError:
        message = f"the file is refused: it nests deeper than {nesting.MAX_DEPTH} levels"
        return Checked(None, [Problem(where, None, None, None, message)])
    try:
        spec = FlowsFile.model_validate(data)
    except ValidationError as exc:
        return Checked(None, [_schema_problem(data, e, where, lines) for e in exc.errors()])
    if len(spec.flows) > MAX_FLOWS:
        message = f"the file is refused: it holds {len(spec.flows):,} flows, over {MAX_FLOWS}"
        return Checked(None, [Problem(where, None, None, None, message)])
    budget = _Budget(time.monotonic() + CHECK_SECONDS)
    try:
        return _check_flows(spec, where, lines, version, budget)
    except _OverBudget as exc:
        return Checked(None, [Problem(where, None, None, None, f"the file is refused: {exc}")])


def _read(text: str, loader: Any) -> tuple[yaml.Node | None, Any, str | None]:
    """The composed document, its data (not built when its shape is refused) and what is
    wrong with its shape."""
    root = yaml.compose(text, Loader=loader)
    shape = _shape_problem(root)
    if shape is not None:
        return root, None, shape
    return root, yaml.load(text, Loader=loader), None


def _check_flows(
    spec: FlowsFile, where: str, lines: _Lines, version: int, budget: _Budget
) -> Checked:
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
        flow, found = _compile(flow_spec, index, where, lines, budget, version)
        problems += found
        if flow is not None:
            compiled.append(flow)
    if problems:
        return Checked(None, problems)
    return Checked(Registry(compiled, version=version))


def _refuse_twice(loader: Any, node: yaml.MappingNode, deep: bool) -> None:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"the key {key!r} is given twice",
                key_node.start_mark,
            )
        seen.add(key)


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the last would win
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        _refuse_twice(self, node, deep)
        return super().construct_mapping(node, deep=deep)


# libyaml's parser (PyYAML's wheels carry it): the editor checks the whole file on every
# preview, and the pure-Python parser takes ~40 ms for the prebuilt file, libyaml ~4 ms.
_CSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastUniqueKeys(_CSafeLoader):  # type: ignore[misc]
    """`_UniqueKeys` on libyaml's parser."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        _refuse_twice(self, node, deep)
        return dict(super().construct_mapping(node, deep=deep))


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
    spec: FlowSpec, index: int, where: str, lines: _Lines, budget: _Budget, version: int = 0
) -> tuple[Flow | None, list[Problem]]:
    problems: list[Problem] = []

    def problem(message: str, *path: str | int, field: str | None = None) -> None:
        problems.append(Problem(where, lines.of("flows", index, *path), spec.name, field, message))

    matched: list[str] = []
    for pattern in spec.trigger:
        found = _matching(pattern)
        if not found:
            problem(f"{pattern!r} matches no Stripe event type", "trigger", field="trigger")
        matched += found
    steps: list[Step] = []
    if spec.steps is None:
        action, fields = _compile_action(
            spec.action or "", spec.options, spec.fields, problem, prefix=()
        )
    else:
        action = fields = None
        waited = False
        for number, step_spec in enumerate(spec.steps):
            at: tuple[str | int, ...] = ("steps", number)
            label = f"steps[{number}]"
            if step_spec.wait is not None:
                try:
                    seconds = times.parse_duration(str(step_spec.wait), name="wait")
                except errors.BadRequest as exc:
                    problem(
                        f"{exc.message} (a number with s, m, h or d)",
                        *at,
                        "wait",
                        field=f"{label}.wait",
                    )
                    continue
                steps.append(Step(wait=seconds))
                waited = True
                continue
            step_action, step_fields = _compile_action(
                step_spec.action or "", step_spec.options, step_spec.fields, problem, prefix=at
            )
            condition = None
            if step_spec.if_ is not None:
                try:
                    condition = mapping.Expression(step_spec.if_)
                except errors.ConfigError as exc:
                    problem(str(exc), *at, "if", field=f"{label}.if")
                else:
                    # Before any wait, `if` reads the Stripe object: checked on samples.
                    wrong = None if waited else _filter_problem(condition, matched, budget)
                    if wrong:
                        problem(wrong, *at, "if", field=f"{label}.if")
            if step_action is not None and step_fields is not None:
                steps.append(
                    Step(
                        condition=condition,
                        action=step_action,
                        fields=tuple(step_fields),
                        options=dict(step_spec.options),
                    )
                )
                if action is None:
                    action = step_action
    filter_ = None
    if spec.filter is not None:
        try:
            filter_ = mapping.Expression(spec.filter)
        except errors.ConfigError as exc:
            problem(str(exc), "filter", field="filter")
        else:
            wrong = _filter_problem(filter_, matched, budget)
            if wrong:
                problem(wrong, "filter", field="filter")
    if problems or action is None:
        return None, problems
    flow = Flow(
        spec.name,
        tuple(spec.trigger),
        action,
        filter_,
        tuple(fields or ()),
        dict(spec.options),
        spec.description,
        steps=tuple(steps),
        version=version,
    )
    return flow, []


def _compile_action(
    name: str,
    options: dict[str, Any],
    mapped: dict[str, str],
    problem: Any,
    *,
    prefix: tuple[str | int, ...],
) -> tuple[actions.Action | None, list[tuple[str, mapping.Expression]] | None]:
    """An action with its options and fields, checked; problems are reported through
    `problem(message, *path, field=...)` at `prefix` (a step's place, or the flow's)."""
    label = f"steps[{prefix[1]}]." if prefix else ""
    action = actions.ACTIONS.get(name)
    if action is None:
        problem(
            f"unknown action {name!r}; actions are: {', '.join(sorted(actions.ACTIONS))}",
            *prefix,
            "action",
            field=f"{label}action",
        )
    else:
        unknown = sorted(set(options) - set(action.options))
        if unknown:
            known = ", ".join(action.options) or "none"
            problem(
                f"unknown option(s) {', '.join(unknown)} for {action.name} (its options: {known})",
                *prefix,
                "options",
                field=f"{label}options",
            )
        else:
            wrong = action.check(options)
            if wrong:
                problem(wrong, *prefix, "options", field=f"{label}options")
            action = action.resolve(options)
    fields = []
    failed = False
    for target, source in mapped.items():
        where_label = f"{label}field {target!r}"
        if action is not None and not action.accepts(target):
            nested = ", ".join(f"{n}.*" for n in sorted(action.nested))
            problem(
                f"{action.name} has no target {target!r}; targets are: "
                f"{', '.join(sorted(action.targets))}" + (f" (and {nested})" if nested else ""),
                *prefix,
                "fields",
                target,
                field=where_label,
            )
            failed = True
            continue
        try:
            fields.append((target, mapping.Expression(source)))
        except errors.ConfigError as exc:
            problem(str(exc), *prefix, "fields", target, field=where_label)
            failed = True
    if action is not None and action.required:
        given = set(mapped) | set(options)
        if not given & set(action.required):
            problem(
                f"{action.name} needs {' or '.join(action.required)} (an option or a field)",
                *prefix,
                "action",
                field=f"{label}action",
            )
            failed = True
    if action is None or failed:
        return None, None
    return action, fields


def _matching(pattern: str) -> list[str]:
    """The event types a trigger pattern matches (a plain type: itself, when known)."""
    if not any(char in pattern for char in "*?["):
        return [pattern] if pattern in _known() else []
    return [t for t in known_event_types() if fnmatch.fnmatchcase(t, pattern)]


@functools.cache
def _known() -> frozenset[str]:
    return frozenset(known_event_types())


def _filter_problem(
    expression: mapping.Expression, event_types: list[str], budget: _Budget
) -> str | None:
    """What is wrong with a filter on a sample event of each type it triggers on."""
    for event_type in dict.fromkeys(event_types):
        budget.spend()
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


@functools.cache
def default_text() -> str:
    """The prebuilt flows file (a file of the package: read once, not at each flow editor's
    page while no version was imported)."""
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


class Invalid(errors.BadRequest):
    """A flows file with problems: each one names its file, line, flow and field."""

    code = "invalid_flows"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
