"""A small summary reader of Authentication-Results fields (RFC 8601), for header analysis (L2).

This is deliberately *not* the full RFC 8601 parser (that belongs in ``auth/`` and may replace
this module): it reads what a person asks of a received message, "what did the receiving
server record for spf, dkim, dmarc, arc?", and tolerates the deviations real servers write
(Microsoft 365 puts no authserv-id first and repeats it between results).

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

SECURITY: every Authentication-Results field is untrusted unless the chain analysis finds it
was added by our own servers (RFC 8601 §5: "MUAs ... MUST NOT" trust one whose authserv-id is
not theirs). Fields longer than ``limits.ANALYSIS_FIELD_MAX`` are not read; at most
``limits.ANALYSIS_MAX_AUTHRES_RESULTS`` results are read per field. Tokenising is the linear
:func:`mailmoat.message.tokenize`; comments are kept (they carry "(signature did not
verify)"). Text is decoded as UTF-8 with replacement and control characters removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mailmoat.limits import ANALYSIS_FIELD_MAX, ANALYSIS_MAX_AUTHRES_RESULTS
from mailmoat.message import Kind, Token, comment_text, tokenize, unfold

__all__ = ["AuthResult", "AuthResults", "parse_authentication_results"]

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_METHOD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*(?:/\d+)?")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    """One ``method=result`` with its reason, properties and first comment."""

    method: str  # lower-cased, version suffix removed ("dkim/1" → "dkim")
    result: str  # lower-cased
    reason: str | None = None
    properties: tuple[tuple[str, str], ...] = ()  # ("smtp.mailfrom", "example.com") ...
    comment: str | None = None

    def prop(self, name: str) -> str | None:
        """The first property called ``name`` (``"header.d"``), case-insensitive."""
        lower = name.lower()
        return next((v for k, v in self.properties if k.lower() == lower), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResults:
    """One Authentication-Results field as recorded."""

    authserv_id: str | None
    results: tuple[AuthResult, ...] = ()
    problems: tuple[str, ...] = ()

    def first(self, method: str) -> AuthResult | None:
        """The first result of ``method`` (``"spf"``, ``"dkim"``, ``"dmarc"``, ``"arc"``)."""
        return next((r for r in self.results if r.method == method), None)


def _text(raw: bytes) -> str:
    return _CONTROL.sub("?", raw.decode("utf-8", "replace"))


def _segments(tokens: tuple[Token, ...]) -> list[list[Token]]:
    segments: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind is Kind.SEMI:
            segments.append([])
        else:
            segments[-1].append(token)
    return segments


def _joined(tokens: list[Token]) -> list[str]:
    """Non-comment words, with CFWS around "=" and "." closed up (``spf = pass`` → one)."""
    parts: list[str] = []
    for token in tokens:
        if token.kind is Kind.COMMENT:
            continue
        text = _text(token.text)
        if parts and (
            parts[-1].endswith(("=", ".")) or text.startswith(("=", "."))
        ):
            parts[-1] += text
        else:
            parts.append(text)
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _resinfo(tokens: list[Token]) -> AuthResult | None:
    parts = _joined(tokens)
    if not parts or "=" not in parts[0]:
        return None
    method, _, result = parts[0].partition("=")
    if not _METHOD.fullmatch(method) or not result:
        return None
    reason = None
    properties: list[tuple[str, str]] = []
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            continue
        if key.lower() == "reason":
            reason = _unquote(value)
        elif "." in key:
            properties.append((key, _unquote(value)))
    comment = next(
        (_text(comment_text(t.text)) for t in tokens if t.kind is Kind.COMMENT), None
    )
    return AuthResult(
        method=method.split("/")[0].lower(),
        result=result.lower(),
        reason=reason,
        properties=tuple(properties),
        comment=comment,
    )


def parse_authentication_results(value: bytes) -> AuthResults:
    """Read one Authentication-Results field body. Never raises on bad input."""
    if len(value) > ANALYSIS_FIELD_MAX:
        return AuthResults(
            authserv_id=None,
            problems=(f"field longer than {ANALYSIS_FIELD_MAX} octets: not read",),
        )
    parsed = tokenize(unfold(value))
    problems: list[str] = []
    if parsed.unclosed or parsed.stray_close:
        problems.append("unbalanced comment, quote or bracket")
    segments = _segments(parsed.items)
    authserv_id: str | None = None
    results: list[AuthResult] = []
    first = _joined(segments[0])
    if first and "=" not in first[0]:
        authserv_id = _unquote(first[0])
        rest = segments[1:]
    else:
        problems.append("no authserv-id before the first result (RFC 8601 §2.2)")
        rest = segments
    for segment in rest:
        if len(results) >= ANALYSIS_MAX_AUTHRES_RESULTS:
            problems.append(f"more than {ANALYSIS_MAX_AUTHRES_RESULTS} results: rest not read")
            break
        found = _resinfo(segment)
        if found is not None:
            results.append(found)
            continue
        words = _joined(segment)
        if len(words) == 1 and words[0].lower() == "none":
            continue  # no-result
        if len(words) == 1 and authserv_id is None:
            authserv_id = _unquote(words[0])  # Microsoft 365 writes it between results
    return AuthResults(authserv_id=authserv_id, results=tuple(results), problems=tuple(problems))
