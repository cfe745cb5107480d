"""Rendering console pages: one Jinja2 environment (autoescape on, an undefined name is an
error), filters for what pages show often, and `page`, which answers an htmx request with the
page's fragment block and any other request with the whole page.

Times are `<time datetime="...Z" title="... UTC">` elements: the text says the UTC time, and
`console.js` rewrites it in the browser's zone (the title keeps the exact UTC time on hover).
A notice (what the last action did) rides a short-lived cookie across the redirect after a
form is sent, and is shown once in the page's `role="status"` area.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, unquote

import babel.numbers
import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from snapshots import times

NOTICE_COOKIE = "snapshots_notice"
NOTICE_MAX = 300  # characters


def when(seconds: float | None, missing: str = "never") -> Markup:
    """A moment as a `<time>` element (see the module docstring)."""
    if seconds is None:
        return Markup("<span>{}</span>").format(missing)
    return _time(seconds)


@functools.lru_cache(maxsize=4096)
def _time(seconds: float) -> Markup:
    """`when`'s element of a moment, made once per moment: a list shows the same rows again
    at every refresh (a page of fifty events spent a tenth of its time on them)."""
    iso = times.iso(seconds) or ""  # 2024-01-31T12:00:00Z
    day, clock = iso[:10], iso[11:19]
    # Digits and separators only, nothing to escape; cut from the ISO text rather than
    # formatted again (a list shows fifty of these: that cost a millisecond a page).
    return Markup(f'<time datetime="{iso}" title="{day} {clock} UTC">{day} {clock[:5]} UTC</time>')


def money(amount: int | None, currency: str | None) -> str:
    """Integer minor units in a currency -> `$12.50`, `¥1,200`."""
    if amount is None:
        return ""
    if not currency:
        return f"{amount:,}"
    code = currency.upper()
    try:
        digits = babel.numbers.get_currency_precision(code)
        return str(babel.numbers.format_currency(amount / 10**digits, code, locale="en_US"))
    except (ValueError, babel.UnknownLocaleError):
        return f"{amount:,} {code}"


def number(value: int | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def at_most(value: int, cap: int) -> str:
    """A count made up to `cap + 1`: `1,000+` when it went over `cap`."""
    return f"{cap:,}+" if value > cap else f"{value:,}"


def duration(seconds: float | None) -> str:
    """A span as people say it: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    if seconds is None:
        return ""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    days, rest = divmod(whole, 86400)
    return f"{days} d {rest // 3600} h" if rest >= 3600 else f"{days} d"


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(jinja2.Environment):
    """Jinja's environment, but `value.name` on a dict looks the key up first when a dict has
    no attribute of that name (`items`, `get`... still mean the methods): Jinja tries the
    attribute first, and its AttributeError cost a microsecond each time (a tenth of the flow
    editor's rendering went on its rows' and the flow's keys). The same value either way."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        # Jinja's own (not called through super(): this runs for every `a.b` of a page).
        try:
            return getattr(obj, attribute)
        except AttributeError:
            pass
        try:
            return obj[attribute]
        except (TypeError, LookupError, AttributeError):
            return self.undefined(obj=obj, name=attribute)


@functools.cache
def environment() -> jinja2.Environment:
    env = _Environment(
        loader=jinja2.PackageLoader("snapshots.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # The templates are the package's files: checking each one's time at every page (a
        # stat a template) is for editing them live, which a running console never does.
        auto_reload=False,
    )
    env.filters.update(when=when, money=money, number=number, at_most=at_most, duration=duration)
    return env


def _base(request: Request) -> dict[str, Any]:
    session = getattr(request.state, "session", None)
    return {
        "session": session,
        "me": None if session is None else session.user,
        "csrf": session.csrf_token if session is not None else "",
        "path": request.url.path,
        "notice": unquote(request.cookies.get(NOTICE_COOKIE, ""))[:NOTICE_MAX],
    }


def html(template: str, context: dict[str, Any], *, block: str | None = None) -> str:
    """A template (or one block of it) rendered with `context`."""
    found = environment().get_template(template)
    if block is None:
        return found.render(context)
    return "".join(found.blocks[block](found.new_context(context)))


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    fragment: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The whole page, or only its `fragment` block when htmx asked (`HX-Request`)."""
    values = {**_base(request), **(context or {})}
    partial = fragment is not None and request.headers.get("hx-request") == "true"
    body = html(template, values, block=fragment if partial else None)
    response = HTMLResponse(body, status_code=status)
    if values["notice"] and not partial:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


def redirect(url: str, *, notice: str | None = None) -> Response:
    """See Other to `url` (a path of this console), with a notice to show there once."""
    response = RedirectResponse(url, status_code=303)
    if notice:
        response.set_cookie(
            NOTICE_COOKIE,
            quote(notice[:NOTICE_MAX]),
            max_age=60,
            path="/",
            httponly=True,
            samesite="lax",
        )
    return response


def safe_next(target: str | None, default: str = "/") -> str:
    """A `next` parameter kept within this console: a path, never another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
