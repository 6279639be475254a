"""The transition table: spot checks against RFC 5321 / 3030 / 3207 / 4954 sequencing."""

from __future__ import annotations

import pytest

from mailmoat.smtp.replies import Replies
from mailmoat.smtp.state import (
    COMMAND_INPUTS,
    COMMAND_STATES,
    TABLE,
    Go,
    Impossible,
    Input,
    Refuse,
    State,
    rule,
)


def test_table_is_total() -> None:
    assert set(TABLE) == {(s, i) for s in State for i in Input}


@pytest.mark.parametrize(
    ("state", "inp", "expected"),
    [
        (State.GREETING_PENDING, Input.GREET, Go(target=State.CONNECTED)),
        (State.GREETING_PENDING, Input.PEER_BYTES_EARLY,
         Refuse(reply=Replies.EARLY_TALKER, close=True)),
        (State.CONNECTED, Input.MAIL, Refuse(reply=Replies.NEED_EHLO)),
        (State.READY, Input.MAIL, Go(target=State.MAIL)),
        (State.READY, Input.RCPT, Refuse(reply=Replies.NEED_MAIL)),
        (State.MAIL, Input.DATA, Refuse(reply=Replies.NO_VALID_RECIPIENTS)),
        (State.RCPT, Input.DATA, Go(target=State.DATA)),
        (State.RCPT, Input.BDAT, Go(target=State.BDAT)),
        (State.BDAT, Input.DATA, Refuse(reply=Replies.BDAT_IN_PROGRESS)),
        (State.MAIL, Input.AUTH, Refuse(reply=Replies.AUTH_IN_TRANSACTION)),
        (State.READY, Input.STARTTLS, Go(target=State.STARTTLS_PENDING)),
        (State.STARTTLS_PENDING, Input.TLS_ESTABLISHED, Go(target=State.CONNECTED)),
        (State.RCPT, Input.RSET, Go(target=State.READY)),
        (State.RCPT, Input.QUIT, Go(target=State.CLOSED)),
        (State.DATA, Input.DATA_END, Go(target=State.READY)),
        (State.BDAT, Input.LAST_CHUNK_END, Go(target=State.READY)),
    ],
)
def test_spot_rules(state: State, inp: Input, expected: object) -> None:
    assert rule(state, inp) == expected


def test_no_commands_while_content_or_handshake_is_on_the_wire() -> None:
    for state in (State.DATA, State.AUTH, State.STARTTLS_PENDING, State.CLOSED):
        for inp in COMMAND_INPUTS:
            assert isinstance(rule(state, inp), Impossible)
    assert State.DATA not in COMMAND_STATES
