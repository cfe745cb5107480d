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
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel

from snapshots import actions, errors, mapping, samples
from snapshots.outbound import waits
from snapshots.records import batch, reads
from snapshots.store.db import Tx


@cache
def known_event_types() -> tuple[str, ...]:
    return tuple(samples.event_objects())


@dataclass(frozen=True)
class Step:
    """A step of a flow with `steps`: a wait (seconds), or an action with an optional `if`."""

    wait: float | None = None
    condition: mapping.Expression | None = None
    action: actions.Action | None = None
    fields: tuple[tuple[str, mapping.Expression], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


RUN = "__run__"  # the key of a steps flow's planned run in what `map` returns


@dataclass(frozen=True)
class Run:
    """What a flow with steps does when its event comes: the steps before the first wait
    (index, fields), then the wait (index, seconds) or the reason it stopped (`if` false)."""

    steps: tuple[tuple[int, dict[str, Any]], ...]
    wait: tuple[int, float] | None = None
    skipped: str | None = None


def _evaluate(
    flow: str, label: str, expression: mapping.Expression, document: Any, event: dict[str, Any]
) -> Any:
    with mapping.for_event(event):
        try:
            return expression.evaluate(document)
        except errors.DeadLetter as exc:
            raise errors.DeadLetter(f"flow {flow!r}: {label}: {exc}", code=exc.code) from exc


@dataclass(frozen=True)
class Flow:
    name: str
    triggers: tuple[str, ...]
    action: actions.Action  # a flow with steps: its first action
    filter: mapping.Expression | None
    fields: tuple[tuple[str, mapping.Expression], ...]
    options: dict[str, Any]
    description: str | None = None
    steps: tuple[Step, ...] = ()
    version: int = 0  # the flows version it belongs to

    def _run_steps(self, start: int, document: Any, event: dict[str, Any]) -> Run:
        """Evaluate steps from `start` over `document` until a wait or a false `if`."""
        planned: list[tuple[int, dict[str, Any]]] = []
        for index in range(start, len(self.steps)):
            step = self.steps[index]
            if step.wait is not None:
                return Run(tuple(planned), wait=(index, step.wait))
            label = f"step {index + 1}"
            if step.condition is not None:
                keep = _evaluate(self.name, f"{label} if", step.condition, document, event)
                if keep is not True:
                    reason = f"{label}: if {step.condition.source!r} gave {keep!r}"
                    return Run(tuple(planned), skipped=reason)
            values = {
                target: _evaluate(
                    self.name, f"{label} field {target!r}", expression, document, event
                )
                for target, expression in step.fields
            }
            planned.append((index, values))
        return Run(tuple(planned))

    def _write_run(
        self,
        tx: Tx,
        run: Run,
        *,
        connection_id: str,
        event: dict[str, Any],
        test: bool,
        now: float,
        record: tuple[str | None, str | None] | None = None,
    ) -> str:
        """Run the planned steps' actions, then leave a wait row when the run reached one;
        returns the id of the last thing written (a record, a message, a wait)."""
        last = ""
        for index, values in run.steps:
            step = self.steps[index]
            assert step.action is not None
            call = actions.Invocation(
                connection_id=connection_id,
                event=event,
                test=test,
                options=step.options,
                flow=self.name,
                step=index,
            )
            last = step.action.run(tx, call, values)
        if run.wait is not None:
            index, seconds = run.wait
            if record is None:
                found = reads.subject(tx, connection_id, event)
                record = (None, None) if found is None else (found[0], found[1].id)
            last = waits.create(
                tx,
                connection_id=connection_id,
                event_id=str(event["id"]),
                flow=self.name,
                flow_version=self.version,
                step=index + 1,
                record_kind=record[0],
                record_id=record[1],
                due_at=now + seconds,
                test=test,
                now=now,
            )
        return last

    def resume(
        self, tx: Tx, wait: waits.Wait, event: dict[str, Any], *, now: float
    ) -> tuple[str, str | None]:
        """Run the steps after a wait, reading the record as it is now (as the API shows it);
        returns the wait's outcome: (`done` | `skipped`, the reason)."""
        record = None
        if wait.record_kind is not None and wait.record_id is not None:
            record = reads.current(tx, wait.record_kind, wait.record_id)
        else:
            found = reads.subject(tx, wait.connection_id, event)
            record = None if found is None else found[1]
        document = None if record is None else record.model_dump(mode="json")
        run = self._run_steps(wait.step, document, event)
        kind = wait.record_kind or (None if record is None else reads.subject_kind(event["type"]))
        self._write_run(
            tx,
            run,
            connection_id=wait.connection_id,
            event=event,
            test=wait.test,
            now=now,
            record=(kind, None if record is None else record.id),
        )
        if run.skipped is not None:
            return "skipped", run.skipped if record is not None else f"{run.skipped} (no record)"
        return "done", None

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
        if self.steps:  # before any wait, steps read the Stripe object
            return {RUN: self._run_steps(0, obj, event)}
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
        if self.steps:
            run: Run = values[RUN]
            return self._write_run(
                tx, run, connection_id=connection_id, event=event, test=test, now=time.time()
            )
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
    outcome: Literal["would write", "would send", "would wait", "skipped", "filtered out", "error"]
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
        elif RUN in values:
            found += _preview_run(candidate, values[RUN], event)
        else:
            found.append(_preview_action(name, action, candidate.options, values, event))
    return found


def _preview_action(
    name: str, action: actions.Action, options: dict[str, Any], values: dict[str, Any], event: Any
) -> Outcome:
    if action.record == "message":  # what would be sent (nothing is)
        call = actions.Invocation(connection_id="", event=event, options=options)
        data = actions.nest(values) if values else actions.default_message(None, call)
        return Outcome(
            flow=name,
            action=action.name,
            outcome="would send",
            record=str(options.get("endpoint")),
            fields={"type": options.get("type") or event["type"], "data": data},
        )
    return Outcome(
        flow=name, action=action.name, outcome="would write", record=action.record, fields=values
    )


def _preview_run(flow: Flow, run: Run, event: dict[str, Any]) -> list[Outcome]:
    """A flow with steps: each step before the first wait, then the wait or the skip."""
    found = []
    for index, values in run.steps:
        step = flow.steps[index]
        assert step.action is not None
        label = f"{flow.name} step {index + 1}"
        found.append(_preview_action(label, step.action, step.options, values, event))
    if run.wait is not None:
        index, seconds = run.wait
        then = [
            s.action.name if s.action is not None else f"wait {s.wait:.0f}s"
            for s in flow.steps[index + 1 :]
        ]
        found.append(
            Outcome(
                flow=f"{flow.name} step {index + 1}",
                action="wait",
                outcome="would wait",
                fields={"seconds": seconds, "then": then},
            )
        )
    if run.skipped is not None:
        found.append(Outcome(flow=flow.name, action="if", outcome="skipped", error=run.skipped))
    return found
