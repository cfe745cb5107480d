"""The pure parts of onboarding: the event list a managed endpoint gets, the public URL
check, the webhook-arrival rule and what a missing capability turns off."""

from __future__ import annotations

import pytest

from snapshots import errors, flowfile
from snapshots.onboarding import capabilities, endpoint, health


def _registry(*triggers: str) -> object:
    lines = ["flows:"]
    for i, trigger in enumerate(triggers):
        lines += [
            f"  - name: f{i}",
            f"    trigger: '{trigger}'",
            "    action: add_tag",
            "    options: {tags: [x]}",
            "    fields: {stripe_customer_id: customer}",
        ]
    return flowfile.parse("\n".join(lines) + "\n", "test.yaml")


def test_desired_events_expand_wildcards_and_leave_out_synthetic_types() -> None:
    registry = flowfile.parse(
        "flows:\n"
        "  - name: contacts\n"
        "    trigger: ['customer.*', terminal.location.updated]\n"
        "    action: upsert_contact\n"
        "    fields: {stripe_customer_id: id}\n",
        "test.yaml",
    )
    found = endpoint.desired_events(registry)
    assert "customer.created" in found and "customer.deleted" in found
    assert "customer.subscription.created" in found  # `*` spans dots, as fnmatch does
    assert "customer.synced" not in found  # made by a backfill
    assert "terminal.location.updated" not in found  # made by the watcher
    assert "*" not in "".join(found)
    assert found == sorted(found)


def test_the_prebuilt_flows_want_no_wildcard() -> None:
    found = endpoint.desired_events(flowfile.parse(flowfile.default_text(), "prebuilt"))
    assert "invoice.paid" in found and "customer.created" in found
    assert all("*" not in t for t in found)


PUBLIC_URLS = [
    pytest.param("https://snapshots.example.com/", None, "https://snapshots.example.com", id="ok"),
    pytest.param(
        "http://127.0.0.1:8000",
        "http://127.0.0.1:1234",
        "http://127.0.0.1:8000",
        id="loopback-with-a-local-stripe",
    ),
    pytest.param(
        "http://localhost:8000",
        "http://localhost:1",
        "http://localhost:8000",
        id="localhost-with-a-local-stripe",
    ),
]


@pytest.mark.parametrize(("url", "api_base", "expected"), PUBLIC_URLS)
def test_public_base_accepts(url: str, api_base: str | None, expected: str) -> None:
    assert endpoint.public_base(url, api_base=api_base) == expected


REFUSED_URLS = [
    pytest.param(None, None, "public_url_missing", id="unset"),
    pytest.param("", None, "public_url_missing", id="empty"),
    pytest.param("snapshots.example.com", None, "public_url_invalid", id="no-scheme"),
    pytest.param("https://", None, "public_url_invalid", id="no-host"),
    pytest.param("https://x.example/?a=1", None, "public_url_invalid", id="query"),
    pytest.param("http://[::1", None, "public_url_invalid", id="broken-ipv6"),
    pytest.param("http://127.0.0.1:8000", None, "public_url_private", id="loopback"),
    pytest.param("http://[::1]:8000", None, "public_url_private", id="loopback-v6"),
    pytest.param("http://192.168.1.10", None, "public_url_private", id="private"),
    pytest.param("http://169.254.1.1", None, "public_url_private", id="link-local"),
    pytest.param("http://box.local", None, "public_url_private", id="mdns-name"),
    pytest.param(
        "http://localhost",
        "https://api.stripe.com",
        "public_url_private",
        id="localhost-with-real-stripe",
    ),
]


@pytest.mark.parametrize(("url", "api_base", "code"), REFUSED_URLS)
def test_public_base_refuses_with_one_clear_line(
    url: str | None, api_base: str | None, code: str
) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        endpoint.public_base(url, api_base=api_base)
    assert caught.value.code == code
    assert "\n" not in caught.value.message
    assert "SNAPSHOTS_PUBLIC_URL" in caught.value.message


NOW = 1_800_000_000.0
ARRIVALS = [
    pytest.param(None, NOW - 3600, 1, id="never-a-webhook"),
    pytest.param(NOW - 7200, NOW - 3600, 1, id="none-since-the-newest-event"),
    pytest.param(NOW - 3000, NOW - 3600, 0, id="arrived-after-the-newest-event"),
    pytest.param(None, NOW - 60, 0, id="too-recent-to-tell"),
]


@pytest.mark.parametrize(("last_webhook", "newest", "problems"), ARRIVALS)
def test_arrival_problems(last_webhook: float | None, newest: float, problems: int) -> None:
    found = health.arrival_problems(last_webhook, newest, now=NOW)
    assert len(found) == problems
    for problem in found:
        assert "sync --reconcile" in problem.fix


def test_off_names_what_a_missing_capability_turns_off() -> None:
    found = [
        capabilities.Capability(name="customers", label="Customers", allowed=True),
        capabilities.Capability(
            name="terminal_locations",
            label="Terminal locations",
            allowed=False,
            consequence="the location watcher is off for this connection",
        ),
    ]
    assert capabilities.off(found, "customers") is None
    assert capabilities.off(found, "terminal_locations") == (
        "Terminal locations: not allowed by this key: the location watcher is off for this "
        "connection"
    )
    assert capabilities.off(None, "terminal_locations") is None  # never probed: as before
    capabilities.require_enough(found)
    with pytest.raises(errors.BadRequest, match="neither customers nor invoices"):
        capabilities.require_enough(found[1:])
