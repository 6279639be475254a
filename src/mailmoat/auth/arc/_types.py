"""ARC outcome values (RFC 8617 §4.4, §5.2; RFC 8601 result names for ``arc``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from mailmoat.errors import MailmoatError

__all__ = ["ARCSet", "ARCSetCheck", "ARCSigningError", "ARCStatus", "ARCValidation"]


class ARCStatus(enum.StrEnum):
    """RFC 8617 §4.4 Chain Validation Status (the ``cv=`` values and the ``arc`` A-R result)."""

    #: "There was no Chain present to validate."
    NONE = "none"
    #: "The Chain was validated successfully."
    PASS = "pass"  # noqa: S105 - a result name, not a password
    #: "The Chain failed to validate."
    FAIL = "fail"


@dataclass(frozen=True, slots=True, kw_only=True)
class ARCSetCheck:
    """What was checked of one ARC Set (RFC 8617 §4.1 "ARC Set": AAR, AMS, AS of one ``i=``).

    ``ams_valid``/``as_valid`` are None when that signature was not evaluated (the chain had
    already failed, or the older AMS were not asked for).
    """

    instance: int
    ams_domain: str | None = None
    ams_selector: str | None = None
    as_domain: str | None = None
    as_selector: str | None = None
    #: the ``cv=`` this set's ARC-Seal reported (lower-case), None when unreadable
    cv: str | None = None
    #: the authserv-id of this set's ARC-Authentication-Results
    authserv_id: str | None = None
    ams_valid: bool | None = None
    ams_reason: str = ""
    as_valid: bool | None = None
    as_reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ARCValidation:
    """The outcome of validating a message's Authenticated Received Chain (RFC 8617 §5.2).

    ``failed_instance`` names the ARC Set whose check failed (None for structural failures
    that belong to no single set, and for pass/none). ``oldest_pass`` is RFC 8617 §5.2's
    optional "oldest-pass": here the lowest instance from which every AMS up to the newest
    still validates, 0 when all of them do; None when not computed (chain not pass, or not
    asked for).
    ``highest_cv_fail`` is True when the newest ARC-Seal itself reported ``cv=fail``: §5.1
    step 1 says a Sealer then adds nothing. ``sets`` are newest first.
    """

    result: ARCStatus
    #: N, the highest instance seen (0 when there is no chain)
    instance_count: int = 0
    failed_instance: int | None = None
    reason: str = ""
    oldest_pass: int | None = None
    highest_cv_fail: bool = False
    sets: tuple[ARCSetCheck, ...] = ()

    @property
    def passed(self) -> bool:
        return self.result is ARCStatus.PASS

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``mailmoat verify --json``)."""
        return {
            "result": self.result.value,
            "instances": self.instance_count,
            "failed_instance": self.failed_instance,
            "reason": self.reason,
            "oldest_pass": self.oldest_pass,
            "sets": [
                {
                    "instance": s.instance, "cv": s.cv, "authserv_id": s.authserv_id,
                    "ams_domain": s.ams_domain, "ams_selector": s.ams_selector,
                    "ams_valid": s.ams_valid, "ams_reason": s.ams_reason,
                    "as_domain": s.as_domain, "as_selector": s.as_selector,
                    "as_valid": s.as_valid, "as_reason": s.as_reason,
                }
                for s in self.sets
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ARCSet:
    """A new ARC Set made by :func:`~mailmoat.auth.arc.seal`: three header fields (each with its
    CRLF), to be put on top of the message in the order of :attr:`fields`."""

    instance: int
    cv: ARCStatus
    seal: bytes
    message_signature: bytes
    authentication_results: bytes

    @property
    def fields(self) -> bytes:
        """ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results: prepend these."""
        return self.seal + self.message_signature + self.authentication_results


class ARCSigningError(MailmoatError, ValueError):
    """Sealing was asked for something that cannot be sealed (bad key, bad domain, forbidden
    header name in the AMS list). A caller's error, hence an exception; validation outcomes are
    values (:class:`ARCValidation`)."""
