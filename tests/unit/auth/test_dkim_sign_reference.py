"""DKIM signing with per-key precomputation (:class:`KeySigner`, :func:`sign_fields`) gives the
same octets as the straightforward signer it replaced, and dkimpy (independent) verifies them.

The reference below is the former ``auth.dkim._sign.sign`` (before the per-key and per-message
sharing), kept here verbatim in its logic: choose the h= list, hash the body, build and fold
the tags, hash the selected fields plus the field itself (RFC 6376 §3.7, §5.4), sign. RSA
PKCS#1 v1.5 and Ed25519 signatures are deterministic, so equal inputs must give equal fields.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.auth.dkim import DEFAULT_OVERSIGN, DEFAULT_SIGNED_HEADERS, key_record, sign
from mailmoat.auth.dkim._sign import KeySigner, sign_fields
from mailmoat.auth.dkim.internals import hash_input, index_fields, split_fields, split_message
from mailmoat.message.dkim_canon import BodyCanonicalizer

dkim = pytest.importorskip("dkim")
pytest.importorskip("nacl")

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
T = 1_790_000_000


# --- the reference signer ------------------------------------------------------------------


def ref_fold(tokens: list[tuple[str, str]], start: str) -> tuple[str, int]:
    out = [start]
    width = len(start)
    for sep, text in tokens:
        n = len(sep) + len(text)
        if width + n <= 78 or width == 1:
            out.append(sep)
            out.append(text)
            width += n
        else:
            out.append("\r\n ")
            out.append(text)
            width = 1 + len(text)
    return "".join(out), width


def ref_sign(message: bytes, domain: str, selector: str, key: object, *,
             headers: Sequence[str] | None = None,
             oversign: Sequence[str] = DEFAULT_OVERSIGN,
             canonicalization: tuple[str, str] = ("relaxed", "relaxed"),
             timestamp: int | None = None, expire: int | None = None,
             identity: str | None = None, body_length: bool = False) -> bytes:
    algorithm = "rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519-sha256"
    c_header, c_body = canonicalization
    header, body = split_message(message)
    index = index_fields(split_fields(header))
    over = {h.lower() for h in oversign}
    chosen = DEFAULT_SIGNED_HEADERS if headers is None else headers
    explicit = set() if headers is None else {h.lower() for h in headers}
    seen: set[str] = set()
    names: list[bytes] = []
    for h in (*chosen, *oversign):
        low = h.lower()
        if low in seen:
            continue
        seen.add(low)
        count = len(index.get(low.encode(), []))
        if low in over:
            names.extend([low.encode()] * (count + 1))
        elif count:
            names.extend([low.encode()] * count)
        elif low in explicit:
            names.append(low.encode())
    if b"from" not in names:
        names.insert(0, b"from")
    canon = BodyCanonicalizer(c_body)  # type: ignore[arg-type]
    canon.update(body)
    body_hash = base64.b64encode(canon.digest()).decode("ascii")
    tokens = [(" ", "v=1;"), (" ", f"a={algorithm};"), (" ", f"c={c_header}/{c_body};"),
              (" ", f"d={domain};"), (" ", f"s={selector};")]
    if identity is not None:
        tokens.append((" ", f"i={identity};"))
    if timestamp is not None:
        tokens.append((" ", f"t={timestamp};"))
    if expire is not None:
        tokens.append((" ", f"x={expire};"))
    if body_length:
        tokens.append((" ", f"l={canon.length};"))
    texts = [n.decode("ascii") + ":" for n in names]
    texts[0] = "h=" + texts[0]
    texts[-1] = texts[-1][:-1] + ";"
    tokens.append((" ", texts[0]))
    tokens.extend([("", text) for text in texts[1:]])
    tokens.append((" ", f"bh={body_hash};"))
    tokens.append((" ", "b="))
    unsigned, last = ref_fold(tokens, "DKIM-Signature:")
    data = hash_input(index, names, c_header == "relaxed", unsigned.encode("ascii"))
    if isinstance(key, rsa.RSAPrivateKey):
        value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        value = key.sign(hashlib.sha256(data).digest())
    b64 = base64.b64encode(value).decode("ascii")
    first = max(0, 78 - last)
    pieces = [b64[:first]] + [b64[i : i + 77] for i in range(first, len(b64), 77)]
    return (unsigned + pieces[0] + "".join("\r\n " + p for p in pieces[1:]) + "\r\n").encode()


# --- messages --------------------------------------------------------------------------------

BASE = (b"Received: from a\r\nFrom: Joe <joe@example.com>\r\nTo: sue@example.net,\r\n"
        b"\tbob@example.net\r\nSubject:  hello   there \r\nCc: x@example.org\r\n"
        b"Cc: y@example.org\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <m1@example.com>\r\nSubject: second\r\nX-Mailer: t\r\n\r\n"
        b"Hi Sue,  \r\n\tindented\r\n\r\n\r\n")
MESSAGES = {
    "base": BASE,
    # (obsolete WSP before the colon, RFC 5322 §4.5.8: dkimpy refuses to parse it)
    "obs wsp": BASE.replace(b"Subject: second", b"Subject : second"),
    "no body": b"From: a@example.com\r\nSubject: s\r\n",
    "empty body": b"From: a@example.com\r\n\r\n",
    "long header": b"From: a@example.com\r\nSubject: " + b"word " * 60 + b"\r\n\r\nx\r\n",
    "lists": (b"From: a@example.com\r\nList-Id: <l.example.com>\r\nList-Post: <mailto:l@x>\r\n"
              b"Resent-From: r@example.com\r\nIn-Reply-To: <p@x>\r\nReferences: <p@x>\r\n"
              b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody\r\n"),
}
OPTIONS: dict[str, dict[str, object]] = {
    "defaults": {},
    "t": {"timestamp": T},
    "t x l i": {"timestamp": T, "expire": T + 86400, "body_length": True,
                "identity": "joe@sub.example.com"},
    "simple/simple": {"canonicalization": ("simple", "simple"), "timestamp": T},
    "relaxed/simple": {"canonicalization": ("relaxed", "simple")},
    "explicit headers": {"headers": ("From", "Subject", "X-Absent", "Cc"), "oversign": ()},
    "no from asked": {"headers": ("Subject",), "oversign": ("To",)},
}


def lookup(name: bytes, timeout: int = 5) -> bytes:
    key = ED_KEY if name.startswith(b"ed.") else RSA_KEY
    return key_record(key).encode()


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_same_octets_as_the_reference(message: bytes, options: dict[str, object],
                                      selector: str) -> None:
    key = RSA_KEY if selector == "rsa" else ED_KEY
    ours = sign(message, "example.com", selector, key, **options)  # type: ignore[arg-type]
    assert ours == ref_sign(message, "example.com", selector, key, **options)  # type: ignore[arg-type]
    if b"Subject :" not in message and "timestamp" not in options:  # (dkimpy checks t=)
        assert dkim.verify(ours + message, dnsfunc=lookup)


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_shared_dual_signing_is_two_independent_signatures(message: bytes) -> None:
    """sign_fields with two keys: the body hash and selected fields computed once, the
    fields the same as signing with each key on its own (Ed25519 on top, RFC 8463 §5)."""
    header, body = split_message(message)
    signers = [KeySigner("example.com", "ed", ED_KEY), KeySigner("example.com", "rsa", RSA_KEY)]
    both = sign_fields(split_fields(header), body, signers, timestamp=T)
    # same KeySigners again: the memoised h= folding gives the same octets
    assert sign_fields(split_fields(header), body, signers, timestamp=T) == both
    expected = (ref_sign(message, "example.com", "ed", ED_KEY, timestamp=T)
                + ref_sign(message, "example.com", "rsa", RSA_KEY, timestamp=T))
    assert both == expected
    if b"Subject :" in message:
        return
    d = dkim.DKIM(both + message)
    assert d.verify(idx=0, dnsfunc=lookup)
    assert d.verify(idx=1, dnsfunc=lookup)


def test_folding_resumes_where_the_reference_folds() -> None:
    """Selectors and domains of every length move the point where t= and h= fold."""
    for n in range(1, 40):
        selector = "s" * n
        for message in (BASE, MESSAGES["lists"]):
            signer = KeySigner("example.com", selector, ED_KEY, identity="@example.com")
            header, body = split_message(message)
            ours = sign_fields(split_fields(header), body, [signer], timestamp=T + n)
            assert ours == ref_sign(message, "example.com", selector, ED_KEY,
                                    identity="@example.com", timestamp=T + n)


_NAMES = st.sampled_from([b"From", b"To", b"Cc", b"Subject", b"Date", b"X-A", b"Reply-To",
                          b"from", b"SUBJECT", b"Content-Type", b"Sender", b"List-Id"])
_VALUES = st.lists(st.text(alphabet=" \tab@.<>,x", min_size=0, max_size=12).map(str.encode),
                   min_size=1, max_size=3).map(b"\r\n ".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_NAMES, st.sampled_from([b":", b" :", b":\t"]), _VALUES),
                min_size=0, max_size=12),
       st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
       st.sampled_from([("relaxed", "relaxed"), ("simple", "simple"), ("simple", "relaxed")]))
def test_random_messages_match_the_reference(
    fields: list[tuple[bytes, bytes, bytes]], body: bytes, canon: tuple[str, str]
) -> None:
    header = b"From: a@example.com\r\n" + b"".join(n + c + v + b"\r\n" for n, c, v in fields)
    message = header + b"\r\n" + body
    ours = sign(message, "example.com", "ed", ED_KEY, canonicalization=canon, timestamp=T)
    assert ours == ref_sign(message, "example.com", "ed", ED_KEY, canonicalization=canon,
                            timestamp=T)
