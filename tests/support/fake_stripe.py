"""A small Stripe-compatible HTTP server for tests, for what localstripe lacks.

localstripe has no Terminal locations, no ``GET /v1/account``, no way to inject faults and is
too slow for a large backfill. This module is both the server (standard library only) and the
test-side wrapper that runs it as a subprocess::

    from tests.support.fake_stripe import run_fake_stripe

    with run_fake_stripe(customers=250, invoices=40, locations=3) as fake:
        client = fake.client()                 # stripe.StripeClient, max_network_retries=0
        client.v1.terminal.locations.list({"limit": 100})
        fake.fault("/v1/customers", status=429, headers={"Retry-After": "1"})
        fake.requests()                        # what the server received

The server: ``python -m tests.support.fake_stripe [--customers N] [--invoices N]
[--locations N] [--currency usd] [--country US] [--api-version V] [--parent-pid PID]``
binds ``127.0.0.1`` on a free port, prints ``READY http://127.0.0.1:PORT`` and serves until
SIGTERM (or until ``--parent-pid`` is gone).

What it emulates (``/v1``, form-encoded bodies and queries with Stripe's bracket syntax):

* ``GET /v1/account``
* ``/v1/terminal/locations`` list/create, ``/{id}`` retrieve/update/delete (no events, as
  in Stripe)
* ``/v1/customers`` list/create, ``/{id}`` retrieve/update/delete
* ``/v1/invoices`` list/create, ``/{id}`` retrieve/update/delete (drafts),
  ``/{id}/finalize``, ``/{id}/pay``, ``/{id}/void``
* ``/v1/events`` list, ``/{id}`` retrieve; every API change of a customer or invoice emits one
  (objects seeded at startup emit none).
* ``/v1/webhook_endpoints`` list/create, ``/{id}`` retrieve/update/delete; ``secret`` only in
  the create answer, ``status`` ``enabled``/``disabled`` (``disabled=true`` on update). Every
  event goes, signed with the endpoint's secret (``Stripe-Signature``), to each enabled
  endpoint whose ``enabled_events`` match it, from a background thread, once (no retries).

Lists are newest first (``created`` descending, ties by id descending) with ``limit``,
``starting_after``, ``ending_before`` and, for customers, invoices and events, ``created``
filters. Unknown parameters are refused with 400 like Stripe does. ``expand`` is accepted and
ignored. Auth: ``Authorization: Bearer sk_test_...`` (also ``sk_live_``, ``rk_test_``,
``rk_live_``, or HTTP Basic with the key as user name); a key given permissions (``/_fake/permissions``)
may do only those (``customers:read``, ``invoices:write``, ``webhook_endpoints:write``, ...; write
includes read), else 403 with Stripe's permission error. POSTs with an ``Idempotency-Key`` that
succeeded are replayed (``Idempotent-Replayed: true``) like Stripe does.

Control endpoints (JSON, no auth), wrapped by :class:`FakeStripe`: ``/_fake/faults``
(POST queue, GET list, DELETE clear), ``/_fake/requests`` (GET log, DELETE clear),
``/_fake/revoke``, ``/_fake/account``, ``/_fake/invoices``, ``/_fake/permissions`` (POST
``{"key", "allow": [...]}``), ``/_fake/webhook_endpoints`` (GET: every endpoint with its secret;
POST ``{"id", "status"}``: Stripe disabling one), ``/_fake/deliveries`` (GET: what was sent).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import copy
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import stripe

__all__ = [
    "DEFAULT_API_VERSION",
    "FakeStripe",
    "FakeStripeError",
    "main",
    "run_fake_stripe",
]

JSON = dict[str, Any]

#: What ``api_version`` events carry unless ``--api-version`` says otherwise.
DEFAULT_API_VERSION = "2026-10-28.endive"
ACCOUNT_ID = "acct_fake"
KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_MODULE = "tests.support.fake_stripe"
_SEED_STATUSES = ("paid", "open", "paid", "draft", "paid", "void")
_SEED_TIERS = ("bronze", "silver", "gold")


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the emulated API: ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error: JSON = {"type": type, "message": message}
        if code is not None:
            self.error["code"] = code
        if param is not None:
            self.error["param"] = param


def _missing(noun: str, object_id: str, param: str = "id", status: int = 404) -> ApiError:
    return ApiError(status, f"No such {noun}: '{object_id}'", code="resource_missing", param=param)


def _bad_param(message: str, param: str, code: str = "parameter_invalid_string") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def _mask_key(key: str) -> str:
    prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), key[:3] if len(key) > 7 else "")
    return f"{prefix}****{key[-4:]}" if len(key) > 4 else "****"


# --------------------------------------------------------------------------------------------
# Form / query decoding (Stripe's bracket syntax)
# --------------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBKEY_RE = re.compile(r"\[([^\[\]]*)\]")


def parse_form(text: str) -> JSON:
    """``a=1&b[c]=2&d[]=3&d[]=4&e[0]=5`` -> ``{"a": "1", "b": {"c": "2"}, "d": ["3", "4"],
    "e": {"0": "5"}}``. Indexed arrays (what the SDK sends) stay dicts; see :func:`_as_list`."""
    root: JSON = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        m = _KEY_RE.match(key)
        parts = [key] if m is None else [m.group(1), *_SUBKEY_RE.findall(m.group(2))]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if last:
                    node.append(value)
                    break
                new: Any = [] if parts[i + 1] == "" else {}
                node.append(new)
                node = new
                continue
            if last:
                if part == "":
                    break  # "a[b][]" handled by the list branch; a bare "[]" is ignored
                node[part] = value
                break
            want_list = parts[i + 1] == ""
            child = node.get(part)
            if not isinstance(child, list if want_list else dict):
                child = [] if want_list else {}
                node[part] = child
            node = child
    return root


def _as_list(value: Any) -> list[Any]:
    """A list parameter as Stripe reads it: ``x[]=a``, ``x[0]=a`` (the SDK) or ``x=a``."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if all(k.isdigit() for k in value):
            return [value[k] for k in sorted(value, key=int)]
        raise _bad_param("Invalid array", "")
    return [value]


def _int(value: Any, param: str) -> int:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    raise _bad_param(f"Invalid integer: {value}", param, "parameter_invalid_integer")


def _bool(value: Any, param: str) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    raise _bad_param(f"Invalid boolean: {value}", param, "parameter_invalid_boolean")


def _str_or_none(value: Any, param: str) -> str | None:
    if isinstance(value, str):
        return value or None
    raise _bad_param(f"Invalid string: {value!r}", param)


def _check_params(params: JSON, allowed: set[str], prefix: str = "") -> None:
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise _bad_param(f"Received unknown parameter: {name}", name, code="parameter_unknown")


def _require(params: JSON, *names: str) -> None:
    for name in names:
        if params.get(name) in (None, ""):
            raise _bad_param(f"Missing required param: {name}.", name, code="parameter_missing")


ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def _address(value: Any, param: str, base: JSON | None = None) -> JSON | None:
    """An address param (``address[line1]=...``), merged onto ``base``; ``""`` unsets it."""
    if value == "":
        return None
    if not isinstance(value, dict):
        raise _bad_param(f"Invalid object: {value!r}", param, "parameter_invalid_object")
    _check_params(value, set(ADDRESS_FIELDS), param)
    out: JSON = dict.fromkeys(ADDRESS_FIELDS) if base is None else dict(base)
    for key, v in value.items():
        out[key] = _str_or_none(v, f"{param}[{key}]")
    return out


def _metadata(value: Any, base: Mapping[str, str]) -> dict[str, str]:
    """Stripe's metadata update: keys merge, ``""`` deletes a key, ``metadata=""`` clears."""
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise _bad_param(f"Invalid object: {value!r}", "metadata", "parameter_invalid_object")
    out = dict(base)
    for key, v in value.items():
        if not isinstance(v, str):
            raise _bad_param(f"Invalid metadata value for {key}", f"metadata[{key}]")
        if v == "":
            out.pop(key, None)
        else:
            out[key] = v
    return out


def _created_range(value: Any, param: str = "created") -> tuple[int | None, int | None]:
    """``created=T`` or ``created[gt|gte|lt|lte]=T`` -> inclusive ``(lo, hi)`` bounds."""
    if isinstance(value, str):
        exact = _int(value, param)
        return exact, exact
    if not isinstance(value, dict):
        raise _bad_param(f"Invalid {param}", param)
    _check_params(value, {"gt", "gte", "lt", "lte"}, param)
    lo: int | None = None
    hi: int | None = None
    for op, raw in value.items():
        t = _int(raw, f"{param}[{op}]")
        if op == "gt":
            lo = t + 1 if lo is None else max(lo, t + 1)
        elif op == "gte":
            lo = t if lo is None else max(lo, t)
        elif op == "lt":
            hi = t - 1 if hi is None else min(hi, t - 1)
        else:
            hi = t if hi is None else min(hi, t)
    return lo, hi


def _type_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Event type filters; ``*`` is a wildcard (``customer.*``)."""
    regexes = [
        re.compile("^" + ".*".join(re.escape(p) for p in pat.split("*")) + "$") for pat in patterns
    ]
    return lambda t: any(r.match(t) for r in regexes)


# --------------------------------------------------------------------------------------------
# Storage: objects kept as pre-serialised JSON, ordered by (created, seq)
# --------------------------------------------------------------------------------------------

Key = tuple[int, int, str]  # (created, seq, id)


class _Item:
    __slots__ = ("attrs", "body", "key")

    def __init__(self, key: Key, body: bytes, attrs: JSON | None = None) -> None:
        self.key = key
        self.body = body
        self.attrs: JSON = attrs or {}

    @property
    def id(self) -> str:
        return self.key[2]

    def obj(self) -> JSON:
        data: JSON = json.loads(self.body)
        return data


class _Collection:
    """One resource's objects: a sorted key list for paging and id -> item maps."""

    def __init__(self, noun: str, url: str, object_name: str) -> None:
        self.noun = noun  # as in "No such customer: 'cus_x'"
        self.url = url
        self.object_name = object_name
        self.keys: list[Key] = []  # ascending; lists walk it backwards
        self.live: dict[str, _Item] = {}
        self.deleted: dict[str, Key] = {}

    def add(self, item: _Item) -> None:
        if not self.keys or item.key > self.keys[-1]:
            self.keys.append(item.key)
        else:
            bisect.insort(self.keys, item.key)
        self.live[item.id] = item

    def get(self, object_id: str) -> _Item:
        item = self.live.get(object_id)
        if item is None:
            raise _missing(self.noun, object_id)
        return item

    def retrieve_body(self, object_id: str) -> bytes:
        """The object, or Stripe's ``{id, object, deleted: true}`` stub once deleted."""
        if object_id in self.deleted:
            return _dumps({"id": object_id, "object": self.object_name, "deleted": True})
        return self.get(object_id).body

    def remove(self, object_id: str) -> _Item:
        item = self.get(object_id)
        i = bisect.bisect_left(self.keys, item.key)
        del self.keys[i]
        del self.live[object_id]
        self.deleted[object_id] = item.key
        return item

    def cursor(self, object_id: str, param: str) -> Key:
        item = self.live.get(object_id)
        if item is not None:
            return item.key
        if object_id in self.deleted:  # a cursor may outlive its object
            return self.deleted[object_id]
        raise _missing(self.noun, object_id, param=param, status=404)

    def page(
        self,
        params: JSON,
        *,
        created: bool,
        where: Callable[[_Item], bool] | None = None,
    ) -> bytes:
        limit = _int(params.get("limit", "10"), "limit")
        if limit < 1:
            raise _bad_param(
                "This value must be greater than or equal to 1.",
                "limit",
                "parameter_invalid_integer",
            )
        if limit > 100:
            raise _bad_param(
                "This value must be less than or equal to 100.",
                "limit",
                "parameter_invalid_integer",
            )
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise ApiError(
                400, "You may only specify one of these parameters: ending_before, starting_after."
            )
        keys = self.keys
        lo, hi = 0, len(keys)
        if created and "created" in params:
            c_lo, c_hi = _created_range(params["created"])
            if c_lo is not None:
                lo = bisect.bisect_left(keys, (c_lo,))
            if c_hi is not None:
                hi = bisect.bisect_left(keys, (c_hi + 1,))
        if isinstance(after, str) and after:
            hi = min(hi, bisect.bisect_left(keys, self.cursor(after, "starting_after")))
        elif isinstance(before, str) and before:
            lo = max(lo, bisect.bisect_right(keys, self.cursor(before, "ending_before")))
        forward = isinstance(before, str) and bool(before)  # walk up from the cursor
        picked: list[Key]
        if where is None:
            if forward:
                end = min(hi, lo + limit)
                picked, has_more = keys[lo:end][::-1], end < hi
            else:
                start = max(lo, hi - limit)
                picked, has_more = keys[start:hi][::-1], start > lo
        else:
            picked = []
            indexes = range(lo, hi) if forward else range(hi - 1, lo - 1, -1)
            has_more = False
            for i in indexes:
                if where(self.live[keys[i][2]]):
                    if len(picked) == limit:
                        has_more = True
                        break
                    picked.append(keys[i])
            if forward:
                picked.reverse()
        live = self.live
        return b"".join(
            (
                b'{"object":"list","data":[',
                b",".join([live[k[2]].body for k in picked]),
                b'],"has_more":',
                b"true" if has_more else b"false",
                b',"url":',
                _dumps(self.url),
                b"}",
            )
        )


# --------------------------------------------------------------------------------------------
# The emulated account
# --------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """One authenticated /v1 request."""

    livemode: bool
    request_id: str
    idempotency_key: str | None


@dataclass
class _Fault:
    path: str
    method: str | None
    status: int | None
    count: int | None  # None: until cleared
    headers: dict[str, str]
    delay: float
    body: Any
    disconnect: bool

    def to_json(self) -> JSON:
        return {
            "path": self.path,
            "method": self.method,
            "status": self.status,
            "count": self.count,
            "headers": self.headers,
            "delay": self.delay,
            "body": self.body,
            "disconnect": self.disconnect,
        }


class State:
    """Everything the fake Stripe knows. All access goes through ``lock``."""

    def __init__(
        self, *, currency: str = "usd", country: str = "US", api_version: str = DEFAULT_API_VERSION
    ) -> None:
        self.lock = threading.RLock()
        self.api_version = api_version
        self.currency = currency
        self.country = country
        self.counters: dict[str, int] = {}
        self.locations = _Collection("location", "/v1/terminal/locations", "terminal.location")
        self.customers = _Collection("customer", "/v1/customers", "customer")
        self.invoices = _Collection("invoice", "/v1/invoices", "invoice")
        self.events = _Collection("event", "/v1/events", "event")
        self.endpoints = _Collection(
            "webhook endpoint", "/v1/webhook_endpoints", "webhook_endpoint"
        )
        self.permissions: dict[str, set[str]] = {}  # key -> what it may do (absent: anything)
        self.outbox: queue.Queue[tuple[str, str, bytes]] = queue.Queue()  # url, secret, body
        self.deliveries: list[JSON] = []
        self.faults: list[_Fault] = []
        self.request_log: list[JSON] = []
        self.revoked: set[str] = set()
        self.idempotent: dict[tuple[str, str], tuple[str, str, bytes, int, bytes]] = {}
        now = int(time.time())
        self.account: JSON = {
            "id": ACCOUNT_ID,
            "object": "account",
            "business_profile": {
                "mcc": None,
                "name": "Fake Stripe Shop",
                "product_description": None,
                "support_address": None,
                "support_email": None,
                "support_phone": None,
                "support_url": None,
                "url": None,
            },
            "business_type": "company",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "controller": {"type": "account"},
            "country": country,
            "created": now - 365 * 86400,
            "default_currency": currency,
            "details_submitted": True,
            "email": "owner@example.com",
            "external_accounts": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/accounts/{ACCOUNT_ID}/external_accounts",
            },
            "metadata": {},
            "payouts_enabled": True,
            "settings": {
                "dashboard": {"display_name": "Fake Stripe Shop", "timezone": "Etc/UTC"},
            },
            "tos_acceptance": {"date": now - 365 * 86400},
            "type": "standard",
        }

    # -- ids -----------------------------------------------------------------------------

    def next_seq(self, prefix: str) -> int:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return n

    def new_id(self, prefix: str) -> tuple[str, int]:
        n = self.next_seq(prefix)
        return f"{prefix}_{n:06d}", n

    # -- seeding -------------------------------------------------------------------------

    def seed(self, customers: int, invoices: int, locations: int) -> None:
        """Pre-existing objects (no events): ``created`` one minute apart, ending now."""
        if invoices and not customers:
            raise ValueError("--invoices needs --customers (invoices belong to customers)")
        now = int(time.time())
        base = now - 60 * (customers + invoices)
        for i in range(1, locations + 1):
            self._add_location(
                display_name=f"Location {i:04d}",
                address={
                    "city": "San Francisco",
                    "country": self.country,
                    "line1": f"{i} Market Street",
                    "line2": None,
                    "postal_code": "94103",
                    "state": "CA",
                },
                metadata={"seed": str(i)},
                livemode=False,
            )
        for i in range(1, customers + 1):
            cid, seq = self.new_id("cus")
            obj = self._customer_obj(
                cid,
                seq,
                base + 60 * i,
                livemode=False,
                email=f"customer{i:06d}@example.com",
                name=f"Customer {i:06d}",
                phone=f"+1555{i:07d}",
                description=None,
                metadata={"seed": str(i), "tier": _SEED_TIERS[i % 3]},
                address={
                    "city": "Springfield",
                    "country": self.country,
                    "line1": f"{i} Main Street",
                    "line2": None,
                    "postal_code": f"{10000 + i % 90000:05d}",
                    "state": "IL",
                },
                currency=self.currency,
            )
            self.customers.add(
                _Item((obj["created"], seq, cid), _dumps(obj), {"email": obj["email"]})
            )
        for i in range(1, invoices + 1):
            customer = self.customers.live[f"cus_{(i - 1) % customers + 1:06d}"].obj()
            self._add_invoice(
                customer,
                created=base + 60 * (customers + i),
                status=_SEED_STATUSES[i % len(_SEED_STATUSES)],
                amount_due=1000 + 250 * (i % 40),
                currency=self.currency,
                livemode=False,
                metadata={"seed": str(i)},
                description=f"Seeded invoice {i}",
            )

    # -- object builders -----------------------------------------------------------------

    def invoice_number(self, customer_id: str, seq: int) -> str:
        item = self.customers.live.get(customer_id)
        prefix = item.obj()["invoice_prefix"] if item is not None else "F0000000"
        return f"{prefix}-{seq:04d}"

    def _add_location(
        self, *, display_name: str, address: JSON, metadata: dict[str, str], livemode: bool
    ) -> JSON:
        lid, seq = self.new_id("tml")
        obj: JSON = {
            "id": lid,
            "object": "terminal.location",
            "address": address,
            "display_name": display_name,
            "livemode": livemode,
            "metadata": metadata,
        }
        self.locations.add(_Item((0, seq, lid), _dumps(obj)))
        return obj

    def _customer_obj(
        self,
        cid: str,
        seq: int,
        created: int,
        *,
        livemode: bool,
        email: str | None,
        name: str | None,
        phone: str | None,
        description: str | None,
        metadata: dict[str, str],
        address: JSON | None,
        currency: str | None = None,
        balance: int = 0,
        preferred_locales: list[str] | None = None,
        shipping: JSON | None = None,
        tax_exempt: str = "none",
    ) -> JSON:
        return {
            "id": cid,
            "object": "customer",
            "address": address,
            "balance": balance,
            "created": created,
            "currency": currency,
            "default_source": None,
            "delinquent": False,
            "description": description,
            "discount": None,
            "email": email,
            "invoice_prefix": f"F{seq:07X}",
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": livemode,
            "metadata": metadata,
            "name": name,
            "next_invoice_sequence": 1,
            "phone": phone,
            "preferred_locales": preferred_locales or [],
            "shipping": shipping,
            "tax_exempt": tax_exempt,
            "test_clock": None,
        }

    def _add_invoice(
        self,
        customer: JSON,
        *,
        created: int,
        status: str,
        amount_due: int,
        currency: str,
        livemode: bool,
        metadata: dict[str, str] | None = None,
        description: str | None = None,
        collection_method: str = "charge_automatically",
        auto_advance: bool | None = None,
        due_date: int | None = None,
    ) -> JSON:
        if status not in INVOICE_STATUSES:
            raise _bad_param(f"Invalid status: {status}", "status")
        iid, seq = self.new_id("in")
        number = None if status == "draft" else self.invoice_number(customer["id"], seq)
        finalized_at = created + 60 if status != "draft" else None
        line = {
            "id": f"il_{seq:06d}",
            "object": "line_item",
            "amount": amount_due,
            "currency": currency,
            "description": description or "Invoice item",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": iid,
            "livemode": livemode,
            "metadata": {},
            "parent": {
                "invoice_item_details": {
                    "invoice_item": f"ii_{seq:06d}",
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": None,
                },
                "subscription_item_details": None,
                "type": "invoice_item_details",
            },
            "period": {"end": created, "start": created},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": f"price_{seq:06d}", "product": f"prod_{seq:06d}"},
                "type": "price_details",
                "unit_amount_decimal": str(amount_due),
            },
            "quantity": 1,
            "quantity_decimal": "1",
            "subscription": None,
            "subtotal": amount_due,
            "taxes": [],
        }
        obj: JSON = {
            "id": iid,
            "object": "invoice",
            "account_country": self.account.get("country"),
            "account_name": (self.account.get("settings") or {})
            .get("dashboard", {})
            .get("display_name"),
            "account_tax_ids": None,
            "amount_due": amount_due,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": amount_due,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": (status == "draft") if auto_advance is None else auto_advance,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": None,
            "billing_reason": "manual",
            "collection_method": collection_method,
            "created": created,
            "currency": currency,
            "custom_fields": None,
            "customer": customer["id"],
            "customer_account": None,
            "customer_address": customer.get("address"),
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "customer_phone": customer.get("phone"),
            "customer_shipping": customer.get("shipping"),
            "customer_tax_exempt": customer.get("tax_exempt", "none"),
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": description,
            "discounts": [],
            "due_date": due_date,
            "effective_at": finalized_at,
            "ending_balance": None if status == "draft" else 0,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": {
                "object": "list",
                "data": [line] if amount_due else [],
                "has_more": False,
                "url": f"/v1/invoices/{iid}/lines",
            },
            "livemode": livemode,
            "metadata": metadata or {},
            "next_payment_attempt": None,
            "number": number,
            "on_behalf_of": None,
            "parent": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": created,
            "period_start": created,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": {
                "amount_tax_display": None,
                "pdf": {"page_size": "auto"},
                "template": None,
                "template_version": None,
            },
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": status,
            "status_transitions": {
                "finalized_at": finalized_at,
                "marked_uncollectible_at": created + 120 if status == "uncollectible" else None,
                "paid_at": created + 120 if status == "paid" else None,
                "voided_at": created + 120 if status == "void" else None,
            },
            "subscription": None,
            "subtotal": amount_due,
            "subtotal_excluding_tax": amount_due,
            "test_clock": None,
            "total": amount_due,
            "total_discount_amounts": [],
            "total_excluding_tax": amount_due,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": created,
        }
        if status == "paid":
            obj.update(amount_paid=amount_due, amount_remaining=0, attempt_count=1, attempted=True)
        elif status == "void":
            obj.update(amount_remaining=0)
        self._store_invoice(obj, seq)
        return obj

    def _store_invoice(self, obj: JSON, seq: int | None = None) -> None:
        attrs = {
            "customer": obj["customer"],
            "status": obj["status"],
            "collection_method": obj["collection_method"],
        }
        if seq is None:
            item = self.invoices.get(obj["id"])
            item.body, item.attrs = _dumps(obj), attrs
        else:
            self.invoices.add(_Item((obj["created"], seq, obj["id"]), _dumps(obj), attrs))

    def create_invoice(
        self, params: JSON, *, livemode: bool, created: int, ctx: _Ctx | None
    ) -> JSON:
        """``POST /v1/invoices`` and ``POST /_fake/invoices``: a draft unless ``status`` says."""
        customer_id = params.get("customer")
        if not isinstance(customer_id, str) or customer_id not in self.customers.live:
            raise _missing("customer", str(customer_id), param="customer", status=400)
        customer = self.customers.live[customer_id].obj()
        status = str(params.get("status", "draft"))
        amount_due = params.get("amount_due", 0)
        amount = amount_due if isinstance(amount_due, int) else _int(amount_due, "amount_due")
        auto_advance = params.get("auto_advance")
        due_date = params.get("due_date")
        obj = self._add_invoice(
            customer,
            created=created,
            status=status,
            amount_due=amount,
            currency=str(params.get("currency") or customer.get("currency") or self.currency),
            livemode=livemode,
            metadata=_metadata(params.get("metadata", {}), {}),
            description=_str_or_none(params.get("description") or "", "description"),
            collection_method=str(params.get("collection_method", "charge_automatically")),
            auto_advance=None
            if auto_advance is None
            else (
                auto_advance
                if isinstance(auto_advance, bool)
                else _bool(auto_advance, "auto_advance")
            ),
            due_date=None
            if due_date in (None, "")
            else (due_date if isinstance(due_date, int) else _int(due_date, "due_date")),
        )
        if ctx is not None:
            self.emit(ctx, "invoice.created", obj)
            if status != "draft":
                self.emit(ctx, "invoice.finalized", obj)
            if status == "paid":
                self.emit(ctx, "invoice.paid", obj)
                self.emit(ctx, "invoice.payment_succeeded", obj)
            elif status == "void":
                self.emit(ctx, "invoice.voided", obj)
        return obj

    def take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self.faults:
            if path.startswith(fault.path) and fault.method in (None, method):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    # -- events --------------------------------------------------------------------------

    def emit(self, ctx: _Ctx, type: str, obj: JSON, previous: JSON | None = None) -> None:
        eid, seq = self.new_id("evt")
        now = int(time.time())
        data: JSON = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event: JSON = {
            "id": eid,
            "object": "event",
            "api_version": self.api_version,
            "created": now,
            "data": data,
            "livemode": ctx.livemode,
            "pending_webhooks": 0,
            "request": {"id": ctx.request_id or None, "idempotency_key": ctx.idempotency_key},
            "type": type,
        }
        body = _dumps(event)
        self.events.add(_Item((now, seq, eid), body, {"type": type}))
        for item in self.endpoints.live.values():
            endpoint = item.obj()
            wanted = _type_matcher(endpoint["enabled_events"])
            if endpoint["status"] == "enabled" and wanted(type):
                self.outbox.put((endpoint["url"], item.attrs["secret"], body))

    def deliver_forever(self) -> None:
        """Send queued events (a daemon thread): signed as Stripe signs them, once each."""
        while True:
            url, secret, body = self.outbox.get()
            stamp = int(time.time())
            digest = hmac.new(
                secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256
            ).hexdigest()
            request = urllib.request.Request(url, data=body, method="POST")
            request.add_header("Content-Type", "application/json; charset=utf-8")
            request.add_header("Stripe-Signature", f"t={stamp},v1={digest}")
            try:
                with _OPENER.open(request, timeout=10) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
                exc.close()
            except OSError:
                status = 0
            with self.lock:
                event_id = json.loads(body)["id"]
                self.deliveries.append({"url": url, "event": event_id, "status": status})


def _diff(before: JSON, after: JSON) -> JSON:
    """Stripe's ``previous_attributes``: old values of changed fields (metadata per key)."""
    previous: JSON = {}
    for key, new in after.items():
        old = before.get(key)
        if old == new:
            continue
        if key == "metadata" and isinstance(old, dict) and isinstance(new, dict):
            previous[key] = {k: old.get(k) for k in {*old, *new} if old.get(k) != new.get(k)}
        else:
            previous[key] = old
    return previous


# --------------------------------------------------------------------------------------------
# The /v1 API
# --------------------------------------------------------------------------------------------

LOCATION_FIELDS = {"display_name", "address", "metadata", "configuration_overrides", "expand"}
CUSTOMER_FIELDS = {
    "address",
    "balance",
    "description",
    "email",
    "expand",
    "invoice_prefix",
    "metadata",
    "name",
    "phone",
    "preferred_locales",
    "shipping",
    "tax_exempt",
}
INVOICE_CREATE_FIELDS = {
    "auto_advance",
    "collection_method",
    "currency",
    "customer",
    "days_until_due",
    "description",
    "due_date",
    "expand",
    "metadata",
    # not Stripe's: the fake has no invoice items, so amount and status are given directly
    "amount_due",
    "status",
}
INVOICE_UPDATE_FIELDS = {
    "auto_advance",
    "collection_method",
    "days_until_due",
    "description",
    "due_date",
    "expand",
    "footer",
    "metadata",
}
LIST_FIELDS = {"limit", "starting_after", "ending_before", "expand"}


class Api:
    """Routes /v1 requests to handlers; callers hold ``state.lock``."""

    def __init__(self, state: State) -> None:
        self.state = state
        S = r"([A-Za-z0-9_]+)"
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., bytes]]] = [
            ("GET", re.compile(r"/v1/account"), self.get_account),
            ("GET", re.compile(r"/v1/terminal/locations"), self.list_locations),
            ("POST", re.compile(r"/v1/terminal/locations"), self.create_location),
            ("GET", re.compile(rf"/v1/terminal/locations/{S}"), self.get_location),
            ("POST", re.compile(rf"/v1/terminal/locations/{S}"), self.update_location),
            ("DELETE", re.compile(rf"/v1/terminal/locations/{S}"), self.delete_location),
            ("GET", re.compile(r"/v1/customers"), self.list_customers),
            ("POST", re.compile(r"/v1/customers"), self.create_customer),
            ("GET", re.compile(rf"/v1/customers/{S}"), self.get_customer),
            ("POST", re.compile(rf"/v1/customers/{S}"), self.update_customer),
            ("DELETE", re.compile(rf"/v1/customers/{S}"), self.delete_customer),
            ("GET", re.compile(r"/v1/invoices"), self.list_invoices),
            ("POST", re.compile(r"/v1/invoices"), self.create_invoice),
            ("GET", re.compile(rf"/v1/invoices/{S}"), self.get_invoice),
            ("POST", re.compile(rf"/v1/invoices/{S}"), self.update_invoice),
            ("DELETE", re.compile(rf"/v1/invoices/{S}"), self.delete_invoice),
            ("POST", re.compile(rf"/v1/invoices/{S}/finalize"), self.finalize_invoice),
            ("POST", re.compile(rf"/v1/invoices/{S}/pay"), self.pay_invoice),
            ("POST", re.compile(rf"/v1/invoices/{S}/void"), self.void_invoice),
            ("GET", re.compile(r"/v1/events"), self.list_events),
            ("GET", re.compile(rf"/v1/events/{S}"), self.get_event),
            ("GET", re.compile(r"/v1/webhook_endpoints"), self.list_endpoints),
            ("POST", re.compile(r"/v1/webhook_endpoints"), self.create_endpoint),
            ("GET", re.compile(rf"/v1/webhook_endpoints/{S}"), self.get_endpoint),
            ("POST", re.compile(rf"/v1/webhook_endpoints/{S}"), self.update_endpoint),
            ("DELETE", re.compile(rf"/v1/webhook_endpoints/{S}"), self.delete_endpoint),
        ]

    def handle(self, method: str, path: str, params: JSON, ctx: _Ctx) -> bytes:
        for route_method, pattern, fn in self.routes:
            m = pattern.fullmatch(path)
            if m and route_method == method:
                return fn(params, ctx, *m.groups())
        raise ApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    # -- account -------------------------------------------------------------------------

    def get_account(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, {"expand"})
        return _dumps(self.state.account)

    # -- terminal locations --------------------------------------------------------------

    def list_locations(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, LIST_FIELDS)
        return self.state.locations.page(params, created=False)

    def get_location(self, params: JSON, ctx: _Ctx, lid: str) -> bytes:
        _check_params(params, {"expand"})
        return self.state.locations.retrieve_body(lid)

    def create_location(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, LOCATION_FIELDS)
        _require(params, "display_name", "address")
        address = _address(params["address"], "address")
        if address is None or not address.get("country"):
            raise _bad_param(
                "Missing required param: address[country].", "address[country]", "parameter_missing"
            )
        obj = self.state._add_location(
            display_name=str(params["display_name"]),
            address=address,
            metadata=_metadata(params.get("metadata", {}), {}),
            livemode=ctx.livemode,
        )
        return _dumps(obj)

    def update_location(self, params: JSON, ctx: _Ctx, lid: str) -> bytes:
        _check_params(params, LOCATION_FIELDS)
        item = self.state.locations.get(lid)
        obj = item.obj()
        if "display_name" in params:
            if not params["display_name"]:
                raise _bad_param("display_name cannot be blank", "display_name")
            obj["display_name"] = str(params["display_name"])
        if "address" in params:
            address = _address(params["address"], "address", obj["address"])
            if address is None:
                raise _bad_param("address cannot be unset", "address")
            obj["address"] = address
        if "metadata" in params:
            obj["metadata"] = _metadata(params["metadata"], obj["metadata"])
        item.body = _dumps(obj)
        return item.body

    def delete_location(self, params: JSON, ctx: _Ctx, lid: str) -> bytes:
        _check_params(params, set())
        self.state.locations.remove(lid)
        return _dumps({"id": lid, "object": "terminal.location", "deleted": True})

    # -- customers -----------------------------------------------------------------------

    def list_customers(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, LIST_FIELDS | {"created", "email", "test_clock"})
        where = None
        if "email" in params:
            email = params["email"]
            where = lambda item: item.attrs.get("email") == email  # noqa: E731
        return self.state.customers.page(params, created=True, where=where)

    def get_customer(self, params: JSON, ctx: _Ctx, cid: str) -> bytes:
        _check_params(params, {"expand"})
        return self.state.customers.retrieve_body(cid)

    def _customer_fields(self, params: JSON, obj: JSON) -> JSON:
        """Apply create/update params to a customer dict (in place) and return it."""
        for key in ("email", "name", "phone", "description"):
            if key in params:
                obj[key] = _str_or_none(params[key], key)
        if "address" in params:
            obj["address"] = _address(params["address"], "address", obj.get("address"))
        if "metadata" in params:
            obj["metadata"] = _metadata(params["metadata"], obj.get("metadata") or {})
        if "balance" in params:
            obj["balance"] = _int(params["balance"], "balance")
        if "preferred_locales" in params:
            obj["preferred_locales"] = (
                [] if params["preferred_locales"] == "" else _as_list(params["preferred_locales"])
            )
        if "shipping" in params:
            shipping = params["shipping"]
            if shipping == "":
                obj["shipping"] = None
            elif isinstance(shipping, dict):
                _check_params(shipping, {"address", "name", "phone"}, "shipping")
                obj["shipping"] = {
                    "address": _address(shipping.get("address", {}), "shipping[address]"),
                    "name": shipping.get("name"),
                    "phone": shipping.get("phone"),
                }
            else:
                raise _bad_param("Invalid object", "shipping", "parameter_invalid_object")
        if "tax_exempt" in params:
            if params["tax_exempt"] not in ("none", "exempt", "reverse"):
                raise _bad_param(f"Invalid tax_exempt: {params['tax_exempt']}", "tax_exempt")
            obj["tax_exempt"] = params["tax_exempt"]
        if "invoice_prefix" in params:
            obj["invoice_prefix"] = str(params["invoice_prefix"])
        return obj

    def create_customer(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, CUSTOMER_FIELDS)
        state = self.state
        cid, seq = state.new_id("cus")
        obj = state._customer_obj(
            cid,
            seq,
            int(time.time()),
            livemode=ctx.livemode,
            email=None,
            name=None,
            phone=None,
            description=None,
            metadata={},
            address=None,
        )
        self._customer_fields(params, obj)
        state.customers.add(_Item((obj["created"], seq, cid), _dumps(obj), {"email": obj["email"]}))
        state.emit(ctx, "customer.created", obj)
        return _dumps(obj)

    def update_customer(self, params: JSON, ctx: _Ctx, cid: str) -> bytes:
        _check_params(params, CUSTOMER_FIELDS)
        item = self.state.customers.get(cid)
        before = item.obj()
        after = self._customer_fields(params, copy.deepcopy(before))
        previous = _diff(before, after)
        if previous:
            item.body = _dumps(after)
            item.attrs = {"email": after["email"]}
            self.state.emit(ctx, "customer.updated", after, previous)
        return item.body

    def delete_customer(self, params: JSON, ctx: _Ctx, cid: str) -> bytes:
        _check_params(params, set())
        item = self.state.customers.remove(cid)
        self.state.emit(ctx, "customer.deleted", item.obj())
        return _dumps({"id": cid, "object": "customer", "deleted": True})

    # -- invoices ------------------------------------------------------------------------

    def list_invoices(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(
            params,
            LIST_FIELDS | {"created", "customer", "status", "collection_method", "due_date"},
        )
        wanted = {k: params[k] for k in ("customer", "status", "collection_method") if k in params}
        if "status" in wanted and wanted["status"] not in INVOICE_STATUSES:
            raise _bad_param(f"Invalid status: {wanted['status']}", "status")
        where = None
        if wanted:
            where = lambda item: all(item.attrs.get(k) == v for k, v in wanted.items())  # noqa: E731
        return self.state.invoices.page(params, created=True, where=where)

    def get_invoice(self, params: JSON, ctx: _Ctx, iid: str) -> bytes:
        _check_params(params, {"expand"})
        return self.state.invoices.retrieve_body(iid)

    def create_invoice(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, INVOICE_CREATE_FIELDS)
        _require(params, "customer")
        obj = self.state.create_invoice(
            params, livemode=ctx.livemode, created=int(time.time()), ctx=ctx
        )
        return _dumps(obj)

    def _invoice_transition(self, ctx: _Ctx, iid: str, to: str) -> JSON:
        item = self.state.invoices.get(iid)
        obj = item.obj()
        status = obj["status"]
        now = int(time.time())
        if to == "open" and status != "draft":
            raise ApiError(
                400, f"This invoice is already finalized, you can't re-finalize a {status} invoice."
            )
        if to == "void" and status != "open" and status != "uncollectible":
            raise ApiError(
                400,
                f"You can only pass in open or uncollectible invoices. This invoice is {status}.",
            )
        if to == "paid" and status not in ("draft", "open", "uncollectible"):
            raise ApiError(
                400,
                f"Invoice is already {status}"
                if status == "paid"
                else f"You cannot pay a {status} invoice.",
            )
        if status == "draft":
            obj["status"] = "open"
            obj["number"] = obj["number"] or self.state.invoice_number(
                obj["customer"], int(iid.split("_")[1])
            )
            obj["status_transitions"]["finalized_at"] = now
            obj["effective_at"] = now
            obj["ending_balance"] = 0
            obj["auto_advance"] = to == "paid" or obj["auto_advance"]
            self.state._store_invoice(obj)
            self.state.emit(ctx, "invoice.finalized", obj, {"status": "draft"})
        if to == "paid":
            obj.update(
                status="paid",
                amount_paid=obj["amount_due"],
                amount_remaining=0,
                attempt_count=obj["attempt_count"] + 1,
                attempted=True,
            )
            obj["status_transitions"]["paid_at"] = now
            self.state._store_invoice(obj)
            self.state.emit(ctx, "invoice.paid", obj)
            self.state.emit(ctx, "invoice.payment_succeeded", obj)
        elif to == "void":
            obj.update(status="void", amount_remaining=0)
            obj["status_transitions"]["voided_at"] = now
            self.state._store_invoice(obj)
            self.state.emit(ctx, "invoice.voided", obj, {"status": status})
        return obj

    def finalize_invoice(self, params: JSON, ctx: _Ctx, iid: str) -> bytes:
        _check_params(params, {"auto_advance", "expand"})
        return _dumps(self._invoice_transition(ctx, iid, "open"))

    def pay_invoice(self, params: JSON, ctx: _Ctx, iid: str) -> bytes:
        _check_params(
            params,
            {
                "expand",
                "forgive",
                "mandate",
                "off_session",
                "paid_out_of_band",
                "payment_method",
                "source",
            },
        )
        return _dumps(self._invoice_transition(ctx, iid, "paid"))

    def void_invoice(self, params: JSON, ctx: _Ctx, iid: str) -> bytes:
        _check_params(params, {"expand"})
        return _dumps(self._invoice_transition(ctx, iid, "void"))

    def update_invoice(self, params: JSON, ctx: _Ctx, iid: str) -> bytes:
        _check_params(params, INVOICE_UPDATE_FIELDS)
        item = self.state.invoices.get(iid)
        before = item.obj()
        after = copy.deepcopy(before)
        for key in ("description", "footer"):
            if key in params:
                after[key] = _str_or_none(params[key], key)
        if "metadata" in params:
            after["metadata"] = _metadata(params["metadata"], after["metadata"])
        if "auto_advance" in params:
            after["auto_advance"] = _bool(params["auto_advance"], "auto_advance")
        if "collection_method" in params:
            after["collection_method"] = params["collection_method"]
        if "due_date" in params:
            after["due_date"] = (
                None if params["due_date"] == "" else _int(params["due_date"], "due_date")
            )
        if "days_until_due" in params:
            after["due_date"] = after["created"] + 86400 * _int(
                params["days_until_due"], "days_until_due"
            )
        previous = _diff(before, after)
        if previous:
            self.state._store_invoice(after)
            self.state.emit(ctx, "invoice.updated", after, previous)
        return _dumps(after)

    def delete_invoice(self, params: JSON, ctx: _Ctx, iid: str) -> bytes:
        _check_params(params, set())
        item = self.state.invoices.get(iid)
        if item.attrs["status"] != "draft":
            raise ApiError(400, "You can only delete draft invoices.")
        self.state.invoices.remove(iid)
        self.state.emit(ctx, "invoice.deleted", item.obj())
        return _dumps({"id": iid, "object": "invoice", "deleted": True})

    # -- events --------------------------------------------------------------------------

    def list_events(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, LIST_FIELDS | {"created", "delivery_success", "type", "types"})
        if "type" in params and "types" in params:
            raise ApiError(400, "You may only specify one of these parameters: type, types.")
        where = None
        if "type" in params or "types" in params:
            patterns = [str(t) for t in _as_list(params.get("type", params.get("types")))]
            if len(patterns) > 20:
                raise _bad_param("You may pass at most 20 types.", "types")
            match = _type_matcher(patterns)
            where = lambda item: match(item.attrs["type"])  # noqa: E731
        return self.state.events.page(params, created=True, where=where)

    def get_event(self, params: JSON, ctx: _Ctx, eid: str) -> bytes:
        _check_params(params, {"expand"})
        return self.state.events.retrieve_body(eid)

    # -- webhook endpoints ---------------------------------------------------------------

    def list_endpoints(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(params, LIST_FIELDS)
        return self.state.endpoints.page(params, created=False)

    def get_endpoint(self, params: JSON, ctx: _Ctx, wid: str) -> bytes:
        _check_params(params, {"expand"})
        return self.state.endpoints.get(wid).body

    def _endpoint_fields(self, params: JSON, obj: JSON) -> JSON:
        if "url" in params:
            url = str(params["url"])
            if not re.match(r"^https?://[^/\s]+", url):
                raise _bad_param(
                    "Invalid URL: URL must be publicly accessible.", "url", "url_invalid"
                )
            obj["url"] = url
        if "enabled_events" in params:
            events = [str(e) for e in _as_list(params["enabled_events"])]
            if not events:
                raise _bad_param("Invalid array", "enabled_events")
            obj["enabled_events"] = events
        if "description" in params:
            obj["description"] = _str_or_none(params["description"], "description")
        if "metadata" in params:
            obj["metadata"] = _metadata(params["metadata"], obj.get("metadata") or {})
        if "disabled" in params:
            obj["status"] = "disabled" if _bool(params["disabled"], "disabled") else "enabled"
        return obj

    def create_endpoint(self, params: JSON, ctx: _Ctx) -> bytes:
        _check_params(
            params,
            {
                "url",
                "enabled_events",
                "api_version",
                "description",
                "metadata",
                "connect",
                "expand",
            },
        )
        _require(params, "url", "enabled_events")
        wid, seq = self.state.new_id("we")
        created = int(time.time())
        obj: JSON = {
            "id": wid,
            "object": "webhook_endpoint",
            "api_version": params.get("api_version") or None,
            "application": None,
            "created": created,
            "description": None,
            "enabled_events": [],
            "livemode": ctx.livemode,
            "metadata": {},
            "status": "enabled",
            "url": "",
        }
        obj = self._endpoint_fields(params, obj)
        secret = f"whsec_{secrets.token_hex(16)}"
        self.state.endpoints.add(_Item((created, seq, wid), _dumps(obj), {"secret": secret}))
        return _dumps({**obj, "secret": secret})

    def update_endpoint(self, params: JSON, ctx: _Ctx, wid: str) -> bytes:
        _check_params(
            params, {"url", "enabled_events", "description", "metadata", "disabled", "expand"}
        )
        item = self.state.endpoints.get(wid)
        item.body = _dumps(self._endpoint_fields(params, item.obj()))
        return item.body

    def delete_endpoint(self, params: JSON, ctx: _Ctx, wid: str) -> bytes:
        _check_params(params, set())
        self.state.endpoints.remove(wid)
        return _dumps({"id": wid, "object": "webhook_endpoint", "deleted": True})


def permission_for(method: str, path: str) -> str:
    """The permission a request needs: ``customers:read``, ``terminal_locations:write``..."""
    parts = [p for p in path.removeprefix("/v1/").split("/") if p]
    resource = "_".join(parts[:2]) if parts[:1] == ["terminal"] else (parts[0] if parts else "")
    return f"{resource}:{'read' if method == 'GET' else 'write'}"


def _permitted(allowed: set[str], needed: str) -> bool:
    resource, _, access = needed.partition(":")
    return needed in allowed or (access == "read" and f"{resource}:write" in allowed)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

_NO_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


def _fault_error(status: int) -> JSON:
    if status == 429:
        return {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
        }
    if status >= 500:
        return {
            "type": "api_error",
            "message": "An unknown error occurred in the fake Stripe (injected fault).",
        }
    if status == 401:
        return {"type": "invalid_request_error", "message": "Invalid API Key provided (injected)."}
    return {"type": "invalid_request_error", "message": f"Injected fault: HTTP {status}."}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, state: State, *, verbose: bool = False) -> None:
        self.state = state
        self.api = Api(state)
        self.verbose = verbose
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() would look up the host's FQDN; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True
    server_version = "FakeStripe/1.0"

    @property
    def _srv(self) -> _Server:
        assert isinstance(self.server, _Server)
        return self.server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self._srv.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if url.path.startswith("/_fake/"):
            self._control(method, url.path, raw)
        else:
            self._v1(method, url.path, url.query, raw)

    # -- /v1 -----------------------------------------------------------------------------

    def _authenticate(self, state: State, request_id: str) -> tuple[str, _Ctx]:
        header = self.headers.get("Authorization", "")
        key = ""
        if header.startswith("Bearer "):
            key = header[len("Bearer ") :].strip()
        elif header.startswith("Basic "):
            with contextlib.suppress(ValueError):
                key = base64.b64decode(header[len("Basic ") :]).decode().split(":")[0]
        if not key:
            raise ApiError(401, _NO_KEY_MESSAGE)
        prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), None)
        if prefix is None or len(key) == len(prefix) or key in state.revoked:
            raise ApiError(401, f"Invalid API Key provided: {_mask_key(key)}")
        idempotency_key = self.headers.get("Idempotency-Key")
        allowed = state.permissions.get(key)
        needed = permission_for(self.command, urllib.parse.urlsplit(self.path).path)
        if allowed is not None and not _permitted(allowed, needed):
            raise ApiError(
                403,
                f"The provided key '{_mask_key(key)}' does not have the required permissions "
                f"for this endpoint on account '{ACCOUNT_ID}'. Having the "
                f"'rak_{needed.replace(':', '_')}' permission would allow this request to "
                "continue.",
                type="invalid_request_error",
            )
        return key, _Ctx(
            livemode="_live_" in prefix, request_id=request_id, idempotency_key=idempotency_key
        )

    def _v1(self, method: str, path: str, query_text: str, raw: bytes) -> None:
        srv = self._srv
        state = srv.state
        with state.lock:
            request_id, _ = state.new_id("req")
            fault = state.take_fault(method, path)
        query = parse_form(query_text)
        form = parse_form(raw.decode("utf-8", "replace")) if method == "POST" else {}
        entry: JSON = {
            "id": request_id,
            "method": method,
            "path": path,
            "query": query,
            "body": form,
            "status": None,
            "at": time.time(),
        }
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": self.headers.get("Stripe-Version") or state.api_version,
        }
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            headers.update(fault.headers)
            if fault.disconnect:
                entry["status"] = 0
                with state.lock:
                    state.request_log.append(entry)
                self.close_connection = True  # no answer at all: the client sees a reset
                return
            if fault.status is not None:
                if fault.body is None:
                    body = _dumps({"error": _fault_error(fault.status)})
                elif isinstance(fault.body, str):
                    body = fault.body.encode()
                else:
                    body = _dumps(fault.body)
                entry["status"] = fault.status
                with state.lock:
                    state.request_log.append(entry)
                self._send(fault.status, body, headers)
                return
        with state.lock:
            try:
                key, ctx = self._authenticate(state, request_id)
                params = {**query, **form}
                replay: tuple[str, str, bytes, int, bytes] | None = None
                if method == "POST" and ctx.idempotency_key:
                    headers["Idempotency-Key"] = ctx.idempotency_key
                    replay = state.idempotent.get((key, ctx.idempotency_key))
                if replay is not None:
                    if replay[:3] != (method, path, raw):
                        raise ApiError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{ctx.idempotency_key}' if you meant to execute a different "
                            "request.",
                            type="idempotency_error",
                        )
                    status, body = replay[3], replay[4]
                    headers["Idempotent-Replayed"] = "true"
                else:
                    body = srv.api.handle(method, path, params, ctx)
                    status = 200
                    if method == "POST" and ctx.idempotency_key:
                        state.idempotent[(key, ctx.idempotency_key)] = (
                            method,
                            path,
                            raw,
                            status,
                            body,
                        )
            except ApiError as exc:
                status, body = exc.status, _dumps({"error": exc.error})
            except Exception as exc:  # a bug in the fake: answer like Stripe's 500, keep serving
                traceback.print_exc()
                error = {"type": "api_error", "message": f"fake stripe crashed: {exc!r}"}
                status, body = 500, _dumps({"error": error})
            entry["status"] = status
            state.request_log.append(entry)
        self._send(status, body, headers)

    # -- /_fake control ------------------------------------------------------------------

    def _control(self, method: str, path: str, raw: bytes) -> None:
        state = self._srv.state
        try:
            data: Any = json.loads(raw) if raw.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            with state.lock:  # serialise under the lock: the state may change meanwhile
                body = _dumps(self._control_locked(state, method, path, data))
        except KeyError as exc:
            self._send(404 if exc.args == (path,) else 400, _dumps({"error": f"{exc}"}))
            return
        except (ValueError, TypeError) as exc:
            self._send(400, _dumps({"error": str(exc)}))
            return
        except ApiError as exc:
            self._send(exc.status, _dumps({"error": exc.error}))
            return
        self._send(200, body)

    def _control_locked(self, state: State, method: str, path: str, data: JSON) -> Any:
        route = (method, path)
        if route == ("POST", "/_fake/faults"):
            fault = _Fault(
                path=str(data["path"]),
                method=str(data["method"]).upper() if data.get("method") else None,
                status=None if data.get("status") is None else int(data["status"]),
                count=None if data.get("count", 1) is None else int(data.get("count", 1)),
                headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
                delay=float(data.get("delay") or 0.0),
                body=data.get("body"),
                disconnect=bool(data.get("disconnect", False)),
            )
            if fault.count is not None and fault.count < 1:
                raise ValueError("count must be >= 1 (or null for 'until cleared')")
            if fault.status is None and not fault.delay and not fault.disconnect:
                raise ValueError("a fault needs a status, a delay or disconnect")
            state.faults.append(fault)
            return fault.to_json()
        if route == ("GET", "/_fake/faults"):
            return [f.to_json() for f in state.faults]
        if route == ("DELETE", "/_fake/faults"):
            state.faults.clear()
            return {"cleared": True}
        if route == ("GET", "/_fake/requests"):
            return state.request_log
        if route == ("DELETE", "/_fake/requests"):
            state.request_log = []
            return {"cleared": True}
        if route == ("POST", "/_fake/revoke"):
            state.revoked.add(str(data["key"]))
            return {"revoked": data["key"]}
        if route == ("GET", "/_fake/account"):
            return state.account
        if route == ("POST", "/_fake/account"):
            state.account.update(data)
            state.account["id"] = state.account.get("id") or ACCOUNT_ID
            return state.account
        if route == ("POST", "/_fake/permissions"):
            state.permissions[str(data["key"])] = {str(p) for p in data["allow"]}
            return {"key": data["key"], "allow": sorted(state.permissions[str(data["key"])])}
        if route == ("GET", "/_fake/webhook_endpoints"):
            return [
                {**item.obj(), "secret": item.attrs["secret"]}
                for item in state.endpoints.live.values()
            ]
        if route == ("POST", "/_fake/webhook_endpoints"):
            item = state.endpoints.get(str(data["id"]))
            obj = item.obj()
            obj["status"] = str(data.get("status", "disabled"))
            item.body = _dumps(obj)
            return obj
        if route == ("GET", "/_fake/deliveries"):
            return state.deliveries
        if route == ("POST", "/_fake/invoices"):
            created = int(data.pop("created", None) or time.time())
            _check_params(data, INVOICE_CREATE_FIELDS - {"expand"})
            ctx = _Ctx(livemode=False, request_id="", idempotency_key=None)
            obj = state.create_invoice(data, livemode=False, created=created, ctx=ctx)
            return obj
        raise KeyError(path)


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_MODULE}", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--customers", type=int, default=0)
    parser.add_argument("--invoices", type=int, default=0)
    parser.add_argument("--locations", type=int, default=0)
    parser.add_argument("--currency", default="usd")
    parser.add_argument("--country", default="US")
    parser.add_argument("--api-version", default=DEFAULT_API_VERSION)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when it is gone")
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")
    args = parser.parse_args(argv)

    state = State(currency=args.currency, country=args.country, api_version=args.api_version)
    started = time.perf_counter()
    try:
        state.seed(args.customers, args.invoices, args.locations)
    except ValueError as exc:
        parser.error(str(exc))
    seeded_in = time.perf_counter() - started
    server = _Server(state, verbose=args.verbose)
    threading.Thread(target=state.deliver_forever, daemon=True).start()

    def stop(*_: object) -> None:
        # shutdown() waits for serve_forever() (this thread) to return: call it elsewhere.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid is not None:

        def watch_parent() -> None:
            while os.getppid() == args.parent_pid:
                time.sleep(0.5)
            server.shutdown()

        threading.Thread(target=watch_parent, daemon=True).start()

    host, port = server.server_address[:2]
    sys.stderr.write(
        f"fake stripe: seeded {args.customers} customers, {args.invoices} invoices, "
        f"{args.locations} locations in {seeded_in:.2f}s\n"
    )
    print(f"READY http://{host!s}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


# --------------------------------------------------------------------------------------------
# The test side
# --------------------------------------------------------------------------------------------

# Never route 127.0.0.1 through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeStripeError(RuntimeError):
    """The fake Stripe failed to start, died, or refused a control request."""


@dataclass
class FakeStripe:
    """A running fake Stripe subprocess (see :func:`run_fake_stripe`)."""

    api_base: str
    secret_key: str
    process: subprocess.Popen[bytes]
    stderr_file: IO[bytes]
    _clients: list[stripe.StripeClient] = field(default_factory=list, init=False, repr=False)
    _sdk: stripe.StripeClient | None = field(default=None, init=False, repr=False)

    # -- SDK -----------------------------------------------------------------------------

    def client(self, api_key: str | None = None, **kwargs: Any) -> stripe.StripeClient:
        """A ``stripe.StripeClient`` aimed at this server (``max_network_retries=0`` unless
        given). Its HTTP sessions are closed when the server stops."""
        import stripe

        kwargs.setdefault("max_network_retries", 0)
        kwargs.setdefault("http_client", stripe.RequestsClient())
        client = stripe.StripeClient(
            api_key or self.secret_key, base_addresses={"api": self.api_base}, **kwargs
        )
        self._clients.append(client)
        return client

    def v1(self, method: str, path: str, **params: Any) -> JSON:
        """One authenticated call through the SDK's ``raw_request``; the JSON body as plain
        dicts. Raises the SDK's exceptions (``stripe.InvalidRequestError`` ...)."""
        if self._sdk is None:
            self._sdk = self.client()
        response = self._sdk.raw_request(method.lower(), path, **params)
        data: JSON = json.loads(response.body)
        return data

    def account(self) -> JSON:
        return self.v1("get", "/v1/account")

    def create_location(
        self,
        display_name: str,
        address: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> JSON:
        params: JSON = {"display_name": display_name, "address": dict(address), **fields}
        if metadata is not None:
            params["metadata"] = dict(metadata)
        return self.v1("post", "/v1/terminal/locations", **params)

    def update_location(self, location_id: str, **fields: Any) -> JSON:
        """``metadata={"k": ""}`` deletes key ``k``, like Stripe."""
        return self.v1("post", f"/v1/terminal/locations/{location_id}", **fields)

    def delete_location(self, location_id: str) -> JSON:
        return self.v1("delete", f"/v1/terminal/locations/{location_id}")

    def locations(self) -> list[JSON]:
        """Every location, newest first."""
        return self._all("/v1/terminal/locations")

    def create_customer(self, **fields: Any) -> JSON:
        return self.v1("post", "/v1/customers", **fields)

    def update_customer(self, customer_id: str, **fields: Any) -> JSON:
        return self.v1("post", f"/v1/customers/{customer_id}", **fields)

    def delete_customer(self, customer_id: str) -> JSON:
        return self.v1("delete", f"/v1/customers/{customer_id}")

    def create_invoice(self, customer: str, **fields: Any) -> JSON:
        """``POST /v1/invoices``; besides Stripe's fields takes ``amount_due`` and ``status``
        (``draft`` by default; ``open``/``paid``/``void``/``uncollectible``)."""
        return self.v1("post", "/v1/invoices", customer=customer, **fields)

    def pay_invoice(self, invoice_id: str) -> JSON:
        return self.v1("post", f"/v1/invoices/{invoice_id}/pay")

    def events(self, **filters: Any) -> list[JSON]:
        """Every event matching ``filters`` (``type=``, ``types=[...]``, ``created={...}``),
        newest first."""
        return self._all("/v1/events", **filters)

    def _all(self, path: str, **params: Any) -> list[JSON]:
        out: list[JSON] = []
        while True:
            page = self.v1("get", path, limit=100, **params)
            out.extend(page["data"])
            if not page["has_more"]:
                return out
            params["starting_after"] = page["data"][-1]["id"]

    # -- control endpoints ---------------------------------------------------------------

    def fault(
        self,
        path: str,
        *,
        status: int | None = None,
        count: int | None = 1,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        method: str | None = None,
        body: Any = None,
        disconnect: bool = False,
    ) -> JSON:
        """Make the next ``count`` requests whose path starts with ``path`` (and whose method
        is ``method``, any when ``None``) fail with ``status`` after ``delay`` seconds.

        ``status=None`` with a ``delay``: slow but successful. ``count=None``: until
        :meth:`clear_faults`. ``body``: the answer instead of Stripe's error JSON (a string is
        sent as is). ``disconnect=True``: close the connection without answering.
        Faults apply before authentication; the first matching one in queue order wins."""
        payload = {
            "path": path,
            "method": method,
            "status": status,
            "count": count,
            "headers": dict(headers or {}),
            "delay": delay,
            "body": body,
            "disconnect": disconnect,
        }
        result: JSON = self.control("POST", "/_fake/faults", payload)
        return result

    def faults(self) -> list[JSON]:
        """Faults still queued (with their remaining ``count``)."""
        result: list[JSON] = self.control("GET", "/_fake/faults")
        return result

    def clear_faults(self) -> None:
        self.control("DELETE", "/_fake/faults")

    def requests(self) -> list[JSON]:
        """Every /v1 request so far, oldest first: ``{id, method, path, query, body, status,
        at}`` (``query``/``body`` parsed like the server does; ``status`` 0 = disconnected)."""
        result: list[JSON] = self.control("GET", "/_fake/requests")
        return result

    def clear_requests(self) -> None:
        self.control("DELETE", "/_fake/requests")

    def revoke(self, key: str | None = None) -> None:
        """From now on ``key`` (default: :attr:`secret_key`) gets 401."""
        self.control("POST", "/_fake/revoke", {"key": key or self.secret_key})

    def set_account(self, **fields: Any) -> JSON:
        """Replace top-level fields of ``GET /v1/account`` (e.g. ``default_currency="eur"``)."""
        result: JSON = self.control("POST", "/_fake/account", fields)
        return result

    def seed_invoice(self, customer: str, **fields: Any) -> JSON:
        """An invoice made behind the API's back (``POST /_fake/invoices``): like
        :meth:`create_invoice`, plus ``created`` (unix seconds). Emits its events."""
        result: JSON = self.control("POST", "/_fake/invoices", {"customer": customer, **fields})
        return result

    def set_permissions(self, key: str, allow: list[str]) -> None:
        """From now on ``key`` may do only ``allow`` (``["customers:read", ...]``): a
        restricted key. Anything else answers 403 as Stripe does."""
        self.control("POST", "/_fake/permissions", {"key": key, "allow": allow})

    def webhook_endpoints(self) -> list[JSON]:
        """Every webhook endpoint, with its signing secret (which Stripe shows only once)."""
        result: list[JSON] = self.control("GET", "/_fake/webhook_endpoints")
        return result

    def set_endpoint_status(self, endpoint_id: str, status: str = "disabled") -> JSON:
        """Stripe disabling an endpoint (after failed deliveries), or enabling it again."""
        result: JSON = self.control(
            "POST", "/_fake/webhook_endpoints", {"id": endpoint_id, "status": status}
        )
        return result

    def deliveries(self) -> list[JSON]:
        """Events sent to endpoints so far: ``{"url", "event", "status"}`` (0: unreachable)."""
        result: list[JSON] = self.control("GET", "/_fake/deliveries")
        return result

    def control(self, method: str, path: str, payload: Any = None, timeout: float = 10.0) -> Any:
        """Raw JSON call to a ``/_fake/...`` endpoint."""
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.api_base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            raise FakeStripeError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc

    # -- process -------------------------------------------------------------------------

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        self.stderr_file.flush()
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def is_running(self) -> bool:
        return self.process.poll() is None

    def close_clients(self) -> None:
        for client in self._clients:
            http_client = getattr(getattr(client, "_requestor", None), "_client", None)
            close = getattr(http_client, "close", None)
            if callable(close):
                close()
        self._clients.clear()
        self._sdk = None


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


@contextlib.contextmanager
def run_fake_stripe(
    customers: int = 0,
    invoices: int = 0,
    locations: int = 0,
    currency: str = "usd",
    country: str = "US",
    *,
    api_version: str = DEFAULT_API_VERSION,
    startup_timeout: float = 20.0,
    stop_grace: float = 5.0,
    verbose: bool = False,
) -> Iterator[FakeStripe]:
    """Start a fake Stripe subprocess on ``127.0.0.1`` (free port), stop it on exit.

    Seeds ``customers`` (``cus_000001`` oldest ... newest), ``invoices`` (round robin over
    the customers, mixed statuses) and ``locations``; seeded objects emit no events.
    ``verbose=True`` writes an access log to the server's stderr (:meth:`FakeStripe.stderr`).
    """
    cmd = [
        sys.executable,
        "-m",
        _MODULE,
        "--customers",
        str(customers),
        "--invoices",
        str(invoices),
        "--locations",
        str(locations),
        "--currency",
        currency,
        "--country",
        country,
        "--api-version",
        api_version,
        "--parent-pid",
        str(os.getpid()),
    ]
    if verbose:
        cmd.append("--verbose")
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(
            cmd,
            cwd=_PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
        )
        assert process.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()

        def pump(stream: IO[bytes]) -> None:  # keeps the pipe drained until EOF
            for line in iter(stream.readline, b""):
                lines.put(line)
            lines.put(b"")

        reader = threading.Thread(target=pump, args=(process.stdout,), daemon=True)
        reader.start()
        fake: FakeStripe | None = None
        try:

            def failed(why: str) -> NoReturn:
                stderr_file.seek(0)
                log = stderr_file.read().decode(errors="replace")
                raise FakeStripeError(f"fake stripe {why}; its stderr:\n{log}")

            try:
                line = lines.get(timeout=startup_timeout).decode().strip()
            except queue.Empty:
                failed(f"did not print READY within {startup_timeout}s")
            if not line.startswith("READY http://"):
                if not line:  # stdout closed: it is exiting
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=stop_grace)
                failed(f"did not start (exit code {process.poll()}, stdout {line!r})")
            fake = FakeStripe(
                api_base=line.split(" ", 1)[1],
                secret_key=f"sk_test_fake_{secrets.token_hex(8)}",
                process=process,
                stderr_file=stderr_file,
            )
            yield fake
        finally:
            if fake is not None:
                fake.close_clients()
            _stop(process, stop_grace)
            reader.join(timeout=stop_grace)
            process.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
