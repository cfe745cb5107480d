"""The flow editor's domain on SQLite and PostgreSQL: a preview says what `mappings test` says,
shows the record the action would write diffed against the current one and writes nothing;
recent inbox events as samples; per-flow counts over a window; diffs between versions; test
events filtered out of the API's lists."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import connections, flowfile, inbox, preview, revisions, worker
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import drain
from tests.integration.helpers import Cli, MakeKey, Stripe, customer

FLOWS = textwrap.dedent(
    """\
    flows:
      - name: people
        trigger: [customer.created, customer.updated]
        filter: "email != null"
        action: upsert_contact
        fields:
          stripe_customer_id: id
          email: email
          name: name
          custom.city: address.city
      - name: broken
        trigger: customer.updated
        action: set_fields
        fields:
          stripe_customer_id: id
          custom.when: iso_datetime(email)
    """
)


def event_of(
    event_type: str, obj: dict[str, Any], event_id: str = "evt_preview_1"
) -> dict[str, Any]:
    event = preview.sample_event(event_type)
    event["id"] = event_id
    event["data"]["object"] = obj
    return event


def contacts(db: Database) -> list[Any]:
    with db.read() as tx:
        return list(tx.execute(sa.select(tables.contacts)).all())


@pytest.mark.parametrize(
    ("event_type", "changes"),
    [
        pytest.param("customer.created", {}, id="writes"),
        pytest.param("customer.created", {"email": None}, id="filtered-out"),
        pytest.param("customer.updated", {}, id="error"),
        pytest.param("invoice.paid", None, id="not-triggered"),
    ],
)
def test_a_preview_says_what_mappings_test_says(
    run: Cli,
    tmp_path: Path,
    db: Database,
    event_type: str,
    changes: dict[str, Any] | None,
) -> None:
    if changes is None:
        event = preview.sample_event(event_type)
    else:
        event = event_of(event_type, customer(1, address={"city": "Lyon"}) | changes)
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "flows.yaml").write_text(FLOWS)
    shown = run(
        "mappings",
        "test",
        "--event",
        str(tmp_path / "event.json"),
        "--flows",
        str(tmp_path / "flows.yaml"),
        "--json",
    ).json()
    by_flow = {r["flow"]: r for r in shown["flows"]}
    for flow in ("people", "broken"):
        found = preview.preview(db, FLOWS, flow, event)
        expected = by_flow.get(flow)
        got = (
            None
            if found.outcome is None
            else found.outcome.model_dump(mode="json", exclude_none=True)
        )
        assert got == expected


def test_the_record_it_would_write_is_diffed_and_nothing_is_written(
    db: Database, stripe: Stripe, connection: connections.Connection
) -> None:
    obj = customer(7, address={"city": "Lyon"})
    first = preview.preview(
        db, FLOWS, "people", event_of("customer.created", obj), connection_id=connection.id
    )
    assert first.output is not None and first.output.new
    assert first.output.record == "contact"
    assert first.output.fields is not None
    assert first.output.fields["custom"] == {"city": "Lyon"}
    assert ("custom.city", None, "Lyon") in [
        (c.field, c.before, c.after) for c in first.output.changes
    ]
    assert contacts(db) == []  # rolled back

    revisions.import_text(db, FLOWS, where="test", actor="test")
    stripe.send(event_of("customer.created", obj, "evt_real_1"))
    applier_flows = flowfile.parse(FLOWS, "test")
    drain(worker.Worker(db, applier_flows, stripe.settings))
    (row,) = contacts(db)
    moved = obj | {"address": obj["address"] | {"city": "Paris"}}
    second = preview.preview(
        db, FLOWS, "people", event_of("customer.updated", moved), connection_id=connection.id
    )
    assert second.output is not None and not second.output.new
    assert second.output.record_id == row.id
    assert [(c.field, c.before, c.after) for c in second.output.changes] == [
        ("custom.city", "Lyon", "Paris"),
    ]
    (again,) = contacts(db)
    assert again.custom == {"city": "Lyon"}  # still as it was

    # A recent real event of the type is offered as a sample, and previews as it arrived.
    with db.read() as tx:
        (sample,) = preview.recent(tx, ["customer.created", "customer.updated"])
        event, connection_id, test = preview.inbox_event(tx, sample.item_id)
    assert sample.event_id == "evt_real_1" and connection_id == connection.id and not test
    assert event["data"]["object"]["id"] == obj["id"]


def test_a_write_the_action_refuses_is_shown_as_an_error(db: Database) -> None:
    text = "flows:\n- {name: setter, trigger: customer.created, action: set_fields, fields: {name: name}}"
    found = preview.preview(db, text, "setter", event_of("customer.created", customer(3)))
    # set_fields without a Stripe id or an email to find the contact by
    assert found.outcome is not None and found.outcome.outcome == "would write"
    assert found.output is None
    assert found.error is not None and "the event names no contact" in found.error
    assert contacts(db) == []


def test_flow_counts_over_a_window(db: Database, stripe: Stripe) -> None:
    revisions.import_text(db, FLOWS, where="test", actor="test")
    stripe.send(event_of("customer.created", customer(1), "evt_c1"))
    stripe.send(event_of("customer.created", customer(2, email=None), "evt_c2"))
    stripe.send(event_of("customer.updated", customer(1), "evt_u1"))
    drain(worker.Worker(db, flowfile.parse(FLOWS, "test"), stripe.settings))
    registry = flowfile.parse(FLOWS, "test")
    with db.read() as tx:
        counts = inbox.flow_counts(tx, registry.flows, since=time.time() - 86400)
        later = inbox.flow_counts(tx, registry.flows, since=time.time() + 60)
    assert counts["people"].model_dump() == {"matched": 3, "done": 1, "failed": 1}
    assert counts["broken"].model_dump() == {"matched": 1, "done": 0, "failed": 1}
    assert later["people"].model_dump() == {"matched": 0, "done": 0, "failed": 0}


def test_a_diff_between_two_versions(db: Database) -> None:
    revisions.import_text(db, FLOWS, where="test", actor="test")
    revisions.import_text(
        db, FLOWS.replace("name: name", "name: upper(name)"), where="t", actor="t"
    )
    with db.read() as tx:
        lines = revisions.diff(tx, 1, 2)
        from_prebuilt = revisions.diff(tx, 0, 1)
    assert lines[:2] == ["--- version 1", "+++ version 2"]
    assert "-      name: name" in lines and "+      name: upper(name)" in lines
    assert any(line.startswith("-  - name: contacts") for line in from_prebuilt)


def test_test_events_and_their_records_can_be_left_out(
    client: TestClient, stripe: Stripe, make_key: MakeKey
) -> None:
    stripe.send(event_of("customer.created", customer(1), "evt_snptest_0001"))
    stripe.send(event_of("customer.created", customer(2), "evt_real_0002"))
    stripe.drain()
    key = make_key("contacts.readonly", "events.readonly")
    auth = {"Authorization": f"Bearer {key.secret}"}

    def ids(path: str, field: str) -> list[str]:
        response = client.get(path, headers=auth)
        assert response.status_code == 200, response.text
        return sorted(item[field] for item in response.json()["data"])

    assert ids("/v1/customers", "stripe_customer_id") == ["cus_000001", "cus_000002"]
    assert ids("/v1/customers?test=false", "stripe_customer_id") == ["cus_000002"]
    assert ids("/v1/customers?test=true", "stripe_customer_id") == ["cus_000001"]
    assert ids("/v1/events?test=false", "event_id") == ["evt_real_0002"]
    assert ids("/v1/events?test=true", "event_id") == ["evt_snptest_0001"]


def test_flows_diff_in_the_cli(run: Cli, db: Database) -> None:
    revisions.import_text(db, FLOWS, where="test", actor="test")
    revisions.import_text(
        db, FLOWS.replace("name: name", "name: upper(name)"), where="t", actor="t"
    )
    shown = run("flows", "diff", "1")
    assert shown.code == 0
    assert "+      name: upper(name)" in shown.out.splitlines()
    assert run("flows", "diff", "2", "2").out == "the two versions are the same\n"
    missing = run("flows", "diff", "9")
    assert missing.code != 0 and "no flows version 9" in missing.err


def test_events_list_leaves_test_events_out_in_the_cli(run: Cli, stripe: Stripe) -> None:
    stripe.send(event_of("customer.created", customer(1), "evt_snptest_0009"))
    stripe.send(event_of("customer.created", customer(2), "evt_real_0009"))
    listed = {e["event_id"] for e in run("events", "list", "--no-test", "--json").json()}
    assert listed == {"evt_real_0009"}
    listed = {e["event_id"] for e in run("events", "list", "--test", "--json").json()}
    assert listed == {"evt_snptest_0009"}
