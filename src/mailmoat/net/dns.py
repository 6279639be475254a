"""The real :class:`~mailmoat.resolver.Resolver`: dnspython's async query layer, with a cache,
single-flight de-duplication and hard timeouts (layer L3).

What it does with one question ``(name, type)``:

1. normalises the name (:func:`mailmoat.resolver.normalize_name`); an unaskable name raises
   :class:`~mailmoat.errors.DNSPermanentError` and sends nothing;
2. answers from the cache while the entry lives (positive answers up to
   :data:`~mailmoat.limits.DNS_CACHE_MAX_TTL`; NXDOMAIN and NODATA per RFC 2308 §5 for
   ``min(SOA TTL, SOA MINIMUM)`` capped at :data:`~mailmoat.limits.DNS_NEGATIVE_TTL_MAX`; a
   negative answer without SOA is not cached, RFC 2308 §5 "SHOULD NOT be cached"). A cached
   answer's TTL is the time it has left. The cache is an LRU of at most
   :data:`~mailmoat.limits.DNS_CACHE_MAX_ENTRIES` entries, timed by the injected
   :class:`~mailmoat.clock.Clock` (monotonic);
3. joins an identical question already in flight (single flight): many sessions asking the
   same name cause one query;
4. otherwise sends one recursive query (RD=1, EDNS0 with a 1232-octet UDP payload, the DNS
   Flag Day 2020 value) to the configured nameservers in order, each try bounded by
   ``timeout`` and the whole question by ``lifetime``; a truncated (TC=1) UDP answer is asked
   again over TCP (RFC 7766 §5; RFC 1035 §4.2.1);
5. turns the response into a typed answer: CNAME chains inside the response are followed up to
   :data:`~mailmoat.limits.DNS_MAX_CNAME_CHAIN` (a loop or a longer chain:
   :class:`~mailmoat.errors.DNSPermanentError`, as in :mod:`mailmoat.resolver.fake`); only
   records of the type asked, class IN, are returned.

Failures: a timeout of every try, SERVFAIL, REFUSED, NOTIMP, FORMERR, a network error or an
unparseable response raise :class:`~mailmoat.errors.DNSTemporaryError` (RFC 7208 §2.6.6
``temperror``; never "no record"). Temporary failures are **not cached**: the next question
asks again. (RFC 2308 §7.1 allows caching a server failure for up to 5 minutes; we rely on
single flight instead, so a failing name costs one query per ``lifetime`` per name, and a
recovering server is seen at once.)

DNSSEC: this resolver does not validate. With ``trust_ad=True`` it sets the AD bit in its
queries (RFC 6840 §5.7, which asks a validating resolver to report validation) and copies the
response's AD bit to :attr:`~mailmoat.resolver.Answer.authenticated`; use that only with a
validating resolver you trust on a secure path, typically unbound on 127.0.0.1 (RFC 4035
§4.9.3, RFC 7672 §1.3). With ``trust_ad=False`` (the default) ``authenticated`` is always false.

SECURITY: everything in a response is untrusted. Responses are matched to the query by ID,
source and question (dnspython), and non-matching or unparseable datagrams are ignored while
the try's timer runs (RFC 5452 §9.1); answers of another type, class or owner than the chain
asked are ignored; CNAME chains, the cache size and every TTL are bounded; names in answers are
kept as octets (no IDNA decoding). The name asked never undergoes search-list expansion
(resolv.conf ``search``/``ndots`` are not used: mail names are absolute).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mailmoat import limits
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import ConfigError, DNSPermanentError, DNSTemporaryError
from mailmoat.resolver import (
    MX,
    TLSA,
    TXT,
    Answer,
    NoData,
    NXDomain,
    Record,
    RRType,
    name_labels,
    normalize_name,
)

__all__ = ["DEFAULT_RESOLV_CONF", "DNSResolver", "DNSStats", "Nameserver", "parse_nameserver"]

DEFAULT_RESOLV_CONF: Final = "/etc/resolv.conf"
#: EDNS0 UDP payload we advertise (DNS Flag Day 2020: avoids IP fragmentation).
EDNS_PAYLOAD: Final = 1232

_RDTYPE: Final = {t: dns.rdatatype.from_text(t.value) for t in RRType}


@dataclass(frozen=True, slots=True, kw_only=True)
class Nameserver:
    """One upstream server: an IP address and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_nameserver(text: str) -> Nameserver:
    """Parse ``HOST[:PORT]``: ``192.0.2.1``, ``192.0.2.1:5353``, ``::1``, ``[::1]:5353``.

    HOST must be an IP address (resolving a resolver's name needs a resolver). Raises
    :class:`~mailmoat.errors.ConfigError`.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            raise ConfigError(f"bad nameserver {text!r}: expected [IPv6]:PORT", key="resolver")
        host, port_text = text[1:end], text[end + 2 :]
        if text[end + 1 :] == ":":
            raise ConfigError(f"bad nameserver {text!r}: empty port", key="resolver")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            raise ConfigError(f"bad nameserver {text!r}: empty port", key="resolver")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ConfigError(f"bad nameserver {text!r}: not an IP address", key="resolver") from None
    port = 53
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF:
            raise ConfigError(f"bad nameserver {text!r}: bad port", key="resolver")
        port = int(port_text)
    return Nameserver(host=address.compressed, port=port)


def nameservers_from_resolv_conf(path: str = DEFAULT_RESOLV_CONF) -> list[Nameserver]:
    """The ``nameserver`` lines of resolv.conf(5); none (or no file) means 127.0.0.1."""
    found: list[Nameserver] = []
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_address(words[1].split("%", 1)[0])
                    found.append(Nameserver(host=address.compressed))
    return found or [Nameserver(host="127.0.0.1")]


@dataclass(slots=True)
class DNSStats:
    """Counters for tests and benchmarks (monotonic, never reset by the resolver)."""

    questions: int = 0  #: calls of :meth:`DNSResolver.resolve` with an askable name
    cache_hits: int = 0  #: answered from the cache (positive or negative)
    coalesced: int = 0  #: joined an identical question in flight
    queries_sent: int = 0  #: tries sent to a nameserver (UDP, with its TCP retry counted once)
    tcp_fallbacks: int = 0  #: tries that were truncated over UDP and asked again over TCP
    timeouts: int = 0  #: tries that timed out
    failures: int = 0  #: questions that ended in DNSTemporaryError


@dataclass(frozen=True, slots=True)
class _Negative:
    nxdomain: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Answer | _Negative
    expires: float  # clock.monotonic() deadline


class _Retry(Exception):
    """This server failed this question; try the next one."""


def _name_text(name: dns.name.Name) -> str:
    """A name from a response as our ``str`` form: lower-case octets, no root dot.

    Labels that are not UTF-8 or that contain a dot cannot round-trip through ``str`` names;
    they are given in dnspython's escaped presentation form (they will match nothing).
    """
    labels = name.labels[:-1] if name.is_absolute() else name.labels
    try:
        if any(b"." in label for label in labels):
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "dot in label")
        return b".".join(labels).lower().decode("utf-8")
    except UnicodeDecodeError:
        return name.to_text(omit_final_dot=True).lower()


def _records(rrtype: RRType, rrset: dns.rrset.RRset) -> tuple[Record, ...]:
    out: dict[Record, None] = {}  # ordered, de-duplicated in linear time
    for rd in rrset:
        value: Record
        if rrtype is RRType.A or rrtype is RRType.AAAA:
            value = ipaddress.ip_address(rd.address)
        elif rrtype is RRType.MX:
            value = MX(preference=rd.preference, exchange=_name_text(rd.exchange))
        elif rrtype is RRType.TXT:
            value = TXT(strings=tuple(rd.strings))
        elif rrtype is RRType.TLSA:
            value = TLSA(usage=rd.usage, selector=rd.selector, mtype=rd.mtype,
                         data=bytes(rd.cert))
        else:  # PTR, CNAME
            value = _name_text(rd.target)
        out[value] = None
    return tuple(out)


class DNSResolver:
    """A caching, single-flight stub resolver; see the module docstring.

    ``nameservers``: ``"HOST[:PORT]"`` strings or :class:`Nameserver` values; ``None`` reads
    ``resolv_conf``. ``timeout`` bounds one try, ``lifetime`` the whole question.
    """

    def __init__(
        self,
        nameservers: Sequence[str | Nameserver] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        timeout: float = limits.DNS_QUERY_TIMEOUT,
        lifetime: float = limits.DNS_LIFETIME,
        cache_size: int = limits.DNS_CACHE_MAX_ENTRIES,
        max_ttl: int = limits.DNS_CACHE_MAX_TTL,
        negative_ttl_max: int = limits.DNS_NEGATIVE_TTL_MAX,
        trust_ad: bool = False,
        resolv_conf: str = DEFAULT_RESOLV_CONF,
    ) -> None:
        if nameservers is None:
            self.nameservers = nameservers_from_resolv_conf(resolv_conf)
        else:
            self.nameservers = [
                ns if isinstance(ns, Nameserver) else parse_nameserver(ns) for ns in nameservers
            ]
        if not self.nameservers:
            raise ConfigError("no nameserver configured", key="resolver")
        if timeout <= 0 or lifetime <= 0 or cache_size < 0:
            raise ConfigError("timeouts must be positive and cache_size >= 0", key="resolver")
        self.clock = clock
        self.timeout = timeout
        self.lifetime = lifetime
        self.cache_size = cache_size
        self.max_ttl = max_ttl
        self.negative_ttl_max = negative_ttl_max
        self.trust_ad = trust_ad
        self.stats = DNSStats()
        self._cache: OrderedDict[tuple[str, RRType], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, RRType], asyncio.Task[Answer]] = {}

    # ----------------------------------------------------------------------- the cache ---

    def cache_clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        """Entries in the cache (expired ones included until touched)."""
        return len(self._cache)

    def _cached(self, key: tuple[str, RRType]) -> Answer | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        left = entry.expires - self.clock.monotonic()
        if left <= 0:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        self.stats.cache_hits += 1
        if isinstance(entry.value, _Negative):
            if entry.value.nxdomain:
                raise NXDomain(key[0])
            raise NoData(key[0], key[1])
        return replace(entry.value, ttl=math.ceil(left))

    def _store(self, key: tuple[str, RRType], value: Answer | _Negative, ttl: int) -> None:
        if ttl <= 0 or self.cache_size == 0:
            return  # RFC 1035 §3.2.1: TTL 0 means "only for the transaction in progress"
        self._cache[key] = _Entry(value=value, expires=self.clock.monotonic() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------------ resolving ---

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        qname = normalize_name(name)
        key = (qname, RRType(rrtype))
        self.stats.questions += 1
        cached = self._cached(key)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(*key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        else:
            self.stats.coalesced += 1
        # shield: one caller giving up (cancelled) must not cancel the others' query.
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, RRType], task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if every caller left

    async def _lookup(self, qname: str, rrtype: RRType) -> Answer:
        try:
            async with asyncio.timeout(self.lifetime):
                response = await self._ask(qname, rrtype)
        except TimeoutError:
            self.stats.failures += 1
            raise DNSTemporaryError(
                f"{qname} {rrtype}: no answer within {self.lifetime:g}s") from None
        except DNSTemporaryError:
            self.stats.failures += 1
            raise
        return self._interpret(qname, rrtype, response)

    async def _ask(self, qname: str, rrtype: RRType) -> dns.message.Message:
        """Send the question to each nameserver in turn until one gives a usable response."""
        query = dns.message.make_query(
            dns.name.Name(name_labels(qname)), _RDTYPE[rrtype], use_edns=0,
            payload=EDNS_PAYLOAD, flags=dns.flags.RD | (dns.flags.AD if self.trust_ad else 0),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lifetime
        pending = list(self.nameservers)
        reasons: list[str] = []
        while pending and loop.time() < deadline:
            for server in list(pending):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    return await self._try(query, server, min(self.timeout, remaining))
                except _Retry as exc:
                    reasons.append(f"{server}: {exc}")
                    if "timed out" not in str(exc):
                        pending.remove(server)  # a server that answered badly is not re-asked
        raise DNSTemporaryError(
            f"{qname} {rrtype}: " + ("; ".join(reasons[-3:]) or "no time left"))

    async def _try(
        self, query: dns.message.Message, server: Nameserver, timeout: float
    ) -> dns.message.Message:
        self.stats.queries_sent += 1
        try:
            response, used_tcp = await dns.asyncquery.udp_with_fallback(
                query, server.host, timeout=timeout, port=server.port,
                ignore_unexpected=True, ignore_errors=True,
            )
        except dns.exception.Timeout:
            self.stats.timeouts += 1
            raise _Retry("timed out") from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        if used_tcp:
            self.stats.tcp_fallbacks += 1
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            # SERVFAIL (RFC 1035 §4.1.1 "unable to process ... due to a problem with the name
            # server"), REFUSED, NOTIMP, FORMERR: this server cannot answer now.
            raise _Retry(dns.rcode.to_text(rcode))
        if response.flags & dns.flags.TC:
            raise _Retry("truncated over TCP")
        return response

    def _interpret(self, qname: str, rrtype: RRType, response: dns.message.Message) -> Answer:
        rdtype = _RDTYPE[rrtype]
        current = dns.name.Name(name_labels(qname))
        seen = {current}
        ttl = self.max_ttl
        answer_rrset: dns.rrset.RRset | None = None
        for _ in range(limits.DNS_MAX_CNAME_CHAIN + 1):
            try:
                answer_rrset = response.find_rrset(
                    response.answer, current, dns.rdataclass.IN, rdtype)
                ttl = min(ttl, answer_rrset.ttl)
                break
            except KeyError:
                pass
            if rrtype is RRType.CNAME:
                break
            try:
                cname = response.find_rrset(
                    response.answer, current, dns.rdataclass.IN, dns.rdatatype.CNAME)
            except KeyError:
                break
            ttl = min(ttl, cname.ttl)
            target = next(iter(cname)).target
            if target in seen:
                raise DNSPermanentError(f"{qname} {rrtype}: CNAME loop at {_name_text(current)}")
            seen.add(target)
            current = target
        else:
            raise DNSPermanentError(
                f"{qname} {rrtype}: CNAME chain longer than {limits.DNS_MAX_CNAME_CHAIN}")
        key = (qname, rrtype)
        nxdomain = response.rcode() == dns.rcode.NXDOMAIN
        if answer_rrset is not None and len(answer_rrset) > 0:
            if nxdomain:  # RFC 6604 §3: NXDOMAIN refers to the last name; data contradicts it
                self.stats.failures += 1
                raise DNSTemporaryError(f"{qname} {rrtype}: NXDOMAIN with an answer")
            answer = Answer(
                name=qname,
                rrtype=rrtype,
                records=_records(rrtype, answer_rrset),
                ttl=max(0, ttl),
                canonical_name=_name_text(current),
                authenticated=self.trust_ad and bool(response.flags & dns.flags.AD),
            )
            self._store(key, answer, answer.ttl)
            return answer
        if (not response.flags & dns.flags.AA
                and not any(r.rdtype == dns.rdatatype.SOA for r in response.authority)
                and any(r.rdtype == dns.rdatatype.NS for r in response.authority)):
            # A referral (RFC 1034 §4.3.1): RFC 2308 §2.2 tells it from NODATA by NS records
            # in the authority section without an SOA. The server is not recursive for this
            # name: that is no answer at all, never "no record".
            self.stats.failures += 1
            raise DNSTemporaryError(f"{qname} {rrtype}: referral from a non-recursive server")
        # RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM) of the SOA in the
        # authority section whose owner is an ancestor of (or is) the last name.
        negative_ttl = 0
        for rrset in response.authority:
            if (rrset.rdtype == dns.rdatatype.SOA and rrset.rdclass == dns.rdataclass.IN
                    and current.is_subdomain(rrset.name) and len(rrset) > 0):
                soa_minimum = next(iter(rrset)).minimum
                negative_ttl = min(ttl, rrset.ttl, soa_minimum, self.negative_ttl_max)
                break
        self._store(key, _Negative(nxdomain=nxdomain), negative_ttl)
        if nxdomain:
            raise NXDomain(qname)
        raise NoData(qname, rrtype)
