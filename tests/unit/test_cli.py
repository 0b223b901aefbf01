"""The architect-cleanup command: subcommands, the seed's legacy flags, output, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from architect_cleanup.cli import main
from architect_cleanup.lock import lock_path

from conftest import snapshot
from demo import build_tree


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """A demo tree (with real-time mtimes) and a config pointing at it via the environment."""
    root, tmp = tmp_path / "srv" / "architect", tmp_path / "tmp"
    build_tree(root, tmp, databases=False)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root = "{root}"\n[logs]\ntmp_dir = "{tmp}"\n')
    monkeypatch.setenv("ARCHITECT_CLEANUP_CONFIG", str(cfg))
    return root, tmp, cfg


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def test_run_without_force_is_a_dry_run_with_the_seed_summary(demo: tuple[Path, Path, Path]
                                                              ) -> None:
    root, tmp, _ = demo
    before = snapshot(root, tmp)
    code, out = cli("run")
    assert code == 0
    assert snapshot(root, tmp) == before
    tail = out[out.index("Cleanup Summary:"):].splitlines()
    assert tail[1] == "  Mode: PREVIEW (dry run) - nothing was changed"
    assert [line.split(":")[0].strip() for line in tail[2:9]] == [
        "Would delete backups", "Would delete logs", "Would delete tasks",
        "Would delete errors", "Would archive prompts", "Would delete temp files",
        "Would free"]
    assert tail[-1] == "  To clean: architect-cleanup run --force"


def test_force_cleans_and_a_second_run_frees_nothing(demo: tuple[Path, Path, Path]) -> None:
    code, out = cli("run", "--force")
    assert code == 0 and "PREVIEW" not in out and "would" not in out.lower()
    tail = out[out.index("Cleanup Summary:"):].splitlines()
    assert [line.split(":")[0].strip() for line in tail[1:8]] == [
        "Backups deleted", "Logs deleted", "Tasks deleted", "Errors deleted",
        "Prompts archived", "Temp files deleted", "Space freed"]
    code, out = cli("run", "--force")
    assert "  Space freed: 0.0 MiB" in out and "  Backups deleted: 0" in out


def test_with_dry_run_false_in_the_config_every_typed_preview_still_removes_nothing(
        demo: tuple[Path, Path, Path]) -> None:
    """SPEC 4.1: the config's dry_run = false is for the timer's runs; the README's preview
    commands (issue 21: they once deleted 51 production backups) stay previews."""
    root, tmp, cfg = demo
    cfg.write_text(cfg.read_text().replace("[logs]", "dry_run = false\n[logs]"))
    before = snapshot(root, tmp)
    for args in (["run"], ["run", "-v"], ["run", "--json", "--only", "backups"],
                 ["run", "-v", "--only", "backups"], ["run", "--dry-run"], ["plan"],
                 ["plan", "-v", "--json"], ["--keep", "2"], []):
        code, out = cli(*args)
        assert code == 0, args
        assert snapshot(root, tmp) == before, args
        if "--json" in args:
            assert json.loads(out)["dry_run"] is True, args
        else:
            assert "PREVIEW (dry run)" in out, args
    # --scheduled (the service's flag) follows the configuration
    code, out = cli("run", "--scheduled")
    assert code == 0 and snapshot(root, tmp) != before
    assert "Backups deleted:" in out


def test_scheduled_follows_the_config_and_names_the_trigger(
        demo: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, tmp, _ = demo
    before = snapshot(root, tmp)
    monkeypatch.setenv("TRIGGER_UNIT", "architect-cleanup.timer")
    code, out = cli("run", "--scheduled", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True and doc["source"] == "timer"
    assert snapshot(root, tmp) == before  # the shipped default: a dry run
    monkeypatch.delenv("TRIGGER_UNIT")
    _, out = cli("run", "--scheduled", "--json")
    assert json.loads(out)["source"] == "systemctl"  # `systemctl start`, no timer
    _, out = cli("run", "--json")
    assert json.loads(out)["source"] == "cli"


def test_every_item_line_says_would_remove_in_a_preview_and_removed_in_a_real_run(
        demo: tuple[Path, Path, Path]) -> None:
    _, out = cli("run", "-v")
    removals = [ln for ln in out.splitlines()
                if " backups " in ln and not ln.startswith((" ", "keep"))]
    assert removals and all(ln.startswith("would remove backups ") for ln in removals)
    assert not any(ln.startswith(("remove ", "removed ")) for ln in out.splitlines())
    _, out = cli("run", "--force", "-v")
    removals = [ln for ln in out.splitlines()
                if " backups " in ln and not ln.startswith((" ", "keep"))]
    assert removals and all(ln.startswith("removed      backups ") for ln in removals)
    assert "would" not in out.lower()


def test_json_lists_each_item_with_its_reason(demo: tuple[Path, Path, Path]) -> None:
    root, _, _ = demo
    _, out = cli("run", "--json", "--only", "backups,logs")
    doc = json.loads(out)
    items = doc["items"]
    assert len(items["backups"]) == doc["stats"]["backups_deleted"] > 0
    assert len(items["logs"]) == doc["stats"]["logs_deleted"] > 0
    first = items["backups"][0]
    assert first["path"].startswith(str(root)) and first["reason"] and first["bytes"] >= 0
    assert doc["items_omitted"] == 0


def test_force_on_a_terminal_previews_and_asks_first(demo: tuple[Path, Path, Path]) -> None:
    """run --force on a terminal: the preview, a question; "n" removes nothing, "y" cleans;
    --yes does not ask."""
    import pty
    root, tmp, _ = demo
    before = snapshot(root, tmp)

    def on_tty(answer: bytes, *args: str) -> str:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "architect_cleanup", *args],
                                stdin=follower, stdout=follower, stderr=follower,
                                env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        os.close(follower)
        seen = b""
        try:
            while b"[y/N]" not in seen and b"Space freed" not in seen:
                chunk = os.read(leader, 65536)
                if not chunk:
                    break
                seen += chunk
            if b"[y/N]" in seen:
                os.write(leader, answer + b"\n")
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            assert proc.wait(60) == 0
            os.close(leader)
        return seen.decode(errors="replace")

    out = on_tty(b"n", "run", "--force")
    assert "Preview (nothing is changed yet):" in out and "[y/N]" in out
    assert "Nothing was removed." in out and snapshot(root, tmp) == before
    out = on_tty(b"y", "run", "--force")
    assert "[y/N]" in out and "Backups deleted:" in out and snapshot(root, tmp) != before
    out = on_tty(b"", "run", "--force", "--yes")
    assert "[y/N]" not in out and "Backups deleted: 0" in out


def test_json_prints_one_object_in_the_seed_shape(demo: tuple[Path, Path, Path]) -> None:
    code, out = cli("run", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["success"] is True and doc["dry_run"] is True
    assert doc["message"] == "Cleanup completed (dry run)"
    assert {"backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
            "prompts_deleted", "temp_files_deleted", "space_freed_mb"} <= doc["stats"].keys()


def test_verbose_lists_every_decision_with_its_reason(demo: tuple[Path, Path, Path]) -> None:
    _, out = cli("run", "-v")
    lines = out.splitlines()
    assert any(line.startswith("keep         backups") and "(newest backup of prod)" in line
               for line in lines)
    assert any(line.startswith("would remove backups") and "beyond the newest 10 of prod"
               in line for line in lines)
    assert any("architect_worker.log (active worker log (logs.protect))" in line
               for line in lines)


def test_keep_and_days_override(demo: tuple[Path, Path, Path]) -> None:
    _, out = cli("run", "--json", "--keep", "50", "--days", "100")
    doc = json.loads(out)
    assert doc["targets"]["backups"]["detail"]["prod"]["kept"] >= 50
    _, out2 = cli("run", "--json")
    assert doc["stats"]["logs_deleted"] < json.loads(out2)["stats"]["logs_deleted"]


def test_legacy_flags_still_work(demo: tuple[Path, Path, Path]) -> None:
    root, tmp, _ = demo
    before = snapshot(root, tmp)
    code, out = cli("--dry-run")
    assert code == 0 and "Cleanup Summary:" in out and snapshot(root, tmp) == before
    code, out = cli("--keep", "15", "--days", "60", "--json")
    assert json.loads(out)["dry_run"] is True
    code, out = cli("--status")
    assert code == 0 and "Last run:" in out
    code, out = cli("--force", "--keep", "15")
    assert code == 0 and snapshot(root, tmp) != before


def test_status_without_systemd_says_why_and_does_not_crash(demo: tuple[Path, Path, Path]
                                                            ) -> None:
    cli("run")
    code, out = cli("status", "--json")
    doc = json.loads(out)
    assert code == 0
    assert {"success", "daemon_running", "daemon_pid", "last_run", "last_stats", "next_run",
            "timer_enabled", "last_result"} <= doc.keys()
    assert doc["daemon_pid"] is None
    if not os.path.isdir("/run/systemd/system"):
        assert doc["daemon_running"] is False and doc["next_run"] is None
        assert "systemd is not running" in doc["systemd"]["reason"]
    assert doc["last_stats"]["backups_deleted"] > 0


def test_legacy_daemon_without_systemd_fails_with_a_reason(demo: tuple[Path, Path, Path],
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("would really enable the timer here")
    assert main(["--daemon"]) == 1
    assert "systemd is not running" in capsys.readouterr().err


def test_config_check_prints_the_effective_config(demo: tuple[Path, Path, Path]) -> None:
    import tomllib
    root, _, cfg = demo
    code, out = cli("config", "check")
    assert code == 0
    assert out.startswith(f"# configuration is valid; read from: {cfg}")
    doc = tomllib.loads(out)
    assert doc["root"] == str(root) and doc["logs"]["max_age"] == "30d"


def test_config_errors_exit_2_listing_every_problem(demo: tuple[Path, Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, _, cfg = demo
    cfg.write_text('root = "/"\n[backups.retention]\nprod = 0\n[logs]\nmaxage = "1d"\n')
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "root: '/': refusing to clean a system directory" in err
    assert "backups.retention.prod: 0 would delete every backup" in err
    assert "logs.maxage: unknown key" in err
    assert main(["config", "check"]) == 2


@pytest.mark.parametrize("args", [["run", "--keep", "0"], ["run", "--days", "-1"],
                                  ["run", "--dry-run", "--force"], ["run", "--only", "nope"],
                                  ["frobnicate"], ["run", "--keep", "many"]])
def test_usage_errors_exit_2(args: list[str], demo: tuple[Path, Path, Path]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2


def test_a_failed_target_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'root = "{tmp_path / "missing"}"\n[logs]\ntmp_dir = ""\n')
    monkeypatch.setenv("ARCHITECT_CLEANUP_CONFIG", str(cfg))
    code, out = cli("run")
    assert code == 1
    assert "Failed: backups, logs, tasks, errors, prompts, temp" in out  # a missing root


def test_only_selects_targets(demo: tuple[Path, Path, Path]) -> None:
    _, out = cli("run", "--json", "--only", "logs,temp")
    doc = json.loads(out)
    assert doc["targets"]["backups"]["status"] == "skipped"
    assert doc["stats"]["backups_deleted"] == 0


def test_a_second_concurrent_run_exits_75_naming_the_holder(demo: tuple[Path, Path, Path]
                                                            ) -> None:
    code = textwrap.dedent(f"""
        import time
        from architect_cleanup.lock import RunLock
        with RunLock({lock_path()!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "architect_cleanup", "run"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 75
        assert f"another cleanup is running (PID {holder.pid} holds" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


def test_report_lists_the_history(demo: tuple[Path, Path, Path]) -> None:
    cli("run")
    cli("run", "--force")
    code, out = cli("report")
    assert code == 0
    table = out.split("Freed per day")[0].strip().splitlines()
    header, rows = table[1], table[2:]
    assert "freed MiB" in header and "would free MiB" in header
    assert len(rows) == 2 and " preview " in rows[0] and " real " in rows[1]
    # a preview's figure stands under "would free", a real run's under "freed"
    col = header.index("would free MiB") + len("would free MiB")
    freed_end = header.index("freed MiB") + len("freed MiB")
    assert rows[0][:col].rstrip()[-1].isdigit() and rows[0][freed_end - 9:freed_end].strip() == ""
    assert rows[1][:freed_end].rstrip()[-1].isdigit() and rows[1][freed_end:col].strip() == ""
    doc = json.loads(cli("report", "--json")[1])
    assert len(doc["history"]) == 2


def test_sigterm_stops_a_run_between_items_and_dies_by_the_signal(
        demo: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, _, _ = demo
    for i in range(3000):
        (root / "data" / f"f{i}.txt").touch()
    script = textwrap.dedent("""
        import os, signal, sys
        from architect_cleanup.targets import base
        orig = base.RunContext.check_stop
        def check_stop(self):
            os.kill(os.getpid(), signal.SIGTERM)
            return orig(self)
        base.RunContext.check_stop = check_stop
        from architect_cleanup.cli import main
        sys.exit(main(["run", "--force"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == -15
    from architect_cleanup.state import StateStore
    last = StateStore().load()["last_run"]
    assert last["result"] == "stopped" and "stopped on request" in last["message"]


@pytest.mark.parametrize("state", [
    b'{"history": [1, "x", null, {}], "last_run": 7}',
    b'{"history": [{"started_at": null, "stats": [1], "summary": {"a": 1}}], '
    b'"last_run": {"started_at": null, "summary": "two\\nlines"}}',
])
def test_status_and_report_survive_a_state_file_of_the_wrong_shape(
        demo: tuple[Path, Path, Path], state: bytes) -> None:
    state_dir = Path(os.environ["STATE_DIRECTORY"])
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_bytes(state)
    for args in (["report"], ["status"], ["report", "--json"]):
        code, out = cli(*args)
        assert code == 0
        assert "two\nlines" not in out
