"""Shared fixtures: a fixed clock, an isolated environment, and a dashboard-like tree."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/demo.py

from architect_cleanup.config import Config, parse_config

#: The fixed "now" of every unit test: 2026-11-26 12:00:00 UTC.
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW_TS = NOW.timestamp()
DAY = 86400.0
HOUR = 3600.0


def pytest_configure(config: pytest.Config) -> None:
    """Before any fixture (module-scoped servers start before the per-test environment):
    never the host's node_exporter directory for the metrics file."""
    os.environ["ARCHITECT_CLEANUP_TEXTFILE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"architect-cleanup-tests-no-textfile-{os.getpid()}")


#: Unit-test modules that start real servers or search wide input spaces: marked ``slow``, so
#: ``make check`` (lint and the rest of the unit tests, in about a minute) leaves them to
#: ``make unit`` and ``make test``.
SLOW_UNIT_MODULES = {
    "test_offload.py": "a real S3 server (SeaweedFS) per module, killed and restarted",
    "test_backups_offload.py": "a real S3 server, SIGKILLed uploads",
    "test_api_gunicorn.py": "real gunicorn servers",
    "test_api_property.py": "Hypothesis: arbitrary JSON bodies",
    "test_api_schema.py": "Hypothesis: the schema against every valid body",
    "test_retention_restic.py": "real restic repositories",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path
        if path.parent.name == "unit" and path.name in SLOW_UNIT_MODULES:
            item.add_marker(pytest.mark.slow)
    if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        _fastest_first(items)


def _fastest_first(items: list[pytest.Item]) -> None:
    """Under ``make mutate``: a mutant's tests (which mutmut hands over in no useful order, and
    runs with ``-x``) in the order likely to kill it soonest: modules without a server first,
    then by their fastest test, each module's tests together (a module-scoped server starts
    once) and fastest first. The durations are mutmut's own, from its clean run."""
    try:
        with open("mutmut-stats.json", encoding="utf-8") as fh:  # in mutmut's mutants/
            took: dict[str, float] = json.load(fh)["duration_by_test"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    first: dict[Path, float] = {}
    for it in items:
        t = took.get(it.nodeid, 0.0)
        first[it.path] = min(first.get(it.path, t), t)
    items.sort(key=lambda it: (it.path.name in SLOW_UNIT_MODULES, first[it.path],
                               str(it.path), took.get(it.nodeid, 0.0)))


@pytest.fixture(params=["c", "python"])
def fs_loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The file layer's hot loops in C (``architect_cleanup._fsops``, which ``make setup``
    builds) and in Python: a module with ``pytestmark = pytest.mark.usefixtures("fs_loops")``
    runs every test both ways."""
    from architect_cleanup import fs

    if request.param == "python":
        monkeypatch.setattr(fs, "FSOPS", None)
    else:
        assert fs.FSOPS is not None, "architect_cleanup._fsops is not built: make setup"
    return str(request.param)


def patch_fsops(monkeypatch: pytest.MonkeyPatch, **funcs: Callable[..., Any]) -> None:
    """Bend the C loops of the file layer for one test (a no-op when the Python loops run):
    each of *funcs* (``listdir_filter=...``) replaces that function of ``fs.FSOPS`` and is
    called with the real one first, then the call's arguments."""
    from architect_cleanup import fs

    real = fs.FSOPS
    if real is None:
        return
    ns = SimpleNamespace(CHANGED=real.CHANGED, listdir_filter=real.listdir_filter,
                         lstat_many=real.lstat_many, unlink_many=real.unlink_many)
    for name, func in funcs.items():
        setattr(ns, name, functools.partial(func, getattr(real, name)))
    monkeypatch.setattr(fs, "FSOPS", ns)


@pytest.fixture
def bdir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A backup directory and a descriptor of it (the backup modules work fd-relative)."""
    d = tmp_path / "backups"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield d, fd
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads /etc, writes /var/lib (state, history, metrics) or locks /run, or talks
    to a real notify socket."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "_state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "_run"))
    monkeypatch.setenv("ARCHITECT_CLEANUP_CONFIG", str(tmp_path / "_no_config.toml"))
    # the metrics textfile: a directory that does not exist unless a test makes it
    monkeypatch.setenv("ARCHITECT_CLEANUP_TEXTFILE_DIR", str(tmp_path / "_textfile"))
    for var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID"):
        monkeypatch.delenv(var, raising=False)
    yield
    # cli.main() routes the package logger to its own handler; give caplog its records back
    logger = logging.getLogger("architect_cleanup")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def touch(path: Path, age: float = 0.0, size: int = 0, *, now: float = NOW_TS,
          data: bytes | None = None) -> Path:
    """Create *path* (and its parents) *age* seconds old relative to the test clock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        if data is not None:
            fh.write(data)
        elif size:
            fh.write(b"x" * size)
    t = now - age
    os.utime(path, (t, t), follow_symlinks=False)
    return path


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry below *roots* with (inode, size, mtime_ns, link target) — to compare."""
    out: dict[str, tuple[int, int, int, str]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                target = os.readlink(p) if os.path.islink(p) else ""
                out[p] = (st.st_ino, st.st_size, st.st_mtime_ns, target)
    return out


@pytest.fixture
def srv(tmp_path: Path) -> Path:
    """An empty dashboard install directory."""
    root = tmp_path / "srv" / "architect"
    (root / "data").mkdir(parents=True)
    return root


@pytest.fixture
def tmpdir_(tmp_path: Path) -> Path:
    """The test's stand-in for /tmp."""
    d = tmp_path / "tmp"
    d.mkdir()
    return d


def make_config(root: Path, tmp: Path | None = None, **sections: dict[str, object]) -> Config:
    raw: dict[str, object] = {"root": str(root)}
    raw.update({k: v for k, v in sections.items() if not isinstance(v, dict)})
    for k, v in sections.items():
        if isinstance(v, dict):
            raw[k] = v
    logs = dict(raw.get("logs", {}))  # type: ignore[call-overload]
    logs.setdefault("tmp_dir", str(tmp) if tmp else "")
    raw["logs"] = logs
    # The retention tests fill backups with placeholder bytes, which verification (on by
    # default) would rightly call corrupt: their tests turn it on with real databases.
    backups = dict(raw.get("backups", {}))  # type: ignore[call-overload]
    backups.setdefault("verify", {"check": "off"})
    raw["backups"] = backups
    return parse_config(raw)


@pytest.fixture
def cfg(srv: Path, tmpdir_: Path) -> Config:
    return make_config(srv, tmpdir_)
