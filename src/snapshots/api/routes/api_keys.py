"""API keys through the API (scope `admin`): create, list, rotate with an overlap, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from snapshots import keys
from snapshots.api import deps, schemas
from snapshots.api.deps import StateDep

router = APIRouter(
    prefix="/v1",
    tags=["api keys"],
    responses={
        400: {"model": schemas.ErrorResponse},
        401: {"model": schemas.ErrorResponse},
        403: {"model": schemas.ErrorResponse},
    },
)
Admin = Annotated[keys.ApiKey, Depends(deps.require("admin"))]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorResponse}}


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=keys.NAME_MAX)
    scopes: list[str] = Field(min_length=1, description=f"Of: {', '.join(keys.SCOPES)}")
    expires_in: str | None = Field(None, description="A lifetime such as 90d or 12h")


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: str = Field(
        default="24h",
        description="How long the old key keeps working (0s: it stops now), at most 30d",
    )


@router.post(
    "/api-keys",
    response_model=schemas.ApiKeyCreated,
    status_code=201,
    summary="Create an API key; its secret is in this response only (scope admin)",
)
async def create_key(body: KeyCreate, state: StateDep, admin: Admin) -> dict[str, Any]:
    lifetime = keys.parse_duration(body.expires_in) if body.expires_in else None
    api_key, secret = await run_in_threadpool(
        lambda: keys.create(
            state.db,
            name=body.name,
            scopes=body.scopes,
            env=state.settings.key_env,
            expires_in=lifetime,
            actor=admin.actor,
        )
    )
    return api_key.public() | {"secret": secret}


@router.get(
    "/api-keys",
    response_model=schemas.ApiKeysPublic,
    summary="List API keys, never their secrets (scope admin)",
    dependencies=[deps.scope("admin")],
)
async def list_keys(state: StateDep) -> dict[str, Any]:
    found = await run_in_threadpool(keys.list_all, state.db)
    return {"data": [k.public() for k in reversed(found)], "has_more": False}


@router.get(
    "/api-keys/{key_id}",
    response_model=schemas.ApiKeyPublic,
    responses=NOT_FOUND,
    summary="Get an API key (scope admin)",
    dependencies=[deps.scope("admin")],
)
async def get_key(key_id: str, state: StateDep) -> dict[str, Any]:
    return (await run_in_threadpool(keys.get, state.db, key_id)).public()


@router.post(
    "/api-keys/{key_id}/rotate",
    response_model=schemas.ApiKeyRotated,
    status_code=201,
    responses={**NOT_FOUND, 409: {"model": schemas.ErrorResponse}},
    summary="A new key with the same scopes; the old one works until the overlap ends "
    "(scope admin)",
)
async def rotate_key(
    key_id: str, state: StateDep, admin: Admin, body: KeyRotate | None = None
) -> dict[str, Any]:
    overlap = keys.parse_overlap((body or KeyRotate()).overlap)
    new, secret, old = await run_in_threadpool(
        lambda: keys.rotate(
            state.db, key_id, overlap=overlap, env=state.settings.key_env, actor=admin.actor
        )
    )
    return new.public() | {"secret": secret, "previous": old.public()}


@router.delete(
    "/api-keys/{key_id}",
    response_model=schemas.ApiKeyPublic,
    responses=NOT_FOUND,
    summary="Revoke an API key now (scope admin)",
)
async def revoke_key(key_id: str, state: StateDep, admin: Admin) -> dict[str, Any]:
    revoked = await run_in_threadpool(lambda: keys.revoke(state.db, key_id, actor=admin.actor))
    return revoked.public()
