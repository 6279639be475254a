"""The Received stamp: who handed the message to whom, how, when, and whether over TLS (L2).

RFC 5321 §4.4 (the grammar of the "Stamp" every MTA prepends)::

    Time-stamp-line  = "Received:" FWS Stamp <CRLF>
    Stamp          = From-domain By-domain Opt-info [CFWS] ";"
                     FWS date-time
                     ; where "date-time" is as defined in RFC 5322 [4]
                     ; but the "obs-" forms, especially two-digit
                     ; years, are prohibited in SMTP and MUST NOT be used.
    From-domain    = "FROM" FWS Extended-Domain
    By-domain      = CFWS "BY" FWS Extended-Domain
    Extended-Domain  = Domain /
                     ( Domain FWS "(" TCP-info ")" ) /
                     ( address-literal FWS "(" TCP-info ")" )
    TCP-info       = address-literal / ( Domain FWS address-literal )
                     ; Information derived by server from TCP connection
                     ; not client EHLO.
    Opt-info       = [Via] [With] [ID] [For]
                     [Additional-Registered-Clauses]
    Via            = CFWS "VIA" FWS Link
    With           = CFWS "WITH" FWS Protocol
    ID             = CFWS "ID" FWS ( Atom / msg-id )
    For            = CFWS "FOR" FWS ( Path / Mailbox )
    Additional-Registered-Clauses  = CFWS Atom FWS String
    Link           = "TCP" / Addtl-Link
    Protocol       = "ESMTP" / "SMTP" / Attdl-Protocol

The ``with`` keywords that say TLS was used are registered by RFC 3848 §1 ("ESMTPS ... ESMTP
with STARTTLS", "ESMTPSA ... with both STARTTLS and SMTP AUTH", "LMTPS", "LMTPSA") and RFC 6531
§3.7.3 (UTF8SMTPS, UTF8SMTPSA, UTF8LMTPS, UTF8LMTPSA). "SMTP", "ESMTP", "ESMTPA", "LMTP",
"LMTPA", "UTF8SMTP", "UTF8SMTPA" name the same transfers *without* TLS.

Real MTAs bend the grammar, and put the TLS facts in comments, so this parser reads:

* Postfix / Stalwart / mailmoat: ``(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256
  bits))`` between the from and by clauses;
* Sendmail, Proofpoint, IBM, Gmail, Microsoft: ``(version=TLSv1.2 cipher=... bits=256
  verify=NOT)``, ``(version=TLS1_3 cipher=... bits=256/256)``, ``with Microsoft SMTP Server
  (version=TLS1_2, cipher=TLS_ECDHE_RSA_...)``; Exchange's bare ``(TLS)``; Gmail's
  ``(Google Transport Security)``;
* Exim: ``with esmtps (TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256)`` (before 4.93) and
  ``with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384`` (4.93+ default received_header_text);
* Haraka: an extra ``tls TLS_AES_256_GCM_SHA384`` clause; qmail / qpsmtpd TLS patches:
  ``with (DHE-RSA-AES256-SHA encrypted) SMTP``; Cisco IronPort: ``with ESMTP/TLS/CIPHER``;
* any other parenthesised comment naming a TLS version and a cipher (``(TLSv1.3 cipher X
  bits=256)``), wherever it sits, even after the ";".

A stamp that records nothing either way is TLS *unknown*; a local hand-off (``(qmail 123
invoked from network)``, ``with local``, ``(Postfix, from userid 0)``) is TLS *n/a*.

SECURITY: every stamp above our own boundary was written by someone we do not trust, possibly
to deceive (a forged "ESMTPS" costs nothing). The parser only *reads*: it believes no stamp,
the chain analysis decides which stamps are ours. A field longer than
``limits.ANALYSIS_FIELD_MAX`` is not tokenised (reported as not parsed); tokenising is linear
(:func:`mailmoat.message.tokenize`); every regular expression below is anchored or a single
character-class scan, run on one comment or word at a time; IP literals are checked with
:mod:`ipaddress` after a length bound. Text handed out is decoded as UTF-8 with replacement and
stripped of control characters, so a stamp cannot inject terminal escapes or markup into a
report.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from mailmoat.analysis._date import parse_date_time
from mailmoat.limits import ANALYSIS_FIELD_MAX
from mailmoat.message import Kind, Token, comment_text, tokenize, unfold

__all__ = [
    "TLS",
    "Stamp",
    "TLSStatus",
    "Transport",
    "classify_protocol",
    "normalise_tls_version",
    "parse_received",
]


class TLSStatus(enum.Enum):
    """Was the hop encrypted, according to its stamp?"""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"
    NOT_APPLICABLE = "n/a"  # no network transfer (local hand-off)


TLS = TLSStatus


class Transport(enum.Enum):
    """How the hop moved the message."""

    NETWORK = "network"
    LOOPBACK = "loopback"  # from 127.0.0.0/8 or ::1: never left the host
    LOCAL = "local"  # a local hand-off (pickup, qmail-queue, sendmail -bs): no connection


@dataclass(frozen=True, slots=True, kw_only=True)
class Stamp:
    """What one Received field says (nothing here is verified)."""

    text: str  # the unfolded field body, sanitised
    from_name: str | None = None  # the name after "from" (HELO or rDNS, as the MTA chose)
    from_helo: str | None = None  # a HELO name recorded separately (helo=, HELO x, "EHLO x")
    from_rdns: str | None = None  # the reverse-DNS name in the TCP-info, when recorded
    from_ip: str | None = None
    by_name: str | None = None
    by_ip: str | None = None
    by_software: str | None = None  # the comment after the by-domain: "Postfix", "Exim 4.96"
    via: str | None = None
    protocol: str | None = None  # the with clause, words joined by one space
    id: str | None = None
    recipient: str | None = None  # the for clause
    tls: TLSStatus = TLSStatus.UNKNOWN
    tls_version: str | None = None  # normalised where unambiguous: "TLSv1.2", "SSLv3"
    cipher: str | None = None
    tls_bits: int | None = None
    tls_evidence: str = ""  # why tls is what it is, for a person
    transport: Transport = Transport.NETWORK
    authenticated: bool = False
    timestamp: datetime | None = None  # UTC
    date_text: str | None = None
    comments: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


# --- protocol keywords (RFC 3848, RFC 6531 §3.7.3, RFC 5321, RFC 2033) ---------------------
_TLS_PROTOCOLS: Final = frozenset({
    "ESMTPS", "ESMTPSA", "LMTPS", "LMTPSA",
    "UTF8SMTPS", "UTF8SMTPSA", "UTF8LMTPS", "UTF8LMTPSA",
    "SMTPS", "SMTPSA",  # Gmail's "with SMTPS" (implicit TLS), not registered
    "HTTPS",  # Microsoft 365 / webmail submission over HTTPS
})
_PLAIN_PROTOCOLS: Final = frozenset({
    "SMTP", "ESMTP", "ESMTPA", "LMTP", "LMTPA",
    "UTF8SMTP", "UTF8SMTPA", "UTF8LMTP", "UTF8LMTPA",
    "ASMTP",  # old Exim name of authenticated SMTP
})
_LOCAL_PROTOCOL: Final = re.compile(r"local(?:-[a-z]+)*", re.IGNORECASE)

# --- TLS comments ----------------------------------------------------------------------------
# Version words: TLSv1.2, TLS1_2, TLS1.3, TLSv1, SSLv3, TLSv1/SSLv3 (old OpenSSL), TLS13.
_VERSION_WORD: Final = re.compile(
    r"(?:TLS|SSL)v?\d(?:[._]?\d)?(?:/(?:TLS|SSL)v?\d(?:[._]\d)?)?", re.IGNORECASE
)
# Postfix (smtpd_tls_received_header), Stalwart, mailmoat:
#   "using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
_POSTFIX_TLS: Final = re.compile(
    r"using (?P<version>\S+) with cipher (?P<cipher>[^\s()]+)"
    r"(?: \((?P<bits>\d{1,5})/\d{1,5} bits\))?",
    re.IGNORECASE,
)
# key=value comments: Sendmail "version=TLSv1.2 cipher=X bits=256 verify=NOT", Gmail
# "version=TLS1_3 cipher=X bits=256/256", Microsoft "version=TLS1_2, cipher=X".
_KEY_VALUE: Final = re.compile(r"\b(version|cipher|bits)=([^\s,;()]+)", re.IGNORECASE)
# Exim before 4.93: "(TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256)", GnuTLS names have "_".
_EXIM_TLS: Final = re.compile(
    r"(?P<version>(?:TLS|SSL)v?\d(?:[._]\d)?):(?P<cipher>[A-Za-z0-9_\-]+):(?P<bits>\d{1,5})",
    re.IGNORECASE,
)
# "TLSv1.3 cipher X bits=256" (any order after the version; the brief's mailmoat form).
_LOOSE_CIPHER: Final = re.compile(r"\bcipher[ =:]+(?P<cipher>[A-Za-z0-9_\-]+)", re.IGNORECASE)
_BITS: Final = re.compile(r"\bbits[ =](?P<bits>\d{1,5})", re.IGNORECASE)
# qmail / qpsmtpd TLS patches: "with (DHE-RSA-AES256-SHA encrypted) SMTP".
_ENCRYPTED: Final = re.compile(r"(?P<cipher>[A-Za-z0-9_\-]+) encrypted", re.IGNORECASE)
# Local hand-offs written as comments.
_LOCAL_COMMENT: Final = re.compile(
    r"qmail \d+ invoked (?:from network|by uid \d+|by alias|for bounce)"
    r"|from userid \d+|^from [^\s@]+@localhost$|sendmail emulation|invoked by uid",
    re.IGNORECASE,
)
_AUTH_COMMENT: Final = re.compile(
    r"authenticated sender|\bauthenticated\b|^account \S+|\bauth=[a-z]", re.IGNORECASE
)
_HELO_IN_COMMENT: Final = re.compile(r'(?:^|[\s"])(?:HELO|EHLO)[ =](?P<helo>[^\s()"]*)', re.I)
_EXIM_HELO: Final = re.compile(r"\bhelo=(?P<helo>[^\s()]+)", re.IGNORECASE)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# C0 controls and DEL, except HTAB (white space): replaced in the field before tokenising.
_CONTROL_BYTES: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Comments worth reading for TLS facts (a cheap filter before the format regexes).
_TLS_HINT: Final = re.compile(r"tls|ssl|cipher|encrypted|transport security", re.IGNORECASE)
# A word that may hold an IP address: "[1.2.3.4]", "(2001:db8::1)", "[IPv6:...]:25", "a@[ip]".
_IP_HINT: Final = re.compile(r"\d[\d.]*\.\d|[0-9A-Fa-f]*:[0-9A-Fa-f]*:")
_IP_MAX: Final = 64  # longest IPv6 text with zone and brackets we bother to try
# dotted quad with optional ":port" (RFC 5321 §4.1.3 IPv4-address-literal, Snum = 1*3DIGIT)
_IPV4: Final = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?::\d{1,5})?")

_LOCALHOST_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "[127.0.0.1]"})
_CLAUSES: Final = frozenset({
    b"from", b"by", b"via", b"with", b"id", b"for", b"tls", b"envelope-from",
})


def _text(raw: bytes) -> str:
    """Bytes from a stamp as display text: UTF-8 with replacement, no control characters.

    C0 controls were already replaced in the whole field (see parse_received); only text
    decoded from UTF-8 can still hold C1 controls.
    """
    if raw.isascii():
        return raw.decode("ascii")
    return _CONTROL.sub("?", raw.decode("utf-8", "replace"))


def normalise_tls_version(version: str) -> str:
    """``TLS1_2``/``TLSv1.2``/``TLS1.2``/``TLS12`` → ``TLSv1.2``; ``TLSv1`` → ``TLSv1.0``.

    Anything else (``TLSv1/SSLv3`` from old OpenSSL) is returned as written.
    """
    match = re.fullmatch(r"(TLS|SSL)v?(\d)(?:[._]?(\d))?", version.strip(" ,;"), re.IGNORECASE)
    if match is None:
        return version.strip(" ,;")
    family, major, minor = match[1].upper(), match[2], match[3]
    if family == "SSL":
        return f"SSLv{major}"
    return f"TLSv{major}.{minor or '0'}"


def _ip(candidate: str) -> str | None:
    """The IP address in ``[1.2.3.4]``, ``[IPv6:...]``, ``1.2.3.4``, ``[1.2.3.4]:25``, else None."""
    if len(candidate) > _IP_MAX:
        return None
    text = candidate
    if "[" in text:
        start = text.find("[")
        end = text.find("]", start)
        text = text[start + 1 : end if end > 0 else len(text)]
    text = text.strip("()[],;")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    if (v4 := _IPV4.fullmatch(text)) is not None:  # the common case, without ipaddress
        octets = [int(o) for o in v4.groups()]
        if max(octets) <= 255:
            return ".".join(map(str, octets))
        return None
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        pass
    # "1.2.3.4:25" (address with a port) outside brackets
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and "." in host:
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    return None


@dataclass(slots=True)
class _TLSFacts:
    """What the comments said about TLS (mutable while one stamp is read)."""

    version: str | None = None
    cipher: str | None = None
    bits: int | None = None
    evidence: str | None = None

    def take(self, *, version: str | None, cipher: str | None, bits: str | None, why: str) -> None:
        if self.evidence is None:
            self.evidence = why
        if version and not self.version:
            self.version = normalise_tls_version(version)
        if cipher and not self.cipher:
            self.cipher = cipher
        if bits and self.bits is None:
            self.bits = int(bits.split("/")[0]) if bits.split("/")[0].isdigit() else None


def _tls_from_comment(comment: str, facts: _TLSFacts) -> None:
    """Record the TLS facts one comment states, in any of the forms real MTAs write."""
    if (match := _POSTFIX_TLS.search(comment)) is not None:
        facts.take(version=match["version"], cipher=match["cipher"], bits=match["bits"],
                   why=f"({comment})")
        return
    pairs = {k.lower(): v for k, v in _KEY_VALUE.findall(comment)}
    if "version" in pairs or "cipher" in pairs:
        facts.take(version=pairs.get("version"), cipher=pairs.get("cipher"),
                   bits=pairs.get("bits"), why=f"({comment})")
        return
    if (match := _EXIM_TLS.fullmatch(comment)) is not None:
        facts.take(version=match["version"], cipher=match["cipher"], bits=match["bits"],
                   why=f"({comment})")
        return
    if _VERSION_WORD.fullmatch(comment) or comment.upper() == "TLS":
        # Exim 4.93+ "(TLS1.3)", Exchange "(TLS)"
        facts.take(version=None if comment.upper() == "TLS" else comment, cipher=None,
                   bits=None, why=f"({comment})")
        return
    if comment.lower() == "google transport security":
        facts.take(version=None, cipher=None, bits=None, why=f"({comment})")
        return
    if (match := _ENCRYPTED.fullmatch(comment)) is not None:
        facts.take(version=None, cipher=match["cipher"], bits=None, why=f"({comment})")
        return
    version = _VERSION_WORD.match(comment)
    cipher = _LOOSE_CIPHER.search(comment)
    if version is not None and cipher is not None:
        bits = _BITS.search(comment)
        facts.take(version=version.group(), cipher=cipher["cipher"],
                   bits=bits["bits"] if bits else None, why=f"({comment})")


def classify_protocol(protocol: str | None) -> tuple[TLSStatus, str]:
    """TLS status implied by a ``with`` clause alone, and why (RFC 3848 / RFC 6531)."""
    if not protocol:
        return TLSStatus.UNKNOWN, "no 'with' clause"
    words = protocol.split()
    first = words[0]
    upper = first.upper()
    if upper in _TLS_PROTOCOLS:
        return TLSStatus.YES, f"with {first} (RFC 3848: TLS)"
    if "/" in first:  # Cisco AsyncOS: "ESMTP/TLS/CIPHER"
        parts = [p.upper() for p in first.split("/")]
        if parts[0] in _PLAIN_PROTOCOLS | _TLS_PROTOCOLS and "TLS" in parts[1:]:
            return TLSStatus.YES, f"with {first}"
    if upper in _PLAIN_PROTOCOLS and len(words) == 1:
        return TLSStatus.NO, f"with {first} (RFC 3848: no TLS)"
    if _LOCAL_PROTOCOL.fullmatch(first):
        return TLSStatus.NOT_APPLICABLE, f"with {first} (local submission)"
    if protocol.lower().startswith("microsoft smtp server"):
        return TLSStatus.NO, "with Microsoft SMTP Server and no TLS comment (Exchange writes one)"
    if upper in _PLAIN_PROTOCOLS:
        return TLSStatus.NO, f"with {first} (RFC 3848: no TLS)"
    return TLSStatus.UNKNOWN, f"with {protocol}: not a protocol keyword that says"


@dataclass(slots=True)
class _Clauses:
    """Token lists of each clause of one stamp (mutable while one stamp is read)."""

    preamble: list[Token]
    clauses: dict[bytes, list[Token]]
    extra_from: list[Token]


def _split_clauses(tokens: tuple[Token, ...]) -> _Clauses:
    out = _Clauses(preamble=[], clauses={}, extra_from=[])
    current = out.preamble
    for token in tokens:
        if token.kind is Kind.WORD:
            key = token.text.lower()
            if key in _CLAUSES:
                if key not in out.clauses:
                    current = out.clauses[key] = []
                    continue
                if key == b"from":  # IBM: "for <rcpt> from <sender>": the envelope sender
                    current = out.extra_from
                    continue
        current.append(token)
    return out


def _words(tokens: list[Token]) -> list[str]:
    return [_text(t.text) for t in tokens if t.kind is not Kind.COMMENT]


def _comments(tokens: list[Token], texts: dict[int, str]) -> list[str]:
    """The display texts of the comments among ``tokens`` (``texts``: by token offset)."""
    return [texts[t.start] for t in tokens if t.kind is Kind.COMMENT]


def _read_from(tokens: list[Token], fields: dict[str, str], texts: dict[int, str]) -> None:
    """From-domain: the name, then TCP-info comments (rDNS, IP, HELO)."""
    words = [t for t in tokens if t.kind is not Kind.COMMENT]
    name_ip = None
    if words:
        name = _text(words[0].text)
        fields["from_name"] = name
        # "from [1.2.3.4]": the client's claim, unless TCP-info says otherwise
        name_ip = _ip(name) if _IP_HINT.search(name) else None
    for comment in _comments(tokens, texts):
        # Exim "helo=NAME"; qmail "(HELO NAME)"; ZMailer '"EHLO NAME"'
        if "elo" in comment or "ELO" in comment:  # cheap filter before the two searches
            match = _EXIM_HELO.search(comment) or _HELO_IN_COMMENT.search(comment)
            if match is not None and match["helo"]:
                fields.setdefault("from_helo", match["helo"])
        if "from_ip" in fields or not _IP_HINT.search(comment):
            continue
        parts = comment.split()
        for index, part in enumerate(parts):
            if not _IP_HINT.search(part):
                continue
            if index > 0 and parts[index - 1].strip('"').upper() in {"HELO", "EHLO"}:
                continue  # "(HELO 192.168.1.2)": the client's claim, not the TCP peer
            if part[:5].lower() == "helo=":
                continue
            ip = _ip(part)
            if ip is None:
                continue
            fields.setdefault("from_ip", ip)
            # "(rdns [ip])": the word before a bracketed address is the reverse-DNS name
            if index > 0 and part.startswith("[") and "from_rdns" not in fields:
                before = parts[index - 1]
                if "=" not in before and before.upper() not in {"HELO", "EHLO"}:
                    fields["from_rdns"] = before.rstrip(".") if before != "unknown" else before
            break
    if name_ip is not None:
        fields.setdefault("from_ip", name_ip)


def _read_by(tokens: list[Token], fields: dict[str, str], texts: dict[int, str]) -> None:
    words = [t for t in tokens if t.kind is not Kind.COMMENT]
    if words and words[0].kind in (Kind.WORD, Kind.LITERAL):
        fields["by_name"] = _text(words[0].text)
    for comment in _comments(tokens, texts):
        ip = _ip(comment) if len(comment) <= _IP_MAX and _IP_HINT.search(comment) else None
        if ip is not None:
            fields.setdefault("by_ip", ip)
        elif "by_software" not in fields:
            fields["by_software"] = comment


def parse_received(value: bytes) -> Stamp:
    """Read one Received field body (folded or not). Never raises on bad input."""
    if len(value) > ANALYSIS_FIELD_MAX:
        return Stamp(
            text=_text(_CONTROL_BYTES.sub(b"?", value[:200])) + "...",
            tls_evidence="field not parsed",
            problems=(f"Received field longer than {ANALYSIS_FIELD_MAX} octets: not parsed",),
        )
    text = unfold(value).strip()
    if _CONTROL_BYTES.search(text):
        text = _CONTROL_BYTES.sub(b"?", text)
    parsed = tokenize(text)
    items = parsed.items
    problems: list[str] = []
    if parsed.unclosed:
        problems.append("unclosed comment, quote or bracket")
    if parsed.too_deep:
        problems.append("comments nested too deeply")
    semi = -1
    for i in range(len(items) - 1, -1, -1):  # the last ";" (IBM and others write several)
        if items[i].kind is Kind.SEMI:
            semi = i
            break
    body, date_part = (items[:semi], items[semi + 1 :]) if semi >= 0 else (items, ())
    clauses = _split_clauses(tuple(body))
    fields: dict[str, str] = {}

    # date-time: the non-comment tokens after the last ";" (comments there may carry TLS).
    timestamp = None
    date_text = None
    if semi >= 0:
        date_words = [t.text for t in date_part if t.kind is not Kind.COMMENT]
        date_raw = b" ".join(date_words).replace(b" ,", b",")
        date_text = _text(date_raw)
        timestamp = parse_date_time(date_raw)
        if timestamp is None:
            problems.append(f"date not understood: {date_text[:80]!r}")
    else:
        problems.append("no ';' and date-time (RFC 5321 §4.4)")

    texts = {t.start: _text(comment_text(t.text)) for t in items if t.kind is Kind.COMMENT}
    if b"from" in clauses.clauses:
        _read_from(clauses.clauses[b"from"], fields, texts)
    if b"by" in clauses.clauses:
        _read_by(clauses.clauses[b"by"], fields, texts)
    elif not any(_LOCAL_COMMENT.search(c) for c in _comments(clauses.preamble, texts)):
        problems.append("no 'by' clause")
    protocol_words = _words(clauses.clauses.get(b"with", []))
    protocol = " ".join(protocol_words) or None
    via = " ".join(_words(clauses.clauses.get(b"via", []))) or None
    id_words = _words(clauses.clauses.get(b"id", []))
    for_words = _words(clauses.clauses.get(b"for", []))
    tls_clause = _words(clauses.clauses.get(b"tls", []))

    all_comments = list(texts.values())
    facts = _TLSFacts()
    for comment in all_comments:
        if _TLS_HINT.search(comment):
            _tls_from_comment(comment, facts)
    if tls_clause:  # Exim 4.93+ / Haraka: "tls TLS_AES_256_GCM_SHA384"
        facts.take(version=None, cipher=tls_clause[0], bits=None, why=f"tls {tls_clause[0]}")
    if protocol and "/" in protocol.split()[0]:  # Cisco: ESMTP/TLS/CIPHER
        parts = protocol.split()[0].split("/")
        if len(parts) >= 3 and parts[1].upper() == "TLS":
            facts.cipher = facts.cipher or parts[2]

    transport = Transport.NETWORK
    preamble_and_by = _comments(clauses.preamble, texts) + _comments(
        clauses.clauses.get(b"by", []), texts
    )
    if any(_LOCAL_COMMENT.search(c) for c in preamble_and_by):
        transport = Transport.LOCAL
    proto_status, proto_why = classify_protocol(protocol)
    if proto_status is TLSStatus.NOT_APPLICABLE:
        transport = Transport.LOCAL
    from_ip = fields.get("from_ip")
    if (
        transport is Transport.NETWORK
        and from_ip is not None
        and (from_ip.startswith("127.") or from_ip == "::1")  # normalised by _ip
    ):
        transport = Transport.LOOPBACK
    from_name_, by_name_ = fields.get("from_name"), fields.get("by_name")
    if (
        transport is Transport.NETWORK
        and from_name_ is not None
        and by_name_ is not None
        and from_name_.lower().rstrip(".") == by_name_.lower().rstrip(".")
        and (from_ip is None or not ipaddress.ip_address(from_ip).is_global)
    ):
        transport = Transport.LOOPBACK  # Exchange "from X ([fe80::..]) by X with mapi"
    origin = False
    if transport is Transport.NETWORK and from_ip is None:
        from_name = fields.get("from_name")
        if b"from" not in clauses.clauses:
            # "Received: by host with SMTP id ..." (Gmail, webmail, sendmail -bs): the stamp
            # names no sending peer, so the message entered the mail system on this host.
            transport, origin = Transport.LOCAL, True
        elif from_name is not None and from_name.lower() in _LOCALHOST_NAMES:
            transport = Transport.LOOPBACK

    keyword = protocol.split(None, 1)[0] if protocol else ""
    upper = keyword.upper()
    if facts.evidence is not None:
        tls, evidence = TLSStatus.YES, facts.evidence
        if proto_status is TLSStatus.NO and upper in _PLAIN_PROTOCOLS:
            evidence += f" (although the protocol says {keyword})"
    elif origin:
        tls, evidence = TLSStatus.NOT_APPLICABLE, "no sending peer recorded (origin stamp)"
    elif transport is Transport.LOCAL:
        tls, evidence = TLSStatus.NOT_APPLICABLE, "local hand-off, no network"
    else:
        tls, evidence = proto_status, proto_why

    # RFC 3848: the "A" suffix (ESMTPA, ESMTPSA, LMTPA ...) says SMTP AUTH was used.
    authenticated = (
        upper.endswith("A") and upper.startswith(("ESMTP", "LMTP", "UTF8", "SMTP"))
    ) or any(_AUTH_COMMENT.search(c) for c in all_comments)

    return Stamp(
        text=_text(text),
        from_name=fields.get("from_name"),
        from_helo=fields.get("from_helo"),
        from_rdns=fields.get("from_rdns"),
        from_ip=fields.get("from_ip"),
        by_name=fields.get("by_name"),
        by_ip=fields.get("by_ip"),
        by_software=fields.get("by_software"),
        via=via,
        protocol=protocol,
        id=id_words[0] if id_words else None,
        recipient=for_words[0].strip("<>") if for_words else None,
        tls=tls,
        tls_version=facts.version,
        cipher=facts.cipher,
        tls_bits=facts.bits,
        tls_evidence=evidence,
        transport=transport,
        authenticated=authenticated,
        timestamp=timestamp,
        date_text=date_text,
        comments=tuple(all_comments),
        problems=tuple(problems),
    )
