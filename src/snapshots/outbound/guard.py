"""The SSRF guard: a user-supplied URL may not reach this machine or a private network.

The host is resolved once, every address it resolves to is checked (loopback, private,
link-local incl. 169.254.169.254, unique-local, multicast, unspecified, reserved, and the
IPv4-mapped, 6to4 and Teredo forms of those), and the request then connects to the address
that was checked, with the URL's host in the `Host` header and as the TLS server name: there is
no second lookup, so DNS rebinding gets nowhere. A failed lookup fails closed.
`SNAPSHOTS_OUTBOUND_ALLOW` (CIDRs and host names, comma-separated) is the only exception.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from snapshots import errors

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to (the seam tests replace).
Resolver = Callable[[str, int], list[str]]
MAX_URL = 2000  # characters


class Blocked(errors.BadRequest):
    """The URL reaches an address the guard refuses (or cannot be resolved)."""

    code = "url_blocked"

    def __init__(self, message: str, *, kind: str = "blocked") -> None:
        super().__init__(message)
        self.kind = kind  # blocked | dns: the attempt's error kind


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Blocked(f"cannot resolve {host}: {exc}", kind="dns") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in found))


@dataclass(frozen=True)
class Allow:
    """What SNAPSHOTS_OUTBOUND_ALLOW lets through although the guard would refuse it."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Allow:
        networks: list[Network] = []
        hosts: set[str] = set()
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                hosts.add(part.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def _embedded(address: Address) -> Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@functools.lru_cache(maxsize=4096)
def refusal(address: Address) -> str | None:
    """Why the guard refuses `address` (None: it is a public address). Remembered: the
    answer for an address never changes (what a name resolves to is looked up every time)."""
    inner = _embedded(address)
    if inner is not None:
        why = refusal(inner)
        return None if why is None else f"{why} (inside {address})"
    for test, why in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not public"),
    ):
        if test:
            return f"{address} is {why}"
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to tell the server."""

    url: str
    scheme: str
    host: str  # as in the URL (the Host header and the TLS server name)
    port: int
    address: str  # the checked address the request connects to


@functools.lru_cache(maxsize=4096)
def parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or BadRequest saying what is wrong (remembered:
    each attempt checks its URL again)."""
    if len(url) > MAX_URL:
        raise errors.BadRequest(f"the URL is over {MAX_URL} characters", code="url_invalid")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise errors.BadRequest(f"not a URL: {exc}", code="url_invalid") from exc
    if parts.scheme not in ("http", "https"):
        raise errors.BadRequest("the URL must start with https:// or http://", code="url_invalid")
    if not parts.hostname:
        raise errors.BadRequest("the URL has no host", code="url_invalid")
    if parts.username is not None or parts.password is not None:
        raise errors.BadRequest("the URL may not carry a user name or password", code="url_invalid")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower().rstrip("."), port or default


@functools.lru_cache(maxsize=4096)
def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _resolve(host: str, port: int, resolver: Resolver) -> list[Address]:
    found = resolver(host, port)
    if not found:
        raise Blocked(f"cannot resolve {host}: no address", kind="dns")
    addresses = []
    for text in found:
        address = _literal(text.split("%", 1)[0])
        if address is None:
            raise Blocked(f"{host} resolved to {text!r}, not an address", kind="dns")
        addresses.append(address)
    return addresses


def check(url: str, *, allow: Allow, resolver: Resolver = system_resolver) -> Target:
    """Resolve the URL's host once and check every address; the first is the one to use."""
    scheme, host, port = parse(url)
    literal = _literal(host)
    addresses: list[Address] = [literal] if literal is not None else _resolve(host, port, resolver)
    if host not in allow.hosts:
        for address in addresses:
            why = refusal(address)
            if why is not None and not allow.allows(address):
                raise Blocked(
                    f"{host} resolves to {address}, which an endpoint may not reach ({why}); "
                    "SNAPSHOTS_OUTBOUND_ALLOW lists the exceptions"
                )
    return Target(url, scheme, host, port, str(addresses[0]))


Connector = Callable[[], httpx.BaseTransport]


def _transport() -> httpx.BaseTransport:
    return httpx.HTTPTransport(retries=0)


@dataclass(frozen=True)
class Seams:
    """How outbound requests resolve and connect: the system's resolver and httpx's own
    transport, or what a test hands in (the app takes them in `create_app`)."""

    resolver: Resolver = system_resolver
    connector: Connector = _transport

    def client(self, *, allow: Allow, timeout: float) -> httpx.Client:
        """`client` through these seams."""
        return client(
            allow=allow, timeout=timeout, resolver=self.resolver, connector=self.connector
        )


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that checks each request's URL (`check`) and connects to the checked
    address, with the URL's host as `Host` and TLS server name. `connector` makes the transport
    that really connects (one per host, so a TLS connection is never reused for another name);
    tests hand in one that refuses any address outside loopback."""

    def __init__(
        self,
        *,
        allow: Allow,
        resolver: Resolver = system_resolver,
        connector: Connector = _transport,
    ) -> None:
        self._allow = allow
        self._resolver = resolver
        self._connector = connector
        self._inner: dict[tuple[str, str, int], httpx.BaseTransport] = {}
        self._lock = threading.Lock()

    def _for(self, target: Target) -> httpx.BaseTransport:
        key = (target.scheme, target.host, target.port)
        with self._lock:
            found = self._inner.get(key)
            if found is None:
                found = self._inner[key] = self._connector()
            return found

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = check(str(request.url), allow=self._allow, resolver=self._resolver)
        address = target.address
        if request.url.host != address:  # a name (an address in the URL is the one checked)
            request.url = request.url.copy_with(host=address)
            default = 443 if target.scheme == "https" else 80
            request.headers["Host"] = (
                target.host if target.port == default else f"{target.host}:{target.port}"
            )
            extensions: dict[str, Any] = dict(request.extensions)
            extensions["sni_hostname"] = target.host
            request.extensions = extensions
        response = self._for(target).handle_request(request)
        response.extensions = {**response.extensions, "snapshots_address": address}
        return response

    def close(self) -> None:
        with self._lock:
            inner = list(self._inner.values())
            self._inner.clear()
        for transport in inner:
            transport.close()


def client(
    *,
    allow: Allow,
    timeout: float,
    resolver: Resolver = system_resolver,
    connector: Connector = _transport,
) -> httpx.Client:
    """An httpx client behind the guard that follows no redirect and reads no proxy settings."""
    return httpx.Client(
        transport=GuardedTransport(allow=allow, resolver=resolver, connector=connector),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
