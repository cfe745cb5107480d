"""The HTTP side of idempotent writes: the `Idempotency-Key` header in, the first answer (with
`Idempotent-Replayed: true`) out; the rules are the domain's (snapshots.idempotency)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from snapshots import idempotency
from snapshots.api import deps
from snapshots.store.db import Tx

Key = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="1 to 255 printable ASCII characters, unique per request (a UUID): a retry "
        "with the same key and the same request returns the first response, with "
        f"`{idempotency.REPLAYED}: true`, instead of writing again. Kept 24 hours per API key.",
    ),
]


async def _raw_body(request: Request) -> bytes:
    # async: the body is in memory already (FastAPI read it for the body parameter)
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]


def write(
    state: deps.State,
    api_key_id: str,
    request: Request,
    raw: bytes,
    key: str | None,
    work: Callable[[Tx], tuple[int, BaseModel | dict[str, Any]]],
) -> JSONResponse:
    """Run `work` once per Idempotency-Key (see snapshots.idempotency) and answer with what it
    returned, or with the first answer to the same request (`raw` is the request's body)."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")

    def run(tx: Tx) -> tuple[int, dict[str, Any]]:
        status, answer = work(tx)
        return status, answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer

    status, payload, replayed = idempotency.once(
        state.db, api_key_id, key, (request.method, path, raw), deps.request_id(request), run
    )
    headers = {idempotency.REPLAYED: "true"} if replayed else None
    return JSONResponse(payload, status, headers=headers)
