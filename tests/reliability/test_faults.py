"""Faults: the state directory full or read-only, a corrupt or truncated state file, a
configuration with every kind of mistake, and SIGTERM in the middle of a run. The real CLI
runs in its own process each time; nothing may crash (no traceback), the exit code must say
what happened, and nothing may be lost.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import pytest
from sd_helpers import notify_socket

from architect_cleanup.config import ConfigError
from architect_cleanup.lock import holder
from architect_cleanup.worker import CleanupWorker

import kit
from conftest import needs_root
from kit import DAY, FIGURES, Arena

NOW = time.time()
OLD = NOW - 90 * DAY


def small_world(arena: Arena) -> kit.World:
    return kit.build_world(arena, NOW, backups=8, logs=10, temp=10, caches=2, tasks=50,
                           errors=10, prompts=20, keep_rows=10)


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout, proc.stdout[-4000:]


# --- the state directory --------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("fault", ["no space", "no inodes", "read-only"])
def test_a_state_directory_that_cannot_be_written_still_gives_the_summary_and_exit_1(
        arena: Arena, fault: str) -> None:
    w = small_world(arena)
    options = {"no space": "size=64k", "no inodes": "size=1m,nr_inodes=4",
               "read-only": "size=1m"}[fault]
    # mode=0755: a tmpfs is 1777 by default, and a state directory others can write is refused
    arena.mount("tmpfs", arena.state, options=options + ",mode=0755")
    # a previous run's state, which must survive
    code, _ = kit.run_json(arena, "--dry-run")
    assert code == 0
    before = (arena.state / "state.json").read_bytes()
    if fault == "no space":
        with open(arena.state / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
    elif fault == "no inodes":
        i = 0
        while True:
            try:
                (arena.state / f"f{i}").touch()
            except OSError:
                break
            i += 1
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(arena.state)], check=True)
    FIGURES.fault(f"state directory: {fault}")

    proc = kit.run_cli(arena, "run", "--force")
    assert_no_traceback(proc)
    assert proc.returncode == 1
    # the work was done and reported; only the record failed
    assert w.doomed_left() == [] and w.missing_keepers() == []
    # the summary, once: printed on stdout (the journal gets its summary entry; a terminal's
    # stderr does not repeat it)
    assert "Space freed:" in proc.stdout and "Freed" not in proc.stderr
    assert "cannot write" in proc.stderr + proc.stdout
    assert (arena.state / "state.json").read_bytes() == before  # old state intact
    assert kit.leftovers(arena) == []
    assert holder(arena.lock) is None


@needs_root
def test_a_state_file_on_a_disk_that_fills_is_written_whole_or_not_at_all(
        arena: Arena) -> None:
    """Fill the state tmpfs to every size a state write could stop at: state.json is always
    complete JSON (the old one or the new one) and no temporary file stays."""
    small_world(arena)
    arena.mount("tmpfs", arena.state, options="size=256k,mode=0755")
    code, _ = kit.run_json(arena, "--dry-run")
    assert code == 0
    size = (arena.state / "state.json").stat().st_size
    worked = failed = 0
    for free in range(0, size + 8192, max(size // kit.scale(6, 40), 512)):
        for f in arena.state.glob("filler*"):
            f.unlink()
        avail = os.statvfs(arena.state).f_bavail * os.statvfs(arena.state).f_frsize
        with open(arena.state / "filler", "wb", buffering=0) as fh:
            fh.truncate(0)
            try:
                fh.write(b"\0" * max(avail - free, 0))
                fh.flush()
            except OSError:
                pass
        proc = kit.run_cli(arena, "run", "--dry-run")
        assert_no_traceback(proc)
        doc = kit.state_doc(arena)  # parses, or the test fails
        assert doc is not None and isinstance(doc["history"], list)
        assert kit.leftovers(arena) == []
        worked += proc.returncode == 0
        failed += proc.returncode == 1
        FIGURES.fault("state directory nearly full")
    assert failed >= 1 and worked >= 1


CORRUPT = {
    "garbage": b"\x00\xff\xfe garbage \x80",
    "truncated": b'{"format": 1, "last_run": {"started_at": "2026-01-01T00:00:00+00:00", "dry',
    "empty": b"",
    "a list": b"[1, 2, 3]",
    "history not a list": b'{"format": 1, "last_run": null, "history": 5}',
    "history of junk": b'{"format": 1, "last_run": 7, "history": [1, "x", null, [], {}]}',
    "nulls everywhere": (b'{"format": 1, "last_run": {"started_at": null, "stats": null, '
                         b'"summary": null, "duration_s": null}, "history": [{"started_at": '
                         b'null, "dry_run": null, "source": null, "result": null, "stats": '
                         b'[1], "summary": null}]}'),
    "wrong types": (b'{"format": "x", "last_run": {"started_at": 5, "stats": "s", '
                    b'"dry_run": "yes", "duration_s": "long"}, "history": [{"started_at": '
                    b'{"a": 1}, "stats": {"space_freed_mb": "lots"}, "summary": 3}]}'),
    "huge numbers": b'{"history": [{"stats": {"space_freed_mb": 1e999}}], "last_run": null}',
    "not utf-8 json": b'{"history": [], "last_run": {"summary": "\xff\xfe"}}',
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_a_corrupt_or_truncated_state_file_is_reported_and_replaced_never_a_crash(
        arena: Arena, kind: str) -> None:
    small_world(arena)
    arena.state.mkdir()
    (arena.state / "state.json").write_bytes(CORRUPT[kind])
    FIGURES.fault(f"corrupt state file: {kind}")
    for args in (["status"], ["status", "--json"], ["report"], ["report", "--json"],
                 ["--status"]):
        proc = kit.run_cli(arena, *args)
        assert_no_traceback(proc)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        if "--json" in args:
            json.loads(proc.stdout)
    proc = kit.run_cli(arena, "run", "--dry-run")
    assert_no_traceback(proc)
    assert proc.returncode == 0
    doc = kit.state_doc(arena)
    assert doc is not None and doc["last_run"]["result"] == "success"
    proc = kit.run_cli(arena, "report")
    assert_no_traceback(proc)
    assert proc.returncode == 0


@needs_root
def test_a_state_file_that_is_a_directory_is_set_aside_and_replaced(
        arena: Arena) -> None:
    small_world(arena)
    arena.state.mkdir()
    (arena.state / "state.json").mkdir()
    FIGURES.fault("state.json is a directory")
    for args in (["status"], ["report"]):
        proc = kit.run_cli(arena, *args)
        assert_no_traceback(proc)
        assert proc.returncode == 0
    proc = kit.run_cli(arena, "run", "--dry-run")
    assert_no_traceback(proc)
    # reported, kept aside, replaced
    assert proc.returncode == 0 and "state.json.corrupt" in proc.stderr
    assert (arena.state / "state.json.corrupt").is_dir()
    doc = kit.state_doc(arena)
    assert doc is not None and doc["last_run"]["result"] == "success"


# --- the configuration ----------------------------------------------------------------------

#: (configuration text, words each problem report must contain)
MISTAKES: dict[str, tuple[bytes, list[str]]] = {
    "not TOML": (b"root = [unclosed\n", ["not valid TOML"]),
    "not UTF-8": (b'root = "/srv/\xff\xfe"\n', ["not valid TOML"]),
    "unknown keys everywhere": (
        b'rot = "/x"\n[logs]\nmax_agee = "3d"\n[backups.retention]\nprodd = 3\n'
        b'[nosuchsection]\na = 1\n',
        ["rot: unknown key", "logs.max_agee: unknown key", "nosuchsection: unknown key",
         "backups.retention.prodd: not a configured environment"]),
    "wrong types": (
        b'root = 5\ndry_run = "no"\nenvironments = "prod"\n[logs]\nmax_age = 30\n'
        b'dirs = "data"\n[database]\nbatch_size = "1000"\n[temp]\nenabled = 1\n',
        ["root: must be a string", "dry_run: must be true or false",
         "environments: must be a list", "logs.max_age: must be a duration",
         "logs.dirs: must be a list", "database.batch_size: must be a whole number",
         "temp.enabled: must be true or false"]),
    "system roots": (b'root = "/etc"\n[logs]\ntmp_dir = "/"\n',
                     ["root: '/etc': refusing", "logs.tmp_dir: '/'"]),
    "root through dot-dot": (b'root = "/srv/../usr"\n', ["refusing"]),
    "relative root": (b'root = "srv/architect"\n', ["must be an absolute path"]),
    "escaping paths": (
        b'[logs]\ndirs = ["../etc", "/var/log"]\n[temp]\ndirs = ["a/../../b"]\n'
        b'[database]\npaths = ["/etc/x.db"]\n[backups]\ndir = "../{env}"\n',
        ["'..' is not allowed", "must be relative to root"]),
    "patterns that match everything": (
        b'[logs]\npatterns = ["*", "a/b.log"]\n[temp]\ndir_patterns = [".*"]\n',
        ["logs.patterns: patterns match file names", "temp.dir_patterns"]),
    "retention that deletes everything": (
        b'[backups.retention]\nprod = 0\nqa = -3\n[backups.policy.dev]\nkeep_min = 0\n'
        b'keep_daily = 2\n',
        ["prod: 0 would delete every backup", "qa: -3 would delete every backup",
         "keep_min: 0 would let"]),
    "a policy without rules": (b'[backups.policy.prod]\nmax_total_size = "1G"\n',
                               ["keeps nothing but the newest backup"]),
    "bad sizes and percentages": (
        b'[backups.policy.prod]\nkeep_last = 3\nmax_total_size = "5 gigs"\n'
        b'min_free_space = "150%"\n',
        ["is not a size", "below 100%"]),
    "durations": (
        b'[logs]\nmax_age = "forever"\n[temp]\nmin_age = "-1h"\n[tasks]\nmax_age = "0d"\n'
        b'[errors]\nmax_age = "99999999999999999999d"\n[prompts]\nmax_age = "1e3d"\n',
        ["logs.max_age", "temp.min_age", "tasks.max_age: must be longer than 0s",
         "errors.max_age", "prompts.max_age"]),
    "numbers out of range": (
        b'[database]\nbatch_size = 0\nbusy_timeout = "0s"\nnaive_timezone = "mars"\n',
        ["database.batch_size: must be >= 1", "database.busy_timeout",
         "database.naive_timezone"]),
    "names": (
        b'environments = ["prod", "prod", "../x", ""]\n[tasks]\ntables = ["t; DROP TABLE x"]\n'
        b'statuses = []\n[errors]\ntable = "errors--"\n',
        ["environments", "tasks.tables: invalid table name", "tasks.statuses: must not be empty",
         "errors.table"]),
    "tables where values belong": (
        b'[backups]\nretention = 5\npolicy = [1]\n[safety]\nexclude_dirs = {a = 1}\n',
        ["backups.retention: must be a table", "backups.policy: must be a table",
         "safety.exclude_dirs: must be a list"]),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_configuration_mistake_is_reported_in_words_with_exit_2_and_changes_nothing(
        arena: Arena, mistake: str) -> None:
    w = small_world(arena)
    text, words = MISTAKES[mistake]
    arena.config.write_bytes(text)
    before = kit.snapshot(arena.root, arena.tmp)
    FIGURES.fault(f"configuration: {mistake}")
    for args in (["run", "--force"], ["config", "check"], ["run", "--force", "--json"]):
        proc = kit.run_cli(arena, *args)
        assert_no_traceback(proc)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        out = proc.stderr + proc.stdout
        for word in words:
            assert word in out, (word, out)
    assert kit.changes(before, kit.snapshot(arena.root, arena.tmp)) == []
    assert w.rows_lost() == 0


def test_every_mistake_in_one_file_is_listed_at_once(arena: Arena) -> None:
    small_world(arena)
    arena.config.write_bytes(
        b'root = 5\ndry_run = "no"\nenvironments = ["prod", "prod"]\nbogus = 1\n'
        b'[logs]\nmax_age = "forever"\ndirs = ["../x"]\npatterns = ["*"]\n'
        b'[temp]\nmin_age = 5\n[database]\nbatch_size = 0\nnaive_timezone = "mars"\n'
        b'[backups.retention]\nprod = 0\n[tasks]\nstatuses = []\n[errors]\ntable = "x y"\n')
    proc = kit.run_cli(arena, "config", "check")
    assert_no_traceback(proc)
    assert proc.returncode == 2
    problems = [line for line in proc.stderr.splitlines() if ": " in line and "  " in line]
    assert len(problems) >= 10, proc.stderr
    FIGURES.fault("configuration: many mistakes at once")


@pytest.mark.parametrize("where", ["main file is a directory", "missing explicit file",
                                   "broken drop-in", "drop-in not UTF-8"])
def test_a_configuration_file_that_cannot_be_read_is_exit_2(arena: Arena, where: str) -> None:
    small_world(arena)
    env = arena.env()
    if where == "main file is a directory":
        arena.config.unlink()
        arena.config.mkdir()
    elif where == "missing explicit file":
        env["ARCHITECT_CLEANUP_CONFIG"] = str(arena.base / "nope.toml")
    else:
        (arena.base / "config.d").mkdir()
        (arena.base / "config.d" / "50-x.toml").write_bytes(
            b"[logs\n" if where == "broken drop-in" else b'root = "\xff"\n')
    FIGURES.fault(f"configuration: {where}")
    proc = kit.run_cli(arena, "run", "--force", env=env)
    assert_no_traceback(proc)
    assert proc.returncode == 2


@pytest.mark.parametrize("days", ["99999999999", "1e400", "nan"])
def test_absurd_day_counts_on_the_command_line_are_usage_errors(arena: Arena,
                                                                days: str) -> None:
    small_world(arena)
    FIGURES.fault("command line: absurd --days")
    proc = kit.run_cli(arena, "run", "--force", "--days", days)
    assert_no_traceback(proc)
    assert proc.returncode == 2


@pytest.mark.parametrize("value", [1e12, math.inf, math.nan, -1, 0, True, "7"])
def test_absurd_ages_through_the_python_api_are_config_errors(arena: Arena,
                                                              value: object) -> None:
    small_world(arena)
    from architect_cleanup.config import load_config
    cfg = load_config(str(arena.config))
    FIGURES.fault("Python API: absurd age")
    with pytest.raises(ConfigError):
        CleanupWorker(config=cfg, log_age_days=value)  # type: ignore[arg-type]


# --- SIGTERM ----------------------------------------------------------------------------------


def _start(arena: Arena, *args: str, notify: str) -> subprocess.Popen[str]:
    return subprocess.Popen(kit.cli_cmd("run", *args), env=arena.env(NOTIFY_SOCKET=notify),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="backslashreplace", cwd="/")


@needs_root
@pytest.mark.parametrize("target", ["tasks", "logs"])
def test_sigterm_stops_a_run_cleanly_between_batches_and_loses_nothing(
        arena: Arena, target: str) -> None:
    if target == "tasks":
        w = kit.build_world(arena, NOW, backups=4, logs=2, temp=2, caches=1,
                            tasks=kit.scale(10_000, 40_000), keep_rows=500)
        arena.write_config(environments=["prod", "qa"], database={"batch_size": 5})
    else:
        w = kit.build_world(arena, NOW, backups=4, logs=kit.scale(1500, 10_000), temp=2,
                            caches=1, tasks=10, keep_rows=10)
        # One thread: the pool deletes these 1,500 logs before the signal can land in the
        # middle (its stop between directories and items is tests/unit/test_parallel_walk.py's)
        arena.write_config(safety={"workers": 1})
    before_rows = {p: kit.read_rows(p) for p in w.databases}
    counter = kit.watch_deletes(p.parent for p in w.doomed)
    with notify_socket() as rx:
        proc = _start(arena, "--force", "--json", "--only", target, notify=rx.path)
        if target == "tasks":  # the first progress report of the purge (after a second)
            started = rx.wait_for(lambda m: m.startswith("STATUS=tasks: ") and any(
                c in "123456789" for c in m), timeout=120)
        else:  # a few hundred logs deleted
            started = kit.wait_until(lambda: kit.deletes(counter) >= 300, timeout=120)
        assert started, rx.statuses()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    counter.stop()
    FIGURES.fault(f"SIGTERM during {target}")
    FIGURES.measure(f"SIGTERM during {target}: stopped in, s", round(stopped_in, 2))
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err[-3000:])
    assert "Traceback" not in err
    assert stopped_in < 10
    doc = json.loads(out)
    t = doc["targets"][target]
    assert t["status"] == "stopped" and "stopped" in t["message"]  # asked for: not "failed"
    state = kit.state_doc(arena)
    assert state is not None and state["last_run"]["result"] == "stopped"
    assert holder(arena.lock) is None and kit.leftovers(arena) == []
    assert w.missing_keepers() == []
    FIGURES.lost(w.rows_lost())
    assert w.rows_lost() == 0
    for p, r in w.rows().items():
        assert r.integrity == "ok", p
    if target == "tasks":
        # the counts are exact: what the report says went is what went
        gone = sum(before_rows[p].tasks_doomed - kit.read_rows(p).tasks_doomed
                   for p in w.databases)
        assert gone == t["removed"] > 0
        assert sum(kit.read_rows(p).tasks_doomed for p in w.databases) > 0  # stopped early
    else:
        assert 0 < t["removed"] < len(w.doomed)
    # the next run finishes the job
    code, doc = kit.run_json(arena, "--force", "--only", target)
    assert code == 0, doc
