"""architect-cleanup used the way an operator uses it: apt, systemctl, journalctl, the CLI.

Every test gets a freshly booted bookworm container with the Architect demo data tree under
/srv/architect (and the dashboard's logs in /tmp) and the built .deb installed with ``apt``
(the ``installed`` fixture); the purge test installs by itself to compare the tree before and
after.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import APT_ENV, PACKAGE, SHARE_INSIDE, apt_install, seed_tree
from nspawn import Container

from architect_cleanup.journal import MESSAGE_IDS

SERVICE = "architect-cleanup.service"
TIMER = "architect-cleanup.timer"
CONFFILE = "/etc/architect-cleanup/config.toml"
STATE = "/var/lib/architect-cleanup/state.json"
CATALOG = "/usr/lib/systemd/catalog/architect-cleanup.catalog"
ROOT = "/srv/architect"
SUMMARY = re.compile(r"(Dry run: would free|Freed) \d+\.\d MiB: \d+ backups, \d+ logs")


# --- helpers ---------------------------------------------------------------------------------


def show(box: Container, unit: str, *props: str) -> dict[str, str]:
    out = box.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def start(box: Container, check: bool = True) -> int:
    """``systemctl start`` the oneshot service: returns when the run has finished."""
    return box.run(["systemctl", "start", SERVICE], check=check).returncode


def journal(box: Container, *args: str) -> list[dict[str, str]]:
    """This unit's journal entries as dicts (``journalctl -u architect-cleanup -o json``)."""
    out = box.sh(shlex.join(["journalctl", "-u", "architect-cleanup", "-o", "json",
                             "--no-pager", *args]))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def by_id(entries: list[dict[str, str]], kind: str) -> list[dict[str, str]]:
    return [e for e in entries if e.get("MESSAGE_ID") == MESSAGE_IDS[kind].hex]


def tree_fingerprint(box: Container, *paths: str) -> list[str]:
    """Every path below *paths*, files with size and mtime: what a run might change.

    (Directory mtimes are left out: systemd itself briefly creates a directory in /tmp while
    it sets up the service's PrivateDevices= namespace.)"""
    out = box.sh("find " + " ".join(paths) + r" -mindepth 1 \( -type d -printf 'd - - %p\n' \)"
                 r" -o -printf '%y %s %T@ %p\n' | sort -k4")
    return out.splitlines()


def state(box: Container) -> dict:
    return json.loads(box.read_file(STATE))


def set_conf(box: Container, key: str, old: str, new: str) -> None:
    """Edit one top-level key of the conffile in place, as an operator would with an editor."""
    text = box.read_file(CONFFILE)
    line = f"{key} = {old}"
    assert re.search(rf"^{re.escape(line)}$", text, re.M), f"{CONFFILE} has no `{line}` line"
    box.write_file(CONFFILE, re.sub(rf"^{re.escape(line)}$", f"{key} = {new}", text, flags=re.M))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sql(box: Container, db: str, query: str) -> list[list[object]]:
    """Rows of *query* on a dashboard database, read with the container's python3."""
    script = ("import json, sqlite3, sys\n"
              "con = sqlite3.connect(sys.argv[1])\n"
              "print(json.dumps(con.execute(sys.argv[2]).fetchall()))\n")
    return json.loads(box.sh(shlex.join(["python3", "-c", script, db, query])))


def count(box: Container, pattern: str) -> int:
    return int(box.sh(f"ls -1d {pattern} 2>/dev/null | wc -l").strip())


# --- installation ----------------------------------------------------------------------------


def test_apt_installs_offline_and_enables_only_the_timer(
        container: Container, debs: dict[str, Path]) -> None:
    box = container
    seed_tree(box)
    apt_output = apt_install(box, debs[PACKAGE])
    assert "0 upgraded, 1 newly installed" in apt_output  # every dependency was already there
    assert not re.search(r"^Get:\d+ \w+://", apt_output, re.M)  # nothing downloaded
    assert box.sh(f"dpkg-query -W -f '${{Status}}' {PACKAGE}") == "install ok installed"
    assert box.sh(f"systemctl is-enabled {TIMER}").strip() == "enabled"
    assert box.sh(f"systemctl is-active {TIMER}").strip() == "active"
    service = show(box, SERVICE, "ActiveState", "InvocationID",
                   "ExecMainStartTimestampMonotonic", "UnitFileState")
    assert service["ActiveState"] == "inactive"
    assert service["InvocationID"] == "" and service["ExecMainStartTimestampMonotonic"] == "0"
    assert service["UnitFileState"] == "static"  # started by the timer, never enabled itself
    assert not box.exists(STATE)
    assert TIMER in box.sh(f"systemctl list-timers --no-legend {TIMER}")
    assert box.exists(CONFFILE) and box.exists(CATALOG)
    assert box.sh(f"dpkg-query -W -f '${{Conffiles}}' {PACKAGE}").split()[0] == CONFFILE
    # the shipped configuration is valid and is a dry run
    assert json.loads(box.sh("architect-cleanup config check --json"))["config"]["dry_run"]


# --- runs from systemctl ---------------------------------------------------------------------


def test_systemctl_start_is_a_dry_run_until_the_conffile_says_otherwise(
        installed: Container) -> None:
    box = installed
    before = tree_fingerprint(box, ROOT, "/tmp")
    assert count(box, f"{ROOT}/data/prod/backups/architect_*.db") == 94

    start(box)
    assert tree_fingerprint(box, ROOT, "/tmp") == before  # a dry run changes nothing
    dry = state(box)["last_run"]
    assert dry["dry_run"] is True and dry["result"] == "success"
    assert dry["stats"]["backups_deleted"] > 0 and dry["stats"]["logs_deleted"] > 0

    for key in ("tasks_deleted", "errors_deleted", "prompts_deleted"):
        assert dry["stats"][key] > 0, key
    prod = f"{ROOT}/data/prod/architect.db"
    cleanup_rows = "SELECT details FROM activity_log WHERE action = 'system_cleanup'"
    assert sql(box, prod, cleanup_rows) == []  # a dry run from the timer changes no database

    set_conf(box, "dry_run", "true", "false")
    start(box)
    real = state(box)["last_run"]
    assert real["dry_run"] is False and real["result"] == "success"
    for key in ("backups_deleted", "logs_deleted", "temp_files_deleted", "space_freed",
                "tasks_deleted", "errors_deleted", "prompts_deleted"):
        assert real["stats"][key] == dry["stats"][key], key  # the dry run told the truth
    (details,), = sql(box, prod, cleanup_rows)  # the real run is in the dashboard's log
    logged = json.loads(str(details))
    assert logged["dry_run"] is False and logged["source"] == "systemctl"
    old_done = ("SELECT count(*) FROM task_queue WHERE status IN ('completed', 'cancelled', "
                "'failed') AND completed_at < datetime('now', '-7 days')")
    assert sql(box, prod, old_done) == [[0]]
    # prod keeps its newest 10 finished backups, plus the one still being written
    assert count(box, f"{ROOT}/data/prod/backups/architect_*.db") == 11
    assert box.exists(f"{ROOT}/data/prod/backups/architect_inprogress.db")
    for active in ("architect_worker.log", "architect_cleanup_worker.log"):  # protected
        assert box.exists(f"{ROOT}/logs/{active}") and box.exists(f"/tmp/{active}")
    assert box.exists("/tmp/somebody_elses.log")  # not ours
    assert not box.exists("/tmp/architect_session_1234.log")  # ours, 40 days old
    assert tree_fingerprint(box, ROOT, "/tmp") != before


def test_systemctl_status_shows_the_summary_line(installed: Container) -> None:
    box = installed
    start(box)
    summary = state(box)["last_run"]["summary"]
    assert summary.startswith("Dry run: would free ")
    out = box.run(["systemctl", "status", "--no-pager", "--lines=20", SERVICE],
                  check=False).stdout  # exit 3: inactive (dead)
    assert "status=0/SUCCESS" in out
    log_lines = [ln for ln in out.splitlines() if " architect-cleanup[" in ln]
    assert log_lines and log_lines[-1].endswith(summary)  # the run's last line is the summary
    assert SUMMARY.search(summary)


def test_the_journal_carries_structured_fields_and_message_ids(installed: Container) -> None:
    box = installed
    start(box)
    entries = journal(box)
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "architect-cleanup"]
    assert ours and all(e.get("_SYSTEMD_UNIT") == SERVICE for e in ours)

    (started,) = by_id(ours, "run_started")
    assert started["CLEANUP_DRY_RUN"] == "1" and started["CLEANUP_ROOT"] == ROOT
    done = {e["CLEANUP_TARGET"]: e for e in by_id(ours, "target_done")}
    assert {"backups", "logs", "temp"} <= set(done)
    for e in done.values():
        assert e["CLEANUP_RESULT"] == "ok" and e["CLEANUP_DRY_RUN"] == "1"
        assert int(e["CLEANUP_ITEMS"]) >= 0 and int(e["CLEANUP_BYTES"]) >= 0
    assert int(done["backups"]["CLEANUP_ITEMS"]) > 0
    (summary,) = by_id(ours, "run_summary")
    assert summary["CLEANUP_RESULT"] == "success" and summary["CLEANUP_DRY_RUN"] == "1"
    last = state(box)["last_run"]
    assert int(summary["CLEANUP_BYTES"]) == last["stats"]["space_freed"]
    assert summary["MESSAGE"] == last["summary"]
    assert summary["_SYSTEMD_INVOCATION_ID"] == started["_SYSTEMD_INVOCATION_ID"]

    # a script reads the history by MESSAGE_ID, as the catalog's header says
    start(box)
    runs = journal(box, f"MESSAGE_ID={MESSAGE_IDS['run_summary'].hex}")
    assert len(runs) == 2 and len({r["_SYSTEMD_INVOCATION_ID"] for r in runs}) == 2


def _catalog_subjects(box: Container) -> dict[str, str]:
    text = box.read_file(CATALOG)
    return dict(re.findall(r"^-- ([0-9a-f]{32})\nSubject: (.+)$", text, re.M))


def test_journalctl_x_explains_each_entry_from_the_catalog(installed: Container) -> None:
    box = installed
    subjects = _catalog_subjects(box)
    assert {m.hex for m in MESSAGE_IDS.values()} <= set(subjects)  # every id is documented
    listed = box.sh("journalctl --list-catalog")
    for mid in MESSAGE_IDS.values():
        assert mid.hex in listed  # compiled into the catalog database by the dpkg trigger

    start(box)
    explained = box.sh("journalctl -x --no-pager -u architect-cleanup")
    for kind in ("run_started", "target_done", "run_summary"):
        entry = by_id(journal(box), kind)[0]
        subject = re.sub(r"@(\w+)@", lambda m, e=entry: e.get(m.group(1), m.group(0)),
                         subjects[MESSAGE_IDS[kind].hex])
        assert f"Subject: {subject}" in explained, kind


def test_systemd_receives_status_progress(installed: Container) -> None:
    box = installed
    box.run("systemd-analyze log-level debug")  # PID 1 then logs each sd_notify message
    start(box)
    pid1 = [e.get("MESSAGE", "") for e in journal(box) if e.get("_PID") == "1"]
    notes = [m for m in pid1 if "Got notification message" in m]
    statuses = [m.split("(STATUS=", 1)[1].rstrip(")") for m in notes if "(STATUS=" in m]
    # "backups: starting", "logs/temp: 1,200 files checked" (one walk serves both)
    named = {t for s in statuses if ": " in s for t in s.split(": ", 1)[0].split("/")}
    assert {"backups", "logs", "temp"} <= named, statuses
    assert statuses[-1] == state(box)["last_run"]["summary"]  # the last STATUS is the summary
    # NotifyAccess=main, and the main process is the one that sends them
    assert [m for m in pid1 if "reception only permitted" in m] == []


def test_the_state_file_records_each_run(installed: Container) -> None:
    box = installed
    start(box)
    first = state(box)
    # `systemctl start` by hand: no timer triggered it ($TRIGGER_UNIT unset)
    assert first["last_run"]["source"] == "systemctl"
    assert len(first["history"]) == 1 and first["history"][-1] == first["last_run"]
    set_conf(box, "dry_run", "true", "false")
    start(box)
    second = state(box)
    assert [r["dry_run"] for r in second["history"]] == [True, False]
    run = second["last_run"]
    started = datetime.fromisoformat(run["started_at"])
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=5)
    assert run["result"] == "success" and run["failed_targets"] == []
    assert second["format"] == 1
    # `architect-cleanup report` reads the same history
    report = json.loads(box.sh("architect-cleanup report --json"))
    assert [h["started_at"] for h in report["history"]] == [
        h["started_at"] for h in second["history"]]


# --- the timer ------------------------------------------------------------------------------


def test_the_timer_fires_and_runs_the_service(installed: Container) -> None:
    box = installed
    box.write_file(f"/etc/systemd/system/{TIMER}.d/50-soon.conf",
                   "[Timer]\nOnCalendar=\nOnActiveSec=2s\nRandomizedDelaySec=0\n"
                   "AccuracySec=100ms\n")
    box.run(f"systemctl daemon-reload && systemctl restart {TIMER}")
    assert show(box, SERVICE, "InvocationID")["InvocationID"] == ""

    def finished() -> bool:
        return show(box, SERVICE, "ExecMainExitTimestampMonotonic")[
            "ExecMainExitTimestampMonotonic"] not in ("", "0")

    wait_for(finished, 30, f"{TIMER} to start {SERVICE}")
    timer = show(box, TIMER, "LastTriggerUSec", "Triggers")
    assert timer["Triggers"] == SERVICE and timer["LastTriggerUSec"] not in ("", "n/a")
    service = show(box, SERVICE, "Result", "InvocationID")
    assert service["Result"] == "success"
    (summary,) = by_id(journal(box), "run_summary")
    assert summary["_SYSTEMD_INVOCATION_ID"] == service["InvocationID"]
    assert state(box)["last_run"]["source"] == "timer"


def test_architect_cleanup_status_reports_the_timers_next_run(installed: Container) -> None:
    box = installed
    doc = json.loads(box.sh("architect-cleanup status --json"))
    assert doc["timer_enabled"] is True and doc["daemon_running"] is True
    assert doc["daemon_pid"] is None and doc["last_result"] is None
    assert doc["next_run"], doc
    next_run = datetime.fromisoformat(doc["next_run"])
    # OnCalendar=hourly with RandomizedDelaySec=15min
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(minutes=76)
    shown = box.sh(f"systemctl show -P NextElapseUSecRealtime {TIMER}").strip()
    wanted = box.sh(f"date -u -d {shlex.quote(shown)} +%Y-%m-%dT%H:%M:%S")
    assert next_run.strftime("%Y-%m-%dT%H:%M:%S") == wanted.strip()

    start(box)
    human = box.sh("architect-cleanup status")
    assert re.search(r"Timer: +enabled, active; next run \d{4}-\d\d-\d\dT", human), human
    assert "Last run:" in human and "dry run, success" in human
    disabled = box.sh("architect-cleanup --stop")
    assert "disabled" in disabled
    doc = json.loads(box.sh("architect-cleanup status --json"))
    assert doc["timer_enabled"] is False and doc["daemon_running"] is False
    assert doc["next_run"] is None


# --- when things go wrong --------------------------------------------------------------------


def test_a_failing_target_makes_the_unit_failed(installed: Container) -> None:
    box = installed
    box.run(f"mv {ROOT} {ROOT}.moved")  # the data root is gone: the file targets fail
    assert start(box, check=False) != 0
    assert box.run(["systemctl", "is-failed", SERVICE], check=False).stdout.strip() == "failed"
    service = show(box, SERVICE, "Result", "ExecMainStatus")
    assert service == {"Result": "exit-code", "ExecMainStatus": "1"}
    failed = {e["CLEANUP_TARGET"]: e for e in by_id(journal(box), "target_failed")}
    assert "backups" in failed and failed["backups"]["CLEANUP_RESULT"] == "failed"
    assert failed["backups"]["PRIORITY"] == "3"
    (summary,) = by_id(journal(box), "run_summary")
    assert summary["CLEANUP_RESULT"] == "failed"
    assert "backups" in summary["CLEANUP_FAILED_TARGETS"].split(",")
    last = state(box)["last_run"]
    assert last["result"] == "failed" and "backups" in last["failed_targets"]
    status = box.run(["systemctl", "status", "--no-pager", SERVICE], check=False).stdout
    assert "failed: backups" in status


# (not below /opt: a root there must be named exactly, /opt/<name>, or config check refuses it)
OUTSIDE = "/dashboard"


def test_a_root_outside_read_write_paths_gives_the_drop_in_hint(installed: Container) -> None:
    box = installed
    seed_tree(box, OUTSIDE)
    root = f"{OUTSIDE}/srv/architect"
    box.write_file("/etc/architect-cleanup/config.d/50-root.toml",
                   f'root = "{root}"\ndry_run = false\n')
    before = tree_fingerprint(box, root)
    # `config check` says so before any run, once, reading the installed unit's paths
    check = box.run("architect-cleanup config check", check=False)
    assert check.returncode == 0
    warned = [ln for ln in check.stderr.splitlines() if "ReadWritePaths=" in ln]
    assert len(warned) == 1 and f"root {root} is outside the writable paths" in warned[0]
    assert "ReadWritePaths=/srv/architect /tmp" in warned[0], warned
    assert start(box, check=False) != 0  # SPEC 7: a path outside them must fail ...
    assert box.run(["systemctl", "is-failed", SERVICE], check=False).stdout.strip() == "failed"
    assert tree_fingerprint(box, root) == before  # the sandbox held: nothing removed
    hints = by_id(journal(box), "readonly_path")
    assert hints, "no readonly_path entry in the journal"
    assert all("systemctl edit architect-cleanup.service" in h["MESSAGE"] for h in hints)
    assert any(root in h["MESSAGE"] for h in hints)
    # the database targets give the same hint, not a question about the owner
    db_failed = [e for e in by_id(journal(box), "target_failed")
                 if e["CLEANUP_TARGET"] in ("tasks", "errors", "prompts")]
    assert db_failed
    for e in db_failed:
        assert "ReadWritePaths=" in e["CLEANUP_ERROR"], e["CLEANUP_ERROR"]
        assert "may that user" not in e["CLEANUP_ERROR"], e["CLEANUP_ERROR"]
    status = box.run(["systemctl", "status", "--no-pager", "--lines=50", SERVICE],
                     check=False).stdout
    assert "systemctl edit architect-cleanup.service" in status

    # following the hint fixes it
    box.write_file(f"/etc/systemd/system/{SERVICE}.d/50-root.conf",
                   f"[Service]\nReadWritePaths=-{OUTSIDE}\n")
    box.run("systemctl daemon-reload")
    start(box)
    assert count(box, f"{root}/data/prod/backups/architect_*.db") == 11
    assert state(box)["last_run"]["result"] == "success"


# --- removal ---------------------------------------------------------------------------------

#: Paths that change as the system runs, whoever is installed (package manager bookkeeping,
#: logs, caches); everything else must be exactly as before the installation.
CHURN = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/log", "/var/cache", "/var/lib/apt",
         "/var/lib/dpkg", "/var/lib/systemd/catalog", "/var/lib/systemd/deb-systemd-helper-enabled",
         "/var/lib/systemd/deb-systemd-user-helper-enabled", "/etc/ld.so.cache", ROOT)


def snapshot(box: Container) -> set[str]:
    prune = " -o ".join(f"-path {p}" for p in CHURN)
    return set(box.sh(f"find / -xdev \\( {prune} \\) -prune -o -print").splitlines())


def test_apt_purge_leaves_no_files(container: Container, debs: dict[str, Path]) -> None:
    box = container
    seed_tree(box)
    data = tree_fingerprint(box, ROOT)
    before = snapshot(box)
    apt_install(box, debs[PACKAGE])
    owned = box.sh(f"dpkg-query -L {PACKAGE}").splitlines()
    set_conf(box, "dry_run", "true", "false")  # a modified conffile goes too
    start(box)
    box.run("architect-cleanup status && architect-cleanup report")
    data_after_run = tree_fingerprint(box, ROOT)
    assert box.exists(STATE)

    box.run(["apt-get", "purge", "-y", PACKAGE], env=APT_ENV)
    after = snapshot(box)
    assert sorted(after - before) == []
    assert sorted(before - after) == []
    leftovers = box.sh(f"find / \\( -path /proc -o -path /sys -o -path {SHARE_INSIDE} \\) "
                       "-prune -o -name '*architect-cleanup*' -print").split()
    assert leftovers == []  # not in /run, /var/lib/systemd, /etc/systemd, ... either
    for path in owned:
        if path.startswith(("/etc/architect", "/usr/lib/python3/dist-packages/architect")):
            assert not box.exists(path), path
    assert box.run(f"systemctl cat {TIMER}", check=False).returncode != 0
    assert "not-found" in box.sh(f"systemctl show -p LoadState {TIMER} {SERVICE}")
    listed = box.sh("journalctl --list-catalog")
    assert MESSAGE_IDS["run_summary"].hex not in listed
    # the operator's data is not the package's: a purge never touches it
    assert tree_fingerprint(box, ROOT) == data_after_run != data


def test_a_database_owned_by_the_dashboards_user_is_purged_as_that_user(
        installed: Container) -> None:
    """The service works on a database as its owner (setfsuid/setfsgid, which its capability
    bounding set and system-call filter allow): a database it cannot work on as its owner is
    refused, so a success here proves the switch works under the real sandbox; and nothing
    below data/ (SQLite's -wal/-shm/-journal, the activity rows' writes) ends up root's."""
    box = installed
    box.sh("useradd --system --user-group --no-create-home --shell /usr/sbin/nologin architect"
           f" && chown -R architect:architect {ROOT}/data")
    set_conf(box, "dry_run", "true", "false")
    start(box)
    real = state(box)["last_run"]
    assert real["result"] == "success", real
    assert real["stats"]["tasks_deleted"] > 0 and real["stats"]["prompts_deleted"] > 0
    assert box.sh(f"find {ROOT}/data -user root -printf '%p\\n'").strip() == ""
