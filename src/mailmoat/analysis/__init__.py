"""Header and hop analysis (layer L2): "was this message encrypted, hop by hop?".

:func:`analyse_headers` reads a parsed header section (:func:`mailmoat.message.parse_headers`)
and returns a :class:`HeaderReport`; :func:`parse_received` reads one Received stamp;
:func:`report_to_dict` gives the ``mailmoat headers --json`` shape.
"""

from mailmoat.analysis._export import report_to_dict
from mailmoat.analysis._signatures import ArcInstance, ArcSummary, DkimSummary
from mailmoat.analysis.authres_summary import (
    AuthResult,
    AuthResults,
    parse_authentication_results,
)
from mailmoat.analysis.hops import (
    AuthRecord,
    HeaderReport,
    Hop,
    Verdict,
    VerdictStatus,
    analyse_headers,
    registered_domain,
)
from mailmoat.analysis.received import (
    Stamp,
    TLSStatus,
    Transport,
    normalise_tls_version,
    parse_received,
)

__all__ = [
    "ArcInstance",
    "ArcSummary",
    "AuthRecord",
    "AuthResult",
    "AuthResults",
    "DkimSummary",
    "HeaderReport",
    "Hop",
    "Stamp",
    "TLSStatus",
    "Transport",
    "Verdict",
    "VerdictStatus",
    "analyse_headers",
    "normalise_tls_version",
    "parse_authentication_results",
    "parse_received",
    "registered_domain",
    "report_to_dict",
]
