"""Hop-by-hop transport evidence of a message: "was this message encrypted?" (layer L2).

Reads the Received chain (newest stamp on top, RFC 5321 §4.4: "a Received: line ... is added
at the beginning of the message"), puts the hops in the order the message travelled (hop 1 is
the oldest, bottom stamp), computes the delay between hops, decides which hops were written by
the receiving organisation, and gives a verdict.

Which stamps can be believed (the trust boundary)
    A Received field is only as honest as the server that wrote it. The topmost one was
    written by the server that delivered the message to you; each one below was written by
    the machine that the stamp above says it received the message *from*. So the chain is
    walked from the top, and hop *i* is "inside" (written by the receiving organisation, so
    trustworthy) while

    1. its by-host is one of ours: a name in ``our_domains`` (itself or a subdomain) or in
       ``trusted_hosts`` (names or IPs) when given, otherwise -- the default heuristic --
       a name under the registered domain (public suffix list) of the topmost hop's by-host;
       a by-name that is not a domain (``IMSVA``, ``localhost``, none at all) counts as the
       host of the hop below it (a local re-injection by the same machine); and
    2. the hop above it says it received the message from one of ours: a local hand-off or
       loopback, a private/ULA address as seen by our server, or a from-host under an
       organisation domain (the reverse-DNS name when the stamp records one).

    The lowest inside hop is the *entry hop* when it received the message from outside (an
    external peer, or with outside stamps below it): its TLS is the strongest evidence there
    is, because our own server recorded it. Stamps below it are *claims* made by the sender
    and its relays: they may be true, and they may be forged. Authentication-Results fields
    above the entry hop's stamp were added by our servers; those below it were not.

Verdict
    Only hops that crossed a network count: local hand-offs and origin stamps (TLS "n/a") and
    loopback hops are shown but do not make a message "not encrypted". A hop that says "no"
    makes the verdict "not encrypted on hop N"; otherwise a hop that does not say makes it
    "unknown on hop N"; otherwise "encrypted on every hop". The same verdict is given for the
    trustworthy hops and for the claimed ones separately.

SECURITY: the whole header section is untrusted. Only the topmost
``limits.ANALYSIS_MAX_HOPS`` Received fields are analysed (the trustworthy end; RFC 5321 §6.3
loop detection); the rest are counted and reported as not analysed. Each field is read by the
bounded parsers in :mod:`.received`, :mod:`.authres_summary` and :mod:`._signatures`. This
module does no I/O and never reads the clock: ``now`` is injected, and the public suffix list
is the bundled copy (``publicsuffixlist`` never touches the network).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Final

from mailmoat.analysis._signatures import (
    ArcSummary,
    DkimSummary,
    summarise_arc_fields,
    summarise_dkim,
)
from mailmoat.analysis.authres_summary import AuthResults, parse_authentication_results
from mailmoat.analysis.received import Stamp, TLSStatus, Transport, parse_received
from mailmoat.limits import (
    ANALYSIS_CLOCK_SKEW,
    ANALYSIS_LONG_DELAY,
    ANALYSIS_MAX_AUTHRES_FIELDS,
    ANALYSIS_MAX_HOPS,
    DKIM_MAX_SIGNATURES,
)
from mailmoat.message import HeaderDefect, Headers

__all__ = [
    "AuthRecord",
    "HeaderReport",
    "Hop",
    "Verdict",
    "VerdictStatus",
    "analyse_headers",
    "registered_domain",
]

_WEAK_VERSIONS: Final = frozenset({"SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"})
_INTERNAL_NETWORKS: Final = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


class VerdictStatus(enum.Enum):
    """The answer to "was it encrypted?" over a set of hops."""

    ENCRYPTED = "encrypted"  # every network hop says TLS
    NOT_ENCRYPTED = "not_encrypted"  # at least one network hop says no TLS
    UNKNOWN = "unknown"  # no hop says no, but at least one does not say
    NO_HOPS = "no_hops"  # no network hop recorded at all


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """One Received stamp, placed in the journey."""

    number: int  # 1 = oldest (bottom) stamp analysed
    field_index: int  # position of the Received field in the header section (0 = top)
    stamp: Stamp
    delay_s: float | None  # seconds since the previous hop's timestamp
    inside: bool  # written by the receiving organisation (trustworthy)
    flags: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        """Whether this hop crossed a network, so its TLS matters for the verdict."""
        return self.stamp.transport is Transport.NETWORK and (
            self.stamp.tls is not TLSStatus.NOT_APPLICABLE
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The verdict over all hops, and over the trustworthy (inside) ones."""

    status: VerdictStatus
    summary: str
    not_encrypted: tuple[int, ...] = ()
    unknown: tuple[int, ...] = ()
    entry_hop: int | None = None
    trusted_status: VerdictStatus = VerdictStatus.NO_HOPS
    trusted_summary: str = ""
    claimed_status: VerdictStatus = VerdictStatus.NO_HOPS
    claimed_summary: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRecord:
    """An Authentication-Results field, where it was, and whether our servers wrote it."""

    field_index: int
    results: AuthResults
    trusted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderReport:
    """Everything ``mailmoat headers`` reports about one header section."""

    hops: tuple[Hop, ...]
    verdict: Verdict
    received_total: int
    analysed: int
    boundary: str  # how "inside" was decided, for a person
    organisation: tuple[str, ...]
    authentication: tuple[AuthRecord, ...] = ()
    dkim: tuple[DkimSummary, ...] = ()
    arc: ArcSummary = field(default_factory=ArcSummary)
    header_defects: tuple[HeaderDefect, ...] = ()
    warnings: tuple[str, ...] = ()


@cache
def _psl() -> Callable[[str], str | None]:
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()  # the bundled list: no network

    def privatesuffix(name: str) -> str | None:
        result = psl.privatesuffix(name)
        return result if isinstance(result, str) else None

    return privatesuffix


def registered_domain(name: str) -> str | None:
    """The registered (organisational) domain of a host name, or ``None`` (not a domain)."""
    host = name.strip().rstrip(".").lower()
    if "." not in host or ":" in host or len(host) > 253 or host.startswith("["):
        return None
    if host.rpartition(".")[2].isdigit():  # an IPv4 address: no TLD is all digits
        return None
    return _psl()(host)


def _matches(host: str | None, domains: Iterable[str]) -> bool:
    if not host:
        return False
    name = host.strip().rstrip(".").lower()
    return any(name == d or name.endswith("." + d) for d in domains)


def _is_internal_ip(ip: str | None) -> bool:
    """RFC 1918 / RFC 4193 (ULA) / loopback / link-local: addresses only an organisation's
    own machines can connect from (documentation and shared ranges are not included)."""
    if ip is None:
        return False
    if "." in ip and ":" not in ip:  # dotted quad, already validated by the stamp parser
        first, second = (int(part) for part in ip.split(".")[:2])
        return first in (10, 127) or (first, second) in ((192, 168), (169, 254)) or (
            first == 172 and 16 <= second <= 31
        )
    address = ipaddress.ip_address(ip)
    return address.is_loopback or address.is_link_local or any(
        address in network for network in _INTERNAL_NETWORKS if network.version == address.version
    )


def _describe(stamp: Stamp) -> str:
    source = stamp.from_name or stamp.from_rdns or "?"
    if stamp.from_ip and stamp.from_ip not in source:
        source += f" [{stamp.from_ip}]"
    return f"{source} → {stamp.by_name or '?'}"


def _status(hops: list[Hop]) -> tuple[VerdictStatus, str, tuple[int, ...], tuple[int, ...]]:
    counted = [h for h in hops if h.counts]
    bad = tuple(h.number for h in counted if h.stamp.tls is TLSStatus.NO)
    unknown = tuple(h.number for h in counted if h.stamp.tls is TLSStatus.UNKNOWN)
    by_number = {h.number: h for h in hops}
    if not counted:
        return VerdictStatus.NO_HOPS, "no network hop recorded", bad, unknown
    if bad:
        first = by_number[bad[0]]
        text = f"not encrypted on hop {bad[0]} ({_describe(first.stamp)})"
        if len(bad) > 1:
            text += "; also not on hop" + ("s " if len(bad) > 2 else " ")
            text += ", ".join(str(n) for n in bad[1:])
        if unknown:
            text += "; unknown on hop" + ("s " if len(unknown) > 1 else " ")
            text += ", ".join(str(n) for n in unknown)
        return VerdictStatus.NOT_ENCRYPTED, text, bad, unknown
    if unknown:
        first = by_number[unknown[0]]
        text = f"unknown on hop {unknown[0]} ({_describe(first.stamp)})"
        if len(unknown) > 1:
            text += "; also unknown on hop" + ("s " if len(unknown) > 2 else " ")
            text += ", ".join(str(n) for n in unknown[1:])
        return VerdictStatus.UNKNOWN, text, bad, unknown
    return VerdictStatus.ENCRYPTED, "encrypted on every hop", bad, unknown


def _inside(
    stamps: list[Stamp],
    our_domains: tuple[str, ...],
    trusted_hosts: tuple[str, ...],
) -> tuple[list[bool], list[bool], str, tuple[str, ...]]:
    """Which stamps (top first) our organisation wrote, which say they received from one of
    ours, how that was decided, and the organisation's names."""
    count = len(stamps)
    if count == 0:
        return [], [], "no Received fields", ()
    # The organisation of each hop's by-host; hops whose by-name is not a domain inherit the
    # organisation of the hop below them (bottom-up pass).
    by_org: list[str | None] = [None] * count
    own_org: list[str | None] = [None] * count  # the by-name's own registered domain
    below: str | None = None
    for i in range(count - 1, -1, -1):
        name = stamps[i].by_name
        own_org[i] = org = registered_domain(name) if name else None
        by_org[i] = org if org is not None else below
        below = by_org[i]
    explicit = bool(our_domains or trusted_hosts)
    if explicit:
        orgs = tuple(sorted({d.strip().rstrip(".").lower() for d in our_domains}))
        hosts = {h.strip().rstrip(".").lower() for h in trusted_hosts}
        how = "configured: " + ", ".join(
            [f"--our-domain {d}" for d in orgs] + [f"--trusted-host {h}" for h in sorted(hosts)]
        )
    else:
        top = by_org[0]
        orgs = (top,) if top else ()
        hosts = set()
        how = (
            f"heuristic: hops whose by-host is under {top} (the topmost hop's registered "
            "domain); use --our-domain/--trusted-host to set the boundary"
            if top
            else "heuristic: only the topmost hop (its by-host has no registered domain)"
        )

    def by_is_ours(i: int) -> bool:
        stamp = stamps[i]
        name = (stamp.by_name or "").lower().rstrip(".")
        if name in hosts or (stamp.by_ip is not None and stamp.by_ip in hosts):
            return True
        if _matches(stamp.by_name, orgs):
            return True
        if own_org[i] is None:
            return by_org[i] is not None and by_org[i] in orgs
        return False

    def from_is_ours(stamp: Stamp) -> bool:
        if stamp.transport is not Transport.NETWORK:
            return True
        if _is_internal_ip(stamp.from_ip):
            return True
        name = stamp.from_rdns if stamp.from_rdns not in (None, "unknown") else stamp.from_name
        if name and (name.lower().rstrip(".") in hosts or _matches(name, orgs)):
            return True
        return stamp.from_ip is not None and stamp.from_ip in hosts

    inside = [False] * count
    from_ours = [from_is_ours(stamp) for stamp in stamps]
    inside[0] = by_is_ours(0) if explicit else True
    for i in range(1, count):
        inside[i] = inside[i - 1] and from_ours[i - 1] and by_is_ours(i)
    return inside, from_ours, how, orgs


def analyse_headers(
    headers: Headers,
    *,
    our_domains: Iterable[str] = (),
    trusted_hosts: Iterable[str] = (),
    now: datetime | None = None,
) -> HeaderReport:
    """Analyse a parsed header section (see the module docstring). Never raises on bad input."""
    groups = headers.grouped(
        b"received", b"authentication-results", b"dkim-signature", b"arc-seal",
        b"arc-message-signature", b"arc-authentication-results",
    )
    received = groups[b"received"]
    total = len(received)
    analysed = received[:ANALYSIS_MAX_HOPS]
    warnings: list[str] = []
    if total > ANALYSIS_MAX_HOPS:
        warnings.append(
            f"{total} Received fields (a loop, or padding): only the topmost "
            f"{ANALYSIS_MAX_HOPS} analysed (RFC 5321 §6.3)"
        )
    stamps = [parse_received(f.value) for _, f in analysed]
    inside, from_ours, how, orgs = _inside(stamps, tuple(our_domains), tuple(trusted_hosts))

    count = len(stamps)
    hops: list[Hop] = []
    previous: datetime | None = None
    # chronological: bottom (index count-1) first
    for k, i in enumerate(range(count - 1, -1, -1)):
        stamp = stamps[i]
        flags: list[str] = list(stamp.problems)
        delay = None
        if stamp.timestamp is not None and previous is not None and k > 0:
            delay = (stamp.timestamp - previous).total_seconds()
            if delay < -ANALYSIS_CLOCK_SKEW:
                flags.append(
                    f"timestamp {-delay:.0f} s before the previous hop's "
                    "(reversed: clock skew or a forged stamp)"
                )
            elif delay < 0:
                flags.append(f"timestamp {-delay:.0f} s before the previous hop's (clock skew)")
            elif delay > ANALYSIS_LONG_DELAY:
                flags.append(f"delay of {delay / 3600:.1f} h since the previous hop")
        if stamp.timestamp is not None:
            previous = stamp.timestamp
            if now is not None and (stamp.timestamp - now).total_seconds() > ANALYSIS_CLOCK_SKEW:
                flags.append("timestamp in the future")
        if stamp.tls_version in _WEAK_VERSIONS:
            flags.append(f"{stamp.tls_version} is obsolete (RFC 8996)")
        if stamp.transport is Transport.LOOPBACK:
            flags.append("loopback (did not leave the host)")
        hops.append(
            Hop(
                number=k + 1,
                field_index=analysed[i][0],
                stamp=stamp,
                delay_s=delay,
                inside=inside[i],
                flags=tuple(flags),
            )
        )

    status, summary, bad, unknown = _status(hops)
    inside_hops = [h for h in hops if h.inside]
    outside_hops = [h for h in hops if not h.inside]
    # The entry hop: the lowest stamp written by us, when the message came from outside there.
    entry = None
    if inside_hops:
        lowest = inside_hops[0]
        if outside_hops or not from_ours[count - lowest.number]:
            entry = lowest.number
    t_status, t_summary, _, _ = _status(inside_hops)
    c_status, c_summary, _, _ = _status(outside_hops)
    if not inside_hops:
        t_summary = "no hop was written by the receiving organisation"
    if entry is not None:
        e = inside_hops[0]
        t_summary += (
            f"; entry hop {entry} ({_describe(e.stamp)}): TLS {e.stamp.tls.value}"
            + (f" {e.stamp.tls_version}" if e.stamp.tls_version else "")
            + (f" {e.stamp.cipher}" if e.stamp.cipher else "")
        )
    verdict = Verdict(
        status=status,
        summary=summary if count else "no Received fields: nothing to tell",
        not_encrypted=bad,
        unknown=unknown,
        entry_hop=entry,
        trusted_status=t_status,
        trusted_summary=t_summary,
        claimed_status=c_status,
        claimed_summary=c_summary if outside_hops else "no hops outside the organisation",
    )

    # Authentication-Results above the entry hop's stamp were added by our servers.
    limit_index = (
        hops[entry - 1].field_index if entry is not None
        else (len(headers) if inside_hops else -1)
    )
    auth: list[AuthRecord] = []
    for index, f in groups[b"authentication-results"][:ANALYSIS_MAX_AUTHRES_FIELDS]:
        auth.append(
            AuthRecord(
                field_index=index,
                results=parse_authentication_results(f.value),
                trusted=index < limit_index,
            )
        )
    dkim = summarise_dkim(f for _, f in groups[b"dkim-signature"])
    if len(dkim) > DKIM_MAX_SIGNATURES:
        warnings.append(f"{len(dkim)} DKIM-Signature fields; a verifier reads at most "
                        f"{DKIM_MAX_SIGNATURES}")
    return HeaderReport(
        hops=tuple(hops),
        verdict=verdict,
        received_total=total,
        analysed=count,
        boundary=how,
        organisation=orgs,
        authentication=tuple(auth),
        dkim=dkim,
        arc=summarise_arc_fields(
            [f for _, f in groups[b"arc-seal"]],
            [f for _, f in groups[b"arc-message-signature"]],
            [f for _, f in groups[b"arc-authentication-results"]],
        ),
        header_defects=headers.defects,
        warnings=tuple(warnings),
    )
