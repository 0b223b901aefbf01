"""Checks made once before a run and by ``config check``: the root, the databases, and —
under systemd — the service's writable paths.

Each finding is said once, where an operator sees it first (``config check``, the run's
start), instead of once per target and item later.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from architect_cleanup.config import Config
from architect_cleanup.db import find_databases

log = logging.getLogger(__name__)

SERVICE = "architect-cleanup.service"
READ_WRITE_HINT = ("add it with `systemctl edit architect-cleanup.service` "
                   "([Service] ReadWritePaths=-PATH)")


@dataclass(frozen=True)
class Finding:
    """One problem: an ``error`` means nothing useful can run; a ``warning`` is worked
    around (a missing database is skipped)."""

    level: str
    text: str


def check(cfg: Config, writable: list[str] | None = None) -> list[Finding]:
    """The root, the logs' tmp_dir, the databases; with *writable* (the unit's
    ReadWritePaths=), whether the root and tmp_dir lie inside them."""
    out: list[Finding] = []
    root = cfg.root
    if not os.path.lexists(root):
        out.append(Finding("error", f"root {root} does not exist"))
    elif os.path.islink(root) or not os.path.isdir(root):
        out.append(Finding("error", f"root {root} is not a directory"))
    else:
        _, notes = find_databases(cfg)
        out.extend(Finding("warning", f"database {n}") for n in notes)
    tmp_dir = cfg.logs.tmp_dir if cfg.logs.enabled else ""
    if tmp_dir and not os.path.isdir(tmp_dir):
        out.append(Finding("warning", f"logs.tmp_dir {tmp_dir} does not exist (skipped)"))
    if writable is not None:
        for what, path in (("root", root), ("logs.tmp_dir", tmp_dir)):
            if path and not any(_under(path, w) for w in writable):
                shown = " ".join(writable) or "none"
                out.append(Finding(
                    "warning", f"{what} {path} is outside the writable paths of {SERVICE} "
                               f"(ReadWritePaths={shown}): the timer's runs cannot clean it; "
                               f"{READ_WRITE_HINT}"))
    return out


def _under(path: str, top: str) -> bool:
    path, top = os.path.normpath(path), os.path.normpath(top)
    return top in ("/", path) or path.startswith(top + "/")


def service_writable_paths() -> list[str] | None:
    """The installed unit's ReadWritePaths= (``systemctl show``), or None when systemd is
    not running or the unit is not installed."""
    systemctl = shutil.which("systemctl")
    if not os.path.isdir("/run/systemd/system") or systemctl is None:
        return None
    try:
        proc = subprocess.run([systemctl, "show", "-p", "LoadState", "-p", "ReadWritePaths",
                               SERVICE], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or props.get("LoadState") != "loaded":
        return None
    return [p.lstrip("-+") for p in props.get("ReadWritePaths", "").split() if p.lstrip("-+")]
