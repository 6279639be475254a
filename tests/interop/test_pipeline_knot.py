"""The message pipelines through real DNS: Knot DNS serving SPF, DKIM keys and DMARC records
(p=reject / quarantine / none) for several test domains, read by mailmoat.net.dns.DNSResolver.

Outcomes are the RFC's (RFC 7489 §6.6.4 dispositions, RFC 8617 §7.2 override, RFC 8601 §5
removal); the same zone text loaded into FakeResolver must give the same verdicts
(differential), and dkimpy verifies what we deliver and what we sign.
"""

from __future__ import annotations

from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from knot_fixture import KnotServer, knot_server  # noqa: F401  (fixture)

from mailmoat.auth.arc import seal
from mailmoat.auth.arc import validate as arc_validate
from mailmoat.auth.dkim import key_record, sign, txt_strings
from mailmoat.clock import SYSTEM_CLOCK, FixedClock
from mailmoat.gateway.inbound import (
    Action,
    InboundPipeline,
    InboundPolicy,
    InboundVerdict,
    apply_edits,
    verdict_for,
)
from mailmoat.gateway.outbound_sign import SubmissionSigner
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.gateway.users import User
from mailmoat.net.dns import DNSResolver
from mailmoat.resolver import FakeResolver, Resolver

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.timeout(120)]

NOW = 1_790_000_000.0  # mid-2026: in the past for dkimpy, which reads the real clock
OUR_ID = "mx.example.org"
SPOOFER = "203.0.113.9"
FORWARDER = "198.51.100.5"

REJECT_ED = ed25519.Ed25519PrivateKey.generate()
FWD_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OUT_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OUT_ED = ed25519.Ed25519PrivateKey.generate()

KEYS = {
    "ed._domainkey.reject.test": REJECT_ED,
    "arc._domainkey.fwd.test": FWD_RSA,
    "rsa1._domainkey.send.test": OUT_RSA,
    "ed1._domainkey.send.test": OUT_ED,
}


def _txt(value: str) -> str:
    return " ".join(f'"{s}"' for s in txt_strings(value))


def zone() -> str:
    lines = [
        "$ORIGIN test.",
        "$TTL 300",
        "@ IN SOA ns1 hostmaster 2026112801 7200 3600 1209600 60",
        "  IN NS ns1",
        "ns1 IN A 127.0.0.1",
    ]
    for label, spf, dmarc in (
        ("reject", "v=spf1 ip4:192.0.2.10 -all", "v=DMARC1; p=reject"),
        ("quar", "v=spf1 ip4:192.0.2.20 -all", "v=DMARC1; p=quarantine"),
        ("none", "v=spf1 ip4:192.0.2.30 -all", "v=DMARC1; p=none"),
        ("fwd", f"v=spf1 ip4:{FORWARDER} -all", "v=DMARC1; p=none"),
        ("send", "v=spf1 -all", "v=DMARC1; p=reject; adkim=s"),
    ):
        lines += [f"{label} IN A 192.0.2.1", f'{label} IN TXT "{spf}"',
                  f'_dmarc.{label} IN TXT "{dmarc}"']
    for name, key in KEYS.items():
        lines.append(f"{name.removesuffix('.test')} IN TXT {_txt(key_record(key))}")
    return "\n".join(lines) + "\n"


ZONES = {"test": zone()}


def lookup(name: bytes | str, timeout: int = 5) -> bytes:
    """dkimpy's DNS hook over the same key records."""
    text = (name.decode() if isinstance(name, bytes) else name).rstrip(".")
    key = KEYS.get(text)
    return key_record(key).encode() if key is not None else b""


def message(from_addr: str, subject: str = "Hello") -> bytes:
    return (f"From: Alice <{from_addr}>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
            "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@x.test>\r\n\r\n"
            "Hi there.\r\n").encode()


def pipeline(resolver: Resolver, **policy: object) -> InboundPipeline:
    pol = InboundPolicy(authserv_id=OUR_ID, **policy)  # type: ignore[arg-type]
    return InboundPipeline(pol, resolver=resolver, clock=FixedClock(wall=NOW))


async def forwarded(resolver: Resolver) -> bytes:
    original = sign(message("alice@reject.test"), "reject.test", "ed", REJECT_ED,
                    timestamp=int(NOW) - 60) + message("alice@reject.test")
    modified = original.replace(b"Subject: Hello", b"Subject: [list] Hello")
    chain = await arc_validate(modified, resolver, clock=FixedClock(wall=NOW))
    arc_set = seal(modified, chain, authserv_id="fwd.test",
                   results=["dkim=pass header.d=reject.test",
                            "dmarc=pass header.from=reject.test"],
                   domain="fwd.test", selector="arc", private_key=FWD_RSA,
                   timestamp=int(NOW) - 30)
    assert arc_set is not None
    return arc_set.fields + modified


async def flows(resolver: Resolver) -> list[InboundVerdict]:
    p = pipeline(resolver, trusted_arc_sealers=("fwd.test",))
    aligned = (b"Authentication-Results: mx.example.org; dmarc=pass\r\n"
               + sign(message("alice@reject.test"), "reject.test", "ed", REJECT_ED,
                      timestamp=int(NOW) - 60) + message("alice@reject.test"))
    return [
        await verdict_for(p, message("alice@reject.test"), ip=SPOOFER, helo="evil.test",
                          mail_from="alice@reject.test"),
        await verdict_for(p, message("carol@quar.test"), ip=SPOOFER, helo="evil.test",
                          mail_from=""),
        await verdict_for(p, message("dan@none.test"), ip=SPOOFER, helo="evil.test",
                          mail_from=""),
        await verdict_for(p, aligned, ip=SPOOFER, helo="evil.test", mail_from="",
                          chunk_size=7),
        await verdict_for(p, await forwarded(resolver), ip=FORWARDER, helo="fwd.test",
                          mail_from="bounce@fwd.test"),
    ]


def summary(v: InboundVerdict) -> tuple[object, ...]:
    a = v.authentication
    return (v.action, a.spf.result.value, tuple(d.result.value for d in a.dkim),
            a.arc.result.value, a.dmarc.result.value, tuple(o.type for o in v.overrides))


async def test_inbound_flows_through_knot(knot_server: Callable[..., KnotServer]) -> None:  # noqa: F811
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)
    got = await flows(resolver)
    assert [summary(v) for v in got] == [
        (Action.REJECT, "fail", ("none",), "none", "fail", ()),
        (Action.QUARANTINE, "none", ("none",), "none", "fail", ()),
        (Action.DELIVER, "none", ("none",), "none", "fail", ()),
        (Action.DELIVER, "none", ("pass",), "none", "pass", ()),
        (Action.DELIVER, "pass", ("fail",), "pass", "fail", ("local_policy",)),
    ]
    reject = got[0]
    assert reject.reply is not None
    assert (reject.reply.code, reject.reply.status) == (550, "5.7.1")
    # the aligned message as delivered: the forged A-R gone, ours on top, DKIM intact
    aligned = (b"Authentication-Results: mx.example.org; dmarc=pass\r\n"
               + sign(message("alice@reject.test"), "reject.test", "ed", REJECT_ED,
                      timestamp=int(NOW) - 60) + message("alice@reject.test"))
    out = b"".join(apply_edits(got[3].edits, [aligned]))
    assert out.count(b"Authentication-Results: mx.example.org") == 1
    assert out.startswith(b"Authentication-Results: mx.example.org;")
    assert b"Authentication-Results: mx.example.org; dmarc=pass\r\n" not in out
    assert dkim.verify(out, dnsfunc=lookup)
    assert b"policy.override=arc" in got[4].authentication.authentication_results.encode()
    # differential: the same zone in FakeResolver
    fake = await flows(FakeResolver.from_zones(ZONES))
    assert [summary(v) for v in fake] == [summary(v) for v in got]


async def test_outbound_signing_verified_through_knot(
        knot_server: Callable[..., KnotServer]) -> None:  # noqa: F811
    server = knot_server(ZONES)
    resolver = DNSResolver([server.address], timeout=2, lifetime=5)
    signer = SubmissionSigner(
        keys=(DKIMKey(domain="send.test", selector="rsa1", key=OUT_RSA),
              DKIMKey(domain="send.test", selector="ed1", key=OUT_ED)),
        hostname="mx.send.test", clock=SYSTEM_CLOCK)
    user = User(name="alice", password_hash="", addresses=("alice@send.test",))
    out = await signer.prepare(message("alice@send.test"), user=user)
    assert out.ok
    assert len(out.signatures) == 2
    d = dkim.DKIM(out.message)
    assert d.verify(idx=0, dnsfunc=lookup)
    assert d.verify(idx=1, dnsfunc=lookup)
    # and our inbound pipeline, through knot: strict DKIM alignment passes DMARC p=reject
    p = InboundPipeline(InboundPolicy(authserv_id=OUR_ID), resolver=resolver,
                        clock=SYSTEM_CLOCK)
    v = await verdict_for(p, out.message, ip=SPOOFER, helo="h.test", mail_from="")
    assert [r.result.value for r in v.authentication.dkim] == ["pass", "pass"]
    assert v.authentication.dmarc.result.value == "pass"
    assert v.action is Action.DELIVER
    refused = await signer.prepare(message("eve@send.test"), user=user)
    assert refused.reply is not None
    assert refused.reply.code == 550
