"""TLS-RPT detail per attempt and the per-session log (RFC 8460 §4.3, §4.4), on SQLite and
PostgreSQL, and the migration of a version-1 database.

Expected counts are worked out by hand from the sessions each test writes: a report counts
SMTP sessions (RFC 8460 §4.4 total-successful-session-count / total-failure-session-count),
so a session recorded with several recipients' rows counts once.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from store_backends import (  # noqa: F401  (store_fixture: the "store" fixture)
    PG_DSN,
    drop_schema,
    pg_connection,
    store_fixture,
)

from mailmoat.store import (
    SCHEMA_VERSION,
    AttemptResult,
    NewDelivery,
    SQLiteStore,
    Store,
    TLSFailure,
    TLSPolicySummary,
    TLSRecord,
    TLSSession,
)
from mailmoat.store import _schema as S

STS_LINES = ("version: STSv1", "mode: enforce", "mx: *.mx.example.net", "max_age: 604800")
STS_MX = ("*.mx.example.net",)
TLSA = ("3 1 1 " + "ab" * 32,)


def sts(sid: str, mx: str, ip: str, *, result: str | None = None, success: bool | None = True,
        reason: str | None = None, domain: str = "example.net") -> TLSSession:
    return TLSSession(id=sid, policy_type="sts", policy_domain=domain, policy_string=STS_LINES,
                      mx_patterns=STS_MX, mx_host=mx, receiving_ip=ip, result_type=result,
                      success=success, reason=reason)


async def _finish(store: Store, t: float, sessions: tuple[TLSSession, ...], *,
                  recipients: int = 1, domain: str = "example.net") -> list[int]:
    """One delivery attempt to ``recipients`` rows, every row recording the same sessions
    (as the queue does for a message to several recipients at one domain)."""
    ids = await store.enqueue([NewDelivery(spool_id=f"01JT{int(t):022d}",
                                           recipient=f"r{i}@{domain}",
                                           destination=f"mx:{domain}")
                               for i in range(recipients)], now=t)
    await store.claim(now=t, owner="w", lease=60, limit=100, per_destination=100)
    last = sessions[-1] if sessions else None
    tls = TLSRecord(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", verified=True,
                    policy="mta-sts-enforce", policy_type=last.policy_type if last else None,
                    mx_host=last.mx_host if last else None,
                    receiving_ip=last.receiving_ip if last else None,
                    result_type=last.result_type if last else None,
                    success=last.success if last else None, sessions=sessions)
    for row in ids:
        assert await store.finish(row, "w", AttemptResult(
            outcome="delivered", started_at=t, finished_at=t + 1, reply_code=250, tls=tls))
    return ids


async def test_attempt_keeps_the_rfc8460_detail(store: Store) -> None:
    session = sts("s-1", "a.mx.example.net", "192.0.2.1", result="certificate-expired",
                  success=False, reason="certificate has expired")
    [row] = await _finish(store, 1000.0, (session,))
    expected = TLSRecord(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", verified=True,
                         policy="mta-sts-enforce", policy_type="sts",
                         mx_host="a.mx.example.net", receiving_ip="192.0.2.1",
                         result_type="certificate-expired", success=False)
    [attempt] = await store.attempts(row)
    assert attempt.result.tls == expected
    assert attempt.result.tls is not None
    assert attempt.result.tls.sessions == ()  # sessions are kept in the TLS-RPT log only
    delivery = await store.get(row)
    assert delivery is not None
    assert delivery.tls == expected


async def test_tls_attempts_counts_sessions_per_policy(store: Store) -> None:
    # Day 1 (t in [0, 86400)), example.net:
    #  delivery A (3 recipients): a.mx expired certificate, then b.mx fine -> 1 fail, 1 ok
    #  delivery B: b.mx fine                                                   -> 1 ok
    #  delivery C: a.mx expired again, c.mx unreachable (no TLS outcome)        -> 1 fail
    #  delivery D: DANE host, TLSA mismatch then match                          -> tlsa 1/1
    #  delivery E: no policy, server without STARTTLS                           -> 1 fail
    await _finish(store, 100.0, (
        sts("A-0", "a.mx.example.net", "192.0.2.1", result="certificate-expired",
            success=False, reason="certificate has expired"),
        sts("A-1", "b.mx.example.net", "192.0.2.2")), recipients=3)
    await _finish(store, 200.0, (sts("B-0", "b.mx.example.net", "192.0.2.2"),))
    await _finish(store, 300.0, (
        sts("C-0", "a.mx.example.net", "192.0.2.1", result="certificate-expired",
            success=False, reason="certificate has expired"),
        sts("C-1", "c.mx.example.net", "192.0.2.3", success=None, reason="connect: refused")))
    await _finish(store, 400.0, (
        TLSSession(id="D-0", policy_type="tlsa", policy_domain="example.net",
                   policy_string=TLSA, mx_host="d.example.net", receiving_ip="192.0.2.4",
                   result_type="validation-failure", success=False, reason="no TLSA match"),
        TLSSession(id="D-1", policy_type="tlsa", policy_domain="example.net",
                   policy_string=TLSA, mx_host="d.example.net", receiving_ip="192.0.2.5",
                   success=True)))
    await _finish(store, 500.0, (
        TLSSession(id="E-0", policy_type="no-policy-found", policy_domain="example.net",
                   mx_host="plain.example.net", receiving_ip="192.0.2.6",
                   result_type="starttls-not-supported", success=False,
                   reason="no STARTTLS"),))
    # Outside the period, or another domain: not counted.
    await _finish(store, 86400.0, (sts("F-0", "b.mx.example.net", "192.0.2.2"),))
    await _finish(store, 600.0, (sts("G-0", "mx.other.example", "192.0.2.9",
                                     domain="other.example"),), domain="other.example")

    got = await store.tls_attempts("Example.NET.", 0.0, 86400.0)
    assert got == [
        TLSPolicySummary(
            policy_type="no-policy-found", policy_domain="example.net", policy_string=(),
            mx_patterns=(), successful=0, failed=1,
            failures=(TLSFailure(result_type="starttls-not-supported",
                                 mx_host="plain.example.net", receiving_ip="192.0.2.6",
                                 reason="no STARTTLS", count=1),)),
        TLSPolicySummary(
            policy_type="sts", policy_domain="example.net", policy_string=STS_LINES,
            mx_patterns=STS_MX, successful=2, failed=2,
            failures=(TLSFailure(result_type="certificate-expired",
                                 mx_host="a.mx.example.net", receiving_ip="192.0.2.1",
                                 reason="certificate has expired", count=2),)),
        TLSPolicySummary(
            policy_type="tlsa", policy_domain="example.net", policy_string=TLSA,
            mx_patterns=(), successful=1, failed=1,
            failures=(TLSFailure(result_type="validation-failure", mx_host="d.example.net",
                                 receiving_ip="192.0.2.4", reason="no TLSA match",
                                 count=1),)),
    ]
    [other] = await store.tls_attempts("other.example", 0.0, 86400.0)
    assert (other.successful, other.failed) == (1, 0)
    [next_day] = await store.tls_attempts("example.net", 86400.0, 2 * 86400.0)
    assert (next_day.policy_type, next_day.successful, next_day.failed) == ("sts", 1, 0)
    assert await store.tls_attempts("example.net", 1000.0, 2000.0) == []
    assert await store.tls_attempts("x' OR '1'='1", 0.0, 1e12) == []


async def test_a_long_reason_is_bounded(store: Store) -> None:
    await _finish(store, 10.0, (sts("L-0", "a.mx.example.net", "192.0.2.1",
                                    result="validation-failure", success=False,
                                    reason="x" * 5000),))
    [summary] = await store.tls_attempts("example.net", 0.0, 100.0)
    [failure] = summary.failures
    assert failure.reason == "x" * S.TLS_REASON_MAX


def _v1_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(S.ddl(S.VERSION_TABLE, "sqlite"))
    for statement in S.MIGRATIONS[0][1]:
        conn.execute(S.ddl(statement, "sqlite"))
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute(
        "INSERT INTO deliveries (spool_id, recipient, destination, state, attempts, "
        "created_at, next_attempt_at, tls_version, tls_cipher, tls_verified, tls_policy, "
        "updated_at) VALUES ('01JOLD', 'u@example.net', 'mx:example.net', 'delivered', 1, "
        "1.0, 1.0, 'TLSv1.2', 'ECDHE-RSA-AES128-GCM-SHA256', 1, 'opportunistic', 2.0)")
    conn.execute(
        "INSERT INTO attempts (delivery_id, spool_id, recipient, destination, attempt, "
        "outcome, started_at, finished_at, tls_version, tls_cipher, tls_verified, tls_policy) "
        "VALUES (1, '01JOLD', 'u@example.net', 'mx:example.net', 1, 'delivered', 1.0, 2.0, "
        "'TLSv1.2', 'ECDHE-RSA-AES128-GCM-SHA256', 1, 'opportunistic')")
    conn.commit()
    conn.close()


async def test_a_version_1_sqlite_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v1_sqlite(path)
    store = await SQLiteStore.open(path, synchronous="OFF")
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 2
        old = TLSRecord(version="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256", verified=True,
                        policy="opportunistic")
        delivery = await store.get(1)
        assert delivery is not None
        assert delivery.tls == old  # the new columns are empty for old rows
        [attempt] = await store.attempts(1)
        assert attempt.result.tls == old
        assert await store.tls_attempts("example.net", 0.0, 1e12) == []
        await _finish(store, 50.0, (sts("N-0", "a.mx.example.net", "192.0.2.1"),))
        [summary] = await store.tls_attempts("example.net", 0.0, 100.0)
        assert (summary.successful, summary.failed) == (1, 0)
    finally:
        await store.close()


async def test_a_version_1_postgres_schema_is_migrated() -> None:
    conn = await pg_connection()
    from psycopg import sql

    from mailmoat.store import PostgresStore

    schema = "mm_test_" + secrets.token_hex(6)
    async with conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute(S.ddl(S.VERSION_TABLE, "postgres"))
        for statement in S.MIGRATIONS[0][1]:
            await conn.execute(S.ddl(statement, "postgres"))
        await conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        await conn.execute(
            "INSERT INTO deliveries (spool_id, recipient, destination, state, attempts, "
            "created_at, next_attempt_at, tls_version, tls_verified, tls_policy, updated_at) "
            "VALUES ('01JOLD', 'u@example.net', 'mx:example.net', 'delivered', 1, 1, 1, "
            "'TLSv1.3', true, 'dane', 2)")
    try:
        store = await PostgresStore.open(PG_DSN, schema=schema)
        try:
            assert await store.schema_version() == 2
            [row] = await store.list_deliveries()
            assert row.tls == TLSRecord(version="TLSv1.3", verified=True, policy="dane")
            await _finish(store, 50.0, (sts("P-0", "a.mx.example.net", "192.0.2.1",
                                            result="certificate-expired", success=False),))
            [summary] = await store.tls_attempts("example.net", 0.0, 100.0)
            assert (summary.successful, summary.failed) == (0, 1)
        finally:
            await store.close()
    finally:
        await drop_schema(schema)


async def test_a_policy_fetch_failure_is_counted_without_an_mx(store: Store) -> None:
    # RFC 8460 §4.3.2.2 sts-policy-fetch-error: the TXT record announced a policy, the HTTPS
    # fetch failed; the delivery then went on without a policy (one TLS session to b.mx).
    await _finish(store, 100.0, (
        TLSSession(id="H-sts", policy_type="sts", policy_domain="example.net",
                   result_type="sts-policy-fetch-error", success=False,
                   reason="https://mta-sts.example.net/.well-known/mta-sts.txt: HTTP 404"),
        TLSSession(id="H-0", policy_type="no-policy-found", policy_domain="example.net",
                   mx_host="b.mx.example.net", receiving_ip="192.0.2.2", success=True)))
    got = {s.policy_type: s for s in await store.tls_attempts("example.net", 0.0, 1000.0)}
    assert (got["sts"].successful, got["sts"].failed) == (0, 1)
    [failure] = got["sts"].failures
    assert (failure.result_type, failure.mx_host, failure.receiving_ip) == (
        "sts-policy-fetch-error", None, None)
    assert (got["no-policy-found"].successful, got["no-policy-found"].failed) == (1, 0)
