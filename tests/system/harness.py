"""What the system tests share besides fixtures: the debs under test, booting, installing.

(A module of its own rather than conftest.py, which tests cannot import reliably: tests/ has
a conftest.py of its own.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nspawn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHARE_INSIDE = "/mnt/systest"  # the share directory, read-only inside every container
PACKAGE = "architect-cleanup"
API_PACKAGE = "architect-cleanup-api"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}

#: Figures for the closing summary (cold/warm cache, boot and install times).
TIMINGS: dict[str, list[float]] = {}


def timing(key: str, seconds: float) -> None:
    TIMINGS.setdefault(key, []).append(seconds)


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


def make_share(path: Path, debs: dict[str, Path]) -> Path:
    """The directory shown at /mnt/systest: the debs and the demo tree builder."""
    (path / "debs").mkdir(parents=True)
    for deb in debs.values():
        shutil.copy2(deb, path / "debs" / deb.name)
    shutil.copy2(REPO / "tests" / "demo.py", path / "demo.py")
    shutil.copytree(REPO / "tests" / "data", path / "data")
    return path


# --- containers ------------------------------------------------------------------------------


@contextlib.contextmanager
def booted(rootfs_dir: Path, workdir: Path, share: Path,
           failed: Callable[[], bool] = lambda: False) -> Iterator[nspawn.Container]:
    """A booted container, stopped on the way out whatever happens; when *failed* says the
    test failed, the container's journal goes to stderr first (pytest shows it)."""
    box = nspawn.Container(rootfs_dir, workdir, binds=[nspawn.Bind(share, SHARE_INSIDE)])
    box.start()
    timing("container boot", box.boot_seconds or 0.0)
    try:
        yield box
    finally:
        try:
            if box.running and failed():
                dump_journal(box)
        finally:
            t0 = time.monotonic()
            box.stop()
            timing("container stop", time.monotonic() - t0)


def dump_journal(box: nspawn.Container, lines: int = 150) -> None:
    proc = box.run(f"journalctl -b --no-pager -o short-monotonic | tail -n {lines}",
                   check=False)
    sys.stderr.write(f"--- journal of {box.name} (last {lines} lines) ---\n{proc.stdout}\n")


def seed_tree(box: nspawn.Container, base: str = "/") -> None:
    """tests/demo.py's dashboard tree at BASE/srv/architect, its /tmp logs in BASE/tmp."""
    box.run(["python3", f"{SHARE_INSIDE}/demo.py", "build", "--dir", base])


def apt_install(box: nspawn.Container, *debs: Path) -> str:
    """``apt-get install`` the debs from the share; returns apt's output."""
    paths = [f"{SHARE_INSIDE}/debs/{d.name}" for d in debs]
    t0 = time.monotonic()
    out = box.run(["apt-get", "install", "-y", "--no-install-recommends", *paths],
                  env=APT_ENV).stdout
    timing("apt install", time.monotonic() - t0)
    return out
