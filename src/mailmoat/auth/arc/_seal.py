"""ARC sealing (RFC 8617 §5.1 "Sealer Actions").

RFC 8617 §5.1:

1. "If the message already contains an Authenticated Received Chain with the most recent AS
   reporting "cv=fail", then there is no need to proceed and the algorithm stops here."
2. "Generate and attach to the message an ARC Set as defined in Section 4.1": instance
   N + 1, an ARC-Authentication-Results with the results this ADMD computed, an
   ARC-Message-Signature (a DKIM signature with ``i=`` the instance and no ``v=``), and an
   ARC-Seal whose ``cv=`` is the chain validation status found (none for the first set).

§5.1.1: the AS signs the ARC Sets in increasing instance order (AAR, AMS, AS each), relaxed
header canonicalisation, ending with the new seal with an empty b=. §5.1.2: when the chain
failed ("cv=fail"), the seal covers only the new ARC Set.

The fields are written in the tag order, one space after each ";" and no trailing ";" (what
the ARC test suite standardises, README "Signing Header Format Standardization"), folded only
between tags (and inside b=), so that relaxed canonicalisation sees one space between tags.

The caller passes the time: this layer does not read the clock.

SECURITY: the message may be hostile; it is split by the bounded DKIM header splitter. Results
written into the AAR are reduced to one line (CR/LF removed) so they cannot inject fields.
The private key is trusted configuration.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailmoat.auth.arc._fields import AAR_NAME, AMS_NAME, ARC_NAMES, AS_NAME, parse_arc_field
from mailmoat.auth.arc._types import ARCSet, ARCSigningError, ARCStatus, ARCValidation
from mailmoat.auth.arc._validate import seal_hash_input
from mailmoat.auth.authres import AuthResResult, authserv_id_of, format_resinfo
from mailmoat.auth.dkim import DEFAULT_SIGNED_HEADERS, PrivateKey
from mailmoat.auth.dkim.internals import (
    DKIMTagError,
    RawField,
    check_domain,
    hash_input,
    index_fields,
    split_fields,
    split_message,
)
from mailmoat.limits import ARC_MAX_INSTANCES, DKIM_RSA_MIN_BITS
from mailmoat.message import Kind, tokenize, unfold
from mailmoat.message.dkim_canon import BodyCanonicalizer

__all__ = ["authres_results", "seal"]

_WIDTH: Final = 78
_WSP_RUN: Final = re.compile(r"[ \t]+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_AR_NAME: Final = b"authentication-results"


def _one_line(text: str) -> str:
    return _WSP_RUN.sub(" ", _CONTROL.sub(" ", text)).strip()


def authres_results(header: bytes, authserv_id: str) -> tuple[str, ...]:
    """The resinfo clauses of every Authentication-Results field of ``header`` that carries
    ``authserv_id``, in order, as one-line texts (comments kept): what an AAR records.

    This is the consolidation the ARC test suite assumes (README "AR Consolidation": "All
    AR's with the give authserv-id are consolidated, and kept in the order in which they
    appear in the message. Each complete result is extracted"). Clauses are split at the
    ";" outside comments and quoted strings (RFC 8601 §2.2 resinfo = [CFWS] ";" methodspec
    ...); a ``none`` no-result clause is skipped.
    """
    out: list[str] = []
    wanted = authserv_id.lower().rstrip(".")
    for f in split_fields(header):
        if f.lname != _AR_NAME:
            continue
        found = authserv_id_of(f.value)
        if found is None or found.lower().rstrip(".") != wanted:
            continue
        text = unfold(f.value)
        tokens = tokenize(text)
        cuts = [t.start for t in tokens.items if t.kind is Kind.SEMI]
        bounds = [*cuts, len(text)]
        for start, end in zip(cuts, bounds[1:], strict=True):
            clause = _one_line(text[start + 1 : end].decode("utf-8", "replace"))
            if clause and clause.lower() != "none":
                out.append(clause)
    return tuple(out)


def _result_text(result: AuthResResult | str) -> str:
    if isinstance(result, AuthResResult):
        return " ".join(format_resinfo(result))
    return _one_line(result)


def _fold(name: str, tags: Sequence[tuple[str, str]], b64: str | None) -> str:
    """``Name: t1=v1; t2=v2; ...`` folded before a tag when a line would pass 78 octets;
    ``b64`` is the b= value (None: b= empty, the form that is hashed).

    Folds fall between tags, where relaxed canonicalisation sees one space either way, so the
    hashed form and the final form agree; only a long h= is folded inside (see below).
    The b= value is written unfolded: a later ARC-Seal signs this field in relaxed form, where
    FWS inside b= would become a space, and the ARC suite's standard format has none (its AS
    values only verify that way). A 4096-bit signature is 684 characters, inside RFC 5322
    §2.1.1's 998-octet line limit."""
    out = name + ":"
    line = len(out)
    last = len(tags) - 1
    for k, (tag, value) in enumerate(tags):
        end = "" if k == last else ";"
        if tag == "b" and b64:
            piece = "b="
            if line + 1 + len(piece) > _WIDTH:
                out += "\r\n "
                line = 1
            else:
                out += " "
                line += 1
            out += piece + b64 + end
            line += len(piece) + len(b64) + len(end)
            continue
        piece = f"{tag}={value}{end}"
        if tag == "h" and 1 + len(piece) > _WIDTH:
            # A long h= gets lines of its own, folded after ":" at fixed widths: the same in
            # the hashed (b= empty) and the final form, whatever b= did to the lines before.
            lines = [""]
            for part in re.findall(r"[^:]*:|[^:]+$", piece):
                if lines[-1] and 1 + len(lines[-1]) + len(part) > _WIDTH:
                    lines.append("")
                lines[-1] += part
            out += "\r\n " + "\r\n ".join(lines)
            line = 1 + len(lines[-1])
            continue
        if line + 1 + len(piece) > _WIDTH and line > len(name) + 1:
            out += "\r\n " + piece
            line = 1 + len(piece)
        else:
            out += " " + piece
            line += 1 + len(piece)
    return out


def _sign(key: PrivateKey, data: bytes) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data
        value = key.sign(hashlib.sha256(data).digest())
    return base64.b64encode(value).decode("ascii")


def _raw(name: bytes, text: str) -> RawField:
    raw = text.encode("utf-8") + b"\r\n"
    return RawField(name, name.lower(), raw)


def _previous_sets(fields: Sequence[RawField], n: int) -> list[tuple[RawField, RawField,
                                                                        RawField]]:
    by: dict[tuple[int, bytes], list[RawField]] = {}
    for f in fields:
        if f.lname in ARC_NAMES:
            parsed = parse_arc_field(f)
            if parsed.instance is not None:
                by.setdefault((parsed.instance, f.lname), []).append(f)
    out = []
    for i in range(1, n + 1):
        group = [by.get((i, name), []) for name in (AAR_NAME, AMS_NAME, AS_NAME)]
        if any(len(g) != 1 for g in group):
            raise ARCSigningError(f"ARC Set i={i} of the message is not one AAR, AMS and AS: "
                                  "was the chain validated on this message?")
        out.append((group[0][0], group[1][0], group[2][0]))
    return out


def seal(
    message: bytes,
    chain: ARCValidation,
    *,
    authserv_id: str,
    results: Sequence[AuthResResult | str],
    domain: str,
    selector: str,
    private_key: PrivateKey,
    timestamp: int | None = None,
    headers: Sequence[str] | None = None,
) -> ARCSet | None:
    """Seal ``message`` (CRLF line ends) whose chain was validated as ``chain``.

    ``results`` are what this ADMD found (our :class:`AuthResResult` values, or resinfo texts
    such as :func:`authres_results` returns); ``headers`` the fields the AMS signs (default: the
    RFC 6376 §5.4.1 set present in the message). Returns the new :class:`ARCSet`, or None when
    RFC 8617 says to add nothing: the newest seal already reports ``cv=fail`` (§5.1 step 1),
    or the chain already holds ``limits.ARC_MAX_INSTANCES`` sets (§5.2: more than 50 is fail).
    Raises :class:`ARCSigningError` for a bad key, domain, selector or header list.
    """
    if chain.highest_cv_fail:
        return None
    if isinstance(private_key, rsa.RSAPrivateKey):
        algorithm = "rsa-sha256"
        # RFC 8301 §3.2: "Signers MUST use RSA keys of at least 1024 bits"
        if private_key.key_size < DKIM_RSA_MIN_BITS:
            raise ARCSigningError(f"RSA key of {private_key.key_size} bits is too small")
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519-sha256"
    else:
        raise ARCSigningError("the key must be an RSA or Ed25519 private key")
    try:
        domain = check_domain(domain, "domain (d=)")
        selector = check_domain(selector, "selector (s=)")
    except DKIMTagError as exc:
        raise ARCSigningError(str(exc)) from None
    if not authserv_id or _one_line(authserv_id) != authserv_id or ";" in authserv_id:
        raise ARCSigningError("authserv-id must be one token without ';' or white space")

    header, body = split_message(message)
    fields = split_fields(header)
    highest = 0
    for f in fields:
        if f.lname in ARC_NAMES:
            parsed = parse_arc_field(f)
            if parsed.instance is not None:
                highest = max(highest, parsed.instance)
    n = max(highest, chain.instance_count)
    instance = n + 1
    if instance > ARC_MAX_INSTANCES:
        return None
    cv = ARCStatus.NONE if n == 0 else (ARCStatus.PASS if chain.passed else ARCStatus.FAIL)
    if n > 0 and chain.result is ARCStatus.NONE:
        raise ARCSigningError("the message has ARC fields but the chain given says none: "
                              "validate this message first")
    previous = _previous_sets(fields, n) if cv is not ARCStatus.FAIL else []

    # ARC-Authentication-Results (RFC 8617 §4.1.1): "i=" instance ";" authres-payload
    texts = [t for t in (_result_text(r) for r in results) if t] or ["none"]
    aar_text = f"ARC-Authentication-Results: i={instance}; {authserv_id};" + ";".join(
        f"\r\n {t}" for t in texts)
    aar = _raw(b"ARC-Authentication-Results", aar_text)

    # ARC-Message-Signature (RFC 8617 §4.1.2)
    index = index_fields([aar, *fields])
    if headers is None:
        names = [h.lower() for h in DEFAULT_SIGNED_HEADERS
                 if h.lower().encode("ascii") in index]
    else:
        names = [h.strip().lower() for h in headers if h.strip()]
    for h in names:
        if not h.isascii() or any(c in h for c in ":; \t\r\n"):
            raise ARCSigningError(f"bad header field name {h!r}")
    if "arc-seal" in names:
        raise ARCSigningError("the ARC-Message-Signature must not sign ARC-Seal (RFC 8617 "
                              "§4.1.2)")
    canon = BodyCanonicalizer("relaxed")
    canon.update(body)
    bh = base64.b64encode(canon.digest()).decode("ascii")
    t = [("t", str(int(timestamp)))] if timestamp is not None else []
    ams_tags = [("a", algorithm), ("b", ""), ("bh", bh), ("c", "relaxed/relaxed"),
                ("d", domain), ("h", ":".join(names)), ("i", str(instance)), ("s", selector),
                *t]
    unsigned = _fold("ARC-Message-Signature", ams_tags, None)
    data = hash_input(index, [n.encode("ascii") for n in names], True,
                      unsigned.encode("ascii"))
    ams = _raw(b"ARC-Message-Signature",
               _fold("ARC-Message-Signature", ams_tags, _sign(private_key, data)))

    # ARC-Seal (RFC 8617 §4.1.3, §5.1.1, §5.1.2)
    as_tags = [("a", algorithm), ("b", ""), ("cv", cv.value), ("d", domain),
               ("i", str(instance)), ("s", selector), *t]
    unsigned = _fold("ARC-Seal", as_tags, None)
    data = seal_hash_input([*previous, (aar, ams, ams)], unsigned.encode("ascii"))
    seal_field = _raw(b"ARC-Seal", _fold("ARC-Seal", as_tags, _sign(private_key, data)))
    return ARCSet(instance=instance, cv=cv, seal=seal_field.raw,
                  message_signature=ams.raw, authentication_results=aar.raw)
