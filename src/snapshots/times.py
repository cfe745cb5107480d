"""Time as shown and as typed: ISO 8601 text for every time Snapshots shows, and one grammar
for every duration and moment a user types (CLI, API and console alike).

- A **duration** is a whole number and a unit: `45s`, `30m`, `12h`, `7d`, `2w`.
- A **moment** ("since") is a duration back from now (`72h`), an ISO 8601 date (`2024-01-31`,
  midnight UTC), an ISO date-time (`2024-01-31T12:00:00Z`; UTC unless it has an offset), or unix
  seconds (`1706702400`, fractions allowed). A bare small number (`72`, under 10^8 but not 0) is
  refused: it is a duration whose unit was forgotten far more often than a moment in 1970.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer

from snapshots import errors

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}  # seconds
DURATION = re.compile(r"^(\d+)([smhdw])$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")
NUMBER = re.compile(r"^\d+(\.\d+)?$")
SMALLEST_MOMENT = 100_000_000  # unix seconds (1973): a smaller number is a forgotten unit
INVALID = "parameter_invalid"  # the error code of a duration or moment a user mistyped
MOMENT_HELP = (
    "give a date (2024-01-31), a UTC time (2024-01-31T12:00:00Z), a duration back from now "
    "(72h, 30d) or unix seconds"
)


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 text in UTC (`2024-01-31T12:00:00Z`), None for None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


# A moment in a public model: unix seconds inside Snapshots, ISO 8601 text wherever it is shown
# (`model_dump`, JSON, the OpenAPI document), so every resource writes its times one way.
Timestamp = Annotated[
    float, PlainSerializer(lambda seconds: iso(seconds), return_type=str, when_used="json")
]


def parse_duration(
    text: str, *, zero: bool = False, longest: float | None = None, name: str = "duration"
) -> float:
    """`90d` -> seconds. With `zero`, `0` in any unit (or a bare `0`) is 0; `longest` caps it."""
    value = text.strip()
    match = DURATION.match(value)
    if zero and (value == "0" or (match and int(match.group(1)) == 0)):
        return 0.0
    if not match or int(match.group(1)) == 0:
        raise errors.BadRequest(
            f"bad {name} {text!r}: use a number and a unit, e.g. 90d or 12h", code=INVALID
        )
    seconds = float(int(match.group(1)) * UNITS[match.group(2)])
    if longest is not None and seconds > longest:
        raise errors.BadRequest(f"bad {name} {text!r}: at most {describe(longest)}", code=INVALID)
    return seconds


def describe(seconds: float) -> str:
    """A duration as its largest whole unit: 86400 -> `1 day`, 5400 -> `90 minutes`."""
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = int(seconds)
    return f"{count} second{'s' if count != 1 else ''}"


def parse_since(text: str, *, now: float | None = None, name: str = "--since") -> float:
    """A moment typed by a user (see the module docstring) -> unix seconds."""
    value = text.strip()
    if DATE.match(value):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise errors.BadRequest(f"{name} {text!r}: {exc}", code=INVALID) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if NUMBER.match(value):
        seconds = float(value)
        if math.isfinite(seconds) and (seconds == 0 or seconds >= SMALLEST_MOMENT):
            return seconds
        raise errors.BadRequest(
            f"{name} {text!r}: a number alone is ambiguous; {MOMENT_HELP}", code=INVALID
        )
    try:
        back = parse_duration(value)
    except errors.BadRequest:
        raise errors.BadRequest(f"{name} {text!r}: {MOMENT_HELP}", code=INVALID) from None
    return (time.time() if now is None else now) - back
