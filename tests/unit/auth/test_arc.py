"""ARC validation and sealing (RFC 8617 §5.1, §5.2): chains built here, checked step by step.

Expected outcomes come from the RFC's rules (the step quoted on each test), not from our own
output; the conformance suite is in tests/vectors/test_arc_suite.py.
"""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailmoat.auth.arc import (
    ARCPolicy,
    ARCSigningError,
    ARCStatus,
    ARCValidation,
    ARCValidator,
    authres_results,
    seal,
    validate,
)
from mailmoat.auth.dkim import PrivateKey, key_record, split_message, txt_strings
from mailmoat.clock import FixedClock
from mailmoat.limits import ARC_MAX_BODY_HASHES, ARC_MAX_INSTANCES
from mailmoat.resolver.fake import FakeResolver

NOW = 1_700_000_000
CLOCK = FixedClock(wall=NOW)
MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: list@lists.example\r\n"
    b"Subject: hello\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Hello list.\r\n"
)


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def resolver(*entries: tuple[str, str, PrivateKey]) -> FakeResolver:
    fake = FakeResolver()
    for selector, domain, key in entries:
        fake.add_txt(f"{selector}._domainkey.{domain}", *txt_strings(key_record(key)))
    return fake


DNS = resolver(("arc", "lists.example", rsa_key()), ("ed", "fwd.example", ed_key()))


def check(message: bytes, dns: FakeResolver = DNS, **kw: object) -> ARCValidation:
    return asyncio.run(validate(message, dns, clock=CLOCK, **kw))  # type: ignore[arg-type]


def add_set(message: bytes, *, key: PrivateKey | None = None, selector: str = "arc",
            domain: str = "lists.example", dns: FakeResolver = DNS,
            results: tuple[str, ...] = ("spf=pass smtp.mailfrom=example.org",)) -> bytes:
    chain = check(message, dns)
    new = seal(message, chain, authserv_id=domain, results=results, domain=domain,
               selector=selector, private_key=key or rsa_key(), timestamp=NOW)
    assert new is not None
    return new.fields + message


def test_no_arc_fields_is_none() -> None:
    # §5.2 step 1: "If there are none, the Chain Validation Status is "none""
    outcome = check(MESSAGE)
    assert outcome.result is ARCStatus.NONE
    assert outcome.instance_count == 0


def test_one_set_passes_and_starts_with_cv_none() -> None:
    sealed = add_set(MESSAGE)
    assert b"ARC-Seal: a=rsa-sha256; b=" in sealed
    assert b"cv=none" in sealed.split(b"ARC-Message-Signature")[0]
    outcome = check(sealed)
    assert outcome.result is ARCStatus.PASS, outcome.reason
    assert outcome.instance_count == 1
    assert outcome.oldest_pass == 0
    (only,) = outcome.sets
    assert (only.instance, only.cv, only.authserv_id) == (1, "none", "lists.example")
    assert only.ams_valid
    assert only.as_valid


def test_three_hops_mixed_algorithms_pass() -> None:
    message = add_set(MESSAGE)
    message = add_set(message, key=ed_key(), selector="ed", domain="fwd.example")
    message = add_set(message)
    outcome = check(message)
    assert outcome.result is ARCStatus.PASS, outcome.reason
    assert [s.instance for s in outcome.sets] == [3, 2, 1]
    # §5.2 step 3: cv=none at i=1, pass above
    assert [s.cv for s in outcome.sets] == ["pass", "pass", "none"]


def test_streaming_validator_matches_whole_message() -> None:
    sealed = add_set(MESSAGE)
    header, body = split_message(sealed)
    validator = ARCValidator(header, clock=CLOCK)
    for i in range(0, len(body), 3):
        validator.update(body[i : i + 3])
    assert asyncio.run(validator.finish(DNS)).result is ARCStatus.PASS


def test_modified_body_after_first_hop_oldest_pass() -> None:
    # The list validates the chain (pass), rewrites the body, then seals: AMS(1) no longer
    # validates, the chain still passes (only the newest AMS is required, §5.2 step 4) and
    # oldest-pass is 2 (§5.2, the optional older-AMS step).
    first = add_set(MESSAGE)
    chain = check(first)
    assert chain.passed
    changed = first.replace(b"Hello list.", b"Hello list. [footer]")
    new = seal(changed, chain, authserv_id="lists.example", results=["arc=pass"],
               domain="lists.example", selector="arc", private_key=rsa_key(), timestamp=NOW)
    assert new is not None
    assert new.cv is ARCStatus.PASS
    second = new.fields + changed
    outcome = check(second)
    assert outcome.result is ARCStatus.PASS, outcome.reason
    assert outcome.oldest_pass == 2
    assert outcome.sets[1].ams_valid is False
    # without the optional older-AMS checks, oldest-pass is not computed
    assert check(second, policy=ARCPolicy(oldest_pass=False)).oldest_pass is None


def test_modified_body_after_last_hop_fails_at_newest_instance() -> None:
    sealed = add_set(add_set(MESSAGE)).replace(b"Hello list.", b"Hello world")
    outcome = check(sealed)
    # §5.2 step 4: the newest AMS must validate
    assert outcome.result is ARCStatus.FAIL
    assert outcome.failed_instance == 2
    assert "body hash" in outcome.reason


def test_tampered_aar_breaks_the_seal() -> None:
    sealed = add_set(MESSAGE).replace(b"spf=pass", b"spf=fail")
    outcome = check(sealed)
    # The AMS does not sign the AAR here, the AS does (§5.1.1): seal validation fails at i=1.
    assert outcome.result is ARCStatus.FAIL
    assert outcome.failed_instance == 1
    assert "ARC-Seal i=1" in outcome.reason


def test_missing_set_member_is_structural_failure() -> None:
    sealed = add_set(MESSAGE)
    header, body = split_message(sealed)
    lines = header.split(b"\r\n")
    without_aar = b"\r\n".join(x for x in lines
                               if not x.startswith(b"ARC-Authentication-Results")
                               and not x.startswith(b" spf=pass")) + body
    outcome = check(without_aar)
    assert outcome.result is ARCStatus.FAIL
    assert "ARC-Authentication-Results" in outcome.reason


def test_duplicate_seal_fails() -> None:
    sealed = add_set(MESSAGE)
    seal_field = sealed.split(b"ARC-Message-Signature")[0]
    outcome = check(seal_field + sealed)
    # §5.2 step 3: "exactly one of each of the three ARC header fields"
    assert outcome.result is ARCStatus.FAIL
    assert outcome.failed_instance == 1


def test_gap_in_instances_fails() -> None:
    two = add_set(add_set(MESSAGE))
    renumbered = two.replace(b"i=2", b"i=3", 3)
    outcome = check(renumbered)
    assert outcome.result is ARCStatus.FAIL
    assert "i=2 is missing" in outcome.reason


def test_newest_seal_reporting_fail_stops_and_is_not_resealed() -> None:
    # A chain that failed: the next sealer writes cv=fail covering only its own set (§5.1.2)
    broken = add_set(MESSAGE).replace(b"spf=pass", b"spf=fail")
    chain = check(broken)
    assert chain.result is ARCStatus.FAIL
    new = seal(broken, chain, authserv_id="fwd.example", results=["arc=fail"],
               domain="fwd.example", selector="ed", private_key=ed_key(), timestamp=NOW)
    assert new is not None
    assert new.cv is ARCStatus.FAIL
    assert new.instance == 2
    resealed = new.fields + broken
    outcome = check(resealed)
    # §5.2 step 2: the newest seal says cv=fail, so the chain is fail ...
    assert outcome.result is ARCStatus.FAIL
    assert outcome.highest_cv_fail
    # ... and §5.1 step 1: nothing more is added
    assert seal(resealed, outcome, authserv_id="x.example", results=[], domain="x.example",
                selector="s", private_key=ed_key(), timestamp=NOW) is None


def test_more_than_fifty_sets_fail_and_cannot_be_sealed() -> None:
    message = MESSAGE
    for _ in range(ARC_MAX_INSTANCES):
        message = add_set(message, key=ed_key(), selector="ed", domain="fwd.example")
    outcome = check(message)
    assert outcome.result is ARCStatus.PASS
    assert outcome.instance_count == ARC_MAX_INSTANCES
    # §5.2 step 1: more than 50 sets is fail; a 51st set is never made
    assert seal(message, outcome, authserv_id="a.example", results=[], domain="fwd.example",
                selector="ed", private_key=ed_key(), timestamp=NOW) is None
    too_many = message.replace(b"i=50", b"i=51")
    assert check(too_many).result is ARCStatus.FAIL


def test_small_rsa_key_in_dns_fails() -> None:
    # RFC 8301 §3.2: keys below 1024 bits are not valid (the signer refuses them too, so the
    # record is swapped for a 512-bit key after sealing)
    sealed = add_set(MESSAGE)
    # (cryptography will not generate a 512-bit key; any 512-bit modulus makes the record)
    small = rsa.RSAPublicNumbers(65537, (1 << 511) | 0xBC614F).public_key()
    dns = FakeResolver()
    dns.add_txt("arc._domainkey.lists.example", *txt_strings(key_record(small)))
    outcome = check(sealed, dns)
    assert outcome.result is ARCStatus.FAIL
    assert "below 1024" in outcome.reason


def test_missing_and_unavailable_keys_fail() -> None:
    sealed = add_set(MESSAGE)
    assert "no key" in check(sealed, FakeResolver()).reason
    dns = FakeResolver()
    dns.set_timeout("arc._domainkey.lists.example")
    outcome = check(sealed, dns)
    assert outcome.result is ARCStatus.FAIL
    assert "temporary" in outcome.reason


def test_expired_ams_fails() -> None:
    sealed = add_set(MESSAGE)
    future = FixedClock(wall=NOW - 10_000)  # t= lies in this clock's future
    outcome = asyncio.run(validate(sealed, DNS, clock=future))
    assert outcome.result is ARCStatus.FAIL
    assert "future" in outcome.reason
    relaxed = ARCPolicy(check_time=False)
    assert asyncio.run(validate(sealed, DNS, clock=future, policy=relaxed)).passed


def test_ams_signing_arc_seal_is_refused() -> None:
    chain = check(MESSAGE)
    with pytest.raises(ARCSigningError):
        seal(MESSAGE, chain, authserv_id="a.example", results=[], domain="a.example",
             selector="s", private_key=rsa_key(), headers=["From", "ARC-Seal"])


def test_bad_signer_inputs_are_refused() -> None:
    chain = check(MESSAGE)
    common = {"results": (), "selector": "s", "timestamp": NOW}
    with pytest.raises(ARCSigningError):
        seal(MESSAGE, chain, authserv_id="a.example", domain="bad domain",
             private_key=rsa_key(), **common)  # type: ignore[arg-type]
    with pytest.raises(ARCSigningError):
        seal(MESSAGE, chain, authserv_id="a; b", domain="a.example",
             private_key=rsa_key(), **common)  # type: ignore[arg-type]


def test_authres_consolidation_as_the_suite_readme_describes() -> None:
    # arc-test-suite README "AR Consolidation": the example and the AAR it yields
    header = (
        b"Authentication-Results: lists.example.org; arc=none;\r\n"
        b"  spf=pass smtp.mfrom=jqd@d1.example\r\n"
        b"Authentication-Results: lists.example.org; dkim=pass (1024-bit key) "
        b"header.i=@d1.example\r\n"
        b"Authentication-Results: lists.example.org; dmarc=pass\r\n"
        b"Authentication-Results: nobody.example.org; something=ignored\r\n"
        b"MIME-Version: 1.0\r\n\r\n"
    )
    assert authres_results(header, "lists.example.org") == (
        "arc=none",
        "spf=pass smtp.mfrom=jqd@d1.example",
        "dkim=pass (1024-bit key) header.i=@d1.example",
        "dmarc=pass",
    )


def test_aar_cannot_be_injected_into() -> None:
    sealed = add_set(MESSAGE, results=("spf=pass\r\nX-Injected: yes",))
    header, _ = split_message(sealed)
    assert b"\r\nX-Injected" not in header
    assert check(sealed).passed


@pytest.mark.parametrize("field", [
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=\r\n",  # b= empty
    b"ARC-Seal: i=x; a=rsa-sha256; cv=none; d=x.example; s=s; b=AAAA\r\n",  # bad instance
    b"ARC-Seal: i=0; a=rsa-sha256; cv=none; d=x.example; s=s; b=AAAA\r\n",
    b"ARC-Seal: a=rsa-sha256; cv=none; d=x.example; s=s; b=AAAA\r\n",
    b"ARC-Authentication-Results: x.example; i=1; spf=pass\r\n",
    b"ARC-Message-Signature: i=1; i=1; a=rsa-sha256\r\n",
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=A\xff\r\n",
])
def test_malformed_fields_fail_with_a_reason(field: bytes) -> None:
    outcome = check(field + MESSAGE)
    assert outcome.result is ARCStatus.FAIL
    assert outcome.reason


def test_many_fields_fail_fast() -> None:
    field = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=AAAA\r\n"
    start = time.perf_counter()
    outcome = check(field * (3 * ARC_MAX_INSTANCES + 1) + MESSAGE)
    assert outcome.result is ARCStatus.FAIL
    assert "more than" in outcome.reason
    assert time.perf_counter() - start < 1.0


def test_hostile_base64_is_linear() -> None:
    # a b= of 15,000 spaces and one bad octet: refused without quadratic backtracking
    field = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=A" + b" " * 15_000
    start = time.perf_counter()
    outcome = check(field + b"!\r\n" + MESSAGE)
    assert outcome.result is ARCStatus.FAIL
    assert time.perf_counter() - start < 1.0


def test_body_hashes_are_bounded() -> None:
    # 6 sets whose AMSs ask for 6 different l= body hashes: at most ARC_MAX_BODY_HASHES are
    # computed (the chain fails anyway: the signatures are garbage)
    sets = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=%s; d=x.example; s=s; b=AAAA\r\n"
        b"ARC-Message-Signature: i=%d; a=rsa-sha256; d=x.example; s=s; h=from; l=%d; "
        b"bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=%d; x.example; none\r\n"
        % (i, b"none" if i == 1 else b"pass", i, i, i)
        for i in range(6, 0, -1)
    )
    header, body = split_message(sets + MESSAGE)
    validator = ARCValidator(header, clock=CLOCK)
    assert len(validator._bodies) == ARC_MAX_BODY_HASHES
    validator.update(body)
    assert asyncio.run(validator.finish(DNS)).result is ARCStatus.FAIL


def test_long_header_list_is_folded_and_still_validates() -> None:
    names = ["From", "To", "Subject", "Date", "Message-ID"] + [f"X-Long-Header-Name-{i}"
                                                               for i in range(40)]
    chain = check(MESSAGE)
    new = seal(MESSAGE, chain, authserv_id="lists.example", results=["spf=pass"],
               domain="lists.example", selector="arc", private_key=rsa_key(), timestamp=NOW,
               headers=names)
    assert new is not None
    # RFC 5322 §2.1.1: no line over 998 octets (and h= lines within 78)
    assert all(len(line) <= 998 for line in new.message_signature.split(b"\r\n"))
    assert check(new.fields + MESSAGE).passed


# --- a header section without ARC fields is not split (ARCValidator's shortcut) ------------


@pytest.mark.parametrize("case", ["lower", "mixed", "obs-space"])
def test_arc_fields_in_any_case_are_still_found(case: str) -> None:
    # RFC 5322 §1.2.2: field names are case-insensitive; §4.5.8 allows WSP before the colon.
    sealed = add_set(MESSAGE)
    if case == "lower":
        sealed = sealed.replace(b"ARC-Seal:", b"arc-seal:")
    elif case == "mixed":
        sealed = sealed.replace(b"ARC-Message-Signature:", b"aRc-MeSsAgE-SiGnAtUrE:")
    else:
        sealed = sealed.replace(b"ARC-Authentication-Results:", b"ARC-Authentication-Results :")
    outcome = check(sealed)
    assert outcome.result is not ARCStatus.NONE
    assert outcome.instance_count == 1


def test_arc_text_outside_field_names_is_still_none() -> None:
    # "arc-" in a value (no ARC field): §5.2 step 1 "none", whichever way it is found.
    message = b"Subject: about ARC-Seal and arc-message-signature\r\n" + MESSAGE
    outcome = check(message)
    assert outcome.result is ARCStatus.NONE
    assert outcome.instance_count == 0


def test_too_many_fields_are_refused_without_arc_fields_too() -> None:
    # The splitter's bound (limits.MESSAGE_MAX_HEADER_FIELDS) holds whether or not the
    # section has ARC fields: the shortcut must not skip it.
    from mailmoat.errors import LimitExceeded
    from mailmoat.limits import MESSAGE_MAX_HEADER_FIELDS

    header = b"X-A: b\r\n" * (MESSAGE_MAX_HEADER_FIELDS + 1) + b"\r\n"
    with pytest.raises(LimitExceeded):
        ARCValidator(header, clock=CLOCK)
    just = b"X-A: b\r\n" * (MESSAGE_MAX_HEADER_FIELDS - 1) + b"\r\n"
    assert asyncio.run(ARCValidator(just, clock=CLOCK).finish(DNS)).result is ARCStatus.NONE
