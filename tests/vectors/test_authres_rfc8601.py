"""RFC 8601 Appendix B examples, written in from the RFC text, parsed by our parser; and a
differential test against the ``authres`` package (PyPI; test-only oracle) on the same fields.

Each case: the field body as printed in the RFC (folding kept, CRLF line ends), and what the RFC
says it means (authserv-id, version, then per resinfo: method, method version, result, reason,
properties).
"""

from __future__ import annotations

import authres
import pytest

from mailmoat.auth.authres import AuthenticationResults, parse

Expected = tuple[str, int | None, list[tuple[str, int | None, str, str | None,
                                              list[tuple[str, str, str]]]], bool]

CASES: list[tuple[str, str, Expected]] = [
    # B.2 "Nearly Trivial Case; Service Provided, but No Authentication Done"
    ("B.2", "example.org 1; none", ("example.org", 1, [], True)),
    # B.3 "Service Provided, Authentication Done"
    ("B.3", "example.com;\r\n          spf=pass smtp.mailfrom=example.net",
     ("example.com", None, [("spf", None, "pass", None,
                             [("smtp", "mailfrom", "example.net")])], False)),
    # B.4 "Service Provided, Several Authentications Done, Single MTA" (two fields)
    ("B.4a", "example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n"
             "          spf=pass smtp.mailfrom=example.net",
     ("example.com", None, [
         ("auth", None, "pass", None, [("smtp", "auth", "sender@example.net")]),
         ("spf", None, "pass", None, [("smtp", "mailfrom", "example.net")]),
     ], False)),
    ("B.4b", "example.com; iprev=pass\r\n          policy.iprev=192.0.2.200",
     ("example.com", None, [("iprev", None, "pass", None,
                             [("policy", "iprev", "192.0.2.200")])], False)),
    # B.5 "Service Provided, Several Authentications Done, Different MTAs"
    ("B.5a", "example.com;\r\n          dkim=pass (good signature) header.d=example.com",
     ("example.com", None, [("dkim", None, "pass", None,
                             [("header", "d", "example.com")])], False)),
    ("B.5b", "example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.com;\r\n"
             "          spf=fail smtp.mailfrom=example.com",
     ("example.com", None, [
         ("auth", None, "pass", None, [("smtp", "auth", "sender@example.com")]),
         ("spf", None, "fail", None, [("smtp", "mailfrom", "example.com")]),
     ], False)),
    # B.6 "Service Provided, Multi-tiered Authentication Done"
    ("B.6a", "example.com;\r\n    dkim=pass reason=\"good signature\"\r\n"
             "      header.i=@mail-router.example.net;\r\n"
             "    dkim=fail reason=\"bad signature\"\r\n"
             "      header.i=@newyork.example.com",
     ("example.com", None, [
         ("dkim", None, "pass", "good signature", [("header", "i", "@mail-router.example.net")]),
         ("dkim", None, "fail", "bad signature", [("header", "i", "@newyork.example.com")]),
     ], False)),
    ("B.6b", "example.net;\r\n    dkim=pass (good signature) header.i=@newyork.example.com",
     ("example.net", None, [("dkim", None, "pass", None,
                             [("header", "i", "@newyork.example.com")])], False)),
    # B.7 "Comment-Heavy Example"
    ("B.7", "foo.example.net (foobar) 1 (baz);\r\n"
            "    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\r\n"
            "      policy (A dot can go here) . (like that) expired\r\n"
            "      (this surprised me) = (as I wasn't expecting it) 1362471462",
     ("foo.example.net", 1, [("dkim", 1, "fail", None,
                              [("policy", "expired", "1362471462")])], False)),
]


def _shape(parsed: AuthenticationResults) -> Expected:
    return (
        parsed.authserv_id,
        parsed.version,
        [(r.method, r.version, r.result, r.reason,
          [(p.ptype, p.name, p.value) for p in r.properties]) for r in parsed.results],
        parsed.none,
    )


@pytest.mark.parametrize(("section", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rfc8601_appendix_b(section: str, value: str, expected: Expected) -> None:
    assert _shape(parse(value.encode())) == expected


def test_b7_comments_are_kept() -> None:
    parsed = parse(CASES[-1][1])
    assert parsed.comments == ("foobar", "baz")
    assert parsed.results[0].comments == (
        "Because I like it", "One yay", "wait for it", "A dot can go here", "like that",
        "this surprised me", "as I wasn't expecting it",
    )


# --- differential: the authres package parses the same fields --------------------------------

#: authres 1.2 does not accept CFWS between "dkim" and "/ 1" (B.7), nor a quoted-string
#: authserv-id (RFC 8601 §2.2 "authserv-id = value"); the unit tests cover those.
DIFFERENTIAL = [c for c in CASES if c[0] != "B.7"] + [
    ("gmail", "mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=20230601 "
              "header.b=\"AbCd/+9=\";\r\n       spf=pass (google.com: domain of "
              "bounce@example.com designates 192.0.2.1 as permitted sender) "
              "smtp.mailfrom=bounce@example.com;\r\n       dmarc=pass (p=REJECT sp=REJECT "
              "dis=NONE) header.from=example.com", None),
    ("method-version", "example.com; dkim/1=pass header.d=example.com", None),
    ("reason", "example.com; spf=permerror reason=\"too many DNS lookups\" "
               "smtp.mailfrom=a@b.example", None),
    ("arc", "i.example; arc=pass (as.2.example=pass, ams.2.example=pass) "
            "smtp.remote-ip=192.0.2.7", None),
]


def _oracle(value: str) -> Expected:
    header = authres.AuthenticationResultsHeader.parse_value(value)
    return (
        header.authserv_id,
        int(header.version) if header.version is not None else None,
        [(r.method, int(r.version) if r.version is not None else None, r.result, r.reason,
          [(p.type, p.name, p.value) for p in r.properties]) for r in header.results],
        not header.results,
    )


@pytest.mark.parametrize(("name", "value"), [(c[0], c[1]) for c in DIFFERENTIAL],
                         ids=[c[0] for c in DIFFERENTIAL])
def test_differential_against_authres(name: str, value: str) -> None:
    ours = _shape(parse(value))
    theirs = _oracle(value)
    assert ours == theirs
