"""The ``_mta-sts`` TXT record (RFC 8461 §3.1) and its discovery (§3.1, §5).

RFC 8461 §3.1 (with erratum 6285 noted: the record must begin with ``v=STSv1;``)::

    sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
    sts-field       = sts-id / sts-extension
    sts-field-delim = *WSP ";" *WSP
    sts-version     = %s"v=STSv1"
    sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
    sts-extension   = sts-ext-name "=" sts-ext-value
    sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)

SECURITY: records come from DNS (untrusted). A record longer than
``limits.MAIL_POLICY_RECORD_MAX`` octets, with octets outside printable ASCII, or not matching
the grammar is refused (:class:`~mailmoat.errors.ParseError`); at most
``limits.MAIL_POLICY_MAX_TXT_RECORDS`` records are examined. Parsing is one ``split`` and
anchored regexes without nested quantifiers: linear in the record length.
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

__all__ = ["RecordLookup", "RecordStatus", "STSRecord", "lookup_record", "parse_record",
           "select_record"]

_ID: Final = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,31}")
_EXT_VALUE: Final = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_WSP: Final = " \t"
#: §3.1: "records that do not begin with "v=STSv1;" are discarded".
_PREFIX: Final = b"v=STSv1;"


@dataclass(frozen=True, slots=True, kw_only=True)
class STSRecord:
    """A parsed ``_mta-sts`` record: the policy ``id`` and unknown extension fields."""

    id: str
    text: str
    extensions: tuple[tuple[str, str], ...] = ()


def parse_record(record: bytes | str) -> STSRecord:
    """Parse one ``_mta-sts`` TXT record (strings joined). Raises :class:`ParseError`."""
    if len(record) > limits.MAIL_POLICY_RECORD_MAX:
        raise ParseError(f"MTA-STS record longer than {limits.MAIL_POLICY_RECORD_MAX} octets")
    raw = record.encode("latin-1", "replace") if isinstance(record, str) else record
    if any(not 0x20 <= b <= 0x7E and b != 0x09 for b in raw):
        raise ParseError("MTA-STS record contains octets outside printable ASCII")
    text = raw.decode("ascii")
    fields = text.split(";")
    # sts-version = %s"v=STSv1" (case-sensitive), first.
    if fields[0].rstrip(_WSP) != "v=STSv1":
        raise ParseError("MTA-STS record does not start with v=STSv1 (RFC 8461 §3.1)")
    rest = fields[1:]
    if rest and not rest[-1].strip(_WSP):
        rest = rest[:-1]  # [sts-field-delim] at the end
    if not rest:
        raise ParseError("MTA-STS record has no id= field (RFC 8461 §3.1)")
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for raw_field in rest:
        field = raw_field.strip(_WSP)
        name, eq, value = field.partition("=")
        if not eq:
            raise ParseError(f"MTA-STS record field {field[:40]!r} is not name=value")
        if name == "id":
            # sts-id = %s"id=" 1*32(ALPHA / DIGIT)
            if not _ID.fullmatch(value):
                raise ParseError(f"MTA-STS id {value[:40]!r} is not 1-32 letters or digits")
            if record_id is not None:
                raise ParseError("MTA-STS record has id= more than once")
            record_id = value
        elif _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value):
            extensions.append((name, value))
        else:
            raise ParseError(f"MTA-STS record field {field[:40]!r} is not a valid extension")
    if record_id is None:
        raise ParseError("MTA-STS record has no id= field (RFC 8461 §3.1)")
    return STSRecord(id=record_id, text=text, extensions=tuple(extensions))


class RecordStatus(enum.StrEnum):
    FOUND = "found"
    NONE = "none"  # no record starting with v=STSv1;
    MULTIPLE = "multiple"  # §3.1: "If the number of resulting records is not one"
    INVALID = "invalid"  # the one record is syntactically invalid
    TEMPERROR = "temperror"  # DNS failure: not the same as "no record"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordLookup:
    """The outcome of discovering the ``_mta-sts`` record of a domain."""

    domain: str
    status: RecordStatus
    record: STSRecord | None = None
    problem: str | None = None

    @property
    def id(self) -> str | None:
        return self.record.id if self.record else None


def select_record(domain: str, records: Sequence[TXT]) -> RecordLookup:
    """§3.1: "If multiple TXT records for "_mta-sts" are returned by the resolver, records that
    do not begin with "v=STSv1;" are discarded. If the number of resulting records is not one,
    or if the resulting record is syntactically invalid, senders MUST assume the recipient
    domain does not have an available MTA-STS Policy"."""
    candidates = [
        txt.joined for txt in records[: limits.MAIL_POLICY_MAX_TXT_RECORDS]
        if txt.joined.startswith(_PREFIX)
    ]
    if not candidates:
        return RecordLookup(domain=domain, status=RecordStatus.NONE,
                            problem="no TXT record starting with v=STSv1;")
    if len(candidates) > 1:
        return RecordLookup(domain=domain, status=RecordStatus.MULTIPLE,
                            problem=f"{len(candidates)} v=STSv1 records (exactly one allowed)")
    try:
        record = parse_record(candidates[0])
    except ParseError as exc:
        return RecordLookup(domain=domain, status=RecordStatus.INVALID, problem=str(exc))
    return RecordLookup(domain=domain, status=RecordStatus.FOUND, record=record)


async def lookup_record(resolver: Resolver, domain: str) -> RecordLookup:
    """Ask ``_mta-sts.<domain>`` TXT (CNAMEs followed by the resolver) and select the record.
    Never raises for DNS trouble: a temporary failure is ``TEMPERROR``."""
    name = f"_mta-sts.{domain.rstrip('.')}"
    try:
        answer = await resolver.resolve(name, RRType.TXT)
    except (NXDomain, NoData):
        return RecordLookup(domain=domain, status=RecordStatus.NONE, problem=f"no TXT at {name}")
    except DNSTemporaryError as exc:
        return RecordLookup(domain=domain, status=RecordStatus.TEMPERROR, problem=str(exc))
    except DNSError as exc:
        return RecordLookup(domain=domain, status=RecordStatus.NONE, problem=str(exc))
    txts = [r for r in answer.records if isinstance(r, TXT)]
    return select_record(domain, txts)
