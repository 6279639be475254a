"""The delivery queue over a real spool and a SQLite store, with a fixed clock and a scripted
deliverer: backoff, maximum age, lease expiry, per-destination limits, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailmoat.clock import FixedClock
from mailmoat.gateway.deliver import DeliveryReport, RecipientOutcome
from mailmoat.gateway.queue import DeliveryQueue, RetryPolicy
from mailmoat.smtp.replies import Reply
from mailmoat.spool import Envelope, Recipient, Spool, SpoolID
from mailmoat.store import AttemptResult, Delivery, Outcome, SQLiteStore, Store, TLSRecord

T0 = 1_800_000_000.0
MESSAGE = b"From: a@example.net\r\nTo: u@example.org\r\nSubject: t\r\n\r\nhello\r\n"


@dataclass
class Scripted:
    """A deliverer answering from a script: outcome per call (last one repeats)."""

    script: list[Outcome | Exception]
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)

    async def deliver(self, *, message: bytes, envelope: Envelope, recipients: Sequence[str],
                      destination: str) -> DeliveryReport:
        assert message == MESSAGE
        self.calls.append((destination, tuple(recipients)))
        self.active[destination] = self.active.get(destination, 0) + 1
        self.peak[destination] = max(self.peak.get(destination, 0), self.active[destination])
        try:
            if self.gate is not None:
                await self.gate.wait()
            step = self.script[min(len(self.calls), len(self.script)) - 1]
            if isinstance(step, Exception):
                raise step
            code = {"delivered": 250, "deferred": 451, "bounced": 550}[step]
            reply = Reply(code=code, status=None, text="scripted")
            return DeliveryReport(
                outcomes=tuple(RecipientOutcome(recipient=r, outcome=step, reply=reply,
                                                error=None if code == 250 else f"{code} scripted")
                               for r in recipients),
                remote="fake:1", tls=TLSRecord(version="TLSv1.3", cipher="X", verified=False,
                                               policy="opportunistic"))
        finally:
            self.active[destination] -= 1


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Store, Spool, FixedClock]]:
    store = await SQLiteStore.open(tmp_path / "q.db", synchronous="OFF")
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)
    yield store, spool, FixedClock(wall=T0)
    await spool.aclose()
    await store.close()


async def _spool(spool: Spool, *rcpts: str) -> tuple[SpoolID, Envelope]:
    env = Envelope(mail_from="a@example.net", rcpts=tuple(Recipient(address=r) for r in rcpts),
                   received_at=T0)
    return await spool.store(env, MESSAGE), env


POLICY = RetryPolicy(min_backoff=300, max_backoff=4000, factor=2, jitter=0.2, max_age=5 * 86400)


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    # Postfix-style doubling from minimal_backoff_time to maximal_backoff_time (limits.py).
    mid = [POLICY.delay(n, lambda: 0.5) for n in range(1, 8)]
    assert mid == [300, 600, 1200, 2400, 4000, 4000, 4000]
    assert POLICY.delay(1, lambda: 0.0) == pytest.approx(240)
    assert POLICY.delay(1, lambda: 0.999999) == pytest.approx(360, rel=1e-5)
    assert POLICY.delay(9, lambda: 0.0) == pytest.approx(3200)
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(min_backoff=10, max_backoff=5)


async def test_tempfail_then_recovery_is_retried_and_delivered(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    deliverer = Scripted(["deferred", "deferred", "delivered"])
    queue = DeliveryQueue(store, spool, deliverer, clock=clock, random=lambda: 0.5,
                          policy=POLICY)
    sid, env = await _spool(spool, "u@example.org")
    [row] = await queue.enqueue(sid, env, "lmtp://x:24")
    assert await queue.run_once() == 1
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.next_attempt_at, d.last_reply_code) == ("deferred", T0 + 300, 451)
    assert spool.list() == [sid]  # kept while a retry is pending
    clock.advance(299)
    assert await queue.run_once() == 0  # not due yet
    clock.advance(1)
    assert await queue.run_once() == 1
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.next_attempt_at) == ("deferred", T0 + 300 + 600)
    clock.advance(600)
    assert await queue.run_once() == 1
    d = await store.get(row)
    assert d is not None
    assert d.state == "delivered"
    assert d.attempts == 3
    assert spool.list() == []  # removed once every row is final
    log = await store.attempts(row)
    assert [a.result.outcome for a in log] == ["deferred", "deferred", "delivered"]
    assert log[0].result.tls == TLSRecord(version="TLSv1.3", cipher="X", verified=False,
                                          policy="opportunistic")


async def test_maximum_age_bounces_and_calls_the_hook(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    bounced: list[tuple[Delivery, AttemptResult]] = []

    async def hook(row: Delivery, result: AttemptResult) -> None:
        bounced.append((row, result))

    policy = RetryPolicy(min_backoff=300, max_backoff=4000, jitter=0, max_age=1000)
    queue = DeliveryQueue(store, spool, Scripted(["deferred"]), clock=clock, policy=policy,
                          on_bounce=hook)
    sid, env = await _spool(spool, "u@example.org")
    [row] = await queue.enqueue(sid, env, "smtp://x")
    times = []
    for _ in range(10):
        if await queue.run_once():
            times.append(clock.now() - T0)
        d = await store.get(row)
        assert d is not None
        if d.state == "bounced":
            break
        clock.wall = d.next_attempt_at
    # Attempts at 0, 300, 900 (+600), then the 1200 wait is cut to the age limit, 1000.
    assert times == [0, 300, 900, 1000]
    assert d.state == "bounced"
    assert d.last_error is not None
    assert "maximum age" in d.last_error
    assert [r.id for r, _ in bounced] == [row]
    assert spool.list() == []


async def test_permanent_failure_bounces_at_once(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    queue = DeliveryQueue(store, spool, Scripted(["bounced"]), clock=clock, policy=POLICY)
    sid, env = await _spool(spool, "u@example.org")
    [row] = await queue.enqueue(sid, env, "smtp://x")
    await queue.run_once()
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.attempts, d.last_reply_code) == ("bounced", 1, 550)


async def test_deliverer_exception_defers_never_drops(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    queue = DeliveryQueue(store, spool, Scripted([RuntimeError("bug"), "delivered"]),
                          clock=clock, policy=POLICY, random=lambda: 0.5)
    sid, env = await _spool(spool, "u@example.org")
    [row] = await queue.enqueue(sid, env, "smtp://x")
    await queue.run_once()
    d = await store.get(row)
    assert d is not None
    assert d.state == "deferred"
    assert d.last_error is not None
    assert "bug" in d.last_error
    assert spool.list() == [sid]
    clock.advance(300)
    await queue.run_once()
    d = await store.get(row)
    assert d is not None
    assert d.state == "delivered"


async def test_recipients_of_one_destination_share_one_delivery(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    deliverer = Scripted(["delivered"])
    queue = DeliveryQueue(store, spool, deliverer, clock=clock, policy=POLICY)
    sid, env = await _spool(spool, "a@example.org", "b@example.org", "c@other.example")
    await queue.enqueue(sid, env, lambda e, r: "lmtp://x" if r.address.endswith(
        "example.org") else "mx:other.example")
    assert await queue.run_once() == 3
    assert sorted(deliverer.calls) == [("lmtp://x", ("a@example.org", "b@example.org")),
                                       ("mx:other.example", ("c@other.example",))]
    assert spool.list() == []


async def test_expired_lease_is_taken_over_after_a_worker_dies(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    stuck = Scripted(["delivered"], gate=asyncio.Event())  # never opens: the worker "hangs"
    dead = DeliveryQueue(store, spool, stuck, clock=clock, policy=POLICY, lease=120,
                         owner="dead")
    sid, env = await _spool(spool, "u@example.org")
    [row] = await dead.enqueue(sid, env, "lmtp://x")
    task = asyncio.create_task(dead.run_once())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if stuck.calls:
            break
    task.cancel()  # the worker dies mid-delivery; its row stays "in-flight"
    with pytest.raises(asyncio.CancelledError):
        await task
    live = DeliveryQueue(store, spool, Scripted(["delivered"]), clock=clock, policy=POLICY,
                         lease=120, owner="live")
    clock.advance(119)
    assert await live.run_once() == 0  # the lease still runs
    clock.advance(1)
    assert await live.run_once() == 1
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.attempts) == ("delivered", 2)
    assert spool.list() == []


async def test_per_destination_concurrency_limit(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    gate = asyncio.Event()
    deliverer = Scripted(["delivered"], gate=gate)
    queue = DeliveryQueue(store, spool, deliverer, clock=clock, policy=POLICY,
                          per_destination=2)
    for i in range(5):
        sid, env = await _spool(spool, f"u{i}@example.org")
        await queue.enqueue(sid, env, "lmtp://slow")
    sid, env = await _spool(spool, "v@example.net")
    await queue.enqueue(sid, env, "lmtp://fast")
    first = asyncio.create_task(queue.run_once())
    second = asyncio.create_task(queue.run_once())  # a second worker finds nothing more
    await asyncio.sleep(0.2)
    assert deliverer.active == {"lmtp://slow": 2, "lmtp://fast": 1}
    gate.set()
    assert sorted([await first, await second]) == [0, 3]
    for _ in range(3):
        await queue.run_once()
    assert deliverer.peak == {"lmtp://slow": 2, "lmtp://fast": 1}
    assert len(deliverer.calls) == 6
    assert spool.list() == []


async def test_recover_enqueues_orphans_and_removes_finished(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    queue = DeliveryQueue(store, spool, Scripted(["delivered"]), clock=clock, policy=POLICY)
    orphan, _ = await _spool(spool, "u@example.org")  # crash between commit and enqueue
    done, env = await _spool(spool, "w@example.org")
    [row] = await queue.enqueue(done, env, "lmtp://x")
    claimed = await store.claim(now=clock.now(), owner="x", lease=60, limit=1,
                                per_destination=9)
    assert [c.id for c in claimed] == [row]
    # crash between the last finish and the spool removal:
    await store.finish(row, "x", AttemptResult(outcome="delivered", started_at=T0,
                                               finished_at=T0))
    report = await queue.recover("lmtp://x")
    assert report.enqueued == (orphan,)
    assert report.removed == (done,)
    assert spool.list() == [orphan]
    assert await queue.run_once() == 1
    assert spool.list() == []


async def test_run_loop_stops_and_is_woken_by_enqueue(parts) -> None:  # type: ignore[no-untyped-def]
    store, spool, clock = parts
    deliverer = Scripted(["delivered"])
    queue = DeliveryQueue(store, spool, deliverer, clock=clock, policy=POLICY)
    stop = asyncio.Event()
    runner = asyncio.create_task(queue.run(stop, workers=2, poll_interval=30))
    await asyncio.sleep(0.05)
    sid, env = await _spool(spool, "u@example.org")
    await queue.enqueue(sid, env, "lmtp://x")
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not spool.list():
            break
    assert spool.list() == []
    stop.set()
    await asyncio.wait_for(runner, 5)
