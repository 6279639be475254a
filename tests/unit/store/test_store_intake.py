"""Store.intake: delivery rows and verdicts in one transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from store_backends import store_fixture  # noqa: F401  (the "store" fixture, two backends)

from mailmoat.errors import StoreError
from mailmoat.store import NewDelivery, Store, Verdict


def sid(n: int) -> str:
    return f"01JI{n:022d}"


def _verdict(n: int, disposition: str = "none") -> Verdict:
    return Verdict(spool_id=sid(n), received_at=1000.0 + n, client_ip="192.0.2.7",
                   header_from="example.org", dmarc_domain="example.org", dmarc_result="pass",
                   disposition=disposition)


async def test_intake_queues_rows_and_records_verdicts(store: Store) -> None:
    items = [
        NewDelivery(spool_id=sid(1), recipient="a@example.com", destination="mx:example.com"),
        NewDelivery(spool_id=sid(1), recipient="b@local.test", destination="lmtp:/run/lmtp"),
        NewDelivery(spool_id=sid(2), recipient="c@example.com", destination="mx:example.com"),
    ]
    ids = await store.intake(items, [_verdict(1), _verdict(2, "quarantine")], now=500.0)
    assert len(ids) == 3
    assert len(set(ids)) == 3
    for row_id, item in zip(ids, items, strict=True):
        got = await store.get(row_id)
        assert got is not None
        assert (got.spool_id, got.recipient, got.destination) == (
            item.spool_id, item.recipient, item.destination)
        assert got.state == "queued"
        assert got.attempts == 0
        assert got.created_at == got.next_attempt_at == got.updated_at == 500.0
    assert await store.get_verdict(sid(1)) == _verdict(1)
    assert await store.get_verdict(sid(2)) == _verdict(2, "quarantine")
    assert await store.unfinished(sid(1)) == 2
    # The rows are claimable as enqueue()'s are.
    claimed = await store.claim(now=500.0, owner="w1", lease=30.0, limit=10, per_destination=10)
    assert sorted(d.id for d in claimed) == sorted(ids)


async def test_intake_accepts_empty_parts(store: Store) -> None:
    assert await store.intake([], [], now=1.0) == []
    # Verdicts only (e.g. every recipient was refused after DATA) and rows only (submission).
    assert await store.intake([], [_verdict(3)], now=1.0) == []
    assert await store.get_verdict(sid(3)) == _verdict(3)
    ids = await store.intake(
        [NewDelivery(spool_id=sid(4), recipient="d@example.com", destination="mx:example.com")],
        [], now=2.0)
    assert len(ids) == 1
    assert await store.get_verdict(sid(4)) is None


async def test_intake_replaces_an_earlier_verdict(store: Store) -> None:
    await store.record_verdict(_verdict(5, "none"))
    await store.intake([], [_verdict(5, "reject")], now=1.0)
    got = await store.get_verdict(sid(5))
    assert got is not None
    assert got.disposition == "reject"


async def test_intake_is_all_or_nothing(store: Store) -> None:
    good = NewDelivery(spool_id=sid(6), recipient="e@example.com", destination="mx:example.com")
    # recipient is NOT NULL in the schema: the third row fails after the verdict and the
    # first row went in, and the whole transaction must roll back.
    bad = NewDelivery(spool_id=sid(7), recipient=None, destination="mx:example.com")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await store.intake([good, good, bad], [_verdict(6)], now=3.0)
    assert await store.get_verdict(sid(6)) is None
    assert await store.list_deliveries() == []
    # The backend is usable afterwards (the failed transaction did not poison a connection).
    ids = await store.intake([good], [_verdict(6)], now=4.0)
    assert len(ids) == 1
    assert await store.get_verdict(sid(6)) == _verdict(6)


async def test_concurrent_intakes_get_distinct_ids(store: Store) -> None:
    async def batch(k: int) -> list[int]:
        items = [NewDelivery(spool_id=sid(100 + k), recipient=f"r{j}@example.com",
                             destination="mx:example.com") for j in range(5)]
        return await store.intake(items, [_verdict(100 + k)], now=10.0)

    results = await asyncio.gather(*(batch(k) for k in range(8)))
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == 40
    rows = await store.list_deliveries(limit=100)
    assert sorted(d.id for d in rows) == sorted(ids)
    for k, r in enumerate(results):
        for row_id in r:
            got = await store.get(row_id)
            assert got is not None
            assert got.spool_id == sid(100 + k)
        assert await store.get_verdict(sid(100 + k)) == _verdict(100 + k)
