"""DKIM tag lists (RFC 6376 §3.2), DKIM-Signature fields (§3.5) and key records (§3.6.1)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailmoat.auth.dkim import DKIMTagError, parse_key_record, parse_signature
from mailmoat.auth.dkim._tags import parse_tag_list
from mailmoat.limits import DKIM_MAX_SIGNED_HEADERS, DKIM_SIGNATURE_FIELD_MAX

BH = base64.b64encode(b"\x01" * 32).decode()
B = base64.b64encode(b"\x02" * 64).decode()


def field(tags: str) -> bytes:
    return f"DKIM-Signature: {tags}\r\n".encode()


def good(**override: str | None) -> bytes:
    tags = {"v": "1", "a": "rsa-sha256", "d": "example.com", "s": "sel", "h": "from:to",
            "bh": BH, "b": B}
    for k, v in override.items():
        if v is None:
            tags.pop(k, None)
        else:
            tags[k] = v
    return field("; ".join(f"{k}={v}" for k, v in tags.items()))


# --- §3.2 tag-list ---------------------------------------------------------------------------


def test_tag_list_with_fws_and_trailing_semicolon() -> None:
    tags = parse_tag_list(b" a = 1 ;\r\n\tb=two words\r\n  folded ; ")
    assert tags["a"].value == b"1"
    assert tags["b"].value == b"two words\r\n  folded"
    assert list(tags) == ["a", "b"]


def test_tag_value_positions() -> None:
    data = b"x=1; b= abc ; y=2"
    t = parse_tag_list(data)["b"]
    assert data[t.start : t.end] == b"abc"
    assert data[t.after_eq : t.start] == b" "


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a=1; a=2", "duplicate tag a="),  # §3.2 "the entire tag-list is invalid"
        (b"a=1;; b=2", "empty tag-spec"),
        (b"a=1; junk", "without '='"),
        (b"1a=x", "bad tag name"),
        (b"a-b=x", "bad tag name"),
        (b"a=x\x00y", "bad character"),
        (b"a=x\r\ny", "bad character"),  # CRLF not followed by WSP is not FWS
        (b"a=caf\xc3\xa9", "bad character"),  # VALCHAR is %x21-3A / %x3C-7E
    ],
)
def test_tag_list_errors(data: bytes, message: str) -> None:
    with pytest.raises(DKIMTagError, match=message):
        parse_tag_list(data)


# --- §3.5 DKIM-Signature --------------------------------------------------------------------


def test_good_signature_defaults() -> None:
    sig = parse_signature(good())
    assert (sig.algorithm, sig.key_type, sig.hash_name) == ("rsa-sha256", "rsa", "sha256")
    # §3.5 c=: default simple/simple; i=: default "@" d=; q= default dns/txt
    assert (sig.header_canon, sig.body_canon) == ("simple", "simple")
    assert sig.identity == "@example.com"
    assert sig.signed_headers == (b"from", b"to")
    assert sig.signature == b"\x02" * 64
    assert sig.body_hash == b"\x01" * 32
    assert sig.b_text == B
    assert sig.length is None
    assert sig.timestamp is None
    assert sig.expiration is None


@pytest.mark.parametrize("missing", ["v", "a", "b", "bh", "d", "h", "s"])
def test_required_tags(missing: str) -> None:
    # §3.5: "v= ... REQUIRED" etc.
    with pytest.raises(DKIMTagError, match=f"required tag {missing}="):
        parse_signature(good(**{missing: None}))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"v": "2"}, "version"),
        ({"a": "rsa-md5"}, "unknown signing algorithm"),
        ({"c": "nowsp/simple"}, "unknown canonicalization"),
        ({"c": "relaxed/relaxed/simple"}, "bad c="),
        ({"h": "to:subject"}, "From field not signed"),  # §6.1.1
        ({"h": "from:to:"}, "bad header field name"),
        ({"h": "fr om:to"}, "bad header field name"),
        ({"i": "user@other.com"}, "domain mismatch"),  # §3.5 i= MUST be d= or a subdomain
        ({"i": "user@notexample.com"}, "domain mismatch"),
        ({"i": "no-at-sign"}, "no '@'"),
        ({"l": "12a"}, "l= is not a decimal"),
        ({"l": "1" * 77}, "more than 76 digits"),
        ({"t": "1" * 13}, "more than 12 digits"),
        ({"t": "200", "x": "100"}, "x= is not greater than t="),  # §3.5 x=
        ({"t": "200", "x": "200"}, "x= is not greater than t="),
        ({"q": "http/well-known"}, "no supported query method"),
        ({"d": "exa mple.com"}, "bad character|not a valid domain"),
        ({"d": "-bad-.com"}, "not a valid domain"),
        ({"d": "a" * 64 + ".com"}, "not a valid domain"),
        ({"s": "sel;"}, "empty tag-spec|not a valid domain"),
        ({"b": "!!!!"}, "b= is not valid base64"),
        ({"bh": "abc"}, "bh= is not valid base64"),
        ({"b": ""}, "b= is empty"),
    ],
)
def test_signature_errors(override: dict[str, str], message: str) -> None:
    with pytest.raises(DKIMTagError, match=message):
        parse_signature(good(**override))


def test_subdomain_identity_and_options() -> None:
    sig = parse_signature(good(i="joe@mail.Example.COM", c="relaxed", l="42", t="100",
                               x="200", q="dns/txt", z="From:foo"))
    assert sig.identity_domain == "mail.example.com"
    assert sig.identity == "joe@mail.Example.COM"
    # §3.5 c=: "If only one algorithm is named, that algorithm is used for the header and
    # "simple" is used for the body."
    assert (sig.header_canon, sig.body_canon) == ("relaxed", "simple")
    assert (sig.length, sig.timestamp, sig.expiration) == (42, 100, 200)


def test_domain_is_lowercased_and_compared_case_insensitively() -> None:
    sig = parse_signature(good(d="Example.COM", i="@example.com"))
    assert sig.domain == "example.com"


def test_giant_h_is_refused() -> None:
    names = ":".join(["from"] + ["x-h"] * DKIM_MAX_SIGNED_HEADERS)
    with pytest.raises(DKIMTagError, match="h= lists more than"):
        parse_signature(good(h=names))


def test_giant_field_is_refused() -> None:
    with pytest.raises(DKIMTagError, match="exceeds"):
        parse_signature(good(z="x" * DKIM_SIGNATURE_FIELD_MAX))


def test_b_value_removed_with_its_leading_fws() -> None:
    # §3.7: the signature field is hashed with the b= value "treated as the empty string"
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; b= AAAA\r\n BBBB; d=example.com; s=x;\r\n" \
          b" h=from; bh=" + BH.encode() + b"\r\n"
    sig = parse_signature(raw)
    assert sig.raw_without_b == (
        b"DKIM-Signature: v=1; a=rsa-sha256; b=; d=example.com; s=x;\r\n h=from; bh="
        + BH.encode()
    )
    assert sig.b_text == "AAAABBBB"


def test_bh_tag_is_not_mistaken_for_b() -> None:
    raw = good()
    sig = parse_signature(raw)
    assert b"bh=" + BH.encode() in sig.raw_without_b
    assert sig.raw_without_b.endswith(b"b=")


# --- §3.6.1 key records ---------------------------------------------------------------------


def _rsa_record(bits: int = 1024, extra: str = "") -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; {extra}p={base64.b64encode(der).decode()}".encode()


@pytest.fixture(scope="module")
def rsa1024() -> bytes:
    return _rsa_record(1024)


def test_rsa_record(rsa1024: bytes) -> None:
    rec = parse_key_record(rsa1024)
    assert rec.key_type == "rsa"  # §3.6.1 k= default
    assert rec.key_bits == 1024
    assert rec.hashes is None
    assert rec.services == frozenset({"*"})  # §3.6.1 s= default
    assert not rec.testing
    assert not rec.strict


def test_pkcs1_rsa_public_key_is_accepted() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.PKCS1)
    rec = parse_key_record(b"k=rsa; p=" + base64.b64encode(der))
    assert rec.key_bits == 1024


def test_flags_hashes_services(rsa1024: bytes) -> None:
    der = rsa1024.split(b"p=")[1]
    rec = parse_key_record(b"v=DKIM1; h=sha1 : sha256; s=email:x; t=y:s:q; n=note; p=" + der)
    assert rec.hashes == frozenset({"sha1", "sha256"})
    assert rec.services == frozenset({"email", "x"})
    assert rec.testing
    assert rec.strict


def test_revoked_key() -> None:
    # §3.6.1 p=: "An empty value means that this public key has been revoked."
    rec = parse_key_record(b"v=DKIM1; k=rsa; p=")
    assert rec.key is None


def test_ed25519_record() -> None:
    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    rec = parse_key_record(b"v=DKIM1; k=ed25519; p=" + base64.b64encode(pub))
    assert rec.key_type == "ed25519"
    assert isinstance(rec.key, ed25519.Ed25519PublicKey)


def _ec_der() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"k=rsa; v=DKIM1; p=", "v= is not the first tag"),  # §3.6.1 "MUST be the first tag"
        (b"v=DKIM2; p=", "unsupported key record version"),
        (b"v=DKIM1; k=dsa; p=", "unknown key type"),
        (b"v=DKIM1; k=rsa", "no p="),
        (b"v=DKIM1; p=AB*D", "not valid base64"),
        # keys that are not keys
        (b"v=DKIM1; p=" + base64.b64encode(b"not a key at all"), "not a valid RSA public key"),
        (b"v=DKIM1; p=" + base64.b64encode(b"\x30\x82\xff\xff" + b"\x00" * 40),
         "not a valid RSA public key"),
        (b"v=DKIM1; p=" + base64.b64encode(_ec_der()), "not an RSA public key"),
        (b"v=DKIM1; k=ed25519; p=" + base64.b64encode(b"\x01" * 31), "not 32"),
        (b"v=DKIM1; k=ed25519; p=" + base64.b64encode(_ec_der()), "not 32"),
        (b"v=DKIM1; p=" + b"A" * 9000, "exceeds"),
    ],
)
def test_bad_key_records(record: bytes, message: str) -> None:
    with pytest.raises(DKIMTagError, match=message):
        parse_key_record(record)


def test_oversized_rsa_key_is_refused_before_use() -> None:
    # a 16384-bit modulus: DER of ~2 KB; refused by size (limits.DKIM_RSA_MAX_BITS)
    n = (1 << 16383) | 1
    pub = rsa.RSAPublicNumbers(65537, n).public_key()
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(DKIMTagError, match=r"larger than|exceeds"):
        parse_key_record(b"p=" + base64.b64encode(der))
