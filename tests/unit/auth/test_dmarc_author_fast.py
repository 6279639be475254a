"""The Author Domain's fast path (auth/dmarc/_author.py) against its tokenizer path.

``author_domain_from_value`` matches the two everyday one-mailbox forms of a From body
(``display <local@domain>`` and ``local@domain``) with two patterns before falling back to the
RFC 5322 tokenizer. The oracle here is that tokenizer path itself (``_from_tokens``, the
pre-existing implementation): on every input both must give the same AuthorDomain, and the
fast path must actually be taken for the forms it exists for.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth.dmarc import _author
from mailmoat.auth.dmarc._author import AuthorProblem, author_domain_from_value
from mailmoat.message import unfold

# Characters that matter to the tokenizer or to the two patterns, and some that do not.
_ALPHABET = [*b'aZ09.-_+@<>"\\ \t\r\n(),;:[]!', 0x80, 0xC3, 0xA9, 0x00]


def _slow(value: bytes) -> _author.AuthorDomain:
    return _author._from_tokens(unfold(value))


def _fast_taken(value: bytes) -> bool:
    text = unfold(value)
    return (_author._ONE_ANGLE.fullmatch(text) or _author._ONE_ADDR.fullmatch(text)) is not None


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=40).map(bytes))
def test_fast_path_agrees_with_tokenizer_on_noise(value: bytes) -> None:
    assert author_domain_from_value(value) == _slow(value)


_word = st.text(alphabet="abcXYZ019._-+!#'>@\\\u00e9", min_size=1, max_size=8).map(
    lambda s: s.encode("utf-8"))
_quoted = st.text(alphabet='ab "\\,<>@()\u00e9', max_size=8).map(
    lambda s: b'"' + s.encode("utf-8") + b'"')
_local = st.text(alphabet="abc019.-_+='`{|}~!#$%&*/?^", min_size=0, max_size=8).map(str.encode)
_domain = st.text(alphabet="abcXY019.-", min_size=0, max_size=12).map(str.encode)
# (the everyday choices are listed several times: about half the values are on the fast path)
_ws = st.sampled_from([b"", b" ", b" ", b" ", b"\t", b"  ", b"\r\n ", b"\r", b"\n"])


@st.composite
def _from_values(draw: st.DrawFn) -> bytes:
    display = b"".join(draw(st.lists(st.tuples(st.one_of(_word, _quoted), _ws).map(b"".join),
                                     max_size=3)))
    addr = draw(_local) + draw(st.sampled_from([b"@"] * 6 + [b"", b"@@"])) + draw(_domain)
    if draw(st.booleans()):
        addr = b"<" + addr + draw(st.sampled_from([b">"] * 6 + [b"", b">>"]))
    tail = draw(st.sampled_from([b""] * 6 + [b" ", b" (c)", b",", b" x", b";"]))
    return draw(_ws) + display + addr + tail


@settings(max_examples=1500, deadline=None)
@given(_from_values())
def test_fast_path_agrees_with_tokenizer_on_mailboxes(value: bytes) -> None:
    assert author_domain_from_value(value) == _slow(value)


_plain_quoted = st.text(alphabet="ab ,<>@()[];:\u00e9", max_size=8).map(
    lambda s: b'"' + s.encode("utf-8") + b'"')
_pair_quoted = st.lists(st.sampled_from([b"a", b" ", b"\\\"", b"\\\\", b"\\a", b","]),
                        max_size=5).map(lambda parts: b'"' + b"".join(parts) + b'"')


@st.composite
def _everyday(draw: st.DrawFn) -> bytes:
    """Mostly well-formed one-mailbox values (most are on the fast path)."""
    parts = draw(st.lists(st.one_of(_word, _plain_quoted, _pair_quoted), max_size=3))
    display = b"".join(p + draw(st.sampled_from([b" ", b"", b"\t"])) for p in parts)
    local = draw(_local.filter(bool))
    domain = draw(_domain.filter(bool))
    angle: bool = draw(st.booleans())
    if parts or angle:
        return b" " + display + b"<" + local + b"@" + domain + b">"
    return b" " + local + b"@" + domain


@settings(max_examples=1500, deadline=None)
@given(_everyday())
def test_fast_path_agrees_with_tokenizer_on_everyday_values(value: bytes) -> None:
    assert author_domain_from_value(value) == _slow(value)


@pytest.mark.parametrize(
    "value",
    [
        b" Alice Example <alice@example.com>",
        b' "Joe Q. Public" <john.q.public@Example.COM>',
        b" alice@example.com",
        b"\r\n\tBob <bob@sub.example.org.>",
        b" <carol@example.net>",
        b" no-such-name <x@exa..mple.com>",  # NO_DOMAIN, on the fast path too
    ],
)
def test_everyday_forms_take_the_fast_path(value: bytes) -> None:
    assert _fast_taken(value)
    assert author_domain_from_value(value) == _slow(value)


def test_fast_path_results() -> None:
    # expectations from RFC 5322 §3.4 (the addr-spec's domain) and RFC 4343 (case)
    assert author_domain_from_value(b" Alice <alice@Example.COM>").domains == ("example.com",)
    bad = author_domain_from_value(b" x <a@exa..mple.com>")
    assert bad.problem is AuthorProblem.NO_DOMAIN
    assert bad.mailboxes == 1
    assert bad.detail == "a@exa..mple.com"


@pytest.mark.parametrize(
    "value",
    [
        b" Mary <mary@x.test>, jdoe@one.test",  # two mailboxes
        b" Pete(A nice chap) <pete@silly.test>",  # a comment
        b" a@[192.0.2.1]",  # a domain literal
        b" Group: a@x.test;",  # group syntax
        "J\u00f6rg <j@b\u00fccher.example>".encode(),  # a U-label domain (IDNA on the slow path)
    ],
)
def test_other_forms_take_the_tokenizer(value: bytes) -> None:
    assert not _fast_taken(value)
