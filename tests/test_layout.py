"""The codebase's shape rules (the developers' guide, "Architecture"): checked here so that a
module that grows past them fails the build instead of being found by the next reader (one had
grown to 404 lines unnoticed)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "luna_sender"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


def test_the_package_root_holds_at_most_8_modules() -> None:
    root = [p.name for p in PACKAGE.glob("*.py")]
    assert len(root) <= 8, root


def test_only_the_bus_imports_redis() -> None:
    """Handlers never touch Redis directly: every Redis client lives under bus/."""
    offenders = []
    for path in _modules():
        if path.relative_to(PACKAGE).parts[0] == "bus":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n == "redis" or n.startswith("redis.") for n in names):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, offenders
