"""Where a request's read of the database runs: in the event loop or in the thread pool.

On SQLite a bounded read (a lookup by key, a page walked along an index) runs in the event loop
itself: it is CPU work in this process, and in a thread it would trade the GIL with the busy
loop at every step SQLite takes (a row each; two context switches a time), which cost a page of
100 more CPU than the page itself. PostgreSQL's reads wait on the network, and a read that may
scan a table takes long: those run in the thread pool, so the loop serves other requests
meanwhile (as `intake.GroupCommit` writes on SQLite from the loop and on PostgreSQL from a
thread). Shared by the API and the console, which never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from snapshots.store.db import Database

T = TypeVar("T")


async def read(db: Database, work: Callable[[], T], *, bounded: bool = True) -> T:
    """`work()` (a read of `db`), in the event loop when it is `bounded` and `db` is SQLite,
    else in the thread pool."""
    if bounded and db.dialect == "sqlite":
        return work()
    return await run_in_threadpool(work)
