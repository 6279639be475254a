"""Smoke tests of ``bench.inbound`` (issue #6) and ``bench.submission`` (issue #7): each runs
end to end for a handful of messages, bounded in time, so the benchmarks cannot rot unseen.

They run as ``python -m bench.<name>`` subprocesses (as a person runs them; the benchmarks
start their servers as children of that process and bind 127.0.0.1 only), write their table
as JSON, and the test checks that every row accepted messages with no refusal or error and
that the post-run checks of the stored messages (authentication results on the inbound side,
DKIM signatures that dkimpy verifies on the submission side) found no problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: each benchmark run is bounded: a handful of messages, short rows, and this wall clock
TIMEOUT = 180


def run_bench(module: str, out: Path, *extra: str) -> dict[str, Any]:
    for name in ("aiosmtpd", "dkim", "spf", "authheaders", "uvloop"):
        pytest.importorskip(name)
    proc = subprocess.run(
        [sys.executable, "-m", module, "--messages", "12", "--sessions", "3", "--seconds", "5",
         "--rounds", "1", "--warmup", "0", "--json", str(out), *extra],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def check_rows(result: dict[str, Any], expected: set[str]) -> None:
    rows = {c["row"]: c for c in result["cells"]}
    assert expected <= set(rows), sorted(rows)
    for name, cell in rows.items():
        assert cell["ok"] > 0, (name, cell)
        assert cell["refused"] == 0, (name, cell)
        assert cell["errors"] == 0, (name, cell)
        assert cell["ok"] <= 12, (name, cell)  # the message budget holds
        assert cell["rate"] > 0, (name, cell)
    assert result["problems"] == []


def test_inbound_benchmark_runs(tmp_path: Path) -> None:
    result = run_bench("bench.inbound", tmp_path / "inbound.json", "--verify-seconds", "0.02")
    check_rows(result, {"mailmoat full (SPF+DKIM+DMARC, fsync)",
                        "mailmoat accept-only (inbound=None, fsync)",
                        "glue: aiosmtpd+pyspf+dkimpy+DMARC+fsync"})


def test_submission_benchmark_runs(tmp_path: Path) -> None:
    result = run_bench("bench.submission", tmp_path / "submission.json", "--per-conn", "4",
                       "--signing-seconds", "0.02")
    check_rows(result, {f"{side} {label}" for side in ("mailmoat", "glue aiosmtpd+dkimpy")
                        for label in ("RSA-2048", "Ed25519", "dual RSA+Ed25519")})
