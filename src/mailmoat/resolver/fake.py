"""An in-memory :class:`~mailmoat.resolver.Resolver` loaded from zone data (layer L1, no I/O).

Used by tests, conformance runners and offline evaluation. It answers the way a recursive
resolver in front of an authoritative server would:

* names are case-insensitive (RFC 4343) and the trailing root dot is ignored;
* CNAMEs are followed inside the fake zone (RFC 1034 §3.6.2), and the answer carries
  ``canonical_name`` and the smallest TTL of the chain; a query *for* CNAME is not followed;
* a CNAME loop, or a chain longer than :data:`~mailmoat.limits.DNS_MAX_CNAME_CHAIN`, raises
  :class:`~mailmoat.errors.DNSPermanentError`: RFC 1034 §3.6.2 says "CNAME chains should be
  followed and CNAME loops signalled as an error"; a loop in the data does not heal on retry,
  so it is permanent here. (A real recursive resolver usually answers SERVFAIL instead, which
  :mod:`mailmoat.net.dns` reports as temporary; SPF treats both as "skip this name", RFC 7208
  §5.5.)
* a name absent from the data raises :class:`NXDomain`; a name present without records of the
  type asked — or an *empty non-terminal*, a name that only has names below it (RFC 8020 §2,
  RFC 4592 §2.2.2) — raises :class:`NoData`;
* a name that cannot be asked at all (empty label, label over 63 octets, name over 255 octets;
  RFC 1035 §2.3.4) raises :class:`~mailmoat.errors.DNSPermanentError` and is *not* recorded in
  :attr:`FakeResolver.queries`, because no question would reach the wire;
* :meth:`FakeResolver.set_timeout` / :meth:`FakeResolver.set_servfail` make every question about
  a name raise :class:`~mailmoat.errors.DNSTemporaryError`.

Every question that would be sent is appended to :attr:`FakeResolver.queries` as
``(normalised name, RRType)`` — once per :meth:`~FakeResolver.resolve` call, CNAME chains
included (a recursive resolver answers the chain in one response).

SECURITY: the zone data is trusted test/configuration input, but the *questions* are not: they
are normalised and bounded by :func:`mailmoat.resolver._names.normalize_name`, CNAME chains are
bounded, and answers are never of another type than asked. The zone-text parser is linear in
its input, refuses character-strings over 255 octets (RFC 1035 §3.3) and ``$INCLUDE``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from mailmoat import limits
from mailmoat.errors import DNSError, DNSPermanentError, DNSTemporaryError
from mailmoat.resolver._names import normalize_name
from mailmoat.resolver._types import MX, TLSA, TXT, Answer, NoData, NXDomain, Record, RRType

__all__ = ["DEFAULT_TTL", "FakeResolver"]

#: TTL given to records added without one.
DEFAULT_TTL: Final = 300
#: RFC 1035 §3.3: a <character-string> is a length octet followed by at most 255 octets.
_CHARACTER_STRING_MAX: Final = 255

#: A memoised outcome of one question: the Answer, or a factory of the error to raise.
_Outcome = Answer | Callable[[], DNSError]

_TIMEOUT: Final = "timeout"
_SERVFAIL: Final = "servfail"


@dataclass(slots=True)
class _Node:
    """Everything the fake knows about one owner name."""

    rrsets: dict[RRType, list[Record]] = field(default_factory=dict)
    ttls: dict[RRType, int] = field(default_factory=dict)
    #: Types we store only to make the name exist (SOA, NS, ...), never answered.
    other_types: set[str] = field(default_factory=set)
    #: Type-99 SPF records (RFC 4408 §3.1.1; removed by RFC 7208 §3.1): kept, never answered.
    spf99: list[TXT] = field(default_factory=list)
    failure: str | None = None
    #: With a failure: the types still answered (the OpenSPF suite's "records before TIMEOUT").
    answered_despite_failure: frozenset[RRType] = frozenset()
    authenticated: bool = False


def _checked_name(name: str) -> str:
    """Normalise a name from zone data; bad data is the caller's bug, so ValueError."""
    try:
        return normalize_name(name)
    except DNSPermanentError as exc:
        raise ValueError(str(exc)) from None


def _yaml_bytes(value: str | bytes) -> bytes:
    r"""Octets of a string from the OpenSPF YAML.

    The suite writes raw octets as ``\xNN`` escapes (``"\xEF\xBB\xBFgarbage"`` is a UTF-8 BOM),
    so a string whose characters are all below U+0100 is taken octet-for-octet (Latin-1);
    anything else is UTF-8.
    """
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class FakeResolver:
    """An in-memory resolver; see the module docstring for its exact behaviour."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}
        #: Proper ancestors of every stored name: they exist (empty non-terminals).
        self._ancestors: set[str] = set()
        #: Every question asked, in order: ``(normalised name, type)``.
        self.queries: list[tuple[str, RRType]] = []
        #: What each question about an existing name gives, computed once: bounded by the zone
        #: (names stored and their ancestors, times the types). Cleared by any change.
        self._outcomes: dict[tuple[str, RRType], _Outcome] = {}

    # ----------------------------------------------------------------- building the zone ---

    def _node(self, name: str) -> _Node:
        """The node of ``name``, created if new. Every change to the zone goes through here
        (callers mutate the node it returns), so the memoised outcomes are dropped."""
        self._outcomes.clear()
        key = _checked_name(name)
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = _Node()
            labels = key.split(".") if key else []
            for i in range(1, len(labels)):
                self._ancestors.add(".".join(labels[i:]))
            if key:
                self._ancestors.add("")
        return node

    def add(
        self, name: str, record: Record, *, rrtype: RRType | None = None, ttl: int | None = None
    ) -> None:
        """Add one record. ``rrtype`` is needed only for a ``str`` (PTR or CNAME) record.

        RFC 2181 §5: an RRset holds no duplicates and one TTL (the smallest given is kept).
        RFC 1034 §3.6.2, RFC 2181 §10.1: a CNAME is alone at its name, and there is one.
        """
        kind = _kind_of(record, rrtype)
        if isinstance(record, str):
            record = _checked_name(record)
        if ttl is not None and not 0 <= ttl <= 2**31 - 1:  # RFC 2181 §8
            raise ValueError(f"TTL {ttl} out of range")
        node = self._node(name)
        if kind is RRType.CNAME and (node.rrsets.keys() - {RRType.CNAME} or node.other_types):
            raise ValueError(f"{name}: CNAME and other data (RFC 1034 §3.6.2)")
        if kind is not RRType.CNAME and RRType.CNAME in node.rrsets:
            raise ValueError(f"{name}: other data beside a CNAME (RFC 1034 §3.6.2)")
        rrset = node.rrsets.setdefault(kind, [])
        if kind is RRType.CNAME and rrset and rrset[0] != record:
            raise ValueError(f"{name}: more than one CNAME (RFC 2181 §10.1)")
        if record not in rrset:
            rrset.append(record)
        given = DEFAULT_TTL if ttl is None else ttl
        node.ttls[kind] = min(node.ttls.get(kind, given), given)

    def add_txt(self, name: str, *strings: str | bytes, ttl: int | None = None) -> None:
        """Add one TXT record made of ``strings`` (``str`` is UTF-8).

        A string longer than 255 octets is split into 255-octet character-strings, as a
        publisher must (RFC 1035 §3.3; RFC 7208 §3.3 joins them back without separator).
        """
        parts: list[bytes] = []
        for s in strings:
            raw = s.encode("utf-8") if isinstance(s, str) else s
            parts.extend(raw[i : i + _CHARACTER_STRING_MAX]
                         for i in range(0, len(raw), _CHARACTER_STRING_MAX))
            if not raw:
                parts.append(b"")
        self.add(name, TXT(strings=tuple(parts)), ttl=ttl)

    def add_a(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        for address in addresses:
            self.add(name, ipaddress.IPv4Address(address), ttl=ttl)

    def add_aaaa(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        for address in addresses:
            self.add(name, ipaddress.IPv6Address(address), ttl=ttl)

    def add_mx(self, name: str, preference: int, exchange: str, *, ttl: int | None = None) -> None:
        if not 0 <= preference <= 0xFFFF:
            raise ValueError(f"MX preference {preference} out of range (RFC 1035 §3.3.9)")
        self.add(name, MX(preference=preference, exchange=_checked_name(exchange)), ttl=ttl)

    def add_ptr(self, name: str, target: str, *, ttl: int | None = None) -> None:
        self.add(name, target, rrtype=RRType.PTR, ttl=ttl)

    def add_cname(self, name: str, target: str, *, ttl: int | None = None) -> None:
        self.add(name, target, rrtype=RRType.CNAME, ttl=ttl)

    def add_tlsa(
        self, name: str, usage: int, selector: int, mtype: int, data: bytes,
        *, ttl: int | None = None,
    ) -> None:
        if not all(0 <= v <= 0xFF for v in (usage, selector, mtype)):
            raise ValueError("TLSA fields are octets (RFC 6698 §2.1)")
        self.add(name, TLSA(usage=usage, selector=selector, mtype=mtype, data=data), ttl=ttl)

    def add_spf99(self, name: str, *strings: str | bytes) -> None:
        """Store a type-99 SPF record: it makes the name exist but is never answered."""
        raw = tuple(s.encode("utf-8") if isinstance(s, str) else s for s in strings)
        self._node(name).spf99.append(TXT(strings=raw))

    def add_other(self, name: str, rrtype: str) -> None:
        """Record that ``name`` owns data of a type we do not model (SOA, NS, ...)."""
        node = self._node(name)
        if RRType.CNAME in node.rrsets:
            raise ValueError(f"{name}: other data beside a CNAME (RFC 1034 §3.6.2)")
        node.other_types.add(rrtype.upper())

    def set_timeout(self, name: str) -> None:
        """Every question about ``name`` raises :class:`DNSTemporaryError` (a timeout)."""
        node = self._node(name)
        node.failure, node.answered_despite_failure = _TIMEOUT, frozenset()

    def set_servfail(self, name: str) -> None:
        """Every question about ``name`` raises :class:`DNSTemporaryError` (SERVFAIL)."""
        node = self._node(name)
        node.failure, node.answered_despite_failure = _SERVFAIL, frozenset()

    def set_authenticated(self, name: str, value: bool = True) -> None:
        """Mark ``name``'s data DNSSEC-validated: answers whose whole chain is marked carry
        ``authenticated=True`` (the AD bit, RFC 4035 §3.2.3)."""
        self._node(name).authenticated = value

    def spf99_records(self, name: str) -> tuple[TXT, ...]:
        """The type-99 SPF records stored at ``name`` (for inspection only)."""
        node = self._nodes.get(_checked_name(name))
        return tuple(node.spf99) if node else ()

    # ------------------------------------------------------------------------- loaders ---

    @classmethod
    def from_pyspf_zonedata(
        cls, zonedata: Mapping[str, Sequence[object]], *, spf_as_txt: bool = True
    ) -> FakeResolver:
        """Load the ``zonedata`` of one OpenSPF test-suite scenario (rfc7208-tests.yml).

        Shapes: ``{TXT: "s"}``, ``{TXT: ["s1", "s2"]}`` (one record, several strings),
        ``{TXT: NONE}`` (no TXT record), ``{SPF: ...}``, ``{A: ...}``, ``{AAAA: ...}``,
        ``{MX: [preference, host]}``, ``{PTR: host}``, ``{CNAME: host}``, and the bare string
        ``TIMEOUT``.

        The suite's conventions (its header, and pyspf's driver ``test/testspf.py``):

        * type-99 ``SPF`` records are never answered (RFC 7208 §3.1 removed the type), but
          "other sections rely on auto-magic duplication of SPF to TXT records (by test suite
          drivers)": when a name lists no ``TXT`` entry at all (``TXT: NONE`` counts as one),
          each of its ``SPF`` records is also published as TXT. ``spf_as_txt=False`` turns
          this off.
        * ``TIMEOUT``: questions about the name time out, except for types that have records
          listed *before* the ``TIMEOUT`` entry; entries after it are ignored.
        * strings whose characters are all below U+0100 are octets (``"\\x80"`` is 0x80).
        """
        fake = cls()
        for name, entries in zonedata.items():
            if isinstance(entries, str | bytes) or not isinstance(entries, Sequence):
                raise ValueError(f"{name}: zonedata entries must be a list")
            node = fake._node(name)
            has_txt = any(isinstance(e, Mapping) and "TXT" in e for e in entries)
            generated: list[TXT] = []
            listed: set[RRType] = set()
            for entry in entries:
                if entry == "TIMEOUT":
                    node.failure = _TIMEOUT
                    node.answered_despite_failure = frozenset(listed)
                    break
                if not isinstance(entry, Mapping):
                    raise ValueError(f"{name}: unexpected zonedata entry {entry!r}")
                for key, value in entry.items():
                    if value == "NONE":
                        continue
                    kind = str(key).upper()
                    if kind == "SPF":
                        txt = _pyspf_txt(name, value)
                        node.spf99.append(txt)
                        if spf_as_txt and not has_txt:
                            generated.append(txt)
                        continue
                    fake._add_pyspf(name, kind, value)
                    listed.add(RRType(kind))
            for txt in generated:
                fake.add(name, txt)
        return fake

    def _add_pyspf(self, name: str, kind: str, value: object) -> None:
        if kind == "TXT":
            self.add(name, _pyspf_txt(name, value))
        elif kind == "A" and isinstance(value, str):
            self.add(name, ipaddress.IPv4Address(value))
        elif kind == "AAAA" and isinstance(value, str):
            self.add(name, ipaddress.IPv6Address(value))
        elif (kind == "MX" and isinstance(value, Sequence) and len(value) == 2
              and isinstance(value[0], int) and isinstance(value[1], str)):
            self.add_mx(name, value[0], value[1])
        elif kind == "PTR" and isinstance(value, str):
            self.add_ptr(name, value)
        elif kind == "CNAME" and isinstance(value, str):
            self.add_cname(name, value)
        else:
            raise ValueError(f"{name}: unsupported zonedata record {kind}: {value!r}")

    @classmethod
    def from_zone_text(cls, text: str, *, origin: str | None = None) -> FakeResolver:
        """Load a master file (RFC 1035 §5), the subset test zones use.

        Supported: ``$ORIGIN``, ``$TTL``, ``@``, relative and absolute owner names, a blank
        owner (the previous one), ``;`` comments, ``( )`` continuation, quoted strings with
        ``\\X`` and ``\\DDD`` escapes, TTLs with units (``1h30m``), class ``IN``; record types
        A, AAAA, MX, TXT, PTR, CNAME, TLSA, SPF (kept as type 99, never answered) and
        existence-only types (SOA, NS, CAA, SRV, DS, ...). Not supported (ValueError):
        ``$INCLUDE``, other classes, escapes in names, wildcards (an ``*`` owner is refused).
        """
        fake = cls()
        fake.load_zone_text(text, origin=origin)
        return fake

    @classmethod
    def from_zones(cls, zones: Mapping[str, str]) -> FakeResolver:
        """Load several master files, ``zone name -> text``; each zone name is the default
        ``$ORIGIN`` of its text (as an authoritative server such as knot loads them)."""
        fake = cls()
        for zone, text in zones.items():
            fake.load_zone_text(text, origin=zone)
        return fake

    def load_zone_text(self, text: str, *, origin: str | None = None) -> None:
        """Add the records of a master file to this resolver (see :meth:`from_zone_text`)."""
        _ZoneLoader(self, origin).load(text)

    # ------------------------------------------------------------------------ resolving ---

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        """Answer from the stored data (see the module docstring for every rule)."""
        if rrtype.__class__ is not RRType:
            rrtype = RRType(rrtype)
        # A name stored in the zone is already normalised (normalize_name is idempotent), so
        # asking it exactly as stored skips normalisation.
        qname = name if name in self._nodes else normalize_name(name)
        self.queries.append((qname, rrtype))
        key = (qname, rrtype)
        outcome = self._outcomes.get(key)
        if outcome is None:
            if qname not in self._nodes and qname not in self._ancestors:
                # Not memoised: the names that do not exist are unbounded, the zone is not.
                raise NXDomain(qname)
            outcome = self._outcomes[key] = self._lookup(qname, rrtype)
        if isinstance(outcome, Answer):
            return outcome
        raise outcome()

    def _lookup(self, qname: str, rrtype: RRType) -> _Outcome:
        """What asking ``(qname, rrtype)`` gives: the Answer (frozen, so built once and shared)
        or a factory of the exception to raise (a fresh one each time it is raised)."""
        current = qname
        seen = {qname}
        ttl: int | None = None
        authenticated = True
        for _ in range(limits.DNS_MAX_CNAME_CHAIN + 1):
            node = self._nodes.get(current)
            if node is None:
                if current in self._ancestors:
                    return partial(NoData, qname, rrtype)
                return partial(NXDomain, qname)
            if node.failure is not None and rrtype not in node.answered_despite_failure:
                what = "timed out" if node.failure == _TIMEOUT else "SERVFAIL"
                return partial(DNSTemporaryError, f"{current} {rrtype}: {what}")
            authenticated = authenticated and node.authenticated
            cname = node.rrsets.get(RRType.CNAME)
            if cname and rrtype is not RRType.CNAME:
                ttl = _min_ttl(ttl, node.ttls[RRType.CNAME])
                target = cname[0]
                assert isinstance(target, str)
                if target in seen:
                    return partial(DNSPermanentError,
                                   f"{qname} {rrtype}: CNAME loop at {current}")
                seen.add(target)
                current = target
                continue
            records = node.rrsets.get(rrtype)
            if not records:
                return partial(NoData, qname, rrtype)
            return Answer(
                name=qname,
                rrtype=rrtype,
                records=tuple(records),
                ttl=_min_ttl(ttl, node.ttls[rrtype]),
                canonical_name=current,
                authenticated=authenticated,
            )
        return partial(
            DNSPermanentError,
            f"{qname} {rrtype}: CNAME chain longer than {limits.DNS_MAX_CNAME_CHAIN}",
        )


def _min_ttl(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _kind_of(record: Record, rrtype: RRType | None) -> RRType:
    """The RRType a record value belongs to (``str`` needs ``rrtype``: PTR or CNAME)."""
    inferred: RRType | None
    if isinstance(record, ipaddress.IPv4Address):
        inferred = RRType.A
    elif isinstance(record, ipaddress.IPv6Address):
        inferred = RRType.AAAA
    elif isinstance(record, MX):
        inferred = RRType.MX
    elif isinstance(record, TXT):
        inferred = RRType.TXT
    elif isinstance(record, TLSA):
        inferred = RRType.TLSA
    else:
        if rrtype not in (RRType.PTR, RRType.CNAME):
            raise ValueError("a str record needs rrtype=RRType.PTR or RRType.CNAME")
        return rrtype
    if rrtype is not None and rrtype is not inferred:
        raise ValueError(f"a {type(record).__name__} record is not of type {rrtype}")
    return inferred


def _pyspf_txt(name: str, value: object) -> TXT:
    if isinstance(value, str | bytes):
        return TXT(strings=(_yaml_bytes(value),))
    if isinstance(value, Sequence):
        parts: list[bytes] = []
        for item in value:
            if not isinstance(item, str | bytes):
                break
            parts.append(_yaml_bytes(item))
        else:
            return TXT(strings=tuple(parts))
    raise ValueError(f"{name}: TXT/SPF value must be a string or a list of strings: {value!r}")


# ------------------------------------------------------------------ master-file subset ---

#: Types whose data we do not model but whose presence makes a name exist.
_EXISTENCE_ONLY: Final = frozenset({
    "SOA", "NS", "CAA", "SRV", "HINFO", "DS", "DNSKEY", "CDS", "CDNSKEY", "NSEC", "NSEC3",
    "NSEC3PARAM", "RRSIG", "SSHFP", "URI", "SVCB", "HTTPS", "NAPTR", "LOC", "RP", "OPENPGPKEY",
    "SMIMEA", "ZONEMD",
})
#: RFC 1035 §5.1 TTL, with the BIND-style units every zone tool accepts.
_TTL_RE: Final = re.compile(r"(?:[0-9]+[smhdw]?)+", re.IGNORECASE)
_TTL_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(slots=True, frozen=True)
class _Token:
    value: bytes
    quoted: bool
    escaped: bool


def _parse_ttl(text: str) -> int:
    total = 0
    for number, unit in re.findall(r"([0-9]+)([smhdw]?)", text, re.IGNORECASE):
        total += int(number) * _TTL_UNIT.get(unit.lower(), 1)
    if total > 2**31 - 1:  # RFC 2181 §8
        raise ValueError(f"TTL {text} out of range")
    return total


def _entries(text: str) -> Iterator[tuple[int, bool, list[_Token]]]:
    """Split master-file text into entries: (line number, blank owner, tokens).

    One pass over the octets (linear time): comments, parentheses, quotes and escapes.
    """
    data = text.encode("utf-8")
    n = len(data)
    i = 0
    line = 1
    depth = 0
    tokens: list[_Token] = []
    start_line = 1
    blank_owner = False
    at_line_start = True
    delimiters = b" \t\r\n;()\""
    while i < n:
        c = data[i]
        if at_line_start and depth == 0 and not tokens:
            start_line = line
            blank_owner = c in b" \t"
        at_line_start = False
        if c == 0x0A:
            line += 1
            at_line_start = True
            if depth == 0 and tokens:
                yield start_line, blank_owner, tokens
                tokens = []
            i += 1
        elif c in b" \t\r":
            i += 1
        elif c == 0x3B:  # ';' comment to end of line
            end = data.find(b"\n", i)
            i = n if end < 0 else end
        elif c == 0x28:  # '('
            depth += 1
            i += 1
        elif c == 0x29:  # ')'
            depth -= 1
            if depth < 0:
                raise ValueError(f"line {line}: unbalanced ')'")
            i += 1
        else:
            quoted = c == 0x22
            if quoted:
                i += 1
            out = bytearray()
            escaped = False
            while i < n:
                c = data[i]
                if quoted and c == 0x22:
                    i += 1
                    break
                if not quoted and c in delimiters:
                    break
                if c == 0x0A:
                    raise ValueError(f"line {line}: newline inside a quoted string")
                if c == 0x5C:  # backslash: \DDD or \X (RFC 1035 §5.1)
                    escaped = True
                    digits = data[i + 1 : i + 4]
                    if len(digits) == 3 and digits.isdigit():
                        value = int(digits)
                        if value > 255:
                            raise ValueError(f"line {line}: bad escape \\{digits.decode()}")
                        out.append(value)
                        i += 4
                    elif i + 1 < n and data[i + 1] != 0x0A:
                        out.append(data[i + 1])
                        i += 2
                    else:
                        raise ValueError(f"line {line}: dangling backslash")
                    continue
                out.append(c)
                i += 1
            else:
                if quoted:
                    raise ValueError(f"line {line}: unterminated quoted string")
            tokens.append(_Token(bytes(out), quoted, escaped))
    if depth != 0:
        raise ValueError(f"line {line}: unbalanced '('")
    if tokens:
        yield start_line, blank_owner, tokens


class _ZoneLoader:
    def __init__(self, fake: FakeResolver, origin: str | None) -> None:
        self.fake = fake
        self.origin = None if origin is None else _checked_name(origin)
        self.default_ttl: int | None = None
        self.last_ttl: int | None = None
        self.owner: str | None = None

    def name(self, token: _Token, line: int) -> str:
        if token.quoted or token.escaped:
            raise ValueError(f"line {line}: quotes and escapes in names are not supported")
        text = token.value.decode("utf-8")
        if text == "@":
            if self.origin is None:
                raise ValueError(f"line {line}: '@' without $ORIGIN")
            return self.origin
        if text.endswith("."):
            return _checked_name(text)
        if self.origin is None:
            raise ValueError(f"line {line}: relative name {text!r} without $ORIGIN")
        return _checked_name(f"{text}.{self.origin}" if self.origin else text)

    def load(self, text: str) -> None:
        for line, blank_owner, tokens in _entries(text):
            try:
                self.entry(line, blank_owner, tokens)
            except (ValueError, ipaddress.AddressValueError) as exc:
                message = str(exc)
                raise ValueError(message if message.startswith("line ") else
                                 f"line {line}: {message}") from None

    def entry(self, line: int, blank_owner: bool, tokens: list[_Token]) -> None:
        first = tokens[0].value.decode("utf-8")
        if not blank_owner and first.startswith("$"):
            directive = first.upper()
            if directive == "$ORIGIN" and len(tokens) == 2:
                self.origin = self.name(tokens[1], line)
            elif directive == "$TTL" and len(tokens) == 2:
                self.default_ttl = _parse_ttl(tokens[1].value.decode("ascii"))
            else:
                raise ValueError(f"unsupported directive {first}")
            return
        rest = list(tokens)
        if blank_owner:
            if self.owner is None:
                raise ValueError("a record without an owner name")
        else:
            if rest[0].value.startswith(b"*"):
                raise ValueError("wildcards are not supported")
            self.owner = self.name(rest.pop(0), line)
        ttl: int | None = None
        for _ in range(2):  # [ttl] [class] in either order (RFC 1035 §5.1)
            if not rest:
                break
            word = rest[0].value.decode("utf-8")
            if ttl is None and _TTL_RE.fullmatch(word):
                ttl = _parse_ttl(word)
                rest.pop(0)
            elif word.upper() == "IN":
                rest.pop(0)
            elif word.upper() in ("CH", "HS", "CS"):
                raise ValueError(f"class {word} is not supported")
        if not rest:
            raise ValueError("missing record type")
        kind = rest.pop(0).value.decode("utf-8").upper()
        if ttl is None:
            ttl = self.default_ttl if self.default_ttl is not None else self.last_ttl
        self.last_ttl = ttl
        self.record(line, self.owner, kind, rest, ttl)

    def record(self, line: int, owner: str, kind: str, rdata: list[_Token],
               ttl: int | None) -> None:
        fake = self.fake
        if kind in {"TXT", "SPF"}:
            if not rdata:
                raise ValueError(f"{kind} without character-strings")
            for token in rdata:
                if len(token.value) > _CHARACTER_STRING_MAX:
                    raise ValueError("character-string longer than 255 octets (RFC 1035 §3.3)")
            strings = tuple(t.value for t in rdata)
            if kind == "TXT":
                fake.add(owner, TXT(strings=strings), ttl=ttl)
            else:
                fake.add_spf99(owner, *strings)
            return
        words = [t.value.decode("utf-8") for t in rdata]
        if kind == "A" and len(words) == 1:
            fake.add(owner, ipaddress.IPv4Address(words[0]), ttl=ttl)
        elif kind == "AAAA" and len(words) == 1:
            fake.add(owner, ipaddress.IPv6Address(words[0]), ttl=ttl)
        elif kind == "MX" and len(words) == 2 and words[0].isdigit():
            fake.add_mx(owner, int(words[0]), self.name(rdata[1], line), ttl=ttl)
        elif kind in ("PTR", "CNAME") and len(words) == 1:
            fake.add(owner, self.name(rdata[0], line), rrtype=RRType(kind), ttl=ttl)
        elif kind == "TLSA" and len(words) >= 4 and all(w.isdigit() for w in words[:3]):
            try:
                data = bytes.fromhex("".join(words[3:]))
            except ValueError:
                raise ValueError("TLSA data is not hexadecimal") from None
            fake.add_tlsa(owner, int(words[0]), int(words[1]), int(words[2]), data, ttl=ttl)
        elif kind in _EXISTENCE_ONLY or re.fullmatch(r"TYPE[0-9]+", kind):
            fake.add_other(owner, kind)
        else:
            raise ValueError(f"cannot parse {kind} record {' '.join(words)!r}")
