"""gunicorn settings for the API flood: the production ones (architect_cleanup.gunicorn_conf),
with $AC_FLOOD_WORKERS worker processes, and an observer that appends the CLOCK_MONOTONIC
start and end of every run (taken inside the run lock) to $AC_FLOOD_LOG, so the test can
prove that no two runs overlapped, across threads and processes."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from architect_cleanup import worker as _worker
from architect_cleanup.gunicorn_conf import *  # noqa: F403  (the production settings)

workers = int(os.environ.get("AC_FLOOD_WORKERS", "1"))
_LOG = os.environ["AC_FLOOD_LOG"]
_run = _worker.CleanupWorker._run


def _observed_run(self: Any) -> Any:
    t0 = time.monotonic_ns()
    try:
        return _run(self)
    finally:
        line = f"{os.getpid()} {threading.get_ident()} {t0} {time.monotonic_ns()} {self.dry_run}\n"
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


_worker.CleanupWorker._run = _observed_run  # type: ignore[method-assign]
