"""The gateway's configuration: TOML, validated, with errors that name the bad key (layer L4).

Loading: :func:`load_config` reads a TOML file (stdlib :mod:`tomllib`), validates it with
pydantic v2 models (unknown keys are errors, types are strict enough to catch typos) and turns
every failure into :class:`mailmoat.errors.ConfigError` whose ``key`` is the dotted path of the
offending setting, e.g. ``listener[1].mode`` or ``limits.timeouts.data_init``.

Relative paths: ``server.data_dir`` relative to the directory of the config file; every other
path (``tls.certificates[].cert``/``key``, ``auth.users_file``, ``spool.dir``,
``delivery.ca_file``, a ``maildir:`` ``delivery.destination``) relative to ``server.data_dir``.

Example (all keys; every section but ``[[listener]]`` is optional)::

    [server]
    hostname = "mx.example.org"     # default: the machine's FQDN
    data_dir = "/var/lib/mailmoat"  # default: the config file's directory
    workers = 2                     # default: number of CPUs

    [[listener]]
    address = "0.0.0.0"
    port = 465
    mode = "implicit-tls"           # "implicit-tls" | "starttls" | "plain"
    role = "submission"             # "mx" | "submission"

    [[listener]]
    address = "::"
    port = 25
    mode = "starttls"
    role = "mx"
    require_tls = false             # mx: offer STARTTLS (false) or require it (true)

    [tls]
    min_version = "1.2"             # "1.2" | "1.3"
    certificates = [ { cert = "tls/cert.pem", key = "tls/key.pem", names = ["mx.example.org"] } ]

    [limits]
    max_message_size = 52428800
    max_recipients = 1000
    max_connections = 1000
    max_connections_per_ip = 50
    idle_timeout = 300.0
    [limits.timeouts]               # RFC 5321 §4.5.3.2, seconds
    greeting = 300.0
    mail = 300.0
    rcpt = 300.0
    data_init = 120.0
    data_block = 180.0
    data_term = 600.0
    server = 300.0

    [smtp]
    bare_newline = "reject"         # "reject" | "normalize"

    [relay]
    local_domains = ["example.org"]
    trusted_networks = ["127.0.0.0/8", "::1/128"]

    [dns]
    resolvers = ["127.0.0.1:53"]    # default: /etc/resolv.conf; same syntax as --resolver
    trust_ad = false                # true: the resolver validates DNSSEC (DANE may use AD)

    [auth]
    users_file = "users.jsonl"

    [store]
    url = "sqlite:mailmoat.db"      # or "postgresql://mailmoat@db/mail?schema=mailmoat"

    [delivery]                      # the delivery queue (gateway/runtime.py, queue.py)
    destination = "lmtp://127.0.0.1:24"   # mail for relay.local_domains; default:
                                    #   "maildir:DATA_DIR/mail/%d/%u"; other domains: their MX
    workers = 2                     # queue tasks per worker process
    per_destination = 20            # deliveries in flight per destination
    min_backoff = 300.0             # retry schedule, seconds (doubling up to max_backoff)
    max_backoff = 4000.0
    max_age = 432000.0              # bounce after 5 days (RFC 5321 §4.5.4.1)
    lease = 300.0                   # a crashed worker's deliveries return after this
    mx_port = 25                    # SMTP port of the MX hosts (tests: a loopback receiver)
    ca_file = "tls/extra-ca.pem"    # extra trust anchors: MX certificates, MTA-STS HTTPS
    mta_sts = true                  # RFC 8461 policies (cache: DATA_DIR/mta-sts-cache.json)
    dane = true                     # RFC 7672 (needs [dns] trust_ad with a validating resolver)
    hold = false                    # true: accept and queue, deliver nothing (maintenance)

    [spool]
    dir = "spool"
    fsync = true

    [submission_api]                # web-form submission endpoint (off by default)
    enabled = true
    address = "127.0.0.1"
    port = 8587
    tokens = { website = "a-secret-of-at-least-32-characters..." }
    allowed_from_domains = ["example.org"]   # default: relay.local_domains
    trusted_proxies = ["127.0.0.0/8", "::1/128"]   # X-Forwarded-For believed from these
    dkim = [ { domain = "example.org", selector = "s1", key = "dkim/s1.pem" } ]

    [policy]                        # role mx: local policy over DMARC (gateway/inbound.py)
    authserv_id = "mx.example.org"  # default: server.hostname
    trusted_forwarders = ["192.0.2.0/24"]      # DMARC failures from here are delivered
    trusted_arc_sealers = ["lists.example.net"]  # RFC 8617 §7.2 override
    allow_domains = ["partner.example"]   # DMARC failure overridden when this domain authenticated
    deny_domains = ["spam.example"]       # From / MAIL FROM domain: 550
    allow_networks = []
    deny_networks = []
    quarantine_folder = "Junk"      # Maildir folder; "" = header X-Mailmoat-Quarantine only

    [dkim_signing]                  # role submission (gateway/outbound_sign.py)
    keys = [ { domain = "example.org", selector = "ed1", key = "dkim/ed1.key" },
             { domain = "example.org", selector = "rsa1", key = "dkim/rsa1.pem" } ]
    keys_dir = "dkim"               # or: DIR/<domain>/<selector>.pem, one file per selector
    arc = { domain = "example.org", selector = "arc1", key = "dkim/arc1.pem" }  # ARC sealing
    # without keys/keys_dir, [submission_api] dkim keys are used.

Listener semantics
    ``mode = "implicit-tls"`` (RFC 8314 §3.3, port 465): TLS from the first byte.
    ``mode = "starttls"`` (RFC 3207): STARTTLS offered; ``mode = "plain"``: STARTTLS offered
    whenever a certificate is configured, none otherwise. ``role = "submission"`` always
    requires TLS before MAIL and AUTH (RFC 8314 §3.3, RFC 4954 §4: AUTH is never advertised in
    clear text), so it needs a certificate; ``require_tls = false`` on a submission listener is
    an error. ``role = "mx"`` with ``require_tls = true`` refuses MAIL before STARTTLS
    (RFC 3207 §4 "530 Must issue a STARTTLS command first"); the default only offers it
    (RFC 3207 §4: a publicly-referenced server MUST NOT require it).

First run (:func:`default_config`)
    Creates the data directory (mode 0700), a self-signed ECDSA P-256 certificate for the
    hostname under ``tls/``, an empty users file and ``config.toml``. Its listeners:

    ============  ===================  ============  ======================================
    run as root   not root             role          mode
    ============  ===================  ============  ======================================
    465           2465                 submission    implicit-tls (RFC 8314 SMTPS)
    587           2587                 submission    starttls
    25            2525                 mx            starttls (offer, not require)
    2525          —                    mx            starttls (for networks blocking 25)
    ============  ===================  ============  ======================================

    All on ``0.0.0.0`` (IPv4) and, when the host has IPv6, ``::``. Unprivileged users
    cannot bind ports below 1024, so they get the 24xx/25xx ports.

SECURITY: the config file is trusted (it names the keys), but it is still validated fully
before anything listens: an invalid value never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import idna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailmoat import limits
from mailmoat.errors import ConfigError
from mailmoat.net.dns import parse_nameserver
from mailmoat.net.tls import CertificateSpec, generate_self_signed

__all__ = [
    "AuthConfig",
    "CertificateConfig",
    "Config",
    "DKIMSigningConfig",
    "LimitsConfig",
    "ListenerConfig",
    "PolicyConfig",
    "RelayConfig",
    "ServerConfig",
    "SmtpConfig",
    "SpoolConfig",
    "SubmissionAPIConfig",
    "SubmissionDKIMConfig",
    "TLSConfig",
    "TimeoutsConfig",
    "default_config",
    "default_data_dir",
    "find_config",
    "load_config",
    "parse_config",
]

CONFIG_FILE_NAME = "config.toml"
USERS_FILE_NAME = "users.jsonl"

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ServerConfig(_Model):
    hostname: str = Field(default_factory=socket.getfqdn, min_length=1, max_length=255)
    data_dir: Path = Path(".")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return _domain(value)


class ListenerConfig(_Model):
    address: str = "0.0.0.0"
    port: Port
    mode: Literal["implicit-tls", "starttls", "plain"]
    role: Literal["mx", "submission"]
    require_tls: bool | None = None  # None: mx False, submission True

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None

    @property
    def tls_required(self) -> bool:
        """Whether MAIL (and AUTH) need TLS first on this listener."""
        if self.role == "submission":
            return True
        return bool(self.require_tls)

    @field_validator("require_tls")
    @classmethod
    def _submission_requires_tls(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if info.data.get("role") == "submission" and value is False:
            raise ValueError("submission listeners always require TLS (RFC 8314 §3.3)")
        return value


class CertificateConfig(_Model):
    cert: Path
    key: Path
    names: tuple[str, ...] = ()

    @field_validator("names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for name in value:
            wild = name.startswith("*.")
            out.append(("*." if wild else "") + _domain(name[2:] if wild else name))
        return tuple(out)

    def spec(self) -> CertificateSpec:
        return CertificateSpec(cert=self.cert, key=self.key, names=self.names)


class TLSConfig(_Model):
    min_version: Literal["1.2", "1.3"] = "1.2"
    certificates: tuple[CertificateConfig, ...] = ()

    def specs(self) -> tuple[CertificateSpec, ...]:
        return tuple(c.spec() for c in self.certificates)


class TimeoutsConfig(_Model):
    """RFC 5321 §4.5.3.2 server-side timeouts, seconds."""

    greeting: PositiveSeconds = limits.SMTP_TIMEOUT_GREETING
    mail: PositiveSeconds = limits.SMTP_TIMEOUT_MAIL
    rcpt: PositiveSeconds = limits.SMTP_TIMEOUT_RCPT
    data_init: PositiveSeconds = limits.SMTP_TIMEOUT_DATA_INIT
    data_block: PositiveSeconds = limits.SMTP_TIMEOUT_DATA_BLOCK
    data_term: PositiveSeconds = limits.SMTP_TIMEOUT_DATA_TERM
    server: PositiveSeconds = limits.SMTP_TIMEOUT_SERVER


class LimitsConfig(_Model):
    max_message_size: int = Field(default=limits.SMTP_MAX_MESSAGE_SIZE, ge=1024, le=2**40)
    #: RFC 5321 §4.5.3.1.8: at least 100 recipients MUST be accepted.
    max_recipients: int = Field(default=limits.SMTP_MAX_RECIPIENTS, ge=100, le=100_000)
    max_connections: int = Field(default=limits.SERVER_MAX_CONNECTIONS, ge=1, le=1_000_000)
    max_connections_per_ip: int = Field(
        default=limits.SERVER_MAX_CONNECTIONS_PER_IP, ge=1, le=1_000_000
    )
    idle_timeout: PositiveSeconds = limits.SERVER_IDLE_TIMEOUT
    timeouts: TimeoutsConfig = TimeoutsConfig()


class SmtpConfig(_Model):
    #: What to do with a bare CR or LF in DATA: refuse the message (default: SMTP smuggling,
    #: RFC 5321 §2.3.8 "MUST NOT ... bare CR or LF") or normalise it to CRLF.
    bare_newline: Literal["reject", "normalize"] = "reject"


class RelayConfig(_Model):
    local_domains: tuple[str, ...] = ()
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @field_validator("local_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_domain(d) for d in value))

    @field_validator("trusted_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out = []
        for item in value:
            try:
                out.append(ipaddress.ip_network(item, strict=True))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{item!r} is not a network ({exc})") from None
        return tuple(out)


class DNSConfig(_Model):
    """``[dns]``: the nameservers every DNS question goes to (the config twin of the commands'
    ``--resolver HOST[:PORT]``); empty = those of /etc/resolv.conf. ``trust_ad`` says the
    first of them is a local validating resolver (e.g. unbound) whose AD bit DANE may trust."""

    resolvers: tuple[str, ...] = ()
    trust_ad: bool = False

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                parse_nameserver(item)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("resolver: ")) from None
        return value


class AuthConfig(_Model):
    users_file: Path = Path(USERS_FILE_NAME)


class SpoolConfig(_Model):
    dir: Path = Path("spool")
    fsync: bool = True


class StoreConfig(_Model):
    """``[store]``: verdicts and the delivery queue (store/). ``url`` is ``sqlite:PATH``
    (relative to ``server.data_dir``) or ``postgresql://...[?schema=NAME]``; default
    ``DATA_DIR/mailmoat.db``."""

    url: str | None = None


class DeliveryConfig(_Model):
    """``[delivery]``: where accepted mail goes (gateway/deliver.py destinations, e.g.
    ``lmtp://127.0.0.1:24``, ``smtp://mail.internal:25``, ``maildir:/srv/mail/%u``) and how
    the queue retries (gateway/queue.py)."""

    destination: str | None = None
    workers: int = Field(default=2, ge=1, le=1024)
    per_destination: int = Field(default=limits.QUEUE_DESTINATION_CONCURRENCY, ge=1, le=10_000)
    min_backoff: PositiveSeconds = limits.QUEUE_MIN_BACKOFF
    max_backoff: PositiveSeconds = limits.QUEUE_MAX_BACKOFF
    max_age: float = Field(default=limits.QUEUE_MAX_AGE, gt=0, le=366 * 86_400)
    lease: PositiveSeconds = limits.QUEUE_LEASE
    #: SMTP port of the recipient domains' MX hosts (RFC 5321 §4.5.4: 25; tests: loopback).
    mx_port: int = Field(default=25, ge=1, le=65535)
    #: Extra trust anchors (PEM) for receivers' certificates and MTA-STS HTTPS fetches.
    ca_file: Path | None = None
    #: Apply recipient domains' MTA-STS policies (RFC 8461); the cache persists in data_dir.
    mta_sts: bool = True
    #: Use DANE TLSA records (RFC 7672); needs [dns] trust_ad and a validating resolver.
    dane: bool = True
    #: Accept and queue but deliver nothing (maintenance; `mailmoat queue` still works).
    hold: bool = False

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(ord(c) < 0x21 for c in value):
            raise ValueError("no spaces or control characters in a destination")
        scheme = value.split(":", 1)[0]
        if scheme not in ("lmtp", "smtp", "smtps", "maildir") or ":" not in value:
            raise ValueError(f"{value!r} is not lmtp://HOST:PORT, lmtp:/SOCKET, "
                             "smtp(s)://HOST:PORT or maildir:/PATH")
        if scheme == "maildir" and not value.removeprefix("maildir:").startswith("/"):
            raise ValueError("a maildir: destination needs a path")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value


class SubmissionDKIMConfig(_Model):
    """One DKIM key the submission API signs with (RFC 6376): mail whose From domain is
    ``domain`` or a subdomain of it is signed ``d=domain; s=selector``."""

    domain: str
    selector: str = Field(min_length=1, max_length=63)
    key: Path

    @field_validator("domain")
    @classmethod
    def _dkim_domain(cls, value: str) -> str:
        return _domain(value)


class SubmissionAPIConfig(_Model):
    """``[submission_api]``: the web-form submission endpoint (gateway/submit_api.py,
    web/submit.py). Off by default; when on, it needs at least one bearer token."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: Port = 8587
    #: name -> secret; the name is recorded as the message's auth_user ("api:NAME").
    tokens: dict[str, Annotated[str, Field(min_length=32, max_length=512)]] = {}
    #: From domains a caller may use; empty: [relay] local_domains.
    allowed_from_domains: tuple[str, ...] = ()
    #: Envelope sender (bounces); default: the From address.
    envelope_from: str | None = None
    max_message_size: int = Field(default=limits.SUBMIT_MAX_MESSAGE_SIZE, ge=1024, le=2**31)
    token_burst: int = Field(default=limits.SUBMIT_TOKEN_BURST, ge=1, le=1_000_000)
    token_refill: float = Field(default=limits.SUBMIT_TOKEN_REFILL, gt=0, le=1_000_000)
    ip_burst: int = Field(default=limits.SUBMIT_IP_BURST, ge=1, le=1_000_000)
    ip_refill: float = Field(default=limits.SUBMIT_IP_REFILL, gt=0, le=1_000_000)
    #: Peers whose X-Forwarded-For names the client (a local reverse proxy or the web
    #: backend passing the visitor's IP); such a peer without the header is limited per
    #: token only.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))
    dkim: tuple[SubmissionDKIMConfig, ...] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        return RelayConfig._networks(value)

    @field_validator("address")
    @classmethod
    def _api_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None

    @field_validator("allowed_from_domains")
    @classmethod
    def _from_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_domain(d) for d in value))

    @model_validator(mode="after")
    def _needs_token(self) -> Self:
        if self.enabled and not self.tokens:
            raise _KeyedError("submission_api.tokens",
                              "the submission API is enabled but has no token")
        return self


class PolicyConfig(_Model):
    """``[policy]``: the local policy the inbound pipeline applies over DMARC (role mx)."""

    authserv_id: str | None = None
    trusted_forwarders: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    trusted_arc_sealers: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    deny_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    quarantine_folder: str = Field(default="Junk", max_length=255, pattern=r"^[^/\x00-\x1f]*$")

    @field_validator("trusted_forwarders", "allow_networks", "deny_networks", mode="before")
    @classmethod
    def _policy_networks(cls, value: Any) -> Any:
        return RelayConfig._networks(value)

    @field_validator("trusted_arc_sealers", "allow_domains", "deny_domains")
    @classmethod
    def _policy_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_domain(d) for d in value))

    @field_validator("authserv_id")
    @classmethod
    def _authserv_id(cls, value: str | None) -> str | None:
        return None if value is None else _domain(value)


class DKIMSigningConfig(_Model):
    """``[dkim_signing]``: the keys submitted mail is signed with (several domains and
    selectors; RSA and Ed25519), from ``keys`` and/or ``keys_dir``; ``arc``: the ARC sealing
    key. Empty: the ``[submission_api] dkim`` keys are used."""

    keys: tuple[SubmissionDKIMConfig, ...] = ()
    keys_dir: Path | None = None
    arc: SubmissionDKIMConfig | None = None


class Config(_Model):
    """The whole validated configuration. ``source`` is the file it came from, if any."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    listener: tuple[ListenerConfig, ...] = Field(min_length=1)
    tls: TLSConfig = TLSConfig()
    limits: LimitsConfig = LimitsConfig()
    smtp: SmtpConfig = SmtpConfig()
    relay: RelayConfig = RelayConfig()
    dns: DNSConfig = DNSConfig()
    auth: AuthConfig = AuthConfig()
    spool: SpoolConfig = SpoolConfig()
    submission_api: SubmissionAPIConfig = SubmissionAPIConfig()
    store: StoreConfig = StoreConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    policy: PolicyConfig = PolicyConfig()
    dkim_signing: DKIMSigningConfig = DKIMSigningConfig()

    @model_validator(mode="after")
    def _listeners(self) -> Self:
        seen: dict[tuple[str, int], int] = {}
        for index, listener in enumerate(self.listener):
            where = (listener.address, listener.port)
            if listener.port and where in seen:
                raise _KeyedError(
                    f"listener[{index}].port",
                    f"{listener.address} port {listener.port} is already used by"
                    f" listener[{seen[where]}]",
                )
            seen[where] = index
            if listener.mode != "plain" and not self.tls.certificates:
                raise _KeyedError(
                    f"listener[{index}].mode",
                    f"mode {listener.mode!r} needs a certificate in [tls] certificates",
                )
            if listener.tls_required and not self.tls.certificates:
                raise _KeyedError(
                    f"listener[{index}].role" if listener.role == "submission"
                    else f"listener[{index}].require_tls",
                    "TLS is required on this listener but no certificate is configured",
                )
        return self

    def offers_starttls(self, listener: ListenerConfig) -> bool:
        """Whether STARTTLS is advertised on ``listener`` (before TLS is up)."""
        return listener.mode in ("starttls", "plain") and bool(self.tls.certificates)

    @property
    def users_file(self) -> Path:
        return self.auth.users_file

    @property
    def spool_dir(self) -> Path:
        return self.spool.dir

    @property
    def store_url(self) -> str:
        """The store URL (:func:`mailmoat.store.open_store`); relative SQLite paths are under
        ``server.data_dir``."""
        url = self.store.url
        if url is None:
            return f"sqlite:{self.server.data_dir / 'mailmoat.db'}"
        if url.startswith("sqlite:") and not url.startswith("sqlite:/"):
            return f"sqlite:{self.server.data_dir / url.removeprefix('sqlite:')}"
        return url


class _KeyedError(ValueError):
    """A cross-field error that knows which key to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _domain(value: str) -> str:
    """A domain name as the A-label, lowercased, without a trailing dot (UTS-46, IDNA2008)."""
    name = value.strip().rstrip(".")
    if not name:
        raise ValueError("empty domain name")
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid domain name {value!r}: {exc}") from None
    if len(ascii_name) > limits.SMTP_DOMAIN_MAX:
        raise ValueError(f"domain name longer than {limits.SMTP_DOMAIN_MAX} octets")
    return ascii_name.lower()


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _describe(error: Mapping[str, Any]) -> tuple[str | None, str]:
    loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _KeyedError):
        return ctx_error.key, ctx_error.message
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    elif error["type"] == "missing":
        message = "required setting is missing"
    return _dotted(loc) or None, message


def _convert(exc: ValidationError, source: str) -> ConfigError:
    """One ConfigError naming the first bad key (and listing the others)."""
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    # Drop follow-on errors of a parent whose child already failed (a failed list item
    # also makes its list too short).
    kept = [
        e for e, loc in zip(errors, locs, strict=True)
        if not any(other != loc and other[: len(loc)] == loc for other in locs)
    ]
    described = [_describe(e) for e in kept]
    key, message = described[0]
    others = "; ".join(f"{k}: {m}" if k else m for k, m in described[1:])
    if others:
        message += f" (also: {others})"
    return ConfigError(f"{message} [in {source}]", key=key)


def _resolve(data: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make relative paths absolute (see the module docstring) before validation."""
    out = dict(data)
    server = dict(out.get("server") or {}) if isinstance(out.get("server"), dict) else None
    if server is not None:
        raw = server.get("data_dir", ".")
        if isinstance(raw, str):
            server["data_dir"] = str((base_dir / raw).resolve())
        out["server"] = server
        data_dir = Path(server["data_dir"]) if isinstance(server["data_dir"], str) else base_dir
    else:
        out["server"] = {"data_dir": str(base_dir.resolve())}
        data_dir = base_dir.resolve()

    def rel(section: str, key: str) -> None:
        sect = out.get(section)
        if isinstance(sect, dict) and isinstance(sect.get(key), str):
            out[section] = {**sect, key: str(data_dir / sect[key])}

    rel("auth", "users_file")
    rel("spool", "dir")
    rel("delivery", "ca_file")
    delivery = out.get("delivery")
    if isinstance(delivery, dict) and isinstance(delivery.get("destination"), str):
        target = delivery["destination"]
        if target.startswith("maildir:") and target[len("maildir:"):][:1] not in ("", "/"):
            # A relative Maildir template lives under data_dir, like every other path.
            path = target.removeprefix("maildir:")
            out["delivery"] = {**delivery, "destination": f"maildir:{data_dir / path}"}
    # A section present without its path key still gets the default under data_dir.
    for section, key, default in (("auth", "users_file", USERS_FILE_NAME),
                                  ("spool", "dir", "spool")):
        sect = out.get(section)
        if sect is None:
            out[section] = {key: str(data_dir / default)}
        elif isinstance(sect, dict) and key not in sect:
            out[section] = {**sect, key: str(data_dir / default)}
    api = out.get("submission_api")
    if isinstance(api, dict) and isinstance(api.get("dkim"), list):
        out["submission_api"] = {**api, "dkim": [
            {**item, "key": str(data_dir / item["key"])}
            if isinstance(item, dict) and isinstance(item.get("key"), str) else item
            for item in api["dkim"]
        ]}
    signing = out.get("dkim_signing")
    if isinstance(signing, dict):
        def _key_path(item: Any) -> Any:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                return {**item, "key": str(data_dir / item["key"])}
            return item
        signing = dict(signing)
        if isinstance(signing.get("keys"), list):
            signing["keys"] = [_key_path(item) for item in signing["keys"]]
        if isinstance(signing.get("keys_dir"), str):
            signing["keys_dir"] = str(data_dir / signing["keys_dir"])
        if "arc" in signing:
            signing["arc"] = _key_path(signing["arc"])
        out["dkim_signing"] = signing
    tls = out.get("tls")
    if isinstance(tls, dict) and isinstance(tls.get("certificates"), list):
        certs = []
        for item in tls["certificates"]:
            if isinstance(item, dict):
                paths = {
                    k: str(data_dir / item[k]) for k in ("cert", "key")
                    if isinstance(item.get(k), str)
                }
                certs.append({**item, **paths})
            else:
                certs.append(item)
        out["tls"] = {**tls, "certificates": certs}
    return out


def parse_config(text: str, *, base_dir: Path | str, source: str = "<config>") -> Config:
    """Parse and validate TOML text; relative paths are taken from ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(_resolve(data, Path(base_dir)))
    except ValidationError as exc:
        raise _convert(exc, source) from None


def load_config(path: Path | str) -> Config:
    """Read and validate the TOML config file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from None
    return parse_config(text, base_dir=file.resolve().parent, source=str(file))


def default_data_dir(*, is_root: bool | None = None) -> Path:
    """``/var/lib/mailmoat`` for root, else ``$XDG_DATA_HOME/mailmoat``
    (``~/.local/share/mailmoat``)."""
    if is_root is None:
        is_root = os.geteuid() == 0
    if is_root:
        return Path("/var/lib/mailmoat")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailmoat"


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def default_listeners(*, is_root: bool, ipv6: bool) -> list[dict[str, Any]]:
    """The first-run listeners (see the table in the module docstring)."""
    if is_root:
        ports = [(465, "implicit-tls", "submission"), (587, "starttls", "submission"),
                 (25, "starttls", "mx"), (2525, "starttls", "mx")]
    else:
        ports = [(2465, "implicit-tls", "submission"), (2587, "starttls", "submission"),
                 (2525, "starttls", "mx")]
    addresses = ["0.0.0.0", "::"] if ipv6 else ["0.0.0.0"]
    return [
        {"address": address, "port": port, "mode": mode, "role": role}
        for port, mode, role in ports
        for address in addresses
    ]


def render_config(
    *, hostname: str, data_dir: Path, listeners: Sequence[Mapping[str, Any]],
    dkim_keys_dir: str | None = None,
) -> str:
    """The TOML text of a first-run config."""
    lines = [
        "# mailmoat configuration (generated on first run; edit freely).",
        "# Relative paths are relative to server.data_dir.",
        "",
        "[server]",
        f"hostname = {_toml_str(hostname)}",
        f"data_dir = {_toml_str(str(data_dir))}",
        "",
    ]
    for listener in listeners:
        lines += [
            "[[listener]]",
            f"address = {_toml_str(listener['address'])}",
            f"port = {int(listener['port'])}",
            f"mode = {_toml_str(listener['mode'])}",
            f"role = {_toml_str(listener['role'])}",
            "",
        ]
    lines += [
        "[tls]",
        'min_version = "1.2"',
        "certificates = [",
        '  { cert = "tls/cert.pem", key = "tls/key.pem" },',
        "]",
        "",
        "[relay]",
        f"local_domains = [{_toml_str(hostname)}]",
        'trusted_networks = ["127.0.0.0/8", "::1/128"]',
        "",
        "[auth]",
        f"users_file = {_toml_str(USERS_FILE_NAME)}",
        "",
        "[spool]",
        'dir = "spool"',
        "fsync = true",
        "",
    ]
    if dkim_keys_dir is not None:
        lines += [
            "[dkim_signing]                   # submitted mail is signed (RFC 6376)",
            f"keys_dir = {_toml_str(dkim_keys_dir)}   # DIR/<domain>/<selector>.pem",
            "",
        ]
    return "\n".join(lines)


#: The selector of the key made on first run (``DATA_DIR/dkim/<hostname>/mm1.pem``).
FIRST_RUN_DKIM_SELECTOR = "mm1"


def first_run_dkim_key(directory: Path, domain: str) -> Path:
    """An RSA-2048 DKIM key (RFC 8301 §3.2: at least 1024, 2048 recommended; RSA because every
    verifier knows it, unlike Ed25519) at ``directory/<domain>/mm1.pem``, mode 0600; an
    existing one is kept."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = directory / domain / f"{FIRST_RUN_DKIM_SELECTOR}.pem"
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def default_config(
    data_dir: Path | str | None = None,
    *,
    hostname: str | None = None,
    is_root: bool | None = None,
    ipv6: bool | None = None,
) -> tuple[Config, Path]:
    """First run: create ``data_dir`` with a certificate, a DKIM key for the hostname's
    domain (:func:`first_run_dkim_key`; ``mailmoat serve`` prints the TXT record to publish)
    and ``config.toml``; load it.

    If ``data_dir/config.toml`` exists already it is loaded as is (never overwritten), and
    an existing certificate is kept. Returns the config and the path of its file.
    """
    if is_root is None:
        is_root = os.geteuid() == 0
    directory = Path(data_dir) if data_dir is not None else default_data_dir(is_root=is_root)
    directory = directory.resolve()
    config_file = directory / CONFIG_FILE_NAME
    if config_file.exists():
        return load_config(config_file), config_file
    try:
        host = _domain(hostname or socket.getfqdn())
    except ValueError as exc:
        raise ConfigError(f"cannot use the hostname for the certificate: {exc}",
                          key="server.hostname") from None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / "tls").mkdir(mode=0o700, exist_ok=True)
        cert, key = directory / "tls" / "cert.pem", directory / "tls" / "key.pem"
        if not (cert.exists() and key.exists()):
            names = [host] if host == "localhost" else [host, "localhost"]
            generate_self_signed(cert, key, names)
        users = directory / USERS_FILE_NAME
        if not users.exists():
            fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        (directory / "dkim").mkdir(mode=0o700, exist_ok=True)
        first_run_dkim_key(directory / "dkim", host)
        text = render_config(
            hostname=host,
            data_dir=directory,
            listeners=default_listeners(
                is_root=is_root, ipv6=_has_ipv6() if ipv6 is None else ipv6
            ),
            dkim_keys_dir="dkim",
        )
        tmp = config_file.with_name(f".{CONFIG_FILE_NAME}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, config_file)
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory {directory}: {exc}") from None
    return load_config(config_file), config_file


def find_config(
    config_file: Path | str | None = None, data_dir: Path | str | None = None
) -> Config | None:
    """The config a command-line tool should use: ``config_file`` if given, else
    ``data_dir/config.toml`` (``data_dir`` defaulting to :func:`default_data_dir`) if it
    exists, else None (the caller then uses ``data_dir``'s default layout)."""
    if config_file is not None:
        return load_config(config_file)
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    candidate = directory / CONFIG_FILE_NAME
    if candidate.exists():
        return load_config(candidate)
    return None
