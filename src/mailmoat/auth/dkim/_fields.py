"""The header section as DKIM needs it: raw fields, in order, with their names.

SECURITY: the header section is untrusted. It is split in one linear pass; its size is bounded
by ``limits.MESSAGE_HEADER_MAX`` and its field count by ``limits.MESSAGE_MAX_HEADER_FIELDS``
(:class:`~mailmoat.errors.LimitExceeded` beyond). Field bytes are kept exactly as received
(DKIM "simple" canonicalisation hashes them unchanged). A line that is neither a field nor a
continuation (no colon) is kept as a nameless field that no ``h=`` can select. Fields split
elsewhere (:func:`fields_from_headers`, from the message model's parse) are used only through
:func:`checked_fields`, which applies the same two limits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from mailmoat.errors import LimitExceeded
from mailmoat.limits import MESSAGE_HEADER_MAX, MESSAGE_MAX_HEADER_FIELDS
from mailmoat.message import Headers, LineEnding

#: a CRLF that ends a field: not followed by WSP (which would make it folding)
_FIELD_END = re.compile(rb"\r\n(?![ \t])")

__all__ = [
    "RawField",
    "checked_fields",
    "fields_from_headers",
    "normalize_line_endings",
    "split_fields",
    "split_message",
]


class RawField(NamedTuple):
    """One header field: ``name`` as written, ``lname`` lower-cased, ``raw`` the whole field
    including folding and its final CRLF. (A NamedTuple rather than a dataclass: one is built
    per header field of every message, on the hot path of verification.)"""

    name: bytes
    lname: bytes
    raw: bytes

    @property
    def value(self) -> bytes:
        """The raw bytes after the colon, without the final CRLF."""
        colon = self.raw.find(b":")
        return self.raw[colon + 1 : -2] if colon >= 0 else b""


def normalize_line_endings(message: bytes) -> bytes:
    """Bare LF to CRLF, for messages read from files written with Unix line endings.

    SMTP delivers CRLF (RFC 5321 §2.3.8); files on disk often have LF. DKIM hashes CRLF
    (RFC 6376 §3.4), so a file is normalised before it is signed or verified. Existing CRLF
    pairs are kept.
    """
    if b"\n" not in message:
        return message
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """``(header section incl. the empty line, body)``; a message without an empty line is
    all header. RFC 5322 §2.1: "...the header section ..., followed by an empty line".
    """
    if message.startswith(b"\r\n"):
        return b"\r\n", message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[: end + 4], message[end + 4 :]


def _check_size(header: bytes) -> None:
    if len(header) > MESSAGE_HEADER_MAX:
        raise LimitExceeded(
            f"header section of {len(header)} octets exceeds {MESSAGE_HEADER_MAX}",
            limit="MESSAGE_HEADER_MAX",
        )


def _check_count(count: int) -> None:
    if count > MESSAGE_MAX_HEADER_FIELDS:
        raise LimitExceeded(
            f"more than {MESSAGE_MAX_HEADER_FIELDS} header fields",
            limit="MESSAGE_MAX_HEADER_FIELDS",
        )


def split_fields(header: bytes) -> list[RawField]:
    """Split a header section (CRLF line ends; the terminating empty line optional).

    RFC 5322 §2.2: a field is a name, a colon and a body; §2.2.3: a line starting with WSP
    continues the previous field (folding).
    """
    _check_size(header)
    end = header.find(b"\r\n\r\n")
    section = header[: end + 2] if end >= 0 else header
    if not section or section.startswith(b"\r\n"):
        return []  # an empty header section
    if not section.endswith(b"\r\n"):
        section += b"\r\n"
    # a field ends at a CRLF not followed by WSP (RFC 5322 §2.2.3 unfolding); split there
    texts = _FIELD_END.split(section[:-2])
    _check_count(len(texts))
    # (one loop with the tuple built directly: this runs for every field of every message)
    fields = []
    new = tuple.__new__
    for text in texts:
        colon = text.find(b":")
        name = text[:colon] if colon >= 0 else b""
        fields.append(new(RawField, (name, name.rstrip(b" \t").lower(), text + b"\r\n")))
    return fields


def fields_from_headers(headers: Headers, header: bytes) -> list[RawField] | None:
    """``split_fields(header)`` taken from ``headers``, the :func:`~mailmoat.message.
    parse_headers` of the same ``header``, when that parse proves the two splits equal: no
    defect and nothing malformed (every line a field or a continuation, each field name
    ``ftext`` with no white space before the colon), CRLF line ends only, the section starting
    at offset 0 and ending with its empty line at the end of ``header``. Else ``None`` (split
    the bytes with :func:`split_fields`). So the header section of a message is split once
    for the message model, DKIM and ARC. Bounds: ``headers`` was parsed under the same limits
    (:func:`checked_fields` checks them again where the fields are used).
    """
    if (
        headers.defects
        or headers.malformed
        or headers.start
        or headers.end != len(header)
        or headers.line_ending is not LineEnding.CRLF
    ):
        return None
    new = tuple.__new__
    return [new(RawField, (f.name, f.name.lower(), f.raw)) for f in headers.fields]


def checked_fields(header: bytes, fields: Sequence[RawField] | None) -> list[RawField]:
    """``fields`` (``split_fields(header)`` done by the caller) after the bounds that
    :func:`split_fields` enforces, or ``split_fields(header)`` itself when ``fields`` is
    ``None``. SECURITY: the limits hold on both paths."""
    if fields is None:
        return split_fields(header)
    _check_size(header)
    _check_count(len(fields))
    return list(fields)
