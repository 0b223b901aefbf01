"""Whole-directory removal (fs.remove_tree) in detail: what it counts, what it keeps, and how
each refusal is reported. Written against the mutation run of issue 24 (tests/mutation)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from architect_cleanup import fs
from architect_cleanup.fs import Root, TreeResult, remove_tree

from conftest import snapshot, touch

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _remove(base: Path, name: str, **kw: object) -> TreeResult:
    with Root.open(str(base)) as root:
        return remove_tree(root, root.dir, name, **kw)  # type: ignore[arg-type]


def test_a_missing_directory_is_nothing_to_do(tmp_path: Path) -> None:
    assert _remove(tmp_path, "gone", dry_run=False) == TreeResult()


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_something_else_in_place_of_the_directory_is_reported_and_kept(
        tmp_path: Path, kind: str) -> None:
    victim = touch(tmp_path / "victim" / "precious.pyc", data=b"precious")
    if kind == "symlink":
        (tmp_path / "__pycache__").symlink_to(victim.parent)
        why = "a symlink, not followed"
    else:
        touch(tmp_path / "__pycache__", data=b"a file")
        why = "not a directory, not followed"
    res = _remove(tmp_path, "__pycache__", dry_run=False)
    assert res.errors == [f"{tmp_path}/__pycache__: {why}"]
    assert (res.files, res.bytes, res.kept, res.removed_dir) == (0, 0, 1, False)
    assert victim.read_bytes() == b"precious"
    assert os.path.lexists(tmp_path / "__pycache__")


def _tree(base: Path) -> None:
    touch(base / "t" / "a.pyc", size=1)
    touch(base / "t" / "keep" / "held.pyc", size=2)
    touch(base / "t" / "keep" / "deeper" / "x.pyc", size=4)
    touch(base / "t" / "other" / "y.pyc", size=8)
    (base / "t" / "empty").mkdir()


def test_a_kept_file_keeps_its_directories_up_to_the_top_and_nothing_else(
        tmp_path: Path) -> None:
    _tree(tmp_path)
    res = _remove(tmp_path, "t", dry_run=False,
                  keep=lambda st: "held" if st.st_size == 2 else None)
    assert (res.files, res.bytes, res.kept, res.errors, res.removed_dir) == (
        3, 1 + 4 + 8, 1, [], False)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["t", "t/keep", "t/keep/held.pyc"]


def test_a_dry_run_counts_what_the_real_run_removes_and_changes_nothing(
        tmp_path: Path) -> None:
    _tree(tmp_path)
    before = snapshot(tmp_path)
    dry = _remove(tmp_path, "t", dry_run=True)
    assert snapshot(tmp_path) == before
    real = _remove(tmp_path, "t", dry_run=False)
    assert (dry.files, dry.bytes, dry.kept, dry.removed_dir) == (4, 15, 0, True)
    assert (real.files, real.bytes, real.kept, real.removed_dir) == (4, 15, 0, True)
    assert os.listdir(tmp_path) == []


def test_a_file_that_vanishes_before_its_unlink_is_not_counted(tmp_path: Path) -> None:
    touch(tmp_path / "t" / "a.pyc", size=3)
    touch(tmp_path / "t" / "sub" / "b.pyc", size=5)

    def vanish(st: os.stat_result) -> None:
        if st.st_size == 3:
            os.unlink(tmp_path / "t" / "a.pyc")  # someone else removed it meanwhile

    res = _remove(tmp_path, "t", dry_run=False, keep=vanish)
    assert (res.files, res.bytes, res.kept, res.errors, res.removed_dir) == (1, 5, 0, [], True)
    assert not (tmp_path / "t").exists()


def test_a_file_replaced_before_its_unlink_is_kept_with_its_directories(
        tmp_path: Path) -> None:
    touch(tmp_path / "t" / "sub" / "a.pyc", size=3)
    touch(tmp_path / "t" / "b.pyc", size=5)
    sub = tmp_path / "t" / "sub"

    def replace(st: os.stat_result) -> None:
        if st.st_size == 3:
            touch(sub / ".new", data=b"new")
            os.rename(sub / ".new", sub / "a.pyc")

    res = _remove(tmp_path, "t", dry_run=False, keep=replace)
    assert (res.files, res.bytes, res.kept, res.removed_dir) == (1, 5, 1, False)
    assert res.errors == [f"{sub}/a.pyc: changed since it was checked"]
    assert (sub / "a.pyc").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path / "t")) == ["sub"]


def test_a_tree_nested_deeper_than_the_limit_is_left_alone_below_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs, "FD_WINDOW", 1)  # the limit is FD_WINDOW * 8 levels
    deep = tmp_path.joinpath("t", *["d"] * 10)
    touch(deep / "bottom.pyc")
    touch(tmp_path / "t" / "top.pyc")
    res = _remove(tmp_path, "t", dry_run=False)
    path8 = tmp_path.joinpath("t", *["d"] * 8)
    assert res.errors == [f"{path8}: nested too deeply, left alone"]
    assert (res.files, res.kept, res.removed_dir) == (1, 0, False)
    assert (deep / "bottom.pyc").exists() and not (tmp_path / "t" / "top.pyc").exists()


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs with a tree in it, then remounted read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        # (a tmpfs lists the newest entry first: a.pyc before the directories, and two
        # empty directories, so that a refusal is never the last thing looked at)
        touch(mnt / "t" / "sub" / "b.pyc", size=2)
        (mnt / "t" / "empty").mkdir()
        (mnt / "t" / "empty2").mkdir()
        touch(mnt / "t" / "a.pyc", size=1)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_root
def test_a_read_only_file_system_is_reported_with_its_first_path_and_a_count(
        readonly_fs: Path) -> None:
    before = snapshot(readonly_fs)
    res = _remove(readonly_fs, "t", dry_run=False)
    assert snapshot(readonly_fs) == before
    assert (res.files, res.bytes, res.kept, res.removed_dir) == (0, 0, 2, False)
    assert res.readonly_count == 4  # two files and the two empty directories
    assert sorted(res.errors) == sorted(f"{readonly_fs}/t/{p}: Read-only file system"
                                        for p in ("a.pyc", "sub/b.pyc", "empty", "empty2"))
    assert res.readonly is not None and res.errors[0].startswith(res.readonly + ": ")
    dry = _remove(readonly_fs, "t", dry_run=True)
    assert (dry.files, dry.bytes, dry.errors, dry.removed_dir) == (2, 3, [], True)


# --- one refusal never stops the rest of the tree --------------------------------------------
#
# Each scenario puts ordinary sibling directories beside the refused entry: whatever order the
# file system lists them in, every one of them must be removed.


def _siblings(base: Path, n: int = 6) -> list[Path]:
    return [touch(base / f"s{i}" / "f.pyc", size=1) for i in range(n)]


def _gone(paths: list[Path]) -> bool:
    return not any(os.path.lexists(p.parent) for p in paths)


def test_two_kept_files_are_both_counted_and_the_siblings_go(tmp_path: Path) -> None:
    touch(tmp_path / "t" / "k1" / "a.pyc", size=2)
    touch(tmp_path / "t" / "k2" / "b.pyc", size=2)
    sibs = _siblings(tmp_path / "t")
    res = _remove(tmp_path, "t", dry_run=False, keep=lambda st: "held" if st.st_size == 2
                  else None)
    assert (res.files, res.kept, res.removed_dir, res.errors) == (6, 2, False, [])
    assert _gone(sibs)
    assert sorted(os.listdir(tmp_path / "t")) == ["k1", "k2"]


def test_files_replaced_before_their_unlink_are_each_kept_and_the_rest_goes(
        tmp_path: Path) -> None:
    names = [f"r{i}.pyc" for i in range(4)]
    for n in names:
        touch(tmp_path / "t" / n, size=3)
    touch(tmp_path / "t" / "plain.pyc", size=1)
    sibs = _siblings(tmp_path / "t")

    def replace(st: os.stat_result) -> None:
        for n in names:
            p = tmp_path / "t" / n
            if p.exists() and p.stat().st_ino == st.st_ino:
                touch(tmp_path / "t" / ".new", data=b"new")
                os.rename(tmp_path / "t" / ".new", p)

    res = _remove(tmp_path, "t", dry_run=False, keep=replace)
    assert (res.files, res.kept, res.removed_dir) == (7, 4, False)
    assert sorted(res.errors) == [f"{tmp_path}/t/{n}: changed since it was checked"
                                  for n in names]
    assert _gone(sibs) and not (tmp_path / "t" / "plain.pyc").exists()


def test_files_vanishing_during_the_listing_do_not_stop_it(tmp_path: Path) -> None:
    names = [f"v{i:02d}.pyc" for i in range(12)]
    for n in names:
        touch(tmp_path / "t" / n, size=1)
    sibs = _siblings(tmp_path / "t")
    first: list[int] = []

    def vanish_the_others(st: os.stat_result) -> None:
        if not first:  # the first file looked at removes every other one
            first.append(st.st_ino)
            for n in names:
                p = tmp_path / "t" / n
                if p.stat().st_ino != st.st_ino:
                    p.unlink()

    res = _remove(tmp_path, "t", dry_run=False, keep=vanish_the_others)
    assert (res.files, res.kept, res.errors, res.removed_dir) == (7, 0, [], True)
    assert _gone(sibs)


def test_a_directory_vanishing_before_it_is_entered_is_passed_over(tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / "t" / f"gone{i}").mkdir(parents=True)
    touch(tmp_path / "t" / "trigger.pyc", size=1)
    sibs = _siblings(tmp_path / "t")

    def rmdirs(st: os.stat_result) -> None:
        for i in range(6):
            with contextlib.suppress(FileNotFoundError):
                (tmp_path / "t" / f"gone{i}").rmdir()

    res = _remove(tmp_path, "t", dry_run=False, keep=rmdirs)
    assert (res.files, res.kept, res.errors, res.removed_dir) == (7, 0, [], True)
    assert _gone(sibs)


def test_a_path_too_long_is_reported_at_the_exact_level_and_the_siblings_go(
        tmp_path: Path) -> None:
    top = tmp_path / "t"
    top.mkdir()
    _chain_dirs(top, 30, "n" * 255, "bottom.pyc")
    sibs = _siblings(top)
    res = _remove(tmp_path, "t", dry_run=False)
    subprocess.run(["rm", "-rf", str(top / ("n" * 255))], check=True)
    level = 1
    while len(f"{top}/" + "/".join(["n" * 255] * level)) < fs.MAX_PATH:
        level += 1
    path = f"{top}/" + "/".join(["n" * 255] * level)
    assert res.errors == [f"{path}: path longer than {fs.MAX_PATH} bytes, left alone"]
    assert not res.removed_dir and _gone(sibs)


def _chain_dirs(base: Path, depth: int, name: str, leaf: str) -> None:
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open(leaf, os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)


def test_a_tree_too_deep_is_left_alone_there_and_the_siblings_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs, "FD_WINDOW", 1)
    touch(tmp_path.joinpath("t", "deep", *["d"] * 9) / "bottom.pyc")
    sibs = _siblings(tmp_path / "t")
    res = _remove(tmp_path, "t", dry_run=False)
    assert len(res.errors) == 1 and res.errors[0].endswith(": nested too deeply, left alone")
    assert not res.removed_dir and _gone(sibs)


@needs_root
def test_a_mount_point_inside_is_left_alone_and_the_siblings_go(tmp_path: Path) -> None:
    mnt = tmp_path / "t" / "mnt"
    mnt.mkdir(parents=True)
    sibs = _siblings(tmp_path / "t")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        touch(mnt / "other-fs.pyc")
        res = _remove(tmp_path, "t", dry_run=False)
        assert res.errors == [f"{mnt}: a mount point, not crossed"]
        assert not res.removed_dir and _gone(sibs)
        assert (mnt / "other-fs.pyc").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- rules of the walk inside the tree (remove_tree's keep_name, browser profiles) -----------


class _KeepName:
    """A keep_name rule that records what it was asked: (path, is_dir) of each entry."""

    def __init__(self, **reasons: tuple[str, bool]) -> None:
        self.reasons = reasons  # reason: (path suffix, is_dir it must be asked with)
        self.asked: list[tuple[str, bool]] = []

    def __call__(self, path: str, is_dir: bool) -> str | None:
        self.asked.append((path, is_dir))
        for why, (suffix, want_dir) in self.reasons.items():
            if path.endswith(suffix) and is_dir is want_dir:
                return why
        return None


def test_a_top_directory_a_rule_keeps_is_held_whole_and_untouched(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = snapshot(tmp_path)
    rule = _KeepName(excluded=("/t", True))
    res = _remove(tmp_path, "t", dry_run=False, keep_name=rule)
    assert snapshot(tmp_path) == before
    assert rule.asked == [(f"{tmp_path}/t", True)]
    assert res == TreeResult(kept=1, held=[(f"{tmp_path}/t", "excluded")])


def test_a_rule_inside_the_tree_holds_files_and_directories_and_their_parents_stay(
        tmp_path: Path) -> None:
    for p in ["a.pyc", "keep.pyc", "sub/b.pyc", "held/c.pyc", "held/deeper/d.pyc",
              "other/e.pyc"]:
        touch(tmp_path / "t" / p, size=1)
    rule = _KeepName(protected=("/keep.pyc", False), excluded=("/held", True))
    res = _remove(tmp_path, "t", dry_run=False, keep_name=rule)
    t = f"{tmp_path}/t"
    assert sorted(res.held) == [(f"{t}/held", "excluded"), (f"{t}/keep.pyc", "protected")]
    assert (res.files, res.kept, res.errors, res.removed_dir) == (3, 2, [], False)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["t", "t/held", "t/held/c.pyc", "t/held/deeper", "t/held/deeper/d.pyc",
                    "t/keep.pyc"]
    asked = dict(rule.asked)
    assert len(asked) == len(rule.asked)  # each entry asked once
    assert asked == {t: True, f"{t}/a.pyc": False, f"{t}/keep.pyc": False, f"{t}/sub": True,
                     f"{t}/sub/b.pyc": False, f"{t}/held": True, f"{t}/other": True,
                     f"{t}/other/e.pyc": False}  # nothing below a held directory


def test_a_browser_profile_at_the_top_is_held_with_its_path_and_untouched(
        tmp_path: Path) -> None:
    touch(tmp_path / "t" / fs.CHROMIUM_MARKER)
    touch(tmp_path / "t" / "Default" / "x.pyc")
    before = snapshot(tmp_path)
    res = _remove(tmp_path, "t", dry_run=False)
    assert snapshot(tmp_path) == before
    assert res == TreeResult(kept=1, held=[(f"{tmp_path}/t", fs.PROFILE_REASON)])


def test_a_browser_profile_inside_the_tree_is_held_and_its_parents_stay_without_errors(
        tmp_path: Path) -> None:
    touch(tmp_path / "t" / "a.pyc", size=1)
    touch(tmp_path / "t" / "prof" / fs.CHROMIUM_MARKER)
    touch(tmp_path / "t" / "prof" / "x.pyc")
    sibs = _siblings(tmp_path / "t")
    res = _remove(tmp_path, "t", dry_run=False)
    assert res.held == [(f"{tmp_path}/t/prof", fs.PROFILE_REASON)]
    assert (res.files, res.kept, res.errors, res.removed_dir) == (7, 1, [], False)
    assert sorted(os.listdir(tmp_path / "t" / "prof")) == [fs.CHROMIUM_MARKER, "x.pyc"]
    assert _gone(sibs) and os.listdir(tmp_path / "t") == ["prof"]


def test_a_directory_that_cannot_be_listed_stays_with_its_parents_and_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "t" / "bad" / "x.pyc")
    sibs = _siblings(tmp_path / "t")
    bad_ino = (tmp_path / "t" / "bad").stat().st_ino
    real = os.scandir

    def scandir(*args: Any) -> Any:
        if args and isinstance(args[0], int) and os.fstat(args[0]).st_ino == bad_ino:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(*args)

    monkeypatch.setattr(os, "scandir", scandir)
    res = _remove(tmp_path, "t", dry_run=False)
    assert res.errors == [f"{tmp_path}/t/bad: cannot list: Input/output error"]
    assert (res.files, res.removed_dir) == (6, False)
    assert _gone(sibs) and (tmp_path / "t" / "bad" / "x.pyc").exists()


@needs_root
def test_a_directory_refused_by_a_read_only_file_system_is_named_as_the_first_refusal(
        readonly_fs: Path) -> None:
    res = _remove(readonly_fs / "t", "empty", dry_run=False)
    assert (res.readonly, res.readonly_count) == (f"{readonly_fs}/t/empty", 1)
    assert res.errors == [f"{readonly_fs}/t/empty: Read-only file system"]


def test_a_tree_result_counts_every_hold_and_names_the_first_hundred() -> None:
    res = TreeResult()
    for i in range(150):
        res.hold(f"p{i}", f"why{i}")
    assert res.kept == 150
    assert res.held == [(f"p{i}", f"why{i}") for i in range(100)]
