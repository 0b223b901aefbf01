"""The C loops of the file layer (architect_cleanup._fsops) against what Python's own calls
return on the same files: the listing, the lstat()s, the checked unlinks, and the prefilter
that lets the listing drop names before the matcher sees them."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from architect_cleanup import _fsops, fs
from architect_cleanup.fs import Dir, Root, group_matcher, group_prefilter, unlink_all

from conftest import touch

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown and chattr need root")

STAT_FIELDS = [f for f in dir(os.stat_result) if f.startswith("st_")]


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Dir]:
    with Root.open(str(tmp_path)) as root:
        yield root.dir


def same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (type(a) is type(b) and tuple(a) == tuple(b)
            and all(getattr(a, f) == getattr(b, f) for f in STAT_FIELDS))


def same_light_stat(a: object, b: os.stat_result) -> bool:
    """Prefetch's lstat (_fsops.Stat): every attribute of os.stat_result, equal, and its
    full() the os.stat_result itself."""
    return (type(a) is _fsops.Stat and same_stat(a.full(), b)
            and all(getattr(a, f) == getattr(b, f) for f in STAT_FIELDS))


def test_the_extension_is_what_fs_uses() -> None:
    assert fs.FSOPS is _fsops  # make setup builds it, and the Debian package ships it


def test_lstat_many_returns_what_os_lstat_returns_for_every_kind_of_entry(
        tmp_path: Path, d: Dir) -> None:
    touch(tmp_path / "plain.log", size=123)
    os.utime(tmp_path / "plain.log", ns=(1_700_000_000_123_456_789, 1_600_000_000_987_654_321))
    touch(tmp_path / "old.log")
    os.utime(tmp_path / "old.log", ns=(-86_400_000_000_001, -1_500_000_000))  # before 1970
    touch(tmp_path / "far.log")
    os.utime(tmp_path / "far.log", ns=(2**33 * 10**9 + 7, 2**33 * 10**9 + 7))  # year 2242
    # beyond 9e9 seconds (year 2255): the nanoseconds as Python's multiplication makes them
    touch(tmp_path / "farther.log")
    os.utime(tmp_path / "farther.log", ns=(9_100_000_000 * 10**9 + 9, 10**19 + 11))
    os.symlink("nowhere", tmp_path / "dangling.log")
    os.mkfifo(tmp_path / "fifo.log")
    (tmp_path / "dir.log").mkdir()
    touch(tmp_path / "linked.log")
    os.link(tmp_path / "linked.log", tmp_path / "second-link")
    odd = os.fsdecode(b"caf\xe9 \n\x01.log")  # undecodable byte, newline, control character
    touch(tmp_path / odd)
    names = ["plain.log", "old.log", "far.log", "farther.log", "dangling.log", "fifo.log",
             "dir.log", "linked.log", odd]
    got = _fsops.lstat_many(d.fd, names)
    for name, st_ in zip(names, got, strict=True):
        assert st_ is not None
        assert same_stat(st_, os.stat(name, dir_fd=d.fd, follow_symlinks=False)), name


@needs_root
def test_lstat_many_reads_owners_as_os_lstat_does(tmp_path: Path, d: Dir) -> None:
    touch(tmp_path / "theirs")
    os.chown(tmp_path / "theirs", 4_000_000_000, 12345)  # beyond 31 bits
    got = _fsops.lstat_many(d.fd, ["theirs"])[0]
    assert got is not None and got.st_uid == 4_000_000_000 and got.st_gid == 12345
    assert same_stat(got, os.lstat(tmp_path / "theirs"))


def test_lstat_many_gives_none_for_a_name_that_cannot_be_read_and_keeps_the_order(
        tmp_path: Path, d: Dir) -> None:
    touch(tmp_path / "a")
    touch(tmp_path / "c")
    got = _fsops.lstat_many(d.fd, ["a", "gone", "c", "a/below"])
    assert [g is not None for g in got] == [True, False, True, False]
    assert _fsops.lstat_many(d.fd, []) == []


def test_lstat_many_refuses_what_os_lstat_refuses(d: Dir) -> None:
    with pytest.raises(ValueError, match="null"):
        _fsops.lstat_many(d.fd, ["a\0b"])
    with pytest.raises(TypeError):
        _fsops.lstat_many(d.fd, [7])  # type: ignore[list-item]


def test_listdir_filter_lists_as_os_listdir_and_leaves_the_position_at_the_start(
        tmp_path: Path, d: Dir) -> None:
    for i in range(300):
        touch(tmp_path / f"f{i:03d}.log")
    touch(tmp_path / os.fsdecode(b"bad\xff.tmp"))
    (tmp_path / "sub").mkdir()
    names, total = _fsops.listdir_filter(d.fd, None, ())
    assert names == os.listdir(d.fd) and total == 302  # the same order as well
    assert _fsops.listdir_filter(d.fd, None, ()) == (names, total)  # read again, whole


@given(st.lists(st.text(st.sampled_from("ab.lgo*\xe9\udcff"), max_size=8), max_size=30,
                unique=True))
@settings(max_examples=60, deadline=None)
def test_listdir_filter_keeps_exactly_the_names_ending_with_a_tail_or_holding_a_needle(
        tmp_path_factory: pytest.TempPathFactory, raw: list[str]) -> None:
    where = tmp_path_factory.mktemp("names")
    made = []
    for n in raw:
        name = n.replace("/", "_").strip("\0")
        if name in ("", ".", "..") or "*" in name:
            continue
        (where / name).touch()
        made.append(name)
    tails, needles = (b".log", os.fsencode("\xe9")), (b"a.", os.fsencode("\udcff"))
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names, total = _fsops.listdir_filter(fd, tails, needles)
    finally:
        os.close(fd)
    want = [n for n in os.listdir(where)
            if os.fsencode(n).endswith(tails) or any(x in os.fsencode(n) for x in needles)]
    assert names == want and total == len(made)


def test_listdir_filter_fails_as_os_listdir_fails(tmp_path: Path) -> None:
    touch(tmp_path / "file")
    fd = os.open(tmp_path / "file", os.O_RDONLY)
    try:
        with pytest.raises(NotADirectoryError):
            _fsops.listdir_filter(fd, None, ())
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        _fsops.listdir_filter(fd, None, ())
    with pytest.raises(TypeError):
        _fsops.listdir_filter(0, ("log",), ())  # type: ignore[arg-type]


# --- Prefetch: the dry run's leaves listed and lstat()ed on a C thread ----------------------

def _dirs(tmp_path: Path, n: int) -> list[int]:
    """n directories of varied entries (an undecodable name, a link, a FIFO, a directory),
    each opened: their descriptors."""
    fds = []
    for i in range(n):
        where = tmp_path / f"d{i:03d}"
        for k in range(i % 7):
            touch(where / f"f{k}.log", size=k)
            touch(where / f"f{k}.json")
        touch(where / os.fsdecode(b"caf\xe9.log"))
        if i % 3 == 0:
            os.symlink("nowhere", where / "link.log")
            os.mkfifo(where / "fifo.tmp")
            (where / "sub.log").mkdir()
        fds.append(os.open(where, os.O_RDONLY | os.O_DIRECTORY))
    return fds


SHIPPED = (("t0", ("*.log", "*.log.*")), ("t1", ("*.tmp", "*.temp", "*.cache", "*.pyc")))


@pytest.mark.parametrize("classes", [fs.group_classes(SHIPPED), None])
def test_prefetch_gives_the_names_by_class_and_their_lstat_in_the_order_handed_in(
        tmp_path: Path, classes: fs.Classes | None) -> None:
    """Names as listdir_filter lists them with the same texts, each with what os.lstat
    gives, sorted by the group that takes them (None: every name, for the matcher)."""
    fds = _dirs(tmp_path, 40)
    pf = _fsops.Prefetch()
    match = group_matcher(SHIPPED)
    try:
        for fd in fds:  # all handed in before any is taken: the thread runs ahead
            pf.submit(fd, classes)
        for fd in fds:
            by_class, known, total = pf.take()
            pre = fs.group_prefilter(SHIPPED)
            assert pre is not None
            want, want_total = _fsops.listdir_filter(fd, *(pre if classes else (None, ())))
            assert (list(known), total) == (want, want_total)
            for name, got in known.items():
                assert got is not None
                assert same_light_stat(got, os.stat(name, dir_fd=fd, follow_symlinks=False))
            if classes is None:
                assert by_class == [(255, want)]
            else:
                per: dict[int, list[str]] = {}
                for name in want:
                    m = match(name)
                    assert m is not None
                    per.setdefault(int(m.lastgroup[1:]), []).append(name)
                assert by_class == list(per.items())
        with pytest.raises(LookupError):
            pf.take()  # nothing left
    finally:
        pf.close()
        for fd in fds:
            os.close(fd)


def test_prefetch_lstat_has_every_attribute_of_os_lstat_to_the_nanosecond(
        tmp_path: Path) -> None:
    """_fsops.Stat, made when read, gives what os.lstat gives: times before 1970, with
    nanoseconds, and beyond what 64 bits of nanoseconds hold (the year 2300)."""
    times = {"past": -86_400 * 400 * 10**9 - 123, "ns": 1_700_000_000_123_456_789,
             "far": 10_400_000_000 * 10**9 + 987_654_321}
    for name, ns in times.items():
        touch(tmp_path / name, size=len(name))
        os.utime(tmp_path / name, ns=(ns, ns))
    os.symlink("past", tmp_path / "link")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    pf = _fsops.Prefetch()
    try:
        pf.submit(fd, None)
        _by_class, known, total = pf.take()
        assert total == 4 and sorted(known) == ["far", "link", "ns", "past"]
        for name, got in known.items():
            assert same_light_stat(got, os.lstat(tmp_path / name)), name
            assert "st_mtime_ns=" in repr(got)
        assert known["far"].st_mtime_ns == times["far"]
    finally:
        pf.close()
        os.close(fd)


def test_prefetch_raises_a_listing_error_for_that_directory_only(tmp_path: Path) -> None:
    fds = _dirs(tmp_path, 2)
    touch(tmp_path / "file")
    not_dir = os.open(tmp_path / "file", os.O_RDONLY)
    closed = os.open(tmp_path, os.O_RDONLY)
    os.close(closed)
    pf = _fsops.Prefetch()
    try:
        for fd in (fds[0], not_dir, closed, fds[1]):
            pf.submit(fd, None)
        assert pf.take()[2] == 4  # d000: its name not UTF-8, a link, a FIFO, a directory
        with pytest.raises(NotADirectoryError):
            pf.take()
        with pytest.raises(OSError, match="Bad file descriptor"):
            pf.take()
        by_class, known, total = pf.take()
        assert total == len(known) == 3 and all(x is not None for x in known.values())
        assert by_class == [(255, list(known))]
    finally:
        pf.close()
        for fd in (*fds, not_dir):
            os.close(fd)


def test_prefetch_closed_with_work_not_taken_stops_and_refuses_more(tmp_path: Path) -> None:
    fds = _dirs(tmp_path, 30)
    threads = len(os.listdir("/proc/self/task"))
    pf = _fsops.Prefetch()
    assert len(os.listdir("/proc/self/task")) == threads + 1
    for fd in fds:
        pf.submit(fd, None)
    pf.take()
    pf.close()  # the thread ends after the directory it is on; the rest is dropped
    assert len(os.listdir("/proc/self/task")) == threads
    pf.close()  # twice: nothing more
    with pytest.raises(ValueError, match="closed"):
        pf.submit(fds[0], None)
    with pytest.raises(ValueError, match="closed"):
        pf.take()
    for bad in (("log",), ((b".log",),), (((".log",), (), None),)):
        with pytest.raises(TypeError):
            _fsops.Prefetch().submit(fds[0], bad)  # type: ignore[arg-type]
    dropped = _fsops.Prefetch()  # never closed: its thread ends with it
    dropped.submit(fds[0], None)
    del dropped
    assert len(os.listdir("/proc/self/task")) == threads
    for fd in fds:
        os.close(fd)


PATTERN_TEXT = st.text(st.sampled_from("ab.*?[]!l"), min_size=1, max_size=6)


@given(st.lists(st.lists(PATTERN_TEXT, min_size=1, max_size=3), min_size=1, max_size=3),
       st.lists(st.text(st.sampled_from("ab.l\udcff]"), max_size=7), max_size=20))
@settings(max_examples=300, deadline=None)
def test_the_prefilter_never_drops_a_name_the_matcher_takes(
        groups: list[list[str]], names: list[str]) -> None:
    named = [(f"g{i}", tuple(p)) for i, p in enumerate(groups)]
    match = group_matcher(named)
    pre = group_prefilter(named)
    for name in names:
        if match(name) is None or pre is None:
            continue
        raw = os.fsencode(name)
        assert raw.endswith(pre[0]) or any(n in raw for n in pre[1]), (name, named, pre)


def _list_ahead(where: Path, groups: list[tuple[str, tuple[str, ...]]]
                ) -> tuple[dict[str | None, list[str]], int, str | None]:
    """fs.ListAhead's take of one directory, sorted by *groups* of patterns."""
    scope = fs.Scope(files=group_matcher(groups), groups=tuple(g for g, _p in groups),
                     classes=fs.group_classes(groups))
    ahead = fs.list_ahead()
    assert ahead is not None
    with Root.open(str(where)) as root:
        try:
            ahead.submit(root.dir, scope)
            return ahead.take(root.dir, scope)
        finally:
            ahead.close()


@given(st.lists(st.lists(PATTERN_TEXT, min_size=1, max_size=3), min_size=1, max_size=3),
       st.lists(st.text(st.sampled_from("ab.l\udcff]*"), max_size=7), max_size=20,
                unique=True))
@settings(max_examples=200, deadline=None)
def test_the_listing_ahead_sorts_names_by_group_exactly_as_the_matcher(
        tmp_path_factory: pytest.TempPathFactory, groups: list[list[str]],
        raw: list[str]) -> None:
    """fs.ListAhead: what the C listing sorts by class (and the matcher decides for the
    rest) is what group_matcher and the walk's grouping give: the same names, groups, and
    order of both."""
    where = tmp_path_factory.mktemp("ahead")
    for name in {n.replace("/", "_") for n in raw} - {"", ".", ".."}:
        (where / name).touch()
    named = [(f"g{i}", tuple(p)) for i, p in enumerate(groups)]
    match = group_matcher(named)
    per, total, why = _list_ahead(where, named)
    listed = os.listdir(where)
    want = fs.by_group([(n, m) for n in listed if (m := match(n)) is not None])
    assert (per, list(per), total, why) == (want, list(want), len(listed), None), named


def test_the_listing_ahead_of_a_directory_it_cannot_list_counts_nothing(
        tmp_path: Path) -> None:
    scope = fs.Scope(files=group_matcher(SHIPPED), groups=("t0", "t1"),
                     classes=fs.group_classes(SHIPPED))
    gone = Dir(os.open(tmp_path, os.O_RDONLY), str(tmp_path), 0, 0)
    gone.close()  # fd -1: EBADF
    ahead = fs.list_ahead()
    assert ahead is not None
    try:
        ahead.submit(gone, scope)
        assert ahead.take(gone, scope) == ({}, 0, "cannot list: Bad file descriptor")
    finally:
        ahead.close()


@pytest.mark.parametrize("n", [255, 256])
def test_the_listing_ahead_leaves_names_to_the_matcher_past_255_groups(
        tmp_path: Path, n: int) -> None:
    """A name's class is one byte, 255 meaning "the matcher decides": with 255 groups and
    more, such names and those of the 256th group on are sorted by the matcher."""
    groups = [("g0", ("a?c",))] + [(f"g{i}", (f"*.x{i}",)) for i in range(1, n)]
    for name in ("abc", "f.x1", f"f.x{n - 1}"):
        touch(tmp_path / name)
    per, total, _why = _list_ahead(tmp_path, groups)
    assert {g: sorted(names) for g, names in per.items()} == {
        "g0": ["abc"], "g1": ["f.x1"], f"g{n - 1}": [f"f.x{n - 1}"]}
    assert total == 3


def test_a_directory_keeps_what_it_knows_on_a_descriptor_of_its_own(tmp_path: Path) -> None:
    with Root.open(str(tmp_path)) as root:
        d = root.dir
        d.shared, d.mnt = True, 7
        own = d.dup()
        try:
            assert own.fd != d.fd and os.path.samestat(os.fstat(own.fd), os.fstat(d.fd))
            assert (own.path, own.dev, own.ino, own.mnt, own.nlink, own.shared) == (
                d.path, d.dev, d.ino, 7, d.nlink, True)
            assert own.known is None
        finally:
            own.close()


def test_lstat_many_asks_the_file_system_for_a_name_its_listing_did_not_keep(
        tmp_path: Path, d: Dir) -> None:
    touch(tmp_path / "kept.log")
    touch(tmp_path / "other.txt")
    d.known = {"kept.log": None}  # as the listing saw it (gone since)
    assert fs.lstat_many(d, ["kept.log"]) == [None]
    got = fs.lstat_many(d, ["kept.log", "other.txt"])  # not all known: the file system
    assert got[0] is not None and got[1] is not None
    assert same_stat(got[1], os.lstat(tmp_path / "other.txt"))


def test_the_open_files_are_scanned_once_per_run(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    scans = []
    real = fs.OpenFiles._scan

    def scan(self: fs.OpenFiles) -> dict[tuple[int, int], int]:
        scans.append(1)
        return real(self)

    monkeypatch.setattr(fs.OpenFiles, "_scan", scan)
    held = open(tmp_path / "held", "w")  # noqa: SIM115
    try:
        of = fs.OpenFiles()
        st_ = os.stat(tmp_path / "held")
        assert of.is_open(st_) and of.holder(st_) == os.getpid()
        assert not of.is_open(os.stat(tmp_path))
        assert len(scans) == 1
    finally:
        held.close()


def test_the_prefilter_of_the_shipped_rules_is_their_suffixes_and_literal_parts() -> None:
    assert group_prefilter([("t0", ("*.log", "*.log.*")),
                            ("t1", ("*.tmp", "architect_*_worker.log"))]) == (
        (b".log", b".tmp"), (b".log.", b"_worker.log"))
    assert group_prefilter([("t0", ("*.Xz", "*.z*"))]) == ((b".Xz",), (b".z",))
    assert group_prefilter([("t0", ("*.log", "[ab]*"))]) is None  # brackets: every name
    assert group_prefilter([("t0", ("*",))]) is None


def judged(d: Dir, *names: str) -> list[tuple[str, os.stat_result]]:
    return [(n, os.stat(n, dir_fd=d.fd, follow_symlinks=False)) for n in names]


def test_unlink_many_unlinks_what_is_unchanged_and_reports_the_rest_in_order(
        tmp_path: Path, d: Dir) -> None:
    for n in ("keep-same", "gone", "replaced", "touched", "now-a-dir", "unlinked", "chmodded"):
        touch(tmp_path / n, age=3600)
    items = judged(d, "unlinked", "gone", "replaced", "touched", "now-a-dir", "chmodded",
                   "keep-same")
    (tmp_path / "gone").unlink()
    (tmp_path / "replaced").unlink()
    touch(tmp_path / "replaced", age=3600)  # a new file under the name (maybe the inode)
    os.utime(tmp_path / "touched", (1, 1))
    (tmp_path / "now-a-dir").unlink()
    (tmp_path / "now-a-dir").mkdir()
    (tmp_path / "chmodded").chmod(0o600)  # only its ctime moves on
    items[-1] = ("keep-same", items[-1][1])
    os.utime(tmp_path / "keep-same")  # mtime and ctime move on
    rcs = _fsops.unlink_many(d.fd, [(n, s.st_dev, s.st_ino, s.st_mtime_ns, s.st_ctime_ns)
                                    for n, s in items])
    assert rcs == [0, errno.ENOENT, *[_fsops.CHANGED] * 5]
    assert sorted(os.listdir(tmp_path)) == ["chmodded", "keep-same", "now-a-dir", "replaced",
                                            "touched"]


@needs_root
def test_unlink_many_reports_the_errno_of_a_refused_unlink(tmp_path: Path, d: Dir) -> None:
    touch(tmp_path / "held")
    subprocess.run(["chattr", "+i", str(tmp_path / "held")], check=True)  # ext4: EPERM
    items = judged(d, "held")
    try:
        assert _fsops.unlink_many(d.fd, [(n, s.st_dev, s.st_ino, s.st_mtime_ns,
                                          s.st_ctime_ns) for n, s in items]) == [errno.EPERM]
        out = unlink_all(d, items)  # as the caller sees it: an OSError with that errno
        assert isinstance(out[0], PermissionError) and out[0].filename == "held"
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "held")], check=True)


def test_a_judged_time_beyond_64_bits_leaves_the_work_to_the_python_loop(
        tmp_path: Path, d: Dir) -> None:
    touch(tmp_path / "far")
    os.utime(tmp_path / "far", ns=(2**62, 2**62))  # year 2116: fits
    far = judged(d, "far")[0][1]
    big = os.stat_result((*far[:10],), {"st_mtime_ns": 2**63, "st_ctime_ns": far.st_ctime_ns,
                                        "st_atime_ns": 0})
    assert _fsops.unlink_many(d.fd, [("far", far.st_dev, far.st_ino, 2**63, 0)]) is None
    assert (tmp_path / "far").exists()  # nothing done
    out = unlink_all(d, [("far", big)])  # the Python loop: not the judged file, kept
    assert isinstance(out[0], fs.Changed) and (tmp_path / "far").exists()
    assert unlink_all(d, [("far", far)]) == [None] and not (tmp_path / "far").exists()


def test_unlink_many_never_removes_a_directory(tmp_path: Path, d: Dir) -> None:
    (tmp_path / "sub").mkdir()
    st_ = os.stat(tmp_path / "sub")
    rcs = _fsops.unlink_many(d.fd, [("sub", st_.st_dev, st_.st_ino, st_.st_mtime_ns,
                                     st_.st_ctime_ns)])
    assert rcs == [_fsops.CHANGED] and stat.S_ISDIR(os.stat(tmp_path / "sub").st_mode)


# --- the file layer's functions, with the C loops and with the Python ones -------------------


@pytest.mark.usefixtures("fs_loops")
def test_the_file_layers_lstat_many_reads_links_not_their_targets(tmp_path: Path,
                                                                   d: Dir) -> None:
    touch(tmp_path / "target", size=10)
    os.symlink("target", tmp_path / "link.log")
    os.symlink("nowhere", tmp_path / "dangling.log")
    link, dangling, missing = fs.lstat_many(d, ["link.log", "dangling.log", "missing"])
    assert link is not None and same_stat(link, os.lstat(tmp_path / "link.log"))
    assert dangling is not None and stat.S_ISLNK(dangling.st_mode) and missing is None


@pytest.mark.usefixtures("fs_loops")
def test_a_file_changed_since_it_was_judged_is_reported_by_its_path(tmp_path: Path,
                                                                    d: Dir) -> None:
    touch(tmp_path / "x.log", age=3600)
    items = judged(d, "x.log")
    os.utime(tmp_path / "x.log")
    [out] = unlink_all(d, items)
    assert isinstance(out, fs.Changed)
    assert str(out) == f"{tmp_path}/x.log: changed since it was checked"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_walk_lists_leaves_and_unlinks_in_c_keeping_only_names_a_rule_may_take(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    from architect_cleanup.worker import CleanupWorker

    from conftest import DAY, NOW, make_config, patch_fsops

    calls: list[tuple[object, ...]] = []

    def listdir_filter(real: Any, fd: int, tails: Any, needles: Any) -> Any:
        names, total = real(fd, tails, needles)
        calls.append(("list", tails, sorted(names), total))
        return names, total

    def unlink_many(real: Any, fd: int, items: list[Any]) -> Any:
        calls.append(("unlink", [i[0] for i in items]))
        return real(fd, items)

    patch_fsops(monkeypatch, listdir_filter=listdir_filter, unlink_many=unlink_many)
    touch(tmp_path / "logs" / "old.log", 40 * DAY)
    touch(tmp_path / "logs" / "new.log")
    touch(tmp_path / "logs" / "old.txt", 40 * DAY)
    cfg = make_config(tmp_path, None, safety={"workers": workers}, backups={"enabled": False})
    CleanupWorker(config=cfg, now=NOW, dry_run=False, only=["logs"],
                  record_state=False).run_cleanup()
    [(_, tails, names, total)] = [c for c in calls if c[0] == "list" and "old.log" in c[2]]
    assert tails is not None and b".log" in tails  # the rules' prefilter, not every name
    assert (names, total) == (["new.log", "old.log"], 3)
    assert [c for c in calls if c[0] == "unlink"] == [("unlink", ["old.log"])]
    assert sorted(os.listdir(tmp_path / "logs")) == ["new.log", "old.txt"]
