"""The store contract, run against SQLite and PostgreSQL (store_backends.store_fixture)."""

from __future__ import annotations

import asyncio

import pytest
from store_backends import store_fixture  # noqa: F401  (the "store" fixture, two backends)

from mailmoat.store import (
    SCHEMA_VERSION,
    AttemptResult,
    DkimRecord,
    NewDelivery,
    OverrideReason,
    Store,
    TLSRecord,
    Verdict,
)

SID = "01JD0000000000000000000000"


def sid(n: int) -> str:
    return f"01JD{n:022d}"


async def test_migrations_are_versioned_and_idempotent(store: Store) -> None:
    assert await store.schema_version() == SCHEMA_VERSION == 2
    assert await store.migrate() == 2  # second run: nothing to do
    assert await store.schema_version() == 2


async def test_verdict_round_trip_and_upsert(store: Store) -> None:
    verdict = Verdict(
        spool_id=SID, received_at=1700000000.5, client_ip="192.0.2.1", helo="mx.example.net",
        mail_from="bounce@example.net", mail_from_domain="example.net",
        tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
        header_from="example.net", spf_result="pass", spf_domain="example.net",
        spf_scope="mfrom", spf_aligned=True,
        dkim=(DkimRecord(domain="example.net", selector="s1", result="pass", aligned=True),
              DkimRecord(domain="esp.example", selector="k", result="fail")),
        arc_result="pass", arc_sealers=("fwd.example",),
        dmarc_domain="example.net", dmarc_result="pass", dmarc_policy="reject",
        dmarc_dkim="pass", dmarc_spf="pass", disposition="none",
        overrides=(OverrideReason(type="trusted_forwarder", comment="ARC sealer fwd.example"),),
        size=1234,
    )
    await store.record_verdict(verdict)
    got = await store.get_verdict(SID)
    assert got is not None
    # DKIM results are kept as a set (sorted), not in arrival order.
    assert set(got.dkim) == set(verdict.dkim)
    assert got == Verdict(**{**{f: getattr(verdict, f) for f in verdict.__slots__},  # type: ignore[attr-defined]
                             "dkim": got.dkim})
    assert await store.get_verdict(sid(9)) is None
    # Recording again (e.g. after a re-evaluation) replaces the row.
    await store.record_verdict(Verdict(spool_id=SID, received_at=1.0, disposition="reject"))
    again = await store.get_verdict(SID)
    assert again is not None
    assert again.disposition == "reject"
    assert again.dkim == ()


def _v(n: int, ip: str, *, t: float = 1000.0, domain: str = "example.org",
       disposition: str = "none", dkim: str = "pass", spf: str = "pass",
       sigs: tuple[DkimRecord, ...] = (), reasons: tuple[OverrideReason, ...] = ()) -> Verdict:
    return Verdict(
        spool_id=sid(n), received_at=t, client_ip=ip, header_from=domain,
        mail_from_domain=domain, spf_result=spf, spf_domain=domain, spf_scope="mfrom",
        dkim=sigs, dmarc_domain=domain, dmarc_result="pass" if "pass" in (dkim, spf) else "fail",
        dmarc_policy="reject", dmarc_dkim=dkim, dmarc_spf=spf, disposition=disposition,
        overrides=reasons,
    )


async def test_dmarc_aggregate_groups_per_rfc7489_record(store: Store) -> None:
    good = DkimRecord(domain="example.org", selector="s1", result="pass", aligned=True)
    bad = DkimRecord(domain="example.org", selector="s1", result="fail", aligned=True)
    fwd = (OverrideReason(type="forwarded", comment="ARC"),)
    # Two DKIM records in a different order must land in the same group.
    other = DkimRecord(domain="list.example", selector="x", result="pass")
    for v in (
        _v(1, "192.0.2.1", sigs=(good,)),
        _v(2, "192.0.2.1", sigs=(good,)),
        _v(3, "192.0.2.1", sigs=(good, other)),
        _v(4, "192.0.2.1", sigs=(other, good)),
        _v(5, "198.51.100.7", disposition="reject", dkim="fail", spf="fail", sigs=(bad,)),
        _v(6, "198.51.100.7", disposition="none", dkim="fail", spf="fail", sigs=(bad,),
           reasons=fwd),
        _v(7, "192.0.2.1", t=5000.0, sigs=(good,)),   # outside the period
        _v(8, "192.0.2.1", domain="example.com", sigs=(good,)),  # another policy domain
    ):
        await store.record_verdict(v)
    rows = await store.dmarc_aggregate("example.org", 0.0, 2000.0)
    table = sorted(
        (r.source_ip, r.count, r.disposition, r.dkim, r.spf, r.reasons, r.header_from,
         r.envelope_from, tuple(sorted((d.domain, d.result) for d in r.dkim_results)),
         r.spf_domain, r.spf_scope, r.spf_result)
        for r in rows
    )
    # Expected by hand from the eight messages above (RFC 7489 Appendix C "record").
    assert table == sorted([
        ("192.0.2.1", 2, "none", "pass", "pass", (), "example.org", "example.org",
         (("example.org", "pass"),), "example.org", "mfrom", "pass"),
        ("192.0.2.1", 2, "none", "pass", "pass", (), "example.org", "example.org",
         (("example.org", "pass"), ("list.example", "pass")), "example.org", "mfrom", "pass"),
        ("198.51.100.7", 1, "none", "fail", "fail", fwd, "example.org", "example.org",
         (("example.org", "fail"),), "example.org", "mfrom", "fail"),
        ("198.51.100.7", 1, "reject", "fail", "fail", (), "example.org", "example.org",
         (("example.org", "fail"),), "example.org", "mfrom", "fail"),
    ])
    assert sum(r.count for r in rows) == 6
    assert await store.dmarc_aggregate("example.org", 2000.0, 3000.0) == []


async def test_dkim_selectors_seen_are_those_that_verified(store: Store) -> None:
    def sig(selector: str | None, result: str = "pass",
            domain: str = "example.org") -> DkimRecord:
        return DkimRecord(domain=domain, selector=selector, result=result)

    for v in (
        _v(1, "192.0.2.1", t=1000.0, sigs=(sig("s1"),)),
        _v(2, "192.0.2.1", t=3000.0, sigs=(sig("s2"), sig("x", domain="list.example"))),
        # RFC 4343 §3: selector and domain are DNS names, ASCII case-insensitive.
        _v(3, "192.0.2.1", t=2000.0, sigs=(sig("S1", domain="EXAMPLE.org"),)),
        # Only a verified signature proves the key exists: a forged s= (fail, permerror,
        # temperror, neutral) is not learned; neither is a signature without a selector.
        _v(4, "198.51.100.7", t=4000.0, sigs=(sig("forged", "fail"), sig("nokey", "permerror"),
                                             sig("dns", "temperror"), sig("n", "neutral"),
                                             sig(None))),
        _v(5, "192.0.2.1", t=500.0, sigs=(sig("old"),)),
        _v(6, "192.0.2.1", t=5000.0, sigs=(sig("sub", domain="mail.example.org"),
                                          sig("other", domain="example.org.evil"))),
    ):
        await store.record_verdict(v)
    # Most recently verified first: s2 (3000), s1 (1000 and 2000 as S1), old (500).
    assert await store.dkim_selectors_seen("example.org") == ["s2", "s1", "old"]
    assert await store.dkim_selectors_seen("Example.ORG.") == ["s2", "s1", "old"]
    assert await store.dkim_selectors_seen("example.org", since=1500.0) == ["s2", "s1"]
    assert await store.dkim_selectors_seen("example.org", since=3000.0) == ["s2"]
    assert await store.dkim_selectors_seen("example.org", since=3000.5) == []
    assert await store.dkim_selectors_seen("example.org", limit=2) == ["s2", "s1"]
    assert await store.dkim_selectors_seen("example.org", limit=0) == []
    assert await store.dkim_selectors_seen("mail.example.org") == ["sub"]
    assert await store.dkim_selectors_seen("list.example") == ["x"]
    assert await store.dkim_selectors_seen("example.com") == []
    assert await store.dkim_selectors_seen("x' OR '1'='1") == []


async def _enqueue(store: Store, n: int, dest: str = "lmtp:a", now: float = 100.0) -> list[int]:
    return await store.enqueue(
        [NewDelivery(spool_id=sid(1), recipient=f"u{i}@example.org", destination=dest)
         for i in range(n)], now=now)


def _result(outcome: str, t: float, **kw: object) -> AttemptResult:
    return AttemptResult(outcome=outcome, started_at=t, finished_at=t, **kw)  # type: ignore[arg-type]


async def test_enqueue_claim_finish_delivered(store: Store) -> None:
    ids = await _enqueue(store, 2)
    assert len(set(ids)) == 2
    assert await store.unfinished(sid(1)) == 2
    claimed = await store.claim(now=100.0, owner="w1", lease=60, limit=10, per_destination=10)
    assert [d.id for d in claimed] == sorted(ids)
    assert all(d.state == "in-flight" and d.owner == "w1" and d.attempts == 1
               and d.lease_until == 160.0 for d in claimed)
    # Nothing more is due while the lease runs.
    assert await store.claim(now=159.0, owner="w2", lease=60, limit=10, per_destination=10) == []
    tls = TLSRecord(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", verified=True,
                    policy="opportunistic")
    assert await store.finish(ids[0], "w1", _result("delivered", 101.0, reply_code=250,
                                                     reply_text="ok", tls=tls, remote="x:24"))
    got = await store.get(ids[0])
    assert got is not None
    assert got.state == "delivered"
    assert got.owner is None
    assert got.tls == tls
    assert got.last_reply_code == 250
    assert await store.unfinished(sid(1)) == 1
    log = await store.attempts(ids[0])
    assert len(log) == 1
    assert log[0].attempt == 1
    assert log[0].result.outcome == "delivered"
    assert log[0].result.tls == tls
    assert log[0].result.remote == "x:24"


async def test_deferred_is_due_again_at_its_time(store: Store) -> None:
    [row] = await _enqueue(store, 1)
    await store.claim(now=100.0, owner="w1", lease=60, limit=10, per_destination=10)
    assert await store.finish(row, "w1", _result("deferred", 101.0, next_attempt_at=400.0,
                                                  reply_code=451, error="451 try later"))
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.next_attempt_at, d.last_error) == ("deferred", 400.0, "451 try later")
    assert await store.claim(now=399.0, owner="w1", lease=60, limit=10, per_destination=10) == []
    [again] = await store.claim(now=400.0, owner="w1", lease=60, limit=10, per_destination=10)
    assert again.attempts == 2


async def test_expired_lease_returns_to_queue_and_old_owner_loses(store: Store) -> None:
    [row] = await _enqueue(store, 1)
    await store.claim(now=100.0, owner="dead", lease=60, limit=10, per_destination=10)
    [taken] = await store.claim(now=160.0, owner="w2", lease=60, limit=10, per_destination=10)
    assert (taken.id, taken.owner, taken.attempts) == (row, "w2", 2)
    # The first worker wakes up: its result does not overwrite the new owner's claim.
    assert not await store.finish(row, "dead", _result("delivered", 161.0))
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.owner) == ("in-flight", "w2")
    assert await store.finish(row, "w2", _result("delivered", 162.0))
    assert [a.result.outcome for a in await store.attempts(row)] == ["delivered", "delivered"]


async def test_renew_extends_only_own_lease(store: Store) -> None:
    [row] = await _enqueue(store, 1)
    await store.claim(now=100.0, owner="w1", lease=60, limit=10, per_destination=10)
    assert await store.renew([row], "other", 500.0) == 0
    assert await store.renew([row], "w1", 500.0) == 1
    assert await store.claim(now=400.0, owner="w2", lease=60, limit=10, per_destination=10) == []


async def test_per_destination_limit(store: Store) -> None:
    await _enqueue(store, 5, "lmtp:a")
    await _enqueue(store, 2, "smtp:b", now=101.0)
    first = await store.claim(now=200.0, owner="w1", lease=60, limit=10, per_destination=2)
    assert sorted(d.destination for d in first) == ["lmtp:a", "lmtp:a", "smtp:b", "smtp:b"]
    # The limit counts rows in flight across claims.
    assert await store.claim(now=201.0, owner="w2", lease=60, limit=10, per_destination=2) == []
    await store.finish(first[0].id, "w1", _result("delivered", 202.0))
    more = await store.claim(now=203.0, owner="w2", lease=60, limit=10, per_destination=2)
    assert [d.destination for d in more] == [first[0].destination]
    # ``limit`` bounds one claim.
    await _enqueue(store, 3, "maildir:c", now=102.0)
    few = await store.claim(now=204.0, owner="w3", lease=60, limit=1, per_destination=5)
    assert len(few) == 1


async def test_concurrent_claims_never_share_a_row(store: Store) -> None:
    await _enqueue(store, 15, "lmtp:a")
    await _enqueue(store, 15, "smtp:b")
    ids: list[int] = []
    for _ in range(30):  # a claim may skip rows another claim holds: claim until all are out
        batches = await asyncio.gather(*(
            store.claim(now=200.0, owner=f"w{i}", lease=60, limit=5, per_destination=100)
            for i in range(6)))
        ids += [d.id for b in batches for d in b]
        if len(ids) >= 30:
            break
    assert len(ids) == len(set(ids)) == 30


async def test_retry_and_delete(store: Store) -> None:
    [row] = await _enqueue(store, 1)
    await store.claim(now=100.0, owner="w1", lease=60, limit=10, per_destination=10)
    assert not await store.retry(row, now=120.0)  # in flight: not ours to move
    await store.finish(row, "w1", _result("bounced", 101.0, reply_code=550))
    assert await store.unfinished(sid(1)) == 0
    assert await store.retry(row, now=130.0)
    d = await store.get(row)
    assert d is not None
    assert (d.state, d.next_attempt_at) == ("queued", 130.0)
    listed = await store.list_deliveries(states=("queued",))
    assert [x.id for x in listed] == [row]
    assert await store.list_deliveries(states=("delivered",)) == []
    assert [x.id for x in await store.list_deliveries(spool_id=sid(1))] == [row]
    assert await store.delete(row)
    assert not await store.delete(row)
    assert await store.get(row) is None


async def test_values_are_parameters_not_sql(store: Store) -> None:
    evil = "x'); DROP TABLE deliveries; --@example.org"
    [row] = await store.enqueue(
        [NewDelivery(spool_id=SID, recipient=evil, destination="lmtp:a")], now=1.0)
    d = await store.get(row)
    assert d is not None
    assert d.recipient == evil


@pytest.mark.parametrize("bad", ["Robert'; --", "UPPER", "1abc", ""])
def test_bad_schema_names_refused(bad: str) -> None:
    from mailmoat.errors import StoreError
    from mailmoat.store import PostgresStore

    with pytest.raises(StoreError):
        PostgresStore("host=127.0.0.1", schema=bad)


async def test_per_destination_limit_holds_under_concurrent_claims(store: Store) -> None:
    # Several claimers at once (several connections on PostgreSQL): never more than the
    # limit in flight for one destination.
    await _enqueue(store, 12, "lmtp:a")
    for round_ in range(3):
        batches = await asyncio.gather(*(
            store.claim(now=200.0 + round_, owner=f"w{i}", lease=600, limit=10,
                        per_destination=3) for i in range(5)))
        in_flight = await store.list_deliveries(states=("in-flight",))
        assert len(in_flight) <= 3
        assert sum(len(b) for b in batches) <= 3
    assert len(await store.list_deliveries(states=("in-flight",))) == 3
