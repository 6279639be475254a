"""Compose an RFC 5322 / MIME message from form fields, refusing header injection (layer L1).

:func:`compose` turns :class:`MessageFields` (to, cc, bcc, from, reply-to, subject, text,
html, attachments, a few extra header fields) into the octets of a message: RFC 5322 header
fields (folded, every line at most 998 octets and CRLF-terminated, RFC 5322 §2.1.1 and
§2.2.3), RFC 2047 encoded-words for non-ASCII display names and subjects, MIME (RFC 2045/2046)
``multipart/alternative`` for text + HTML and ``multipart/mixed`` for attachments (base64,
RFC 2045 §6.8), RFC 2231 parameter encoding for non-ASCII or long file names, a ``Date``
(RFC 5322 §3.3, from the injected clock) and a ``Message-ID`` (§3.6.4, from the injected
randomness).

SECURITY: every field is untrusted (typed by a visitor into a web form). Nothing a field holds
can become a header line or a MIME boundary of its own:

* **Refused in every header field** (From, To, Cc, Bcc, Reply-To, Subject, display names,
  attachment file names and content types, extra header names and values), with a
  :class:`~mailmoat.errors.HeaderInjectionError` naming the field and the character:
  CR, LF, CRLF and every other line break Python or a mail client might honour (VT, FF,
  U+001C-U+001E, NEL U+0085, LINE SEPARATOR U+2028, PARAGRAPH SEPARATOR U+2029), NUL and every
  other C0 or C1 control character and DEL (TAB included: a header field built from a form
  has no use for it, and "CRLF TAB" is how folding smuggles lines), lone surrogates (not
  encodable), and the bidirectional overrides and isolates U+202A-U+202E, U+2066-U+2069
  (the "RTLO" file-name spoof ``invoice\\u202Egpj.exe``).
* **Encoded forms are refused, not decoded** (decision): a user-supplied RFC 2047
  encoded-word (``=?charset?B|Q?...?=``) anywhere in a header field, because a reader
  would decode it (``=?utf-8?Q?=0D=0ABcc:...?=``) and a legitimate form never needs one:
  plain Unicode is encoded here. Re-encoding it literally would also be safe; refusing
  tells the form developer about a double-encoding bug or an attack. Percent-encoded line
  breaks and NUL (``%0D``, ``%0A``, ``%00``, their ``%25``-double-encoded forms, ``%C2%85``,
  ``%E2%80%A8``/``%A9``) and HTML numeric character references to them (``&#10;``,
  ``&#x0D;``, ...) are refused in every header field, the Subject included (decision): as
  text they are harmless here, but they only appear when a form forgot to decode its input
  or someone probes for a downstream system that decodes again; a real subject needing the
  literal text "%0A" is rare enough to ask for a rewording.
* **One address per address entry**: an entry holding a second address (an unquoted ``,``
  or ``;``, a second ``<...>``) is refused; so is a display name that holds ``<`` or ``>``
  (``"support@bank.example <support@bank.example>" <evil@example.net>``) or a stray double
  quote (``Foo", victim@example.net, "Bar <a@example.org>``). The address itself must match
  the RFC 5321 ``Mailbox`` grammar (:mod:`mailmoat.smtp._abnf`, our own linear parser, never
  :mod:`email.utils`: CVE-2023-27043), so every address is also a valid envelope address.
* **Extra header fields** are limited to ``X-*`` and a short allow-list of harmless names;
  ``Bcc``, ``To``, ``Content-Type`` and everything this module writes itself are refused.
* **Bounds**: characters per field (``limits.SUBMIT_*``), recipients, attachments, extra
  fields, and the size of the whole message (``max_size``); over a bound is a
  :class:`~mailmoat.errors.FieldError` (``code="too_long"``) or
  :class:`~mailmoat.errors.LimitExceeded` for the whole message.
* **Bodies** are not header fields: any text is allowed. Bare CR and bare LF become CRLF;
  a body that is not short-lined printable ASCII is quoted-printable (RFC 2045 §6.7), so no
  body line exceeds 76 octets and no octet is raw 8-bit or a control. Dot-stuffing is the
  SMTP transport's job, not this module's. MIME boundaries are 128 random bits and are
  re-drawn if a part's encoded content happens to contain one.

Every check is a single linear pass (compiled patterns without nested quantifiers).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import idna

from mailmoat.clock import Clock
from mailmoat.errors import FieldError, HeaderInjectionError, LimitExceeded
from mailmoat.limits import (
    MESSAGE_LINE_MAX,
    SUBMIT_ADDRESS_FIELD_MAX,
    SUBMIT_DISPLAY_NAME_MAX,
    SUBMIT_FILENAME_MAX,
    SUBMIT_HEADER_NAME_MAX,
    SUBMIT_MAX_ATTACHMENTS,
    SUBMIT_MAX_EXTRA_HEADERS,
    SUBMIT_MAX_MESSAGE_SIZE,
    SUBMIT_MAX_RECIPIENTS,
    SUBMIT_SUBJECT_MAX,
)
from mailmoat.smtp._abnf import AddressSyntaxError, parse_rcpt_args

__all__ = [
    "ALLOWED_EXTRA_HEADERS",
    "Attachment",
    "ComposedMessage",
    "Mailbox",
    "MessageFields",
    "check_header_text",
    "compose",
    "parse_mailbox",
]

#: RFC 5322 §2.1.1: "Each line of characters MUST be no more than 998 characters, and SHOULD
#: be no more than 78 characters, excluding the CRLF."
_SOFT_WIDTH: Final = 78
_CRLF: Final = "\r\n"

# --- what no header field may hold ---------------------------------------------------------

#: Characters that end a line for some reader: str.splitlines() splits on exactly these.
_LINE_BREAKS: Final = {
    0x0A: "LINE FEED", 0x0D: "CARRIAGE RETURN", 0x0B: "LINE TABULATION (vertical tab)",
    0x0C: "FORM FEED", 0x1C: "FILE SEPARATOR", 0x1D: "GROUP SEPARATOR",
    0x1E: "RECORD SEPARATOR", 0x85: "NEXT LINE (NEL)", 0x2028: "LINE SEPARATOR",
    0x2029: "PARAGRAPH SEPARATOR",
}
_NAMED: Final = {0x00: "NUL", 0x09: "CHARACTER TABULATION (TAB)", 0x7F: "DELETE",
                 0xFEFF: "ZERO WIDTH NO-BREAK SPACE (BOM)"}
#: C0 controls, DEL, C1 controls (NEL among them), LS, PS, bidi embeddings/overrides and
#: isolates, BOM, surrogates. One character class: linear.
_FORBIDDEN: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
# encoded-word = "=?" charset "?" encoding "?" encoded-text "?="      (RFC 2047 §2)
# (charset may carry an RFC 2231 §5 language: "=?utf-8*en?Q?...?=")
_ENCODED_WORD: Final = re.compile(r"=\?[^?]*\?[bBqQ]\?[^?]*\?=")
#: Percent-encoded NUL, CR, LF (optionally double-encoded as %25..), NEL, LS and PS.
_PERCENT_BREAK: Final = re.compile(
    r"%(?:25)*(?:0[0adAD]|[cC]2%(?:25)*85|[eE]2%(?:25)*80%(?:25)*[aA][89])"
)
#: HTML numeric character references to NUL, CR, LF, NEL, LS, PS (decimal or hex).
_ENTITY_BREAK: Final = re.compile(
    r"&#(?:0*(?:0|10|13|133|8232|8233)|[xX]0*(?:0|[aAdD]|85|2028|2029))(?![0-9A-Fa-f])"
)


def _describe(char: str) -> tuple[str, bool]:
    """A human name for a forbidden character and whether it is a line break."""
    code = ord(char)
    if code in _LINE_BREAKS:
        return f"a line break (U+{code:04X} {_LINE_BREAKS[code]})", True
    if code in _NAMED:
        return f"a control character (U+{code:04X} {_NAMED[code]})", False
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X}), which is not text", False
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return f"a bidirectional control character (U+{code:04X})", False
    return f"a control character (U+{code:04X})", False


def check_header_text(value: object, *, field: str, max_chars: int) -> str:
    """Return ``value`` if it may go into a header field, else raise naming ``field``.

    Raises :class:`HeaderInjectionError` for line breaks, controls and encoded forms of
    them (see the module docstring), :class:`FieldError` for a non-string or a value longer
    than ``max_chars`` characters (``code="too_long"``).
    """
    if not isinstance(value, str):
        raise FieldError(field=field, reason=f"must be a string, not {type(value).__name__}",
                         code="invalid_type")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        what, _ = _describe(bad.group())
        raise HeaderInjectionError(field=field, reason=f"contains {what} at position "
                                   f"{bad.start()}; header fields cannot hold it")
    if (match := _ENCODED_WORD.search(value)) is not None:
        raise HeaderInjectionError(
            field=field,
            reason=f"contains an RFC 2047 encoded-word ({match.group()[:40]!r}); pass plain "
            "Unicode text, mailmoat encodes it itself",
        )
    if (match := _PERCENT_BREAK.search(value)) is not None:
        raise HeaderInjectionError(
            field=field,
            reason=f"contains a percent-encoded line break or NUL ({match.group()!r}); "
            "decode form data once before passing it",
        )
    if (match := _ENTITY_BREAK.search(value)) is not None:
        raise HeaderInjectionError(
            field=field,
            reason=f"contains an HTML character reference to a line break or NUL "
            f"({match.group()!r})",
        )
    if len(value) > max_chars:
        raise FieldError(field=field, reason=f"is longer than {max_chars} characters",
                         code="too_long")
    return value


# --- addresses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Mailbox:
    """One address: ``address`` as it goes into the envelope and the header field (domain
    lower-cased, A-labels when the local part is ASCII; UTF-8 only with a non-ASCII local
    part, RFC 6531/6532), and the display name, if any, as plain Unicode."""

    address: str
    name: str | None = None

    @property
    def is_utf8(self) -> bool:
        """Whether the address needs SMTPUTF8 (RFC 6531) to travel."""
        return not self.address.isascii()


def _unquoted_specials(text: str, specials: str) -> list[tuple[int, str]] | None:
    """Positions of ``specials`` outside double-quoted strings (``\\`` escapes inside
    quotes, RFC 5322 §3.2.4 quoted-pair), or ``None`` when a quote is left open."""
    found: list[tuple[int, str]] = []
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in specials:
            found.append((i, ch))
        i += 1
    return None if quoted else found


def _display_name(text: str, *, field: str) -> str | None:
    """The display name written before ``<address>``, unquoted, or None if empty."""
    text = text.strip(" ")
    if not text:
        return None
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        # A whole quoted-string (RFC 5322 §3.2.4): undo the quoted-pairs.
        inner = text[1:-1]
        out: list[str] = []
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
                continue
            if ch == '"':
                raise HeaderInjectionError(
                    field=field, reason="display name has a stray double quote; quote the "
                    'whole name and escape inner quotes as \\"')
            out.append(ch)
            i += 1
        name = "".join(out).strip(" ")
    else:
        if '"' in text:
            raise HeaderInjectionError(
                field=field, reason="display name has a stray double quote; quote the whole "
                'name and escape inner quotes as \\"')
        # RFC 5322 §3.4: outside quotes, "," separates addresses and ":" ... ";" makes a
        # group, so another reader would see more than one entry here: refused (a name
        # holding them must be quoted: "Doe, John" <john@example.com>).
        for special in ",;:":
            if special in text:
                raise HeaderInjectionError(
                    field=field, reason=f"display name has {special!r} outside quotes, which "
                    "separates addresses or starts a group; quote the name")
        name = text
    if "<" in name or ">" in name:
        raise HeaderInjectionError(
            field=field, reason="display name contains '<' or '>' (an address inside a display "
            "name misleads the reader and may smuggle a second address)")
    if len(name) > SUBMIT_DISPLAY_NAME_MAX:
        raise FieldError(field=field, code="too_long",
                         reason=f"display name is longer than {SUBMIT_DISPLAY_NAME_MAX} "
                         "characters")
    return name or None


def _addr_spec(text: str, *, field: str) -> str:
    """Validate ``local@domain`` with the RFC 5321 Mailbox grammar; return its canonical form."""
    specials = _unquoted_specials(text, ",; <>")
    if specials is None:
        raise FieldError(field=field, reason="address has an unterminated quoted local part")
    for _, ch in specials:
        if ch in ",;":
            raise HeaderInjectionError(
                field=field, reason=f"holds more than one address ({ch!r} outside quotes); "
                "give one address per entry")
        if ch in "<>":
            raise HeaderInjectionError(
                field=field, reason="holds more than one '<address>'; a display name must "
                "not contain '<' or '>'")
        raise FieldError(field=field, reason="address contains white space; write "
                         "'Display Name <local@domain>' to give a name")
    # Mailbox = Local-part "@" ( Domain / address-literal )             (RFC 5321 §4.1.2)
    try:
        parsed, _ = parse_rcpt_args(b"<" + text.encode("utf-8") + b">",
                                    smtputf8=not text.isascii())
    except AddressSyntaxError as err:
        raise FieldError(field=field, reason=f"is not a valid email address: {err.reason}",
                         code="invalid_address") from None
    if not parsed.domain:  # RCPT's special <Postmaster> has no domain
        raise FieldError(field=field, reason="is not a valid email address: no domain",
                         code="invalid_address")
    domain = parsed.domain
    local = str(parsed).rpartition("@")[0]
    if local.isascii() and not domain.isascii():
        # RFC 6531 is needed only for a non-ASCII local part: a U-label domain has an
        # A-label form (RFC 5890 §2.3.2.1) that every receiver understands.
        domain = ".".join(idna.alabel(label).decode("ascii") if not label.isascii() else label
                          for label in domain.split("."))
    return f"{local}@{domain}"


def parse_mailbox(value: object, *, field: str) -> Mailbox:
    """One mailbox from ``local@domain`` or ``Display Name <local@domain>``.

    Raises :class:`HeaderInjectionError`/:class:`FieldError` naming ``field`` (see the
    module docstring for what is refused).
    """
    text = check_header_text(value, field=field, max_chars=SUBMIT_ADDRESS_FIELD_MAX).strip(" ")
    if not text:
        raise FieldError(field=field, reason="is empty", code="missing")
    specials = _unquoted_specials(text, "<>")
    if specials is None:
        raise FieldError(field=field, reason="has an unterminated double quote")
    if not specials:
        return Mailbox(address=_addr_spec(text, field=field))
    # name-addr = [display-name] angle-addr ; angle-addr = [CFWS] "<" addr-spec ">" [CFWS]
    # (RFC 5322 §3.4): exactly one "<" ... ">" pair, closing the entry.
    first, last = specials[0], specials[-1]
    if (len(specials) != 2 or first[1] != "<" or last[1] != ">"
            or last[0] != len(text) - 1):
        raise HeaderInjectionError(
            field=field, reason="holds more than one '<address>' or text after it; a display "
            "name must not contain '<' or '>'")
    name = _display_name(text[: first[0]], field=field)
    address = _addr_spec(text[first[0] + 1 : last[0]], field=field)
    return Mailbox(address=address, name=name)


# --- the fields -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file to attach: its name, MIME type (``type/subtype``, no parameters) and bytes."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageFields:
    """What a form hands over. Addresses are ``local@domain`` or ``Name <local@domain>``, one
    per entry. ``bcc`` goes into the envelope only. ``headers`` are extra (name, value) header
    fields from :data:`ALLOWED_EXTRA_HEADERS` or ``X-*``."""

    from_: str
    to: Sequence[str] = ()
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: str | None = None
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ComposedMessage:
    """The message octets (CRLF line ends) and what the envelope needs."""

    data: bytes
    mail_from: str
    recipients: tuple[str, ...]
    message_id: str
    smtputf8: bool


#: Extra header fields a form may set besides ``X-*`` (lower-case name → value kind):
#: "text" is unstructured (encoded-words for non-ASCII), "ascii" must be printable ASCII
#: (message identifiers, URIs, keywords of a registry).
ALLOWED_EXTRA_HEADERS: Final = {
    "in-reply-to": "ascii",  # RFC 5322 §3.6.4
    "references": "ascii",  # RFC 5322 §3.6.4
    "keywords": "text",  # RFC 5322 §3.6.5
    "comments": "text",  # RFC 5322 §3.6.5
    "organization": "text",  # RFC 5536 §3.2.8 / common usage
    "list-id": "ascii",  # RFC 2919
    "list-unsubscribe": "ascii",  # RFC 2369
    "list-unsubscribe-post": "ascii",  # RFC 8058
    "auto-submitted": "ascii",  # RFC 3834 §5
    "precedence": "ascii",  # RFC 3834 §3.1.8 (common usage)
    "feedback-id": "ascii",  # Gmail Feedback Loop
}
# field-name = 1*ftext ; ftext = %d33-57 / %d59-126                    (RFC 5322 §3.6.8)
_FIELD_NAME: Final = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>    (RFC 2045 §5.1)
# tspecials := "(" / ")" / "<" / ">" / "@" / "," / ";" / ":" / "\" / <"> / "/" / "[" / "]" /
#              "?" / "="
_MIME_WORD: Final = r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+"
_CONTENT_TYPE: Final = re.compile(rf"({_MIME_WORD})/({_MIME_WORD})")
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]*")


def _header_name(name: object, *, field: str) -> tuple[str, str]:
    text = check_header_text(name, field=field, max_chars=SUBMIT_HEADER_NAME_MAX)
    if not _FIELD_NAME.fullmatch(text):
        raise HeaderInjectionError(
            field=field, reason=f"{text!r} is not a header field name (RFC 5322 §3.6.8: "
            "printable ASCII without ':' or space)")
    low = text.lower()
    if low.startswith("x-") and len(low) > 2:
        return text, "text"
    kind = ALLOWED_EXTRA_HEADERS.get(low)
    if kind is None:
        raise HeaderInjectionError(
            field=field, reason=f"header field {text!r} cannot be set here; allowed are X-* "
            f"and {', '.join(sorted(ALLOWED_EXTRA_HEADERS))}")
    return text, kind


# --- encoding helpers -------------------------------------------------------------------------

#: RFC 2047 §2: "An 'encoded-word' may not be more than 75 characters long". With the
#: "=?utf-8?b?" prefix and "?=" suffix, 60 base64 characters (45 octets) remain.
_EW_OCTETS: Final = 45


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 B-encoded UTF-8 words, each <= 75 characters, each holding
    whole characters (RFC 2047 §5 (3): "Each 'encoded-word' MUST represent an integral
    number of characters")."""
    chunks: list[bytes] = []
    chunk = b""
    for ch in text:
        octets = ch.encode("utf-8")
        if len(chunk) + len(octets) > _EW_OCTETS:
            chunks.append(chunk)
            chunk = b""
        chunk += octets
    if chunk or not chunks:
        chunks.append(chunk)
    return ["=?utf-8?b?" + base64.b64encode(c).decode("ascii") + "?=" for c in chunks]


def _fold_words(prefix: str, words: Iterable[str]) -> str:
    """``prefix`` (``"Name:"``) and ``words`` joined by single spaces, folded (CRLF SP in
    place of the space, RFC 5322 §2.2.3) before a word that would take the line past 78
    characters. The callers bound each word so that every line stays within 998 octets."""
    lines = [prefix]
    for i, word in enumerate(words):
        line = lines[-1]
        if i and len(line) + 1 + len(word) > _SOFT_WIDTH:
            lines.append(" " + word)
        else:
            lines[-1] = line + " " + word
    return _CRLF.join(lines) + _CRLF


def _unstructured(name: str, value: str) -> str:
    """An unstructured field (Subject, Comments, X-*): plain folded ASCII when that is
    unambiguous, else RFC 2047 encoded-words (RFC 2047 §5 (1))."""
    if not value:
        return f"{name}:{_CRLF}"
    words = value.split(" ")
    plain = (value.isascii() and _PRINTABLE_ASCII.fullmatch(value) is not None
             and all(len(w) <= MESSAGE_LINE_MAX - 2 - len(name) for w in words)
             and not value.startswith(" ") and not value.endswith(" ") and "  " not in value)
    if plain:
        return _fold_words(f"{name}:", words)
    return _fold_words(f"{name}:", _encoded_words(value))


def _quoted_string(text: str) -> str:
    """RFC 5322 §3.2.4 quoted-string: escape only DQUOTE and backslash."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_words(mailbox: Mailbox) -> list[str]:
    """A mailbox as words to fold: the display name (quoted, or encoded-words when
    non-ASCII, RFC 2047 §5 (3)) then ``<addr-spec>``."""
    if mailbox.name is None:
        return [mailbox.address]
    if mailbox.name.isascii():
        return [_quoted_string(mailbox.name), f"<{mailbox.address}>"]
    return [*_encoded_words(mailbox.name), f"<{mailbox.address}>"]


def _address_field(name: str, mailboxes: Sequence[Mailbox]) -> str:
    """``From``/``To``/``Cc``/``Reply-To`` (RFC 5322 §3.4 address-list: mailboxes separated
    by commas), folded at the spaces between names, encoded-words and addresses."""
    words: list[str] = []
    for i, mailbox in enumerate(mailboxes):
        these = _mailbox_words(mailbox)
        if i < len(mailboxes) - 1:
            these[-1] += ","
        words += these
    return _fold_words(f"{name}:", words)


# attribute-char := <any (US-ASCII) CHAR except SPACE, CTLs, "*", "'", "%", or tspecials>
#                                                                       (RFC 2231 §7)
_ATTR_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)
#: Characters of one RFC 2231 continuation segment (keeps each folded line under 78).
_SEGMENT: Final = 48


def _parameter(attribute: str, value: str) -> list[str]:
    """A MIME parameter: ``attr="value"`` for short printable ASCII, else RFC 2231 §3-§4
    ``attr*0*=utf-8''%..`` continuations with percent-encoded UTF-8. A value holding a
    double quote or backslash is percent-encoded too: many readers mishandle quoted-pairs
    in parameters (Python's email package unquotes ``"\"x\""`` twice)."""
    if (value.isascii() and _PRINTABLE_ASCII.fullmatch(value) and len(value) <= _SEGMENT
            and '"' not in value and "\\" not in value):
        return [f"{attribute}={_quoted_string(value)}"]
    encoded = "".join(
        ch if ch in _ATTR_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in value
    )
    segments: list[str] = []
    pos = 0
    while pos < len(encoded):
        end = min(pos + _SEGMENT, len(encoded))
        # never split a %XX triplet
        cut = encoded.rfind("%", max(pos, end - 2), end)
        if cut > pos and end < len(encoded):
            end = cut
        segments.append(encoded[pos:end])
        pos = end
    if len(segments) == 1:
        return [f"{attribute}*=utf-8''{segments[0]}"]
    return [
        f"{attribute}*{i}*=" + ("utf-8''" if i == 0 else "") + seg
        for i, seg in enumerate(segments)
    ]


def _params_field(name: str, value: str, params: Sequence[str]) -> str:
    """``Name: value; p1; p2`` folded before each parameter that does not fit."""
    words = [value + (";" if params else "")]
    words += [p + (";" if i < len(params) - 1 else "") for i, p in enumerate(params)]
    return _fold_words(f"{name}:", words)


def _base64_body(data: bytes) -> str:
    """RFC 2045 §6.8: "The encoded output stream must be represented in lines of no more
    than 76 characters each"."""
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(encoded[i : i + 76] + _CRLF for i in range(0, len(encoded), 76))


def _normalise_newlines(text: str) -> str:
    """Bare CR and bare LF become CRLF (the body is CRLF-terminated lines, RFC 5322 §2.3)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SEVEN_BIT_LINE: Final = re.compile(r"[\x20-\x7e\t]{0,998}")


def _text_part(text: str, subtype: str) -> tuple[list[str], str]:
    """Header lines and encoded body of a text/* part (UTF-8; 7bit when the text is short-lined
    printable ASCII, else quoted-printable, RFC 2045 §6.7)."""
    lf = _normalise_newlines(text)
    lines = lf.split("\n")
    if all(_SEVEN_BIT_LINE.fullmatch(line) for line in lines):
        body = _CRLF.join(lines)
        encoding = "7bit"
        charset = "us-ascii"
    else:
        qp = binascii.b2a_qp(lf.encode("utf-8"), istext=True).decode("ascii")
        body = qp.replace("\n", _CRLF)
        encoding = "quoted-printable"
        charset = "utf-8"
    if not body.endswith(_CRLF):
        body += _CRLF
    headers = [
        _params_field("Content-Type", f"text/{subtype}", [f"charset={charset}"]),
        f"Content-Transfer-Encoding: {encoding}{_CRLF}",
    ]
    return headers, body


@dataclass(frozen=True, slots=True, kw_only=True)
class _Part:
    headers: list[str]
    body: str  # already encoded, CRLF line ends, ends with CRLF
    children: tuple[_Part, ...] = ()
    subtype: str = ""  # multipart subtype when children


def _render(part: _Part, new_boundary: Callable[[], str]) -> str:
    """The part's header fields, empty line and body; a multipart gets a boundary that
    occurs in none of its children (RFC 2046 §5.1.1: "the boundary delimiter MUST NOT appear
    inside any of the encapsulated parts")."""
    if not part.children:
        return "".join(part.headers) + _CRLF + part.body
    inner = [_render(child, new_boundary) for child in part.children]
    boundary = new_boundary()
    for _ in range(8):
        if all(boundary not in text for text in inner):
            break
        boundary = new_boundary()  # pragma: no cover - 128 random bits never collide
    else:  # pragma: no cover
        raise LimitExceeded("could not draw a MIME boundary absent from the content")
    header = _params_field("Content-Type", f"multipart/{part.subtype}",
                           [f'boundary="{boundary}"'])
    # RFC 2046 §5.1.1: "The CRLF preceding the boundary delimiter line is conceptually
    # attached to the boundary": one more CRLF after each part keeps the part's own last
    # line break.
    body = ("".join(f"--{boundary}{_CRLF}{text}{_CRLF}" for text in inner)
            + f"--{boundary}--{_CRLF}")
    return "".join(part.headers) + header + _CRLF + body


# --- Date and Message-ID ------------------------------------------------------------------

_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                  "Nov", "Dec")


def _date(now: float) -> str:
    """date-time = [ day-of-week "," ] date time [CFWS]                 (RFC 5322 §3.3)
    in UTC, written "+0000" (§3.3: "+0000" is UTC, "-0000" would mean "unknown")."""
    t = time.gmtime(int(now))
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


_B32: Final = "0123456789abcdefghjkmnpqrstvwxyz"


def _random_token(randbytes: Callable[[int], bytes], octets: int = 16) -> str:
    value = int.from_bytes(randbytes(octets), "big")
    out = []
    for _ in range((octets * 8 + 4) // 5):
        out.append(_B32[value & 31])
        value >>= 5
    return "".join(out)


# --- compose -------------------------------------------------------------------------------


def _address_list(values: object, *, field: str) -> list[Mailbox]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Sequence):
        raise FieldError(field=field, reason="must be a list of addresses", code="invalid_type")
    if len(values) > SUBMIT_MAX_RECIPIENTS:  # bound the work before parsing any entry
        raise FieldError(field=field, code="too_many",
                         reason=f"more than {SUBMIT_MAX_RECIPIENTS} addresses")
    return [parse_mailbox(v, field=f"{field}[{i}]") for i, v in enumerate(values)]


def compose(
    fields: MessageFields,
    *,
    clock: Clock,
    randbytes: Callable[[int], bytes],
    message_id_domain: str | None = None,
    max_size: int = SUBMIT_MAX_MESSAGE_SIZE,
) -> ComposedMessage:
    """Build the message for ``fields``; raise :class:`FieldError` (or its subclass
    :class:`HeaderInjectionError`) naming the first bad field, or :class:`LimitExceeded`
    when the whole message would be larger than ``max_size`` octets.

    ``clock`` gives the Date, ``randbytes(n)`` the Message-ID and MIME boundaries (inject
    :func:`secrets.token_bytes` in production). ``message_id_domain`` is the right-hand side
    of the Message-ID (default: the From domain).
    """
    # --- validate every field before building anything -----------------------------------
    sender = parse_mailbox(fields.from_, field="from")
    to = _address_list(fields.to, field="to")
    cc = _address_list(fields.cc, field="cc")
    bcc = _address_list(fields.bcc, field="bcc")
    reply_to = (None if fields.reply_to is None
                else parse_mailbox(fields.reply_to, field="reply_to"))
    subject = check_header_text(fields.subject, field="subject", max_chars=SUBMIT_SUBJECT_MAX)
    recipients = list(dict.fromkeys(m.address for m in (*to, *cc, *bcc)))
    if not recipients:
        raise FieldError(field="to", reason="at least one recipient (to, cc or bcc) is needed",
                         code="missing")
    if len(recipients) > SUBMIT_MAX_RECIPIENTS:
        raise FieldError(field="to", code="too_many",
                         reason=f"more than {SUBMIT_MAX_RECIPIENTS} recipients (to, cc, bcc)")
    for name, value in (("text", fields.text), ("html", fields.html)):
        if value is not None and not isinstance(value, str):
            raise FieldError(field=name, reason="must be a string", code="invalid_type")
        if value is not None and (bad := _SURROGATE.search(value)) is not None:
            raise FieldError(field=name, reason=f"is not valid Unicode (lone surrogate "
                             f"U+{ord(bad.group()):04X} at position {bad.start()})")
    if len(fields.attachments) > SUBMIT_MAX_ATTACHMENTS:
        raise FieldError(field="attachments", code="too_many",
                         reason=f"more than {SUBMIT_MAX_ATTACHMENTS} attachments")
    attachments: list[tuple[str, str, bytes]] = []
    for i, att in enumerate(fields.attachments):
        where = f"attachments[{i}]"
        filename = check_header_text(att.filename, field=f"{where}.filename",
                                     max_chars=SUBMIT_FILENAME_MAX).strip()
        if not filename or filename in (".", ".."):
            raise FieldError(field=f"{where}.filename", reason="is empty", code="missing")
        if "/" in filename or "\\" in filename:
            raise FieldError(field=f"{where}.filename",
                             reason="must not contain a path separator ('/' or '\\')")
        ctype = check_header_text(att.content_type, field=f"{where}.content_type",
                                  max_chars=SUBMIT_HEADER_NAME_MAX * 2)
        match = _CONTENT_TYPE.fullmatch(ctype)
        if match is None:
            raise HeaderInjectionError(
                field=f"{where}.content_type",
                reason=f"{ctype!r} is not a MIME type/subtype (RFC 2045 §5.1 tokens, no "
                "parameters)")
        if match.group(1).lower() in ("multipart", "message"):
            # RFC 2046 §5.2.1: message/rfc822 bodies may not be base64; a multipart needs
            # boundaries of its own. Neither can be attached as opaque bytes.
            raise FieldError(field=f"{where}.content_type",
                             reason=f"{ctype!r} cannot be attached as a file; use "
                             "application/octet-stream")
        if not isinstance(att.data, bytes | bytearray):
            raise FieldError(field=f"{where}.data", reason="must be bytes", code="invalid_type")
        attachments.append((filename, ctype.lower(), bytes(att.data)))
    if len(fields.headers) > SUBMIT_MAX_EXTRA_HEADERS:
        raise FieldError(field="headers", code="too_many",
                         reason=f"more than {SUBMIT_MAX_EXTRA_HEADERS} extra header fields")
    extra: list[str] = []
    for i, item in enumerate(fields.headers):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise FieldError(field=f"headers[{i}]", reason="must be a (name, value) pair",
                             code="invalid_type")
        hname, kind = _header_name(item[0], field=f"headers[{i}].name")
        hvalue = check_header_text(item[1], field=f"headers[{i}].value",
                                   max_chars=SUBMIT_SUBJECT_MAX)
        if kind == "ascii":
            if not (hvalue.isascii() and _PRINTABLE_ASCII.fullmatch(hvalue)):
                raise FieldError(field=f"headers[{i}].value",
                                 reason=f"{hname} takes printable ASCII only")
            words = hvalue.split(" ")
            if any(len(w) > MESSAGE_LINE_MAX - 2 - len(hname) for w in words):
                raise FieldError(field=f"headers[{i}].value", code="too_long",
                                 reason="has a word too long for a 998-octet line")
            extra.append(_fold_words(f"{hname}:", [w for w in words if w] or [""]))
        else:
            extra.append(_unstructured(hname, hvalue))

    # --- build -------------------------------------------------------------------------
    smtputf8 = any(m.is_utf8 for m in (sender, *to, *cc, *bcc, *([reply_to] if reply_to else [])))
    domain = message_id_domain or sender.address.rpartition("@")[2]
    if not domain.isascii():  # pragma: no cover - only with a UTF-8 local part
        domain = idna.encode(domain).decode("ascii")
    message_id = f"<{_random_token(randbytes)}@{domain.strip('[]')}>"
    head = [f"Date: {_date(clock.now())}{_CRLF}", _address_field("From", [sender])]
    if reply_to is not None:
        head.append(_address_field("Reply-To", [reply_to]))
    if to:
        head.append(_address_field("To", to))
    if cc:
        head.append(_address_field("Cc", cc))
    head.append(_unstructured("Subject", subject))
    head.append(f"Message-ID: {message_id}{_CRLF}")
    head.append(f"MIME-Version: 1.0{_CRLF}")
    head.extend(extra)

    body_parts: list[_Part] = []
    if fields.text is not None or fields.html is None:
        headers, body = _text_part(fields.text or "", "plain")
        body_parts.append(_Part(headers=headers, body=body))
    if fields.html is not None:
        headers, body = _text_part(fields.html, "html")
        body_parts.append(_Part(headers=headers, body=body))
    content = body_parts[0] if len(body_parts) == 1 else _Part(
        headers=[], body="", children=tuple(body_parts), subtype="alternative")
    if attachments:
        files = []
        for filename, ctype, data in attachments:
            files.append(_Part(headers=[
                _params_field("Content-Type", ctype, _parameter("name", filename)),
                f"Content-Transfer-Encoding: base64{_CRLF}",
                _params_field("Content-Disposition", "attachment",
                              _parameter("filename", filename)),
            ], body=_base64_body(data)))
        content = _Part(headers=[], body="", children=(content, *files), subtype="mixed")

    def new_boundary() -> str:
        # "=_" cannot occur in base64 or quoted-printable output (RFC 2045 §6.7 note:
        # boundaries with "=_" are safe against QP), 128 random bits against 7bit text.
        return "=_mm_" + _random_token(randbytes)

    text = "".join(head) + _render(content, new_boundary)
    data = text.encode("utf-8")
    if len(data) > max_size:
        raise LimitExceeded(f"the message would be {len(data)} octets, more than {max_size}",
                            limit="SUBMIT_MAX_MESSAGE_SIZE")
    return ComposedMessage(data=data, mail_from=sender.address, recipients=tuple(recipients),
                           message_id=message_id, smtputf8=smtputf8)
