"""What the command says is exact (issue 21): problems once and early, units, words, PIDs.

Each test runs the real CLI (``main``) on a real demo tree; nothing is mocked."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from architect_cleanup.cli import main

from demo import build_tree


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    root, tmp = tmp_path / "srv" / "architect", tmp_path / "tmp"
    build_tree(root, tmp)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root = "{root}"\n[logs]\ntmp_dir = "{tmp}"\n')
    monkeypatch.setenv("ARCHITECT_CLEANUP_CONFIG", str(cfg))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    return root, tmp, cfg


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


# --- item 4: problems found early, each said once ---------------------------------------------


def test_config_check_refuses_a_root_that_does_not_exist(
        demo: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, tmp, cfg = demo
    cfg.write_text(f'root = "{root}-missing"\n[logs]\ntmp_dir = "{tmp}"\n')
    code, out = cli("config", "check")
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert err == f"architect-cleanup: root {root}-missing does not exist\n"
    code, out = cli("config", "check", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["valid"] is False
    assert doc["errors"] == [f"root {root}-missing does not exist"]


def test_config_check_warns_once_per_missing_database(
        demo: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = demo
    (root / "data" / "qa" / "architect.db").unlink()
    code, out = cli("config", "check", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] is True
    missing = [w for w in doc["warnings"] if "qa/architect.db" in w]
    assert missing == ["database data/qa/architect.db: does not exist (skipped)"]


def test_a_run_with_a_missing_root_says_so_once_not_once_per_target(
        demo: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, tmp, cfg = demo
    cfg.write_text(f'root = "{root}-missing"\n[logs]\ntmp_dir = "{tmp}"\n')
    code, out = cli("run")
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("does not exist") <= 3, err  # the check, the first target, the summary
    assert out.count("does not exist") == 1, out
    assert out.count("(as backups)") == 5


def test_a_missing_database_is_noted_once_per_run(demo: tuple[Path, Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = demo
    (root / "data" / "qa" / "architect.db").unlink()
    code, out = cli("run")
    err = capsys.readouterr().err
    assert code == 0
    assert (out + err).count("qa/architect.db: does not exist") == 2, out + err
    assert out.count("qa/architect.db: does not exist") == 1  # tasks, errors, prompts: once


def test_config_check_names_the_writable_paths_of_the_service(tmp_path: Path) -> None:
    from architect_cleanup import preflight
    from architect_cleanup.config import Config, LogsConfig
    root = tmp_path / "opt" / "architect"
    root.mkdir(parents=True)
    (tmp_path / "tmp").mkdir()
    cfg = Config(root=str(root), logs=LogsConfig(tmp_dir=str(tmp_path / "tmp")))
    findings = preflight.check(cfg, ["/srv/architect", str(tmp_path / "tmp")])
    [outside] = [f.text for f in findings if "ReadWritePaths" in f.text]
    assert outside.startswith(f"root {root} is outside the writable paths of "
                              "architect-cleanup.service (ReadWritePaths=/srv/architect ")
    assert "systemctl edit architect-cleanup.service" in outside
    assert not [f for f in preflight.check(cfg, [str(tmp_path)]) if "ReadWritePaths" in f.text]


# --- item 6: exact words ----------------------------------------------------------------------


def test_sizes_are_mib_and_rows_have_no_size(demo: tuple[Path, Path, Path]) -> None:
    _, out = cli("run")
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and
             ln.split() and ln.split()[0] in ("backups", "logs", "tasks", "prompts")}
    assert " MiB)" in lines["backups"] and " MB" not in out
    assert "(0.0" not in lines["tasks"] and "MiB" not in lines["tasks"]
    assert lines["prompts"].split()[2:4] == ["would", "archive"]
    assert "Would free:" in out and out.count(" MiB") >= 2
    _, out = cli("run", "--force")
    assert "  Prompts archived: " in out and "Prompts deleted" not in out


def test_the_shared_backup_directory_is_called_default_as_in_the_config(
        demo: tuple[Path, Path, Path]) -> None:
    root, _, _ = demo
    shared = root / "data" / "backups"
    shared.mkdir(parents=True, exist_ok=True)
    old = time.time() - 10 * 86400
    for i in range(8):
        p = shared / f"architect_2026010{i}.db"
        p.write_bytes(b"x")
        os.utime(p, (old + i, old + i))
    _, out = cli("run", "--json", "--only", "backups")
    detail = json.loads(out)["targets"]["backups"]["detail"]
    assert "default" in detail and "shared" not in detail
    _, out = cli("run", "-v", "--only", "backups")
    assert "beyond the newest 5 of default" in out and "of shared" not in out


def test_a_file_modified_in_the_future_is_said_in_human_units(
        demo: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = demo
    f = root / "logs" / "clock-skew.log"
    f.write_text("x")
    ahead = time.time() + 4 * 30 * 86400 + 3600
    os.utime(f, (ahead, ahead))
    _, out = cli("run", "-v", "--only", "logs")
    err = capsys.readouterr().err
    assert f"{f} (modified 4 months in the future)" in out
    assert f"{f} is modified 4 months in the future; kept" in err
    assert not re.search(r"\d+s in the future", out + err)


def test_a_file_held_open_names_the_pid_and_the_command(demo: tuple[Path, Path, Path]) -> None:
    root, _, _ = demo
    f = root / "logs" / "held.log"
    f.write_text("x")
    old = time.time() - 90 * 86400
    os.utime(f, (old, old))
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import sys, time; fh = open({str(f)!r}); "
                               "print('ready', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        _, out = cli("run", "-v", "--only", "logs")
    finally:
        holder.kill()
        holder.wait()
    comm = Path(f"/proc/{holder.pid}/comm")
    [line] = [ln for ln in out.splitlines() if str(f) in ln]
    assert f"(open by PID {holder.pid} (" in line, line
    assert "open by a running process" not in out
    assert not comm.exists()


def test_keep_replacing_a_policy_says_so(demo: tuple[Path, Path, Path]) -> None:
    _, _, cfg = demo
    cfg.write_text(cfg.read_text() + "[backups.policy.prod]\nkeep_daily = 7\n")
    _, out = cli("run", "--keep", "3", "--only", "backups")
    assert "note: --keep replaced backups.policy.prod for this run" in out
    _, out = cli("run", "--only", "backups")
    assert "--keep replaced" not in out


# --- item 3: the dashboard's user gets a line and an exit code, not a traceback -----------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_every_command_as_an_unprivileged_user_fails_in_one_line_or_works(
        tmp_path: Path) -> None:
    import pwd
    import shutil
    import tempfile
    nobody = pwd.getpwnam("nobody")
    stage = Path(tempfile.mkdtemp(prefix="ac-unpriv-", dir="/tmp"))
    try:
        stage.chmod(0o755)
        shutil.copytree(Path(__file__).resolve().parents[2] / "architect_cleanup",
                        stage / "architect_cleanup",
                        ignore=shutil.ignore_patterns("__pycache__"))
        root = stage / "srv"
        build_tree(root, stage / "tmp", databases=False)
        run_dir = stage / "run"
        run_dir.mkdir()
        (run_dir / "cleanup.lock").write_text("")  # root's lock file, as the service leaves it
        (stage / "config.toml").write_text(f'root = "{root}"\n[logs]\ntmp_dir = "{stage}/tmp"\n')
        for p in [stage, *stage.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(stage),
               "ARCHITECT_CLEANUP_CONFIG": str(stage / "config.toml"),
               "RUNTIME_DIRECTORY": str(run_dir), "STATE_DIRECTORY": str(stage / "state")}
        for args, want in ((["run"], 77), (["plan"], 77), (["run", "--force", "--yes"], 77),
                           (["run", "--json"], 77), (["status"], 0), (["report"], 0),
                           (["config", "check"], 0), (["--status"], 0)):
            proc = subprocess.run(["/usr/bin/python3", "-m", "architect_cleanup", *args],
                                  user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                                  env=env, cwd="/", capture_output=True, text=True, timeout=120,
                                  check=False)
            assert "Traceback" not in proc.stderr, (args, proc.stderr)
            assert proc.returncode == want, (args, proc.returncode, proc.stderr)
            if want == 77:
                assert proc.stderr == (f"architect-cleanup: cannot take the run lock "
                                       f"{run_dir}/cleanup.lock: Permission denied; run it as "
                                       "root (sudo architect-cleanup ...), as the service "
                                       "does\n"), args
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- item 5: what is removed is named, siblings included -------------------------------------


def test_verbose_and_json_name_the_wal_siblings_that_go_with_a_backup(
        demo: tuple[Path, Path, Path]) -> None:
    root, _, _ = demo
    bdir = root / "data" / "prod" / "backups"
    oldest = min(bdir.glob("architect_2*.db"), key=lambda p: p.stat().st_mtime)
    for suffix in ("-wal", "-shm"):
        sib = Path(f"{oldest}{suffix}")
        sib.write_bytes(b"w" * 4096)
        os.utime(sib, (oldest.stat().st_mtime, oldest.stat().st_mtime))
    _, out = cli("run", "-v", "--only", "backups")
    [line] = [ln for ln in out.splitlines() if f"{oldest} (" in ln]
    assert line.startswith("would remove backups ")
    assert line.endswith(f"with {oldest.name}-wal, {oldest.name}-shm") or line.endswith(
        f"with {oldest.name}-shm, {oldest.name}-wal"), line
    _, out = cli("run", "--json", "--only", "backups")
    [item] = [i for i in json.loads(out)["items"]["backups"] if i["path"] == str(oldest)]
    assert sorted(item["siblings"]) == sorted([f"{oldest.name}-shm", f"{oldest.name}-wal"])
    assert item["reason"].startswith("beyond the newest 10 of prod")
    code, out = cli("run", "--force", "-v", "--only", "backups")
    assert code == 0 and not Path(f"{oldest}-wal").exists() and not oldest.exists()
    [line] = [ln for ln in out.splitlines() if f"{oldest} (" in ln]
    assert line.startswith("removed      backups ") and f"{oldest.name}-wal" in line


def test_a_budget_smaller_than_the_newest_backup_is_said_once_on_each_stream(
        demo: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, _, cfg = demo
    cfg.write_text(cfg.read_text() + '[backups.policy.prod]\nkeep_daily = 3\n'
                   'max_total_size = "1K"\n')
    code, out = cli("run")
    err = capsys.readouterr().err
    assert code == 1
    assert out.count("is smaller than its newest backup") == 1, out
    assert err.count("is smaller than its newest backup") == 1, err
