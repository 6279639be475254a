"""Loop-back: our ClientConnection against our ServerConnection, entirely in memory.

Bytes from one engine are fed to the other; the test plays both adapters and the server's
policy. The check is end to end: the server must receive exactly the message bytes and the
envelope the client was asked to send (the expected values are the test's own inputs).
"""

from __future__ import annotations

import pytest

from mailmoat.smtp._abnf import Address
from mailmoat.smtp.client import ClientConnection, ClientEvent, CommandReply, EhloResponse
from mailmoat.smtp.events import (
    AuthRequested,
    ConnectionClosed,
    MailFrom,
    MessageComplete,
    NeedData,
    RcptTo,
    StartTLSRequested,
)
from mailmoat.smtp.replies import Replies
from mailmoat.smtp.server import ServerConfig, ServerConnection

MESSAGES = [
    b"Subject: one\r\n\r\nHello.\r\n",
    b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nend.\r\n.\r\n",
    b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xe2\x82\xac\r\n\r\n\r\n",
    b"Subject: big\r\n\r\n" + b"".join(b"%06d " % i + b"x" * 90 + b"\r\n" for i in range(3000)),
    b"Subject: empty body\r\n\r\n",
]


class Loop:
    """Both ends in memory; records what the server received."""

    def __init__(self, config: ServerConfig, *, refuse: frozenset[str] = frozenset()) -> None:
        self.server = ServerConnection(config)
        self.client = ClientConnection()
        self.refuse = refuse
        self.received: list[tuple[Address | None, list[Address], bytes]] = []
        self._mail: Address | None = None
        self._rcpts: list[Address] = []
        self.credentials: list[tuple[str | None, str | None]] = []
        self.server.greet()
        self.greeting = self.client.receive_data(self.server.data_to_send())

    def send(self, data: bytes) -> list[ClientEvent]:
        self.server.receive_data(data)
        while True:
            event = self.server.next_event()
            if isinstance(event, NeedData | ConnectionClosed):
                break
            if isinstance(event, MailFrom):
                self._mail, self._rcpts = event.address, []
            if isinstance(event, RcptTo):
                if event.address.local_part in self.refuse:
                    self.server.reject(Replies.MAILBOX_UNAVAILABLE)
                    continue
                self._rcpts.append(event.address)
            if isinstance(event, MessageComplete):
                self.received.append((self._mail, self._rcpts, event.data))
            if isinstance(event, AuthRequested):
                self.credentials.append((event.username, event.password))
                if event.password != "secret":
                    self.server.reject(Replies.AUTH_FAILED)
                    continue
            if event.decision:
                self.server.accept()
        return self.client.receive_data(self.server.data_to_send())

    def ehlo(self) -> EhloResponse:
        [event] = self.send(self.client.ehlo("client.example.org"))
        assert isinstance(event, EhloResponse)
        return event


def codes(events: list[ClientEvent]) -> list[tuple[str | None, int]]:
    return [(e.command, e.reply.code) for e in events if isinstance(e, CommandReply)]


def config(**kwargs: object) -> ServerConfig:
    return ServerConfig(hostname="mx.example.net", **kwargs)  # type: ignore[arg-type]


def test_several_messages_with_data_and_pipelining() -> None:
    loop = Loop(config())
    assert loop.ehlo().extensions.keys() >= {"PIPELINING", "CHUNKING", "8BITMIME", "SIZE"}
    assert loop.client.pipelining
    for n, message in enumerate(MESSAGES):
        c = loop.client
        group = c.mail(f"sender{n}@example.org", [("BODY", "8BITMIME")])
        group += c.rcpt("a@example.net") + c.rcpt("b@example.net") + c.data()
        assert codes(loop.send(group)) == [("MAIL", 250), ("RCPT", 250), ("RCPT", 250), ("DATA", 354)]
        assert codes(loop.send(c.send_message(message))) == [("MESSAGE", 250)]
    assert codes(loop.send(loop.client.quit())) == [("QUIT", 221)]
    assert loop.client.closed
    assert [data for _, _, data in loop.received] == MESSAGES
    for n, (mail, rcpts, _) in enumerate(loop.received):
        assert mail is not None
        assert str(mail) == f"sender{n}@example.org"
        assert [str(r) for r in rcpts] == ["a@example.net", "b@example.net"]


def test_send_message_normalises_what_the_server_then_receives() -> None:
    loop = Loop(config())
    loop.ehlo()
    c = loop.client
    loop.send(c.mail("a@example.org") + c.rcpt("b@example.net") + c.data())
    assert codes(loop.send(c.send_message(b"Subject: x\n\n.\nline\rend"))) == [("MESSAGE", 250)]
    assert loop.received[0][2] == b"Subject: x\r\n\r\n.\r\nline\r\nend\r\n"


@pytest.mark.parametrize(("chunk_size", "messages"), [
    (1, MESSAGES[:3]), (7, MESSAGES[:3]), (97, MESSAGES), (1000, MESSAGES), (100_000, MESSAGES),
])
def test_several_messages_with_bdat(chunk_size: int, messages: list[bytes]) -> None:
    loop = Loop(config())
    loop.ehlo()
    c = loop.client
    for message in messages:
        out = [c.mail("a@example.org"), c.rcpt("b@example.net")]
        chunks = [message[i : i + chunk_size] for i in range(0, len(message), chunk_size)]
        out += [c.bdat(chunk) for chunk in chunks[:-1]]
        out.append(c.bdat(chunks[-1], last=True))
        events = loop.send(b"".join(out))
        assert codes(events) == (
            [("MAIL", 250), ("RCPT", 250)] + [("BDAT", 250)] * len(chunks)
        )
    # RFC 3030: BDAT content is taken verbatim: no dot-unstuffing, "." lines stay.
    assert [data for _, _, data in loop.received] == messages


def test_bdat_without_pipelining_goes_chunk_by_chunk() -> None:
    loop = Loop(config(pipelining=False))
    loop.ehlo()
    c = loop.client
    assert not c.pipelining
    assert codes(loop.send(c.mail("a@example.org"))) == [("MAIL", 250)]
    assert codes(loop.send(c.rcpt("b@example.net"))) == [("RCPT", 250)]
    assert codes(loop.send(c.bdat(b"Subject: a\r\n"))) == [("BDAT", 250)]
    assert codes(loop.send(c.bdat(b"\r\nbody\r\n", last=True))) == [("BDAT", 250)]
    assert loop.received[0][2] == b"Subject: a\r\n\r\nbody\r\n"


def test_refused_recipient_in_a_pipelined_group() -> None:
    loop = Loop(config(), refuse=frozenset({"nobody"}))
    loop.ehlo()
    c = loop.client
    group = c.mail("a@example.org") + c.rcpt("nobody@example.net") + c.rcpt("b@example.net")
    events = loop.send(group + c.data())
    assert codes(events) == [("MAIL", 250), ("RCPT", 550), ("RCPT", 250), ("DATA", 354)]
    loop.send(c.send_message(b"x\r\n"))
    assert [str(r) for r in loop.received[0][1]] == ["b@example.net"]


def test_all_recipients_refused_then_rset() -> None:
    loop = Loop(config(), refuse=frozenset({"nobody"}))
    loop.ehlo()
    c = loop.client
    events = loop.send(c.mail("a@example.org") + c.rcpt("nobody@example.net") + c.data())
    assert [code for _, code in codes(events)][:2] == [250, 550]
    assert codes(events)[2][0] == "DATA"
    assert codes(events)[2][1] >= 500
    assert codes(loop.send(c.rset())) == [("RSET", 250)]
    loop.send(c.mail("a@example.org") + c.rcpt("b@example.net") + c.data())
    loop.send(c.send_message(b"ok\r\n"))
    assert [data for _, _, data in loop.received] == [b"ok\r\n"]


def test_utf8_envelope() -> None:
    loop = Loop(config())
    loop.ehlo()
    c = loop.client
    group = c.mail("ü@bücher.example", [("SMTPUTF8", None)]) + c.rcpt("пример@пример.рф")
    assert codes(loop.send(group + c.data()))[-1] == ("DATA", 354)
    loop.send(c.send_message(b"x\r\n"))
    mail, rcpts, _ = loop.received[0]
    assert mail is not None
    assert (mail.local_part, mail.domain) == ("ü", "bücher.example")
    assert str(rcpts[0]) == "пример@пример.рф"


def test_starttls_then_auth_plain_and_login() -> None:
    loop = Loop(config(tls_available=True))
    first = loop.ehlo()
    assert "STARTTLS" in first.extensions
    assert "AUTH" not in first.extensions  # the server offers AUTH only inside TLS
    [event] = loop.send(loop.client.starttls())
    assert codes([event]) == [("STARTTLS", 220)]
    assert isinstance(loop.server.next_event(), NeedData)
    loop.server.tls_established(tls_version="TLSv1.3", cipher="TEST")
    loop.client.tls_established()
    second = loop.ehlo()
    assert "STARTTLS" not in second.extensions
    assert second.extensions["AUTH"].split() == ["PLAIN", "LOGIN"]
    assert codes(loop.send(loop.client.auth_plain("user", "wrong"))) == [("AUTH", 535)]
    c = loop.client
    events = loop.send(c.auth_login("user", "secret"))
    assert events[0].reply.code == 334
    events = loop.send(c.auth_response())
    assert events[0].reply.code == 334
    assert codes(loop.send(c.auth_response())) == [("AUTH", 235)]
    assert loop.credentials == [("user", "wrong"), ("user", "secret")]
    assert loop.server.authenticated == "user"
    loop.send(c.mail("a@example.org") + c.rcpt("b@example.net") + c.data())
    loop.send(c.send_message(MESSAGES[1]))
    assert loop.received[0][2] == MESSAGES[1]


def test_loopback_reaches_starttls_event() -> None:
    # The server's StartTLSRequested decision is what our STARTTLS produced.
    loop = Loop(config(tls_available=True))
    loop.ehlo()
    loop.server.receive_data(loop.client.starttls())
    assert isinstance(loop.server.next_event(), StartTLSRequested)
