"""Shared test helpers: where the conformance data lives, and how a test asks for a real peer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout, as CI lays it out (override with MAILMOAT_SHARED).
SHARED = Path(os.environ.get("MAILMOAT_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "conformance"
REQUIRE_PEERS = os.environ.get("MAILMOAT_REQUIRE_PEERS") == "1"


def missing(reason: str) -> None:
    """Skip with a clear reason, or fail when peers are required (CI)."""
    if REQUIRE_PEERS:
        pytest.fail(f"MAILMOAT_REQUIRE_PEERS=1 but {reason}")
    pytest.skip(reason)


def require_peer(program: str) -> str:
    """Return the path of a peer program, or skip/fail (see :func:`missing`)."""
    path = shutil.which(program) or next(
        (p for d in ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/lib/dovecot")
         if (p := os.path.join(d, program)) and os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        missing(f"peer program {program!r} is not installed (see scripts/install-peers)")
        raise AssertionError("unreachable")
    return path


def conformance(*parts: str) -> Path:
    """Path into ../shared/conformance; skip/fail when the data is not there."""
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        missing(f"conformance data {path} not found (set MAILMOAT_SHARED)")
    return path
