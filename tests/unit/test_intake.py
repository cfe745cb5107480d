"""`intake.verify` (Stripe-Signature over the raw bytes) and `intake.parse_event` (the envelope)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots import errors, intake
from snapshots.store.db import json_loads
from tests.conftest import WEBHOOK_SECRET, sign

OTHER_SECRET = "whsec_other_secret_9876543210"
TOLERANCE = 300  # seconds


def hexsig(payload: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    """The v1 signature of raw bytes, as Stripe computes it (no decoding involved)."""
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "evt_unit0001",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": 1_700_000_000,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.created",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()
BODY = json.dumps(event()).encode()


def now() -> int:
    return int(time.time())


def rejected_code(payload: bytes, header: str | None, secrets: list[str] | None = None) -> str:
    with pytest.raises(errors.BadRequest) as caught:
        intake.verify(payload, header, secrets or [WEBHOOK_SECRET], tolerance=TOLERANCE)
    assert caught.value.status == 400
    assert caught.value.message
    return caught.value.code


# verify: accepted


def test_a_stripe_signature_is_accepted() -> None:
    assert intake.verify(BODY, sign(BODY), [WEBHOOK_SECRET], tolerance=TOLERANCE) is None


@pytest.mark.parametrize(
    "secrets",
    [
        pytest.param([WEBHOOK_SECRET, OTHER_SECRET], id="signed-by-first"),
        pytest.param([OTHER_SECRET, WEBHOOK_SECRET], id="signed-by-second"),
    ],
)
def test_any_secret_of_the_connection_may_match(secrets: list[str]) -> None:
    intake.verify(BODY, sign(BODY), secrets, tolerance=TOLERANCE)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda t: f"t={t},v1={'0' * 64},v1={hexsig(BODY, t)}", id="wrong-then-right"),
        pytest.param(lambda t: f"t={t},v1={hexsig(BODY, t)},v1={'0' * 64}", id="right-then-wrong"),
        pytest.param(
            lambda t: f"t={t},v1={hexsig(BODY, t, OTHER_SECRET)},v1={hexsig(BODY, t)}",
            id="rotation-old-and-new",
        ),
        pytest.param(lambda t: f"t={t},v1={hexsig(BODY, t)},v0={'f' * 64}", id="garbage-v0"),
        pytest.param(lambda t: f"t={t + 200},v1={hexsig(BODY, t + 200)}", id="future-skew"),
        pytest.param(lambda t: f"t={t - 200},v1={hexsig(BODY, t - 200)}", id="within-tolerance"),
    ],
)
def test_accepted_headers(header: Any) -> None:
    intake.verify(BODY, header(now()), [WEBHOOK_SECRET], tolerance=TOLERANCE)


# verify: refused


@pytest.mark.parametrize(
    ("payload", "header", "code"),
    [
        pytest.param(BODY, None, "missing_signature", id="none"),
        pytest.param(BODY, "", "missing_signature", id="empty"),
        pytest.param(BODY, "garbage", "malformed_signature", id="garbage"),
        pytest.param(BODY, f"v1={'0' * 64}", "malformed_signature", id="no-timestamp"),
        pytest.param(BODY, "t=1700000000", "malformed_signature", id="no-v1"),
        pytest.param(BODY, f"t=abc,v1={'0' * 64}", "malformed_signature", id="timestamp-not-int"),
        pytest.param(BODY, f"t=,v1={'0' * 64}", "malformed_signature", id="timestamp-empty"),
        pytest.param(
            BODY, f"t=1700000000,v0={hexsig(BODY, 1700000000)}", "malformed_signature", id="only-v0"
        ),
        pytest.param(BODY, f"t=1700000000,v1={'0' * 64}", "signature_mismatch", id="wrong-hex"),
        pytest.param(BODY, "t=1700000000,v1=", "signature_mismatch", id="empty-v1"),
        pytest.param(b"\xff\xfe{}", "t=1,v1=00", "invalid_body", id="not-utf8"),
    ],
)
def test_refused_headers(payload: bytes, header: str | None, code: str) -> None:
    assert rejected_code(payload, header) == code


def test_a_timestamp_beyond_the_tolerance_in_the_future_is_refused() -> None:
    """Issue 15: accepted before; a signature dated an hour ahead is refused like a stale one."""
    t = now() + 3600
    header = f"t={t},v1={hexsig(BODY, t)}"
    with pytest.raises(errors.BadRequest) as caught:
        intake.verify(BODY, header, [WEBHOOK_SECRET], tolerance=TOLERANCE)
    assert caught.value.code == "timestamp_outside_tolerance"
    assert "in the future" in caught.value.message


def test_a_v0_signature_never_counts() -> None:
    t = now()
    header = f"t={t},v1={'0' * 64},v0={hexsig(BODY, t)}"
    assert rejected_code(BODY, header) == "signature_mismatch"


def test_a_signature_by_another_secret_is_refused() -> None:
    assert rejected_code(BODY, sign(BODY, OTHER_SECRET)) == "signature_mismatch"


def test_a_signature_for_other_bytes_is_refused() -> None:
    reserialized = json.dumps(json.loads(BODY), indent=2).encode()
    assert rejected_code(BODY, sign(reserialized)) == "signature_mismatch"


def test_the_signed_timestamp_is_the_header_timestamp() -> None:
    t = now()
    assert rejected_code(BODY, f"t={t},v1={hexsig(BODY, t - 1)}") == "signature_mismatch"


@pytest.mark.parametrize("age", [301, 3600, 10**6])
def test_an_old_timestamp_is_refused_even_when_signed(age: int) -> None:
    assert rejected_code(BODY, sign(BODY, timestamp=now() - age)) == "timestamp_outside_tolerance"


def test_a_stale_signature_says_stale_when_another_secret_mismatches() -> None:
    header = sign(BODY, timestamp=now() - 1000)
    code = rejected_code(BODY, header, [OTHER_SECRET, WEBHOOK_SECRET])
    assert code == "timestamp_outside_tolerance"


def test_the_tolerance_is_the_one_given() -> None:
    header = sign(BODY, timestamp=now() - 60)
    intake.verify(BODY, header, [WEBHOOK_SECRET], tolerance=300)
    with pytest.raises(errors.BadRequest) as caught:
        intake.verify(BODY, header, [WEBHOOK_SECRET], tolerance=10)
    assert caught.value.code == "timestamp_outside_tolerance"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("t=1700000000,v1=\xe9" + "0" * 63, id="in-v1"),
        pytest.param("t=1700000000,v1=" + "0" * 64 + ",v0=\xff", id="in-v0"),
        pytest.param("t=1700000000\xa0,v1=" + "0" * 64, id="in-timestamp"),
    ],
)
def test_a_non_ascii_header_is_malformed_not_a_crash(header: str) -> None:
    # Header bytes arrive latin-1 decoded, so any byte >= 0x80 can appear here.
    assert rejected_code(BODY, header) == "malformed_signature"


# What an ASGI server can hand us: header bytes decoded as latin-1, without control characters.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=70)
HEADER_ITEMS = st.lists(
    st.tuples(
        st.sampled_from(["t", "v1", "v0", "", " t"]) | HEADER_TEXT,
        st.integers(-(2**70), 2**70).map(str) | HEADER_TEXT,
    ),
    max_size=4,
).map(lambda items: ",".join(f"{k}={v}" for k, v in items))
SIGNATURE_HEADER = st.builds(
    lambda t, items: ",".join([f"t={t}", *(f"{k}={v}" for k, v in items)]),
    st.integers(0, 2**40).map(str) | HEADER_TEXT,
    st.lists(st.tuples(st.sampled_from(["v1", "v0"]) | HEADER_TEXT, HEADER_TEXT), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(
    payload=st.binary(max_size=200) | st.just(BODY),
    header=st.none() | HEADER_TEXT | HEADER_ITEMS | SIGNATURE_HEADER,
)
def test_verify_only_ever_refuses_with_bad_request(payload: bytes, header: str | None) -> None:
    with pytest.raises(errors.BadRequest):
        intake.verify(payload, header, [WEBHOOK_SECRET], tolerance=TOLERANCE)


def sdk_verdict(
    payload: bytes, header: str | None, secrets: list[str], now: float
) -> tuple[str, str] | None:
    """What `verify` answered when Stripe's SDK checked each secret (`verify_header`): the
    reference `verify` must keep to, as (code, message), or None when accepted."""
    try:
        if not header:
            raise errors.BadRequest("", code="missing_signature")
        if not header.isascii():
            raise intake._signature_error("Unable to extract")
        text = payload.decode("utf-8")
        failures = []
        for secret in secrets:
            try:
                stripe.WebhookSignature.verify_header(text, header, secret, TOLERANCE)
            except stripe.SignatureVerificationError as exc:
                failures.append(str(exc.user_message or exc))
                continue
            signed = intake._timestamp(header)
            if signed is not None and signed > now + TOLERANCE:
                raise errors.BadRequest("", code="timestamp_outside_tolerance")
            return None
        stale = [f for f in failures if f.startswith("Timestamp outside")]
        raise intake._signature_error((stale or failures or [""])[0])
    except UnicodeDecodeError:
        return ("invalid_body", "the body is not UTF-8 JSON")
    except errors.BadRequest as exc:
        return (exc.code, exc.message)


def signed_header(draw: st.DrawFn) -> str:
    """Headers Stripe (or a forger) could send: signatures by the secrets tested, or not,
    timestamps now, stale or in the future, items reordered, doubled or broken."""
    t = int(time.time()) + draw(st.sampled_from([0, -10, -TOLERANCE - 5, TOLERANCE + 5, 10**6]))
    stamp = draw(st.sampled_from([str(t), f" {t}", f"{t}_0", f"+{t}", "x", ""]))
    secret = draw(st.sampled_from([WEBHOOK_SECRET, OTHER_SECRET, "whsec_nobody"]))
    good = hexsig(BODY, t, secret)
    items = draw(
        st.lists(
            st.sampled_from(
                [
                    f"t={stamp}",
                    f"v1={good}",
                    f"v1={good[:-1]}0",
                    "v0=" + good,
                    "v1",
                    "t",
                    "=",
                    "v1=a=b",
                ]
            ),
            min_size=0,
            max_size=5,
        )
    )
    return ",".join(items)


@settings(max_examples=500, deadline=None)
@given(
    payload=st.just(BODY) | st.binary(max_size=40),
    header=st.none() | st.composite(signed_header)() | HEADER_ITEMS | SIGNATURE_HEADER,
    secrets=st.lists(
        st.sampled_from([WEBHOOK_SECRET, OTHER_SECRET, "", " \t"]), min_size=1, max_size=3
    ),
)
def test_verify_answers_as_when_stripes_sdk_checked(
    payload: bytes, header: str | None, secrets: list[str]
) -> None:
    """The signature is checked directly over the raw bytes (constant-time compare), with the
    SDK's reading of the header, its tolerance and its refusals, so the same answers."""
    now = time.time()
    try:
        intake.verify(payload, header, secrets, tolerance=TOLERANCE, now=now)
        found = None
    except errors.BadRequest as exc:
        found = (exc.code, exc.message)
    expected = sdk_verdict(payload, header, secrets, now)
    if expected is not None and expected[0] in ("missing_signature", "timestamp_outside_tolerance"):
        assert found is not None and found[0] == expected[0]
    else:
        assert found == expected


# parse_event


def test_an_event_parses_to_its_dict() -> None:
    assert intake.parse_event(BODY) == event()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"livemode": _DROP}, id="no-livemode"),
        pytest.param({"api_version": _DROP}, id="no-api-version"),
        pytest.param({"api_version": None}, id="null-api-version"),
        pytest.param({"created": 0}, id="created-zero"),
        pytest.param({"id": "e" * 255}, id="id-255"),
        pytest.param({"type": "anything.at_all"}, id="unknown-type"),
        pytest.param({"extra": {"nested": [1, 2]}}, id="extra-keys"),
    ],
)
def test_acceptable_envelopes(changes: dict[str, Any]) -> None:
    shaped = event(**changes)
    assert intake.parse_event(json.dumps(shaped).encode()) == shaped


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(b"", "invalid_json", id="empty"),
        pytest.param(b"not json", "invalid_json", id="text"),
        pytest.param(b'{"id": "evt_1"', "invalid_json", id="truncated"),
        pytest.param(b'{"a": 1}{"b": 2}', "invalid_json", id="two-documents"),
        pytest.param(b"[]", "not_an_event", id="array"),
        pytest.param(b'"event"', "not_an_event", id="string"),
        pytest.param(b"null", "not_an_event", id="null"),
        pytest.param(b"{}", "not_an_event", id="empty-object"),
    ],
)
def test_bodies_that_are_not_events(payload: bytes, code: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        intake.parse_event(payload)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"object": "customer"}, "object", id="object-customer"),
        pytest.param({"object": _DROP}, "object", id="object-missing"),
        pytest.param({"id": _DROP}, "id", id="id-missing"),
        pytest.param({"id": ""}, "id", id="id-empty"),
        pytest.param({"id": 42}, "id", id="id-int"),
        pytest.param({"id": "e" * 256}, "id", id="id-too-long"),
        pytest.param({"type": _DROP}, "type", id="type-missing"),
        pytest.param({"type": None}, "type", id="type-null"),
        pytest.param({"type": ["customer.created"]}, "type", id="type-list"),
        pytest.param({"created": _DROP}, "created", id="created-missing"),
        pytest.param({"created": "1700000000"}, "created", id="created-string"),
        pytest.param({"created": 1.5}, "created", id="created-float"),
        pytest.param({"created": True}, "created", id="created-bool"),
        pytest.param({"created": -1}, "created", id="created-negative"),
        pytest.param({"created": 2**62}, "created", id="created-huge"),
        pytest.param({"data": _DROP}, "data.object", id="data-missing"),
        pytest.param({"data": {}}, "data.object", id="data-object-missing"),
        pytest.param({"data": {"object": None}}, "data.object", id="data-object-null"),
        pytest.param({"data": {"object": []}}, "data.object", id="data-object-list"),
        pytest.param({"data": "x"}, "data.object", id="data-string"),
        pytest.param({"livemode": "false"}, "livemode", id="livemode-string"),
        pytest.param({"api_version": 2026}, "api_version", id="api-version-int"),
    ],
)
def test_envelopes_with_a_bad_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        intake.parse_event(json.dumps(event(**changes)).encode())
    assert caught.value.code == "not_an_event"
    assert field in caught.value.message


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(errors.BadRequest) as caught:
        intake.parse_event(json.dumps(event(id=None, created=None, data=None)).encode())
    for field in ("id", "created", "data.object"):
        assert field in caught.value.message


def test_deeply_nested_json_is_a_bad_request() -> None:
    # Valid JSON that the json module cannot parse without exhausting the recursion limit.
    with pytest.raises(errors.BadRequest):
        intake.parse_event(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param(2**70, id="over-64-bits"),
    ],
)
def test_json_that_orjson_refuses_or_rounds_still_makes_an_event(value: Any) -> None:
    shaped = event(data={"object": {"id": "cus_1", "object": "customer", "odd": value}})
    parsed = intake.parse_event(json.dumps(shaped).encode())
    assert (parsed["id"], parsed["type"], parsed["created"]) == (
        "evt_unit0001",
        "customer.created",
        1_700_000_000,
    )
    assert "odd" in parsed["data"]["object"]


def test_too_many_digits_is_a_bad_request() -> None:
    with pytest.raises(errors.BadRequest):
        intake.parse_event(b'{"object": "event", "created": 1' + b"0" * 5000 + b"}")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=5) | JSON,
        "object": st.just("event") | JSON,
        "type": st.text(max_size=5) | JSON,
        "created": st.integers(min_value=-5, max_value=2**63) | JSON,
        "data": st.fixed_dictionaries({}, optional={"object": JSON}) | JSON,
        "livemode": JSON,
        "api_version": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(value=ENVELOPE | JSON)
def test_parse_event_returns_an_event_or_refuses(value: Any) -> None:
    body = json.dumps(value).encode()
    try:
        parsed = intake.parse_event(body)
    except errors.BadRequest as exc:
        assert exc.code in ("invalid_json", "not_an_event")
        return
    # As the worker reads the stored bytes (orjson: an integer over 64 bits comes back a float).
    assert parsed == json_loads(body)
    assert parsed["object"] == "event"
    assert isinstance(parsed["id"], str) and parsed["id"]
    assert isinstance(parsed["type"], str) and parsed["type"]
    assert isinstance(parsed["created"], int) and not isinstance(parsed["created"], bool)
    assert isinstance(parsed["data"]["object"], dict)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_parse_event_on_random_bytes_only_refuses(payload: bytes) -> None:
    try:
        intake.parse_event(payload)
    except errors.BadRequest:
        pass
