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

The header section is split once (:func:`mailmoat.auth.dkim.internals.split_fields`, the
fields exactly as DKIM hashes them): the checks of step 2 and the signatures of step 3 read
the same fields, so what is checked is what is signed. The keys' constant work (key checks,
the folded ``v= a= c= d= s=`` prefix) is done once per key, the body hash and the selected
header fields once per message for all its signatures (:func:`mailmoat.auth.dkim.
sign_fields`).

Where it runs: a message up to :data:`INLINE_MAX` octets is prepared in the event loop's
thread, a larger one in a worker thread (ARCHITECTURE.md rule 14: big work never blocks the
loop). ``cryptography`` holds the GIL while it signs, so a worker thread runs no signature in
parallel with the loop; for a small message the hop only costs (~0.1 ms a message, more than
an Ed25519 signature), and the loop is blocked about as long either way (a worker holding the
GIL yields it only every ``sys.getswitchinterval()``, 5 ms). The body hash of a large
message does release the GIL (hashlib, buffers over 2 KiB): that stays in the worker.

SECURITY: the submitted message is untrusted even from an authenticated user: the header
section is split by the bounded, linear :func:`~mailmoat.auth.dkim.internals.split_fields` (a
section over ``limits.MESSAGE_HEADER_MAX`` octets or ``limits.MESSAGE_MAX_HEADER_FIELDS``
fields is refused, also once Date/Message-ID are added); a field is known by its name
lower-cased, WSP before the colon dropped, as DKIM verifiers and MUAs read it (so an
``From :`` first line is a From field, not an mbox separator). From mailboxes are read with
the comment-aware tokenizer (group syntax, several angle-addrs, or unbalanced quoting are
refused, never guessed), or, for the plain ``Name <addr>`` / ``addr`` forms only, one
possessive (linear) regular expression that reads them the same way. Keys are trusted
configuration.
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
from mailmoat.auth.dkim import KeySigner, load_private_key, sign_fields
from mailmoat.auth.dkim.internals import RawField, split_fields
from mailmoat.clock import Clock
from mailmoat.errors import ConfigError, LimitExceeded, MailmoatError
from mailmoat.gateway.inbound import SealKey, split_header
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.gateway.users import User
from mailmoat.message import Kind, Token, tokenize, unfold
from mailmoat.resolver import Resolver
from mailmoat.smtp import Reply

__all__ = [
    "DROPPED_FIELDS",
    "FROM_NOT_ALLOWED",
    "FROM_UNREADABLE",
    "INLINE_MAX",
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

#: Messages up to this size are prepared in the event loop's thread, larger ones in a worker
#: thread (ARCHITECTURE.md rule 14). See :meth:`SubmissionSigner.prepare`.
INLINE_MAX: Final = 64 * 1024
#: author domains whose signers :meth:`SubmissionSigner._signers` remembers
_DOMAIN_MEMO_MAX: Final = 1024
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


# RFC 5322 §3.2.3 atext; §3.4.1 a dot-atom addr-spec (a domain of letters, digits, hyphens)
_ATEXT: Final = rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR: Final = (rb"(" + _ATEXT + rb"++(?:\." + _ATEXT + rb"++)*+@[A-Za-z0-9-]++"
                rb"(?:\.[A-Za-z0-9-]++)*+)")
#: The usual From body, in one match: ``addr`` or ``Display Name <addr>`` (a phrase of atoms
#: only: no quotes, comments, dots or folding). Possessive quantifiers: linear, no
#: backtracking. Anything else goes to the tokenizer; what matches here reads the same there
#: (tests/unit/gateway/test_outbound_sign_shared.py compares the two).
_PLAIN_MAILBOX: Final = re.compile(
    rb"[ \t]*+(?:(?:" + _ATEXT + rb"++[ \t]++)*+(?:" + _ATEXT + rb"++)?+<" + _ADDR + rb">|"
    + _ADDR + rb")[ \t]*+")


def from_addresses(value: bytes) -> list[str] | None:
    """The addr-specs of a From (or Sender) field body, or None if it is not a plain
    mailbox-list (RFC 5322 §3.4; groups, routes and nested angle brackets are refused)."""
    plain = _PLAIN_MAILBOX.fullmatch(value)
    if plain is not None:
        return [(plain[1] or plain[2]).decode("ascii")]
    return _mailbox_list(value)


def _mailbox_list(value: bytes) -> list[str] | None:
    """:func:`from_addresses` by the comment-aware tokenizer (any field body)."""
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
        inline_max: int = INLINE_MAX,
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
        self.inline_max = inline_max
        self._by_key: dict[int, KeySigner] = {}  # id() of a DKIMKey of self.keys
        self._by_domain: dict[str, tuple[tuple[KeySigner, str], ...]] = {}

    async def prepare(self, message: bytes, *, user: User | None) -> SubmissionOutcome:
        """Repair, check the From against ``user`` (None: no check, e.g. a trusted relay
        network), sign (in this thread up to ``inline_max`` octets, else in a worker thread)
        and seal."""
        if len(message) <= self.inline_max:
            outcome = self.prepare_sync(message, user=user)
        else:
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
        # One split of the header section serves the checks below and the DKIM signatures
        # (bounded: size above, field count in split_fields). A field is named by what is
        # before its colon, WSP before the colon dropped (RFC 5322 §4.5.8); a line without a
        # colon or a first line starting with WSP has a name no check or h= list can match.
        fields = split_fields(header)
        seen: set[bytes] = set()
        froms: list[RawField] = []
        senders: list[RawField] = []
        dropped = False
        for item in fields:
            lname = item.lname
            if lname in SINGLE_FIELDS:
                if lname == b"from":  # (more than one: FROM_UNREADABLE below)
                    froms.append(item)
                    continue
                if lname in seen:
                    return SubmissionOutcome(message=message, reply=duplicate_field_reply(
                        item.name.strip()), reason=f"duplicate {lname.decode('ascii')} field")
                seen.add(lname)
                if lname == b"sender":
                    senders.append(item)
                elif lname in DROPPED_FIELDS:
                    dropped = True
            elif lname in DROPPED_FIELDS:
                dropped = True
        if dropped:
            # rebuilt from the fields kept (never by searching for a removed field's bytes,
            # which may also occur inside another field)
            fields = [item for item in fields if item.lname not in DROPPED_FIELDS]
            kept = b"".join([item.raw for item in fields])
            if end is None:
                data = kept
            else:
                data = kept + data[end - 2 :]
                end = len(kept) + 2
            repairs += ("Bcc removed",)
        addresses = from_addresses(froms[0].value) if len(froms) == 1 else None
        if addresses is None:
            return SubmissionOutcome(message=message, reply=FROM_UNREADABLE,
                                     reason=f"{len(froms)} From field(s), or unreadable")
        if senders:
            sender = from_addresses(senders[0].value)
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
        now = self.clock.now()
        added: list[RawField] = []
        if b"date" not in seen:
            raw = f"Date: {_rfc5322_date(now)}\r\n".encode("ascii")
            added.append(RawField(b"Date", b"date", raw))
            repairs += ("Date added",)
        if b"message-id" not in seen:
            token = self.randbytes(16).hex()
            raw = f"Message-ID: <{token}@{self.hostname}>\r\n".encode("ascii")
            added.append(RawField(b"Message-ID", b"message-id", raw))
            repairs += ("Message-ID added",)
        if added:
            more = b"".join([item.raw for item in added])
            if end is None:  # header only: the new fields go at its end, a body separator too
                data = data + more + b"\r\n"
                end = len(data)
            else:
                data = data[: end - 2] + more + data[end - 2 :]
                end += len(more)
            fields = [*fields, *added]
        signers = self._signers(addresses[0].rpartition("@")[2])
        if not signers:
            return SubmissionOutcome(message=data, repairs=repairs)
        grown = added and end is not None and end > limits.MESSAGE_HEADER_MAX
        if grown or len(fields) > limits.MESSAGE_MAX_HEADER_FIELDS:
            # (the bounds of split_fields, for the section with the added fields)
            raise LimitExceeded("header section too large to sign", limit="MESSAGE_HEADER_MAX")
        body = b"" if end is None else data[end:]
        fields_out = sign_fields(fields, body, [s for s, _ in signers], timestamp=int(now))
        return SubmissionOutcome(message=fields_out + data,
                                 signatures=tuple(label for _, label in signers),
                                 repairs=repairs)

    def _signers(self, author_domain: str) -> tuple[tuple[KeySigner, str], ...]:
        """The :class:`KeySigner` of each key :func:`keys_for` picks for the author's domain
        (Ed25519 first), with its ``d=/s=/a=`` label; remembered per domain (a bounded memo:
        a user allowed ``*@example.org`` may name any number of subdomains)."""
        name = author_domain.lower()
        found = self._by_domain.get(name)
        if found is None:
            chosen = []
            for key in keys_for(name, self.keys):
                signer = self._by_key.get(id(key))
                if signer is None:
                    signer = KeySigner(key.domain, key.selector, key.key)
                    self._by_key[id(key)] = signer
                algo = "ed25519-sha256" if isinstance(key.key, ed25519.Ed25519PrivateKey) \
                    else "rsa-sha256"
                chosen.append((signer, f"d={key.domain} s={key.selector} a={algo}"))
            found = tuple(chosen)
            if len(self._by_domain) >= _DOMAIN_MEMO_MAX:
                self._by_domain.clear()
            self._by_domain[name] = found
        return found
