"""The retry schedule, Retry-After and the Standard Webhooks headers (no database, no HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook

from snapshots import errors
from snapshots.outbound import delivery, endpoints
from snapshots.settings import Settings


def test_the_default_schedule_and_its_end() -> None:
    schedule = delivery.Schedule.of(Settings(outbound_retry_jitter=0.0))
    waits = [schedule.after(n) for n in range(1, 11)]
    hours = 3600.0
    assert waits == [
        5.0,
        300.0,
        1800.0,
        2 * hours,
        5 * hours,
        10 * hours,
        14 * hours,
        20 * hours,
        24 * hours,
        None,
    ]


def test_jitter_stays_within_its_fraction() -> None:
    schedule = delivery.Schedule.of(Settings(outbound_retry_jitter=0.1))
    found = [schedule.after(2) for _ in range(200)]
    assert all(w is not None and 270.0 <= w <= 330.0 for w in found)
    assert len(set(found)) > 1


def test_a_schedule_without_waits_is_a_configuration_error() -> None:
    with pytest.raises(errors.ConfigError):
        delivery.Schedule.of(Settings(outbound_retry_schedule=" , "))
    with pytest.raises(errors.BadRequest):
        delivery.Schedule.of(Settings(outbound_retry_schedule="5s,soon"))


def test_retry_after_in_seconds_or_as_a_date_capped_at_a_day() -> None:
    now = 1_800_000_000.0
    assert delivery._retry_after("120", now) == 120.0
    assert delivery._retry_after("9999999", now) == delivery.RETRY_AFTER_CAP
    later = format_datetime(datetime.fromtimestamp(now + 60, UTC), usegmt=True)
    assert delivery._retry_after(later, now) == pytest.approx(60.0)
    assert delivery._retry_after("whenever", now) is None
    assert delivery._retry_after(None, now) is None


def test_headers_carry_one_signature_per_secret_that_standardwebhooks_verifies() -> None:
    old, new = endpoints.new_secret(), endpoints.new_secret()
    body = delivery.body("invoice.reminder", {"amount": 1, "name": "Zoë"})
    assert json.loads(body)["type"] == "invoice.reminder" and b" " not in body
    now = datetime.now(UTC).timestamp()
    headers = delivery.headers("msg_1", body, [new, old], now)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(now))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_secrets_are_32_random_bytes() -> None:
    import base64

    secret = endpoints.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
