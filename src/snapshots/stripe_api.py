"""The one way Snapshots talks to the Stripe API: the official SDK, errors translated here.

`Stripe` wraps one connection's SDK client with what every caller needs: the connection's
pinned API version, a requests-per-second budget (Stripe allows about 100/s live and 25/s in
test mode), retries of idempotent reads with jittered exponential backoff that honour `429`,
`Retry-After` and `Stripe-Should-Retry`, and one of our errors for every Stripe or network
failure. A refused key is never retried: it says so and stops.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from snapshots import errors, metrics

T = TypeVar("T")
log = logging.getLogger("snapshots.stripe")

LIVE_RPS = 100.0  # Stripe's documented read limits per account
TEST_RPS = 25.0
RETRY_BASE = 0.5  # seconds before the first retry, doubling
RETRY_CAP = 30.0  # the longest wait between two retries
RETRY_AFTER_MAX = 60.0  # a longer Retry-After is not waited for: the read fails instead
PAGE_LIMIT = 100  # objects per list page, Stripe's maximum
PINNED_VERSION: str = stripe.api_version  # the version this SDK release speaks


@dataclass(frozen=True)
class Account:
    """What a connection needs to know of the Stripe account behind a key."""

    id: str | None
    livemode: bool
    default_currency: str | None
    country: str | None


class Budget:
    """A token bucket: at most `rate` requests a second, in bursts of at most `rate` (>= 1).
    A rate of 0 means no budget. Thread-safe; `take` sleeps until a request may go."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.rate = rate
        self._capacity = max(rate, 1.0)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


def default_rps(secret_key: str) -> float:
    return LIVE_RPS if secret_key.startswith(("sk_live_", "rk_live_")) else TEST_RPS


class Stripe:
    """One connection's Stripe client (see the module docstring)."""

    def __init__(
        self,
        *,
        secret_key: str,
        api_base: str | None = None,
        api_version: str | None = None,
        rps: float | None = None,
        retries: int = 5,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        base = {"api": api_base.rstrip("/")} if api_base else None
        self.sdk = stripe.StripeClient(
            secret_key,
            base_addresses=base,  # type: ignore[arg-type]
            stripe_version=api_version or PINNED_VERSION,
            max_network_retries=0,  # retries are ours: they honour 429 and the budget
        )
        self.livemode = secret_key.startswith(("sk_live_", "rk_live_"))
        self.budget = Budget(default_rps(secret_key) if rps is None else rps, sleep=sleep)
        self.retries = retries
        self._sleep = sleep

    def read(self, what: str, fn: Callable[[], T]) -> T:
        """Run an idempotent read, retrying what Stripe says may be retried."""
        attempt = 0
        while True:
            self.budget.take()
            try:
                found = fn()
            except stripe.StripeError as exc:
                metrics.stripe_request(outcome(exc))
                delay = retry_delay(exc, attempt)
                if delay is None or attempt >= self.retries:
                    raise translate(what, exc, attempts=attempt + 1) from exc
                log.info("Stripe: %s failed (%s); retry in %.1fs", what, _brief(exc), delay)
                self._sleep(delay)
                attempt += 1
            else:
                metrics.stripe_request("ok")
                return found

    def get(self, what: str, path: str, **params: Any) -> dict[str, Any]:
        """GET a Stripe path as plain JSON (no SDK objects)."""
        response = self.read(what, lambda: self.sdk.raw_request("get", path, **params))
        data: dict[str, Any] = response.data
        return data

    def pages(
        self, what: str, path: str, *, starting_after: str | None = None, **params: Any
    ) -> Iterator[Page]:
        """Every page of a Stripe list, one request at a time (`limit=100`, `starting_after`).
        Each object comes with its exact JSON text, to be stored as it arrived."""
        while True:
            query = {"limit": PAGE_LIMIT, **params}
            if starting_after is not None:
                query["starting_after"] = starting_after
            response = self.read(
                what, functools.partial(self.sdk.raw_request, "get", path, **query)
            )
            try:
                page = split_list(response.body)
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise errors.StripeError(
                    f"Stripe sent a list that is not one while {what}"
                ) from exc
            yield page
            if not page.has_more or not page.data:
                return
            starting_after = page.data[-1]["id"]

    def account(self) -> dict[str, Any]:
        return self.get("reading the account", "/v1/account")

    def send(self, what: str, method: str, path: str, **params: Any) -> dict[str, Any]:
        """A write (POST or DELETE) as plain JSON, sent once: a write is not retried here, its
        caller decides (a failure may or may not have reached Stripe)."""
        self.budget.take()
        try:
            response = self.sdk.raw_request(method, path, **params)
        except stripe.StripeError as exc:
            raise translate(what, exc) from exc
        data: dict[str, Any] = response.data
        return data


@dataclass(frozen=True)
class Page:
    """One page of a Stripe list: its objects, their JSON text as received, and `has_more`."""

    data: list[dict[str, Any]]
    raw: list[str]
    has_more: bool


_decoder = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def split_list(body: str) -> Page:
    """Parse a list object, keeping the exact text of each object of its `data`.

    Every token is read by the standard JSON decoder (`raw_decode` at a position); only the
    structure of the outer object is walked here, so any valid list is read right."""

    def skip(at: int) -> int:
        return _SPACE.match(body, at).end()  # type: ignore[union-attr]

    def expect(at: int, char: str) -> int:
        if body[at] != char:
            raise ValueError(f"expected {char!r} at {at}")
        return skip(at + 1)

    data: list[dict[str, Any]] = []
    raw: list[str] = []
    has_more = False
    at = expect(skip(0), "{")
    while body[at] != "}":
        key, at = _decoder.raw_decode(body, at)
        at = expect(skip(at), ":")
        if key == "data":
            at = expect(at, "[")
            while body[at] != "]":
                obj, end = _decoder.raw_decode(body, at)
                if not isinstance(obj, dict):
                    raise ValueError("a list item is not an object")
                data.append(obj)
                raw.append(body[at:end])
                at = skip(end)
                if body[at] == ",":
                    at = skip(at + 1)
            at += 1
        else:
            value, at = _decoder.raw_decode(body, at)
            if key == "has_more":
                has_more = bool(value)
        at = skip(at)
        if body[at] == ",":
            at = skip(at + 1)
    return Page(data, raw, has_more)


def outcome(exc: stripe.StripeError) -> str:
    """A failed request as a metrics label."""
    if isinstance(exc, stripe.APIConnectionError):
        return "network"
    if isinstance(exc, stripe.RateLimitError) or exc.http_status == 429:
        return "rate_limited"
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return "auth"
    return "server_error" if (exc.http_status or 0) >= 500 else "client_error"


def retry_delay(exc: stripe.StripeError, attempt: int) -> float | None:
    """Seconds to wait before retrying a read that raised `exc`, or None: do not retry."""
    headers = exc.headers or {}
    should = _header(headers, "stripe-should-retry")
    status = exc.http_status or 0
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError) or should == "false":
        return None
    retryable = (
        should == "true"
        or status in (409, 429)
        or isinstance(exc, stripe.RateLimitError)
        or status >= 500
        or (isinstance(exc, stripe.APIConnectionError) and exc.should_retry)
    )
    if not retryable:
        return None
    after = _header(headers, "retry-after")
    if after is not None:
        try:
            seconds = float(after)
        except ValueError:
            seconds = -1.0
        if 0 <= seconds <= RETRY_AFTER_MAX:
            return seconds
        if seconds > RETRY_AFTER_MAX:
            return None
    delay: float = min(RETRY_CAP, RETRY_BASE * 2**attempt)
    return delay * random.uniform(0.5, 1.0)  # jitter: retries of many readers spread out


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name:
            return str(value).strip().lower()
    return None


def translate(what: str, exc: stripe.StripeError, *, attempts: int = 1) -> errors.StripeError:
    """Our error for a Stripe SDK error, with a message that says what was being done."""
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    if isinstance(exc, stripe.AuthenticationError):
        return errors.StripeAuthError(
            f"Stripe refused the key while {what}: {_message(exc)}; the key was revoked or "
            "mistyped: connect again with a working key"
        )
    if isinstance(exc, stripe.PermissionError):
        return errors.StripeForbidden(
            f"the key may not do this while {what}: {_message(exc)}; give the restricted key "
            "read access to it"
        )
    if isinstance(exc, stripe.APIConnectionError):
        return errors.StripeUnavailable(
            f"Stripe could not be reached while {what}{tries}: {_network_reason(exc)}"
        )
    if isinstance(exc, stripe.RateLimitError) or exc.http_status == 429:
        return errors.StripeUnavailable(f"Stripe's rate limit was hit while {what}{tries}")
    status = exc.http_status or 0
    if status >= 500:
        return errors.StripeUnavailable(
            f"Stripe failed while {what}{tries} (HTTP {status}): {_message(exc)}"
        )
    if status == 404:
        return errors.StripeNotFound(
            f"Stripe answered 404 (not found) while {what}: {_message(exc)}"
        )
    return errors.StripeError(f"Stripe said no while {what}: {_message(exc)}")


def _brief(exc: stripe.StripeError) -> str:
    if isinstance(exc, stripe.APIConnectionError):
        return _network_reason(exc)
    return f"HTTP {exc.http_status}"


def _network_reason(exc: stripe.APIConnectionError) -> str:
    """The innermost cause of a network error, in a few words ("Connection refused")."""
    text = str(exc)
    for reason in (
        "Connection refused",
        "timed out",
        "Name or service not known",
        "certificate verify failed",
        "Connection reset",
    ):
        if reason in text:
            return reason.lower()
    return "network error"


def _message(exc: stripe.StripeError) -> str:
    return exc.user_message or str(exc) or type(exc).__name__


def account_of(data: dict[str, Any], *, livemode: bool) -> Account:
    return Account(
        id=data.get("id"),
        livemode=livemode,
        default_currency=data.get("default_currency"),
        country=data.get("country"),
    )


def check_key(
    *, secret_key: str, api_base: str | None = None, api_version: str | None = None
) -> Account:
    """Prove the key works and learn the account behind it.

    Reads `GET /v1/account`. A restricted key without that permission, or a Stripe-compatible
    server that lacks the endpoint (localstripe), is checked with `GET /v1/customers?limit=1`
    instead (a 403 there still proves the key: Stripe knows it), and the account stays
    unknown.
    """
    try:
        found = _check_key(secret_key=secret_key, api_base=api_base, api_version=api_version)
    except errors.StripeAuthError:
        metrics.connection_check("refused")
        raise
    except errors.StripeUnavailable:
        metrics.connection_check("unavailable")
        raise
    except errors.StripeError:
        metrics.connection_check("failed")
        raise
    metrics.connection_check("ok")
    return found


def _check_key(*, secret_key: str, api_base: str | None, api_version: str | None) -> Account:
    client = Stripe(secret_key=secret_key, api_base=api_base, api_version=api_version, retries=2)
    try:
        return account_of(client.account(), livemode=client.livemode)
    except errors.StripeError as exc:
        if isinstance(exc, errors.StripeAuthError | errors.StripeUnavailable):
            raise
    try:
        client.get("listing customers to check the key", "/v1/customers", limit=1)
    except errors.StripeForbidden:
        pass  # Stripe knows the key (else 401); what it may do is probed on its own
    return Account(id=None, livemode=client.livemode, default_currency=None, country=None)
