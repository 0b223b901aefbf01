"""Faults in the database purge that no unit test caught (issue 24): a row whose finish time is
exactly the cutoff. ``max_age`` means "older than": that row stays, in every spelling of the
time the dashboard may have written, and a row one second older goes."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from dbkit import (
    DAY,
    NOW,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    ids,
    insert,
    make_db,
    run,
    text,
)
from test_dbfile import open_dir  # noqa: F401  (fixture)

from architect_cleanup.db import cutoff, epoch_sql, glob_below

SECOND = timedelta(seconds=1)
CUTOFF = NOW - 7 * DAY


def task(completed: object) -> dict[str, object]:
    return {"task_type": "t", "status": "completed", "created_at": text(NOW - 400 * DAY),
            "completed_at": completed}


SPELLINGS = {
    "text": text,
    "iso with T and Z": lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "with an offset": lambda t: (t + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S+05:00"),
    "offset without a colon": lambda t: (t - timedelta(hours=5)).strftime(
        "%Y-%m-%d %H:%M:%S-0500"),
    "epoch integer": lambda t: int(t.timestamp()),
    "epoch real": lambda t: float(t.timestamp()),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_row_finished_exactly_at_the_cutoff_is_kept_and_one_a_second_older_goes(
        tmp_path: Path, spelling: str, dry_run: bool) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    spell = SPELLINGS[spelling]
    (at,) = insert(con, "task_queue", [task(spell(CUTOFF))])
    (older,) = insert(con, "task_queue", [task(spell(CUTOFF - SECOND))])
    (newer,) = insert(con, "task_queue", [task(spell(CUTOFF + SECOND))])
    stats = run(config(root), tmp_path, dry_run=dry_run)
    assert stats.tasks_deleted == 1
    assert ids(con, "task_queue") == ({at, newer} if not dry_run else {at, older, newer})
    assert stats.targets["tasks"].kept == 2


def test_the_cutoff_is_now_minus_max_age() -> None:
    assert cutoff(NOW, timedelta(days=7)) == (NOW - 7 * DAY).timestamp()


def test_a_timestamp_reads_as_the_same_epoch_second_in_every_spelling(tmp_path: Path) -> None:
    con = make_db(tmp_path / "x.db")
    expected = CUTOFF.timestamp()
    for name, spell in SPELLINGS.items():
        (value,) = con.execute(f"SELECT {epoch_sql(':v')}", {"v": spell(CUTOFF)}).fetchone()
        assert value == pytest.approx(expected, abs=1e-3), name
    for undated in (None, "", "yesterday", 0, -5, b"blob"):
        assert con.execute(f"SELECT {epoch_sql(':v')}", {"v": undated}).fetchone() == (None,)


# --- finding databases -----------------------------------------------------------------------


def test_a_glob_goes_on_past_a_match_it_may_not_enter(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    (tmp_path / "victim").mkdir()
    (root / "data").mkdir(parents=True)
    (root / "data" / "a").symlink_to(tmp_path / "victim")  # listed first, refused
    touch_file = root / "data" / "aa"
    touch_file.write_bytes(b"a file where a directory is expected")
    for env in ("b", "c"):
        make_db(root / "data" / env / "architect.db").close()
    assert glob_below(str(root), "data/*/architect.db") == [
        "data/b/architect.db", "data/c/architect.db"]


def test_a_glob_pattern_is_read_below_the_root_whatever_its_slashes(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    make_db(root / "data" / "prod" / "architect.db").close()
    assert glob_below(str(root), "/data/*/architect.db") == ["data/prod/architect.db"]
    assert glob_below(str(root), "./data//prod/*.db") == ["data/prod/architect.db"]
    assert glob_below(str(root), ".") == []
    assert glob_below(str(tmp_path / "missing"), "data/*.db") == []


def test_a_glob_lists_a_symlink_named_like_a_database_by_its_own_name(tmp_path: Path) -> None:
    """Listed, not followed: the open refuses it later (dbfile.py)."""
    root = tmp_path / "srv"
    (root / "data").mkdir(parents=True)
    (root / "data" / "x.db").symlink_to(tmp_path / "nowhere.db")
    assert glob_below(str(root), "data/*.db") == ["data/x.db"]


# --- foreign keys to other keys than the rowid -----------------------------------------------

BY_NAME = """
CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT UNIQUE, task_type TEXT, status TEXT,
                    completed_at TEXT, a INTEGER, b INTEGER, UNIQUE (a, b));
CREATE TABLE notes (id INTEGER PRIMARY KEY,
                    task_name TEXT REFERENCES tasks(name) ON DELETE SET NULL);
CREATE TABLE pins (id INTEGER PRIMARY KEY, x INTEGER, y INTEGER,
                   FOREIGN KEY (x, y) REFERENCES tasks(a, b) ON DELETE RESTRICT);
CREATE INDEX pins_xy ON pins(x, y);
CREATE TABLE links (id INTEGER PRIMARY KEY, p INTEGER, q INTEGER,
                    FOREIGN KEY (p, q) REFERENCES tasks(a, b) ON DELETE SET NULL);
CREATE INDEX links_pq ON links(p, q);
"""


@pytest.mark.parametrize("indexed", [False, True])
def test_references_to_a_unique_column_are_cleared_and_composite_ones_protect(
        tmp_path: Path, indexed: bool) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", BY_NAME)
    if indexed:
        con.execute("CREATE INDEX notes_task ON notes(task_name)")
    old = text(NOW - 30 * DAY)
    new = text(NOW - DAY)
    tasks = insert(con, "tasks", [
        {"name": f"t{i}", "task_type": "t", "status": "completed",
         "completed_at": old if i < 6 else new, "a": i, "b": i * 10} for i in range(8)])
    notes = insert(con, "notes", [{"task_name": f"t{i}"} for i in (0, 1, 5, 6, 7)])
    insert(con, "pins", [{"x": 3, "y": 30}, {"x": 3, "y": 30}])  # pins t3 only
    links = insert(con, "links", [{"p": 1, "q": 10}, {"p": 7, "q": 70}])
    cfg = config(root, database={"batch_size": 2})
    dry = run(cfg, tmp_path, dry_run=True)
    real = run(cfg, tmp_path, dry_run=False)
    for stats in (dry, real):
        t = stats.targets["tasks"]
        assert (stats.tasks_deleted, t.skipped) == (5, 1)
        assert t.detail["prod"]["references_cleared"] == 4
        assert t.errors == []
    assert ids(con, "tasks") == {tasks[3], tasks[6], tasks[7]}
    assert dict(con.execute("SELECT id, task_name FROM notes").fetchall()) == {
        notes[0]: None, notes[1]: None, notes[2]: None, notes[3]: "t6", notes[4]: "t7"}
    assert con.execute("SELECT id, p, q FROM links").fetchall() == [
        (links[0], None, None), (links[1], 7, 70)]
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


# --- opened as the owner ---------------------------------------------------------------------


def test_a_database_its_owner_cannot_open_says_it_was_opened_as_the_owner(
        tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    root = tmp_path / "srv"
    db = root / "data" / "prod" / "architect.db"
    make_db(db).close()
    os.chown(db, 4321, 4321)  # the owner may write the file, not create its -wal beside it
    (db.parent).chmod(0o755)
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.status == "failed"
    assert t.errors == [
        "data/prod/architect.db: cannot open it: unable to open database file (opened as its "
        "owner, uid 4321, as the dashboard would: may that user reach and write it?)"]


# --- the tasks target's plan -----------------------------------------------------------------


def test_a_task_table_without_a_finish_time_is_skipped_with_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE Task_Queue (id INTEGER PRIMARY KEY, Status TEXT);")
    insert(con, "Task_Queue", [{"Status": "completed"}])
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.status == "ok" and stats.tasks_deleted == 0
    assert ("prod: Task_Queue has none of the columns completed_at, updated_at, created_at; "
            "skipped") in t.notes


def test_the_finish_time_is_completed_at_before_updated_at_before_created_at(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE tasks (id INTEGER PRIMARY KEY, STATUS TEXT, created_at TEXT, "
                  "Updated_At TEXT, COMPLETED_AT TEXT);")
    old, new = text(NOW - 30 * DAY), text(NOW - DAY)
    (gone,) = insert(con, "tasks", [{"STATUS": "failed", "created_at": new, "Updated_At": new,
                                     "COMPLETED_AT": old}])
    kept = insert(con, "tasks", [
        {"STATUS": "failed", "created_at": old, "Updated_At": old, "COMPLETED_AT": new},
        {"STATUS": "running", "created_at": old, "Updated_At": old, "COMPLETED_AT": old}])
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert ids(con, "tasks") == set(kept) and gone not in ids(con, "tasks")
    assert (t.detail["prod"]["table"], t.detail["prod"]["time"]) == ("tasks", "COMPLETED_AT")


def test_without_a_root_an_open_that_fails_raises_sqlites_own_error(tmp_path: Path) -> None:
    """Database(root=None) opens the path as given (no owner to act as): its errors stay
    SQLite's."""
    import sqlite3

    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import Database, DbError, DbFile

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        Database(DbFile("x", "garbage.db", str(garbage)), DatabaseConfig(), dry_run=True)
    missing = tmp_path / "no" / "such.db"  # the guard's own open says so first (dblocks.py)
    with pytest.raises(DbError, match="cannot open it: No such file or directory"):
        Database(DbFile("y", "no/such.db", str(missing)), DatabaseConfig(), dry_run=True)


# --- messages --------------------------------------------------------------------------------


@pytest.mark.parametrize("error, text", [
    ("file is not a database",
     "cannot read it: file is not a database (corrupt, or not a SQLite database)"),
    ("database disk image is malformed",
     "cannot read it: database disk image is malformed (corrupt, or not a SQLite database)"),
    ("attempt to write a readonly database",
     "attempt to write a readonly database (outside the service's writable paths? add it "
     "with `systemctl edit architect-cleanup.service` (ReadWritePaths=))"),
    ("disk is read-only",
     "disk is read-only (outside the service's writable paths? add it with `systemctl edit "
     "architect-cleanup.service` (ReadWritePaths=))"),
    ("unable to open database file", "cannot open it: unable to open database file"),
    ("database is locked",
     "database is locked: another connection held it longer than busy_timeout"),
    ("database table is busy",
     "database table is busy: another connection held it longer than busy_timeout"),
    ("no such table: x", "no such table: x"),
])
def test_a_database_error_is_described_in_plain_words(error: str, text: str) -> None:
    import sqlite3

    from architect_cleanup.db import describe
    assert describe(sqlite3.OperationalError(error)) == text


@pytest.mark.parametrize("error", ["database is locked", "database table is busy"])
@pytest.mark.parametrize("archive", [False, True])
def test_a_lock_held_too_long_says_how_much_was_done_before(error: str, archive: bool) -> None:
    import sqlite3

    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import Outcome, Plan, locked_message

    plan = Plan("t", "1", "0", 0.0, set_sql="archived = 1" if archive else None,
                what="finished tasks")
    out = Outcome(changed=12345)
    cfg = DatabaseConfig(busy_timeout=timedelta(seconds=5))
    assert locked_message(sqlite3.OperationalError(error), cfg, out, plan) == (
        "database is locked: another connection held its write lock longer than "
        f"busy_timeout (5s); 12,345 finished tasks {'archived' if archive else 'deleted'} "
        "before that")
    assert locked_message(sqlite3.OperationalError("disk I/O error"), cfg, out, plan) == (
        "disk I/O error")


def test_an_activity_row_is_inserted_in_its_own_transaction(tmp_path: Path) -> None:
    import sqlite3

    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import Database, DbError, DbFile

    path = tmp_path / "a.db"
    con = make_db(path, 'CREATE TABLE "act log" (id INTEGER PRIMARY KEY, "the user" TEXT '
                        "NOT NULL, n INTEGER);")
    f = DbFile("a", "a.db", str(path))
    with Database(f, DatabaseConfig(), dry_run=True) as dry, \
            pytest.raises(DbError, match=r"^a dry run's connection does not write$"):
        dry.insert("act log", {"the user": "x", "n": 1})
    with Database(f, DatabaseConfig(), dry_run=False) as db:
        db.insert("act log", {"the user": "api-token", "n": 7})
        with pytest.raises(sqlite3.IntegrityError):
            db.insert("act log", {"the user": None, "n": 8})
        assert not db.con.in_transaction
    assert con.execute('SELECT "the user", n FROM "act log"').fetchall() == [("api-token", 7)]


def test_an_unindexed_reference_to_a_unique_column_is_cleared_through_the_map(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT UNIQUE, task_type TEXT,
                            status TEXT, completed_at TEXT);
        CREATE TABLE notes (id INTEGER PRIMARY KEY,
                            task_name TEXT REFERENCES tasks(name) ON DELETE SET NULL);""")
    old, new = text(NOW - 30 * DAY), text(NOW - DAY)
    insert(con, "tasks", [{"name": f"t{i}", "task_type": "t", "status": "completed",
                           "completed_at": old if i < 4 else new} for i in range(6)])
    notes = insert(con, "notes", [{"task_name": f"t{i}"} for i in (0, 3, 4, 5)])
    cfg = config(root, database={"batch_size": 3})
    dry = run(cfg, tmp_path, dry_run=True)
    real = run(cfg, tmp_path, dry_run=False)
    for stats in (dry, real):
        assert stats.tasks_deleted == 4
        assert stats.targets["tasks"].detail["prod"]["references_cleared"] == 2
    assert dict(con.execute("SELECT id, task_name FROM notes").fetchall()) == {
        notes[0]: None, notes[1]: None, notes[2]: "t4", notes[3]: "t5"}
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_an_unindexed_reference_from_an_empty_table_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT UNIQUE, task_type TEXT,
                            status TEXT, completed_at TEXT);
        CREATE TABLE notes (id INTEGER PRIMARY KEY,
                            task_name TEXT REFERENCES tasks(name) ON DELETE SET NULL);""")
    insert(con, "tasks", [{"name": f"t{i}", "task_type": "t", "status": "completed",
                           "completed_at": text(NOW - 30 * DAY)} for i in range(5)])
    cfg = config(root, database={"batch_size": 2})
    for dry_run in (True, False):
        stats = run(cfg, tmp_path, dry_run=dry_run)
        assert stats.targets["tasks"].status == "ok"
        assert stats.tasks_deleted == 5
        assert stats.targets["tasks"].detail["prod"].get("references_cleared", 0) == 0
    assert ids(con, "tasks") == set()


# --- _Run.children_sql: references that are not the rowid alone ------------------------------


def test_references_to_a_table_without_a_rowid_alias_are_cleared(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE tasks (name TEXT PRIMARY KEY, status TEXT, completed_at TEXT);
        CREATE TABLE notes (id INTEGER PRIMARY KEY,
                            task_name TEXT REFERENCES tasks(name) ON DELETE SET NULL);
        CREATE INDEX notes_task ON notes(task_name);""")
    old, new = text(NOW - 30 * DAY), text(NOW - DAY)
    insert(con, "tasks", [{"name": f"t{i}", "status": "completed",
                           "completed_at": old if i < 3 else new} for i in range(5)])
    notes = insert(con, "notes", [{"task_name": f"t{i}"} for i in (0, 2, 3)])
    for dry_run in (True, False):
        stats = run(config(root), tmp_path, dry_run=dry_run)
        assert stats.tasks_deleted == 3
        assert stats.targets["tasks"].detail["prod"]["references_cleared"] == 2
    assert dict(con.execute("SELECT id, task_name FROM notes").fetchall()) == {
        notes[0]: None, notes[1]: None, notes[2]: "t3"}
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_composite_reference_starting_with_the_rowid_clears_only_rows_matching_both(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, b INTEGER, status TEXT, completed_at TEXT,
                            UNIQUE (id, b));
        CREATE TABLE links (id INTEGER PRIMARY KEY, x INTEGER, y INTEGER,
                            FOREIGN KEY (x, y) REFERENCES tasks(id, b) ON DELETE SET NULL);
        CREATE INDEX links_xy ON links(x, y);""")
    old = text(NOW - 30 * DAY)
    tasks = insert(con, "tasks", [{"b": 10 * i, "status": "completed", "completed_at": old}
                                  for i in range(1, 4)])
    # the second link names task 1's id with another b: it refers to no task at all
    links = insert(con, "links", [{"x": tasks[0], "y": 10}, {"x": tasks[0], "y": 99}])
    stats = run(config(root), tmp_path, dry_run=False)
    assert stats.tasks_deleted == 3
    assert stats.targets["tasks"].detail["prod"]["references_cleared"] == 1
    assert con.execute("SELECT id, x, y FROM links").fetchall() == [
        (links[0], None, None), (links[1], tasks[0], 99)]


@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("child_type", ["TEXT", ""])
def test_a_reference_to_the_rowid_kept_as_text_is_cleared_like_a_number(
        tmp_path: Path, child_type: str, indexed: bool) -> None:
    """SQLite finds the parent of '10' in a TEXT (or untyped) column as row 10; compared with
    a batch's rowid range as text, '10' sorts before 9 and stayed behind, dangling."""
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", f"""
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT, completed_at TEXT);
        CREATE TABLE notes (id INTEGER PRIMARY KEY,
                            task_id {child_type} REFERENCES tasks(id) ON DELETE SET NULL);""")
    if indexed:
        con.execute("CREATE INDEX notes_task ON notes(task_id)")
    tasks = insert(con, "tasks", [{"status": "completed", "completed_at": text(NOW - 30 * DAY)}
                                  for _ in range(12)])
    insert(con, "notes", [{"task_id": str(tasks[i])} for i in (4, 9, 11)])
    cfg = config(root, database={"batch_size": 5})
    for dry_run in (True, False):
        stats = run(cfg, tmp_path, dry_run=dry_run)
        assert stats.tasks_deleted == 12
        assert stats.targets["tasks"].detail["prod"]["references_cleared"] == 3
    assert con.execute("SELECT task_id FROM notes").fetchall() == [(None,)] * 3
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


# --- _Run._clear, _Run._batch: the emulated ON DELETE actions ---------------------------------

RESULTS_FIRST = """
CREATE TABLE results (id INTEGER PRIMARY KEY,
                      task_id INTEGER REFERENCES tasks(id) ON DELETE RESTRICT);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT, completed_at TEXT,
                    parent_id INTEGER REFERENCES tasks(id) ON DELETE SET NULL);
"""


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_reference_that_clears_after_one_that_protects_is_still_cleared(
        tmp_path: Path, dry_run: bool) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", RESULTS_FIRST)
    old = text(NOW - 30 * DAY)
    parents = insert(con, "tasks", [{"status": "completed", "completed_at": old}] * 3)
    (kid,) = insert(con, "tasks", [{"status": "running", "parent_id": parents[0]}])
    insert(con, "results", [{"task_id": parents[2]}])
    stats = run(config(root), tmp_path, dry_run=dry_run)
    t = stats.targets["tasks"]
    assert (stats.tasks_deleted, t.skipped, t.detail["prod"]["references_cleared"]) == (2, 1, 1)
    if not dry_run:
        assert ids(con, "tasks") == {parents[2], kid}
        assert con.execute("SELECT parent_id FROM tasks WHERE id = ?", (kid,)).fetchone() == (
            None,)
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.parametrize("indexed", [False, True])
def test_foreign_keys_are_off_only_around_the_batches_whose_actions_are_applied_here(
        tmp_path: Path, indexed: bool) -> None:
    from architect_cleanup.db import Database, Outcome, Plan, find_databases
    from architect_cleanup.targets.base import RunContext
    from architect_cleanup.targets.tasks import Tasks
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    if indexed:
        con.execute("CREATE INDEX idx_parent ON task_queue(parent_id)")
    insert(con, "task_queue", [{"task_type": "t", "status": "completed",
                                "completed_at": text(NOW - 30 * DAY)}] * 4)
    cfg = config(root, database={"batch_size": 2})
    d = Database(find_databases(cfg)[0][0], cfg.database, dry_run=False, root=cfg.root)
    plan = Tasks().plan(RunContext(config=cfg, now=NOW, dry_run=False), d)
    assert isinstance(plan, Plan)
    trace: list[str] = []
    d.con.set_trace_callback(trace.append)
    with d:
        d.apply(plan, Outcome())
    txns = [s for s in trace if s in ("BEGIN IMMEDIATE", "COMMIT") or "foreign_keys" in s]
    one = ["BEGIN IMMEDIATE", "COMMIT"]
    if not indexed:
        one = ["PRAGMA foreign_keys = OFF", *one, "PRAGMA foreign_keys = ON"]
    assert txns == one * 2


# --- glob_below: hidden names and the order ---------------------------------------------------


def test_a_glob_skips_hidden_names_unless_its_pattern_starts_with_a_dot(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    for rel in ("data/b.db", "data/a.db", "data/.old.db", "data/.cache/c.db", "data/sub/c.db"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    assert glob_below(str(root), "data/*.db") == ["data/a.db", "data/b.db"]
    assert glob_below(str(root), "data/.*.db") == ["data/.old.db"]
    assert glob_below(str(root), "data/*/c.db") == ["data/sub/c.db"]
    assert glob_below(str(root), "data/.*/c.db") == ["data/.cache/c.db"]
    assert glob_below(str(root), "data/sub/c.db") == ["data/sub/c.db"]
    assert glob_below(str(root), "data/none/c.db") == []


# --- Database._guard: a FIFO named like a database (no root to pin it) -----------------------


def test_a_fifo_named_like_a_database_fails_its_open_without_waiting_for_a_writer(
        tmp_path: Path) -> None:
    import sqlite3

    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import Database, DbFile
    fifo = tmp_path / "f.db"
    os.mkfifo(fifo)
    with pytest.raises(sqlite3.OperationalError):  # the guard's open does not block on it
        Database(DbFile("f", "f.db", str(fifo)), DatabaseConfig(), dry_run=True)


# --- _Run.__init__: several references of the same kind ---------------------------------------

TWO_UNINDEXED = """
CREATE TABLE task_results (id INTEGER PRIMARY KEY,
    task_id INTEGER REFERENCES task_queue(id) ON DELETE SET NULL);
"""


@pytest.mark.parametrize("dry_run", [True, False])
def test_two_unindexed_references_each_keep_their_own_map(tmp_path: Path, dry_run: bool) -> None:
    """task_queue.parent_id and task_results.task_id have no index: each gets a TEMP map of its
    own. Their child rowids overlap (1..6 in both tables) and point at different tasks: one
    shared map would mix them up and leave some references dangling."""
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    con.executescript(TWO_UNINDEXED)
    old = insert(con, "task_queue", [task(text(NOW - 30 * DAY))] * 3)           # ids 1..3
    young = insert(con, "task_queue", [{"task_type": "t", "status": "pending"}] * 3)  # 4..6
    # results 1..6: the odd ones refer to a young task, the even ones to an old one
    insert(con, "task_results", [{"task_id": (old if i % 2 else young)[i // 2]}
                                 for i in range(6)])
    # the young tasks' parents: old ones (cleared); results 4..6 (same rowids) refer elsewhere
    for kid, parent in zip(young, old, strict=True):
        con.execute("UPDATE task_queue SET parent_id = ? WHERE id = ?", (parent, kid))
    stats = run(config(root, database={"batch_size": 2}), tmp_path, dry_run=dry_run)
    t = stats.targets["tasks"]
    assert (stats.tasks_deleted, t.detail["prod"]["references_cleared"]) == (3, 3 + 3)
    if not dry_run:
        assert ids(con, "task_queue") == set(young)
        assert con.execute("SELECT parent_id FROM task_queue").fetchall() == [(None,)] * 3
        assert con.execute("SELECT id, task_id FROM task_results").fetchall() == [
            (1, young[0]), (2, None), (3, young[1]), (4, None), (5, young[2]), (6, None)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []


# --- Database._guard, Database._pin: failures while opening -----------------------------------


def test_an_error_while_inspecting_the_locks_closes_the_guards_descriptor(
        tmp_path: Path) -> None:
    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import Database, DbFile
    from architect_cleanup.dblocks import LockWatch

    class Broken(LockWatch):
        def check(self, *a: object, **kw: object) -> None:
            raise RuntimeError("inspection failed")

    path = tmp_path / "a.db"
    make_db(path)  # WAL: the guard inspects it
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match=r"^inspection failed$"):
        Database(DbFile("prod", path.name, str(path)), DatabaseConfig(), dry_run=True,
                 locks=Broken())
    assert set(os.listdir("/proc/self/fd")) <= fds


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a root process without CAP_SETUID)")
def test_root_without_cap_setuid_refuses_to_open_a_database_it_cannot_open_as_its_owner(
        open_dir: Path) -> None:  # noqa: F811 (the fixture imported above)
    """Opened as root, a swapped path would hand root's files to the owner: without the
    capabilities to act as the owner, the database is not touched, and the error says why."""
    import json
    import subprocess
    import sys

    from architect_cleanup import db as dbmod
    root = open_dir / "srv"  # its owner may traverse it
    path = root / "data" / "prod" / "architect.db"
    make_db(path).close()
    os.chown(path, 65534, 65534)
    os.chown(path.parent, 65534, 65534)
    # with the capabilities (this process), it is opened as its owner
    from architect_cleanup.config import DatabaseConfig
    from architect_cleanup.db import Database, DbFile
    with Database(DbFile("prod", "data/prod/architect.db", str(path)), DatabaseConfig(),
                  dry_run=True, root=str(root)) as d:
        assert d.pinned is not None and d.pinned.acting_as == 65534
    before = sorted(os.listdir(path.parent))
    code = ("import json, sys\n"
            "from architect_cleanup.config import DatabaseConfig\n"
            "from architect_cleanup.db import Database, DbError, DbFile\n"
            "try:\n"
            "    Database(DbFile('prod', 'data/prod/architect.db', sys.argv[1] + "
            "'/data/prod/architect.db'), DatabaseConfig(), dry_run=False, root=sys.argv[1])\n"
            "except DbError as exc:\n"
            "    print(json.dumps(str(exc)))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(dbmod.__file__).resolve().parents[1])}
    proc = subprocess.run(["setpriv", "--bounding-set=-setuid,-setgid", "--inh-caps=-all",
                           sys.executable, "-c", code, str(root)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == (
        "cannot act as its owner (uid 65534, gid 65534): setfsuid/setfsgid need CAP_SETUID "
        "and CAP_SETGID; not touched")
    assert sorted(os.listdir(path.parent)) == before
