"""Authentication-Results values and the IANA registries we know (RFC 8601 §2, §6).

Registered methods and their results are from the IANA "Email Authentication Methods" and
"Email Authentication Result Names" registries (RFC 8601 §6, RFC 7489 §11.2 for ``dmarc``,
RFC 8617 §10.1 for ``arc``, RFC 8904 for ``dnswl``, RFC 7281 for ``smime``); ptypes from
"Email Authentication Property Types" (RFC 8601 §2.3: ``smtp``, ``header``, ``body``,
``policy``; RFC 8904 ``dns``; the DMARCbis A-R update ``polrec``). Unknown methods, results and
ptypes are kept as read: RFC 8601 §2.7 "... MUST ignore ... methods it does not recognise"
is a rule for *acting* on them, not for dropping them from the parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "METHOD_RESULTS",
    "REGISTERED_PTYPES",
    "AuthResProperty",
    "AuthResResult",
    "AuthenticationResults",
]

#: RFC 8601 §2.7 and later registrations: method -> the result keywords defined for it.
METHOD_RESULTS: Final[dict[str, frozenset[str]]] = {
    # §2.7.1
    "dkim": frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}),
    "domainkeys": frozenset({"none", "pass", "fail", "policy", "neutral", "temperror",
                             "permerror"}),
    # §2.7.2 (RFC 7208 §8 names)
    "spf": frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}),
    "sender-id": frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror",
                            "permerror", "policy", "hardfail"}),
    # §2.7.3
    "iprev": frozenset({"pass", "fail", "temperror", "permerror"}),
    # §2.7.4
    "auth": frozenset({"none", "pass", "fail", "temperror", "permerror"}),
    # RFC 7489 §11.2
    "dmarc": frozenset({"none", "pass", "fail", "temperror", "permerror"}),
    # RFC 8617 §10.1 (cv values of the chain, as results)
    "arc": frozenset({"none", "pass", "fail"}),
    # RFC 6212 vbr, RFC 7293 rrvs, RFC 7281 smime, RFC 8904 dnswl, RFC 6541 dkim-atps
    "vbr": frozenset({"none", "pass", "fail", "temperror", "permerror"}),
    "rrvs": frozenset({"none", "pass", "fail", "unknown", "temperror", "permerror"}),
    "smime": frozenset({"none", "pass", "fail", "policy", "neutral", "temperror",
                        "permerror"}),
    "dnswl": frozenset({"pass", "none", "temperror", "permerror"}),
    "dkim-atps": frozenset({"none", "pass", "fail", "temperror", "permerror"}),
    "dkim-adsp": frozenset({"none", "pass", "unknown", "fail", "discard", "nxdomain",
                            "temperror", "permerror"}),
    # BIMI (draft-brand-indicators-for-message-identification)
    "bimi": frozenset({"pass", "none", "fail", "temperror", "declined", "skipped"}),
}

#: RFC 8601 §2.3 ptypes, RFC 8904 "dns", DMARCbis "polrec".
REGISTERED_PTYPES: Final = frozenset({"smtp", "header", "body", "policy", "dns", "polrec"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResProperty:
    """``ptype.property=pvalue`` (RFC 8601 §2.2 propspec). ``ptype`` and ``name`` are
    lower-case (ABNF keywords are case-insensitive); ``value`` is the pvalue with quotes
    removed and quoted-pairs resolved."""

    ptype: str
    name: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.ptype}.{self.name}"

    @property
    def registered(self) -> bool:
        return self.ptype in REGISTERED_PTYPES


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResResult:
    """One resinfo: ``method[/version]=result [reason=...] [propspec ...]`` and its comments.

    ``method`` and ``result`` are lower-case. ``comment`` is written after the result when
    generating; ``comments`` are every comment read inside this resinfo when parsing.
    """

    method: str
    result: str
    version: int | None = None
    reason: str | None = None
    properties: tuple[AuthResProperty, ...] = ()
    comment: str | None = None
    comments: tuple[str, ...] = ()

    @property
    def registered(self) -> bool:
        """Whether the method is registered and the result is one defined for it."""
        return self.result in METHOD_RESULTS.get(self.method, frozenset())

    def prop(self, key: str) -> str | None:
        """The first property called ``key`` (``"header.d"``), case-insensitive."""
        lower = key.lower()
        return next((p.value for p in self.properties if p.key == lower), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationResults:
    """One Authentication-Results field. ``none`` is the ``no-result`` form
    (``example.org 1; none``: service provided, nothing was authenticated)."""

    authserv_id: str
    version: int | None = None
    results: tuple[AuthResResult, ...] = ()
    none: bool = False
    comments: tuple[str, ...] = ()

    def first(self, method: str) -> AuthResResult | None:
        method = method.lower()
        return next((r for r in self.results if r.method == method), None)

    def all(self, method: str) -> tuple[AuthResResult, ...]:
        method = method.lower()
        return tuple(r for r in self.results if r.method == method)
