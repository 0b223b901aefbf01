"""The shared walk's pool of threads (``safety.workers``): the same decisions, counts and
order as one thread, stops between items, faults contained, and ``workers = 1`` the
sequential engine itself."""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from architect_cleanup import fs
from architect_cleanup.stats import CleanupStats
from architect_cleanup.targets import base as base_mod
from architect_cleanup.targets import tree as tree_mod
from architect_cleanup.targets.base import Decision
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, make_config, patch_fsops, touch

#: every test with the file layer's loops in C and in Python (conftest.fs_loops)
pytestmark = pytest.mark.usefixtures("fs_loops")

POOL = 4


def build(root: Path, seed: int = 20) -> None:
    """A tree with every kind of decision the walk makes: old and young logs and temp files,
    protected worker logs, a future file, a directory and a FIFO named like logs, old and
    young ``__pycache__`` directories (taken whole), an excluded directory, leaves and
    directories with both files and sub-directories, a huge directory (several chunks)."""
    rng = random.Random(seed)
    for env in ("prod", "qa"):
        for j in range(12):
            jd = root / "data" / env / "jobs" / f"job{j:02d}"
            for k in range(rng.randint(3, 15)):
                age = rng.choice((40 * DAY, 2 * DAY, 400 * DAY, 10 * HOUR))
                ext = rng.choice((".log", ".log.1", ".tmp", ".cache", ".json", ".txt"))
                touch(jd / f"f{k}{ext}", age, size=rng.randint(0, 3000))
            if j % 3 == 0:
                touch(jd / "sub" / "deep" / "old.log", 90 * DAY, size=10)
                touch(jd / "sub" / "young.log", HOUR)
            if j % 4 == 0:
                touch(jd / "__pycache__" / "m.cpython-311.pyc", 90 * DAY, size=100)
                touch(jd / "__pycache__" / "n.cpython-311.pyc", (90 if j % 8 else 0.01) * DAY)
                if j == 4:  # inside a directory taken whole: a sub-directory, a worker log
                    touch(jd / "__pycache__" / "sub" / "o.cpython-311.pyc", 90 * DAY)
                    touch(jd / "__pycache__" / "architect_worker.log", 90 * DAY)
                os.utime(jd / "__pycache__", (NOW.timestamp() - 90 * DAY,) * 2)
        touch(root / "data" / env / "architect_worker.log", 90 * DAY)
        touch(root / "data" / env / "future.log", -2 * DAY)
        (root / "data" / env / "dir.log").mkdir()
        os.mkfifo(root / "data" / env / "fifo.log")
        os.utime(root / "data" / env / "fifo.log", (NOW.timestamp() - 90 * DAY,) * 2)
        touch(root / "data" / env / "chrome_profile_x" / "old.log", 90 * DAY)
        touch(root / "data" / env / "__pycache__" / "Local State", 90 * DAY)  # a profile
        touch(root / "data" / env / "__pycache__" / "p.pyc", 90 * DAY)
        os.utime(root / "data" / env / "__pycache__", (NOW.timestamp() - 90 * DAY,) * 2)
    big = root / "logs" / "big"
    for k in range(2 * tree_mod.CHUNK + 100):
        touch(big / f"b{k:05d}.log", 40 * DAY if k % 3 else DAY)
    touch(root / "logs" / "2026-10" / "app.log", 50 * DAY)


def run(root: Path, workers: int, *, dry: bool, **kw: Any) -> tuple[CleanupStats, list[str]]:
    decisions: list[Decision] = []
    cfg = make_config(root, None, safety={"workers": workers}, backups={"enabled": False})
    stats = CleanupWorker(config=cfg, now=NOW, dry_run=dry, only=["logs", "temp"],
                          record_state=False, on_decision=decisions.append, **kw).run_cleanup()
    return stats, [str(d).replace(str(root), "ROOT") for d in decisions]


def figures(stats: CleanupStats, root: Path) -> dict[str, tuple[Any, ...]]:
    def norm(texts: list[str]) -> list[str]:
        return [x.replace(str(root), "ROOT") for x in texts]

    return {n: (t.removed, t.bytes, t.kept, t.skipped, t.checked, t.status, norm(t.errors),
                norm(t.notes))
            for n, t in stats.targets.items() if n in ("logs", "temp")}


def listing(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


def test_a_dry_run_judges_on_the_runs_own_thread_whatever_the_pool_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_loops: str) -> None:
    """A dry run deletes nothing, and Python threads list and stat slower than one (the
    GIL): whatever ``workers`` says, no pool is started. With a pool and the C loops, a C
    thread lists the leaves and stats their names ahead (fs.ListAhead); ``workers = 1`` does
    not. Either way it decides the same, in the same order."""
    root = tmp_path / "srv"
    build(root)
    taken: list[str] = []
    real_take = fs.ListAhead.take

    def take(self: fs.ListAhead, d: fs.Dir, files: Any) -> Any:
        taken.append(d.path)
        return real_take(self, d, files)

    monkeypatch.setattr(fs.ListAhead, "take", take)
    whole: list[str] = []
    real_take_all = fs.ListAhead.take_all

    def take_all(self: fs.ListAhead, d: fs.Dir) -> fs.Listed:
        whole.append(d.path)
        return real_take_all(self, d)

    monkeypatch.setattr(fs.ListAhead, "take_all", take_all)
    one_stats, one = run(root, 1, dry=True)
    assert taken == whole == []

    def no_pool(*_a: object, **_k: object) -> None:
        raise AssertionError("a pool was started")

    monkeypatch.setattr(tree_mod, "ThreadPoolExecutor", no_pool)
    pool_stats, pooled = run(root, POOL, dry=True)
    assert len(one) > 2000 and any(d.startswith("would remove") for d in one)
    assert pooled == one
    assert figures(pool_stats, root) == figures(one_stats, root)
    assert len(taken) > 20 if fs_loops == "c" else taken == []
    # the directories taken whole (__pycache__), listed ahead too; not a browser profile
    pycaches = sorted(p for p in whole if p.endswith("/__pycache__"))
    assert (len(pycaches) == len(whole) >= 6 and not any("/data/prod/__pycache__" in p
                                                          for p in whole)
            if fs_loops == "c" else whole == [])


def test_a_dry_run_without_a_thread_to_list_ahead_walks_as_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread can be started (the unit's TasksMax=, RLIMIT_NPROC): the dry run lists
    each directory itself and decides the same."""
    root = tmp_path / "srv"
    build(root)
    _, one = run(root, 1, dry=True)

    def no_thread() -> None:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    if fs.FSOPS is not None:
        c = {k: getattr(fs.FSOPS, k) for k in dir(fs.FSOPS) if not k.startswith("_")}
        monkeypatch.setattr(fs, "FSOPS", SimpleNamespace(**{**c, "Prefetch": no_thread}))
    assert fs.list_ahead() is None
    _, pooled = run(root, POOL, dry=True)
    assert pooled == one


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_stop_during_a_dry_run_listed_ahead_leaves_no_descriptor_or_thread(
        tmp_path: Path) -> None:
    """SIGTERM while leaves are listed ahead: the run stops between directories, and the
    descriptors handed ahead and the C thread are gone with it."""
    root = tmp_path / "srv"
    for j in range(3 * tree_mod.AHEAD):
        for k in range(3):
            touch(root / "data" / f"d{j:03d}" / f"f{k}.log", 90 * DAY)
    fds, threads = open_descriptors(), threading.active_count()
    tasks = len(os.listdir("/proc/self/task"))
    asked = [0]

    def should_stop() -> bool:
        asked[0] += 1
        return asked[0] > tree_mod.AHEAD + 5

    stats, _ = run(root, POOL, dry=True, should_stop=should_stop)
    logs = stats.targets["logs"]
    assert logs.message == "stopped on request"
    assert 0 < logs.removed < 3 * 3 * tree_mod.AHEAD
    assert open_descriptors() == fds
    assert threading.active_count() == threads
    assert len(os.listdir("/proc/self/task")) == tasks


def test_a_dry_run_lists_a_bounded_window_of_leaves_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_loops: str) -> None:
    """Memory and descriptors stay flat with the tree: at most AHEAD leaves are handed to
    the C thread and not yet judged."""
    root = tmp_path / "srv"
    for j in range(200):
        touch(root / "data" / f"d{j:03d}" / "f.log", 90 * DAY)
    pending, most = [0], [0]
    real_submit, real_take = fs.ListAhead.submit, fs.ListAhead.take

    def submit(self: fs.ListAhead, d: fs.Dir, prefilter: Any) -> None:
        pending[0] += 1
        most[0] = max(most[0], pending[0])
        real_submit(self, d, prefilter)

    def take(self: fs.ListAhead, d: fs.Dir, files: Any) -> Any:
        pending[0] -= 1
        return real_take(self, d, files)

    monkeypatch.setattr(fs.ListAhead, "submit", submit)
    monkeypatch.setattr(fs.ListAhead, "take", take)
    stats, _ = run(root, POOL, dry=True)
    assert stats.targets["logs"].removed == 200
    assert 0 < most[0] <= tree_mod.AHEAD + 1 if fs_loops == "c" else most[0] == 0


def test_a_real_run_removes_and_reports_the_same_in_the_same_order_with_a_pool(
        tmp_path: Path) -> None:
    build(tmp_path / "a")
    build(tmp_path / "b")
    one_stats, one = run(tmp_path / "a", 1, dry=False)
    pool_stats, pooled = run(tmp_path / "b", POOL, dry=False)
    assert one_stats.targets["logs"].removed > 1000
    assert pooled == one
    assert figures(pool_stats, tmp_path / "b") == figures(one_stats, tmp_path / "a")
    assert listing(tmp_path / "b") == listing(tmp_path / "a")


def test_the_pool_does_the_work_on_its_threads_and_one_worker_on_the_runs_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``workers = 1`` is the sequential engine: no thread is started, every unlink runs on
    the run's own thread; with a pool they run on its threads."""
    root = tmp_path / "srv"
    build(root)
    threads: set[str] = set()
    real_unlink_all = fs.unlink_all

    def watch(d: fs.Dir, judged: list[tuple[str, os.stat_result]]) -> list[Exception | None]:
        threads.add(threading.current_thread().name)
        return real_unlink_all(d, judged)

    monkeypatch.setattr(base_mod, "unlink_all", watch)

    def no_pool(*_a: object, **_k: object) -> None:
        raise AssertionError("a pool was started")

    with monkeypatch.context() as m:
        m.setattr(tree_mod, "ThreadPoolExecutor", no_pool)
        run(root, 1, dry=False)
    assert threads == {threading.main_thread().name}
    build(tmp_path / "other")
    threads.clear()
    run(tmp_path / "other", POOL, dry=False)
    assert threads and all(t.startswith("architect-cleanup") for t in threads), threads


def test_a_stop_is_honoured_by_the_pool_between_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while the pool holds a window of directories: the work not yet started is
    not done, the work under way ends, and every file removed is counted."""
    root = tmp_path / "srv"
    for j in range(40):
        for k in range(4):
            touch(root / "data" / f"d{j:02d}" / f"f{k}.log", 90 * DAY)
    real_unlink_all = fs.unlink_all

    def slow(d: fs.Dir, judged: list[tuple[str, os.stat_result]]) -> list[Exception | None]:
        time.sleep(0.2)
        return real_unlink_all(d, judged)

    monkeypatch.setattr(base_mod, "unlink_all", slow)
    # a window wider than the directories entered before the stop (2 threads x 8 = 16 > 12)
    monkeypatch.setattr(tree_mod, "WINDOW_PER_WORKER", 8)
    asked = [0]

    def should_stop() -> bool:  # the run's thread asks once per directory entered
        asked[0] += 1
        return asked[0] > 12

    stats, _ = run(root, 2, dry=False, should_stop=should_stop)
    logs = stats.targets["logs"]
    assert logs.message == "stopped on request"
    gone = sum(1 for j in range(40) if not (root / "data" / f"d{j:02d}").joinpath("f0.log")
               .exists())
    left = sum(1 for _ in (root / "data").rglob("*.log"))
    assert logs.removed == 40 * 4 - left  # every removal counted, exactly
    assert 1 <= gone <= 4, gone  # what had started (2 threads), not the 12 handed in


def test_an_unlink_error_in_one_thread_is_contained_to_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "srv"
    build(root)
    real_unlink = os.unlink

    def unlink(path: Any, *a: Any, **k: Any) -> None:
        if path == "f1.log":
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        real_unlink(path, *a, **k)

    def unlink_many(real: Callable[..., Any], fd: int, items: list[Any]) -> list[int]:
        rcs = iter(real(fd, [it for it in items if it[0] != "f1.log"]))
        return [errno.EIO if it[0] == "f1.log" else next(rcs) for it in items]

    monkeypatch.setattr(os, "unlink", unlink)
    patch_fsops(monkeypatch, unlink_many=unlink_many)
    build(tmp_path / "other")  # the same tree, the same faults
    one_stats, one = run(root, 1, dry=False)
    pool_stats, pooled = run(tmp_path / "other", POOL, dry=False)
    logs = pool_stats.targets["logs"]
    failed = [d for d in pooled if "removal failed" in d]
    assert failed and all("/f1.log" in d for d in failed)
    assert logs.status == "ok" and len(logs.errors) == len(failed)
    assert all("Input/output error" in e for e in logs.errors)
    assert logs.removed == one_stats.targets["logs"].removed > 1000
    assert pooled == one
    assert figures(pool_stats, tmp_path / "other") == figures(one_stats, root)


def test_a_fault_in_one_targets_work_on_a_thread_fails_that_target_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup.targets import temp

    root = tmp_path / "srv"
    build(root)
    real = temp.Temp.files_work

    def boom(self: temp.Temp, ctx: Any, d: fs.Dir, names: list[str]) -> Any:
        if "job05" in d.path:
            raise RuntimeError("disk on fire")
        return real(self, ctx, d, names)

    monkeypatch.setattr(temp.Temp, "files_work", boom)
    stats, _ = run(root, POOL, dry=False)
    assert stats.targets["temp"].failed and "disk on fire" in stats.targets["temp"].message
    assert stats.targets["logs"].status == "ok"
    assert not (root / "logs" / "2026-10" / "app.log").exists()


def test_the_pool_holds_a_bounded_window_of_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory and descriptors stay flat with the tree: never more than the window of
    directories is handed to the pool and not yet reported."""
    root = tmp_path / "srv"
    for j in range(200):
        touch(root / "data" / f"d{j:03d}" / "f.log", 90 * DAY)
    most = [0]
    real_submit = tree_mod._Pool.submit

    def submit(self: tree_mod._Pool, job: Any) -> None:
        real_submit(self, job)
        most[0] = max(most[0], len(self.queue))

    monkeypatch.setattr(tree_mod._Pool, "submit", submit)
    stats, _ = run(root, 2, dry=False)
    assert stats.targets["logs"].removed == 200
    assert 0 < most[0] <= 2 * tree_mod.WINDOW_PER_WORKER


def test_a_stop_inside_one_huge_directory_is_honoured_between_its_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the run's thread waits for a huge directory's work, a stop (SIGTERM) still
    ends that work between two chunks of names, as the sequential walk's check does."""
    root = tmp_path / "srv"
    n = 6 * tree_mod.CHUNK
    for k in range(n):
        touch(root / "data" / "huge" / f"f{k:05d}.log", 90 * DAY)
    real_unlink_all = fs.unlink_all
    stop = threading.Event()

    def slow(d: fs.Dir, judged: list[tuple[str, os.stat_result]]) -> list[Exception | None]:
        stop.set()  # SIGTERM arrives during the first chunk
        time.sleep(2 * tree_mod.STOP_POLL)
        return real_unlink_all(d, judged)

    monkeypatch.setattr(base_mod, "unlink_all", slow)
    stats, _ = run(root, 2, dry=False, should_stop=stop.is_set)
    logs = stats.targets["logs"]
    left = sum(1 for _ in (root / "data" / "huge").iterdir())
    assert logs.message == "stopped on request"
    assert logs.removed == n - left
    assert 0 < logs.removed <= 2 * tree_mod.CHUNK, logs.removed


@pytest.mark.parametrize("seed", range(20))
def test_the_walks_name_matcher_agrees_with_the_regular_expression(seed: int) -> None:
    """fs.group_matcher (endswith, then regular expressions behind a substring check) owns
    every name exactly as the combined regular expression of the groups' patterns does."""
    import re

    rng = random.Random(seed)
    parts = ["*", "?", ".log", ".log.", "log", ".tmp", "x", "[!.]", "[a-c]", "a", ".", "]", "\\"]
    groups = [(f"t{g}", tuple("".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))
                              for _ in range(rng.randint(1, 4)))) for g in range(3)]
    groups.append(("t3", ("*.log", "*.log.*", "*.pyc", "*[a-c]", "*x]", "*\\")))
    regex = re.compile("|".join(f"(?P<{g}>{fs.patterns_regex(p)})" for g, p in groups)).match
    fast = fs.group_matcher(groups)
    alphabet = "abcxlogtmpyc.*?[]!\\\n\udc80 "
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
             for _ in range(3000)] + ["a.log", "a.log.1", ".log", "x.pyc", ".log."]
    for name in names:
        want, got = regex(name), fast(name)
        assert (want and want.lastgroup) == (got and got.lastgroup), (groups, name)
