"""MTA-STS, RFC 8461 (layer L2, pure): the ``_mta-sts`` TXT record, policy files, MX
matching, the per-MX delivery decision and the policy cache model.

* :func:`lookup_record` / :func:`select_record` / :func:`parse_record`: §3.1 discovery;
* :func:`parse_policy` -> :class:`Policy`: §3.2 (the HTTPS fetch lives in
  :mod:`mailmoat.net.mtasts`);
* :func:`mx_matches`, :meth:`Policy.matches`, :func:`allowed_mx`: §4.1;
* :func:`decide`: §5, refuse or deliver to one MX given what TLS established;
* :class:`PolicyCache`, :func:`plan`, :func:`after_fetch`: §5.1 / §10.2 caching.
"""

from mailmoat.auth.mtasts._cache import (
    CachedPolicy,
    FetchPlan,
    PolicyCache,
    after_fetch,
    plan,
)
from mailmoat.auth.mtasts._policy import (
    Decision,
    Mode,
    Policy,
    TLSState,
    allowed_mx,
    decide,
    mx_matches,
    parse_policy,
    valid_mx_pattern,
)
from mailmoat.auth.mtasts._record import (
    RecordLookup,
    RecordStatus,
    STSRecord,
    lookup_record,
    parse_record,
    select_record,
)

__all__ = [
    "CachedPolicy",
    "Decision",
    "FetchPlan",
    "Mode",
    "Policy",
    "PolicyCache",
    "RecordLookup",
    "RecordStatus",
    "STSRecord",
    "TLSState",
    "after_fetch",
    "allowed_mx",
    "decide",
    "lookup_record",
    "mx_matches",
    "parse_policy",
    "parse_record",
    "plan",
    "select_record",
    "valid_mx_pattern",
]
