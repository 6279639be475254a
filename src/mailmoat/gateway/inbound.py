"""The inbound message pipeline (role ``mx``, layer L4): authenticate a message while DATA
streams in, apply the sender's DMARC policy and ours, and say what to do with it.

One :class:`InboundPipeline` per listener (shared by its sessions); one
:class:`InboundMessage` per message::

    spf = pipeline.start_spf(ip=ip, helo=helo, mail_from=sender)     # at MAIL FROM (optional)
    msg = pipeline.start(ip=ip, helo=helo, mail_from=sender, tls=tls, spf=spf)  # DATA start
    msg.feed(chunk)                                                   # every MessageChunk
    verdict = await msg.finish()                                      # end of data
    verdict.action   # "deliver" | "quarantine" | "reject"; verdict.reply for reject
    verdict.edits    # header edits for the spooled bytes (HeaderEditor / apply_edits;
                     # HeaderEdits.to_json() keeps them with the message until delivery)
    verdict.record(spool_id=..., envelope=..., size=...)   # the store row

Streaming (ARCHITECTURE.md rule 14): the header section is buffered until the empty line;
then the DKIM verifier and the ARC validator are created from it, the DKIM key lookups start
(:meth:`~mailmoat.auth.dkim.DKIMVerifier.prefetch_keys`) with the From domain's ``_dmarc``
record (a cache warm-up), concurrently with the body, and every later chunk goes to their
body canonicalisers, which hash it and keep nothing. The body is
never held (except, when ARC sealing is configured, a body up to
``limits.PIPELINE_ARC_SEAL_BODY_MAX``: see :class:`InboundPolicy`). SPF runs at MAIL FROM
when the session starts it there, else concurrently from DATA start.

Policy (:func:`decide`, pure), in this order:

1. deny lists: the client IP in ``deny_networks``, or the From / MAIL FROM domain (or a parent)
   in ``deny_domains`` → reject;
2. the DMARC disposition (RFC 7489 §6.6.4 / RFC 9989 §4.7, ``pct`` and ``t=y`` already
   applied by :mod:`mailmoat.auth.dmarc`). A failing message with disposition quarantine or
   reject may be overridden (RFC 7489 §7.2 "local policy"; recorded as the Appendix C
   ``PolicyOverrideType``), first match wins:

   * ``allow_networks`` contains the client IP → ``local_policy``;
   * ``trusted_forwarders`` contains the client IP → ``trusted_forwarder``;
   * RFC 8617 §7.2 ("a receiver MAY ... use the ARC information to override a DMARC
     failure"): the ARC chain validated (cv=pass), its newest ARC-Seal is by a domain in
     ``trusted_arc_sealers``, and that sealer's ARC-Authentication-Results recorded a pass for
     the message's author (dmarc=pass, or a dkim=pass whose ``header.d`` is the From domain or
     its parent, or an spf=pass whose ``smtp.mailfrom`` domain is) → ``local_policy``
     ``arc=pass``; our Authentication-Results carries ``policy.override=arc`` on the dmarc
     result (the ``policy`` ptype, RFC 8601 §2.3);
   * a domain in ``allow_domains`` authenticated the message itself (SPF pass for the MAIL
     FROM domain, or a DKIM pass ``d=``, the domain or a subdomain) → ``local_policy``. An
     allow-list entry never trusts an unauthenticated name: a From domain can be forged.

   Otherwise: ``reject`` → 550 5.7.1 with the DMARC reason (RFC 7489 §6.6.4 / §10.3 "reject
   the message at the SMTP layer"), ``quarantine`` → the quarantine (a Maildir folder and the
   header ``X-Mailmoat-Quarantine: yes``), ``none`` → deliver.

Header edits (:class:`HeaderEdits`): inbound Authentication-Results fields that claim our
authserv-id are removed (RFC 8601 §5 "MUST delete (or otherwise obscure)"), as is any inbound
``X-Mailmoat-Quarantine`` field (only we say that); our Authentication-Results field is put on
top, with the quarantine field, and, when sealing is configured, an ARC Set (RFC 8617 §5.1)
computed over the message as it will be delivered. Edits touch only the header section:
:class:`HeaderEditor` rewrites the spooled bytes as a stream, passing the body through.

Every verdict is logged as one ``key=value`` line (logger ``mailmoat.pipeline``) with its
reasons.

SECURITY: the message, the HELO and MAIL FROM are untrusted. The header section is bounded
(``limits.MESSAGE_HEADER_MAX``: beyond it the message is refused, 552 5.3.4, before any parser
runs); every parser used is a bounded one of :mod:`mailmoat.message` and :mod:`mailmoat.auth`;
authentication outcomes are values. Inbound Authentication-Results of other ADMDs are never
believed; an ARC-Authentication-Results is read only when its ARC Set validated and was sealed
by a domain the operator trusts. Reply texts carry only validated A-label domain names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from mailmoat import limits
from mailmoat.auth.arc import ARCSigningError, ARCStatus, ARCValidation, ARCValidator, seal
from mailmoat.auth.authres import (
    AuthResProperty,
    AuthResResult,
    claims_authserv_id,
    format_authentication_results,
)
from mailmoat.auth.authres import parse as parse_authres
from mailmoat.auth.dkim import DKIMResult, DKIMResultCode, DKIMVerifier, PrivateKey
from mailmoat.auth.dkim._fields import fields_from_headers
from mailmoat.auth.dmarc import (
    AuthorDomain,
    Disposition,
    DMARCResult,
    DMARCVerdict,
    author_domain,
    check_author,
)
from mailmoat.auth.spf import SPFResult, SPFVerdict, check_mailfrom
from mailmoat.auth.verify import DEFAULT_VERIFY_OPTIONS, Authentication, VerifyOptions
from mailmoat.auth.verify import build_results as _build_results
from mailmoat.clock import Clock
from mailmoat.errors import LimitExceeded, ParseError
from mailmoat.message import Headers, parse_headers, unfold
from mailmoat.net.tls import TLSInfo
from mailmoat.resolver import Resolver, RRType
from mailmoat.smtp import Reply
from mailmoat.spool import Envelope
from mailmoat.store import OverrideReason, Verdict, verdict_from_authentication

__all__ = [
    "QUARANTINE_FIELD",
    "Action",
    "HeaderEditor",
    "HeaderEdits",
    "InboundMessage",
    "InboundPipeline",
    "InboundPolicy",
    "InboundVerdict",
    "SealKey",
    "apply_edits",
    "decide",
    "split_header",
    "verdict_for",
]

log = logging.getLogger("mailmoat.pipeline")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The field that tells downstream filters (Sieve, procmail) the message is quarantined.
QUARANTINE_FIELD: Final = "X-Mailmoat-Quarantine"
_QUARANTINE_LNAME: Final = QUARANTINE_FIELD.lower().encode("ascii")
#: the fields every delivered message loses besides claiming Authentication-Results
_REMOVE_NAMES: Final = frozenset({_QUARANTINE_LNAME})
_AR_LNAME: Final = b"authentication-results"
_AAR_LNAME: Final = b"arc-authentication-results"
_AMS_LNAME: Final = b"arc-message-signature"
#: RFC 8617 §4.1.1: arc-info = instance [CFWS] ";" ...; instance = "i=" 1*2DIGIT (leading
#: CFWS allowed)
_AAR_INSTANCE: Final = re.compile(rb"\A[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,2})[ \t\r\n]*;")

#: RFC 3463 §3.8 X.7.1 "Delivery not authorized, message refused"; the DMARC reject reply
#: ("550 5.7.1", as OpenDMARC and the large providers answer).
_REJECT_CODE: Final = 550
_REJECT_STATUS: Final = "5.7.1"
#: RFC 3463 §3.4 X.3.4 "Message too big for system" for a header section beyond our bound.
HEADER_TOO_LARGE: Final = Reply(code=552, status="5.3.4",
                                text="Header section too large")


class Action(StrEnum):
    """What the gateway does with the message."""

    DELIVER = "deliver"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    @property
    def disposition(self) -> str:
        """The RFC 7489 Appendix C ``DispositionType`` actually applied."""
        return {"deliver": "none", "quarantine": "quarantine", "reject": "reject"}[self.value]


@dataclass(frozen=True, slots=True, kw_only=True)
class SealKey:
    """An ARC sealing (or DKIM signing) key: ``d=domain; s=selector``."""

    domain: str
    selector: str
    key: PrivateKey = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundPolicy:
    """The operator's local policy (``[policy]``, see :mod:`mailmoat.gateway.config`).

    ``quarantine_folder``: the Maildir folder quarantined mail goes to (``None``: header and
    flag only, the mailbox server's filters decide). ``arc_seal``: seal every delivered
    message (RFC 8617 §5.1) as ``authserv_id``'s ADMD with this key.
    """

    authserv_id: str
    trusted_forwarders: tuple[Network, ...] = ()
    trusted_arc_sealers: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    allow_networks: tuple[Network, ...] = ()
    deny_networks: tuple[Network, ...] = ()
    quarantine_folder: str | None = "Junk"
    arc_seal: SealKey | None = None
    arc_seal_body_max: int = limits.PIPELINE_ARC_SEAL_BODY_MAX
    verify: VerifyOptions = DEFAULT_VERIFY_OPTIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderEdits:
    """Edits of the header section; the body is never touched.

    ``prepend``: complete fields (each ending in CRLF) to put on top, in order; every inbound
    Authentication-Results field claiming ``remove_authserv_id`` and every field named in
    ``remove_names`` (lower-case) is dropped.
    """

    prepend: bytes = b""
    remove_authserv_id: str | None = None
    remove_names: frozenset[bytes] = frozenset()

    def to_json(self) -> str:
        """A JSON text to keep with the spooled message until delivery (the edits are
        applied when the message is read for delivery, :class:`HeaderEditor`)."""
        return json.dumps({
            "v": 1,
            "prepend": base64.b64encode(self.prepend).decode("ascii"),
            "remove_authserv_id": self.remove_authserv_id,
            "remove_names": sorted(n.decode("ascii") for n in self.remove_names),
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> HeaderEdits:
        """The inverse of :meth:`to_json` (ValueError for anything else)."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a header-edits record")
        prepend = base64.b64decode(str(data["prepend"]), validate=True)
        auth_id = data.get("remove_authserv_id")
        names = data.get("remove_names", [])
        if not (auth_id is None or isinstance(auth_id, str)) or not isinstance(names, list):
            raise ValueError("not a header-edits record")
        return cls(prepend=prepend, remove_authserv_id=auth_id,
                   remove_names=frozenset(str(n).lower().encode("ascii") for n in names))

    def removes(self, name: bytes, value: bytes) -> bool:
        lname = name.strip().lower()
        if lname in self.remove_names:
            return True
        return (self.remove_authserv_id is not None and lname == _AR_LNAME
                and claims_authserv_id(value, self.remove_authserv_id))

    def apply(self, header: bytes) -> bytes:
        """The edited header section (``header`` as split by :func:`split_header`: fields
        with CRLF line ends, the empty line included or not)."""
        out = [self.prepend]
        for raw in _fields(header):
            colon = raw.find(b":")
            if colon > 0 and self.removes(raw[:colon], raw[colon + 1 :]):
                continue
            out.append(raw)
        return b"".join(out)


def _fields(header: bytes) -> Iterator[bytes]:
    """The raw fields of a header section (folded lines kept with their field; the empty
    line and anything after it are yielded as one piece). Lines are CRLF-terminated
    (RFC 5322 §2.2.3); a stray bare LF ends a line but never the section, as in
    :func:`split_header`."""
    start = 0
    n = len(header)
    current = -1
    while start < n:
        end = header.find(b"\n", start)
        end = n if end < 0 else end + 1
        line = header[start:end]
        if line == b"\r\n":  # the empty line, as split_header finds it
            if current >= 0:
                yield header[current:start]
                current = -1
            yield header[start:]
            return
        if line[:1] in (b" ", b"\t") and current >= 0:
            start = end
            continue
        if current >= 0:
            yield header[current:start]
        current = start
        start = end
    if current >= 0:
        yield header[current:]


def _tags(value: bytes) -> dict[bytes, bytes]:
    """A DKIM-style tag-list (RFC 6376 §3.2: tag-spec *( ";" tag-spec ); FWS anywhere) read
    leniently, for looking at one or two tags of a field already validated elsewhere; the
    first instance of a tag wins. Linear in the value."""
    out: dict[bytes, bytes] = {}
    for spec in unfold(value).split(b";"):
        name, eq, tag_value = spec.partition(b"=")
        if eq:
            out.setdefault(name.strip(b" \t").lower(), b"".join(tag_value.split()))
    return out


def split_header(data: bytes) -> int | None:
    """Offset just past the header section's empty line in ``data``, or None (RFC 5322 §2.1;
    CRLF line ends, as :func:`mailmoat.auth.dkim.split_message` splits)."""
    if data.startswith(b"\r\n"):
        return 2
    end = data.find(b"\r\n\r\n")
    return None if end < 0 else end + 4


class HeaderEditor:
    """Apply :class:`HeaderEdits` to a message as it streams: ``feed`` chunks of the spooled
    bytes, write what each call returns, then what :meth:`close` returns. The header section
    is held until its end (at most ``limits.MESSAGE_HEADER_MAX``); the body passes through."""

    def __init__(self, edits: HeaderEdits) -> None:
        self._edits = edits
        self._buffer = bytearray()
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return chunk
        scan = max(0, len(self._buffer) - 3)
        self._buffer += chunk
        end = split_header(bytes(self._buffer[:2])) if len(self._buffer) >= 2 else None
        if end != 2:
            found = self._buffer.find(b"\r\n\r\n", scan)
            end = None if found < 0 else found + 4
        if end is None:
            if len(self._buffer) > limits.MESSAGE_HEADER_MAX:
                raise LimitExceeded("header section too large to edit",
                                    limit="MESSAGE_HEADER_MAX")
            return b""
        self._done = True
        data = bytes(self._buffer)
        self._buffer = bytearray()
        return self._edits.apply(data[:end]) + data[end:]

    def close(self) -> bytes:
        """The rest: a message without an empty line is all header."""
        if self._done:
            return b""
        self._done = True
        data = bytes(self._buffer)
        self._buffer = bytearray()
        return self._edits.apply(data)


def apply_edits(edits: HeaderEdits, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The edited message, chunk by chunk (see :class:`HeaderEditor`)."""
    editor = HeaderEditor(edits)
    for chunk in chunks:
        out = editor.feed(chunk)
        if out:
            yield out
    tail = editor.close()
    if tail:
        yield tail


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundVerdict:
    """Everything the pipeline decided about one message."""

    action: Action
    #: for ``reject``: the reply to give at the end of DATA (nothing is stored)
    reply: Reply | None
    authentication: Authentication
    #: what the sender's DMARC policy asked for (after pct / t=y)
    dmarc_disposition: Disposition
    overrides: tuple[OverrideReason, ...] = ()
    reasons: tuple[str, ...] = ()
    edits: HeaderEdits = HeaderEdits()
    #: for ``quarantine``: the Maildir folder (None: header and flag only)
    quarantine_folder: str | None = None
    #: why an ARC Set was not added although sealing is configured ("" when sealed or off)
    seal_problem: str = ""
    size: int = 0
    #: TLS at receipt (None: cleartext) and the spool ID, for the log line
    tls_version: str | None = None
    queue_id: str | None = None

    @property
    def quarantined(self) -> bool:
        """The downstream flag: deliver to the quarantine."""
        return self.action is Action.QUARANTINE

    def record(self, *, spool_id: str, envelope: Envelope, size: int | None = None) -> Verdict:
        """The store row (``GatewayContext.accept`` stores it with the delivery rows,
        :meth:`mailmoat.store.Store.intake`; or :meth:`~mailmoat.store.Store.record_verdict`)."""
        return verdict_from_authentication(
            self.authentication, spool_id=spool_id, envelope=envelope,
            disposition=self.action.disposition, overrides=self.overrides,
            size=self.size if size is None else size)

    def log_line(self) -> str:
        """One ``key=value`` line: the decision and its reasons."""
        auth = self.authentication
        dkim = ",".join(f"{d.result.value}:{d.domain or '-'}" for d in auth.dkim)
        parts = [
            "event=verdict", f"id={self.queue_id or '-'}", f"action={self.action.value}",
            f"ip={auth.ip}",
            f"mail_from={auth.mail_from!r}", f"from_domain={auth.dmarc.from_domain or '-'}",
            f"spf={auth.spf.result.value}", f"dkim={dkim}", f"arc={auth.arc.result.value}",
            f"dmarc={auth.dmarc.result.value}",
            f"policy={auth.dmarc.policy.value if auth.dmarc.policy else '-'}",
            f"dmarc_disposition={self.dmarc_disposition.value}",
            f"tls={self.tls_version or 'none'}",
        ]
        if self.overrides:
            parts.append("override=" + ",".join(o.type for o in self.overrides))
        if auth.forged_authentication_results:
            parts.append(f"forged_ar={auth.forged_authentication_results}")
        if self.seal_problem:
            parts.append(f"seal={self.seal_problem!r}")
        parts.append(f"reasons={'; '.join(self.reasons)!r}")
        return " ".join(parts)


# --- policy (pure) ---------------------------------------------------------------------------


def _norm(domain: str | None) -> str:
    return (domain or "").strip().rstrip(".").lower()


def _under(domain: str | None, listed: Iterable[str]) -> str | None:
    """The entry of ``listed`` that ``domain`` is or is below, if any."""
    name = _norm(domain)
    if not name:
        return None
    for entry in listed:
        e = _norm(entry)
        if e and (name == e or name.endswith("." + e)):
            return e
    return None


def _in(ip: str, networks: tuple[Network, ...]) -> Network | None:
    if not networks:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for net in networks:
        if addr.version == net.version and addr in net:
            return net
    return None


def _reply_text(text: str) -> str:
    """RFC 5321 §4.2 textstring (%d09 / %d32-126): anything else becomes "?"."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:400]


def _mail_from_domain(mail_from: str) -> str | None:
    path = mail_from.strip().removeprefix("<").removesuffix(">")
    local, at, domain = path.rpartition("@")
    return domain if at and local and domain else None


def _aar_shows_pass(results: tuple[AuthResResult, ...], from_domain: str) -> str | None:
    """What in a trusted sealer's AAR results shows the author authenticated, or None."""
    author = _norm(from_domain)
    for r in results:
        if r.method == "dmarc" and r.result == "pass":
            from_prop = _norm(r.prop("header.from"))
            if not from_prop or from_prop == author:
                return "dmarc=pass"
    for r in results:
        if r.result != "pass":
            continue
        if r.method == "dkim":
            d = _norm(r.prop("header.d"))
            if d and (author == d or author.endswith("." + d)):
                return f"dkim=pass header.d={d}"
        if r.method == "spf":
            mf = r.prop("smtp.mailfrom") or ""
            d = _norm(mf.rpartition("@")[2])
            if d and (author == d or author.endswith("." + d)):
                return f"spf=pass smtp.mailfrom={d}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :func:`decide`."""

    action: Action
    reply: Reply | None
    overrides: tuple[OverrideReason, ...]
    reasons: tuple[str, ...]
    #: RFC 8601 ``policy.override`` value for our dmarc result (e.g. ``arc``), if any
    override_tag: str | None = None


def decide(
    auth: Authentication,
    policy: InboundPolicy,
    *,
    sealer_results: tuple[AuthResResult, ...] | None = None,
) -> Decision:
    """The local-policy outcome for ``auth`` (see the module docstring for the order).

    ``sealer_results``: the results recorded in the newest ARC Set's AAR, when that set was
    sealed by a trusted sealer and the chain validated (None otherwise).
    """
    ip = auth.ip
    dmarc = auth.dmarc
    from_domain = _norm(dmarc.from_domain)
    mf_domain = _mail_from_domain(auth.mail_from)
    reasons: list[str] = []

    denied_net = _in(ip, policy.deny_networks)
    if denied_net is not None:
        reasons.append(f"client {ip} in deny list {denied_net}")
        return Decision(action=Action.REJECT, reply=Reply(
            code=_REJECT_CODE, status=_REJECT_STATUS,
            text="Client host rejected by local policy"), overrides=(), reasons=tuple(reasons))
    for what, domain in (("From", from_domain), ("MAIL FROM", mf_domain)):
        entry = _under(domain, policy.deny_domains)
        if entry is not None:
            reasons.append(f"{what} domain {_norm(domain)} in deny list ({entry})")
            return Decision(action=Action.REJECT, reply=Reply(
                code=_REJECT_CODE, status=_REJECT_STATUS,
                text="Sender rejected by local policy"), overrides=(), reasons=tuple(reasons))

    disposition = dmarc.disposition
    reasons.append(f"dmarc={dmarc.result.value}")
    if dmarc.policy is not None:
        reasons.append(f"{dmarc.policy_tag}={dmarc.policy.value} for {dmarc.policy_domain}")
    reasons.extend(dmarc.reasons[:3])
    if dmarc.sampled_out:
        reasons.append("pct sampling lowered the policy")
    if dmarc.testing:
        reasons.append("t=y testing lowered the policy")
    if dmarc.result is not DMARCVerdict.FAIL or disposition is Disposition.NONE:
        return Decision(action=Action.DELIVER, reply=None, overrides=(), reasons=tuple(reasons))

    net = _in(ip, policy.allow_networks)
    if net is not None:
        reasons.append(f"DMARC {disposition.value} overridden: client in allow list {net}")
        return Decision(action=Action.DELIVER, reply=None, reasons=tuple(reasons),
                        overrides=(OverrideReason(type="local_policy",
                                                  comment=f"allow-listed network {net}"),),
                        override_tag="local_policy")
    net = _in(ip, policy.trusted_forwarders)
    if net is not None:
        reasons.append(f"DMARC {disposition.value} overridden: trusted forwarder {net}")
        return Decision(action=Action.DELIVER, reply=None, reasons=tuple(reasons),
                        overrides=(OverrideReason(type="trusted_forwarder",
                                                  comment=f"trusted forwarder {net}"),),
                        override_tag="trusted_forwarder")
    arc = auth.arc
    if arc.passed and arc.sets and sealer_results is not None:
        sealer = _norm(arc.sets[0].as_domain)
        shown = _aar_shows_pass(sealer_results, from_domain)
        if shown is not None:
            reasons.append(f"DMARC {disposition.value} overridden: ARC chain sealed by trusted "
                           f"{sealer} recorded {shown} (RFC 8617 §7.2)")
            return Decision(action=Action.DELIVER, reply=None, reasons=tuple(reasons),
                            overrides=(OverrideReason(type="local_policy",
                                                      comment=f"arc=pass as.d={sealer} {shown}"),),
                            override_tag="arc")
        reasons.append(f"trusted ARC sealer {sealer} recorded no pass for {from_domain}")
    authenticated: list[str] = []
    if auth.spf.result is SPFVerdict.PASS and auth.spf.domain:
        authenticated.append(auth.spf.domain)
    authenticated.extend(d.domain for d in auth.dkim if d.passed and d.domain)
    for domain in authenticated:
        entry = _under(domain, policy.allow_domains)
        if entry is not None:
            reasons.append(f"DMARC {disposition.value} overridden: {_norm(domain)} "
                           f"authenticated and allow-listed ({entry})")
            return Decision(action=Action.DELIVER, reply=None, reasons=tuple(reasons),
                            overrides=(OverrideReason(type="local_policy",
                                                      comment=f"allow-listed {entry}"),),
                            override_tag="local_policy")

    if disposition is Disposition.REJECT:
        why = "SPF and DKIM did not align" if not (dmarc.spf_aligned or dmarc.dkim_aligned) \
            else "DMARC failed"
        text = _reply_text(f"Rejected by the DMARC policy of "
                           f"{dmarc.policy_domain or from_domain}: {why} with {from_domain}")
        reasons.append("rejected per DMARC")
        return Decision(action=Action.REJECT,
                        reply=Reply(code=_REJECT_CODE, status=_REJECT_STATUS, text=text),
                        overrides=(), reasons=tuple(reasons))
    reasons.append("quarantined per DMARC")
    return Decision(action=Action.QUARANTINE, reply=None, overrides=(), reasons=tuple(reasons))


# --- the pipeline ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _check_ip(ip: str) -> None:
    """ValueError unless ``ip`` is an IP address (remembered: a client sends many messages;
    only valid addresses are cached, a ValueError is not)."""
    ipaddress.ip_address(ip)


class InboundPipeline:
    """Shared by the sessions of an ``mx`` listener: the policy, resolver and clock."""

    def __init__(self, policy: InboundPolicy, *, resolver: Resolver, clock: Clock) -> None:
        self.policy = policy
        self.resolver = resolver
        self.clock = clock

    def start_spf(self, *, ip: str, helo: str | None, mail_from: str) -> asyncio.Task[SPFResult]:
        """Start the SPF check of the MAIL FROM identity now (call at MAIL FROM; pass the task
        to :meth:`start`). Must run inside the event loop; cancel it on RSET."""
        return asyncio.ensure_future(self._spf(ip, helo, mail_from))

    async def _spf(self, ip: str, helo: str | None, mail_from: str) -> SPFResult:
        return await check_mailfrom(self.resolver, ip, mail_from, helo,
                                    options=self.policy.verify.spf, clock=self.clock)

    def start(
        self,
        *,
        ip: str,
        helo: str | None,
        mail_from: str,
        tls: TLSInfo | None = None,
        spf: SPFResult | Awaitable[SPFResult] | None = None,
        queue_id: str | None = None,
    ) -> InboundMessage:
        """A new message at DATA start. ``mail_from`` is the reverse-path (``""`` for
        ``<>``); ``spf`` the MAIL FROM-time result or task (None: started now); ``queue_id``
        the spool ID, for the log line."""
        _check_ip(ip)  # a caller bug otherwise
        if spf is None:
            spf = self.start_spf(ip=ip, helo=helo, mail_from=mail_from)
        return InboundMessage(self, ip=ip, helo=helo, mail_from=mail_from, tls=tls, spf=spf,
                              queue_id=queue_id)


class InboundMessage:
    """One message being received: :meth:`feed` its chunks, then :meth:`finish` (or
    :meth:`abort`). Not reusable."""

    def __init__(
        self,
        pipeline: InboundPipeline,
        *,
        ip: str,
        helo: str | None,
        mail_from: str,
        tls: TLSInfo | None,
        spf: SPFResult | Awaitable[SPFResult],
        queue_id: str | None = None,
    ) -> None:
        self._p = pipeline
        self.queue_id = queue_id
        self.ip = ip
        self.helo = helo
        self.mail_from = mail_from
        self.tls = tls
        self._spf = spf
        self._header = bytearray()
        self._header_bytes: bytes | None = None
        self._too_large = False
        self._refusal = ""
        self._dkim: DKIMVerifier | None = None
        self._arc: ARCValidator | None = None
        self._prefetch: asyncio.Task[None] | None = None
        self._headers: Headers | None = None
        self._author: AuthorDomain | None = None
        self._body: list[bytes] | None = [] if pipeline.policy.arc_seal is not None else None
        self._body_size = 0
        self.size = 0

    # -- streaming ------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """The next piece of the message (CRLF line ends, dot-unstuffed: the engine's
        MessageChunk data)."""
        self.size += len(chunk)
        if self._too_large:
            return
        if self._header_bytes is not None:
            self._body_chunk(chunk)
            return
        scan = max(0, len(self._header) - 3)
        self._header += chunk
        if len(self._header) >= 2 and self._header.startswith(b"\r\n"):
            end: int | None = 2
        else:
            found = self._header.find(b"\r\n\r\n", scan)
            end = None if found < 0 else found + 4
        if end is None:
            if len(self._header) > limits.MESSAGE_HEADER_MAX:
                self._too_large = True
                self._header = bytearray()
            return
        if end > limits.MESSAGE_HEADER_MAX:
            self._too_large = True
            self._header = bytearray()
            return
        data = bytes(self._header)
        self._header = bytearray()
        self._start_verifiers(data[:end])
        if end < len(data) and not self._too_large:
            self._body_chunk(data[end:])

    def _start_verifiers(self, header: bytes) -> None:
        opts = self._p.policy.verify
        try:
            headers = self._headers = parse_headers(header)
            # the header section is split once: DKIM and ARC take the fields of this parse
            # when it proves them equal to their own split (else they split the bytes)
            fields = fields_from_headers(headers, header)
            self._dkim = DKIMVerifier(header, clock=self._p.clock, policy=opts.dkim,
                                      fields=fields)
            self._arc = ARCValidator(header, clock=self._p.clock, policy=opts.arc,
                                     fields=fields)
        except LimitExceeded as exc:  # e.g. more than limits.MESSAGE_MAX_HEADER_FIELDS
            self._too_large = True
            self._refusal = str(exc)
            self._dkim = None
            self._arc = None
            return
        self._header_bytes = header
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: finish() fetches
            return
        self._prefetch = loop.create_task(self._warm(self._dkim))

    def _author_domain(self) -> AuthorDomain:
        """The From field's Author Domain(s) (RFC 7489 §6.6.1), read once per message: for
        the warm-up and again for DMARC."""
        author = self._author
        if author is None:
            assert self._headers is not None
            author = self._author = author_domain(self._headers)
        return author

    async def _warm(self, verifier: DKIMVerifier) -> None:
        """While the body arrives: the DKIM keys, and the Author Domain's DMARC record (a
        cache warm-up for a caching resolver; the answer is read again by DMARC at the end),
        concurrently."""
        resolver = self._p.resolver
        author = self._author_domain().domain
        if author is None:
            await verifier.prefetch_keys(resolver)
            return
        dmarc = asyncio.get_running_loop().create_task(self._warm_dmarc(author))
        try:
            await verifier.prefetch_keys(resolver)
            await dmarc
        except BaseException:  # an error, or abort(): the warm-up is of no use any more
            dmarc.cancel()
            raise

    async def _warm_dmarc(self, domain: str) -> None:
        with contextlib.suppress(Exception):  # any outcome is DMARC's to judge, later
            await self._p.resolver.resolve(f"_dmarc.{domain}", RRType.TXT)

    def _body_chunk(self, chunk: bytes) -> None:
        assert self._dkim is not None
        assert self._arc is not None
        self._dkim.update(chunk)
        self._arc.update(chunk)
        if self._body is not None:
            self._body_size += len(chunk)
            if self._body_size > self._p.policy.arc_seal_body_max:
                self._body = None
            else:
                self._body.append(chunk)

    def abort(self) -> None:
        """The transaction ended without a message (RSET, error): stop the lookups. A lookup
        that already ended in an error has that error retrieved (nobody will await it: no
        "exception was never retrieved" warning)."""
        for task in (self._prefetch, self._spf):
            if isinstance(task, asyncio.Future):
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()
        self._prefetch = None
        self._body = None

    # -- end of data ----------------------------------------------------------------------

    async def _spf_result(self) -> SPFResult:
        spf = self._spf
        if isinstance(spf, SPFResult):
            return spf
        result = await spf
        self._spf = result
        return result

    async def finish(self) -> InboundVerdict:
        """End of data: finish SPF, DKIM, ARC, DMARC; decide; build the header edits."""
        p = self._p
        policy = p.policy
        if self._header_bytes is None and not self._too_large:
            self._start_verifiers(bytes(self._header))
            self._header = bytearray()
        if self._too_large:
            return await self._refused_large(self._refusal)
        assert self._dkim is not None
        assert self._arc is not None
        assert self._header_bytes is not None
        header = self._header_bytes
        if self._prefetch is not None:
            with contextlib.suppress(Exception):
                await self._prefetch
        spf = await self._spf_result()
        headers = self._headers
        assert headers is not None
        dkim_results = tuple(await self._dkim.finish(p.resolver))
        arc = await self._arc.finish(p.resolver)
        dmarc = await check_author(p.resolver, self._author_domain(), spf, dkim_results,
                                   mode=policy.verify.dmarc_mode, random=policy.verify.random)
        auth_id = policy.authserv_id
        # (claims_authserv_id is False for a field of another name: skip those cheaply)
        forged = sum(1 for f in headers.fields
                     if f.name.lower() == _AR_LNAME and claims_authserv_id(f, auth_id))
        results = _build_results(spf=spf, dkim=dkim_results, arc=arc, dmarc=dmarc,
                                 mail_from=self.mail_from, ip=self.ip)
        # (decide reads neither results nor the field: the field is written first, and again
        # in the rare case of an override, so the common case builds one Authentication)
        ar_field = format_authentication_results(auth_id, results)
        auth = Authentication(
            authserv_id=auth_id, ip=self.ip, helo=self.helo, mail_from=self.mail_from,
            spf=spf, dkim=dkim_results, arc=arc, dmarc=dmarc, results=results,
            authentication_results=ar_field, forged_authentication_results=forged)
        decision = decide(auth, policy, sealer_results=self._sealer_results(header, arc))
        if decision.override_tag is not None:
            results = _with_override(results, decision.override_tag, decision.action)
            ar_field = format_authentication_results(auth_id, results)
            auth = replace(auth, results=results, authentication_results=ar_field)

        prepend = ar_field.encode("utf-8") + b"\r\n"
        folder = None
        if decision.action is Action.QUARANTINE:
            asked = dmarc.policy.value if dmarc.policy else "-"
            why = f"dmarc p={asked} {_norm(dmarc.from_domain)}"
            prepend = f"{QUARANTINE_FIELD}: yes ({why})\r\n".encode("ascii", "replace") + prepend
            folder = policy.quarantine_folder
        edits = HeaderEdits(prepend=prepend, remove_authserv_id=auth_id,
                            remove_names=_REMOVE_NAMES)
        seal_problem = ""
        if decision.action is not Action.REJECT and policy.arc_seal is not None:
            edits, seal_problem = self._seal(edits, header, arc, results)
        self._body = None
        verdict = InboundVerdict(
            action=decision.action, reply=decision.reply, authentication=auth,
            dmarc_disposition=dmarc.disposition, overrides=decision.overrides,
            reasons=decision.reasons, edits=edits, quarantine_folder=folder,
            seal_problem=seal_problem, size=self.size, queue_id=self.queue_id,
            tls_version=self.tls.version if self.tls else None)
        if log.isEnabledFor(logging.INFO):
            log.info(verdict.log_line())
        return verdict

    async def _refused_large(self, why: str = "") -> InboundVerdict:
        # The verifiers never saw a header section: report what we can (SPF) and refuse.
        spf = await self._spf_result()
        auth = Authentication(
            authserv_id=self._p.policy.authserv_id, ip=self.ip, helo=self.helo,
            mail_from=self.mail_from, spf=spf,
            dkim=(DKIMResult(result=DKIMResultCode.NONE, reason="header section too large"),),
            arc=ARCValidation(result=ARCStatus.NONE, reason="header section too large"),
            dmarc=DMARCResult(result=DMARCVerdict.NONE, from_domain=None,
                              reasons=("header section too large",)))
        verdict = InboundVerdict(
            action=Action.REJECT, reply=HEADER_TOO_LARGE, authentication=auth,
            dmarc_disposition=Disposition.NONE, size=self.size,
            tls_version=self.tls.version if self.tls else None, queue_id=self.queue_id,
            reasons=(why or f"header section over {limits.MESSAGE_HEADER_MAX} octets",))
        if log.isEnabledFor(logging.INFO):
            log.info(verdict.log_line())
        return verdict

    def _sealer_results(self, header: bytes, arc: ARCValidation
                        ) -> tuple[AuthResResult, ...] | None:
        """The newest AAR's results, if the chain passed and its newest seal is trusted."""
        policy = self._p.policy
        if not arc.passed or not arc.sets or not policy.trusted_arc_sealers:
            return None
        newest = arc.sets[0]
        if newest.instance != arc.instance_count or newest.as_valid is not True:
            return None
        sealer = _norm(newest.as_domain)
        if sealer not in {_norm(d) for d in policy.trusted_arc_sealers}:
            return None
        results: tuple[AuthResResult, ...] | None = None
        signs_from = False
        for raw in _fields(header):
            colon = raw.find(b":")
            if colon <= 0:
                continue
            name = raw[:colon].strip().lower()
            value = raw[colon + 1 :]
            if name == _AMS_LNAME:
                tags = _tags(value)
                if tags.get(b"i") == str(newest.instance).encode("ascii"):
                    # RFC 6376 §5.4 "The From header field MUST be signed": an AMS that does
                    # not sign From would let a later hop change the author the AAR vouches
                    # for, so such a set never overrides.
                    signed = {h.strip().lower() for h in tags.get(b"h", b"").split(b":")}
                    signs_from = b"from" in signed
                continue
            if name != _AAR_LNAME:
                continue
            m = _AAR_INSTANCE.match(value)
            if m is None or int(m.group(1)) != newest.instance:
                continue
            try:
                results = parse_authres(value[m.end() :]).results
            except ParseError:
                return None
        return results if signs_from else None

    def _seal(self, edits: HeaderEdits, header: bytes, arc: ARCValidation,
              results: tuple[AuthResResult, ...]) -> tuple[HeaderEdits, str]:
        key = self._p.policy.arc_seal
        assert key is not None
        if self._body is None:
            return edits, (f"body over {self._p.policy.arc_seal_body_max} octets: "
                           "not sealed")
        final_header = edits.apply(header)
        message = final_header + b"".join(self._body)
        try:
            arc_set = seal(message, arc, authserv_id=self._p.policy.authserv_id,
                           results=results, domain=key.domain, selector=key.selector,
                           private_key=key.key, timestamp=int(self._p.clock.now()))
        except ARCSigningError as exc:
            return edits, f"not sealed: {exc}"
        if arc_set is None:
            return edits, "not sealed: the chain already failed or is full (RFC 8617 §5.1)"
        return replace(edits, prepend=arc_set.fields + edits.prepend), ""


def _with_override(results: tuple[AuthResResult, ...], tag: str,
                   action: Action) -> tuple[AuthResResult, ...]:
    """Our dmarc resinfo with ``policy.override=<tag>`` and the applied disposition."""
    out = []
    for r in results:
        if r.method != "dmarc":
            out.append(r)
            continue
        comment = r.comment or ""
        comment = re.sub(r"dis=\w+", f"dis={action.disposition}", comment) if comment \
            else f"dis={action.disposition}"
        out.append(replace(r, comment=comment, properties=(
            *r.properties, AuthResProperty(ptype="policy", name="override", value=tag))))
    return tuple(out)


async def verdict_for(pipeline: InboundPipeline, message: bytes, *, ip: str,
                      helo: str | None, mail_from: str,
                      chunk_size: int = 65536) -> InboundVerdict:
    """Run ``message`` through ``pipeline`` in chunks of ``chunk_size`` octets."""
    msg = pipeline.start(ip=ip, helo=helo, mail_from=mail_from)
    for i in range(0, len(message), chunk_size):
        msg.feed(message[i : i + chunk_size])
    return await msg.finish()

