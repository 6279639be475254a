"""Downstream delivery: Maildir (the spec's tmp -> new, unique names, path safety), SMTP via
aiosmtpd as the independent peer (STARTTLS when offered; per-recipient refusals), and
destinations that cannot work."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat.gateway.deliver import (
    Downstream,
    deliver_maildir,
    maildir_path,
    maildir_unique_name,
)
from mailmoat.net.lmtp_client import dot_stuff
from mailmoat.spool import Envelope, Recipient

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@example.net\r\nSubject: t\r\n\r\nbody\r\n.dot\r\n"
ENV = Envelope(mail_from="a@example.net", rcpts=(Recipient(address="u@example.org"),),
               received_at=time.time())


def test_unique_name_follows_the_maildir_spec() -> None:
    # cr.yp.to/proto/maildir.html: "/" and ":" in the host name as \057 and \072.
    name = maildir_unique_name("odd/host:name", now=1234567890.25)
    assert re.fullmatch(r"1234567890\.M250000P\d+Q\d+R[0-9a-f]{16}\.odd\\057host\\072name",
                        name)
    assert len({maildir_unique_name("h") for _ in range(1000)}) == 1000


def test_deliver_maildir_writes_new_and_leaves_tmp_empty(tmp_path: Path) -> None:
    box = tmp_path / "box"
    first = deliver_maildir(box, b"one\n")
    second = deliver_maildir(box, b"two\n", fsync=False)
    assert first.parent == second.parent == box / "new"
    assert first.read_bytes() == b"one\n"
    assert first.name.endswith(",S=4")
    assert list((box / "tmp").iterdir()) == []
    assert (box / "cur").is_dir()


@pytest.mark.parametrize("rcpt", ["../x@example.org", ".hidden@example.org",
                                  "a/b@example.org", "a\x01@example.org", "@example.org"])
def test_maildir_path_refuses_unsafe_components(rcpt: str) -> None:
    with pytest.raises(ValueError, match="safe Maildir path component"):
        maildir_path("/srv/mail/%d/%u", rcpt)


def test_maildir_path_substitutions() -> None:
    assert maildir_path("/m/%d/%u/.Junk%%", "Bob@Example.ORG") == Path(
        "/m/example.org/bob/.Junk%")
    assert maildir_path("/m/%a", "bob@example.org") == Path("/m/bob@example.org")
    with pytest.raises(ValueError, match="escape"):
        maildir_path("/m/%x", "bob@example.org")


def test_dot_stuff_rfc5321_4_5_2() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
    assert dot_stuff(b"bare\nlf\r") == b"bare\r\nlf\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"


async def test_downstream_maildir(tmp_path: Path) -> None:
    down = Downstream(maildir_fsync=False)
    env = Envelope(mail_from="a@example.net", received_at=0,
                   rcpts=(Recipient(address="u@example.org"), Recipient(address="../x@e")))
    report = await down.deliver(message=MESSAGE, envelope=env,
                                recipients=["u@example.org", "../x@e"],
                                destination=f"maildir:{tmp_path}/%u")
    outcomes = {o.recipient: o.outcome for o in report.outcomes}
    assert outcomes == {"u@example.org": "delivered", "../x@e": "bounced"}
    [stored] = list((tmp_path / "u" / "new").iterdir())
    # As local(8)/Dovecot store it: Return-Path and Delivered-To first, LF line endings.
    assert stored.read_bytes() == (b"Return-Path: <a@example.net>\nDelivered-To: u@example.org\n"
                                   + MESSAGE.replace(b"\r\n", b"\n"))


async def test_unknown_destination_and_unreachable_defer() -> None:
    down = Downstream(timeout=5)
    report = await down.deliver(message=MESSAGE, envelope=ENV, recipients=["u@example.org"],
                                destination="carrier-pigeon:x")
    assert [o.outcome for o in report.outcomes] == ["deferred"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for dest in (f"lmtp://127.0.0.1:{port}", f"smtp://127.0.0.1:{port}", "mx:example.org"):
        report = await down.deliver(message=MESSAGE, envelope=ENV,
                                    recipients=["u@example.org"], destination=dest)
        assert [o.outcome for o in report.outcomes] == ["deferred"], dest
        assert report.outcomes[0].error


class Handler:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.tls: list[bool] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address.startswith("full"):
            return "452 4.2.2 mailbox full"
        if address.startswith("gone"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 2.0.0 queued as ABC123"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Any, Handler]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    handler = Handler()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port,
                                                tls_context=context)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


async def test_downstream_smtp_starttls_and_per_recipient(smtp_server: Any) -> None:
    controller, handler = smtp_server
    down = Downstream(hostname="gw.example.org", timeout=10)
    report = await down.deliver(
        message=MESSAGE, envelope=ENV,
        recipients=["u@example.org", "full@example.org", "gone@example.org"],
        destination=f"smtp://127.0.0.1:{controller.port}")
    outcomes = {o.recipient: o.outcome for o in report.outcomes}
    assert outcomes == {"u@example.org": "delivered", "full@example.org": "deferred",
                        "gone@example.org": "bounced"}
    # aiosmtpd's record: the message went over TLS (STARTTLS was offered, so it was used).
    assert handler.tls == [True]
    assert handler.envelopes[0].rcpt_tos == ["u@example.org"]
    assert handler.envelopes[0].mail_from == "a@example.net"
    assert report.tls is not None
    assert report.tls.version in ("TLSv1.2", "TLSv1.3")
    assert report.tls.verified is False  # opportunistic: encrypted, not authenticated
    assert report.tls.policy == "opportunistic"
