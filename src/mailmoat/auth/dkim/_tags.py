"""DKIM tag lists: the DKIM-Signature field (RFC 6376 §3.5) and key records (§3.6.1).

SECURITY: both inputs are untrusted (a message header; a DNS TXT answer). Parsing is a single
linear pass over the bytes, bounded by ``limits.DKIM_SIGNATURE_FIELD_MAX`` and
``limits.DKIM_KEY_RECORD_MAX``; ``h=`` is bounded by ``limits.DKIM_MAX_SIGNED_HEADERS``;
numbers are bounded in digits before conversion; RSA keys above ``limits.DKIM_RSA_MAX_BITS``
are refused before any arithmetic. Anything malformed is refused with a
:class:`DKIMTagError` whose message says what was wrong (it becomes a ``permerror`` reason);
nothing here raises anything else on bad input.
"""

from __future__ import annotations

import binascii
import functools
import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mailmoat.errors import ParseError
from mailmoat.limits import (
    DKIM_KEY_RECORD_MAX,
    DKIM_MAX_SIGNED_HEADERS,
    DKIM_RSA_MAX_BITS,
    DKIM_SIGNATURE_FIELD_MAX,
)
from mailmoat.message.dkim_canon import CanonKind

__all__ = [
    "ALGORITHMS",
    "DKIMTagError",
    "KeyRecord",
    "PublicKey",
    "Signature",
    "Tag",
    "parse_key_record",
    "parse_signature",
    "parse_tag_list",
]

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

#: a= value -> (key type, hash name). RFC 6376 §3.3 (rsa-sha1, rsa-sha256), RFC 8463 §3
#: (ed25519-sha256).
ALGORITHMS: Final[dict[str, tuple[str, str]]] = {
    "rsa-sha256": ("rsa", "sha256"),
    "rsa-sha1": ("rsa", "sha1"),
    "ed25519-sha256": ("ed25519", "sha256"),
}


class DKIMTagError(ParseError):
    """A DKIM tag list (signature or key record) is malformed or unacceptable."""


# RFC 6376 §3.2:
#   tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
#   tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
#   tag-name  =  ALPHA *ALNUMPUNC
#   tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
#   tval      =  1*VALCHAR
#   VALCHAR   =  %x21-3A / %x3C-7E     ; EXCLAMATION to TILDE except SEMICOLON
#   ALNUMPUNC =  ALPHA / DIGIT / "_"
# VALCHARs, ";" and WSP: what a tag list may contain once its folding CRLFs are removed
_TAG_CHARS: Final = re.compile(rb"[\x21-\x7e \t]*")
# RFC 5322 §3.6.8 field-name = 1*ftext; ftext = %d33-57 / %d59-126
_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
# §3.5 sig-h-tag value: hdr-name *( [FWS] ":" [FWS] hdr-name ), FWS also at either end (the
# tag-spec's own [FWS]); the name class excludes ":" and FWS, so matching is linear
_H_VALUE: Final = re.compile(
    rb"[ \t\r\n]*[\x21-\x39\x3b-\x7e]+(?:[ \t\r\n]*:[ \t\r\n]*[\x21-\x39\x3b-\x7e]+)*[ \t\r\n]*"
)
_FWS_CHARS: Final = b" \t\r\n"


class Tag(NamedTuple):
    """One tag: its value (without surrounding FWS) and where it sits in the parsed bytes."""

    value: bytes
    #: offsets of the value in the parsed bytes: [start, end)
    start: int
    end: int
    #: offset just after the "=" (the value's leading FWS starts here)
    after_eq: int


def parse_tag_list(data: bytes) -> dict[str, Tag]:
    """Parse an RFC 6376 §3.2 tag list into name -> tag (value bytes with their position).

    §3.2: "Tags with duplicate names MUST NOT occur within a single tag-list; if a tag name
    does occur more than once, the entire tag-list is invalid."
    """
    tags: dict[str, Tag] = {}
    # Every octet must be a VALCHAR, ";", WSP or part of a CRLF that folds (FWS). One check
    # over the whole list (C speed); per-tag checks only to name the culprit.
    flat = data
    if b"\r" in data or b"\n" in data:
        flat = data.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    if not _TAG_CHARS.fullmatch(flat):
        for piece in flat.split(b";"):
            if not _TAG_CHARS.fullmatch(piece):
                name = piece.partition(b"=")[0].strip(_FWS_CHARS)
                raise DKIMTagError(
                    f"bad character in the value of tag {_show(name)} (not VALCHAR or FWS)"
                )
    pieces = data.split(b";")
    if not pieces[-1].strip(_FWS_CHARS):
        pieces.pop()  # tag-list = tag-spec *( ";" tag-spec ) [ ";" ]
    offset = 0
    new = tuple.__new__  # (the tuple built directly: one per tag of every signature)
    for piece in pieces:
        raw_name, eq, rest = piece.partition(b"=")
        if not eq:
            if piece.strip(_FWS_CHARS):
                raise DKIMTagError(f"tag without '=': {_show(piece)}")
            raise DKIMTagError("empty tag-spec in tag list")
        name = raw_name.strip(_FWS_CHARS)
        # tag-name = ALPHA *ALNUMPUNC (bytes.isalpha/isalnum are ASCII-only)
        if not (name[:1].isalpha() and (name.isalnum() or name.replace(b"_", b"").isalnum())):
            raise DKIMTagError(f"bad tag name {_show(name)}")
        value = rest.strip(_FWS_CHARS)
        key = name.decode("ascii")
        if key in tags:
            raise DKIMTagError(f"duplicate tag {key}=")
        after_eq = offset + len(raw_name) + 1
        # (the value starts after its leading FWS, which holds none of the value's octets)
        start = after_eq + rest.find(value) if value else after_eq
        tags[key] = new(Tag, (value, start, start + len(value), after_eq))
        offset += len(piece) + 1
    return tags


def _show(data: bytes, limit: int = 40) -> str:
    text = data[:limit].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(data) > limit else ""))


def _strip_fws(value: bytes) -> bytes:
    if b" " not in value and b"\t" not in value and b"\r" not in value:
        return value
    return value.replace(b" ", b"").replace(b"\t", b"").replace(b"\r\n", b"")


def _b64(value: bytes, what: str) -> bytes:
    # RFC 6376 §2.4 base64string = ALPHADIGITPS *([FWS] ALPHADIGITPS) [ [FWS] "=" [ [FWS] "=" ] ]
    return _b64_compact(_strip_fws(value), what)


def _b64_compact(compact: bytes, what: str) -> bytes:
    try:
        # strict: only the base64 alphabet and correct padding (C speed, no regex)
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError):
        raise DKIMTagError(f"{what} is not valid base64") from None


def _unsigned(value: bytes, what: str, max_digits: int) -> int:
    # §3.5 t=, x=: 1*12DIGIT; l=: 1*76DIGIT (we bound digits before converting)
    if not value.isdigit() or not value.isascii():
        raise DKIMTagError(f"{what} is not a decimal number")
    if len(value) > max_digits:
        raise DKIMTagError(f"{what} has more than {max_digits} digits")
    return int(value)


# RFC 6376 §3.5 d=/s=: sub-domain *( "." sub-domain ) (RFC 5321 §4.1.2:
#   sub-domain = Let-dig [Ldh-str]). Underscores occur in real selectors; we accept them.
_DOMAIN: Final = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                            rb"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")


def check_domain(value: str, what: str) -> str:
    """A domain or selector a signer was given, checked like a verifier would (lower-case)."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise DKIMTagError(f"{what} must be ASCII (A-labels for IDNs)") from None
    return _domain(raw, what)


@functools.lru_cache(maxsize=1024)
def _domain(value: bytes, what: str) -> str:
    """The checked, lower-cased domain (cached: the same d=/s= values recur across messages;
    a refused value raises every time, exceptions are not cached)."""
    if len(value) > 253 or not _DOMAIN.fullmatch(value):
        raise DKIMTagError(f"{what} is not a valid domain name: {_show(value)}")
    return value.decode("ascii").rstrip(".").lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """A parsed DKIM-Signature (RFC 6376 §3.5). Domains are lower-cased ASCII."""

    algorithm: str
    key_type: str
    hash_name: str
    signature: bytes
    body_hash: bytes
    header_canon: CanonKind
    body_canon: CanonKind
    domain: str
    selector: str
    #: h= names, lower-cased, in order (duplicates kept: over-signing)
    signed_headers: tuple[bytes, ...]
    #: i= as written (decoded), or "@" + d= when absent (§3.5 default)
    identity: str
    identity_domain: str
    length: int | None
    timestamp: int | None
    expiration: int | None
    #: the b= value as written (for header.b), FWS removed
    b_text: str
    #: raw bytes of the field with the b= value removed (§3.7), without the final CRLF
    raw_without_b: bytes


def parse_signature(raw_field: bytes) -> Signature:
    """Parse a whole ``DKIM-Signature: ...`` field (with or without its final CRLF)."""
    if len(raw_field) > DKIM_SIGNATURE_FIELD_MAX:
        raise DKIMTagError(
            f"signature field of {len(raw_field)} octets exceeds {DKIM_SIGNATURE_FIELD_MAX}"
        )
    field = raw_field[:-2] if raw_field.endswith(b"\r\n") else raw_field
    colon = field.find(b":")
    if colon < 0:
        raise DKIMTagError("not a header field")
    offset = colon + 1
    tags = parse_tag_list(field[offset:])

    # §3.5: v=, a=, b=, bh=, d=, h=, s= are REQUIRED.
    for required in ("v", "a", "b", "bh", "d", "h", "s"):
        if required not in tags:
            raise DKIMTagError(f"required tag {required}= is missing")
    # §3.5 v=: "This tag MUST be set to "1"". §6.1.1: unknown version -> PERMFAIL.
    if tags["v"].value != b"1":
        raise DKIMTagError(f"unsupported signature version v={tags['v'].value.decode()}")
    algorithm = tags["a"].value.decode("ascii").lower()
    if algorithm not in ALGORITHMS:
        raise DKIMTagError(f"unknown signing algorithm a={algorithm}")
    key_type, hash_name = ALGORITHMS[algorithm]
    b_tag = tags["b"]
    b_compact = _strip_fws(b_tag.value)
    signature = _b64_compact(b_compact, "b=")
    if not signature:
        raise DKIMTagError("b= is empty")
    body_hash = _b64(tags["bh"].value, "bh=")
    if not body_hash:
        raise DKIMTagError("bh= is empty")

    # §3.5 c=: "header/body"; "If only one algorithm is named, that algorithm is used for the
    # header and "simple" is used for the body." Default "simple/simple".
    header_canon: CanonKind = "simple"
    body_canon: CanonKind = "simple"
    if "c" in tags:
        c = tags["c"].value.lower()
        parts = c.split(b"/")
        kinds: list[CanonKind] = []
        for part in parts:
            if part == b"simple":
                kinds.append("simple")
            elif part == b"relaxed":
                kinds.append("relaxed")
            else:
                raise DKIMTagError(f"unknown canonicalization c={c.decode()}")
        if len(kinds) == 1:
            header_canon = kinds[0]
        elif len(kinds) == 2:
            header_canon, body_canon = kinds
        else:
            raise DKIMTagError(f"bad c={c.decode()}")

    domain = _domain(tags["d"].value, "d=")
    selector = _domain(tags["s"].value, "s=")

    # §3.5 h=: sig-h-tag = %x68 [FWS] "=" [FWS] hdr-name *( [FWS] ":" [FWS] hdr-name )
    h_value = tags["h"].value
    if h_value.count(b":") >= DKIM_MAX_SIGNED_HEADERS:
        raise DKIMTagError(f"h= lists more than {DKIM_MAX_SIGNED_HEADERS} header fields")
    if _H_VALUE.fullmatch(h_value):
        # FWS occurs only around the colons: deleting it leaves the names
        h_names = h_value.translate(None, _FWS_CHARS).lower().split(b":")
    else:
        h_names = [n.strip(_FWS_CHARS).lower() for n in h_value.split(b":")]
        bad = next((n for n in h_names if not _FIELD_NAME.fullmatch(n)), b"")
        raise DKIMTagError(f"bad header field name in h=: {_show(bad)}")
    # §6.1.1: "If the "h=" tag does not include the From header field, the Verifier MUST
    # ignore the DKIM-Signature header field and return PERMFAIL (From field not signed)."
    if b"from" not in h_names:
        raise DKIMTagError("From field not signed (h= lacks from)")

    # §3.5 i=: "The domain part of the address MUST be the same as, or a subdomain of, the
    # value of the "d=" tag." Default: an empty Local-part followed by "@" and d=.
    if "i" in tags:
        i_raw = tags["i"].value
        at = i_raw.rfind(b"@")
        if at < 0:
            raise DKIMTagError("i= has no '@'")
        identity_domain = _domain(i_raw[at + 1 :], "i= domain")
        if identity_domain != domain and not identity_domain.endswith("." + domain):
            raise DKIMTagError("i= domain is not d= or a subdomain of it (domain mismatch)")
        identity = i_raw.decode("utf-8", "replace")
    else:
        identity_domain = domain
        identity = "@" + domain

    length = _unsigned(tags["l"].value, "l=", 76) if "l" in tags else None
    # §3.5 q=: "The only currently defined value is "dns/txt"" (a colon-separated list).
    if "q" in tags:
        methods = [_strip_fws(m).lower() for m in tags["q"].value.split(b":")]
        if not any(m in (b"dns/txt", b"dns") for m in methods):
            raise DKIMTagError(f"no supported query method in q={tags['q'].value.decode()}")
    timestamp = _unsigned(tags["t"].value, "t=", 12) if "t" in tags else None
    expiration = _unsigned(tags["x"].value, "x=", 12) if "x" in tags else None
    # §3.5 x=: "the value of the "x=" tag MUST be greater than the value of the "t=" tag if
    # both are present."
    if timestamp is not None and expiration is not None and expiration <= timestamp:
        raise DKIMTagError("x= is not greater than t=")

    # §3.7: the signature field is hashed "with the value of the "b=" tag ... deleted (i.e.,
    # treated as the empty string)": the value and the FWS between "=" and it (as peers do).
    start = offset + b_tag.after_eq
    end = offset + b_tag.end
    raw_without_b = field[:start] + field[end:]
    return Signature(
        algorithm=algorithm,
        key_type=key_type,
        hash_name=hash_name,
        signature=signature,
        body_hash=body_hash,
        header_canon=header_canon,
        body_canon=body_canon,
        domain=domain,
        selector=selector,
        signed_headers=tuple(h_names),
        identity=identity,
        identity_domain=identity_domain,
        length=length,
        timestamp=timestamp,
        expiration=expiration,
        b_text=b_compact.decode("ascii"),
        raw_without_b=raw_without_b,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """A parsed DKIM key record (RFC 6376 §3.6.1; RFC 8463 §4 for k=ed25519).

    ``key`` is None for a revoked key (empty ``p=``).
    """

    key_type: str
    key: PublicKey | None
    key_bits: int | None
    #: h=: acceptable hash algorithms (None: all)
    hashes: frozenset[str] | None
    #: s=: service types (contains "*" or "email" to be usable for mail)
    services: frozenset[str]
    testing: bool
    strict: bool


def _colon_list(value: bytes) -> list[str]:
    return [_strip_fws(v).decode("ascii", "replace").lower() for v in value.split(b":")]


@functools.lru_cache(maxsize=1024)
def parse_key_record(record: bytes) -> KeyRecord:
    """Parse a key record (the TXT strings joined). Cached: records repeat across messages.

    Raises :class:`DKIMTagError` for every record that cannot be used (§6.1.2: "If the result
    returned from the query does not adhere to the format defined in this specification, the
    Verifier MUST ignore the key record and return PERMFAIL (key syntax error)").
    """
    if len(record) > DKIM_KEY_RECORD_MAX:
        raise DKIMTagError(f"key record of {len(record)} octets exceeds {DKIM_KEY_RECORD_MAX}")
    tags = parse_tag_list(record)
    # §3.6.1 v=: "If specified, this tag MUST be set to "DKIM1" ... This tag MUST be the first
    # tag in the record. Records beginning with a "v=" tag with any other value MUST be
    # discarded."
    if "v" in tags:
        if next(iter(tags)) != "v":
            raise DKIMTagError("v= is not the first tag of the key record")
        if tags["v"].value != b"DKIM1":
            raise DKIMTagError(f"unsupported key record version {_show(tags['v'].value)}")
    # §3.6.1 k=: default "rsa"; RFC 8463 §4 adds "ed25519".
    key_type = tags["k"].value.lower().decode("ascii", "replace") if "k" in tags else "rsa"
    if key_type not in ("rsa", "ed25519"):
        raise DKIMTagError(f"unknown key type k={key_type}")
    hashes = frozenset(_colon_list(tags["h"].value)) if "h" in tags else None
    services = frozenset(_colon_list(tags["s"].value)) if "s" in tags else frozenset({"*"})
    flags = frozenset(_colon_list(tags["t"].value)) if "t" in tags else frozenset()
    # §3.6.1 p=: REQUIRED. "An empty value means that this public key has been revoked."
    if "p" not in tags:
        raise DKIMTagError("key record has no p=")
    der = _b64(tags["p"].value, "p=")
    key: PublicKey | None = None
    bits: int | None = None
    if der:
        key, bits = _load_public_key(key_type, der)
    return KeyRecord(
        key_type=key_type,
        key=key,
        key_bits=bits,
        hashes=hashes,
        services=services,
        testing="y" in flags,
        strict="s" in flags,
    )


def _load_public_key(key_type: str, data: bytes) -> tuple[PublicKey, int]:
    if key_type == "ed25519":
        # RFC 8463 §4: "The "p=" value in the key record is the Ed25519 public key encoded in
        # base64." - the raw 32-octet key, not an ASN.1 structure.
        if len(data) != 32:
            raise DKIMTagError(f"ed25519 key is {len(data)} octets, not 32")
        return ed25519.Ed25519PublicKey.from_public_bytes(data), 256
    # §3.6.1 k=rsa: p= is DER (SubjectPublicKeyInfo in practice, erratum 3017; a bare PKCS#1
    # RSAPublicKey is accepted too).
    if len(data) > DKIM_RSA_MAX_BITS // 8 + 64:
        raise DKIMTagError(f"RSA key larger than {DKIM_RSA_MAX_BITS} bits")
    try:
        key = load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise DKIMTagError("p= is not a valid RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise DKIMTagError("p= is not an RSA public key (inappropriate key algorithm)")
    if key.key_size > DKIM_RSA_MAX_BITS:
        raise DKIMTagError(f"RSA key of {key.key_size} bits exceeds {DKIM_RSA_MAX_BITS}")
    return key, key.key_size
