"""`backup.py`: a consistent copy of a live SQLite database and its master key, a restore that
refuses while snapshots runs and keeps what it replaces, and the pg_dump / pg_restore commands
for PostgreSQL (run for real against the test server)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots import backup, connections, errors, inbox, vault
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import lock
from tests.conftest import ACCOUNT, WEBHOOK_SECRET

SNAPSHOTS = str(Path(sys.executable).with_name("snapshots"))
PAYLOAD = b'{"object": "event"}' + b" " * 2000  # bulk, so copying takes a moment


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    """A SQLite deployment whose master key is the key file beside the database."""
    return Settings(database_url=sqlite_url)


@pytest.fixture
def db(settings: Settings) -> Iterator[store.Database]:
    database = store.Database(settings.database_url)
    yield database
    database.dispose()


def db_path(settings: Settings) -> Path:
    path = settings.sqlite_path
    assert path is not None
    return path


def connect(db: store.Database, settings: Settings, name: str = "shop") -> str:
    """A connection with encrypted secrets (the vault makes the key file on first use)."""
    with db.write() as tx:
        return connections.add(
            tx,
            vault.load(settings),
            account=ACCOUNT,
            secret_key="sk_test_backup1234",
            webhook_secrets=[WEBHOOK_SECRET],
            name=name,
        ).id


def add_items(db: store.Database, first: int, count: int) -> None:
    with db.write() as conn:
        inbox.enqueue_many(
            conn,
            [
                inbox.Arrival(
                    "conn_x",
                    {"id": f"evt_{n:07d}", "type": "customer.updated", "created": 1},
                    PAYLOAD,
                    "webhook",
                    True,
                )
                for n in range(first, first + count)
            ],
        )


def event_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM inbox_items ORDER BY event_id")]
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
    env["SNAPSHOTS_DATABASE_URL"] = settings.database_url
    if settings.master_key:
        env["SNAPSHOTS_MASTER_KEY"] = settings.master_key
    return subprocess.run(
        [SNAPSHOTS, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    return lines[0]


# -- backup ----------------------------------------------------------------------------------


def test_a_backup_while_writers_go_on_holds_everything_committed_before_it(
    settings: Settings, db: store.Database, tmp_path: Path
) -> None:
    for first in range(0, 20_000, 2_000):  # about 45 MB: the copy takes a while
        add_items(db, first, 2_000)
    committed: list[str] = []
    stop = threading.Event()

    def write() -> None:
        n = 1_000_000
        while not stop.is_set():
            add_items(db, n, 1)
            committed.append(f"evt_{n:07d}")  # only once its transaction has committed
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(committed) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = list(committed)
        result = backup.backup(settings, tmp_path / "copy.db")
        during = len(committed) - len(before)
    finally:
        stop.set()
        writer.join(30)
    copied = event_ids(result.database)
    new = [e for e in copied if e >= "evt_1000000"]
    assert set(before) <= set(new), "an item committed before the backup began is missing"
    # One moment of the database: the writer's items up to some point, none after it.
    assert new == committed[: len(new)]
    assert len(copied) - len(new) == 20_000
    assert integrity(result.database) == ["ok"]
    assert during > 0, "the writer was blocked while the backup ran"
    assert result.revision == store.revisions()[0]
    assert result.size == result.database.stat().st_size


def test_the_copy_and_the_key_are_private_and_the_key_decrypts_the_copy(
    settings: Settings, db: store.Database, tmp_path: Path
) -> None:
    connect(db, settings)
    old_umask = os.umask(0o022)
    try:
        result = backup.backup(settings, tmp_path / "copy.db")
    finally:
        os.umask(old_umask)
    assert result.key_source == "file"
    assert result.key_file == tmp_path / "copy.db.key"
    assert mode(result.database) == 0o600 and mode(result.key_file) == 0o600
    key_file = vault.key_file(settings)
    assert key_file is not None
    assert result.key_file.read_text() == key_file.read_text()
    assert not result.warnings
    # A single self-contained file: no -wal beside it, no temporary file left.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == [
        "copy.db",
        "copy.db.key",
    ]


def test_a_half_done_master_key_rotation_puts_both_keys_beside_the_copy(
    settings: Settings, db: store.Database, tmp_path: Path
) -> None:
    connect(db, settings)
    key_file = vault.key_file(settings)
    assert key_file is not None
    old = key_file.read_text().strip()
    new = Fernet.generate_key().decode()
    # vault.rotate's state after a crash between its commit and its rename.
    key_file.with_name(key_file.name + ".new").write_text(new + "\n")
    result = backup.backup(settings, tmp_path / "copy.db")
    assert result.key_file is not None
    assert result.key_file.read_text() == f"{new},{old}\n"
    both = vault.Vault(result.key_file.read_text())
    assert both.decrypt(vault.Vault(old).encrypt("a")) == "a"
    assert both.decrypt(vault.Vault(new).encrypt("b")) == "b"


@pytest.mark.acceptance
def test_with_snapshots_master_key_no_key_file_is_written(sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=sqlite_url, master_key=Fernet.generate_key().decode())
    database = store.Database(sqlite_url)
    try:
        connect(database, settings)
    finally:
        database.dispose()
    (tmp_path / "copy.db.key").write_text(Fernet.generate_key().decode())  # an older backup's
    result = backup.backup(settings, tmp_path / "copy.db", force=True)
    assert (result.key_source, result.key_file, result.warnings) == ("env", None, ())
    assert not (tmp_path / "copy.db.key").exists(), "a stale key beside the new copy"
    wrong = settings.model_copy(update={"master_key": Fernet.generate_key().decode()})
    (warning,) = backup.backup(wrong, tmp_path / "wrong.db").warnings
    assert warning.startswith(
        "the Stripe secrets of 1 connection(s) in the backup do not decrypt with "
        "SNAPSHOTS_MASTER_KEY"
    )
    done = run_cli(settings, "backup", str(tmp_path / "again.db"))
    assert done.returncode == 0, done.stderr
    assert (
        "the secrets in it decrypt only with SNAPSHOTS_MASTER_KEY: keep that key with the backup"
        in done.stdout
    )


@pytest.mark.acceptance
def test_an_existing_destination_is_refused_without_force(
    settings: Settings, db: store.Database, tmp_path: Path
) -> None:
    connect(db, settings)
    dest = tmp_path / "copy.db"
    dest.write_text("precious")
    with pytest.raises(errors.Conflict, match="exists: give --force to overwrite it"):
        backup.backup(settings, dest)
    assert dest.read_text() == "precious"
    line = one_line_error(run_cli(settings, "backup", str(dest)))
    assert line == f"error: {dest} exists: give --force to overwrite it"
    done = run_cli(settings, "backup", str(dest), "--force")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"backed up {db_path(settings)} to {dest} (")
    assert lines[1].startswith(f"master key copied to {dest}.key (0600): keep it with the backup")
    assert integrity(dest) == ["ok"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("snapshots.db", "is a file of the database itself", id="the-database"),
        pytest.param("snapshots.db-wal", "is a file of the database itself", id="its-wal"),
        pytest.param("missing/copy.db", "is not a directory: create it first", id="no-directory"),
    ],
)
def test_a_bad_destination_is_refused(settings: Settings, name: str, expected: str) -> None:
    with pytest.raises(errors.BadRequest, match=expected):
        backup.backup(settings, db_path(settings).parent / name, force=True)


# -- restore ---------------------------------------------------------------------------------


@pytest.fixture
def made(settings: Settings, db: store.Database, tmp_path: Path) -> backup.Result:
    """A backup of a database with a connection and 10 inbox items."""
    connect(db, settings)
    add_items(db, 0, 10)
    backups = tmp_path / "backups"
    backups.mkdir()
    return backup.backup(settings, backups / "copy.db")


def kept_as(result: backup.Result, name: str) -> Path:
    """Where a restore put the file `name` aside."""
    (found,) = [
        p
        for p in result.kept
        if p.name.split(backup.ASIDE)[0] == name and p.name[-4:] not in ("-wal", "-shm", ".new")
    ]
    return found


@pytest.mark.acceptance
def test_restore_puts_the_backup_back_and_keeps_the_database_it_replaces(
    settings: Settings, db: store.Database, made: backup.Result
) -> None:
    db.dispose()
    path = db_path(settings)
    # After the backup, 5 more items that only the -wal holds (as after a crash of serve):
    # lost by the restore, but kept aside with the database.
    writes = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "for n in range(10, 15):\n"
        '    conn.execute("INSERT INTO inbox_items (connection_id, event_id, event_type, '
        "event_created, livemode, source, status, run_after, received_at) "
        "VALUES ('conn_x', ?, 't', 1, 0, 'webhook', 'pending', 0, 0)\", "
        "(f'evt_{n:07d}',))\n"
        "conn.commit()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", writes, str(path)], check=True, timeout=60)
    assert path.with_name(path.name + "-wal").stat().st_size > 0
    result = backup.restore(settings, made.database)
    assert event_ids(path) == [f"evt_{n:07d}" for n in range(10)]
    assert mode(path) == 0o600
    aside = kept_as(result, "snapshots.db")
    assert aside.name.startswith("snapshots.db.before-restore-")
    assert aside.with_name(aside.name + "-wal").exists()
    assert len(event_ids(aside)) == 15, "the replaced database (with its -wal) is intact"
    assert result.revision == made.revision and result.upgraded_to is None
    assert not result.warnings
    database = store.Database(settings.database_url)
    try:
        with database.read() as tx:
            (conn,) = connections.list_all(tx, vault.load(settings))
    finally:
        database.dispose()
    assert conn.name == "shop"


def test_restore_refuses_while_a_snapshots_process_holds_the_database(
    settings: Settings, made: backup.Result
) -> None:
    path = db_path(settings)
    before = sorted(p.name for p in path.parent.iterdir())
    with lock.shared(path):  # what serve, worker and sync hold for their lifetime
        with pytest.raises(errors.Conflict) as refused:
            backup.restore(settings, made.database)
        assert str(refused.value) == (
            "the database is in use by a running snapshots process (serve, worker or sync): "
            "stop them first"
        )
        assert sorted(p.name for p in path.parent.iterdir()) == before, "nothing was touched"
    backup.restore(settings, made.database)


@pytest.mark.acceptance
def test_a_running_worker_process_blocks_restore_until_it_stops(
    settings: Settings, made: backup.Result, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
    env |= {"SNAPSHOTS_DATABASE_URL": settings.database_url, "SNAPSHOTS_WORKER_IDLE": "0.05"}
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([SNAPSHOTS, "worker"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:  # the worker is up once its lock is held
            try:
                lock.exclusive(db_path(settings)).release()
            except errors.Conflict:
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        line = one_line_error(run_cli(settings, "restore", str(made.database)))
        assert "in use by a running snapshots process" in line
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert worker.returncode == 0
    done = run_cli(settings, "restore", str(made.database))
    assert done.returncode == 0, done.stderr


@pytest.mark.acceptance
def test_no_snapshots_process_starts_while_a_restore_runs(settings: Settings) -> None:
    with lock.exclusive(db_path(settings)):
        for command in (["worker"], ["sync"], ["serve", "--port", "1"]):
            line = one_line_error(run_cli(settings, *command))
            assert line == (
                "error: a restore of this database is in progress: start again when it has finished"
            ), command


def test_restore_installs_the_backups_key_and_keeps_the_previous_one(
    made: backup.Result, tmp_path: Path
) -> None:
    home = tmp_path / "other"
    settings = Settings(database_url=f"sqlite:///{home / 'snapshots.db'}")
    home.mkdir()
    database = store.Database(settings.database_url)
    store.migrate(database)
    connect(database, settings, name="other")  # its own, different key file
    database.dispose()
    key_file = vault.key_file(settings)
    assert key_file is not None
    previous = key_file.read_text()
    key_file.with_name(key_file.name + ".new").write_text(Fernet.generate_key().decode())
    result = backup.restore(settings, made.database)
    assert made.key_file is not None and result.key_file == key_file
    assert key_file.read_text() == made.key_file.read_text() and mode(key_file) == 0o600
    assert kept_as(result, "snapshots.db.key").read_text() == previous
    assert not key_file.with_name(key_file.name + ".new").exists(), "a stale pending key"
    assert not result.warnings
    database = store.Database(settings.database_url)
    try:
        with database.read() as tx:
            (conn,) = connections.list_all(tx, vault.load(settings))
    finally:
        database.dispose()
    assert conn.name == "shop"


@pytest.mark.acceptance
def test_restore_warns_when_the_master_key_does_not_decrypt_the_secrets(
    settings: Settings, made: backup.Result, tmp_path: Path
) -> None:
    assert made.key_file is not None
    made.key_file.unlink()  # the operator did not keep the key
    other = Settings(
        database_url=f"sqlite:///{tmp_path / 'fresh' / 'snapshots.db'}",
        master_key=Fernet.generate_key().decode(),
    )
    result = backup.restore(other, made.database)
    (warning,) = result.warnings
    assert warning.startswith(
        "the master key in force does not decrypt the Stripe secrets of 1 restored connection(s): "
        "set SNAPSHOTS_MASTER_KEY to the master key in force when the backup was taken"
    )
    done = run_cli(other, "restore", str(made.database))
    assert done.returncode == 0
    assert done.stderr.startswith("warning: the master key in force does not decrypt")


def test_a_backup_from_a_newer_snapshots_is_refused(
    settings: Settings, made: backup.Result
) -> None:
    conn = sqlite3.connect(made.database)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    conn.close()
    with pytest.raises(errors.BadRequest, match="this backup is from a newer Snapshots") as e:
        backup.restore(settings, made.database)
    assert str(e.value).endswith(": upgrade first")
    assert len(event_ids(db_path(settings))) == 10, "the database is untouched"


@pytest.mark.acceptance
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"id,name\n1,Ada\n", "is not a SQLite database", id="csv"),
        pytest.param(b"", "is not a SQLite database", id="empty"),
        pytest.param(b"SQLite format 3\x00" + b"\x00" * 200, "is not a readable", id="damaged"),
        pytest.param(None, "not a snapshots one", id="other"),
    ],
)
def test_a_file_that_is_not_a_snapshots_backup_is_refused_in_one_line(
    settings: Settings, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    source = tmp_path / "not-a-backup"
    if content is None:
        conn = sqlite3.connect(source)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
    else:
        source.write_bytes(content)
    with pytest.raises(errors.BadRequest, match=expected):
        backup.restore(settings, source)
    line = one_line_error(run_cli(settings, "restore", str(source)))
    assert line.startswith(f"error: {source}") and expected in line


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "connect_args", "password"),
    [
        pytest.param(
            "postgresql://snap:s3cret@db.example.com:6543/snapshots",
            [
                "--host",
                "db.example.com",
                "--port",
                "6543",
                "--username",
                "snap",
                "--dbname",
                "snapshots",
            ],
            "s3cret",
            id="plain",
        ),
        pytest.param(
            "postgresql+psycopg://o%27brien:p%40ss%27%3B%20rm%20-rf@h/my%20db%3B",
            ["--host", "h", "--username", "o'brien", "--dbname", "my db;"],
            "p@ss'; rm -rf",
            id="quotes-and-spaces",
        ),
        pytest.param(
            "postgresql://snap@/snap?host=/var/run/postgresql&sslmode=require&password=hunter2",
            [
                "--username",
                "snap",
                "--dbname",
                "dbname=snap host=/var/run/postgresql sslmode=require",
            ],
            "hunter2",
            id="query-parameters",
        ),
        pytest.param(
            "postgresql://postgres@127.0.0.1:5432/test",
            ["--host", "127.0.0.1", "--port", "5432", "--username", "postgres", "--dbname", "test"],
            None,
            id="no-password",
        ),
    ],
)
def test_postgres_commands_are_quoted_and_never_show_the_password(
    url: str, connect_args: list[str], password: str | None, tmp_path: Path
) -> None:
    file = tmp_path / "it's a dump"
    dump, restore = backup.postgres_commands(url, file)
    for line in (dump, restore):
        if password:
            assert password not in line
            assert line.startswith("PGPASSWORD='<password>' ")
        else:
            assert "PGPASSWORD" not in line
    tokens = [
        shlex.split(line.removeprefix(backup.PASSWORD_PLACEHOLDER)) for line in (dump, restore)
    ]
    assert tokens[0] == ["pg_dump", "--format=custom", "--file", str(file), *connect_args]
    assert tokens[1] == [
        "pg_restore",
        "--clean",
        "--if-exists",
        "--no-owner",
        *connect_args,
        str(file),
    ]


@pytest.mark.acceptance
def test_backup_and_restore_print_the_commands_for_postgres_and_do_nothing_else(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url="postgresql://snap:s3cret@127.0.0.1:1/snapshots")
    for command in ("backup", "restore"):
        done = run_cli(settings, command, str(tmp_path / "snap.dump"))
        assert done.returncode == 0, done.stderr
        assert "s3cret" not in done.stdout + done.stderr
        assert "SNAPSHOTS_MASTER_KEY" in done.stdout
        assert ("pg_restore --clean" in done.stdout) and (
            ("pg_dump --format=custom" in done.stdout) == (command == "backup")
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.acceptance
@pytest.mark.postgres
def test_the_printed_postgres_commands_dump_and_restore_a_real_database(
    postgres_url: str, tmp_path: Path
) -> None:
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump and pg_restore are not installed")
    source = store.Database(postgres_url)
    settings = Settings(database_url=postgres_url, master_key=Fernet.generate_key().decode())
    copy_name = f"snapshots_restore_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(sa.make_url(postgres_url), isolation_level="AUTOCOMMIT")
    copy_url = sa.make_url(postgres_url).set(database=copy_name).render_as_string(False)
    try:
        with source.write() as conn:
            conn.exec_driver_sql("TRUNCATE inbox_items")
        add_items(source, 0, 25)
        file = tmp_path / "snap shot.dump"
        dump, _ = backup.postgres_commands(settings.database_url, file)
        subprocess.run(dump, shell=True, check=True, timeout=120, capture_output=True)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{copy_name}"')
        _, restore = backup.postgres_commands(copy_url, file)
        subprocess.run(restore, shell=True, check=True, timeout=120, capture_output=True)
        copy = store.Database(copy_url)
        try:
            assert store.is_migrated(copy)
            with copy.read() as conn:
                count = conn.exec_driver_sql("SELECT count(*) FROM inbox_items").scalar()
        finally:
            copy.dispose()
        assert count == 25
    finally:
        source.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)')
        admin.dispose()
