"""Lists, one way for every resource: newest first (or oldest first), `limit` at a time, after
the row whose id is `starting_after`, answered as a `Page` (`{"data": [...], "has_more"}`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel

from snapshots import errors, ids
from snapshots.store.db import Tx

T = TypeVar("T")
Order = Literal["desc", "asc"]


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool


def within(column: Any, connections: Sequence[str] | None) -> list[sa.ColumnElement[bool]]:
    """The condition that keeps rows to `connections` (an API key limited to some: nothing of
    another connection, nor anything of none), or no condition for None (every connection)."""
    return [] if connections is None else [column.in_(list(connections))]


def paginate(
    tx: Tx,
    table: sa.Table,
    noun: str,
    build: Callable[[Any], T],
    *,
    limit: int = 20,
    starting_after: str | int | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    order: Order = "desc",
    key: str = "seq",
    cursor: str = "id",
    columns: Sequence[Any] | None = None,
) -> Page[T]:
    """A page of `table` in `key` order of the rows matching `where`, after the row whose
    `cursor` column is `starting_after` (which must exist, but need not match `where`: a 400
    `invalid_cursor` otherwise)."""
    column = table.c[key]
    ascending = order == "asc"
    stmt = (
        sa.select(*(columns or [table]))
        .where(*where)
        .order_by(column.asc() if ascending else column.desc())
    )
    stmt = stmt.limit(limit + 1)
    if starting_after is not None:
        found = None
        if isinstance(starting_after, int) or ids.plausible(starting_after):
            found = tx.execute(
                sa.select(column).where(table.c[cursor] == starting_after)
            ).scalar_one_or_none()
        if found is None:
            raise errors.BadRequest(
                f"starting_after: no {noun} {starting_after}", code="invalid_cursor"
            )
        stmt = stmt.where(column > found if ascending else column < found)
    rows = tx.execute(stmt).all()
    return Page(data=[build(r) for r in rows[:limit]], has_more=len(rows) > limit)
