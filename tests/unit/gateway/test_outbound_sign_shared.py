"""SubmissionSigner after the one-split / shared-signing rework: the output is the message
(repaired, Bcc removed, Date and Message-ID added) with the same DKIM-Signature fields a
plain per-key :func:`mailmoat.auth.dkim.sign` call gives, verified by dkimpy too; the header
checks read the same fields as before; small messages are prepared in the loop's thread.

Expected messages are written out by hand here (the fields we add at the end of the header
section, RFC 6409 §8.2, §8.3); the signatures are compared with ``sign`` of the expected
message (itself compared with a reference signer in tests/unit/auth/test_dkim_sign_reference.py)
and checked by dkimpy, an independent verifier.
"""

from __future__ import annotations

import asyncio
import threading

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.auth.dkim import key_record, sign
from mailmoat.clock import SYSTEM_CLOCK, FixedClock
from mailmoat.errors import LimitExceeded
from mailmoat.gateway.outbound_sign import (
    _PLAIN_MAILBOX,
    FROM_NOT_ALLOWED,
    FROM_UNREADABLE,
    SubmissionSigner,
    _mailbox_list,
    from_addresses,
)
from mailmoat.gateway.submit_api import DKIMKey
from mailmoat.gateway.users import User
from mailmoat.limits import MESSAGE_HEADER_MAX

pytestmark = pytest.mark.timeout(60)

NOW = 1_790_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
KEYS = (DKIMKey(domain="example.org", selector="rsa1", key=RSA_KEY),
        DKIMKey(domain="example.org", selector="ed1", key=ED_KEY))
USER = User(name="alice", password_hash="", addresses=("alice@example.org",))
HEAD = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n"
        b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <a@example.org>\r\n")
MSG = HEAD + b"\r\nHello Bob.\r\n" + b"x" * 3000 + b"\r\n"
#: NOW as RFC 5322 §3.3 says (checked: datetime.fromtimestamp(NOW, UTC).strftime)
ADDED = (b"Date: Mon, 21 Sep 2026 14:13:20 +0000\r\n"
         b"Message-ID: <01010101010101010101010101010101@mx.example.org>\r\n")


def lookup(name: bytes, timeout: int = 5) -> bytes:
    return key_record(ED_KEY if name.startswith(b"ed1.") else RSA_KEY).encode()


def signer(clock: object = None, **kw: object) -> SubmissionSigner:
    return SubmissionSigner(keys=KEYS, hostname="mx.example.org",
                            clock=clock or FixedClock(wall=NOW),  # type: ignore[arg-type]
                            randbytes=lambda n: b"\x01" * n, **kw)  # type: ignore[arg-type]


def expected(message: bytes, t: int = int(NOW)) -> bytes:
    """Ed25519 on top, then RSA (RFC 8463 §5), each over ``message`` alone."""
    return (sign(message, "example.org", "ed1", ED_KEY, timestamp=t)
            + sign(message, "example.org", "rsa1", RSA_KEY, timestamp=t) + message)


CASES = {
    "complete": (MSG, MSG),
    "no Date, no Message-ID": (
        MSG.replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n", b"")
        .replace(b"Message-ID: <a@example.org>\r\n", b""),
        HEAD.replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n", b"")
        .replace(b"Message-ID: <a@example.org>\r\n", b"") + ADDED
        + b"\r\nHello Bob.\r\n" + b"x" * 3000 + b"\r\n"),
    "header only, no Date": (
        HEAD.replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n", b""),
        HEAD.replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n", b"") + ADDED[:39] + b"\r\n"),
    "bare LF": (MSG.replace(b"\r\n", b"\n"), MSG),
    "folded To, Cc twice is a refusal elsewhere; Resent-Bcc dropped": (
        MSG.replace(b"To: bob@example.net\r\n",
                    b"To: bob@example.net,\r\n\tcarol@example.net\r\nResent-Bcc: r@x\r\n"),
        MSG.replace(b"To: bob@example.net\r\n", b"To: bob@example.net,\r\n\tcarol@example.net\r\n")),
}


@pytest.mark.parametrize(("message", "result"), CASES.values(), ids=CASES.keys())
def test_output_is_the_repaired_message_signed_per_key(message: bytes, result: bytes) -> None:
    out = signer().prepare_sync(message, user=USER)
    assert out.ok
    assert out.message == expected(result)
    assert out.signatures == ("d=example.org s=ed1 a=ed25519-sha256",
                              "d=example.org s=rsa1 a=rsa-sha256")
    # the same signer again (its memos warm): the same octets
    assert signer().prepare_sync(message, user=USER).message == out.message


def test_dkimpy_verifies_both_signatures() -> None:
    for message, _ in CASES.values():
        out = signer(SYSTEM_CLOCK).prepare_sync(message, user=USER)  # (dkimpy checks t=)
        d = dkim.DKIM(out.message)
        assert d.verify(idx=0, dnsfunc=lookup)
        assert d.verify(idx=1, dnsfunc=lookup)


def test_bcc_bytes_inside_another_field_do_not_hide_the_bcc() -> None:
    """The Bcc field is removed by position: its octets also ending an X-Bcc field above
    must not make the removal cut that field instead (the blind copy would leak)."""
    message = HEAD.replace(b"Subject: hi\r\n", b"Subject: hi\r\nX-Bcc: eve@x.example\r\n"
                           b"X-Other: 1\r\nBcc: eve@x.example\r\n") + b"\r\nbody\r\n"
    out = signer().prepare_sync(message, user=USER)
    assert out.ok
    assert "Bcc removed" in out.repairs
    kept = HEAD.replace(b"Subject: hi\r\n", b"Subject: hi\r\nX-Bcc: eve@x.example\r\n"
                        b"X-Other: 1\r\n") + b"\r\nbody\r\n"
    assert out.message == expected(kept)


def test_bcc_is_removed_from_a_header_only_message() -> None:
    out = signer().prepare_sync(HEAD + b"Bcc: eve@x.example\r\n", user=USER)
    assert out.ok
    assert "Bcc removed" in out.repairs
    assert out.message == expected(HEAD)
    assert b"eve@" not in out.message


@pytest.mark.parametrize(("header", "reply"), [
    (b"From: alice@example.org\r\nFrom: alice@example.org\r\n", FROM_UNREADABLE),
    (b"Sender: alice@example.org, bob@example.org\r\n", FROM_UNREADABLE),
    (b"Sender : eve@example.org\r\n", FROM_NOT_ALLOWED),  # obs WSP before the colon
    (b"FROM: eve@example.org\r\n", FROM_UNREADABLE),  # names are case-insensitive: 2 From
])
def test_checks_read_every_field(header: bytes, reply: object) -> None:
    out = signer().prepare_sync(HEAD + header + b"\r\nx\r\n", user=USER)
    assert out.reply == reply
    assert out.signatures == ()


def test_a_line_without_colon_or_a_leading_continuation_names_no_field() -> None:
    message = b" From: eve@example.org\r\n" + HEAD + b"Not a field\r\n\r\nx\r\n"
    out = signer().prepare_sync(message, user=USER)
    assert out.ok  # the only From is Alice's
    assert out.message == expected(message)


def test_header_grown_past_the_limit_by_added_fields_is_refused() -> None:
    filler = b"X-F: " + b"a" * 900 + b"\r\n"
    head = HEAD.replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n", b"")
    while len(head) + len(filler) + 2 <= MESSAGE_HEADER_MAX:
        head += filler
    head += b"X-Pad: " + b"b" * (MESSAGE_HEADER_MAX - len(head) - 2 - 9) + b"\r\n"
    assert len(head) + 2 == MESSAGE_HEADER_MAX
    with pytest.raises(LimitExceeded):
        signer().prepare_sync(head + b"\r\nx\r\n", user=USER)


def test_small_messages_are_prepared_in_the_loop_thread_large_in_a_worker() -> None:
    threads: list[int] = []

    class Probe(SubmissionSigner):
        def prepare_sync(self, message: bytes, *, user: User | None):  # type: ignore[no-untyped-def]
            threads.append(threading.get_ident())
            return super().prepare_sync(message, user=user)

    probe = Probe(keys=KEYS, hostname="mx.example.org", clock=FixedClock(wall=NOW),
                  randbytes=lambda n: b"\x01" * n, inline_max=len(MSG))

    async def main() -> int:
        small = await probe.prepare(MSG, user=USER)
        large = await probe.prepare(MSG + b"y\r\n", user=USER)
        assert small.ok
        assert large.ok
        assert small.message == expected(MSG)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread


def test_a_first_from_field_with_space_before_the_colon_is_a_from_field() -> None:
    """``From :`` (RFC 5322 §4.5.8 obsolete syntax) on the first line is a From field, as DKIM
    signers and verifiers read it, not an mbox separator line: with Alice's From below it, the
    message has two From fields and is refused (it was once skipped by the check while the
    signature still covered it: eve's address shown, alice's login checked)."""
    out = signer().prepare_sync(b"From : eve@example.org\r\n" + MSG, user=USER)
    assert out.reply == FROM_UNREADABLE
    out = signer().prepare_sync(b"From : eve@example.org\r\n" + MSG.replace(
        b"From: Alice <alice@example.org>\r\n", b""), user=USER)
    assert out.reply == FROM_NOT_ALLOWED


_PIECES = st.sampled_from([b"a", b"Bob", b"x.y", b"!#$%&'*+/=?^_`{|}~-", b"@", b".", b" ", b"\t",
                           b"<", b">", b",", b";", b":", b"\"", b"(", b")", b"[", b"]", b"\\",
                           b"\r\n ", b"\xc3\xa9", b"ex-ample.org", b"alice@example.org"])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=12).map(b"".join))
def test_plain_mailbox_fast_path_reads_as_the_tokenizer(value: bytes) -> None:
    """Whatever the one-match pattern accepts, the RFC 5322 tokenizer reads the same way."""
    assert from_addresses(value) == _mailbox_list(value)


@pytest.mark.parametrize("value", [
    b" Alice Example <alice@example.org>", b"alice@example.org", b"<a.b@c-d.example>",
    b"A!b <x@y.z>\t",
])
def test_plain_mailbox_fast_path_takes_the_usual_forms(value: bytes) -> None:
    assert _PLAIN_MAILBOX.fullmatch(value) is not None
    assert from_addresses(value) == _mailbox_list(value)
    assert from_addresses(value) is not None


@pytest.mark.timeout(10)
def test_plain_mailbox_pattern_is_linear() -> None:
    for value in (b"a " * 40_000 + b"!", b"a" * 80_000 + b"<", b"a." * 40_000 + b"@",
                  b"<" + b"a." * 40_000 + b"@b" + b".c" * 40_000):
        assert _PLAIN_MAILBOX.fullmatch(value) is None
