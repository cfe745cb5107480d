"""Every problem `flowfile.check` reports, as it prints: `file:line: flow 'name': field: message`.

One parametrized table holds a small YAML text per kind of problem with the exact rendered
prefix (file, line, flow, field) and a fragment of the message. Then: several problems in
one file, YAML anchors and aliases, `flowfile.parse`, the prebuilt flows, and the
`snapshots mappings validate` command."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snapshots import cli, errors, flowfile

WHERE = "flows.yaml"
Run = Callable[..., tuple[int, str, str]]  # run(*args) -> (exit code, stdout, stderr)


def _text(*lines: str) -> str:
    """A YAML text, one argument a line (the first is line 1)."""
    return "\n".join(lines) + "\n"


def _flow(*extra: str, action: str = "upsert_contact", trigger: str = "customer.created") -> str:
    """One flow `a` on lines 2-4; `extra` lines (indented under it) start at line 5."""
    return _text(
        "flows:",
        "  - name: a",
        f"    trigger: {trigger}",
        f"    action: {action}",
        *(f"    {line}" for line in extra),
    )


def _problems(text: str, where: str = WHERE) -> list[str]:
    checked = flowfile.check(text, where)
    if checked.problems:
        assert checked.registry is None
    return [str(problem) for problem in checked.problems]


NOT_BOOLEAN = "not a boolean (compare with ==, or wrap it in to_string(...) == '...')"
CONTACT_TARGETS = (
    "targets are: address, custom, email, livemode, metadata, name, phone, stripe_created, "
    "stripe_customer_id (and address.*, custom.*, metadata.*)"
)

CASES = [
    # The file itself.
    pytest.param(
        _text("flows:", "  - name: a", "   action: x"),
        "flows.yaml:3: not valid YAML: ",
        "expected <block end>, but found '<block mapping start>'",
        id="yaml-bad-indentation",
    ),
    pytest.param(
        _text("flows:", "\t- name: a"),
        "flows.yaml:2: not valid YAML: ",
        "found character '\\t' that cannot start any token",
        id="yaml-tab",
    ),
    pytest.param(
        _text("flows: [customer.created"),
        "flows.yaml:2: not valid YAML: ",
        "expected ',' or ']'",
        id="yaml-unclosed-bracket",
    ),
    pytest.param(
        _text("flows:", '  - name: "a'),
        "flows.yaml:3: not valid YAML: ",
        "unexpected end of stream",
        id="yaml-unclosed-quote",
    ),
    pytest.param(
        "flows: []\n" + "#" * flowfile.MAX_TEXT,
        "flows.yaml: the file is over 256 KiB",  # the budget of issue 15 (was 1 MiB)
        "256 KiB",
        id="over-256-KiB",
    ),
    pytest.param(
        _text("- name: a", "- name: b"),
        "flows.yaml:1: a flows file is a mapping with a `flows:` list",
        "mapping",
        id="not-a-mapping-list",
    ),
    pytest.param(
        _text("just some text"),
        "flows.yaml:1: a flows file is a mapping with a `flows:` list",
        "mapping",
        id="not-a-mapping-scalar",
    ),
    pytest.param(
        "",
        "flows.yaml:1: a flows file is a mapping with a `flows:` list",
        "mapping",
        id="not-a-mapping-empty-file",
    ),
    pytest.param(
        _text("# only a comment"),
        "flows.yaml:1: a flows file is a mapping with a `flows:` list",
        "mapping",
        id="not-a-mapping-only-a-comment",
    ),
    pytest.param(
        _text("{}"),
        "flows.yaml:1: flows: ",
        "Field required",
        id="missing-flows",
    ),
    pytest.param(
        _text("flows: []", "version: 2"),
        "flows.yaml:2: version: ",
        "Extra inputs are not permitted",
        id="unknown-top-level-key",
    ),
    pytest.param(
        _text("flows: 3"),
        "flows.yaml:1: flows: ",
        "Input should be a valid list",
        id="flows-not-a-list",
    ),
    pytest.param(
        _text("flows:"),
        "flows.yaml:1: flows: ",
        "Input should be a valid list",
        id="flows-empty-value",
    ),
    # The shape of a flow.
    pytest.param(
        _text("flows:", "  - 3"),
        "flows.yaml:2: flow 'flows[0]': ",
        "Input should be a valid dictionary",
        id="flow-not-a-mapping",
    ),
    pytest.param(
        _text(
            "flows:",
            "  - name: a",
            "    trigger: customer.created",
            "    action: upsert_contact",
            "  - trigger: customer.updated",
            "    action: upsert_contact",
        ),
        "flows.yaml:5: flow 'flows[1]': name: ",
        "Field required",
        id="flow-missing-name",
    ),
    pytest.param(
        _text(
            "flows:", "  - name: ''", "    trigger: customer.created", "    action: upsert_contact"
        ),
        "flows.yaml:2: flow 'flows[0]': name: ",
        "String should have at least 1 character",
        id="flow-empty-name",
    ),
    pytest.param(
        _text("flows:", f"  - name: {'n' * 101}", "    trigger: x", "    action: upsert_contact"),
        f"flows.yaml:2: flow '{'n' * 101}': name: ",
        "String should have at most 100 characters",
        id="flow-name-too-long",
    ),
    pytest.param(
        _text("flows:", "  - name: a", "    trigger: customer.created"),
        "flows.yaml:2: flow 'a': action: ",
        "Field required",
        id="flow-missing-action",
    ),
    pytest.param(
        _text("flows:", "  - name: a", "    action: upsert_contact"),
        "flows.yaml:2: flow 'a': trigger: ",
        "Field required",
        id="flow-missing-trigger",
    ),
    pytest.param(
        _flow(trigger="[]"),
        "flows.yaml:3: flow 'a': trigger: ",
        "List should have at least 1 item",
        id="flow-empty-trigger-list",
    ),
    pytest.param(
        _flow(trigger="5"),
        "flows.yaml:3: flow 'a': trigger: ",
        "Input should be a valid list",
        id="flow-trigger-a-number",
    ),
    pytest.param(
        _flow("colour: red"),
        "flows.yaml:5: flow 'a': colour: ",
        "Extra inputs are not permitted",
        id="unknown-flow-key",
    ),
    pytest.param(
        _flow("field:", "  email: email"),
        "flows.yaml:5: flow 'a': field: ",
        "Extra inputs are not permitted",
        id="unknown-flow-key-typo-of-fields",
    ),
    pytest.param(
        _flow("options: [match_on]"),
        "flows.yaml:5: flow 'a': options: ",
        "Input should be a valid dictionary",
        id="options-not-a-mapping",
    ),
    pytest.param(
        _flow("fields: [email]"),
        "flows.yaml:5: flow 'a': fields: ",
        "Input should be a valid dictionary",
        id="fields-not-a-mapping",
    ),
    pytest.param(
        _text(
            "flows:",
            "  - name: a",
            "    trigger: customer.created",
            "    action: upsert_contact",
            "  - name: a",
            "    trigger: customer.updated",
            "    action: upsert_contact",
        ),
        "flows.yaml:5: flow 'a': ",
        "flow names must be unique: another flow has this name",
        id="duplicate-flow-names",
    ),
    # Actions and their options.
    pytest.param(
        _flow(action="upsert_contat"),
        "flows.yaml:4: flow 'a': action: ",
        "unknown action 'upsert_contat'; actions are: add_tag, archive_contact, archive_invoice,",
        id="unknown-action",
    ),
    pytest.param(
        _flow("options:", "  tags: [vip]"),
        "flows.yaml:5: flow 'a': options: ",
        "unknown option(s) tags for upsert_contact (its options: match_on)",
        id="unknown-option",
    ),
    pytest.param(
        _flow("options: {x: 1}", action="archive_contact", trigger="customer.deleted"),
        "flows.yaml:5: flow 'a': options: ",
        "unknown option(s) x for archive_contact (its options: none)",
        id="unknown-option-action-without-options",
    ),
    pytest.param(
        _flow("options:", "  match_on: email"),
        "flows.yaml:5: flow 'a': options: ",
        "match_on must be a list of stripe_customer_id and/or email",
        id="match_on-not-a-list",
    ),
    pytest.param(
        _flow("options:", "  match_on: [email, phone]"),
        "flows.yaml:5: flow 'a': options: ",
        "match_on must be a list of stripe_customer_id and/or email",
        id="match_on-bad-entry",
    ),
    pytest.param(
        _flow("options:", "  match_on: []"),
        "flows.yaml:5: flow 'a': options: ",
        "match_on must be a list",
        id="match_on-empty",
    ),
    pytest.param(
        _flow("options:", "  tags: vip", action="add_tag"),
        "flows.yaml:5: flow 'a': options: ",
        "tags must be a list of non-empty strings",
        id="tags-not-a-list",
    ),
    pytest.param(
        _flow("options:", "  tags: [vip, 3]", action="add_tag"),
        "flows.yaml:5: flow 'a': options: ",
        "tags must be a list of non-empty strings",
        id="tags-not-strings",
    ),
    pytest.param(
        _flow("options:", "  tags: ['vip', ' ']", action="remove_tag"),
        "flows.yaml:5: flow 'a': options: ",
        "tags must be a list of non-empty strings",
        id="tags-blank-string",
    ),
    pytest.param(
        _flow("options:", "  record: invoice", action="set_fields"),
        "flows.yaml:5: flow 'a': options: ",
        "record must be contact or location",
        id="set_fields-record-invoice",
    ),
    pytest.param(
        _flow("options:", "  type: 5", action="log_event"),
        "flows.yaml:5: flow 'a': options: ",
        "type must be a string (the activity's type, at most 255 characters)",
        id="log_event-type-not-a-string",
    ),
    pytest.param(
        _flow("options:", f"  type: {'t' * 256}", action="log_event"),
        "flows.yaml:5: flow 'a': options: ",
        "at most 255 characters",
        id="log_event-type-too-long",
    ),
    pytest.param(
        _flow(action="add_tag"),
        "flows.yaml:4: flow 'a': action: ",
        "add_tag needs tags (an option or a field)",
        id="add_tag-without-tags",
    ),
    pytest.param(
        _flow(action="remove_tag"),
        "flows.yaml:4: flow 'a': action: ",
        "remove_tag needs tags (an option or a field)",
        id="remove_tag-without-tags",
    ),
    # Targets.
    pytest.param(
        _flow("fields:", "  emial: email"),
        "flows.yaml:6: flow 'a': field 'emial': ",
        f"upsert_contact has no target 'emial'; {CONTACT_TARGETS}",
        id="unknown-target",
    ),
    pytest.param(
        _flow("fields:", "  emial.x: email"),
        "flows.yaml:6: flow 'a': field 'emial.x': ",
        "upsert_contact has no target 'emial.x'",
        id="nested-target-unknown-field",
    ),
    pytest.param(
        _flow("fields:", "  address.: email"),
        "flows.yaml:6: flow 'a': field 'address.': ",
        "upsert_contact has no target 'address.'",
        id="nested-target-empty-key",
    ),
    pytest.param(
        _flow("fields:", "  address..city: email"),
        "flows.yaml:6: flow 'a': field 'address..city': ",
        "upsert_contact has no target 'address..city'",
        id="nested-target-empty-segment",
    ),
    pytest.param(
        _flow("fields:", "  name.first: name"),
        "flows.yaml:6: flow 'a': field 'name.first': ",
        "upsert_contact has no target 'name.first'",
        id="nested-target-in-a-non-json-field",
    ),
    pytest.param(
        _flow("fields:", "  customer_address.city: email", action="log_invoice"),
        "flows.yaml:6: flow 'a': field 'customer_address.city': ",
        "log_invoice has no target 'customer_address.city'; targets are: amount_due,",
        id="nested-target-invoice-customer-address",
    ),
    pytest.param(
        _flow("fields:", "  metadata.tier: email", action="log_event"),
        "flows.yaml:6: flow 'a': field 'metadata.tier': ",
        "log_event has no target 'metadata.tier'; targets are: amount, currency, data, email,",
        id="nested-target-action-without-json-fields",
    ),
    pytest.param(
        _flow("options: {record: location}", "fields:", "  email: email", action="set_fields"),
        "flows.yaml:7: flow 'a': field 'email': ",
        "set_fields has no target 'email'; targets are: address, country, currency,",
        id="set_fields-location-contact-target",
    ),
    # Expressions.
    pytest.param(
        _flow("fields:", "  email: email."),
        "flows.yaml:6: flow 'a': field 'email': ",
        "bad expression 'email.': Expecting: ",
        id="field-jmespath-syntax-error",
    ),
    pytest.param(
        _flow("filter: email =="),
        "flows.yaml:5: flow 'a': filter: ",
        "bad expression 'email ==': ",
        id="filter-jmespath-syntax-error",
    ),
    pytest.param(
        _flow("fields:", "  name: lowr(name)"),
        "flows.yaml:6: flow 'a': field 'name': ",
        "bad expression 'lowr(name)': unknown function lowr()",
        id="field-unknown-function",
    ),
    pytest.param(
        _flow("filter: lowr(email) == 'x'"),
        "flows.yaml:5: flow 'a': filter: ",
        "unknown function lowr()",
        id="filter-unknown-function",
    ),
    pytest.param(
        _flow("fields:", "  phone: cents_to_decimal(amount)"),
        "flows.yaml:6: flow 'a': field 'phone': ",
        "cents_to_decimal() takes 2 argument(s), not 1",
        id="field-wrong-arity",
    ),
    pytest.param(
        _flow("fields:", "  name: concat()"),
        "flows.yaml:6: flow 'a': field 'name': ",
        "concat() takes at least 1 argument(s), not 0",
        id="field-variadic-without-arguments",
    ),
    pytest.param(
        _flow("filter: lower() == 'x'"),
        "flows.yaml:5: flow 'a': filter: ",
        "lower() takes 1 argument(s), not 0",
        id="filter-wrong-arity",
    ),
    # Triggers.
    pytest.param(
        _flow(trigger="customer.creatd"),
        "flows.yaml:3: flow 'a': trigger: ",
        "'customer.creatd' matches no Stripe event type",
        id="trigger-matches-no-type",
    ),
    pytest.param(
        _flow(trigger="nothing.*"),
        "flows.yaml:3: flow 'a': trigger: ",
        "'nothing.*' matches no Stripe event type",
        id="wildcard-matches-no-type",
    ),
    pytest.param(
        _flow(trigger="Customer.Created"),
        "flows.yaml:3: flow 'a': trigger: ",
        "'Customer.Created' matches no Stripe event type",
        id="trigger-is-case-sensitive",
    ),
    pytest.param(
        _flow(trigger="[customer.created, invoice.payed]"),
        "flows.yaml:3: flow 'a': trigger: ",
        "'invoice.payed' matches no Stripe event type",
        id="one-trigger-of-a-list",
    ),
    # Filters on a sample event of each type they trigger on.
    pytest.param(
        _flow("filter: email"),
        "flows.yaml:5: flow 'a': filter: ",
        f"'email' gives null on a sample customer.created event, {NOT_BOOLEAN}",
        id="filter-null-on-customer",
    ),
    pytest.param(
        _flow("filter: status", trigger="'invoice.*'"),
        "flows.yaml:5: flow 'a': filter: ",
        "'status' gives \"draft\" on a sample invoice.created event, not a boolean",
        id="filter-string-on-invoice-wildcard",
    ),
    pytest.param(
        _flow("filter: address", trigger="'terminal.location.*'"),
        "flows.yaml:5: flow 'a': filter: ",
        '\'address\' gives {"city": "San Francisco", "country": "US", "line1": "1234 Fake Street"',
        id="filter-object-on-location-wildcard",
    ),
    pytest.param(
        _flow("filter: amount_refunded", trigger="charge.refunded"),
        "flows.yaml:5: flow 'a': filter: ",
        "'amount_refunded' gives 100 on a sample charge.refunded event, not a boolean",
        id="filter-number-on-charge",
    ),
    pytest.param(
        _flow("filter: metadata", trigger="customer.synced"),
        "flows.yaml:5: flow 'a': filter: ",
        "'metadata' gives {} on a sample customer.synced event, not a boolean",
        id="filter-on-synthetic-type",
    ),
    pytest.param(
        _flow("filter: $event.type", trigger="'customer.*'"),
        "flows.yaml:5: flow 'a': filter: ",
        "'$event.type' gives \"customer.created\" on a sample customer.created event",
        id="filter-event-type-not-compared",
    ),
    pytest.param(
        _flow("filter: livemode", trigger="'*'"),
        "flows.yaml:5: flow 'a': filter: ",
        "'livemode' gives null on a sample ",
        id="filter-on-every-type",
    ),
    pytest.param(
        _flow(
            "filter: \"object == 'customer' || amount_due\"",
            trigger="[customer.created, invoice.paid]",
        ),
        "flows.yaml:5: flow 'a': filter: ",
        "gives 1000 on a sample invoice.paid event, not a boolean",
        id="filter-boolean-on-one-type-not-the-next",
    ),
    pytest.param(
        _flow("filter: starts_with(balance, 'j')"),
        "flows.yaml:5: flow 'a': filter: ",
        "expression \"starts_with(balance, 'j')\" failed: In function starts_with(), invalid "
        "type for value: 0",
        id="filter-fails-on-the-sample",
    ),
]


@pytest.mark.parametrize(("text", "prefix", "fragment"), CASES)
def test_each_problem(text: str, prefix: str, fragment: str) -> None:
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(prefix), problems[0]
    assert fragment in problems[0]
    assert "\n" not in problems[0]


@pytest.mark.parametrize(
    ("text", "prefix", "fragment"),
    [
        pytest.param(
            _flow("fields:", "  email: 5"),
            "flows.yaml:6: flow 'a': fields.email: ",
            "Input should be a valid string",
            id="field-expression-not-a-string",
        ),
        pytest.param(
            _text(
                "flows:",
                "  - name: a",
                "    action: upsert_contact",
                "    trigger:",
                "      - customer.created",
                "      - 5",
            ),
            "flows.yaml:6: flow 'a': trigger.1: ",
            "Input should be a valid string",
            id="trigger-entry-not-a-string",
        ),
    ],
)
def test_schema_problem_inside_a_list_or_mapping(text: str, prefix: str, fragment: str) -> None:
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(prefix), problems[0]
    assert fragment in problems[0]


def test_filter_raising_on_the_sample_is_a_problem() -> None:
    problems = _problems(_flow("filter: template('{', @) == ''"))
    assert len(problems) == 1
    assert problems[0].startswith("flows.yaml:5: flow 'a': filter: ")


def test_duplicate_field_key_is_reported_on_its_line() -> None:
    text = _flow("fields:", "  email: email", "  email: lowr(email)")
    problems = _problems(text)
    assert problems, "a duplicate key should be a problem"
    assert all(problem.startswith("flows.yaml:7: ") for problem in problems), problems


# Several problems.


SEVERAL = _text(
    "flows:",  # 1
    "  - name: first",  # 2
    "    trigger: [customer.created, nothing.*]",  # 3
    "    action: upsert_contact",  # 4
    "    filter: email",  # 5
    "    fields:",  # 6
    "      emial: email",  # 7
    "      name: lowr(name)",  # 8
    "      address.city: address.city",  # 9: fine
    "  - name: second",  # 10
    "    trigger: invoice.paid",  # 11
    "    action: log_invoce",  # 12
    "    fields:",  # 13
    "      total: cents_to_decimal(total)",  # 14
    "  - name: first",  # 15
    "    trigger: customer.updated",  # 16
    "    action: add_tag",  # 17
    "    options:",  # 18
    "      tags: vip",  # 19
)


def test_several_problems_are_all_reported_in_order() -> None:
    problems = flowfile.check(SEVERAL, WHERE).problems
    assert [(p.line, p.flow, p.field) for p in problems] == [
        (3, "first", "trigger"),
        (7, "first", "field 'emial'"),
        (8, "first", "field 'name'"),
        (5, "first", "filter"),
        (12, "second", "action"),
        (14, "second", "field 'total'"),
        (15, "first", None),
        (18, "first", "options"),
    ]
    assert "'nothing.*' matches no Stripe event type" in problems[0].message
    assert "gives null on a sample customer.created event" in problems[3].message
    assert "flow names must be unique" in problems[6].message


def test_several_schema_problems_are_all_reported() -> None:
    text = _text(
        "flows:",
        "  - name: a",
        "    trigger: customer.created",
        "  - name: b",
        "    action: upsert_contact",
    )
    problems = _problems(text)
    assert problems == [
        "flows.yaml:2: flow 'a': action: Field required",
        "flows.yaml:4: flow 'b': trigger: Field required",
    ]


def test_parse_raises_with_every_problem() -> None:
    expected = _problems(SEVERAL)
    with pytest.raises(errors.ConfigError) as caught:
        flowfile.parse(SEVERAL, WHERE)
    message = str(caught.value)
    for problem in expected:
        assert problem in message
    assert message == "; ".join(expected)


# YAML anchors and aliases, as in the prebuilt file.


def _replace(text: str, old: str, new: str) -> tuple[str, int]:
    """`text` with the one line `old` replaced by `new`, and that line's number."""
    lines = text.splitlines()
    found = [index for index, line in enumerate(lines) if line == old]
    assert len(found) == 1, (old, found)
    lines[found[0]] = new
    return "\n".join(lines) + "\n", found[0] + 1


def test_prebuilt_flows_have_no_problems() -> None:
    checked = flowfile.check(flowfile.default_text(), flowfile.DEFAULTS)
    assert checked.problems == []
    assert checked.registry is not None
    assert len(checked.registry.flows) == len(flowfile.load().flows) == 8


def test_problem_in_an_anchor_is_reported_for_each_alias_on_the_anchor_line() -> None:
    text, line = _replace(flowfile.default_text(), "      email: email", "      email: lowr(email)")
    problems = flowfile.check(text, WHERE).problems
    assert [(p.line, p.flow, p.field) for p in problems] == [
        (line, "contacts", "field 'email'"),
        (line, "contact-deletions", "field 'email'"),
    ]


def test_problem_in_invoice_anchor_reaches_three_flows() -> None:
    text, line = _replace(flowfile.default_text(), "      number: number", "      number: numbr(@)")
    problems = flowfile.check(text, WHERE).problems
    assert [(p.line, p.flow) for p in problems] == [
        (line, "invoices"),
        (line, "invoice-payments"),
        (line, "invoice-deletions"),
    ]


def test_alias_into_the_wrong_action_points_at_the_anchor_lines() -> None:
    base = flowfile.default_text()
    text, action_line = _replace(base, "    action: archive_contact", "    action: log_invoice")
    lines = text.splitlines()

    def line_of(key: str) -> int:  # the first (the anchor's) line of `key:`
        return next(i + 1 for i, line in enumerate(lines) if line == f"      {key}: {key}")

    problems = flowfile.check(text, WHERE).problems
    assert all(p.flow == "contact-deletions" for p in problems)
    assert [(p.field, p.line) for p in problems] == [
        (f"field {key!r}", line_of(key)) for key in ("email", "name", "phone", "address")
    ]
    assert action_line > max(p.line or 0 for p in problems)  # the alias comes after


def test_unknown_action_in_the_prebuilt_file_is_on_its_line() -> None:
    text, line = _replace(
        flowfile.default_text(), "    action: archive_invoice", "    action: nope"
    )
    assert [str(p) for p in flowfile.check(text, WHERE).problems] == [
        f"flows.yaml:{line}: flow 'invoice-deletions': action: unknown action 'nope'; actions "
        "are: add_tag, archive_contact, archive_invoice, archive_location, log_event, "
        "log_invoice, remove_tag, send_webhook, set_fields, update_payment_status, upsert_contact, "
        "upsert_location"
    ]


GOOD = _text(
    "flows:",
    "  - name: tiers",
    "    trigger: ['customer.*']",
    "    filter: \"livemode == `false` && !ends_with(email || '', '@example.com')\"",
    "    action: upsert_contact",
    "    options: {match_on: [email]}",
    "    fields:",
    "      email: lower(trim(email))",
    "      address.city: address.city",
    "      metadata.tier: default(metadata.tier, 'free')",
    "      custom.plan: concat($event.type, ':', id)",
    "  - name: vip",
    "    trigger: customer.subscription.created",
    "    action: add_tag",
    "    options: {tags: [subscriber]}",
    "    fields: {stripe_customer_id: customer}",
    "  - name: refunds",
    "    trigger: charge.refunded",
    "    action: log_event",
    "    options: {type: refund}",
    "    fields:",
    "      stripe_customer_id: customer",
    "      title: \"template('Refund of {amount_refunded}', @)\"",
    "      amount: cents_to_decimal(amount_refunded, currency)",
    "  - name: location-custom",
    "    trigger: terminal.location.updated",
    "    action: set_fields",
    "    options: {record: location}",
    "    fields:",
    "      stripe_location_id: id",
    "      custom.currency: country_currency(address.country)",
)


def test_a_good_custom_file_has_no_problems() -> None:
    checked = flowfile.check(GOOD, WHERE)
    assert checked.problems == []
    assert checked.registry is not None
    assert [f.name for f in checked.registry.flows] == [
        "tiers",
        "vip",
        "refunds",
        "location-custom",
    ]


def test_a_null_tolerant_filter_passes_on_a_sample_without_the_field() -> None:
    text = "\n".join(
        [
            "flows:",
            "  - name: not-blocked",
            "    trigger: customer.created",
            "    filter: \"!ends_with(email, '@blocked.example')\"",
            "    action: upsert_contact",
            "    fields: {stripe_customer_id: id}",
        ]
    )
    checked = flowfile.check(text, WHERE)
    assert checked.problems == []


# `snapshots mappings validate FILE`


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """`run(*args) -> (exit code, stdout, stderr)` through `snapshots.cli.main`; restores the
    logging levels the command sets."""
    names = ["", "stripe", "alembic", "snapshots.stripe", "httpx"]
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(logging.getLogger().handlers)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield invoke
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = handlers


def test_validate_a_good_file(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD, encoding="utf-8")
    code, out, err = run("mappings", "validate", str(path))
    assert (code, err) == (0, "")
    assert "ok, 4 flows" in " ".join(out.split())


def test_validate_the_prebuilt_file(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(flowfile.default_text(), encoding="utf-8")
    code, out, err = run("mappings", "validate", str(path))
    assert (code, err) == (0, "")
    assert "ok, 8 flows" in " ".join(out.split())


def test_validate_a_bad_file_prints_each_problem(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SEVERAL, encoding="utf-8")
    code, out, err = run("mappings", "validate", str(path))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines == [f"error: {p}" for p in flowfile.check(SEVERAL, str(path)).problems]
    assert len(lines) == 8
    assert (
        lines[0]
        == f"error: {path}:3: flow 'first': trigger: 'nothing.*' matches no Stripe event type"
    )
    assert lines[4].startswith(
        f"error: {path}:12: flow 'second': action: unknown action 'log_invoce'"
    )


def test_validate_a_yaml_error(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(_text("flows:", "  - name: a", "   action: x"), encoding="utf-8")
    code, _, err = run("mappings", "validate", str(path))
    assert code == 2
    assert err.splitlines() == [
        f"error: {path}:3: not valid YAML: expected <block end>, but found '<block mapping start>'"
    ]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        pytest.param("missing.yaml", None, "No such file or directory", id="missing-file"),
        pytest.param(
            "latin1.yaml",
            "flows: []\n# café\n".encode("latin-1"),
            "'utf-8' codec can't decode byte 0xe9",
            id="not-utf-8",
        ),
        pytest.param("a-directory", b"", "Is a directory", id="a-directory"),
    ],
)
def test_validate_an_unreadable_file(
    run: Run, tmp_path: Path, name: str, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / name
    if name == "a-directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    code, out, err = run("mappings", "validate", str(path))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot read {path}: "), lines[0]
    assert fragment in lines[0]
