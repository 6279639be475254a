"""The header section of an RFC 5322 message, kept byte for byte (layer L1).

RFC 5322 §2.1::

    message         =   (fields / obs-fields) [CRLF body]

§2.2 and §3.6.8 (field syntax), §4.5.8 (obsolete: white space before the colon)::

    optional-field  =   field-name ":" unstructured CRLF
    field-name      =   1*ftext
    ftext           =   %d33-57 /          ; Printable US-ASCII
                        %d59-126           ;  characters not including ":".
    obs-optional    =   field-name *WSP ":" unstructured CRLF

§2.2.3: a field body may be *folded*: "a CRLF may be inserted before any WSP"; a line that
starts with WSP continues the field above it. The header section ends at the first empty line.

Every field keeps its exact bytes (``raw``: name, colon, value, folding and line endings as
received) because DKIM "simple" canonicalisation (RFC 6376 §3.4.1) hashes them unchanged; the
``name`` and ``value`` views are slices of the same bytes.

SECURITY: the input is untrusted (a message from the network, or text pasted by a user). The
parser trusts nothing in it. It first finds the empty line that ends the section (one C-level
search) and refuses a section over ``limits.MESSAGE_HEADER_MAX`` octets, then makes one linear
pass over it, line by line with ``bytes.find``; more than ``limits.MESSAGE_MAX_HEADER_FIELDS``
fields raise :class:`LimitExceeded` too. A section with nothing to flag (only CRLF line ends,
no NUL, no line over 998 octets, every line a field with an ``ftext`` name or a continuation)
is split instead by a few C-level passes over the same bounded section (``_parse_clean``),
which returns the same :class:`Headers` (a property test holds it to the line-by-line
parser) under the same two limits; anything else goes line by line. The body is never
scanned, and no bytes are decoded.
Malformed lines (no colon, a field name outside ``ftext``, a continuation with nothing to
continue) are *flagged* and kept aside in ``Headers.malformed``; NUL, bare CR and lines over
998 octets are flagged on the field that carries them. ``strict=True`` turns every defect
into a :class:`ParseError`. Nothing here makes a decision: the analysis layers read the
defects.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, overload

from mailmoat.errors import LimitExceeded, ParseError
from mailmoat.limits import MESSAGE_HEADER_MAX, MESSAGE_LINE_MAX, MESSAGE_MAX_HEADER_FIELDS

__all__ = [
    "Defect",
    "HeaderDefect",
    "HeaderField",
    "Headers",
    "LineEnding",
    "find_header_end",
    "normalise_crlf",
    "parse_headers",
    "split_message",
]

# field-name = 1*ftext ; ftext = %d33-57 / %d59-126   (RFC 5322 §3.6.8)
_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
# A header section ends at the first empty line: LF, then an optional CR, then LF.
_SECTION_END: Final = re.compile(rb"\n\r?\n")
# Bare LF (not preceded by CR), for normalise_crlf.
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
_WSP: Final = b" \t"
_CRLF: Final = b"\r\n"
# A CRLF that ends a field: not followed by WSP, which would make it folding (§2.2.3).
_FIELD_END: Final = re.compile(rb"\r\n(?![ \t])")


class LineEnding(enum.Enum):
    """Which line endings the header section used."""

    CRLF = "CRLF"
    LF = "LF"
    MIXED = "mixed"
    NONE = "none"  # a single line with no line break at all


class Defect(enum.Enum):
    """Something in the header section that RFC 5322 does not allow (or only as obsolete)."""

    NO_COLON = "line is neither a field nor a continuation (no colon)"
    BAD_FIELD_NAME = "field name is empty or has characters outside ftext"
    WSP_BEFORE_COLON = "white space before the colon (obsolete syntax, RFC 5322 §4.5.8)"
    LEADING_CONTINUATION = "continuation line with no field above it"
    NUL = "NUL octet in the header section"
    BARE_CR = "CR not followed by LF"
    LINE_TOO_LONG = "line longer than 998 octets (RFC 5322 §2.1.1)"
    MIXED_LINE_ENDINGS = "both CRLF and bare LF line endings"
    MBOX_FROM_LINE = "mbox 'From ' separator line before the header section (skipped)"
    TRAILING_TEXT = "text after the pasted header section (ignored)"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderDefect:
    """A defect and the 1-based line of the header section where it was seen."""

    kind: Defect
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderField:
    """One header field, exactly as received.

    ``name`` is the field name without any obsolete white space before the colon; ``value`` is
    everything after the colon up to (not including) the final line ending, folding kept;
    ``raw`` is the whole field including its final line ending (absent on a last line that has
    none).
    """

    name: bytes
    value: bytes
    raw: bytes

    @property
    def key(self) -> bytes:
        """The field name lower-cased, for case-insensitive comparison (RFC 5322 §1.2.2)."""
        return self.name.lower()

    def unfolded(self) -> bytes:
        """The value unfolded (RFC 5322 §2.2.3: CRLF before WSP removed), line end dropped."""
        return unfold(self.value)


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3: "Unfolding is accomplished by simply removing any CRLF that is
    immediately followed by WSP." Any other line break left (malformed input) is removed too.
    """
    # Removing CRLF-before-WSP, then every other CRLF or LF, is removing every CRLF and LF.
    return value.replace(b"\r\n", b"").replace(b"\n", b"")


@dataclass(frozen=True, slots=True, kw_only=True)
class Headers(Sequence[HeaderField]):
    """The fields of a header section in order, with case-insensitive look-up.

    ``end`` is the offset just past the empty line that ends the section (where the body
    starts), or ``None`` when the input had no empty line (a header-only message or a paste).
    ``start`` is the offset of the first field (after a skipped mbox line or pasted blank
    lines). ``malformed`` keeps, in order, the raw lines that were not fields.
    """

    fields: tuple[HeaderField, ...]
    line_ending: LineEnding
    defects: tuple[HeaderDefect, ...] = ()
    malformed: tuple[bytes, ...] = ()
    start: int = 0
    end: int | None = None

    @overload
    def __getitem__(self, index: int) -> HeaderField: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[HeaderField]: ...
    def __getitem__(self, index: int | slice) -> HeaderField | Sequence[HeaderField]:
        return self.fields[index]

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[HeaderField]:
        return iter(self.fields)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, HeaderField):
            return name in self.fields
        if isinstance(name, str):
            name = name.encode("ascii")
        if not isinstance(name, bytes):
            return False
        key = name.lower()
        return any(f.name.lower() == key for f in self.fields)

    def get_all(self, name: bytes | str) -> tuple[HeaderField, ...]:
        """Every field called ``name`` (case-insensitive), in header order (top first)."""
        key = (name.encode("ascii") if isinstance(name, str) else name).lower()
        return tuple(f for f in self.fields if f.name.lower() == key)

    def get(self, name: bytes | str) -> HeaderField | None:
        """The first (topmost) field called ``name``, or ``None``."""
        key = (name.encode("ascii") if isinstance(name, str) else name).lower()
        for f in self.fields:
            if f.name.lower() == key:
                return f
        return None

    def grouped(self, *names: bytes) -> dict[bytes, list[tuple[int, HeaderField]]]:
        """``(position, field)`` of the fields with each of ``names`` (lower-case), one pass."""
        found: dict[bytes, list[tuple[int, HeaderField]]] = {name: [] for name in names}
        for i, f in enumerate(self.fields):
            bucket = found.get(f.name.lower())
            if bucket is not None:
                bucket.append((i, f))
        return found

    def indexed(self, name: bytes | str) -> tuple[tuple[int, HeaderField], ...]:
        """``(position, field)`` of every field called ``name``, top first."""
        key = (name.encode("ascii") if isinstance(name, str) else name).lower()
        return tuple((i, f) for i, f in enumerate(self.fields) if f.name.lower() == key)


def find_header_end(data: bytes, start: int = 0) -> int | None:
    """Offset just past the empty line ending the header section, or ``None`` if none yet.

    A section that is empty (the data starts with a line break) ends right after it.
    """
    if data.startswith(b"\n", start):
        return start + 1
    if data.startswith(b"\r\n", start):
        return start + 2
    match = _SECTION_END.search(data, start)
    return match.end() if match else None


def normalise_crlf(data: bytes) -> bytes:
    """Every bare LF turned into CRLF (SOURCES.md: "Normalise to CRLF before DKIM/ARC")."""
    return _BARE_LF.sub(b"\r\n", data)


@dataclass(slots=True)
class _Builder:
    """Mutable state of one parse (never escapes this module)."""

    strict: bool
    fields: list[HeaderField] = field(default_factory=list)
    defects: list[HeaderDefect] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)

    def defect(self, kind: Defect, line: int) -> None:
        if self.strict:
            raise ParseError(f"header line {line}: {kind.value}")
        self.defects.append(HeaderDefect(kind=kind, line=line))


def parse_headers(
    data: bytes,
    *,
    pasted: bool = False,
    strict: bool = False,
    max_size: int = MESSAGE_HEADER_MAX,
    max_fields: int = MESSAGE_MAX_HEADER_FIELDS,
) -> Headers:
    """Parse the header section at the start of ``data`` (a message, or headers alone).

    ``pasted=True`` reads text a person pasted: leading blank lines are skipped, and anything
    after the first empty line is ignored (flagged :attr:`Defect.TRAILING_TEXT` if not blank)
    rather than taken as a body. Raises :class:`LimitExceeded` when the section is longer than
    ``max_size`` octets or has more than ``max_fields`` fields; with ``strict=True`` raises
    :class:`ParseError` on the first defect.
    """
    out = _Builder(strict=strict)
    pos = 0
    size = len(data)
    if pasted:
        while pos < size and data[pos] in b" \t\r\n":
            pos += 1
    if data.startswith(b"From ", pos):  # mbox separator (RFC 4155), never a field
        nl = data.find(b"\n", pos)
        pos = size if nl < 0 else nl + 1
        out.defect(Defect.MBOX_FROM_LINE, 1)
    start = pos
    line_no = 0
    saw_crlf = saw_lf = False
    # The field being built: offset of its first line, offset of its colon, and kind.
    field_start = -1
    colon_at = -1
    name = b""
    in_malformed = False
    end: int | None = None

    def finish(upto_content: int, upto_raw: int) -> None:
        if field_start < 0:
            return
        if in_malformed:
            out.malformed.append(data[field_start:upto_raw])
            return
        if len(out.fields) >= max_fields:
            raise LimitExceeded(
                f"more than {max_fields} header fields", limit="MESSAGE_MAX_HEADER_FIELDS"
            )
        out.fields.append(
            HeaderField(
                name=name, value=data[colon_at + 1 : upto_content], raw=data[field_start:upto_raw]
            )
        )

    last_content_end = start
    last_raw_end = start
    # Bound the section before reading it line by line (C-level search for the empty line).
    section_end = find_header_end(data, start)
    if (size if section_end is None else section_end) - start > max_size + 2:
        raise LimitExceeded(
            f"header section longer than {max_size} octets", limit="MESSAGE_HEADER_MAX"
        )
    section = data[start : size if section_end is None else section_end]
    if start == 0 and not pasted:
        fast = _parse_clean(section, section_end, max_fields)
        if fast is not None:
            return fast
    # Rare defects are looked for line by line only when the section has them at all.
    suspicious = b"\x00" in section or section.count(b"\r") != section.count(b"\r\n")
    while pos < size:
        line_no += 1
        nl = data.find(b"\n", pos)
        if nl < 0:
            content_end = raw_end = size
        else:
            raw_end = nl + 1
            if nl > pos and data[nl - 1] == 0x0D:
                content_end = nl - 1
                saw_crlf = True
            else:
                content_end = nl
                saw_lf = True
        if content_end == pos and nl >= 0:  # the empty line: end of the header section
            end = raw_end
            break
        line = data[pos:content_end]
        if suspicious:
            if b"\x00" in line:
                out.defect(Defect.NUL, line_no)
            if b"\r" in line:
                out.defect(Defect.BARE_CR, line_no)
        if len(line) > MESSAGE_LINE_MAX:
            out.defect(Defect.LINE_TOO_LONG, line_no)
        first = line[0]
        if first in (0x20, 0x09):  # continuation of the field above (§2.2.3)
            if field_start < 0:
                out.defect(Defect.LEADING_CONTINUATION, line_no)
                field_start, in_malformed = pos, True
            last_content_end, last_raw_end = content_end, raw_end
            pos = raw_end
            continue
        finish(last_content_end, last_raw_end)
        field_start = pos
        colon = line.find(b":")
        in_malformed = False
        if colon < 0:
            out.defect(Defect.NO_COLON, line_no)
            in_malformed = True
        else:
            written = line[:colon]
            name = written.rstrip(_WSP)
            if not _FIELD_NAME.fullmatch(name):
                out.defect(Defect.BAD_FIELD_NAME, line_no)
                in_malformed = True
            elif len(name) != len(written):
                out.defect(Defect.WSP_BEFORE_COLON, line_no)
            colon_at = pos + colon
        last_content_end, last_raw_end = content_end, raw_end
        pos = raw_end
    finish(last_content_end, last_raw_end)
    if saw_crlf and saw_lf:
        out.defect(Defect.MIXED_LINE_ENDINGS, line_no)
    if pasted and end is not None and data[end:].strip():
        out.defect(Defect.TRAILING_TEXT, line_no + 1)
    ending = (
        LineEnding.MIXED
        if saw_crlf and saw_lf
        else LineEnding.CRLF
        if saw_crlf
        else LineEnding.LF
        if saw_lf
        else LineEnding.NONE
    )
    return Headers(
        fields=tuple(out.fields),
        line_ending=ending,
        defects=tuple(out.defects),
        malformed=tuple(out.malformed),
        start=start,
        end=end,
    )


# HeaderField objects built slot by slot: the same objects as HeaderField(name=, value=,
# raw=) (no __post_init__, nothing derived), without the frozen dataclass's __init__, which
# goes through object.__setattr__ per field (twice the cost of the whole fast path's split).
# tests/unit/message/test_headers_fastpath.py checks the two are equal.
_NEW_FIELD: Final = (
    object.__new__,
    HeaderField.__dict__["name"].__set__,
    HeaderField.__dict__["value"].__set__,
    HeaderField.__dict__["raw"].__set__,
)
assert tuple(HeaderField.__slots__) == ("name", "value", "raw")


def _parse_clean(section: bytes, end: int | None, max_fields: int) -> Headers | None:
    """The common case in a few C-level passes: ``section`` (the header section at offset 0,
    its empty line included when ``end`` is not ``None``) parsed exactly as the line-by-line
    parser would, or ``None`` when it has anything that parser would flag or keep aside (NUL,
    a CR or LF outside a CRLF pair, a line over 998 octets, a leading continuation, a line
    without a colon, a field name outside ``ftext`` or with white space before the colon).
    The field-count bound is enforced here as there (:class:`LimitExceeded`); the size bound
    was checked by the caller.
    """
    crlf = section.count(b"\r\n")
    if crlf != section.count(b"\n") or crlf != section.count(b"\r") or b"\x00" in section:
        return None
    if end is not None:
        if end == 2:  # an empty header section: the data starts with its empty line
            return Headers(fields=(), line_ending=LineEnding.CRLF, end=end)
        text, last_crlf = section[:-4], True  # without the last CRLF and the empty line
    elif not section:
        return Headers(fields=(), line_ending=LineEnding.NONE)
    elif section.endswith(b"\r\n"):
        text, last_crlf = section[:-2], True
    else:
        text, last_crlf = section, False
    if text[0] in (0x20, 0x09):  # a leading continuation
        return None
    # A field ends at a CRLF not followed by WSP (RFC 5322 §2.2.3); no piece is empty.
    texts = _FIELD_END.split(text)
    names = []
    for piece in texts:
        colon = piece.find(b":")
        if colon <= 0:
            return None
        if len(piece) > MESSAGE_LINE_MAX and any(
            len(line) > MESSAGE_LINE_MAX for line in piece.split(b"\r\n")
        ):
            return None
        names.append(piece[:colon])
    # The concatenated names are 1*ftext exactly when each (non-empty) name is.
    if not _FIELD_NAME.fullmatch(b"".join(names)):
        return None
    if len(texts) > max_fields:
        raise LimitExceeded(
            f"more than {max_fields} header fields", limit="MESSAGE_MAX_HEADER_FIELDS"
        )
    fields: list[HeaderField] = []
    append = fields.append
    new, set_name, set_value, set_raw = _NEW_FIELD
    for name, piece in zip(names, texts, strict=True):
        f = new(HeaderField)
        set_name(f, name)
        set_value(f, piece[len(name) + 1 :])
        set_raw(f, piece + _CRLF)
        append(f)
    if not last_crlf:
        set_raw(fields[-1], texts[-1])
    return Headers(
        fields=tuple(fields),
        line_ending=LineEnding.CRLF if crlf else LineEnding.NONE,
        end=end,
    )


def split_message(data: bytes, *, strict: bool = False) -> tuple[Headers, bytes]:
    """The header section and the body (``b""`` for a message without one, RFC 5322 §2.1)."""
    headers = parse_headers(data, strict=strict)
    body = b"" if headers.end is None else data[headers.end :]
    return headers, body
