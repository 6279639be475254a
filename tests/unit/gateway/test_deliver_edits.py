"""Delivery applies the inbound verdict kept in the envelope (gateway/deliver.py): header edits
before every destination, the Maildir++ quarantine folder, and a deferral (never an unedited
delivery) when the edits record cannot be read.

Expected bytes are written out by hand from RFC 8601 §5 (inbound Authentication-Results that
claim our authserv-id are removed, ours goes on top) and the Maildir++ layout (Courier's
maildir++ spec, as Dovecot reads it: ``.<folder>/`` with ``tmp/ new/ cur/`` and a
``maildirfolder`` file). aiosmtpd is the independent SMTP receiver.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat.gateway.deliver import Downstream, edited, quarantine_folder
from mailmoat.gateway.inbound import HeaderEdits
from mailmoat.spool import Envelope, Recipient

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

pytestmark = pytest.mark.timeout(60)

OUR_ID = "mx.example.org"
FORGED = b"Authentication-Results: mx.example.org; dmarc=pass header.from=bank.test\r\n"
OTHER = b"Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=bank.test\r\n"
SPOOLED = (b"Received: from client.test (unknown [203.0.113.9])\r\n\tby mx.example.org\r\n"
           + FORGED + OTHER
           + b"X-Mailmoat-Quarantine: no\r\n"
           + b"From: a@bank.test\r\nSubject: t\r\n\r\nbody\r\n")
OURS = b"Authentication-Results: mx.example.org; dmarc=fail header.from=bank.test\r\n"
QUAR = b"X-Mailmoat-Quarantine: yes (dmarc p=quarantine bank.test)\r\n"
EDITS = HeaderEdits(prepend=QUAR + OURS, remove_authserv_id=OUR_ID,
                    remove_names=frozenset({b"x-mailmoat-quarantine"}))
#: RFC 8601 §5: the forged field and the inbound quarantine field gone, ours on top; another
#: ADMD's field and everything else untouched, body untouched.
EXPECTED = (QUAR + OURS
            + b"Received: from client.test (unknown [203.0.113.9])\r\n\tby mx.example.org\r\n"
            + OTHER + b"From: a@bank.test\r\nSubject: t\r\n\r\nbody\r\n")


def envelope(**kw: Any) -> Envelope:
    return Envelope(mail_from="a@bank.test", rcpts=(Recipient(address="u@example.org"),),
                    received_at=time.time(), **kw)


def maildir_copy(data: bytes, rcpt: str = "u@example.org") -> bytes:
    return (f"Return-Path: <a@bank.test>\nDelivered-To: {rcpt}\n".encode()
            + data.replace(b"\r\n", b"\n"))


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


def test_edited_applies_the_record() -> None:
    assert edited(SPOOLED, EDITS.to_json()) == EXPECTED


async def test_maildir_gets_the_edited_message(tmp_path: Path) -> None:
    report = await Downstream(maildir_fsync=False).deliver(
        message=SPOOLED, envelope=envelope(header_edits=EDITS.to_json()),
        recipients=["u@example.org"], destination=f"maildir:{tmp_path}/%u")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    [stored] = files(tmp_path / "u" / "new")
    assert stored.read_bytes() == maildir_copy(EXPECTED)


async def test_quarantine_goes_to_the_maildir_plus_plus_folder(tmp_path: Path) -> None:
    env = envelope(header_edits=EDITS.to_json(), quarantined=True,
                   quarantine_folder="Junk.Spam")  # Maildir++ nesting: dots inside
    report = await Downstream(maildir_fsync=False).deliver(
        message=SPOOLED, envelope=env, recipients=["u@example.org"],
        destination=f"maildir:{tmp_path}/%d/%u")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    box = tmp_path / "example.org" / "u"
    folder = box / ".Junk.Spam"
    assert (folder / "maildirfolder").is_file()
    assert {p.name for p in files(folder)} == {"cur", "new", "tmp", "maildirfolder"}
    [stored] = files(folder / "new")
    assert stored.read_bytes() == maildir_copy(EXPECTED)
    assert files(folder / "tmp") == []
    assert files(box / "new") == []  # not in the inbox
    assert report.remote == str(stored)


async def test_quarantined_without_folder_goes_to_the_inbox(tmp_path: Path) -> None:
    env = envelope(header_edits=EDITS.to_json(), quarantined=True, quarantine_folder=None)
    report = await Downstream(maildir_fsync=False).deliver(
        message=SPOOLED, envelope=env, recipients=["u@example.org"],
        destination=f"maildir:{tmp_path}/%u")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    [stored] = files(tmp_path / "u" / "new")
    assert stored.read_bytes().startswith(b"Return-Path: <a@bank.test>\nDelivered-To: "
                                          b"u@example.org\nX-Mailmoat-Quarantine: yes")


@pytest.mark.parametrize("folder", ["../inbox", ".hidden", "a/b", "x\x01", "Junk.", "\0"])
def test_unsafe_quarantine_folder_is_refused(folder: str) -> None:
    with pytest.raises(ValueError):
        quarantine_folder(Path("/m/u"), folder)


async def test_unsafe_quarantine_folder_defers(tmp_path: Path) -> None:
    env = envelope(header_edits=EDITS.to_json(), quarantined=True, quarantine_folder="../x")
    report = await Downstream(maildir_fsync=False).deliver(
        message=SPOOLED, envelope=env, recipients=["u@example.org"],
        destination=f"maildir:{tmp_path}/%u")
    [outcome] = report.outcomes
    assert outcome.outcome == "deferred"
    assert outcome.error is not None
    assert "quarantine folder" in outcome.error
    assert list(tmp_path.rglob("*")) == []  # nothing created anywhere


@pytest.mark.parametrize("record", [
    "not json",
    json.dumps({"v": 2, "prepend": ""}),
    json.dumps({"v": 1}),
    json.dumps({"v": 1, "prepend": "!!!not base64!!!"}),
    json.dumps({"v": 1, "prepend": "", "remove_authserv_id": 5}),
    json.dumps({"v": 1, "prepend": "", "remove_names": "x"}),
    json.dumps([1]),
])
async def test_unreadable_edits_defer_and_deliver_nothing(tmp_path: Path, record: str) -> None:
    report = await Downstream(maildir_fsync=False).deliver(
        message=SPOOLED, envelope=envelope(header_edits=record),
        recipients=["u@example.org", "v@example.org"], destination=f"maildir:{tmp_path}/%u")
    assert [o.outcome for o in report.outcomes] == ["deferred", "deferred"]
    for outcome in report.outcomes:
        assert outcome.error is not None
        assert "header edits" in outcome.error
    assert list(tmp_path.rglob("*")) == []


async def test_header_without_end_over_the_bound_defers(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmoat import limits
    monkeypatch.setattr(limits, "MESSAGE_HEADER_MAX", 1024)
    message = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(40))  # no empty line
    report = await Downstream(maildir_fsync=False).deliver(
        message=message, envelope=envelope(header_edits=EDITS.to_json()),
        recipients=["u@example.org"], destination=f"maildir:{tmp_path}/%u")
    assert [o.outcome for o in report.outcomes] == ["deferred"]
    assert list(tmp_path.rglob("*")) == []


class Handler:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 2.0.0 queued"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Any, Handler]]:
    handler = Handler()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


async def test_smtp_destination_gets_the_edited_message(smtp_server: Any) -> None:
    controller, handler = smtp_server
    down = Downstream(hostname="gw.example.org", timeout=10)
    env = envelope(header_edits=EDITS.to_json(), quarantined=True, quarantine_folder="Junk")
    report = await down.deliver(message=SPOOLED, envelope=env, recipients=["u@example.org"],
                                destination=f"smtp://127.0.0.1:{controller.port}")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    # no folder over SMTP: the quarantine field tells the mailbox server
    assert handler.contents == [EXPECTED]
    bad = envelope(header_edits="{")
    report = await down.deliver(message=SPOOLED, envelope=bad, recipients=["u@example.org"],
                                destination=f"smtp://127.0.0.1:{controller.port}")
    assert [o.outcome for o in report.outcomes] == ["deferred"]
    assert len(handler.contents) == 1  # nothing sent


async def test_no_record_delivers_the_spooled_bytes(tmp_path: Path) -> None:
    report = await Downstream(maildir_fsync=False).deliver(
        message=SPOOLED, envelope=envelope(), recipients=["u@example.org"],
        destination=f"maildir:{tmp_path}/%u")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    [stored] = files(tmp_path / "u" / "new")
    assert stored.read_bytes() == maildir_copy(SPOOLED)
