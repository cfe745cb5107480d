"""The actions a flows file may use beyond the prebuilt ones, on SQLite and PostgreSQL:
add_tag / remove_tag (per-tag ordering), set_fields (per-field versions), log_event (a
contact's timeline and its API), nested targets of upsert_contact, and test events.

Events go through `Registry.apply` inside `db.write()`, with flows parsed from YAML text, except
for test events, which go through intake and a worker as a webhook's would."""

from __future__ import annotations

import copy
import itertools
import json
import textwrap
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import connections, errors, flowfile, flows, intake, samples, worker
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import EventFactory, drain, fixture
from tests.integration.helpers import MakeKey, assert_error

T0 = 1_700_000_000
PREBUILT = flowfile.load()
_numbers = itertools.count(1)


def parse(text: str) -> flows.Registry:
    return flowfile.parse(textwrap.dedent(text), "t.yaml")


def apply(
    db: Database,
    registry: flows.Registry,
    connection_id: str,
    *events: dict[str, Any],
    test: bool = False,
) -> list[tuple[str, str]]:
    ran: list[tuple[str, str]] = []
    for event in events:
        with db.write() as conn:
            ran += registry.apply(conn, connection_id=connection_id, event=event, test=test)
    return ran


def customer(id: str = "cus_ada", **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(fixture("customer"))
    obj.update(
        id=id,
        email=f"{id}@example.com",
        name=f"Name of {id}",
        phone="+1 555 0100",
        address={
            "line1": "1 Main St",
            "line2": "Floor 2",
            "city": "Paris",
            "state": None,
            "postal_code": "75001",
            "country": "FR",
        },
        metadata={"source": "stripe"},
    )
    return obj | changes


def subscription(customer: str | None = "cus_ada", **metadata: Any) -> dict[str, Any]:
    obj = copy.deepcopy(fixture("subscription"))
    obj.update(id=f"sub_test{next(_numbers):06d}", customer=customer, metadata=metadata)
    return obj


def contact_rows(db: Database) -> list[Any]:
    t = tables.contacts
    with db.read() as conn:
        return list(conn.execute(sa.select(t).order_by(t.c.seq)).all())


def contact(db: Database, stripe_id: str) -> Any:
    t = tables.contacts
    with db.read() as conn:
        return conn.execute(sa.select(t).where(t.c.stripe_customer_id == stripe_id)).one()


def activity_rows(db: Database) -> list[Any]:
    t = tables.activities
    with db.read() as conn:
        return list(conn.execute(sa.select(t).order_by(t.c.seq)).all())


# add_tag / remove_tag.

TAGS = parse(
    """\
    flows:
      - name: tag-subscribers
        trigger: [customer.subscription.created]
        action: add_tag
        options: {tags: [subscriber]}
        fields:
          stripe_customer_id: customer
          email: metadata.email
          tags: metadata.tags
      - name: untag-subscribers
        trigger: [customer.subscription.deleted]
        action: remove_tag
        options: {tags: [subscriber]}
        fields:
          stripe_customer_id: customer
          email: metadata.email
          tags: metadata.tags
    """
)
# Tags only from a mapped field (a comma-separated metadata value split into a list).
MAPPED_TAGS = parse(
    """\
    flows:
      - name: tag-from-metadata
        trigger: [customer.subscription.created]
        action: add_tag
        fields:
          stripe_customer_id: customer
          tags: "split(metadata.tags, ',')"
    """
)


def tagged(
    event_factory: EventFactory, added: bool, created: int, *, id: str | None = None, **kw: Any
) -> dict[str, Any]:
    customer_id = kw.pop("customer", "cus_ada")
    kind = "customer.subscription.created" if added else "customer.subscription.deleted"
    return event_factory(kind, subscription(customer_id, **kw), created=created, id=id)


def test_add_tag_on_a_contact_found_by_its_stripe_id(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    ran = apply(db, TAGS, connection.id, tagged(event_factory, True, T0 + 1))
    (row,) = contact_rows(db)
    assert ran == [("tag-subscribers", row.id)]
    assert row.tags == ["subscriber"]
    assert row.email == "cus_ada@example.com"


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        pytest.param("vip", ["subscriber", "vip"], id="string"),
        pytest.param(["vip", "beta", "", "vip"], ["subscriber", "vip", "beta"], id="list"),
        pytest.param(None, ["subscriber"], id="null"),
        pytest.param(" subscriber ", ["subscriber"], id="same-as-option"),
    ],
)
def test_add_tag_with_a_mapped_tags_field(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    tags: Any,
    expected: list[str],
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, TAGS, connection.id, tagged(event_factory, True, T0 + 1, tags=tags))
    assert contact(db, "cus_ada").tags == expected


def test_add_tag_from_a_split_metadata_value(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, MAPPED_TAGS, connection.id, tagged(event_factory, True, T0 + 1, tags="gold,beta"))
    assert contact(db, "cus_ada").tags == ["gold", "beta"]


def test_add_tag_on_a_contact_found_by_email(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    event = tagged(event_factory, True, T0 + 1, customer=None, email="cus_ada@example.com")
    apply(db, TAGS, connection.id, event)
    (row,) = contact_rows(db)
    assert row.stripe_customer_id == "cus_ada"
    assert row.tags == ["subscriber"]


def test_add_tag_on_a_missing_contact_makes_it_bare_and_a_later_customer_fills_it_in(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, TAGS, connection.id, tagged(event_factory, True, T0 + 5, tags="vip"))
    (bare,) = contact_rows(db)
    assert bare.stripe_customer_id == "cus_ada"
    assert bare.email is None and bare.name is None
    assert bare.tags == ["subscriber", "vip"]
    # The customer was created before the subscription, but its event arrives after.
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    (row,) = contact_rows(db)
    assert row.id == bare.id
    assert (row.email, row.name) == ("cus_ada@example.com", "Name of cus_ada")
    assert row.address["city"] == "Paris"
    assert row.tags == ["subscriber", "vip"]


def test_add_tag_by_email_alone_makes_a_contact_a_later_customer_links(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = tagged(event_factory, True, T0 + 5, customer=None, email="cus_ada@example.com")
    apply(db, TAGS, connection.id, event)
    (bare,) = contact_rows(db)
    assert (bare.stripe_customer_id, bare.email, bare.tags) == (
        None,
        "cus_ada@example.com",
        ["subscriber"],
    )
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    (row,) = contact_rows(db)
    assert row.id == bare.id
    assert row.stripe_customer_id == "cus_ada"
    assert row.tags == ["subscriber"]


def test_a_tag_event_naming_no_contact_fails(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    with pytest.raises(errors.DeadLetter, match="names no contact"):
        apply(db, TAGS, connection.id, tagged(event_factory, True, T0, customer=None))
    assert contact_rows(db) == []


def test_remove_tag(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, TAGS, connection.id, tagged(event_factory, True, T0 + 1, tags=["vip", "beta"]))
    apply(db, TAGS, connection.id, tagged(event_factory, False, T0 + 2, tags="vip"))
    assert contact(db, "cus_ada").tags == ["beta"]
    # Removing a tag the contact does not have changes nothing.
    before = contact(db, "cus_ada")
    apply(db, TAGS, connection.id, tagged(event_factory, False, T0 + 3, tags="never"))
    after = contact(db, "cus_ada")
    assert after.tags == ["beta"]
    assert after.updated_at == before.updated_at


@pytest.mark.parametrize("order", ["in-order", "reversed"])
@pytest.mark.parametrize("newest", ["add", "remove"])
def test_the_newest_of_an_add_and_a_remove_wins_whatever_the_order(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    order: str,
    newest: str,
) -> None:
    add = tagged(event_factory, True, T0 + (2 if newest == "add" else 1), tags="vip")
    remove = tagged(event_factory, False, T0 + (2 if newest == "remove" else 1), tags="vip")
    events = sorted([add, remove], key=lambda e: e["created"])
    if order == "reversed":
        events.reverse()
    apply(db, TAGS, connection.id, *events)
    tags = contact(db, "cus_ada").tags
    if newest == "add":
        assert tags == ["subscriber", "vip"]
    else:
        assert tags == []


@pytest.mark.parametrize("order", ["add-first", "remove-first"])
@pytest.mark.parametrize("winner", ["add", "remove"])
def test_a_same_second_tie_goes_to_the_greater_event_id(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    order: str,
    winner: str,
) -> None:
    add_id, remove_id = (
        ("evt_tie_2", "evt_tie_1") if winner == "add" else ("evt_tie_1", "evt_tie_2")
    )
    add = tagged(event_factory, True, T0, id=add_id, tags="vip")
    remove = tagged(event_factory, False, T0, id=remove_id, tags="vip")
    events = [add, remove] if order == "add-first" else [remove, add]
    apply(db, TAGS, connection.id, *events)
    assert contact(db, "cus_ada").tags == (["subscriber", "vip"] if winner == "add" else [])


def test_tags_of_different_events_settle_separately(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(
        db,
        MAPPED_TAGS,
        connection.id,
        tagged(event_factory, True, T0, tags="trial"),
        tagged(event_factory, True, T0 + 5, tags="vip"),
    )
    # An event older than the one that added `vip` still removes `trial` (added before it)...
    apply(db, TAGS, connection.id, tagged(event_factory, False, T0 + 1, tags="trial"))
    assert contact(db, "cus_ada").tags == ["vip"]
    # ...and a still older add of `vip` again, or of `trial`, is too old for either tag.
    apply(db, MAPPED_TAGS, connection.id, tagged(event_factory, True, T0 - 1, tags="trial,vip"))
    assert contact(db, "cus_ada").tags == ["vip"]


def test_a_redelivered_tag_event_changes_nothing(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    event = tagged(event_factory, True, T0, tags="vip")
    apply(db, TAGS, connection.id, event)
    first = contact(db, "cus_ada")
    apply(db, TAGS, connection.id, event)
    again = contact(db, "cus_ada")
    assert again.tags == ["subscriber", "vip"]
    assert again.updated_at == first.updated_at


# set_fields.

SET_FIELDS = parse(
    """\
    flows:
      - name: plan
        trigger: [customer.subscription.created, customer.subscription.updated]
        action: set_fields
        fields:
          stripe_customer_id: customer
          custom.plan: metadata.plan
          metadata.tier: metadata.tier
          name: metadata.name
      - name: site
        trigger: [terminal.location.updated]
        action: set_fields
        options: {record: location}
        fields:
          stripe_location_id: id
          custom.site: metadata.site
          name: upper(display_name)
    """
)


def plan_event(
    event_factory: EventFactory, created: int, plan: str, *, name: str = "Set Name", **kw: Any
) -> dict[str, Any]:
    obj = subscription(kw.pop("customer", "cus_ada"), plan=plan, tier=f"tier-{plan}", name=name)
    return event_factory("customer.subscription.updated", obj, created=created, **kw)


def test_set_fields_on_a_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    obj = customer(metadata={"source": "stripe", "tier": "none"})
    apply(db, PREBUILT, connection.id, event_factory("customer.created", obj, created=T0))
    apply(db, SET_FIELDS, connection.id, plan_event(event_factory, T0 + 1, "pro"))
    (row,) = contact_rows(db)
    assert row.custom == {"plan": "pro"}
    # Merged into the stored metadata: the other keys stay.
    assert row.metadata == {"source": "stripe", "tier": "tier-pro"}
    assert row.name == "Set Name"
    assert (row.email, row.phone) == ("cus_ada@example.com", "+1 555 0100")


def test_set_fields_on_a_missing_contact_makes_it(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, SET_FIELDS, connection.id, plan_event(event_factory, T0 + 5, "pro"))
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    (row,) = contact_rows(db)
    assert row.custom == {"plan": "pro"}
    assert row.email == "cus_ada@example.com"
    # The customer's (older) name does not replace the one the newer set_fields wrote.
    assert row.name == "Set Name"


def test_set_fields_on_a_location(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    location = copy.deepcopy(fixture("terminal.location"))
    location.update(id="tml_shop", display_name="Shop", metadata={"site": "north", "keep": "1"})
    apply(
        db,
        PREBUILT,
        connection.id,
        event_factory("terminal.location.created", location, created=T0),
    )
    apply(
        db,
        SET_FIELDS,
        connection.id,
        event_factory("terminal.location.updated", location, created=T0 + 1),
    )
    t = tables.locations
    with db.read() as conn:
        (row,) = conn.execute(sa.select(t)).all()
    assert row.stripe_location_id == "tml_shop"
    assert row.name == "SHOP"
    assert row.custom == {"site": "north"}
    assert row.metadata == {"site": "north", "keep": "1"}
    assert row.address == location["address"]
    assert contact_rows(db) == []


def test_an_older_set_fields_event_does_not_overwrite_a_newer_one(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(
        db,
        SET_FIELDS,
        connection.id,
        plan_event(event_factory, T0 + 10, "pro", name="Newer"),
        plan_event(event_factory, T0 + 5, "basic", name="Older"),
    )
    row = contact(db, "cus_ada")
    assert row.custom == {"plan": "pro"}
    assert row.metadata["tier"] == "tier-pro"
    assert row.name == "Newer"
    # A newer one does.
    apply(db, SET_FIELDS, connection.id, plan_event(event_factory, T0 + 11, "team", name="Newest"))
    row = contact(db, "cus_ada")
    assert (row.custom, row.metadata["tier"], row.name) == ({"plan": "team"}, "tier-team", "Newest")


def test_an_older_customer_event_does_not_overwrite_a_field_set_fields_wrote(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, SET_FIELDS, connection.id, plan_event(event_factory, T0 + 10, "pro"))
    # A customer.updated older than the set_fields event, applied after it: the customer's own
    # fields apply (the record's version moves), the name set_fields wrote stays.
    older = customer(name="Stripe Name", email="changed@example.com")
    apply(db, PREBUILT, connection.id, event_factory("customer.updated", older, created=T0 + 5))
    row = contact(db, "cus_ada")
    assert row.name == "Set Name"
    assert row.email == "changed@example.com"
    # A customer event newer than the set_fields event overwrites the name.
    newer = customer(name="Newest Stripe Name")
    apply(db, PREBUILT, connection.id, event_factory("customer.updated", newer, created=T0 + 20))
    assert contact(db, "cus_ada").name == "Newest Stripe Name"


def test_an_older_customer_event_keeps_a_nested_field_set_fields_wrote(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, SET_FIELDS, connection.id, plan_event(event_factory, T0 + 10, "pro"))
    older = customer(metadata={"source": "stripe", "other": "x"})
    apply(db, PREBUILT, connection.id, event_factory("customer.updated", older, created=T0 + 5))
    assert contact(db, "cus_ada").metadata.get("tier") == "tier-pro"


NESTED_PLAN = parse(
    """\
    flows:
      - name: contacts
        trigger: [customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          custom.plan: metadata.plan
    """
)


def test_an_older_upsert_of_a_nested_target_does_not_overwrite_set_fields(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, SET_FIELDS, connection.id, plan_event(event_factory, T0 + 10, "pro"))
    older = customer(metadata={"plan": "basic"})
    apply(db, NESTED_PLAN, connection.id, event_factory("customer.updated", older, created=T0 + 5))
    assert contact(db, "cus_ada").custom == {"plan": "pro"}


# log_event and the activities API.

TIMELINE = parse(
    """\
    flows:
      - name: timeline
        trigger: [customer.subscription.deleted, charge.refunded]
        action: log_event
        fields:
          stripe_customer_id: customer
          title: "template('{object} {status}', @)"
          status: status
          currency: currency
      - name: refunds
        trigger: [charge.refunded]
        action: log_event
        options: {type: refund}
        fields:
          stripe_customer_id: customer
          amount: cents_to_decimal(amount_refunded, currency)
    """
)


def refund(event_factory: EventFactory, created: int, **kw: Any) -> dict[str, Any]:
    charge = copy.deepcopy(fixture("charge"))
    charge.update(customer=kw.pop("customer", "cus_ada"), amount_refunded=1999, currency="usd")
    return event_factory("charge.refunded", charge, created=created, **kw)


def test_log_event_keeps_an_activity_per_contact_event_and_flow(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    event = refund(event_factory, T0 + 7)
    ran = apply(db, TIMELINE, connection.id, event)
    contact_id = contact(db, "cus_ada").id
    assert ran == [("timeline", contact_id), ("refunds", contact_id)]
    # Applied again (a replay): still one activity per flow.
    apply(db, TIMELINE, connection.id, event)
    first, second = activity_rows(db)
    assert (first.flow, first.type, first.title) == (
        "timeline",
        "charge.refunded",
        "charge succeeded",
    )
    assert first.data == {"status": "succeeded", "currency": "usd"}
    assert (second.flow, second.type, second.title) == ("refunds", "refund", None)
    assert second.data == {"amount": 19.99}
    for row in (first, second):
        assert row.contact_id == contact_id
        assert row.event_id == event["id"]
        assert row.occurred_at == T0 + 7
        assert row.test is False


def test_log_event_for_a_missing_contact_makes_it(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    sub = subscription("cus_new")
    sub["status"] = "canceled"
    apply(
        db,
        TIMELINE,
        connection.id,
        event_factory("customer.subscription.deleted", sub, created=T0),
    )
    (row,) = contact_rows(db)
    assert row.stripe_customer_id == "cus_new"
    (activity,) = activity_rows(db)
    assert activity.contact_id == row.id
    assert activity.title == "subscription canceled"
    assert activity.type == "customer.subscription.deleted"


def test_activities_api(
    db: Database,
    connection: connections.Connection,
    event_factory: EventFactory,
    client: TestClient,
    make_key: MakeKey,
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer("cus_bob")))
    # Applied out of time order: the timeline is by the events' time, newest first.
    for created in (T0 + 2, T0 + 3, T0 + 1):
        apply(db, TIMELINE, connection.id, refund(event_factory, created))
    apply(db, TIMELINE, connection.id, refund(event_factory, T0 + 9, customer="cus_bob"))
    ada, bob = contact(db, "cus_ada").id, contact(db, "cus_bob").id
    headers = make_key("contacts.readonly").headers

    response = client.get(f"/v1/customers/{ada}/activities", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["has_more"] is False
    found = body["data"]
    assert len(found) == 6
    assert [a["occurred_at"] for a in found][::2] == [
        "2023-11-14T22:13:23Z",
        "2023-11-14T22:13:22Z",
        "2023-11-14T22:13:21Z",
    ]
    assert {a["contact_id"] for a in found} == {ada}
    assert set(found[0]) == {
        "id",
        "object",
        "contact_id",
        "type",
        "title",
        "data",
        "occurred_at",
        "event_id",
        "flow",
        "test",
        "created_at",
    }
    assert found[0]["object"] == "activity"

    pages: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if after is not None:
            params["starting_after"] = after
        page = client.get(f"/v1/customers/{ada}/activities", params=params, headers=headers)
        assert page.status_code == 200, page.text
        pages.append(page.json())
        if not page.json()["has_more"]:
            break
        after = page.json()["data"][-1]["id"]
    assert [len(p["data"]) for p in pages] == [4, 2]
    assert [a["id"] for p in pages for a in p["data"]] == [a["id"] for a in found]

    bad = client.get(
        f"/v1/customers/{ada}/activities", params={"starting_after": "act_nope"}, headers=headers
    )
    assert_error(bad, 400, "invalid_cursor", checks="status")
    bobs = client.get(f"/v1/customers/{bob}/activities", headers=headers).json()["data"]
    assert len(bobs) == 2
    # Another contact's activity is no cursor here.
    other = client.get(
        f"/v1/customers/{ada}/activities",
        params={"starting_after": bobs[0]["id"]},
        headers=headers,
    )
    assert_error(other, 400, "invalid_cursor", checks="status")

    missing = client.get("/v1/customers/con_nope/activities", headers=headers)
    assert_error(missing, 404, "resource_missing", checks="status")
    wrong = client.get(
        f"/v1/customers/{ada}/activities", headers=make_key("invoices.readonly").headers
    )
    assert "contacts.readonly" in assert_error(wrong, 403, checks="status")["message"]
    assert client.get(f"/v1/customers/{ada}/activities").status_code == 401


# Nested targets of upsert_contact.

CITY_ONLY = parse(
    """\
    flows:
      - name: contacts
        trigger: [customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          address.city: metadata.city
    """
)
WHOLE_AND_CITY = parse(
    """\
    flows:
      - name: contacts
        trigger: [customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          address: address
          address.city: upper(address.city)
    """
)
DEEP = parse(
    """\
    flows:
      - name: contacts
        trigger: [customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          email: email
          custom.plan.name: metadata.plan
          custom.plan.seats: to_number(metadata.seats)
    """
)


def test_a_nested_target_alone_keeps_the_rest_of_the_stored_field(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    moved = customer(metadata={"city": "Lyon"}, address=None)
    apply(db, CITY_ONLY, connection.id, event_factory("customer.updated", moved, created=T0 + 1))
    row = contact(db, "cus_ada")
    assert row.address == customer()["address"] | {"city": "Lyon"}
    assert row.email == "cus_ada@example.com"


def test_a_nested_target_on_a_new_contact(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    moved = customer(metadata={"city": "Lyon"})
    apply(db, CITY_ONLY, connection.id, event_factory("customer.updated", moved, created=T0))
    assert contact(db, "cus_ada").address == {"city": "Lyon"}


def test_a_nested_target_overrides_the_whole_field_mapped_beside_it(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    apply(db, PREBUILT, connection.id, event_factory("customer.created", customer(), created=T0))
    address = customer()["address"] | {"line1": "2 Side St", "city": "Zürich"}
    event = event_factory("customer.updated", customer(address=address), created=T0 + 1)
    apply(db, WHOLE_AND_CITY, connection.id, event)
    assert contact(db, "cus_ada").address == address | {"city": "ZÜRICH"}


def test_a_deep_nested_target(
    db: Database, connection: connections.Connection, event_factory: EventFactory
) -> None:
    first = customer(metadata={"plan": "pro", "seats": "3"})
    apply(db, DEEP, connection.id, event_factory("customer.updated", first, created=T0))
    assert contact(db, "cus_ada").custom == {"plan": {"name": "pro", "seats": 3}}
    second = customer(metadata={"plan": "team"})
    apply(db, DEEP, connection.id, event_factory("customer.updated", second, created=T0 + 1))
    # A null seat count is written as null; the plan's name is replaced.
    assert contact(db, "cus_ada").custom == {"plan": {"name": "team", "seats": None}}


# Test events.

WITH_TAGS = flowfile.parse(
    flowfile.default_text()
    + "  - name: tag-subscribers\n"
    + "    trigger: [customer.subscription.created]\n"
    + "    action: add_tag\n"
    + "    options: {tags: [subscriber]}\n"
    + "    fields: {stripe_customer_id: customer}\n",
    "t.yaml",
)


def test_test_events_mark_the_records_they_write(
    db: Database,
    connection: connections.Connection,
    settings: Settings,
    event_factory: EventFactory,
) -> None:
    sent = [
        (samples.sample_event("customer.created", obj=customer("cus_t")), "test"),
        (samples.sample_event("customer.subscription.created", obj=subscription("cus_t")), "test"),
        (event_factory("customer.created", customer("cus_real"), created=T0), "webhook"),
    ]
    for event, source in sent:
        assert event["id"].startswith("evt_snptest_") == (source == "test")
        intake.store(
            db,
            WITH_TAGS,
            connection_id=connection.id,
            event=event,
            payload=json.dumps(event).encode(),
            source=source,
        )
    applier = worker.Worker(db, WITH_TAGS, settings)
    drain(applier)
    assert applier.stats.done == 3
    assert applier.stats.failed == applier.stats.dead == 0
    test_contact = contact(db, "cus_t")
    assert test_contact.test is True
    assert test_contact.tags == ["subscriber"]
    (activity,) = activity_rows(db)  # the prebuilt timeline flow
    assert activity.test is True
    assert activity.contact_id == test_contact.id
    assert contact(db, "cus_real").test is False
