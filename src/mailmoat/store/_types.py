"""Values stored and returned by the store (see :mod:`mailmoat.store`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mailmoat import limits

#: Delivery states. ``queued``/``deferred`` are waiting (due at ``next_attempt_at``),
#: ``in-flight`` is claimed by a worker until ``lease_until``, ``delivered``/``bounced`` are final.
DeliveryState = Literal["queued", "in-flight", "deferred", "delivered", "bounced"]
STATES: tuple[DeliveryState, ...] = ("queued", "in-flight", "deferred", "delivered", "bounced")
FINAL_STATES: tuple[DeliveryState, ...] = ("delivered", "bounced")
#: What one attempt concluded for one recipient.
Outcome = Literal["delivered", "deferred", "bounced"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DkimRecord:
    """One DKIM signature's result (RFC 7489 Appendix C ``DKIMAuthResultType``)."""

    domain: str
    selector: str | None = None
    result: str  # none / pass / fail / policy / neutral / temperror / permerror
    aligned: bool = False  # d= aligned with the header.from domain (RFC 7489 §3.1.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideReason:
    """A local-policy override (RFC 7489 Appendix C ``PolicyOverrideReason``)."""

    type: str  # forwarded / sampled_out / trusted_forwarder / mailing_list / local_policy / other
    comment: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What we knew and decided about one received message.

    The columns that a DMARC aggregate report groups by (RFC 7489 Appendix C ``record``:
    ``source_ip``, ``policy_evaluated`` {disposition, dkim, spf, reason}, ``identifiers``
    {header_from, envelope_from}, ``auth_results`` {dkim*, spf}) are kept flat, so the report
    is one GROUP BY (:meth:`Store.dmarc_aggregate`).
    """

    spool_id: str
    received_at: float  # seconds since the epoch
    client_ip: str | None = None
    helo: str | None = None
    mail_from: str | None = None  # envelope sender ("" for <>)
    mail_from_domain: str | None = None  # RFC 7489 envelope_from
    auth_user: str | None = None
    tls_version: str | None = None  # at receipt; None = cleartext
    tls_cipher: str | None = None
    header_from: str | None = None  # RFC5322.From domain (RFC 7489 header_from)
    spf_result: str | None = None  # none/neutral/pass/fail/softfail/temperror/permerror
    spf_domain: str | None = None  # the domain SPF checked (MAIL FROM domain, or HELO)
    spf_scope: str | None = None  # "mfrom" or "helo" (RFC 7489 SPFDomainScope)
    spf_aligned: bool = False
    dkim: tuple[DkimRecord, ...] = ()
    arc_result: str | None = None  # none / pass / fail (RFC 8617 cv)
    arc_sealers: tuple[str, ...] = ()  # d= of the ARC-Seals, instance order
    dmarc_domain: str | None = None  # the domain whose policy applied
    dmarc_result: str | None = None  # pass / fail / none / temperror / permerror
    dmarc_policy: str | None = None  # p= (or sp=) that applied: none / quarantine / reject
    dmarc_dkim: str | None = None  # policy_evaluated dkim: pass / fail (aligned DKIM pass)
    dmarc_spf: str | None = None  # policy_evaluated spf: pass / fail (aligned SPF pass)
    disposition: str | None = None  # applied: none / quarantine / reject
    overrides: tuple[OverrideReason, ...] = ()
    size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateRow:
    """One ``record`` of a DMARC aggregate report (RFC 7489 Appendix C)."""

    source_ip: str | None
    count: int
    disposition: str | None
    dkim: str | None  # policy_evaluated
    spf: str | None  # policy_evaluated
    reasons: tuple[OverrideReason, ...]
    header_from: str | None
    envelope_from: str | None
    dkim_results: tuple[DkimRecord, ...]
    spf_domain: str | None
    spf_scope: str | None
    spf_result: str | None


#: RFC 8460 §4.4 ``policy-type``.
TLSPolicyType = Literal["sts", "tlsa", "no-policy-found"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSSession:
    """One SMTP session to one MX address (or an MX host skipped before connecting), as an
    SMTP TLS report counts it (RFC 8460 §4.4).

    ``id`` is unique per session: a delivery to several recipients records the same sessions
    with each recipient's row, and the store keeps each session once. ``success`` True: TLS
    was negotiated and satisfied the policy (``total-successful-session-count``); False: a
    failure of ``result_type`` (RFC 8460 §4.3; also MTA-STS ``testing`` failures, delivered
    anyway); None: the session says nothing about TLS (connection refused, DNS trouble, TLS
    not attempted by configuration) and is not counted.
    """

    id: str
    policy_type: TLSPolicyType
    policy_domain: str  # the recipient domain (the Policy Domain of MTA-STS)
    policy_string: tuple[str, ...] = ()  # the MTA-STS policy lines / the TLSA records
    mx_patterns: tuple[str, ...] = ()  # ``mx-host``: the MTA-STS policy's mx patterns
    mx_host: str | None = None  # ``receiving-mx-hostname``
    receiving_ip: str | None = None  # ``receiving-ip``
    result_type: str | None = None  # RFC 8460 §4.3 (``ResultType`` value)
    success: bool | None = None
    reason: str | None = None  # ``failure-reason-code``: what went wrong, in words


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSRecord:
    """What one delivery attempt negotiated (kept for TLS-RPT, RFC 8460).

    The first fields describe the attempt's last session (the one that delivered, or the
    last one tried); ``sessions`` lists every session the attempt made (to each MX/address,
    including the last), each written once to the TLS-RPT log (:meth:`Store.tls_attempts`).
    ``sessions`` is not read back with a delivery or attempt (it is ``()`` there) and takes
    no part in comparisons.
    """

    version: str | None = None  # None: no TLS
    cipher: str | None = None
    verified: bool | None = None
    policy: str | None = None  # e.g. "opportunistic", "mta-sts-enforce", "dane", "none"
    policy_type: TLSPolicyType | None = None  # RFC 8460 §4.4 policy-type
    mx_host: str | None = None  # receiving-mx-hostname
    receiving_ip: str | None = None  # receiving-ip
    result_type: str | None = None  # RFC 8460 §4.3 result type of a failure
    success: bool | None = None  # see TLSSession.success
    sessions: tuple[TLSSession, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSFailure:
    """One ``failure-details`` entry of an SMTP TLS report (RFC 8460 §4.4)."""

    result_type: str
    mx_host: str | None  # receiving-mx-hostname
    receiving_ip: str | None
    reason: str | None  # failure-reason-code
    count: int  # failed-session-count


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSPolicySummary:
    """One ``policies`` entry of an SMTP TLS report (RFC 8460 §4.4): the policy applied, its
    session counts (``summary``) and the failures grouped as ``failure-details``."""

    policy_type: TLSPolicyType
    policy_domain: str
    policy_string: tuple[str, ...]
    mx_patterns: tuple[str, ...]
    successful: int  # total-successful-session-count
    failed: int  # total-failure-session-count
    failures: tuple[TLSFailure, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewDelivery:
    """A delivery to enqueue: one (message, recipient, destination)."""

    spool_id: str
    recipient: str
    destination: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One row of the delivery queue."""

    id: int
    spool_id: str
    recipient: str
    destination: str
    state: DeliveryState
    attempts: int
    created_at: float
    next_attempt_at: float
    lease_until: float | None = None
    owner: str | None = None
    last_error: str | None = None
    last_reply_code: int | None = None
    last_reply_text: str | None = None
    tls: TLSRecord | None = None  # of the last attempt
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptResult:
    """The outcome of one attempt for one delivery row, as the queue records it."""

    outcome: Outcome
    started_at: float
    finished_at: float
    next_attempt_at: float | None = None  # for "deferred"
    reply_code: int | None = None
    reply_status: str | None = None
    reply_text: str | None = None
    error: str | None = None
    remote: str | None = None  # host[:port] or path delivered to
    tls: TLSRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One row of the attempts log."""

    delivery_id: int
    spool_id: str
    recipient: str
    destination: str
    attempt: int  # 1-based
    result: AttemptResult


class Store(Protocol):
    """The storage interface; :class:`~mailmoat.store.SQLiteStore` and
    :class:`~mailmoat.store.PostgresStore` implement it with the same semantics."""

    async def migrate(self) -> int: ...

    async def schema_version(self) -> int: ...

    async def close(self) -> None: ...

    # verdicts
    async def record_verdict(self, verdict: Verdict) -> None: ...

    async def get_verdict(self, spool_id: str) -> Verdict | None: ...

    async def dmarc_aggregate(
        self, domain: str, begin: float, end: float
    ) -> list[AggregateRow]: ...

    async def dkim_selectors_seen(
        self, domain: str, *, since: float | None = None,
        limit: int = limits.STORE_SELECTORS_SEEN_MAX,
    ) -> list[str]: ...

    # delivery queue
    async def enqueue(self, items: list[NewDelivery], *, now: float) -> list[int]: ...

    async def intake(
        self, items: Sequence[NewDelivery], verdicts: Sequence[Verdict], *, now: float
    ) -> list[int]:
        """Queue ``items`` and record ``verdicts`` in ONE transaction (all or nothing): the
        group commit of messages accepted together. Returns the delivery ids in ``items``
        order; verdicts replace earlier rows of the same spool id, as :meth:`record_verdict`."""
        ...

    async def claim(
        self,
        *,
        now: float,
        owner: str,
        lease: float,
        limit: int,
        per_destination: int,
    ) -> list[Delivery]: ...

    async def finish(self, delivery_id: int, owner: str, result: AttemptResult) -> bool: ...

    async def renew(self, delivery_ids: list[int], owner: str, lease_until: float) -> int: ...

    async def get(self, delivery_id: int) -> Delivery | None: ...

    async def list_deliveries(
        self, *, states: tuple[DeliveryState, ...] | None = None, spool_id: str | None = None,
        limit: int = 1000,
    ) -> list[Delivery]: ...

    async def attempts(self, delivery_id: int) -> list[Attempt]: ...

    async def retry(self, delivery_id: int, *, now: float) -> bool: ...

    async def delete(self, delivery_id: int) -> bool: ...

    async def unfinished(self, spool_id: str) -> int: ...

    # TLS reporting
    async def tls_attempts(
        self, domain: str, begin: float, end: float
    ) -> list[TLSPolicySummary]:
        """The sessions to ``domain``'s MX hosts in ``[begin, end)`` (RFC 8460 §4.4): per
        policy applied, the successful and failed session counts and the failures grouped by
        (result type, MX host, receiving IP, reason). Sessions with no TLS outcome
        (``TLSSession.success`` None) are left out."""
        ...
