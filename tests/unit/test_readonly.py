"""A run that meets a read-only file system (what ProtectSystem=strict makes of every path
outside ReadWritePaths=) says how to fix it: per item, per target, and in the journal.

The read-only file system is real: a read-only bind mount in a private mount namespace
(``unshare -m``), so these tests need root; the run happens in that child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sd_helpers import REPO, build_tree

from architect_cleanup.journal import MESSAGE_IDS

HINT = ("outside the service's writable paths: add it with "
        "`systemctl edit architect-cleanup.service` (ReadWritePaths=)")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a read-only bind mount")

# Runs inside the mount namespace: a worker with a collecting journal handler; prints JSON.
CHILD = textwrap.dedent("""
    import errno, json, os, sys
    sys.path.insert(0, sys.argv[1])
    from sd_helpers import journal_collector
    from architect_cleanup.config import Config, LogsConfig
    from architect_cleanup.state import StateStore
    from architect_cleanup.targets.base import REGISTRY, Target
    from architect_cleanup.worker import CleanupWorker

    class Scratch(Target):
        "A target whose whole work fails at once: it must create a file in the root."
        name = "scratch"
        def run(self, ctx, result):
            fd = os.open(os.path.join(ctx.config.root, "scratch.tmp"), os.O_CREAT | os.O_WRONLY)
            os.close(fd)

    root, tmp, state, only = sys.argv[2:6]
    REGISTRY["scratch"] = Scratch
    cfg = Config(root=root, logs=LogsConfig(tmp_dir=tmp))
    worker = CleanupWorker(dry_run=False, config=cfg, only=only.split(","),
                           lock_file=os.path.join(state, "lock"), state=StateStore(state))
    with journal_collector() as journal:
        stats = worker.run_cleanup()
    print(json.dumps({"stats": stats.to_dict(), "journal": journal.entries}, default=str))
""")


def _run_readonly(tmp_path: Path, only: str) -> dict:
    srv, tmp, state = tmp_path / "srv", tmp_path / "tmp", tmp_path / "state"
    build_tree(srv, tmp, time.time(), databases=False)
    state.mkdir()
    script = (f'mount --bind "{srv}" "{srv}" && mount -o remount,bind,ro "{srv}" && '
              f'exec "$0" "$@"')
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable,
         "-c", CHILD, str(REPO / "tests" / "unit"), str(srv), str(tmp), str(state), only],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out: dict = json.loads(proc.stdout)
    return out


def test_a_read_only_root_gives_the_hint_once_per_target_and_a_journal_entry(
        tmp_path: Path) -> None:
    out = _run_readonly(tmp_path, "logs")
    logs = out["stats"]["targets"]["logs"]
    assert logs["error_count"] > 5
    assert all("Read-only file system" in e for e in logs["errors"])
    assert HINT in logs["errors"][0]
    assert sum(HINT in e for e in logs["errors"]) == 1, "the hint is not repeated per file"

    entries = [e for e in out["journal"]
               if e.get("MESSAGE_ID") == MESSAGE_IDS["readonly_path"].hex]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["CLEANUP_TARGET"] == "logs"
    assert entry["CLEANUP_PATH"].startswith(str(tmp_path / "srv"))
    assert HINT in entry["MESSAGE"]
    assert entry["PRIORITY"] == "3"
    # the run did not do what the configuration asks: the target fails (exit status 1)
    assert logs["status"] == "failed"
    assert logs["message"] == (f"{logs['error_count']} item(s) not removed: read-only file "
                               "system, outside the service's writable paths (ReadWritePaths=)")
    assert not out["stats"]["success"]
    # /tmp stays writable (the unit's ReadWritePaths=): its two old architect logs are removed
    assert logs["removed"] == 2
    assert not (tmp_path / "tmp" / "architect_session_1234.log").exists()
    assert (tmp_path / "srv" / "logs" / "app.log.8").exists()


def test_a_read_only_tree_of_cache_directories_gets_the_hint_too(tmp_path: Path) -> None:
    out = _run_readonly(tmp_path, "temp")
    temp = out["stats"]["targets"]["temp"]
    assert temp["error_count"] > 0
    assert sum(HINT in e for e in temp["errors"]) == 1
    ids = [e.get("MESSAGE_ID") for e in out["journal"]]
    assert ids.count(MESSAGE_IDS["readonly_path"].hex) == 1
    assert temp["status"] == "failed" and "(ReadWritePaths=)" in temp["message"]
    assert temp["message"].startswith(f"{temp['error_count']} item(s) not removed")


def test_a_target_that_fails_entirely_on_a_read_only_root_is_failed_with_the_hint(
        tmp_path: Path) -> None:
    out = _run_readonly(tmp_path, "scratch,backups")
    scratch = out["stats"]["targets"]["scratch"]
    assert scratch["status"] == "failed"
    assert "Read-only file system" in scratch["message"] and HINT in scratch["message"]
    failed = [e for e in out["journal"]
              if e.get("MESSAGE_ID") == MESSAGE_IDS["target_failed"].hex]
    assert {e["CLEANUP_TARGET"] for e in failed} == {"backups", "scratch"}
    assert all("ReadWritePaths=" in e["CLEANUP_ERROR"] for e in failed)
    ro = [e for e in out["journal"] if e.get("MESSAGE_ID") == MESSAGE_IDS["readonly_path"].hex]
    assert {e["CLEANUP_TARGET"] for e in ro} == {"scratch", "backups"}
    # the other target still ran (and met the same read-only root, with its own hint)
    backups = out["stats"]["targets"]["backups"]
    assert backups["error_count"] > 0 and "(ReadWritePaths=)" in backups["message"]
    assert HINT in backups["errors"][0]
    assert out["journal"][-1]["MESSAGE_ID"] == MESSAGE_IDS["run_summary"].hex
