"""A CFWS-aware tokenizer for structured header field bodies (layer L1).

RFC 5322 §3.2.2 (comments nest) and §3.2.4 (quoted strings)::

    ctext           =   %d33-39 / %d42-91 / %d93-126 / obs-ctext
    ccontent        =   ctext / quoted-pair / comment
    comment         =   "(" *([FWS] ccontent) [FWS] ")"
    CFWS            =   (1*([FWS] comment) [FWS]) / FWS
    quoted-pair     =   ("\\" (VCHAR / WSP)) / obs-qp
    quoted-string   =   [CFWS] DQUOTE *([FWS] qcontent) [FWS] DQUOTE [CFWS]

plus the two bracketed forms that stamps and addresses use: ``[domain-literal]`` (RFC 5322
§3.4.1, RFC 5321 §4.1.3 address-literal) and ``<angle-addr>`` (RFC 5322 §3.4).

The tokenizer splits an (unfolded or folded) field body into words, quoted strings, comments,
literals, angle addresses and the specials ``;`` and ``,``. It does not know any field's
grammar: the field parsers in ``analysis/`` and ``auth/`` do.

SECURITY: input is untrusted. One left-to-right pass with regular expressions whose
alternatives are single character classes (no nested quantifiers, so no backtracking blow-up);
comment nesting is counted, not recursed, and bounded by ``limits.MESSAGE_COMMENT_DEPTH_MAX``
(deeper text is kept as comment text and :attr:`Tokens.too_deep` is set). Unterminated quotes,
comments, literals and angle addresses end at the end of input and set :attr:`Tokens.unclosed`;
a stray ``)`` is dropped and counted. Nothing is decoded.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from mailmoat.limits import MESSAGE_COMMENT_DEPTH_MAX

__all__ = ["Kind", "Token", "Tokens", "comment_text", "tokenize"]


class Kind(enum.Enum):
    """What a token is."""

    WORD = "word"  # a run of characters that are not white space or specials used here
    QUOTED = "quoted"  # "..." including the quotes
    COMMENT = "comment"  # the text *inside* the outermost parentheses (nested ones kept)
    LITERAL = "literal"  # [...] including the brackets
    ANGLE = "angle"  # <...> including the brackets
    SEMI = ";"
    COMMA = ","


class Token(NamedTuple):
    """One token and its offset in the tokenized text.

    An immutable ``NamedTuple`` rather than a frozen dataclass (ARCHITECTURE.md rule 11): the
    tokenizer is the inner loop of header analysis and a frozen dataclass costs three times as
    much to build per token.
    """

    kind: Kind
    text: bytes
    start: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Tokens:
    """The tokens of a field body, and what was wrong with its bracketing."""

    items: tuple[Token, ...]
    unclosed: bool = False
    stray_close: int = 0
    too_deep: bool = False


# Top level: optional white space, then word | quoted-string | literal | angle | ";" | ","
# | "(" | ")" | end. Each alternative is one character class run, so the scan is linear.
_TOP: Final = re.compile(
    rb"""[ \t\r\n]*
       (?:(?P<word>[^ \t\r\n()"\[<;,]+)
         |(?P<quoted>"(?:[^"\\]|\\.)*+(?:\\\Z)?(?:"|\Z))
         |(?P<literal>\[[^\]]*(?:\]|\Z))
         |(?P<angle><[^>]*(?:>|\Z))
         |(?P<comment>\((?:[^()\\]++|\\.|\((?:[^()\\]++|\\.)*+\))*+\))
         |(?P<special>[;,()])
         |\Z)""",
    re.VERBOSE | re.DOTALL,
)
# Inside a comment only parentheses and quoted-pairs matter (a DQUOTE is ctext there).
_IN_COMMENT: Final = re.compile(rb"[^()\\]+|\\.?|[()]", re.DOTALL)


def _scan_comment(text: bytes, pos: int) -> tuple[int, bool, bool]:
    """From just after an opening "(", the offset just past its matching ")".

    Returns ``(end, closed, too_deep)``; an unclosed comment runs to the end of ``text``.
    """
    depth = 1
    too_deep = False
    size = len(text)
    while pos < size:
        match = _IN_COMMENT.match(text, pos)
        assert match is not None  # the three alternatives cover every byte
        piece = match.group()
        pos = match.end()
        if piece == b"(":
            depth += 1
            if depth > MESSAGE_COMMENT_DEPTH_MAX:
                too_deep = True
                depth = MESSAGE_COMMENT_DEPTH_MAX
        elif piece == b")":
            depth -= 1
            if depth == 0:
                return pos, True, too_deep
    return size, False, too_deep


def tokenize(text: bytes) -> Tokens:
    """Split a structured field body into tokens (see the module docstring)."""
    items: list[Token] = []
    unclosed = too_deep = False
    stray = 0
    pos = 0
    size = len(text)
    finditer = _TOP.finditer
    append = items.append
    word, comment, quoted, literal, angle = (
        Kind.WORD, Kind.COMMENT, Kind.QUOTED, Kind.LITERAL, Kind.ANGLE)
    while pos < size:
        # One C-level scan; left only to read a comment the pattern cannot match in one go
        # (nested deeper than two, or unclosed), then resumed after it.
        resume = None
        for match in finditer(text, pos):
            kind = match.lastgroup
            if kind is None:  # only white space was left
                break
            start = match.start(kind)
            if kind == "word":
                append(Token(word, match[kind], start))
            elif kind == "comment":  # a comment nested at most two deep, matched at once
                append(Token(comment, match[kind][1:-1], start))
            elif kind == "special":
                char = match[kind]
                if char == b"(":
                    end, closed, deep = _scan_comment(text, match.end())
                    append(Token(comment, text[start + 1 : end - 1 if closed else end], start))
                    unclosed |= not closed
                    too_deep |= deep
                    resume = end
                    break
                if char == b")":
                    stray += 1
                elif char == b";":
                    append(Token(Kind.SEMI, char, start))
                else:
                    append(Token(Kind.COMMA, char, start))
            else:
                piece = match[kind]
                if kind == "quoted":
                    token_kind, closed = quoted, _quoted_closed(piece)
                else:
                    token_kind = literal if kind == "literal" else angle
                    closer = b"]" if kind == "literal" else b">"
                    closed = len(piece) >= 2 and piece.endswith(closer)
                unclosed |= not closed
                append(Token(token_kind, piece, start))
        if resume is None:
            break
        pos = resume
    return Tokens(items=tuple(items), unclosed=unclosed, stray_close=stray, too_deep=too_deep)


def _quoted_closed(piece: bytes) -> bool:
    """Whether a quoted-string token ends with an unescaped DQUOTE."""
    if len(piece) < 2 or not piece.endswith(b'"'):
        return False
    backslashes = len(piece) - 1 - len(piece[:-1].rstrip(b"\\"))
    return backslashes % 2 == 0


def comment_text(text: bytes) -> bytes:
    """A comment's inner text with quoted-pairs resolved and white space runs collapsed."""
    if b"\\" in text:
        text = re.sub(rb"\\(.)", rb"\1", text, flags=re.DOTALL)
    return b" ".join(text.split())
