"""API keys: the list (last used time and address), creating one with scopes (shown once),
rotating with an overlap, revoking with a confirmation. Creating and rotating show a secret,
so they need the password typed within 15 minutes (`Confirmed`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import connections, errors, keys, times
from snapshots.ui import render
from snapshots.ui.deps import Admin, Confirmed, ConsoleDep, Viewer

router = APIRouter()
Many = Annotated[list[str], Form()]


def _form(request: Request, console: ConsoleDep, *, status: int = 200, **values: Any) -> Response:
    with console.db.read() as tx:
        linked = connections.list_all(tx, console.secrets)
    scopes = [
        {"name": s, "description": keys.SCOPE_DESCRIPTIONS[s], "grants": console.grants.get(s, [])}
        for s in keys.SCOPES
    ]
    context = {
        "scopes": scopes,
        "connections": linked,
        "error": None,
        "name": "",
        "chosen": [],
        "expires_in": "",
        "limited": [],
        **values,
    }
    return render.page(request, "key_new.html", context, status=status)


@router.get("/keys")
def keys_page(request: Request, console: ConsoleDep, session: Viewer) -> Response:
    with console.db.read() as tx:
        found = list(reversed(keys.list_all(tx)))
    return render.page(request, "keys.html", {"keys": found})


@router.get("/keys/new")
def new_key_page(request: Request, console: ConsoleDep, session: Confirmed) -> Response:
    return _form(request, console)


@router.post("/keys")
def create_key(
    request: Request,
    console: ConsoleDep,
    session: Confirmed,
    name: Annotated[str, Form()] = "",
    scope: Many = [],  # noqa: B006  (FastAPI copies defaults)
    expires_in: Annotated[str, Form()] = "",
    connection: Many = [],  # noqa: B006
) -> Response:
    try:
        lifetime = None
        if expires_in.strip():
            lifetime = times.parse_duration(expires_in, longest=keys.MAX_LIFETIME, name="lifetime")
        with console.db.write() as tx:
            made = keys.create(
                tx,
                name=name,
                scopes=scope,
                env=console.settings.key_env,
                expires_in=lifetime,
                actor=session.user.actor,
                connections=connection or None,
            )
    except errors.BadRequest as exc:
        values = {"name": name, "chosen": scope, "expires_in": expires_in, "limited": connection}
        return _form(request, console, status=400, error=exc.message, **values)
    return render.page(request, "key_created.html", {"made": made, "previous": None}, status=201)


@router.post("/keys/{key_id}/rotate")
def rotate_key(
    request: Request,
    console: ConsoleDep,
    session: Confirmed,
    key_id: str,
    overlap: Annotated[str, Form()] = "24h",
) -> Response:
    seconds = times.parse_duration(overlap, zero=True, longest=keys.MAX_OVERLAP, name="overlap")
    with console.db.write() as tx:
        made = keys.rotate(
            tx, key_id, overlap=seconds, env=console.settings.key_env, actor=session.user.actor
        )
    context = {"made": made, "previous": made.previous}
    return render.page(request, "key_created.html", context, status=201)


@router.post("/keys/{key_id}/revoke")
def revoke_key(console: ConsoleDep, session: Admin, key_id: str) -> Response:
    with console.db.write() as tx:
        revoked = keys.revoke(tx, key_id, actor=session.user.actor)
    return render.redirect(
        "/keys", notice=f"Revoked {revoked.name} ({revoked.id}): it stops working now."
    )
