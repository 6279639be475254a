"""The Author Domain: the domain of the RFC5322.From mailbox (RFC 7489 §6.6.1, RFC 9989 §5.3.1).

RFC 5322 §3.6.2 and §3.4::

    from            =   "From:" mailbox-list CRLF
    mailbox-list    =   (mailbox *("," mailbox)) / obs-mbox-list
    mailbox         =   name-addr / addr-spec
    name-addr       =   [display-name] angle-addr
    angle-addr      =   [CFWS] "<" addr-spec ">" [CFWS] / obs-angle-addr
    addr-spec       =   local-part "@" domain

RFC 5322 §3.6 allows exactly one From field. RFC 9989 §5.3.1: "If zero or more than one domain
is extracted from the RFC5322.From header field, then DMARC validation is not possible ... In
the case where more than one domain is retrieved, the Mail Receiver MAY choose to go forward";
RFC 7489 §6.6.1: for one field with several mailboxes, "apply the DMARC check using each of
those domains ... and apply the most strict policy selected among the checks that fail".
RFC 9989 §5.3.1: a U-label domain "MUST be converted to an A-label".

The outcome (:class:`AuthorDomain`) names the problem, and ``check_message`` turns it into a
DMARC result: no From field → ``none`` ("no aligned identifier could be extracted", RFC 7489
§11.2); several From fields, or a From field we cannot read a domain from → ``permerror`` (the
message is not RFC 5322, RFC 9989 §4.4: "there is no reliable way to determine a DMARC Policy
Record"; a ``none`` here would let a malformed From escape a published ``p=reject``); one field
with several domains → every domain is checked and the strictest failing result wins (RFC 7489
§6.6.1).

SECURITY: the field value is untrusted. It is bounded by the header parser, tokenised by the
linear :func:`mailmoat.message.tokenize` (comments, quoted strings and angle brackets are
single tokens, so a ``,`` or ``@`` inside them never splits or ends an address; the two
everyday one-mailbox forms are first matched by two anchored patterns with possessive
quantifiers over disjoint classes, linear, which give the tokenizer's result), and the
domain is checked as a DNS name (:func:`mailmoat.resolver.normalize_name`). ``email.utils`` is
never used (CVE-2023-27043). Group syntax, domain literals and unbalanced brackets are refused.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

import idna

from mailmoat.errors import DNSPermanentError
from mailmoat.message import Headers, Kind, Token, tokenize, unfold
from mailmoat.resolver import normalize_name

__all__ = ["AuthorDomain", "AuthorProblem", "author_domain", "author_domain_from_value"]


class AuthorProblem(enum.StrEnum):
    NO_FROM = "no From header field"
    MULTIPLE_FROM_FIELDS = "more than one From header field (RFC 5322 §3.6 allows one)"
    NO_MAILBOX = "the From field holds no mailbox"
    UNPARSEABLE = "the From field could not be parsed as a mailbox-list"
    NO_DOMAIN = "a From mailbox has no usable domain"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorDomain:
    """The Author Domain(s) of a message. ``domains`` are distinct A-label domains in order;
    ``domain`` is the single one when there is exactly one and no problem."""

    domains: tuple[str, ...] = ()
    mailboxes: int = 0
    problem: AuthorProblem | None = None
    detail: str = ""

    @property
    def domain(self) -> str | None:
        return self.domains[0] if self.problem is None and len(self.domains) == 1 else None


def _domain_of(address: str) -> str | None:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or domain.startswith("["):
        return None
    domain = domain.rstrip(".")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError:
            return None
    try:
        normal = normalize_name(domain)
    except DNSPermanentError:
        return None
    return normal or None


_ADDR_KINDS = (Kind.WORD, Kind.QUOTED, Kind.LITERAL)


def _addr_spec(tokens: list[Token]) -> str | None:
    """An addr-spec from its tokens, CFWS dropped: adjacent words, quoted strings (a quoted
    local-part such as "a b"@example.com) and a domain-literal; anything else is not one."""
    words = [t for t in tokens if t.kind is not Kind.COMMENT]
    if not words or any(t.kind not in _ADDR_KINDS for t in words):
        return None
    return b"".join(t.text for t in words).decode("utf-8", "replace")


def _mailbox_address(tokens: list[Token]) -> str | None:
    """The addr-spec of one mailbox (tokens between commas), or None if it is not one."""
    words = [t for t in tokens if t.kind is not Kind.COMMENT]
    angles = [t for t in words if t.kind is Kind.ANGLE]
    if len(angles) > 1:
        return None
    if not angles:
        return _addr_spec(tokens)
    angle = angles[0]
    if words[-1] is not angle:
        return None  # text after the angle-addr
    # CFWS may appear inside the angle-addr too (RFC 5322 Appendix A.5:
    # <pete(his account)@silly.test(his host)>), so its inside is tokenised again.
    inner = tokenize(angle.text[1:-1])
    if inner.unclosed or inner.stray_close or any(
        t.kind in (Kind.SEMI, Kind.ANGLE) for t in inner.items
    ):
        return None
    items = list(inner.items)
    # obs-angle-addr = [CFWS] "<" obs-route addr-spec ">" [CFWS]; obs-route = obs-domain-list ":"
    first = next((t for t in items if t.kind is not Kind.COMMENT), None)
    if first is not None and first.text.startswith(b"@"):
        colon = next((i for i, t in enumerate(items) if t.kind is Kind.WORD and b":" in t.text),
                     None)
        if colon is None:
            return None
        rest = items[colon].text.partition(b":")[2]
        tail = [Token(kind=Kind.WORD, text=rest, start=items[colon].start)] if rest else []
        items = tail + items[colon + 1 :]
    return _addr_spec(items)  # a "," left here is not addr-spec: refused


# The two everyday forms of a From field body with one mailbox, read without the tokenizer
# (the result is the one the tokenizer path gives: tests/unit/auth/test_dmarc_author_fast.py):
#   display-name <local@domain>   (words and closed quoted strings, then one angle-addr)
#   local@domain
# Only characters whose tokens are unambiguous are allowed: a word is the tokenizer's WORD
# class, a quoted string is closed and has no line break, the address is one dot-atom-ish
# WORD; CR, LF, comments, literals, "," and ";" all take the tokenizer path. Possessive
# quantifiers over disjoint classes: linear, no backtracking.
_ADDR: Final = rb"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]++@[A-Za-z0-9.-]++)"
_ONE_ANGLE: Final = re.compile(
    rb'[ \t]*+(?:(?:[^ \t\r\n()"\[<;,]++|"(?:[^"\\\r\n]|\\[^\r\n])*+")[ \t]*+)*+<'
    + _ADDR + rb">[ \t]*+"
)
_ONE_ADDR: Final = re.compile(rb"[ \t]*+" + _ADDR + rb"[ \t]*+")


def author_domain_from_value(value: bytes) -> AuthorDomain:
    """The Author Domain(s) of one From field body (folded or not)."""
    text = unfold(value)
    simple = _ONE_ANGLE.fullmatch(text) or _ONE_ADDR.fullmatch(text)
    if simple is not None:
        address = simple.group(1).decode("ascii")
        domain = _domain_of(address)
        if domain is None:
            return AuthorDomain(problem=AuthorProblem.NO_DOMAIN, mailboxes=1,
                                detail=address[:100])
        return AuthorDomain(domains=(domain,), mailboxes=1)
    return _from_tokens(text)


def _from_tokens(text: bytes) -> AuthorDomain:
    """:func:`author_domain_from_value` of an unfolded body, through the tokenizer."""
    parsed = tokenize(text)
    if parsed.unclosed or parsed.stray_close:
        return AuthorDomain(problem=AuthorProblem.UNPARSEABLE, detail="unbalanced brackets")
    segments: list[list[Token]] = [[]]
    for token in parsed.items:
        if token.kind is Kind.SEMI:
            return AuthorDomain(
                problem=AuthorProblem.UNPARSEABLE, detail="group syntax is not allowed in From"
            )
        if token.kind is Kind.COMMA:
            segments.append([])
        else:
            segments[-1].append(token)
    domains: list[str] = []
    mailboxes = 0
    for segment in segments:
        if all(t.kind is Kind.COMMENT for t in segment):
            continue  # obs-mbox-list allows empty elements
        address = _mailbox_address(segment)
        if address is None:
            return AuthorDomain(problem=AuthorProblem.UNPARSEABLE, mailboxes=mailboxes)
        mailboxes += 1
        domain = _domain_of(address)
        if domain is None:
            return AuthorDomain(
                problem=AuthorProblem.NO_DOMAIN, mailboxes=mailboxes, detail=address[:100]
            )
        if domain not in domains:
            domains.append(domain)
    if not mailboxes:
        return AuthorDomain(problem=AuthorProblem.NO_MAILBOX)
    return AuthorDomain(domains=tuple(domains), mailboxes=mailboxes)


def author_domain(headers: Headers) -> AuthorDomain:
    """The Author Domain(s) of a parsed header section (see the module docstring)."""
    fields = headers.get_all("From")
    if not fields:
        return AuthorDomain(problem=AuthorProblem.NO_FROM)
    if len(fields) > 1:
        found = [author_domain_from_value(f.value) for f in fields]
        domains = tuple(dict.fromkeys(d for a in found for d in a.domains))
        return AuthorDomain(
            domains=domains,
            mailboxes=sum(a.mailboxes for a in found),
            problem=AuthorProblem.MULTIPLE_FROM_FIELDS,
        )
    return author_domain_from_value(fields[0].value)
