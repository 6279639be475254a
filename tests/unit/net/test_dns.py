"""DNSResolver against tiny DNS servers run by the test on 127.0.0.1.

The servers build their responses with dnspython's message API (an independent encoder); the
expected values are what those servers were told to say, and the RFC rules (RFC 2308 negative
TTL, RFC 1035 TC bit, RFC 1034 CNAME chains).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailmoat import limits
from mailmoat.clock import FixedClock
from mailmoat.errors import ConfigError, DNSPermanentError, DNSTemporaryError
from mailmoat.net.dns import (
    DNSResolver,
    Nameserver,
    nameservers_from_resolv_conf,
    parse_nameserver,
)
from mailmoat.resolver import MX, TLSA, TXT, NoData, NXDomain, Resolver, RRType

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[dns.message.Message, bool], Awaitable[dns.message.Message | None]]


class MiniDNS:
    """A DNS server on 127.0.0.1 (UDP and TCP, same port) answering through ``handler``.

    ``handler(query, over_tcp)`` returns the response, or None to stay silent.
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.queries: list[tuple[dns.message.Message, bool]] = []
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = loop.create_task(server._answer_udp(data, addr))
                server._tasks.add(task)
                task.add_done_callback(server._tasks.discard)

        for _ in range(20):  # find a port free for both UDP and TCP
            transport, _ = await loop.create_datagram_endpoint(
                _Proto, local_addr=(self.host, 0))
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._answer_tcp, self.host, port)
            except OSError:
                transport.close()
                continue
            self._udp, self.port = transport, port
            return
        raise RuntimeError("no free port")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:  # addr: v4 or v6
        query = dns.message.from_wire(data)
        self.queries.append((query, False))
        response = await self.handler(query, False)
        if response is not None and self._udp is not None:
            self._udp.sendto(response.to_wire(), addr)

    async def _answer_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length = int.from_bytes(await reader.readexactly(2), "big")
            query = dns.message.from_wire(await reader.readexactly(length))
            self.queries.append((query, True))
            response = await self.handler(query, True)
            if response is not None:
                wire = response.to_wire(max_size=65535)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[MiniDNS]]]:
    servers: list[MiniDNS] = []

    async def start(handler: Handler) -> MiniDNS:
        server = MiniDNS(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def rrset(name: str, ttl: int, rdtype: str, *rdatas: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas)


def soa(zone: str, ttl: int, minimum: int) -> dns.rrset.RRset:
    return rrset(zone, ttl, "SOA", f"ns.{zone} hostmaster.{zone} 1 7200 3600 1209600 {minimum}")


def qinfo(query: dns.message.Message) -> tuple[str, str]:
    q = query.question[0]
    return q.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(q.rdtype)


ZONE: dict[tuple[str, str], list[dns.rrset.RRset]] = {
    ("a.example", "A"): [rrset("a.example.", 300, "A", "192.0.2.1", "192.0.2.2")],
    ("a.example", "AAAA"): [rrset("a.example.", 300, "AAAA", "2001:db8::1")],
    ("a.example", "MX"): [rrset("a.example.", 300, "MX", "10 MX1.A.Example.", "20 .")],
    ("a.example", "TXT"): [rrset("a.example.", 300, "TXT", '"v=spf1 " "-all"', '"other"')],
    ("1.2.0.192.in-addr.arpa", "PTR"): [
        rrset("1.2.0.192.in-addr.arpa.", 300, "PTR", "Host.Example.")],
    ("_25._tcp.a.example", "TLSA"): [
        rrset("_25._tcp.a.example.", 300, "TLSA", "3 1 1 " + "ab" * 32)],
    ("www.a.example", "A"): [
        rrset("www.a.example.", 900, "CNAME", "b.a.example."),
        rrset("b.a.example.", 60, "CNAME", "c.a.example."),
        rrset("c.a.example.", 3600, "A", "192.0.2.3"),
    ],
}


def zone_handler(
    zone: dict[tuple[str, str], list[dns.rrset.RRset]],
    *, soa_ttl: int = 600, soa_min: int = 60, delay: float = 0.0,
) -> Handler:
    """An authoritative-style server for names under ``example``: NODATA for known names,
    NXDOMAIN otherwise, with the SOA of ``example`` in the authority section."""
    names = {name for name, _ in zone}

    async def handler(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        if delay:
            await asyncio.sleep(delay)
        response = dns.message.make_response(query)
        key = qinfo(query)
        if key in zone:
            response.answer.extend(zone[key])
        else:
            if key[0] not in names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(soa("example.", soa_ttl, soa_min))
        return response

    return handler


# ------------------------------------------------------------------------- configuration ---


@pytest.mark.parametrize(("text", "host", "port"), [
    ("192.0.2.1", "192.0.2.1", 53),
    ("192.0.2.1:5353", "192.0.2.1", 5353),
    ("::1", "::1", 53),
    ("[::1]:5353", "::1", 5353),
    ("[2001:DB8::1]", "2001:db8::1", 53),
    (" 127.0.0.1:53 ", "127.0.0.1", 53),
])
def test_parse_nameserver(text: str, host: str, port: int) -> None:
    assert parse_nameserver(text) == Nameserver(host=host, port=port)


@pytest.mark.parametrize("text", [
    "dns.example", "192.0.2.1:", "192.0.2.1:0", "192.0.2.1:65536", "192.0.2.1:x", "[::1",
    "[::1]x", "[::1]:", "", "300.1.1.1",
])
def test_parse_nameserver_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_nameserver(text)


def test_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver 192.0.2.53\n"
                    "nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n")
    assert nameservers_from_resolv_conf(str(conf)) == [
        Nameserver(host="192.0.2.53"), Nameserver(host="fe80::1")]
    # resolv.conf(5): with no nameserver line, the local machine's server is used.
    conf.write_text("search example\n")
    assert nameservers_from_resolv_conf(str(conf)) == [Nameserver(host="127.0.0.1")]
    assert nameservers_from_resolv_conf(str(tmp_path / "missing")) == [
        Nameserver(host="127.0.0.1")]
    assert DNSResolver(resolv_conf=str(conf)).nameservers == [Nameserver(host="127.0.0.1")]


def test_is_a_resolver() -> None:
    assert isinstance(DNSResolver(["127.0.0.1"]), Resolver)


# -------------------------------------------------------------------------- answers ---


async def test_typed_answers(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    server = await serve(zone_handler(ZONE))
    resolver = DNSResolver([server.address])
    a = await resolver.resolve("A.Example.", RRType.A)
    assert a.name == "a.example"
    assert a.canonical_name == "a.example"
    assert set(a.records) == {ipaddress.IPv4Address("192.0.2.1"),
                              ipaddress.IPv4Address("192.0.2.2")}
    assert a.ttl == 300
    assert a.authenticated is False
    aaaa = await resolver.resolve("a.example", RRType.AAAA)
    assert aaaa.records == (ipaddress.IPv6Address("2001:db8::1"),)
    mx = await resolver.resolve("a.example", RRType.MX)
    assert set(mx.records) == {MX(preference=10, exchange="mx1.a.example"),
                               MX(preference=20, exchange="")}  # RFC 7505 null MX: the root
    txt = await resolver.resolve("a.example", RRType.TXT)
    assert set(txt.records) == {TXT(strings=(b"v=spf1 ", b"-all")), TXT(strings=(b"other",))}
    ptr = await resolver.resolve("1.2.0.192.in-addr.arpa", RRType.PTR)
    assert ptr.records == ("host.example",)
    tlsa = await resolver.resolve("_25._tcp.a.example", RRType.TLSA)
    assert tlsa.records == (TLSA(usage=3, selector=1, mtype=1, data=b"\xab" * 32),)
    # The question on the wire: RD set, EDNS0, the name as asked in lower case, no AD.
    query, over_tcp = server.queries[0]
    assert not over_tcp
    assert query.flags & dns.flags.RD
    assert not query.flags & dns.flags.AD
    assert query.edns == 0
    assert query.question[0].name == dns.name.from_text("a.example.")


async def test_cname_chain_in_response(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    server = await serve(zone_handler(ZONE))
    resolver = DNSResolver([server.address])
    answer = await resolver.resolve("www.a.example", RRType.A)
    assert answer.canonical_name == "c.a.example"
    assert answer.records == (ipaddress.IPv4Address("192.0.2.3"),)
    assert answer.ttl == 60  # the smallest TTL of the chain
    assert resolver.stats.queries_sent == 1


async def test_cname_loop_and_long_chain(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    n = limits.DNS_MAX_CNAME_CHAIN
    chain = [rrset(f"c{i}.example.", 60, "CNAME", f"c{i + 1}.example.") for i in range(n + 1)]
    zone = {
        ("loop.example", "TXT"): [rrset("loop.example.", 60, "CNAME", "LOOP2.example."),
                                  rrset("loop2.example.", 60, "CNAME", "loop.example.")],
        ("c0.example", "A"): [*chain, rrset(f"c{n + 1}.example.", 60, "A", "192.0.2.9")],
        ("c1.example", "A"): [*chain[1:], rrset(f"c{n + 1}.example.", 60, "A", "192.0.2.9")],
    }
    server = await serve(zone_handler(zone))
    resolver = DNSResolver([server.address])
    with pytest.raises(DNSPermanentError, match="loop"):
        await resolver.resolve("loop.example", RRType.TXT)
    assert (await resolver.resolve("c1.example", RRType.A)).records == (
        ipaddress.IPv4Address("192.0.2.9"),)
    with pytest.raises(DNSPermanentError, match="chain"):
        await resolver.resolve("c0.example", RRType.A)


async def test_records_for_other_names_or_types_are_ignored(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    async def liar(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.answer.append(rrset("victim.example.", 300, "A", "203.0.113.66"))
        response.answer.append(rrset("asked.example.", 300, "TXT", '"not an A"'))
        return response

    server = await serve(liar)
    resolver = DNSResolver([server.address])
    with pytest.raises(NoData):
        await resolver.resolve("asked.example", RRType.A)


async def test_unaskable_name_sends_nothing(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    server = await serve(zone_handler(ZONE))
    resolver = DNSResolver([server.address])
    with pytest.raises(DNSPermanentError):
        await resolver.resolve("a" * 64 + ".example", RRType.A)
    assert server.queries == []
    assert resolver.stats.queries_sent == 0


# ---------------------------------------------------------------------------- caching ---


async def test_positive_cache_with_fixed_clock(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    server = await serve(zone_handler(ZONE))
    clock = FixedClock(mono=1000.0)
    resolver = DNSResolver([server.address], clock=clock)
    first = await resolver.resolve("a.example", RRType.A)
    clock.advance(100)
    second = await resolver.resolve("A.EXAMPLE", RRType.A)
    assert second.records == first.records
    assert second.ttl == 200  # what is left of 300
    assert (resolver.stats.queries_sent, resolver.stats.cache_hits) == (1, 1)
    clock.advance(200)  # expired exactly at 300 s
    await resolver.resolve("a.example", RRType.A)
    assert resolver.stats.queries_sent == 2
    assert len(server.queries) == 2


async def test_ttl_is_capped(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    zone = {("big.example", "A"): [rrset("big.example.", 2**31 - 1, "A", "192.0.2.1")],
            ("zero.example", "A"): [rrset("zero.example.", 0, "A", "192.0.2.1")]}
    server = await serve(zone_handler(zone))
    clock = FixedClock()
    resolver = DNSResolver([server.address], clock=clock, max_ttl=3600)
    assert (await resolver.resolve("big.example", RRType.A)).ttl == 3600
    clock.advance(3600)
    await resolver.resolve("big.example", RRType.A)
    assert resolver.stats.queries_sent == 2
    # RFC 1035 §3.2.1: TTL 0 is not cached.
    await resolver.resolve("zero.example", RRType.A)
    await resolver.resolve("zero.example", RRType.A)
    assert resolver.stats.queries_sent == 4


@pytest.mark.parametrize(("soa_ttl", "soa_min", "cap", "expected"), [
    (600, 60, limits.DNS_NEGATIVE_TTL_MAX, 60),      # RFC 2308 §5: min(SOA TTL, MINIMUM)
    (30, 600, limits.DNS_NEGATIVE_TTL_MAX, 30),
    (86400, 86400, limits.DNS_NEGATIVE_TTL_MAX, limits.DNS_NEGATIVE_TTL_MAX),  # capped
])
@pytest.mark.parametrize("kind", ["nxdomain", "nodata"])
async def test_negative_cache(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
    soa_ttl: int, soa_min: int, cap: int, expected: int, kind: str,
) -> None:
    server = await serve(zone_handler(ZONE, soa_ttl=soa_ttl, soa_min=soa_min))
    clock = FixedClock()
    resolver = DNSResolver([server.address], clock=clock, negative_ttl_max=cap)
    name, error = ("nope.example", NXDomain) if kind == "nxdomain" else ("a.example", NoData)
    with pytest.raises(error):
        await resolver.resolve(name, RRType.CNAME)
    clock.advance(expected - 1)
    with pytest.raises(error):
        await resolver.resolve(name, RRType.CNAME)
    assert (resolver.stats.queries_sent, resolver.stats.cache_hits) == (1, 1)
    clock.advance(1)
    with pytest.raises(error):
        await resolver.resolve(name, RRType.CNAME)
    assert resolver.stats.queries_sent == 2


async def test_negative_answer_without_soa_is_not_cached(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    async def bare_nxdomain(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    server = await serve(bare_nxdomain)
    resolver = DNSResolver([server.address], clock=FixedClock())
    for _ in range(2):
        with pytest.raises(NXDomain):
            await resolver.resolve("nope.example", RRType.A)
    assert resolver.stats.queries_sent == 2  # RFC 2308 §5: SHOULD NOT be cached


async def test_cache_is_bounded_lru(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    zone = {(f"n{i}.example", "A"): [rrset(f"n{i}.example.", 300, "A", "192.0.2.1")]
            for i in range(3)}
    server = await serve(zone_handler(zone))
    resolver = DNSResolver([server.address], clock=FixedClock(), cache_size=2)
    await resolver.resolve("n0.example", RRType.A)
    await resolver.resolve("n1.example", RRType.A)
    await resolver.resolve("n0.example", RRType.A)  # n0 is now the most recent
    await resolver.resolve("n2.example", RRType.A)  # evicts n1
    assert len(resolver) == 2
    sent = resolver.stats.queries_sent
    await resolver.resolve("n0.example", RRType.A)
    assert resolver.stats.queries_sent == sent
    await resolver.resolve("n1.example", RRType.A)
    assert resolver.stats.queries_sent == sent + 1


# ------------------------------------------------------------------------- single flight ---


async def test_single_flight(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    server = await serve(zone_handler(ZONE, delay=0.2))
    resolver = DNSResolver([server.address])
    answers = await asyncio.gather(*(resolver.resolve("a.example", RRType.A)
                                     for _ in range(50)))
    assert len(server.queries) == 1
    assert resolver.stats.queries_sent == 1
    assert resolver.stats.coalesced == 49
    assert all(a.records == answers[0].records for a in answers)
    # Different questions are not merged.
    await asyncio.gather(resolver.resolve("a.example", RRType.AAAA),
                         resolver.resolve("a.example", RRType.MX))
    assert len(server.queries) == 3


async def test_single_flight_shares_failures_and_survives_a_cancelled_caller(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    server = await serve(zone_handler(ZONE, delay=0.2))
    resolver = DNSResolver([server.address])
    first = asyncio.ensure_future(resolver.resolve("a.example", RRType.A))
    second = asyncio.ensure_future(resolver.resolve("a.example", RRType.A))
    await asyncio.sleep(0.05)
    first.cancel()
    answer = await second
    assert answer.records
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(server.queries) == 1
    results = await asyncio.gather(
        *(resolver.resolve("nope.example", RRType.A) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, NXDomain) for r in results)
    assert len(server.queries) == 2


# ------------------------------------------------------------------- failures, timeouts ---


async def test_timeout_against_a_silent_server() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        resolver = DNSResolver([f"127.0.0.1:{port}"], timeout=0.2, lifetime=0.5)
        start = time.monotonic()
        with pytest.raises(DNSTemporaryError):
            await resolver.resolve("a.example", RRType.TXT)
        elapsed = time.monotonic() - start
        assert 0.4 <= elapsed < 1.5
        assert resolver.stats.timeouts >= 2  # retried within the lifetime
        assert resolver.stats.failures == 1
        # Not cached: asking again asks again.
        sent = resolver.stats.queries_sent
        with pytest.raises(DNSTemporaryError):
            await resolver.resolve("a.example", RRType.TXT)
        assert resolver.stats.queries_sent > sent
    finally:
        silent.close()


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP])
async def test_server_failure_is_temporary_and_not_cached(
    serve: Callable[[Handler], Awaitable[MiniDNS]], rcode: dns.rcode.Rcode,
) -> None:
    async def failing(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        return response

    server = await serve(failing)
    resolver = DNSResolver([server.address], clock=FixedClock())
    for _ in range(2):
        with pytest.raises(DNSTemporaryError, match=dns.rcode.to_text(rcode)):
            await resolver.resolve("a.example", RRType.TXT)
    # A failing server is asked once per question, not hammered until the lifetime ends.
    assert len(server.queries) == 2


async def test_next_nameserver_after_servfail(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    async def servfail(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response

    bad = await serve(servfail)
    good = await serve(zone_handler(ZONE))
    resolver = DNSResolver([bad.address, good.address])
    answer = await resolver.resolve("a.example", RRType.AAAA)
    assert answer.records == (ipaddress.IPv6Address("2001:db8::1"),)
    assert (len(bad.queries), len(good.queries)) == (1, 1)


async def test_nxdomain_with_an_answer_is_refused(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    async def contradictory(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.answer.append(rrset("a.example.", 300, "A", "192.0.2.1"))
        return response

    server = await serve(contradictory)
    with pytest.raises(DNSTemporaryError):
        await DNSResolver([server.address]).resolve("a.example", RRType.A)


async def test_spoofed_reply_with_wrong_id_is_ignored(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    server: MiniDNS

    async def spoofing(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        forged = dns.message.make_response(query)
        forged.id = (query.id + 1) % 65536
        forged.answer.append(rrset("a.example.", 300, "A", "203.0.113.66"))
        # send the forgery first, then the genuine answer after a moment
        assert server._udp is not None
        server._udp.sendto(forged.to_wire(), ("127.0.0.1", last_port[0]))
        await asyncio.sleep(0.05)
        genuine = dns.message.make_response(query)
        genuine.answer.append(rrset("a.example.", 300, "A", "192.0.2.1"))
        return genuine

    last_port = [0]
    server = await serve(spoofing)
    original = server._answer_udp

    async def remember(data: bytes, addr: tuple[str, int]) -> None:
        last_port[0] = addr[1]
        await original(data, addr)

    server._answer_udp = remember  # type: ignore[method-assign]
    answer = await DNSResolver([server.address]).resolve("a.example", RRType.A)
    assert answer.records == (ipaddress.IPv4Address("192.0.2.1"),)


async def test_tcp_fallback_on_truncation(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    big = rrset("big.example.", 300, "TXT", *(f'"{i:04d} {"x" * 200}"' for i in range(20)))

    async def truncating(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        if over_tcp:
            response.answer.append(big)
        else:
            response.flags |= dns.flags.TC  # RFC 1035 §4.1.1: TC, ask again over TCP
        return response

    server = await serve(truncating)
    resolver = DNSResolver([server.address])
    answer = await resolver.resolve("big.example", RRType.TXT)
    assert len(answer.records) == 20
    assert {r.strings[0][:4] for r in answer.records if isinstance(r, TXT)} == {
        f"{i:04d}".encode() for i in range(20)}
    assert [over_tcp for _, over_tcp in server.queries] == [False, True]
    assert resolver.stats.tcp_fallbacks == 1


# ------------------------------------------------------------------------------ DNSSEC ---


async def test_ad_bit_only_when_trusted(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    async def validating(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AD  # a (claimed) validated answer
        response.answer.append(rrset("a.example.", 300, "A", "192.0.2.1"))
        return response

    server = await serve(validating)
    untrusting = DNSResolver([server.address])
    assert (await untrusting.resolve("a.example", RRType.A)).authenticated is False
    trusting = DNSResolver([server.address], trust_ad=True)
    assert (await trusting.resolve("a.example", RRType.A)).authenticated is True
    # RFC 6840 §5.7: the query sets AD to ask the validator to report it.
    assert server.queries[-1][0].flags & dns.flags.AD


async def test_ipv6_nameserver_with_port() -> None:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server = MiniDNS(zone_handler(ZONE), host="::1")
    await server.start()
    try:
        assert server.address.startswith("[::1]:")
        resolver = DNSResolver([server.address])
        assert resolver.nameservers == [Nameserver(host="::1", port=server.port)]
        answer = await resolver.resolve("a.example", RRType.AAAA)
        assert answer.records == (ipaddress.IPv6Address("2001:db8::1"),)
    finally:
        await server.stop()


async def test_referral_is_not_no_data(serve: Callable[[Handler], Awaitable[MiniDNS]]) -> None:
    # RFC 1034 §4.3.1: a non-recursive server answers with a referral (NS in authority, AA=0)
    async def referral(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        response.authority.append(rrset("example.", 300, "NS", "ns.example."))
        return response

    server = await serve(referral)
    with pytest.raises(DNSTemporaryError, match="referral"):
        await DNSResolver([server.address]).resolve("a.example", RRType.A)


async def test_rfc2308_nodata_without_soa_is_still_no_data(
    serve: Callable[[Handler], Awaitable[MiniDNS]],
) -> None:
    # RFC 2308 §2.2 "NODATA type 3": no SOA, no NS: NODATA (not cached, §5).
    async def bare(query: dns.message.Message, over_tcp: bool) -> dns.message.Message:
        return dns.message.make_response(query)

    server = await serve(bare)
    resolver = DNSResolver([server.address])
    for _ in range(2):
        with pytest.raises(NoData):
            await resolver.resolve("a.example", RRType.A)
    assert resolver.stats.queries_sent == 2
