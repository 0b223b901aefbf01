#!/usr/bin/python3
"""The attacker: runs as an unprivileged user that owns part of the dashboard tree and races
the cleanup in a tight loop until SIGTERM, then writes how often it did to REPORT (JSON).

    attacker.py flip REPORT SPEC      swap directories for symlinks to victims and back
    attacker.py replace REPORT SPEC   replace old files by young ones under the same name

SPEC is JSON. Standard library only (it runs with Debian's python3 as another user).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time


class _Stop:
    requested = False


def on_term(_signum: int, _frame: object) -> None:
    _Stop.requested = True


def refill(d: str, names: list[str], mtime: float) -> int:
    """Old files the cleanup will want to delete, recreated when it has."""
    made = 0
    for n in names:
        p = os.path.join(d, n)
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        except OSError:
            return made  # the directory is a symlink right now (another flipper): later
        os.write(fd, b"attacker's own old file\n")
        os.close(fd)
        os.utime(p, (mtime, mtime), follow_symlinks=False)
        made += 1
    return made


def flip(spec: dict) -> dict:
    """Each iteration swaps every directory for a symlink to its victim and back:
    rename(dir, aside); symlink(victim, dir); ...; unlink(dir); rename(aside, dir).

    A pair may list old files to put back when the cleanup has deleted them (every few
    iterations, while the directory is real), and ask for the directory itself to look old
    (a cache directory the cleanup removes whole is made again)."""
    pairs = spec["pairs"]
    hold = float(spec.get("hold", 0.0))  # seconds to hold each state (0: just yield)
    n = made = 0
    print("ready", flush=True)
    while not _Stop.requested:
        for p in pairs:
            d, victim = p["dir"], p["victim"]
            aside = d + ".aside"
            try:
                os.rename(d, aside)
            except FileNotFoundError:  # the cleanup removed it (a cache directory)
                os.mkdir(d)
                continue
            os.symlink(victim, d)
            if hold:
                time.sleep(hold)
            else:
                os.sched_yield()
            os.unlink(d)
            os.rename(aside, d)
            if hold:
                time.sleep(hold)
        n += 1
        if n % 8 == 0:
            for p in pairs:
                if p.get("files"):
                    made += refill(p["dir"], p["files"], p["mtime"])
                if p.get("old_dir"):
                    with contextlib.suppress(OSError):
                        os.utime(p["dir"], (p["mtime"], p["mtime"]), follow_symlinks=False)
    return {"iterations": n, "refilled": made}


def replace(spec: dict) -> dict:
    """Cycle through names: write an old file (the cleanup's to delete), then, after a short
    random delay, rename a *young* file over it. Every young file must survive the cleanup;
    the report lists them."""
    d = spec["dir"]
    old, young = float(spec["old_mtime"]), float(spec["young_mtime"])
    rng = random.Random(spec.get("seed", 1))
    n = 0
    young_names: list[str] = []
    print("ready", flush=True)
    while not _Stop.requested:
        name = f"r{n}.log"
        for mtime, tag in ((old, b"old"), (young, b"young")):
            # (the staging name matches no rule: "x.log.old" would be an old rotated log)
            tmp = os.path.join(d, f".stage-{n}-{tag.decode()}")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, tag + b" " + name.encode() + b"\n")
            os.close(fd)
            os.utime(tmp, (mtime, mtime))
            os.rename(tmp, os.path.join(d, name))
            if tag == b"old":
                # let the cleanup see the old file for a moment (up to 3 ms)
                end = time.perf_counter() + rng.random() * 0.003
                while time.perf_counter() < end:
                    pass
        young_names.append(name)
        n += 1
    return {"iterations": n, "young": young_names}


def main() -> int:
    mode, report, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    signal.signal(signal.SIGTERM, on_term)
    result = {"flip": flip, "replace": replace}[mode](spec)
    with open(report, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
