"""Authentication-Results (RFC 8601): generate our field, parse others', spot forgeries.

* :func:`format_authentication_results` writes a field from :class:`AuthResResult` values,
  built from our own outcomes with :func:`spf_resinfo`, :func:`dkim_resinfo`,
  :func:`dmarc_resinfo`, :func:`arc_resinfo` and :func:`auth_resinfo`;
* :func:`parse` / :func:`parse_field` read one field (bounded, comment-aware; unknown methods
  and ptypes kept; :class:`~mailmoat.errors.ParseError` on malformed input);
* :func:`claims_authserv_id` tells whether an inbound field claims our authserv-id, so the
  gateway can remove it (RFC 8601 §5).
"""

from mailmoat.auth.authres._generate import (
    FIELD_NAME,
    arc_resinfo,
    auth_resinfo,
    dkim_resinfo,
    dmarc_resinfo,
    format_authentication_results,
    format_resinfo,
    quote_pvalue,
    quote_value,
    spf_resinfo,
)
from mailmoat.auth.authres._model import (
    METHOD_RESULTS,
    REGISTERED_PTYPES,
    AuthenticationResults,
    AuthResProperty,
    AuthResResult,
)
from mailmoat.auth.authres._parse import authserv_id_of, claims_authserv_id, parse, parse_field

__all__ = [
    "FIELD_NAME",
    "METHOD_RESULTS",
    "REGISTERED_PTYPES",
    "AuthResProperty",
    "AuthResResult",
    "AuthenticationResults",
    "arc_resinfo",
    "auth_resinfo",
    "authserv_id_of",
    "claims_authserv_id",
    "dkim_resinfo",
    "dmarc_resinfo",
    "format_authentication_results",
    "format_resinfo",
    "parse",
    "parse_field",
    "quote_pvalue",
    "quote_value",
    "spf_resinfo",
]
