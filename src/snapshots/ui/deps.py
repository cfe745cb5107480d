"""What console routes share: the `Console` they run in, and dependencies as named types.

- `Viewer`: a signed-in session (any role). A state-changing request (anything but GET, HEAD,
  OPTIONS) must also pass the CSRF check: it comes from this site (`Sec-Fetch-Site`, else
  `Origin`) and carries the session's token (form field `csrf_token` or `X-CSRF-Token`).
- `Admin`: the same, with the admin role (a viewer gets a 403 page).
- `Confirmed`: an admin who typed the password within `sessions.CONFIRM_WINDOW` (else they are
  sent to the confirmation page and back).
- `Anonymous`: the CSRF check of the forms used before signing in (sign-in, set-up): the same
  origin check plus a double-submit cookie.

A request that an htmx script makes to refresh a panel (`X-Snapshots-Refresh: 1`) does not count
as activity: an open overview does not keep a session alive forever.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from snapshots import errors, revisions, sessions, vault
from snapshots.outbound import guard
from snapshots.settings import Settings
from snapshots.store import reader
from snapshots.store.db import Database

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
ANON_COOKIE = "snapshots_csrf"  # the double-submit cookie of the anonymous forms
REFRESH_HEADER = "x-snapshots-refresh"


@dataclass
class Console:
    """Everything console routes need, built once by `console.create`."""

    settings: Settings
    db: Database
    registry: revisions.Live  # the flows in force
    secrets: vault.Vault
    grants: dict[str, list[str]]  # the API's operations by the scope each needs
    outbound: guard.Seams  # how requests to webhook endpoints resolve names and connect

    @property
    def secure(self) -> bool:
        """Is the console served over https (`SNAPSHOTS_PUBLIC_URL`)? Its cookies say so."""
        return (self.settings.public_url or "").lower().startswith("https://")

    @property
    def cookie(self) -> str:
        """The session cookie's name (`__Host-` over https: this host, path /, Secure)."""
        return f"__Host-{sessions.COOKIE}" if self.secure else sessions.COOKIE

    @property
    def anonymous_cookie(self) -> str:
        return f"__Host-{ANON_COOKIE}" if self.secure else ANON_COOKIE


class SignInNeeded(errors.Unauthorized):
    """No live session: the console sends the browser to the sign-in page."""

    code = "sign_in_needed"


class ConfirmNeeded(errors.Rejected):
    """The step needs the password typed again: the console asks for it, then comes back."""

    status = 403
    code = "confirm_needed"


class CsrfRefused(errors.Rejected):
    status = 403
    code = "csrf_refused"


class AdminOnly(errors.Rejected):
    status = 403
    code = "admin_only"


async def get_console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


ConsoleDep = Annotated[Console, Depends(get_console)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _same_site(request: Request, console: Console) -> None:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise CsrfRefused(f"refused a {site} request: submit the form from this console")
        return
    origin = request.headers.get("origin")
    if origin is None:
        return  # an old browser or a non-browser client: the token below still decides
    allowed = {request.headers.get("host", "")}
    if console.settings.public_url:
        allowed.add(urlsplit(console.settings.public_url).netloc)
    if urlsplit(origin).netloc not in allowed:
        raise CsrfRefused("refused a request from another site: submit the form from this console")


async def _sent_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def _check_csrf(request: Request, console: Console, expected: str) -> None:
    if request.method in SAFE_METHODS:
        return
    _same_site(request, console)
    sent = await _sent_token(request)
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("the form is stale or came from elsewhere: reload the page and try again")


def _found(console: Console, token: str) -> sessions.Session | None:
    return sessions.look_up(console.db, token, idle=console.settings.session_idle)


def _touched(console: Console, token: str) -> sessions.Session | None:
    with console.db.write() as tx:
        return sessions.find(tx, token, idle=console.settings.session_idle)


async def viewer(request: Request, console: ConsoleDep) -> sessions.Session:
    token = request.cookies.get(console.cookie)
    session = None
    if token is not None:
        active = request.headers.get(REFRESH_HEADER) != "1"
        if active and request.method not in SAFE_METHODS:
            # A write: its transaction moves the idle deadline too. In a worker thread, since
            # a database that waits (SQLite's write lock) must never stall the event loop,
            # which the webhooks share.
            session = await run_in_threadpool(_touched, console, token)
        else:
            # A lookup by the token's hash: a bounded read (in the event loop on SQLite). The
            # rare touch (once a minute) takes the write lock, in a worker thread.
            session = await reader.read(console.db, lambda: _found(console, token))
            if session is not None and active and session.stale():
                session = await run_in_threadpool(_touched, console, token)
    if session is None:
        raise SignInNeeded("sign in to use the console")
    request.state.session = session
    await _check_csrf(request, console, session.csrf_token)
    return session


async def admin(session: Annotated[sessions.Session, Depends(viewer)]) -> sessions.Session:
    if not session.user.admin:
        raise AdminOnly("only an admin may do this; your role is viewer")
    return session


async def confirmed(session: Annotated[sessions.Session, Depends(admin)]) -> sessions.Session:
    if not session.confirmed():
        raise ConfirmNeeded("type your password again to continue")
    return session


async def anonymous(request: Request, console: ConsoleDep) -> str:
    """The double-submit token of an anonymous form (made here when the browser has none)."""
    token = request.cookies.get(console.anonymous_cookie) or ""
    if request.method not in SAFE_METHODS:
        await _check_csrf(request, console, token)
        return token
    return token or secrets.token_urlsafe(32)


Viewer = Annotated[sessions.Session, Depends(viewer)]
Admin = Annotated[sessions.Session, Depends(admin)]
Confirmed = Annotated[sessions.Session, Depends(confirmed)]
Anonymous = Annotated[str, Depends(anonymous)]
