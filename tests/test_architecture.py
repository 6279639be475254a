"""The layer rules of ARCHITECTURE.md, enforced.

A module imports only its own layer or lower; ``smtp`` and ``auth`` never import each other;
layers L0-L2 do no I/O (no sockets, ssl, dnspython, httpx, subprocess, databases) and never read
the wall clock themselves; the SMTP engine does not even import asyncio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mailmoat"

LAYER = {
    "errors": 0, "limits": 0, "clock": 0, "__init__": 0,
    "smtp": 1, "message": 1, "resolver": 1,
    "auth": 2, "analysis": 2, "reports": 2,
    "net": 3, "spool": 3, "store": 3,
    "gateway": 4,
    "cli": 5, "web": 5,
}
IO_MODULES = {
    "socket", "ssl", "dns", "httpx", "subprocess", "sqlite3", "psycopg", "urllib.request",
    "http.client", "selectors", "asyncio.subprocess", "shutil",
}
NO_ASYNCIO = {"smtp", "message", "resolver"}
NEVER_EACH_OTHER = {("smtp", "auth"), ("auth", "smtp")}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def test_every_package_has_a_layer() -> None:
    for path in _modules():
        assert _package_of(path) in LAYER, f"{path}: add its package to LAYER and ARCHITECTURE.md"


def violations(pkg: str, source: str, filename: str) -> list[str]:
    """Every layer-rule violation of one module of package ``pkg``."""
    layer = LAYER[pkg]
    found: list[str] = []
    for name, line in _imports(ast.parse(source, filename=filename)):
        where = f"{filename}:{line} imports {name}"
        parts = name.split(".")
        if parts[0] == "mailmoat" and len(parts) > 1 and parts[1] in LAYER:
            target = parts[1]
            if LAYER[target] > layer:
                found.append(f"{where}: L{layer} may not import L{LAYER[target]}")
            if (pkg, target) in NEVER_EACH_OTHER:
                found.append(f"{where}: smtp and auth meet only in gateway")
        if layer <= 2 and pkg != "clock" and (parts[0] in IO_MODULES or name in IO_MODULES):
            found.append(f"{where}: no I/O below L3")
        if pkg in NO_ASYNCIO and parts[0] == "asyncio":
            found.append(f"{where}: the sans-IO layers do not use asyncio")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_layer_rules(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert violations(_package_of(path), source, str(path.relative_to(SRC))) == []


@pytest.mark.parametrize(
    "path", [p for p in _modules() if LAYER[_package_of(p)] <= 2 and p.name != "clock.py"],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_no_wall_clock_below_l3(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            call = f"{node.value.id}.{node.attr}"
            assert call not in {"time.time", "time.monotonic", "datetime.now", "os.urandom"}, (
                f"{path.relative_to(SRC)}:{node.lineno}: inject a Clock/randomness instead of {call}"
            )


def test_rules_catch_violations() -> None:
    """The checker itself must be able to fail."""
    src = "from mailmoat.net import dns\nimport socket\nimport asyncio\nfrom mailmoat import auth\n"
    found = violations("smtp", src, "smtp/x.py")
    assert any("L1 may not import L3" in f for f in found), found
    assert any("no I/O below L3" in f for f in found), found
    assert any("do not use asyncio" in f for f in found), found
    assert any("meet only in gateway" in f for f in found), found
    assert violations("gateway", "from mailmoat.net import dns\nimport socket\n", "g.py") == []
