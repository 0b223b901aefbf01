"""[[rules.tables]]: the operator's table rules on the real dashboard's growing tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from dbkit import (
    DASHBOARD_SQL,
    DATA,
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

from architect_cleanup.activity import ACTION
from architect_cleanup.config import ConfigError

GROWING_SQL = (DATA / "growing_tables.sql").read_text()
ONLY = ("rules",)
DB = "data/{env}/architect.db"


def rule(name: str, table: str, time_column: str, max_age: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "database": DB, "table": table, "time_column": time_column,
            "max_age": max_age, **kw}


def dashboard(root: Path, env: str = "prod") -> sqlite3.Connection:
    return make_db(root / "data" / env / "architect.db", DASHBOARD_SQL + GROWING_SQL)


def test_old_activity_rows_of_the_listed_actions_go_and_the_rest_stay(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = dashboard(root)
    gone = insert(con, "activity_log", [
        {"action": "view", "created_at": text(ago(100))},
        {"action": "login", "created_at": text(ago(400))},
    ])
    kept = insert(con, "activity_log", [
        {"action": "view", "created_at": text(ago(10))},        # young
        {"action": "delete_task", "created_at": text(ago(400))},  # not a listed action
        {"action": "login", "created_at": None},                # no time: kept
    ])
    cfg = config(root, rules={"tables": [rule(
        "activity", "activity_log", "created_at", "90d",
        where=[{"column": "action", "in": ["view", "login"]}])]})
    before = digest(root / "data" / "prod" / "architect.db")
    dry = run(cfg, tmp_path, dry_run=True, only=ONLY)
    assert digest(root / "data" / "prod" / "architect.db") == before
    real = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert dry.targets["rules"].removed == real.targets["rules"].removed == len(gone)
    assert ids(con, "activity_log", f"action != '{ACTION}'") == set(kept)
    part = real.targets["rules"].detail["activity/prod"]
    assert part["removed"] == 2 and part["table"] == "activity_log"


def test_several_rules_each_purge_their_table_in_every_environment(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    cons = {env: dashboard(root, env) for env in ("prod", "qa")}
    for con in cons.values():
        insert(con, "resource_consumption", [
            {"resource": "cpu", "recorded_at": text(ago(d))} for d in (1, 40, 50)])
        insert(con, "llm_provider_health", [
            {"provider": "x", "status": "ok", "checked_at": text(ago(d))} for d in (1, 2, 9)])
    cfg = config(root, rules={"tables": [
        rule("resources", "resource_consumption", "recorded_at", "30d"),
        rule("health", "llm_provider_health", "checked_at", "7d"),
    ]})
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY)
    for con in cons.values():
        assert con.execute("SELECT count(*) FROM resource_consumption").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM llm_provider_health").fetchone()[0] == 2
    assert stats.targets["rules"].removed == 2 * (2 + 1)
    assert set(stats.targets["rules"].detail) == {"resources/prod", "resources/qa",
                                                   "health/prod", "health/qa"}


def test_sessions_still_referred_to_by_interactions_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = dashboard(root)
    con.execute("PRAGMA foreign_keys = ON")
    old = insert(con, "sessions", [{"token": f"t{i}", "created_at": text(ago(60))}
                                   for i in range(4)])
    insert(con, "claude_interactions", [{"session_id": old[0], "prompt": "p",
                                         "created_at": text(ago(1))}])
    cfg = config(root, rules={"tables": [rule("sessions", "sessions", "created_at", "30d")]})
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert ids(con, "sessions") == {old[0]}
    assert stats.targets["rules"].removed == 3 and stats.targets["rules"].skipped == 1
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []


def test_the_archive_action_sets_the_column_as_prompts_do_and_deletes_nothing(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = dashboard(root)
    old = insert(con, "notifications", [{"message": "m", "is_read": 1,
                                         "created_at": text(ago(40))} for _ in range(3)])
    unread = insert(con, "notifications", [{"message": "m", "is_read": 0,
                                            "created_at": text(ago(40))}])
    cfg = config(root, rules={"tables": [rule(
        "notifications", "notifications", "created_at", "30d", action="archive",
        archive_column="archived", archive_time_column="archived_at",
        where=[{"column": "is_read", "in": [1]}])]})
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert stats.targets["rules"].removed == 3
    assert ids(con, "notifications", "archived = 1 AND archived_at IS NOT NULL") == set(old)
    assert ids(con, "notifications", "archived = 0") == set(unread)
    again = run(cfg, tmp_path, dry_run=False, only=ONLY)  # archived rows are not counted again
    assert again.targets["rules"].removed == 0


@pytest.mark.parametrize(("table", "column", "where", "said"), [
    ("activity_logs", "created_at", [], "no table activity_logs"),
    ("activity_log", "created", [], "has no column created"),
    ("activity_log", "created_at", [{"column": "kind", "in": ["x"]}], "has no column kind"),
])
def test_a_missing_table_or_column_is_reported_and_nothing_is_guessed(
        tmp_path: Path, table: str, column: str, where: list[Any], said: str) -> None:
    root = tmp_path / "srv"
    con = dashboard(root)
    insert(con, "activity_log", [{"action": "view", "created_at": text(ago(400))}])
    cfg = config(root, rules={"tables": [rule("r", table, column, "1d", where=where)]})
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert ids(con, "activity_log", f"action != '{ACTION}'") == {1}
    assert any(said in n for n in stats.targets["rules"].notes), stats.targets["rules"].notes


def test_small_batches_purge_the_same_rows(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = dashboard(root)
    insert(con, "resource_consumption", [{"resource": "r", "recorded_at": text(ago(40 + i))}
                                         for i in range(25)])
    cfg = config(root, database={"batch_size": 4},
                 rules={"tables": [rule("resources", "resource_consumption", "recorded_at",
                                        "30d")]})
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert stats.targets["rules"].removed == 25
    assert con.execute("SELECT count(*) FROM resource_consumption").fetchone()[0] == 0


@pytest.mark.parametrize(("entry", "said"), [
    ({"database": "data/other.db"}, "is not one of database.paths"),
    ({"action": "archive"}, "needs the column to set"),
    ({"where": "action = 'view' OR 1=1"}, "must be a list of tables"),
    ({"where": [{"column": "action", "in": []}]}, "non-empty list"),
    ({"where": [{"column": "action; DROP TABLE x", "in": ["a"]}]}, "not a valid name"),
    ({"table": "activity_log; DROP TABLE x"}, "not a valid name"),
    ({"max_age": "forever"}, "not a duration"),
])
def test_a_wrong_table_rule_is_refused_in_words(tmp_path: Path, entry: dict[str, Any],
                                                said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        config(tmp_path, rules={"tables": [
            {**rule("r", "activity_log", "created_at", "90d"), **entry}]})
