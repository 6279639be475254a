"""The LMTP client against scripted servers: RFC 2033 per-recipient replies, and the bounds
its SECURITY paragraph promises (CRLF framing, line and line-count limits, code changes,
timeouts, connection loss after partial replies)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from mailmoat import limits
from mailmoat.net.lmtp_client import LMTPError, deliver_lmtp

pytestmark = pytest.mark.timeout(30)



@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                      asyncio.Future[None]]) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start  # type: ignore[misc]
    for s in servers:
        s.close()


def lmtp_server(after_data: bytes, *, greeting: bytes = b"220 ok\r\n",
                rcpt: Callable[[bytes], bytes] = lambda line: b"250 2.1.5 ok\r\n",
                lhlo: bytes = b"250-x\r\n250 ENHANCEDSTATUSCODES\r\n",
                hang: bool = False) -> Callable[..., asyncio.Future[None]]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(greeting)
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"LHLO":
                    writer.write(lhlo)
                elif verb == b"RCPT":
                    writer.write(rcpt(line))
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = await reader.read(4096)
                        if not chunk:
                            return
                        data += chunk
                    if hang:
                        await reader.read()
                        return
                    writer.write(after_data)
                    await writer.drain()
                    if not after_data.endswith(b"\r\n") or b"close" in after_data:
                        return
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        finally:
            writer.close()
    return handler  # type: ignore[return-value]


async def _send(port: int, rcpts: list[str], timeout: float = 5.0):  # type: ignore[no-untyped-def]
    return await deliver_lmtp(b"Subject: x\r\n\r\nbody\r\n", mail_from="a@example.net",
                              rcpt_to=rcpts, host="127.0.0.1", port=port, timeout=timeout)


async def test_one_reply_per_accepted_recipient_in_order(serve) -> None:  # type: ignore[no-untyped-def]
    def rcpt(line: bytes) -> bytes:
        return b"550 5.1.1 unknown\r\n" if b"gone" in line else b"250 2.1.5 ok\r\n"
    # RFC 2033 §4.2: replies after the content follow the order of the accepted RCPTs.
    port = await serve(lmtp_server(b"250 2.0.0 a saved\r\n452 4.2.2 b over quota\r\n",
                                   rcpt=rcpt))
    result = await _send(port, ["a@x.example", "gone@x.example", "b@x.example"])
    a, gone, b = result.recipients
    assert (a.delivered, a.reply.code, a.reply.status, a.reply.text) == (
        True, 250, "2.0.0", "a saved")
    assert (gone.delivered, gone.temporary, gone.data_reply, gone.reply.code) == (
        False, False, None, 550)
    assert (b.delivered, b.temporary, b.reply.code) == (False, True, 452)


async def test_connection_lost_after_partial_replies(serve) -> None:  # type: ignore[no-untyped-def]
    port = await serve(lmtp_server(b"250 2.0.0 first saved\r\n close"))
    with pytest.raises(LMTPError) as info:
        await _send(port, ["a@x.example", "b@x.example"])
    err = info.value
    assert err.temporary
    # The first recipient is settled (delivered); the second has no answer and must be retried.
    assert [(r.address, r.delivered) for r in err.recipients] == [("a@x.example", True)]


@pytest.mark.parametrize(("reply", "why"), [
    (b"250 ok\n", "CRLF"),
    (b"250 ok\rx\r\n", "malformed"),
    (b"250-a\r\n451 b\r\n", "code changes"),
    (b"25O ok\r\n", "malformed"),
    (b"250-x\r\n" * (limits.SMTP_REPLY_MAX_LINES + 1) + b"250 x\r\n", "too many lines"),
    (b"250 " + b"x" * (limits.SMTP_REPLY_LINE_MAX + 10) + b"\r\n", "longer than"),
])
async def test_hostile_replies_are_refused(serve, reply: bytes, why: str) -> None:  # type: ignore[no-untyped-def]
    port = await serve(lmtp_server(reply + b" close"))
    with pytest.raises(LMTPError, match=why) as info:
        await _send(port, ["a@x.example"])
    assert info.value.temporary  # a broken server never bounces mail


async def test_reply_text_is_made_printable(serve) -> None:  # type: ignore[no-untyped-def]
    port = await serve(lmtp_server(b"250 2.0.0 saved \x1b[31m\xff\r\n"))
    result = await _send(port, ["a@x.example"])
    assert result.recipients[0].reply.text == "saved ?[31m?"


async def test_timeout_waiting_for_the_final_reply(serve) -> None:  # type: ignore[no-untyped-def]
    port = await serve(lmtp_server(b"", hang=True))
    with pytest.raises(LMTPError, match="timeout") as info:
        await _send(port, ["a@x.example"], timeout=0.5)
    assert info.value.temporary


async def test_greeting_and_lhlo_refusals(serve) -> None:  # type: ignore[no-untyped-def]
    port = await serve(lmtp_server(b"", greeting=b"554 go away\r\n"))
    with pytest.raises(LMTPError) as info:
        await _send(port, ["a@x.example"])
    assert (info.value.stage, info.value.temporary) == ("greeting", False)
    port = await serve(lmtp_server(b"", lhlo=b"421 4.3.2 shutting down\r\n"))
    with pytest.raises(LMTPError) as info:
        await _send(port, ["a@x.example"])
    assert (info.value.stage, info.value.temporary) == ("lhlo", True)


@pytest.mark.parametrize("bad", ["a@x.example\r\nRSET", "a@x\nexample", "a\0@x.example"])
async def test_command_injection_refused_before_connecting(bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        await deliver_lmtp(b"x", mail_from="a@example.net", rcpt_to=[bad], host="127.0.0.1",
                           port=1)
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        await deliver_lmtp(b"x", mail_from=bad, rcpt_to=["a@x.example"], host="127.0.0.1",
                           port=1)
