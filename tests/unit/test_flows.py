"""Flows: the prebuilt file, routing by event type, validation of flows files, filters."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import errors, flowfile, flows, inbox, intake, worker
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, drain

WHERE = "my-flows.yaml"


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    yield database
    database.dispose()


def _parse(text: str) -> flows.Registry:
    return flowfile.parse(textwrap.dedent(text), WHERE)


# The prebuilt flows.


def test_prebuilt_flows_load() -> None:
    registry = flowfile.load()
    names = [flow.name for flow in registry.flows]
    assert len(names) == len(set(names))
    assert {flow.name: flow.action.name for flow in registry.flows} == {
        "contacts": "upsert_contact",
        "contact-deletions": "archive_contact",
        "invoices": "log_invoice",
        "invoice-payments": "update_payment_status",
        "invoice-deletions": "archive_invoice",
        "locations": "upsert_location",
        "location-deletions": "archive_location",
        "timeline": "log_event",
    }


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        pytest.param("customer.created", ["contacts"], id="customer.created"),
        pytest.param("customer.updated", ["contacts"], id="customer.updated"),
        pytest.param("customer.deleted", ["contact-deletions"], id="customer.deleted"),
        pytest.param("invoice.created", ["invoices"], id="invoice.created"),
        pytest.param("invoice.finalized", ["invoices"], id="invoice.finalized"),
        pytest.param("invoice.updated", ["invoices"], id="invoice.updated"),
        pytest.param("invoice.paid", ["invoice-payments"], id="invoice.paid"),
        pytest.param(
            "invoice.payment_succeeded", ["invoice-payments"], id="invoice.payment_succeeded"
        ),
        pytest.param("invoice.payment_failed", ["invoice-payments"], id="invoice.payment_failed"),
        pytest.param("invoice.voided", ["invoice-payments"], id="invoice.voided"),
        pytest.param(
            "invoice.marked_uncollectible",
            ["invoice-payments"],
            id="invoice.marked_uncollectible",
        ),
        pytest.param("invoice.deleted", ["invoice-deletions"], id="invoice.deleted"),
        pytest.param("terminal.location.created", ["locations"], id="terminal.location.created"),
        pytest.param("terminal.location.updated", ["locations"], id="terminal.location.updated"),
        pytest.param(
            "terminal.location.deleted", ["location-deletions"], id="terminal.location.deleted"
        ),
        pytest.param("charge.succeeded", [], id="charge.succeeded"),
        pytest.param(
            "customer.subscription.created", ["timeline"], id="customer.subscription.created"
        ),
        pytest.param("charge.refunded", ["timeline"], id="charge.refunded"),
        pytest.param("customer.synced", ["contacts"], id="customer.synced"),
        pytest.param("invoice.synced", ["invoices"], id="invoice.synced"),
        pytest.param("customer.discount.updated", [], id="customer.discount.updated"),
        pytest.param("invoice.upcoming", [], id="invoice.upcoming"),
        pytest.param("invoice.sent", [], id="invoice.sent"),
        pytest.param("invoiceitem.created", [], id="invoiceitem.created"),
        pytest.param("terminal.reader.action_succeeded", [], id="terminal.reader"),
        pytest.param("not.a.stripe.type", [], id="unknown-type"),
    ],
)
def test_prebuilt_flows_started_by_each_type(event_type: str, expected: list[str]) -> None:
    registry = flowfile.load()
    assert [flow.name for flow in registry.for_type(event_type)] == expected
    assert registry.wants(event_type) is bool(expected)


def test_every_prebuilt_trigger_is_a_known_event_type() -> None:
    known = set(flows.known_event_types())
    for flow in flowfile.load().flows:
        assert set(flow.triggers) <= known, flow.name


# Validation: every error names the file, the flow and the field.

VALID = """\
flows:
  - name: mine
    trigger: [customer.created]
    action: upsert_contact
    fields:
      stripe_customer_id: id
      email: email
"""


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contactz
            """,
            ("'mine'", "action", "'upsert_contactz'"),
            id="unknown-action",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contact
                fields:
                  stripe_customer_id: id
                  emial: email
            """,
            ("'mine'", "'emial'"),
            id="unknown-target-field",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contact
                fields:
                  stripe_customer_id: id
                  email: "email."
            """,
            ("'mine'", "'email'", "'email.'"),
            id="bad-jmespath-in-field",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                filter: "livemode =="
                action: upsert_contact
            """,
            ("'mine'", "filter", "'livemode =='"),
            id="bad-jmespath-in-filter",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created, customer.craeted]
                action: upsert_contact
            """,
            ("'mine'", "trigger", "'customer.craeted'"),
            id="trigger-matches-no-type",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: "nothing.*"
                action: upsert_contact
            """,
            ("'mine'", "trigger", "'nothing.*'"),
            id="wildcard-trigger-matches-no-type",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contact
                options: {match_on: [stripe_customer_id], dedupe: true}
            """,
            ("'mine'", "option", "dedupe"),
            id="unknown-option",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [invoice.created]
                action: log_invoice
                options: {match_on: [email]}
            """,
            ("'mine'", "option", "match_on"),
            id="option-of-another-action",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contact
              - name: other
                trigger: [customer.updated]
                action: upsert_contact
              - name: mine
                trigger: [customer.deleted]
                action: archive_contact
            """,
            ("unique", "mine"),
            id="duplicate-names",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created
                action: upsert_contact
            """,
            ("YAML",),
            id="not-yaml",
        ),
        pytest.param(
            "flows: {name: mine\n",
            ("YAML",),
            id="not-yaml-unclosed-mapping",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
            """,
            ("mine", "action", "required"),
            id="missing-action",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                action: upsert_contact
            """,
            ("mine", "trigger", "required"),
            id="missing-trigger",
        ),
        pytest.param(
            """\
            flows:
              - trigger: [customer.created]
                action: upsert_contact
            """,
            ("flows", "name", "required"),
            id="missing-name",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contact
                filtr: livemode
            """,
            ("mine", "filtr"),
            id="unknown-key",
        ),
        pytest.param(
            """\
            flows:
              - name: mine
                trigger: [customer.created]
                action: upsert_contact
                fields:
                  email: 3
            """,
            ("mine", "email", "string"),
            id="field-not-a-string",
        ),
        pytest.param(
            """\
            flow:
              - name: mine
            """,
            ("flows", "required"),
            id="missing-flows-key",
        ),
        pytest.param("", ("my-flows.yaml",), id="empty-file"),
        pytest.param("- just\n- a list\n", ("my-flows.yaml",), id="top-level-list"),
    ],
)
def test_parse_errors_name_the_file_the_flow_and_the_field(
    text: str, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        _parse(text)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}:"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_a_valid_file_parses() -> None:
    registry = _parse(VALID)
    [flow] = registry.flows
    assert flow.name == "mine"
    assert flow.triggers == ("customer.created",)
    assert [target for target, _ in flow.fields] == ["stripe_customer_id", "email"]


def test_a_single_trigger_may_be_a_string() -> None:
    registry = _parse(
        """\
        flows:
          - name: mine
            trigger: customer.created
            action: upsert_contact
        """
    )
    assert registry.flows[0].triggers == ("customer.created",)


def test_load_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "custom-flows.yaml"
    path.write_text(VALID.replace("upsert_contact", "nope"))
    with pytest.raises(errors.ConfigError) as caught:
        flowfile.load(path)
    assert str(path) in str(caught.value)
    assert "'mine'" in str(caught.value)


def test_load_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(errors.ConfigError) as caught:
        flowfile.load(path)
    assert str(path) in str(caught.value)


def test_load_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "custom-flows.yaml"
    path.write_text(VALID)
    assert [flow.name for flow in flowfile.load(path).for_type("customer.created")] == ["mine"]


# Wildcard triggers.


@pytest.mark.parametrize(
    ("event_type", "started"),
    [
        pytest.param("invoice.created", True, id="invoice.created"),
        pytest.param("invoice.paid", True, id="invoice.paid"),
        pytest.param("invoice.payment_action_required", True, id="invoice.payment_action_required"),
        pytest.param("invoice.upcoming", True, id="invoice.upcoming"),
        pytest.param("invoiceitem.created", False, id="invoiceitem.created"),
        pytest.param("customer.created", False, id="customer.created"),
        pytest.param("invoice_payment.paid", False, id="invoice_payment.paid"),
    ],
)
def test_wildcard_trigger(event_type: str, started: bool) -> None:
    registry = _parse(
        """\
        flows:
          - name: every-invoice
            trigger: "invoice.*"
            action: log_invoice
            fields: {stripe_invoice_id: id}
        """
    )
    assert registry.wants(event_type) is started
    assert [f.name for f in registry.for_type(event_type)] == (["every-invoice"] if started else [])


# Filters.

FILTERED = """\
flows:
  - name: filtered
    trigger: [customer.created]
    filter: "{filter}"
    action: upsert_contact
    fields:
      stripe_customer_id: id
      email: email
  - name: unfiltered
    trigger: [customer.created]
    action: upsert_contact
    options: {{match_on: [stripe_customer_id]}}
    fields:
      stripe_customer_id: "join('', ['copy_', id])"
"""


def _contact_ids(database: Database) -> list[str | None]:
    with database.read() as conn:
        return list(
            conn.execute(
                sa.select(tables.contacts.c.stripe_customer_id).order_by(
                    tables.contacts.c.stripe_customer_id
                )
            ).scalars()
        )


@pytest.mark.parametrize(
    ("filter_", "metadata", "runs"),
    [
        pytest.param("metadata.sync == 'yes'", {"sync": "yes"}, True, id="true"),
        pytest.param("metadata.sync == 'yes'", {"sync": "no"}, False, id="false"),
        pytest.param("metadata.sync == 'yes'", {}, False, id="false-when-missing"),
        pytest.param("!livemode", {}, True, id="negation"),
        pytest.param("contains(keys(metadata), 'sync')", {"sync": ""}, True, id="function"),
    ],
)
def test_filter_decides_whether_the_flow_runs(
    sqlite_db: Database,
    event_factory: EventFactory,
    filter_: str,
    metadata: dict[str, str],
    runs: bool,
) -> None:
    registry = flowfile.parse(FILTERED.format(filter=filter_), WHERE)
    event = event_factory(
        "customer.created", id="evt_f", metadata=metadata, email="ada@example.com"
    )
    customer = event["data"]["object"]["id"]
    with sqlite_db.write() as conn:
        ran = registry.apply(conn, connection_id="conn_1", event=event)
    # The other flow for the same type is not held back by this one's filter.
    assert [name for name, _ in ran] == (["filtered", "unfiltered"] if runs else ["unfiltered"])
    expected = [customer, f"copy_{customer}"] if runs else [f"copy_{customer}"]
    assert _contact_ids(sqlite_db) == sorted(expected)


# Boolean on every sample event (so the file is accepted), not on the events below.
LOOSE_FILTER = "metadata.flag || `false`"


@pytest.mark.parametrize(
    "flag",
    [
        pytest.param("yes", id="string"),
        pytest.param(3, id="number"),
        pytest.param({"a": "b"}, id="object"),
        pytest.param([True], id="list-of-boolean"),
    ],
)
def test_a_filter_that_is_not_boolean_fails_the_item(
    sqlite_db: Database, event_factory: EventFactory, flag: Any
) -> None:
    registry = flowfile.parse(FILTERED.format(filter=LOOSE_FILTER), WHERE)
    event = event_factory("customer.created", metadata={"flag": flag})
    with pytest.raises(errors.DeadLetter) as caught, sqlite_db.write() as conn:
        registry.apply(conn, connection_id="conn_1", event=event)
    assert caught.value.code == "filter_not_boolean"
    assert "filtered" in str(caught.value)
    assert repr(LOOSE_FILTER) in str(caught.value)
    assert _contact_ids(sqlite_db) == []  # the transaction rolled back


@pytest.mark.parametrize(
    ("filter_", "shown"),
    [
        pytest.param("metadata.sync", "null", id="null"),
        pytest.param("metadata", "{}", id="object"),
        pytest.param("length(metadata)", "0", id="number"),
        pytest.param("[livemode]", "[false]", id="list-of-boolean"),
        pytest.param("object", '"customer"', id="string"),
    ],
)
def test_a_filter_that_is_not_boolean_on_a_sample_is_refused(filter_: str, shown: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        flowfile.parse(FILTERED.format(filter=filter_), WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}:4: flow 'filtered': filter: "), message
    assert f"gives {shown} on a sample customer.created event, not a boolean" in message


def test_through_the_worker_a_non_boolean_filter_sends_the_item_dead(
    sqlite_url: str, sqlite_db: Database, event_factory: EventFactory
) -> None:
    registry = flowfile.parse(FILTERED.format(filter=LOOSE_FILTER), WHERE)
    event = event_factory("customer.created", id="evt_not_boolean", metadata={"flag": "yes"})
    intake.store(
        sqlite_db,
        registry,
        connection_id="conn_1",
        event=event,
        payload=json.dumps(event).encode(),
    )
    work = worker.Worker(sqlite_db, registry, Settings(database_url=sqlite_url), name="w")
    drain(work)
    with sqlite_db.read() as tx:
        item = inbox.get(tx, "evt_not_boolean")
    assert item.status == "dead"  # at once: retrying cannot make it a boolean
    assert item.attempts == 1
    assert "not a boolean" in item.last_error
    assert _contact_ids(sqlite_db) == []


def test_a_mapping_failure_fails_the_item(sqlite_db: Database, event_factory: EventFactory) -> None:
    registry = _parse(
        """\
        flows:
          - name: mine
            trigger: [customer.created]
            action: upsert_contact
            fields:
              stripe_customer_id: id
              email: lower(balance)
        """
    )
    event = event_factory("customer.created")
    with pytest.raises(errors.DeadLetter) as caught, sqlite_db.write() as conn:
        registry.apply(conn, connection_id="conn_1", event=event)
    assert caught.value.code == "mapping_failed"
    assert _contact_ids(sqlite_db) == []
