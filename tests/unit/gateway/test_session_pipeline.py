"""The SMTP session with the message pipelines (gateway/session.py + inbound / outbound_sign).

The session is driven by the real sans-IO engine (no sockets): a small driver feeds client
bytes to :class:`mailmoat.smtp.ServerConnection`, hands every event to
:class:`mailmoat.gateway.session.Session` and awaits its decisions, as the asyncio adapter
does. DNS is a :class:`FakeResolver` with SPF and DMARC records and DKIM keys generated here.

Expected outcomes come from the RFCs (RFC 7489 §6.6.4: p=reject → refuse at the SMTP layer,
550 5.7.1; p=quarantine → accept into the quarantine; RFC 8601 §5: inbound
Authentication-Results claiming our authserv-id are removed; RFC 3463 X.3.4 for a header
section over our bound) and are cross-checked with independent oracles: the PyPI ``authres``
parser reads our Authentication-Results field, dkimpy verifies the submission signatures.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable
from pathlib import Path

import authres
import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from inbound_zones import NOW, OUR_ID, REJECT_MTA, SPOOFER, dkimpy_dns, fake_zones

from mailmoat.auth.dkim import sign
from mailmoat.auth.dkim import verify as dkim_verify
from mailmoat.auth.spf import SPFResult
from mailmoat.clock import SYSTEM_CLOCK, Clock, FixedClock
from mailmoat.gateway.deliver import Downstream
from mailmoat.gateway.inbound import HeaderEdits, InboundPipeline, InboundPolicy
from mailmoat.gateway.outbound_sign import SubmissionSigner
from mailmoat.gateway.relay import RelayPolicy
from mailmoat.gateway.session import GatewayContext, Session
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.gateway.users import Authenticator, UserDB, make_user
from mailmoat.net.smtp_server import ConnectionInfo
from mailmoat.resolver import FakeResolver
from mailmoat.smtp import (
    NEED_DATA,
    ConnectionClosed,
    Reply,
    ServerConfig,
    ServerConnection,
)
from mailmoat.spool import Envelope, Spool
from mailmoat.store import Verdict

pytestmark = pytest.mark.timeout(120)

QUAR_MTA = "192.0.2.20"

REJECT_ED = ed25519.Ed25519PrivateKey.generate()
REJECT_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OURS_ED = ed25519.Ed25519PrivateKey.generate()
OURS_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_NAMES = (
    ("ed._domainkey.reject.test", REJECT_ED),
    ("rsa._domainkey.reject.test", REJECT_RSA),
    ("ed1._domainkey.example.org", OURS_ED),
    ("rsa1._domainkey.example.org", OURS_RSA),
)


def zones() -> FakeResolver:
    return fake_zones((
        ("reject.test", f"v=spf1 ip4:{REJECT_MTA} -all", "v=DMARC1; p=reject"),
        ("quar.test", f"v=spf1 ip4:{QUAR_MTA} -all", "v=DMARC1; p=quarantine"),
        ("example.org", "v=spf1 -all", "v=DMARC1; p=reject"),
    ), KEY_NAMES)


dkimpy_lookup = dkimpy_dns(KEY_NAMES)


def message(from_addr: str, *, extra: bytes = b"", subject: str = "Hello",
            body: bytes = b"Hi there.\r\nSecond line.\r\n", dated: bool = True) -> bytes:
    head = (extra + f"From: Alice <{from_addr}>\r\n".encode() + b"To: bob@example.org\r\n"
            + f"Subject: {subject}\r\n".encode())
    if dated:
        head += b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@reject.test>\r\n"
    return head + b"\r\n" + body


def signed(msg: bytes, headers: tuple[str, ...] | None = None) -> bytes:
    return sign(msg, "reject.test", "ed", REJECT_ED, timestamp=int(NOW) - 60,
                headers=headers) + msg


def stuffed(content: bytes) -> bytes:
    """DATA transparency (RFC 5321 §4.5.2) and the end-of-data line."""
    lines = content.split(b"\r\n")
    out = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    return out + (b"" if out.endswith(b"\r\n") else b"\r\n") + b".\r\n"


# --- the driver --------------------------------------------------------------------------------
class Driver:
    """The engine and a Session, wired as net.smtp_server does (decisions awaited inline)."""

    def __init__(self, ctx: GatewayContext, *, ip: str = SPOOFER, **engine: object) -> None:
        engine.setdefault("hostname", ctx.hostname)
        engine.setdefault("stream_content", True)
        engine.setdefault("max_message_size", ctx.max_message_size)
        self.engine = ServerConnection(ServerConfig(**engine))  # type: ignore[arg-type]
        info = ConnectionInfo(client_ip=ip, client_port=40000, local_ip="127.0.0.1",
                              local_port=25, tls=None)
        self.session = Session(ctx, self, info)  # type: ignore[arg-type]  # conn: .engine only
        self.engine.greet()
        self.engine.data_to_send()

    async def send(self, data: bytes) -> list[bytes]:
        """Feed client bytes; every reply line group (one per reply) sent back."""
        self.engine.receive_data(data)
        for _ in range(100_000):
            event = self.engine.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            result = self.session.event(event)
            if not event.decision:
                continue
            if result is not None and not isinstance(result, Reply):
                result = await result
            if result is None:
                self.engine.accept()
            elif result.code < 400:
                self.engine.accept(result)
            else:
                self.engine.reject(result)
        return [r for r in self.engine.data_to_send().split(b"\r\n") if r]

    async def cmd(self, line: bytes) -> bytes:
        replies = await self.send(line + b"\r\n")
        assert replies, line
        return replies[-1]

    async def envelope(self, sender: bytes, rcpt: bytes = b"bob@example.org") -> None:
        assert (await self.cmd(b"EHLO client.test")).startswith(b"250 ")
        assert (await self.cmd(b"MAIL FROM:<" + sender + b">")).startswith(b"250 ")
        assert (await self.cmd(b"RCPT TO:<" + rcpt + b">")).startswith(b"250 ")

    async def data(self, content: bytes) -> bytes:
        assert (await self.cmd(b"DATA")).startswith(b"354")
        return (await self.send(stuffed(content)))[-1]

    async def bdat(self, content: bytes, pieces: int = 3) -> bytes:
        step = max(1, -(-len(content) // pieces))
        chunks = [content[i : i + step] for i in range(0, len(content), step)]
        for chunk in chunks[:-1]:
            assert (await self.send(b"BDAT %d\r\n" % len(chunk) + chunk))[-1].startswith(b"250")
        last = chunks[-1]
        return (await self.send(b"BDAT %d LAST\r\n" % len(last) + last))[-1]


class Accepted:
    """A fake ``ctx.accept``: records its calls and what the spool held at that moment."""

    def __init__(self, spool: Spool, *, fail: bool = False) -> None:
        self.spool = spool
        self.fail = fail
        self.calls: list[tuple[str, Envelope, Verdict | None]] = []

    def __call__(self, spool_id: str, envelope: Envelope,
                 verdict: Verdict | None) -> Awaitable[None]:
        async def run() -> None:
            assert spool_id in self.spool.list()  # after the commit
            self.calls.append((spool_id, envelope, verdict))
            if self.fail:
                raise RuntimeError("store down")
        return run()


def mx_context(tmp_path: Path, *, clock: Clock | None = None, max_size: int = 10_000_000,
               **policy: object) -> tuple[GatewayContext, Accepted]:
    clock = clock or FixedClock(wall=NOW)
    spool = Spool(tmp_path / "spool", fsync=False)
    pol = InboundPolicy(authserv_id=OUR_ID, **policy)  # type: ignore[arg-type]
    accepted = Accepted(spool)
    ctx = GatewayContext(
        hostname=OUR_ID, role="mx", spool=spool,
        relay=RelayPolicy(local_domains=["example.org"]), authenticator=None,
        max_message_size=max_size, clock=clock,
        inbound=InboundPipeline(pol, resolver=zones(), clock=clock), accept=accepted)
    return ctx, accepted


def parts(spool: Spool) -> list[Path]:
    return list(spool.tmp_dir.glob("*.part"))


def assert_nothing_kept(ctx: GatewayContext, accepted: Accepted) -> None:
    """Refused or failed: no message in the spool, no ``.part`` file left, no accept call."""
    assert ctx.spool.list() == []
    assert parts(ctx.spool) == []
    assert accepted.calls == []


def our_ar(prepend: bytes) -> authres.AuthenticationResultsHeader:
    """Our Authentication-Results field among the prepended fields, read by ``authres``."""
    text = prepend.decode()
    start = text.index("Authentication-Results:")
    field = text[start:].split("\r\n")
    out = field[0]
    for line in field[1:]:
        if line[:1] not in (" ", "\t"):
            break
        out += "\r\n" + line
    return authres.AuthenticationResultsHeader.parse(out)


def results(ar: authres.AuthenticationResultsHeader) -> dict[str, str]:
    return {r.method: r.result for r in ar.results}


# --- mx ---------------------------------------------------------------------------------------
async def test_dmarc_reject_is_550_and_nothing_is_kept(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    ctx, accepted = mx_context(tmp_path)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    caplog.set_level(logging.INFO, logger="mailmoat.smtp.session")
    # A bigger body than the deferred writer holds in memory: a .part file exists while
    # DATA streams, and must be gone afterwards.
    content = message("alice@reject.test", body=(b"y" * 70 + b"\r\n") * 2000)
    reply = await driver.data(content)
    assert reply.startswith(b"550 5.7.1 "), reply
    assert b"reject.test" in reply
    assert_nothing_kept(ctx, accepted)
    lines = [r.getMessage() for r in caplog.records if "event=message" in r.getMessage()]
    assert len(lines) == 1
    assert "result='reject'" in lines[0]
    assert "rejected per DMARC" in lines[0]
    # the session goes on
    assert (await driver.cmd(b"NOOP")).startswith(b"250")


async def test_refused_message_leaves_its_verdict_for_aggregate_reports(tmp_path: Path) -> None:
    # RFC 7489 Appendix C: aggregate reports count what was rejected (disposition "reject").
    ctx, accepted = mx_context(tmp_path)
    rows: list[Verdict] = []

    async def refused(row: Verdict) -> None:
        rows.append(row)

    ctx.refused = refused
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    reply = await driver.data(message("alice@reject.test"))
    assert reply.startswith(b"550 5.7.1 "), reply
    assert ctx.spool.list() == []
    assert accepted.calls == []
    assert len(rows) == 1
    row = rows[0]
    assert (row.disposition, row.dmarc_result, row.dmarc_policy) == ("reject", "fail", "reject")
    assert row.header_from == "reject.test"
    assert row.mail_from == "alice@reject.test"


async def test_a_failing_verdict_store_does_not_turn_a_refusal_into_acceptance(
        tmp_path: Path) -> None:
    ctx, accepted = mx_context(tmp_path)

    async def refused(row: Verdict) -> None:
        raise RuntimeError("store down")

    ctx.refused = refused
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    reply = await driver.data(message("alice@reject.test"))
    assert reply.startswith(b"550 5.7.1 "), reply
    assert ctx.spool.list() == []
    assert accepted.calls == []


async def test_dmarc_reject_over_bdat(tmp_path: Path) -> None:
    ctx, accepted = mx_context(tmp_path)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    reply = await driver.bdat(message("alice@reject.test"))
    assert reply.startswith(b"550 5.7.1 "), reply
    assert_nothing_kept(ctx, accepted)


async def test_dmarc_quarantine_is_committed_with_flag_and_edits(tmp_path: Path) -> None:
    ctx, accepted = mx_context(tmp_path, quarantine_folder="Junk")
    driver = Driver(ctx)
    await driver.envelope(b"alice@quar.test")
    content = message("alice@quar.test")
    reply = await driver.data(content)
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    spool_id = reply.split()[-1].decode()
    assert ctx.spool.list() == [spool_id]
    entry = ctx.spool.get(spool_id)
    env = entry.envelope
    assert env.quarantined is True
    assert env.quarantine_folder == "Junk"
    assert env.header_edits is not None
    edits = HeaderEdits.from_json(env.header_edits)
    assert edits.prepend.startswith(b"X-Mailmoat-Quarantine: yes")
    ar = our_ar(edits.prepend)
    assert ar.authserv_id == OUR_ID
    assert results(ar)["dmarc"] == "fail"
    assert results(ar)["spf"] == "fail"  # 203.0.113.9 is not in quar.test's -all record
    # The spool holds what was received (Received first); edits apply at delivery.
    stored = ctx.spool.read_message(spool_id)
    assert stored.startswith(b"Received: from client.test")
    assert stored.endswith(content)
    # accept ran after the commit, before the 250, with the verdict row
    assert len(accepted.calls) == 1
    got_id, got_env, verdict = accepted.calls[0]
    assert got_id == spool_id
    assert got_env == env
    assert verdict is not None
    assert verdict.spool_id == spool_id
    assert verdict.disposition == "quarantine"
    assert verdict.dmarc_result == "fail"
    assert verdict.header_from == "quar.test"


async def test_quarantine_without_folder_is_flag_only(tmp_path: Path) -> None:
    ctx, _ = mx_context(tmp_path, quarantine_folder=None)
    driver = Driver(ctx)
    await driver.envelope(b"alice@quar.test")
    reply = await driver.data(message("alice@quar.test"))
    env = ctx.spool.get(reply.split()[-1].decode()).envelope
    assert env.quarantined is True
    assert env.quarantine_folder is None


async def test_dkim_pass_is_delivered_with_our_results(tmp_path: Path) -> None:
    ctx, accepted = mx_context(tmp_path)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    # h= names Received, which the message does not have (RFC 6376 §5.4: a missing field
    # signs as null). Had the verifier been fed our Received field, the hash would differ.
    content = signed(message("alice@reject.test"),
                     headers=("From", "To", "Subject", "Date", "Message-ID", "Received"))
    assert b"received" in content.split(b"\r\n\r\n")[0].lower()
    reply = await driver.data(content)
    assert reply.startswith(b"250 2.0.0 "), reply
    env = ctx.spool.get(reply.split()[-1].decode()).envelope
    assert env.quarantined is False
    assert env.quarantine_folder is None
    assert env.header_edits is not None
    ar = our_ar(HeaderEdits.from_json(env.header_edits).prepend)
    assert ar.authserv_id == OUR_ID
    got = results(ar)
    assert got["dkim"] == "pass"
    assert got["dmarc"] == "pass"
    assert got["spf"] == "fail"
    verdict = accepted.calls[0][2]
    assert verdict is not None
    assert verdict.disposition == "none"
    assert verdict.dmarc_result == "pass"


async def test_bdat_pass_and_spf_started_at_mail_from(tmp_path: Path) -> None:
    ctx, _ = mx_context(tmp_path)
    driver = Driver(ctx, ip=REJECT_MTA)
    await driver.envelope(b"bounce@reject.test")
    task = driver.session._spf
    assert task is not None  # running since MAIL FROM
    reply = await driver.bdat(message("alice@reject.test"), pieces=5)
    assert reply.startswith(b"250 2.0.0 "), reply
    env = ctx.spool.get(reply.split()[-1].decode()).envelope
    assert env.header_edits is not None
    ar = our_ar(HeaderEdits.from_json(env.header_edits).prepend)
    assert results(ar)["spf"] == "pass"
    assert results(ar)["dmarc"] == "pass"
    assert task.done()
    assert not task.cancelled()


def spf_task(driver: Driver) -> asyncio.Task[SPFResult] | None:
    return driver.session._spf


def in_message(driver: Driver) -> tuple[bool, bool]:
    """(a message being verified, a spool writer open)"""
    return driver.session.message is not None, driver.session.writer is not None


async def test_rset_and_new_mail_cancel_spf(tmp_path: Path) -> None:
    ctx, _ = mx_context(tmp_path)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    first = spf_task(driver)
    assert first is not None
    assert (await driver.cmd(b"RSET")).startswith(b"250")
    assert spf_task(driver) is None
    assert (await driver.cmd(b"MAIL FROM:<a@quar.test>")).startswith(b"250")
    second = spf_task(driver)
    assert second is not None
    assert second is not first
    assert (await driver.cmd(b"MAIL FROM:<b@quar.test>")).startswith(b"503")  # nested MAIL
    assert (await driver.cmd(b"RSET")).startswith(b"250")
    await asyncio.sleep(0)
    assert first.cancelled()
    assert second.cancelled()
    # DATA started, then the connection ends: the message's lookups stop, no part file
    assert (await driver.cmd(b"MAIL FROM:<a@reject.test>")).startswith(b"250")
    assert (await driver.cmd(b"RCPT TO:<bob@example.org>")).startswith(b"250")
    assert (await driver.cmd(b"DATA")).startswith(b"354")
    await driver.send(b"From: a@reject.test\r\n")
    assert in_message(driver) == (True, True)
    driver.session.closed()
    assert in_message(driver) == (False, False)
    assert ctx.spool.list() == []
    assert parts(ctx.spool) == []


async def test_header_section_over_the_bound_is_552(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmoat import limits
    monkeypatch.setattr(limits, "MESSAGE_HEADER_MAX", 4096)
    ctx, accepted = mx_context(tmp_path)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"z" * 200) for i in range(40))  # ~8.5 KB
    reply = await driver.data(message("alice@reject.test", extra=big))
    assert reply.startswith(b"552 5.3.4 "), reply  # RFC 3463 X.3.4
    assert_nothing_kept(ctx, accepted)


async def test_message_over_the_size_limit_drops_the_verification(tmp_path: Path) -> None:
    ctx, accepted = mx_context(tmp_path, max_size=2048)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    reply = await driver.data(message("alice@reject.test", body=(b"y" * 70 + b"\r\n") * 100))
    assert reply.startswith(b"552 "), reply  # RFC 1870 / RFC 5321 §4.5.3.1.10
    assert in_message(driver) == (False, False)
    assert_nothing_kept(ctx, accepted)
    # the next transaction is verified afresh
    await driver.envelope(b"alice@reject.test")
    assert (await driver.data(message("alice@reject.test"))).startswith(b"550 5.7.1")


async def test_accept_failure_is_logged_and_still_250(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    ctx, _ = mx_context(tmp_path)
    failing = Accepted(ctx.spool, fail=True)
    ctx.accept = failing
    driver = Driver(ctx, ip=REJECT_MTA)
    await driver.envelope(b"alice@reject.test")
    with caplog.at_level(logging.ERROR, logger="mailmoat.smtp.session"):
        reply = await driver.data(message("alice@reject.test"))
    assert reply.startswith(b"250 2.0.0 "), reply
    spool_id = reply.split()[-1].decode()
    assert ctx.spool.list() == [spool_id]
    assert len(failing.calls) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert spool_id in errors[0].getMessage()


async def test_pipeline_failure_is_451_and_nothing_kept(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, accepted = mx_context(tmp_path)
    from mailmoat.gateway.inbound import InboundMessage

    async def broken(self: InboundMessage) -> object:
        raise RuntimeError("bug")

    monkeypatch.setattr(InboundMessage, "finish", broken)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    reply = await driver.data(message("alice@reject.test"))
    assert reply.startswith(b"451 4.3.0"), reply
    assert_nothing_kept(ctx, accepted)


async def test_forged_results_are_removed_at_delivery(tmp_path: Path) -> None:
    ctx, _ = mx_context(tmp_path)
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    forged = (b"Authentication-Results: " + OUR_ID.encode()
              + b"; dkim=pass header.d=reject.test; dmarc=pass\r\n")
    other = b"Authentication-Results: relay.elsewhere.test; spf=pass\r\n"
    content = signed(message("alice@reject.test", extra=forged + other))
    reply = await driver.data(content)
    assert reply.startswith(b"250 "), reply
    spool_id = reply.split()[-1].decode()
    entry = ctx.spool.get(spool_id)
    stored = ctx.spool.read_message(spool_id)
    assert forged in stored  # the spool keeps what was received
    downstream = Downstream(hostname=OUR_ID, maildir_fsync=False)
    report = await downstream.deliver(
        message=stored, envelope=entry.envelope, recipients=["bob@example.org"],
        destination=f"maildir:{tmp_path}/mail/%d/%u")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    files = list((tmp_path / "mail/example.org/bob/new").iterdir())
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"\r" not in data  # Maildir: LF line ends
    head = data.split(b"\n\n", 1)[0].decode()
    fields = list(head.replace("\n ", " ").replace("\n\t", " ").split("\n"))
    ars = [f for f in fields if f.lower().startswith("authentication-results:")]
    ours = [f for f in ars if authres.AuthenticationResultsHeader.parse(f).authserv_id == OUR_ID]
    assert forged.replace(b"\r\n", b"\n") not in data  # RFC 8601 §5: removed
    assert len(ours) == 1  # ours is there, once
    mine = {r.method: r for r in authres.AuthenticationResultsHeader.parse(ours[0]).results}
    assert mine["dkim"].result == "pass"
    assert mine["dmarc"].result == "pass"
    assert mine["spf"].result == "fail"  # the forged field had no spf result
    # on top: right after the local delivery agent's Return-Path / Delivered-To
    assert fields[2] == ours[0]
    assert other.decode().strip() in fields  # another ADMD's field is left alone
    assert data.endswith(b"\n\nHi there.\nSecond line.\n")


async def test_quarantined_mail_goes_to_the_maildir_folder(tmp_path: Path) -> None:
    ctx, _ = mx_context(tmp_path, quarantine_folder="Junk")
    driver = Driver(ctx)
    await driver.envelope(b"alice@quar.test")
    reply = await driver.data(message("alice@quar.test"))
    spool_id = reply.split()[-1].decode()
    entry = ctx.spool.get(spool_id)
    report = await Downstream(maildir_fsync=False).deliver(
        message=ctx.spool.read_message(spool_id), envelope=entry.envelope,
        recipients=["bob@example.org"], destination=f"maildir:{tmp_path}/mail/%u")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    inbox = tmp_path / "mail/bob"
    assert not (inbox / "new").exists() or list((inbox / "new").iterdir()) == []
    junk = inbox / ".Junk"
    assert (junk / "maildirfolder").is_file()
    for sub in ("tmp", "new", "cur"):
        assert (junk / sub).is_dir()
    [file] = list((junk / "new").iterdir())
    data = file.read_bytes()
    assert b"\nX-Mailmoat-Quarantine: yes" in data


async def test_without_pipeline_mx_is_unchanged(tmp_path: Path) -> None:
    ctx, accepted = mx_context(tmp_path)
    ctx.inbound = None
    driver = Driver(ctx)
    await driver.envelope(b"alice@reject.test")
    assert driver.session._spf is None
    content = message("alice@reject.test")
    reply = await driver.data(content)
    assert reply.startswith(b"250 2.0.0 "), reply  # nothing verified, nothing refused
    spool_id = reply.split()[-1].decode()
    env = ctx.spool.get(spool_id).envelope
    assert env.header_edits is None
    assert env.quarantined is False
    assert ctx.spool.read_message(spool_id).endswith(content)
    assert accepted.calls == [(spool_id, env, None)]


# --- submission -------------------------------------------------------------------------------
SIGN_KEYS = (DKIMKey(domain="example.org", selector="ed1", key=OURS_ED),
             DKIMKey(domain="example.org", selector="rsa1", key=OURS_RSA))


def submission_context(tmp_path: Path, *, max_size: int = 10_000_000,
                       signer: bool = True) -> tuple[GatewayContext, Accepted]:
    spool = Spool(tmp_path / "spool", fsync=False)
    accepted = Accepted(spool)
    users = UserDB().with_user(make_user("alice", "pw-alice", ["alice@example.org"]))
    ctx = GatewayContext(
        hostname=OUR_ID, role="submission", spool=spool,
        relay=RelayPolicy(local_domains=["example.org"]), authenticator=Authenticator(users),
        max_message_size=max_size, clock=SYSTEM_CLOCK,  # dkimpy checks t= with the real clock
        signer=SubmissionSigner(keys=SIGN_KEYS, hostname=OUR_ID, clock=SYSTEM_CLOCK)
        if signer else None,
        accept=accepted)
    return ctx, accepted


async def logged_in(ctx: GatewayContext) -> Driver:
    driver = Driver(ctx, ip="127.0.0.1", require_auth_for_mail=True,
                    require_tls_for_auth=False, auth_mechanisms=("PLAIN",))
    assert (await driver.cmd(b"EHLO client.test")).startswith(b"250 ")
    token = base64.b64encode(b"\0alice\0pw-alice")
    assert (await driver.cmd(b"AUTH PLAIN " + token)).startswith(b"235 ")
    assert (await driver.cmd(b"MAIL FROM:<alice@example.org>")).startswith(b"250 ")
    assert (await driver.cmd(b"RCPT TO:<friend@elsewhere.test>")).startswith(b"250 ")
    return driver


async def test_submission_is_signed_and_verifies(tmp_path: Path) -> None:
    ctx, accepted = submission_context(tmp_path)
    driver = await logged_in(ctx)
    content = message("alice@example.org", dated=False)  # Date / Message-ID added
    reply = await driver.data(content)
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    spool_id = reply.split()[-1].decode()
    stored = ctx.spool.read_message(spool_id)
    assert stored.startswith(b"Received: from client.test")
    assert spool_id.encode() in stored.split(b"DKIM-Signature:", 1)[0]  # our queue id
    fields = stored.split(b"\r\n\r\n", 1)[0]
    assert fields.count(b"\r\nDKIM-Signature:") == 2
    assert b"\r\nDate: " in fields
    assert b"\r\nMessage-ID: <" in fields
    assert stored.endswith(b"\r\n\r\nHi there.\r\nSecond line.\r\n")
    # our verifier
    ours = await dkim_verify(stored, zones(), clock=SYSTEM_CLOCK)
    assert sorted((r.algorithm, r.domain, r.result.value) for r in ours) == [
        ("ed25519-sha256", "example.org", "pass"), ("rsa-sha256", "example.org", "pass")]
    # dkimpy, an independent implementation
    d = dkim.DKIM(stored)
    assert d.verify(idx=0, dnsfunc=dkimpy_lookup)
    assert d.verify(idx=1, dnsfunc=dkimpy_lookup)
    env = ctx.spool.get(spool_id).envelope
    assert env.auth_user == "alice"
    assert env.header_edits is None
    assert accepted.calls == [(spool_id, env, None)]


async def test_submission_over_bdat(tmp_path: Path) -> None:
    ctx, _ = submission_context(tmp_path)
    driver = await logged_in(ctx)
    reply = await driver.bdat(message("alice@example.org"), pieces=4)
    assert reply.startswith(b"250 2.0.0 "), reply
    stored = ctx.spool.read_message(reply.split()[-1].decode())
    d = dkim.DKIM(stored)
    assert d.verify(idx=0, dnsfunc=dkimpy_lookup)


async def test_submission_from_not_owned_is_refused(tmp_path: Path) -> None:
    ctx, accepted = submission_context(tmp_path)
    driver = await logged_in(ctx)
    reply = await driver.data(message("bob@example.org"))
    # the signer's reply (RFC 3463 X.7.1), nothing kept
    assert reply.startswith(b"550 5.7.1 From address not allowed"), reply
    assert_nothing_kept(ctx, accepted)
    # the next transaction works
    assert (await driver.cmd(b"MAIL FROM:<alice@example.org>")).startswith(b"250 ")
    assert (await driver.cmd(b"RCPT TO:<friend@elsewhere.test>")).startswith(b"250 ")
    assert (await driver.data(message("alice@example.org"))).startswith(b"250 ")


async def test_submission_header_over_the_bound_is_552(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmoat import limits
    monkeypatch.setattr(limits, "MESSAGE_HEADER_MAX", 4096)
    ctx, accepted = submission_context(tmp_path)
    driver = await logged_in(ctx)
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"z" * 200) for i in range(40))
    reply = await driver.data(message("alice@example.org", extra=big))
    assert reply.startswith(b"552 5.3.4 "), reply
    assert ctx.spool.list() == []
    assert accepted.calls == []


async def test_submission_without_signer_is_unchanged(tmp_path: Path) -> None:
    ctx, _accepted = submission_context(tmp_path, signer=False)
    driver = await logged_in(ctx)
    content = message("alice@example.org")
    reply = await driver.data(content)
    assert reply.startswith(b"250 2.0.0 "), reply
    stored = ctx.spool.read_message(reply.split()[-1].decode())
    assert stored.endswith(content)
    assert b"DKIM-Signature" not in stored

