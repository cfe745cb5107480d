"""`GET /metrics`: webhooks by connection, type and outcome; API requests by route template;
the inbox's gauges (with the worker's lag); the worker's batches; and the Grafana dashboard in
docs/, every series of which the exposition has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EventFactory, sign
from tests.integration.helpers import MakeKey, Stripe, bearer, customer

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "gauge": ("",),
}


def scrape(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics: name -> labels -> value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def value(
    found: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    want = tuple(sorted(labels.items()))
    return sum(v for k, v in found.get(name, {}).items() if set(want) <= set(k))


def test_webhooks_and_api_requests_are_counted_by_bounded_labels(
    client: TestClient, stripe: Stripe, make_key: MakeKey, event_factory: EventFactory
) -> None:
    before = scrape(client)
    event = event_factory("customer.created", customer(1))
    stripe.send(event)
    stripe.send(event)  # a redelivery
    stripe.send(event_factory("customer.source.expiring", customer(2)))  # no flow wants it
    made_up = event_factory("made.up", customer(3))
    payload = json.dumps(made_up).encode()
    client.post(
        f"/webhooks/stripe/{stripe.connection.id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload)},
    )
    bad = client.post(
        f"/webhooks/stripe/{stripe.connection.id}",
        content=payload,
        headers={"Stripe-Signature": "t=1,v1=00"},
    )
    assert bad.status_code == 400
    assert client.post("/webhooks/stripe/conn_nobody", content=b"{}").status_code == 404
    secret = make_key("contacts.readonly").secret
    for n in range(3):
        client.get(f"/v1/customers/con_missing{n}", headers=bearer(secret))
    client.get("/v1/customers", headers=bearer(secret))
    client.get("/no/such/path")

    found = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    conn = stripe.connection.id
    assert (
        delta(
            "snapshots_webhooks_total", connection=conn, type="customer.created", outcome="stored"
        )
        == 1
    )
    assert (
        delta(
            "snapshots_webhooks_total",
            connection=conn,
            type="customer.created",
            outcome="duplicate",
        )
        == 1
    )
    assert delta("snapshots_webhooks_total", connection=conn, outcome="ignored") >= 1
    assert delta("snapshots_webhooks_total", connection=conn, type="other") == 1  # made.up
    assert delta("snapshots_webhooks_total", connection=conn, outcome="rejected") == 1
    assert delta("snapshots_webhooks_total", connection="unknown", outcome="rejected") == 1
    assert delta("snapshots_webhook_seconds_count") == 6
    # Route templates, never paths: three ids are one series.
    one = delta(
        "snapshots_api_requests_total",
        route="/v1/customers/{contact_id}",
        method="GET",
        status="404",
    )
    assert one == 3
    assert delta("snapshots_api_requests_total", route="/v1/customers", status="200") == 1
    assert delta("snapshots_api_requests_total", route="unmatched", status="404") == 1
    webhook = "/webhooks/stripe/{connection_id}"  # deliveries, served around the routing
    assert delta("snapshots_api_requests_total", route=webhook, method="POST", status="200") == 4
    assert delta("snapshots_api_requests_total", route=webhook, status="400") == 1
    assert delta("snapshots_api_requests_total", route=webhook, status="404") == 1
    routes = {dict(k).get("route") for k in found["snapshots_api_requests_total"]}
    assert not any(r and "con_missing" in r for r in routes)
    assert delta("snapshots_api_request_seconds_count", route="/v1/customers") == 1

    # The inbox as it stands, and how long its oldest due item has waited.
    assert value(found, "snapshots_inbox_items", status="pending") == 1  # customer.created
    assert value(found, "snapshots_inbox_lag_seconds") >= 0
    stripe.drain()
    after = scrape(client)
    assert value(after, "snapshots_inbox_items", status="pending") == 0
    assert value(after, "snapshots_inbox_lag_seconds") == 0


def test_a_worker_counts_its_batches(
    client: TestClient, stripe: Stripe, event_factory: EventFactory
) -> None:
    before = scrape(client)
    for n in range(5):
        stripe.send(event_factory("customer.created", customer(n)))
    stripe.send(event_factory("customer.source.expiring", customer(9)))
    stripe.drain()
    found = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    assert delta("snapshots_worker_items_total", status="done") == 5
    finished = sum(
        delta("snapshots_worker_items_total", status=s) for s in ("done", "ignored", "dead")
    )
    # Every claimed item is counted when its batch ends (done, ignored or dead here).
    assert delta("snapshots_worker_batch_size_sum") == finished
    batches = delta("snapshots_worker_batch_size_count")
    assert batches >= 1
    assert delta("snapshots_worker_apply_seconds_count") == batches


def test_every_series_of_the_dashboard_exists(client: TestClient) -> None:
    answer = client.get("/metrics").text
    families = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^# TYPE (\S+) (\S+)$", answer, re.MULTILINE)
    }
    exposed = {
        name.removesuffix("_total") + suffix
        for name, kind in families.items()
        if name.startswith("snapshots_")
        for suffix in SUFFIXES[kind]
    }
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = {n for e in expressions for n in re.findall(r"\bsnapshots_[a-z_]+", e)}
    assert named, "the dashboard names no metric"
    assert named <= exposed, f"not exposed: {sorted(named - exposed)}"
    # And every family Snapshots exposes has a panel.
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in named}
    assert {f.removesuffix("_total") for f in families if f.startswith("snapshots_")} <= shown
