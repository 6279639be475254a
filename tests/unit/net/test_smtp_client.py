"""``mailmoat.net.smtp_client`` against scripted loopback servers.

Each server here is a few lines of asyncio that speak exactly the replies a test needs
(RFC 5321 syntax), so behaviours a real peer rarely shows can be pinned: timeouts, a 421,
STARTTLS response injection, a server that only answers once the whole pipelined group
arrived, BDAT framing. Expected octets come from the RFCs (and ``base64`` as the oracle
for AUTH), never from our own output.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailmoat.net.smtp_client import (
    SendError,
    Timeouts,
    check_certificate,
    default_port,
    find_queue_id,
    mx_hosts,
    send_message,
    send_to_domain,
)
from mailmoat.resolver import MX, RRType
from mailmoat.resolver.fake import FakeResolver
from mailmoat.smtp.replies import Reply

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
QUICK = Timeouts.uniform(2)
MESSAGE = b"Subject: t\r\n\r\nbody\r\n"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> int:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for task in tasks:
        task.cancel()


async def send(port: int, /, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "mail_from": "a@example.org", "rcpt_to": ["b@example.net"], "host": "127.0.0.1",
        "port": port, "mode": "plain", "helo": "client.example", "timeouts": QUICK,
    }
    message = kwargs.pop("message", MESSAGE)
    options.update(kwargs)
    return await send_message(message, **options)


async def line(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n")


async def reply(writer: asyncio.StreamWriter, text: bytes) -> None:
    writer.write(text)
    await writer.drain()


async def simple_server(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, ehlo: bytes, log: list[bytes]
) -> None:
    """A small server answering one command at a time; records every line and the content."""
    await reply(writer, b"220 test ESMTP\r\n")
    while True:
        command = await line(reader)
        log.append(command)
        verb = command[:4].upper()
        if verb == b"EHLO":
            await reply(writer, ehlo)
        elif verb == b"DATA":
            await reply(writer, b"354 go\r\n")
            content = await reader.readuntil(b"\r\n.\r\n")
            log.append(content)
            await reply(writer, b"250 2.0.0 Ok: queued as ABC123\r\n")
        elif verb == b"QUIT":
            await reply(writer, b"221 bye\r\n")
            return
        else:
            await reply(writer, b"250 ok\r\n")


# --- argument checks: nothing is sent ----------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"mail_from": "a@example.org\r\nRCPT TO:<x@evil.example>"},
        {"rcpt_to": ["b@example.net\nDATA"]},
        {"rcpt_to": ["b@example.net\0"]},
        {"helo": "client\r\nMAIL FROM:<x@y>"},
        {"host": "127.0.0.1\r\n"},
        {"username": "u\r\nx", "password": "p"},
        {"username": "u", "password": "p\nq"},
        {"rcpt_to": []},
        {"rcpt_to": ["not an address"]},
        {"mail_from": "a@@example.org"},
        {"username": "u"},
        {"mode": "tls"},
        {"starttls": "maybe"},
        {"port": 70000},
    ],
)
async def test_bad_arguments_refused_before_connecting(
    serve: Callable[[Handler], Awaitable[int]], kwargs: dict[str, Any]
) -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)

    port = await serve(handler)
    with pytest.raises(ValueError):
        await send(port, **kwargs)
    await asyncio.sleep(0.05)
    assert connections == []


async def test_message_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        await send_message("text", mail_from=None, rcpt_to="b@example.net", host="x")  # type: ignore[arg-type]


# --- failures ------------------------------------------------------------------------------------
async def test_silent_server_times_out(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    port = await serve(handler)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(SendError) as info:
        await send(port, timeouts=Timeouts.uniform(0.3))
    assert loop.time() - start < 2
    assert info.value.stage == "greeting"
    assert info.value.temporary
    assert "0.3 s" in str(info.value)


async def test_connection_refused_is_temporary() -> None:
    with socket.socket() as sock:  # a port nobody listens on (bound, then released)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SendError) as info:
        await send(port)
    assert info.value.stage == "connect"
    assert info.value.temporary
    assert "cannot connect" in str(info.value)


@pytest.mark.parametrize(
    ("greeting", "temporary", "after"),
    [
        # RFC 5321 §3.1: after a 554 greeting the client "SHOULD wait for ... QUIT"; after a
        # 421 the server closes (§3.8), so nothing more is sent.
        (b"554 5.3.2 go away\r\n", False, b"QUIT\r\n"),
        (b"421 4.3.2 busy\r\n", True, b""),
    ],
)
async def test_refused_greeting(
    serve: Callable[[Handler], Awaitable[int]], greeting: bytes, temporary: bool, after: bytes
) -> None:
    sent: list[bytes] = []
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, greeting)
        data = await reader.read(100)
        if data:
            await reply(writer, b"221 bye\r\n")
        sent.append(data)
        done.set()

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port)
    await asyncio.wait_for(done.wait(), 5)
    assert sent == [after]
    assert info.value.stage == "greeting"
    assert info.value.temporary is temporary
    assert info.value.reply is not None
    assert info.value.reply.code == int(greeting[:3])


async def test_421_after_mail(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250 x\r\n")
        await line(reader)
        await reply(writer, b"421 4.4.2 closing\r\n")

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port)
    assert info.value.stage == "mail"
    assert info.value.temporary
    assert info.value.reply == Reply(code=421, status=None, text="4.4.2 closing")


async def test_server_closing_mid_session(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port)
    assert info.value.stage == "ehlo"
    assert info.value.temporary
    assert "closed the connection" in str(info.value)


async def test_starttls_response_injection_refused(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    # CVE-2011-0411 class: octets after the 220 to STARTTLS would be read as if they came
    # over TLS. RFC 3207 §4.2 / §6.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 STARTTLS\r\n")
        await line(reader)
        await reply(writer, b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        await asyncio.sleep(5)

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port, mode="starttls")
    assert info.value.stage == "protocol"
    assert "STARTTLS" in str(info.value)


async def test_starttls_refused_with_require(serve: Callable[[Handler], Awaitable[int]]) -> None:
    sent: list[bytes] = []
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 STARTTLS\r\n")
        sent.append(await line(reader))
        await reply(writer, b"454 4.7.0 TLS not available\r\n")
        sent.append(await line(reader))
        await reply(writer, b"221 bye\r\n")
        done.set()

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port, mode="starttls")
    await asyncio.wait_for(done.wait(), 5)
    assert sent == [b"STARTTLS\r\n", b"QUIT\r\n"]  # no MAIL in cleartext
    assert info.value.stage == "starttls"
    assert info.value.temporary


async def test_helo_fallback(serve: Callable[[Handler], Awaitable[int]]) -> None:
    log: list[bytes] = []

    async def handler2(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 old server\r\n")
        log.append(await line(reader))
        await reply(writer, b"502 5.5.1 unknown\r\n")
        log.append(await line(reader))
        await reply(writer, b"250 old.example\r\n")
        while True:
            command = await line(reader)
            log.append(command)
            if command.startswith(b"DATA"):
                await reply(writer, b"354 go\r\n")
                log.append(await reader.readuntil(b"\r\n.\r\n"))
                await reply(writer, b"250 ok\r\n")
            elif command.startswith(b"QUIT"):
                await reply(writer, b"221 bye\r\n")
                return
            else:
                await reply(writer, b"250 ok\r\n")

    port = await serve(handler2)
    result = await send(port)
    assert log[:2] == [b"EHLO client.example\r\n", b"HELO client.example\r\n"]
    # No extension was advertised: no SIZE=/BODY= parameters (RFC 1869 §4).
    assert log[2] == b"MAIL FROM:<a@example.org>\r\n"
    assert dict(result.session.ehlo_before_tls) == {}


# --- pipelining, BDAT, SIZE, AUTH ------------------------------------------------------------------
async def test_pipelined_group_is_sent_before_any_reply(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 PIPELINING\r\n")
        # Answer nothing until the whole group (MAIL, RCPT, RCPT, DATA) is in: a client
        # that waited for the MAIL reply would time out here (RFC 2920 §3.1).
        for _ in range(4):
            received.append(await line(reader))
        await reply(writer, b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
        received.append(await reader.readuntil(b"\r\n.\r\n"))
        await reply(writer, b"250 ok\r\n")
        assert await line(reader) == b"QUIT\r\n"
        await reply(writer, b"221 bye\r\n")

    port = await serve(handler)
    result = await send(port, rcpt_to=["b@example.net", "gone@example.net"])
    assert received[:4] == [
        b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.net>\r\n",
        b"RCPT TO:<gone@example.net>\r\n", b"DATA\r\n",
    ]
    assert received[4] == MESSAGE + b".\r\n"
    assert result.used_pipelining
    assert result.accepted == ("b@example.net",)
    assert [r.reply.code for r in result.refused] == [550]


async def test_354_without_accepted_recipient_sends_no_content(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    after: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 PIPELINING\r\n")
        for _ in range(3):
            await line(reader)
        # A broken server: every RCPT refused, yet 354 to DATA (RFC 2920 §3.1 says 554).
        await reply(writer, b"250 ok\r\n550 no\r\n354 go\r\n")
        after.append(await reader.read())  # until the client closes

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port)
    assert info.value.stage == "rcpt"
    assert not info.value.temporary
    await asyncio.sleep(0.1)
    assert after == [b""]  # neither content nor QUIT (it would have been content)


async def test_bdat_chunks_are_sent_verbatim(serve: Callable[[Handler], Awaitable[int]]) -> None:
    chunks: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 CHUNKING\r\n")
        assert (await line(reader)).startswith(b"MAIL")
        await reply(writer, b"250 ok\r\n")
        assert (await line(reader)).startswith(b"RCPT")
        await reply(writer, b"250 ok\r\n")
        # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF
        command = await line(reader)
        assert command.startswith(b"BDAT ")
        size = int(command.split()[1])
        chunks.append(command)
        chunks.append(await reader.readexactly(size))
        await reply(writer, b"250 2.0.0 Ok: queued as Q1\r\n")
        assert await line(reader) == b"QUIT\r\n"
        await reply(writer, b"221 bye\r\n")

    port = await serve(handler)
    message = b"Subject: t\n\n.dot line\nbare lf\n"
    result = await send(port, message=message)
    expected = b"Subject: t\r\n\r\n.dot line\r\nbare lf\r\n"  # CRLF, no dot-stuffing
    assert chunks == [b"BDAT %d LAST\r\n" % len(expected), expected]
    assert result.used_bdat
    assert result.queue_id == "Q1"


async def test_size_parameter_and_8bitmime(serve: Callable[[Handler], Awaitable[int]]) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await simple_server(reader, writer, log=log,
                            ehlo=b"250-x\r\n250-SIZE 1000\r\n250 8BITMIME\r\n")

    port = await serve(handler)
    message = "Subject: t\r\n\r\ncafé\r\n".encode()
    await send(port, message=message)
    # RFC 1870 §4: SIZE=<octets>; RFC 6152 §3: BODY=8BITMIME for 8-bit content.
    assert log[1] == b"MAIL FROM:<a@example.org> SIZE=%d BODY=8BITMIME\r\n" % len(message)


async def test_size_too_large_is_refused_locally(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await simple_server(reader, writer, log=log, ehlo=b"250-x\r\n250 SIZE 10\r\n")

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port)
    assert info.value.stage == "size"
    assert not info.value.temporary
    await asyncio.sleep(0.05)
    assert not any(entry.startswith(b"MAIL") for entry in log)


async def test_auth_login_dialogue(serve: Callable[[Handler], Awaitable[int]]) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 AUTH LOGIN\r\n")
        log.append(await line(reader))
        await reply(writer, b"334 VXNlcm5hbWU6\r\n")  # "Username:"
        log.append(await line(reader))
        await reply(writer, b"334 UGFzc3dvcmQ6\r\n")  # "Password:"
        log.append(await line(reader))
        await reply(writer, b"235 2.7.0 ok\r\n")
        await simple_server_after_greeting(reader, writer, log)

    port = await serve(handler)
    result = await send(port, username="jöran", password="pässword", allow_plaintext_auth=True)
    assert log[:3] == [
        b"AUTH LOGIN\r\n",
        base64.b64encode("jöran".encode()) + b"\r\n",
        base64.b64encode("pässword".encode()) + b"\r\n",
    ]
    assert result.session.auth_mechanism == "LOGIN"


async def simple_server_after_greeting(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]
) -> None:
    while True:
        command = await line(reader)
        log.append(command)
        if command.startswith(b"DATA"):
            await reply(writer, b"354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            await reply(writer, b"250 ok\r\n")
        elif command.startswith(b"QUIT"):
            await reply(writer, b"221 bye\r\n")
            return
        else:
            await reply(writer, b"250 ok\r\n")


async def test_auth_plain_answers_an_empty_challenge(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 AUTH PLAIN\r\n")
        log.append(await line(reader))
        await reply(writer, b"334 \r\n")  # RFC 4954 §4: server ignores the initial response
        log.append(await line(reader))
        await reply(writer, b"235 ok\r\n")
        await simple_server_after_greeting(reader, writer, log)

    port = await serve(handler)
    await send(port, username="u", password="p", allow_plaintext_auth=True)
    # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
    token = base64.b64encode(b"\0u\0p")
    assert log[:2] == [b"AUTH PLAIN " + token + b"\r\n", token + b"\r\n"]


async def test_auth_not_offered(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await simple_server(reader, writer, log=[], ehlo=b"250 x\r\n")

    port = await serve(handler)
    with pytest.raises(SendError) as info:
        await send(port, username="u", password="p", allow_plaintext_auth=True)
    assert info.value.stage == "auth"
    assert "does not offer AUTH" in str(info.value)


# --- pure helpers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "queue_id"),
    [
        ("Ok: queued as 4Fq2Lm0n3Xz7", "4Fq2Lm0n3Xz7"),  # Postfix (status already stripped)
        ("2.0.0 Ok: queued as 9D28C22911F", "9D28C22911F"),
        ("OK id=1qAbCd-000123-Xy", "1qAbCd-000123-Xy"),  # Exim
        ("2.0.0 3ASJhV1a012345 Message accepted for delivery", "3ASJhV1a012345"),  # sendmail
        ("2.0.0 OK  1732804000 5b1f17b1804b1-434a1b2c3d4si12345678f.123 - gsmtp",
         "5b1f17b1804b1-434a1b2c3d4si12345678f.123"),  # Gmail
        ("ok 1732804000 qp 4321", "4321"),  # qmail
        ("OK", None),  # aiosmtpd
        ("Message accepted for delivery", None),
    ],
)
def test_find_queue_id(text: str, queue_id: str | None) -> None:
    assert find_queue_id(Reply(code=250, status=None, text=text)) == queue_id


def test_default_ports() -> None:
    assert default_port("implicit-tls") == 465  # RFC 8314 §7.3
    assert default_port("starttls", authenticated=True) == 587  # RFC 6409 §3.1
    assert default_port("starttls") == 25
    assert default_port("plain") == 25


def test_uniform_timeouts_cap_every_step() -> None:
    assert Timeouts().data_term == 600  # RFC 5321 §4.5.3.2.6: 10 minutes
    assert Timeouts().data_init == 120  # §4.5.3.2.2: 2 minutes
    capped = Timeouts.uniform(5)
    assert all(getattr(capped, name) == 5 for name in Timeouts.__dataclass_fields__)
    with pytest.raises(ValueError):
        Timeouts.uniform(0)


def test_check_certificate(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    leaf = ca.issue_cert("mx.example.net", "192.0.2.25")
    chain = [
        x509.load_pem_x509_certificate(blob.bytes()).public_bytes(Encoding.DER)
        for blob in leaf.cert_chain_pems
    ]
    assert check_certificate(chain, "mx.example.net", cafile=cafile) is None
    assert check_certificate(chain, "MX.Example.Net.", cafile=cafile) is None
    assert check_certificate(chain, "192.0.2.25", cafile=cafile) is None
    wrong = check_certificate(chain, "mx.example.com", cafile=cafile)
    assert wrong is not None
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    assert check_certificate(chain, "mx.example.net", cafile=other_ca) == (
        "the certificate does not chain to a trusted CA (unknown or missing issuer)"
    )
    later = datetime.datetime(3001, 1, 1, tzinfo=datetime.UTC)  # trustme certs end in 3000
    expired = check_certificate(chain, "mx.example.net", cafile=cafile, now=later)
    assert expired is not None
    assert check_certificate([], "x.example") == "the server sent no certificate"


async def test_starttls_policy_none_stays_plain(serve: Callable[[Handler], Awaitable[int]]) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await simple_server(reader, writer, log=log, ehlo=b"250-x\r\n250 STARTTLS\r\n")

    port = await serve(handler)
    result = await send(port, mode="starttls", starttls="none")
    assert not any(entry.startswith(b"STARTTLS") for entry in log)
    assert result.session.tls is None


async def test_opportunistic_continues_after_454(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250-x\r\n250 STARTTLS\r\n")
        log.append(await line(reader))
        await reply(writer, b"454 4.7.0 TLS not available due to temporary reason\r\n")
        await simple_server_after_greeting(reader, writer, log)

    port = await serve(handler)
    result = await send(port, mode="starttls", starttls="opportunistic")
    assert log[0] == b"STARTTLS\r\n"
    assert log[1] == b"MAIL FROM:<a@example.org>\r\n"
    assert result.session.tls is None


# --- MX (RFC 5321 §5.1, RFC 7505) with an in-memory zone -------------------------------------------
def _zone() -> FakeResolver:
    zone = FakeResolver()
    zone.add("example.net", MX(preference=20, exchange="mx2.example.net"))
    zone.add("example.net", MX(preference=10, exchange="mx1.example.net"))
    zone.add("mx1.example.net", ipaddress.IPv4Address("127.0.0.2"))  # nobody listens there
    zone.add("mx2.example.net", ipaddress.IPv4Address("127.0.0.1"))
    zone.add("nullmx.example", MX(preference=0, exchange=""))
    zone.add("nomx.example", ipaddress.IPv4Address("127.0.0.1"))
    return zone


async def test_mx_hosts() -> None:
    zone = _zone()
    assert await mx_hosts("example.net", zone) == ("mx1.example.net", "mx2.example.net")
    assert await mx_hosts("Example.NET.", zone) == ("mx1.example.net", "mx2.example.net")
    # No MX: the implicit MX is the domain itself.
    assert await mx_hosts("nomx.example", zone) == ("nomx.example",)
    with pytest.raises(SendError) as info:
        await mx_hosts("nullmx.example", zone)
    assert info.value.stage == "dns"
    assert not info.value.temporary
    assert "RFC 7505" in str(info.value)
    with pytest.raises(SendError) as info:
        await mx_hosts("nosuch.example", zone)
    assert not info.value.temporary
    assert "NXDOMAIN" in str(info.value)


async def test_mx_equal_preferences_are_shuffled() -> None:
    zone = FakeResolver()
    names = [f"mx{i}.example.org" for i in range(6)]
    for name in names:
        zone.add("example.org", MX(preference=10, exchange=name))
    zone.add("example.org", MX(preference=5, exchange="first.example.org"))
    orders = {await mx_hosts("example.org", zone) for _ in range(40)}
    assert all(order[0] == "first.example.org" for order in orders)
    assert all(sorted(order[1:]) == names for order in orders)
    assert len(orders) > 1  # 6! orders; 40 draws all equal has probability ~0


async def test_send_to_domain_falls_back_to_the_next_mx(
    serve: Callable[[Handler], Awaitable[int]]
) -> None:
    log: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await simple_server(reader, writer, log=log, ehlo=b"250 mx2\r\n")

    port = await serve(handler)
    zone = _zone()
    result = await send_to_domain(
        MESSAGE, domain="example.net", resolver=zone, mail_from="a@example.org",
        rcpt_to=["b@example.net"], port=port, mode="plain", helo="client.example",
        timeouts=QUICK,
    )
    assert result.session.host == "127.0.0.1"
    assert log[-2] == MESSAGE + b".\r\n"
    assert ("mx1.example.net", RRType.A) in zone.queries  # mx1 was tried first


async def test_send_to_domain_keeps_a_refusal(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, b"220 x\r\n")
        await line(reader)
        await reply(writer, b"250 x\r\n")
        await line(reader)
        await reply(writer, b"550 5.7.1 sender refused\r\n")
        await line(reader)
        await reply(writer, b"221 bye\r\n")

    port = await serve(handler)
    zone = FakeResolver()
    zone.add("example.net", MX(preference=10, exchange="mx2.example.net"))
    zone.add("example.net", MX(preference=20, exchange="mx3.example.net"))
    zone.add("mx2.example.net", ipaddress.IPv4Address("127.0.0.1"))
    zone.add("mx3.example.net", ipaddress.IPv4Address("127.0.0.1"))
    with pytest.raises(SendError) as info:
        await send_to_domain(
            MESSAGE, domain="example.net", resolver=zone, mail_from="a@example.org",
            rcpt_to="b@example.net", port=port, mode="plain", helo="c.example", timeouts=QUICK,
        )
    assert info.value.stage == "mail"
    # The answer about the message stands: mx3 is not asked (its address is never looked up).
    assert all(name != "mx3.example.net" for name, _ in zone.queries)
