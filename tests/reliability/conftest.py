"""The reliability suite's fixtures and its closing summary.

``make reliability`` (part of ``make test``) runs the quick mode; ``make stress`` sets
RELIABILITY_LONG=1, which raises every race's iterations and the number of crash points.
The figures the tests record are printed at the end of the session and written to
build/reliability-figures.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "unit"))  # sd_helpers
sys.path.insert(2, str(Path(__file__).resolve().parent.parent))  # gunicorn_server, demo

import kit
from kit import FIGURES, IS_ROOT, Arena, User

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mounts, other users)")


@pytest.fixture(params=[None, 1], ids=["pool-default", "pool-1"])
def pool(request: pytest.FixtureRequest) -> Iterator[int | None]:
    """The product's thread pool (``safety.workers``) at its default size, then at 1 (the
    sequential engine): a module with ``pytestmark = pytest.mark.usefixtures("pool")`` runs
    every test both ways. Set before the arena writes its configuration."""
    kit.WORKERS = request.param
    try:
        yield request.param
    finally:
        kit.WORKERS = None


@pytest.fixture
def arena() -> Iterator[Arena]:
    a = kit.make_arena()
    try:
        yield a
    finally:
        kit.destroy_arena(a)


@pytest.fixture(scope="session")
def attacker_user() -> Iterator[User]:
    """The unprivileged account that owns the attacked part of the tree."""
    if not IS_ROOT:
        pytest.skip("creating the attacker's account needs root")
    user, created = kit.ensure_attacker()
    try:
        yield user
    finally:
        if created:
            kit.remove_attacker()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    doc = FIGURES.to_dict()
    if not (doc["attacks_tried"] or doc["faults_injected"] or doc["race_iterations"]):
        return
    w = terminalreporter
    w.section(f"reliability figures ({doc['mode']} mode)")
    w.line(f"attacks tried:                    {doc['attacks_tried']:>10,}")
    for name, n in doc["attacks"].items():
        w.line(f"    {name:<40}{n:>8,}")
    w.line(f"faults injected:                  {doc['faults_injected']:>10,}")
    for name, n in doc["faults"].items():
        w.line(f"    {name:<40}{n:>8,}")
    w.line("race iterations (attacker loops / product runs):")
    for name, n in doc["race_iterations"].items():
        w.line(f"    {name:<40}{n:>10,} / {doc['race_runs'].get(name, 0):,}")
    w.line(f"files outside the root changed:   {doc['files_outside_root_changed']:>10,}"
           "   (must be 0)")
    w.line(f"special files opened:             {doc['special_files_opened']:>10,}"
           "   (must be 0)")
    w.line(f"rows lost:                        {doc['rows_lost']:>10,}   (must be 0)")
    for name, value in doc["measures"].items():
        w.line(f"    {name:<40}{value}")
    out = kit.REPO / "build" / "reliability-figures.json"
    try:
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        w.line(f"(written to {out.relative_to(kit.REPO)})")
    except OSError:
        pass
