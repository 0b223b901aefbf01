"""tasks: finished task rows go when their finish time is older than max_age."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbkit import (
    DAY,
    NOW,
    ago,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    digest,
    ids,
    insert,
    make_db,
    run,
    text,
)

SEVEN = 7


def task(status: str, completed: object = None, created: object = None, **kw: object
         ) -> dict[str, object]:
    row: dict[str, object] = {"task_type": "t", "status": status,
                              "created_at": created if created is not None else text(ago(60)),
                              "completed_at": completed}
    row.update(kw)
    return row


@pytest.fixture
def prod(tmp_path: Path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    yield root, con
    con.close()


def test_finished_tasks_older_than_max_age_are_deleted_and_the_rest_kept(prod, tmp_path):
    root, con = prod
    gone = insert(con, "task_queue", [
        task("completed", text(ago(8))),
        task("failed", text(ago(30))),
        task("cancelled", text(ago(400))),
        task("completed", 1_700_000_000),                       # epoch integer (2023)
        task("completed", float((NOW - 9 * DAY).timestamp())),  # epoch real
        task("completed", "2026-02-01T10:00:00.123456"),        # ISO with T and microseconds
        task("completed", "2026-02-01T10:00:00+02:00"),         # with an offset
        task("completed", "2026-02-01T10:00:00Z"),
        task("failed", "2026-02-01 10:00:00-0500"),             # offset without a colon
        # the cutoff is 2026-02-22 12:00 UTC: offsets decide these two
        task("completed", "2026-02-22T14:00:00+05:00"),         # 09:00 UTC: old
        task("completed", "2026-02-22 14:00:00.5+0500"),
    ])
    kept = insert(con, "task_queue", [
        task("completed", text(ago(6))),                  # finished within 7 days
        task("completed", text(ago(1)), text(ago(90))),   # a long task: created long ago
        task("pending", None, text(ago(100))),
        task("running", text(ago(100))),                  # not a finished status
        task("completed", None),                          # no finish time: kept
        task("completed", "yesterday"),                   # not a timestamp
        task("completed", ""),
        task("completed", 0),                             # a sentinel, not 1970
        task("completed", (NOW - 1 * DAY).timestamp()),   # epoch, recent
        task("completed", "2026-02-22T09:00:00-05:00"),   # 14:00 UTC: within 7 days
        task("completed", "2026-02-22T09:00:00.999-0500"),
    ])
    cfg = config(root)
    before = digest(root / "data" / "prod" / "architect.db")

    dry = run(cfg, tmp_path, dry_run=True)
    assert dry.tasks_deleted == len(gone)
    assert digest(root / "data" / "prod" / "architect.db") == before

    real = run(cfg, tmp_path, dry_run=False)
    assert real.tasks_deleted == len(gone)
    assert ids(con, "task_queue") == set(kept)
    t = real.targets["tasks"]
    assert t.status == "ok"
    assert t.detail["prod"]["removed"] == len(gone)
    assert t.detail["prod"]["table"] == "task_queue"
    assert t.detail["prod"]["time"] == "completed_at"
    # finished rows kept: 2 recent, 1 recent epoch, 2 recent with offsets, 4 undated
    assert t.kept == 9
    assert any("4 finished tasks kept: completed_at is NULL or not a timestamp" in n
               for n in t.notes)

    again = run(cfg, tmp_path, dry_run=False)
    assert again.tasks_deleted == 0
    assert ids(con, "task_queue") == set(kept)


def test_a_task_finished_yesterday_is_kept_however_old_it_is(prod, tmp_path):
    root, con = prod
    insert(con, "task_queue", [task("completed", text(ago(1)), text(ago(365)))])
    stats = run(config(root), tmp_path, dry_run=False)
    assert stats.tasks_deleted == 0
    assert len(ids(con, "task_queue")) == 1


def test_the_age_boundary_is_exact(prod, tmp_path):
    root, con = prod
    old = insert(con, "task_queue", [task("completed", text(NOW - SEVEN * DAY - DAY / 86400))])
    insert(con, "task_queue", [task("completed", text(NOW - SEVEN * DAY + DAY / 86400))])
    run(config(root), tmp_path, dry_run=False)
    assert old[0] not in ids(con, "task_queue")
    assert len(ids(con, "task_queue")) == 1


def test_the_configured_statuses_and_max_age_decide(prod, tmp_path):
    root, con = prod
    done = insert(con, "task_queue", [task("done", text(ago(3)))])
    failed = insert(con, "task_queue", [task("failed", text(ago(3)))])
    cfg = config(root, tasks={"statuses": ["done"], "max_age": "2d"})
    stats = run(cfg, tmp_path, dry_run=False)
    assert stats.tasks_deleted == 1
    assert ids(con, "task_queue") == set(failed)
    assert done[0] not in ids(con, "task_queue")


def test_children_of_a_deleted_parent_lose_their_parent_id(prod, tmp_path):
    root, con = prod
    (parent,) = insert(con, "task_queue", [task("completed", text(ago(20)))])
    children = insert(con, "task_queue", [
        task("completed", text(ago(19)), parent_id=parent),   # old too: deleted
        task("pending", None, parent_id=parent),               # still queued: kept
        task("completed", text(ago(1)), parent_id=parent),     # recent: kept
    ])
    dry = run(config(root), tmp_path, dry_run=True)
    real = run(config(root), tmp_path, dry_run=False)
    assert dry.tasks_deleted == real.tasks_deleted == 2
    rows = dict(con.execute("SELECT id, parent_id FROM task_queue").fetchall())
    assert rows == {children[1]: None, children[2]: None}
    assert real.targets["tasks"].detail["prod"]["references_cleared"] >= 2
    dangling = con.execute("PRAGMA foreign_key_check(task_queue)").fetchall()
    assert dangling == []


def test_a_table_named_tasks_with_only_updated_at_is_aged_by_updated_at(tmp_path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT, created_at TEXT,
                            updated_at TEXT);""")
    insert(con, "tasks", [
        {"status": "completed", "created_at": text(ago(1)), "updated_at": text(ago(9))},
        {"status": "completed", "created_at": text(ago(90)), "updated_at": text(ago(2))},
    ])
    stats = run(config(root), tmp_path, dry_run=False)
    assert stats.tasks_deleted == 1
    assert stats.targets["tasks"].detail["prod"]["time"] == "updated_at"
    assert con.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


def test_a_table_with_only_created_at_is_aged_by_created_at(tmp_path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE task_queue (id INTEGER PRIMARY KEY, status TEXT, created_at);")
    insert(con, "task_queue", [{"status": "failed", "created_at": text(ago(9))},
                               {"status": "failed", "created_at": None}])
    stats = run(config(root), tmp_path, dry_run=False)
    assert stats.tasks_deleted == 1
    assert stats.targets["tasks"].detail["prod"]["time"] == "created_at"


def test_a_task_table_without_a_status_column_is_skipped_with_a_reason(tmp_path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE task_queue (id INTEGER PRIMARY KEY, completed_at TEXT);")
    insert(con, "task_queue", [{"completed_at": text(ago(100))}])
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.status == "ok"
    assert stats.tasks_deleted == 0
    assert "prod: task_queue has no status column; skipped" in t.notes


def test_a_database_without_a_task_table_is_skipped_quietly(tmp_path):
    root = tmp_path / "srv"
    make_db(root / "data" / "prod" / "architect.db", "CREATE TABLE other (id INTEGER);").close()
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.status == "ok"
    assert t.detail["prod"]["reason"] == "no task_queue or tasks table"
    assert not [n for n in t.notes if "prod" in n]


def test_each_database_is_counted_on_its_own(tmp_path):
    root = tmp_path / "srv"
    prod = make_db(root / "data" / "prod" / "architect.db")
    qa = make_db(root / "data" / "qa" / "architect.db")
    insert(prod, "task_queue", [task("completed", text(ago(30)))] * 3)
    insert(qa, "task_queue", [task("completed", text(ago(30))), task("completed", text(ago(1)))])
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert stats.tasks_deleted == 4
    assert (t.detail["prod"]["removed"], t.detail["qa"]["removed"]) == (3, 1)
    assert (t.detail["prod"]["kept"], t.detail["qa"]["kept"]) == (0, 1)
    assert "data/assigner/assigner.db: does not exist (skipped)" in t.notes


@pytest.mark.parametrize(("naive", "deleted"), [("utc", 0), ("local", 1)])
def test_naive_timestamps_are_read_in_the_configured_timezone(prod, tmp_path, monkeypatch,
                                                              naive, deleted):
    import time
    root, con = prod
    monkeypatch.setenv("TZ", "Asia/Tokyo")   # UTC+9, no DST
    time.tzset()
    try:
        # the cutoff is 2026-02-22 12:00 UTC; this is 20:00 UTC, or 11:00 UTC read as Tokyo time
        insert(con, "task_queue", [task("completed", "2026-02-22 20:00:00")])
        stats = run(config(root, database={"naive_timezone": naive}), tmp_path, dry_run=False)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert stats.tasks_deleted == deleted


def test_a_rollback_journal_database_is_purged_the_same_way(tmp_path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    con.execute("PRAGMA journal_mode=DELETE")
    gone = insert(con, "task_queue", [task("completed", text(ago(30)))] * 25)
    kept = insert(con, "task_queue", [task("completed", text(ago(2)))] * 5)
    cfg = config(root, database={"batch_size": 10})
    assert run(cfg, tmp_path, dry_run=True).tasks_deleted == len(gone)
    assert run(cfg, tmp_path, dry_run=False).tasks_deleted == len(gone)
    assert ids(con, "task_queue") == set(kept)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
