"""The ``before_mail`` hook and ``mail_params`` of ``mailmoat.net.smtp_client.send_message``,
against a scripted loopback server with STARTTLS (RFC 3207).

The server records every command line; the hook's view is checked against what the server
sent (its EHLO keywords after TLS, the certificate chain trustme issued) - independent oracles,
not our own output. RFC 8689 §4.1: REQUIRETLS is a MAIL FROM parameter without a value.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailmoat.errors import LocalProtocolError
from mailmoat.net.smtp_client import (
    BeforeMail,
    SendError,
    Timeouts,
    check_envelope,
    send_message,
)

trustme = pytest.importorskip("trustme")
pytestmark = pytest.mark.timeout(30)

MESSAGE = b"Subject: t\r\n\r\nbody\r\n"
BEFORE_TLS = b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
AFTER_TLS = b"250-mx.test\r\n250-8BITMIME\r\n250 REQUIRETLS\r\n"


class Server:
    """One STARTTLS server on loopback; ``log`` holds every command line received."""

    def __init__(self, context: ssl.SSLContext, *, after_tls: bytes = AFTER_TLS) -> None:
        self.context = context
        self.after_tls = after_tls
        self.log: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        tls = False
        try:
            writer.write(b"220 mx.test ESMTP\r\n")
            await writer.drain()
            while True:
                command = await reader.readuntil(b"\r\n")
                self.log.append(command)
                verb = command[:4].upper()
                if verb == b"EHLO":
                    writer.write(self.after_tls if tls else BEFORE_TLS)
                elif command.upper() == b"STARTTLS\r\n":
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.context)
                    tls = True
                    continue
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    self.log.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def verbs(self) -> list[bytes]:
        return [c.split(b" ", 1)[0].split(b":", 1)[0].rstrip(b"\r\n").upper()
                for c in self.log if not c.endswith(b"\r\n.\r\n")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path, list[bytes]]:
    """A server context whose chain is leaf + intermediate, the root CA file, and the chain
    the server sends (DER, leaf first) as trustme issued it."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("mx.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    cafile = tmp_path_factory.mktemp("pki") / "ca.pem"
    root.cert_pem.write_to_path(str(cafile))
    chain = [x509.load_pem_x509_certificate(blob.bytes()).public_bytes(Encoding.DER)
             for blob in leaf.cert_chain_pems]
    return context, cafile, chain


@pytest.fixture
async def start(pki: tuple[ssl.SSLContext, Path, list[bytes]]
                ) -> AsyncIterator[Callable[..., Awaitable[tuple[Server, int]]]]:
    servers: list[tuple[asyncio.Server, Server]] = []

    async def run(**kwargs: Any) -> tuple[Server, int]:
        server = Server(pki[0], **kwargs)
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append((listener, server))
        return server, int(listener.sockets[0].getsockname()[1])

    yield run
    for listener, server in servers:
        listener.close()
        await listener.wait_closed()
        for task in server.tasks:
            task.cancel()


async def _send(port: int, cafile: Path, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "mail_from": "a@example.org", "rcpt_to": ["b@example.net"], "host": "127.0.0.1",
        "port": port, "mode": "starttls", "starttls": "require", "server_name": "mx.test",
        "cafile": cafile, "helo": "client.test", "timeouts": Timeouts.uniform(5),
    }
    return await send_message(MESSAGE, **{**options, **kwargs})


async def test_hook_sees_the_protected_session_and_the_chain(
    start: Callable[..., Awaitable[tuple[Server, int]]],
    pki: tuple[ssl.SSLContext, Path, list[bytes]],
) -> None:
    _, cafile, chain = pki
    server, port = await start()
    seen: list[tuple[BeforeMail, list[bytes]]] = []

    def hook(info: BeforeMail) -> None:
        seen.append((info, server.verbs()))

    result = await _send(port, cafile, before_mail=hook)
    [(info, verbs_then)] = seen  # called once
    # After STARTTLS and the second EHLO, before MAIL (RFC 3207 §4.2: the EHLO after TLS).
    assert verbs_then == [b"EHLO", b"STARTTLS", b"EHLO"]
    assert info.session.tls is not None
    assert info.session.tls.verified
    assert set(info.session.capabilities) == {"8BITMIME", "REQUIRETLS"}
    assert list(info.peer_chain) == chain  # leaf and intermediate, as the server sent them
    assert len(chain) == 2
    assert server.verbs()[3:] == [b"MAIL", b"RCPT", b"DATA", b"QUIT"]
    assert result.final_reply.code == 250


async def test_hook_abort_sends_nothing_of_the_transaction(
    start: Callable[..., Awaitable[tuple[Server, int]]],
    pki: tuple[ssl.SSLContext, Path, list[bytes]],
) -> None:
    server, port = await start()

    def hook(info: BeforeMail) -> None:
        raise info.abort("policy says no", temporary=False)

    with pytest.raises(SendError) as caught:
        await _send(port, pki[1], before_mail=hook)
    err = caught.value
    assert str(err) == "policy says no"
    assert (err.stage, err.temporary) == ("tls", False)
    assert err.session.tls is not None  # what was negotiated up to the refusal
    assert server.verbs() == [b"EHLO", b"STARTTLS", b"EHLO", b"QUIT"]


async def test_async_hook_is_awaited(
    start: Callable[..., Awaitable[tuple[Server, int]]],
    pki: tuple[ssl.SSLContext, Path, list[bytes]],
) -> None:
    server, port = await start()
    order: list[str] = []

    async def hook(info: BeforeMail) -> None:
        await asyncio.sleep(0.01)
        order.append(f"hook after {len(server.verbs())} commands")

    await _send(port, pki[1], before_mail=hook)
    assert order == ["hook after 3 commands"]
    assert b"MAIL" in server.verbs()


async def test_hook_in_cleartext_gets_no_chain(
    start: Callable[..., Awaitable[tuple[Server, int]]],
    pki: tuple[ssl.SSLContext, Path, list[bytes]],
) -> None:
    server, port = await start()
    seen: list[BeforeMail] = []
    await _send(port, pki[1], starttls="none", before_mail=seen.append)
    [info] = seen
    assert info.session.tls is None
    assert info.peer_chain == ()
    assert set(info.session.capabilities) == {"PIPELINING", "STARTTLS"}
    assert server.verbs()[:2] == [b"EHLO", b"MAIL"]


async def test_requiretls_mail_parameter(
    start: Callable[..., Awaitable[tuple[Server, int]]],
    pki: tuple[ssl.SSLContext, Path, list[bytes]],
) -> None:
    server, port = await start()
    await _send(port, pki[1], mail_params=[("REQUIRETLS", None)])
    mail = next(c for c in server.log if c.upper().startswith(b"MAIL"))
    assert mail == b"MAIL FROM:<a@example.org> REQUIRETLS\r\n"  # RFC 8689 §4.1


async def test_requiretls_not_advertised_is_refused_by_the_engine(
    start: Callable[..., Awaitable[tuple[Server, int]]],
    pki: tuple[ssl.SSLContext, Path, list[bytes]],
) -> None:
    server, port = await start(after_tls=b"250-mx.test\r\n250 8BITMIME\r\n")
    with pytest.raises(LocalProtocolError):
        await _send(port, pki[1], mail_params=[("REQUIRETLS", None)])
    assert b"MAIL" not in server.verbs()


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"rcpt_to": ["b@example.net\r\nRSET"]}, "recipient"),
    ({"mail_from": "a@example.org>\r\nDATA"}, "sender"),
    ({"helo": "bad\nname"}, "helo"),
    ({"mail_params": [("X", "a\r\nb")]}, "MAIL parameter"),
    ({"host": "h\0"}, "host"),
    ({"rcpt_to": []}, "at least one recipient"),
    ({"rcpt_to": ["not an address"]}, "recipient"),
])
def test_check_envelope_refuses(kwargs: dict[str, Any], fragment: str) -> None:
    args = {"mail_from": "a@example.org", "rcpt_to": ["b@example.net"], **kwargs}
    mail_from = args.pop("mail_from")
    rcpt_to = args.pop("rcpt_to")
    with pytest.raises(ValueError, match=fragment):
        check_envelope(mail_from, rcpt_to, **args)


def test_check_envelope_returns_the_helo_name() -> None:
    assert check_envelope(None, ["b@example.net"], helo="out.example") == "out.example"
    assert check_envelope("a@example.org", ["b@example.net"])  # this host's name or localhost
