"""Webhook endpoints and deliveries through the API and the CLI (in this process): scopes,
the secret shown once, refused URLs, test sends to a real receiver on 127.0.0.1, recover."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from snapshots import connections
from snapshots.app import create_app
from snapshots.outbound import guard
from snapshots.settings import Settings
from tests.integration.helpers import CLIENT_IP, Cli, MakeKey, assert_error
from tests.support.receiver import Receiver

pytestmark = pytest.mark.acceptance  # a receiver in a thread


def _no_lookup(host: str, port: int) -> list[str]:
    raise guard.Blocked(f"cannot resolve {host}: no lookups in tests", kind="dns")


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """Endpoints may reach 127.0.0.1 (the receivers) and nothing else."""
    return settings.model_copy(update={"outbound_allow": "127.0.0.1/32"})


@pytest.fixture
def client(app_settings: Settings, connection: connections.Connection) -> Iterator[TestClient]:
    """The app with a resolver that never looks a name up."""
    app = create_app(app_settings, outbound=guard.Seams(resolver=_no_lookup))
    with TestClient(app, client=(CLIENT_IP, 50000)) as test_client:
        yield test_client


def test_endpoints_through_the_api(client: TestClient, make_key: MakeKey) -> None:
    writer = make_key("workflows.write").headers
    reader = make_key("workflows.readonly").headers
    other = make_key("contacts.readonly").headers
    with Receiver() as receiver:
        body = {"name": "crm", "url": receiver.url, "description": "the CRM"}
        assert_error(
            client.post("/v1/webhook-endpoints", json=body, headers=reader), 403, checks="envelope"
        )
        made = client.post("/v1/webhook-endpoints", json=body, headers=writer)
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        assert secret.startswith("whsec_") and made.json()["secrets"] == ["…" + secret[-4:]]
        receiver.secrets = [secret]
        assert_error(client.post("/v1/webhook-endpoints", json=body, headers=writer), 409)
        listed = client.get("/v1/webhook-endpoints", headers=reader).json()
        assert [e["name"] for e in listed["data"]] == ["crm"]
        assert "secret" not in listed["data"][0]
        assert_error(client.get("/v1/webhook-endpoints", headers=other), 403, checks="envelope")
        shown = client.get("/v1/webhook-endpoints/crm", headers=reader).json()
        assert shown["id"] == made.json()["id"]

        tested = client.post("/v1/webhook-endpoints/crm/test", headers=writer)
        assert tested.status_code == 200, tested.text
        assert tested.json()["status"] == "succeeded"
        assert receiver.received[0].verified_by == [0]
        delivery_id = tested.json()["id"]
        found = client.get(f"/v1/deliveries/{delivery_id}", headers=reader).json()
        assert found["attempt_log"][0]["status_code"] == 200
        assert found["attempt_log"][0]["address"] == "127.0.0.1"
        page = client.get("/v1/webhook-endpoints/crm/deliveries", headers=reader).json()
        assert [d["id"] for d in page["data"]] == [delivery_id]
        assert client.get("/v1/deliveries?status=succeeded", headers=reader).json()["data"]

        rotated = client.post(
            "/v1/webhook-endpoints/crm/rotate-secret", json={"overlap": "1h"}, headers=writer
        )
        assert rotated.status_code == 201 and len(rotated.json()["secrets"]) == 2
        disabled = client.post("/v1/webhook-endpoints/crm/disable", headers=writer).json()
        assert disabled["status"] == "disabled"
        assert_error(
            client.post("/v1/webhook-endpoints/crm/recover", json={"since": "2d"}, headers=writer),
            409,
        )
        client.post("/v1/webhook-endpoints/crm/enable", headers=writer)
        recovered = client.post(
            "/v1/webhook-endpoints/crm/recover", json={"since": "2d"}, headers=writer
        )
        assert recovered.json() == {"requeued": 0}
        removed = client.delete("/v1/webhook-endpoints/crm", headers=writer)
        assert removed.status_code == 200
        assert_error(client.get("/v1/webhook-endpoints/crm", headers=reader), 404)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://127.0.0.2/x",
        "http://unresolvable.example/x",
        "ftp://x.example/",
    ],
)
def test_refused_urls_are_400(client: TestClient, make_key: MakeKey, url: str) -> None:
    writer = make_key("workflows.write").headers
    answer = client.post("/v1/webhook-endpoints", json={"name": "x", "url": url}, headers=writer)
    assert_error(answer, 400)


def test_endpoints_through_the_cli(
    run: Cli, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("SNAPSHOTS_OUTBOUND_ALLOW", "127.0.0.1/32")
    monkeypatch.setenv("SNAPSHOTS_MASTER_KEY", settings.master_key or "")
    with Receiver() as receiver:
        made = run("endpoints", "create", "--name", "crm", "--url", receiver.url)
        assert made.code == 0, made.err
        secret = made.out.strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        receiver.secrets = [secret]
        tested = run("endpoints", "test", "crm")
        assert tested.code == 0, tested.out + tested.err
        assert "succeeded" in tested.out and "HTTP 200" in tested.out
        assert receiver.received[0].verified_by == [0]
        listed = run("endpoints", "list")
        assert "crm" in listed.out and secret not in listed.out
        deliveries = run("deliveries", "list", "--endpoint", "crm", "--json")
        assert deliveries.code == 0 and '"succeeded"' in deliveries.out
        bad = run("endpoints", "create", "--name", "bad", "--url", "http://10.0.0.5/")
        assert bad.code == 2 and bad.err.startswith("error: ")
        assert run("endpoints", "rotate-secret", "crm", "--overlap", "1h").code == 0
        assert run("endpoints", "disable", "crm").code == 0
        assert "disabled" in run("connections", "list").err
        assert run("endpoints", "enable", "crm").code == 0
        assert run("endpoints", "recover", "crm", "--since", "2d").code == 0
        assert run("endpoints", "remove", "crm").code == 0
