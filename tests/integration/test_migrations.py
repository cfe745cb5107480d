"""The hand-written migrations build exactly the schema tables.py describes, on both databases."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from snapshots.store import db as store
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import SqliteCopy
from tests.integration import helpers


@contextlib.contextmanager
def comparing(db: Database) -> Iterator[sa.Connection]:
    """A connection to compare the schema on. Indexes on expressions (`lower(email)`) are left
    out on SQLite, whose reflection cannot read them (alembic then skips them on both sides);
    test_migration_0011 checks they are there."""
    with db.engine.connect() as conn, warnings.catch_warnings():
        if db.engine.dialect.name == "sqlite":
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
        yield conn


def differences(db: Database) -> list[object]:
    """What tables.py has that the database lacks, or the reverse."""
    with comparing(db) as conn:
        diff: list[object] = compare_metadata(
            MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            ),
            tables.metadata,
        )
    return diff


def head(db: Database) -> str | None:
    return ScriptDirectory.from_config(store.alembic_config(db)).get_current_head()


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_the_migrations_match_the_tables(db: Database) -> None:
    assert current(db) == head(db)
    assert differences(db) == []


def test_migrating_again_changes_nothing(db: Database) -> None:
    store.migrate(db)
    assert current(db) == head(db)
    assert differences(db) == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, unmigrated database of its own (the downgrade must not touch the shared one)."""
    with helpers.own_database(request, tmp_path) as database:
        yield database


def test_the_last_migration_goes_down_and_up_again(blank: Database) -> None:
    assert not store.is_migrated(blank)
    store.migrate(blank)
    assert store.is_migrated(blank) and differences(blank) == []
    config = store.alembic_config(blank)
    with blank.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    inspector = sa.inspect(blank.engine)
    assert not {"sync_runs", "schedules", "watched_locations"} & set(inspector.get_table_names())
    assert current(blank) == "0001"
    store.migrate(blank)
    assert current(blank) == head(blank)
    assert differences(blank) == []


def test_the_comparison_sees_a_drift(db: Database) -> None:
    """A column tables.py would add without a migration is reported (the check has teeth)."""
    drifted = sa.MetaData(naming_convention=tables.metadata.naming_convention)
    for table in tables.metadata.sorted_tables:
        copy = table.to_metadata(drifted)
        if table.name == "sync_runs":
            copy.append_column(sa.Column("extra", sa.Integer))
    with comparing(db) as conn:
        diff = compare_metadata(MigrationContext.configure(conn), drifted)
    assert [(d[0], d[3].name) for d in diff if isinstance(d, tuple)] == [("add_column", "extra")]


def test_a_sqlite_copy_is_a_migrated_database_of_its_own(
    sqlite_template: Path, sqlite_copy: SqliteCopy, tmp_path: Path
) -> None:
    """Each test's SQLite database is a copy of one file migrated per session (tests/conftest.py):
    a sound database at the newest revision, and a write to it reaches neither the template
    nor another copy."""
    before = sqlite_template.read_bytes()
    one = Database(sqlite_copy(tmp_path / "one"))
    other = Database(sqlite_copy(tmp_path / "other"))
    try:
        with one.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
        assert current(one) == head(one)
        assert differences(one) == []
        with one.write() as conn:
            conn.execute(sa.text("CREATE TABLE scratch (x INTEGER)"))
        assert "scratch" not in sa.inspect(other.engine).get_table_names()
    finally:
        one.dispose()
        other.dispose()
    assert sqlite_template.read_bytes() == before


def _compression(db: Database) -> str | None:
    with db.engine.connect() as conn:
        if (
            conn.scalar(
                sa.text(
                    "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
                    "AND 'lz4' = ANY(enumvals)"
                )
            )
            is None
        ):
            pytest.skip("this PostgreSQL has no lz4")
        return conn.scalar(
            sa.text(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = 'inbox_payloads'::regclass AND attname = 'payload'"
            )
        )


@pytest.mark.postgres
def test_payloads_are_compressed_with_lz4_on_postgresql(blank: Database) -> None:
    """0022: the payload column compresses with lz4 (`l`), pglz (`p`) again once downgraded."""
    if blank.dialect != "postgresql":
        pytest.skip("SQLite stores the bytes as they are")
    store.migrate(blank)
    assert _compression(blank) == "l"
    config = store.alembic_config(blank)
    with blank.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0022-1")
    assert _compression(blank) == "p"
