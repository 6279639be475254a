"""Interop with a real DKIM implementation: OpenDKIM's ``opendkim-testmsg`` (libopendkim).

* OpenDKIM signs, we verify. (``opendkim-testmsg`` signs rsa-sha1 relaxed/simple - it has no
  option for another algorithm - so this also proves our rsa-sha1 path: rejected by default as
  RFC 8301 asks, verified when configured.) ``-C`` keeps CRLF: without it testmsg 2.11 garbles
  the end of b= when it converts line ends.
* We sign, OpenDKIM verifies. testmsg takes keys only from DNS (libresolv, /etc/resolv.conf),
  so the check runs in private network and mount namespaces (``unshare``): loopback up, a
  resolv.conf pointing at 127.0.0.1 bind-mounted over /etc/resolv.conf, and a tiny DNS server
  on 127.0.0.1:53 serving the key. Nothing outside the namespaces is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from conftest import missing, require_peer
from mailmoat.auth.dkim import DKIMResultCode, VerifyPolicy, key_record, sign, verify
from mailmoat.clock import FixedClock
from mailmoat.resolver.fake import FakeResolver

pytestmark = [pytest.mark.peer("opendkim-testmsg"), pytest.mark.timeout(120)]

DOMAIN, SELECTOR = "example.org", "interop"
# (libopendkim refuses a message without Date - "dkim_chunk(): Syntax error" - so every
# message has one: RFC 5322 §3.6 makes Date and From mandatory.)
MESSAGES = [
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: interop test\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
    b"Hello  Bob,\t\r\nthis is a test.   \r\n\r\n\r\n",
    b"From: alice@example.org\r\nTo: bob@example.net,\r\n  carol@example.net\r\n"
    b"Date: Tue, 02 Jan 2024 10:00:00 +0100\r\nSubject: folded\r\n\tsubject  line \r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xc3\xa9 \xe2\x82\xac\r\n"
    + b"x" * 900 + b"\r\n",
    b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: empty body\r\n"
    b"Date: Wed, 03 Jan 2024 10:00:00 +0000\r\n\r\n",
]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def our_results(message: bytes, record: str, policy: VerifyPolicy) -> list[DKIMResultCode]:
    fake = FakeResolver()
    fake.add_txt(f"{SELECTOR}._domainkey.{DOMAIN}", record)
    clock = FixedClock(wall=2_000_000_000)  # after testmsg's t= (the real time)
    return [r.result for r in asyncio.run(verify(message, fake, clock=clock, policy=policy))]


@pytest.mark.parametrize("message", MESSAGES, ids=["plain", "folded-8bit", "empty-body"])
def test_opendkim_signs_we_verify(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, message: bytes
) -> None:
    testmsg = require_peer("opendkim-testmsg")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem(rsa_key))
    out = subprocess.run(
        [testmsg, "-C", "-d", DOMAIN, "-s", SELECTOR, "-k", str(key_file), "-t", str(tmp_path)],
        input=message, capture_output=True, timeout=30, check=True,
    ).stdout
    assert out.startswith(b"DKIM-Signature:"), out[:200]
    assert out.endswith(message)
    record = key_record(rsa_key)
    assert b"a=rsa-sha1" in out.split(b"\r\n\r\n")[0]
    # RFC 8301 §3.1: not valid by default...
    assert our_results(out, record, VerifyPolicy()) == [DKIMResultCode.POLICY]
    # ...verified when configured
    assert our_results(out, record, VerifyPolicy(allow_sha1=True)) == [DKIMResultCode.PASS]
    tampered = out.replace(b"Subject:", b"Subject: re:", 1)
    assert our_results(tampered, record, VerifyPolicy(allow_sha1=True)) == [DKIMResultCode.FAIL]


_NS_HELPER = textwrap.dedent(
    """
    import json, socket, socketserver, subprocess, sys, threading
    import dns.exception, dns.flags, dns.message, dns.rcode, dns.rdatatype, dns.rrset

    cfg = json.load(open(sys.argv[1]))
    records = {k.lower(): v for k, v in cfg["records"].items()}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", cfg["resolv"], "/etc/resolv.conf"], check=True)

    def answer(wire, limit):
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        qname = q.question[0].name
        name = qname.to_text().rstrip(".").lower()
        if name in records and q.question[0].rdtype == dns.rdatatype.TXT:
            text = " ".join('"%s"' % s for s in records[name])
            r.answer.append(dns.rrset.from_text(qname, 60, "IN", "TXT", text))
        elif name not in records:
            r.set_rcode(dns.rcode.NXDOMAIN)
        try:
            return r.to_wire(max_size=limit)
        except dns.exception.TooBig:
            r.answer.clear()
            r.flags |= dns.flags.TC
            return r.to_wire()

    class UDP(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(answer(data, 512), self.client_address)

    class TCP(socketserver.StreamRequestHandler):
        def handle(self):
            n = int.from_bytes(self.rfile.read(2), "big")
            out = answer(self.rfile.read(n), 65535)
            self.wfile.write(len(out).to_bytes(2, "big") + out)

    for cls, handler in ((socketserver.ThreadingUDPServer, UDP),
                         (socketserver.ThreadingTCPServer, TCP)):
        srv = cls(("127.0.0.1", 53), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    results = []
    for path in cfg["messages"]:
        with open(path, "rb") as f:
            p = subprocess.run([cfg["testmsg"], "-t", cfg["tmp"]], stdin=f,
                               capture_output=True, timeout=30)
        results.append({"rc": p.returncode, "stderr": p.stderr.decode(errors="replace")})
    print(json.dumps(results))
    """
)


def opendkim_verify(
    tmp_path: Path, records: dict[str, list[str]], messages: list[bytes]
) -> list[dict[str, object]]:
    """Run ``opendkim-testmsg`` (verify mode) on each message with our DNS data."""
    testmsg = require_peer("opendkim-testmsg")
    unshare = require_peer("unshare")
    if os.geteuid() != 0 and not os.environ.get("MAILMOAT_USERNS"):
        missing("opendkim verification needs network/mount namespaces (run as root)")
    paths = []
    for i, m in enumerate(messages):
        path = tmp_path / f"m{i}.eml"
        path.write_bytes(m)
        paths.append(str(path))
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\noptions edns0\n")
    (tmp_path / "helper.py").write_text(_NS_HELPER)
    cfg = {
        "records": records, "messages": paths, "testmsg": testmsg,
        "resolv": str(tmp_path / "resolv.conf"), "tmp": str(tmp_path),
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [unshare, "--net", "--mount", "--", sys.executable, str(tmp_path / "helper.py"),
         str(tmp_path / "cfg.json")],
        check=False, capture_output=True, timeout=90,
    )
    if proc.returncode != 0:
        missing(f"cannot run in namespaces: {proc.stderr.decode(errors='replace')[-500:]}")
    out: list[dict[str, object]] = json.loads(proc.stdout)
    return out


@pytest.mark.parametrize("canon", ["simple/simple", "simple/relaxed", "relaxed/simple",
                                   "relaxed/relaxed"])
@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_we_sign_opendkim_verifies(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, algorithm: str, canon: str
) -> None:
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa_key
    if algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    h, b = canon.split("/")
    signed = []
    for m in MESSAGES:
        signed.append(sign(m, DOMAIN, SELECTOR, key, canonicalization=(h, b),
                           timestamp=1_700_000_000) + m)
    tampered = [s.replace(b"Subject:", b"Subject: re:", 1) for s in signed]
    record = key_record(key)
    strings = [record[i : i + 255] for i in range(0, len(record), 255)]
    results = opendkim_verify(
        tmp_path, {f"{SELECTOR}._domainkey.{DOMAIN}": strings}, signed + tampered
    )
    good, bad = results[: len(signed)], results[len(signed) :]
    assert all(r["rc"] == 0 and r["stderr"] == "" for r in good), good
    # the tampered copies must be refused (non-zero exit, dkim_eom() error): this also shows
    # that OpenDKIM really fetched the key and checked the signature
    assert all(r["rc"] != 0 for r in bad), bad
