"""``mailmoat probe``: what a sending MTA sees of one SMTP server (layer L3).

:func:`probe` connects to ``host:port`` and reports, as a :class:`ProbeReport` value:

* the banner and the EHLO capabilities before and after TLS (STARTTLS, RFC 3207; or implicit
  TLS, RFC 8314 §3.3 - port 465 by default);
* the TLS version and cipher a current client negotiates (TLS 1.2+, as our own sender), the
  certificate chain (subject, issuer, names, validity, key) and whether it verifies against
  the system CA store or ``cafile`` and matches the server name (PKIX, RFC 6125);
* the TLS versions the server accepts, 1.0 to 1.3: one handshake per version with
  ``minimum_version == maximum_version``. OpenSSL 3 only offers TLS 1.0/1.1 at security level
  0, so those handshakes use ``@SECLEVEL=0``; when our OpenSSL cannot offer a version at all,
  the report says "not offered by our OpenSSL" instead of "refused";
* the DANE verdict (RFC 7672) from the TLSA RRset at ``_PORT._tcp.HOST``, trusted only when the
  resolver's answer was authenticated (:mod:`mailmoat.auth.dane`);
* the MTA-STS verdict (RFC 8461) for this host as an MX of ``mtasts_domain``
  (:mod:`mailmoat.net.mtasts`);
* findings with a severity and a one-line fix - among them AUTH offered before TLS (RFC 8314
  §3: credentials must not cross the network in cleartext).

It is the counterpart of Postfix's ``posttls-finger``; the interop tests compare the two on
the same server.

The SMTP dialogue is the sans-IO :class:`~mailmoat.smtp.client.ClientConnection`; this module
owns the sockets, the TLS handshakes and the timeouts. No mail is sent: greeting, EHLO,
STARTTLS, EHLO, QUIT.

SECURITY: the server is untrusted. Replies are parsed and bounded by the engine (line length,
line count, CRLF framing, no data between the 220 to STARTTLS and the handshake); every wait
is bounded by ``timeout``; the number of connections is fixed (one, plus one per TLS version).
Certificates are received without verification (so they can be described) and judged
afterwards by ``cryptography``; their text is returned as data and the CLI prints it as plain
text, never as markup. Nothing the server says is acted upon except the STARTTLS offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import socket
import ssl
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from mailmoat import limits
from mailmoat.auth.dane import (
    DANEResult,
    certificate_names,
    evaluate,
    lookup_tlsa,
    name_matches,
)
from mailmoat.auth.mtasts import PolicyCache, TLSState, decide
from mailmoat.clock import SYSTEM_CLOCK
from mailmoat.errors import LocalProtocolError, RemoteProtocolError
from mailmoat.net.fetch import Fetcher
from mailmoat.net.mtasts import MTASTSClient
from mailmoat.net.smtp_client import check_certificate
from mailmoat.net.tls import peer_chain
from mailmoat.resolver import Resolver, is_ip_address
from mailmoat.smtp.client import ClientConnection, ClientEvent, CommandReply, EhloResponse
from mailmoat.smtp.replies import Reply

__all__ = [
    "TLS_VERSIONS",
    "CertificateInfo",
    "Finding",
    "ProbeError",
    "ProbeReport",
    "Severity",
    "VersionResult",
    "default_mode",
    "describe_certificate",
    "parse_target",
    "probe",
]

Severity = Literal["high", "medium", "low", "info"]
Mode = Literal["starttls", "implicit-tls"]
VersionStatus = Literal["accepted", "refused", "not-offered-by-us", "not-tested"]

#: The versions swept, oldest first, with OpenSSL's names (``SSLSocket.version()``).
TLS_VERSIONS: Final = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_LEGACY: Final = frozenset({"TLSv1", "TLSv1.1"})
#: RFC 8314 §7.3: port 465 is implicit TLS ("submissions").
IMPLICIT_TLS_PORTS: Final = frozenset({465})
#: Certificates expiring within this many days are a finding (Let's Encrypt renews at 30).
EXPIRY_WARNING_DAYS: Final = 14
#: Smallest RSA server key without a finding: 112-bit security (NIST SP 800-57 Part 1).
RSA_MIN_BITS: Final = 2048


class ProbeError(ValueError):
    """Bad arguments to :func:`probe` or :func:`parse_target` (before any connection)."""


# --- values ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateInfo:
    """One certificate of the presented chain, as text for people and JSON."""

    subject: str
    issuer: str
    san: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    key_type: str  # "RSA", "EC P-256", "Ed25519", ...
    key_bits: int | None
    sha256: str  # fingerprint of the DER certificate, hex
    self_issued: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "issuer": self.issuer, "san": list(self.san),
            "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
            "key_type": self.key_type, "key_bits": self.key_bits, "sha256": self.sha256,
            "self_issued": self.self_issued,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionResult:
    """One TLS version handshake: ``accepted`` (with the cipher), ``refused`` by the server,
    ``not-offered-by-us`` (our OpenSSL cannot offer it), ``not-tested`` (no TLS at all)."""

    version: str
    status: VersionStatus
    cipher: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.status, "cipher": self.cipher,
                "detail": self.detail}


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """Something a server operator should know, with a one-line fix."""

    severity: Severity
    code: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class MTASTSVerdict:
    domain: str
    mode: str | None  # enforce / testing / none, None without a policy
    mx: tuple[str, ...]
    source: str
    deliver: bool
    failure: str | None
    reason: str
    problem: str | None = None  # why no policy was found, when it is relevant

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "mode": self.mode, "mx": list(self.mx),
                "source": self.source, "deliver": self.deliver, "failure": self.failure,
                "reason": self.reason, "problem": self.problem}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReport:
    """Everything one probe saw. ``error`` says why the probe stopped early."""

    host: str
    port: int
    mode: Mode
    server_name: str | None
    connected: bool = False
    error: str | None = None
    banner: Reply | None = None
    ehlo_name: str | None = None
    ehlo_before_tls: Mapping[str, str] | None = None
    ehlo_after_tls: Mapping[str, str] | None = None
    starttls_offered: bool | None = None
    tls_version: str | None = None
    cipher: str | None = None
    cipher_bits: int | None = None
    tls_error: str | None = None
    chain: tuple[CertificateInfo, ...] = ()
    chain_der: tuple[bytes, ...] = field(default=(), repr=False)
    certificate_problem: str | None = None  # None: chain and name verify
    chain_trusted: bool | None = None
    name_matches: bool | None = None
    versions: tuple[VersionResult, ...] = ()
    dane: DANEResult | None = None
    dane_name: str | None = None
    mtasts: MTASTSVerdict | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def tls(self) -> bool:
        return self.tls_version is not None

    @property
    def certificate_valid(self) -> bool:
        return self.tls and self.certificate_problem is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "mode": self.mode,
            "server_name": self.server_name, "connected": self.connected, "error": self.error,
            "banner": None if self.banner is None else {
                "code": self.banner.code, "text": self.banner.text},
            "ehlo_name": self.ehlo_name,
            "ehlo_before_tls": None if self.ehlo_before_tls is None
            else dict(self.ehlo_before_tls),
            "ehlo_after_tls": None if self.ehlo_after_tls is None else dict(self.ehlo_after_tls),
            "starttls_offered": self.starttls_offered,
            "tls": None if not self.tls else {
                "version": self.tls_version, "cipher": self.cipher, "bits": self.cipher_bits},
            "tls_error": self.tls_error,
            "certificate": {
                "chain": [c.as_dict() for c in self.chain],
                "valid": self.certificate_valid if self.tls else None,
                "problem": self.certificate_problem,
                "chain_trusted": self.chain_trusted,
                "name_matches": self.name_matches,
            },
            "versions": [v.as_dict() for v in self.versions],
            "dane": None if self.dane is None else {"tlsa_name": self.dane_name,
                                                    **self.dane.as_dict()},
            "mta_sts": None if self.mtasts is None else self.mtasts.as_dict(),
            "findings": [f.as_dict() for f in self.findings],
        }


# --- arguments ---------------------------------------------------------------------------------
def default_mode(port: int) -> Mode:
    """Port 465 is implicit TLS (RFC 8314 §3.3, §7.3); every other port uses STARTTLS."""
    return "implicit-tls" if port in IMPLICIT_TLS_PORTS else "starttls"


def parse_target(target: str, default_port: int = 25) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` (a bare IPv6 address too)."""
    text = target.strip()
    if not text or any(c in text for c in "\r\n\0 /"):
        raise ProbeError(f"bad target {target!r}")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ProbeError(f"bad target {target!r}: missing ]")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ProbeError(f"bad target {target!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ProbeError(f"bad target {target!r}: bracket an IPv6 address") from None
    if not host or len(host) > limits.DNS_NAME_MAX:
        raise ProbeError(f"bad target {target!r}: no host")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ProbeError(f"bad port {port_text!r}")
        port = int(port_text)
    return host.rstrip(".") if not is_ip_address(host) else host, port



# --- certificates ------------------------------------------------------------------------------
def _key_description(cert: x509.Certificate) -> tuple[str, int | None]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return "unknown", None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, None


def describe_certificate(der: bytes) -> CertificateInfo:
    """Describe one DER certificate (raises ``ValueError`` when it cannot be parsed)."""
    cert = x509.load_der_x509_certificate(der)
    key_type, bits = _key_description(cert)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san=certificate_names(cert) if _has_san(cert) else (),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=key_type,
        key_bits=bits,
        sha256=hashlib.sha256(der).hexdigest(),
        self_issued=cert.issuer == cert.subject,
    )


def _has_san(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return True


# --- TLS contexts ------------------------------------------------------------------------------
def _base_context() -> ssl.SSLContext:
    """Receive any certificate (it is judged afterwards); no compression, no renegotiation."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def _main_context() -> ssl.SSLContext:
    """What a current sender offers: TLS 1.2 and 1.3 with OpenSSL's default suites."""
    ctx = _base_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _version_context(version: str) -> ssl.SSLContext | str:
    """A context offering only ``version``, or the reason our OpenSSL cannot offer it."""
    member = {"TLSv1": "TLSv1", "TLSv1.1": "TLSv1_1", "TLSv1.2": "TLSv1_2",
              "TLSv1.3": "TLSv1_3"}[version]
    has = {"TLSv1": ssl.HAS_TLSv1, "TLSv1.1": ssl.HAS_TLSv1_1, "TLSv1.2": ssl.HAS_TLSv1_2,
           "TLSv1.3": ssl.HAS_TLSv1_3}[version]
    if not has:
        return f"{version} is not compiled into our OpenSSL ({ssl.OPENSSL_VERSION})"
    ctx = _base_context()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 members
            tls_version = getattr(ssl.TLSVersion, member)
            ctx.minimum_version = tls_version
            ctx.maximum_version = tls_version
        if version in _LEGACY:
            # OpenSSL 3 disallows SHA-1 (and MD5-SHA1) signatures from security level 1 up,
            # and TLS 1.0/1.1 handshakes need them ("legacy sigalg disallowed"): level 0.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        return f"our OpenSSL refuses to offer {version}: {exc}"
    return ctx


_OUR_SIDE: Final = ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "UNSUPPORTED_PROTOCOL")


# --- the connection --------------------------------------------------------------------------
class _Failure(Exception):
    """The probe cannot go on; the text goes into the report."""


class _Session:
    """One SMTP connection: the engine, the stream, bounded waits."""

    def __init__(self, timeout: float) -> None:
        self.conn = ClientConnection()
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: deque[ClientEvent] = deque()

    async def open(self, host: str, port: int, context: ssl.SSLContext | None,
                   sni: str | None) -> None:
        """Connect; with ``context``, do the TLS handshake at once (implicit TLS). The TCP
        connection and the handshake are separate steps, so a refused handshake is told
        apart from an unreachable server."""
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=limits.SMTP_REPLY_LINE_MAX * 4),
                self.timeout,
            )
        except TimeoutError:
            raise _Failure(f"cannot connect to {host}:{port}: timed out") from None
        except OSError as exc:
            raise _Failure(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        if context is not None:
            await self._handshake(context, sni)

    async def _handshake(self, context: ssl.SSLContext, sni: str | None) -> None:
        assert self.writer is not None
        try:
            await asyncio.wait_for(
                self.writer.start_tls(context, server_hostname=sni,
                                      ssl_handshake_timeout=self.timeout),
                self.timeout * 2,
            )
        except ssl.SSLError as exc:
            raise _TLSFailure(_ssl_text(exc)) from None
        except TimeoutError:
            raise _TLSFailure("TLS handshake timed out") from None
        except (ConnectionError, OSError) as exc:
            raise _TLSFailure("the connection was closed during the TLS handshake "
                              f"({exc or type(exc).__name__})") from None

    async def event(self) -> ClientEvent:
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while not self.events:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except TimeoutError:
                raise _Failure(f"no reply from the server within {self.timeout:g} s") from None
            except (ConnectionError, OSError) as exc:
                raise _Failure(f"connection lost: {exc}") from None
            if not data:
                raise _Failure("the server closed the connection")
            try:
                self.events.extend(self.conn.receive_data(data))
            except RemoteProtocolError as exc:
                raise _Failure(f"protocol violation by the server: {exc}") from None
        return self.events.popleft()

    async def command(self, data: bytes) -> ClientEvent:
        assert self.writer is not None
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except TimeoutError:
            raise _Failure("timed out sending to the server") from None
        except (ConnectionError, OSError) as exc:
            raise _Failure(f"connection lost while sending: {exc}") from None
        return await self.event()

    async def hello(self, name: str) -> tuple[str | None, Mapping[str, str]]:
        """EHLO, falling back to HELO (RFC 5321 §3.2); the capabilities (``{}`` after HELO)."""
        event = await self.command(self.conn.ehlo(name))
        if isinstance(event, EhloResponse):
            return event.domain, event.extensions
        if isinstance(event, CommandReply) and event.reply.code in (500, 502, 504, 550):
            event = await self.command(self.conn.helo(name))
            if event.reply.code == 250:
                return None, {}
        raise _Failure(f"EHLO/HELO refused: {_reply_text(event.reply)}")

    async def starttls(self, context: ssl.SSLContext, sni: str | None) -> ssl.SSLObject:
        event = await self.command(self.conn.starttls())
        if event.reply.code != 220:
            raise _TLSFailure(f"STARTTLS refused: {_reply_text(event.reply)}")
        await self._handshake(context, sni)
        try:
            self.conn.tls_established()
        except (LocalProtocolError, RemoteProtocolError) as exc:
            raise _Failure(f"protocol violation by the server: {exc}") from None
        return self.ssl_object()

    def ssl_object(self) -> ssl.SSLObject:
        assert self.writer is not None
        obj = self.writer.get_extra_info("ssl_object")
        assert isinstance(obj, ssl.SSLObject)
        return obj

    async def close(self) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            if not self.conn.closed and not self.conn.awaiting_tls:
                with contextlib.suppress(_Failure, LocalProtocolError):
                    await self.command(self.conn.quit())
        finally:
            writer.close()
            with contextlib.suppress(Exception):  # peers may close without close_notify
                await asyncio.wait_for(writer.wait_closed(), min(self.timeout, 5.0))


class _TLSFailure(_Failure):
    """The TLS handshake (or the STARTTLS command) failed."""


def _ssl_text(exc: ssl.SSLError) -> str:
    return f"TLS handshake failed: {exc.reason or exc}"


def _reply_text(reply: Reply) -> str:
    return f"{reply.code} {reply.text.replace(chr(10), ' / ')}"


def _default_helo() -> str:
    """Our host name when it is a valid EHLO domain, else ``localhost``."""
    name = socket.getfqdn()
    try:
        scratch = ClientConnection()
        scratch.receive_data(b"220 x\r\n")
        scratch.ehlo(name)
    except LocalProtocolError:
        return "localhost"
    return name


# --- the probe ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class _Target:
    """Where and how to connect (the same for every connection of one probe)."""

    host: str
    port: int
    mode: Mode
    sni: str | None
    helo: str
    timeout: float


async def _main_session(target: _Target, out: dict[str, Any]) -> None:
    session = _Session(target.timeout)
    sni, helo = target.sni, target.helo
    try:
        implicit = target.mode == "implicit-tls"
        try:
            await session.open(target.host, target.port,
                               _main_context() if implicit else None, sni)
        except _TLSFailure as exc:
            out["connected"] = True
            out["tls_error"] = str(exc)
            return
        out["connected"] = True
        if implicit:
            _record_tls(session.ssl_object(), out)
        greeting = await session.event()
        out["banner"] = greeting.reply
        if greeting.reply.code != 220:
            out["error"] = f"the server refused the session: {_reply_text(greeting.reply)}"
            return
        name, capabilities = await session.hello(helo)
        out["ehlo_name"] = name
        out["ehlo_after_tls" if implicit else "ehlo_before_tls"] = dict(capabilities)
        if implicit:
            return
        out["starttls_offered"] = "STARTTLS" in capabilities
        if not out["starttls_offered"]:
            return
        try:
            ssl_object = await session.starttls(_main_context(), sni)
        except _TLSFailure as exc:
            out["tls_error"] = str(exc)
            return
        _record_tls(ssl_object, out)
        _, after = await session.hello(helo)
        out["ehlo_after_tls"] = dict(after)
    except _Failure as exc:
        out.setdefault("error", str(exc))
    finally:
        await session.close()


def _record_tls(ssl_object: ssl.SSLObject, out: dict[str, Any]) -> None:
    cipher = ssl_object.cipher()
    out["tls_version"] = ssl_object.version()
    out["cipher"] = cipher[0] if cipher else None
    out["cipher_bits"] = cipher[2] if cipher else None
    out["chain_der"] = tuple(peer_chain(ssl_object))


async def _try_version(target: _Target, version: str
                       ) -> tuple[VersionResult, tuple[bytes, ...]]:
    """One handshake offering only ``version``; the result and, when accepted, the chain."""
    context = _version_context(version)
    if isinstance(context, str):
        return VersionResult(version=version, status="not-offered-by-us", detail=context), ()
    session = _Session(target.timeout)
    try:
        if target.mode == "implicit-tls":
            await session.open(target.host, target.port, context, target.sni)
            ssl_object = session.ssl_object()
        else:
            await session.open(target.host, target.port, None, target.sni)
            greeting = await session.event()
            if greeting.reply.code != 220:
                raise _Failure(f"the server refused the session: {_reply_text(greeting.reply)}")
            await session.hello(target.helo)
            ssl_object = await session.starttls(context, target.sni)
        cipher = ssl_object.cipher()
        negotiated = ssl_object.version()
        chain = tuple(peer_chain(ssl_object))
    except _TLSFailure as exc:
        text = str(exc)
        if any(marker in text.upper() for marker in _OUR_SIDE):
            return VersionResult(version=version, status="not-offered-by-us",
                                 detail=f"our OpenSSL could not offer it ({text})"), ()
        return VersionResult(version=version, status="refused", detail=text), ()
    except _Failure as exc:
        return VersionResult(version=version, status="not-tested", detail=str(exc)), ()
    finally:
        await session.close()
    if negotiated != version:  # cannot happen with min == max; said rather than assumed
        return VersionResult(version=version, status="refused",
                             detail=f"negotiated {negotiated} instead"), ()
    return VersionResult(version=version, status="accepted",
                         cipher=cipher[0] if cipher else None), chain


def _judge_certificate(chain: tuple[bytes, ...], name: str, cafile: Path | str | None,
                       out: dict[str, Any]) -> None:
    infos: list[CertificateInfo] = []
    for der in chain:
        try:
            infos.append(describe_certificate(der))
        except ValueError:
            break
    out["chain"] = tuple(infos)
    if not chain:
        out["certificate_problem"] = "the server sent no certificate"
        return
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
    except ValueError:
        out["certificate_problem"] = "the server's certificate cannot be parsed"
        return
    names = certificate_names(leaf)
    out["name_matches"] = any(name_matches(n, name) for n in names)
    problem = check_certificate(list(chain), name, cafile=cafile)
    out["certificate_problem"] = problem
    if problem is None:
        out["chain_trusted"] = True
    elif not out["name_matches"]:
        # Judge the chain alone: verify it for a name the certificate does carry.
        dns = [n for n in names if not n.startswith("*.")] or [
            "x" + n[1:] for n in names if n.startswith("*.")]
        out["chain_trusted"] = bool(dns) and check_certificate(
            list(chain), dns[0], cafile=cafile) is None
    else:
        out["chain_trusted"] = False


async def _mtasts_verdict(domain: str, mx_host: str, resolver: Resolver, *,
                          fetcher: Fetcher | None, cafile: Path | str | None,
                          tls: TLSState) -> MTASTSVerdict:
    own = fetcher is None
    active = fetcher or Fetcher(cafile=cafile)
    try:
        client = MTASTSClient(resolver, active, PolicyCache(SYSTEM_CLOCK))
        outcome = await client.policy_for(domain)
    finally:
        if own:
            await active.aclose()
    policy = outcome.policy
    decision = decide(policy, mx_host, tls)
    problem = outcome.lookup.problem
    if outcome.fetch is not None and outcome.fetch.error:
        problem = f"policy fetch failed: {outcome.fetch.error}"
    return MTASTSVerdict(
        domain=outcome.domain,
        mode=policy.mode.value if policy else None,
        mx=policy.mx if policy else (),
        source=outcome.source,
        deliver=decision.deliver,
        failure=decision.failure,
        reason=decision.reason,
        problem=problem,
    )


async def probe(
    host: str,
    port: int = 25,
    *,
    mode: Mode | None = None,
    server_name: str | None = None,
    helo: str | None = None,
    cafile: Path | str | None = None,
    timeout: float = limits.PROBE_TIMEOUT,
    test_versions: bool = True,
    resolver: Resolver | None = None,
    dane: bool = True,
    mtasts_domain: str | None = None,
    fetcher: Fetcher | None = None,
    now: datetime.datetime | None = None,
) -> ProbeReport:
    """Probe ``host:port`` (see the module docstring). Never raises for what the server does;
    bad arguments raise :class:`ProbeError` before connecting.

    ``mode`` defaults to :func:`default_mode`. ``server_name`` is the SNI name and the name
    the certificate must match (default: ``host`` when it is a name; an IP address is checked
    against the certificate's iPAddress names and sends no SNI). ``resolver`` enables DANE
    (TLSA at ``_PORT._tcp.NAME``, only trusted when its answers carry ``authenticated``;
    ``dane=False`` skips it) and,
    with ``mtasts_domain``, the MTA-STS verdict (policy fetched with ``fetcher``, default a
    :class:`Fetcher` trusting ``cafile`` or the system store).
    """
    if timeout <= 0:
        raise ProbeError("timeout must be positive")
    for what, value in (("host", host), ("server_name", server_name), ("helo", helo)):
        if value is not None and any(c in value for c in "\r\n\0"):
            raise ProbeError(f"{what} contains CR, LF or NUL")
    if not host:
        raise ProbeError("host is empty")
    if not 0 < port < 65536:
        raise ProbeError(f"port {port} out of range")
    mode = mode or default_mode(port)
    if mode not in ("starttls", "implicit-tls"):
        raise ProbeError(f"mode must be starttls or implicit-tls, not {mode!r}")
    connect_host = host.strip("[]")
    name = server_name or (None if is_ip_address(connect_host) else host)
    helo_name = helo or _default_helo()
    check = ClientConnection()
    check.receive_data(b"220 x\r\n")
    try:
        check.ehlo(helo_name)
    except LocalProtocolError as exc:
        raise ProbeError(f"HELO name {helo_name!r}: {exc}") from None

    target = _Target(host=connect_host, port=port, mode=mode, sni=name, helo=helo_name,
                     timeout=timeout)
    out: dict[str, Any] = {}
    await _main_session(target, out)
    connected = bool(out.get("connected"))
    tls_possible = mode == "implicit-tls" or bool(out.get("starttls_offered"))
    versions: list[VersionResult] = []
    if test_versions and connected and tls_possible and not out.get("error"):
        for version in TLS_VERSIONS:
            result, seen = await _try_version(target, version)
            versions.append(result)
            if seen and not out.get("chain_der"):
                # A current client could not negotiate TLS, an older version could: the chain
                # is still described and judged (tls_version stays None).
                out["chain_der"] = seen
    chain: tuple[bytes, ...] = out.get("chain_der", ())
    if chain or out.get("tls_version"):
        _judge_certificate(chain, name or connect_host, cafile, out)

    dane_result: DANEResult | None = None
    dane_name: str | None = None
    moment = now or datetime.datetime.now(datetime.UTC)
    if dane and resolver is not None and name is not None and not is_ip_address(name):
        lookup = await lookup_tlsa(resolver, name, port)
        dane_name = lookup.name
        dane_result = evaluate(lookup, chain if out.get("tls_version") else None, hostname=name,
                        now=moment)
    mtasts: MTASTSVerdict | None = None
    if mtasts_domain is not None and resolver is not None and name is not None:
        if not out.get("tls_version"):
            state = TLSState.NO_STARTTLS
        elif out.get("certificate_problem") is None:
            state = TLSState.VALID
        else:
            state = TLSState.INVALID_CERTIFICATE
        mtasts = await _mtasts_verdict(mtasts_domain, name, resolver, fetcher=fetcher,
                                       cafile=cafile, tls=state)

    report = ProbeReport(
        host=host, port=port, mode=mode, server_name=name,
        connected=connected, error=out.get("error"), banner=out.get("banner"),
        ehlo_name=out.get("ehlo_name"),
        ehlo_before_tls=out.get("ehlo_before_tls"), ehlo_after_tls=out.get("ehlo_after_tls"),
        starttls_offered=out.get("starttls_offered"),
        tls_version=out.get("tls_version"), cipher=out.get("cipher"),
        cipher_bits=out.get("cipher_bits"), tls_error=out.get("tls_error"),
        chain=out.get("chain", ()), chain_der=chain,
        certificate_problem=out.get("certificate_problem"),
        chain_trusted=out.get("chain_trusted"), name_matches=out.get("name_matches"),
        versions=tuple(versions), dane=dane_result, dane_name=dane_name, mtasts=mtasts,
    )
    return _with_findings(report, moment)


# --- findings ----------------------------------------------------------------------------------
def _with_findings(report: ProbeReport, now: datetime.datetime) -> ProbeReport:
    found: list[Finding] = []

    def add(severity: Severity, code: str, message: str, fix: str) -> None:
        found.append(Finding(severity=severity, code=code, message=message, fix=fix))

    if not report.connected:
        add("high", "unreachable", report.error or "could not connect",
            "check the host name, port and firewall")
    if report.error and report.connected:
        add("high", "session-failed", report.error, "check the server's logs")
    before = report.ehlo_before_tls
    if report.mode == "starttls" and before is not None:
        if "AUTH" in before:
            mechanisms = before["AUTH"] or "(none listed)"
            add("high", "auth-before-tls",
                f"AUTH ({mechanisms}) is offered before TLS: clients may send passwords in "
                "cleartext (RFC 8314 §3)",
                "offer AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only = yes)")
        if not report.starttls_offered:
            add("high", "no-starttls", "STARTTLS is not offered: mail to this server travels "
                "unencrypted", "enable STARTTLS with a certificate (Postfix: "
                "smtpd_tls_security_level = may)")
    if report.tls_error:
        add("high", "tls-failed", report.tls_error,
            "check the server's certificate, key and TLS protocol settings")
    accepted = {v.version for v in report.versions if v.status == "accepted"}
    legacy = sorted(accepted & _LEGACY)
    if legacy:
        add("medium", "legacy-tls", f"{', '.join(legacy)} accepted (deprecated by RFC 8996)",
            "accept TLS 1.2 and 1.3 only (Postfix: smtpd_tls_protocols = >=TLSv1.2)")
    if report.versions and "TLSv1.3" not in accepted and any(
            v.version == "TLSv1.3" and v.status == "refused" for v in report.versions):
        add("low", "no-tls13", "TLS 1.3 is not accepted", "enable TLS 1.3 (RFC 8446)")
    if report.tls:
        leaf = report.chain[0] if report.chain else None
        if report.certificate_problem is not None:
            add("medium", "certificate-unverified",
                f"the certificate does not verify: {report.certificate_problem}",
                "serve a certificate from a public CA for the MX name, with its intermediates "
                "(MTA-STS requires it)")
        if report.name_matches is False:
            add("medium", "certificate-name",
                f"the certificate is not for {report.server_name or report.host}",
                "include the MX host name in the certificate's subjectAltName")
        if leaf is not None:
            if leaf.not_after < now:
                add("high", "certificate-expired",
                    f"the certificate expired on {leaf.not_after:%Y-%m-%d}", "renew it")
            elif leaf.not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
                add("low", "certificate-expiring",
                    f"the certificate expires on {leaf.not_after:%Y-%m-%d}", "renew it soon")
            if leaf.not_before > now:
                add("high", "certificate-not-yet-valid",
                    f"the certificate is valid only from {leaf.not_before:%Y-%m-%d}",
                    "check the server's clock and the certificate")
            if leaf.key_type == "RSA" and (leaf.key_bits or 0) < RSA_MIN_BITS:
                add("medium", "weak-key", f"RSA key of {leaf.key_bits} bits",
                    f"use RSA >= {RSA_MIN_BITS} bits or ECDSA P-256")
    dane = report.dane
    if dane is not None:
        status = dane.status.value
        if status == "mismatch":
            add("high", "dane-mismatch", f"DANE: {dane.reason}",
                "publish TLSA records that match the served certificate (3 1 1 of its key), "
                "or serve the certificate they describe")
        elif status == "indeterminate":
            add("medium", "dane-indeterminate", f"DANE: {dane.reason}",
                "fix the DNSSEC signatures of the TLSA records (DANE senders defer mail)")
        elif status == "no-usable-tlsa":
            add("low", "dane-unusable", f"DANE: {dane.reason}",
                "publish DANE-EE(3) or DANE-TA(2) records (RFC 7672 §3.1)")
    sts = report.mtasts
    if sts is not None and sts.failure is not None:
        add("high" if sts.mode == "enforce" else "medium", "mta-sts", f"MTA-STS: {sts.reason}",
            "make the policy's mx patterns cover this host and serve a valid certificate")
    return ProbeReport(**{**{f: getattr(report, f) for f in report.__dataclass_fields__},
                          "findings": tuple(found)})
