"""records/detail.py and the records search on SQLite and PostgreSQL: a record in full with
the write that set each field last (an event, an API write), its tags, custom fields, timeline
and events; lists searched by name, e-mail, id."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import connections, errors, flowfile
from snapshots.records import apply, detail, edits, ordering, reads
from snapshots.records.kinds import CONTACT, INVOICE, LOCATION
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from snapshots.worker import Worker
from tests.conftest import EventFactory, drain, fixture
from tests.integration.helpers import enqueue

FLOWS = (
    "flows:\n"
    "  - name: contacts\n    trigger: customer.*\n    action: upsert_contact\n"
    "    fields: {stripe_customer_id: id, email: email, name: name, custom.city: address.city}\n"
    "  - name: timeline\n    trigger: customer.updated\n    action: log_event\n"
    "    fields: {stripe_customer_id: id, title: name}\n"
    "  - name: invoices\n    trigger: invoice.*\n    action: log_invoice\n"
    "    fields: {stripe_invoice_id: id, stripe_customer_id: customer, number: number,"
    " status: status, currency: currency, amount_due: amount_due}\n"
)


@pytest.fixture
def applied(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> dict[str, Any]:
    """A contact from customer.created then customer.updated, and one of its invoices."""
    obj = {**fixture("customer"), "id": "cus_Detail01", "email": "ada@example.com"}
    obj["address"] = {**(obj.get("address") or {}), "city": "Paris"}
    first = event_factory("customer.created", object={**obj, "name": "Ada"}, created=1_700_000_000)
    second = event_factory(
        "customer.updated", object={**obj, "name": "Ada L."}, created=1_700_000_100
    )
    invoice = event_factory(
        "invoice.paid",
        object={**fixture("invoice"), "id": "in_Detail01", "customer": "cus_Detail01"},
        created=1_700_000_200,
    )
    items = [enqueue(db, connection.id, e)[0] for e in (first, second, invoice)]
    drain(Worker(db, flowfile.parse(FLOWS, "detail.yaml"), settings))
    with db.read() as tx:
        contact = tx.execute(sa.select(tables.contacts)).one()
        inv = tx.execute(sa.select(tables.invoices)).one()
    return {"items": items, "events": [first, second, invoice], "contact": contact, "invoice": inv}


def by_name(values: list[detail.Value]) -> dict[str, detail.Value]:
    return {v.name: v for v in values}


def test_each_field_names_the_event_that_set_it_last(db: Database, applied: dict[str, Any]) -> None:
    contact = applied["contact"]
    with db.read() as tx:
        shown = detail.get(tx, CONTACT, contact.id)
    fields = by_name(shown.fields)
    assert fields["name"].value == "Ada L."
    set_by = fields["name"].set_by
    assert set_by is not None
    assert (set_by.event_id, set_by.item_id) == (applied["events"][1]["id"], applied["items"][1])
    assert set_by.at == 1_700_000_100 and set_by.request_id is None
    [city] = shown.custom
    assert (city.name, city.value) == ("custom.city", "Paris")
    assert city.set_by is not None and city.set_by.event_id == applied["events"][1]["id"]
    assert [a.title for a in shown.activities] == ["Ada L."]
    # Both customer events wrote it, and the event of its invoice is among them, newest first.
    assert [e.id for e in shown.touched] == applied["items"][::-1]


def test_an_api_write_and_a_tag_are_named_as_theirs(db: Database, applied: dict[str, Any]) -> None:
    contact = applied["contact"]
    api = ordering.Key(ordering.OWN, 1_800_000_000, 0, "api_req_abc")
    with db.write() as tx:
        edits.edit(tx, CONTACT, contact.id, changes={"phone": "+33 1 23"}, key=api)
        apply.change_tags(
            tx,
            connection_id=contact.connection_id,
            match={"stripe_customer_id": "cus_Detail01"},
            tags=["vip"],
            present=True,
            key=ordering.Key(ordering.OWN, 1_700_000_150, 1, applied["events"][1]["id"]),
        )
    with db.read() as tx:
        shown = detail.get(tx, CONTACT, contact.id)
    phone = by_name(shown.fields)["phone"]
    assert phone.value == "+33 1 23" and phone.set_by is not None
    assert (phone.set_by.event_id, phone.set_by.request_id) == (None, "req_abc")
    [vip] = shown.tags
    assert vip.value == "vip" and vip.set_by is not None
    assert vip.set_by.event_id == applied["events"][1]["id"]
    # Fields the API write left alone still name their event.
    assert by_name(shown.fields)["email"].set_by.event_id == applied["events"][1]["id"]  # type: ignore[union-attr]


def test_an_invoice_links_its_contact(db: Database, applied: dict[str, Any]) -> None:
    with db.read() as tx:
        shown = detail.get(tx, INVOICE, applied["invoice"].id)
    assert shown.contact is not None and shown.contact.id == applied["contact"].id
    assert shown.contact.label == "Ada L."
    assert [e.id for e in shown.touched] == [applied["items"][2]]
    assert shown.activities == []


def test_an_unknown_record_or_another_connections_is_not_found(
    db: Database, applied: dict[str, Any]
) -> None:
    with db.read() as tx:
        for record_id, limited in (("con_nobody", None), (applied["contact"].id, ["conn_x"])):
            with pytest.raises(errors.NotFound):
                detail.get(tx, CONTACT, record_id, connections=limited)
        with pytest.raises(errors.NotFound):
            detail.get(tx, LOCATION, "<script>")


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        pytest.param("ADA@example", 1, id="start of the email, any case"),
        pytest.param("ada l", 1, id="start of the name"),
        pytest.param("L.", 0, id="not inside the name"),
        pytest.param("cus_Detail01", 1, id="stripe id"),
        pytest.param("100%", 0, id="LIKE wildcards are literal"),
        pytest.param("a_a", 0, id="underscore literal"),
        pytest.param("nobody", 0, id="nothing"),
    ],
)
def test_a_list_is_searched(db: Database, applied: dict[str, Any], text: str, hits: int) -> None:
    with db.read() as tx:
        assert len(reads.page(tx, CONTACT, search=text).data) == hits
        assert reads.page(tx, CONTACT, search=applied["contact"].id).data[0].id == (
            applied["contact"].id
        )
        assert len(reads.page(tx, INVOICE, search="in_Detail01").data) == 1
        with pytest.raises(errors.BadRequest):
            reads.page(tx, CONTACT, search="a\x00")


def test_a_search_on_sqlite_reads_indexes_not_the_table(sqlite_url: str) -> None:
    """The plan of a name-or-email search is index lookups (a scan of 100,000 contacts takes
    a third of a second)."""
    db = Database(sqlite_url)
    try:
        with db.read() as tx:
            stmt = sa.select(tables.contacts.c.id).where(reads._matching(tx, CONTACT, "ada"))
            sql = str(stmt.compile(tx, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in tx.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    finally:
        db.dispose()
    assert "ix_contacts_lower_name" in plan and "ix_contacts_lower_email" in plan, plan
    assert "SCAN contacts" not in plan, plan
