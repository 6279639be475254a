"""The submission pipeline (gateway/outbound_sign.py) and the config builders (pipeline.py).

Signatures are checked by dkimpy (independent verifier) and by ours; the Date we add is read
back with the stdlib date parser; expected refusals are RFC 3463 codes named in the module.
"""

from __future__ import annotations

import email.utils
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat.auth.arc import ARCStatus
from mailmoat.auth.arc import validate as arc_validate
from mailmoat.auth.dkim import key_record, txt_strings
from mailmoat.auth.dkim import verify as dkim_verify
from mailmoat.clock import SYSTEM_CLOCK, FixedClock
from mailmoat.errors import ConfigError
from mailmoat.gateway.config import parse_config
from mailmoat.gateway.inbound import SealKey
from mailmoat.gateway.outbound_sign import (
    FROM_NOT_ALLOWED,
    FROM_UNREADABLE,
    SubmissionSigner,
    from_addresses,
    keys_for,
    load_keys_dir,
    repair,
)
from mailmoat.gateway.pipeline import (
    inbound_policy_from_config,
    signing_keys_from_config,
    submission_from_config,
)
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.gateway.users import User
from mailmoat.resolver import FakeResolver

pytestmark = pytest.mark.timeout(60)

NOW = 1_790_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_ED = ed25519.Ed25519PrivateKey.generate()
KEYS = (
    DKIMKey(domain="example.org", selector="rsa1", key=RSA_KEY),
    DKIMKey(domain="example.org", selector="ed1", key=ED_KEY),
    DKIMKey(domain="other.example", selector="s", key=OTHER_ED),
)
USER = User(name="alice", password_hash="", addresses=("alice@example.org",
                                                       "*@news.example.org"))

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n"
       b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <a@example.org>\r\n\r\n"
       b"Hello Bob.\r\n")


def records() -> dict[str, bytes]:
    return {"rsa1._domainkey.example.org.": key_record(RSA_KEY).encode(),
            "ed1._domainkey.example.org.": key_record(ED_KEY).encode(),
            "arc._domainkey.example.org.": key_record(RSA_KEY).encode()}


def resolver() -> FakeResolver:
    r = FakeResolver()
    for name, value in records().items():
        r.add_txt(name.rstrip("."), *txt_strings(value.decode()))
    return r


def lookup(name: bytes | str, timeout: int = 5) -> bytes:
    text = name.decode() if isinstance(name, bytes) else name
    return records().get(text if text.endswith(".") else text + ".", b"")


def signer(**kw: object) -> SubmissionSigner:
    # dkimpy checks t= against the real clock, so sign with it
    return SubmissionSigner(keys=KEYS, hostname="mx.example.org", clock=SYSTEM_CLOCK,
                            randbytes=lambda n: b"\x01" * n, **kw)  # type: ignore[arg-type]


async def test_dual_signature_verifies_with_dkimpy_and_ours() -> None:
    out = await signer().prepare(MSG, user=USER)
    assert out.ok
    assert out.signatures == ("d=example.org s=ed1 a=ed25519-sha256",
                              "d=example.org s=rsa1 a=rsa-sha256")
    assert out.message.startswith(b"DKIM-Signature:")
    assert out.message.endswith(MSG)
    d = dkim.DKIM(out.message)
    assert d.verify(idx=0, dnsfunc=lookup)
    assert d.verify(idx=1, dnsfunc=lookup)
    ours = await dkim_verify(out.message, resolver(), clock=SYSTEM_CLOCK)
    assert sorted((r.algorithm, r.result.value) for r in ours) == [
        ("ed25519-sha256", "pass"), ("rsa-sha256", "pass")]


async def test_from_not_allowed_is_refused() -> None:
    msg = MSG.replace(b"From: Alice <alice@example.org>", b"From: Boss <ceo@example.org>")
    out = await signer().prepare(msg, user=USER)
    assert out.reply == FROM_NOT_ALLOWED
    assert (out.reply.code, out.reply.status) == (550, "5.7.1")
    assert out.message == msg
    assert out.signatures == ()


@pytest.mark.parametrize("header", [
    b"From: Alice <alice@example.org>, Eve <eve@example.org>\r\n",  # one mailbox not hers
    b"From: \"alice@example.org\" <eve@example.org>\r\n",  # display name is not the address
    b"From: alice@example.org\r\nSender: eve@example.org\r\n",
])
async def test_every_author_mailbox_is_checked(header: bytes) -> None:
    msg = MSG.replace(b"From: Alice <alice@example.org>\r\n", header)
    out = await signer().prepare(msg, user=USER)
    assert out.reply == FROM_NOT_ALLOWED


@pytest.mark.parametrize("header", [
    b"",  # no From
    b"From: a@example.org\r\nFrom: alice@example.org\r\n",  # two From fields
    b"From: group: alice@example.org;\r\n",  # group syntax
    b"From: <alice@example.org\r\n",  # unbalanced
])
async def test_unreadable_from_is_refused(header: bytes) -> None:
    msg = MSG.replace(b"From: Alice <alice@example.org>\r\n", header)
    out = await signer().prepare(msg, user=USER)
    assert out.reply == FROM_UNREADABLE


async def test_subdomain_signed_by_parent_key() -> None:
    msg = MSG.replace(b"alice@example.org>", b"info@news.example.org>")
    out = await signer().prepare(msg, user=USER)
    assert out.ok
    assert [s.split()[0] for s in out.signatures] == ["d=example.org", "d=example.org"]


async def test_no_key_no_signature() -> None:
    user = User(name="x", password_hash="", addresses=("x@unsigned.example",))
    msg = MSG.replace(b"alice@example.org>", b"x@unsigned.example>")
    out = await signer().prepare(msg, user=user)
    assert out.ok
    assert out.signatures == ()
    assert out.message == msg


async def test_repair_bare_newlines_and_missing_fields() -> None:
    msg = (b"From: alice@example.org\nTo: bob@example.net\r\nSubject: x\r\n\r\n"
           b"line one\rline two\nlast")
    s = SubmissionSigner(keys=KEYS, hostname="mx.example.org", clock=FixedClock(wall=NOW),
                         randbytes=lambda n: b"\xab" * n)
    out = await s.prepare(msg, user=USER)
    assert out.ok
    data = out.message
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body == b"line one\r\nline two\r\nlast\r\n"
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    date = next(line for line in header.split("\r\n") if line.startswith("Date: "))
    assert email.utils.parsedate_to_datetime(date[6:]).timestamp() == NOW
    assert f"Message-ID: <{'ab' * 16}@mx.example.org>" in header
    assert set(out.repairs) == {"bare CR/LF made CRLF", "final CRLF added", "Date added",
                                "Message-ID added"}


def test_repair_leaves_clean_messages_alone() -> None:
    assert repair(MSG) == (MSG, ())


def test_from_addresses() -> None:
    assert from_addresses(b" Alice (x) <alice@example.org>") == ["alice@example.org"]
    assert from_addresses(b' "A, B" <a@x.example>, c@y.example') == ["a@x.example",
                                                                      "c@y.example"]
    assert from_addresses(b" <a@x.example> trailing") is None
    assert from_addresses(b" not an address") is None


def test_keys_for_picks_closest_domain_all_selectors() -> None:
    keys = (*KEYS, DKIMKey(domain="news.example.org", selector="n", key=OTHER_ED))
    assert [k.selector for k in keys_for("news.example.org", keys)] == ["n"]
    assert [k.selector for k in keys_for("a.example.org", keys)] == ["ed1", "rsa1"]
    assert keys_for("example.com", keys) == ()


async def test_submission_arc_seal() -> None:
    s = signer(arc_seal=SealKey(domain="example.org", selector="arc", key=RSA_KEY),
               resolver=resolver())
    out = await s.prepare(MSG, user=USER)
    assert out.sealed
    chain = await arc_validate(out.message, resolver(), clock=SYSTEM_CLOCK)
    assert chain.result is ARCStatus.PASS
    assert chain.instance_count == 1
    cv, _, reason = dkim.arc_verify(out.message, dnsfunc=lookup)
    assert cv == dkim.CV_Pass, reason


def test_arc_seal_needs_resolver() -> None:
    with pytest.raises(ConfigError):
        signer(arc_seal=SealKey(domain="example.org", selector="arc", key=RSA_KEY))


# --- keys from files and the configuration ---------------------------------------------------


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_load_keys_dir(tmp_path: Path) -> None:
    (tmp_path / "example.org").mkdir()
    (tmp_path / "example.org" / "rsa1.pem").write_bytes(_pem(RSA_KEY))
    (tmp_path / "example.org" / "ed1.key").write_bytes(_pem(ED_KEY))
    (tmp_path / "example.org" / "README").write_text("not a key")
    keys = load_keys_dir(tmp_path)
    assert sorted((k.domain, k.selector) for k in keys) == [("example.org", "ed1"),
                                                            ("example.org", "rsa1")]
    (tmp_path / "example.org" / "bad.pem").write_text("junk")
    with pytest.raises(ConfigError):
        load_keys_dir(tmp_path)


BASE = """
[server]
hostname = "mx.example.org"
[[listener]]
port = 2525
mode = "plain"
role = "mx"
"""


def test_config_builders(tmp_path: Path) -> None:
    (tmp_path / "dkim").mkdir()
    (tmp_path / "dkim" / "ed1.pem").write_bytes(_pem(ED_KEY))
    (tmp_path / "keys" / "other.example").mkdir(parents=True)
    (tmp_path / "keys" / "other.example" / "s.pem").write_bytes(_pem(OTHER_ED))
    text = BASE + """
[policy]
trusted_forwarders = ["192.0.2.0/24"]
trusted_arc_sealers = ["Lists.Example.NET."]
deny_domains = ["spam.example"]
quarantine_folder = ""
[dkim_signing]
keys = [ { domain = "example.org", selector = "ed1", key = "dkim/ed1.pem" } ]
keys_dir = "keys"
"""
    config = parse_config(text, base_dir=tmp_path)
    keys = signing_keys_from_config(config)
    assert sorted((k.domain, k.selector) for k in keys) == [("example.org", "ed1"),
                                                            ("other.example", "s")]
    policy = inbound_policy_from_config(config)
    assert policy.authserv_id == "mx.example.org"
    assert policy.trusted_arc_sealers == ("lists.example.net",)
    assert policy.quarantine_folder is None
    assert [str(n) for n in policy.trusted_forwarders] == ["192.0.2.0/24"]
    built = submission_from_config(config, clock=SYSTEM_CLOCK)
    assert [(k.domain, k.selector) for k in built.keys] == [(k.domain, k.selector) for k in keys]


def test_signing_keys_fall_back_to_submission_api(tmp_path: Path) -> None:
    (tmp_path / "s1.pem").write_bytes(_pem(RSA_KEY))
    text = BASE + """
[submission_api]
dkim = [ { domain = "example.org", selector = "s1", key = "s1.pem" } ]
"""
    keys = signing_keys_from_config(parse_config(text, base_dir=tmp_path))
    assert [(k.domain, k.selector) for k in keys] == [("example.org", "s1")]


def test_bad_policy_config_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + '[policy]\ntrusted_forwarders = ["nonsense"]\n', base_dir=tmp_path)
    assert info.value.key is not None
    assert info.value.key.startswith("policy.trusted_forwarders")
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + '[policy]\nquarantine_folder = "../x"\n', base_dir=tmp_path)
    assert info.value.key == "policy.quarantine_folder"


@pytest.mark.parametrize("extra", [
    b"To: victim@evil.example\r\n", b"Subject: second\r\n", b"Date: Sun, 29 Nov 2026 00:00:00 Z\r\n",
    b"cc: a@x.example\r\nCC: b@x.example\r\n", b"Content-Type: text/html\r\n"
    b"Content-Type: text/plain\r\n", b"Reply-To: a@x.example\r\nreply-to: b@x.example\r\n",
])
async def test_a_field_allowed_once_appearing_twice_is_refused(extra: bytes) -> None:
    # What "Subject: hi\r\nTo: victim@..." typed into a form becomes (RFC 5322 §3.6 table).
    message = MSG.replace(b"Subject: hi\r\n", b"Subject: hi\r\n" + extra)
    out = await signer().prepare(message, user=USER)
    assert not out.ok
    assert out.reply is not None
    assert (out.reply.code, out.reply.status) == (550, "5.6.0")
    assert "more than once" in out.reply.text


async def test_resent_blocks_may_repeat() -> None:
    resent = (b"Resent-From: alice@example.org\r\nResent-To: a@x.example\r\n"
              b"Resent-From: alice@example.org\r\nResent-To: b@x.example\r\n")
    out = await signer().prepare(resent + MSG, user=USER)
    assert out.ok


async def test_bcc_is_removed_before_signing() -> None:
    message = MSG.replace(b"Subject: hi\r\n", b"Subject: hi\r\nBcc: hidden@x.example,\r\n"
                          b" other@x.example\r\nResent-Bcc: r@x.example\r\n")
    out = await signer().prepare(message, user=USER)
    assert out.ok
    assert b"hidden@x.example" not in out.message
    assert b"other@x.example" not in out.message
    assert b"r@x.example" not in out.message
    assert "Bcc removed" in out.repairs
    assert out.message.endswith(MSG)  # everything else exactly as submitted
    d = dkim.DKIM(out.message)
    assert d.verify(idx=0, dnsfunc=lookup)
