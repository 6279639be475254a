"""Interop: our sans-IO ClientConnection sends mail to a real aiosmtpd server on 127.0.0.1.

The asyncio adapter lives here, in the test (not in src): it only moves bytes between an
asyncio stream and the engine, and runs the TLS handshake when the engine asks for it. The
independent peer (aiosmtpd) decides whether what we sent was the message we meant: its
envelope and content must equal our inputs.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiosmtpd.controller as aiosmtpd_controller
import aiosmtpd.smtp as aiosmtpd_smtp
import pytest
import trustme

from mailmoat.smtp.client import (
    ClientConnection,
    ClientEvent,
    CommandReply,
    EhloResponse,
    Greeting,
)

pytestmark = pytest.mark.timeout(60)

MESSAGES = [
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: plain\r\n\r\nHello.\r\n",
    b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nmiddle . dot\r\n.\r\n",
    b"Subject: 8bit\r\n\r\ncaf\xc3\xa9\r\n",
    b"Subject: longer\r\n\r\n" + b"".join(b"line %05d " % i + b"y" * 60 + b"\r\n" for i in range(2000)),
]


class Handler:
    """aiosmtpd handler recording every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 OK"


class Adapter:
    """Moves bytes between an asyncio stream and a ClientConnection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = ClientConnection()

    async def _events(self, count: int) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        while len(events) < count:
            data = await asyncio.wait_for(self.reader.read(65536), timeout=10)
            assert data, "server closed the connection"
            events += self.conn.receive_data(data)
        assert len(events) == count
        return events

    async def greeting(self) -> Greeting:
        [event] = await self._events(1)
        assert isinstance(event, Greeting)
        return event

    async def send(self, data: bytes, replies: int = 1) -> list[ClientEvent]:
        self.writer.write(data)
        await self.writer.drain()
        return await self._events(replies)

    async def command(self, data: bytes) -> CommandReply:
        [event] = await self.send(data)
        assert isinstance(event, CommandReply)
        return event

    async def ehlo(self) -> EhloResponse:
        [event] = await self.send(self.conn.ehlo("client.example.org"))
        assert isinstance(event, EhloResponse)
        return event

    async def starttls(self, context: ssl.SSLContext) -> None:
        reply = await self.command(self.conn.starttls())
        assert reply.reply.code == 220
        assert self.conn.awaiting_tls
        await self.writer.start_tls(context, server_hostname="localhost")
        self.conn.tls_established()

    async def send_mail(self, sender: str, recipients: list[str], message: bytes) -> int:
        c = self.conn
        params = [("BODY", "8BITMIME")] if "8BITMIME" in (c.extensions or {}) else []
        assert (await self.command(c.mail(sender, params))).reply.code == 250
        for rcpt in recipients:
            assert (await self.command(c.rcpt(rcpt))).reply.code == 250
        assert (await self.command(c.data())).reply.code == 354
        return (await self.command(c.send_message(message))).reply.code

    async def quit(self) -> None:
        reply = await self.command(self.conn.quit())
        assert reply.reply.code == 221
        assert self.conn.closed
        self.writer.close()
        await self.writer.wait_closed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _controller(handler: Handler, **kwargs: Any) -> Iterator[Any]:
    controller = aiosmtpd_controller.Controller(
        handler, hostname="127.0.0.1", port=_free_port(), **kwargs
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[tuple[Any, Handler]]:
    handler = Handler()
    for controller in _controller(handler, enable_SMTPUTF8=True):
        yield controller, handler


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = data.login == b"user" and data.password == b"s3cret pass"
    # handled=False: let aiosmtpd send its own 535 on failure (AuthResult defaults to True).
    return aiosmtpd_smtp.AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_server(server_tls: ssl.SSLContext) -> Iterator[tuple[Any, Handler]]:
    handler = Handler()
    for controller in _controller(
        handler, tls_context=server_tls, require_starttls=True, authenticator=_authenticator,
        auth_require_tls=True,
    ):
        yield controller, handler


@pytest.fixture
async def adapter_for(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    opened: list[Adapter] = []

    async def connect(controller: Any) -> Adapter:
        reader, writer = await asyncio.open_connection(controller.hostname, controller.port)
        adapter = Adapter(reader, writer)
        opened.append(adapter)
        return adapter

    yield connect
    for adapter in opened:
        if not adapter.writer.is_closing():
            adapter.writer.close()


async def test_plain_messages_arrive_unchanged(plain_server: tuple[Any, Handler], adapter_for: Any) -> None:
    controller, handler = plain_server
    client: Adapter = await adapter_for(controller)
    greeting = await client.greeting()
    assert greeting.reply.code == 220
    ehlo = await client.ehlo()
    assert "8BITMIME" in ehlo.extensions
    for n, message in enumerate(MESSAGES):
        code = await client.send_mail(f"s{n}@example.org", ["a@example.net", "b@example.net"], message)
        assert code == 250
    await client.quit()
    assert [e.content for e in handler.envelopes] == MESSAGES
    assert [e.mail_from for e in handler.envelopes] == [f"s{n}@example.org" for n in range(len(MESSAGES))]
    assert all(e.rcpt_tos == ["a@example.net", "b@example.net"] for e in handler.envelopes)


async def test_bare_newlines_are_normalised_before_they_leave(
    plain_server: tuple[Any, Handler], adapter_for: Any
) -> None:
    controller, handler = plain_server
    client: Adapter = await adapter_for(controller)
    await client.greeting()
    await client.ehlo()
    # A bare LF "." LF would let a lax server end the message early (SMTP smuggling): we
    # send it as a normal, dot-stuffed line.
    code = await client.send_mail("a@example.org", ["b@example.net"], b"x\n.\nMAIL FROM:<e@v>\n")
    assert code == 250
    await client.quit()
    assert [e.content for e in handler.envelopes] == [b"x\r\n.\r\nMAIL FROM:<e@v>\r\n"]


async def test_utf8_envelope(plain_server: tuple[Any, Handler], adapter_for: Any) -> None:
    controller, handler = plain_server
    client: Adapter = await adapter_for(controller)
    await client.greeting()
    ehlo = await client.ehlo()
    assert "SMTPUTF8" in ehlo.extensions
    c = client.conn
    assert (await client.command(c.mail("jöran@bücher.example", [("SMTPUTF8", None)]))).reply.code == 250
    assert (await client.command(c.rcpt("пример@пример.рф"))).reply.code == 250
    assert (await client.command(c.data())).reply.code == 354
    assert (await client.command(c.send_message(MESSAGES[0]))).reply.code == 250
    await client.quit()
    [envelope] = handler.envelopes
    assert envelope.mail_from == "jöran@bücher.example"
    assert envelope.rcpt_tos == ["пример@пример.рф"]


async def test_starttls_then_auth_and_mail(
    tls_server: tuple[Any, Handler], adapter_for: Any, client_tls: ssl.SSLContext
) -> None:
    controller, handler = tls_server
    client: Adapter = await adapter_for(controller)
    await client.greeting()
    before = await client.ehlo()
    assert "STARTTLS" in before.extensions
    await client.starttls(client_tls)
    assert client.conn.extensions is None  # RFC 3207 §4.2: forgotten
    after = await client.ehlo()
    assert "STARTTLS" not in after.extensions
    assert {"PLAIN", "LOGIN"} <= set(after.extensions["AUTH"].split())
    assert client.writer.get_extra_info("ssl_object") is not None
    # AUTH PLAIN, wrong password: 535.
    assert (await client.command(client.conn.auth_plain("user", "wrong"))).reply.code == 535
    # AUTH LOGIN: two 334 challenges, then 235.
    events = await client.send(client.conn.auth_login("user", "s3cret pass"))
    assert events[0].reply.code == 334
    events = await client.send(client.conn.auth_response())
    assert events[0].reply.code == 334
    assert (await client.command(client.conn.auth_response())).reply.code == 235
    for message in MESSAGES[:2]:
        assert await client.send_mail("a@example.org", ["b@example.net"], message) == 250
    await client.quit()
    assert [e.content for e in handler.envelopes] == MESSAGES[:2]
