"""``mailmoat spool list|show`` over a spool filled through the library."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailmoat.cli.main import main
from mailmoat.net.tls import TLSInfo
from mailmoat.spool import Envelope, Recipient, Spool

ENV = Envelope(
    mail_from="alice@example.org",
    rcpts=(Recipient(address="bob@example.net", notify=("FAILURE",)),),
    received_at=1_795_000_000.0,  # `date -u -d @1795000000`: 2026-11-18T11:06:40Z
    client_ip="192.0.2.1",
    helo="client.example",
    tls=TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", bits=128),
    auth_user="alice",
)


def run(*args: str) -> tuple[int, str, bytes]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output, result.stdout_bytes


async def fill(directory: Path) -> list[str]:
    spool = Spool(directory, fsync=False)
    ids = [await spool.store(ENV, b"Subject: one\r\n\r\nhello\r\n"),
           await spool.store(ENV, b"Subject: two\r\n\r\n\xff binary\r\n")]
    await spool.aclose()
    return ids


async def test_list_and_show(tmp_path: Path) -> None:
    ids = await fill(tmp_path / "spool")
    code, out, _ = run("spool", "list", "--data-dir", str(tmp_path))
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.startswith(tuple(ids))]
    assert [line.split()[0] for line in lines] == ids
    assert "2026-11-18T11:06:40+00:00" in lines[0]
    assert "TLSv1.3" in lines[0]
    assert "<alice@example.org>" in lines[0]

    code, out, _ = run("spool", "list", "--json", "--data-dir", str(tmp_path))
    records = json.loads(out.split("\n", 1)[0])
    assert [r["id"] for r in records] == ids
    assert records[0]["rcpts"] == [{"address": "bob@example.net", "notify": ["FAILURE"],
                                    "orcpt": None}]
    assert records[0]["tls"]["cipher"] == "TLS_AES_128_GCM_SHA256"

    code, _, raw = run("spool", "show", ids[1], "--raw", "--data-dir", str(tmp_path))
    assert code == 0
    assert raw == b"Subject: two\r\n\r\n\xff binary\r\n"
    code, out, raw = run("spool", "show", ids[0], "--data-dir", str(tmp_path))
    assert code == 0
    assert raw.endswith(b"\n\nSubject: one\r\n\r\nhello\r\n")
    assert "tls: using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)" in out
    assert "to: <bob@example.net> notify=FAILURE" in out
    code, out, _ = run("spool", "show", ids[0], "--json", "--data-dir", str(tmp_path))
    assert json.loads(out)["auth_user"] == "alice"


async def test_show_errors(tmp_path: Path) -> None:
    await fill(tmp_path / "spool")
    code, out, _ = run("spool", "show", "../../etc/passwd", "--data-dir", str(tmp_path))
    assert code != 0
    assert "not a spool ID" in out
    code, out, _ = run("spool", "show", "01ARYZ6S410000000000000000", "--data-dir", str(tmp_path))
    assert code != 0
    assert "no message" in out
    code, out, _ = run("spool", "list", "--data-dir", str(tmp_path / "nothing"))
    assert code != 0
    assert "no spool" in out


async def test_spool_dir_from_config(tmp_path: Path) -> None:
    ids = await fill(tmp_path / "elsewhere")
    config = tmp_path / "c.toml"
    config.write_text(
        '[spool]\ndir = "elsewhere"\n[[listener]]\nport = 25\nmode = "plain"\nrole = "mx"\n'
    )
    code, out, _ = run("spool", "list", "--config", str(config))
    assert code == 0, out
    assert ids[0] in out
