"""The ingest floor: the least work a correct Stripe webhook receiver can do.

One Starlette route, `POST /webhooks/stripe/{connection_id}`: read the raw body, verify
`Stripe-Signature` with the official SDK (tolerance 300 s), parse the JSON for the event id and
commit one stdlib `sqlite3` INSERT (raw body + event id) into a WAL database, then answer 200.
`bench/ingest.py` runs it under uvicorn in a subprocess, with the same uvicorn settings as
`snapshots serve`, and compares the two.

Configuration comes from the environment (read by `create_app`, never at import time):
`FLOOR_DATABASE` (SQLite file path), `FLOOR_WEBHOOK_SECRET` (`whsec_...`),
`FLOOR_SYNCHRONOUS` (SQLite `PRAGMA synchronous`, default `NORMAL`).

Run: `uvicorn --factory --app-dir bench floor_app:create_app`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping

import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOLERANCE = 300  # seconds, as Stripe's SDKs default
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    connection_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (connection_id, event_id)
)
"""
INSERT = (
    "INSERT OR IGNORE INTO events (connection_id, event_id, body, received_at) VALUES (?, ?, ?, ?)"
)


def open_database(path: str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (and create) the floor's WAL database in autocommit mode: one INSERT, one commit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute(SCHEMA)
    return conn


def error(status: int, code: str, message: str) -> JSONResponse:
    """A JSON error in the project's error shape."""
    return JSONResponse(
        {"error": {"type": "invalid_request_error", "code": code, "message": message}},
        status_code=status,
    )


def create_app(environ: Mapping[str, str] | None = None) -> Starlette:
    """Build the floor app from `environ` (default: `os.environ`)."""
    env = os.environ if environ is None else environ
    secret = env["FLOOR_WEBHOOK_SECRET"]
    conn = open_database(env["FLOOR_DATABASE"], synchronous=env.get("FLOOR_SYNCHRONOUS", "NORMAL"))

    async def webhook(request: Request) -> JSONResponse:
        payload = await request.body()
        try:
            stripe.WebhookSignature.verify_header(
                payload, request.headers.get("stripe-signature"), secret, tolerance=TOLERANCE
            )
        except stripe.SignatureVerificationError as exc:
            return error(400, "signature_invalid", str(exc))
        try:
            event_id = json.loads(payload)["id"]
        except (ValueError, KeyError, TypeError):
            return error(400, "payload_invalid", "body is not a Stripe event")
        # Deliberately inline on the event loop: a single short write is the cheapest option.
        conn.execute(INSERT, (request.path_params["connection_id"], event_id, payload, time.time()))
        return JSONResponse({"received": True})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/stripe/{connection_id}", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
