#!/usr/bin/python3
"""The system tests' bookworm root filesystem: built with mmdebstrap, cached as a tarball.

The tarball's name carries a hash of everything that decides its content (the package list,
the mirrors, the variant and this module's format number), so adding a dependency to the
package builds a new one and an unchanged list reuses the old one. The cache lives in
``$ARCHITECT_SYSTEST_CACHE`` or /var/cache/architect-cleanup-tests: it survives between
``make test`` runs on one machine, and a fresh machine (CI) builds it cold (about a minute).

The packages are the container's whole world: it boots without a network, so ``apt install
./architect-cleanup_*.deb`` must find every dependency already installed. Besides the base
list below, the dependencies named in the .deb files under test are added (``extra``), so a
dependency the packaging gains later is installed here without editing this file.

The tarball is also kept unpacked beside it (``ensure_tree``): containers boot it as the
read-only lower layer of a volatile overlay, so sessions neither unpack nor delete 260 MB.

Run as a script (``tests/system/rootfs.py build``) it builds or finds the tree and prints its
path; ``check`` says whether the system tests can run here. The pytest fixtures in
conftest.py call the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: Bump when the way the tarball is built changes (options, hooks), to invalidate caches.
FORMAT = 2
SUITE = "bookworm"
VARIANT = "apt"  # Essential: yes packages plus apt: the smallest tree `apt install` works in
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: A booted systemd, and the runtime dependencies of architect-cleanup and architect-cleanup-api
#: (python3-flask, gunicorn; curl to call the API), so one tarball serves both packages; the
#: metrics' Recommends: (python3-prometheus-client) and Debian's node_exporter, whose textfile
#: collector the system test scrapes.
#: The backups' Recommends (python3-zstandard, python3-boto3) serve the offload test. A
#: change here changes the cache key: a new tarball.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus",
    "python3", "python3-systemd", "python3-tomli-w",
    "python3-flask", "gunicorn", "curl",
    "python3-prometheus-client", "prometheus-node-exporter",
    # Recommends of architect-cleanup: backup compression and offload (issue 15)
    "python3-zstandard", "python3-boto3",
)
DEFAULT_CACHE = "/var/cache/architect-cleanup-tests"
#: Tarballs of other package lists unused for this long are removed after a build.
PRUNE_AFTER_DAYS = 14
PR_SET_PDEATHSIG = 1
#: mmdebstrap builds its temporary tree here when it is a tmpfs with room (about 350 MB).
SCRATCH = "/dev/shm"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHITECT_SYSTEST_CACHE") or DEFAULT_CACHE)


def package_list(extra: Iterable[str] = ()) -> list[str]:
    """The sorted, de-duplicated package list: the base list plus *extra*."""
    return sorted(set(BASE_PACKAGES) | set(extra))


def cache_key(packages: Sequence[str]) -> str:
    text = "\n".join([f"format={FORMAT}", f"suite={SUITE}", f"variant={VARIANT}",
                      *MIRRORS, *packages])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tarball_path(packages: Sequence[str], directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"rootfs-{SUITE}-{cache_key(packages)}.tar"


_DEP_NAME = re.compile(r"^([a-z0-9][a-z0-9+.-]+)")


def deb_dependencies(debs: Iterable[Path]) -> list[str]:
    """Package names in the Depends/Pre-Depends of *debs* (the first of each alternative),
    leaving out the packages the *debs* themselves provide."""
    names: set[str] = set()
    own: set[str] = set()
    for deb in debs:
        out = subprocess.run(["dpkg-deb", "--show", "--showformat",
                              "${Package}\n${Pre-Depends}, ${Depends}\n", str(deb)],
                             capture_output=True, text=True, check=True, env=CLEAN_ENV).stdout
        package, _, deps = out.partition("\n")
        own.add(package.strip())
        for clause in deps.split(","):
            first = clause.split("|")[0].strip()
            m = _DEP_NAME.match(first)
            if m:
                names.add(m.group(1))
    return sorted(names - own)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time per cache directory (two sessions may start together)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tarball(packages: Sequence[str], directory: Path | None = None) -> Path:
    """The cached tarball for *packages*, built first when missing (atomically)."""
    directory = directory or cache_dir()
    target = tarball_path(packages, directory)
    with _locked(directory):
        _sweep_partials(directory)
        if target.exists():
            os.utime(target)  # marks it used, for pruning
            log.info("rootfs cache hit: %s", target)
            return target
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial.tar")
        cmd = ["mmdebstrap", f"--variant={VARIANT}", "--include=" + ",".join(packages),
               # dpkg without fsync while building (half the time on this disk); the
               # container's own dpkg (the apt install under test) fsyncs as usual
               "--dpkgopt=force-unsafe-io",
               "--customize-hook=rm \"$1\"/etc/dpkg/dpkg.cfg.d/99mmdebstrap",
               "--quiet", SUITE, str(partial), *MIRRORS]
        env = dict(CLEAN_ENV)
        if _roomy_tmpfs(SCRATCH):
            env["TMPDIR"] = SCRATCH  # build the tree in RAM: nothing to fsync or unlink
        log.info("building rootfs (cold cache): %s", " ".join(cmd))
        t0 = time.monotonic()
        try:
            code, stderr = _run_to_the_end(cmd, env)
            if code != 0:
                raise RuntimeError(f"mmdebstrap failed ({code}):\n{stderr[-4000:]}")
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)
        log.info("rootfs built in %.1fs: %s", time.monotonic() - t0, target)
        _prune(directory, keep=target)
        return target


def _sweep_partials(directory: Path) -> None:
    """Remove what a killed build left; only a lock holder builds, and we hold the lock."""
    for stale in directory.glob(".rootfs-*.partial*"):
        log.warning("removing %s, left by an interrupted build", stale)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _run_to_the_end(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run mmdebstrap so that it always cleans up its temporary tree and the mounts in it.

    It runs in its own session (a Ctrl-C reaches only us), and when we are interrupted it gets
    SIGTERM — its own handler then unmounts and removes — and we wait for it. If we die
    outright, PR_SET_PDEATHSIG sends it the same SIGTERM."""
    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env, text=True, start_new_session=True,
                                preexec_fn=preexec)  # noqa: PLW1509 (no threads)
        try:
            code = proc.wait()
        except BaseException:
            log.warning("interrupted: stopping mmdebstrap (PID %d) and waiting for its "
                        "clean-up", proc.pid)
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        err.seek(0)
        return code, err.read()


def _roomy_tmpfs(path: str, need: int = 2 << 30) -> bool:
    try:
        st = os.statvfs(path)
        with open("/proc/self/mounts") as fh:
            tmpfs = any(line.split()[1:3] == [path, "tmpfs"] for line in fh)
    except OSError:
        return False
    return tmpfs and st.f_bavail * st.f_frsize >= need


def _prune(directory: Path, keep: Path) -> None:
    cutoff = time.time() - PRUNE_AFTER_DAYS * 86400
    for old in directory.glob(f"rootfs-{SUITE}-*.tar"):
        if old != keep and old.stat().st_mtime < cutoff:
            log.info("removing unused rootfs tarball %s and its tree", old)
            old.unlink(missing_ok=True)
            shutil.rmtree(old.with_suffix(""), ignore_errors=True)


def extract(tarball: Path, dest: Path) -> Path:
    """Unpack *tarball* into the new directory *dest* (numeric owners, xattrs kept)."""
    dest.mkdir(mode=0o755)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                    "-C", str(dest), "-xf", str(tarball)], check=True, env=CLEAN_ENV)
    return dest


def tree_path(packages: Sequence[str], directory: Path | None = None) -> Path:
    return tarball_path(packages, directory).with_suffix("")


def ensure_tree(packages: Sequence[str], directory: Path | None = None) -> Path:
    """The tarball for *packages* unpacked next to it, unpacked first when missing.

    Containers use it only as the read-only lower layer of their ``--volatile=overlay`` root,
    so one unpacked tree serves every container and every session (even at the same time);
    it is unpacked under a temporary name and renamed, so it is complete or absent."""
    directory = directory or cache_dir()
    tarball = ensure_tarball(packages, directory)
    tree = tree_path(packages, directory)
    with _locked(directory):
        _sweep_partials(directory)
        if not tree.is_dir():
            partial = tree.with_name(f".{tree.name}.{os.getpid()}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            try:
                extract(tarball, partial)
                partial.rename(tree)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        os.utime(tree)
    return tree


def unavailable_reason() -> str | None:
    """Why the system tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root"
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "dpkg-deb"):
        if shutil.which(tool, path=CLEAN_ENV["PATH"]) is None:
            return f"{tool} is not installed"
    return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"pytest" in fh.read()
    except OSError:
        return False


def _referenced(path: Path) -> bool:
    """True when a live process names *path* on its command line (an nspawn using it)."""
    needle = str(path).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
                if needle in fh.read():
                    return True
    return False


def remove_stale_sessions(base: Path) -> list[Path]:
    """Remove session directories of test sessions that died without cleaning up."""
    removed = []
    for d in base.iterdir():
        if d.is_dir() and d.name.isdigit() and not _alive(int(d.name)) and not _referenced(d):
            log.warning("removing %s, left by a test session that no longer runs", d)
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="build or find the system tests' rootfs tarball")
    p.add_argument("command", choices=("build", "path", "packages", "check"))
    p.add_argument("--deb", type=Path, action="append", default=[],
                   help="also install this .deb's dependencies (repeatable)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "check":
        reason = unavailable_reason()
        print(reason or "ok")
        return 1 if reason else 0
    packages = package_list(deb_dependencies(args.deb))
    if args.command == "packages":
        print("\n".join(packages))
    elif args.command == "path":
        print(tarball_path(packages))
    else:
        print(ensure_tree(packages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
