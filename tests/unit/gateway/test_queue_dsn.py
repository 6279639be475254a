"""DSNs from the queue (RFC 3464 / RFC 3461), read back with the stdlib ``email`` parser as an
independent reader of multipart/report and message/delivery-status."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Sequence
from email.message import Message
from pathlib import Path

import pytest

from mailmoat.clock import FixedClock
from mailmoat.gateway.deliver import DeliveryReport, RecipientOutcome
from mailmoat.gateway.queue import DeliveryQueue, DSNRecipient, RetryPolicy, build_dsn
from mailmoat.smtp.replies import Reply
from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.store import Outcome, SQLiteStore

T0 = 1_800_000_000.0
MESSAGE = b"From: a@example.net\r\nTo: u@example.org\r\nSubject: the original\r\n\r\nbody\r\n"
POLICY = RetryPolicy(min_backoff=300, max_backoff=4000, jitter=0, max_age=10_000)


class Downstream:
    def __init__(self, outcome: Outcome, code: int, status: str) -> None:
        self.outcome, self.code, self.status = outcome, code, status
        self.dsns: list[tuple[str, bytes]] = []

    async def deliver(self, *, message: bytes, envelope: Envelope, recipients: Sequence[str],
                      destination: str) -> DeliveryReport:
        if destination == "dsn-route":
            assert envelope.mail_from == ""  # RFC 5321 §4.5.5: DSNs use the null sender
            self.dsns += [(r, message) for r in recipients]
            return DeliveryReport(outcomes=tuple(
                RecipientOutcome(recipient=r, outcome="delivered") for r in recipients))
        reply = Reply(code=self.code, status=self.status, text="scripted reply")
        return DeliveryReport(outcomes=tuple(
            RecipientOutcome(recipient=r, outcome=self.outcome, reply=reply,
                             error=f"{self.code} scripted") for r in recipients),
            remote="mx.example.org:25")


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, Spool, FixedClock]]:
    store = await SQLiteStore.open(tmp_path / "q.db", synchronous="OFF")
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)
    yield store, spool, FixedClock(wall=T0)
    await spool.aclose()
    await store.close()


def _parse(data: bytes) -> tuple[Message, list[Message]]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts[:2]] == ["text/plain", "message/delivery-status"]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    return msg, blocks


async def _run(parts, downstream: Downstream, *rcpts: Recipient, mail_from: str = "a@example.net",
               ret: str | None = None, envid: str | None = None, rounds: int = 1,
               **kw: object) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    queue = DeliveryQueue(store, spool, downstream, clock=clock, policy=POLICY,
                          hostname="gw.example.org", dsn_route="dsn-route", **kw)  # type: ignore[arg-type]
    env = Envelope(mail_from=mail_from, rcpts=rcpts, received_at=T0, ret=ret, envid=envid)
    sid = await spool.store(env, MESSAGE)
    await queue.enqueue(sid, env, "smtp://mx")
    for _ in range(rounds):
        await queue.run_once()
        await queue.run_once()  # delivers any DSN queued by the previous round
        due = [d.next_attempt_at for d in await store.list_deliveries(states=("deferred",))]
        if due:
            clock.wall = min(due)


async def test_failed_dsn_rfc3464(parts) -> None:  # type: ignore[no-untyped-def]
    down = Downstream("bounced", 550, "5.1.1")
    rcpt = Recipient(address="u@example.org", orcpt="rfc822;u+2Btag@example.org")
    await _run(parts, down, rcpt, envid="ENV+2B1")
    [(to, dsn)] = down.dsns
    assert to == "a@example.net"
    msg, blocks = _parse(dsn)
    assert msg["To"] == "<a@example.net>"
    assert msg["Auto-Submitted"] == "auto-replied"  # RFC 3834 §5
    per_message, per_rcpt = blocks
    assert per_message["Reporting-MTA"] == "dns; gw.example.org"
    assert per_message["Original-Envelope-Id"] == "ENV+1"  # xtext decoded (RFC 3461 §4)
    assert per_rcpt["Final-Recipient"] == "rfc822; u@example.org"
    assert per_rcpt["Original-Recipient"] == "rfc822;u+tag@example.org"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.org"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 scripted reply"
    returned = msg.get_payload()[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Subject"] == "the original"
    # the bounced original left the spool; only the delivered DSN remains accounted for
    assert parts[1].list() == []


async def test_no_dsn_for_notify_never_or_null_sender(parts) -> None:  # type: ignore[no-untyped-def]
    down = Downstream("bounced", 550, "5.1.1")
    await _run(parts, down, Recipient(address="u@example.org", notify=("NEVER",)))
    await _run(parts, down, Recipient(address="v@example.org"), mail_from="")
    await _run(parts, down, Recipient(address="w@example.org", notify=("DELAY",)))
    assert down.dsns == []


async def test_expired_message_bounces_with_5_4_7_and_headers_only(parts) -> None:  # type: ignore[no-untyped-def]
    down = Downstream("deferred", 451, "4.3.0")
    await _run(parts, down, Recipient(address="u@example.org"), ret="HDRS", rounds=10)
    [(_, dsn)] = down.dsns
    msg, blocks = _parse(dsn)
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.4.7"  # RFC 3463: delivery time expired
    assert blocks[1]["Diagnostic-Code"] == "smtp; 451 4.3.0 scripted reply"
    returned = msg.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Subject: the original" in returned.get_payload().encode()
    assert b"body" not in returned.get_payload().encode()


async def test_one_delayed_dsn_when_the_wait_crosses_the_warning(parts) -> None:  # type: ignore[no-untyped-def]
    down = Downstream("deferred", 451, "4.3.0")
    # Attempts at 0, 300, 900, 2100, 4500, 8500(+4000 capped) ...: the first at or after 2000
    # triggers the one "delayed" DSN; then the age limit bounces it (a "failed" DSN).
    await _run(parts, down, Recipient(address="u@example.org", notify=("DELAY", "FAILURE")),
               rounds=12, delay_warning=2000.0)
    actions = [_parse(dsn)[1][1]["Action"] for _, dsn in down.dsns]
    assert actions == ["delayed", "failed"]
    delayed = _parse(down.dsns[0][1])[1][1]
    assert delayed["Status"] == "4.3.0"
    assert delayed["Will-Retry-Until"] is not None


def test_build_dsn_keeps_peer_text_on_one_line() -> None:
    env = Envelope(mail_from="a@example.net", rcpts=(), received_at=T0)
    evil = DSNRecipient(recipient=Recipient(address="u@example.org"), action="failed",
                        status="5.0.0", diagnostic="550 bad\r\nX-Injected: yes")
    data = build_dsn(reporting_mta="gw", envelope=env, message=None, recipients=[evil],
                     now=T0, message_id="<x@gw>")
    assert b"\r\nX-Injected" not in data
    _, blocks = _parse(data)
    assert blocks[1]["X-Injected"] is None
