"""Snapshots' own ids: a prefix naming the kind (`con_`, `inv_`, `loc_`, `conn_`, `key_`) and
random base62 characters (after the time, for `ordered` ones)."""

from __future__ import annotations

import re
import secrets
import string
import time

ALPHABET = string.ascii_letters + string.digits
LENGTH = 20  # base62 characters: ~119 random bits


def new(prefix: str, length: int = LENGTH) -> str:
    chosen = ""
    while len(chosen) < length:  # one read of the system's randomness, almost always
        # A byte below 248 (4 x 62) names each character equally often; the others are dropped.
        randoms = secrets.token_bytes(length + 8)
        chosen += randoms.translate(_CHARACTERS, _DROPPED).decode()
    return prefix + chosen[:length]


_EVEN = len(ALPHABET) * (256 // len(ALPHABET))  # 248
_CHARACTERS = bytes(ord(ALPHABET[byte % len(ALPHABET)]) for byte in range(256))
_DROPPED = bytes(range(_EVEN, 256))


def ordered(prefix: str, length: int = 8) -> str:
    """An id that sorts after every id `ordered` made before it with the same prefix: the
    time in nanoseconds (16 hex digits, fixed width until 2554), then random characters. For
    synthetic events, whose id breaks ties between events of the same second."""
    return f"{prefix}{time.time_ns():016x}{new('', length)}"


PLAUSIBLE = re.compile(r"[A-Za-z0-9_\-]{1,255}")


def plausible(text: str) -> bool:
    """Could this be one of our ids or a Stripe id? (Lookups answer "not found" at once for
    anything else, so odd bytes such as NUL never reach the database.)"""
    return PLAUSIBLE.fullmatch(text) is not None
