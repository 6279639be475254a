"""THE transition table of the SMTP server: every ``(State, Input) -> Rule`` in one place.

Rule 1 (one table): all sequencing of the server lives in :data:`TABLE`. The engine
(``server.py``) looks a rule up for every command it parses and every internal step; it never
decides "is this command allowed now?" anywhere else. Extension availability and parameter
validity (is STARTTLS offered, is the address well formed) are checked *after* the table says
the command is in sequence.

Rule 2 (total): the table has an entry for every pair of :class:`State` and :class:`Input`
(``tests/property/test_smtp_state.py`` walks all of them). An entry is one of

* :class:`Go` -- the input is in sequence; if the application accepts it (or it needs no
  decision) the state becomes ``target``. A rejected input leaves the state unchanged.
* :class:`Refuse` -- the peer sent it out of sequence: answer ``reply``, keep the state
  (or close, when ``close``). These are *remote* protocol errors.
* :class:`Impossible` -- the input cannot reach the engine in that state (commands are not
  parsed while message content or a TLS handshake is on the wire; ``GREET`` only once). If it
  happens, our own code is wrong: the engine raises ``LocalProtocolError``.

States::

    GREETING_PENDING --GREET--> CONNECTED --EHLO/HELO--> READY --MAIL--> MAIL --RCPT--> RCPT
        |  any peer byte: 554, CLOSED                       ^  \\--AUTH--> AUTH --AUTH_END--/
        |                                                   |  \\--STARTTLS--> STARTTLS_PENDING
    RCPT --DATA--> DATA --DATA_END--> READY                 |        --TLS_ESTABLISHED--> CONNECTED
    RCPT --BDAT--> BDAT --CHUNK_END--> BDAT --LAST_CHUNK_END--> READY
    any command state --QUIT--> CLOSED; any state --PEER_CLOSED / SHUTDOWN--> CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from mailmoat.smtp.replies import Replies, Reply

__all__ = [
    "COMMAND_INPUTS",
    "COMMAND_STATES",
    "TABLE",
    "Go",
    "Impossible",
    "Input",
    "Refuse",
    "Rule",
    "State",
    "rule",
]


class State(enum.Enum):
    """Where the server is in the SMTP dialogue."""

    # Members are singletons: identity hashing keeps table lookups in C (Enum's own
    # __hash__ is a Python function, measurable on the per-command path).
    __hash__ = object.__hash__

    GREETING_PENDING = "greeting-pending"  # connected, our 220 not yet sent
    CONNECTED = "connected"  # greeted (or TLS just established), no EHLO/HELO yet
    READY = "ready"  # after EHLO/HELO, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient accepted yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading DATA content
    BDAT = "bdat"  # inside a BDAT (CHUNKING) transaction
    AUTH = "auth"  # inside a SASL exchange
    STARTTLS_PENDING = "starttls-pending"  # 220 sent for STARTTLS, waiting for the handshake
    CLOSED = "closed"


class Input(enum.Enum):
    """What can happen to the server: a peer command, or an engine/adapter step."""

    __hash__ = object.__hash__

    # peer commands (RFC 5321 §4.1.1, RFC 3030, RFC 3207, RFC 4954)
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    UNKNOWN = "UNKNOWN"  # a verb we do not know or do not implement (EXPN, TURN, ...)
    BAD_LINE = "BAD_LINE"  # a line refused by framing: bare CR/LF, NUL, too long
    # engine / adapter steps
    GREET = "GREET"  # greet() sent our 220
    PEER_BYTES_EARLY = "PEER_BYTES_EARLY"  # peer bytes before our greeting
    AUTH_END = "AUTH_END"  # the SASL exchange ended (success, failure or cancel)
    DATA_END = "DATA_END"  # <CRLF>.<CRLF> seen and answered
    CHUNK_END = "CHUNK_END"  # a non-LAST BDAT chunk read and answered
    LAST_CHUNK_END = "LAST_CHUNK_END"  # the LAST BDAT chunk read and answered
    TLS_ESTABLISHED = "TLS_ESTABLISHED"  # tls_established() after STARTTLS
    PEER_CLOSED = "PEER_CLOSED"  # EOF from the peer
    SHUTDOWN = "SHUTDOWN"  # we close: 421, too many errors, QUIT answered


@dataclass(frozen=True, slots=True, kw_only=True)
class Go:
    """In sequence: on acceptance the state becomes ``target``."""

    target: State


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Out of sequence (the peer's error): answer ``reply``; close when ``close``."""

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Impossible:
    """Cannot happen unless the engine itself is wrong (LocalProtocolError)."""

    why: str


Rule = Go | Refuse | Impossible

#: States in which the peer's bytes are parsed as command lines.
COMMAND_STATES: Final = frozenset(
    {State.CONNECTED, State.READY, State.MAIL, State.RCPT, State.BDAT}
)
#: Inputs that are peer commands (or bad command lines).
COMMAND_INPUTS: Final = frozenset(
    {
        Input.EHLO, Input.HELO, Input.MAIL, Input.RCPT, Input.DATA, Input.BDAT, Input.RSET,
        Input.NOOP, Input.QUIT, Input.VRFY, Input.HELP, Input.STARTTLS, Input.AUTH,
        Input.UNKNOWN, Input.BAD_LINE,
    }
)
_TRANSACTION: Final = (State.MAIL, State.RCPT, State.BDAT)


def _build() -> dict[tuple[State, Input], Rule]:
    t: dict[tuple[State, Input], Rule] = {}

    def every(state: State, rule_: Rule) -> None:
        for inp in Input:
            t[(state, inp)] = rule_

    # Defaults: engine steps are impossible unless listed; commands are impossible outside
    # command states (content, SASL lines and TLS handshakes are not parsed as commands).
    for state in State:
        every(state, Impossible(why=f"nothing but listed steps happen in {state.value}"))
        t[(state, Input.PEER_CLOSED)] = Go(target=State.CLOSED)
        t[(state, Input.SHUTDOWN)] = Go(target=State.CLOSED)

    # GREETING_PENDING: RFC 5321 §3.1 "the client SMTP waits for the greeting"; a client that
    # talks first is refused (early talker, Postfix postscreen "PREGREET").
    t[(State.GREETING_PENDING, Input.GREET)] = Go(target=State.CONNECTED)
    t[(State.GREETING_PENDING, Input.PEER_BYTES_EARLY)] = Refuse(
        reply=Replies.EARLY_TALKER, close=True
    )

    for state in COMMAND_STATES:
        # Always allowed, no state change (RFC 5321 §4.1.4: NOOP, HELP, VRFY, RSET, QUIT
        # "may be used at any time").
        for inp in (Input.NOOP, Input.HELP, Input.VRFY):
            t[(state, inp)] = Go(target=state)
        t[(state, Input.QUIT)] = Go(target=State.CLOSED)
        t[(state, Input.UNKNOWN)] = Refuse(reply=Replies.COMMAND_UNRECOGNIZED)
        t[(state, Input.BAD_LINE)] = Refuse(reply=Replies.COMMAND_UNRECOGNIZED)
        # RFC 5321 §4.1.4: EHLO/HELO "later in the session" reset like RSET.
        t[(state, Input.EHLO)] = Go(target=State.READY)
        t[(state, Input.HELO)] = Go(target=State.READY)

    # CONNECTED: RFC 5321 §4.1.4 "a session that ... does not ... EHLO ... 503".
    c = State.CONNECTED
    t[(c, Input.RSET)] = Go(target=c)
    for inp in (Input.MAIL, Input.RCPT, Input.DATA, Input.BDAT, Input.STARTTLS, Input.AUTH):
        t[(c, inp)] = Refuse(reply=Replies.NEED_EHLO)

    # READY: no transaction.
    r = State.READY
    t[(r, Input.RSET)] = Go(target=r)
    t[(r, Input.MAIL)] = Go(target=State.MAIL)
    t[(r, Input.RCPT)] = Refuse(reply=Replies.NEED_MAIL)
    t[(r, Input.DATA)] = Refuse(reply=Replies.NEED_MAIL)
    t[(r, Input.BDAT)] = Refuse(reply=Replies.NEED_MAIL)
    t[(r, Input.STARTTLS)] = Go(target=State.STARTTLS_PENDING)
    t[(r, Input.AUTH)] = Go(target=State.AUTH)

    # Transaction states: MAIL, RCPT, BDAT.
    for state in _TRANSACTION:
        t[(state, Input.RSET)] = Go(target=State.READY)  # RFC 5321 §4.1.1.5
        t[(state, Input.MAIL)] = Refuse(reply=Replies.NESTED_MAIL)  # §4.1.1.2
        # RFC 4954 §4: "The AUTH command is not permitted during a mail transaction."
        t[(state, Input.AUTH)] = Refuse(reply=Replies.AUTH_IN_TRANSACTION)
        t[(state, Input.STARTTLS)] = Refuse(reply=Replies.BAD_SEQUENCE)
    m = State.MAIL
    t[(m, Input.RCPT)] = Go(target=State.RCPT)
    # RFC 5321 §3.3: no valid recipients -> 554 (or 503) to DATA; RFC 3030 likewise for BDAT.
    t[(m, Input.DATA)] = Refuse(reply=Replies.NO_VALID_RECIPIENTS)
    t[(m, Input.BDAT)] = Refuse(reply=Replies.NO_VALID_RECIPIENTS)
    rc = State.RCPT
    t[(rc, Input.RCPT)] = Go(target=rc)
    t[(rc, Input.DATA)] = Go(target=State.DATA)
    t[(rc, Input.BDAT)] = Go(target=State.BDAT)
    b = State.BDAT
    # RFC 3030 §2: within a BDAT transaction only BDAT (and RSET/QUIT/NOOP...) may follow;
    # "DATA ... after BDAT" is a bad sequence, as are RCPT and MAIL.
    t[(b, Input.RCPT)] = Refuse(reply=Replies.BDAT_IN_PROGRESS)
    t[(b, Input.DATA)] = Refuse(reply=Replies.BDAT_IN_PROGRESS)
    t[(b, Input.BDAT)] = Go(target=b)
    t[(b, Input.CHUNK_END)] = Go(target=b)
    t[(b, Input.LAST_CHUNK_END)] = Go(target=State.READY)

    # DATA: content only; the framer yields no commands here.
    t[(State.DATA, Input.DATA_END)] = Go(target=State.READY)
    # AUTH: SASL lines only.
    t[(State.AUTH, Input.AUTH_END)] = Go(target=State.READY)
    # STARTTLS_PENDING: RFC 3207 §4.2 the session restarts; EHLO again.
    t[(State.STARTTLS_PENDING, Input.TLS_ESTABLISHED)] = Go(target=State.CONNECTED)
    # CLOSED: closing again is harmless.
    t[(State.CLOSED, Input.PEER_CLOSED)] = Go(target=State.CLOSED)
    t[(State.CLOSED, Input.SHUTDOWN)] = Go(target=State.CLOSED)
    return t


#: The one transition table (total over State x Input).
TABLE: Final[dict[tuple[State, Input], Rule]] = _build()


def rule(state: State, inp: Input) -> Rule:
    """The rule for ``inp`` in ``state``."""
    return TABLE[(state, inp)]
