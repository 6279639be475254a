"""Parse Authentication-Results fields (RFC 8601 §2.2), and spot forged ones (§5).

RFC 8601 §2.2::

    authres-header-field = "Authentication-Results:" authres-payload
    authres-payload = [CFWS] authserv-id
                      [ CFWS authres-version ]
                      ( no-result / 1*resinfo ) [CFWS] CRLF
    authserv-id = value
    authres-version = 1*DIGIT [CFWS]
    no-result = [CFWS] ";" [CFWS] "none"
    resinfo = [CFWS] ";" methodspec [ CFWS reasonspec ]
              [ CFWS 1*propspec ]
    methodspec = [CFWS] method [CFWS] "=" [CFWS] result
    reasonspec = "reason" [CFWS] "=" [CFWS] value
    propspec = ptype [CFWS] "." [CFWS] property [CFWS] "=" pvalue
    method = Keyword [ [CFWS] "/" [CFWS] method-version ]
    method-version = 1*DIGIT [CFWS]
    result = Keyword
    ptype = Keyword
    property = special-smtp-verb / Keyword
    special-smtp-verb = "mailfrom" / "rcptto"
    pvalue = [CFWS] ( value / [ [ local-part ] "@" ] domain-name ) [CFWS]

``value`` is RFC 2045's ``token / quoted-string``; ``Keyword`` is RFC 5321's ``Ldh-str``.
Comments may sit between any two of these (B.7 "Comment-Heavy Example"). Real fields also
carry a trailing ``;`` and ``pvalue`` s with ``/``, ``=`` or ``+`` unquoted (base64 ``header.b``);
we accept both (a pvalue runs to the next white space, comment or ``;``).

§2.2: an unknown ``authres-version`` means the field is not understood: we refuse it
(ParseError) rather than guess. A trailing ``none`` with results beside it is an error.

SECURITY: every Authentication-Results field on an inbound message is untrusted (§5, §7.2:
"MUAs ... MUST NOT" trust a field whose authserv-id is not one they trust). The parser is
bounded: fields over ``limits.AUTHRES_FIELD_MAX`` octets, more than
``limits.AUTHRES_MAX_RESULTS`` resinfo or ``limits.AUTHRES_MAX_PROPERTIES`` propspecs are
refused with :class:`~mailmoat.errors.ParseError`; tokenising is the linear
:func:`mailmoat.message.tokenize`; the rest is one pass over the tokens. Bytes are decoded as
UTF-8 (RFC 8601 §2.2 allows UTF-8 via RFC 6532) with replacement; control characters make the
field invalid. :func:`claims_authserv_id` reads only the authserv-id, so a forged field whose
remainder is garbage is still recognised and can be removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mailmoat import limits
from mailmoat.auth.authres._model import AuthenticationResults, AuthResProperty, AuthResResult
from mailmoat.errors import ParseError
from mailmoat.message import HeaderField, Kind, Token, comment_text, tokenize, unfold

__all__ = ["authserv_id_of", "claims_authserv_id", "parse", "parse_field"]

# Keyword = Ldh-str (RFC 5321 §4.1.2): Let-dig [ *( ALPHA / DIGIT / "-" ) Let-dig ].
_KEYWORD: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")
_DIGITS: Final = re.compile(r"[0-9]{1,9}")
# RFC 2045 §5.1 token: CHARs except SPACE, CTLs and tspecials ()<>@,;:\"/[]?= (UTF-8 allowed in
# the authserv-id by RFC 8601 §2.2 via RFC 6532, so non-ASCII passes).
_TOKEN: Final = re.compile(r"[^\x00-\x20\x7f()<>@,;:\\\"/\[\]?=]+")
# A WORD token is cut into runs and the punctuation the grammar needs.
_PIECES: Final = re.compile(rb"[^=/.]+|[=/.]")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Atom:
    kind: str  # "word", "quoted", "punct" ("=", "/", "."), "other" (<...>, [...]), "comment"
    text: str
    start: int
    end: int


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if _CONTROL.search(text):
        raise ParseError("control character in Authentication-Results")
    return text


def _atoms(tokens: tuple[Token, ...]) -> list[list[_Atom]]:
    """The atoms of each ``;``-separated segment."""
    segments: list[list[_Atom]] = [[]]
    for token in tokens:
        if token.kind is Kind.SEMI:
            segments.append([])
            continue
        if token.kind is Kind.COMMA:
            raise ParseError("unexpected ',' in Authentication-Results")
        out = segments[-1]
        if token.kind is Kind.COMMENT:
            out.append(_Atom("comment", _decode(comment_text(token.text)), token.start,
                             token.start))
        elif token.kind is Kind.WORD:
            for piece in _PIECES.finditer(token.text):
                text = piece.group()
                kind = "punct" if text in (b"=", b"/", b".") else "word"
                start = token.start + piece.start()
                out.append(_Atom(kind, _decode(text), start, start + len(text)))
        else:
            kind = "quoted" if token.kind is Kind.QUOTED else "other"
            out.append(_Atom(kind, _decode(token.text), token.start,
                             token.start + len(token.text)))
    return segments


class _Cursor:
    """Walks the atoms of one segment, skipping comments (and collecting them)."""

    def __init__(self, atoms: list[_Atom]) -> None:
        self.atoms = atoms
        self.pos = 0
        self.comments: list[str] = []

    def _skip(self) -> None:
        while self.pos < len(self.atoms) and self.atoms[self.pos].kind == "comment":
            self.comments.append(self.atoms[self.pos].text)
            self.pos += 1

    def peek(self) -> _Atom | None:
        self._skip()
        return self.atoms[self.pos] if self.pos < len(self.atoms) else None

    def take(self) -> _Atom | None:
        atom = self.peek()
        if atom is not None:
            self.pos += 1
        return atom

    def expect(self, text: str, what: str) -> None:
        atom = self.take()
        if atom is None or atom.kind != "punct" or atom.text != text:
            got = "end of clause" if atom is None else repr(atom.text)
            raise ParseError(f"expected {text!r} {what}, got {got}")

    def keyword(self, what: str) -> str:
        atom = self.take()
        if atom is None or atom.kind != "word" or not _KEYWORD.fullmatch(atom.text):
            got = "end of clause" if atom is None else repr(atom.text)
            raise ParseError(f"expected a keyword for the {what}, got {got}")
        return atom.text.lower()

    def value(self, what: str, *, token: bool = False) -> str:
        """A pvalue: a quoted-string, or the run of atoms with no gap between them (lenient:
        real ``header.b`` values carry unquoted ``/``, ``+`` and ``=``). With ``token``, an
        RFC 2045 ``value`` (authserv-id, reason): a quoted-string, or a token, in which
        ``=`` and ``/`` (tspecials) cannot appear."""
        first = self.take()
        if first is None or first.kind == "comment":
            raise ParseError(f"missing {what} value")
        if first.kind == "quoted" and not self._glued(first):
            return _unquote(first.text)
        parts = [first.text if first.kind != "quoted" else _unquote(first.text)]
        last = first
        while self.pos < len(self.atoms):
            atom = self.atoms[self.pos]
            if atom.kind == "comment" or atom.start != last.end:
                break
            parts.append(_unquote(atom.text) if atom.kind == "quoted" else atom.text)
            last = atom
            self.pos += 1
        text = "".join(parts)
        if token and (first.kind == "quoted" or not _TOKEN.fullmatch(text)):
            raise ParseError(f"{what} {text[:40]!r} is neither a token nor a quoted-string")
        return text

    def _glued(self, atom: _Atom) -> bool:
        return self.pos < len(self.atoms) and self.atoms[self.pos].start == atom.end and (
            self.atoms[self.pos].kind != "comment"
        )


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", text[1:-1])
    return text


def _resinfo(atoms: list[_Atom]) -> AuthResResult:
    cur = _Cursor(atoms)
    method = cur.keyword("method")
    version: int | None = None
    nxt = cur.peek()
    if nxt is not None and nxt.kind == "punct" and nxt.text == "/":
        cur.take()
        digits = cur.take()
        if digits is None or not _DIGITS.fullmatch(digits.text):
            raise ParseError(f"{method}/: the method version must be digits")
        version = int(digits.text)
    cur.expect("=", f"after the method {method!r}")
    result = cur.keyword(f"{method} result")
    reason: str | None = None
    properties: list[AuthResProperty] = []
    while cur.peek() is not None:
        name = cur.keyword("ptype or reason")
        nxt = cur.peek()
        # reasonspec comes before the propspecs in the ABNF; accepted anywhere (seen in the
        # wild), told apart from a ptype by the "=" instead of ".".
        if name == "reason" and nxt is not None and nxt.text == "=":
            cur.take()
            reason = cur.value("reason", token=True)
            continue
        cur.expect(".", f"after the ptype {name!r}")
        prop = cur.keyword(f"{name} property")
        cur.expect("=", f"after {name}.{prop}")
        value = cur.value(f"{name}.{prop}")
        if len(properties) >= limits.AUTHRES_MAX_PROPERTIES:
            raise ParseError(f"more than {limits.AUTHRES_MAX_PROPERTIES} properties")
        properties.append(AuthResProperty(ptype=name, name=prop, value=value))
    return AuthResResult(
        method=method, result=result, version=version, reason=reason,
        properties=tuple(properties), comments=tuple(cur.comments),
    )


def parse(value: bytes | str) -> AuthenticationResults:
    """Parse one Authentication-Results field *body* (after the colon; folded or not).

    Raises :class:`ParseError` on anything the grammar refuses (see the module docstring).
    """
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) > limits.AUTHRES_FIELD_MAX:
        raise ParseError(f"Authentication-Results longer than {limits.AUTHRES_FIELD_MAX} octets")
    tokens = tokenize(unfold(raw))
    if tokens.unclosed or tokens.stray_close or tokens.too_deep:
        raise ParseError("unbalanced or too deeply nested comment, quote or bracket")
    segments = _atoms(tokens.items)
    head = _Cursor(segments[0])
    authserv = head.peek()
    if authserv is None:
        raise ParseError("missing authserv-id")
    authserv_id = head.value("authserv-id", token=True)
    version: int | None = None
    nxt = head.take()
    if nxt is not None:
        if not _DIGITS.fullmatch(nxt.text):
            raise ParseError(f"unexpected {nxt.text!r} after the authserv-id")
        version = int(nxt.text)
        if head.peek() is not None:
            raise ParseError("unexpected text after the version")
    if version is not None and version != 1:
        # §2.2: version 1 is this specification; a reader cannot interpret another.
        raise ParseError(f"Authentication-Results version {version} is not supported")
    clauses = segments[1:]
    if clauses and not any(a.kind != "comment" for a in clauses[-1]):
        clauses = clauses[:-1]  # a trailing ";" (common in the wild)
    none = False
    results: list[AuthResResult] = []
    for atoms in clauses:
        words = [a for a in atoms if a.kind != "comment"]
        if len(words) == 1 and words[0].text.lower() == "none":
            if len(clauses) != 1:
                raise ParseError("'none' must be the only result (RFC 8601 §2.2 no-result)")
            none = True
            continue
        if not words:
            raise ParseError("empty resinfo between ';'")
        if len(results) >= limits.AUTHRES_MAX_RESULTS:
            raise ParseError(f"more than {limits.AUTHRES_MAX_RESULTS} results")
        results.append(_resinfo(atoms))
    if not results and not none:
        # authres-payload = ... ( no-result / 1*resinfo ): one of the two is required.
        raise ParseError("no result: neither 'none' nor any method=result")
    return AuthenticationResults(
        authserv_id=authserv_id, version=version, results=tuple(results), none=none,
        comments=tuple(head.comments),
    )


_NAME: Final = b"authentication-results"


def parse_field(field: HeaderField) -> AuthenticationResults:
    """Parse a parsed header field (its name must be Authentication-Results)."""
    if field.name.lower() != _NAME:
        raise ParseError(f"{field.name!r} is not an Authentication-Results field")
    return parse(field.value)


def authserv_id_of(value: bytes | str) -> str | None:
    """Only the authserv-id of a field body (lenient: the rest may be malformed), or None
    when none can be read."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    # The authserv-id comes first; it and the comments before it fit in the field bound.
    tokens = tokenize(unfold(raw[: limits.AUTHRES_FIELD_MAX]))
    first: list[Token] = []
    for token in tokens.items:
        if token.kind in (Kind.SEMI, Kind.COMMA):
            break
        if token.kind is Kind.COMMENT:
            if first:
                break
            continue
        if first and token.start != first[-1].start + len(first[-1].text):
            break
        first.append(token)
    if not first:
        return None
    text = "".join(
        _unquote(t.text.decode("utf-8", "replace")) if t.kind is Kind.QUOTED
        else t.text.decode("utf-8", "replace")
        for t in first
    )
    return text or None


def claims_authserv_id(field: HeaderField | bytes | str, our_id: str) -> bool:
    """Whether an inbound Authentication-Results field claims to come from ``our_id``.

    RFC 8601 §5: "An MTA ... MUST delete (or otherwise obscure) any instance of this header
    field that claims, by virtue of its authentication service identifier, to have been added
    within its trust boundary but that did not come directly from another trusted MTA or MSA
    without also being added by that MTA." The comparison ignores case (authserv-ids are
    usually host names, RFC 4343). A field we cannot read an authserv-id from at all is
    reported as claiming it (removing an unreadable field is the safe side). A
    :class:`HeaderField` of another name never claims.
    """
    if isinstance(field, HeaderField):
        if field.name.lower() != _NAME:
            return False
        value: bytes | str = field.value
    else:
        value = field
    found = authserv_id_of(value)
    if found is None:
        return True
    return found.lower().rstrip(".") == our_id.lower().rstrip(".")
