"""Both store backends behind one fixture: every test in this directory runs against SQLite
and PostgreSQL. PostgreSQL (127.0.0.1:5432, trust auth) is skipped locally when it is not
reachable and fails under MAILMOAT_REQUIRE_PEERS=1 (conftest.missing)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import missing
from mailmoat.store import PostgresStore, SQLiteStore, Store

if TYPE_CHECKING:
    import psycopg

PG_DSN = os.environ.get("MAILMOAT_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")


async def pg_connection() -> psycopg.AsyncConnection[Any]:
    """An autocommit connection to :data:`PG_DSN`; skips (fails under
    MAILMOAT_REQUIRE_PEERS=1) without psycopg or a reachable server."""
    try:
        import psycopg
    except ImportError:
        missing("psycopg is not installed (pip install 'mailmoat[postgres]')")
        raise AssertionError("unreachable") from None
    try:
        return await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        missing(f"PostgreSQL is not reachable at {PG_DSN!r}: {exc}")
        raise AssertionError("unreachable") from None


async def _pg_store() -> tuple[PostgresStore, str]:
    schema = "mm_test_" + secrets.token_hex(6)
    await (await pg_connection()).close()
    return await PostgresStore.open(PG_DSN, schema=schema), schema


async def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(schema)))


@pytest.fixture(name="store", params=["sqlite", "postgres"])
async def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        sqlite = await SQLiteStore.open(tmp_path / "store.db", synchronous="OFF")
        yield sqlite
        await sqlite.close()
        return
    pg, schema = await _pg_store()
    try:
        yield pg
    finally:
        await pg.close()
        await drop_schema(schema)
