"""What routes share: the app state, the request id, API-key authentication with one dependency
alias per scope, the paging parameters, and the error responses every router declares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from snapshots import audit, connections, errors, intake, keys, limits, readiness, revisions
from snapshots.api import schemas
from snapshots.outbound import guard
from snapshots.settings import Settings
from snapshots.store import reader
from snapshots.store.db import Database
from snapshots.vault import Vault

T = TypeVar("T")


@dataclass
class State:
    settings: Settings
    db: Database
    registry: revisions.Live  # the flows in force
    secrets: connections.SecretsCache
    vault: Vault  # decrypts connection keys (managed webhook endpoints follow the flows)
    intake: intake.GroupCommit
    faults: readiness.Faults  # this process's, kept by a readiness.Monitor
    limiter: limits.Limiter  # API requests per key, shared by every process
    uses: keys.Uses  # keys' last uses, written in the background
    # The faults of the embedded worker process running beside this app, when there is one.
    worker_faults: Callable[[], list[readiness.Fault]] | None = None
    # How outbound requests (webhook endpoints) resolve names and connect.
    outbound: guard.Seams = field(default_factory=guard.Seams)

    @property
    def worker(self) -> bool:
        return self.worker_faults is not None


async def get_state(request: Request) -> State:
    # async on purpose: FastAPI runs a sync dependency in a thread pool, costing a thread hop
    # per request for a dictionary lookup.
    state: State = request.app.state.snapshots
    return state


StateDep = Annotated[State, Depends(get_state)]


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized(
            "the Authorization header must be `Bearer snp_...`", code="malformed_authorization"
        )
    return token.strip()


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _denied(state: State, *, action: str, actor: str, ip: str | None, reason: str) -> None:
    with state.db.write() as tx:
        audit.denied(tx, action=action, actor=actor, ip=ip, reason=reason)


async def _authorize(state: State, request: Request, scope: str) -> keys.ApiKey:
    """Verify the key, count the request against its rate limit, check the scope. Refusals
    of a bad key or a missing scope are audited. The key's last use and its count are kept
    in memory (`keys.Uses`, `limits.Limiter`): no write per request, and the key's lookup is
    a bounded read (`store.reader`). What may write or wait (an audit entry, a share of the
    limit to reserve) runs in the thread pool."""
    settings = state.settings
    ip = client_ip(request)

    def verify() -> keys.ApiKey:
        with state.db.read() as tx:
            return keys.verify(tx, token, env=settings.key_env)

    try:
        token = _bearer(request)
        api_key = await reader.read(state.db, verify)
    except errors.Unauthorized as exc:
        await run_in_threadpool(
            _denied, state, action="auth.bad_key", actor="anonymous", ip=ip, reason=exc.message
        )
        raise
    state.uses.note(api_key, ip=ip)
    bucket, limit, window = f"key:{api_key.id}", settings.api_rate_limit, settings.api_rate_window
    usage = state.limiter.spend(bucket, limit=limit, window=window)
    if usage is None:
        usage = await run_in_threadpool(state.limiter.hit, bucket, limit=limit, window=window)
    if not usage.exceeded and not api_key.allows(scope):
        await run_in_threadpool(
            _denied,
            state,
            action="auth.scope_denied",
            actor=api_key.actor,
            ip=ip,
            reason=f"lacks {scope}",
        )
    # X-RateLimit-* headers, added by the edge to whatever answer follows.
    request.scope.setdefault("state", {})["rate_limit"] = usage
    if usage.exceeded:
        raise errors.RateLimited(
            f"this API key made more than {usage.limit} requests in "
            f"{settings.api_rate_window} s; retry in {usage.retry_after()} s",
            retry_after=usage.retry_after(),
        )
    if not api_key.allows(scope):
        raise errors.Forbidden(f"this API key lacks the scope {scope}", scope=scope)
    return api_key


def require(scope: str) -> Callable[..., Awaitable[keys.ApiKey]]:
    """A dependency that authenticates the bearer key, counts the request against the key's
    rate limit, and checks the key carries `scope`."""

    async def dependency(request: Request, state: StateDep) -> keys.ApiKey:
        return await _authorize(state, request, scope)

    dependency.__name__ = f"require_{scope.replace('/', '_').replace('.', '_')}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the OpenAPI hook
    return dependency


# One alias per scope: a route names the key it needs as a parameter (`_: ContactsReader`).
LocationsReader = Annotated[keys.ApiKey, Depends(require("saas/location.read"))]
LocationsWriter = Annotated[keys.ApiKey, Depends(require("saas/location.write"))]
ContactsReader = Annotated[keys.ApiKey, Depends(require("contacts.readonly"))]
ContactsWriter = Annotated[keys.ApiKey, Depends(require("contacts.write"))]
InvoicesReader = Annotated[keys.ApiKey, Depends(require("invoices.readonly"))]
InvoicesWriter = Annotated[keys.ApiKey, Depends(require("invoices.write"))]
EventsReader = Annotated[keys.ApiKey, Depends(require("events.readonly"))]
WorkflowsReader = Annotated[keys.ApiKey, Depends(require("workflows.readonly"))]
WorkflowsWriter = Annotated[keys.ApiKey, Depends(require("workflows.write"))]
IntegrationsWriter = Annotated[keys.ApiKey, Depends(require("integrations.write"))]
Admin = Annotated[keys.ApiKey, Depends(require("admin"))]

# Paging, the same on every list.
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
After = Annotated[
    str | None,
    Query(max_length=255, description="The id of the last item of the previous page."),
]
TestOnly = Annotated[
    bool | None,
    Query(
        description="true: only test events and what they wrote (`snapshots send-test-event`, "
        "the console's Test page); false: none of them; both when absent."
    ),
]
Order = Annotated[
    Literal["desc", "asc"],
    Query(description="Creation order: desc (newest first, the default) or asc (oldest first)."),
]

# The errors every authenticated route may answer, declared once per router.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorResponse, "description": description}
    for status, description in (
        (400, "Bad request: a parameter or the body is invalid"),
        (401, "No API key, or a malformed, unknown, revoked or expired one"),
        (403, "The API key lacks the scope the route needs"),
        (404, "No such object"),
        (429, "Rate limited: retry after the Retry-After seconds"),
    )
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": schemas.ErrorResponse, "description": "A conflict (Idempotency-Key in use)"}
}


def respond(model: BaseModel, status_code: int = 200) -> Response:
    """A public model as the answer, serialised once by pydantic (a route returning a model
    would have FastAPI dump, validate and encode it again: three passes over a page of 100
    records). The route declares the model as its `response_model` for the OpenAPI document."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")
