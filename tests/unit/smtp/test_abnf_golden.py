"""Golden tokenizer tests in the Postfix style: ``golden/abnf/NAME.in`` → ``NAME.out``.

Each line of a ``.in`` file is one input (the octets after ``MAIL FROM:`` / ``RCPT TO:``, an
EHLO argument, or an xtext value). ``\\xHH`` in an input line stands for the octet HH (so
control characters, trailing spaces and invalid UTF-8 can be written); everything else is the
UTF-8 text of the line. The line of the same number in the ``.out`` file holds the expected
result, written by hand from the RFC 5321 / RFC 6531 / RFC 3461 grammar, as shell-style
``key=value`` tokens:

    ok local=LOCAL domain=DOMAIN [literal=IP] [utf8=yes] [param=KEY[=VALUE] ...]
    null [param=...]                     (MAIL FROM:<>)
    ok domain=DOMAIN                     (EHLO)
    ok value=TEXT                        (xtext)
    error code=501 status=5.1.7

``literal`` is compared by value with the stdlib ``ipaddress`` (an independent oracle for the
address value), so the expected text may use any RFC 4291 spelling.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmoat.smtp._abnf import (
    Address,
    AddressSyntaxError,
    parse_helo_domain,
    parse_mail_args,
    parse_rcpt_args,
    xtext_decode,
    xtext_encode,
)

GOLDEN = Path(__file__).parent / "golden" / "abnf"
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")


def _unescape(line: str) -> bytes:
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), line.encode("utf-8"))


def _address_result(address: Address | None, params: tuple[tuple[str, str | None], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "null"} if address is None else {
        "kind": "ok",
        "local": address.local_part,
        "domain": address.domain,
        "literal": address.literal,
        "utf8": address.is_utf8,
    }
    out["params"] = [k if v is None else f"{k}={v}" for k, v in params]
    return out


def _mail(utf8: bool) -> Callable[[bytes], dict[str, Any]]:
    return lambda data: _address_result(*parse_mail_args(data, smtputf8=utf8))


def _rcpt(utf8: bool) -> Callable[[bytes], dict[str, Any]]:
    return lambda data: _address_result(*parse_rcpt_args(data, smtputf8=utf8))


def _helo(data: bytes) -> dict[str, Any]:
    return {"kind": "ok", "domain": parse_helo_domain(data)}


def _xdecode(data: bytes) -> dict[str, Any]:
    try:
        return {"kind": "ok", "value": xtext_decode(data.decode("utf-8"))}
    except AddressSyntaxError:  # pragma: no cover - xtext raises plain ValueError
        raise
    except ValueError:
        return {"kind": "error", "code": None, "status": None}


def _xencode(data: bytes) -> dict[str, Any]:
    return {"kind": "ok", "value": xtext_encode(data.decode("utf-8"))}


SUITES: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "mail": _mail(False),
    "mail_utf8": _mail(True),
    "rcpt": _rcpt(False),
    "rcpt_utf8": _rcpt(True),
    "helo": _helo,
    "xtext_decode": _xdecode,
    "xtext_encode": _xencode,
}


def _expected(line: str) -> dict[str, Any]:
    tokens = shlex.split(line)
    kind, fields = tokens[0], tokens[1:]
    out: dict[str, Any] = {"kind": kind}
    if kind in ("ok", "null") and (
        any(f.startswith(("local=", "param=")) for f in fields) or kind == "null"
    ):
        out.update(literal=None, utf8=False, params=[])
    for field in fields:
        key, _, value = field.partition("=")
        if key == "param":
            out["params"].append(value)
        elif key == "literal":
            out["literal"] = ipaddress.ip_address(value)
        elif key == "utf8":
            out["utf8"] = {"yes": True, "no": False}[value]
        elif key == "code":
            out["code"] = int(value)
        else:
            out[key] = value
    if kind == "null":
        del out["literal"], out["utf8"]
    return out


def _cases() -> list[Any]:
    cases = []
    for src in sorted(GOLDEN.glob("*.in")):
        suite = src.stem
        inputs = src.read_text(encoding="utf-8").splitlines()
        outputs = src.with_suffix(".out").read_text(encoding="utf-8").splitlines()
        assert len(inputs) == len(outputs), f"{src.name}: {len(inputs)} inputs, {len(outputs)} outputs"
        for number, (given, want) in enumerate(zip(inputs, outputs, strict=True), 1):
            cases.append(pytest.param(suite, given, want, id=f"{suite}:{number}"))
    return cases


def test_every_suite_has_cases() -> None:
    assert {p.stem for p in GOLDEN.glob("*.in")} == set(SUITES)


@pytest.mark.parametrize(("suite", "given", "want"), _cases())
def test_golden(suite: str, given: str, want: str) -> None:
    expected = _expected(want)
    data = _unescape(given)
    try:
        got = SUITES[suite](data)
    except AddressSyntaxError as err:
        got = {"kind": "error", "code": err.reply_code, "status": err.status}
    if suite.startswith("xtext") and expected["kind"] == "error":
        expected.update(code=None, status=None)
    assert got == expected, f"input {given!r}"
