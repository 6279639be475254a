"""ARC, the Authenticated Received Chain (RFC 8617): validate a chain, seal a message.

* :func:`validate` (or the streaming :class:`ARCValidator`) runs RFC 8617 §5.2 over a message
  and returns an :class:`ARCValidation`: ``none`` / ``pass`` / ``fail`` with the failing
  instance and the reason, the per-set checks and the ``oldest-pass`` instance;
* :func:`seal` adds an ARC Set (AAR, AMS, AS; relaxed/relaxed) as RFC 8617 §5.1 says, with the
  ``cv=`` of the validation it is given; :func:`authres_results` collects the results this
  ADMD already wrote in Authentication-Results fields, for the AAR.

The AMS is a DKIM signature and the key records are DKIM's: the parsing, canonicalisation and
cryptography are those of :mod:`mailmoat.auth.dkim`. Outcomes are values, never exceptions.
"""

from mailmoat.auth.arc._seal import authres_results, seal
from mailmoat.auth.arc._types import (
    ARCSet,
    ARCSetCheck,
    ARCSigningError,
    ARCStatus,
    ARCValidation,
)
from mailmoat.auth.arc._validate import DEFAULT_ARC_POLICY, ARCPolicy, ARCValidator, validate

__all__ = [
    "DEFAULT_ARC_POLICY",
    "ARCPolicy",
    "ARCSet",
    "ARCSetCheck",
    "ARCSigningError",
    "ARCStatus",
    "ARCValidation",
    "ARCValidator",
    "authres_results",
    "seal",
    "validate",
]
