"""A validating resolver for tests: unbound on 127.0.0.1 in front of a :mod:`knot_fixture`
server, the only setup in which the AD bit means anything (RFC 4035 §3.2.3, RFC 7672 §2.1).

Use from a test module in tests/interop/::

    from unbound_fixture import start_validating

    with start_validating({"example.test": ZONE, "plain.test": ZONE2},
                          signed=["example.test"]) as (knot, unbound):
        resolver = DNSResolver([unbound.address], trust_ad=True)

``start_unbound(knot_port, stubs, anchored)`` runs one ``unbound -d`` with its own config and
work directory under a temporary directory, on a port of 127.0.0.1 free for UDP and TCP: a
stub zone pointing at knot for each name in ``stubs``, the DNSKEY RRsets of ``anchored`` (read
from knot, which signs them on load) as its trust anchors. Stub zones under the special-use
``test.`` get ``local-zone: "test." nodefault`` (unbound answers that name itself otherwise,
RFC 6761). It returns once the first anchored zone's SOA comes back validated (AD set), and
stops unbound by its PID at the end (SIGTERM, then SIGKILL after 5 s; see
:func:`knot_fixture.foreground`). Zones without an
anchor are answered but never validated ("insecure"). Skips without unbound (fails under
MAILMOAT_REQUIRE_PEERS=1, see conftest).

``spki_sha256`` gives the ``3 1 1`` TLSA data of a certificate (RFC 6698 §2.1, RFC 7672 §3.1.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from knot_fixture import Daemon, KnotServer, foreground, free_port, start_knot

from conftest import require_peer

__all__ = ["UnboundServer", "dnskey_anchors", "spki_sha256", "start_unbound",
           "start_validating"]

STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class UnboundServer(Daemon):
    def log(self) -> str:
        path = self.workdir / "unbound.log"
        return path.read_text(errors="replace") if path.exists() else ""


def spki_sha256(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo, hex: TLSA ``3 1 1`` data."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def dnskey_anchors(knot_port: int, zones: Iterable[str],
                   timeout: float = STARTUP_TIMEOUT) -> str:
    """The DNSKEY RRset of each of ``zones`` as knot serves it, as master-file lines (an
    unbound ``trust-anchor-file``); waits (bounded) for knot's signing."""
    anchors = ""
    for zone in zones:
        deadline = time.monotonic() + timeout
        while True:
            query = dns.message.make_query(zone + ".", dns.rdatatype.DNSKEY)
            with contextlib.suppress(dns.exception.Timeout, OSError):
                response = dns.query.udp(query, "127.0.0.1", port=knot_port, timeout=1)
                keys = [r for r in response.answer if r.rdtype == dns.rdatatype.DNSKEY]
                if keys:
                    anchors += "".join(rrset.to_text() + "\n" for rrset in keys)
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no DNSKEY for {zone} from knot")
            time.sleep(0.1)
    return anchors


def _config(workdir: Path, port: int, knot_port: int, stubs: Sequence[str]) -> str:
    stub_zones = "".join(f'stub-zone:\n    name: "{z}"\n    stub-addr: 127.0.0.1@{knot_port}\n'
                         for z in stubs)
    # unbound answers the special-use "test." itself (RFC 6761) unless told not to
    local_zones = "".join(f'    local-zone: "{tld}." nodefault\n'
                          for tld in sorted({z.rsplit(".", 1)[-1] for z in stubs} & {"test"}))
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    do-not-query-localhost: no
    module-config: "validator iterator"
    trust-anchor-file: "{workdir}/anchors"
    qname-minimisation: no
    access-control: 127.0.0.0/8 allow
{local_zones}{stub_zones}remote-control:
    control-enable: no
"""


def _validated(port: int, zone: str) -> bool:
    query = dns.message.make_query(zone + ".", dns.rdatatype.SOA, want_dnssec=True)
    with contextlib.suppress(dns.exception.Timeout, OSError):
        answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
        return answer.rcode() == dns.rcode.NOERROR and bool(answer.flags & dns.flags.AD)
    return False


@contextlib.contextmanager
def start_unbound(knot_port: int, stubs: Iterable[str],
                  anchored: Sequence[str]) -> Iterator[UnboundServer]:
    """Run a validating unbound in front of knot for the duration of the ``with`` block."""
    program = require_peer("unbound")
    if not anchored:
        raise ValueError("a validating resolver needs at least one anchored zone")
    stubs = [z.rstrip(".").lower() for z in stubs]
    anchors = dnskey_anchors(knot_port, anchored)
    workdir = Path(tempfile.mkdtemp(prefix="unbound-"))
    try:
        port = free_port()
        (workdir / "anchors").write_text(anchors)
        conf = workdir / "unbound.conf"
        conf.write_text(_config(workdir, port, knot_port, stubs))
        argv = [program, "-d", "-c", str(conf)]
        with foreground(argv, workdir / "unbound.log", lambda: _validated(port, anchored[0]),
                        timeout=STARTUP_TIMEOUT) as pid:
            yield UnboundServer(host="127.0.0.1", port=port, pid=pid, workdir=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def start_validating(zones: Mapping[str, str],
                     signed: Sequence[str]) -> Iterator[tuple[KnotServer, UnboundServer]]:
    """knotd serving ``zones`` (those in ``signed`` signed on load) and a validating unbound
    with stub zones for all of them and the ``signed`` ones anchored."""
    require_peer("knotd")
    require_peer("unbound")
    with start_knot(zones, signed=signed) as knot, \
            start_unbound(knot.port, list(zones), signed) as unbound:
        yield knot, unbound
