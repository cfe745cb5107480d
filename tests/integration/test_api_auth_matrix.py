"""Every operation of the app's own OpenAPI document that names a scope (`x-required-scope`)
x {no key, bad checksum, revoked, expired, wrong scope, right scope}, on SQLite and PostgreSQL.

The operations are read from `/openapi.json` when this module is collected, so an endpoint added
later is in the matrix without editing this file. One app per database and one set of keys per
module keep it fast: each case is one request. Path parameters are ids that do not exist and
bodies are `{}`, so with the right scope an operation answers 404 or 400, never 401/403/5xx,
and changes nothing.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from snapshots import keys
from snapshots.app import create_app
from snapshots.settings import Settings
from snapshots.store import db as store
from snapshots.store import tables
from tests.conftest import SqliteCopy, _empty_postgres
from tests.integration.helpers import assert_error

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
RATE_LIMIT = 1_000_000  # requests per window: the matrix must never meet the limit
MISSING_ID = "doesnotexist0000000000"
MISSING_NUMBER = "999999999"
ENV_PREFIX = len("snp_live_")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # the template, e.g. /v1/locations/{location_id}
    scope: str
    parameters: tuple[tuple[str, str, str, bool], ...]  # (name, in, type, required)
    body: bool

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def url(self) -> str:
        url = self.path
        for name, where, kind, _ in self.parameters:
            if where == "path":
                value = MISSING_NUMBER if kind == "integer" else MISSING_ID
                url = url.replace("{" + name + "}", value)
        return url

    def request(self, client: TestClient, secret: str | None) -> httpx.Response:
        """The operation with an id that does not exist, required parameters filled in and
        `{}` as the body; `secret` as the bearer key (None: no Authorization header)."""
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        for name, where, kind, required in self.parameters:
            value = "1" if kind in ("integer", "number") else "matrix"
            if where == "header" and required:
                headers[name] = f"matrix-{time.monotonic_ns()}"
            elif where == "query" and required:
                params[name] = value
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return client.request(
            self.method,
            self.url(),
            headers=headers,
            params=params,
            json={} if self.body else None,
        )


def _schema_type(parameter: dict[str, Any]) -> str:
    schema = parameter.get("schema", {})
    if "type" in schema:
        return str(schema["type"])
    kinds = [s.get("type") for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return str(kinds[0]) if kinds else "string"


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or "x-required-scope" not in operation:
                continue
            parameters = tuple(
                (p["name"], p["in"], _schema_type(p), bool(p.get("required")))
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
            )
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    scope=str(operation["x-required-scope"]),
                    parameters=parameters,
                    body="requestBody" in operation,
                )
            )
    return sorted(found, key=lambda o: (o.path, o.method))


def _collect_document() -> dict[str, Any]:
    """The OpenAPI document of an app on a throw-away SQLite database."""
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{Path(home) / 'openapi.db'}"
        database = store.Database(url)
        store.migrate(database)
        database.dispose()
        settings = Settings(database_url=url, master_key=Fernet.generate_key().decode())
        with TestClient(create_app(settings)) as client:
            response = client.get("/openapi.json")
            assert response.status_code == 200, response.text
            document: dict[str, Any] = response.json()
    return document


DOCUMENT = _collect_document()
OPERATIONS = operations(DOCUMENT)
OPERATION_PARAMS = [pytest.param(o, id=o.id) for o in OPERATIONS]
SCOPES_USED = sorted({o.scope for o in OPERATIONS})


# One deployment (database, app, keys) per database per module.


@dataclass
class Deployment:
    client: TestClient
    db: store.Database
    exact: dict[str, str]  # scope -> a key with that scope only
    others: dict[str, str]  # scope -> a key with every scope but that one and admin
    revoked: dict[str, str]  # scope -> a revoked key with that scope
    expired: dict[str, str]  # scope -> an expired key with that scope
    admin: str


def _bad_checksum(secret: str) -> str:
    """The key with one character of its random part changed (its checksum no longer fits)."""
    position = ENV_PREFIX + 7
    changed = "A" if secret[position] != "A" else "B"
    return secret[:position] + changed + secret[position + 1 :]


def _make_keys(db: store.Database) -> dict[str, dict[str, str]]:
    made: dict[str, dict[str, str]] = {"exact": {}, "others": {}, "revoked": {}, "expired": {}}
    for scope in SCOPES_USED:
        with db.write() as tx:
            made["exact"][scope] = keys.create(tx, name=f"exact {scope}", scopes=[scope]).secret
            others = [s for s in keys.SCOPES if s not in (scope, "admin")]
            made["others"][scope] = keys.create(tx, name=f"not {scope}", scopes=others).secret
            revoked = keys.create(tx, name=f"revoked {scope}", scopes=[scope])
            keys.revoke(tx, revoked.id)
            made["revoked"][scope] = revoked.secret
            expired = keys.create(tx, name=f"expired {scope}", scopes=[scope], expires_in=60)
            secret = expired.secret
        with db.write() as conn:
            conn.execute(
                tables.api_keys.update()
                .where(tables.api_keys.c.id == expired.id)
                .values(expires_at=time.time() - 1)
            )
        made["expired"][scope] = secret
    return made


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_copy: SqliteCopy,
) -> Iterator[Deployment]:
    if request.param == "sqlite":
        url = sqlite_copy(tmp_path_factory.mktemp("matrix"))
    else:
        url = str(request.getfixturevalue("postgres_url"))
        _empty_postgres(url)
    settings = Settings(
        database_url=url,
        master_key=Fernet.generate_key().decode(),
        api_rate_limit=RATE_LIMIT,
        api_rate_window=60,
    )
    db = store.Database(url)
    made = _make_keys(db)
    with db.write() as tx:
        admin = keys.create(tx, name="admin", scopes=["admin"]).secret
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield Deployment(client, db, admin=admin, **made)
    finally:
        db.dispose()


def assert_rate_limit_headers(response: httpx.Response) -> None:
    assert response.headers.get("x-ratelimit-limit") == str(RATE_LIMIT), dict(response.headers)
    remaining = response.headers.get("x-ratelimit-remaining")
    assert remaining is not None and remaining.isdigit(), dict(response.headers)
    assert 0 <= int(remaining) < RATE_LIMIT


# The document itself.


def test_the_matrix_covers_the_api() -> None:
    paths = {o.path for o in OPERATIONS}
    assert {"/v1/locations", "/v1/customers", "/v1/api-keys", "/v1/audit"} <= paths
    assert len(OPERATIONS) >= 20


def test_every_api_operation_declares_a_known_scope() -> None:
    """Every /v1 operation names one scope of keys.SCOPES, as `x-required-scope` and as its
    security requirement; the service endpoints (health, metrics, webhooks) need none."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            scope = operation.get("x-required-scope")
            if not path.startswith("/v1/"):
                assert scope is None, (method, path)
                continue
            assert scope in keys.SCOPES, (method, path, scope)
            assert operation["security"] == [{"apiKey": [scope]}], (method, path)
            assert f"`{scope}`" in operation["description"], (method, path)
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["apiKey"] == schemes["apiKey"] | {"type": "http", "scheme": "bearer"}


def test_the_collected_matrix_is_the_served_document(deployment: Deployment) -> None:
    served = deployment.client.get("/openapi.json").json()
    assert [o.id for o in operations(served)] == [o.id for o in OPERATIONS]


# The matrix.

REFUSED = [
    pytest.param("no key", "missing_api_key", "no API key", id="no-key"),
    pytest.param("bad checksum", "invalid_api_key", "checksum", id="bad-checksum"),
    pytest.param("revoked", "api_key_revoked", "revoked", id="revoked"),
    pytest.param("expired", "api_key_expired", "expired", id="expired"),
]


@pytest.mark.parametrize("operation", OPERATION_PARAMS)
@pytest.mark.parametrize(("case", "code", "says"), REFUSED)
def test_a_refused_key_is_401_saying_why(
    deployment: Deployment, operation: Operation, case: str, code: str, says: str
) -> None:
    # Each refused key carries the operation's own scope: only its state is wrong.
    secret = {
        "no key": None,
        "bad checksum": _bad_checksum(deployment.exact[operation.scope]),
        "revoked": deployment.revoked[operation.scope],
        "expired": deployment.expired[operation.scope],
    }[case]
    response = operation.request(deployment.client, secret)
    error = assert_error(response, 401, code, checks="json")
    assert error["type"] == "authentication_error"
    assert says in error["message"], error["message"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("operation", OPERATION_PARAMS)
def test_a_key_without_the_scope_is_403_naming_it(
    deployment: Deployment, operation: Operation
) -> None:
    response = operation.request(deployment.client, deployment.others[operation.scope])
    error = assert_error(response, 403, "missing_scope", checks="json")
    assert error["type"] == "permission_error"
    assert error["scope"] == operation.scope
    assert operation.scope in error["message"]
    assert response.headers["x-accepted-scopes"] == operation.scope
    assert_rate_limit_headers(response)


@pytest.mark.parametrize("operation", OPERATION_PARAMS)
@pytest.mark.parametrize("holder", ["exact", "admin"])
def test_a_key_with_the_scope_gets_past_authentication(
    deployment: Deployment, operation: Operation, holder: str
) -> None:
    secret = deployment.admin if holder == "admin" else deployment.exact[operation.scope]
    response = operation.request(deployment.client, secret)
    assert response.status_code not in (401, 403), response.text
    assert response.status_code < 500, response.text
    assert_rate_limit_headers(response)


@pytest.mark.parametrize("operation", OPERATION_PARAMS)
def test_location_read_grants_get_locations_and_nothing_else(
    deployment: Deployment, operation: Operation
) -> None:
    response = operation.request(deployment.client, deployment.exact["saas/location.read"])
    assert_rate_limit_headers(response)
    if operation.method == "GET" and operation.path.startswith("/v1/locations"):
        assert operation.scope == "saas/location.read"
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        error = assert_error(response, 403, "missing_scope", checks="json")
        assert error["scope"] == operation.scope != "saas/location.read"
        assert response.headers["x-accepted-scopes"] == operation.scope


def test_the_right_scope_answers_as_the_missing_id_deserves(deployment: Deployment) -> None:
    """A sanity check of the probe itself: a list answers 200, a missing id 404 (so the
    matrix's right-scope case is not passing on errors the probe causes)."""
    found = {o.id: o for o in OPERATIONS}
    lists = found["GET /v1/locations"].request(
        deployment.client, deployment.exact["saas/location.read"]
    )
    assert lists.status_code == 200, lists.text
    one = found["GET /v1/locations/{location_id}"].request(
        deployment.client, deployment.exact["saas/location.read"]
    )
    assert_error(one, 404, "resource_missing", checks="json")
    with deployment.db.read() as conn:
        revoked_or_expired = conn.execute(
            sa.select(sa.func.count()).where(
                sa.or_(
                    tables.api_keys.c.revoked_at.is_not(None),
                    tables.api_keys.c.expires_at < time.time(),
                )
            )
        ).scalar_one()
    assert revoked_or_expired == 2 * len(SCOPES_USED)  # the probes changed no key
