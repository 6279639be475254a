"""The policy of one SMTP session: what the gateway says to each engine event (layer L4).

The adapter (:mod:`mailmoat.net.smtp_server`) gives every event of the sans-IO engine to a
:class:`Session`; the session answers decisions:

* EHLO/HELO: recorded (the engine already checked the grammar); accepted.
* AUTH (submission listeners only; the engine refuses it before TLS, RFC 4954 §4): the
  credentials go to :class:`~mailmoat.gateway.users.Authenticator` (scrypt in a thread, rate
  limits per IP and per user). ``535 5.7.8`` for bad credentials, ``454 4.7.0`` when
  rate-limited (RFC 4954 §6). An authorisation identity other than the login is refused
  (we do not implement proxy authorisation, RFC 4616 §2).
* MAIL FROM: on submission the engine already requires AUTH (RFC 6409 §4.3); here the
  address must be one of the login's (``553 5.7.1``, Postfix
  ``reject_sender_login_mismatch``). On mx anyone may send.
* RCPT TO: :class:`~mailmoat.gateway.relay.RelayPolicy` (``554 5.7.1 Relay access denied``).
* DATA / BDAT: a spool writer is opened, our Received field written first, and content is
  streamed into it as it arrives (:class:`~mailmoat.smtp.MessageChunk`). At the end the
  writer is committed — fsync of the message and its envelope — and only then does the
  engine send ``250`` (RFC 5321 §6.1, §4.5.3.2.6). A spool failure is ``451 4.3.0``.

The message pipelines (:mod:`mailmoat.gateway.pipeline`), when the context has them:

* role ``mx`` with ``ctx.inbound`` (:class:`~mailmoat.gateway.inbound.InboundPipeline`): the
  SPF check starts at MAIL FROM (cancelled by RSET, a new MAIL, EHLO, STARTTLS or the end of
  the connection); at DATA / BDAT start an :class:`~mailmoat.gateway.inbound.InboundMessage`
  is started with the client IP, HELO, MAIL FROM, TLS and that SPF task, and every content
  chunk is fed to it as well as to the spool writer (the content only: our Received field
  is never authenticated). At the end of data its verdict decides: ``reject`` → the writer
  is aborted (nothing kept) and the verdict's reply is the answer (DMARC ``550 5.7.1``,
  RFC 7489 §6.6.4; a header section over ``limits.MESSAGE_HEADER_MAX`` ``552 5.3.4``);
  otherwise the message is committed with the header edits, the quarantine flag and folder
  in its envelope (applied at delivery, :mod:`mailmoat.gateway.deliver`).
* role ``submission`` with ``ctx.signer`` (:class:`~mailmoat.gateway.outbound_sign.
  SubmissionSigner`): the content is buffered (bounded like the spool writer: the message
  size limit plus room for our Received field) and at the end given to ``prepare`` with
  the login; a refusal is its reply (nothing kept); a header section over the bound is
  ``552 5.3.4``; otherwise our Received field and the repaired, signed message are spooled.

After the commit and *before* the ``250``, ``ctx.accept(spool_id, envelope, verdict_row)``
is awaited (it queues the deliveries and stores the verdict); if it fails the failure is
logged and the answer is still ``250``: the message is durable in the spool, and the
runtime's sweep queues spooled messages that have no delivery rows.

Every decision is logged as one ``key=value`` line (logger ``mailmoat.smtp.session``).

SECURITY: every event value came from the peer through the engine (grammar-checked,
bounded). Addresses are compared only after the normalisation of :mod:`relay` and
:mod:`users`; the message bytes are stored as received and never interpreted here (the
pipelines read them with their own bounded parsers; the submission buffer is bounded as the
spool writer is); our Received field is built from sanitised words only
(:mod:`mailmoat.gateway.received`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from mailmoat.auth.spf import SPFResult
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import LimitExceeded, MailmoatError, SpoolError
from mailmoat.gateway.inbound import HEADER_TOO_LARGE, Action, InboundMessage, InboundPipeline
from mailmoat.gateway.outbound_sign import SubmissionSigner
from mailmoat.gateway.received import received_field, with_protocol
from mailmoat.gateway.relay import RelayPolicy
from mailmoat.gateway.users import Authenticator, User
from mailmoat.net.smtp_server import ConnectionInfo, Decision, SMTPServerProtocol
from mailmoat.net.tls import TLSInfo
from mailmoat.smtp import (
    AuthRequested,
    AuthResponse,
    DataStarted,
    Ehlo,
    Event,
    Helo,
    MailFrom,
    MessageChunk,
    MessageComplete,
    ProtocolViolation,
    Quit,
    RcptTo,
    Replies,
    Reply,
    Reset,
    State,
    TLSEstablished,
)
from mailmoat.spool import Envelope, Recipient, Spool, SpoolWriter
from mailmoat.store import Verdict

__all__ = ["GatewayContext", "Session", "session_factory"]

log = logging.getLogger("mailmoat.smtp.session")

Role = Literal["mx", "submission"]

#: Postfix reject_sender_login_mismatch: "553 5.7.1 <addr>: Sender address rejected: not owned
#: by user"; RFC 3463 §3.8 X.7.1 "Delivery not authorized".
SENDER_NOT_OWNED: Final = Reply(
    code=553, status="5.7.1", text="Sender address rejected: not owned by the authenticated user"
)
#: RFC 4616 §2: an authorization identity different from the authentication identity asks for
#: proxy authorisation, which we do not grant (RFC 4954 §6 535 5.7.8).
AUTHZID_REFUSED: Final = Reply(
    code=535, status="5.7.8", text="Authorization identity not permitted"
)
#: Postfix's "250 2.0.0 Ok: queued as ID", with our spool ID.
_QUEUED: Final = "Ok: queued as {}"
_IN_MESSAGE: Final = frozenset({State.DATA, State.BDAT})
#: Room for our Received field on top of the client's message size limit.
_RECEIVED_ROOM: Final = 2048
#: A pipeline that failed (a bug, never a verdict): the client retries later.
_PIPELINE_FAILED: Final = Replies.LOCAL_ERROR
#: The inbound policy refused without a reply of its own (RFC 3463 X.7.1).
_POLICY_REJECT: Final = Reply(code=550, status="5.7.1", text="Message rejected by local policy")
#: RFC 3463 §3.7 X.6.0: a submitted message our header parser cannot read.
_UNREADABLE: Final = Reply(code=554, status="5.6.0", text="Message header section unreadable")


@dataclass(slots=True, kw_only=True)
class GatewayContext:
    """What every session of one listener shares (replaced as a whole on reload)."""

    hostname: str
    role: Role
    spool: Spool
    relay: RelayPolicy
    authenticator: Authenticator | None
    max_message_size: int
    clock: Clock = SYSTEM_CLOCK
    #: Called with each committed (spool ID, envelope), after ``accept``.
    on_message: Callable[[str, Envelope], None] | None = None
    stats: dict[str, int] = field(default_factory=dict)
    #: role mx: verification and policy while DATA streams (None: accept as received)
    inbound: InboundPipeline | None = None
    #: role submission: repair and DKIM-sign at the end of data (None: spool as received)
    signer: SubmissionSigner | None = None
    #: awaited after the spool commit and before the 250 with (spool ID, envelope, the
    #: verdict row or None): queues the deliveries, stores the verdict. A failure is logged
    #: and the answer is still 250 (the message is durable in the spool).
    accept: Callable[[str, Envelope, Verdict | None], Awaitable[None]] | None = None
    #: awaited with the verdict row of a message the inbound policy refused (keyed by the
    #: spool ID it would have had; nothing else is kept) before the 5xx: DMARC aggregate
    #: reports count rejected mail too (RFC 7489 Appendix C, disposition "reject").
    #: A failure is logged; the refusal stands.
    refused: Callable[[Verdict], Awaitable[None]] | None = None


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _spf_ip(ip: IPAddress) -> str:
    """The address SPF and the pipeline see: an IPv4-mapped IPv6 peer (a dual-stack socket)
    is the IPv4 client it stands for (RFC 4291 §2.5.5.2), as Postfix reports it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _discard(task: asyncio.Future[SPFResult]) -> None:
    """Stop an SPF task nobody will read (RSET, new MAIL): cancel it, or, when it already
    ended, retrieve its outcome so that asyncio does not report an unread exception."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


def _log(event: str, info: ConnectionInfo, **fields: object) -> None:
    if log.isEnabledFor(logging.INFO):
        # Peer-supplied strings are written with repr(): quoted, escapes instead of control
        # characters, so no client can forge a log line.
        parts = [f"event={event}", f"ip={info.client_ip}", f"port={info.client_port}"]
        parts += [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items()]
        log.info(" ".join(parts))


class Session:
    """One connection's policy (the :class:`mailmoat.net.smtp_server.SessionHandler`)."""

    def __init__(self, ctx: GatewayContext, conn: SMTPServerProtocol, info: ConnectionInfo) -> None:
        self.ctx = ctx
        self.conn = conn
        self.info = info
        self.tls: TLSInfo | None = info.tls
        self._ip = _parse_ip(info.client_ip)
        self.helo: str | None = None
        self.esmtp = False
        self.user: User | None = None
        self.mail: MailFrom | None = None
        self.rcpts: list[Recipient] = []
        self.writer: SpoolWriter | None = None
        self.write_failed: Exception | None = None
        self.accepted: list[str] = []  # spool IDs acknowledged on this connection
        #: role mx with a pipeline: the SPF task of the transaction (MAIL FROM to DATA),
        #: then the message being verified (DATA to the end of data)
        self._spf: asyncio.Task[SPFResult] | None = None
        self.message: InboundMessage | None = None
        #: role submission with a signer: the content, held until the end of data
        self.buffer: bytearray | None = None

    # --- the SessionHandler protocol -----------------------------------------------------
    def event(self, event: Event) -> Decision | Awaitable[Decision]:
        if type(event) is MessageChunk:
            writer = self.writer
            if writer is not None and self.write_failed is None:
                try:
                    writer.write(event.data)
                except (SpoolError, LimitExceeded, OSError) as exc:
                    self.write_failed = exc
                    writer.abort()
                    return None
                message = self.message
                if message is not None:
                    message.feed(event.data)
            elif self.buffer is not None and self.write_failed is None:
                self._buffer(event.data)
            return None
        handler = _DISPATCH.get(type(event))
        if handler is None:
            return None
        return handler(self, event)

    def tls_started(self, info: TLSInfo) -> None:
        self.tls = info
        self.helo = None
        self.esmtp = False
        self.user = None
        self._drop_transaction()
        _log("tls", self.info, version=info.version, cipher=info.cipher,
             sni=info.server_name or "")

    def closed(self) -> None:
        self._drop_transaction()

    # --- events ---------------------------------------------------------------------------
    def _on_hello(self, event: Event) -> Decision:
        assert isinstance(event, Ehlo | Helo)
        self._drop_transaction()
        self.helo = event.domain
        self.esmtp = isinstance(event, Ehlo)
        _log("helo", self.info, helo=event.domain, result="accept")
        return None

    def _on_auth(self, event: Event) -> Decision | Awaitable[Decision]:
        if isinstance(event, AuthResponse) or self.ctx.authenticator is None:
            return Replies.AUTH_MECHANISM_UNKNOWN
        assert isinstance(event, AuthRequested)
        if event.username is None or event.password is None:
            return Replies.AUTH_MECHANISM_UNKNOWN
        if event.authzid is not None and event.authzid != event.username:
            _log("auth", self.info, user=event.username, result="reject", reason="authzid")
            return AUTHZID_REFUSED
        return self._authenticate(self.ctx.authenticator, event.username, event.password)

    async def _authenticate(self, auth: Authenticator, username: str, password: str) -> Decision:
        outcome = await auth.authenticate(username, password, ip=self.info.client_ip)
        if outcome.ok and outcome.user is not None:
            self.user = outcome.user
            _log("auth", self.info, user=outcome.user.name, result="accept")
            return None
        _log("auth", self.info, user=username[:64], result="reject", reason=outcome.reason)
        if outcome.reason == "rate-limited":
            return Replies.AUTH_TEMPORARY_FAILURE
        return Replies.AUTH_FAILED

    def _on_mail(self, event: Event) -> Decision:
        assert isinstance(event, MailFrom)
        self._drop_transaction()
        sender = str(event.address) if event.address is not None else ""
        if self.ctx.role == "submission":
            # RFC 6409 §4.3 (AUTH before MAIL: the engine refuses MAIL without it).
            if self.user is None:
                _log("mail", self.info, sender=sender, result="reject", reason="no auth")
                return Replies.AUTH_REQUIRED
            if not self.user.may_send_as(sender):
                _log("mail", self.info, sender=sender, user=self.user.name, result="reject",
                     reason="sender not owned")
                return SENDER_NOT_OWNED
        self.mail = event
        inbound = self.ctx.inbound
        if inbound is not None and self.ctx.role == "mx" and self._ip is not None:
            # RFC 7208 §2.4: the MAIL FROM identity, checked while RCPT and DATA go on.
            self._spf = inbound.start_spf(ip=_spf_ip(self._ip), helo=self.helo,
                                          mail_from=sender)
        _log("mail", self.info, sender=sender, result="accept")
        return None

    def _on_rcpt(self, event: Event) -> Decision:
        assert isinstance(event, RcptTo)
        decision = self.ctx.relay.check(
            event.address, authenticated=self.user is not None, client_ip=self._ip
        )
        rcpt = str(event.address)
        if not decision.allowed:
            _log("rcpt", self.info, rcpt=rcpt, result="reject", reason=decision.reason)
            return Replies.RELAY_DENIED
        params = event.params
        self.rcpts.append(Recipient(
            address=rcpt, notify=params.notify,
            orcpt=f"{params.orcpt[0]};{params.orcpt[1]}" if params.orcpt else None,
        ))
        _log("rcpt", self.info, rcpt=rcpt, result="accept", reason=decision.reason)
        return None

    def _on_data(self, event: Event) -> Decision:
        assert isinstance(event, DataStarted)
        if self.mail is None or not self.rcpts:  # pragma: no cover - the engine sequences
            return Replies.NEED_RCPT
        if self.ctx.role == "submission" and self.ctx.signer is not None:
            # The signer needs the whole message: the spool writer is opened at the end.
            self.buffer = bytearray()
            self.write_failed = None
            return None
        inbound = self.ctx.inbound if self.ctx.role == "mx" else None
        if inbound is not None and self._ip is None:  # pragma: no cover - a socket's peer
            _log("data", self.info, result="reject", reason="client address unusable")
            return Replies.LOCAL_ERROR
        try:
            # deferred: no file-system call on the event loop for messages under 64 KiB.
            writer = self.ctx.spool.open_writer(
                max_size=self.ctx.max_message_size + _RECEIVED_ROOM, deferred=True)
            writer.write(self._received(writer.id, self.mail, self.rcpts))
        except (SpoolError, OSError) as exc:
            _log("data", self.info, result="reject", reason=f"spool: {exc}")
            return Replies.LOCAL_ERROR
        self.writer = writer
        self.write_failed = None
        if inbound is not None:
            assert self._ip is not None
            mail = self.mail
            assert mail is not None
            spf, self._spf = self._spf, None
            self.message = inbound.start(
                ip=_spf_ip(self._ip), helo=self.helo,
                mail_from=str(mail.address) if mail.address is not None else "",
                tls=self.tls, spf=spf, queue_id=writer.id)
        return None

    def _buffer(self, data: bytes) -> None:
        buffer = self.buffer
        assert buffer is not None
        if len(buffer) + len(data) > self.ctx.max_message_size + _RECEIVED_ROOM:
            # (the engine refuses a message over the size limit first; this is the backstop)
            self.write_failed = LimitExceeded("message too large to sign",
                                              limit="max_message_size")
            self.buffer = bytearray()
            return
        buffer += data

    def _received(self, queue_id: str, mail: MailFrom, rcpts: list[Recipient]) -> bytes:
        return received_field(
            helo=self.helo or "unknown",
            client_ip=self.info.client_ip,
            client_rdns=None,
            by_host=self.ctx.hostname,
            protocol=with_protocol(
                esmtp=self.esmtp, tls=self.tls is not None, authenticated=self.user is not None,
                smtputf8=mail.params.smtputf8,
            ),
            queue_id=queue_id,
            recipients=tuple(r.address for r in rcpts),
            tls=self.tls,
            timestamp=self.ctx.clock.now(),
        )

    def _on_complete(self, event: Event) -> Decision | Awaitable[Decision]:
        assert isinstance(event, MessageComplete)
        writer, self.writer = self.writer, None
        message, self.message = self.message, None
        buffer, self.buffer = self.buffer, None
        if buffer is not None and writer is None:
            if self.write_failed is not None:
                _log("message", self.info, result="reject", reason=str(self.write_failed))
                self._reset_envelope()
                return Replies.MESSAGE_TOO_BIG
            mail, rcpts = self.mail, self.rcpts
            assert mail is not None
            envelope = self._envelope()
            self._reset_envelope()
            return self._sign_and_commit(bytes(buffer), envelope, mail, rcpts, event.size)
        if writer is None or self.write_failed is not None:
            if writer is not None:
                writer.abort()
            if message is not None:
                message.abort()
            _log("message", self.info, result="reject", reason=f"spool: {self.write_failed}")
            self._reset_envelope()
            return Replies.LOCAL_ERROR
        if message is not None:
            mail, rcpts = self.mail, self.rcpts
            assert mail is not None
            self._reset_envelope()
            return self._verify_and_commit(writer, message, mail, rcpts,
                                           received_at=self.ctx.clock.now(), size=event.size)
        envelope = self._envelope()
        self._reset_envelope()
        return self._commit(writer, envelope, event.size)

    def _envelope(self, mail: MailFrom | None = None, rcpts: list[Recipient] | None = None,
                  received_at: float | None = None, *, header_edits: str | None = None,
                  quarantined: bool = False, quarantine_folder: str | None = None) -> Envelope:
        """The envelope of the current transaction (or of ``mail`` / ``rcpts``, kept across
        an await), with the inbound verdict's fields."""
        mail = mail or self.mail
        assert mail is not None
        params = mail.params
        return Envelope(
            mail_from=str(mail.address) if mail.address is not None else "",
            rcpts=tuple(self.rcpts if rcpts is None else rcpts),
            received_at=self.ctx.clock.now() if received_at is None else received_at,
            client_ip=self.info.client_ip,
            client_port=self.info.client_port,
            helo=self.helo,
            tls=self.tls,
            auth_user=self.user.name if self.user else None,
            body=params.body,
            smtputf8=params.smtputf8,
            requiretls=params.requiretls,
            ret=params.ret,
            envid=params.envid,
            header_edits=header_edits,
            quarantined=quarantined,
            quarantine_folder=quarantine_folder,
        )

    async def _verify_and_commit(self, writer: SpoolWriter, message: InboundMessage,
                                 mail: MailFrom, rcpts: list[Recipient], *,
                                 received_at: float, size: int) -> Decision:
        """mx with a pipeline: the verdict, then reject (nothing kept) or commit."""
        try:
            verdict = await message.finish()
        except Exception:  # a bug in verification: never accept unverified, never crash
            log.exception("inbound pipeline failed ip=%s id=%s", self.info.client_ip, writer.id)
            message.abort()
            writer.abort()
            return _PIPELINE_FAILED
        if verdict.action is Action.REJECT:
            writer.abort()
            reply = verdict.reply or _POLICY_REJECT
            _log("message", self.info, id=writer.id, size=size, result="reject",
                 reply=f"{reply.code} {reply.status}", action=verdict.action.value,
                 reasons="; ".join(verdict.reasons))
            refused = self.ctx.refused
            if refused is not None:
                refused_row = verdict.record(spool_id=writer.id, envelope=self._envelope(
                    mail, rcpts, received_at), size=size)
                try:
                    await refused(refused_row)
                except Exception as exc:
                    log.error("recording the refused message's verdict failed id=%s "
                              "error=%r", writer.id, exc)
            return reply
        quarantined = verdict.quarantined
        envelope = self._envelope(
            mail, rcpts, received_at, header_edits=verdict.edits.to_json(),
            quarantined=quarantined,
            quarantine_folder=verdict.quarantine_folder if quarantined else None)

        def row(spool_id: str) -> Verdict:
            return verdict.record(spool_id=spool_id, envelope=envelope, size=size)

        return await self._commit(writer, envelope, size, row,
                                  action=verdict.action.value)

    async def _sign_and_commit(self, content: bytes, envelope: Envelope, mail: MailFrom,
                               rcpts: list[Recipient], size: int) -> Decision:
        """submission with a signer: prepare, then spool Received + the signed message."""
        signer = self.ctx.signer
        assert signer is not None
        user = self.user
        try:
            outcome = await signer.prepare(content, user=user)
        except LimitExceeded as exc:
            _log("message", self.info, size=size, result="reject", reason=str(exc))
            return HEADER_TOO_LARGE
        except MailmoatError as exc:  # e.g. an unreadable header section
            _log("message", self.info, size=size, result="reject", reason=str(exc))
            return _UNREADABLE
        except Exception:  # a bug in signing: the client retries, nothing is lost
            log.exception("submission pipeline failed ip=%s", self.info.client_ip)
            return _PIPELINE_FAILED
        if outcome.reply is not None:
            _log("message", self.info, size=size, user=user.name if user else "",
                 result="reject", reply=f"{outcome.reply.code} {outcome.reply.status}",
                 reason=outcome.reason)
            return outcome.reply
        signed = outcome.message
        try:
            writer = self.ctx.spool.open_writer(
                max_size=len(signed) + _RECEIVED_ROOM, deferred=True)
        except (SpoolError, OSError) as exc:
            _log("message", self.info, result="reject", reason=f"spool: {exc}")
            return Replies.LOCAL_ERROR
        try:
            writer.write(self._received(writer.id, mail, rcpts))
            writer.write(signed)
        except (SpoolError, LimitExceeded, OSError) as exc:
            writer.abort()
            _log("message", self.info, result="reject", reason=f"spool: {exc}")
            return Replies.LOCAL_ERROR
        return await self._commit(writer, envelope, size, None,
                                  signatures=" ".join(outcome.signatures) or "none",
                                  repairs="; ".join(outcome.repairs))

    async def _commit(self, writer: SpoolWriter, envelope: Envelope, size: int,
                      row: Callable[[str], Verdict] | None = None,
                      **details: object) -> Decision:
        try:
            spool_id = await writer.commit(envelope)
        except (SpoolError, OSError) as exc:
            writer.abort()
            _log("message", self.info, result="reject", reason=f"spool: {exc}")
            return Replies.LOCAL_ERROR
        self.accepted.append(spool_id)
        _log("message", self.info, id=spool_id, size=size, rcpts=len(envelope.rcpts),
             tls=envelope.tls.version if envelope.tls else "none", result="accept", **details)
        accept = self.ctx.accept
        if accept is not None:
            try:
                await accept(spool_id, envelope, row(spool_id) if row is not None else None)
            except Exception as exc:  # durable in the spool: the runtime's sweep queues it
                log.error("accept failed id=%s ip=%s error=%r (spooled; left to the sweep)",
                          spool_id, self.info.client_ip, exc)
        if self.ctx.on_message is not None:
            self.ctx.on_message(spool_id, envelope)
        return Replies.MESSAGE_ACCEPTED.with_text(_QUEUED.format(spool_id))

    def _on_violation(self, event: Event) -> Decision:
        assert isinstance(event, ProtocolViolation)
        _log("violation", self.info, reply=event.reply.code, reason=event.reason,
             closing=event.closing)
        in_transaction = self.writer is not None or self.buffer is not None
        if in_transaction and self.conn.engine.state not in _IN_MESSAGE:
            self._drop_transaction()
        return None

    def _on_reset(self, event: Event) -> Decision:
        self._drop_transaction()
        return None

    def _on_tls_event(self, event: Event) -> Decision:
        return None

    # --- helpers --------------------------------------------------------------------------
    def _reset_envelope(self) -> None:
        self.mail = None
        self.rcpts = []

    def _drop_transaction(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.abort()
        message, self.message = self.message, None
        if message is not None:
            message.abort()
        spf, self._spf = self._spf, None
        if spf is not None:
            _discard(spf)
        self.buffer = None
        self.write_failed = None
        self._reset_envelope()


_DISPATCH: Final[dict[type[Event], Callable[[Session, Event], Decision | Awaitable[Decision]]]] = {
    Ehlo: Session._on_hello,
    Helo: Session._on_hello,
    AuthRequested: Session._on_auth,
    AuthResponse: Session._on_auth,
    MailFrom: Session._on_mail,
    RcptTo: Session._on_rcpt,
    DataStarted: Session._on_data,
    MessageComplete: Session._on_complete,
    ProtocolViolation: Session._on_violation,
    Reset: Session._on_reset,
    Quit: Session._on_reset,
    TLSEstablished: Session._on_tls_event,
}


def session_factory(
    ctx: Callable[[], GatewayContext],
) -> Callable[[SMTPServerProtocol, ConnectionInfo], Session]:
    """A handler factory for :class:`mailmoat.net.smtp_server.ListenerSpec`; ``ctx`` returns
    the current context (so a reload can replace it for new connections)."""

    def make(conn: SMTPServerProtocol, info: ConnectionInfo) -> Session:
        return Session(ctx(), conn, info)

    return make
