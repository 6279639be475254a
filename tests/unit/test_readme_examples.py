"""The configuration examples in README.md are valid configurations (a user copies them).

Each ```toml block is parsed with the same validation `mailmoat serve --config` uses; a renamed
or mistyped key in the README fails here instead of in a user's first start.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailmoat.gateway.config import Config, parse_config

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)


def blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def parsed() -> list[Config]:
    return [parse_config(text, base_dir="/", source=f"README block {i}")
            for i, text in enumerate(blocks())]


def test_readme_has_both_gateway_examples() -> None:
    assert len(blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_BLOCK.findall(README.read_text("utf-8")))))
def test_every_readme_config_block_is_valid(index: int) -> None:
    parse_config(blocks()[index], base_dir="/", source=f"README block {index}")


def test_mx_example_delivers_to_lmtp_and_quarantines_by_header() -> None:
    mx = next(c for c in parsed() if all(lst.role == "mx" for lst in c.listener))
    assert mx.delivery.destination == "lmtp://127.0.0.1:24"
    assert mx.relay.local_domains == ("example.org",)
    assert mx.policy.quarantine_folder == ""
    assert mx.policy.trusted_arc_sealers == ("lists.example.net",)


def test_send_example_signs_twice_and_enforces_tls_policies() -> None:
    send = next(c for c in parsed() if all(lst.role == "submission" for lst in c.listener))
    assert {(k.domain, k.selector) for k in send.dkim_signing.keys} == {
        ("example.org", "ed1"), ("example.org", "rsa1")}
    assert send.dns.trust_ad
    assert send.delivery.mta_sts
    assert send.delivery.dane
    assert {lst.port for lst in send.listener} == {465, 587}
