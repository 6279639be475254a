"""Inbound end to end with a real DKIM signer (issue #6): Postfix + the OpenDKIM milter.

The sending side is a private Postfix (:class:`postfix_fixture.PostfixRelay`) whose smtpd hands
every message to two OpenDKIM 2.11 milters (:mod:`opendkim_milter_fixture`): one signs mail
From ``relay.test`` with ``rsa-sha256``, the other mail From ``good.test`` with
``ed25519-sha256`` (RFC 8463), both ``relaxed/relaxed``, with keys made for this run and
published in knotd. Postfix relays over mandatory STARTTLS to ``mailmoat serve`` (role mx),
which delivers into Dovecot LMTP Maildirs (the pieces of :mod:`inbound_e2e_fixture`).

The envelope sender is ``bounce@none.test``, whose SPF (``-all``, 192.0.2.30 only) fails for
127.0.0.1: DMARC (RFC 7489 §4.2) can only pass through the OpenDKIM signature, and both From
domains publish ``p=reject``: a signature we could not verify would be a 550, not a delivery.

Expectations come from the RFCs and the peers, never from our own output:

* the delivered copy carries exactly one DKIM-Signature, made by OpenDKIM (``a=`` the
  configured algorithm, ``c=relaxed/relaxed``, our ``d=``/``s=``), which dkimpy (an
  independent verifier) verifies through the same DNS; our Authentication-Results (RFC 8601,
  parsed by ``authres``) says spf=fail, dkim=pass ``header.d=<that domain>``, dmarc=pass;
* the same signed message with one body byte changed after signing (RFC 6376 §3.7: the body
  hash no longer matches) and resent by swaks is dkim=fail (dkimpy agrees): delivered when
  SPF passes for an aligned MAIL FROM (DMARC passes through SPF), refused ``550 5.7.1`` when
  it does not (DMARC fails under ``p=reject``, RFC 7489 §6.6.4).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import authres  # type: ignore[import-untyped]
import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dovecot_fixture import Dovecot
from inbound_e2e_fixture import (
    GATEWAY_HOST,
    SOURCES,
    Keys,
    Lab,
    dkimpy_dns,
    header_fields,
    maildir_files,
    pem,
    serve_log,
    start_gateway,
    swaks,
    wait_for,
    write_config,
    zones,
)
from knot_fixture import KnotServer, start_knot
from opendkim_milter_fixture import OpenDKIMMilter, start_opendkim
from postfix_fixture import PostfixRelay
from server_fixture import RunningServer

from conftest import missing, require_peer

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.peer("swaks"), pytest.mark.peer("dovecot"),
              pytest.mark.peer("postfix"), pytest.mark.peer("opendkim"),
              pytest.mark.timeout(120)]

RCPT = f"bob@{GATEWAY_HOST}"
#: Envelope sender whose SPF fails from 127.0.0.1 (none.test: "v=spf1 ip4:192.0.2.30 -all").
BOUNCE = "bounce@none.test"
#: algorithm -> (DKIM key name, From address); each milter signs only its own From domain.
SIGNERS = {
    "rsa-sha256": ("odk._domainkey.relay.test", "alice@relay.test"),
    "ed25519-sha256": ("odked._domainkey.good.test", "alice@good.test"),
}


@dataclass
class Rig:
    knot: KnotServer
    dovecot: Dovecot
    gateway: RunningServer
    relay: PostfixRelay
    milters: dict[str, OpenDKIMMilter]
    tmp: Path
    #: algorithm -> the delivered copy of the message signed by that milter (CRLF)
    signed: dict[str, bytes] = field(default_factory=dict)

    def maildir(self) -> Path:
        return self.dovecot.base / "mail" / "bob"

    def evidence(self) -> str:
        return (f"--- postfix maillog (tail) ---\n{self.relay.log()[-3000:]}\n"
                f"--- serve.log (tail) ---\n{serve_log(self.gateway.config)[-4000:]}\n"
                f"--- dovecot.log ---\n{self.dovecot.log()[-1500:]}")


def _dovecot(base: Path) -> Dovecot:
    program = require_peer("dovecot")
    if not Path("/usr/lib/dovecot/lmtp").exists():
        require_peer("dovecot-lmtpd-is-not-installed")
    server = Dovecot(program=program, base=base)
    server.start()
    return server


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """knotd and the two milters first; then, concurrently, Dovecot -> the gateway -> the
    Postfix relay using the milters."""
    knotd = require_peer("knotd")
    require_peer("swaks")
    postfix = require_peer("postfix")
    opendkim = require_peer("opendkim")
    if os.geteuid() != 0:
        missing("a private Postfix instance needs root")
    tmp = tmp_path_factory.mktemp("opendkim-milter")

    def rsa_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    keys = Keys({SIGNERS["rsa-sha256"][0]: rsa_key(),
                 SIGNERS["ed25519-sha256"][0]: ed25519.Ed25519PrivateKey.generate()})
    with contextlib.ExitStack() as stack:
        knot = stack.enter_context(start_knot(zones(keys), knotd=knotd))
        milters = {alg: stack.enter_context(start_opendkim(
            {name: pem(keys[name])}, opendkim=opendkim, algorithm=alg))
            for alg, (name, _) in SIGNERS.items()}
        lab = stack.enter_context(Lab())

        def stop(server: RunningServer | Dovecot | PostfixRelay) -> object:
            return server.stop()

        def relay() -> PostfixRelay:
            port = lab.get("gateway").port("starttls", "mx")
            server = PostfixRelay(postfix, relayhost_port=port,
                                  milters=[m.socket for m in milters.values()])
            server.start()
            return server

        lab.start("dovecot", lambda: _dovecot(tmp / "dovecot"), stop)
        lab.start("gateway", lambda: start_gateway(write_config(
            tmp / "gw", dns=knot.address,
            destination=f"lmtp://127.0.0.1:{lab.get('dovecot').port}",
            policy='quarantine_folder = ""')), stop)
        lab.start("relay", relay, stop)
        yield Rig(knot=knot, dovecot=lab.get("dovecot"), gateway=lab.get("gateway"),
                  relay=lab.get("relay"), milters=milters, tmp=tmp)


# --- helpers ----------------------------------------------------------------------------------
def message(from_addr: str, *, subject: str) -> bytes:
    domain = from_addr.rpartition("@")[2]
    mid = f"<{time.monotonic_ns()}.{os.getpid()}@{domain}>"
    return (f"From: Alice <{from_addr}>\r\nTo: Bob <{RCPT}>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: {mid}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Hello Bob,\r\nthis message was signed by the OpenDKIM milter.\r\n").encode()


def message_id(msg: bytes) -> bytes:
    found = re.search(rb"^Message-ID: (<[^>]+>)\r?$", msg, re.M | re.I)
    assert found, msg[:300]
    return found[1]


def find(rig: Rig, *needles: bytes, timeout: float = 20.0) -> bytes:
    """The one message in bob's inbox containing every needle (CRLF line ends restored)."""
    def match() -> list[bytes]:
        return [m for m in maildir_files(rig.maildir()) if all(n in m for n in needles)]

    found = wait_for(match, timeout=timeout)
    assert len(found) == 1, f"{len(found)} messages with {needles}\n{rig.evidence()}"
    return found[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def our_results(msg: bytes) -> authres.AuthenticationResultsHeader:
    ours = [v for n, v in header_fields(msg) if n.lower() == "authentication-results"
            and v.split(";", 1)[0].strip().lower() == GATEWAY_HOST]
    assert len(ours) == 1, ours
    return authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {ours[0]}")


def results(ar: authres.AuthenticationResultsHeader, method: str) -> list[str]:
    return [r.result for r in ar.results if r.method == method]


def prop(ar: authres.AuthenticationResultsHeader, method: str, ptype: str, name: str
         ) -> list[str]:
    return [p.value for r in ar.results if r.method == method for p in r.properties
            if p.type == ptype and p.name == name]


def dkim_tags(msg: bytes) -> list[dict[str, str]]:
    """The tags of every DKIM-Signature field (RFC 6376 §3.2 tag-list, FWS removed)."""
    out = []
    for name, value in header_fields(msg):
        if name.lower() == "dkim-signature":
            tags = (t.partition("=") for t in value.split(";") if t.strip())
            out.append({k.strip(): re.sub(r"\s+", "", v) for k, _, v in tags})
    return out


def bounced(relay: PostfixRelay, mid: bytes) -> bool:
    """Postfix gave up on the message (our 5xx): "QUEUEID: message-id=<...>" then
    "QUEUEID: to=<...>, ... status=bounced" in its log; no need to wait any longer."""
    log = relay.log()
    queued = re.search(rf"(\w+): message-id={re.escape(mid.decode())}", log)
    return queued is not None and re.search(
        rf"{queued[1]}: to=.*status=bounced", log) is not None


def through_milter(rig: Rig, algorithm: str) -> bytes:
    """Send one message through Postfix (and so its milters); the copy Dovecot stored."""
    if algorithm not in rig.signed:
        _, from_addr = SIGNERS[algorithm]
        msg = message(from_addr, subject=f"signed by opendkim {algorithm}")
        with smtplib.SMTP("127.0.0.1", rig.relay.port, timeout=30) as client:
            client.ehlo("client.relay.test")
            client.sendmail(BOUNCE, [RCPT], msg)
        mid = message_id(msg)
        wait_for(lambda: any(mid in m for m in maildir_files(rig.maildir()))
                 or bounced(rig.relay, mid), timeout=30)
        rig.signed[algorithm] = find(rig, mid, timeout=1)
    return rig.signed[algorithm]


def tamper(msg: bytes) -> bytes:
    """The message as Postfix sent it to us (the header fields from OpenDKIM's
    DKIM-Signature down: what our gateway and Dovecot prepended is dropped) with one body
    byte changed, "Bob" -> "Rob"."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    assert sep, msg[:300]
    assert body.startswith(b"Hello Bob,"), body[:100]
    fields = re.split(rb"\r\n(?![ \t])", head)
    first = next(i for i, f in enumerate(fields) if f.lower().startswith(b"dkim-signature:"))
    return b"\r\n".join(fields[first:]) + sep + b"Hello Rob," + body[len(b"Hello Bob,"):]


# --- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", list(SIGNERS))
def test_opendkim_milter_signature_passes(rig: Rig, algorithm: str) -> None:
    """Signed by the OpenDKIM milter inside Postfix, relayed over STARTTLS: dkim=pass for
    OpenDKIM's d=, and DMARC passes through it alone (SPF fails for the envelope sender)."""
    name, from_addr = SIGNERS[algorithm]
    selector, _, domain = name.partition("._domainkey.")
    out = through_milter(rig, algorithm)
    sigs = dkim_tags(out)
    assert len(sigs) == 1, (sigs, rig.evidence())
    sig = sigs[0]
    assert (sig["a"], sig["c"], sig["d"], sig["s"]) == (
        algorithm, "relaxed/relaxed", domain, selector), sig
    # Postfix relayed it over TLS to our port (its own log of the hop).
    port = rig.gateway.port("starttls", "mx")
    assert [t for t in rig.relay.tls_log() if t[0] == port], rig.relay.log()[-3000:]
    ar = our_results(out)
    assert results(ar, "spf") == ["fail"], ar
    assert prop(ar, "spf", "smtp", "mailfrom") in ([BOUNCE], ["none.test"]), ar
    assert results(ar, "dkim") == ["pass"], ar
    assert prop(ar, "dkim", "header", "d") == [domain], ar
    assert prop(ar, "dkim", "header", "s") in ([selector], []), ar
    assert results(ar, "dmarc") == ["pass"], ar
    assert prop(ar, "dmarc", "header", "from") == [from_addr.rpartition("@")[2]], ar
    # dkimpy, an independent verifier, through the same DNS.
    assert dkim.verify(out, dnsfunc=dkimpy_dns(rig.knot.address))


@pytest.mark.parametrize("algorithm", list(SIGNERS))
def test_opendkim_signature_broken_after_signing_fails(rig: Rig, algorithm: str) -> None:
    """The milter-signed message with one body byte changed, resent by swaks from 127.0.0.1
    with the From domain as the envelope sender (SPF passes): dkim=fail for OpenDKIM's d=,
    DMARC passes through SPF; dkimpy also rejects the altered copy."""
    name, from_addr = SIGNERS[algorithm]
    domain = name.partition("._domainkey.")[2]
    lookup = dkimpy_dns(rig.knot.address)
    original = through_milter(rig, algorithm)
    assert dkim.verify(original, dnsfunc=lookup)  # the control: intact before the change
    altered = tamper(original)
    assert not dkim.verify(altered, dnsfunc=lookup)
    result = swaks(rig.gateway.port("starttls", "mx"), altered, mail_from=from_addr,
                   rcpt=RCPT, source=SOURCES["legit"], helo="client.relay.test", tmp=rig.tmp)
    assert result.queued_id, f"{result.final}\n{result.transcript[-2000:]}\n{rig.evidence()}"
    out = find(rig, message_id(original), b"Hello Rob,")
    ar = our_results(out)
    assert results(ar, "spf") == ["pass"], ar
    assert results(ar, "dkim") == ["fail"], ar
    assert prop(ar, "dkim", "header", "d") == [domain], ar
    assert results(ar, "dmarc") == ["pass"], ar


def test_opendkim_signature_broken_after_signing_refused_under_p_reject(rig: Rig) -> None:
    """The altered rsa-sha256 message again, with the non-aligned envelope sender
    (SPF fails): neither SPF nor DKIM authenticates relay.test, whose DMARC policy is
    p=reject: refused after the dot with 550 5.7.1 (RFC 7489 §6.6.4, §10.3)."""
    altered = tamper(through_milter(rig, "rsa-sha256"))
    result = swaks(rig.gateway.port("starttls", "mx"), altered, mail_from=BOUNCE,
                   rcpt=RCPT, source=SOURCES["legit"], helo="client.relay.test", tmp=rig.tmp)
    code, text = result.final
    assert (code, text[:5]) == (550, "5.7.1"), result.transcript[-2000:]
    assert result.queued_id is None
