"""Two gateway "nodes" (two queues, two store connections) share one PostgreSQL queue: every
message is delivered exactly once, and the per-destination limit holds across nodes.
Skips locally without PostgreSQL; fails under MAILMOAT_REQUIRE_PEERS=1 (conftest.missing)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import missing
from mailmoat.clock import FixedClock
from mailmoat.gateway.deliver import DeliveryReport, RecipientOutcome
from mailmoat.gateway.queue import DeliveryQueue
from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.store import PostgresStore

psycopg = pytest.importorskip("psycopg")
PG_DSN = os.environ.get("MAILMOAT_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
pytestmark = pytest.mark.timeout(60)


class Counting:
    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.active = 0
        self.peak = 0

    async def deliver(self, *, message: bytes, envelope: Envelope, recipients: Sequence[str],
                      destination: str) -> DeliveryReport:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.02)
        self.active -= 1
        self.delivered += recipients
        return DeliveryReport(outcomes=tuple(
            RecipientOutcome(recipient=r, outcome="delivered") for r in recipients))


async def test_two_nodes_share_the_queue(tmp_path: Path) -> None:
    try:
        conn = await psycopg.AsyncConnection.connect(PG_DSN, connect_timeout=3)
        await conn.close()
    except psycopg.Error as exc:
        missing(f"PostgreSQL is not reachable at {PG_DSN!r}: {exc}")
    schema = "mm_test_" + secrets.token_hex(6)
    stores = [await PostgresStore.open(PG_DSN, schema=schema) for _ in range(2)]
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)  # shared, as on a shared disk
    clock = FixedClock(wall=1_800_000_000.0)
    deliverer = Counting()  # one deliverer: its peak counts across both nodes
    try:
        nodes = [DeliveryQueue(s, spool, deliverer, clock=clock, per_destination=2, batch=3,
                               owner=f"node{i}") for i, s in enumerate(stores)]
        expected = []
        for i in range(12):
            env = Envelope(mail_from="a@example.net", received_at=0.0,
                           rcpts=(Recipient(address=f"u{i}@example.org"),))
            sid = await spool.store(env, b"Subject: x\r\n\r\nbody\r\n")
            await nodes[i % 2].enqueue(sid, env, "lmtp://one-destination")
            expected.append(f"u{i}@example.org")
        for _ in range(50):
            done = await asyncio.gather(*(n.run_once() for n in nodes for _ in range(2)))
            if not any(done) and not await stores[0].list_deliveries(
                    states=("queued", "in-flight", "deferred")):
                break
        assert sorted(deliverer.delivered) == sorted(expected)  # each exactly once
        assert deliverer.peak <= 2
        assert spool.list() == []
    finally:
        await spool.aclose()
        for s in stores:
            await s.close()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
