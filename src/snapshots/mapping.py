"""Mapping expressions: JMESPath over the Stripe object, with a few registered functions.

Expressions are compiled once when flows load. They read the event's Stripe object
(`data.object`); the whole event is `$event` (`$event.type`, `$event.created`), which is
shorthand for the function `event()`. Custom functions, beyond JMESPath's built-ins
(registered through jmespath's `custom_functions`; those that read a value give null for null):

| function | result |
|---|---|
| `lower(s)`, `upper(s)`, `trim(s)` | the string in lower or upper case, or without outer spaces |
| `default(value, fallback)` | `fallback` when `value` is null or `""` |
| `concat(a, b, ...)` | the values as one string (null counts as `""`, objects and lists as JSON) |
| `template(text, object)` | `text` with `{field}` replaced by the object's fields (`{address[city]}` for nested ones, `{{` for a brace; missing ones are `""`) |
| `split(s, separator)` | the string's parts, a list |
| `cents_to_decimal(amount, currency)` | an amount in minor units as a number in the currency's unit, as Stripe counts them (JPY 500 -> 500, USD 1999 -> 19.99, KWD 1999 -> 1.999); an unknown currency fails the event |
| `iso_datetime(seconds)` | a unix time as `2024-01-31T12:00:00Z` |
| `country_currency(country)` | the currency of a country, lower case as Stripe writes it (`DE` -> `eur`), from Babel's CLDR data |
| `invoice_payment_status(invoice)` | where an invoice stands for the payer: `draft`, `unpaid`, `partially_paid`, `failed` (a payment attempt failed and it is still open), `paid`, `void` or `uncollectible` |
| `event()` | the whole event (`$event`) |

JMESPath's string predicates `starts_with(s, prefix)`, `ends_with(s, suffix)` and
`contains(s_or_list, value)` are replaced by versions that answer `false` for a null subject
(a customer without an email matches no `ends_with(email, '@x.example')`), so filters need no
`|| ''`; any other wrong type still fails as JMESPath says.
"""

from __future__ import annotations

import _string
import contextvars
import functools
import json
import re
import string
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jmespath
from babel import numbers as babel_numbers
from jmespath import exceptions as jexc
from jmespath import functions, visitor
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

    @functions.signature({"types": [], "variadic": True})
    def _func_concat(self, *values: Any) -> str:
        return "".join(_text(value) for value in values)

    @functions.signature({"types": ["string", "null"]}, {"types": ["object", "null"]})
    def _func_template(self, text: str | None, obj: dict[str, Any] | None) -> str | None:
        if text is None:
            return None
        return _FORMATTER.vformat(text, (), _Fields(obj or {}))

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_split(self, s: str | None, separator: str) -> list[str] | None:
        if s is None:
            return None
        return s.split(separator) if separator else list(s)

    @functions.signature({"types": ["number", "null"]}, {"types": ["string", "null"]})
    def _func_cents_to_decimal(self, amount: float | None, currency: str | None) -> float | None:
        if amount is None or currency is None:
            return None
        return cents_to_decimal(amount, currency)

    @functions.signature({"types": ["number", "null"]})
    def _func_iso_datetime(self, seconds: float | None) -> str | None:
        if seconds is None:
            return None
        return iso_datetime(seconds)

    @functions.signature({"types": ["string", "null"]})
    def _func_country_currency(self, country: str | None) -> str | None:
        return None if country is None else country_currency(country)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_starts_with(self, s: str | None, prefix: str) -> bool:
        return s is not None and s.startswith(prefix)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_ends_with(self, s: str | None, suffix: str) -> bool:
        return s is not None and s.endswith(suffix)

    @functions.signature({"types": ["array", "string", "null"]}, {"types": []})
    def _func_contains(self, subject: list[Any] | str | None, value: Any) -> bool:
        if subject is None:
            return False
        if isinstance(subject, str) and not isinstance(value, str):
            return False  # as JMESPath's own: a string contains only strings
        return value in subject

    @functions.signature()
    def _func_event(self) -> Any:
        return CURRENT_EVENT.get()


# The event whose object is being mapped (`event()`, `$event`); see `for_event`.
CURRENT_EVENT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "snapshots_current_event", default=None
)


@contextmanager
def for_event(event: dict[str, Any]) -> Iterator[None]:
    """Evaluate expressions with `event` as `$event`."""
    token = CURRENT_EVENT.set(event)
    try:
        yield
    finally:
        CURRENT_EVENT.reset(token)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Fields(dict[str, Any]):
    """An object's fields for `template`: a missing one is empty, null is empty."""

    def __missing__(self, key: str) -> Any:
        return ""


# A template's format spec may pad or cut to at most this many characters: a width is a
# request for that much memory per evaluation, and one template runs on every event.
MAX_WIDTH = 64
SPEC = re.compile(
    r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d*))?[a-zA-Z%]?"
)


def spec_problem(format_spec: str) -> str | None:
    """What a template may not have in a format spec: a nested field (`{id:{name}}`, which
    would let the data set the width) or a width or precision over `MAX_WIDTH`."""
    if "{" in format_spec or "}" in format_spec:
        return "a format spec may not hold another {field}"
    found = SPEC.fullmatch(format_spec)
    if found is None:
        return f"{format_spec!r} is not a format spec"
    for part in ("width", "precision"):
        value = found.group(part)
        if value and int(value) > MAX_WIDTH:
            return f"a format spec's {part} is at most {MAX_WIDTH}, not {value}"
    return None


def template_problem(text: str) -> str | None:
    """What is wrong with a template's text before it runs (see `spec_problem`)."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:  # a stray brace: the template fails its item when it runs, as before
        return None
    for _, field_name, format_spec, _ in parts:
        if field_name is not None and format_spec:
            problem = spec_problem(format_spec)
            if problem:
                return problem
    return None


class _Formatter(string.Formatter):
    """`{field}` and `{field[key]}` lookups only: no attributes (`{name.__class__}`), no
    conversions, no nested fields in a format spec, no width or precision over `MAX_WIDTH`;
    a missing field is empty."""

    def parse(self, format_string: str) -> Any:
        for literal, field_name, format_spec, conversion in super().parse(format_string):
            if field_name is not None and format_spec:
                problem = spec_problem(format_spec)
                if problem:
                    raise ValueError(f"{{{field_name}:{format_spec}}}: {problem}")
            yield literal, field_name, format_spec, conversion

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        first, rest = _string.formatter_field_name_split(field_name)
        value: Any = kwargs.get(first) if isinstance(first, str) else None
        for is_attribute, key in rest:
            if is_attribute:
                raise ValueError(f"{{{field_name}}}: use [key] for a nested field, not .{key}")
            if isinstance(value, dict):
                value = value.get(str(key))
            elif (
                isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value)
            ):
                value = value[key]
            else:
                value = None
        return value, first

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            raise ValueError(f"!{conversion} conversions are not supported in templates")
        return value

    def format_field(self, value: Any, format_spec: str) -> str:
        if not format_spec or value is None or isinstance(value, dict | list):
            return _text(value)  # as concat() writes it
        return str(super().format_field(value, format_spec))


_FORMATTER = _Formatter()

# Stripe writes ISK and HUF amounts with two decimals (for backwards compatibility), although
# ISO 4217 and CLDR give them none; every other currency has its CLDR number of decimals.
STRIPE_DECIMALS = {"isk": 2, "huf": 2}


def currency_decimals(currency: str) -> int:
    code = currency.strip().lower()
    if code in STRIPE_DECIMALS:
        return STRIPE_DECIMALS[code]
    if code.upper() not in _iso_currencies():
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    return int(babel_numbers.get_currency_precision(code.upper()))


@functools.cache
def _iso_currencies() -> frozenset[str]:
    return frozenset(babel_numbers.list_currencies())


def cents_to_decimal(amount: float, currency: str) -> float:
    exact = Decimal(str(amount)).scaleb(-currency_decimals(currency))
    return int(exact) if exact == exact.to_integral_value() else float(exact)


def iso_datetime(seconds: float) -> str:
    if not -62135596800 <= seconds <= 253402300799:  # years 1 to 9999
        hint = " (milliseconds? Stripe times are seconds)" if seconds > 0 else ""
        raise ValueError(f"{seconds} is not a unix time in seconds{hint}")
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds")
    return text.replace("+00:00", "Z")


def country_currency(country: str) -> str | None:
    """The currency a country uses today (`tender` currencies only), or None."""
    code = country.strip().upper()
    if len(code) != 2 or not code.isalpha():
        return None
    found = babel_numbers.get_territory_currencies(code, datetime.now(UTC).date(), tender=True)
    return found[0].lower() if found else None


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
# One interpreter for every evaluation (`ParsedResult.search` builds one a call, a tenth of a
# mapping's time): it keeps nothing of an evaluation (`$event` is a context variable) but a
# cache of its own methods.
_INTERPRETER = visitor.TreeInterpreter(OPTIONS)


class Expression:
    """A compiled JMESPath expression that remembers its source for error messages."""

    __slots__ = ("_parsed", "_paths", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._parsed: ParsedResult = jmespath.compile(expand_event(source))
        except jexc.JMESPathError as exc:
            raise errors.ConfigError(f"bad expression {source!r}: {_first_line(exc)}") from exc
        problem = _check_calls(self._parsed.parsed)
        if problem:
            raise errors.ConfigError(f"bad expression {source!r}: {problem}")
        self._paths = _paths(self._parsed.parsed)

    def evaluate(self, data: Any) -> Any:
        paths = self._paths
        if paths is not None:  # most mappings: what jmespath would give, read directly
            last = paths[-1]
            for keys in paths:  # `a || b`: the first that jmespath does not call false
                found = data
                for key in keys:
                    if not isinstance(found, dict):
                        found = None
                        break
                    found = found.get(key)
                if keys is last or not _false_like(found):
                    return found
        try:
            return _INTERPRETER.visit(self._parsed.parsed, data)
        except (jexc.JMESPathError, ValueError, TypeError, ArithmeticError) as exc:
            # A function given a value it cannot use (a template with a stray brace, a time
            # out of range) fails the event, like a type error does.
            raise errors.DeadLetter(
                f"expression {self.source!r} failed: {_first_line(exc)}", code="mapping_failed"
            ) from exc
        except (MemoryError, RecursionError) as exc:
            reason = "out of memory" if isinstance(exc, MemoryError) else "nested too deeply"
            raise errors.DeadLetter(
                f"expression {self.source!r} failed: {reason}", code="mapping_failed"
            ) from exc


def _false_like(value: Any) -> bool:
    """What jmespath's `||` passes over (its `_is_false`): null, false, "", [] and {}."""
    return value == "" or value == [] or value == {} or value is None or value is False


def _paths(node: dict[str, Any]) -> tuple[tuple[str, ...], ...] | None:
    """The field paths of an expression that only reads a field (`a`), a field of fields
    (`a.b.c`), or the first of such paths that is not false-like (`customer.id || customer`),
    which `Expression.evaluate` looks up directly; None for any other expression."""
    if node["type"] == "or_expression":
        found: list[tuple[str, ...]] = []
        for child in node["children"]:
            paths = _paths(child)
            if paths is None:
                return None
            found += paths
        return tuple(found)
    path = _path(node)
    return None if path is None else (path,)


def _path(node: dict[str, Any]) -> tuple[str, ...] | None:
    """The keys of an expression that only reads a field (`a`) or a field of fields (`a.b.c`),
    which `Expression.evaluate` looks up directly; None for any other expression."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression":
        keys: list[str] = []
        for child in node["children"]:
            found = _path(child)
            if found is None:
                return None
            keys += found
        return tuple(keys)
    return None


def expand_event(source: str) -> str:
    """`$event` -> `event()`, outside string literals, quoted identifiers and JSON literals."""
    out: list[str] = []
    i = 0
    quote: str | None = None
    while i < len(source):
        char = source[i]
        if quote is not None:
            out.append(char)
            if char == "\\" and i + 1 < len(source):
                out.append(source[i + 1])
                i += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
            out.append(char)
        elif source.startswith("$event", i):
            out.append("event()")
            i += len("$event")
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


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
        first = node["children"][0] if node["children"] else None
        if name == "template" and isinstance(first, dict) and first.get("type") == "literal":
            if isinstance(first.get("value"), str):
                problem = template_problem(first["value"])
                if problem:
                    return f"template(): {problem}"
    for child in node.get("children", []):
        if isinstance(child, dict):
            problem = _check_calls(child)
            if problem:
                return problem
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
