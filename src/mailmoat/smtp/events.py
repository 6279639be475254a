"""Events the server engine gives its user (``ServerConnection.next_event()``).

Two kinds:

* **Decisions** (``Event.decision`` is True): the engine waits for the application to call
  ``conn.accept()`` or ``conn.reject(reply)`` before it answers the peer and moves on:
  :class:`Ehlo`, :class:`Helo`, :class:`StartTLSRequested`, :class:`AuthRequested`,
  :class:`AuthResponse`, :class:`MailFrom`, :class:`RcptTo`, :class:`DataStarted`,
  :class:`MessageComplete`.
* **Notices**: the engine has already answered (or nothing needs answering): :class:`Reset`,
  :class:`Noop`, :class:`Help`, :class:`Vrfy`, :class:`Quit`, :class:`MessageChunk`,
  :class:`ProtocolViolation`, :class:`TLSEstablished`, :class:`NeedData`,
  :class:`ConnectionClosed`.

All are frozen values; bytes stay bytes (message content) and text is ``str`` only where the
RFC defines it as text (domains, decoded addresses, SASL PLAIN/LOGIN strings, RFC 4616 §2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final

from mailmoat.errors import RemoteProtocolError
from mailmoat.smtp._abnf import Address
from mailmoat.smtp.extensions import MailParams, RcptParams
from mailmoat.smtp.replies import Reply

__all__ = [
    "NEED_DATA",
    "AuthRequested",
    "AuthResponse",
    "ConnectionClosed",
    "DataStarted",
    "Ehlo",
    "Event",
    "Helo",
    "Help",
    "MailFrom",
    "MessageChunk",
    "MessageComplete",
    "NeedData",
    "Noop",
    "ProtocolViolation",
    "Quit",
    "RcptTo",
    "Reset",
    "StartTLSRequested",
    "TLSEstablished",
    "Vrfy",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. ``decision`` says whether accept()/reject() must follow."""

    decision: ClassVar[bool] = False


# --- decisions ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Ehlo(Event):
    """EHLO <domain>: accept() answers with the extension list for this connection state."""

    decision: ClassVar[bool] = True
    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Helo(Event):
    """HELO <domain> (no ESMTP extensions on this session)."""

    decision: ClassVar[bool] = True
    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLSRequested(Event):
    """STARTTLS: accept() sends 220 and discards every byte until ``tls_established()``."""

    decision: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequested(Event):
    """AUTH finished its exchange (PLAIN/LOGIN) or started one (any other mechanism).

    For PLAIN and LOGIN the engine decodes the credentials (RFC 4616 §2: UTF-8) into
    ``authzid``/``username``/``password``; accept() answers 235 2.7.0, reject() e.g. 535 5.7.8.
    For another configured mechanism only ``initial_response`` is set (``None`` = none sent,
    ``b""`` = the "=" empty response); the application drives it with ``auth_challenge()``.
    """

    decision: ClassVar[bool] = True
    mechanism: str
    initial_response: bytes | None = None
    authzid: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResponse(Event):
    """A decoded client response to an ``auth_challenge()`` (mechanisms other than PLAIN/LOGIN)."""

    decision: ClassVar[bool] = True
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class MailFrom(Event):
    """MAIL FROM: ``address`` None is the null reverse-path ``<>``."""

    decision: ClassVar[bool] = True
    address: Address | None
    params: MailParams


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptTo(Event):
    """RCPT TO (already checked against max_recipients)."""

    decision: ClassVar[bool] = True
    address: Address
    params: RcptParams


@dataclass(frozen=True, slots=True, kw_only=True)
class DataStarted(Event):
    """DATA (accept() sends 354) or the first BDAT of a transaction (accept() reads the chunk)."""

    decision: ClassVar[bool] = True
    bdat: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageComplete(Event):
    """The message ended cleanly (<CRLF>.<CRLF> or BDAT LAST) within every limit.

    ``data`` is the whole content (dot-unstuffed) unless the connection streams content as
    :class:`MessageChunk` events, then it is ``b""``. ``size`` is the content length.
    accept() answers 250 2.0.0 (or the 2xx reply given, e.g. with a queue id).
    """

    decision: ClassVar[bool] = True
    data: bytes = field(repr=False)
    size: int


# --- notices -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class MessageChunk(Event):
    """A piece of content (streaming mode only); a message ends with MessageComplete or with
    ProtocolViolation (then the pieces must be dropped)."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset(Event):
    """RSET (answered 250): the transaction is aborted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop(Event):
    """NOOP (answered 250)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Help(Event):
    """HELP [topic] (answered 214)."""

    topic: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Vrfy(Event):
    """VRFY <string> (answered with the configured reply, 252 by default)."""

    argument: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit(Event):
    """QUIT (answered 221); the connection is closed after the reply is sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSEstablished(Event):
    """The adapter reported a finished TLS handshake; the session restarts (RFC 3207 §4.2)."""

    tls_version: str
    cipher: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolation(Event):
    """The peer broke a rule; ``reply`` has already been queued. ``closing``: we will close."""

    reply: Reply
    reason: str
    closing: bool = False

    def as_error(self) -> RemoteProtocolError:
        """The same fact as an exception (for callers that unwind on peer errors)."""
        return RemoteProtocolError(self.reason, reply=self.reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedData(Event):
    """Nothing more can be decided without more bytes from the peer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The connection is over (QUIT, 421, peer EOF): send data_to_send() and close."""


#: The one NeedData value.
NEED_DATA: Final = NeedData()
