"""``architect-cleanup migrate`` on a booted machine prepared like an old install.

The container has the demo dashboard under /srv/architect and the package installed with apt;
then the original worker's traces are laid out as it left them: its script running as a
``--daemon`` (a transient unit, a live process), its PID file and state file in /tmp, a cron
line in /etc/cron.d, and the dashboard's ``app.py`` importing it. ``migrate`` is run the way
the README's migration section says, step by step. Each output is written to the test's
report (``-s`` shows it) and, with ``$ARCHITECT_MIGRATE_OUTPUT`` set, to that file.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from dashboard_app import COMPAT_IMPORT, ORIGINAL
from nspawn import Container

ROOT = "/srv/architect"
PID_FILE = "/tmp/architect_cleanup_worker.pid"
STATE_FILE = "/tmp/architect_cleanup_worker_state.json"
OLD_STATE = {"last_run": "2026-02-07T19:07:36.123456",
             "stats": {"backups_deleted": 84, "logs_deleted": 0, "tasks_deleted": 0,
                       "errors_deleted": 0, "prompts_deleted": 0, "temp_files_deleted": 0,
                       "space_freed_mb": 271.93}}
CRON = ("0 2 * * * architect cd /srv/architect && python3 workers/cleanup_worker.py --force "
        "--days 30 >/dev/null 2>&1")


def show(title: str, text: str) -> None:
    block = f"\n===== {title} =====\n{text.rstrip()}\n"
    sys.stdout.write(block)
    out = os.environ.get("ARCHITECT_MIGRATE_OUTPUT")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(block)


def prepare_old_install(box: Container) -> int:
    """The original worker's traces; returns its daemon's PID."""
    box.write_file(f"{ROOT}/workers/cleanup_worker.py", "import time\ntime.sleep(3600)\n")
    box.write_file(f"{ROOT}/app.py", ORIGINAL)
    box.run(["systemd-run", "--unit=old-cleanup-worker", f"--working-directory={ROOT}",
             "python3", "workers/cleanup_worker.py", "--daemon"])
    pid = int(box.sh("systemctl show -p MainPID --value old-cleanup-worker").strip())
    assert pid > 0
    box.write_file(PID_FILE, f"{pid}\n")
    box.write_file(STATE_FILE, json.dumps(OLD_STATE, indent=2))
    box.write_file("/etc/cron.d/architect-cleanup-worker", f"MAILTO=root\n{CRON}\n")
    return pid


def migrate(box: Container, *args: str) -> str:
    proc = box.run(["architect-cleanup", "migrate", *args])
    show(shlex.join(["architect-cleanup", "migrate", *args]), proc.stdout)
    return proc.stdout


def test_migrate_finds_the_old_install_imports_its_state_and_says_what_is_left(
        installed: Container) -> None:
    box = installed
    pid = prepare_old_install(box)
    before = box.sh(f"cat {PID_FILE} {STATE_FILE} /etc/cron.d/architect-cleanup-worker "
                    f"{ROOT}/app.py")

    # 1. the dry run: every trace found, nothing changed
    out = migrate(box)
    assert f"PID file: {PID_FILE}: PID {pid}, running" in out
    assert (f"running: PID {pid} (daemon): /usr/bin/python3 workers/cleanup_worker.py "
            "--daemon") in out
    assert f"/etc/cron.d/architect-cleanup-worker:2 as architect: {CRON}" in out
    assert f"{STATE_FILE}: last run {OLD_STATE['last_run']}" in out
    assert f"{ROOT}/app.py:" in out and f"->  {COMPAT_IMPORT}" in out
    assert "CHANGE  dry_run: original cleaned for real" in out
    assert "logs in /tmp: original every *.log" in out
    assert f"1. stop the original worker (its daemon, PID {pid}): `cd {ROOT} && python3 " \
           "workers/cleanup_worker.py --stop`" in out
    assert box.sh(f"cat {PID_FILE} {STATE_FILE} /etc/cron.d/architect-cleanup-worker "
                  f"{ROOT}/app.py") == before
    assert not box.exists("/var/lib/architect-cleanup/state.json")

    # 2. --force: the last run imported, the live daemon's PID file left alone
    out = migrate(box, "--force")
    assert f"Done: imported the last run of {OLD_STATE['last_run']}" in out
    assert box.read_file(PID_FILE).strip() == str(pid)
    state = json.loads(box.read_file("/var/lib/architect-cleanup/state.json"))
    [run] = state["history"]
    assert run["source"] == "imported" and run["stats"]["backups_deleted"] == 84
    report = box.sh("architect-cleanup report --since 3650d")  # the old run is months old
    show("architect-cleanup report --since 3650d", report)
    assert " imported " in report and "271.9" in report
    status = json.loads(box.sh("architect-cleanup status --json"))
    assert status["daemon_running"] is True  # the package enabled the timer
    assert status["last_result"]["source"] == "imported"
    assert status["last_stats"]["backups_deleted"] == 84
    compat = box.sh("python3 -c 'from architect_cleanup.compat import CleanupWorker, "
                    "DEFAULT_BACKUP_RETENTION, PID_FILE, load_state; print(load_state())'")
    show("compat load_state()", compat)
    assert "'backups_deleted': 84" in compat

    # 3. the operator's steps: stop the daemon (killed hard: its PID file stays behind),
    #    drop the cron line; --force removes the stale PID file; nothing is left but the
    #    dashboard's import line and the dry_run decision
    box.run(["systemctl", "kill", "--signal=KILL", "old-cleanup-worker"])
    box.run("while systemctl is-active -q old-cleanup-worker; do sleep 0.1; done", timeout=30)
    box.run(["rm", "/etc/cron.d/architect-cleanup-worker"])
    out = migrate(box, "--force")
    assert f"Done: removed the stale PID file {PID_FILE}" in out
    assert not box.exists(PID_FILE)
    assert "Done: imported" not in out and len(json.loads(box.read_file(
        "/var/lib/architect-cleanup/state.json"))["history"]) == 1
    left = out.split("Steps left:\n", 1)[1]
    assert "stop the original worker" not in left and "cron" not in left
    assert f"{ROOT}/app.py" in left and "dry_run" in left
