"""Configuration from `SNAPSHOTS_*` environment variables; CLI flags override them.

Nothing here is read at import time: `Settings()` reads the environment when it is built, and
tests build it from a dict (`Settings(database_url=...)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from snapshots import errors, times

DAY = 86400.0  # seconds


def _duration(value: Any, info: ValidationInfo) -> Any:
    """A duration as typed (`30d`, see `times`), or a number of seconds; empty is unset."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.replace(".", "", 1).isdigit():
            return float(text)
        name = f"SNAPSHOTS_{(info.field_name or '').upper()}"
        try:
            return times.parse_duration(text, name=name)
        except errors.BadRequest as exc:
            raise errors.ConfigError(str(exc)) from exc
    return value


Seconds = Annotated[float, BeforeValidator(_duration)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPSHOTS_", extra="ignore")

    database_url: str = "sqlite:///snapshots.db"
    master_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = None
    webhook_tolerance: int = Field(300, ge=1)  # seconds
    webhook_max_body: int = Field(1024 * 1024, ge=1024)  # bytes
    # Bounded HTTP (what `serve` accepts from anyone on the network).
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)  # a request's head: 431
    header_timeout: float = Field(10.0, gt=0)  # seconds to send a request's head, or closed
    body_timeout: float = Field(30.0, gt=0)  # seconds to send its body, or closed
    max_connections: int = Field(1000, ge=1)  # open at once; the excess is refused at once
    # Reverse proxies whose X-Forwarded-For is believed (CIDRs, comma-separated); none by default.
    trusted_proxies: str = ""
    worker_batch: int = Field(200, ge=1, le=1000)  # inbox items per claim (applied together)
    worker_idle: float = Field(0.2, gt=0)  # seconds between polls of an empty inbox
    # Seconds a woken worker that is keeping up lets items gather before it claims (worker.py).
    worker_gather: float = Field(0.05, ge=0, le=1.0)
    lease: float = Field(30.0, gt=0)  # seconds a claim is held before another worker may take it
    max_attempts: int = Field(10, ge=1)
    # `snapshots worker` answers /healthz and /readyz on this port (on SNAPSHOTS_HOST) when set.
    worker_health_port: int | None = Field(None, ge=1, le=65535)
    key_env: str = Field("live", pattern="^(live|test)$")
    # API requests per key and window, counted in the database (shared by every process).
    api_rate_limit: int = Field(100, ge=1)
    api_rate_window: int = Field(10, ge=1, le=3600)  # seconds
    # Issue 12: a fleet's shared counters in Redis instead of the database; serve's processes.
    redis_url: str | None = None
    processes: int | None = Field(None, ge=1, le=64)  # unset: app.processes decides
    # Pulling from Stripe (issue 3): the location watcher, reconciliation, the API budget.
    location_poll_interval: float = Field(300.0, gt=0)  # seconds between location polls
    reconcile_interval: float = Field(3600.0, gt=0)  # seconds between reconciliations
    reconcile_window: float = Field(72 * 3600.0, gt=0, le=30 * 86400.0)  # first look-back
    webhook_silence: float = Field(3600.0, gt=0)  # warn when no webhook came for this long
    # Stripe requests per second per connection and process; unset: 100 live, 25 test (the
    # limits Stripe documents). 0 turns the budget off (benchmarks against a local server).
    stripe_rps: float | None = Field(None, ge=0)
    stripe_retries: int = Field(5, ge=0, le=20)  # retries of an idempotent read
    # Onboarding (issue 9): seconds between the connection checks of each connection.
    connection_check_interval: float = Field(3600.0, gt=0)
    # The console (issue 10): a session ends this long after sign-in, or after this long idle
    # (seconds, or a duration: 12h).
    session_lifetime: Seconds = Field(12 * 3600.0, gt=0)
    session_idle: Seconds = Field(3600.0, gt=0)
    # Outbound workflows (issue 11).
    # CIDRs and host names an endpoint may reach although private or loopback (comma-separated).
    outbound_allow: str = ""
    outbound_timeout: float = Field(15.0, gt=0)  # seconds for an attempt's 2xx
    # Seconds before each attempt: the first now, then one after each failure; past the last: dead.
    outbound_retry_schedule: str = "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h"
    outbound_retry_jitter: float = Field(0.1, ge=0, le=1)  # +- this fraction of each wait
    outbound_concurrency: int = Field(10, ge=1, le=200)  # attempts a worker makes at once

    # Retention (issue 12): durations (`30d`, `52w`) or seconds; see retention.py.
    event_retention: Seconds = Field(30 * DAY, ge=3600.0)
    audit_retention: Annotated[float | None, BeforeValidator(_duration)] = Field(None, ge=365 * DAY)

    @property
    def base_url(self) -> str:
        """The public URL Stripe reaches us at (for printing webhook URLs)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for other databases or in-memory SQLite."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        path = self.database_url[len(prefix) :].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
