"""SPF macros (RFC 7208 §7): parsing and expansion, expected values from the RFC's §7.4 table."""

from __future__ import annotations

import ipaddress

import pytest

from mailmoat.auth.spf._macro import (
    MacroValues,
    expand,
    parse_domain_spec,
    parse_explain_string,
    parse_macro_string,
    truncate_domain,
)
from mailmoat.errors import ParseError

# RFC 7208 §7.4: "The <sender> is strong-bad@email.example.com. The IPv4 SMTP client IP is
# 192.0.2.3. The IPv6 SMTP client IP is 2001:db8::cb01. The PTR domain name of the client IP
# is mx.example.org."
V4 = MacroValues(s="strong-bad@email.example.com", l="strong-bad", o="email.example.com",
                 i="192.0.2.3", c="192.0.2.3", v="in-addr", h="mx.example.org",
                 r="receiver.example", t="1400000000")
V6 = MacroValues(s="strong-bad@email.example.com", l="strong-bad", o="email.example.com",
                 i=".".join(ipaddress.IPv6Address("2001:db8::cb01").exploded.replace(":", "")),
                 c="2001:db8::cb01",
                 v="ip6", h="mx.example.org", r="receiver.example", t="1400000000")
D = "email.example.com"


@pytest.mark.parametrize(("macro", "expansion"), [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
])
def test_rfc7208_section_7_4_examples(macro: str, expansion: str) -> None:
    assert expand(parse_domain_spec(macro), V4, d=D) == expansion


def test_rfc7208_section_7_4_ipv6_example() -> None:
    # RFC 7208 §7.4 (DNS names are case-insensitive; we write nibbles upper-case as the
    # OpenSPF suite's v-macro-ip6 case expects).
    want = ("1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf."
            "example.com")
    assert expand(parse_domain_spec("%{ir}.%{v}._spf.%{d2}"), V6, d=D).lower() == want


def test_p_macro_uses_given_name_or_unknown() -> None:
    spec = parse_domain_spec("%{p}.example.net")
    assert expand(spec, V4, d=D, p="mx.example.org") == "mx.example.org.example.net"
    # §7.3: "If there are no validated domain names [...] the string "unknown" is used."
    assert expand(spec, V4, d=D) == "unknown.example.net"


def test_escapes() -> None:
    # §7.3: "%%" -> "%", "%_" -> " ", "%-" -> "%20"
    assert expand(parse_explain_string("100%% a%_b%-c"), V4, d=D) == "100% a b%20c"


def test_uppercase_macros_are_url_escaped() -> None:
    # §7.3: uppercase macros are URL-escaped; unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
    v = MacroValues(s="x", l="~jack&jill=up-a_b3.c", o="o", i="i", c="c", v="v", h="h",
                    r="r", t="t")
    assert expand(parse_explain_string("%{L}"), v, d=D) == "~jack%26jill%3Dup-a_b3.c"
    assert expand(parse_explain_string("%{l}"), v, d=D) == "~jack&jill=up-a_b3.c"


def test_multiple_delimiters_and_rejoin_with_dots() -> None:
    # §7.3: "the parts are rejoined using "." and not the original splitting characters"
    v = MacroValues(s="x", l="foo-bar+zip+quux", o="o", i="i", c="c", v="v", h="a-b.c",
                    r="r", t="t")
    assert expand(parse_domain_spec("%{l2r+-}"), v, d=D) == "bar.foo"
    assert expand(parse_domain_spec("%{h-}"), v, d=D) == "a.b.c"


def test_more_parts_than_exist_means_all() -> None:
    assert expand(parse_domain_spec("%{d99}"), V4, d=D) == D
    assert expand(parse_domain_spec("%{d123456789}"), V4, d=D) == D


@pytest.mark.parametrize("bad", [
    "%{d0}",          # §7.3: "If a DIGIT is specified, the value MUST be nonzero."
    "%{d00}",
    "%(ir).example.com",  # §7.1: "%" not followed by "{", "%", "-" or "_"
    "foo%.example.com",
    "example.com%",
    "%{a}.example.com",   # not a macro letter
    "%{c}.example.com",   # §7.3: c, r, t only in exp text
    "%{r}.example.com",
    "%{t}.example.com",
    "%{d",
    "museum",             # domain-end needs "." toplabel
    "museum.",
    "abc.123",            # all-numeric toplabel
    "example.-com",
    "example.com:8080",
    "foo\rbar.example.com",
    "caf\u00e9.example.com",
    "",
])
def test_domain_spec_syntax_errors(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_domain_spec(bad)


@pytest.mark.parametrize("good", [
    "example.com", "example.com.", "foo.example.xn--zckzah", "foo:bar/baz.example.com",
    "%{d}", "%{d}.", "_spf.%{d2}", "%{ir}.%{v}._spf.%{d2}", "a%%", "%{H}.bar", "%{l2r+-}",
])
def test_domain_spec_valid(good: str) -> None:
    if good == "%{d}.":
        # domain-end = ( "." toplabel [ "." ] ) / macro-expand: a dot after a macro is not
        # a toplabel, so this is a syntax error by the ABNF.
        with pytest.raises(ParseError):
            parse_domain_spec(good)
        return
    parse_domain_spec(good)


def test_explain_string_allows_space_and_exp_letters() -> None:
    spec = parse_explain_string("See http://%{d}/why?s=%{S}&ip=%{C}&r=%{R} at %{t}")
    assert {"c", "r", "t", "s", "d"} <= spec.letters
    with pytest.raises(ParseError):
        parse_explain_string("tab\there")
    with pytest.raises(ParseError):
        parse_explain_string("The %{x}-files.")


def test_unknown_modifier_value_is_a_macro_string() -> None:
    parse_macro_string("pass")
    parse_macro_string("+")
    with pytest.raises(ParseError):
        parse_macro_string("%abc")


def test_truncation_removes_whole_labels_from_the_left() -> None:
    # §7.3: "the left side is truncated to fit, by removing successive domain labels (and
    # their following dots) until the total length does not exceed 253 characters."
    name = ".".join(["a" * 60] * 6) + ".example.com"  # 6*61 + 11 = 377
    out = truncate_domain(name)
    assert len(out) <= 253
    assert out.endswith(".example.com")
    assert name.endswith(out)
    assert name[-len(out) - 1] == "."
    assert truncate_domain("example.com.") == "example.com"


def test_truncation_of_a_single_overlong_label_is_left_to_the_caller() -> None:
    assert truncate_domain("x" * 300) == "x" * 300
