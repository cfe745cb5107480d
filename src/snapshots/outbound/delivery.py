"""Deliveries: messages to endpoints, written by flows in their own transaction (an outbox),
sent by workers under a lease, signed with Standard Webhooks, retried on a schedule.

Statuses: `pending` -> `processing` (claimed under a lease) -> `succeeded` | `failed` (tried
again at `run_after`) | `dead` (the schedule ran out; `recover` sends it again). `held`: the
endpoint is disabled; nothing is dropped, `recover` queues it again. A worker killed mid-send
leaves its claim to run out, and the delivery goes out again with the same `webhook-id` (at
least once: receivers deduplicate on it).

Each attempt is kept: when, how long, the address connected to, the status code or the kind of
error (`timeout`, `connect`, `dns`, `blocked`, `tls`, `redirect`, `http`), and the first 8 KiB
of the answer. A 2xx within the timeout is a success; a redirect is not followed (a failure
that shows its `Location`); a 410 disables the endpoint at once; 429 and 503 wait for their
`Retry-After`. An endpoint with no success for 5 days and at least 10 failed attempts since is
disabled, with an audit entry.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from standardwebhooks import Webhook

from snapshots import audit, errors, ids, paging, times
from snapshots.outbound import endpoints, guard
from snapshots.settings import Settings
from snapshots.store import dialect, tables
from snapshots.store.db import Database, Tx
from snapshots.times import Timestamp
from snapshots.vault import Vault

log = logging.getLogger("snapshots.outbound")
D = tables.deliveries
A = tables.delivery_attempts
E = tables.webhook_endpoints
STATUSES = ("pending", "processing", "succeeded", "failed", "dead", "held")
MAX_BODY = 256 * 1024  # bytes in a message
GATHER = 0.005  # seconds a dispatcher waits for more outcomes to record with one that is in
RESPONSE_KEPT = 8 * 1024  # bytes of an answer kept with its attempt
RETRY_AFTER_CAP = 24 * 3600.0  # seconds a Retry-After may make a delivery wait at most
DISABLE_AFTER = 5 * 86400.0  # seconds without a success ...
DISABLE_FAILURES = 10  # ... and at least this many failed attempts: the endpoint is disabled
TEST_TYPE = "snapshots.test"
USER_AGENT = "Snapshots-Webhooks/1"


# -- the public models ---------------------------------------------------------------------


class Attempt(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    at: Timestamp
    duration: float = Field(description="Seconds from the request to the answer or the error")
    address: str | None = Field(description="The address connected to")
    status_code: int | None
    error_kind: str | None = Field(
        description="timeout, connect, dns, blocked, tls, redirect or http; null on success"
    )
    error: str | None
    response: str | None = Field(description="The first 8 KiB of the answer")


class Delivery(BaseModel):
    """A message to an endpoint, as every shell shows it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(description="Also the `webhook-id` header of every attempt")
    object: Literal["delivery"] = "delivery"
    endpoint_id: str
    endpoint: str = Field(description="The endpoint's name")
    connection_id: str
    event_id: str
    flow: str
    step: int
    type: str
    status: str
    attempts: int
    next_attempt_at: Timestamp | None
    last_error: str | None
    test: bool
    created_at: Timestamp
    updated_at: Timestamp
    succeeded_at: Timestamp | None


class DeliveryDetail(Delivery):
    body: str = Field(description="The message as sent, byte for byte")
    attempt_log: list[Attempt] = Field(description="Every attempt, oldest first")


SHOWN = [c for c in D.c if c.name != "body"]


def _model(row: Any) -> Delivery:
    waiting = row.status in ("pending", "failed")
    return Delivery.model_validate(
        {
            **row._mapping,
            "endpoint": row.endpoint_name,
            "next_attempt_at": row.run_after if waiting else None,
        }
    )


def _select(*columns: Any) -> sa.Select[Any]:
    return sa.select(*SHOWN, *columns, E.c.name.label("endpoint_name")).join(
        E, E.c.id == D.c.endpoint_id
    )


# -- writing messages (inside a flow's transaction) -----------------------------------------


def body(message_type: str, data: Any, now: float | None = None) -> bytes:
    """A message's body: compact JSON `{"type", "timestamp", "data"}`, at most 256 KiB."""
    moment = times.iso(time.time() if now is None else now)
    text = json.dumps(
        {"type": message_type, "timestamp": moment, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    ).encode()
    if len(text) > MAX_BODY:
        raise errors.DeadLetter(
            f"the message is {len(text):,} bytes, over {MAX_BODY // 1024} KiB",
            code="message_too_large",
        )
    return text


def enqueue(
    tx: Tx,
    *,
    endpoint: str,
    connection_id: str,
    event_id: str,
    flow: str,
    step: int,
    message_type: str,
    data: Any,
    test: bool = False,
) -> str:
    """Write a message for `endpoint` (its name or id) in the caller's transaction, once per
    (connection, event, flow, step): a replayed event makes no second one. Returns its id."""
    row = tx.execute(
        sa.select(E.c.id, E.c.status).where(sa.or_(E.c.name == endpoint, E.c.id == endpoint))
    ).first()
    if row is None:
        raise errors.DeadLetter(
            f"no webhook endpoint {endpoint!r} (create it with `snapshots endpoints create`, "
            "then replay the event)",
            code="unknown_endpoint",
        )
    now = time.time()
    new_id = ids.new("msg_", 20)
    values = {
        "id": new_id,
        "endpoint_id": row.id,
        "connection_id": connection_id,
        "event_id": event_id,
        "flow": flow,
        "step": step,
        "type": message_type,
        "body": body(message_type, data, now),
        "status": "held" if row.status == "disabled" else "pending",
        "attempts": 0,
        "run_after": now,
        "test": test,
        "created_at": now,
        "updated_at": now,
    }
    stmt = (
        dialect.insert(tx, D)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=[D.c.connection_id, D.c.event_id, D.c.flow, D.c.step]
        )
    )
    if tx.execute(stmt).rowcount == 1:
        return new_id
    key = (D.c.connection_id == connection_id, D.c.event_id == event_id)
    return str(
        tx.execute(sa.select(D.c.id).where(*key, D.c.flow == flow, D.c.step == step)).scalar_one()
    )


# -- the retry schedule ------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Seconds before each attempt (the first is now), with jitter as a fraction of each."""

    waits: tuple[float, ...]
    jitter: float = 0.0

    @classmethod
    def of(cls, settings: Settings) -> Schedule:
        text = settings.outbound_retry_schedule
        waits = tuple(
            times.parse_duration(part, zero=True, name="retry wait")
            for part in text.split(",")
            if part.strip()
        )
        if not waits:
            raise errors.ConfigError("SNAPSHOTS_OUTBOUND_RETRY_SCHEDULE lists no wait")
        return cls(waits, settings.outbound_retry_jitter)

    def after(self, attempts: int) -> float | None:
        """Seconds before the next attempt once `attempts` failed; None: give up."""
        if attempts >= len(self.waits):
            return None
        wait = self.waits[attempts]
        return max(0.0, wait * (1 + random.uniform(-self.jitter, self.jitter)))


# -- claiming --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: str
    endpoint_id: str
    url: str
    secrets: str  # the endpoint's stored (encrypted) secrets
    body: bytes
    attempts: int


def _due(status: str, now: Any, limit: Any) -> sa.Select[Any]:
    """Deliveries of one status due now, in the order they fall due (then made): a range of
    the (status, run_after) index read in order, which stops after `limit` rows however many
    wait behind them. (One OR over every status would read them all, then sort.)"""
    return (
        sa.select(D.c.seq, D.c.run_after)
        .where(D.c.status == status, D.c.run_after <= now)
        .order_by(D.c.run_after, D.c.seq)
        .limit(limit)
    )


def _expired(now: Any, limit: Any) -> sa.Select[Any]:
    """Claims whose worker died (their lease ran out)."""
    return (
        sa.select(D.c.seq, D.c.run_after)
        .where(D.c.status == "processing", D.c.lease_until < now)
        .order_by(D.c.seq)
        .limit(limit)
    )


def _picks(now: Any, limit: Any) -> tuple[sa.Select[Any], ...]:
    return (_due("pending", now, limit), _due("failed", now, limit), _expired(now, limit))


_CLAIMABLE = sa.select(sa.or_(*(pick.exists() for pick in _picks(sa.bindparam("now"), 1))))


def has_claimable(tx: Tx) -> bool:
    """Is anything due, of any endpoint? (One statement, made once.)"""
    return bool(tx.execute(_CLAIMABLE, {"now": time.time()}).scalar())


_ENABLED = sa.select(E.c.id, E.c.url, E.c.secrets).where(E.c.status == "enabled")


@functools.cache
def _claim_statement(postgresql: bool) -> sa.Update:
    """The claim's UPDATE ... RETURNING, made once (building a statement costs more than
    running it): the first `limit` of the three picks of enabled endpoints' deliveries."""
    now: sa.BindParameter[float] = sa.bindparam("now")
    limit: sa.BindParameter[int] = sa.bindparam("limit")
    parts = []
    for pick in _picks(now, limit):
        pick = pick.where(D.c.endpoint_id.in_(sa.bindparam("enabled", expanding=True)))
        if postgresql:
            pick = pick.with_for_update(skip_locked=True)
        found = pick.subquery()
        parts.append(sa.select(found.c.seq, found.c.run_after))
    every = sa.union_all(*parts).subquery()
    first = sa.select(every.c.seq).order_by(every.c.run_after, every.c.seq).limit(limit)
    return (
        D.update()
        .where(D.c.seq.in_(first.scalar_subquery()))
        .values(
            status="processing",
            locked_by=sa.bindparam("worker"),
            lease_until=sa.bindparam("until"),
            attempts=D.c.attempts + 1,
            updated_at=now,
        )
        .returning(D.c.seq, D.c.id, D.c.endpoint_id, D.c.body, D.c.attempts)
    )


def claim(tx: Tx, *, worker_id: str, limit: int, lease: float) -> list[Claimed]:
    """Take up to `limit` due deliveries of enabled endpoints for `lease` seconds, the
    earliest due first (on PostgreSQL with SKIP LOCKED: workers never wait for each other).
    Two statements whatever the number: the enabled endpoints, and one UPDATE ... RETURNING."""
    now = time.time()
    enabled = {row.id: row for row in tx.execute(_ENABLED)}
    if not enabled:
        return []
    rows = tx.execute(
        _claim_statement(dialect.is_postgresql(tx)),
        {
            "now": now,
            "limit": limit,
            "enabled": sorted(enabled),
            "worker": worker_id,
            "until": now + lease,
        },
    ).all()
    return [
        Claimed(r.id, r.endpoint_id, endpoint.url, endpoint.secrets, bytes(r.body), r.attempts)
        for r in sorted(rows, key=lambda r: r.seq)
        for endpoint in [enabled[r.endpoint_id]]
    ]


# -- one attempt -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one attempt got."""

    at: float
    duration: float
    address: str | None
    status_code: int | None
    error_kind: str | None  # None: a success
    error: str | None
    response: str | None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None


@functools.lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    """A secret's signer, made once (it decodes the secret)."""
    return Webhook(secret)


def headers(message_id: str, payload: bytes, signing: Sequence[str], now: float) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: one `v1,...` signature per secret."""
    moment = datetime.fromtimestamp(now, UTC)
    signatures = " ".join(_signer(secret).sign(message_id, moment, payload) for secret in signing)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(moment.timestamp() - now, 0.0), RETRY_AFTER_CAP)


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, guard.Blocked):
        return exc.kind
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return "connect"


def attempt(
    client: httpx.Client, url: str, message_id: str, payload: bytes, signing: Sequence[str]
) -> Outcome:
    """POST one message (no database here: the caller records the outcome)."""
    start = time.time()
    began = time.monotonic()
    try:
        with client.stream(
            "POST", url, content=payload, headers=headers(message_id, payload, signing, start)
        ) as response:
            kept = b""
            for chunk in response.iter_bytes():
                kept += chunk
                if len(kept) >= RESPONSE_KEPT:
                    break
    except (httpx.HTTPError, guard.Blocked) as exc:
        kind = _error_kind(exc)
        return Outcome(
            start, time.monotonic() - began, None, None, kind, errors.describe(exc)[:1000], None
        )
    duration = time.monotonic() - began
    address = response.extensions.get("snapshots_address")
    text = kept[:RESPONSE_KEPT].decode("utf-8", "replace")
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(start, duration, address, code, None, None, text)
    if 300 <= code < 400:
        where = response.headers.get("location", "")
        error = f"redirect {code} to {where!r} (not followed)"
        return Outcome(start, duration, address, code, "redirect", error[:1000], text)
    wait = _retry_after(response.headers.get("retry-after"), start) if code in (429, 503) else None
    return Outcome(start, duration, address, code, "http", f"HTTP {code}", text, wait)


# -- recording outcomes ------------------------------------------------------------------------


def record(
    tx: Tx,
    vault: Vault,
    claimed: Claimed,
    outcome: Outcome,
    *,
    worker_id: str | None,
    schedule: Schedule,
) -> str | None:
    """Keep an attempt and move its delivery on; returns its new status (None: the claim
    was no longer this worker's, so only the attempt is kept)."""
    tx.execute(
        A.insert().values(
            delivery_id=claimed.id,
            at=outcome.at,
            duration=outcome.duration,
            address=outcome.address,
            status_code=outcome.status_code,
            error_kind=outcome.error_kind,
            error=outcome.error,
            response=outcome.response,
            worker=worker_id,
        )
    )
    now = time.time()
    mine = [D.c.id == claimed.id]
    if worker_id is not None:
        mine += [D.c.locked_by == worker_id, D.c.status == "processing"]
    if outcome.ok:
        values: dict[str, Any] = {"status": "succeeded", "succeeded_at": now, "last_error": None}
        tx.execute(
            E.update()
            .where(E.c.id == claimed.endpoint_id)
            .values(last_success_at=now, failures=0, failing_since=None)
        )
    else:
        delay = schedule.after(claimed.attempts)
        if delay is not None and outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        values = {
            "status": "dead" if delay is None else "failed",
            "run_after": now + (delay or 0.0),
            "last_error": outcome.error,
        }
        _count_failure(tx, vault, claimed.endpoint_id, outcome, now)
    values |= {"lease_until": None, "locked_by": None, "updated_at": now}
    changed = tx.execute(D.update().where(*mine).values(**values)).rowcount
    if not changed:
        return None
    if not outcome.ok:
        status = tx.execute(
            sa.select(E.c.status).where(E.c.id == claimed.endpoint_id)
        ).scalar_one_or_none()
        if status == "disabled" and values["status"] == "failed":
            tx.execute(D.update().where(D.c.id == claimed.id).values(status="held"))
            return "held"
    return str(values["status"])


# The success path's statements, made once (building one costs more than running it).
_ATTEMPT = A.insert()
_SUCCEEDED = (
    D.update()
    .where(
        D.c.id == sa.bindparam("b_id"),
        D.c.locked_by == sa.bindparam("b_worker"),
        D.c.status == "processing",
    )
    .values(
        status="succeeded",
        succeeded_at=sa.bindparam("b_now"),
        last_error=None,
        lease_until=None,
        locked_by=None,
        updated_at=sa.bindparam("b_now"),
    )
)
_ENDPOINT_SUCCEEDED = (
    E.update()
    .where(E.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    .values(last_success_at=sa.bindparam("b_now"), failures=0, failing_since=None)
)


def record_many(
    tx: Tx,
    vault: Vault,
    outcomes: Sequence[tuple[Claimed, Outcome]],
    *,
    worker_id: str,
    schedule: Schedule,
) -> None:
    """`record` for a batch: successes in three statements whatever their number (attempts,
    deliveries, endpoints), failures one by one (each may retry, hold or disable)."""
    succeeded = [(c, o) for c, o in outcomes if o.ok]
    if succeeded:
        now = time.time()
        tx.execute(
            _ATTEMPT,
            [
                {
                    "delivery_id": c.id,
                    "at": o.at,
                    "duration": o.duration,
                    "address": o.address,
                    "status_code": o.status_code,
                    "error_kind": None,
                    "error": None,
                    "response": o.response,
                    "worker": worker_id,
                }
                for c, o in succeeded
            ],
        )
        tx.execute(
            _SUCCEEDED, [{"b_id": c.id, "b_worker": worker_id, "b_now": now} for c, _ in succeeded]
        )
        ids = sorted({c.endpoint_id for c, _ in succeeded})
        tx.execute(_ENDPOINT_SUCCEEDED, {"b_ids": ids, "b_now": now})
    for claimed, outcome in outcomes:
        if not outcome.ok:
            record(tx, vault, claimed, outcome, worker_id=worker_id, schedule=schedule)


def _count_failure(tx: Tx, vault: Vault, endpoint_id: str, outcome: Outcome, now: float) -> None:
    tx.execute(
        E.update()
        .where(E.c.id == endpoint_id)
        .values(failures=E.c.failures + 1, failing_since=sa.func.coalesce(E.c.failing_since, now))
    )
    row = tx.execute(
        sa.select(E.c.status, E.c.failures, E.c.failing_since, E.c.last_success_at).where(
            E.c.id == endpoint_id
        )
    ).first()
    if row is None or row.status == "disabled":
        return
    if outcome.status_code == 410:
        reason = "the endpoint answered 410 Gone"
    elif row.failures >= DISABLE_FAILURES and now - row.failing_since >= DISABLE_AFTER:
        reason = (
            f"no success for {times.describe(DISABLE_AFTER)} and {row.failures} failed attempts"
        )
    else:
        return
    endpoints.disable(tx, vault, endpoint_id, reason=reason, actor="worker")
    log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)


# -- the worker's part -----------------------------------------------------------------------


class Dispatcher:
    """Claims due deliveries and sends them, `outbound_concurrency` at a time, on a thread of
    a worker process. Claims and outcomes are short transactions; no HTTP inside one."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        settings: Settings,
        *,
        name: str,
        client: httpx.Client | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.db = db
        self.vault = vault
        self.settings = settings
        self.name = name
        self.schedule = Schedule.of(settings)
        self.client = client or guard.client(
            allow=guard.Allow.parse(settings.outbound_allow), timeout=settings.outbound_timeout
        )
        self._ready = ready
        self._pool = ThreadPoolExecutor(
            settings.outbound_concurrency, thread_name_prefix="outbound"
        )
        self._secrets: dict[str, list[dict[str, Any]]] = {}
        self._done: queue.Queue[tuple[Claimed, Outcome]] = queue.Queue()
        # Set when flows wrote messages in this process: an idle dispatcher looks at once.
        self.wake = threading.Event()
        self._in_flight = 0
        self._more = False  # the last claim took all it asked for: more may be due

    def _signing(self, claimed: Claimed) -> list[str]:
        # Decrypting costs more than signing: each stored value is decrypted once, and the
        # secrets in force are picked from it at each attempt (an overlap ends on time).
        found = self._secrets.get(claimed.secrets)
        if found is None:
            found = endpoints.entries(self.vault, claimed.secrets)
            if len(self._secrets) >= 1000:
                self._secrets.clear()
            self._secrets[claimed.secrets] = found
        return endpoints.active(found)

    def _send(self, claimed: Claimed) -> None:
        try:
            signing = self._signing(claimed)
            outcome = attempt(self.client, claimed.url, claimed.id, claimed.body, signing)
        except Exception as exc:  # a secret that does not decrypt, a bug: kept as the error
            outcome = Outcome(time.time(), 0.0, None, None, "connect", errors.describe(exc), None)
        self._done.put((claimed, outcome))

    def _lease(self) -> float:
        # A claimed delivery waits for at most one round of the threads, then is sent.
        return max(self.settings.lease, 2 * self.settings.outbound_timeout + 10.0)

    def _gather(self, block: float) -> list[tuple[Claimed, Outcome]]:
        """The outcomes that are in (waiting up to `block` seconds for one). Once one is in,
        the others in the air get `GATHER` seconds to join it: one write transaction records
        several outcomes, not one each (SQLite's single writer is the dispatcher's limit)."""
        found: list[tuple[Claimed, Outcome]] = []
        try:
            found.append(self._done.get(timeout=block) if block else self._done.get_nowait())
            until = time.monotonic() + GATHER
            while True:
                left = until - time.monotonic() if len(found) < self._in_flight else 0.0
                found.append(self._done.get(timeout=left) if left > 0 else self._done.get_nowait())
        except queue.Empty:
            pass
        return found

    def _free(self, settled: int) -> int:
        """How many to claim once `settled` outcomes are recorded (0: not yet). Up to twice the
        concurrency in hand: the threads never wait for a claim, and claims and outcomes go in
        fewer, larger transactions. At most `concurrency` are in the air."""
        held = self._in_flight - settled
        free = 2 * self.settings.outbound_concurrency - held
        if free < self.settings.outbound_concurrency // 2 + 1 and held:
            return 0
        return free

    def _turn(self, *, block: float = 0.0, claiming: bool = True) -> int:
        """Record the outcomes that are in and claim as many due deliveries as there are free
        slots, in one write transaction; returns how many were claimed. A read asks first
        whether anything is due (an idle dispatcher never takes SQLite's write lock), unless
        the last claim took all it asked for."""
        found = self._gather(block)
        limit = self._free(len(found)) if claiming and self._ready() else 0
        if limit and not self._more:
            with self.db.read() as tx:
                if not has_claimable(tx):
                    limit = 0
        if not found and not limit:
            return 0
        try:
            with self.db.write() as tx:
                record_many(tx, self.vault, found, worker_id=self.name, schedule=self.schedule)
                batch = (
                    claim(tx, worker_id=self.name, limit=limit, lease=self._lease())
                    if limit
                    else []
                )
        finally:
            # Not recorded (the transaction failed): the lease runs out and they go again.
            self._in_flight -= len(found)
        self._more = bool(batch) and len(batch) == limit
        for claimed in batch:
            self._in_flight += 1
            self._pool.submit(self._send, claimed)
        return len(batch)

    def step(self) -> int:
        """Claim what is due (as many as there are free slots), send it and record every
        outcome before returning; returns how many were claimed (for tests and `drain`)."""
        claimed = self._turn()
        while self._in_flight:
            self._turn(block=1.0, claiming=False)
        return claimed

    def run(self, stop: threading.Event) -> None:
        """Keep every slot busy while deliveries are due: a slow endpoint holds one slot per
        delivery in flight, never the others."""
        while not stop.is_set():
            try:
                if not self._turn():
                    idle = self.settings.worker_idle
                    if self._in_flight:
                        self._turn(block=idle)
                    else:
                        self.wake.wait(idle)
                        self.wake.clear()
            except Exception as exc:
                if errors.is_process_fault(exc):
                    log.warning("outbound: %s", errors.describe(exc))
                else:
                    log.exception("outbound: recording failed; trying again shortly")
                stop.wait(1.0)
        self._pool.shutdown(wait=True)
        try:
            self._turn(claiming=False)
        finally:
            self.client.close()


def send_test(
    db: Database,
    vault: Vault,
    client: httpx.Client,
    ref: str,
    *,
    schedule: Schedule,
) -> DeliveryDetail:
    """Make a `snapshots.test` message for an endpoint and send it now (its URL is checked
    again); returns the delivery with its attempt. A failure is retried like any other."""
    with db.write() as tx:
        endpoint = endpoints.get(tx, vault, ref)
        if endpoint.status != "enabled":
            raise errors.Conflict(f"endpoint {endpoint.name} is disabled: enable it first")
        message_id = enqueue(
            tx,
            endpoint=endpoint.id,
            connection_id="",
            event_id=ids.new("test_", 20),
            flow="",
            step=0,
            message_type=TEST_TYPE,
            data={"endpoint": endpoint.name, "message": "a test message from Snapshots"},
            test=True,
        )
        now = time.time()
        tx.execute(
            D.update()
            .where(D.c.id == message_id)
            .values(status="processing", attempts=1, lease_until=now + 60, locked_by="test")
        )
        row = tx.execute(
            sa.select(D.c.body, E.c.url, E.c.secrets)
            .join(E, E.c.id == D.c.endpoint_id)
            .where(D.c.id == message_id)
        ).one()
    claimed = Claimed(message_id, endpoint.id, row.url, row.secrets, bytes(row.body), 1)
    signing = endpoints.signing_secrets(vault, row.secrets)
    outcome = attempt(client, row.url, message_id, claimed.body, signing)
    with db.write() as tx:
        record(tx, vault, claimed, outcome, worker_id="test", schedule=schedule)
        return get(tx, message_id)


# -- reading and recovering --------------------------------------------------------------------


def get(tx: Tx, delivery_id: str) -> DeliveryDetail:
    row = None
    if ids.plausible(delivery_id):
        row = tx.execute(_select(D.c.body).where(D.c.id == delivery_id)).first()
    if row is None:
        raise errors.NotFound(f"no delivery {delivery_id}")
    attempts = tx.execute(sa.select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.id)).all()
    return DeliveryDetail(
        **_model(row).model_dump(),
        body=bytes(row.body).decode("utf-8", "replace"),
        attempt_log=[Attempt.model_validate(a._mapping) for a in attempts],
    )


def page(
    tx: Tx,
    *,
    endpoint_id: str | None = None,
    status: str | None = None,
    since: float | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> paging.Page[Delivery]:
    """Deliveries, newest first."""
    if status is not None and status not in STATUSES:
        raise errors.BadRequest(f"unknown status {status!r}; one of: {', '.join(STATUSES)}")
    where = []
    if endpoint_id is not None:
        where.append(D.c.endpoint_id == endpoint_id)
    if status is not None:
        where.append(D.c.status == status)
    if since is not None:
        where.append(D.c.created_at >= since)
    stmt = _select().where(*where).order_by(D.c.seq.desc()).limit(limit + 1)
    if starting_after is not None:
        found = None
        if ids.plausible(starting_after):
            found = tx.execute(
                sa.select(D.c.seq).where(D.c.id == starting_after)
            ).scalar_one_or_none()
        if found is None:
            raise errors.BadRequest(
                f"starting_after: no delivery {starting_after}", code="invalid_cursor"
            )
        stmt = stmt.where(D.c.seq < found)
    rows = tx.execute(stmt).all()
    return paging.Page(data=[_model(r) for r in rows[:limit]], has_more=len(rows) > limit)


RECOVERABLE = ("failed", "dead", "held")


def _recoverable(endpoint_id: str, since: float) -> list[Any]:
    return [
        D.c.endpoint_id == endpoint_id,
        D.c.status.in_(RECOVERABLE),
        D.c.created_at >= since,
    ]


def recoverable(tx: Tx, vault: Vault, ref: str, *, since: float) -> int:
    """How many deliveries `recover` would queue again now (the count shown before it runs)."""
    endpoint = endpoints.get(tx, vault, ref)
    stmt = sa.select(sa.func.count()).where(*_recoverable(endpoint.id, since))
    return int(tx.execute(stmt).scalar_one())


def counts(tx: Tx) -> dict[str, dict[str, int]]:
    """Deliveries by endpoint id, then by status (statuses with none are absent)."""
    stmt = sa.select(D.c.endpoint_id, D.c.status, sa.func.count()).group_by(
        D.c.endpoint_id, D.c.status
    )
    found: dict[str, dict[str, int]] = {}
    for endpoint_id, status, count in tx.execute(stmt):
        found.setdefault(endpoint_id, {})[status] = int(count)
    return found


def recover(tx: Tx, vault: Vault, ref: str, *, since: float, actor: str = "cli") -> int:
    """Queue an endpoint's failed, dead and held deliveries made since `since` again, oldest
    first (they go out in the order they were made); returns how many. The endpoint must be
    enabled (`endpoints enable`), or they would only be held again."""
    endpoint = endpoints.get(tx, vault, ref)
    if endpoint.status != "enabled":
        raise errors.Conflict(
            f"endpoint {endpoint.name} is disabled: `snapshots endpoints enable {endpoint.name}` "
            "first, then recover"
        )
    now = time.time()
    count = tx.execute(
        D.update()
        .where(*_recoverable(endpoint.id, since))
        .values(status="pending", run_after=now, attempts=0, updated_at=now)
    ).rowcount
    audit.record(
        tx,
        actor=actor,
        action="endpoint.recovered",
        target=endpoint.id,
        details={"name": endpoint.name, "since": since, "requeued": count},
    )
    return int(count)


def requeue(tx: Tx, vault: Vault, delivery_id: str, *, actor: str = "cli") -> DeliveryDetail:
    """Queue one failed, dead or held delivery again (its endpoint must be enabled)."""
    found = get(tx, delivery_id)
    if found.status not in ("failed", "dead", "held"):
        raise errors.Conflict(f"delivery {delivery_id} is {found.status}: nothing to recover")
    endpoint = endpoints.get(tx, vault, found.endpoint_id)
    if endpoint.status != "enabled":
        raise errors.Conflict(f"endpoint {endpoint.name} is disabled: enable it first")
    now = time.time()
    tx.execute(
        D.update()
        .where(D.c.id == delivery_id)
        .values(status="pending", run_after=now, attempts=0, updated_at=now)
    )
    audit.record(tx, actor=actor, action="delivery.recovered", target=delivery_id)
    return get(tx, delivery_id)


# -- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What /metrics shows about outbound deliveries, read from the database (so it is the
    same whichever process answers)."""

    attempts: dict[tuple[str, str], int]  # (outcome, error kind) -> attempts
    statuses: dict[str, int]
    due: int
    oldest_due_age: float  # seconds
    success_latency_sum: float  # seconds from message to success, over every success
    successes: int
    endpoints_disabled: int


def figures(tx: Tx, now: float | None = None) -> Figures:
    now = time.time() if now is None else now
    attempts = {
        ("success" if kind is None else "failure", kind or ""): int(count)
        for kind, count in tx.execute(
            sa.select(A.c.error_kind, sa.func.count()).group_by(A.c.error_kind)
        )
    }
    statuses = {s: 0 for s in STATUSES} | {
        status: int(count)
        for status, count in tx.execute(sa.select(D.c.status, sa.func.count()).group_by(D.c.status))
    }
    due_where = (D.c.status.in_(("pending", "failed")), D.c.run_after <= now)
    due, oldest = tx.execute(
        sa.select(sa.func.count(), sa.func.min(D.c.run_after)).where(*due_where)
    ).one()
    latency, successes = tx.execute(
        sa.select(sa.func.sum(D.c.succeeded_at - D.c.created_at), sa.func.count()).where(
            D.c.status == "succeeded"
        )
    ).one()
    disabled = tx.execute(sa.select(sa.func.count()).where(E.c.status == "disabled")).scalar_one()
    return Figures(
        attempts,
        statuses,
        int(due),
        0.0 if oldest is None else max(now - oldest, 0.0),
        float(latency or 0.0),
        int(successes),
        int(disabled),
    )
