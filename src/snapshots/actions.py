"""Actions: what a flow does with the fields its mapping produced.

Each action names the record kind it writes and the target fields it accepts, so a flows file
naming an unknown field is refused when it loads, not when an event arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshots import connections
from snapshots.outbound import delivery
from snapshots.records import apply, batch, kinds, ordering, reads, timeline
from snapshots.store.db import Tx


@dataclass(frozen=True)
class Invocation:
    """One run of an action: the event that triggered it, its flow and the flow's options."""

    connection_id: str
    event: dict[str, Any]
    test: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    flow: str = ""
    step: int = 0  # the step of a flow with steps (0 for a flow with one action)

    def key(self, state: int = 0) -> ordering.Key:
        """The ordering key of what this event writes, in state rank `state`."""
        return ordering.Key.of_event(self.event, state)


Perform = Callable[[Tx, Invocation, dict[str, Any]], str]
# The whole-record write an action makes, for a worker applying many events at once (the same
# write `run` makes alone; see `records.batch`).
Plan = Callable[[Invocation, dict[str, Any]], batch.Upsert]
# Checks a flow's options for an action; returns what is wrong, or None.
CheckOptions = Callable[[dict[str, Any]], str | None]
SCOPES = {
    "contact": "contacts.write",
    "invoice": "invoices.write",
    "location": "saas/location.write",
    "message": "workflows.write",
}


def _no_check(options: dict[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class Action:
    name: str
    record: str  # the kind of record written
    targets: frozenset[str]
    run: Perform
    description: str
    options: tuple[str, ...] = ()
    check: CheckOptions = _no_check
    required: tuple[str, ...] = ()  # targets (or options) at least one of which must be given
    # Other records this action can write, chosen by the `record` option (set_fields).
    variants: tuple[Action, ...] = ()
    any_target: bool = False  # its fields are free-form (a message's data)
    upsert: Plan | None = None  # whole-record writers only

    def resolve(self, options: dict[str, Any]) -> Action:
        """The action for these options: a variant when `record` names another record."""
        record = options.get("record", self.record)
        for variant in self.variants:
            if variant.record == record:
                return variant
        return self

    @property
    def nested(self) -> frozenset[str]:
        """Targets a flow may write into by path (`metadata.tier`)."""
        return self.targets & kinds.NESTED

    @property
    def scope(self) -> str:
        """The API scope that may write what this action writes."""
        return SCOPES[self.record]

    def accepts(self, target: str) -> bool:
        if self.any_target:
            return all(target.split("."))
        head, dot, rest = target.partition(".")
        if not dot:
            return target in self.targets
        return head in self.nested and all(rest.split("."))


def _upsert_contact(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    match_on = tuple(call.options.get("match_on", ("stripe_customer_id", "email")))
    return apply.upsert_contact(
        tx,
        connection_id=call.connection_id,
        fields=fields,
        key=call.key(),
        match_on=match_on,
        test=call.test,
    )


def _archive_contact(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    return apply.upsert_contact(
        tx,
        connection_id=call.connection_id,
        fields=fields,
        key=call.key(ordering.ARCHIVED),
        archived=True,
        test=call.test,
    )


def _log_invoice(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    return apply.upsert_invoice(
        tx,
        connection_id=call.connection_id,
        fields=fields,
        key=call.key(ordering.invoice_state(fields.get("status"))),
        test=call.test,
    )


def _archive_invoice(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    return apply.upsert_invoice(
        tx,
        connection_id=call.connection_id,
        fields=fields,
        key=call.key(ordering.INVOICE_DELETED),
        archived=True,
        test=call.test,
    )


def _upsert_location(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    if fields.get("currency") is None:  # unless the mapping says otherwise: the account's
        fields = fields | {"currency": connections.default_currency(tx, call.connection_id)}
    return apply.upsert_location(
        tx, connection_id=call.connection_id, fields=fields, key=call.key(), test=call.test
    )


def _archive_location(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    return apply.upsert_location(
        tx,
        connection_id=call.connection_id,
        fields=fields,
        key=call.key(ordering.ARCHIVED),
        archived=True,
        test=call.test,
    )


def _planned(kind: kinds.Kind[Any], state: Callable[[dict[str, Any]], int], **how: Any) -> Plan:
    def plan(call: Invocation, fields: dict[str, Any]) -> batch.Upsert:
        match_on = tuple(call.options.get("match_on", batch.MATCH_ON))
        return batch.Upsert(
            kind,
            call.connection_id,
            fields,
            call.key(state(fields)),
            match_on=match_on,
            test=call.test,
            **how,
        )

    return plan


def _fixed(state: int) -> Callable[[dict[str, Any]], int]:
    return lambda fields: state


def _invoice_state(fields: dict[str, Any]) -> int:
    return ordering.invoice_state(fields.get("status"))


def _match(fields: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: fields.pop(key) for key in keys if key in fields}


def _tags(call: Invocation, fields: dict[str, Any]) -> list[str]:
    """The tags of `add_tag` / `remove_tag`: its `tags` option and its mapped `tags` field."""
    found: list[str] = list(call.options.get("tags") or [])
    mapped = fields.pop("tags", None)
    if isinstance(mapped, str):
        mapped = [mapped]
    if isinstance(mapped, list):
        found += [str(tag) for tag in mapped if tag not in (None, "")]
    return [tag.strip() for tag in dict.fromkeys(found) if tag.strip()]


def _changer(present: bool) -> Perform:
    def run(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
        fields = dict(fields)
        match = _match(fields, "stripe_customer_id", "email")
        return apply.change_tags(
            tx,
            connection_id=call.connection_id,
            match=match,
            tags=_tags(call, fields),
            present=present,
            key=call.key(),
            test=call.test,
        )

    return run


def _set_fields(record: str) -> Perform:
    def run(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
        keys = ("stripe_customer_id", "email") if record == "contact" else ("stripe_location_id",)
        match = {key: fields.get(key) for key in keys if fields.get(key) is not None}
        return apply.set_fields(
            tx,
            kinds.KINDS[record],
            connection_id=call.connection_id,
            match=match,
            fields=fields,
            key=call.key(),
            test=call.test,
        )

    return run


def _log_event(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    fields = dict(fields)
    match = _match(fields, "stripe_customer_id", "email")
    title = fields.pop("title", None)
    return timeline.log(
        tx,
        connection_id=call.connection_id,
        match=match,
        event=call.event,
        flow=call.flow,
        kind=str(call.options.get("type") or call.event["type"]),
        title=None if title is None else str(title),
        data=fields,
        test=call.test,
    )


def nest(fields: dict[str, Any]) -> dict[str, Any]:
    """Mapped fields as a message's data: `customer.email` becomes {"customer": {"email"}}."""
    data: dict[str, Any] = {}
    for target, value in fields.items():
        *path, last = target.split(".")
        place = data
        for part in path:
            inner = place.get(part)
            if not isinstance(inner, dict):
                inner = place[part] = {}
            place = inner
        place[last] = value
    return data


def default_message(tx: Tx | None, call: Invocation) -> dict[str, Any]:
    """A message's data when its flow maps no field: the event's id and type, and the record
    the event is about as the API shows it (the Stripe object when there is none)."""
    event = call.event
    data: dict[str, Any] = {"event": {"id": event["id"], "type": event["type"]}}
    found = None if tx is None else reads.subject(tx, call.connection_id, event)
    if found is not None:
        data[found[0]] = found[1].model_dump(mode="json")
    else:
        data["object"] = event["data"]["object"]
    return data


def _send_webhook(tx: Tx, call: Invocation, fields: dict[str, Any]) -> str:
    return delivery.enqueue(
        tx,
        endpoint=str(call.options["endpoint"]),
        connection_id=call.connection_id,
        event_id=str(call.event["id"]),
        flow=call.flow,
        step=call.step,
        message_type=str(call.options.get("type") or call.event["type"]),
        data=nest(fields) if fields else default_message(tx, call),
        test=call.test,
    )


def _check_send_webhook(options: dict[str, Any]) -> str | None:
    endpoint = options.get("endpoint")
    if not (isinstance(endpoint, str) and endpoint.strip()):
        return "send_webhook needs an `endpoint` option: the name of a webhook endpoint"
    kind = options.get("type")
    if kind is not None and not (isinstance(kind, str) and 0 < len(kind) <= 255):
        return "type must be a string (the message's type, at most 255 characters)"
    return None


def _check_match_on(options: dict[str, Any]) -> str | None:
    match_on = options.get("match_on")
    if match_on is None:
        return None
    allowed = ("stripe_customer_id", "email")
    if (
        not isinstance(match_on, list)
        or not match_on
        or not all(isinstance(name, str) for name in match_on)
        or not set(match_on) <= set(allowed)
    ):
        return f"match_on must be a list of {' and/or '.join(allowed)}"
    return None


def _check_tags(options: dict[str, Any]) -> str | None:
    tags = options.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        return "tags must be a list of non-empty strings"
    return None


def _check_record(options: dict[str, Any]) -> str | None:
    if options.get("record", "contact") not in ("contact", "location"):
        return "record must be contact or location"
    return None


def _check_type(options: dict[str, Any]) -> str | None:
    kind = options.get("type")
    if kind is not None and not (isinstance(kind, str) and 0 < len(kind) <= 255):
        return "type must be a string (the activity's type, at most 255 characters)"
    return None


INVOICE_TARGETS = kinds.INVOICE_FIELDS | kinds.INVOICE_CONTACT_FIELDS
TAG_TARGETS = frozenset({"stripe_customer_id", "email", "tags"})
# An activity keeps `title` and any other mapped field as its data.
ACTIVITY_TARGETS = frozenset(
    {
        "stripe_customer_id",
        "email",
        "title",
        "summary",
        "amount",
        "currency",
        "status",
        "url",
        "data",
    }
)

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "upsert_contact",
            "contact",
            kinds.CONTACT_FIELDS,
            _upsert_contact,
            "Create or update a contact (match on Stripe customer id, then email).",
            options=("match_on",),
            check=_check_match_on,
            upsert=_planned(kinds.CONTACT, _fixed(0)),
        ),
        Action(
            "archive_contact",
            "contact",
            kinds.CONTACT_FIELDS,
            _archive_contact,
            "Archive the contact of a deleted Stripe customer.",
            upsert=_planned(kinds.CONTACT, _fixed(ordering.ARCHIVED), archived=True),
        ),
        Action(
            "log_invoice",
            "invoice",
            INVOICE_TARGETS,
            _log_invoice,
            "Create or update an invoice and link it to its customer's contact.",
            upsert=_planned(kinds.INVOICE, _invoice_state),
        ),
        Action(
            "update_payment_status",
            "invoice",
            INVOICE_TARGETS,
            _log_invoice,
            "Update an invoice's status and payment status (logging it if new).",
            upsert=_planned(kinds.INVOICE, _invoice_state),
        ),
        Action(
            "archive_invoice",
            "invoice",
            INVOICE_TARGETS,
            _archive_invoice,
            "Archive a deleted (draft) invoice.",
            upsert=_planned(kinds.INVOICE, _fixed(ordering.INVOICE_DELETED), archived=True),
        ),
        Action(
            "upsert_location",
            "location",
            kinds.LOCATION_FIELDS,
            _upsert_location,
            "Create or update a location.",
            upsert=_planned(kinds.LOCATION, _fixed(0), default_currency=True),
        ),
        Action(
            "archive_location",
            "location",
            kinds.LOCATION_FIELDS,
            _archive_location,
            "Archive a location that vanished from Stripe.",
            upsert=_planned(kinds.LOCATION, _fixed(ordering.ARCHIVED), archived=True),
        ),
        Action(
            "add_tag",
            "contact",
            TAG_TARGETS,
            _changer(True),
            "Add tags (the `tags` option, or a mapped `tags` field) to the contact of a Stripe "
            "customer (`stripe_customer_id`, or `email`).",
            options=("tags",),
            check=_check_tags,
            required=("tags",),
        ),
        Action(
            "remove_tag",
            "contact",
            TAG_TARGETS,
            _changer(False),
            "Remove tags (the `tags` option, or a mapped `tags` field) from a contact.",
            options=("tags",),
            check=_check_tags,
            required=("tags",),
        ),
        Action(
            "set_fields",
            "contact",
            kinds.CONTACT_FIELDS,
            _set_fields("contact"),
            "Set some fields of a contact (found by `stripe_customer_id`, then `email`), or of a "
            "location with `record: location` (found by `stripe_location_id`); each field keeps "
            "the newest event that set it.",
            options=("record",),
            check=_check_record,
            variants=(
                Action(
                    "set_fields",
                    "location",
                    kinds.LOCATION_FIELDS,
                    _set_fields("location"),
                    "Set some fields of a location (found by `stripe_location_id`).",
                    options=("record",),
                    check=_check_record,
                ),
            ),
        ),
        Action(
            "log_event",
            "contact",
            ACTIVITY_TARGETS,
            _log_event,
            "Keep the event on a contact's timeline (GET /v1/customers/{id}/activities): a "
            "`title` and any other mapped field as its data; `type` option (default: the "
            "event type).",
            options=("type",),
            check=_check_type,
        ),
        Action(
            "send_webhook",
            "message",
            frozenset(),
            _send_webhook,
            "Send a signed message (Standard Webhooks) to a webhook endpoint (`endpoint` option; "
            "`type` option, default: the event type). Its mapped fields make the message's "
            "data (`a.b` nests); with none, the data is the event's id and type and the record "
            "the event is about. Written with the flow's other writes, sent by a worker, "
            "retried; `snapshots deliveries list` shows every attempt.",
            options=("endpoint", "type"),
            check=_check_send_webhook,
            any_target=True,
        ),
    )
}
