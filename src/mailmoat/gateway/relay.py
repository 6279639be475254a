"""Who may send where: the no-open-relay rule (layer L4).

Any sender may send to our configured local domains; any other destination needs an
authenticated session or a client in a configured trusted network (RFC 5321 §3.6.2: "SMTP
server systems [...] MUST NOT be configured to relay [...] without authorisation"; RFC 2505
§2 "Anti-Spam Recommendations for SMTP MTAs").

SECURITY: the recipient comes from the peer (untrusted), already parsed by
:mod:`mailmoat.smtp` (source routes dropped, trailing dots and bad syntax refused). Here we
refuse what classic relay tricks exploit:

* sender-specified routing in the local part (``user%other@ours`` percent hack, ``host!user@ours``
  bang path, a quoted ``"user@other"@ours``): refused for untrusted clients, as Postfix's
  ``allow_untrusted_routing = no`` does;
* IP-literal destinations (``user@[192.0.2.1]``): never local unless the literal is configured;
* case and IDNA: domains are compared case-insensitively, internationalised names after UTS-46
  mapping to A-labels (the ``idna`` package, IDNA2008, never the stdlib IDNA2003 codec), so
  a Unicode lookalike (Cyrillic "а" for Latin "a") is a *different* domain, never ours.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

from mailmoat.smtp import Address

__all__ = ["ROUTING_CHARS", "RelayDecision", "RelayPolicy", "normalize_domain"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Characters that make a local part carry a route (RFC 1123 §5.2.16 percent hack, UUCP bang
#: paths, and an "@" inside a quoted local part).
ROUTING_CHARS = frozenset("%!@")


#: Lower-case ASCII letters only (str.lower() also maps non-ASCII, e.g. U+0130).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayDecision:
    """Whether a recipient is accepted, and why. ``local`` is true for our own domains."""

    allowed: bool
    local: bool
    reason: str


def normalize_domain(domain: str, *, mapping: bool = True) -> str | None:
    """A domain in comparable form: lower-case A-labels without a root dot; None if invalid.

    ``mapping=True`` (configured names) applies the UTS-46 mapping (case folding, full-width
    forms) before IDNA2008; ``mapping=False`` (names from the peer) only lower-cases ASCII
    and requires valid IDNA2008 labels as they are, so no compatibility mapping can turn a
    look-alike (``ｍｘ.example``, full-width) into one of our names.
    """
    if domain.startswith("["):
        return domain.lower()
    lowered = domain.translate(_ASCII_LOWER)
    if _PLAIN_LDH.fullmatch(lowered):
        # Plain LDH labels with no "??--" (so no A-label to check): IDNA2008 and UTS-46 both
        # leave them as they are, lower-cased (RFC 5891 §4.2.3.1, UTS #46 §4). Fast path.
        return lowered
    try:
        if mapping:
            return idna.encode(domain, uts46=True).decode("ascii").lower()
        return idna.encode(domain.translate(_ASCII_LOWER)).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None


#: RFC 1035 §2.3.1 LDH labels, none with hyphens in the 3rd and 4th positions (RFC 5891
#: §4.2.3.1 reserves those for A-labels, which must go through the IDNA check).
_PLAIN_LDH = re.compile(r"(?:(?![a-z0-9]{2}--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                        r"(?![a-z0-9]{2}--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class RelayPolicy:
    """The relay rule for one listener.

    ``local_domains`` may hold ``example.org`` (that domain only) or ``.example.org`` (its
    subdomains). ``trusted_networks`` are CIDR blocks allowed to relay without AUTH.
    ``local_literals`` are IP addresses whose address literal counts as local.
    """

    def __init__(
        self,
        *,
        local_domains: Iterable[str],
        trusted_networks: Iterable[str] = (),
        local_literals: Iterable[str] = (),
    ) -> None:
        exact: set[str] = set()
        parents: set[str] = set()
        for raw in local_domains:
            sub = raw.startswith(".")
            name = normalize_domain(raw.lstrip(".").rstrip("."))
            if name is None:
                raise ValueError(f"local domain {raw!r} is not a valid domain name")
            (parents if sub else exact).add(name)
        self._exact = frozenset(exact)
        self._parents = frozenset(parents)
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_networks)
        self._literals = frozenset(ipaddress.ip_address(a) for a in local_literals)

    def is_local_domain(self, domain: str) -> bool:
        """True for one of our domains (never for an address literal: see :meth:`check`).

        ``domain`` comes from the peer: compared without UTS-46 mapping (see
        :func:`normalize_domain`); the SMTP grammar has already lower-cased and NFC-checked it.
        """
        if domain.isascii() and not domain.startswith("["):
            # Fast path: an ASCII name equal to one of ours (all valid A-labels, lower case)
            # is ours; IDNA processing cannot change the answer for it.
            if domain.translate(_ASCII_LOWER) in self._exact:
                return True
            if not self._parents:
                return False
        name = normalize_domain(domain, mapping=False)
        if name is None or name.startswith("["):
            return False
        if name in self._exact:
            return True
        return any(name.endswith("." + parent) for parent in self._parents)

    def is_trusted(self, client_ip: IPAddress | None) -> bool:
        if client_ip is None:
            return False
        if isinstance(client_ip, ipaddress.IPv6Address) and client_ip.ipv4_mapped:
            client_ip = client_ip.ipv4_mapped
        return any(client_ip in net for net in self._trusted)

    def check(
        self, rcpt: Address, *, authenticated: bool, client_ip: IPAddress | None
    ) -> RelayDecision:
        """Decide on one recipient (RCPT TO)."""
        privileged = authenticated or self.is_trusted(client_ip)
        if rcpt.domain == "":
            # RFC 5321 §4.5.1: "<Postmaster>" (no domain) MUST be accepted; the grammar
            # allows no other address without a domain, and neither do we.
            if rcpt.local_part.lower() == "postmaster":
                return RelayDecision(allowed=True, local=True, reason="postmaster")
            return RelayDecision(allowed=False, local=False, reason="no domain")
        if rcpt.domain.startswith("["):
            local = rcpt.literal is not None and rcpt.literal in self._literals
        else:
            local = self.is_local_domain(rcpt.domain)
        if local and not privileged and ROUTING_CHARS.intersection(rcpt.local_part):
            return RelayDecision(
                allowed=False, local=True, reason="sender-specified routing refused"
            )
        if local:
            return RelayDecision(allowed=True, local=True, reason="local domain")
        if authenticated:
            return RelayDecision(allowed=True, local=False, reason="authenticated relay")
        if privileged:
            return RelayDecision(allowed=True, local=False, reason="trusted network")
        return RelayDecision(allowed=False, local=False, reason="relay access denied")
