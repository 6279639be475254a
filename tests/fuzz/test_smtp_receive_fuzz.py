"""Fuzz the SMTP server's receive path: random bytes and random command sequences.

CI runs the Hypothesis part briefly (a few seconds). By hand, with atheris installed::

    python tests/fuzz/test_smtp_receive_fuzz.py -atheris_runs=1000000

Invariants: no exception at all (nothing the peer sends can make the engine raise; the
engine settles within a bounded number of events), the unframed buffer stays
bounded, every reply on the wire is a well-formed reply line, and a message never appears
without a DATA/BDAT that was accepted.
"""

from __future__ import annotations

import re
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.limits import SMTP_AUTH_LINE_MAX
from mailmoat.smtp import (
    NEED_DATA,
    ConnectionClosed,
    DataStarted,
    MessageComplete,
    Reply,
    ServerConfig,
    ServerConnection,
)

REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][\x20-\x7e]*")
TOKENS = [
    b"EHLO a.example", b"HELO a.example", b"MAIL FROM:<a@b.example>", b"MAIL FROM:<>",
    b"RCPT TO:<c@d.example>", b"RCPT TO:<Postmaster>", b"DATA", b"BDAT 4", b"BDAT 0 LAST",
    b"BDAT 7 LAST", b"RSET", b"NOOP", b"QUIT", b"VRFY x", b"HELP", b"STARTTLS", b"AUTH PLAIN",
    b"AUTH LOGIN", b"AUTH PLAIN AHUAcA==", b"dXNlcg==", b"*", b".", b"..", b"", b"SIZE=5",
    b"\x00", b"\xff\xfe", b" SMTPUTF8", b" BODY=8BITMIME", b"x" * 1100,
    "MAIL FROM:<ä@exämple.org> SMTPUTF8 ÄB=ü".encode(), "RCPT TO:<ü@x..ä>".encode(),
    "EHLO ä".encode(), b" NOTIFY=\xc3\xa4", b" ORCPT=rfc822;\xc3\xa4",
]
SEPARATORS = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"", b" "]


def exercise(data: bytes, cuts: list[int], *, accept: bool = True, tls: bool = False) -> None:
    conn = ServerConnection(ServerConfig(
        hostname="mx.example", tls_available=True, tls_active=tls, require_tls_for_auth=False,
        max_errors=1_000_000, max_message_size=4096,
    ))
    conn.greet()
    starts = 0
    messages = 0
    budget = 8 * len(data) + 100
    pos = 0
    for cut in [*cuts, len(data), 0]:
        chunk = data[pos : pos + cut] if cut else b""
        pos += cut
        conn.receive_data(chunk)
        while True:
            budget -= 1
            assert budget > 0, "engine did not settle"
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, DataStarted):
                starts += 1
            if isinstance(event, MessageComplete):
                messages += 1
                assert messages <= starts
            if event.decision:
                if accept:
                    conn.accept()
                else:
                    conn.reject(Reply(code=451, status="4.3.0", text="later"))
        assert conn.buffered <= SMTP_AUTH_LINE_MAX + 8
        for line in conn.data_to_send().split(b"\r\n")[:-1]:
            assert REPLY_LINE.fullmatch(line), line
        if cut == 0:
            break


@given(st.binary(max_size=2000), st.lists(st.integers(1, 200), max_size=20), st.booleans(),
       st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes(data: bytes, cuts: list[int], accept: bool, tls: bool) -> None:
    exercise(data, cuts, accept=accept, tls=tls)


@given(
    st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(SEPARATORS)), max_size=60),
    st.lists(st.integers(1, 64), max_size=20),
    st.booleans(),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_command_sequences(parts: list[tuple[bytes, bytes]], cuts: list[int],
                                  accept: bool) -> None:
    exercise(b"".join(tok + sep for tok, sep in parts), cuts, accept=accept)


def _atheris_main() -> None:  # pragma: no cover - run by hand
    import atheris

    def one(buf: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(buf)
        cuts = [fdp.ConsumeIntInRange(1, 256) for _ in range(fdp.ConsumeIntInRange(0, 8))]
        exercise(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts)

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    _atheris_main()
