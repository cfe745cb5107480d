"""A key rotation is one change: the process killed between its steps (the new key issued, the
old one's expiry moved, the `key.rotated` audit entry) leaves the old state or the new one,
never two active keys without an audit entry. The kill is a real one (`os._exit` in a child
process, in the middle of the transaction), on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from snapshots import keys
from snapshots.store import tables
from snapshots.store.db import Database

pytestmark = pytest.mark.acceptance  # each test kills a real child process

ROTATE = textwrap.dedent(
    """
    import os, sys
    from snapshots import audit, keys
    from snapshots.store.db import Database

    url, key_id, kill_at = sys.argv[1:4]
    record = audit.record

    def dying(tx, **entry):
        if entry.get("action") == kill_at:
            os._exit(9)  # no cleanup, no rollback: the process is gone
        return record(tx, **entry)

    audit.record = dying
    with Database(url).write() as tx:
        keys.rotate(tx, key_id, overlap=3600, actor="cli:test")
    """
)


def rotate_in_a_child(url: str, key_id: str, kill_at: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", ROTATE, url, key_id, kill_at],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode


def state(db: Database) -> tuple[list[tuple[str, str]], list[str]]:
    """(id, status) of every key, and the actions of every audit entry about keys."""
    with db.read() as tx:
        found = [(k.id, k.status) for k in keys.list_all(tx)]
        actions = list(
            tx.execute(
                sa.select(tables.audit_entries.c.action)
                .where(tables.audit_entries.c.action.like("key.%"))
                .order_by(tables.audit_entries.c.id)
            ).scalars()
        )
    return found, actions


@pytest.mark.parametrize(
    "kill_at",
    [
        pytest.param("key.created", id="after-the-new-key-is-issued"),
        pytest.param("key.rotated", id="after-the-old-key-is-expired"),
    ],
)
def test_a_rotation_killed_half_way_leaves_the_old_state(
    db: Database, database_url: str, kill_at: str
) -> None:
    with db.write() as tx:
        old = keys.create(tx, name="crm", scopes=["contacts.readonly"], actor="cli:test")
    before = state(db)
    assert before == ([(old.id, "active")], ["key.created"])
    assert rotate_in_a_child(database_url, old.id, kill_at) == 9
    assert state(db) == before


def test_a_rotation_that_finishes_leaves_the_new_state(db: Database, database_url: str) -> None:
    with db.write() as tx:
        old = keys.create(tx, name="crm", scopes=["contacts.readonly"], actor="cli:test")
    assert rotate_in_a_child(database_url, old.id, "none") == 0
    found, actions = state(db)
    assert [status for _, status in found] == ["active", "active"]  # the old one for the overlap
    assert actions == ["key.created", "key.created", "key.rotated"]
    with db.read() as tx:
        assert keys.get(tx, old.id).expires_at is not None
