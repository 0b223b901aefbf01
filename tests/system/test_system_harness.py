"""The harness itself: a container boots a real systemd, runs commands, and leaves nothing.

The teardown tests run probe_teardown.py in a child pytest and check from outside, after a
failing test, after Ctrl-C (SIGINT), after SIGTERM, and after SIGKILL of pytest, that no nspawn,
no process of the container and no mount of the session directory is left, and that the
session directory is gone (after SIGKILL: removed by the next session's start-up sweep).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness
import nspawn
import pytest
import rootfs

HERE = Path(__file__).resolve().parent


def test_a_container_boots_into_a_running_systemd(container: nspawn.Container) -> None:
    assert container.sh("systemctl is-system-running").strip() == "running"
    assert container.sh("readlink /proc/1/exe").strip() == "/usr/lib/systemd/systemd"
    assert container.sh("systemd-detect-virt --container").strip() == "systemd-nspawn"
    assert container.sh("systemctl --failed --no-legend").strip() == ""


def test_the_container_runs_a_cgroup2_tree_and_has_only_loopback(
        container: nspawn.Container) -> None:
    assert container.sh("stat -fc %T /sys/fs/cgroup").strip() == "cgroup2fs"
    assert container.sh("ls /sys/class/net").split() == ["lo"]


def test_commands_see_a_clean_environment_and_their_exit_status(
        container: nspawn.Container) -> None:
    env = dict(line.split("=", 1) for line in container.sh("env").splitlines() if "=" in line)
    assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert not any(k.startswith(("PYENV", "VIRTUAL_ENV", "PYTHON")) for k in env)
    assert container.run("exit 3", check=False).returncode == 3
    with pytest.raises(nspawn.ContainerError, match="exited 3"):
        container.run("exit 3")


def test_writes_inside_stay_in_the_volatile_overlay(
        rootfs_dir: Path, session_dir: Path, share: Path) -> None:
    with harness.booted(rootfs_dir, session_dir, share) as first:
        first.write_file("/etc/written-by-first", "x\n")
        first.run("rm -f /etc/debian_version")
        assert first.exists("/etc/written-by-first")
    assert not (rootfs_dir / "etc" / "written-by-first").exists()
    assert (rootfs_dir / "etc" / "debian_version").exists()
    with harness.booted(rootfs_dir, session_dir, share) as second:
        assert not second.exists("/etc/written-by-first")
        assert second.exists("/etc/debian_version")


def test_stop_ends_nspawn_and_every_process_of_the_container(
        rootfs_dir: Path, session_dir: Path, share: Path) -> None:
    box = nspawn.Container(rootfs_dir, session_dir).start()
    assert box.proc is not None and box.pid_ns is not None
    inside = nspawn.processes_in_namespace(box.pid_ns)
    assert box.leader in inside and len(inside) >= 3  # systemd, journald, dbus ...
    assert box.stop() == 0  # SIGTERM was an orderly poweroff
    assert not box.running
    assert nspawn.processes_in_namespace(box.pid_ns) == []
    assert box.proc.pid not in nspawn.RUNNING


# --- teardown when things go wrong (a child pytest, checked from outside) --------------------


def _host_mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line for line in fh if path in line]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].startswith("Z")  # a zombie is gone too
    except OSError:
        return True


def _run_probe(tmp_path: Path, name: str, sig: signal.Signals | None) -> tuple[int, dict]:
    info_file = tmp_path / "probe.json"
    env = {**os.environ, "ARCHITECT_SYSTEST_PROBE": str(info_file)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(HERE / "probe_teardown.py"), "-k", name]
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(cmd, env=env, cwd=HERE.parent.parent, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not info_file.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if sig is not None and info_file.exists():
            time.sleep(1)  # the probe is now inside its `sleep 300`
            child.send_signal(sig)
        code = child.wait(120)
    finally:
        if child.poll() is None:  # the harness under test failed: do not leave it running
            child.send_signal(signal.SIGINT)
            child.wait(60)
    output = (tmp_path / "child.log").read_text()
    assert info_file.exists(), f"the probe never booted its container:\n{output}"
    return code, {**json.loads(info_file.read_text()), "output": output}


def _assert_nothing_left(info: dict, session_dir_gone: bool = True) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            _gone(info["nspawn_pid"]) and not nspawn.processes_in_namespace(info["pid_ns"])):
        time.sleep(0.1)
    assert _gone(info["nspawn_pid"]), "systemd-nspawn is still running"
    assert _gone(info["leader"]), "the container's systemd is still running"
    assert nspawn.processes_in_namespace(info["pid_ns"]) == []
    assert _host_mounts_under(info["session_dir"]) == []
    assert not Path("/run/systemd/nspawn/propagate", info["name"]).exists()
    if session_dir_gone:
        assert not Path(info["session_dir"]).exists()


def test_a_failing_test_leaves_no_container_behind(tmp_path: Path, session_dir: Path) -> None:
    code, info = _run_probe(tmp_path, "test_probe_fails", None)
    assert code == 1, info["output"]
    assert "1 failed" in info["output"]
    assert "journal of systest-" in info["output"]  # a failure shows the container's journal
    _assert_nothing_left(info)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_session_stops_its_container(
        tmp_path: Path, session_dir: Path, sig: signal.Signals) -> None:
    code, info = _run_probe(tmp_path, "test_probe_hangs", sig)
    assert code == 2, info["output"]  # pytest's "interrupted"
    _assert_nothing_left(info)


def test_a_killed_session_takes_its_container_down_and_is_swept_later(
        tmp_path: Path, session_dir: Path) -> None:
    code, info = _run_probe(tmp_path, "test_probe_hangs", signal.SIGKILL)
    assert code == -signal.SIGKILL
    _assert_nothing_left(info, session_dir_gone=False)  # PR_SET_PDEATHSIG stopped nspawn
    stale = Path(info["session_dir"])
    assert stale in rootfs.remove_stale_sessions(stale.parent)
    assert not stale.exists()
