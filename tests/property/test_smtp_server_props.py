"""Property tests of the SMTP server engine (Hypothesis).

* The transition table over every (state, input) pair, and the real engine driven into every
  state and fed every command: never a crash, never a state outside the table.
* Dot-stuffing round trip: any content, stuffed and fed in any split, comes back unchanged.
* Content checks agree with a naive oracle (regular expressions over the whole content).
* Any byte stream, in any split: the engine settles (bounded events) and buffers a bounded
  number of octets.
"""

from __future__ import annotations

import base64
import re
import smtplib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.errors import LocalProtocolError
from mailmoat.limits import SMTP_AUTH_LINE_MAX
from mailmoat.smtp import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    MessageComplete,
    ServerConfig,
    ServerConnection,
    State,
    dot_stuff,
)
from mailmoat.smtp._receive import ContentFault, ContentPolicy, _Content
from mailmoat.smtp.replies import Reply
from mailmoat.smtp.state import COMMAND_INPUTS, COMMAND_STATES, TABLE, Go, Impossible, Input, Refuse

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- the table ------------------------------------------------------------------------------


@given(st.sampled_from(list(State)), st.sampled_from(list(Input)))
@SETTINGS
def test_every_pair_has_a_defined_rule(state: State, inp: Input) -> None:
    r = TABLE[(state, inp)]
    if isinstance(r, Go):
        assert r.target in State
    elif isinstance(r, Refuse):
        assert isinstance(r.reply, Reply)
        assert r.reply.code >= 400
        assert r.reply.status
    else:
        assert isinstance(r, Impossible)
        # Impossible only where the engine cannot produce the input.
        assert state not in COMMAND_STATES or inp not in COMMAND_INPUTS


def test_table_closes_from_everywhere() -> None:
    for state in State:
        assert TABLE[(state, Input.PEER_CLOSED)] == Go(target=State.CLOSED)
        assert TABLE[(state, Input.SHUTDOWN)] == Go(target=State.CLOSED)


def drain(conn: ServerConnection, limit: int = 10_000) -> list[Event]:
    out: list[Event] = []
    for _ in range(limit):
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out
        if event.decision:
            conn.accept()
    raise AssertionError("engine did not settle")


AUTH_IR = base64.b64encode(b"\0user\0pw")
LINES: dict[Input, bytes] = {
    Input.EHLO: b"EHLO c.example\r\n",
    Input.HELO: b"HELO c.example\r\n",
    Input.MAIL: b"MAIL FROM:<a@example.org>\r\n",
    Input.RCPT: b"RCPT TO:<b@example.net>\r\n",
    Input.DATA: b"DATA\r\n",
    Input.BDAT: b"BDAT 3 LAST\r\nabc",
    Input.RSET: b"RSET\r\n",
    Input.NOOP: b"NOOP\r\n",
    Input.QUIT: b"QUIT\r\n",
    Input.VRFY: b"VRFY x\r\n",
    Input.HELP: b"HELP\r\n",
    Input.STARTTLS: b"STARTTLS\r\n",
    Input.AUTH: b"AUTH PLAIN " + AUTH_IR + b"\r\n",
    Input.UNKNOWN: b"FOO\r\n",
    Input.BAD_LINE: b"NOOP\n",
}
#: Bytes that bring a greeted connection to each state.
REACH: dict[State, bytes] = {
    State.CONNECTED: b"",
    State.READY: b"EHLO c.example\r\n",
    State.MAIL: b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n",
    State.RCPT: b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n",
    State.BDAT: (b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                 b"BDAT 1\r\nx"),
    State.DATA: (b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                 b"DATA\r\n"),
    State.AUTH: b"EHLO c.example\r\nAUTH LOGIN\r\n",
    State.STARTTLS_PENDING: b"EHLO c.example\r\nSTARTTLS\r\n",
    State.CLOSED: b"QUIT\r\n",
}


def reach(state: State) -> ServerConnection:
    conn = ServerConnection(ServerConfig(hostname="mx.example", tls_available=True,
                                         require_tls_for_auth=False))
    if state is not State.GREETING_PENDING:
        conn.greet()
        if REACH[state]:
            conn.receive_data(REACH[state])
            drain(conn)
    assert conn.state is state
    return conn


@pytest.mark.parametrize("state", list(State), ids=lambda s: str(getattr(s, "value", s)))
@pytest.mark.parametrize("inp", sorted(COMMAND_INPUTS, key=str),
                         ids=lambda i: str(getattr(i, "value", i)))
def test_engine_follows_the_table_for_every_pair(state: State, inp: Input) -> None:
    conn = reach(state)
    before = conn.state
    conn.receive_data(LINES[inp])
    events = drain(conn)
    after = conn.state
    assert after in State
    r = TABLE[(state, inp)]
    if isinstance(r, Refuse):
        assert after in (before, State.CLOSED)
    elif isinstance(r, Go):
        # Accepted: the target, or where the command itself completes at once (AUTH with an
        # initial response, BDAT LAST) the state it then returns to.
        settled = {Input.AUTH: State.READY, Input.BDAT: State.READY}.get(inp, r.target)
        assert after == settled, (state, inp, after)
    else:
        # No command is parsed here: content, SASL line, discarded bytes, or closed.
        assert not any(type(e).__name__ in ("MailFrom", "RcptTo", "Ehlo", "Helo") for e in events)
        if state in (State.STARTTLS_PENDING, State.CLOSED):
            assert after is state
            assert events in ([], [ConnectionClosed()])
        if state is State.GREETING_PENDING:
            assert after is State.CLOSED


def test_engine_steps_out_of_sequence_are_local_errors() -> None:
    conn = reach(State.READY)
    with pytest.raises(LocalProtocolError):
        conn.greet()
    with pytest.raises(LocalProtocolError):
        conn.tls_established(tls_version="TLSv1.3", cipher="x")


COMMANDS = st.sampled_from([
    *LINES.values(), b"MAIL FROM:<>\r\n", b"BDAT 2\r\nxy", b"BDAT 0 LAST\r\n", b"x\r\n.\r\n",
    b".\r\n", b"AUTH LOGIN\r\n", base64.b64encode(b"u") + b"\r\n", b"*\r\n", b"\r\n",
    b"RCPT TO:<c@example.net> NOTIFY=NEVER\r\n", b"MAIL FROM:<a@example.org> SIZE=1\r\n",
])


@given(st.lists(st.tuples(COMMANDS, st.booleans()), max_size=40),
       st.booleans())
@SETTINGS
def test_random_command_sequences_never_crash(steps: list[tuple[bytes, bool]], tls: bool) -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.example", tls_available=True,
                                         tls_active=tls, max_errors=1000))
    conn.greet()
    messages = 0
    for line, accept in steps:
        conn.receive_data(line)
        for _ in range(1000):
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, MessageComplete):
                messages += 1
            if event.decision:
                if accept:
                    conn.accept()
                else:
                    conn.reject(Reply(code=550, status="5.7.1", text="no"))
        else:
            raise AssertionError("engine did not settle")
        assert conn.state in State
        assert conn.buffered <= SMTP_AUTH_LINE_MAX
        wire = conn.data_to_send()
        assert wire == b"" or wire.endswith(b"\r\n")
    assert messages <= len(steps)


# --- dot-stuffing round trip ----------------------------------------------------------------

LINE_BYTES = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
LINE = st.one_of(LINE_BYTES, LINE_BYTES.map(lambda b: b"." + b), st.just(b"."), st.just(b".."))


@given(st.lists(LINE, max_size=30), st.lists(st.integers(min_value=1, max_value=50), max_size=20))
@SETTINGS
def test_dot_stuffing_round_trip(lines: list[bytes], cuts: list[int]) -> None:
    content = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(content)
    # An independent encoder agrees: the stdlib SMTP client's own transparency quoting.
    assert wire == smtplib._quote_periods(content) + b".\r\n"  # type: ignore[attr-defined]
    conn = ServerConnection(ServerConfig(hostname="mx.example", allow_nul=True))
    conn.greet()
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                      b"DATA\r\n")
    drain(conn)
    assert conn.state is State.DATA
    got: list[Event] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        conn.receive_data(wire[pos : pos + cut])
        pos += cut
        got += drain(conn)
        if pos >= len(wire):
            break
    (done,) = [e for e in got if isinstance(e, MessageComplete)]
    assert done.data == content


# --- content checks against a naive oracle --------------------------------------------------

BARE_CR = re.compile(rb"\r(?!\n)")
BARE_LF = re.compile(rb"(?<!\r)\n")

CONTENT = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b"\0", b"xyz" * 200, b"\r\r\n"]),
    max_size=40,
).map(b"".join)


@given(CONTENT, st.lists(st.integers(min_value=1, max_value=700), max_size=10))
@SETTINGS
def test_content_faults_match_oracle(content: bytes, cuts: list[int]) -> None:
    policy = ContentPolicy(max_size=10**9, max_line=1000)
    checker = _Content(policy)
    kept = b""
    pos = 0
    for cut in [*cuts, len(content)]:
        kept += checker.feed(content[pos : pos + cut])
        pos += cut
        if pos >= len(content):
            break
    kept += checker.finish()
    lines = content.split(b"\r\n")
    expected: set[ContentFault] = set()
    if BARE_LF.search(content):
        expected.add(ContentFault.BARE_LF)
    if BARE_CR.search(content):
        expected.add(ContentFault.BARE_CR)
    if b"\0" in content:
        expected.add(ContentFault.NUL)
    if max(len(line) for line in lines) > 998:
        expected.add(ContentFault.LINE_TOO_LONG)
    if expected:
        # The first fault seen is reported; some fault must be, and a real one.
        assert checker.fault in expected or (
            checker.fault is ContentFault.LINE_TOO_LONG and (expected & {ContentFault.BARE_CR,
                                                                         ContentFault.BARE_LF})
        )
    else:
        assert checker.fault is None
        assert kept == content
    assert checker.size == len(content)


# --- any byte stream, any split ---------------------------------------------------------------

NOISE = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"\r\n.\r\n", b"DATA\r\n", b"BDAT 5\r\n",
                         b"BDAT 3 LAST\r\n", b"EHLO x.example\r\n", b"MAIL FROM:<a@b.example>\r\n",
                         b"RCPT TO:<c@d.example>\r\n", b"AUTH LOGIN\r\n", b"STARTTLS\r\n",
                         b"x" * 600]),
    ),
    max_size=60,
).map(b"".join)


@given(NOISE, st.lists(st.integers(min_value=1, max_value=300), max_size=30), st.booleans())
@SETTINGS
def test_any_stream_settles_with_bounded_buffer(data: bytes, cuts: list[int], normalize: bool) -> None:
    conn = ServerConnection(ServerConfig(
        hostname="mx.example", tls_available=True, require_tls_for_auth=False, max_errors=10_000,
        forbid_unsynchronised_pipelining=False, bare_newline="normalize" if normalize else "reject",
    ))
    conn.greet()
    pos = 0
    total_events = 0
    for cut in [*cuts, len(data)]:
        conn.receive_data(data[pos : pos + cut])
        pos += cut
        total_events += len(drain(conn, limit=4 * len(data) + 50))
        assert conn.buffered <= SMTP_AUTH_LINE_MAX + 8
        if pos >= len(data):
            break
    conn.receive_data(b"")
    events = drain(conn)
    assert isinstance(events[-1], ConnectionClosed)
    assert total_events <= 4 * len(data) + 50
