"""Property tests of the SMTP client engine, against independent implementations:

* replies encoded by the server engine's ``Reply.to_bytes`` parse back to the same Reply;
* any message sent with DATA reaches the server engine as the input with its line endings
  canonicalised (the oracle is a one-line regular expression, not our normaliser), however
  the bytes are split on the way;
* random server bytes raise nothing but RemoteProtocolError.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.errors import RemoteProtocolError
from mailmoat.smtp.client import ClientConnection, CommandReply
from mailmoat.smtp.events import ConnectionClosed, MessageComplete, NeedData
from mailmoat.smtp.replies import Reply
from mailmoat.smtp.server import ServerConfig, ServerConnection

SETTINGS = settings(max_examples=200, deadline=None)

# Reply-code = %x32-35 %x30-35 %x30-39 (RFC 5321 §4.2)
codes = st.builds(lambda a, b, c: a * 100 + b * 10 + c, st.integers(2, 5), st.integers(0, 5), st.integers(0, 9))
text_lines = st.text(alphabet="\t" + "".join(chr(c) for c in range(32, 127)), max_size=60).filter(
    lambda t: not re.match(r"[245]\.\d", t)
)


def ready_client() -> ClientConnection:
    conn = ClientConnection()
    conn.receive_data(b"220 mx.example ESMTP\r\n")
    conn.ehlo("client.example")
    conn.receive_data(b"250-mx.example\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n")
    return conn


@SETTINGS
@given(
    code=codes.filter(lambda c: c // 100 != 3),
    lines=st.lists(text_lines, min_size=1, max_size=5),
    with_status=st.booleans(),
    detail=st.integers(0, 999),
)
def test_server_replies_parse_back(code: int, lines: list[str], with_status: bool, detail: int) -> None:
    status = f"{code // 100}.{detail % 8}.{detail}" if with_status else None
    reply = Reply(code=code, status=status, text="\n".join(lines))
    conn = ready_client()
    conn.noop()
    [event] = conn.receive_data(reply.to_bytes())
    assert isinstance(event, CommandReply)
    assert event.reply == reply


@SETTINGS
@given(st.binary(max_size=400))
def test_random_server_bytes_raise_only_remote_errors(data: bytes) -> None:
    conn = ClientConnection()
    try:
        conn.receive_data(data)
    except RemoteProtocolError:
        pass


lines = st.lists(
    st.tuples(
        st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"").replace(b"\r", b"").replace(b"\n", b"")),
        st.sampled_from([b"\r\n", b"\n", b"\r"]),
    ),
    max_size=30,
)


@SETTINGS
@given(
    parts=lines,
    tail=st.sampled_from([b"", b"no newline", b"."]),
    dots=st.booleans(),
    split=st.integers(1, 64),
)
def test_data_reaches_the_server_canonicalised(
    parts: list[tuple[bytes, bytes]], tail: bytes, dots: bool, split: int
) -> None:
    message = b"".join((b"." if dots else b"") + body + eol for body, eol in parts) + tail
    # Oracle: every CRLF, lone CR and lone LF is one line break (RFC 5321 §2.3.8), and the
    # content ends with a line break.
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"

    server = ServerConnection(ServerConfig(hostname="mx.example"))
    client = ClientConnection()
    received: list[bytes] = []

    def deliver(data: bytes) -> None:
        for i in range(0, len(data), split):
            server.receive_data(data[i : i + split])
        while True:
            event = server.next_event()
            if isinstance(event, NeedData | ConnectionClosed):
                break
            if isinstance(event, MessageComplete):
                received.append(event.data)
            if event.decision:
                server.accept()
        client.receive_data(server.data_to_send())

    server.greet()
    client.receive_data(server.data_to_send())
    deliver(client.ehlo("client.example"))
    deliver(client.mail("a@example.org") + client.rcpt("b@example.net") + client.data())
    deliver(client.send_message(message))
    assert received == [expected]
