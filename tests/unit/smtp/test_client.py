"""Tests of the sans-IO SMTP client engine (mailmoat.smtp.client).

Server replies here are written by hand from RFC 5321 §4.2 / RFC 2034 / RFC 4954 examples;
expected command bytes come from the RFC grammar (and the RFC 4954 §4 AUTH PLAIN example).
The loop-back tests at the end drive the client against the server engine in memory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest

from mailmoat.errors import LocalProtocolError, RemoteProtocolError
from mailmoat.smtp._abnf import Address
from mailmoat.smtp.client import (
    AuthChallenge,
    ClientConnection,
    CommandReply,
    EhloResponse,
    Greeting,
    normalize_line_endings,
)
from mailmoat.smtp.replies import Reply

EHLO_FULL = (
    b"250-mx.example.net Hello client.example.org\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-ETRN\r\n"
    b"250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-AUTH=PLAIN LOGIN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n"
    b"250-DSN\r\n"
    b"250-SMTPUTF8\r\n"
    b"250 CHUNKING\r\n"
)
EHLO_PLAIN = b"250-mx.example.net\r\n250 SIZE 1000\r\n"


def greeted() -> ClientConnection:
    conn = ClientConnection()
    assert conn.receive_data(b"220 mx.example.net ESMTP ready\r\n") == [
        Greeting(reply=Reply(code=220, status=None, text="mx.example.net ESMTP ready"))
    ]
    return conn


def ready(ehlo_reply: bytes = EHLO_FULL) -> ClientConnection:
    conn = greeted()
    assert conn.ehlo("client.example.org") == b"EHLO client.example.org\r\n"
    events = conn.receive_data(ehlo_reply)
    assert len(events) == 1
    assert isinstance(events[0], EhloResponse)
    return conn


def extensions_of(conn: ClientConnection) -> Mapping[str, str] | None:
    return conn.extensions  # a call, so that mypy does not keep an earlier narrowing


def one(conn: ClientConnection, data: bytes) -> CommandReply:
    events = conn.receive_data(data)
    assert len(events) == 1
    assert isinstance(events[0], CommandReply)
    return events[0]


# --- reply parsing -----------------------------------------------------------------------
def test_ehlo_extensions_are_parsed() -> None:
    conn = greeted()
    conn.ehlo("client.example.org")
    [event] = conn.receive_data(EHLO_FULL)
    assert isinstance(event, EhloResponse)
    assert event.domain == "mx.example.net"
    assert dict(event.extensions) == {
        "PIPELINING": "", "SIZE": "10240000", "ETRN": "", "STARTTLS": "",
        "AUTH": "PLAIN LOGIN", "ENHANCEDSTATUSCODES": "", "8BITMIME": "", "DSN": "",
        "SMTPUTF8": "", "CHUNKING": "",
    }  # the obsolete "AUTH=PLAIN LOGIN" line is not an ehlo-line (RFC 5321 §4.1.1.1)
    assert event.reply.code == 250
    assert event.reply.status is None  # RFC 2034 §3: no status on EHLO replies
    assert conn.pipelining
    assert conn.extensions == event.extensions


def test_replies_split_anywhere_give_the_same_events() -> None:
    whole = ready()
    whole.mail("a@example.org")
    expected = whole.receive_data(b"250-2.1.0 first\r\n250 2.1.0 Sender ok\r\n")
    split = ready()
    split.mail("a@example.org")
    got = []
    for byte in b"250-2.1.0 first\r\n250 2.1.0 Sender ok\r\n":
        got += split.receive_data(bytes([byte]))
    assert got == expected == [
        CommandReply(command="MAIL", reply=Reply(code=250, status="2.1.0", text="first\nSender ok"))
    ]


def test_enhanced_status_only_when_advertised() -> None:
    conn = ready(EHLO_PLAIN)
    conn.mail("a@example.org")
    assert one(conn, b"250 2.1.0 Ok\r\n").reply == Reply(code=250, status=None, text="2.1.0 Ok")


def test_status_of_the_wrong_class_is_left_in_the_text() -> None:
    conn = ready()
    conn.mail("a@example.org")
    assert one(conn, b"550 2.1.0 odd\r\n").reply == Reply(code=550, status=None, text="2.1.0 odd")


def test_reply_without_text_and_continuation_without_text() -> None:
    conn = ready()
    conn.noop()
    assert one(conn, b"250-\r\n250\r\n").reply == Reply(code=250, status=None, text="\n")


def test_non_text_characters_are_replaced() -> None:
    conn = ready(EHLO_PLAIN)
    conn.noop()
    reply = one(conn, b"250 caf\xc3\xa9\x01\tok\r\n").reply
    assert reply.text == "caf???\tok"


@pytest.mark.parametrize(
    "bad",
    [
        b"2x0 ok\r\n",
        b"250x\r\n",
        b"25\r\n",
        b"600 too high\r\n",
        b"199 too low\r\n",
        b"260 second digit 6\r\n",
        b"250-one\r\n251 two\r\n",
        b"250 bare lf\n",
        b"250 bare\rcr\r\n",
        b"\r\n",
    ],
)
def test_malformed_replies_are_remote_errors(bad: bytes) -> None:
    conn = ready()
    conn.noop()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(bad)


def test_reply_bounds() -> None:
    conn = ClientConnection(max_reply_line=100, max_reply_lines=3)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        conn.receive_data(b"220 " + b"x" * 200)  # no CRLF yet: the buffer is bounded too
    conn = ClientConnection(max_reply_line=100, max_reply_lines=3)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        conn.receive_data(b"220 " + b"x" * 100 + b"\r\n")
    conn = ClientConnection(max_reply_line=100, max_reply_lines=3)
    with pytest.raises(RemoteProtocolError, match="3 lines"):
        conn.receive_data(b"220-a\r\n220-b\r\n220-c\r\n220-d\r\n")
    conn = ClientConnection(max_reply_line=100, max_reply_lines=3)
    assert len(conn.receive_data(b"220-a\r\n220-b\r\n220 " + b"c" * 94 + b"\r\n")) == 1


def test_greeting_variants() -> None:
    refused = ClientConnection()
    [event] = refused.receive_data(b"554 5.7.1 go away\r\n")
    assert isinstance(event, Greeting)
    with pytest.raises(LocalProtocolError):
        refused.ehlo("client.example.org")
    assert refused.quit() == b"QUIT\r\n"
    busy = ClientConnection()
    busy.receive_data(b"421 busy\r\n")
    assert busy.closed
    odd = ClientConnection()
    with pytest.raises(RemoteProtocolError):
        odd.receive_data(b"250 hello\r\n")


def test_nothing_is_sent_before_the_greeting() -> None:
    with pytest.raises(LocalProtocolError, match="greeting"):
        ClientConnection().ehlo("client.example.org")


def test_unsolicited_replies() -> None:
    conn = ready()
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        conn.receive_data(b"250 surprise\r\n")
    conn = ready()
    assert conn.receive_data(b"421 4.4.2 timeout\r\n") == [
        CommandReply(command=None, reply=Reply(code=421, status="4.4.2", text="timeout"))
    ]
    assert conn.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.noop()
    assert conn.receive_data(b"anything") == []


def test_421_voids_every_pending_command() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    [event] = conn.receive_data(b"421 4.3.2 shutting down\r\n")
    assert isinstance(event, CommandReply)
    assert event.command == "MAIL"
    assert conn.closed
    assert conn.pending == ()


def test_intermediate_reply_to_the_wrong_command() -> None:
    conn = ready()
    conn.mail("a@example.org")
    with pytest.raises(RemoteProtocolError, match="354"):
        conn.receive_data(b"354 go ahead\r\n")


# --- commands and injection ----------------------------------------------------------------
def test_command_bytes() -> None:
    conn = ready()
    assert conn.mail("a@example.org", [("SIZE", "100"), ("BODY", "8BITMIME")]) == (
        b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n"
    )
    assert conn.rcpt("b@example.net", [("NOTIFY", "SUCCESS,FAILURE")]) == (
        b"RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE\r\n"
    )
    assert conn.rcpt("Postmaster") == b"RCPT TO:<Postmaster>\r\n"
    assert conn.data() == b"DATA\r\n"


def test_null_reverse_path_and_address_values() -> None:
    conn = ready()
    assert conn.mail(None) == b"MAIL FROM:<>\r\n"
    quoted = Address(local_part="john doe", domain="example.net", raw=b"", is_utf8=False)
    assert conn.rcpt(quoted) == b'RCPT TO:<"john doe"@example.net>\r\n'


@pytest.mark.parametrize(
    "evil",
    [
        "a@example.org>\r\nRCPT TO:<victim@example.net",
        "a@example.org\nDATA",
        "a@exa\rmple.org",
        "a\0@example.org",
    ],
)
def test_addresses_with_cr_lf_nul_are_refused(evil: str) -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="injection"):
        conn.mail(evil)
    conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError, match="injection"):
        conn.rcpt(evil)
    assert conn.pending == ("MAIL",)


@pytest.mark.parametrize(
    "params",
    [
        [("SIZE", "1\r\nRCPT TO:<x@y>")],
        [("SIZE\n", "1")],
        [("ENVID", "a\0b")],
    ],
)
def test_parameters_with_cr_lf_nul_are_refused(params: list[tuple[str, str | None]]) -> None:
    with pytest.raises(LocalProtocolError, match="injection"):
        ready().mail("a@example.org", params)


def test_ehlo_name_injection_and_grammar() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="injection"):
        conn.ehlo("client.example.org\r\nMAIL FROM:<a@b>")
    with pytest.raises(LocalProtocolError):
        conn.ehlo("bad_name")
    with pytest.raises(LocalProtocolError):
        conn.helo("[192.0.2.1]")  # helo = "HELO" SP Domain CRLF
    assert conn.ehlo("[192.0.2.1]") == b"EHLO [192.0.2.1]\r\n"


@pytest.mark.parametrize("bad", ["no-at-sign", "a@b@c", "a..b@example.org", "<a@example.org>", ""])
def test_addresses_outside_the_grammar_are_refused(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        ready().mail(bad)


def test_parameters_that_do_not_survive_the_grammar() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org", [("ENVID", "two words")])
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org", [("SIZE", "1"), ("SIZE", "2")])
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org", [("SIZE", "")])


def test_parameters_need_their_extension() -> None:
    conn = ready(EHLO_PLAIN)
    assert conn.mail("a@example.org", [("SIZE", "10")]) == b"MAIL FROM:<a@example.org> SIZE=10\r\n"
    conn = ready(EHLO_PLAIN)
    for params in ([("BODY", "8BITMIME")], [("SMTPUTF8", None)], [("RET", "HDRS")], [("X-NEW", None)]):
        with pytest.raises(LocalProtocolError, match="not advertised"):
            conn.mail("a@example.org", params)
    conn = ready()
    with pytest.raises(LocalProtocolError, match="BINARYMIME"):
        conn.mail("a@example.org", [("BODY", "BINARYMIME")])


def test_utf8_addresses_need_smtputf8() -> None:
    conn = ready(EHLO_PLAIN)
    with pytest.raises(LocalProtocolError):
        conn.mail("ü@example.org")
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.mail("ü@example.org")  # RFC 6531 §3.4: the SMTPUTF8 parameter is required
    assert conn.mail("ü@bücher.example", [("SMTPUTF8", None)]) == (
        "MAIL FROM:<ü@bücher.example> SMTPUTF8\r\n".encode()
    )
    assert conn.rcpt("ö@example.net") == "RCPT TO:<ö@example.net>\r\n".encode()
    conn = ready()
    conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError):
        conn.rcpt("ö@example.net")  # the transaction is not SMTPUTF8


def test_helo_fallback_has_no_extensions() -> None:
    conn = greeted()
    conn.ehlo("client.example.org")
    assert one(conn, b"502 5.5.1 EHLO not implemented\r\n").command == "EHLO"
    assert conn.extensions is None
    with pytest.raises(LocalProtocolError, match="EHLO or HELO"):
        conn.mail("a@example.org")
    assert conn.helo("client.example.org") == b"HELO client.example.org\r\n"
    assert one(conn, b"250 mx.example.net\r\n").command == "HELO"
    assert extensions_of(conn) == {}
    with pytest.raises(LocalProtocolError, match="not advertised"):
        conn.mail("a@example.org", [("SIZE", "1")])
    assert conn.mail("a@example.org") == b"MAIL FROM:<a@example.org>\r\n"


# --- sequencing and pipelining -------------------------------------------------------------
def test_without_pipelining_one_command_at_a_time() -> None:
    conn = ready(EHLO_PLAIN)
    conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.rcpt("b@example.net")
    one(conn, b"250 ok\r\n")
    conn.rcpt("b@example.net")


def test_pipelining_groups_mail_rcpt_data() -> None:
    conn = ready()
    group = conn.mail("a@example.org") + conn.rcpt("b@example.net") + conn.rcpt("c@example.net")
    group += conn.data()
    assert group == (
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
        b"RCPT TO:<c@example.net>\r\nDATA\r\n"
    )
    # RFC 2920 §3.1: DATA is the last command of a group.
    with pytest.raises(LocalProtocolError, match="DATA"):
        conn.rset()
    events = conn.receive_data(
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n"
    )
    assert [(e.command, e.reply.code) for e in events if isinstance(e, CommandReply)] == [
        ("MAIL", 250), ("RCPT", 250), ("RCPT", 550), ("DATA", 354)
    ]
    # Content may be the first "command" of a group: MAIL can follow it at once.
    payload = conn.send_message(b"Subject: x\r\n\r\nhi\r\n") + conn.mail("d@example.org")
    assert payload == b"Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<d@example.org>\r\n"
    events = conn.receive_data(b"250 2.0.0 queued\r\n250 2.1.0 ok\r\n")
    assert [e.command for e in events if isinstance(e, CommandReply)] == ["MESSAGE", "MAIL"]
    assert conn.rcpt("e@example.net") == b"RCPT TO:<e@example.net>\r\n"  # new transaction open


@pytest.mark.parametrize("blocker", ["ehlo", "noop", "starttls", "quit"])
def test_last_in_group_commands_block(blocker: str) -> None:
    conn = ready()
    if blocker == "ehlo":
        conn.ehlo("client.example.org")
    else:
        getattr(conn, blocker)()
    with pytest.raises(LocalProtocolError, match="reply"):
        conn.rset()


def test_transaction_order_is_enforced() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="MAIL first"):
        conn.rcpt("b@example.net")
    with pytest.raises(LocalProtocolError, match="MAIL and RCPT"):
        conn.data()
    with pytest.raises(LocalProtocolError, match="354"):
        conn.send_message(b"x")
    conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError, match="transaction is open"):
        conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError, match="MAIL and RCPT"):
        conn.data()


def test_refused_mail_ends_the_transaction() -> None:
    conn = ready()
    conn.mail("a@example.org")
    one(conn, b"550 5.7.1 sender refused\r\n")
    with pytest.raises(LocalProtocolError, match="MAIL first"):
        conn.rcpt("b@example.net")


def test_data_after_every_recipient_refused_is_our_error() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.receive_data(b"250 ok\r\n550 5.1.1 no\r\n")
    with pytest.raises(LocalProtocolError, match="no recipient"):
        conn.data()
    assert conn.rset() == b"RSET\r\n"


def test_data_refused_then_rset() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    conn.receive_data(b"250 ok\r\n250 ok\r\n554 5.5.1 no valid recipients\r\n")
    with pytest.raises(LocalProtocolError, match="354"):
        conn.send_message(b"x")
    conn.rset()


def test_late_354_after_refused_mail_still_wants_content() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    conn.receive_data(b"550 no\r\n503 no\r\n354 go ahead anyway\r\n")
    assert conn.send_message(b"") == b".\r\n"


def test_content_phase_blocks_commands() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    with pytest.raises(LocalProtocolError, match="content"):
        conn.quit()


# --- message content -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"a\nb\r.c\r\n.d\n..e", b"a\r\nb\r\n..c\r\n..d\r\n...e\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"", b".\r\n"),
        (b"x\r\n", b"x\r\n.\r\n"),
        (b"x", b"x\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"x\n.\nMAIL FROM:<evil@example>\n", b"x\r\n..\r\nMAIL FROM:<evil@example>\r\n.\r\n"),
        (b"x\r\n.\rMAIL", b"x\r\n..\r\nMAIL\r\n.\r\n"),
    ],
)
def test_send_message_normalises_and_dot_stuffs(message: bytes, wire: bytes) -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    payload = conn.send_message(message)
    assert payload == wire
    # RFC 5321 §4.1.1.4: the only end-of-data sequence is the one we append.
    assert payload.count(b"\r\n.\r\n") + payload.startswith(b".\r\n") == 1


def test_normalize_line_endings() -> None:
    assert normalize_line_endings(b"a\rb\nc\r\nd\n\re") == b"a\r\nb\r\nc\r\nd\r\n\r\ne"


def test_bdat() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    assert conn.bdat(b"hello\r\n") == b"BDAT 7\r\nhello\r\n"
    assert conn.bdat(b".\r\n", last=True) == b"BDAT 3 LAST\r\n.\r\n"
    events = conn.receive_data(b"250 ok\r\n250 ok\r\n250 2.0.0 7 octets\r\n250 2.0.0 queued\r\n")
    assert [e.command for e in events if isinstance(e, CommandReply)] == [
        "MAIL", "RCPT", "BDAT", "BDAT"
    ]
    with pytest.raises(LocalProtocolError, match="MAIL first"):
        conn.rcpt("c@example.net")


def test_bdat_needs_chunking_and_stops_after_a_refusal() -> None:
    conn = ready(EHLO_PLAIN)
    conn.mail("a@example.org")
    one(conn, b"250 ok\r\n")
    conn.rcpt("b@example.net")
    one(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.bdat(b"x")
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.bdat(b"x")
    conn.receive_data(b"250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n")
    with pytest.raises(LocalProtocolError, match="RFC 3030"):
        conn.bdat(b"y", last=True)
    with pytest.raises(LocalProtocolError, match="content has already started"):
        conn.data()
    conn.rset()


# --- STARTTLS ----------------------------------------------------------------------------
def test_starttls_forgets_extensions_and_needs_ehlo() -> None:
    conn = ready()
    assert conn.starttls() == b"STARTTLS\r\n"
    one(conn, b"220 2.0.0 Ready to start TLS\r\n")
    assert conn.awaiting_tls
    with pytest.raises(LocalProtocolError, match="TLS handshake"):
        conn.ehlo("client.example.org")
    conn.tls_established()
    assert conn.tls_active
    assert conn.extensions is None
    with pytest.raises(LocalProtocolError, match="EHLO or HELO"):
        conn.mail("a@example.org")
    conn.ehlo("client.example.org")
    conn.receive_data(b"250-mx.example.net\r\n250 AUTH PLAIN\r\n")
    with pytest.raises(LocalProtocolError, match="already active"):
        conn.starttls()


def test_starttls_response_injection_is_refused() -> None:
    # CVE-2011-0411 class: a man in the middle appends a reply to the cleartext 220.
    conn = ready()
    conn.starttls()
    with pytest.raises(RemoteProtocolError, match="STARTTLS"):
        conn.receive_data(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    conn = ready()
    conn.starttls()
    conn.receive_data(b"220 go ahead\r\n")
    with pytest.raises(RemoteProtocolError, match="STARTTLS"):
        conn.receive_data(b"250 injected later\r\n")


def test_starttls_must_be_advertised_and_outside_a_transaction() -> None:
    with pytest.raises(LocalProtocolError, match="not advertised"):
        ready(EHLO_PLAIN).starttls()
    conn = ready()
    conn.mail("a@example.org")
    one(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="transaction"):
        conn.starttls()
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        conn.tls_established()


def test_starttls_refused_keeps_the_session() -> None:
    conn = ready()
    conn.starttls()
    one(conn, b"454 4.7.0 TLS not available\r\n")
    assert not conn.awaiting_tls
    assert conn.mail("a@example.org") == b"MAIL FROM:<a@example.org>\r\n"


# --- AUTH --------------------------------------------------------------------------------
def test_auth_plain_matches_rfc_4954_example() -> None:
    conn = ready()
    # RFC 4954 §4 example: "C: AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=" (authzid "test",
    # authcid "test", password "1234").
    assert conn.auth_plain("test", "1234", authzid="test") == b"AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=\r\n"
    with pytest.raises(LocalProtocolError, match="AUTH exchange"):
        conn.mail("a@example.org")
    assert one(conn, b"235 2.7.0 Authentication successful\r\n").reply.code == 235
    with pytest.raises(LocalProtocolError, match="already authenticated"):
        conn.auth_plain("test", "1234")


def test_auth_plain_answers_an_empty_challenge_once() -> None:
    conn = ready()
    first = conn.auth_plain("user", "pass")
    [event] = conn.receive_data(b"334 \r\n")
    assert event == AuthChallenge(reply=Reply(code=334, status=None, text=""), challenge=b"")
    assert conn.auth_response() == first.removeprefix(b"AUTH PLAIN ")
    conn.receive_data(b"334 \r\n")
    assert conn.auth_response() == b"*\r\n"
    assert one(conn, b"501 5.0.0 cancelled\r\n").command == "AUTH"


def test_auth_login_dialogue() -> None:
    conn = ready()
    assert conn.auth_login("user", "pa ss") == b"AUTH LOGIN\r\n"
    [event] = conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert isinstance(event, AuthChallenge)
    assert event.challenge == b"Username:"
    assert conn.auth_response() == base64.b64encode(b"user") + b"\r\n"
    [event] = conn.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    assert isinstance(event, AuthChallenge)
    assert event.challenge == b"Password:"
    assert conn.auth_response() == base64.b64encode(b"pa ss") + b"\r\n"
    assert one(conn, b"235 2.7.0 ok\r\n").command == "AUTH"
    with pytest.raises(LocalProtocolError):
        conn.auth_response()


def test_auth_failure_allows_another_try_and_cancel() -> None:
    conn = ready()
    conn.auth_login("user", "pass")
    conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert conn.auth_cancel() == b"*\r\n"
    one(conn, b"501 5.0.0 cancelled\r\n")
    with pytest.raises(LocalProtocolError):
        conn.auth_cancel()
    conn.auth_plain("user", "pass")
    one(conn, b"535 5.7.8 bad credentials\r\n")
    conn.auth_plain("user", "right")


def test_auth_guards() -> None:
    with pytest.raises(LocalProtocolError, match="not advertised"):
        ready(EHLO_PLAIN).auth_plain("u", "p")
    with pytest.raises(LocalProtocolError, match="not advertised"):
        ready(b"250-mx\r\n250 AUTH LOGIN\r\n").auth_plain("u", "p")
    with pytest.raises(LocalProtocolError, match="NUL"):
        ready().auth_plain("u\0x", "p")
    with pytest.raises(LocalProtocolError, match="injection"):
        ready().auth_login("u\r\nMAIL FROM:<a@b>", "p")
    with pytest.raises(LocalProtocolError, match="username and a password"):
        ready().auth_plain("", "p")
    with pytest.raises(LocalProtocolError, match="too long"):
        ready().auth_plain("u", "p" * 12000)
    conn = ready()
    conn.mail("a@example.org")
    one(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="transaction"):
        conn.auth_plain("u", "p")
    with pytest.raises(LocalProtocolError):
        conn.auth_response()


def test_undecodable_challenge_is_empty() -> None:
    conn = ready()
    conn.auth_login("u", "p")
    [event] = conn.receive_data(b"334 not*base64\r\n")
    assert isinstance(event, AuthChallenge)
    assert event.challenge == b""


# --- QUIT --------------------------------------------------------------------------------
def test_quit_closes() -> None:
    conn = ready()
    assert conn.quit() == b"QUIT\r\n"
    assert one(conn, b"221 2.0.0 bye\r\n").command == "QUIT"
    assert conn.closed


def test_command_line_length_is_bounded() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match="too long"):
        conn.mail("a@example.org", [("ENVID", "v" * 1000)])
    assert conn.mail("a@example.org", [("ENVID", "v" * 100)]).startswith(b"MAIL FROM:")


def test_rcpt_after_a_bdat_chunk_is_refused() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.bdat(b"x")
    with pytest.raises(LocalProtocolError, match="content has started"):
        conn.rcpt("c@example.net")


def test_refused_mail_then_refused_data_in_one_group() -> None:
    conn = ready()
    conn.mail("a@example.org")
    conn.rcpt("b@example.net")
    conn.data()
    events = conn.receive_data(b"550 no\r\n503 no\r\n503 no\r\n")
    assert [e.command for e in events if isinstance(e, CommandReply)] == ["MAIL", "RCPT", "DATA"]
    assert conn.mail("c@example.org") == b"MAIL FROM:<c@example.org>\r\n"
