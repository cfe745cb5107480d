"""Mapping expressions: JMESPath plus the custom functions, compile-time and run-time errors."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots import errors, mapping
from tests.conftest import fixture

# Reused as the object of many cases: a field that is there, one explicitly null, one missing.
DATA: dict[str, Any] = {
    "plain": "Hello World",
    "accented": "ÉCOLE Ünïcödé",
    "german": "straße",
    "greek": "ΣΊΣΥΦΟΣ",
    "padded": "  \t padded \n ",
    "unicode_padded": "\u00a0\u2003café\u3000",
    "emoji": " 🎉 Party ",
    "empty": "",
    "null": None,
    "zero": 0,
    "false": False,
    "empty_list": [],
    "number": 42,
    "nested": {"name": "  Ada  "},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("lower(plain)", "hello world", id="lower-ascii"),
        pytest.param("lower(accented)", "école ünïcödé", id="lower-unicode"),
        pytest.param("lower(greek)", "σίσυφος", id="lower-greek-final-sigma"),
        pytest.param("lower(empty)", "", id="lower-empty"),
        pytest.param("lower(null)", None, id="lower-null"),
        pytest.param("lower(missing)", None, id="lower-missing"),
        pytest.param("lower(nested.name)", "  ada  ", id="lower-nested"),
        pytest.param("upper(plain)", "HELLO WORLD", id="upper-ascii"),
        pytest.param("upper(german)", "STRASSE", id="upper-unicode-expands"),
        pytest.param("upper(accented)", "ÉCOLE ÜNÏCÖDÉ", id="upper-unicode"),
        pytest.param("upper(null)", None, id="upper-null"),
        pytest.param("upper(missing)", None, id="upper-missing"),
        pytest.param("trim(padded)", "padded", id="trim-ascii-whitespace"),
        pytest.param("trim(unicode_padded)", "café", id="trim-unicode-whitespace"),
        pytest.param("trim(emoji)", "🎉 Party", id="trim-keeps-inner-space"),
        pytest.param("trim(empty)", "", id="trim-empty"),
        pytest.param("trim(null)", None, id="trim-null"),
        pytest.param("trim(missing)", None, id="trim-missing"),
        pytest.param("lower(trim(nested.name))", "ada", id="trim-then-lower"),
        pytest.param("default(plain, 'x')", "Hello World", id="default-keeps-value"),
        pytest.param("default(accented, 'x')", "ÉCOLE Ünïcödé", id="default-keeps-unicode"),
        pytest.param("default(null, 'x')", "x", id="default-null"),
        pytest.param("default(missing, 'x')", "x", id="default-missing"),
        pytest.param("default(empty, 'x')", "x", id="default-empty-string"),
        pytest.param("default(missing, 'ünï')", "ünï", id="default-unicode-fallback"),
        pytest.param("default(zero, 'x')", 0, id="default-keeps-zero"),
        pytest.param("default(false, 'x')", False, id="default-keeps-false"),
        pytest.param("default(empty_list, 'x')", [], id="default-keeps-empty-list"),
        pytest.param("default(missing, `7`)", 7, id="default-number-fallback"),
        pytest.param("default(missing, null)", None, id="default-null-fallback"),
        pytest.param("default(missing, default(null, 'z'))", "z", id="default-nested"),
        pytest.param("upper(default(missing, 'eur'))", "EUR", id="default-then-upper"),
    ],
)
def test_string_and_default_functions(source: str, expected: Any) -> None:
    assert mapping.Expression(source).evaluate(DATA) == expected


def _invoice(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "object": "invoice",
        "status": "open",
        "amount_due": 1000,
        "amount_paid": 0,
        "amount_remaining": 1000,
        "attempt_count": 0,
        "attempted": False,
    }
    return base | changes


@pytest.mark.parametrize(
    ("invoice", "expected"),
    [
        pytest.param(_invoice(status="draft"), "draft", id="draft"),
        pytest.param(_invoice(), "unpaid", id="open-unpaid"),
        pytest.param(
            _invoice(attempt_count=None, attempted=None, amount_paid=None),
            "unpaid",
            id="open-null-counters",
        ),
        pytest.param(
            {"status": "open"},
            "unpaid",
            id="open-missing-counters",
        ),
        pytest.param(
            _invoice(amount_paid=400, amount_remaining=600), "partially_paid", id="open-partly-paid"
        ),
        pytest.param(
            _invoice(attempt_count=1, attempted=True), "failed", id="open-after-failed-attempt"
        ),
        pytest.param(
            _invoice(attempt_count=3, attempted=True), "failed", id="open-after-many-failures"
        ),
        pytest.param(
            # Finalized, payment not tried yet: `attempted` is what says a try happened.
            _invoice(attempt_count=0, attempted=True),
            "unpaid",
            id="open-attempted-without-count",
        ),
        pytest.param(
            _invoice(status="paid", amount_paid=1000, amount_remaining=0, attempted=True),
            "paid",
            id="paid",
        ),
        pytest.param(
            _invoice(status="paid", amount_due=0, amount_paid=0), "paid", id="paid-zero-amount"
        ),
        pytest.param(_invoice(status="void"), "void", id="void"),
        pytest.param(
            _invoice(status="uncollectible", attempt_count=4, attempted=True),
            "uncollectible",
            id="uncollectible",
        ),
        pytest.param(_invoice(status=None), None, id="status-null"),
        pytest.param({"object": "invoice"}, None, id="status-missing"),
        pytest.param(_invoice(status="deleted"), None, id="status-unknown"),
    ],
)
def test_invoice_payment_status(invoice: dict[str, Any], expected: str | None) -> None:
    assert mapping.invoice_payment_status(invoice) == expected
    # The same through JMESPath, as the prebuilt flows call it.
    assert mapping.Expression("invoice_payment_status(@)").evaluate(invoice) == expected


def test_invoice_payment_status_on_the_stripe_fixture() -> None:
    invoice = fixture("invoice")
    assert invoice["status"] == "draft"
    assert mapping.Expression("invoice_payment_status(@)").evaluate(invoice) == "draft"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("email.", id="trailing-dot"),
        pytest.param("address[", id="open-bracket"),
        pytest.param("lower(", id="open-call"),
        pytest.param("@@", id="double-current"),
        pytest.param("", id="empty"),
        pytest.param("metadata.'key", id="unterminated-quote"),
        pytest.param("a ||", id="dangling-or"),
    ],
)
def test_syntax_errors_are_config_errors_at_compile(source: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        mapping.Expression(source)
    message = str(caught.value)
    assert repr(source) in message
    assert "\n" not in message  # one clear line, not JMESPath's caret drawing


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("lowr(email)", id="unknown-function"),
        pytest.param("lower(email, name)", id="too-many-arguments"),
        pytest.param("default(email)", id="too-few-arguments"),
    ],
)
def test_bad_function_calls_are_config_errors_at_compile(source: str) -> None:
    """A typo in a function name is as much a mistake in the flows file as a syntax error:
    refusing it when the file loads beats dead-lettering every event it meets."""
    with pytest.raises(errors.ConfigError) as caught:
        mapping.Expression(source)
    assert repr(source) in str(caught.value)


@pytest.mark.parametrize(
    ("source", "data"),
    [
        pytest.param("lower(number)", DATA, id="lower-of-number"),
        pytest.param("upper(nested)", DATA, id="upper-of-object"),
        pytest.param("trim(empty_list)", DATA, id="trim-of-list"),
        pytest.param("invoice_payment_status(plain)", DATA, id="payment-status-of-string"),
        pytest.param("invoice_payment_status(missing)", DATA, id="payment-status-of-null"),
        pytest.param("length(number)", DATA, id="builtin-type-error"),
        pytest.param("sum(plain)", DATA, id="builtin-sum-of-string"),
    ],
)
def test_runtime_failures_are_dead_letters(source: str, data: Any) -> None:
    expression = mapping.Expression(source)  # compiles: only the data is wrong
    with pytest.raises(errors.DeadLetter) as caught:
        expression.evaluate(data)
    assert caught.value.code == "mapping_failed"
    assert repr(source) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        pytest.param("customer.id || customer", {"customer": "cus_1"}, "cus_1", id="id-string"),
        pytest.param(
            "customer.id || customer",
            {"customer": {"id": "cus_2", "object": "customer"}},
            "cus_2",
            id="id-expanded",
        ),
        pytest.param("customer.id || customer", {}, None, id="id-missing"),
        pytest.param("metadata.plan", {"metadata": {"plan": "gold"}}, "gold", id="metadata"),
        pytest.param("metadata.plan", {"metadata": {}}, None, id="metadata-missing-key"),
        pytest.param("address.country", {"address": None}, None, id="nested-under-null"),
        pytest.param(
            "lines.data[0].amount", {"lines": {"data": []}}, None, id="index-out-of-range"
        ),
    ],
)
def test_paths_over_missing_values_give_null(source: str, data: Any, expected: Any) -> None:
    assert mapping.Expression(source).evaluate(data) == expected


def test_expression_keeps_its_source() -> None:
    expression = mapping.Expression("lower(email)")
    assert expression.source == "lower(email)"
    assert expression.evaluate({"email": "A@B.EXAMPLE"}) == "a@b.example"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner),
    max_leaves=8,
)


@given(
    keys=st.lists(st.sampled_from(["a", "b", "c", '"a-b"']), min_size=1, max_size=4),
    data=_JSON | st.dictionaries(st.sampled_from(["a", "b", "a-b"]), _JSON),
)
@settings(max_examples=300)
def test_field_paths_read_directly_give_what_jmespath_gives(keys: list[str], data: Any) -> None:
    source = ".".join(keys)
    expression = mapping.Expression(source)
    assert expression._paths is not None  # read directly, not by jmespath's interpreter
    assert expression.evaluate(data) == jmespath.search(source, data)


@given(
    paths=st.lists(
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3), min_size=2, max_size=3
    ),
    data=_JSON | st.dictionaries(st.sampled_from(["a", "b", "c"]), _JSON),
)
@settings(max_examples=300)
def test_alternatives_of_field_paths_read_directly_give_what_jmespath_gives(
    paths: list[list[str]], data: Any
) -> None:
    source = " || ".join(".".join(keys) for keys in paths)
    expression = mapping.Expression(source)
    assert expression._paths is not None
    assert expression.evaluate(data) == jmespath.search(source, data)


@pytest.mark.parametrize(
    "source", ["a[0]", "a.b[*]", "a || lower(b)", "lower(a)", "a | b", "@", "a && b"]
)
def test_other_expressions_go_through_jmespath(source: str) -> None:
    assert mapping.Expression(source)._paths is None
