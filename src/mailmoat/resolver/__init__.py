"""The DNS seam (layer L1): the :class:`Resolver` protocol, typed answers and failures.

The real resolver lives in :mod:`mailmoat.net.dns`; a fake one loaded from zone data (for tests
and offline evaluation) in :mod:`mailmoat.resolver.fake` (:class:`FakeResolver`, also exported
here). :class:`BudgetedResolver` caps the questions one evaluation may ask;
:func:`normalize_name` is the one name check every resolver applies.
"""

from mailmoat.resolver._budget import BudgetedResolver, QueryBudgetExceeded
from mailmoat.resolver._names import is_ip_address, name_labels, normalize_name
from mailmoat.resolver._types import (
    MX,
    TLSA,
    TXT,
    Answer,
    DNSPermanentError,
    DNSTemporaryError,
    NoData,
    NXDomain,
    Record,
    Resolver,
    RRType,
)
from mailmoat.resolver.fake import FakeResolver

__all__ = [
    "MX",
    "TLSA",
    "TXT",
    "Answer",
    "BudgetedResolver",
    "DNSPermanentError",
    "DNSTemporaryError",
    "FakeResolver",
    "NXDomain",
    "NoData",
    "QueryBudgetExceeded",
    "RRType",
    "Record",
    "Resolver",
    "is_ip_address",
    "name_labels",
    "normalize_name",
]
