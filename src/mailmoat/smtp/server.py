"""The sans-IO SMTP server engine: bytes in, events out, replies as bytes.

Usage (an adapter does the I/O; see ``events.py`` for every event)::

    conn = ServerConnection(ServerConfig(hostname="mx.example"))
    conn.greet()                           # queue our 220 (after a greet pause, if any)
    sock.send(conn.data_to_send())
    while True:
        event = conn.next_event()
        if event is NEED_DATA:             # read more, then conn.receive_data(b) (b"" = EOF)
            ...
        elif event.decision:               # policy: conn.accept() / conn.reject(reply)
            ...
        elif isinstance(event, ConnectionClosed):
            break
        sock.send(conn.data_to_send())     # after every event

After accepting :class:`StartTLSRequested`, flush ``data_to_send()`` (our 220), run the TLS
handshake on the raw socket, then call ``tls_established()``; every plaintext byte the peer
sent after ``STARTTLS`` has been dropped (RFC 3207 §4.2, CVE-2011-0411 / CVE-2024-34083).

SECURITY
    Trusts nothing from the peer. Sequencing comes only from :data:`mailmoat.smtp.state.TABLE`;
    framing from :mod:`mailmoat.smtp._receive` (bounded buffers, CRLF only, strict
    end-of-data); addresses from :mod:`mailmoat.smtp._abnf`; parameters from
    :mod:`mailmoat.smtp.extensions`. Bounds: command line 512 octets (MAIL/RCPT +500 for
    parameters, AUTH 12288), message size, recipients, protocol errors (then 421 and close),
    failed AUTH attempts (then 421 and close). Refuses: clients that talk before the greeting
    (554, close), content pipelined before our 354 (554, close: RFC 2920 §3.1 makes DATA a
    synchronisation point), BDAT chunks whose size cannot be parsed or exceeds the message
    size (then the stream cannot be resynchronised: reply and close), AUTH before TLS when
    ``require_tls_for_auth``, and every ESMTP parameter not advertised on this connection.
    The application's misuse of this API raises ``LocalProtocolError``; the peer's errors
    become replies plus a :class:`ProtocolViolation` event, never exceptions.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from mailmoat.errors import ConfigError, LocalProtocolError
from mailmoat.limits import (
    SMTP_AUTH_LINE_MAX,
    SMTP_COMMAND_LINE_MAX,
    SMTP_COMMAND_PARAMS_EXTRA,
    SMTP_MAX_AUTH_ATTEMPTS,
    SMTP_MAX_ERRORS,
    SMTP_MAX_MESSAGE_SIZE,
    SMTP_MAX_RECIPIENTS,
    SMTP_SIZE_DIGITS_MAX,
    SMTP_TEXT_LINE_MAX,
)
from mailmoat.smtp import _receive as rx
from mailmoat.smtp._abnf import (
    AddressSyntaxError,
    parse_helo_domain,
    parse_mail_args,
    parse_rcpt_args,
)
from mailmoat.smtp.events import (
    NEED_DATA,
    AuthRequested,
    AuthResponse,
    ConnectionClosed,
    DataStarted,
    Ehlo,
    Event,
    Helo,
    Help,
    MailFrom,
    MessageChunk,
    MessageComplete,
    Noop,
    ProtocolViolation,
    Quit,
    RcptTo,
    Reset,
    StartTLSRequested,
    TLSEstablished,
    Vrfy,
)
from mailmoat.smtp.extensions import (
    Advertised,
    ParameterError,
    ehlo_keywords,
    parse_mail_params,
    parse_rcpt_params,
)
from mailmoat.smtp.replies import Replies, Reply, printable
from mailmoat.smtp.state import TABLE, Go, Impossible, Input, Refuse, State, rule

__all__ = ["BareNewlinePolicy", "ServerConfig", "ServerConnection"]

#: Postfix ``smtpd_forbid_bare_newline``: "reject" (our default) or "normalize".
BareNewlinePolicy = Literal["reject", "normalize"]

_VERBS: Final[dict[bytes, Input]] = {
    b"EHLO": Input.EHLO, b"HELO": Input.HELO, b"MAIL": Input.MAIL, b"RCPT": Input.RCPT,
    b"DATA": Input.DATA, b"BDAT": Input.BDAT, b"RSET": Input.RSET, b"NOOP": Input.NOOP,
    b"QUIT": Input.QUIT, b"VRFY": Input.VRFY, b"HELP": Input.HELP,
    b"STARTTLS": Input.STARTTLS, b"AUTH": Input.AUTH,
}
#: Command line limits above RFC 5321's 512 octets: MAIL/RCPT parameters (RFC 5321
#: §4.5.3.1.4 "+ extensions"), AUTH initial responses (RFC 4954 §4).
_LINE_LIMITS: Final[dict[Input, int]] = {
    Input.MAIL: SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA,
    Input.RCPT: SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA,
    Input.AUTH: SMTP_AUTH_LINE_MAX,
}
#: Verbs RFC 5321 (and older RFCs) define that we deliberately do not implement: 502.
_NOT_IMPLEMENTED: Final = frozenset(
    {b"EXPN", b"TURN", b"ETRN", b"ATRN", b"SEND", b"SOML", b"SAML", b"XCLIENT", b"XFORWARD"}
)
_LINE_FAULT_REPLY: Final = {
    rx.LineFault.BARE_LF: Replies.BARE_LF_REJECTED,
    rx.LineFault.BARE_CR: Replies.BARE_CR_REJECTED,
    rx.LineFault.NUL: Replies.NUL_REJECTED,
    rx.LineFault.TOO_LONG: Replies.LINE_TOO_LONG,
}
_CONTENT_FAULT_REPLY: Final = {
    rx.ContentFault.BARE_LF: Replies.CONTENT_BARE_LF,
    rx.ContentFault.BARE_CR: Replies.CONTENT_BARE_CR,
    rx.ContentFault.NUL: Replies.CONTENT_NUL,
    rx.ContentFault.LINE_TOO_LONG: Replies.CONTENT_LINE_TOO_LONG,
    rx.ContentFault.TOO_BIG: Replies.MESSAGE_TOO_BIG,
}
#: RFC 4954 §4 / LOGIN (draft-murchison-sasl-login): the two LOGIN prompts, base64.
_LOGIN_USERNAME: Final = base64.b64encode(b"Username:").decode("ascii")
_LOGIN_PASSWORD: Final = base64.b64encode(b"Password:").decode("ascii")
_MAIL_LIMIT: Final = SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA
#: Decisions whose accept() may carry the application's own 2xx reply.
_CUSTOM_ACCEPT: Final = frozenset({MailFrom, RcptTo, MessageComplete, Helo})
_START_MAIL_INPUT: Final = Replies.START_MAIL_INPUT.to_bytes()
#: Events without per-command data are frozen values: one instance each serves every session.
_DATA_STARTED: Final = DataStarted(bdat=False)
_BDAT_STARTED: Final = DataStarted(bdat=True)


class _St:
    """The :class:`State` members as plain class attributes. On Python 3.11 every ``State.X``
    goes through ``EnumType.__getattr__`` (a Python-level hook, about ten times a plain
    attribute lookup), and the per-command path reads members many times."""

    AUTH = State.AUTH
    CLOSED = State.CLOSED
    DATA = State.DATA
    GREETING_PENDING = State.GREETING_PENDING
    MAIL = State.MAIL
    RCPT = State.RCPT
    STARTTLS_PENDING = State.STARTTLS_PENDING


class _In:
    """The :class:`Input` members as plain class attributes (see :class:`_St`)."""

    AUTH = Input.AUTH
    AUTH_END = Input.AUTH_END
    BAD_LINE = Input.BAD_LINE
    BDAT = Input.BDAT
    CHUNK_END = Input.CHUNK_END
    DATA = Input.DATA
    DATA_END = Input.DATA_END
    EHLO = Input.EHLO
    GREET = Input.GREET
    HELO = Input.HELO
    HELP = Input.HELP
    LAST_CHUNK_END = Input.LAST_CHUNK_END
    MAIL = Input.MAIL
    NOOP = Input.NOOP
    PEER_BYTES_EARLY = Input.PEER_BYTES_EARLY
    PEER_CLOSED = Input.PEER_CLOSED
    QUIT = Input.QUIT
    RCPT = Input.RCPT
    RSET = Input.RSET
    SHUTDOWN = Input.SHUTDOWN
    STARTTLS = Input.STARTTLS
    TLS_ESTABLISHED = Input.TLS_ESTABLISHED
    UNKNOWN = Input.UNKNOWN
    VRFY = Input.VRFY


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything the engine needs to know; limits default to :mod:`mailmoat.limits`."""

    hostname: str
    max_message_size: int = SMTP_MAX_MESSAGE_SIZE
    max_recipients: int = SMTP_MAX_RECIPIENTS
    max_errors: int = SMTP_MAX_ERRORS
    max_auth_attempts: int = SMTP_MAX_AUTH_ATTEMPTS
    #: RFC 5321 §4.5.3.1.6 text line limit (octets including <CRLF>).
    max_text_line: int = SMTP_TEXT_LINE_MAX
    bare_newline: BareNewlinePolicy = "reject"
    allow_nul: bool = False
    tls_available: bool = False  # STARTTLS can be offered
    tls_active: bool = False  # implicit TLS (port 465): TLS from the first byte
    require_tls_for_mail: bool = False  # 530 5.7.0 before STARTTLS (RFC 3207 §4)
    require_tls_for_auth: bool = True  # no AUTH in plaintext (RFC 4954 §4, 538 5.7.11)
    require_auth_for_mail: bool = False  # submission (RFC 6409 §4.3): 530 5.7.0
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    offer_requiretls: bool = True  # RFC 8689, only ever inside TLS
    smtputf8: bool = True
    eightbitmime: bool = True
    chunking: bool = True
    dsn: bool = True
    pipelining: bool = True
    vrfy_reply: Reply = Replies.CANNOT_VRFY
    #: RFC 2920 §3.1 (Postfix smtpd_forbid_unauth_pipelining): bytes after DATA before 354.
    forbid_unsynchronised_pipelining: bool = True
    #: Give content as MessageChunk events (MessageComplete.data is then b"").
    stream_content: bool = False

    def __post_init__(self) -> None:
        host = self.hostname
        if not host or not host.isascii() or any(c in host for c in " \r\n\0\t"):
            raise ConfigError("must be a non-empty ASCII host name", key="hostname")
        for key in ("max_message_size", "max_recipients", "max_errors", "max_auth_attempts"):
            if getattr(self, key) < 1:
                raise ConfigError("must be at least 1", key=key)
        if self.max_text_line < SMTP_TEXT_LINE_MAX:
            raise ConfigError(f"must be at least {SMTP_TEXT_LINE_MAX} (RFC 5321 4.5.3.1.6)",
                              key="max_text_line")
        if self.bare_newline not in ("reject", "normalize"):
            raise ConfigError("must be 'reject' or 'normalize'", key="bare_newline")
        for mech in self.auth_mechanisms:
            if not mech or mech != mech.upper() or not mech.isascii() or " " in mech:
                raise ConfigError(f"bad SASL mechanism name {mech!r}", key="auth_mechanisms")


def _error_reply(err: AddressSyntaxError) -> Reply:
    # The reason may quote the peer's octets: escape them (replies are ASCII, one line each).
    return Reply(code=err.reply_code, status=err.status,
                 text=printable(f"Syntax error: {err.reason}"))


class ServerConnection:
    """One SMTP server session, without I/O. See the module docstring for the loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._state = _St.GREETING_PENDING
        line_limit = SMTP_AUTH_LINE_MAX if config.auth_mechanisms else _MAIL_LIMIT
        self._policy = rx.ContentPolicy(
            max_size=config.max_message_size, max_line=config.max_text_line,
            normalize_newlines=config.bare_newline == "normalize", allow_nul=config.allow_nul,
        )
        self._framer = rx.Framer(line_limit=line_limit, policy=self._policy)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._eof = False
        self._errors = 0
        self._auth_failures = 0
        self._tls_active = config.tls_active
        self._tls_info: tuple[str, str] | None = None
        self._authenticated: str | None = None
        # session (forgotten by STARTTLS)
        self._esmtp = False
        self._helo: str | None = None
        self._adv: Advertised | None = None  # cache of advertised()
        # transaction
        self._mail: MailFrom | None = None
        self._rcpt_count = 0
        self._parts: list[bytes] = []
        self._bdat_failed: Reply | None = None
        self._skipping = False  # a refused BDAT chunk is being read and dropped
        self._skip_last = False  # ... and it was the LAST of a failed transaction
        self._bdat_last = False
        # SASL exchange
        self._auth_mech = ""
        self._auth_step = ""
        self._auth_user = ""
        # the decision awaiting accept()/reject()
        self._pending: Event | None = None
        self._pending_target = _St.CLOSED
        self._pending_arg = 0

    # --- read-only views ------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def pending(self) -> Event | None:
        """The decision event waiting for accept()/reject(), if any."""
        return self._pending

    @property
    def their_hostname(self) -> str | None:
        """The EHLO/HELO argument (forgotten by STARTTLS)."""
        return self._helo

    @property
    def esmtp(self) -> bool:
        return self._esmtp

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def tls_info(self) -> tuple[str, str] | None:
        """(TLS version, cipher) given to tls_established()."""
        return self._tls_info

    @property
    def authenticated(self) -> str | None:
        """The authenticated identity (SASL authcid) or None."""
        return self._authenticated

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def closed(self) -> bool:
        return self._state is _St.CLOSED

    @property
    def buffered(self) -> int:
        """Received octets not yet framed (bounded; for tests and flow control)."""
        return self._framer.buffered

    def advertised(self) -> Advertised:
        """The extensions in effect now (they depend on EHLO, TLS and the config)."""
        if self._adv is not None:
            return self._adv
        cfg = self.config
        tls = self._tls_active
        self._adv = Advertised(
            esmtp=self._esmtp,
            size=cfg.max_message_size,
            eightbitmime=cfg.eightbitmime,
            smtputf8=cfg.smtputf8,
            pipelining=cfg.pipelining,
            chunking=cfg.chunking,
            dsn=cfg.dsn,
            starttls=cfg.tls_available and not tls,
            requiretls=cfg.offer_requiretls and tls,
            auth=cfg.auth_mechanisms if (tls or not cfg.require_tls_for_auth) else (),
        )
        return self._adv

    # --- I/O seam -------------------------------------------------------------------------
    def greet(self) -> None:
        """Queue the 220 greeting (RFC 5321 §4.2)."""
        self._step(_In.GREET)
        self._reply(Replies.greeting(self.config.hostname))

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means end of stream."""
        if self._state is _St.CLOSED:
            return
        if not data:
            self._eof = True
            return
        if self._state is _St.GREETING_PENDING:
            r = rule(_St.GREETING_PENDING, _In.PEER_BYTES_EARLY)
            assert isinstance(r, Refuse)
            self._events.append(self._violation(r.reply, "client talked before the greeting",
                                                close=r.close))
            return
        self._framer.feed(data)

    def data_to_send(self) -> bytes:
        """Every reply queued so far, as wire bytes (and forget them)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def tls_established(self, *, tls_version: str, cipher: str) -> None:
        """The adapter finished the TLS handshake after our STARTTLS 220.

        RFC 3207 §4.2: "the server MUST discard any knowledge obtained from the client, such
        as the argument to the EHLO command, which was not obtained from the TLS negotiation
        itself" -- the session restarts at CONNECTED and waits for a new EHLO.
        """
        self._step(_In.TLS_ESTABLISHED)
        self._framer.discard_buffer()
        self._framer.lines()
        self._tls_active = True
        self._tls_info = (tls_version, cipher)
        self._esmtp = False
        self._adv = None
        self._helo = None
        self._authenticated = None
        self._reset_transaction()
        self._events.append(TLSEstablished(tls_version=tls_version, cipher=cipher))

    def send(self, reply: Reply) -> None:
        """Send an unsolicited reply: only 421 is allowed (RFC 5321 §3.8), then we close."""
        if not reply.closes:
            raise LocalProtocolError("only a 421 reply may be sent unsolicited (RFC 5321 3.8)")
        self.close(reply)

    def close(self, reply: Reply | None = Replies.SHUTTING_DOWN) -> None:
        """Close the session (timeouts, shutdown), queueing ``reply`` (a 421) if given."""
        if self._state is _St.CLOSED:
            return
        if reply is not None:
            self._reply(reply)
        self._pending = None
        self._shutdown()

    # --- events ---------------------------------------------------------------------------
    def next_event(self) -> Event:
        """The next event; NEED_DATA when more bytes are needed."""
        if self._pending is not None:
            raise LocalProtocolError(
                f"answer the pending {type(self._pending).__name__} with accept() or reject()"
            )
        if self._events:
            return self._events.popleft()
        framer = self._framer
        while True:
            state = self._state
            if state is _St.CLOSED:
                return ConnectionClosed()
            if state is _St.GREETING_PENDING or state is _St.STARTTLS_PENDING:
                item = None
            else:
                item = framer.next_raw()
            if item is None:
                if self._eof:
                    self._step(_In.PEER_CLOSED)
                    self._framer.discard_all()
                    return ConnectionClosed()
                return NEED_DATA
            event = self._dispatch(item)
            if event is not None:
                if event.decision:
                    self._pending = event
                return event

    def accept(self, reply: Reply | None = None, *, identity: str | None = None) -> None:
        """Accept the pending decision; ``reply`` (2xx) replaces the default where allowed.

        ``identity`` names the authenticated user for a SASL mechanism the engine does not
        decode itself (PLAIN/LOGIN use the decoded username).
        """
        event = self._pending
        if event is None:
            raise LocalProtocolError("no decision is pending")
        cls = type(event)
        if reply is not None:
            if cls not in _CUSTOM_ACCEPT:
                raise LocalProtocolError(f"{cls.__name__} takes no custom accept reply")
            if not 200 <= reply.code < 300:
                raise LocalProtocolError("accept() needs a 2xx reply")
        self._pending = None
        if cls is MailFrom:
            assert isinstance(event, MailFrom)
            self._mail = event
            self._state = _St.MAIL
            self._out.append((reply or Replies.SENDER_OK).to_bytes())
        elif cls is RcptTo:
            self._rcpt_count += 1
            self._state = _St.RCPT
            self._out.append((reply or Replies.RECIPIENT_OK).to_bytes())
        elif cls is DataStarted:
            assert isinstance(event, DataStarted)
            self._state = self._pending_target
            if event.bdat:
                self._framer.start_bdat(self._pending_arg, last=self._bdat_last, new_message=True)
            else:
                self._out.append(_START_MAIL_INPUT)
                self._framer.start_data()
        elif cls is MessageComplete:
            self._out.append((reply or Replies.MESSAGE_ACCEPTED).to_bytes())
            self._end_message()
        elif cls is Ehlo or cls is Helo:
            assert isinstance(event, Ehlo | Helo)
            self._reset_transaction()
            self._esmtp = cls is Ehlo
            self._adv = None
            self._helo = event.domain
            self._state = self._pending_target
            if cls is Ehlo:
                lines = [self.config.hostname, *ehlo_keywords(self.advertised())]
                self._reply(Reply(code=250, status=None, text="\n".join(lines)))
            else:
                self._reply(reply or Replies.helo_ok(self.config.hostname))
        elif cls is StartTLSRequested:
            self._reply(Replies.READY_TO_START_TLS)
            self._state = _St.STARTTLS_PENDING
            # RFC 3207 §4.2 / CVE-2011-0411: nothing the client pipelined after STARTTLS may
            # be read as a command inside TLS.
            self._framer.discard_all()
        else:  # AuthRequested | AuthResponse
            self._authenticated = identity or self._auth_user or self._auth_mech
            self._reply(Replies.AUTH_SUCCEEDED)
            self._step(_In.AUTH_END)

    def reject(self, reply: Reply) -> None:
        """Refuse the pending decision with ``reply`` (4xx/5xx; 421 also closes)."""
        if reply.code < 400:
            raise LocalProtocolError("reject() needs a 4xx or 5xx reply")
        event = self._take_pending()
        self._reply(reply)
        if isinstance(event, DataStarted) and event.bdat:
            # The chunk's octets follow the BDAT command on the wire: read and drop them.
            self._skip(self._pending_arg, last=False)
        elif isinstance(event, MessageComplete):
            self._end_message()
        elif isinstance(event, AuthRequested | AuthResponse):
            self._auth_failures += 1
            self._step(_In.AUTH_END)
            if self._auth_failures >= self.config.max_auth_attempts and not reply.closes:
                self._reply(Replies.TOO_MANY_AUTH_FAILURES)
                self._shutdown()
        if reply.closes:
            self._shutdown()

    def auth_challenge(self, challenge: bytes) -> None:
        """Answer a pending AuthRequested/AuthResponse (not PLAIN/LOGIN) with a 334 challenge."""
        event = self._pending
        if not isinstance(event, AuthRequested | AuthResponse) or self._auth_step != "generic":
            raise LocalProtocolError("auth_challenge() needs a pending generic SASL exchange")
        self._pending = None
        self._reply(Replies.auth_challenge(base64.b64encode(challenge).decode("ascii")))

    # --- internals ------------------------------------------------------------------------
    def _take_pending(self) -> Event:
        event = self._pending
        if event is None:
            raise LocalProtocolError("no decision is pending")
        self._pending = None
        return event

    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def _step(self, inp: Input) -> None:
        """Apply an engine step from the table (never a peer command)."""
        r = rule(self._state, inp)
        if not isinstance(r, Go):
            raise LocalProtocolError(f"{inp.value} is not possible in state {self._state.value}")
        self._state = r.target

    def _shutdown(self) -> None:
        self._step(_In.SHUTDOWN)
        self._framer.discard_all()

    def _violation(self, reply: Reply, reason: str, *, close: bool = False) -> ProtocolViolation:
        """A peer error: reply, count it, maybe close."""
        self._reply(reply)
        self._errors += 1
        if not close and self._errors >= self.config.max_errors:
            self._reply(Replies.TOO_MANY_ERRORS)
            close = True
        if close:
            self._shutdown()
        return ProtocolViolation(reply=reply, reason=reason, closing=close)

    def _reset_transaction(self) -> None:
        self._mail = None
        self._rcpt_count = 0
        self._parts = []
        self._bdat_failed = None

    def _end_message(self) -> None:
        self._reset_transaction()
        self._step(_In.DATA_END if self._state is _St.DATA else _In.LAST_CHUNK_END)

    def _dispatch(self, item: bytes | rx.Item) -> Event | None:
        # ``type(x) is C`` (not isinstance): exact classes, and mypy narrows on it.
        if type(item) is bytes:  # a command line (Framer.next_raw)
            if self._state is not _St.AUTH:
                return self._on_command(item)
            return self._on_auth_line(rx.Line(data=item))
        if type(item) is rx.ContentPiece:
            if self.config.stream_content:
                return MessageChunk(data=item.data)
            self._parts.append(item.data)
            return None
        if type(item) is rx.ChunkEnd:
            return self._on_chunk_end(item)
        assert isinstance(item, rx.LineRefused)
        if self._state is _St.AUTH:
            return self._on_auth_line(item)
        r = TABLE[(self._state, _In.BAD_LINE)]
        assert isinstance(r, Refuse)
        return self._violation(
            _LINE_FAULT_REPLY[item.fault], f"command line: {item.fault.value}", close=r.close
        )

    # --- commands -------------------------------------------------------------------------
    def _on_command(self, line: bytes) -> Event | None:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        inp = _VERBS.get(verb, _In.UNKNOWN)
        if len(line) + 2 > _LINE_LIMITS.get(inp, SMTP_COMMAND_LINE_MAX):
            # RFC 5321 §4.5.3.1.4: "The maximum total length of a command line including the
            # command word and the <CRLF> is 512 octets" (+ extensions for MAIL/RCPT).
            return self._violation(Replies.LINE_TOO_LONG, "command line too long")
        bdat_size = -1
        if inp is _In.BDAT:
            parsed = self._parse_bdat(arg)
            if isinstance(parsed, ProtocolViolation):
                return parsed
            bdat_size, self._bdat_last = parsed
        r = TABLE[(self._state, inp)]
        if isinstance(r, Impossible):  # pragma: no cover - the table says commands here never occur
            raise LocalProtocolError(f"{inp.value} parsed in state {self._state.value}: {r.why}")
        if isinstance(r, Refuse):
            reply = r.reply
            if verb in _NOT_IMPLEMENTED:
                reply = Replies.COMMAND_NOT_IMPLEMENTED
            if bdat_size >= 0:
                self._skip(bdat_size, last=False)
            return self._violation(reply, f"{verb.decode('ascii', 'replace')} out of sequence",
                                   close=r.close)
        target = r.target
        if inp is _In.MAIL:
            return self._on_mail(arg)
        if inp is _In.RCPT:
            return self._on_rcpt(arg)
        if inp is _In.DATA:
            return self._on_data(arg, target)
        if inp is _In.BDAT:
            return self._on_bdat(bdat_size, target)
        if inp is _In.EHLO or inp is _In.HELO:
            return self._on_hello(inp, arg, target)
        if inp is _In.RSET:
            if arg:
                return self._violation(Replies.SYNTAX_ERROR_IN_PARAMETERS, "RSET takes no argument")
            self._reset_transaction()
            self._state = target
            self._reply(Replies.RESET_OK)
            return Reset()
        if inp is _In.NOOP:
            self._reply(Replies.NOOP_OK)
            return Noop()
        if inp is _In.HELP:
            self._reply(Replies.HELP)
            return Help(topic=arg.decode("ascii", "replace"))
        if inp is _In.VRFY:
            if not arg:
                return self._violation(Replies.SYNTAX_ERROR_IN_PARAMETERS, "VRFY needs an argument")
            self._reply(self.config.vrfy_reply)
            return Vrfy(argument=arg.decode("utf-8", "replace"))
        if inp is _In.QUIT:
            if arg:
                return self._violation(Replies.SYNTAX_ERROR_IN_PARAMETERS, "QUIT takes no argument")
            self._reply(Replies.closing(self.config.hostname))
            self._state = target
            self._framer.discard_all()
            return Quit()
        if inp is _In.STARTTLS:
            return self._on_starttls(arg)
        return self._on_auth(arg)

    def _on_hello(self, inp: Input, arg: bytes, target: State) -> Event:
        if not arg:
            return self._violation(
                Replies.SYNTAX_ERROR_IN_PARAMETERS.with_text(f"Syntax: {inp.value} hostname"),
                f"{inp.value} without a domain",
            )
        try:
            domain = parse_helo_domain(arg)
        except AddressSyntaxError as err:
            return self._violation(_error_reply(err), f"{inp.value}: {err.reason}")
        self._pending_target = target
        return Ehlo(domain=domain) if inp is _In.EHLO else Helo(domain=domain)

    def _on_mail(self, arg: bytes) -> Event:
        cfg = self.config
        if arg[:5].upper() != b"FROM:":
            return self._violation(
                Replies.SYNTAX_ERROR_IN_PARAMETERS.with_text("Syntax: MAIL FROM:<address>"),
                "MAIL without FROM:",
            )
        if cfg.require_tls_for_mail and not self._tls_active:
            return self._violation(Replies.MUST_STARTTLS, "MAIL before STARTTLS")
        if cfg.require_auth_for_mail and self._authenticated is None:
            return self._violation(Replies.AUTH_REQUIRED, "MAIL before AUTH")
        adv = self.advertised()
        try:
            address, raw = parse_mail_args(arg[5:], smtputf8=adv.smtputf8 and adv.esmtp)
            params = parse_mail_params(raw, adv, tls_active=self._tls_active)
        except AddressSyntaxError as err:
            return self._violation(_error_reply(err), f"MAIL: {err.reason}")
        except ParameterError as err:
            return self._violation(err.reply, f"MAIL: {err.reply.text}")
        return MailFrom(address=address, params=params)

    def _on_rcpt(self, arg: bytes) -> Event:
        if arg[:3].upper() != b"TO:":
            return self._violation(
                Replies.SYNTAX_ERROR_IN_PARAMETERS.with_text("Syntax: RCPT TO:<address>"),
                "RCPT without TO:",
            )
        if self._rcpt_count >= self.config.max_recipients:
            # RFC 5321 §4.5.3.1.10: "452 Too many recipients"; the client sends the rest in
            # another transaction. Not a protocol error.
            self._reply(Replies.TOO_MANY_RECIPIENTS)
            return ProtocolViolation(reply=Replies.TOO_MANY_RECIPIENTS,
                                     reason="too many recipients")
        assert self._mail is not None
        try:
            address, raw = parse_rcpt_args(arg[3:], smtputf8=self._mail.params.smtputf8)
            params = parse_rcpt_params(raw, self.advertised())
        except AddressSyntaxError as err:
            return self._violation(_error_reply(err), f"RCPT: {err.reason}")
        except ParameterError as err:
            return self._violation(err.reply, f"RCPT: {err.reply.text}")
        return RcptTo(address=address, params=params)

    def _on_data(self, arg: bytes, target: State) -> Event:
        if arg:
            return self._violation(Replies.SYNTAX_ERROR_IN_PARAMETERS, "DATA takes no argument")
        if self.config.forbid_unsynchronised_pipelining and self._framer.buffered:
            # RFC 2920 §3.1: DATA "can only appear as the last command in a group"; content
            # that arrived before our 354 was sent blind (smuggling probes do this).
            return self._violation(Replies.SYNC_ERROR, "data pipelined before 354", close=True)
        self._pending_target = target
        return _DATA_STARTED

    def _parse_bdat(self, arg: bytes) -> tuple[int, bool] | ProtocolViolation:
        # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF
        #              chunk-size = 1*DIGIT ; end-marker = "LAST"
        size_text, _, marker = arg.partition(b" ")
        if (
            not size_text.isdigit() or len(size_text) > SMTP_SIZE_DIGITS_MAX
            or marker.upper() not in (b"", b"LAST")
        ):
            # The chunk's length is unknown: the stream cannot be resynchronised.
            return self._violation(Replies.BDAT_SYNTAX, "BDAT syntax", close=True)
        size = int(size_text)
        if size > self.config.max_message_size:
            # Skipping more than a whole message's worth of octets is not worth it: close.
            return self._violation(Replies.MESSAGE_TOO_BIG, "BDAT chunk larger than the maximum",
                                   close=True)
        return size, bool(marker)

    def _skip(self, size: int, *, last: bool) -> None:
        self._skipping = True
        self._skip_last = last
        self._framer.skip_bdat(size)

    def _on_bdat(self, size: int, target: State) -> Event | None:
        if not (self.config.chunking and self._esmtp):
            self._skip(size, last=False)
            return self._violation(Replies.COMMAND_NOT_IMPLEMENTED, "BDAT not offered")
        if self._state is _St.RCPT:
            self._pending_target = target
            self._pending_arg = size
            return _BDAT_STARTED
        # Next chunk of a BDAT transaction.
        if self._bdat_failed is not None:
            self._reply(self._bdat_failed)
            self._skip(size, last=self._bdat_last)
            return None
        self._framer.start_bdat(size, last=self._bdat_last, new_message=False)
        return None

    def _on_chunk_end(self, end: rx.ChunkEnd) -> Event | None:
        if self._skipping:
            # A refused chunk was read and dropped; its reply was sent already.
            self._skipping = False
            if self._skip_last:
                self._reset_transaction()
                self._step(_In.LAST_CHUNK_END)
            return None
        data_mode = self._state is _St.DATA
        last = end.last if data_mode else self._bdat_last
        if end.fault is not None:
            reply = _CONTENT_FAULT_REPLY[end.fault]
            reason = f"message content: {end.fault.value}"
            if last:
                self._reset_transaction()
                self._step(_In.DATA_END if data_mode else _In.LAST_CHUNK_END)
            else:
                self._bdat_failed = reply
            return self._violation(reply, reason)
        if not last:
            self._reply(Replies.chunk_received(end.chunk_size))
            self._step(_In.CHUNK_END)
            return None
        data = b"" if self.config.stream_content else b"".join(self._parts)
        self._parts = []
        return MessageComplete(data=data, size=end.size)

    def _on_starttls(self, arg: bytes) -> Event:
        if arg:
            return self._violation(Replies.STARTTLS_SYNTAX, "STARTTLS takes no argument")
        if self._tls_active:
            return self._violation(Replies.TLS_ALREADY_ACTIVE, "STARTTLS inside TLS")
        if not self.config.tls_available:
            return self._violation(Replies.COMMAND_NOT_IMPLEMENTED, "STARTTLS not offered")
        return StartTLSRequested()

    # --- AUTH (RFC 4954) ------------------------------------------------------------------
    def _on_auth(self, arg: bytes) -> Event | None:
        cfg = self.config
        if self._authenticated is not None:
            return self._violation(Replies.ALREADY_AUTHENTICATED, "AUTH after AUTH")
        if not cfg.auth_mechanisms or not self._esmtp:
            return self._violation(Replies.COMMAND_NOT_IMPLEMENTED, "AUTH not offered")
        if cfg.require_tls_for_auth and not self._tls_active:
            return self._violation(Replies.ENCRYPTION_REQUIRED_FOR_AUTH, "AUTH before TLS")
        mech_b, _, initial = arg.partition(b" ")
        mech = mech_b.upper().decode("ascii", "replace")
        if mech not in cfg.auth_mechanisms:
            return self._violation(Replies.AUTH_MECHANISM_UNKNOWN, f"AUTH mechanism {mech!r}")
        response: bytes | None = None
        if initial:
            decoded = self._b64(initial, allow_empty_marker=True)
            if isinstance(decoded, Reply):
                return self._violation(decoded, "AUTH initial response")
            response = decoded
        self._step(_In.AUTH)  # READY -> AUTH (the table allowed AUTH here)
        self._auth_mech = mech
        self._auth_user = ""
        if mech == "PLAIN":
            self._auth_step = "plain"
            if response is None:
                self._reply(Replies.auth_challenge(""))
                return None
            return self._plain(response)
        if mech == "LOGIN":
            if response is None:
                self._auth_step = "login-user"
                self._reply(Replies.auth_challenge(_LOGIN_USERNAME))
                return None
            return self._login_user(response)
        self._auth_step = "generic"
        return AuthRequested(mechanism=mech, initial_response=response)

    @staticmethod
    def _b64(data: bytes, *, allow_empty_marker: bool) -> bytes | Reply:
        # RFC 4954 §4: a zero-length initial response is sent as a single "=".
        if allow_empty_marker and data == b"=":
            return b""
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return Replies.AUTH_BAD_BASE64

    def _auth_fail(self, reply: Reply, reason: str) -> ProtocolViolation:
        self._step(_In.AUTH_END)
        return self._violation(reply, reason)

    def _on_auth_line(self, item: rx.Line | rx.LineRefused) -> Event | None:
        if isinstance(item, rx.LineRefused):
            reply = (Replies.AUTH_LINE_TOO_LONG if item.fault is rx.LineFault.TOO_LONG
                     else _LINE_FAULT_REPLY[item.fault])
            return self._auth_fail(reply, f"AUTH line: {item.fault.value}")
        line = item.data  # at most SMTP_AUTH_LINE_MAX octets: the framer's line limit
        if line == b"*":
            # RFC 4954 §4: "If the client wishes to cancel the authentication exchange, it
            # issues a line with a single "*". ... the server MUST reject the AUTH command by
            # sending a 501 reply."
            return self._auth_fail(Replies.AUTH_CANCELLED, "AUTH cancelled by client")
        decoded = self._b64(line, allow_empty_marker=False)
        if isinstance(decoded, Reply):
            return self._auth_fail(decoded, "AUTH response not base64")
        step = self._auth_step
        if step == "plain":
            return self._plain(decoded)
        if step == "login-user":
            return self._login_user(decoded)
        if step == "login-pass":
            password = self._utf8(decoded)
            if password is None:
                return self._auth_fail(Replies.AUTH_BAD_RESPONSE, "LOGIN password not UTF-8")
            return AuthRequested(mechanism="LOGIN", username=self._auth_user, password=password)
        return AuthResponse(data=decoded)

    @staticmethod
    def _utf8(data: bytes) -> str | None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _plain(self, data: bytes) -> Event:
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd; each is UTF-8 and
        # authcid/passwd are non-empty (1*SAFE).
        parts = data.split(b"\0")
        texts = [self._utf8(p) for p in parts]
        if len(parts) != 3 or not parts[1] or not parts[2] or any(t is None for t in texts):
            return self._auth_fail(Replies.AUTH_BAD_RESPONSE, "malformed PLAIN response")
        authzid, user, password = (t or "" for t in texts)
        self._auth_user = user
        return AuthRequested(mechanism="PLAIN", authzid=authzid or None, username=user,
                             password=password)

    def _login_user(self, data: bytes) -> Event | None:
        user = self._utf8(data)
        if not user:
            return self._auth_fail(Replies.AUTH_BAD_RESPONSE, "LOGIN username empty or not UTF-8")
        self._auth_user = user
        self._auth_step = "login-pass"
        self._reply(Replies.auth_challenge(_LOGIN_PASSWORD))
        return None
