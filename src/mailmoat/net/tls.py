"""TLS contexts for the gateway (layer L3): server policy, SNI, hot reload, client contexts.

Built on the stdlib :mod:`ssl` module (OpenSSL) and :mod:`cryptography` for X.509 work.

Server policy (:func:`server_context`)
    TLS 1.2 minimum by default (``min_version="1.3"`` possible; RFC 8996 deprecates 1.0/1.1,
    RFC 8314 §4.1 asks for current TLS), TLS 1.2 suites restricted to ECDHE with AES-GCM or
    ChaCha20-Poly1305 (forward secrecy + AEAD, as RFC 9325 §4.2 recommends), TLS 1.3 suites
    left at OpenSSL's defaults (all AEAD), no TLS compression (CRIME), no renegotiation,
    server cipher preference, fresh ECDH keys per handshake.

Several certificates and SNI (:class:`ServerTLS`)
    One "front" context is given to asyncio (``start_server(ssl=tls.context)`` or
    ``loop.start_tls(..., tls.context, server_side=True)``). Its ``sni_callback`` switches every
    handshake to the context of the certificate matching the client's SNI name (exact or
    ``*.`` wildcard of one label, case-insensitive), else to the default certificate (the
    first one configured). The callback runs for handshakes without SNI too.

Reload without dropping connections
    :meth:`ServerTLS.reload` loads every certificate again and builds a new *generation* of
    contexts, then swaps one reference. Handshakes that start later use the new generation;
    connections already established (or mid-handshake) keep the ``SSLContext`` they were
    switched to, so nothing live is dropped. The front context stays the same object, so the
    listening sockets need no change. If the new files are bad, :class:`TLSConfigError` is
    raised and the old generation stays in use. :meth:`ServerTLS.reload_if_changed` is the
    cheap poll (one ``stat`` per file: inode, size, mtime) and :meth:`ServerTLS.watch` runs it
    periodically; the server calls :meth:`reload` on SIGHUP.

Errors
    At start-up a missing, unreadable or unparsable certificate or key, or a key that does not
    match its certificate, raises :class:`mailmoat.errors.TLSConfigError` naming the file.

SECURITY: certificate and key files are trusted configuration; they are read with a size cap
(:data:`mailmoat.limits.TLS_PEM_FILE_MAX`). The peer's certificate is untrusted: it is parsed
only by ``cryptography`` to print its subject, never used for decisions here;
:func:`peer_chain` hands it on as DER, at most :data:`mailmoat.limits.TLS_PEER_CHAIN_MAX`
certificates. SNI names sent
by clients are only compared with configured names (bounded by the DNS name limit) and never
echoed into logs unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailmoat import limits
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import TLSConfigError

__all__ = [
    "TLS12_CIPHERS",
    "CertificateSpec",
    "KeyType",
    "ServerTLS",
    "TLSInfo",
    "TLSVersionName",
    "client_context",
    "describe",
    "generate_self_signed",
    "load_certificate_names",
    "peer_chain",
    "server_context",
]

log = logging.getLogger(__name__)

TLSVersionName = Literal["1.2", "1.3"]
KeyType = Literal["ecdsa-p256", "rsa-2048"]

_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

#: TLS 1.2 cipher suites: ECDHE key exchange with an AEAD cipher only (RFC 9325 §4.2:
#: "TLS_ECDHE_*_WITH_AES_*_GCM_*" and ChaCha20-Poly1305, RFC 7905). TLS 1.3 suites are all
#: AEAD and are configured separately by OpenSSL (its defaults are kept).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def _tls_version(min_version: str) -> ssl.TLSVersion:
    try:
        return _VERSIONS[min_version]
    except KeyError:
        raise TLSConfigError(
            f"unsupported TLS min_version {min_version!r} (use one of: {', '.join(_VERSIONS)})"
        ) from None


def _check_readable(path: Path, what: str) -> bytes:
    """Read a PEM file, naming it in any error."""
    try:
        size = path.stat().st_size
        if size > limits.TLS_PEM_FILE_MAX:
            raise TLSConfigError(f"{what} file {path} is too large ({size} bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{what} file {path} does not exist") from None
    except PermissionError:
        raise TLSConfigError(f"{what} file {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise TLSConfigError(f"{what} file {path} is a directory") from None
    except OSError as exc:
        raise TLSConfigError(f"{what} file {path} cannot be read: {exc.strerror}") from None
    return data


def _policy_context(min_version: TLSVersionName | str) -> ssl.SSLContext:
    """A server context carrying our protocol policy, no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _tls_version(min_version)
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    # Clients are not asked for certificates (SMTP AUTH is the client authentication).
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    cert_pem = _check_readable(cert, "certificate")
    key_pem = _check_readable(key, "private key")
    try:
        x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TLSConfigError(f"certificate file {cert} holds no valid PEM certificate") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSConfigError(
            f"private key file {key} is encrypted; a key without passphrase is required"
        ) from None
    except ValueError:
        raise TLSConfigError(f"private key file {key} holds no valid PEM private key") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise TLSConfigError(f"private key file {key} cannot be used: {exc}") from None
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TLSConfigError(
                f"private key file {key} does not match certificate file {cert}"
            ) from None
        raise TLSConfigError(f"cannot load certificate {cert} with key {key}: {exc}") from None


def server_context(
    cert: Path | str, key: Path | str, *, min_version: TLSVersionName | str = "1.2"
) -> ssl.SSLContext:
    """One server context with our policy and one certificate chain (PEM cert + key)."""
    ctx = _policy_context(min_version)
    _load_chain(ctx, Path(cert), Path(key))
    return ctx


def load_certificate_names(cert: Path | str) -> tuple[str, ...]:
    """The DNS names of a certificate's subjectAltName (falling back to its CN), lowercased."""
    path = Path(cert)
    try:
        certificate = x509.load_pem_x509_certificate(_check_readable(path, "certificate"))
    except ValueError:
        raise TLSConfigError(f"certificate file {path} holds no valid PEM certificate") from None
    names: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [
            str(a.value).lower().rstrip(".")
            for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateSpec:
    """One certificate chain to serve: PEM ``cert`` (leaf first), PEM ``key``, and the SNI
    ``names`` it answers for (empty: the DNS names of its subjectAltName)."""

    cert: Path
    key: Path
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Generation:
    """One loaded set of certificates; replaced as a whole on reload."""

    default: ssl.SSLContext
    exact: Mapping[str, ssl.SSLContext]
    wildcard: Mapping[str, ssl.SSLContext]  # "example.org" for "*.example.org"
    stamps: Mapping[Path, tuple[int, int, int, int]]

    def select(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name or len(server_name) > limits.DNS_NAME_MAX:
            return self.default
        name = server_name.lower().rstrip(".")
        ctx = self.exact.get(name)
        if ctx is not None:
            return ctx
        _, dot, parent = name.partition(".")
        if dot:
            ctx = self.wildcard.get(parent)
            if ctx is not None:
                return ctx
        return self.default


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or rewritten: (device, inode, size, mtime ns)."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, -1, 0)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ServerTLS:
    """The server's TLS state: policy, the certificates by SNI name, and hot reload.

    ``certificates[0]`` is the default certificate (clients without SNI or with an unknown
    name get it). Hand :attr:`context` to asyncio; it never changes across reloads.
    """

    def __init__(
        self,
        certificates: Sequence[CertificateSpec],
        *,
        min_version: TLSVersionName | str = "1.2",
    ) -> None:
        if not certificates:
            raise TLSConfigError("no certificate configured")
        self._specs = tuple(certificates)
        self._min_version = min_version
        _tls_version(min_version)
        self._generation = self._build()
        self._requested: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        front = _policy_context(min_version)
        first = self._specs[0]
        _load_chain(front, first.cert, first.key)
        front.sni_callback = self._on_sni
        self._front = front

    @property
    def context(self) -> ssl.SSLContext:
        """The context to accept TLS with (stable across reloads)."""
        return self._front

    @property
    def certificates(self) -> tuple[CertificateSpec, ...]:
        return self._specs

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context the current generation serves for ``server_name``."""
        return self._generation.select(server_name)

    def requested_name(self, ssl_object: object) -> str | None:
        """The SNI name the client sent on ``ssl_object`` (an ``SSLObject``/``SSLSocket``)."""
        return self._requested.get(ssl_object)

    def _on_sni(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        generation = self._generation  # one read: a concurrent reload cannot mix generations
        if server_name:
            self._requested[ssl_object] = server_name[: limits.DNS_NAME_MAX]
        ssl_object.context = generation.select(server_name)
        return None

    def _build(self) -> _Generation:
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        stamps: dict[Path, tuple[int, int, int, int]] = {}
        default: ssl.SSLContext | None = None
        for spec in self._specs:
            # Stamp before loading: a change during the load is then seen by the next poll.
            stamps[spec.cert] = _stamp(spec.cert)
            stamps[spec.key] = _stamp(spec.key)
            ctx = server_context(spec.cert, spec.key, min_version=self._min_version)
            default = default or ctx
            names = spec.names or load_certificate_names(spec.cert)
            for raw in names:
                name = raw.lower().rstrip(".")
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], ctx)
                else:
                    exact.setdefault(name, ctx)
        assert default is not None
        return _Generation(default=default, exact=exact, wildcard=wildcard, stamps=stamps)

    def reload(self) -> None:
        """Load every certificate again; new handshakes use them, live connections keep theirs.

        Raises :class:`TLSConfigError` (and keeps serving the old certificates) if a file is
        now missing, unreadable or mismatched.
        """
        self._generation = self._build()
        log.info("TLS certificates reloaded (%d)", len(self._specs))

    def changed(self) -> bool:
        """Whether a certificate or key file changed since the last (attempted) load."""
        return any(_stamp(path) != stamp for path, stamp in self._generation.stamps.items())

    def reload_if_changed(self) -> bool:
        """Reload when a file changed. Returns True if a new generation is in use.

        A failed reload is logged and the old certificates stay; it is retried only after the
        files change again (so a half-written renewal is picked up once it is complete).
        """
        if not self.changed():
            return False
        try:
            self.reload()
        except TLSConfigError as exc:
            log.error("TLS reload failed, keeping the current certificates: %s", exc)
            old = self._generation
            stamps = {path: _stamp(path) for path in old.stamps}
            self._generation = _Generation(
                default=old.default, exact=old.exact, wildcard=old.wildcard, stamps=stamps
            )
            return False
        return True

    async def watch(self, interval: float = limits.TLS_RELOAD_POLL_INTERVAL) -> None:
        """Poll the files every ``interval`` seconds and reload on change (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()


def client_context(
    *,
    verify: bool = True,
    cafile: Path | str | None = None,
    min_version: TLSVersionName | str = "1.2",
    check_hostname: bool | None = None,
) -> ssl.SSLContext:
    """A client context for outbound SMTP.

    ``verify=True`` checks the chain against ``cafile`` (or the system store) and, unless
    ``check_hostname=False``, the name given as ``server_hostname=`` when wrapping (which is
    also the SNI name sent). ``verify=False`` is opportunistic TLS (RFC 7435): encrypted but
    unauthenticated; SNI is still sent when a ``server_hostname`` is given.
    """
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None
    )
    ctx.minimum_version = _tls_version(min_version)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if verify:
        ctx.check_hostname = True if check_hostname is None else check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSInfo:
    """What a TLS connection negotiated (for the Received header, logs and the envelope)."""

    version: str  # "TLSv1.3"
    cipher: str  # OpenSSL name, e.g. "TLS_AES_256_GCM_SHA384"
    bits: int  # secret bits of the cipher
    peer_subject: str | None = None  # RFC 4514 subject of the peer's certificate, if any
    server_name: str | None = None  # SNI: sent (client side) or requested (server side)
    verified: bool | None = None  # client side: was the peer certificate verified

    def comment(self) -> str:
        """The Received-field comment, in Postfix's form (RFC 5321 §4.4 allows a comment):
        ``using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``."""
        text = f"using {self.version} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"
        if self.peer_subject:
            text += f" client-certificate {_comment_safe(self.peer_subject)}"
        return text

    def as_dict(self) -> dict[str, str | int | bool | None]:
        return {
            "version": self.version,
            "cipher": self.cipher,
            "bits": self.bits,
            "peer_subject": self.peer_subject,
            "server_name": self.server_name,
            "verified": self.verified,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TLSInfo:
        def opt_str(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        bits = data.get("bits")
        verified = data.get("verified")
        return cls(
            version=str(data.get("version", "")),
            cipher=str(data.get("cipher", "")),
            bits=bits if isinstance(bits, int) else 0,
            peer_subject=opt_str("peer_subject"),
            server_name=opt_str("server_name"),
            verified=verified if isinstance(verified, bool) else None,
        )


def _comment_safe(text: str) -> str:
    """Make text safe inside an RFC 5322 comment: printable ASCII, no parentheses/backslash."""
    out = "".join(c if 0x20 < ord(c) < 0x7F and c not in "()\\" else "_" for c in text)
    return out[:200]


def describe(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, *, tls: ServerTLS | None = None
) -> TLSInfo:
    """Describe an established TLS connection (asyncio: ``transport.get_extra_info
    ("ssl_object")``). On the server side pass ``tls`` to record the SNI name requested."""
    cipher = ssl_object.cipher()
    name, _proto, bits = cipher if cipher else ("unknown", "", 0)
    subject: str | None = None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        try:
            subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            subject = "(unparsable certificate)"
    if ssl_object.server_side:
        server_name = tls.requested_name(ssl_object) if tls else None
        verified = None
    else:
        server_name = ssl_object.server_hostname
        verified = ssl_object.context.verify_mode == ssl.CERT_REQUIRED
    return TLSInfo(
        version=ssl_object.version() or "unknown",
        cipher=name,
        bits=bits or 0,
        peer_subject=subject,
        server_name=server_name,
        verified=verified,
    )


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket, *,
               limit: int = limits.TLS_PEER_CHAIN_MAX) -> list[bytes]:
    """The DER certificates the peer sent, leaf first, at most ``limit`` of them (the chain
    is untrusted input), whether or not they were verified.

    ``get_unverified_chain`` is public from Python 3.13 (it returns DER bytes) and a method of
    the private ``_sslobj`` on 3.10-3.12 (returning ``_ssl.Certificate`` objects, whose
    ``public_bytes(2)`` is DER, ``_ssl.ENCODING_DER``); without either, the leaf alone.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain: list[bytes] = []
    if getter is not None:
        with contextlib.suppress(Exception):  # private API on 3.11/3.12: never let it break
            for cert in getter() or ():
                chain.append(cert if isinstance(cert, bytes) else cert.public_bytes(2))
                if len(chain) >= limit:
                    break
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            chain = [leaf]
    return chain[: max(0, limit)]


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start (tmp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def generate_self_signed(
    cert_path: Path | str,
    key_path: Path | str,
    hostnames: Iterable[str],
    *,
    key_type: KeyType = "ecdsa-p256",
    days: int = limits.TLS_SELF_SIGNED_DAYS,
    clock: Clock = SYSTEM_CLOCK,
) -> CertificateSpec:
    """Generate a self-signed server certificate for ``hostnames`` (first = subject CN).

    ECDSA P-256 by default (the cheapest handshake); ``key_type="rsa-2048"`` for old clients.
    The subjectAltName lists every hostname (IP literals as iPAddress entries). The key file
    is written with mode 0600, the certificate 0644. Returns the spec to serve it.
    """
    names = [h.strip().rstrip(".") for h in hostnames if h.strip()]
    if not names:
        raise TLSConfigError("generate_self_signed needs at least one hostname")
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ecdsa-p256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa-2048":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise TLSConfigError(f"unknown key type {key_type!r}")
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.fromtimestamp(clock.now(), tz=datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_type == "rsa-2048",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False
        )
    )
    certificate = builder.sign(private_key, hashes.SHA256())
    cert_file, key_file = Path(cert_path), Path(key_path)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_file, key_pem)
    cert_tmp = cert_file.with_name(f".{cert_file.name}.tmp")
    cert_tmp.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    cert_tmp.chmod(0o644)
    os.replace(cert_tmp, cert_file)
    return CertificateSpec(cert=cert_file, key=key_file, names=())
