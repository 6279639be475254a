"""DKIM keys: loading private keys, and the public key record to publish (RFC 6376 §3.6.1,
RFC 8463 §4).

SECURITY: private keys are trusted configuration; a file that is not a usable RSA/Ed25519 key
is refused with :class:`~mailmoat.auth.dkim.DKIMSigningError`, never half-used.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat.auth.dkim._types import DKIMSigningError

__all__ = ["PrivateKey", "key_record", "load_private_key", "txt_strings"]

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_B64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")
#: RFC 1035 §3.3: a <character-string> holds at most 255 octets.
_TXT_STRING_MAX = 255


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """An RSA or Ed25519 private key from PEM (PKCS#1 or PKCS#8) or DER, or an Ed25519 key
    as the base64 of its 32-octet seed (the form dkimpy and RFC 8463 examples use)."""
    stripped = data.strip()
    key: object
    try:
        if stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(stripped, password)
        elif len(stripped) <= 64 and _B64_TEXT.fullmatch(stripped):
            seed = base64.b64decode(stripped, validate=True)
            if len(seed) != 32:
                raise DKIMSigningError("raw Ed25519 key must be 32 octets (base64)")
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        else:
            key = serialization.load_der_private_key(stripped, password)
    except (ValueError, TypeError, binascii.Error) as exc:
        if isinstance(exc, DKIMSigningError):
            raise
        raise DKIMSigningError(f"not a usable private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DKIMSigningError("only RSA and Ed25519 keys can sign DKIM")
    return key


def key_record(key: PrivateKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    """The TXT record value to publish at ``<selector>._domainkey.<domain>``."""
    public: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        public = key.public_key()
    else:
        public = key
    if isinstance(public, ed25519.Ed25519PublicKey):
        # RFC 8463 §4: p= is the base64 of the raw 32-octet public key
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def txt_strings(record: str) -> list[str]:
    """Split a record into <= 255-octet character-strings (RFC 6376 §3.6.2.2: the strings of
    one TXT record are concatenated by the verifier)."""
    data = record.encode("ascii")
    return [
        data[i : i + _TXT_STRING_MAX].decode("ascii")
        for i in range(0, len(data), _TXT_STRING_MAX)
    ] or [""]
