"""FakeResolver: the in-memory resolver every offline test stands on.

Expected values come from the RFCs (1034/1035/2181/2308/4343/8020), from the OpenSPF suite's
own zone data and conventions (its YAML header and pyspf's driver), and from dnspython as an
independent oracle of which names are valid.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import conformance
from mailmoat import limits
from mailmoat.errors import DNSPermanentError, DNSTemporaryError
from mailmoat.resolver import (
    MX,
    TLSA,
    TXT,
    BudgetedResolver,
    FakeResolver,
    NoData,
    NXDomain,
    QueryBudgetExceeded,
    Resolver,
    RRType,
    normalize_name,
)
from mailmoat.resolver.fake import DEFAULT_TTL

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def _scenarios(filename: str) -> list[dict[str, Any]]:
    path: Path = conformance("spf-pyspf", filename)
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict) and "zonedata" in d]


def _scenario(filename: str, description: str) -> dict[str, Any]:
    return next(s for s in _scenarios(filename) if s["description"] == description)


# ----------------------------------------------------------------- the protocol & basics ---


def test_is_a_resolver() -> None:
    assert isinstance(FakeResolver(), Resolver)


async def test_positive_answer_shape() -> None:
    fake = FakeResolver()
    fake.add_a("Mail.Example.COM.", "192.0.2.1", "192.0.2.2", ttl=60)
    answer = await fake.resolve("mail.example.com", RRType.A)
    assert answer.name == "mail.example.com"
    assert answer.canonical_name == "mail.example.com"
    assert answer.rrtype is RRType.A
    assert answer.records == (V4("192.0.2.1"), V4("192.0.2.2"))
    assert answer.ttl == 60
    assert answer.authenticated is False


@pytest.mark.parametrize("asked", ["MAIL.EXAMPLE.COM", "mail.example.com.", "mAiL.eXaMpLe.CoM."])
async def test_names_are_case_insensitive_and_root_dot_ignored(asked: str) -> None:
    # RFC 4343 §3: ASCII case is insignificant; RFC 1034 §3.1: the root dot ends a FQDN.
    fake = FakeResolver()
    fake.add_aaaa("mail.example.com", "2001:db8::1")
    answer = await fake.resolve(asked, RRType.AAAA)
    assert answer.records == (V6("2001:db8::1"),)
    assert fake.queries == [("mail.example.com", RRType.AAAA)]


async def test_case_folding_is_ascii_only() -> None:
    # RFC 4343 §3: only ASCII letters are case-insensitive; other octets compare exactly.
    fake = FakeResolver()
    fake.add_a("é.example", "192.0.2.1")
    assert (await fake.resolve("é.EXAMPLE", RRType.A)).records == (V4("192.0.2.1"),)
    with pytest.raises(NXDomain):
        await fake.resolve("É.example", RRType.A)


async def test_nxdomain_nodata_and_empty_non_terminal() -> None:
    fake = FakeResolver()
    fake.add_txt("_dmarc.mail.example.com", "v=DMARC1; p=none")
    fake.add_a("example.com", "192.0.2.1")
    with pytest.raises(NXDomain) as nx:
        await fake.resolve("nope.example.com", RRType.A)
    assert nx.value.name == "nope.example.com"
    with pytest.raises(NoData) as nd:  # RFC 2308 §2.2: the name exists, no data of that type
        await fake.resolve("example.com", RRType.MX)
    assert (nd.value.name, nd.value.rrtype) == ("example.com", RRType.MX)
    # RFC 8020 §2 / RFC 4592 §2.2.2: an empty non-terminal exists: NOERROR, no data.
    with pytest.raises(NoData):
        await fake.resolve("mail.example.com", RRType.TXT)
    with pytest.raises(NXDomain):  # ...but not its siblings
        await fake.resolve("x.mail.example.com", RRType.TXT)


async def test_nxdomain_and_nodata_are_not_temporary() -> None:
    assert not issubclass(NXDomain, DNSTemporaryError)
    assert not issubclass(NoData, DNSTemporaryError)


async def test_records_of_other_types_are_never_returned() -> None:
    fake = FakeResolver()
    fake.add_txt("example.com", "v=spf1 -all")
    fake.add_mx("example.com", 10, "MX.Example.com.")
    fake.add_a("example.com", "192.0.2.1")
    assert (await fake.resolve("example.com", RRType.MX)).records == (
        MX(preference=10, exchange="mx.example.com"),
    )
    assert (await fake.resolve("example.com", RRType.TXT)).records == (
        TXT(strings=(b"v=spf1 -all",)),
    )
    with pytest.raises(NoData):
        await fake.resolve("example.com", RRType.AAAA)


async def test_default_ttl_and_rrset_ttl_is_the_minimum() -> None:
    fake = FakeResolver()
    fake.add_a("a.example", "192.0.2.1")
    assert (await fake.resolve("a.example", RRType.A)).ttl == DEFAULT_TTL
    fake.add_a("b.example", "192.0.2.1", ttl=600)
    fake.add_a("b.example", "192.0.2.2", ttl=60)
    # RFC 2181 §5.2: all RRs of an RRset have one TTL.
    assert (await fake.resolve("b.example", RRType.A)).ttl == 60


async def test_rrset_has_no_duplicates() -> None:
    # RFC 2181 §5: "the RRset ... should not contain duplicate RRs".
    fake = FakeResolver()
    fake.add_txt("example.com", "one")
    fake.add_txt("example.com", "one")
    fake.add_txt("example.com", "two")
    records = (await fake.resolve("example.com", RRType.TXT)).records
    assert records == (TXT(strings=(b"one",)), TXT(strings=(b"two",)))


async def test_txt_strings_are_kept_apart_and_long_ones_split() -> None:
    fake = FakeResolver()
    fake.add_txt("multi.example", "v=spf1 ip4:", "192.0.2.5 -all")
    (txt,) = (await fake.resolve("multi.example", RRType.TXT)).records
    assert isinstance(txt, TXT)
    assert txt.strings == (b"v=spf1 ip4:", b"192.0.2.5 -all")
    assert txt.joined == b"v=spf1 ip4:192.0.2.5 -all"  # RFC 7208 §3.3
    fake.add_txt("long.example", "x" * 600)
    (txt,) = (await fake.resolve("long.example", RRType.TXT)).records
    assert isinstance(txt, TXT)
    # RFC 1035 §3.3: a character-string holds at most 255 octets.
    assert [len(s) for s in txt.strings] == [255, 255, 90]
    assert txt.joined == b"x" * 600


async def test_ptr_and_tlsa() -> None:
    fake = FakeResolver()
    fake.add_ptr("1.2.0.192.in-addr.arpa", "Mail.Example.com.")
    fake.add_tlsa("_25._tcp.mx.example.com", 3, 1, 1, bytes.fromhex("ab" * 32))
    ptr = await fake.resolve("1.2.0.192.IN-ADDR.ARPA", RRType.PTR)
    assert ptr.records == ("mail.example.com",)
    tlsa = await fake.resolve("_25._tcp.mx.example.com", RRType.TLSA)
    assert tlsa.records == (TLSA(usage=3, selector=1, mtype=1, data=b"\xab" * 32),)


def test_add_refuses_inconsistent_data() -> None:
    fake = FakeResolver()
    fake.add_a("a.example", "192.0.2.1")
    with pytest.raises(ValueError, match="CNAME"):  # RFC 1034 §3.6.2
        fake.add_cname("a.example", "b.example")
    fake.add_cname("c.example", "b.example")
    with pytest.raises(ValueError, match="CNAME"):
        fake.add_a("c.example", "192.0.2.1")
    with pytest.raises(ValueError, match="more than one CNAME"):  # RFC 2181 §10.1
        fake.add_cname("c.example", "d.example")
    with pytest.raises(ValueError, match="rrtype"):
        fake.add("x.example", "target.example")
    with pytest.raises(ValueError, match="not of type"):
        fake.add("x.example", V4("192.0.2.1"), rrtype=RRType.AAAA)
    with pytest.raises(ValueError):
        fake.add_mx("x.example", 70000, "mx.example")
    with pytest.raises(ValueError):
        fake.add_a("x.example", "2001:db8::1")
    with pytest.raises(ValueError, match="label"):
        fake.add_a("a" * 64 + ".example", "192.0.2.1")
    with pytest.raises(ValueError, match="TTL"):
        fake.add_a("x.example", "192.0.2.1", ttl=-1)


# ------------------------------------------------------------------------------- CNAMEs ---


async def test_cname_is_followed_with_canonical_name_and_min_ttl() -> None:
    fake = FakeResolver()
    fake.add_cname("www.example.com", "Alias.Example.net.", ttl=30)
    fake.add_cname("alias.example.net", "host.example.org", ttl=3600)
    fake.add_a("host.example.org", "192.0.2.7", ttl=600)
    answer = await fake.resolve("www.example.com", RRType.A)
    assert answer.name == "www.example.com"
    assert answer.canonical_name == "host.example.org"
    assert answer.records == (V4("192.0.2.7"),)
    assert answer.ttl == 30
    # One question, as a recursive resolver answers the whole chain at once.
    assert fake.queries == [("www.example.com", RRType.A)]


async def test_query_for_cname_is_not_followed() -> None:
    fake = FakeResolver()
    fake.add_cname("www.example.com", "host.example.org")
    fake.add_a("host.example.org", "192.0.2.7")
    answer = await fake.resolve("www.example.com", RRType.CNAME)
    assert answer.records == ("host.example.org",)
    assert answer.canonical_name == "www.example.com"
    with pytest.raises(NoData):
        await fake.resolve("host.example.org", RRType.CNAME)


async def test_cname_to_missing_or_empty_target() -> None:
    fake = FakeResolver()
    fake.add_cname("dangling.example", "nowhere.example")
    fake.add_cname("toa.example", "host.example")
    fake.add_a("host.example", "192.0.2.1")
    with pytest.raises(NXDomain):  # RFC 6604 §3: the RCODE is the last name's
        await fake.resolve("dangling.example", RRType.A)
    with pytest.raises(NoData):
        await fake.resolve("toa.example", RRType.TXT)


async def test_cname_loop_is_a_permanent_error() -> None:
    # RFC 1034 §3.6.2: "CNAME loops signalled as an error"
    fake = FakeResolver()
    fake.add_cname("a.example", "b.example")
    fake.add_cname("b.example", "a.example")
    fake.add_cname("self.example", "SELF.example.")
    for name in ("a.example", "self.example"):
        with pytest.raises(DNSPermanentError, match="loop"):
            await fake.resolve(name, RRType.TXT)


async def test_cname_chain_bound() -> None:
    fake = FakeResolver()
    n = limits.DNS_MAX_CNAME_CHAIN
    for i in range(n + 1):
        fake.add_cname(f"c{i}.example", f"c{i + 1}.example")
    fake.add_a(f"c{n + 1}.example", "192.0.2.1")
    # exactly DNS_MAX_CNAME_CHAIN CNAMEs: answered
    answer = await fake.resolve("c1.example", RRType.A)
    assert answer.canonical_name == f"c{n + 1}.example"
    with pytest.raises(DNSPermanentError, match="chain"):  # one more: refused
        await fake.resolve("c0.example", RRType.A)


# ------------------------------------------------------------------------------ failures ---


async def test_timeout_and_servfail_are_temporary() -> None:
    fake = FakeResolver()
    fake.add_txt("slow.example", "v=spf1 -all")
    fake.set_timeout("slow.example")
    fake.set_servfail("broken.example")
    fake.add_cname("via.example", "slow.example")
    for name, rrtype in [("slow.example", RRType.TXT), ("slow.example", RRType.A),
                         ("broken.example", RRType.MX), ("via.example", RRType.TXT)]:
        with pytest.raises(DNSTemporaryError):
            await fake.resolve(name, rrtype)
    assert len(fake.queries) == 4


@pytest.mark.parametrize("bad", [
    "a..example.com",                      # RFC 1035 §3.1: only the root label is empty
    ".example.com",
    "a" * 64 + ".example.com",             # RFC 1035 §2.3.4: labels 63 octets or less
    ".".join(["a" * 63] * 4),              # 4*64+1 = 257 octets on the wire
    "x" * 300,
    "\udcff.example",                      # not encodable
])
async def test_names_that_cannot_be_asked(bad: str) -> None:
    fake = FakeResolver()
    with pytest.raises(DNSPermanentError):
        await fake.resolve(bad, RRType.TXT)
    assert fake.queries == []  # nothing reached the "wire"


async def test_longest_valid_names_are_asked() -> None:
    fake = FakeResolver()
    label63 = "a" * 63
    with pytest.raises(NXDomain):
        await fake.resolve(f"{label63}.example.com", RRType.A)
    # 3*64 + 62 + 1 = 255 octets on the wire: the maximum (RFC 1035 §2.3.4)
    longest = ".".join([label63] * 3 + ["b" * 61])
    with pytest.raises(NXDomain):
        await fake.resolve(longest, RRType.A)
    with pytest.raises(DNSPermanentError):
        await fake.resolve(longest + "b", RRType.A)


_label = st.binary(min_size=0, max_size=70).filter(lambda b: b"." not in b)


@settings(max_examples=300, deadline=None)
@given(st.lists(_label, min_size=1, max_size=6))
def test_name_validity_agrees_with_dnspython(labels: list[bytes]) -> None:
    """dnspython's Name constructor is an independent oracle of RFC 1035 §2.3.4 / §3.1."""
    try:
        dns.name.Name([*labels, b""])
        oracle_ok = True
    except dns.exception.DNSException:
        oracle_ok = False
    text = b".".join(labels)
    # A trailing "." is the root in text form (tested above); only the relative forms here.
    assume(text and not text.endswith(b"."))
    try:
        name = text.decode("utf-8")
    except UnicodeDecodeError:
        return  # our names are str; octets that are not UTF-8 cannot be asked
    try:
        normal = normalize_name(name)
        ours_ok = True
    except DNSPermanentError:
        ours_ok = False
    assert ours_ok == oracle_ok, labels
    if ours_ok:
        assert normal.encode("utf-8") == text.lower()


_ascii_label = st.text(alphabet="abcXYZ019-_", min_size=0, max_size=70)


@settings(max_examples=400, deadline=None)
@given(st.lists(_ascii_label, min_size=1, max_size=6), st.booleans())
def test_ascii_names_agree_with_dnspython(labels: list[str], root_dot: bool) -> None:
    """The common case (ASCII, mixed case, optional root dot) against the same oracle."""
    try:
        dns.name.Name([*(label.encode("ascii") for label in labels), b""])
        oracle_ok = True
    except dns.exception.DNSException:
        oracle_ok = False
    text = ".".join(labels)
    assume(text and not text.endswith("."))
    try:
        normal = normalize_name(text + "." if root_dot else text)
        ours_ok = True
    except DNSPermanentError:
        ours_ok = False
    assert ours_ok == oracle_ok, labels
    if ours_ok:
        # RFC 4343 §3: ASCII letters compare case-insensitively; lower case is the form kept.
        assert normal == text.lower()
        assert normalize_name(normal) == normal


async def test_answers_follow_changes_to_the_zone() -> None:
    # Every question is answered from the data as it is when asked, however often asked.
    fake = FakeResolver()
    fake.add_txt("example.com", "v=spf1 -all")
    first = await fake.resolve("example.com", RRType.TXT)
    again = await fake.resolve("EXAMPLE.com.", RRType.TXT)
    assert first == again
    assert fake.queries == [("example.com", RRType.TXT)] * 2
    with pytest.raises(NoData):
        await fake.resolve("example.com", RRType.A)
    fake.add_a("example.com", "192.0.2.1")
    assert (await fake.resolve("example.com", RRType.A)).records == (V4("192.0.2.1"),)
    fake.add_txt("example.com", "second")
    assert len((await fake.resolve("example.com", RRType.TXT)).records) == 2
    with pytest.raises(NXDomain):
        await fake.resolve("new.example.com", RRType.A)
    fake.add_cname("new.example.com", "example.com", ttl=60)
    answer = await fake.resolve("new.example.com", RRType.A)
    assert (answer.canonical_name, answer.ttl) == ("example.com", 60)
    fake.set_authenticated("new.example.com")
    fake.set_authenticated("example.com")
    assert (await fake.resolve("new.example.com", RRType.A)).authenticated
    fake.set_servfail("example.com")
    for _ in range(2):
        with pytest.raises(DNSTemporaryError):
            await fake.resolve("new.example.com", RRType.A)


# --------------------------------------------------------------------------- DNSSEC bit ---


async def test_authenticated_only_when_the_whole_chain_is() -> None:
    fake = FakeResolver()
    fake.add_a("signed.example", "192.0.2.1")
    fake.set_authenticated("signed.example")
    fake.add_cname("alias.example", "signed.example")
    assert (await fake.resolve("signed.example", RRType.A)).authenticated is True
    assert (await fake.resolve("alias.example", RRType.A)).authenticated is False
    fake.set_authenticated("alias.example")
    assert (await fake.resolve("alias.example", RRType.A)).authenticated is True


# ----------------------------------------------------------------- OpenSPF zone data ---


@pytest.mark.parametrize(
    "filename", ["rfc7208-tests.yml", "rfc4408-tests.yml", "test.yml", "doctest.yml"]
)
def test_every_conformance_scenario_loads(filename: str) -> None:
    scenarios = _scenarios(filename)
    assert scenarios
    for scenario in scenarios:
        FakeResolver.from_pyspf_zonedata(scenario["zonedata"])


async def test_record_lookup_scenario_conventions() -> None:
    """rfc7208-tests.yml "Record lookup" zone, read with the suite's conventions."""
    fake = FakeResolver.from_pyspf_zonedata(_scenario("rfc7208-tests.yml", "Record lookup")[
        "zonedata"])
    # both.example.net: SPF and TXT both listed -> only the TXT is answered.
    (txt,) = (await fake.resolve("both.example.net", RRType.TXT)).records
    assert txt == TXT(strings=(b"v=spf1 -all",))
    # spfonly.example.net: "SPF: v=spf1 -all" + "TXT: NONE" -> no TXT at all.
    with pytest.raises(NoData):
        await fake.resolve("spfonly.example.net", RRType.TXT)
    assert fake.spf99_records("spfonly.example.net") == (TXT(strings=(b"v=spf1 -all",)),)
    # spftimeout: "TXT: v=spf1 -all" then TIMEOUT -> TXT answered, other types time out.
    (txt,) = (await fake.resolve("spftimeout.example.net", RRType.TXT)).records
    assert txt == TXT(strings=(b"v=spf1 -all",))
    with pytest.raises(DNSTemporaryError):
        await fake.resolve("spftimeout.example.net", RRType.A)
    # txttimeout: SPF, TXT NONE, TIMEOUT -> the TXT query times out.
    with pytest.raises(DNSTemporaryError):
        await fake.resolve("txttimeout.example.net", RRType.TXT)
    with pytest.raises(DNSTemporaryError):
        await fake.resolve("alltimeout.example.net", RRType.TXT)


async def test_spf_records_published_as_txt_unless_told_not_to() -> None:
    zonedata: dict[str, list[object]] = {"example.net": [{"SPF": "v=spf1 -all"}]}
    fake = FakeResolver.from_pyspf_zonedata(zonedata)
    (txt,) = (await fake.resolve("example.net", RRType.TXT)).records
    assert txt == TXT(strings=(b"v=spf1 -all",))
    strict = FakeResolver.from_pyspf_zonedata(zonedata, spf_as_txt=False)
    with pytest.raises(NoData):  # RFC 7208 §3.1: type 99 is not consulted
        await strict.resolve("example.net", RRType.TXT)


async def test_initial_processing_zone_octets_and_multi_strings() -> None:
    fake = FakeResolver.from_pyspf_zonedata(
        _scenario("rfc7208-tests.yml", "Initial processing")["zonedata"])
    # YAML "\xEF\xBB\xBF" is the UTF-8 BOM octets, not three code points re-encoded.
    (txt,) = (await fake.resolve("hosed.example.com", RRType.TXT)).records
    assert isinstance(txt, TXT)
    assert txt.joined == b"v=spf1 a:\xef\xbb\xbfgarbage.example.net -all"
    (txt,) = (await fake.resolve("hosed2.example.com", RRType.TXT)).records
    assert isinstance(txt, TXT)
    assert txt.joined == b"v=spf1 \x80a:example.net -all"
    # null.example.com: [ "v=spf1 ip4:", "192.0.2.5 -all" ] and [ ] (no strings at all)
    records = set((await fake.resolve("null.example.com", RRType.TXT)).records)
    assert records == {TXT(strings=(b"v=spf1 ip4:", b"192.0.2.5 -all")), TXT(strings=())}
    with pytest.raises(DNSTemporaryError):  # example.com: TIMEOUT
        await fake.resolve("example.com", RRType.TXT)


async def test_ptr_scenario_cname_loop_and_case() -> None:
    fake = FakeResolver.from_pyspf_zonedata(
        _scenario("rfc7208-tests.yml", "PTR mechanism syntax")["zonedata"])
    # 4.2.0.192.in-addr.arpa PTR "loop4.example.com." ; loop4 CNAME CNAME.example.com. ;
    # cname.example.com CNAME CNAME.example.com. (a loop, in inconsistent case)
    ptr = await fake.resolve("4.2.0.192.in-addr.arpa", RRType.PTR)
    assert ptr.records == ("loop4.example.com",)
    with pytest.raises(DNSPermanentError, match="loop"):
        await fake.resolve("loop4.example.com", RRType.A)
    # "PTR: mail.Example.com" is answered lower-case (the Record contract in _types.py)
    v6 = ipaddress.IPv6Address("2001:db8::1").reverse_pointer
    assert (await fake.resolve(v6, RRType.PTR)).records == ("mail.example.com",)


async def test_cname_aliasing_scenario() -> None:
    fake = FakeResolver.from_pyspf_zonedata(
        _scenario("rfc7208-tests.yml", "Test cases from implementation bugs")["zonedata"])
    direct = await fake.resolve("a.example.org", RRType.TXT)
    alias = await fake.resolve("b.example.org", RRType.TXT)
    assert len(direct.records) == 4
    assert alias.records == direct.records
    assert alias.canonical_name == "a.example.org"
    assert (await fake.resolve("example.org", RRType.MX)).records == (
        MX(preference=10, exchange="smtp.example.org"),
        MX(preference=10, exchange="smtp1.example.com"),
    )


def test_bad_zonedata_is_refused() -> None:
    for bad in ({"x.example": "TXT"}, {"x.example": [{"NAPTR": "x"}]}, {"x.example": [42]},
                {"x.example": [{"MX": "10 mx.example"}]}, {"x.example": [{"TXT": [1, 2]}]}):
        with pytest.raises(ValueError):
            FakeResolver.from_pyspf_zonedata(bad)


# ------------------------------------------------------------------------- zone text ---

ZONE = r"""
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 2024010101 ; serial
        7200 3600 1209600 300 )
    IN NS  ns1
    IN MX  10 mx1
    IN MX  20 mx2.example.net.
    IN TXT "v=spf1 mx -all"
ns1 IN A 192.0.2.53
mx1 300 IN A 192.0.2.25
mx1 IN 300 AAAA 2001:db8::25
_dmarc TXT "v=DMARC1; p=reject; rua=mailto:d@example.com" ; a comment
sel._domainkey 1h TXT ( "v=DKIM1; k=rsa; "
                        "p=MIIBIjAN" )
quoted TXT "semi;colon" "quote\"in" "dec\059imal" "back\\slash" unquoted
www CNAME mx1
_25._tcp.mx1 TLSA 3 1 1 ( 0123456789abcdef 0123456789ABCDEF
                          0123456789abcdef 0123456789abcdef )
old SPF "v=spf1 -all"
a.b.c TXT "deep"
1.2.0.192.in-addr.arpa. PTR mx1
"""


async def test_zone_text_subset() -> None:
    fake = FakeResolver.from_zone_text(ZONE)
    mx = await fake.resolve("example.com", RRType.MX)
    assert mx.records == (MX(preference=10, exchange="mx1.example.com"),
                          MX(preference=20, exchange="mx2.example.net"))
    assert mx.ttl == 3600
    assert (await fake.resolve("example.com", RRType.TXT)).records == (
        TXT(strings=(b"v=spf1 mx -all",)),)
    a = await fake.resolve("mx1.example.com", RRType.A)
    assert (a.records, a.ttl) == ((V4("192.0.2.25"),), 300)
    assert (await fake.resolve("mx1.example.com", RRType.AAAA)).ttl == 300
    dmarc = await fake.resolve("_dmarc.example.com", RRType.TXT)
    assert dmarc.records == (TXT(strings=(b"v=DMARC1; p=reject; rua=mailto:d@example.com",)),)
    dkim = await fake.resolve("sel._domainkey.example.com", RRType.TXT)
    assert dkim.records == (TXT(strings=(b"v=DKIM1; k=rsa; ", b"p=MIIBIjAN")),)
    assert dkim.ttl == 3600
    # RFC 1035 §5.1: \X is X, \DDD is the octet DDD (059 is ';').
    quoted = await fake.resolve("quoted.example.com", RRType.TXT)
    assert quoted.records == (
        TXT(strings=(b"semi;colon", b'quote"in', b"dec;imal", b"back\\slash", b"unquoted")),)
    www = await fake.resolve("www.example.com", RRType.AAAA)
    assert www.canonical_name == "mx1.example.com"
    assert www.records == (V6("2001:db8::25"),)
    tlsa = await fake.resolve("_25._tcp.mx1.example.com", RRType.TLSA)
    assert tlsa.records == (TLSA(usage=3, selector=1, mtype=1,
                                 data=bytes.fromhex("0123456789abcdef" * 4)),)
    with pytest.raises(NoData):  # type 99 is kept, never answered as TXT
        await fake.resolve("old.example.com", RRType.TXT)
    with pytest.raises(NoData):  # empty non-terminal
        await fake.resolve("b.c.example.com", RRType.TXT)
    with pytest.raises(NoData):  # the apex has SOA/NS but no A
        await fake.resolve("example.com", RRType.A)
    ptr = await fake.resolve("1.2.0.192.in-addr.arpa", RRType.PTR)
    assert ptr.records == ("mx1.example.com",)


async def test_zone_text_origin_argument_and_relative_names() -> None:
    fake = FakeResolver.from_zone_text("host 60 A 192.0.2.1\n", origin="Example.ORG")
    assert (await fake.resolve("host.example.org", RRType.A)).ttl == 60


@pytest.mark.parametrize(("text", "message"), [
    ("$INCLUDE other.zone\n", "directive"),
    ("$ORIGIN example.com.\n* TXT \"x\"\n", "wildcard"),
    ("$ORIGIN example.com.\nx CH TXT \"x\"\n", "class"),
    ("$ORIGIN example.com.\nx TXT \"" + "a" * 256 + "\"\n", "255"),
    ("$ORIGIN example.com.\nx TXT ( \"a\"\n", "unbalanced"),
    ("$ORIGIN example.com.\nx TXT \"a\" )\n", "unbalanced"),
    ("$ORIGIN example.com.\nx TXT \"a\n", "newline"),
    ("$ORIGIN example.com.\nx WKS 1 2\n", "WKS"),
    ("$ORIGIN example.com.\nx A 300.1.1.1\n", "line 2"),
    ("x A 192.0.2.1\n", "ORIGIN"),
    ("  A 192.0.2.1\n", "owner"),
    ("$ORIGIN example.com.\nx TLSA 3 1 1 zz\n", "hexadecimal"),
    ("$ORIGIN example.com.\nx TXT \"\\999\"\n", "escape"),
    ("$ORIGIN example.com.\na\\.b A 192.0.2.1\n", "escapes"),
])
def test_zone_text_refusals(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FakeResolver.from_zone_text(text)


# ---------------------------------------------------------------------------- budget ---


async def test_budgeted_resolver() -> None:
    fake = FakeResolver()
    fake.add_a("a.example", "192.0.2.1")
    budget = BudgetedResolver(fake, 2)
    assert isinstance(budget, Resolver)
    await budget.resolve("a.example", RRType.A)
    with pytest.raises(NXDomain):  # failures count too
        await budget.resolve("b.example", RRType.A)
    assert budget.remaining == 0
    with pytest.raises(QueryBudgetExceeded):
        await budget.resolve("a.example", RRType.A)
    assert issubclass(QueryBudgetExceeded, DNSPermanentError)
    assert len(fake.queries) == 2  # the refused question never reached the inner resolver
    with pytest.raises(ValueError):
        BudgetedResolver(fake, -1)


# ----------------------------------------------- zone text vs dnspython's zone parser ---


def _dnspython_zone(text: str, origin: str) -> dict[tuple[str, RRType], set[object]]:
    """Parse with dnspython's master-file reader (an independent implementation)."""
    import dns.rdatatype
    import dns.zone

    zone = dns.zone.from_text(text, origin=origin, check_origin=False, relativize=False)
    out: dict[tuple[str, RRType], set[object]] = {}
    for name, node in zone.nodes.items():
        owner = name.to_text(omit_final_dot=True).lower()
        for rdataset in node.rdatasets:
            kind = dns.rdatatype.to_text(rdataset.rdtype)
            if kind not in RRType.__members__:
                continue
            values: set[object] = set()
            for rd in rdataset:
                if kind in ("A", "AAAA"):
                    values.add(ipaddress.ip_address(rd.address))
                elif kind == "MX":
                    values.add(MX(preference=rd.preference,
                                  exchange=rd.exchange.to_text(omit_final_dot=True).lower()))
                elif kind == "TXT":
                    values.add(TXT(strings=tuple(rd.strings)))
                elif kind == "TLSA":
                    values.add(TLSA(usage=rd.usage, selector=rd.selector, mtype=rd.mtype,
                                    data=rd.cert))
                else:
                    values.add(rd.target.to_text(omit_final_dot=True).lower())
            out[(owner, RRType(kind))] = values
    return out


async def _ours(fake: FakeResolver, questions: list[tuple[str, RRType]]
                ) -> dict[tuple[str, RRType], set[object]]:
    out: dict[tuple[str, RRType], set[object]] = {}
    for name, rrtype in questions:
        try:
            out[(name, rrtype)] = set((await fake.resolve(name, rrtype)).records)
        except NoData:
            pass
    return out


async def test_zone_text_agrees_with_dnspython_zone_parser() -> None:
    oracle = _dnspython_zone(ZONE, "example.com.")
    fake = FakeResolver.from_zone_text(ZONE)
    # CNAME questions only, so that chains are not followed (dnspython stores, never follows)
    questions = [(name, rrtype) for name, rrtype in oracle]
    assert await _ours(fake, questions) == oracle
    assert len(oracle) >= 11  # every in-zone RRset of a modelled type (the PTR is out of zone)


_octets = st.binary(min_size=0, max_size=255)


@settings(max_examples=300, deadline=None)
@given(st.lists(_octets, min_size=1, max_size=4))
async def test_txt_escapes_round_trip_through_dnspython(strings: list[bytes]) -> None:
    """dnspython renders arbitrary octets as a quoted, escaped TXT; we read them back."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    rdata = dns.rdata.from_wire(
        dns.rdataclass.IN, dns.rdatatype.TXT,
        b"".join(bytes([len(s)]) + s for s in strings), 0,
        sum(1 + len(s) for s in strings))
    text = f"$ORIGIN example.com.\nt 60 IN TXT {rdata.to_text()}\n"
    fake = FakeResolver.from_zone_text(text)
    assert (await fake.resolve("t.example.com", RRType.TXT)).records == (
        TXT(strings=tuple(strings)),)
