"""The console's app: `create(...)` builds it; `app.py` sends it every path that is not the
API's. Every answer it gives (pages, redirects, errors) carries the security headers below, and
every error is a console page that says what to do, never JSON or a traceback."""

from __future__ import annotations

import logging
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snapshots import errors, revisions, vault
from snapshots.outbound import guard
from snapshots.settings import Settings
from snapshots.store.db import Database
from snapshots.ui import deps, render
from snapshots.ui.routes import (
    account,
    audit,
    auth,
    deliveries,
    endpoints,
    events,
    keys,
    overview,
    records,
    sync,
)
from snapshots.ui.routes import connections as connection_routes
from snapshots.ui.routes import flows as flow_routes
from snapshots.ui.routes import test as test_routes
from snapshots.ui.routes import users as user_routes

log = logging.getLogger("snapshots.ui")

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]
# Each screen's module; a new screen adds its module here. A request is matched against the
# routes in this order, one at a time (a page of the 11th screen tried some 70 routes first):
# the pages opened and refreshed most come first. No two screens share a path's first
# segment, so the order changes no answer.
SCREENS = [
    overview,
    events,
    flow_routes,
    records,
    connection_routes,
    sync,
    auth,
    account,
    user_routes,
    keys,
    audit,
    test_routes,
    endpoints,
    deliveries,
]


class SecurityHeaders:
    """Adds `HEADERS` to every answer of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k not in names]
                message["headers"] = [*kept, *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    context = {"title": title, "message": message}
    if _htmx(request):
        # A panel's request: the page's notices area says what went wrong.
        body = render.html("error.html", context, block="message")
        headers = {"HX-Retarget": "#notices", "HX-Reswap": "innerHTML"}
        return HTMLResponse(body, status_code=status, headers=headers)
    return render.page(request, "error.html", context, status=status)


def _to(request: Request, target: str, status: int, title: str, message: str) -> Response:
    """Send the browser to `target`: a redirect for a page, `HX-Redirect` for htmx, and a page
    with the link for a form sent (its answer cannot be a redirect without losing the form)."""
    if _htmx(request):
        return Response(status_code=status, headers={"HX-Redirect": target})
    if request.method in deps.SAFE_METHODS:
        return render.redirect(target)
    context = {"title": title, "message": message, "link": target}
    return render.page(request, "error.html", context, status=status)


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(deps.SignInNeeded)
    async def sign_in(request: Request, exc: deps.SignInNeeded) -> Response:
        target = "/sign-in?next=" + quote(_here(request), safe="")
        return _to(request, target, 401, "Sign in needed", exc.message)

    @app.exception_handler(deps.ConfirmNeeded)
    async def confirm(request: Request, exc: deps.ConfirmNeeded) -> Response:
        back = _here(request) if request.method in deps.SAFE_METHODS else "/"
        target = "/confirm?next=" + quote(back, safe="")
        return _to(request, target, 403, "Confirm your password", exc.message)

    @app.exception_handler(errors.Rejected)
    async def rejected(request: Request, exc: errors.Rejected) -> Response:
        titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 429: "Too many tries"}
        title = titles.get(exc.status, "Cannot do that")
        return _error_page(request, exc.status, title, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p not in ("query", "path", "body"))
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return _error_page(request, 400, "Cannot do that", message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error_page(
                request, 404, "Not found", f"There is no page at {request.url.path[:200]}."
            )
        response = _error_page(request, exc.status_code, "Cannot do that", str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(sa.exc.OperationalError)
    async def database_down(request: Request, exc: sa.exc.OperationalError) -> Response:
        log.error("console request failed: the database is unavailable: %s", exc.orig)
        return _error_page(
            request, 503, "Unavailable", "The database is unavailable; try again in a moment."
        )

    @app.exception_handler(errors.SnapshotsError)
    async def not_now(request: Request, exc: errors.SnapshotsError) -> Response:
        log.error("console request failed: %s", errors.describe(exc))
        return _error_page(request, 503, "Unavailable", f"{exc.message}; try again in a moment.")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("console request failed: %s: %s", type(exc).__name__, errors.describe(exc))
        return _error_page(
            request, 500, "Something went wrong", "Something went wrong; try again in a moment."
        )


def create(
    settings: Settings,
    db: Database,
    *,
    registry: revisions.Live,
    secrets: vault.Vault,
    grants: dict[str, list[str]] | None = None,
    outbound: guard.Seams | None = None,
) -> ASGIApp:
    """The console over `db`: the pages of every screen, with their error pages and headers.
    `grants`: the API's operations by scope (shown where keys are made); `outbound`: the
    seams of requests to webhook endpoints (the app's, which a test may hand in)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.console = deps.Console(
        settings=settings,
        db=db,
        registry=registry,
        secrets=secrets,
        grants=grants or {},
        outbound=outbound or guard.Seams(),
    )
    _install_error_pages(app)
    for screen in SCREENS:
        app.include_router(screen.router)
    return SecurityHeaders(app)
