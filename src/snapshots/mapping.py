"""Mapping expressions: JMESPath over the Stripe object, with a few registered functions.

Expressions are compiled once when flows load. Custom functions (beyond JMESPath's built-ins):
`lower(s)`, `upper(s)`, `trim(s)`, `default(value, fallback)` and
`invoice_payment_status(invoice)`, which names where an invoice stands for the payer:
`draft`, `unpaid`, `partially_paid`, `failed` (a payment attempt failed and it is still open),
`paid`, `void` or `uncollectible`.
"""

from __future__ import annotations

from typing import Any

import jmespath
from jmespath import exceptions as jexc
from jmespath import functions
from jmespath.parser import ParsedResult

from snapshots import errors


class Functions(functions.Functions):
    @functions.signature({"types": ["string", "null"]})
    def _func_lower(self, s: str | None) -> str | None:
        return None if s is None else s.lower()

    @functions.signature({"types": ["string", "null"]})
    def _func_upper(self, s: str | None) -> str | None:
        return None if s is None else s.upper()

    @functions.signature({"types": ["string", "null"]})
    def _func_trim(self, s: str | None) -> str | None:
        return None if s is None else s.strip()

    @functions.signature({"types": []}, {"types": []})
    def _func_default(self, value: Any, fallback: Any) -> Any:
        return fallback if value is None or value == "" else value

    @functions.signature({"types": ["object"]})
    def _func_invoice_payment_status(self, invoice: dict[str, Any]) -> str | None:
        return invoice_payment_status(invoice)


def invoice_payment_status(invoice: dict[str, Any]) -> str | None:
    status = invoice.get("status")
    if status in ("draft", "paid", "void", "uncollectible"):
        return str(status)
    if status != "open":
        return None
    if (invoice.get("attempt_count") or 0) > 0 and invoice.get("attempted"):
        return "failed"
    if (invoice.get("amount_paid") or 0) > 0:
        return "partially_paid"
    return "unpaid"


OPTIONS = jmespath.Options(custom_functions=Functions())


class Expression:
    """A compiled JMESPath expression that remembers its source for error messages."""

    __slots__ = ("_parsed", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._parsed: ParsedResult = jmespath.compile(source)
        except jexc.JMESPathError as exc:
            raise errors.ConfigError(f"bad expression {source!r}: {_first_line(exc)}") from exc
        problem = _check_calls(self._parsed.parsed)
        if problem:
            raise errors.ConfigError(f"bad expression {source!r}: {problem}")

    def evaluate(self, data: Any) -> Any:
        try:
            return self._parsed.search(data, options=OPTIONS)
        except jexc.JMESPathError as exc:
            raise errors.DeadLetter(
                f"expression {self.source!r} failed: {_first_line(exc)}", code="mapping_failed"
            ) from exc


def _check_calls(node: dict[str, Any]) -> str | None:
    """The first call to an unknown function, or with the wrong number of arguments, in the
    parsed expression (jmespath only finds these when the expression runs)."""
    if node.get("type") == "function_expression":
        name = node["value"]
        entry = OPTIONS.custom_functions.FUNCTION_TABLE.get(name)
        if entry is None:
            return f"unknown function {name}()"
        signature = entry["signature"]
        given = len(node["children"])
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if given < len(signature) or (not variadic and given > len(signature)):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            return f"{name}() takes {wanted} argument(s), not {given}"
    for child in node.get("children", []):
        if isinstance(child, dict):
            problem = _check_calls(child)
            if problem:
                return problem
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
