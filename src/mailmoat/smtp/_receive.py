"""Framing of the bytes an SMTP server receives: command lines, DATA content, BDAT chunks.

SECURITY
    Trusts nothing: every byte comes from the peer, in any split (one octet at a time or many
    pipelined commands at once, RFC 2920).
    Bounds: at most ``line_limit`` octets of an unfinished command line are buffered; beyond
    that the line is discarded *as it arrives* up to its LF and reported once as too long.
    In DATA at most one unfinished text line (``max_line`` + a few octets) is buffered; BDAT
    content is handed on as it arrives. Content after a fault or beyond ``max_size`` is
    dropped (only counted). Every scan is a C-level ``bytes.find`` or a literal-led regular
    expression search with a one-octet lookaround (``_BARE_CR``, ``_BARE_LF``) over new data:
    linear time, no per-byte or per-line Python loop (at most
    ``_DOTS_PER_SCAN`` dot-stuffed lines are walked one by one, then ``bytes.replace``).
    Refuses: a command line that does not end in <CR><LF> (bare LF), that holds a bare CR or
    a NUL, or that is too long; message content with a bare LF or bare CR (unless the policy is
    ``normalize``: then each becomes <CR><LF>), a NUL (unless allowed), a text line over
    ``max_line`` octets, or more than ``max_size`` octets. DATA ends *only* at
    <CR><LF>.<CR><LF> on the wire (RFC 5321 §4.1.1.4); no fake end-of-data (<LF>.<LF>,
    <CR>.<CR>, <CR><LF>.<LF>, ...) ends it, whatever the policy: normalisation happens after
    framing, never before, so it cannot create a terminator (CVE-2023-51764 class).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ChunkEnd",
    "ContentFault",
    "ContentPiece",
    "ContentPolicy",
    "Framer",
    "Line",
    "LineFault",
    "LineRefused",
    "dot_stuff",
]

_CRLF: Final = b"\r\n"
#: RFC 5321 §4.1.1.4: "the character sequence "<CRLF>.<CRLF>" ends the mail text".
_EOD: Final = b"\r\n.\r\n"
#: Stuffed lines walked one by one per scan; beyond, unstuffing switches to bytes.replace.
_DOTS_PER_SCAN: Final = 32
_BULK: Final[list[int]] = [-1]  # marker (never a real index): "unstuff everything in bulk"
#: A CR followed by something else than LF (a CR at the very end is checked apart), and a LF
#: not preceded by CR. Each pattern starts with a literal octet (sre scans for it in C) and
#: then looks at one more octet: linear time, no backtracking, and cheaper than counting CR,
#: LF and <CRLF> separately.
_BARE_CR: Final = re.compile(rb"\r[^\n]")
_BARE_LF: Final = re.compile(rb"\n(?<!\r\n)")
#: Any line break: used only to *normalise* content already framed.
_NEWLINE_RE: Final = re.compile(rb"\r\n|\r|\n")


class LineFault(enum.Enum):
    """Why a command line was refused."""

    BARE_LF = "bare LF"
    BARE_CR = "bare CR"
    NUL = "NUL"
    TOO_LONG = "too long"


class ContentFault(enum.Enum):
    """Why message content is refused (reported at its real end)."""

    BARE_LF = "bare LF"
    BARE_CR = "bare CR"
    NUL = "NUL"
    LINE_TOO_LONG = "line too long"
    TOO_BIG = "too big"


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    """A command line that ended in <CRLF>, without it; no CR, LF or NUL inside."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LineRefused:
    """A command line refused by framing."""

    fault: LineFault


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentPiece:
    """Content octets (dot-unstuffed, normalised if so configured)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkEnd:
    """End of DATA content (``last`` True) or of a BDAT chunk; ``fault`` set if refused."""

    last: bool
    fault: ContentFault | None
    size: int  # content octets of the whole message so far
    chunk_size: int  # octets of this BDAT chunk (DATA: the content size)


Item = Line | LineRefused | ContentPiece | ChunkEnd


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentPolicy:
    """Limits and choices applied to message content."""

    max_size: int
    #: RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including <CRLF>.
    max_line: int
    normalize_newlines: bool = False
    allow_nul: bool = False


def dot_stuff(content: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency for a sender: double a dot that starts a line, and end the
    content with <CRLF> if needed; append ``.<CRLF>`` for the full DATA tail."""
    if content and not content.endswith(_CRLF):
        content += _CRLF
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class _Content:
    """Checks (and normalises) a message's content stream, piece by piece.

    A trailing CR of a piece is held back until the next piece shows whether it starts a
    <CRLF> (BDAT chunks split anywhere); ``finish()`` reports a held CR as bare.
    """

    __slots__ = ("fault", "held_cr", "line_len", "policy", "size")

    def __init__(self, policy: ContentPolicy) -> None:
        self.policy = policy
        self.fault: ContentFault | None = None
        self.held_cr = False
        self.line_len = 0  # octets of the current, unfinished line
        self.size = 0

    def _set(self, fault: ContentFault) -> None:
        if self.fault is None:
            self.fault = fault

    def feed(self, piece: bytes) -> bytes:
        """Check ``piece``; return the octets to keep (b"" once the message is refused)."""
        if self.held_cr:
            piece = b"\r" + piece
            self.held_cr = False
        if piece.endswith(b"\r"):
            piece = piece[:-1]
            self.held_cr = True
        if not piece:
            return b""
        if self.fault is not None:  # refused already: only count (and keep nothing)
            self.size += len(piece)
            return b""
        policy = self.policy
        # RFC 5321 §2.3.8: "CR and LF MUST only occur together as CRLF".
        bare_lf = _BARE_LF.search(piece) is not None
        bare_cr = piece[-1] == 0x0D or _BARE_CR.search(piece) is not None
        if bare_lf or bare_cr:
            if policy.normalize_newlines:
                # Postfix smtpd_forbid_bare_newline=normalize: "process them as if the client
                # sent <CR><LF>"; done after end-of-data framing, so it never makes a
                # terminator.
                piece = _NEWLINE_RE.sub(_CRLF, piece)
            else:
                if bare_lf:
                    self._set(ContentFault.BARE_LF)
                if bare_cr:
                    self._set(ContentFault.BARE_CR)
        if not policy.allow_nul and b"\0" in piece:
            self._set(ContentFault.NUL)
        self._check_lines(piece)
        self.size += len(piece)
        if self.size > policy.max_size:
            self._set(ContentFault.TOO_BIG)
        return b"" if self.fault is not None else piece

    def _check_lines(self, piece: bytes) -> None:
        """RFC 5321 §4.5.3.1.6 text line length, without a per-line Python loop.

        Measured between LFs (after the bare-newline check, every LF ends a CRLF line): a
        segment of ``max_line - 1`` octets is a line of ``max_line - 2`` plus its CR.
        """
        limit = self.policy.max_line - 1
        first = piece.find(b"\n")
        if first < 0:
            self.line_len += len(piece)
            if self.line_len > limit:
                self._set(ContentFault.LINE_TOO_LONG)
            return
        if self.line_len + first > limit:
            self._set(ContentFault.LINE_TOO_LONG)
        last = piece.rfind(b"\n")
        self.line_len = len(piece) - last - 1
        if self.line_len > limit:
            self._set(ContentFault.LINE_TOO_LONG)
        # Every line between the first and the last LF: from a line start ``p``, the last LF
        # within ``limit`` octets (a memrchr) ends only lines short enough; jump past it. No LF
        # there means the line starting at ``p`` is too long. At most two calls per ``limit``
        # octets (after a jump to the last LF of a window, the next LF lies beyond it), however
        # short or long the lines are.
        rfind = piece.rfind
        p = first + 1
        while last - p > limit:
            j = rfind(b"\n", p, p + limit + 1)
            if j < 0:
                self._set(ContentFault.LINE_TOO_LONG)
                return
            p = j + 1

    def finish(self) -> bytes:
        """End of content: a held CR is a bare CR."""
        if self.held_cr:
            self.held_cr = False
            if self.policy.normalize_newlines:
                return self.feed(b"\r\n")
            self.size += 1
            self._set(ContentFault.BARE_CR)
        return b""


class _Mode(enum.Enum):
    LINES = 1
    DATA = 2
    BDAT = 3
    DISCARD = 4


# The members as module constants: on Python 3.11 ``_Mode.X`` goes through
# ``EnumType.__getattr__`` (a Python-level hook), and every framing step reads the mode.
_BDAT: Final = _Mode.BDAT
_DATA: Final = _Mode.DATA
_DISCARD: Final = _Mode.DISCARD
_LINES: Final = _Mode.LINES


class Framer:
    """Splits received bytes into :data:`Item` values; the server switches its mode."""

    __slots__ = (
        "_bdat_chunk",
        "_bdat_last",
        "_bdat_remaining",
        "_buf",
        "_content",
        "_discarding",
        "_mode",
        "_pending",
        "_pos",
        "line_limit",
        "policy",
    )

    def __init__(self, *, line_limit: int, policy: ContentPolicy) -> None:
        self.line_limit = line_limit
        self.policy = policy
        self._buf = b""
        self._pos = 0
        self._mode = _LINES
        self._discarding = False  # inside an over-long command line
        self._content: _Content | None = None
        self._pending: list[Item] = []
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_chunk = 0

    # --- buffer ---------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Octets received and not yet framed (bounded: see SECURITY)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        if self._mode is _DISCARD or not data:
            return
        if self._pos >= len(self._buf):
            self._buf = bytes(data)
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def discard_buffer(self) -> int:
        """Drop every unframed octet (STARTTLS: RFC 3207 §4.2 / CVE-2011-0411); return count."""
        dropped = self.buffered
        self._buf = b""
        self._pos = 0
        self._discarding = False
        return dropped

    # --- modes ----------------------------------------------------------------------------
    def discard_all(self) -> None:
        """Drop everything from now on (STARTTLS pending, closed)."""
        self.discard_buffer()
        self._mode = _DISCARD

    def lines(self) -> None:
        """Back to command lines (after a TLS handshake)."""
        self._mode = _LINES

    def start_data(self, policy: ContentPolicy | None = None) -> None:
        """Read DATA content after our 354."""
        self._content = _Content(policy or self.policy)
        # The <CRLF> that ended the DATA command counts as the one before ".<CRLF>" (an
        # empty message is just ".<CRLF>"): keep a <CRLF> right before the first line. It is
        # usually still in the buffer (the DATA line's own); otherwise put a virtual one there.
        pos = self._pos
        if pos >= 2 and self._buf[pos - 2 : pos] == _CRLF:
            self._pos = pos - 2
        else:
            self._buf = _CRLF + self._buf[pos:]
            self._pos = 0
        self._mode = _DATA

    def start_bdat(self, size: int, *, last: bool, new_message: bool,
                   policy: ContentPolicy | None = None) -> None:
        """Read a BDAT chunk of exactly ``size`` octets (RFC 3030 §2)."""
        if new_message or self._content is None:
            self._content = _Content(policy or self.policy)
        self._bdat_remaining = size
        self._bdat_chunk = size
        self._bdat_last = last
        self._mode = _BDAT

    def skip_bdat(self, size: int) -> None:
        """Read and drop a refused BDAT chunk (the octets are on the wire anyway)."""
        self._content = _Content(ContentPolicy(max_size=0, max_line=self.policy.max_line))
        self._content.fault = ContentFault.TOO_BIG  # drop everything
        self.start_bdat(size, last=False, new_message=False)

    # --- framing --------------------------------------------------------------------------
    def next_item(self) -> Item | None:
        """The next framed item, or None when more bytes are needed."""
        item = self.next_raw()
        return Line(data=item) if isinstance(item, bytes) else item

    def next_raw(self) -> bytes | Item | None:
        """:meth:`next_item`, except that a command line comes as its bare ``bytes`` (the
        server's per-command path: no :class:`Line` to build and unwrap)."""
        if self._pending:
            return self._pending.pop(0)
        mode = self._mode
        if mode is _LINES:
            return self._line()
        if mode is _DATA:
            return self._data()
        if mode is _BDAT:
            return self._bdat()
        return None

    def _line(self) -> bytes | LineRefused | None:
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\n", pos)
        if end < 0:
            if self._discarding or len(buf) - pos > self.line_limit:
                # Over-long: forget it as it arrives; report once at its end.
                self._discarding = True
                self._buf = b""
                self._pos = 0
            return None
        self._pos = end + 1
        if self._discarding:
            self._discarding = False
            return LineRefused(fault=LineFault.TOO_LONG)
        if end + 1 - pos > self.line_limit:
            return LineRefused(fault=LineFault.TOO_LONG)
        # RFC 5321 §2.3.8: "Lines consist of zero or more data characters terminated by the
        # sequence ASCII character "CR" (hex value 0D) followed immediately by ASCII character
        # "LF" (hex value 0A)" ... "CR and LF MUST only occur together as CRLF".
        if end == pos or buf[end - 1] != 0x0D:
            return LineRefused(fault=LineFault.BARE_LF)
        line = buf[pos : end - 1]
        if b"\r" in line:
            return LineRefused(fault=LineFault.BARE_CR)
        if b"\0" in line:
            return LineRefused(fault=LineFault.NUL)
        return line

    def _data(self) -> Item | None:
        content = self._content
        assert content is not None
        buf = self._buf
        pos = self._pos  # invariant: buf[pos:pos+2] is the <CRLF> before the current line
        # One left-to-right search for "<CRLF>." finds both the dot-stuffed lines and the
        # terminator (RFC 5321 §4.1.1.4: "<CRLF>.<CRLF>", and nothing else, ends the data).
        dots: list[int] = []
        size = len(buf)
        cut = -1  # where the complete lines scanned so far end (an index of a <CRLF>)
        eod = -1
        i = buf.find(b"\r\n.", pos)
        while i >= 0:
            tail = buf[i + 3 : i + 5]
            if tail == _CRLF:
                eod = i
                break
            if len(tail) < 2 and _CRLF.startswith(tail):
                cut = i  # ".", ".<CR>" at the end: maybe a terminator; decide later
                break
            dots.append(i + 2)
            if len(dots) > _DOTS_PER_SCAN:
                # Many stuffed lines (a hostile "..\r\n..\r\n..."): stop walking them in
                # Python; find the terminator and unstuff with C-level bytes methods.
                dots = _BULK
                eod = buf.find(_EOD, i + 3)
                break
            i = buf.find(b"\r\n.", i + 3)
        if eod >= 0:
            self._pos = eod + 5
            self._mode = _LINES
            piece = self._unstuff(buf, pos + 2, eod + 2, dots, content)
            content.finish()
            end = ChunkEnd(last=True, fault=content.fault, size=content.size,
                           chunk_size=content.size)
            self._content = None
            if piece:
                self._pending.append(end)
                return ContentPiece(data=piece)
            return end
        if cut < 0:
            cut = buf.rfind(_CRLF, pos)
        piece = b""
        if cut > pos:
            self._pos = cut
            if dots is not _BULK:
                dots = [d for d in dots if d < cut]
            piece = self._unstuff(buf, pos + 2, cut + 2, dots, content)
        if size - self._pos - 2 > self.policy.max_line:
            # An unfinished line already longer than any text line may be (RFC 5321
            # §4.5.3.1.6): refuse the message and keep only what terminator detection needs:
            # the <CRLF> marker, a non-dot placeholder and the last octet (maybe a CR).
            content._set(ContentFault.LINE_TOO_LONG)
            self._buf = b"\r\nX" + buf[-1:]
            self._pos = 0
        return ContentPiece(data=piece) if piece else None

    @staticmethod
    def _unstuff(buf: bytes, start: int, end: int, dots: list[int], content: _Content) -> bytes:
        # RFC 5321 §4.5.2: "If the first character is a period and there are other characters
        # on the line, the first character is deleted."  ``dots`` are the indexes of those
        # first characters within [start, end); the range ends with <CRLF>.
        if not dots:
            return content.feed(buf[start:end])
        if dots is _BULK:
            segment = buf[start:end]
            if segment[:1] == b".":
                segment = segment[1:]
            return content.feed(segment.replace(b"\r\n.", _CRLF))
        parts = []
        for dot in dots:
            parts.append(buf[start:dot])
            start = dot + 1
        parts.append(buf[start:end])
        return content.feed(b"".join(parts))

    def _bdat(self) -> Item | None:
        content = self._content
        assert content is not None
        remaining = self._bdat_remaining
        if remaining:
            avail = len(self._buf) - self._pos
            if not avail:
                return None
            take = min(avail, remaining)
            start = self._pos
            raw = self._buf[start : start + take]
            self._pos = start + take
            self._bdat_remaining = remaining - take
            piece = content.feed(raw)
            if self._bdat_remaining:
                return ContentPiece(data=piece) if piece else None
        else:
            piece = b""
        if self._bdat_last:
            piece += content.finish()
        self._mode = _LINES
        end = ChunkEnd(last=self._bdat_last, fault=content.fault, size=content.size,
                       chunk_size=self._bdat_chunk)
        if self._bdat_last:
            self._content = None
        if piece:
            self._pending.append(end)
            return ContentPiece(data=piece)
        return end
