"""Connect Stripe: the list, the form (managed webhook endpoint by default, or a pasted signing
secret), the result (the key check with the capability table, the endpoint made), and each
connection's page: health with its fixes, check now, repair, settings, rotating the signing
secret, removing, and a timeline of sync runs and audit entries.

The same onboarding functions as `snapshots connect stripe` and `snapshots connections ...` do
the work. They ask Stripe without a transaction open; these routes are plain functions, so
FastAPI runs them in a worker thread and a slow Stripe never stalls the event loop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import connections, errors, overview, revisions, times
from snapshots.onboarding import health, setup
from snapshots.ui import render
from snapshots.ui.deps import Admin, ConsoleDep, Viewer

router = APIRouter()
Text = Annotated[str, Form()]


def _form(request: Request, console: ConsoleDep, *, status: int = 200, **values: Any) -> Response:
    context = {
        "error": None,
        "name": "",
        "mode": "managed",
        "public_url": console.settings.public_url or "",
        "api_base": "",
        "ordering": "payload",
        "orderings": connections.ORDERINGS,
        **values,
    }
    return render.page(request, "connection_new.html", context, status=status)


@router.get("/connections")
def connections_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    with console.db.read() as tx:
        found = connections.list_all(tx, console.secrets)
    reasons = {c.id: health.reason(c) for c in found}
    return render.page(request, "connections.html", {"found": found, "reasons": reasons})


@router.get("/connections/new")
def new_connection_page(request: Request, console: ConsoleDep, session: Admin) -> Response:
    return _form(request, console)


@router.post("/connections")
def connect(
    request: Request,
    console: ConsoleDep,
    session: Admin,
    secret_key: Text = "",
    mode: Text = "managed",
    webhook_secret: Text = "",
    name: Text = "",
    public_url: Text = "",
    api_base: Text = "",
    ordering: Text = "payload",
) -> Response:
    """Check the key, then make the webhook endpoint in Stripe (managed) or keep the pasted
    signing secret. A refusal shows the form again with what to fix (never the key)."""
    manual = mode == "manual"
    try:
        if manual and not webhook_secret.strip():
            raise errors.BadRequest(
                "paste the webhook signing secret (whsec_...) of the endpoint you registered, "
                "or choose a managed webhook endpoint"
            )
        done = setup.connect(
            console.db,
            console.secrets,
            secret_key=secret_key,
            webhook_secrets=[webhook_secret] if manual else None,
            public_url=public_url.strip() or (console.settings.base_url if manual else None),
            name=name.strip() or None,
            api_base=api_base.strip() or None,
            ordering=ordering,
            actor=session.user.actor,
        )
    except (errors.BadRequest, errors.Conflict, errors.StripeError) as exc:
        values = {
            "name": name,
            "mode": "manual" if manual else "managed",
            "public_url": public_url,
            "api_base": api_base,
            "ordering": ordering,
        }
        status = exc.status if isinstance(exc, errors.Rejected) else _stripe_status(exc)
        return _form(request, console, status=status, error=_say(exc), **values)
    return render.page(request, "connected.html", {"done": done}, status=201)


def _stripe_status(exc: errors.SnapshotsError) -> int:
    """A key Stripe refuses is the form's fault (400); Stripe away is not (502)."""
    return 502 if isinstance(exc, errors.StripeUnavailable) else 400


def _say(exc: errors.SnapshotsError) -> str:
    if isinstance(exc, errors.StripeError):
        return f"Stripe said no: {errors.describe(exc)}"
    return exc.message


def _connection_page(
    request: Request,
    console: ConsoleDep,
    connection_id: str,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    with console.db.read() as tx:
        found = connections.get(tx, console.secrets, connection_id)
        history = overview.timeline(tx, found.id)
    context = {
        "c": found,
        "reason": health.reason(found),
        "history": history,
        "orderings": connections.ORDERINGS,
        "error": error,
    }
    return render.page(request, "connection.html", context, status=status)


@router.get("/connections/{connection_id}")
def connection_page(
    request: Request, console: ConsoleDep, session: Viewer, connection_id: str
) -> Response:
    return _connection_page(request, console, connection_id)


@router.post("/connections/{connection_id}/check")
def check_now(console: ConsoleDep, session: Admin, connection_id: str) -> Response:
    with console.db.read() as tx:
        found = connections.get(tx, console.secrets, connection_id)
        registry = revisions.current(tx)
    result = health.check(
        console.db,
        console.secrets,
        found,
        registry,
        public_url=console.settings.public_url,
        actor=session.user.actor,
    )
    return render.redirect(
        f"/connections/{found.id}", notice=f"Checked now: {result.health}: {result.reason}"
    )


@router.post("/connections/{connection_id}/repair")
def repair(console: ConsoleDep, session: Admin, connection_id: str) -> Response:
    done = setup.repair(
        console.db,
        console.secrets,
        connection_id,
        public_url=console.settings.public_url,
        actor=session.user.actor,
    )
    if done.endpoint_created:
        what = f"made a new webhook endpoint {done.endpoint_id} (its secret is stored)"
    else:
        what = f"repaired the webhook endpoint {done.endpoint_id}"
        what += ", enabled it again" if done.endpoint_enabled else ""
    return render.redirect(
        f"/connections/{done.id}",
        notice=f"{what}: {done.webhook_url}, {done.events} event types.",
    )


@router.post("/connections/{connection_id}/settings")
def change(
    request: Request,
    console: ConsoleDep,
    session: Admin,
    connection_id: str,
    name: Text = "",
    ordering: Text = "payload",
) -> Response:
    try:
        with console.db.write() as tx:
            changed = connections.change(
                tx,
                console.secrets,
                connection_id,
                name=name,
                ordering=ordering,
                actor=session.user.actor,
            )
    except errors.BadRequest as exc:
        return _connection_page(request, console, connection_id, error=exc.message, status=400)
    return render.redirect(f"/connections/{changed.id}", notice="Settings saved.")


@router.post("/connections/{connection_id}/rotate-secret")
def rotate_secret(
    request: Request,
    console: ConsoleDep,
    session: Admin,
    connection_id: str,
    webhook_secret: Text = "",
    overlap: Text = "24h",
) -> Response:
    try:
        seconds = times.parse_duration(overlap, zero=True, name="overlap")
        with console.db.write() as tx:
            changed = connections.rotate_webhook_secret(
                tx,
                console.secrets,
                connection_id,
                webhook_secret,
                overlap=seconds,
                actor=session.user.actor,
            )
    except (errors.BadRequest, errors.Conflict) as exc:
        return _connection_page(
            request, console, connection_id, error=exc.message, status=exc.status
        )
    return render.redirect(
        f"/connections/{changed.id}",
        notice=f"New signing secret …{webhook_secret.strip()[-4:]} in force; the earlier ones "
        f"work for {overlap.strip()} more.",
    )


@router.post("/connections/{connection_id}/remove")
def remove(console: ConsoleDep, session: Admin, connection_id: str) -> Response:
    removed = setup.remove(console.db, console.secrets, connection_id, actor=session.user.actor)
    said = f"Removed {removed.name} ({removed.id}); its records and events stay"
    if removed.endpoint_deleted:
        said += f"; deleted its webhook endpoint {removed.endpoint_id} in Stripe"
    if removed.note:
        said += f". {removed.note[0].upper()}{removed.note[1:]}"
    return render.redirect("/connections", notice=said + ".")
