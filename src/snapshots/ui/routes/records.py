"""Records: contacts, invoices and locations as lists (search, the API's filters, cursor
paging) and one record in full (fields and who set each, tags, custom fields, timeline, the
events that touched it)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from snapshots import errors, times
from snapshots.records import detail, reads
from snapshots.records.kinds import CONTACT, INVOICE, LOCATION, Kind
from snapshots.ui import render
from snapshots.ui.deps import ConsoleDep, Viewer

router = APIRouter()

PAGE = 50  # records a page
KINDS: dict[str, Kind[Any]] = {"contacts": CONTACT, "invoices": INVOICE, "locations": LOCATION}
PAYMENT_STATUSES = ("draft", "unpaid", "partially_paid", "failed", "paid", "void", "uncollectible")
# Each kind's list filters: (name, label, choices or None for free text), as the API has them.
FILTERS: dict[str, list[tuple[str, str, tuple[str, ...] | None]]] = {
    "contacts": [
        ("email", "E-mail (exact)", None),
        ("stripe_customer_id", "Stripe customer", None),
    ],
    "invoices": [
        ("status", "Status", ("draft", "open", "paid", "uncollectible", "void")),
        ("payment_status", "Payment status", PAYMENT_STATUSES),
        ("customer_id", "Contact (con_…)", None),
        ("stripe_customer_id", "Stripe customer", None),
    ],
    "locations": [("country", "Country (2 letters)", None)],
}
Text = Annotated[str | None, Query(max_length=512)]
Plural = Literal["contacts", "invoices", "locations"]


@router.get("/records")
def records_index() -> Response:
    return render.redirect("/records/contacts")


@router.get("/records/{plural}")
def records_page(
    request: Request,
    console: ConsoleDep,
    session: Viewer,
    plural: Plural,
    q: Text = None,
    archived: Annotated[Literal["", "true", "false"], Query()] = "",
    test: Annotated[Literal["", "hide", "only"], Query()] = "",
    updated_since: Text = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    kind = KINDS[plural]
    given = {name: request.query_params.get(name) or None for name, _, _ in FILTERS[plural]}
    values: dict[str, str | None] = {
        "q": q,
        "archived": archived or None,
        "test": test or None,
        "updated_since": updated_since,
        **given,
    }
    filters: dict[str, Any] = {
        name: (value.upper() if name == "country" else value.strip())
        for name, value in given.items()
        if value
    }
    if archived:
        filters["archived"] = archived == "true"
    if test:
        filters["test"] = test == "only"
    context: dict[str, Any] = {
        "plural": plural,
        "kind": kind.name,
        "kinds": list(KINDS),
        "filters": FILTERS[plural],
        "values": values,
        "problem": None,
        "page": None,
        "next_query": None,
        "filtered": any(values.values()),
    }
    try:
        since = (
            times.parse_since(updated_since, name="updated since")
            if updated_since and updated_since.strip()
            else None
        )
        for name, value in filters.items():
            if isinstance(value, str) and (not value.isprintable() or len(value) > 255):
                raise errors.BadRequest(f"{name}: at most 255 printable characters")
            choices = dict((n, c) for n, _, c in FILTERS[plural])[name] if name in given else None
            if choices and value not in choices:
                raise errors.BadRequest(f"{name}: one of {', '.join(choices)}")
        with console.db.read() as tx:
            found = reads.page(
                tx,
                kind,
                limit=PAGE,
                starting_after=after,
                filters=filters,
                updated_since=since,
                search=q,
            )
    except errors.BadRequest as exc:
        context["problem"] = exc.message
    else:
        context["page"] = found
        if found.has_more:
            kept = {k: v for k, v in values.items() if v}
            context["next_query"] = urlencode({**kept, "after": found.data[-1].id})
    return render.page(
        request,
        "records.html",
        context,
        fragment="results",
        status=400 if context["problem"] else 200,
    )


@router.get("/records/{plural}/{record_id}")
def record_page(
    request: Request, console: ConsoleDep, session: Viewer, plural: Plural, record_id: str
) -> Response:
    with console.db.read() as tx:
        shown = detail.get(tx, KINDS[plural], record_id)
    return render.page(
        request, "record.html", {"detail": shown, "record": shown.record, "plural": plural}
    )
