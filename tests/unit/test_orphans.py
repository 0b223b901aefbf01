"""orphans: unreferenced uploads go to the quarantine first, and from there after
quarantine_for; a file referenced again while quarantined is restored."""

from __future__ import annotations

import io
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dbkit import (
    DASHBOARD_SQL,
    DATA,
    NOW,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    insert,
    make_db,
    run,
)

from architect_cleanup import cli
from architect_cleanup.config import ConfigError

GROWING_SQL = (DATA / "growing_tables.sql").read_text()
ONLY = ("orphans",)
DAY = 86400.0
Q = "data/.architect-cleanup-quarantine"
ORPHANS = {"enabled": True, "references": [{"table": "attachments", "column": "file_path"}]}


def touch(p: Path, age_days: float, data: bytes = b"upload") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    t = NOW.timestamp() - age_days * DAY
    os.utime(p, (t, t))
    return p


def world(tmp_path: Path) -> tuple[Path, Any, dict[str, Path]]:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db", DASHBOARD_SQL + GROWING_SQL)
    up = root / "data" / "prod" / "uploads"
    files = {
        "referenced": touch(up / "2026" / "a.png", 30),
        "referenced_by_url": touch(up / "b.pdf", 30),
        "orphan": touch(up / "2026" / "lost.png", 30),
        "orphan2": touch(up / "deep" / "er" / "gone.txt", 30),
        "young": touch(up / "new.png", 0.1),
    }
    insert(con, "attachments", [{"file_path": "uploads/2026/a.png"},
                                {"file_path": "https://x.example/files/b.pdf?v=2"},
                                {"file_path": None}])
    return root, con, files


def quarantined(root: Path) -> list[str]:
    q = root / Q
    return sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file()) \
        if q.exists() else []


def test_unreferenced_old_uploads_are_moved_to_the_quarantine_keeping_their_path(
        tmp_path: Path) -> None:
    root, _con, f = world(tmp_path)
    stats = run(config(root, orphans=ORPHANS), tmp_path, dry_run=False, only=ONLY)
    assert f["referenced"].exists() and f["referenced_by_url"].exists()
    assert f["young"].exists()
    assert not f["orphan"].exists() and not f["orphan2"].exists()
    stamp = NOW.strftime("%Y%m%dT%H%M%SZ")
    assert quarantined(root) == [f"{stamp}/data/prod/uploads/2026/lost.png",
                                 f"{stamp}/data/prod/uploads/deep/er/gone.txt"]
    moved = root / Q / stamp / "data/prod/uploads/2026/lost.png"
    assert moved.stat().st_mtime == pytest.approx(NOW.timestamp() - 30 * DAY)
    part = stats.targets["orphans"].detail["quarantine"]
    assert part["moved"] == 2 and stats.targets["orphans"].bytes == 0  # nothing freed yet


def test_a_dry_run_reports_the_orphans_and_moves_nothing(tmp_path: Path) -> None:
    root, _con, f = world(tmp_path)
    seen: list[Any] = []
    stats = run(config(root, orphans=ORPHANS), tmp_path, dry_run=True, only=ONLY,
                on_decision=seen.append)
    assert all(p.exists() for p in f.values())
    assert quarantined(root) == []
    assert stats.targets["orphans"].removed == 2
    assert {os.path.basename(d.path) for d in seen if d.remove} == {"lost.png", "gone.txt"}


def test_quarantined_files_are_deleted_after_quarantine_for(tmp_path: Path) -> None:
    root, _con, f = world(tmp_path)
    cfg = config(root, orphans=ORPHANS)
    run(cfg, tmp_path, dry_run=False, only=ONLY)
    f["young"].unlink()  # (it would be an orphan too, once past its grace)
    later = run(cfg, tmp_path, dry_run=False, only=ONLY, now=NOW + timedelta(days=6))
    assert len(quarantined(root)) == 2 and later.targets["orphans"].bytes == 0
    last = run(cfg, tmp_path, dry_run=False, only=ONLY, now=NOW + timedelta(days=8))
    assert quarantined(root) == []
    assert last.targets["orphans"].detail["quarantine"]["deleted"] == 2
    assert last.targets["orphans"].bytes > 0
    assert not (root / Q).exists() or list((root / Q).iterdir()) == []
    assert f["referenced"].exists()


def test_a_file_referenced_again_while_quarantined_is_restored_automatically(
        tmp_path: Path) -> None:
    root, con, f = world(tmp_path)
    cfg = config(root, orphans=ORPHANS)
    run(cfg, tmp_path, dry_run=False, only=ONLY)
    f["young"].unlink()  # (it would be an orphan too, once past its grace)
    assert not f["orphan"].exists()
    insert(con, "attachments", [{"file_path": "data/prod/uploads/2026/lost.png"}])
    dry = run(cfg, tmp_path, dry_run=True, only=ONLY, now=NOW + timedelta(days=1))
    assert not f["orphan"].exists()
    assert dry.targets["orphans"].detail["quarantine"]["restored"] == 1
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY, now=NOW + timedelta(days=1))
    assert f["orphan"].read_bytes() == b"upload"
    assert stats.targets["orphans"].detail["quarantine"]["restored"] == 1
    assert len(quarantined(root)) == 1  # gone.txt stays quarantined
    # and it is not deleted when the quarantine of its batch runs out
    run(cfg, tmp_path, dry_run=False, only=ONLY, now=NOW + timedelta(days=9))
    assert f["orphan"].exists()


def test_a_restore_onto_a_name_taken_again_is_reported_and_keeps_both(tmp_path: Path) -> None:
    root, con, f = world(tmp_path)
    cfg = config(root, orphans=ORPHANS)
    run(cfg, tmp_path, dry_run=False, only=ONLY)
    f["young"].unlink()  # (it would be an orphan too, once past its grace)
    touch(f["orphan"], 0, b"a new upload of the same name")
    insert(con, "attachments", [{"file_path": "2026/lost.png"}])
    stats = run(cfg, tmp_path, dry_run=False, only=ONLY, now=NOW + timedelta(days=1))
    assert f["orphan"].read_bytes() == b"a new upload of the same name"
    assert len(quarantined(root)) == 2
    assert any("name is taken again" in e for e in stats.targets["orphans"].errors)


def test_an_upload_a_process_holds_open_is_not_quarantined(tmp_path: Path) -> None:
    root, _con, f = world(tmp_path)
    with open(f["orphan"], "rb"):
        run(config(root, orphans=ORPHANS), tmp_path, dry_run=False, only=ONLY)
    assert f["orphan"].exists() and not f["orphan2"].exists()


def test_without_readable_references_a_directory_is_left_alone(tmp_path: Path) -> None:
    root, _con, f = world(tmp_path)
    wrong = {**ORPHANS, "references": [{"table": "attachments", "column": "path"}]}
    stats = run(config(root, orphans=wrong), tmp_path, dry_run=False, only=ONLY)
    assert all(p.exists() for p in f.values())
    assert any("has no column path" in n for n in stats.targets["orphans"].notes)


def test_quarantined_files_are_nobody_elses(tmp_path: Path) -> None:
    """The logs and temp targets walk data/ too: a quarantined x.log or y.tmp is the
    orphans target's alone, kept until its quarantine runs out."""
    root, _con, _f = world(tmp_path)
    touch(root / "data" / "prod" / "uploads" / "old.log", 60)
    touch(root / "data" / "prod" / "uploads" / "old.tmp", 60)
    cfg = config(root, orphans=ORPHANS)
    run(cfg, tmp_path, dry_run=False, only=ONLY)
    assert len(quarantined(root)) == 4
    run(cfg, tmp_path, dry_run=False, only=("logs", "temp"))
    assert len(quarantined(root)) == 4


def test_quarantine_list_and_restore_on_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _con, f = world(tmp_path)
    cfg = config(root, orphans=ORPHANS)
    run(cfg, tmp_path, dry_run=False, only=ONLY)
    conf = tmp_path / "config.toml"
    conf.write_text(f'root = "{root}"\nenvironments = ["prod", "qa"]\n'
                    '[orphans]\nenabled = true\n'
                    'references = [{table = "attachments", column = "file_path"}]\n')
    out = io.StringIO()
    assert cli.main(["--config", str(conf), "quarantine", "list", "--json"], out) == 0
    listed = json.loads(out.getvalue())
    assert [e["original"] for e in listed] == ["data/prod/uploads/2026/lost.png",
                                               "data/prod/uploads/deep/er/gone.txt"]
    out = io.StringIO()
    assert cli.main(["--config", str(conf), "quarantine", "restore",
                     "data/prod/uploads/deep/er/gone.txt"], out) == 0
    assert "restored data/prod/uploads/deep/er/gone.txt" in out.getvalue()
    assert f["orphan2"].read_bytes() == b"upload"
    assert cli.main(["--config", str(conf), "quarantine", "restore", "no/such.png"],
                    io.StringIO()) == cli.EXIT_FAILED


@pytest.mark.parametrize(("orphans", "said"), [
    ({"enabled": True}, "at least one table and column"),
    ({**ORPHANS, "database": "data/x.db"}, "is not one of database.paths"),
    ({**ORPHANS, "quarantine_dir": "data/prod/uploads/q"}, "overlaps"),
    ({**ORPHANS, "dirs": ["/srv/uploads"]}, "must be relative to root"),
    ({**ORPHANS, "references": [{"table": "a; DROP", "column": "x"}]}, "not a valid name"),
])
def test_a_wrong_orphans_table_is_refused_in_words(tmp_path: Path, orphans: dict[str, Any],
                                                   said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        config(tmp_path, orphans=orphans)


def test_an_upload_replaced_after_its_judgement_is_left_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last check right before the move: a new file under the judged name (a fresh
    upload) is not the orphan that was judged, and stays where it is."""
    from architect_cleanup import fs
    from architect_cleanup import worker as worker_mod

    root, _con, f = world(tmp_path)
    target = f["orphan"]
    judged = target.stat().st_ino

    class Replacer(fs.OpenFiles):
        def is_open(self, st: os.stat_result) -> bool:
            if st.st_ino == judged:
                target.unlink()
                touch(target, 30, b"a new upload under the same name")
            return False

    monkeypatch.setattr(worker_mod, "OpenFiles", Replacer)
    stats = run(config(root, orphans=ORPHANS), tmp_path, dry_run=False, only=ONLY)
    assert target.read_bytes() == b"a new upload under the same name"
    assert any("changed since it was checked" in e for e in stats.targets["orphans"].errors)
    assert not f["orphan2"].exists()


def test_a_file_swapped_in_between_the_last_check_and_the_rename_is_moved_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap lands after the last check, right before the rename: what arrives in the
    quarantine is not the judged file, so it goes straight back and nothing of it waits there
    to be deleted."""
    from architect_cleanup import quarantine

    root, _con, f = world(tmp_path)
    real = quarantine.rename_between
    swapped: list[str] = []

    def racing(src: Any, name: str, dst: Any, new: str) -> None:
        if name == "lost.png" and not swapped:
            swapped.append(name)
            f["orphan"].unlink()
            touch(f["orphan"], 30, b"swapped in")
        real(src, name, dst, new)

    monkeypatch.setattr(quarantine, "rename_between", racing)
    stats = run(config(root, orphans=ORPHANS), tmp_path, dry_run=False, only=ONLY)
    assert swapped and f["orphan"].read_bytes() == b"swapped in"
    assert [q for q in quarantined(root) if q.endswith("lost.png")] == []
    assert any("changed since it was checked" in e for e in stats.targets["orphans"].errors)


def test_a_quarantine_others_can_write_is_refused(tmp_path: Path) -> None:
    root, _con, f = world(tmp_path)
    (root / Q).mkdir(parents=True)
    os.chmod(root / Q, 0o777)
    stats = run(config(root, orphans=ORPHANS), tmp_path, dry_run=False, only=ONLY)
    assert f["orphan"].exists() and f["orphan2"].exists()
    assert quarantined(root) == []
    assert any("refused as the quarantine" in e for e in stats.targets["orphans"].errors)
