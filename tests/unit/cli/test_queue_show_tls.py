"""``mailmoat queue show`` prints the TLS of each attempt with its RFC 8460 detail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from mailmoat.cli.main import main
from mailmoat.store import AttemptResult, NewDelivery, SQLiteStore, TLSRecord


def _setup(tmp_path: Path) -> tuple[str, int]:
    async def run() -> int:
        store = await SQLiteStore.open(tmp_path / "mailmoat.db", synchronous="OFF")
        [row] = await store.enqueue([NewDelivery(spool_id="01JQ", recipient="u@example.net",
                                                 destination="mx:example.net")], now=1000.0)
        for t, tls in (
            (1000.0, TLSRecord(policy="mta-sts-enforce", policy_type="sts",
                               mx_host="mx1.example.net", receiving_ip="192.0.2.1",
                               result_type="certificate-expired", success=False)),
            (2000.0, TLSRecord(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                               verified=True, policy="mta-sts-enforce", policy_type="sts",
                               mx_host="mx2.example.net", receiving_ip="192.0.2.2",
                               success=True)),
        ):
            await store.claim(now=t, owner="w", lease=60, limit=1, per_destination=9)
            await store.finish(row, "w", AttemptResult(
                outcome="deferred" if t == 1000.0 else "delivered", started_at=t,
                finished_at=t + 1, next_attempt_at=t + 999, error="expired"
                if t == 1000.0 else None, remote="mx[192.0.2.1]:25", tls=tls))
        await store.close()
        return row
    row = asyncio.run(run())
    return f"sqlite:{tmp_path / 'mailmoat.db'}", row


def test_show_includes_the_tls_report_detail(tmp_path: Path) -> None:
    url, row = _setup(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["queue", "show", str(row), "--store", url, "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.output)
    first, second = (a["tls"] for a in record["attempts_log"])
    assert first == {"version": None, "cipher": None, "verified": None,
                     "policy": "mta-sts-enforce", "policy_type": "sts",
                     "mx_host": "mx1.example.net", "receiving_ip": "192.0.2.1",
                     "result_type": "certificate-expired", "success": False}
    assert (second["mx_host"], second["success"], second["result_type"]) == (
        "mx2.example.net", True, None)
    assert record["tls"] == second  # the delivery keeps its last attempt's TLS

    text = runner.invoke(main, ["queue", "show", str(row), "--store", url])
    assert text.exit_code == 0, text.output
    assert ("tls none  policy=mta-sts-enforce/sts mx=mx1.example.net[192.0.2.1] "
            "tls-rpt=FAILED result=certificate-expired") in text.output
    assert ("tls TLSv1.3 TLS_AES_256_GCM_SHA384 policy=mta-sts-enforce/sts "
            "mx=mx2.example.net[192.0.2.2] tls-rpt=ok") in text.output
