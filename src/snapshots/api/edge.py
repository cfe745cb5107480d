"""The edge of the HTTP app: what every request goes through before and after a route.

- Every request gets an id (`X-Request-Id`, `request_id` in errors and audit entries).
- The client's address is the peer's, parsed as an IP address; `X-Forwarded-For` is believed
  only from a peer in `SNAPSHOTS_TRUSTED_PROXIES` (CIDRs), walking it from the right past the
  trusted proxies to the first address that is not one. Anything that does not parse as an
  IP address is dropped, so no stored address is longer than an IPv6 one.
- Answers under `/v1/` and `/webhooks/` (keys, secrets, records) carry
  `Cache-Control: no-store`; rate-limited API answers carry `X-RateLimit-*`.
- A path with a trailing slash is redirected to the same path without it, by a relative
  `Location` (never built from the `Host` header, which the client chose).
- An error no route handled is answered with the JSON error envelope (500) and logged in one
  line: nothing reaches the server as a traceback or a plain-text 500.
- Every answer is counted and timed (`metrics.request`) by its route's template (never the
  path: `unmatched` for a path no route has), method and status.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snapshots import audit, errors, metrics

log = logging.getLogger("snapshots.http")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 20  # X-Forwarded-For entries looked at, from the right
NO_STORE = (b"/v1/", b"/webhooks/")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # as labels


def trusted_networks(text: str) -> list[IPNetwork]:
    """SNAPSHOTS_TRUSTED_PROXIES: comma-separated CIDRs (or single addresses)."""
    found: list[IPNetwork] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise errors.ConfigError(
                f"SNAPSHOTS_TRUSTED_PROXIES: {part!r} is not an address or a CIDR ({exc})"
            ) from exc
    return found


@functools.lru_cache(maxsize=4096)  # a few peers send nearly every request
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()[:64]
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


@functools.lru_cache(maxsize=4096)
def _address_text(text: str) -> str | None:
    """`_address` as text (`str` of an address object is Python work on every call)."""
    found = _address(text)
    return None if found is None else str(found)


def client_address(
    peer: str | None, forwarded: bytes | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The client's address (see the module docstring), or None when none parses."""
    if not trusted:  # the peer's own address, whatever X-Forwarded-For says
        return _address_text(peer) if peer else None
    address = _address(peer) if peer else None
    if address is None or not any(address in net for net in trusted):
        return None if address is None else str(address)
    hops = forwarded.decode("latin-1").split(",")[-MAX_HOPS:] if forwarded else []
    for hop in reversed(hops):
        found = _address(hop)
        if found is None:
            break  # a garbled entry: the last address known for sure stands
        address = found
        if not any(found in net for net in trusted):
            break
    return str(address)


def envelope(status: int, code: str, message: str, request_id: str) -> bytes:
    """An error answer's body, in the API's envelope."""
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return json.dumps(
        {"error": {"type": kind, "code": code, "message": message, "request_id": request_id}}
    ).encode()


class Edge:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[IPNetwork] = ()) -> None:
        self.app = app
        self.trusted = list(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Not a secret, only unique: random.getrandbits avoids a getrandom() syscall per request.
        rid = f"req_{random.getrandbits(64):016x}"
        scope.setdefault("state", {})["request_id"] = rid
        peer = scope.get("client")
        forwarded = None
        if self.trusted:
            forwarded = next((v for k, v in scope["headers"] if k == b"x-forwarded-for"), None)
        address = client_address(peer[0] if peer else None, forwarded, self.trusted)
        scope["client"] = None if address is None else (address, peer[1] if peer else 0)
        # The request id and address of every audit entry this request writes (contextvars
        # reach the thread a route runs in: it copies this context).
        audit.REQUEST.set((rid, address))
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/") and scope["method"] in ("GET", "HEAD"):
            await self._redirect(scope, send, rid)
            return
        no_store = path.encode().startswith(NO_STORE)
        started = False
        status = 500
        clock = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started
            nonlocal status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                usage = scope["state"].get("rate_limit")
                if usage is not None:  # an authenticated API request: its key's rate limit
                    headers += [
                        (b"x-ratelimit-limit", str(usage.limit).encode()),
                        (b"x-ratelimit-remaining", str(usage.remaining).encode()),
                        (b"x-ratelimit-reset", str(usage.reset_at).encode()),
                    ]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            status = 500
            log.error(
                "request %s (%s %s) failed: %s: %s",
                rid,
                scope["method"],
                path[:200],
                type(exc).__name__,
                errors.describe(exc)[:300],
            )
            log.debug("request %s failed", rid, exc_info=True)
            if not started:
                await _answer(
                    send,
                    500,
                    envelope(500, "internal_error", "something went wrong; retry later", rid),
                    [(b"x-request-id", rid.encode())],
                )
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.request(route, method, status, time.perf_counter() - clock)

    async def _redirect(self, scope: Scope, send: Send, rid: str) -> None:
        target = scope["path"].rstrip("/") or "/"
        query = scope.get("query_string", b"")
        location = target.encode() + (b"?" + query if query else b"")
        # `//host` would be read as another host: keep the path relative to this one.
        location = b"/" + location.lstrip(b"/")
        await _answer(
            send,
            307,
            b"",
            [(b"location", location), (b"x-request-id", rid.encode())],
        )


async def _answer(send: Send, status: int, body: bytes, headers: list[Any]) -> None:
    kind = [(b"content-type", b"application/json")] if body else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*kind, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
