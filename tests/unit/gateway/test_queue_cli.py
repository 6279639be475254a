"""``mailmoat queue list|show|retry|delete`` over a real SQLite store and spool."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from mailmoat.cli.main import main
from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.store import AttemptResult, NewDelivery, SQLiteStore, TLSRecord


def _setup(tmp_path: Path) -> tuple[str, list[int], str]:
    async def run() -> tuple[list[int], str]:
        spool, _ = Spool.open(tmp_path / "spool", fsync=False)
        env = Envelope(mail_from="a@example.net", received_at=1.0,
                       rcpts=(Recipient(address="u@example.org"),
                              Recipient(address="v\x1b[31m@example.org")))
        sid = await spool.store(env, b"Subject: x\r\n\r\nbody\r\n")
        await spool.aclose()
        store = await SQLiteStore.open(tmp_path / "mailmoat.db")
        ids = await store.enqueue([NewDelivery(spool_id=sid, recipient=r.address,
                                               destination="lmtp://127.0.0.1:24")
                                   for r in env.rcpts], now=1000.0)
        await store.claim(now=1000.0, owner="w", lease=60, limit=1, per_destination=9)
        await store.finish(ids[0], "w", AttemptResult(
            outcome="deferred", started_at=1000.0, finished_at=1001.0, next_attempt_at=1300.0,
            reply_code=451, reply_text="4.3.0 try later", error="451 try later",
            remote="127.0.0.1:24", tls=TLSRecord(policy="none")))
        await store.close()
        return ids, sid
    ids, sid = asyncio.run(run())
    return f"sqlite:{tmp_path / 'mailmoat.db'}", ids, sid


def test_list_show_retry_delete(tmp_path: Path) -> None:
    url, (first, second), sid = _setup(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["queue", "list", "--store", url, "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [(r["id"], r["state"], r["attempts"]) for r in rows] == [
        (second, "queued", 0), (first, "deferred", 1)]
    text = runner.invoke(main, ["queue", "list", "--store", url])
    assert text.exit_code == 0
    assert "451 try later" in text.output
    assert "\x1b" not in text.output  # a recipient's control characters are escaped
    assert "\\x1b" in text.output

    shown = runner.invoke(main, ["queue", "show", str(first), "--store", url, "--json"])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert record["last_reply"] == {"code": 451, "text": "4.3.0 try later"}
    assert [a["outcome"] for a in record["attempts_log"]] == ["deferred"]
    assert record["attempts_log"][0]["remote"] == "127.0.0.1:24"
    assert runner.invoke(main, ["queue", "show", "999", "--store", url]).exit_code == 1

    retried = runner.invoke(main, ["queue", "retry", str(first), "--store", url, "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output) == {"id": first, "retried": True}
    rows = json.loads(runner.invoke(main, ["queue", "list", "--store", url,
                                           "--json", "--state", "queued"]).output)
    assert sorted(r["id"] for r in rows) == sorted([first, second])

    spool = Spool(tmp_path / "spool")
    assert spool.list() == [sid]
    gone = runner.invoke(main, ["queue", "delete", str(first), "--data-dir", str(tmp_path)])
    assert gone.exit_code == 0, gone.output
    assert spool.list() == [sid]  # the other recipient still waits for it
    gone = runner.invoke(main, ["queue", "delete", str(second), "--data-dir", str(tmp_path)])
    assert gone.exit_code == 0, gone.output
    assert "removed from the spool" in gone.output
    assert spool.list() == []
    assert runner.invoke(main, ["queue", "delete", str(second), "--store", url]).exit_code == 1


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["queue", "list", "--data-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert "no queue database" in out.output
