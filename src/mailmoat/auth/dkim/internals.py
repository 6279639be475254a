"""DKIM building blocks shared with other signature schemes of the same family (ARC).

ARC (RFC 8617) reuses DKIM's tag-list syntax, header field selection, header canonicalisation
and key records (RFC 8617 §4.1.2, §4.1.3: "...the same as the DKIM-Signature header field").
These are the pieces :mod:`mailmoat.auth.arc` builds on. They are an *internal* API: stable
within mailmoat (changing one means updating ARC in the same change), not promised to users
(the public DKIM API is :mod:`mailmoat.auth.dkim`).

* :class:`RawField`, :func:`split_fields`, :func:`split_message`: the header section as raw
  fields (bounded, byte-exact).
* :func:`index_fields`, :func:`hash_input`, :func:`header_hash_input`: the header hash input
  (RFC 6376 §3.7, §5.4.2 "last unused instance").
* :func:`parse_tag_list` (returns :class:`Tag` values), :func:`check_domain`: RFC 6376 §3.2
  tag lists and d=/s= domains.
* :class:`KeyRecord`, :func:`parse_key_record`, :class:`DKIMTagError`: key records (§3.6.1).
"""

from mailmoat.auth.dkim._fields import RawField, split_fields, split_message
from mailmoat.auth.dkim._tags import (
    DKIMTagError,
    KeyRecord,
    Tag,
    check_domain,
    parse_key_record,
    parse_tag_list,
)
from mailmoat.auth.dkim._verify import hash_input, header_hash_input, index_fields

__all__ = [
    "DKIMTagError",
    "KeyRecord",
    "RawField",
    "Tag",
    "check_domain",
    "hash_input",
    "header_hash_input",
    "index_fields",
    "parse_key_record",
    "parse_tag_list",
    "split_fields",
    "split_message",
]
