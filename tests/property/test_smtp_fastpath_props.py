"""Differential property tests: each fast path of the SMTP engine against its slow twin.

* ``_abnf._fast_path`` (one regular expression for ``<Dot-string@Domain>``) against the full
  hand-written scanner ``_abnf._path``: on every input the fast path accepts, the scanner
  accepts too, with the same Address and the same end offset (in both MAIL and RCPT roles,
  with and without SMTPUTF8);
* ``_abnf._params_matched`` (after the ``_ASCII_PARAMS`` pattern) against the character-by-
  character ``_abnf._params_checked``;
* the content checks (bare CR / bare LF / NUL / text line length, in any split into pieces)
  against a naive octet-by-octet oracle written from RFC 5321 §2.3.8 and §4.5.3.1.6.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.smtp._abnf import (
    _ASCII_PARAMS,
    STATUS_BAD_RECIPIENT,
    STATUS_BAD_SENDER,
    AddressSyntaxError,
    _fast_path,
    _params_checked,
    _params_matched,
    _path,
    _Scanner,
)
from mailmoat.smtp._receive import ChunkEnd, ContentFault, ContentPolicy, Framer

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
LETDIG = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: Octets that sit on the edges of the grammar (quotes, brackets, separators, controls, UTF-8).
EDGY = '."@<>[]\\:, -_\x00\x7f\tüé'

# Near the grammar, on both sides of it: empty atoms (".." and edge dots), hyphens at label
# edges, and sizes on both sides of the RFC 5321 bounds (64-octet local part, 63-octet label,
# 255-octet domain, 256-octet path).
atoms = st.one_of(st.text(alphabet=ATEXT, max_size=12),
                  st.integers(60, 68).map(lambda n: "l" * n))
locals_ = st.lists(atoms, min_size=1, max_size=3).map(".".join)
labels = st.one_of(
    st.text(alphabet=LETDIG + "-", max_size=12),
    st.integers(60, 66).map(lambda n: "d" * n),
    st.sampled_from(["-a", "a-", "a-b", "xn--bcher-kva", "A1"]),
)
domains = st.lists(labels, min_size=1, max_size=6).map(".".join)
params = st.lists(
    st.builds(lambda k, v: k + v, st.sampled_from(["SIZE", "BODY", "X-A", "smtputf8", "RET"]),
              st.sampled_from(["", "=1", "=8BITMIME", "=a<b>", "=x=y", "="])),
    max_size=3,
).map(lambda items: "".join(" " + i for i in items))


@st.composite
def paths(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(["", " "])) + "<" + draw(locals_) + "@" + draw(domains) + ">"
    text += draw(params)
    # Sometimes damage it: insert, replace or delete one character anywhere.
    edit = draw(st.sampled_from(["none", "insert", "replace", "delete"]))
    if edit != "none" and text:
        at = draw(st.integers(0, len(text) - 1))
        ch = draw(st.sampled_from(EDGY + ATEXT))
        if edit == "insert":
            text = text[:at] + ch + text[at:]
        elif edit == "replace":
            text = text[:at] + ch + text[at + 1 :]
        else:
            text = text[:at] + text[at + 1 :]
    return text


def _full(text: str, *, mail: bool, utf8: bool) -> tuple[object, int]:
    sc = _Scanner(text, status=STATUS_BAD_SENDER if mail else STATUS_BAD_RECIPIENT, utf8=utf8)
    address = _path(sc, null_ok=mail, postmaster_ok=not mail)
    return address, sc.pos


@SETTINGS
@given(st.one_of(paths(), st.text(alphabet=ATEXT + EDGY, max_size=80)), st.booleans(),
       st.booleans())
def test_fast_path_agrees_with_the_full_scanner(text: str, mail: bool, utf8: bool) -> None:
    if not text.isascii():  # the fast path is only ever tried on ASCII arguments
        return
    fast = _fast_path(text)
    if fast is None:
        return
    try:
        full = _full(text, mail=mail, utf8=utf8)
    except AddressSyntaxError as err:  # pragma: no cover - the failure this test looks for
        raise AssertionError(f"fast path accepted {text!r}, the scanner refused: {err}") from None
    assert full == fast


@SETTINGS
@given(paths())
def test_fast_path_accepts_the_plain_form(text: str) -> None:
    # Not vacuous: a clean generated path within the RFC 5321 bounds takes the fast path.
    head = text.lstrip(" ")
    local, _, rest = head[1:].partition("@")
    domain = rest.partition(">")[0]
    if (
        text.startswith("  ") or not head.startswith("<") or ">" not in rest
        or any(ch not in ATEXT + "." for ch in local) or not local or ".." in local
        or local[0] == "." or local[-1] == "." or len(local) > 64 or len(domain) > 255
        or len(local) + len(domain) + 3 > 256
        or any(ch not in LETDIG + "-." for ch in domain)
        or any(not lab or len(lab) > 63 or lab[0] == "-" or lab[-1] == "-"
               for lab in domain.split("."))
    ):
        return
    found = _fast_path(text)
    assert found is not None
    address, end = found
    assert (address.local_part, address.domain) == (local, domain.lower())
    assert end == len(text) - len(rest) + len(domain) + 1


@SETTINGS
@given(st.one_of(params, st.text(alphabet=" =-<>" + LETDIG[:5] + "\x7f~!", max_size=20)),
       st.booleans())
def test_params_fast_agrees_with_the_checked_scanner(text: str, utf8: bool) -> None:
    if not text or _ASCII_PARAMS.fullmatch(text) is None:
        return
    outcomes: list[tuple[str, object]] = []
    for parse in (_params_matched, lambda t: _params_checked(t, utf8=utf8)):
        try:
            outcomes.append(("ok", parse(text)))
        except AddressSyntaxError as err:
            outcomes.append(("error", err.reason))
    assert outcomes[0] == outcomes[1]


# --- content ----------------------------------------------------------------------------


def _oracle(content: bytes, max_line: int) -> set[ContentFault]:
    """Every fault the content has, octet by octet (RFC 5321 §2.3.8, §4.5.3.1.6)."""
    faults: set[ContentFault] = set()
    line = 0
    for i, octet in enumerate(content):
        if octet == 0x0A and (i == 0 or content[i - 1] != 0x0D):
            faults.add(ContentFault.BARE_LF)
        if octet == 0x0D and content[i + 1 : i + 2] != b"\n":
            faults.add(ContentFault.BARE_CR)
        if octet == 0:
            faults.add(ContentFault.NUL)
        if octet == 0x0A:
            # "The maximum total length of a text line including the <CRLF> is 1000 octets"
            if line + 1 > max_line:
                faults.add(ContentFault.LINE_TOO_LONG)
            line = 0
        else:
            line += 1
    if line > max_line - 1:  # an unfinished last line already too long for its <CRLF>
        faults.add(ContentFault.LINE_TOO_LONG)
    return faults


@SETTINGS
@given(
    # Lines of 0-45 octets, mostly ended by <CRLF>, sometimes by a bare CR or LF, a NUL, or
    # nothing; max_line 4-40 puts many lines on both sides of the limit.
    st.lists(
        st.tuples(st.integers(0, 45),
                  st.sampled_from([b"\r\n"] * 8 + [b"\r", b"\n", b"", b"\0\r\n", b"\n\r"])),
        max_size=40,
    ).map(lambda lines: b"".join(b"a" * n + end for n, end in lines)),
    st.lists(st.integers(0, 2000), max_size=6),
    st.integers(4, 40),
)
def test_content_checks_agree_with_an_octet_oracle(content: bytes, cuts: list[int],
                                                   max_line: int) -> None:
    policy = ContentPolicy(max_size=1 << 20, max_line=max_line)
    framer = Framer(line_limit=512, policy=policy)
    framer.start_bdat(len(content), last=True, new_message=True)
    bounds = sorted({0, len(content), *(c % (len(content) + 1) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        framer.feed(content[a:b])
    ends = []
    while (item := framer.next_item()) is not None:
        if isinstance(item, ChunkEnd):
            ends.append(item)
    assert len(ends) == 1
    expected = _oracle(content, max_line)
    # No fault exactly when the oracle finds none; otherwise one the oracle found (the first
    # one met is reported, so with a single kind of fault it is that one).
    fault = ends[0].fault
    assert (fault is None) == (not expected)
    assert fault is None or fault in expected
