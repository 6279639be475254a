"""Submission users: scrypt password hashes, allowed sender addresses, AUTH rate limits (L4).

Users file
    JSON lines (one user per line, UTF-8, ``#`` comments and blank lines ignored), written
    atomically with mode 0600 by ``mailmoat user add``::

        {"user": "alice", "hash": "$scrypt$ln=14,r=8,p=1$<salt>$<hash>",
         "addresses": ["alice@example.org", "*@alice.example"]}

    (one line in the file; wrapped here).

    JSON lines rather than TOML so that a line is a whole record: a line-oriented diff, grep,
    or a configuration-management tool can edit one user without a TOML writer.

Password hashes
    ``$scrypt$ln=14,r=8,p=1$SALT$HASH``: scrypt (RFC 7914) with N = 2^ln, r, p, a 16-byte
    random salt and a 32-byte derived key; SALT and HASH are standard base64 without padding
    (the PHC string format). The password is SASLprep-ed (RFC 4013; RFC 4616 §2 for PLAIN) and
    UTF-8 encoded before hashing, so a password typed with a different Unicode normalisation
    still verifies. Verification compares with :func:`hmac.compare_digest` (constant time) and
    a log-in for an unknown user still hashes once, against a dummy, so timing does not tell
    which user names exist. A hash costs ≈16 MiB and ≈50 ms of CPU: the asyncio server must
    call :meth:`Authenticator.authenticate` (which runs it in a thread), never :meth:`check`.

User names
    Compared exactly after SASLprep (case-sensitive, like Dovecot's default), 1-255 characters,
    no white space or control characters.

Allowed addresses (MAIL FROM of an authenticated session)
    Each user lists addresses or patterns; MAIL FROM must match one:

    * ``alice@example.org``: that address; the domain is compared after IDNA (UTS-46) mapping
      and case-folding, the local part with ASCII letters case-folded (``Alice@`` = ``alice@``);
    * ``*@example.org``: any local part at exactly that domain (not its subdomains); no other
      wildcard form exists (no ``a*@``, no ``*@*.example.org``), so a pattern cannot be wider
      than it looks;
    * ``<>``: the null reverse-path (bounces) — never allowed unless listed.

Rate limits (:class:`AuthRateLimiter`)
    Failed log-ins are counted in token buckets per client IP (IPv6: per /64, since one host
    holds a whole /64) and per user name, with an injectable clock. When either bucket is
    empty the attempt is refused *before* any password hashing, with the seconds to wait.

SECURITY: user name and password come from the network (SASL PLAIN/LOGIN) and are bounded
(:data:`mailmoat.limits.AUTH_NAME_MAX`, ``AUTH_PASSWORD_MAX``) before SASLprep or hashing;
undecodable or prohibited input is a failed log-in, not an exception. The users file is
trusted configuration but is still bounded in size and its scrypt parameters are range-checked
so a bad line cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import stringprep
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from mailmoat import limits
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import ConfigError
from mailmoat.gateway.relay import normalize_domain

__all__ = [
    "AuthOutcome",
    "AuthRateLimiter",
    "Authenticator",
    "TokenBucket",
    "User",
    "UserDB",
    "address_allowed",
    "hash_password",
    "ip_key",
    "make_user",
    "normalize_address_pattern",
    "saslprep",
    "verify_password",
]

_SCRYPT_DKLEN = 32
_SCRYPT_MAXMEM = 256 * 1024 * 1024
_HASH_RE = re.compile(
    r"^\$scrypt\$ln=(?P<ln>[0-9]{1,2}),r=(?P<r>[0-9]{1,2}),p=(?P<p>[0-9]{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]{2,88})\$(?P<hash>[A-Za-z0-9+/]{16,128})$"
)
_NAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")


# --- SASLprep (RFC 4013) -------------------------------------------------------------------


def saslprep(text: str, *, stored: bool = True) -> str:
    """SASLprep (RFC 4013) of ``text``; raises ValueError for prohibited input.

    RFC 4013 §2.1 mapping: non-ASCII spaces (C.1.2) to SPACE, "commonly mapped to nothing"
    (B.1) removed; §2.2 NFKC; §2.3 prohibited output C.1.2, C.2.1-C.9; §2.4 bidi rules of
    RFC 3454 §6; §2.5 unassigned code points (A.1) prohibited in stored strings only.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal:
        return normal
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
        stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
        stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for c in normal:
        if any(test(c) for test in prohibited):
            raise ValueError(f"prohibited character U+{ord(c):04X}")
        if stored and stringprep.in_table_a1(c):
            raise ValueError(f"unassigned code point U+{ord(c):04X}")
    # RFC 3454 §6: RandALCat strings contain no LCat and start and end with RandALCat.
    if any(stringprep.in_table_d1(c) for c in normal):
        if any(stringprep.in_table_d2(c) for c in normal):
            raise ValueError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            raise ValueError("right-to-left text must start and end with a right-to-left char")
    return normal


# --- scrypt hashes ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _password_bytes(password: str | bytes, *, stored: bool) -> bytes:
    if isinstance(password, bytes):
        password = password.decode("utf-8")
    return saslprep(password, stored=stored).encode("utf-8")


def hash_password(
    password: str | bytes,
    *,
    salt: bytes | None = None,
    log2_n: int = limits.AUTH_SCRYPT_LOG2_N,
    r: int = limits.AUTH_SCRYPT_R,
    p: int = limits.AUTH_SCRYPT_P,
) -> str:
    """``$scrypt$ln=14,r=8,p=1$SALT$HASH`` for ``password`` (SASLprep-ed, UTF-8)."""
    if salt is None:
        salt = secrets.token_bytes(limits.AUTH_SCRYPT_SALT_BYTES)
    secret = _password_bytes(password, stored=True)
    if not secret:
        raise ValueError("empty password")
    derived = hashlib.scrypt(
        secret, salt=salt, n=2**log2_n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=_SCRYPT_DKLEN
    )
    return f"$scrypt$ln={log2_n},r={r},p={p}${_b64(salt)}${_b64(derived)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Params:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(encoded: str) -> _Params:
    match = _HASH_RE.match(encoded)
    if match is None:
        raise ValueError("not a $scrypt$ln=..,r=..,p=..$salt$hash string")
    log2_n, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
    # Bounds keep a bad users file from asking for gigabytes or minutes per log-in.
    if not (1 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and 128 * r * 2**log2_n
            <= _SCRYPT_MAXMEM // 2):
        raise ValueError("scrypt parameters out of range")
    try:
        salt, digest = _unb64(match["salt"]), _unb64(match["hash"])
    except (binascii.Error, ValueError):
        raise ValueError("bad base64 in hash") from None
    return _Params(log2_n=log2_n, r=r, p=p, salt=salt, digest=digest)


def verify_password(password: str | bytes, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time compare; never raises)."""
    try:
        params = _parse_hash(encoded)
        secret = _password_bytes(password, stored=False)
    except (ValueError, UnicodeDecodeError):
        return False
    derived = hashlib.scrypt(
        secret, salt=params.salt, n=2**params.log2_n, r=params.r, p=params.p,
        maxmem=_SCRYPT_MAXMEM, dklen=len(params.digest),
    )
    return hmac.compare_digest(derived, params.digest)


# --- addresses -------------------------------------------------------------------------------


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    return local, domain


def _norm_domain(domain: str) -> str:
    if domain.startswith("[") and domain.endswith("]"):
        return domain.lower()  # address literal (RFC 5321 §4.1.3), compared as text
    # relay.normalize_domain: plain LDH names skip the IDNA library (same answer, and this
    # runs twice per submitted message).
    normalized = normalize_domain(domain, mapping=True)
    if normalized is None:
        raise ValueError(f"bad domain {domain!r}: not a valid IDNA domain name")
    return normalized


def _norm_local(local: str) -> str:
    """ASCII letters case-folded; other characters kept as they are."""
    return local.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape")


def normalize_address_pattern(pattern: str) -> str:
    """The canonical form of an allowed-address entry (see the module docstring)."""
    text = pattern.strip()
    if text == "<>":
        return text
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, domain = _split(text)
    if "*" in domain or ("*" in local and local != "*"):
        raise ValueError(f"only '*@domain' patterns are allowed: {pattern!r}")
    if len(text) > limits.SMTP_PATH_MAX:
        raise ValueError(f"address longer than {limits.SMTP_PATH_MAX} octets")
    return f"{_norm_local(local)}@{_norm_domain(domain)}"


def address_allowed(address: str, patterns: Iterable[str]) -> bool:
    """Whether MAIL FROM ``address`` ("" for ``<>``) matches one of the (canonical) patterns."""
    if address in ("", "<>"):
        return "<>" in patterns
    try:
        local, domain = _split(address)
        canonical = f"{_norm_local(local)}@{_norm_domain(domain)}"
    except ValueError:
        return False
    any_local = f"*@{canonical.rpartition('@')[2]}"
    return any(p in (canonical, any_local) for p in patterns)


# --- users -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A submission user: name (SASLprep-ed), scrypt hash string, allowed addresses."""

    name: str
    password_hash: str
    addresses: tuple[str, ...] = ()

    def may_send_as(self, address: str) -> bool:
        """Whether this user may use ``address`` as MAIL FROM ("" is ``<>``)."""
        return address_allowed(address, self.addresses)

    def to_json(self) -> str:
        return json.dumps(
            {"user": self.name, "hash": self.password_hash, "addresses": list(self.addresses)},
            ensure_ascii=False,
        )


def _check_name(name: str) -> str:
    prepared = saslprep(name)
    if not _NAME_RE.match(prepared):
        raise ValueError("user name must be 1-255 characters without spaces or controls")
    return prepared


def make_user(name: str, password: str | bytes, addresses: Iterable[str] = ()) -> User:
    """A new user with a fresh hash (validating name and addresses)."""
    return User(
        name=_check_name(name),
        password_hash=hash_password(password),
        addresses=tuple(dict.fromkeys(normalize_address_pattern(a) for a in addresses)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UserDB:
    """An immutable set of users; edits return a new :class:`UserDB`."""

    users: Mapping[str, User] = field(default_factory=dict)

    def get(self, name: str) -> User | None:
        try:
            return self.users.get(saslprep(name, stored=False))
        except ValueError:
            return None

    def __len__(self) -> int:
        return len(self.users)

    def all(self) -> list[User]:
        """Every user, sorted by name."""
        return sorted(self.users.values(), key=lambda u: u.name)

    def with_user(self, user: User) -> UserDB:
        return replace(self, users={**self.users, user.name: user})

    def without(self, name: str) -> UserDB:
        key = saslprep(name, stored=False)
        if key not in self.users:
            raise KeyError(name)
        return replace(self, users={k: v for k, v in self.users.items() if k != key})

    @classmethod
    def parse(cls, text: str, *, source: str = "<users>") -> UserDB:
        users: dict[str, User] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            where = f"{source}:{number}"
            try:
                record = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"not a JSON object: {exc.msg}", key=where) from None
            if not isinstance(record, dict) or set(record) - {"user", "hash", "addresses"}:
                raise ConfigError("expected keys user, hash, addresses", key=where)
            name, encoded, addresses = (
                record.get("user"), record.get("hash"), record.get("addresses", []),
            )
            if not isinstance(name, str) or not isinstance(encoded, str):
                raise ConfigError("user and hash must be strings", key=where)
            if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
                raise ConfigError("addresses must be a list of strings", key=where)
            try:
                name = _check_name(name)
                _parse_hash(encoded)
                patterns = tuple(normalize_address_pattern(a) for a in addresses)
            except ValueError as exc:
                raise ConfigError(str(exc), key=where) from None
            if name in users:
                raise ConfigError(f"user {name!r} is listed twice", key=where)
            users[name] = User(name=name, password_hash=encoded, addresses=patterns)
        return cls(users=users)

    @classmethod
    def load(cls, path: Path | str, *, missing_ok: bool = True) -> UserDB:
        """Read a users file; a missing file is an empty database when ``missing_ok``."""
        file = Path(path)
        try:
            if file.stat().st_size > limits.USERS_FILE_MAX:
                raise ConfigError(f"users file {file} is larger than {limits.USERS_FILE_MAX}")
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise ConfigError(f"users file {file} does not exist") from None
        except UnicodeDecodeError:
            raise ConfigError(f"users file {file} is not UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"users file {file} cannot be read: {exc.strerror}") from None
        return cls.parse(text, source=str(file))

    def dumps(self) -> str:
        return "".join(user.to_json() + "\n" for user in self.all())

    def save(self, path: Path | str) -> None:
        """Write atomically (temporary file, fsync, rename) with mode 0600."""
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.dumps())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(file.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- rate limiting ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBucket:
    """Token buckets by key: ``burst`` tokens, refilled at ``refill`` tokens per second.

    A failure takes one token; a key with less than one token is limited. At most
    ``max_keys`` buckets are kept (least recently touched are dropped: a dropped bucket is
    simply full again).
    """

    def __init__(
        self, *, burst: int, refill: float, clock: Clock = SYSTEM_CLOCK,
        max_keys: int = limits.AUTH_FAILURE_TRACKED_MAX,
    ) -> None:
        if burst < 1 or refill <= 0:
            raise ValueError("burst must be >= 1 and refill > 0")
        self.burst, self.refill, self.clock, self.max_keys = burst, refill, clock, max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _level(self, key: str) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self.clock.monotonic()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.refill)
        bucket.stamp = now
        return bucket

    def retry_after(self, key: str) -> float:
        """0.0 if ``key`` may try now, else the seconds until it may."""
        bucket = self._level(key)
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) / self.refill

    def take(self, key: str) -> None:
        """Record one failure for ``key``."""
        bucket = self._level(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), self.clock.monotonic())
        bucket.tokens = max(0.0, bucket.tokens - 1)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def ip_key(ip: str) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AuthRateLimiter:
    """Failed-AUTH limits per client IP and per user name (see limits.AUTH_FAILURE_*)."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        ip_burst: int = limits.AUTH_FAILURE_IP_BURST,
        ip_refill: float = limits.AUTH_FAILURE_IP_REFILL,
        user_burst: int = limits.AUTH_FAILURE_USER_BURST,
        user_refill: float = limits.AUTH_FAILURE_USER_REFILL,
    ) -> None:
        self.by_ip = TokenBucket(burst=ip_burst, refill=ip_refill, clock=clock)
        self.by_user = TokenBucket(burst=user_burst, refill=user_refill, clock=clock)

    def retry_after(self, ip: str, user: str | None) -> float:
        wait = self.by_ip.retry_after(ip_key(ip))
        if user is not None:
            wait = max(wait, self.by_user.retry_after(user))
        return wait

    def record_failure(self, ip: str, user: str | None) -> None:
        self.by_ip.take(ip_key(ip))
        if user is not None:
            self.by_user.take(user)


# --- authentication --------------------------------------------------------------------------

AuthReason = Literal["ok", "invalid-credentials", "rate-limited", "malformed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthOutcome:
    """The result of one log-in attempt (a value, never an exception).

    ``reason``: ``ok``; ``invalid-credentials`` (unknown user or wrong password — the two are
    never told apart to the client: RFC 4954 535 5.7.8); ``rate-limited`` (``retry_after``
    seconds; RFC 4954 454 4.7.0 is the reply); ``malformed`` (too long, not UTF-8, or
    prohibited by SASLprep: also a 535).
    """

    reason: AuthReason
    user: User | None = None
    retry_after: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


class Authenticator:
    """Checks log-ins against a :class:`UserDB` with rate limiting.

    ``users`` may be replaced at any time (e.g. after re-reading the users file on SIGHUP).
    """

    def __init__(
        self, users: UserDB, *, limiter: AuthRateLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.users = users
        self.limiter = limiter if limiter is not None else AuthRateLimiter(clock=clock)
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = hash_password(secrets.token_hex(16))
        return self._dummy

    def _precheck(self, username: str | bytes, password: str | bytes, ip: str) -> (
        AuthOutcome | tuple[str, str | bytes, User | None]
    ):
        if len(username) > limits.AUTH_NAME_MAX or len(password) > limits.AUTH_PASSWORD_MAX:
            self.limiter.record_failure(ip, None)
            return AuthOutcome(reason="malformed")
        try:
            name = username.decode("utf-8") if isinstance(username, bytes) else username
            name = saslprep(name, stored=False)
        except (UnicodeDecodeError, ValueError):
            self.limiter.record_failure(ip, None)
            return AuthOutcome(reason="malformed")
        wait = self.limiter.retry_after(ip, name)
        if wait > 0:
            return AuthOutcome(reason="rate-limited", retry_after=wait)
        return name, password, self.users.users.get(name)

    def _finish(self, name: str, ip: str, user: User | None, matched: bool) -> AuthOutcome:
        if matched and user is not None:
            return AuthOutcome(reason="ok", user=user)
        self.limiter.record_failure(ip, name)
        return AuthOutcome(reason="invalid-credentials")

    def check(self, username: str | bytes, password: str | bytes, *, ip: str) -> AuthOutcome:
        """Synchronous log-in check: runs scrypt (≈50 ms) in the calling thread."""
        pre = self._precheck(username, password, ip)
        if isinstance(pre, AuthOutcome):
            return pre
        name, secret, user = pre
        encoded = user.password_hash if user else self._dummy_hash()
        matched = verify_password(secret, encoded)
        return self._finish(name, ip, user, matched)

    async def authenticate(
        self, username: str | bytes, password: str | bytes, *, ip: str
    ) -> AuthOutcome:
        """Like :meth:`check`, with the scrypt computation in a worker thread.

        Limiter state is only touched on the event loop thread.
        """
        pre = self._precheck(username, password, ip)
        if isinstance(pre, AuthOutcome):
            return pre
        name, secret, user = pre
        encoded: str
        if user is not None:
            encoded = user.password_hash
        elif self._dummy is not None:
            encoded = self._dummy
        else:
            encoded = await asyncio.to_thread(self._dummy_hash)
        matched = await asyncio.to_thread(verify_password, secret, encoded)
        return self._finish(name, ip, user, matched)
