"""Interop: ``send_message`` out to Postfix's ``smtpd`` (a private instance on loopback).

Postfix is the independent judge: it offers PIPELINING, CHUNKING, SIZE, SMTPUTF8 and
STARTTLS; what it delivers into its Maildir must end with the message we sent, and the
Received field it writes records the TLS version and cipher *it* saw, which must equal what
our client reports. Its queue id appears in that Received field too ("with ESMTPS id X").
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postfix_smtpd_fixture import PostfixSMTPD

from conftest import missing, require_peer
from mailmoat.net.smtp_client import SendError, SendResult, Timeouts, probe, send_message

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(120)
FAST = Timeouts.uniform(20)


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def postfix(ca: Any) -> Iterator[PostfixSMTPD]:
    program = require_peer("postfix")
    if os.geteuid() != 0:
        missing("a private Postfix instance needs root")
    cert = ca.issue_cert("localhost")
    server = PostfixSMTPD(
        program, cert_pem=cert.private_key_and_cert_chain_pem.bytes(),
        key_pem=cert.private_key_pem.bytes(), size_limit=4_000_000,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _delivered(postfix: PostfixSMTPD, marker: bytes) -> bytes:
    """The one delivered message containing ``marker`` (Maildir files use LF)."""
    for count in range(1, 200):
        found = [m for m in postfix.messages(count) if marker in m]
        if found:
            [message] = found
            return message
    raise AssertionError("not delivered")


def _message(marker: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.net\r\nSubject: {marker}\r\n"
        f"Date: Sat, 28 Nov 2026 21:00:00 +0000\r\nMessage-ID: <{marker}@example.org>\r\n\r\n"
    ).encode() + body


async def _send(postfix: PostfixSMTPD, cafile: Path, message: bytes, **kwargs: Any) -> SendResult:
    options: dict[str, Any] = {
        "mail_from": "a@example.org", "rcpt_to": ["b@example.net"], "host": "127.0.0.1",
        "port": postfix.port, "server_name": "localhost", "cafile": cafile, "timeouts": FAST,
        "helo": "client.example.org",
    }
    options.update(kwargs)
    return await send_message(message, **options)


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_starttls_message_arrives_and_postfix_saw_the_same_tls(
    postfix: PostfixSMTPD, cafile: Path, chunking: bool
) -> None:
    marker = uuid.uuid4().hex
    body = b".\r\n..two dots\r\n.\r\nend\r\n"
    message = _message(marker, body)
    result = await _send(postfix, cafile, message, chunking=chunking)
    assert result.used_bdat is chunking
    assert result.used_pipelining  # Postfix offers PIPELINING
    tls = result.session.tls
    assert tls is not None
    assert tls.verified
    delivered = _delivered(postfix, marker.encode())
    assert _lf(delivered).endswith(_lf(message))
    # Postfix's own record of the hop (smtpd_tls_received_header = yes).
    received = re.search(rb"Received: .*?;", delivered, re.DOTALL)
    assert received is not None
    text = received.group(0).decode()
    assert f"using {tls.version} with cipher {tls.cipher} ({tls.bits}/{tls.bits} bits)" in text
    assert "with ESMTPS id" in text
    assert result.queue_id is not None
    assert f"id {result.queue_id}" in text  # the queue id we parsed is Postfix's


async def test_partial_refusal_with_pipelining(postfix: PostfixSMTPD, cafile: Path) -> None:
    marker = uuid.uuid4().hex
    result = await _send(
        postfix, cafile, _message(marker),
        rcpt_to=["x@other.example", "b@example.net", "y@other.example"],
    )
    assert result.accepted == ("b@example.net",)
    assert [(r.address, r.reply.code, r.reply.status) for r in result.refused] == [
        ("x@other.example", 554, "5.7.1"), ("y@other.example", 554, "5.7.1"),
    ]
    delivered = _delivered(postfix, marker.encode())
    assert b"Delivered-To: b@example.net" in delivered


async def test_relay_refused_everywhere(postfix: PostfixSMTPD, cafile: Path) -> None:
    with pytest.raises(SendError) as info:
        await _send(postfix, cafile, _message("relay"), rcpt_to=["x@other.example"])
    assert info.value.stage == "rcpt"
    assert not info.value.temporary
    assert info.value.reply is not None
    assert info.value.reply.code == 554


async def test_large_message_in_several_bdat_chunks(postfix: PostfixSMTPD, cafile: Path) -> None:
    marker = uuid.uuid4().hex
    body = b"".join(b"%06d " % i + b"z" * 70 + b"\r\n" for i in range(30_000))  # ~2.3 MB
    message = _message(marker, body)
    result = await _send(postfix, cafile, message)
    assert result.used_bdat
    assert _lf(_delivered(postfix, marker.encode())).endswith(_lf(message))


async def test_size_limit_refused_before_sending(postfix: PostfixSMTPD, cafile: Path) -> None:
    with pytest.raises(SendError) as info:
        await _send(postfix, cafile, _message("big", b"x" * 998 + b"\r\n") * 5000)
    assert info.value.stage == "size"
    assert "4000000" in str(info.value)  # Postfix's advertised SIZE


async def test_smtputf8(postfix: PostfixSMTPD, cafile: Path) -> None:
    marker = uuid.uuid4().hex
    message = f"Subject: {marker} café\r\nFrom: jöran@bücher.example\r\n\r\nx\r\n".encode()
    result = await _send(postfix, cafile, message, mail_from="jöran@bücher.example",
                         rcpt_to=["bjørn@example.net"])
    assert result.accepted == ("bjørn@example.net",)
    delivered = _delivered(postfix, marker.encode())
    assert "Return-Path: <jöran@bücher.example>".encode() in delivered
    assert "Delivered-To: bjørn@example.net".encode() in delivered


async def test_no_verify_still_reports_the_certificate(postfix: PostfixSMTPD) -> None:
    result = await send_message(
        _message("noverify"), mail_from="a@example.org", rcpt_to="b@example.net",
        host="127.0.0.1", port=postfix.port, verify=False, timeouts=FAST,
    )
    tls = result.session.tls
    assert tls is not None
    assert not tls.verified
    assert "localhost" in tls.san
    assert tls.verify_error is not None
    assert "verification disabled" in tls.verify_error


async def test_wrong_name_fails_verification(postfix: PostfixSMTPD, cafile: Path) -> None:
    with pytest.raises(SendError) as info:
        await _send(postfix, cafile, _message("wrongname"), server_name="mx.example.com")
    assert info.value.stage == "tls"
    assert "Hostname mismatch" in str(info.value)


async def test_probe_postfix(postfix: PostfixSMTPD, cafile: Path) -> None:
    session = await probe("127.0.0.1", port=postfix.port, server_name="localhost",
                          cafile=cafile, timeouts=FAST)
    assert session.greeting is not None
    assert session.greeting.text == "postfix.test ESMTP Postfix"  # smtpd_banner in main.cf
    assert session.ehlo_before_tls is not None
    assert "STARTTLS" in session.ehlo_before_tls
    assert session.ehlo_after_tls is not None
    assert {"PIPELINING", "CHUNKING", "SMTPUTF8"} <= set(session.ehlo_after_tls)
    assert session.ehlo_after_tls["SIZE"] == "4000000"  # message_size_limit in main.cf
    assert session.tls is not None
    assert session.tls.verify_error is not None
    assert "would verify for localhost" in session.tls.verify_error
