"""Dependencies shared by routes: the app state, the request id and API-key authentication."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from snapshots import audit, connections, errors, flows, intake, keys, limits, readiness
from snapshots.settings import Settings
from snapshots.store.db import Database


@dataclass
class State:
    settings: Settings
    db: Database
    registry: flows.Live  # the flows in force
    secrets: connections.SecretsCache
    intake: intake.GroupCommit
    faults: readiness.Faults  # this process's, kept by a readiness.Monitor
    # The faults of the embedded worker process running beside this app, when there is one.
    worker_faults: Callable[[], list[readiness.Fault]] | None = None

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


def _authorize(
    state: State, request: Request, scope: str, ip: str | None, box: dict[str, Any]
) -> keys.ApiKey:
    """Verify the key, count the request against its rate limit, check the scope (one thread
    hop for all three). Refusals of a bad key or a missing scope are audited."""
    try:
        api_key = keys.verify(state.db, _bearer(request), ip=ip)
    except errors.Unauthorized as exc:
        audit.denied(state.db, action="auth.bad_key", actor="anonymous", ip=ip, reason=exc.message)
        raise
    settings = state.settings
    usage = limits.hit(
        state.db,
        f"key:{api_key.id}",
        limit=settings.api_rate_limit,
        window=settings.api_rate_window,
    )
    box["usage"] = usage
    if usage.exceeded:
        raise errors.RateLimited(
            f"this API key made more than {usage.limit} requests in {settings.api_rate_window} s; "
            f"retry in {usage.retry_after()} s",
            retry_after=usage.retry_after(),
        )
    if not api_key.allows(scope):
        audit.denied(
            state.db,
            action="auth.scope_denied",
            actor=api_key.actor,
            ip=ip,
            reason=f"lacks {scope}",
        )
        raise errors.Forbidden(f"this API key lacks the scope {scope}", scope=scope)
    return api_key


def require(scope: str) -> Callable[..., Any]:
    """A dependency that authenticates the bearer key, counts the request against the key's
    rate limit, and checks the key carries `scope`."""

    async def dependency(request: Request, state: StateDep) -> keys.ApiKey:
        ip = client_ip(request)
        # The request id and address of what this request audits (the endpoint's changes too).
        audit.REQUEST.set((request_id(request), ip))
        box: dict[str, Any] = {}
        try:
            return await run_in_threadpool(_authorize, state, request, scope, ip, box)
        finally:
            if "usage" in box:  # X-RateLimit-* headers, added by the RequestId middleware
                request.scope.setdefault("state", {})["rate_limit"] = box["usage"]

    dependency.__name__ = f"require_{scope.replace('/', '_').replace('.', '_')}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the OpenAPI hook
    return dependency


def scope(name: str) -> Any:
    """For a route's `dependencies=[...]`: the request needs a key carrying scope `name`."""
    return Depends(require(name))
