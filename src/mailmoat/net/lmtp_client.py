"""An LMTP client (RFC 2033): deliver one message to a mailbox server (L3, asyncio).

LMTP is SMTP with two differences that matter here (RFC 2033 §4.1-4.2): the client greets
with ``LHLO`` instead of ``EHLO``, and after the message content the server answers once *per
accepted recipient*, in RCPT order: "one response for each successful RCPT command ... in
the same order as the RCPT commands". The sans-IO :class:`~mailmoat.smtp.client.ClientConnection`
expects one reply after the content, so this module speaks the (small) LMTP dialogue itself,
without pipelining, and reuses the engine's line-ending normalisation; the reply parser below
is bounded the same way as the engine's.

Public API::

    result = await deliver_lmtp(message, mail_from="a@example.org",
                                rcpt_to=["u1@example.org", "u2@example.org"],
                                host="127.0.0.1", port=24)      # or path="/run/dovecot/lmtp"
    for r in result.recipients: r.address, r.reply, r.delivered, r.temporary

A failure before any per-recipient answer (connect, greeting, LHLO, MAIL, DATA, a lost
connection) raises :class:`LMTPError` (``temporary`` tells 4xx-class from 5xx); its
``recipients`` hold the final replies that did arrive before a connection was lost after the
content (RFC 2033 §4.2: those recipients are settled, the others must be retried).

SECURITY
    Trusts nothing from the server: a reply line is at most ``SMTP_REPLY_LINE_MAX`` octets, a
    reply at most ``SMTP_REPLY_MAX_LINES`` lines, lines must end in CRLF, codes must be three
    digits ``2-5`` and stay the same within a reply; reply text is reduced to printable ASCII.
    Every wait has a timeout. Refuses CR, LF and NUL in addresses and the LHLO name (command
    injection) before connecting. Message content is normalised (bare CR/LF become CRLF) and
    dot-stuffed, so it cannot end DATA early (smuggling).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailmoat import limits
from mailmoat.errors import MailmoatError
from mailmoat.smtp.client import normalize_line_endings
from mailmoat.smtp.replies import Reply

__all__ = ["LMTPError", "LMTPRecipient", "LMTPResult", "deliver_lmtp", "dot_stuff"]

Stage = Literal["connect", "greeting", "lhlo", "mail", "rcpt", "data", "message", "protocol"]

# Reply-code = %x32-35 %x30-35 %x30-39                                   (RFC 5321 §4.2)
_CODE = re.compile(rb"^[2-5][0-5][0-9]")
# status-code = class "." subject "." detail                            (RFC 3463 §2)
_STATUS = re.compile(r"^([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)")
_NOT_TEXT = re.compile(r"[^\t\x20-\x7e]")


@dataclass(frozen=True, slots=True, kw_only=True)
class LMTPRecipient:
    """One recipient's outcome: the RCPT reply, and the reply after the content when the
    RCPT was accepted (``None`` if the connection was lost before it)."""

    address: str
    rcpt_reply: Reply
    data_reply: Reply | None = None

    @property
    def reply(self) -> Reply:
        """The reply that decided this recipient."""
        return self.data_reply if self.data_reply is not None else self.rcpt_reply

    @property
    def delivered(self) -> bool:
        return self.data_reply is not None and 200 <= self.data_reply.code < 300

    @property
    def temporary(self) -> bool:
        """Not delivered, and worth retrying (4xx, or no final answer)."""
        if self.delivered:
            return False
        if self.rcpt_reply.code >= 400:
            return self.rcpt_reply.code < 500
        return self.data_reply is None or self.data_reply.code < 500


@dataclass(frozen=True, slots=True, kw_only=True)
class LMTPResult:
    """The session's outcome, per recipient (RCPT order)."""

    server: str
    lhlo: Reply
    extensions: dict[str, str]
    recipients: tuple[LMTPRecipient, ...]


class LMTPError(MailmoatError):
    """No per-recipient outcome for (some) recipients; see the module docstring."""

    def __init__(self, message: str, *, stage: Stage, temporary: bool,
                 reply: Reply | None = None,
                 recipients: tuple[LMTPRecipient, ...] = ()) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.temporary = temporary
        self.reply = reply
        self.recipients = recipients


def dot_stuff(message: bytes) -> bytes:
    """Message content for DATA: CRLF line endings (RFC 5321 §2.3.8), a leading "." doubled on
    every line (§4.5.2), a final CRLF if missing, then the terminating ``.CRLF``."""
    data = normalize_line_endings(message)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _no_controls(what: str, value: str) -> None:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} contains CR, LF or NUL: {value[:60]!r}")


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.enhanced = False

    async def reply(self, stage: Stage) -> Reply:
        lines: list[str] = []
        code: bytes | None = None
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readuntil(b"\n"), self.timeout)
            except TimeoutError:
                raise LMTPError(f"timeout waiting for the reply ({stage})", stage=stage,
                                temporary=True) from None
            except asyncio.LimitOverrunError:
                raise LMTPError(f"reply line longer than {limits.SMTP_REPLY_LINE_MAX} octets",
                                stage="protocol", temporary=True) from None
            except (asyncio.IncompleteReadError, OSError) as exc:
                raise LMTPError(f"connection lost ({stage}): {exc}", stage=stage,
                                temporary=True) from None
            if len(line) > limits.SMTP_REPLY_LINE_MAX or not line.endswith(b"\r\n"):
                raise LMTPError("reply line too long or not ended by CRLF", stage="protocol",
                                temporary=True)
            body = line[:-2]
            if b"\r" in body or not _CODE.match(body) or body[3:4] not in (b"", b" ", b"-"):
                raise LMTPError(f"malformed reply line {body[:40]!r}", stage="protocol",
                                temporary=True)
            if code is not None and body[:3] != code:
                raise LMTPError("reply code changes inside a multi-line reply",
                                stage="protocol", temporary=True)
            code = body[:3]
            lines.append(_NOT_TEXT.sub("?", body[4:].decode("latin-1")))
            if len(lines) > limits.SMTP_REPLY_MAX_LINES:
                raise LMTPError("reply has too many lines", stage="protocol", temporary=True)
            if body[3:4] != b"-":
                break
        status = None
        match = _STATUS.match(lines[0]) if self.enhanced else None
        if match and match.group(1)[0] == chr(code[0]):
            status = match.group(1)
            lines = [t.removeprefix(status).removeprefix(" ") for t in lines]
        return Reply(code=int(code), status=status, text="\n".join(lines))

    async def send(self, data: bytes, stage: Stage) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise LMTPError(f"cannot send ({stage}): {exc}", stage=stage,
                            temporary=True) from None

    async def command(self, line: str, stage: Stage) -> Reply:
        await self.send(line.encode("utf-8") + b"\r\n", stage)
        return await self.reply(stage)


def _fail(stage: Stage, reply: Reply) -> LMTPError:
    return LMTPError(f"{stage}: {reply.code} {reply.text.splitlines()[0] if reply.text else ''}",
                     stage=stage, temporary=reply.code < 500, reply=reply)


async def deliver_lmtp(
    message: bytes,
    *,
    mail_from: str | None,
    rcpt_to: Sequence[str],
    host: str | None = None,
    port: int = 24,
    path: Path | str | None = None,
    lhlo: str = "localhost",
    timeout: float = limits.LMTP_REPLY_TIMEOUT,
    connect_timeout: float = limits.LMTP_CONNECT_TIMEOUT,
) -> LMTPResult:
    """Deliver ``message`` over LMTP to ``host:port`` (TCP) or ``path`` (a Unix socket).

    ``mail_from=None`` or ``""`` is the null reverse-path. Returns the per-recipient outcome;
    raises :class:`LMTPError` when the session failed before the recipients were settled,
    :class:`ValueError` for bad arguments (before connecting).
    """
    if (host is None) == (path is None):
        raise ValueError("give exactly one of host or path")
    if not rcpt_to:
        raise ValueError("at least one recipient is needed")
    for what, value in (("sender", mail_from or ""), ("LHLO name", lhlo),
                        *(("recipient", r) for r in rcpt_to)):
        _no_controls(what, value)
    server = f"unix:{path}" if path is not None else f"{host}:{port}"
    try:
        if path is not None:
            opened = asyncio.open_unix_connection(
                str(path), limit=limits.SMTP_REPLY_LINE_MAX + 2)
        else:
            opened = asyncio.open_connection(host, port, limit=limits.SMTP_REPLY_LINE_MAX + 2)
        reader, writer = await asyncio.wait_for(opened, connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise LMTPError(f"cannot connect to {server}: {exc}", stage="connect",
                        temporary=True) from None
    session = _Session(reader, writer, timeout)
    try:
        greeting = await session.reply("greeting")
        if greeting.code != 220:
            raise _fail("greeting", greeting)
        # RFC 2033 §4.1: "The LHLO command ... is identical to the EHLO command".
        hello = await session.command(f"LHLO {lhlo}", "lhlo")
        if hello.code != 250:
            raise _fail("lhlo", hello)
        extensions: dict[str, str] = {}
        for line in hello.text.split("\n")[1:]:
            keyword, _, params = line.partition(" ")
            if keyword:
                extensions.setdefault(keyword.upper(), params)
        session.enhanced = "ENHANCEDSTATUSCODES" in extensions
        params = ""
        utf8 = not all(a.isascii() for a in (mail_from or "", *rcpt_to))
        if utf8:
            if "SMTPUTF8" not in extensions:
                raise LMTPError("UTF-8 addresses but the server does not offer SMTPUTF8",
                                stage="mail", temporary=False)
            params += " SMTPUTF8"
        if "8BITMIME" in extensions and any(b > 0x7F for b in message):
            params += " BODY=8BITMIME"
        mail = await session.command(f"MAIL FROM:<{mail_from or ''}>{params}", "mail")
        if mail.code != 250:
            raise _fail("mail", mail)
        results = [LMTPRecipient(address=a, rcpt_reply=await session.command(
            f"RCPT TO:<{a}>", "rcpt")) for a in rcpt_to]
        accepted = [i for i, r in enumerate(results) if 200 <= r.rcpt_reply.code < 300]
        if accepted:
            data = await session.command("DATA", "data")
            if data.code != 354:
                raise _fail("data", data)
            await session.send(dot_stuff(message), "message")
            # RFC 2033 §4.2: one reply per accepted RCPT, in RCPT order.
            for index in accepted:
                try:
                    reply = await session.reply("message")
                except LMTPError as exc:
                    exc.recipients = tuple(r for r in results if r.data_reply is not None)
                    raise
                results[index] = LMTPRecipient(address=results[index].address,
                                               rcpt_reply=results[index].rcpt_reply,
                                               data_reply=reply)
        with contextlib.suppress(LMTPError):
            await session.command("QUIT", "protocol")
        return LMTPResult(server=server, lhlo=hello, extensions=extensions,
                          recipients=tuple(results))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 5)
