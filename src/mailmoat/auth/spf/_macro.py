"""SPF macro strings (RFC 7208 §7): parsing and expansion.

SECURITY: macro strings come from DNS (untrusted). Parsing is a single left-to-right regex scan
(linear time); a ``%`` that does not start a valid macro, an unknown macro letter, a zero DIGIT
transformer or a non-printable / non-ASCII character is refused with :class:`ParseError`.
Expansion output is bounded: a domain is truncated to ``limits.SPF_MACRO_EXPANSION_MAX`` octets
as §7.3 requires, an explanation to ``limits.SPF_EXPLANATION_MAX``. Macro values (sender,
HELO) are caller input and are only ever copied, never interpreted.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from mailmoat import limits
from mailmoat.errors import ParseError

__all__ = [
    "DOMAIN_LETTERS",
    "EXPLAIN_LETTERS",
    "Macro",
    "MacroString",
    "parse_domain_spec",
    "parse_explain_string",
    "parse_macro_string",
]

# RFC 7208 §7.1:
#   macro-letter     = "s" / "l" / "o" / "d" / "i" / "p" / "h" /
#                      "c" / "r" / "t" / "v"
# §7.3: "The following macro letters are allowed only in "exp" text: c r t".
DOMAIN_LETTERS = frozenset("slodiphv")
EXPLAIN_LETTERS = frozenset("slodiphvcrt")

# RFC 7208 §7.1:
#   macro-string     = *( macro-expand / macro-literal )
#   macro-expand     = ( "%{" macro-letter transformers *delimiter "}" )
#                      / "%%" / "%_" / "%-"
#   macro-literal    = %x21-24 / %x26-7E
#                      ; visible characters except "%"
#   transformers     = *DIGIT [ "r" ]
#   delimiter        = "." / "-" / "+" / "," / "/" / "_" / "="
#   explain-string   = *( macro-string / SP )
# ABNF literals are case-insensitive (RFC 5234 §2.3), so "R" is a valid reversal.
_TOKEN = re.compile(
    r"%\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<rev>[rR]?)(?P<delims>[.\-+,/_=]*)\}"
    r"|(?P<escape>%[%_-])"
    r"|(?P<literal>[\x21-\x24\x26-\x7e]+)"
)
_TOKEN_EXPLAIN = re.compile(
    r"%\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<rev>[rR]?)(?P<delims>[.\-+,/_=]*)\}"
    r"|(?P<escape>%[%_-])"
    r"|(?P<literal>[\x20-\x24\x26-\x7e]+)"
)
_ESCAPES = {"%%": "%", "%_": " ", "%-": "%20"}

# RFC 7208 §7.1:
#   domain-end       = ( "." toplabel [ "." ] ) / macro-expand
#   toplabel         = ( *alphanum ALPHA *alphanum ) /
#                      ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
_TOPLABEL_END = re.compile(
    r"\.(?:[0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*|[0-9A-Za-z]+-[0-9A-Za-z\-]*[0-9A-Za-z])\.?\Z"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Macro:
    """One ``%{...}`` expansion: letter, DIGIT transformer, reversal, delimiters."""

    letter: str  # lower-case
    upper: bool  # RFC 7208 §7.3: upper-case letters are URL-escaped after expansion
    keep: int | None  # DIGIT transformer (None: all parts)
    reverse: bool
    delimiters: str  # "" means the default "."


Token = str | Macro


@dataclass(frozen=True, slots=True, kw_only=True)
class MacroString:
    """A parsed macro string: literal text and macros, in order."""

    text: str
    tokens: tuple[Token, ...]
    #: The expansion when the string holds no macro (the fast path), else None.
    literal: str | None
    #: The macro letters used (lower-case).
    letters: frozenset[str]


def _macro_string(text: str, tokens: list[Token]) -> MacroString:
    macros = [t for t in tokens if isinstance(t, Macro)]
    literal = None if macros else "".join(t for t in tokens if isinstance(t, str))
    return MacroString(text=text, tokens=tuple(tokens), literal=literal,
                       letters=frozenset(m.letter for m in macros))


def _parse(
    text: str, pattern: re.Pattern[str], letters: frozenset[str], what: str
) -> tuple[MacroString, str | None]:
    """Parse ``text``; also return the final macro-literal run (None if it ends in a macro)."""
    tokens: list[Token] = []
    last_literal: str | None = None
    pos = 0
    end = len(text)
    while pos < end:
        m = pattern.match(text, pos)
        if m is None:
            # RFC 7208 §7.1: "A '%' character not followed by a '{', '%', '-', or '_'
            # character is a syntax error."
            raise ParseError(f"invalid character or macro at offset {pos} in {what} {text!r}")
        pos = m.end()
        last_literal = None
        if (lit := m.group("literal")) is not None:
            tokens.append(lit)
            last_literal = lit
        elif (esc := m.group("escape")) is not None:
            tokens.append(_ESCAPES[esc])
        else:
            letter = m.group("letter")
            lower = letter.lower()
            if lower not in letters:
                raise ParseError(f"macro letter {letter!r} not allowed in {what} {text!r}")
            digits = m.group("digits").lstrip("0")
            if m.group("digits") and not digits:
                # §7.3: "If a DIGIT is specified, the value MUST be nonzero."
                raise ParseError(f"zero DIGIT transformer in {what} {text!r}")
            # More parts than exist means "all parts" (§7.3); 4+ digits always exceed the
            # 127 labels a domain can have, so we never build a huge integer.
            keep = int(digits) if digits and len(digits) <= 3 else None
            tokens.append(
                Macro(
                    letter=lower,
                    upper=letter != lower,
                    keep=keep,
                    reverse=bool(m.group("rev")),
                    delimiters=m.group("delims"),
                )
            )
    return _macro_string(text, tokens), last_literal


def parse_macro_string(text: str) -> MacroString:
    """A ``macro-string`` (unknown-modifier values): every macro letter is accepted."""
    return _parse(text, _TOKEN, EXPLAIN_LETTERS, "macro-string")[0]


def parse_explain_string(text: str) -> MacroString:
    """An ``explain-string`` (the TXT text an ``exp=`` points at, §6.2)."""
    return _parse(text, _TOKEN_EXPLAIN, EXPLAIN_LETTERS, "explanation")[0]


def parse_domain_spec(text: str) -> MacroString:
    """A ``domain-spec`` (§7.1): a macro-string that ends in a macro or ``.toplabel[.]``."""
    if not text:
        raise ParseError("empty domain-spec")
    spec, last_literal = _parse(text, _TOKEN, DOMAIN_LETTERS, "domain-spec")
    # domain-end = ( "." toplabel [ "." ] ) / macro-expand
    if last_literal is not None and _TOPLABEL_END.search(last_literal) is None:
        raise ParseError(f"domain-spec {text!r} does not end in a valid top label")
    return spec


@dataclass(frozen=True, slots=True, kw_only=True)
class MacroValues:
    """What the macro letters expand to during one evaluation (RFC 7208 §7.2).

    ``p`` is computed lazily by the evaluator (it costs DNS queries) and passed in ``ptr``.
    """

    s: str
    l: str  # noqa: E741 - the RFC's letter
    o: str
    i: str
    c: str
    v: str
    h: str
    r: str
    t: str


def _transform(value: str, macro: Macro) -> str:
    if macro.keep is None and not macro.reverse and not macro.delimiters:
        out = value
    else:
        # §7.3: split on the delimiters (default "."), optionally reverse, keep the
        # right-most DIGIT parts, and rejoin with "." (never the original delimiters).
        if macro.delimiters and macro.delimiters != ".":
            parts = re.split("[" + re.escape(macro.delimiters) + "]", value)
        else:
            parts = value.split(".")
        if macro.reverse:
            parts.reverse()
        if macro.keep is not None and macro.keep < len(parts):
            parts = parts[-macro.keep :]
        out = ".".join(parts)
    if macro.upper:
        # §7.3: "Uppercase macros expand exactly as their lowercase equivalents, and are
        # then URL escaped. URL escaping MUST be performed for characters not in the
        # "unreserved" set, which is defined in [RFC3986]."
        out = urllib.parse.quote(out, safe="~")
    return out


def expand(spec: MacroString, values: MacroValues, *, d: str, p: str | None = None) -> str:
    """Expand ``spec``. ``d`` is the current domain; ``p`` the validated PTR name."""
    parts: list[str] = []
    for token in spec.tokens:
        if isinstance(token, str):
            parts.append(token)
            continue
        letter = token.letter
        if letter == "d":
            value = d
        elif letter == "p":
            value = p if p is not None else "unknown"
        else:
            value = getattr(values, letter)
        parts.append(_transform(value, token))
    return "".join(parts)


def truncate_domain(name: str) -> str:
    """RFC 7208 §7.3: strip a trailing dot, then drop left labels until <= 253 octets.

    "When the result of macro expansion is used in a domain name query, if the expanded
    domain name exceeds 253 characters (the maximum length of a domain name in this
    format), the left side is truncated to fit, by removing successive domain labels (and
    their following dots) until the total length does not exceed 253 characters."
    """
    if name.endswith("."):
        name = name[:-1]
    while len(name) > limits.SPF_MACRO_EXPANSION_MAX:
        dot = name.find(".")
        if dot < 0:
            return name  # a single over-long label: the caller finds it malformed
        name = name[dot + 1 :]
    return name
