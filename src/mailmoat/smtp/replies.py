"""The typed catalogue of SMTP replies the server engine sends (ARCHITECTURE.md rule 4).

A :class:`Reply` is a value: a three-digit code (RFC 5321 §4.2), an optional enhanced status
code (RFC 3463, advertised with ENHANCEDSTATUSCODES, RFC 2034) and text. ``to_bytes()`` gives
the wire form, multi-line aware (RFC 5321 §4.2.1: every line but the last has "-" after the
code).

Enhanced status codes: RFC 2034 §3 says the server prefixes "the text part of all response
lines" with a status code once ENHANCEDSTATUSCODES is in effect, *except* "the initial greeting
and any response to HELO or EHLO"; the 354 and 334 intermediate replies carry no status either
(354 is not a completion reply and 334's text is the base64 SASL challenge, RFC 4954 §4). Every
other 2xx/4xx/5xx reply here carries one, and its class digit equals the first digit of the code
(RFC 3463 §3.1: "2.X.X Success", "4.X.X Persistent Transient Failure", "5.X.X Permanent
Failure"). ``tests/unit/smtp/test_replies.py`` checks both rules over the whole catalogue.

Reply text never holds CR, LF (lines are split on ``"\\n"`` by the engine itself) or NUL:
the constructor refuses them, so an application cannot inject a reply line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from mailmoat.errors import LocalProtocolError

__all__ = ["Replies", "Reply", "printable"]

#: RFC 3463 §2: status-code = class "." subject "." detail; class = "2"/"4"/"5";
#: subject = 1*3digit; detail = 1*3digit.
_STATUS_RE: Final = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
#: Codes RFC 2034 §3 exempts (greeting 220 and EHLO/HELO 250 are built without a status by the
#: engine; 354 and 334 are intermediate replies).
_EXEMPT_CODES: Final = frozenset({334, 354})


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One SMTP reply. ``text`` may hold ``"\\n"`` to make a multi-line reply."""

    code: int
    status: str | None
    text: str
    _wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise LocalProtocolError(f"reply code {self.code} outside 200-599 (RFC 5321 §4.2)")
        if self.status is not None:
            if not _STATUS_RE.fullmatch(self.status):
                raise LocalProtocolError(f"bad enhanced status code {self.status!r} (RFC 3463)")
            if self.status[0] != str(self.code)[0]:
                raise LocalProtocolError(
                    f"status {self.status} class does not match reply code {self.code}"
                )
        if "\r" in self.text or "\0" in self.text or not self.text.isascii():
            # RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126); UTF-8 replies need RFC 6531
            # negotiation, which we do not do for replies.
            raise LocalProtocolError("reply text must be printable ASCII without CR or NUL")
        object.__setattr__(self, "_wire", _encode(self.code, self.status, self.text))

    @property
    def lines(self) -> tuple[str, ...]:
        """The text lines (at least one)."""
        return tuple(self.text.split("\n"))

    @property
    def is_positive(self) -> bool:
        """2xx or 3xx."""
        return self.code < 400

    @property
    def closes(self) -> bool:
        """421: the server closes the transmission channel after this reply (RFC 5321 §3.8)."""
        return self.code == 421

    def with_text(self, text: str) -> Reply:
        """The same code and status with another text."""
        return Reply(code=self.code, status=self.status, text=text)

    def to_bytes(self) -> bytes:
        """Wire form: ``code[-| ][status ]text CRLF`` per line (RFC 5321 §4.2.1)."""
        return self._wire


def _encode(code: int, status: str | None, text: str) -> bytes:
    prefix = f"{status} " if status else ""
    lines = text.split("\n")
    last = len(lines) - 1
    out = [f"{code}{'-' if i < last else ' '}{prefix}{line}" for i, line in enumerate(lines)]
    return ("\r\n".join(out) + "\r\n").encode("ascii")


class Replies:
    """Named replies. The code, status and wording follow the RFC cited beside each one."""

    # --- 2xx -----------------------------------------------------------------------------
    #: RFC 5321 §4.2.3 "221 <domain> Service closing transmission channel".
    CLOSING: Final = Reply(code=221, status="2.0.0", text="Service closing transmission channel")
    #: RFC 5321 §4.2.3 "250 Requested mail action okay, completed"; RFC 3463 X.0.0.
    OK: Final = Reply(code=250, status="2.0.0", text="OK")
    #: RFC 3463 §3.2 X.1.0 "Other address status" (sender accepted).
    SENDER_OK: Final = Reply(code=250, status="2.1.0", text="Sender OK")
    #: RFC 3463 §3.2 X.1.5 "Destination address valid".
    RECIPIENT_OK: Final = Reply(code=250, status="2.1.5", text="Recipient OK")
    #: RFC 3463 §3.7 X.6.0 is media; a queued message is X.0.0 (Postfix "250 2.0.0 Ok: queued").
    MESSAGE_ACCEPTED: Final = Reply(code=250, status="2.0.0", text="Message accepted for delivery")
    #: RFC 5321 §4.1.1.5: RSET "MUST send a 250 OK reply".
    RESET_OK: Final = Reply(code=250, status="2.0.0", text="Reset state")
    #: RFC 5321 §4.1.1.9 NOOP: "250 OK".
    NOOP_OK: Final = Reply(code=250, status="2.0.0", text="OK")
    #: RFC 5321 §3.5.3: "252 Cannot VRFY user, but will accept message and attempt delivery".
    CANNOT_VRFY: Final = Reply(
        code=252, status="2.0.0",
        text="Cannot VRFY user, but will accept message and attempt delivery",
    )
    #: RFC 5321 §4.2.3 "214 Help message".
    HELP: Final = Reply(
        code=214, status="2.0.0",
        text="Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
    )
    #: RFC 3207 §4: "220 Ready to start TLS".
    READY_TO_START_TLS: Final = Reply(code=220, status="2.0.0", text="Ready to start TLS")
    #: RFC 4954 §6: "235 2.7.0 Authentication Succeeded".
    AUTH_SUCCEEDED: Final = Reply(code=235, status="2.7.0", text="Authentication succeeded")

    # --- 3xx (no status: RFC 2034 §3 / RFC 4954 §4) -------------------------------------
    #: RFC 5321 §4.2.3 "354 Start mail input; end with <CRLF>.<CRLF>".
    START_MAIL_INPUT: Final = Reply(code=354, status=None, text="End data with <CR><LF>.<CR><LF>")

    # --- 4xx -----------------------------------------------------------------------------
    #: RFC 5321 §3.8 / §4.2.3 "421 Service not available, closing transmission channel".
    SHUTTING_DOWN: Final = Reply(
        code=421, status="4.3.2", text="Service not available, closing transmission channel"
    )
    #: Postfix "421 4.7.0 Error: too many errors" (smtpd_hard_error_limit); RFC 3463 X.7.0.
    TOO_MANY_ERRORS: Final = Reply(
        code=421, status="4.7.0", text="Too many errors, closing transmission channel"
    )
    #: RFC 4954 §4 lets a server limit failed attempts; closing as for too many errors.
    TOO_MANY_AUTH_FAILURES: Final = Reply(
        code=421, status="4.7.0", text="Too many failed authentication attempts"
    )
    #: RFC 5321 §4.5.3.1.10 "452 Too many recipients"; RFC 3463 §3.6 X.5.3.
    TOO_MANY_RECIPIENTS: Final = Reply(code=452, status="4.5.3", text="Too many recipients")
    #: RFC 3207 §4: "454 TLS not available due to temporary reason".
    TLS_NOT_AVAILABLE: Final = Reply(
        code=454, status="4.7.0", text="TLS not available due to temporary reason"
    )
    #: RFC 4954 §6: "454 4.7.0 Temporary authentication failure".
    AUTH_TEMPORARY_FAILURE: Final = Reply(
        code=454, status="4.7.0", text="Temporary authentication failure"
    )
    #: RFC 5321 §4.2.3 "451 Requested action aborted: local error in processing".
    LOCAL_ERROR: Final = Reply(code=451, status="4.3.0", text="Local error in processing")

    # --- 5xx: syntax and framing --------------------------------------------------------
    #: RFC 5321 §4.2.3 "500 Syntax error, command unrecognized"; RFC 3463 X.5.2.
    COMMAND_UNRECOGNIZED: Final = Reply(
        code=500, status="5.5.2", text="Syntax error, command unrecognized"
    )
    #: RFC 5321 §4.5.3.1.10 "500 Line too long". X.5.2 (syntax): X.5.6 is reserved for AUTH
    #: exchange lines by RFC 4954.
    LINE_TOO_LONG: Final = Reply(code=500, status="5.5.2", text="Syntax error, line too long")
    #: RFC 5321 §2.3.8: lines end in <CRLF>; "a bare LF" is refused (Postfix
    #: smtpd_forbid_bare_newline=reject answers "Error: bare <LF> received").
    BARE_LF_REJECTED: Final = Reply(
        code=500, status="5.5.2",
        text="Syntax error, bare <LF> received; lines must end in <CR><LF> (RFC 5321 2.3.8)",
    )
    #: RFC 5321 §2.3.8: "CR and LF MUST only occur together as CRLF".
    BARE_CR_REJECTED: Final = Reply(
        code=500, status="5.5.2",
        text="Syntax error, bare <CR> received; CR must be followed by LF (RFC 5321 2.3.8)",
    )
    #: RFC 5321 §4.1.1 commands are printable text; NUL is in no production.
    NUL_REJECTED: Final = Reply(
        code=500, status="5.5.2", text="Syntax error, NUL character in command line"
    )
    #: RFC 5321 §4.2.3 "501 Syntax error in parameters or arguments"; RFC 3463 X.5.4.
    SYNTAX_ERROR_IN_PARAMETERS: Final = Reply(
        code=501, status="5.5.4", text="Syntax error in parameters or arguments"
    )
    #: RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF.
    BDAT_SYNTAX: Final = Reply(code=501, status="5.5.4", text="Syntax: BDAT chunk-size [LAST]")
    #: RFC 3207 §4: "501 Syntax error (no parameters allowed)".
    STARTTLS_SYNTAX: Final = Reply(
        code=501, status="5.5.4", text="Syntax error (no parameters allowed)"
    )
    #: RFC 4954 §4: "If the server receives such a response [*], it MUST reject the AUTH
    #: command by sending a 501 reply"; RFC 3463 X.0.0.
    AUTH_CANCELLED: Final = Reply(code=501, status="5.0.0", text="Authentication cancelled")
    #: RFC 4954 §4: "501 5.5.2 Cannot Base64-decode Client responses".
    AUTH_BAD_BASE64: Final = Reply(
        code=501, status="5.5.2", text="Cannot Base64-decode client response"
    )
    #: RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
    AUTH_BAD_RESPONSE: Final = Reply(
        code=501, status="5.5.2", text="Malformed SASL response"
    )
    #: RFC 4954 §4: "500 5.5.6 Authentication Exchange line is too long".
    AUTH_LINE_TOO_LONG: Final = Reply(
        code=500, status="5.5.6", text="Authentication Exchange line is too long"
    )
    #: RFC 5321 §4.2.3 "502 Command not implemented"; RFC 3463 X.5.1.
    COMMAND_NOT_IMPLEMENTED: Final = Reply(
        code=502, status="5.5.1", text="Command not implemented"
    )
    #: RFC 5321 §4.2.3 "503 Bad sequence of commands"; RFC 3463 X.5.1.
    BAD_SEQUENCE: Final = Reply(code=503, status="5.5.1", text="Bad sequence of commands")
    NEED_EHLO: Final = Reply(code=503, status="5.5.1", text="Send EHLO or HELO first")
    NEED_MAIL: Final = Reply(code=503, status="5.5.1", text="Need MAIL command first")
    NEED_RCPT: Final = Reply(code=503, status="5.5.1", text="Need RCPT command first")
    NESTED_MAIL: Final = Reply(code=503, status="5.5.1", text="Sender already specified")
    #: RFC 4954 §4: "AUTH command is not permitted during a mail transaction" (503).
    AUTH_IN_TRANSACTION: Final = Reply(
        code=503, status="5.5.1", text="AUTH not permitted during a mail transaction"
    )
    #: RFC 4954 §4: after a successful AUTH, "any subsequent AUTH command" gets 503.
    ALREADY_AUTHENTICATED: Final = Reply(code=503, status="5.5.1", text="Already authenticated")
    #: RFC 3207 §4.2: STARTTLS is not offered once TLS is active.
    TLS_ALREADY_ACTIVE: Final = Reply(code=503, status="5.5.1", text="TLS already active")
    #: RFC 3030 §2: "DATA ... after BDAT" and commands inside a BDAT transaction get 503.
    BDAT_IN_PROGRESS: Final = Reply(
        code=503, status="5.5.1", text="Bad sequence of commands: BDAT transaction in progress"
    )
    #: RFC 4954 §4 "504 5.5.4 Unrecognized authentication type".
    AUTH_MECHANISM_UNKNOWN: Final = Reply(
        code=504, status="5.5.4", text="Unrecognized authentication type"
    )
    #: RFC 5321 §4.1.1.11: "555 MAIL FROM/RCPT TO parameters not recognized or not
    #: implemented"; RFC 3463 X.5.4.
    PARAMETERS_NOT_RECOGNIZED: Final = Reply(
        code=555, status="5.5.4",
        text="MAIL FROM/RCPT TO parameters not recognized or not implemented",
    )

    # --- 5xx: sequencing / protocol defences ---------------------------------------------
    #: RFC 5321 §3.1: "554" instead of the greeting; the client spoke before our 220 (Postfix
    #: postscreen "PREGREET"). RFC 3463 X.5.0 other protocol status.
    EARLY_TALKER: Final = Reply(
        code=554, status="5.5.0", text="Protocol error: client sent data before the greeting"
    )
    #: RFC 2920 §3.1: DATA "can only appear as the last command in a group"; content before
    #: our 354 (Postfix smtpd_forbid_unauth_pipelining).
    SYNC_ERROR: Final = Reply(
        code=554, status="5.5.0",
        text="Protocol error: data sent before the 354 reply (RFC 2920 3.1)",
    )
    #: RFC 5321 §3.3: "no valid recipients" (554) when all RCPTs failed.
    NO_VALID_RECIPIENTS: Final = Reply(code=554, status="5.5.1", text="No valid recipients")

    # --- 5xx: content (replies to end of DATA / BDAT; RFC 5321 §4.3.2 allows 550/552/554) ----
    #: RFC 5321 §2.3.8 + Postfix smtpd_forbid_bare_newline (reject code 550). Status X.6.0
    #: "other or undefined media error" (RFC 3463 §3.7): the fault is in the content.
    CONTENT_BARE_LF: Final = Reply(
        code=550, status="5.6.0",
        text="Message refused: bare <LF> in message content (RFC 5321 2.3.8)",
    )
    CONTENT_BARE_CR: Final = Reply(
        code=550, status="5.6.0",
        text="Message refused: bare <CR> in message content (RFC 5321 2.3.8)",
    )
    #: RFC 5322 §3.5 / RFC 6152: NUL is not allowed in 7bit or 8bitMIME content.
    CONTENT_NUL: Final = Reply(
        code=550, status="5.6.0", text="Message refused: NUL character in message content"
    )
    #: RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including <CRLF>.
    CONTENT_LINE_TOO_LONG: Final = Reply(
        code=550, status="5.6.0",
        text="Message refused: text line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
    )
    #: RFC 1870 §6 / RFC 5321 §4.5.3.1.10 "552 Too much mail data"; RFC 3463 X.3.4
    #: "Message too big for system".
    MESSAGE_TOO_BIG: Final = Reply(
        code=552, status="5.3.4", text="Message size exceeds fixed maximum message size"
    )

    # --- 5xx: policy --------------------------------------------------------------------
    #: RFC 4954 §6: "535 5.7.8 Authentication credentials invalid".
    AUTH_FAILED: Final = Reply(code=535, status="5.7.8", text="Authentication credentials invalid")
    #: RFC 4954 §6: "530 5.7.0 Authentication required".
    AUTH_REQUIRED: Final = Reply(code=530, status="5.7.0", text="Authentication required")
    #: RFC 3207 §4: "530 Must issue a STARTTLS command first".
    MUST_STARTTLS: Final = Reply(
        code=530, status="5.7.0", text="Must issue a STARTTLS command first"
    )
    #: RFC 4954 §6: "538 5.7.11 Encryption required for requested authentication mechanism".
    ENCRYPTION_REQUIRED_FOR_AUTH: Final = Reply(
        code=538, status="5.7.11", text="Encryption required for requested authentication mechanism"
    )
    #: RFC 5321 §4.2.3 "550 Requested action not taken: mailbox unavailable"; X.1.1.
    MAILBOX_UNAVAILABLE: Final = Reply(
        code=550, status="5.1.1", text="Requested action not taken: mailbox unavailable"
    )
    #: RFC 3463 §3.8 X.7.1 "Delivery not authorized, message refused" (relay denied).
    RELAY_DENIED: Final = Reply(code=554, status="5.7.1", text="Relay access denied")
    #: RFC 5321 §4.2.3 "554 Transaction failed".
    TRANSACTION_FAILED: Final = Reply(code=554, status="5.0.0", text="Transaction failed")

    @staticmethod
    def greeting(hostname: str) -> Reply:
        """RFC 5321 §4.2 greeting: "220 <domain> ..." (no status: RFC 2034 §3)."""
        return Reply(code=220, status=None, text=f"{hostname} ESMTP")

    @staticmethod
    def closing(hostname: str) -> Reply:
        """RFC 5321 §4.2.3 "221 <domain> Service closing transmission channel"."""
        return Reply(
            code=221, status="2.0.0", text=f"{hostname} Service closing transmission channel"
        )

    @staticmethod
    def helo_ok(hostname: str) -> Reply:
        """RFC 5321 §4.1.1.1: "250" SP Domain [ SP ehlo-greet ] (no status: RFC 2034 §3)."""
        return Reply(code=250, status=None, text=hostname)

    @staticmethod
    def auth_challenge(challenge_b64: str) -> Reply:
        """RFC 4954 §4: "334" SP [base64] (no status)."""
        return Reply(code=334, status=None, text=challenge_b64)

    @staticmethod
    def chunk_received(size: int) -> Reply:
        """RFC 3030 §2: 250 after each non-LAST chunk."""
        return Reply(code=250, status="2.0.0", text=f"{size} octets received")


def printable(text: str, *, limit: int = 200) -> str:
    """``text`` made safe for a reply: non-ASCII and control characters escaped, bounded.

    For reply texts that quote peer input (a parser's reason naming a bad label, say): the
    peer must never be able to make a reply refuse construction or carry its own line break.
    """
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(ch if " " <= ch <= "~" else f"\\x{ord(ch):02x}" for ch in out)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def catalogue() -> dict[str, Reply]:
    """Every named constant of :class:`Replies` (for tests and documentation)."""
    return {
        name: value for name, value in vars(Replies).items() if isinstance(value, Reply)
    }


# 334/354 are the only codes allowed to go without a status in the catalogue.
EXEMPT_CODES: Final = _EXEMPT_CODES
