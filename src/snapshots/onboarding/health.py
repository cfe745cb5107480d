"""The connection check: does a connection still work, and if not, what to do.

It asks: does Stripe still take the key; does the managed webhook endpoint still exist, is it
`enabled`, does it post to the right URL and listen to every event type the flows need; do
webhooks arrive when Stripe's event list shows activity. Each problem is one line with its fix.
The result is kept on the connection (`connections list` shows it in one word) and a change of
state writes an audit entry. `snapshots connections check` runs it now; every worker runs it on
a schedule (`SNAPSHOTS_CONNECTION_CHECK_INTERVAL`), one process at a time per connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from snapshots import audit, connections, errors, flows, schedule, stripe_api, sync
from snapshots.connections import Connection
from snapshots.onboarding import endpoint
from snapshots.settings import Settings
from snapshots.store.db import Database
from snapshots.times import Timestamp
from snapshots.vault import Vault

ARRIVAL_GRACE = 600.0  # seconds Stripe may take to deliver an event before it counts as missed


class Problem(BaseModel):
    problem: str
    fix: str


class Health(BaseModel):
    """One connection's check: one word, the reason, and each problem with its fix."""

    connection_id: str
    health: Literal["healthy", "failing"]
    reason: str
    problems: list[Problem]
    checked_at: Timestamp


def _repair(connection: Connection) -> str:
    return f"run `snapshots connect stripe --repair --connection {connection.id}`"


def _key(client: stripe_api.Stripe, connection: Connection) -> list[Problem]:
    path = "/v1/invoices" if connection.off("customers") else "/v1/customers"
    try:
        client.get("checking the key", path, limit=1)
    except errors.StripeAuthError:
        return [
            Problem(
                problem="Stripe refuses the key (revoked, expired or rolled)",
                fix="make a new key in the Stripe dashboard and connect again: "
                "`snapshots connect stripe --secret-key ...`, then remove this connection",
            )
        ]
    except errors.StripeUnavailable as exc:
        return [
            Problem(
                problem=f"Stripe cannot be reached: {errors.describe(exc)}",
                fix="check this server's network; the check runs again on its schedule",
            )
        ]
    return []


def _endpoint(
    client: stripe_api.Stripe, connection: Connection, base: str | None, wanted: list[str]
) -> list[Problem]:
    assert connection.endpoint_id is not None
    found = endpoint.retrieve(client, connection.endpoint_id)
    if found is None:
        return [
            Problem(
                problem=f"the webhook endpoint {connection.endpoint_id} is gone from Stripe",
                fix=_repair(connection),
            )
        ]
    problems = []
    if found.get("status") != "enabled":
        problems.append(
            Problem(
                problem=f"Stripe has disabled the webhook endpoint {connection.endpoint_id} "
                "(after failed deliveries, or by hand)",
                fix="re-enable it in the Stripe dashboard (Developers > Webhooks), or "
                + _repair(connection),
            )
        )
    expected = connection.endpoint_url
    if base is not None:
        expected = endpoint.webhook_url(base, connection.id)
    if expected and found.get("url") != expected:
        problems.append(
            Problem(
                problem=f"the webhook endpoint posts to {found.get('url')}, not {expected}",
                fix=_repair(connection),
            )
        )
    have = set(found.get("enabled_events") or [])
    missing = [t for t in wanted if t not in have and "*" not in have]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        fix = (
            "the worker is sending the new list; if this stays, " + _repair(connection)
            if connection.endpoint_pending
            else _repair(connection)
        )
        problems.append(
            Problem(problem=f"the webhook endpoint does not listen to {shown}", fix=fix)
        )
    return problems


def _arrivals(
    db: Database, client: stripe_api.Stripe, connection: Connection, wanted: list[str], now: float
) -> list[Problem]:
    if connection.off("events") or not wanted:
        return []
    params: dict[str, object] = {"limit": 1}
    if len(wanted) <= 20:  # Stripe filters by at most 20 types
        params["types"] = wanted
    try:
        page = client.get("listing recent events", "/v1/events", **params)
    except errors.StripeError as exc:
        if isinstance(exc, errors.StripeAuthError | errors.StripeUnavailable):
            raise
        return []
    data = page.get("data") or []
    if not data:
        return []
    newest = float(data[0].get("created") or 0)
    return arrival_problems(sync.last_webhook_at(db, connection.id), newest, now=now)


def arrival_problems(
    last_webhook: float | None, newest_event: float, *, now: float
) -> list[Problem]:
    """A problem when Stripe lists an event (older than the grace a delivery may take) newer
    than the last webhook that arrived."""
    if now - newest_event < ARRIVAL_GRACE:
        return []
    if last_webhook is not None and last_webhook >= newest_event:
        return []
    since = "no webhook has ever arrived" if last_webhook is None else "no webhook arrived since"
    return [
        Problem(
            problem=f"Stripe lists events that never arrived as webhooks ({since} the newest, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(newest_event))})",
            fix="check that the endpoint is enabled in Stripe and that SNAPSHOTS_PUBLIC_URL "
            "reaches this server; `snapshots sync --reconcile` fetches what was missed",
        )
    ]


def check(
    db: Database,
    vault: Vault,
    connection: Connection,
    registry: flows.Registry,
    *,
    public_url: str | None = None,
    actor: str = "worker",
    now: float | None = None,
) -> Health:
    """Check one connection now, store the result, and audit a change of state."""
    now = time.time() if now is None else now
    with db.read() as tx:
        client = connections.stripe_client(tx, vault, connection, retries=1)
    wanted = endpoint.desired_events(registry)
    problems = _key(client, connection)
    if not problems:
        try:
            if connection.managed:
                problems += _endpoint(client, connection, public_url, wanted)
            problems += _arrivals(db, client, connection, wanted, now)
        except errors.StripeError as exc:
            problems.append(
                Problem(
                    problem=f"the check could not finish: {errors.describe(exc)}",
                    fix="the check runs again on its schedule",
                )
            )
    state: Literal["healthy", "failing"] = "failing" if problems else "healthy"
    reason = problems[0].problem if problems else _fine(connection)
    if len(problems) > 1:
        reason += f" (and {len(problems) - 1} more)"
    result = Health(
        connection_id=connection.id,
        health=state,
        reason=reason,
        problems=problems,
        checked_at=now,
    )
    stored = [p.model_dump() for p in problems]
    with db.write() as tx:
        before, before_problems = connections.set_health(tx, connection.id, state, stored, now)
        if before != state or before_problems != stored:
            audit.record(
                tx,
                actor=actor,
                action="connection.health_changed",
                target=connection.id,
                outcome="ok" if state == "healthy" else "failed",
                details={"old": before, "new": state, "problems": [p.problem for p in problems]},
            )
    return result


def _fine(connection: Connection) -> str:
    if connection.managed:
        return "the key works and the webhook endpoint is enabled and in step with the flows"
    return "the key works"


def reason(connection: Connection) -> str:
    """Why a connection is in its state, in a few words (for `connections list`)."""
    if connection.health is None:
        return "not checked yet (`snapshots connections check`)"
    if connection.health_problems:
        first = connection.health_problems[0]["problem"]
        more = len(connection.health_problems) - 1
        return first + (f" (and {more} more)" if more else "")
    return _fine(connection)


def scheduled_jobs(
    db: Database,
    vault: Vault,
    stripe: connections.Cache,
    live: Callable[[], flows.Registry],
    settings: Settings,
) -> Callable[[], list[schedule.Job]]:
    """The onboarding jobs of every connection: its check, and (while its managed endpoint's
    event list waits) sending that list to Stripe again."""

    def jobs() -> list[schedule.Job]:
        found = []
        for connection in stripe.all():

            def run_check(c: Connection = connection) -> object:
                return check(db, vault, c, live(), public_url=settings.public_url)

            def resend(c: Connection = connection) -> object:
                for result in endpoint.follow_flows(db, vault, live(), connection_id=c.id):
                    if not result.synced:
                        raise errors.RetryLater(result.error or "not sent")
                return None

            found.append(
                schedule.Job(
                    f"check:{connection.id}", settings.connection_check_interval, run_check
                )
            )
            if connection.endpoint_pending:
                found.append(
                    schedule.Job(f"endpoint:{connection.id}", endpoint.RETRY_INTERVAL, resend)
                )
        return found

    return jobs
