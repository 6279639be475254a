"""The outbound gateway end to end (issue #7): ``mailmoat serve`` between real peers.

swaks submits with AUTH over STARTTLS (587-style) and implicit TLS (465-style); mailmoat
signs with RSA-2048 and Ed25519 (RFC 8463 dual signing), queues, finds the recipient domain's
MX in knot and delivers to Postfix over STARTTLS (see outbound_e2e_fixture.py for the whole
set-up). The oracles are the peers, not our output:

* Postfix's Maildir holds the message (or not), and its ``Received`` field names the listener
  that took it and the TLS version and cipher Postfix negotiated - the store's record of the
  attempt must say the same;
* the delivered copy verifies with OpenDKIM (``opendkim-testmsg``, libopendkim, the approach
  of test_dkim_opendkim.py), with dkimpy, and with mailmoat's verifier over knot's DNS;
  a tampered copy fails all three;
* MTA-STS (RFC 8461 §5): a domain with an ``enforce`` policy whose MX certificate is for
  another name is NOT delivered (deferred, recorded), while the same receiver without a
  policy gets the message (opportunistic, RFC 7435); a matching MX under the same policy is
  delivered with a verified certificate;
* a receiver that answers 450 once gets the message on the retry (small min_backoff);
* a 550 from Postfix bounces, and a failed DSN (RFC 3464, multipart/report, RFC 6522)
  arrives in the sender's local Maildir.

* DANE (RFC 7672): the gateway's resolver is unbound validating knot's signed zone
  (``[dns] trust_ad = true``); a TLSA ``3 1 1`` record matching the wrong-name receiver's
  key gets it the message (DANE-EE ignores the name, §3.1.1), a record matching no key of
  the receiver keeps the message away from it (deferred, recorded). The TLSA name is
  ``_<mx_port>._tcp.<mx>``: the port the gateway connects to (RFC 6698 §3).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from outbound_e2e_fixture import (
    E2E,
    SENDER,
    SENDER_USER,
    Stack,
    header_fields,
    postfix_messages,
    start_stack,
    wait_postfix,
)
from server_fixture import HOSTNAME
from test_dkim_opendkim import opendkim_verify

from conftest import require_peer
from mailmoat.auth.dkim import DKIMResultCode, txt_strings, verify
from mailmoat.clock import SYSTEM_CLOCK
from mailmoat.net.dns import DNSResolver

pytestmark = [pytest.mark.timeout(300)]

TLS_RECEIVED = re.compile(r"\(using (TLSv1\.[23]) with cipher (\S+)")
BY = re.compile(r"\bby (\S+) \(Postfix\)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_peer("swaks")
    with start_stack(tmp_path_factory.mktemp("stack"), dane=True) as started:
        yield started


@pytest.fixture(scope="module")
def gw(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    e2e = E2E.create(stack, tmp_path_factory.mktemp("gw") / "data")
    try:
        e2e.start()
        yield e2e
    finally:
        e2e.stop()


def _message(tag: str, rcpt: str) -> bytes:
    return (
        f"From: Carol <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: e2e {tag}\r\n"
        f"Date: Sun, 29 Nov 2026 00:00:00 +0000\r\nMessage-ID: <{tag}@{HOSTNAME}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Hello,  this is {tag}.   \r\n\r\nA second paragraph\twith a tab.\r\n"
    ).encode()


def _submit(gw: E2E, tag: str, rcpt: str, *, implicit_tls: bool = False) -> None:
    done = gw.swaks(to=rcpt, data=_message(tag, rcpt), implicit_tls=implicit_tls)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"<~\s+250 ", done.stdout), done.stdout[-2000:]


def _crlf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _received_by_postfix(message: bytes) -> tuple[str, str, str]:
    """(listener name, TLS version, cipher) from the topmost Received (Postfix's own)."""
    received = [v for n, v in header_fields(message) if n == "received"]
    assert received, message[:500]
    top = received[0].decode("latin-1")
    by, tls = BY.search(top), TLS_RECEIVED.search(top)
    assert by, top
    assert tls, top
    return by[1], tls[1], tls[2]


def _knot_txt(stack: Stack, name: str) -> bytes:
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    answer = dns.query.udp(query, "127.0.0.1", port=stack.knot.port, timeout=3)
    for rrset in answer.answer:
        for rdata in rrset:
            return b"".join(rdata.strings)
    raise AssertionError(f"no TXT for {name}")


def _only_signature(message: bytes, algorithm: str) -> bytes:
    """``message`` (CRLF) without the DKIM-Signature fields of other algorithms."""
    head, sep, body = message.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    kept = [f for f in fields if not f.lower().startswith(b"dkim-signature:")
            or f"a={algorithm};".encode() in re.sub(rb"\s+", b"", f)]
    assert sum(f.lower().startswith(b"dkim-signature:") for f in kept) == 1, head
    return b"\r\n".join(kept) + sep + body


# --- end to end: submit, sign, deliver, verify -----------------------------------------------
@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "implicit-tls"])
def test_submit_sign_deliver_verify(gw: E2E, stack: Stack, tmp_path: Path,
                                    implicit_tls: bool) -> None:
    tag = "e2e-implicit" if implicit_tls else "e2e-starttls"
    rcpt = f"{tag}@good.plain.test"
    _submit(gw, tag, rcpt, implicit_tls=implicit_tls)
    (copy,) = wait_postfix(stack.postfix, rcpt)
    by, version, cipher = _received_by_postfix(copy)
    assert by == "good.plain.test"

    # The store's record of the attempt matches what Postfix saw.
    delivery, attempts = gw.wait_state(rcpt, ("delivered",))
    assert delivery.destination == "mx:good.plain.test"
    tls = attempts[-1].result.tls
    assert tls is not None, attempts
    assert (tls.version, tls.cipher) == (version, cipher)
    assert tls.policy == "opportunistic"
    assert attempts[-1].result.outcome == "delivered"
    assert attempts[-1].result.reply_code == 250

    # Two signatures by the sender's domain: RSA-2048 and Ed25519.
    message = _crlf(copy)
    sigs = [v.decode() for n, v in header_fields(message) if n == "dkim-signature"]
    tags = [{k.strip(): v.strip() for k, _, v in (t.partition("=") for t in re.sub(
        r"\s+", "", s).split(";")) if k.strip()} for s in sigs]
    assert sorted((t["a"], t["s"], t["d"]) for t in tags) == [
        ("ed25519-sha256", "ed1", HOSTNAME), ("rsa-sha256", "rsa2048", HOSTNAME)]
    tampered = message.replace(b"Subject: e2e", b"Subject: E2E", 1)
    assert tampered != message

    # Oracle 1: mailmoat's verifier, keys from knot.
    resolver = DNSResolver([stack.knot.address])
    ours = asyncio.run(verify(message, resolver, clock=SYSTEM_CLOCK))
    assert sorted((r.selector, r.result) for r in ours) == [
        ("ed1", DKIMResultCode.PASS), ("rsa2048", DKIMResultCode.PASS)], ours
    assert {r.selector: r.key_bits for r in ours}["rsa2048"] == 2048
    bad = asyncio.run(verify(tampered, resolver, clock=SYSTEM_CLOCK))
    assert all(r.result is DKIMResultCode.FAIL for r in bad), bad

    # Oracle 2: dkimpy, every signature, keys from knot.
    import dkim

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return _knot_txt(stack, name.decode().rstrip("."))

    for index in range(len(sigs)):
        assert dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc), index
        assert not dkim.DKIM(tampered).verify(idx=index, dnsfunc=dnsfunc), index

    # Oracle 3: OpenDKIM, one copy per signature (testmsg judges a message as a whole).
    singles = [_only_signature(message, a) for a in ("rsa-sha256", "ed25519-sha256")]
    records = {name: txt_strings(value) for name, value in stack.dkim_records.items()}
    results = opendkim_verify(tmp_path, records,
                              [*singles, *(s.replace(b"Subject: e2e", b"Subject: E2E", 1)
                                           for s in singles)])
    assert all(r["rc"] == 0 and r["stderr"] == "" for r in results[:2]), results
    assert all(r["rc"] != 0 for r in results[2:]), results


# --- TLS policy: MTA-STS enforce vs opportunistic ----------------------------------------------
def test_mta_sts_enforce_refuses_the_wrong_name(gw: E2E, stack: Stack) -> None:
    """sts.plain.test publishes an enforce policy naming its MX, but that receiver's
    certificate is for another name: RFC 8461 §4.2/§5 - the message must not go there."""
    rcpt = "sts@sts.plain.test"
    _submit(gw, "sts-enforce", rcpt)
    delivery, attempts = gw.wait_state(rcpt, ("deferred",), timeout=40)
    result = attempts[0].result
    assert result.outcome == "deferred"
    assert result.tls is not None, result
    assert result.tls.policy == "mta-sts-enforce", result
    assert result.tls.verified is not True
    assert "certificate" in (delivery.last_error or "").lower(), delivery
    time.sleep(2)  # any (wrong) delivery would be in Postfix's Maildir by now
    assert not [m for m in postfix_messages(stack.postfix) if b"sts@sts.plain.test" in m]


def test_mta_sts_enforce_delivers_to_a_matching_mx(gw: E2E, stack: Stack) -> None:
    """The control of the test above: same policy, MX named in it -> delivered, verified."""
    rcpt = "ok@stsok.plain.test"
    _submit(gw, "sts-ok", rcpt)
    (copy,) = wait_postfix(stack.postfix, rcpt)
    assert _received_by_postfix(copy)[0] == "good.plain.test"
    _, attempts = gw.wait_state(rcpt, ("delivered",))
    tls = attempts[-1].result.tls
    assert tls is not None, attempts
    assert (tls.policy, tls.verified) == ("mta-sts-enforce", True), tls


def test_opportunistic_delivers_to_the_wrong_name(gw: E2E, stack: Stack) -> None:
    """No policy (RFC 7435): the same wrong-name receiver gets the message, over TLS."""
    rcpt = "opp@opp.plain.test"
    _submit(gw, "opportunistic", rcpt)
    (copy,) = wait_postfix(stack.postfix, rcpt)
    by, version, _ = _received_by_postfix(copy)
    assert by == "wrong.plain.test"
    _, attempts = gw.wait_state(rcpt, ("delivered",))
    tls = attempts[-1].result.tls
    assert tls is not None, attempts
    assert (tls.policy, tls.verified) == ("opportunistic", False), tls
    assert tls.version == version


# --- retry after a temporary failure -------------------------------------------------------------
def test_tempfail_then_delivered(gw: E2E, stack: Stack) -> None:
    rcpt = "later@retry.plain.test"
    _submit(gw, "retry", rcpt)
    _, attempts = gw.wait_state(rcpt, ("delivered",), timeout=40, min_attempts=2)
    first, last = attempts[0].result, attempts[-1].result
    assert (first.outcome, first.reply_code) == ("deferred", 450), first
    assert last.outcome == "delivered"
    replies = [r for a, r in stack.retry.rcpt_replies if a == rcpt]
    assert replies[0].startswith("450"), replies
    assert replies[-1].startswith("250"), replies
    copies = [c for rcpts, c in stack.retry.accepted if rcpts == [rcpt]]
    assert len(copies) == 1
    assert b"Message-ID: <retry@mx.test>" in copies[0]
    assert b"DKIM-Signature:" in copies[0]


# --- permanent failure: a DSN to the sender ------------------------------------------------------
def test_permanent_failure_sends_a_dsn(gw: E2E, stack: Stack) -> None:
    rcpt = "nobody@good.plain.test"
    _submit(gw, "bounce", rcpt)
    delivery, attempts = gw.wait_state(rcpt, ("bounced",), timeout=40)
    assert attempts[-1].result.reply_code == 550, attempts
    deadline = time.monotonic() + 20
    dsns: list[bytes] = []
    while time.monotonic() < deadline and not dsns:
        dsns = [m for m in gw.local_mail(SENDER_USER) if b"<bounce@mx.test>" in m]
        time.sleep(0.2)
    assert len(dsns) == 1, (gw.local_mail(SENDER_USER), gw.log_tail())
    dsn = email.message_from_bytes(dsns[0], policy=email.policy.default)
    # RFC 3464 §2 / RFC 6522: multipart/report; report-type=delivery-status
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert SENDER in str(dsn["To"])
    parts = list(dsn.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    status = parts[1].as_bytes().decode("ascii", "replace")
    assert re.search(r"^Reporting-MTA: dns;\s*" + re.escape(HOSTNAME), status, re.M | re.I)
    assert re.search(r"^Final-Recipient: rfc822;\s*" + re.escape(rcpt), status, re.M | re.I)
    assert re.search(r"^Action: failed", status, re.M | re.I)
    assert re.search(r"^Status: 5\.1\.1", status, re.M | re.I)
    assert re.search(r"^Diagnostic-Code: smtp;\s*550", status, re.M | re.I)
    assert len(parts) == 3
    assert parts[2].get_content_type() in ("message/rfc822", "text/rfc822-headers")
    assert b"Message-ID: <bounce@mx.test>" in parts[2].as_bytes()
    assert delivery.state == "bounced"


# --- DANE ---------------------------------------------------------------------------------------
def test_dane_is_on(gw: E2E) -> None:
    """serve's start-up check saw the AD bit from unbound (else DANE would be off)."""
    banner = "".join(gw.server.output if gw.server else [])
    assert re.search(r"DANE on", banner), banner


def test_dane_ee_delivers_to_the_published_key(gw: E2E, stack: Stack) -> None:
    rcpt = "ee@daneee.example.test"
    _submit(gw, "dane-ee", rcpt)
    (copy,) = wait_postfix(stack.postfix, rcpt)
    assert _received_by_postfix(copy)[0] == "wrong.plain.test"
    _, attempts = gw.wait_state(rcpt, ("delivered",))
    tls = attempts[-1].result.tls
    assert tls is not None, attempts
    assert (tls.policy, tls.verified) == ("dane", True), tls


def test_dane_mismatch_is_not_delivered(gw: E2E, stack: Stack) -> None:
    rcpt = "bad@danebad.example.test"
    _submit(gw, "dane-bad", rcpt)
    delivery, attempts = gw.wait_state(rcpt, ("deferred",), timeout=40)
    result = attempts[0].result
    assert result.outcome == "deferred"
    assert result.tls is not None, result
    assert result.tls.policy == "dane", result
    assert result.tls.verified is not True
    # RFC 8460 §4.3: no TLSA record matches the server's key
    assert result.tls.result_type in ("tlsa-invalid", "validation-failure"), result
    assert delivery.last_error, delivery
    time.sleep(2)
    assert not [m for m in postfix_messages(stack.postfix) if rcpt.encode() in m]


# --- TLS-RPT detail kept with each attempt (contract §4, RFC 8460 §4.4) ------------------------
TLS_RPT_CASES = [
    # (recipient, final state, policy-type, receiving-mx-hostname, receiving-ip, result-type)
    ("rpt@good.plain.test", "delivered", "no-policy-found", "mx-good.plain.test", "127.0.0.2",
     None),
    ("rpt@stsok.plain.test", "delivered", "sts", "mx-good.plain.test", "127.0.0.2", None),
    ("rpt@sts.plain.test", "deferred", "sts", "mx-wrong.plain.test", "127.0.0.3",
     "certificate-host-mismatch"),  # RFC 8460 §4.3.2.2
    ("rpt@daneee.example.test", "delivered", "tlsa", "mx-wrong.example.test", "127.0.0.3",
     None),
]


@pytest.mark.parametrize(("rcpt", "state", "policy_type", "mx_host", "ip", "result_type"),
                         TLS_RPT_CASES, ids=[c[0].split("@")[1] for c in TLS_RPT_CASES])
def test_attempt_keeps_tls_rpt_detail(gw: E2E, rcpt: str, state: str, policy_type: str,
                                      mx_host: str, ip: str, result_type: str | None) -> None:
    _submit(gw, f"rpt-{rcpt.split('@')[1]}", rcpt)
    _, attempts = gw.wait_state(rcpt, (state,), timeout=40)
    tls = attempts[0].result.tls
    assert tls is not None, attempts
    assert (tls.policy_type, tls.mx_host, tls.receiving_ip, tls.result_type) == (
        policy_type, mx_host, ip, result_type), tls
    assert tls.success is (state == "delivered"), tls
