"""What differs between SQLite and PostgreSQL, in one place: the `INSERT ... ON CONFLICT`
statement, row locks (PostgreSQL holds them; SQLite's single writer needs none) and advisory
locks. Everything else the code says in SQL both understand."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as Tx

S = TypeVar("S", bound=sa.Select[Any])


def is_postgresql(tx: Tx | sa.Dialect) -> bool:
    dialect = tx if isinstance(tx, sa.Dialect) else tx.dialect
    return dialect.name == "postgresql"


def insert(tx: Tx | sa.Dialect, table: sa.Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing` and `on_conflict_do_update`."""
    return postgresql.insert(table) if is_postgresql(tx) else sqlite.insert(table)


def locked(tx: Tx, stmt: S) -> S:
    """`stmt` holding its rows until the transaction ends (on PostgreSQL: FOR UPDATE)."""
    return stmt.with_for_update() if is_postgresql(tx) else stmt


def lock_names(tx: Tx, *names: str | None) -> None:
    """Hold a lock per name until the transaction ends (PostgreSQL advisory locks), so two
    writers of one new thing serialise; SQLite's single writer already does. One statement
    takes them all, in the order of their hashes: two holders of overlapping sets never wait
    for each other in a cycle."""
    wanted = sorted({name for name in names if name})
    if not wanted or not is_postgresql(tx):
        return
    tx.execute(_LOCK_NAMES, {"names": wanted})


_LOCK_NAMES = sa.text(
    "SELECT count(pg_advisory_xact_lock(h)) FROM "
    "(SELECT DISTINCT hashtextextended(n, 0) AS h FROM unnest(CAST(:names AS text[])) AS n "
    "ORDER BY h) AS wanted"
)


@functools.cache
def _upsert(dialect_name: str, table: sa.Table, key: str) -> Any:
    stmt = postgresql.insert(table) if dialect_name == "postgresql" else sqlite.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[key]],
        set_={c.name: stmt.excluded[c.name] for c in table.c if c.name != key},
    )


def _sql_nulls(table: sa.Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with None in a JSON column as SQL NULL (not JSON `null`), as an omitted
    column would be."""
    nulls = [c.name for c in table.c if isinstance(c.type, sa.JSON)]
    return [row | {name: sa.null() for name in nulls if row.get(name) is None} for row in rows]


def insert_rows(tx: Tx, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows (each with the same columns) in multi-row INSERTs."""
    if rows:
        tx.execute(table.insert(), _sql_nulls(table, rows))


def upsert_rows(tx: Tx, table: sa.Table, rows: list[dict[str, Any]], *, key: str) -> None:
    """Write whole rows in multi-row `INSERT ... ON CONFLICT (key) DO UPDATE` statements
    (every column but `key` takes the row's value)."""
    if rows:
        tx.execute(_upsert(tx.dialect.name, table, key), _sql_nulls(table, rows))


def notify(tx: Tx, channel: str) -> None:
    """NOTIFY `channel` when the transaction commits (PostgreSQL only; several in one
    transaction are delivered once)."""
    if is_postgresql(tx):
        tx.execute(sa.select(sa.func.pg_notify(channel, "")))


def lock_number(tx: Tx, key: int) -> None:
    """Hold the advisory lock `key` until the transaction ends (PostgreSQL only)."""
    if is_postgresql(tx):
        tx.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def starts_with(tx: Tx | sa.Dialect, expression: Any, prefix: str) -> sa.ColumnElement[bool]:
    """`expression` begins with `prefix`. SQLite compares bytes, so a range finds it through an
    index on the expression; PostgreSQL's collation may order by more than the bytes (a range
    could miss rows), so it says LIKE, which an index in the "C" collation serves."""
    if is_postgresql(tx):
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return expression.like(escaped + "%", escape="\\")  # type: ignore[no-any-return]
    return sa.and_(expression >= prefix, expression < prefix + "\U0010ffff")
