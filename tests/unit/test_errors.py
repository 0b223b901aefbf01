"""errors: resolved errors go when resolved_at is older than max_age; unresolved ones never."""

from __future__ import annotations

from pathlib import Path

from dbkit import (
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

ONLY = ("errors",)


def error(status: str = "open", resolved_at: object = None, **kw: object) -> dict[str, object]:
    return {"error_type": "runtime", "message": "boom", "status": status,
            "resolved_at": resolved_at, **kw}


def test_resolved_errors_are_deleted_by_status_in_the_real_schema(tmp_path: Path):
    root = tmp_path / "srv"
    db = root / "data" / "prod" / "architect.db"
    con = make_db(db)
    gone = insert(con, "errors", [
        error("resolved", text(ago(31))),
        error("resolved", text(ago(400))),
        error("resolved", "2025-12-01T08:30:00.000001"),
    ])
    kept = insert(con, "errors", [
        error("resolved", text(ago(29))),       # resolved recently
        error("open", None, first_seen=text(ago(900))),
        error("open", text(ago(900))),          # has a resolved_at, but is not resolved
        error("ignored", text(ago(900))),
        error("Resolved", text(ago(900))),      # the dashboard writes lower case only
        error("resolved", None),                # resolved, time unknown
        error("resolved", "n/a"),
    ])
    cfg = config(root)
    before = digest(db)
    dry = run(cfg, tmp_path, dry_run=True, only=ONLY)
    assert dry.errors_deleted == len(gone)
    assert digest(db) == before
    real = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert real.errors_deleted == len(gone)
    assert ids(con, "errors") == set(kept)
    assert real.targets["errors"].detail["prod"]["time"] == "resolved_at"
    assert run(cfg, tmp_path, dry_run=False, only=ONLY).errors_deleted == 0
    assert ids(con, "errors") == set(kept)


def test_a_resolved_column_wins_over_status(tmp_path: Path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE errors (id INTEGER PRIMARY KEY, message TEXT, status TEXT,
                             resolved BOOLEAN DEFAULT 0, resolved_at TIMESTAMP);""")
    gone = insert(con, "errors", [
        {"resolved": 1, "status": "open", "resolved_at": text(ago(40))},
        {"resolved": "true", "resolved_at": text(ago(40))},
        {"resolved": 1, "resolved_at": int(ago(40).timestamp())},
    ])
    kept = insert(con, "errors", [
        {"resolved": 0, "status": "resolved", "resolved_at": text(ago(40))},
        {"resolved": None, "resolved_at": text(ago(40))},
        {"resolved": "false", "resolved_at": text(ago(40))},
        {"resolved": 1, "resolved_at": text(ago(3))},
    ])
    stats = run(config(root), tmp_path, dry_run=False, only=ONLY)
    assert stats.errors_deleted == len(gone)
    assert ids(con, "errors") == set(kept)


def test_errors_without_resolved_or_status_are_skipped_with_a_reason(tmp_path: Path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE errors (id INTEGER PRIMARY KEY, resolved_at TEXT);")
    insert(con, "errors", [{"resolved_at": text(ago(100))}])
    stats = run(config(root), tmp_path, dry_run=False, only=ONLY)
    t = stats.targets["errors"]
    assert t.status == "ok"
    assert "prod: errors has neither a resolved nor a status column; skipped" in t.notes
    assert len(ids(con, "errors")) == 1


def test_errors_without_resolved_at_are_skipped_with_a_reason(tmp_path: Path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db",
                  "CREATE TABLE errors (id INTEGER PRIMARY KEY, resolved INTEGER);")
    insert(con, "errors", [{"resolved": 1}])
    stats = run(config(root), tmp_path, dry_run=False, only=ONLY)
    assert "prod: errors has no resolved_at column; skipped" in stats.targets["errors"].notes
    assert len(ids(con, "errors")) == 1


def test_the_configured_table_and_max_age_apply(tmp_path: Path):
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", """
        CREATE TABLE node_errors (id INTEGER PRIMARY KEY, status TEXT, resolved_at TEXT);""")
    insert(con, "node_errors", [{"status": "resolved", "resolved_at": text(ago(3))},
                                {"status": "resolved", "resolved_at": text(ago(1))}])
    cfg = config(root, errors={"table": "node_errors", "max_age": "2d"})
    assert run(cfg, tmp_path, dry_run=False, only=ONLY).errors_deleted == 1
