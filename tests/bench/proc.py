"""Running one contestant: wall time, CPU time and peak RSS of a command, and medians.

Peak RSS comes from GNU time (``/usr/bin/time -f %M``), not from ``wait4`` in this process:
Linux keeps the largest RSS a process ever had across ``execve``, and a child forked from the
benchmark (which holds the tree's plan, ~100 MB) would report the benchmark's size. GNU time
is a small C program, so the figure is the command's own. Every contestant runs under it, so
its millisecond of overhead is the same for all.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, process start to exit
    rss_kb: int  # peak resident set size of the command
    cpu: float  # user + system seconds of the command
    rc: int
    out: str  # stdout, when captured
    #: while it ran, how long some task on the machine stalled for CPU / for I/O (PSI): the
    #: other work on the machine, for reading the figures (this host is shared)
    cpu_stall: float = 0.0
    io_stall: float = 0.0


def pressure() -> tuple[float, float]:
    """Seconds some task has stalled waiting for CPU and for I/O since boot (Linux PSI)."""
    out = []
    for res in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{res}", encoding="ascii") as fh:
                line = fh.readline()  # "some avg10=... total=<microseconds>"
            out.append(int(line.rsplit("total=", 1)[1]) / 1e6)
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return out[0], out[1]


def run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
        capture: Path | None = None, check: bool = True) -> Run:
    """Run *cmd*, timing it from spawn to exit; stdout to *capture* or /dev/null."""
    with tempfile.NamedTemporaryFile("r", prefix="bench-time-", suffix=".txt") as tf, \
            tempfile.TemporaryFile() as err:
        out_fh = open(capture, "wb") if capture else open(os.devnull, "wb")  # noqa: SIM115
        try:
            c0, i0 = pressure()
            t0 = time.perf_counter()
            p = subprocess.run([GNU_TIME, "-q", "-f", "%M %U %S", "-o", tf.name, *cmd],
                               stdout=out_fh, stderr=err, env=env, check=False)
            wall = time.perf_counter() - t0
            c1, i1 = pressure()
        finally:
            out_fh.close()
        fields = tf.read().split()
        err.seek(0)
        errtext = err.read().decode(errors="replace")
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}\n{errtext[-2000:]}")
    rss, user, sys_ = (int(fields[-3]), float(fields[-2]), float(fields[-1])) \
        if len(fields) >= 3 else (0, 0.0, 0.0)
    text = capture.read_text(errors="replace") if capture else ""
    return Run(wall, rss, user + sys_, p.returncode, text, c1 - c0, i1 - i0)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def sync() -> float:
    """Flush dirty data to disk (not part of any contestant's time); returns seconds."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0
