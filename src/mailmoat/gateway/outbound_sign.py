"""The submission pipeline (role ``submission``, layer L4): repair, check the author, DKIM-sign
and optionally ARC-seal a message an authenticated user submitted.

One :class:`SubmissionSigner` per listener::

    outcome = await signer.prepare(message, user=session.user)
    if outcome.reply is not None:      # 550 5.7.1: From not allowed for this login
        ...refuse at the end of DATA...
    else:
        ...spool outcome.message (repaired, signed)...

Steps, in order:

1. **Repair where safe** (:func:`repair`), as Postfix's cleanup does before relaying: a bare
   CR or a bare LF becomes CRLF (RFC 5321 §2.3.8: "Lines consist of zero or more data
   characters terminated by the sequence ASCII character "CR" (hex 0D) followed immediately by
   ASCII character "LF" (hex 0A)"); the message ends with CRLF; a missing ``Date`` or
   ``Message-ID`` is added (RFC 6409 §8.2, §8.3: an MSA "MAY add" them; RFC 5322 §3.6
   requires Date, §3.6.4 says Message-ID SHOULD be present).
2. **The author**: every mailbox of the (single) From field and the Sender field, when there is
   one, must be an address the login may use (:meth:`mailmoat.gateway.users.User.may_send_as`);
   otherwise ``550 5.7.1`` (RFC 3463 X.7.1; Postfix ``reject_sender_login_mismatch`` checks
   MAIL FROM, this checks what the recipient sees). A message without exactly one readable
   From field is refused with ``550 5.6.0`` (RFC 5322 §3.6: exactly one From), as is any
   field RFC 5322 §3.6 / RFC 2045 allow once appearing twice (:data:`SINGLE_FIELDS`: how a
   CRLF injected into a web form's Subject shows up); Bcc is removed (RFC 5322 §3.6.3).
3. **DKIM** (RFC 6376 §5): the keys of the From domain or its closest configured parent
   (relaxed alignment, RFC 7489 §3.1.1), *every* key of that domain: with an RSA and an
   Ed25519 key, both sign (RFC 8463 §5 dual signing; Ed25519 on top).
4. **ARC** (optional, RFC 8617 §5.1): the chain is validated and a set added with the
   authenticated submission as the AAR's result (``auth=pass smtp.auth=<login>``).

Signing runs in a worker thread (ARCHITECTURE.md rule 14: RSA signatures and the body hash of
a large message are CPU work).

SECURITY: the submitted message is untrusted even from an authenticated user: headers are
read with the bounded parsers of :mod:`mailmoat.message` (a header section over
``limits.MESSAGE_HEADER_MAX`` is refused), From mailboxes with the comment-aware tokenizer
(group syntax, several angle-addrs, or unbalanced quoting are refused, never guessed). Keys
are trusted configuration.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from mailmoat import limits
from mailmoat.auth.arc import seal
from mailmoat.auth.arc import validate as arc_validate
from mailmoat.auth.authres import auth_resinfo
from mailmoat.auth.dkim import load_private_key, sign
from mailmoat.clock import Clock
from mailmoat.errors import ConfigError, LimitExceeded, MailmoatError
from mailmoat.gateway.inbound import SealKey, split_header
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.gateway.users import User
from mailmoat.message import Kind, Token, parse_headers, tokenize, unfold
from mailmoat.resolver import Resolver
from mailmoat.smtp import Reply

__all__ = [
    "DROPPED_FIELDS",
    "FROM_NOT_ALLOWED",
    "FROM_UNREADABLE",
    "SINGLE_FIELDS",
    "SubmissionOutcome",
    "SubmissionSigner",
    "duplicate_field_reply",
    "from_addresses",
    "keys_for",
    "load_keys_dir",
    "repair",
]

#: RFC 3463 §3.8 X.7.1 "Delivery not authorized, message refused".
FROM_NOT_ALLOWED: Final = Reply(code=550, status="5.7.1",
                                text="From address not allowed for this login")
#: RFC 3463 §3.7 X.6.0 "Other or undefined media error" (RFC 5322 §3.6: one From field).
FROM_UNREADABLE: Final = Reply(code=550, status="5.6.0",
                               text="Message needs exactly one readable From header field")
#: Fields a message may carry at most once: RFC 5322 §3.6 (the table's "max number" 1) and
#: RFC 2045 §4, §5, §6 (one MIME-Version, Content-Type, Content-Transfer-Encoding per entity).
#: A second one is what a CRLF smuggled into a form field turns into ("Subject: hi\r\nTo:
#: victim@..."): refused, never guessed at (RFC 3463 X.6.0).
SINGLE_FIELDS: Final = frozenset({
    b"date", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc", b"message-id",
    b"in-reply-to", b"references", b"subject",
    b"mime-version", b"content-type", b"content-transfer-encoding",
})
#: Removed before relaying, as Postfix's cleanup does by default (``message_drop_headers``):
#: RFC 5322 §3.6.3 lets the submission server remove Bcc so blind recipients stay blind.
DROPPED_FIELDS: Final = frozenset({b"bcc", b"resent-bcc"})


def duplicate_field_reply(name: bytes) -> Reply:
    """``550 5.6.0`` naming the repeated field."""
    label = name.decode("ascii", "replace")[:64]
    return Reply(code=550, status="5.6.0",
                 text=f"Header field {label} appears more than once (RFC 5322 section 3.6)")

_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
_KEY_SUFFIXES: Final = (".pem", ".key", ".der")
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")


def repair(message: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Bare CR / bare LF → CRLF, and a final CRLF (see the module docstring).
    Returns the repaired bytes and what was repaired."""
    fixes: list[str] = []
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_END.sub(b"\r\n", message)
        fixes.append("bare CR/LF made CRLF")
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"
        fixes.append("final CRLF added")
    return message, tuple(fixes)


def _rfc5322_date(now: float) -> str:
    """RFC 5322 §3.3 date-time in UTC: ``Sat, 28 Nov 2026 21:52:43 +0000``."""
    t = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return (f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000")


def _addr_spec(tokens: Sequence[Token]) -> str | None:
    words = [t for t in tokens if t.kind is not Kind.COMMENT]
    if not words or any(t.kind not in (Kind.WORD, Kind.QUOTED) for t in words):
        return None
    text = b"".join(t.text for t in words).decode("utf-8", "replace")
    local, at, domain = text.rpartition("@")
    return text if at and local and domain else None


def from_addresses(value: bytes) -> list[str] | None:
    """The addr-specs of a From (or Sender) field body, or None if it is not a plain
    mailbox-list (RFC 5322 §3.4; groups, routes and nested angle brackets are refused)."""
    parsed = tokenize(unfold(value))
    if parsed.unclosed or parsed.stray_close:
        return None
    segments: list[list[Token]] = [[]]
    for token in parsed.items:
        if token.kind is Kind.SEMI:
            return None
        if token.kind is Kind.COMMA:
            segments.append([])
        else:
            segments[-1].append(token)
    out: list[str] = []
    for segment in segments:
        words = [t for t in segment if t.kind is not Kind.COMMENT]
        if not words:
            continue
        angles = [t for t in words if t.kind is Kind.ANGLE]
        if len(angles) > 1 or (angles and words[-1] is not angles[0]):
            return None
        if angles:
            inner = tokenize(angles[0].text[1:-1])
            if inner.unclosed or inner.stray_close:
                return None
            address = _addr_spec(inner.items)
        else:
            address = _addr_spec(words)
        if address is None:
            return None
        out.append(address)
    return out or None


def keys_for(domain: str, keys: Sequence[DKIMKey]) -> tuple[DKIMKey, ...]:
    """Every key of ``domain`` or of its closest configured parent (the selection rule of
    :mod:`mailmoat.gateway.submit_api`, extended to several selectors for dual signing)."""
    name = domain.lower().rstrip(".")
    best: str | None = None
    for key in keys:
        d = key.domain.lower().rstrip(".")
        if (name == d or name.endswith("." + d)) and (best is None or len(d) > len(best)):
            best = d
    if best is None:
        return ()
    chosen = [k for k in keys if k.domain.lower().rstrip(".") == best]
    # RFC 8463 §5 dual signing: the Ed25519 signature on top (as auth.dkim.sign_dual).
    chosen.sort(key=lambda k: 0 if isinstance(k.key, ed25519.Ed25519PrivateKey) else 1)
    return tuple(chosen)


def load_keys_dir(directory: Path | str) -> tuple[DKIMKey, ...]:
    """Keys laid out as ``DIR/<domain>/<selector>.pem`` (or ``.key`` / ``.der``): one
    directory per signing domain, one file per selector."""
    root = Path(directory)
    out: list[DKIMKey] = []
    try:
        domains = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        raise ConfigError(f"cannot read the DKIM keys directory {root}: {exc.strerror}",
                          key="dkim_signing.keys_dir") from None
    for domain_dir in domains:
        for file in sorted(domain_dir.iterdir()):
            if file.suffix not in _KEY_SUFFIXES or not file.is_file():
                continue
            try:
                key = load_private_key(file.read_bytes())
            except (OSError, MailmoatError) as exc:
                raise ConfigError(f"DKIM key {file}: {exc}", key="dkim_signing.keys_dir") from None
            out.append(DKIMKey(domain=domain_dir.name.lower().rstrip("."), selector=file.stem,
                               key=key))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmissionOutcome:
    """What :meth:`SubmissionSigner.prepare` made of a message. ``reply`` set: refuse with it
    (``message`` is then the input, unsigned)."""

    message: bytes
    reply: Reply | None = None
    reason: str = ""
    #: ``d=/s=/a=`` of each signature added, top first
    signatures: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    sealed: bool = False

    @property
    def ok(self) -> bool:
        return self.reply is None


class SubmissionSigner:
    """Repair, check and sign submitted messages with the configured keys."""

    def __init__(
        self,
        *,
        keys: Sequence[DKIMKey] = (),
        hostname: str,
        clock: Clock,
        randbytes: Callable[[int], bytes] = secrets.token_bytes,
        arc_seal: SealKey | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        if arc_seal is not None and resolver is None:
            raise ConfigError("ARC sealing needs a resolver (to validate the chain)",
                              key="dkim_signing.arc")
        self.keys = tuple(keys)
        self.hostname = hostname
        self.clock = clock
        self.randbytes = randbytes
        self.arc_seal = arc_seal
        self.resolver = resolver

    async def prepare(self, message: bytes, *, user: User | None) -> SubmissionOutcome:
        """Repair, check the From against ``user`` (None: no check, e.g. a trusted relay
        network), sign (in a worker thread) and seal."""
        outcome = await asyncio.to_thread(self.prepare_sync, message, user=user)
        if not outcome.ok or self.arc_seal is None:
            return outcome
        assert self.resolver is not None
        key = self.arc_seal
        data = outcome.message
        chain = await arc_validate(data, self.resolver, clock=self.clock)
        result = auth_resinfo("pass", user=user.name if user else None)
        arc_set = await asyncio.to_thread(
            seal, data, chain, authserv_id=self.hostname, results=[result],
            domain=key.domain, selector=key.selector, private_key=key.key,
            timestamp=int(self.clock.now()))
        if arc_set is None:
            return outcome
        return SubmissionOutcome(message=arc_set.fields + data, signatures=outcome.signatures,
                                 repairs=outcome.repairs, sealed=True)

    def prepare_sync(self, message: bytes, *, user: User | None) -> SubmissionOutcome:
        """:meth:`prepare` without ARC, in the calling thread."""
        data, repairs = repair(message)
        end = split_header(data)
        header = data if end is None else data[:end]
        if len(header) > limits.MESSAGE_HEADER_MAX:
            raise LimitExceeded("header section too large", limit="MESSAGE_HEADER_MAX")
        headers = parse_headers(header)
        seen: set[bytes] = set()
        for item in headers:
            lname = item.key.strip()
            if lname in SINGLE_FIELDS and lname != b"from":  # From: FROM_UNREADABLE below
                if lname in seen:
                    return SubmissionOutcome(message=message, reply=duplicate_field_reply(
                        item.name.strip()), reason=f"duplicate {lname.decode('ascii')} field")
                seen.add(lname)
        dropped = [item for item in headers if item.key.strip() in DROPPED_FIELDS]
        if dropped and end is not None:
            kept = header
            for item in dropped:
                kept = kept.replace(item.raw, b"", 1)
            data = kept + data[end:]
            end = len(kept)
            header = kept
            repairs += ("Bcc removed",)
        froms = headers.get_all("From")
        addresses = from_addresses(froms[0].value) if len(froms) == 1 else None
        if addresses is None:
            return SubmissionOutcome(message=message, reply=FROM_UNREADABLE,
                                     reason=f"{len(froms)} From field(s), or unreadable")
        senders = headers.get_all("Sender")
        if senders:
            sender = from_addresses(senders[0].value) if len(senders) == 1 else None
            if sender is None or len(sender) != 1:
                return SubmissionOutcome(message=message, reply=FROM_UNREADABLE,
                                         reason="Sender field unreadable")
            addresses = [*addresses, *sender]
        if user is not None:
            for address in addresses:
                if not user.may_send_as(address):
                    return SubmissionOutcome(
                        message=message, reply=FROM_NOT_ALLOWED,
                        reason=f"{user.name} may not send as {address[:200]}")
        added = b""
        now = self.clock.now()
        if headers.get("Date") is None:
            added += f"Date: {_rfc5322_date(now)}\r\n".encode("ascii")
            repairs += ("Date added",)
        if headers.get("Message-ID") is None:
            token = self.randbytes(16).hex()
            added += f"Message-ID: <{token}@{self.hostname}>\r\n".encode("ascii")
            repairs += ("Message-ID added",)
        if added:
            if end is None:  # header only: the new fields go at its end, a body separator too
                data = data + added + b"\r\n"
            else:
                data = data[: end - 2] + added + data[end - 2 :]
        author = addresses[0].rpartition("@")[2]
        signatures: list[str] = []
        fields = b""
        for key in keys_for(author, self.keys):
            fields += sign(data, key.domain, key.selector, key.key, timestamp=int(now))
            algo = "ed25519-sha256" if isinstance(key.key, ed25519.Ed25519PrivateKey) \
                else "rsa-sha256"
            signatures.append(f"d={key.domain} s={key.selector} a={algo}")
        return SubmissionOutcome(message=fields + data, signatures=tuple(signatures),
                                 repairs=repairs)
