"""Domain-name normalisation shared by every resolver (layer L1, pure).

SECURITY: names come from untrusted input (MAIL FROM domains, SPF macro expansions, DKIM
``d=``/``s=`` tags). This module trusts nothing: it bounds the name before encoding it
(``limits.DNS_NAME_MAX``), checks every label (``limits.DNS_LABEL_MAX``) and refuses empty
labels, so no resolver ever puts an unencodable question on the wire. A refused name raises
:class:`~mailmoat.errors.DNSPermanentError` (it can never be asked, so retrying cannot help).

Names are octet strings (RFC 2181 §11: "any binary string whatever can be used as the label of
any resource record"): a ``str`` is encoded as UTF-8 and no IDNA conversion is made, so callers
pass A-labels. Backslash is an ordinary octet here, never an escape.
"""

from __future__ import annotations

import ipaddress

from mailmoat import limits
from mailmoat.errors import DNSPermanentError

__all__ = ["is_ip_address", "name_labels", "normalize_name"]

#: The longest name without its root dot: the wire form adds a length octet before the first
#: label and the root octet at the end (RFC 1035 §2.3.4, §3.1), so len + 2 <= DNS_NAME_MAX.
_FAST_MAX = limits.DNS_NAME_MAX - 2


def _refuse(name: str, why: str) -> DNSPermanentError:
    shown = name if len(name) <= 80 else name[:77] + "..."
    return DNSPermanentError(f"{shown!r}: not a valid domain name ({why})")


def normalize_name(name: str) -> str:
    """Return ``name`` lower-cased (ASCII letters only, RFC 4343 §3) without its root dot.

    The root itself is ``""``. Raises :class:`DNSPermanentError` when the name cannot be asked:
    RFC 1035 §2.3.4 "labels 63 octets or less", "names 255 octets or less" (wire form, i.e. the
    length octets and the root label included), and RFC 1035 §3.1: only the root label is
    empty.
    """
    # Fast path, the common case (a name already normalised, or plain ASCII): for an ASCII
    # name the checks below reduce to string tests, and ``str.lower`` lower-cases exactly the
    # ASCII letters, as ``bytes.lower`` does. At most 253 characters once the root dot is
    # gone (wire length = len + 2 <= 255), no empty label (no leading, trailing or doubled
    # dot), no label over 63 characters. Anything else takes the full path, which gives the
    # same answer or the precise refusal.
    if name.isascii():
        raw_name = name[:-1] if name[-1:] == "." else name
        size = len(raw_name)
        if (
            0 < size <= _FAST_MAX
            and raw_name[0] != "."
            and raw_name[-1] != "."
            and ".." not in raw_name
            and (size <= limits.DNS_LABEL_MAX
                 or max(map(len, raw_name.split("."))) <= limits.DNS_LABEL_MAX)
        ):
            return raw_name.lower()
    # Bound before any copying work: every character is at least one octet.
    if len(name) > limits.DNS_NAME_MAX:
        raise _refuse(name, f"longer than {limits.DNS_NAME_MAX} octets")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(name, "not encodable") from None
    if raw.endswith(b"."):
        raw = raw[:-1]
    if not raw:
        return ""
    for label in raw.split(b"."):
        if not label:
            raise _refuse(name, "empty label")
        if len(label) > limits.DNS_LABEL_MAX:
            raise _refuse(name, f"label longer than {limits.DNS_LABEL_MAX} octets")
    # Wire length: one length octet per label plus the root octet = len(raw) + 2.
    if len(raw) + 2 > limits.DNS_NAME_MAX:
        raise _refuse(name, f"longer than {limits.DNS_NAME_MAX} octets on the wire")
    return raw.lower().decode("utf-8")


def name_labels(name: str) -> tuple[bytes, ...]:
    """The labels of a valid name, root label (``b""``) included, lower-cased."""
    normal = normalize_name(name)
    if not normal:
        return (b"",)
    return (*normal.encode("utf-8").split(b"."), b"")


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (not a name: no DNS question, no SNI)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
