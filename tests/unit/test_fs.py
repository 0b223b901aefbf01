"""The fd-relative walker and delete primitives: streaming, no symlinks, no mounts, no races."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from architect_cleanup import fs
from architect_cleanup.fs import (
    Changed,
    FsError,
    OpenFiles,
    Root,
    Scope,
    Walker,
    compile_patterns,
    display,
    remove_tree,
    unlink_checked,
)

from conftest import patch_fsops, snapshot, touch

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
#: every test with the file layer's loops in C and in Python (conftest.fs_loops)
pytestmark = pytest.mark.usefixtures("fs_loops")


ALL = Scope(files=re.compile(r".*", re.S).match)


def everything(_d: fs.Dir) -> Scope:
    return ALL


def walk(root: Root, rel: str = ".", **kw: object) -> Iterator[tuple[fs.Dir, str]]:
    start = root.open_path(rel)
    try:
        for d, name, _is_dir, _m in Walker(root, start, scope=everything, **kw):  # type: ignore[arg-type]
            yield d, name
    finally:
        start.close()


def names(root: Root, rel: str = ".", **kw: object) -> list[str]:
    return sorted(d.join(n)[len(root.dir.path) + 1:] for d, n in walk(root, rel, **kw))


def test_walk_yields_every_file_below_the_start(tmp_path: Path) -> None:
    for p in ["a.log", "x/b.log", "x/y/c.log", "x/y/z/d.txt"]:
        touch(tmp_path / p)
    with Root.open(str(tmp_path)) as root:
        assert names(root) == ["a.log", "x/b.log", "x/y/c.log", "x/y/z/d.txt"]


def test_walk_never_follows_a_symlink_to_an_outside_directory(tmp_path: Path) -> None:
    outside = tmp_path / "victim"
    touch(outside / "precious.log", age=400 * 86400)
    root_dir = tmp_path / "root"
    touch(root_dir / "own.log")
    (root_dir / "link").symlink_to(outside)
    with Root.open(str(root_dir)) as root:
        assert names(root) == ["link", "own.log"]  # the link itself, not what it points to


def test_open_path_refuses_symlinked_components(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with Root.open(str(tmp_path)) as root:
        with pytest.raises(FsError, match="a symlink, not followed"):
            root.open_path("alias/sub")
        with pytest.raises(FileNotFoundError):
            root.open_path("missing")
        with pytest.raises(FsError, match=r"'\.\.' is not allowed"):
            root.open_path("real/../..")


def test_a_directory_swapped_for_a_symlink_mid_walk_is_not_entered(tmp_path: Path) -> None:
    outside = tmp_path / "victim"
    touch(outside / "secret.log")
    root_dir = tmp_path / "root"
    touch(root_dir / "a" / "first.log")
    touch(root_dir / "b" / "second.log")
    seen = []
    with Root.open(str(root_dir)) as root:
        skipped: list[tuple[str, str]] = []
        for d, name in walk(root, on_skip=lambda p, w: skipped.append((p, w))):
            seen.append(name)
            if len(seen) == 1:
                # the attacker swaps the other directory for a symlink after the listing
                other = "b" if d.path.endswith("/a") else "a"
                os.rename(root_dir / other, tmp_path / "moved")
                (root_dir / other).symlink_to(outside)
    assert "secret.log" not in seen
    assert any("a symlink, not followed" in w for _, w in skipped)


def test_deletion_happens_in_the_directory_that_was_opened(tmp_path: Path) -> None:
    """After entering a directory, swapping its path for a symlink cannot redirect unlinks."""
    outside = tmp_path / "victim"
    touch(outside / "x.log")
    root_dir = tmp_path / "root"
    touch(root_dir / "sub" / "x.log")
    before = snapshot(outside)
    with Root.open(str(root_dir)) as root:
        d = root.open_path("sub")
        st = fs.lstat_at(d, "x.log")
        os.rename(root_dir / "sub", tmp_path / "sub-moved")
        (root_dir / "sub").symlink_to(outside)
        unlink_checked(d, "x.log", st)
        d.close()
    assert snapshot(outside) == before
    assert not (tmp_path / "sub-moved" / "x.log").exists()


def test_unlink_refuses_a_file_replaced_since_it_was_judged(tmp_path: Path) -> None:
    touch(tmp_path / "a.log", age=100)
    with Root.open(str(tmp_path)) as root:
        d = root.open_path(".")
        st = fs.lstat_at(d, "a.log")
        (tmp_path / "a.log").unlink()
        touch(tmp_path / "a.log", age=100)  # same name and mtime, new inode
        with pytest.raises(Changed):
            unlink_checked(d, "a.log", st)
        os.unlink(tmp_path / "a.log")
        with pytest.raises(FileNotFoundError):
            unlink_checked(d, "a.log", st)
        d.close()


@pytest.mark.parametrize("mode", [0o755, 0o1777], ids=["own directory", "shared directory"])
def test_unlink_all_rechecks_each_file_right_before_its_own_unlink(
        tmp_path: Path, mode: int) -> None:
    tmp_path.chmod(mode)
    for n in ("keep-going.log", "replaced.log", "vanished.log", "now-a-dir.log", "last.log"):
        touch(tmp_path / n, age=100)
    with Root.open(str(tmp_path)) as root:
        d = root.open_path(".")
        judged = [(n, fs.lstat_at(d, n)) for n in sorted(os.listdir(tmp_path))]
        (tmp_path / "replaced.log").unlink()
        touch(tmp_path / "replaced.log", age=100)  # same name and mtime, new inode
        (tmp_path / "vanished.log").unlink()
        (tmp_path / "now-a-dir.log").unlink()
        (tmp_path / "now-a-dir.log").mkdir()
        outcome = dict(zip([n for n, _ in judged], fs.unlink_all(d, judged), strict=True))
        d.close()
    assert outcome["keep-going.log"] is None and outcome["last.log"] is None
    assert isinstance(outcome["replaced.log"], Changed)
    assert isinstance(outcome["vanished.log"], FileNotFoundError)
    assert isinstance(outcome["now-a-dir.log"], Changed)
    assert sorted(os.listdir(tmp_path)) == ["now-a-dir.log", "replaced.log"]


class _Swapper:
    """fs._rename_noreplace with a writer acting right before given calls of it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **before: Callable[[], None]) -> None:
        self.calls = 0
        self.before = before
        self.real = fs._rename_noreplace
        monkeypatch.setattr(fs, "_rename_noreplace", self)

    def __call__(self, fd: int, old: str, new: str) -> None:
        self.calls += 1
        act = self.before.get(f"call{self.calls}")
        if act is not None:
            act()
        self.real(fd, old, new)


def _judge(tmp_path: Path, name: str) -> tuple[Root, fs.Dir, os.stat_result]:
    root = Root.open(str(tmp_path))
    d = root.open_path(".")
    return root, d, fs.lstat_at(d, name)


def _rename_young_over(tmp_path: Path, name: str, content: bytes = b"young") -> Callable[[], None]:
    def act() -> None:
        touch(tmp_path / ".staged", age=0, data=content)
        os.rename(tmp_path / ".staged", tmp_path / name)
    return act


def test_in_a_shared_directory_a_file_renamed_over_the_name_after_the_last_check_survives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment between the last check and the unlink: a writer renames a new file over
    the judged name. The private rename takes whichever file is there; not the judged one,
    so it goes back under its name."""
    tmp_path.chmod(0o1777)
    touch(tmp_path / "app.log", age=100, data=b"old")
    root, d, st = _judge(tmp_path, "app.log")
    swap = _Swapper(monkeypatch, call1=_rename_young_over(tmp_path, "app.log"))
    [outcome] = fs.unlink_all(d, [("app.log", st)])
    d.close()
    root.close()
    assert isinstance(outcome, Changed) and "replaced at the moment" in str(outcome)
    assert swap.calls == 2  # away and back
    assert os.listdir(tmp_path) == ["app.log"]
    assert (tmp_path / "app.log").read_bytes() == b"young"


def test_when_the_name_is_taken_again_the_new_file_keeps_the_private_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path.chmod(0o1777)
    touch(tmp_path / "app.log", age=100, data=b"old")
    root, d, st = _judge(tmp_path, "app.log")
    _Swapper(monkeypatch, call1=_rename_young_over(tmp_path, "app.log", b"first"),
             call2=_rename_young_over(tmp_path, "app.log", b"second"))
    [outcome] = fs.unlink_all(d, [("app.log", st)])
    d.close()
    root.close()
    [priv] = [n for n in os.listdir(tmp_path) if n.startswith(fs.QUARANTINE)]
    assert priv.endswith(".app.log") and priv in str(outcome)
    assert isinstance(outcome, Changed)
    assert (tmp_path / "app.log").read_bytes() == b"second"
    assert (tmp_path / priv).read_bytes() == b"first"


def test_a_private_name_created_in_advance_does_not_keep_the_file_from_removal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer of the directory who creates the old, predictable private name (or a run
    killed between the two renames leaving it) must not keep the file forever; and the name
    taken cannot be guessed: two removals of the same name never use the same one."""
    tmp_path.chmod(0o1777)
    touch(tmp_path / "app.log", age=100, data=b"old")
    touch(tmp_path / (fs.QUARANTINE + "app.log"), age=100, data=b"planted")
    rename = fs._rename_noreplace
    taken: list[str] = []

    def spy(fd: int, old: str, new: str) -> None:
        taken.append(new)
        rename(fd, old, new)

    monkeypatch.setattr(fs, "_rename_noreplace", spy)
    root, d, st = _judge(tmp_path, "app.log")
    assert fs.unlink_all(d, [("app.log", st)]) == [None]
    touch(tmp_path / "app.log", age=100, data=b"old again")
    assert fs.unlink_all(d, [("app.log", os.stat(tmp_path / "app.log"))]) == [None]
    d.close()
    root.close()
    assert sorted(os.listdir(tmp_path)) == [fs.QUARANTINE + "app.log"]
    assert len(set(taken)) == 2 and all(n.startswith(fs.QUARANTINE) for n in taken)


def test_only_a_directory_others_can_write_pays_for_the_private_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    swap = _Swapper(monkeypatch)

    def remove(name: str) -> list[Exception | None]:
        touch(tmp_path / name, age=100)
        root, d, st = _judge(tmp_path, name)
        try:
            return fs.unlink_all(d, [(name, st)])
        finally:
            d.close()
            root.close()

    assert remove("own.log") == [None] and swap.calls == 0
    tmp_path.chmod(0o777)
    # a name with no room for the prefix gets the plain check
    assert remove("x" * 250 + ".log") == [None] and swap.calls == 0
    assert remove("shared.log") == [None] and swap.calls == 1
    os.chown(tmp_path, 1, 1)
    tmp_path.chmod(0o755)
    assert remove("theirs.log") == [None] and swap.calls == 2
    assert os.listdir(tmp_path) == []


def test_walk_goes_deeper_than_the_recursion_limit_and_the_fd_window(tmp_path: Path) -> None:
    depth = max(sys.getrecursionlimit(), fs.FD_WINDOW * 3) + 50
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fd = base
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        if fd != base:
            os.close(fd)
        fd = nfd
    os.close(os.open("deep.log", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    os.close(base)
    touch(tmp_path / "z.log")
    before = len(os.listdir("/proc/self/fd"))
    with Root.open(str(tmp_path)) as root:
        found = [n for _, n in walk(root)]
    after = len(os.listdir("/proc/self/fd"))
    subprocess.run(["rm", "-rf", str(tmp_path / "d")], check=True)  # pytest's rmtree recurses
    assert sorted(found) == ["deep.log", "z.log"]
    assert after == before  # no descriptor leaked


def _chain(base: Path, depth: int, name: str, leaf: str) -> None:
    """*depth* nested directories made fd-relative (the path outgrows PATH_MAX)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open(leaf, os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)


def test_a_path_longer_than_path_max_is_reported_and_not_entered(tmp_path: Path) -> None:
    _chain(tmp_path, 30, "n" * 255, "bottom.log")  # 7.7 kB of path
    touch(tmp_path / "top.log")
    skipped: list[tuple[str, str]] = []
    with Root.open(str(tmp_path)) as root:
        found = [n for _, n in walk(root, on_skip=lambda p, w: skipped.append((p, w)))]
        tree = remove_tree(root, root.dir, "n" * 255, dry_run=True)
    subprocess.run(["rm", "-rf", str(tmp_path / ("n" * 255))], check=True)
    assert found == ["top.log"]
    assert len(skipped) == 1 and "path longer than 4096 bytes" in skipped[0][1]
    assert len(skipped[0][0].encode()) >= fs.MAX_PATH
    assert not tree.removed_dir and "path longer than 4096 bytes" in tree.errors[0]


def test_a_chain_of_thousands_of_nested_directories_costs_linear_time(tmp_path: Path) -> None:
    """A hostile chain must not make the walk quadratic (it once took 151 s and 296 MB for
    3,000 levels): the walk stops at PATH_MAX and each level costs the same."""
    _chain(tmp_path, 20_000, "d", "deep.log")
    with Root.open(str(tmp_path)) as root:
        t0 = time.monotonic()
        found = [n for _, n in walk(root)]
        took = time.monotonic() - t0
    subprocess.run(["rm", "-rf", str(tmp_path / "d")], check=True)
    assert found == [] and took < 5


def test_an_ancestor_moved_during_a_deep_walk_stops_the_walk(tmp_path: Path) -> None:
    parts = ["d"] * (fs.FD_WINDOW + 5)
    deep = tmp_path.joinpath("top", *parts)
    touch(deep / "leaf.log")
    touch(tmp_path / "top" / "d" / "sibling" / "later.log")
    with Root.open(str(tmp_path)) as root, pytest.raises(fs.WalkAborted, match="moved during"):
        for _, name in walk(root):
            if name == "leaf.log":
                # move an ancestor whose descriptor the walk has closed
                os.rename(tmp_path / "top" / "d" / "d", tmp_path / "elsewhere")


def test_walk_memory_does_not_grow_with_the_number_of_files(tmp_path: Path) -> None:
    def build(n: int, where: Path) -> None:
        for i in range(n // 100):
            sub = where / f"d{i}"
            sub.mkdir(parents=True)
            for j in range(100):
                (sub / f"f{j}.txt").touch()

    def peak(where: Path) -> int:
        with Root.open(str(where)) as root:
            start = root.open_path(".")
            tracemalloc.start()
            for _ in Walker(root, start, scope=everything):
                pass
            _, top = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            start.close()
        return top

    build(300, tmp_path / "small")
    build(3_000, tmp_path / "big")
    small, big = peak(tmp_path / "small"), peak(tmp_path / "big")
    assert big < small * 2 + 64 * 1024, (small, big)


def test_names_are_matched_before_any_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    for i in range(50):
        touch(tmp_path / "sub" / f"f{i}.txt")
    touch(tmp_path / "sub" / "one.log")
    touch(tmp_path / "leafless" / "two.log")
    touch(tmp_path / "leafless" / "inner" / "x.dat")
    real_stat = os.stat
    log_stats: list[str] = []
    other_stats: list[str] = []

    def watch_stat(path: object, *a: object, **k: object) -> os.stat_result:
        if isinstance(path, str) and k.get("dir_fd") is not None:
            (log_stats if path.endswith(".log") else other_stats).append(path)
        return real_stat(path, *a, **k)  # type: ignore[arg-type]

    def watch_lstat_many(real: Callable[..., Any], fd: int, names: list[str]) -> Any:
        for path in names:
            (log_stats if path.endswith(".log") else other_stats).append(path)
        return real(fd, names)

    monkeypatch.setattr(os, "stat", watch_stat)
    patch_fsops(monkeypatch, lstat_many=watch_lstat_many)
    from architect_cleanup.worker import CleanupWorker

    from conftest import NOW, make_config
    cfg = make_config(tmp_path, None, logs={"dirs": ["."]}, temp={"enabled": False},
                      backups={"enabled": False})
    CleanupWorker(config=cfg, now=NOW, only=["logs"], record_state=False).run_cleanup()
    assert sorted(log_stats) == ["one.log", "two.log"]
    assert [p for p in other_stats if p != fs.CHROMIUM_MARKER] == []  # no .txt, no dirs


def test_a_dry_run_listing_ahead_stats_only_names_a_rule_may_take(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_loops: str) -> None:
    """With the C loops a dry run's leaves are listed and stat'ed ahead, on a thread
    (fs.ListAhead): there too only the names the rules' prefilter keeps are stat'ed."""
    for i in range(50):
        touch(tmp_path / "sub" / f"f{i}.txt")
    touch(tmp_path / "sub" / "one.log")
    touch(tmp_path / "sub" / "two.log.1")
    stated: list[str] = []
    real_take = fs.ListAhead.take

    def take(self: fs.ListAhead, d: fs.Dir, files: Any) -> Any:
        got = real_take(self, d, files)
        stated.extend(d.known or ())
        return got

    monkeypatch.setattr(fs.ListAhead, "take", take)
    from architect_cleanup.worker import CleanupWorker

    from conftest import NOW, make_config
    cfg = make_config(tmp_path, None, logs={"dirs": ["."]}, temp={"enabled": False},
                      backups={"enabled": False}, safety={"workers": 2})
    stats = CleanupWorker(config=cfg, now=NOW, only=["logs"], record_state=False,
                          dry_run=True).run_cleanup()
    assert stats.targets["logs"].kept == 2  # both young
    assert sorted(stated) == (["one.log", "two.log.1"] if fs_loops == "c" else [])


@needs_root
def test_a_mount_point_below_the_root_is_not_crossed(tmp_path: Path) -> None:
    touch(tmp_path / "own.log")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        touch(mnt / "other-fs.log")
        with Root.open(str(tmp_path)) as root:
            skipped: list[str] = []
            seen = [n for _, n in walk(root, on_skip=lambda p, w: skipped.append(w))]
            assert seen == ["own.log"]
            assert skipped == ["a mount point, not crossed"]
            with pytest.raises(FsError, match="mount point"):
                root.open_path("mnt")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_root
def test_a_bind_mount_of_the_same_filesystem_is_not_crossed(tmp_path: Path) -> None:
    outside = tmp_path / "victim"
    touch(outside / "precious.log")
    root_dir = tmp_path / "root"
    touch(root_dir / "own.log")
    mnt = root_dir / "bound"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(outside), str(mnt)], check=True)
    try:
        with Root.open(str(root_dir)) as root:
            assert root.check_mounts
            assert names(root) == ["own.log"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_remove_tree_removes_bottom_up_and_counts_files(tmp_path: Path) -> None:
    for p in ["c/__pycache__/a.pyc", "c/__pycache__/b.pyc", "c/__pycache__/sub/x.pyc"]:
        touch(tmp_path / p, size=10)
    (tmp_path / "c" / "__pycache__" / "link").symlink_to("/etc/passwd")
    with Root.open(str(tmp_path)) as root:
        parent = root.open_path("c")
        dry = remove_tree(root, parent, "__pycache__", dry_run=True)
        assert (dry.files, dry.bytes, dry.removed_dir) == (4, 30, True)
        assert (tmp_path / "c" / "__pycache__" / "sub" / "x.pyc").exists()
        real = remove_tree(root, parent, "__pycache__", dry_run=False)
        parent.close()
    assert (real.files, real.bytes, real.removed_dir) == (4, 30, True)
    assert not (tmp_path / "c" / "__pycache__").exists()
    assert Path("/etc/passwd").exists()


def test_remove_tree_keeps_what_the_keep_rule_protects(tmp_path: Path) -> None:
    touch(tmp_path / "__pycache__" / "a.pyc")
    touch(tmp_path / "__pycache__" / "open.pyc")
    with Root.open(str(tmp_path)) as root:
        parent = root.open_path(".")
        res = remove_tree(root, parent, "__pycache__", dry_run=False,
                          keep=lambda st: "open" if st.st_size == 0 and
                          st.st_ino == (tmp_path / "__pycache__" / "open.pyc").stat().st_ino
                          else None)
        parent.close()
    assert (res.files, res.kept, res.removed_dir) == (1, 1, False)
    assert (tmp_path / "__pycache__" / "open.pyc").exists()


def test_open_files_are_found_in_other_processes(tmp_path: Path) -> None:
    held = touch(tmp_path / "held.log")
    free = touch(tmp_path / "free.log")
    with open(held, "rb") as fh:
        proc = subprocess.Popen(["sleep", "30"], stdin=fh)
    try:
        of = OpenFiles()
        assert of.is_open(held.stat())
        assert not of.is_open(free.stat())
    finally:
        proc.terminate()
        proc.wait()


def test_patterns_compile_to_one_matcher() -> None:
    m = compile_patterns(["*.log", "*.log.*", "architect_*_worker.log"])
    assert m("a.log") and m("a.log.1") and not m("a.logx") and not m("log")
    assert not compile_patterns([])("anything")


@given(patterns=st.lists(st.text(alphabet="ab.*?[]!_", max_size=7), max_size=4),
       names=st.lists(st.text(alphabet="ab._[]!", max_size=9), max_size=20))
def test_pattern_prefilters_agree_with_fnmatch(patterns: list[str], names: list[str]) -> None:
    m = compile_patterns(patterns)
    for name in names:
        assert m(name) == any(fnmatchcase(name, p) for p in patterns), (patterns, name)


def test_the_walk_hands_out_one_batch_per_directory(tmp_path: Path) -> None:
    for p in ["leaf/a.log", "leaf/b.log", "leaf/c.txt", "top.log", "mid/d.log", "mid/x/e.txt"]:
        touch(tmp_path / p)
    (tmp_path / "mid" / "cache").mkdir()
    scope = Scope(files=re.compile(r".*\.log\Z").match, claim=re.compile("cache").fullmatch)
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(".")
        got = {d.path[len(root.dir.path):] or "/": (sorted(n for n, _ in files),
                                                  [n for n, _ in dirs])
               for d, files, dirs in Walker(root, start, scope=lambda _d: scope).batches()}
        start.close()
    assert got == {"/": (["top.log"], []), "/leaf": (["a.log", "b.log"], []),
                   "/mid": (["d.log"], ["cache"])}  # mid/x has no match: no batch


def test_display_escapes_newlines_and_undecodable_bytes() -> None:
    assert display("plain/name.log") == "plain/name.log"
    assert display("evil\nname") == "evil\\nname"
    assert display(os.fsdecode(b"bad\xffname")) == "bad\\xffname"


@pytest.mark.parametrize("path", ["/", "/etc", "/lib", "/lib64", "/libx32", "/var", "//usr"])
def test_forbidden_roots_cannot_be_opened(path: str) -> None:
    with pytest.raises(FsError, match="refusing"):
        Root.open(path)


# --- system_tree and _norm: which system tree holds a path -----------------------------------


@pytest.mark.parametrize("path, tree", [
    ("/", None),
    ("/lib", "/lib"), ("/lib/x86_64-linux-gnu", "/lib"), ("/lib32/a", "/lib32"),
    ("/lib64/ld.so", "/lib64"), ("/libx32", "/libx32"), ("/library", None), ("/lib128", None),
    ("/usr", "/usr"), ("/usr/share/doc", "/usr"), ("/usrlocal", None),
    ("/var/lib/architect", "/var/lib"), ("/var/tmp", None), ("/srv/architect/logs", None),
    ("/opt", "/opt"), ("/opt/architect", None), ("/opt/architect/logs", "/opt"),
    ("/var/opt", "/var/opt"), ("/var/opt/architect", None), ("/var/opt/a/b", "/var/opt"),
    ("//usr/share", "/usr"), ("///etc", "/etc"), ("/usr/../srv/x", None),
    ("usr/share", None),  # a relative path is judged as written, not as if absolute
])
def test_system_tree_names_the_tree_holding_a_path_and_spares_a_packages_own_directory(
        path: str, tree: str | None) -> None:
    assert fs.system_tree(path) == tree


@pytest.mark.parametrize("path, norm", [
    ("/", "/"), ("//", "/"), ("//usr", "/usr"), ("///usr", "/usr"), ("//Xorg/a", "/Xorg/a"),
    ("/usr//lib/", "/usr/lib"), ("usr/lib", "usr/lib"), ("srv", "srv"),
])
def test_a_path_is_normalised_with_posix_double_slash_made_one(path: str, norm: str) -> None:
    assert fs._norm(path) == norm


# --- compile_patterns, _literal_head, group_matcher, _needed: matching names -----------------


def test_patterns_that_only_end_with_literal_text_match_exactly_what_fnmatch_matches() -> None:
    m = compile_patterns(["*ab?c", "*.log"])  # no literal head: the literal tails filter
    assert m("abxc") is True and m("x.abzc") is True and m("old.log") is True
    assert m("c") is False  # ends as a tail does, but the pattern does not match
    assert m("abc") is False and m("x.txt") is False and m("log") is False


def test_a_literal_head_stops_at_the_first_wildcard_not_the_last() -> None:
    m = compile_patterns(["a*b*c", "x?y?z"])
    assert m("a1b2c") and m("abc") and m("x1y2z")
    assert not m("a1b2") and not m("xyz")


GROUPS = [("logs", ["*.log"]), ("rotated", ["*.log.*", "app-?.out"]),
          ("cores", ["core.[0-9]*"]), ("tagged", ["*.log.?[0-9]*"])]


@pytest.mark.parametrize("name, group", [
    ("a.log", "logs"), ("a.log.1", "rotated"), ("app-1.out", "rotated"),
    ("core.123", "cores"), ("x.log.v2", "rotated"),  # the first group that matches wins
    ("catalog", None), ("x.txt", None), ("log", None), (".log", "logs"), ("app-12.out", None),
    ("core.x", None), ("core.", None), ("", None),
])
def test_a_group_matcher_names_the_first_group_whose_pattern_matches(
        name: str, group: str | None) -> None:
    owned = fs.group_matcher(GROUPS)(name)
    assert (owned.lastgroup if owned else None) == group
    assert group == next((g for g, pats in GROUPS if any(fnmatchcase(name, p) for p in pats)),
                         None)


def test_a_suffix_pattern_with_every_wildcard_after_the_star_is_no_plain_suffix() -> None:
    m = fs.group_matcher([("tagged", ["*.log.?[0-9]*"])])
    assert m("a.log.v2") == fs.Owned("tagged") and m("a.log.v2-old") == fs.Owned("tagged")
    assert m("a.log.?[0-9]*") is None and m("a.log.vv") is None


def test_a_group_of_suffix_patterns_alone_matches_no_other_name() -> None:
    m = fs.group_matcher([("logs", ["*.log", "*.out"])])
    assert m("x.out") == fs.Owned("logs")
    assert m("x.txt") is None and m("") is None and m("log") is None


class _AskedRe:
    """fs's ``re`` module, recording each name a compiled pattern is asked to match."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(re, attr)

    def compile(self, pattern: str) -> SimpleNamespace:
        real = re.compile(pattern)

        def match(name: str) -> re.Match[str] | None:
            self.asked.append(name)
            return real.match(name)

        return SimpleNamespace(match=match)


def test_a_group_matcher_asks_its_regular_expression_only_of_names_holding_a_longest_literal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _AskedRe()
    monkeypatch.setattr(fs, "re", spy)
    m = fs.group_matcher([("logs", ["*.log", "*.XLSX"]), ("rotated", ["*.log.*", "z*.gz"])])
    got = {n: m(n) for n in ["a.log", "b.XLSX", "a.log.1", "zebra.txt", "old.gz", "plain.txt",
                             "z.gz"]}
    assert got == {"a.log": fs.Owned("logs"), "b.XLSX": fs.Owned("logs"),
                   "a.log.1": fs.Owned("rotated"), "zebra.txt": None, "old.gz": None,
                   "plain.txt": None, "z.gz": fs.Owned("rotated")}
    # "*.log" and "*.XLSX" are plain suffixes, "*.log.*" a plain infix (held: no regular
    # expression either); the other's longest literal is ".gz"
    assert spy.asked == ["old.gz", "z.gz"]


@pytest.mark.parametrize(("pattern", "infix"), [
    ("*.log.*", ".log."), ("*x*", "x"), ("*X*", "X"), ("**", None), ("*", None), ("*a*b*", None),
    ("*[ab]*", None), ("*a?*", None), ("a*", None), ("*a", None), ("*]*", None)])
def test_a_plain_infix_is_a_star_a_literal_text_and_a_star(pattern: str,
                                                          infix: str | None) -> None:
    assert fs._plain_infix(pattern) == infix
    m = fs.group_matcher([("g", [pattern])])
    for name in ["x.log.1", ".log.", "ab", "a", "x", "b.log", "]", "zax"]:
        assert (m(name) is not None) == fnmatchcase(name, pattern), (pattern, name)


def test_a_pattern_with_brackets_is_asked_of_every_name() -> None:
    m = fs.group_matcher([("cores", ["core.[0-9]*"])])
    assert m("core.7") == fs.Owned("cores") and m("x") is None
    assert fs._needed(["*.log.*", "a?b*cd"]) == (".log.", "cd")
    assert fs._needed(["*.log.*", "core.[0-9]*"]) is None
    assert fs._needed(["*.log.*", "*"]) is None  # a pattern of wildcards only holds nothing


# --- the walker in detail (Walker: counts, skips, depth, the descriptor window) --------------
#
# Written against the mutation run of issue 24 (tests/mutation): each test pins what the walk
# reports (the path and reason of every skip, the entries it counted) and which descriptors it
# holds, not only which files it finds.


def _skip_sink() -> tuple[list[tuple[str, str]], Callable[[str, str], None]]:
    skipped: list[tuple[str, str]] = []
    return skipped, lambda path, why: skipped.append((path, why))


def _found(batches: Iterator[fs.Batch], root: Root) -> list[str]:
    return sorted(d.join(n)[len(root.dir.path) + 1:] for d, files, _ in batches
                  for n, _m in files)


def _walk_everything(top: Path) -> tuple[Walker, list[str], list[tuple[str, str]]]:
    """A whole walk of *top*: the walker (its counts), the files found, the skips reported."""
    skipped, sink = _skip_sink()
    with Root.open(str(top)) as root:
        start = root.open_path(".")
        try:
            walker = Walker(root, start, scope=everything, on_skip=sink)
            found = _found(walker.batches(), root)
        finally:
            start.close()
    return walker, found, skipped


class _Listing:
    """os.scandir / os.listdir on one directory (told apart by its inode) failing as on an
    I/O error: at once, or (scandir) after handing out the first *at* entries in name order;
    the entries named in *unreadable* cannot tell their type (as one that vanished on a file
    system without d_type). Every other directory is listed as usual."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, func: str, target: Path, *,
                 at: int | None = None, unreadable: tuple[str, ...] = ()) -> None:
        self.ino = target.stat().st_ino
        self.real = getattr(os, func)
        self.at = at
        self.unreadable = unreadable
        monkeypatch.setattr(os, func, self)
        if func == "listdir":  # and the C loops' listing (fs.list_leaf)
            patch_fsops(monkeypatch, listdir_filter=self._in_c)

    def _in_c(self, real: Callable[..., Any], fd: int, *args: Any) -> Any:
        if os.fstat(fd).st_ino == self.ino:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, *args)

    def __call__(self, *args: Any) -> Any:
        if not (args and isinstance(args[0], int) and os.fstat(args[0]).st_ino == self.ino):
            return self.real(*args)
        if self.at is None and not self.unreadable:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        with self.real(*args) as it:
            entries = sorted(it, key=lambda e: e.name)
        return _Entries([_Unreadable(e.name) if e.name in self.unreadable else e
                         for e in entries], self.at)


class _Unreadable:
    def __init__(self, name: str) -> None:
        self.name = name

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))


class _Entries:
    def __init__(self, entries: list[Any], at: int | None) -> None:
        self.entries = iter(entries)
        self.at = at
        self.read = 0

    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __iter__(self) -> _Entries:
        return self

    def __next__(self) -> Any:
        if self.read == self.at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.read += 1
        return next(self.entries)


def test_the_walk_counts_each_entry_it_lists_once_and_calls_on_dir_per_directory(
        tmp_path: Path) -> None:
    for p in ["f1.log", "f2.txt", "a/g.log", "a/b/h.log", "a/b/i.txt"]:
        touch(tmp_path / p)
    dirs: list[int] = []
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(".")
        try:
            walker = Walker(root, start, scope=everything, on_dir=lambda: dirs.append(1))
            found = _found(walker.batches(), root)
        finally:
            start.close()
    assert found == ["a/b/h.log", "a/b/i.txt", "a/g.log", "f1.log", "f2.txt"]
    assert walker.entries_seen == 3 + 2 + 2  # the root, a (scanned), a/b (a leaf: listed)
    assert len(dirs) == 3


@pytest.mark.parametrize("rel", [".", "a/b"], ids=["entered leaf", "leaf as the start"])
def test_with_lazy_leaves_a_directory_without_sub_directories_is_handed_out_unlisted(
        tmp_path: Path, rel: str) -> None:
    for p in ["f1.log", "a/g.log", "a/b/h.log", "a/b/i.txt"]:
        touch(tmp_path / p)
    got: dict[str, list[str]] = {}
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(rel)
        try:
            walker = Walker(root, start, scope=everything, lazy_leaves=True)
            for d, files, _dirs in walker.batches():
                if files is fs.UNLISTED:
                    listed, seen, why = fs.list_leaf(d, ALL.files)  # type: ignore[arg-type]
                    assert (seen, why) == (2, None)
                    got[d.path] = sorted(["(unlisted)"] + [n for n, _ in listed])
                else:
                    got[d.path] = sorted(n for n, _ in files)
        finally:
            start.close()
    leaf = {f"{tmp_path}/a/b": ["(unlisted)", "h.log", "i.txt"]}
    if rel == ".":
        assert got == {str(tmp_path): ["f1.log"], f"{tmp_path}/a": ["g.log"], **leaf}
        assert walker.entries_seen == 2 + 2  # the leaf's entries are the consumer's
    else:
        assert got == leaf and walker.entries_seen == 0


def test_a_walk_limited_in_depth_lists_its_last_level_and_enters_nothing_below(
        tmp_path: Path) -> None:
    for p in ["top.log", "x/b.log", "x/y/c.log", "x/y/z/d.log"]:
        touch(tmp_path / p)
    with Root.open(str(tmp_path)) as root:
        assert names(root, max_depth=1) == ["top.log", "x/b.log"]
        assert names(root, max_depth=2) == ["top.log", "x/b.log", "x/y/c.log"]


@pytest.mark.parametrize("func", ["scandir", "listdir"],
                         ids=["with sub-directories", "a leaf"])
def test_a_directory_that_cannot_be_listed_is_reported_and_the_walk_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, func: str) -> None:
    touch(tmp_path / "other.log")
    touch(tmp_path / "bad" / "x.log")
    if func == "scandir":
        touch(tmp_path / "bad" / "inner" / "y.log")
    touch(tmp_path / "fine" / "z.log")
    _Listing(monkeypatch, func, tmp_path / "bad")
    walker, found, skipped = _walk_everything(tmp_path)
    assert found == ["fine/z.log", "other.log"]
    assert skipped == [(f"{tmp_path}/bad", "cannot list: Input/output error")]
    assert walker.entries_seen == 3 + 1  # the root and fine: nothing of bad


def test_a_listing_that_fails_halfway_hands_out_what_it_read_and_enters_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for p in ["big/a1.log", "big/a2.log", "big/b/c.log", "big/z1.log", "big/z2.log"]:
        touch(tmp_path / p)
    _Listing(monkeypatch, "scandir", tmp_path / "big", at=3)  # a1.log, a2.log, b
    walker, found, skipped = _walk_everything(tmp_path)
    assert found == ["big/a1.log", "big/a2.log", "big/b/c.log"]
    assert skipped == [(f"{tmp_path}/big", "listing failed: Input/output error")]
    assert walker.entries_seen == 1 + 3 + 1


def test_an_entry_whose_type_cannot_be_read_is_passed_over_and_the_listing_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for p in ["d/a0.log", "d/a1.log", "d/sub/b.log", "d/z.log"]:
        touch(tmp_path / p)
    _Listing(monkeypatch, "scandir", tmp_path / "d", unreadable=("a0.log",))
    walker, found, skipped = _walk_everything(tmp_path)
    assert found == ["d/a1.log", "d/sub/b.log", "d/z.log"]
    assert skipped == []
    assert walker.entries_seen == 1 + 4 + 1  # the unreadable entry was listed all the same


def test_a_browser_profile_is_reported_with_its_path_and_the_siblings_after_it_are_walked(
        tmp_path: Path) -> None:
    for i in range(4):
        touch(tmp_path / f"s{i}" / "f.log")
        touch(tmp_path / f"s{i}" / "deeper" / "g.log")
    first = os.listdir(tmp_path)[0]  # the walk visits sub-directories in listing order
    touch(tmp_path / first / fs.CHROMIUM_MARKER)
    skipped, sink = _skip_sink()
    with Root.open(str(tmp_path)) as root:
        found = names(root, on_skip=sink)
    others = sorted(set(os.listdir(tmp_path)) - {first})
    assert found == sorted(f"{s}/{f}" for s in others for f in ("deeper/g.log", "f.log"))
    assert skipped == [(f"{tmp_path}/{first}", fs.PROFILE_REASON)]


def test_an_excluded_directory_is_reported_with_its_path_and_not_entered(
        tmp_path: Path) -> None:
    for p in ["keep/a.log", "cache/b.log", "c.log"]:
        touch(tmp_path / p)
    scope = Scope(files=ALL.files, exclude=re.compile("cache").fullmatch)
    skipped, sink = _skip_sink()
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(".")
        try:
            found = _found(Walker(root, start, scope=lambda _d: scope, on_skip=sink).batches(),
                           root)
        finally:
            start.close()
    assert found == ["c.log", "keep/a.log"]
    assert skipped == [(f"{tmp_path}/cache", "excluded by safety.exclude_dirs")]


def test_a_refusal_is_reported_by_its_reason_alone_when_the_name_holds_a_colon(
        tmp_path: Path) -> None:
    touch(tmp_path / "root" / "top.log")
    touch(tmp_path / "root" / "odd: name" / "x.log")
    touch(tmp_path / "victim" / "secret.log")
    skipped, sink = _skip_sink()
    with Root.open(str(tmp_path / "root")) as root:
        for _d, name in walk(root, on_skip=sink):
            if name == "top.log":  # listed: swap the directory for a symlink
                os.rename(tmp_path / "root" / "odd: name", tmp_path / "moved")
                (tmp_path / "root" / "odd: name").symlink_to(tmp_path / "victim")
    assert skipped == [(f"{tmp_path}/root/odd: name", "a symlink, not followed")]


def test_a_path_too_long_is_reported_at_the_first_level_past_path_max(tmp_path: Path) -> None:
    _chain(tmp_path, 30, "n" * 255, "bottom.log")
    skipped, sink = _skip_sink()
    with Root.open(str(tmp_path)) as root:
        found = names(root, on_skip=sink)
    subprocess.run(["rm", "-rf", str(tmp_path / ("n" * 255))], check=True)
    level = 1
    while len(f"{tmp_path}/" + "/".join(["n" * 255] * level)) < fs.MAX_PATH:
        level += 1
    path = f"{tmp_path}/" + "/".join(["n" * 255] * level)
    assert found == []
    assert skipped == [(path, f"path longer than {fs.MAX_PATH} bytes, not entered")]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _deep_chain(base: Path, depth: int) -> None:
    touch(base.joinpath(*[f"d{i}" for i in range(1, depth + 1)]) / "f.log")
    for i in range(1, depth):
        touch(base.joinpath(*[f"d{j}" for j in range(1, i + 1)]) / "f.log")


@contextlib.contextmanager
def _fd0_free() -> Iterator[None]:
    """Descriptor 0 free, as in a process started with stdin closed: the next descriptor
    opened is 0."""
    saved = os.dup(0)
    os.close(0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def _window_walk(tmp_path: Path, *, zero_first: bool) -> tuple[int, int, int]:
    """(descriptors before the walk, at its deepest batch, after it) for a walk of a chain
    of 7 directories with a window of 3; with *zero_first* the first directory entered gets
    descriptor 0."""
    _deep_chain(tmp_path, 7)
    at_deepest = -1
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(".")
        with _fd0_free() if zero_first else contextlib.nullcontext():
            before = _open_fds()
            for d, _files, _dirs in Walker(root, start, scope=everything).batches():
                if d.path.endswith("/d7"):
                    at_deepest = _open_fds()
            after = _open_fds()
        start.close()
    return before, at_deepest, after


@pytest.mark.parametrize("zero_first", [False, True],
                         ids=["any descriptors", "the first on descriptor 0"])
def test_the_walk_keeps_exactly_the_last_fd_window_levels_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zero_first: bool) -> None:
    monkeypatch.setattr(fs, "FD_WINDOW", 3)
    before, at_deepest, after = _window_walk(tmp_path, zero_first=zero_first)
    assert at_deepest == before + 3  # d5, d6, d7: the ancestors above were closed
    assert after == before


def test_a_walk_stopped_early_closes_what_it_opened_but_not_its_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs, "FD_WINDOW", 2)
    _deep_chain(tmp_path, 5)
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(".")
        before = _open_fds()
        batches = Walker(root, start, scope=everything).batches()
        for d, _files, _dirs in batches:
            if d.path.endswith("/d4"):
                break
        batches.close()
        assert _open_fds() == before
        assert start.fd >= 0 and os.fstat(start.fd).st_ino == root.dir.ino
        start.close()


def test_a_start_directory_on_descriptor_0_is_walked_and_kept_as_it_is(
        tmp_path: Path) -> None:
    for p in ["a/x.log", "b/y.log", "c.log"]:
        touch(tmp_path / p)
    with Root.open(str(tmp_path)) as root, _fd0_free():
        start = root.open_path(".")
        assert start.fd == 0
        found = _found(Walker(root, start, scope=everything).batches(), root)
        assert start.fd == 0  # never re-opened through '..' as if it had been closed
        start.close()
        with pytest.raises(OSError) as closed:
            os.fstat(0)
        assert closed.value.errno == errno.EBADF
    assert found == ["a/x.log", "b/y.log", "c.log"]


# --- Root and Dir: opening, identity, names ---------------------------------------------------


@pytest.mark.parametrize("kind, why", [("missing", "does not exist"),
                                       ("file", "not a directory"),
                                       ("loop", "cannot open: Too many levels of symbolic links")])
def test_opening_a_root_says_in_one_line_what_is_wrong_with_the_path(
        tmp_path: Path, kind: str, why: str) -> None:
    path = tmp_path / "root"
    if kind == "file":
        touch(path)
    elif kind == "loop":
        path.symlink_to("root")
    with pytest.raises(FsError) as exc:
        Root.open(str(path))
    assert str(exc.value) == f"{path}: {why}"


def test_each_directory_opened_carries_the_identity_of_what_it_opened(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "b" / "f.log")
    with Root.open(str(tmp_path)) as root:
        st = os.stat(tmp_path)
        assert (root.dir.path, root.dir.dev, root.dir.ino) == (str(tmp_path), st.st_dev,
                                                               st.st_ino)
        for rel, path in [(".", tmp_path), ("a", tmp_path / "a"), ("a/b", tmp_path / "a" / "b")]:
            d = root.open_path(rel)
            st = os.stat(path)
            assert (d.path, d.dev, d.ino, d.nlink) == (str(path), st.st_dev, st.st_ino,
                                                       st.st_nlink)
            assert os.fstat(d.fd).st_ino == st.st_ino
            d.close()


def test_open_path_takes_each_name_as_it_is_and_skips_empty_and_dot_components(
        tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "X y ").mkdir()
    with Root.open(str(tmp_path)) as root:
        for rel, want in [("/a/./b//c/", "a/b/c"), ("X y ", "X y "), ("/X y /", "X y ")]:
            d = root.open_path(rel)
            assert d.path == f"{tmp_path}/{want}"
            assert os.fstat(d.fd).st_ino == (tmp_path / want).stat().st_ino
            d.close()


@pytest.mark.parametrize("name", ["ends in X", "ends in a space "])
def test_a_directory_joins_a_name_with_one_slash_whatever_its_last_character(
        tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    with Root.open(str(tmp_path / name)) as root:
        assert root.dir.join("f.log") == f"{tmp_path}/{name}/f.log"
    assert fs.Dir(-1, "/", 0, 0).join("f.log") == "/f.log"
    assert fs.Dir(-1, "", 0, 0).join("f.log") == "f.log"  # no path: the bare name


def test_a_name_the_system_refuses_to_open_is_reported_with_its_path_and_reason(
        tmp_path: Path) -> None:
    with Root.open(str(tmp_path)) as root, pytest.raises(FsError) as exc:
        root.open_path("x" * 300)
    assert str(exc.value) == f"{tmp_path}/{'x' * 300}: File name too long"


@pytest.mark.parametrize("err, kind", [(errno.ELOOP, "a symlink"),
                                       (errno.ENOTDIR, "not a directory")])
def test_an_entry_refused_and_gone_before_a_second_look_is_judged_by_the_error_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, kind: str) -> None:
    """O_NOFOLLOW|O_DIRECTORY fails on a symlink with ELOOP (or ENOTDIR on newer kernels);
    when the entry is gone before the lstat that would tell, the error alone says which."""
    real_open = os.open

    def refusing_open(path: str, flags: int, mode: int = 0o777, *,
                      dir_fd: int | None = None) -> int:
        if path == "gone":
            raise OSError(err, os.strerror(err), path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    with Root.open(str(tmp_path)) as root:
        monkeypatch.setattr(os, "open", refusing_open)
        with pytest.raises(FsError) as exc:
            root.open_path("gone")
    assert str(exc.value) == f"{tmp_path}/gone: {kind}, not followed"
