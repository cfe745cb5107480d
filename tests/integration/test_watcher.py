"""The location watcher and the schedules that run it, on SQLite and PostgreSQL, against the
fake Stripe server; and two real `snapshots worker` processes sharing one PostgreSQL database."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from snapshots import (
    connections,
    errors,
    flowfile,
    flows,
    ids,
    inbox,
    schedule,
    stripe_api,
    sync,
    vault,
    watcher,
    worker,
)
from snapshots.settings import Settings
from snapshots.store import tables
from snapshots.store.db import Database
from tests.conftest import WEBHOOK_SECRET, _empty_postgres, drain
from tests.integration.helpers import inbox_items
from tests.support.fake_stripe import FakeStripe, run_fake_stripe

T = TypeVar("T")
SNAPSHOTS = Path(sys.executable).with_name("snapshots")
ADDRESS = {
    "line1": "1 Rue de Rivoli",
    "city": "Paris",
    "postal_code": "75001",
    "country": "FR",
}
ACCOUNT = stripe_api.Account(id="acct_fake", livemode=False, default_currency="eur", country="FR")
_names = itertools.count(1)


def eventually(check: Callable[[], T], *, timeout: float, interval: float = 0.1) -> T:
    """`check` until it stops raising AssertionError; the last one after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStripe]:
    with run_fake_stripe(currency="eur", country="FR") as fake:
        yield fake


@pytest.fixture
def fake(server: FakeStripe) -> Iterator[FakeStripe]:
    """The module's fake Stripe with no locations, account currency eur, no faults."""
    server.clear_faults()
    for location in server.locations():
        server.delete_location(location["id"])
    server.set_account(default_currency="eur")
    server.clear_requests()
    yield server
    server.clear_faults()


@pytest.fixture
def registry() -> flows.Registry:
    return flowfile.load()


@pytest.fixture
def linked(db: Database, settings: Settings, fake: FakeStripe) -> connections.Connection:
    """A connection to the fake Stripe (key taken as checked)."""
    with db.write() as tx:
        return connections.add(
            tx,
            vault.load(settings),
            account=ACCOUNT,
            secret_key=fake.secret_key,
            webhook_secrets=[WEBHOOK_SECRET],
            name="fake",
            api_base=fake.api_base,
        )


@pytest.fixture
def client(db: Database, settings: Settings, linked: connections.Connection) -> stripe_api.Stripe:
    with db.read() as tx:
        return connections.stripe_client(tx, vault.load(settings), linked, rps=0, retries=0)


@pytest.fixture
def apply(db: Database, settings: Settings, registry: flows.Registry) -> Callable[[], None]:
    def apply_all() -> None:
        applier = worker.Worker(db, registry, settings)
        drain(applier)
        assert applier.stats.failed == applier.stats.dead == 0, applier.stats

    return apply_all


def make_location(fake: FakeStripe, **fields: Any) -> dict[str, Any]:
    name = fields.pop("display_name", f"Shop {next(_names)}")
    return fake.create_location(
        name, ADDRESS, metadata=fields.pop("metadata", {"store": "7"}), **fields
    )


def snapshot_locations(db: Database) -> dict[str, Any]:
    with db.read() as conn:
        rows = conn.execute(sa.select(tables.locations)).all()
    return {row.stripe_location_id: row for row in rows}


def watcher_items(db: Database) -> list[Any]:
    return inbox_items(db, tables.inbox_items.c.source == "watcher")


def inbox_count(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(tables.inbox_items)).scalar_one()
        )


def default_currency(db: Database, connection_id: str) -> str | None:
    with db.read() as conn:
        t = tables.connections
        value = conn.execute(
            sa.select(t.c.default_currency).where(t.c.id == connection_id)
        ).scalar_one()
    return None if value is None else str(value)


# -- the watcher ------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_locations_follow_stripe(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    first = make_location(fake, display_name="Rivoli", metadata={"store": "1"})
    second = make_location(fake, display_name="Opéra", metadata={"store": "2"})

    assert watcher.poll(db, client, linked, registry) == watcher.Poll(2, 2, 0, 0)
    apply()
    found = snapshot_locations(db)
    assert set(found) == {first["id"], second["id"]}
    row = found[first["id"]]
    assert row.name == "Rivoli"
    assert row.address == {**dict.fromkeys(("line2", "state")), **ADDRESS}
    assert row.country == "FR"
    assert row.currency == "eur"  # the account's default currency
    assert row.metadata == {"store": "1"}
    assert row.connection_id == linked.id
    assert row.archived is False
    assert found[second["id"]].name == "Opéra"

    fake.update_location(first["id"], display_name="Rivoli 2", metadata={"floor": "3"})
    assert watcher.poll(db, client, linked, registry) == watcher.Poll(2, 0, 1, 0)
    apply()
    row = snapshot_locations(db)[first["id"]]
    assert row.name == "Rivoli 2"
    assert row.metadata == {"store": "1", "floor": "3"}
    assert snapshot_locations(db)[second["id"]].name == "Opéra"

    fake.delete_location(second["id"])
    assert watcher.poll(db, client, linked, registry) == watcher.Poll(1, 0, 0, 1)
    apply()
    found = snapshot_locations(db)
    assert found[second["id"]].archived is True
    assert found[second["id"]].name == "Opéra"  # the last known fields stay
    assert found[first["id"]].archived is False
    with db.read() as conn:
        watched = conn.execute(sa.select(tables.watched_locations.c.stripe_location_id)).scalars()
        assert set(watched) == {first["id"]}


@pytest.mark.acceptance
def test_an_unchanged_poll_enqueues_nothing(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    for _ in range(3):
        make_location(fake)
    assert watcher.poll(db, client, linked, registry).created == 3
    before = inbox_count(db)
    for _ in range(2):
        result = watcher.poll(db, client, linked, registry)
        assert result == watcher.Poll(3, 0, 0, 0) and result.changes == 0
    assert inbox_count(db) == before


@pytest.mark.acceptance
def test_an_empty_account_polls_to_nothing(
    db: Database,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    assert watcher.poll(db, client, linked, registry) == watcher.Poll(0, 0, 0, 0)
    assert inbox_count(db) == 0


@pytest.mark.acceptance
def test_more_than_one_page_of_locations(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    made = {make_location(fake)["id"] for _ in range(105)}
    assert watcher.poll(db, client, linked, registry) == watcher.Poll(105, 105, 0, 0)
    pages = [
        r for r in fake.requests() if r["method"] == "GET" and r["path"] == "/v1/terminal/locations"
    ]
    assert len(pages) == 2
    assert {json.loads(item.payload)["data"]["object"]["id"] for item in watcher_items(db)} == made


@pytest.mark.acceptance
def test_the_account_currency_follows_stripe(
    db: Database,
    settings: Settings,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    kept = make_location(fake, display_name="Kept")
    renamed = make_location(fake, display_name="Renamed")
    watcher.poll(db, client, linked, registry)
    apply()
    assert {row.currency for row in snapshot_locations(db).values()} == {"eur"}

    fake.set_account(default_currency="gbp")
    fake.update_location(renamed["id"], display_name="Renamed 2")
    added = make_location(fake, display_name="New")
    assert watcher.poll(db, client, linked, registry) == watcher.Poll(3, 1, 1, 0)
    assert default_currency(db, linked.id) == "gbp"
    with db.read() as tx:
        assert connections.get(tx, vault.load(settings), linked.id).default_currency == "gbp"
    apply()
    found = snapshot_locations(db)
    assert found[added["id"]].currency == "gbp"
    assert found[renamed["id"]].currency == "gbp"
    assert found[kept["id"]].currency == "eur"  # no event: unchanged


@pytest.mark.acceptance
def test_a_missing_account_endpoint_keeps_the_known_currency(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    fake.fault("/v1/account", status=404, count=None)
    make_location(fake)
    assert watcher.poll(db, client, linked, registry).created == 1
    assert default_currency(db, linked.id) == "eur"


@pytest.mark.acceptance
def test_a_refused_key_stops_the_poll(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    fake.fault("/v1/account", status=401, count=None)
    make_location(fake)
    with pytest.raises(errors.StripeAuthError):
        watcher.poll(db, client, linked, registry)
    assert inbox_count(db) == 0


@pytest.mark.acceptance
def test_a_failed_listing_leaves_the_last_poll_standing(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    location = make_location(fake)
    watcher.poll(db, client, linked, registry)
    fake.update_location(location["id"], display_name="Changed")
    fake.fault("/v1/terminal/locations", status=500, count=None)
    with pytest.raises(errors.StripeUnavailable):
        watcher.poll(db, client, linked, registry)
    fake.clear_faults()
    assert watcher.poll(db, client, linked, registry).updated == 1


@pytest.mark.acceptance
def test_synthetic_events_look_like_stripe_events(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    location = make_location(fake, display_name="Shaped")
    before = int(time.time())
    watcher.poll(db, client, linked, registry)
    fake.update_location(location["id"], display_name="Shaped 2")
    watcher.poll(db, client, linked, registry)
    fake.delete_location(location["id"])
    watcher.poll(db, client, linked, registry)
    after = int(time.time())

    items = watcher_items(db)
    assert [item.event_type for item in items] == [
        "terminal.location.created",
        "terminal.location.updated",
        "terminal.location.deleted",
    ]
    events = [json.loads(item.payload) for item in items]
    for item, event in zip(items, events, strict=True):
        assert item.status == "pending"  # the location flows want them
        assert item.connection_id == linked.id
        assert item.event_id == event["id"] and event["id"].startswith("evt_snp_")
        assert item.event_created == event["created"]
        assert isinstance(event["created"], int) and before <= event["created"] <= after
        assert event["object"] == "event"
        assert event["livemode"] is False and item.livemode is False
        assert event["pending_webhooks"] == 0
        assert event["request"] == {"id": None, "idempotency_key": None}
        assert event["data"]["object"]["id"] == location["id"]
        assert event["data"]["object"]["object"] == "terminal.location"
        with db.read() as tx:
            public = inbox.get(tx, event["id"]).model_dump(mode="json")
        assert public["source"] == "watcher" and public["event_type"] == event["type"]
    assert len({event["id"] for event in events}) == 3
    assert events[0]["data"]["object"] == location
    assert events[1]["data"]["object"]["display_name"] == "Shaped 2"
    assert events[2]["data"]["object"] == {
        "id": location["id"],
        "object": "terminal.location",
        "deleted": True,
    }


@pytest.mark.acceptance
def test_the_last_of_two_renames_in_one_second_wins(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
    apply: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two polls in the same second (a forced `sync --objects locations` right after the
    scheduled poll, or a short poll interval) each see a rename. The synthetic events tie on
    (created, rank), so the random event id decides: half of the time the older name wins
    for good. Pinned here with event ids that happen to sort backwards."""
    now = float(int(time.time()))
    monkeypatch.setattr(watcher, "time", SimpleNamespace(time=lambda: now))
    backwards = iter(f"evt_snp_{c}" for c in "zyxwvu")
    real_new = ids.new
    monkeypatch.setattr(
        ids,
        "new",
        lambda prefix, *a: next(backwards) if prefix == "evt_snp_" else real_new(prefix, *a),
    )
    location = make_location(fake, display_name="First")
    watcher.poll(db, client, linked, registry)
    fake.update_location(location["id"], display_name="Second")
    watcher.poll(db, client, linked, registry)
    fake.update_location(location["id"], display_name="Third")
    watcher.poll(db, client, linked, registry)
    apply()
    assert snapshot_locations(db)[location["id"]].name == "Third"


@pytest.mark.acceptance
def test_a_currency_that_changes_back_is_followed(
    db: Database,
    fake: FakeStripe,
    linked: connections.Connection,
    client: stripe_api.Stripe,
    registry: flows.Registry,
) -> None:
    """The scheduler polls with a connection read up to 30 s earlier (connections.Cache):
    its `default_currency` may be stale, and the database must still follow Stripe."""
    fake.set_account(default_currency="gbp")
    watcher.poll(db, client, linked, registry)
    assert default_currency(db, linked.id) == "gbp"
    fake.set_account(default_currency="eur")  # back to what `linked` remembers
    watcher.poll(db, client, linked, registry)
    assert default_currency(db, linked.id) == "eur"


# -- schedules ------------------------------------------------------------------------------


class Concurrency:
    """A job body that records how many copies of it run at once."""

    def __init__(self, hold: float = 0.005) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.runs = 0

    def __call__(self) -> None:
        with self.lock:
            self.active += 1
            self.runs += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.hold)
        with self.lock:
            self.active -= 1


def schedule_row(db: Database, name: str) -> Any:
    with db.read() as conn:
        return conn.execute(
            sa.select(tables.schedules).where(tables.schedules.c.name == name)
        ).one()


def test_two_schedulers_never_run_a_job_at_once(settings: Settings, db: Database) -> None:
    body = Concurrency()
    job = schedule.Job("watcher:conn_x", interval=0.001, run=body)
    databases = [Database(settings.database_url) for _ in range(2)]
    schedulers = [
        schedule.Scheduler(d, lambda: [job], holder=f"host:{i}") for i, d in enumerate(databases)
    ]
    rounds = 20
    barrier = threading.Barrier(2, timeout=30)
    failures: list[BaseException] = []
    ran = [0, 0]

    def tick(i: int) -> None:
        try:
            for _ in range(rounds):
                time.sleep(0.002)  # the job is due again at every round
                barrier.wait()
                ran[i] += schedulers[i].tick()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for d in databases:
            d.dispose()
    assert not failures, failures
    assert body.peak == 1, "the job ran in both schedulers at once"
    assert body.runs == sum(ran)
    assert rounds <= body.runs <= 2 * rounds
    row = schedule_row(db, job.name)
    assert row.holder is None and row.lease_until is None and row.last_error is None


def test_a_job_is_not_run_again_before_its_interval(db: Database) -> None:
    body = Concurrency(hold=0)
    job = schedule.Job("reconcile:conn_x", interval=3600, run=body)
    assert schedule.run_job(db, job, holder="a") is True
    assert schedule.run_job(db, job, holder="a") is False
    assert schedule.run_job(db, job, holder="b") is False
    assert body.runs == 1
    row = schedule_row(db, job.name)
    assert row.next_run_at == pytest.approx(time.time() + 3600, abs=30)
    assert row.last_run_at == pytest.approx(time.time(), abs=30)


def test_a_dead_holder_is_taken_over_when_its_lease_runs_out(db: Database) -> None:
    name = "watcher:conn_dead"
    assert schedule.claim(db, name, holder="dead:1") is True  # and never released
    assert schedule.claim(db, name, holder="alive:2") is False
    assert schedule.claim(db, name, holder="alive:2", force=True) is False  # not a live lease
    with db.write() as conn:
        conn.execute(
            tables.schedules.update()
            .where(tables.schedules.c.name == name)
            .values(lease_until=time.time() - 1)
        )
    body = Concurrency(hold=0)
    assert schedule.run_job(db, schedule.Job(name, 60, body), holder="alive:2") is True
    assert body.runs == 1
    row = schedule_row(db, name)
    assert row.holder is None and row.next_run_at > time.time() + 30


def test_force_runs_a_job_that_is_not_due(db: Database) -> None:
    body = Concurrency(hold=0)
    job = schedule.Job("watcher:conn_f", interval=3600, run=body)
    assert schedule.run_job(db, job, holder="a")
    assert not schedule.run_job(db, job, holder="b")
    assert schedule.run_job(db, job, holder="b", force=True)
    assert body.runs == 2


def test_a_refused_key_pauses_the_job_for_an_hour(db: Database) -> None:
    def refused() -> None:
        raise errors.StripeAuthError("Stripe refused the key while listing locations")

    job = schedule.Job("watcher:conn_r", interval=1, run=refused)
    start = time.time()
    assert schedule.run_job(db, job, holder="a")
    row = schedule_row(db, job.name)
    assert row.next_run_at >= start + schedule.AUTH_PAUSE
    assert "refused the key" in row.last_error
    assert row.holder is None


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (errors.StripeUnavailable("Stripe failed (HTTP 500)"), "HTTP 500"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
def test_other_job_errors_keep_the_interval(db: Database, error: Exception, text: str) -> None:
    def failing() -> None:
        raise error

    job = schedule.Job("watcher:conn_e", interval=5, run=failing)
    start = time.time()
    assert schedule.run_job(db, job, holder="a")
    row = schedule_row(db, job.name)
    assert start + 5 <= row.next_run_at < start + 60
    assert text in row.last_error
    assert schedule.run_job(db, job, holder="a") is False


@pytest.mark.acceptance
def test_the_scheduler_polls_every_connection(
    db: Database,
    settings: Settings,
    fake: FakeStripe,
    linked: connections.Connection,
    registry: flows.Registry,
    apply: Callable[[], None],
) -> None:
    location = make_location(fake, display_name="Scheduled")
    cache = connections.Cache(db, vault.load(settings), rps=0, retries=0)
    scheduler = schedule.Scheduler(
        db, sync.scheduled_jobs(db, cache, registry, settings), holder="test:1"
    )
    assert scheduler.tick() == 2  # the watcher and reconciliation, both due at once
    assert scheduler.tick() == 0
    apply()
    assert snapshot_locations(db)[location["id"]].name == "Scheduled"
    for name in (sync.watcher_job_name(linked.id), sync.reconcile_job_name(linked.id)):
        row = schedule_row(db, name)
        assert row.last_error is None and row.last_run_at is not None


# -- real processes ---------------------------------------------------------------------------


@pytest.mark.acceptance
@pytest.mark.postgres
def test_two_worker_processes_follow_locations_once(postgres_url: str, tmp_path: Path) -> None:
    _empty_postgres(postgres_url)
    master_key = Fernet.generate_key().decode()
    settings = Settings(database_url=postgres_url, master_key=master_key)
    db = Database(postgres_url)
    processes: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]

    def log(i: int) -> str:
        return logs[i].read_text(errors="replace")

    def running() -> None:
        for i, process in enumerate(processes):
            if process.poll() is not None:
                pytest.fail(f"worker {i} exited with {process.returncode}:\n{log(i)}")

    try:
        with run_fake_stripe(currency="eur", country="FR") as fake:
            with db.write() as tx:
                linked = connections.add(
                    tx,
                    vault.load(settings),
                    account=ACCOUNT,
                    secret_key=fake.secret_key,
                    webhook_secrets=[WEBHOOK_SECRET],
                    name="fleet",
                    api_base=fake.api_base,
                )
            env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOTS_")}
            env |= {
                "SNAPSHOTS_DATABASE_URL": postgres_url,
                "SNAPSHOTS_MASTER_KEY": master_key,
                "SNAPSHOTS_LOCATION_POLL_INTERVAL": "1",
                "SNAPSHOTS_RECONCILE_INTERVAL": "3600",
                "SNAPSHOTS_WORKER_IDLE": "0.05",
            }
            for path in logs:
                with path.open("wb") as sink:
                    processes.append(
                        subprocess.Popen(
                            [str(SNAPSHOTS), "worker"],
                            env=env,
                            cwd=tmp_path,
                            stdin=subprocess.DEVNULL,
                            stdout=sink,
                            stderr=subprocess.STDOUT,
                        )
                    )

            def events(location_id: str) -> list[str]:
                return [
                    item.event_type
                    for item in watcher_items(db)
                    if json.loads(item.payload)["data"]["object"]["id"] == location_id
                ]

            def follows(check: Callable[[], T]) -> T:
                def guarded() -> T:
                    running()
                    return check()

                return eventually(guarded, timeout=20, interval=0.1)

            location = make_location(fake, display_name="Fleet")

            def created() -> None:
                row = snapshot_locations(db).get(location["id"])
                assert row is not None and row.name == "Fleet" and row.currency == "eur"

            follows(created)
            assert events(location["id"]) == ["terminal.location.created"]

            fake.update_location(location["id"], display_name="Fleet 2")

            def renamed() -> None:
                assert snapshot_locations(db)[location["id"]].name == "Fleet 2"

            follows(renamed)
            fake.delete_location(location["id"])

            def archived() -> None:
                assert snapshot_locations(db)[location["id"]].archived is True

            follows(archived)

            # A few more polls by either process: still one event per change.
            seen = time.time()
            watcher_job = sync.watcher_job_name(linked.id)

            def polled_twice_more() -> None:
                assert schedule_row(db, watcher_job).last_run_at > seen + 1.5

            follows(polled_twice_more)
            assert events(location["id"]) == [
                "terminal.location.created",
                "terminal.location.updated",
                "terminal.location.deleted",
            ]
            with db.read() as conn:
                statuses = conn.execute(
                    sa.select(tables.inbox_items.c.status).where(
                        tables.inbox_items.c.source == "watcher"
                    )
                ).scalars()
                assert set(statuses) == {"done"}
            gets = [r for r in fake.requests() if r["path"] == "/v1/terminal/locations"]
            assert gets, "nobody polled"
            running()
            for process in processes:
                process.terminate()
            codes = [process.wait(timeout=30) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        db.dispose()
    assert codes == [0, 0]
    for i in range(2):
        text = log(i)
        assert "Traceback" not in text, text
