"""DKIM: verify and sign (RFC 6376; RFC 8463 Ed25519; RFC 8301 algorithm and key-size rules).

Verification is streaming (:class:`DKIMVerifier`: header section first, body chunks as they
arrive, keys looked up through the injected resolver at the end) or one-shot (:func:`verify`).
Outcomes are :class:`DKIMResult` values, one per signature (RFC 8601 result names). Signing
(:func:`sign`, :func:`sign_dual`) returns the ``DKIM-Signature`` field to prepend.
"""

from mailmoat.auth.dkim._fields import normalize_line_endings, split_message
from mailmoat.auth.dkim._keys import PrivateKey, key_record, load_private_key, txt_strings
from mailmoat.auth.dkim._sign import (
    DEFAULT_OVERSIGN,
    DEFAULT_SIGNED_HEADERS,
    KeySigner,
    sign,
    sign_dual,
    sign_fields,
)
from mailmoat.auth.dkim._tags import (
    ALGORITHMS,
    DKIMTagError,
    KeyRecord,
    Signature,
    parse_key_record,
    parse_signature,
)
from mailmoat.auth.dkim._types import (
    BodyLengthInfo,
    DKIMResult,
    DKIMResultCode,
    DKIMSigningError,
)
from mailmoat.auth.dkim._verify import DEFAULT_VERIFY_POLICY, DKIMVerifier, VerifyPolicy, verify

__all__ = [
    "ALGORITHMS",
    "DEFAULT_OVERSIGN",
    "DEFAULT_SIGNED_HEADERS",
    "DEFAULT_VERIFY_POLICY",
    "BodyLengthInfo",
    "DKIMResult",
    "DKIMResultCode",
    "DKIMSigningError",
    "DKIMTagError",
    "DKIMVerifier",
    "KeyRecord",
    "KeySigner",
    "PrivateKey",
    "Signature",
    "VerifyPolicy",
    "key_record",
    "load_private_key",
    "normalize_line_endings",
    "parse_key_record",
    "parse_signature",
    "sign",
    "sign_dual",
    "sign_fields",
    "split_message",
    "txt_strings",
    "verify",
]
