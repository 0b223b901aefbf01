"""db: finding databases, reading timestamps in SQL, and the batched purge itself."""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbkit import (
    NOW,
    ago,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    digest,
    held_by,
    ids,
    insert,
    make_db,
    run,
    text,
)

from architect_cleanup import db as dbmod
from architect_cleanup.db import Database, DbError, Outcome, Plan, epoch_sql, find_databases
from architect_cleanup.targets.base import Interrupted, RunContext
from architect_cleanup.targets.tasks import Tasks


@pytest.fixture(autouse=True)
def fixed_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches here take the configured ``batch_size`` rows however long they hold the write
    lock (a slow machine would make them smaller); the tests of the time-bounded batches
    (test_a_batch_that_held_the_lock_*) set HOLD_TARGET themselves."""
    monkeypatch.setattr(dbmod, "HOLD_TARGET", float("inf"))


# --- finding databases -----------------------------------------------------------------------


def test_databases_are_found_per_environment_and_missing_ones_are_noted(tmp_path: Path):
    root = tmp_path / "srv"
    make_db(root / "data" / "prod" / "architect.db").close()
    make_db(root / "data" / "assigner" / "assigner.db", "").close()
    files, notes = find_databases(config(root))
    assert [(f.label, f.rel) for f in files] == [
        ("prod", "data/prod/architect.db"), ("assigner", "data/assigner/assigner.db")]
    assert notes == ["data/qa/architect.db: does not exist (skipped)"]


def test_globs_match_several_databases_and_label_them_by_path(tmp_path: Path):
    root = tmp_path / "srv"
    for name in ("a.db", "b.db"):
        make_db(root / "data" / "prod" / name, "").close()
    cfg = config(root, database={"paths": ["data/{env}/*.db", "data/none/*.db"]})
    files, notes = find_databases(cfg)
    assert [f.label for f in files] == ["data/prod/a.db", "data/prod/b.db"]
    assert "data/qa/*.db: no database matches (skipped)" in notes
    assert "data/none/*.db: no database matches (skipped)" in notes


def test_a_database_symlinked_out_of_root_is_not_touched(tmp_path: Path):
    root = tmp_path / "srv"
    outside = make_db(tmp_path / "elsewhere" / "architect.db")
    insert(outside, "task_queue", [{"task_type": "t", "status": "completed",
                                    "completed_at": text(ago(100))}])
    (root / "data" / "prod").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere" / "architect.db", root / "data" / "prod" / "architect.db")
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.failed
    assert "outside root" in t.detail["prod"]["error"]
    assert outside.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 1


# --- timestamps ------------------------------------------------------------------------------

E = 1_767_225_600  # 2026-01-01 00:00:00 UTC


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-01 00:00:00", E),                        # CURRENT_TIMESTAMP
    ("2026-01-01T00:00:00", E),
    ("2026-01-01T00:00:00.250000", E + 0.25),          # six-digit fraction
    ("2026-01-01 00:00:00.123456789", E + 0.123),
    ("2026-01-01T00:00:00Z", E),
    ("2026-01-01T02:00:00+02:00", E),
    ("2026-01-01T02:00:00.5+02:00", E + 0.5),
    ("2025-12-31T19:00:00-05:00", E),
    ("2025-12-31 19:00:00 -05:00", E),
    ("2026-01-01T02:00:00+0200", E),                   # offset without a colon
    ("2026-01-01", E),
    (E, E),                                            # epoch integer
    (E + 0.5, E + 0.5),                                # epoch real
    (str(E), E),                                       # numeric text: NUMERIC affinity
    (None, None),
    ("", None),
    ("garbage", None),
    ("2026-13-45 00:00:00", None),
    ("2460310.5", 2460310.5),                          # NUMERIC affinity: a number, read as epoch
    (" 2026-01-01 00:00:00", None),
    ("2026-01-01 00:00:00 junk", None),
    (0, None),                                         # a sentinel, not 1970
    (-5, None),
    (b"\x00\x01", None),
])
def test_epoch_sql_reads_each_timestamp_form(value, expected):
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (ts TIMESTAMP, txt TEXT)")
    con.execute("INSERT INTO t VALUES (?, ?)", (value, value))
    got = con.execute(f"SELECT {epoch_sql('ts')} FROM t").fetchone()[0]
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=0.002)


@pytest.mark.parametrize("value", [str(E), "2460310.5", "1e9"])
def test_a_bare_number_in_a_text_column_is_not_a_timestamp(value):
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (txt TEXT)")
    con.execute("INSERT INTO t VALUES (?)", (value,))
    assert con.execute(f"SELECT {epoch_sql('txt')} FROM t").fetchone()[0] is None


def test_naive_text_is_local_time_when_configured_and_offsets_stay_what_they_are(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        con = sqlite3.connect(":memory:")
        local = epoch_sql(":v", "local")
        utc = epoch_sql(":v", "utc")
        for value, as_local, as_utc in [
            ("2026-01-01 00:00:00", E + 5 * 3600, E),      # EST is UTC-5
            ("2026-07-01T00:00:00.5", 1_782_878_400.5, 1_782_864_000.5),  # EDT is UTC-4
            ("2026-01-01T00:00:00+00:00", E, E),
            ("2026-01-01T00:00:00Z", E, E),
            (E, E, E),
        ]:
            got = con.execute(f"SELECT {local}, {utc}", {"v": value}).fetchone()
            assert got == (pytest.approx(as_local, abs=0.01), pytest.approx(as_utc, abs=0.01))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# --- the purge engine ------------------------------------------------------------------------


def prod_db(tmp_path: Path, schema: str | None = None) -> tuple[Path, sqlite3.Connection]:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  *(() if schema is None else (schema,)))
    return root, con


def tasks(con: sqlite3.Connection, n: int, status: str = "completed", days: float = 30,
          **kw: object) -> list[int]:
    return insert(con, "task_queue", ({"task_type": "t", "status": status,
                                       "completed_at": text(ago(days)), **kw}
                                      for _ in range(n)))


def open_plan(root: Path, *, dry_run: bool, **db: object) -> tuple[Database, Plan]:
    cfg = config(root, database=db) if db else config(root)
    files, _ = find_databases(cfg)
    d = Database(files[0], cfg.database, dry_run=dry_run, root=cfg.root)
    plan = Tasks().plan(RunContext(config=cfg, now=NOW, dry_run=dry_run), d)
    assert isinstance(plan, Plan)
    return d, plan


def query_plan(con: sqlite3.Connection, sql: str, params: dict[str, object]) -> str:
    return "\n".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.parametrize("parent_index", [False, True])
def test_no_batch_query_sorts_and_the_walk_uses_the_rowid(tmp_path: Path, parent_index):
    root, con = prod_db(tmp_path)
    if parent_index:
        con.execute("CREATE INDEX idx_parent ON task_queue(parent_id)")
    tasks(con, 5)
    d, plan = open_plan(root, dry_run=False)
    with d:
        r = dbmod._Run(d, plan, Outcome(), 1000)
        assert r.emulate is not parent_index
        params = dict(r.params, lo=0, hi=10, n=1000, k=10)
        where = f"_t._rowid_ BETWEEN :lo AND :hi AND {r.cand}"
        plans = {
            "next": query_plan(d.con, r.next_batch_sql(), params),
            "change": query_plan(d.con, r.change_sql(where + r.keep_protected), params),
            "clear": query_plan(d.con, "UPDATE main.task_queue AS _c SET parent_id = NULL "
                                "WHERE " + r.children_sql(r.refs[0]), params),
        }
    for name, text_ in plans.items():
        assert "TEMP B-TREE" not in text_, (name, text_)
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in plans["next"]
    assert "SCAN _c" not in plans["clear"]          # no scan of the child table per batch


def test_each_batch_is_one_short_transaction_and_the_lock_then_stays_free_as_long(
        tmp_path: Path):
    root, con = prod_db(tmp_path)
    tasks(con, 95)
    tasks(con, 7, days=1)
    d, plan = open_plan(root, dry_run=False, batch_size=10)
    trace: list[tuple[float, str]] = []
    d.con.set_trace_callback(lambda sql: trace.append((time.monotonic(), sql)))
    out = Outcome()
    with d:
        d.apply(plan, out)
    assert (out.changed, out.batches, out.checked, out.kept) == (95, 10, 102, 7)
    statements = "\n".join(sql for _, sql in trace)
    txns = statements.split("BEGIN IMMEDIATE")[1:]
    assert len(txns) == 10
    for txn in txns:
        body, _, _ = txn.partition("COMMIT")
        assert body.count("DELETE FROM") == 1
    begins = [t for t, sql in trace if sql == "BEGIN IMMEDIATE"]
    commits = [t for t, sql in trace if sql == "COMMIT"]
    for i in range(9):
        held = commits[i] - begins[i]
        assert begins[i + 1] - commits[i] >= held
    assert len(ids(con, "task_queue")) == 7


def test_a_writer_that_began_waiting_during_a_batch_tries_again_inside_the_pause():
    # SQLite's busy handler tries again after 1, 2, 5, 10, 15, 20, 25 ... ms (then 100 ms each)
    tries, t = [], 0.0
    for ms in [*dbmod.BUSY_SLEEPS_MS, *[100] * 10]:
        t += ms / 1000
        tries.append(t)
    for held_us in range(0, 400_000, 250):  # batches holding the lock 0 to 400 ms
        held = held_us / 1e6
        pause = dbmod.pause_after(held)
        assert pause >= held  # the purge never holds the lock more than half the time
        for share in (0.0, 0.1, 0.5, 0.9, 1.0):
            waited = held * share  # the writer has waited this long when the batch commits
            next_try = next(c for c in tries if c > waited) - waited
            # its next try finds the lock free, even with its sleep overrun by the slack
            assert next_try + dbmod.BUSY_SLACK <= pause + 1e-12, (held, waited)


def test_a_dry_run_connection_cannot_write(tmp_path: Path):
    root, _ = prod_db(tmp_path)
    d, _ = open_plan(root, dry_run=True)
    with d, pytest.raises(sqlite3.OperationalError, match="readonly"):
        d.con.execute("DELETE FROM task_queue")


def test_a_stop_request_ends_the_purge_between_batches_with_exact_counts(tmp_path: Path,
                                                                         monkeypatch):
    root, con = prod_db(tmp_path)
    tasks(con, 50)
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    d, plan = open_plan(root, dry_run=False, batch_size=10)
    out = Outcome()

    def stop() -> None:
        if out.batches == 3:
            raise Interrupted("stopped on request")

    with d, pytest.raises(Interrupted):
        d.apply(plan, out, check_stop=stop)
    assert out.changed == 30
    assert len(ids(con, "task_queue")) == 20


def test_a_stopped_run_reports_what_it_did(tmp_path: Path, monkeypatch):
    root, con = prod_db(tmp_path)
    tasks(con, 50)
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    def should_stop() -> bool:  # SIGTERM arrives once two batches are gone
        return con.execute("SELECT count(*) FROM task_queue").fetchone()[0] <= 30

    stats = run(config(root, database={"batch_size": 10}), tmp_path, dry_run=False,
                should_stop=should_stop)
    t = stats.targets["tasks"]
    assert t.status == "stopped" and t.message == "stopped on request"
    assert stats.tasks_deleted == 20
    assert len(ids(con, "task_queue")) == 30


def test_the_dashboard_keeps_writing_during_a_purge(tmp_path: Path):
    root, con = prod_db(tmp_path)
    tasks(con, 20_000)
    stop = threading.Event()
    errors: list[Exception] = []
    written: list[int] = []
    worst = [0.0]

    def dashboard() -> None:
        w = sqlite3.connect(root / "data" / "prod" / "architect.db", timeout=5,
                            isolation_level=None)
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                cur = w.execute("INSERT INTO task_queue (task_type, status) "
                                "VALUES ('n', 'pending')")
                written.append(int(cur.lastrowid or 0))
            except sqlite3.Error as exc:
                errors.append(exc)
            worst[0] = max(worst[0], time.monotonic() - t0)
            time.sleep(0.005)
        w.close()

    th = threading.Thread(target=dashboard)
    th.start()
    try:
        stats = run(config(root), tmp_path, dry_run=False)
    finally:
        stop.set()
        th.join()
    assert errors == []
    assert stats.tasks_deleted == 20_000
    assert ids(con, "task_queue") == set(written)
    assert worst[0] < 1.0   # generous: this is not a benchmark (see SPEC section 10)


def test_a_real_run_ends_with_a_truncated_wal(tmp_path: Path):
    root, con = prod_db(tmp_path)
    tasks(con, 3000)
    wal = root / "data" / "prod" / "architect.db-wal"
    assert os.path.getsize(wal) > 100_000
    run(config(root), tmp_path, dry_run=False)
    # truncated after the purge; only the activity_log row written after it remains
    assert os.path.getsize(wal) <= 32 + 2 * (24 + 4096)


def test_a_dry_run_changes_nothing_and_leaves_no_files(tmp_path: Path):
    root, con = prod_db(tmp_path)
    tasks(con, 30)
    con.close()
    db = root / "data" / "prod" / "architect.db"
    before = digest(db)
    listing = sorted(os.listdir(db.parent))
    stats = run(config(root), tmp_path, dry_run=True, only=("tasks", "errors", "prompts"))
    assert stats.tasks_deleted == 30
    assert digest(db) == before
    assert sorted(os.listdir(db.parent)) == listing


# --- foreign keys ----------------------------------------------------------------------------

RESULTS = """
CREATE TABLE task_results (id INTEGER PRIMARY KEY,
    task_id INTEGER REFERENCES task_queue(id) ON DELETE {action});
"""


AUDIT = """
CREATE TABLE task_audit (id INTEGER PRIMARY KEY,
    task_id INTEGER REFERENCES task_queue(id) ON DELETE {action});
"""


@pytest.mark.parametrize("two_tables", [False, True])
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("action", ["RESTRICT", "NO ACTION"])
def test_a_row_another_row_refers_to_is_kept_and_counted_as_skipped(tmp_path: Path, indexed,
                                                                    action, two_tables):
    """With *two_tables*, a second table refers with the other protecting action: a row
    either protects is kept."""
    root, con = prod_db(tmp_path)
    con.executescript(RESULTS.format(action=action))
    if two_tables:
        other = "NO ACTION" if action == "RESTRICT" else "RESTRICT"
        con.executescript(AUDIT.format(action=other))
    if indexed:
        con.execute("CREATE INDEX idx_results_task ON task_results(task_id)")
        if two_tables:
            con.execute("CREATE INDEX idx_audit_task ON task_audit(task_id)")
    old = tasks(con, 10)
    insert(con, "task_results", [{"task_id": old[2]}] + (
        [] if two_tables else [{"task_id": old[7]}, {"task_id": old[7]}]))
    if two_tables:
        insert(con, "task_audit", [{"task_id": old[7]}, {"task_id": old[7]}])
    cfg = config(root, database={"batch_size": 3})
    dry = run(cfg, tmp_path, dry_run=True)
    real = run(cfg, tmp_path, dry_run=False)
    assert dry.tasks_deleted == real.tasks_deleted == 8
    assert dry.targets["tasks"].skipped == real.targets["tasks"].skipped == 2
    assert real.targets["tasks"].errors == []
    assert ids(con, "task_queue") == {old[2], old[7]}
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.parametrize("indexed", [False, True])
def test_set_null_gives_the_same_result_with_or_without_an_index(tmp_path: Path, indexed):
    root, con = prod_db(tmp_path)
    if indexed:
        con.execute("CREATE INDEX idx_parent ON task_queue(parent_id)")
    parents = tasks(con, 6)
    kids = [tasks(con, 1, status="pending", parent_id=p)[0] for p in parents]
    old_kids = [tasks(con, 1, parent_id=p)[0] for p in parents[:3]]
    cfg = config(root, database={"batch_size": 4})
    dry = run(cfg, tmp_path, dry_run=True)
    real = run(cfg, tmp_path, dry_run=False)
    assert dry.tasks_deleted == real.tasks_deleted == 9
    rows = dict(con.execute("SELECT id, parent_id FROM task_queue").fetchall())
    assert rows == dict.fromkeys(kids)
    assert not set(old_kids) & set(rows)
    d = real.targets["tasks"].detail["prod"]
    assert d["references_cleared"] == dry.targets["tasks"].detail["prod"]["references_cleared"]
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_child_added_during_the_purge_does_not_keep_a_dangling_parent_id(tmp_path: Path,
                                                                           monkeypatch):
    root, con = prod_db(tmp_path)
    parents = tasks(con, 40)
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    d, plan = open_plan(root, dry_run=False, batch_size=10)
    late: list[int] = []

    def progress(out: Outcome) -> None:
        if out.batches == 1:   # the dashboard adds a child of a parent in a later batch
            late.extend(tasks(con, 1, status="pending", parent_id=parents[-1]))

    with d:
        d.apply(plan, Outcome(), progress=progress)
        assert d.con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert con.execute("SELECT parent_id FROM task_queue WHERE id = ?", late).fetchone() == (None,)
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_an_unindexed_cascade_is_left_to_sqlite_with_a_note(tmp_path: Path):
    root, con = prod_db(tmp_path)
    con.executescript(RESULTS.format(action="CASCADE"))
    old = tasks(con, 3)
    insert(con, "task_results", [{"task_id": t} for t in old])
    stats = run(config(root), tmp_path, dry_run=False)
    assert stats.tasks_deleted == 3
    assert con.execute("SELECT count(*) FROM task_results").fetchone()[0] == 0
    assert any("no index on" in n and "task_results(task_id) ON DELETE CASCADE" in n
               for n in stats.targets["tasks"].notes)


def test_a_row_the_schema_refuses_to_delete_is_kept_and_the_rest_of_its_batch_goes(
        tmp_path: Path):
    root, con = prod_db(tmp_path)
    old = tasks(con, 10)
    con.execute(f"CREATE TRIGGER keep_one BEFORE DELETE ON task_queue WHEN old.id = {old[4]} "
                "BEGIN SELECT RAISE(ABORT, 'audited row'); END")
    stats = run(config(root, database={"batch_size": 5}), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert stats.tasks_deleted == 9
    assert t.skipped == 1
    assert ids(con, "task_queue") == {old[4]}
    assert any("audited row" in e for e in t.errors)
    assert t.status == "ok"


def test_a_without_rowid_table_is_skipped_with_a_reason(tmp_path: Path):
    root, con = prod_db(tmp_path, "CREATE TABLE task_queue (id TEXT PRIMARY KEY, status TEXT, "
                                  "completed_at TEXT) WITHOUT ROWID;")
    con.execute("INSERT INTO task_queue VALUES ('a', 'completed', ?)", (text(ago(50)),))
    stats = run(config(root), tmp_path, dry_run=False)
    assert stats.targets["tasks"].status == "ok"
    assert any("WITHOUT ROWID" in n for n in stats.targets["tasks"].notes)
    assert con.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 1


# --- failures stay with their database -------------------------------------------------------


def two_databases(tmp_path: Path) -> tuple[Path, sqlite3.Connection, sqlite3.Connection]:
    root = tmp_path / "srv"
    prod = make_db(root / "data" / "prod" / "architect.db")
    qa = make_db(root / "data" / "qa" / "architect.db")
    for c in (prod, qa):
        tasks(c, 5)
        insert(c, "errors", [{"error_type": "e", "message": "m", "status": "resolved",
                              "resolved_at": text(ago(90))}])
    return root, prod, qa


def test_a_write_lock_held_briefly_is_waited_for(tmp_path: Path):
    root, _, _ = two_databases(tmp_path)
    locked = threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(root / "data" / "prod" / "architect.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(0.5)
        holder.execute("ROLLBACK")
        holder.close()

    th = threading.Thread(target=hold)
    th.start()
    locked.wait()
    t0 = time.monotonic()
    try:
        stats = run(config(root, database={"busy_timeout": "5s"}), tmp_path, dry_run=False)
    finally:
        th.join()
    assert time.monotonic() - t0 >= 0.3
    assert stats.success
    assert stats.tasks_deleted == 10


def test_a_write_lock_held_past_busy_timeout_fails_that_database_alone(tmp_path: Path):
    root, prod, qa = two_databases(tmp_path)
    holder = sqlite3.connect(root / "data" / "prod" / "architect.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    t0 = time.monotonic()
    try:
        stats = run(config(root, database={"busy_timeout": "1s"}), tmp_path, dry_run=False,
                    only=("tasks", "errors", "prompts", "temp"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert time.monotonic() - t0 >= 2.0           # tasks and errors each waited 1s
    t = stats.targets["tasks"]
    assert t.failed
    assert t.message.startswith("1 of 2 databases failed: prod (database is locked")
    assert "database is locked" in t.detail["prod"]["error"]
    assert "busy_timeout (1s)" in t.detail["prod"]["error"]
    assert t.detail["qa"]["removed"] == 5
    assert stats.targets["errors"].failed
    assert stats.targets["errors"].detail["qa"]["removed"] == 1
    assert stats.targets["prompts"].status == "ok"
    assert stats.targets["temp"].status == "ok"
    assert not stats.success
    assert len(ids(prod, "task_queue")) == 5 and len(ids(qa, "task_queue")) == 0


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch):
    import logging
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    logger = logging.getLogger("architect_cleanup")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def test_the_cli_exits_1_when_a_database_stays_locked(tmp_path: Path, cli_env):
    import io

    from architect_cleanup.cli import main
    root, _, qa = two_databases(tmp_path)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root = "{root}"\nenvironments = ["prod", "qa"]\n'
                   '[logs]\ntmp_dir = ""\n[database]\nbusy_timeout = "1s"\n')
    holder = sqlite3.connect(root / "data" / "prod" / "architect.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    out = io.StringIO()
    try:
        code = main(["--config", str(cfg), "run", "--force", "--only", "tasks"], out=out)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1
    assert "database is locked" in out.getvalue()
    assert len(ids(qa, "task_queue")) == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_database_fails_that_database_with_a_clear_message(tmp_path: Path, damage):
    root, prod, qa = two_databases(tmp_path)
    tasks(prod, 3000)
    prod.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    prod.close()
    path = root / "data" / "prod" / "architect.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.seek(size // 3)
            fh.write(b"\xff" * (size // 3))
    stats = run(config(root), tmp_path, dry_run=False, only=("tasks", "errors", "temp"))
    t = stats.targets["tasks"]
    assert t.failed
    err = t.detail["prod"]["error"]
    assert "corrupt" in err or "malformed" in err or "not a database" in err
    assert t.detail["qa"]["removed"] == 5
    assert stats.targets["temp"].status == "ok"
    assert len(ids(qa, "task_queue")) == 0


def test_a_missing_root_fails_the_database_targets(tmp_path: Path):
    stats = run(config(tmp_path / "nowhere"), tmp_path, dry_run=True)
    assert stats.targets["tasks"].failed


def test_db_error_messages_name_the_problem():
    assert "corrupt" in dbmod.describe(sqlite3.DatabaseError("file is not a database"))
    assert "ReadWritePaths" in dbmod.describe(
        sqlite3.OperationalError("attempt to write a readonly database"))
    assert dbmod.describe(DbError("plain")) == "plain"


# --- Database.__init__, _prepare, _release_own_sides, close: the connection and its files ------


def open_file(path: Path, *, dry_run: bool, busy: float = 3.5) -> Database:
    from datetime import timedelta

    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import DbFile
    cfg = DatabaseConfig(busy_timeout=timedelta(seconds=busy))
    return Database(DbFile("prod", path.name, str(path)), cfg, dry_run=dry_run)


def settings(d: Database) -> dict[str, int]:
    return {p: int(d.con.execute(f"PRAGMA {p}").fetchone()[0]) for p in (
        "busy_timeout", "foreign_keys", "temp_store", "query_only", "synchronous",
        "wal_autocheckpoint")}


def test_a_real_runs_connection_waits_enforces_keys_and_leaves_checkpoints_to_the_run(
        tmp_path: Path):
    make_db(tmp_path / "a.db")
    with open_file(tmp_path / "a.db", dry_run=False) as d:
        assert d.journal_mode == "wal"
        assert d.guard is not None and d.guard.locked
        assert settings(d) == {"busy_timeout": 3500, "foreign_keys": 1, "temp_store": 2,
                               "query_only": 0, "synchronous": 1, "wal_autocheckpoint": 0}


def test_a_dry_runs_connection_is_query_only_and_keeps_sqlites_wal_settings(tmp_path: Path):
    make_db(tmp_path / "a.db")
    with open_file(tmp_path / "a.db", dry_run=True) as d:
        assert settings(d) == {"busy_timeout": 3500, "foreign_keys": 1, "temp_store": 2,
                               "query_only": 1, "synchronous": 2, "wal_autocheckpoint": 1000}


def test_a_rollback_journal_database_keeps_its_settings_and_drops_the_guards_lock(
        tmp_path: Path):
    con = make_db(tmp_path / "a.db", "CREATE TABLE t (id INTEGER PRIMARY KEY);")
    con.execute("PRAGMA journal_mode = DELETE")
    with open_file(tmp_path / "a.db", dry_run=False) as d:
        assert d.journal_mode == "delete"
        assert d.guard is not None and not d.guard.locked and d.guard.fd >= 0
        assert settings(d)["synchronous"] == 2 and settings(d)["wal_autocheckpoint"] == 1000
        assert d.checkpoint() is None


def wal_database(path: Path) -> None:
    """A WAL database nobody has open: no -wal, no -shm beside it."""
    make_db(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);").close()
    assert not os.path.exists(f"{path}-wal") and not os.path.exists(f"{path}-shm")


def test_the_wal_and_shm_a_run_made_itself_are_removed_when_it_closes(tmp_path: Path):
    path = tmp_path / "a.db"
    wal_database(path)
    with open_file(path, dry_run=False) as d:
        d.insert("t", {"v": "x"})
        assert os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")
    assert not os.path.exists(f"{path}-wal") and not os.path.exists(f"{path}-shm")
    assert d.guard is not None and d.guard.fd == -1


@pytest.mark.parametrize("side", ["-wal", "-shm"])
def test_a_wal_or_shm_found_beside_the_database_stays_after_the_close(tmp_path: Path, side):
    path = tmp_path / "a.db"
    wal_database(path)
    Path(f"{path}{side}").write_bytes(b"")  # not ours: another program may be using it
    with open_file(path, dry_run=False) as d:
        d.insert("t", {"v": "x"})
    assert os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")


def test_our_own_wal_stays_while_another_process_has_the_database_open(tmp_path: Path):
    import subprocess
    path = tmp_path / "a.db"
    wal_database(path)
    with open(path, "rb") as fh:  # a process with the file open and no lock on it
        other = subprocess.Popen(["sleep", "60"], stdin=fh)
    try:
        with open_file(path, dry_run=False) as d:
            d.insert("t", {"v": "x"})
        assert os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")
    finally:
        other.kill()
        other.wait()



# --- busy_gap, pause_after: the pause after a batch ------------------------------------------


@pytest.mark.parametrize(("waited", "gap"), [
    (0.0, 0.001), (0.0009, 0.001),
    (0.001, 0.002), (0.0029, 0.002),              # a try exactly at 1 ms: the next sleep is 2
    (0.004, 0.005), (0.009, 0.010), (0.02, 0.015), (0.04, 0.020), (0.06, 0.025),
    (0.09, 0.025), (0.11, 0.025), (0.13, 0.050), (0.2, 0.050),
    (0.2279, 0.050), (0.25, 0.100), (0.3279, 0.100),   # just before a try: its own sleep
    (0.33, 0.100), (5.0, 0.100),                   # past the table: 100 ms each
])
def test_a_waiting_writer_sleeps_as_sqlites_busy_handler_does(waited, gap):
    assert dbmod.busy_gap(waited) == pytest.approx(gap, abs=1e-9)


@pytest.mark.parametrize(("held", "pause"), [
    (0.0, 0.0015),       # the 1 ms sleep of a writer that tried as the batch began (+ slack)
    (0.0009, 0.0015),
    (0.001, 0.0025),     # the 2 ms sleep of one that tried again 1 ms after
    (0.0015, 0.0025),
    (0.0029, 0.0029),     # as long as the batch
    (0.003, 0.0055),     # ... the 5 ms sleep of one that tried at 3 ms
    (0.009, 0.0105),
    (0.012, 0.012),      # as long as the batch, once the batch is the longer
    (0.05, 0.05),
    (0.3, 0.3),
])
def test_the_pause_after_a_batch_is_the_longer_of_the_batch_and_a_writers_sleep(held, pause):
    assert dbmod.pause_after(held) == pytest.approx(pause, abs=1e-9)


# --- Database.checkpoint: the WAL after a real run -------------------------------------------


def traced(d: Database) -> list[str]:
    trace: list[str] = []
    d.con.set_trace_callback(trace.append)
    return trace


def test_the_final_checkpoint_truncates_the_wal_and_restores_the_busy_timeout(tmp_path: Path):
    root, con = prod_db(tmp_path)
    tasks(con, 300)
    d, plan = open_plan(root, dry_run=False)
    with d:
        d.apply(plan, Outcome())
        trace = traced(d)
        assert d.checkpoint() is None
        assert d.con.execute("PRAGMA busy_timeout").fetchone() == (2000,)
    assert trace == ["PRAGMA wal_checkpoint(PASSIVE)", "PRAGMA busy_timeout = 20",
                     "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA busy_timeout = 2000",
                     "PRAGMA busy_timeout"]
    assert os.path.getsize(root / "data" / "prod" / "architect.db-wal") == 0


def test_a_reader_that_keeps_the_wal_gets_a_note_and_the_busy_timeout_is_restored(
        tmp_path: Path):
    import re
    root, con = prod_db(tmp_path)
    tasks(con, 300)
    reader = sqlite3.connect(root / "data" / "prod" / "architect.db", isolation_level=None)
    d, plan = open_plan(root, dry_run=False)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM task_queue").fetchone()  # an older snapshot
        with d:
            d.apply(plan, Outcome())
            note = d.checkpoint()
            assert d.con.execute("PRAGMA busy_timeout").fetchone() == (2000,)
    finally:
        reader.close()
    m = re.fullmatch(r"prod: WAL not truncated \((\d+) of (\d+) pages copied\): the dashboard "
                     r"was busy; SQLite finishes it on a later checkpoint", note or "")
    assert m is not None, note
    assert int(m[1]) < int(m[2])


def test_no_checkpoint_runs_after_a_dry_run_or_a_run_that_changed_nothing(tmp_path: Path):
    root, con = prod_db(tmp_path)
    tasks(con, 5, days=1)   # nothing old enough
    for dry_run in (True, False):
        d, plan = open_plan(root, dry_run=dry_run)
        with d:
            d.apply(plan, Outcome())
            trace = traced(d)
            assert d.checkpoint() is None
        assert not [s for s in trace if "checkpoint" in s], (dry_run, trace)
    tasks(con, 5)           # a dry run that would change rows does not checkpoint either
    d, plan = open_plan(root, dry_run=True)
    with d:
        out = Outcome()
        d.apply(plan, out)
        assert out.changed == 5
        trace = traced(d)
        assert d.checkpoint() is None
    assert not [s for s in trace if "checkpoint" in s], trace


# --- _Run.count_table, _Run.execute: counts per chunk and batch, the rowid range's ends -------


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_table_is_counted_in_chunks_with_each_row_once(tmp_path: Path, monkeypatch, dry_run):
    monkeypatch.setattr(dbmod, "SCAN_CHUNK", 3)
    root, con = prod_db(tmp_path)
    tasks(con, 5)                                  # old: deleted
    tasks(con, 2, status="pending")                # not finished: not what the rule is about
    tasks(con, 2, days=1)                          # finished yesterday: kept
    tasks(con, 1, completed_at=None)               # finished, no time: kept, undated
    tasks(con, 1, completed_at="someday")          # finished, not a time: kept, undated
    d, plan = open_plan(root, dry_run=dry_run, batch_size=2)
    out = Outcome()
    with d:
        d.apply(plan, out)
    assert (out.checked, out.kept, out.undated, out.changed, out.batches) == (11, 4, 2, 5, 3)
    assert len(ids(con, "task_queue")) == (11 if dry_run else 6)


def test_a_dry_run_that_would_change_every_row_keeps_none(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(dbmod, "SCAN_CHUNK", 2)
    root, con = prod_db(tmp_path)
    tasks(con, 4)
    d, plan = open_plan(root, dry_run=True)
    out = Outcome()
    with d:
        d.apply(plan, out)
    assert (out.checked, out.kept, out.undated, out.changed, out.batches) == (4, 0, 0, 4, 1)
    assert d.changed == 0


@pytest.mark.parametrize("dry_run", [True, False])
def test_rows_at_both_ends_of_the_rowid_range_are_purged_and_counted(tmp_path: Path,
                                                                       monkeypatch, dry_run):
    monkeypatch.setattr(dbmod, "SCAN_CHUNK", 1)
    root, con = prod_db(tmp_path)
    ends = [dbmod.ROWID_MIN, -1, 0, dbmod.ROWID_MAX]
    for rid in ends:
        tasks(con, 1, id=rid)
    tasks(con, 1, id=5, days=1)
    d, plan = open_plan(root, dry_run=dry_run, batch_size=1)
    out = Outcome()
    with d:
        d.apply(plan, out)
    assert (out.checked, out.kept, out.changed, out.batches) == (5, 1, 4, 4)
    assert ids(con, "task_queue") == ({*ends, 5} if dry_run else {5})


def test_the_database_counts_what_every_batch_changed(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    root, con = prod_db(tmp_path)
    tasks(con, 7)
    d, plan = open_plan(root, dry_run=False, batch_size=3)
    out = Outcome()
    with d:
        d.apply(plan, out)
        assert (d.changed, out.changed, out.batches) == (7, 7, 3)
        d.apply(plan, Outcome())
        assert d.changed == 7


# --- _Run._transaction, _Run._one_by_one: rows the schema refuses -----------------------------


def test_refused_rows_are_each_kept_and_the_errors_listed_stop_at_twenty(tmp_path: Path):
    root, con = prod_db(tmp_path)
    refused = tasks(con, 23)
    con.execute("CREATE TRIGGER keep_all BEFORE DELETE ON task_queue "
                "BEGIN SELECT RAISE(ABORT, 'audited row'); END")
    d, plan = open_plan(root, dry_run=False, batch_size=10)
    out = Outcome()
    with d:
        d.apply(plan, out)
    assert (out.changed, out.skipped, out.batches) == (0, 23, 3)
    assert out.errors == [f"task_queue row {r}: audited row; kept" for r in refused[:20]]
    assert d.changed == 0
    assert ids(con, "task_queue") == set(refused)


# --- _Run._transaction, locked_message: a batch that cannot run -----------------------------


def task_plan(path: Path) -> Plan:
    from architect_cleanup.db import cutoff
    return Plan("task_queue", "_t.status = 'completed'", epoch_sql("_t.completed_at"),
                cutoff(NOW, dbmod.timedelta(days=7)), what="finished tasks")


def test_a_write_lock_taken_between_batches_fails_the_next_one_with_what_was_done(
        tmp_path: Path):
    path = tmp_path / "a.db"
    con = make_db(path)
    tasks(con, 5)
    out = Outcome()

    def dashboard_takes_the_lock(o: Outcome) -> None:
        if o.batches == 1:
            con.execute("BEGIN IMMEDIATE")

    try:
        with open_file(path, dry_run=False, busy=0.05) as d, pytest.raises(DbError) as err:
            d.apply(task_plan(path), out, batch_size=2, progress=dashboard_takes_the_lock)
    finally:
        con.execute("ROLLBACK")
    assert str(err.value) == ("database is locked: another connection held its write lock "
                              "longer than busy_timeout (0s); 2 finished tasks deleted before "
                              "that")
    assert (out.changed, out.batches) == (2, 1)
    assert len(ids(con, "task_queue")) == 3


def test_a_reader_that_keeps_a_rollback_journal_database_at_commit_fails_the_batch(
        tmp_path: Path):
    """In rollback-journal mode a COMMIT waits for every reader; one that stays longer than
    busy_timeout fails the batch inside its transaction: rolled back, and the error says what
    was done before it."""
    path = tmp_path / "a.db"
    con = make_db(path)
    con.execute("PRAGMA journal_mode=DELETE")
    tasks(con, 5)
    reader = sqlite3.connect(path, isolation_level=None)
    out = Outcome()

    def a_reader_comes(o: Outcome) -> None:
        if o.batches == 1:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM task_queue").fetchone()

    try:
        with open_file(path, dry_run=False, busy=0.05) as d, pytest.raises(DbError) as err:
            d.apply(task_plan(path), out, batch_size=2, progress=a_reader_comes)
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    assert str(err.value) == ("database is locked: another connection held its write lock "
                              "longer than busy_timeout (0s); 2 finished tasks deleted before "
                              "that")
    assert (out.changed, out.batches) == (2, 1)
    assert len(ids(con, "task_queue")) == 3


def test_an_error_inside_a_batch_rolls_it_back_and_fails_with_sqlites_words(tmp_path: Path):
    path = tmp_path / "a.db"
    con = make_db(path)
    tasks(con, 5)
    con.execute("CREATE TRIGGER audit BEFORE DELETE ON task_queue "
                "BEGIN INSERT INTO missing_audit VALUES (old.id); END")
    out = Outcome()
    with open_file(path, dry_run=False) as d:
        with pytest.raises(DbError, match=r"^no such table: main\.missing_audit$"):
            d.apply(task_plan(path), out, batch_size=2)
        assert not d.con.in_transaction
    assert (out.changed, out.skipped, out.batches) == (0, 0, 0)
    assert len(ids(con, "task_queue")) == 5


def test_a_stop_request_is_looked_at_before_each_batch_and_each_chunk_of_the_count(
        tmp_path: Path, monkeypatch):
    monkeypatch.setattr(dbmod, "SCAN_CHUNK", 2)
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    root, con = prod_db(tmp_path)
    tasks(con, 5)
    for dry_run, looks in ((True, 4 + 3), (False, 4 + 1)):  # batches + 1, then chunks
        calls: list[int] = []
        d, plan = open_plan(root, dry_run=dry_run, batch_size=2)
        with d:
            d.apply(plan, Outcome(), check_stop=lambda c=calls: c.append(1))
        assert len(calls) == looks, dry_run


# --- Database.column_values: the values an orphan check compares -----------------------------


def test_every_value_of_a_column_is_read_as_text_and_nulls_are_left_out(tmp_path: Path):
    con = make_db(tmp_path / "a.db", 'CREATE TABLE "the refs" (id INTEGER PRIMARY KEY, '
                                     '"task ""id""" ANY) STRICT;')
    values = [7, None, "abc", 2.5, b"x\xffy", "ünï"]
    insert(con, '"the refs"', [{'"task ""id"""': v} for v in values])
    with open_file(tmp_path / "a.db", dry_run=True) as d:
        got = list(d.column_values("the refs", 'task "id"'))
    assert got == ["7", "abc", "2.5", "x\ufffdy", "ünï"]


# --- _Run._checkpoint: a PASSIVE checkpoint about every CHECKPOINT_FRAMES WAL frames ---------


def checkpointed_batches(tmp_path: Path, rows: int, batch_size: int,
                         reader: bool = False) -> list[int]:
    """The batches after which the purge ran a checkpoint of its own (with *reader*, another
    connection begins a read after the first batch and keeps it to the end)."""
    root, con = prod_db(tmp_path)
    tasks(con, rows)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other = make_db(root / "data" / "prod" / "architect.db", "") if reader else None
    d, plan = open_plan(root, dry_run=False, batch_size=batch_size)
    trace = traced(d)
    after: list[int] = []

    def progress(out: Outcome) -> None:
        if "PRAGMA wal_checkpoint(PASSIVE)" in trace:
            after.append(out.batches)
        trace.clear()
        if other is not None and out.batches == 1:
            other.execute("BEGIN")
            other.execute("SELECT count(*) FROM task_queue").fetchone()

    with d:
        d.apply(plan, Outcome(), progress=progress)
    if other is not None:
        other.execute("ROLLBACK")
    assert ids(con, "task_queue") == set()
    return after


def test_small_batches_are_checkpointed_every_hundred(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(dbmod, "CHECKPOINT_FRAMES", 500)
    # a one-row batch writes a few frames: 500 frames would be over a hundred batches
    assert checkpointed_batches(tmp_path, 250, 1) == [1, 101, 201]


def batch_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, batch_size: int,
               held: Callable[[int], float], journal: str = "wal") -> list[int]:
    """The rows of each batch of a real purge of *rows* old tasks, when batch number *i*
    (from 1) holds the write lock ``held(i)`` seconds (the batch's clock, faked)."""
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(dbmod, "HOLD_TARGET", 0.003)
    root, con = prod_db(tmp_path)
    con.execute(f"PRAGMA journal_mode = {journal}")
    tasks(con, rows)
    d, plan = open_plan(root, dry_run=False, batch_size=batch_size)
    sizes: list[int] = []
    real = dbmod._Run._transaction

    def transaction(self: Any, lo: int, hi: int, *, split: bool) -> float | None:
        before = self.out.changed
        real(self, lo, hi, split=split)
        sizes.append(self.out.changed - before)
        return held(len(sizes))

    monkeypatch.setattr(dbmod._Run, "_transaction", transaction)
    with d:
        d.apply(plan, Outcome())
    assert ids(con, "task_queue") == set()
    return sizes


def test_a_batch_that_held_the_lock_too_long_halves_the_next_down_to_a_floor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = batch_rows(tmp_path, monkeypatch, 1000, 200, lambda _i: 0.010)
    assert sizes[:6] == [200, 100, 50, 25, dbmod.MIN_BATCH, dbmod.MIN_BATCH]
    assert set(sizes[5:-1]) == {dbmod.MIN_BATCH} and sum(sizes) == 1000


def test_batches_that_hold_the_lock_briefly_grow_back_to_batch_size_and_no_further(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = batch_rows(tmp_path, monkeypatch, 3000, 200,
                       lambda i: 0.010 if i <= 4 else 0.001)
    assert sizes[:5] == [200, 100, 50, 25, 16]
    grown = sizes[5:sizes.index(200, 5)]
    assert grown == sorted(set(grown)) and grown[0] == 20  # a quarter more each time
    assert max(sizes) == 200 and sum(sizes) == 3000


def test_a_batch_within_the_target_keeps_its_size(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = batch_rows(tmp_path, monkeypatch, 1000, 200,
                       lambda i: 0.010 if i == 1 else 0.002)
    assert sizes == [200] + [100] * 8


def test_a_batch_that_held_the_lock_exactly_the_target_or_half_of_it_keeps_its_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edges = {1: 0.010, 2: 0.003, 3: 0.003 / 2}  # too long, exactly the target, then half
    sizes = batch_rows(tmp_path, monkeypatch, 600, 200, lambda i: edges.get(i, 0.002))
    assert sizes == [200, 100, 100, 100, 100]


def test_a_halved_batch_is_a_whole_number_of_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = batch_rows(tmp_path, monkeypatch, 300, 101, lambda _i: 0.010)
    assert sizes[:4] == [101, 50, 25, dbmod.MIN_BATCH]


def test_a_rollback_journal_database_keeps_batch_size_however_long_a_batch_held_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its commits sync the journal and the file: as long for 16 rows as for 200."""
    sizes = batch_rows(tmp_path, monkeypatch, 1000, 200, lambda _i: 0.010, journal="delete")
    assert sizes == [200] * 5


def test_a_batch_size_below_the_floor_is_never_raised_to_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert batch_rows(tmp_path, monkeypatch, 30, 3, lambda _i: 0.010) == [3] * 10


def test_batches_over_the_frame_budget_are_each_checkpointed(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(dbmod, "CHECKPOINT_FRAMES", 1)
    assert checkpointed_batches(tmp_path, 12, 3) == [1, 2, 3, 4]



def test_the_wal_stays_near_checkpoint_frames_however_many_batches_run(tmp_path: Path,
                                                                       monkeypatch):
    """After a checkpoint that copied the whole WAL the next batch writes it from its first
    frame again: the frames it then holds are all new (counting them as the growth since the
    last checkpoint let the WAL grow to ten times CHECKPOINT_FRAMES)."""
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(dbmod, "CHECKPOINT_FRAMES", 50)
    root, con = prod_db(tmp_path)
    tasks(con, 10_000)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    d, plan = open_plan(root, dry_run=False, batch_size=200)
    out = Outcome()
    with d:
        d.apply(plan, out)
        wal = os.path.getsize(root / "data" / "prod" / "architect.db-wal")
    assert out.batches == 50
    assert (wal - 32) // (24 + 4096) <= 2 * 50  # the most frames the WAL ever held


def test_a_wal_a_reader_keeps_from_restarting_is_checkpointed_by_its_growth(tmp_path: Path,
                                                                          monkeypatch):
    monkeypatch.setattr(dbmod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(dbmod, "CHECKPOINT_FRAMES", 12)
    got = checkpointed_batches(tmp_path, 40, 1, reader=True)
    gaps = [b - a for a, b in itertools.pairwise(got)]
    assert got[0] == 1 and len(gaps) >= 3, got
    assert all(2 <= g <= 12 for g in gaps[1:]), got  # a batch writes a few frames


# --- _Run.children_sql: a batch's children found by their rowid range -------------------------


@pytest.mark.parametrize("parent_index", [False, True])
def test_the_children_of_a_batch_are_looked_up_by_the_batchs_rowid_range(tmp_path: Path,
                                                                         parent_index):
    root, con = prod_db(tmp_path)
    if parent_index:
        con.execute("CREATE INDEX idx_parent ON task_queue(parent_id)")
    tasks(con, 5)
    d, plan = open_plan(root, dry_run=False)
    with d:
        r = dbmod._Run(d, plan, Outcome(), 1000)
        (ref,) = r.refs
        sql = r.children_sql(ref)
        steps = query_plan(d.con, f"SELECT count(*) FROM main.task_queue AS _c WHERE {sql}",
                           dict(r.params, lo=0, hi=10))
    if parent_index:
        assert "USING COVERING INDEX idx_parent (parent_id>? AND parent_id<?)" in steps, steps
    else:
        assert "_k.parent BETWEEN :lo AND :hi" in sql
        assert "(parent>? AND parent<?)" in steps, steps


# --- Database._guard, _side_stat: a WAL client that lost its locks ----------------------------


@pytest.mark.parametrize("pinned", [False, True])
def test_a_process_with_the_wal_database_open_but_no_lock_is_reported(tmp_path: Path, pinned):
    import subprocess

    from architect_cleanup.db import DbFile
    from architect_cleanup.dblocks import Holder, LockWatch
    root, con = prod_db(tmp_path)
    tasks(con, 1)  # the -shm is there
    path = root / "data" / "prod" / "architect.db"
    with open(path, "rb") as db, open(f"{path}-shm", "rb") as shm:
        other = subprocess.Popen(["sleep", "60"], pass_fds=(db.fileno(), shm.fileno()))
        # the database without its -shm: not a WAL client, not reported
        reader = subprocess.Popen(["sleep", "61"], pass_fds=(db.fileno(),))
    try:
        watch = LockWatch()
        cfg = config(root)
        f = DbFile("prod", "data/prod/architect.db", str(path))
        with Database(f, cfg.database, dry_run=True, root=cfg.root if pinned else None,
                      locks=watch):
            pass
    finally:
        for p in (other, reader):
            p.kill()
            p.wait()
    assert watch.lost == [Holder("prod", other.pid, "sleep 60", "lost")]


# --- Database.references, _indexed, _primary_key, rowid_alias, find_table, columns ------------

CHILDREN = """
CREATE TABLE c_none (id INTEGER PRIMARY KEY,
                     t INTEGER REFERENCES task_queue(id) ON DELETE SET NULL);
CREATE TABLE c_partial (id INTEGER PRIMARY KEY, t INTEGER REFERENCES task_queue(id));
CREATE INDEX c_partial_t ON c_partial(t) WHERE t IS NOT NULL;
CREATE TABLE c_second (id INTEGER PRIMARY KEY, a TEXT, t INTEGER REFERENCES task_queue(id));
CREATE INDEX c_second_at ON c_second(a, t);
CREATE TABLE c_first (id INTEGER PRIMARY KEY, a TEXT,
                      t INTEGER REFERENCES task_queue ON DELETE CASCADE);
CREATE INDEX c_first_ta ON c_first(t, a);
CREATE TABLE c_pk (t INTEGER PRIMARY KEY REFERENCES task_queue(id) ON DELETE RESTRICT);
CREATE TABLE c_norowid (t INTEGER PRIMARY KEY REFERENCES task_queue(id)) WITHOUT ROWID;
CREATE TABLE c_pair (id INTEGER PRIMARY KEY, x INTEGER, y INTEGER,
                     FOREIGN KEY (y, x) REFERENCES task_queue(parent_id, id));
CREATE TABLE c_bad (id INTEGER PRIMARY KEY, x INTEGER, y INTEGER,
                    FOREIGN KEY (x, y) REFERENCES task_queue);
CREATE TABLE other (id INTEGER PRIMARY KEY, t INTEGER REFERENCES c_none(id));
CREATE TABLE c_both (id INTEGER PRIMARY KEY, t INTEGER REFERENCES task_queue(id));
CREATE INDEX c_both_full ON c_both(t);
CREATE INDEX c_both_part ON c_both(t) WHERE t > 0;
CREATE TABLE c_mixed (id INTEGER PRIMARY KEY, x INTEGER, y INTEGER,
                      t INTEGER REFERENCES task_queue(id) ON DELETE SET NULL,
                      u INTEGER REFERENCES task_queue(id),
                      FOREIGN KEY (x, y) REFERENCES task_queue);
"""


def test_each_reference_to_a_table_is_found_with_its_action_and_index(tmp_path: Path,
                                                                     caplog):
    import logging

    from architect_cleanup.db import Reference
    root, con = prod_db(tmp_path)
    con.executescript(CHILDREN)
    with open_file(root / "data" / "prod" / "architect.db", dry_run=True) as d:
        with caplog.at_level(logging.WARNING, logger="architect_cleanup.db"):
            found = d.references("task_queue")
        assert caplog.messages == [
            "prod: foreign key c_bad(x, y) -> task_queue does not match a key; ignored",
            "prod: foreign key c_mixed(x, y) -> task_queue does not match a key; ignored"]
        assert d.find_table(["nothing", "TASK_QUEUE", "c_none"]) == "task_queue"
        assert d.find_table(["nothing"]) is None
        assert d.columns("C_Pair") == {"id": "id", "x": "x", "y": "y"}
        assert (d.rowid_alias("task_queue"), d.rowid_alias("c_norowid")) == ("id", None)
        assert d.rowid_alias("c_pair") == "id" and d.has_rowid("c_pair")
    # (the composite key without columns comes first, and is ignored: the others still count)
    assert [r for r in found if r.child == "c_mixed"] == [
        Reference("c_mixed", ("u",), ("id",), "NO ACTION", False, True),
        Reference("c_mixed", ("t",), ("id",), "SET NULL", False, True)]
    refs = {r.child: r for r in found if r.child != "c_mixed"}
    assert refs == {
        "c_both": Reference("c_both", ("t",), ("id",), "NO ACTION", True, True),
        "task_queue": Reference("task_queue", ("parent_id",), ("id",), "SET NULL", False, True),
        "c_none": Reference("c_none", ("t",), ("id",), "SET NULL", False, True),
        "c_partial": Reference("c_partial", ("t",), ("id",), "NO ACTION", False, True),
        "c_second": Reference("c_second", ("t",), ("id",), "NO ACTION", False, True),
        "c_first": Reference("c_first", ("t",), ("id",), "CASCADE", True, True),
        "c_pk": Reference("c_pk", ("t",), ("id",), "RESTRICT", True, True),
        "c_norowid": Reference("c_norowid", ("t",), ("id",), "NO ACTION", True, False),
        "c_pair": Reference("c_pair", ("y", "x"), ("parent_id", "id"), "NO ACTION", False,
                            True),
    }
    assert refs["c_pk"].describe() == "c_pk(t) ON DELETE RESTRICT"
    assert refs["c_pair"].describe() == "c_pair(y, x) ON DELETE NO ACTION"
    assert [(r.protects, r.clears) for r in (refs["c_none"], refs["c_partial"], refs["c_pk"],
                                             refs["c_first"])] == [
        (False, True), (True, False), (True, False), (False, False)]


# --- find_databases: each file once, labelled so that labels stay unique ----------------------


def test_a_database_named_twice_is_found_once_and_same_stems_are_told_apart(tmp_path: Path):
    root = tmp_path / "srv"
    for rel in ("data/prod/architect.db", "data/x/app.db", "data/y/app.db",
                "data/assigner/assigner.db"):
        make_db(root / rel, "").close()
    cfg = config(root, database={"paths": [
        "data/{env}/architect.db", "data/prod/architect.db", "data/x/app.db", "data/*/app.db",
        "data//assigner/./assigner.db", "data/assigner/assigner.db"]})
    files, notes = find_databases(cfg)
    assert [(f.label, f.rel, f.path) for f in files] == [
        ("prod", "data/prod/architect.db", str(root / "data/prod/architect.db")),
        ("data/x/app.db", "data/x/app.db", str(root / "data/x/app.db")),
        ("data/y/app.db", "data/y/app.db", str(root / "data/y/app.db")),
        ("assigner", "data/assigner/assigner.db", str(root / "data/assigner/assigner.db"))]
    assert notes == ["data/qa/architect.db: does not exist (skipped)"]


# --- _Run._choose_mode, _Scratch: who applies the ON DELETE actions ---------------------------

SLOW = ("SQLite scans that table for every deleted row; this can be very slow (an index on the "
        "referencing column fixes it)")


@pytest.mark.parametrize(("schema", "emulate", "note"), [
    ("", True, None),
    ("CREATE INDEX i ON task_queue(parent_id);", False, None),
    ("CREATE TABLE c_pk (t INTEGER PRIMARY KEY REFERENCES task_queue(id)) WITHOUT ROWID;",
     True, None),   # an indexed child without rowid: its action is applied here too
    ("CREATE TABLE c (id INTEGER PRIMARY KEY, t INTEGER REFERENCES task_queue(id) "
     "ON DELETE CASCADE); CREATE INDEX c_t ON c(t);", False,
     "task_queue: no index on task_queue(parent_id) ON DELETE SET NULL: " + SLOW),
    ("CREATE TABLE c (k TEXT PRIMARY KEY, t INTEGER REFERENCES task_queue(id) "
     "ON DELETE SET NULL) WITHOUT ROWID;", False,
     "task_queue: no index on task_queue(parent_id) ON DELETE SET NULL, c(t) ON DELETE SET "
     "NULL: " + SLOW),
    ("CREATE TABLE c (id INTEGER PRIMARY KEY, x INTEGER, y INTEGER, FOREIGN KEY (x, y) "
     "REFERENCES task_queue(id, parent_id) ON DELETE SET NULL);", False,
     "task_queue: no index on task_queue(parent_id) ON DELETE SET NULL, c(x, y) ON DELETE SET "
     "NULL: " + SLOW),
])
def test_the_actions_are_applied_here_only_when_every_reference_allows_it(
        tmp_path: Path, schema, emulate, note):
    root, con = prod_db(tmp_path)
    con.executescript(schema)
    d, plan = open_plan(root, dry_run=False)
    out = Outcome()
    with d:
        r = dbmod._Run(d, plan, out, 10)
    assert r.emulate is emulate
    assert out.notes == ([] if note is None else [note])
    assert bool(r.maps) is emulate


def test_a_dry_run_with_a_map_of_the_children_stays_query_only(tmp_path: Path):
    root, con = prod_db(tmp_path)
    parents = tasks(con, 4)
    tasks(con, 1, status="pending", parent_id=parents[0])
    d, plan = open_plan(root, dry_run=True)
    out = Outcome()
    with d:
        d.apply(plan, out)
        assert (out.changed, out.cleared) == (4, 1)
        assert d.con.execute("PRAGMA query_only").fetchone() == (1,)
    assert len(ids(con, "task_queue")) == 5


# --- sql_timestamp, in_list ------------------------------------------------------------------


def test_a_timestamp_is_written_as_sqlites_current_timestamp_in_the_configured_zone(
        monkeypatch):
    from architect_cleanup.db import sql_timestamp
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert sql_timestamp(NOW) == "2026-03-01 12:00:00"
        assert sql_timestamp(NOW, "utc") == "2026-03-01 12:00:00"
        assert sql_timestamp(NOW, "local") == "2026-03-01 07:00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_list_of_values_becomes_named_parameters():
    from architect_cleanup.db import in_list
    assert in_list("_t.status", ["a", "b'c"], "s") == (
        "_t.status IN (:s0, :s1)", {"s0": "a", "s1": "b'c"})


# --- Database._pin, _guard: a file gone, a file held exclusively -----------------------------


def test_a_database_gone_before_its_open_says_it_does_not_exist_any_more(tmp_path: Path):
    from architect_cleanup.db import DbFile
    root = tmp_path / "srv"
    (root / "data" / "prod").mkdir(parents=True)
    f = DbFile("prod", "data/prod/architect.db", str(root / "data" / "prod" / "architect.db"))
    with pytest.raises(DbError, match=r"^does not exist \(any more\)$"):
        Database(f, config(root).database, dry_run=True, root=str(root))


def test_a_database_held_exclusively_past_busy_timeout_is_not_opened(tmp_path: Path):
    from datetime import timedelta

    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import DbFile
    root, con = prod_db(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY);")
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    path = root / "data" / "prod" / "architect.db"
    # another process (in this one SQLite would keep our closed connection's descriptor
    # open until the holder's lock goes, so as not to drop it)
    with held_by("import sqlite3, sys, time\n"
                 f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
                 "c.execute('PRAGMA locking_mode = EXCLUSIVE')\n"
                 "c.execute('INSERT INTO t DEFAULT VALUES')\n"  # keeps the EXCLUSIVE lock
                 "print('held', flush=True); time.sleep(30)"):
        f = DbFile("prod", "data/prod/architect.db", str(path))
        cfg = DatabaseConfig(busy_timeout=timedelta(seconds=0.05))
        fds = set(os.listdir("/proc/self/fd"))
        with pytest.raises(DbError, match=r"^database is locked: another connection held it "
                                          r"longer than busy_timeout$"):
            Database(f, cfg, dry_run=True, root=str(root))
        assert set(os.listdir("/proc/self/fd")) <= fds  # SQLite's, the guard's, the dir's


# --- _Run with set_sql: archiving keeps the rows and ignores references ----------------------

ITEMS = """
CREATE TABLE items (id INTEGER PRIMARY KEY, status TEXT, done_at TEXT,
                    archived INTEGER NOT NULL DEFAULT 0);
CREATE TABLE pins (id INTEGER PRIMARY KEY, item INTEGER REFERENCES items(id) ON DELETE RESTRICT);
"""


@pytest.mark.parametrize("dry_run", [True, False])
def test_archiving_updates_old_rows_in_place_and_a_reference_does_not_protect_them(
        tmp_path: Path, dry_run):
    from architect_cleanup.db import cutoff
    path = tmp_path / "a.db"
    con = make_db(path, ITEMS)
    old = insert(con, "items", [{"status": "done", "done_at": text(ago(30))}] * 5)
    insert(con, "items", [{"status": "done", "done_at": text(ago(1))}] * 2
           + [{"status": "open", "done_at": text(ago(30))}])
    insert(con, "pins", [{"item": old[0]}])
    plan = Plan("items", "_t.archived = 0 AND _t.status = 'done'", epoch_sql("_t.done_at"),
                cutoff(NOW, dbmod.timedelta(days=7)), set_sql="archived = 1")
    out = Outcome()
    with open_file(path, dry_run=dry_run) as d:
        d.apply(plan, out, batch_size=2)
    assert (out.checked, out.kept, out.changed, out.skipped, out.batches) == (8, 2, 5, 0, 3)
    assert ids(con, "items", "archived = 1") == (set() if dry_run else set(old))
    assert len(ids(con, "items")) == 8


def test_any_other_error_inside_a_batch_rolls_it_back_and_is_raised_as_it_is(tmp_path: Path):
    path = tmp_path / "a.db"
    con = make_db(path)
    tasks(con, 5)
    con.execute("CREATE TRIGGER huge BEFORE DELETE ON task_queue "
                "BEGIN SELECT length(zeroblob(2000000000)); END")   # SQLITE_TOOBIG
    out = Outcome()
    with open_file(path, dry_run=False) as d:
        with pytest.raises(sqlite3.DataError):
            d.apply(task_plan(path), out, batch_size=2)
        assert not d.con.in_transaction
    assert (out.changed, out.batches) == (0, 0)
    assert len(ids(con, "task_queue")) == 5


# --- _Run.execute: a dry run reads the children added since its last batch --------------------


def test_a_dry_run_counts_a_child_added_during_it_among_the_references_cleared(
        tmp_path: Path):
    root, con = prod_db(tmp_path)
    parents = tasks(con, 40)
    d, plan = open_plan(root, dry_run=True, batch_size=10)
    out = Outcome()

    def progress(o: Outcome) -> None:
        if o.batches == 1:   # the dashboard adds a child of a parent in a later batch
            tasks(con, 1, status="pending", parent_id=parents[-1])

    with d:
        d.apply(plan, out, progress=progress)
    assert (out.changed, out.cleared, out.batches) == (40, 1, 4)


def test_an_exclusive_lock_released_within_busy_timeout_is_waited_for(tmp_path: Path):
    con = make_db(tmp_path / "a.db", "CREATE TABLE t (id INTEGER PRIMARY KEY);")
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    locked = threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(0.05)
        holder.execute("ROLLBACK")
        holder.close()

    th = threading.Thread(target=hold)
    th.start()
    locked.wait()
    try:
        with open_file(tmp_path / "a.db", dry_run=True, busy=5) as d:
            assert d.con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        th.join()


# --- _Run._clear: the references it clears here add up ---------------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
def test_rows_cleared_through_two_references_in_one_batch_add_up(tmp_path: Path, dry_run):
    root, con = prod_db(tmp_path)
    con.executescript("CREATE TABLE notes (id INTEGER PRIMARY KEY, "
                      "t INTEGER REFERENCES task_queue(id) ON DELETE SET NULL);")
    parents = tasks(con, 4)
    tasks(con, 1, status="pending", parent_id=parents[0])  # task_queue's own reference
    con.executemany("INSERT INTO notes (t) VALUES (?)", [(parents[1],), (parents[2],)])
    d, plan = open_plan(root, dry_run=dry_run)
    out = Outcome()
    with d:
        run = dbmod._Run(d, plan, out, 10)
        assert run.emulate  # every reference's action applied here, in one batch
        d.apply(plan, out)
    assert (out.changed, out.cleared) == (4, 3)
    assert con.execute("SELECT count(*) FROM notes WHERE t IS NULL").fetchone()[0] == (
        0 if dry_run else 2)


# --- Database._side_stat: a side file is what is there, a symlink too ------------------------


@pytest.mark.parametrize("pinned", [True, False])
def test_a_dangling_symlink_named_like_a_side_file_makes_the_side_files_not_ours(
        tmp_path: Path, pinned: bool):
    """The -wal/-shm are ours to let SQLite remove only when neither was there: a symlink
    (dangling here) named like one is there, and is not followed to decide it."""
    from architect_cleanup.db import DbFile
    root, con = prod_db(tmp_path)
    con.execute("PRAGMA journal_mode = DELETE")
    con.close()
    path = root / "data" / "prod" / "architect.db"
    os.symlink(tmp_path / "nowhere", f"{path}-wal")
    cfg = config(root)
    f = DbFile("prod", "data/prod/architect.db", str(path))
    with Database(f, cfg.database, dry_run=True, root=cfg.root if pinned else None) as d:
        assert d._sides_ours is False
    assert os.path.islink(f"{path}-wal") and not (tmp_path / "nowhere").exists()
