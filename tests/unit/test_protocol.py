"""`protocol.OneWrite`: an answer's head leaves with its first body bytes, in one write."""

from __future__ import annotations

from typing import Any

from snapshots.api import protocol


class Recording:
    """A transport that records what is written (the seam between uvicorn and the socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_the_head_leaves_with_the_body() -> None:
    transport = Recording()
    one = protocol.OneWrite(transport)  # type: ignore[arg-type]
    one.write(HEAD)
    assert transport.writes == []
    one.write(b"{}")
    assert transport.writes == [HEAD + b"{}"]


def test_an_empty_body_still_sends_the_head() -> None:
    transport = Recording()
    one = protocol.OneWrite(transport)  # type: ignore[arg-type]
    one.write(HEAD)
    one.write(b"")
    assert transport.writes == [HEAD]


def test_later_chunks_go_straight_through() -> None:
    transport = Recording()
    one = protocol.OneWrite(transport)  # type: ignore[arg-type]
    for chunk in (HEAD, b"a", b"b", b"c"):
        one.write(chunk)
    assert transport.writes == [HEAD + b"a", b"b", b"c"]


def test_a_100_continue_goes_out_at_once() -> None:
    transport = Recording()
    one = protocol.OneWrite(transport)  # type: ignore[arg-type]
    one.write(protocol.CONTINUE)
    assert transport.writes == [protocol.CONTINUE]
    one.write(HEAD)
    one.write(b"{}")
    assert transport.writes == [protocol.CONTINUE, HEAD + b"{}"]


def test_closing_sends_a_held_head_first() -> None:
    transport = Recording()
    one = protocol.OneWrite(transport)  # type: ignore[arg-type]
    one.write(HEAD)
    one.close()
    assert transport.writes == [HEAD]
    assert one.is_closing()
    assert one.get_extra_info("peername") == ("127.0.0.1", 1)
