"""Your account: who you are, a new password, signing out everywhere."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import errors, sessions, users
from snapshots.ui import render
from snapshots.ui.deps import ConsoleDep, Viewer

router = APIRouter()
Text = Annotated[str, Form()]


@router.get("/account")
def account_page(request: Request, session: Viewer) -> Response:
    return render.page(request, "account.html", {"error": None})


@router.post("/account/password")
def change_password(
    request: Request,
    console: ConsoleDep,
    session: Viewer,
    current: Text,
    password: Text,
    password_again: Text,
) -> Response:
    """A new password; every other session of this user ends (this one stays)."""
    try:
        if password != password_again:
            raise errors.BadRequest("the two new passwords differ")
        with console.db.write() as tx:
            user = users.change_password(
                tx, session.user.id, current=current, new=password, actor=session.user.actor
            )
            sessions.end_all(tx, user, actor=session.user.actor, keep=session)
    except (errors.BadRequest, errors.Unauthorized) as exc:
        return render.page(request, "account.html", {"error": exc.message}, status=exc.status)
    return render.redirect(
        "/account", notice="Password changed; your other sessions were signed out."
    )
