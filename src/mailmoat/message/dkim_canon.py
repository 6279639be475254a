"""DKIM canonicalisation: "simple" and "relaxed", for header fields and (streaming) bodies.

RFC 6376 §3.4 (layer L1, no I/O). The body canonicaliser is *streaming*: the gateway feeds the
body as DATA arrives, in chunks split anywhere (a CRLF may be split across two chunks), and
gets the hash at the end, never holding the body (ARCHITECTURE.md rule 14).

SECURITY: the input is untrusted message data. Nothing here trusts line lengths: a body with no
line break at all is processed in bounded pieces (``limits.DKIM_CANON_PENDING_MAX``), trailing
empty lines are held back as a *count*, not as bytes, and every transformation is a single
linear pass (C-level ``bytes`` methods and regular expressions without backtracking). The only
thing refused is an unknown algorithm name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Final, Literal

from mailmoat.limits import DKIM_CANON_PENDING_MAX

__all__ = [
    "BodyCanonicalizer",
    "CanonKind",
    "canonicalize_body",
    "canonicalize_fields_relaxed",
    "canonicalize_header",
    "canonicalize_header_relaxed",
    "canonicalize_header_simple",
    "canonicalize_headers_relaxed",
    "parse_canon_kind",
]

CanonKind = Literal["simple", "relaxed"]

_CRLF: Final = b"\r\n"
_WSP_CRLF: Final = b" \t\r\n"
# RFC 6376 §3.4.4 (relaxed body) a: "Reduce all sequences of WSP within a line to a single SP
# character." b: "Ignore all whitespace at the end of lines."   WSP = SP / HTAB (RFC 5234).
# Done as: collapse every WSP run to one SP, then drop the SP left before a CRLF. (Never
# rb"[ \t]+\r\n": a regex search for it is quadratic on a long WSP run without CRLF.)


def _collapse_wsp(data: bytes) -> bytes:
    """Every run of WSP to one SP, with C-speed ``bytes`` methods (several times faster than a
    regular expression here). Each pass halves the longest run, so a run of n octets takes
    log2(n) passes: linear-logarithmic in the worst case, one or two passes on real text.
    (``bytes.replace`` returns the object itself when nothing matched: that ends the loop.)"""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    if b" " not in data:  # (memchr: base64 parts have no SP at all)
        return data
    while True:
        shorter = data.replace(b"  ", b" ")
        if shorter is data or len(shorter) == len(data):
            return data
        data = shorter


# RFC 6376 §3.4.2 (relaxed header): "Unfold all header field continuation lines ... MUST be
# interpreted without the CRLF." (bare LF is tolerated as a line break, as peers do)
_LINE_BREAK: Final = re.compile(rb"\r?\n")


def parse_canon_kind(name: str | bytes) -> CanonKind:
    """``"simple"``/``"relaxed"`` (case-insensitive), else :class:`ValueError`."""
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    text = text.lower()
    if text == "simple":
        return "simple"
    if text == "relaxed":
        return "relaxed"
    raise ValueError(f"unknown canonicalization {text!r}")


# --- header fields -------------------------------------------------------------------------


def canonicalize_header_simple(raw_field: bytes) -> bytes:
    """RFC 6376 §3.4.1: "The "simple" header canonicalization algorithm does not change header
    fields in any way." ``raw_field`` is the whole field as received, with its CRLF."""
    return raw_field


def canonicalize_header_relaxed(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2, for one field given as its name and the raw bytes after the colon.

    * "Convert all header field names (not the header field values) to lowercase."
    * "Unfold all header field continuation lines as described in [RFC5322]".
    * "Convert all sequences of one or more WSP characters to a single SP character."
    * "Delete all WSP characters at the end of each unfolded header field value."
    * "Delete any WSP characters remaining before and after the colon separating the header
      field name from the header field value. The colon separator MUST be retained."

    Returns ``name:value`` followed by CRLF.
    """
    value = value.replace(b"\r\n", b"")
    if b"\n" in value:
        value = _LINE_BREAK.sub(b"", value)
    value = _collapse_wsp(value).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + _CRLF


def canonicalize_header(kind: CanonKind, name: bytes, raw_field: bytes) -> bytes:
    """Canonicalise one raw header field (``Name: value\\r\\n``, possibly folded)."""
    if kind == "simple":
        return raw_field
    colon = raw_field.index(b":")
    value = raw_field[colon + 1 :]
    if value.endswith(_CRLF):
        value = value[:-2]
    elif value.endswith(b"\n"):
        value = value[:-1]
    return canonicalize_header_relaxed(name, value)


def canonicalize_headers_relaxed(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    """:func:`canonicalize_header_relaxed` of every ``(name, value)`` pair, concatenated (the
    header part of a DKIM/ARC hash input, RFC 6376 §3.7), in a few passes over all of them.

    The same octets as canonicalising the fields one by one (the per-field function is the
    reference; a field set the batch cannot prove equivalent falls back to it): when every CR
    and LF in the values belongs to a CRLF pair, stripping WSP and CRLFs at the ends of each
    value, then removing the inner CRLFs (unfolding), turning HTAB into SP and collapsing SP
    runs over the joined values gives each value's relaxed form. The names must hold no WSP,
    CR or LF for that (an ``h=`` name is ``1*ftext``); other field sets are done field by
    field. Linear: a fixed number of C-level passes (plus the log2 passes of the WSP collapse).
    """
    pairs = list(fields)
    return canonicalize_fields_relaxed([n for n, _ in pairs], [v for _, v in pairs])


def canonicalize_fields_relaxed(names: list[bytes], values: list[bytes]) -> bytes:
    """:func:`canonicalize_headers_relaxed` with the names and the values in two lists."""
    if not names:
        return b""
    check = b" ".join(values)  # (a separator that forms no CRLF across two values)
    all_names = b":".join(names)
    crlf = check.count(_CRLF)
    if (
        check.count(b"\r") != crlf
        or check.count(b"\n") != crlf
        or b" " in all_names
        or b"\t" in all_names
        or b"\r" in all_names
        or b"\n" in all_names
    ):
        return b"".join(
            [canonicalize_header_relaxed(n, v) for n, v in zip(names, values, strict=True)]
        )
    if not all_names.islower():  # (names without WSP: lower-casing is all that is left)
        names = [name.lower() for name in names]
    # Each segment is "name:value" with the value's leading/trailing WSP and CRLFs gone; the
    # segments are joined by a bare LF (none occurs in them: every LF is in a CRLF, removed).
    joined = b"\n".join(
        [name + b":" + value.strip(_WSP_CRLF) for name, value in zip(names, values, strict=True)]
    )
    if crlf:
        joined = joined.replace(_CRLF, b"")
    # (after the strip and the unfolding, no segment starts or ends with WSP: the collapse
    # cannot merge across a separator, and leaves nothing to strip)
    return _collapse_wsp(joined).replace(b"\n", _CRLF) + _CRLF


# --- body ------------------------------------------------------------------------------------


class BodyCanonicalizer:
    """Streaming body canonicalisation and hashing (RFC 6376 §3.4.3, §3.4.4, §3.7).

    ``update()`` takes chunks split anywhere; ``digest()`` (or :meth:`finalize`) ends the
    stream. ``length_limit`` is the ``l=`` value: only that many canonical octets are hashed,
    while :attr:`length` keeps counting the whole canonical body, so a verifier can report the
    content after the signed length.

    The stream is processed line-wise: complete lines are canonicalised in bulk; the trailing
    run of empty lines is held back as a count (§3.4.3 "Ignores all empty lines at the end of
    the message body"); an unterminated last line is kept until more data arrives, but never
    more than ``limits.DKIM_CANON_PENDING_MAX`` octets of it.
    """

    __slots__ = (
        "_finished",
        "_hash",
        "_kind",
        "_length",
        "_limit",
        "_partial",
        "_pending_crlf",
        "_relaxed",
        "_seen_content",
        "_tail",
    )

    def __init__(
        self,
        kind: CanonKind = "simple",
        length_limit: int | None = None,
        *,
        hash_name: str = "sha256",
    ) -> None:
        if kind not in ("simple", "relaxed"):
            raise ValueError(f"unknown canonicalization {kind!r}")
        if length_limit is not None and length_limit < 0:
            raise ValueError("length_limit must be >= 0")
        self._kind: CanonKind = kind
        self._relaxed = kind == "relaxed"
        self._limit = length_limit
        self._hash = hashlib.sha256() if hash_name == "sha256" else hashlib.new(hash_name)
        self._length = 0  # canonical octets produced so far (all of them, not only hashed)
        self._pending_crlf = 0  # empty lines held back (may be trailing)
        self._tail = b""  # unterminated data of the current line
        self._partial = False  # part of the current line was already emitted
        self._seen_content = False  # any non-empty canonical line seen
        self._finished: bytes | None = None

    @property
    def kind(self) -> CanonKind:
        return self._kind

    @property
    def length(self) -> int:
        """Canonical body length so far (after :meth:`finalize`: the whole body)."""
        return self._length

    @property
    def length_limit(self) -> int | None:
        return self._limit

    @property
    def hashed_length(self) -> int:
        """Canonical octets actually hashed (``min(length, l=)``)."""
        return self._length if self._limit is None else min(self._length, self._limit)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        limit = self._limit
        if limit is None:
            self._hash.update(data)
        elif self._length < limit:
            self._hash.update(data[: limit - self._length])
        self._length += len(data)

    def _emit_lines(self, canon: bytes) -> None:
        """Emit canonical complete lines (``canon`` ends with CRLF), holding back trailing
        empty lines. A preceding partial line was already emitted, so ``canon`` may start with
        the rest of that line (never an "empty line" then)."""
        # Count whole CRLF pairs at the end (not rstrip: "x\r\r\n" is the line "x\r").
        end = len(canon)
        while end >= 2 and canon[end - 2 : end] == _CRLF:
            end -= 2
        stripped = canon[:end]
        trailing = (len(canon) - end) // 2
        if stripped or self._partial:
            # the first CRLF after `stripped` ends a non-empty line; it is not an empty line
            self._flush_pending()
            self._emit(stripped)
            self._emit(_CRLF)
            self._seen_content = True
            self._pending_crlf = trailing - 1
        else:
            self._pending_crlf += trailing
        self._partial = False

    def _flush_pending(self) -> None:
        if self._pending_crlf:
            self._emit(_CRLF * self._pending_crlf)
            self._pending_crlf = 0

    def _canon_lines(self, data: bytes) -> bytes:
        if self._relaxed:
            data = _collapse_wsp(data)
            return data.replace(b" \r\n", _CRLF) if b" " in data else data
        return data

    def update(self, chunk: bytes) -> None:
        """Feed the next piece of the body (any split)."""
        if self._finished is not None:
            raise ValueError("update() after digest()")
        if not chunk:
            return
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(b"\n")
        # a line ends only at CRLF; find the last CRLF
        while cut > 0 and data[cut - 1] != 0x0D:
            cut = data.rfind(b"\n", 0, cut)
        if cut <= 0:
            self._tail = data
        else:
            # (after a spill the emitted part of the line never ends in WSP, so a WSP run at
            # the start of `lines` is a run of its own, canonicalised correctly here)
            lines, self._tail = data[: cut + 1], data[cut + 1 :]
            self._emit_lines(self._canon_lines(lines))
        if len(self._tail) > DKIM_CANON_PENDING_MAX:
            self._spill_tail()

    def _spill_tail(self) -> None:
        """Emit most of an over-long unterminated line, keeping only what could still change
        meaning when the line ends: a final CR (maybe half of a CRLF) and, for relaxed, the
        trailing WSP run (deleted if the line ends there, else one SP)."""
        tail = self._tail
        keep_from = len(tail)
        if tail.endswith(b"\r"):
            keep_from -= 1
        if self._relaxed:
            while keep_from > 0 and tail[keep_from - 1] in (0x20, 0x09):
                keep_from -= 1
        head, rest = tail[:keep_from], tail[keep_from:]
        if not head:
            if self._relaxed:
                # only WSP (+CR) held: a WSP run is worth one SP in any outcome
                cr = rest.endswith(b"\r")
                self._tail = (b" " if rest.strip(b"\r") else b"") + (b"\r" if cr else b"")
            return
        canon = _collapse_wsp(head) if self._relaxed else head
        self._flush_pending()
        self._emit(canon)
        self._seen_content = True
        self._partial = True
        self._tail = rest

    def digest(self) -> bytes:
        """End the stream and return the body hash (idempotent)."""
        if self._finished is None:
            tail = self._tail
            self._tail = b""
            if self._relaxed:
                # §3.4.4: whitespace at the end of the (unterminated) last line is ignored,
                # and "If the body is non-empty but does not end with a CRLF, a CRLF is added."
                tail = _collapse_wsp(tail).rstrip(b" ")
            if tail or self._partial:
                self._flush_pending()
                self._emit(tail)
                self._emit(_CRLF)
            elif not self._relaxed and not self._seen_content:
                # §3.4.3: "If there is no body or no trailing CRLF on the message body, a CRLF
                # is added." An empty (or all-empty-lines) body canonicalises to one CRLF.
                self._emit(_CRLF)
            # §3.4.4: relaxed: an empty body stays empty (RFC 6376 errata 1384/3401 aside,
            # this is what every peer does).
            self._pending_crlf = 0
            self._finished = self._hash.digest()
        return self._finished

    finalize = digest


def canonicalize_body(kind: CanonKind, body: bytes) -> bytes:
    """The whole canonical body at once (for tests and small bodies; it holds the body)."""
    if kind == "simple":
        end = len(body)
        while end >= 2 and body[end - 2 : end] == _CRLF:
            end -= 2
        # §3.4.3: empty lines at the end are ignored; a missing final CRLF is added (an empty
        # body becomes a single CRLF)
        return body[:end] + _CRLF
    canon = _collapse_wsp(body).replace(b" \r\n", _CRLF)
    if not canon.endswith(_CRLF):
        canon = canon.rstrip(b" ")
        if canon:
            canon += _CRLF
    end = len(canon)
    while end >= 2 and canon[end - 2 : end] == _CRLF:
        end -= 2
    content = canon[:end]
    return content + _CRLF if content else b""
