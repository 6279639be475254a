"""The Public Suffix List's own test cases against our RFC 7489 §3.2 Organizational Domain.

``test_psl.txt`` (publicsuffix/list, tests/) lists ``checkPublicSuffix(input, expected)``:
``expected`` is the registrable domain (the public suffix plus one label, RFC 7489 §3.2 step 4)
or ``null`` when there is none. We read it from the shared conformance data (never copied).
Our answers come from the list bundled in the ``publicsuffixlist`` package (no network), which
may be newer or older than the file's commit: the cases are about the rules the list has had
for years (wildcards, exceptions, IDN), so they must all hold.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import conformance
from mailmoat.auth.dmarc import psl_organizational_domain, psl_registrable_domain

_CASE = re.compile(r"^checkPublicSuffix\((null|'[^']*'),\s*(null|'[^']*')\);")


def _cases() -> list[tuple[str | None, str | None, int]]:
    path: Path = conformance("public-suffix-list", "tests", "test_psl.txt")
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _CASE.match(line.strip())
        if not match:
            continue
        raw_in, raw_out = match.groups()
        cases.append((None if raw_in == "null" else raw_in.strip("'"),
                      None if raw_out == "null" else raw_out.strip("'"), number))
    return cases


def _params(*, dns_names_only: bool = False) -> list[object]:
    """The cases; "null input" has nothing to look up. ``dns_names_only`` also leaves out the
    names a DMARC check never sees (a leading dot; U-labels, converted to A-labels first)."""
    try:
        return [
            pytest.param(i, o, id=f"line{n}:{i}") for i, o, n in _cases()
            if i is not None and not (dns_names_only and (i.startswith(".") or not i.isascii()))
        ]
    except pytest.skip.Exception:
        return [pytest.param(None, None, id="no-data", marks=pytest.mark.skip("no PSL data"))]


def test_file_has_cases() -> None:
    assert len(_cases()) > 50


@pytest.mark.parametrize(("name", "expected"), _params())
def test_check_public_suffix(name: str, expected: str | None) -> None:
    assert psl_registrable_domain(name) == expected


@pytest.mark.parametrize(("name", "expected"), _params(dns_names_only=True))
def test_organizational_domain(name: str, expected: str | None) -> None:
    """RFC 7489 §3.2: the Organizational Domain is the registrable domain; a name that is a
    public suffix itself is its own (no "x+1"th label)."""
    want = expected if expected is not None else name.lower()
    assert psl_organizational_domain(name) == want
