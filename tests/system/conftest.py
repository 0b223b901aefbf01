"""Fixtures for the system tests: a cached bookworm rootfs, booted containers, the package.

Session: find the .deb files under test, build or reuse the rootfs (a cached tarball, kept
unpacked beside it). Function: ``container`` is a freshly booted systemd (volatile
overlay: nothing carries over between tests); ``installed`` is one with the dashboard's demo
data tree under /srv/architect and /tmp and ``architect-cleanup`` installed with ``apt``.

Every test here is marked ``system``. Without root, systemd-nspawn or mmdebstrap the whole
directory is skipped with the reason (``make test`` prints it in a banner).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import nspawn
import rootfs

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.system)


def pytest_configure(config: pytest.Config) -> None:
    nspawn.install_signal_handlers()
    atexit.register(nspawn.stop_all)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_report_header(config: pytest.Config) -> list[str]:
    debs = harness.find_debs()
    shown = ", ".join(str(p) for p in debs.values()) or "none found (run `make deb`)"
    return [f"system tests: rootfs cache {rootfs.cache_dir()}; packages under test: {shown}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.TIMINGS:
        return
    tr = terminalreporter
    tr.section("system test timings")
    for key, values in harness.TIMINGS.items():
        if len(values) == 1:
            tr.write_line(f"{key}: {values[0]:.1f}s")
        else:
            tr.write_line(f"{key}: n={len(values)} mean {sum(values) / len(values):.1f}s "
                          f"max {max(values):.1f}s")


# --- session ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def system_available() -> None:
    reason = rootfs.unavailable_reason()
    if reason:
        pytest.skip(f"system tests need a booted systemd container: {reason}")


@pytest.fixture(scope="session")
def session_dir(system_available: None) -> Iterator[Path]:
    """A scratch directory for this session (console logs, the share), removed at the end;
    directories left by a killed earlier session are removed first. At the end, any process
    or host mount still using it is an error of the session."""
    base = rootfs.cache_dir() / "sessions"
    base.mkdir(parents=True, exist_ok=True)
    rootfs.remove_stale_sessions(base)
    path = base / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    yield path
    nspawn.stop_all()
    leaks = nspawn.leftovers(path)
    shutil.rmtree(path, ignore_errors=True)
    assert not leaks, f"the system tests left these behind: {leaks}"


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    found = harness.find_debs()
    if harness.PACKAGE not in found:
        pytest.fail(f"no {harness.PACKAGE}_*.deb in {harness.deb_dir()}: build it with "
                    "`make deb` (or point ARCHITECT_CLEANUP_DEB_DIR at a directory holding it)")
    return found


@pytest.fixture(scope="session")
def rootfs_dir(session_dir: Path) -> Path:
    """The unpacked rootfs (read-only to us): the base packages plus the dependencies of the
    debs under test."""
    packages = rootfs.package_list(rootfs.deb_dependencies(harness.find_debs().values()))
    t0 = time.monotonic()
    if rootfs.tree_path(packages).is_dir():
        what = "rootfs (cache hit)"
    elif rootfs.tarball_path(packages).exists():
        what = "rootfs unpacked from the cached tarball"
    else:
        what = "rootfs BUILT (cold cache: mmdebstrap and unpack)"
    tree = rootfs.ensure_tree(packages)
    harness.timing(what, time.monotonic() - t0)
    return tree


@pytest.fixture(scope="session")
def share(session_dir: Path) -> Path:
    """What every container sees read-only at /mnt/systest."""
    return harness.make_share(session_dir / "share", harness.find_debs())


# --- per test --------------------------------------------------------------------------------


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture
def container(rootfs_dir: Path, session_dir: Path, share: Path,
              request: pytest.FixtureRequest) -> Iterator[nspawn.Container]:
    """A freshly booted container (nothing installed)."""
    with harness.booted(rootfs_dir, session_dir, share, lambda: _failed(request)) as box:
        yield box


@pytest.fixture
def installed(container: nspawn.Container, debs: dict[str, Path]) -> nspawn.Container:
    """The demo data tree, then ``apt install ./architect-cleanup_*.deb``."""
    harness.seed_tree(container)
    harness.apt_install(container, debs[harness.PACKAGE])
    return container
