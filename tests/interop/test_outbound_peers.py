"""Outbound delivery (gateway.outbound) with real parts on loopback.

* DNS: knotd serves ``plain.test`` (unsigned) and ``example.test`` (DNSSEC-signed by knot);
  unbound validates ``example.test`` with knot's DNSKEYs as trust anchors
  (:mod:`unbound_fixture`); our resolver is
  ``DNSResolver([unbound], trust_ad=True)``. Every MX host resolves to 127.0.0.1; the
  outbound ``route`` sends each MX name to its receiver's port (the TLSA name keeps 25).
* Receivers: three private Postfix ``smtpd`` instances - STARTTLS with a certificate for
  the MX names (trustme CA), no STARTTLS at all, STARTTLS with a certificate for another
  name - and our own gateway (``mailmoat serve``), which advertises REQUIRETLS after
  STARTTLS (Postfix does not implement RFC 8689).
* MTA-STS policies come from a local HTTPS server under the same trustme CA.

Expected behaviour (RFCs, not our output): opportunistic TLS delivers to every receiver
(RFC 7435); MTA-STS ``enforce`` refuses the wrong-name and the no-STARTTLS receivers and
delivers to the good one (RFC 8461 §5), ``testing`` delivers and reports; DANE refuses a
receiver whose key matches no TLSA record and accepts a DANE-EE match whatever the name
(RFC 7672 §3.1.1); REQUIRETLS is refused by Postfix (it does not advertise it) and accepted
by a receiver that does, which records REQUIRETLS in its envelope (RFC 8689 §4).
Each receiver's own mailbox/spool is the oracle for "delivered" and "not delivered".
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from https_fixture import StaticHTTPS, mta_sts_files, serve_https
from server_fixture import HOSTNAME, RunningServer, make_data_dir, start_server
from unbound_fixture import spki_sha256, start_validating

from conftest import missing, require_peer
from mailmoat.auth.mtasts import PolicyCache
from mailmoat.auth.tlspolicy import PolicyKind, ResultType
from mailmoat.clock import SYSTEM_CLOCK
from mailmoat.gateway.outbound import DomainDelivery, Outbound
from mailmoat.net.dns import DNSResolver
from mailmoat.net.fetch import Fetcher
from mailmoat.net.mtasts import MTASTSClient
from mailmoat.net.smtp_client import Timeouts

trustme = pytest.importorskip("trustme")
pytestmark = pytest.mark.timeout(240)

SIGNED = "example.test"
UNSIGNED = "plain.test"
POSTFIX_RCPT = "user@example.net"  # the Postfix fixture delivers example.net to a Maildir
GATEWAY_RCPT = f"bob@{HOSTNAME}"


# --- receivers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@dataclass
class Receivers:
    good: Any  # PostfixSMTPD
    wrong: Any
    clear: Any
    gateway: RunningServer
    good_pem: bytes
    wrong_pem: bytes


def _postfix(program: str, leaf: Any, *, starttls: bool) -> Any:
    import postfix_smtpd_fixture
    from postfix_smtpd_fixture import PostfixSMTPD

    server = PostfixSMTPD(program, cert_pem=leaf.private_key_and_cert_chain_pem.bytes(),
                          key_pem=leaf.private_key_pem.bytes())
    main_cf = postfix_smtpd_fixture.MAIN_CF
    if not starttls:
        main_cf = main_cf.replace("smtpd_tls_security_level = may",
                                  "smtpd_tls_security_level = none")
        assert main_cf != postfix_smtpd_fixture.MAIN_CF
    with mock.patch.object(postfix_smtpd_fixture, "MAIN_CF", main_cf):
        server.start()
    return server


@pytest.fixture(scope="module")
def receivers(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    program = require_peer("postfix")
    if os.geteuid() != 0:
        missing("a private Postfix instance needs root")
    good_leaf = ca.issue_cert(f"good.{UNSIGNED}", f"good.{SIGNED}")
    wrong_leaf = ca.issue_cert("somewhere-else.invalid")
    started: list[Any] = []
    gateway: RunningServer | None = None
    try:
        for leaf, starttls in ((good_leaf, True), (wrong_leaf, True), (good_leaf, False)):
            started.append(_postfix(program, leaf, starttls=starttls))
        config = make_data_dir(tmp_path_factory.mktemp("gw"), listeners=(("starttls", "mx"),))
        gateway = start_server(config)
        yield Receivers(good=started[0], wrong=started[1], clear=started[2], gateway=gateway,
                        good_pem=good_leaf.cert_chain_pems[0].bytes(),
                        wrong_pem=wrong_leaf.cert_chain_pems[0].bytes())
    finally:
        if gateway is not None:
            gateway.stop()
        for server in started:
            server.stop()


# --- MTA-STS policies over HTTPS ---------------------------------------------------------------
ENFORCE_POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: *.plain.test\r\nmax_age: 86400\r\n"
TESTING_POLICY = (b"version: STSv1\r\nmode: testing\r\nmx: wrong.plain.test\r\n"
                  b"max_age: 86400\r\n")
POLICIES = {f"mta-sts.sts.{UNSIGNED}": ENFORCE_POLICY,
            f"mta-sts.ststest.{UNSIGNED}": TESTING_POLICY}


@pytest.fixture(scope="module")
def https(ca: Any) -> Iterator[int]:
    server = StaticHTTPS(("127.0.0.1", 0), mta_sts_files(POLICIES))
    with serve_https(server, ca, POLICIES) as port:
        yield port


# --- DNS ------------------------------------------------------------------------------------------
def _head(origin: str) -> str:
    return (f"$ORIGIN {origin}.\n$TTL 300\n"
            f"@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n"
            f"@ IN NS ns.{origin}.\nns IN A 127.0.0.1\n"
            + "".join(f"{h} IN A 127.0.0.1\n" for h in ("good", "wrong", "clear", "wrongok",
                                                         "gw")))


def _zones(receivers: Receivers) -> dict[str, str]:
    good = spki_sha256(receivers.good_pem)
    wrong = spki_sha256(receivers.wrong_pem)
    gateway = spki_sha256(receivers.gateway.cert.read_bytes())
    plain = _head(UNSIGNED) + """\
to-good IN MX 10 good
to-wrong IN MX 10 wrong
to-clear IN MX 10 clear
sts IN MX 10 wrong
sts IN MX 20 clear
sts IN MX 30 good
_mta-sts.sts IN TXT "v=STSv1; id=20261128"
ststest IN MX 10 wrong
_mta-sts.ststest IN TXT "v=STSv1; id=1"
"""
    signed = _head(SIGNED) + f"""\
dane IN MX 10 wrong
dane IN MX 20 good
_25._tcp.good IN TLSA 3 1 1 {good}
_25._tcp.wrong IN TLSA 3 1 1 {good}
daneee IN MX 10 wrongok
_25._tcp.wrongok IN TLSA 3 1 1 {wrong}
daneclear IN MX 10 clear
_25._tcp.clear IN TLSA 3 1 1 {good}
rtls IN MX 10 gw
_25._tcp.gw IN TLSA 3 1 1 {gateway}
rtlsno IN MX 10 good
"""
    return {UNSIGNED: plain, SIGNED: signed}


@pytest.fixture(scope="module")
def resolver_port(receivers: Receivers) -> Iterator[int]:
    with start_validating(_zones(receivers), signed=[SIGNED]) as (_knot, unbound):
        yield unbound.port


@pytest.fixture
async def outbound(resolver_port: int, receivers: Receivers, https: int,
                   cafile: Path) -> AsyncIterator[Outbound]:
    ports = {"good": receivers.good.port, "wrong": receivers.wrong.port,
             "wrongok": receivers.wrong.port, "clear": receivers.clear.port,
             "gw": receivers.gateway.port("starttls", "mx")}

    def route(host: str, address: str, port: int) -> tuple[str, int]:
        assert address == "127.0.0.1"  # from knot, through unbound
        assert port == 25
        return address, ports[host.split(".", maxsplit=1)[0]]

    resolver = DNSResolver([f"127.0.0.1:{resolver_port}"], trust_ad=True)
    fetcher = Fetcher(cafile=cafile, timeout=10,
                      addresses=dict.fromkeys(POLICIES, ("127.0.0.1", https)))
    mtasts = MTASTSClient(resolver, fetcher, PolicyCache(SYSTEM_CLOCK))
    yield Outbound(resolver, mtasts=mtasts, route=route, cafile=cafile, helo="out.test",
                   timeouts=Timeouts.uniform(20), rng=random.Random(5))
    await fetcher.aclose()


def _message(tag: str, rcpt: str = POSTFIX_RCPT) -> bytes:
    return (f"From: a@sender.test\r\nTo: {rcpt}\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@sender.test>\r\n\r\nbody of {tag}\r\n").encode()


async def _deliver(outbound: Outbound, domain: str, tag: str, *, rcpt: str = POSTFIX_RCPT,
                   requiretls: bool = False) -> DomainDelivery:
    return await outbound.deliver(_message(tag, rcpt), domain=domain,
                                  mail_from="a@sender.test", rcpt_to=[rcpt],
                                  requiretls=requiretls)


def _maildir_has(server: Any, tag: str, timeout: float = 20.0) -> bool:
    """Postfix's own Maildir holds a message with ``tag`` (waits for local delivery)."""
    new = server.maildir / "new"
    needle = f"Subject: {tag}\n".encode()
    deadline = time.monotonic() + timeout
    while True:
        if new.exists():
            for path in new.iterdir():
                with contextlib.suppress(OSError):
                    if needle in path.read_bytes().replace(b"\r\n", b"\n"):
                        return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _postfix_saw_mail_from(server: Any, tag: str) -> bool:
    """Did the message reach this Postfix's Maildir? A session refused by the policy ended
    before MAIL FROM, so nothing of it can be there (a short wait covers local delivery)."""
    return _maildir_has(server, tag, timeout=0.5)


# --- tests -------------------------------------------------------------------------------------
async def test_dnssec_self_check(outbound: Outbound) -> None:
    """unbound validates example.test: the start-up check finds authenticated data."""
    assert await outbound.check_dnssec(f"good.{SIGNED}") is True


@pytest.mark.parametrize("receiver", ["good", "wrong", "clear"])
async def test_opportunistic_delivers_to_every_receiver(outbound: Outbound,
                                                        receivers: Receivers,
                                                        receiver: str) -> None:
    tag = f"opportunistic-{receiver}"
    result = await _deliver(outbound, f"to-{receiver}.{UNSIGNED}", tag)
    assert result.status == "delivered", result.reason
    attempt = result.attempts[-1]
    assert attempt.policy is PolicyKind.OPPORTUNISTIC
    assert (attempt.tls_version is None) == (receiver == "clear")
    assert attempt.verified is False or receiver == "clear"
    assert _maildir_has(getattr(receivers, receiver), tag)


async def test_mta_sts_enforce(outbound: Outbound, receivers: Receivers) -> None:
    """MX order wrong(10), clear(20), good(30): the first two fail the policy."""
    tag = "sts-enforce"
    result = await _deliver(outbound, f"sts.{UNSIGNED}", tag)
    assert result.status == "delivered", result.reason
    wrong, clear, good = result.attempts
    assert (wrong.mx, wrong.outcome) == (f"wrong.{UNSIGNED}", "failed")
    assert wrong.failure is ResultType.CERTIFICATE_HOST_MISMATCH
    assert clear.failure is ResultType.STARTTLS_NOT_SUPPORTED
    assert good.policy is PolicyKind.MTA_STS_ENFORCE
    assert good.verified is True
    assert good.tls_version in ("TLSv1.2", "TLSv1.3")
    assert _maildir_has(receivers.good, tag)
    assert not _postfix_saw_mail_from(receivers.wrong, tag)
    assert not _postfix_saw_mail_from(receivers.clear, tag)


async def test_mta_sts_testing_delivers_and_reports(outbound: Outbound,
                                                    receivers: Receivers) -> None:
    tag = "sts-testing"
    result = await _deliver(outbound, f"ststest.{UNSIGNED}", tag)
    assert result.status == "delivered", result.reason
    attempt = result.attempts[-1]
    assert attempt.policy is PolicyKind.MTA_STS_TESTING
    assert attempt.failure is ResultType.CERTIFICATE_HOST_MISMATCH
    assert _maildir_has(receivers.wrong, tag)


async def test_dane_refuses_mismatch_and_delivers_to_match(outbound: Outbound,
                                                           receivers: Receivers) -> None:
    tag = "dane"
    result = await _deliver(outbound, f"dane.{SIGNED}", tag)
    assert result.status == "delivered", result.reason
    wrong, good = result.attempts
    assert wrong.policy is PolicyKind.DANE
    assert wrong.outcome == "refused"
    assert good.policy is PolicyKind.DANE
    assert good.verified is True
    assert _maildir_has(receivers.good, tag)
    assert not _postfix_saw_mail_from(receivers.wrong, tag)


async def test_dane_ee_ignores_the_certificate_name(outbound: Outbound,
                                                    receivers: Receivers) -> None:
    """RFC 7672 §3.1.1: with DANE-EE only the key matters - the wrong-name certificate is
    accepted because its key is the one published."""
    tag = "dane-ee"
    result = await _deliver(outbound, f"daneee.{SIGNED}", tag)
    assert result.status == "delivered", result.reason
    assert result.attempts[-1].policy is PolicyKind.DANE
    assert _maildir_has(receivers.wrong, tag)


async def test_dane_without_starttls_defers(outbound: Outbound, receivers: Receivers) -> None:
    tag = "dane-clear"
    result = await _deliver(outbound, f"daneclear.{SIGNED}", tag)
    assert result.status == "deferred"
    assert result.attempts[-1].failure is ResultType.STARTTLS_NOT_SUPPORTED
    assert not _postfix_saw_mail_from(receivers.clear, tag)


async def test_requiretls_refused_by_postfix(outbound: Outbound, receivers: Receivers) -> None:
    tag = "requiretls-postfix"
    result = await _deliver(outbound, f"rtlsno.{SIGNED}", tag, requiretls=True)
    assert result.status == "bounced"
    assert result.reply is not None
    assert result.reply.status == "5.7.30"
    assert result.attempts[-1].failure is ResultType.REQUIRETLS_NOT_SUPPORTED
    assert not _postfix_saw_mail_from(receivers.good, tag)


async def test_requiretls_accepted_by_a_server_advertising_it(outbound: Outbound,
                                                              receivers: Receivers) -> None:
    tag = "requiretls-gateway"
    result = await _deliver(outbound, f"rtls.{SIGNED}", tag, rcpt=GATEWAY_RCPT,
                            requiretls=True)
    assert result.status == "delivered", result.reason
    assert result.attempts[-1].requiretls
    assert result.result is not None
    queue_id = result.result.queue_id
    assert queue_id is not None
    assert "REQUIRETLS" in result.result.session.capabilities
    spooled = receivers.gateway.spool().get(queue_id)
    assert spooled.envelope.requiretls  # the receiver saw MAIL FROM ... REQUIRETLS


async def test_dane_disabled_safely_without_authenticated_data(
    outbound: Outbound, receivers: Receivers,
) -> None:
    """A resolver that gives no AD bit (here: the answer for the unsigned zone) switches DANE
    off at start-up; delivery goes on (opportunistic) instead of stalling the queue."""
    assert await outbound.check_dnssec(f"good.{UNSIGNED}") is False
    assert "DANE disabled" in outbound.dane_note
    tag = "dane-off"
    result = await _deliver(outbound, f"dane.{SIGNED}", tag)
    assert result.status == "delivered", result.reason
    assert result.attempts[-1].policy is PolicyKind.OPPORTUNISTIC
    assert _maildir_has(receivers.wrong, tag)  # the first MX, no longer refused by DANE
