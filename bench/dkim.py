"""DKIM sign/verify throughput: mailmoat vs dkimpy vs a bare ``cryptography`` floor.

    python -m bench.dkim [--seconds 2]

One realistic ~10 KB multipart message (17 header fields, folded Received chain, a text and an
HTML part), relaxed/relaxed. For rsa-sha256 (2048-bit) and ed25519-sha256:

* **ours**: :func:`mailmoat.auth.dkim.sign` / :func:`mailmoat.auth.dkim.verify` (whole message:
  header parsing, canonicalisation, key record parse through the fake resolver, crypto);
* **dkimpy**: ``dkim.sign`` / ``dkim.verify`` with a ``dnsfunc`` (pure-Python RSA);
* **bare**: the machine's floor for the same work - SHA-256 of the pre-canonicalised body plus
  ``cryptography`` sign/verify of the pre-built header hash input (no parsing at all).

Each row runs for ``--seconds`` of CPU time (``time.process_time()``: rates are per CPU-second,
so other load on the machine does not skew the ratios; bounded also by an iteration cap and by
a wall-clock cap of 4x ``--seconds`` per row), single-threaded. Targets
(issue #5): >= 15x dkimpy signing, >= 3.5x dkimpy verifying, >= 0.8x bare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailmoat.auth.dkim import key_record, sign, verify
from mailmoat.auth.dkim._fields import split_fields, split_message
from mailmoat.auth.dkim._tags import parse_signature
from mailmoat.auth.dkim._verify import header_hash_input, index_fields
from mailmoat.clock import FixedClock
from mailmoat.message.dkim_canon import canonicalize_body
from mailmoat.resolver.fake import FakeResolver

DOMAIN, SELECTOR = "example.com", "bench"
NOW = 1_700_000_000
MAX_ITERATIONS = 200_000


def build_message() -> bytes:
    text = (
        "Hello team,\r\n\r\nPlease find the quarterly figures below.  Revenue grew in every "
        "region,\t and the numbers are attached.   \r\n"
    ) * 34
    html = (
        "<p>Hello team,</p><p>Please find the <b>quarterly figures</b> below. Revenue grew in "
        "every region.</p>\r\n"
    ) * 45
    headers = [
        "Received: from mail.sender.example (mail.sender.example [192.0.2.10])\r\n"
        "\tby mx.example.com (Postfix) with ESMTPS id 4ABC123\r\n"
        "\tfor <team@example.com>; Mon, 13 Nov 2023 22:13:20 +0000 (UTC)",
        "Received: from [10.0.0.5] (unknown [198.51.100.7])\r\n"
        "\tby mail.sender.example (Postfix) with ESMTPSA id 1DEF456;\r\n"
        "\tMon, 13 Nov 2023 22:13:19 +0000 (UTC)",
        "Return-Path: <alice@example.com>",
        "Message-ID: <20231113221319.12345@example.com>",
        "Date: Mon, 13 Nov 2023 22:13:19 +0000",
        "From: Alice Example <alice@example.com>",
        "To: Team <team@example.com>, Bob <bob@example.net>",
        "Cc: carol@example.org",
        "Subject: Quarterly figures and the plan\r\n for next quarter",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="b1_5f2a"',
        "X-Mailer: Bench 1.0",
        "List-Id: <team.example.com>",
        "Reply-To: alice@example.com",
        "In-Reply-To: <prev@example.com>",
        "References: <prev@example.com>",
        "X-Priority: 3",
    ]
    body = (
        "--b1_5f2a\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n--b1_5f2a\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b1_5f2a--\r\n"
    )
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm up (caches, imports)
    n = 0
    start = time.process_time()
    deadline = start + seconds
    wall_deadline = time.monotonic() + 4 * seconds
    while n < MAX_ITERATIONS:
        fn()
        n += 1
        if (n & 7) == 0 and (
            time.process_time() >= deadline or time.monotonic() >= wall_deadline
        ):
            break
    return n / (time.process_time() - start)


def async_rate(make: Callable[[], object], seconds: float) -> float:
    async def loop() -> float:
        await make()  # type: ignore[misc]
        n = 0
        start = time.process_time()
        deadline = start + seconds
        wall_deadline = time.monotonic() + 4 * seconds
        while n < MAX_ITERATIONS:
            await make()  # type: ignore[misc]
            n += 1
            if (n & 7) == 0 and (
                time.process_time() >= deadline or time.monotonic() >= wall_deadline
            ):
                break
        return n / (time.process_time() - start)

    return asyncio.run(loop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    seconds = args.seconds
    try:
        import dkim  # test-only oracle
    except ImportError:
        dkim = None

    message = build_message()
    header, body = split_message(message)
    clock = FixedClock(wall=NOW + 60)
    print(f"message: {len(message)} octets, relaxed/relaxed, {seconds:.1f} s per row\n")
    rows = []
    for algorithm in ("rsa-sha256", "ed25519-sha256"):
        if algorithm == "rsa-sha256":
            key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
            theirs = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            theirs = base64.b64encode(
                key.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                )
            )
        record = key_record(key)
        resolver = FakeResolver()
        resolver.add_txt(f"{SELECTOR}._domainkey.{DOMAIN}", record)
        field = sign(message, DOMAIN, SELECTOR, key, timestamp=NOW)
        signed = field + message

        # the bare floor: the same hashes, pre-built inputs
        canon_body = canonicalize_body("relaxed", body)
        sig = parse_signature(field)
        data = header_hash_input(index_fields(split_fields(header)), sig)
        public = key.public_key()

        def bare_sign(k=key, d=data, cb=canon_body) -> None:  # type: ignore[no-untyped-def]
            hashlib.sha256(cb).digest()
            if isinstance(k, rsa.RSAPrivateKey):
                k.sign(d, padding.PKCS1v15(), hashes.SHA256())
            else:
                k.sign(hashlib.sha256(d).digest())

        def bare_verify(p=public, d=data, cb=canon_body, s=sig) -> None:  # type: ignore[no-untyped-def]
            assert hashlib.sha256(cb).digest() == s.body_hash
            if isinstance(p, rsa.RSAPublicKey):
                p.verify(s.signature, d, padding.PKCS1v15(), hashes.SHA256())
            else:
                p.verify(s.signature, hashlib.sha256(d).digest())

        ours_sign = rate(lambda k=key: sign(message, DOMAIN, SELECTOR, k, timestamp=NOW), seconds)  # type: ignore[misc]
        ours_verify = async_rate(
            lambda s=signed, r=resolver: verify(s, r, clock=clock), seconds  # type: ignore[misc]
        )
        bare_s = rate(bare_sign, seconds)
        bare_v = rate(bare_verify, seconds)
        peer_s = peer_v = float("nan")
        if dkim is not None:
            rec = record.encode()
            peer_signed = (
                dkim.sign(message, SELECTOR.encode(), DOMAIN.encode(), theirs,
                          canonicalize=(b"relaxed", b"relaxed"),
                          signature_algorithm=algorithm.encode())
                + message
            )

            def dnsfunc(name: bytes, timeout: int = 5, r: bytes = rec) -> bytes:
                return r

            assert dkim.verify(signed, dnsfunc=dnsfunc), "dkimpy must verify our signature"
            peer_s = rate(
                lambda t=theirs, a=algorithm: dkim.sign(  # type: ignore[misc]
                    message, SELECTOR.encode(), DOMAIN.encode(), t,
                    canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=a.encode()),
                seconds,
            )
            peer_v = rate(lambda s=peer_signed, f=dnsfunc: dkim.verify(s, dnsfunc=f), seconds)  # type: ignore[misc]
        rows.append((algorithm, "sign", ours_sign, peer_s, bare_s))
        rows.append((algorithm, "verify", ours_verify, peer_v, bare_v))

    head = f"{'algorithm':<16}{'op':<8}{'ours/s':>10}{'dkimpy/s':>10}{'bare/s':>10}"
    head += f"{'ours/dkimpy':>13}{'ours/bare':>11}  target"
    print(head)
    print("-" * len(head))
    for algorithm, op, ours, peer, bare in rows:
        target = "15x dkimpy, 0.8x bare" if op == "sign" else "3.5x dkimpy, 0.8x bare"
        print(
            f"{algorithm:<16}{op:<8}{ours:>10,.0f}{peer:>10,.0f}{bare:>10,.0f}"
            f"{ours / peer:>12.1f}x{ours / bare:>10.2f}x  {target}"
        )


if __name__ == "__main__":
    main()
