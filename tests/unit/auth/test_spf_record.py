"""SPF record selection and syntax (RFC 7208 §4.5, §4.6, §5, §6, §12 ABNF)."""

from __future__ import annotations

import ipaddress

import pytest

from mailmoat import limits
from mailmoat.auth.spf import MechanismKind, Qualifier, is_spf_record, parse_record
from mailmoat.errors import ParseError


@pytest.mark.parametrize(("txt", "selected"), [
    (b"v=spf1", True),
    (b"v=spf1 -all", True),
    (b"V=SpF1 ~all", True),      # ABNF literals are case-insensitive
    (b"v=spf10", False),         # §4.5: version followed by SP or end
    (b"v=spf1-all", False),
    (b" v=spf1 -all", False),
    (b"spf1 -all", False),
    (b"", False),
])
def test_record_selection(txt: bytes, selected: bool) -> None:
    assert is_spf_record(txt) is selected


def test_all_mechanisms_and_modifiers() -> None:
    rec = parse_record(
        "v=spf1 +all -include:_spf.example.com ~a ?a:mail.example.com/24//64 mx mx/30 "
        "ptr ptr:example.org ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{i}.bl.example.com "
        "redirect=_spf.example.net exp=explain.%{d} foo=bar"
    )
    kinds = [m.kind for m in rec.mechanisms]
    assert kinds == [MechanismKind.ALL, MechanismKind.INCLUDE, MechanismKind.A, MechanismKind.A,
                     MechanismKind.MX, MechanismKind.MX, MechanismKind.PTR, MechanismKind.PTR,
                     MechanismKind.IP4, MechanismKind.IP6, MechanismKind.EXISTS]
    quals = [m.qualifier for m in rec.mechanisms[:4]]
    assert quals == [Qualifier.PASS, Qualifier.FAIL, Qualifier.SOFTFAIL, Qualifier.NEUTRAL]
    a = rec.mechanisms[3]
    assert (a.cidr4, a.cidr6) == (24, 64)
    assert rec.mechanisms[5].cidr4 == 30
    assert rec.mechanisms[5].cidr6 == 128
    assert rec.mechanisms[8].network == ipaddress.ip_network("192.0.2.0/24")
    assert rec.mechanisms[9].network == ipaddress.ip_network("2001:db8::/32")
    assert rec.redirect is not None
    assert rec.redirect.text == "_spf.example.net"
    assert rec.explanation is not None
    assert rec.explanation.text == "explain.%{d}"
    assert rec.unknown_modifiers == (("foo", "bar"),)
    assert rec.has_all


def test_mechanism_names_are_case_insensitive_and_spaces_repeat() -> None:
    rec = parse_record("v=spf1  IP4:192.0.2.1   MX  -ALL  ")
    assert [m.kind for m in rec.mechanisms] == [MechanismKind.IP4, MechanismKind.MX,
                                                MechanismKind.ALL]


def test_host_bits_in_ip4_network_are_tolerated() -> None:
    rec = parse_record("v=spf1 ip4:192.0.2.77/24")
    assert rec.mechanisms[0].network == ipaddress.ip_network("192.0.2.0/24")


@pytest.mark.parametrize("bad", [
    "v=spf1 -all.",                    # all takes nothing
    "v=spf1 -all:foo",
    "v=spf1 all/8",
    "v=spf1 include",                  # include needs a domain-spec
    "v=spf1 include:",
    "v=spf1 include:example.com/24",
    "v=spf1 exists",
    "v=spf1 exists:",
    "v=spf1 ptr/0",
    "v=spf1 ptr:",
    "v=spf1 a:",
    "v=spf1 a/33",                     # ip4-cidr-length 0-32
    "v=spf1 a//129",                   # ip6-cidr-length 0-128
    "v=spf1 a/24/64",                  # dual-cidr needs "//"
    "v=spf1 mx/032",                   # no leading zero
    "v=spf1 ip4",
    "v=spf1 ip4:192.0.2.1/33",
    "v=spf1 ip4:192.0.2.1/032",
    "v=spf1 ip4:192.0.2.1//32",
    "v=spf1 ip4:192.0.2",
    "v=spf1 ip4:192.0.2.256",
    "v=spf1 ip4:192.0.02.1",           # qnum has no leading zero
    "v=spf1 ip4:192.0.2.1:8080",
    "v=spf1 ip6",
    "v=spf1 ip6::CAFE::BABE",
    "v=spf1 ip6:2001:db8::/129",
    "v=spf1 ip6:fe80::1%eth0",
    "v=spf1 ip6:2001:db8:://64",
    "v=spf1 moo",                      # unknown mechanism
    "v=spf1 prt",
    "v=spf1 =all",                     # modifier without a name
    "v=spf1 1up=foo",                  # name = ALPHA *( ... )
    "v=spf1 foo=%abc",                 # unknown-modifier value is a macro-string
    "v=spf1 redirect:example.com",     # a modifier needs "="
    "v=spf1 redirect=",
    "v=spf1 redirect=-all",
    "v=spf1 redirect=a.example.com redirect=b.example.com",  # §6: at most once
    "v=spf1 exp=a.example.com exp=b.example.com",
    "v=spf1 exp=",
    "v=spf1 a:example.com\r-all",      # only SP separates terms (§4.6.1)
    "v=spf1 ip4:192.0.2.5\n",
    "v=spf1 a:foo.example.com\x00",
    "v=spf1 ~~all",
    "v=spf1 a:%{c}.example.com",       # c, r, t only in exp text
    "v=spf10 -all",
])
def test_syntax_errors(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_record(bad)


def test_unknown_modifiers_with_dots_dashes_underscores() -> None:
    # rfc7208-tests "modifier-charset-good"
    rec = parse_record("v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all")
    assert rec.unknown_modifiers == (("moo.cow-far_out", "man:dog/cat"),)


def test_record_length_bound() -> None:
    long = "v=spf1 " + " ".join(["ip4:192.0.2.1"] * 2000)
    assert len(long) > limits.SPF_RECORD_MAX
    with pytest.raises(ParseError, match="longer than"):
        parse_record(long)


def test_parse_is_cached_and_errors_are_stable() -> None:
    text = "v=spf1 ip4:192.0.2.1 -all"
    assert parse_record(text) is parse_record(text)
    for _ in range(2):
        with pytest.raises(ParseError):
            parse_record("v=spf1 bogus")


def test_ip_mechanism_contains() -> None:
    rec = parse_record("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip4:0.0.0.0/0")
    v4, v6, everything = rec.mechanisms
    assert v4.contains(4, int(ipaddress.IPv4Address("192.0.2.77")))
    assert not v4.contains(4, int(ipaddress.IPv4Address("192.0.3.1")))
    assert not v4.contains(6, int(ipaddress.IPv6Address("::c000:24d")))  # §5.6: version
    assert v6.contains(6, int(ipaddress.IPv6Address("2001:db8:ffff::1")))
    assert not v6.contains(6, int(ipaddress.IPv6Address("2001:db9::1")))
    assert everything.contains(4, int(ipaddress.IPv4Address("203.0.113.1")))
    assert not everything.contains(6, int(ipaddress.IPv6Address("::1")))
