"""DMARC (RFC 7489, and DMARCbis, RFC 9989): policy records, discovery, alignment, evaluation.

* :func:`parse_record` reads a policy record (``v=DMARC1; p=...``);
* :func:`discover_policy` finds the record and Organizational Domain through the injected
  resolver, in one of two :class:`DiscoveryMode` s: RFC 7489 with the Public Suffix List, or
  the RFC 9989 DNS Tree Walk (the default);
* :func:`evaluate` is the pure function of the SPF and DKIM outputs plus that lookup;
* :func:`check_dmarc` (one Author Domain) and :func:`check_message` (a header section; the
  From field is read with :func:`author_domain`) do both;
* :func:`explain` says in sentences what happened.

Every outcome is a :class:`DMARCResult` value (pass / fail / none / temperror / permerror).
"""

from mailmoat.auth.dmarc._author import (
    AuthorDomain,
    AuthorProblem,
    author_domain,
    author_domain_from_value,
)
from mailmoat.auth.dmarc._discover import (
    check_author,
    check_dmarc,
    check_message,
    discover_policy,
)
from mailmoat.auth.dmarc._evaluate import RandomSource, evaluate, explain
from mailmoat.auth.dmarc._orgdomain import (
    org_domain_from_walk,
    psl_organizational_domain,
    psl_registrable_domain,
    tree_walk_names,
)
from mailmoat.auth.dmarc._record import (
    Alignment,
    DMARCRecord,
    Policy,
    PSDFlag,
    ReportURI,
    is_dmarc_record,
    parse_record,
)
from mailmoat.auth.dmarc._result import (
    AuthorExistence,
    DiscoveryMode,
    Disposition,
    DMARCResult,
    DMARCVerdict,
    IdentifierCheck,
    LookupStatus,
    PolicyLookup,
)

__all__ = [
    "Alignment",
    "AuthorDomain",
    "AuthorExistence",
    "AuthorProblem",
    "DMARCRecord",
    "DMARCResult",
    "DMARCVerdict",
    "DiscoveryMode",
    "Disposition",
    "IdentifierCheck",
    "LookupStatus",
    "PSDFlag",
    "Policy",
    "PolicyLookup",
    "RandomSource",
    "ReportURI",
    "author_domain",
    "author_domain_from_value",
    "check_author",
    "check_dmarc",
    "check_message",
    "discover_policy",
    "evaluate",
    "explain",
    "is_dmarc_record",
    "org_domain_from_walk",
    "parse_record",
    "psl_organizational_domain",
    "psl_registrable_domain",
    "tree_walk_names",
]
