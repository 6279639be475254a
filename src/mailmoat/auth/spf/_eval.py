"""SPF evaluation: ``check_host()`` (RFC 7208 §4) over an injected resolver.

SECURITY: everything below the caller's arguments is untrusted DNS data. Work is bounded by
the RFC's limits, enforced here and named in :mod:`mailmoat.limits`: 10 DNS-querying terms per
evaluation (include/a/mx/ptr/exists/redirect, §4.6.4), 2 void lookups, at most 10 MX names
per ``mx`` (more is permerror) and 10 PTR names per ``ptr`` / ``%{p}`` (the rest ignored).
Include and redirect recursion is bounded by the term limit (each costs one), so include
loops end in permerror; CNAME loops are the resolver's to bound (it raises
``DNSPermanentError``, which we treat as a name that does not exist). An overall deadline
(``SPFOptions.timeout``, default 20 s per §4.6.4) turns a resolver that never answers into
``temperror``. Records are parsed before any of their terms is evaluated (§4.6), and parsed
records are size-bounded (``limits.SPF_RECORD_MAX``). No clock is read except through the
injected :class:`~mailmoat.clock.Clock` (for ``%{t}``); no I/O happens here.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections.abc import Coroutine, Generator
from typing import Any, Final, Generic, TypeVar

from mailmoat import limits
from mailmoat.auth.spf._macro import MacroString, MacroValues, expand, parse_explain_string
from mailmoat.auth.spf._macro import truncate_domain as _truncate
from mailmoat.auth.spf._record import (
    Mechanism,
    MechanismKind,
    Qualifier,
    SPFRecord,
    is_spf_record,
    parse_record,
)
from mailmoat.auth.spf._result import Identity, RawStep, SPFOptions, SPFResult, SPFVerdict
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import DNSError, DNSPermanentError, DNSTemporaryError, ParseError
from mailmoat.resolver import MX, TXT, Answer, NoData, NXDomain, Resolver, RRType

__all__ = ["check_helo", "check_host", "check_mailfrom"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A DNS question in the trace: (type, name, record count or outcome).
RawQuery = tuple[str, str, int | str]

_DEFAULT_OPTIONS: Final = SPFOptions()
_QUALIFIER_RESULT: Final = {
    Qualifier.PASS: SPFVerdict.PASS,
    Qualifier.FAIL: SPFVerdict.FAIL,
    Qualifier.SOFTFAIL: SPFVerdict.SOFTFAIL,
    Qualifier.NEUTRAL: SPFVerdict.NEUTRAL,
}
# RFC 5321 §4.1.2 sub-domain labels, leniently (underscores occur in practice); §4.3 needs
# labels of 1-63 octets and at least two of them.
_LABEL: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


class _Abort(Exception):
    """Ends an evaluation with temperror/permerror (internal; never leaves this module)."""

    def __init__(self, verdict: SPFVerdict, problem: str) -> None:
        super().__init__(problem)
        self.verdict = verdict
        self.problem = problem


def valid_domain(domain: str) -> bool:
    """RFC 7208 §4.3: a well-formed, multi-label (fully qualified) domain name.

    "If the <domain> is malformed (e.g., label longer than 63 characters, zero-length label
    not at the end, etc.) or is not a multi-label domain name, [...] check_host() immediately
    returns the result "none"." A domain literal (``[192.0.2.1]``) is not a domain.
    """
    # Checked before the (bounded) cache, so an over-long string is never kept in it.
    return len(domain) <= limits.SPF_MACRO_EXPANSION_MAX + 1 and _valid_domain(domain)


@functools.lru_cache(maxsize=4096)
def _valid_domain(domain: str) -> bool:
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or not domain.isascii():
        return False
    labels = domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_LABEL.match(label) for label in labels)


@functools.lru_cache(maxsize=4096)
def _literal_target(literal: str) -> str | None:
    name = _truncate(literal)
    return name if _queryable(name) else None


def _queryable(name: str) -> bool:
    """A <target-name> that can be put in a DNS question (RFC 1035 §2.3.4 lengths)."""
    if not name or len(name) > limits.SPF_MACRO_EXPANSION_MAX:
        return False
    return all(0 < len(label) <= limits.DNS_LABEL_MAX for label in name.split("."))


def _normalise_ip(ip: str | IPAddress) -> IPAddress:
    """Parse the client address; RFC 7208 §5: an IPv4-mapped IPv6 address is IPv4.

    §5.6: "[...] an IPv4-mapped IPv6 address (see [RFC4291], Section 2.5.5.2) MUST still be
    considered an IPv4 address and MUST be evaluated using IPv4 mechanisms (i.e., "ip4" and
    "a")."
    """
    if isinstance(ip, str):
        if len(ip) > _IP_TEXT_MAX:  # never parsed nor cached
            raise ValueError(f"{ip[:_IP_TEXT_MAX]!r}... does not appear to be an IP address")
        return _parse_ip(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


#: Longest textual IP address (IPv4-mapped IPv6 with a dotted quad is 45 characters).
_IP_TEXT_MAX = 64


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _Evaluation:
    """The mutable state of one ``check_host()`` evaluation and its recursion."""

    __slots__ = (
        "_q",
        "_values",
        "clock",
        "helo",
        "ip",
        "ip_int",
        "ip_version",
        "lookups",
        "options",
        "ptr_names",
        "resolver",
        "sender",
        "trace",
        "void",
    )

    def __init__(
        self,
        resolver: Resolver,
        ip: IPAddress,
        *,
        sender: str,
        helo: str,
        options: SPFOptions,
        clock: Clock,
    ) -> None:
        self.resolver = resolver
        self.ip = ip
        self.ip_int = int(ip)
        self.ip_version = ip.version
        self.options = options
        self.clock = clock
        self.lookups = 0
        self.void = 0
        self.trace: list[RawStep] | None = [] if options.trace else None
        self._q: list[RawQuery] = []
        self.ptr_names: tuple[str, ...] | None = None
        self.sender = sender
        self.helo = helo
        self._values: MacroValues | None = None

    @property
    def values(self) -> MacroValues:
        """The macro values (§7.2), computed on first use: most records use no macro."""
        if self._values is None:
            ip = self.ip
            local, _, sender_domain = self.sender.rpartition("@")
            if ip.version == 4:
                i = str(ip)
                v = "in-addr"
            else:
                # §7.3: "For IPv6 addresses, the "i" macro expands to a dot-format address;
                # it is intended for use in %{ir}." (nibbles, upper-case hex as the OpenSPF
                # suite writes them; DNS names are case-insensitive)
                i = ".".join(ip.exploded.replace(":", "").upper())
                v = "ip6"
            self._values = MacroValues(
                s=self.sender, l=local, o=sender_domain, i=i, c=str(ip), v=v, h=self.helo,
                r=self.options.receiver, t="0",
            )
        return self._values

    # ------------------------------------------------------------------ bookkeeping ---

    def step(  # noqa: PLR0917 - called on every term; positional keeps it cheap
        self, depth: int, domain: str, kind: str, term: str, matched: bool | None,
        note: str = "",
    ) -> None:
        if self.trace is not None:
            self.trace.append((depth, domain, kind, term, matched, tuple(self._q), note))
        self._q.clear()

    def count_term(self, term: str) -> None:
        # §4.6.4: "SPF implementations MUST limit the total number of those terms to 10
        # during SPF evaluation, to avoid unreasonable load on the DNS. If this limit is
        # exceeded, the implementation MUST return "permerror"."
        self.lookups += 1
        if self.lookups > self.options.max_dns_mechanisms:
            raise _Abort(SPFVerdict.PERMERROR,
                         f"more than {self.options.max_dns_mechanisms} DNS-querying terms"
                         f" (at {term!r})")

    async def query(self, name: str, rrtype: RRType) -> tuple[object, ...]:
        """Ask DNS for a mechanism. NXDOMAIN / no data / unaskable → ``()`` (a void lookup).

        §5: "If the server returns "Name Error" or no data, the mechanism does not match."
        Timeouts and SERVFAIL end the evaluation: "If the DNS lookup returns a server failure
        (RCODE 2) or some other error (RCODE other than 0 or 3), or if the lookup times out,
        then check_host() terminates immediately with the result "temperror"."
        """
        try:
            answer: Answer | DNSError = await self.resolver.resolve(name, rrtype)
        except DNSError as exc:
            answer = exc
        return self.account(name, rrtype, answer)

    def account(self, name: str, rrtype: RRType, answer: Answer | DNSError) -> tuple[object, ...]:
        if isinstance(answer, Answer):
            self._q.append((rrtype, name, len(answer.records)))
            if not answer.records:
                self.add_void(name)
            return answer.records
        if isinstance(answer, DNSTemporaryError):
            self._q.append((rrtype, name, "temporary error"))
            raise _Abort(SPFVerdict.TEMPERROR, f"DNS {rrtype.value} {name}: {answer}")
        # NXDomain, NoData, or DNSPermanentError (a name that cannot be asked, a CNAME loop):
        # none of them can ever give an address, so all count as a void lookup.
        self._q.append((rrtype, name, _outcome(answer)))
        self.add_void(name)
        return ()

    def add_void(self, name: str) -> None:
        # §4.6.4: "SPF implementations SHOULD limit "void lookups" to two. [...] Exceeding
        # the limit produces a "permerror" result."
        self.void += 1
        if self.void > self.options.max_void_lookups:
            raise _Abort(SPFVerdict.PERMERROR,
                         f"more than {self.options.max_void_lookups} void lookups (at {name})")

    # ------------------------------------------------------------------- records ---

    async def fetch_record(self, domain: str) -> SPFRecord | None:
        """§4.4 record lookup and §4.5 selection; None means "no SPF record" (→ none)."""
        try:
            answer = await self.resolver.resolve(domain, RRType.TXT)
        except (NXDomain, NoData, DNSPermanentError) as exc:
            self._q.append(("TXT", domain, _outcome(exc)))
            return None
        except DNSTemporaryError as exc:
            # §4.4: "If the DNS lookup returns a server failure (RCODE 2) or some other error
            # (RCODE other than 0 or 3), or if the lookup times out, then check_host()
            # terminates immediately with the result "temperror"."
            self._q.append(("TXT", domain, "temporary error"))
            raise _Abort(SPFVerdict.TEMPERROR, f"DNS TXT {domain}: {exc}") from None
        self._q.append(("TXT", domain, len(answer.records)))
        # §4.5: "Records that do not begin with a version section of exactly "v=spf1" are
        # discarded." [...] "If the resultant record set includes more than one record,
        # check_host() produces the "permerror" result."
        found = [txt for txt in (r.joined for r in answer.records if isinstance(r, TXT))
                 if is_spf_record(txt)]
        if not found:
            return None
        if len(found) > 1:
            raise _Abort(SPFVerdict.PERMERROR, f"{domain}: {len(found)} SPF records")
        record = _record_from_txt(found[0])
        if isinstance(record, str):
            # §4.6: "If there are any syntax errors anywhere in the record, check_host()
            # returns immediately with the result "permerror", without further
            # interpretation."
            raise _Abort(SPFVerdict.PERMERROR, f"{domain}: {record}")
        return record

    # -------------------------------------------------------------------- macros ---

    async def target(self, spec: MacroString | None, domain: str) -> str | None:
        """The <target-name> of a term (§4.8), or None if it is malformed."""
        if spec is None:
            return domain
        literal = spec.literal
        if literal is not None:
            if len(literal) <= limits.SPF_MACRO_EXPANSION_MAX + 1:
                return _literal_target(literal)  # cached: short strings only
            name = _truncate(literal)
            return name if _queryable(name) else None
        p = await self.p_macro(domain) if "p" in spec.letters else None
        name = _truncate(expand(spec, self.values, d=domain, p=p))
        return name if _queryable(name) else None

    async def validated_names(self) -> tuple[str, ...]:
        """§5.5: the client's PTR names whose A/AAAA include the client (cached)."""
        if self.ptr_names is not None:
            return self.ptr_names
        reverse = self.ip.reverse_pointer
        try:
            answer = await self.resolver.resolve(reverse, RRType.PTR)
        except (NXDomain, NoData, DNSPermanentError) as exc:
            self._q.append(("PTR", reverse, _outcome(exc)))
            self.add_void(reverse)
            self.ptr_names = ()
            return ()
        except DNSTemporaryError:
            # §5.5: "If a DNS error occurs while doing the PTR RR lookup, then this mechanism
            # fails to match."
            self._q.append(("PTR", reverse, "temporary error"))
            return ()
        self._q.append(("PTR", reverse, len(answer.records)))
        # §4.6.4: "the evaluation of each "PTR" record MUST NOT result in querying more than
        # 10 address records [...]. If this limit is exceeded, all records other than the
        # first 10 MUST be ignored."
        names = [r for r in answer.records if isinstance(r, str)][: self.options.max_ptr_names]
        rrtype = RRType.A if self.ip_version == 4 else RRType.AAAA
        validated: list[str] = []
        for name in names:
            if not _queryable(name):  # pragma: no cover - resolvers return askable names
                continue
            try:
                addresses = await self.resolver.resolve(name, rrtype)
            except (NXDomain, NoData, DNSPermanentError) as exc:
                self._q.append((rrtype, name, _outcome(exc)))
                self.add_void(name)
                continue
            except DNSTemporaryError:
                # §5.5: "If a DNS error occurs while doing an A RR lookup, then that domain
                # name is skipped and the search continues."
                self._q.append((rrtype, name, "temporary error"))
                continue
            self._q.append((rrtype, name, len(addresses.records)))
            if self.ip in addresses.records:
                validated.append(name)
        self.ptr_names = tuple(validated)
        return self.ptr_names

    async def p_macro(self, domain: str) -> str:
        """§7.3 ``%{p}``: a validated name, preferring <domain> then a subdomain of it.

        "If the <domain> is present in the list of validated domains, it SHOULD be used.
        Otherwise, if a subdomain of the <domain> is present, it SHOULD be used. Otherwise,
        any name from the list can be used. If there are no validated domain names or if a
        DNS error occurs, the string "unknown" is used."
        """
        names = await self.validated_names()
        if not names:
            return "unknown"
        lower = domain.lower().rstrip(".")
        if lower in names:
            return domain
        suffix = "." + lower
        for name in names:
            if name.endswith(suffix):
                return name
        return names[0]

    async def explain(self, record: SPFRecord, domain: str) -> str | None:
        """§6.2: the ``exp=`` text, or None when it cannot be had (errors are ignored).

        "If there are any DNS processing errors (any RCODE other than 0), or if no records
        are returned, or if more than one record is returned, or if there are syntax errors
        in the explanation string, then proceed as if no "exp" modifier was given."
        """
        if record.explanation is None:
            return None
        try:
            name = await self.target(record.explanation, domain)
        except _Abort:
            return None
        if name is None:
            return None
        try:
            answer = await self.resolver.resolve(name, RRType.TXT)
        except DNSError as exc:
            self._q.append(("TXT", name, _outcome(exc)))
            return None
        self._q.append(("TXT", name, len(answer.records)))
        texts = [r.joined for r in answer.records if isinstance(r, TXT)]
        if len(texts) != 1:
            return None
        try:
            spec = parse_explain_string(texts[0].decode("ascii"))
        except (UnicodeDecodeError, ParseError):
            return None
        p = None
        if "p" in spec.letters:
            try:
                p = await self.p_macro(domain)
            except _Abort:
                p = "unknown"
        values = self.values
        if "t" in spec.letters:
            # §7.2: "t = current timestamp" (seconds since the epoch), from the injected clock.
            values = _with_time(values, self.clock)
        text = expand(spec, values, d=domain, p=p)
        return text[: limits.SPF_EXPLANATION_MAX]

    # ---------------------------------------------------------------- evaluation ---

    def matches(self, addresses: tuple[object, ...], mech: Mechanism) -> bool:
        """Does the client fall in any of ``addresses`` with the mechanism's CIDR length?"""
        family: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
        if self.ip_version == 4:
            shift, family = 32 - mech.cidr4, ipaddress.IPv4Address
        else:
            shift, family = 128 - mech.cidr6, ipaddress.IPv6Address
        want = self.ip_int >> shift
        for a in addresses:  # noqa: SIM110 - a loop is faster than any() over a generator
            if isinstance(a, family) and int(a) >> shift == want:
                return True
        return False

    async def mechanism(self, mech: Mechanism, domain: str, depth: int) -> bool:
        """Evaluate one DNS-querying mechanism (§5); True when it matches.

        ``all``, ``ip4`` and ``ip6`` are evaluated inline by :meth:`check`.
        """
        kind = mech.kind
        self.count_term(mech.text)  # every mechanism that gets here is a DNS term (§4.6.4)
        target = await self.target(mech.domain_spec, domain)
        if kind is MechanismKind.INCLUDE:
            return await self.include(mech, target, depth)
        if target is None:
            # §4.8 / §4.3: a malformed <target-name> cannot exist; the mechanism does not
            # match (the OpenSPF suite accepts this, "invalid-domain-*" tests).
            self._q.append(("-", "(malformed target name)", "not asked"))
            return False
        if kind is MechanismKind.A:
            # §5.3: "An address lookup is done on the <target-name> using the type of lookup
            # (A or AAAA) appropriate for the connection type (IPv4 or IPv6)."
            rrtype = RRType.A if self.ip_version == 4 else RRType.AAAA
            return self.matches(await self.query(target, rrtype), mech)
        if kind is MechanismKind.MX:
            return await self.mx(mech, target)
        if kind is MechanismKind.EXISTS:
            # §5.7: "The resulting domain name is used for a DNS A RR lookup (even when the
            # connection type is IPv6). If any A record is returned, this mechanism matches."
            return bool(await self.query(target, RRType.A))
        # ptr, §5.5: "Check all validated domain names to see if they either match the
        # <target-name> domain or are a subdomain of the <target-name> domain."
        names = await self.validated_names()
        lower = target.lower()
        suffix = "." + lower
        return any(n == lower or n.endswith(suffix) for n in names)

    async def mx(self, mech: Mechanism, target: str) -> bool:
        """§5.4: MX lookup, then an address lookup of every exchange (at most 10)."""
        records = [r for r in await self.query(target, RRType.MX) if isinstance(r, MX)]
        # §4.6.4: "the evaluation of each "MX" record MUST NOT result in querying more than 10
        # address records -- either "A" or "AAAA" resource records. If this limit is
        # exceeded, the "mx" mechanism MUST produce a "permerror" result."
        if len(records) > self.options.max_mx_addresses:
            raise _Abort(SPFVerdict.PERMERROR,
                         f"{target}: more than {self.options.max_mx_addresses} MX records")
        # "Then it performs an address lookup on each MX name returned. The <ip> is compared
        # to each returned IP address." Every name is looked up (a timeout on any of them is
        # temperror, whatever the others say), in preference order; RFC 7505 null MX ("")
        # has no exchange to look up. The lookups are sequential: with a warm cache they
        # cost no round trip, and a Task per name would cost more than it saves.
        rrtype = RRType.A if self.ip_version == 4 else RRType.AAAA
        matched = False
        for record in sorted(records, key=lambda r: r.preference):
            if record.exchange in ("", "."):
                continue
            if self.matches(await self.query(record.exchange, rrtype), mech):
                matched = True
        return matched

    async def include(self, mech: Mechanism, target: str | None, depth: int) -> bool:
        """§5.2: evaluate check_host() for the target and map its result."""
        if target is None or not valid_domain(target):
            raise _Abort(SPFVerdict.PERMERROR, f"include target of {mech.text!r} is malformed")
        verdict, _, _ = await self.check(target, depth + 1, top=False)
        # §5.2 table: pass → match; fail/softfail/neutral → not match; temperror → return
        # temperror; permerror → return permerror; none → return permerror.
        if verdict is SPFVerdict.PASS:
            return True
        if verdict is SPFVerdict.NONE:
            raise _Abort(SPFVerdict.PERMERROR, f"included domain {target} has no SPF record")
        return False

    async def check(
        self, domain: str, depth: int, *, top: bool
    ) -> tuple[SPFVerdict, str | None, str | None]:
        """Evaluate ``domain``'s record; returns (verdict, matching term, explanation).

        temperror/permerror leave as :class:`_Abort`. ``top`` is False inside an include,
        where "exp" is never used (§6.2: "During recursion into an "include" mechanism, an
        "exp" modifier from the <target-name> MUST NOT be used.").
        """
        record = await self.fetch_record(domain)
        if record is None:
            self.step(depth, domain, "record", "", None, note="no SPF record")
            return SPFVerdict.NONE, None, None
        self.step(depth, domain, "record", record.text, None)
        version, address = self.ip_version, self.ip_int
        for mech in record.mechanisms:
            kind = mech.kind
            if kind is MechanismKind.ALL:
                matched = True  # §5.1: "The "all" mechanism is a test that always matches."
            elif kind is MechanismKind.IP4 or kind is MechanismKind.IP6:
                # §5.6: "ip4" matches IPv4 clients only, "ip6" IPv6 clients only.
                matched = (version == mech.net_version
                           and address >> mech.net_shift == mech.net_value)
            else:
                matched = await self.mechanism(mech, domain, depth)
            self.step(depth, domain, kind, mech.text, matched)
            if matched:
                verdict = _QUALIFIER_RESULT[mech.qualifier]
                explanation = None
                if verdict is SPFVerdict.FAIL and top:
                    explanation = await self.explain(record, domain)
                    if record.explanation is not None:
                        self.step(depth, domain, "exp", "exp=" + record.explanation.text, None,
                                  note="explanation found" if explanation is not None
                                  else "explanation ignored")
                return verdict, mech.text, explanation
        # §6.1: "If all mechanisms fail to match, and a "redirect" modifier is present, then
        # processing proceeds as follows [...]". "Any "redirect" modifier MUST be ignored if
        # there is an "all" mechanism anywhere in the record."
        if record.redirect is not None and not record.has_all:
            term = "redirect=" + record.redirect.text
            self.count_term(term)
            target = await self.target(record.redirect, domain)
            # "if no SPF record is found, or if the <target-name> is malformed, the result is
            # a "permerror" rather than "none"."
            if target is None or not valid_domain(target):
                raise _Abort(SPFVerdict.PERMERROR, f"{term}: malformed target name")
            self.step(depth, domain, "redirect", term, None, note=f"redirecting to {target}")
            verdict, matched_term, explanation = await self.check(target, depth + 1, top=top)
            if verdict is SPFVerdict.NONE:
                raise _Abort(SPFVerdict.PERMERROR, f"{term}: {target} has no SPF record")
            return verdict, matched_term, explanation
        # §4.7: "If none of the mechanisms match and there is no "redirect" modifier, then
        # the check_host() returns a result of "neutral", just as if "?all" were specified
        # as the last directive."
        self.step(depth, domain, "default", "", None, note="no mechanism matched: neutral")
        return SPFVerdict.NEUTRAL, None, None


_T = TypeVar("_T")


class _Resume(Generic[_T]):
    """Await the rest of a coroutine that was started by hand and then suspended.

    Must be awaited in the task that started it (it is: :func:`_within` does both), so the
    coroutine never changes task half-way.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, _T], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, _T]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:  # pragma: no cover - the awaiting task was destroyed
                coro.close()
                raise
            except BaseException as exc:  # CancelledError from a timeout, mostly
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]


async def _within(coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
    """``await coro`` bounded by ``timeout`` seconds (TimeoutError after).

    The coroutine is first run by hand: when every DNS answer is already at hand (a warm
    cache) it finishes without ever suspending and no timer is armed; only a coroutine that
    really waits gets the deadline (counted from the start), via ``asyncio.timeout_at``.
    """
    if timeout is None:
        return await coro
    start = asyncio.get_running_loop().time()
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except BaseException:
        coro.close()
        raise
    async with asyncio.timeout_at(start + timeout):
        return await _Resume(coro, pending)


@functools.lru_cache(maxsize=2048)
def _record_from_txt(raw: bytes) -> SPFRecord | str:
    """The parsed record for a selected TXT record's octets, or the reason it is invalid."""
    if len(raw) > limits.SPF_RECORD_MAX:
        return f"SPF record longer than {limits.SPF_RECORD_MAX} octets"
    try:
        # §3.1 / §4.6.1 ABNF: records are US-ASCII; any other octet is a syntax error.
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "non-ASCII octet in SPF record"
    try:
        return parse_record(text)
    except ParseError as exc:
        return str(exc)


def _with_time(values: MacroValues, clock: Clock) -> MacroValues:
    return MacroValues(s=values.s, l=values.l, o=values.o, i=values.i, c=values.c,
                       v=values.v, h=values.h, r=values.r, t=str(int(clock.now())))


def _outcome(exc: Exception) -> str:
    if isinstance(exc, NXDomain):
        return "NXDOMAIN"
    if isinstance(exc, NoData):
        return "no data"
    if isinstance(exc, DNSTemporaryError):
        return "temporary error"
    return f"error ({exc})"


async def check_host(
    resolver: Resolver,
    ip: str | IPAddress,
    domain: str,
    sender: str,
    *,
    helo: str | None = None,
    identity: Identity = Identity.MAILFROM,
    options: SPFOptions | None = None,
    clock: Clock | None = None,
) -> SPFResult:
    """RFC 7208 §4 ``check_host(<ip>, <domain>, <sender>)``; never raises for DNS or policy.

    ``sender`` is ``local-part@domain`` (the caller substitutes "postmaster" for an empty
    local-part, §4.3; :func:`check_mailfrom` and :func:`check_helo` do this). ``helo`` is
    the ``%{h}`` macro. Raises ValueError only for an ``ip`` that is not an IP address (a
    caller bug).
    """
    opts = options or _DEFAULT_OPTIONS
    address = _normalise_ip(ip)
    ev = _Evaluation(resolver, address, sender=sender, helo=helo or "unknown", options=opts,
                     clock=clock or SYSTEM_CLOCK)
    bare = domain[:-1] if domain.endswith(".") else domain

    def result(verdict: SPFVerdict, *, mechanism: str | None = None,
               explanation: str | None = None, problem: str | None = None) -> SPFResult:
        return SPFResult(
            result=verdict, domain=bare, identity=identity, explanation=explanation,
            mechanism=mechanism, lookups=ev.lookups, void_lookups=ev.void,
            steps=tuple(ev.trace) if ev.trace is not None else (), problem=problem,
        )

    if not valid_domain(domain):
        # §4.3: malformed or single-label domain → "none".
        return result(SPFVerdict.NONE, problem=f"{domain!r} is not a valid domain name")
    try:
        verdict, mechanism, explanation = await _within(ev.check(bare, 0, top=True),
                                                        opts.timeout)
    except _Abort as abort:
        ev.step(0, bare, "error", "", None, note=abort.problem)
        return result(abort.verdict, problem=abort.problem)
    except TimeoutError:
        # §4.6.4: "If such a limit is exceeded, the result of authorization SHOULD be
        # "temperror"."
        late = f"evaluation exceeded {opts.timeout} s"
        ev.step(0, bare, "error", "", None, note=late)
        return result(SPFVerdict.TEMPERROR, problem=late)
    return result(verdict, mechanism=mechanism, explanation=explanation,
                  problem="no SPF record" if verdict is SPFVerdict.NONE else None)


async def check_mailfrom(
    resolver: Resolver,
    ip: str | IPAddress,
    mail_from: str,
    helo: str | None = None,
    *,
    options: SPFOptions | None = None,
    clock: Clock | None = None,
) -> SPFResult:
    """Check the MAIL FROM identity (RFC 7208 §2.4); a null path checks the HELO identity.

    §2.4: "When the reverse-path is null, this document defines the "MAIL FROM" identity to
    be the mailbox composed of the local-part "postmaster" and the "HELO" identity". §4.3:
    "If the <sender> has no local-part, substitute the string "postmaster" for the
    local-part."
    """
    path = mail_from.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    if not path:
        return await check_helo(resolver, ip, helo or "", options=options, clock=clock)
    local, at, domain = path.rpartition("@")
    if not at:
        local, domain = "", path
    sender = f"{local or 'postmaster'}@{domain}"
    return await check_host(resolver, ip, domain, sender, helo=helo,
                            identity=Identity.MAILFROM, options=options, clock=clock)


async def check_helo(
    resolver: Resolver,
    ip: str | IPAddress,
    helo: str,
    *,
    options: SPFOptions | None = None,
    clock: Clock | None = None,
) -> SPFResult:
    """Check the HELO identity (RFC 7208 §2.3): <sender> is ``postmaster@<helo>``."""
    return await check_host(resolver, ip, helo, f"postmaster@{helo}", helo=helo,
                            identity=Identity.HELO, options=options, clock=clock)
