"""message.compose: structure, encodings and round trips.

Oracles: the stdlib ``email`` package (policy.default) parses every message we build — an
independent implementation of RFC 5322/2045/2047/2231 (allowed in tests; never on untrusted
input in the product) — and our own byte-preserving header parser checks the header section
in strict mode. Expected values come from the inputs, RFC examples or the oracle, never from
our own output.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.policy
import email.utils
import itertools
import re
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.clock import FixedClock
from mailmoat.errors import FieldError, HeaderInjectionError, LimitExceeded
from mailmoat.message import parse_headers
from mailmoat.message.compose import (
    Attachment,
    ComposedMessage,
    MessageFields,
    compose,
    parse_mailbox,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def counter_bytes() -> Callable[[int], bytes]:
    counter = itertools.count(1)

    def randbytes(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return randbytes


def build(**kwargs: object) -> ComposedMessage:
    kwargs.setdefault("from_", "Shop <shop@example.org>")
    kwargs.setdefault("to", ["alice@example.net"])
    return compose(MessageFields(**kwargs), clock=FixedClock(wall=NOW),  # type: ignore[arg-type]
                   randbytes=counter_bytes())


def oracle(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    return msg


def content(part: EmailMessage) -> str:
    """Decoded text of a part, line ends as "\n" (the oracle keeps CRLF for 7bit parts)."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def file_name_of(part: EmailMessage) -> str:
    """The file name as the oracle's header registry decodes it (RFC 2231). get_filename()
    is not used: it strips a pair of surrounding double quotes from the decoded value."""
    value = part["Content-Disposition"].params["filename"]
    assert part["Content-Type"].params["name"] == value
    assert isinstance(value, str)
    return value


def assert_wire_form(data: bytes) -> None:
    """RFC 5322 §2.1.1 / §2.3: CRLF everywhere, no line over 998 octets, no bare CR/LF."""
    assert data.endswith(b"\r\n")
    assert b"\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, len(line)
    headers = parse_headers(data, strict=True)  # our parser: no defect at all
    assert headers.end is not None


def test_text_message_headers_and_body() -> None:
    m = build(subject="Order 42 confirmed", text="Thanks!\nSee you.")
    assert_wire_form(m.data)
    msg = oracle(m.data)
    assert msg["Subject"] == "Order 42 confirmed"
    assert msg["From"].addresses[0].display_name == "Shop"
    assert msg["From"].addresses[0].addr_spec == "shop@example.org"
    assert msg["To"].addresses[0].addr_spec == "alice@example.net"
    assert email.utils.parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert msg["Message-ID"] == m.message_id
    assert re.fullmatch(r"<[0-9a-z]+@example\.org>", m.message_id)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert content(msg) == "Thanks!\nSee you.\n"
    assert m.mail_from == "shop@example.org"
    assert m.recipients == ("alice@example.net",)
    assert not m.smtputf8


def test_date_is_rfc5322_utc() -> None:
    # RFC 5322 §3.3: 1700000000 is Tue, 14 Nov 2023 22:13:20 UTC.
    m = build()
    assert b"\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n" in b"\r\n" + m.data


def test_message_id_from_injected_randomness_differs() -> None:
    a = compose(MessageFields(from_="a@example.org", to=["b@example.net"]),
                clock=FixedClock(wall=NOW), randbytes=lambda n: b"\x01" * n)
    b = compose(MessageFields(from_="a@example.org", to=["b@example.net"]),
                clock=FixedClock(wall=NOW), randbytes=lambda n: b"\x02" * n)
    assert a.message_id != b.message_id
    assert a.data.replace(a.message_id.encode(), b"") == b.data.replace(b.message_id.encode(),
                                                                        b"")


def test_our_parser_sees_fields_in_order() -> None:
    m = build(cc=["c@example.net"], reply_to="Visitor <v@example.com>", subject="Hi",
              headers=[("X-Form", "contact")])
    names = [f.name for f in parse_headers(m.data, strict=True)]
    assert names == [b"Date", b"From", b"Reply-To", b"To", b"Cc", b"Subject", b"Message-ID",
                     b"MIME-Version", b"X-Form", b"Content-Type",
                     b"Content-Transfer-Encoding"]


def test_bcc_only_in_envelope() -> None:
    m = build(to=["a@example.net"], cc=["c@example.net"], bcc=["secret@example.com"])
    msg = oracle(m.data)
    assert "Bcc" not in msg
    assert b"secret@example.com" not in m.data
    assert m.recipients == ("a@example.net", "c@example.net", "secret@example.com")


def test_recipients_deduplicated() -> None:
    m = build(to=["a@example.net", "A <a@example.net>"], cc=["a@example.net"])
    assert m.recipients == ("a@example.net",)


def test_non_ascii_display_names_and_subject_round_trip() -> None:
    m = build(from_="Zoë Müller <zoe@example.org>",
              to=["Дмитрий Шостакович <d@example.net>", "李小龍 <bruce@example.com>"],
              subject="Grüße aus Köln — ça va? 🎉")
    assert_wire_form(m.data)
    assert m.data.isascii()  # encoded-words, RFC 2047: the header stays 7-bit
    msg = oracle(m.data)
    assert msg["From"].addresses[0].display_name == "Zoë Müller"
    names = [a.display_name for a in msg["To"].addresses]
    assert names == ["Дмитрий Шостакович", "李小龍"]
    assert msg["Subject"] == "Grüße aus Köln — ça va? 🎉"


def test_encoded_words_are_at_most_75_chars() -> None:
    # RFC 2047 §2: "An 'encoded-word' may not be more than 75 characters long"
    m = build(subject="ü" * 400, from_=("Ä" * 200) + " <a@example.org>")
    words = re.findall(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", m.data)
    assert len(words) > 10
    assert all(len(w) <= 75 for w in words)
    msg = oracle(m.data)
    assert msg["Subject"] == "ü" * 400
    # RFC 2047 §6.2: "any 'linear-white-space' that separates a pair of adjacent
    # 'encoded-word's is ignored". email.header.decode_header follows that; the newer
    # headerregistry keeps the space inside address phrases, so it is not the oracle here.
    from_field = parse_headers(m.data).get("From")
    assert from_field is not None
    phrase = from_field.unfolded().decode("ascii").rsplit("<", 1)[0].strip()
    decoded = email.header.make_header(email.header.decode_header(phrase))
    assert str(decoded) == "Ä" * 200


def test_long_ascii_subject_folded_and_unfolds_exactly() -> None:
    subject = " ".join(f"word{i}" for i in range(120))
    m = build(subject=subject)
    assert_wire_form(m.data)
    field = parse_headers(m.data).get("Subject")
    assert field is not None
    assert b"\r\n " in field.value  # folded
    assert all(len(line) <= 78 for line in field.raw.split(b"\r\n"))
    assert field.unfolded().strip() == subject.encode()
    assert oracle(m.data)["Subject"] == subject


def test_subject_with_one_very_long_word_stays_under_998() -> None:
    subject = "x" * 1000
    m = build(subject=subject)
    assert_wire_form(m.data)
    assert oracle(m.data)["Subject"] == subject


def test_subject_spacing_preserved() -> None:
    for subject in ("  two leading", "trailing  ", "a  b   c", ""):
        assert str(oracle(build(subject=subject).data)["Subject"]) == subject


@pytest.mark.parametrize(
    ("given", "display", "addr"),
    [
        ("O'Brien <ob@example.net>", "O'Brien", "ob@example.net"),
        ('"Doe, John" <john@example.com>', "Doe, John", "john@example.com"),
        ('"Say \\"hi\\"" <hi@example.com>', 'Say "hi"', "hi@example.com"),
        ("user+tag@example.com", "", "user+tag@example.com"),
        ('"john doe"@example.com', "", '"john doe"@example.com'),
        ('Quoted <"a,b;c"@example.com>', "Quoted", '"a,b;c"@example.com'),
        ("x@[192.0.2.1]", "", "x@[192.0.2.1]"),
        ("Mixed.Case@Example.ORG", "", "Mixed.Case@example.org"),
        ("back\\slash <b@example.com>", "back\\slash", "b@example.com"),
        ("  spaced   <s@example.com>  ", "spaced", "s@example.com"),
    ],
)
def test_unusual_but_legitimate_addresses(given: str, display: str, addr: str) -> None:
    m = build(to=[given])
    assert_wire_form(m.data)
    parsed = oracle(m.data)["To"].addresses[0]
    assert parsed.display_name == display
    assert parsed.addr_spec == addr
    assert m.recipients == (addr,)


def test_idn_domain_becomes_a_label() -> None:
    # RFC 3492 §7.1 / IDNA2008: "bücher" is "xn--bcher-kva"
    m = build(to=["info@bücher.example"])
    assert m.recipients == ("info@xn--bcher-kva.example",)
    assert not m.smtputf8
    assert m.data.isascii()


def test_utf8_local_part_needs_smtputf8() -> None:
    m = build(to=["用户@例子.example"])
    assert m.smtputf8
    assert m.recipients == ("用户@例子.example",)
    msg = email.message_from_string(m.data.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert msg["To"].addresses[0].addr_spec == "用户@例子.example"


def test_text_and_html_make_alternative() -> None:
    m = build(text="Hello", html="<p>Hello <b>world</b></p>")
    assert_wire_form(m.data)
    msg = oracle(m.data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    # RFC 2046 §5.1.4: the preferred (richest) alternative comes last
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert content(parts[0]) == "Hello\n"
    assert content(parts[1]) == "<p>Hello <b>world</b></p>\n"


def test_html_only() -> None:
    msg = oracle(build(html="<p>Só HTML</p>").data)
    assert msg.get_content_type() == "text/html"
    assert content(msg) == "<p>Só HTML</p>\n"


def test_bare_cr_and_lf_become_crlf_in_bodies() -> None:
    m = build(text="one\rtwo\nthree\r\nfour")
    assert_wire_form(m.data)
    body = m.data.split(b"\r\n\r\n", 1)[1]
    assert body == b"one\r\ntwo\r\nthree\r\nfour\r\n"


def test_body_may_hold_header_like_text_without_harm() -> None:
    text = "Hi\r\nBcc: victim@example.com\r\n\r\n.\r\nContent-Type: text/html\n\x00end"
    m = build(text=text, subject="ok")
    assert_wire_form(m.data)
    msg = oracle(m.data)
    assert "Bcc" not in msg
    assert msg.get_content_type() == "text/plain"
    assert content(msg) == text.replace("\r\n", "\n") + "\n"


def test_long_and_non_ascii_text_is_quoted_printable() -> None:
    text = "ä" * 3000 + "\n" + "x" * 5000 + "\n.\nend "
    m = build(text=text)
    assert_wire_form(m.data)
    msg = oracle(m.data)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(msg) == text + "\n"
    # RFC 2045 §6.7 (5): encoded lines are at most 76 characters
    body = m.data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def test_short_ascii_text_is_7bit() -> None:
    msg = oracle(build(text="plain\tascii").data)
    assert msg["Content-Transfer-Encoding"] == "7bit"


def test_attachments_mixed_base64_and_filenames() -> None:
    blob = bytes(range(256)) * 40
    files = [
        Attachment(filename="report.pdf", content_type="application/pdf", data=blob),
        Attachment(filename="résumé – José Ñúñez.docx", data=b"\x00\xff"),
        Attachment(filename="a" * 120 + " long name with spaces & ümlauts.txt",
                   content_type="text/plain", data=b"hello"),
        Attachment(filename='quote " and it\'s.bin', data=b""),
    ]
    m = build(text="see attached", html="<p>see attached</p>", attachments=files)
    assert_wire_form(m.data)
    msg = oracle(m.data)
    assert msg.get_content_type() == "multipart/mixed"
    parts = list(msg.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    for part, att in zip(parts[1:], files, strict=True):
        assert file_name_of(part) == att.filename
        assert part.get_content_type() == att.content_type
        assert part.get_content_disposition() == "attachment"
        assert part["Content-Transfer-Encoding"] == "base64"
        assert part.get_payload(decode=True) == att.data
    # RFC 2045 §6.8: base64 lines at most 76 characters
    assert all(len(line) <= 78 for line in m.data.split(b"\r\n"))


def test_filename_rfc2231_encoding_is_percent_utf8() -> None:
    # RFC 2231 §4: charset'language'percent-encoded-octets
    m = build(attachments=[Attachment(filename="ü.txt", data=b"x")])
    assert b"filename*=utf-8''%C3%BC.txt" in m.data


def test_boundaries_do_not_occur_in_parts() -> None:
    text = "--=_mm_ and =_mm_ everywhere\n--\n"
    m = build(text=text, html="<p>--=_mm_</p>", attachments=[Attachment(filename="a", data=b"")])
    msg = oracle(m.data)
    assert next(msg.walk()).get_content_type() == "multipart/mixed"
    assert len([p for p in msg.walk() if not p.is_multipart()]) == 3


def test_extra_headers_allowed() -> None:
    m = build(headers=[("X-Form-ID", "contact"), ("X-Note", "naïve café"),
                       ("In-Reply-To", "<abc@example.org>"),
                       ("List-Unsubscribe", "<mailto:u@example.org>")])
    msg = oracle(m.data)
    assert msg["X-Form-ID"] == "contact"
    assert msg["X-Note"] == "naïve café"
    assert msg["In-Reply-To"] == "<abc@example.org>"
    assert msg["List-Unsubscribe"] == "<mailto:u@example.org>"


@pytest.mark.parametrize("name", ["Bcc", "To", "From", "Content-Type", "Subject", "Received",
                                  "DKIM-Signature", "Return-Path", "MIME-Version", "Sender",
                                  "X-", "Content-Transfer-Encoding"])
def test_extra_headers_refused(name: str) -> None:
    with pytest.raises(HeaderInjectionError) as err:
        build(headers=[("X-Ok", "fine"), (name, "victim@example.com")])
    assert err.value.field == "headers[1].name"


def test_missing_recipient() -> None:
    with pytest.raises(FieldError) as err:
        build(to=[])
    assert err.value.field == "to"
    assert err.value.code == "missing"


def test_too_many_recipients() -> None:
    with pytest.raises(FieldError) as err:
        build(to=[f"u{i}@example.net" for i in range(101)])
    assert err.value.code == "too_many"


def test_whole_message_size_bounded() -> None:
    fields = MessageFields(from_="a@example.org", to=["b@example.net"],
                           attachments=[Attachment(filename="big", data=b"x" * 30_000)])
    with pytest.raises(LimitExceeded):
        compose(fields, clock=FixedClock(wall=NOW), randbytes=lambda n: b"\x01" * n,
                max_size=40_000)
    compose(fields, clock=FixedClock(wall=NOW), randbytes=lambda n: b"\x01" * n,
            max_size=60_000)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("subject", {"subject": "s" * 1001}),
        ("to[0]", {"to": ["N" * 257 + " <a@example.org>"]}),
        ("attachments[0].filename",
         {"attachments": [Attachment(filename="f" * 256, data=b"")]}),
        ("headers[0].value", {"headers": [("X-A", "v" * 1001)]}),
        ("to[0]", {"to": ["a" * 65 + "@example.org"]}),  # RFC 5321 §4.5.3.1.1
    ],
)
def test_overlong_fields_refused(field: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(FieldError) as err:
        build(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("ctype", ["multipart/mixed", "message/rfc822", "text/plain; x=y",
                                   "nosubtype", "a/b/c"])
def test_bad_attachment_types(ctype: str) -> None:
    with pytest.raises(FieldError) as err:
        build(attachments=[Attachment(filename="f", content_type=ctype, data=b"")])
    assert err.value.field == "attachments[0].content_type"


@pytest.mark.parametrize("name", ["../etc/passwd", "a\\b", "", " ", ".."])
def test_bad_filenames(name: str) -> None:
    with pytest.raises(FieldError) as err:
        build(attachments=[Attachment(filename=name, data=b"")])
    assert err.value.field == "attachments[0].filename"


@pytest.mark.parametrize("bad", ["", "plain", "a@", "@b.example", "a@b..example",
                                 "a@-b.example", "a b@example.com", "<>",
                                 "Name <>", "Postmaster", "a@b.example.", '"unterminated@x.org'])
def test_invalid_addresses(bad: str) -> None:
    with pytest.raises(FieldError) as err:
        build(to=[bad])
    assert err.value.field == "to[0]"


def test_lone_surrogate_in_body_refused() -> None:
    with pytest.raises(FieldError) as err:
        build(text="bad \ud800")
    assert err.value.field == "text"


def test_parse_mailbox_values() -> None:
    assert parse_mailbox("a@example.org", field="f").name is None
    mb = parse_mailbox('"" <a@example.org>', field="f")
    assert mb.name is None
    assert mb.address == "a@example.org"


# --- property: any allowed text round-trips through the oracle ---------------------------------

_ALLOWED = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
    blacklist_characters="\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
)


@settings(max_examples=200, deadline=None)
@given(subject=st.text(_ALLOWED, max_size=300), name=st.text(_ALLOWED, max_size=80),
       filename=st.text(_ALLOWED, min_size=1, max_size=100))
def test_property_round_trip(subject: str, name: str, filename: str) -> None:
    try:
        m = build(subject=subject, to=[f'"{name.replace(chr(92), "").replace(chr(34), "")}"'
                                        " <p@example.net>"],
                  attachments=[Attachment(filename=filename, data=b"data")])
    except FieldError as err:
        refused = err.field
    else:
        refused = None
    if refused is not None:
        # only encoded-word look-alikes, percent/entity forms, '<'/'>' in the name, path
        # separators or an empty-after-strip file name may be refused
        assert refused in {"subject", "to[0]", "attachments[0].filename"}
        return
    assert_wire_form(m.data)
    # whatever the text, the header section has exactly the fields we wrote
    names = [f.name for f in parse_headers(m.data, strict=True)]
    assert names == [b"Date", b"From", b"To", b"Subject", b"Message-ID", b"MIME-Version",
                     b"Content-Type"]
    msg = oracle(m.data)
    assert str(msg["Subject"]) == subject
    parts = list(msg.iter_parts())
    assert file_name_of(parts[1]) == filename.strip()
    assert base64.b64decode(parts[1].get_payload()) == b"data"


_BREAKERS = st.sampled_from(
    [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
    + ["\u2028", "\u2029", "\u202e", "\u2066", "\ufeff"]
)


@settings(max_examples=300, deadline=None)
@given(before=st.text(_ALLOWED, max_size=40), bad=_BREAKERS, after=st.text(_ALLOWED, max_size=40),
       where=st.sampled_from(["subject", "to", "from", "filename", "header"]))
def test_property_any_control_is_refused(before: str, bad: str, after: str, where: str) -> None:
    value = before + bad + after
    kwargs: dict[str, object] = {
        "subject": {"subject": value},
        "to": {"to": [f"{value} <a@example.net>"]},
        "from": {"from_": f"a@example.org{value}"},
        "filename": {"attachments": [Attachment(filename=value or "x", data=b"")]},
        "header": {"headers": [("X-A", value)]},
    }[where]
    field = {"subject": "subject", "to": "to[0]", "from": "from",
             "filename": "attachments[0].filename", "header": "headers[0].value"}[where]
    with pytest.raises(HeaderInjectionError) as err:
        build(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("filename", ['""', '"quoted"', 'a "b" c.txt', "it's.txt"])
def test_filenames_with_quotes_round_trip(filename: str) -> None:
    msg = oracle(build(attachments=[Attachment(filename=filename, data=b"x")]).data)
    assert file_name_of(list(msg.iter_parts())[1]) == filename
