"""Crash tests of the running gateway: ``kill -9`` while a downstream delivery is in progress.

The window (what both tests provoke): the queue worker has claimed the delivery row
(``in-flight``, under a lease, owner ``HOST:PID:TOKEN``) and sent the whole message to the
LMTP downstream, which stalls before its reply to the content. The worker process dies by
SIGKILL there. The downstream got the bytes but never said 250, and the store row still says
``in-flight`` with the dead worker as owner: nothing marked the message delivered and the
spool file is kept.

* one worker (the worker is the ``mailmoat serve`` process): serve is restarted on the same
  data directory;
* two workers: the worker named in the row's owner is killed by its PID; the supervisor
  starts another; no restart.

Once the dead worker's lease ([delivery] lease = 3 s) has run out, the row is claimed again
and the message is delivered: at least once, never zero times. The content crossed the wire
twice: had the downstream stored the first copy before stalling, the mailbox would hold a
duplicate (the RFC 5321 §6.1 trade-off; the count is asserted, not hidden). Afterwards the
row is ``delivered`` with two attempts, the spool is empty and the message has exactly one
verdict row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dovecot_fixture import FakeLMTP
from inbound_e2e_fixture import (
    GATEWAY_HOST,
    SOURCES,
    Keys,
    serve_log,
    start_gateway,
    store_call,
    swaks,
    verdict_rows,
    worker_pids,
    write_config,
    zones,
)
from knot_fixture import KnotServer, start_knot
from server_fixture import RunningServer

from conftest import require_peer
from mailmoat.auth.dkim import sign
from mailmoat.spool import Spool
from mailmoat.store import Delivery, Store

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.peer("swaks"), pytest.mark.timeout(120)]

RCPT = f"bob@{GATEWAY_HOST}"
LEASE = 3.0


@dataclass
class DNS:
    knot: KnotServer
    keys: Keys


@pytest.fixture(scope="module")
def dns() -> Iterator[DNS]:
    require_peer("knotd")
    require_peer("swaks")
    keys = Keys.generate()
    with start_knot(zones(keys)) as knot:
        yield DNS(knot=knot, keys=keys)


@pytest.fixture
async def stalling() -> AsyncIterator[FakeLMTP]:
    """An LMTP server (in this event loop) that takes the content and never answers."""
    fake = FakeLMTP(stall=True)
    await fake.start()
    yield fake
    await fake.stop()


async def _until(predicate: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = predicate()
    return value


async def _rows(data_dir: Path, spool_id: str) -> list[Delivery]:
    async def get(store: Store) -> list[Delivery]:
        return await store.list_deliveries(spool_id=spool_id)

    return await asyncio.to_thread(store_call, data_dir, get)


async def _send_until_stalled(dns: DNS, fake: FakeLMTP, gateway: RunningServer,
                              tmp: Path) -> tuple[str, Delivery]:
    """Send one signed message; return (spool ID, its row) once the downstream holds it."""
    raw = (f"From: Alice <alice@good.test>\r\nTo: {RCPT}\r\nSubject: crash\r\n"
           f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
           f"Message-ID: <crash-{time.monotonic_ns()}@good.test>\r\n\r\n"
           "delivered at least once\r\n").encode()
    msg = sign(raw, "good.test", "ed1", dns.keys["ed1._domainkey.good.test"],
               timestamp=int(time.time())) + raw
    result = await asyncio.to_thread(
        swaks, gateway.port("starttls", "mx"), msg, mail_from="alice@good.test", rcpt=RCPT,
        source=SOURCES["legit"], helo="sender.good.test", tmp=tmp)
    spool_id = result.queued_id
    assert spool_id, result.transcript[-2000:]
    # The worker sent the content; the downstream holds back its reply.
    assert await _until(lambda: fake.received, 20), serve_log(gateway.config)[-4000:]
    [row] = await _rows(gateway.data_dir, spool_id)
    assert row.state == "in-flight", row
    assert fake.delivered == []
    return spool_id, row


async def _delivered_after_lease(data_dir: Path, spool_id: str, config: Path) -> Delivery:
    deadline = time.monotonic() + LEASE + 20
    while time.monotonic() < deadline:
        done = [d for d in await _rows(data_dir, spool_id) if d.state == "delivered"]
        if done:
            break
        await asyncio.sleep(0.2)
    assert done, (await _rows(data_dir, spool_id), serve_log(config)[-4000:])
    assert await _until(lambda: Spool(data_dir / "spool").list() == [], 10)
    return done[0]


def _at_least_once(fake: FakeLMTP, row: Delivery, data_dir: Path, spool_id: str) -> None:
    # Accepted once by the downstream; the content crossed twice (a duplicate, had the first
    # copy been stored before the stall): counted here.
    assert [r for r, _ in fake.delivered] == [RCPT]
    assert len(fake.received) == 2
    for _, body in fake.received:
        assert b"delivered at least once" in body
        assert f"Authentication-Results: {GATEWAY_HOST};".encode() in body
    assert row.attempts == 2, row
    assert [r["spool_id"] for r in verdict_rows(data_dir)] == [spool_id]


def _config(dns: DNS, fake: FakeLMTP, tmp: Path, workers: int = 1) -> Path:
    return write_config(tmp / "gw", dns=dns.knot.address, workers=workers,
                        destination=f"lmtp://127.0.0.1:{fake.port}",
                        delivery=f"lease = {LEASE}\nmin_backoff = 1.0\nmax_backoff = 2.0")


async def test_kill_9_mid_lmtp_delivery_then_restart_delivers(
        dns: DNS, stalling: FakeLMTP, tmp_path: Path) -> None:
    config = _config(dns, stalling, tmp_path)
    gateway = await asyncio.to_thread(start_gateway, config)
    try:
        spool_id, _ = await _send_until_stalled(dns, stalling, gateway, tmp_path)
        os.kill(gateway.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(gateway.proc.wait, 10)
        assert gateway.proc.returncode == -signal.SIGKILL
    finally:
        gateway.stop()
    assert stalling.delivered == []
    assert Spool(gateway.data_dir / "spool").list() == [spool_id]
    [row] = await _rows(gateway.data_dir, spool_id)
    assert row.state == "in-flight"  # nobody finished it
    stalling.stall = False
    restarted = await asyncio.to_thread(start_gateway, config)
    try:
        row = await _delivered_after_lease(restarted.data_dir, spool_id, config)
    finally:
        assert restarted.stop() == 0
    _at_least_once(stalling, row, restarted.data_dir, spool_id)


async def test_kill_9_delivering_worker_of_two(dns: DNS, stalling: FakeLMTP,
                                               tmp_path: Path) -> None:
    config = _config(dns, stalling, tmp_path, workers=2)
    gateway = await asyncio.to_thread(start_gateway, config, workers=2)
    try:
        workers = await asyncio.to_thread(worker_pids, gateway, 2)
        spool_id, row = await _send_until_stalled(dns, stalling, gateway, tmp_path)
        assert row.owner is not None
        owner_pid = int(row.owner.split(":")[1])
        assert owner_pid in workers, (row.owner, workers)
        stalling.stall = False  # the next attempt gets its 250
        os.kill(owner_pid, signal.SIGKILL)
        row = await _delivered_after_lease(gateway.data_dir, spool_id, config)
        assert gateway.proc.poll() is None, "the supervisor must survive its worker's death"
        assert row.owner is None or str(owner_pid) not in row.owner
    finally:
        assert gateway.stop() == 0
    _at_least_once(stalling, row, gateway.data_dir, spool_id)
