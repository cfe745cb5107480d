"""The one way Snapshots talks to the Stripe API: the official SDK, errors translated here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from snapshots import errors

NETWORK_RETRIES = 2
T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    """What a connection needs to know of the Stripe account behind a key."""

    id: str | None
    livemode: bool
    default_currency: str | None
    country: str | None


def client(
    *, secret_key: str, api_base: str | None = None, api_version: str | None = None
) -> stripe.StripeClient:
    base = {"api": api_base.rstrip("/")} if api_base else None
    return stripe.StripeClient(
        secret_key,
        base_addresses=base,  # type: ignore[arg-type]
        stripe_version=api_version,
        max_network_retries=NETWORK_RETRIES,
    )


def call(what: str, fn: Callable[[], T]) -> T:
    """Run one SDK call and translate its errors into ours."""
    try:
        return fn()
    except stripe.AuthenticationError as exc:
        raise errors.StripeAuthError(
            f"Stripe refused the key while {what}: {_message(exc)}"
        ) from exc
    except stripe.APIConnectionError as exc:
        raise errors.StripeUnavailable(
            f"Stripe could not be reached while {what}: {_network_reason(exc)}"
        ) from exc
    except stripe.RateLimitError as exc:
        raise errors.StripeUnavailable(f"Stripe rate limit hit while {what}") from exc
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        if status >= 500:
            raise errors.StripeUnavailable(
                f"Stripe failed while {what} (HTTP {status}): {_message(exc)}"
            ) from exc
        raise errors.StripeError(f"Stripe said no while {what}: {_message(exc)}") from exc


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


def check_key(
    *, secret_key: str, api_base: str | None = None, api_version: str | None = None
) -> Account:
    """Prove the key works and learn the account behind it.

    Reads `GET /v1/account`. A restricted key without that permission, or a Stripe-compatible
    server that lacks the endpoint (localstripe), is checked with `GET /v1/customers?limit=1`
    instead, and the account stays unknown.
    """
    stripe_client = client(secret_key=secret_key, api_base=api_base, api_version=api_version)
    livemode = secret_key.startswith(("sk_live_", "rk_live_"))
    try:
        account: dict[str, Any] = call(
            "reading the account", stripe_client.v1.accounts.retrieve_current
        ).to_dict()
    except errors.StripeError as exc:
        if isinstance(exc, errors.StripeAuthError | errors.StripeUnavailable):
            raise
        call(
            "listing customers to check the key",
            lambda: stripe_client.v1.customers.list(params={"limit": 1}),
        )
        return Account(id=None, livemode=livemode, default_currency=None, country=None)
    return Account(
        id=account.get("id"),
        livemode=livemode,
        default_currency=account.get("default_currency"),
        country=account.get("country"),
    )
