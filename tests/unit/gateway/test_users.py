"""gateway.users: scrypt hashes (RFC 7914 vectors), SASLprep (RFC 4013 examples), allowed
addresses, the users file, token-bucket rate limits and the Authenticator."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from mailmoat.clock import FixedClock
from mailmoat.errors import ConfigError
from mailmoat.gateway.users import (
    Authenticator,
    AuthRateLimiter,
    TokenBucket,
    User,
    UserDB,
    address_allowed,
    hash_password,
    ip_key,
    make_user,
    normalize_address_pattern,
    saslprep,
    verify_password,
)

# RFC 7914 §12, second and third test vectors.
RFC7914_NACL = bytes.fromhex(
    "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
    "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
)
RFC7914_SODIUM = bytes.fromhex(
    "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
    "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


# --- hashes -------------------------------------------------------------------------------


def test_hash_matches_rfc7914_vector() -> None:
    # N=16384 (ln=14), r=8, p=1 are our parameters; dkLen 32 is the prefix of the 64 (PBKDF2).
    encoded = hash_password("pleaseletmein", salt=b"SodiumChloride")
    assert encoded == f"$scrypt$ln=14,r=8,p=1${b64(b'SodiumChloride')}${b64(RFC7914_SODIUM[:32])}"


def test_verify_rfc7914_vector_other_params() -> None:
    encoded = f"$scrypt$ln=10,r=8,p=16${b64(b'NaCl')}${b64(RFC7914_NACL)}"
    assert verify_password("password", encoded)
    assert verify_password(b"password", encoded)
    assert not verify_password("Password", encoded)


def test_roundtrip_and_fresh_salt() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one != two  # 16-byte random salt
    assert len(base64.b64decode(one.split("$")[3] + "==")) == 16
    assert verify_password("correct horse", one)
    assert not verify_password("correct hors", one)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "$scrypt$ln=14,r=8,p=1$c2FsdA$",
        "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # 2^40: refused, not run
        "$scrypt$ln=14,r=8,p=1$c2Fs*A$aGFzaGhhc2hoYXNoaGFzaA",
        "$2b$12$abcdefghijklmnopqrstuv",
    ],
)
def test_verify_bad_encodings_are_false(encoded: str) -> None:
    assert verify_password("x", encoded) is False


def test_empty_password_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("\u00ad")  # maps to nothing under SASLprep


# --- SASLprep, RFC 4013 §3 examples --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX"),
     ("a\u00a0b", "a b")],
)
def test_saslprep_examples(text: str, expected: str) -> None:
    assert saslprep(text) == expected


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031"])
def test_saslprep_errors(text: str) -> None:
    with pytest.raises(ValueError):
        saslprep(text)


def test_password_verifies_across_normalisation() -> None:
    encoded = hash_password("caf\u00e9")  # precomposed é
    assert verify_password("cafe\u0301", encoded)  # e + combining acute: same after NFKC


# --- addresses ----------------------------------------------------------------------------


def test_address_patterns() -> None:
    patterns = [normalize_address_pattern(p) for p in
                ["Alice@Example.ORG", "*@team.example", "<bob@bücher.example>"]]
    assert patterns == ["alice@example.org", "*@team.example", "bob@xn--bcher-kva.example"]
    assert address_allowed("alice@example.org", patterns)
    assert address_allowed("ALICE@EXAMPLE.org", patterns)
    assert address_allowed("anyone@team.example", patterns)
    assert address_allowed("bob@BÜCHER.example", patterns)
    assert not address_allowed("alice@sub.example.org", patterns)
    assert not address_allowed("anyone@sub.team.example", patterns)
    assert not address_allowed("mallory@example.org", patterns)
    assert not address_allowed("alice@example.org.evil", patterns)
    assert not address_allowed('"alice@example.org"@evil.example', patterns)
    assert not address_allowed("alice%evil.example@example.com", patterns)
    assert not address_allowed("", patterns)  # <> needs an explicit entry
    assert address_allowed("", ["<>"])
    assert not address_allowed("junk", patterns)


@pytest.mark.parametrize("bad", ["a*@example.org", "*@*.example.org", "*", "@example.org", "x@"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_address_pattern(bad)


# --- users file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice() -> User:
    return make_user("alice", "s3cret pass", ["alice@example.org", "*@alice.example"])


def test_users_file_roundtrip(tmp_path: Path, alice: User) -> None:
    file = tmp_path / "sub" / "users.jsonl"
    db = UserDB().with_user(alice)
    db.save(file)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    loaded = UserDB.load(file)
    assert loaded == db
    assert loaded.get("alice") == alice
    assert loaded.get("bob") is None
    assert len(loaded.without("alice")) == 0
    with pytest.raises(KeyError):
        loaded.without("bob")
    assert len(list(tmp_path.joinpath("sub").iterdir())) == 1  # no temporary file left


def test_users_file_missing(tmp_path: Path) -> None:
    assert len(UserDB.load(tmp_path / "none")) == 0
    with pytest.raises(ConfigError, match="does not exist"):
        UserDB.load(tmp_path / "none", missing_ok=False)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{", "not a JSON object"),
        ('["alice"]', "expected keys"),
        ('{"user": "a", "hash": "x", "extra": 1}', "expected keys"),
        ('{"user": 1, "hash": "x"}', "must be strings"),
        ('{"user": "a b", "hash": "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA"}', "user name"),
        ('{"user": "a", "hash": "md5"}', "scrypt"),
        ('{"user": "a", "hash": "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "addresses": "a@b"}', "list"),
        ('{"user": "a", "hash": "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "addresses": ["a*@b"]}', "only"),
    ],
)
def test_users_file_errors_name_the_line(line: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        UserDB.parse("# comment\n\n" + line + "\n", source="users.jsonl")
    assert info.value.key == "users.jsonl:3"
    assert fragment in str(info.value)


def test_users_file_duplicate(alice: User) -> None:
    with pytest.raises(ConfigError, match="twice"):
        UserDB.parse(alice.to_json() + "\n" + alice.to_json() + "\n")


# --- rate limiting ------------------------------------------------------------------------


def test_token_bucket() -> None:
    clock = FixedClock()
    bucket = TokenBucket(burst=3, refill=0.5, clock=clock)
    for _ in range(3):
        assert bucket.retry_after("k") == 0
        bucket.take("k")
    assert bucket.retry_after("k") == pytest.approx(2.0)  # one token at 0.5/s
    assert bucket.retry_after("other") == 0
    clock.advance(1.0)
    assert bucket.retry_after("k") == pytest.approx(1.0)
    clock.advance(1.0)
    assert bucket.retry_after("k") == 0
    bucket.take("k")
    assert bucket.retry_after("k") == pytest.approx(2.0)
    clock.advance(100)
    for _ in range(3):  # refills only up to the burst
        bucket.take("k")
    assert bucket.retry_after("k") > 0


def test_token_bucket_bounded() -> None:
    bucket = TokenBucket(burst=1, refill=1, clock=FixedClock(), max_keys=10)
    for i in range(100):
        bucket.take(f"k{i}")
    assert len(bucket) == 10
    assert bucket.retry_after("k99") > 0
    assert bucket.retry_after("k0") == 0  # forgotten: full again


def test_ip_key() -> None:
    assert ip_key("192.0.2.7") == "192.0.2.7"
    assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("::ffff:192.0.2.7") == "192.0.2.7"


# --- Authenticator -------------------------------------------------------------------------


def make_auth(alice: User, clock: FixedClock, **kw: int | float) -> Authenticator:
    limiter = AuthRateLimiter(clock=clock, **kw)  # type: ignore[arg-type]
    return Authenticator(UserDB().with_user(alice), limiter=limiter, clock=clock)


def test_authenticate_ok_and_bad(alice: User) -> None:
    auth = make_auth(alice, FixedClock())
    ok = auth.check("alice", "s3cret pass", ip="192.0.2.1")
    assert ok.ok
    assert ok.user == alice
    assert ok.user.may_send_as("alice@example.org")
    assert not ok.user.may_send_as("bob@example.org")
    assert auth.check(b"alice", b"s3cret pass", ip="192.0.2.1").ok
    assert auth.check("alice", "wrong", ip="192.0.2.1").reason == "invalid-credentials"
    assert auth.check("nobody", "s3cret pass", ip="192.0.2.1").reason == "invalid-credentials"
    assert auth.check(b"\xff", "x", ip="192.0.2.1").reason == "malformed"
    assert auth.check("alice", "x" * 256, ip="192.0.2.1").reason == "malformed"
    assert auth.check("alice", b"s3cret pass\xff", ip="192.0.2.1").reason == "invalid-credentials"


def test_rate_limit_per_ip(alice: User) -> None:
    clock = FixedClock()
    auth = make_auth(alice, clock, ip_burst=2, ip_refill=0.1, user_burst=100)
    assert auth.check("alice", "bad", ip="192.0.2.1").reason == "invalid-credentials"
    assert auth.check("nobody", "bad", ip="192.0.2.1").reason == "invalid-credentials"
    limited = auth.check("alice", "s3cret pass", ip="192.0.2.1")  # even the right password
    assert limited.reason == "rate-limited"
    assert limited.retry_after == pytest.approx(10.0)
    assert auth.check("alice", "s3cret pass", ip="192.0.2.2").ok  # another IP
    clock.advance(10)
    assert auth.check("alice", "s3cret pass", ip="192.0.2.1").ok


def test_rate_limit_per_user(alice: User) -> None:
    clock = FixedClock()
    auth = make_auth(alice, clock, ip_burst=100, user_burst=2, user_refill=0.5)
    auth.check("alice", "bad", ip="192.0.2.1")
    auth.check("alice", "bad", ip="198.51.100.1")
    limited = auth.check("alice", "s3cret pass", ip="203.0.113.1")
    assert limited.reason == "rate-limited"
    assert limited.retry_after == pytest.approx(2.0)
    assert auth.check("nobody", "x", ip="203.0.113.1").reason == "invalid-credentials"
    clock.advance(2)
    assert auth.check("alice", "s3cret pass", ip="203.0.113.1").ok


def test_rate_limit_ipv6_prefix(alice: User) -> None:
    auth = make_auth(alice, FixedClock(), ip_burst=1, user_burst=100)
    auth.check("alice", "bad", ip="2001:db8::1")
    assert auth.check("alice", "s3cret pass", ip="2001:db8::ffff").reason == "rate-limited"
    assert auth.check("alice", "s3cret pass", ip="2001:db8:0:1::1").ok


async def test_authenticate_async(alice: User) -> None:
    auth = make_auth(alice, FixedClock())
    assert (await auth.authenticate("alice", "s3cret pass", ip="192.0.2.1")).ok
    assert (await auth.authenticate("nobody", "x", ip="192.0.2.1")).reason == "invalid-credentials"
    assert (await auth.authenticate("alice", "x", ip="192.0.2.1")).reason == "invalid-credentials"
