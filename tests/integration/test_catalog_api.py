"""The operations catalog (`GET /v1/catalog`, `snapshots catalog --json`) and the flows
endpoints (`/v1/flows`, `/v1/flows/versions`, `POST /v1/flows`, `POST /v1/flows/rollback`),
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import textwrap
from importlib import resources
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from snapshots import actions, catalog, cli, flowfile, flows, keys, revisions, samples
from snapshots.store import tables
from snapshots.store.db import Database
from tests.integration.helpers import MakeKey, assert_error

STRIPE_TYPES = {
    entry["type"]
    for entry in json.loads(
        resources.files("snapshots").joinpath("data/event-types.json").read_text()
    )
}
SYNTHETIC = {
    "terminal.location.created",
    "terminal.location.updated",
    "terminal.location.deleted",
    "customer.synced",
    "invoice.synced",
}
SCOPES = {
    "upsert_contact": ["contacts.write"],
    "archive_contact": ["contacts.write"],
    "add_tag": ["contacts.write"],
    "remove_tag": ["contacts.write"],
    "log_event": ["contacts.write"],
    "set_fields": ["contacts.write", "saas/location.write"],
    "log_invoice": ["invoices.write"],
    "update_payment_status": ["invoices.write"],
    "archive_invoice": ["invoices.write"],
    "upsert_location": ["saas/location.write"],
    "archive_location": ["saas/location.write"],
    "send_webhook": ["workflows.write"],
}
CUSTOM = textwrap.dedent(
    """\
    flows:
      - name: people
        trigger: [customer.created, customer.updated]
        action: upsert_contact
        fields:
          stripe_customer_id: id
          name: upper(name)
    """
)
BAD = textwrap.dedent(
    """\
    flows:
      - name: one
        trigger: customer.created
        action: upsert_kontakt
      - name: two
        trigger: customer.nothing
        action: upsert_contact
        fields: {stripe_customer_id: id}
    """
)


def conforms(value: Any, schema: dict[str, Any], components: dict[str, Any], path: str) -> None:
    """Check `value` against an OpenAPI (JSON Schema) subschema: $ref, anyOf, types, required
    and declared properties (no undocumented keys), items, additionalProperties."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        conforms(value, components[name], components, path)
        return
    if "anyOf" in schema:
        failures = []
        for option in schema["anyOf"]:
            try:
                conforms(value, option, components, path)
                return
            except AssertionError as exc:
                failures.append(str(exc))
        raise AssertionError(f"{path}: matches none of anyOf: {failures}")
    kind = schema.get("type")
    python: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None:
        assert isinstance(value, python[kind]), f"{path}: {value!r} is not {kind}"
        if kind in ("integer", "number"):
            assert not isinstance(value, bool), f"{path}: {value!r} is a boolean"
    if kind == "object":
        properties = schema.get("properties", {})
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{path}: missing {sorted(missing)}"
        if properties:
            extra = set(value) - set(properties)
            assert not extra, f"{path}: undocumented {sorted(extra)}"
        for key, item in value.items():
            sub = properties.get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                conforms(item, sub, components, f"{path}.{key}")
    if kind == "array" and "items" in schema:
        for index, item in enumerate(value):
            conforms(item, schema["items"], components, f"{path}[{index}]")


def response_schema(document: dict[str, Any], method: str, path: str, status: str) -> Any:
    operation = document["paths"][path][method]
    return operation["responses"][status]["content"]["application/json"]["schema"]


# The catalog.


def test_catalog(
    client: TestClient,
    make_key: MakeKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    headers = make_key("workflows.readonly").headers
    response = client.get("/v1/catalog", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()

    triggers = body["triggers"]
    assert len(STRIPE_TYPES) == 265
    assert len(triggers) == 270 == len(samples.event_objects()) == len(STRIPE_TYPES) + 5
    types = [t["type"] for t in triggers]
    assert types == sorted(types)
    assert set(types) == STRIPE_TYPES | SYNTHETIC
    assert {t["type"] for t in triggers if t["synthetic"]} == SYNTHETIC
    assert body["counts"] == {
        "triggers": 270,
        "stripe_triggers": 265,
        "synthetic_triggers": 5,
        "actions": len(actions.ACTIONS),
    }
    objects = samples.event_objects()
    for trigger in triggers:
        assert set(trigger) == {"type", "object", "description", "synthetic"}
        assert trigger["object"] == objects[trigger["type"]]
        assert trigger["description"].endswith(".")
    by_type = {t["type"]: t for t in triggers}
    assert by_type["customer.created"]["description"] == "A customer was created."
    assert "backfill" in by_type["invoice.synced"]["description"]
    assert by_type["terminal.location.deleted"]["object"] == "terminal.location"

    listed = {a["name"]: a for a in body["actions"]}
    assert list(listed) == sorted(actions.ACTIONS)
    assert {name: a["scopes"] for name, a in listed.items()} == SCOPES
    assert all(set(a["scopes"]) <= set(keys.SCOPES) for a in listed.values())
    for name, action in actions.ACTIONS.items():
        shown = listed[name]
        assert shown["targets"] == sorted(action.targets)
        assert shown["options"] == list(action.options)
        assert shown["required"] == list(action.required)
        assert shown["description"] == action.description
        assert shown["records"][0] == action.record
    assert listed["set_fields"]["records"] == ["contact", "location"]
    assert listed["upsert_contact"]["nested_targets"] == ["address.*", "custom.*", "metadata.*"]
    assert listed["add_tag"]["required"] == ["tags"]
    assert listed["log_event"]["options"] == ["type"]

    document = client.get("/openapi.json").json()
    schema = response_schema(document, "get", "/v1/catalog", "200")
    conforms(body, schema, document["components"]["schemas"], "catalog")

    # The CLI prints the same catalog.
    capsys.readouterr()
    cli.main(["catalog", "--json"])
    assert json.loads(capsys.readouterr().out) == body
    cli.main(["catalog"])
    text = " ".join(capsys.readouterr().out.split())
    assert "270 triggers (265 Stripe event types and 5 made by Snapshots" in text


def test_catalog_needs_workflows_readonly(client: TestClient, make_key: MakeKey) -> None:
    headers = make_key("contacts.readonly", "workflows.write").headers
    error = assert_error(client.get("/v1/catalog", headers=headers), 403, checks="status")
    assert "workflows.readonly" in error["message"]
    assert client.get("/v1/catalog").status_code == 401
    admin = make_key("admin").headers
    assert client.get("/v1/catalog", headers=admin).status_code == 200


def test_every_trigger_in_the_catalog_can_start_a_flow() -> None:
    """One flow per trigger, each with a filter checked on a sample event of its type."""
    triggers = [t["type"] for t in catalog.catalog().model_dump()["triggers"]]
    lines = ["flows:"]
    for index, event_type in enumerate(triggers):
        lines += [
            f"  - name: flow-{index}",
            f"    trigger: [{event_type}]",
            "    filter: \"type(@) == 'object' && $event.type == '" + event_type + "'\"",
            "    action: log_event",
            "    fields: {stripe_customer_id: \"default(customer, 'cus_x')\", title: id}",
        ]
    checked = flowfile.check("\n".join(lines) + "\n", "all.yaml")
    assert checked.problems == []
    assert checked.registry is not None
    assert len(checked.registry.flows) == 270
    for index, event_type in enumerate(triggers):
        assert [f.name for f in checked.registry.for_type(event_type)] == [f"flow-{index}"]
    # A type outside the catalog is refused.
    bad = flowfile.check(
        "flows:\n  - name: x\n    trigger: [payout.exploded]\n    action: log_event\n", "x.yaml"
    )
    assert [str(p) for p in bad.problems] == [
        "x.yaml:3: flow 'x': trigger: 'payout.exploded' matches no Stripe event type"
    ]


# The flows endpoints.


def current(db: Database) -> flows.Registry:
    with db.read() as tx:
        return revisions.current(tx)


def current_version(db: Database) -> int:
    with db.read() as tx:
        return revisions.current_version(tx)


def flow_audit(db: Database) -> list[Any]:
    t = tables.audit_entries
    with db.read() as conn:
        return list(
            conn.execute(sa.select(t).where(t.c.action.like("flows.%")).order_by(t.c.id)).all()
        )


def test_get_flows_and_versions(db: Database, client: TestClient, make_key: MakeKey) -> None:
    headers = make_key("workflows.readonly").headers
    current = client.get("/v1/flows", headers=headers)
    assert current.status_code == 200, current.text
    assert current.json() == {
        "version": 0,
        "actor": "snapshots",
        "comment": revisions.PREBUILT,
        "created_at": None,
        "text": flowfile.default_text(),
    }
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester", comment="mine")
    current = client.get("/v1/flows", headers=headers).json()
    assert (current["version"], current["actor"], current["text"]) == (1, "tester", CUSTOM)

    listed = client.get("/v1/flows/versions", headers=headers).json()
    assert listed["has_more"] is False
    assert [(v["version"], v["comment"]) for v in listed["data"]] == [
        (1, "mine"),
        (0, revisions.PREBUILT),
    ]
    assert all(v.get("text") is None for v in listed["data"])
    with_text = client.get(
        "/v1/flows/versions", params={"with_text": "true"}, headers=headers
    ).json()
    assert [v["text"] for v in with_text["data"]] == [CUSTOM, flowfile.default_text()]

    document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    conforms(current, response_schema(document, "get", "/v1/flows", "200"), components, "flows")
    schema = response_schema(document, "get", "/v1/flows/versions", "200")
    conforms(with_text, schema, components, "versions")

    other = make_key("contacts.readonly").headers
    for path in ("/v1/flows", "/v1/flows/versions"):
        assert (
            "workflows.readonly"
            in assert_error(client.get(path, headers=other), 403, checks="status")["message"]
        )


def test_post_flows_imports_a_new_version(
    db: Database, client: TestClient, make_key: MakeKey
) -> None:
    key = make_key("workflows.write")
    key_id, headers = key.id, key.headers
    response = client.post(
        "/v1/flows", json={"text": CUSTOM, "comment": "via API"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["actor"] == f"key:{key_id}"
    assert (body["comment"], body["text"]) == ("via API", CUSTOM)
    assert current(db).version == 1
    (entry,) = flow_audit(db)
    assert (entry.actor, entry.action) == (f"key:{key_id}", "flows.imported")
    assert entry.details == {"old_version": 0, "new_version": 1, "comment": "via API"}
    # The flows in force are what a reader sees next (workflows.write alone does not read).
    reader = make_key("workflows.readonly").headers
    assert client.get("/v1/flows", headers=reader).json()["version"] == 1


def test_post_flows_refuses_a_bad_file_and_changes_nothing(
    db: Database, client: TestClient, make_key: MakeKey
) -> None:
    headers = make_key("workflows.write").headers
    error = assert_error(
        client.post("/v1/flows", json={"text": BAD}, headers=headers),
        400,
        "invalid_flows",
        checks="status",
    )
    assert "flows file:4: flow 'one': action: unknown action 'upsert_kontakt'" in error["message"]
    assert "flows file:6: flow 'two': trigger: 'customer.nothing' matches no" in error["message"]
    not_yaml = client.post("/v1/flows", json={"text": "flows: ["}, headers=headers)
    assert (
        "not valid YAML" in assert_error(not_yaml, 400, "invalid_flows", checks="status")["message"]
    )
    assert current_version(db) == 0
    assert flow_audit(db) == []


def test_post_flows_needs_workflows_write(
    db: Database, client: TestClient, make_key: MakeKey
) -> None:
    readonly = make_key("workflows.readonly").headers
    for path, body in (("/v1/flows", {"text": CUSTOM}), ("/v1/flows/rollback", {"version": 0})):
        error = assert_error(client.post(path, json=body, headers=readonly), 403, checks="status")
        assert "workflows.write" in error["message"]
        assert client.post(path, json=body).status_code == 401
    assert current_version(db) == 0
    assert flow_audit(db) == []


def test_post_rollback(db: Database, client: TestClient, make_key: MakeKey) -> None:
    key = make_key("workflows.write")
    key_id, headers = key.id, key.headers
    client.post("/v1/flows", json={"text": CUSTOM}, headers=headers)
    response = client.post("/v1/flows/rollback", json={"version": 0}, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 2
    assert body["text"] == flowfile.default_text()
    assert body["comment"] == "rollback to version 0"
    assert body["actor"] == f"key:{key_id}"
    assert current(db).version == 2
    entry = flow_audit(db)[-1]
    assert (entry.actor, entry.action) == (f"key:{key_id}", "flows.rolled_back")
    assert (entry.details["old_version"], entry.details["new_version"]) == (1, 2)

    missing = client.post("/v1/flows/rollback", json={"version": 9}, headers=headers)
    assert (
        "no flows version 9"
        in assert_error(missing, 404, "resource_missing", checks="status")["message"]
    )
    negative = client.post("/v1/flows/rollback", json={"version": -1}, headers=headers)
    assert 400 <= negative.status_code < 500
    assert current_version(db) == 2
    assert len(flow_audit(db)) == 2


def test_rollback_to_a_version_that_no_longer_passes_the_checks(
    db: Database, client: TestClient, make_key: MakeKey
) -> None:
    # A version stored by an older Snapshots, naming an action this one no longer has.
    with db.write() as conn:
        conn.execute(
            tables.flow_versions.insert().values(
                version=1,
                text=BAD,
                actor="old",
                comment=None,
                created_at=1.0,
            )
        )
    revisions.import_text(db, CUSTOM, where="custom.yaml", actor="tester")
    headers = make_key("workflows.write").headers
    refused = client.post("/v1/flows/rollback", json={"version": 1}, headers=headers)
    error = assert_error(refused, 400, "invalid_flows", checks="status")
    assert "flows version 1:4: flow 'one'" in error["message"]
    assert current_version(db) == 2
    assert len(flow_audit(db)) == 1
