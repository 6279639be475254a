"""Sender authentication (layer L2): pure policy over an injected resolver.

Subpackages: :mod:`mailmoat.auth.spf` (RFC 7208), :mod:`mailmoat.auth.dkim` (RFC 6376),
:mod:`mailmoat.auth.dmarc` (RFC 7489 / RFC 9989), :mod:`mailmoat.auth.authres` (RFC 8601),
:mod:`mailmoat.auth.arc` (RFC 8617); :mod:`mailmoat.auth.verify` runs them all for one
received message.
Transport policy: :mod:`mailmoat.auth.mtasts` (RFC 8461), :mod:`mailmoat.auth.dane` (TLSA
matching, RFC 6698 / RFC 7672), :mod:`mailmoat.auth.tlsrpt` (RFC 8460 §3 records),
:mod:`mailmoat.auth.bimi` (BIMI records).
Outcomes are values (pass / fail / softfail / neutral / none / temperror / permerror), never
exceptions (ARCHITECTURE.md rule 5). The SPF entry points are re-exported here.
"""

from mailmoat.auth.authres import (
    AuthenticationResults,
    AuthResResult,
    claims_authserv_id,
    format_authentication_results,
)
from mailmoat.auth.dkim import DKIMResult, DKIMResultCode, DKIMVerifier
from mailmoat.auth.dmarc import DMARCResult, DMARCVerdict, check_dmarc, check_message
from mailmoat.auth.spf import (
    Identity,
    SPFOptions,
    SPFResult,
    SPFVerdict,
    check_helo,
    check_host,
    check_mailfrom,
)

__all__ = [
    "AuthResResult",
    "AuthenticationResults",
    "DKIMResult",
    "DKIMResultCode",
    "DKIMVerifier",
    "DMARCResult",
    "DMARCVerdict",
    "Identity",
    "SPFOptions",
    "SPFResult",
    "SPFVerdict",
    "check_dmarc",
    "check_helo",
    "check_host",
    "check_mailfrom",
    "check_message",
    "claims_authserv_id",
    "format_authentication_results",
]
