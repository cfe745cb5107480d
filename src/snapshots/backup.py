"""Backup and restore of the store, and the master key that goes with it.

SQLite: `backup` copies the live database with SQLite's online backup API in one step
(`pages=-1`): one read transaction, so in WAL mode the copy is the database as of one commit
while `serve` and workers keep writing, and it holds everything committed before it began.
The copy is written to a temporary file, checked (`PRAGMA quick_check`, our schema) and only
then renamed to its name, 0600. `restore` refuses while any snapshots process uses the database
(`store.lock`), moves the database aside (never deletes it) and puts the backup in its place.

The master key rule: the Stripe secrets in a backup decrypt only with the master key in force
when it was taken. With a key file (no `SNAPSHOTS_MASTER_KEY`) `backup` copies the key beside
the copy as `<copy>.key` (0600) and `restore` puts it back; with `SNAPSHOTS_MASTER_KEY` the
operator keeps that key with the backup.

PostgreSQL: `pg_dump` and `pg_restore` do the job; `postgres_commands` gives the command lines
that fit the configured URL (never its password).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, PlainSerializer

from snapshots import errors, vault
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import lock

MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
SIDECARS = ("-wal", "-shm", "-journal")  # files SQLite keeps beside a database
ASIDE = ".before-restore-"  # <database>.before-restore-<UTC time>: what a restore replaced


class Result(BaseModel):
    """What a backup or a restore did."""

    model_config = ConfigDict(frozen=True)

    database: Path  # the copy (backup), or the database put back (restore)
    revision: str  # the schema revision of the copy (restore: before upgrading it)
    size: int  # bytes
    seconds: Annotated[float, PlainSerializer(lambda value: round(value, 3))]
    key_file: Path | None  # the master key file written: beside the copy, or the one put back
    # Where the master key in force comes from: "file" (the key file beside the database),
    # "env" (SNAPSHOTS_MASTER_KEY) or "none" (no key file yet: nothing was ever encrypted).
    key_source: str
    source: Path | None = None  # restore: the backup it came from
    upgraded_to: str | None = None  # restore: the schema revision after upgrading
    kept: tuple[Path, ...] = ()  # restore: what was moved aside
    warnings: tuple[str, ...] = ()


def key_path(copy: Path) -> Path:
    """Where the master key of a backup lives: `<copy>.key` (as `<database>.key` beside a
    database, so a copy and its key can also be used where they are)."""
    return copy.with_name(copy.name + ".key")


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


# -- SQLite: backup ------------------------------------------------------------------------


def backup(settings: Settings, dest: Path, *, force: bool = False) -> Result:
    """Copy the SQLite database to `dest` (0600), consistent as of one commit while other
    processes keep writing, and the master key file to `<dest>.key` (0600) when the key comes
    from a file (both keys, `new,old`, while a rotation is half-done).

    Refuses an existing `dest` or `<dest>.key` unless `force`. `dest` ends up a whole copy that
    passed `PRAGMA quick_check`, or untouched. Raises errors.Rejected for a bad `dest`,
    errors.Conflict while a restore runs, errors.ConfigError when there is no database."""
    started = time.monotonic()
    source = _sqlite_path(settings)
    if not source.is_file():
        raise errors.ConfigError(f"there is no database at {source}: nothing to back up")
    dest = dest.absolute()
    key_dest = key_path(dest)
    if dest.is_dir():
        raise errors.BadRequest(f"{dest} is a directory: give the backup's file name")
    if not dest.parent.is_dir():
        raise errors.BadRequest(f"{dest.parent} is not a directory: create it first")
    if {_real(dest), _real(key_dest)} & _own_files(settings, source):
        raise errors.BadRequest(f"{dest} is a file of the database itself: give another name")
    if not force:
        for path in (dest, key_dest):
            if path.exists():
                raise errors.Conflict(f"{path} exists: give --force to overwrite it")
    # Read before and after the copy: a master key rotation running meanwhile re-encrypts the
    # secrets with the new key, and the copy may hold either.
    keys = [] if settings.master_key else _key_file_keys(settings)
    with lock.shared(source):
        temporary = _temporary(dest)
        try:
            _copy(source, temporary)
            revision = _inspect(temporary, shown=dest)
            _fsync(temporary)
            os.replace(temporary, dest)
        except BaseException:
            _remove(temporary)
            raise
    _fsync(dest.parent)
    key_file = None
    if settings.master_key:
        key_source = "env"
        undecryptable = _undecryptable(dest, [settings.master_key])
    else:
        keys = _unique(keys + _key_file_keys(settings))
        key_source = "file" if keys else "none"
        if keys:
            key_file = key_dest
            _write_private(key_dest, (",".join(keys) + "\n").encode())
        undecryptable = _undecryptable(dest, keys)
    if key_file is None:  # an earlier backup's key (--force) must not pass for this one's
        key_dest.unlink(missing_ok=True)
    warnings = []
    if undecryptable:
        where = "SNAPSHOTS_MASTER_KEY" if settings.master_key else "the master key file"
        warnings.append(
            f"the Stripe secrets of {undecryptable} connection(s) in the backup do not decrypt "
            f"with {where}: the backup holds them, but you will need the key they were "
            "encrypted with"
        )
    return Result(
        database=dest,
        revision=revision,
        size=dest.stat().st_size,
        seconds=time.monotonic() - started,
        key_file=key_file,
        key_source=key_source,
        warnings=tuple(warnings),
    )


# -- SQLite: restore -----------------------------------------------------------------------


def restore(settings: Settings, source: Path) -> Result:
    """Put the backup `source` in place of the SQLite database, with its master key.

    The backup must be a SQLite database with Snapshots' schema at a revision this code knows
    and pass `PRAGMA quick_check`. While it holds the database's exclusive lock (refused at
    once, errors.Conflict, while a snapshots process uses the database) it copies the backup
    beside the database, moves the database and its -wal/-shm aside as
    `<database>.before-restore-<UTC time>` (nothing is deleted) and renames the copy into place
    (0600), then upgrades its schema. `<source>.key`, when there is one and the key comes from
    a file, becomes the key file (the previous one moved aside the same way). The result warns
    when the master key in force does not decrypt the restored Stripe secrets."""
    started = time.monotonic()
    target = _sqlite_path(settings).absolute()
    source = source.absolute()
    if not source.is_file():
        raise errors.BadRequest(f"{source} is not a file")
    if _real(source) in _own_files(settings, target):
        raise errors.BadRequest(f"{source} is a file of the database itself: give a backup")
    revision = _inspect(source, shown=source)
    source_key = key_path(source)
    has_key = source_key.is_file()
    key_text = _read_key(source_key) if has_key and not settings.master_key else None
    target.parent.mkdir(parents=True, exist_ok=True)
    with lock.exclusive(target):
        temporary = _temporary(target)
        try:
            _copy(source, temporary)
            _fsync(temporary)
            stamp = _stamp(target)
            kept = _move_aside(target, [target.with_name(target.name + s) for s in SIDECARS], stamp)
            os.replace(temporary, target)
        except BaseException:
            _remove(temporary)
            raise
        _fsync(target.parent)
        size = target.stat().st_size
        key_file = None
        in_force = vault.key_file(settings)
        assert in_force is not None  # a SQLite file has one
        if settings.master_key:
            key_source = "env"
        elif key_text is not None:
            key_file = in_force
            pending = in_force.with_name(in_force.name + ".new")
            kept += _move_aside(in_force, [pending], stamp)
            _write_private(in_force, key_text.encode())
            key_source = "file"
        else:
            key_source = "file" if in_force.exists() else "none"
        database = store.Database(settings.database_url)
        try:
            store.migrate(database)
        finally:
            database.dispose()
    head, _ = store.revisions()
    warnings = []
    problem = _secrets_problem(settings, target, source_key if has_key else None)
    if problem:
        warnings.append(problem)
    return Result(
        database=target,
        revision=revision,
        size=size,
        seconds=time.monotonic() - started,
        key_file=key_file,
        key_source=key_source,
        source=source,
        upgraded_to=head if head != revision else None,
        kept=tuple(kept),
        warnings=tuple(warnings),
    )


def _secrets_problem(settings: Settings, database: Path, backup_key: Path | None) -> str | None:
    """What is wrong when the master key in force does not decrypt the restored Stripe secrets,
    with the fix; None when it does (or nothing is encrypted)."""
    if settings.master_key:
        bad = _undecryptable(database, [settings.master_key])
        fix = "set SNAPSHOTS_MASTER_KEY to " + (
            f"the key in {backup_key}"
            if backup_key is not None
            else "the master key in force when the backup was taken"
        )
    else:
        bad = _undecryptable(database, _key_file_keys(settings))
        fix = (
            "put the master key in force when the backup was taken in "
            f"{vault.key_file(settings)} (0600), or set SNAPSHOTS_MASTER_KEY to it"
        )
    if not bad:
        return None
    return (
        f"the master key in force does not decrypt the Stripe secrets of {bad} restored "
        f"connection(s): {fix}, before starting snapshots"
    )


# -- PostgreSQL ----------------------------------------------------------------------------

PASSWORD_PLACEHOLDER = "PGPASSWORD='<password>' "


def postgres_commands(url: str, file: Path | str = "snapshots.dump") -> list[str]:
    """The `pg_dump` and `pg_restore` command lines (in that order) for the PostgreSQL
    database at `url`, shell-quoted, with `file` as the dump. The password is never in them:
    when the URL has one they start with a `PGPASSWORD='<password>'` placeholder to fill in
    (or leave it out and use ~/.pgpass)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise errors.ConfigError(f"bad database URL: {exc}") from exc
    query = {
        key: value if isinstance(value, str) else value[-1]
        for key, value in parsed.query.items()
        if key != "password"
    }
    if not parsed.database:
        raise errors.ConfigError("the database URL names no database")
    connect = []
    if parsed.host:
        connect += ["--host", parsed.host]
    if parsed.port:
        connect += ["--port", str(parsed.port)]
    if parsed.username:
        connect += ["--username", parsed.username]
    if query:  # sslmode and the like: a libpq connection string carries them
        conninfo = {"dbname": parsed.database, **query}
        connect += ["--dbname", " ".join(f"{k}={_libpq_quote(v)}" for k, v in conninfo.items())]
    else:
        connect += ["--dbname", parsed.database]
    dump = os.fspath(Path(file).absolute())
    prefix = PASSWORD_PLACEHOLDER if parsed.password or "password" in parsed.query else ""
    return [
        prefix + shlex.join(["pg_dump", "--format=custom", "--file", dump, *connect]),
        prefix + shlex.join(["pg_restore", "--clean", "--if-exists", "--no-owner", *connect, dump]),
    ]


def _libpq_quote(value: str) -> str:
    """A value in a libpq key=value connection string."""
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- helpers -------------------------------------------------------------------------------


def _sqlite_path(settings: Settings) -> Path:
    path = settings.sqlite_path
    if path is None:
        raise errors.ConfigError(
            "backup and restore work on a SQLite database file or PostgreSQL; "
            f"{settings.database_url.split(':', 1)[0]} is neither"
        )
    return path


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _own_files(settings: Settings, database: Path) -> set[Path]:
    """The database file and every file kept beside it, resolved."""
    own = [database, lock.path_for(database)]
    own += [database.with_name(database.name + s) for s in SIDECARS]
    key = vault.key_file(settings)
    if key is not None:
        own += [key, key.with_name(key.name + ".new")]
    return {_real(p) for p in own}


def _uri(path: Path) -> str:
    """A read-only SQLite URI: reading a backup or the live database never writes to it."""
    return path.absolute().as_uri() + "?mode=ro"


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(_uri(path), uri=True, timeout=store.BUSY_TIMEOUT / 1000)
    try:
        yield conn
    finally:
        conn.close()


def _copy(source: Path, target: Path) -> None:
    """Copy `source` into the empty file `target` with SQLite's online backup API.

    One step (`pages=-1`) is one read transaction on the source: in WAL mode writers go on,
    and the copy is the database as of that transaction. (In several steps a write between two
    of them would restart the copy, forever under a steady load.) The copy is left in rollback
    journal mode: one self-contained file."""
    try:
        with _connect(source) as src:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
    except sqlite3.Error as exc:
        raise errors.ConfigError(f"cannot copy {source} to {target.parent}: {exc}") from exc


def _inspect(path: Path, *, shown: Path) -> str:
    """The schema revision of the Snapshots database file `path` (called `shown` in errors),
    after `PRAGMA quick_check`. Raises errors.BadRequest saying what is wrong with it."""
    try:
        with path.open("rb") as f:
            header = f.read(len(MAGIC))
    except OSError as exc:
        raise errors.BadRequest(f"cannot read {shown}: {exc.strerror}") from exc
    if header != MAGIC:
        raise errors.BadRequest(f"{shown} is not a SQLite database (nor a snapshots backup)")
    try:
        with _connect(path) as conn:
            checked = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
            if checked != ["ok"]:
                raise errors.BadRequest(f"{shown} is damaged: quick_check says {checked[0]}")
            try:
                rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            except sqlite3.OperationalError as exc:
                raise errors.BadRequest(
                    f"{shown} is a SQLite database but not a snapshots one "
                    "(it has no alembic_version table)"
                ) from exc
    except sqlite3.DatabaseError as exc:
        raise errors.BadRequest(f"{shown} is not a readable SQLite database: {exc}") from exc
    if len(rows) != 1:
        raise errors.BadRequest(f"{shown} holds no single schema revision: not a snapshots one")
    revision = str(rows[0][0])
    head, known = store.revisions()
    if revision not in known:
        raise errors.BadRequest(
            f"{shown}: this backup is from a newer Snapshots (schema revision {revision}; "
            f"this one knows up to {head}): upgrade first"
        )
    return revision


def _undecryptable(database: Path, keys: list[str]) -> int:
    """How many connections in `database` have a secret that `keys` do not decrypt."""
    with _connect(database) as conn:
        rows = conn.execute("SELECT secret_key, webhook_secrets FROM connections").fetchall()
    if not rows:
        return 0
    try:
        secrets = vault.Vault(*keys)
    except errors.ConfigError:  # no key, or not a Fernet key
        return len(rows)
    bad = 0
    for secret_key, webhook_secrets in rows:
        try:
            secrets.decrypt(secret_key)
            secrets.decrypt(webhook_secrets)
        except errors.ConfigError:
            bad += 1
    return bad


def _key_file_keys(settings: Settings) -> list[str]:
    """The keys of the master key file, the pending one of a half-done rotation first (as
    `vault.load` tries them); none when there is no key file."""
    path = vault.key_file(settings)
    if path is None:
        return []
    keys = []
    for candidate in (path.with_name(path.name + ".new"), path):
        try:
            keys += _split(candidate.read_text())
        except FileNotFoundError:
            continue
    return _unique(keys)


def _read_key(path: Path) -> str:
    """The key file of a backup, checked: one or more comma-separated Fernet keys."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.BadRequest(f"cannot read the backup's master key {path}: {exc}") from exc
    keys = _split(text)
    try:
        vault.Vault(*keys)
    except errors.ConfigError as exc:
        raise errors.BadRequest(f"{path} holds no master key: {exc}") from exc
    return ",".join(keys) + "\n"


def _split(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _temporary(final: Path) -> Path:
    """A new empty 0600 file beside `final` to write it in (a leftover one is replaced)."""
    temporary = final.with_name(final.name + ".tmp")
    _remove(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    os.close(fd)
    return temporary


def _remove(database: Path) -> None:
    for path in [database, *(database.with_name(database.name + s) for s in SIDECARS)]:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file whole or not at all (a temporary file, then a rename)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _stamp(database: Path) -> str:
    """`before-restore-<UTC time>`, made unique among the files already set aside."""
    base = ASIDE + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stamp, n = base, 1
    while any(p.name.startswith(database.name) and stamp in p.name for p in _siblings(database)):
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _siblings(path: Path) -> list[Path]:
    return list(path.parent.iterdir()) if path.parent.is_dir() else []


def _move_aside(main: Path, companions: list[Path], stamp: str) -> list[Path]:
    """Rename `main` to `<main><stamp>` and each companion `<main><suffix>` to
    `<main><stamp><suffix>` (so SQLite still finds a database's -wal beside it); returns the
    new names of the files that existed."""
    kept = []
    for path in [main, *companions]:
        suffix = path.name[len(main.name) :]
        aside = main.with_name(main.name + stamp + suffix)
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            continue
        kept.append(aside)
    return kept
