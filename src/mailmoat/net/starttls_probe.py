"""The STARTTLS probe of one MX for ``mailmoat check`` (layer L3).

:func:`probe_starttls` asks :func:`mailmoat.net.smtp_client.probe` (connect to ``host:25`` or a
given address, greeting, EHLO, STARTTLS when offered (RFC 3207), EHLO, QUIT; no mail
transaction) first *without* enforcing the certificate, so that what a strict sender would
refuse can still be described (TLS version, cipher, names, validity dates), then, when TLS
worked, once more *with* verification (chain and RFC 6125 name, against the system store or
``cafile``): a refusal there is the :attr:`ProbeResult.certificate_problem`. The outcome is a
:class:`ProbeResult` value, never an exception.

SECURITY: the server is untrusted: every wait is bounded by one overall ``timeout``, replies
are parsed by the engine, certificate text is returned as data (callers print it as plain
text), and nothing the server says is acted upon beyond the STARTTLS offer.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailmoat import limits
from mailmoat.net.smtp_client import SendError, Timeouts, TLSDetails, probe

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
    target = connect_to or host
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"  # an IPv6 literal for smtp_client
    timeouts = Timeouts.uniform(timeout)
    try:
        async with asyncio.timeout(2 * timeout + 1):
            return await _probe(host, target, port, helo, cafile, timeouts)
    except TimeoutError:
        return ProbeResult(host=host, port=port, connected=False,
                           error=f"timed out after {timeout:g} s")


async def _probe(  # noqa: PLR0917 - private helper of probe_starttls
    host: str, target: str, port: int, helo: str | None, cafile: Path | str | None,
    timeouts: Timeouts,
) -> ProbeResult:
    try:
        session = await probe(target, port=port, server_name=host, helo=helo, cafile=cafile,
                              verify=False, timeouts=timeouts)
    except SendError as exc:
        return _failed(host, port, exc)
    except ValueError as exc:
        return ProbeResult(host=host, port=port, connected=False, error=str(exc))
    banner = session.greeting.text.split("\n")[0][:200] if session.greeting else None
    before = session.ehlo_before_tls
    offered = before is not None and "STARTTLS" in before
    if session.tls is None:
        return ProbeResult(host=host, port=port, connected=True, banner=banner,
                           starttls_offered=offered,
                           error=None if not offered else "STARTTLS offered but not completed")
    # Verification enforced by OpenSSL (chain and RFC 6125 name), on a second connection:
    # the first one reported everything without refusing.
    problem: str | None = None
    try:
        await probe(target, port=port, server_name=host, helo=helo, cafile=cafile,
                    verify=True, timeouts=timeouts)
    except SendError as exc:
        problem = str(exc) if exc.stage == "tls" else f"could not re-check: {exc}"
    return ProbeResult(host=host, port=port, connected=True, banner=banner,
                       starttls_offered=True, tls=session.tls, certificate_problem=problem)


def _failed(host: str, port: int, exc: SendError) -> ProbeResult:
    session = exc.session
    connected = exc.stage != "connect"
    banner = session.greeting.text.split("\n")[0][:200] if session.greeting else None
    before = session.ehlo_before_tls
    offered = None if before is None else "STARTTLS" in before
    return ProbeResult(host=host, port=port, connected=connected, banner=banner,
                       starttls_offered=offered, tls=session.tls, error=str(exc))
