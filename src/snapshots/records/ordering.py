"""The ordering rule: which write about a record wins, whatever order they arrive in.

Every record remembers the ordering key of the newest event applied to it,
`Key(authority, created, rank, event_id)`, compared as a tuple. An event applies only when its
key is at least the stored one, so an older event never overwrites newer state.

- `authority`: `OWN` for an event about the record's own Stripe object, `BORROWED` for fields
  taken from another object (a contact made from an invoice's customer fields), so any event
  about the customer itself beats every invoice.
- `created`: the event's `created` second (Stripe's clock).
- `rank`: settles a same second. The object's state first (an invoice never goes from `paid`
  back to `open`), then the event type (`invoice.paid` after `invoice.updated`): state rank *
  `STATE_STEP` + type rank.
- `event_id`: makes the order total, so any permutation of the same events ends in the same
  records.

Partial writers (`set_fields`, tags, API edits) stamp each field, JSON key and tag they set with
their key (`field_versions`), so they settle field by field; `take` does that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from snapshots import ids

OWN = 1  # the event is about the record's own Stripe object
BORROWED = 0  # the fields come from another object (a contact from an invoice)

STATE_STEP = 100  # a state rank outweighs every event type rank
ARCHIVED = 1  # the state of a deleted customer or vanished location: after every live state
INVOICE_STATES = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
INVOICE_DELETED = 9  # a deleted (draft) invoice: after every other state

SNAPSHOT = -1  # a backfill's `*.synced` object: it loses a same-second tie with any real event
FIRST = 0  # an object's creation
OTHER = 50  # an event type without a rank of its own
LAST = 99  # a deletion: the last word of its second
TYPE_RANKS = {
    # A backfill's snapshot is read from a list that may lag; a later second wins as usual.
    "customer.synced": SNAPSHOT,
    "invoice.synced": SNAPSHOT,
    "customer.created": FIRST,
    "customer.updated": 1,
    "customer.deleted": LAST,
    "invoice.created": FIRST,
    "invoice.updated": 1,
    "invoice.finalized": 2,
    "invoice.payment_failed": 3,
    "invoice.payment_succeeded": 4,
    "invoice.paid": 5,
    "invoice.marked_uncollectible": 6,
    "invoice.voided": 7,
    "invoice.deleted": LAST,
    "terminal.location.created": FIRST,
    "terminal.location.updated": 1,
    "terminal.location.deleted": LAST,
}


@dataclass(frozen=True, order=True)
class Key:
    authority: int  # OWN or BORROWED
    created: int  # unix seconds
    rank: int  # state rank * STATE_STEP + type rank
    event_id: str

    @classmethod
    def of_event(cls, event: dict[str, Any], state: int = 0) -> Key:
        """The key of an event about the record's own object, in state rank `state`."""
        rank = state * STATE_STEP + TYPE_RANKS.get(event["type"], OTHER)
        return cls(OWN, int(event["created"]), rank, event["id"])

    def borrowed(self) -> Key:
        """The key of fields this event carries about another object (an invoice's customer)."""
        return Key(BORROWED, self.created, 0, self.event_id)

    @property
    def stamp(self) -> list[Any]:
        """The key as stored in `field_versions` (JSON)."""
        return [self.authority, self.created, self.rank, self.event_id]

    def columns(self) -> dict[str, Any]:
        """The key as a record's `applied_*` columns."""
        return {
            "applied_authority": self.authority,
            "applied_created": self.created,
            "applied_rank": self.rank,
            "applied_event_id": self.event_id,
        }

    def beats(self, row: Any) -> bool:
        """Does a write with this key apply to `row` (at least its stored key; a record made
        without one, from an invoice or the API, takes any)?"""
        if row.applied_created is None:
            return True
        stored = Key(
            row.applied_authority, row.applied_created, row.applied_rank, row.applied_event_id
        )
        return self >= stored


def invoice_state(status: object) -> int:
    return INVOICE_STATES.get(str(status), 0)


def api_write(request_id: str) -> Key:
    """The key of an API write made now: `(OWN, now, 0, "api_<request id>")`. An event Stripe
    made later overwrites it, an older one does not; a same-second tie goes to the event (its
    rank is >= 0, and "evt_" sorts after "api_"), except a backfill's snapshot (rank -1)."""
    return Key(OWN, int(time.time()), 0, f"api_{request_id or ids.new('req_', 16)}")


def take(stamps: dict[str, Any], key: str, stamp: list[Any]) -> bool:
    """Stamp `key` (a field, `metadata.tier`, `tag:vip`) as written by `stamp`, unless a
    newer write holds it (then False, and nothing changes)."""
    if key in stamps and stamps[key] > stamp:
        return False
    stamps[key] = stamp
    return True
