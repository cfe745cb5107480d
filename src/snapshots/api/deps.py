"""Dependencies shared by routes: the app state, the request id and API-key authentication."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from snapshots import connections, errors, intake, keys
from snapshots.flows import Registry
from snapshots.settings import Settings
from snapshots.store.db import Database


@dataclass
class State:
    settings: Settings
    db: Database
    registry: Callable[[], Registry]  # the flows in force (`flows.Live`)
    secrets: connections.SecretsCache
    intake: intake.GroupCommit
    worker: bool = False  # an embedded worker process runs beside this app


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


def require(scope: str) -> Callable[..., Any]:
    """A dependency that authenticates the bearer key and checks it carries `scope`."""

    async def dependency(request: Request, state: StateDep) -> keys.ApiKey:
        api_key = await run_in_threadpool(keys.verify, state.db, _bearer(request))
        if not api_key.allows(scope):
            raise errors.Forbidden(f"this API key lacks the scope {scope}", scope=scope)
        return api_key

    dependency.__name__ = f"require_{scope.replace('/', '_').replace('.', '_')}"
    return dependency


def scope(name: str) -> Any:
    """For a route's `dependencies=[...]`: the request needs a key carrying scope `name`."""
    return Depends(require(name))
