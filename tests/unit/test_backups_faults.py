"""Faults in the backups target that looked like real bugs and that no unit test caught
(issue 24): the ``min_age`` boundary, a ``-wal`` held open, a symlink or FIFO named like a
backup using up ``keep_last``, the free-space floor acting on a directory whose policy failed,
and a hard-linked backup counted as freeing space. Each test fails when its fault is seeded."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from test_backups_free_space import BACKUP, fill, free, small_fs  # noqa: F401 (fixture)

from architect_cleanup.config import Config
from architect_cleanup.retention import format_size
from architect_cleanup.targets.base import Decision
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, NOW_TS, make_config, snapshot, touch


def me() -> str:
    """How the open-files rule names this test process (it holds the files open): its
    ``comm``, which a runner may have renamed (mutmut's workers call themselves mutmut)."""
    with open(f"/proc/{os.getpid()}/comm", encoding="utf-8") as fh:
        return f"PID {os.getpid()} ({fh.read().strip()})"


def counts(detail: dict[str, object]) -> dict[str, object]:
    """A part's counts without the bytes it kept (the history's figure, tested there)."""
    return {k: v for k, v in detail.items() if k != "kept_bytes"}

def run(cfg: Config, *, dry: bool) -> tuple[dict[str, Decision], Any]:
    seen: list[Decision] = []
    stats = CleanupWorker(dry_run=dry, config=cfg, only=["backups"], now=NOW,
                          on_decision=seen.append).run_cleanup()
    return {os.path.basename(d.path): d for d in seen}, stats


def removed(seen: dict[str, Decision]) -> list[str]:
    return sorted(n for n, d in seen.items() if d.remove)


def backup(d: Path, name: str, age: float, size: int = 100) -> Path:
    return touch(d / f"architect_{name}.db", age=age, size=size)


# --- min_age ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dry", [True, False])
def test_a_backup_exactly_min_age_old_counts_as_complete(srv: Path, dry: bool) -> None:
    """``min_age`` is "younger than": a backup exactly min_age old is complete, so it is the
    newest one kept, and the one before it goes (retention 1)."""
    d = srv / "data" / "prod" / "backups"
    at = backup(d, "20261126_110000", HOUR)
    before = backup(d, "20261125_110000", DAY)
    cfg = make_config(srv, backups={"retention": {"prod": 1}, "min_age": "1h"})
    seen, stats = run(cfg, dry=dry)
    assert removed(seen) == [before.name]
    assert seen[at.name].reason == "newest backup of prod"
    assert at.exists() and before.exists() is dry
    assert stats.targets["backups"].removed == 1


def test_a_backup_a_second_younger_than_min_age_is_held_and_counts_in_no_rule(
        srv: Path) -> None:
    d = srv / "data" / "prod" / "backups"
    young = backup(d, "20261126_110001", HOUR - 1)
    complete = backup(d, "20261125_110000", DAY)
    seen, _ = run(make_config(srv, backups={"retention": {"prod": 1}, "min_age": "1h"}),
                  dry=False)
    assert removed(seen) == []
    assert seen[young.name].reason.startswith("60 minutes old, younger than min_age")
    assert complete.exists() and young.exists()


# --- a sibling held open -----------------------------------------------------------------------


@pytest.mark.parametrize("held", ["-wal", "-shm", ""])
@pytest.mark.parametrize("dry", [True, False])
def test_a_backup_whose_sibling_a_process_holds_open_is_kept_with_its_siblings(
        srv: Path, held: str, dry: bool) -> None:
    d = srv / "data" / "prod" / "backups"
    backup(d, "20261125_000000", DAY)
    old = backup(d, "20261101_000000", 25 * DAY)
    wal = touch(d / (old.name + "-wal"), age=25 * DAY, size=10)
    shm = touch(d / (old.name + "-shm"), age=25 * DAY, size=10)
    older = backup(d, "20261001_000000", 56 * DAY)
    before = snapshot(d)
    fd = os.open(d / (old.name + held), os.O_RDONLY)
    try:
        seen, stats = run(make_config(srv, backups={"retention": {"prod": 1}}), dry=dry)
    finally:
        os.close(fd)
    assert removed(seen) == [older.name]
    assert seen[old.name].reason == (f"open by {me()}; a rule would remove it: "
                                     "beyond the newest 1 of prod")
    assert stats.targets["backups"].skipped == 1
    assert counts(stats.targets["backups"].detail["prod"]) == {
        "removed": 1, "bytes": 100, "kept": 2}  # the newest, and the one held open
    assert old.exists() and wal.exists() and shm.exists()
    if dry:
        assert snapshot(d) == before
    else:
        assert not older.exists()


# --- not regular files named like backups ----------------------------------------------------


def test_a_symlink_or_fifo_named_like_a_backup_neither_uses_up_keep_last_nor_goes(
        srv: Path, tmp_path: Path) -> None:
    d = srv / "data" / "prod" / "backups"
    real = [backup(d, f"2026112{i}_000000", (i + 1) * DAY) for i in range(3)]
    victim = touch(tmp_path / "elsewhere.db", age=0, data=b"not a backup")
    link = d / "architect_20261126_100000.db"
    link.symlink_to(victim)
    os.utime(link, (NOW_TS - 2 * HOUR,) * 2, follow_symlinks=False)
    fifo = d / "architect_20261126_090000.db"
    os.mkfifo(fifo)
    os.utime(fifo, (NOW_TS - 3 * HOUR,) * 2)
    cfg = make_config(srv, backups={"retention": {"prod": 2}})
    for dry in (True, False):
        seen, stats = run(cfg, dry=dry)
        assert removed(seen) == [real[2].name]
        assert stats.targets["backups"].kept == 4
        assert seen[link.name].reason == seen[fifo.name].reason == "not a regular file"
    assert [p.exists() for p in real] == [True, True, False]
    assert link.is_symlink() and fifo.is_fifo()
    assert victim.read_bytes() == b"not a backup"


def test_a_symlink_named_like_a_backup_is_kept_even_as_the_only_old_entry(srv: Path) -> None:
    d = srv / "data" / "prod" / "backups"
    newest = backup(d, "20261125_000000", DAY)
    link = d / "architect_20200101_000000.db"
    link.symlink_to(newest)
    os.utime(link, (NOW_TS - 900 * DAY,) * 2, follow_symlinks=False)
    seen, _ = run(make_config(srv, backups={"retention": {"prod": 1}}), dry=False)
    assert removed(seen) == []
    assert link.is_symlink()


# --- the free-space floor and a failed policy ------------------------------------------------


def test_the_free_space_floor_leaves_a_directory_whose_policy_failed_alone(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    """prod's budget is below its newest backup: its policy fails and nothing there is
    removed, not even by the floor (a floor no filesystem here can reach) that test, on the
    same filesystem, obeys down to keep_min."""
    prod = [backup(srv / "data" / "prod" / "backups", f"2026110{i}_000000", (i + 1) * DAY,
                   size=2000) for i in range(6)]
    test = [backup(srv / "data" / "test" / "backups", f"test_2026110{i}", (i + 1) * DAY)
            for i in range(5)]
    cfg = make_config(srv, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 10, "max_total_size": "1K", "min_free_space": "1000T"},
        "test": {"keep_last": 10, "min_free_space": "1000T", "keep_min": 3}}})
    caplog.set_level(logging.INFO, logger="architect_cleanup.targets.backups")
    for dry in (True, False):
        caplog.clear()
        seen, stats = run(cfg, dry=dry)
        t = stats.targets["backups"]
        floor = [(r.levelno, r.getMessage()) for r in caplog.records
                 if "is below min_free_space" in r.getMessage()]
        assert len(floor) == 1 and floor[0][0] == logging.WARNING
        assert floor[0][1].startswith("backups: test: free space ")
        verb = "would go" if dry else "go"
        assert f"2 backup(s) beyond the rules {verb}, reaching " in floor[0][1]
        assert floor[0][1].endswith("; still below, stopped at keep_min = 3")
        assert t.status == "failed"
        assert "max_total_size 1.0 KiB of prod is smaller than its newest backup" in t.message
        assert removed(seen) == sorted(p.name for p in test[3:])
        assert all(seen[p.name].reason.startswith("not judged: ") for p in prod)
        assert "free_space" not in t.detail.get("prod", {})
    assert all(p.exists() for p in prod)
    assert [p.exists() for p in test] == [True] * 3 + [False] * 2


def test_only_a_failed_policy_on_a_filesystem_means_no_free_space_pass(srv: Path) -> None:
    prod = [backup(srv / "data" / "prod" / "backups", f"2026110{i}_000000", (i + 1) * DAY,
                   size=2000) for i in range(6)]
    cfg = make_config(srv, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 10, "max_total_size": "1K", "min_free_space": "1000T"}}})
    seen, stats = run(cfg, dry=False)
    assert removed(seen) == []
    assert all(p.exists() for p in prod)
    assert not any("min_free_space" in n for n in stats.targets["backups"].notes)


# --- hard links ------------------------------------------------------------------------------


def _pct(n: int, total: int) -> str:
    return f"{format_size(n)} ({100.0 * n / total:.1f}%)"


def test_a_hard_linked_backup_frees_nothing_so_the_floor_goes_on_to_the_next(
        small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """The oldest backup has another link outside the backup directory: removing it gives
    nothing back, so to free 1.5 backups' worth the floor takes it and two more."""
    files = fill(small_fs, "prod", 8)
    os.link(files[-1], small_fs / "kept-elsewhere.db")
    need = free(small_fs) + BACKUP + BACKUP // 2
    cfg = make_config(small_fs, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 8, "min_free_space": str(need), "keep_min": 1}}})
    before = free(small_fs)
    total = os.statvfs(small_fs).f_blocks * os.statvfs(small_fs).f_frsize
    caplog.set_level(logging.INFO, logger="architect_cleanup.targets.backups")
    dry, stats = run(cfg, dry=True)
    expected = sorted(p.name for p in files[-3:])
    assert removed(dry) == expected
    detail = stats.targets["backups"].detail["prod"]["free_space"]
    assert detail == {"min_free_space": format_size(need), "need_bytes": need,
                      "total_bytes": total, "free_bytes": before,
                      "projected_free_bytes": before + 2 * BACKUP,
                      "removed_for_space": 3, "stopped_at_keep_min": False}
    note = (f"prod: free space {_pct(before, total)} is below min_free_space "
            f"{format_size(need)}: 3 backup(s) beyond the rules would go, reaching "
            f"{_pct(before + 2 * BACKUP, total)}")
    assert [n for n in stats.targets["backups"].notes if "does not exist" not in n] == [note]
    assert [(r.levelno, r.getMessage()) for r in caplog.records
            if "is below min_free_space" in r.getMessage()] == [
                (logging.INFO, f"backups: {note}")]
    real, stats = run(cfg, dry=False)
    assert removed(real) == expected
    assert free(small_fs) == need + BACKUP // 2
    assert stats.space_freed == 2 * BACKUP  # the hard-linked one gave nothing back
    assert (small_fs / "kept-elsewhere.db").stat().st_size == BACKUP


# --- the plan in detail ----------------------------------------------------------------------


def test_every_backup_file_and_sibling_is_checked_and_decided_with_its_reason(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One directory with every kind of entry; counts, reasons, notes and journal lines."""
    import logging
    d = srv / "data" / "prod" / "backups"
    newest = backup(d, "20261125_000000", DAY, size=10)
    mid = backup(d, "20261120_000000", 6 * DAY, size=20)
    old = backup(d, "20261101_000000", 25 * DAY, size=40)
    touch(d / (old.name + "-journal"), 25 * DAY, size=3)
    orphan = touch(d / "architect_20200101_000000.db-wal", 900 * DAY, size=1)
    orphan_db = touch(d / "other.db-shm", 900 * DAY, size=1)
    stranger = touch(d / "notes.txt-wal", 900 * DAY, size=1)
    future = backup(d, "29990101_000000", -30 * DAY)
    young = backup(d, "20261126_115000", 600)
    caplog.set_level(logging.INFO, logger="architect_cleanup.targets.backups")
    seen, stats = run(make_config(srv, backups={"retention": {"prod": 2}}), dry=False)
    t = stats.targets["backups"]
    assert t.status == "ok"
    assert {n: (dec.remove, dec.reason, dec.size) for n, dec in seen.items()} == {
        newest.name: (False, "newest backup of prod", 0),
        mid.name: (False, "newest 2 of prod", 0),
        old.name: (True, "beyond the newest 2 of prod", 43),
        future.name: (False, "modified 1 month in the future (not counted)", 0),
        young.name: (False, "10 minutes old, younger than min_age: may still be being "
                            "written (not counted)", 0),
    }
    assert (t.removed, t.bytes, t.kept, t.skipped) == (1, 43, 4, 0)
    assert t.checked == 9  # five backups, one sibling and three files named like siblings
    assert counts(t.detail["prod"]) == {"removed": 1, "bytes": 43, "kept": 4}
    assert sorted(n for n in t.notes if "does not exist" not in n) == sorted(
        f"{p}: its backup is gone; left alone" for p in (orphan, orphan_db))
    assert stranger.exists() and orphan.exists() and not old.exists()
    lines = [r.getMessage() for r in caplog.records
             if r.name == "architect_cleanup.targets.backups"]
    # (no per-backup line: a real run's journal gets one entry per removed item, the worker's)
    assert "backups: prod: kept 2, removed 1 by backups.retention.prod (last 2)" in lines
    assert [r.getMessage() for r in caplog.records if "in the future" in r.getMessage()] == [
        f"backups: {future} is modified 1 month in the future; kept"]


def test_a_backup_directory_that_cannot_be_entered_fails_that_environment_only(
        srv: Path, tmp_path: Path) -> None:
    (srv / "data" / "prod").mkdir(parents=True)
    (srv / "data" / "prod" / "backups").symlink_to(tmp_path)
    test = [backup(srv / "data" / "test" / "backups", f"2026110{i}_000000", (i + 1) * DAY)
            for i in range(4)]
    seen, stats = run(make_config(srv), dry=False)
    t = stats.targets["backups"]
    assert t.errors == [f"prod: {srv}/data/prod/backups: a symlink, not followed"]
    assert removed(seen) == [test[3].name]
    assert "data/qa/backups: does not exist (no backups for qa yet)" in t.notes


def test_the_free_space_floor_reports_a_filesystem_it_cannot_measure(
        srv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup.targets import backups as backups_mod

    def no_statvfs(_d: object) -> tuple[int, int]:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(backups_mod, "free_space", no_statvfs)
    bs = [backup(srv / "data" / "prod" / "backups", f"2026110{i}_000000", (i + 1) * DAY)
          for i in range(5)]
    cfg = make_config(srv, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 4, "min_free_space": "1000T"}}})
    seen, stats = run(cfg, dry=True)
    t = stats.targets["backups"]
    assert t.errors == ["prod: cannot read free space: Input/output error"]
    assert removed(seen) == [bs[4].name]  # the rules still apply


def test_with_backups_disabled_the_other_targets_judge_names_in_backup_directories(
        srv: Path) -> None:
    from architect_cleanup.targets.owners import backup_names

    cfg = make_config(srv, backups={"enabled": False})
    assert backup_names(cfg)(str(srv / "data/prod/backups")) is None
    on = backup_names(make_config(srv))
    owned = on(str(srv / "data" / "prod" / "backups" / "sub"))
    assert owned is not None and owned("x.db") and not owned("x.log")
    assert on(str(srv / "data" / "prod")) is None
    assert on(str(srv / "data" / "backups")) is not None  # the shared directory


def test_a_floor_met_exactly_removes_nothing_and_says_nothing(
        small_fs: Path) -> None:  # noqa: F811
    fill(small_fs, "prod", 4)
    need = free(small_fs)
    cfg = make_config(small_fs, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 4, "min_free_space": str(need), "keep_min": 1}}})
    seen, stats = run(cfg, dry=True)
    assert removed(seen) == []
    t = stats.targets["backups"]
    assert [n for n in t.notes if "does not exist" not in n] == []
    assert t.detail["prod"]["free_space"]["need_bytes"] == need
    assert t.detail["prod"]["free_space"]["removed_for_space"] == 0


def test_orphaned_siblings_are_noted_by_the_backup_patterns_or_a_database_suffix(
        srv: Path) -> None:
    d = srv / "data" / "prod" / "backups"
    backup(d, "20261125_000000", DAY)
    noted = [touch(d / n, 900 * DAY) for n in (
        "architect_20200101.bak-wal",       # a backup pattern, not a database suffix
        "other.db-shm", "other.sqlite-wal",  # database suffixes, not backup patterns
        "architect_20200101_000000.db-journal")]
    silent = [touch(d / n, 900 * DAY) for n in ("notes.txt-wal", "x.db-wal-shm")]
    cfg = make_config(srv, backups={"patterns": ["architect_*.db", "architect_*.bak"],
                                    "shared_dir": ""})
    _, stats = run(cfg, dry=False)
    t = stats.targets["backups"]
    assert sorted(n for n in t.notes if "does not exist" not in n) == sorted(
        f"{p}: its backup is gone; left alone" for p in noted)
    assert all(p.exists() for p in noted + silent)


def test_a_young_backup_exactly_at_the_future_limit_is_young_not_in_the_future(
        srv: Path) -> None:
    d = srv / "data" / "prod" / "backups"
    edge = touch(d / "architect_20261126_120500.db", age=-300)  # now + FUTURE_SLACK
    beyond = touch(d / "architect_20261126_120501.db", age=-301)
    seen, _ = run(make_config(srv), dry=True)
    assert seen[edge.name].reason.endswith(", younger than min_age: may still be being "
                                           "written (not counted)")
    assert seen[beyond.name].reason == "modified 5 minutes in the future (not counted)"


def test_every_environment_is_counted_as_checked(srv: Path) -> None:
    for env in ("prod", "test"):
        for i in range(3):
            backup(srv / "data" / env / "backups", f"2026110{i}_000000", (i + 1) * DAY)
        touch(srv / "data" / env / "backups" / "architect_20261101_000000.db-wal", 25 * DAY)
    _, stats = run(make_config(srv), dry=True)
    assert stats.targets["backups"].checked == 8


def test_a_failed_policy_is_logged_as_an_error_naming_the_environment(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    backup(srv / "data" / "prod" / "backups", "20261101_000000", DAY, size=2000)
    cfg = make_config(srv, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 3, "max_total_size": "1K"}}})
    caplog.set_level(logging.ERROR, logger="architect_cleanup")
    run(cfg, dry=True)
    # said once, by the worker, as the target's failure
    failed = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("backups: failed")]
    assert failed == [
        "backups: failed: max_total_size 1.0 KiB of prod is smaller than its newest backup "
        "architect_20261101_000000.db (2.0 KiB); raise it or drop it"]


def test_backups_kept_or_lost_at_the_last_moment_count_as_kept_in_the_summary(
        srv: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Retention 1 over five backups: one is held open, one vanishes right before its
    unlink, two go. Per-environment counts, sizes and the journal's summary agree."""
    from architect_cleanup import worker as worker_mod
    from architect_cleanup.fs import OpenFiles

    d = srv / "data" / "prod" / "backups"
    backup(d, "20261125_000000", DAY, size=1)
    held = backup(d, "20261120_000000", 6 * DAY, size=2)
    vanishing = backup(d, "20261115_000000", 11 * DAY, size=4)
    gone = [backup(d, "20261110_000000", 16 * DAY, size=8),
            backup(d, "20261105_000000", 21 * DAY, size=16)]
    ino = vanishing.stat().st_ino

    class Hook(OpenFiles):
        def is_open(self, st: os.stat_result) -> bool:
            if st.st_ino == ino and vanishing.exists():
                vanishing.unlink()
            return super().is_open(st)

    monkeypatch.setattr(worker_mod, "OpenFiles", Hook)
    caplog.set_level(logging.INFO, logger="architect_cleanup.targets.backups")
    fd = os.open(held, os.O_RDONLY)
    try:
        seen, stats = run(make_config(srv, backups={"retention": {"prod": 1}}), dry=False)
    finally:
        os.close(fd)
    t = stats.targets["backups"]
    assert (t.removed, t.bytes, t.skipped) == (2, 24, 2)
    assert counts(t.detail["prod"]) == {"removed": 2, "bytes": 24, "kept": 2}
    assert {n: (x.remove, x.size) for n, x in seen.items() if x.remove} == {
        gone[0].name: (True, 8), gone[1].name: (True, 16)}
    assert seen[vanishing.name].reason == "vanished before removal"
    assert "backups: prod: kept 3, removed 2 by backups.retention.prod (last 1)" in [
        r.getMessage() for r in caplog.records]


def test_a_sibling_modified_in_the_future_keeps_its_backup_and_is_the_one_warned_about(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "data" / "prod" / "backups"
    backup(d, "20261125_000000", DAY)
    old = backup(d, "20261101_000000", 25 * DAY)
    wal = touch(d / (old.name + "-wal"), -DAY)
    caplog.set_level(logging.WARNING, logger="architect_cleanup.targets.backups")
    for dry in (True, False):
        caplog.clear()
        seen, stats = run(make_config(srv, backups={"retention": {"prod": 1}}), dry=dry)
        assert seen[old.name].reason == ("modified 1 day in the future; a rule would remove it: "
                                         "beyond the newest 1 of prod")
        assert stats.targets["backups"].skipped == 1
        assert [r.getMessage() for r in caplog.records if "in the future" in r.getMessage()
                ] == [f"backups: {wal} is modified 1 day in the future; kept"]
    assert old.exists() and wal.exists()


def test_a_time_zone_the_tool_cannot_read_is_named_in_the_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from architect_cleanup.targets.backups import local_zone

    caplog.set_level(logging.WARNING, logger="architect_cleanup.targets.backups")
    none = str(tmp_path / "none")
    assert str(local_zone({"TZ": ":Nowhere/Special"}, localtime=none)) == "UTC"
    assert [r.getMessage() for r in caplog.records] == [
        f"TZ=Nowhere/Special is not a zone this tool can read; using {none}"]


def test_the_floor_stops_at_the_configured_keep_min(srv: Path) -> None:
    bs = [backup(srv / "data" / "prod" / "backups", f"2026110{i}_000000", (i + 1) * DAY)
          for i in range(5)]
    cfg = make_config(srv, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 5, "min_free_space": "1000T", "keep_min": 1}}})
    seen, stats = run(cfg, dry=True)
    assert removed(seen) == sorted(p.name for p in bs[1:])
    assert stats.targets["backups"].detail["prod"]["free_space"]["stopped_at_keep_min"]


def test_every_failed_policy_is_in_the_targets_message(srv: Path) -> None:
    for env in ("prod", "test"):
        backup(srv / "data" / env / "backups", "20261101_000000", DAY, size=2000)
    cfg = make_config(srv, backups={"shared_dir": "", "policy": {
        "prod": {"keep_last": 3, "max_total_size": "1K"},
        "test": {"keep_last": 3, "max_total_size": "1K"}}})
    _, stats = run(cfg, dry=True)
    assert stats.targets["backups"].message == "; ".join(
        f"max_total_size 1.0 KiB of {env} is smaller than its newest backup "
        "architect_20261101_000000.db (2.0 KiB); raise it or drop it" for env in ("prod", "test"))


# --- Backups._pair_siblings: a pattern that matches side files too ---------------------------


@pytest.mark.parametrize("dry", [True, False])
def test_side_files_a_pattern_matches_too_go_with_their_backup_and_are_no_backups_of_their_own(
        srv: Path, dry: bool) -> None:
    """``architect_*`` matches each backup's ``-wal`` too: the newest backup's ``-wal`` was
    "the newest backup", and the newest backup itself removed, with that ``-wal``."""
    d = srv / "data" / "prod" / "backups"
    bs = [backup(d, f"2026110{i}_000000", (i + 1) * DAY, size=10) for i in range(3)]
    wals = [touch(d / (b.name + "-wal"), (i + 1) * DAY, size=3) for i, b in enumerate(bs)]
    cfg = make_config(srv, backups={"retention": {"prod": 1}, "shared_dir": "",
                                    "patterns": ["architect_*"]})
    seen, stats = run(cfg, dry=dry)
    assert {n: (x.remove, x.reason) for n, x in seen.items()} == {
        bs[0].name: (False, "newest backup of prod"),
        bs[1].name: (True, "beyond the newest 1 of prod"),
        bs[2].name: (True, "beyond the newest 1 of prod")}
    assert counts(stats.targets["backups"].detail["prod"]) == {
        "removed": 2, "bytes": 26, "kept": 1}
    assert stats.targets["backups"].checked == 6
    assert bs[0].exists() and wals[0].exists()
    assert [p.exists() for p in bs[1:] + wals[1:]] == [dry] * 4


@pytest.mark.parametrize("dry", [True, False])
def test_a_side_file_a_pattern_matches_whose_backup_is_gone_is_no_backup_and_left_alone(
        srv: Path, dry: bool) -> None:
    """``architect_*`` matches an old ``-wal`` whose backup was removed: it is noted and
    left alone (as any orphaned side file), not judged, kept or removed as a backup."""
    d = srv / "data" / "prod" / "backups"
    bs = [backup(d, f"2026110{i}_000000", (i + 1) * DAY, size=10) for i in range(2)]
    orphan = touch(d / "architect_20251001_000000.db-wal", 60 * DAY, size=3)
    cfg = make_config(srv, backups={"retention": {"prod": 1}, "shared_dir": "",
                                    "patterns": ["architect_*"]})
    seen, stats = run(cfg, dry=dry)
    assert {n: (x.remove, x.reason) for n, x in seen.items()} == {
        bs[0].name: (False, "newest backup of prod"),
        bs[1].name: (True, "beyond the newest 1 of prod")}
    assert orphan.exists() and bs[0].exists()
    assert f"{orphan}: its backup is gone; left alone" in stats.targets["backups"].notes


# --- Backups._apply_verdict: a backup kept at the last moment --------------------------------


def test_a_backup_kept_at_the_last_moment_is_a_kept_row_and_counts_in_the_kept_bytes(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    from test_backups import judge

    d = srv / "data" / "prod" / "backups"
    newest = backup(d, "20261125_000000", DAY, size=1)
    held = backup(d, "20261120_000000", 6 * DAY, size=2)
    gone = backup(d, "20261115_000000", 11 * DAY, size=4)
    fd = os.open(held, os.O_RDONLY)
    try:
        with caplog.at_level(logging.INFO, logger="architect_cleanup.targets.backups"):
            rows, result = judge(make_config(srv, backups={"retention": {"prod": 1},
                                                           "shared_dir": ""}),
                                 dry_run=False, open_files=True)
    finally:
        os.close(fd)
    assert "backups: prod: kept 2, removed 1 by backups.retention.prod (last 1)" in [
        r.getMessage() for r in caplog.records]
    assert [(r["name"], r["verdict"], r["reason"]) for r in rows] == [
        (newest.name, "keep", "newest backup of prod"),
        (held.name, "keep", "beyond the newest 1 of prod; kept at the last moment"),
        (gone.name, "remove", "beyond the newest 1 of prod")]
    assert result.detail["prod"]["kept_bytes"] == 1 + 2
    assert held.exists() and not gone.exists()
