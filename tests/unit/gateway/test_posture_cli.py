"""``mailmoat check`` (cli.check) offline, with ``--zone``: output forms and exit codes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.auth.dkim import key_record, txt_strings
from mailmoat.cli.main import main
from mailmoat.store import DkimRecord, SQLiteStore, Verdict

ZONE = """
$ORIGIN example.com.
$TTL 300
@        IN SOA ns1 hostmaster 1 7200 3600 1209600 60
@        IN MX 10 mx1
@        IN TXT "v=spf1 mx -all"
mx1      IN A 192.0.2.25
_dmarc   IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
$ORIGIN example.org.
@        IN MX 10 mx.example.org.
@        IN TXT "v=spf1 +all"
mx       IN A 192.0.2.26
"""


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    path = tmp_path / "zone.txt"
    path.write_text(ZONE)
    return path


def test_json_schema_and_exit_code(zone: Path) -> None:
    result = CliRunner().invoke(main, ["check", "example.com", "example.org", "--zone",
                                       str(zone), "--no-smtp", "--json", "--timeout", "2"])
    assert result.exit_code == 1, result.output  # example.org: +all is an error
    data = json.loads(result.output)
    assert data["schema"] == 1
    first, second = data["domains"]
    assert first["domain"] == "example.com"
    assert second["domain"] == "example.org"
    for report in data["domains"]:
        assert {"domain", "worst", "summary", "findings", "mx", "spf", "dmarc", "dkim",
                "bimi", "mta_sts", "tls_rpt", "dnssec"} <= set(report)
        for finding in report["findings"]:
            assert set(finding) == {"check", "severity", "message", "fix"}
            assert finding["severity"] in ("ok", "info", "warning", "error")
    assert second["worst"] == "error"
    assert any(f["check"] == "spf" and f["severity"] == "error" for f in second["findings"])


def test_human_output_without_errors(zone: Path) -> None:
    result = CliRunner().invoke(main, ["check", "example.com", "--zone", str(zone),
                                       "--no-smtp", "--selector", "none"])
    # no MTA-STS is a warning, not an error: exit 0
    assert result.exit_code == 0, result.output
    assert "example.com: worst warning" in result.output
    assert "mta-sts" in result.output


@pytest.mark.parametrize("args", [
    ["check", "example.com", "--map-host", "mta-sts.example.com"],
    ["check", "example.com", "--map-host", "x=not-an-ip"],
    ["check", "example.com", "--map-host", "x=127.0.0.1:99999"],
    ["check"],
])
def test_usage_errors(args: list[str]) -> None:
    assert CliRunner().invoke(main, args).exit_code == 2


def test_zone_and_resolver_exclude(zone: Path) -> None:
    result = CliRunner().invoke(main, ["check", "example.com", "--zone", str(zone),
                                       "--resolver", "127.0.0.1"])
    assert result.exit_code == 2


# ---------------------------------------------- --store / --data-dir (issue #8 item 2) ---

@pytest.fixture(scope="module")
def key_line() -> str:
    """A DKIM key published at learned._domainkey.example.com (absolute: ZONE ends in
    example.org)."""
    key = key_record(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    strings = " ".join(f'"{s}"' for s in txt_strings(key))
    return f"learned._domainkey.example.com. IN TXT ( {strings} )\n"


def _dkim_sources(output: str) -> dict[str, str]:
    [report] = json.loads(output)["domains"]
    return {k["selector"]: k["source"] for k in report["dkim"]["keys"]}


@pytest.mark.parametrize("how", ["store", "data-dir"])
def test_selectors_from_the_gateway_store(tmp_path: Path, key_line: str, how: str) -> None:
    zone = tmp_path / "zone.txt"
    zone.write_text(ZONE + key_line)
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    async def fill() -> None:  # what the gateway recorded: a verified signature, an hour ago
        store = await SQLiteStore.open(data_dir / "mailmoat.db")
        await store.record_verdict(Verdict(
            spool_id="01JD0000000000000000000001", received_at=time.time() - 3600,
            dkim=(DkimRecord(domain="example.com", selector="learned", result="pass"),)))
        await store.close()

    asyncio.run(fill())
    where = (["--store", f"sqlite:{data_dir / 'mailmoat.db'}"] if how == "store"
             else ["--data-dir", str(data_dir)])
    args = ["check", "example.com", "--zone", str(zone), "--no-smtp",
            "--no-common-selectors", "--json"]
    result = CliRunner().invoke(main, [*args, *where])
    assert result.exit_code == 0, result.output
    assert _dkim_sources(result.output) == {"learned": "received mail"}
    # Without the store nothing is learned: the same check finds no key.
    without = CliRunner().invoke(main, args)
    assert without.exit_code == 0, without.output
    assert _dkim_sources(without.output) == {}


def test_missing_store_is_an_error(zone: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "example.com", "--zone", str(zone), "--no-smtp",
                                       "--store", f"sqlite:{tmp_path / 'absent.db'}"])
    assert result.exit_code == 1
    assert "no gateway database at" in result.output
    assert not (tmp_path / "absent.db").exists()  # a check never creates one
