"""What differs between SQLite and PostgreSQL, in one place: the `INSERT ... ON CONFLICT`
statement, row locks (PostgreSQL holds them; SQLite's single writer needs none) and advisory
locks. Everything else the code says in SQL both understand."""

from __future__ import annotations

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
    writers of one new thing serialise; SQLite's single writer already does."""
    if not is_postgresql(tx):
        return
    for name in names:
        if name:
            tx.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(name, 0))))


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
