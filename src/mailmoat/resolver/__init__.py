"""The DNS seam (layer L1): the :class:`Resolver` protocol, typed answers and failures.

The real resolver lives in :mod:`mailmoat.net.dns`; a fake one loaded from zone data (for tests
and offline evaluation) in :mod:`mailmoat.resolver.fake`.
"""

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

__all__ = [
    "MX",
    "TLSA",
    "TXT",
    "Answer",
    "DNSPermanentError",
    "DNSTemporaryError",
    "NXDomain",
    "NoData",
    "RRType",
    "Record",
    "Resolver",
]
