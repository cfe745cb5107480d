"""Snapshots' own ids: a prefix naming the kind (`con_`, `inv_`, `loc_`, `conn_`, `key_`) and
random base62 characters."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_letters + string.digits
LENGTH = 20  # base62 characters: ~119 random bits


def new(prefix: str, length: int = LENGTH) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))
