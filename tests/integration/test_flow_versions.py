"""Flows as versioned configuration, on SQLite and PostgreSQL: import, rollback, the history,
the audit entries, `Live` following new versions, a worker applying each batch with the flows in
force, and the CLI (`flows export/import/rollback/versions`, `mappings show/test`), run
in-process as `snapshots.cli.main([...])`."""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import connections, errors, flowfile, flows, intake, revisions, worker
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, fixture
from tests.integration.helpers import Cli

T0 = 1_700_000_000
PREBUILT_NAMES = [flow.name for flow in flowfile.load().flows]

CUSTOM = textwrap.dedent(
    """\
    # A custom flows file: contacts with an upper-case name.
    flows:
      - name: people
        trigger: [customer.created, customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          email: email
          name: upper(name)
    """
)
RENAMED = textwrap.dedent(
    """\
    flows:
      - name: people
        trigger: [customer.created, customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          email: email
          phone: name
    """
)
# Two problems, on lines 4 and 11.
BAD = textwrap.dedent(
    """\
    flows:
      - name: one
        trigger: customer.created
        action: upsert_kontakt
        fields:
          stripe_customer_id: id
      - name: two
        trigger: customer.created
        action: upsert_contact
        fields:
          stripe_customer_id: "id[["
    """
)


def audit_entries(db: Database) -> list[Any]:
    t = tables.audit_entries
    with db.read() as conn:
        return list(
            conn.execute(sa.select(t).where(t.c.action.like("flows.%")).order_by(t.c.id)).all()
        )


def stored_versions(db: Database) -> list[int]:
    t = tables.flow_versions
    with db.read() as conn:
        return list(conn.execute(sa.select(t.c.version).order_by(t.c.version)).scalars())


def current(db: Database) -> flows.Registry:
    with db.read() as tx:
        return revisions.current(tx)


def current_version(db: Database) -> int:
    with db.read() as tx:
        return revisions.current_version(tx)


def get_revision(db: Database, version: int | None = None) -> revisions.Revision:
    with db.read() as tx:
        return revisions.get_revision(tx, version)


def listed(db: Database) -> list[revisions.Revision]:
    with db.read() as tx:
        return revisions.revisions(tx, with_text=True)


def names(registry: flows.Registry) -> list[str]:
    return [flow.name for flow in registry.flows]


# Versions in the database.


def test_with_nothing_imported_the_prebuilt_flows_are_version_0(db: Database) -> None:
    registry = current(db)
    assert registry.version == 0
    assert names(registry) == PREBUILT_NAMES
    assert current_version(db) == 0
    (only,) = listed(db)
    assert (only.version, only.actor, only.comment) == (0, "snapshots", revisions.PREBUILT)
    assert only.text == flowfile.default_text()


def test_import_puts_a_new_version_in_force_with_an_audit_entry(db: Database) -> None:
    stored = revisions.import_text(
        db, CUSTOM, where="custom.yaml", actor="tester", comment="why"
    ).revision
    assert (stored.version, stored.actor, stored.comment, stored.text) == (
        1,
        "tester",
        "why",
        CUSTOM,
    )
    registry = current(db)
    assert registry.version == 1
    assert names(registry) == ["people"]
    (entry,) = audit_entries(db)
    assert (entry.actor, entry.action, entry.target, entry.outcome) == (
        "tester",
        "flows.imported",
        "flows:1",
        "ok",
    )
    assert entry.details == {"old_version": 0, "new_version": 1, "comment": "why"}


def test_a_bad_file_imports_nothing(db: Database) -> None:
    with pytest.raises(flowfile.Invalid) as caught:
        revisions.import_text(db, BAD, where="bad.yaml", actor="tester")
    assert "bad.yaml:4: flow 'one'" in str(caught.value)
    assert "bad.yaml:11: flow 'two'" in str(caught.value)
    assert current_version(db) == 0
    assert stored_versions(db) == []
    assert audit_entries(db) == []
    # Nor over an imported version.
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    with pytest.raises(flowfile.Invalid):
        revisions.import_text(db, "flows: [", where="bad.yaml", actor="tester")
    assert current(db).version == 1
    assert stored_versions(db) == [1]
    assert len(audit_entries(db)) == 1


def test_rollback_imports_an_earlier_version_again(db: Database) -> None:
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    stored = revisions.rollback(db, 0, actor="admin").revision
    assert stored.version == 2
    assert stored.text == flowfile.default_text()
    assert stored.comment == "rollback to version 0"
    registry = current(db)
    assert registry.version == 2
    assert names(registry) == PREBUILT_NAMES
    entry = audit_entries(db)[-1]
    assert (entry.actor, entry.action, entry.target) == ("admin", "flows.rolled_back", "flows:2")
    assert entry.details["old_version"] == 1
    assert entry.details["new_version"] == 2
    # Back to the custom flows: a third version, history intact.
    assert revisions.rollback(db, 1, actor="admin").revision.version == 3
    assert names(current(db)) == ["people"]
    assert stored_versions(db) == [1, 2, 3]


def test_a_long_comment_is_returned_as_it_is_stored(db: Database) -> None:
    stored = revisions.import_text(
        db, CUSTOM, where="custom.yaml", actor="tester", comment="c" * 600
    ).revision
    assert stored.comment == get_revision(db, 1).comment


def test_rollback_to_an_unknown_version_is_not_found(db: Database) -> None:
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    with pytest.raises(errors.NotFound, match="no flows version 7"):
        revisions.rollback(db, 7, actor="admin")
    assert current_version(db) == 1
    assert len(audit_entries(db)) == 1


def test_versions_newest_first_and_get_version(db: Database) -> None:
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="a", comment="first")
    revisions.import_text(db, RENAMED, where="renamed.yaml", actor="b")
    found = listed(db)
    assert [v.version for v in found] == [2, 1, 0]
    assert [v.actor for v in found] == ["b", "a", "snapshots"]
    assert [v.comment for v in found] == [None, "first", revisions.PREBUILT]
    assert found[0].created_at is not None and found[-1].created_at is None
    assert get_revision(db).version == 2
    assert get_revision(db, 1).text == CUSTOM
    assert get_revision(db, 2).text == RENAMED
    assert get_revision(db, 0).text == flowfile.default_text()
    with pytest.raises(errors.NotFound):
        get_revision(db, 3)
    shown = found[1].model_dump(mode="json")
    assert shown == {
        "version": 1,
        "actor": "a",
        "comment": "first",
        "created_at": shown["created_at"],
        "text": CUSTOM,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", shown["created_at"])


def test_live_with_no_ttl_follows_every_new_version(db: Database) -> None:
    live = revisions.Live(db, ttl=0.0)
    assert live().version == 0
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    first = live()
    assert (first.version, names(first)) == (1, ["people"])
    assert live() is first  # not read again while the version is the same
    revisions.rollback(db, 0, actor="tester")
    assert (live().version, names(live())) == (2, PREBUILT_NAMES)


class Clock:
    """Stands in for the `time` module in snapshots.revisions: a monotonic clock tests move."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


def test_live_looks_for_a_new_version_once_its_ttl_has_passed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(revisions, "time", clock)
    live = revisions.Live(db, ttl=60.0)
    assert live().version == 0
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    assert live().version == 0
    clock.now += 59.0
    assert live().version == 0
    clock.now += 1.5
    assert live().version == 1
    revisions.rollback(db, 0, actor="tester")
    clock.now += 30.0
    assert live().version == 1
    clock.now += 31.0
    assert live().version == 2


def customer_event(event_factory: EventFactory, customer_id: str, created: int) -> dict[str, Any]:
    obj = fixture("customer") | {
        "id": customer_id,
        "email": f"{customer_id}@example.com",
        "name": f"Name of {customer_id}",
        "phone": None,
    }
    return event_factory("customer.created", obj, created=created)


def test_a_worker_applies_each_batch_with_the_flows_in_force(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    live = revisions.Live(db, ttl=0.0)
    applier = worker.Worker(db, live(), settings, live=live)

    def send(event: dict[str, Any]) -> None:
        intake.store(
            db,
            live(),
            connection_id=connection.id,
            event=event,
            payload=json.dumps(event).encode(),
        )

    send(customer_event(event_factory, "cus_first", T0))
    assert applier.step() == 1
    revisions.import_text(db, RENAMED, where="renamed.yaml", actor="tester")
    send(customer_event(event_factory, "cus_second", T0 + 1))
    assert applier.step() == 1
    assert applier.step() == 0
    assert applier.stats.done == 2
    assert applier.registry.version == 2
    t = tables.contacts
    with db.read() as conn:
        rows = {
            r.stripe_customer_id: (r.name, r.phone)
            for r in conn.execute(sa.select(t.c.stripe_customer_id, t.c.name, t.c.phone))
        }
    assert rows == {
        "cus_first": ("NAME OF CUS_FIRST", None),
        "cus_second": (None, "Name of cus_second"),
    }


def applied_by(db: Database, event_id: str) -> tuple[str, int | None]:
    t = tables.inbox_items
    with db.read() as conn:
        row = conn.execute(
            sa.select(t.c.status, t.c.flows_version).where(t.c.event_id == event_id)
        ).one()
    return row.status, row.flows_version


def contact(db: Database, customer_id: str) -> tuple[str | None, str | None]:
    t = tables.contacts
    with db.read() as conn:
        row = conn.execute(
            sa.select(t.c.name, t.c.phone).where(t.c.stripe_customer_id == customer_id)
        ).one()
    return row.name, row.phone


def test_an_event_received_right_after_a_save_is_applied_by_the_saved_version(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    """No wait for `Live`'s ttl: the worker looks again for an item received after its look."""
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    live = revisions.Live(db)  # the worker's: looks every 2 s by itself
    applier = worker.Worker(db, live(), settings, live=live)
    first, second = (customer_event(event_factory, f"cus_{n}", T0 + i) for i, n in enumerate("ab"))
    for event in (first, second):
        if event is second:
            revisions.import_text(db, RENAMED, where="renamed.yaml", actor="tester")
        intake.store(db, live, connection_id=connection.id, event=event, payload=_bytes(event))
        assert applier.step() == 1
    assert applied_by(db, first["id"]) == ("done", 1)
    assert applied_by(db, second["id"]) == ("done", 2)
    assert contact(db, "cus_a") == ("NAME OF CUS_A", None)
    assert contact(db, "cus_b") == (None, "Name of cus_b")


def test_intake_keeps_an_event_only_a_version_saved_a_moment_ago_wants(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    """A server's flows (refreshed by its monitor, seconds apart) that do not want an event
    type: the event is stored pending when a newer version is in force, and the worker applies
    it with that version; with no newer version it is stored ignored, as before."""
    updates_only = CUSTOM.replace("[customer.created, customer.updated]", "customer.updated")
    revisions.import_text(db, updates_only, where="updates.yaml", actor="tester")
    served = revisions.Live(db, follow=False)
    live = revisions.Live(db)
    applier = worker.Worker(db, live(), settings, live=live)
    before, after = (customer_event(event_factory, f"cus_{n}", T0 + i) for i, n in enumerate("ab"))
    intake.store(db, served, connection_id=connection.id, event=before, payload=_bytes(before))
    assert applied_by(db, before["id"]) == ("ignored", None)
    revisions.import_text(db, RENAMED, where="renamed.yaml", actor="tester")
    assert served.version == 1 and not served.wants("customer.created")
    intake.store(db, served, connection_id=connection.id, event=after, payload=_bytes(after))
    assert applied_by(db, after["id"]) == ("pending", None)
    assert applier.step() == 1
    assert applied_by(db, after["id"]) == ("done", 2)
    assert contact(db, "cus_b") == (None, "Name of cus_b")


def _bytes(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


# The CLI.


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def make(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return make


def test_cli_export_prints_the_flows_in_force(
    db: Database, run: Cli, write: Callable[[str, str], Path]
) -> None:
    exported = run("flows", "export")
    assert exported.code == 0, exported.err
    assert exported.out == flowfile.default_text()
    # Export, edit, import: the round trip the README describes.
    edited = exported.out.replace("name: name\n", "name: upper(name)\n", 1)
    assert run("flows", "import", str(write("flows.yaml", edited))).code == 0
    assert run("flows", "export").out == edited
    assert run("flows", "export", "--version", "0").out == flowfile.default_text()
    missing = run("flows", "export", "--version", "5")
    assert missing.code == 2
    assert missing.err == "error: no flows version 5 (see `snapshots flows versions`)\n"


def test_cli_import(db: Database, run: Cli, write: Callable[[str, str], Path]) -> None:
    path = write("custom.yaml", CUSTOM)
    done = run("flows", "import", str(path), "--comment", "upper-case names")
    assert done.code == 0, done.err
    assert " ".join(done.out.split()) == "flows version 1 is in force (1 flows; was version 0)"
    assert current(db).version == 1
    (entry,) = audit_entries(db)
    assert entry.actor.startswith("cli")
    assert entry.details == {"old_version": 0, "new_version": 1, "comment": "upper-case names"}

    shown = run("flows", "import", str(write("renamed.yaml", RENAMED)), "--json").json()
    assert shown["version"] == 2
    assert shown["previous_version"] == 1
    assert shown["actor"] == entry.actor
    assert shown["comment"] is None
    assert shown["endpoints"] == []  # no managed webhook endpoint to update
    assert set(shown) == {
        "version",
        "actor",
        "comment",
        "created_at",
        "previous_version",
        "endpoints",
    }


def test_cli_import_of_a_bad_file_names_each_problem_and_changes_nothing(
    db: Database, run: Cli, write: Callable[[str, str], Path]
) -> None:
    run("flows", "import", str(write("custom.yaml", CUSTOM)))
    path = write("bad.yaml", BAD)
    for args in (["flows", "import", str(path)], ["flows", "import", str(path), "--json"]):
        done = run(*args)
        assert done.code == 2
        assert done.out == ""
        lines = done.err.splitlines()
        assert len(lines) == 2, done.err
        assert lines[0].startswith(f"error: {path}:4: flow 'one': action: unknown action")
        assert lines[1].startswith(f"error: {path}:11: flow 'two': field 'stripe_customer_id': ")
    broken = write("broken.yaml", "flows:\n  - name: [x\n")
    not_yaml = run("flows", "import", str(broken))
    assert not_yaml.code == 2
    (line,) = not_yaml.err.splitlines()
    assert re.match(rf"error: {re.escape(str(broken))}:\d+: not valid YAML: ", line), line
    missing = run("flows", "import", str(path.with_name("missing.yaml")))
    assert missing.code == 2
    assert missing.err.startswith("error: cannot read ")
    assert len(missing.err.splitlines()) == 1
    assert current_version(db) == 1
    assert stored_versions(db) == [1]
    assert len(audit_entries(db)) == 1


def test_cli_rollback_and_versions(
    db: Database, run: Cli, write: Callable[[str, str], Path]
) -> None:
    run("flows", "import", str(write("custom.yaml", CUSTOM)), "--comment", "mine")
    done = run("flows", "rollback", "0")
    assert done.code == 0, done.err
    assert " ".join(done.out.split()) == (
        "flows version 2 is in force: the flows of version 0 (was version 1)"
    )
    assert names(current(db)) == PREBUILT_NAMES
    assert audit_entries(db)[-1].action == "flows.rolled_back"
    again = run("flows", "rollback", "1", "--json").json()
    assert (again["version"], again["previous_version"]) == (3, 2)
    assert again["comment"] == "rollback to version 1"

    unknown = run("flows", "rollback", "9")
    assert unknown.code == 2
    assert unknown.err.splitlines() == [
        "error: no flows version 9 (see `snapshots flows versions`)"
    ]
    assert current_version(db) == 3

    listed = run("flows", "versions", "--json").json()
    assert [v["version"] for v in listed] == [3, 2, 1, 0]
    assert [v["comment"] for v in listed] == [
        "rollback to version 1",
        "rollback to version 0",
        "mine",
        revisions.PREBUILT,
    ]
    assert all(set(v) == {"version", "actor", "comment", "created_at"} for v in listed)
    table = run("flows", "versions")
    assert table.code == 0
    assert "rollback to version 1" in table.out


def test_cli_mappings_show(db: Database, run: Cli, write: Callable[[str, str], Path]) -> None:
    shown = run("mappings", "show", "--json").json()
    assert shown["version"] == 0
    assert [f["name"] for f in shown["flows"]] == PREBUILT_NAMES
    contacts = shown["flows"][0]
    assert contacts["action"] == "upsert_contact"
    assert contacts["options"] == {"match_on": ["stripe_customer_id", "email"]}
    assert contacts["fields"]["email"] == "email"
    run("flows", "import", str(write("custom.yaml", CUSTOM)))
    assert run("mappings", "show", "--json").json() == {
        "version": 1,
        "flows": [
            {
                "name": "people",
                "trigger": ["customer.created", "customer.updated"],
                "filter": None,
                "action": "upsert_contact",
                "options": {},
                "fields": {"stripe_customer_id": "id", "email": "email", "name": "upper(name)"},
            }
        ],
    }
    table = run("mappings", "show")
    assert table.code == 0 and "people" in table.out


TRY = textwrap.dedent(
    """\
    flows:
      - name: keep
        trigger: [customer.*]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          name: upper(name)
          address.city: lower(address.city)
      - name: skip
        trigger: [customer.created]
        filter: "livemode == `true`"
        action: upsert_contact
        fields:
          stripe_customer_id: id
      - name: broken
        trigger: [customer.created]
        action: set_fields
        fields:
          stripe_customer_id: id
          name: upper(metadata)
    """
)


def contact_count(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(tables.contacts)).scalar_one()
        )


def test_cli_mappings_test_writes_nothing(
    db: Database,
    run: Cli,
    write: Callable[[str, str], Path],
    event_factory: EventFactory,
) -> None:
    obj = fixture("customer") | {
        "id": "cus_try",
        "name": "Ada",
        "email": "ada@example.com",
        "address": {"line1": "1 Main St", "city": "PARIS", "country": "FR"},
    }
    event = event_factory("customer.created", obj, created=T0)
    event_path = write("event.json", json.dumps(event))
    before = contact_count(db)

    # An event, against the flows in force (the prebuilt ones).
    shown = run("mappings", "test", "--event", str(event_path), "--json").json()
    assert shown["event_type"] == "customer.created"
    (result,) = shown["flows"]
    assert {k: result[k] for k in ("flow", "action", "outcome", "record")} == {
        "flow": "contacts",
        "action": "upsert_contact",
        "outcome": "would write",
        "record": "contact",
    }
    assert result["fields"]["stripe_customer_id"] == "cus_try"
    assert result["fields"]["email"] == "ada@example.com"
    assert result["fields"]["stripe_created"] == obj["created"]

    # An object with --type, against another file; each flow's outcome.
    obj_path = write("customer.json", json.dumps(obj))
    flows_path = write("try.yaml", TRY)
    shown = run(
        "mappings",
        "test",
        "--event",
        str(obj_path),
        "--type",
        "customer.created",
        "--flows",
        str(flows_path),
        "--json",
    ).json()
    assert shown["event_type"] == "customer.created"
    by_flow = {r["flow"]: r for r in shown["flows"]}
    assert list(by_flow) == ["keep", "skip", "broken"]
    assert by_flow["keep"]["fields"] == {
        "stripe_customer_id": "cus_try",
        "name": "ADA",
        "address.city": "paris",
    }
    assert by_flow["skip"]["outcome"] == "filtered out"
    assert "fields" not in by_flow["skip"]
    assert by_flow["broken"]["outcome"] == "error"
    assert "upper" in by_flow["broken"]["error"]

    # --flow picks one; the text output says the same.
    only = run(
        "mappings",
        "test",
        "--event",
        str(obj_path),
        "--type",
        "customer.updated",
        "--flows",
        str(flows_path),
        "--flow",
        "keep",
        "--json",
    ).json()
    assert [r["flow"] for r in only["flows"]] == ["keep"]
    assert only["event_type"] == "customer.updated"
    text = run(
        "mappings",
        "test",
        "--event",
        str(obj_path),
        "--type",
        "customer.created",
        "--flows",
        str(flows_path),
        "--flow",
        "keep",
    )
    assert text.code == 0, text.err
    assert "keep (upsert_contact): would write" in text.out
    assert 'name = "ADA"' in text.out
    # A flow whose mapping fails exits 1 (it would fail the inbox item).
    failed = run(
        "mappings",
        "test",
        "--event",
        str(obj_path),
        "--type",
        "customer.created",
        "--flows",
        str(flows_path),
        "--flow",
        "broken",
    )
    assert failed.code == 1
    assert "broken (set_fields): error" in failed.out
    ignored = run("mappings", "test", "--event", str(obj_path), "--type", "payout.paid")
    assert ignored.code == 0
    assert "no flow is triggered by payout.paid" in " ".join(ignored.out.split())

    assert contact_count(db) == before == 0
    assert stored_versions(db) == []


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        pytest.param("{not json", [], "is not JSON", id="not-json"),
        pytest.param("[1, 2]", [], "give a Stripe event or object", id="not-an-object"),
        pytest.param(
            json.dumps({"object": "customer", "id": "cus_x"}),
            [],
            "holds a customer object, not an event: give --type",
            id="object-without-type",
        ),
        pytest.param(
            json.dumps({"object": "event", "data": {"object": {}}}),
            [],
            "the event has no type or no data.object",
            id="event-without-type",
        ),
        pytest.param(
            json.dumps({"object": "customer", "id": "cus_x"}),
            ["--type", "customer.created", "--flow", "nope"],
            "no flow named 'nope'",
            id="unknown-flow",
        ),
    ],
)
def test_cli_mappings_test_of_a_bad_event_file_is_one_line(
    db: Database,
    run: Cli,
    write: Callable[[str, str], Path],
    content: str,
    args: list[str],
    message: str,
) -> None:
    done = run("mappings", "test", "--event", str(write("event.json", content)), *args)
    assert done.code == 2
    assert done.out == ""
    (line,) = done.err.splitlines()
    assert line.startswith("error: ")
    assert message in line
