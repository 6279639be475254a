"""Write Authentication-Results fields (RFC 8601 §2.2), and resinfo from our own results.

Values are written the way the ABNF allows them (see :mod:`._parse`): a ``value`` is an RFC
2045 ``token`` when it can be one, else a ``quoted-string``; a ``pvalue`` may also be
``[ [ local-part ] "@" ] domain-name`` unquoted (RFC 8601 §2.2). RFC 2045 §5.1::

    token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
    tspecials :=  "(" / ")" / "<" / ">" / "@" / "," / ";" / ":" / "\\" / <"> /
                  "/" / "[" / "]" / "?" / "="

Folding (RFC 5322 §2.2.3) happens only at the white space between elements, aiming at lines of
``limits.AUTHRES_FOLD_WIDTH`` characters; each resinfo starts a new line.

SECURITY: what we write includes strings that came from the network (MAIL FROM, HELO, DKIM
``d=``/``i=``, failure reasons). Control characters (CR and LF above all: header injection) are
replaced with ``?`` before quoting, quoted-strings escape ``"`` and ``\\``, comments escape
``(``, ``)`` and ``\\``; so a generated field is always one well-formed header field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from mailmoat import limits
from mailmoat.auth.authres._model import AuthResProperty, AuthResResult
from mailmoat.auth.dkim import DKIMResult, DKIMResultCode
from mailmoat.auth.dmarc import DMARCResult
from mailmoat.auth.spf import Identity, SPFResult, SPFVerdict

__all__ = [
    "arc_resinfo",
    "auth_resinfo",
    "dkim_resinfo",
    "dmarc_resinfo",
    "format_authentication_results",
    "format_resinfo",
    "quote_pvalue",
    "quote_value",
    "spf_resinfo",
]

FIELD_NAME: Final = "Authentication-Results"
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# [ [ local-part ] "@" ] domain-name, local-part as dot-atom (RFC 5322 §3.2.3 atext).
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_ADDRESS: Final = re.compile(
    rf"(?:(?:{_ATEXT}(?:\.{_ATEXT})*)?@)?[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?"
)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
#: Free text (reasons, comments) is US-ASCII: a quoted-string or comment of a field in a
#: message that is not internationalised may not carry UTF-8 (RFC 5322 §3.2.4, RFC 2045 §5.1;
#: RFC 6532 only for SMTPUTF8 mail). Parsers such as the ``authres`` package refuse it.
_NOT_PRINTABLE_ASCII: Final = re.compile(r"[^\x20-\x7e]")


def _clean(text: str) -> str:
    return _CONTROL.sub("?", text)


def _ascii_text(text: str) -> str:
    return _NOT_PRINTABLE_ASCII.sub("?", text.replace("\u00a7", "section "))


def quote_value(text: str) -> str:
    """RFC 2045 ``value``: the token itself, or a quoted-string."""
    if _TOKEN.fullmatch(text):  # (a token has no control character: nothing to clean)
        return text
    text = _clean(text)
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_pvalue(text: str) -> str:
    """RFC 8601 ``pvalue``: a value, or an unquoted ``[local-part]@domain``."""
    # (tokens and addresses have no control character: cleaning would change nothing)
    if _TOKEN.fullmatch(text) or _ADDRESS.fullmatch(text):
        return text
    text = _clean(text)
    if _TOKEN.fullmatch(text) or _ADDRESS.fullmatch(text):
        return text
    return quote_value(text)


def _comment(text: str) -> str:
    text = _ascii_text(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({text})"


def format_resinfo(result: AuthResResult) -> list[str]:
    """The elements of one resinfo (joined by single spaces when not folded)."""
    method = result.method + (f"/{result.version}" if result.version is not None else "")
    parts = [f"{method}={result.result}"]
    if result.comment:
        parts.append(_comment(result.comment))
    if result.reason is not None:
        parts.append(f"reason={quote_value(_ascii_text(result.reason))}")
    parts.extend(f"{p.ptype}.{p.name}={quote_pvalue(p.value)}" for p in result.properties)
    return parts


def format_authentication_results(
    authserv_id: str,
    results: Sequence[AuthResResult],
    *,
    version: int | None = None,
    fold: bool = True,
    width: int = limits.AUTHRES_FOLD_WIDTH,
    name: str = FIELD_NAME,
) -> str:
    """The whole field, ``Name: authserv-id; ...`` without the final CRLF.

    With no results this is the no-result form ``authserv-id; none`` (RFC 8601 §2.2: a service
    was provided, no authentication was done). Folded lines are joined with CRLF + TAB.
    """
    head = f"{name}: {quote_value(authserv_id)}" + (f" {version}" if version is not None else "")
    if not results:
        return head + "; none"
    if not fold:
        return head + "".join("; " + " ".join(format_resinfo(r)) for r in results)
    lines = [head]
    for result in results:
        lines[-1] += ";"
        current = "\t"
        # `column` is len(current.expandtabs(8)), kept up to date without re-expanding the
        # line for every part (recomputed only when a part holds a TAB)
        column = 8
        for part in format_resinfo(result):
            if current == "\t":
                current += part
            elif column + 1 + len(part) > width:
                lines.append(current)
                current = "\t  " + part
            else:
                current += " " + part
                column += 1 + len(part)
                if "\t" in part:
                    column = len(current.expandtabs(8))
                continue
            column = len(current.expandtabs(8)) if "\t" in part else 8 + len(current) - 1
        lines.append(current)
    return "\r\n".join(lines)


def _props(*pairs: tuple[str, str | None]) -> tuple[AuthResProperty, ...]:
    out = []
    for key, value in pairs:
        if value:
            ptype, _, name = key.partition(".")
            out.append(AuthResProperty(ptype=ptype, name=name, value=value))
    return tuple(out)


def spf_resinfo(result: SPFResult, *, mail_from: str | None = None) -> AuthResResult:
    """``spf=...`` (RFC 8601 §2.7.2): ``smtp.mailfrom`` for the MAIL FROM identity (the
    address when given, else the domain), ``smtp.helo`` for HELO."""
    if result.identity is Identity.HELO:
        props = _props(("smtp.helo", result.domain))
    else:
        props = _props(("smtp.mailfrom", mail_from or result.domain))
    reason = result.problem if result.result in (SPFVerdict.TEMPERROR, SPFVerdict.PERMERROR,
                                                 SPFVerdict.NONE) else None
    return AuthResResult(method="spf", result=result.result.value, reason=reason,
                         properties=props)


def dkim_resinfo(result: DKIMResult) -> AuthResResult:
    """``dkim=...`` (RFC 8601 §2.7.1): ``header.d``, ``header.i``, ``header.s``/``header.a``
    (RFC 7601 §2.7.1) and ``header.b`` (RFC 6008: the first characters of the signature)."""
    bits = f"{result.key_bits}-bit key" if result.key_bits else None
    comment = ", ".join(x for x in (bits, *result.flags) if x) or None
    reason = result.reason or None if result.result is not DKIMResultCode.PASS else None
    return AuthResResult(
        method="dkim",
        result=result.result.value,
        reason=reason,
        comment=comment,
        properties=_props(
            ("header.d", result.header_d or result.domain),
            ("header.i", result.header_i),
            ("header.s", result.selector),
            ("header.a", result.algorithm),
            ("header.b", result.header_b),
        ),
    )


def dmarc_resinfo(result: DMARCResult) -> AuthResResult:
    """``dmarc=...`` (RFC 7489 §11.2: ``header.from``; DMARCbis: ``polrec.p`` and
    ``polrec.domain`` when the record was found elsewhere). The requested and applied policy
    go in a comment, as OpenDMARC writes them."""
    comment = None
    if result.policy is not None:
        comment = f"{result.policy_tag}={result.policy.value} dis={result.disposition.value}"
    record_p = result.record.p.value if result.record and result.record.p else None
    other = result.policy_domain if result.policy_domain != result.from_domain else None
    return AuthResResult(
        method="dmarc",
        result=result.result.value,
        comment=comment,
        properties=_props(
            ("header.from", result.from_domain),
            ("polrec.p", record_p),
            ("polrec.domain", other),
        ),
    )


def arc_resinfo(
    result: str, *, oldest_pass: int | None = None, remote_ip: str | None = None
) -> AuthResResult:
    """``arc=...`` (RFC 8617 §10.2: ``header.oldest-pass``, ``smtp.remote-ip``)."""
    return AuthResResult(
        method="arc",
        result=result,
        properties=_props(
            ("header.oldest-pass", str(oldest_pass) if oldest_pass is not None else None),
            ("smtp.remote-ip", remote_ip),
        ),
    )


def auth_resinfo(
    result: str, *, user: str | None = None, mechanism: str | None = None,
    mail_from: str | None = None,
) -> AuthResResult:
    """``auth=...`` (RFC 8601 §2.7.4: ``smtp.auth`` the authenticated identity,
    ``smtp.mailfrom`` the AUTH= parameter); the SASL mechanism as a comment (Appendix B.4)."""
    return AuthResResult(
        method="auth",
        result=result,
        comment=mechanism,
        properties=_props(("smtp.auth", user), ("smtp.mailfrom", mail_from)),
    )
