"""Previews: what one flow of a flows file (in force, or a draft) would do with one event,
row by row, while nothing is written. The console's flow editor shows this.

It runs the code the worker runs: the draft is checked by `flowfile.check` (the import's
check, so each problem keeps its line, flow and field), the outcome is `flows.preview` (what
`snapshots mappings test` prints), and the record is what the flow's action writes, in a
transaction that is rolled back (`Database.trial`), diffed against the record as it is. Each
mapping row also shows its own value or error, so one bad row does not hide the others.

A sample event is Stripe's example object for the type (`samples.sample_event`), or a recent
event of that type from the inbox.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, Field

from snapshots import errors, flowfile, flows, inbox, mapping, samples
from snapshots.records import kinds, reads
from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp

DRAFT = "draft"  # the name problems of a draft give as its file
SAMPLE_ID = "evt_sample_preview"  # the id of a sample event made from Stripe's example
RECENT = 10  # recent inbox events offered as samples
# Samples are looked for among the newest items only: a bounded read of the primary key,
# whatever the inbox's size (no index on the event type, which intake would pay for).
RECENT_WINDOW = 50_000  # inbox items
IGNORED_CHANGES = frozenset({"updated_at", "created_at"})
# libyaml when PyYAML has it: the editor reads and writes the flows file on every preview.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class Problem(BaseModel):
    """One thing the validator says is wrong with the draft; `target` names the mapping row
    it belongs to, when it belongs to one."""

    line: int | None
    flow: str | None
    field: str | None
    target: str | None = None
    message: str


class Verdict(BaseModel):
    """The filter's verdict on the event."""

    expression: str | None = None
    keeps: bool | None = Field(default=None, description="None when it failed or did not run")
    reason: str | None = Field(
        default=None, description="Why the event is left out, or the failure"
    )


class Row(BaseModel):
    """One mapping row `target <- expression` and what it yields on the event."""

    target: str
    expression: str
    value: Any = None
    error: str | None = None
    problems: list[str] = Field(default_factory=list)


class Change(BaseModel):
    field: str
    before: Any = None
    after: Any = None


class Output(BaseModel):
    """The record as the flow's action would write it, and what changes."""

    record: str = Field(description="contact, invoice or location")
    record_id: str
    new: bool = Field(description="No such record exists yet: the write creates it")
    fields: dict[str, Any] | None = None
    changes: list[Change] = Field(default_factory=list)


class Preview(BaseModel):
    flow: str
    event_type: str
    event_id: str
    triggered: bool = Field(description="The flow's triggers include the event's type")
    filter: Verdict
    rows: list[Row]
    outcome: flows.Outcome | None = Field(
        default=None, description="What `snapshots mappings test` says for this flow and event"
    )
    output: Output | None = None
    error: str | None = Field(default=None, description="The action refused the write")
    problems: list[Problem] = Field(
        default_factory=list, description="The draft's problems that belong to no row"
    )


class Sample(BaseModel):
    """A recent event of a type, offered as a sample."""

    item_id: int
    event_id: str
    event_type: str
    connection_id: str
    source: str
    status: str
    received_at: Timestamp


# Drafts: the flows file with one flow replaced.


def flow_specs(text: str) -> list[dict[str, Any]]:
    """The flows of a file as plain data (YAML aliases expanded); BadRequest when it is not a
    flows file at all (`flowfile.check` says exactly why). The caller owns what it gets (a
    copy: callers edit it)."""
    return copy.deepcopy(_parsed(text))


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> list[dict[str, Any]]:
    # Keyed by the whole text, so correct by construction: the editor opens the flows in
    # force again and again (parsing their YAML was a tenth of the page), and a saved version
    # is another text. Never handed out as is: `flow_specs` copies it.
    try:
        data = yaml.load(text, Loader=LOADER)
    except yaml.YAMLError as exc:
        raise errors.BadRequest(f"the flows file is not valid YAML: {exc}") from exc
    found = data.get("flows") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise errors.BadRequest("the flows file has no `flows:` list")
    return [spec for spec in found if isinstance(spec, dict)]


def with_flow(text: str, spec: dict[str, Any], *, replaces: str | None) -> str:
    """The flows file `text` with the flow named `replaces` swapped for `spec` (added at the
    end when `replaces` is None or names no flow). The file is written again from its data:
    comments and aliases do not survive (the YAML tab keeps a file as typed)."""
    specs = flow_specs(text)
    shaped = {key: value for key, value in spec.items() if value not in (None, "", {}, [])}
    for index, found in enumerate(specs):
        if replaces is not None and found.get("name") == replaces:
            specs[index] = shaped
            break
    else:
        specs.append(shaped)
    return yaml.dump(
        {"flows": specs}, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=100
    )


# Sample events, and their object as a tree of JMESPath paths (clicking one in the editor
# inserts it into the expression being written).

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NODES = 2_000  # nodes of a sample shown as a tree; the rest is cut
MAX_VALUE = 200  # characters of a leaf's value shown
# A leaf's JSON. One encoder for all: `json.dumps` with options builds an encoder per call.
_LEAF = json.JSONEncoder(ensure_ascii=False, default=str).encode


@dataclass(frozen=True)
class Node:
    """A value of the sample object: its key, its JMESPath from the object, and its JSON (a
    leaf), or the values inside it."""

    label: str
    path: str
    value: str | None = None
    children: tuple[Node, ...] = ()


def _step(path: str, key: str) -> str:
    part = key if IDENTIFIER.fullmatch(key) else json.dumps(key)  # a quoted identifier
    return f"{path}.{part}" if path else part


def tree(value: Any) -> list[Node]:
    """The object's values as nodes, in the object's order, at most `MAX_NODES` of them."""
    budget = [MAX_NODES]

    def nodes(inner: Any, path: str) -> tuple[Node, ...]:
        if isinstance(inner, dict):
            pairs = [(str(key), _step(path, str(key)), item) for key, item in inner.items()]
        elif isinstance(inner, list):
            pairs = [(f"[{index}]", f"{path}[{index}]", item) for index, item in enumerate(inner)]
        else:
            return ()
        found = []
        for label, where, item in pairs:
            budget[0] -= 1
            if budget[0] < 0:
                break
            children = nodes(item, where) if isinstance(item, dict | list) and item else ()
            shown = None if children else _LEAF(item)
            if shown is not None and len(shown) > MAX_VALUE:
                shown = shown[:MAX_VALUE] + "…"
            found.append(Node(label, where, shown, children))
        return tuple(found)

    return list(nodes(value, ""))


def sample_event(event_type: str) -> dict[str, Any]:
    """A sample event of `event_type` carrying Stripe's example object; BadRequest for a type
    Snapshots does not know."""
    if event_type not in samples.event_objects():
        raise errors.BadRequest(f"unknown event type {event_type!r} (see `snapshots catalog`)")
    return samples.sample_event(event_type, event_id=SAMPLE_ID)


def recent(tx: Tx, event_types: list[str], *, limit: int = RECENT) -> list[Sample]:
    """The newest inbox events of these types among the newest `RECENT_WINDOW` items, newest
    first."""
    newest = tx.execute(_NEWEST).scalar_one_or_none() or 0
    rows = tx.execute(
        _RECENT, {"after": newest - RECENT_WINDOW, "types": event_types, "limit": limit}
    ).all()
    return [Sample.model_validate(store.fields(row)) for row in rows]


# Built once: the editor reads them at every preview (building a statement again, with its
# cache key, cost about as much as SQLite running it).
_I = tables.inbox_items
_NEWEST = sa.select(sa.func.max(_I.c.id))
_RECENT = (
    sa.select(
        _I.c.id.label("item_id"),
        _I.c.event_id,
        _I.c.event_type,
        _I.c.connection_id,
        _I.c.source,
        _I.c.status,
        _I.c.received_at,
    )
    .where(
        _I.c.id > sa.bindparam("after"),
        _I.c.event_type.in_(sa.bindparam("types", expanding=True)),
    )
    .order_by(_I.c.id.desc())
    .limit(sa.bindparam("limit"))
)


def inbox_event(tx: Tx, item_id: int) -> tuple[dict[str, Any], str, bool]:
    """An inbox item's event as it arrived, its connection and whether it is a test."""
    t = tables.inbox_items
    row = tx.execute(sa.select(t.c.connection_id, t.c.source).where(t.c.id == item_id)).first()
    if row is None:
        raise errors.NotFound(f"no inbox item {item_id}")
    try:
        event = json.loads(inbox.payload(tx, item_id))
    except ValueError as exc:
        raise errors.BadRequest(f"inbox item {item_id} is not JSON: {exc}") from exc
    return (
        samples.as_event(event, None, where=f"inbox item {item_id}"),
        row.connection_id,
        (row.source == "test"),
    )


# The preview.


def _problems(checked: flowfile.Checked, flow: str) -> list[Problem]:
    found = []
    for p in checked.problems:
        target = None
        if p.field is not None and p.field.startswith("field "):
            target = p.field[len("field ") :].strip("'\"")
        found.append(
            Problem(line=p.line, flow=p.flow, field=p.field, target=target, message=p.message)
        )
    return [p for p in found if p.flow in (None, flow)]


def _evaluate(source: str, event: dict[str, Any]) -> tuple[Any, str | None]:
    """An expression's value on the event's object, or why it has none."""
    try:
        expression = mapping.Expression(source)
        with mapping.for_event(event):
            return expression.evaluate(event["data"]["object"]), None
    except errors.SnapshotsError as exc:
        return None, exc.message


def _verdict(source: Any, event: dict[str, Any]) -> Verdict:
    if not isinstance(source, str) or not source.strip():
        return Verdict(keeps=True)
    value, error = _evaluate(source, event)
    if error is not None:
        return Verdict(expression=source, reason=error)
    if not isinstance(value, bool):
        shown = json.dumps(value, default=str)
        return Verdict(expression=source, reason=f"the filter gave {shown}, not a boolean")
    if value:
        return Verdict(expression=source, keeps=True)
    return Verdict(
        expression=source,
        keeps=False,
        reason=f"filtered out: {source} is false for this event",
    )


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A record's fields by path; an empty object has none (`custom: {}` -> nothing)."""
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found |= _flat(inner, f"{prefix}{key}.")
        return found
    return {prefix.rstrip("."): value}


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Change]:
    """What differs between two records (nested fields by path: `custom.city`); every field
    of a new one (`before` None)."""
    old, new = (_flat(before) if before else {}), _flat(after)
    return [
        Change(field=name, before=old.get(name), after=new.get(name))
        for name in sorted(old.keys() | new.keys())
        if name.split(".")[0] not in IGNORED_CHANGES
        and (before is None or old.get(name) != new.get(name))
    ]


def _output(
    db: Database,
    flow: flows.Flow,
    values: dict[str, Any],
    event: dict[str, Any],
    *,
    connection_id: str,
    test: bool,
) -> Output | None:
    """Run the flow's action in a transaction that is rolled back; the record it wrote, and
    the record as it is. None when the action writes no record of its own (an activity)."""
    kind = kinds.KINDS[flow.action.record]
    with db.trial() as tx:
        record_id = flow.write(tx, values, connection_id=connection_id, event=event, test=test)
        if not record_id.startswith(kind.prefix):
            return None
        after = reads.get(tx, kind, record_id).model_dump(mode="json")
    with db.read() as tx:
        try:
            before: dict[str, Any] | None = reads.get(tx, kind, record_id).model_dump(mode="json")
        except errors.NotFound:
            before = None
    return Output(
        record=kind.name,
        record_id=record_id,
        new=before is None,
        fields=after,
        changes=changes(before, after),
    )


def preview(
    db: Database | None,
    text: str,
    flow: str,
    event: dict[str, Any],
    *,
    connection_id: str = "",
    test: bool = False,
    checked: flowfile.Checked | None = None,
    spec: dict[str, Any] | None = None,
) -> Preview:
    """What flow `flow` of the flows file `text` would do with `event`: each row's value, the
    filter's verdict, the outcome `mappings test` gives, and (given `db`, when the draft is
    valid and the flow would write) the record its action would write, diffed against the
    current one. Nothing is written. NotFound when the file has no such flow. When the caller
    has them, `checked` is the file's check (the flows in force, checked when they were
    loaded) and `spec` the flow as the file gives it; else they are read from `text` here."""
    if spec is None:
        spec = {found.get("name"): found for found in flow_specs(text)}.get(flow)
    if spec is None:
        raise errors.NotFound(f"no flow named {flow!r} in the flows file")
    if checked is None:
        checked = flowfile.check(text, DRAFT)
    problems = _problems(checked, flow)
    given = spec.get("fields")
    fields: dict[Any, Any] = given if isinstance(given, dict) else {}
    rows = []
    for target, source in fields.items():
        value, error = _evaluate(str(source), event)
        mine = [p.message for p in problems if p.target == str(target)]
        rows.append(
            Row(target=str(target), expression=str(source), value=value, error=error, problems=mine)
        )
    triggers = spec.get("trigger")
    triggers = [triggers] if isinstance(triggers, str) else triggers
    triggered = isinstance(triggers, list) and any(
        fnmatch.fnmatchcase(event["type"], str(pattern)) for pattern in triggers
    )
    found = Preview(
        flow=flow,
        event_type=event["type"],
        event_id=str(event.get("id")),
        triggered=triggered,
        filter=_verdict(spec.get("filter"), event),
        rows=rows,
        problems=[p for p in problems if p.target is None],
    )
    if checked.registry is None:
        return found
    outcomes = flows.preview(checked.registry, event, flow=flow)
    if not outcomes:
        return found
    found.outcome = outcomes[0]
    if db is None or found.outcome.outcome != "would write":
        return found
    compiled = next(f for f in checked.registry.flows if f.name == flow)
    try:
        found.output = _output(
            db,
            compiled,
            found.outcome.fields or {},
            event,
            connection_id=connection_id,
            test=test,
        )
    except errors.SnapshotsError as exc:
        found.error = errors.describe(exc)
    return found
