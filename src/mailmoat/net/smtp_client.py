"""Send one message over SMTP: the asyncio adapter around the sans-IO client engine (L3).

Public API::

    result = await send_message(message, mail_from="a@example.org", rcpt_to=["b@example.net"],
                                host="mx.example.net", mode="starttls")
    result = send_message_sync(...)            # the same, from synchronous code
    session = await probe("mx.example.net")    # EHLO/STARTTLS/certificate, no mail sent

    def gate(info: BeforeMail) -> None:        # after the last EHLO, before MAIL FROM
        if info.session.tls is None:
            raise info.abort("TLS is required")
    await send_message(..., before_mail=gate, mail_params=[("REQUIRETLS", None)])

:func:`send_message` returns a frozen :class:`SendResult` once the server accepted the message
for at least one recipient: the reply per recipient, the final reply, the queue id when the
server's text names one, and what the transport negotiated (:class:`SessionInfo`,
:class:`TLSDetails`: TLS version, cipher, certificate subject/issuer/names, whether it was
verified and why not). Anything else raises :class:`SendError`, whose ``temporary`` flag tells
a 4xx-class failure (try again later: 4xx reply, connection or TLS trouble) from a 5xx one,
and whose ``session`` carries what was negotiated up to the failure.

Modes (RFC 8314): ``"implicit-tls"`` (TLS from the first octet, port 465), ``"starttls"``
(RFC 3207; ``starttls="require"`` refuses to go on in cleartext, ``"opportunistic"`` uses TLS
when the server offers it, RFC 7435), ``"plain"`` (no TLS). Certificates are verified by
default (chain and name, RFC 6125, against ``cafile`` or the system store); ``verify=False``
still encrypts and reports ``verified=False`` with what a verification would have said.

What the engine (:class:`mailmoat.smtp.client.ClientConnection`) does not do, this adapter
does: sockets, TLS, timeouts (RFC 5321 §4.5.3.2, client side; :class:`Timeouts`), choosing
extensions (PIPELINING, CHUNKING, SIZE, 8BITMIME, SMTPUTF8), the EHLO-then-HELO fallback
(RFC 5321 §3.2) and the AUTH dialogue (PLAIN, LOGIN; only over TLS unless explicitly allowed).

The ``before_mail`` hook of :func:`send_message` is where a policy judges the session before
anything of the transaction is sent (DANE / MTA-STS / REQUIRETLS in
:mod:`mailmoat.gateway.outbound`): it gets a :class:`BeforeMail` - the session so far (EHLO
keywords in force, :class:`TLSDetails`) and the certificate chain the server sent - once the
session is up (after STARTTLS and the EHLO that follows it, after AUTH) and before ``MAIL
FROM``. Raising :class:`SendError` (``info.abort(reason)``) ends the session with QUIT and
propagates; nothing of the message was sent. ``mail_params`` adds ``MAIL FROM`` parameters
(e.g. ``REQUIRETLS``, RFC 8689 §4.1); the engine refuses one whose extension the server did not
advertise (:class:`~mailmoat.errors.LocalProtocolError`).

SECURITY
    Trusts the caller's arguments only after checking them: CR, LF or NUL in an address, a
    host, the HELO name or a credential raise :class:`ValueError` before any connection (SMTP
    command injection), and addresses must fit the RFC 5321/6531 grammar (checked by the
    engine). Trusts nothing from the server: replies are parsed and bounded by the engine
    (reply lines and line counts, CRLF framing, STARTTLS response injection refused); every
    wait has a timeout; the message content is normalised and dot-stuffed by the engine, so
    it cannot end DATA early. Credentials are never sent in cleartext unless
    ``allow_plaintext_auth=True``. The peer certificate is parsed by ``cryptography`` only to
    report it; decisions on it are made by OpenSSL (``verify=True``). Certificate text and
    server replies are returned as data; printing them safely is the caller's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import random
import re
import socket
import ssl
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, ParamSpec, TypeVar

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification

from mailmoat import limits
from mailmoat.errors import (
    DNSError,
    DNSTemporaryError,
    LocalProtocolError,
    MailmoatError,
    RemoteProtocolError,
)
from mailmoat.net.tls import client_context, describe, peer_chain
from mailmoat.resolver import MX, NoData, NXDomain, Resolver, RRType
from mailmoat.smtp.client import (
    AuthChallenge,
    ClientConnection,
    ClientEvent,
    CommandReply,
    EhloResponse,
    Greeting,
    normalize_line_endings,
)
from mailmoat.smtp.replies import Reply

__all__ = [
    "BeforeMail",
    "BeforeMailHook",
    "Mode",
    "RecipientReply",
    "SendError",
    "SendResult",
    "SessionInfo",
    "StartTLSPolicy",
    "TLSDetails",
    "Timeouts",
    "check_certificate",
    "check_envelope",
    "default_port",
    "find_queue_id",
    "mx_hosts",
    "probe",
    "send_message",
    "send_message_sync",
    "send_to_domain",
    "tls_details",
]

Mode = Literal["starttls", "implicit-tls", "plain"]
#: With ``mode="starttls"``: ``"require"`` TLS or fail; ``"opportunistic"`` use STARTTLS
#: when offered (RFC 7435), else continue in cleartext; ``"none"`` never (as mode "plain").
StartTLSPolicy = Literal["require", "opportunistic", "none"]
Stage = Literal[
    "dns", "connect", "tls", "greeting", "ehlo", "starttls", "auth", "size", "smtputf8", "mail",
    "rcpt", "data", "message", "protocol",
]

_MODES: Final = ("starttls", "implicit-tls", "plain")
_P = ParamSpec("_P")
_T = TypeVar("_T")
_CR_LF_NUL: Final = ("\r", "\n", "\0")


# --- values -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds to wait, per step. Defaults: RFC 5321 §4.5.3.2 (client side) - initial 220
    message 5 min, MAIL 5 min, RCPT 5 min, DATA initiation 2 min, data block 3 min, DATA
    termination 10 min - and Postfix's values where the RFC names none (limits.py)."""

    connect: float = limits.SMTP_CLIENT_CONNECT_TIMEOUT
    tls_handshake: float = limits.SMTP_CLIENT_TLS_TIMEOUT
    greeting: float = limits.SMTP_TIMEOUT_GREETING
    command: float = limits.SMTP_CLIENT_COMMAND_TIMEOUT
    mail: float = limits.SMTP_TIMEOUT_MAIL
    rcpt: float = limits.SMTP_TIMEOUT_RCPT
    data_init: float = limits.SMTP_TIMEOUT_DATA_INIT
    data_block: float = limits.SMTP_TIMEOUT_DATA_BLOCK
    data_term: float = limits.SMTP_TIMEOUT_DATA_TERM
    quit: float = limits.SMTP_CLIENT_QUIT_TIMEOUT

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        """Every step at most ``seconds`` (a CLI ``--timeout``, tests)."""
        if seconds <= 0:
            raise ValueError("timeout must be positive")
        defaults = cls()
        return cls(**{
            name: min(seconds, getattr(defaults, name)) for name in cls.__dataclass_fields__
        })


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSDetails:
    """What the TLS layer negotiated and what the server's certificate says.

    ``verified`` is True only when OpenSSL checked the chain and the name during the
    handshake. When it was not (``verify=False``), ``verify_error`` says what such a check
    finds: ``None`` would have passed, else the reason (chain, expiry or name)."""

    version: str  # "TLSv1.3"
    cipher: str  # OpenSSL name
    bits: int
    server_name: str | None  # the SNI name sent and the name checked
    subject: str | None  # RFC 4514
    issuer: str | None
    san: tuple[str, ...]  # DNS names and IP addresses of the subjectAltName
    not_before: datetime.datetime | None
    not_after: datetime.datetime | None
    verified: bool
    verify_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "cipher": self.cipher,
            "bits": self.bits,
            "server_name": self.server_name,
            "subject": self.subject,
            "issuer": self.issuer,
            "san": list(self.san),
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "verified": self.verified,
            "verify_error": self.verify_error,
        }


def _reply_dict(reply: Reply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"code": reply.code, "status": reply.status, "text": reply.text}


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """The conversation up to the message: who we talked to and what was negotiated.

    ``ehlo_before_tls`` are the capabilities of the first EHLO (``{}`` after a HELO fallback),
    ``ehlo_after_tls`` those of the EHLO after STARTTLS (``None`` without STARTTLS); with
    implicit TLS the only EHLO is already protected and is ``ehlo_after_tls``."""

    host: str
    port: int
    mode: Mode
    greeting: Reply | None = None
    ehlo_before_tls: Mapping[str, str] | None = None
    ehlo_after_tls: Mapping[str, str] | None = None
    tls: TLSDetails | None = None
    auth_mechanism: str | None = None
    auth_reply: Reply | None = None

    @property
    def capabilities(self) -> Mapping[str, str]:
        """The capabilities in force for the mail transaction."""
        if self.ehlo_after_tls is not None:
            return self.ehlo_after_tls
        return self.ehlo_before_tls or MappingProxyType({})

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "mode": self.mode,
            "greeting": _reply_dict(self.greeting),
            "ehlo_before_tls": None if self.ehlo_before_tls is None else dict(self.ehlo_before_tls),
            "ehlo_after_tls": None if self.ehlo_after_tls is None else dict(self.ehlo_after_tls),
            "tls": self.tls.as_dict() if self.tls else None,
            "auth_mechanism": self.auth_mechanism,
            "auth_reply": _reply_dict(self.auth_reply),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientReply:
    """The server's answer to one ``RCPT TO``."""

    address: str
    reply: Reply

    @property
    def accepted(self) -> bool:
        return 200 <= self.reply.code < 300


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """The message was accepted (final 2xx) for ``accepted`` recipients."""

    session: SessionInfo
    mail_reply: Reply
    recipients: tuple[RecipientReply, ...]
    final_reply: Reply
    queue_id: str | None
    used_bdat: bool = False
    used_pipelining: bool = False

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientReply, ...]:
        return tuple(r for r in self.recipients if not r.accepted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": True,
            "session": self.session.as_dict(),
            "mail": _reply_dict(self.mail_reply),
            "recipients": [
                {"address": r.address, "accepted": r.accepted, "reply": _reply_dict(r.reply)}
                for r in self.recipients
            ],
            "final": _reply_dict(self.final_reply),
            "queue_id": self.queue_id,
            "bdat": self.used_bdat,
            "pipelining": self.used_pipelining,
        }


class SendError(MailmoatError):
    """The message was not sent.

    ``stage`` names the step that failed (``"connect"``, ``"tls"``, ``"greeting"``, ``"ehlo"``,
    ``"starttls"``, ``"auth"``, ``"size"``, ``"smtputf8"``, ``"mail"``, ``"rcpt"``, ``"data"``,
    ``"message"``, ``"protocol"``); ``reply`` is the server's reply when one caused it;
    ``temporary`` is True for a failure worth retrying later (a 4xx reply, a lost or refused
    connection, a timeout, TLS trouble - as an MTA defers); ``session`` holds what was
    negotiated so far and ``recipients`` the RCPT replies received.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: Stage,
        temporary: bool,
        session: SessionInfo,
        reply: Reply | None = None,
        recipients: tuple[RecipientReply, ...] = (),
    ) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.temporary = temporary
        self.session = session
        self.reply = reply
        self.recipients = recipients

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": False,
            "error": str(self),
            "stage": self.stage,
            "temporary": self.temporary,
            "reply": _reply_dict(self.reply),
            "session": self.session.as_dict(),
            "recipients": [
                {"address": r.address, "accepted": r.accepted, "reply": _reply_dict(r.reply)}
                for r in self.recipients
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BeforeMail:
    """What a ``before_mail`` hook of :func:`send_message` sees: the session once it is up
    (after STARTTLS and the EHLO that follows it, after AUTH), before ``MAIL FROM``.

    ``session.capabilities`` are the EHLO keywords in force and ``session.tls`` what TLS
    negotiated (``None``: cleartext); ``peer_chain`` the certificates the server sent (DER,
    leaf first, at most ``limits.TLS_PEER_CHAIN_MAX``; ``()`` without TLS), verified or not -
    the input of a DANE match (RFC 7672 §3).
    """

    session: SessionInfo
    peer_chain: tuple[bytes, ...] = ()

    def abort(self, reason: str, *, temporary: bool = True, stage: Stage = "tls") -> SendError:
        """The error to raise to stop before ``MAIL FROM`` (``stage`` ``"tls"``: a TLS
        policy said no; ``temporary`` False for a failure no later try can fix)."""
        return SendError(reason, stage=stage, temporary=temporary, session=self.session)


#: ``send_message(before_mail=...)``: called with a :class:`BeforeMail`; returns ``None`` (or
#: an awaitable of it) to go on, raises :class:`SendError` to stop (nothing of the message is
#: sent; the session ends with QUIT).
BeforeMailHook = Callable[[BeforeMail], Awaitable[None] | None]


# --- queue id -----------------------------------------------------------------------------------
# The text of the final 250 is free-form (RFC 5321 §4.2); these are the forms of the common
# MTAs. The engine strips the enhanced status code when ENHANCEDSTATUSCODES is in effect;
# the optional prefix covers servers that send one without advertising it.
_STATUS_PREFIX: Final = r"^(?:[245]\.\d{1,3}\.\d{1,3} )?"
_QUEUE_ID_FORMS: Final = (
    re.compile(r"\bqueued as ([0-9A-Za-z]{1,64})\b", re.IGNORECASE),  # Postfix
    re.compile(r"\bid=([0-9A-Za-z-]{1,64})\b"),  # Exim
    re.compile(_STATUS_PREFIX + r"([0-9A-Za-z]{6,64}) Message accepted for delivery"),  # sendmail
    re.compile(_STATUS_PREFIX + r"OK {1,2}\d{1,20} (\S{1,64}) - gsmtp"),  # Gmail
    re.compile(r"\bqp (\d{1,20})\b"),  # qmail
)


def find_queue_id(reply: Reply) -> str | None:
    """The server's queue id in the text of its reply to the message, when it names one
    (Postfix ``queued as X``, Exim ``id=X``, sendmail ``X Message accepted``, Gmail, qmail)."""
    first = reply.lines[0]
    for form in _QUEUE_ID_FORMS:
        match = form.search(first)
        if match:
            return match.group(1)
    return None


# --- certificates -----------------------------------------------------------------------------
def _trust_store(cafile: Path | str | None) -> verification.Store:
    path = cafile or ssl.get_default_verify_paths().cafile
    if not path:
        raise ValueError("no CA file to check against (pass cafile)")
    data = Path(path).read_bytes()
    with warnings.catch_warnings():
        # System bundles hold old roots (e.g. negative serial numbers) that cryptography
        # warns about; they are OpenSSL's trust anchors all the same.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return verification.Store(x509.load_pem_x509_certificates(data))


def _server_auth_usage(policy: Any, cert: x509.Certificate, eku: Any) -> None:
    """An extendedKeyUsage, when present, must allow TLS server authentication."""
    if eku is not None and x509.oid.ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise ValueError("extendedKeyUsage does not allow serverAuth")


def _policy_builder(store: verification.Store) -> verification.PolicyBuilder:
    """cryptography's Web PKI policy, relaxed where OpenSSL (which decides when
    ``verify=True``) is laxer: the criticality of subjectAltName and extendedKeyUsage, and
    a missing authorityKeyIdentifier on the end-entity certificate."""
    builder = verification.PolicyBuilder().store(store)
    extension_policy = getattr(verification, "ExtensionPolicy", None)  # cryptography >= 45
    if extension_policy is not None:
        agnostic = verification.Criticality.AGNOSTIC
        ee = (
            extension_policy.webpki_defaults_ee()
            .require_present(x509.SubjectAlternativeName, agnostic, None)
            .may_be_present(x509.ExtendedKeyUsage, agnostic, _server_auth_usage)
            # RFC 5280 §4.2.1.1 makes it a MUST for CA-issued certificates, but OpenSSL
            # does not require it (self-signed certificates often lack it).
            .may_be_present(x509.AuthorityKeyIdentifier, agnostic, None)
        )
        builder = builder.extension_policies(
            ca_policy=extension_policy.webpki_defaults_ca(), ee_policy=ee
        )
    return builder


def check_certificate(
    chain: Sequence[bytes],
    server_name: str,
    *,
    cafile: Path | str | None = None,
    now: datetime.datetime | None = None,
) -> str | None:
    """Check a server's certificate chain (DER, leaf first) and name (RFC 6125 via
    ``cryptography``'s verifier) against ``cafile`` or the system store. ``None`` when it
    verifies, else the reason. The building block of the TLS probe: it judges a chain that
    was received without verification."""
    if not chain:
        return "the server sent no certificate"
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return "the server's certificate cannot be parsed"
    try:
        store = _trust_store(cafile)
    except (OSError, ValueError) as exc:
        return f"cannot check: no trust store ({exc})"
    name: x509.DNSName | x509.IPAddress
    try:
        name = x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        name = x509.DNSName(server_name.rstrip("."))
    builder = _policy_builder(store)
    if now is not None:
        builder = builder.time(now)
    try:
        builder.build_server_verifier(name).verify(certs[0], certs[1:])
    except verification.VerificationError as exc:
        return _verification_text(str(exc))
    except ValueError as exc:  # e.g. a name the verifier cannot express
        return f"cannot check: {exc}"
    return None


def _verification_text(text: str) -> str:
    """cryptography's verifier message, made readable."""
    text = re.sub(r"\s*\(encountered processing <Certificate.*$", "", text, flags=re.DOTALL)
    text = text.removeprefix("validation failed: ")
    if "candidates exhausted" in text:
        return "the certificate does not chain to a trusted CA (unknown or missing issuer)"
    return text


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def tls_details(
    ssl_object: ssl.SSLObject | ssl.SSLSocket,
    *,
    server_name: str | None,
    cafile: Path | str | None = None,
) -> TLSDetails:
    """Describe an established client-side TLS connection (asyncio:
    ``transport.get_extra_info("ssl_object")``). When OpenSSL did not verify the peer, the
    received chain is checked here (:func:`check_certificate`) to say why it would fail."""
    info = describe(ssl_object)
    context = ssl_object.context
    verified = context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    chain = peer_chain(ssl_object)
    subject = issuer = None
    san: tuple[str, ...] = ()
    not_before = not_after = None
    if chain:
        try:
            leaf = x509.load_der_x509_certificate(chain[0])
        except ValueError:
            subject = "(unparsable certificate)"
        else:
            subject = leaf.subject.rfc4514_string()
            issuer = leaf.issuer.rfc4514_string()
            san = _names(leaf)
            not_before = leaf.not_valid_before_utc
            not_after = leaf.not_valid_after_utc
    verify_error: str | None = None
    if not verified:
        if context.verify_mode == ssl.CERT_REQUIRED:
            verify_error = "the chain was verified but not the name (check_hostname off)"
        elif server_name is None:
            verify_error = "not verified (verification disabled; no name to check)"
        else:
            problem = check_certificate(chain, server_name, cafile=cafile)
            verify_error = "not verified (verification disabled)" + (
                f"; a check finds: {problem}" if problem
                else f"; the certificate would verify for {server_name}"
            )
    return TLSDetails(
        version=info.version,
        cipher=info.cipher,
        bits=info.bits,
        server_name=server_name,
        subject=subject,
        issuer=issuer,
        san=san,
        not_before=not_before,
        not_after=not_after,
        verified=verified,
        verify_error=verify_error,
    )


# --- argument checks ----------------------------------------------------------------------------
def default_port(mode: Mode, *, authenticated: bool = False) -> int:
    """465 for implicit TLS (RFC 8314 §7.3); 587 for submission with AUTH (RFC 6409); else
    25 (RFC 5321 §4.5.4.2 relay)."""
    if mode == "implicit-tls":
        return 465
    return 587 if authenticated else 25


def _no_controls(what: str, value: str) -> None:
    if any(ch in value for ch in _CR_LF_NUL):
        raise ValueError(f"{what} contains CR, LF or NUL: refused (SMTP command injection)")


def _check_envelope(mail_from: str | None, rcpt_to: Sequence[str], helo: str) -> None:
    """Refuse bad arguments before connecting, using the engine's own checks on a scratch
    session (every extension advertised, so only the grammar can refuse)."""
    scratch = ClientConnection()
    scratch.receive_data(b"220 x\r\n")
    try:
        scratch.ehlo(helo)
    except LocalProtocolError as exc:
        raise ValueError(f"HELO name {helo!r}: {exc}") from None
    scratch.receive_data(b"250-x\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")
    utf8 = [("SMTPUTF8", None)] if not all(a.isascii() for a in (mail_from or "", *rcpt_to)) else []
    try:
        scratch.mail(mail_from, utf8)
    except LocalProtocolError as exc:
        raise ValueError(f"sender {mail_from!r}: {exc}") from None
    for rcpt in rcpt_to:
        try:
            scratch.rcpt(rcpt)
        except LocalProtocolError as exc:
            raise ValueError(f"recipient {rcpt!r}: {exc}") from None


def check_envelope(
    mail_from: str | None,
    rcpt_to: Sequence[str],
    *,
    helo: str | None = None,
    host: str | None = None,
    server_name: str | None = None,
    mail_params: Sequence[tuple[str, str | None]] = (),
) -> str:
    """The checks :func:`send_message` makes before connecting, for callers that must tell a
    bad envelope (a permanent failure) from a failed session: CR, LF or NUL in any value (SMTP
    command injection), the RFC 5321/6531 grammar of the addresses and the HELO name, the
    number of recipients. Raises :class:`ValueError`; returns the HELO name to use (``helo``,
    else this host's name when it is a valid one, else ``localhost``)."""
    if not rcpt_to:
        raise ValueError("at least one recipient is needed")
    if len(rcpt_to) > limits.SMTP_MAX_RECIPIENTS:
        raise ValueError(f"more than {limits.SMTP_MAX_RECIPIENTS} recipients")
    for what, value in (
        ("host", host), ("server_name", server_name), ("helo", helo), ("sender", mail_from),
        *(("recipient", r) for r in rcpt_to),
        *(("MAIL parameter", f"{k}={v or ''}") for k, v in mail_params),
    ):
        if value is not None:
            _no_controls(what, value)
    helo_name = helo if helo is not None else _default_helo()
    _check_envelope(mail_from, rcpt_to, helo_name)
    return helo_name


def _default_helo() -> str:
    name = socket.gethostname()
    try:
        _check_envelope(None, ["x@x"], name)
    except ValueError:
        return "localhost"
    return name


def _header_section(text: bytes) -> bytes:
    """The header section of CRLF-normalised message text (RFC 5322 §2.1)."""
    end = text.find(b"\r\n\r\n")
    return text if end < 0 else text[:end]


# --- the session ----------------------------------------------------------------------------
class _Client:
    """One connection: reads replies with timeouts, writes commands, records the session."""

    def __init__(self, *, host: str, port: int, mode: Mode, timeouts: Timeouts) -> None:
        self.conn = ClientConnection()
        self.timeouts = timeouts
        self.session = SessionInfo(host=host, port=port, mode=mode)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: deque[ClientEvent] = deque()
        self.stage: Stage = "connect"
        self.in_content = False  # a 354 arrived: QUIT would be message text, just close

    def record(self, **changes: Any) -> None:
        self.session = dataclasses.replace(self.session, **changes)

    def fail(
        self,
        message: str,
        *,
        temporary: bool,
        reply: Reply | None = None,
        stage: Stage | None = None,
        recipients: tuple[RecipientReply, ...] = (),
    ) -> SendError:
        return SendError(
            message, stage=stage or self.stage, temporary=temporary, session=self.session,
            reply=reply, recipients=recipients,
        )

    def refused(
        self, what: str, reply: Reply, *, temporary: bool | None = None, **kwargs: Any
    ) -> SendError:
        """A failure caused by ``reply``: temporary for 4xx (RFC 5321 §4.2.1) unless told."""
        status = f" {reply.status}" if reply.status else ""
        text = reply.text.replace("\n", " / ")
        return self.fail(
            f"{what}: {reply.code}{status} {text}",
            temporary=reply.code < 500 if temporary is None else temporary, reply=reply,
            **kwargs,
        )

    async def write(self, data: bytes, timeout: float) -> None:
        assert self.writer is not None
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except TimeoutError:
            raise self.fail(f"timed out after {timeout:g} s sending to the server",
                            temporary=True) from None
        except (ConnectionError, OSError) as exc:
            raise self.fail(f"connection lost while sending: {exc}", temporary=True) from None

    async def event(self, timeout: float) -> ClientEvent:
        """The next event from the server (one complete reply)."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.events:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except TimeoutError:
                raise self.fail(f"no reply from the server within {timeout:g} s",
                                temporary=True) from None
            except (ConnectionError, OSError) as exc:
                raise self.fail(f"connection lost: {exc}", temporary=True) from None
            if not data:
                raise self.fail("the server closed the connection", temporary=True)
            try:
                self.events.extend(self.conn.receive_data(data))
            except RemoteProtocolError as exc:
                raise self.fail(f"protocol violation by the server: {exc}", temporary=True,
                                stage="protocol") from None
        event = self.events.popleft()
        if isinstance(event, CommandReply) and event.command is None:
            raise self.refused("the server closed the session", event.reply)
        return event

    async def reply(self, timeout: float) -> Reply:
        event = await self.event(timeout)
        if isinstance(event, AuthChallenge):
            raise self.fail("unexpected 334 challenge", temporary=True, stage="protocol")
        return event.reply

    async def command(self, data: bytes, timeout: float) -> ClientEvent:
        await self.write(data, self.timeouts.command)
        return await self.event(timeout)

    async def reply_to(self, data: bytes, timeout: float) -> Reply:
        await self.write(data, self.timeouts.command)
        return await self.reply(timeout)


async def _connect(
    client: _Client, host: str, port: int, context: ssl.SSLContext | None, sni: str | None
) -> None:
    timeouts = client.timeouts
    try:
        client.reader, client.writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=sni if context else None,
                ssl_handshake_timeout=timeouts.tls_handshake if context else None,
            ),
            timeouts.connect + (timeouts.tls_handshake if context else 0),
        )
    except ssl.SSLCertVerificationError as exc:
        raise _verify_failure(client, sni, exc) from None
    except ssl.SSLError as exc:
        raise client.fail(f"TLS handshake with {host}:{port} failed: {exc.reason or exc}",
                          temporary=True, stage="tls") from None
    except TimeoutError:
        raise client.fail(f"cannot connect to {host}:{port}: timed out", temporary=True) from None
    except OSError as exc:
        raise client.fail(f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                          temporary=True) from None


def _verify_failure(client: _Client, sni: str | None, exc: ssl.SSLCertVerificationError
                    ) -> SendError:
    reason = exc.verify_message or exc.reason or str(exc)
    return client.fail(
        f"TLS certificate verification failed for {sni}: {reason} (use a CA file that "
        "trusts the server, or turn verification off for a test server)",
        temporary=True, stage="tls",
    )


async def _hello(client: _Client, helo: str) -> Mapping[str, str]:
    client.stage = "ehlo"
    event = await client.command(client.conn.ehlo(helo), client.timeouts.command)
    if isinstance(event, EhloResponse):
        return event.extensions
    reply = event.reply
    if reply.code in (500, 502, 504, 550):
        # RFC 5321 §3.2: a server that does not know EHLO; fall back to HELO.
        event = await client.command(client.conn.helo(helo), client.timeouts.command)
        if event.reply.code == 250:
            return MappingProxyType({})
        reply = event.reply
    raise client.refused("EHLO/HELO refused", reply)


async def _starttls(  # noqa: PLR0917
    client: _Client, helo: str, context: ssl.SSLContext, sni: str | None,
    policy: StartTLSPolicy, before: Mapping[str, str], cafile: Path | str | None,
) -> Mapping[str, str] | None:
    """STARTTLS (RFC 3207); returns the capabilities after TLS, or None if we stay in plain
    text (opportunistic policy only)."""
    client.stage = "starttls"
    if "STARTTLS" not in before:
        if policy == "opportunistic":
            return None
        raise client.fail("the server does not offer STARTTLS and TLS is required",
                          temporary=True)
    reply = await client.reply_to(client.conn.starttls(), client.timeouts.command)
    if reply.code != 220:
        if policy == "opportunistic" and not client.conn.closed:
            return None  # RFC 3207 §4: the client decides whether to continue
        raise client.refused("STARTTLS refused", reply, temporary=True)
    assert client.writer is not None
    client.stage = "tls"
    try:
        await asyncio.wait_for(
            client.writer.start_tls(context, server_hostname=sni,
                                    ssl_handshake_timeout=client.timeouts.tls_handshake),
            client.timeouts.tls_handshake,
        )
    except ssl.SSLCertVerificationError as exc:
        raise _verify_failure(client, sni, exc) from None
    except ssl.SSLError as exc:
        raise client.fail(f"TLS handshake failed: {exc.reason or exc}", temporary=True) from None
    except TimeoutError:
        raise client.fail("TLS handshake timed out", temporary=True) from None
    except (ConnectionError, OSError) as exc:
        raise client.fail(f"connection lost during the TLS handshake: {exc}",
                          temporary=True) from None
    try:
        client.conn.tls_established()
    except RemoteProtocolError as exc:
        raise client.fail(f"protocol violation by the server: {exc}", temporary=True,
                          stage="protocol") from None
    _record_tls(client, sni, cafile)
    after = await _hello(client, helo)
    client.record(ehlo_after_tls=after)
    return after


def _record_tls(client: _Client, sni: str | None, cafile: Path | str | None) -> None:
    assert client.writer is not None
    ssl_object = client.writer.get_extra_info("ssl_object")
    if ssl_object is not None:
        client.record(tls=tls_details(ssl_object, server_name=sni, cafile=cafile))



async def _auth(
    client: _Client, username: str, password: str, mechanism: str | None, allow_plaintext: bool
) -> None:
    client.stage = "auth"
    if client.session.tls is None and not allow_plaintext:
        # RFC 8314 §3 / RFC 4954 §4 (the client SHOULD NOT send credentials in the clear):
        # refused before a single octet of the credentials leaves.
        raise client.fail(
            "refusing to send credentials without TLS (allow_plaintext_auth to override)",
            temporary=False,
        )
    offered = client.session.capabilities.get("AUTH")
    if offered is None:
        raise client.fail("the server does not offer AUTH", temporary=False)
    mechanisms = offered.upper().split()
    if mechanism is None:
        mechanism = next((m for m in ("PLAIN", "LOGIN") if m in mechanisms), None)
        if mechanism is None:
            raise client.fail(
                f"the server offers AUTH {offered}, none of PLAIN, LOGIN", temporary=False
            )
    elif mechanism not in mechanisms:
        raise client.fail(f"the server does not offer AUTH {mechanism} (offers: {offered})",
                          temporary=False)
    conn = client.conn
    first = conn.auth_plain(username, password) if mechanism == "PLAIN" else conn.auth_login(
        username, password
    )
    event = await client.command(first, client.timeouts.command)
    for _ in range(3):  # PLAIN: at most one empty 334; LOGIN: username and password
        if not isinstance(event, AuthChallenge):
            break
        event = await client.command(conn.auth_response(), client.timeouts.command)
    if isinstance(event, AuthChallenge):
        await client.write(conn.auth_cancel(), client.timeouts.command)
        event = await client.event(client.timeouts.command)
    reply = event.reply
    client.record(auth_mechanism=mechanism, auth_reply=reply)
    if reply.code != 235:
        raise client.refused(f"AUTH {mechanism} failed", reply)


def _refused_recipients(client: _Client, recipients: tuple[RecipientReply, ...]) -> SendError:
    parts = "; ".join(f"{r.address}: {r.reply.code} {r.reply.text}" for r in recipients)
    return client.fail(
        f"every recipient was refused ({parts})",
        temporary=any(r.reply.code < 500 for r in recipients),
        stage="rcpt",
        reply=recipients[-1].reply if recipients else None,
        recipients=recipients,
    )


async def _transaction(
    client: _Client,
    message: bytes,
    mail_from: str | None,
    rcpt_to: Sequence[str],
    *,
    chunking: bool,
    mail_params: Sequence[tuple[str, str | None]] = (),
) -> SendResult:
    conn = client.conn
    timeouts = client.timeouts
    caps = client.session.capabilities
    payload = normalize_line_endings(message)
    params: list[tuple[str, str | None]] = []
    if "SIZE" in caps:
        # RFC 1870 §6: do not send a message larger than the server's declared maximum.
        declared = caps["SIZE"]
        if declared.isdigit() and int(declared) > 0 and len(payload) > int(declared):
            raise client.fail(
                f"the message is {len(payload)} octets; the server accepts at most "
                f"{declared} (RFC 1870 SIZE)", temporary=False, stage="size",
            )
        params.append(("SIZE", str(len(payload))))
    if not payload.isascii() and "8BITMIME" in caps:
        params.append(("BODY", "8BITMIME"))  # RFC 6152 §3
    envelope_utf8 = not all(a.isascii() for a in (mail_from or "", *rcpt_to))
    if envelope_utf8 or not _header_section(payload).isascii():
        # RFC 6531 §3.4/§3.2: UTF-8 addresses or header fields need SMTPUTF8 on MAIL; a
        # server without it must not be sent such a message (no downgrade is done here).
        if "SMTPUTF8" not in caps:
            raise client.fail(
                "the message needs SMTPUTF8 (UTF-8 in the "
                f"{'envelope' if envelope_utf8 else 'header fields'}) and the server "
                "does not offer it (RFC 6531)", temporary=False, stage="smtputf8",
            )
        params.append(("SMTPUTF8", None))
    params.extend(mail_params)
    bdat = chunking and "CHUNKING" in caps
    pipelining = conn.pipelining

    client.stage = "mail"
    recipients: list[RecipientReply] = []
    data_reply: Reply | None = None
    if pipelining:
        # RFC 2920 §3.1: MAIL, RCPT... and DATA (last in the group) in one write.
        group = conn.mail(mail_from, params) + b"".join(conn.rcpt(r) for r in rcpt_to)
        if not bdat:
            group += conn.data()
        await client.write(group, timeouts.mail)
        mail_reply = await client.reply(timeouts.mail)
        for rcpt in rcpt_to:
            recipients.append(RecipientReply(address=rcpt, reply=await client.reply(timeouts.rcpt)))
        if not bdat:
            data_reply = await client.reply(timeouts.data_init)
            client.in_content = data_reply.code == 354
        if not mail_reply.is_positive:
            raise client.refused("sender refused", mail_reply, recipients=tuple(recipients))
    else:
        mail_reply = await client.reply_to(conn.mail(mail_from, params), timeouts.mail)
        if not mail_reply.is_positive:
            raise client.refused("sender refused", mail_reply)
        client.stage = "rcpt"
        for rcpt in rcpt_to:
            reply = await client.reply_to(conn.rcpt(rcpt), timeouts.rcpt)
            recipients.append(RecipientReply(address=rcpt, reply=reply))
    result_recipients = tuple(recipients)
    if not any(r.accepted for r in result_recipients):
        raise _refused_recipients(client, result_recipients)

    final: Reply
    if bdat:
        client.stage = "message"
        chunks = [
            payload[i : i + limits.SMTP_CLIENT_BDAT_CHUNK]
            for i in range(0, len(payload), limits.SMTP_CLIENT_BDAT_CHUNK)
        ] or [b""]
        client.in_content = True  # until every chunk is written, QUIT would be chunk data
        if pipelining:
            # RFC 3030 §4.2: BDAT commands may be pipelined.
            for i, chunk in enumerate(chunks):
                await client.write(conn.bdat(chunk, last=i == len(chunks) - 1),
                                   timeouts.data_block)
            client.in_content = False
            final = await client.reply(timeouts.data_term if len(chunks) == 1
                                       else timeouts.data_block)
            for index in range(1, len(chunks)):
                if not 200 <= final.code < 300:
                    break
                last = index == len(chunks) - 1
                final = await client.reply(timeouts.data_term if last else timeouts.data_block)
        else:
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                await client.write(conn.bdat(chunk, last=last), timeouts.data_block)
                client.in_content = False
                final = await client.reply(timeouts.data_term if last else timeouts.data_block)
                if not 200 <= final.code < 300:
                    break
                client.in_content = not last
    else:
        if data_reply is None:
            client.stage = "data"
            data_reply = await client.reply_to(conn.data(), timeouts.data_init)
            client.in_content = data_reply.code == 354
        if data_reply.code != 354:
            raise client.refused("DATA refused", data_reply, stage="data",
                                 recipients=result_recipients)
        client.stage = "message"
        wire = conn.send_message(message)  # normalised and dot-stuffed by the engine
        for start in range(0, len(wire), limits.SMTP_CLIENT_DATA_BLOCK):
            await client.write(wire[start : start + limits.SMTP_CLIENT_DATA_BLOCK],
                               timeouts.data_block)
        client.in_content = False
        final = await client.reply(timeouts.data_term)
    if not 200 <= final.code < 300:
        raise client.refused("message refused", final, recipients=result_recipients)
    return SendResult(
        session=client.session,
        mail_reply=mail_reply,
        recipients=result_recipients,
        final_reply=final,
        queue_id=find_queue_id(final),
        used_bdat=bdat,
        used_pipelining=pipelining,
    )


async def _close(client: _Client) -> None:
    """QUIT when the session allows it (RFC 5321 §4.1.1.10), then close the connection."""
    writer = client.writer
    if writer is None:
        return
    try:
        if not client.in_content and not client.conn.closed:
            await client.write(client.conn.quit(), client.timeouts.quit)
            await client.reply(client.timeouts.quit)
    except (SendError, LocalProtocolError):
        pass  # the message is already decided; a lost 221 changes nothing
    finally:
        writer.close()
        with contextlib.suppress(Exception):  # a TLS peer may close without close_notify
            await asyncio.wait_for(writer.wait_closed(), client.timeouts.quit)


async def send_message(
    message: bytes,
    *,
    mail_from: str | None,
    rcpt_to: str | Sequence[str],
    host: str,
    port: int | None = None,
    mode: Mode = "starttls",
    starttls: StartTLSPolicy = "require",
    helo: str | None = None,
    username: str | None = None,
    password: str | None = None,
    auth_mechanism: Literal["PLAIN", "LOGIN"] | None = None,
    allow_plaintext_auth: bool = False,
    verify: bool = True,
    cafile: Path | str | None = None,
    server_name: str | None = None,
    min_tls_version: str = "1.2",
    ssl_context: ssl.SSLContext | None = None,
    chunking: bool = True,
    timeouts: Timeouts | None = None,
    mail_params: Sequence[tuple[str, str | None]] = (),
    before_mail: BeforeMailHook | None = None,
) -> SendResult:
    """Send ``message`` (RFC 5322 octets; bare LF/CR are sent as CRLF) to ``host``.

    ``mail_from=None`` is the null reverse-path ``<>``. ``port`` defaults to
    :func:`default_port`. ``mode``: ``"starttls"`` (``starttls="require"`` or
    ``"opportunistic"``), ``"implicit-tls"`` or ``"plain"``. ``verify`` checks the certificate
    chain (against ``cafile``, else the system store) and the name ``server_name`` (default
    ``host``, also sent as SNI); ``ssl_context`` replaces the whole TLS policy. ``username``/
    ``password`` authenticate with AUTH PLAIN or LOGIN (``auth_mechanism``), over TLS only
    unless ``allow_plaintext_auth``. ``chunking`` uses BDAT when the server offers CHUNKING.
    ``mail_params`` are added to ``MAIL FROM`` (e.g. ``[("REQUIRETLS", None)]``); the engine
    raises :class:`~mailmoat.errors.LocalProtocolError` when the server did not advertise a
    parameter's extension. ``before_mail`` judges the session before ``MAIL FROM`` (see
    :class:`BeforeMail`); the :class:`SendError` it raises propagates after QUIT.

    Returns a :class:`SendResult` when the server accepted the message; raises
    :class:`SendError` when it was not sent, :class:`ValueError` for bad arguments (before
    connecting, :func:`check_envelope`).
    """
    if not isinstance(message, bytes | bytearray | memoryview):
        raise TypeError("message must be bytes")
    message = bytes(message)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
    if starttls not in ("require", "opportunistic", "none"):
        raise ValueError(
            f"starttls must be 'require', 'opportunistic' or 'none', not {starttls!r}"
        )
    recipients = [rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to)
    if (username is None) != (password is None):
        raise ValueError("username and password go together")
    if auth_mechanism not in (None, "PLAIN", "LOGIN"):
        raise ValueError("auth_mechanism must be PLAIN or LOGIN")
    for what, value in (("username", username), ("password", password)):
        if value is not None:
            _no_controls(what, value)
    helo_name = check_envelope(mail_from, recipients, helo=helo, host=host,
                               server_name=server_name, mail_params=mail_params)
    if not host:
        raise ValueError("host is empty")
    if port is None:
        port = default_port(mode, authenticated=username is not None)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    sni = server_name or host.strip("[]")
    context = ssl_context or client_context(
        verify=verify, cafile=cafile, min_version=min_tls_version
    )
    client = _Client(host=host, port=port, mode=mode, timeouts=timeouts or Timeouts())
    try:
        await _open(client, context, sni, helo_name, starttls, cafile)
        if username is not None and password is not None:
            await _auth(client, username, password, auth_mechanism, allow_plaintext_auth)
        if before_mail is not None:
            await _before_mail(client, before_mail)
        return await _transaction(client, message, mail_from, recipients, chunking=chunking,
                                  mail_params=mail_params)
    finally:
        await _close(client)


async def _before_mail(client: _Client, hook: BeforeMailHook) -> None:
    assert client.writer is not None
    ssl_object = client.writer.get_extra_info("ssl_object")
    chain = tuple(peer_chain(ssl_object)) if ssl_object is not None else ()
    outcome = hook(BeforeMail(session=client.session, peer_chain=chain))
    if outcome is not None:
        await outcome


async def _open(  # noqa: PLR0917
    client: _Client, context: ssl.SSLContext, sni: str | None, helo: str,
    policy: StartTLSPolicy, cafile: Path | str | None,
) -> None:
    """Connect, read the greeting, EHLO, and STARTTLS + EHLO again when the mode says so."""
    session = client.session
    implicit = session.mode == "implicit-tls"
    await _connect(client, session.host.strip("[]"), session.port,
                   context if implicit else None, sni)
    if implicit:
        _record_tls(client, sni, cafile)
    client.stage = "greeting"
    event = await client.event(client.timeouts.greeting)
    assert isinstance(event, Greeting)
    client.record(greeting=event.reply)
    if event.reply.code != 220:
        raise client.refused("the server refused the session", event.reply)
    capabilities = await _hello(client, helo)
    client.record(**{"ehlo_after_tls" if implicit else "ehlo_before_tls": capabilities})
    if session.mode == "starttls" and policy != "none":
        await _starttls(client, helo, context, sni, policy, capabilities, cafile)


async def probe(
    host: str,
    *,
    port: int | None = None,
    mode: Mode = "starttls",
    helo: str | None = None,
    verify: bool = False,
    cafile: Path | str | None = None,
    server_name: str | None = None,
    min_tls_version: str = "1.2",
    ssl_context: ssl.SSLContext | None = None,
    timeouts: Timeouts | None = None,
) -> SessionInfo:
    """What a server offers, without sending mail (as Postfix's ``posttls-finger``): connect,
    greeting, EHLO, STARTTLS when offered (``mode="starttls"``), EHLO again, QUIT.

    By default the certificate is *not* enforced, so it is always reported: the returned
    :class:`TLSDetails` says whether it would verify (:func:`check_certificate`, against
    ``cafile`` or the system store) and why not. ``verify=True`` enforces it (OpenSSL), and a
    failure raises :class:`SendError` like :func:`send_message`. Without STARTTLS offered the
    result has ``tls=None``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
    for what, value in (("host", host), ("server_name", server_name), ("helo", helo)):
        if value is not None:
            _no_controls(what, value)
    if not host:
        raise ValueError("host is empty")
    helo_name = helo if helo is not None else _default_helo()
    _check_envelope(None, ["x@example.org"], helo_name)
    port = default_port(mode) if port is None else port
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    sni = server_name or host.strip("[]")
    context = ssl_context or client_context(
        verify=verify, cafile=cafile, min_version=min_tls_version
    )
    client = _Client(host=host, port=port, mode=mode, timeouts=timeouts or Timeouts())
    try:
        await _open(client, context, sni, helo_name, "opportunistic", cafile)
        return client.session
    finally:
        await _close(client)


def _synchronous(function: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, _T]:
    """``function`` run in its own event loop, with the same (typed) parameters."""

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(function(*args, **kwargs))
        raise RuntimeError(f"{function.__name__}_sync() called inside a running event loop: "
                           f"await {function.__name__}() instead")

    run.__name__ = f"{function.__name__}_sync"
    run.__doc__ = f":func:`{function.__name__}` for synchronous callers (runs its own event loop)."
    return run


#: :func:`send_message` for synchronous callers: same parameters, runs its own event loop
#: (``RuntimeError`` inside a running loop).
send_message_sync = _synchronous(send_message)


# --- delivery to a domain (MX) --------------------------------------------------------------
#: Stages at which another MX may do better (RFC 5321 §5.1: the client tries the next host
#: when one cannot be reached); once a server answered about the message, it stands.
_NEXT_MX_STAGES: Final = frozenset({"connect", "tls", "greeting", "ehlo", "starttls", "protocol"})


def _dns_failure(domain: str, text: str, *, temporary: bool, port: int, mode: Mode) -> SendError:
    return SendError(text, stage="dns", temporary=temporary,
                     session=SessionInfo(host=domain, port=port, mode=mode))


async def mx_hosts(domain: str, resolver: Resolver, *, port: int = 25,
                   mode: Mode = "starttls") -> tuple[str, ...]:
    """The hosts that receive mail for ``domain``, most preferred first (RFC 5321 §5.1).

    Equal preferences are shuffled ("the sender-SMTP MUST randomize them"); no MX record means
    the implicit MX, the domain itself. A null MX (RFC 7505: one MX ``0 .``) or a domain that
    does not exist raise a permanent :class:`SendError` (stage ``"dns"``); a DNS failure a
    temporary one. ``port``/``mode`` only fill the error's session.
    """
    _no_controls("domain", domain)
    name = domain.rstrip(".").lower()
    try:
        answer = await resolver.resolve(name, RRType.MX)
    except NoData:
        return (name,)  # RFC 5321 §5.1: the implicit MX
    except NXDomain:
        raise _dns_failure(domain, f"{domain}: no such domain (NXDOMAIN)", temporary=False,
                           port=port, mode=mode) from None
    except DNSTemporaryError as exc:
        raise _dns_failure(domain, f"{domain}: DNS failure looking up MX: {exc}",
                           temporary=True, port=port, mode=mode) from None
    except DNSError as exc:
        raise _dns_failure(domain, f"{domain}: bad MX answer: {exc}", temporary=False,
                           port=port, mode=mode) from None
    records = [r for r in answer.records if isinstance(r, MX)]
    if any(r.exchange in ("", ".") for r in records):
        # RFC 7505 §3: "0 ." says the domain accepts no mail; §4.1: do not try it.
        raise _dns_failure(domain, f"{domain} accepts no mail (null MX, RFC 7505)",
                           temporary=False, port=port, mode=mode)
    by_preference: dict[int, list[str]] = {}
    for record in records:
        by_preference.setdefault(record.preference, []).append(record.exchange)
    hosts: list[str] = []
    for preference in sorted(by_preference):
        group = by_preference[preference]
        random.shuffle(group)
        hosts += [h for h in group if h not in hosts]
    return tuple(hosts)


async def _addresses(host: str, resolver: Resolver) -> list[str]:
    """IPv6 then IPv4 addresses of an MX host (RFC 5321 §5.1: A and AAAA)."""
    found: list[str] = []
    temporary: DNSTemporaryError | None = None
    for rrtype in (RRType.AAAA, RRType.A):
        try:
            answer = await resolver.resolve(host, rrtype)
        except DNSTemporaryError as exc:
            temporary = exc
            continue
        except DNSError:
            continue
        found += [str(r) for r in answer.records
                  if isinstance(r, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    if not found and temporary is not None:
        raise temporary
    return found


async def send_to_domain(
    message: bytes,
    *,
    domain: str,
    resolver: Resolver,
    mail_from: str | None,
    rcpt_to: str | Sequence[str],
    port: int = 25,
    mode: Mode = "starttls",
    max_hosts: int = limits.SMTP_CLIENT_MX_TRIES,
    **kwargs: Any,
) -> SendResult:
    """Deliver to ``domain``'s mail exchangers: MX lookup (:func:`mx_hosts`), each host's
    addresses from the same ``resolver``, then :func:`send_message` to each address in turn
    until one answers; the certificate is checked against the MX host name (as the SNI).
    Other keyword arguments go to :func:`send_message`. A failure that a server gave about
    the message itself (MAIL/RCPT/DATA) is final; a failure to reach or talk to a host moves
    to the next one (RFC 5321 §5.1), up to ``max_hosts`` addresses."""
    if "host" in kwargs or "server_name" in kwargs:
        raise ValueError("send_to_domain chooses host and server_name from DNS")
    hosts = await mx_hosts(domain, resolver, port=port, mode=mode)
    last: SendError | None = None
    tried = 0
    for host in hosts:
        try:
            addresses = await _addresses(host, resolver)
        except DNSTemporaryError as exc:
            last = _dns_failure(host, f"{host}: DNS failure looking up its address: {exc}",
                                temporary=True, port=port, mode=mode)
            continue
        for address in addresses:
            if tried >= max_hosts:
                break
            tried += 1
            try:
                return await send_message(
                    message, mail_from=mail_from, rcpt_to=rcpt_to, host=address,
                    server_name=host, port=port, mode=mode, **kwargs,
                )
            except SendError as err:
                if err.stage not in _NEXT_MX_STAGES:
                    raise
                last = err
    if last is None:
        raise _dns_failure(domain, f"{domain}: no address for any of its MX hosts "
                           f"({', '.join(hosts)})", temporary=True, port=port, mode=mode)
    raise last
