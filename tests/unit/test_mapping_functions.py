"""Every custom mapping function, table-driven, through `mapping.Expression(source).evaluate`
(the way flows call them): unicode, null passthrough, type errors, currencies, `$event`.

`tests/unit/test_mapping.py` holds the first tests of the module; this file goes over each
function row by row. A result is compared with its type (`19.99` is a float, `500` an int,
`False` is not `0`)."""

from __future__ import annotations

from typing import Any

import pytest

from snapshots import errors, mapping, samples

DATA: dict[str, Any] = {
    "ecole": "ÉCOLE",
    "strasse": "straße",
    "istanbul": "  İstanbul  ",
    "party": " 🎉 Fête ",
    "greek": "ΣΊΣΥΦΟΣ",
    "nbsp": "\u00a0\u2003café\u3000",
    "name": "Zoë",
    "id": "cus_123",
    "empty": "",
    "null": None,
    "zero": 0,
    "false": False,
    "true": True,
    "int": 5,
    "float": 1.5,
    "whole_float": 2.0,
    "negative": -3,
    "list": [1, "two"],
    "address": {"city": "München", "country": "DE", "zip": None},
    "null_address": None,
    "csv": "vip,beta,,gold",
    "unicode_csv": "é—ü—🎉",
}


def _same(result: Any, expected: Any) -> None:
    """Equal, and of the same type (so 1 is not 1.0, 0 is not False)."""
    assert (result, type(result)) == (expected, type(expected))


def _rows(*rows: tuple[str, Any, str]) -> list[Any]:
    return [pytest.param(source, expected, id=case_id) for source, expected, case_id in rows]


# lower / upper / trim

STRING_CASES = _rows(
    ("lower(ecole)", "école", "lower-accented-capitals"),
    ("lower(strasse)", "straße", "lower-eszett-stays"),
    ("lower(istanbul)", "  i\u0307stanbul  ", "lower-dotted-capital-i-keeps-spaces"),
    ("lower(greek)", "σίσυφος", "lower-greek-final-sigma"),
    ("lower(party)", " 🎉 fête ", "lower-emoji-untouched"),
    ("lower(name)", "zoë", "lower-diaeresis"),
    ("lower(empty)", "", "lower-empty"),
    ("lower(null)", None, "lower-null"),
    ("lower(missing)", None, "lower-missing"),
    ("upper(ecole)", "ÉCOLE", "upper-already-upper"),
    ("upper(strasse)", "STRASSE", "upper-eszett-expands"),
    ("upper(istanbul)", "  İSTANBUL  ", "upper-dotted-capital-i"),
    ("upper(party)", " 🎉 FÊTE ", "upper-emoji-untouched"),
    ("upper(name)", "ZOË", "upper-diaeresis"),
    ("upper(empty)", "", "upper-empty"),
    ("upper(null)", None, "upper-null"),
    ("upper(missing)", None, "upper-missing"),
    ("trim(istanbul)", "İstanbul", "trim-unicode-word"),
    ("trim(party)", "🎉 Fête", "trim-keeps-inner-space-and-emoji"),
    ("trim(nbsp)", "café", "trim-unicode-spaces"),
    ("trim(ecole)", "ÉCOLE", "trim-nothing-to-trim"),
    ("trim(empty)", "", "trim-empty"),
    ("trim(null)", None, "trim-null"),
    ("trim(missing)", None, "trim-missing"),
    ("lower(trim(istanbul))", "i\u0307stanbul", "trim-then-lower"),
    ("upper(lower(ecole))", "ÉCOLE", "lower-then-upper"),
)


@pytest.mark.parametrize(("source", "expected"), STRING_CASES)
def test_lower_upper_trim(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


# default

DEFAULT_CASES = _rows(
    ("default(name, 'x')", "Zoë", "keeps-a-string"),
    ("default(null, 'x')", "x", "null"),
    ("default(missing, 'x')", "x", "missing"),
    ("default(empty, 'x')", "x", "empty-string"),
    ("default(zero, 'x')", 0, "keeps-zero"),
    ("default(false, 'x')", False, "keeps-false"),
    ("default(true, 'x')", True, "keeps-true"),
    ("default(list, 'x')", [1, "two"], "keeps-a-list"),
    ("default(`[]`, 'x')", [], "keeps-an-empty-list"),
    ("default(`{}`, 'x')", {}, "keeps-an-empty-object"),
    ("default(address, 'x')", DATA["address"], "keeps-an-object"),
    ("default(null, `0`)", 0, "number-fallback"),
    ("default(empty, `false`)", False, "false-fallback"),
    ("default(null, null)", None, "null-fallback"),
    ("default(null, 'Zoë 🎉')", "Zoë 🎉", "unicode-fallback"),
    ("default(null, default(empty, 'z'))", "z", "nested"),
    ("default(address.zip, address.city)", "München", "nested-null-field"),
)


@pytest.mark.parametrize(("source", "expected"), DEFAULT_CASES)
def test_default(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


# concat

CONCAT_CASES = _rows(
    ("concat(name)", "Zoë", "one-string"),
    ("concat(id, '@', 'example.com')", "cus_123@example.com", "three-strings"),
    ("concat(int, '-', negative)", "5--3", "integers"),
    ("concat(float)", "1.5", "float"),
    ("concat(whole_float)", "2", "whole-float-without-point"),
    ("concat(zero)", "0", "zero"),
    ("concat(true, '/', false)", "true/false", "booleans-as-json"),
    ("concat('a', null, 'b')", "ab", "null-is-empty"),
    ("concat(null)", "", "only-null"),
    ("concat(missing, missing)", "", "only-missing"),
    ("concat(name, ' ', party)", "Zoë  🎉 Fête ", "unicode-and-emoji"),
    ("concat(empty, '')", "", "empty-strings"),
    ("concat(upper(name), `7`)", "ZOË7", "nested-call"),
)


@pytest.mark.parametrize(("source", "expected"), CONCAT_CASES)
def test_concat(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


# template

TEMPLATE_CASES = _rows(
    ("template('Hi {name}', @)", "Hi Zoë", "field"),
    ("template('{id}: {name} ({address[city]})', @)", "cus_123: Zoë (München)", "fields"),
    ("template('[{nope}]', @)", "[]", "missing-field-is-empty"),
    ("template('{address[city]}', @)", "München", "nested-field"),
    ("template('[{address[nope]}]', @)", "[]", "missing-nested-field"),
    ("template('[{address[zip]}]', @)", "[]", "null-nested-field"),
    ("template('[{null_address[city]}]', @)", "[]", "nested-under-null"),
    ("template('[{null}]', @)", "[]", "null-field"),
    ("template('{int} {negative}', @)", "5 -3", "integers"),
    ("template('{float} {whole_float}', @)", "1.5 2", "floats"),
    ("template('{true} {false}', @)", "true false", "booleans-as-json"),
    ("template('{zero}', @)", "0", "zero"),
    ("template('{list[1]}', @)", "two", "list-index"),
    ("template('{float:.2f}', @)", "1.50", "format-spec"),
    ("template('{{literal}} {name}', @)", "{literal} Zoë", "escaped-braces"),
    ("template('{{}}', @)", "{}", "only-escaped-braces"),
    ("template('Grüße, {name} 🎉', @)", "Grüße, Zoë 🎉", "unicode-text"),
    ("template('no fields', @)", "no fields", "no-fields"),
    ("template('', @)", "", "empty-text"),
    ("template('[{0}]', @)", "[]", "positional-is-empty"),
    ("template(null, @)", None, "null-text"),
    ("template(missing, @)", None, "missing-text"),
    ("template('x{name}', null)", "x", "null-object"),
    (
        "template('{object} {status}', {object: 'subscription', status: 'active'})",
        "subscription active",
        "multiselect-object",
    ),
)


@pytest.mark.parametrize(("source", "expected"), TEMPLATE_CASES)
def test_template(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


# split (and jmespath's join, its inverse)

SPLIT_CASES = _rows(
    ("split(csv, ',')", ["vip", "beta", "", "gold"], "comma-keeps-empty-parts"),
    ("split('a::b', '::')", ["a", "b"], "multi-character-separator"),
    ("split(unicode_csv, '—')", ["é", "ü", "🎉"], "unicode-separator"),
    ("split(name, '')", ["Z", "o", "ë"], "empty-separator-gives-characters"),
    ("split('🎉é', '')", ["🎉", "é"], "empty-separator-unicode"),
    ("split(name, ',')", ["Zoë"], "separator-absent"),
    ("split(empty, ',')", [""], "empty-string"),
    ("split(empty, '')", [], "empty-string-empty-separator"),
    ("split(null, ',')", None, "null"),
    ("split(missing, '')", None, "missing"),
    ("join('|', split(csv, ','))", "vip|beta||gold", "join-inverse"),
    ("length(split(unicode_csv, '—'))", 3, "length-of-parts"),
)


@pytest.mark.parametrize(("source", "expected"), SPLIT_CASES)
def test_split(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


# cents_to_decimal: Stripe's minor units (https://docs.stripe.com/currencies)

ZERO_DECIMAL = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
THREE_DECIMAL = "BHD JOD KWD OMR TND".split()

CENTS_CASES = [
    *[
        pytest.param(1999, code.lower(), 1999, id=f"{code}-zero-decimal-unchanged")
        for code in ZERO_DECIMAL
    ],
    *[
        pytest.param(1999, code.lower(), 1.999, id=f"{code}-three-decimals")
        for code in THREE_DECIMAL
    ],
    pytest.param(1999, "isk", 19.99, id="ISK-two-decimals-as-stripe"),
    pytest.param(1999, "huf", 19.99, id="HUF-two-decimals-as-stripe"),
    pytest.param(1999, "usd", 19.99, id="USD"),
    pytest.param(1999, "eur", 19.99, id="EUR"),
    pytest.param(1999, "gbp", 19.99, id="GBP"),
    pytest.param(1999, "USD", 19.99, id="USD-upper-case"),
    pytest.param(1999, "Usd", 19.99, id="USD-mixed-case"),
    pytest.param(500, "JPY", 500, id="JPY-upper-case"),
    pytest.param(1999, "KWD", 1.999, id="KWD-upper-case"),
    pytest.param(1999, "ISK", 19.99, id="ISK-upper-case"),
    pytest.param(-1999, "usd", -19.99, id="negative-usd"),
    pytest.param(-500, "jpy", -500, id="negative-jpy"),
    pytest.param(-1, "kwd", -0.001, id="negative-kwd"),
    pytest.param(0, "usd", 0, id="zero-usd"),
    pytest.param(0, "jpy", 0, id="zero-jpy"),
    pytest.param(0, "kwd", 0, id="zero-kwd"),
    pytest.param(1, "usd", 0.01, id="one-cent"),
    pytest.param(10, "usd", 0.1, id="ten-cents"),
    pytest.param(29, "usd", 0.29, id="float-prone-cents"),
    pytest.param(1001, "usd", 10.01, id="float-prone-dollars"),
    pytest.param(100, "usd", 1, id="whole-dollar-is-an-int"),
    pytest.param(1000, "kwd", 1, id="whole-dinar-is-an-int"),
    pytest.param(123456789012, "usd", 1234567890.12, id="large-usd"),
    pytest.param(99999999, "usd", 999999.99, id="stripe-max-usd"),
    pytest.param(999999999999, "jpy", 999999999999, id="large-jpy"),
    pytest.param(123456789012, "kwd", 123456789.012, id="large-kwd"),
    pytest.param(1999.0, "usd", 19.99, id="float-amount"),
]


@pytest.mark.parametrize(("amount", "currency", "expected"), CENTS_CASES)
def test_cents_to_decimal(amount: float, currency: str, expected: float) -> None:
    expression = mapping.Expression("cents_to_decimal(amount, currency)")
    _same(expression.evaluate({"amount": amount, "currency": currency}), expected)


CENTS_NULL_CASES = _rows(
    ("cents_to_decimal(null, 'usd')", None, "null-amount"),
    ("cents_to_decimal(missing, 'usd')", None, "missing-amount"),
    ("cents_to_decimal(`1999`, null)", None, "null-currency"),
    ("cents_to_decimal(`1999`, missing)", None, "missing-currency"),
    ("cents_to_decimal(null, null)", None, "both-null"),
    ("cents_to_decimal(total, currency)", 10, "over-the-invoice-fixture-shape"),
)


@pytest.mark.parametrize(("source", "expected"), CENTS_NULL_CASES)
def test_cents_to_decimal_nulls(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate({"total": 1000, "currency": "usd"}), expected)


# iso_datetime

ISO_CASES = _rows(
    ("iso_datetime(`0`)", "1970-01-01T00:00:00Z", "epoch"),
    ("iso_datetime(`1706702400`)", "2024-01-31T12:00:00Z", "known-timestamp"),
    ("iso_datetime(`1234567890`)", "2009-02-13T23:31:30Z", "stripe-fixture-created"),
    ("iso_datetime(`1706702400.5`)", "2024-01-31T12:00:00.500Z", "half-second"),
    ("iso_datetime(`1706702400.123456`)", "2024-01-31T12:00:00.123Z", "milliseconds-kept"),
    ("iso_datetime(`1706702400.0`)", "2024-01-31T12:00:00Z", "whole-float"),
    ("iso_datetime(`-1`)", "1969-12-31T23:59:59Z", "before-epoch"),
    ("iso_datetime(`4102444800`)", "2100-01-01T00:00:00Z", "far-future"),
    ("iso_datetime(null)", None, "null"),
    ("iso_datetime(missing)", None, "missing"),
)


@pytest.mark.parametrize(("source", "expected"), ISO_CASES)
def test_iso_datetime(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


# country_currency (Babel's CLDR data)

COUNTRY_CASES = [
    pytest.param("US", "usd", id="US"),
    pytest.param("DE", "eur", id="DE"),
    pytest.param("FR", "eur", id="FR"),
    pytest.param("IE", "eur", id="IE"),
    pytest.param("JP", "jpy", id="JP"),
    pytest.param("GB", "gbp", id="GB"),
    pytest.param("CH", "chf", id="CH"),
    pytest.param("LI", "chf", id="LI-uses-swiss-franc"),
    pytest.param("IN", "inr", id="IN"),
    pytest.param("BR", "brl", id="BR"),
    pytest.param("CA", "cad", id="CA"),
    pytest.param("AU", "aud", id="AU"),
    pytest.param("MX", "mxn", id="MX"),
    pytest.param("SE", "sek", id="SE"),
    pytest.param("DK", "dkk", id="DK"),
    pytest.param("PL", "pln", id="PL"),
    pytest.param("KR", "krw", id="KR"),
    pytest.param("KW", "kwd", id="KW"),
    pytest.param("IS", "isk", id="IS"),
    pytest.param("EC", "usd", id="EC-uses-us-dollar"),
    pytest.param("de", "eur", id="lower-case"),
    pytest.param("gB", "gbp", id="mixed-case"),
    pytest.param(" us ", "usd", id="outer-spaces"),
    pytest.param("XX", None, id="unknown-XX"),
    pytest.param("AQ", None, id="antarctica-no-currency"),
    pytest.param("", None, id="empty"),
    pytest.param("12", None, id="digits"),
    pytest.param("U1", None, id="letter-and-digit"),
    pytest.param("USA", None, id="three-letters"),
    pytest.param("U", None, id="one-letter"),
    pytest.param("ÄÖ", None, id="non-ascii-letters"),
    pytest.param(None, None, id="null"),
]


@pytest.mark.parametrize(("country", "expected"), COUNTRY_CASES)
def test_country_currency(country: str | None, expected: str | None) -> None:
    expression = mapping.Expression("country_currency(country)")
    _same(expression.evaluate({"country": country}), expected)


def test_country_currency_missing_field_is_null() -> None:
    assert mapping.Expression("country_currency(address.country)").evaluate({}) is None


# invoice_payment_status

OPEN = {"status": "open", "amount_paid": 0, "attempt_count": 0, "attempted": False}

PAYMENT_STATUS_CASES = [
    pytest.param({"status": "draft"}, "draft", id="draft"),
    pytest.param(OPEN, "unpaid", id="open-unpaid"),
    pytest.param({"status": "open"}, "unpaid", id="open-without-counters"),
    pytest.param(OPEN | {"amount_paid": 400}, "partially_paid", id="open-partially-paid"),
    pytest.param(OPEN | {"attempt_count": 1, "attempted": True}, "failed", id="open-failed"),
    pytest.param(
        OPEN | {"attempt_count": 2, "attempted": True, "amount_paid": 400},
        "failed",
        id="open-failed-beats-partially-paid",
    ),
    pytest.param({"status": "paid", "amount_paid": 1000}, "paid", id="paid"),
    pytest.param({"status": "void"}, "void", id="void"),
    pytest.param({"status": "uncollectible"}, "uncollectible", id="uncollectible"),
    pytest.param({"status": "deleted"}, None, id="unknown-status"),
    pytest.param({"status": None}, None, id="null-status"),
    pytest.param({}, None, id="no-status"),
]


@pytest.mark.parametrize(("invoice", "expected"), PAYMENT_STATUS_CASES)
def test_invoice_payment_status(invoice: dict[str, Any], expected: str | None) -> None:
    _same(mapping.Expression("invoice_payment_status(@)").evaluate(invoice), expected)


# starts_with / ends_with / contains: null is "no match", not a type error

PREDICATE_CASES = _rows(
    ("starts_with(id, 'cus_')", True, "starts-with"),
    ("starts_with(id, 'in_')", False, "starts-with-not"),
    ("starts_with(null, 'cus_')", False, "starts-with-null-literal"),
    ("starts_with(missing, 'cus_')", False, "starts-with-missing-field"),
    ("ends_with(name, 'ë')", True, "ends-with-unicode"),
    ("ends_with(null, '@x.example')", False, "ends-with-null"),
    ("!ends_with(missing, '@blocked.example')", True, "negated-ends-with-null"),
    ("contains(csv, 'gold')", True, "contains-string"),
    ("contains(null, 'gold')", False, "contains-null"),
    ("contains(list, 'two')", True, "contains-list"),
    ("contains(list, `1`)", True, "contains-list-number"),
    ("contains(csv, `5`)", False, "contains-string-number"),
)


@pytest.mark.parametrize(("source", "expected"), PREDICATE_CASES)
def test_string_predicates(source: str, expected: Any) -> None:
    _same(mapping.Expression(source).evaluate(DATA), expected)


PREDICATE_TYPE_ERRORS = _rows(
    ("starts_with(int, 'x')", "starts_with()", "starts-with-number"),
    ("ends_with(address, 'x')", "ends_with()", "ends-with-object"),
    ("ends_with(id, null)", "ends_with()", "ends-with-null-suffix"),
    ("contains(int, 'x')", "contains()", "contains-number"),
)


@pytest.mark.parametrize(("source", "function"), PREDICATE_TYPE_ERRORS)
def test_string_predicates_still_refuse_wrong_types(source: str, function: str) -> None:
    with pytest.raises(errors.DeadLetter) as caught:
        mapping.Expression(source).evaluate(DATA)
    assert f"In function {function}" in str(caught.value)
    assert "invalid type" in str(caught.value)


# event() / $event

EVENT = samples.sample_event(
    "customer.updated",
    obj={"id": "cus_evt", "object": "customer", "email": "zoë@example.com"},
    event_id="evt_functions",
)

EVENT_CASES = _rows(
    ("$event.type", "customer.updated", "type"),
    ("$event.id", "evt_functions", "id"),
    ("$event.data.object.id", "cus_evt", "object-id"),
    ("event().type", "customer.updated", "function-form"),
    ("$event.data.object.id == id", True, "object-is-the-data"),
    ("$event.type == 'customer.updated'", True, "in-a-comparison"),
    ("starts_with($event.type, 'customer.')", True, "as-an-argument"),
    ("concat($event.type, ':', id)", "customer.updated:cus_evt", "inside-concat"),
    ("upper($event.data.object.email)", "ZOË@EXAMPLE.COM", "nested-in-custom-function"),
    ("$event.nope", None, "missing-event-field"),
    ("'$event'", "$event", "raw-string-literal-left-alone"),
    ('`"$event"`', "$event", "json-literal-left-alone"),
    ('"$event"', "quoted identifier", "quoted-identifier-left-alone"),
    ("'it\\'s $event'", "it's $event", "escaped-quote-in-raw-string"),
    ("[$event.type, '$event']", ["customer.updated", "$event"], "both-in-one-expression"),
)


@pytest.mark.parametrize(("source", "expected"), EVENT_CASES)
def test_event_inside_for_event(source: str, expected: Any) -> None:
    data = EVENT["data"]["object"] | {"$event": "quoted identifier"}
    with mapping.for_event(EVENT):
        _same(mapping.Expression(source).evaluate(data), expected)


def test_event_outside_for_event_is_null() -> None:
    assert mapping.Expression("$event.type").evaluate({}) is None


def test_for_event_nests_and_restores() -> None:
    other = samples.sample_event("invoice.paid", obj={"id": "in_1"}, event_id="evt_other")
    expression = mapping.Expression("$event.id")
    with mapping.for_event(EVENT):
        with mapping.for_event(other):
            assert expression.evaluate({}) == "evt_other"
        assert expression.evaluate({}) == "evt_functions"
    assert expression.evaluate({}) is None


EXPAND_CASES = _rows(
    ("$event", "event()", "bare"),
    ("$event.type", "event().type", "field"),
    ("concat($event.type, id)", "concat(event().type, id)", "argument"),
    ("$event.a || $event.b", "event().a || event().b", "twice"),
    ("'$event'", "'$event'", "raw-string"),
    ('"$event"', '"$event"', "quoted-identifier"),
    ('`"$event"`', '`"$event"`', "json-literal"),
    ("'a\\'$event'", "'a\\'$event'", "escaped-quote-in-raw-string"),
    ('"a\\"$event"', '"a\\"$event"', "escaped-quote-in-identifier"),
    ('`"\\`$event"`', '`"\\`$event"`', "escaped-backtick-in-json-literal"),
    ("'x' == $event.type", "'x' == event().type", "after-a-string"),
    ("email", "email", "no-event"),
)


@pytest.mark.parametrize(("source", "expected"), EXPAND_CASES)
def test_expand_event(source: str, expected: str) -> None:
    assert mapping.expand_event(source) == expected


# Failures: type errors when the expression runs, bad calls when it compiles.

RUNTIME_ERROR_CASES = _rows(
    ("lower(`5`)", "lower()", "lower-of-number"),
    ("lower(`true`)", "lower()", "lower-of-boolean"),
    ("upper(list)", "upper()", "upper-of-list"),
    ("upper(address)", "upper()", "upper-of-object"),
    ("trim(int)", "trim()", "trim-of-number"),
    ("template(`5`, @)", "template()", "template-text-number"),
    ("template('x', 'not an object')", "template()", "template-object-string"),
    ("template('x', list)", "template()", "template-object-list"),
    ("split(int, ',')", "split()", "split-of-number"),
    ("split('a,b', `1`)", "split()", "split-separator-number"),
    ("split('a,b', null)", "split()", "split-separator-null"),
    ("cents_to_decimal('1999', 'usd')", "cents_to_decimal()", "cents-amount-string"),
    ("cents_to_decimal(`1999`, `840`)", "cents_to_decimal()", "cents-currency-number"),
    ("cents_to_decimal(true, 'usd')", "cents_to_decimal()", "cents-amount-boolean"),
    ("iso_datetime('2024-01-31')", "iso_datetime()", "iso-of-string"),
    ("iso_datetime(false)", "iso_datetime()", "iso-of-boolean"),
    ("country_currency(`49`)", "country_currency()", "country-of-number"),
    ("country_currency(address)", "country_currency()", "country-of-object"),
    ("invoice_payment_status('paid')", "invoice_payment_status()", "payment-status-of-string"),
    ("invoice_payment_status(null)", "invoice_payment_status()", "payment-status-of-null"),
)


@pytest.mark.parametrize(("source", "function"), RUNTIME_ERROR_CASES)
def test_type_errors_are_dead_letters(source: str, function: str) -> None:
    expression = mapping.Expression(source)  # compiles: only the value is wrong
    with pytest.raises(errors.DeadLetter) as caught:
        expression.evaluate(DATA)
    message = str(caught.value)
    assert caught.value.code == "mapping_failed"
    assert message.startswith(f"expression {source!r} failed: "), message
    assert f"In function {function}" in message
    assert "invalid type" in message
    assert "\n" not in message


COMPILE_ERROR_CASES = _rows(
    ("lowr(email)", "unknown function lowr()", "unknown-function"),
    ("to_upper(email)", "unknown function to_upper()", "unknown-function-plausible"),
    ("cents_to_decimal(amount)", "cents_to_decimal() takes 2 argument(s), not 1", "cents-one-arg"),
    (
        "cents_to_decimal(amount, currency, `2`)",
        "cents_to_decimal() takes 2 argument(s), not 3",
        "cents-three-args",
    ),
    ("lower()", "lower() takes 1 argument(s), not 0", "lower-no-args"),
    ("upper(a, b)", "upper() takes 1 argument(s), not 2", "upper-two-args"),
    ("trim(a, b)", "trim() takes 1 argument(s), not 2", "trim-two-args"),
    ("default(a)", "default() takes 2 argument(s), not 1", "default-one-arg"),
    ("default(a, b, c)", "default() takes 2 argument(s), not 3", "default-three-args"),
    ("concat()", "concat() takes at least 1 argument(s), not 0", "concat-no-args"),
    ("template('x')", "template() takes 2 argument(s), not 1", "template-one-arg"),
    ("split(s)", "split() takes 2 argument(s), not 1", "split-one-arg"),
    ("iso_datetime()", "iso_datetime() takes 1 argument(s), not 0", "iso-no-args"),
    ("country_currency(a, b)", "country_currency() takes 1 argument(s), not 2", "country-two"),
    ("invoice_payment_status()", "invoice_payment_status() takes 1", "payment-status-no-args"),
    ("event(@)", "event() takes 0 argument(s), not 1", "event-with-an-argument"),
    ("length(a, b)", "length() takes 1 argument(s), not 2", "builtin-arity"),
    ("lower(lowr(a))", "unknown function lowr()", "nested-unknown-function"),
    ("[a, upper()]", "upper() takes 1 argument(s), not 0", "call-in-a-list"),
    ("$event.type == lowr(a)", "unknown function lowr()", "call-beside-event"),
    ("$event(", "bad expression '$event('", "event-syntax-error"),
)


@pytest.mark.parametrize(("source", "fragment"), COMPILE_ERROR_CASES)
def test_bad_calls_fail_at_compile(source: str, fragment: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        mapping.Expression(source)
    message = str(caught.value)
    assert message.startswith(f"bad expression {source!r}: "), message
    assert fragment in message
    assert "\n" not in message


# Bugs: errors that escape as Python exceptions instead of a dead letter, and a template that
# reaches Python attributes.

ESCAPING_CASES = _rows(
    ("template('{', @)", "template()", "template-single-open-brace"),
    ("template('a } b', @)", "template()", "template-single-close-brace"),
    ("template('{name:d}', @)", "template()", "template-bad-format-spec"),
    ("iso_datetime(`1706702400000`)", "iso_datetime()", "iso-of-milliseconds"),
    ("iso_datetime(`1e20`)", "iso_datetime()", "iso-out-of-range"),
)


@pytest.mark.parametrize(("source", "function"), ESCAPING_CASES)
def test_value_errors_are_dead_letters(source: str, function: str) -> None:
    expression = mapping.Expression(source)
    with pytest.raises(errors.DeadLetter) as caught:
        expression.evaluate(DATA)
    assert caught.value.code == "mapping_failed"
    assert str(caught.value).startswith(f"expression {source!r} failed: ")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("template('[{name.__class__}]', @)", id="dunder-class"),
        pytest.param("template('[{name.upper}]', @)", id="bound-method"),
        pytest.param("template('[{address.__class__.__name__}]', @)", id="class-name"),
    ],
)
def test_template_attribute_lookups_are_refused(source: str) -> None:
    # Python attributes are never reached; the message points at the [key] syntax.
    with pytest.raises(errors.DeadLetter) as caught:
        mapping.Expression(source).evaluate(DATA)
    assert caught.value.code == "mapping_failed"
    assert "use [key] for a nested field" in str(caught.value)
