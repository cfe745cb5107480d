"""Signing in and out, the one-time set-up link, and typing the password again (confirm)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from snapshots import errors, sessions, users
from snapshots.ui import deps, render
from snapshots.ui.deps import Anonymous, ConsoleDep, Viewer

router = APIRouter()
Text = Annotated[str, Form()]
Next = Annotated[str, Form()]


def _anonymous_page(
    request: Request,
    console: deps.Console,
    token: str,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> Response:
    response = render.page(request, template, {**context, "csrf": token}, status=status)
    response.set_cookie(
        console.anonymous_cookie,
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=console.secure,
    )
    return response


def _signed_in(console: deps.Console, user: users.User, request: Request, target: str) -> Response:
    settings = console.settings
    with console.db.write() as tx:
        token, _ = sessions.start(
            tx,
            user,
            lifetime=settings.session_lifetime,
            idle=settings.session_idle,
            ip=deps.client_ip(request),
        )
    response = render.redirect(render.safe_next(target))
    response.set_cookie(
        console.cookie,
        token,
        max_age=int(settings.session_lifetime),
        path="/",
        httponly=True,
        samesite="lax",
        secure=console.secure,
    )
    response.delete_cookie(console.anonymous_cookie, path="/")
    return response


@router.get("/sign-in")
def sign_in_page(
    request: Request, console: ConsoleDep, token: Anonymous, next: str = "/"
) -> Response:
    return _anonymous_page(
        request,
        console,
        token,
        "sign_in.html",
        {"next": render.safe_next(next), "error": None, "email": ""},
    )


@router.post("/sign-in")
def sign_in(
    request: Request,
    console: ConsoleDep,
    token: Anonymous,
    email: Text,
    password: Text,
    next: Next = "/",
) -> Response:
    with console.db.write() as tx:
        found = users.authenticate(tx, email=email, password=password, ip=deps.client_ip(request))
    if isinstance(found, users.Refusal):
        context = {"next": render.safe_next(next), "error": found.message, "email": email}
        status = 429 if found.retry_after else 401
        return _anonymous_page(request, console, token, "sign_in.html", context, status)
    return _signed_in(console, found, request, next)


@router.post("/sign-out")
def sign_out(console: ConsoleDep, session: Viewer) -> Response:
    with console.db.write() as tx:
        sessions.end(tx, session)
    response = render.redirect("/sign-in", notice="You are signed out.")
    response.delete_cookie(console.cookie, path="/")
    return response


@router.post("/sign-out-everywhere")
def sign_out_everywhere(console: ConsoleDep, session: Viewer) -> Response:
    with console.db.write() as tx:
        ended = sessions.end_all(tx, session.user, actor=session.user.actor)
    notice = f"You are signed out everywhere ({ended} session{'s' if ended != 1 else ''} ended)."
    response = render.redirect("/sign-in", notice=notice)
    response.delete_cookie(console.cookie, path="/")
    return response


@router.get("/setup/{link}")
def setup_page(request: Request, console: ConsoleDep, token: Anonymous, link: str) -> Response:
    with console.db.read() as tx:
        found = users.setup_link(tx, link)
    context = {"link": link, "setup": found, "error": None, "email": found.email or ""}
    return _anonymous_page(request, console, token, "setup.html", context)


@router.post("/setup/{link}")
def setup(
    request: Request,
    console: ConsoleDep,
    token: Anonymous,
    link: str,
    password: Text,
    password_again: Text,
    email: Annotated[str, Form()] = "",
) -> Response:
    try:
        if password != password_again:
            raise errors.BadRequest("the two passwords differ")
        with console.db.write() as tx:
            user = users.use_setup_link(tx, link, email=email, password=password)
    except (errors.BadRequest, errors.Conflict) as exc:
        with console.db.read() as tx:
            found = users.setup_link(tx, link)
        context = {"link": link, "setup": found, "error": exc.message, "email": email}
        return _anonymous_page(request, console, token, "setup.html", context, exc.status)
    return _signed_in(console, user, request, "/")


@router.get("/confirm")
def confirm_page(request: Request, session: Viewer, next: str = "/") -> Response:
    return render.page(request, "confirm.html", {"next": render.safe_next(next), "error": None})


@router.post("/confirm")
def confirm(
    request: Request, console: ConsoleDep, session: Viewer, password: Text, next: Next = "/"
) -> Response:
    with console.db.write() as tx:
        found = users.authenticate(
            tx,
            email=session.user.email,
            password=password,
            ip=deps.client_ip(request),
            action="console.confirmed",
        )
        if isinstance(found, users.User):
            sessions.confirm(tx, session)
    if isinstance(found, users.Refusal):
        message = found.message if found.retry_after else "wrong password"
        context = {"next": render.safe_next(next), "error": message}
        return render.page(
            request, "confirm.html", context, status=429 if found.retry_after else 401
        )
    return render.redirect(render.safe_next(next))
