"""Outbound delivery to a domain (gateway.outbound) with a FakeResolver and a fake transport.

The fake transport plays the servers: each (address, port) is a scripted receiver (STARTTLS
or not, a certificate valid for some names, REQUIRETLS advertised or not, replies). It calls
the gate exactly where the real transport does - after STARTTLS and the second EHLO, before
MAIL - so these tests decide what the *policy* lets through; the interop tests
(tests/interop/test_outbound_*.py) show the same with real servers.

Expected values come from the RFCs: RFC 5321 §5.1 (MX order, implicit MX), RFC 7505 (null
MX: 556 5.1.10), RFC 7672 (DANE), RFC 8461 (MTA-STS), RFC 8689 (REQUIRETLS: 5.7.30),
RFC 8460 §4.3 (result types).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailmoat.auth.mtasts import Mode, Policy, RecordLookup, RecordStatus
from mailmoat.auth.tlspolicy import PolicyKind, ResultType
from mailmoat.gateway.outbound import (
    Gate,
    HopRequest,
    Outbound,
    PolicyRefused,
)
from mailmoat.net.mtasts import PolicyOutcome
from mailmoat.net.smtp_client import (
    RecipientReply,
    SendError,
    SendResult,
    SessionInfo,
    TLSDetails,
)
from mailmoat.resolver import MX
from mailmoat.resolver.fake import FakeResolver
from mailmoat.smtp.replies import Reply

trustme = pytest.importorskip("trustme")

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


# --- fake servers ---------------------------------------------------------------------------
@dataclass
class FakeServer:
    starttls: bool = True
    names: tuple[str, ...] = ()  # names the certificate is PKIX-valid for
    chain: tuple[bytes, ...] = ()
    handshake_fails: bool = False
    requiretls: bool = False
    down: bool = False
    rcpt_reply: Reply = field(default_factory=lambda: Reply(code=250, status="2.1.5", text="ok"))
    received: list[HopRequest] = field(default_factory=list)


class FakeTransport:
    def __init__(self, servers: dict[str, FakeServer]) -> None:
        self.servers = servers
        self.requests: list[HopRequest] = []

    async def send(self, request: HopRequest, gate: Gate) -> SendResult:
        self.requests.append(request)
        server = self.servers.get(request.address)
        session = SessionInfo(host=request.address, port=request.port, mode="starttls")
        if server is None or server.down:
            raise SendError("cannot connect: refused", stage="connect", temporary=True,
                            session=session)
        caps = {"PIPELINING": "", "8BITMIME": ""}
        if server.starttls:
            caps["STARTTLS"] = ""
        session = SessionInfo(host=request.address, port=request.port, mode="starttls",
                              ehlo_before_tls=caps)
        tls = None
        after = None
        if request.starttls != "none" and server.starttls:
            if server.handshake_fails:
                raise SendError("TLS handshake failed: wrong version number", stage="tls",
                                temporary=True, session=session)
            valid = request.server_name in server.names
            if request.verify and not valid:
                raise SendError(
                    f"TLS certificate verification failed for {request.server_name}: "
                    f"Hostname mismatch, certificate is not valid for "
                    f"'{request.server_name}'. (use a CA file ...)", stage="tls",
                    temporary=True, session=session)
            tls = TLSDetails(
                version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256,
                server_name=request.server_name, subject=None, issuer=None, san=server.names,
                not_before=None, not_after=None, verified=request.verify,
                verify_error=None if request.verify else (
                    "not verified (verification disabled); " + (
                        f"the certificate would verify for {request.server_name}" if valid
                        else "a check finds: leaf certificate has no matching subjectAltName")))
            after = dict(caps)
            after.pop("STARTTLS")
            if server.requiretls:
                after["REQUIRETLS"] = ""
        elif request.starttls == "require":
            raise SendError("the server does not offer STARTTLS and TLS is required",
                            stage="starttls", temporary=True, session=session)
        session = SessionInfo(host=request.address, port=request.port, mode="starttls",
                              ehlo_before_tls=caps, ehlo_after_tls=after, tls=tls)
        verdict = gate(session, server.chain if tls else ())
        if not verdict.deliver:
            raise PolicyRefused(verdict, session)
        if request.requiretls:
            assert after is not None
            assert "REQUIRETLS" in after
        reply = server.rcpt_reply
        recipients = tuple(RecipientReply(address=r, reply=reply) for r in request.rcpt_to)
        if reply.code >= 300:
            raise SendError(f"every recipient was refused ({reply.code})", stage="rcpt",
                            temporary=reply.code < 500, session=session, reply=reply,
                            recipients=recipients)
        server.received.append(request)
        final = Reply(code=250, status="2.0.0", text="queued as ABC123")
        return SendResult(session=session, mail_reply=Reply(code=250, status=None, text="ok"),
                          recipients=recipients, final_reply=final, queue_id="ABC123")


@dataclass
class StaticPolicies:
    policy: Policy | None

    async def policy_for(self, domain: str) -> PolicyOutcome:
        return PolicyOutcome(domain=domain, policy=self.policy, source="cache",
                             lookup=RecordLookup(domain=domain, status=RecordStatus.FOUND))


def _outbound(resolver: FakeResolver, servers: dict[str, FakeServer], **kwargs: object
              ) -> tuple[Outbound, FakeTransport]:
    transport = FakeTransport(servers)
    outbound = Outbound(resolver, transport=transport, rng=random.Random(7), helo="out.test",
                        **kwargs)  # type: ignore[arg-type]
    return outbound, transport


async def _send(outbound: Outbound, domain: str = "example.net", *, requiretls: bool = False,
                rcpt: Sequence[str] = ("b@example.net",)):  # type: ignore[no-untyped-def]
    return await outbound.deliver(MESSAGE, domain=domain, mail_from="a@example.org",
                                  rcpt_to=list(rcpt), requiretls=requiretls)


def _zone(**extra: str) -> FakeResolver:
    return FakeResolver.from_zone_text("""\
example.net. 300 IN MX 10 mx1.example.net.
example.net. 300 IN MX 20 mx2.example.net.
mx1.example.net. 300 IN A 192.0.2.1
mx2.example.net. 300 IN A 192.0.2.2
""")


# --- MX lookup (RFC 5321 §5.1, RFC 7505) ---------------------------------------------------------
async def test_mx_preference_order_and_next_mx() -> None:
    resolver = _zone()
    outbound, transport = _outbound(resolver, {
        "192.0.2.1": FakeServer(down=True), "192.0.2.2": FakeServer()})
    result = await _send(outbound)
    assert result.status == "delivered"
    assert [r.address for r in transport.requests] == ["192.0.2.1", "192.0.2.2"]
    assert [a.mx for a in result.attempts] == ["mx1.example.net", "mx2.example.net"]
    assert result.attempts[0].outcome == "failed"
    assert result.attempts[1].outcome == "delivered"


async def test_equal_preferences_are_randomised_with_the_injected_rng() -> None:
    resolver = FakeResolver.from_zone_text("""\
example.net. 300 IN MX 10 a.example.net.
example.net. 300 IN MX 10 b.example.net.
example.net. 300 IN MX 10 c.example.net.
example.net. 300 IN MX 5 first.example.net.
example.net. 300 IN MX 50 last.example.net.
""")
    for name, address in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3"),
                          ("first", "192.0.2.4"), ("last", "192.0.2.5")):
        resolver.add_a(f"{name}.example.net", address)
    orders = set()
    for seed in range(30):
        transport = FakeTransport({})  # every server down: every MX is tried, in order
        outbound = Outbound(resolver, transport=transport, rng=random.Random(seed),
                            max_addresses=10)
        result = await _send(outbound)
        assert result.status == "deferred"
        hosts = [a.mx.split(".")[0] for a in result.attempts]
        assert hosts[0] == "first"
        assert hosts[-1] == "last"
        assert sorted(hosts[1:4]) == ["a", "b", "c"]
        orders.add(tuple(hosts[1:4]))
        # the same seed gives the same order (the randomness is injected)
        again = await _send(Outbound(resolver, transport=FakeTransport({}),
                                     rng=random.Random(seed), max_addresses=10))
        assert [a.mx for a in again.attempts] == [a.mx for a in result.attempts]
    assert len(orders) > 1  # RFC 5321 §5.1: "MUST randomize them"


async def test_implicit_mx() -> None:
    resolver = FakeResolver.from_zone_text("example.net. 300 IN A 192.0.2.9\n")
    outbound, transport = _outbound(resolver, {"192.0.2.9": FakeServer()})
    result = await _send(outbound)
    assert result.status == "delivered"
    assert transport.requests[0].server_name == "example.net"


async def test_implicit_mx_without_address_bounces() -> None:
    resolver = FakeResolver.from_zone_text("example.net. 300 IN TXT \"v=spf1 -all\"\n")
    outbound, transport = _outbound(resolver, {})
    result = await _send(outbound)
    assert result.status == "bounced"
    assert transport.requests == []


async def test_null_mx_bounces_556_5_1_10_without_connecting() -> None:
    resolver = FakeResolver.from_zone_text("""\
example.net. 300 IN MX 0 .
example.net. 300 IN A 192.0.2.1
""")
    outbound, transport = _outbound(resolver, {"192.0.2.1": FakeServer()})
    result = await _send(outbound)
    assert result.status == "bounced"
    assert result.reply is not None
    assert (result.reply.code, result.reply.status) == (556, "5.1.10")
    assert transport.requests == []
    assert result.error is not None
    assert not result.error.temporary


async def test_dot_among_other_mx_is_not_a_null_mx() -> None:
    resolver = _zone()
    resolver.add("example.net", MX(preference=0, exchange=""))
    outbound, _transport = _outbound(resolver, {"192.0.2.1": FakeServer()})
    result = await _send(outbound)
    assert result.status == "delivered"


async def test_nxdomain_bounces() -> None:
    outbound, _ = _outbound(FakeResolver.from_zone_text("other.net. 300 IN A 192.0.2.1\n"), {})
    result = await _send(outbound)
    assert result.status == "bounced"
    assert result.reply is not None
    assert result.reply.code == 550


async def test_mx_temperror_defers_never_bounces() -> None:
    resolver = _zone()
    resolver.set_servfail("example.net")
    outbound, transport = _outbound(resolver, {})
    result = await _send(outbound)
    assert result.status == "deferred"
    assert result.reply is not None
    assert result.reply.code // 100 == 4
    assert result.error is not None
    assert result.error.temporary
    assert transport.requests == []


async def test_address_temperror_defers() -> None:
    resolver = _zone()
    resolver.set_timeout("mx1.example.net")
    resolver.set_timeout("mx2.example.net")
    outbound, _ = _outbound(resolver, {})
    result = await _send(outbound)
    assert result.status == "deferred"
    assert all(a.outcome == "skipped" for a in result.attempts)


async def test_mx_pointing_to_a_cname_is_followed() -> None:
    resolver = FakeResolver.from_zone_text("""\
example.net. 300 IN MX 10 alias.example.net.
alias.example.net. 300 IN CNAME real.example.org.
real.example.org. 300 IN A 192.0.2.7
""")
    outbound, transport = _outbound(resolver, {"192.0.2.7": FakeServer()})
    result = await _send(outbound)
    assert result.status == "delivered"
    assert transport.requests[0].server_name == "alias.example.net"


async def test_a_then_aaaa_and_the_address_bound() -> None:
    resolver = FakeResolver.from_zone_text("""\
example.net. 300 IN MX 10 mx.example.net.
mx.example.net. 300 IN A 192.0.2.1
mx.example.net. 300 IN A 192.0.2.2
mx.example.net. 300 IN AAAA 2001:db8::1
""")
    outbound, transport = _outbound(resolver, {}, max_addresses=2)
    result = await _send(outbound)
    assert result.status == "deferred"
    assert [r.address for r in transport.requests] == ["192.0.2.1", "192.0.2.2"]
    outbound, transport = _outbound(resolver, {})
    await _send(outbound)
    assert [r.address for r in transport.requests] == ["192.0.2.1", "192.0.2.2", "2001:db8::1"]


async def test_route_maps_address_and_port() -> None:
    resolver = _zone()
    ports = {"mx1.example.net": 2525}
    outbound, transport = _outbound(
        resolver, {"127.0.0.1": FakeServer()},
        route=lambda host, address, port: ("127.0.0.1", ports.get(host, port)))
    result = await _send(outbound)
    assert result.status == "delivered"
    assert (transport.requests[0].address, transport.requests[0].port) == ("127.0.0.1", 2525)


async def test_reply_to_the_message_is_final() -> None:
    resolver = _zone()
    servers = {"192.0.2.1": FakeServer(rcpt_reply=Reply(code=550, status="5.1.1",
                                                        text="no such user")),
               "192.0.2.2": FakeServer()}
    outbound, transport = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "bounced"
    assert len(transport.requests) == 1  # the second MX is not asked
    servers["192.0.2.1"].rcpt_reply = Reply(code=451, status="4.3.0", text="try later")
    outbound, transport = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "deferred"
    assert len(transport.requests) == 1


# --- opportunistic TLS (RFC 7435) -----------------------------------------------------------------
async def test_opportunistic_delivers_in_clear_without_starttls() -> None:
    outbound, transport = _outbound(_zone(), {"192.0.2.1": FakeServer(starttls=False)})
    result = await _send(outbound)
    assert result.status == "delivered"
    assert transport.requests[0].starttls == "opportunistic"
    last = result.attempts[-1]
    assert last.policy is PolicyKind.OPPORTUNISTIC
    assert last.tls_version is None
    assert last.failure is None


async def test_opportunistic_delivers_with_a_wrong_name_certificate() -> None:
    outbound, _ = _outbound(_zone(), {"192.0.2.1": FakeServer(names=("other.test",))})
    result = await _send(outbound)
    assert result.status == "delivered"
    last = result.attempts[-1]
    assert last.tls_version == "TLSv1.3"
    assert last.verified is False


async def test_opportunistic_retries_in_clear_after_a_failed_handshake() -> None:
    outbound, transport = _outbound(_zone(), {"192.0.2.1": FakeServer(handshake_fails=True)})
    result = await _send(outbound)
    assert result.status == "delivered"
    assert [r.starttls for r in transport.requests] == ["opportunistic", "none"]
    assert [r.address for r in transport.requests] == ["192.0.2.1", "192.0.2.1"]
    assert [a.policy for a in result.attempts] == [PolicyKind.OPPORTUNISTIC, PolicyKind.NONE]


# --- MTA-STS (RFC 8461) ------------------------------------------------------------------------
ENFORCE = Policy(mode=Mode.ENFORCE, max_age=86400, mx=("mx1.example.net", "mx2.example.net"))
TESTING = Policy(mode=Mode.TESTING, max_age=86400, mx=("mx1.example.net", "mx2.example.net"))


async def test_sts_enforce_refuses_wrong_name_and_uses_the_next_mx() -> None:
    servers = {"192.0.2.1": FakeServer(names=("wrong.test",)),
               "192.0.2.2": FakeServer(names=("mx2.example.net",))}
    outbound, transport = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    assert result.status == "delivered"
    assert servers["192.0.2.1"].received == []
    first, second = result.attempts
    assert first.policy is PolicyKind.MTA_STS_ENFORCE
    assert first.failure is ResultType.CERTIFICATE_HOST_MISMATCH
    assert second.outcome == "delivered"
    assert second.verified is True
    assert all(r.verify and r.starttls == "require" for r in transport.requests)


async def test_sts_enforce_without_starttls_defers() -> None:
    servers = {"192.0.2.1": FakeServer(starttls=False), "192.0.2.2": FakeServer(starttls=False)}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    assert result.status == "deferred"  # never a bounce: the queue retries until max age
    assert {a.failure for a in result.attempts} == {ResultType.STARTTLS_NOT_SUPPORTED}
    assert all(not s.received for s in servers.values())


async def test_sts_enforce_skips_mx_outside_the_policy() -> None:
    policy = Policy(mode=Mode.ENFORCE, max_age=86400, mx=("mx2.example.net",))
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",)),
               "192.0.2.2": FakeServer(names=("mx2.example.net",))}
    outbound, transport = _outbound(_zone(), servers, mtasts=StaticPolicies(policy))
    result = await _send(outbound)
    assert result.status == "delivered"
    assert [r.address for r in transport.requests] == ["192.0.2.2"]
    assert result.attempts[0].outcome == "skipped"
    assert result.attempts[0].failure is ResultType.VALIDATION_FAILURE


async def test_sts_testing_delivers_and_records_the_failure() -> None:
    servers = {"192.0.2.1": FakeServer(names=("wrong.test",))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(TESTING))
    result = await _send(outbound)
    assert result.status == "delivered"
    last = result.attempts[-1]
    assert last.policy is PolicyKind.MTA_STS_TESTING
    assert last.failure is ResultType.CERTIFICATE_HOST_MISMATCH


async def test_sts_testing_without_failure_records_none() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(TESTING))
    result = await _send(outbound)
    assert result.status == "delivered"
    assert result.attempts[-1].failure is None


# --- DANE (RFC 7672) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs() -> tuple[bytes, bytes]:
    """Two leaf certificates (DER) with their own keys."""
    ca = trustme.CA()
    out = []
    for name in ("mx1.example.net", "mx2.example.net"):
        pem = ca.issue_cert(name).cert_chain_pems[0].bytes()
        out.append(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))
    return out[0], out[1]


def _spki_sha256(der: bytes) -> bytes:
    """RFC 6698 §2.1.2 selector 1 (SubjectPublicKeyInfo), §2.1.3 matching type 1."""
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _signed_zone(good: bytes, *, secure_tlsa: bool = True) -> FakeResolver:
    resolver = _zone()
    resolver.add_tlsa("_25._tcp.mx1.example.net", 3, 1, 1, _spki_sha256(good))
    resolver.add_tlsa("_25._tcp.mx2.example.net", 3, 1, 1, _spki_sha256(good))
    for name in ("example.net", "mx1.example.net", "mx2.example.net"):
        resolver.set_authenticated(name)
    if secure_tlsa:
        for name in ("_25._tcp.mx1.example.net", "_25._tcp.mx2.example.net"):
            resolver.set_authenticated(name)
    return resolver


async def test_dane_ee_match_delivers_without_name_check(certs: tuple[bytes, bytes]) -> None:
    good, _bad = certs
    servers = {"192.0.2.1": FakeServer(names=(), chain=(good,))}  # wrong name: irrelevant
    outbound, transport = _outbound(_signed_zone(good), servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    last = result.attempts[-1]
    assert last.policy is PolicyKind.DANE
    assert last.verified is True
    assert transport.requests[0].starttls == "require"
    assert transport.requests[0].verify is False


async def test_dane_mismatch_refused_next_mx(certs: tuple[bytes, bytes]) -> None:
    good, bad = certs
    servers = {"192.0.2.1": FakeServer(chain=(bad,)), "192.0.2.2": FakeServer(chain=(good,))}
    outbound, _ = _outbound(_signed_zone(good), servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert servers["192.0.2.1"].received == []
    assert result.attempts[0].outcome == "refused"
    assert result.attempts[0].failure is ResultType.VALIDATION_FAILURE


async def test_dane_all_mismatch_defers(certs: tuple[bytes, bytes]) -> None:
    good, bad = certs
    servers = {"192.0.2.1": FakeServer(chain=(bad,)), "192.0.2.2": FakeServer(chain=(bad,))}
    outbound, _ = _outbound(_signed_zone(good), servers)
    result = await _send(outbound)
    assert result.status == "deferred"
    assert result.reply is not None
    assert result.reply.status == "4.7.5"


async def test_dane_requires_starttls(certs: tuple[bytes, bytes]) -> None:
    good, _ = certs
    servers = {"192.0.2.1": FakeServer(starttls=False), "192.0.2.2": FakeServer(starttls=False)}
    outbound, _ = _outbound(_signed_zone(good), servers)
    result = await _send(outbound)
    assert result.status == "deferred"
    assert {a.failure for a in result.attempts} == {ResultType.STARTTLS_NOT_SUPPORTED}


async def test_dane_no_cleartext_fallback(certs: tuple[bytes, bytes]) -> None:
    good, _ = certs
    servers = {"192.0.2.1": FakeServer(handshake_fails=True, chain=(good,))}
    outbound, transport = _outbound(_signed_zone(good), servers)
    result = await _send(outbound)
    assert result.status == "deferred"
    assert all(r.starttls == "require" for r in transport.requests)


async def test_dane_precedes_mta_sts(certs: tuple[bytes, bytes]) -> None:
    """RFC 8461 §2: DANE first - a certificate invalid for the MX name under the STS policy
    but matching the TLSA record is accepted."""
    good, _ = certs
    servers = {"192.0.2.1": FakeServer(names=("wrong.test",), chain=(good,))}
    outbound, transport = _outbound(_signed_zone(good), servers,
                                    mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    assert result.status == "delivered"
    assert result.attempts[-1].policy is PolicyKind.DANE
    assert transport.requests[0].verify is False


async def test_unauthenticated_tlsa_is_ignored(certs: tuple[bytes, bytes]) -> None:
    good, bad = certs
    servers = {"192.0.2.1": FakeServer(chain=(bad,))}
    outbound, _ = _outbound(_signed_zone(good, secure_tlsa=False), servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert result.attempts[-1].policy is PolicyKind.OPPORTUNISTIC


async def test_dane_with_an_insecure_mx_rrset(certs: tuple[bytes, bytes]) -> None:
    """RFC 7672 §2.2.1: DANE MAY be used for MX hosts from an insecure MX RRset (we do, as
    Postfix >= 3.6): the host's secure TLSA records still refuse a mismatching server."""
    good, bad = certs
    resolver = _signed_zone(good)
    resolver.set_authenticated("example.net", False)
    servers = {"192.0.2.1": FakeServer(chain=(bad,)), "192.0.2.2": FakeServer(chain=(good,))}
    outbound, _ = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert [a.outcome for a in result.attempts] == ["refused", "delivered"]


async def test_insecure_address_records_disable_dane(certs: tuple[bytes, bytes]) -> None:
    """RFC 7672 §2.2.2: TLSA records are used only for a host whose addresses are secure."""
    good, bad = certs
    resolver = _signed_zone(good)
    resolver.set_authenticated("mx1.example.net", False)
    servers = {"192.0.2.1": FakeServer(chain=(bad,))}
    outbound, _ = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert result.attempts[-1].policy is PolicyKind.OPPORTUNISTIC


async def test_tlsa_lookup_failure_skips_the_host(certs: tuple[bytes, bytes]) -> None:
    good, _ = certs
    resolver = _signed_zone(good)
    resolver.set_servfail("_25._tcp.mx1.example.net")
    servers = {"192.0.2.1": FakeServer(chain=(good,)), "192.0.2.2": FakeServer(chain=(good,))}
    outbound, transport = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert [r.address for r in transport.requests] == ["192.0.2.2"]
    assert result.attempts[0].failure is ResultType.DNSSEC_INVALID


async def test_dane_disabled_when_resolver_does_not_validate(
    certs: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad = certs
    resolver = _signed_zone(good)
    resolver.add_a("ietf.org", "192.0.2.80")  # not authenticated: no validation
    servers = {"192.0.2.1": FakeServer(chain=(bad,))}
    outbound, _ = _outbound(resolver, servers)
    with caplog.at_level(logging.WARNING, logger="mailmoat.gateway.outbound"):
        assert await outbound.check_dnssec() is False
    assert "DANE disabled" in caplog.text
    assert outbound.dane_enabled is False
    result = await _send(outbound)
    assert result.status == "delivered"  # no stall: the queue keeps moving
    assert ("_25._tcp.mx1.example.net", "TLSA") not in [(n, str(t)) for n, t in
                                                        resolver.queries]


async def test_dnssec_check_passes_with_authenticated_data(certs: tuple[bytes, bytes]) -> None:
    good, _ = certs
    resolver = _signed_zone(good)
    resolver.add_a("ietf.org", "192.0.2.80")
    resolver.set_authenticated("ietf.org")
    outbound, _ = _outbound(resolver, {})
    assert await outbound.check_dnssec() is True
    assert outbound.dane_enabled


def test_dane_disabled_for_a_resolver_that_does_not_trust_ad(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoAD(FakeResolver):
        trust_ad = False

    with caplog.at_level(logging.WARNING, logger="mailmoat.gateway.outbound"):
        outbound = Outbound(NoAD())
    assert not outbound.dane_enabled
    assert "AD bit is not trusted" in caplog.text


# --- REQUIRETLS (RFC 8689) ------------------------------------------------------------------------
def _secure_zone() -> FakeResolver:
    resolver = _zone()
    for name in ("example.net", "mx1.example.net", "mx2.example.net"):
        resolver.set_authenticated(name)
    return resolver


async def test_requiretls_delivered_to_a_server_advertising_it() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",), requiretls=True)}
    outbound, transport = _outbound(_secure_zone(), servers)
    result = await _send(outbound, requiretls=True)
    assert result.status == "delivered"
    request = transport.requests[0]
    assert request.requiretls
    assert request.verify
    assert request.starttls == "require"
    assert result.attempts[-1].policy is PolicyKind.REQUIRETLS


async def test_requiretls_bounces_when_no_mx_advertises_it() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",)),
               "192.0.2.2": FakeServer(names=("mx2.example.net",))}
    outbound, _ = _outbound(_secure_zone(), servers)
    result = await _send(outbound, requiretls=True)
    assert result.status == "bounced"
    assert result.reply is not None
    assert (result.reply.code, result.reply.status) == (550, "5.7.30")
    assert {a.failure for a in result.attempts} == {ResultType.REQUIRETLS_NOT_SUPPORTED}
    assert all(not s.received for s in servers.values())


async def test_requiretls_needs_a_verified_certificate() -> None:
    servers = {"192.0.2.1": FakeServer(names=("wrong.test",), requiretls=True),
               "192.0.2.2": FakeServer(names=("wrong.test",), requiretls=True)}
    outbound, _ = _outbound(_secure_zone(), servers)
    result = await _send(outbound, requiretls=True)
    assert result.status != "delivered"
    assert {a.failure for a in result.attempts} == {ResultType.CERTIFICATE_HOST_MISMATCH}


async def test_requiretls_refuses_an_unauthenticated_mx() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",), requiretls=True)}
    outbound, transport = _outbound(_zone(), servers)  # no DNSSEC, no MTA-STS
    result = await _send(outbound, requiretls=True)
    assert result.status == "bounced"
    assert transport.requests == []
    assert result.reply is not None
    assert result.reply.status == "5.7.30"


async def test_requiretls_with_mta_sts_needs_no_dnssec() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",), requiretls=True)}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(TESTING))
    result = await _send(outbound, requiretls=True)
    assert result.status == "delivered"


async def test_attempt_record_for_the_store() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    record = result.tls_record()
    assert (record.version, record.cipher, record.verified, record.policy) == (
        "TLSv1.3", "TLS_AES_256_GCM_SHA384", True, "mta-sts-enforce")
    assert result.attempts[-1].as_dict()["policy"] == "mta-sts-enforce"


async def test_dane_ta_record_matches_the_issuing_ca() -> None:
    """RFC 7672 §3.1.2: DANE-TA(2) - the CA in the presented chain is the trust anchor, and
    the leaf's name must match the MX host name."""
    ca = trustme.CA()
    ca_der = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(
        serialization.Encoding.DER)

    def leaf_der(name: str) -> bytes:
        pem = ca.issue_cert(name).cert_chain_pems[0].bytes()
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)

    resolver = _zone()
    for name in ("example.net", "mx1.example.net", "mx2.example.net",
                 "_25._tcp.mx1.example.net", "_25._tcp.mx2.example.net"):
        resolver.set_authenticated(name)
    for host in ("mx1.example.net", "mx2.example.net"):
        resolver.add_tlsa(f"_25._tcp.{host}", 2, 0, 1, hashlib.sha256(ca_der).digest())
    servers = {"192.0.2.1": FakeServer(chain=(leaf_der("elsewhere.test"), ca_der)),
               "192.0.2.2": FakeServer(chain=(leaf_der("mx2.example.net"), ca_der))}
    outbound, _ = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert result.attempts[0].outcome == "refused"  # chain fine, name wrong
    assert result.attempts[1].outcome == "delivered"
    assert servers["192.0.2.1"].received == []


async def test_downstream_mx_destination_uses_outbound() -> None:
    from mailmoat.gateway.deliver import Downstream
    from mailmoat.spool import Envelope, Recipient

    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",))}
    outbound, transport = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    downstream = Downstream(outbound=outbound)
    envelope = Envelope(mail_from="a@example.org",
                        rcpts=(Recipient(address="b@example.net"),), received_at=0.0)
    report = await downstream.deliver(message=MESSAGE, envelope=envelope,
                                      recipients=["b@example.net"],
                                      destination="mx:example.net")
    assert [o.outcome for o in report.outcomes] == ["delivered"]
    assert report.tls is not None
    assert report.tls.policy == "mta-sts-enforce"
    assert report.tls.verified is True
    assert transport.requests[0].server_name == "mx1.example.net"
    # a null MX through the same path: bounced with the RFC 7505 reply
    null = FakeResolver.from_zone_text("example.net. 300 IN MX 0 .\n")
    report = await Downstream(outbound=_outbound(null, {})[0]).deliver(
        message=MESSAGE, envelope=envelope, recipients=["b@example.net"],
        destination="mx:example.net")
    assert [o.outcome for o in report.outcomes] == ["bounced"]
    assert report.outcomes[0].reply is not None
    assert report.outcomes[0].reply.status == "5.1.10"


async def test_smtp_transport_refuses_injection_before_connecting() -> None:
    from mailmoat.gateway.outbound import SMTPTransport

    request = HopRequest(message=MESSAGE, mail_from="a@example.org",
                         rcpt_to=("b@example.net\r\nRCPT TO:<evil@x>",), address="127.0.0.1",
                         port=9, server_name="mx.example.net", starttls="require",
                         verify=True)

    def gate(session: SessionInfo, chain: tuple[bytes, ...]) -> Any:
        raise AssertionError("no session may start")

    with pytest.raises(SendError) as caught:
        await SMTPTransport().send(request, gate)
    assert not caught.value.temporary
    assert "CR, LF or NUL" in str(caught.value)


@pytest.mark.parametrize("where", ["expanded", "original"])
async def test_dane_tlsa_base_after_cname(certs: tuple[bytes, bytes], where: str) -> None:
    """RFC 7672 §2.2.3: TLSA at the CNAME-expanded name first, else at the MX name."""
    good, bad = certs
    resolver = FakeResolver.from_zone_text("""\
example.net. 300 IN MX 10 alias.example.net.
alias.example.net. 300 IN CNAME real.example.org.
real.example.org. 300 IN A 192.0.2.7
""")
    tlsa_host = "real.example.org" if where == "expanded" else "alias.example.net"
    resolver.add_tlsa(f"_25._tcp.{tlsa_host}", 3, 1, 1, _spki_sha256(good))
    for name in ("example.net", "alias.example.net", "real.example.org",
                 "_25._tcp.real.example.org", "_25._tcp.alias.example.net"):
        resolver.set_authenticated(name)
    servers = {"192.0.2.7": FakeServer(chain=(good,))}
    outbound, transport = _outbound(resolver, servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    assert result.attempts[-1].policy is PolicyKind.DANE
    assert transport.requests[0].server_name == tlsa_host  # SNI: the TLSA base domain
    servers["192.0.2.7"].chain = (bad,)
    outbound, _ = _outbound(resolver, servers)
    assert (await _send(outbound)).status == "deferred"


async def test_cleartext_retry_can_be_turned_off() -> None:
    outbound, transport = _outbound(_zone(), {"192.0.2.1": FakeServer(handshake_fails=True),
                                              "192.0.2.2": FakeServer(handshake_fails=True)},
                                    cleartext_retry=False)
    result = await _send(outbound)
    assert result.status == "deferred"
    assert [r.starttls for r in transport.requests] == ["opportunistic", "opportunistic"]


# --- TLS-RPT detail of each session (RFC 8460 §4.3, §4.4) ----------------------------------------
async def test_sts_sessions_carry_policy_mx_and_result_types() -> None:
    """mx1 fails MTA-STS enforce (name mismatch: certificate-host-mismatch, §4.3.1), mx2
    delivers: two sessions of policy type "sts", the policy lines as §4.4 policy-string."""
    servers = {"192.0.2.1": FakeServer(names=("other.example",)),
               "192.0.2.2": FakeServer(names=("mx2.example.net",))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    assert result.status == "delivered"
    record = result.tls_record()
    lines = ("version: STSv1", "mode: enforce", "mx: mx1.example.net", "mx: mx2.example.net",
             "max_age: 86400")
    first, second = record.sessions
    assert (first.policy_type, first.policy_domain, first.policy_string, first.mx_patterns) == (
        "sts", "example.net", lines, ("mx1.example.net", "mx2.example.net"))
    assert (first.mx_host, first.receiving_ip, first.result_type, first.success) == (
        "mx1.example.net", "192.0.2.1", "certificate-host-mismatch", False)
    assert first.reason
    assert (second.mx_host, second.receiving_ip, second.result_type, second.success,
            second.reason) == ("mx2.example.net", "192.0.2.2", None, True, None)
    assert first.id != second.id
    # the record's own fields describe the last session
    assert (record.policy_type, record.mx_host, record.receiving_ip, record.result_type,
            record.success) == ("sts", "mx2.example.net", "192.0.2.2", None, True)


async def test_sts_testing_reports_a_failure_while_delivering() -> None:
    servers = {"192.0.2.1": FakeServer(names=("elsewhere.example",))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(TESTING))
    result = await _send(outbound)
    assert result.status == "delivered"
    [session] = result.tls_record().sessions
    # RFC 8461 §5 testing: delivered, and the failure is reported (RFC 8460 §4.3.1).
    assert (session.policy_type, session.result_type, session.success) == (
        "sts", "certificate-host-mismatch", False)


async def test_dane_sessions_are_tlsa_with_the_records(certs: tuple[bytes, bytes]) -> None:
    good, bad = certs
    servers = {"192.0.2.1": FakeServer(chain=(bad,)), "192.0.2.2": FakeServer(chain=(good,))}
    outbound, _ = _outbound(_signed_zone(good), servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    first, second = result.tls_record().sessions
    # RFC 6698 §2.2 presentation form: usage selector matching-type hex.
    tlsa = ("3 1 1 " + _spki_sha256(good).hex(),)
    assert (first.policy_type, first.policy_string, first.mx_patterns) == ("tlsa", tlsa, ())
    assert (first.mx_host, first.result_type, first.success) == (
        "mx1.example.net", "validation-failure", False)
    assert (second.mx_host, second.result_type, second.success) == (
        "mx2.example.net", None, True)


async def test_no_policy_sessions_and_what_is_not_counted() -> None:
    """Opportunistic TLS: a TLS session counts as successful, a server without STARTTLS as
    starttls-not-supported (§4.3.1); a server that cannot be reached has no TLS outcome."""
    servers = {"192.0.2.1": FakeServer(down=True), "192.0.2.2": FakeServer(starttls=False)}
    outbound, _ = _outbound(_zone(), servers)
    result = await _send(outbound)
    assert result.status == "delivered"
    down, plain = result.tls_record().sessions
    assert (down.policy_type, down.result_type, down.success) == ("no-policy-found", None, None)
    assert (plain.policy_type, plain.result_type, plain.success) == (
        "no-policy-found", "starttls-not-supported", False)
    tls_ok = await _send(_outbound(_zone(), {"192.0.2.1": FakeServer()})[0])
    [session] = tls_ok.tls_record().sessions
    assert (session.policy_type, session.result_type, session.success) == (
        "no-policy-found", None, True)


async def test_a_refusal_after_the_policy_check_is_a_successful_tls_session() -> None:
    servers = {"192.0.2.1": FakeServer(names=("mx1.example.net",), rcpt_reply=Reply(
        code=550, status="5.1.1", text="no such user"))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    assert result.status == "bounced"
    [session] = result.tls_record().sessions
    assert (session.policy_type, session.result_type, session.success) == ("sts", None, True)


async def test_sessions_of_two_deliveries_have_distinct_ids() -> None:
    outbound, _ = _outbound(_zone(), {"192.0.2.1": FakeServer()})
    one = (await _send(outbound)).tls_record().sessions
    two = (await _send(outbound)).tls_record().sessions
    assert {s.id for s in one}.isdisjoint({s.id for s in two})


async def test_tls_record_sessions_reach_the_store_once(tmp_path: Path) -> None:
    """What the queue does with the record (one finish per recipient row, the same record)
    gives one session per MX tried in the store's TLS-RPT summary."""
    from mailmoat.store import AttemptResult, NewDelivery, SQLiteStore

    servers = {"192.0.2.1": FakeServer(names=("other.example",)),
               "192.0.2.2": FakeServer(names=("mx2.example.net",))}
    outbound, _ = _outbound(_zone(), servers, mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound, rcpt=("b@example.net", "c@example.net"))
    record = result.tls_record()
    store = await SQLiteStore.open(tmp_path / "store.db", synchronous="OFF")
    try:
        rows = await store.enqueue([NewDelivery(spool_id="01JX", recipient=r,
                                                destination="mx:example.net")
                                    for r in ("b@example.net", "c@example.net")], now=10.0)
        await store.claim(now=10.0, owner="w", lease=60, limit=9, per_destination=9)
        for row in rows:
            await store.finish(row, "w", AttemptResult(outcome="delivered", started_at=10.0,
                                                       finished_at=11.0, tls=record))
        [summary] = await store.tls_attempts("example.net", 0.0, 100.0)
        assert (summary.policy_type, summary.successful, summary.failed) == ("sts", 1, 1)
        assert [(f.result_type, f.mx_host, f.count) for f in summary.failures] == [
            ("certificate-host-mismatch", "mx1.example.net", 1)]
    finally:
        await store.close()


# --- address literals (RFC 5321 §4.1.3) -----------------------------------------------------------
class _NoDNS(FakeResolver):
    async def resolve(self, name, rrtype):  # type: ignore[no-untyped-def, override]
        raise AssertionError(f"no DNS question expected, got {name} {rrtype}")


class _CountingPolicies(StaticPolicies):
    asked: int = 0

    async def policy_for(self, domain: str) -> PolicyOutcome:
        self.asked += 1
        return await super().policy_for(domain)


@pytest.mark.parametrize(("literal", "address"), [
    ("[192.0.2.9]", "192.0.2.9"), ("[IPv6:2001:DB8::9]", "2001:db8::9")])
async def test_an_address_literal_is_delivered_to_that_address(literal: str,
                                                               address: str) -> None:
    policies = _CountingPolicies(policy=None)
    outbound, transport = _outbound(_NoDNS(), {address: FakeServer()}, mtasts=policies)
    result = await _send(outbound, literal, rcpt=(f"b@{literal}",))
    assert result.status == "delivered"
    assert [r.address for r in transport.requests] == [address]
    assert transport.requests[0].starttls == "opportunistic"
    assert policies.asked == 0  # MTA-STS needs a domain name


@pytest.mark.parametrize("literal", ["[]", "[300.1.2.3]", "[IPv6:nonsense]", "[tag:value]",
                                     "[192.0.2.1"])
async def test_a_malformed_address_literal_bounces(literal: str) -> None:
    outbound, transport = _outbound(_NoDNS(), {})
    result = await _send(outbound, literal, rcpt=(f"b@{literal}",))
    assert result.status == "bounced"
    assert transport.requests == []


# --- MTA-STS policy trouble as TLS-RPT sees it (RFC 8460 §4.3.2.2) ---------------------------------
@dataclass
class _BrokenPolicy:
    error_kind: str

    async def policy_for(self, domain: str) -> PolicyOutcome:
        from mailmoat.net.mtasts import PolicyFetch

        url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
        return PolicyOutcome(domain=domain, policy=None, source="none",
                             lookup=RecordLookup(domain=domain, status=RecordStatus.FOUND),
                             fetch=PolicyFetch(url=url, error="HTTP 404" if self.error_kind ==
                                               "http" else "no version field",
                                               error_kind=self.error_kind))


@pytest.mark.parametrize(("kind", "result_type"), [
    ("http", "sts-policy-fetch-error"), ("syntax", "sts-policy-invalid")])
async def test_an_unusable_mta_sts_policy_is_recorded_for_tls_reports(kind: str,
                                                                       result_type: str) -> None:
    outbound, _ = _outbound(_zone(), {"192.0.2.1": FakeServer()},
                            mtasts=_BrokenPolicy(kind))
    result = await _send(outbound)
    assert result.status == "delivered"  # no policy in force: opportunistic delivery goes on
    sessions = result.tls_record().sessions
    failed = [s for s in sessions if s.success is False]
    assert [(s.policy_type, s.result_type) for s in failed] == [("sts", result_type)]
    assert failed[0].policy_domain == "example.net"
    assert [s.success for s in sessions if s.mx_host == "mx1.example.net"] == [True]


async def test_a_usable_policy_adds_no_policy_failure() -> None:
    outbound, _ = _outbound(_zone(), {"192.0.2.1": FakeServer(names=("mx1.example.net",))},
                            mtasts=StaticPolicies(ENFORCE))
    result = await _send(outbound)
    assert result.status == "delivered"
    assert all(s.success for s in result.tls_record().sessions)
