"""Webhook intake through the HTTP app, on SQLite and PostgreSQL: `POST /webhooks/stripe/{id}`.

Refusals are 4xx with a JSON error and leave `inbox_items` empty; acceptances are 2xx only once
the raw bytes are committed, stored once per connection and event id."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from snapshots import connections, vault
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store.db import Database
from tests.conftest import ACCOUNT, WEBHOOK_SECRET, EventFactory, sign
from tests.integration.helpers import assert_error, inbox_items

MAX_BODY = 4096  # bytes: small, so that oversized bodies are cheap to make
OTHER_SECRET = "whsec_other_secret_9876543210"


def hexsig(payload: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    """The v1 signature of raw bytes (works for bytes that are not UTF-8, unlike `sign`)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()


def now() -> int:
    return int(time.time())


def signed(
    payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    t = now() if timestamp is None else timestamp
    return {"Stripe-Signature": f"t={t},v1={hexsig(payload, t, secret)}"}


def url(connection_id: str) -> str:
    return f"/webhooks/stripe/{connection_id}"


def inbox_rows(db: Database) -> list[Any]:
    return inbox_items(db)


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """The shared `client` here takes bodies of up to MAX_BODY bytes."""
    return settings.model_copy(update={"webhook_max_body": MAX_BODY})


@pytest.fixture
def body(event_factory: EventFactory) -> bytes:
    """A valid `customer.created` event, as bytes (well under MAX_BODY)."""
    payload = json.dumps(event_factory("customer.created")).encode()
    assert len(payload) < MAX_BODY
    return payload


def _with(body: bytes, **changes: Any) -> bytes:
    event = json.loads(body)
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return json.dumps(event).encode()


def _without_object(body: bytes) -> bytes:
    event = json.loads(body)
    del event["data"]["object"]
    return json.dumps(event).encode()


def _signed_with(changes: dict[str, Any]) -> Build:
    def build(body: bytes) -> tuple[bytes, dict[str, Any]]:
        payload = _with(body, **changes)
        return payload, signed(payload)

    return build


_DROP = object()
Build = Callable[[bytes], tuple[bytes, dict[str, Any]]]

BAD_INPUTS = [
    # The signature header.
    pytest.param(lambda b: (b, {}), "missing_signature", id="no-signature"),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": ""}), "missing_signature", id="empty-signature"
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": f"v1={hexsig(b, now())}"}),
        "malformed_signature",
        id="no-timestamp",
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": f"t={now()}"}), "malformed_signature", id="no-v1"
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": "this is not a signature"}),
        "malformed_signature",
        id="garbage",
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": f"t=yesterday,v1={hexsig(b, now())}"}),
        "malformed_signature",
        id="timestamp-not-a-number",
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": f"t={now()},v0={hexsig(b, now())}"}),
        "malformed_signature",
        id="only-v0",
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": f"t={now()},v1={'0' * 64}"}),
        "signature_mismatch",
        id="wrong-signature",
    ),
    pytest.param(lambda b: (b, signed(b, OTHER_SECRET)), "signature_mismatch", id="another-secret"),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": f"t={now()},v1={'0' * 64},v0={hexsig(b, now())}"}),
        "signature_mismatch",
        id="right-v0-wrong-v1",
    ),
    pytest.param(
        lambda b: (b, signed(json.dumps(json.loads(b), indent=1).encode())),
        "signature_mismatch",
        id="signed-reserialized-json",
    ),
    pytest.param(
        lambda b: (b + b" ", signed(b)), "signature_mismatch", id="body-changed-after-signing"
    ),
    pytest.param(
        lambda b: (b, {"Stripe-Signature": b"t=1700000000,v1=\xe9" + b"0" * 63}),
        "malformed_signature",
        id="non-ascii-signature",
    ),
    # The timestamp: validly signed, but replayed.
    pytest.param(
        lambda b: (b, signed(b, timestamp=now() - 301)),
        "timestamp_outside_tolerance",
        id="stale-301s",
    ),
    pytest.param(
        lambda b: (b, signed(b, timestamp=now() - 86_400)),
        "timestamp_outside_tolerance",
        id="stale-1d",
    ),
    pytest.param(
        lambda b: (b, signed(b, OTHER_SECRET, timestamp=now() - 3600)),
        "signature_mismatch",
        id="stale-and-wrong-secret",
    ),
    # The body: validly signed, but not an event.
    pytest.param(lambda b: (b"", signed(b"")), "invalid_json", id="empty-body"),
    pytest.param(lambda b: (b"not json", signed(b"not json")), "invalid_json", id="not-json"),
    pytest.param(lambda b: (b[:-1], signed(b[:-1])), "invalid_json", id="truncated-json"),
    pytest.param(
        lambda b: (b"\xff\xfe" + b, signed(b"\xff\xfe" + b)), "invalid_body", id="not-utf8"
    ),
    pytest.param(
        lambda b: (
            '{"object": "event", "id": "évt"}'.encode("latin-1"),
            signed('{"object": "event", "id": "évt"}'.encode("latin-1")),
        ),
        "invalid_body",
        id="latin-1",
    ),
    pytest.param(lambda b: (b"[]", signed(b"[]")), "not_an_event", id="json-array"),
    pytest.param(lambda b: (b"null", signed(b"null")), "not_an_event", id="json-null"),
    *(
        pytest.param(_signed_with(changes), "not_an_event", id=name)
        for name, changes in {
            "object-customer": {"object": "customer"},
            "object-missing": {"object": _DROP},
            "id-missing": {"id": _DROP},
            "id-number": {"id": 123},
            "id-empty": {"id": ""},
            "type-missing": {"type": _DROP},
            "type-number": {"type": 7},
            "created-missing": {"created": _DROP},
            "created-string": {"created": "1700000000"},
            "created-negative": {"created": -5},
            "data-missing": {"data": _DROP},
            "livemode-string": {"livemode": "no"},
        }.items()
    ),
    pytest.param(
        lambda b: (_without_object(b), signed(_without_object(b))),
        "not_an_event",
        id="data-object-missing",
    ),
]


@pytest.mark.parametrize(("build", "code"), BAD_INPUTS)
def test_bad_deliveries_are_400_and_store_nothing(
    client: TestClient,
    connection: connections.Connection,
    db: Database,
    body: bytes,
    build: Build,
    code: str,
) -> None:
    payload, headers = build(body)
    response = client.post(url(connection.id), content=payload, headers=headers)
    assert_error(response, 400, code, type="invalid_request_error")
    assert inbox_rows(db) == []


def test_a_deeply_nested_signed_body_is_400_not_500(
    settings: Settings, connection: connections.Connection, db: Database
) -> None:
    # Fits the default 1 MiB limit, is valid JSON, and is signed: json.loads recurses too deep.
    payload = b"[" * 50_000 + b"]" * 50_000
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert_error(response, 400, "invalid_json", type="invalid_request_error")
    assert inbox_rows(db) == []


def test_a_signed_event_id_with_a_nul_character_is_not_a_500(
    app_settings: Settings, connection: connections.Connection, db: Database, body: bytes
) -> None:
    # PostgreSQL text cannot hold U+0000; that must be a refusal or a stored event, never a 5xx.
    payload = _with(body, id="evt_\u0000nul")
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as client:
        response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert [r.payload for r in inbox_rows(db)] == [payload]
    else:
        assert_error(response, 400, "not_an_event", type="invalid_request_error")
        assert inbox_rows(db) == []


@pytest.mark.parametrize(
    "connection_id",
    [
        pytest.param("conn_doesnotexist", id="unknown"),
        pytest.param("x" * 300, id="very-long"),
        pytest.param("conn_%00", id="nul-character"),
        pytest.param("%C3%A9", id="non-ascii"),
    ],
)
def test_an_unknown_connection_is_404(
    app_settings: Settings,
    connection: connections.Connection,
    db: Database,
    body: bytes,
    connection_id: str,
) -> None:
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as client:
        response = client.post(url(connection_id), content=body, headers=signed(body))
    assert_error(response, 404, "unknown_connection", type="invalid_request_error")
    assert inbox_rows(db) == []


# Body size.


def _oversized(body: bytes) -> bytes:
    payload = body[:-1] + b" " * (MAX_BODY + 1 - len(body)) + b"}"
    assert len(payload) == MAX_BODY + 1
    json.loads(payload)
    return payload


def _exactly_max(body: bytes) -> bytes:
    payload = body[:-1] + b" " * (MAX_BODY - len(body)) + b"}"
    assert len(payload) == MAX_BODY
    return payload


def test_a_body_over_the_limit_with_content_length_is_413(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    payload = _oversized(body)
    response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert response.request.headers["content-length"] == str(MAX_BODY + 1)
    error = assert_error(response, 413, "payload_too_large", type="invalid_request_error")
    assert str(MAX_BODY) in error["message"]
    assert inbox_rows(db) == []


def test_a_huge_declared_length_is_413_before_reading(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    response = client.post(
        url(connection.id),
        content=b"x" * (MAX_BODY * 4),
        headers={"Stripe-Signature": f"t={now()},v1={'0' * 64}"},
    )
    assert_error(response, 413, "payload_too_large", type="invalid_request_error")
    assert inbox_rows(db) == []


def test_a_chunked_body_over_the_limit_is_413(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    payload = _oversized(body)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]

    response = client.post(url(connection.id), content=chunks(), headers=signed(payload))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "payload_too_large", type="invalid_request_error")
    assert inbox_rows(db) == []


def _post_streamed(
    app: FastAPI, path: str, payload: bytes, headers: dict[str, str]
) -> httpx.Response:
    """POST through httpx's ASGI transport, which hands the app one message per chunk."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 512):
            yield payload[start : start + 512]

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            response = await client.post(path, content=chunks(), headers=headers)
            await response.aread()
            return response

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("size", "status"),
    [pytest.param(MAX_BODY, 200, id="at-limit"), pytest.param(MAX_BODY + 1, 413, id="over")],
)
def test_a_streamed_body_is_counted_chunk_by_chunk(
    app_settings: Settings,
    connection: connections.Connection,
    db: Database,
    body: bytes,
    size: int,
    status: int,
) -> None:
    payload = _exactly_max(body) if size == MAX_BODY else _oversized(body)
    app = create_app(app_settings)
    response = _post_streamed(app, url(connection.id), payload, signed(payload))
    assert "content-length" not in response.request.headers
    if status == 413:
        assert_error(response, 413, "payload_too_large", type="invalid_request_error")
        assert inbox_rows(db) == []
    else:
        assert response.status_code == 200, response.text
        assert [r.payload for r in inbox_rows(db)] == [payload]


def test_a_body_exactly_at_the_limit_is_accepted(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    payload = _exactly_max(body)
    response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert response.status_code == 200, response.text
    assert [r.payload for r in inbox_rows(db)] == [payload]


# Good deliveries.

UNUSUAL = (
    b'\r\n  {"type" :"customer.created" ,\t"livemode":false,\n'
    b'"data":{ "object" : {"name":"Z\\u00fcrich \xc3\xbc \xf0\x9f\x8c\x8d","object":"customer",'
    b'"id":"cus_raw1","metadata":{"b":"2","a":"1"},"email":null}},'
    b'"created":1700000000 ,"id":"evt_raw1","object":"event",'
    b'"api_version":"2026-07-29.dahlia","pending_webhooks":1}  \n\n'
)


def test_a_good_delivery_is_stored_once_byte_for_byte(
    client: TestClient, connection: connections.Connection, db: Database
) -> None:
    payload = UNUSUAL
    response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt == {
        "received": True,
        "item_id": receipt["item_id"],
        "event_id": "evt_raw1",
        "type": "customer.created",
        "status": "pending",
        "duplicate": False,
    }
    rows = inbox_rows(db)
    assert len(rows) == 1
    row = rows[0]
    assert bytes(row.payload) == payload
    assert row.id == receipt["item_id"]
    assert (row.connection_id, row.event_id, row.event_type) == (
        connection.id,
        "evt_raw1",
        "customer.created",
    )
    assert (row.event_created, row.api_version, row.livemode) == (
        1700000000,
        "2026-07-29.dahlia",
        False,
    )
    assert row.source == "webhook"
    assert row.status == "pending"


def test_a_delivery_answers_as_the_apps_routes_do(
    client: TestClient, connection: connections.Connection, body: bytes
) -> None:
    """Deliveries skip Starlette's routing (`webhooks.Direct`), not its contract: the receipt
    as compact JSON, the edge's headers, the error envelope with the request id."""
    response = client.post(url(connection.id), content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert response.content == json.dumps(receipt, separators=(",", ":")).encode()
    assert list(receipt) == ["received", "item_id", "event_id", "type", "status", "duplicate"]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"].startswith("req_")
    refused = client.post(url(connection.id), content=body, headers={"Stripe-Signature": "t=1"})
    assert_error(refused, 400, "malformed_signature", type="invalid_request_error")
    assert refused.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/webhooks/stripe/conn_x", 404, id="get"),
        pytest.param("PUT", "/webhooks/stripe/conn_x", 404, id="put"),
        pytest.param("POST", "/webhooks/stripe/conn_x/more", 404, id="two-segments"),
        pytest.param("POST", "/webhooks/stripe/", 404, id="no-segment"),
    ],
)
def test_what_is_not_a_delivery_goes_through_the_routes(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = client.request(method, path, content=b"{}")
    assert_error(response, status, checks="request_id")


def test_a_float_created_is_refused(
    client: TestClient, connection: connections.Connection, db: Database
) -> None:
    payload = UNUSUAL.replace(b"1700000000 ,", b"1700000000.0 ,")
    assert payload != UNUSUAL
    response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert_error(response, 400, "not_an_event", type="invalid_request_error")
    assert inbox_rows(db) == []


def test_a_chunked_good_delivery_is_stored_whole(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    def chunks() -> Iterator[bytes]:
        yield body[:100]
        yield body[100:]

    response = client.post(url(connection.id), content=chunks(), headers=signed(body))
    assert response.status_code == 200, response.text
    assert [bytes(r.payload) for r in inbox_rows(db)] == [body]


def test_a_duplicate_is_acknowledged_and_stored_once(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    first = client.post(url(connection.id), content=body, headers=signed(body))
    # Stripe re-signs every retry with a fresh timestamp.
    again = client.post(url(connection.id), content=body, headers=signed(body, timestamp=now() + 1))
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False
    assert again.json()["duplicate"] is True
    assert again.json()["item_id"] == first.json()["item_id"]
    assert again.json()["received"] is True
    assert len(inbox_rows(db)) == 1


def test_a_duplicate_id_with_other_bytes_keeps_the_first(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    changed = _with(body, pending_webhooks=5)
    for payload in (body, changed):
        response = client.post(url(connection.id), content=payload, headers=signed(payload))
        assert response.status_code == 200, response.text
    assert [bytes(r.payload) for r in inbox_rows(db)] == [body]


def test_the_same_event_on_two_connections_is_stored_twice(
    client: TestClient,
    connection: connections.Connection,
    db: Database,
    app_settings: Settings,
    body: bytes,
) -> None:
    with db.write() as tx:
        second = connections.add(
            tx,
            vault.load(app_settings),
            account=ACCOUNT,
            secret_key="sk_test_second5678",
            webhook_secrets=[OTHER_SECRET],
            name="second",
        )
    assert client.post(url(connection.id), content=body, headers=signed(body)).status_code == 200
    response = client.post(url(second.id), content=body, headers=signed(body, OTHER_SECRET))
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False
    assert sorted(r.connection_id for r in inbox_rows(db)) == sorted([connection.id, second.id])


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("charge.succeeded", id="unwanted"),
        pytest.param("v9.unheard.of", id="unknown"),
    ],
)
def test_an_unwanted_type_is_acknowledged_and_ignored(
    client: TestClient,
    connection: connections.Connection,
    db: Database,
    event_factory: EventFactory,
    event_type: str,
) -> None:
    payload = json.dumps(event_factory(event_type, object={"id": "ch_1", "object": "x"})).encode()
    response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    rows = inbox_rows(db)
    assert [(r.event_type, r.status) for r in rows] == [(event_type, "ignored")]
    assert rows[0].processed_at is not None


def test_a_timestamp_beyond_the_tolerance_in_the_future_is_refused(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    """Issue 15: a signature dated ahead of the tolerance is refused like a stale one (it was
    accepted before); one within the tolerance ahead (clock skew) still is."""
    response = client.post(
        url(connection.id), content=body, headers=signed(body, timestamp=now() + 600)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "timestamp_outside_tolerance"
    skewed = client.post(
        url(connection.id), content=body, headers=signed(body, timestamp=now() + 200)
    )
    assert skewed.status_code == 200, skewed.text


def test_a_timestamp_inside_the_tolerance_is_accepted(
    client: TestClient, connection: connections.Connection, db: Database, body: bytes
) -> None:
    response = client.post(
        url(connection.id), content=body, headers=signed(body, timestamp=now() - 280)
    )
    assert response.status_code == 200, response.text


def test_the_conftest_signer_is_accepted(
    client: TestClient, connection: connections.Connection, body: bytes
) -> None:
    response = client.post(
        url(connection.id), content=body, headers={"Stripe-Signature": sign(body)}
    )
    assert response.status_code == 200, response.text


# Secret rotation.


@pytest.fixture
def rotating(db: Database, app_settings: Settings) -> connections.Connection:
    """A connection in the middle of a rotation: two active signing secrets."""
    with db.write() as tx:
        return connections.add(
            tx,
            vault.load(app_settings),
            account=ACCOUNT,
            secret_key="sk_test_rotating0001",
            webhook_secrets=[WEBHOOK_SECRET, OTHER_SECRET],
            name="rotating",
        )


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda b, t: f"t={t},v1={hexsig(b, t)}", id="old-secret"),
        pytest.param(lambda b, t: f"t={t},v1={hexsig(b, t, OTHER_SECRET)}", id="new-secret"),
        pytest.param(
            lambda b, t: f"t={t},v1={hexsig(b, t)},v1={hexsig(b, t, OTHER_SECRET)}",
            id="one-v1-per-secret",
        ),
        pytest.param(lambda b, t: f"t={t},v1={'0' * 64},v1={hexsig(b, t)}", id="wrong-then-right"),
        pytest.param(
            lambda b, t: f"t={t},v1={hexsig(b, t, OTHER_SECRET)},v1={'a' * 64}",
            id="right-then-wrong",
        ),
        pytest.param(
            lambda b, t: f"t={t},v0={'0' * 64},v1={hexsig(b, t)}", id="v0-garbage-ignored"
        ),
    ],
)
def test_rotation_accepts_either_secret(
    app_settings: Settings,
    rotating: connections.Connection,
    db: Database,
    body: bytes,
    header: Callable[[bytes, int], str],
) -> None:
    with TestClient(create_app(app_settings)) as client:
        response = client.post(
            url(rotating.id), content=body, headers={"Stripe-Signature": header(body, now())}
        )
    assert response.status_code == 200, response.text
    assert len(inbox_rows(db)) == 1


def test_rotation_still_refuses_a_third_secret(
    app_settings: Settings, rotating: connections.Connection, db: Database, body: bytes
) -> None:
    with TestClient(create_app(app_settings)) as client:
        response = client.post(
            url(rotating.id), content=body, headers=signed(body, "whsec_third_secret_000")
        )
    assert_error(response, 400, "signature_mismatch", type="invalid_request_error")
    assert inbox_rows(db) == []


def test_rotation_reports_a_stale_timestamp(
    app_settings: Settings, rotating: connections.Connection, db: Database, body: bytes
) -> None:
    with TestClient(create_app(app_settings)) as client:
        response = client.post(
            url(rotating.id), content=body, headers=signed(body, OTHER_SECRET, now() - 900)
        )
    assert_error(response, 400, "timestamp_outside_tolerance", type="invalid_request_error")
    assert inbox_rows(db) == []


# No input is a 5xx.

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
SIGNATURE_HEADER = st.builds(
    lambda t, items: ",".join([f"t={t}", *(f"{k}={v}" for k, v in items)]),
    st.integers(0, 2**40).map(str) | HEADER_TEXT,
    st.lists(st.tuples(st.sampled_from(["v1", "v0"]) | HEADER_TEXT, HEADER_TEXT), max_size=3),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(min_size=1, max_size=8) | JSON,
        "object": st.just("event") | JSON,
        "type": st.sampled_from(["customer.created", "charge.succeeded"]) | st.text(max_size=8),
        "created": st.integers(min_value=-5, max_value=2**63) | JSON,
        "data": st.fixed_dictionaries({}, optional={"object": JSON}) | JSON,
        "livemode": JSON,
        "api_version": JSON,
    },
)


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=st.binary(max_size=MAX_BODY + 100),
    header=st.none() | HEADER_TEXT | SIGNATURE_HEADER,
    path_id=st.none() | st.text(max_size=50),
)
def test_random_requests_are_never_5xx(
    app_settings: Settings,
    connection: connections.Connection,
    payload: bytes,
    header: str | None,
    path_id: str | None,
) -> None:
    # Header bytes as a client may send them; the server decodes them as latin-1.
    headers = {} if header is None else {"Stripe-Signature": header.encode("latin-1")}
    target = connection.id if path_id is None else quote(path_id, safe="")
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as client:
        response = client.post(url(target), content=payload, headers=headers)
    assert response.status_code < 500, response.text
    assert response.status_code != 200


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=ENVELOPE)
def test_signed_random_envelopes_are_200_or_400(
    app_settings: Settings, connection: connections.Connection, db: Database, value: Any
) -> None:
    payload = json.dumps(value).encode()
    before = len(inbox_rows(db))
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as client:
        response = client.post(url(connection.id), content=payload, headers=signed(payload))
    assert response.status_code in (200, 400, 413), response.text
    after = len(inbox_rows(db))
    if response.status_code == 200:
        assert after - before == (0 if response.json()["duplicate"] else 1)
    else:
        assert after == before
