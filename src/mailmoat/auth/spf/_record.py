"""SPF record selection and parsing (RFC 7208 §4.5, §4.6, §5, §6, §12).

SECURITY: records come from DNS (untrusted). We trust nothing in them: a record longer than
``limits.SPF_RECORD_MAX`` octets, any octet outside printable US-ASCII, any term that is not
exactly one of the RFC's mechanisms or a well-formed modifier, a CIDR length out of range or
with a leading zero, a duplicate ``redirect=``/``exp=`` is refused with :class:`ParseError`
(the caller turns that into ``permerror``). Parsing is a split on SP plus one anchored regex
per term: linear in the record length. Parsed records are immutable and cached by text (a
bounded LRU), so a hot record is parsed once.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from dataclasses import dataclass

from mailmoat import limits
from mailmoat.auth.spf._macro import (
    MacroString,
    parse_domain_spec,
    parse_macro_string,
)
from mailmoat.errors import ParseError

__all__ = [
    "Mechanism",
    "MechanismKind",
    "Qualifier",
    "SPFRecord",
    "is_spf_record",
    "parse_record",
]


class Qualifier(enum.StrEnum):
    """RFC 7208 §4.6.2: ``qualifier = "+" / "-" / "?" / "~"``."""

    PASS = "+"  # noqa: S105 - not a password
    FAIL = "-"
    SOFTFAIL = "~"
    NEUTRAL = "?"


class MechanismKind(enum.StrEnum):
    ALL = "all"
    INCLUDE = "include"
    A = "a"
    MX = "mx"
    PTR = "ptr"
    IP4 = "ip4"
    IP6 = "ip6"
    EXISTS = "exists"


#: RFC 7208 §4.6.4: the terms that cause DNS queries and count towards the limit of 10.
DNS_TERMS = frozenset(
    {MechanismKind.INCLUDE, MechanismKind.A, MechanismKind.MX, MechanismKind.PTR,
     MechanismKind.EXISTS}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mechanism:
    """One directive: qualifier + mechanism (RFC 7208 §4.6.2, §5)."""

    text: str
    qualifier: Qualifier
    kind: MechanismKind
    domain_spec: MacroString | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128
    #: ip4/ip6 precomputed for matching: the IP version (0 for other mechanisms), how many
    #: host bits to drop, and the network's remaining bits.
    net_version: int = 0
    net_shift: int = 0
    net_value: int = -1

    def contains(self, version: int, address: int) -> bool:
        """ip4/ip6: is the client (IP version, address as an integer) in the network?"""
        return version == self.net_version and address >> self.net_shift == self.net_value


def _ip_mechanism(term: str, qualifier: Qualifier, kind: MechanismKind,
                  network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Mechanism:
    shift = network.max_prefixlen - network.prefixlen
    return Mechanism(
        text=term, qualifier=qualifier, kind=kind, network=network,
        cidr4=network.prefixlen if network.version == 4 else 32,
        cidr6=network.prefixlen if network.version == 6 else 128,
        net_version=network.version, net_shift=shift,
        net_value=int(network.network_address) >> shift,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SPFRecord:
    """A parsed ``v=spf1`` record."""

    text: str
    mechanisms: tuple[Mechanism, ...]
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    unknown_modifiers: tuple[tuple[str, str], ...] = ()

    @property
    def has_all(self) -> bool:
        return any(m.kind is MechanismKind.ALL for m in self.mechanisms)


def is_spf_record(txt: bytes) -> bool:
    """RFC 7208 §4.5: "Records that do not begin with a version section of exactly
    "v=spf1" are discarded." The version is followed by SP or the end (§4.5/4: "v=spf10"
    is not SPF); ABNF literals are case-insensitive (§12 version = "v=spf1").
    """
    return txt[:6].lower() == b"v=spf1" and (len(txt) == 6 or txt[6] == 0x20)


# RFC 7208 §4.6.1:
#   modifier         = redirect / explanation / unknown-modifier
#   unknown-modifier = name "=" macro-string
#   name             = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
# "Modifiers always contain an equals ('=') character immediately after the name, and before
# any ":" or "/" characters that might be part of the term."
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)", re.DOTALL)
# directive = [ qualifier ] mechanism ; the mechanism name runs to ":" "/" or the end.
_DIRECTIVE = re.compile(r"([+\-?~]?)([A-Za-z0-9]+)(.*)", re.DOTALL)
#   ip4-cidr-length  = "/" ("0" / %x31-39 0*1DIGIT) ; value range 0-32
#   ip6-cidr-length  = "/" ("0" / %x31-39 0*2DIGIT) ; value range 0-128
#   dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
_DUAL_CIDR = re.compile(r"(?:/(0|[1-9][0-9]?))?(?://(0|[1-9][0-9]{0,2}))?\Z")
_IP4_CIDR = re.compile(r"/(0|[1-9][0-9]?)\Z")
_IP6_CIDR = re.compile(r"/(0|[1-9][0-9]{0,2})\Z")
#   ip4-network      = qnum "." qnum "." qnum "." qnum
#   qnum             = DIGIT                 ; 0-9
#                      / %x31-39 DIGIT       ; 10-99
#                      / "1" 2DIGIT          ; 100-199
#                      / "2" %x30-34 DIGIT   ; 200-249
#                      / "25" %x30-35        ; 250-255
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IP4_NETWORK = re.compile(rf"{_QNUM}\.{_QNUM}\.{_QNUM}\.{_QNUM}\Z")
#   ip6-network      = <as per [RFC4291], Section 2.2>  (hex digits, ":" and a dotted tail)
_IP6_CHARS = re.compile(r"[0-9A-Fa-f:.]+\Z")

_QUALIFIERS = {"": Qualifier.PASS, "+": Qualifier.PASS, "-": Qualifier.FAIL,
               "~": Qualifier.SOFTFAIL, "?": Qualifier.NEUTRAL}
_KINDS = {k.value: k for k in MechanismKind}


def _cidr(match: re.Match[str], group: int, maximum: int, term: str) -> int | None:
    value = match.group(group)
    if value is None:
        return None
    n = int(value)
    if n > maximum:
        raise ParseError(f"CIDR length /{n} out of range 0-{maximum} in {term!r}")
    return n


def _parse_mechanism(term: str) -> Mechanism:
    m = _DIRECTIVE.fullmatch(term)
    if m is None:
        raise ParseError(f"unknown term {term!r}")
    qualifier = _QUALIFIERS[m.group(1)]
    kind = _KINDS.get(m.group(2).lower())
    if kind is None:
        raise ParseError(f"unknown mechanism {m.group(2)!r} in {term!r}")
    rest = m.group(3)

    if kind is MechanismKind.ALL:
        # all = "all"
        if rest:
            raise ParseError(f"'all' takes no argument: {term!r}")
        return Mechanism(text=term, qualifier=qualifier, kind=kind)

    if kind in (MechanismKind.INCLUDE, MechanismKind.EXISTS):
        # include = "include" ":" domain-spec ; exists = "exists" ":" domain-spec
        if not rest.startswith(":"):
            raise ParseError(f"{kind} requires ':domain-spec': {term!r}")
        return Mechanism(text=term, qualifier=qualifier, kind=kind,
                         domain_spec=parse_domain_spec(rest[1:]))

    if kind is MechanismKind.PTR:
        # ptr = "ptr" [ ":" domain-spec ]
        if not rest:
            return Mechanism(text=term, qualifier=qualifier, kind=kind)
        if not rest.startswith(":"):
            raise ParseError(f"malformed ptr mechanism {term!r}")
        return Mechanism(text=term, qualifier=qualifier, kind=kind,
                         domain_spec=parse_domain_spec(rest[1:]))

    if kind in (MechanismKind.A, MechanismKind.MX):
        # a  = "a"  [ ":" domain-spec ] [ dual-cidr-length ]
        # mx = "mx" [ ":" domain-spec ] [ dual-cidr-length ]
        c = _DUAL_CIDR.search(rest)
        assert c is not None  # the pattern can match the empty string at the end
        cidr4 = _cidr(c, 1, 32, term)
        cidr6 = _cidr(c, 2, 128, term)
        head = rest[: c.start()]
        spec = None
        if head:
            if not head.startswith(":"):
                raise ParseError(f"malformed {kind} mechanism {term!r}")
            spec = parse_domain_spec(head[1:])
        return Mechanism(text=term, qualifier=qualifier, kind=kind, domain_spec=spec,
                         cidr4=32 if cidr4 is None else cidr4,
                         cidr6=128 if cidr6 is None else cidr6)

    if kind is MechanismKind.IP4:
        # ip4 = "ip4" ":" ip4-network [ ip4-cidr-length ]
        if not rest.startswith(":"):
            raise ParseError(f"ip4 requires ':address': {term!r}")
        arg = rest[1:]
        c = _IP4_CIDR.search(arg)
        length = 32
        if c is not None:
            length = _cidr(c, 1, 32, term) or 0
            arg = arg[: c.start()]
        if _IP4_NETWORK.match(arg) is None:
            raise ParseError(f"invalid IPv4 address in {term!r}")
        return _ip_mechanism(term, qualifier, kind,
                             ipaddress.IPv4Network(f"{arg}/{length}", strict=False))

    # ip6 = "ip6" ":" ip6-network [ ip6-cidr-length ]
    if not rest.startswith(":"):
        raise ParseError(f"ip6 requires ':address': {term!r}")
    arg = rest[1:]
    c = _IP6_CIDR.search(arg)
    length = 128
    if c is not None:
        length = _cidr(c, 1, 128, term) or 0
        arg = arg[: c.start()]
    if _IP6_CHARS.match(arg) is None:
        raise ParseError(f"invalid IPv6 address in {term!r}")
    try:
        address = ipaddress.IPv6Address(arg)
    except ValueError:
        raise ParseError(f"invalid IPv6 address in {term!r}") from None
    return _ip_mechanism(term, qualifier, kind,
                         ipaddress.IPv6Network(f"{address}/{length}", strict=False))


def parse_record(text: str) -> SPFRecord:
    """Parse one selected SPF record (already known to start with ``v=spf1``).

    Raises :class:`ParseError` on any syntax error: RFC 7208 §4.6 "If there are any syntax
    errors anywhere in the record, check_host() returns immediately with the result
    "permerror", without further interpretation."
    """
    result = _parse_cached(text)
    if isinstance(result, ParseError):
        raise result
    return result


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str) -> SPFRecord | ParseError:
    try:
        return _parse_uncached(text)
    except ParseError as exc:
        return exc


def _parse_uncached(text: str) -> SPFRecord:
    if len(text) > limits.SPF_RECORD_MAX:
        raise ParseError(f"SPF record longer than {limits.SPF_RECORD_MAX} characters")
    # record = version terms *SP ; version = "v=spf1"
    if text[:6].lower() != "v=spf1" or (len(text) > 6 and text[6] != " "):
        raise ParseError("record does not start with 'v=spf1'")
    mechanisms: list[Mechanism] = []
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    unknown: list[tuple[str, str]] = []
    # terms = *( 1*SP ( directive / modifier ) ): split on SP only (§4.6.1: no other
    # whitespace separates terms); empty pieces are runs of spaces.
    for term in text[6:].split(" "):
        if not term:
            continue
        mod = _MODIFIER.fullmatch(term)
        if mod is not None:
            name, value = mod.group(1).lower(), mod.group(2)
            if name == "redirect":
                # §6: "The modifiers defined in this document ("redirect" and "exp") MAY
                # appear anywhere in the record, but SHOULD appear at the end, after all
                # mechanisms. [...] these two modifiers MUST NOT appear in a record more
                # than once each. If they do, then check_host() exits with a result of
                # "permerror"."
                if redirect is not None:
                    raise ParseError("redirect= appears more than once")
                redirect = parse_domain_spec(value)
            elif name == "exp":
                if explanation is not None:
                    raise ParseError("exp= appears more than once")
                explanation = parse_domain_spec(value)
            else:
                # §6: "Unrecognized modifiers MUST be ignored", but their syntax counts.
                parse_macro_string(value)
                unknown.append((name, value))
            continue
        mechanisms.append(_parse_mechanism(term))
    return SPFRecord(text=text, mechanisms=tuple(mechanisms), redirect=redirect,
                     explanation=explanation, unknown_modifiers=tuple(unknown))
