#!/usr/bin/python3
"""Start the CLI at a signal: import everything, wait until the gate file exists, then run
``architect_cleanup.cli.main`` with the remaining arguments (so two runs start within a
millisecond of each other).

With $AC_RUNS_LOG set, the CLOCK_MONOTONIC start and end of the run (taken inside the run
lock) are appended there, so a test can tell two runs that overlapped from two that followed
each other."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from architect_cleanup import worker
from architect_cleanup.cli import main

_run = worker.CleanupWorker._run


def _observed_run(self: Any) -> Any:
    t0 = time.monotonic_ns()
    try:
        return _run(self)
    finally:
        line = f"{os.getpid()} {t0} {time.monotonic_ns()}\n"
        fd = os.open(os.environ["AC_RUNS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


if __name__ == "__main__":
    if os.environ.get("AC_RUNS_LOG"):
        worker.CleanupWorker._run = _observed_run  # type: ignore[method-assign]
    gate = sys.argv[1]
    while not os.path.exists(gate):
        time.sleep(0.0002)
    sys.exit(main(sys.argv[2:]))
