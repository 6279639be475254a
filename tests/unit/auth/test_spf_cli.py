"""``mailmoat spf`` through click's CliRunner, DNS from a ``--zone`` file (FakeResolver)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli.main import main

ZONE = """\
$ORIGIN example.com.
$TTL 300
@        IN SOA ns1 hostmaster 1 7200 3600 1209600 60
@        IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.example.com -all exp=why.example.com"
_spf     IN TXT "v=spf1 a:mail.example.com ~all"
mail     IN A 198.51.100.25
why      IN TXT "%{i} is not allowed to send for %{d}"
helo     IN TXT "v=spf1 a -all"
helo     IN A 203.0.113.9
loop     IN TXT "v=spf1 include:loop.example.com"
"""


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    path = tmp_path / "example.com.zone"
    path.write_text(ZONE, encoding="utf-8")
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["spf", *args])
    return result.exit_code, result.output


def test_json_fail_with_explanation(zone_file: Path) -> None:
    code, out = run("--ip", "203.0.113.5", "--mail-from", "alice@example.com",
                    "--zone", str(zone_file), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert {"result", "explanation", "lookups", "void_lookups", "trace"} <= data.keys()
    assert data["result"] == "fail"
    # the exp= TXT expanded by hand: %{i} = 203.0.113.5, %{d} = example.com
    assert data["explanation"] == "203.0.113.5 is not allowed to send for example.com"
    assert data["lookups"] == 2  # include + a (RFC 7208 §4.6.4)
    assert data["void_lookups"] == 0
    assert data["mechanism"] == "-all"
    assert any(step["term"] == "a:mail.example.com" and step["matched"] is False
               for step in data["trace"])


def test_human_output_pass_via_include(zone_file: Path) -> None:
    code, out = run("--ip", "198.51.100.25", "--mail-from", "alice@example.com",
                    "--helo", "helo.example.com", "--zone", str(zone_file))
    assert code == 0, out
    assert "SPF pass" in out
    assert "include:_spf.example.com" in out
    assert "DNS lookups: 2/10" in out


def test_helo_identity(zone_file: Path) -> None:
    for args in (["--mail-from", "", "--helo", "helo.example.com"],
                 ["--mail-from", "<>", "--helo", "helo.example.com"],
                 ["--helo", "helo.example.com"]):
        code, out = run("--ip", "203.0.113.9", *args, "--zone", str(zone_file), "--json")
        assert code == 0, out
        data = json.loads(out)
        assert (data["result"], data["identity"], data["domain"]) == (
            "pass", "helo", "helo.example.com")


def test_every_result_exits_zero(zone_file: Path) -> None:
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@loop.example.com",
                    "--zone", str(zone_file), "--json")
    assert code == 0
    assert json.loads(out)["result"] == "permerror"
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@nothing.example.com",
                    "--zone", str(zone_file), "--json")
    assert code == 0
    assert json.loads(out)["result"] == "none"


@pytest.mark.parametrize("args", [
    ["--ip", "192.0.2.300", "--mail-from", "a@example.com"],
    ["--ip", "192.0.2.1"],
    ["--mail-from", "a@example.com"],
    ["--ip", "192.0.2.1", "--mail-from", "a@example.com", "--resolver", "not-an-ip"],
    ["--ip", "192.0.2.1", "--mail-from", "a@example.com", "--zone", "/nonexistent/zone"],
    ["--ip", "192.0.2.1", "--mail-from", "a@example.com", "--timeout", "0"],
])
def test_usage_errors_exit_two(args: list[str]) -> None:
    code, _ = run(*args)
    assert code == 2


def test_zone_and_resolver_exclude_each_other(zone_file: Path) -> None:
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@example.com",
                    "--zone", str(zone_file), "--resolver", "127.0.0.1")
    assert code == 2
    assert "exclude" in out


def test_malformed_zone_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zone"
    bad.write_text("$INCLUDE /etc/passwd\n", encoding="utf-8")
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@example.com", "--zone", str(bad))
    assert code == 2, out


def test_dns_text_is_not_rich_markup(tmp_path: Path) -> None:
    zone = tmp_path / "z.zone"
    zone.write_text('$ORIGIN example.org.\n@ IN TXT "v=spf1 -all exp=why.example.org"\n'
                    'why IN TXT "[bold red]pwned[/bold red]"\n', encoding="utf-8")
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@example.org", "--zone", str(zone))
    assert code == 0
    assert "[bold red]pwned[/bold red]" in out


def test_registered_in_main() -> None:
    code, out = run("--help")
    assert code == 0
    assert "--mail-from" in out
    assert "--zone" in out
    assert "--json" in out


def test_zone_file_size_bound(tmp_path: Path) -> None:
    from mailmoat.cli._dns_options import ZONE_FILE_MAX

    big = tmp_path / "big.zone"
    big.write_bytes(b";" * (ZONE_FILE_MAX + 1))
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@example.com", "--zone", str(big))
    assert code == 2
    assert "larger than" in out


def test_no_nameserver_exits_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import mailmoat.cli._dns_options as cli
    from mailmoat.errors import ConfigError

    def no_servers(values: object, **kwargs: object) -> None:
        raise ConfigError("no nameserver configured", key="resolver")

    monkeypatch.setattr(cli, "make_resolver", no_servers)
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@example.com")
    assert code == 1
    assert "no nameserver" in out


def test_human_output_for_default_result(tmp_path: Path) -> None:
    zone = tmp_path / "z.zone"
    zone.write_text('$ORIGIN example.org.\n@ IN TXT "v=spf1 ip4:192.0.2.9"\n', encoding="utf-8")
    code, out = run("--ip", "192.0.2.1", "--mail-from", "a@example.org", "--zone", str(zone))
    assert code == 0
    assert "SPF neutral" in out
    assert "\nmatched:" not in out
