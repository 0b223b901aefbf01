#!/usr/bin/python3
"""Check the systemd units: ``systemd-analyze verify`` (any output fails) and
``systemd-analyze security --offline=true`` (exposure score at most 2.0 for the cleanup
service and its notification units, 2.5 for the REST API's).

``check_units.py`` checks the repository's systemd/ directory; ``check_units.py --deb FILE
[--deb FILE]`` checks the units inside built packages (architect-cleanup, and
architect-cleanup-api when given). verify runs against a scratch root (``--root``) holding the
host's own units, ours, the commands the services run and the manual page, so that it checks
ExecStart= and Documentation= for real: from the repository that is the venv's
``architect-cleanup`` and packaging/architect-cleanup.1; from packages, their own files. The
API service runs Debian's /usr/bin/gunicorn (a dependency), copied from the host.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE = "architect-cleanup.service"
TIMER = "architect-cleanup.timer"
API_SOCKET = "architect-cleanup-api.socket"
API_SERVICE = "architect-cleanup-api.service"
NOTIFY_SERVICE = "architect-cleanup-notify.service"
FAILURE_SERVICE = "architect-cleanup-failure@.service"
UNITS = (SERVICE, TIMER, API_SOCKET, API_SERVICE, NOTIFY_SERVICE, FAILURE_SERVICE)
MAX_EXPOSURE = 2.0
#: The highest exposure score each service may have.
MAX_EXPOSURES = {SERVICE: MAX_EXPOSURE, API_SERVICE: 2.5, NOTIFY_SERVICE: MAX_EXPOSURE,
                 FAILURE_SERVICE: MAX_EXPOSURE}
GUNICORN = Path("/usr/bin/gunicorn")
HOST_UNITS = Path("/lib/systemd/system")
_SCORE_RX = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ")


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120,
                          **kw)  # type: ignore[call-overload]


def root_from_repo(root: Path, command: Path) -> None:
    """A scratch root with the host's units, the repository's units, *command* as
    /usr/bin/architect-cleanup (and the host's gunicorn) and the hand-written manual page."""
    _host_units(root)
    for unit in UNITS:
        shutil.copy2(REPO / "systemd" / unit, root / "usr/lib/systemd/system" / unit)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2(command, root / "usr/bin/architect-cleanup")
    _gunicorn(root)
    man1 = root / "usr/share/man/man1"
    man1.mkdir(parents=True)
    shutil.copy2(REPO / "packaging" / "architect-cleanup.1", man1 / "architect-cleanup.1")


def root_from_deb(root: Path, *debs: Path) -> None:
    """A scratch root with the host's units and the packages' files unpacked over them."""
    _host_units(root)
    for deb in debs:
        proc = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if proc.returncode != 0:
            raise SystemExit(f"dpkg-deb -x {deb} failed: {proc.stderr}")
    if any((root / d / API_SERVICE).is_file()
           for d in ("lib/systemd/system", "usr/lib/systemd/system")):
        _gunicorn(root)


def _gunicorn(root: Path) -> None:
    """The API service's ExecStart= command: Debian's gunicorn, a dependency of the package."""
    if not GUNICORN.is_file():
        raise SystemExit(f"{GUNICORN} is missing: apt install gunicorn (make setup)")
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(GUNICORN, root / "usr/bin" / GUNICORN.name)


def _host_units(root: Path) -> None:
    # --root needs the standard targets (sysinit.target, timers.target, ...) inside it.
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)


def unit_dir(root: Path) -> Path:
    for d in ("lib/systemd/system", "usr/lib/systemd/system"):
        if (root / d / SERVICE).is_file():
            return root / d
    raise SystemExit(f"{SERVICE} not found in {root}")


def verify(root: Path) -> str:
    """All output of ``systemd-analyze verify`` on our units inside *root* ("" when clean)."""
    rel = unit_dir(root).relative_to(root)
    env = dict(os.environ, MANPATH=str(root / "usr/share/man"), SYSTEMD_LOG_COLOR="0")
    units = [u for u in UNITS if (root / rel / u).is_file()]
    proc = _run(["systemd-analyze", "verify", f"--root={root}",
                 *(f"/{rel}/{u}" for u in units)], env=env)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and not out:
        out = f"systemd-analyze verify exited with {proc.returncode}"
    return out


def security(service: Path) -> tuple[float, str]:
    """The overall exposure score of ``systemd-analyze security --offline=true``, and the
    report."""
    proc = _run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(service)],
                env=dict(os.environ, SYSTEMD_COLORS="0"))
    report = proc.stdout + proc.stderr
    m = _SCORE_RX.search(report)
    if m is None:
        raise SystemExit(f"no exposure score in systemd-analyze output:\n{report}")
    return float(m.group(1)), report


def check(root: Path) -> tuple[list[str], list[str]]:
    """(problems, the services checked with their scores)."""
    problems = []
    out = verify(root)
    if out:
        problems.append(f"systemd-analyze verify is not silent:\n{out}")
    scores = []
    for service, limit in MAX_EXPOSURES.items():
        path = unit_dir(root) / service
        if not path.is_file():
            continue
        score, report = security(path)
        print(f"systemd-analyze security --offline=true {service}: {score}")
        scores.append(f"{service} {score} <= {limit}")
        if score > limit:
            problems.append(f"{service}: exposure {score} > {limit}:\n{report}")
    return problems, scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--deb", type=Path, action="append",
                   help="check the units inside this package (repeat for several)")
    p.add_argument("--command", type=Path,
                   default=REPO / ".venv" / "bin" / "architect-cleanup",
                   help="the command to stand in for /usr/bin/architect-cleanup")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="check-units-") as tmp:
        root = Path(tmp)
        if args.deb:
            root_from_deb(root, *args.deb)
        else:
            root_from_repo(root, args.command)
        problems, scores = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"units OK: verify silent, exposure {', '.join(scores)}"
              + (f" ({', '.join(map(str, args.deb))})" if args.deb else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
