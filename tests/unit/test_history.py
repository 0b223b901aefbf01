"""The history database: schema and migrations, streamed item writes, faults, pruning."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from architect_cleanup import history as h
from architect_cleanup import itemwrite, reports
from architect_cleanup.stats import CleanupStats, TargetResult

from conftest import NOW


def _open(tmp_path: Path) -> h.History:
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.warning is None
    assert opened.history is not None
    return opened.history


def _item(n: int, target: str = "logs", env: str | None = None) -> h.Item:
    return h.Item(target, f"/srv/architect/logs/app-{n}.log", 100 + n, NOW.timestamp() - 86400,
                  "31 days old > 30d", env=env)


def _run(hist: h.History, at: datetime, *, dry: bool = False, items: int = 0,
         result: h.RunResult = "success") -> int:
    w = hist.begin_run(started_at=at, dry_run=dry, source="timer")
    w.items(_item(i) for i in range(items))
    w.target(h.TargetRecord("logs", "ok", items, 100 * items, 3))
    w.samples([h.Sample("fs_free", "/srv", 5e9)])
    w.finish(finished_at=at + timedelta(seconds=5), result=result, duration_s=5.0,
             items=items, bytes=100 * items)
    return w.run_id


def _count(path: str, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# -- schema --------------------------------------------------------------------------------

def test_a_new_database_is_in_wal_mode_at_the_current_schema_version(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    assert hist.path == str(tmp_path / "history.sqlite3")
    assert hist.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # a bounded page cache: the run's memory stays flat whatever it prunes
    assert hist.conn.execute("PRAGMA cache_size").fetchone()[0] == -itemwrite.CACHE_KIB
    child = itemwrite.connect(hist.path)
    assert child.execute("PRAGMA cache_size").fetchone()[0] == -itemwrite.CACHE_KIB
    child.close()
    assert hist.conn.execute("PRAGMA user_version").fetchone()[0] == h.SCHEMA_VERSION >= 1
    tables = {r[0] for r in hist.conn.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "target_results", "target_parts", "backups", "samples", "items"} <= tables
    hist.close()


def test_migrations_run_in_order_one_transaction_each_and_set_the_version(
        tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    steps = [["CREATE TABLE a (x)"], ["ALTER TABLE a ADD COLUMN y", "CREATE TABLE b (z)"]]
    assert h.migrate(conn, steps) == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert [r[1] for r in conn.execute("PRAGMA table_info(a)")] == ["x", "y"]
    assert h.migrate(conn, steps) == 2  # nothing left to do


def test_a_failing_migration_step_is_rolled_back_and_the_version_stays(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    steps = [["CREATE TABLE a (x)"], ["CREATE TABLE b (z)", "CREATE TABLE a (again)"]]
    with pytest.raises(sqlite3.OperationalError):
        h.migrate(conn, steps)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert names == {"a"}


def test_a_database_from_a_newer_version_is_left_alone_and_not_written(
        tmp_path: Path) -> None:
    _open(tmp_path).close()
    path = tmp_path / "history.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {h.SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.history is None
    assert opened.warning is not None and "newer" in opened.warning
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if ".corrupt-" in p]


# -- writing -------------------------------------------------------------------------------

def test_items_are_written_in_batches_as_they_are_handed_over(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer", batch=100)
    db = str(tmp_path / "history.sqlite3")
    w.items(_item(i) for i in range(250))
    # another connection already sees two whole batches: the rest waits in one buffer
    assert _count(db, "SELECT COUNT(*) FROM items") == 200
    assert _count(db, "SELECT items_recorded FROM runs") == 200
    w.finish(finished_at=NOW, result="success", duration_s=1.0, items=250, bytes=25000)
    assert _count(db, "SELECT COUNT(*) FROM items") == 250
    row = hist.conn.execute("SELECT result, items, bytes, items_recorded FROM runs").fetchone()
    assert row == ("success", 250, 25000, 250)
    first = hist.conn.execute(
        "SELECT k.target, k.env, d.text || i.name, i.size, i.mtime, k.action, x.text "
        "FROM items i JOIN texts d ON d.id = i.dir JOIN texts x ON x.id = i.reason "
        "JOIN kinds k ON k.id = i.kind ORDER BY i.id LIMIT 1").fetchone()
    assert first == ("logs", "", "/srv/architect/logs/app-0.log", 100,
                     NOW.timestamp() - 86400, "removed", "31 days old > 30d")
    # the directory and the reason are stored once
    assert sorted(t for (t,) in hist.conn.execute("SELECT text FROM texts")) == [
        "/srv/architect/logs/", "31 days old > 30d"]
    hist.close()


def test_every_kind_of_path_and_reason_comes_back_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(itemwrite, "TEXT_CACHE", 8)  # forgets ids often: misses must still be right
    paths = ["tasks#12", "/x", "relative/y", "/srv/a/", "/srv/a/b c/ü.log", "//double//z"]
    paths += [f"/srv/d{i % 37}/f{i}" for i in range(300)]
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer", batch=7)
    for i, p in enumerate(paths):
        w.item(h.Item("logs", p, i, None, f"{i % 13} days old > 0d",
                      env=f"e{i % 3}" if i % 4 else None,
                      action="archived" if i % 5 else "removed"))
    w.finish(finished_at=NOW, result="success", duration_s=1, items=len(paths), bytes=0)
    assert len(w._items._texts) <= 8 + 2 * 7  # bounded: the cache plus one batch's new texts
    back = list(reports.items_since(hist.conn, NOW))
    assert [x.path for x in back] == paths
    assert [x.reason for x in back] == [f"{i % 13} days old > 0d" for i in range(len(paths))]
    assert [x.env for x in back] == [f"e{i % 3}" if i % 4 else None for i in range(len(paths))]
    assert [x.action for x in back] == ["archived" if i % 5 else "removed"
                                        for i in range(len(paths))]
    # 6 directories of the odd paths and 37 /srv/dN/, 13 reasons
    assert hist.conn.execute("SELECT COUNT(*) FROM texts").fetchone()[0] == 6 + 37 + 13


def _dump(hist: h.History) -> list[tuple[object, ...]]:
    return hist.conn.execute(
        "SELECT i.id, i.run_id, k.target, k.env, k.action, d.text, i.name, i.size, i.mtime, "
        "x.text FROM items i JOIN texts d ON d.id = i.dir JOIN texts x ON x.id = i.reason "
        "JOIN kinds k ON k.id = i.kind ORDER BY i.id").fetchall()


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_a_directorys_items_at_once_are_stored_as_one_by_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """RunWriter.dir_items (the file targets' way) and RunWriter.item give the same rows, in
    the same order, mixed with items of other kinds, whatever the batch and the cache."""
    monkeypatch.setattr(itemwrite, "TEXT_CACHE", 4)
    folders = ["/srv/a/", "/srv/b c/", "", "/srv/a/"]
    plan = [(f, [(f"n{i}-{j}", i * 10 + j, NOW.timestamp() - j, f"{j % 3} days old > 0d")
                 for j in range(i + 1)]) for i, f in enumerate(folders)]
    dumps = []
    for way in ("item", "dir_items"):
        hist = _open(tmp_path / way)
        w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=batch)
        for n, (folder, rows) in enumerate(plan):
            w.item(h.Item("backups", f"/b/x{n}", n, None, "kept 3", env="prod"))
            if way == "item":
                for name, size, mtime, why in rows:
                    w.item(h.Item("logs", folder + name, size, mtime, why))
            else:
                w.dir_items("logs", folder, rows)
        w.dir_items("logs", "/srv/none/", [])  # nothing to record: nothing written
        w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
        assert w.items_recorded == len(plan) + sum(len(r) for _f, r in plan)
        dumps.append(_dump(hist))
        hist.close()
    assert dumps[0] == dumps[1]
    assert [r[5] + r[6] for r in dumps[1] if r[2] == "logs"] == [
        f + name for f, rows in plan for name, *_ in rows]


def test_a_file_name_that_is_not_utf8_is_recorded_escaped_and_loses_nothing(
        tmp_path: Path) -> None:
    """os.fsdecode gives an undecodable byte as a lone surrogate, which SQLite's text cannot
    hold: the item is stored with it as \\xNN (as the journal shows it), and so are the
    other items of its batch; the run's record is whole."""
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer", batch=4)
    bad_dir = os.fsdecode(b"/srv/d\xe9j\xe0/")
    w.dir_items("logs", "/srv/ok/", [("a.log", 1, 1.0, "31 days old > 30d")])
    w.dir_items("logs", bad_dir, [(os.fsdecode(b"caf\xe9.log"), 2, 2.0, "31 days old > 30d"),
                                  ("b.log", 3, 3.0, "31 days old > 30d")])
    w.item(h.Item("temp", os.fsdecode(b"/srv/t/x\xff.tmp"), 4, 4.0, "2 hours old > 1h"))
    w.item(h.Item("temp", "/srv/t/\udcff-direct.tmp", 5, 5.0, "odd \ud800 reason"))
    w.dir_items("logs", "/srv/ok/", [("c.log", 6, 6.0, "31 days old > 30d")])
    w.finish(finished_at=NOW, result="success", duration_s=1, items=6, bytes=0)
    assert w.problem is None
    back = list(reports.items_since(hist.conn, NOW - timedelta(days=1)))
    assert [x.path for x in back] == [
        "/srv/ok/a.log", "/srv/d\\xe9j\\xe0/caf\\xe9.log", "/srv/d\\xe9j\\xe0/b.log",
        "/srv/t/x\\xff.tmp", "/srv/t/\\xff-direct.tmp", "/srv/ok/c.log"]
    assert back[4].reason == "odd \\ud800 reason"
    assert [x.size for x in back] == [1, 2, 3, 4, 5, 6]
    run = hist.conn.execute("SELECT result, items_recorded FROM runs").fetchone()
    assert run == ("success", 6)
    assert itemwrite.storable("plain ü\n") == "plain ü\n"
    hist.close()


# -- items written by a process of their own (RunWriter offload, itemwrite.Sink) ---------------

#: the run hands its items to the child from its OFFLOAD_AFTER-th batch on: the tests here
#: start it at the first (test_the_child_starts_only_for_a_run_of_many_batches: the real one)
REAL_OFFLOAD_AFTER = h.OFFLOAD_AFTER


@pytest.fixture(autouse=True)
def _offload_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h, "OFFLOAD_AFTER", 1)


def test_the_child_starts_only_for_a_run_of_many_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of fewer than OFFLOAD_AFTER batches writes its items itself (the process would
    cost more than it saves); from that batch on the child writes them."""
    monkeypatch.setattr(h, "OFFLOAD_AFTER", REAL_OFFLOAD_AFTER)
    assert REAL_OFFLOAD_AFTER > 1
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=5, offload=True)
    rows: list[itemwrite.ItemRow] = [(f"n{i}.log", i, NOW.timestamp(), "31 days old > 30d")
                                     for i in range(5)]
    for i in range(REAL_OFFLOAD_AFTER - 1):
        w.dir_items("logs", f"/srv/d{i}/", rows)
    assert w._sink is None
    assert hist.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == (
        5 * (REAL_OFFLOAD_AFTER - 1))  # written here, batch by batch
    w.dir_items("logs", "/srv/last/", rows)
    assert w._sink is not None
    w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    assert w.problem is None
    assert hist.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == (
        5 * REAL_OFFLOAD_AFTER)
    hist.close()

def _plan(n_dirs: int = 40) -> list[tuple[str, list[itemwrite.ItemRow]]]:
    """Directories and their items, some names and a directory not UTF-8."""
    out = []
    for i in range(n_dirs):
        folder = os.fsdecode(b"/srv/d\xe9/") if i == 7 else f"/srv/d{i % 9}/"
        rows = [(os.fsdecode(b"x\xff.log") if (i, j) == (3, 1) else f"n{i}-{j}.log",
                 i * 100 + j, NOW.timestamp() - j, f"{j % 4 + 31} days old > 30d")
                for j in range(i % 11 + 1)]
        out.append((folder, rows))
    return out


def _write_plan(hist: h.History, plan: list[tuple[str, list[itemwrite.ItemRow]]], *,
                offload: bool, batch: int = 5) -> h.RunWriter:
    w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=batch,
                       offload=offload)
    for n, (folder, rows) in enumerate(plan):
        w.dir_items("logs", folder, rows)
        if n % 5 == 0:
            w.item(h.Item("backups", f"/b/x{n}", n, None, "kept 3", env="prod",
                          action="archived"))
    w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    return w


def test_items_written_by_a_process_of_their_own_are_those_written_here(
        tmp_path: Path) -> None:
    """The same items, ids, texts and kinds, whether the run writes its batches itself or
    hands them to the child process (names that are not UTF-8 included)."""
    plan = _plan()
    dumps = []
    for offload in (False, True):
        hist = _open(tmp_path / str(offload))
        w = _write_plan(hist, plan, offload=offload)
        assert w.problem is None and w._sink is None  # finished: the child has ended
        dumps.append(_dump(hist))
        assert hist.conn.execute("SELECT result, items_recorded FROM runs").fetchone() == (
            "success", w.items_recorded)
        hist.close()
    assert dumps[0] == dumps[1]
    assert len(dumps[1]) == sum(len(r) for _f, r in plan) + 8
    assert any("\\xff" in r[6] for r in dumps[1])


def test_a_run_of_fewer_items_than_a_batch_starts_no_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(itemwrite.Sink, "start", classmethod(
        lambda cls, *a: started.append(a) or pytest.fail("no process for one batch")))
    hist = _open(tmp_path)
    w = _write_plan(hist, _plan(3), offload=True, batch=1000)
    assert w.problem is None and not started
    assert len(_dump(hist)) == 1 + 2 + 3 + 1
    hist.close()


def test_where_no_process_can_be_started_the_run_writes_its_items_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(itemwrite.sys, "executable", str(tmp_path / "no-such-python"))
    plan = _plan()
    hist = _open(tmp_path)
    w = _write_plan(hist, plan, offload=True)
    assert w.problem is None
    assert len(_dump(hist)) == sum(len(r) for _f, r in plan) + 8
    hist.close()


def test_a_failing_child_is_one_warning_when_the_run_ends_and_the_run_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The child cannot write (here: the items table is gone): the run is not stopped; its
    writer reports the child's first problem once, at the end."""
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=5, offload=True)
    hist.conn.execute("ALTER TABLE items RENAME TO items_gone")
    with caplog.at_level(logging.WARNING, logger="architect_cleanup.history"):
        for folder, rows in _plan():
            w.dir_items("logs", folder, rows)  # never raises
        assert w._sink is not None
        w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    assert w.problem is not None and "no such table: items" in w.problem
    assert len([r for r in caplog.records if "cannot record items" in r.getMessage()]) == 1
    hist.close()


def test_a_child_killed_during_the_run_is_a_problem_not_a_failed_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=5, offload=True)
    plan = _plan()
    w.dir_items("logs", *plan[10])  # 11 items: the child starts
    assert w._sink is not None
    proc = w._sink.proc
    os.kill(proc.pid, 9)  # the process this test started, by its PID
    proc.wait(timeout=30)
    with caplog.at_level(logging.WARNING, logger="architect_cleanup.history"):
        for folder, rows in plan:
            w.dir_items("logs", folder, rows)  # the first send finds it gone
        w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    assert w.problem is not None and "killed by signal 9" in w.problem
    assert len([r for r in caplog.records if "cannot record items" in r.getMessage()]) == 1
    hist.close()


def test_the_child_ignores_sigterm_and_writes_what_a_stopped_run_handed_over(
        tmp_path: Path) -> None:
    """systemd stops a run with SIGTERM to every process of the unit: the child writes on
    until the run ends its input, so the items up to the stop are recorded. A run that ends
    without finishing (RunWriter.close, from RunHistory.close) waits for them too."""
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=5, offload=True)
    plan = _plan()
    w.dir_items("logs", *plan[10])
    assert w._sink is not None
    proc = w._sink.proc
    os.kill(proc.pid, 15)
    for folder, rows in plan[:20]:
        w.dir_items("logs", folder, rows)
    w.close()  # no finish: an interrupted run
    assert proc.returncode == 0 and w.problem is None
    handed = 11 + sum(len(r) for _f, r in plan[:20])
    written = hist.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert handed - w.batch < written <= handed  # all but the batch still buffered
    hist.close()


def test_the_child_yields_the_cpu_to_the_run_it_writes_for(tmp_path: Path) -> None:
    """The child runs itemwrite.NICER nicer than the run: on a busy machine the walk goes
    first (under the unit's Nice=19 both are equal: 19 is the most there is)."""
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=True, source="timer", batch=5, offload=True)
    w.dir_items("logs", *_plan()[10])
    assert w._sink is not None
    pid = w._sink.proc.pid
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    want = min(19, mine + itemwrite.NICER)
    deadline = time.monotonic() + 20
    while os.getpriority(os.PRIO_PROCESS, pid) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    assert itemwrite.NICER > 0 and os.getpriority(os.PRIO_PROCESS, pid) == want
    asked: list[tuple[int, int, int]] = []
    real = os.setpriority

    def setpriority(which: int, who: int, prio: int) -> None:
        asked.append((which, who, prio))
        real(which, who, prio)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(itemwrite.os, "setpriority", setpriority)
        w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    # once the run waits for it, it runs at the run's priority (root may give it back)
    assert asked == [(os.PRIO_PROCESS, pid, mine)]
    assert w.problem is None
    hist.close()


def test_the_child_process_imports_nothing_but_the_standard_library() -> None:
    """It runs as a script with -I -S (no site-packages, no package __init__): it must
    start fast and cannot depend on the package."""
    import ast

    tree = ast.parse(Path(itemwrite.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert not names & {"architect_cleanup"}
    assert names <= set(__import__("sys").stdlib_module_names) | {"__future__"}


def test_a_runs_items_are_read_by_their_id_range_without_an_index(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    plan = " ".join(str(r[-1]) for r in hist.conn.execute(
        "EXPLAIN QUERY PLAN SELECT i.name FROM runs r JOIN items i ON i.id >= r.first_item "
        "AND i.id < r.first_item + r.items_recorded WHERE r.started_at >= 0"))
    assert "SEARCH i USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan


def test_a_run_records_targets_parts_backups_and_samples(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=True, source="cli")
    w.target(h.TargetRecord("backups", "ok", 2, 2048, 10, checked=12),
             [h.PartRecord("backups", "prod", 2, 2048, 7), h.PartRecord("backups", "dev", 0, 0, 3)])
    w.backups([h.BackupRecord("prod", 7, 7 << 20, True), h.BackupRecord("dev", 3, 3 << 20)])
    w.samples([h.Sample("bytes", "logs", 1234), h.Sample("rows", "/srv/a.db:tasks", 99)])
    w.finish(finished_at=NOW, result="success", duration_s=0.5, items=2, bytes=2048)
    c = hist.conn
    assert c.execute("SELECT part, kept FROM target_parts ORDER BY part").fetchall() == [
        ("dev", 3), ("prod", 7)]
    assert c.execute("SELECT env, count, newest_ok FROM backups ORDER BY env").fetchall() == [
        ("dev", 3, None), ("prod", 7, 1)]
    assert c.execute("SELECT kind, name, value FROM samples ORDER BY kind").fetchall() == [
        ("bytes", "logs", 1234.0), ("rows", "/srv/a.db:tasks", 99.0)]
    assert c.execute("SELECT dry_run, source FROM runs").fetchone() == (1, "cli")
    hist.close()


def test_an_unknown_sample_kind_is_refused(tmp_path: Path) -> None:
    w = _open(tmp_path).begin_run(started_at=NOW, dry_run=True, source="cli")
    with pytest.raises(ValueError, match="unknown sample kind"):
        w.samples([h.Sample("weather", "x", 1)])  # type: ignore[arg-type]


def test_the_stats_of_a_run_are_recorded_with_their_parts(tmp_path: Path) -> None:
    stats = CleanupStats(dry_run=False, duration=2.5)
    backups = TargetResult("backups", removed=3, bytes=300, kept=5)
    backups.part("prod").update(removed=3, bytes=300, kept=5)
    tasks = TargetResult("tasks")
    tasks.fail("no such table: tasks")
    stats.add(backups)
    stats.add(tasks)
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer")
    w.record_stats(stats)
    w.finish_stats(stats, finished_at=NOW)
    c = hist.conn
    assert c.execute("SELECT result, items, bytes, duration_s FROM runs").fetchone() == (
        "failed", 3, 300, 2.5)
    assert c.execute("SELECT target, status, message FROM target_results ORDER BY target"
                     ).fetchall() == [("backups", "ok", ""), ("tasks", "failed",
                                                              "no such table: tasks")]
    assert c.execute("SELECT target, part, removed FROM target_parts").fetchall() == [
        ("backups", "prod", 3)]


def test_a_naive_time_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="naive"):
        _open(tmp_path).begin_run(started_at=datetime(2026, 1, 1), dry_run=True, source="x")


def test_filesystem_samples_give_free_and_total_bytes_and_skip_missing_paths(
        tmp_path: Path) -> None:
    samples = h.filesystem_samples([str(tmp_path), str(tmp_path / "missing")])
    assert [(s.kind, s.name) for s in samples] == [("fs_free", str(tmp_path)),
                                                   ("fs_total", str(tmp_path))]
    st = os.statvfs(tmp_path)
    assert samples[1].value == st.f_blocks * st.f_frsize
    assert 0 < samples[0].value <= samples[1].value


# -- faults never stop a cleanup -----------------------------------------------------------

def test_a_full_database_disables_the_writer_with_one_warning_and_the_run_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer", batch=50)
    pages = hist.conn.execute("PRAGMA page_count").fetchone()[0]
    hist.conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLITE_FULL soon
    with caplog.at_level(logging.WARNING, logger="architect_cleanup.history"):
        for i in range(5000):
            w.item(_item(i))  # must not raise
        w.finish(finished_at=NOW, result="success", duration_s=1, items=5000, bytes=1)
    assert w.problem is not None and "full" in w.problem
    assert len([r for r in caplog.records if "cannot record" in r.getMessage()]) == 1
    hist.close()


def test_a_read_only_database_disables_the_writer_instead_of_raising(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer")
    hist.conn.execute("PRAGMA query_only = ON")
    w.target(h.TargetRecord("logs", "ok"))
    w.samples([h.Sample("bytes", "logs", 1)])
    w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    assert w.problem is not None and "readonly" in w.problem


def test_a_file_that_is_not_a_database_is_set_aside_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not SQLite\n" * 400)
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.history is not None
    assert opened.warning is not None and "corrupt" in opened.warning
    aside = tmp_path / "history.sqlite3.corrupt-20261126T120000Z"
    assert aside.read_bytes() == b"this is not SQLite\n" * 400
    assert str(aside) in opened.warning
    _run(opened.history, NOW, items=3)  # the new one works
    assert opened.history.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 3


def test_a_database_with_damaged_pages_is_set_aside_when_the_run_closes_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the whole file's quick_check runs beside the run (a thread of its own): damage where
    # the opening does not read is found by it, and the run that finds it sets the file aside
    # when it closes the history; the next run starts a new one
    hist = _open(tmp_path)
    _run(hist, NOW, items=3000)
    assert hist.close() is None  # a sound file: no verdict against it
    path = tmp_path / "history.sqlite3"
    with open(path, "r+b") as fh:
        fh.seek(3 * 4096)
        fh.write(os.urandom(3 * 4096))
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.warning is None and opened.history is not None
    warning = opened.history.close()
    aside = tmp_path / "history.sqlite3.corrupt-20261126T120000Z"
    assert warning is not None and "corrupt" in warning and str(aside) in warning
    assert warning in caplog.text
    assert aside.exists() and not path.exists()
    again = h.open_history(str(tmp_path), now=NOW)
    assert again.warning is None and again.history is not None
    assert again.history.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert again.history.close() is None


def test_a_database_whose_schema_pages_are_damaged_is_set_aside_at_once(
        tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW, items=3000)
    hist.close()
    path = tmp_path / "history.sqlite3"
    with open(path, "r+b") as fh:  # page 1 past its 100-byte header: sqlite_master
        fh.seek(100)
        fh.write(b"\xff" * 3000)
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.warning is not None and "corrupt" in opened.warning
    assert opened.history is not None
    assert opened.history.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert (tmp_path / "history.sqlite3.corrupt-20261126T120000Z").exists()


def test_the_check_of_the_whole_file_runs_beside_the_opening(tmp_path: Path) -> None:
    # a run does not wait for the check (O(file)) to begin: it runs on a thread of its own,
    # and close() takes its verdict
    hist = _open(tmp_path)
    _run(hist, NOW, items=10)
    hist.close()
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.history is not None
    check = opened.history._check
    assert check is not None and check.thread.name == "history-check"
    assert check.thread is not threading.current_thread()
    assert opened.history.close() is None and not check.thread.is_alive()
    new = tmp_path / "new"
    new.mkdir()
    fresh = h.open_history(str(new), now=NOW)
    assert fresh.history is not None and fresh.history._check is None  # nothing to check yet
    fresh.history.close()


def _checks(tmp_path: Path, at: datetime) -> bool:
    """Open the history at *at*: did the whole file's check run (it is closed again)?"""
    opened = h.open_history(str(tmp_path), now=at)
    assert opened.history is not None and opened.warning is None
    ran = opened.history._check is not None
    assert opened.history.close() is None
    return ran


def test_the_whole_file_is_checked_once_a_day_not_at_every_hourly_run(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW, items=10)
    hist.close()  # a new file: nothing to check
    assert _checks(tmp_path, NOW)  # no check on record: due
    marker = tmp_path / ("history.sqlite3" + h.CHECKED_SUFFIX)
    ino, at = marker.read_text().split()
    assert int(ino) == (tmp_path / "history.sqlite3").stat().st_ino
    assert float(at) == NOW.timestamp()
    for hours in (1, 12, 23.9):
        assert not _checks(tmp_path, NOW + timedelta(hours=hours))
    assert _checks(tmp_path, NOW + timedelta(hours=24))
    assert not _checks(tmp_path, NOW + timedelta(hours=25))
    assert _checks(tmp_path, NOW + timedelta(hours=20))  # the clock went back: check again


def test_a_check_on_record_for_another_file_does_not_count(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW, items=10)
    hist.close()
    assert _checks(tmp_path, NOW)
    path = tmp_path / "history.sqlite3"
    copy = tmp_path / "copy"
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # the same bytes under another inode: not the file checked
    assert _checks(tmp_path, NOW + timedelta(hours=1))
    (tmp_path / ("history.sqlite3" + h.CHECKED_SUFFIX)).write_text("garbage")
    assert _checks(tmp_path, NOW + timedelta(hours=2))


def test_damage_inside_the_day_is_found_by_the_next_days_check(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW, items=3000)
    hist.close()
    assert _checks(tmp_path, NOW)
    path = tmp_path / "history.sqlite3"
    with open(path, "r+b") as fh:  # items pages, which an opening does not read
        fh.seek(3 * 4096)
        fh.write(os.urandom(3 * 4096))
    assert not _checks(tmp_path, NOW + timedelta(hours=1))
    opened = h.open_history(str(tmp_path), now=NOW + timedelta(hours=24))
    assert opened.history is not None
    warning = opened.history.close()
    assert warning is not None and "corrupt" in warning
    assert not path.exists() and (tmp_path / "history.sqlite3.corrupt-20261127T120000Z").exists()
    assert _checks(tmp_path, NOW + timedelta(hours=25)) is False  # a new, empty file


def test_a_database_without_its_tables_is_set_aside(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    hist.conn.execute("DROP TABLE items")
    hist.close()
    opened = h.open_history(str(tmp_path), now=NOW)
    assert opened.warning is not None and "items" in opened.warning
    assert opened.history is not None


def test_a_state_directory_that_cannot_be_created_means_no_history_not_an_error(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    opened = h.open_history(str(tmp_path / "file" / "state"), now=NOW)
    assert opened.history is None
    assert opened.warning is not None and "not recorded" in opened.warning


def test_a_run_a_crash_left_running_is_marked_interrupted_at_the_next_open(
        tmp_path: Path) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer", batch=10)
    w.items(_item(i) for i in range(25))
    hist.conn.close()  # killed: no finish
    hist = _open(tmp_path)
    row = hist.conn.execute("SELECT result, items_recorded FROM runs").fetchone()
    assert row == ("interrupted", 20)


def test_a_reader_sees_the_runs_while_the_writer_holds_the_database(tmp_path: Path) -> None:
    assert h.open_reader(str(tmp_path)) is None
    hist = _open(tmp_path)
    _run(hist, NOW, items=5)
    w = hist.begin_run(started_at=NOW + timedelta(hours=1), dry_run=False, source="timer")
    w.items(_item(i) for i in range(3))
    reader = h.open_reader(str(tmp_path))
    assert reader is not None
    assert reader.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 5
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM runs")


# -- pruning -------------------------------------------------------------------------------

def test_pruning_drops_items_after_90_days_and_runs_after_2_years(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    ancient = _run(hist, NOW - timedelta(days=800), items=4)
    old = _run(hist, NOW - timedelta(days=91), items=5)
    recent = _run(hist, NOW - timedelta(days=89), items=6)
    result = hist.prune(now=NOW)
    assert result == h.PruneResult(items=9, runs=1)
    c = hist.conn
    assert [r[0] for r in c.execute("SELECT id FROM runs ORDER BY id")] == [old, recent]
    assert c.execute("SELECT run_id, COUNT(*) FROM items GROUP BY run_id").fetchall() == [
        (recent, 6)]
    assert [x.run_id for x in reports.items_since(c, NOW - timedelta(days=900))] == [recent] * 6
    assert c.execute("SELECT items_recorded FROM runs WHERE id = ?", (old,)).fetchone() == (0,)
    for table in ("target_results", "samples"):
        assert c.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?",
                         (ancient,)).fetchone() == (0,)
    assert hist.prune(now=NOW) == h.PruneResult(0, 0)


def test_pruning_keeps_what_the_configured_retention_says(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW - timedelta(days=10), items=5)
    _run(hist, NOW - timedelta(days=40), items=5)
    assert hist.prune(now=NOW, items_days=7, runs_days=30) == h.PruneResult(10, 1)
    assert hist.conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_pruning_keeps_the_items_of_only_the_newest_dry_runs(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    dry = [_run(hist, NOW - timedelta(hours=10 - i), dry=True, items=2) for i in range(5)]
    real = _run(hist, NOW - timedelta(hours=20), items=2)
    hist.prune(now=NOW, dry_item_runs=3)
    kept = [r[0] for r in hist.conn.execute("SELECT DISTINCT run_id FROM items ORDER BY 1")]
    assert kept == [*dry[2:], real]


def test_pruning_works_in_batches(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW - timedelta(days=100), items=2500)
    assert hist.prune(now=NOW, batch=1000).items == 2500
    assert hist.conn.execute("SELECT COUNT(*) FROM items").fetchone() == (0,)


# -- importing a past run ------------------------------------------------------------------

def test_a_past_run_is_imported_once_and_marked_imported(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    stats = {"backups_deleted": 84, "logs_deleted": 2, "tasks_deleted": 0,
             "errors_deleted": 0, "prompts_deleted": 0, "temp_files_deleted": 1,
             "space_freed_mb": 271.93}
    start = datetime.fromisoformat("2026-02-07T19:07:36+00:00")
    run_id = hist.import_run(started_at=start, finished_at=None, dry_run=False,
                             result="success", stats=stats, message="Cleanup completed")
    assert run_id is not None
    row = hist.conn.execute("SELECT imported, source, items, bytes, result FROM runs").fetchone()
    assert row == (1, "imported", 87, int(271.93 * 1048576), "success")
    assert hist.conn.execute("SELECT removed FROM target_results WHERE target = 'backups'"
                             ).fetchone() == (84,)
    assert hist.import_run(started_at=start, finished_at=None, dry_run=False,
                           result="success", stats=stats) is None
    assert hist.conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_pruning_gives_the_space_back_to_the_file_system(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW - timedelta(days=100), items=20000)
    hist.checkpoint()
    path = tmp_path / "history.sqlite3"
    full = path.stat().st_size
    hist.prune(now=NOW)
    assert hist.conn.execute("PRAGMA freelist_count").fetchone() == (0,)
    hist.close()
    assert path.stat().st_size < full / 10


def test_pruning_a_small_part_leaves_its_pages_to_the_next_runs(tmp_path: Path) -> None:
    """Less than a third of the file free: the pages stay in the file, and the next run's
    items take them instead of growing it."""
    hist = _open(tmp_path)
    _run(hist, NOW - timedelta(days=100), items=3000)
    for day in (3, 2, 1):
        _run(hist, NOW - timedelta(days=day), items=3000)
    hist.checkpoint()
    path = tmp_path / "history.sqlite3"
    full = path.stat().st_size
    hist.prune(now=NOW)
    hist.checkpoint()
    free = hist.conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert 0 < free * h.VACUUM_SHARE <= hist.conn.execute("PRAGMA page_count").fetchone()[0]
    assert path.stat().st_size == full  # not given back
    _run(hist, NOW, items=3000)
    hist.checkpoint()
    assert hist.conn.execute("PRAGMA freelist_count").fetchone()[0] < free
    assert path.stat().st_size < full * 1.05  # taken again, hardly grown
    hist.close()


def test_texts_no_item_uses_are_swept_with_the_runs(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    w = hist.begin_run(started_at=NOW - timedelta(days=800), dry_run=False, source="timer")
    w.item(h.Item("logs", "/gone/dir/a.log", 1, None, "a reason no one uses any more"))
    w.finish(finished_at=NOW, result="success", duration_s=1, items=1, bytes=1)
    _run(hist, NOW, items=2)
    hist.prune(now=NOW)
    texts = {t for (t,) in hist.conn.execute("SELECT text FROM texts")}
    assert texts == {"/srv/architect/logs/", "31 days old > 30d"}


def test_a_run_that_cannot_be_begun_gets_a_disabled_writer_not_an_error(
        tmp_path: Path) -> None:
    hist = _open(tmp_path)
    hist.conn.execute("PRAGMA query_only = ON")
    w = hist.begin_run(started_at=NOW, dry_run=False, source="timer")
    assert w.problem is not None and "cannot record this run" in w.problem
    w.items(_item(i) for i in range(10))
    w.target(h.TargetRecord("logs", "ok"))
    w.finish(finished_at=NOW, result="success", duration_s=1, items=10, bytes=0)
    hist.conn.execute("PRAGMA query_only = OFF")
    assert hist.conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)


def test_a_prune_that_fails_reports_its_problem_instead_of_raising(tmp_path: Path) -> None:
    hist = _open(tmp_path)
    _run(hist, NOW - timedelta(days=100), items=10)
    hist.conn.execute("PRAGMA query_only = ON")
    result = hist.prune(now=NOW)
    assert result.problem is not None and "pruning failed" in result.problem
    assert result.items == 0


def test_a_transaction_commits_its_block_and_rolls_back_on_any_exception(
        tmp_path: Path) -> None:
    """itemwrite.transaction (fs and history use it): BEGIN IMMEDIATE, COMMIT at the end of
    the block, ROLLBACK when the block raises anything (KeyboardInterrupt too), and nothing
    more to do when SQLite already rolled back."""
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    with itemwrite.transaction(conn):
        assert conn.in_transaction
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    for exc in (ValueError("no"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), itemwrite.transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise exc
        assert not conn.in_transaction
    with pytest.raises(sqlite3.OperationalError), itemwrite.transaction(conn):
        conn.execute("ROLLBACK")  # as SQLite does itself after e.g. SQLITE_FULL
        raise sqlite3.OperationalError("disk full")
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    conn.close()
