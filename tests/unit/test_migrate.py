"""``architect-cleanup migrate`` on a machine laid out like an old install, below a rootdir.

The original worker's process is a real one: a script named ``cleanup_worker.py`` started with
``--daemon`` from the dashboard's directory, its PID in the PID file, as the original did.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dashboard_app import COMPAT_IMPORT, ORIGINAL, ORIGINAL_IMPORT
from gunicorn_server import Site

from architect_cleanup import cli, compat, migrate
from architect_cleanup.config import parse_config
from architect_cleanup.lock import RunLock
from architect_cleanup.state import StateStore

DASHBOARD = "/srv/architect"
OLD_STATE = {"last_run": "2026-02-07T19:07:36.123456",
             "stats": {"backups_deleted": 84, "logs_deleted": 0, "tasks_deleted": 0,
                       "errors_deleted": 0, "prompts_deleted": 0, "temp_files_deleted": 0,
                       "space_freed_mb": 271.93}}
CRON_D = ("0 2 * * * root cd /srv/architect && python3 workers/cleanup_worker.py --force "
          "--days 60 >/dev/null 2>&1")
USER_CRON = "17 * * * * python3 /srv/architect/workers/cleanup_worker.py --force --keep 15"


@dataclass
class OldInstall:
    machine: Path  # the rootdir
    site: Site
    worker: subprocess.Popen[bytes] | None = None

    def path(self, p: str) -> Path:
        return self.machine / p.lstrip("/")

    def start_worker(self) -> int:
        """The original daemon: cleanup_worker.py --daemon from the dashboard directory,
        writing its PID file."""
        script = self.path(DASHBOARD) / "workers" / "cleanup_worker.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("import time\ntime.sleep(300)\n")
        self.worker = subprocess.Popen(
            [sys.executable, "workers/cleanup_worker.py", "--daemon"],
            cwd=self.path(DASHBOARD))
        self.path(migrate.PID_FILE).write_text(f"{self.worker.pid}\n")
        deadline = time.monotonic() + 10
        while b"cleanup_worker" not in Path(f"/proc/{self.worker.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the stand-in worker did not start"
            time.sleep(0.01)
        return self.worker.pid

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(10)

    def migrate(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        code = cli.main(["migrate", "--rootdir", str(self.machine), *args], out=out)
        return code, out.getvalue()

    def report(self) -> dict[str, Any]:
        code, out = self.migrate("--json")
        assert code == 0
        doc: dict[str, Any] = json.loads(out)
        return doc


@pytest.fixture
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OldInstall]:
    """A machine below tmp_path/machine with the original worker's traces, and our
    configuration pointing at the dashboard as the machine names it."""
    site = Site(tmp_path).build()
    site.config.write_text(f'root = "{DASHBOARD}"\n')
    for key, value in site.env().items():
        monkeypatch.setenv(key, value)
    inst = OldInstall(tmp_path / "machine", site)
    for d in ("tmp", "etc/cron.d", "var/spool/cron/crontabs"):
        inst.path(d).mkdir(parents=True)
    inst.path(DASHBOARD).mkdir(parents=True)
    inst.path(migrate.STATE_FILE).write_text(json.dumps(OLD_STATE, indent=2))
    inst.path("/etc/crontab").write_text(
        "SHELL=/bin/sh\n# m h dom mon dow user command\n"
        "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
        "#0 3 * * * root python3 /srv/architect/workers/cleanup_worker.py --force\n")
    inst.path("/etc/cron.d/architect").write_text(f"MAILTO=root\n{CRON_D}\n")
    inst.path("/var/spool/cron/crontabs/architect").write_text(f"{USER_CRON}\n")
    inst.path(DASHBOARD, ).joinpath("app.py").write_text(ORIGINAL)
    yield inst
    inst.stop_worker()


def history() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = StateStore().load()["history"]
    return runs


# --- the survey ------------------------------------------------------------------------------


def test_a_dry_run_finds_every_trace_and_changes_nothing(old: OldInstall) -> None:
    pid = old.start_worker()
    before = {p: p.read_bytes() for p in old.machine.rglob("*") if p.is_file()}
    doc = old.report()
    assert doc["pid_file"]["pid"] == pid and doc["pid_file"]["live"] is True
    [proc] = [p for p in doc["processes"] if p["pid"] == pid]
    assert proc["invocation"]["daemon"] is True
    assert proc["invocation"]["base_dir"] == str(old.path(DASHBOARD))
    places = {(s["path"], s["lineno"], s["user"]) for s in doc["schedules"]}
    assert places == {("/etc/cron.d/architect", 2, "root"),
                      ("/var/spool/cron/crontabs/architect", 1, "architect")}
    assert doc["old_state"]["last_run"] == OLD_STATE["last_run"]
    assert doc["imported"] is False and doc["forced"] is False
    assert {(i["path"], i["text"]) for i in doc["imports"]} == {
        (f"{DASHBOARD}/app.py", ORIGINAL_IMPORT)}
    assert {p: p.read_bytes() for p in old.machine.rglob("*") if p.is_file()} == before
    assert not Path(StateStore().path).exists()
    assert any(f"PID {pid}" in s and "--stop" in s for s in doc["steps"])


def test_the_text_report_says_what_to_do_step_by_step(old: OldInstall) -> None:
    pid = old.start_worker()
    code, out = old.migrate()
    assert code == 0
    assert "dry run, nothing changed" in out
    assert f"running: PID {pid} (daemon)" in out
    assert f"/etc/cron.d/architect:2 as root: {CRON_D}" in out
    assert f"      ->  {COMPAT_IMPORT}" in out
    assert "app.register_blueprint(bp)" in out
    steps = out.split("Steps left:\n", 1)[1].splitlines()
    assert steps[0].startswith(f"  1. stop the original worker (its daemon, PID {pid})")
    assert any("crontab -u architect -e" in s for s in steps)
    assert any("architect-cleanup migrate --force" in s for s in steps)


def test_the_suggested_import_is_the_compat_change(old: OldInstall) -> None:
    [line] = migrate.find_dashboard_imports(migrate.Places(str(old.machine)), [DASHBOARD])
    assert line.replacement == COMPAT_IMPORT
    old.path(DASHBOARD).joinpath("tasks.py").write_text(
        "    from workers.cleanup_worker import CleanupWorker, run_daemon\n")
    lines = migrate.find_dashboard_imports(migrate.Places(str(old.machine)), [DASHBOARD])
    [odd] = [i for i in lines if i.path.endswith("tasks.py")]
    assert odd.replacement is None and odd.missing == ("run_daemon",)


def test_commented_out_cron_lines_and_other_jobs_are_not_reported(old: OldInstall) -> None:
    doc = old.report()
    assert all(s["path"] != "/etc/crontab" for s in doc["schedules"])


def test_a_run_parts_script_and_a_unit_are_found(old: OldInstall) -> None:
    old.path("/etc/cron.daily").mkdir(parents=True)
    old.path("/etc/cron.daily/architect-cleanup").write_text(
        "#!/bin/sh\ncd /srv/architect && exec python3 workers/cleanup_worker.py --force\n")
    old.path("/etc/systemd/system").mkdir(parents=True)
    old.path("/etc/systemd/system/cleanup.service").write_text(
        "[Service]\nExecStart=/usr/bin/python3 /srv/architect/workers/cleanup_worker.py "
        "--daemon\n")
    found = {s.path: s for s in migrate.find_schedules(migrate.Places(str(old.machine)))}
    script = found["/etc/cron.daily/architect-cleanup"].invocation
    unit = found["/etc/systemd/system/cleanup.service"].invocation
    assert script is not None and script.cleans and script.base_dir == DASHBOARD
    assert unit is not None and unit.daemon and unit.base_dir == DASHBOARD


# --- reading the original's command lines ----------------------------------------------------


DEFAULT_AGES = {"logs": 30, "tasks": 7, "errors": 30, "prompts": 14}


@pytest.mark.parametrize(("command", "cleans", "keep", "days", "base"), [
    ("cd /opt/a && python3 workers/cleanup_worker.py --force --days 60", True, 10, 60, "/opt/a"),
    ("python3 /opt/a/workers/cleanup_worker.py --force --keep=15", True, 15, None, "/opt/a"),
    ("python3 /opt/a/workers/cleanup_worker.py --force --dry-run", False, 10, None, "/opt/a"),
    ("python3 /opt/a/workers/cleanup_worker.py --keep 0 --force", True, 10, None, "/opt/a"),
    ("python3 /opt/a/workers/cleanup_worker.py --daemon --keep 3 --days 9", True, 10, None,
     "/opt/a"),
    ("python3 workers/cleanup_worker.py", False, 10, None, None),
])
def test_a_command_line_means_what_it_meant_to_the_original(
        command: str, cleans: bool, keep: int, days: int | None, base: str | None) -> None:
    inv = migrate.parse_invocation(command.split())
    assert inv is not None
    assert inv.cleans is cleans
    assert inv.retention()["prod"] == keep  # --keep 0 was ignored; the daemon ignored both
    # --days set all four ages; without it (or in the daemon) the defaults applied
    assert inv.ages() == (dict.fromkeys(DEFAULT_AGES, days) if days else DEFAULT_AGES)
    assert inv.base_dir == base


def test_a_command_without_the_worker_is_not_an_invocation() -> None:
    assert migrate.parse_invocation(["python3", "workers/other_worker.py", "--force"]) is None


# --- the configuration against the original ---------------------------------------------------


def diffs(cfg_text: dict[str, Any], command: str | None, roots: list[str]
          ) -> dict[str, migrate.Difference]:
    cfg = parse_config(cfg_text)
    runs = []
    if command:
        inv = migrate.parse_invocation(command.split())
        assert inv is not None
        runs.append(("cron", inv))
    return {d.topic: d for d in migrate.compare_config(cfg, runs, roots)}


def test_the_shipped_defaults_are_the_originals_defaults() -> None:
    d = diffs({"root": "/srv/architect"}, None, [])
    numbers = [t for t in d if t.startswith(("backups kept", "logs.", "tasks.", "errors.",
                                             "prompts."))]
    assert len(numbers) == 9 and all(d[t].kind == "same" for t in numbers)
    assert d["dry_run"].kind == "same"


def test_what_the_cron_line_told_the_original_is_compared() -> None:
    d = diffs({"root": "/srv/architect"},
              "cd /opt/architect && python3 workers/cleanup_worker.py --force --days 60 "
              "--keep 15", ["/opt/architect"])
    assert d["root"].kind == "action" and '"/opt/architect"' in d["root"].advice
    assert d["dry_run"].kind == "action"
    assert d["backups kept (prod)"].kind == "default"
    assert "newest 15 (cron)" in d["backups kept (prod)"].original
    for name in ("logs", "tasks", "errors", "prompts"):
        assert d[f"{name}.max_age"].kind == "default"
        assert d[f"{name}.max_age"].original == "60 days (cron)"


def test_a_config_that_matches_the_cron_line_shows_no_difference() -> None:
    cfg = {"root": "/opt/architect", "dry_run": False,
           "backups": {"retention": {"prod": 15, "qa": 15, "dev": 15, "test": 15,
                                     "default": 15}},
           "logs": {"max_age": "60d"}, "tasks": {"max_age": "60d"},
           "errors": {"max_age": "60d"}, "prompts": {"max_age": "60d"}}
    d = diffs(cfg, "cd /opt/architect && python3 workers/cleanup_worker.py --force --days 60 "
                   "--keep 15", ["/opt/architect"])
    assert [t for t, x in d.items() if x.kind in ("action", "default")] == []


def test_every_changed_safety_rule_is_listed() -> None:
    d = diffs({"root": "/srv/architect"}, None, [])
    rules = {t: x for t, x in d.items() if x.kind == "rule"}
    assert "only the top level of /tmp" in rules["logs in /tmp"].ours
    assert "finish time" in rules["tasks: age"].ours and "created_at" in rules[
        "tasks: age"].original
    assert 'temp.min_age = "1h"' in rules["temp files: age"].ours
    assert "status = 'resolved'" in rules["errors: resolved"].ours
    assert "always kept" in rules["backups: the newest"].ours
    assert 'backups.min_age = "1h"' in rules["backups: young backups"].ours
    assert "logs and tasks" in rules["--days"].ours


# --- --force ---------------------------------------------------------------------------------


def test_force_imports_the_last_run_once_marked_imported(old: OldInstall) -> None:
    code, out = old.migrate("--force")
    assert code == 0 and "Done: imported the last run" in out
    [run] = history()
    assert run["source"] == "imported" and run["imported"] is True
    assert run["dry_run"] is False and run["result"] == "success"
    assert run["stats"]["backups_deleted"] == 84 and run["stats"]["space_freed_mb"] == 271.93
    assert run["original_last_run"] == OLD_STATE["last_run"]
    code, out = old.migrate("--force")
    assert code == 0 and "Done: imported" not in out and len(history()) == 1
    assert "imported into" in out
    assert "migrate --force" not in out.split("Steps left:")[-1]


def test_the_imported_run_shows_in_report_status_and_compat(old: OldInstall) -> None:
    assert old.migrate("--force")[0] == 0
    out = io.StringIO()
    # the history database has it too (imported once), where it happened in time
    assert cli.main(["report", "--since", "3650d"], out=out) == 0
    assert " imported " in out.getvalue() and "271.9" in out.getvalue()
    assert old.migrate("--force")[0] == 0
    out = io.StringIO()
    assert cli.main(["report", "--since", "3650d", "--json"], out=out) == 0
    assert [r["source"] for r in json.loads(out.getvalue())["runs"]] == ["imported"]
    out = io.StringIO()
    assert cli.main(["status", "--json"], out=out) == 0
    status = json.loads(out.getvalue())
    assert status["last_result"]["source"] == "imported"
    assert status["last_stats"]["backups_deleted"] == 84
    state = compat.load_state()
    assert state is not None
    assert {k: state["stats"][k] for k in OLD_STATE["stats"]} == OLD_STATE["stats"]


def test_the_imported_run_takes_its_place_in_time(old: OldInstall) -> None:
    site = old.site
    site.config.write_text(f'root = "{site.root}"\n[logs]\ntmp_dir = "{site.tmp}"\n')
    assert cli.main(["run"], out=io.StringIO()) == 0  # ours: now, after the old one
    assert old.migrate("--force")[0] == 0
    runs = history()
    assert [r["source"] for r in runs] == ["imported", "cli"]
    assert StateStore().load()["last_run"]["source"] == "cli"


def test_the_naive_local_time_of_the_original_becomes_utc(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert migrate.utc_from_original("2026-02-07T19:07:36.123456") == (
            "2026-02-07T18:07:36+00:00")
        assert migrate.utc_from_original("2026-07-07T19:07:36") == "2026-07-07T17:07:36+00:00"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"last_run": "yesterday", "stats": OLD_STATE["stats"]}),
    json.dumps({"last_run": OLD_STATE["last_run"], "stats": {"backups_deleted": -3}}),
    json.dumps({"last_run": OLD_STATE["last_run"], "stats": {"backups_deleted": True}}),
    json.dumps([OLD_STATE]),
])
def test_an_unusable_old_state_is_reported_and_not_imported(old: OldInstall,
                                                            content: str) -> None:
    old.path(migrate.STATE_FILE).write_text(content)
    code, out = old.migrate("--force")
    assert code == 0 and "not imported:" in out
    assert history() == []


def test_force_leaves_a_live_workers_pid_file_and_removes_a_stale_one(old: OldInstall) -> None:
    pid = old.start_worker()
    pid_file = old.path(migrate.PID_FILE)
    old.migrate("--force")
    assert pid_file.read_text().strip() == str(pid), "the live daemon's PID file was removed"
    old.stop_worker()
    pid_file.write_text(f"{pid}\n")  # the original's --daemon killed hard leaves it behind
    code, out = old.migrate("--force")
    assert code == 0 and "removed the stale PID file" in out
    assert not pid_file.exists()


def test_a_pid_file_without_a_pid_is_left_for_the_operator(old: OldInstall) -> None:
    pid_file = old.path(migrate.PID_FILE)
    pid_file.write_text("garbage\n")
    code, out = old.migrate("--force")
    assert code == 0 and "does not hold a PID" in out
    assert pid_file.exists()


def test_force_while_a_cleanup_runs_exits_75_and_imports_nothing(
        old: OldInstall, capsys: pytest.CaptureFixture[str]) -> None:
    with RunLock(str(old.site.run / "cleanup.lock")):
        code, _out = old.migrate("--force")
    assert code == 75
    assert "another cleanup is running" in capsys.readouterr().err
    assert history() == []


def test_a_missing_rootdir_is_a_usage_error(old: OldInstall,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--rootdir", str(old.machine / "nope")],
                    out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "--rootdir" in err and "no such directory" in err and "Traceback" not in err


def test_a_machine_without_the_original_worker_has_nothing_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "c.toml").write_text(f'root = "{tmp_path}"\n')
    os.environ["ARCHITECT_CLEANUP_CONFIG"] = str(tmp_path / "c.toml")
    out = io.StringIO()
    assert cli.main(["migrate", "--rootdir", str(empty)], out=out) == 0
    text = out.getvalue()
    assert "PID file: none" in text and "no cron line" in text
    assert "Nothing left to do." in text


def test_the_state_file_alone_says_the_original_cleaned_for_real(old: OldInstall) -> None:
    # Its daemon stopped and its cron lines removed, the original's state file still shows it
    # cleaned (it saved state after real runs only): the timer's dry_run still needs a word.
    old.path("/etc/cron.d/architect").unlink()
    old.path("/var/spool/cron/crontabs/architect").unlink()
    [dry] = [d for d in old.report()["differences"] if d["topic"] == "dry_run"]
    assert dry["kind"] == "action" and "its state file" in dry["original"]
    old.path(migrate.STATE_FILE).unlink()
    [dry] = [d for d in old.report()["differences"] if d["topic"] == "dry_run"]
    assert dry["kind"] == "same"


def test_a_corrupt_state_of_ours_is_not_overwritten_by_the_import(old: OldInstall) -> None:
    store = StateStore()
    os.makedirs(store.directory, exist_ok=True)
    Path(store.path).write_text("{half a state")
    code, out = old.migrate("--force")
    assert code == 1 and "Problem: not imported:" in out and "fix or move it away" in out
    assert Path(store.path).read_text() == "{half a state"
