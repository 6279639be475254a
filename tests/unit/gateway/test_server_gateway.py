"""The gateway in-process (one worker in the test's event loop): connection hygiene, graceful
stop and reload. Clients are raw asyncio streams, so every byte and reply is under test control.

Expected replies come from the RFCs and Postfix's practice: 421 closes the channel (RFC 5321
§3.8); 4.7.0 for connection-count limits (Postfix smtpd_client_connection_count_limit); 4.4.2
for timeouts (Postfix "421 4.4.2 Error: timeout exceeded"); 500 5.5.2 for a line over the RFC
5321 §4.5.3.1.4 limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailmoat.gateway.config import Config, parse_config
from mailmoat.gateway.server import Gateway
from mailmoat.gateway.users import UserDB, make_user
from mailmoat.net.tls import generate_self_signed

pytestmark = pytest.mark.timeout(60)

HOST = "mx.test"


def make_config(directory: Path, *, limits: str = "", listeners: str = "") -> Config:
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        generate_self_signed(cert, key, [HOST, "127.0.0.1"])
    users = directory / "users.jsonl"
    if not users.exists():
        UserDB().with_user(make_user("alice", "pw-alice", ["alice@mx.test"])).save(users)
    listeners = listeners or (
        '[[listener]]\naddress = "127.0.0.1"\nport = 0\nmode = "plain"\nrole = "mx"\n'
        '[[listener]]\naddress = "127.0.0.1"\nport = 0\nmode = "implicit-tls"\n'
        'role = "submission"\n'
    )
    text = (
        f'[server]\nhostname = "{HOST}"\nworkers = 1\n{listeners}'
        '[tls]\ncertificates = [ { cert = "cert.pem", key = "key.pem" } ]\n'
        f'[relay]\nlocal_domains = ["{HOST}"]\n'
        "[spool]\nfsync = false\n"
        f"[limits]\n{limits}\n"
    )
    return parse_config(text, base_dir=directory)


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[object]:
    started: list[Gateway] = []

    async def make(limits: str = "", listeners: str = "") -> Gateway:
        gateway = Gateway(make_config(tmp_path, limits=limits, listeners=listeners))
        await gateway.start()
        started.append(gateway)
        return gateway

    yield make
    for client in OPEN:
        client.writer.close()
        with contextlib.suppress(Exception):
            await client.writer.wait_closed()
    OPEN.clear()
    for gateway in started:
        await gateway.stop(grace=1)


OPEN: list[Client] = []


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        client = cls(reader, writer)
        OPEN.append(client)
        return client

    async def reply(self, timeout: float = 5.0) -> bytes:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                return b"".join(lines)
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def cmd(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def closed(self, timeout: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    def close(self) -> None:
        self.writer.close()


def port_of(gateway: Gateway, mode: str) -> int:
    return next(b.port for b in gateway.listeners if b.config.mode == mode)


async def test_per_ip_connection_cap(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway("max_connections_per_ip = 2")
    port = port_of(gateway, "plain")
    first, second = await Client.connect(port), await Client.connect(port)
    assert (await first.reply()).startswith(b"220 ")
    assert (await second.reply()).startswith(b"220 ")
    third = await Client.connect(port)
    assert (await third.reply()).startswith(b"421 4.7.0 ")
    assert await third.closed()
    first.close()
    await asyncio.sleep(0.1)
    fourth = await Client.connect(port)
    assert (await fourth.reply()).startswith(b"220 ")
    for client in (second, third, fourth):
        client.close()


async def test_global_connection_cap(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway("max_connections = 3")
    port = port_of(gateway, "plain")
    clients = [await Client.connect(port) for _ in range(3)]
    for client in clients:
        assert (await client.reply()).startswith(b"220 ")
    extra = await Client.connect(port)
    assert (await extra.reply()).startswith(b"421 4.7.0 ")
    for client in [*clients, extra]:
        client.close()


async def test_idle_client_dropped(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway("[limits.timeouts]\nserver = 0.4")
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    start = time.monotonic()
    assert (await client.reply(timeout=5)).startswith(b"421 4.4.2 ")
    assert await client.closed()
    assert 0.3 < time.monotonic() - start < 3
    assert not gateway.tracker.live


async def test_slowloris_trickle_does_not_keep_a_connection(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway("[limits.timeouts]\nserver = 0.6")
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    start = time.monotonic()
    dropped = False
    for byte in b"EHLO a-very-slow-client.example.org and more and more":
        client.writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
        if client.reader.at_eof() or len(client.reader._buffer):  # type: ignore[attr-defined]
            dropped = True
            break
    assert dropped
    assert (await client.reply()).startswith(b"421 4.4.2 ")
    assert time.monotonic() - start < 2.5


async def test_endless_line_keeps_memory_bounded(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway()
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    (proto,) = gateway.tracker.live
    chunk = b"A" * 65536
    peak = 0
    for _ in range(128):  # 8 MiB without a line end
        client.writer.write(chunk)
        await client.writer.drain()
        peak = max(peak, proto.engine.buffered)
    client.writer.write(b"\r\n")
    assert (await client.reply()).startswith(b"500 5.5.2 ")
    assert peak <= 64 * 1024, peak
    assert (await client.cmd(b"NOOP")).startswith(b"250 ")
    client.close()


async def test_pipelining_client_that_never_reads_is_paused(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway()
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    (proto,) = gateway.tracker.live
    batch = b"NOOP\r\n" * 10000
    stalled = False
    for _ in range(500):  # up to 30 MB of commands, never reading a reply
        client.writer.write(batch)
        try:
            await asyncio.wait_for(client.writer.drain(), 0.5)
        except TimeoutError:
            stalled = True  # the server stopped reading: flow control works
            break
    assert stalled
    transport = proto._transport
    assert transport is not None
    assert transport.get_write_buffer_size() < 4 * 1024 * 1024
    client.writer.transport.abort()


async def test_graceful_stop_lets_a_transaction_finish(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway()
    port = port_of(gateway, "plain")
    idle, busy = await Client.connect(port), await Client.connect(port)
    for client in (idle, busy):
        assert (await client.reply()).startswith(b"220 ")
        assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    assert (await busy.cmd(b"MAIL FROM:<a@b.example>")).startswith(b"250")
    assert (await busy.cmd(b"RCPT TO:<bob@mx.test>")).startswith(b"250")
    assert (await busy.cmd(b"DATA")).startswith(b"354")
    stopping = asyncio.create_task(gateway.stop(grace=5))
    assert (await idle.reply()).startswith(b"421 ")  # idle sessions close at once
    busy.writer.write(b"Subject: last\r\n\r\nbody\r\n.\r\n")
    assert (await busy.reply()).startswith(b"250 2.0.0 ")
    assert (await busy.reply()).startswith(b"421 ")
    await asyncio.wait_for(stopping, 5)
    assert gateway.spool is not None
    assert len(gateway.spool.list()) == 1
    refused = True
    try:
        await Client.connect(port)
        refused = False
    except OSError:
        pass
    assert refused


async def test_reload_picks_up_new_users_and_certificate(  # type: ignore[no-untyped-def]
    make_gateway, tmp_path: Path,
) -> None:
    gateway = await make_gateway()
    port = port_of(gateway, "implicit-tls")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    async def serial() -> bytes:
        client = await Client.connect(port, ctx)
        ssl_object = client.writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        await client.reply()
        client.close()
        return bytes(der)

    before = await serial()
    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", [HOST])
    users = UserDB.load(tmp_path / "users.jsonl").with_user(make_user("bob", "pw-bob"))
    users.save(tmp_path / "users.jsonl")
    assert gateway.authenticator.users.get("bob") is None
    gateway.reload()
    assert await serial() != before
    assert gateway.authenticator.users.get("bob") is not None


async def test_client_half_close_still_gets_its_250(make_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A script that sends everything and shuts its side down (printf ... | nc -N) must still
    # get the 250 for a message we made durable, then our 221.
    gateway = await make_gateway()
    assert gateway.spool is not None
    durable = gateway.spool._make_durable

    async def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.3)  # the EOF arrives while the commit is running
        await durable(*args, **kwargs)

    monkeypatch.setattr(gateway.spool, "_make_durable", slow)
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    assert (await client.cmd(b"MAIL FROM:<a@b.example>")).startswith(b"250")
    assert (await client.cmd(b"RCPT TO:<bob@mx.test>")).startswith(b"250")
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(b"Subject: x\r\n\r\nhalf\r\n.\r\nQUIT\r\n")
    client.writer.write_eof()
    rest = await asyncio.wait_for(client.reader.read(), 5)
    assert rest.startswith(b"250 2.0.0 Ok: queued as ")
    assert b"\r\n221 " in rest
    assert gateway.spool is not None
    assert len(gateway.spool.list()) == 1


async def test_ipv6_listener(make_gateway) -> None:  # type: ignore[no-untyped-def]
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    gateway = await make_gateway(
        listeners='[[listener]]\naddress = "::1"\nport = 0\nmode = "plain"\nrole = "mx"\n')
    reader, writer = await asyncio.open_connection("::1", gateway.listeners[0].port)
    client = Client(reader, writer)
    OPEN.append(client)
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO v6.test")).startswith(b"250")
    assert (await client.cmd(b"MAIL FROM:<a@b.example>")).startswith(b"250")
    assert (await client.cmd(b"RCPT TO:<bob@mx.test>")).startswith(b"250")
    assert (await client.cmd(b"DATA")).startswith(b"354")
    reply = await client.cmd(b"Subject: v6\r\n\r\nhi\r\n.")
    assert reply.startswith(b"250 ")
    assert gateway.spool is not None
    message = gateway.spool.read_message(reply.split()[-1].decode())
    assert message.startswith(b"Received: from v6.test (unknown [IPv6:::1])")


async def test_silent_tls_client_is_dropped(make_gateway) -> None:  # type: ignore[no-untyped-def]
    # Connects to the implicit-TLS port and never sends a ClientHello (or stalls after
    # STARTTLS): the handshake has the server timeout too.
    gateway = await make_gateway("[limits.timeouts]\nserver = 0.5")
    for mode in ("implicit-tls", "plain"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway, mode))
        if mode == "plain":
            client = Client(reader, writer)
            assert (await client.reply()).startswith(b"220 ")
            assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
            assert (await client.cmd(b"STARTTLS")).startswith(b"220 ")
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - start < 4
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.1)
    assert not gateway.tracker.live


async def test_stop_cuts_a_stalled_starttls_handshake(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway()
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    assert (await client.cmd(b"STARTTLS")).startswith(b"220 ")
    start = time.monotonic()
    await gateway.stop(grace=0.5)  # the handshake never comes: cut off after the grace
    assert time.monotonic() - start < 3
    assert not gateway.tracker.live
    assert await asyncio.wait_for(client.reader.read(), 5) == b""


async def test_data_trickle_is_dropped_after_the_data_block_timeout(make_gateway) -> None:  # type: ignore[no-untyped-def]
    # The server timeout stays long (300 s); DATA has its own, short one (RFC 5321
    # §4.5.3.2.5); one byte every 0.1 s never completes a line, so it is no progress.
    gateway = await make_gateway("[limits.timeouts]\ndata_block = 0.6")
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    assert (await client.cmd(b"MAIL FROM:<a@b.example>")).startswith(b"250")
    assert (await client.cmd(b"RCPT TO:<bob@mx.test>")).startswith(b"250")
    assert (await client.cmd(b"DATA")).startswith(b"354")
    start = time.monotonic()
    for _ in range(40):
        client.writer.write(b"x")
        await asyncio.sleep(0.1)
        if client.reader.at_eof() or len(client.reader._buffer):  # type: ignore[attr-defined]
            break
    assert (await client.reply()).startswith(b"421 4.4.2 ")
    assert time.monotonic() - start < 2.5
    assert gateway.spool is not None
    assert not list(gateway.spool.tmp_dir.glob("*.part"))


async def test_mx_can_require_tls(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway(listeners=(
        '[[listener]]\naddress = "127.0.0.1"\nport = 0\nmode = "starttls"\nrole = "mx"\n'
        "require_tls = true\n"))
    client = await Client.connect(gateway.listeners[0].port)
    assert (await client.reply()).startswith(b"220 ")
    ehlo = await client.cmd(b"EHLO c.test")
    assert b"STARTTLS" in ehlo
    assert b"AUTH" not in ehlo  # no AUTH on mx listeners
    # RFC 3207 §4: "530 Must issue a STARTTLS command first".
    assert (await client.cmd(b"MAIL FROM:<a@b.example>")).startswith(b"530 5.7.0 ")
