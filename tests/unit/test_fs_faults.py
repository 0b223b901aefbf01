"""Faults in the safe file-system layer that looked like real bugs and that no unit test caught
(issue 24): each test here fails when its fault is seeded into fs.py.

- the walker, or whole-directory removal, following a symlink to a directory;
- a directory only group-writable (0775, our own) not treated as shared;
- the check after the private rename comparing only mtime and size;
- a hard-linked file counted as freeing space;
- the one-filesystem ``st_dev`` check: what it is for beside the mount-id check.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from architect_cleanup import fs
from architect_cleanup.fs import Changed, FsError, OpenFiles, Root, Scope, Walker, remove_tree

from conftest import snapshot, touch

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
#: every test with the file layer's loops in C and in Python (conftest.fs_loops)
pytestmark = pytest.mark.usefixtures("fs_loops")

ALL = Scope(files=re.compile(r".*", re.S).match)


def _walk(root: Root, skipped: list[tuple[str, str]] | None = None
          ) -> list[tuple[str, bool]]:
    """(path below the root, handed out as a directory?) for everything the walk hands out."""
    start = root.open_path(".")
    sink = (lambda p, w: skipped.append((p, w))) if skipped is not None else None
    try:
        return sorted((d.join(n)[len(root.dir.path) + 1:], is_dir)
                      for d, n, is_dir, _ in Walker(root, start, scope=lambda _d: ALL,
                                                    on_skip=sink))
    finally:
        start.close()


def _victim(tmp_path: Path) -> Path:
    outside = tmp_path / "victim"
    touch(outside / "precious.log", age=400 * 86400, data=b"precious")
    touch(outside / "sub" / "deep.log", age=400 * 86400, data=b"deep")
    return outside


# --- symlinks to directories -----------------------------------------------------------------


def test_a_symlink_to_a_directory_is_handed_out_as_a_name_not_entered_or_skipped(
        tmp_path: Path) -> None:
    """In a directory with sub-directories (the scandir path of the walk), a symlink to a
    directory is an entry like a file: handed out by name (a rule may remove the link), never
    listed as a directory to enter, and nothing is reported skipped."""
    outside = _victim(tmp_path)
    root_dir = tmp_path / "root"
    touch(root_dir / "sub" / "own.log")
    (root_dir / "old.log").symlink_to(outside)
    (root_dir / "sub" / "cache").symlink_to(outside / "sub")
    skipped: list[tuple[str, str]] = []
    with Root.open(str(root_dir)) as root:
        seen = _walk(root, skipped)
    assert seen == [("old.log", False), ("sub/cache", False), ("sub/own.log", False)]
    assert skipped == []


def test_remove_tree_removes_a_symlink_to_a_directory_as_a_link(tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    before = snapshot(outside)
    parent = tmp_path / "root"
    touch(parent / "__pycache__" / "m.pyc", data=b"12345")
    (parent / "__pycache__" / "lib").symlink_to(outside)
    (parent / "__pycache__" / "nested").mkdir()
    (parent / "__pycache__" / "nested" / "deeper").symlink_to(outside / "sub")
    with Root.open(str(parent)) as root:
        res = remove_tree(root, root.dir, "__pycache__", dry_run=False)
    assert res.errors == []
    assert res.removed_dir and res.kept == 0
    assert res.files == 3  # m.pyc and the two links
    assert not (parent / "__pycache__").exists()
    assert snapshot(outside) == before


def test_a_dry_run_of_remove_tree_counts_a_symlinked_directory_as_one_link(
        tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    parent = tmp_path / "root"
    touch(parent / "cache" / "a.tmp", data=b"123")
    (parent / "cache" / "lib").symlink_to(outside)
    with Root.open(str(parent)) as root:
        res = remove_tree(root, root.dir, "cache", dry_run=True)
    assert (res.files, res.bytes, res.errors, res.removed_dir) == (2, 3, [], True)
    assert (parent / "cache" / "lib").is_symlink()


# --- who else can write a directory ----------------------------------------------------------


@pytest.mark.parametrize("mode, shared", [(0o755, False), (0o700, False), (0o775, True),
                                          (0o757, True), (0o1777, True), (0o2775, True)])
def test_a_directory_is_shared_when_its_group_or_others_may_write_it(
        tmp_path: Path, mode: int, shared: bool) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(mode)
    with Root.open(str(tmp_path)) as root:
        opened = root.open_dir(root.dir, "d")
        try:
            assert opened.shared is shared
            opened.shared = None  # computed again from the descriptor
            assert fs.shared_dir(opened) is shared
        finally:
            opened.close()


def test_a_directory_someone_else_owns_is_shared_whatever_its_mode(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    os.chown(d, 1, 1)
    with Root.open(str(tmp_path)) as root:
        opened = root.open_dir(root.dir, "d")
        assert opened.shared is True
        opened.close()


class _Replace:
    """fs._rename_noreplace with a writer replacing the judged file right before the first
    call: after the last check, before the private rename."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
        self.calls = 0
        self.act = act
        self.real = fs._rename_noreplace
        monkeypatch.setattr(fs, "_rename_noreplace", self)

    def __call__(self, fd: int, old: str, new: str) -> None:
        self.calls += 1
        if self.calls == 1:
            self.act()
        self.real(fd, old, new)


def _unlink_one(d_path: Path, name: str) -> Exception | None:
    with Root.open(str(d_path)) as root:
        d = root.open_path(".")
        try:
            st = fs.lstat_at(d, name)
            [outcome] = fs.unlink_all(d, [(name, st)])
        finally:
            d.close()
    return outcome


def test_in_a_group_writable_directory_a_replacement_at_the_last_moment_survives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0775 and ours: a member of the group may rename a file over the name, so the unlink
    goes through the private rename, which finds the replacement and puts it back."""
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o775)
    touch(d / "app.log", age=100, data=b"old")

    def replace() -> None:
        touch(d / ".staged", age=0, data=b"young")
        os.rename(d / ".staged", d / "app.log")

    swap = _Replace(monkeypatch, replace)
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, Changed)
    assert swap.calls == 2  # away and back
    assert (d / "app.log").read_bytes() == b"young"


def test_a_replacement_with_the_same_mtime_and_size_is_told_apart_by_its_inode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check after the private rename: same mtime, same size, another file."""
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    old = touch(d / "app.log", age=100, data=b"judged!")
    mtime_ns = old.stat().st_mtime_ns

    def replace() -> None:
        staged = d / ".staged"
        staged.write_bytes(b"another")  # same size
        os.utime(staged, ns=(mtime_ns, mtime_ns))
        os.rename(staged, d / "app.log")

    _Replace(monkeypatch, replace)
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, Changed) and "replaced at the moment" in str(outcome)
    assert (d / "app.log").read_bytes() == b"another"
    assert os.listdir(d) == ["app.log"]


def test_a_replacement_by_a_directory_at_the_last_moment_is_not_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)

    def replace() -> None:
        os.unlink(d / "app.log")
        (d / "app.log").mkdir()

    _Replace(monkeypatch, replace)
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, Changed)
    assert (d / "app.log").is_dir()


def test_the_judged_file_is_unlinked_through_the_private_name_in_a_shared_directory(
        tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)
    assert _unlink_one(d, "app.log") is None
    assert os.listdir(d) == []


def test_a_file_that_vanished_before_the_private_rename_is_reported_as_vanished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)
    _Replace(monkeypatch, lambda: os.unlink(d / "app.log"))
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, FileNotFoundError)
    assert os.listdir(d) == []


# --- hard links ------------------------------------------------------------------------------


def test_a_file_with_another_hard_link_frees_nothing(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log", data=b"x" * 100)
    assert fs.freed_bytes(a.lstat()) == 100
    os.link(a, tmp_path / "elsewhere")
    assert fs.freed_bytes(a.lstat()) == 0
    (tmp_path / "link.log").symlink_to(a)
    assert fs.freed_bytes((tmp_path / "link.log").lstat()) == 0  # a link frees no data


def test_remove_tree_counts_no_bytes_for_a_hard_linked_file(tmp_path: Path) -> None:
    parent = tmp_path / "root"
    kept_elsewhere = touch(tmp_path / "keep.bin", data=b"x" * 1000)
    touch(parent / "cache" / "own.tmp", data=b"y" * 10)
    os.link(kept_elsewhere, parent / "cache" / "linked.tmp")
    with Root.open(str(parent)) as root:
        res = remove_tree(root, root.dir, "cache", dry_run=False)
    assert (res.files, res.bytes) == (2, 10)
    assert kept_elsewhere.read_bytes() == b"x" * 1000


# --- one filesystem: st_dev and the mount id -------------------------------------------------
#
# Both checks are needed; neither is redundant:
# - the mount id (from /proc/self/fdinfo) is compared only when a mount below the root was
#   listed in /proc/self/mountinfo when the root was opened (Root.check_mounts), and it is the
#   only check that sees a bind mount of the root's own filesystem (same st_dev):
#   test_fs.py::test_a_bind_mount_of_the_same_filesystem_is_not_crossed;
# - st_dev is compared always, and it is the only check for a filesystem mounted below the
#   root after the root was opened (during the run: mount ids are not compared then), and
#   where /proc/self/fdinfo cannot be read (the mount id is None on both sides).


@needs_root
def test_a_filesystem_mounted_below_the_root_after_it_was_opened_is_not_crossed(
        tmp_path: Path) -> None:
    touch(tmp_path / "own.log")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Root.open(str(tmp_path)) as root:
        assert not root.check_mounts  # nothing below the root was mounted at open time
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       check=True)
        try:
            touch(mnt / "other-fs.log")
            skipped: list[tuple[str, str]] = []
            assert _walk(root, skipped) == [("own.log", False)]
            assert skipped == [(str(mnt), "a mount point, not crossed")]
            with pytest.raises(FsError, match="a mount point, not crossed"):
                root.open_path("mnt")
            res = remove_tree(root, root.dir, "mnt", dry_run=False)
            assert res.errors and not res.removed_dir
            assert (mnt / "other-fs.log").exists()
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


@needs_root
def test_without_fdinfo_the_device_number_still_keeps_the_walk_on_one_filesystem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "own.log")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        touch(mnt / "other-fs.log")
        monkeypatch.setattr(fs, "_mount_id", lambda _fd: None)  # /proc/self/fdinfo unreadable
        with Root.open(str(tmp_path)) as root:
            assert root.check_mounts
            assert _walk(root) == [("own.log", False)]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- the private rename in detail ------------------------------------------------------------


def test_lstat_at_looks_at_the_link_itself(tmp_path: Path) -> None:
    touch(tmp_path / "target.log")
    (tmp_path / "link.log").symlink_to(tmp_path / "target.log")
    (tmp_path / "dangling.log").symlink_to(tmp_path / "nowhere")
    with Root.open(str(tmp_path)) as root:
        assert stat.S_ISLNK(fs.lstat_at(root.dir, "link.log").st_mode)
        assert stat.S_ISLNK(fs.lstat_at(root.dir, "dangling.log").st_mode)


def test_a_failed_rename_says_why_and_names_the_file(tmp_path: Path) -> None:
    with Root.open(str(tmp_path)) as root, pytest.raises(FileNotFoundError) as caught:
        fs._rename_noreplace(root.dir.fd, "missing.log", "other.log")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.strerror == os.strerror(errno.ENOENT)
    assert caught.value.filename == "missing.log"


def test_a_symlink_judged_in_a_shared_directory_is_removed_as_a_link(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    victim = touch(tmp_path / "victim.log", data=b"precious")
    (d / "old.log").symlink_to(victim)
    assert _unlink_one(d, "old.log") is None
    assert os.listdir(d) == [] and victim.read_bytes() == b"precious"


def test_a_vanished_file_is_reported_under_its_own_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)
    _Replace(monkeypatch, lambda: os.unlink(d / "app.log"))
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, FileNotFoundError)
    assert (outcome.errno, outcome.strerror, outcome.filename) == (
        errno.ENOENT, os.strerror(errno.ENOENT), str(d / "app.log"))


def test_a_leftover_private_name_never_blocks_the_removal(tmp_path: Path) -> None:
    # The private name holds a random part: one made in advance cannot keep a name forever.
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)
    touch(d / (fs.QUARANTINE + "app.log"))
    assert _unlink_one(d, "app.log") is None
    assert not (d / "app.log").exists()
    assert (d / (fs.QUARANTINE + "app.log")).exists()


def test_private_names_all_taken_are_named_in_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)
    monkeypatch.setattr(fs.os, "urandom", lambda n: b"\x00" * n)
    touch(d / f"{fs.QUARANTINE}{'00' * 8}.app.log")
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, Changed)
    assert str(outcome) == (f"{d}/app.log: every private name drawn for its removal was "
                            "taken; left alone")
    assert (d / "app.log").exists()


def test_the_longest_name_that_fits_the_private_prefix_still_gets_the_private_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    # the private name is the prefix, 16 random hex digits and a dot, then the name
    fits = "x" * (255 - len(fs.QUARANTINE) - 17)
    too_long = "y" * (256 - len(fs.QUARANTINE) - 17)
    touch(d / fits, age=100)
    touch(d / too_long, age=100)
    swap = _Replace(monkeypatch, lambda: None)
    assert _unlink_one(d, fits) is None
    assert swap.calls == 1
    assert _unlink_one(d, too_long) is None
    assert swap.calls == 1  # the plain check: no room for the prefix
    assert os.listdir(d) == []


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_without_rename_noreplace_the_file_gets_the_plain_check_and_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)

    def unsupported(_fd: int, old: str, _new: str) -> None:
        raise OSError(err, os.strerror(err), old)

    monkeypatch.setattr(fs, "_rename_noreplace", unsupported)
    assert _unlink_one(d, "app.log") is None
    assert os.listdir(d) == []


def test_another_rename_error_is_the_files_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100)

    def refused(_fd: int, old: str, _new: str) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), old)

    monkeypatch.setattr(fs, "_rename_noreplace", refused)
    outcome = _unlink_one(d, "app.log")
    assert isinstance(outcome, PermissionError)
    assert os.listdir(d) == ["app.log"]


# --- printing paths --------------------------------------------------------------------------


def test_every_undecodable_byte_is_shown_as_its_hex_escape() -> None:
    raw = bytes([0x61, 0x80, 0x62, 0xFF, 0x0A]).decode("utf-8", "surrogateescape")
    assert fs.display(raw) == "a\\x80b\\xff\\n"
    assert fs.display("tab\there\u200b") == "tab\\there\\u200b"
    assert fs.display("plain/päth") == "plain/päth"


# --- the open-file scan ----------------------------------------------------------------------


def test_the_open_file_scan_reads_every_process_and_counts_those_it_may_not(
        tmp_path: Path) -> None:
    """A /proc of our own making: readable processes holding files and a directory, ones
    whose fd directory cannot be listed, a process gone meanwhile, a dangling descriptor."""
    files = [touch(tmp_path / "data" / f"f{i}.log") for i in range(6)]
    held_dir = tmp_path / "data"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = tmp_path / "proc"
    for pid, targets in {"11": files[:2], "23": files[2:4], "37": [files[4], held_dir],
                         "41": [fifo]}.items():
        (proc / pid / "fd").mkdir(parents=True)
        for i, t in enumerate(targets):
            (proc / pid / "fd" / str(i)).symlink_to(t)
        (proc / pid / "fd" / "99").symlink_to(tmp_path / "gone")  # closed meanwhile
    for pid in ("13", "29"):  # the fd "directory" cannot be listed
        touch(proc / pid / "fd")
    (proc / "17").mkdir()  # exited between the two listings: no fd directory
    (proc / "self").mkdir()  # not a process
    scan = OpenFiles(str(proc))
    for f in files[:5]:
        assert scan.is_open(f.stat()), f
    assert scan.is_open(held_dir.stat())
    assert not scan.is_open(files[5].stat())
    assert not scan.is_open(fifo.stat())  # not a regular file or directory
    assert scan.unreadable == 2
    assert OpenFiles(str(tmp_path / "no-proc")).is_open(files[0].stat()) is False


def test_a_lone_surrogate_that_is_no_escaped_byte_is_shown_as_itself_escaped() -> None:
    assert fs.display("a\udd00b") == "a\\udd00b"
    assert fs.display("a\udc7fb") == "a\\udc7fb"


def test_iterating_the_walk_hands_out_claimed_directories_as_directories(
        tmp_path: Path) -> None:
    touch(tmp_path / "app" / "__pycache__" / "m.pyc")
    touch(tmp_path / "app" / "x.log")
    touch(tmp_path / "app" / "sub" / "y.log")
    scope = Scope(files=re.compile(r".*\.log$").match, claim=re.compile("__pycache__$").match)
    with Root.open(str(tmp_path)) as root:
        start = root.open_path(".")
        try:
            got = sorted((d.join(n)[len(str(tmp_path)) + 1:], is_dir)
                         for d, n, is_dir, _ in Walker(root, start, scope=lambda _d: scope))
        finally:
            start.close()
    assert got == [("app/__pycache__", True), ("app/sub/y.log", False), ("app/x.log", False)]


# --- mounts_below and _unescape_mountinfo: the mount points below a root ---------------------


@pytest.mark.parametrize("field, path", [
    ("/srv/plain", "/srv/plain"), (r"/srv/a\040b", "/srv/a b"), (r"/srv/tab\011x", "/srv/tab\tx"),
    (r"/srv/nl\012", "/srv/nl\n"), (r"/srv/back\134slash", "/srv/back\\slash"),
    (r"/srv/\0401", "/srv/ 1"), (r"/srv/\08", r"/srv/\08"), (r"/srv/\12", r"/srv/\12"),
    ("/srv/bad\udcffname", os.fsdecode(b"/srv/bad\xffname")),  # decoded as any path here
])
def test_a_mount_point_field_has_its_octal_escapes_undone(field: str, path: str) -> None:
    assert fs._unescape_mountinfo(os.fsencode(field)) == path


def _mount_tmpfs(point: Path) -> None:
    point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)


@needs_root
def test_mounts_below_lists_the_mount_points_strictly_below_a_path(tmp_path: Path) -> None:
    box, boxx = tmp_path / "box", tmp_path / "boxX"
    points = [box / "m", box / "with space", tmp_path / "boxes" / "m", boxx / "m"]
    mounted: list[Path] = []
    try:
        for point in points:
            _mount_tmpfs(point)
            mounted.append(point)
        inside = [str(box / "m"), str(box / "with space")]
        assert sorted(fs.mounts_below(str(box))) == inside
        assert sorted(fs.mounts_below(str(box) + "/")) == inside
        assert fs.mounts_below(str(boxx)) == [str(boxx / "m")]
        assert fs.mounts_below(str(box / "m")) == []  # strictly below: not the point itself
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", str(point)], check=True)


@needs_root
def test_a_mount_point_whose_name_is_no_utf8_is_listed_with_its_bytes_escaped(
        tmp_path: Path) -> None:
    """Mounted in a mount namespace of its own (unshare -m): no other process reading the
    system's mount table meets the undecodable name, and it goes with the process."""
    base = os.fsencode(tmp_path)
    point = base + b"/bad\xffname"
    os.mkdir(point)
    code = ("import json, subprocess, sys\n"
            "from architect_cleanup import fs\n"
            "subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', sys.argv[2]],"
            " check=True)\n"
            "print(json.dumps(fs.mounts_below(sys.argv[1])))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(fs.__file__).resolve().parents[1])}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", code, base, point], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [os.fsdecode(point)]
    assert fs.mounts_below(str(tmp_path)) == []  # this process never saw it


# --- untrusted: who else may change a file or directory --------------------------------------


@pytest.mark.parametrize("mode, why", [
    (0o755, None), (0o700, None), (0o1755, None),
    (0o775, "writable by its group (mode 0775)"), (0o2770, "writable by its group (mode 2770)"),
    (0o757, "writable by others (mode 0757)"), (0o702, "writable by others (mode 0702)"),
    (0o777, "writable by group and others (mode 0777)"),
    (0o1777, "writable by group and others (mode 1777)"),
])
def test_untrusted_says_who_else_may_write_and_shows_the_mode(
        tmp_path: Path, mode: int, why: str | None) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(mode)
    assert fs.untrusted(os.stat(d)) == why


@needs_root
def test_untrusted_refuses_an_owner_other_than_root_or_the_user_running_this(
        tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    assert fs.untrusted(os.stat(d)) is None  # root's own
    os.chown(d, 1, 1)
    assert fs.untrusted(os.stat(d)) == "owned by uid 1, not by root or the user running this"


# --- too_long: a path of MAX_PATH bytes or more ----------------------------------------------


@pytest.mark.parametrize("path, long", [
    ("a" * 4095, False), ("a" * 4096, True),
    ("\U0001F600" * 1023 + "abc", False), ("\U0001F600" * 1024, True),  # 4 bytes a character
    ("é" * 2047 + "a", False), ("é" * 2048, True),
    (os.fsdecode(b"\xff" * 4095), False), (os.fsdecode(b"\xff" * 4096), True),
])
def test_a_path_is_too_long_from_max_path_bytes_on_however_many_characters(
        path: str, long: bool) -> None:
    assert fs.MAX_PATH == 4096
    assert fs.too_long(path) is long


# --- is_profile_dir: a browser profile holds 'Local State' -----------------------------------


def test_a_local_state_entry_of_any_kind_even_a_dangling_link_marks_a_browser_profile(
        tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    touch(tmp_path / "file" / fs.CHROMIUM_MARKER)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / fs.CHROMIUM_MARKER).symlink_to(tmp_path / "nowhere")
    with Root.open(str(tmp_path)) as root:
        for name, profile in [("plain", False), ("file", True), ("link", True)]:
            d = root.open_path(name)
            try:
                assert fs.is_profile_dir(d) is profile, name
            finally:
                d.close()


# --- raise_nofile_limit ----------------------------------------------------------------------


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard - 1), hard))
        fs.raise_nofile_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("exc", [ValueError("not allowed to raise maximum limit"),
                                 OSError(errno.EPERM, "Operation not permitted")])
def test_a_refused_raise_of_the_descriptor_limit_is_passed_over(
        monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    """setrlimit refuses (ValueError) e.g. when fs.nr_open was lowered below the hard limit:
    a sysctl of the whole machine, so the refusal is injected here."""
    asked: list[object] = []

    def refuse(*args: object) -> None:
        asked.append(args)
        raise exc

    monkeypatch.setattr(fs, "resource", SimpleNamespace(
        RLIMIT_NOFILE=resource.RLIMIT_NOFILE, getrlimit=lambda _r: (256, 1024),
        setrlimit=refuse))
    fs.raise_nofile_limit()
    assert asked == [(resource.RLIMIT_NOFILE, (1024, 1024))]


# --- OpenFiles.describe: who holds a file open -----------------------------------------------


def _fake_proc(tmp_path: Path, comms: dict[str, bytes | None]) -> tuple[Path, dict[str, Path]]:
    """A /proc of our own making: each PID holds one file open, its comm as given (None: no
    comm file, as for a process that exited meanwhile)."""
    proc, held = tmp_path / "proc", {}
    for pid, comm in comms.items():
        held[pid] = touch(tmp_path / "data" / f"held-by-{pid}.log")
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "fd" / "3").symlink_to(held[pid])
        if comm is not None:
            (proc / pid / "comm").write_bytes(comm)
    return proc, held


def test_an_open_file_is_described_by_its_holders_pid_and_printable_name(
        tmp_path: Path) -> None:
    proc, held = _fake_proc(tmp_path, {
        "42": b"gunicorn\n", "43": None, "44": b"", "45": b"caf\xc3\n",  # cut inside a character
        "46": b"tab\there\n"})
    free = touch(tmp_path / "data" / "free.log")
    scan = OpenFiles(str(proc))
    assert {pid: scan.describe(f.stat()) for pid, f in held.items()} == {
        "42": "open by PID 42 (gunicorn)", "43": "open by PID 43", "44": "open by PID 44",
        "45": "open by PID 45 (caf\ufffd)", "46": "open by PID 46 (tab\\there)"}
    assert scan.describe(free.stat()) is None


def test_a_holders_name_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    proc, held = _fake_proc(tmp_path, {"47": "café\n".encode()})
    assert OpenFiles(str(proc)).describe(held["47"].stat()) == "open by PID 47 (café)"
    code = ("import json, os, sys\n"
            "from architect_cleanup.fs import OpenFiles\n"
            "print(json.dumps([OpenFiles(sys.argv[1]).describe(os.stat(sys.argv[2])),"
            " sys.flags.utf8_mode]))\n")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": str(Path(fs.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code, str(proc), str(held["47"])], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == ["open by PID 47 (café)", 0]  # 0: the locale's ASCII was in force


# --- the private rename in detail (_move_aside, _unlink_moved) --------------------------------


def _shared_with_app_log(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o1777)
    touch(d / "app.log", age=100, data=b"old")
    return d


def test_a_private_name_found_taken_is_drawn_again_and_the_file_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _shared_with_app_log(tmp_path)
    draws = iter([b"\x00" * 8, b"\x01" * 8])
    monkeypatch.setattr(fs.os, "urandom", lambda n: next(draws))
    taken = touch(d / f"{fs.QUARANTINE}{'00' * 8}.app.log", data=b"someone's")
    assert _unlink_one(d, "app.log") is None
    assert os.listdir(d) == [taken.name] and taken.read_bytes() == b"someone's"


def test_the_private_rename_draws_three_names_before_it_gives_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _shared_with_app_log(tmp_path)
    monkeypatch.setattr(fs.os, "urandom", lambda n: b"\x00" * n)
    taken = touch(d / f"{fs.QUARANTINE}{'00' * 8}.app.log")
    tried: list[str] = []
    real = fs._rename_noreplace

    def counting(fd: int, old: str, new: str) -> None:
        tried.append(new)
        real(fd, old, new)

    monkeypatch.setattr(fs, "_rename_noreplace", counting)
    assert isinstance(_unlink_one(d, "app.log"), Changed)
    assert tried == [taken.name] * 3
    assert (d / "app.log").read_bytes() == b"old"


def test_a_replacement_found_under_the_private_name_is_reported_under_the_name_it_had(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _shared_with_app_log(tmp_path)

    def replace() -> None:
        touch(d / ".staged", data=b"young")
        os.rename(d / ".staged", d / "app.log")

    _Replace(monkeypatch, replace)
    outcome = _unlink_one(d, "app.log")
    assert str(outcome) == f"{d}/app.log: replaced at the moment of its removal; left alone"
    assert (d / "app.log").read_bytes() == b"young"
