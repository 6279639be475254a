"""The STARTTLS probe of one MX for ``mailmoat check`` (layer L3).

:func:`probe_starttls` is :func:`mailmoat.net.probe.probe` (the ``mailmoat probe`` engine)
reduced to what a posture check needs: one connection to ``host:25`` or a given address,
greeting, EHLO, STARTTLS when offered (RFC 3207), EHLO, QUIT; no mail transaction, no TLS
version sweep, no DANE or MTA-STS (the check does those from its own DNS answers). The
certificate is received without being enforced, so that what a strict sender would refuse can
still be described (TLS version, cipher, names, validity dates), and is then judged - chain
and RFC 6125 name against the system store or ``cafile`` - by
:func:`mailmoat.net.smtp_client.check_certificate`: a refusal there is the
:attr:`ProbeResult.certificate_problem`. The outcome is a :class:`ProbeResult` value, never an
exception.

SECURITY: the server is untrusted: every step is bounded by ``timeout`` and the whole probe by
``2 * timeout + 1`` seconds, replies are parsed by the engine, certificate text is returned as
data (callers print it as plain text), and nothing the server says is acted upon beyond the
STARTTLS offer.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailmoat import limits
from mailmoat.net.probe import ProbeError, ProbeReport, probe
from mailmoat.net.smtp_client import TLSDetails

__all__ = ["ProbeResult", "probe_starttls"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """What one probe saw. ``certificate_problem`` is None when the chain and the name
    ``host`` verify; ``error`` says why the probe stopped early (then later fields are None)."""

    host: str
    port: int
    connected: bool
    banner: str | None = None
    starttls_offered: bool | None = None
    tls: TLSDetails | None = None
    certificate_problem: str | None = None
    error: str | None = None

    @property
    def certificate_valid(self) -> bool:
        return self.tls is not None and self.certificate_problem is None

    def expires_in(self, now: datetime.datetime) -> datetime.timedelta | None:
        if self.tls is None or self.tls.not_after is None:
            return None
        return self.tls.not_after - now

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "connected": self.connected,
            "banner": self.banner,
            "starttls_offered": self.starttls_offered,
            "tls": self.tls.as_dict() if self.tls else None,
            "certificate_valid": self.certificate_valid if self.tls else None,
            "certificate_problem": self.certificate_problem,
            "error": self.error,
        }


async def probe_starttls(
    host: str,
    *,
    port: int = 25,
    timeout: float = limits.POSTURE_SMTP_TIMEOUT,
    helo: str | None = None,
    cafile: Path | str | None = None,
    connect_to: str | None = None,
) -> ProbeResult:
    """Probe ``host`` (the MX name: SNI and the certificate name). ``connect_to`` replaces the
    address connected to (an address of the MX found through our own resolver; tests)."""
    try:
        async with asyncio.timeout(2 * timeout + 1):
            report = await probe(connect_to or host, port, mode="starttls", server_name=host,
                                 helo=helo, cafile=cafile, timeout=timeout,
                                 test_versions=False, dane=False)
    except TimeoutError:
        return ProbeResult(host=host, port=port, connected=False,
                           error=f"timed out after {timeout:g} s")
    except ProbeError as exc:
        return ProbeResult(host=host, port=port, connected=False, error=str(exc))
    return _result(host, port, report)


def _result(host: str, port: int, report: ProbeReport) -> ProbeResult:
    banner = report.banner.text.split("\n")[0][:200] if report.banner else None
    offered = report.starttls_offered
    if not report.tls:
        # Why there is no TLS: the session failed, the handshake failed, or nothing offered it.
        error = report.error or report.tls_error
        if error is None and offered:
            error = "STARTTLS offered but not completed"
        return ProbeResult(host=host, port=port, connected=report.connected, banner=banner,
                           starttls_offered=offered, error=error)
    problem = report.certificate_problem
    leaf = report.chain[0] if report.chain else None
    # The handshake did not enforce the certificate (it was judged afterwards), so, as
    # smtp_client.tls_details says of an unenforced one, "verified" is False and the judgement
    # is in verify_error.
    tls = TLSDetails(
        version=report.tls_version or "unknown",
        cipher=report.cipher or "unknown",
        bits=report.cipher_bits or 0,
        server_name=host,
        subject=leaf.subject if leaf else (
            "(unparsable certificate)" if report.chain_der else None),
        issuer=leaf.issuer if leaf else None,
        san=leaf.san if leaf else (),
        not_before=leaf.not_before if leaf else None,
        not_after=leaf.not_after if leaf else None,
        verified=False,
        verify_error="not verified (verification disabled)" + (
            f"; a check finds: {problem}" if problem
            else f"; the certificate would verify for {host}"),
    )
    return ProbeResult(host=host, port=port, connected=True, banner=banner,
                       starttls_offered=True, tls=tls, certificate_problem=problem,
                       error=report.error)
