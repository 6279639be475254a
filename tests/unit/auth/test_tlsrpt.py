"""TLS-RPT policy records (RFC 8460 §3). Expected values from the RFC's grammar and examples."""

from __future__ import annotations

import pytest

from mailmoat import limits
from mailmoat.auth.tlsrpt import (
    TLSRPTStatus,
    lookup_tlsrpt,
    parse_tlsrpt,
    select_tlsrpt,
)
from mailmoat.errors import ParseError
from mailmoat.resolver import TXT, FakeResolver


def test_rfc_examples() -> None:
    # RFC 8460 §3.1 examples
    mail = parse_tlsrpt("v=TLSRPTv1;rua=mailto:reports@example.com")
    assert mail.rua == ("mailto:reports@example.com",)
    web = parse_tlsrpt("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt")
    assert web.rua == ("https://reporting.example.com/v1/tlsrpt",)


def test_two_uris_and_extension() -> None:
    record = parse_tlsrpt("v=TLSRPTv1; rua=mailto:a@example.com , https://r.example/x; ext=1;")
    assert record.rua == ("mailto:a@example.com", "https://r.example/x")
    assert record.extensions == (("ext", "1"),)


def test_other_schemes_are_kept_apart() -> None:
    record = parse_tlsrpt("v=TLSRPTv1; rua=ftp://x.example/r,mailto:a@example.com")
    assert record.rua == ("mailto:a@example.com",)
    assert record.unsupported == ("ftp://x.example/r",)


@pytest.mark.parametrize("text", [
    "v=TLSRPTv1;",  # rua MUST appear
    "v=TLSRPTv1; rua=",  # empty
    "v=TLSRPTv1; rua=reports@example.com",  # not a URI
    "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com",  # twice
    "v=TLSRPTv2; rua=mailto:a@example.com",
    "v=tlsrptv1; rua=mailto:a@example.com",  # %s case-sensitive
    "rua=mailto:a@example.com; v=TLSRPTv1",
    "v=TLSRPTv1; rua=mailto:nobody",  # mailto without an address
    "v=TLSRPTv1; rua=https:reporting",  # https without authority
    "v=TLSRPTv1; rua=ftp://x.example/r",  # no usable URI
    "v=TLSRPTv1; rua=mailto:a@example.com; junk",
])
def test_bad_records(text: str) -> None:
    with pytest.raises(ParseError):
        parse_tlsrpt(text)


def test_bounds() -> None:
    with pytest.raises(ParseError):
        parse_tlsrpt("v=TLSRPTv1; rua=mailto:a@example.com; x=" + "y" * 5000)
    many = ",".join(f"mailto:r{i}@example.com" for i in range(limits.TLSRPT_MAX_REPORT_URIS + 3))
    record = parse_tlsrpt("v=TLSRPTv1; rua=" + many)
    assert len(record.rua) == limits.TLSRPT_MAX_REPORT_URIS
    assert record.warnings


def test_selection() -> None:
    # §3: records not starting with "v=TLSRPTv1;" are discarded; not exactly one: no TLSRPT
    def txt(*texts: str) -> list[TXT]:
        return [TXT(strings=(t.encode(),)) for t in texts]

    one = select_tlsrpt("e.com", txt("v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@e.com"))
    assert one.status is TLSRPTStatus.FOUND
    two = select_tlsrpt("e.com", txt("v=TLSRPTv1; rua=mailto:a@e.com",
                                     "v=TLSRPTv1; rua=mailto:b@e.com"))
    assert two.status is TLSRPTStatus.MULTIPLE
    assert select_tlsrpt("e.com", txt("v=TLSRPTv1; rua=x")).status is TLSRPTStatus.INVALID
    assert select_tlsrpt("e.com", []).status is TLSRPTStatus.NONE


async def test_lookup() -> None:
    fake = FakeResolver()
    fake.add_txt("_smtp._tls.example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    fake.add_txt("_smtp._tls.down.example", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    fake.set_timeout("_smtp._tls.down.example")
    found = await lookup_tlsrpt(fake, "example.com")
    assert found.status is TLSRPTStatus.FOUND
    assert found.record is not None
    assert found.record.rua == ("mailto:tlsrpt@example.com",)
    assert (await lookup_tlsrpt(fake, "nothing.example")).status is TLSRPTStatus.NONE
    assert (await lookup_tlsrpt(fake, "down.example")).status is TLSRPTStatus.TEMPERROR
