"""MTA-STS policy files (RFC 8461 §3.2), MX matching (§4.1) and the delivery decision (§5).

RFC 8461 §3.2 (erratum 6253: lines end in LF or CRLF)::

    sts-policy-record        = sts-policy-field *WSP
                               *(sts-policy-term sts-policy-field *WSP)
                               [sts-policy-term]
    sts-policy-field         = sts-policy-version / sts-policy-mode / sts-policy-max-age /
                               sts-policy-mx / sts-policy-extension
    sts-policy-field-delim   = ":" *WSP
    sts-policy-version-value = %s"STSv1"
    sts-policy-mode-value    = %s"testing" / %s"enforce" / %s"none"
    sts-policy-mx-value      = ["*."] Domain
    sts-policy-max-age-value = 1*10(DIGIT)
    sts-policy-ext-name      = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    sts-policy-term          = LF / CRLF
    sts-policy-ext-value     = sts-policy-vchar [ *(%x20 / sts-policy-vchar) sts-policy-vchar ]
    sts-policy-vchar         = %x21-7E / UTF8-2 / UTF8-3 / UTF8-4

SECURITY: the policy body comes from an HTTPS server (authenticated, but its content is
untrusted). The body is bounded by ``limits.MTASTS_POLICY_MAX`` octets before any work (longer:
:class:`~mailmoat.errors.ParseError`), must be valid UTF-8, and is split into lines once; each
line is matched by anchored regexes without nested quantifiers (linear). At most
``limits.MTASTS_MAX_MX_PATTERNS`` mx patterns are accepted; ``max_age`` above
``limits.MTASTS_MAX_AGE_MAX`` is refused. Nothing in the policy is fetched or resolved.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from mailmoat import limits
from mailmoat.errors import ParseError

__all__ = [
    "Decision",
    "Mode",
    "Policy",
    "TLSState",
    "allowed_mx",
    "decide",
    "mx_matches",
    "parse_policy",
    "valid_mx_pattern",
]


class Mode(enum.StrEnum):
    """§3.2 ``mode``."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


# RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str];
# Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_MX_PATTERN: Final = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_FIELD: Final = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_\-.]{0,31}):[ \t]*(?P<value>.*)")
_EXT_VALUE: Final = re.compile(r"[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")
_MAX_AGE: Final = re.compile(r"[0-9]{1,10}")


def valid_mx_pattern(pattern: str) -> bool:
    """``["*."] Domain`` (§3.2), at most 253 characters."""
    return len(pattern) <= limits.SMTP_DOMAIN_MAX and bool(_MX_PATTERN.fullmatch(pattern))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A parsed MTA-STS policy. ``mx`` patterns are lower-case; ``warnings`` lists what was
    ignored (duplicate fields, blank lines, unknown fields are kept in ``extensions``)."""

    mode: Mode
    max_age: int
    mx: tuple[str, ...]
    version: str = "STSv1"
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def matches(self, host: str) -> bool:
        """§4.1: does the MX host name match one of the ``mx`` patterns?"""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    def as_text(self) -> str:
        """The policy in its file form (CRLF lines), for the cache and display."""
        lines = [f"version: {self.version}", f"mode: {self.mode.value}"]
        lines += [f"mx: {mx}" for mx in self.mx]
        lines.append(f"max_age: {self.max_age}")
        lines += [f"{name}: {value}" for name, value in self.extensions]
        return "\r\n".join(lines) + "\r\n"


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: "a pattern of "*.example.com" would match "mail.example.com" but not
    "example.com" or "foo.bar.example.com"" -- the wildcard stands for exactly one label.
    Names compare case-insensitively (RFC 4343), a trailing root dot on the host is ignored."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


def parse_policy(body: bytes) -> Policy:
    """Parse a policy file (§3.2). Raises :class:`ParseError` when it is unusable.

    §3.2: "If any non-repeated field -- i.e., all fields excepting "mx" -- is duplicated, all
    entries except for the first SHOULD be ignored." Unknown fields "SHOULD be ignored" (kept
    in ``extensions``). "mx" is "required at least once, except when mode is none".
    """
    if len(body) > limits.MTASTS_POLICY_MAX:
        raise ParseError(f"MTA-STS policy larger than {limits.MTASTS_POLICY_MAX} octets")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("MTA-STS policy is not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # [sts-policy-term] after the last field
    version: str | None = None
    mode: Mode | None = None
    max_age: int | None = None
    mx: list[str] = []
    extensions: list[tuple[str, str]] = []
    warnings: list[str] = []
    for number, raw in enumerate(lines, 1):
        line = raw.removesuffix("\r").rstrip(" \t")
        if not line:
            warnings.append(f"line {number}: blank line ignored")
            continue
        match = _FIELD.fullmatch(line)
        if match is None:
            raise ParseError(f"MTA-STS policy line {number} is not 'name: value': "
                             f"{line[:60]!r}")
        name, value = match.group("name"), match.group("value")
        if name == "version":
            if version is not None:
                warnings.append(f"line {number}: duplicate version ignored")
            elif value != "STSv1":
                raise ParseError(f"MTA-STS policy version {value[:20]!r} is not STSv1")
            else:
                version = value
        elif name == "mode":
            if mode is not None:
                warnings.append(f"line {number}: duplicate mode ignored")
                continue
            try:
                mode = Mode(value)  # %s: case-sensitive
            except ValueError:
                raise ParseError(f"MTA-STS policy mode {value[:20]!r} is not enforce, "
                                 "testing or none") from None
        elif name == "max_age":
            if max_age is not None:
                warnings.append(f"line {number}: duplicate max_age ignored")
                continue
            if not _MAX_AGE.fullmatch(value):
                raise ParseError(f"MTA-STS max_age {value[:20]!r} is not 1-10 digits")
            # §3.2 max_age: "plaintext non-negative integer seconds, maximum value of 31557600"
            if int(value) > limits.MTASTS_MAX_AGE_MAX:
                raise ParseError(f"MTA-STS max_age {value} exceeds {limits.MTASTS_MAX_AGE_MAX}")
            max_age = int(value)
        elif name == "mx":
            if not valid_mx_pattern(value):
                raise ParseError(f"MTA-STS mx {value[:60]!r} is not a host name or *.domain")
            if len(mx) >= limits.MTASTS_MAX_MX_PATTERNS:
                raise ParseError(f"more than {limits.MTASTS_MAX_MX_PATTERNS} mx patterns")
            mx.append(value.lower())
        elif _EXT_VALUE.fullmatch(value):
            extensions.append((name, value))
        else:
            warnings.append(f"line {number}: field {name!r} has an invalid value; ignored")
    if version is None:
        raise ParseError("MTA-STS policy has no 'version: STSv1' field")
    if mode is None:
        raise ParseError("MTA-STS policy has no mode field")
    if max_age is None:
        raise ParseError("MTA-STS policy has no max_age field")
    if not mx and mode is not Mode.NONE:
        raise ParseError(f"MTA-STS policy in mode {mode.value} has no mx field")
    return Policy(mode=mode, max_age=max_age, mx=tuple(dict.fromkeys(mx)), version=version,
                  extensions=tuple(extensions), warnings=tuple(warnings))


class TLSState(enum.StrEnum):
    """What a connection attempt to one MX established (§4.2)."""

    NOT_CONNECTED = "not-connected"  # asked before connecting: only the MX name is judged
    VALID = "valid"  # STARTTLS, and a PKIX certificate valid for the MX host name
    NO_STARTTLS = "starttls-not-supported"
    INVALID_CERTIFICATE = "certificate-invalid"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """May we deliver to this MX under this policy?

    ``deliver`` False means refuse this MX (and try the next one). ``failure`` names a policy
    failure to report in TLS-RPT (RFC 8460 §4.3 result types) even when ``deliver`` is True
    (testing mode). ``enforced`` is True when an ``enforce`` policy decided.
    """

    deliver: bool
    enforced: bool
    failure: str | None
    reason: str


def decide(policy: Policy | None, mx_host: str, tls: TLSState) -> Decision:
    """§5: with a non-expired policy, check "1. At least one of the policy's "mx" patterns
    matches the selected MX host [...] 2. The recipient mail server supports STARTTLS and
    offers a PKIX-based TLS certificate, during TLS handshake, which is valid for that host".
    §5: ""enforce": In this mode, Sending MTAs MUST NOT deliver the message to hosts that fail
    MX matching or certificate validation or that do not support STARTTLS." ""testing": [...]
    messages SHOULD be delivered as though there were no MTA-STS validation failure."
    ""none": [...] senders should treat the Policy Domain as though it does not have any
    active policy."
    """
    if policy is None or policy.mode is Mode.NONE:
        why = "no MTA-STS policy" if policy is None else "MTA-STS policy mode is none"
        return Decision(deliver=True, enforced=False, failure=None, reason=why)
    enforce = policy.mode is Mode.ENFORCE
    failure: str | None = None
    reason = ""
    if not policy.matches(mx_host):
        # RFC 8460 §4.3.2.1 "validation-failure": a general failure (mx mismatch included).
        failure = "validation-failure"
        reason = f"MX {mx_host} matches no mx pattern of the policy ({', '.join(policy.mx)})"
    elif tls is TLSState.NO_STARTTLS:
        failure = "starttls-not-supported"
        reason = f"MX {mx_host} does not support STARTTLS"
    elif tls is TLSState.INVALID_CERTIFICATE:
        failure = "certificate-not-trusted"
        reason = f"MX {mx_host} has no PKIX certificate valid for its name"
    if failure is None:
        ok = "matches the policy" + ("" if tls is TLSState.NOT_CONNECTED else " with valid TLS")
        return Decision(deliver=True, enforced=enforce, failure=None, reason=f"MX {mx_host} {ok}")
    if enforce:
        return Decision(deliver=False, enforced=True, failure=failure,
                        reason=reason + " (mode enforce: refused)")
    return Decision(deliver=True, enforced=False, failure=failure,
                    reason=reason + " (mode testing: delivered, to be reported)")


def allowed_mx(policy: Policy | None, hosts: Iterable[str]) -> tuple[str, ...]:
    """The MX hosts an enforce policy lets us try (all of them otherwise), in order."""
    hosts = tuple(hosts)
    if policy is None or policy.mode is not Mode.ENFORCE:
        return hosts
    return tuple(h for h in hosts if policy.matches(h))
