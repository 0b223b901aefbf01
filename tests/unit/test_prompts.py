"""prompts: finished prompts are archived, never deleted."""

from __future__ import annotations

from pathlib import Path

from dbkit import (
    ASSIGNER_SQL,
    NOW,
    ago,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    digest,
    insert,
    make_db,
    run,
    text,
)

ONLY = ("prompts",)


def prompt(status: str, completed: object = None, created: object = None,
           **kw: object) -> dict[str, object]:
    return {"content": "p", "status": status, "completed_at": completed,
            "created_at": created if created is not None else text(ago(100)), **kw}


def assigner(root: Path, schema: str = ASSIGNER_SQL):
    return make_db(root / "data" / "assigner" / "assigner.db", schema)


def test_old_finished_prompts_are_archived_not_deleted(tmp_path: Path):
    root = tmp_path / "srv"
    con = assigner(root)
    archive = insert(con, "prompts", [
        prompt("completed", text(ago(15))),
        prompt("cancelled", text(ago(40))),
        prompt("failed", None, text(ago(20))),        # no completed_at: created_at decides
        prompt("completed", "2026-01-01T00:00:00Z"),
    ])
    leave = insert(con, "prompts", [
        prompt("completed", text(ago(13))),
        prompt("completed", text(ago(2)), text(ago(60))),   # completed_at decides: recent
        prompt("pending", None, text(ago(60))),
        prompt("assigned", None, text(ago(60))),
        prompt("failed", None, text(ago(3))),
        prompt("failed", "garbage", text(ago(60))),         # completed_at unreadable: kept
    ])
    (already,) = insert(con, "prompts", [prompt("completed", text(ago(90)), archived=1,
                                                archived_at="2025-01-01 00:00:00")])
    cfg = config(root)
    db = root / "data" / "assigner" / "assigner.db"
    before = digest(db)
    dry = run(cfg, tmp_path, dry_run=True, only=ONLY)
    assert dry.prompts_deleted == len(archive)
    assert digest(db) == before

    real = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert real.prompts_deleted == len(archive)
    rows = {r[0]: r[1:] for r in con.execute("SELECT id, archived, archived_at FROM prompts")}
    assert len(rows) == len(archive) + len(leave) + 1          # nothing deleted
    assert {i for i, (a, _) in rows.items() if a == 1} == {*archive, already}
    assert all(rows[i] == (1, text(NOW)) for i in archive)
    assert rows[already] == (1, "2025-01-01 00:00:00")          # left as it was
    assert all(rows[i][0] == 0 for i in leave)
    t = real.targets["prompts"]
    assert t.detail["assigner"]["removed"] == len(archive)
    assert t.detail["assigner"]["time"] == "completed_at else created_at"

    again = run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert again.prompts_deleted == 0


def test_prompts_without_the_archive_columns_are_skipped_and_the_schema_is_left_alone(
        tmp_path: Path):
    root = tmp_path / "srv"
    con = assigner(root, """CREATE TABLE prompts (id INTEGER PRIMARY KEY, content TEXT,
                              status TEXT, created_at TEXT, completed_at TEXT);""")
    insert(con, "prompts", [prompt("completed", text(ago(100)))])
    schema = con.execute("SELECT sql FROM sqlite_master").fetchall()
    db = root / "data" / "assigner" / "assigner.db"
    before = digest(db)
    stats = run(config(root), tmp_path, dry_run=False, only=ONLY)
    t = stats.targets["prompts"]
    assert t.status == "ok"
    assert stats.prompts_deleted == 0
    assert any("prompts has no archived or archived_at column" in n for n in t.notes)
    assert con.execute("SELECT sql FROM sqlite_master").fetchall() == schema
    assert digest(db) == before


def test_the_assigner_prompts_table_is_used_when_prompts_is_missing(tmp_path: Path):
    root = tmp_path / "srv"
    con = assigner(root, ASSIGNER_SQL.replace("prompts", "assigner_prompts"))
    insert(con, "assigner_prompts", [prompt("completed", text(ago(30)))])
    stats = run(config(root), tmp_path, dry_run=False, only=ONLY)
    assert stats.prompts_deleted == 1
    assert con.execute("SELECT archived FROM assigner_prompts").fetchone()[0] == 1


def test_archived_at_is_written_in_local_time_when_naive_timestamps_are_local(
        tmp_path: Path, monkeypatch):
    import time
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        root = tmp_path / "srv"
        con = assigner(root)
        insert(con, "prompts", [prompt("completed", text(ago(30)))])
        cfg = config(root, database={"naive_timezone": "local"})
        run(cfg, tmp_path, dry_run=False, only=ONLY)
        assert con.execute("SELECT archived_at FROM prompts").fetchone()[0] == \
            "2026-03-01 21:00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
