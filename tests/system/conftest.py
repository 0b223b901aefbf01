"""Fixtures for the system tests: a cached bookworm rootfs, booted containers, the package.

Session: find the .deb files under test, build or reuse the rootfs tarball, unpack it once
into this session's directory. Function: ``container`` is a freshly booted systemd (volatile
overlay: nothing carries over between tests); ``installed`` is one with the dashboard's demo
data tree under /srv/architect and /tmp and ``architect-cleanup`` installed with ``apt``.

Every test here is marked ``system``. Without root, systemd-nspawn or mmdebstrap the whole
directory is skipped with the reason (``make test`` prints it in a banner).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nspawn
import rootfs

log = logging.getLogger("systest")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHARE_INSIDE = "/mnt/systest"
PACKAGE = "architect-cleanup"
API_PACKAGE = "architect-cleanup-api"

#: Figures for the closing summary (cold/warm cache, boot times).
TIMINGS: dict[str, list[float]] = {}


def _timing(key: str, seconds: float) -> None:
    TIMINGS.setdefault(key, []).append(seconds)


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
    debs = find_debs()
    shown = ", ".join(str(p) for p in debs.values()) or "none found (run `make deb`)"
    return [f"system tests: rootfs cache {rootfs.cache_dir()}; packages under test: {shown}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    tr = terminalreporter
    tr.section("system test timings")
    for key, values in TIMINGS.items():
        if len(values) == 1:
            tr.write_line(f"{key}: {values[0]:.1f}s")
        else:
            tr.write_line(f"{key}: n={len(values)} mean {sum(values) / len(values):.1f}s "
                          f"max {max(values):.1f}s")


# --- what is under test ----------------------------------------------------------------------


def deb_dir() -> Path:
    return Path(os.environ.get("ARCHITECT_CLEANUP_DEB_DIR") or REPO / "build")


def find_debs() -> dict[str, Path]:
    """The newest ``<package>_*.deb`` of each of our packages in the deb directory."""
    found: dict[str, Path] = {}
    for package in (PACKAGE, API_PACKAGE):
        debs = sorted(deb_dir().glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
        if debs:
            found[package] = debs[-1]
    return found


# --- session fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def system_available() -> None:
    reason = rootfs.unavailable_reason()
    if reason:
        pytest.skip(f"system tests need a booted systemd container: {reason}")


@pytest.fixture(scope="session")
def session_dir(system_available: None) -> Iterator[Path]:
    """A scratch directory for this session (rootfs copy, console logs), removed at the end;
    directories left by a killed earlier session are removed first."""
    base = rootfs.cache_dir() / "sessions"
    base.mkdir(parents=True, exist_ok=True)
    rootfs.remove_stale_sessions(base)
    path = base / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    yield path
    nspawn.stop_all()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    found = find_debs()
    if PACKAGE not in found:
        pytest.fail(f"no {PACKAGE}_*.deb in {deb_dir()}: build it with `make deb` "
                    "(or point ARCHITECT_CLEANUP_DEB_DIR at a directory holding it)")
    return found


@pytest.fixture(scope="session")
def rootfs_dir(session_dir: Path) -> Path:
    """The unpacked rootfs: the base packages plus the dependencies of the debs under test."""
    packages = rootfs.package_list(rootfs.deb_dependencies(find_debs().values()))
    t0 = time.monotonic()
    cached = rootfs.tarball_path(packages).exists()
    tarball = rootfs.ensure_tarball(packages)
    _timing("rootfs tarball (cache hit)" if cached else "rootfs tarball BUILT (cold cache)",
            time.monotonic() - t0)
    t0 = time.monotonic()
    tree = rootfs.extract(tarball, session_dir / "rootfs")
    _timing("rootfs unpack", time.monotonic() - t0)
    return tree


@pytest.fixture(scope="session")
def share(session_dir: Path) -> Path:
    """What the container sees read-only at /mnt/systest: the debs and the demo tree builder."""
    path = session_dir / "share"
    (path / "debs").mkdir(parents=True)
    for deb in find_debs().values():
        shutil.copy2(deb, path / "debs" / deb.name)
    shutil.copy2(REPO / "tests" / "demo.py", path / "demo.py")
    shutil.copytree(REPO / "tests" / "data", path / "data")
    return path


# --- containers ------------------------------------------------------------------------------


@contextlib.contextmanager
def booted(rootfs_dir: Path, session_dir: Path, share: Path,
           request: pytest.FixtureRequest | None = None) -> Iterator[nspawn.Container]:
    box = nspawn.Container(rootfs_dir, session_dir,
                           binds=[nspawn.Bind(share, SHARE_INSIDE)])
    box.start()
    _timing("container boot", box.boot_seconds or 0.0)
    try:
        yield box
    finally:
        try:
            if request is not None and _failed(request) and box.running:
                _dump_journal(box)
        finally:
            t0 = time.monotonic()
            box.stop()
            _timing("container stop", time.monotonic() - t0)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
               for w in ("setup", "call"))


def _dump_journal(box: nspawn.Container) -> None:
    proc = box.run("journalctl -b --no-pager -o short-monotonic | tail -n 150", check=False)
    sys.stderr.write(f"--- journal of {box.name} (last 150 lines) ---\n{proc.stdout}\n")


@pytest.fixture
def container(rootfs_dir: Path, session_dir: Path, share: Path,
              request: pytest.FixtureRequest) -> Iterator[nspawn.Container]:
    """A freshly booted container (nothing installed)."""
    with booted(rootfs_dir, session_dir, share, request) as box:
        yield box


def seed_tree(box: nspawn.Container) -> None:
    """The demo dashboard tree at /srv/architect, and its logs in /tmp."""
    box.run(["python3", f"{SHARE_INSIDE}/demo.py", "build", "--dir", "/"])


def apt_install(box: nspawn.Container, *debs: Path) -> str:
    paths = [f"{SHARE_INSIDE}/debs/{d.name}" for d in debs]
    t0 = time.monotonic()
    out = box.run(["apt-get", "install", "-y", "--no-install-recommends", *paths],
                  env={"DEBIAN_FRONTEND": "noninteractive"}).stdout
    _timing("apt install", time.monotonic() - t0)
    return out


@pytest.fixture
def installed(container: nspawn.Container, debs: dict[str, Path]) -> nspawn.Container:
    """The demo data tree, then ``apt install ./architect-cleanup_*.deb``."""
    seed_tree(container)
    container.apt_output = apt_install(container, debs[PACKAGE])  # type: ignore[attr-defined]
    return container
