"""Previews without a database: each mapping row's value or error, the filter's verdict with
its reason, the validator's problems attached to their row, and drafts with one flow
replaced."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from snapshots import errors, flowfile, mapping, preview

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
          custom.city: address.city
      - name: tags
        trigger: customer.created
        action: add_tag
        options:
          tags: [new]
        fields:
          stripe_customer_id: id
    """
)


def customer_event(**changes: Any) -> dict[str, Any]:
    event = preview.sample_event("customer.created")
    event["data"]["object"] |= changes
    return event


def test_each_row_shows_its_value_and_the_outcome_of_the_flow() -> None:
    event = customer_event(email="ada@example.com", address={"city": "Lyon"})
    shown = preview.preview(None, FLOWS, "people", event)
    assert shown.triggered
    assert shown.filter.keeps is True
    assert [(r.target, r.value, r.error) for r in shown.rows] == [
        ("stripe_customer_id", event["data"]["object"]["id"], None),
        ("email", "ada@example.com", None),
        ("custom.city", "Lyon", None),
    ]
    assert shown.outcome is not None
    assert shown.outcome.outcome == "would write"
    assert shown.outcome.fields == {r.target: r.value for r in shown.rows}
    assert shown.output is None  # no database: no record
    assert shown.problems == []


def test_a_filter_that_says_no_gives_its_reason() -> None:
    shown = preview.preview(None, FLOWS, "people", customer_event(email=None))
    assert shown.filter.keeps is False
    assert shown.filter.reason == "filtered out: email != null is false for this event"
    assert shown.outcome is not None and shown.outcome.outcome == "filtered out"


def test_an_event_the_flow_is_not_triggered_by() -> None:
    shown = preview.preview(None, FLOWS, "tags", preview.sample_event("customer.updated"))
    assert not shown.triggered
    assert shown.outcome is None
    assert [r.target for r in shown.rows] == ["stripe_customer_id"]  # still shown


@pytest.mark.parametrize(
    ("target", "expression", "message"),
    [
        pytest.param("custom.city", "address.[", "bad expression", id="bad-jmespath"),
        pytest.param("custom.city", "nope(address)", "unknown function nope()", id="function"),
        pytest.param("colour", "name", "upsert_contact has no target 'colour'", id="target"),
    ],
)
def test_a_problem_is_shown_at_its_row(target: str, expression: str, message: str) -> None:
    text = FLOWS.replace("custom.city: address.city", f"{target}: {expression!r}")
    shown = preview.preview(None, text, "people", customer_event(email="a@example.com"))
    (row,) = [r for r in shown.rows if r.target == target]
    assert any(message in problem for problem in row.problems), row.problems
    assert shown.problems == []  # the only problem belongs to the row
    assert shown.outcome is None  # the draft does not load: no outcome
    others = [r for r in shown.rows if r.target != target]
    assert all(r.error is None and not r.problems for r in others)  # the other rows still work


def test_a_row_that_fails_on_the_event_says_why() -> None:
    text = FLOWS.replace("custom.city: address.city", "custom.when: iso_datetime(email)")
    shown = preview.preview(None, text, "people", customer_event(email="a@example.com"))
    (row,) = [r for r in shown.rows if r.target == "custom.when"]
    assert row.error is not None and "iso_datetime" in row.error
    assert shown.outcome is not None and shown.outcome.outcome == "error"


def test_a_problem_of_the_flow_itself_is_listed_once() -> None:
    text = FLOWS.replace("action: upsert_contact", "action: upsert_kontakt")
    shown = preview.preview(None, text, "people", customer_event())
    (problem,) = shown.problems
    assert problem.field == "action" and problem.line == 5
    assert "unknown action 'upsert_kontakt'" in problem.message


def test_an_unknown_flow_or_type_is_refused() -> None:
    with pytest.raises(errors.NotFound):
        preview.preview(None, FLOWS, "nobody", customer_event())
    with pytest.raises(errors.BadRequest):
        preview.sample_event("customer.exploded")


def test_a_draft_replaces_one_flow_and_keeps_the_others() -> None:
    spec = {
        "name": "people",
        "trigger": ["customer.created"],
        "filter": "",
        "action": "upsert_contact",
        "options": {},
        "fields": {"email": "email"},
    }
    text = preview.with_flow(FLOWS, spec, replaces="people")
    data = yaml.safe_load(text)
    assert [f["name"] for f in data["flows"]] == ["people", "tags"]
    assert data["flows"][0] == {
        "name": "people",
        "trigger": ["customer.created"],
        "action": "upsert_contact",
        "fields": {"email": "email"},
    }
    assert flowfile.check(text, "draft").registry is not None
    added = preview.with_flow(FLOWS, spec | {"name": "more"}, replaces=None)
    assert [f["name"] for f in yaml.safe_load(added)["flows"]] == ["people", "tags", "more"]
    with pytest.raises(errors.BadRequest):
        preview.with_flow("flows: [", spec, replaces=None)


def test_changes_name_nested_fields_by_path() -> None:
    before = {"name": "Ada", "custom": {"city": "Lyon"}, "metadata": {}, "updated_at": 1}
    after = {"name": "Ada", "custom": {"city": "Paris", "plan": "pro"}, "updated_at": 2}
    assert [(c.field, c.before, c.after) for c in preview.changes(before, after)] == [
        ("custom.city", "Lyon", "Paris"),
        ("custom.plan", None, "pro"),
    ]
    new = preview.changes(None, {"email": "a@b.c", "name": None, "updated_at": 1})
    assert [(c.field, c.after) for c in new] == [("email", "a@b.c"), ("name", None)]


def test_a_sample_is_a_tree_of_jmespath_paths() -> None:
    obj = {
        "id": "cus_1",
        "address": {"city": "Lyon"},
        "metadata": {"order-id": "7"},
        "tax": [{"v": 1}],
    }
    nodes = preview.tree(obj)
    assert [(n.label, n.path, n.value) for n in nodes] == [
        ("id", "id", '"cus_1"'),
        ("address", "address", None),
        ("metadata", "metadata", None),
        ("tax", "tax", None),
    ]
    assert nodes[1].children[0].path == "address.city"
    assert nodes[2].children[0].path == 'metadata."order-id"'
    assert nodes[3].children[0].children[0].path == "tax[0].v"
    leaves = [nodes[1].children[0], nodes[2].children[0], nodes[3].children[0].children[0]]
    assert [mapping.Expression(n.path).evaluate(obj) for n in leaves] == ["Lyon", "7", 1]
