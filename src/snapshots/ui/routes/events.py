"""Events (the inbox): the filtered list with failures grouped by cause, one event in full,
replaying one, and "replay these N" (a bulk replay job, run in the background, with its
progress page)."""

from __future__ import annotations

import functools
import os
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Form, Query, Request
from fastapi.responses import Response
from jinja2.filters import do_truncate
from markupsafe import Markup, escape

from snapshots import connections, errors, events, inbox, replay, times
from snapshots.ui import render
from snapshots.ui.deps import Admin, ConsoleDep, Viewer

router = APIRouter()

PAGE = 50  # events a page
CAP = 5_000  # items one replay started here queues again at most
Text = Annotated[str | None, Query(max_length=512)]


def _moment(text: str | None, name: str) -> float | None:
    return None if not text or not text.strip() else times.parse_since(text, name=name)


def _search(values: dict[str, str | None]) -> events.Search:
    """The search a filter form asks for (empty fields are no condition)."""
    given = {k: (v.strip() if isinstance(v, str) else v) for k, v in values.items()}
    given = {k: v for k, v in given.items() if v}
    return events.Search(
        status=given.get("status"),
        type=given.get("type"),
        connection_id=given.get("connection_id"),
        source=given.get("source"),
        test={"hide": False, "only": True}.get(given.get("test") or ""),
        since=_moment(given.get("since"), "since"),
        until=_moment(given.get("until"), "until"),
        q=given.get("q"),
        cause=given.get("cause"),
    )


def _query(values: dict[str, str | None], **more: Any) -> str:
    kept = {k: v for k, v in values.items() if v}
    kept.update({k: v for k, v in more.items() if v is not None})
    return _encoded(tuple(kept.items()))


@functools.lru_cache(maxsize=256)
def _encoded(pairs: tuple[tuple[str, Any], ...]) -> str:
    """A query string, made once per filter: the causes' links quote long error texts a
    character at a time, and a list opened again (or refreshed) links the same causes."""
    return urlencode(pairs)


def _links(
    values: dict[str, str | None], found: Any, *, after: int | None, before: int | None
) -> dict[str, str | None]:
    """The queries of the "older" and "newer" links of a page: `has_more` counts on the side
    it was read towards; the side of its cursor has at least the cursor's item."""
    if before is None:
        older, newer = found.has_more, after is not None
    else:
        older, newer = True, found.has_more
    first, last = (found.data[0].id, found.data[-1].id) if found.data else (None, None)
    return {
        "next_query": _query(values, after=last) if older and last else None,
        "newer_query": (
            None if not newer else _query(values, before=first) if first else _query(values)
        ),
    }


@router.get("/events")
def events_page(
    request: Request,
    console: ConsoleDep,
    session: Viewer,
    status: Text = None,
    type: Text = None,
    connection_id: Text = None,
    source: Text = None,
    test: Annotated[Literal["", "hide", "only"], Query()] = "",
    since: Text = None,
    until: Text = None,
    q: Text = None,
    cause: Text = None,
    after: Annotated[int | None, Query(ge=1, le=inbox.MAX_ITEM_ID)] = None,
    before: Annotated[int | None, Query(ge=1, le=inbox.MAX_ITEM_ID)] = None,
) -> Response:
    values = {
        "status": status,
        "type": type,
        "connection_id": connection_id,
        "source": source,
        "test": test or None,
        "since": since,
        "until": until,
        "q": q,
        "cause": cause,
    }
    context: dict[str, Any] = {
        "values": values,
        "statuses": inbox.STATUSES,
        "sources": events.SOURCES,
        "problem": None,
        "page": None,
        "causes": [],
        "plan": None,
        "cap": CAP,
        "cause_cap": events.COUNT_CAP,
        "next_query": None,
        "newer_query": None,
        "rows": Markup(""),
        "filtered": any(values.values()),
    }
    with console.db.read() as tx:
        context["connections"] = connections.names(tx)
        try:
            search = _search(values)
        except errors.BadRequest as exc:
            context["problem"] = exc.message
        else:
            found = events.page(tx, search, limit=PAGE, starting_after=after, ending_before=before)
            context["page"] = found
            context["rows"] = _rows(found.data)
            context["causes"] = events.failures(tx, search)
            context.update(_links(values, found, after=after, before=before))
            if search.status in replay.STATUSES:
                flt = replay.Filter(**search.model_dump())
                context["plan"] = replay.preview(tx, flt, cap=CAP, top_errors=False)
    context["cause_query"] = {
        c.cause: _query({**values, "status": c.status, "cause": c.cause}) for c in context["causes"]
    }
    return render.page(
        request,
        "events.html",
        context,
        fragment="results",
        status=400 if context["problem"] else 200,
    )


def _rows(found: list[inbox.Event]) -> Markup:
    """The list's rows, made here rather than by a template: each `{{ }}` of a template makes
    a Markup of its value (a Python call and a str subclass each), and the eleven of each of
    fifty rows were two thirds of the page's rendering. Every text is escaped as autoescape
    does it (`markupsafe.escape`), numbers need none, times are `render.when`'s elements: the
    same HTML as the template it replaces, byte for byte."""
    env = render.environment()
    made = []
    for e in found:
        status = escape(e.status)
        tries = f" <small>({e.attempts} tries)</small>" if e.attempts > 1 else ""
        error = ""
        if e.last_error:
            error = f"<small>{escape(do_truncate(env, e.last_error, 160))}</small>"
        made.append(
            "    <tr>\n"
            f'      <td><a href="/events/{e.id}">{e.id}</a></td>\n'
            f'      <td><a href="/events/{e.id}">{escape(e.event_type)}</a>'
            f"<br><small>{escape(e.event_id)}</small></td>\n"
            f'      <td><span class="status status-{status}">{status}</span>{tries}</td>\n'
            f"      <td>{render.when(e.received_at)}</td>\n"
            f"      <td>{escape(e.source)}</td>\n"
            f"      <td>{error}</td>\n"
            "    </tr>\n"
        )
    return Markup("".join(made))


@router.post("/events/replay")
def replay_events(
    console: ConsoleDep,
    session: Admin,
    background: BackgroundTasks,
    status: Annotated[str, Form(max_length=20)],
    type: Annotated[str | None, Form(max_length=512)] = None,
    connection_id: Annotated[str | None, Form(max_length=512)] = None,
    source: Annotated[str | None, Form(max_length=512)] = None,
    test: Annotated[str | None, Form(max_length=10)] = None,
    since: Annotated[str | None, Form(max_length=512)] = None,
    until: Annotated[str | None, Form(max_length=512)] = None,
    q: Annotated[str | None, Form(max_length=512)] = None,
    cause: Annotated[str | None, Form(max_length=512)] = None,
) -> Response:
    """Start a bulk replay of what the list shows (at most `CAP` items, the oldest first),
    run here in the background (a worker would take it over if this process stopped)."""
    search = _search(
        {
            "status": status,
            "type": type,
            "connection_id": connection_id,
            "source": source,
            "test": test,
            "since": since,
            "until": until,
            "q": q,
            "cause": cause,
        }
    )
    flt = replay.Filter(**search.model_dump())
    with console.db.write() as tx:
        job = replay.start(tx, flt, actor=f"ui:{session.user.email}", cap=CAP)
    if job.status == "queued":
        background.add_task(replay.run, console.db, job.id, holder=f"console:{os.getpid()}")
    return render.redirect(
        f"/events/replay/{job.id}", notice=f"Replaying {job.quota:,} event(s) in the background."
    )


@router.get("/events/replay/{job_id}")
def replay_job_page(
    request: Request, console: ConsoleDep, session: Viewer, job_id: str
) -> Response:
    with console.db.read() as tx:
        job = replay.get(tx, job_id)
    return render.page(request, "replay_job.html", {"job": job}, fragment="progress")


@router.get("/events/{ref}")
def event_page(request: Request, console: ConsoleDep, session: Viewer, ref: str) -> Response:
    with console.db.read() as tx:
        shown = events.detail(tx, ref)
    return render.page(request, "event.html", {"detail": shown, "event": shown.event})


@router.post("/events/{ref}/replay")
def replay_event(console: ConsoleDep, session: Admin, ref: str) -> Response:
    with console.db.write() as tx:
        event = events.replay_one(tx, ref, actor=f"ui:{session.user.email}")
    return render.redirect(f"/events/{event.id}", notice=f"Event {event.event_id} is queued again.")
