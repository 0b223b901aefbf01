"""The package's shape, kept (issue 14): every function short enough to read at once.

ruff's PLR0912/PLR0915 (too many branches, too many statements) are on in pyproject.toml for
``architect_cleanup/``; this adds the length: no function longer than 45 lines, counted from
its ``def`` to its last line (a nested function counts inside its parent too).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "architect_cleanup"
MAX_LINES = 45


def long_functions(source: str, name: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                out.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_in_the_package_is_longer_than_45_lines() -> None:
    found = [f for p in sorted(PACKAGE.rglob("*.py"))
             for f in long_functions(p.read_text(encoding="utf-8"),
                                     str(p.relative_to(PACKAGE.parent)))]
    assert found == [], "split these into named steps:\n" + "\n".join(found)


def test_the_length_check_finds_a_long_function() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    assert long_functions(f"def f():\n{body}", "m.py") == ["m.py:1 f (46 lines)"]
    assert long_functions(f"def f():\n{body[:-len('    x44 = 44')-1]}", "m.py") == []
