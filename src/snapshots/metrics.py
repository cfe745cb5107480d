"""Prometheus metrics (`GET /metrics`): what every process counts, shared across processes.

`serve` (its N processes and its embedded worker) and `worker` count into files in
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode; `setup` chooses and empties
the directory before any process counts), so one scrape of any `serve` process shows the
whole host. Labels are bounded: connections (what the deployment holds), Stripe's event types
(others count as `other`), route templates (never paths), statuses and outcomes. Gauges of the
inbox (items by status, the age of the oldest pending item) are read from the database at
scrape time, so they are the fleet's, not one process's.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import os
import shutil
import tempfile
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from snapshots import inbox, samples
from snapshots.outbound import delivery, waits
from snapshots.store import tables
from snapshots.store.db import Database

T = tables.inbox_items
STATUSES = ("done", "ignored", "failed", "dead")  # of a finished batch's items
DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)  # seconds
APPLY = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)  # items


class _Metrics:
    """The metric objects, made on first use: after `setup`, so they count into its files."""

    def __init__(self) -> None:
        self.webhooks = Counter(
            "snapshots_webhooks",
            "Webhook deliveries by connection, event type and outcome (stored, duplicate, "
            "rejected, unavailable)",
            ["connection", "type", "outcome"],
        )
        self.webhook_seconds = Histogram(
            "snapshots_webhook_seconds",
            "Time to answer a webhook delivery",
            ["outcome"],
            buckets=LATENCY,
        )
        self.requests = Counter(
            "snapshots_api_requests",
            "HTTP requests (API, console, health) by route template, method and status",
            ["route", "method", "status"],
        )
        self.request_seconds = Histogram(
            "snapshots_api_request_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=LATENCY,
        )
        self.items = Counter(
            "snapshots_worker_items", "Inbox items a worker finished, by status", ["status"]
        )
        self.batch_size = Histogram(
            "snapshots_worker_batch_size", "Inbox items per claimed batch", buckets=SIZES
        )
        self.apply_seconds = Histogram(
            "snapshots_worker_apply_seconds", "Time to apply one claimed batch", buckets=APPLY
        )
        self.stripe = Counter(
            "snapshots_stripe_requests",
            "Requests to Stripe by outcome (ok, rate_limited (429), client_error, "
            "server_error, network, auth)",
            ["outcome"],
        )
        self.jobs = Counter(
            "snapshots_jobs",
            "Scheduled runs by job (watcher: location polls, reconcile: sync with "
            "/v1/events), connection and outcome (ok, failed)",
            ["job", "connection", "outcome"],
        )
        self.connection_checks = Counter(
            "snapshots_connection_checks",
            "Checks of a Stripe key (connect, connections check) by outcome",
            ["outcome"],
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus-client checks the labels and takes
        a lock on every call, and a webhook counts into four children."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


_made: _Metrics | None = None
_lock = threading.Lock()


def _metrics() -> _Metrics:
    global _made
    if _made is None:
        with _lock:
            if _made is None:
                disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created`: unread
                _made = _Metrics()
    return _made


def setup(directory: str | None = None) -> Path:
    """Count into files shared by this process and the ones it starts (they inherit the
    environment): the directory named by PROMETHEUS_MULTIPROC_DIR, else a new temporary one.
    Called by `serve` and `worker` before they count anything; it empties the directory (the
    files of an earlier run would add to this one's)."""
    chosen = directory or os.environ.get(DIRECTORY)
    if chosen is None:
        chosen = tempfile.mkdtemp(prefix="snapshots-metrics-")
        atexit.register(shutil.rmtree, chosen, ignore_errors=True)
    path = Path(chosen)
    if path.exists():
        for child in path.iterdir():
            if child.suffix == ".db":
                child.unlink(missing_ok=True)
            elif child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[DIRECTORY] = str(path)
    # Metrics count through values.ValueClass, chosen when prometheus_client was imported.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def event_type(name: str) -> str:
    """An event type as a label: Stripe's and Snapshots' own, anything else `other`."""
    return name if name in _known_types() else "other"


_KNOWN: frozenset[str] = frozenset()


def _known_types() -> frozenset[str]:
    global _KNOWN
    if not _KNOWN:
        _KNOWN = frozenset(samples.event_objects())
    return _KNOWN


class _Turn:
    """Counts and timings of answers, held in memory and written into prometheus-client's
    values once per turn of the event loop that answered them (at once where no loop runs).

    Each value written takes a lock and a getpid() (multiprocess mode), and every webhook
    delivery counts into six values; the deliveries of one group commit are answered in the
    same turn and mostly share their labels, so each value is written once for all of them.
    A scrape of this process writes what is held first; another process's scrape sees it a
    turn of this loop later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a scrape writes from a thread of the pool
        self._counts: dict[Any, int] = {}
        self._timings: dict[Any, list[float]] = {}
        self._due = False

    def add(self, counter: Any, histogram: Any, seconds: float) -> None:
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0) + 1
            found = self._timings.get(histogram)
            if found is None:
                self._timings[histogram] = [seconds]
            else:
                found.append(seconds)
            if self._due:
                return
            self._due = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread
            self.write()
        else:
            loop.call_soon(self.write)

    def write(self) -> None:
        with self._lock:
            counts, timings = self._counts, self._timings
            self._counts, self._timings, self._due = {}, {}, False
        for counter, count in counts.items():
            counter.inc(count)
        for histogram, seconds in timings.items():
            observe(histogram, seconds)


def observe(histogram: Any, amounts: list[float]) -> None:
    """What `histogram.observe(a)` for each of `amounts` does (its sum and one bucket each),
    one write per value touched: its sum once, each bucket by how many fell in it."""
    if len(amounts) == 1:
        histogram.observe(amounts[0])
        return
    bounds = histogram._upper_bounds  # the last is +Inf: every amount falls in one
    histogram._sum.inc(sum(amounts))
    for index, count in Tally(bisect.bisect_left(bounds, a) for a in amounts).items():
        histogram._buckets[index].inc(count)  # the first bucket whose bound is >= the amount


_turn = _Turn()


def webhook(connection: str, type_: str, outcome: str, seconds: float) -> None:
    found = _metrics()
    _turn.add(
        found.child(found.webhooks, connection, type_, outcome),
        found.child(found.webhook_seconds, outcome),
        seconds,
    )


def request(route: str, method: str, status: int, seconds: float) -> None:
    found = _metrics()
    _turn.add(
        found.child(found.requests, route, method, str(status)),
        found.child(found.request_seconds, route),
        seconds,
    )


def stripe_request(outcome: str) -> None:
    _metrics().stripe.labels(outcome).inc()


def job(name: str, outcome: str) -> None:
    """A scheduled job's run (`watcher:<connection>`, `reconcile:<connection>`)."""
    kind, _, connection = name.partition(":")
    _metrics().jobs.labels(kind, connection, outcome).inc()


def connection_check(outcome: str) -> None:
    _metrics().connection_checks.labels(outcome).inc()


class _Counts(Protocol):
    done: int
    ignored: int
    failed: int
    dead: int


@contextmanager
def batch(size: int, stats: _Counts) -> Iterator[None]:
    """Time a worker's batch of `size` items and count how `stats` moved while it ran."""
    before = (stats.done, stats.ignored, stats.failed, stats.dead)
    started = time.perf_counter()
    try:
        yield
    finally:
        found = _metrics()
        found.apply_seconds.observe(time.perf_counter() - started)
        found.batch_size.observe(size)
        after = (stats.done, stats.ignored, stats.failed, stats.dead)
        for status, old, new in zip(STATUSES, before, after, strict=True):
            if new > old:
                found.items.labels(status).inc(new - old)


class _Inbox:
    """The inbox's gauges, read at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        items = GaugeMetricFamily(
            "snapshots_inbox_items", "Inbox items by status", labels=["status"]
        )
        lag = GaugeMetricFamily(
            "snapshots_inbox_lag_seconds",
            "Age of the oldest pending inbox item (0 when none waits)",
        )
        now = time.time()
        with self.db.read() as tx:
            found = inbox.counts(tx)
            # Index-only ((status, run_after)): a new item is due when it arrives.
            oldest = tx.execute(
                sa.select(sa.func.min(T.c.run_after)).where(
                    T.c.status == "pending", T.c.run_after <= now
                )
            ).scalar_one_or_none()
        for status, count in found.items():
            items.add_metric([status], count)
        lag.add_metric([], 0.0 if oldest is None else max(0.0, now - float(oldest)))
        yield items
        yield lag


class _ThisProcess:
    """This process's own counters (no `setup`: tests, a one-process `serve`)."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


class _Outbound:
    """Outbound deliveries and waits, read from the database (the same in every process)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Any:
        with self.db.read() as tx:
            found = delivery.figures(tx)
            pending = waits.figures(tx)
        attempts = CounterMetricFamily(
            "snapshots_delivery_attempts",
            "Delivery attempts by outcome and error kind",
            labels=["outcome", "error_kind"],
        )
        for (outcome, kind), count in sorted(found.attempts.items()):
            attempts.add_metric([outcome, kind], count)
        yield attempts
        statuses = GaugeMetricFamily(
            "snapshots_deliveries", "Deliveries by status", labels=["status"]
        )
        for status, count in found.statuses.items():
            statuses.add_metric([status], count)
        yield statuses
        yield GaugeMetricFamily(
            "snapshots_deliveries_due", "Deliveries due to be sent now", value=found.due
        )
        yield GaugeMetricFamily(
            "snapshots_deliveries_oldest_due_age_seconds",
            "How long the oldest due delivery has been due",
            value=found.oldest_due_age,
        )
        yield SummaryMetricFamily(
            "snapshots_delivery_success_seconds",
            "Time from a message to its successful attempt",
            count_value=found.successes,
            sum_value=found.success_latency_sum,
        )
        yield GaugeMetricFamily(
            "snapshots_webhook_endpoints_disabled",
            "Webhook endpoints disabled (their deliveries are held)",
            value=found.endpoints_disabled,
        )
        yield GaugeMetricFamily("snapshots_waits_due", "Waits due now", value=pending.due)
        yield GaugeMetricFamily(
            "snapshots_waits_lag_seconds",
            "How long the oldest due wait has been due",
            value=pending.lag,
        )


def exposition(db: Database) -> bytes:
    """Every process's counters (the multiprocess files when `setup` ran, else this
    process's) and the inbox's gauges, in Prometheus' text format."""
    _turn.write()  # what this process's loop holds for its next turn
    registry = CollectorRegistry()
    if os.environ.get(DIRECTORY):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(_Inbox(db))
    registry.register(_Outbound(db))
    return generate_latest(registry)
