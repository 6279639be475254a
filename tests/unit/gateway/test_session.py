# ruff: noqa: F811  (the make_gateway fixture is imported, then requested by name)
"""Session policy with the gateway in-process: durability order, spool failures, content
faults, BDAT, AUTH rules. Replies are checked against RFC 5321 / RFC 4954 / RFC 3463 codes.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

import pytest
from test_server_gateway import Client, make_gateway, port_of  # noqa: F401  (fixture)

from mailmoat.errors import SpoolError
from mailmoat.gateway.server import Gateway
from mailmoat.spool import Spool

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"Subject: hi\r\nMessage-ID: <1@c.test>\r\n\r\nhello\r\n"


async def start_mail(client: Client, sender: bytes = b"a@elsewhere.example") -> None:
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    assert (await client.cmd(b"MAIL FROM:<" + sender + b">")).startswith(b"250 ")
    assert (await client.cmd(b"RCPT TO:<bob@mx.test>")).startswith(b"250 ")


def parts(spool: Spool) -> list[Path]:
    return list(spool.tmp_dir.glob("*.part"))


async def test_250_only_after_the_spool_commit(make_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()
    spool = gateway.spool
    assert spool is not None
    release = asyncio.Event()
    original = spool._make_durable

    async def slow_durable(*args, **kwargs):  # type: ignore[no-untyped-def]
        await release.wait()
        await original(*args, **kwargs)

    monkeypatch.setattr(spool, "_make_durable", slow_durable)
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(MESSAGE + b".\r\n")
    with pytest.raises(TimeoutError):
        await client.reply(timeout=0.5)  # no reply while the message is not durable
    assert spool.list() == []
    release.set()
    reply = await client.reply()
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    spool_id = reply.split()[-1].decode()
    assert spool.list() == [spool_id]
    stored = spool.read_message(spool_id)
    assert stored.startswith(b"Received: from c.test (unknown [127.0.0.1])")
    assert stored.endswith(MESSAGE)
    entry = spool.get(spool_id)
    assert entry.envelope.mail_from == "a@elsewhere.example"
    assert [r.address for r in entry.envelope.rcpts] == ["bob@mx.test"]
    assert entry.envelope.helo == "c.test"
    assert entry.envelope.client_ip == "127.0.0.1"
    assert entry.envelope.tls is None


async def test_spool_unavailable_at_data_is_451(make_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()

    def broken(**_: object) -> None:
        raise SpoolError("disk full")

    monkeypatch.setattr(gateway.spool, "open_writer", broken)
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    assert (await client.cmd(b"DATA")).startswith(b"451 4.3.0 ")
    assert (await client.cmd(b"NOOP")).startswith(b"250 ")


async def test_commit_failure_is_451_and_leaves_nothing(make_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()
    spool = gateway.spool
    assert spool is not None

    def broken(batch: list[object]) -> list[SpoolError | None]:  # the disk refuses fsync
        return [SpoolError("cannot fsync spool file: Input/output error")] * len(batch)

    monkeypatch.setattr(spool, "_fsync_all", broken)
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(MESSAGE + b".\r\n")
    assert (await client.reply()).startswith(b"451 4.3.0 ")
    assert spool.list() == []
    assert parts(spool) == []


async def test_refused_content_leaves_no_part_file(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()
    assert gateway.spool is not None
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(b"Subject: smuggle\r\n\r\nbare\nLF\r\n.\r\n")
    reply = await client.reply()
    assert reply[:1] == b"5", reply  # RFC 5321 §2.3.8: bare LF refused
    assert gateway.spool.list() == []
    assert parts(gateway.spool) == []
    assert (await client.cmd(b"NOOP")).startswith(b"250 ")


async def test_message_over_the_size_limit(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway("max_message_size = 2048")
    assert gateway.spool is not None
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 0)
    client.writer.write((b"y" * 70 + b"\r\n") * 100 + b".\r\n")
    assert (await client.reply()).startswith(b"552 ")  # RFC 1870 / RFC 5321 §4.5.3.1.10
    assert gateway.spool.list() == []
    assert parts(gateway.spool) == []


async def test_bdat_message_is_stored_whole(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()
    assert gateway.spool is not None
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    first, second = MESSAGE[:20], MESSAGE[20:]
    client.writer.write(b"BDAT %d\r\n" % len(first) + first)
    assert (await client.reply()).startswith(b"250 ")
    client.writer.write(b"BDAT %d LAST\r\n" % len(second) + second)
    reply = await client.reply()
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    spool_id = reply.split()[-1].decode()
    assert gateway.spool.read_message(spool_id).endswith(MESSAGE)


def plain(authzid: str, user: str, password: str) -> bytes:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


async def test_auth_rules(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()
    port = port_of(gateway, "implicit-tls")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    async def session() -> Client:
        client = await Client.connect(port, ctx)
        assert (await client.reply()).startswith(b"220 ")
        ehlo = await client.cmd(b"EHLO c.test")
        assert b"AUTH PLAIN LOGIN" in ehlo
        return client

    client = await session()
    # RFC 4616 §2: an authzid other than the login asks for proxy authorisation: refused.
    assert (await client.cmd(b"AUTH PLAIN " + plain("bob", "alice", "pw-alice"))).startswith(
        b"535 5.7.8")
    assert (await client.cmd(b"AUTH PLAIN " + plain("alice", "alice", "pw-alice"))).startswith(
        b"235 2.7.0")
    assert (await client.cmd(b"MAIL FROM:<bob@mx.test>")).startswith(b"553 5.7.1")
    assert (await client.cmd(b"MAIL FROM:<alice@mx.test>")).startswith(b"250 ")
    # Authenticated: relaying to another domain is allowed (RFC 6409 §1).
    assert (await client.cmd(b"RCPT TO:<friend@other.example>")).startswith(b"250 ")
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(MESSAGE + b".\r\n")
    reply = await client.reply()
    assert reply.startswith(b"250 2.0.0 ")
    assert gateway.spool is not None
    entry = gateway.spool.get(reply.split()[-1].decode())
    assert entry.envelope.auth_user == "alice"
    assert entry.envelope.tls is not None
    assert entry.envelope.tls.version == "TLSv1.3"
    message = gateway.spool.read_message(entry.id)
    assert b"with ESMTPSA id " + entry.id.encode() in message.replace(b"\r\n\t", b" ")

    # Failures are rate-limited per IP: after the burst even the right password gets 454.
    failures = 0
    while failures < 12:
        client = await session()
        for _ in range(3):
            reply = await client.cmd(b"AUTH PLAIN " + plain("", "alice", "wrong"))
            failures += 1
            if not reply.startswith(b"535"):
                break
        client.close()
    client = await session()
    reply = await client.cmd(b"AUTH PLAIN " + plain("", "alice", "pw-alice"))
    assert reply.startswith(b"454 4.7.0"), reply


async def test_a_policy_bug_is_a_451_not_a_crash(make_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gateway: Gateway = await make_gateway()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(gateway.relay, "check", broken)
    client = await Client.connect(port_of(gateway, "plain"))
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.cmd(b"EHLO c.test")).startswith(b"250")
    assert (await client.cmd(b"MAIL FROM:<a@b.example>")).startswith(b"250 ")
    assert (await client.cmd(b"RCPT TO:<bob@mx.test>")).startswith(b"451 4.3.0 ")
    assert (await client.cmd(b"NOOP")).startswith(b"250 ")


async def test_client_gone_during_commit(make_gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The client vanishes while its message is being made durable: the commit completes (the
    # message is safe; the client will retry: a duplicate delivery, RFC 1047), nothing leaks.
    gateway: Gateway = await make_gateway()
    spool = gateway.spool
    assert spool is not None
    release = asyncio.Event()
    original = spool._make_durable

    async def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        await release.wait()
        await original(*args, **kwargs)

    monkeypatch.setattr(spool, "_make_durable", slow)
    client = await Client.connect(port_of(gateway, "plain"))
    await start_mail(client)
    assert (await client.cmd(b"DATA")).startswith(b"354")
    client.writer.write(MESSAGE + b".\r\n")
    await asyncio.sleep(0.2)
    client.writer.transport.abort()
    await asyncio.sleep(0.2)
    release.set()  # (reading is paused during the commit: the loss is seen when it ends)
    for _ in range(100):
        if spool.list() and not gateway.tracker.live:
            break
        await asyncio.sleep(0.05)
    assert len(spool.list()) == 1
    assert not gateway.tracker.live
    assert parts(spool) == []
