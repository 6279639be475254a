"""The Authentication-Results summary reader (RFC 8601 §2.2) and DKIM/ARC tag summaries."""

from __future__ import annotations

from mailmoat.analysis import parse_authentication_results
from mailmoat.analysis._signatures import parse_tag_list, summarise_arc, summarise_dkim
from mailmoat.message import parse_headers


def test_rfc8601_appendix_b_examples() -> None:
    # RFC 8601 Appendix B.3: "example.com; spf=pass smtp.mailfrom=example.net"
    ar = parse_authentication_results(b" example.com;\r\n   spf=pass smtp.mailfrom=example.net")
    assert ar.authserv_id == "example.com"
    spf = ar.first("spf")
    assert spf is not None
    assert (spf.result, spf.prop("smtp.mailfrom")) == ("pass", "example.net")
    # B.2: "example.org 1; none"
    none = parse_authentication_results(b" example.org 1; none")
    assert (none.authserv_id, none.results) == ("example.org", ())
    # B.4 (several results, comments, version):
    ar4 = parse_authentication_results(
        b" example.com;\r\n auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n"
        b" spf=pass smtp.mailfrom=example.net"
    )
    assert [(r.method, r.result) for r in ar4.results] == [("auth", "pass"), ("spf", "pass")]
    assert ar4.results[0].comment == "cram-md5"


def test_cfws_around_equals_reason_and_quoted_values() -> None:
    ar = parse_authentication_results(
        b' mx.example; dkim = fail (bad sig) reason="signature did not verify"'
        b' header.d = example.com header.s=sel; dmarc=pass header.from=example.com'
    )
    dkim = ar.first("dkim")
    assert dkim is not None
    assert dkim.result == "fail"
    assert dkim.reason == "signature did not verify"
    assert dkim.prop("header.d") == "example.com"
    assert dkim.comment == "bad sig"
    assert ar.first("dmarc") is not None


def test_microsoft_form_without_leading_authserv_id() -> None:
    # parsedmarc-samples (Exchange Online): the authserv-id comes between results.
    ar = parse_authentication_results(
        b" spf=softfail (sender IP is 199.230.200.198)\r\n smtp.mailfrom=google.com;"
        b" cardinalhealth.mail.onmicrosoft.com; dkim=fail\r\n (signature did not verify)\r\n"
        b" header.d=google.com;cardinalhealth.mail.onmicrosoft.com; dmarc=fail\r\n"
        b" action=oreject header.from=google.com;"
    )
    assert ar.authserv_id == "cardinalhealth.mail.onmicrosoft.com"
    assert [(r.method, r.result) for r in ar.results] == [
        ("spf", "softfail"), ("dkim", "fail"), ("dmarc", "fail")]
    assert ar.problems  # the missing leading authserv-id is reported


def test_dkim_tag_list() -> None:
    tags, problem = parse_tag_list(b" v=1; a=rsa-sha256; d=example.com;\r\n s=sel1; b=ab\r\n cd")
    assert (tags["a"], tags["d"], tags["s"], tags["b"]) == (
        "rsa-sha256", "example.com", "sel1", "abcd")
    assert problem is None
    _, dup = parse_tag_list(b"d=a; d=b")
    assert dup is not None
    assert "duplicate" in dup


def test_dkim_and_arc_summaries() -> None:
    headers = parse_headers(
        b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=relay.example; s=s2; b=x\r\n"
        b"ARC-Message-Signature: i=2; a=rsa-sha256; d=relay.example; s=s2; bh=y; b=z\r\n"
        b"ARC-Authentication-Results: i=2; relay.example; arc=pass\r\n"
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=first.example; s=s1; b=x\r\n"
        b"ARC-Message-Signature: i=1; a=rsa-sha256; d=first.example; s=s1; bh=y; b=z\r\n"
        b"ARC-Authentication-Results: i=1; first.example; spf=pass smtp.mailfrom=a.example\r\n"
        b"DKIM-Signature: v=1; a=ed25519-sha256; d=a.example; s=ed; bh=x; b=y\r\n"
        b"\r\n"
    )
    arc = summarise_arc(headers)
    assert [(a.instance, a.cv, a.domain) for a in arc.instances] == [
        (1, "none", "first.example"), (2, "pass", "relay.example")]
    assert arc.latest_cv == "pass"
    assert arc.problems == ()
    dkim = summarise_dkim(headers)
    assert [(d.domain, d.selector, d.algorithm) for d in dkim] == [
        ("a.example", "ed", "ed25519-sha256")]


def test_arc_gaps_and_incomplete_sets_are_reported() -> None:
    headers = parse_headers(b"ARC-Seal: i=2; cv=pass; d=x; s=y; b=z\r\n\r\n")
    arc = summarise_arc(headers)
    assert any("without gaps" in p for p in arc.problems)
    assert any("incomplete" in p for p in arc.problems)
