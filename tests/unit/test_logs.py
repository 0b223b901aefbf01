"""logs: age, directories, /tmp only our own logs at its top level, protected worker logs."""

from __future__ import annotations

from pathlib import Path

from architect_cleanup.worker import CleanupWorker

from conftest import DAY, NOW, make_config, touch


def run(srv: Path, tmp: Path | None, dry_run: bool = False, **sections: object):  # type: ignore[no-untyped-def]
    cfg = make_config(srv, tmp, **sections)  # type: ignore[arg-type]
    return CleanupWorker(dry_run=dry_run, config=cfg, now=NOW, only=["logs"]).run_cleanup()


def test_old_logs_go_and_young_logs_stay(srv: Path) -> None:
    old = [touch(srv / "data/app.log", 31 * DAY), touch(srv / "logs/app.log.3", 45 * DAY),
           touch(srv / "data/prod/deep/x.log.2026-01-01", 200 * DAY)]
    young = [touch(srv / "data/new.log", 29 * DAY), touch(srv / "logs/today.log", 60)]
    other = touch(srv / "data/notes.txt", 400 * DAY)
    stats = run(srv, None)
    assert stats.logs_deleted == 3
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in young) and other.exists()


def test_days_override_changes_the_age_limit(srv: Path) -> None:
    mid = touch(srv / "logs/mid.log", 20 * DAY)
    cfg = make_config(srv)
    CleanupWorker(dry_run=False, config=cfg, now=NOW, only=["logs"],
                  log_age_days=10).run_cleanup()
    assert not mid.exists()


def test_active_worker_logs_are_never_removed(srv: Path, tmpdir_: Path) -> None:
    names = ["architect_worker.log", "architect_cleanup_worker.log",
             "architect_assigner_worker.log", "architect_milestone_worker.log"]
    kept = [touch(srv / "logs" / n, 400 * DAY) for n in names]
    kept += [touch(tmpdir_ / n, 400 * DAY) for n in names]
    stats = run(srv, tmpdir_)
    assert all(p.exists() for p in kept)
    assert stats.logs_deleted == 0


def test_in_tmp_only_our_own_logs_at_the_top_level_go(srv: Path, tmpdir_: Path) -> None:
    ours = [touch(tmpdir_ / "architect_session.log", 40 * DAY),
            touch(tmpdir_ / "architect_api.log.1", 40 * DAY)]
    theirs = [touch(tmpdir_ / "postgres.log", 400 * DAY),
              touch(tmpdir_ / "x" / "architect_nested.log", 400 * DAY),
              touch(tmpdir_ / "architect_session.txt", 400 * DAY)]
    stats = run(srv, tmpdir_)
    assert stats.logs_deleted == 2
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)


def test_nothing_inside_a_browser_profile_is_touched(srv: Path) -> None:
    by_name = touch(srv / "data/chrome_profile_1/Default/chrome_debug.log", 400 * DAY)
    by_marker_dir = srv / "data/browser/profile_x"
    touch(by_marker_dir / "Local State", 400 * DAY, data=b"{}")
    by_marker = touch(by_marker_dir / "Default/old.log", 400 * DAY)
    dashed = touch(srv / "logs/chrome-profile-b/x.log", 400 * DAY)
    stats = run(srv, None)
    assert by_name.exists() and by_marker.exists() and dashed.exists()
    assert stats.logs_deleted == 0


def test_configured_excluded_directories_are_skipped(srv: Path) -> None:
    keep = touch(srv / "data/audit/keep.log", 400 * DAY)
    go = touch(srv / "data/other/go.log", 400 * DAY)
    run(srv, None, safety={"exclude_dirs": ["audit"]})
    assert keep.exists() and not go.exists()


def test_a_log_held_open_by_a_process_survives(srv: Path) -> None:
    held = touch(srv / "logs/held.log", 400 * DAY)
    with open(held, "rb"):
        stats = run(srv, None)
    assert held.exists()
    assert stats.targets["logs"].skipped == 1


def test_a_log_replaced_after_it_was_judged_is_kept_and_reported(srv: Path,
                                                                 monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from architect_cleanup.targets import base

    old = [touch(srv / "logs" / f"old{i}.log", 400 * DAY) for i in range(3)]
    real = base.unlink_all

    def swap_then_unlink(d, judged):  # type: ignore[no-untyped-def]
        old[1].unlink()
        touch(old[1], 400 * DAY, data=b"a new file under the old name")
        return real(d, judged)

    monkeypatch.setattr(base, "unlink_all", swap_then_unlink)
    stats = run(srv, None)
    assert old[1].read_bytes() == b"a new file under the old name"
    assert not old[0].exists() and not old[2].exists()
    t = stats.targets["logs"]
    assert (t.removed, t.skipped) == (2, 1)
    assert any("changed since it was checked" in e for e in t.errors)


def test_open_files_are_removed_when_the_check_is_turned_off(srv: Path) -> None:
    held = touch(srv / "logs/held.log", 400 * DAY)
    with open(held, "rb"):
        run(srv, None, safety={"skip_open_files": False})
    assert not held.exists()


def test_files_modified_in_the_future_are_kept_with_a_warning(srv: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    future = touch(srv / "logs/clock.log", -3600)
    slightly = touch(srv / "logs/skew.log", -120)  # 2 minutes ahead: within the slack
    run(srv, None, logs={"max_age": "1s"})
    assert future.exists()
    assert not slightly.exists() or slightly.exists()  # young either way; never an error
    assert "clock.log is modified" in caplog.text


def test_a_symlink_named_like_a_log_is_removed_but_its_target_is_not(srv: Path,
                                                                      tmp_path: Path) -> None:
    target = touch(tmp_path / "outside.log", 400 * DAY)
    link = srv / "logs/pointer.log"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    import os
    os.utime(link, (NOW.timestamp() - 400 * DAY,) * 2, follow_symlinks=False)
    run(srv, None)
    assert not link.is_symlink()
    assert target.exists()


def test_backups_in_backup_directories_are_left_to_the_backups_target(srv: Path) -> None:
    b = touch(srv / "data/prod/backups/architect_x.db.backup.log", 400 * DAY)
    stats = run(srv, None)
    assert b.exists()
    assert stats.logs_deleted == 0


def test_a_missing_tmp_dir_is_a_note_not_a_failure(srv: Path, tmp_path: Path) -> None:
    stats = run(srv, tmp_path / "nope")
    assert stats.targets["logs"].status == "ok"
