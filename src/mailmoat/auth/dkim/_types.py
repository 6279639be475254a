"""DKIM outcome values (RFC 6376 §6.1, RFC 8601 §2.7.1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailmoat.errors import MailmoatError

__all__ = ["BodyLengthInfo", "DKIMResult", "DKIMResultCode", "DKIMSigningError"]


class DKIMResultCode(enum.StrEnum):
    """RFC 8601 §2.7.1 result values for the ``dkim`` method."""

    #: "The message was not signed."
    NONE = "none"
    #: "The message was signed, the signature or signatures were acceptable to the ADMD, and
    #: the signature(s) passed verification tests."
    PASS = "pass"  # noqa: S105 - a result name, not a password
    #: "...the signature(s) ... failed the verification test(s)."
    FAIL = "fail"
    #: "...some aspect of the signature or signatures was not acceptable to the ADMD."
    POLICY = "policy"
    #: "...the signature or signatures contained syntax errors or were not otherwise able to
    #: be processed."
    NEUTRAL = "neutral"
    #: "...could not be verified due to some error that is likely transient in nature".
    TEMPERROR = "temperror"
    #: "...could not be verified due to some error that is unrecoverable".
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyLengthInfo:
    """What ``l=`` left unsigned (RFC 6376 §8.2: content after the signed length can be
    anything an attacker appended). ``unsigned`` > 0 means unsigned content follows."""

    signed: int
    total: int

    @property
    def unsigned(self) -> int:
        return max(0, self.total - self.signed)


@dataclass(frozen=True, slots=True, kw_only=True)
class DKIMResult:
    """The outcome of one DKIM-Signature (or ``none`` for an unsigned message).

    ``header_d``/``header_i``/``header_b`` are the RFC 8601 / RFC 6008 properties for the
    Authentication-Results field (``header_b``: the first 8 characters of ``b=``). ``flags``
    name facts worth reporting beside the result: ``weak_key`` (RSA < 2048 bits, RFC 8301
    §3.2), ``sha1`` (rsa-sha1 accepted by configuration, RFC 8301 §3.1), ``testing`` (key
    ``t=y``), ``unsigned_content`` (``l=`` shorter than the body).
    """

    result: DKIMResultCode
    domain: str | None = None
    selector: str | None = None
    algorithm: str | None = None
    reason: str = ""
    key_bits: int | None = None
    body_length_info: BodyLengthInfo | None = None
    header_d: str | None = None
    header_i: str | None = None
    header_b: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.result is DKIMResultCode.PASS


class DKIMSigningError(MailmoatError, ValueError):
    """Signing was asked for something that cannot be signed (no From field, bad key, ...).

    This is *our caller's* error (a configuration or programming problem), hence an exception;
    verification outcomes are values (:class:`DKIMResult`)."""
