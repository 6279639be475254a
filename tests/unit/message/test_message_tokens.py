"""The CFWS-aware tokenizer (RFC 5322 §3.2.2 comments nest; §3.2.4 quoted strings)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.limits import MESSAGE_COMMENT_DEPTH_MAX
from mailmoat.message import Kind, comment_text, tokenize


def kinds(text: bytes) -> list[tuple[Kind, bytes]]:
    return [(t.kind, t.text) for t in tokenize(text).items]


def test_words_comments_literals_angles_specials() -> None:
    assert kinds(b'from a.example (b.example [192.0.2.1]) by c; "q s" <x@y>, [IPv6:::1]') == [
        (Kind.WORD, b"from"), (Kind.WORD, b"a.example"),
        (Kind.COMMENT, b"b.example [192.0.2.1]"),
        (Kind.WORD, b"by"), (Kind.WORD, b"c"), (Kind.SEMI, b";"),
        (Kind.QUOTED, b'"q s"'), (Kind.ANGLE, b"<x@y>"), (Kind.COMMA, b","),
        (Kind.LITERAL, b"[IPv6:::1]"),
    ]


def test_comments_nest_and_keep_inner_parentheses() -> None:
    # Postfix: "(using TLSv1.3 with cipher X (256/256 bits))" is ONE comment.
    tokens = tokenize(b"(using TLSv1.3 with cipher X (256/256 bits)) by y")
    assert tokens.items[0].kind is Kind.COMMENT
    assert tokens.items[0].text == b"using TLSv1.3 with cipher X (256/256 bits)"
    assert [t.text for t in tokens.items[1:]] == [b"by", b"y"]
    assert not tokens.unclosed


def test_quoted_pair_and_quote_inside_comment() -> None:
    # ccontent = ctext / quoted-pair / comment: "\)" does not close; DQUOTE is ctext there
    tokens = tokenize(b'(a \\) "b) c')
    assert [(t.kind, t.text) for t in tokens.items] == [(Kind.COMMENT, b'a \\) "b'),
                                                        (Kind.WORD, b"c")]
    assert comment_text(b'a \\) "b') == b'a ) "b'


def test_parentheses_inside_quoted_string_are_not_comments() -> None:
    assert kinds(b'"a (b) \\" c" d') == [(Kind.QUOTED, b'"a (b) \\" c"'), (Kind.WORD, b"d")]


def test_unclosed_forms_run_to_the_end_and_are_flagged() -> None:
    for text in (b"a (b c", b'a "b c', b"a [b c", b"a <b c", b'a "b\\"'):
        assert tokenize(text).unclosed, text
    assert not tokenize(b'a "b\\\\"').unclosed  # an escaped backslash, then the closing quote


def test_stray_close_parenthesis_is_dropped_and_counted() -> None:
    tokens = tokenize(b"a ) b")
    assert [t.text for t in tokens.items] == [b"a", b"b"]
    assert tokens.stray_close == 1


def test_nesting_depth_is_bounded() -> None:
    deep = b"(" * (MESSAGE_COMMENT_DEPTH_MAX + 5) + b"x" + b")" * (MESSAGE_COMMENT_DEPTH_MAX + 5)
    tokens = tokenize(deep + b" tail")
    assert tokens.too_deep
    assert tokens.items[0].kind is Kind.COMMENT
    ok = b"(" * MESSAGE_COMMENT_DEPTH_MAX + b"x" + b")" * MESSAGE_COMMENT_DEPTH_MAX
    assert not tokenize(ok).too_deep


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='()"\\[]<>;, a\r\n\t', max_size=80))
def test_any_bracketing_tokenizes_and_keeps_every_word(text: str) -> None:
    data = text.encode()
    tokens = tokenize(data)
    # every token lies inside the input, in order
    starts = [t.start for t in tokens.items]
    assert starts == sorted(starts)
    assert all(data.startswith(t.text, t.start) or t.kind is Kind.COMMENT for t in tokens.items)
