"""The ValiMail ARC test suite (../shared/conformance/arc-test-suite, RFC 8617).

Validation (171 tests): publish the scenario's ``txt-records``, validate ``message``, expect
the chain status ``cv``. Three tests have an empty ``cv``: their chains carry an ARC-Seal
with ``cv=fail`` (``cv_fail_i1_as_cv_fail``, ``cv_fail_i2_as2_fail``, ``cv_fail_i2_as1_fail``).
The suite's harness compares the runner's output literally, and its dkimpy runner prints
nothing for a chain "terminated" by cv=fail. RFC 8617 §5.2 step 2 ("If the Chain Validation
Status of the highest instance ARC-Seal is "fail", then the Chain Validation Status is
"fail"") and step 3 ("The "cv" value for all ARC-Seal header fields MUST NOT be "fail"") make
all three ``fail``; postalsys/mailauth reads the empty value the same way.

Signing (17 tests): seal ``message`` with the scenario's key at time ``t`` (clock frozen
there), recording the message's own Authentication-Results for ``srv-id`` in the AAR (the
suite README "AR Consolidation"), and compare the tag sets of the ARC-Seal,
ARC-Message-Signature and ARC-Authentication-Results with the expected ones, white space
removed (SOURCES.md). Equal b= values prove the hashed octets are the same as the suite's.
An empty expected AS means no set is to be added (RFC 8617 §5.1 step 1).

The suite's keys are 1024-bit RSA: exactly the RFC 8301 §3.2 floor (keys *below* 1024 bits
are refused), so the default policy accepts them and ``as_fields_b_512`` fails as it must.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import conformance
from mailmoat.auth.arc import ARCStatus, authres_results, seal, validate
from mailmoat.auth.dkim import load_private_key, normalize_line_endings, split_message
from mailmoat.clock import FixedClock
from mailmoat.resolver.fake import FakeResolver

#: Validation clock: the suite's signatures carry t=12345..12347 and no x=.
VALIDATION_NOW = 1_700_000_000


def _scenarios(name: str) -> list[dict[str, Any]]:
    path: Path = conformance("arc-test-suite", "tests", name)
    with path.open("rb") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _resolver(records: dict[str, str] | None) -> FakeResolver:
    fake = FakeResolver()
    for name, value in (records or {}).items():
        # the YAML folds long records over lines: one TXT value, newlines not part of it
        fake.add_txt(name, "".join(value.split("\n")).strip())
    return fake


def _validation_cases() -> list[Any]:
    cases = []
    for scenario in _scenarios("arc-draft-validation-tests.yml"):
        for test_id, test in scenario["tests"].items():
            cases.append(pytest.param(test, scenario.get("txt-records"), id=test_id))
    return cases


def _signing_cases() -> list[Any]:
    cases = []
    for scenario in _scenarios("arc-draft-sign-tests.yml"):
        for test_id, test in scenario["tests"].items():
            cases.append(pytest.param(test, scenario, id=test_id))
    return cases


def _message(text: str | None) -> bytes:
    return normalize_line_endings((text or "").encode("utf-8"))


@pytest.mark.parametrize(("test", "records"), _validation_cases())
def test_validation(test: dict[str, Any], records: dict[str, str] | None) -> None:
    expected = (test["cv"] or "fail").lower()  # see the module docstring for the empty cv
    outcome = asyncio.run(validate(_message(test["message"]), _resolver(records),
                                   clock=FixedClock(wall=VALIDATION_NOW)))
    assert outcome.result.value == expected, (test["description"], outcome.reason)


def _tag_set(text: str) -> set[str]:
    return {t for t in "".join(text.split()).split(";") if t}


def _value(field: bytes) -> str:
    return field.decode("ascii").partition(":")[2]


@pytest.mark.parametrize(("test", "scenario"), _signing_cases())
def test_signing(test: dict[str, Any], scenario: dict[str, Any]) -> None:
    message = _message(test["message"])
    now = int(test["t"])
    resolver = _resolver(scenario["txt-records"])
    chain = asyncio.run(validate(message, resolver, clock=FixedClock(wall=now)))
    header, _ = split_message(message)
    srv_id = test["srv-id"]
    key = load_private_key(scenario["privatekey"].encode("ascii"))
    new = seal(message, chain, authserv_id=srv_id, results=authres_results(header, srv_id),
               domain=scenario["domain"], selector=scenario["sel"], private_key=key,
               timestamp=now, headers=test["sig-headers"].split(":"))
    if not test["AS"]:
        assert new is None, "RFC 8617 §5.1 step 1: no set is added to a failed chain"
        return
    assert new is not None
    assert _tag_set(_value(new.authentication_results)) == _tag_set(test["AAR"])
    assert _tag_set(_value(new.message_signature)) == _tag_set(test["AMS"])
    assert _tag_set(_value(new.seal)) == _tag_set(test["AS"])
    # and what we sealed validates (pass, or fail for a chain that was failing already)
    sealed = new.fields + message
    again = asyncio.run(validate(sealed, resolver, clock=FixedClock(wall=now)))
    want = ARCStatus.FAIL if new.cv is ARCStatus.FAIL else ARCStatus.PASS
    assert again.result is want, again.reason
