"""Authentication-Results: generation, parsing edge cases and bounds, forged-field detection.

Expected texts follow the RFC 8601 §2.2 ABNF and RFC 2045 token rules quoted in the module
under test; round trips are checked against the ``authres`` package as an independent reader.
"""

from __future__ import annotations

import authres
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat import limits
from mailmoat.auth.authres import (
    AuthResProperty,
    AuthResResult,
    arc_resinfo,
    auth_resinfo,
    claims_authserv_id,
    dkim_resinfo,
    dmarc_resinfo,
    format_authentication_results,
    parse,
    parse_field,
    quote_pvalue,
    quote_value,
    spf_resinfo,
)
from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc import Disposition, DMARCResult, DMARCVerdict, Policy, parse_record
from mailmoat.auth.spf import Identity, SPFResult, SPFVerdict
from mailmoat.errors import ParseError
from mailmoat.message import parse_headers


def prop(key: str, value: str) -> AuthResProperty:
    ptype, _, name = key.partition(".")
    return AuthResProperty(ptype=ptype, name=name, value=value)


# --- quoting (RFC 2045 §5.1 token; RFC 8601 §2.2 pvalue) ---------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("example.com", "example.com"),
        ("good signature", '"good signature"'),  # SPACE is not token
        ("a=b", '"a=b"'),  # "=" is a tspecial
        ("x/y", '"x/y"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\r\nbreak", '"line??break"'),  # never a header injection
    ],
)
def test_quote_value(text: str, quoted: str) -> None:
    assert quote_value(text) == quoted


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("sender@example.net", "sender@example.net"),  # [local-part] "@" domain-name
        ("@newyork.example.com", "@newyork.example.com"),  # header.i=@domain (B.6)
        ("192.0.2.200", "192.0.2.200"),
        ("AbCd/+9=", '"AbCd/+9="'),  # header.b base64 has tspecials
        ("a b@example.com", '"a b@example.com"'),
    ],
)
def test_quote_pvalue(text: str, quoted: str) -> None:
    assert quote_pvalue(text) == quoted


# --- generation -----------------------------------------------------------------------------


def test_no_result_form() -> None:
    # RFC 8601 §2.2 no-result; Appendix B.2 "Authentication-Results: example.org 1; none"
    assert format_authentication_results("example.org", [], version=1) == \
        "Authentication-Results: example.org 1; none"


def test_unfolded_b3() -> None:
    # Appendix B.3, on one line.
    result = AuthResResult(method="spf", result="pass",
                           properties=(prop("smtp.mailfrom", "example.net"),))
    assert format_authentication_results("example.com", [result], fold=False) == \
        "Authentication-Results: example.com; spf=pass smtp.mailfrom=example.net"


def test_folded_field_is_one_valid_header_and_reparses() -> None:
    results = [
        AuthResResult(method="dkim", result="pass", reason="good signature",
                      comment="2048-bit key",
                      properties=(prop("header.d", "example.com"),
                                  prop("header.i", "@mail-router.example.net"),
                                  prop("header.b", "AbCd/+9="))),
        AuthResResult(method="spf", result="pass",
                      properties=(prop("smtp.mailfrom", "sender@example.net"),)),
        AuthResResult(method="dmarc", result="fail", comment="p=reject dis=quarantine",
                      properties=(prop("header.from", "example.com"),)),
    ]
    text = format_authentication_results("mx.example.org", results)
    lines = text.split("\r\n")
    assert all(len(line.expandtabs(8)) <= limits.AUTHRES_FOLD_WIDTH for line in lines)
    assert all(line[0] in " \t" for line in lines[1:])  # folded: continuations start with WSP
    headers = parse_headers(text.encode() + b"\r\n\r\n", strict=True)
    assert len(headers) == 1
    parsed = parse_field(headers[0])
    assert parsed.authserv_id == "mx.example.org"
    assert [(r.method, r.result, r.reason) for r in parsed.results] == [
        ("dkim", "pass", "good signature"), ("spf", "pass", None), ("dmarc", "fail", None)]
    assert parsed.results[0].prop("header.b") == "AbCd/+9="
    assert parsed.results[0].comments == ("2048-bit key",)
    # The independent reader agrees.
    oracle = authres.AuthenticationResultsHeader.parse(text)
    assert oracle.authserv_id == "mx.example.org"
    assert [(r.method, r.result) for r in oracle.results] == [
        ("dkim", "pass"), ("spf", "pass"), ("dmarc", "fail")]


def test_injection_attempt_stays_inside_the_field() -> None:
    evil = AuthResResult(method="spf", result="pass",
                         properties=(prop("smtp.mailfrom", "x@y.test\r\nX-Evil: 1"),),
                         reason="a\r\nBcc: victim@example.com", comment="c)\r\n(d")
    text = format_authentication_results("mx.example.org", [evil])
    headers = parse_headers(text.encode() + b"\r\n\r\n")
    assert [f.name for f in headers] == [b"Authentication-Results"]
    assert not headers.defects


def test_builders_from_our_results() -> None:
    spf = spf_resinfo(SPFResult(result=SPFVerdict.PASS, domain="example.net",
                                identity=Identity.MAILFROM), mail_from="bounce@example.net")
    assert (spf.method, spf.result, spf.prop("smtp.mailfrom")) == \
        ("spf", "pass", "bounce@example.net")
    helo = spf_resinfo(SPFResult(result=SPFVerdict.NONE, domain="mx.example.net",
                                 identity=Identity.HELO))
    assert helo.prop("smtp.helo") == "mx.example.net"
    dkim = dkim_resinfo(DKIMResult(result=DKIMResultCode.FAIL, domain="example.com",
                                   selector="s1", header_d="example.com",
                                   header_i="@example.com", header_b="AbCd1234",
                                   algorithm="rsa-sha256", reason="body hash mismatch",
                                   key_bits=2048))
    assert dkim.reason == "body hash mismatch"
    assert [p.key for p in dkim.properties] == \
        ["header.d", "header.i", "header.s", "header.a", "header.b"]
    dmarc = dmarc_resinfo(DMARCResult(
        result=DMARCVerdict.FAIL, from_domain="a.example.com", policy_domain="example.com",
        record=parse_record("v=DMARC1; p=reject; sp=quarantine"), policy=Policy.QUARANTINE,
        policy_tag="sp", disposition=Disposition.QUARANTINE))
    assert dmarc.prop("header.from") == "a.example.com"
    assert dmarc.prop("polrec.p") == "reject"
    assert dmarc.prop("polrec.domain") == "example.com"
    assert dmarc.comment == "sp=quarantine dis=quarantine"
    arc = arc_resinfo("pass", oldest_pass=0, remote_ip="192.0.2.1")
    assert [p.key for p in arc.properties] == ["header.oldest-pass", "smtp.remote-ip"]
    auth = auth_resinfo("pass", user="sender@example.net", mechanism="cram-md5")
    # Appendix B.4: "auth=pass (cram-md5) smtp.auth=sender@example.net"
    assert format_authentication_results("example.com", [auth], fold=False) == \
        "Authentication-Results: example.com; auth=pass (cram-md5) smtp.auth=sender@example.net"


# --- parsing edge cases ------------------------------------------------------------------------


def test_trailing_semicolon_and_quoted_authserv_id() -> None:
    parsed = parse(b'"mx.example.org"; spf=pass smtp.mailfrom=example.net;')
    assert parsed.authserv_id == "mx.example.org"
    assert len(parsed.results) == 1


def test_unknown_method_and_ptype_are_kept() -> None:
    parsed = parse(b"mx.example.org; x-vendor=great x-ptype.score=9 header.d=example.com")
    result = parsed.results[0]
    assert (result.method, result.result, result.registered) == ("x-vendor", "great", False)
    assert [(p.key, p.registered) for p in result.properties] == [
        ("x-ptype.score", False), ("header.d", True)]


def test_registered_result_check() -> None:
    parsed = parse(b"mx.example.org; dkim=pass; spf=softfail; dmarc=softfail")
    assert [r.registered for r in parsed.results] == [True, True, False]


def test_keywords_are_case_insensitive() -> None:
    parsed = parse(b"mx.example.org; SPF=Pass SMTP.MailFrom=Example.NET")
    result = parsed.results[0]
    assert (result.method, result.result) == ("spf", "pass")
    assert result.prop("smtp.mailfrom") == "Example.NET"  # values keep their case


@pytest.mark.parametrize(
    "value",
    [
        b"",  # no authserv-id
        b"; spf=pass",
        b"example.com 2; spf=pass",  # unknown version
        b"example.com; spf",  # no "=" result
        b"example.com; spf=",  # no result
        b"example.com; spf=pass smtp",  # ptype without property
        b"example.com; spf=pass smtp.mailfrom",  # property without value
        b"example.com; spf=pass (unclosed comment",
        b'example.com; spf=pass reason="unclosed',
        b"example.com; none; spf=pass",  # none must be alone
        b"example.com; spf=pass;; dkim=pass",  # empty resinfo
        b"example.com; sp_f=pass",  # not a Keyword
        b"example.com; dkim/x=pass",  # method version must be digits
        b"example.com; spf=pass\x00",
        b"example.com",  # ( no-result / 1*resinfo ) is required
        b"example.com (only a comment)",
        b"a=b; spf=pass",  # authserv-id: "=" is a tspecial, not token
        b"example.com; spf=pass reason=a/b",  # reason is a value (token or quoted-string)
    ],
)
def test_malformed_fields_are_refused(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse(value)


def test_bounds() -> None:
    with pytest.raises(ParseError):
        parse(b"x" * (limits.AUTHRES_FIELD_MAX + 1))
    many = b"mx.example.org" + b"; dkim=pass" * (limits.AUTHRES_MAX_RESULTS + 1)
    with pytest.raises(ParseError):
        parse(many)
    props = b"mx.example.org; dkim=pass" + b" header.d=x" * (limits.AUTHRES_MAX_PROPERTIES + 1)
    with pytest.raises(ParseError):
        parse(props)


def test_parse_field_checks_the_name() -> None:
    headers = parse_headers(b"Received: from x; Sat, 1 Jan 2000 00:00:00 +0000\r\n\r\n")
    with pytest.raises(ParseError):
        parse_field(headers[0])


# --- forged fields (RFC 8601 §5) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "claims"),
    [
        (b" mx.example.org; spf=pass smtp.mailfrom=example.net", True),
        (b" MX.Example.ORG 1; none", True),  # host names compare case-insensitively
        (b' "mx.example.org"; dkim=pass', True),
        (b" (forged) mx.example.org; dkim=pass", True),
        (b" mx.example.org; this is not parseable ((", True),  # remainder garbage: still ours
        (b" mx.example.org.evil.test; dkim=pass", False),
        (b" other.example; dkim=pass", False),
        (b" mx.example.orgx; dkim=pass", False),
        (b" ", True),  # no authserv-id readable: treated as a claim (safe side)
    ],
)
def test_claims_authserv_id(value: bytes, claims: bool) -> None:
    assert claims_authserv_id(value, "mx.example.org") is claims


def test_claims_authserv_id_on_header_fields() -> None:
    headers = parse_headers(
        b"Authentication-Results: mx.example.org; dkim=pass\r\n"
        b"authentication-results:\r\n mx.example.org;\r\n spf=pass\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
        b"X-Authentication-Results: mx.example.org; dkim=pass\r\n\r\n"
    )
    assert [claims_authserv_id(f, "mx.example.org") for f in headers] == \
        [True, True, False, False]


# --- round trip ---------------------------------------------------------------------------------

_kw = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6).map(
    lambda s: s + "1" if s == "none" else s
)
_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                  max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    authserv=st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=8), min_size=1,
                      max_size=3).map(".".join),
    results=st.lists(
        st.builds(
            lambda m, r, reason, props: AuthResResult(
                method=m, result=r, reason=reason,
                properties=tuple(AuthResProperty(ptype=p, name=n, value=v)
                                 for p, n, v in props)),
            _kw, _kw, st.none() | _values,
            st.lists(st.tuples(_kw, _kw, _values), max_size=4),
        ),
        max_size=5,
    ),
    fold=st.booleans(),
)
def test_generate_then_parse_round_trip(authserv: str, results: list[AuthResResult],
                                        fold: bool) -> None:
    text = format_authentication_results(authserv, results, fold=fold)
    body = text.split(":", 1)[1]
    parsed = parse(body)
    assert parsed.authserv_id == authserv
    assert parsed.none is (not results)
    assert [(r.method, r.result, r.reason, r.properties) for r in parsed.results] == \
        [(r.method, r.result, r.reason, r.properties) for r in results]


# --- hostile input: only ParseError, bounded time --------------------------------------------

_noise = st.binary(max_size=300) | st.text(
    alphabet=st.sampled_from(list('ab.=/;()"\\ \t\r\n@,<>[]1')), max_size=300
).map(str.encode)


@settings(max_examples=400, deadline=None)
@given(_noise)
def test_parser_raises_only_parse_error(value: bytes) -> None:
    try:
        parsed = parse(value)
    except ParseError:
        return
    assert parsed.authserv_id
    assert claims_authserv_id(value, parsed.authserv_id)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "value",
    [
        b"(" * limits.AUTHRES_FIELD_MAX,
        b"a=" * (limits.AUTHRES_FIELD_MAX // 2),
        b'x; spf=pass reason="' + b"\\\"" * (limits.AUTHRES_FIELD_MAX // 2 - 20) + b'"',
        b"x; dkim=pass " + b"h.d=a " * 2700,
        b"x" + b" (c)" * 4000,
    ],
)
def test_adversarial_fields_are_fast(value: bytes) -> None:
    import time

    start = time.perf_counter()
    try:
        parse(value)
    except ParseError:
        pass
    claims_authserv_id(value, "x")
    assert time.perf_counter() - start < 2.0


# --- differential on generated fields: authres reads what we write ------------------------------

_token_kw = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["spf", "dkim", "dmarc", "auth", "iprev"]),
    result=st.sampled_from(["pass", "fail", "none", "temperror", "permerror", "neutral"]),
    reason=st.none() | st.text(alphabet="abcdefgh xyz.-", min_size=1, max_size=20),
    props=st.lists(st.tuples(st.sampled_from(["smtp", "header", "policy"]), _token_kw,
                             st.sampled_from(["example.com", "a@b.example", "@c.example",
                                              "192.0.2.1", "AbC/+=", "x y"])),
                   max_size=3, unique_by=lambda t: (t[0], t[1])),
)
def test_authres_package_reads_our_fields(method: str, result: str, reason: str | None,
                                          props: list[tuple[str, str, str]]) -> None:
    # authres 1.2 drops a quoted pvalue that another propspec follows
    # ('x=pass smtp.a="q" smtp.b=c' reads only smtp.b); RFC 8601 §2.2 allows it, and our parser
    # reads it (the round-trip test above). Keep quoted values last for this oracle.
    quoted = [t for t in props if t[2] in ("AbC/+=", "x y")]
    props = [t for t in props if t not in quoted] + quoted[:1]
    ours = AuthResResult(method=method, result=result, reason=reason,
                         properties=tuple(prop(f"{p}.{n}", v) for p, n, v in props))
    text = format_authentication_results("mx.example.org", [ours])
    oracle = authres.AuthenticationResultsHeader.parse(text)
    (read,) = oracle.results
    assert (read.method, read.result) == (method, result)
    assert read.reason == reason
    assert [(p.type, p.name, p.value) for p in read.properties] == props


def test_result_accessors() -> None:
    parsed = parse(b"mx.example.org; dkim=pass header.d=a.example; dkim=fail header.d=b.example;"
                   b" spf=pass smtp.mailfrom=a.example")
    assert parsed.first("DKIM") is parsed.results[0]
    assert [r.prop("header.d") for r in parsed.all("dkim")] == ["a.example", "b.example"]
    assert parsed.first("dmarc") is None
    assert parsed.results[2].prop("smtp.helo") is None


def test_free_text_is_ascii_so_other_parsers_accept_it() -> None:
    # A DKIM reason quoting "RFC 8301 §3.1" once went out as UTF-8 inside a quoted-string of a
    # non-SMTPUTF8 message; the authres package (and RFC 2045 §5.1) refuse that.
    field = format_authentication_results("mx.test", [AuthResResult(
        method="dkim", result="policy", reason="rsa-sha1 is not accepted (RFC 8301 §3.1)",
        comment="d\u00e9j\u00e0 (vu)")], fold=False)
    field.encode("ascii")  # raises if anything non-ASCII is left
    assert 'reason="rsa-sha1 is not accepted (RFC 8301 section 3.1)"' in field
    parsed = authres.AuthenticationResultsHeader.parse(field)
    assert [r.result for r in parsed.results] == ["policy"]
