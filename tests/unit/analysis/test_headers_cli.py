"""``mailmoat headers`` through click's CliRunner: file, stdin, pasted headers, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from conftest import conformance
from mailmoat.cli.headers import headers
from mailmoat.cli.main import main

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "received"


def test_json_from_a_file() -> None:
    path = conformance("parsedmarc-samples", "aggregate", "twilight.eml")
    result = CliRunner().invoke(headers, [str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["verdict"] == "encrypted on every hop"
    hops = data["hops"]
    assert len(hops) == 5
    # hop 2: mail-it1-f201.google.com -> relay-twl-01.twlnet.com, read by hand from the file
    assert (hops[1]["from"], hops[1]["by"], hops[1]["tls"], hops[1]["tls_version"],
            hops[1]["cipher"]) == ("mail-it1-f201.google.com", "relay-twl-01.twlnet.com", "yes",
                                   "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384")
    assert hops[1]["delay_s"] == 0.0  # 11:14:55 +0100 after 02:14:55 -0800
    assert hops[3]["delay_s"] == 506.0  # 11:23:31 after 11:15:05 (+0100)
    assert data["trust"]["entry_hop"] == 2


def test_stdin_pasted_headers_and_exit_code_for_plain_hop() -> None:
    pasted = (b"\n\nReceived: from a.example (a.example [192.0.2.1])\n"
              b"  by b.example with SMTP; 1 Jan 2024 00:00:00 +0000\n")
    result = CliRunner().invoke(main, ["headers", "-", "--json"], input=pasted)
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["verdict"].startswith("not encrypted on hop 1")


def test_table_output_and_unknown_exit_code() -> None:
    result = CliRunner().invoke(headers, [str(VECTORS / "exchange-online.eml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "encrypted on every hop" in result.output
    assert "TLS_AES_256_GCM_SHA384" in result.output
    unknown = CliRunner().invoke(
        headers, ["-"], input=b"Received: from a (a [192.0.2.1]) by b with FOO; "
                              b"1 Jan 2024 00:00:00 +0000\n")
    assert unknown.exit_code == 3
    assert "unknown on hop 1" in unknown.output


def test_our_domain_option() -> None:
    path = VECTORS / "postfix-tls13.eml"
    result = CliRunner().invoke(headers, [str(path), "--json", "--our-domain",
                                          "receiver.example"])
    data = json.loads(result.output)
    assert data["trust"]["organisation"] == ["receiver.example"]
    assert data["trust"]["trusted_hops"] == [3, 4]
    assert data["trust"]["entry_hop"] == 3


def test_markup_in_headers_is_printed_literally() -> None:
    result = CliRunner().invoke(
        headers, ["-"], input=b"Received: from [bold]x[/bold] (x [192.0.2.1]) by b with ESMTPS; "
                              b"1 Jan 2024 00:00:00 +0000\n", env={"COLUMNS": "200"})
    # rich would have swallowed "[bold]" as markup; it must appear as written
    assert "[bold]" in result.output


def test_bad_input_exit_code_2(tmp_path: Path) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(b"A: " + b"x" * (2 * 1024 * 1024))
    result = CliRunner().invoke(headers, [str(big)])
    assert result.exit_code == 2
    assert "cannot analyse the input" in result.output
    missing = CliRunner().invoke(headers, [str(tmp_path / "nope.eml")])
    assert missing.exit_code == 2


def test_only_the_header_section_is_read(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"Received: from a (a [192.0.2.1]) by b with ESMTPS; 1 Jan 2024 00:00 +0000"
                     b"\r\n\r\n" + b"\x00body\xff" * 500_000)
    result = CliRunner().invoke(headers, [str(path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["header_defects"] == []
