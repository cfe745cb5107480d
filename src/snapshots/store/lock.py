"""Who is using a SQLite database file: an advisory `flock` on `<database>.lock` (0600).

Every long-running process that opens the database (`serve`, its embedded worker, `worker`,
`sync`) holds a shared lock for its lifetime; `restore` takes the exclusive lock without
waiting, so it refuses while any of them runs, and while it holds it none of them can start.
The kernel drops a lock when its process exits however it exits (even SIGKILL), so a crash
never leaves the database marked as in use. PostgreSQL databases need no lock file (`None`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from snapshots import errors

IN_USE = (
    "the database is in use by a running snapshots process (serve, worker or sync): stop them first"
)
RESTORING = "a restore of this database is in progress: start again when it has finished"


def path_for(database: Path) -> Path:
    """The lock file of a SQLite database file."""
    return database.with_name(database.name + ".lock")


class Held:
    """A lock taken on a lock file, or nothing (no SQLite file); `release()` is idempotent."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases the flock

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _take(database: Path | None, operation: int, refused: str) -> Held:
    if database is None:
        return Held(None)
    path = path_for(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        # "Resource temporarily unavailable" would add nothing to the one line the CLI prints.
        raise errors.Conflict(refused, code="database_in_use") from None
    except BaseException:
        os.close(fd)
        raise
    return Held(fd)


def shared(database: Path | None) -> Held:
    """Mark the database as in use for as long as the result is held (a process's lifetime).

    Raises errors.Conflict at once when a restore holds the exclusive lock."""
    return _take(database, fcntl.LOCK_SH, RESTORING)


def exclusive(database: Path | None) -> Held:
    """Take the database for a restore. Raises errors.Conflict at once when a snapshots
    process holds a shared lock (or another restore runs)."""
    return _take(database, fcntl.LOCK_EX, IN_USE)
