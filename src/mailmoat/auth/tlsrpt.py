"""SMTP TLS Reporting policy records, RFC 8460 §3 (layer L2, pure over an injected resolver).

RFC 8460 §3::

    tlsrpt-record    = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    field-delim      = *WSP ";" *WSP
    tlsrpt-field     = tlsrpt-rua /        ; Note: Field MUST appear once.
                       tlsrpt-extension
    tlsrpt-version   = %s"v=TLSRPTv1"
    tlsrpt-rua       = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
    tlsrpt-uri       = URI                 ; "mailto:" or "https:" (§3 rua)
    tlsrpt-extension = tlsrpt-ext-name "=" tlsrpt-ext-value
    tlsrpt-ext-name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)

§3: "If multiple TXT records for "_smtp._tls" are returned by the resolver, records that do
not begin with "v=TLSRPTv1;" are discarded. If the number of resulting records is not one,
senders MUST assume the recipient domain does not implement TLSRPT."

SECURITY: records come from DNS (untrusted): bounded by ``limits.MAIL_POLICY_RECORD_MAX``
octets (longer: :class:`~mailmoat.errors.ParseError`), printable ASCII only, at most
``limits.TLSRPT_MAX_REPORT_URIS`` URIs kept; split and anchored regexes only (linear). URIs are
only parsed, never fetched or mailed here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mailmoat import limits
from mailmoat.errors import DNSError, DNSTemporaryError, ParseError
from mailmoat.resolver import TXT, NoData, NXDomain, Resolver, RRType

__all__ = [
    "TLSRPTLookup",
    "TLSRPTRecord",
    "TLSRPTStatus",
    "lookup_tlsrpt",
    "parse_tlsrpt",
    "select_tlsrpt",
]

_PREFIX: Final = b"v=TLSRPTv1;"
_WSP: Final = " \t"
_EXT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,31}")
_EXT_VALUE: Final = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# RFC 3986 URI, loosely: scheme ":" then characters without WSP, "," or ";" (§3: "commas
# (ASCII 0x2C) and semicolons (ASCII 0x3B) [...] MUST be encoded").
_URI: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):(?P<rest>[\x21-\x2b\x2d-\x3a"
                         r"\x3c-\x7e]+)")
_MAILTO: Final = re.compile(r"[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSRPTRecord:
    """A parsed record. ``rua`` keeps the mailto:/https: URIs in order; ``unsupported`` the
    URIs of other schemes (ignored by reporters); ``extensions`` unknown fields."""

    text: str
    rua: tuple[str, ...]
    unsupported: tuple[str, ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


def parse_tlsrpt(record: bytes | str) -> TLSRPTRecord:
    """Parse one ``_smtp._tls`` TXT record (strings joined). Raises :class:`ParseError`."""
    if len(record) > limits.MAIL_POLICY_RECORD_MAX:
        raise ParseError(f"TLS-RPT record longer than {limits.MAIL_POLICY_RECORD_MAX} octets")
    raw = record.encode("latin-1", "replace") if isinstance(record, str) else record
    if any(not 0x20 <= b <= 0x7E and b != 0x09 for b in raw):
        raise ParseError("TLS-RPT record contains octets outside printable ASCII")
    text = raw.decode("ascii")
    fields = text.split(";")
    if fields[0].rstrip(_WSP) != "v=TLSRPTv1":
        raise ParseError("TLS-RPT record does not start with v=TLSRPTv1 (RFC 8460 §3)")
    rest = fields[1:]
    if rest and not rest[-1].strip(_WSP):
        rest = rest[:-1]
    rua: list[str] | None = None
    unsupported: list[str] = []
    extensions: list[tuple[str, str]] = []
    warnings: list[str] = []
    for raw_field in rest:
        field = raw_field.strip(_WSP)
        name, eq, value = field.partition("=")
        if not eq:
            raise ParseError(f"TLS-RPT field {field[:40]!r} is not name=value")
        if name == "rua":
            # "Field MUST appear once."
            if rua is not None:
                raise ParseError("TLS-RPT record has rua= more than once")
            rua = []
            for item in value.split(","):
                uri = item.strip(_WSP)
                match = _URI.fullmatch(uri)
                if match is None:
                    raise ParseError(f"TLS-RPT rua {uri[:60]!r} is not a URI")
                scheme = match.group("scheme").lower()
                if scheme == "mailto" and not _MAILTO.fullmatch(match.group("rest")):
                    raise ParseError(f"TLS-RPT rua {uri[:60]!r} is not a mailto: address")
                if scheme == "https" and not match.group("rest").startswith("//"):
                    raise ParseError(f"TLS-RPT rua {uri[:60]!r} is not an https:// URL")
                if scheme not in ("mailto", "https"):
                    unsupported.append(uri)
                    warnings.append(f"rua {uri[:60]!r}: only mailto: and https: are defined")
                    continue
                if len(rua) >= limits.TLSRPT_MAX_REPORT_URIS:
                    warnings.append(f"more than {limits.TLSRPT_MAX_REPORT_URIS} rua URIs; "
                                    "rest ignored")
                    break
                rua.append(uri)
        elif _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value):
            extensions.append((name, value))
        else:
            raise ParseError(f"TLS-RPT field {field[:40]!r} is not a valid extension")
    if rua is None:
        raise ParseError("TLS-RPT record has no rua= field (RFC 8460 §3: it MUST appear)")
    if not rua:
        raise ParseError("TLS-RPT record has no mailto: or https: reporting URI")
    return TLSRPTRecord(text=text, rua=tuple(rua), unsupported=tuple(unsupported),
                        extensions=tuple(extensions), warnings=tuple(warnings))


class TLSRPTStatus(enum.StrEnum):
    FOUND = "found"
    NONE = "none"
    MULTIPLE = "multiple"
    INVALID = "invalid"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSRPTLookup:
    domain: str
    status: TLSRPTStatus
    record: TLSRPTRecord | None = None
    problem: str | None = None


def select_tlsrpt(domain: str, records: Sequence[TXT]) -> TLSRPTLookup:
    """§3 selection (see the module docstring)."""
    candidates = [t.joined for t in records[: limits.MAIL_POLICY_MAX_TXT_RECORDS]
                  if t.joined.startswith(_PREFIX)]
    if not candidates:
        return TLSRPTLookup(domain=domain, status=TLSRPTStatus.NONE,
                            problem="no TXT record starting with v=TLSRPTv1;")
    if len(candidates) > 1:
        return TLSRPTLookup(domain=domain, status=TLSRPTStatus.MULTIPLE,
                            problem=f"{len(candidates)} v=TLSRPTv1 records (exactly one allowed)")
    try:
        record = parse_tlsrpt(candidates[0])
    except ParseError as exc:
        return TLSRPTLookup(domain=domain, status=TLSRPTStatus.INVALID, problem=str(exc))
    return TLSRPTLookup(domain=domain, status=TLSRPTStatus.FOUND, record=record)


async def lookup_tlsrpt(resolver: Resolver, domain: str) -> TLSRPTLookup:
    """Ask ``_smtp._tls.<domain>`` TXT (§3) and select the record; never raises for DNS."""
    name = f"_smtp._tls.{domain.rstrip('.')}"
    try:
        answer = await resolver.resolve(name, RRType.TXT)
    except (NXDomain, NoData):
        return TLSRPTLookup(domain=domain, status=TLSRPTStatus.NONE, problem=f"no TXT at {name}")
    except DNSTemporaryError as exc:
        return TLSRPTLookup(domain=domain, status=TLSRPTStatus.TEMPERROR, problem=str(exc))
    except DNSError as exc:
        return TLSRPTLookup(domain=domain, status=TLSRPTStatus.NONE, problem=str(exc))
    return select_tlsrpt(domain, [r for r in answer.records if isinstance(r, TXT)])
