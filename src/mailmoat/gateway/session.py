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

Every decision is logged as one ``key=value`` line (logger ``mailmoat.smtp.session``).

SECURITY: every event value came from the peer through the engine (grammar-checked,
bounded). Addresses are compared only after the normalisation of :mod:`relay` and
:mod:`users`; the message bytes are stored as received, never interpreted here; our Received
field is built from sanitised words only (:mod:`mailmoat.gateway.received`).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import LimitExceeded, SpoolError
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
    #: Called with each committed (spool ID, envelope) -- the pipeline's entry point.
    on_message: Callable[[str, Envelope], None] | None = None
    stats: dict[str, int] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


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
        try:
            # deferred: no file-system call on the event loop for messages under 64 KiB.
            writer = self.ctx.spool.open_writer(
                max_size=self.ctx.max_message_size + _RECEIVED_ROOM, deferred=True)
            writer.write(self._received(writer.id))
        except (SpoolError, OSError) as exc:
            _log("data", self.info, result="reject", reason=f"spool: {exc}")
            return Replies.LOCAL_ERROR
        self.writer = writer
        self.write_failed = None
        return None

    def _received(self, queue_id: str) -> bytes:
        mail = self.mail
        assert mail is not None
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
            recipients=tuple(r.address for r in self.rcpts),
            tls=self.tls,
            timestamp=self.ctx.clock.now(),
        )

    def _on_complete(self, event: Event) -> Decision | Awaitable[Decision]:
        assert isinstance(event, MessageComplete)
        writer, self.writer = self.writer, None
        if writer is None or self.write_failed is not None:
            if writer is not None:
                writer.abort()
            _log("message", self.info, result="reject", reason=f"spool: {self.write_failed}")
            self._reset_envelope()
            return Replies.LOCAL_ERROR
        mail = self.mail
        assert mail is not None
        params = mail.params
        envelope = Envelope(
            mail_from=str(mail.address) if mail.address is not None else "",
            rcpts=tuple(self.rcpts),
            received_at=self.ctx.clock.now(),
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
        )
        self._reset_envelope()
        return self._commit(writer, envelope, event.size)

    async def _commit(self, writer: SpoolWriter, envelope: Envelope, size: int) -> Decision:
        try:
            spool_id = await writer.commit(envelope)
        except (SpoolError, OSError) as exc:
            writer.abort()
            _log("message", self.info, result="reject", reason=f"spool: {exc}")
            return Replies.LOCAL_ERROR
        self.accepted.append(spool_id)
        _log("message", self.info, id=spool_id, size=size, rcpts=len(envelope.rcpts),
             tls=envelope.tls.version if envelope.tls else "none", result="accept")
        if self.ctx.on_message is not None:
            self.ctx.on_message(spool_id, envelope)
        return Replies.MESSAGE_ACCEPTED.with_text(_QUEUED.format(spool_id))

    def _on_violation(self, event: Event) -> Decision:
        assert isinstance(event, ProtocolViolation)
        _log("violation", self.info, reply=event.reply.code, reason=event.reason,
             closing=event.closing)
        if self.writer is not None and self.conn.engine.state not in _IN_MESSAGE:
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
