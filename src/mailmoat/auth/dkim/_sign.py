"""DKIM signing (RFC 6376 §5, RFC 8463, RFC 8301).

:func:`sign` returns the ``DKIM-Signature`` header field (folded, lines <= 78 octets, CRLF)
to put on top of the message. The caller passes the time (``timestamp``/``expire``): this
layer does not read the clock.

For a signer that signs many messages (the submission listener), :class:`KeySigner` holds one
key's checked options and the constant start of its field, and :func:`sign_fields` signs a
message already split into fields with several keys, hashing the body and canonicalising the
selected header fields once for all of them (RFC 8463 §5 dual signing). :func:`sign` is
:func:`sign_fields` with one :class:`KeySigner`: the same octets either way.

SECURITY: the message may come from a user; :func:`sign` splits it with the bounded header
parser of :mod:`._fields`; :func:`sign_fields` callers pass fields split by it (bounded). The
private key is trusted configuration. Memos (the folded ``h=`` tag per list) are bounded.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailmoat.auth.dkim._fields import RawField, split_fields, split_message
from mailmoat.auth.dkim._keys import PrivateKey
from mailmoat.auth.dkim._tags import DKIMTagError, check_domain
from mailmoat.auth.dkim._types import DKIMSigningError
from mailmoat.auth.dkim._verify import index_fields, raw_values, select_fields
from mailmoat.limits import DKIM_RSA_MIN_BITS
from mailmoat.message.dkim_canon import (
    BodyCanonicalizer,
    CanonKind,
    canonicalize_fields_relaxed,
    canonicalize_header_relaxed,
    parse_canon_kind,
)

__all__ = ["DEFAULT_OVERSIGN", "DEFAULT_SIGNED_HEADERS", "KeySigner", "header_part", "sign",
           "sign_dual", "sign_fields"]

#: RFC 6376 §5.4.1 "Recommended Signature Content": the fields that make up the message's
#: meaning to a reader, signed when present.
DEFAULT_SIGNED_HEADERS: Final = (
    "From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From",
    "Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help",
    "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post", "List-Owner",
    "List-Archive", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Sender",
)
#: RFC 6376 §8.15 ("Attacks Involving Extra Header Fields"): listing a name once more than it
#: occurs stops anyone from adding another instance without breaking the signature.
DEFAULT_OVERSIGN: Final = ("From", "Subject", "Date", "To", "Cc", "Reply-To", "Message-ID",
                           "MIME-Version", "Content-Type", "Content-Transfer-Encoding")

_WIDTH: Final = 78
_FIELD_NAME: Final = "DKIM-Signature:"
_FIELD_NAME_B: Final = b"dkim-signature"
#: folded h= tags a KeySigner remembers (a bounded memo: the list depends on the message)
_H_MEMO_MAX: Final = 256
_PKCS1: Final = padding.PKCS1v15()
_SHA256: Final = hashes.SHA256()


def _fold(
    tokens: list[tuple[str, str]], start: str, width: int | None = None
) -> tuple[str, int]:
    """Join (separator, text) tokens after ``start``, folding with CRLF SP so that no line
    exceeds 78 octets (RFC 5322 §2.1.1 "SHOULD be no more than 78 characters"). Returns the
    text and the length of its last line. ``width``: that of ``start``'s last line, when
    ``start`` is itself the output of a fold."""
    out = [start]
    if width is None:
        width = len(start)  # of the current line
    for sep, text in tokens:
        n = len(sep) + len(text)
        if width + n <= _WIDTH or width == 1:  # (a line holding only the folding SP)
            out.append(sep)
            out.append(text)
            width += n
        else:
            out.append("\r\n ")
            out.append(text)
            width = 1 + len(text)
    return "".join(out), width


def _chunks(text: str, first: int, rest: int) -> list[str]:
    out = [text[:first]]
    pos = first
    while pos < len(text):
        out.append(text[pos : pos + rest])
        pos += rest
    return out


@functools.lru_cache(maxsize=64)
def _plan(
    headers: tuple[str, ...] | None, oversign: tuple[str, ...]
) -> tuple[tuple[bytes, bool, bool], ...]:
    """(lower-case name, explicitly asked for, over-signed), in h= order, without repeats."""
    over = {h.lower() for h in oversign}
    chosen = DEFAULT_SIGNED_HEADERS if headers is None else headers
    explicit = set() if headers is None else {h.lower() for h in headers}
    seen: set[str] = set()
    plan = []
    for h in (*chosen, *oversign):
        low = h.lower()
        if low in seen:
            continue
        seen.add(low)
        if not low.isascii() or not low or ":" in low or any(c <= " " for c in low):
            raise DKIMSigningError(f"not a header field name: {h!r}")
        plan.append((low.encode("ascii"), low in explicit, low in over))
    return tuple(plan)


class KeySigner:
    """One signing key with its options, checked once (RFC 8301 key rules, d=/s=/i= syntax) and
    the constant part of its ``DKIM-Signature`` (the tags up to ``i=``, folded) built once.

    :meth:`field` signs a message given as its raw header fields and body; :func:`sign_fields`
    signs with several keys at once, sharing the body hash and the canonicalised header fields
    between keys with the same canonicalisation and ``h=`` list (RFC 8463 §5 dual signing).
    The output is the same octets :func:`sign` produces for the same inputs.
    """

    __slots__ = ("_h_memo", "_plan", "_prefix", "_prefix_width", "algorithm", "body_length",
                 "c_body", "c_header", "domain", "private_key", "selector")

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key: PrivateKey,
        *,
        headers: Sequence[str] | None = None,
        oversign: Sequence[str] = DEFAULT_OVERSIGN,
        canonicalization: tuple[str, str] = ("relaxed", "relaxed"),
        algorithm: str | None = None,
        identity: str | None = None,
        body_length: bool = False,
    ) -> None:
        if isinstance(private_key, rsa.RSAPrivateKey):
            # RFC 8301 §3.1: "Signers MUST sign using rsa-sha256."
            if algorithm not in (None, "rsa-sha256"):
                raise DKIMSigningError(f"an RSA key signs rsa-sha256, not {algorithm}")
            algorithm = "rsa-sha256"
            # RFC 8301 §3.2: "Signers MUST use RSA keys of at least 1024 bits"
            if private_key.key_size < DKIM_RSA_MIN_BITS:
                raise DKIMSigningError(f"RSA key of {private_key.key_size} bits is too small")
        elif isinstance(private_key, ed25519.Ed25519PrivateKey):
            if algorithm not in (None, "ed25519-sha256"):
                raise DKIMSigningError(f"an Ed25519 key signs ed25519-sha256, not {algorithm}")
            algorithm = "ed25519-sha256"
        else:
            raise DKIMSigningError("the key must be an RSA or Ed25519 private key")
        try:
            c_header = parse_canon_kind(canonicalization[0])
            c_body = parse_canon_kind(canonicalization[1])
        except ValueError as exc:
            raise DKIMSigningError(str(exc)) from None
        try:
            check_domain(domain, "domain (d=)")
            check_domain(selector, "selector (s=)")
            if identity is not None:
                local, at, idomain = identity.rpartition("@")
                id_domain = check_domain(idomain, "identity (i=) domain")
                if not at or (id_domain != domain.lower().rstrip(".")
                              and not id_domain.endswith("." + domain.lower().rstrip("."))):
                    raise DKIMTagError("i= must be @d= or a subdomain of d= (RFC 6376 §3.5)")
                if any(c in local for c in "; \t\r\n") or not local.isascii():
                    raise DKIMTagError("i= local-part has characters a tag value cannot hold")
        except DKIMTagError as exc:
            raise DKIMSigningError(f"cannot build a valid signature: {exc}") from None
        self.domain = domain
        self.selector = selector
        self.private_key = private_key
        self.algorithm = algorithm
        self.c_header: CanonKind = c_header
        self.c_body: CanonKind = c_body
        self.body_length = body_length
        self._plan = _plan(
            None if headers is None else tuple(headers),
            oversign if isinstance(oversign, tuple) else tuple(oversign),
        )
        tokens: list[tuple[str, str]] = [
            (" ", "v=1;"),
            (" ", f"a={algorithm};"),
            (" ", f"c={c_header}/{c_body};"),
            (" ", f"d={domain};"),
            (" ", f"s={selector};"),
        ]
        if identity is not None:
            tokens.append((" ", f"i={identity};"))
        # (folding is left to right with the current line's width as its only state, so the
        # folded prefix and its last line's width resume exactly where sign() would be)
        self._prefix, self._prefix_width = _fold(tokens, _FIELD_NAME)
        self._h_memo: dict[tuple[int, tuple[bytes, ...]], tuple[str, int]] = {}

    def names(self, index: dict[bytes, list[RawField]]) -> list[bytes]:
        """The h= list for a message whose fields are ``index`` (RFC 6376 §5.4, §8.15)."""
        names: list[bytes] = []
        for low, explicit, over in self._plan:
            instances = index.get(low)
            count = len(instances) if instances else 0
            if over:
                # every instance plus one more: adding an instance breaks the signature
                names.extend([low] * (count + 1))
            elif count:
                names.extend([low] * count)
            elif explicit:
                names.append(low)  # asserting the field's absence
        if b"from" not in names:
            names.insert(0, b"from")
        return names

    def field(
        self,
        names: list[bytes],
        header_part: bytes,
        body_hash: str,
        body_octets: int,
        *,
        timestamp: int | None = None,
        expire: int | None = None,
    ) -> bytes:
        """The ``DKIM-Signature`` field (with CRLF) given the h= list, the canonicalised
        selected fields (``header_part``, :func:`header_part`), the base64 body hash and the
        canonicalised body's length (for ``l=``)."""
        tokens: list[tuple[str, str]] = []
        if timestamp is not None:
            tokens.append((" ", f"t={int(timestamp)};"))
        if expire is not None:
            tokens.append((" ", f"x={int(expire)};"))
        if self.body_length:
            tokens.append((" ", f"l={body_octets};"))
        head, width = _fold(tokens, self._prefix, self._prefix_width)
        # the h= tag folded, remembered per (width of the line it starts on, h= list): the
        # same few lists come back message after message
        memo_key = (width, tuple(names))
        folded = self._h_memo.get(memo_key)
        if folded is None:
            texts = [n.decode("ascii") + ":" for n in names]
            texts[0] = "h=" + texts[0]
            texts[-1] = texts[-1][:-1] + ";"
            h_tokens = [(" ", texts[0])]
            h_tokens.extend([("", text) for text in texts[1:]])
            folded = _fold(h_tokens, "", width)
            if len(self._h_memo) >= _H_MEMO_MAX:
                self._h_memo.clear()
            self._h_memo[memo_key] = folded
        unsigned, last = _fold([(" ", f"bh={body_hash};"), (" ", "b=")],
                               head + folded[0], folded[1])
        raw = unsigned.encode("ascii")
        if self.c_header == "relaxed":
            # §3.7: the signature field itself, b= empty, canonicalised, without its CRLF
            data = header_part + canonicalize_header_relaxed(_FIELD_NAME_B, raw[15:])[:-2]
        else:
            data = header_part + raw
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            value = key.sign(data, _PKCS1, _SHA256)
        else:
            # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data
            value = key.sign(hashlib.sha256(data).digest())
        b64 = base64.b64encode(value).decode("ascii")
        pieces = _chunks(b64, max(0, _WIDTH - last), _WIDTH - 1)
        field = unsigned + pieces[0] + "".join(["\r\n " + p for p in pieces[1:]]) + "\r\n"
        return field.encode("ascii")


def header_part(index: dict[bytes, list[RawField]], names: Sequence[bytes], relaxed: bool) -> bytes:
    """The selected header fields canonicalised, in h= order (RFC 6376 §3.7, §5.4.2: "the
    Signer MUST choose the last unused instance"): the hash input before the signature field.
    """
    selected = select_fields(index, names)
    if not relaxed:
        return b"".join([f.raw for f in selected])
    return canonicalize_fields_relaxed([f.lname for f in selected], raw_values(selected))


def sign_fields(
    fields: Sequence[RawField],
    body: bytes,
    signers: Sequence[KeySigner],
    *,
    timestamp: int | None = None,
    expire: int | None = None,
) -> bytes:
    """Every signer's ``DKIM-Signature`` field, in the order given (the top one first), each
    over the message alone (the signatures are independent, as :func:`sign` called for each
    key): ``fields`` are the message's raw header fields (:func:`split_fields` of its header
    section), ``body`` its body. The body is canonicalised and hashed once per body
    canonicalisation, the selected fields once per (h= list, header canonicalisation)."""
    if timestamp is not None and expire is not None and expire <= timestamp:
        raise DKIMSigningError("expire must be later than timestamp (RFC 6376 §3.5 x=)")
    index = index_fields(fields)
    # §5.4: "The From header field MUST be signed"; a message without one cannot be.
    if b"from" not in index:
        raise DKIMSigningError("the message has no From header field")
    bodies: dict[str, tuple[str, int]] = {}
    parts: dict[tuple[bool, tuple[bytes, ...]], bytes] = {}
    out = []
    for signer in signers:
        done = bodies.get(signer.c_body)
        if done is None:
            canon = BodyCanonicalizer(signer.c_body)
            canon.update(body)
            done = bodies[signer.c_body] = (base64.b64encode(canon.digest()).decode("ascii"),
                                            canon.length)
        names = signer.names(index)
        relaxed = signer.c_header == "relaxed"
        key = (relaxed, tuple(names))
        part = parts.get(key)
        if part is None:
            part = parts[key] = header_part(index, names, relaxed)
        out.append(signer.field(names, part, done[0], done[1], timestamp=timestamp,
                                expire=expire))
    return b"".join(out)


def sign(
    message: bytes,
    domain: str,
    selector: str,
    private_key: PrivateKey,
    *,
    headers: Sequence[str] | None = None,
    oversign: Sequence[str] = DEFAULT_OVERSIGN,
    canonicalization: tuple[str, str] = ("relaxed", "relaxed"),
    algorithm: str | None = None,
    timestamp: int | None = None,
    expire: int | None = None,
    identity: str | None = None,
    body_length: bool = False,
) -> bytes:
    """Sign ``message`` (CRLF line ends) and return the ``DKIM-Signature`` field (with CRLF).

    ``headers``: the field names to sign (default: :data:`DEFAULT_SIGNED_HEADERS` present in
    the message); ``oversign``: names signed once more than they occur; ``timestamp``/
    ``expire``: t= and x= (UNIX times; ``expire`` absolute); ``body_length``: add l=
    (discouraged, RFC 6376 §8.2).
    """
    signer = KeySigner(domain, selector, private_key, headers=headers, oversign=oversign,
                       canonicalization=canonicalization, algorithm=algorithm,
                       identity=identity, body_length=body_length)
    if timestamp is not None and expire is not None and expire <= timestamp:
        raise DKIMSigningError("expire must be later than timestamp (RFC 6376 §3.5 x=)")
    header, body = split_message(message)
    return sign_fields(split_fields(header), body, [signer], timestamp=timestamp,
                       expire=expire)


def sign_dual(
    message: bytes,
    domain: str,
    *,
    rsa_selector: str,
    rsa_key: rsa.RSAPrivateKey,
    ed25519_selector: str,
    ed25519_key: ed25519.Ed25519PrivateKey,
    **options: object,
) -> bytes:
    """RFC 8463 §5 suggests signing with both an RSA and an Ed25519 key while verifiers
    adopt Ed25519: returns both fields (Ed25519 first), to put on top of the message."""
    ed = sign(message, domain, ed25519_selector, ed25519_key, **options)  # type: ignore[arg-type]
    rs = sign(message, domain, rsa_selector, rsa_key, **options)  # type: ignore[arg-type]
    return ed + rs
