"""activity_log: every real run records itself in each database that has the table."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from pathlib import Path

import pytest
from dbkit import (
    ASSIGNER_SQL,
    ago,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    insert,
    make_db,
    run,
    text,
)

from architect_cleanup import worker


@pytest.fixture
def tree(tmp_path: Path):
    root = tmp_path / "srv"
    prod = make_db(root / "data" / "prod" / "architect.db")
    qa = make_db(root / "data" / "qa" / "architect.db")
    asg = make_db(root / "data" / "assigner" / "assigner.db", ASSIGNER_SQL)
    insert(prod, "task_queue", [{"task_type": "t", "status": "completed",
                                 "completed_at": text(ago(30))}])
    yield root, prod, qa, asg
    for c in (prod, qa, asg):
        c.close()


def log_rows(con: sqlite3.Connection) -> list[sqlite3.Row]:
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM activity_log ORDER BY id").fetchall()
    finally:
        con.row_factory = None


def test_the_activity_row_is_a_final_step_of_the_run_and_hooks_are_passed_in(tree, tmp_path):
    """Nothing registers itself at import time: the worker writes the activity row itself,
    then calls the hooks given to it, with the finished stats."""
    assert not hasattr(worker, "AFTER_RUN")
    root, prod, _qa, _asg = tree
    seen: list[int] = []
    stats = run(config(root), tmp_path, dry_run=False, source="cli",
                after_run=[lambda _ctx, st: seen.append(len(log_rows(prod)))])
    assert seen == [1] and stats.success


def test_a_real_run_is_recorded_in_each_database_with_an_activity_log(tree, tmp_path):
    root, prod, qa, asg = tree
    stats = run(config(root), tmp_path, dry_run=False, source="cli")
    for con in (prod, qa):
        (row,) = log_rows(con)
        assert row["action"] == "system_cleanup"
        assert row["entity_type"] == "system"
        assert row["entity_id"] is None
        assert row["user_id"] is None
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["created_at"])
        assert isinstance(row["details"], str)
        details = json.loads(row["details"])
        assert details["dry_run"] is False
        assert details["source"] == "cli"
        assert details["stats"]["tasks_deleted"] == stats.tasks_deleted == 1
    # the assigner's database has no activity_log, and none is created
    tables = {r[0] for r in asg.execute("SELECT name FROM sqlite_master")}
    assert "activity_log" not in tables


@pytest.mark.parametrize("source", ["cli", "timer", "python"])
def test_a_dry_run_from_the_timer_or_cli_writes_nothing(tree, tmp_path, source):
    root, prod, qa, _ = tree
    run(config(root), tmp_path, dry_run=True, source=source)
    assert log_rows(prod) == [] and log_rows(qa) == []


def test_an_api_call_is_recorded_as_the_callers_activity_even_when_dry(tree, tmp_path):
    root, prod, _, _ = tree
    run(config(root), tmp_path, dry_run=True, source="api",
        actor={"user_id": 7, "ip_address": "127.0.0.1"})
    (row,) = log_rows(prod)
    assert (row["user_id"], row["ip_address"]) == (7, "127.0.0.1")
    details = json.loads(row["details"])
    assert (details["dry_run"], details["source"]) == (True, "api")
    assert details["stats"]["tasks_deleted"] == 1
    # the dry run changed nothing else
    assert prod.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 1


def test_only_the_columns_the_table_has_are_written(tmp_path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE activity_log (id INTEGER PRIMARY KEY, action TEXT NOT NULL, "
                  "details TEXT);")
    run(config(root), tmp_path, dry_run=False)
    (row,) = con.execute("SELECT action, details FROM activity_log").fetchall()
    assert row[0] == "system_cleanup"
    assert json.loads(row[1])["dry_run"] is False


def test_a_locked_database_loses_its_activity_row_but_not_the_run(tree, tmp_path, caplog):
    root, prod, qa, _ = tree
    cfg = config(root, database={"busy_timeout": "1s"})
    logging.getLogger("architect_cleanup").addHandler(caplog.handler)
    holder = sqlite3.connect(root / "data" / "qa" / "architect.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        stats = run(cfg, tmp_path, dry_run=False, only=("backups",))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        logging.getLogger("architect_cleanup").removeHandler(caplog.handler)
    assert stats.success
    assert len(log_rows(prod)) == 1
    assert log_rows(qa) == []
    assert any("cannot record the run in activity_log" in r.getMessage()
               and "locked" in r.getMessage() for r in caplog.records)

