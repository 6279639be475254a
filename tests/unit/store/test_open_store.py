"""open_store(URL): which backend and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat.errors import StoreError
from mailmoat.store import SCHEMA_VERSION, SQLiteStore, open_store


@pytest.mark.parametrize("form", ["sqlite://{p}", "sqlite:{p}", "{p}"])
async def test_sqlite_urls(tmp_path: Path, form: str) -> None:
    path = tmp_path / "x.db"
    store = await open_store(form.format(p=path))
    try:
        assert isinstance(store, SQLiteStore)
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()
    assert path.exists()
    # WAL mode (the embedded default) leaves its mark on the file header: bytes 18-19 = 2.
    assert path.read_bytes()[18:20] == b"\x02\x02"


@pytest.mark.parametrize("bad", ["mysql://x/y", "sqlite:"])
async def test_bad_urls(bad: str) -> None:
    with pytest.raises(StoreError):
        await open_store(bad)


async def test_postgres_url_with_schema() -> None:
    import secrets

    from store_backends import drop_schema

    from conftest import missing
    from mailmoat.store import PostgresStore

    psycopg = pytest.importorskip("psycopg")
    schema = "mm_test_" + secrets.token_hex(6)
    try:
        store = await open_store(
            f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}&connect_timeout=3")
    except StoreError as exc:
        missing(f"PostgreSQL is not reachable: {exc}")
        raise
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == schema
        assert await store.schema_version() == SCHEMA_VERSION
        async with await psycopg.AsyncConnection.connect(
                "host=127.0.0.1 user=postgres dbname=test") as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                (schema,))
            row = await cur.fetchone()
        assert row is not None
        assert row[0] == 5  # schema_version, verdicts, deliveries, attempts, tls_sessions
    finally:
        await store.close()
        await drop_schema(schema)


def test_sqlite_users_do_not_pay_for_psycopg() -> None:
    # `mailmoat serve` on embedded defaults never touches PostgreSQL: psycopg stays unimported.
    import subprocess
    import sys

    code = ("import sys, mailmoat.gateway.server, mailmoat.gateway.runtime, mailmoat.store; "
            "assert 'psycopg' not in sys.modules, 'psycopg imported'; "
            "from mailmoat.store import PostgresStore; assert 'psycopg' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
