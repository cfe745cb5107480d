"""Flows: the list with 24 h counts, the editor (sample, flow, output; previews run the worker's
code and write nothing), saving as a new version, versions with diffs and rollback, and the
whole file as YAML. Every save is `revisions.import_text`, as `snapshots flows import` does."""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from starlette.datastructures import FormData

from snapshots import catalog, connections, errors, flowfile, flows, inbox, preview, revisions
from snapshots.onboarding import endpoint
from snapshots.store.db import Tx
from snapshots.ui import render
from snapshots.ui.deps import Admin, ConsoleDep, Viewer

router = APIRouter()

DAY = 86_400.0  # seconds the list's counts look back
BLANK_ROWS = 2  # empty mapping rows offered to add more
MAX_SAMPLE_TYPES = 10  # trigger types whose recent events are offered as samples
WHERE = "flow editor"
SPEC_KEYS = ("name", "description", "trigger", "filter", "action", "options", "fields")
# The form fields a save's problems name (the file's keys the form edits).
FORM_FIELDS = frozenset({"name", "trigger", "filter", "action", "options"})


def editor_url(name: str) -> str:
    return "/flows/edit/" + quote(name, safe="")


def _in_force(console: ConsoleDep) -> revisions.Revision:
    with console.db.read() as tx:
        return revisions.get_revision(tx)


def _compiled(console: ConsoleDep, revision: revisions.Revision) -> flows.Registry | None:
    """The flows of `revision` as the worker runs them: the process's own, compiled once when
    it loaded that version (a check evaluates sample events: most of a preview's cost), or
    compiled now when this process has not loaded it yet; None when they do not load."""
    try:
        registry = console.registry()
        if registry.version != revision.version:
            registry = revisions.load(revision)
    except errors.FlowsIncompatible:
        return None
    return registry


def in_force(console: ConsoleDep) -> flows.Registry:
    """The flows in force: the process's copy, or the newest version when this process has
    not loaded it yet (a save a moment ago)."""
    registry = console.registry()
    with console.db.read() as tx:
        if revisions.current_version(tx) != registry.version:
            registry = revisions.current(tx)
    return registry


@router.get("/flows")
def flows_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    registry = in_force(console)
    with console.db.read() as tx:
        counts = inbox.flow_counts(tx, registry.flows, since=time.time() - DAY)
    return render.page(
        request,
        "flows.html",
        {"flows": registry.flows, "counts": counts, "version": registry.version},
    )


# The editor.


def _spec_of(text: str, name: str | None) -> dict[str, Any]:
    if name is None:
        return {"name": "", "trigger": [], "action": "upsert_contact", "fields": {}}
    for spec in preview.flow_specs(text):
        if spec.get("name") == name:
            return spec
    raise errors.NotFound(f"no flow named {name!r} in the flows in force")


Rows = list[tuple[str, str]]  # the editor's mapping rows as shown: (target, expression)


def _rows_of(spec: dict[str, Any]) -> Rows:
    fields = spec.get("fields") if isinstance(spec.get("fields"), dict) else {}
    return [(str(t), str(e)) for t, e in (fields or {}).items()]


def _form_rows(form: FormData) -> Rows:
    targets = [str(t).strip() for t in form.getlist("target")]
    expressions = [str(e).strip() for e in form.getlist("expression")]
    return list(zip(targets, expressions, strict=False))


def _form_spec(form: FormData) -> tuple[dict[str, Any], list[preview.Problem]]:
    """The flow the editor's form describes, and what is wrong with its options' YAML."""
    problems = []
    options: Any = {}
    text = str(form.get("options") or "").strip()
    if text:
        try:
            options = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or "not valid YAML"
            problems.append(
                preview.Problem(line=None, flow=None, field="options", message=f"options: {reason}")
            )
            options = {}
    fields = {t: e for t, e in _form_rows(form) if t and e}
    spec = {
        "name": str(form.get("name") or "").strip(),
        "description": str(form.get("description") or "").strip() or None,
        "trigger": [str(t).strip() for t in form.getlist("trigger") if str(t).strip()],
        "filter": str(form.get("filter") or "").strip() or None,
        "action": str(form.get("action") or "").strip(),
        "options": options,
        "fields": fields,
    }
    return spec, problems


def _sample(tx: Tx, choice: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any], str, bool]:
    """The sample event (`type:<event type>` for Stripe's example, `item:<id>` for an inbox
    event), the choice as made, the connection it belongs to and whether it is a test."""
    if choice.startswith("item:") and choice[5:].isdigit():
        event, connection_id, test = preview.inbox_event(tx, int(choice[5:]))
        return choice, event, connection_id, test
    event_type = choice[5:] if choice.startswith("type:") else ""
    if not event_type:
        known = [t for t in spec.get("trigger") or [] if t in _event_types()]
        event_type = known[0] if known else "customer.created"
    connection_id = connections.first_id(tx) or ""
    return f"type:{event_type}", preview.sample_event(event_type), connection_id, False


@functools.cache
def _event_types() -> frozenset[str]:
    return frozenset(t.type for t in catalog.catalog().triggers)


@functools.cache
def _trigger_options() -> Markup:
    """The trigger picker's options: every type of the catalog with its description, rendered
    once (they depend on the code only; 270 of them were most of the editor's rendering)."""
    option = Markup('<option value="{}">{}</option>')
    return Markup("").join(option.format(t.type, t.description) for t in catalog.catalog().triggers)


@dataclass(frozen=True)
class _Keyed:
    """A value a cache finds by `key` alone (a digest or the text of the value)."""

    key: bytes
    value: Any = field(compare=False, hash=False)


def _tree(sample: dict[str, Any]) -> Markup:
    """The sample object's tree, kept by a digest of the object's JSON: a sample opened again
    (Stripe's example of a type, or the same inbox event) is the same tree, and walking and
    rendering its 50-odd nodes cost a tenth of the editor's page; hashing them to find the
    tree cost as much as walking them."""
    try:
        key = hashlib.blake2b(orjson.dumps(sample), digest_size=16).digest()
    except orjson.JSONEncodeError:  # not JSON's (an integer over 64 bits): made again
        return _tree_html.__wrapped__(_Keyed(b"", sample))
    return _tree_html(_Keyed(key, sample))


@functools.lru_cache(maxsize=64)
def _tree_html(sample: _Keyed) -> Markup:
    macro = render.environment().get_template("_sample_tree.html").module.tree  # type: ignore[attr-defined]
    return Markup(macro(preview.tree(sample.value)))


def _editor(
    request: Request,
    console: ConsoleDep,
    *,
    original: str | None,
    spec: dict[str, Any],
    sample: str,
    revision: revisions.Revision | None = None,
    read: _Read | None = None,
    rows: Rows | None = None,
    options: str | None = None,
    problems: list[preview.Problem] | None = None,
    status: int = 200,
    fragment: str | None = None,
) -> Response:
    """The editor. `revision`: the version in force when `spec` is its flow `original` as it
    is there (the page as opened), so the draft is that file and its flows are those the
    worker compiled; otherwise the draft (the file with `spec` in) is checked here. `read`:
    what the page reads, when the caller read it in its own transaction."""
    current = revision or _in_force(console)
    text = current.text or ""
    shown_spec = _shown_spec(spec)
    if read is None:
        with console.db.read() as tx:
            read = _read(tx, spec, sample)
    choice, event, connection_id, test, recent = read
    draft, checked = None, None
    if revision is not None and original is not None:
        draft = text
        registry = _compiled(console, revision)
        checked = None if registry is None else flowfile.Checked(registry)
    elif spec.get("name"):
        draft = preview.with_flow(text, spec, replaces=original)
    shown = None
    if draft is not None:
        try:
            shown = preview.preview(
                console.db,
                draft,
                spec["name"],
                event,
                connection_id=connection_id,
                test=test,
                checked=checked,
                spec=spec if checked is not None else None,
            )
        except errors.NotFound:
            shown = None
    every = [*(problems or []), *(shown.problems if shown else [])]
    # An htmx preview swaps each row's value into the page as it is: no rows added.
    oob = fragment is not None and request.headers.get("hx-request") == "true"
    found = catalog.catalog()
    action = next((a for a in found.actions if a.name == spec.get("action")), None)
    context = {
        "original": original,
        "spec": shown_spec,
        "rows": _shown_rows(_rows_of(spec) if rows is None else rows, shown, pad=not oob),
        "options": _options_text(spec) if options is None else options,
        "sample": choice,
        "event": event,
        "tree": _tree(event["data"]["object"]),
        "recent": recent,
        "preview": shown,
        "problems": every,
        "oob": oob,
        "field_problems": {p.field: p.message for p in reversed(every) if p.field in FORM_FIELDS},
        "event_types": sorted(_event_types()),
        # Stripe's examples offered as samples: the flow's trigger types and the one shown.
        "sample_types": [
            t.type
            for t in found.triggers
            if t.type in shown_spec["trigger"] or f"type:{t.type}" == choice
        ],
        "trigger_options": _trigger_options(),
        "actions": found.actions,
        "targets": [*action.targets, *(t.rstrip("*") for t in action.nested_targets)]
        if action
        else [],
    }
    return render.page(request, "flow.html", context, status=status, fragment=fragment)


_Read = tuple[str, dict[str, Any], str, bool, list[preview.Sample]]


def _read(tx: Tx, spec: dict[str, Any], sample: str) -> _Read:
    """What the editor reads, in one transaction: the sample (`_sample`), the connection it
    belongs to, whether it is a test, and the recent events of the flow's types to pick from."""
    shown_spec = _shown_spec(spec)
    known = _event_types()
    types = [t for t in shown_spec["trigger"] if t in known][:MAX_SAMPLE_TYPES]
    choice, event, connection_id, test = _sample(tx, sample, shown_spec)
    return choice, event, connection_id, test, preview.recent(tx, types or [event["type"]])


def _shown_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The flow with every key the editor shows (a trigger given as one string as a list)."""
    shown = {key: spec.get(key) for key in SPEC_KEYS}
    trigger = shown["trigger"]
    shown["trigger"] = [trigger] if isinstance(trigger, str) else list(trigger or [])
    return shown


def _options_text(spec: dict[str, Any]) -> str:
    if not spec.get("options"):
        return ""
    # Kept by the options' repr, which tells apart every type YAML reads (a date from its
    # text, 1 from 1.0 and True): dumping them cost 4% of the editor's page.
    return _options_yaml(_Keyed(repr(spec["options"]).encode(), spec["options"]))


@functools.lru_cache(maxsize=64)
def _options_yaml(options: _Keyed) -> str:
    dumped = yaml.dump(options.value, Dumper=preview.DUMPER, sort_keys=False, allow_unicode=True)
    return dumped.strip()  # libyaml's safe dumper when built in: the same text, faster


def _shown_rows(rows: Rows, shown: preview.Preview | None, *, pad: bool) -> list[dict[str, Any]]:
    """The rows as the editor shows them, each with what the preview says of it, and (`pad`)
    empty rows at the end to add more."""
    found = {row.target: row for row in shown.rows} if shown is not None else {}
    if pad:
        while rows and rows[-1] == ("", ""):
            rows = rows[:-1]
        rows = [*rows, *[("", "")] * BLANK_ROWS]
    return [
        {"target": target, "expression": expression, "preview": found.get(target)}
        for target, expression in rows
    ]


@router.get("/flows/new")
def new_flow(request: Request, console: ConsoleDep, session: Viewer, sample: str = "") -> Response:
    return _editor(request, console, original=None, spec=_spec_of("", None), sample=sample)


@router.get("/flows/yaml")
def yaml_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    revision = _in_force(console)
    return render.page(
        request,
        "flows_yaml.html",
        {"text": revision.text or "", "problems": [], "revision": revision},
    )


@router.post("/flows/yaml/check")
async def yaml_check(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    """The YAML tab's live check: the same check as a save, nothing saved."""
    form = await request.form()
    checked = flowfile.check(str(form.get("text") or ""), WHERE)
    return render.page(
        request,
        "flows_yaml.html",
        {
            "text": str(form.get("text") or ""),
            "problems": checked.problems,
            "revision": _in_force(console),
        },
        fragment="problems",
    )


@router.post("/flows/yaml")
async def yaml_save(request: Request, console: ConsoleDep, session: Admin) -> Response:
    form = await request.form()
    text = str(form.get("text") or "")
    try:
        imported = revisions.import_text(
            console.db,
            text,
            where=WHERE,
            actor=session.user.actor,
            comment=str(form.get("comment") or "").strip() or None,
        )
    except flowfile.Invalid as exc:
        context = {"text": text, "problems": exc.problems, "revision": _in_force(console)}
        return render.page(request, "flows_yaml.html", context, status=400)
    return render.redirect("/flows", notice=_saved(console, imported))


def _saved(console: ConsoleDep, imported: revisions.Imported) -> str:
    """Send the new flows' event types to every managed webhook endpoint (as `flows import`
    does), and say what was done."""
    done = endpoint.after_import(console.db, lambda: console.secrets, imported)
    said = (
        f"Flows version {imported.revision.version} is in force ({imported.flows} flows; was "
        f"version {imported.previous})."
    )
    for sent in done.endpoints:
        if sent.synced:
            said += f" The webhook endpoint of {sent.connection_id} listens to {sent.events} types."
        else:
            said += (
                f" The webhook endpoint of {sent.connection_id} keeps its old list for now "
                f"(retried): {sent.error}"
            )
    return said


@router.get("/flows/versions")
def versions_page(
    request: Request,
    console: ConsoleDep,
    session: Viewer,
    old: int | None = None,
    new: int | None = None,
) -> Response:
    with console.db.read() as tx:
        found = revisions.revisions(tx)
        diff = None
        if old is not None and new is not None:
            diff = revisions.diff(tx, old, new)
    return render.page(
        request,
        "flow_versions.html",
        {"versions": found, "old": old, "new": new, "diff": diff},
    )


@router.post("/flows/versions/{version}/rollback")
def rollback(console: ConsoleDep, session: Admin, version: int) -> Response:
    try:
        imported = revisions.rollback(console.db, version, actor=session.user.actor)
    except flowfile.Invalid as exc:
        raise errors.BadRequest(
            f"version {version} no longer passes today's checks: {exc.message[:300]}"
        ) from exc
    return render.redirect("/flows/versions", notice=_saved(console, imported))


@router.get("/flows/edit/{name:path}")
def flow_page(
    request: Request, console: ConsoleDep, session: Viewer, name: str, sample: str = ""
) -> Response:
    with console.db.read() as tx:  # the version in force and what the editor reads: one read
        revision = revisions.get_revision(tx)
        spec = _spec_of(revision.text or "", name)
        read = _read(tx, spec, sample)
    return _editor(
        request,
        console,
        original=name,
        spec=spec,
        sample=sample,
        revision=revision,
        read=read,
    )


def _original(form: FormData) -> str | None:
    return str(form.get("original") or "") or None


@router.post("/flows/preview")
async def flow_preview(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    """What the flow being edited would do with the sample (htmx: the output pane, each row's
    value and the sample); nothing is saved or written."""
    form = await request.form()
    spec, problems = _form_spec(form)
    return _editor(
        request,
        console,
        original=_original(form),
        spec=spec,
        sample=str(form.get("sample") or ""),
        rows=_form_rows(form),
        options=str(form.get("options") or ""),
        problems=problems,
        fragment="output",
    )


@router.post("/flows/save")
async def flow_save(request: Request, console: ConsoleDep, session: Admin) -> Response:
    """Check the whole flows file with this flow in it, then put it in force as a new version
    (a file with a problem changes nothing: the editor shows each problem at its row)."""
    form = await request.form()
    spec, problems = _form_spec(form)
    original = _original(form)
    sample = str(form.get("sample") or "")
    if not spec["name"]:
        problems.append(
            preview.Problem(line=None, flow=None, field="name", message="give the flow a name")
        )
    if problems:
        return _editor(
            request,
            console,
            original=original,
            spec=spec,
            sample=sample,
            rows=_form_rows(form),
            options=str(form.get("options") or ""),
            problems=problems,
            status=400,
        )
    text = preview.with_flow(_in_force(console).text or "", spec, replaces=original)
    try:
        imported = revisions.import_text(
            console.db,
            text,
            where=WHERE,
            actor=session.user.actor,
            comment=str(form.get("comment") or "").strip() or None,
        )
    except flowfile.Invalid:
        # The preview of the draft puts each problem at its row.
        return _editor(
            request,
            console,
            original=original,
            spec=spec,
            sample=sample,
            rows=_form_rows(form),
            options=str(form.get("options") or ""),
            status=400,
        )
    return render.redirect(editor_url(spec["name"]), notice=_saved(console, imported))
