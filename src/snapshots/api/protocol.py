"""HTTP/1.1 with bounds, for a server anyone on the network may reach: uvicorn's httptools
protocol (its fastest) plus what it lacks.

- A request's head (request line and headers) may be at most `max_header_bytes`: over it the
  connection gets 431 and is closed, however the bytes trickle in (httptools would buffer a
  header that never ends).
- The head must arrive within `header_timeout` seconds of the connection (or of the previous
  answer on a kept-alive one), the body within `body_timeout` seconds of the head: else the
  connection is closed (408 when nothing was answered yet). A client sending one header line
  every few seconds holds a connection for `header_timeout` at most.
- At most `max_connections` connections are served at once: the next one is answered 503 and
  closed at once (uvicorn's own `limit_concurrency` only refuses once a head has arrived).
- An answer's head leaves with its first body bytes, in one write (`OneWrite`): uvicorn writes
  them apart, two system calls and two TCP segments for every small answer.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from snapshots.api import edge

REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    header_timeout: float  # seconds
    body_timeout: float  # seconds
    max_connections: int


def refusal(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, in the API's error envelope."""
    body = edge.envelope(status, code, message, f"req_{random.getrandbits(64):016x}")
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, REASONS[status], len(body))
    )
    return head + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # what uvicorn writes before a head, if asked


class OneWrite:
    """The transport as one request's response cycle sees it: the first write (the answer's
    head) is held and goes out with the next one (its first body bytes, which uvicorn writes
    at once after it, possibly empty), or when the transport is closed. A `100 Continue`
    before the head goes out at once."""

    __slots__ = ("_held", "_passing", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._passing = False

    def write(self, data: bytes) -> None:
        if self._passing or data == CONTINUE:
            self._transport.write(data)
        elif self._held is None:
            self._held = data
        else:
            self._passing = True
            self._transport.write(self._held + data)
            self._held = None

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module docstring."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._head_bytes = 0
        self._in_head = True  # reading a request's head (or waiting for one)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, status: int | None) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, status)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, status: int | None) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if status is not None and (self.cycle is None or not self.cycle.response_started):
            what = "the request's head" if status == 408 and self._in_head else "the body"
            self.transport.write(refusal(408, "request_timeout", f"{what} did not arrive in time"))
        self.transport.close()

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._disarm()
        self.transport.write(refusal(status, code, message))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(503, "too_many_connections", "too many connections: retry shortly")
            return
        self._arm(self._limits.header_timeout, 408)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_large(self) -> None:
        self._refuse(
            431,
            "headers_too_large",
            f"the request's head is over {self._limits.max_header_bytes} bytes",
        )

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head
        super().data_received(data)  # the parser says when the head ends (on_headers_complete)
        if in_head and self._in_head and not self.transport.is_closing():
            # Still in the head: this chunk was all head. httptools would keep buffering a
            # head that never ends, so it is cut off here, a chunk past the limit at most.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._too_large()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        # The head ended in the last chunk; its size, from what the parser handed over.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limits.max_header_bytes:
            self._too_large()
            return
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request's cycle, whose task has not run yet
            self.cycle.transport = OneWrite(self.transport)  # type: ignore[assignment]
        if self.parser is not None and not self.transport.is_closing():
            self._arm(self._limits.body_timeout, 408)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._in_head = True  # the next bytes are the next request's head
            self._arm(self._limits.header_timeout, None)  # idle: close quietly
