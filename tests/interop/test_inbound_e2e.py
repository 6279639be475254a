"""The inbound gateway end to end (issue #6): the real ``mailmoat serve`` between real peers.

Knot DNS serves the sending domains (SPF, RSA and Ed25519 DKIM keys made for this run, DMARC
p=none / p=quarantine / p=reject); swaks (STARTTLS) and Postfix (relaying over mandatory
STARTTLS) send; Dovecot LMTP stores into Maildirs, Postfix ``smtpd`` is the SMTP downstream,
and a Maildir destination files quarantined mail into ``.Junk``. See
``inbound_e2e_fixture.py`` for the pieces.

Expectations come from the RFCs and from the peers, never from our own output:

* an aligned, authenticated message (RFC 7489 §3.1, §4.2) is delivered with our
  Authentication-Results (RFC 8601) saying spf/dkim/dmarc=pass, parsed with the independent
  ``authres`` package; DKIM signatures still verify with dkimpy after our edits; our Received
  field (RFC 5321 §4.4) names the TLS version and cipher that *swaks* (or *Postfix*, in its
  own log) says it negotiated;
* a spoofed From of a p=reject domain from an IP its SPF does not list is refused at the end
  of DATA, ``550 5.7.1`` (RFC 7489 §6.6.4 / §10.3), and nothing is delivered or spooled;
* a failing p=quarantine message is delivered marked ``X-Mailmoat-Quarantine`` (LMTP) or
  into the ``.Junk`` Maildir++ folder (maildir destination);
* a forwarded message whose ARC chain (RFC 8617) is sealed by a trusted sealer overrides the
  original p=reject failure (RFC 8617 §7.2, RFC 7489 §7.2 local policy); the same chain
  sealed by an untrusted domain is refused;
* Authentication-Results fields claiming our authserv-id are removed (RFC 8601 §5), others
  kept;
* OpenDKIM's rsa-sha1 signature is not believed (RFC 8301 §3.1) while dkimpy shows it intact;
* every accepted message has one verdict row (TLS at receipt, results); a refused one has a
  row with disposition "reject" and nothing else (DMARC aggregate reports count it)
  ones;
* the verdict and the delivery rows are committed before the 250 (the contract);
* a connection reused after a refusal and an RSET gets results for its own transaction only;
  BDAT (RFC 3030) chunks cut mid-header are verified like DATA; a 3 MB body streams through
  DKIM; a header section over 1 MiB is refused with 552 5.3.4 and not kept;
* a downstream outage (LMTP port closed) only delays delivery: the message stays spooled and
  queued, and arrives once Dovecot is up.

Runtime: the module fixture starts knotd, then Dovecot, four ``mailmoat serve`` instances
and two Postfix instances concurrently (:class:`inbound_e2e_fixture.Lab`), so running one
test starts them all.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import itertools
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import authres  # type: ignore[import-untyped]
import dkim
import dovecot_fixture
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dovecot_fixture import Dovecot
from inbound_e2e_fixture import (
    GATEWAY_HOST,
    SOURCES,
    Keys,
    Lab,
    SwaksResult,
    dkimpy_dns,
    header_fields,
    maildir_files,
    pem,
    serve_log,
    start_gateway,
    store_call,
    swaks,
    verdict_rows,
    wait_for,
    wait_maildir,
    write_config,
    zones,
)
from knot_fixture import KnotServer, start_knot
from postfix_fixture import PostfixRelay
from postfix_smtpd_fixture import PostfixSMTPD
from server_fixture import RunningServer

from conftest import missing, require_peer
from mailmoat.auth.arc import seal
from mailmoat.auth.arc import validate as arc_validate
from mailmoat.auth.dkim import sign
from mailmoat.clock import SYSTEM_CLOCK
from mailmoat.net.dns import DNSResolver
from mailmoat.spool import Spool
from mailmoat.store import Delivery, Store, Verdict

pytestmark = [pytest.mark.peer("knotd"), pytest.mark.peer("swaks"), pytest.mark.peer("dovecot"),
              pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
RCPT = f"bob@{GATEWAY_HOST}"
#: swaks: "=== TLS started with cipher TLSv1.3:TLS_AES_256_GCM_SHA384:256"
SWAKS_TLS_RE = re.compile(r"=== TLS started with cipher (TLSv[0-9.]+):(\S+):(\d+)")
#: Our Received field's TLS clause (Postfix style, RFC 5321 §4.4 comment).
RECEIVED_TLS_RE = re.compile(r"\(using (TLSv[0-9.]+) with cipher (\S+) \(")


# --- the lab: knot, then everything else started at once -------------------------------------
@dataclass
class World:
    """The main gateway: knot + Dovecot LMTP + ``mailmoat serve`` delivering to it."""

    knot: KnotServer
    keys: Keys
    dovecot: Dovecot
    gateway: RunningServer
    tmp: Path
    #: spool ID -> Message-ID of every message the gateway acknowledged
    accepted: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.gateway.port("starttls", "mx")

    @property
    def data_dir(self) -> Path:
        return self.gateway.data_dir

    def maildir(self, user: str = "bob") -> Path:
        return self.dovecot.base / "mail" / user

    def evidence(self) -> str:
        return (f"--- serve.log (tail) ---\n{serve_log(self.gateway.config)[-6000:]}\n"
                f"--- dovecot.log ---\n{self.dovecot.log()[-2000:]}")


@dataclass
class Setup:
    knot: KnotServer
    keys: Keys
    tmp: Path
    lab: Lab
    #: why the Postfix pieces are not there (None: they are)
    no_postfix: str | None
    #: the LMTP port of the outage test, closed until the test starts Dovecot on it
    outage_port: int


def _dovecot_program() -> str:
    program = require_peer("dovecot")
    if not Path("/usr/lib/dovecot/lmtp").exists():
        require_peer("dovecot-lmtpd-is-not-installed")
    return program


def _dovecot(base: Path) -> Dovecot:
    server = Dovecot(program=_dovecot_program(), base=base)
    server.start()
    return server


def _postfix_smtpd() -> PostfixSMTPD:
    import trustme

    cert = trustme.CA().issue_cert("postfix.test")
    postfix = PostfixSMTPD(require_peer("postfix"), cert_pem=cert.cert_chain_pems[0].bytes(),
                           key_pem=cert.private_key_pem.bytes())
    postfix.start()
    return postfix


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """knotd first (every gateway reads it); then, concurrently: Dovecot -> the main gateway
    -> a Postfix relay into it; Postfix smtpd -> a gateway delivering to it; a Maildir
    gateway; a gateway whose LMTP downstream is down. (Running one test starts them all.)"""
    require_peer("knotd")
    require_peer("swaks")
    _dovecot_program()
    no_postfix = None
    if shutil.which("postfix") is None and not os.path.exists("/usr/sbin/postfix"):
        no_postfix = "peer program 'postfix' is not installed"
    elif os.geteuid() != 0:
        no_postfix = "a private Postfix instance needs root"
    elif importlib.util.find_spec("trustme") is None:
        no_postfix = "trustme is not installed"
    tmp = tmp_path_factory.mktemp("inbound")
    keys = Keys.generate()
    outage_port = dovecot_fixture.free_port()
    with start_knot(zones(keys)) as knot, Lab() as lab:
        dns = knot.address

        def gateway(name: str, destination: str, **kwargs: Any) -> RunningServer:
            return start_gateway(write_config(tmp / name, dns=dns, destination=destination,
                                              **kwargs))

        def stop(server: RunningServer | Dovecot | PostfixRelay | PostfixSMTPD) -> object:
            return server.stop()

        lab.start("dovecot", lambda: _dovecot(tmp / "dovecot"), stop)
        lab.start("world", lambda: gateway(
            "gw", f"lmtp://127.0.0.1:{lab.get('dovecot').port}",
            policy='trusted_arc_sealers = ["fwd.test"]\nquarantine_folder = ""'), stop)
        lab.start("maildir", lambda: gateway(
            "gw-maildir", f"maildir:{tmp / 'mail'}/%d/%u", policy='quarantine_folder = "Junk"'),
            stop)
        lab.start("outage", lambda: gateway(
            "gw-outage", f"lmtp://127.0.0.1:{outage_port}",
            delivery="min_backoff = 1.0\nmax_backoff = 2.0"), stop)
        if no_postfix is None:
            def relay() -> PostfixRelay:
                port = lab.get("world").port("starttls", "mx")
                server = PostfixRelay(require_peer("postfix"), relayhost_port=port)
                server.start()
                return server

            lab.start("relay", relay, stop)
            lab.start("smtpd", _postfix_smtpd, stop)
            lab.start("smtp", lambda: gateway(
                "gw-smtp", f"smtp://127.0.0.1:{lab.get('smtpd').port}",
                local_domains=("example.net",)), stop)
        yield Setup(knot=knot, keys=keys, tmp=tmp, lab=lab, no_postfix=no_postfix,
                    outage_port=outage_port)


@pytest.fixture(scope="module")
def world(setup: Setup) -> World:
    return World(knot=setup.knot, keys=setup.keys, dovecot=setup.lab.get("dovecot"),
                 gateway=setup.lab.get("world"), tmp=setup.tmp)


# --- messages ---------------------------------------------------------------------------------
def message(from_addr: str, *, subject: str, to: str = RCPT, extra: bytes = b"",
            body: bytes = b"Hello Bob,\r\nthis message travelled over TLS.\r\n") -> bytes:
    domain = from_addr.rpartition("@")[2]
    mid = f"<{time.monotonic_ns()}.{os.getpid()}@{domain}>"
    return extra + (f"From: Alice <{from_addr}>\r\nTo: Bob <{to}>\r\nSubject: {subject}\r\n"
                    f"Date: {email.utils.formatdate()}\r\nMessage-ID: {mid}\r\n"
                    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
                    ).encode() + body


def message_id(msg: bytes) -> str:
    found = re.search(rb"^Message-ID: (<[^>]+>)\r?$", msg, re.M | re.I)
    assert found, msg[:300]
    return found[1].decode()


def dkim_sign(msg: bytes, keys: Keys, name: str) -> bytes:
    selector, _, domain = name.partition("._domainkey.")
    return sign(msg, domain, selector, keys[name], timestamp=int(time.time())) + msg


def cli_sign(msg: bytes, keys: Keys, name: str, tmp: Path) -> bytes:
    """``mailmoat dkim sign`` (the CLI) with the key as a PEM file."""
    selector, _, domain = name.partition("._domainkey.")
    key_file = tmp / f"{selector}.{domain}.pem"
    key_file.write_bytes(pem(keys[name]))
    msg_file = tmp / f"unsigned-{time.monotonic_ns()}.eml"
    msg_file.write_bytes(msg)
    out = subprocess.run(
        [sys.executable, "-m", "mailmoat.cli.main", "dkim", "sign", str(msg_file),
         "--domain", domain, "--selector", selector, "--key", str(key_file)],
        capture_output=True, timeout=60, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.stdout.startswith(b"DKIM-Signature:"), out.stderr
    return out.stdout


def send(world: World, msg: bytes, *, mail_from: str, source: str, helo: str) -> SwaksResult:
    result = swaks(world.port, msg, mail_from=mail_from, rcpt=RCPT, source=source, helo=helo,
                   tmp=world.tmp)
    if result.queued_id is not None:
        world.accepted[result.queued_id] = message_id(msg)
    return result


def delivered(world: World, msg_id: str, *, timeout: float = 20.0) -> bytes:
    """The copy Dovecot stored in bob's inbox (CRLF line ends restored), by Message-ID."""
    maildir = world.maildir()

    def find() -> list[bytes]:
        return [m for m in maildir_files(maildir) if msg_id.encode() in m]

    found = wait_for(find, timeout=timeout)
    assert found, f"{msg_id} not delivered to {maildir}\n{world.evidence()}"
    assert len(found) == 1, f"{msg_id} delivered {len(found)} times"
    return found[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def our_results(msg: bytes) -> authres.AuthenticationResultsHeader:
    """Our Authentication-Results field (exactly one), parsed by the ``authres`` package."""
    ours = [v for n, v in header_fields(msg) if n.lower() == "authentication-results"
            and v.split(";", 1)[0].strip().lower() == GATEWAY_HOST]
    assert len(ours) == 1, ours
    try:
        return authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {ours[0]}")
    except authres.AuthResError as exc:
        raise AssertionError(f"our Authentication-Results does not parse ({exc}): "
                             f"{ours[0].encode()!r}") from None


def results_of(ar: authres.AuthenticationResultsHeader, method: str) -> list[str]:
    return [r.result for r in ar.results if r.method == method]


def prop(ar: authres.AuthenticationResultsHeader, method: str, ptype: str, name: str
         ) -> list[str]:
    return [p.value for r in ar.results if r.method == method for p in r.properties
            if p.type == ptype and p.name == name]


def received_tls(msg: bytes, queued_id: str) -> tuple[str, str]:
    """(version, cipher) from our Received field (the one naming our spool ID)."""
    ours = [v for n, v in header_fields(msg) if n.lower() == "received"
            and f"by {GATEWAY_HOST} (mailmoat)" in v and f"id {queued_id}" in v]
    assert len(ours) == 1, header_fields(msg)
    match = RECEIVED_TLS_RE.search(ours[0])
    assert match, ours[0]
    return match[1], match[2]


def swaks_tls(result: SwaksResult) -> tuple[str, str]:
    match = SWAKS_TLS_RE.search(result.transcript)
    assert match, result.transcript
    return match[1], match[2]


def verdict(world: World | Path, spool_id: str) -> Verdict:
    data_dir = world.data_dir if isinstance(world, World) else world

    async def get(store: Store) -> Verdict | None:
        return await store.get_verdict(spool_id)

    found = wait_for(lambda: store_call(data_dir, get), timeout=10)
    assert found is not None, f"no verdict row for {spool_id}"
    return found


def accepted(result: SwaksResult, world: World) -> str:
    assert result.queued_id is not None, (
        f"not accepted: {result.final}\n{result.transcript[-3000:]}\n{world.evidence()}")
    return result.queued_id


# --- flows ------------------------------------------------------------------------------------
@pytest.mark.parametrize("signer", ["cli-rsa", "api-ed25519"])
def test_aligned_message_over_starttls_passes(world: World, signer: str) -> None:
    """good.test (p=reject, strict alignment): SPF pass from 127.0.0.1, DKIM pass (RSA signed
    by ``mailmoat dkim sign``, or Ed25519 by auth.dkim.sign), DMARC pass: delivered with our
    Authentication-Results and our Received naming swaks' TLS."""
    raw = message("alice@good.test", subject=f"aligned {signer}")
    if signer == "cli-rsa":
        msg, selector = cli_sign(raw, world.keys, "rsa1._domainkey.good.test", world.tmp), "rsa1"
    else:
        msg, selector = dkim_sign(raw, world.keys, "ed1._domainkey.good.test"), "ed1"
    result = send(world, msg, mail_from="alice@good.test", source=SOURCES["legit"],
                  helo="sender.good.test")
    spool_id = accepted(result, world)

    # Contract: the delivery rows and the verdict are committed BEFORE the 250 (no waiting).
    async def committed(store: Store) -> tuple[Verdict | None, list[Delivery]]:
        return (await store.get_verdict(spool_id),
                await store.list_deliveries(spool_id=spool_id))

    row, rows = store_call(world.data_dir, committed)
    assert row is not None, "no verdict row when the 250 was sent"
    assert [d.recipient for d in rows] == [RCPT], rows
    out = delivered(world, message_id(msg))
    ar = our_results(out)
    assert results_of(ar, "spf") == ["pass"]
    assert results_of(ar, "dkim") == ["pass"]
    assert prop(ar, "dkim", "header", "d") == ["good.test"]
    assert prop(ar, "dkim", "header", "s") in ([selector], [])
    assert results_of(ar, "dmarc") == ["pass"]
    assert prop(ar, "dmarc", "header", "from") == ["good.test"]
    # The TLS swaks negotiated, as our Received field and the verdict row record it.
    version, cipher = swaks_tls(result)
    assert received_tls(out, spool_id) == (version, cipher)
    v = verdict(world, spool_id)
    assert (v.tls_version, v.tls_cipher) == (version, cipher)
    assert (v.spf_result, v.dmarc_result, v.disposition) == ("pass", "pass", "none")
    assert [(d.domain, d.result) for d in v.dkim] == [("good.test", "pass")]
    assert v.client_ip == SOURCES["legit"]
    # dkimpy (an independent verifier) through the same DNS: our edits kept the signature.
    assert dkim.verify(out, dnsfunc=dkimpy_dns(world.knot.address))


def test_spoofed_p_reject_refused_at_end_of_data(world: World) -> None:
    """From: reject.test (p=reject) sent from 127.0.0.66, not in its SPF: 550 5.7.1 after
    the dot; nothing spooled, nothing delivered."""
    msg = message("ceo@reject.test", subject="wire the money")

    def refused() -> list[dict[str, object]]:
        return [r for r in verdict_rows(world.data_dir)
                if r["disposition"] == "reject" and r["mail_from"] == "ceo@reject.test"]

    before = len(refused())
    result = send(world, msg, mail_from="ceo@reject.test", source=SOURCES["spoofer"],
                  helo="evil.example")
    code, text = result.final
    assert (code, text[:5]) == (550, "5.7.1"), result.transcript[-2000:]
    assert result.queued_id is None
    # the transaction was the DATA one: MAIL and RCPT were accepted first
    assert [c for c, _ in result.replies][-5:-1] == [250, 250, 354, 550]
    # A message sent after it is delivered; the refused one never shows up.
    later = message("alice@good.test", subject="after the spoof")
    later = dkim_sign(later, world.keys, "ed1._domainkey.good.test")
    accepted(send(world, later, mail_from="alice@good.test", source=SOURCES["legit"],
                  helo="sender.good.test"), world)
    delivered(world, message_id(later))
    everything = b"".join(maildir_files(world.maildir()))
    assert message_id(msg).encode() not in everything
    spool = Spool(world.data_dir / "spool")
    for spool_id in spool.list():
        assert message_id(msg).encode() not in spool.read_message(spool_id)
    assert not list((world.data_dir / "spool" / "tmp").glob("*.part"))
    # What was refused is counted for the DMARC aggregate report (RFC 7489 Appendix C).
    rows = refused()
    assert len(rows) == before + 1, rows
    assert (rows[-1]["dmarc_result"], rows[-1]["dmarc_policy"]) == ("fail", "reject")


def test_p_quarantine_failure_delivered_marked(world: World) -> None:
    """quar.test (p=quarantine) failing DMARC: delivered with X-Mailmoat-Quarantine; a forged
    copy of that field from the sender is not what arrives."""
    msg = message("carol@quar.test", subject="quarantine me",
                  extra=b"X-Mailmoat-Quarantine: no\r\n")
    result = send(world, msg, mail_from="carol@quar.test", source=SOURCES["spoofer"],
                  helo="evil.example")
    spool_id = accepted(result, world)
    out = delivered(world, message_id(msg))
    marks = [v for n, v in header_fields(out) if n.lower() == "x-mailmoat-quarantine"]
    assert len(marks) == 1, marks
    assert marks[0].lower() != "no", marks
    ar = our_results(out)
    assert results_of(ar, "dmarc") == ["fail"]
    assert results_of(ar, "spf") == ["fail"]
    v = verdict(world, spool_id)
    assert (v.dmarc_result, v.dmarc_policy, v.disposition) == ("fail", "quarantine", "quarantine")


def test_p_none_failure_is_not_marked(world: World) -> None:
    """none.test (p=none) failing DMARC: delivered, and a quarantine mark the sender forged
    is removed (only the gateway says that)."""
    msg = message("dan@none.test", subject="p=none", extra=b"X-Mailmoat-Quarantine: yes\r\n")
    spool_id = accepted(send(world, msg, mail_from="dan@none.test", source=SOURCES["spoofer"],
                             helo="evil.example"), world)
    out = delivered(world, message_id(msg))
    assert not [v for n, v in header_fields(out) if n.lower() == "x-mailmoat-quarantine"]
    assert results_of(our_results(out), "dmarc") == ["fail"]
    assert verdict(world, spool_id).disposition == "none"


def test_forged_authentication_results_removed(world: World) -> None:
    """RFC 8601 §5: fields claiming our authserv-id (any case, folded, with a comment) are
    removed; another ADMD's field is left alone; ours says what we found (dmarc=fail)."""
    forged = (b"Authentication-Results: mx.test; dmarc=pass header.from=none.test\r\n"
              b"Authentication-Results: (trust me) MX.Test;\r\n\tspf=pass\r\n"
              b"  smtp.mailfrom=dan@none.test\r\n"
              b"authentication-results:\r\n mx.test; dkim=pass header.d=none.test\r\n"
              b"Authentication-Results: elsewhere.example; spf=pass smtp.mailfrom=none.test\r\n")
    msg = message("dan@none.test", subject="forged A-R", extra=forged)
    accepted(send(world, msg, mail_from="dan@none.test", source=SOURCES["spoofer"],
                  helo="evil.example"), world)
    out = delivered(world, message_id(msg))
    fields = [v for n, v in header_fields(out) if n.lower() == "authentication-results"]
    claiming = [v for v in fields if re.match(r"(\([^)]*\)\s*)?mx\.test\s*;", v, re.I)]
    assert len(claiming) == 1, fields
    assert len(fields) == 2, fields  # ours and elsewhere.example's
    assert results_of(our_results(out), "dmarc") == ["fail"]
    assert "elsewhere.example; spf=pass smtp.mailfrom=none.test" in fields


def test_header_only_message_gets_our_fields(world: World) -> None:
    """A message that is only a header section (RFC 5322 §3.5: the body and the empty line
    before it are optional): our Authentication-Results is added, the sender's fields and
    DKIM signature (over an empty body) are intact."""
    raw = message("alice@good.test", subject="header only").split(b"\r\n\r\n")[0] + b"\r\n"
    msg = dkim_sign(raw, world.keys, "ed1._domainkey.good.test")
    assert b"\r\n\r\n" not in msg
    spool_id = accepted(send(world, msg, mail_from="alice@good.test", source=SOURCES["legit"],
                             helo="sender.good.test"), world)
    out = delivered(world, message_id(msg))
    ar = our_results(out)
    assert (results_of(ar, "dkim"), results_of(ar, "dmarc")) == (["pass"], ["pass"])
    assert b"Subject: header only\r\n" in out
    assert verdict(world, spool_id).dmarc_result == "pass"


async def _forwarded(world: World, sealer: str, source: str) -> bytes:
    """alice@reject.test's message, DKIM-signed by reject.test, modified by a list (Subject
    tag: the signature breaks) and ARC-sealed by ``sealer`` with its own results."""
    keys = world.keys
    original = dkim_sign(message("alice@reject.test", subject="minutes"), keys,
                         "ed._domainkey.reject.test")
    modified = original.replace(b"Subject: minutes", b"Subject: [team] minutes")
    resolver = DNSResolver([world.knot.address], timeout=2, lifetime=5)
    chain = await arc_validate(modified, resolver, clock=SYSTEM_CLOCK)
    key = keys[f"arc._domainkey.{sealer}"]
    assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
    arc_set = seal(modified, chain, authserv_id=sealer,
                   results=["dkim=pass header.d=reject.test header.s=ed",
                            "dmarc=pass header.from=reject.test",
                            f"spf=pass smtp.mailfrom={source}"],
                   domain=sealer, selector="arc", private_key=key,
                   timestamp=int(time.time()))
    assert arc_set is not None
    return arc_set.fields + modified


async def test_arc_from_trusted_sealer_overrides_p_reject(world: World) -> None:
    """RFC 8617 §7.2: the list (fwd.test, in trusted_arc_sealers) saw DMARC pass; its ARC
    chain validates, so the p=reject failure after its change is overridden and recorded."""
    msg = await _forwarded(world, "fwd.test", "bounce@fwd.test")
    result = await asyncio.to_thread(send, world, msg, mail_from="list-bounce@fwd.test",
                              source=SOURCES["forwarder"], helo="lists.fwd.test")
    spool_id = accepted(result, world)
    out = await asyncio.to_thread(delivered, world, message_id(msg))
    ar = our_results(out)
    assert results_of(ar, "dkim") == ["fail"]
    assert results_of(ar, "arc") == ["pass"]
    assert results_of(ar, "dmarc") == ["fail"]
    assert prop(ar, "dmarc", "policy", "override") == ["arc"]
    v = await asyncio.to_thread(verdict, world, spool_id)
    assert (v.arc_result, v.dmarc_result, v.dmarc_policy) == ("pass", "fail", "reject")
    assert v.disposition == "none"
    assert [o.type for o in v.overrides] == ["local_policy"]
    assert "arc" in (v.overrides[0].comment or "")
    assert v.arc_sealers == ("fwd.test",)


async def test_arc_from_untrusted_sealer_does_not_override(world: World) -> None:
    """The same chain sealed by rogue.test (valid, but not trusted): p=reject applies."""
    msg = await _forwarded(world, "rogue.test", "bounce@rogue.test")
    result = await asyncio.to_thread(send, world, msg, mail_from="bounce@rogue.test",
                              source=SOURCES["rogue"], helo="lists.rogue.test")
    code, text = result.final
    assert (code, text[:5]) == (550, "5.7.1"), result.transcript[-2000:]


def _opendkim_sign(msg: bytes, key: rsa.RSAPrivateKey, tmp: Path) -> bytes:
    testmsg = require_peer("opendkim-testmsg")
    key_file = tmp / "odk.pem"
    key_file.write_bytes(pem(key))
    out = subprocess.run([testmsg, "-C", "-d", "relay.test", "-s", "odk", "-k", str(key_file),
                          "-t", str(tmp)], input=msg, capture_output=True, timeout=30,
                         check=True).stdout
    assert out.startswith(b"DKIM-Signature:"), out[:300]
    assert out.endswith(msg), out[-300:]
    return out


def test_postfix_relay_over_starttls_with_opendkim_and_mailmoat_signatures(
        setup: Setup, world: World) -> None:
    """Postfix relays (smtp_tls_security_level = encrypt) a message signed by OpenDKIM
    (rsa-sha1: opendkim-testmsg cannot sign otherwise) and by mailmoat (Ed25519). SPF and the
    Ed25519 signature pass, DMARC passes; the rsa-sha1 signature is not believed (RFC 8301
    §3.1: "Verifiers MUST NOT consider signatures using RSA-SHA1 ... valid"), though dkimpy
    shows it intact. Our Received and the verdict name the TLS Postfix logged."""
    require_peer("postfix")
    if setup.no_postfix:
        missing(setup.no_postfix)
    relay: PostfixRelay = setup.lab.get("relay")
    key = world.keys["odk._domainkey.relay.test"]
    assert isinstance(key, rsa.RSAPrivateKey)
    raw = message("alice@relay.test", subject="via postfix")
    msg = dkim_sign(_opendkim_sign(raw, key, world.tmp), world.keys, "ed1._domainkey.relay.test")
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        client.ehlo("client.relay.test")
        client.sendmail("alice@relay.test", [RCPT], msg)
    out = delivered(world, message_id(msg), timeout=30)
    sent = wait_for(lambda: re.search(
        r"status=sent \(250 2\.0\.0 Ok: queued as ([0-9A-Z]{26})\)", relay.log()), timeout=10)
    tls = [t for t in relay.tls_log() if t[0] == world.port]
    assert sent, relay.log()[-3000:]
    assert tls, relay.log()[-3000:]
    _, version, cipher, _ = tls[-1]
    spool_id = sent[1]
    world.accepted[spool_id] = message_id(msg)
    assert received_tls(out, spool_id) == (version, cipher)
    ar = our_results(out)
    assert results_of(ar, "spf") == ["pass"]
    assert sorted(results_of(ar, "dkim")) == ["pass", "policy"], ar
    assert results_of(ar, "dmarc") == ["pass"]
    # both signatures intact as delivered (dkimpy verifies rsa-sha1 too)
    signed = dkim.DKIM(out)
    lookup = dkimpy_dns(world.knot.address)
    assert signed.verify(idx=0, dnsfunc=lookup)
    assert signed.verify(idx=1, dnsfunc=lookup)
    v = verdict(world, spool_id)
    assert (v.tls_version, v.tls_cipher) == (version, cipher)
    assert sorted((d.selector, d.result) for d in v.dkim) == [("ed1", "pass"), ("odk", "policy")]
    assert v.helo == "relay.test"


def test_session_reuse_after_reject_and_rset(world: World) -> None:
    """One STARTTLS connection (Python's smtplib) from 127.0.0.1: a spoofed p=reject message
    (550), then a transaction dropped by RSET after MAIL FROM (SPF already started for it),
    then an aligned message for two recipients. The last one's results are its own (spf=pass
    for ITS MAIL FROM, nothing left over from the earlier transactions), it reaches both
    mailboxes, and it has one verdict row."""
    spoof = message("ceo@reject.test", subject="spoof in a reused session")
    good = dkim_sign(message("alice@good.test", subject="after reject and rset"), world.keys,
                     "ed1._domainkey.good.test")
    with smtplib.SMTP("127.0.0.1", world.port, local_hostname="sender.good.test",
                      timeout=30) as client:
        client.starttls()
        client.ehlo("sender.good.test")
        client.mail("ceo@reject.test")
        client.rcpt(RCPT)
        refused = client.data(spoof)  # (code, text) of the reply to the content
        client.mail("ceo@reject.test")
        client.rset()
        client.mail("alice@good.test")
        client.rcpt(RCPT)
        client.rcpt(f"alice@{GATEWAY_HOST}")
        code, text = client.data(good)
    assert (refused[0], refused[1][:5]) == (550, b"5.7.1"), refused
    assert code == 250, text
    spool_id = text.decode().rsplit(" ", 1)[-1]
    world.accepted[spool_id] = message_id(good)
    out = delivered(world, message_id(good))
    ar = our_results(out)
    assert results_of(ar, "spf") == ["pass"]
    assert prop(ar, "spf", "smtp", "mailfrom") in (["alice@good.test"], ["good.test"])
    assert results_of(ar, "dkim") == ["pass"]
    assert results_of(ar, "dmarc") == ["pass"]
    alice = wait_for(lambda: [m for m in maildir_files(world.maildir("alice"))
                              if message_id(good).encode() in m], timeout=20)
    assert len(alice) == 1
    v = verdict(world, spool_id)
    assert (v.mail_from, v.spf_result, v.dmarc_result) == ("alice@good.test", "pass", "pass")
    everything = b"".join(maildir_files(world.maildir()) + maildir_files(world.maildir("alice")))
    assert message_id(spoof).encode() not in everything


def _bdat(port: int, source: str, mail_from: str, msg: bytes, cuts: list[int]) -> list[bytes]:
    """A minimal RFC 3030 BDAT client over STARTTLS (stdlib ssl, no verification): the
    message in chunks cut at ``cuts``; returns the reply to every BDAT."""
    def reply(f: Any) -> bytes:
        lines: list[bytes] = []
        while True:
            line = f.readline()
            assert line, lines
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    with raw:
        f = raw.makefile("rb")
        assert reply(f).startswith(b"220")
        raw.sendall(b"EHLO bdat.example\r\n")
        assert b"CHUNKING" in reply(f)
        raw.sendall(b"STARTTLS\r\n")
        assert reply(f).startswith(b"220")
        with ctx.wrap_socket(raw, server_hostname=GATEWAY_HOST) as tls:
            t = tls.makefile("rb")
            tls.sendall(b"EHLO bdat.example\r\n")
            reply(t)
            tls.sendall(f"MAIL FROM:<{mail_from}>\r\n".encode())
            assert reply(t).startswith(b"250")
            tls.sendall(f"RCPT TO:<{RCPT}>\r\n".encode())
            assert reply(t).startswith(b"250")
            out = []
            bounds = [0, *cuts, len(msg)]
            for i, (a, b) in enumerate(itertools.pairwise(bounds)):
                last = b" LAST" if i == len(bounds) - 2 else b""
                tls.sendall(b"BDAT %d%s\r\n" % (b - a, last) + msg[a:b])
                out.append(reply(t))
            tls.sendall(b"QUIT\r\n")
            return out


@pytest.mark.parametrize("case", ["spoof", "aligned"])
def test_bdat_chunks(world: World, case: str) -> None:
    """RFC 3030 BDAT in chunks cut inside a header field and at the header/body boundary:
    the spoof is refused on the LAST chunk (550 5.7.1); the aligned message passes."""
    if case == "spoof":
        msg = message("ceo@reject.test", subject="bdat spoof")
        source, mail_from = SOURCES["spoofer"], "ceo@reject.test"
    else:
        msg = dkim_sign(message("alice@good.test", subject="bdat aligned"), world.keys,
                        "rsa1._domainkey.good.test")
        source, mail_from = SOURCES["legit"], "alice@good.test"
    boundary = msg.index(b"\r\n\r\n")
    cuts = [7, boundary + 1, boundary + 4]
    replies = _bdat(world.port, source, mail_from, msg, cuts)
    assert all(r.startswith(b"250") for r in replies[:-1]), replies
    if case == "spoof":
        assert replies[-1].startswith(b"550 5.7.1"), replies
        return
    final = re.match(rb"250 2\.0\.0 Ok: queued as ([0-9A-Z]{26})", replies[-1])
    assert final, replies
    world.accepted[final[1].decode()] = message_id(msg)
    ar = our_results(delivered(world, message_id(msg)))
    assert (results_of(ar, "dkim"), results_of(ar, "dmarc")) == (["pass"], ["pass"])


def test_large_message_streams_through_dkim(world: World) -> None:
    """A 3 MB body (long and short lines, trailing white space, empty lines at the end)
    signed simple/simple: verified while it streams in many chunks, delivered intact."""
    lines = [(b"%06d " % i) + b"x" * (i % 900) + (b" \t" if i % 7 == 0 else b"")
             for i in range(7000)]
    body = b"\r\n".join(lines) + b"\r\n\r\n\r\n"
    assert len(body) > 3_000_000
    raw = message("alice@good.test", subject="large", body=body)
    msg = sign(raw, "good.test", "ed1", world.keys["ed1._domainkey.good.test"],
               canonicalization=("simple", "simple"), timestamp=int(time.time())) + raw
    spool_id = accepted(send(world, msg, mail_from="alice@good.test", source=SOURCES["legit"],
                             helo="sender.good.test"), world)
    out = delivered(world, message_id(msg), timeout=30)
    ar = our_results(out)
    assert (results_of(ar, "dkim"), results_of(ar, "dmarc")) == (["pass"], ["pass"])
    assert out.endswith(body)
    assert verdict(world, spool_id).size is not None


def test_oversized_header_section_refused(world: World) -> None:
    """A header section over the gateway's bound (1 MiB, limits.MESSAGE_HEADER_MAX) is
    refused at the end of the data, 552 5.3.4 (RFC 3463 §3.4), and nothing is kept."""
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"f" * 900) for i in range(1200))
    msg = message("alice@good.test", subject="huge header", extra=filler)
    result = send(world, msg, mail_from="alice@good.test", source=SOURCES["legit"],
                  helo="sender.good.test")
    code, text = result.final
    assert (code, text[:5]) == (552, "5.3.4"), result.transcript[-1500:]
    spool = Spool(world.data_dir / "spool")
    for spool_id in spool.list():
        assert message_id(msg).encode() not in spool.read_message(spool_id)
    assert not list((world.data_dir / "spool" / "tmp").glob("*.part"))


def test_store_has_one_verdict_per_accepted_message(world: World) -> None:
    """After the flows: one verdict row per acknowledged message (TLS at receipt, results);
    refused messages have rows with disposition "reject" (RFC 7489 Appendix C) and no
    delivery rows."""
    if not world.accepted:  # run alone: one message of our own
        msg = dkim_sign(message("alice@good.test", subject="store"), world.keys,
                        "ed1._domainkey.good.test")
        accepted(send(world, msg, mail_from="alice@good.test", source=SOURCES["legit"],
                      helo="sender.good.test"), world)
    every = wait_for(lambda: (r := verdict_rows(world.data_dir)) and len(r) >= len(
        world.accepted) and r, timeout=10) or []
    rows = [r for r in every if r["disposition"] != "reject"]
    ids = [str(r["spool_id"]) for r in rows]
    assert sorted(ids) == sorted(world.accepted), (ids, world.accepted)
    for row in every:
        if row["disposition"] == "reject":
            assert str(row["spool_id"]) not in world.accepted
            assert not _deliveries(world.data_dir, str(row["spool_id"]))
    for row in rows:
        assert row["tls_version"] in ("TLSv1.2", "TLSv1.3"), row
        assert row["tls_cipher"], row
        assert row["spf_result"] in ("pass", "fail", "softfail", "neutral", "none"), row
        assert row["dmarc_result"] in ("pass", "fail"), row
    # Every accepted message was delivered: the queue holds only final rows.
    async def unfinished(store: Store) -> list[Delivery]:
        return await store.list_deliveries(states=("queued", "in-flight", "deferred"))

    assert wait_for(lambda: not store_call(world.data_dir, unfinished), timeout=15), (
        store_call(world.data_dir, unfinished))


# --- other downstreams ------------------------------------------------------------------------
def _good(keys: Keys, subject: str, to: str = RCPT) -> bytes:
    return dkim_sign(message("alice@good.test", subject=subject, to=to), keys,
                     "rsa1._domainkey.good.test")


def _deliveries(data_dir: Path, spool_id: str) -> list[Delivery]:
    async def rows(store: Store) -> list[Delivery]:
        return await store.list_deliveries(spool_id=spool_id)

    return store_call(data_dir, rows)


def test_smtp_downstream_postfix_smtpd(setup: Setup) -> None:
    """[delivery] destination = smtp://…: a private Postfix smtpd receives what we accepted,
    over STARTTLS; its own Received field names the TLS our delivery attempt recorded."""
    require_peer("postfix")
    if setup.no_postfix:
        missing(setup.no_postfix)
    postfix: PostfixSMTPD = setup.lab.get("smtpd")
    gateway: RunningServer = setup.lab.get("smtp")
    msg = _good(setup.keys, "to postfix", to="box@example.net")
    result = swaks(gateway.port("starttls", "mx"), msg, mail_from="alice@good.test",
                   rcpt="box@example.net", source=SOURCES["legit"], helo="sender.good.test",
                   tmp=setup.tmp)
    spool_id = result.queued_id
    assert spool_id, result.transcript[-2000:]
    try:
        stored = [m for m in postfix.messages(1, timeout=20) if message_id(msg).encode() in m]
    except AssertionError:
        raise AssertionError(serve_log(gateway.config)[-4000:]) from None
    assert len(stored) == 1
    deliveries = wait_for(lambda: [d for d in _deliveries(gateway.data_dir, spool_id)
                                   if d.state == "delivered"], timeout=10)
    assert deliveries, _deliveries(gateway.data_dir, spool_id)
    ar = our_results(stored[0])
    assert results_of(ar, "dmarc") == ["pass"]
    tls = deliveries[0].tls
    assert tls is not None
    assert tls.version is not None
    # Postfix (smtpd_tls_received_header = yes): "(using TLSv1.3 with cipher ...)"
    assert f"using {tls.version} with cipher {tls.cipher}".encode() in stored[0]


def test_maildir_destination_files_quarantine_into_junk(setup: Setup) -> None:
    """[delivery] destination = maildir:…/%d/%u with [policy] quarantine_folder = "Junk":
    a failing p=quarantine message goes to the Maildir++ folder ``.Junk``; a passing one to
    the inbox."""
    gateway: RunningServer = setup.lab.get("maildir")
    port = gateway.port("starttls", "mx")
    bad = message("carol@quar.test", subject="junk me")
    good = _good(setup.keys, "inbox me")
    for msg, mail_from, source in ((bad, "carol@quar.test", SOURCES["spoofer"]),
                                   (good, "alice@good.test", SOURCES["legit"])):
        r = swaks(port, msg, mail_from=mail_from, rcpt=RCPT, source=source,
                  helo="sender.example", tmp=setup.tmp)
        assert r.queued_id, r.transcript[-2000:]
    box = setup.tmp / "mail" / GATEWAY_HOST / "bob"
    junk = wait_maildir(box / ".Junk", 1)
    inbox = wait_maildir(box, 1)
    log = serve_log(gateway.config)
    assert len(junk) == 1, log[-4000:]
    assert message_id(bad).encode() in junk[0]
    marks = [v for n, v in header_fields(junk[0]) if n.lower() == "x-mailmoat-quarantine"]
    assert len(marks) == 1, marks
    assert len(inbox) == 1, log[-4000:]
    assert message_id(good).encode() in inbox[0]
    assert b"X-Mailmoat-Quarantine" not in inbox[0]


def test_downstream_outage_delays_but_delivers(setup: Setup,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot is down (its LMTP port closed) when the message is accepted: the delivery is
    deferred (connection refused), the message stays spooled; once Dovecot listens on that
    port the retry (min_backoff = 1 s) delivers it, once."""
    gateway: RunningServer = setup.lab.get("outage")
    msg = _good(setup.keys, "while dovecot is down")
    r = swaks(gateway.port("starttls", "mx"), msg, mail_from="alice@good.test", rcpt=RCPT,
              source=SOURCES["legit"], helo="sender.good.test", tmp=setup.tmp)
    spool_id = r.queued_id
    assert spool_id, r.transcript[-2000:]
    deferred = wait_for(lambda: [d for d in _deliveries(gateway.data_dir, spool_id)
                                 if d.state == "deferred" and d.attempts >= 1], timeout=15)
    assert deferred, (_deliveries(gateway.data_dir, spool_id), serve_log(gateway.config)[-4000:])
    assert deferred[0].last_error, deferred
    assert Spool(gateway.data_dir / "spool").list() == [spool_id]
    monkeypatch.setattr(dovecot_fixture, "free_port", lambda: setup.outage_port)
    dovecot = _dovecot(setup.tmp / "dovecot-late")
    try:
        got = wait_maildir(dovecot.base / "mail" / "bob", 1, timeout=20)
        assert len(got) == 1, serve_log(gateway.config)[-4000:]
        assert message_id(msg).encode() in got[0]
        done = wait_for(lambda: [d for d in _deliveries(gateway.data_dir, spool_id)
                                 if d.state == "delivered"], timeout=10)
        assert done, _deliveries(gateway.data_dir, spool_id)
        assert done[0].attempts >= 2, done
        assert wait_for(lambda: Spool(gateway.data_dir / "spool").list() == [], timeout=10)
    finally:
        dovecot.stop()
