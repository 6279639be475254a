"""``mailmoat verify`` end to end with click's CliRunner and ``--zone`` (no network).

A key is generated here, its TXT record written into the zone file beside SPF and DMARC
records; messages are signed in the test. Expected results follow from those records and the
RFCs (DMARC p=reject with nothing aligned is fail/reject, RFC 7489 §6.6.4).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.auth.dkim import key_record, sign, txt_strings
from mailmoat.cli.main import main

NOW = 1_700_000_000
SIGNED_AT = NOW - 60
EXPIRES = NOW + 3600


@functools.cache
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    record = " ".join(f'"{s}"' for s in txt_strings(key_record(key())))
    zone = tmp_path / "zone.txt"
    zone.write_text(
        f"sel._domainkey.example.org. 300 IN TXT ( {record} )\n"
        'example.org. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
        '_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"\n'
        'bank.example. 300 IN TXT "v=spf1 -all"\n'
        '_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject"\n',
        encoding="ascii",
    )
    message = (b"From: Alice <alice@example.org>\r\nTo: bob@receiver.test\r\n"
               b"Subject: hi\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nHello Bob.\r\n")
    signature = sign(message, "example.org", "sel", key(), timestamp=SIGNED_AT,
                     expire=EXPIRES)
    good = tmp_path / "signed.eml"
    good.write_bytes(signature + message)
    spoof = tmp_path / "spoof.eml"
    # LF line ends on purpose: the command normalises files to CRLF
    spoof.write_bytes(b"From: CEO <ceo@bank.example>\nTo: you@receiver.test\n"
                      b"Subject: urgent wire\n\nPay the invoice today.\n")
    return {"zone": zone, "good": good, "spoof": spoof}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", *args])
    return result.exit_code, result.output


def as_json(files: dict[str, Path], name: str, *extra: str) -> dict[str, object]:
    code, out = invoke(str(files[name]), "--ip", "198.51.100.7", "--helo", "mail.other.test",
                       "--zone", str(files["zone"]), "--authserv-id", "mx.receiver.test",
                       "--json", *extra)
    assert code == 0, out
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def test_dkim_signed_aligned_message_passes(files: dict[str, Path]) -> None:
    data = as_json(files, "good", "--mail-from", "bounce@other.test", "--now", str(NOW))
    assert data["spf"]["result"] == "none"  # type: ignore[index]
    assert [(d["result"], d["domain"], d["selector"]) for d in data["dkim"]] == [  # type: ignore[attr-defined]
        ("pass", "example.org", "sel")]
    dmarc = data["dmarc"]
    assert (dmarc["result"], dmarc["policy"], dmarc["disposition"]) == (  # type: ignore[index]
        "pass", "reject", "none")
    assert data["arc"]["result"] == "none"  # type: ignore[index]
    ar = data["authentication_results"]
    assert isinstance(ar, str)
    assert ar.startswith("Authentication-Results: mx.receiver.test;")
    assert "dkim=pass" in ar
    assert "dmarc=pass" in ar


def test_spoofed_from_of_reject_domain_is_fail_reject(files: dict[str, Path]) -> None:
    data = as_json(files, "spoof", "--mail-from", "ceo@bank.example")
    assert data["spf"]["result"] == "fail"  # type: ignore[index]
    assert data["dkim"][0]["result"] == "none"  # type: ignore[index]
    dmarc = data["dmarc"]
    assert (dmarc["result"], dmarc["policy"], dmarc["disposition"]) == (  # type: ignore[index]
        "fail", "reject", "reject")
    assert "dmarc=fail" in data["authentication_results"]  # type: ignore[operator]


def test_now_fixes_the_clock_for_expiry(files: dict[str, Path]) -> None:
    # RFC 6376 §3.5 x=: a signature past its expiry may be considered invalid
    late = as_json(files, "good", "--mail-from", "bounce@other.test",
                   "--now", str(EXPIRES + 86_400))
    assert late["dkim"][0]["result"] == "permerror"  # type: ignore[index]
    assert "expired" in late["dkim"][0]["reason"]  # type: ignore[index]
    assert late["dmarc"]["result"] == "fail"  # type: ignore[index]


def test_human_output_prints_the_field_and_explains(files: dict[str, Path]) -> None:
    code, out = invoke(str(files["spoof"]), "--ip", "198.51.100.7", "--helo", "x.test",
                       "--mail-from", "ceo@bank.example", "--zone", str(files["zone"]),
                       "--authserv-id", "mx.receiver.test")
    assert code == 0, out
    assert out.startswith("Authentication-Results: mx.receiver.test;")
    assert "DMARC fail for bank.example." in out
    assert "Requested policy p=reject." in out


@pytest.mark.parametrize("args", [
    ["--ip", "999.1.1.1", "--helo", "h.test", "--mail-from", "a@b.test"],
    ["--ip", "192.0.2.1", "--helo", "h.test"],
    ["--ip", "192.0.2.1", "--helo", "h.test", "--mail-from", "a@b.test",
     "--resolver", "127.0.0.1"],
])
def test_usage_errors_exit_2(files: dict[str, Path], args: list[str]) -> None:
    code, _ = invoke(str(files["good"]), *args, "--zone", str(files["zone"]))
    assert code == 2


def test_unreadable_message_and_zone_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    common = ["--ip", "192.0.2.1", "--helo", "h.test", "--mail-from", "a@b.test"]
    assert invoke(str(tmp_path / "missing.eml"), *common, "--zone", str(files["zone"]))[0] == 2
    bad = tmp_path / "bad.zone"
    bad.write_text("example.org. IN TXT (\n", encoding="ascii")
    assert invoke(str(files["good"]), *common, "--zone", str(bad))[0] == 2
