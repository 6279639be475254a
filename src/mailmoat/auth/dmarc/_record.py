"""DMARC policy records: RFC 7489 §6.3-6.4 and DMARCbis (RFC 9989 §4.7-4.8).

RFC 9989 §4.8 (the superset we parse; RFC 7489 §6.4 differs only where noted)::

    dmarc-record  = dmarc-version *(dmarc-sep dmarc-tag) [dmarc-sep]
    dmarc-version = "v" equals %s"DMARC1" ; case sensitive
    dmarc-sep     = *WSP ";" *WSP
    equals        = *WSP "=" *WSP
    dmarc-tag     = 1*ALPHA equals 1*dmarc-value
    dmarc-value   = %x20-3A / %x3C-7E     ; any printing characters but semicolon
    dmarc-request = "none" / "quarantine" / "reject"
    dmarc-yorn    = "y" / "n"
    dmarc-psd     = "y" / "n" / "u"
    dmarc-rors    = "r" / "s"
    dmarc-urilist = (dmarc-uri / obs-dmarc-uri) *(*WSP "," *WSP (dmarc-uri / obs-dmarc-uri))
    obs-dmarc-report-size = "!" 1*DIGIT [ "k" / "m" / "g" / "t" ]

RFC 7489 §6.4 adds ``dmarc-percent = "pct" *WSP "=" *WSP 1*3DIGIT``, ``ri`` (1*DIGIT) and
``rf`` (Keyword list), all three removed by RFC 9989 but still parsed here so RFC 7489 mode can
apply ``pct`` (§6.6.4).

How each defect is handled, and why:

* ``v`` not first, absent, or not exactly ``DMARC1``: not a DMARC record at all (RFC 7489 §6.3
  "the entire retrieved record MUST be ignored"; RFC 9989 §4.7 the same) —
  :func:`parse_record` raises :class:`~mailmoat.errors.ParseError`, discovery skips the record.
* ``p`` present with a value outside ``dmarc-request`` (or empty), and ``sp``/``np`` likewise:
  the tag is kept as *invalid* (``p_invalid`` ...). RFC 7489 §6.6.3 step 6 / RFC 9989 §4.10.1
  decide what that means at evaluation time (act as ``p=none`` if ``rua`` has a valid URI,
  else no DMARC processing).
* ``p`` absent: RFC 7489 §6.3 makes it REQUIRED (so the §6.6.3 step 6 rule applies);
  RFC 9989 §4.7 "the record is treated as if it included p=none". Kept as ``p is None``; the
  evaluator applies the rule of its mode.
* Any other tag with a bad value: "Syntax errors in the remainder of the record MUST be
  discarded in favor of default values (if any) or ignored outright" (RFC 9989 §4.8; RFC 7489
  §6.3 says SHOULD): the default is used and a warning recorded.
* Unknown tags: "unknown tags MUST be ignored" (RFC 7489 §6.3, RFC 9989 §4.7): kept by name in
  ``unknown_tags``.
* A term without ``=`` or with a name that is not ``1*ALPHA``: a syntax error in the remainder,
  ignored with a warning.
* A tag given twice: DMARC uses DKIM's tag-value syntax (RFC 9989 §4.7), where "if a tag name
  does occur more than once, the entire tag-list is invalid" (RFC 6376 §3.2). We do not throw
  the whole record away (that would let a typo disable a published ``p=reject``); the repeated
  tag is treated as having a syntax error: ``p``/``sp``/``np`` become invalid, others take
  their default.

Tag names and keyword values are matched case-insensitively (RFC 5234 §2.3: ABNF quoted
strings are case-insensitive); ``DMARC1`` is case-sensitive (``%s`` / ``%x`` in both RFCs).

SECURITY: the record text comes from DNS (untrusted). It is bounded by
``limits.DMARC_RECORD_MAX`` octets before any work (longer: ParseError) and split with
``str.split``/anchored regular expressions without nested quantifiers (linear). At most
``limits.DMARC_MAX_REPORT_URIS`` URIs per list are kept; report-size digits are bounded. Octets
outside printable ASCII make the tag that carries them invalid. Nothing is fetched or resolved.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from mailmoat import limits
from mailmoat.errors import ParseError

__all__ = [
    "Alignment",
    "DMARCRecord",
    "PSDFlag",
    "Policy",
    "ReportURI",
    "is_dmarc_record",
    "parse_record",
]


class Policy(enum.StrEnum):
    """``dmarc-request`` (RFC 7489 §6.3 ``p``; RFC 9989 §4.7)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


class Alignment(enum.StrEnum):
    """``dmarc-rors``: relaxed or strict Identifier Alignment (RFC 7489 §3.1)."""

    RELAXED = "r"
    STRICT = "s"


class PSDFlag(enum.StrEnum):
    """``dmarc-psd`` (RFC 9989 §4.7): y = a PSD, n = an Organizational Domain, u = unknown."""

    YES = "y"
    NO = "n"
    UNKNOWN = "u"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportURI:
    """One ``rua``/``ruf`` URI; ``max_size`` is the obsolete ``!size`` suffix in octets
    (RFC 7489 §6.2: k/m/g/t are 2^10/2^20/2^30/2^40; RFC 9989 §4.8: reporters should ignore
    it), None when absent."""

    uri: str
    max_size: int | None = None

    @property
    def scheme(self) -> str:
        return self.uri.partition(":")[0].lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class DMARCRecord:
    """A parsed DMARC policy record. ``text`` is the record as published (strings joined).

    ``p``/``sp``/``np`` are None when the tag is absent *or* invalid; ``*_invalid`` tells
    which. ``pct`` defaults to 100 (RFC 7489 §6.3), ``t`` to False (RFC 9989 §4.7 default
    "n"), ``psd`` to ``u``. ``fo`` is the list of failure-reporting options (default
    ``("0",)``). ``warnings`` says, per defect, what was ignored.
    """

    text: str
    p: Policy | None = None
    p_invalid: bool = False
    sp: Policy | None = None
    sp_invalid: bool = False
    np: Policy | None = None
    np_invalid: bool = False
    adkim: Alignment = Alignment.RELAXED
    aspf: Alignment = Alignment.RELAXED
    pct: int = 100
    pct_given: bool = False
    t: bool = False
    psd: PSDFlag = PSDFlag.UNKNOWN
    rua: tuple[ReportURI, ...] = ()
    ruf: tuple[ReportURI, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = 86400
    unknown_tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def policy_tags_valid(self) -> bool:
        """False when ``p`` is invalid or ``sp``/``np`` is present but invalid."""
        return not (self.p_invalid or self.sp_invalid or self.np_invalid)


# dmarc-version = "v" equals %s"DMARC1"; followed by the end or a dmarc-sep.
_VERSION: Final = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")
_VERSION_VALUE: Final = re.compile(r"[vV][ \t]*=[ \t]*(?P<value>[^; \t]*)")
_TAG_NAME: Final = re.compile(r"[A-Za-z]+")
# dmarc-value = %x20-3A / %x3C-7E (the ";" never reaches here: it separates tags).
_VALUE: Final = re.compile(r"[\x20-\x7e]+")
# URI scheme (RFC 3986 §3.1): ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":" and at
# least one character that is not white space, "," or "!" (those MUST be encoded, RFC 9989 §4.8).
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s,!]+")
# obs-dmarc-report-size = "!" 1*DIGIT [ "k" / "m" / "g" / "t" ]; digits bounded (2^40 * 10^15
# is far beyond any mailbox).
_SIZE: Final = re.compile(r"!(?P<digits>[0-9]{1,15})(?P<unit>[kmgtKMGT]?)\Z")
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_WSP: Final = " \t"
# RFC 7489 §6.4 Keyword (RFC 5321 ldh-str) for rf=.
_KEYWORD: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")


def _as_text(record: str | bytes) -> str:
    if isinstance(record, bytes):
        # Octets above 0x7E are not dmarc-value; Latin-1 keeps them 1:1 so the tag carrying
        # them fails its own syntax check instead of the whole record failing to decode.
        return record.decode("latin-1")
    return record


def is_dmarc_record(record: str | bytes) -> bool:
    """Whether a TXT record "starts with a v= tag that identifies the current version of
    DMARC" (RFC 7489 §6.6.3 step 2, RFC 9989 §4.10 step 2)."""
    text = _as_text(record[: limits.DMARC_RECORD_MAX + 1]).strip(_WSP)
    return _VERSION.match(text) is not None


def _policy(value: str) -> Policy | None:
    try:
        return Policy(value.lower())
    except ValueError:
        return None


def _uri_list(tag: str, value: str, warnings: list[str]) -> tuple[ReportURI, ...]:
    uris: list[ReportURI] = []
    for raw in value.split(","):
        item = raw.strip(_WSP)
        if not item:
            warnings.append(f"{tag}: empty URI in the list ignored")
            continue
        size: int | None = None
        bang = item.rfind("!")
        if bang >= 0:
            match = _SIZE.match(item, bang)
            if match is None:
                warnings.append(f"{tag}: {item!r} has a malformed size suffix; ignored")
                continue
            size = int(match.group("digits")) * _UNITS[match.group("unit").lower()]
            item = item[:bang]
        if not _URI.fullmatch(item):
            warnings.append(f"{tag}: {item!r} is not a URI; ignored")
            continue
        if len(uris) >= limits.DMARC_MAX_REPORT_URIS:
            warnings.append(f"{tag}: more than {limits.DMARC_MAX_REPORT_URIS} URIs; rest ignored")
            break
        uris.append(ReportURI(uri=item, max_size=size))
    return tuple(uris)


def _fo(value: str) -> tuple[str, ...] | None:
    """RFC 7489 §6.4 dmarc-fo: ("0" / "1" / "d" / "s") *(*WSP ":" *WSP ...); RFC 9989 adds
    that "0" and "1" are mutually exclusive and each of d/s appears at most once."""
    items = tuple(part.strip(_WSP).lower() for part in value.split(":"))
    if not items or any(item not in ("0", "1", "d", "s") for item in items):
        return None
    if len(set(items)) != len(items) or ("0" in items and "1" in items):
        return None
    return items


def parse_record(record: str | bytes) -> DMARCRecord:
    """Parse one DMARC record (the TXT strings already joined, RFC 7489 §6.1).

    Raises :class:`ParseError` when the text is not a DMARC record (``v=DMARC1`` is not the
    first tag) or is longer than ``limits.DMARC_RECORD_MAX``; every other defect is recorded
    on the result (see the module docstring).
    """
    if len(record) > limits.DMARC_RECORD_MAX:
        raise ParseError(f"DMARC record longer than {limits.DMARC_RECORD_MAX} octets")
    text = _as_text(record)
    stripped = text.strip(_WSP)
    if not _VERSION.match(stripped):
        found = _VERSION_VALUE.match(stripped)
        if found:
            raise ParseError(f"v={found.group('value')!r}: the version must be exactly DMARC1")
        raise ParseError("not a DMARC record: it must start with v=DMARC1 (RFC 7489 §6.3)")
    terms = stripped.split(";")
    fields: dict[str, object] = {}
    warnings: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()
    invalid: set[str] = set()
    for raw in terms[1:]:
        term = raw.strip(_WSP)
        if not term:
            continue  # [dmarc-sep] at the end, or ";;"
        name, eq, value = term.partition("=")
        name = name.rstrip(_WSP)
        value = value.strip(_WSP)
        if not eq or not _TAG_NAME.fullmatch(name):
            warnings.append(f"{term!r} is not a tag=value pair; ignored")
            continue
        key = name.lower()
        if key in seen:
            # RFC 6376 §3.2: a repeated tag makes the tag-list invalid; we void the tag.
            warnings.append(f"{key}= given more than once (RFC 6376 §3.2); treated as invalid")
            invalid.add(key)
            continue
        seen.add(key)
        if key == "v":
            warnings.append("v= repeated after the first tag; ignored")
            continue
        if not value or not _VALUE.fullmatch(value):
            warnings.append(f"{key}=: empty value or characters outside %x20-7E")
            invalid.add(key)
            continue
        if key in ("p", "sp", "np"):
            policy = _policy(value)
            if policy is None:
                warnings.append(f"{key}={value!r} is not none, quarantine or reject")
                invalid.add(key)
            else:
                fields[key] = policy
        elif key in ("adkim", "aspf"):
            try:
                fields[key] = Alignment(value.lower())
            except ValueError:
                warnings.append(f"{key}={value!r} is not r or s; default r used")
        elif key == "pct":
            if value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 100:
                fields["pct"] = int(value)
            else:
                warnings.append(f"pct={value!r} is not an integer 0-100; default 100 used")
        elif key == "t":
            if value.lower() in ("y", "n"):
                fields["t"] = value.lower() == "y"
            else:
                warnings.append(f"t={value!r} is not y or n; default n used")
        elif key == "psd":
            try:
                fields["psd"] = PSDFlag(value.lower())
            except ValueError:
                warnings.append(f"psd={value!r} is not y, n or u; default u used")
        elif key in ("rua", "ruf"):
            fields[key] = _uri_list(key, value, warnings)
        elif key == "fo":
            fo = _fo(value)
            if fo is None:
                warnings.append(f"fo={value!r} is not a valid option list; default 0 used")
            else:
                fields["fo"] = fo
        elif key == "rf":
            parts = tuple(part.strip(_WSP).lower() for part in value.split(":"))
            if all(_KEYWORD.fullmatch(part) for part in parts):
                fields["rf"] = parts
            else:
                warnings.append(f"rf={value!r} is not a Keyword list; default afrf used")
        elif key == "ri":
            if value.isascii() and value.isdigit() and len(value) <= 10:
                fields["ri"] = int(value)
            else:
                warnings.append(f"ri={value!r} is not an integer; default 86400 used")
        else:
            unknown.append(key)
    for key in invalid:
        fields.pop(key, None)

    def pol(key: str) -> Policy | None:
        value = fields.get(key)
        return value if isinstance(value, Policy) else None

    def ali(key: str) -> Alignment:
        value = fields.get(key)
        return value if isinstance(value, Alignment) else Alignment.RELAXED

    def uris(key: str) -> tuple[ReportURI, ...]:
        value = fields.get(key)
        if not isinstance(value, tuple):
            return ()
        return tuple(v for v in value if isinstance(v, ReportURI))

    pct = fields.get("pct")
    t = fields.get("t")
    psd = fields.get("psd")
    fo_value = fields.get("fo")
    rf_value = fields.get("rf")
    ri = fields.get("ri")
    return DMARCRecord(
        text=text,
        p=pol("p"),
        p_invalid="p" in invalid,
        sp=pol("sp"),
        sp_invalid="sp" in invalid,
        np=pol("np"),
        np_invalid="np" in invalid,
        adkim=ali("adkim"),
        aspf=ali("aspf"),
        pct=pct if isinstance(pct, int) else 100,
        pct_given=isinstance(pct, int),
        t=t if isinstance(t, bool) else False,
        psd=psd if isinstance(psd, PSDFlag) else PSDFlag.UNKNOWN,
        rua=uris("rua"),
        ruf=uris("ruf"),
        fo=tuple(str(v) for v in fo_value) if isinstance(fo_value, tuple) else ("0",),
        rf=tuple(str(v) for v in rf_value) if isinstance(rf_value, tuple) else ("afrf",),
        ri=ri if isinstance(ri, int) else 86400,
        unknown_tags=tuple(unknown),
        warnings=tuple(warnings),
    )
