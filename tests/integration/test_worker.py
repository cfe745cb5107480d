"""The worker on SQLite and PostgreSQL: applying items, retries with backoff, dead letters,
lease takeover, and savepoints that leave nothing half-applied."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from snapshots import actions, connections, errors, flowfile, flows, inbox, mapping, retry
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database, Tx
from snapshots.worker import Worker
from tests.conftest import EventFactory, drain, fixture
from tests.integration.helpers import count, put, row

T = tables.inbox_items


def make_due(db: Database, item_id: int) -> None:
    """Let the backoff pass (the test's clock, not the worker's)."""
    with db.write() as conn:
        conn.execute(T.update().where(T.c.id == item_id).values(run_after=0))


def customer_event(event_factory: EventFactory, n: int, **changes: Any) -> dict[str, Any]:
    obj = {**fixture("customer"), "id": f"cus_worker{n:05d}", "email": f"w{n}@example.com"}
    return event_factory("customer.created", object={**obj, **changes})


def claim(db: Database, *, worker_id: str, limit: int, lease: float) -> list[inbox.Item]:
    with db.write() as tx:
        return inbox.claim(tx, worker_id=worker_id, limit=limit, lease=lease)


def custom_flow(name: str, run: actions.Perform, trigger: str = "customer.*") -> flows.Flow:
    """A flow with a test action: the action seam is public (flows name actions by name)."""
    action = actions.Action(name, "contact", frozenset({"stripe_customer_id"}), run, name)
    fields = (("stripe_customer_id", mapping.Expression("id")),)
    return flows.Flow(name, (trigger,), action, None, fields, {})


def failing(exc: Exception) -> flows.Registry:
    def run(tx: Tx, call: actions.Invocation, fields: dict[str, Any]) -> str:
        raise exc

    return flows.Registry([custom_flow("explode", run)])


def prebuilt(name: str) -> flows.Flow:
    [flow] = [f for f in flowfile.load().flows if f.name == name]
    return flow


# Applying


def test_a_worker_applies_an_item_and_marks_it_done(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    event = customer_event(event_factory, 1, name="Ada Lovelace")
    item_id = put(db, connection.id, event)
    worker = Worker(db, flowfile.load(), settings, name="w1")
    assert worker.step() == 1
    assert worker.step() == 0
    done = row(db, item_id)
    assert (done.status, done.flows, done.attempts) == ("done", "contacts", 1)
    assert done.locked_by is None and done.lease_until is None and done.last_error is None
    assert done.processed_at is not None
    with db.read() as conn:
        contact = conn.execute(sa.select(tables.contacts)).one()
    assert (contact.stripe_customer_id, contact.name) == ("cus_worker00001", "Ada Lovelace")
    assert contact.connection_id == connection.id
    assert (worker.stats.claimed, worker.stats.done) == (1, 1)


def test_an_event_every_flow_filters_out_is_ignored(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    registry = flowfile.parse(
        "flows:\n  - name: live-only\n    trigger: customer.created\n    filter: livemode\n"
        "    action: upsert_contact\n    fields: {stripe_customer_id: id}\n",
        "live-only.yaml",
    )
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    worker = Worker(db, registry, settings)
    worker.step()
    ignored = row(db, item_id)
    assert (ignored.status, ignored.flows) == ("ignored", None)
    assert worker.stats.ignored == 1
    assert count(db, tables.contacts) == 0


def test_a_batch_is_limited_and_taken_oldest_first(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    ids = [put(db, connection.id, customer_event(event_factory, n)) for n in range(5)]
    worker = Worker(db, flowfile.load(), settings.model_copy(update={"worker_batch": 2}))
    assert worker.step() == 2
    assert [row(db, i).status for i in ids] == ["done", "done", "pending", "pending", "pending"]
    drain(worker)
    assert [row(db, i).status for i in ids] == ["done"] * 5
    assert worker.stats.claimed == 5


def test_run_works_until_stopped(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    worker = Worker(db, flowfile.load(), settings.model_copy(update={"worker_idle": 0.05}))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        ids = [put(db, connection.id, customer_event(event_factory, n)) for n in range(3)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and worker.stats.done < 3:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert [row(db, i).status for i in ids] == ["done"] * 3
    assert count(db, tables.contacts) == 3


# Retries, backoff and dead letters


def test_failures_back_off_exponentially_then_go_dead(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    settings = settings.model_copy(update={"max_attempts": 4})
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    worker = Worker(db, failing(errors.RetryLater("stripe answered 503")), settings)
    for attempt in (1, 2, 3):
        before = time.time()
        assert worker.step() == 1
        after = time.time()
        failed = row(db, item_id)
        assert (failed.status, failed.attempts) == ("failed", attempt)
        assert failed.last_error == "stripe answered 503"
        assert failed.locked_by is None and failed.lease_until is None
        assert failed.processed_at is None
        # The n-th failure waits BASE * 2**(n-1) seconds, jittered into [0.5, 1.0] of that.
        wait = retry.BASE * 2 ** (attempt - 1)
        assert before + 0.5 * wait <= failed.run_after <= after + wait
        assert worker.step() == 0  # not due yet
        make_due(db, item_id)

    assert worker.step() == 1
    dead = row(db, item_id)
    assert (dead.status, dead.attempts) == ("dead", 4)
    assert dead.last_error == "stripe answered 503"
    assert dead.processed_at is not None
    make_due(db, item_id)
    assert worker.step() == 0  # a dead item stays dead until replayed
    assert (worker.stats.failed, worker.stats.dead) == (3, 1)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(errors.DeadLetter("cannot map this"), "dead", id="dead-letter"),
        pytest.param(errors.BadRequest("bad input"), "dead", id="rejected"),
        pytest.param(errors.ConfigError("flow is broken"), "dead", id="config-error"),
        pytest.param(errors.RetryLater("try later"), "failed", id="retry-later"),
        pytest.param(RuntimeError("a bug"), "failed", id="unexpected-error"),
    ],
)
def test_which_errors_retry_and_which_go_dead_at_once(
    error: Exception,
    status: str,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    Worker(db, failing(error), settings).step()
    stored = row(db, item_id)
    assert (stored.status, stored.attempts) == (status, 1)
    assert str(error) in stored.last_error
    if status == "dead":
        assert stored.processed_at is not None
    else:
        assert stored.run_after > time.time() + 0.5 * retry.BASE - 1


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(errors.StripeAuthError("key refused"), id="stripe-key-refused"),
        pytest.param(errors.StripeUnavailable("stripe is down"), id="stripe-down"),
    ],
)
def test_a_stripe_that_refuses_or_is_away_is_not_the_items_fault(
    error: Exception,
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    """The item waits, uncharged, a little longer each time while the fault lasts."""
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    worker = Worker(db, failing(error), settings)
    delays = []
    for _ in range(3):
        before = time.time()
        assert worker.step() == 1
        stored = row(db, item_id)
        assert (stored.status, stored.attempts) == ("pending", 0)
        assert stored.last_error == f"waiting for Stripe: {error}"
        assert stored.locked_by is None and stored.lease_until is None
        delays.append(stored.run_after - before)
        make_due(db, item_id)
    assert 0.5 * retry.BASE <= delays[0] <= retry.BASE + 1
    assert delays[2] >= 2 * retry.BASE  # the third wait: BASE * 4, jittered into [0.5, 1]
    assert (worker.stats.failed, worker.stats.dead) == (0, 0)


def test_a_customer_without_an_id_goes_dead_with_the_reason(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    item_id = put(db, connection.id, customer_event(event_factory, 1, id=None))
    Worker(db, flowfile.load(), settings).step()
    dead = row(db, item_id)
    assert (dead.status, dead.attempts) == ("dead", 1)
    assert dead.last_error == "the customer has no id to match a contact on"
    assert count(db, tables.contacts) == 0


def test_a_long_error_is_kept_truncated(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    Worker(db, failing(errors.DeadLetter("x" * 10_000)), settings).step()
    stored = row(db, item_id)
    assert stored.status == "dead"
    assert 0 < len(stored.last_error) <= 4000


def test_an_item_whose_holders_keep_dying_goes_dead(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    settings = settings.model_copy(update={"lease": 0.05, "max_attempts": 3})
    survivor = put(db, connection.id, customer_event(event_factory, 1))
    doomed = put(db, connection.id, customer_event(event_factory, 2))

    def claim_and_die(worker_id: str, expected: list[int]) -> None:
        claimed = claim(db, worker_id=worker_id, limit=10, lease=settings.lease)
        assert [i.id for i in claimed] == expected
        time.sleep(0.1)  # the lease runs out

    claim_and_die("dies-1", [survivor, doomed])
    claim_and_die("dies-2", [survivor, doomed])
    # Two holders died: the survivor is applied on its third and last allowed attempt.
    live = Worker(db, flowfile.load(), settings.model_copy(update={"worker_batch": 1}))
    assert live.step() == 1
    assert (row(db, survivor).status, row(db, survivor).attempts) == ("done", 3)
    claim_and_die("dies-3", [doomed])
    # Three holders died: the next claim would be a fourth attempt, so it goes dead unapplied.
    worker = Worker(db, flowfile.load(), settings)
    assert worker.step() == 1
    dead = row(db, doomed)
    assert (dead.status, dead.attempts) == ("dead", 4)
    assert "stopped 3 times" in dead.last_error
    assert worker.stats.dead == 1
    with db.read() as conn:
        customers = conn.execute(sa.select(tables.contacts.c.stripe_customer_id)).scalars().all()
    assert customers == ["cus_worker00001"]


# Leases


def test_an_item_whose_worker_died_is_taken_over_and_applied_once(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    settings = settings.model_copy(update={"lease": 0.2})
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    [held] = claim(db, worker_id="died", limit=1, lease=settings.lease)
    other = Worker(db, flowfile.load(), settings, name="other")
    assert other.step() == 0  # the lease still holds
    time.sleep(0.3)
    assert other.step() == 1
    done = row(db, held.id)
    assert (done.status, done.attempts) == ("done", 2)
    assert count(db, tables.contacts) == 1
    assert item_id == held.id


def test_a_worker_whose_lease_was_taken_over_does_not_apply_the_item(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    settings = settings.model_copy(update={"lease": 0.2})
    applied: list[str] = []
    upsert = actions.ACTIONS["upsert_contact"].run

    def counting(tx: Tx, call: actions.Invocation, fields: dict[str, Any]) -> str:
        applied.append(call.event["id"])
        return upsert(tx, call, fields)

    registry = flows.Registry([custom_flow("counted", counting)])
    event = customer_event(event_factory, 1)
    item_id = put(db, connection.id, event)
    slow = Worker(db, registry, settings, name="slow")
    fast = Worker(db, registry, settings, name="fast")
    # `slow` claims, then stalls past its lease before applying (a GC pause, a frozen VM).
    items = claim(db, worker_id=slow.name, limit=10, lease=settings.lease)
    time.sleep(0.3)
    assert fast.step() == 1
    assert row(db, item_id).status == "done"
    slow._apply(items)  # wakes up and applies what it claimed earlier
    assert applied == [event["id"]]  # by `fast` only
    assert (slow.stats.done, slow.stats.failed, slow.stats.dead) == (0, 0, 0)
    assert fast.stats.done == 1
    after = row(db, item_id)
    assert (after.status, after.attempts, after.locked_by) == ("done", 2, None)
    assert count(db, tables.contacts) == 1


# Savepoints: a failing item leaves nothing half-applied, and does not undo its neighbours.


def test_a_flow_failing_after_writing_a_contact_leaves_no_contact(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    def explode(tx: Tx, call: actions.Invocation, fields: dict[str, Any]) -> str:
        raise errors.RetryLater("the second flow failed")

    # The prebuilt contacts flow writes the contact, then a second flow on the same event fails.
    registry = flows.Registry([prebuilt("contacts"), custom_flow("explode", explode)])
    item_id = put(db, connection.id, customer_event(event_factory, 1))
    Worker(db, registry, settings).step()
    failed = row(db, item_id)
    assert (failed.status, failed.last_error) == ("failed", "the second flow failed")
    assert count(db, tables.contacts) == 0


def test_an_invoice_that_fails_to_store_leaves_no_contact_made_for_it(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    # The invoices flow maps fine and makes the invoice's contact first; then storing the
    # invoice fails (an amount that is an object, not an integer): the contact must go too.
    invoice = {
        **fixture("invoice"),
        "id": "in_halfway",
        "customer": "cus_halfway",
        "customer_email": "halfway@example.com",
        "amount_due": {"unexpected": "shape"},
    }
    item_id = put(db, connection.id, event_factory("invoice.created", object=invoice))
    Worker(db, flowfile.load(), settings).step()
    failed = row(db, item_id)
    assert failed.status == "failed"
    assert failed.last_error
    assert count(db, tables.contacts) == 0
    assert count(db, tables.invoices) == 0


def test_a_failing_item_does_not_undo_the_rest_of_its_batch(
    db: Database,
    settings: Settings,
    connection: connections.Connection,
    event_factory: EventFactory,
) -> None:
    def explode_on_two(tx: Tx, call: actions.Invocation, fields: dict[str, Any]) -> str:
        if fields["stripe_customer_id"] == "cus_worker00002":
            raise errors.RetryLater("not this one")
        return "ok"

    registry = flows.Registry([prebuilt("contacts"), custom_flow("picky", explode_on_two)])
    ids = [put(db, connection.id, customer_event(event_factory, n)) for n in (1, 2, 3)]
    worker = Worker(db, registry, settings)
    assert worker.step() == 3
    assert [row(db, i).status for i in ids] == ["done", "failed", "done"]
    with db.read() as conn:
        customers = conn.execute(
            sa.select(tables.contacts.c.stripe_customer_id).order_by(tables.contacts.c.seq)
        ).scalars()
        assert list(customers) == ["cus_worker00001", "cus_worker00003"]
    assert (worker.stats.done, worker.stats.failed) == (2, 1)
