"""The client role of the sans-IO SMTP engine: :class:`ClientConnection`.

Bytes from the server go in through :meth:`ClientConnection.receive_data`, which returns
events (:class:`Greeting`, :class:`EhloResponse`, :class:`AuthChallenge`,
:class:`CommandReply`); every command method returns the bytes to send. The engine does no
I/O, knows no clock and never imports asyncio/socket/ssl (ARCHITECTURE.md rule 1): timeouts,
TLS and the socket belong to the adapter (``net``).

Our misuse raises :class:`~mailmoat.errors.LocalProtocolError`; the server's raises
:class:`~mailmoat.errors.RemoteProtocolError` (rule 3).

SECURITY
    Trusts nothing from the server: a reply line is at most ``SMTP_REPLY_LINE_MAX`` octets
    and a reply at most ``SMTP_REPLY_MAX_LINES`` lines, so a hostile server can make us hold
    only a bounded buffer. Lines must end in CRLF: a bare CR or LF in a reply is refused (the
    reply framing must not be ambiguous). Reply codes must match RFC 5321 §4.2
    (``%x32-35 %x30-35 %x30-39``) and be the same on every line; an intermediate 3xx is only
    taken where one is defined (354 to DATA, 334 to AUTH). Reply text characters outside
    ``textstring`` (HT, SP, printable ASCII) are replaced with "?" - the text informs a human,
    never a decision. Octets the server sends after its 220 to STARTTLS and before the TLS
    handshake are refused (the STARTTLS response-injection attack, CVE-2011-0411 class; RFC
    3207 §4.2/§6): they would otherwise be read as if they came over TLS.
    Trusts the caller less than its API suggests: every address, domain, ESMTP parameter and
    credential is checked so that CR, LF and NUL can never reach the wire as part of a
    command (SMTP command injection), addresses and EHLO names are checked against the RFC
    5321/6531 grammar (:mod:`mailmoat.smtp._abnf`), and ESMTP parameters are only sent for an
    extension the server advertised (RFC 5321 §4.1.1.11, RFC 1869 §4).
    Message content sent with DATA is normalised (bare CR and bare LF become CRLF, RFC 5321
    §2.3.8) and dot-stuffed (§4.5.2), so the content can never end the DATA phase early (SMTP
    smuggling): the only ``CRLF.CRLF`` we send is the one we append.

Pipelining (RFC 2920 §3.1): without PIPELINING advertised, the engine refuses to send a
command while a reply is outstanding. With it, commands may be grouped, but "EHLO, DATA,
VRFY, EXPN, TURN, QUIT, and NOOP ... can only appear as the last command in a group", and so
can STARTTLS (RFC 3207 §4.2) and AUTH (RFC 4954 §4: the exchange is a dialogue); message
content after 354 and BDAT chunks (RFC 3030 §4.2) may start a group.
"""

from __future__ import annotations

import base64
import binascii
import collections
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from mailmoat.errors import LocalProtocolError, RemoteProtocolError
from mailmoat.limits import (
    SMTP_AUTH_LINE_MAX,
    SMTP_COMMAND_LINE_MAX,
    SMTP_COMMAND_PARAMS_EXTRA,
    SMTP_REPLY_LINE_MAX,
    SMTP_REPLY_MAX_LINES,
)
from mailmoat.smtp._abnf import (
    Address,
    AddressSyntaxError,
    Param,
    parse_helo_domain,
    parse_mail_args,
    parse_rcpt_args,
)
from mailmoat.smtp.replies import Reply

__all__ = [
    "AuthChallenge",
    "ClientConnection",
    "ClientEvent",
    "CommandReply",
    "EhloResponse",
    "Greeting",
    "normalize_line_endings",
]


# --- events -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Greeting:
    """The server's opening reply (220 ready, 554 refused, or 421 unavailable)."""

    reply: Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class EhloResponse:
    """A positive (250) reply to EHLO.

    ``domain`` is the server's name from the first line; ``extensions`` maps each ehlo-keyword
    (upper-cased) to its parameters as sent (``""`` when it has none), e.g.
    ``{"SIZE": "10240000", "AUTH": "PLAIN LOGIN", "PIPELINING": ""}``.
    """

    reply: Reply
    domain: str
    extensions: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthChallenge:
    """A 334 reply during AUTH; answer with :meth:`ClientConnection.auth_response`.

    ``challenge`` is the base64-decoded server challenge (``b""`` when empty or undecodable).
    """

    reply: Reply
    challenge: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReply:
    """The reply to one command. ``command`` is the verb it answers (``"MAIL"``, ``"RCPT"``,
    ``"DATA"`` for the 354, ``"MESSAGE"`` for the reply after the message content, ``"BDAT"``,
    ...), or ``None`` for an unsolicited 421 (RFC 5321 §3.8: the server may close at any
    time)."""

    command: str | None
    reply: Reply


ClientEvent = Greeting | EhloResponse | AuthChallenge | CommandReply


# --- grammar of replies ---------------------------------------------------------------------
# Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#              Reply-code [ SP textstring ] CRLF                       (RFC 5321 §4.2)
# Reply-code = %x32-35 %x30-35 %x30-39
# textstring = 1*(%d09 / %d32-126) ; HT, SP, Printable US-ASCII
_REPLY_CODE: Final = re.compile(rb"[2-5][0-5][0-9]")
_NOT_TEXT: Final = re.compile(r"[^\t\x20-\x7e]")
# status-code = class "." subject "." detail                            (RFC 3463 §2)
# class = "2"/"4"/"5"; subject = 1*3digit; detail = 1*3digit
_STATUS: Final = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)")
# ehlo-line = ehlo-keyword *( SP ehlo-param )                           (RFC 5321 §4.1.1.1)
# ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
# ehlo-param = 1*(%d33-126)
_EHLO_LINE: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)((?: [\x21-\x7e]+)*)")

#: Commands after which nothing may be sent until their reply (RFC 2920 §3.1, RFC 3207 §4.2,
#: RFC 4954 §4). Everything else pending may be followed by more commands under PIPELINING.
_PIPELINABLE: Final = frozenset({"MAIL", "RCPT", "RSET", "MESSAGE", "BDAT"})
#: ESMTP parameter keyword -> the EHLO keyword that must have been advertised for it.
_PARAM_EXTENSION: Final = {
    "SIZE": "SIZE",  # RFC 1870
    "BODY": "8BITMIME",  # RFC 6152 (BODY=BINARYMIME needs BINARYMIME, checked below)
    "SMTPUTF8": "SMTPUTF8",  # RFC 6531 §3.4
    "RET": "DSN", "ENVID": "DSN", "NOTIFY": "DSN", "ORCPT": "DSN",  # RFC 3461 §4
    "AUTH": "AUTH",  # RFC 4954 §5
    "REQUIRETLS": "REQUIRETLS",  # RFC 8689 §4
}
_CR_LF_NUL: Final = ("\r", "\n", "\0")


def normalize_line_endings(data: bytes) -> bytes:
    """Turn every bare CR and bare LF into CRLF (RFC 5321 §2.3.8: "CR and LF MUST only occur
    together as CRLF"). Linear time."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _dot_stuff(message: bytes) -> bytes:
    """DATA payload for ``message``: normalised, dot-stuffed, ending in CRLF "." CRLF.

    RFC 5321 §4.5.2: "Before sending a line of mail text, the SMTP client checks the first
    character of the line. If it is a period, one additional period is inserted at the
    beginning of the line."
    """
    text = normalize_line_endings(message)
    if text.startswith(b"."):
        text = b"." + text
    text = text.replace(b"\r\n.", b"\r\n..")
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text + b".\r\n"


def _blocks(command: str) -> bool:
    """The command must end a pipelined group (RFC 2920 §3.1)."""
    return command.partition(" ")[0] not in _PIPELINABLE


def _refuse_controls(what: str, value: str) -> None:
    """Command injection guard: CR, LF or NUL from the caller never reach a command line."""
    if any(ch in value for ch in _CR_LF_NUL):
        raise LocalProtocolError(f"{what} contains CR, LF or NUL: refused (command injection)")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class ClientConnection:
    """One SMTP client session, sans-IO.

    Typical use (an adapter owns the socket)::

        conn = ClientConnection()
        events = conn.receive_data(await read())        # -> [Greeting(...)]
        await write(conn.ehlo("client.example"))
        ...
        await write(conn.mail("a@example.org") + conn.rcpt("b@example.net") + conn.data())
    """

    def __init__(
        self,
        *,
        max_reply_line: int = SMTP_REPLY_LINE_MAX,
        max_reply_lines: int = SMTP_REPLY_MAX_LINES,
    ) -> None:
        self._max_line = max_reply_line
        self._max_lines = max_reply_lines
        self._buffer = bytearray()
        self._lines: list[tuple[int, str]] = []  # lines of the reply being assembled
        #: (command, transaction number) per command awaiting its reply, oldest first.
        self._pending: collections.deque[tuple[str, int]] = collections.deque()
        self._txn = 0  # bumped whenever a transaction ends, so late replies cannot touch a new one
        self._blockers = 0  # pending commands that must end a pipelined group (O(1) check)
        self._greeted = False  # a 220 greeting arrived
        self._greeting_seen = False
        self._closed = False
        self._extensions: Mapping[str, str] | None = None
        self._hello_done = False  # a positive EHLO/HELO reply is known
        self._tls_active = False
        self._awaiting_tls = False  # 220 to STARTTLS received, handshake not yet reported
        self._authenticated = False
        self._auth_steps: collections.deque[bytes] = collections.deque()
        self._auth_mechanism: str | None = None
        # Transaction (as *sent*: under pipelining replies may still be outstanding).
        self._mail_sent = False
        self._mail_smtputf8 = False
        self._rcpts_sent = 0
        self._rcpts_accepted = 0
        self._rcpts_answered = 0
        self._data_state: str | None = None  # "sent" -> "content" -> "message"
        self._bdat_open = False
        self._bdat_failed = False

    # --- state -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """The session is over (221 to QUIT, or a 421): send nothing more."""
        return self._closed

    @property
    def extensions(self) -> Mapping[str, str] | None:
        """Extensions from the last positive EHLO (``{}`` after HELO); ``None`` before one
        and after STARTTLS (RFC 3207 §4.2: the client "MUST discard any knowledge obtained
        from the server")."""
        return self._extensions

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def pipelining(self) -> bool:
        """PIPELINING (RFC 2920) is advertised: commands may be grouped."""
        return self._has("PIPELINING")

    @property
    def pending(self) -> tuple[str, ...]:
        """Commands sent whose reply has not arrived yet, oldest first."""
        return tuple(command for command, _ in self._pending)

    @property
    def awaiting_tls(self) -> bool:
        """The server said 220 to STARTTLS: do the handshake, then :meth:`tls_established`."""
        return self._awaiting_tls

    def _has(self, keyword: str) -> bool:
        return self._extensions is not None and keyword in self._extensions

    # --- receiving ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed octets from the server; return the events of every complete reply."""
        if self._awaiting_tls and data:
            raise RemoteProtocolError(
                "server sent data after its 220 to STARTTLS, before the TLS handshake"
            )
        if self._closed:
            return []  # whatever follows 221/421 is not ours to read
        self._buffer += data
        events: list[ClientEvent] = []
        while not self._closed:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    raise RemoteProtocolError(
                        f"reply line longer than {self._max_line} octets"
                    )
                break
            if end + 1 > self._max_line:
                raise RemoteProtocolError(f"reply line longer than {self._max_line} octets")
            if end == 0 or self._buffer[end - 1] != 0x0D:
                raise RemoteProtocolError("bare LF in a reply (lines must end in CRLF)")
            line = bytes(self._buffer[: end - 1])
            del self._buffer[: end + 1]
            reply = self._line(line)
            if reply is not None:
                events.append(self._dispatch(reply))
                if self._awaiting_tls and self._buffer:
                    raise RemoteProtocolError(
                        "server sent data after its 220 to STARTTLS, before the TLS handshake"
                    )
        return events

    def _line(self, line: bytes) -> Reply | None:
        """Add one reply line; return the Reply once its last line arrived."""
        if b"\r" in line:
            raise RemoteProtocolError("bare CR in a reply line")
        if not _REPLY_CODE.match(line) or (len(line) > 3 and line[3:4] not in (b" ", b"-")):
            raise RemoteProtocolError(f"malformed reply line {line[:40]!r}")
        code = int(line[:3])
        if self._lines and self._lines[0][0] != code:
            # RFC 5321 §4.2.1: in a multiline reply the code is the same on every line.
            raise RemoteProtocolError("reply code changes inside a multi-line reply")
        text = _NOT_TEXT.sub("?", line[4:].decode("latin-1"))
        self._lines.append((code, text))
        if len(self._lines) > self._max_lines:
            raise RemoteProtocolError(f"reply longer than {self._max_lines} lines")
        if line[3:4] == b"-":
            return None
        texts = [t for _, t in self._lines]
        self._lines = []
        return self._make_reply(code, texts)

    def _make_reply(self, code: int, texts: list[str]) -> Reply:
        status: str | None = None
        command = self._pending[0][0] if self._pending else None
        # RFC 2034 §3: statuses prefix every reply line once ENHANCEDSTATUSCODES is in effect,
        # "except ... the initial greeting and any response to HELO or EHLO"; 334 carries
        # base64 and 354 none.
        if (
            self._has("ENHANCEDSTATUSCODES")
            and self._greeting_seen
            and command not in ("EHLO", "HELO")
            and code not in (334, 354)
        ):
            match = _STATUS.match(texts[0])
            if match and match.group(1)[0] == str(code)[0]:
                status = match.group(1)
                prefix = status + " "
                texts = [
                    t[len(prefix) :] if t.startswith(prefix) else ("" if t == status else t)
                    for t in texts
                ]
        return Reply(code=code, status=status, text="\n".join(texts))

    def _dispatch(self, reply: Reply) -> ClientEvent:
        code = reply.code
        if not self._greeting_seen:
            self._greeting_seen = True
            if code == 220:
                self._greeted = True
            elif code == 421:
                self._closed = True
            elif code != 554:
                # Greeting = "220 " ... ; RFC 5321 §3.1 also allows 554 (and §3.8 a 421).
                raise RemoteProtocolError(f"unexpected greeting code {code}")
            return Greeting(reply=reply)
        if not self._pending:
            if code == 421:
                self._closed = True
                return CommandReply(command=None, reply=reply)
            raise RemoteProtocolError(f"unsolicited reply {code}")
        command, txn = self._pending.popleft()
        self._blockers -= _blocks(command)
        current = txn == self._txn  # the reply belongs to the transaction still open
        if code == 421:
            # RFC 5321 §3.8: the server is closing; every outstanding command is void.
            self._closed = True
            self._pending.clear()
            self._blockers = 0
            return CommandReply(command=command, reply=reply)
        if 300 <= code < 400 and not (
            (code == 354 and command == "DATA") or (code == 334 and command == "AUTH")
        ):
            raise RemoteProtocolError(f"intermediate reply {code} to {command}")
        positive = code < 400
        if command == "EHLO":
            if code == 250:
                return self._ehlo_ok(reply)
            self._extensions = None
        elif command == "HELO":
            self._hello_done = positive
            self._extensions = MappingProxyType({}) if positive else None
        elif command == "STARTTLS":
            if code == 220:
                self._awaiting_tls = True
                self._hello_done = False
                self._extensions = None
        elif command == "AUTH":
            if code == 334:
                self._pending.appendleft((command, txn))  # the exchange goes on
                self._blockers += 1
                try:
                    challenge = base64.b64decode(reply.text.split("\n")[0], validate=True)
                except (binascii.Error, ValueError):
                    challenge = b""
                return AuthChallenge(reply=reply, challenge=challenge)
            self._auth_steps.clear()
            self._auth_mechanism = None
            self._authenticated = code == 235
        elif command == "MAIL":
            if not positive and current:
                # RFC 5321 §4.1.1.2: a refused MAIL starts no transaction.
                self._end_transaction()
        elif command == "RCPT":
            if current:
                self._rcpts_answered += 1
                self._rcpts_accepted += positive
        elif command == "DATA":
            if code == 354:
                # Even for a transaction we consider over (a pipelined MAIL was refused): the
                # server now reads content, so the caller must send some (send_message(b"")).
                self._data_state = "content"
            elif current:
                self._data_state = None
        elif command == "BDAT LAST":
            # The transaction ended when the content was sent (see bdat()).
            command = "BDAT"
        elif command == "BDAT":
            if not positive and current:
                # RFC 3030 §2: after a 4xx/5xx to a chunk the client "MUST NOT send any
                # additional BDAT segments".
                self._bdat_failed = True
        elif command == "QUIT":
            self._closed = True
        return CommandReply(command=command, reply=reply)

    def _ehlo_ok(self, reply: Reply) -> EhloResponse:
        # ehlo-ok-rsp = ( "250" SP Domain [ SP ehlo-greet ] CRLF )
        #             / ( "250-" Domain [ SP ehlo-greet ] CRLF
        #                 *( "250-" ehlo-line CRLF ) "250" SP ehlo-line CRLF )
        lines = reply.text.split("\n")
        domain = lines[0].split(" ", 1)[0]
        extensions: dict[str, str] = {}
        for line in lines[1:]:
            match = _EHLO_LINE.fullmatch(line)
            if match is None:
                continue  # not an ehlo-line (e.g. the obsolete "AUTH=LOGIN"): ignored
            keyword = match.group(1).upper()
            extensions.setdefault(keyword, match.group(2).strip())
        self._extensions = MappingProxyType(extensions)
        self._hello_done = True
        return EhloResponse(reply=reply, domain=domain, extensions=self._extensions)

    def _end_transaction(self) -> None:
        self._txn += 1
        self._mail_sent = False
        self._mail_smtputf8 = False
        self._rcpts_sent = self._rcpts_accepted = self._rcpts_answered = 0
        self._data_state = None
        self._bdat_open = False
        self._bdat_failed = False

    # --- sending -----------------------------------------------------------------------------
    def _may_send(
        self, command: str, *, needs_hello: bool = True, in_content: bool = False
    ) -> None:
        if self._closed:
            raise LocalProtocolError(f"{command}: the connection is closed")
        if not self._greeting_seen:
            # RFC 5321 §3.1 / §4.3.1: the client waits for the greeting before sending.
            raise LocalProtocolError(f"{command}: wait for the server greeting")
        if self._awaiting_tls:
            raise LocalProtocolError(f"{command}: finish the TLS handshake, then tls_established()")
        if not self._greeted and command != "QUIT":
            raise LocalProtocolError(f"{command}: the server refused the session; only QUIT")
        if self._data_state == "content" and not in_content:
            raise LocalProtocolError(f"{command}: send the message content first (354 received)")
        if self._data_state == "sent":
            raise LocalProtocolError(f"{command}: wait for the reply to DATA")
        if self._auth_mechanism is not None:
            raise LocalProtocolError(f"{command}: an AUTH exchange is in progress")
        if self._pending:
            if not self.pipelining:
                raise LocalProtocolError(
                    f"{command}: a reply is outstanding and the server does not offer PIPELINING"
                )
            if self._blockers:
                # RFC 2920 §3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT, NOOP "can only appear as
                # the last command in a group"; RFC 3207 §4.2 for STARTTLS.
                blocker = next(c for c, _ in self._pending if _blocks(c))
                raise LocalProtocolError(f"{command}: wait for the reply to {blocker}")
        if needs_hello and not self._hello_done:
            raise LocalProtocolError(f"{command}: send EHLO or HELO first")

    def _send(self, command: str, line: bytes) -> bytes:
        self._pending.append((command, self._txn))
        self._blockers += _blocks(command)
        return line

    def ehlo(self, name: str) -> bytes:
        """``EHLO name`` (a Domain or an address literal, RFC 5321 §4.1.1.1)."""
        return self._hello("EHLO", name)

    def helo(self, name: str) -> bytes:
        """``HELO name``: the fallback when EHLO is refused (RFC 5321 §4.1.1.1, §3.2)."""
        return self._hello("HELO", name)

    def _hello(self, verb: str, name: str) -> bytes:
        _refuse_controls(f"{verb} argument", name)
        self._may_send(verb, needs_hello=False)
        try:
            parse_helo_domain(name.encode("utf-8"))
        except AddressSyntaxError as err:
            raise LocalProtocolError(f"{verb} argument {name!r}: {err.reason}") from None
        if verb == "HELO" and name.startswith("["):
            # helo = "HELO" SP Domain CRLF (no address literal).
            raise LocalProtocolError("HELO takes a Domain, not an address literal")
        # RFC 5321 §4.1.4: EHLO/HELO mid-session resets the transaction.
        self._end_transaction()
        self._extensions = None
        self._hello_done = False
        return self._send(verb, f"{verb} {name}\r\n".encode("ascii"))

    def starttls(self) -> bytes:
        """``STARTTLS`` (RFC 3207); after its 220, do the handshake, then
        :meth:`tls_established`."""
        self._may_send("STARTTLS")
        if self._tls_active:
            raise LocalProtocolError("STARTTLS: TLS is already active")
        if not self._has("STARTTLS"):
            raise LocalProtocolError("STARTTLS: not advertised by the server")
        if self._mail_sent:
            raise LocalProtocolError("STARTTLS: not inside a mail transaction")
        return self._send("STARTTLS", b"STARTTLS\r\n")

    def tls_established(self) -> None:
        """Report that the TLS handshake succeeded. RFC 3207 §4.2: the client "MUST discard any
        knowledge obtained from the server" and "SHOULD send an EHLO command as the first
        command after a successful TLS negotiation" - we require it."""
        if not self._awaiting_tls:
            raise LocalProtocolError("tls_established() without a 220 reply to STARTTLS")
        self._awaiting_tls = False
        self._tls_active = True
        self._extensions = None
        self._hello_done = False
        self._authenticated = False

    def _auth_start(self, mechanism: str) -> None:
        self._may_send("AUTH")
        if self._authenticated:
            # RFC 4954 §4: after a successful AUTH, no more AUTH commands.
            raise LocalProtocolError("AUTH: already authenticated")
        if self._mail_sent:
            raise LocalProtocolError("AUTH: not during a mail transaction (RFC 4954 §4)")
        offered = (self._extensions or {}).get("AUTH")
        if offered is None or mechanism not in offered.upper().split():
            raise LocalProtocolError(f"AUTH {mechanism}: not advertised by the server")

    def auth_plain(self, username: str, password: str, *, authzid: str = "") -> bytes:
        """``AUTH PLAIN`` with the initial response (RFC 4954 §4, RFC 4616 §2:
        message = [authzid] UTF8NUL authcid UTF8NUL passwd)."""
        for what, value in (("username", username), ("password", password), ("authzid", authzid)):
            if "\0" in value:
                raise LocalProtocolError(f"AUTH PLAIN {what} contains NUL (RFC 4616 §2)")
        if not username or not password:
            raise LocalProtocolError("AUTH PLAIN needs a username and a password")
        self._auth_start("PLAIN")
        response = _b64(f"{authzid}\0{username}\0{password}".encode())
        line = b"AUTH PLAIN " + response + b"\r\n"
        if len(line) > SMTP_AUTH_LINE_MAX:
            raise LocalProtocolError("AUTH PLAIN: credentials too long (RFC 4954 §4)")
        # A server that ignores the initial response asks with an empty 334: answer once.
        self._auth_steps = collections.deque([response])
        self._auth_mechanism = "PLAIN"
        return self._send("AUTH", line)

    def auth_login(self, username: str, password: str) -> bytes:
        """``AUTH LOGIN`` (draft-murchison-sasl-login): the username and the password each
        answer one 334 challenge (see :class:`AuthChallenge`, :meth:`auth_response`)."""
        for what, value in (("username", username), ("password", password)):
            _refuse_controls(f"AUTH LOGIN {what}", value)
        self._auth_start("LOGIN")
        self._auth_steps = collections.deque([_b64(username.encode()), _b64(password.encode())])
        self._auth_mechanism = "LOGIN"
        return self._send("AUTH", b"AUTH LOGIN\r\n")

    def auth_response(self) -> bytes:
        """The next line of the AUTH exchange, after an :class:`AuthChallenge`.

        When the mechanism has nothing more to say, the exchange is cancelled with ``*``
        (RFC 4954 §4), which the server answers with 501.
        """
        if self._auth_mechanism is None or self.pending != ("AUTH",):
            raise LocalProtocolError("auth_response() outside an AUTH exchange")
        step = self._auth_steps.popleft() if self._auth_steps else b"*"
        return step + b"\r\n"

    def auth_cancel(self) -> bytes:
        """Cancel the AUTH exchange: ``*`` (RFC 4954 §4)."""
        if self._auth_mechanism is None:
            raise LocalProtocolError("auth_cancel() outside an AUTH exchange")
        self._auth_steps.clear()
        return b"*\r\n"

    def _params(self, params: Sequence[Param]) -> str:
        parts: list[str] = []
        for keyword, value in params:
            _refuse_controls("ESMTP parameter", keyword)
            if value is not None:
                _refuse_controls("ESMTP parameter value", value)
            needed = _PARAM_EXTENSION.get(keyword.upper(), keyword.upper())
            if keyword.upper() == "BODY" and (value or "").upper() == "BINARYMIME":
                needed = "BINARYMIME"
            if not self._has(needed):
                # RFC 1869 §4 / RFC 5321 §4.1.1.11: parameters only for advertised extensions.
                raise LocalProtocolError(f"parameter {keyword}: extension {needed} not advertised")
            parts.append(f" {keyword}" if value is None else f" {keyword}={value}")
        return "".join(parts)

    @staticmethod
    def _path_text(address: str | Address | None) -> str:
        if address is None:
            return "<>"
        text = str(address)
        if not text:
            raise LocalProtocolError("empty address: pass None for the null reverse-path <>")
        _refuse_controls("address", text)
        return f"<{text}>"

    def _check_args(self, verb: str, args: str, params: Sequence[Param]) -> None:
        """Re-parse what we are about to send with the server-side grammar: it must mean
        exactly the address and parameters the caller gave."""
        data = args.encode("utf-8")
        if len(data) + len(verb) + 7 > SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA:
            raise LocalProtocolError(f"{verb}: command line too long (RFC 5321 §4.5.3.1.4)")
        try:
            if verb == "MAIL":
                _, parsed = parse_mail_args(data, smtputf8=self._has("SMTPUTF8"))
            else:
                _, parsed = parse_rcpt_args(data, smtputf8=self._mail_smtputf8)
        except AddressSyntaxError as err:
            raise LocalProtocolError(f"{verb}: {err.reason}") from None
        wanted = tuple((k.upper(), v) for k, v in params)
        if parsed != wanted:
            raise LocalProtocolError(f"{verb}: parameters {params!r} do not survive the grammar")

    def mail(self, address: str | Address | None, params: Sequence[Param] = ()) -> bytes:
        """``MAIL FROM:<address> [params]``; ``None`` sends the null reverse-path ``<>``.

        A UTF-8 address needs SMTPUTF8 advertised and the ``("SMTPUTF8", None)`` parameter
        (RFC 6531 §3.4).
        """
        self._may_send("MAIL")
        if self._mail_sent:
            raise LocalProtocolError("MAIL: a transaction is open; finish it or RSET")
        args = self._path_text(address) + self._params(params)
        self._check_args("MAIL", args, params)
        self._mail_sent = True
        self._mail_smtputf8 = any(k.upper() == "SMTPUTF8" for k, _ in params)
        return self._send("MAIL", f"MAIL FROM:{args}\r\n".encode())

    def rcpt(self, address: str | Address, params: Sequence[Param] = ()) -> bytes:
        """``RCPT TO:<address> [params]`` (``"Postmaster"`` is allowed, RFC 5321 §4.1.1.3)."""
        self._may_send("RCPT")
        if not self._mail_sent:
            raise LocalProtocolError("RCPT: send MAIL first")
        if self._data_state is not None or self._bdat_open:
            raise LocalProtocolError("RCPT: the message content has started")
        args = self._path_text(address) + self._params(params)
        self._check_args("RCPT", args, params)
        self._rcpts_sent += 1
        return self._send("RCPT", f"RCPT TO:{args}\r\n".encode())

    def _check_content_start(self, verb: str) -> None:
        if not self._mail_sent or not self._rcpts_sent:
            raise LocalProtocolError(f"{verb}: send MAIL and RCPT first")
        if self._rcpts_answered == self._rcpts_sent and not self._rcpts_accepted:
            raise LocalProtocolError(f"{verb}: no recipient was accepted")

    def data(self) -> bytes:
        """``DATA``; after its 354, call :meth:`send_message`."""
        self._may_send("DATA")
        if self._data_state is not None or self._bdat_open:
            raise LocalProtocolError("DATA: the message content has already started")
        self._check_content_start("DATA")
        self._data_state = "sent"
        return self._send("DATA", b"DATA\r\n")

    def send_message(self, message: bytes) -> bytes:
        """The message content after 354: bare CR/LF normalised to CRLF, dot-stuffed, ending
        with CRLF "." CRLF (RFC 5321 §4.1.1.4, §4.5.2)."""
        if self._data_state != "content":
            raise LocalProtocolError("send_message() needs a 354 reply to DATA first")
        self._may_send("MESSAGE", in_content=True)
        payload = self._send("MESSAGE", _dot_stuff(message))
        # RFC 5321 §4.1.1.4: the reply to the end of the data ends the transaction, positive
        # or not; ending it now lets a pipelined MAIL follow (RFC 2920 §3.1).
        self._end_transaction()
        return payload

    def bdat(self, chunk: bytes, *, last: bool = False) -> bytes:
        """``BDAT size [LAST]`` followed by the chunk, verbatim (RFC 3030 §2: no dot-stuffing;
        the caller supplies canonical CRLF text, e.g. with :func:`normalize_line_endings`)."""
        self._may_send("BDAT")
        if not self._has("CHUNKING"):
            raise LocalProtocolError("BDAT: CHUNKING not advertised")
        if self._bdat_failed:
            raise LocalProtocolError("BDAT: a chunk was refused; RSET (RFC 3030 §2)")
        if not self._bdat_open:
            self._check_content_start("BDAT")
        self._bdat_open = True
        head = f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode("ascii")
        payload = self._send("BDAT LAST" if last else "BDAT", head + chunk)
        if last:
            # RFC 3030 §2: the reply to BDAT LAST ends the transaction, positive or not.
            self._end_transaction()
        return payload

    def rset(self) -> bytes:
        """``RSET``: abort the transaction (RFC 5321 §4.1.1.5)."""
        self._may_send("RSET", needs_hello=False)
        self._end_transaction()
        return self._send("RSET", b"RSET\r\n")

    def noop(self) -> bytes:
        """``NOOP`` (RFC 5321 §4.1.1.9)."""
        self._may_send("NOOP", needs_hello=False)
        return self._send("NOOP", b"NOOP\r\n")

    def quit(self) -> bytes:
        """``QUIT`` (RFC 5321 §4.1.1.10); the 221 reply closes the session."""
        self._may_send("QUIT", needs_hello=False)
        return self._send("QUIT", b"QUIT\r\n")
