"""How deep JSON nests, and the bound every input is held to.

A JSON document nested deeper than `MAX_DEPTH` is refused wherever it comes in (a webhook, an
API write, a flows file): nothing real nests that deep (a Stripe event about 6 levels), and
every layer that walks such a value (JSON and YAML decoders, pydantic, JMESPath) recurses.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64  # levels of objects and arrays
CUT = "(nested too deeply)"  # what a read shows in place of a stored value below MAX_DEPTH


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Does `value` hold objects or arrays nested more than `limit` levels deep? (It recurses
    `limit` levels at most: a hostile value cannot exhaust the stack.)"""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if limit < 1:
        return True
    for child in children:
        if isinstance(child, dict | list) and too_deep(child, limit - 1):
            return True
    return False


def may_be_too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """A quick look at JSON text: False when it cannot nest more than `limit` levels (it holds
    too few brackets), True when `too_deep` must tell. Only the innermost level of a path can
    be an empty `{}` or `[]`, so those are not counted (a `{}` inside a string brought its own
    `{`): Stripe's larger bodies hold many of them, and would else all be walked. The empty
    pairs are only looked for when the brackets alone are too many: a two-byte search costs
    four times a one-byte count, and most bodies hold fewer brackets than `limit`."""
    opening = raw.count(b"{") + raw.count(b"[")
    if opening + 1 <= limit:
        return False
    return opening - raw.count(b"{}") - raw.count(b"[]") + 1 > limit


def cut(value: Any, limit: int = MAX_DEPTH) -> Any:
    """`value` with whatever lies below `limit` levels replaced by `CUT`, so a value stored
    before the bound existed can still be shown."""
    if isinstance(value, dict) and not any(isinstance(v, dict | list) for v in value.values()):
        return value  # flat, as metadata nearly always is
    if not isinstance(value, dict | list) or not too_deep(value, limit):
        return value

    def walk(current: Any, level: int) -> Any:
        if not isinstance(current, dict | list):
            return current
        if level > limit:
            return CUT
        if isinstance(current, dict):
            return {key: walk(inner, level + 1) for key, inner in current.items()}
        return [walk(inner, level + 1) for inner in current]

    return walk(value, 1)
