"""Probe tests that test_system_harness.py runs in a child pytest to prove teardown.

Not collected on their own (the name does not start with ``test_``), and skipped unless
``ARCHITECT_SYSTEST_PROBE`` names a file: each probe boots a container, writes what the parent
needs to check it (nspawn PID, container PID 1, PID namespace, session directory) as JSON to
that file, then fails or hangs until the parent interrupts or kills the child pytest.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nspawn
import pytest

PROBE = os.environ.get("ARCHITECT_SYSTEST_PROBE", "")

pytestmark = pytest.mark.skipif(not PROBE, reason="run by test_system_harness.py only")


def _report(box: nspawn.Container, session_dir: Path) -> None:
    assert box.proc is not None
    info = {"nspawn_pid": box.proc.pid, "leader": box.leader, "pid_ns": box.pid_ns,
            "session_dir": str(session_dir), "name": box.name}
    tmp = PROBE + ".tmp"
    Path(tmp).write_text(json.dumps(info))
    os.rename(tmp, PROBE)


def test_probe_fails(container: nspawn.Container, session_dir: Path) -> None:
    _report(container, session_dir)
    assert container.sh("systemctl is-system-running").strip() == "not what it says"


def test_probe_hangs(container: nspawn.Container, session_dir: Path) -> None:
    _report(container, session_dir)
    container.run("sleep 300", timeout=400)  # a command running inside when the signal comes
    time.sleep(300)
