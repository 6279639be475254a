"""Downstream delivery against real and scripted LMTP servers.

* a private Dovecot LMTP (``dovecot-lmtpd``): two recipients delivered into Maildirs the test
  reads, an unknown one refused by Dovecot itself (its own 550 5.1.1);
* a scripted LMTP server answering 451 and then 250: the message stays queued and is
  delivered on the retry, never lost;
* a private Postfix ``smtpd`` as the SMTP downstream (STARTTLS offered and used);
* kill -9 of a delivery worker (a subprocess) in the middle of a delivery: after the lease
  runs out the message is delivered by another worker - at least once, never zero times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dovecot_fixture import Dovecot, FakeLMTP

from conftest import missing, require_peer
from mailmoat.clock import FixedClock
from mailmoat.gateway.deliver import Downstream
from mailmoat.gateway.queue import DeliveryQueue, RetryPolicy
from mailmoat.net.lmtp_client import LMTPError, deliver_lmtp
from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.store import SQLiteStore

pytestmark = pytest.mark.timeout(120)

MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: alice@example.org\r\n"
           b"Subject: interop\r\nMessage-ID: <lmtp-1@example.net>\r\n\r\n"
           b"line one\r\n.leading dot survives\r\nlast line\r\n")


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    program = require_peer("dovecot")
    if not Path("/usr/lib/dovecot/lmtp").exists():
        require_peer("dovecot-lmtpd-is-not-installed")  # skip/fail with a clear name
    server = Dovecot(program=program, base=tmp_path / "dovecot")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeLMTP]:
    server = FakeLMTP()
    await server.start()
    yield server
    await server.stop()


def _envelope(*rcpts: str) -> Envelope:
    return Envelope(mail_from="sender@example.net",
                    rcpts=tuple(Recipient(address=r) for r in rcpts), received_at=time.time())


async def test_dovecot_per_recipient_replies_and_maildir(dovecot: Dovecot) -> None:
    result = await deliver_lmtp(
        MESSAGE, mail_from="sender@example.net",
        rcpt_to=["alice@example.org", "nobody@example.org", "bob@example.org"],
        host="127.0.0.1", port=dovecot.port, lhlo="gw.example.org", timeout=30)
    by = {r.address: r for r in result.recipients}
    assert by["alice@example.org"].delivered
    assert by["bob@example.org"].delivered
    # Dovecot's own verdict on an unknown user, at RCPT time.
    nobody = by["nobody@example.org"]
    assert not nobody.delivered
    assert not nobody.temporary
    assert (nobody.reply.code, nobody.reply.status) == (550, "5.1.1")
    # RFC 2033 §4.2: a distinct reply per recipient after the content.
    assert by["alice@example.org"].data_reply is not None
    assert by["bob@example.org"].data_reply is not None
    for user in ("alice", "bob"):
        [stored] = dovecot.maildir(user)
        assert b"Return-Path: <sender@example.net>" in stored
        assert b"Message-ID: <lmtp-1@example.net>" in stored
        # Dot-stuffing was undone by the server: the line reads as we wrote it.
        assert b"\n.leading dot survives" in stored
        assert b"last line" in stored
    assert dovecot.maildir("nobody") == []


async def test_queue_delivers_two_recipients_to_dovecot(dovecot: Dovecot,
                                                        tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "q.db")
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)
    try:
        queue = DeliveryQueue(store, spool, Downstream(hostname="gw.example.org", timeout=30))
        env = _envelope("alice@example.org", "bob@example.org")
        sid = await spool.store(env, MESSAGE)
        ids = await queue.enqueue(sid, env, f"lmtp://127.0.0.1:{dovecot.port}")
        assert await queue.run_once() == 2
        for row in ids:
            d = await store.get(row)
            assert d is not None
            assert (d.state, d.last_reply_code) == ("delivered", 250)
        assert len(dovecot.maildir("alice")) == len(dovecot.maildir("bob")) == 1
        assert spool.list() == []
    finally:
        await spool.aclose()
        await store.close()


async def test_tempfail_then_recovery_delivers_on_retry(fake: FakeLMTP, tmp_path: Path) -> None:
    # Session 1: 451 for both recipients; session 2: bob still 451, alice 250; then 250.
    def answer(rcpt: str, session: int) -> tuple[int, str]:
        if session == 1 or (session == 2 and rcpt.startswith("bob")):
            return 451, "4.3.0 mailbox temporarily unavailable"
        return 250, "2.0.0 Saved"

    fake.answer = answer
    store = await SQLiteStore.open(tmp_path / "q.db")
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)
    clock = FixedClock(wall=time.time())
    try:
        queue = DeliveryQueue(store, spool, Downstream(timeout=30), clock=clock,
                              random=lambda: 0.5, policy=RetryPolicy(min_backoff=60))
        env = _envelope("alice@example.org", "bob@example.org")
        sid = await spool.store(env, MESSAGE)
        alice, bob = await queue.enqueue(sid, env, f"lmtp://127.0.0.1:{fake.port}")
        await queue.run_once()
        states = [(await store.get(i)).state for i in (alice, bob)]  # type: ignore[union-attr]
        assert states == ["deferred", "deferred"]
        assert spool.list() == [sid]
        clock.advance(60)
        await queue.run_once()
        a, b = await store.get(alice), await store.get(bob)
        assert a is not None
        assert b is not None
        assert (a.state, b.state) == ("delivered", "deferred")
        assert b.last_reply_code == 451
        clock.advance(120)
        await queue.run_once()
        b = await store.get(bob)
        assert b is not None
        assert b.state == "delivered"
        # Alice got it once; bob once; the retry carried only bob.
        assert sorted(r for r, _ in fake.delivered) == ["alice@example.org", "bob@example.org"]
        assert [rcpts for rcpts, _ in fake.received][-1] == ("bob@example.org",)
        assert spool.list() == []
        assert [x.result.reply_code for x in await store.attempts(bob)] == [451, 451, 250]
    finally:
        await spool.aclose()
        await store.close()


async def test_lmtp_connection_refused_is_temporary() -> None:
    from dovecot_fixture import free_port

    with pytest.raises(LMTPError) as info:
        await deliver_lmtp(MESSAGE, mail_from="a@example.net", rcpt_to=["b@example.org"],
                           host="127.0.0.1", port=free_port(), timeout=5)
    assert info.value.temporary
    assert info.value.stage == "connect"


async def test_kill_9_mid_delivery_loses_nothing(fake: FakeLMTP, tmp_path: Path) -> None:
    fake.stall = True  # the worker will hang waiting for the per-recipient reply
    db, spool_dir = tmp_path / "q.db", tmp_path / "spool"
    store = await SQLiteStore.open(db)
    spool, _ = Spool.open(spool_dir, fsync=False)
    try:
        env = _envelope("alice@example.org")
        sid = await spool.store(env, MESSAGE)
        producer = DeliveryQueue(store, spool, Downstream(timeout=30))
        [row] = await producer.enqueue(sid, env, f"lmtp://127.0.0.1:{fake.port}")
        lease = 2.0
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("dovecot_fixture.py")), str(db),
             str(spool_dir), str(fake.port), str(lease)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
        try:
            deadline = time.monotonic() + 30
            while not fake.received and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert fake.received, child.stderr.read1().decode() if child.stderr else ""
            d = await store.get(row)
            assert d is not None
            assert (d.state, d.owner) == ("in-flight", "child")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            for pipe in (child.stdout, child.stderr):
                if pipe:
                    pipe.close()
        assert fake.delivered == []  # the content arrived, but no reply was ever given
        assert spool.list() == [sid]  # the message is still in the spool
        fake.stall = False
        d = await store.get(row)
        assert d is not None
        assert d.lease_until is not None
        # A restarted worker, once the dead worker's lease has run out:
        clock = FixedClock(wall=d.lease_until)
        restarted = DeliveryQueue(store, spool, Downstream(timeout=30), clock=clock,
                                  owner="restarted")
        assert await restarted.run_once() == 1
        d = await store.get(row)
        assert d is not None
        assert (d.state, d.owner, d.attempts) == ("delivered", None, 2)
        # At least once: the content reached the server twice (the dead worker's copy had no
        # reply), was accepted once, and the spool file is gone only now.
        assert len(fake.received) == 2
        assert [r for r, _ in fake.delivered] == ["alice@example.org"]
        assert spool.list() == []
    finally:
        await spool.aclose()
        await store.close()


async def test_dovecot_over_its_unix_socket(dovecot: Dovecot) -> None:
    socket_path = dovecot.base / "run" / "lmtp"  # Dovecot's default LMTP unix_listener
    assert socket_path.is_socket()
    report = await Downstream(timeout=30).deliver(
        message=MESSAGE, envelope=_envelope("bob@example.org"),
        recipients=["bob@example.org"], destination=f"lmtp:{socket_path}")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    assert report.outcomes[0].reply is not None
    assert report.outcomes[0].reply.status == "2.0.0"
    [stored] = dovecot.maildir("bob")
    assert b"Message-ID: <lmtp-1@example.net>" in stored


async def test_queue_delivers_to_postfix_smtpd_over_starttls(tmp_path: Path) -> None:
    """SMTP downstream: a private Postfix ``smtpd`` (STARTTLS offered); Postfix's own
    Received field records the TLS it saw, which must match what we recorded."""
    program = require_peer("postfix")
    if os.geteuid() != 0:
        missing("a private Postfix instance needs root")
    trustme = pytest.importorskip("trustme")
    from postfix_smtpd_fixture import PostfixSMTPD

    cert = trustme.CA().issue_cert("postfix.test")
    server = PostfixSMTPD(program, cert_pem=cert.cert_chain_pems[0].bytes(),
                          key_pem=cert.private_key_pem.bytes())
    server.start()
    store = await SQLiteStore.open(tmp_path / "q.db")
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)
    try:
        queue = DeliveryQueue(store, spool, Downstream(hostname="gw.example.org", timeout=30))
        env = _envelope("box@example.net")
        sid = await spool.store(env, MESSAGE)
        [row] = await queue.enqueue(sid, env, f"smtp://127.0.0.1:{server.port}")
        assert await queue.run_once() == 1
        d = await store.get(row)
        assert d is not None
        assert (d.state, d.last_reply_code) == ("delivered", 250), d.last_error
        assert d.tls is not None
        assert d.tls.policy == "opportunistic"
        assert d.tls.verified is False
        [stored] = await asyncio.to_thread(server.messages, 1)
        # Postfix (smtpd_tls_received_header = yes): "(using TLSv1.3 with cipher ...)".
        assert f"using {d.tls.version} with cipher {d.tls.cipher}".encode() in stored
        assert b"Message-ID: <lmtp-1@example.net>" in stored
        assert spool.list() == []
    finally:
        await spool.aclose()
        await store.close()
        server.stop()
