"""Typed DNS answers and failures: the seam between mail policy code and DNS (layer L1).

Policy code (SPF, DKIM, DMARC, MTA-STS, DANE) asks a :class:`Resolver` and gets either an
:class:`Answer` whose records are typed values, or one of three typed failures:

* :class:`NXDomain` - the name does not exist (RFC 1035 RCODE 3);
* :class:`NoData`   - the name exists but has no records of that type (RFC 2308 §2.2);
* :class:`~mailmoat.errors.DNSTemporaryError` - timeout, SERVFAIL, network: a *temperror*,
  never to be read as "no record".

SECURITY: answers come from the network (untrusted). Implementations bound names
(``limits.DNS_NAME_MAX``), CNAME chains (``limits.DNS_MAX_CNAME_CHAIN``) and TTLs, and never
return a record of another type than asked for.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailmoat.errors import DNSError, DNSPermanentError, DNSTemporaryError

__all__ = [
    "MX",
    "TLSA",
    "TXT",
    "Answer",
    "DNSPermanentError",
    "DNSTemporaryError",
    "NXDomain",
    "NoData",
    "RRType",
    "Record",
    "Resolver",
]


class RRType(enum.StrEnum):
    """The record types mail needs."""

    A = "A"
    AAAA = "AAAA"
    MX = "MX"
    TXT = "TXT"
    PTR = "PTR"
    TLSA = "TLSA"
    CNAME = "CNAME"


@dataclass(frozen=True, slots=True, kw_only=True)
class MX:
    """An MX record (RFC 1035 §3.3.9). ``exchange`` is lower-case, without the root dot."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TXT:
    """A TXT record: its character-strings as bytes (RFC 1035 §3.3.14), kept apart.

    RFC 7208 §3.3: SPF joins the strings with no separator; :attr:`joined` gives that.
    """

    strings: tuple[bytes, ...]

    @property
    def joined(self) -> bytes:
        return b"".join(self.strings)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSA:
    """A TLSA record (RFC 6698 §2.1)."""

    usage: int
    selector: int
    mtype: int
    data: bytes


#: One record's typed value: A -> IPv4Address, AAAA -> IPv6Address, PTR/CNAME -> str
#: (lower-case, no root dot), MX -> MX, TXT -> TXT, TLSA -> TLSA.
Record = ipaddress.IPv4Address | ipaddress.IPv6Address | str | MX | TXT | TLSA


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A positive answer.

    ``name`` is the name asked; ``canonical_name`` is where CNAMEs led (equal to ``name`` when
    there was none). ``authenticated`` is the AD bit, meaningful only from a trusted local
    validating resolver (RFC 4035 §3.2.3; RFC 7672 §1.3 for DANE).
    """

    name: str
    rrtype: RRType
    records: tuple[Record, ...]
    ttl: int
    canonical_name: str
    authenticated: bool = False


class NXDomain(DNSError):
    """The name does not exist (RCODE 3)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: no such domain (NXDOMAIN)")
        self.name = name


class NoData(DNSError):
    """The name exists but has no record of the type asked (NOERROR, empty answer)."""

    def __init__(self, name: str, rrtype: RRType) -> None:
        super().__init__(f"{name}: no {rrtype} record")
        self.name = name
        self.rrtype = rrtype


@runtime_checkable
class Resolver(Protocol):
    """What mail policy code may ask of DNS.

    ``resolve`` returns an :class:`Answer` with at least one record, or raises
    :class:`NXDomain`, :class:`NoData`, :class:`DNSTemporaryError` or
    :class:`DNSPermanentError`. Names are given without the trailing root dot; case does not
    matter.
    """

    async def resolve(self, name: str, rrtype: RRType) -> Answer: ...
