"""The several-node backend: PostgreSQL through psycopg 3 (async).

Several gateway nodes share one database. A claim selects due rows with ``FOR UPDATE SKIP
LOCKED`` (a row another node is claiming is skipped, not waited for), then takes a
transaction-scoped advisory lock per destination (``pg_try_advisory_xact_lock``) before it
counts that destination's in-flight rows, so two nodes cannot both see "19 of 20" and both
claim: a destination locked by another claim is skipped this round. Migrations run under
an advisory lock, so nodes starting together migrate once.

Tables live in ``schema`` (default ``public``), so tests and several installations can share
a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mailmoat import limits
from mailmoat.errors import StoreError
from mailmoat.store import _schema as S
from mailmoat.store._types import (
    AggregateRow,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryState,
    NewDelivery,
    TLSPolicySummary,
    Verdict,
)

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - the "postgres" extra is not installed
    psycopg = None  # type: ignore[assignment]

_MIGRATION_LOCK = 0x6D61696C6D6F6174  # "mailmoat"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _q(statement: str) -> str:
    return S.sql_for(statement, "postgres")


class PostgresStore:
    """A :class:`~mailmoat.store.Store` in PostgreSQL (``conninfo`` as libpq takes it)."""

    dialect: S.Dialect = "postgres"

    def __init__(self, conninfo: str, *, schema: str = "public", pool_size: int = 4) -> None:
        if psycopg is None:  # pragma: no cover
            raise StoreError("PostgreSQL needs psycopg: pip install 'mailmoat[postgres]'")
        if not _SCHEMA_RE.match(schema):
            raise StoreError(f"bad schema name {schema!r}")
        self.conninfo = conninfo
        self.schema = schema
        self._size = pool_size
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._all: list[psycopg.AsyncConnection[Any]] = []
        self._opening = asyncio.Lock()

    @classmethod
    async def open(cls, conninfo: str, *, schema: str = "public",
                   pool_size: int = 4) -> PostgresStore:
        store = cls(conninfo, schema=schema, pool_size=pool_size)
        await store.migrate()
        return store

    # --- plumbing ---------------------------------------------------------------------------
    async def _new_connection(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True,
                connect_timeout=int(limits.STORE_BUSY_TIMEOUT),
            )
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            await conn.execute(sql.SQL("SET search_path TO {}").format(
                sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: cannot connect: {exc}") from None
        return conn

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection inside one transaction (committed on success)."""
        async with self._opening:
            if self._idle.empty() and len(self._all) < self._size:
                conn = await self._new_connection()
                self._all.append(conn)
                self._idle.put_nowait(conn)
        conn = await self._idle.get()
        try:
            if conn.closed or conn.broken:
                self._all.remove(conn)
                conn = await self._new_connection()
                self._all.append(conn)
            async with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()
        self._idle = asyncio.Queue()

    # --- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(S.ddl(S.VERSION_TABLE, "postgres"))
            cur = await conn.execute("SELECT MAX(version) FROM schema_version")
            row = await cur.fetchone()
            current = int(row[0] or 0) if row else 0
            for version, statements in S.MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(S.ddl(statement, "postgres"))
                await conn.execute("INSERT INTO schema_version VALUES (%s, %s)",
                                   (version, time.time()))
                current = version
            return current

    async def schema_version(self) -> int:
        async with self._tx() as conn:
            cur = await conn.execute("SELECT MAX(version) FROM schema_version")
            row = await cur.fetchone()
            return int(row[0] or 0) if row else 0

    # --- verdicts ---------------------------------------------------------------------------
    async def record_verdict(self, verdict: Verdict) -> None:
        async with self._tx() as conn:
            await conn.execute(_q(S.INSERT_VERDICT), S.verdict_params(verdict))

    async def get_verdict(self, spool_id: str) -> Verdict | None:
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.SELECT_VERDICT), (spool_id,))
            row = await cur.fetchone()
            return None if row is None else S.verdict_from_row(row)

    async def dmarc_aggregate(self, domain: str, begin: float, end: float) -> list[AggregateRow]:
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.DMARC_AGGREGATE), (domain, begin, end))
            return [S.aggregate_from_row(r) for r in await cur.fetchall()]

    async def dkim_selectors_seen(self, domain: str, *, since: float | None = None,
                                  limit: int = limits.STORE_SELECTORS_SEEN_MAX) -> list[str]:
        async with self._tx() as conn:
            cur = await conn.execute(S.DKIM_SELECTORS_SEEN["postgres"],
                                     S.selectors_seen_params(domain, since, limit))
            return [str(r[0]) for r in await cur.fetchall()]

    # --- queue ------------------------------------------------------------------------------
    async def enqueue(self, items: list[NewDelivery], *, now: float) -> list[int]:
        ids: list[int] = []
        async with self._tx() as conn:
            for i in items:
                cur = await conn.execute(_q(S.INSERT_DELIVERY), (
                    i.spool_id, i.recipient, i.destination, now, now, now))
                row = await cur.fetchone()
                assert row is not None
                ids.append(int(row[0]))
        return ids

    async def intake(self, items: Sequence[NewDelivery], verdicts: Sequence[Verdict], *,
                     now: float) -> list[int]:
        ids: list[int] = []
        # One transaction; executemany pipelines the statements (one round trip per batch
        # rather than one per row).
        async with self._tx() as conn, conn.cursor() as cur:
            if verdicts:
                await cur.executemany(_q(S.INSERT_VERDICT),
                                      [S.verdict_params(v) for v in verdicts])
            if items:
                await cur.executemany(
                    _q(S.INSERT_DELIVERY),
                    [(i.spool_id, i.recipient, i.destination, now, now, now) for i in items],
                    returning=True)
                while True:
                    row = await cur.fetchone()
                    assert row is not None
                    ids.append(int(row[0]))
                    if not cur.nextset():
                        break
        return ids

    async def claim(self, *, now: float, owner: str, lease: float, limit: int,
                    per_destination: int) -> list[Delivery]:
        async with self._tx() as conn:
            cur = await conn.execute(_q(
                f"SELECT id, destination FROM deliveries WHERE {S.DUE} "  # noqa: S608 (constant SQL fragments)
                "ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED"),
                (now, now, limit * limits.STORE_CLAIM_SCAN_FACTOR))
            candidates = await cur.fetchall()
            busy: dict[str, int] = {}
            for destination in sorted({d for _, d in candidates}):
                cur = await conn.execute(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
                    ("mailmoat-destination:" + destination,))
                locked = await cur.fetchone()
                if not (locked and locked[0]):
                    busy[destination] = per_destination  # another node is claiming it
                    continue
                cur = await conn.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE destination = %s "
                    "AND state = 'in-flight' AND lease_until > %s", (destination, now))
                row = await cur.fetchone()
                busy[destination] = int(row[0]) if row else 0
            chosen = S.pick(candidates, busy, limit, per_destination)
            if not chosen:
                return []
            await conn.execute(
                "UPDATE deliveries SET state = 'in-flight', owner = %s, lease_until = %s, "
                "attempts = attempts + 1, updated_at = %s WHERE id = ANY(%s)",
                (owner, now + lease, now, chosen))
            cur = await conn.execute(
                f"{S.SELECT_DELIVERY} WHERE id = ANY(%s) ORDER BY id", (chosen,))
            return [S.delivery_from_row(r) for r in await cur.fetchall()]

    async def finish(self, delivery_id: int, owner: str, result: AttemptResult) -> bool:
        async with self._tx() as conn:
            await conn.execute(_q(S.INSERT_ATTEMPT), S.attempt_params(result, delivery_id))
            if result.tls is not None and result.tls.sessions:
                cur = await conn.execute("SELECT spool_id FROM deliveries WHERE id = %s",
                                         (delivery_id,))
                row = await cur.fetchone()
                async with conn.cursor() as sessions:
                    await sessions.executemany(_q(S.INSERT_TLS_SESSION), S.tls_session_rows(
                        result, None if row is None else row[0]))
            cur = await conn.execute(_q(S.FINISH), S.finish_params(
                result, result.finished_at, delivery_id, owner, result.finished_at))
            return cur.rowcount == 1

    async def renew(self, delivery_ids: list[int], owner: str, lease_until: float) -> int:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE deliveries SET lease_until = %s WHERE id = ANY(%s) "
                "AND state = 'in-flight' AND owner = %s", (lease_until, delivery_ids, owner))
            return cur.rowcount

    async def get(self, delivery_id: int) -> Delivery | None:
        async with self._tx() as conn:
            cur = await conn.execute(f"{S.SELECT_DELIVERY} WHERE id = %s", (delivery_id,))
            row = await cur.fetchone()
            return None if row is None else S.delivery_from_row(row)

    async def list_deliveries(self, *, states: tuple[DeliveryState, ...] | None = None,
                   spool_id: str | None = None, limit: int = 1000) -> list[Delivery]:
        query, params = S.list_query(states, spool_id, limit)
        async with self._tx() as conn:
            cur = await conn.execute(_q(query), params)
            return [S.delivery_from_row(r) for r in await cur.fetchall()]

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.SELECT_ATTEMPTS), (delivery_id,))
            return [S.attempt_from_row(r) for r in await cur.fetchall()]

    async def retry(self, delivery_id: int, *, now: float) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.RETRY), (now, now, delivery_id))
            return cur.rowcount == 1

    async def delete(self, delivery_id: int) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.DELETE), (delivery_id,))
            return cur.rowcount == 1

    async def unfinished(self, spool_id: str) -> int:
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.UNFINISHED), (spool_id,))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    # --- TLS reporting ----------------------------------------------------------------------
    async def tls_attempts(self, domain: str, begin: float,
                           end: float) -> list[TLSPolicySummary]:
        params = S.tls_params(domain, begin, end)
        async with self._tx() as conn:
            cur = await conn.execute(_q(S.TLS_SUMMARY), params)
            summary = await cur.fetchall()
            cur = await conn.execute(_q(S.TLS_FAILURES), params)
            failures = await cur.fetchall()
        return S.tls_summaries(domain, summary, failures)
