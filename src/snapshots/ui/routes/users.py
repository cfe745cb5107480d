"""Users (admins only): roles, removal, and set-up links for new people."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import users
from snapshots.ui import render
from snapshots.ui.deps import Admin, Confirmed, ConsoleDep

router = APIRouter()


def _page(request: Request, console: ConsoleDep, **context: object) -> Response:
    with console.db.read() as tx:
        found = users.list_all(tx)
    values = {"users": found, "roles": users.ROLES, "link": None, **context}
    return render.page(request, "users.html", values)


@router.get("/users")
def users_page(request: Request, console: ConsoleDep, session: Admin) -> Response:
    return _page(request, console)


@router.post("/users/{user_id}/role")
def set_role(
    console: ConsoleDep, session: Admin, user_id: str, role: Annotated[str, Form()]
) -> Response:
    with console.db.write() as tx:
        user = users.set_role(tx, user_id, role, actor=session.user.actor)
    return render.redirect("/users", notice=f"{user.email} is now {user.role}.")


@router.post("/users/{user_id}/remove")
def remove(console: ConsoleDep, session: Admin, user_id: str) -> Response:
    with console.db.write() as tx:
        user = users.remove(tx, user_id, actor=session.user.actor)
    return render.redirect("/users", notice=f"{user.email} was removed and signed out.")


@router.post("/users/setup-link")
def setup_link(
    request: Request,
    console: ConsoleDep,
    session: Confirmed,
    role: Annotated[str, Form()],
    email: Annotated[str, Form()] = "",
) -> Response:
    """A set-up link for someone new (shown once): a secret, so it needs the password."""
    with console.db.write() as tx:
        token = users.new_setup_link(
            tx, role=role, email=email.strip() or None, actor=session.user.actor
        )
    base = console.settings.public_url or str(request.base_url)
    link = f"{base.rstrip('/')}/setup/{token}"
    return _page(request, console, link=link)
