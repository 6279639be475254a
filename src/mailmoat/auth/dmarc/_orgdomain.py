"""Organizational Domains: the Public Suffix List (RFC 7489 §3.2) and the DNS Tree Walk's
pure parts (RFC 9989 §4.10): which names to ask, and which answer names the Organizational
Domain.

RFC 7489 §3.2 (PSL mode)::

    3.  Search the public suffix list for the name that matches the largest number of labels
        found in the subject DNS domain.  Let that number be "x".
    4.  Construct a new DNS domain name using the name that matched from the public suffix
        list and prefixing to it the "x+1"th label from the subject domain.  This new name is
        the Organizational Domain.

A name that is itself a public suffix has no "x+1"th label; we take the name itself as its
Organizational Domain (so alignment with it is exact-match only), as OpenDMARC does.

The list is the one the ``publicsuffixlist`` package bundles (ARCHITECTURE.md: it never touches
the network); it is loaded once, on first use.

SECURITY: names are untrusted (From domains, DKIM ``d=``, MAIL FROM domains). They are
lower-cased and split on dots only; the Tree Walk plan is at most
``limits.DMARC_TREE_WALK_MAX_QUERIES`` names whatever the label count (RFC 9989 §4.10).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from mailmoat import limits
from mailmoat.auth.dmarc._record import DMARCRecord, PSDFlag

__all__ = [
    "org_domain_from_walk",
    "psl_organizational_domain",
    "psl_registrable_domain",
    "tree_walk_names",
]

_PSL: Any = None
_PSL_LOCK = threading.Lock()


def _psl() -> Any:
    global _PSL  # noqa: PLW0603 - a lazily built, immutable singleton
    if _PSL is None:
        with _PSL_LOCK:
            if _PSL is None:
                from publicsuffixlist import PublicSuffixList

                _PSL = PublicSuffixList()
    return _PSL


def psl_registrable_domain(name: str) -> str | None:
    """The public suffix plus one label ("x+1", RFC 7489 §3.2 step 4), lower-case; None
    when ``name`` is itself a public suffix or not a usable name (empty label, leading dot)."""
    if not name or name.startswith(".") or ".." in name:
        return None
    result = _psl().privatesuffix(name.rstrip(".").lower())
    return str(result) if result else None


def psl_organizational_domain(name: str) -> str:
    """RFC 7489 §3.2 Organizational Domain; a public suffix is its own (see module doc)."""
    name = name.rstrip(".").lower()
    return psl_registrable_domain(name) or name


def tree_walk_names(start: str) -> tuple[str, ...]:
    """The domains whose ``_dmarc`` names a full DNS Tree Walk asks, in order (RFC 9989 §4.10).

    Step 1 asks the start; step 4: "If x < 8, remove the left-most (highest-numbered) label
    from the subject domain.  If x >= 8, remove the left-most (highest-numbered) labels from
    the subject domain until 7 labels remain."; step 7: then one label at a time, down to a
    single label. So never more than 8 names.
    """
    labels = start.rstrip(".").lower().split(".")
    if not start or any(not label for label in labels):
        return ()
    names = [".".join(labels)]
    rest = labels[1:] if len(labels) < 8 else labels[len(labels) - 7 :]
    while rest:
        names.append(".".join(rest))
        rest = rest[1:]
    assert len(names) <= limits.DMARC_TREE_WALK_MAX_QUERIES
    return tuple(names)


def org_domain_from_walk(start: str, found: Sequence[tuple[str, DMARCRecord]]) -> str:
    """RFC 9989 §4.10.2: the Organizational Domain, given the valid records a Tree Walk from
    ``start`` found, ``(domain, record)`` from the longest name to the shortest.

    1. "If a valid DMARC Policy Record contains the "psd" tag set to "n" ("psd=n"), this is
       the Organizational Domain".
    2. "If a valid DMARC Policy Record, other than the one for the domain where the tree walk
       started, contains the "psd" tag set to "y" ("psd=y"), the Organizational Domain is the
       domain one label below this one in the DNS hierarchy".
    3. "Otherwise, select the DMARC Policy Record found at the name with the fewest number of
       labels."
    "If this process does not determine the Organizational Domain, then the initial target
    domain is the Organizational Domain."
    """
    start = start.rstrip(".").lower()
    start_labels = start.split(".")
    for domain, record in found:
        if record.psd is PSDFlag.NO:
            return domain
        if record.psd is PSDFlag.YES and domain != start:
            depth = domain.count(".") + 1
            return ".".join(start_labels[len(start_labels) - depth - 1 :])
    if found:
        return min(found, key=lambda item: item[0].count("."))[0]
    return start
