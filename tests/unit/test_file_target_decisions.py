"""Every way the per-file judgement (targets/base.py, through the logs target) can decide, in
one directory, with the exact decision, reason and count of each: old, young, in the future,
not a regular file, protected, owned by the backups target, held open, vanished, replaced and
refused at the last moment. Written against the mutation run of issue 24 (tests/mutation):
a run that crashes, miscounts or words a reason differently fails here."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from architect_cleanup import worker as worker_mod
from architect_cleanup.fs import FsError, OpenFiles, Root
from architect_cleanup.history import Item
from architect_cleanup.journal import MESSAGE_IDS
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets import base as base_mod
from architect_cleanup.targets.base import (
    FUTURE_SLACK,
    READONLY_HINT,
    Decision,
    FileTarget,
    Hold,
    Interrupted,
    RunContext,
    Target,
    hold_text,
    human_duration,
    on_readonly_fs,
)
from architect_cleanup.targets.logs import Logs
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, NOW_TS, make_config, touch

#: file name -> what happens to it at the last moment (right before its unlink)
LastMoment = dict[str, Callable[[Path], None]]


def me() -> str:
    """How the open-files rule names this test process (it holds the files open): its
    ``comm``, which a runner may have renamed (mutmut's workers call themselves mutmut)."""
    with open(f"/proc/{os.getpid()}/comm", encoding="utf-8") as fh:
        return f"PID {os.getpid()} ({fh.read().strip()})"


@pytest.fixture
def last_moment(monkeypatch: pytest.MonkeyPatch) -> LastMoment:
    """Actions run by the open-file check, which runs right before each unlink."""
    actions: LastMoment = {}

    class Hook(OpenFiles):
        def is_open(self, st: os.stat_result) -> bool:
            for name, act in list(actions.items()):
                p = Path(act.__dict__.get("dir", "")) / name
                try:
                    if os.lstat(p).st_ino == st.st_ino:
                        del actions[name]
                        act(p)
                except FileNotFoundError:
                    pass
            return super().is_open(st)

    monkeypatch.setattr(worker_mod, "OpenFiles", Hook)
    return actions


def at(d: Path, act: Callable[[Path], None]) -> Callable[[Path], None]:
    act.__dict__["dir"] = str(d)
    return act


def vanish(p: Path) -> None:
    os.unlink(p)


def replace(p: Path) -> None:
    touch(p.with_name(".new"), 0, data=b"new")
    os.rename(p.with_name(".new"), p)


def run(cfg: Any, *, dry: bool = False) -> tuple[Any, dict[str, Decision]]:
    seen: list[Decision] = []
    stats = CleanupWorker(dry_run=dry, config=cfg, now=NOW, only=["logs"],
                          on_decision=seen.append).run_cleanup()
    return stats, {os.path.basename(d.path): d for d in seen}


def test_each_kind_of_file_gets_its_decision_reason_and_count(
        srv: Path, last_moment: LastMoment, caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "old2.log.1", 3 * DAY + 1, size=7)
    touch(d / "young.log", DAY)
    touch(d / "ahead.log", -2 * HOUR)  # two hours in the future
    touch(d / "architect_worker.log", 400 * DAY)
    os.mkfifo(d / "pipe.log")
    touch(d / "held.log", 40 * DAY, size=11)
    touch(d / "held2.log", 40 * DAY, size=11)
    touch(d / "gone.log", 40 * DAY, size=13)
    touch(d / "swapped.log", 40 * DAY, size=17)
    touch(srv / "data" / "prod" / "backups" / "x.log.bak", 400 * DAY)  # the backups'
    last_moment["gone.log"] = at(d, vanish)
    last_moment["swapped.log"] = at(d, replace)
    fds = [os.open(d / n, os.O_RDONLY) for n in ("held.log", "held2.log")]
    caplog.set_level(logging.WARNING, logger="architect_cleanup")
    try:
        stats, got = run(make_config(srv, logs={"max_age": "3d"}))
    finally:
        for fd in fds:
            os.close(fd)
    t = stats.targets["logs"]
    assert t.status == "ok"
    assert {n: (dec.remove, dec.reason) for n, dec in got.items()} == {
        "old.log": (True, "40 days old > 3d"),
        "old2.log.1": (True, "3 days old > 3d"),
        "young.log": (False, "24 hours old, within 3d"),
        "ahead.log": (False, "modified 2 hours in the future"),
        "architect_worker.log": (False, "active worker log (logs.protect)"),
        "pipe.log": (False, "not a regular file"),
        "held.log": (False, f"open by {me()}; a rule would remove it: "
                            "40 days old > 3d"),
        "held2.log": (False, f"open by {me()}; a rule would remove it: "
                             "40 days old > 3d"),
        "gone.log": (False, "vanished before removal"),
        "swapped.log": (False, "changed since it was checked"),
    }
    assert (t.removed, t.bytes, t.kept, t.skipped) == (2, 12, 6, 4)
    assert {dec.target for dec in got.values()} == {"logs"}
    assert t.errors == [f"{d}/swapped.log: changed since it was checked"]
    assert sorted(os.listdir(d)) == ["ahead.log", "architect_worker.log", "held.log",
                                     "held2.log", "pipe.log", "swapped.log", "young.log"]
    assert (srv / "data" / "prod" / "backups" / "x.log.bak").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "in the future" in r.getMessage()]
    assert warnings == [f"logs: {d}/ahead.log is modified 2 hours in the future; kept"]


def test_a_dry_run_decides_the_same_without_the_last_moment(srv: Path) -> None:
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "young.log", DAY)
    stats, got = run(make_config(srv), dry=True)
    assert {n: (dec.remove, dec.reason, dec.size) for n, dec in got.items()} == {
        "old.log": (True, "40 days old > 30d", 5),
        "young.log": (False, "24 hours old, within 30d", 0),
    }
    assert str(got["old.log"]) == f"would remove logs    {d}/old.log (40 days old > 30d)"
    assert str(got["young.log"]) == (f"keep         logs    {d}/young.log "
                                      "(24 hours old, within 30d)")
    t = stats.targets["logs"]
    assert (t.removed, t.bytes, t.kept, t.skipped, t.status) == (1, 5, 1, 0, "ok")
    assert (d / "old.log").exists()


def test_a_file_held_open_at_the_last_moment_is_kept_in_every_mode(srv: Path) -> None:
    d = srv / "logs"
    touch(d / "held.log", 40 * DAY, size=3)
    fd = os.open(d / "held.log", os.O_RDONLY)
    try:
        for dry in (True, False):
            stats, got = run(make_config(srv), dry=dry)
            assert not got["held.log"].remove
            assert stats.targets["logs"].skipped == 1
    finally:
        os.close(fd)
    assert (d / "held.log").exists()


def test_with_skip_open_files_off_an_open_file_goes(srv: Path) -> None:
    d = srv / "logs"
    touch(d / "held.log", 40 * DAY, size=3)
    fd = os.open(d / "held.log", os.O_RDONLY)
    try:
        _, got = run(make_config(srv, safety={"skip_open_files": False}))
    finally:
        os.close(fd)
    assert got["held.log"].remove and not (d / "held.log").exists()


def test_only_the_first_ten_future_files_are_warned_about(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "logs"
    for i in range(12):
        touch(d / f"ahead{i:02d}.log", -DAY)
    caplog.set_level(logging.WARNING, logger="architect_cleanup")
    stats, _ = run(make_config(srv))
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "in the future" in r.getMessage()]
    assert len(warnings) == 10
    assert all(w.endswith(" is modified 1 day in the future; kept") for w in warnings)
    assert stats.targets["logs"].kept == 12


def test_a_file_a_few_minutes_ahead_is_judged_like_any_young_file(srv: Path) -> None:
    d = srv / "logs"
    touch(d / "skew.log", -299)  # within the 5 minutes of slack
    touch(d / "ahead.log", -301)
    _, got = run(make_config(srv))
    assert got["skew.log"].reason == "-5 minutes old, within 30d" or \
        got["skew.log"].reason == "0 minutes old, within 30d"
    assert got["ahead.log"].reason == "modified 5 minutes in the future"


# --- a read-only file system -----------------------------------------------------------------


@pytest.fixture
def small_root(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    mnt = tmp_path / "srv"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_read_only_file_system_is_reported_once_with_the_hint(
        small_root: Path, last_moment: LastMoment, caplog: pytest.LogCaptureFixture) -> None:
    """The file system turns read-only during the run (as under ProtectSystem=strict when a
    path is outside ReadWritePaths=): each refused unlink is an error, the first with the
    hint, and one readonly_path journal entry is written."""
    d = small_root / "logs"
    for i in range(3):
        touch(d / f"old{i}.log", 40 * DAY, size=1)

    def remount(_p: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(small_root)], check=True)

    last_moment["old0.log"] = at(d, remount)
    caplog.set_level(logging.ERROR, logger="architect_cleanup")
    stats, got = run(make_config(small_root))
    assert on_readonly_fs(str(small_root))
    t = stats.targets["logs"]
    assert t.status == "failed"
    assert t.message == ("3 item(s) not removed: read-only file system, outside the "
                         "service's writable paths (ReadWritePaths=)")
    assert (t.removed, t.skipped) == (0, 3)
    assert [got[f"old{i}.log"].remove for i in range(3)] == [False] * 3
    assert {got[f"old{i}.log"].target for i in range(3)} == {"logs"}
    first = t.errors[0].split(": ")[0]  # the first refused unlink (in listing order)
    assert sorted(t.errors) == sorted(
        f"{d}/old{i}.log: Read-only file system"
        + (READONLY_HINT if f"{d}/old{i}.log" == first else "") for i in range(3))
    assert {got[f"old{i}.log"].reason for i in range(3)} == {
        "removal failed: Read-only file system"}
    entries = [r for r in caplog.records if r.name == "architect_cleanup.targets.base"]
    assert len(entries) == 1
    assert entries[0].getMessage() == f"logs: {first} is on a read-only file system" \
        + READONLY_HINT
    assert ("logs", first) == (entries[0].CLEANUP_TARGET, entries[0].CLEANUP_PATH)
    assert MESSAGE_IDS["readonly_path"].hex == entries[0].MESSAGE_ID


def test_on_readonly_fs_tells_a_read_only_mount(tmp_path: Path) -> None:
    assert not on_readonly_fs(str(tmp_path))
    assert not on_readonly_fs(str(tmp_path / "missing"))


@pytest.fixture
def bind_mounted(tmp_path: Path) -> Iterator[list[Path]]:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    mounted: list[Path] = []
    yield mounted
    for p in mounted:
        subprocess.run(["umount", str(p)], check=False)


def test_a_refused_unlink_is_an_error_with_its_reason_and_no_hint(
        srv: Path, bind_mounted: list[Path]) -> None:
    """A file something is mounted over cannot be unlinked (EBUSY): counted as skipped, an
    error naming it, and no read-only hint."""
    d = srv / "logs"
    busy = touch(d / "busy.log", 40 * DAY, size=1)
    source = touch(srv / "elsewhere.txt", 40 * DAY, size=2)
    subprocess.run(["mount", "--bind", str(source), str(busy)], check=True)
    bind_mounted.append(busy)
    touch(d / "plain.log", 40 * DAY, size=4)
    stats, got = run(make_config(srv))
    t = stats.targets["logs"]
    assert t.errors == [f"{busy}: Device or resource busy"]
    assert (got["busy.log"].remove, got["busy.log"].reason, got["busy.log"].target) == (
        False, "removal failed: Device or resource busy", "logs")
    assert (t.removed, t.bytes, t.skipped) == (1, 4, 1)
    assert busy.exists()


# --- RunContext.root/close/status/readonly/decide, Target, Decision.__str__, human_duration,
# --- hold_text (issue 24: the run context's own effects, each pinned) -----------------------


def context(srv: Path, **kw: Any) -> RunContext:
    return RunContext(make_config(srv), NOW, dry_run=False, **kw)


def test_the_run_context_opens_each_root_once_and_remembers_a_failure(
        srv: Path, tmp_path: Path) -> None:
    ctx = context(srv)
    first = ctx.root()
    assert first.dir.path == str(srv)
    assert ctx.root() is first and ctx.root(str(srv)) is first
    other = ctx.root(str(tmp_path))
    assert other is not first and other.dir.path == str(tmp_path)
    missing = str(tmp_path / "missing")
    with pytest.raises(FsError) as one:
        ctx.root(missing)
    with pytest.raises(FsError) as two:
        ctx.root(missing)
    assert two.value is one.value
    assert str(one.value) == f"{missing}: does not exist"
    fd = first.dir.fd
    ctx.close()
    assert first.dir.fd == -1 and other.dir.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    again = ctx.root()
    assert again is not first and again.dir.fd >= 0
    ctx.close()


def test_progress_is_sent_at_most_once_a_second_unless_forced(
        srv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(base_mod, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    sent: list[str] = []
    ctx = context(srv, on_status=sent.append)
    ctx.status("a")
    clock[0] = 100.5
    ctx.status("b")
    ctx.status("c", force=True)
    clock[0] = 101.5  # exactly one interval after the last one sent
    ctx.status("d")
    clock[0] = 102.4
    ctx.status("e")
    assert sent == ["a", "c", "d"]
    context(srv).status("nobody listens", force=True)  # no receiver: nothing to do


def test_read_only_refusals_are_counted_per_target_and_hinted_once_each(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = context(srv)
    caplog.set_level(logging.ERROR, logger="architect_cleanup")
    assert ctx.readonly("logs", "/x/a") == READONLY_HINT
    assert ctx.readonly("logs", "/x/b", 3) == ""
    assert ctx.readonly("temp", "/x/c", 2) == READONLY_HINT
    assert ctx.readonly_refused == {"logs": 4, "temp": 2}
    entries = [r for r in caplog.records if r.name == "architect_cleanup.targets.base"]
    assert [(r.levelno, r.getMessage()) for r in entries] == [
        (logging.ERROR, "logs: /x/a is on a read-only file system" + READONLY_HINT),
        (logging.ERROR, "temp: /x/c is on a read-only file system" + READONLY_HINT)]
    assert [(r.CLEANUP_TARGET, r.CLEANUP_PATH) for r in entries] == [
        ("logs", "/x/a"), ("temp", "/x/c")]


def test_with_debug_logging_every_decision_is_logged_without_a_reader(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "young.log", DAY)
    caplog.set_level(logging.DEBUG, logger="architect_cleanup.targets.base")
    stats = CleanupWorker(dry_run=True, config=make_config(srv), now=NOW,  # no reader at all
                          only=["logs"]).run_cleanup()
    lines = [r.getMessage() for r in caplog.records
             if r.name == "architect_cleanup.targets.base" and r.levelno == logging.DEBUG]
    assert sorted(lines) == [f"keep         logs    {d}/young.log (24 hours old, within 30d)",
                             f"would remove logs    {d}/old.log (40 days old > 30d)"]
    assert stats.targets["logs"].removed == 1


def test_a_decision_reads_as_one_line_naming_its_siblings() -> None:
    d = Decision("backups", "/b/x.db", True, "older than 7d", 10, dry_run=False,
                 siblings=("x.db-wal", "x.db-shm"))
    assert str(d) == "removed      backups /b/x.db (older than 7d) with x.db-wal, x.db-shm"
    d.dry_run = True
    assert str(d).startswith("would remove backups /b/x.db")


def test_a_target_is_enabled_by_its_section_and_configured_unless_it_says_otherwise(
        srv: Path) -> None:
    class LogsLike(Target):
        name = "logs"

    class NoSection(Target):
        name = "no-such-section"

    class SectionWithoutSwitch(Target):
        name = "safety"

    on, off = make_config(srv), make_config(srv, logs={"enabled": False})
    assert LogsLike().enabled(on) is True and LogsLike().enabled(off) is False
    assert NoSection().enabled(on) is True and SectionWithoutSwitch().enabled(on) is True
    assert LogsLike().configured(off) is True
    with pytest.raises(NotImplementedError):
        NoSection().run(context(srv), TargetResult("no-such-section"))


@pytest.mark.parametrize("seconds, text", [
    (0, "0 seconds"), (1, "1 second"), (59.9, "59 seconds"), (60, "1 minute"),
    (119, "1 minute"), (120, "2 minutes"), (HOUR, "1 hour"), (DAY, "1 day"),
    (13 * DAY, "1 week"), (14 * DAY, "2 weeks"), (30 * DAY, "1 month"),
    (365 * DAY, "1 year"), (2 * 365 * DAY, "2 years"), (-5, "0 seconds")])
def test_a_span_reads_in_its_largest_whole_unit(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_a_hold_reads_as_its_reason_said_exactly(srv: Path, tmp_path: Path) -> None:
    f = touch(tmp_path / "f.log", -2 * DAY)
    st = os.stat(f)
    ctx = context(srv)
    assert hold_text(ctx, st, Hold.FUTURE) == "modified 2 days in the future"
    assert hold_text(ctx, st, Hold.OPEN) == "open by a running process"  # no open-files check
    ctx.open_files = OpenFiles()
    assert hold_text(ctx, st, Hold.OPEN) == "open by a running process"  # nobody holds it
    with open(f, "rb"):
        ctx.open_files = OpenFiles()
        assert hold_text(ctx, st, Hold.OPEN) == f"open by {me()}"


# --- FileTarget.age_work / removal_work / _by_age: what the history and the counts get -------


def judge_logs(srv: Path, *batches: list[str], dry: bool, **kw: Any) -> TargetResult:
    """Judge each batch of names in srv/logs in turn, into one result."""
    ctx = RunContext(make_config(srv), NOW, dry_run=dry, **kw)
    result = TargetResult("logs")
    with Root.open(str(srv / "logs")) as root:
        for names in batches:
            Logs().age_work(ctx, root.dir, names, max_age=30 * DAY, limit="30d",
                            young="within", protected=lambda n: n.startswith("architect_"),
                            protected_reason="ours")(result)
    return result


@pytest.mark.parametrize("dry", [True, False])
def test_each_removed_log_is_recorded_for_the_history_also_without_a_decision_reader(
        srv: Path, dry: bool) -> None:
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "older.log", 50 * DAY, size=3)
    touch(d / "young.log", DAY, size=7)
    touch(d / "young2.log", 2 * DAY, size=11)
    touch(d / "ahead.log", -DAY, size=13)  # in the future: kept, its bytes counted as kept
    items: list[Item] = []
    result = judge_logs(srv, ["old.log", "young.log", "ahead.log"], ["older.log", "young2.log"],
                        dry=dry, on_item=items.append)  # two batches: the counts add up
    assert items == [Item("logs", f"{d}/old.log", 5, NOW_TS - 40 * DAY, "40 days old > 30d"),
                     Item("logs", f"{d}/older.log", 3, NOW_TS - 50 * DAY, "50 days old > 30d")]
    assert (result.removed, result.bytes, result.kept, result.kept_bytes, result.skipped) == (
        2, 8, 3, 31, 0)
    assert (d / "old.log").exists() is dry and (d / "older.log").exists() is dry


@pytest.mark.parametrize("dry", [True, False])
def test_a_directorys_removed_logs_go_to_the_history_in_one_call(srv: Path, dry: bool
                                                                 ) -> None:
    """With the history's per-directory hook (RunWriter.dir_items) and no one reading
    decisions, a directory's removed files are handed over at once: its path with the final
    slash, and each file's name, size, mtime and reason, in order; none item by item. A
    directory with nothing removed hands nothing."""
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "older.log", 50 * DAY, size=3)
    touch(d / "young.log", DAY, size=7)
    items: list[Item] = []
    dirs: list[tuple[str, str, list[Any]]] = []
    result = judge_logs(srv, ["old.log", "young.log", "older.log"], ["young.log"], dry=dry,
                        on_item=items.append,
                        on_dir_items=lambda t, f, rows: dirs.append((t, f, list(rows))))
    assert items == []
    assert dirs == [("logs", f"{d}/", [("old.log", 5, NOW_TS - 40 * DAY, "40 days old > 30d"),
                                      ("older.log", 3, NOW_TS - 50 * DAY,
                                       "50 days old > 30d")])]
    assert (result.removed, result.bytes) == (2, 8)
    seen: list[Decision] = []  # decisions read: item by item, as before
    touch(d / "old.log", 40 * DAY, size=5)
    judge_logs(srv, ["old.log"], dry=True, on_item=items.append, on_decision=seen.append,
               on_dir_items=lambda t, f, rows: dirs.append((t, f, list(rows))))
    assert [x.path for x in items] == [f"{d}/old.log"] and len(dirs) == 1
    judge_logs(srv, ["old.log"], dry=True,  # no history: nothing recorded either way
               on_dir_items=lambda t, f, rows: dirs.append((t, f, list(rows))))
    assert len(dirs) == 1


def test_the_last_moment_sort_keeps_a_file_from_the_future_or_held_open(
        tmp_path: Path) -> None:
    """last_moment_sort: last_moment_keep of each file in one loop, in order (the age
    rule's doomed files are old, so its future test is a guard: pinned here)."""
    ctx = RunContext(make_config(tmp_path), NOW, dry_run=True, open_files=OpenFiles())
    held = open(touch(tmp_path / "held"), "rb")  # noqa: SIM115
    try:
        def st(mtime: float, path: Path | None = None) -> Any:
            real = os.stat(path or tmp_path)
            return SimpleNamespace(st_mtime=mtime, st_dev=real.st_dev, st_ino=real.st_ino)

        now = NOW_TS
        judged = [("at-limit", st(ctx.future_limit)), ("beyond", st(ctx.future_limit + 1e-3)),
                  ("open", st(now - 99 * DAY, tmp_path / "held")), ("old", st(now - DAY))]
        go, kept = base_mod.last_moment_sort(ctx, judged)
        assert [n for n, _s in go] == ["at-limit", "old"]
        assert [(n, why) for n, _s, why in kept] == [("beyond", Hold.FUTURE),
                                                     ("open", Hold.OPEN)]
        assert [base_mod.FileTarget().last_moment_keep(ctx, s) for _n, s in judged] == [
            None, Hold.FUTURE, Hold.OPEN, None]
    finally:
        held.close()


@pytest.mark.parametrize("dirs", [frozenset({"/srv/a", "/srv/b/c"}), frozenset({"/"}),
                                  frozenset({"rel/x"}), frozenset()])
def test_under_with_memory_answers_as_under_and_walks_up_only_to_a_known_directory(
        monkeypatch: pytest.MonkeyPatch, dirs: frozenset[str]) -> None:
    paths = ["/srv/a", "/srv/a/x/y", "/srv/ab", "/srv/b", "/srv/b/c/d/e", "/srv/b/c/d/f",
             "/", "rel/x/y", "rel", "", "/srv/a/x/y/z"]
    u = base_mod.Under(dirs)
    for p in paths:
        assert u(p) is base_mod.under(p, dirs), (p, dirs)
    calls: list[str] = []
    real = base_mod.os.path.dirname

    def dirname(p: str) -> str:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(base_mod.os.path, "dirname", dirname)
    u = base_mod.Under(dirs)
    want = base_mod.under("/srv/b/c/d/f", dirs), base_mod.under("/srv/b/c/d", dirs)
    assert u("/srv/b/c/d/e") is base_mod.under("/srv/b/c/d/e", dirs)
    calls.clear()
    assert u("/srv/b/c/d/f") is want[0]
    assert calls == ["/srv/b/c/d/f"]  # one step up, to a directory it knows
    assert u._memo["/srv/b/c/d"] is want[1]


def test_under_with_memory_remembers_a_bounded_number_of_directories(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_mod, "UNDER_MEMO", 4)
    u = base_mod.Under(frozenset({"/x"}))
    assert u("/x/a/b") is True
    assert u._memo == {"/x/a/b": True, "/x/a": True}  # the path and what lies between
    assert u("/x/a/c") is True and len(u._memo) == 3
    assert u("/y") is False and len(u._memo) == 4  # exactly at the bound: kept
    assert u("/y/z") is False and u._memo == {"/y/z": False}  # past it: begun again


def test_the_age_rule_decides_and_records_each_file_when_both_are_read(srv: Path) -> None:
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "young.log", DAY, size=7)
    items: list[Item] = []
    seen: list[Decision] = []
    result = judge_logs(srv, ["old.log", "young.log"], dry=False, on_item=items.append,
                        on_decision=seen.append)
    assert [(x.path, x.remove, x.reason, x.size, x.dry_run) for x in seen] == [
        (f"{d}/young.log", False, "24 hours old, within 30d", 0, False),
        (f"{d}/old.log", True, "40 days old > 30d", 5, False)]
    assert [x.path for x in items] == [f"{d}/old.log"]
    assert (result.removed, result.bytes, result.kept, result.kept_bytes) == (1, 5, 1, 7)


# --- FileTarget.remove / keep / _kept_at_last_moment / _not_removed: one item with siblings --


class OneByOne(FileTarget):
    name = "backups"


def backup_trio(srv: Path, *, wal_age: float = 40 * DAY) -> tuple[Path, list[tuple[str, Any]]]:
    d = srv / "b"
    touch(d / "x.db", 40 * DAY, size=100)
    touch(d / "x.db-wal", wal_age, size=30)
    touch(d / "x.db-shm", 40 * DAY, size=7)
    return d, [(n, os.lstat(d / n)) for n in ("x.db", "x.db-wal", "x.db-shm")]


def remove_one(srv: Path, d: Path, judged: list[tuple[str, Any]], *, dry: bool = False,
               part: str | None = "prod", open_files: OpenFiles | None = None,
               decisions: bool = True, result: TargetResult | None = None
               ) -> tuple[bool, TargetResult, list[Decision], list[Item]]:
    seen: list[Decision] = []
    items: list[Item] = []
    ctx = RunContext(make_config(srv), NOW, dry_run=dry, open_files=open_files,
                     on_decision=seen.append if decisions else None, on_item=items.append)
    result = TargetResult("backups") if result is None else result
    (name, st), *siblings = judged
    with Root.open(str(d)) as root:
        gone = OneByOne().remove(ctx, result, root.dir, name, st, lambda: "older than 7d",
                                 part=part, siblings=tuple(siblings))
    return gone, result, seen, items


@pytest.mark.parametrize("dry", [True, False])
def test_a_file_removed_with_its_siblings_counts_them_all_in_its_part(
        srv: Path, dry: bool) -> None:
    d, judged = backup_trio(srv)
    gone, result, seen, items = remove_one(srv, d, judged, dry=dry)
    assert gone is True
    assert (result.removed, result.bytes, result.kept, result.skipped) == (1, 137, 0, 0)
    assert result.detail == {"prod": {"removed": 1, "bytes": 137, "kept": 0}}
    assert [(x.target, x.path, x.remove, x.reason, x.size, x.siblings, x.dry_run)
            for x in seen] == [("backups", f"{d}/x.db", True, "older than 7d", 137,
                                ("x.db-wal", "x.db-shm"), dry)]
    assert items == [Item("backups", f"{d}/x.db", 137, NOW_TS - 40 * DAY, "older than 7d",
                          "prod")]
    assert sorted(os.listdir(d)) == (["x.db", "x.db-shm", "x.db-wal"] if dry else [])


def test_a_file_removed_without_a_part_or_a_decision_reader_is_still_recorded(
        srv: Path) -> None:
    d, judged = backup_trio(srv)
    gone, result, seen, items = remove_one(srv, d, judged[:1], part=None, decisions=False)
    assert gone and seen == [] and result.detail == {}
    assert (result.removed, result.bytes) == (1, 100)
    assert items == [Item("backups", f"{d}/x.db", 100, NOW_TS - 40 * DAY, "older than 7d")]
    assert sorted(os.listdir(d)) == ["x.db-shm", "x.db-wal"]


def test_a_sibling_held_open_keeps_its_file_naming_the_siblings_holder(srv: Path) -> None:
    d, judged = backup_trio(srv)
    with open(d / "x.db-wal", "rb"):
        gone, result, seen, items = remove_one(srv, d, judged, open_files=OpenFiles())
    assert gone is False and items == []
    assert (result.removed, result.bytes, result.kept, result.skipped) == (0, 0, 1, 1)
    assert result.detail == {"prod": {"removed": 0, "bytes": 0, "kept": 1}}
    assert [(x.path, x.remove, x.reason) for x in seen] == [
        (f"{d}/x.db", False, f"open by {me()}; a rule would remove it: older than 7d")]
    assert sorted(os.listdir(d)) == ["x.db", "x.db-shm", "x.db-wal"]


def test_a_file_held_open_itself_is_kept_naming_its_holder(srv: Path) -> None:
    d, judged = backup_trio(srv)
    with open(d / "x.db", "rb"):
        gone, result, seen, _ = remove_one(srv, d, judged, open_files=OpenFiles())
    assert gone is False and result.skipped == 1
    assert seen[0].reason == f"open by {me()}; a rule would remove it: older than 7d"


def test_a_sibling_modified_in_the_future_keeps_its_file_and_is_warned_about(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    d, judged = backup_trio(srv, wal_age=-DAY)
    caplog.set_level(logging.WARNING, logger="architect_cleanup")
    gone, result, seen, _ = remove_one(srv, d, judged)
    assert gone is False and (result.kept, result.skipped) == (1, 1)
    assert seen[0].reason == ("modified 1 day in the future; a rule would remove it: "
                              "older than 7d")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"backups: {d}/x.db-wal is modified 1 day in the future; kept"]
    assert sorted(os.listdir(d)) == ["x.db", "x.db-shm", "x.db-wal"]


def test_a_file_modified_in_the_future_is_kept_and_warned_about_by_its_own_name(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "b"
    touch(d / "x.db", -DAY, size=100)
    caplog.set_level(logging.WARNING, logger="architect_cleanup")
    gone, result, seen, _ = remove_one(srv, d, [("x.db", os.lstat(d / "x.db"))])
    assert gone is False and result.skipped == 1
    assert seen[0].reason.startswith("modified 1 day in the future; a rule would remove")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"backups: {d}/x.db is modified 1 day in the future; kept"]


def test_a_sibling_vanished_before_its_unlink_keeps_the_file_as_vanished(srv: Path) -> None:
    d, judged = backup_trio(srv)
    os.unlink(d / "x.db-wal")
    gone, result, seen, items = remove_one(srv, d, judged)
    assert gone is False and items == []
    assert (result.removed, result.bytes, result.skipped, result.errors) == (0, 0, 1, [])
    assert [(x.path, x.remove, x.reason) for x in seen] == [
        (f"{d}/x.db", False, "vanished before removal")]
    assert (d / "x.db").exists()


def test_a_file_replaced_after_its_judgement_is_kept_and_reported_as_changed(
        srv: Path) -> None:
    d, judged = backup_trio(srv)
    replace(d / "x.db")
    gone, result, seen, _ = remove_one(srv, d, judged)
    assert gone is False and (result.removed, result.skipped) == (0, 1)
    assert result.errors == [f"{d}/x.db: changed since it was checked"]
    assert [(x.path, x.remove, x.reason) for x in seen] == [
        (f"{d}/x.db", False, "changed since it was checked")]
    assert (d / "x.db").read_bytes() == b"new"


def test_a_kept_item_counts_in_its_part_and_is_decided_only_when_read(srv: Path) -> None:
    seen: list[Decision] = []
    result = TargetResult("backups")
    OneByOne().keep(RunContext(make_config(srv), NOW, dry_run=False, on_decision=seen.append),
                    result, "/b/x.db", "newest", "prod")
    OneByOne().keep(RunContext(make_config(srv), NOW, dry_run=False), result, "/b/y.db",
                    "newest")
    OneByOne().keep(RunContext(make_config(srv), NOW, dry_run=False), result, "/b/z.db",
                    "newest", "prod")
    assert (result.kept, result.detail) == (3, {"prod": {"removed": 0, "bytes": 0, "kept": 2}})
    assert [(x.target, x.path, x.remove, x.reason) for x in seen] == [
        ("backups", "/b/x.db", False, "newest")]


def test_files_removed_one_after_the_other_add_up_in_the_result_and_their_part(
        srv: Path) -> None:
    d, judged = backup_trio(srv)
    touch(d / "y.db", 40 * DAY, size=50)
    _, result, _, _ = remove_one(srv, d, judged)
    remove_one(srv, d, [("y.db", os.lstat(d / "y.db"))], result=result)
    assert (result.removed, result.bytes, result.skipped) == (2, 187, 0)
    assert result.detail == {"prod": {"removed": 2, "bytes": 187, "kept": 0}}
    assert os.listdir(d) == []


def test_files_kept_at_the_last_moment_add_up_as_skipped(srv: Path) -> None:
    d, judged = backup_trio(srv)
    touch(d / "y.db", 40 * DAY, size=50)
    touch(d / "z.db", 40 * DAY, size=60)
    touch(d / "w.db", 40 * DAY, size=70)
    y, z, w = ((n, os.lstat(d / n)) for n in ("y.db", "z.db", "w.db"))
    os.unlink(d / "z.db")
    replace(d / "w.db")
    with open(d / "x.db", "rb"), open(d / "y.db", "rb"):
        _, result, _, _ = remove_one(srv, d, judged, open_files=OpenFiles())
        remove_one(srv, d, [y], open_files=OpenFiles(), result=result)
    remove_one(srv, d, [z], result=result)
    remove_one(srv, d, [w], result=result)
    assert (result.removed, result.kept, result.skipped) == (0, 2, 4)
    assert result.detail == {"prod": {"removed": 0, "bytes": 0, "kept": 2}}
    assert len(result.errors) == 1


# --- RunContext.check_stop, FileTarget.last_moment_keep: the stop and the future limit -------


def test_a_stop_is_raised_only_when_asked_for_with_its_message(srv: Path) -> None:
    context(srv).check_stop()  # nobody asks: nothing happens
    with pytest.raises(Interrupted) as exc:
        context(srv, should_stop=lambda: True).check_stop()
    assert str(exc.value) == "stopped on request"


def test_a_file_exactly_at_the_future_limit_is_removed_and_one_a_second_beyond_is_kept(
        srv: Path) -> None:
    d = srv / "b"
    touch(d / "edge.db", -FUTURE_SLACK, size=3)
    touch(d / "beyond.db", -FUTURE_SLACK - 1, size=5)
    gone, result, seen, _ = remove_one(srv, d, [("edge.db", os.lstat(d / "edge.db"))])
    assert gone is True and result.removed == 1
    gone, result, seen, _ = remove_one(srv, d, [("beyond.db", os.lstat(d / "beyond.db"))])
    assert gone is False and result.skipped == 1
    assert seen[0].reason == ("modified 5 minutes in the future; a rule would remove it: "
                              "older than 7d")
    assert os.listdir(d) == ["beyond.db"]


# --- _by_age / FileTarget._keep_held: a name kept never stops the judging of the next ones ---


@pytest.mark.parametrize("read", [True, False])
def test_each_name_the_age_rule_keeps_is_followed_by_the_judging_of_the_next(
        srv: Path, read: bool) -> None:
    d = srv / "logs"
    touch(d / "architect_worker.log", 400 * DAY)
    os.mkfifo(d / "pipe.log")
    touch(d / "young.log", DAY, size=2)
    touch(d / "ahead.log", -DAY, size=3)
    for n in "abcde":
        touch(d / f"{n}.log", 40 * DAY, size=1)
    seen: list[Decision] = []
    result = judge_logs(srv, ["architect_worker.log", "a.log"], ["pipe.log", "b.log"],
                        ["gone.log", "c.log"], ["young.log", "d.log"], ["ahead.log", "e.log"],
                        dry=False, on_decision=seen.append if read else None)
    assert (result.removed, result.bytes, result.kept, result.kept_bytes) == (5, 5, 4, 5)
    assert sorted(os.listdir(d)) == ["ahead.log", "architect_worker.log", "pipe.log",
                                     "young.log"]
    assert {os.path.basename(x.path): x.reason for x in seen if not x.remove} == ({
        "architect_worker.log": "ours", "pipe.log": "not a regular file",
        "young.log": "24 hours old, within 30d",
        "ahead.log": "modified 1 day in the future"} if read else {})


# --- Decision.__str__: the verb is the target's own ------------------------------------------


def test_a_decision_says_what_its_own_target_does_to_the_item() -> None:
    archived = Decision("prompts", "/p/x.json", True, "older than 90d", dry_run=False)
    assert str(archived) == "archived     prompts /p/x.json (older than 90d)"
    assert str(Decision("tasks", "tasks#7", True, "done", dry_run=True)).startswith(
        "would delete tasks   tasks#7")


def test_a_real_run_builds_no_decision_to_keep_when_only_the_journal_reads_them(
        srv: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # the journal lists removed items, never kept ones: a real run without -v decides
    # nothing about the young files (a million-file tree keeps 700,000 of them)
    d = srv / "logs"
    touch(d / "old.log", 40 * DAY, size=5)
    touch(d / "young.log", DAY)
    touch(d / "young2.log", 2 * DAY)
    built: list[Decision] = []
    monkeypatch.setattr(RunContext, "decide", lambda self, dec: built.append(dec))
    caplog.set_level(logging.INFO)
    stats = CleanupWorker(dry_run=False, config=make_config(srv), now=NOW,
                          only=["logs"]).run_cleanup()
    assert [(os.path.basename(x.path), x.remove) for x in built] == [("old.log", True)]
    assert (stats.targets["logs"].removed, stats.targets["logs"].kept) == (1, 2)
    ctx = RunContext(config=make_config(srv), now=NOW, dry_run=False, on_decision=built.append,
                     kept_decisions=False)
    assert (ctx.wants_decisions, ctx.wants_kept) == (True, False)
    for reader, kept in ((None, False), (built.append, True)):
        ctx = RunContext(config=make_config(srv), now=NOW, dry_run=False, on_decision=reader)
        assert (ctx.wants_decisions, ctx.wants_kept) == (kept, kept)
    built.clear()
    touch(d / "old.log", 40 * DAY, size=5)
    seen: list[Decision] = []
    monkeypatch.undo()
    CleanupWorker(dry_run=False, config=make_config(srv), now=NOW, only=["logs"],
                  on_decision=seen.append).run_cleanup()  # -v reads both
    assert sorted((os.path.basename(x.path), x.remove) for x in seen) == [
        ("old.log", True), ("young.log", False), ("young2.log", False)]


@given(st.one_of(st.floats(min_value=-1e6, max_value=1e10, allow_nan=False),
                 st.integers(0, 100_000).map(lambda k: k * 43_200.0),  # half days: ties
                 st.integers(0, 100_000).map(lambda k: k * 43_200.0 + 1e-6)),
       st.sampled_from(["30d", "1h", "7d 12h"]))
@settings(max_examples=500, deadline=None)
def test_the_age_reasons_made_once_per_day_are_the_ones_formatted_each_time(
        age: float, limit: str) -> None:
    """base.AgeReasons (one text per whole number of days) gives exactly the text the age
    rule formats for each file (age_text: "{:.0f}" rounds half to even, as round() does)."""
    now = 1_800_000_000.0
    reasons = base_mod.AgeReasons(now, limit)
    st_ = SimpleNamespace(st_mtime=now - age)
    want = f"{base_mod.age_text(now - st_.st_mtime)} > {limit}"
    assert reasons(st_) == want  # type: ignore[arg-type]
    assert reasons(st_) == want  # type: ignore[arg-type]  (from the cache)


def test_the_age_reasons_hold_at_most_their_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_mod, "AGE_REASONS", 10)
    reasons = base_mod.AgeReasons(1e9, "30d")
    for days in range(2, 40):
        assert reasons(SimpleNamespace(st_mtime=1e9 - days * 86400.0)) == (  # type: ignore
            f"{days} days old > 30d")
    assert len(reasons._texts) <= 10
