"""Downstream delivery (L4): hand a spooled message to LMTP, SMTP, a Maildir or the MX.

A destination is a string (it is also the key of the queue's per-destination limits):

``lmtp://HOST:PORT`` / ``lmtp:/path/to/socket``
    RFC 2033 (:mod:`mailmoat.net.lmtp_client`): one session, one reply per recipient.
``smtp://HOST:PORT`` / ``smtps://HOST:PORT``
    SMTP through :mod:`mailmoat.net.smtp_client`: STARTTLS when offered (RFC 7435
    opportunistic; ``?starttls=require`` refuses cleartext), ``smtps`` is implicit TLS
    (RFC 8314). ``?verify=1`` checks the certificate.
``maildir:/path/%u``
    a Maildir per recipient: ``%u`` is the local part, ``%d`` the domain, ``%a`` the whole
    address (each checked to be one safe path component). Written the Maildir way: unique
    name in ``tmp/``, fsync, hard link into ``new/``, fsync of ``new/``.
``mx:DOMAIN``
    the recipient domain's MX hosts through :class:`mailmoat.gateway.outbound.Outbound`
    (RFC 5321 §5 MX order, null MX; DANE, MTA-STS, REQUIRETLS, else opportunistic STARTTLS).

Header edits and quarantine
    The inbound pipeline's verdict travels in the envelope (:class:`mailmoat.spool.Envelope`
    ``header_edits``, ``quarantined``, ``quarantine_folder``). Before any destination the
    edits are applied to the spooled bytes (:func:`mailmoat.gateway.inbound.apply_edits`: our
    Authentication-Results on top, inbound ones claiming our authserv-id removed, RFC 8601
    §5; the quarantine field; an ARC Set). A ``header_edits`` record that cannot be read
    defers the message with the reason: it is never delivered unedited (a forged
    Authentication-Results would then reach the mailbox). A ``maildir:`` destination puts
    a quarantined message with a folder into the Maildir++ folder ``.<folder>/`` of the
    recipient's Maildir (created with ``tmp/ new/ cur/`` and the ``maildirfolder`` marker,
    as Courier and Dovecot lay folders out); other destinations get the header field
    ``X-Mailmoat-Quarantine`` only (a Sieve rule on the mailbox server files it).

:meth:`Downstream.deliver` never raises for a delivery failure: it returns a
:class:`DeliveryReport` with one :class:`RecipientOutcome` per recipient, ``delivered``,
``deferred`` (temporary: the queue retries) or ``bounced`` (permanent). Anything unexpected
becomes ``deferred``, so a bug or an outage never loses a message.

SECURITY: recipient addresses come from the network. In Maildir paths each substituted part
must be a plain file-name component (no ``/``, NUL, leading ``.``, nor longer than 255
octets); anything else is refused (bounced) rather than becoming a path; the quarantine
folder (configuration, validated there) is checked the same way before it names a directory.
Addresses reaching LMTP/SMTP are checked for CR/LF/NUL by the clients. The header-edits
record comes from our own spool (checksummed): it is parsed strictly
(:meth:`~mailmoat.gateway.inbound.HeaderEdits.from_json`) and the header section it edits
is bounded (``limits.MESSAGE_HEADER_MAX``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qs, urlsplit

from mailmoat.errors import LimitExceeded
from mailmoat.gateway.inbound import HeaderEdits, apply_edits
from mailmoat.gateway.outbound import Outbound
from mailmoat.net.lmtp_client import LMTPError, deliver_lmtp
from mailmoat.net.smtp_client import SendError, SendResult, send_message
from mailmoat.resolver import Resolver
from mailmoat.smtp.replies import Reply
from mailmoat.spool import Envelope
from mailmoat.store import Outcome, TLSRecord

__all__ = [
    "Deliverer",
    "DeliveryReport",
    "Downstream",
    "EditsError",
    "RecipientOutcome",
    "deliver_maildir",
    "edited",
    "maildir_unique_name",
    "quarantine_folder",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientOutcome:
    recipient: str
    outcome: Outcome
    reply: Reply | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    outcomes: tuple[RecipientOutcome, ...]
    remote: str | None = None
    tls: TLSRecord | None = None


class Deliverer(Protocol):
    """What the queue calls: deliver ``message`` to ``recipients`` at ``destination``."""

    async def deliver(self, *, message: bytes, envelope: Envelope, recipients: Sequence[str],
                      destination: str) -> DeliveryReport: ...


def _outcome_for(code: int) -> Outcome:
    return "delivered" if 200 <= code < 300 else "deferred" if code < 500 else "bounced"


def _all(recipients: Sequence[str], outcome: Outcome, error: str, *, reply: Reply | None = None,
         remote: str | None = None, tls: TLSRecord | None = None) -> DeliveryReport:
    return DeliveryReport(outcomes=tuple(
        RecipientOutcome(recipient=r, outcome=outcome, reply=reply, error=error)
        for r in recipients), remote=remote, tls=tls)


# --- Maildir ----------------------------------------------------------------------------------
_counter = itertools.count()


def maildir_unique_name(hostname: str | None = None, *, now: float | None = None) -> str:
    """A Maildir file name (cr.yp.to/proto/maildir.html, with the Courier/Dovecot
    refinements): ``SECONDS.M<usec>P<pid>Q<n>R<random>.HOST``; "/" and ":" in the host name
    are written ``\\057`` and ``\\072`` as the spec says."""
    t = time.time() if now is None else now
    seconds = int(t)
    usec = int((t - seconds) * 1_000_000)
    host = (hostname or socket.gethostname()).replace("/", "\\057").replace(":", "\\072")
    return (f"{seconds}.M{usec}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(8)}"
            f".{host}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def deliver_maildir(directory: Path, content: bytes, *, fsync: bool = True) -> Path:
    """Write ``content`` into the Maildir ``directory`` (created with ``tmp/ new/ cur/`` if
    missing) and return the path in ``new/``. Blocking: run it in a thread."""
    for sub in ("tmp", "new", "cur"):
        (directory / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    name = maildir_unique_name()
    tmp = directory / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = directory / "new" / f"{name},S={len(content)}"
    try:
        # link, not rename: link fails if the name exists (the spec's "never clobber").
        os.link(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        _fsync_dir(final.parent)
    return final


def _component(value: str) -> str:
    raw = value.encode("utf-8", "surrogateescape")
    if (not value or "/" in value or "\0" in value or value.startswith(".")
            or len(raw) > 255 or any(ord(c) < 0x20 for c in value)):
        raise ValueError(f"{value[:60]!r} is not a safe Maildir path component")
    return value


def maildir_path(template: str, recipient: str) -> Path:
    """The Maildir for ``recipient`` from ``template`` (``%u``, ``%d``, ``%a``, ``%%``)."""
    local, _, domain = recipient.rpartition("@")
    if not local:
        local, domain = recipient, ""
    out: list[str] = []
    chars = iter(template)
    for char in chars:
        if char != "%":
            out.append(char)
            continue
        key = next(chars, "")
        if key == "u":
            out.append(_component(local.lower()))
        elif key == "d":
            out.append(_component(domain.lower()))
        elif key == "a":
            out.append(_component(recipient.lower()))
        elif key == "%":
            out.append("%")
        else:
            raise ValueError(f"unknown Maildir template escape %{key}")
    return Path("".join(out))


def _local_copy(message: bytes, envelope: Envelope, recipient: str) -> bytes:
    """What a local delivery agent stores: ``Return-Path`` and ``Delivered-To`` (as Postfix
    local(8) and Dovecot do), then the message with LF line endings (the Maildir format)."""
    text = f"Return-Path: <{envelope.mail_from}>\nDelivered-To: {recipient}\n"
    head = text.replace("\r", "").encode("utf-8", "surrogateescape")
    return head + message.replace(b"\r\n", b"\n")


# --- header edits ------------------------------------------------------------------------------
class EditsError(Exception):
    """The envelope's header-edits record cannot be applied (the message is deferred)."""


def edited(message: bytes, header_edits: str) -> bytes:
    """``message`` with the header edits of an envelope applied (see the module docstring);
    :class:`EditsError` if the record does not parse or the header section is over the
    bound."""
    try:
        edits = HeaderEdits.from_json(header_edits)
    except (ValueError, KeyError, TypeError) as exc:  # JSON, base64, missing or wrong keys
        raise EditsError(f"header edits record unreadable ({type(exc).__name__}: "
                         f"{str(exc)[:200]}): not delivered unedited") from None
    try:
        return b"".join(apply_edits(edits, (message,)))
    except LimitExceeded as exc:
        raise EditsError(f"header edits not applicable: {exc}") from None


def quarantine_folder(maildir: Path, folder: str) -> Path:
    """The Maildir++ folder ``.<folder>`` of ``maildir`` (one safe path component: no
    ``/``, no leading dot, no control characters; dots inside name sub-folders, as in
    Maildir++ ``.Junk.Spam``). ValueError otherwise."""
    name = _component(folder)
    if name.endswith("."):
        raise ValueError(f"{folder[:60]!r} is not a Maildir++ folder name")
    return maildir / f".{name}"


def _make_folder(directory: Path) -> None:
    """Create a Maildir++ folder with its ``maildirfolder`` marker (Courier's maildir++
    layout, which Dovecot reads); blocking: in a thread."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = directory / "maildirfolder"
    if not marker.exists():
        marker.touch(mode=0o600)


# --- the deliverer ----------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class Downstream:
    """The standard :class:`Deliverer` (see the module docstring for destinations)."""

    hostname: str = "localhost"
    resolver: Resolver | None = None  # for "mx:" destinations
    cafile: Path | str | None = None
    maildir_fsync: bool = True
    timeout: float | None = None  # one bound for every wait (tests); None: protocol defaults
    outbound: Outbound | None = None  # for "mx:" destinations (default: built from the above)

    async def deliver(self, *, message: bytes, envelope: Envelope, recipients: Sequence[str],
                      destination: str) -> DeliveryReport:
        try:
            if envelope.header_edits is not None:
                message = edited(message, envelope.header_edits)
            scheme = destination.split(":", 1)[0]
            if scheme == "lmtp":
                return await self._lmtp(message, envelope, recipients, destination)
            if scheme in ("smtp", "smtps"):
                return await self._smtp(message, envelope, recipients, destination)
            if scheme == "maildir":
                return await self._maildir(message, envelope, recipients, destination)
            if scheme == "mx":
                return await self._mx(message, envelope, recipients, destination)
            return _all(recipients, "deferred", f"unknown destination {destination!r}")
        except EditsError as exc:
            return _all(recipients, "deferred", str(exc))
        except Exception as exc:  # never lose a message to a bug or an outage
            return _all(recipients, "deferred", f"{type(exc).__name__}: {exc}")

    async def _lmtp(self, message: bytes, envelope: Envelope, recipients: Sequence[str],
                    destination: str) -> DeliveryReport:
        parts = urlsplit(destination)
        kwargs: dict[str, float] = {}
        if self.timeout is not None:
            kwargs = {"timeout": self.timeout, "connect_timeout": self.timeout}
        if parts.netloc:
            target = {"host": parts.hostname or "localhost", "port": parts.port or 24}
        else:
            target = {"path": destination.removeprefix("lmtp:")}
        try:
            result = await deliver_lmtp(message, mail_from=envelope.mail_from or None,
                                        rcpt_to=list(recipients), lhlo=self.hostname,
                                        **target, **kwargs)  # type: ignore[arg-type]
        except LMTPError as err:
            settled = {r.address: r for r in err.recipients}
            outcomes = []
            for address in recipients:
                done = settled.pop(address, None)
                if done is not None:
                    outcomes.append(RecipientOutcome(
                        recipient=address, outcome=_outcome_for(done.reply.code),
                        reply=done.reply))
                else:
                    outcomes.append(RecipientOutcome(
                        recipient=address, outcome="deferred" if err.temporary else "bounced",
                        reply=err.reply, error=str(err)))
            return DeliveryReport(outcomes=tuple(outcomes), remote=destination)
        return DeliveryReport(outcomes=tuple(
            RecipientOutcome(recipient=r.address,
                             outcome="delivered" if r.delivered else
                             "deferred" if r.temporary else "bounced",
                             reply=r.reply,
                             error=None if r.delivered else f"{r.reply.code} {r.reply.text}")
            for r in result.recipients), remote=result.server, tls=TLSRecord(policy="none"))

    @staticmethod
    def _smtp_report(recipients: Sequence[str], result: SendResult, policy: str,
                     remote: str) -> DeliveryReport:
        tls = result.session.tls
        record = TLSRecord(version=tls.version if tls else None,
                           cipher=tls.cipher if tls else None,
                           verified=tls.verified if tls else None, policy=policy)
        replies = {r.address: r.reply for r in result.recipients}
        outcomes = []
        for address in recipients:
            reply = replies.get(address)
            if reply is not None and 200 <= reply.code < 300:
                reply = result.final_reply
            outcome = _outcome_for(reply.code) if reply else "deferred"
            outcomes.append(RecipientOutcome(
                recipient=address, outcome=outcome, reply=reply,
                error=None if outcome == "delivered" or reply is None
                else f"{reply.code} {reply.text}"))
        return DeliveryReport(outcomes=tuple(outcomes), remote=remote, tls=record)

    @staticmethod
    def _smtp_failure(recipients: Sequence[str], err: SendError, policy: str) -> DeliveryReport:
        tls = err.session.tls
        record = TLSRecord(version=tls.version if tls else None,
                           cipher=tls.cipher if tls else None,
                           verified=tls.verified if tls else None, policy=policy)
        refused = {r.address: r.reply for r in err.recipients if not r.accepted}
        outcomes = []
        for address in recipients:
            reply = refused.get(address)
            if reply is not None:
                outcomes.append(RecipientOutcome(recipient=address,
                                                 outcome=_outcome_for(reply.code), reply=reply,
                                                 error=f"{reply.code} {reply.text}"))
            else:
                outcomes.append(RecipientOutcome(
                    recipient=address, outcome="deferred" if err.temporary else "bounced",
                    reply=err.reply, error=str(err)))
        return DeliveryReport(outcomes=tuple(outcomes),
                              remote=f"{err.session.host}:{err.session.port}", tls=record)

    async def _smtp(self, message: bytes, envelope: Envelope, recipients: Sequence[str],
                    destination: str) -> DeliveryReport:
        from mailmoat.net.smtp_client import Timeouts

        parts = urlsplit(destination)
        query = parse_qs(parts.query)
        implicit = parts.scheme == "smtps"
        policy: Literal["require", "opportunistic"] = (
            "require" if query.get("starttls", ["opportunistic"])[0] == "require"
            else "opportunistic")
        verify = query.get("verify", ["0"])[0] in ("1", "yes", "true")
        host = parts.hostname or "localhost"
        port = parts.port or (465 if implicit else 25)
        timeouts = Timeouts.uniform(self.timeout) if self.timeout is not None else None
        label = "implicit-tls" if implicit else policy
        try:
            result = await send_message(
                message, mail_from=envelope.mail_from or None, rcpt_to=list(recipients),
                host=host, port=port, mode="implicit-tls" if implicit else "starttls",
                starttls=policy, helo=self.hostname, verify=verify, cafile=self.cafile,
                timeouts=timeouts)
        except SendError as err:
            return self._smtp_failure(recipients, err, label)
        return self._smtp_report(recipients, result, label, f"{host}:{port}")

    async def _mx(self, message: bytes, envelope: Envelope, recipients: Sequence[str],
                  destination: str) -> DeliveryReport:
        from mailmoat.net.smtp_client import Timeouts

        outbound = self.outbound
        if outbound is None:
            if self.resolver is None:
                return _all(recipients, "deferred", "no resolver configured for MX delivery")
            timeouts = Timeouts.uniform(self.timeout) if self.timeout is not None else None
            # built once and kept: its DANE state (and start-up warning) is per deliverer
            self.outbound = outbound = Outbound(self.resolver, helo=self.hostname,
                                                cafile=self.cafile, timeouts=timeouts)
        domain = destination.removeprefix("mx:")
        # gateway.outbound: MX order, null MX, DANE / MTA-STS / REQUIRETLS per MX.
        outcome = await outbound.deliver(
            message, domain=domain, mail_from=envelope.mail_from or None,
            rcpt_to=list(recipients), requiretls=envelope.requiretls)
        if outcome.result is not None:
            report = self._smtp_report(recipients, outcome.result, outcome.policy,
                                       outcome.remote or domain)
        else:
            assert outcome.error is not None
            report = self._smtp_failure(recipients, outcome.error, outcome.policy)
        # TLS of the last session and every session as RFC 8460 sees it (store: tls_sessions)
        return replace(report, tls=outcome.tls_record())

    async def _maildir(self, message: bytes, envelope: Envelope, recipients: Sequence[str],
                       destination: str) -> DeliveryReport:
        template = destination.removeprefix("maildir:")
        outcomes = []
        last: str | None = None
        for address in recipients:
            try:
                directory = maildir_path(template, address)
            except ValueError as exc:
                outcomes.append(RecipientOutcome(recipient=address, outcome="bounced",
                                                 error=str(exc)))
                continue
            if envelope.quarantined and envelope.quarantine_folder:
                try:
                    directory = quarantine_folder(directory, envelope.quarantine_folder)
                except ValueError as exc:  # configuration: keep it queued, say why
                    outcomes.append(RecipientOutcome(
                        recipient=address, outcome="deferred",
                        error=f"quarantine folder refused: {exc}"))
                    continue
            content = _local_copy(message, envelope, address)
            try:
                if envelope.quarantined and envelope.quarantine_folder:
                    await asyncio.to_thread(_make_folder, directory)
                path = await asyncio.to_thread(deliver_maildir, directory, content,
                                               fsync=self.maildir_fsync)
            except OSError as exc:
                outcomes.append(RecipientOutcome(recipient=address, outcome="deferred",
                                                 error=f"Maildir {directory}: {exc}"))
                continue
            last = str(path)
            outcomes.append(RecipientOutcome(recipient=address, outcome="delivered"))
        return DeliveryReport(outcomes=tuple(outcomes), remote=last)
