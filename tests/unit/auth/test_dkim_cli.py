"""``mailmoat dkim keygen|sign|verify`` (the keys and signatures it makes are checked by dkimpy,
and the record it prints by the zone-file parser and by key loading)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from mailmoat.auth.dkim import load_private_key, parse_key_record
from mailmoat.cli.main import main

dkim = pytest.importorskip("dkim")
pytest.importorskip("nacl")

MESSAGE = b"From: a@example.org\nTo: b@example.net\nSubject: hi\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nbody\n"


def record_of(zone_line: str) -> str:
    return "".join(re.findall(r'"([^"]*)"', zone_line))


@pytest.mark.parametrize(("algorithm", "bits"), [("rsa", "1024"), ("ed25519", "2048")])
def test_keygen_sign_verify_roundtrip(tmp_path: Path, algorithm: str, bits: str) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    out = runner.invoke(main, ["dkim", "keygen", "--selector", "s1", "--domain", "example.org",
                               "--algorithm", algorithm, "--bits", bits, "--out", str(keys)])
    assert out.exit_code == 0, out.output
    key_file = keys / "s1.private"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    line = next(li for li in out.stdout.splitlines() if li.startswith("s1._domainkey"))
    assert line.startswith("s1._domainkey.example.org. IN TXT (")
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', line))
    record = record_of(line)
    parsed = parse_key_record(record.encode())
    key = load_private_key(key_file.read_bytes())
    assert parsed.key is not None
    assert parsed.key_type == algorithm
    # the published key is the public half of the key written to disk
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert parsed.key.public_bytes(*spki) == key.public_key().public_bytes(*spki)
    # never overwrite a key
    again = runner.invoke(main, ["dkim", "keygen", "--selector", "s1", "--domain", "example.org",
                                 "--out", str(keys)])
    assert again.exit_code == 1
    assert "exists" in again.output

    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE)
    signed = runner.invoke(main, ["dkim", "sign", str(msg), "--domain", "example.org",
                                  "--selector", "s1", "--key", str(key_file)])
    assert signed.exit_code == 0, signed.output
    signed_bytes = signed.stdout_bytes
    assert signed_bytes.startswith(b"DKIM-Signature:")
    assert dkim.verify(signed_bytes,
                       dnsfunc=lambda name, timeout=5: record.encode()), "dkimpy must verify"
    del key

    zone = tmp_path / "zone"
    zone.write_text(line + "\n")
    sfile = tmp_path / "s.eml"
    sfile.write_bytes(signed_bytes)
    res = runner.invoke(main, ["dkim", "verify", str(sfile), "--zone", str(zone), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [(d["result"], d["domain"], d["selector"]) for d in data] == [
        ("pass", "example.org", "s1")]
    human = runner.invoke(main, ["dkim", "verify", str(sfile), "--zone", str(zone)])
    assert human.stdout.startswith("dkim=pass header.d=example.org")


def test_sign_with_expiry_and_now(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["dkim", "keygen", "--selector", "e", "--domain", "example.org",
                               "--algorithm", "ed25519", "--out", str(tmp_path)])
    line = next(li for li in out.stdout.splitlines() if li.startswith("e._domainkey"))
    (tmp_path / "zone").write_text(line + "\n")
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    signed = runner.invoke(main, ["dkim", "sign", str(tmp_path / "m.eml"), "--domain",
                                  "example.org", "--selector", "e", "--key",
                                  str(tmp_path / "e.private"), "--now", "1700000000",
                                  "--expire-in", "60"])
    assert b"t=1700000000; x=1700000060;" in signed.stdout_bytes
    (tmp_path / "s.eml").write_bytes(signed.stdout_bytes)
    args = ["dkim", "verify", str(tmp_path / "s.eml"), "--zone", str(tmp_path / "zone"),
            "--json", "--now"]
    ok = json.loads(runner.invoke(main, [*args, "1700000030"]).stdout)
    late = json.loads(runner.invoke(main, [*args, "1800000000"]).stdout)
    assert ok[0]["result"] == "pass"
    assert (late[0]["result"], late[0]["reason"]) == ("permerror", "signature expired (x=)")


def test_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    (tmp_path / "bad.key").write_bytes(b"not a key")
    r = runner.invoke(main, ["dkim", "sign", str(tmp_path / "m.eml"), "--domain", "x.org",
                             "--selector", "s", "--key", str(tmp_path / "bad.key")])
    assert r.exit_code == 2
    r = runner.invoke(main, ["dkim", "sign", str(tmp_path / "nope.eml"), "--domain", "x.org",
                             "--selector", "s", "--key", str(tmp_path / "bad.key")])
    assert r.exit_code == 2
    r = runner.invoke(main, ["dkim", "verify", str(tmp_path / "m.eml"), "--zone",
                             str(tmp_path / "m.eml"), "--resolver", "127.0.0.1"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["dkim", "keygen", "--selector", "s", "--domain", "x.org",
                             "--bits", "512"])
    assert r.exit_code == 2
