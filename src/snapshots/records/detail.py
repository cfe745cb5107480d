"""A record in full, as the console's record page shows it: every field with the write that
set it last (an event, or an API write), its metadata, custom fields and tags likewise, its
timeline (a contact's activities), and the events that touched it.

Which write set a field: partial writers (`set_fields`, tags, API edits) stamp each field
they set (`field_versions`); a whole-record upsert moves the record's ordering key
(`applied_*`). A field's setter is the newer of its stamp and that key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, SerializeAsAny

from snapshots import errors, events, inbox
from snapshots.records import models, reads, timeline
from snapshots.records.kinds import CONTACT, INVOICE, Kind
from snapshots.store import tables
from snapshots.store.db import Tx
from snapshots.times import Timestamp

EVENTS = 20  # events touching the record shown
ACTIVITIES = 20
# Shown on their own (the heading, the JSON fields, the flags), not as a field row.
_NOT_FIELDS = frozenset(
    {"id", "object", "metadata", "custom", "tags", "connection_id", "test", "livemode"}
)


class SetBy(BaseModel):
    """The write that set a value last."""

    event_id: str | None = Field(description="The Stripe event (None for an API write)")
    request_id: str | None = Field(description="The API request, for an API write")
    item_id: int | None = Field(description="The inbox item of the event, when it is kept")
    at: Timestamp = Field(description="The event's `created` time, or the API write's")


class Value(BaseModel):
    """A field (`email`, `metadata.tier`, `custom.city`, or a tag) and who set it last."""

    name: str
    value: Any
    set_by: SetBy | None


class Detail(BaseModel):
    kind: str
    record: SerializeAsAny[models.RecordPublic]
    fields: list[Value]
    metadata: list[Value]
    custom: list[Value]
    tags: list[Value]
    contact: events.RecordRef | None = Field(description="An invoice's contact")
    activities: list[models.ActivityPublic]
    touched: list[inbox.Event] = Field(
        description="The newest events that touched it (a contact's: with its invoices')"
    )


def _stamp(row: Any) -> list[Any] | None:
    if row.applied_created is None:
        return None
    return [row.applied_authority, row.applied_created, row.applied_rank, row.applied_event_id]


def _setter(stamps: dict[str, Any], names: Sequence[str], applied: list[Any] | None) -> Any:
    """The newest of the stamps of `names` (a field, then what holds it) and the record's key."""
    found = [stamps[name] for name in names if isinstance(stamps.get(name), list)]
    if applied is not None:
        found.append(applied)
    return max(found, default=None)


def get(
    tx: Tx, kind: Kind[Any], record_id: str, *, connections: Sequence[str] | None = None
) -> Detail:
    """One record in full (404 when unknown, or of a connection outside `connections`)."""
    row = reads.one_row(tx, kind, record_id, connections=connections)
    if row is None:
        raise errors.NotFound(f"no {kind.name} {record_id}")
    record = kind.public(row)
    stamps: dict[str, Any] = dict(row.field_versions or {}) if kind.stamped else {}
    applied = _stamp(row)
    shown = record.model_dump(mode="json")  # as the API writes them: times in ISO 8601
    setters: dict[str, Any] = {}

    def value(name: str, current: Any, holders: Sequence[str]) -> Value:
        setters[name] = _setter(stamps, holders, applied)
        return Value(name=name, value=current, set_by=None)

    fields = [
        value(name, current, [name])
        for name, current in shown.items()
        if name not in _NOT_FIELDS and name not in ("created_at", "updated_at")
    ]
    nested = {
        column: [
            value(f"{column}.{key}", current, [f"{column}.{key}", column])
            for key, current in sorted((shown.get(column) or {}).items())
        ]
        for column in ("metadata", "custom")
    }
    tags = [
        value(f"tag:{tag}", tag, [f"tag:{tag}"])
        for tag in (shown.get("tags") or [])
        if isinstance(tag, str)
    ]
    by_stamp = _resolve(tx, row.connection_id, [s for s in setters.values() if s is not None])
    for entry in [*fields, *nested["metadata"], *nested["custom"], *tags]:
        stamp = setters[entry.name]
        entry.set_by = None if stamp is None else by_stamp[str(stamp[3])]
    contact = None
    if kind is INVOICE and row.customer_id:
        contact = events.refs(tx, [row.customer_id])[row.customer_id]
    activities = timeline.newest(tx, record.id, limit=ACTIVITIES).data if kind is CONTACT else []
    return Detail(
        kind=kind.name,
        record=record,
        fields=fields,
        metadata=nested["metadata"],
        custom=nested["custom"],
        tags=tags,
        contact=contact,
        activities=activities,
        touched=events.touching(
            tx,
            record.id,
            getattr(row, kind.stripe_id),
            limit=EVENTS,
            invoices_of=record.id if kind is CONTACT else None,
        ),
    )


def _resolve(tx: Tx, connection_id: str | None, stamps: list[Any]) -> dict[str, SetBy]:
    """Each stamp's writer, by the id in it: an event (and its inbox item, when kept) or an
    API write (`api_<request id>`)."""
    found: dict[str, SetBy] = {}
    wanted: set[str] = set()
    for stamp in stamps:
        writer, at = str(stamp[3]), float(stamp[1])
        if writer.startswith("api_"):
            found[writer] = SetBy(event_id=None, request_id=writer[4:], item_id=None, at=at)
        else:
            found[writer] = SetBy(event_id=writer, request_id=None, item_id=None, at=at)
            wanted.add(writer)
    if wanted:
        items = tables.inbox_items
        rows = tx.execute(
            sa.select(items.c.event_id, sa.func.min(items.c.id))
            .where(
                items.c.event_id.in_(sorted(wanted)),
                *([] if connection_id is None else [items.c.connection_id == connection_id]),
            )
            .group_by(items.c.event_id)
        )
        for event_id, item_id in rows:
            found[event_id].item_id = int(item_id)
    return found
