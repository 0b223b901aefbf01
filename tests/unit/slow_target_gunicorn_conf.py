"""The shipped gunicorn settings plus a test-only target that runs until told to stop.

``gunicorn --config tests/unit/slow_target_gunicorn_conf.py``: everything of
``architect_cleanup.gunicorn_conf`` (so the stop switch wiring under test is the real one), and
a ``slow`` target registered in the worker process that checks ``ctx.check_stop()`` every
10 ms for up to 30 s — a stand-in for a long walk over a big tree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from architect_cleanup.gunicorn_conf import *  # noqa: F403  (the settings under test)
from architect_cleanup.gunicorn_conf import post_worker_init as _real_post_worker_init
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import REGISTRY, RunContext, Target

#: created in $RUNTIME_DIRECTORY when the slow target starts
RUNNING_MARK = "slow-target-running"


class SlowTarget(Target):
    name = "slow"

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        # tell the test this target is running (a signal before it would hit another target)
        (Path(os.environ["RUNTIME_DIRECTORY"]) / RUNNING_MARK).touch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ctx.check_stop()
            result.checked += 1
            time.sleep(0.01)


def post_worker_init(worker: Any) -> None:
    REGISTRY["slow"] = SlowTarget
    _real_post_worker_init(worker)
