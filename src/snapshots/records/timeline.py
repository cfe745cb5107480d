"""A contact's timeline: entries the `log_event` action keeps, once per (contact, event,
flow), read newest first (`GET /v1/customers/{id}/activities`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from snapshots import errors, ids, paging
from snapshots.records import lookup, reads
from snapshots.records.kinds import CONTACT
from snapshots.records.models import ActivityPublic
from snapshots.store import db, dialect, tables
from snapshots.store.db import Tx

T = tables.activities


def log(
    tx: Tx,
    *,
    connection_id: str,
    match: dict[str, Any],
    event: dict[str, Any],
    flow: str,
    kind: str,
    title: str | None,
    data: dict[str, Any],
    test: bool = False,
) -> str:
    """Keep an entry on a contact's timeline, once per (contact, event, flow); returns the
    contact's id (made bare when the customer has no contact yet)."""
    row = lookup.target(tx, CONTACT, connection_id=connection_id, match=match, test=test)
    tx.execute(
        dialect.insert(tx, T)
        .values(
            id=ids.new("act_"),
            connection_id=connection_id,
            contact_id=row.id,
            event_id=event["id"],
            flow=flow,
            type=kind,
            title=None if title is None else str(title)[:512],
            data=data,
            occurred_at=int(event["created"]),
            test=test,
            created_at=time.time(),
        )
        .on_conflict_do_nothing(index_elements=[T.c.contact_id, T.c.event_id, T.c.flow])
    )
    return str(row.id)


def page(
    tx: Tx,
    contact_id: str,
    *,
    limit: int = 20,
    starting_after: str | None = None,
    connections: Sequence[str] | None = None,
) -> paging.Page[ActivityPublic]:
    """A contact's timeline, newest first (404 for an unknown contact, or one of a connection
    outside `connections`)."""
    reads.get(tx, CONTACT, contact_id, connections=connections)
    if starting_after is None:
        return newest(tx, contact_id, limit=limit)
    after = (
        tx.execute(
            sa.select(T.c.occurred_at, T.c.seq).where(
                T.c.id == starting_after, T.c.contact_id == contact_id
            )
        ).first()
        if ids.plausible(starting_after)
        else None
    )
    if after is None:
        raise errors.BadRequest(
            f"starting_after: no activity {starting_after}", code="invalid_cursor"
        )
    stmt = (
        sa.select(T)
        .where(
            T.c.contact_id == contact_id,
            sa.or_(
                T.c.occurred_at < after.occurred_at,
                sa.and_(T.c.occurred_at == after.occurred_at, T.c.seq < after.seq),
            ),
        )
        .order_by(T.c.occurred_at.desc(), T.c.seq.desc())
        .limit(limit + 1)
    )
    return _page(tx.execute(stmt).all(), limit)


# Built once: a contact's page reads it at every view.
_NEWEST = (
    sa.select(T)
    .where(T.c.contact_id == sa.bindparam("contact_id"))
    .order_by(T.c.occurred_at.desc(), T.c.seq.desc())
    .limit(sa.bindparam("limit"))
)


def newest(tx: Tx, contact_id: str, *, limit: int = 20) -> paging.Page[ActivityPublic]:
    """The first page of a contact's timeline, for a caller that has read the contact (an
    unknown one has none)."""
    return _page(tx.execute(_NEWEST, {"contact_id": contact_id, "limit": limit + 1}).all(), limit)


def _page(rows: Sequence[Any], limit: int) -> paging.Page[ActivityPublic]:
    """A page of `limit` activities out of `rows`, read one more than that (so `has_more`)."""
    return paging.Page(
        data=[ActivityPublic.model_validate(db.fields(r)) for r in rows[:limit]],
        has_more=len(rows) > limit,
    )
