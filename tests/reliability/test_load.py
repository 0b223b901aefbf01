"""Load: a busy dashboard writing during the purge, and two runs started at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from architect_cleanup.lock import holder
from architect_cleanup.state import HISTORY_LIMIT

import kit
from conftest import needs_root
from kit import FIGURES, Arena

NOW = time.time()
HERE = Path(__file__).resolve().parent


def _count(path: Path, sql: str) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


@needs_root
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_busy_dashboard_never_fails_an_insert_during_the_purge(arena: Arena,
                                                                  journal: str) -> None:
    doomed = kit.scale(60_000, 400_000)
    dbs = []
    for env in ("prod", "qa"):
        p = arena.root / "data" / env / "architect.db"
        kit.make_main_db(p, NOW, doomed=doomed, keep=500, errors_doomed=doomed // 4,
                         errors_keep=100, journal=journal)
        dbs.append(p)
    arena.write_config(environments=["prod", "qa"])
    report = tempfile.mktemp(prefix="ac-rel-dash-", dir="/tmp")
    dash = subprocess.Popen([kit.SYSTEM_PY, str(HERE / "dashboard.py"), report, "0.005",
                             *map(str, dbs)], stdout=subprocess.PIPE, text=True)
    assert dash.stdout is not None and dash.stdout.readline().strip() == "ready"
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        code, doc = kit.run_json(arena, "--force", "--only", "tasks,errors", timeout=900)
        took = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        dash.send_signal(signal.SIGTERM)
        dash.wait(60)
    with open(report, encoding="utf-8") as fh:
        rep = json.load(fh)
    os.unlink(report)
    lat = sorted(rep["latencies"])
    p99 = lat[int(len(lat) * 0.99)] * 1000
    FIGURES.fault(f"busy dashboard writing during a {journal}-mode purge")
    FIGURES.measure(f"dashboard inserts during {journal} purge (ok/failed)",
                    f"{sum(rep['ok'])}/{len(rep['failures'])}")
    FIGURES.measure(f"dashboard insert p99/max during {journal} purge, ms",
                    f"{p99:.1f}/{lat[-1] * 1000:.1f}")
    FIGURES.measure(f"{journal} purge of {2 * doomed:,} tasks under load, s", round(took, 1))
    assert code == 0, doc
    assert rep["failures"] == []
    assert doc["stats"]["tasks_deleted"] == 2 * doomed
    lost = 0
    for n, p in enumerate(dbs):
        rows = kit.read_rows(p)
        assert rows.integrity == "ok"
        assert rows.tasks_doomed == 0
        lost += (500 - rows.tasks_keep) + (100 - rows.errors_keep)
        # every row the dashboard committed is there
        for table, col in (("task_queue", "task_data"), ("errors", "message")):
            lost += rep["ok"][n] - _count(p, f"SELECT count(*) FROM {table} WHERE {col}='dash'")
        lost += rep["ok"][n] - _count(p, "SELECT count(*) FROM activity_log "
                                         "WHERE action = 'dash'")
    FIGURES.lost(lost)
    assert lost == 0


def _gated(arena: Arena, gate: Path, runs_log: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([kit.VENV_PY, str(HERE / "gate.py"), str(gate), *args],
                            env=arena.env(AC_RUNS_LOG=str(runs_log)), cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@needs_root
def test_two_runs_started_at_once_one_wins_and_the_other_exits_75_at_once(
        arena: Arena) -> None:
    """Two CLIs released within a millisecond: one runs, the other exits 75 naming it. On a
    busy machine one may be scheduled so late that the first has finished: then both run,
    one after the other — never at the same time (an observer in gate.py records each run's
    monotonic start and end inside the lock)."""
    kit.build_world(arena, NOW, backups=30, logs=300, temp=300, caches=5, tasks=20_000,
                    errors=500, prompts=500)
    arena.write_config(environments=["prod", "qa"], database={"batch_size": 20})
    iterations = kit.scale(6, 60)
    raced = sequential = 0
    for i in range(iterations):
        gate = arena.base / f"gate{i}"
        runs_log = arena.base / f"runs{i}.log"
        mode = ["--force"] if i % 5 == 4 else ["--dry-run"]  # real runs leave less to do
        procs = [_gated(arena, gate, runs_log, "run", "--json", *mode) for _ in range(2)]
        time.sleep(0.4)  # both imported and waiting
        gate.touch()
        outs = [p.communicate(timeout=300) for p in procs]
        codes = [p.returncode for p in procs]
        spans = sorted(tuple(int(x) for x in line.split()[1:])
                       for line in runs_log.read_text().splitlines())
        assert holder(arena.lock) is None
        if codes == [0, 0]:  # one after the other, never overlapping
            assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
            sequential += 1
        state = kit.state_doc(arena)
        assert state is not None
        assert len(state["history"]) == min(i + 1 + sequential, HISTORY_LIMIT)
        if codes == [0, 0]:
            continue
        assert sorted(codes) == [0, 75], (codes, [e[-2000:] for _, e in outs])
        raced += 1
        loser = codes.index(75)
        winner = 1 - loser
        lost_doc = json.loads(outs[loser][0])
        assert lost_doc["success"] is False and lost_doc["locked_by"] == procs[winner].pid
        assert "another cleanup is running" in outs[loser][1]
        assert json.loads(outs[winner][0])["success"] is True
        assert len(spans) == 1
    FIGURES.race("two runs started at once", iterations, 2 * iterations)
    FIGURES.measure("two runs at once: one exited 75 / ran one after the other",
                    f"{raced}/{sequential}")
    FIGURES.attack("two runs started at once", iterations)
    assert raced >= iterations * 0.8


@needs_root
def test_a_run_started_while_another_holds_the_lock_exits_75_within_a_second(
        arena: Arena) -> None:
    kit.build_world(arena, NOW, backups=10, logs=10, temp=10, caches=1, tasks=20_000)
    arena.write_config(environments=["prod", "qa"], database={"batch_size": 5})
    first = subprocess.Popen(kit.cli_cmd("run", "--force", "--only", "tasks"),
                             env=arena.env(), cwd="/", stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert kit.wait_until(lambda: holder(arena.lock) == first.pid, 30)
        t0 = time.monotonic()
        second = kit.run_cli(arena, "run", "--force")
        took = time.monotonic() - t0
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert second.returncode == 75
    assert f"PID {first.pid}" in second.stderr
    assert took < 3
    FIGURES.attack("a second run while one runs")
