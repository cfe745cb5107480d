"""Lists, one way for every resource: newest first (or oldest first), `limit` at a time, after
the row whose id is `starting_after`, answered as a `Page` (`{"data": [...], "has_more"}`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel

from snapshots import errors, ids
from snapshots.store.db import Tx

T = TypeVar("T")
Order = Literal["desc", "asc"]


class Where:
    """Conditions with a hashable `key` that stands for them (equal keys, equal conditions):
    `paginate` keeps the statement it builds from them by that key, so a list shown again
    is not built again (building a statement, with its cache key, cost about as much as
    SQLite reading a page of 50)."""

    def __init__(self, key: Hashable, clauses: Sequence[sa.ColumnElement[bool]]) -> None:
        self.key = key
        self.clauses = tuple(clauses)

    def __len__(self) -> int:
        return len(self.clauses)

    def __iter__(self) -> Iterator[sa.ColumnElement[bool]]:
        return iter(self.clauses)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Where) and self.key == other.key


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
    ending_before: str | int | None = None,
    where: Sequence[sa.ColumnElement[bool]] | Where = (),
    order: Order = "desc",
    key: str = "seq",
    cursor: str = "id",
    columns: Sequence[Any] | sa.Select[Any] | None = None,
) -> Page[T]:
    """A page of `table` in `key` order of the rows matching `where`, after the row whose
    `cursor` column is `starting_after`, or the page just before the row `ending_before` (the
    page a "newer" link shows: still in `key` order; `has_more` then says whether rows come
    before it). A cursor must exist, but need not match `where` (a 400 `invalid_cursor`).
    `columns`: what to select (default: the whole row), or a `select()` of them built once (a
    hot list saves building it per request)."""
    column = table.c[key]
    ascending = order == "asc"
    backwards = ending_before is not None  # read away from the cursor, then turned round
    params: dict[str, Any] = {"page_limit": limit + 1}
    bounds: list[tuple[str, bool]] = []  # (cursor, True: rows after it, False: before it)
    for name, given in (("starting_after", starting_after), ("ending_before", ending_before)):
        if given is None:
            continue
        found = None
        if isinstance(given, int) or ids.plausible(given):
            found = tx.execute(
                sa.select(column).where(table.c[cursor] == given)
            ).scalar_one_or_none()
        if found is None:
            raise errors.BadRequest(f"{name}: no {noun} {given}", code="invalid_cursor")
        bounds.append((name, ascending != (name == "ending_before")))
        params[f"page_{name}"] = found
    if isinstance(columns, sa.Select) and not where:
        stmt = _unfiltered(columns, table, key, ascending != backwards, tuple(bounds))
    elif isinstance(columns, sa.Select) and isinstance(where, Where):
        stmt = _filtered(columns, table, key, ascending != backwards, tuple(bounds), where)
    else:
        chosen = columns if isinstance(columns, sa.Select) else sa.select(*(columns or [table]))
        stmt = _statement(chosen, column, ascending != backwards, bounds).where(*where)
    rows = tx.execute(stmt, params).all()
    data = [build(r) for r in rows[:limit]]
    # Built from rows `build` made: nothing to validate (a list of 100 would be walked again).
    return Page.model_construct(data=data[::-1] if backwards else data, has_more=len(rows) > limit)


def _statement(
    chosen: sa.Select[Any], column: Any, ascending: bool, bounds: Sequence[tuple[str, bool]]
) -> sa.Select[Any]:
    """`chosen` in `column` order, `:page_limit` rows, after (or before) each bound cursor."""
    stmt = chosen.order_by(column.asc() if ascending else column.desc())
    for name, after in bounds:
        bound: sa.BindParameter[Any] = sa.bindparam(f"page_{name}")
        stmt = stmt.where(column > bound if after else column < bound)
    return stmt.limit(sa.bindparam("page_limit"))


@functools.lru_cache(maxsize=128)
def _filtered(
    chosen: sa.Select[Any],
    table: sa.Table,
    key: str,
    ascending: bool,
    bounds: tuple[tuple[str, bool], ...],
    where: Where,
) -> sa.Select[Any]:
    """`_statement` with conditions, made once per shape and conditions (see `Where`)."""
    return _statement(chosen, table.c[key], ascending, bounds).where(*where.clauses)


@functools.cache
def _unfiltered(
    chosen: sa.Select[Any],
    table: sa.Table,
    key: str,
    ascending: bool,
    bounds: tuple[tuple[str, bool], ...],
) -> sa.Select[Any]:
    """`_statement` of a `select()` built once, made once per shape: a statement made afresh
    costs SQLAlchemy more (its cache key walks every column) than reading a page of one."""
    return _statement(chosen, table.c[key], ascending, bounds)
