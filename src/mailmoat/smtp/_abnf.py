"""SMTP envelope grammar: MAIL/RCPT paths, ESMTP parameters, EHLO argument, xtext.

RFC 5321 §4.1.2 (command argument syntax) and §4.1.3 (address literals), extended for
internationalised mail by RFC 6531 §3.3, and RFC 3461 §4 (xtext).

SECURITY
    Trusts nothing: every input is the raw argument octets of a command line from the peer.
    Bounds: the argument is at most ``SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA``
    octets; a path at most ``SMTP_PATH_MAX`` octets, a local part ``SMTP_LOCAL_PART_MAX``, a
    domain ``SMTP_DOMAIN_MAX`` and a label ``DNS_LABEL_MAX`` (all octets, as on the wire).
    Every scanner is hand-written, a single left-to-right pass with no backtracking: linear
    time in the (already bounded) input. The one regular expression, ``_FAST_PATH`` (the
    common plain-ASCII ``<Dot-string@Domain>``), has no nested unbounded repetition (atoms and
    labels are possessive/atomic, labels at most 63 characters); it only ever *accepts* a
    subset of what the full scanner accepts, with the same result (a property test checks
    this), and everything it does not match goes to the full scanner.
    Refuses: anything outside the ABNF; every octet >= 0x80 unless SMTPUTF8 is in effect
    (then the text must be valid UTF-8, domains must be IDNA2008 U-labels checked with the
    ``idna`` package, never the IDNA2003 stdlib codec); C0 and C1 control characters, DEL and
    NUL everywhere (none is in any production); a trailing dot on a domain; addresses without
    angle brackets; duplicate ESMTP parameter keywords (ambiguous: which one would a later
    hop honour?). Quoted local parts holding "@", "%" or "!" are legal syntax and are kept
    exactly: relay rules decide about them later, not the grammar.

Decisions where the RFC leaves room (each one documented at its code):

* One optional SP between ``FROM:``/``TO:`` and ``<`` is accepted (RFC 5321 has none;
  Postfix, Exim and aiosmtpd accept it, and many clients send it). No other extra space.
* Source routes (``<@a,@b:user@c>``) are parsed and validated, then dropped: RFC 5321
  §4.1.2 says the form "MUST BE accepted, SHOULD NOT be generated, and SHOULD be ignored"
  (also §4.1.1.3, Appendix C). ``Address`` has no field for them; ``Address.raw`` still
  holds them for anyone who needs to know.
* ``[IPv6:...]`` whose content is not an RFC 5321 IPv6-addr is refused, not taken as a
  General-address-literal with the tag "IPv6" (that tag is registered for IPv6-addr only).
* A-labels (``xn--``) are checked for LDH syntax only, as RFC 5321 does; U-labels get the full
  IDNA2008 check per label (``idna.alabel``: NFC, code points, hyphens, joiners, Bidi rule).
  A label that is not in NFC is refused, never normalised: RFC 5890 §2.3.2.1 makes NFC part
  of what a U-label is, and normalising would let two different wire strings name one domain.
  (Upper-case letters in a U-label are lower-cased, as ASCII ones are: domains compare
  case-insensitively, RFC 5321 §2.4.)
* Non-ASCII without SMTPUTF8 answers 550 for MAIL and 553 for RCPT, status 5.6.7 (RFC 6531
  §3.5); a MAIL with a non-ASCII address must itself carry the SMTPUTF8 parameter (§3.4).
* IPv6 literals follow the RFC 5321 §4.1.3 grammar literally: "::" must stand for at least two
  zero groups, so ``1:2:3:4:5:6::8`` (7 groups and "::") is refused although RFC 4291 would
  allow it.
* IPv4 ``Snum`` is ``1*3DIGIT`` in decimal (RFC 5321), so ``010`` is ten, never octal; the
  ``literal`` field holds the decimal value, ``domain`` the text as written.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

import idna

from mailmoat.limits import (
    DNS_LABEL_MAX,
    SMTP_COMMAND_LINE_MAX,
    SMTP_COMMAND_PARAMS_EXTRA,
    SMTP_DOMAIN_MAX,
    SMTP_LOCAL_PART_MAX,
    SMTP_PATH_MAX,
)

__all__ = [
    "Address",
    "AddressSyntaxError",
    "Param",
    "parse_helo_domain",
    "parse_mail_args",
    "parse_rcpt_args",
    "xtext_decode",
    "xtext_encode",
]

#: Longest argument part we look at (the line bound of the command, plus the extension room).
_ARGS_MAX: Final = SMTP_COMMAND_LINE_MAX + SMTP_COMMAND_PARAMS_EXTRA

STATUS_BAD_SENDER: Final = "5.1.7"  # RFC 3463 §3.2: bad sender's mailbox address syntax
STATUS_BAD_RECIPIENT: Final = "5.1.3"  # RFC 3463 §3.2: bad destination mailbox address syntax
STATUS_NO_UTF8: Final = "5.6.7"  # RFC 6531 §3.5: "Non-ASCII addresses not permitted ..."
STATUS_BAD_ARGS: Final = "5.5.4"  # RFC 3463 §3.6: invalid command arguments


class AddressSyntaxError(ValueError):
    """A command argument is outside the grammar; carries the reply code and status to send."""

    def __init__(self, reason: str, *, status: str, reply_code: int = 501) -> None:
        super().__init__(f"{reply_code} {status} {reason}")
        self.reason = reason
        self.status = status
        self.reply_code = reply_code


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A mailbox from a MAIL or RCPT path.

    ``local_part`` is decoded (a Quoted-string is unquoted); ``domain`` is the lower-cased
    domain (A-labels as written, U-labels NFC), or the address-literal text with its brackets
    as written (``"[192.0.2.1]"``, ``"[IPv6:2001:db8::1]"``), or ``""`` for the special
    ``<Postmaster>`` recipient. ``raw`` is every octet between ``<`` and ``>`` (source route
    included). ``literal`` holds the IP of an IPv4/IPv6 literal (``None`` otherwise, also for
    a General-address-literal).
    """

    local_part: str
    domain: str
    raw: bytes
    is_utf8: bool
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    def __str__(self) -> str:
        local = self.local_part if _is_dot_string(self.local_part) else _quote(self.local_part)
        return f"{local}@{self.domain}" if self.domain else local


#: An ESMTP parameter: (KEYWORD upper-cased, value or None).
Param = tuple[str, str | None]

# ---------------------------------------------------------------------------------------
# Character classes.
#
#   atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/" /
#           "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"        (RFC 5322 §3.2.3)
#   atext =/ UTF8-non-ascii                                             (RFC 6531 §3.3)
#   qtextSMTP = %d32-33 / %d35-91 / %d93-126                            (RFC 5321 §4.1.2)
#   qtextSMTP =/ UTF8-non-ascii                                         (RFC 6531 §3.3)
#   quoted-pairSMTP = %d92 %d32-126                                     (RFC 5321 §4.1.2)
#   dcontent = %d33-90 / %d94-126                                       (RFC 5321 §4.1.3)
#   esmtp-value = 1*(%d33-60 / %d62-126)                                (RFC 5321 §4.1.2)
#   esmtp-value =/ UTF8-non-ascii                                       (RFC 6531 §3.3)
# ---------------------------------------------------------------------------------------
_ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGIT: Final = frozenset("0123456789")
_HEXDIG: Final = frozenset("0123456789abcdefABCDEF")
_LET_DIG: Final = _ALPHA | _DIGIT
_LDH: Final = _LET_DIG | {"-"}
_ATEXT: Final = _LET_DIG | frozenset("!#$%&'*+-/=?^_`{|}~")
_QTEXT: Final = frozenset(chr(c) for c in (*range(32, 34), *range(35, 92), *range(93, 127)))
_QPAIR: Final = frozenset(chr(c) for c in range(32, 127))
_DCONTENT: Final = frozenset(chr(c) for c in (*range(33, 91), *range(94, 127)))
_ESMTP_VALUE: Final = frozenset(chr(c) for c in (*range(33, 61), *range(62, 127)))
#: Characters that can make up a Domain token (the grammar is checked afterwards).
_DOMAIN_CHARS: Final = _LDH | {"."}


def _non_ascii_ok(ch: str) -> bool:
    """UTF8-non-ascii (RFC 6531 §3.3), minus the C1 controls (category Cc, U+0080-U+009F):
    RFC 5198 §2 keeps controls out of interchanged text and we refuse them everywhere."""
    return ch >= "\x80" and unicodedata.category(ch) != "Cc"


def _is_dot_string(local: str) -> bool:
    """``uDot-string = uAtom *("." uAtom)`` with ``uAtom = 1*(atext / UTF8-non-ascii)``."""
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    return all(ch in _ATEXT or ch == "." or _non_ascii_ok(ch) for ch in local)


def _quote(local: str) -> str:
    """Quoted-string for ``local``: escape only ``"`` and ``\\`` (quoted-pairSMTP)."""
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------------------------------
# The scanner. It works on the decoded text (ASCII, or UTF-8 when SMTPUTF8 is in effect).
# ---------------------------------------------------------------------------------------
class _Scanner:
    __slots__ = ("pos", "status", "text", "utf8")

    def __init__(self, text: str, *, status: str, utf8: bool) -> None:
        self.text = text
        self.pos = 0
        self.status = status
        self.utf8 = utf8

    def fail(self, reason: str) -> AddressSyntaxError:
        return AddressSyntaxError(reason, status=self.status)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            raise self.fail(f"expected {what} at offset {self.pos}")
        self.pos += 1

    def take_while_domain(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text) and (
            text[self.pos] in _DOMAIN_CHARS or (self.utf8 and _non_ascii_ok(text[self.pos]))
        ):
            self.pos += 1
        return text[start : self.pos]

    # Local-part = Dot-string / Quoted-string                             (RFC 5321 §4.1.2)
    # Dot-string = Atom *("."  Atom) ; Atom = 1*atext
    # Quoted-string = DQUOTE *QcontentSMTP DQUOTE
    # QcontentSMTP = qtextSMTP / quoted-pairSMTP
    def local_part(self) -> tuple[str, bool]:
        """Return (decoded local part, was quoted)."""
        text = self.text
        if self.peek() == '"':
            self.pos += 1
            out: list[str] = []
            while True:
                if self.pos >= len(text):
                    raise self.fail("unterminated quoted local part")
                ch = text[self.pos]
                if ch == '"':
                    self.pos += 1
                    return "".join(out), True
                if ch == "\\":
                    nxt = text[self.pos + 1] if self.pos + 1 < len(text) else ""
                    if not nxt or nxt not in _QPAIR:
                        raise self.fail("bad quoted-pair in local part")
                    out.append(nxt)
                    self.pos += 2
                    continue
                if ch in _QTEXT or (self.utf8 and _non_ascii_ok(ch)):
                    out.append(ch)
                    self.pos += 1
                    continue
                raise self.fail(f"character {ch!r} not allowed in a quoted local part")
        start = self.pos
        while self.pos < len(text) and (
            text[self.pos] in _ATEXT
            or text[self.pos] == "."
            or (self.utf8 and _non_ascii_ok(text[self.pos]))
        ):
            self.pos += 1
        local = text[start : self.pos]
        if not _is_dot_string(local):
            raise self.fail("local part is not a Dot-string or a Quoted-string")
        return local, False


# Domain = sub-domain *("." sub-domain)                                  (RFC 5321 §4.1.2)
# sub-domain = Let-dig [Ldh-str]
# Let-dig = ALPHA / DIGIT
# Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
# sub-domain =/ U-label                                                 (RFC 6531 §3.3)
def _domain(text: str, *, utf8: bool, status: str) -> str:
    """Validate a Domain and return it lower-cased (U-labels NFC); raise otherwise."""
    if not text:
        raise AddressSyntaxError("empty domain", status=status)
    if _octets(text) > SMTP_DOMAIN_MAX:
        # RFC 5321 §4.5.3.1.2: "The maximum total length of a domain name or number is 255
        # octets."
        raise AddressSyntaxError("domain too long", status=status)
    if text.endswith("."):
        raise AddressSyntaxError("trailing dot in domain", status=status)
    labels: list[str] = []
    for label in text.split("."):
        if not label:
            raise AddressSyntaxError("empty label in domain", status=status)
        if label.isascii():
            if len(label) > DNS_LABEL_MAX:
                raise AddressSyntaxError("domain label longer than 63 octets", status=status)
            if label[0] not in _LET_DIG or label[-1] not in _LET_DIG or any(
                ch not in _LDH for ch in label
            ):
                raise AddressSyntaxError(f"bad domain label {label!r}", status=status)
            labels.append(label.lower())
            continue
        if not utf8:  # pragma: no cover - the callers refuse non-ASCII first
            raise AddressSyntaxError("non-ASCII domain", status=STATUS_NO_UTF8)
        # RFC 6531 §3.3: a U-label as defined by RFC 5890 §2.3.2.1: "A "U-label" is an
        # IDNA-valid string of Unicode characters, in Normalization Form C (NFC) and including
        # at least one non-ASCII character". A label not in NFC is therefore no U-label: it is
        # refused, not normalised (mapping user input is a UI step, RFC 5895, never a protocol
        # one; normalising here would make two different wire strings one mailbox).
        if not unicodedata.is_normalized("NFC", label):
            raise AddressSyntaxError(f"U-label {label!r} is not in NFC (RFC 5890 2.3.2.1)",
                                     status=status)
        ulabel = unicodedata.normalize("NFC", label.lower())
        try:
            idna.alabel(ulabel)
        except (idna.IDNAError, ValueError) as err:
            raise AddressSyntaxError(f"invalid U-label {label!r}: {err}", status=status) from None
        labels.append(ulabel)
    result = ".".join(labels)
    if _octets(result) > SMTP_DOMAIN_MAX:
        raise AddressSyntaxError("domain too long", status=status)
    return result


# address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
#                         General-address-literal ) "]"              (RFC 5321 §4.1.3)
# IPv4-address-literal = Snum 3("." Snum)
# IPv6-address-literal = "IPv6:" IPv6-addr
# General-address-literal = Standardized-tag ":" 1*dcontent
# Standardized-tag = Ldh-str
#    ; Standardized-tag MUST be specified in a Standards-Track RFC and registered with IANA
# dcontent = %d33-90 / %d94-126
def _address_literal(
    inner: str, *, status: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Validate the text between the brackets; return the IP (None: general literal)."""
    ipv4 = _ipv4(inner)
    if ipv4 is not None:
        return ipaddress.IPv4Address(ipv4)
    tag, colon, content = inner.partition(":")
    if not colon:
        raise AddressSyntaxError("address literal is neither IPv4 nor tag:content", status=status)
    if tag.lower() == "ipv6":  # ABNF literal strings are case-insensitive (RFC 5234 §2.3)
        value = _ipv6(content)
        if value is None:
            raise AddressSyntaxError("bad IPv6 address literal", status=status)
        return ipaddress.IPv6Address(value)
    if (
        not tag
        or tag[-1] not in _LET_DIG
        or any(ch not in _LDH for ch in tag)
        or not content
        or any(ch not in _DCONTENT for ch in content)
    ):
        raise AddressSyntaxError("bad General-address-literal", status=status)
    return None


# Snum = 1*3DIGIT ; representing a decimal integer value in the range 0 through 255
def _snum(text: str) -> int | None:
    if not 1 <= len(text) <= 3 or any(ch not in _DIGIT for ch in text):
        return None
    value = int(text)
    return value if value <= 255 else None


def _ipv4(text: str) -> int | None:
    """IPv4-address-literal = Snum 3("." Snum); the 32-bit value, or None."""
    parts = text.split(".", 4)
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        snum = _snum(part)
        if snum is None:
            return None
        value = value << 8 | snum
    return value


# IPv6-addr = IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp
# IPv6-hex = 1*4HEXDIG
# IPv6-full = IPv6-hex 7(":" IPv6-hex)
# IPv6-comp = [IPv6-hex *5(":" IPv6-hex)] "::" [IPv6-hex *5(":" IPv6-hex)]
#    ; The "::" represents at least 2 16-bit groups of zeros. No more than 6 groups in
#    ; addition to the "::" may be present.
# IPv6v4-full = IPv6-hex 5(":" IPv6-hex) ":" IPv4-address-literal
# IPv6v4-comp = [IPv6-hex *3(":" IPv6-hex)] "::" [IPv6-hex *3(":" IPv6-hex) ":"]
#               IPv4-address-literal
#    ; The "::" represents at least 2 16-bit groups of zeros. No more than 4 groups in
#    ; addition to the "::" and IPv4-address-literal may be present.
def _hex_groups(text: str) -> list[int] | None:
    if not text:
        return []
    groups = []
    for part in text.split(":"):
        if not 1 <= len(part) <= 4 or any(ch not in _HEXDIG for ch in part):
            return None
        groups.append(int(part, 16))
    return groups


def _ipv6(text: str) -> int | None:
    """The 128-bit value of an RFC 5321 IPv6-addr, or None."""
    if len(text) > 45:  # longest IPv6v4-full: 6 * "hhhh:" + "255.255.255.255"
        return None
    tail_v4: int | None = None
    body = text
    slots = 8
    if "." in text:
        # IPv6v4-full / IPv6v4-comp: the IPv4-address-literal follows the last ":".
        head, sep, last = text.rpartition(":")
        tail_v4 = _ipv4(last)
        if tail_v4 is None or not sep:
            return None
        # head ends with ":" exactly when "::" stands right before the IPv4 part.
        body = head + ":" if head.endswith(":") else head
        slots = 6
    if "::" in body:
        left_text, _, right_text = body.partition("::")
        left, right = _hex_groups(left_text), _hex_groups(right_text)
        if left is None or right is None:
            return None
        # "The "::" represents at least 2 16-bit groups of zeros."
        if len(left) + len(right) > slots - 2:
            return None
        groups = left + [0] * (slots - len(left) - len(right)) + right
    else:
        full = _hex_groups(body)
        if full is None or len(full) != slots:
            return None
        groups = full
    value = 0
    for group in groups:
        value = value << 16 | group
    if tail_v4 is not None:
        value = value << 32 | tail_v4
    return value


# Fast path for the common form: a plain ASCII "<" Dot-string "@" Domain ">" (RFC 5321
# §4.1.2), optionally after the one SP we tolerate (see _path):
#   Path = "<" [ A-d-l ":" ] Mailbox ">"   -- here without A-d-l (a source route)
#   Mailbox = Local-part "@" ( Domain / address-literal )   -- here Dot-string "@" Domain
#   Dot-string = Atom *("."  Atom) ; Atom = 1*atext
#   Domain = sub-domain *("." sub-domain) ; sub-domain = Let-dig [Ldh-str]
#   Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
# plus the label bound of RFC 1035 §2.3.4 (63 octets) written into the pattern. The length
# bounds on the local part, domain and path are checked after the match. Whatever does not
# match (quoted local parts, address literals, source routes, UTF-8, "<>", "<Postmaster>",
# and every error) goes to the full scanner, which gives the precise error.
_ATEXT_CLASS: Final = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_LABEL_RE: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST_PATH: Final = re.compile(
    rf" ?<((?>{_ATEXT_CLASS}++(?:\.{_ATEXT_CLASS}++)*+))"
    rf"@((?>{_LABEL_RE}(?:\.{_LABEL_RE})*+))>"
)


def _fast_path(text: str) -> tuple[Address, int] | None:
    """The Address of a plain ``<local@domain>`` at the start of ``text`` and the offset after
    its ``>``, or None (then the full scanner decides). ``text`` is ASCII."""
    m = _FAST_PATH.match(text)
    if m is None:
        return None
    local, domain = m.group(1, 2)
    start = m.start(1)  # just after "<"
    end = m.end()  # just after ">"
    # RFC 5321 §4.5.3.1.1-3: local part <= 64, domain <= 255, path (with "<" and ">") <= 256
    # octets.
    if (
        len(local) > SMTP_LOCAL_PART_MAX
        or len(domain) > SMTP_DOMAIN_MAX
        or end - start + 1 > SMTP_PATH_MAX
    ):
        return None
    return Address(local_part=local, domain=domain.lower(),
                   raw=text[start : end - 1].encode("ascii"), is_utf8=False, literal=None), end


# RFC 6531 §3.5: "When messages are rejected because the RCPT command requires an ASCII
# address, the reply-code 553 is returned ... When messages are rejected because the MAIL
# command requires an ASCII address, the reply-code 550 is returned"; with enhanced status
# codes, "X.6.7" ("Non-ASCII addresses not permitted for that sender/recipient").
_NO_UTF8_CODE: Final = {STATUS_BAD_SENDER: 550, STATUS_BAD_RECIPIENT: 553}


def _decode_args(args: bytes, *, utf8: bool, status: str) -> str:
    """Bound the argument, refuse non-ASCII without SMTPUTF8, decode."""
    if len(args) > _ARGS_MAX:
        raise AddressSyntaxError("command arguments too long", status=status)
    if args.isascii():
        return args.decode("ascii")
    if not utf8:
        raise AddressSyntaxError(
            "non-ASCII address or parameter without SMTPUTF8", status=STATUS_NO_UTF8,
            reply_code=_NO_UTF8_CODE[status],
        )
    try:
        return args.decode("utf-8")
    except UnicodeDecodeError:
        raise AddressSyntaxError("invalid UTF-8", status=status) from None


# Reverse-path = Path / "<>"                                             (RFC 5321 §4.1.2)
# Forward-path = Path
# Path = "<" [ A-d-l ":" ] Mailbox ">"
# A-d-l = At-domain *( "," At-domain )
#    ; Note that this form, the so-called "source route", MUST BE accepted, SHOULD NOT be
#    ; generated, and SHOULD be ignored.
# At-domain = "@" Domain
# Mailbox = Local-part "@" ( Domain / address-literal )
def _path(sc: _Scanner, *, null_ok: bool, postmaster_ok: bool) -> Address | None:
    text = sc.text
    # mail = "MAIL FROM:" Reverse-path ...: no space is allowed before the path, but we accept
    # one SP as Postfix, Exim and aiosmtpd do (common client behaviour).
    if sc.peek() == " ":
        sc.pos += 1
    if sc.peek() != "<":
        raise sc.fail("address must be enclosed in angle brackets")
    open_pos = sc.pos
    sc.pos += 1
    if sc.peek() == ">":
        if not null_ok:
            raise sc.fail("empty path not allowed here")
        sc.pos += 1
        return None
    had_route = False
    if sc.peek() == "@":
        had_route = True
        while True:
            sc.expect("@", '"@" of a source route')
            _domain(sc.take_while_domain(), utf8=sc.utf8, status=sc.status)
            if sc.peek() == ",":
                sc.pos += 1
                continue
            sc.expect(":", '":" after the source route')
            break
    local_start = sc.pos
    local, quoted = sc.local_part()
    local_end = sc.pos
    if (
        postmaster_ok
        and not quoted
        and not had_route
        and sc.peek() == ">"
        and local.lower() == "postmaster"
    ):
        # rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path ) ...
        # (RFC 5321 §4.1.1.3; "Postmaster" is case-insensitive, §2.4)
        sc.pos += 1
        return Address(
            local_part=local, domain="", raw=text[open_pos + 1 : sc.pos - 1].encode("utf-8"),
            is_utf8=False, literal=None,
        )
    # RFC 5321 §4.5.3.1.1: "The maximum total length of a user name or other local-part is 64
    # octets." (measured as written, quotes included)
    if _octets(text[local_start:local_end]) > SMTP_LOCAL_PART_MAX:
        raise sc.fail("local part longer than 64 octets")
    sc.expect("@", '"@" after the local part')
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if sc.peek() == "[":
        end = text.find("]", sc.pos)
        if end < 0:
            raise sc.fail("unterminated address literal")
        inner = text[sc.pos + 1 : end]
        if len(inner) > SMTP_DOMAIN_MAX:
            raise sc.fail("address literal too long")
        literal = _address_literal(inner, status=sc.status)
        domain = text[sc.pos : end + 1]
        sc.pos = end + 1
    else:
        domain = _domain(sc.take_while_domain(), utf8=sc.utf8, status=sc.status)
    if sc.peek() != ">":
        raise sc.fail(f"unexpected character at offset {sc.pos} in the path")
    sc.pos += 1
    # RFC 5321 §4.5.3.1.3: "The maximum total length of a reverse-path or forward-path is 256
    # octets (including the punctuation and element separators)."
    if _octets(text[open_pos : sc.pos]) > SMTP_PATH_MAX:
        raise sc.fail("path longer than 256 octets")
    return Address(
        local_part=local,
        domain=domain,
        raw=text[open_pos + 1 : sc.pos - 1].encode("utf-8"),
        is_utf8=not (local.isascii() and domain.isascii()),
        literal=literal,
    )


# Mail-parameters = esmtp-param *(SP esmtp-param)                       (RFC 5321 §4.1.2)
# Rcpt-parameters = esmtp-param *(SP esmtp-param)
# esmtp-param = esmtp-keyword ["=" esmtp-value]
# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
# esmtp-value = 1*(%d33-60 / %d62-126)
# esmtp-value =/ UTF8-non-ascii                                         (RFC 6531 §3.3)
#: The same grammar over ASCII as one pattern (possessive: linear), so that the common case
#: skips the per-character checks below; anything it does not match takes the checked loop,
#: which finds and names the error.
_ASCII_PARAMS: Final = re.compile(
    r"(?: [A-Za-z0-9][A-Za-z0-9-]*+(?:=[\x21-\x3c\x3e-\x7e]++)?+)++"
)


def _params(text: str, *, utf8: bool) -> tuple[Param, ...]:
    if not text:
        return ()
    if text.isascii() and _ASCII_PARAMS.fullmatch(text) is not None:
        return _params_matched(text)
    return _params_checked(text, utf8=utf8)


def _params_matched(text: str) -> tuple[Param, ...]:
    """Split parameters that ``_ASCII_PARAMS`` matched (only duplicates are left to refuse)."""
    params: list[Param] = []
    seen: set[str] = set()
    for item in text[1:].split(" "):
        keyword, eq, value = item.partition("=")
        keyword = keyword.upper()
        if keyword in seen:
            raise AddressSyntaxError(f"duplicate ESMTP parameter {keyword}", status=STATUS_BAD_ARGS)
        seen.add(keyword)
        params.append((keyword, value if eq else None))
    return tuple(params)


def _params_checked(text: str, *, utf8: bool) -> tuple[Param, ...]:
    """The character-by-character parameter scanner (any text, UTF-8 included)."""
    # mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
    if text[0] != " ":
        raise AddressSyntaxError("expected SP after the path", status=STATUS_BAD_ARGS)
    params: list[Param] = []
    seen: set[str] = set()
    for item in text[1:].split(" "):
        keyword, eq, value = item.partition("=")
        if (
            not keyword
            or keyword[0] not in _LET_DIG
            or any(ch not in _LDH for ch in keyword)
        ):
            raise AddressSyntaxError(f"bad ESMTP parameter {item!r}", status=STATUS_BAD_ARGS)
        if eq and (
            not value
            or any(ch not in _ESMTP_VALUE and not (utf8 and _non_ascii_ok(ch)) for ch in value)
        ):
            raise AddressSyntaxError(f"bad ESMTP parameter value {item!r}", status=STATUS_BAD_ARGS)
        keyword = keyword.upper()
        if keyword in seen:
            raise AddressSyntaxError(f"duplicate ESMTP parameter {keyword}", status=STATUS_BAD_ARGS)
        seen.add(keyword)
        params.append((keyword, value if eq else None))
    return tuple(params)


def parse_mail_args(args: bytes, *, smtputf8: bool) -> tuple[Address | None, tuple[Param, ...]]:
    """Parse the octets after ``MAIL FROM:`` (no CRLF): the reverse-path and parameters.

    ``smtputf8`` says the server advertised SMTPUTF8; non-ASCII octets are then accepted when
    the command itself carries the ``SMTPUTF8`` parameter (RFC 6531 §3.4: the client "MUST"
    use it to send a UTF-8 address). ``None`` stands for the null reverse-path ``<>``.
    """
    if len(args) <= _ARGS_MAX and args.isascii():
        text = args.decode("ascii")
        fast = _fast_path(text)
        if fast is not None:
            return fast[0], _params(text[fast[1] :], utf8=smtputf8)
    text = _decode_args(args, utf8=smtputf8, status=STATUS_BAD_SENDER)
    sc = _Scanner(text, status=STATUS_BAD_SENDER, utf8=smtputf8)
    address = _path(sc, null_ok=True, postmaster_ok=False)
    params = _params(text[sc.pos :], utf8=smtputf8)
    if not text.isascii() and not any(key == "SMTPUTF8" for key, _ in params):
        raise AddressSyntaxError(
            "non-ASCII MAIL without the SMTPUTF8 parameter", status=STATUS_NO_UTF8,
            reply_code=_NO_UTF8_CODE[STATUS_BAD_SENDER],
        )
    return address, params


def parse_rcpt_args(args: bytes, *, smtputf8: bool) -> tuple[Address, tuple[Param, ...]]:
    """Parse the octets after ``RCPT TO:`` (no CRLF): the forward-path and parameters.

    ``smtputf8`` says the transaction's MAIL carried SMTPUTF8 (RFC 6531 §3.4). Accepts the
    special ``<Postmaster>`` (any case) as an Address whose ``domain`` is ``""``.
    """
    if len(args) <= _ARGS_MAX and args.isascii():
        text = args.decode("ascii")
        fast = _fast_path(text)
        if fast is not None:
            return fast[0], _params(text[fast[1] :], utf8=smtputf8)
    text = _decode_args(args, utf8=smtputf8, status=STATUS_BAD_RECIPIENT)
    sc = _Scanner(text, status=STATUS_BAD_RECIPIENT, utf8=smtputf8)
    address = _path(sc, null_ok=False, postmaster_ok=True)
    assert address is not None  # null_ok=False
    return address, _params(text[sc.pos :], utf8=smtputf8)


# ehlo = "EHLO" SP ( Domain / address-literal ) CRLF                    (RFC 5321 §4.1.1.1)
# helo = "HELO" SP Domain CRLF
def parse_helo_domain(arg: bytes) -> str:
    """Validate an EHLO/HELO argument: a Domain (lower-cased) or an address literal (as written).

    Non-ASCII is refused: EHLO comes before any SMTPUTF8 negotiation, so the client must use
    A-labels there (RFC 6531 §3.7.1).
    """
    if len(arg) > SMTP_DOMAIN_MAX + 2:
        raise AddressSyntaxError("EHLO argument too long", status=STATUS_BAD_ARGS)
    if not arg.isascii():
        raise AddressSyntaxError("non-ASCII EHLO argument", status=STATUS_BAD_ARGS)
    text = arg.decode("ascii")
    if text.startswith("["):
        if not text.endswith("]") or len(text) < 3:
            raise AddressSyntaxError("bad address literal", status=STATUS_BAD_ARGS)
        _address_literal(text[1:-1], status=STATUS_BAD_ARGS)
        return text
    if any(ch not in _DOMAIN_CHARS for ch in text):
        raise AddressSyntaxError("bad EHLO domain", status=STATUS_BAD_ARGS)
    return _domain(text, utf8=False, status=STATUS_BAD_ARGS)


# xtext = *( xchar / hexchar )                                          (RFC 3461 §4)
# xchar = any ASCII CHAR between "!" (33) and "~" (126) inclusive, except for "+" and "=".
# hexchar = ASCII "+" immediately followed by two upper case hexadecimal digits
_XCHAR: Final = frozenset(chr(c) for c in range(33, 127)) - {"+", "="}
_UPPER_HEX: Final = frozenset("0123456789ABCDEF")


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 xtext (the octets are read as UTF-8); ValueError on bad xtext."""
    out = bytearray()
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "+":
            hexpart = value[i + 1 : i + 3]
            if len(hexpart) != 2 or any(c not in _UPPER_HEX for c in hexpart):
                raise ValueError(f"bad xtext hexchar at offset {i}")
            out.append(int(hexpart, 16))
            i += 3
        elif ch in _XCHAR:
            out.append(ord(ch))
            i += 1
        else:
            raise ValueError(f"character {ch!r} not allowed in xtext")
    return out.decode("utf-8")  # UnicodeDecodeError is a ValueError


def xtext_encode(value: str) -> str:
    """Encode text as RFC 3461 xtext (UTF-8 octets outside xchar become ``+XX``)."""
    return "".join(
        ch if ch in _XCHAR else "".join(f"+{b:02X}" for b in ch.encode("utf-8")) for ch in value
    )
