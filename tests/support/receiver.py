"""A webhook receiver for outbound tests: a real HTTP server on 127.0.0.1 (a thread) that
verifies every message's Standard Webhooks signature with the `standardwebhooks` package and
answers as the test scripts it::

    with Receiver(secrets=[secret]) as receiver:
        receiver.script(503, 503)          # the next two requests get 503, then 200
        receiver.hold = threading.Event()  # requests wait until it is set
        receiver.url                       # http://127.0.0.1:PORT/hook
        receiver.received                  # every request: headers, body, which secrets verified

The server answers only loopback and records what came even when it fails it on purpose.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[int]  # the indexes of the receiver's secrets that verified it

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def timestamp(self) -> int:
        return int(self.headers["webhook-timestamp"])

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before answering


class Receiver:
    def __init__(self, *, secrets: list[str] | None = None, path: str = "/hook") -> None:
        self.secrets = list(secrets or [])
        self.path = path
        self.received: list[Received] = []
        self._script: list[Reply] = []
        self.default = Reply()
        self.hold: threading.Event | None = None  # requests wait for it (at most 60 s)
        self.entered = threading.Event()  # set when a request arrives
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._note(self.path, headers, body)
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                reply = receiver._next()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client went away (it timed out)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _note(self, path: str, headers: dict[str, str], body: bytes) -> None:
        verified = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(index)
        with self._lock:
            self.received.append(Received(time.time(), path, headers, body, verified))
        self.entered.set()

    def _next(self) -> Reply:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def script(self, *replies: int | Reply) -> None:
        """The next requests' answers, in order (then `default`: 200)."""
        with self._lock:
            self._script += [r if isinstance(r, Reply) else Reply(r) for r in replies]

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
