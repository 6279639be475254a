"""ServerConnection: every command and extension, expected replies from the RFCs cited."""

from __future__ import annotations

import base64

import pytest
from smtp_helpers import Session, ehlo_keywords, parse_replies

from mailmoat.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from mailmoat.smtp import (
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
    Replies,
    Reply,
    Reset,
    ServerConfig,
    ServerConnection,
    StartTLSRequested,
    State,
    TLSEstablished,
    Vrfy,
)

TXN = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"


def ready(**config: object) -> Session:
    s = Session(**config)  # type: ignore[arg-type]
    s.feed(b"EHLO client.example\r\n")
    s.take_wire()
    return s


def in_rcpt(**config: object) -> Session:
    s = Session(**config)  # type: ignore[arg-type]
    s.feed(TXN)
    assert s.conn.state is State.RCPT
    s.take_wire()
    return s


def send_data(s: Session, content: bytes) -> list[Event]:
    s.feed(b"DATA\r\n")
    assert s.replies() == [(354, "End data with <CR><LF>.<CR><LF>")]
    return s.feed(content)


# --- greeting, EHLO, HELO ----------------------------------------------------------------
def test_greeting_is_220_with_hostname() -> None:
    s = Session(hostname="mx.example")
    # RFC 5321 §4.2: "220 <domain>"; no enhanced status on the greeting (RFC 2034 §3).
    assert s.take_wire() == b"220 mx.example ESMTP\r\n"
    assert s.conn.state is State.CONNECTED


def test_ehlo_lists_extensions_plaintext() -> None:
    s = Session(tls_available=True)
    s.take_wire()
    events = s.feed(b"EHLO client.example\r\n")
    assert events == [Ehlo(domain="client.example")]
    wire = s.take_wire()
    assert wire.startswith(b"250-mx.example\r\n")
    kw = ehlo_keywords(wire)
    assert "STARTTLS" in kw
    assert "SIZE 52428800" in kw
    for k in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"):
        assert k in kw
    # RFC 4954 §4 / RFC 8689 §3: no AUTH in plaintext by policy, REQUIRETLS only inside TLS.
    assert not any(k.startswith("AUTH") for k in kw)
    assert "REQUIRETLS" not in kw
    assert s.conn.their_hostname == "client.example"
    assert s.conn.esmtp


def test_ehlo_inside_tls_offers_auth_and_requiretls_not_starttls() -> None:
    s = Session(tls_available=True, tls_active=True)
    s.take_wire()
    s.feed(b"EHLO client.example\r\n")
    kw = ehlo_keywords(s.take_wire())
    assert "STARTTLS" not in kw
    assert "AUTH PLAIN LOGIN" in kw
    assert "REQUIRETLS" in kw


def test_ehlo_plaintext_auth_when_policy_allows() -> None:
    s = Session(require_tls_for_auth=False, auth_mechanisms=("PLAIN",), chunking=False,
                dsn=False, smtputf8=False, pipelining=False, eightbitmime=False)
    s.take_wire()
    s.feed(b"EHLO client.example\r\n")
    kw = ehlo_keywords(s.take_wire())
    assert kw == ["SIZE 52428800", "ENHANCEDSTATUSCODES", "AUTH PLAIN", "VRFY", "HELP"]


def test_helo_reply_and_no_esmtp_parameters() -> None:
    s = Session()
    s.take_wire()
    assert s.feed(b"HELO client.example\r\n") == [Helo(domain="client.example")]
    assert s.take_wire() == b"250 mx.example\r\n"
    assert not s.conn.esmtp
    s.feed(b"MAIL FROM:<a@example.org> SIZE=10\r\n")
    # RFC 5321 §4.1.1.11: 555 for parameters not recognised (no EHLO, no extensions).
    assert s.replies()[0][0] == 555
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 3 LAST\r\nabc")
    assert s.codes() == [250, 250, 502]  # BDAT not offered after HELO: chunk skipped
    s.feed(b"NOOP\r\n")
    assert s.codes() == [250]


@pytest.mark.parametrize("line", [b"EHLO\r\n", b"HELO\r\n"])
def test_hello_without_domain_is_501(line: bytes) -> None:
    s = Session()
    s.take_wire()
    s.feed(line)
    assert s.replies()[0][0] == 501


def test_ehlo_bad_domain_is_501() -> None:
    s = Session()
    s.take_wire()
    s.feed(b"EHLO bad_domain!\r\n")
    code, text = s.replies()[0]
    assert code == 501
    assert text.startswith("5.5.4")


def test_ehlo_rejected_by_application_keeps_state() -> None:
    s = Session(decide=lambda c, e: c.reject(Reply(code=550, status="5.7.1", text="go away")))
    s.take_wire()
    s.feed(b"EHLO client.example\r\n")
    assert s.replies() == [(550, "5.7.1 go away")]
    assert s.conn.state is State.CONNECTED


def test_second_ehlo_resets_transaction() -> None:
    s = in_rcpt()
    s.feed(b"EHLO again.example\r\nDATA\r\n")
    assert s.codes()[-1] == 503  # RFC 5321 §4.1.4: EHLO resets like RSET
    assert s.conn.state is State.READY


# --- sequencing (RFC 5321 §4.1.4, §3.3) --------------------------------------------------
@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"MAIL FROM:<a@example.org>\r\n", 503),
        (b"RCPT TO:<a@example.org>\r\n", 503),
        (b"DATA\r\n", 503),
        (b"STARTTLS\r\n", 503),
        (b"AUTH PLAIN\r\n", 503),
    ],
)
def test_commands_before_ehlo_are_503(line: bytes, code: int) -> None:
    s = Session(tls_available=True)
    s.take_wire()
    s.feed(line)
    assert s.replies() == [(code, "5.5.1 Send EHLO or HELO first")]


def test_rset_noop_help_vrfy_quit_before_ehlo() -> None:
    s = Session()
    s.take_wire()
    events = s.feed(b"RSET\r\nNOOP\r\nHELP\r\nVRFY bob\r\nQUIT\r\n")
    assert [type(e) for e in events] == [Reset, Noop, Help, Vrfy, Quit, ConnectionClosed]
    # RFC 5321 §3.5.3: VRFY may answer 252; §4.2.3 214 help, 221 closing.
    assert s.codes() == [250, 250, 214, 252, 221]
    assert s.conn.closed


def test_out_of_sequence_in_transaction() -> None:
    s = ready()
    s.feed(b"RCPT TO:<b@example.net>\r\nDATA\r\nBDAT 1 LAST\r\nx")
    assert s.codes() == [503, 503, 503]
    s.feed(b"MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n")
    # RFC 5321 §3.3: no valid recipients -> 554.
    assert s.replies() == [
        (250, "2.1.0 Sender OK"), (503, "5.5.1 Sender already specified"),
        (554, "5.5.1 No valid recipients"),
    ]
    s.feed(b"BDAT 2 LAST\r\nzzNOOP\r\n")
    assert s.codes() == [554, 250]  # the refused chunk was read and dropped


def test_rejected_recipients_leave_no_valid_recipient() -> None:
    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, RcptTo):
            c.reject(Replies.MAILBOX_UNAVAILABLE)
        else:
            c.accept()

    s = Session(decide=decide)
    s.take_wire()
    s.feed(TXN + b"DATA\r\n")
    assert s.codes() == [250, 250, 550, 554]


def test_rset_aborts_transaction() -> None:
    s = in_rcpt()
    assert [type(e) for e in s.feed(b"RSET\r\nDATA\r\n")] == [Reset, ProtocolViolation]
    assert s.codes() == [250, 503]


@pytest.mark.parametrize("line", [b"RSET x\r\n", b"QUIT now\r\n", b"DATA x\r\n", b"VRFY\r\n"])
def test_argument_errors_are_501(line: bytes) -> None:
    s = in_rcpt()
    s.feed(line)
    assert s.replies()[0][0] == 501


def test_unknown_and_unimplemented_commands() -> None:
    s = ready()
    s.feed(b"FOO bar\r\nEXPN list\r\nTURN\r\n\r\n")
    # RFC 5321 §4.2.4: 500 unrecognized; 502 not implemented.
    assert s.codes() == [500, 502, 502, 500]


def test_verbs_are_case_insensitive() -> None:
    s = Session()
    s.take_wire()
    s.feed(b"ehlo client.example\r\nmail from:<a@example.org>\r\nrcpt to:<b@example.net>\r\n")
    assert s.codes() == [250, 250, 250]


def test_custom_vrfy_reply() -> None:
    s = Session(vrfy_reply=Reply(code=502, status="5.5.1", text="VRFY disabled"))
    s.take_wire()
    s.feed(b"VRFY x\r\n")
    assert s.replies() == [(502, "5.5.1 VRFY disabled")]


# --- MAIL / RCPT parameters ---------------------------------------------------------------
def test_mail_event_carries_params() -> None:
    s = ready()
    events = s.feed(
        b"MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2Bx\r\n"
    )
    (mail,) = events
    assert isinstance(mail, MailFrom)
    assert mail.address is not None
    assert str(mail.address) == "a@example.org"
    p = mail.params
    assert (p.size, p.body, p.ret, p.envid, p.smtputf8) == (1000, "8BITMIME", "HDRS", "QQ+x", False)


def test_null_reverse_path() -> None:
    s = ready()
    (mail,) = s.feed(b"MAIL FROM:<>\r\n")
    assert isinstance(mail, MailFrom)
    assert mail.address is None


@pytest.mark.parametrize(
    ("line", "code", "status"),
    [
        (b"MAIL <a@example.org>\r\n", 501, "5.5.4"),
        (b"MAIL FROM:a@example.org\r\n", 501, "5.1.7"),
        (b"MAIL FROM:<a@example.org> SIZE=999999999999\r\n", 552, "5.3.4"),  # RFC 1870 §6.1
        (b"MAIL FROM:<a@example.org> SIZE=abc\r\n", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.org> FOO=bar\r\n", 555, "5.5.4"),  # RFC 5321 §4.1.1.11
        (b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.org> RET=ALL\r\n", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.org> ENVID=a=b\r\n", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.org> ENVID=" + b"x" * 101 + b"\r\n", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.org> SMTPUTF8=yes\r\n", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.org> REQUIRETLS\r\n", 555, "5.5.4"),  # RFC 8689: TLS only
        (b"MAIL FROM:<a@example.org> AUTH=<>\r\n", 555, "5.5.4"),  # AUTH not offered
        # RFC 6531 §3.5: a MAIL refused for needing an ASCII address gets 550 (RCPT: 553),
        # with X.6.7 "Non-ASCII addresses not permitted".
        ("MAIL FROM:<jöran@example.org>\r\n".encode(), 550, "5.6.7"),
    ],
)
def test_mail_refusals(line: bytes, code: int, status: str) -> None:
    s = ready()
    s.feed(line)
    got_code, text = s.replies()[0]
    assert (got_code, text.split()[0]) == (code, status)
    assert s.conn.state is State.READY


def test_mail_smtputf8() -> None:
    s = ready()
    (mail,) = s.feed("MAIL FROM:<jöran@example.org> SMTPUTF8\r\n".encode())
    assert isinstance(mail, MailFrom)
    assert mail.params.smtputf8
    assert mail.address is not None
    assert mail.address.is_utf8
    (rcpt,) = s.feed("RCPT TO:<ålice@exämple.org>\r\n".encode())
    assert isinstance(rcpt, RcptTo)
    assert rcpt.address.is_utf8


@pytest.mark.parametrize(
    "line",
    ["MAIL FROM:<a@b.example> SMTPUTF8 ÄB=1", "MAIL FROM:<a@exämple..org> SMTPUTF8",
     "MAIL FROM:<a@b.example> SMTPUTF8 BODY=ü"],
)
def test_peer_text_quoted_in_replies_is_escaped(line: str) -> None:
    # A reason quoting the peer's UTF-8 must not break the reply (ASCII, one line).
    s = ready()
    events = s.feed(line.encode() + b"\r\n")
    assert isinstance(events[0], ProtocolViolation)
    wire = s.take_wire()
    assert wire.isascii()
    assert wire.count(b"\r\n") == 1
    assert wire[:1] == b"5"


def test_smtputf8_off_refuses_utf8_address() -> None:
    s = ready(smtputf8=False)
    s.feed("MAIL FROM:<jöran@example.org> SMTPUTF8\r\n".encode())
    assert s.replies()[0][0] == 550  # RFC 6531 §3.5 (MAIL: 550)


def test_rcpt_utf8_without_smtputf8_transaction_is_553() -> None:
    s = ready()
    s.feed("MAIL FROM:<a@example.org>\r\nRCPT TO:<ålice@example.org>\r\n".encode())
    assert [c for c, _ in s.replies()] == [250, 553]


def test_requiretls_inside_tls() -> None:
    s = ready(tls_active=True)
    (mail,) = s.feed(b"MAIL FROM:<a@example.org> REQUIRETLS\r\n")
    assert isinstance(mail, MailFrom)
    assert mail.params.requiretls


def test_mail_auth_param_when_auth_offered() -> None:
    s = ready(tls_active=True)
    (mail,) = s.feed(b"MAIL FROM:<a@example.org> AUTH=a+2Bb@example.org\r\n")
    assert isinstance(mail, MailFrom)
    assert mail.params.auth == "a+b@example.org"


def test_rcpt_dsn_params() -> None:
    s = ready()
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    (rcpt,) = s.feed(b"RCPT TO:<b@example.net> NOTIFY=SUCCESS,delay ORCPT=rfc822;b+40example.net\r\n")
    assert isinstance(rcpt, RcptTo)
    assert rcpt.params.notify == ("SUCCESS", "DELAY")
    assert rcpt.params.orcpt == ("rfc822", "b@example.net")
    (rcpt,) = s.feed(b"RCPT TO:<c@example.net> NOTIFY=NEVER ORCPT=utf-8;c@x\r\n")
    assert isinstance(rcpt, RcptTo)
    assert rcpt.params.notify == ("NEVER",)
    assert rcpt.params.orcpt == ("utf-8", "c@x")


@pytest.mark.parametrize(
    "params",
    [
        b"NOTIFY=NEVER,SUCCESS", b"NOTIFY=SOMETIMES", b"NOTIFY", b"NOTIFY=SUCCESS,SUCCESS",
        b"ORCPT", b"ORCPT=rfc822", b"ORCPT=;x", b"ORCPT=rfc822;a+zz", b"ORCPT=r@x;a",
    ],
)
def test_rcpt_bad_dsn_params_are_501(params: bytes) -> None:
    s = ready()
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net> " + params + b"\r\n")
    assert [c for c, _ in s.replies()] == [250, 501]


def test_rcpt_unknown_param_and_syntax() -> None:
    s = ready(dsn=False)
    s.feed(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net> NOTIFY=NEVER\r\n"
           b"RCPT <b@example.net>\r\nRCPT TO:<>\r\n")
    replies = s.replies()
    assert [c for c, _ in replies] == [250, 555, 501, 501]
    assert replies[3][1].startswith("5.1.3")  # RFC 3463: bad destination address syntax


def test_postmaster_recipient() -> None:
    s = ready()
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    (rcpt,) = s.feed(b"RCPT TO:<Postmaster>\r\n")
    assert isinstance(rcpt, RcptTo)
    assert rcpt.address.domain == ""


def test_max_recipients_452() -> None:
    s = ready(max_recipients=2)
    s.feed(b"MAIL FROM:<a@example.org>\r\n" + b"RCPT TO:<b@example.net>\r\n" * 3)
    # RFC 5321 §4.5.3.1.10: "452 Too many recipients"; not counted as a protocol error.
    assert s.replies()[-1] == (452, "4.5.3 Too many recipients")
    assert s.conn.errors == 0


def test_custom_accept_replies() -> None:
    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, MessageComplete):
            c.accept(Reply(code=250, status="2.0.0", text="queued as ABC"))
        else:
            c.accept()

    s = Session(decide=decide)
    s.take_wire()
    s.feed(TXN + b"DATA\r\n")
    s.feed(b"x\r\n.\r\n")
    assert s.replies()[-1] == (250, "2.0.0 queued as ABC")


# --- DATA ---------------------------------------------------------------------------------
def test_data_dot_unstuffing_and_terminator() -> None:
    s = in_rcpt()
    events = send_data(s, b"Subject: x\r\n\r\n..leading dot\r\n.x\r\nend\r\n.\r\n")
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    # RFC 5321 §4.5.2: the first dot of a line that starts with one is deleted.
    assert done.data == b"Subject: x\r\n\r\n.leading dot\r\nx\r\nend\r\n"
    assert done.size == len(done.data)
    assert s.replies() == [(250, "2.0.0 Message accepted for delivery")]
    assert s.conn.state is State.READY


def test_empty_message() -> None:
    s = in_rcpt()
    events = send_data(s, b".\r\n")
    assert [e for e in events if isinstance(e, MessageComplete)] == [MessageComplete(data=b"", size=0)]


def test_data_one_octet_at_a_time() -> None:
    s = in_rcpt()
    s.feed(b"DATA\r\n")
    s.take_wire()
    content = b"a\r\n.\r\r\n..\r\n.b\r\n"  # contains a bare CR: refused at the real end
    for i in range(len(content)):
        s.feed(content[i : i + 1])
    assert not s.of(MessageComplete)
    s.feed(b".\r\n")
    assert s.replies() == [(550, f"{Replies.CONTENT_BARE_CR.status} {Replies.CONTENT_BARE_CR.text}")]


@pytest.mark.parametrize(
    ("content", "reply"),
    [
        (b"a\nb\r\n", Replies.CONTENT_BARE_LF),
        (b"a\rb\r\n", Replies.CONTENT_BARE_CR),
        (b"a\x00b\r\n", Replies.CONTENT_NUL),
        (b"x" * 999 + b"\r\n", Replies.CONTENT_LINE_TOO_LONG),
        (b"\r\n" + b"x" * 5000 + b"\r\nok\r\n", Replies.CONTENT_LINE_TOO_LONG),
        (b"y" * 3000, Replies.CONTENT_LINE_TOO_LONG),
    ],
)
def test_data_content_refused_after_real_end(content: bytes, reply: Reply) -> None:
    s = in_rcpt()
    events = send_data(s, content + b"\r\n.\r\n")
    assert not [e for e in events if isinstance(e, MessageComplete)]
    (violation,) = [e for e in events if isinstance(e, ProtocolViolation)]
    assert violation.reply == reply
    # RFC 5321 §4.3.2: 550 is a valid reply to end of data; RFC 3463 5.6.0 media error.
    assert s.replies() == [(550, f"5.6.0 {reply.text}")]
    assert s.conn.state is State.READY
    s.feed(b"NOOP\r\n")  # still in sync
    assert s.codes() == [250]


def test_text_line_of_exactly_1000_octets_is_accepted() -> None:
    s = in_rcpt()
    # RFC 5321 §4.5.3.1.6: 1000 octets including CRLF, "not counting the leading dot
    # duplicated for transparency".
    line = b"." + b"x" * 997
    events = send_data(s, b"x" * 998 + b"\r\n." + line + b"\r\n.\r\n")
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    assert done.data == b"x" * 998 + b"\r\n" + line + b"\r\n"


def test_message_size_limit() -> None:
    s = in_rcpt(max_message_size=100)
    events = send_data(s, b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n")
    assert not [e for e in events if isinstance(e, MessageComplete)]
    # RFC 5321 §4.5.3.1.10 "552 Too much mail data"; RFC 3463 5.3.4.
    assert s.replies() == [(552, "5.3.4 Message size exceeds fixed maximum message size")]


def test_normalize_policy_turns_bare_newlines_into_crlf() -> None:
    s = in_rcpt(bare_newline="normalize")
    events = send_data(s, b"a\nb\rc\r\n.\r\n")
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    assert done.data == b"a\r\nb\r\nc\r\n"


def test_allow_nul() -> None:
    s = in_rcpt(allow_nul=True)
    events = send_data(s, b"a\x00b\r\n.\r\n")
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    assert done.data == b"a\x00b\r\n"


def test_data_pipelined_before_354_is_refused_and_closes() -> None:
    s = in_rcpt()
    events = s.feed(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
    assert not [e for e in events if isinstance(e, DataStarted | MessageComplete)]
    assert s.replies() == [(554, f"{Replies.SYNC_ERROR.status} {Replies.SYNC_ERROR.text}")]
    assert isinstance(events[-1], ConnectionClosed)


def test_data_pipelined_allowed_when_configured() -> None:
    s = in_rcpt(forbid_unsynchronised_pipelining=False)
    events = s.feed(b"DATA\r\nbody\r\n.\r\nQUIT\r\n")
    assert [e.data for e in events if isinstance(e, MessageComplete)] == [b"body\r\n"]
    assert s.codes() == [354, 250, 221]


def test_data_rejected_by_application() -> None:
    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, DataStarted):
            c.reject(Reply(code=451, status="4.3.0", text="try later"))
        else:
            c.accept()

    s = Session(decide=decide)
    s.take_wire()
    s.feed(TXN + b"DATA\r\n")
    assert s.codes() == [250, 250, 250, 451]
    assert s.conn.state is State.RCPT


def test_message_rejected_by_application() -> None:
    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, MessageComplete):
            c.reject(Reply(code=554, status="5.7.1", text="spam"))
        else:
            c.accept()

    s = Session(decide=decide)
    s.take_wire()
    s.feed(TXN + b"DATA\r\n")
    s.feed(b"x\r\n.\r\n")
    assert s.replies()[-1] == (554, "5.7.1 spam")
    assert s.conn.state is State.READY


def test_streaming_content() -> None:
    s = in_rcpt(stream_content=True)
    content = b"".join(b"line %d\r\n" % i for i in range(500))
    s.feed(b"DATA\r\n")
    for i in range(0, len(content), 777):
        s.feed(content[i : i + 777])
    s.feed(b".\r\n")
    chunks = b"".join(e.data for e in s.of(MessageChunk))
    assert chunks == content
    (done,) = s.of(MessageComplete)
    assert done.data == b""
    assert done.size == len(content)


def test_eof_in_data_gives_no_message() -> None:
    s = in_rcpt()
    s.feed(b"DATA\r\n")
    events = s.feed(b"partial\r\n")
    events += s.feed(b"")
    assert [type(e) for e in events] == [ConnectionClosed]
    assert s.conn.closed


# --- BDAT (RFC 3030) ----------------------------------------------------------------------
def test_bdat_chunks() -> None:
    s = in_rcpt()
    events = s.feed(b"BDAT 5\r\nab\r\ncBDAT 4\r\n\r\n.\rBDAT 2 LAST\r\n\nzQUIT\r\n")
    (start,) = [e for e in events if isinstance(e, DataStarted)]
    assert start.bdat
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    assert done.data == b"ab\r\nc\r\n.\r\nz"  # no unstuffing; CR+LF split across chunks is fine
    assert s.codes() == [250, 250, 250, 221]


def test_bdat_zero_last() -> None:
    s = in_rcpt()
    s.feed(b"BDAT 3\r\nabcBDAT 0 LAST\r\n")
    (done,) = s.of(MessageComplete)
    assert done.data == b"abc"
    assert s.replies() == [(250, "2.0.0 3 octets received"),
                           (250, "2.0.0 Message accepted for delivery")]


def test_bdat_one_octet_at_a_time() -> None:
    s = in_rcpt()
    wire = b"BDAT 4 LAST\r\nx\r\nyNOOP\r\n"
    for i in range(len(wire)):
        s.feed(wire[i : i + 1])
    assert [e.data for e in s.of(MessageComplete)] == [b"x\r\ny"]
    assert s.codes() == [250, 250]


@pytest.mark.parametrize(
    ("chunks", "reply"),
    [
        ([b"a\nb"], Replies.CONTENT_BARE_LF),
        ([b"a\r", b"b"], Replies.CONTENT_BARE_CR),
        ([b"ab\r"], Replies.CONTENT_BARE_CR),
        ([b"a\x00"], Replies.CONTENT_NUL),
        ([b"z" * 1200], Replies.CONTENT_LINE_TOO_LONG),
        ([b"a\r\n" + b"z" * 1200], Replies.CONTENT_LINE_TOO_LONG),
    ],
)
def test_bdat_content_faults(chunks: list[bytes], reply: Reply) -> None:
    s = in_rcpt()
    wire = b"".join(
        b"BDAT %d%s\r\n" % (len(c), b" LAST" if i == len(chunks) - 1 else b"") + c
        for i, c in enumerate(chunks)
    )
    s.feed(wire)
    assert not s.of(MessageComplete)
    assert s.replies()[-1] == (reply.code, f"{reply.status} {reply.text}")
    assert s.conn.state is State.READY


def test_bdat_failed_chunk_fails_rest_of_transaction() -> None:
    s = in_rcpt(max_message_size=10)
    s.feed(b"BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 4\r\nabcdBDAT 2 LAST\r\nxyNOOP\r\n")
    assert s.codes() == [250, 552, 552, 552, 250]
    assert not s.of(MessageComplete)
    assert s.conn.state is State.READY


def test_bdat_bdat_normalize_across_chunks() -> None:
    s = in_rcpt(bare_newline="normalize")
    s.feed(b"BDAT 2\r\na\rBDAT 2 LAST\r\nb\r")
    (done,) = s.of(MessageComplete)
    assert done.data == b"a\r\nb\r\n"


@pytest.mark.parametrize("line", [b"BDAT\r\n", b"BDAT x\r\n", b"BDAT 5 FIRST\r\n", b"BDAT -1\r\n"])
def test_bdat_syntax_error_closes(line: bytes) -> None:
    s = in_rcpt()
    events = s.feed(line + b"abcde")
    # The chunk length is unknown: reply 501 and close (cannot resynchronise).
    assert s.replies() == [(501, "5.5.4 Syntax: BDAT chunk-size [LAST]")]
    assert isinstance(events[-1], ConnectionClosed)


def test_bdat_chunk_larger_than_maximum_closes() -> None:
    s = in_rcpt(max_message_size=1000)
    events = s.feed(b"BDAT 1001 LAST\r\n")
    assert s.codes() == [552]
    assert isinstance(events[-1], ConnectionClosed)


def test_bdat_not_offered() -> None:
    s = in_rcpt(chunking=False)
    s.feed(b"BDAT 3 LAST\r\nabcNOOP\r\n")
    assert s.codes() == [502, 250]


def test_data_during_bdat_is_503() -> None:
    s = in_rcpt()
    s.feed(b"BDAT 1\r\naDATA\r\nRCPT TO:<c@example.net>\r\nMAIL FROM:<>\r\nBDAT 1 LAST\r\nb")
    assert s.codes() == [250, 503, 503, 503, 250]
    assert [e.data for e in s.of(MessageComplete)] == [b"ab"]


def test_bdat_start_rejected_skips_chunk() -> None:
    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, DataStarted):
            c.reject(Reply(code=452, status="4.3.1", text="no space"))
        else:
            c.accept()

    s = Session(decide=decide)
    s.take_wire()
    s.feed(TXN + b"BDAT 3 LAST\r\nabcNOOP\r\n")
    assert s.codes() == [250, 250, 250, 452, 250]


def test_rset_during_bdat() -> None:
    s = in_rcpt()
    s.feed(b"BDAT 1\r\naRSET\r\nMAIL FROM:<>\r\n")
    assert s.codes() == [250, 250, 250]
    assert s.conn.state is State.MAIL


# --- command-line framing -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"NOOP\n", Replies.BARE_LF_REJECTED),
        (b"NO\rOP\r\n", Replies.BARE_CR_REJECTED),
        (b"NOOP\r\r\n", Replies.BARE_CR_REJECTED),
        (b"NO\x00OP\r\n", Replies.NUL_REJECTED),
        (b"\n", Replies.BARE_LF_REJECTED),
        (b"NOOP " + b"x" * 507 + b"\r\n", Replies.LINE_TOO_LONG),  # 513 octets
    ],
)
def test_bad_command_lines(wire: bytes, reply: Reply) -> None:
    s = ready()
    events = s.feed(wire + b"NOOP\r\n")
    assert isinstance(events[0], ProtocolViolation)
    err = events[0].as_error()
    assert isinstance(err, RemoteProtocolError)
    assert err.reply == reply
    assert events[0].reply == reply
    assert s.codes() == [500, 250]


def test_command_line_of_512_octets_is_accepted() -> None:
    s = ready()
    s.feed(b"NOOP " + b"x" * 505 + b"\r\n")  # RFC 5321 §4.5.3.1.4: 512 including CRLF
    assert s.codes() == [250]


def test_mail_line_gets_params_extra() -> None:
    s = ready()
    envid = b"E" * 100
    line = b"MAIL FROM:<" + b"a" * 60 + b"@" + b"b" * 60 + b".example> ENVID=" + envid
    line += b" " * 0
    s.feed(line + b"\r\n")
    assert s.codes() == [250]
    s.feed(b"RSET\r\nMAIL FROM:<a@example.org> ENVID=" + b"x" * 1100 + b"\r\n")
    assert s.codes() == [250, 500]


def test_overlong_line_is_discarded_with_bounded_memory() -> None:
    s = ready()
    for _ in range(100):
        s.feed(b"x" * 1000)
        assert s.conn.buffered <= 13_000
    events = s.feed(b"tail\r\nNOOP\r\n")
    assert [type(e) for e in events] == [ProtocolViolation, Noop]
    assert s.codes() == [500, 250]


def test_too_many_errors_421() -> None:
    s = ready(max_errors=3)
    events = s.feed(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert s.codes() == [500, 500, 500, 421]
    assert isinstance(events[-1], ConnectionClosed)
    assert s.conn.closed


# --- pipelining (RFC 2920) ------------------------------------------------------------------
SESSION = (
    b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
    b"RCPT TO:<c@example.net>\r\nBDAT 6\r\nhello\nBDAT 7 LAST\r\n world\n"
    b"MAIL FROM:<>\r\nRCPT TO:<d@example.net>\r\nBDAT 2 LAST\r\nokRSET\r\nNOOP\r\nQUIT\r\n"
)


def _summary(s: Session) -> list[str]:
    return [type(e).__name__ for e in s.events]


def test_pipelined_session_in_one_write_and_octet_by_octet_agree() -> None:
    whole = Session(bare_newline="normalize")
    whole.feed(SESSION)
    single = Session(bare_newline="normalize")
    for i in range(len(SESSION)):
        single.feed(SESSION[i : i + 1])
    assert _summary(whole) == _summary(single)
    assert whole.wire == single.wire
    assert [e.data for e in whole.of(MessageComplete)] == [b"hello\r\n world\r\n", b"ok"]
    assert [c for c, _ in parse_replies(whole.wire)] == [220] + [250] * 11 + [221]


# --- early talker ---------------------------------------------------------------------------
def test_early_talker_is_refused() -> None:
    s = Session(greet=False)
    events = s.feed(b"EHLO client.example\r\n")
    assert isinstance(events[0], ProtocolViolation)
    assert events[0].closing
    assert isinstance(events[-1], ConnectionClosed)
    assert s.replies() == [(554, "5.5.0 Protocol error: client sent data before the greeting")]
    with pytest.raises(LocalProtocolError):
        s.conn.greet()
    s.feed(b"more")  # ignored after close
    assert s.conn.next_event() == ConnectionClosed()


def test_no_bytes_before_greeting_is_fine() -> None:
    s = Session(greet=False)
    assert s.conn.next_event() is NEED_DATA
    s.conn.greet()
    s.feed(b"EHLO client.example\r\n")
    assert s.codes() == [220, 250]


# --- STARTTLS (RFC 3207) ---------------------------------------------------------------------
def test_starttls_discards_pipelined_plaintext() -> None:
    s = ready(tls_available=True)
    # CVE-2011-0411 / CVE-2024-34083: commands pipelined after STARTTLS must not run in TLS.
    events = s.feed(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<x@example.net>\r\n")
    assert [type(e) for e in events] == [StartTLSRequested]
    assert s.replies() == [(220, "2.0.0 Ready to start TLS")]
    assert s.conn.state is State.STARTTLS_PENDING
    s.feed(b"RSET\r\nMAIL FROM:<more@example.org>\r\n")  # still plaintext: dropped
    assert s.conn.next_event() is NEED_DATA
    s.conn.tls_established(tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")
    assert isinstance(s.conn.next_event(), TLSEstablished)
    assert s.conn.tls_active
    assert s.conn.tls_info == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    # RFC 3207 §4.2: the EHLO is forgotten; a MAIL now is out of sequence.
    assert s.conn.their_hostname is None
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    assert s.codes() == [503]
    assert not s.of(MailFrom)
    s.feed(b"EHLO client.example\r\n")
    kw = ehlo_keywords(s.take_wire())
    assert "STARTTLS" not in kw
    assert "REQUIRETLS" in kw
    assert "AUTH PLAIN LOGIN" in kw
    s.feed(b"STARTTLS\r\n")
    assert s.codes() == [503]


@pytest.mark.parametrize(
    ("config", "line", "code"),
    [
        ({}, b"STARTTLS\r\n", 502),
        ({"tls_available": True}, b"STARTTLS now\r\n", 501),
    ],
)
def test_starttls_refusals(config: dict[str, object], line: bytes, code: int) -> None:
    s = ready(**config)
    s.feed(line)
    assert s.codes() == [code]


def test_starttls_in_transaction_is_503() -> None:
    s = in_rcpt(tls_available=True)
    s.feed(b"STARTTLS\r\n")
    assert s.codes() == [503]


def test_starttls_rejected_stays_plaintext() -> None:
    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, StartTLSRequested):
            c.reject(Replies.TLS_NOT_AVAILABLE)
        else:
            c.accept()

    s = Session(decide=decide, tls_available=True)
    s.take_wire()
    s.feed(b"EHLO c.example\r\nSTARTTLS\r\nNOOP\r\n")
    assert s.codes() == [250, 454, 250]
    assert not s.conn.tls_active


def test_tls_established_out_of_sequence_is_local_error() -> None:
    s = ready(tls_available=True)
    with pytest.raises(LocalProtocolError):
        s.conn.tls_established(tls_version="TLSv1.3", cipher="x")


def test_require_tls_for_mail() -> None:
    s = ready(tls_available=True, require_tls_for_mail=True)
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    # RFC 3207 §4: "530 Must issue a STARTTLS command first".
    assert s.replies() == [(530, "5.7.0 Must issue a STARTTLS command first")]


# --- AUTH (RFC 4954, RFC 4616) ----------------------------------------------------------------
def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def tls_ready(**config: object) -> Session:
    return ready(tls_active=True, **config)


def test_auth_plain_initial_response() -> None:
    s = tls_ready()
    (auth,) = s.feed(b"AUTH PLAIN " + b64(b"\0j\xc3\xb6rg\0s3cret") + b"\r\n")
    assert auth == AuthRequested(mechanism="PLAIN", username="jörg", password="s3cret")
    assert "s3cret" not in repr(auth)
    assert s.replies() == [(235, "2.7.0 Authentication succeeded")]
    assert s.conn.authenticated == "jörg"
    s.feed(b"AUTH PLAIN " + b64(b"\0a\0b") + b"\r\n")
    assert s.codes() == [503]  # RFC 4954 §4: AUTH after AUTH


def test_auth_plain_with_authzid_and_challenge() -> None:
    s = tls_ready()
    assert s.feed(b"AUTH plain\r\n") == []
    assert s.take_wire() == b"334 \r\n"
    (auth,) = s.feed(b64(b"admin\0user\0pw") + b"\r\n")
    assert isinstance(auth, AuthRequested)
    assert auth.authzid == "admin"
    assert auth.username == "user"


def test_auth_login() -> None:
    s = tls_ready()
    s.feed(b"AUTH LOGIN\r\n")
    assert s.take_wire() == b"334 VXNlcm5hbWU6\r\n"
    s.feed(b64(b"user") + b"\r\n")
    assert s.take_wire() == b"334 UGFzc3dvcmQ6\r\n"
    (auth,) = s.feed(b64(b"pw") + b"\r\n")
    assert auth == AuthRequested(mechanism="LOGIN", username="user", password="pw")
    assert s.codes() == [235]


def test_auth_login_with_initial_response() -> None:
    s = tls_ready()
    s.feed(b"AUTH LOGIN " + b64(b"user") + b"\r\n")
    assert s.take_wire() == b"334 UGFzc3dvcmQ6\r\n"
    (auth,) = s.feed(b64(b"pw") + b"\r\n")
    assert isinstance(auth, AuthRequested)
    assert auth.username == "user"


@pytest.mark.parametrize(
    ("lines", "code", "status"),
    [
        ([b"AUTH PLAIN\r\n", b"*\r\n"], 501, "5.0.0"),  # RFC 4954 §4 cancel
        ([b"AUTH PLAIN\r\n", b"!!!\r\n"], 501, "5.5.2"),  # RFC 4954 §4 bad base64
        ([b"AUTH PLAIN !!!\r\n"], 501, "5.5.2"),
        ([b"AUTH PLAIN =\r\n"], 501, "5.5.2"),  # "=" is an empty response: malformed PLAIN
        ([b"AUTH PLAIN " + b64(b"user\0pw") + b"\r\n"], 501, "5.5.2"),
        ([b"AUTH PLAIN " + b64(b"\0\xff\0pw") + b"\r\n"], 501, "5.5.2"),
        ([b"AUTH LOGIN\r\n", b64(b"") + b"\r\n"], 501, "5.5.2"),
        ([b"AUTH LOGIN\r\n", b64(b"u") + b"\r\n", b64(b"\xff") + b"\r\n"], 501, "5.5.2"),
        ([b"AUTH CRAM-MD5\r\n"], 504, "5.5.4"),
        ([b"AUTH PLAIN\r\n", b"A" * 13000 + b"\r\n"], 500, "5.5.6"),  # RFC 4954 §4
        ([b"AUTH PLAIN\r\n", b"AA\nAA\r\n"], 500, "5.5.2"),
    ],
)
def test_auth_errors(lines: list[bytes], code: int, status: str) -> None:
    s = tls_ready()
    for line in lines:
        s.feed(line)
    replies = s.replies()
    assert (replies[-1][0], replies[-1][1].split()[0]) == (code, status)
    assert s.conn.state is State.READY
    assert s.conn.authenticated is None


def test_auth_before_tls_is_538() -> None:
    s = ready()
    s.feed(b"AUTH PLAIN\r\n")
    # RFC 4954 §6: 538 5.7.11 Encryption required for requested authentication mechanism.
    assert s.replies() == [(538, "5.7.11 Encryption required for requested authentication mechanism")]


def test_auth_not_configured_is_502() -> None:
    s = ready(tls_active=True, auth_mechanisms=())
    s.feed(b"AUTH PLAIN\r\n")
    assert s.codes() == [502]


def test_auth_in_transaction_is_503() -> None:
    s = in_rcpt(tls_active=True)
    s.feed(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n")
    assert s.codes() == [503]


def test_auth_failures_are_capped() -> None:
    s = Session(tls_active=True, max_auth_attempts=2,
                decide=lambda c, e: c.reject(Replies.AUTH_FAILED) if isinstance(e, AuthRequested) else c.accept())
    s.take_wire()
    s.feed(b"EHLO c.example\r\n")
    s.take_wire()
    line = b"AUTH PLAIN " + b64(b"\0u\0wrong") + b"\r\n"
    s.feed(line)
    assert s.replies() == [(535, "5.7.8 Authentication credentials invalid")]
    events = s.feed(line)
    assert s.codes() == [535, 421]
    assert isinstance(events[-1], ConnectionClosed)


def test_auth_reject_with_421_closes() -> None:
    s = Session(tls_active=True,
                decide=lambda c, e: c.reject(Replies.SHUTTING_DOWN) if isinstance(e, AuthRequested) else c.accept())
    s.take_wire()
    events = s.feed(b"EHLO c.example\r\nAUTH PLAIN " + b64(b"\0u\0p") + b"\r\n")
    assert s.codes() == [250, 421]
    assert isinstance(events[-1], ConnectionClosed)


def test_generic_sasl_mechanism() -> None:
    challenges: list[bytes] = []

    def decide(c: ServerConnection, e: Event) -> None:
        if isinstance(e, AuthRequested):
            assert e.mechanism == "X-TEST"
            assert e.initial_response == b""
            c.auth_challenge(b"nonce")
            challenges.append(b"nonce")
        elif isinstance(e, AuthResponse):
            if e.data == b"again":
                c.auth_challenge(b"more")
            else:
                c.accept(identity="alice")
        else:
            c.accept()

    s = Session(tls_active=True, auth_mechanisms=("X-TEST",), decide=decide)
    s.take_wire()
    s.feed(b"EHLO c.example\r\nAUTH X-TEST =\r\n")
    assert s.replies()[-1] == (334, base64.b64encode(b"nonce").decode())
    s.feed(b64(b"again") + b"\r\n")
    assert s.replies() == [(334, base64.b64encode(b"more").decode())]
    s.feed(b64(b"final") + b"\r\n")
    assert s.codes() == [235]
    assert s.conn.authenticated == "alice"


def test_require_auth_for_mail() -> None:
    s = ready(tls_active=True, require_auth_for_mail=True)
    s.feed(b"MAIL FROM:<a@example.org>\r\n")
    assert s.replies() == [(530, "5.7.0 Authentication required")]
    s.feed(b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\nMAIL FROM:<a@example.org>\r\n")
    assert s.codes() == [235, 250]


# --- API misuse is a LocalProtocolError ---------------------------------------------------------
def test_next_event_while_decision_pending() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.example"))
    conn.greet()
    conn.receive_data(b"EHLO c.example\r\n")
    ev = conn.next_event()
    assert isinstance(ev, Ehlo)
    assert conn.pending == ev
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.accept(Reply(code=250, status=None, text="custom"))  # EHLO reply is the engine's
    conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.reject(Replies.BAD_SEQUENCE)
    conn.receive_data(b"MAIL FROM:<a@example.org>\r\n")
    assert isinstance(conn.next_event(), MailFrom)
    with pytest.raises(LocalProtocolError):
        conn.reject(Replies.OK)
    with pytest.raises(LocalProtocolError):
        conn.accept(Replies.BAD_SEQUENCE)
    with pytest.raises(LocalProtocolError):
        conn.auth_challenge(b"x")
    conn.accept()


def test_send_only_421_and_close() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.example"))
    conn.greet()
    conn.data_to_send()
    with pytest.raises(LocalProtocolError):
        conn.send(Replies.OK)
    conn.send(Replies.SHUTTING_DOWN)
    assert conn.closed
    assert conn.data_to_send() == b"421 4.3.2 Service not available, closing transmission channel\r\n"
    conn.close()  # idempotent
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_close_without_reply_during_decision() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.example"))
    conn.greet()
    conn.receive_data(b"EHLO c.example\r\n")
    conn.next_event()
    conn.close(None)
    assert conn.pending is None
    assert conn.closed
    assert isinstance(conn.next_event(), ConnectionClosed)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": ""}, {"hostname": "a b"}, {"hostname": "mx.example", "max_errors": 0},
        {"hostname": "mx.example", "max_text_line": 999},
        {"hostname": "mx.example", "bare_newline": "accept"},
        {"hostname": "mx.example", "auth_mechanisms": ("plain",)},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)  # type: ignore[arg-type]
