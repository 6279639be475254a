"""No open relay: RelayPolicy against the classic relay tricks, on addresses parsed from the
wire by the SMTP grammar (so source routes and syntax are handled as in a real session).

Expected outcomes follow RFC 5321 §3.6.2 (no relaying without authorisation), §4.1.1.3 and
Appendix C (source routes: accept, ignore the route, deliver to the final mailbox), §4.5.1
(<Postmaster> must be accepted), RFC 2505 §2 (anti-relay recommendations: percent hack, bang
paths, quoted "@") and Postfix's allow_untrusted_routing = no.
"""

from __future__ import annotations

import ipaddress

import pytest

from mailmoat.gateway.relay import RelayPolicy
from mailmoat.smtp import Address, AddressSyntaxError
from mailmoat.smtp._abnf import parse_rcpt_args

POLICY = RelayPolicy(
    local_domains=["mx.test", "Bücher.Example", ".sub.example"],
    trusted_networks=["192.0.2.0/24", "2001:db8::/32"],
    local_literals=["198.51.100.7"],
)
OUTSIDE = ipaddress.ip_address("203.0.113.9")
INSIDE = ipaddress.ip_address("192.0.2.10")


def rcpt(path: str, *, utf8: bool = False) -> Address:
    address, _ = parse_rcpt_args(f"<{path}>".encode(), smtputf8=utf8)
    return address


def allowed(path: str, *, auth: bool = False, ip: object = OUTSIDE, utf8: bool = False) -> bool:
    return POLICY.check(rcpt(path, utf8=utf8), authenticated=auth,
                        client_ip=ip).allowed  # type: ignore[arg-type]


@pytest.mark.parametrize("path", [
    "user@mx.test",
    "User.Name@MX.TEST",  # mixed case: domains are case-insensitive (RFC 5321 §2.4)
    "user@Mx.Test",
    '"quoted plain"@mx.test',
    "user@a.sub.example",  # a subdomain of a ".sub.example" entry
    "user@deep.a.sub.example",
    "user@xn--bcher-kva.example",  # A-label of a configured U-label
    "@other.example:user@mx.test",  # source route: ignored, final mailbox is ours
    "@a.example,@b.example:user@mx.test",
    "user@[198.51.100.7]",  # a configured local address literal
    "Postmaster",  # RFC 5321 §4.5.1
])
def test_local_recipients_accepted_from_anyone(path: str) -> None:
    assert allowed(path)


def test_utf8_domain_accepted_in_u_label_form() -> None:
    assert allowed("user@bücher.example", utf8=True)
    assert allowed("user@BÜCHER.example", utf8=True)


@pytest.mark.parametrize(("path", "why"), [
    ("victim@other.example", "plain relay"),
    ("victim@mx.test.other.example", "our name as a prefix of theirs"),
    ("victim@othermx.test", "our name as a suffix without a dot"),
    ("victim@sub.example", "'.sub.example' means subdomains only"),
    ("victim@evilsub.example", "suffix match without a label boundary"),
    ("victim%other.example@mx.test", "percent hack (RFC 1123 5.2.16)"),
    ("victim%other.example%mx.test@mx.test", "double percent hack"),
    ("other.example!victim@mx.test", "UUCP bang path"),
    ('"victim@other.example"@mx.test', "quoted local part holding @"),
    ('"victim%other.example"@mx.test', "quoted percent hack"),
    ('"other!victim"@mx.test', "quoted bang path"),
    ("@mx.test:victim@other.example", "source route through us to them"),
    ("victim@[192.0.2.99]", "IP literal, not configured"),
    ("victim@[127.0.0.1]", "loopback literal"),
    ("victim@[IPv6:::1]", "IPv6 loopback literal"),
    ("victim@[IPv6:::ffff:198.51.100.7]", "IPv4-mapped form of our literal: not configured"),
    ("postmaster@other.example", "postmaster of another domain"),
])
def test_relay_tricks_refused_for_strangers(path: str, why: str) -> None:
    assert not allowed(path), why


@pytest.mark.parametrize("path", [
    "victim@mx.test.",  # trailing dot: the grammar refuses it (RFC 5321 Domain has none)
    "victim@other.example@mx.test",  # two @ outside quotes
    "victim@mx.test@other.example",
    "victim@mx..test",
    "victim@[999.1.1.1]",
    "victim@mx.test>other.example",
])
def test_malformed_tricks_never_reach_the_policy(path: str) -> None:
    with pytest.raises(AddressSyntaxError):
        rcpt(path, utf8=True)


@pytest.mark.parametrize("path", [
    "victim@mх.test",  # Cyrillic х (U+0445) for Latin x
    "victim@мх.test",  # both letters Cyrillic
    "victim@bücher.exаmple",  # Cyrillic а (U+0430) in the TLD
    "victim@xn--mx-7kc.test",  # an A-label that is not ours
])
def test_utf8_lookalikes_are_other_domains(path: str) -> None:
    assert not allowed(path, utf8=True)


def test_compatibility_mapping_never_applies_to_peer_domains() -> None:
    # The grammar refuses full-width labels; should an Address still carry one, UTS-46 would
    # map "ｍｘ.test" to "mx.test". The policy must not.
    with pytest.raises(AddressSyntaxError):
        rcpt("victim@ｍｘ.test", utf8=True)
    forged = Address(local_part="victim", domain="ｍｘ.test", raw=b"", is_utf8=True)
    assert not POLICY.check(forged, authenticated=False, client_ip=OUTSIDE).allowed
    nodomain = Address(local_part="victim", domain="", raw=b"", is_utf8=False)
    assert not POLICY.check(nodomain, authenticated=False, client_ip=OUTSIDE).allowed


def test_authenticated_and_trusted_clients_may_relay() -> None:
    assert allowed("friend@other.example", auth=True)
    assert allowed("friend@other.example", ip=INSIDE)
    assert allowed("friend@other.example", ip=ipaddress.ip_address("2001:db8::5"))
    # IPv4-mapped IPv6 peer address of a trusted IPv4 network (dual-stack sockets).
    assert allowed("friend@other.example", ip=ipaddress.ip_address("::ffff:192.0.2.10"))
    assert not allowed("friend@other.example", ip=ipaddress.ip_address("::ffff:203.0.113.9"))
    assert not allowed("friend@other.example", ip=None)
    # Routing inside our own domain is allowed to privileged clients only.
    assert allowed("user%host@mx.test", auth=True)
    assert allowed("user%host@mx.test", ip=INSIDE)


def test_decision_reasons() -> None:
    decision = POLICY.check(rcpt("v%x@mx.test"), authenticated=False, client_ip=OUTSIDE)
    assert (decision.allowed, decision.local) == (False, True)
    decision = POLICY.check(rcpt("v@other.example"), authenticated=False, client_ip=OUTSIDE)
    assert (decision.allowed, decision.local) == (False, False)


def test_bad_configured_domain_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a valid domain"):
        RelayPolicy(local_domains=["bad..domain"])


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("Example.ORG", "example.org"),
        ("a-b.example", "a-b.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),  # an A-label: checked, kept
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("ab--cd.example", None),  # hyphens in 3rd/4th place: not a valid A-label (RFC 5891)
        ("-lead.example", None),
    ],
)
def test_normalize_domain_fast_path_agrees_with_idna(domain: str, expected: str | None) -> None:
    from mailmoat.gateway.relay import normalize_domain

    assert normalize_domain(domain, mapping=False) == expected
    assert normalize_domain(domain) == expected
