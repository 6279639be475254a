"""Delivery to a recipient domain's mail exchangers (layer L4): MX lookup, the TLS policy of
each MX (DANE, MTA-STS, REQUIRETLS, opportunistic STARTTLS) and the SMTP hand-off.

Public API::

    outbound = Outbound(resolver, mtasts=MTASTSClient(...), helo="mx.example.org")
    await outbound.check_dnssec()          # start-up: is the resolver validating? (DANE)
    result = await outbound.deliver(message, domain="example.net", mail_from="a@example.org",
                                    rcpt_to=["b@example.net"], requiretls=False)
    result.status            # "delivered" | "deferred" | "bounced"
    result.attempts          # one Attempt per MX/address tried (or skipped), for TLS-RPT

:meth:`Outbound.deliver` never raises for a delivery failure; it returns a
:class:`DomainDelivery` whose ``status`` tells the queue what to do, ``reply`` the reply to
put in a DSN, and ``attempts`` what each try negotiated: MX, address, TLS version and cipher,
whether the certificate was verified, the policy applied (:class:`~mailmoat.auth.tlspolicy.
PolicyKind`) and the RFC 8460 result type of a failure.

The order of work (RFC 5321 §5.1 and the policies of :mod:`mailmoat.auth.tlspolicy`):

1. MX lookup. Preference order, equal preferences shuffled (``rng``); no MX: the implicit MX
   (the domain itself); a null MX (RFC 7505) bounces with ``556 5.1.10``; a domain that does
   not exist bounces (``550 5.1.2``); a DNS failure defers (``451 4.4.3``) - a temperror never
   bounces. An address literal (``user@[192.0.2.1]``, ``user@[IPv6:2001:db8::1]``, RFC 5321
   §4.1.3) is that address: no MX, no MTA-STS (a policy needs a domain), no DANE
   (RFC 7672 §2.2 looks TLSA up by MX name), opportunistic STARTTLS; a malformed literal
   bounces (``550 5.1.3``).
2. MTA-STS policy for the domain (:class:`~mailmoat.net.mtasts.MTASTSClient`), if configured.
3. For each MX: A then AAAA addresses (an MX that is a CNAME is followed by the resolver), the
   TLSA RRset ``_25._tcp.<mx>`` when DANE is enabled and the host's addresses are
   DNSSEC-secure, the plan (:func:`~mailmoat.auth.tlspolicy.plan_host`), then each address
   in turn: connect, STARTTLS, and - before MAIL - the check of the session against the plan
   (:func:`~mailmoat.auth.tlspolicy.check_session`: DANE match, certificate, REQUIRETLS).
   A server that cannot be reached or fails the policy moves on to the next address/MX; a
   reply about the message itself (MAIL/RCPT/DATA) is final.

Opportunistic TLS: a failed STARTTLS handshake is retried once on the same address in
cleartext (``cleartext_retry=True``, the default; KumoMTA's
``opportunistic_tls_reconnect_on_failed_handshake``; Postfix ``may`` defers instead); never
under DANE, MTA-STS enforce or REQUIRETLS.

DANE needs a validating resolver whose AD bit we trust (``DNSResolver(trust_ad=True)`` in
front of unbound). :meth:`Outbound.check_dnssec` asks for a name known to be signed; when the
answer is not authenticated, DANE is switched off with a warning in the log - the queue keeps
moving with MTA-STS/opportunistic TLS instead of stalling on "insecure" TLSA answers.

``route`` maps (MX host, address, port) to where to connect - production: the address and
port 25; tests: loopback receivers on ports of their own (the TLSA name keeps port 25).

SECURITY: DNS answers, policy files, certificates and replies are untrusted; they are judged
by the L2 policy code (bounded parsers) and the SMTP client engine. The number of addresses
tried per delivery is bounded (``limits.SMTP_CLIENT_MX_TRIES``). The message is never sent
before the session passed :func:`~mailmoat.auth.tlspolicy.check_session`: the check runs
after STARTTLS and the second EHLO and before ``MAIL FROM``.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from mailmoat import limits
from mailmoat.auth.dane import DANEResult, LookupStatus, lookup_tlsa, match_chain
from mailmoat.auth.mtasts import Mode, Policy
from mailmoat.auth.tlspolicy import (
    HostPlan,
    PolicyKind,
    ResultType,
    Verdict,
    Verification,
    check_session,
    classify_certificate_error,
    is_null_mx,
    order_mx,
    plan_host,
)
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import DNSError, DNSTemporaryError, LocalProtocolError
from mailmoat.net.mtasts import PolicyOutcome
from mailmoat.net.smtp_client import (
    BeforeMail,
    SendError,
    SendResult,
    SessionInfo,
    StartTLSPolicy,
    Timeouts,
    check_envelope,
    send_message,
)
from mailmoat.resolver import MX, TLSA, NoData, NXDomain, Resolver, RRType, is_ip_address
from mailmoat.smtp.replies import Reply
from mailmoat.store import TLSPolicyType, TLSRecord, TLSSession

__all__ = [
    "Attempt",
    "DomainDelivery",
    "Gate",
    "HopRequest",
    "Outbound",
    "PolicyRefused",
    "PolicySource",
    "SMTPTransport",
    "Transport",
]

log = logging.getLogger(__name__)

Status = Literal["delivered", "deferred", "bounced"]
AttemptOutcome = Literal["delivered", "failed", "skipped", "refused"]
Route = Callable[[str, str, int], tuple[str, int]]

#: A signed name asked at start-up to see whether the resolver validates (DNSSEC AD bit).
DNSSEC_PROBE_NAME = "ietf.org"
#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its code, status and CRLF;
#: the text of the DSN reply we build stays within it.
_REPLY_TEXT_MAX = 480
#: Stages at which another address/MX may do better (RFC 5321 §5.1); after them the server
#: answered about the message itself and its answer stands.
_NEXT_HOST_STAGES = frozenset({"connect", "tls", "greeting", "ehlo", "starttls", "protocol",
                               "dns"})


# --- values -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One MX address tried (or an MX skipped before connecting), for logs and TLS-RPT."""

    mx: str
    address: str | None
    port: int | None
    policy: PolicyKind
    verification: Verification
    outcome: AttemptOutcome
    tls_version: str | None = None
    cipher: str | None = None
    verified: bool | None = None  # PKIX-verified, or (DANE) matched a TLSA record
    requiretls: bool = False  # the message asked for REQUIRETLS (RFC 8689)
    failure: ResultType | None = None  # RFC 8460 §4.3 (also set when delivered in testing)
    temporary: bool = True
    reason: str = ""
    reply: Reply | None = None
    # RFC 8460 §4.4: the policy as an SMTP TLS report names it.
    policy_type: TLSPolicyType = "no-policy-found"
    policy_string: tuple[str, ...] = ()  # the MTA-STS policy lines / the TLSA records
    mx_patterns: tuple[str, ...] = ()  # the MTA-STS policy's mx patterns
    gate_passed: bool = False  # the session passed the policy check before MAIL FROM

    def tls_outcome(self) -> tuple[ResultType | None, bool | None]:
        """The RFC 8460 view of this attempt: (result type, success). A failure (also one
        reported while delivering: MTA-STS testing, unusable TLSA) is unsuccessful; a
        session that passed the policy check with TLS is successful, one that passed in
        cleartext because the server offered no STARTTLS is ``starttls-not-supported``;
        anything else (connection trouble, TLS not attempted) has no TLS outcome (None).
        mailmoat's own ``requiretls-*`` types are not RFC 8460 result types and never
        appear here."""
        if self.failure is ResultType.REQUIRETLS_NOT_SUPPORTED:
            # RFC 8689, not a TLS failure: the check reached it only after TLS (and the
            # certificate, where required) passed. Reported to the sender (DSN), not here.
            return None, True if self.tls_version is not None else None
        if self.failure is ResultType.REQUIRETLS_MX_UNAUTHENTICATED:
            return None, None  # not connected: nothing negotiated
        if self.failure is not None:
            return self.failure, False
        if not self.gate_passed:
            return None, None
        if self.tls_version is not None:
            return None, True
        if self.policy is PolicyKind.NONE:  # TLS not attempted: configuration, cleartext retry
            return None, None
        return ResultType.STARTTLS_NOT_SUPPORTED, False

    def tls_session(self, *, id: str, domain: str) -> TLSSession:
        """This attempt as one session of an SMTP TLS report (``domain``: the recipient
        domain, the report's policy domain)."""
        result, success = self.tls_outcome()
        return TLSSession(
            id=id, policy_type=self.policy_type, policy_domain=domain,
            policy_string=self.policy_string, mx_patterns=self.mx_patterns, mx_host=self.mx,
            receiving_ip=self.address, result_type=result.value if result else None,
            success=success, reason=self.reason if success is False else None)

    def tls_record(self) -> TLSRecord:
        result, success = self.tls_outcome()
        return TLSRecord(version=self.tls_version, cipher=self.cipher, verified=self.verified,
                         policy=self.policy.value, policy_type=self.policy_type,
                         mx_host=self.mx, receiving_ip=self.address,
                         result_type=result.value if result else None, success=success)

    def as_dict(self) -> dict[str, object]:
        return {
            "mx": self.mx, "address": self.address, "port": self.port,
            "policy": self.policy.value, "verification": self.verification.value,
            "outcome": self.outcome, "tls_version": self.tls_version, "cipher": self.cipher,
            "verified": self.verified, "requiretls": self.requiretls,
            "failure": self.failure.value if self.failure else None,
            "temporary": self.temporary, "reason": self.reason,
            "reply": None if self.reply is None else
            {"code": self.reply.code, "status": self.reply.status, "text": self.reply.text},
            "policy_type": self.policy_type, "policy_string": list(self.policy_string),
            "mx_patterns": list(self.mx_patterns), "gate_passed": self.gate_passed,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainDelivery:
    """The outcome of one delivery to a domain.

    ``result`` is the server's acceptance when ``status`` is ``delivered``; otherwise
    ``error`` is a :class:`SendError` carrying ``reply`` (what a DSN says), ``temporary`` and
    the session of the last attempt - the shape :mod:`mailmoat.gateway.deliver` turns into
    per-recipient outcomes."""

    domain: str
    status: Status
    reply: Reply | None
    reason: str
    attempts: tuple[Attempt, ...] = ()
    result: SendResult | None = None
    error: SendError | None = None
    #: Names this delivery's sessions in the TLS-RPT log (each kept once however many
    #: recipient rows record them).
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    #: The domain announces MTA-STS (TXT record) but its policy could not be fetched or did
    #: not parse, and no cached policy applied: (RFC 8460 §4.3.2.2 result type, reason).
    sts_failure: tuple[ResultType, str] | None = None

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def policy(self) -> str:
        last = self.last
        return last.policy.value if last else PolicyKind.NONE.value

    @property
    def remote(self) -> str | None:
        last = self.last
        if last is None or last.address is None:
            return None
        return f"{last.mx}[{last.address}]:{last.port}"

    def tls_record(self) -> TLSRecord:
        """For the store: the last attempt's TLS, and every attempt as a TLS-RPT session
        (RFC 8460 §4.4; :meth:`mailmoat.store.Store.tls_attempts`)."""
        last = self.last
        record = last.tls_record() if last else TLSRecord(policy=PolicyKind.NONE.value)
        sessions = tuple(a.tls_session(id=f"{self.id}-{i}", domain=self.domain)
                         for i, a in enumerate(self.attempts))
        if self.sts_failure is not None:
            kind, reason = self.sts_failure
            sessions += (TLSSession(id=f"{self.id}-sts", policy_type="sts",
                                    policy_domain=self.domain, result_type=kind.value,
                                    success=False, reason=reason[:300]),)
        return replace(record, sessions=sessions)


# --- transport seam -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class HopRequest:
    """One SMTP session to one address."""

    message: bytes
    mail_from: str | None
    rcpt_to: tuple[str, ...]
    address: str
    port: int
    server_name: str  # SNI and the name a PKIX check matches (the MX host name)
    starttls: StartTLSPolicy
    verify: bool  # PKIX verification enforced in the handshake
    requiretls: bool = False  # send MAIL FROM:<...> REQUIRETLS (RFC 8689 §4.1)
    cafile: Path | str | None = None
    helo: str | None = None
    timeouts: Timeouts | None = None


#: Called once the session is up (after STARTTLS and the second EHLO) with what was
#: negotiated and the certificate chain the server sent (DER, leaf first); the message is
#: sent only if the returned verdict says ``deliver``.
Gate = Callable[[SessionInfo, tuple[bytes, ...]], Verdict]


class PolicyRefused(SendError):
    """The session was set up, but failed the TLS policy: nothing of the message was sent."""

    def __init__(self, verdict: Verdict, session: SessionInfo) -> None:
        super().__init__(verdict.reason, stage="tls", temporary=verdict.temporary,
                         session=session)
        self.verdict = verdict


class PolicySource(Protocol):
    """Where MTA-STS policies come from: :class:`~mailmoat.net.mtasts.MTASTSClient`."""

    async def policy_for(self, domain: str) -> PolicyOutcome: ...


class Transport(Protocol):
    """Sends one message over one session; raises :class:`SendError` (or
    :class:`PolicyRefused` when ``gate`` said no) when it was not sent."""

    async def send(self, request: HopRequest, gate: Gate) -> SendResult: ...


class SMTPTransport:
    """The production :class:`Transport`: :func:`mailmoat.net.smtp_client.send_message` with
    the gate as its ``before_mail`` hook (after STARTTLS and the second EHLO, before ``MAIL
    FROM``) and, for a REQUIRETLS message, ``REQUIRETLS`` on ``MAIL FROM`` (RFC 8689 §4.1: a
    message that requires TLS carries the option to the next hop; the engine refuses to send
    it unless the server advertised REQUIRETLS)."""

    async def send(self, request: HopRequest, gate: Gate) -> SendResult:
        mail_params: tuple[tuple[str, str | None], ...] = (
            (("REQUIRETLS", None),) if request.requiretls else ())
        session = SessionInfo(host=request.address, port=request.port, mode="starttls")
        try:
            helo = check_envelope(request.mail_from, request.rcpt_to, helo=request.helo,
                                  host=request.address, server_name=request.server_name,
                                  mail_params=mail_params)
        except ValueError as exc:  # an envelope no server may be sent: permanent
            raise SendError(str(exc), stage="mail", temporary=False, session=session) from None

        def before_mail(info: BeforeMail) -> None:
            nonlocal session
            session = info.session  # for an error of our engine at MAIL (below)
            verdict = gate(info.session, info.peer_chain)
            if not verdict.deliver:
                raise PolicyRefused(verdict, info.session)

        try:
            return await send_message(
                request.message, mail_from=request.mail_from, rcpt_to=list(request.rcpt_to),
                host=request.address, port=request.port, mode="starttls",
                starttls=request.starttls, helo=helo, verify=request.verify,
                cafile=request.cafile, server_name=request.server_name, chunking=True,
                timeouts=request.timeouts, mail_params=mail_params, before_mail=before_mail)
        except LocalProtocolError as exc:
            # Our engine refused a command the session does not allow (e.g. a parameter
            # whose extension was not advertised): nothing more was sent to this server.
            raise SendError(f"refused by our SMTP engine: {exc}", stage="protocol",
                            temporary=True, session=session) from None


# --- the deliverer ------------------------------------------------------------------------------
def _default_route(host: str, address: str, port: int) -> tuple[str, int]:
    del host
    return address, port


def _verify_problem(session: SessionInfo) -> str | None:
    """What a PKIX check of the certificate found, when it was not enforced (``None``: it
    would verify, or it was verified). Reads :class:`~mailmoat.net.smtp_client.TLSDetails`."""
    tls = session.tls
    if tls is None or tls.verified:
        return None
    text = tls.verify_error or "not verified"
    marker = "a check finds: "
    if marker in text:
        return text.split(marker, 1)[1]
    if "would verify" in text:
        return None
    return text


@dataclass(slots=True)
class _Run:
    """State of one :meth:`Outbound.deliver` call."""

    domain: str
    requiretls: bool
    attempts: list[Attempt] = field(default_factory=list)
    last_error: SendError | None = None
    tried: int = 0
    sts: Policy | None = None  # the MTA-STS policy in force for the domain
    sts_failure: tuple[ResultType, str] | None = None  # see DomainDelivery.sts_failure

    def report_policy(self, plan: HostPlan | None) -> Attempt:
        """An attempt template carrying the policy as TLS-RPT names it (RFC 8460 §4.4):
        ``tlsa`` when DANE governed the host, ``sts`` when an MTA-STS policy (enforce or
        testing) is in force for the domain, else ``no-policy-found``."""
        blank = Attempt(mx="", address=None, port=None, policy=PolicyKind.NONE,
                        verification=Verification.NONE, outcome="skipped")
        if plan is not None and plan.policy is PolicyKind.DANE:
            return replace(blank, policy_type="tlsa",
                           policy_string=tuple(_tlsa_text(r) for r in plan.tlsa))
        if self.sts is not None and self.sts.mode is not Mode.NONE:
            return replace(blank, policy_type="sts",
                           policy_string=tuple(self.sts.as_text().splitlines()),
                           mx_patterns=self.sts.mx)
        return blank


class Outbound:
    """Delivers messages to recipient domains (see the module docstring).

    ``resolver`` answers MX/A/AAAA/TLSA (for DANE: a validating resolver whose AD bit is
    trusted); ``mtasts`` fetches MTA-STS policies (``None``: MTA-STS off); ``dane`` False
    turns DANE off; ``port`` is the SMTP port (25), ``route`` where to connect for an
    (MX, address, port); ``rng`` shuffles equal MX preferences; ``transport`` replaces the
    SMTP client (tests); ``opportunistic`` False never tries STARTTLS without a policy;
    ``cleartext_retry`` False defers instead of retrying in cleartext after a failed
    opportunistic handshake.
    """

    def __init__(
        self,
        resolver: Resolver,
        *,
        mtasts: PolicySource | None = None,
        dane: bool = True,
        port: int = 25,
        route: Route | None = None,
        cafile: Path | str | None = None,
        helo: str | None = None,
        timeouts: Timeouts | None = None,
        rng: random.Random | None = None,
        transport: Transport | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_addresses: int = limits.SMTP_CLIENT_MX_TRIES,
        opportunistic: bool = True,
        cleartext_retry: bool = True,
    ) -> None:
        self.resolver = resolver
        self.mtasts = mtasts
        self.port = port
        self.route = route or _default_route
        self.cafile = cafile
        self.helo = helo
        self.timeouts = timeouts
        self.rng = rng or random.Random()  # load spreading, not security
        self.transport: Transport = transport or SMTPTransport()
        self.clock = clock
        self.max_addresses = max_addresses
        self.opportunistic = opportunistic
        self.cleartext_retry = cleartext_retry
        self.dane_enabled = dane
        self.dane_note = "DANE enabled" if dane else "DANE disabled by configuration"
        if dane and getattr(resolver, "trust_ad", True) is False:
            self._disable_dane("the resolver's AD bit is not trusted (set [dns] trust_ad = "
                               "true with resolvers = a local validating resolver such as "
                               "unbound)")

    def _disable_dane(self, why: str) -> None:
        self.dane_enabled = False
        self.dane_note = f"DANE disabled: {why}"
        log.warning("outbound: %s; TLSA records are not used, delivery continues with "
                    "MTA-STS and opportunistic TLS (RFC 7672 §2.1)", self.dane_note)

    async def check_dnssec(self, name: str = DNSSEC_PROBE_NAME,
                           rrtype: RRType = RRType.A) -> bool:
        """Start-up check: does the resolver return authenticated data for ``name`` (a
        DNSSEC-signed name)? If it answers without the AD bit, DANE is disabled with a warning
        (instead of every TLSA answer being "insecure" in silence). A failed lookup says
        nothing and leaves DANE as it is. Returns whether DANE is enabled."""
        if not self.dane_enabled:
            return False
        try:
            answer = await self.resolver.resolve(name, rrtype)
        except DNSError as exc:
            log.warning("outbound: DNSSEC check of %s failed (%s); DANE stays enabled and "
                        "unauthenticated TLSA answers are ignored", name, exc)
            return True
        if not answer.authenticated:
            self._disable_dane(f"the resolver returned no authenticated data (AD bit) for the "
                               f"signed name {name}: it does not validate DNSSEC")
            return False
        self.dane_note = f"DANE enabled: the resolver validates DNSSEC ({name} authenticated)"
        log.info("outbound: %s", self.dane_note)
        return True

    # -- the delivery ---------------------------------------------------------------------
    async def deliver(
        self,
        message: bytes,
        *,
        domain: str,
        mail_from: str | None,
        rcpt_to: Sequence[str],
        requiretls: bool = False,
    ) -> DomainDelivery:
        """Deliver ``message`` to ``rcpt_to`` (all at ``domain``) through its MX hosts."""
        name = domain.lower().rstrip(".")
        run = _Run(domain=name, requiretls=requiretls)
        literal = name.startswith("[")
        if literal:
            try:
                hosts: tuple[str, ...] = (_address_literal(name),)
            except ValueError as exc:
                return self._final(run, "bounced", 550, "5.1.3", f"{name}: {exc}",
                                   stage="dns")
            mx_secure = False
            implicit = True
        else:
            found = await self._mx_hosts(run, name)
            if isinstance(found, DomainDelivery):
                return found
            hosts, mx_secure, implicit = found
        policy = None if literal else await self._sts_policy(run, name)
        run.sts = policy
        saw_address = False
        for host in hosts:
            if run.tried >= self.max_addresses:
                break
            addresses, secure, dns_error, canonical = await self._addresses(host)
            if dns_error is not None:
                run.attempts.append(replace(
                    run.report_policy(None), mx=host, address=None, port=None,
                    policy=PolicyKind.NONE,
                    verification=Verification.NONE, outcome="skipped", temporary=True,
                    reason=dns_error))
                continue
            if not addresses:
                run.attempts.append(replace(
                    run.report_policy(None), mx=host, address=None, port=None,
                    policy=PolicyKind.NONE,
                    verification=Verification.NONE, outcome="skipped", temporary=not implicit,
                    reason=f"{host} has no A or AAAA record"))
                continue
            saw_address = True
            # RFC 8689 §4.1 wants an authenticated MX; for the implicit MX, its address.
            authenticated_mx = secure if implicit else mx_secure
            plan = await self._plan(host, secure, authenticated_mx, policy, requiretls,
                                    canonical)
            if plan.skip:
                run.attempts.append(replace(
                    run.report_policy(plan), mx=host, address=None, port=None, policy=plan.policy,
                    verification=plan.verification, outcome="skipped", failure=plan.failure,
                    temporary=plan.temporary, reason=plan.reason))
                log.info("outbound %s: %s skipped: %s", name, host, plan.reason)
                continue
            for address in addresses:
                if run.tried >= self.max_addresses:
                    break
                run.tried += 1
                done = await self._try_address(run, plan, address, message, mail_from,
                                               tuple(rcpt_to))
                if done is not None:
                    return done
        if implicit and not saw_address and all(not a.temporary for a in run.attempts):
            return self._final(run, "bounced", 550, "5.1.2",
                               f"{name} has no MX and no address record", stage="dns")
        return self._give_up(run)

    async def _mx_hosts(self, run: _Run, name: str
                        ) -> tuple[tuple[str, ...], bool, bool] | DomainDelivery:
        """The MX hosts of ``name`` in order, whether the MX answer was authenticated, and
        whether they are the implicit MX; or the final outcome (null MX, NXDOMAIN, DNS
        failure)."""
        try:
            answer = await self.resolver.resolve(name, RRType.MX)
        except NoData:
            # RFC 5321 §5.1: "If an empty list of MXs is returned, the address is treated as
            # if it was associated with an implicit MX RR, with a preference of 0, pointing to
            # that host." (mx_secure is decided by the address answer.)
            return (name,), False, True
        except NXDomain:
            return self._final(run, "bounced", 550, "5.1.2",
                               f"{name}: no such domain (NXDOMAIN)", stage="dns")
        except DNSTemporaryError as exc:
            # A temperror is never a bounce: the queue retries.
            return self._final(run, "deferred", 451, "4.4.3",
                               f"{name}: DNS failure looking up MX: {exc}", stage="dns")
        except DNSError as exc:
            return self._final(run, "deferred", 451, "4.4.3",
                               f"{name}: unusable MX answer: {exc}", stage="dns")
        records = [r for r in answer.records if isinstance(r, MX)]
        if is_null_mx(records):
            # RFC 7505 §4.1: do not attempt delivery; §4.2 / RFC 3463 (RFC 7505 §5):
            # "556 5.1.10 Recipient address has null MX".
            return self._final(run, "bounced", 556, "5.1.10",
                               f"{name} accepts no mail (null MX, RFC 7505)", stage="dns")
        hosts = order_mx(records, self.rng)
        if not hosts:
            return self._final(run, "deferred", 451, "4.4.3",
                               f"{name}: MX answer lists no usable host", stage="dns")
        return hosts, answer.authenticated, False

    async def _sts_policy(self, run: _Run, domain: str) -> Policy | None:
        if self.mtasts is None:
            return None
        try:
            outcome = await self.mtasts.policy_for(domain)
        except Exception as exc:  # a broken fetcher must not stop delivery: no policy
            log.warning("outbound %s: MTA-STS policy lookup failed: %s", domain, exc)
            return None
        fetch = outcome.fetch
        if outcome.policy is None and fetch is not None and fetch.error is not None:
            # RFC 8460 §4.3.2.2: the TXT record announced a policy we could not use.
            kind = (ResultType.STS_POLICY_INVALID if fetch.error_kind == "syntax"
                    else ResultType.STS_POLICY_FETCH_ERROR)
            run.sts_failure = (kind, f"{fetch.url}: {fetch.error}")
        return outcome.policy

    async def _addresses(self, host: str) -> tuple[list[str], bool, str | None, str]:
        """A then AAAA addresses of ``host`` (RFC 5321 §5.1), whether every answer was
        DNSSEC-authenticated, the DNS failure when none could be found, and the name CNAMEs
        led to (``host`` without CNAME)."""
        if is_ip_address(host):  # an address literal's address: nothing to look up
            return [host], False, None, host
        found: list[str] = []
        secure = True
        temporary: str | None = None
        canonical = host
        for rrtype in (RRType.A, RRType.AAAA):
            try:
                answer = await self.resolver.resolve(host, rrtype)
            except (NXDomain, NoData):
                continue
            except DNSError as exc:
                temporary = f"{host}: DNS failure looking up {rrtype}: {exc}"
                continue
            secure = secure and answer.authenticated
            if canonical == host:
                canonical = answer.canonical_name.lower().rstrip(".")
            found += [str(r) for r in answer.records
                      if isinstance(r, ipaddress.IPv4Address | ipaddress.IPv6Address)]
        if not found and temporary is not None:
            return [], False, temporary, host
        return list(dict.fromkeys(found)), secure and bool(found), None, canonical

    async def _plan(  # noqa: PLR0917
        self, host: str, secure: bool, mx_secure: bool, policy: Policy | None,
        requiretls: bool, canonical: str,
    ) -> HostPlan:
        """``secure``: the host's address records (and CNAMEs) are DNSSEC-secure, the
        condition for looking up its TLSA records (RFC 7672 §2.2.2)."""
        tlsa = None
        base = host
        if self.dane_enabled and secure:
            # RFC 7672 §2.2.2: for an MX host that is a (secure) CNAME, the TLSA records are
            # looked up at the expanded name first, then at the original name; the name
            # they were found at is the TLSA base domain (SNI and a reference identifier).
            if canonical != host:
                tlsa = await lookup_tlsa(self.resolver, canonical, self.port)
                base = canonical
            if tlsa is None or tlsa.status is LookupStatus.NONE:
                tlsa = await lookup_tlsa(self.resolver, host, self.port)
                base = host
        plan = plan_host(host, mx_secure=mx_secure, dane=tlsa, sts=policy,
                         requiretls=requiretls, opportunistic=self.opportunistic)
        if plan.verification is Verification.DANE and base != host:
            plan = replace(plan, tlsa_base=base)
        return plan

    def _gate(self, plan: HostPlan) -> Gate:
        def gate(session: SessionInfo, chain: tuple[bytes, ...]) -> Verdict:
            dane: DANEResult | None = None
            if plan.verification is Verification.DANE and session.tls is not None:
                now = datetime.datetime.fromtimestamp(self.clock.now(), datetime.UTC)
                dane = match_chain(plan.tlsa, chain, hostname=plan.mx,
                                   base_domain=plan.tlsa_base, now=now)
            tls = session.tls
            return check_session(
                plan, tls=tls is not None, verified=bool(tls and tls.verified),
                verify_problem=_verify_problem(session), dane=dane,
                capabilities=session.capabilities)
        return gate

    async def _try_address(  # noqa: PLR0917
        self, run: _Run, plan: HostPlan, address: str, message: bytes,
        mail_from: str | None, rcpt_to: tuple[str, ...],
    ) -> DomainDelivery | None:
        """One address (and, for opportunistic TLS, its cleartext retry). Returns the final
        outcome, or ``None`` to go on with the next address/MX."""
        connect_address, connect_port = self.route(plan.mx, address, self.port)
        starttls: StartTLSPolicy = (
            "require" if plan.tls_required
            else "none" if plan.policy is PolicyKind.NONE else "opportunistic")
        request = HopRequest(
            message=message, mail_from=mail_from, rcpt_to=rcpt_to, address=connect_address,
            port=connect_port, server_name=plan.tlsa_base or plan.mx, starttls=starttls,
            verify=plan.verification is Verification.WEBPKI, requiretls=plan.requiretls,
            cafile=self.cafile, helo=self.helo, timeouts=self.timeouts)
        outcome = await self._hop(run, plan, request, address)
        if outcome is not None or not (plan.plaintext_fallback and self.cleartext_retry):
            return outcome
        last = run.attempts[-1]
        if (starttls == "opportunistic" and last.outcome == "failed"
                and last.tls_version is None and last.reason.startswith("tls:")):
            # RFC 7435: the handshake failed; the same host once more, in cleartext.
            cleartext = replace(plan, policy=PolicyKind.NONE, judge_webpki=False,
                                reason=f"cleartext after a failed TLS handshake with {plan.mx}")
            return await self._hop(run, cleartext, replace(request, starttls="none"), address)
        return None

    async def _hop(self, run: _Run, plan: HostPlan, request: HopRequest,
                   address: str) -> DomainDelivery | None:
        base = replace(run.report_policy(plan), mx=plan.mx, address=address,
                       port=request.port, policy=plan.policy,
                       verification=plan.verification, outcome="failed",
                       requiretls=plan.requiretls)
        try:
            result = await self.transport.send(request, self._gate(plan))
        except PolicyRefused as err:
            run.last_error = err
            self._record(run, _with_session(base, err.session, plan), outcome="refused",
                         failure=err.verdict.failure, temporary=err.verdict.temporary,
                         reason=err.verdict.reason)
            return None
        except SendError as err:
            run.last_error = err
            failure = _failure_of(err, plan)
            attempt = _with_session(base, err.session, plan)
            if err.stage in _NEXT_HOST_STAGES:
                self._record(run, attempt, failure=failure, temporary=True,
                             reason=f"{err.stage}: {err}", reply=err.reply)
                return None
            # The server answered about the message: its answer stands (RFC 5321 §5.1).
            # The session had passed the policy check (the gate runs before MAIL FROM).
            self._record(run, replace(attempt, gate_passed=True), failure=None,
                         temporary=err.temporary, reason=f"{err.stage}: {err}",
                         reply=err.reply)
            status: Status = "deferred" if err.temporary else "bounced"
            return DomainDelivery(domain=run.domain, status=status, reply=err.reply,
                                  reason=str(err), attempts=tuple(run.attempts),
                                  sts_failure=run.sts_failure, error=err)
        verdict_report = _testing_report(plan, result.session)
        attempt = replace(_with_session(base, result.session, plan), gate_passed=True)
        if plan.verification is Verification.DANE:
            attempt = replace(attempt, verified=True)  # the gate matched a TLSA record
        self._record(run, attempt, outcome="delivered", failure=verdict_report,
                     temporary=False, reason=plan.reason, reply=result.final_reply)
        return DomainDelivery(domain=run.domain, status="delivered", reply=result.final_reply,
                              reason=f"delivered to {plan.mx} ({plan.policy.value})",
                              attempts=tuple(run.attempts), sts_failure=run.sts_failure,
                              result=result)

    def _record(self, run: _Run, attempt: Attempt, *, outcome: AttemptOutcome = "failed",
                failure: ResultType | None, temporary: bool, reason: str,
                reply: Reply | None = None) -> None:
        done = replace(attempt, outcome=outcome, failure=failure, temporary=temporary,
                       reason=reason, reply=reply)
        run.attempts.append(done)
        log.info("outbound %s: mx=%s address=%s port=%s policy=%s tls=%s cipher=%s "
                 "verified=%s outcome=%s failure=%s reason=%s", run.domain, done.mx,
                 done.address, done.port, done.policy.value, done.tls_version, done.cipher,
                 done.verified, done.outcome, done.failure.value if done.failure else None,
                 done.reason)

    def _final(self, run: _Run, status: Status, code: int, enhanced: str, text: str, *,
               stage: Literal["dns", "tls"]) -> DomainDelivery:
        reply = Reply(code=code, status=enhanced, text=_reply_text(text))
        session = run.last_error.session if run.last_error else SessionInfo(
            host=run.domain, port=self.port, mode="starttls")
        error = SendError(text, stage=stage, temporary=status == "deferred", session=session,
                          reply=reply)
        log.info("outbound %s: %s: %s %s %s", run.domain, status, code, enhanced, text)
        return DomainDelivery(domain=run.domain, status=status, reply=reply, reason=text,
                              attempts=tuple(run.attempts), sts_failure=run.sts_failure,
                              error=error)

    def _give_up(self, run: _Run) -> DomainDelivery:
        """No MX took the message. Permanent only when every host failed for a permanent
        reason (RFC 8689: no next hop offers REQUIRETLS); anything else is retried."""
        attempts = run.attempts
        if attempts and all(not a.temporary for a in attempts):
            if run.requiretls:
                # RFC 8689 registers 5.7.30 "REQUIRETLS support required" (non-delivery).
                return self._final(run, "bounced", 550, "5.7.30",
                                   "REQUIRETLS support required: " + attempts[-1].reason,
                                   stage="tls")
            return self._final(run, "bounced", 550, "5.4.4",
                               attempts[-1].reason or f"{run.domain}: no usable MX",
                               stage="dns")
        if not attempts:
            return self._final(run, "deferred", 451, "4.4.4",
                               f"{run.domain}: no MX host could be tried", stage="dns")
        last = attempts[-1]
        tls_failure = any(a.failure is not None for a in attempts)
        # RFC 3463: X.7.5 cryptographic failure (a TLS policy said no), X.4.1 no answer.
        enhanced = "4.7.5" if tls_failure else "4.4.1"
        reasons = "; ".join(dict.fromkeys(
            f"{a.mx}{'[' + a.address + ']' if a.address else ''}: {a.reason}"
            for a in attempts))
        return self._final(run, "deferred", 451, enhanced, reasons or last.reason,
                           stage="tls" if tls_failure else "dns")


def _tlsa_text(record: TLSA) -> str:
    """A TLSA record in presentation form (RFC 6698 §2.2), as RFC 8460 §4.4 policy-string."""
    return f"{record.usage} {record.selector} {record.mtype} {record.data.hex()}"


def _reply_text(text: str) -> str:
    """Reply text is printable US-ASCII (RFC 5321 §4.2 textstring); DNS names, server
    replies and our own "§" are folded into it, bounded in length."""
    text = text.replace("§", "section ")
    return "".join(c if " " <= c <= "~" else "?" for c in text[:_REPLY_TEXT_MAX])


def _with_session(attempt: Attempt, session: SessionInfo, plan: HostPlan) -> Attempt:
    tls = session.tls
    if tls is None:
        return attempt
    verified = tls.verified
    if plan.verification is Verification.DANE:
        verified = False  # set True by a delivered attempt (the gate matched)
    return replace(attempt, tls_version=tls.version, cipher=tls.cipher, verified=verified)


def _testing_report(plan: HostPlan, session: SessionInfo) -> ResultType | None:
    """The failure a delivered attempt still reports (MTA-STS testing, unusable TLSA)."""
    if plan.report is not None:
        return plan.report
    if plan.judge_webpki:
        if session.tls is None:
            return ResultType.STARTTLS_NOT_SUPPORTED
        problem = _verify_problem(session)
        if problem is not None:
            return classify_certificate_error(problem)
    return None


def _failure_of(err: SendError, plan: HostPlan) -> ResultType | None:
    """The RFC 8460 result type of a transport failure, when it is a TLS one."""
    text = str(err)
    if err.stage == "starttls" and "STARTTLS" in text:
        return ResultType.STARTTLS_NOT_SUPPORTED
    if err.stage == "tls":
        if "certificate verification failed" in text:
            return classify_certificate_error(text)
        return ResultType.VALIDATION_FAILURE
    del plan
    return None



def _address_literal(domain: str) -> str:
    """The address of an RFC 5321 §4.1.3 address literal: ``[192.0.2.1]`` or
    ``[IPv6:2001:db8::1]`` (a General-address-literal tag other than IPv6 is not usable)."""
    inner = domain[1:-1] if domain.endswith("]") else None
    if not inner:
        raise ValueError("malformed address literal")
    if inner.lower().startswith("ipv6:"):
        try:
            return str(ipaddress.IPv6Address(inner[5:]))
        except ValueError:
            raise ValueError("malformed IPv6 address literal") from None
    try:
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        raise ValueError("malformed or unsupported address literal") from None
