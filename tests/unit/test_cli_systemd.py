"""The CLI under systemd: SIGTERM from `systemctl stop`, and `status`/`--daemon`/`--stop`
where no systemd is running (this build host; the system tests cover a booted one)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sd_helpers import REPO, build_tree, notify_socket

from architect_cleanup import cli, systemctl
from architect_cleanup.lock import RunLock


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    srv, tmp = tmp_path / "srv", tmp_path / "tmp"
    conf = tmp_path / "config.toml"
    conf.write_text(f'root = "{srv}"\n[logs]\ntmp_dir = "{tmp}"\n')
    env = dict(os.environ, STATE_DIRECTORY=str(tmp_path / "state"),
               RUNTIME_DIRECTORY=str(tmp_path / "run"), ARCHITECT_CLEANUP_CONFIG=str(conf),
               PYTHONPATH=str(REPO))
    env.pop("JOURNAL_STREAM", None)
    env.update(extra)
    return env


def test_sigterm_stops_the_run_between_items_records_it_and_dies_by_the_signal(
        tmp_path: Path) -> None:
    # 30,000 old temp files in the root itself: the first directory the walk lists, and one
    # big directory, which the stop must not wait for
    srv = tmp_path / "srv"
    srv.mkdir()
    old = time.time() - 2 * 86400
    for i in range(30000):
        p = srv / f"upload{i}.tmp"
        p.touch()
        os.utime(p, (old, old))
    with notify_socket() as rx:
        env = _env(tmp_path, NOTIFY_SOCKET=rx.path, TRIGGER_UNIT="architect-cleanup.timer")
        conf = tmp_path / "config.toml"
        conf.write_text("dry_run = false\n" + conf.read_text())
        proc = subprocess.Popen(
            [sys.executable, "-m", "architect_cleanup", "run", "--scheduled"],
            env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert rx.wait_for(lambda m: m == "STATUS=logs/temp: starting"), rx.messages
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, (out, err)
    left = sum(1 for _ in srv.glob("*.tmp"))
    assert 0 < left < 30000, "stopped part-way through the directory, between two files"
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    run = state["last_run"]
    assert run["source"] == "timer" and run["result"] == "stopped"  # not "failed"
    assert run["failed_targets"] == []
    assert "stopped on request" in run["summary"]
    assert run["stats"]["temp_files_deleted"] == 30000 - left, "what it removed is counted"
    assert "Cleanup Summary:" in out


def test_a_second_run_while_one_holds_the_lock_exits_75_naming_the_holder(
        tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    env = _env(tmp_path)
    with RunLock(str(tmp_path / "run" / "cleanup.lock")):
        proc = subprocess.run([sys.executable, "-m", "architect_cleanup", "run"], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 75
    assert f"PID {os.getpid()} holds" in proc.stderr


def test_status_without_systemd_says_the_timer_is_not_running_with_a_reason_and_the_last_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if systemctl.systemd_running():
        pytest.skip("this host runs systemd; the system tests cover it")
    build_tree(tmp_path / "srv", tmp_path / "tmp", time.time(), databases=False)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert cli.main(["run"], out=io.StringIO()) == 0
    with RunLock(str(tmp_path / "run" / "cleanup.lock")):
        out = io.StringIO()
        assert cli.main(["status", "--json"], out=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["success"] is True
    assert doc["daemon_running"] is False and doc["timer_enabled"] is False
    assert doc["next_run"] is None
    assert "not running" in doc["systemd"]["reason"] or "not installed" in doc["systemd"]["reason"]
    assert doc["daemon_pid"] == os.getpid(), "the lock holder is the run in progress"
    assert doc["last_result"]["dry_run"] is True
    assert doc["last_stats"]["backups_deleted"] > 80
    human = io.StringIO()
    assert cli.main(["status"], out=human) == 0
    assert "Timer:       unknown (" in human.getvalue()


def test_daemon_and_stop_fail_cleanly_without_systemd(
        capsys: pytest.CaptureFixture[str]) -> None:
    if systemctl.systemd_running():
        pytest.skip("this host runs systemd")
    assert cli.main(["--daemon"], out=io.StringIO()) == 1
    assert cli.main(["--stop"], out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert "not running" in err or "not installed" in err


# What `systemctl show` printed for the timer and the service in a booted bookworm container
# (systemd 252) with TZ=UTC, right after `apt install ./architect-cleanup_*.deb`.
TIMER_SHOW = """\
NextElapseUSecRealtime=Thu 2026-11-26 07:11:08 UTC
LastTriggerUSec=
LoadState=loaded
ActiveState=active
UnitFileState=enabled
"""
SERVICE_SHOW = """\
MainPID=0
Result=success
LoadState=loaded
ActiveState=inactive
SubState=dead
"""


def test_systemctl_show_output_becomes_the_status_fields() -> None:
    sd = systemctl.from_properties(systemctl.parse_show(TIMER_SHOW),
                                   systemctl.parse_show(SERVICE_SHOW))
    assert sd.to_dict() == {
        "timer_enabled": True, "timer_active": True,
        "next_run": "2026-11-26T07:11:08+00:00", "last_trigger": None,
        "service_state": "inactive", "service_result": "success", "service_pid": None,
        "reason": None}


def test_a_running_service_reports_its_pid_and_unix_timestamps_are_read_too() -> None:
    timer = systemctl.parse_show(TIMER_SHOW.replace(
        "LastTriggerUSec=", "LastTriggerUSec=@1795676400"))
    service = systemctl.parse_show(SERVICE_SHOW.replace("MainPID=0", "MainPID=4242")
                                   .replace("ActiveState=inactive", "ActiveState=activating"))
    sd = systemctl.from_properties(timer, service)
    assert sd.service_pid == 4242 and sd.service_state == "activating"
    assert sd.last_trigger == "2026-11-26T07:00:00+00:00"


def test_an_uninstalled_timer_is_a_reason_not_a_crash() -> None:
    sd = systemctl.from_properties({"LoadState": "not-found"}, {})
    assert sd.reason == "architect-cleanup.timer is not installed"
    assert sd.timer_enabled is None
