"""Why inbox items failed: an error's cause (its text with what varies from one event to the next
taken out, so the same fault groups once), and the advice that says what to do about it.

A cause keeps what names the fault (the flow, the field, the expression, the message) and
replaces what names the event: ids (`cus_...`, `evt_...`, `con_...`), e-mail addresses, numbers
and long hex strings. It is stored with each failed item (`inbox_items.error_cause`), so the
console groups failures with an index instead of reading every error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LENGTH = 200  # characters of a cause kept (and grouped on)

_VARIABLE = (
    # jmespath names the value a function refused: the value, not the fault.
    (re.compile(r"(invalid type for value: ).*?(, expected)", re.DOTALL), r"\1<value>\2"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    # An id has a digit or a capital in its random part (a field name such as `payment_status`
    # has none).
    (re.compile(r"\b[a-z]{2,8}_(?:test_|live_)?(?=[a-z]*[A-Z0-9])[A-Za-z0-9]{6,}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])"), "<n>"),
)


def of(error: str | None) -> str | None:
    """The cause of an error text (None for none): the same fault about other events gives
    the same cause."""
    if not error:
        return None
    text = " ".join(error.split())
    for pattern, placeholder in _VARIABLE:
        text = pattern.sub(placeholder, text)
    return text[:LENGTH]


@dataclass(frozen=True)
class Advice:
    """What an error means for the person reading it: a headline and what to do next; `flow`
    names the flow to open when the fix is there."""

    headline: str
    action: str
    flow: str | None = None


_FLOW = re.compile(r"^flow '(?P<flow>[^']+)': (?P<rest>.*)$", re.DOTALL)
_FIELD = re.compile(r"^field '(?P<field>[^']+)': (?P<rest>.*)$", re.DOTALL)
_REPLAY = "then replay the event."


def advise(error: str | None, status: str) -> Advice | None:
    """The actionable reading of an item's last error (None when it has none)."""
    if not error:
        return None
    if error.startswith("waiting for Stripe"):
        return Advice(
            "Stripe refused the connection's key or could not be reached.",
            "Check the connection (its key and Stripe's status); the event waits and is "
            "tried again by itself.",
        )
    if error.startswith("gave up: the worker applying it stopped"):
        return Advice(
            "Workers stopped while applying this event, again and again.",
            "Look at the worker's log for a crash around this event, " + _REPLAY,
        )
    if error.startswith("the stored payload is not JSON"):
        return Advice("The stored event is not JSON.", "It cannot be applied; nothing to fix.")
    found = _FLOW.match(error)
    if found is not None:
        flow, rest = found["flow"], found["rest"]
        field = _FIELD.match(rest)
        where = f"the mapping of {field['field']!r}" if field else "the flow"
        return Advice(
            f"Flow {flow!r} failed: {rest}",
            f"Fix {where} in flow {flow!r} (the flows editor previews it on this event), "
            + _REPLAY,
            flow,
        )
    if status == "failed":
        return Advice(error, "It is tried again by itself; replay it to try now.")
    return Advice(error, "Fix the cause, " + _REPLAY)
