"""Property tests of the SMTP envelope grammar (mailmoat.smtp._abnf).

* a generated mailbox, rendered by its own grammar, parses back to the parts it was built from;
* ``str(Address)`` re-parses to the same Address (all fields but ``raw``);
* random octets never raise anything but AddressSyntaxError, and parse in bounded time;
* IPv6 literals agree with the stdlib ``ipaddress`` module (an independent oracle): whatever
  RFC 5321 syntax we accept, RFC 4291 accepts with the same value.
"""

from __future__ import annotations

import ipaddress
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.smtp._abnf import (
    Address,
    AddressSyntaxError,
    parse_helo_domain,
    parse_mail_args,
    parse_rcpt_args,
    xtext_decode,
    xtext_encode,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
DOT_STRING = "[" + re.escape(ATEXT) + "]+(?:\\.[" + re.escape(ATEXT) + "]+)*"
QTEXT = "".join(chr(c) for c in range(32, 127))  # qtextSMTP + the two chars needing quoted-pair
LETDIG = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

atoms = st.text(alphabet=ATEXT, min_size=1, max_size=8)
dot_strings = st.lists(atoms, min_size=1, max_size=4).map(".".join)
quoted_locals = st.text(alphabet=QTEXT, max_size=20)
labels = st.builds(
    lambda first, mid, last: first + mid + last if mid or last else first,
    st.sampled_from(LETDIG),
    st.text(alphabet=LETDIG + "-", max_size=10),
    st.sampled_from(["", *LETDIG]),
).filter(lambda s: not s.endswith("-"))
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
u_labels = st.sampled_from(["bücher", "例え", "テスト", "straße", "παράδειγμα", "пример", "उदाहरण"])
utf8_domains = st.lists(st.one_of(labels, u_labels), min_size=1, max_size=3).map(".".join)
utf8_locals = st.lists(
    st.text(alphabet=ATEXT + "üé中文ßя", min_size=1, max_size=6), min_size=1, max_size=3
).map(".".join)


def _quote(local: str) -> str:
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reparse(address: Address) -> Address:
    wire = ("<" + str(address) + ">").encode()
    again, _ = parse_rcpt_args(wire, smtputf8=address.is_utf8)
    return again


def _same(a: Address, b: Address) -> bool:
    return (a.local_part, a.domain, a.is_utf8, a.literal) == (b.local_part, b.domain, b.is_utf8, b.literal)


@SETTINGS
@given(local=st.one_of(dot_strings, quoted_locals), domain=domains, quoted=st.booleans())
def test_generated_ascii_mailbox_parses_to_its_parts(local: str, domain: str, quoted: bool) -> None:
    # Dot-string = Atom *("." Atom), written as an independent regex (RFC 5321 §4.1.2).
    is_dot_string = re.fullmatch(DOT_STRING, local) is not None
    text = local if is_dot_string and not quoted else _quote(local)
    wire = f"<{text}@{domain}>".encode()
    if len(text) > 64 or len(wire) > 256:
        return
    address, params = parse_mail_args(wire, smtputf8=False)
    assert params == ()
    assert address is not None
    assert (address.local_part, address.domain, address.literal) == (local, domain.lower(), None)
    assert address.raw == wire[1:-1]
    assert _same(_reparse(address), address)


@SETTINGS
@given(local=utf8_locals, domain=utf8_domains)
def test_generated_utf8_mailbox_round_trips(local: str, domain: str) -> None:
    wire = f"<{local}@{domain}> SMTPUTF8".encode()
    refused = ""
    try:
        address, params = parse_mail_args(wire, smtputf8=True)
    except AddressSyntaxError as err:
        refused = err.reason
    if refused:
        # Only the length bounds may refuse a generated mailbox.
        assert "long" in refused
        return
    assert params == (("SMTPUTF8", None),)
    assert address is not None
    assert address.local_part == local
    assert address.domain == domain.lower()
    assert _same(_reparse(address), address)


@SETTINGS
@given(value=st.integers(0, 2**128 - 1), style=st.sampled_from(["full", "compressed", "v4"]))
def test_ipv6_literals_agree_with_ipaddress(value: int, style: str) -> None:
    ip = ipaddress.IPv6Address(value)
    if style == "full":
        text = ":".join(f"{(value >> s) & 0xFFFF:x}" for s in range(112, -16, -16))
    elif style == "compressed":
        text = ip.compressed
    else:
        v4 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
        text = ":".join(f"{(value >> s) & 0xFFFF:x}" for s in range(112, 16, -16)) + f":{v4}"
    wire = f"<u@[IPv6:{text}]>".encode()
    try:
        address, _ = parse_rcpt_args(wire, smtputf8=False)
    except AddressSyntaxError:
        # RFC 5321 forbids "::" for a single zero group, which ipaddress may produce.
        assert style == "compressed"
        assert "::" in text
        assert len([g for g in text.split(":") if g]) == 7
        return
    assert address.literal == ip


@SETTINGS
@given(st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45))
def test_accepted_ipv6_text_is_accepted_by_ipaddress_with_the_same_value(text: str) -> None:
    try:
        address, _ = parse_rcpt_args(f"<u@[IPv6:{text}]>".encode(), smtputf8=False)
    except AddressSyntaxError:
        return
    assert address.literal == ipaddress.IPv6Address(text)


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_random_octets_raise_only_address_syntax_error(data: bytes, utf8: bool) -> None:
    for parse in (parse_mail_args, parse_rcpt_args):
        try:
            parse(data, smtputf8=utf8)
        except AddressSyntaxError:
            pass
    try:
        parse_helo_domain(data)
    except AddressSyntaxError:
        pass


@SETTINGS
@given(
    st.lists(
        st.sampled_from(["<", ">", "@", ".", ":", ",", '"', "\\", "[", "]", " ", "a", "=", "ü", "IPv6:", "1"]),
        max_size=200,
    ),
    st.booleans(),
)
def test_grammar_shaped_noise_raises_only_address_syntax_error(parts: list[str], utf8: bool) -> None:
    data = "".join(parts).encode()
    start = time.perf_counter()
    for parse in (parse_mail_args, parse_rcpt_args):
        try:
            address, _ = parse(data, smtputf8=utf8)
        except AddressSyntaxError:
            continue
        if address is not None:
            assert _same(_reparse(address), address)
    assert time.perf_counter() - start < 0.5


@SETTINGS
@given(st.text(max_size=100))
def test_xtext_round_trip(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are not text
        return
    encoded = xtext_encode(text)
    assert encoded.isascii()
    assert "=" not in encoded
    assert " " not in encoded
    assert xtext_decode(encoded) == text


@SETTINGS
@given(st.text(max_size=60))
def test_xtext_decode_raises_only_value_error(text: str) -> None:
    try:
        xtext_decode(text)
    except ValueError:
        pass


# --- differential: an independent transcription of the ABNF as regular expressions ---------
# RFC 5321 §4.1.2 / §4.1.3, written separately from the scanner under test (which uses no
# regular expressions). Prose rules ("Snum ... 0 through 255", "No more than 6 groups in
# addition to the '::'") and the length limits of §4.5.3.1 are checked in Python below.
_H = r"[0-9A-Fa-f]{1,4}"
_SNUM = r"[0-9]{1,3}"
_IPV4 = rf"{_SNUM}(?:\.{_SNUM}){{3}}"
_IPV6 = {
    "full": rf"{_H}(?::{_H}){{7}}",
    "comp": rf"(?:{_H}(?::{_H}){{0,5}})?::(?:{_H}(?::{_H}){{0,5}})?",
    "v4full": rf"{_H}(?::{_H}){{5}}:{_IPV4}",
    "v4comp": rf"(?:{_H}(?::{_H}){{0,3}})?::(?:{_H}(?::{_H}){{0,3}}:)?{_IPV4}",
}
_LDH_STR = r"[A-Za-z0-9-]*[A-Za-z0-9]"
_SUB_DOMAIN = rf"[A-Za-z0-9](?:{_LDH_STR})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_PARAM = r"[A-Za-z0-9][A-Za-z0-9-]*(?:=[\x21-\x3c\x3e-\x7e]+)?"
_ORACLE = re.compile(
    rf" ?<(?P<adl>@{_DOMAIN}(?:,@{_DOMAIN})*:)?"
    rf"(?P<local>{_DOT_STRING}|{_QUOTED})@(?:(?P<domain>{_DOMAIN})|\[(?P<literal>[^\]]*)\])>"
    rf"(?P<params>(?: {_PARAM})*)"
)


def _oracle_ipv6(text: str) -> bool:
    for form, pattern in _IPV6.items():
        if re.fullmatch(pattern, text):
            head = text.rsplit(":", 1)[0] if form.startswith("v4") else text
            groups = len(re.findall(_H, head.replace(":", " ")))
            v4 = text.rsplit(":", 1)[1] if form.startswith("v4") else "0.0.0.0"
            if any(int(n) > 255 for n in v4.split(".")):
                return False
            if form == "comp" and groups > 6:
                return False
            return not (form == "v4comp" and groups > 4)
    return False


def _oracle_literal(text: str) -> bool:
    if re.fullmatch(_IPV4, text):
        return all(int(n) <= 255 for n in text.split("."))
    tag, colon, content = text.partition(":")
    if tag.lower() == "ipv6":
        return _oracle_ipv6(content)
    return bool(colon) and re.fullmatch(_LDH_STR, tag) is not None and (
        re.fullmatch(r"[\x21-\x5a\x5e-\x7e]+", content) is not None
    )


def _oracle(args: str) -> tuple[str, str] | None:
    """(decoded local part, domain) if RFC 5321 accepts ``MAIL FROM:`` + args, else None."""
    match = _ORACLE.fullmatch(args)
    if match is None:
        return None
    local, domain, literal = match["local"], match["domain"], match["literal"]
    if literal is not None and not _oracle_literal(literal):
        return None
    keywords = [p.split("=")[0].upper() for p in match["params"].split()]
    if len(set(keywords)) != len(keywords):  # our documented policy: no duplicates
        return None
    full_domain = domain if domain is not None else f"[{literal}]"
    labels = domain.split(".") if domain is not None else []
    path = args[args.index("<") : args.index(">", args.index("@")) + 1] if ">" in args else ""
    if (
        len(local) > 64
        or len(full_domain) > 255
        or any(len(label) > 63 for label in labels)
        or len(path) > 256
    ):
        return None
    if local.startswith('"'):
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return local, (full_domain.lower() if domain is not None else full_domain)


_local_pieces = st.sampled_from(["a", "b.", ".", "..", '"', '\\"', "\\\\", " ", "%", "!", "x-y", "@", "é"])
_domain_pieces = st.sampled_from(["a", "b-", "-c", "0", ".", "xn--d", "E", "_"])
_literal_pieces = st.sampled_from(
    ["1", "255", "256", "0", ".", ":", "IPv6:", "ipv6:", "::", "ffff", "12345", "x", "tag", "-", "\\"]
)
_domains = st.one_of(domains, st.lists(_domain_pieces, max_size=5).map("".join))
_ipv6_texts = st.builds(
    lambda value, style: (
        ipaddress.IPv6Address(value).exploded if style == 0
        else ipaddress.IPv6Address(value).compressed if style == 1
        else ipaddress.IPv6Address(value).compressed.rsplit(":", 2)[0]
        + ":" + str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    ),
    st.one_of(st.integers(0, 2**128 - 1), st.integers(0, 2**32), st.just(0)),
    st.integers(0, 2),
)
_literals = st.one_of(
    st.lists(_literal_pieces, max_size=10).map("".join),
    st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
    st.builds(lambda tag, text: tag + text, st.sampled_from(["IPv6:", "ipv6:", "IPv6", "x-tag:", "4:"]), _ipv6_texts),
)
_hosts = st.one_of(_domains, _literals.map(lambda text: f"[{text}]"))
_routes = st.one_of(
    st.just(""),
    st.lists(_domains, min_size=1, max_size=2).map(lambda d: ",".join("@" + x for x in d) + ":"),
)
_params = st.lists(
    st.sampled_from(["SIZE=1", "size=2", "X", "A-B=c=d", "=x", "-Y", "Z=", "B=\\", "8=a+2B"]), max_size=3
)
_locals = st.one_of(dot_strings, quoted_locals.map(_quote), st.lists(_local_pieces, max_size=4).map("".join))


@SETTINGS
@given(
    sp=st.sampled_from(["", " ", "  "]),
    route=_routes,
    local=_locals,
    host=_hosts,
    params=_params,
)
def test_agrees_with_an_abnf_regex_oracle(sp: str, route: str, local: str, host: str, params: list[str]) -> None:
    args = f"{sp}<{route}{local}@{host}>" + "".join(" " + p for p in params)
    expected = _oracle(args) if args.isascii() else None
    try:
        address, _ = parse_mail_args(args.encode(), smtputf8=False)
    except AddressSyntaxError:
        assert expected is None, args
        return
    assert address is not None
    assert expected == (address.local_part, address.domain), args
