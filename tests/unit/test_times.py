"""Times as typed: durations (`90d`, an API key's lifetime) and moments (`--since`)."""

from __future__ import annotations

import pytest

from snapshots import errors, keys, times

NOW = 1_800_000_000.0

# Durations.


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("30m", 1800),
        ("12h", 43_200),
        ("1d", 86_400),
        ("90d", 7_776_000),
        ("2w", 1_209_600),
        (" 7d ", 604_800),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert times.parse_duration(text, longest=keys.MAX_LIFETIME) == seconds


@pytest.mark.parametrize(
    "text", ["", "d", "90", "0d", "-5d", "1.5d", "5y", "5D", "5 d", "d5", "1d2h"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        times.parse_duration(text, longest=keys.MAX_LIFETIME)
    assert "duration" in caught.value.message


# Moments.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31", 1706659200),
        (" 2024-01-31 ", 1706659200),
        ("2024-01-31T12:00:00Z", 1706702400),
        ("2024-01-31T12:00", 1706702400),
        ("2024-01-31 12:00:00", 1706702400),
        ("2024-01-31T12:00:00+02:00", 1706695200),
        ("2024-01-31T12:00:00+0200", 1706695200),
        ("72h", int(NOW) - 72 * 3600),
        ("30d", int(NOW) - 30 * 86400),
        ("90m", int(NOW) - 90 * 60),
    ],
)
def test_parse_since(text: str, expected: int) -> None:
    assert times.parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "give a date (2024-01-31)"),
        ("", "give a date"),
        ("72", "give a date"),
        ("0h", "give a date"),
        ("2024-13-01", "--since '2024-13-01': month must be in 1..12"),
        ("2024-02-30", "--since '2024-02-30': day is out of range"),
    ],
)
def test_parse_since_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        times.parse_since(text, now=NOW)
    assert message in str(caught.value)
