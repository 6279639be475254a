"""The byte-preserving RFC 5322 message model (layer L1).

Header fields are kept exactly as received (:class:`HeaderField` ``raw``), so that DKIM can
hash them unchanged; :func:`parse_headers` is the bounded, linear-time header-section parser,
and :func:`tokenize` the comment-aware tokenizer that structured-field parsers build on.
"""

from mailmoat.message._headers import (
    Defect,
    HeaderDefect,
    HeaderField,
    Headers,
    LineEnding,
    find_header_end,
    normalise_crlf,
    parse_headers,
    split_message,
    unfold,
)
from mailmoat.message._structured import Kind, Token, Tokens, comment_text, tokenize

__all__ = [
    "Defect",
    "HeaderDefect",
    "HeaderField",
    "Headers",
    "Kind",
    "LineEnding",
    "Token",
    "Tokens",
    "comment_text",
    "find_header_end",
    "normalise_crlf",
    "parse_headers",
    "split_message",
    "tokenize",
    "unfold",
]
