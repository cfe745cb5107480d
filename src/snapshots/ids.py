"""Snapshots' own ids: a prefix naming the kind (`con_`, `inv_`, `loc_`, `conn_`, `key_`) and
random base62 characters."""

from __future__ import annotations

import re
import secrets
import string

ALPHABET = string.ascii_letters + string.digits
LENGTH = 20  # base62 characters: ~119 random bits


def new(prefix: str, length: int = LENGTH) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))


PLAUSIBLE = re.compile(r"[A-Za-z0-9_\-]{1,255}")


def plausible(text: str) -> bool:
    """Could this be one of our ids or a Stripe id? (Lookups answer "not found" at once for
    anything else, so odd bytes such as NUL never reach the database.)"""
    return PLAUSIBLE.fullmatch(text) is not None
