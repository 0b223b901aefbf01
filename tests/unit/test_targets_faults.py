"""Faults in the per-file judgement shared by the logs and temp targets (targets/base.py) that
no unit test caught (issue 24): the age boundary, and a FIFO, socket or device named like a
log or a temporary file. Each test fails when its fault is seeded."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from architect_cleanup.targets.base import Decision, age_text
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, NOW_TS, make_config, touch


def run(srv: Path, only: str, *, dry_run: bool = False, **sections: Any
        ) -> tuple[Any, list[Decision]]:
    seen: list[Decision] = []
    cfg = make_config(srv, **sections)
    stats = CleanupWorker(dry_run=dry_run, config=cfg, now=NOW, only=[only],
                          on_decision=seen.append).run_cleanup()
    return stats, seen


def by_name(seen: list[Decision]) -> dict[str, Decision]:
    return {os.path.basename(d.path): d for d in seen}


# --- the age boundary ------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_log_exactly_max_age_old_is_kept_and_one_a_second_older_goes(
        srv: Path, dry_run: bool) -> None:
    """``max_age`` is "older than": a log exactly 30 days old stays."""
    at = touch(srv / "logs" / "at.log", 30 * DAY)
    over = touch(srv / "logs" / "over.log", 30 * DAY + 1)
    under = touch(srv / "logs" / "under.log", 30 * DAY - 1)
    stats, seen = run(srv, "logs", dry_run=dry_run, logs={"max_age": "30d"})
    got = by_name(seen)
    assert not got["at.log"].remove and not got["under.log"].remove
    assert got["over.log"].remove
    assert got["over.log"].reason == "30 days old > 30d"
    assert got["at.log"].reason == "30 days old, within 30d"
    assert stats.logs_deleted == 1
    assert at.exists() and under.exists()
    assert over.exists() is dry_run


def test_a_temporary_file_exactly_min_age_old_is_kept(srv: Path) -> None:
    at = touch(srv / "work" / "at.tmp", HOUR)
    over = touch(srv / "work" / "over.tmp", HOUR + 1)
    stats, seen = run(srv, "temp", temp={"min_age": "1h"})
    got = by_name(seen)
    assert not got["at.tmp"].remove and got["over.tmp"].remove
    assert at.exists() and not over.exists()
    assert stats.targets["temp"].removed == 1


def test_a_young_file_is_counted_as_kept_also_when_nobody_reads_decisions(srv: Path) -> None:
    touch(srv / "logs" / "young.log", DAY)
    touch(srv / "logs" / "old.log", 40 * DAY, size=7)
    cfg = make_config(srv)
    stats = CleanupWorker(dry_run=False, config=cfg, now=NOW, only=["logs"]).run_cleanup()
    t = stats.targets["logs"]
    assert (t.removed, t.kept, t.bytes) == (1, 1, 7)


@pytest.mark.parametrize("seconds, text", [(2 * DAY, "2 days old"), (2 * DAY - 1, "48 hours old"),
                                           (2 * HOUR, "2 hours old"),
                                           (2 * HOUR - 1, "120 minutes old"), (0, "0 minutes old")])
def test_ages_read_in_days_then_hours_then_minutes(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


# --- not regular files -----------------------------------------------------------------------


def _fifo(p: Path, age: float) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(p)
    t = NOW_TS - age
    os.utime(p, (t, t), follow_symlinks=False)
    return p


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def _socket(p: Path, age: float, held: list[socket.socket]) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    held.append(s)
    t = NOW_TS - age
    os.utime(p, (t, t), follow_symlinks=False)
    return p


def _device(p: Path, age: float) -> Path | None:
    if os.geteuid() != 0:
        return None
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    t = NOW_TS - age
    os.utime(p, (t, t), follow_symlinks=False)
    return p


@pytest.mark.parametrize("target, ext, section", [("logs", "log", {}),
                                                  ("temp", "tmp", {})])
def test_a_fifo_socket_or_device_named_like_a_candidate_is_kept(
        srv: Path, unix_socket: list[socket.socket], target: str, ext: str,
        section: dict[str, Any]) -> None:
    old = 400 * DAY
    specials = [_fifo(srv / "data" / f"pipe.{ext}", old),
                _socket(srv / "data" / f"sock.{ext}", old, unix_socket)]
    dev = _device(srv / "data" / "sub" / f"null.{ext}", old)
    if dev is not None:
        specials.append(dev)
    plain = touch(srv / "data" / f"plain.{ext}", old)
    for dry_run in (True, False):
        stats, seen = run(srv, target, dry_run=dry_run)
        got = by_name(seen)
        for p in specials:
            assert p.exists() or p.is_socket() or p.is_fifo(), p
            assert not got[p.name].remove
            assert got[p.name].reason == "not a regular file"
        assert stats.targets[target].removed == 1
    assert not plain.exists()
    assert all(os.path.lexists(p) for p in specials)


def test_an_old_symlink_named_like_a_log_is_removed_and_its_target_is_not(
        srv: Path, tmp_path: Path) -> None:
    victim = touch(tmp_path / "victim" / "precious.log", 400 * DAY, data=b"precious")
    link = srv / "data" / "old.log"
    link.symlink_to(victim)
    t = NOW_TS - 400 * DAY
    os.utime(link, (t, t), follow_symlinks=False)
    (srv / "data" / "sub").mkdir()  # a directory with sub-directories is listed by scandir
    stats, _ = run(srv, "logs")
    assert not os.path.lexists(link)
    assert victim.read_bytes() == b"precious"
    assert stats.targets["logs"].bytes == 0  # a link frees no data


# --- whole directories -----------------------------------------------------------------------


def test_a_file_replaced_inside_a_directory_removed_whole_fails_nothing(
        srv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .pyc rewritten (renamed over) at the moment __pycache__ is removed: that file and its
    directory stay, reported; the rest goes, and the temp target goes on and ends ok."""
    from architect_cleanup import worker as worker_mod
    from architect_cleanup.fs import OpenFiles

    cache = srv / "app" / "__pycache__"
    touch(cache / "a.pyc", DAY, size=3)
    touch(cache / "b.pyc", DAY, size=5)
    other = touch(srv / "lib" / "__pycache__" / "c.pyc", DAY, size=7)
    for d in (cache, other.parent):
        os.utime(d, (NOW_TS - DAY,) * 2)

    class Rewriter(OpenFiles):
        def is_open(self, st: os.stat_result) -> bool:
            if st.st_size == 3:
                touch(cache / ".new", 0, data=b"new")
                os.rename(cache / ".new", cache / "a.pyc")
            return False

    monkeypatch.setattr(worker_mod, "OpenFiles", Rewriter)
    stats, _ = run(srv, "temp")
    t = stats.targets["temp"]
    assert t.status == "ok"
    assert (t.removed, t.bytes, t.skipped) == (2, 12, 1)
    assert [e for e in t.errors if "changed since it was checked" in e] == [
        f"{cache}/a.pyc: changed since it was checked"]
    assert (cache / "a.pyc").read_bytes() == b"new" and not (cache / "b.pyc").exists()
    assert not other.parent.exists()


# --- starting directories --------------------------------------------------------------------


def test_start_directories_are_judged_once_each_shallowest_first() -> None:
    from architect_cleanup.targets.base import unique_dirs

    assert unique_dirs(("logs", "logs/x", "logs/x/y")) == ["logs"]
    assert unique_dirs(("logs", "logsx", "logs/")) == ["logs", "logsx"]
    assert unique_dirs(("b", "a/x", "a", "c/d/e")) == ["a", "b", "c/d/e"]
    assert unique_dirs(("b/c", "a/x/y", "b")) == ["b", "a/x/y"]
    assert unique_dirs(("-x", ".", "a/b")) == ["."]  # "." holds everything
    assert unique_dirs(("./a", "a/./b", "c")) == ["a", "c"]


def test_a_file_below_two_configured_directories_is_judged_once(srv: Path) -> None:
    touch(srv / "-old" / "a.tmp", 40 * DAY, size=3)
    stats, seen = run(srv, "temp", dry_run=True, temp={"dirs": ["-old", "."]})
    assert [d.path for d in seen if d.remove] == [f"{srv}/-old/a.tmp"]
    assert stats.targets["temp"].removed == 1


def test_under_is_true_for_a_listed_directory_and_below_only() -> None:
    from architect_cleanup.targets.base import under

    dirs = frozenset({"/srv/a/data/prod/backups", "/srv/a/data/backups"})
    assert under("/srv/a/data/prod/backups", dirs)
    assert under("/srv/a/data/prod/backups/x/y", dirs)
    assert not under("/srv/a/data/prod/backupsx", dirs)
    assert not under("/srv/a/data/prod", dirs)
    assert not under("/", dirs)
    assert not under("relative/path", dirs)


def test_young_files_are_counted_one_by_one_when_nobody_reads_decisions(srv: Path) -> None:
    for i in range(3):
        touch(srv / "logs" / f"young{i}.log", DAY)
    cfg = make_config(srv)
    stats = CleanupWorker(dry_run=True, config=cfg, now=NOW, only=["logs"]).run_cleanup()
    assert stats.targets["logs"].kept == 3


def test_a_log_exactly_at_the_future_limit_is_young_not_in_the_future(srv: Path) -> None:
    touch(srv / "logs" / "edge.log", -300)  # now + FUTURE_SLACK
    touch(srv / "logs" / "beyond.log", -301)
    _, seen = run(srv, "logs")
    got = by_name(seen)
    assert got["edge.log"].reason == "0 minutes old, within 30d"
    assert got["beyond.log"].reason == "modified 5 minutes in the future"


def test_names_the_backups_target_owns_are_passed_over_and_the_rest_judged(
        srv: Path) -> None:
    d = srv / "data" / "prod" / "backups"
    owned = [touch(d / f"x{i}.log.bak", 400 * DAY) for i in range(4)]
    logs = [touch(d / f"old{i}.log", 400 * DAY) for i in range(4)]
    stats, seen = run(srv, "logs")
    assert sorted(os.path.basename(x.path) for x in seen) == sorted(p.name for p in logs)
    assert all(p.exists() for p in owned) and not any(p.exists() for p in logs)
    assert stats.targets["logs"].removed == 4


def test_a_name_that_vanished_since_the_listing_is_passed_over_and_the_rest_judged(
        srv: Path) -> None:
    from architect_cleanup.fs import Root
    from architect_cleanup.stats import TargetResult
    from architect_cleanup.targets.base import RunContext
    from architect_cleanup.targets.logs import Logs

    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=3)
    ctx = RunContext(make_config(srv), NOW, dry_run=False)
    result = TargetResult("logs")
    with Root.open(str(d)) as root:
        Logs().age_work(ctx, root.dir, ["gone.log", "old.log"], max_age=DAY, limit="1d",
                        young="within")(result)
    assert (result.removed, result.kept, result.skipped, result.bytes) == (1, 0, 0, 3)
    assert not (d / "old.log").exists()
