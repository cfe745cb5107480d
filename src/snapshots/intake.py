"""Intake: a webhook becomes an inbox item, or a clear refusal.

Order of checks: the signature first, over the raw bytes (never trust an unsigned body), then
the shape of the event. The raw bytes are what is stored. Nothing here applies an event: the
answer goes back as soon as the item is committed, and a worker does the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pydantic import BaseModel

from snapshots import errors, ids, inbox, nesting
from snapshots.store import db as store_db
from snapshots.store.db import Database, LockTaker, Tx

log = logging.getLogger("snapshots.intake")
API_VERSION = re.compile(r"[A-Za-z0-9_.\-]{1,100}")  # 2026-07-29.dahlia
EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


class Receipt(BaseModel):
    """What the webhook endpoint answers for a stored (or duplicate) event."""

    received: bool = True
    item_id: int
    event_id: str
    type: str
    status: str
    duplicate: bool


def _signature_error(message: str) -> errors.BadRequest:
    if message.startswith("Timestamp outside the tolerance zone"):
        return errors.BadRequest(
            "the Stripe-Signature timestamp is outside the tolerance window (replayed or the clock is off)",
            code="timestamp_outside_tolerance",
        )
    if message.startswith(("Unable to extract", "No signatures found with expected scheme")):
        return errors.BadRequest(
            "the Stripe-Signature header is malformed: expected t=<unix time>,v1=<hex signature>",
            code="malformed_signature",
        )
    return errors.BadRequest(
        "no v1 signature in Stripe-Signature matches any signing secret of this connection",
        code="signature_mismatch",
    )


def verify(
    payload: bytes,
    header: str | None,
    secrets: list[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> None:
    """Raise BadRequest unless one `v1` signature matches one of `secrets` (rotation) and the
    signed timestamp is within `tolerance` seconds of now, before or after."""
    if not header:
        raise errors.BadRequest("the Stripe-Signature header is missing", code="missing_signature")
    if not header.isascii():
        # The SDK's constant-time compare refuses non-ASCII strings; no real signature has any.
        raise _signature_error("Unable to extract timestamp and signatures from header")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BadRequest("the body is not UTF-8 JSON", code="invalid_body") from exc
    signed = _signed(header)
    failures: list[str] = []
    for secret in secrets:
        failure = _refusal(payload, signed, secret, tolerance)
        if failure is not None:
            failures.append(failure)
            continue
        # The SDK refuses only old timestamps; one far in the future is a replay-in-waiting.
        timestamp = _timestamp(header)
        if timestamp is not None and timestamp > (time.time() if now is None else now) + tolerance:
            raise errors.BadRequest(
                "the Stripe-Signature timestamp is in the future beyond the tolerance window "
                "(forged, or the clock is off)",
                code="timestamp_outside_tolerance",
            )
        return
    # A stale timestamp is only reported after a signature matched: say that, it is the cause.
    stale = [f for f in failures if f.startswith("Timestamp outside")]
    raise _signature_error((stale or failures or [""])[0])


def _signed(header: str) -> tuple[int, list[str]] | None:
    """The timestamp and `v1` signatures of a Stripe-Signature header, read as Stripe's SDK
    reads them (`stripe.WebhookSignature`); None where it finds none."""
    try:
        items = [item.split("=", 2) for item in header.split(",")]
        stamps = [item[1] for item in items if item[0] == "t"]  # each must have its `=`
        signatures = [item[1] for item in items if item[0] == "v1"]
        return int(stamps[0]), signatures
    except (ValueError, IndexError):
        return None


def _refusal(
    payload: bytes, signed: tuple[int, list[str]] | None, secret: str, tolerance: int
) -> str | None:
    """Why Stripe's SDK (`stripe.WebhookSignature.verify_header`) would refuse the delivery
    for `secret`, in its words, or None: its steps, over the raw bytes (the SDK decodes the
    body and encodes it again, a copy each way of every delivery)."""
    if secret.strip(" \t\r\n\f\v") == "":
        return "No webhook secret value was provided. It should start with `whsec_`"
    if signed is None:
        return "Unable to extract timestamp and signatures from header"
    timestamp, signatures = signed
    if not signatures:
        return "No signatures found with expected scheme v1"
    message = b"%d.%s" % (timestamp, payload)
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        return "No signatures found matching the expected signature for payload"
    if tolerance and timestamp < time.time() - tolerance:
        return f"Timestamp outside the tolerance zone ({timestamp})"
    return None


def _timestamp(header: str) -> int | None:
    """The `t=` of a Stripe-Signature header (it matched a signature: it is well formed)."""
    for part in header.split(","):
        name, _, value = part.partition("=")
        if name.strip() == "t" and value.strip().isdigit():
            return int(value.strip())
    return None


def parse_event(payload: bytes) -> dict[str, Any]:
    """The event envelope, checked enough to store and route it."""
    try:
        event = store_db.json_loads(payload)  # orjson; the standard library for what it refuses
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise errors.BadRequest("the body is not valid JSON", code="invalid_json") from exc
    if nesting.may_be_too_deep(payload) and nesting.too_deep(event):
        raise errors.BadRequest(
            f"the body nests deeper than {nesting.MAX_DEPTH} levels", code="too_deep"
        )
    if not isinstance(event, dict) or event.get("object") != "event":
        raise errors.BadRequest(
            'the body is not a Stripe event (object != "event")', code="not_an_event"
        )
    problems = []
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    if not isinstance(event_id, str) or not ids.plausible(event_id):
        problems.append("id")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        problems.append("type")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**62:
        problems.append("created")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        problems.append("data.object")
    if not isinstance(event.get("livemode", False), bool):
        problems.append("livemode")
    api_version = event.get("api_version")
    if api_version is not None and not (
        isinstance(api_version, str) and API_VERSION.fullmatch(api_version)
    ):
        problems.append("api_version")
    if problems:
        raise errors.BadRequest(
            f"the Stripe event is missing or has a bad {', '.join(problems)}", code="not_an_event"
        )
    return event


def store(
    db: Database,
    registry: inbox.Wants,
    *,
    connection_id: str,
    event: dict[str, Any],
    payload: bytes,
    source: str = "webhook",
) -> Receipt:
    """Commit one raw event to the inbox (once per connection and event id)."""
    arrival = _arrival(registry, connection_id, event, payload, source)
    with db.write() as tx:
        (stored,) = inbox.enqueue_many(tx, [arrival])
    return _receipt(arrival, stored)


def _arrival(
    registry: inbox.Wants, connection_id: str, event: dict[str, Any], payload: bytes, source: str
) -> inbox.Arrival:
    """An event to store, judged wanted or not by the flows `registry` holds (the version is
    read first: a version loaded meanwhile can only keep an unwanted event pending)."""
    judged_by = registry.version
    wanted = registry.wants(event["type"])
    return inbox.Arrival(connection_id, event, payload, source, wanted, judged_by)


def _receipt(arrival: inbox.Arrival, stored: inbox.Stored) -> Receipt:
    event = arrival.event
    return Receipt(
        item_id=stored.item_id,
        event_id=event["id"],
        type=event["type"],
        status=stored.status,
        duplicate=stored.duplicate,
    )


_Waiting = tuple[inbox.Arrival, asyncio.Future[Receipt]]


class GroupCommit:
    """Stores the events of concurrent webhook requests in shared transactions.

    Request handlers `await submit(...)`; everything waiting (up to `MAX_BATCH`) is stored
    with one statement and one commit, then every request of the batch is answered. A request
    still gets its answer only after its event is committed, but a commit (the expensive part,
    and on SQLite the part that holds the write lock) is shared by every request that arrived
    meanwhile. A failed batch fails each of its requests, which answer 503 so Stripe retries.

    On SQLite the batch is written from the event loop itself, which never waits for the write
    lock: when another process (a worker) holds it, the loop tries again `LOCK_POLL` seconds
    later and serves other requests meanwhile. A thread would cost more than the write, since
    it must win the GIL from a busy loop. On PostgreSQL, whose round trips would stall the
    loop, one writer thread does the writing, on a connection of its own in autocommit: the
    batch is one statement (`inbox.enqueue_many`), so one round trip stores it, commits it
    (durably: `synchronous_commit` stays on) and wakes the workers. Every round trip counts
    twice here, since the thread must also win the GIL back from the busy loop after each.
    """

    MAX_BATCH = 500
    # Seconds between the loop's tries for SQLite's write lock. Not `store_db.LOCK_POLL`: uvloop
    # counts timers in whole milliseconds and runs a shorter delay at once, so 0.3 ms made the
    # loop spin on the lock, burning a core that the worker holding it needed.
    LOCK_POLL = 0.001
    LOCK_WAIT = store_db.BUSY_TIMEOUT / 1000  # seconds a batch may wait before its requests get 503

    def __init__(
        self, db: Database, registry: inbox.Wants, *, arrived: Callable[[], object] | None = None
    ) -> None:
        self._db = db
        self._arrived = arrived  # told after a commit that stored new pending items (SQLite)
        self._registry = registry  # (revisions.Live follows each new version of the flows)
        self._inline = db.dialect == "sqlite"
        self._lock_taker: LockTaker | None = None
        self._own: Tx | None = None  # the writer thread's (PostgreSQL)
        self._pending: list[_Waiting] = []
        self._flushing = False
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(
        self, *, connection_id: str, event: dict[str, Any], payload: bytes, source: str = "webhook"
    ) -> Receipt:
        arrival = _arrival(self._registry, connection_id, event, payload, source)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        waiting = (arrival, future)
        if self._inline:
            self._pending.append(waiting)
            if not self._flushing:
                self._flushing = True
                loop.call_soon(self._flush, loop, time.monotonic())
        else:
            self._ensure_started()
            self._queue.put(waiting)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop, since: float) -> None:
        batch = self._pending[: self.MAX_BATCH]
        try:
            outcomes = self._store(batch, wait=False)
        except errors.Busy:
            if time.monotonic() - since < self.LOCK_WAIT:
                loop.call_later(self.LOCK_POLL, self._flush, loop, since)
                return
            outcomes = [errors.Unavailable("the database stayed locked; retry later")] * len(batch)
        del self._pending[: len(batch)]
        if self._arrived is not None and any(
            isinstance(o, Receipt) and o.status == "pending" and not o.duplicate for o in outcomes
        ):
            self._arrived()
        _settle(list(zip((future for _, future in batch), outcomes, strict=True)))
        if self._pending:
            loop.call_soon(self._flush, loop, time.monotonic())
        else:
            self._flushing = False

    def _transaction(self, *, wait: bool) -> AbstractContextManager[Tx]:
        if wait:
            return self._autocommit()
        if self._lock_taker is None:
            self._lock_taker = LockTaker(self._db)
        return self._lock_taker.transaction()

    @contextmanager
    def _autocommit(self) -> Iterator[Tx]:
        """The writer thread's connection, kept from batch to batch (no checkout, no ping),
        each statement its own transaction; after a failure the next batch takes a new one."""
        if self._own is None:
            self._own = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            with self._own.begin():
                yield self._own
        except BaseException:
            self._own.close()
            self._own = None
            raise

    def _store(self, batch: list[_Waiting], *, wait: bool) -> list[Receipt | BaseException]:
        """Commit a batch; one outcome per request. Without `wait` (SQLite, on the event loop)
        raises errors.Busy when the write lock is taken."""
        try:
            with self._transaction(wait=wait) as tx:
                stored = inbox.enqueue_many(tx, [arrival for arrival, _ in batch])
        except errors.Busy:
            raise
        except Exception as exc:
            log.exception("storing %d webhook events failed", len(batch))
            error = errors.Unavailable("the event could not be stored; retry later")
            error.__cause__ = exc
            return [error] * len(batch)
        return [
            _receipt(arrival, result) for (arrival, _), result in zip(batch, stored, strict=True)
        ]

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        if self._lock_taker is not None:
            self._lock_taker.close()
            self._lock_taker = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        if self._own is not None:
            self._own.close()
            self._own = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(waiting)
            outcomes = self._store(batch, wait=True)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Receipt], Any]]] = {}
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                by_loop.setdefault(future.get_loop(), []).append((future, outcome))
            for loop, answers in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, answers)
                except RuntimeError:  # that loop has closed: nobody is waiting any more
                    pass


def _settle(answers: list[tuple[asyncio.Future[Receipt], Any]]) -> None:
    for future, outcome in answers:
        if future.done():  # the request went away (client disconnected)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
