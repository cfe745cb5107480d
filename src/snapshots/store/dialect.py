"""What differs between SQLite and PostgreSQL, in one place: the `INSERT ... ON CONFLICT`
statement, row locks (PostgreSQL holds them; SQLite's single writer needs none) and advisory
locks. Everything else the code says in SQL both understand."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg.types.array import ListBinaryDumper
from psycopg.types.json import Json, Jsonb
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as Tx

S = TypeVar("S", bound=sa.Select[Any])


def is_postgresql(tx: Tx | sa.Dialect) -> bool:
    dialect = tx if isinstance(tx, sa.Dialect) else tx.dialect
    return dialect.name == "postgresql"


def insert(tx: Tx | sa.Dialect, table: sa.Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing` and `on_conflict_do_update`."""
    return postgresql.insert(table) if is_postgresql(tx) else sqlite.insert(table)


def locked(tx: Tx | sa.Dialect, stmt: S) -> S:
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


def insert_rows(
    tx: Tx, table: sa.Table, rows: list[dict[str, Any]], *, skip_existing: bool = False
) -> None:
    """Insert rows (each with the same columns), with `skip_existing` leaving out those that
    conflict with a stored one (`ON CONFLICT DO NOTHING`): on PostgreSQL in one statement over
    arrays (`unnested`), on SQLite a statement a row (`executemany`)."""
    if not rows:
        return
    if is_postgresql(tx):
        columns = tuple(rows[0])
        stmt = _insert_unnested(tx.dialect, table, columns, skip_existing=skip_existing)
        tx.execute(stmt, arrays(tx, table, rows))
        return
    executemany(tx, _insert(table, skip_existing), _sql_nulls(table, rows))


@functools.cache
def _insert(table: sa.Table, skip_existing: bool) -> sa.Insert:
    return sqlite.insert(table).on_conflict_do_nothing() if skip_existing else table.insert()


def upsert_rows(tx: Tx, table: sa.Table, rows: list[dict[str, Any]], *, key: str) -> None:
    """Write whole rows with `INSERT ... ON CONFLICT (key) DO UPDATE` (every column but `key`
    takes the row's value): on PostgreSQL in one statement over arrays (`unnested`), on
    SQLite a statement a row (`executemany`)."""
    if not rows:
        return
    if is_postgresql(tx):
        columns = tuple(rows[0])
        stmt = _insert_unnested(tx.dialect, table, columns, key=key)
        tx.execute(stmt, arrays(tx, table, rows))
        return
    executemany(tx, _upsert(tx.dialect.name, table, key), _sql_nulls(table, rows))


def update_rows(
    tx: Tx, table: sa.Table, rows: list[dict[str, Any]], *, key: str, same: dict[str, Any]
) -> None:
    """Update rows by `key` (each row with the same columns: `key` and the values it sets),
    setting the `same` values on every one: on PostgreSQL in one statement over arrays
    (`unnested`), on SQLite (in the process: no round trip to save) a statement a row."""
    if not rows:
        return
    if is_postgresql(tx):
        stmt = _update_unnested(tx.dialect, table, tuple(rows[0]), key, tuple(same))
        tx.execute(stmt, arrays(tx, table, rows) | {f"s_{n}": v for n, v in same.items()})
        return
    each = _update_each(table, tuple(rows[0]), key, tuple(same))
    executemany(tx, each, [{f"b_{n}": v for n, v in (row | same).items()} for row in rows])


@functools.cache
def _update_each(
    table: sa.Table, columns: tuple[str, ...], key: str, same: tuple[str, ...]
) -> sa.Update:
    sets: dict[str, Any] = {
        name: sa.bindparam(f"b_{name}") for name in (*columns, *same) if name != key
    }
    return table.update().where(table.c[key] == sa.bindparam(f"b_{key}")).values(sets)


def executemany(tx: Tx, stmt: sa.Executable, rows: list[dict[str, Any]]) -> None:
    """Run `stmt` (built once: it keys a cache) once a row, each row with the same keys: every
    parameter of the statement (on SQLite no column's Python-side default is run). On SQLite
    the statement is compiled once and the rows go to the driver's `executemany` as tuples,
    which loops in C: SQLAlchemy's own executemany builds and converts every row's parameters
    in Python, more than SQLite's own work for a small UPDATE or INSERT."""
    if not rows:
        return
    if is_postgresql(tx):
        tx.execute(stmt, rows)
        return
    sql, names, binds = _compiled(tx.dialect, stmt, tuple(rows[0]))
    pairs = list(zip(names, binds, strict=True))
    tx.exec_driver_sql(
        sql,
        [tuple([row[n] if bind is None else bind(row[n]) for n, bind in pairs]) for row in rows]
        if any(binds)
        else [tuple([row[n] for n in names]) for row in rows],
    )


@functools.cache
def _compiled(
    sql: sa.Dialect, stmt: sa.Executable, keys: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """`stmt`'s text for SQLite's driver, its parameters' names in order and their types' bind
    converters (None where the value goes as it is)."""
    compiled = stmt.compile(dialect=sql, column_keys=list(keys))  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup)
    processors = compiled._bind_processors
    return compiled.string, names, tuple(processors.get(name) for name in names)


# PostgreSQL writes many rows with one statement whose text is the same whatever their number:
# each column goes as one array parameter, and `unnest` turns the arrays back into rows. The
# server parses and plans it once (a prepared statement) and runs it once, where a multi-row
# VALUES list is a new text for every number of rows (parsed on both sides, with a parameter
# per value) and an executemany runs a statement per row.


class _BinaryArray(list[Any]):
    """An array parameter psycopg sends in its binary format. psycopg sends a list as text,
    where each `bytes` value becomes hex with array quoting: a webhook's 6 KB payload went
    out as 12 KB of text that the server parsed back (`array_in`, `byteain`) on every insert.
    Binary, the bytes go as they are."""


psycopg.adapters.register_dumper(_BinaryArray, ListBinaryDumper)


def binary_array(values: list[bytes]) -> list[bytes]:
    """`values` as an array parameter sent in binary (`_BinaryArray`), for a BYTEA[] cast."""
    return _BinaryArray(values)


def arrays(tx: Tx, table: sa.Table, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each column of the rows as an array parameter `a_<n>`, its values as the column's type
    binds them (None stays SQL NULL, also in a JSON column, as an omitted column would be)."""
    columns: dict[str, Any] = {}
    for n, name in enumerate(rows[0]):
        kind = table.c[name].type
        bind = kind._cached_bind_processor(tx.dialect)
        values = [row[name] for row in rows]
        if bind is not None:
            values = [None if value is None else bind(value) for value in values]
        if isinstance(kind, sa.JSON):
            values = [_json_text(value) for value in values]
        if isinstance(kind, sa.LargeBinary):
            if any(value is not None for value in values):  # (of None alone: no type to tell)
                columns[f"a_{n}"] = _BinaryArray(values)
                continue
        literal = _array_literal(values)
        columns[f"a_{n}"] = values if literal is None else literal
    return columns


def _json_text(value: Any) -> Any:
    """A JSON column's bound value (psycopg's `Json` wrapper) as the text psycopg's dumper makes
    of it, so the column goes as an array literal too: psycopg dumped a list of wrappers
    element by element, each quoted for the array by a regular expression in Python."""
    if isinstance(value, Json | Jsonb):
        return (value.dumps or json.dumps)(value.obj)
    return value


def _array_literal(values: list[Any]) -> str | None:
    """The values as a PostgreSQL array literal (`{"a","b\\"c",NULL}`), when they are all
    strings, all numbers or all booleans (None aside); else None. Sent as text of
    unknown type, the statement's cast (`unnested`) reads it as an array of the column's type.
    psycopg would dump a list too, but in Python, element by element, guessing the type of
    each: for a statement's dozen arrays that was most of the Python a statement cost."""
    kinds = {type(value) for value in values if value is not None}
    if kinds <= {str}:
        text = [
            "NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for value in values
        ]
    elif kinds <= {float, int}:  # repr round-trips; PostgreSQL reads inf, -inf and nan too
        text = ["NULL" if value is None else repr(value) for value in values]
    elif kinds == {bool}:
        text = ["NULL" if value is None else "t" if value else "f" for value in values]
    else:
        return None
    return "{" + ",".join(text) + "}"


def unnested(sql: sa.Dialect, table: sa.Table, columns: tuple[str, ...]) -> str:
    """`unnest(...) WITH ORDINALITY AS v(<columns>, ord)` over the `arrays` parameters: the
    arrays are of each column's type without its length, so a value too long for its column
    fails when it is stored, as it would from a VALUES list (a cast to VARCHAR(n) cuts it)."""
    quote = sql.identifier_preparer.quote
    casts = []
    for n, name in enumerate(columns):
        kind = table.c[name].type
        base = "TEXT" if isinstance(kind, sa.String) else kind.compile(dialect=sql)
        casts.append(f"CAST(:a_{n} AS {base}[])")
    names = ", ".join(quote(name) for name in columns)
    return f"unnest({', '.join(casts)}) WITH ORDINALITY AS v({names}, ord)"


@functools.cache
def _insert_unnested(
    sql: sa.Dialect,
    table: sa.Table,
    columns: tuple[str, ...],
    *,
    key: str | None = None,
    skip_existing: bool = False,
) -> sa.TextClause:
    quote = sql.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    text = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} "
        f"FROM {unnested(sql, table, columns)} ORDER BY ord"
    )
    if key is not None:
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c != key)
        text += f" ON CONFLICT ({quote(key)}) DO UPDATE SET {sets}"
    elif skip_existing:
        text += " ON CONFLICT DO NOTHING"
    return sa.text(text)


@functools.cache
def _update_unnested(
    sql: sa.Dialect, table: sa.Table, columns: tuple[str, ...], key: str, same: tuple[str, ...]
) -> sa.TextClause:
    quote = sql.identifier_preparer.quote
    name = quote(table.name)
    sets = [f"{quote(c)} = v.{quote(c)}" for c in columns if c != key]
    sets += [f"{quote(c)} = :s_{c}" for c in same]
    return sa.text(
        f"UPDATE {name} SET {', '.join(sets)} FROM {unnested(sql, table, columns)} "
        f"WHERE {name}.{quote(key)} = v.{quote(key)}"
    )


BINARY_RESULTS = "snapshots_binary_results"  # an execution option (`binary_results`)


def binary_results(stmt: S) -> S:
    """`stmt` with its rows sent by PostgreSQL in binary (psycopg loads the same Python
    values): a BYTEA column comes as it is stored, where as text each byte went as two hex
    digits that the server wrote and psycopg read back (the worker's claim of 200 webhook
    payloads: 9 us an item instead of 24). No effect on SQLite."""
    return stmt.execution_options(**{BINARY_RESULTS: True})


def results_in_binary(
    _tx: Tx, cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    """`before_cursor_execute` of a PostgreSQL engine: a statement of `binary_results` has its
    results in binary, as psycopg's `cursor(binary=True)` does (each statement has a cursor
    of its own)."""
    if context is not None and context.execution_options.get(BINARY_RESULTS):
        cursor.format = psycopg.pq.Format.BINARY


def set_local(tx: Tx, **settings: str) -> None:
    """PostgreSQL settings until the transaction ends (`SET LOCAL`), all in one round trip;
    nothing on SQLite. `synchronous_commit="off"` lets the commit return before its WAL is on
    disk: only for a write whose loss at a crash of the server (not of this process: the
    commit is then visible and flushed within `wal_writer_delay`) leaves things as if it never
    ran, and which any later ordinary commit makes durable too (the WAL is flushed in order)."""
    if is_postgresql(tx) and settings:
        calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(settings)))
        names = {f"n{i}": name for i, name in enumerate(settings)}
        values = {f"v{i}": value for i, value in enumerate(settings.values())}
        tx.execute(sa.text(f"SELECT {calls}"), names | values)


def notify(tx: Tx, channel: str) -> None:
    """NOTIFY `channel` when the transaction commits (PostgreSQL only; several in one
    transaction are delivered once)."""
    if is_postgresql(tx):
        tx.execute(sa.select(sa.func.pg_notify(channel, "")))


def lock_number(tx: Tx, key: int) -> None:
    """Hold the advisory lock `key` until the transaction ends (PostgreSQL only)."""
    if is_postgresql(tx):
        tx.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def analyze(tx: Tx, tables: Sequence[sa.Table], *, key: int) -> bool:
    """Refresh the planner's statistics of `tables` (PostgreSQL's ANALYZE: a sample, it blocks
    no reads or writes) unless another process holds the advisory lock `key` for it; True when
    this call did. SQLite plans from its indexes alone: nothing to do."""
    if not is_postgresql(tx):
        return False
    if not tx.execute(sa.select(sa.func.pg_try_advisory_xact_lock(key))).scalar_one():
        return False
    tx.exec_driver_sql("ANALYZE " + ", ".join(table.name for table in tables))
    return True


def starts_with(tx: Tx | sa.Dialect, expression: Any, prefix: str) -> sa.ColumnElement[bool]:
    """`expression` begins with `prefix`. SQLite compares bytes, so a range finds it through an
    index on the expression; PostgreSQL's collation may order by more than the bytes (a range
    could miss rows), so it says LIKE, which an index in the "C" collation serves."""
    if is_postgresql(tx):
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return expression.like(escaped + "%", escape="\\")  # type: ignore[no-any-return]
    return sa.and_(expression >= prefix, expression < prefix + "\U0010ffff")
