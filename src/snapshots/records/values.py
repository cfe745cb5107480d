"""The values a write sets: the fields a kind has, and dotted targets (`address.city`,
`metadata.tier`, `custom.plan`) folded into their JSON field without losing what a newer
partial write set there."""

from __future__ import annotations

from typing import Any


def clean(fields: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The fields a record kind has; a dotted target (`address.city`) stays as it is, to be
    merged into its JSON field by `merge`."""
    values = {k: v for k, v in fields.items() if k in allowed or k.split(".", 1)[0] in allowed}
    for name in ("metadata", "custom"):
        if name in values and not isinstance(values[name], dict):
            values[name] = {} if name == "metadata" else None
    return values


def merge(values: dict[str, Any], stored: Any) -> dict[str, Any]:
    """Fold dotted targets into their JSON field: over the field's mapped value when the flow
    maps it whole, else over what the record holds (a flow may set `metadata.tier` alone)."""
    dotted = [k for k in values if "." in k]
    if not dotted:
        return values
    merged = {k: v for k, v in values.items() if "." not in k}
    for key in dotted:
        column, *path = key.split(".")
        base = (
            merged.get(column) if column in merged else (None if stored is None else stored[column])
        )
        target = merged[column] = copy(base)
        for part in path[:-1]:
            inner = target.get(part)
            target[part] = inner = dict(inner) if isinstance(inner, dict) else {}
            target = inner
        target[path[-1]] = values[key]
    return merged


def copy(value: Any) -> dict[str, Any]:
    """A deep copy of a JSON object's nested objects (lists are shared: never changed in place);
    anything else becomes an empty object."""
    return (
        {k: (copy(v) if isinstance(v, dict) else v) for k, v in value.items()}
        if isinstance(value, dict)
        else {}
    )


def keep_newer_fields(values: dict[str, Any], current: Any, stamp: list[Any]) -> dict[str, Any]:
    """`values` (merged into their JSON fields) without what a newer `set_fields` wrote: its
    fields and its paths inside JSON fields (`custom.plan`) stay as it left them."""
    stamps = current.get("field_versions")
    if not stamps:
        return merge(values, current)
    newer = {key for key, set_by in stamps.items() if not key.startswith("tag:") and set_by > stamp}
    merged = merge({k: v for k, v in values.items() if k not in newer}, current)
    for key in newer:
        column, dot, path = key.partition(".")
        if not dot or column not in merged or not isinstance(merged[column], dict):
            continue
        stored: Any = current[column]
        target = merged[column]
        parts = path.split(".")
        for part in parts[:-1]:
            stored = stored.get(part) if isinstance(stored, dict) else None
            inner = target.get(part)
            target[part] = inner = dict(inner) if isinstance(inner, dict) else {}
            target = inner
        if isinstance(stored, dict) and parts[-1] in stored:
            target[parts[-1]] = stored[parts[-1]]
        else:
            target.pop(parts[-1], None)
    return merged
