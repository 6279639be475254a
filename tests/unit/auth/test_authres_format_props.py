"""format_authentication_results writes exactly what the straightforward algorithm writes
(the implementation before the per-part column tracking and the token short-cuts, kept here
as the oracle), for generated results: tabs, control characters, long values, non-ASCII."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth.authres import format_authentication_results
from mailmoat.auth.authres._generate import quote_pvalue, quote_value
from mailmoat.auth.authres._model import AuthResProperty, AuthResResult

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_ADDRESS = re.compile(
    rf"(?:(?:{_ATEXT}(?:\.{_ATEXT})*)?@)?[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def _ref_clean(text: str) -> str:
    return _CONTROL.sub("?", text)


def _ref_ascii(text: str) -> str:
    return _NOT_PRINTABLE_ASCII.sub("?", text.replace("\u00a7", "section "))


def _ref_value(text: str) -> str:
    text = _ref_clean(text)
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ref_pvalue(text: str) -> str:
    text = _ref_clean(text)
    if _TOKEN.fullmatch(text) or _ADDRESS.fullmatch(text):
        return text
    return _ref_value(text)


def _ref_resinfo(r: AuthResResult) -> list[str]:
    method = r.method + (f"/{r.version}" if r.version is not None else "")
    parts = [f"{method}={r.result}"]
    if r.comment:
        text = _ref_ascii(r.comment).replace("\\", "\\\\").replace("(", "\\(")
        parts.append("(" + text.replace(")", "\\)") + ")")
    if r.reason is not None:
        parts.append(f"reason={_ref_value(_ref_ascii(r.reason))}")
    parts.extend(f"{p.ptype}.{p.name}={_ref_pvalue(p.value)}" for p in r.properties)
    return parts


def _reference(authserv_id: str, results: list[AuthResResult], width: int) -> str:
    head = f"Authentication-Results: {_ref_value(authserv_id)}"
    if not results:
        return head + "; none"
    lines = [head]
    for result in results:
        lines[-1] += ";"
        current = "\t"
        for part in _ref_resinfo(result):
            if current == "\t":
                current += part
            elif len(current.expandtabs(8)) + 1 + len(part) > width:
                lines.append(current)
                current = "\t  " + part
            else:
                current += " " + part
        lines.append(current)
    return "\r\n".join(lines)


_TEXT = st.text(alphabet=st.sampled_from(
    [*"abcXYZ019.-@_+/=()\\\";:, ", "\t", "\r", "\n", "\x00", "\x7f", "é", "§"]),
    max_size=40)
_WORD = st.text(alphabet=st.sampled_from(list("abcdef-0123\t")), min_size=1, max_size=30)
_PROPS = st.lists(st.builds(AuthResProperty, ptype=st.sampled_from(["smtp", "header", "po\tl"]),
                            name=st.sampled_from(["mailfrom", "d", "b", "x\ty"]),
                            value=_TEXT), max_size=6).map(tuple)
_RESULTS = st.lists(st.builds(
    AuthResResult, method=_WORD, result=_WORD, comment=st.none() | _TEXT,
    reason=st.none() | _TEXT, version=st.none() | st.integers(0, 9), properties=_PROPS,
), max_size=5)


@settings(max_examples=600, deadline=None)
@given(authserv_id=_TEXT, results=_RESULTS, width=st.sampled_from([20, 40, 78, 200]))
def test_same_field_as_reference(authserv_id: str, results: list[AuthResResult],
                                 width: int) -> None:
    assert format_authentication_results(authserv_id, results, width=width) == _reference(
        authserv_id, results, width)


@given(text=_TEXT)
def test_quoting_same_as_reference(text: str) -> None:
    assert quote_value(text) == _ref_value(text)
    assert quote_pvalue(text) == _ref_pvalue(text)
