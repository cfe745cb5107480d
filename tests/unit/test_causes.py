"""causes.py: the same fault about different events gives one cause; advice says what to do."""

from __future__ import annotations

import pytest

from snapshots import causes


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            "flow 'contacts': field 'custom.city': expression 'addr' failed: invalid type for "
            "value: cus_Nf3kQ8xYz1",
            "flow 'contacts': field 'custom.city': expression 'addr' failed: invalid type for "
            "value: cus_Abc123def9",
            id="stripe ids",
        ),
        pytest.param(
            "no contact for ada@example.com (item 12, 3 attempts)",
            "no contact for bob.smith+x@mail.example.org (item 9000, 17 attempts)",
            id="emails and numbers",
        ),
        pytest.param(
            "digest 0123456789abcdef0123 did not match",
            "digest fedcba98765432100000 did not match",
            id="hex",
        ),
        pytest.param("a   b\n c", "a b c", id="white space"),
    ],
)
def test_the_same_fault_gives_the_same_cause(first: str, second: str) -> None:
    assert causes.of(first) == causes.of(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            "flow 'contacts': field 'custom.city': expression failed",
            "flow 'invoices': field 'custom.city': expression failed",
            id="another flow",
        ),
        pytest.param(
            "flow 'contacts': field 'email': expression failed",
            "flow 'contacts': field 'phone': expression failed",
            id="another field",
        ),
        pytest.param("the customer has no id", "the invoice has no id", id="another message"),
    ],
)
def test_different_faults_stay_apart(first: str, second: str) -> None:
    assert causes.of(first) != causes.of(second)


def test_a_cause_is_bounded_and_none_stays_none() -> None:
    assert causes.of(None) is None and causes.of("") is None
    assert len(causes.of("x" * 5000) or "") == causes.LENGTH


@pytest.mark.parametrize(
    ("error", "status", "headline", "action", "flow"),
    [
        pytest.param(
            "flow 'contacts': field 'custom.city': expression 'a.b' failed: bad",
            "dead",
            "Flow 'contacts' failed: field 'custom.city': expression 'a.b' failed: bad",
            "Fix the mapping of 'custom.city' in flow 'contacts'",
            "contacts",
            id="a mapping",
        ),
        pytest.param(
            "flow 'live': filter 'x' gave 3, not a boolean",
            "dead",
            "Flow 'live' failed",
            "Fix the flow in flow 'live'",
            "live",
            id="a filter",
        ),
        pytest.param(
            "waiting for Stripe: refused",
            "pending",
            "Stripe refused",
            "Check the connection",
            None,
            id="stripe away",
        ),
        pytest.param(
            "gave up: the worker applying it stopped 5 times",
            "dead",
            "Workers stopped",
            "worker's log",
            None,
            id="crashing workers",
        ),
        pytest.param("boom", "failed", "boom", "tried again by itself", None, id="will retry"),
        pytest.param("boom", "dead", "boom", "then replay", None, id="dead, anything else"),
    ],
)
def test_advice_puts_what_to_do_first(
    error: str, status: str, headline: str, action: str, flow: str | None
) -> None:
    advice = causes.advise(error, status)
    assert advice is not None
    assert advice.headline.startswith(headline)
    assert action in advice.action
    assert advice.flow == flow


def test_no_error_no_advice() -> None:
    assert causes.advise(None, "done") is None


def test_field_names_are_not_taken_for_ids() -> None:
    assert causes.of("field 'payment_status' failed") == "field 'payment_status' failed"
    assert causes.of("no con_9aZ3kLm2 here") == "no <id> here"
