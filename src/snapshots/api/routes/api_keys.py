"""API keys through the API (scope `admin`): create, list, rotate with an overlap, revoke."""

from __future__ import annotations

from fastapi import APIRouter

from snapshots import keys, paging, times
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(prefix="/v1", tags=["api keys"], responses=deps.ERRORS)


@router.post(
    "/api-keys",
    status_code=201,
    summary="Create an API key; its secret is in this response only (scope admin)",
)
def create_key(body: schemas.KeyCreate, state: StateDep, admin: deps.Admin) -> keys.ApiKeyCreated:
    lifetime = (
        times.parse_duration(body.expires_in, longest=keys.MAX_LIFETIME)
        if body.expires_in
        else None
    )
    with state.db.write() as tx:
        return keys.create(
            tx,
            name=body.name,
            scopes=body.scopes,
            env=state.settings.key_env,
            expires_in=lifetime,
            actor=admin.actor,
            connections=body.connections,
        )


@router.get("/api-keys", summary="List API keys, never their secrets (scope admin)")
def list_keys(state: StateDep, _: deps.Admin) -> paging.Page[keys.ApiKey]:
    with state.db.read() as tx:
        found = keys.list_all(tx)
    return paging.Page(data=found[::-1], has_more=False)


@router.get("/api-keys/{key_id}", summary="Get an API key (scope admin)")
def get_key(key_id: str, state: StateDep, _: deps.Admin) -> keys.ApiKey:
    with state.db.read() as tx:
        return keys.get(tx, key_id)


@router.post(
    "/api-keys/{key_id}/rotate",
    status_code=201,
    responses=deps.WRITE_ERRORS,
    summary="A new key with the same scopes; the old one works until the overlap ends "
    "(scope admin)",
)
def rotate_key(
    key_id: str, state: StateDep, admin: deps.Admin, body: schemas.KeyRotate | None = None
) -> keys.ApiKeyRotated:
    overlap = times.parse_duration((body or schemas.KeyRotate()).overlap, zero=True)
    with state.db.write() as tx:
        return keys.rotate(
            tx, key_id, overlap=overlap, env=state.settings.key_env, actor=admin.actor
        )


@router.delete("/api-keys/{key_id}", summary="Revoke an API key now (scope admin)")
def revoke_key(key_id: str, state: StateDep, admin: deps.Admin) -> keys.ApiKey:
    with state.db.write() as tx:
        return keys.revoke(tx, key_id, actor=admin.actor)
