"""DMARC record parsing: RFC 7489 §6.3-6.4 and Appendix B.2, RFC 9989 §4.7-4.8.

Expected values come from the RFC text quoted per case.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat import limits
from mailmoat.auth.dmarc import (
    Alignment,
    Policy,
    PSDFlag,
    ReportURI,
    is_dmarc_record,
    parse_record,
)
from mailmoat.errors import ParseError

# --- RFC 7489 Appendix B.2 examples ------------------------------------------------------


def test_b21_entire_domain_monitoring_only() -> None:
    # B.2.1: "v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com"
    record = parse_record("v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com")
    assert record.p is Policy.NONE
    assert record.rua == (ReportURI(uri="mailto:dmarc-feedback@example.com"),)
    assert record.ruf == ()
    assert record.warnings == ()


def test_b22_third_party_failure_reports() -> None:
    # B.2.2 (the record, joined): the ruf address at a third party.
    record = parse_record(
        "v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com; "
        "ruf=mailto:auth-reports@thirdparty.example.net"
    )
    assert [u.uri for u in record.ruf] == ["mailto:auth-reports@thirdparty.example.net"]


def test_b24_sampled_quarantine_with_size_limit() -> None:
    # B.2.4: "v=DMARC1; p=quarantine; rua=mailto:dmarc-feedback@example.com,
    # mailto:tld-test@thirdparty.example.net!10m; pct=25" -- §6.2: "m" is 2^20.
    record = parse_record(
        "v=DMARC1; p=quarantine; rua=mailto:dmarc-feedback@example.com,"
        "mailto:tld-test@thirdparty.example.net!10m; pct=25"
    )
    assert record.p is Policy.QUARANTINE
    assert record.pct == 25
    assert record.pct_given
    assert record.rua == (
        ReportURI(uri="mailto:dmarc-feedback@example.com"),
        ReportURI(uri="mailto:tld-test@thirdparty.example.net", max_size=10 * 2**20),
    )


@pytest.mark.parametrize(
    ("suffix", "size"),
    [("!50m", 50 * 2**20), ("!1k", 2**10), ("!3g", 3 * 2**30), ("!2t", 2 * 2**40), ("!900", 900)],
)
def test_size_suffix_units(suffix: str, size: int) -> None:
    # RFC 7489 §6.2: "k = kilobytes (2^10) ... m = megabytes (2^20) ... g ... (2^30) ...
    # t = terabytes (2^40)"; no unit = octets.
    record = parse_record(f"v=DMARC1; p=none; rua=mailto:r@example.com{suffix}")
    assert record.rua[0].max_size == size


# --- defaults (RFC 7489 §6.3, RFC 9989 §4.7) -----------------------------------------------


def test_defaults() -> None:
    record = parse_record("v=DMARC1; p=reject")
    assert record.adkim is Alignment.RELAXED  # "default is "r""
    assert record.aspf is Alignment.RELAXED
    assert record.pct == 100  # RFC 7489: "default is 100"
    assert not record.pct_given
    assert record.t is False  # RFC 9989 §4.7: "default is "n""
    assert record.psd is PSDFlag.UNKNOWN  # RFC 9989 §4.7: "default is "u""
    assert record.fo == ("0",)  # "default is "0""
    assert record.ri == 86400  # RFC 7489 §6.3 ri: "default is 86400"
    assert record.rf == ("afrf",)  # RFC 7489 §6.3 rf: "default is "afrf""
    assert record.sp is None
    assert record.np is None


def test_all_tags() -> None:
    record = parse_record(
        "v=DMARC1; p=quarantine; sp=reject; np=reject; adkim=s; aspf=s; t=y; psd=n; "
        "fo=1:d:s; rua=mailto:a@example.com; ruf=mailto:f@example.com; ri=3600; rf=afrf"
    )
    assert (record.p, record.sp, record.np) == (Policy.QUARANTINE, Policy.REJECT, Policy.REJECT)
    assert (record.adkim, record.aspf) == (Alignment.STRICT, Alignment.STRICT)
    assert record.t is True
    assert record.psd is PSDFlag.NO
    assert record.fo == ("1", "d", "s")
    assert record.ri == 3600


def test_whitespace_around_equals_and_separators() -> None:
    # RFC 9989 §4.8: equals = *WSP "=" *WSP ; dmarc-sep = *WSP ";" *WSP
    record = parse_record("v = DMARC1 ;\tp = reject ; sp\t=\tnone ;")
    assert record.p is Policy.REJECT
    assert record.sp is Policy.NONE


def test_keywords_case_insensitive() -> None:
    # RFC 5234 §2.3: ABNF literal strings are case-insensitive ("none" / "quarantine"...).
    record = parse_record("v=DMARC1; P=Reject; ADKIM=S")
    assert record.p is Policy.REJECT
    assert record.adkim is Alignment.STRICT


# --- what is not a DMARC record -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "p=reject; v=DMARC1",  # "This tag MUST be the first tag in the list"
        "v=DMARC2; p=reject",  # "the only possible value is "DMARC1""
        "v=dmarc1; p=reject",  # RFC 9989 %s"DMARC1": case sensitive
        "v=DMARC1x; p=reject",
        "v=spf1 -all",
        "",
        "p=reject",
    ],
)
def test_not_a_dmarc_record(text: str) -> None:
    assert not is_dmarc_record(text)
    with pytest.raises(ParseError):
        parse_record(text)


def test_uppercase_v_tag_is_a_record() -> None:
    # The tag name "v" is an ABNF literal (case-insensitive); only DMARC1 is case-sensitive.
    assert is_dmarc_record("V=DMARC1; p=none")


def test_version_only_record() -> None:
    assert is_dmarc_record("v=DMARC1")
    record = parse_record("v=DMARC1")
    assert record.p is None
    assert not record.p_invalid


def test_too_long_record_refused() -> None:
    text = "v=DMARC1; p=none; rua=mailto:" + "a" * limits.DMARC_RECORD_MAX + "@example.com"
    with pytest.raises(ParseError):
        parse_record(text)


# --- syntax errors -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "rejected", "block", "0", "none quarantine"])
def test_invalid_p_is_kept_as_invalid(value: str) -> None:
    # RFC 9989 §4.10.1: "If a retrieved DMARC Policy Record does not contain a valid "p" tag"
    # -- the evaluator decides; the parser must say the tag was there and invalid.
    record = parse_record(f"v=DMARC1; p={value}")
    assert record.p is None
    assert record.p_invalid
    assert not record.policy_tags_valid


def test_invalid_sp_and_np() -> None:
    record = parse_record("v=DMARC1; p=reject; sp=bogus; np=")
    assert record.p is Policy.REJECT
    assert record.sp_invalid
    assert record.np_invalid
    assert not record.policy_tags_valid


@pytest.mark.parametrize(
    ("tag", "attr", "default"),
    [
        ("adkim=x", "adkim", Alignment.RELAXED),
        ("aspf=relaxed", "aspf", Alignment.RELAXED),
        ("pct=101", "pct", 100),
        ("pct=-1", "pct", 100),
        ("pct=1000", "pct", 100),
        ("pct=fifty", "pct", 100),
        ("t=yes", "t", False),
        ("psd=maybe", "psd", PSDFlag.UNKNOWN),
        ("fo=0:1", "fo", ("0",)),  # RFC 9989: "0" and "1" are mutually exclusive
        ("fo=x", "fo", ("0",)),
        ("ri=soon", "ri", 86400),
    ],
)
def test_other_syntax_errors_fall_back_to_defaults(tag: str, attr: str, default: object) -> None:
    # RFC 9989 §4.8: "Syntax errors in the remainder of the record MUST be discarded in favor
    # of default values (if any) or ignored outright."
    record = parse_record(f"v=DMARC1; p=reject; {tag}")
    assert getattr(record, attr) == default
    assert record.p is Policy.REJECT
    assert record.warnings


def test_unknown_tags_ignored() -> None:
    # RFC 7489 §6.3 / RFC 9989 §4.7: "unknown tags MUST be ignored"
    record = parse_record("v=DMARC1; p=reject; foo=bar; x=1")
    assert record.p is Policy.REJECT
    assert record.unknown_tags == ("foo", "x")


def test_term_without_equals_ignored() -> None:
    record = parse_record("v=DMARC1; p=reject; garbage; rua=mailto:a@example.com")
    assert record.p is Policy.REJECT
    assert len(record.rua) == 1
    assert any("garbage" in w for w in record.warnings)


def test_repeated_tag_is_a_syntax_error_of_that_tag() -> None:
    # RFC 6376 §3.2: "if a tag name does occur more than once, the entire tag-list is invalid";
    # we void the repeated tag (see the module docstring).
    record = parse_record("v=DMARC1; p=none; p=reject; adkim=s; adkim=s")
    assert record.p is None
    assert record.p_invalid
    assert record.adkim is Alignment.RELAXED


def test_bad_uris_dropped_valid_kept() -> None:
    record = parse_record(
        "v=DMARC1; p=none; rua=mailto:ok@example.com, not a uri, ,mailto:x@example.com!12q"
    )
    assert [u.uri for u in record.rua] == ["mailto:ok@example.com"]
    assert len(record.warnings) == 3


def test_uri_count_bounded() -> None:
    uris = ",".join(f"mailto:r{i}@example.com" for i in range(limits.DMARC_MAX_REPORT_URIS + 5))
    record = parse_record(f"v=DMARC1; p=none; rua={uris}")
    assert len(record.rua) == limits.DMARC_MAX_REPORT_URIS


def test_non_ascii_octets_make_only_that_tag_invalid() -> None:
    record = parse_record(b"v=DMARC1; p=reject; rua=mailto:\xff@example.com; sp=r\xe9ject")
    assert record.p is Policy.REJECT
    assert record.sp_invalid
    assert record.rua == ()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("v=DMARC1; pspnrejctqu:!,.@-_tayfo0 \t"), max_size=80))
def test_parser_total(text: str) -> None:
    """Any text: either a ParseError (not a record) or a record; never anything else."""
    try:
        record = parse_record(text)
    except ParseError:
        assert not is_dmarc_record(text)
        return
    assert is_dmarc_record(text)
    assert record.text == text
    assert not (record.p is not None and record.p_invalid)
