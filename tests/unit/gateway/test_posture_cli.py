"""``mailmoat check`` (cli.check) offline, with ``--zone``: output forms and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli.main import main

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
