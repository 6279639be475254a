"""A small driver for ServerConnection in tests: feed bytes, answer decisions, read replies."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mailmoat.smtp import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    Reply,
    ServerConfig,
    ServerConnection,
)

Decide = Callable[[ServerConnection, Event], None]


def accept_all(conn: ServerConnection, event: Event) -> None:
    conn.accept()


class Session:
    """One server connection, greeted, whose decisions ``decide`` answers (accept by default)."""

    def __init__(self, *, greet: bool = True, decide: Decide = accept_all, **config: Any) -> None:
        config.setdefault("hostname", "mx.example")
        self.conn = ServerConnection(ServerConfig(**config))
        self.decide = decide
        self.events: list[Event] = []
        self.wire = b""
        if greet:
            self.conn.greet()
            self.wire += self.conn.data_to_send()

    def feed(self, data: bytes, *, max_events: int = 100_000) -> list[Event]:
        """Feed ``data`` and drain every event; return the new events (NeedData excluded)."""
        self.conn.receive_data(data)
        return self.drain(max_events=max_events)

    def drain(self, *, max_events: int = 100_000) -> list[Event]:
        new: list[Event] = []
        for _ in range(max_events):
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            new.append(event)
            if event.decision:
                self.decide(self.conn, event)
            if isinstance(event, ConnectionClosed):
                break
        else:  # pragma: no cover - a hang is a test failure
            raise AssertionError("engine did not settle")
        self.wire += self.conn.data_to_send()
        self.events += new
        return new

    def take_wire(self) -> bytes:
        wire, self.wire = self.wire, b""
        return wire

    def replies(self) -> list[tuple[int, str]]:
        """Replies sent since the last call: (code, last line's text) per reply."""
        return parse_replies(self.take_wire())

    def codes(self) -> list[int]:
        return [code for code, _ in self.replies()]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])(.*)")


def parse_replies(wire: bytes) -> list[tuple[int, str]]:
    """Split wire bytes into replies (multi-line replies collapse to their last line)."""
    out: list[tuple[int, str]] = []
    assert wire == b"" or wire.endswith(b"\r\n"), wire
    for line in wire.split(b"\r\n")[:-1]:
        m = _LINE.fullmatch(line)
        assert m, f"not a reply line: {line!r}"
        if m.group(2) == b" ":
            out.append((int(m.group(1)), m.group(3).decode("ascii")))
    return out


def ehlo_keywords(wire: bytes) -> list[str]:
    """The keywords of an EHLO reply (first line is the greeting domain)."""
    lines = [line[4:].decode() for line in wire.split(b"\r\n")[:-1]]
    return lines[1:]


def reply_status(reply: Reply) -> str | None:
    return reply.status
