"""temp: patterns, whole cache directories, min_age, counts of files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, make_config, touch

#: every test with the file layer's loops in C and in Python (conftest.fs_loops)
pytestmark = pytest.mark.usefixtures("fs_loops")


def run(srv: Path, dry_run: bool = False, **sections: object):  # type: ignore[no-untyped-def]
    cfg = make_config(srv, None, **sections)  # type: ignore[arg-type]
    return CleanupWorker(dry_run=dry_run, config=cfg, now=NOW, only=["temp"]).run_cleanup()


def age_dir(path: Path, age: float) -> None:
    t = NOW.timestamp() - age
    os.utime(path, (t, t))


def test_old_temp_files_go_and_files_being_written_stay(srv: Path) -> None:
    old = [touch(srv / "data/x.tmp", 2 * HOUR), touch(srv / "a.temp", DAY),
           touch(srv / "data/r.cache", DAY), touch(srv / "app/m.pyc", DAY)]
    young = touch(srv / "data/writing.tmp", 30)
    stats = run(srv)
    assert stats.temp_files_deleted == 4
    assert not any(p.exists() for p in old)
    assert young.exists()


def test_cache_directories_go_whole_and_count_their_files(srv: Path) -> None:
    pc = srv / "app/__pycache__"
    for i in range(3):
        touch(pc / f"m{i}.cpython-311.pyc", DAY, size=10)
    touch(pc / "nested" / "deep.txt", DAY, size=5)
    age_dir(pc / "nested", DAY)
    age_dir(pc, DAY)
    ptc = srv / ".pytest_cache"
    touch(ptc / "v/cache/lastfailed", DAY, size=2)
    for p in (ptc / "v/cache", ptc / "v", ptc):
        age_dir(p, DAY)
    stats = run(srv)
    assert not pc.exists() and not ptc.exists()
    assert stats.temp_files_deleted == 5
    assert stats.space_freed == 37


def test_a_cache_directory_that_just_changed_stays(srv: Path) -> None:
    pc = srv / "app/__pycache__"
    touch(pc / "fresh.pyc", 10)
    age_dir(pc, 10)
    stats = run(srv)
    assert (pc / "fresh.pyc").exists()
    assert stats.temp_files_deleted == 0


def test_dry_run_counts_what_a_real_run_removes(srv: Path) -> None:
    pc = srv / "app/__pycache__"
    for i in range(4):
        touch(pc / f"m{i}.pyc", DAY, size=10)
    age_dir(pc, DAY)
    touch(srv / "data/x.tmp", DAY, size=3)
    dry = run(srv, dry_run=True)
    assert pc.exists()
    real = run(srv)
    assert (dry.temp_files_deleted, dry.space_freed) == (real.temp_files_deleted,
                                                         real.space_freed) == (5, 43)


def test_logs_and_backups_are_not_temp_files(srv: Path) -> None:
    log_tmp = touch(srv / "data/report.log.tmp", 2 * HOUR)  # a log by name: 30 days rule
    backup = touch(srv / "data/prod/backups/architect_1.db.backup.tmp", 2 * DAY)
    stats = run(srv)
    assert log_tmp.exists() and backup.exists()
    assert stats.temp_files_deleted == 0


def test_browser_profiles_are_skipped(srv: Path) -> None:
    cache = touch(srv / "data/chrome_profile_a/Default/Cache/x.tmp", DAY)
    prof = srv / "data/session"
    touch(prof / "Local State", DAY)
    inner = touch(prof / "Default/__pycache__/m.pyc", DAY)
    stats = run(srv)
    assert cache.exists() and inner.exists()
    assert stats.temp_files_deleted == 0


def test_a_fresh_file_inside_an_old_cache_directory_keeps_it(srv: Path) -> None:
    pc = srv / "app/__pycache__"
    old = touch(pc / "old.pyc", DAY)
    fresh = touch(pc / "rewritten.pyc", 10)  # rewritten in place: the dir's mtime is old
    age_dir(pc, DAY)
    stats = run(srv)
    assert fresh.exists() and not old.exists()
    assert stats.temp_files_deleted == 1


def test_min_age_is_configurable(srv: Path) -> None:
    f = touch(srv / "data/x.tmp", 10 * 60)
    run(srv, temp={"min_age": "5m"})
    assert not f.exists()
