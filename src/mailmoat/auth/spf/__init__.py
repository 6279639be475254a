"""SPF, RFC 7208 (layer L2): pure policy over an injected :class:`~mailmoat.resolver.Resolver`.

Use :func:`check_mailfrom` (MAIL FROM identity, falling back to HELO for a null path),
:func:`check_helo`, or the RFC's :func:`check_host` directly. Every outcome is an
:class:`SPFResult` value; DNS failures and broken records become ``temperror`` /
``permerror``, never exceptions. :func:`parse_record` exposes the record parser (it raises
:class:`~mailmoat.errors.ParseError`) for tools that lint records.
"""

from mailmoat.auth.spf._eval import check_helo, check_host, check_mailfrom, valid_domain
from mailmoat.auth.spf._record import (
    Mechanism,
    MechanismKind,
    Qualifier,
    SPFRecord,
    is_spf_record,
    parse_record,
)
from mailmoat.auth.spf._result import Identity, SPFOptions, SPFResult, SPFVerdict, TraceStep

__all__ = [
    "Identity",
    "Mechanism",
    "MechanismKind",
    "Qualifier",
    "SPFOptions",
    "SPFRecord",
    "SPFResult",
    "SPFVerdict",
    "TraceStep",
    "check_helo",
    "check_host",
    "check_mailfrom",
    "is_spf_record",
    "parse_record",
    "valid_domain",
]
