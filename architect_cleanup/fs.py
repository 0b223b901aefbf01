"""The safe file-system layer: the only code in the product that removes what a rule judged.

The rule, precisely: every file or directory a target removes from a configured root (a log,
a temporary file, a backup, a compressed backup's original, an orphan, what a file rule
names) is removed here, by :func:`unlink_checked`, :func:`unlink_all` or :func:`remove_tree`.
Other modules unlink only files the product made itself, under names only it uses: the
temporary file of an atomic write (state, caches, metrics, the alert outbox, the panel's
drop-in) and its own entries of those; the unfinished copy a compression, a download or a
verification left, swept by its private prefix; a restore's work files; the quarantine's
emptied stamp directories; the original worker's stale PID file that ``migrate`` replaces.

Everything here works relative to open directory descriptors:

* a directory is entered with ``os.open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=parent)``, so a
  path component swapped for a symlink fails with ``ELOOP`` instead of redirecting us;
* entries are listed with ``os.scandir(fd)``, looked at by *name* first (``d_type`` tells
  directories apart without a ``stat``), and only a name that matches a rule pays for an
  ``lstat``;
* deletion is ``os.unlink(name, dir_fd=fd)`` after re-checking that the entry is still the one
  that was judged (same device, inode and mtime);
* a directory on another device, or on another mount of the same device (a bind mount, found
  through ``/proc/self/fdinfo``), is never entered.

The shared walk of the logs/temp targets (``targets.tree``) may hand each directory's work to
a few threads (``safety.workers``): each gets the directory through a descriptor of its own
(``dup``) and calls the same functions (:func:`list_leaf`, :func:`unlink_all`,
:func:`remove_tree`), so every rule above holds on every thread; only the walk's order and
the reports stay on the run's thread.

The system calls of one directory's hot loops — its listing, the ``lstat`` of the names a rule
matched, the checked unlinks — run in C when the extension :mod:`architect_cleanup._fsops` is
built (the Debian package always builds it): one call per directory with the GIL released,
so the pool's threads do not hand the GIL over at every file. :data:`FSOPS` is that module,
or None where it is not built; the Python loops here are then used, with the same outcome
(``tests/unit/test_fsops.py`` runs both on the same trees).

The walk is iterative and streams: memory holds one list of sub-directory *names* per level of
the current path, never the tree. Only a bounded window of ancestor descriptors stays open; an
ancestor whose descriptor was closed is re-opened through ``..`` and must have the same device
and inode as before, or the walk stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import resource
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from types import ModuleType
from typing import Any

from architect_cleanup.itemwrite import escape_char

try:
    from architect_cleanup import _fsops
except ImportError:  # a source tree nobody built (pip install -e . builds it)
    _fsops = None  # type: ignore[assignment]

#: The C loops (:mod:`architect_cleanup._fsops`), or None: this module's own Python loops.
FSOPS: ModuleType | None = _fsops

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Open descriptors kept per walk; deeper ancestors are closed and re-opened through "..".
FD_WINDOW = 128
#: The longest path (in bytes) the walk enters: the kernel's PATH_MAX. No program that works
#: with paths can create or open anything deeper, so a longer path is hostile or broken: it is
#: reported and left alone. The limit also bounds what a walk holds (the path of each open
#: level) and its time: a chain of 100,000 nested directories costs nothing.
MAX_PATH = 4096
#: Name of the file Chromium keeps at the top of a user-data directory.
CHROMIUM_MARKER = "Local State"
#: Why a directory holding it is neither entered nor removed.
PROFILE_REASON = "browser profile (holds 'Local State')"

# Roots that may never be configured: cleaning them would wreck the system.
FORBIDDEN_ROOTS = frozenset(
    {"/", "/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run", "/var",
     "/home"}
)


class FsError(Exception):
    """A path could not be opened safely; the message says why in plain words."""


class WalkAborted(FsError):
    """The tree changed under the walk in a way that makes going on unsafe."""


#: Trees that belong to the system or its packages: no root may lie anywhere below them.
SYSTEM_TREES = ("/usr", "/etc", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run",
                "/root", "/opt", "/var/lib", "/var/log", "/var/cache", "/var/spool",
                "/var/mail", "/var/backups", "/var/opt", "/snap")
#: Below these, a directory named exactly (one level down: ``/opt/architect``) is allowed,
#: deeper ones are not: the place FHS gives an add-on package of its own.
PACKAGE_TREES = ("/opt", "/var/opt")


def _norm(path: str) -> str:
    norm = os.path.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def is_forbidden_root(path: str) -> bool:
    """True for ``/``, ``/etc`` … and ``/lib*`` themselves (not for paths below them)."""
    norm = _norm(path)
    return norm in FORBIDDEN_ROOTS or bool(re.fullmatch(r"/lib[^/]*", norm))


def system_tree(path: str) -> str | None:
    """The system tree (:data:`SYSTEM_TREES`, ``/lib``, ``/lib64``...) that holds *path*, or None.

    ``/opt/<name>`` (and ``/var/opt/<name>``) named exactly is not refused: an add-on
    package's own directory; anything deeper in them is."""
    norm = _norm(path)
    first = "/" + norm.split("/")[1] if norm != "/" else "/"
    if re.fullmatch(r"/lib(?:32|64|x32)?", first):
        return first
    for tree in SYSTEM_TREES:
        if norm == tree or norm.startswith(tree + "/"):
            if tree in PACKAGE_TREES and norm.count("/") == tree.count("/") + 1:
                return None
            return tree
    return None


def patterns_regex(patterns: Iterable[str]) -> str:
    """One regular expression (text) matching a name against any of the shell patterns."""
    return "|".join(f"(?:{translate(p)})" for p in patterns)


def compile_patterns(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate: does a name match any of the shell patterns?

    When every pattern starts (or every one ends) with literal text, a name is first checked
    with ``str.startswith``/``str.endswith`` on those literals, and only a name that passes
    pays for the regular expression (``architect_*_worker.log`` is asked of every log file)."""
    pats = list(patterns)
    if not pats:
        return lambda _name: False
    match = re.compile(patterns_regex(pats)).match
    heads = tuple(_literal_head(p) for p in pats)
    tails = tuple(_literal_tail(p) for p in pats)
    if all(heads):
        return lambda name: name.startswith(heads) and match(name) is not None
    if all(tails):
        return lambda name: name.endswith(tails) and match(name) is not None
    return lambda name: match(name) is not None


@dataclass(frozen=True, slots=True)
class Owned:
    """What :func:`group_matcher` returns for a matching name: the group whose pattern
    matched first (as ``re.Match.lastgroup``)."""

    lastgroup: str


def group_matcher(groups: Sequence[tuple[str, Sequence[str]]]) -> Matcher:
    """``re.compile("(?P<g1>...)|(?P<g2>...)").match`` over groups of shell patterns, without
    paying a regular expression for every name: an object whose ``lastgroup`` names the
    first group with a pattern matching the name, or None.

    The walk asks this of every name in the tree. A pattern that is ``*`` and literal text
    (``*.log``) is a ``str.endswith``; any other pattern keeps its regular expression, asked
    only of a name that holds the longest literal part of one of them (a name ``*.log.*``
    matches holds ``.log.``). Both are exact: what they skip cannot match."""
    plan: list[tuple[Owned, tuple[str, ...], tuple[str, ...], Callable[[str], Any] | None,
                     tuple[str, ...] | None]] = []
    for group, pats in groups:
        suffixes, infixes, others = _sort_patterns(pats)
        rx = re.compile(patterns_regex(others)).match if others else None
        plan.append((Owned(group), suffixes, infixes, rx, _needed(others) if others else None))

    def match(name: str) -> Owned | None:
        for owned, suffixes, infixes, rx, needs in plan:
            if suffixes and name.endswith(suffixes):
                return owned
            if infixes and any(x in name for x in infixes):
                return owned
            if rx is not None and (needs is None or any(n in name for n in needs)) \
                    and rx(name) is not None:
                return owned
        return None

    return match


def _sort_patterns(patterns: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                     list[str]]:
    """A group's patterns as :func:`group_matcher` asks them: the texts a name matching a
    ``*`` + literal pattern ends with, those a name matching ``*`` + literal + ``*`` holds,
    and the other patterns (a regular expression each)."""
    suffixes, infixes, others = [], [], []
    for p in patterns:
        tail, mid = _plain_suffix(p), _plain_infix(p)
        if tail is not None:
            suffixes.append(tail)
        elif mid is not None:
            infixes.append(mid)
        else:
            others.append(p)
    return tuple(suffixes), tuple(infixes), others


def _plain_suffix(pattern: str) -> str | None:
    """The literal text of a pattern that is ``*`` and literal text (``*.log``: ``.log``),
    which a name matches by ending with it; None for any other pattern."""
    rest = pattern[1:]
    if pattern.startswith("*") and rest and not any(c in rest for c in "*?[]"):
        return rest
    return None


def _plain_infix(pattern: str) -> str | None:
    """The literal text of a pattern that is ``*``, literal text and ``*`` (``*.log.*``:
    ``.log.``), which a name matches by holding it; None for any other pattern."""
    mid = pattern[1:-1]
    if len(pattern) > 2 and pattern[0] == pattern[-1] == "*" \
            and not any(c in mid for c in "*?[]"):
        return mid
    return None


#: What a listing in C may keep of a directory's names before the matcher sees them
#: (:func:`group_prefilter`): names ending with one of the first texts or holding one of the
#: second (the names' bytes, as the file system has them).
Prefilter = tuple[tuple[bytes, ...], tuple[bytes, ...]]


def group_prefilter(groups: Sequence[tuple[str, Sequence[str]]]) -> Prefilter | None:
    """The names :func:`group_matcher` over the same *groups* may match, as plain texts: the
    suffix of each ``*`` + literal pattern, and the longest literal part of each other one;
    None when a pattern has no such part (every name must be asked).

    It keeps every name the matcher takes (a name ending with a text has its encoding end
    with the text's encoding: the file system encoding maps a name character by character),
    and the matcher still decides: the filter only spares it the names it would refuse."""
    classes = group_classes(groups)
    if classes is None:
        return None
    tails = tuple(t for suffixes, _i, _o in classes for t in suffixes)
    needles = []
    for _s, infixes, others in classes:
        if others is None:
            return None
        needles += [*infixes, *others]
    return tails, tuple(needles)


#: How a listing in C sorts a directory's names by the group of patterns that takes them
#: (:func:`group_classes`): per group, in order, the texts a name it takes may end with, those
#: it may hold, and the literal parts one of which a name its other patterns match holds
#: (None: an other pattern has none, so it must be asked of every name).
Classes = tuple[tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...] | None], ...]


def group_classes(groups: Sequence[tuple[str, Sequence[str]]]) -> Classes | None:
    """:func:`group_matcher`'s plan over the same *groups* as plain texts (the names' bytes,
    as the file system has them), for the C listing to decide what it exactly can: a name
    ending with a group's suffix or holding its infix is that group's (unless an earlier
    group's other patterns might match it: then the matcher decides); a name that no group
    can take is dropped. None when a text cannot be encoded (every name is then asked).

    Exact because it follows the matcher's order (:func:`_sort_patterns`), and the file
    system encoding maps a name character by character, so a name ending with (holding) a
    text has its encoding end with (hold) the text's encoding."""
    out = []
    try:
        for _group, pats in groups:
            suffixes, infixes, others = _sort_patterns(pats)
            needs = _needed(others) if others else ()
            out.append((tuple(os.fsencode(t) for t in suffixes),
                        tuple(os.fsencode(t) for t in infixes),
                        None if needs is None else tuple(os.fsencode(t) for t in needs)))
    except UnicodeError:  # a text the file system encoding cannot hold: ask every name
        return None
    return tuple(out)


def _needed(patterns: Sequence[str]) -> tuple[str, ...] | None:
    """Literal texts one of which every name matching any of *patterns* holds: each
    pattern's longest run without wildcards (None when a pattern has none, or brackets)."""
    out = []
    for p in patterns:
        if "[" in p or "]" in p:
            return None
        longest = max(re.split(r"[*?]", p), key=len)
        if not longest:
            return None
        out.append(longest)
    return tuple(out)


def _literal_head(pattern: str) -> str:
    """Text every match of a shell pattern starts with (up to its first wildcard)."""
    cut = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
    return pattern[:cut]


def _literal_tail(pattern: str) -> str:
    """Text every match of a shell pattern ends with (after its last wildcard or bracket)."""
    return pattern[max(pattern.rfind(c) for c in "*?[]") + 1:]


def display(path: str) -> str:
    """A path safe to print on one line: control characters and undecodable bytes escaped."""
    if path.isprintable():
        return path
    return "".join(ch if ch.isprintable() else escape_char(ch) for ch in path)


def too_long(path: str) -> bool:
    """True when *path* takes :data:`MAX_PATH` bytes or more (PATH_MAX counts the final NUL, so
    4,095 is the longest path the kernel accepts; names are often multibyte)."""
    return len(path) >= MAX_PATH // 4 and len(
        path.encode("utf-8", "surrogateescape")) >= MAX_PATH


def raise_nofile_limit() -> None:
    """Raise the soft descriptor limit to the hard one (the walk itself needs few)."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _mount_id(fd: int) -> int | None:
    """The mount id of an open descriptor, from /proc/self/fdinfo (None if unavailable)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as fh:
            for line in fh:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _unescape_mountinfo(field_: bytes) -> str:
    """A path field of mountinfo (space, tab, newline and backslash written as octal escapes),
    decoded as every path of this process is (os.fsdecode, whatever the locale)."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field_))


def mounts_below(path: str) -> list[str]:
    """Mount points strictly below *path*, from /proc/self/mountinfo."""
    prefix = path.rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 4:
                    point = _unescape_mountinfo(parts[4])
                    if point.startswith(prefix):
                        found.append(point)
    except OSError:
        pass
    return found


@dataclass(slots=True)
class Dir:
    """An open directory: descriptor, printable path, and identity."""

    fd: int
    path: str
    dev: int
    ino: int
    mnt: int | None = None
    nlink: int = 0  # 2 means "no sub-directories" on file systems that count them
    #: someone other than this process may rename files over names in it (see shared_dir)
    shared: bool | None = None
    #: the lstat of its names, taken as it was listed (a dry run's walk: see list_ahead);
    #: lstat_many answers from it
    known: dict[str, os.stat_result | None] | None = None
    #: sub-directories a rule takes whole, opened and listed ahead (a dry run's walk: see
    #: ListAhead.submit_all); remove_tree takes its own from here
    ahead: dict[str, Listed] | None = None

    def join(self, name: str) -> str:
        return name if not self.path else f"{self.path.rstrip('/')}/{name}"

    def dup(self) -> Dir:
        """The same directory on a descriptor of its own (for work the walk hands on: the
        walk closes its own when it moves on)."""
        return Dir(os.dup(self.fd), self.path, self.dev, self.ino, self.mnt, self.nlink,
                   self.shared)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class Listed:
    """A directory opened and listed ahead of the walk that removes it whole (a dry run's:
    :meth:`ListAhead.submit_all`): its descriptor, and its names in listing order with
    their lstat (None where it failed), or why it could not be listed."""

    dir: Dir
    known: dict[str, os.stat_result | None]
    error: str | None = None


@dataclass(slots=True)
class Root:
    """A configured root, opened once; everything below it is reached through its descriptor."""

    dir: Dir
    check_mounts: bool = False  # a mount exists below the root: compare mount ids too

    @classmethod
    def open(cls, path: str) -> Root:
        """Open a configured root. Its own path may contain symlinks (the operator chose it);
        the resolved path must not be a system directory."""
        real = os.path.realpath(path)
        if is_forbidden_root(path) or is_forbidden_root(real):
            raise FsError(f"{path}: refusing to work on system directory {real}")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FsError(f"{path}: does not exist") from None
        except NotADirectoryError:
            raise FsError(f"{path}: not a directory") from None
        except OSError as exc:
            raise FsError(f"{path}: cannot open: {exc.strerror}") from None
        st = os.fstat(fd)
        below = bool(mounts_below(real))
        return cls(Dir(fd, real, st.st_dev, st.st_ino, _mount_id(fd) if below else None), below)

    def close(self) -> None:
        self.dir.close()

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def same_mount(self, fd: int, st: os.stat_result) -> bool:
        """True when an opened directory lies on the root's own mount."""
        if st.st_dev != self.dir.dev:
            return False
        return not self.check_mounts or _mount_id(fd) == self.dir.mnt

    def open_dir(self, parent: Dir, name: str) -> Dir:
        """Enter one directory below *parent* without following symlinks or leaving the mount.

        Raises FileNotFoundError when it is missing and FsError when it may not be entered."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                # O_NOFOLLOW|O_DIRECTORY on a symlink fails with ELOOP or ENOTDIR
                try:
                    is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent.fd,
                                                   follow_symlinks=False).st_mode)
                except OSError:
                    is_link = exc.errno == errno.ELOOP
                kind = "a symlink" if is_link else "not a directory"
                raise FsError(f"{display(parent.join(name))}: {kind}, not followed") from None
            raise FsError(f"{display(parent.join(name))}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not self.same_mount(fd, st):
            os.close(fd)
            raise FsError(f"{display(parent.join(name))}: a mount point, not crossed")
        return Dir(fd, parent.join(name), st.st_dev, st.st_ino, nlink=st.st_nlink,
                   shared=_others_can_write(st))

    def open_path(self, rel: str) -> Dir:
        """Enter a relative path below the root, one component at a time (see open_dir)."""
        rel = rel.strip("/")
        cur = Dir(os.dup(self.dir.fd), self.dir.path, self.dir.dev, self.dir.ino,
                  nlink=os.fstat(self.dir.fd).st_nlink)
        if rel in ("", "."):
            return cur
        try:
            for part in rel.split("/"):
                if part in ("", "."):
                    continue
                if part == "..":
                    raise FsError(f"{rel}: '..' is not allowed")
                nxt = self.open_dir(cur, part)
                cur.close()
                cur = nxt
        except BaseException:
            cur.close()
            raise
        return cur


def free_space(d: Dir) -> tuple[int, int]:
    """(bytes available to unprivileged users, total bytes) of the filesystem holding *d*,
    from ``fstatvfs`` on its descriptor (what ``df`` shows as Avail and Size)."""
    st = os.fstatvfs(d.fd)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def is_profile_dir(d: Dir) -> bool:
    """A directory holding Chromium's 'Local State' file is a browser profile (not ours).

    Asked of every directory the walk enters: with the C loops, without the exception
    ``os.stat`` raises for each one that is not (a tenth of the walk's own time)."""
    if FSOPS is not None:
        return FSOPS.lstat_many(d.fd, [CHROMIUM_MARKER])[0] is not None
    try:
        os.stat(CHROMIUM_MARKER, dir_fd=d.fd, follow_symlinks=False)
    except OSError:
        return False
    return True


# --- walking ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Level:
    dir: Dir
    subdirs: list[str] = field(default_factory=list)


#: A compiled name matcher: None when a name does not match, else what the consumer needs
#: (``re.Pattern.match`` bound to a pattern returns a match object, e.g. for its lastgroup).
Matcher = Callable[[str], Any]
#: Called for every directory skipped with its reason (exclusions, mounts, errors).
SkipSink = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Scope:
    """What the walk looks for in one directory: names are matched before anything else.

    *files* matches non-directory names to hand out; *claim* matches directory names handed
    out whole (not entered, e.g. ``__pycache__``); *exclude* matches directory names that are
    neither entered nor handed out."""

    files: Matcher | None = None
    claim: Matcher | None = None
    exclude: Matcher | None = None
    #: the names *files* may match, for a listing in C to keep (None: every name)
    prefilter: Prefilter | None = None
    #: *files*'s groups of patterns in its order (``Owned.lastgroup``) and as plain texts,
    #: for a listing in C to sort names by the group that takes them (see ListAhead)
    groups: tuple[str, ...] = ()
    classes: Classes | None = None


#: Given the directory being entered, the scope that applies there (None: nothing to find,
#: but keep walking below it).
ScopeFn = Callable[[Dir], Scope]


#: One listed directory's matches: ``(dir, [(file name, match)], [(dir name, match)])``.
Batch = tuple[Dir, list[tuple[str, Any]], list[tuple[str, Any]]]


class Walker:
    """A streaming, fd-relative, depth-first walk below one directory of a Root.

    :meth:`batches` yields, per directory, the entries whose name the scope matches: files
    for ``scope.files`` and claimed directories for ``scope.claim``, each with what the
    matcher returned. Nothing is stat'ed here: the consumer pays for ``lstat`` only on names
    it wants. The directory stays open until the consumer asks for the next batch, so it may
    act on the entries with ``dir.fd``. Iterating the walker itself yields the same entries
    one by one as ``(dir, name, is_dir, match)``.

    Memory holds one directory's matching names at a time (``os.listdir`` holds all of a
    leaf directory's names anyway), plus the names of sub-directories still to visit.

    Directories whose link count says they have no sub-directories (the classic leaf
    optimisation of find: ``st_nlink == 2``) are read with ``os.listdir``, which is cheaper
    than ``scandir``; a sub-directory created after that check is then handed out as a name
    like any other, and the consumer's ``lstat`` sees it is no file. With *lazy_leaves* such
    a directory is handed out unlisted (its files list is :data:`UNLISTED`) for the consumer
    to read with :func:`list_leaf`, e.g. on another thread while the walk goes on; the
    entries it lists are then not in ``entries_seen``.
    """

    def __init__(self, root: Root, start: Dir, *, scope: ScopeFn,
                 on_skip: SkipSink | None = None, max_depth: int | None = None,
                 on_dir: Callable[[], None] | None = None, lazy_leaves: bool = False) -> None:
        self.root = root
        self.start = start
        self.scope = scope
        self.on_skip = on_skip or (lambda _path, _why: None)
        self.max_depth = max_depth
        self.on_dir = on_dir
        self.entries_seen = 0
        #: leave a leaf directory's listing to the consumer (see :meth:`batches`)
        self.lazy_leaves = lazy_leaves

    def __iter__(self) -> Iterator[tuple[Dir, str, bool, Any]]:
        for d, files, dirs in self.batches():
            for name, m in files:
                yield d, name, False, m
            for name, m in dirs:
                yield d, name, True, m

    def batches(self) -> Iterator[Batch]:
        stack: list[_Level] = [_Level(self.start)]
        try:
            level: _Level | None = stack[0]
            while level is not None:
                yield from self._list(level, len(stack))
                if self.on_dir is not None:
                    self.on_dir()
                level = self._next_level(stack)
        finally:
            for lvl in stack:
                if lvl.dir is not self.start:
                    lvl.dir.close()

    def _list(self, level: _Level, depth: int) -> Iterator[Batch]:
        """List one directory (*depth* levels below the start, counting it), handing out its
        matching names: a leaf directory (no sub-directories by its link count) is read
        with ``os.listdir``, or handed out unlisted (*lazy_leaves*), any other is scanned."""
        d = level.dir
        sc = self.scope(d)
        files = sc.files
        if d.nlink != 2:
            descend = self.max_depth is None or depth <= self.max_depth
            found, claimed = self._scan(level, sc, descend)
            if found or claimed:
                yield d, found, claimed
        elif files is not None and self.lazy_leaves:
            yield d, UNLISTED, []  # the consumer lists it: list_leaf()
        elif files is not None:
            found, seen, why = list_leaf(d, files, sc.prefilter)
            if why is not None:
                self.on_skip(d.path, why)
            self.entries_seen += seen
            if found:
                yield d, found, []

    def _next_level(self, stack: list[_Level]) -> _Level | None:
        """Move on: enter the next sub-directory still to visit, backing up (and closing
        what is done) as needed; None when the walk is over."""
        while True:
            top = stack[-1]
            if not top.subdirs:
                stack.pop()
                if not stack:
                    return None
                self._ensure_open(stack, top)
                if top.dir is not self.start:
                    top.dir.close()
                continue
            child = self._enter(top.dir, top.subdirs.pop())
            if child is None:
                continue
            level = _Level(child)
            stack.append(level)
            if len(stack) > FD_WINDOW:
                old = stack[-FD_WINDOW - 1].dir
                if old is not self.start and old.fd >= 0:
                    old.close()
            return level

    def _enter(self, parent: Dir, name: str) -> Dir | None:
        """Open sub-directory *name* of *parent*; None (the reason reported) when it may
        not be entered or vanished since the listing."""
        if too_long(parent.join(name)):
            self.on_skip(parent.join(name), f"path longer than {MAX_PATH} bytes, not entered")
            return None
        try:
            child = self.root.open_dir(parent, name)
        except FileNotFoundError:
            return None  # vanished since the listing
        except FsError as exc:
            self.on_skip(parent.join(name), str(exc).rsplit(": ", 1)[-1])
            return None
        if is_profile_dir(child):
            self.on_skip(child.path, PROFILE_REASON)
            child.close()
            return None
        return child

    def _ensure_open(self, stack: list[_Level], child: _Level) -> None:
        """Re-open the parent of *child* through '..' if its descriptor was closed."""
        parent = stack[-1].dir
        if parent.fd >= 0:
            return
        fd = os.open("..", _DIR_FLAGS, dir_fd=child.dir.fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
            os.close(fd)
            raise WalkAborted(f"{display(parent.path)}: moved during the walk; stopping here")
        parent.fd = fd

    def _scan(self, level: _Level, sc: Scope, descend: bool
              ) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """List a directory that has sub-directories: matching files, claimed directories,
        and (in ``level.subdirs``) the directories to enter."""
        d = level.dir
        files = sc.files
        subdirs = level.subdirs
        found: list[tuple[str, Any]] = []
        claimed: list[tuple[str, Any]] = []
        try:
            it = os.scandir(d.fd)
        except OSError as exc:
            self.on_skip(d.path, f"cannot list: {exc.strerror}")
            return found, claimed
        seen = 0
        with it:
            while True:
                try:
                    entry = next(it)
                except StopIteration:
                    break
                except OSError as exc:
                    self.on_skip(d.path, f"listing failed: {exc.strerror}")
                    break
                seen += 1
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                name = entry.name
                if not is_dir:
                    if files is not None:
                        m = files(name)
                        if m is not None:
                            found.append((name, m))
                elif descend:
                    self._sort_subdir(d, name, sc, claimed, subdirs)
        self.entries_seen += seen
        subdirs.reverse()  # pop() then visits them in listing order
        return found, claimed

    def _sort_subdir(self, d: Dir, name: str, sc: Scope, claimed: list[tuple[str, Any]],
                     subdirs: list[str]) -> None:
        """A sub-directory the scan found: excluded (reported), claimed whole, or to enter."""
        if sc.exclude is not None and sc.exclude(name):
            self.on_skip(d.join(name), "excluded by safety.exclude_dirs")
            return
        if sc.claim is not None:
            m = sc.claim(name)
            if m is not None:
                claimed.append((name, m))
                return
        subdirs.append(name)


#: The files list of a leaf directory handed out unlisted (``Walker(lazy_leaves=True)``).
UNLISTED: list[tuple[str, Any]] = []


def list_leaf(d: Dir, files: Matcher, prefilter: Prefilter | None = None
              ) -> tuple[list[tuple[str, Any]], int, str | None]:
    """Read a directory the walk handed out unlisted, as the walk would: the names *files*
    matches (with what it returned), how many entries there were, and why it could not be
    listed (None when it could). Safe to call on any thread, on a descriptor of its own.

    With the C loops, the listing keeps only the names *prefilter* allows (see
    :func:`group_prefilter`), so the matcher is asked of fewer names; what it returns is
    the same."""
    try:
        if FSOPS is not None:
            tails, needles = prefilter if prefilter is not None else (None, ())
            names, total = FSOPS.listdir_filter(d.fd, tails, needles)
        else:
            names = os.listdir(d.fd)
            total = len(names)
    except OSError as exc:
        return [], 0, f"cannot list: {exc.strerror}"
    return [(n, m) for n in names if (m := files(n)) is not None], total, None


def by_group(files: list[tuple[str, Any]]) -> dict[str | None, list[str]]:
    """One directory's matching names (with what the matcher returned) by the group whose
    pattern matched (``lastgroup``), each group in the order it first took a name."""
    per: dict[str | None, list[str]] = {}
    for name, match in files:
        group = match.lastgroup
        names = per.get(group)
        if names is None:
            per[group] = [name]
        else:
            names.append(name)
    return per


class ListAhead:
    """Leaf directories listed, and the names their rules may take lstat()ed, on a thread of
    the C module's own (``_fsops.Prefetch``), ahead of the walk that judges them: a dry run's
    Python work then overlaps the kernel's. Results come back in the order the directories
    went in. Made by :func:`list_ahead`."""

    def __init__(self, thread: _fsops.Prefetch, undecided: int) -> None:
        self._thread = thread
        #: the class of a name the matcher must sort (``_fsops.UNDECIDED``)
        self._undecided = undecided

    def submit(self, d: Dir, scope: Scope) -> None:
        """Hand *d*, a leaf of *scope*, over; its descriptor must stay open until
        :meth:`take` returns it."""
        self._thread.submit(d.fd, scope.classes)

    def take(self, d: Dir, scope: Scope
             ) -> tuple[dict[str | None, list[str]], int, str | None]:
        """The oldest directory handed over (*d*): the names *scope*'s matcher takes, by
        group (``Owned.lastgroup``, in the order each group first takes a name in the
        listing), how many entries it held, and why it could not be listed (None when it
        could). Their lstat is kept in ``d.known`` for :func:`lstat_many` (what a dry run
        reads is the listing's own view). The C listing sorted the names it could; the
        matcher decides the rest."""
        try:
            sorted_, known, total = self._thread.take()
        except OSError as exc:
            return {}, 0, f"cannot list: {exc.strerror}"
        d.known = known
        if all(code != self._undecided for code, _names in sorted_):
            groups = scope.groups
            return {groups[code]: names for code, names in sorted_}, total, None
        match = scope.files
        assert match is not None
        # every name the listing kept, in its order
        return by_group([(n, m) for n in known if (m := match(n)) is not None]), total, None

    def submit_all(self, d: Dir) -> None:
        """Hand *d* over to be listed whole, every name lstat()ed (a directory a rule takes
        whole: see :func:`remove_tree`); :meth:`take_all` returns it, in its place in the
        order of everything handed over."""
        self._thread.submit(d.fd, None)

    def take_all(self, d: Dir) -> Listed:
        """The oldest directory handed over, which must be *d*, handed over by
        :meth:`submit_all`: its names and their lstat (:class:`Listed`; it owns *d*)."""
        try:
            _sorted, known, _total = self._thread.take()
        except OSError as exc:
            return Listed(d, {}, f"cannot list: {exc.strerror}")
        return Listed(d, known)

    def close(self) -> None:
        """Stop the thread (after the directory it is on): call before closing the
        descriptors of directories handed over and not taken."""
        self._thread.close()


def list_ahead() -> ListAhead | None:
    """A :class:`ListAhead`, where the C loops are built and a thread can be started (None:
    each leaf is listed by the walk itself, e.g. at the unit's ``TasksMax=``)."""
    prefetch = getattr(FSOPS, "Prefetch", None)
    if FSOPS is None or prefetch is None:
        return None
    try:
        return ListAhead(prefetch(), FSOPS.UNDECIDED)
    except OSError:  # no thread to be had: the walk lists each directory itself
        return None


# --- deleting --------------------------------------------------------------------------------


class Changed(FsError):
    """The entry is no longer the one that was judged; it is left alone."""


def lstat_at(d: Dir, name: str) -> os.stat_result:
    return os.stat(name, dir_fd=d.fd, follow_symlinks=False)


def lstat_many(d: Dir, names: list[str]) -> list[os.stat_result | None]:
    """:func:`lstat_at` of each name, in order; None where it failed (the name vanished
    since the listing, or cannot be read). Safe on any thread.

    A directory a dry run listed ahead (:class:`ListAhead`) answers from the lstats taken
    with its listing (``d.known``): nothing is removed on them, and a real run never lists
    ahead (its unlinks check each file again right before, whatever judged it)."""
    if d.known is not None:
        with contextlib.suppress(KeyError):  # every name comes from that listing
            return [d.known[n] for n in names]
    if FSOPS is not None:
        got: list[os.stat_result | None] = FSOPS.lstat_many(d.fd, names)
        return got
    out: list[os.stat_result | None] = []
    for name in names:
        try:
            out.append(lstat_at(d, name))
        except OSError:
            out.append(None)
    return out


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Same file, unchanged: device, inode (which a new file may reuse at once), mtime and
    ctime (which any replacement, rename or new link moves on)."""
    return ((a.st_dev, a.st_ino, a.st_mtime_ns, a.st_ctime_ns)
            == (b.st_dev, b.st_ino, b.st_mtime_ns, b.st_ctime_ns))


def freed_bytes(st: os.stat_result) -> int:
    """Space a removal gives back: a regular file's size unless other hard links keep it."""
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1 else 0


def unlink_checked(d: Dir, name: str, judged: os.stat_result) -> None:
    """Unlink *name* in *d* if it is still the file that was judged (never a directory).

    Raises FileNotFoundError when it vanished, Changed when it was replaced, OSError else."""
    exc = unlink_all(d, [(name, judged)])[0]
    if exc is not None:
        raise exc


#: The private name a file takes, in a directory others can write, between its last check
#: and its unlink (see :func:`_unlink_guarded`).
QUARANTINE = ".architect-cleanup-deleting."
_NAME_MAX = 255
#: what the private name adds to a name: the prefix, 16 random hex digits and a dot
_QUARANTINE_EXTRA = len(QUARANTINE) + 17
_RENAME_NOREPLACE = 1


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, for the calls Python's os module lacks."""
    return ctypes.CDLL(None, use_errno=True)


def _rename_noreplace(fd: int, old: str, new: str) -> None:
    """renameat2(fd, old, fd, new, RENAME_NOREPLACE): never replaces an existing *new*."""
    if libc().renameat2(fd, os.fsencode(old), fd, os.fsencode(new), _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old)


def untrusted(st: os.stat_result) -> str | None:
    """Why a file or directory with this status may not be trusted by this process (as sudo
    and sshd judge theirs), or None: it must belong to root or to the user this runs as, and
    nobody else may write it (no group or other write bit)."""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not by root or the user running this"
    if st.st_mode & 0o022:
        who = {0o022: "group and others", 0o020: "its group"}.get(st.st_mode & 0o022, "others")
        return f"writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _others_can_write(st: os.stat_result) -> bool:
    # Only its owner or root can change a directory's owner and mode: a directory this
    # process owns without group/other write bits stays that way during the run.
    return st.st_uid != os.geteuid() or bool(st.st_mode & 0o022)


def shared_dir(d: Dir) -> bool:
    """Can someone other than this process rename a file over a name in *d*?"""
    if d.shared is None:
        d.shared = _others_can_write(os.fstat(d.fd))
    return d.shared


def _unlink_guarded(d: Dir, name: str, was: os.stat_result) -> Exception | None:
    """Remove *name*, just checked to be the judged file, in a directory others can write,
    leaving no moment in which a file renamed over the name after that check is removed
    instead of the judged one.

    The entry is first renamed (``RENAME_NOREPLACE``) to a private name, which moves whatever
    is under *name* at that instant; that is checked again and unlinked only when it is the
    judged file (same device, inode, mtime and size: the rename itself moves ctime), else it
    is renamed back. A writer that renames a new file over *name* now finds the name free or
    gets its file back under it. The private name holds a random part
    (``.architect-cleanup-deleting.<16 hex digits>.<name>``), so nobody can create it in
    advance to keep *name* from ever being removed; should it exist all the same, another is
    drawn. A name too long for the prefix gets the plain check; a run killed between the two
    renames leaves the private name, judged by the rules like any other name in the next
    run."""
    fd = d.fd
    if len(os.fsencode(name)) > _NAME_MAX - _QUARANTINE_EXTRA:
        os.unlink(name, dir_fd=fd)
        return None
    moved = _move_aside(d, name)
    if moved is None:
        os.unlink(name, dir_fd=fd)  # no RENAME_NOREPLACE here (NFS...): plain check
        return None
    if not isinstance(moved, str):
        return moved
    return _unlink_moved(d, name, moved, was)


def _move_aside(d: Dir, name: str) -> str | Exception | None:
    """Rename *name* to a private name drawn at random (``RENAME_NOREPLACE``), as
    :func:`_unlink_guarded` does: the private name; None where the file system has no
    ``RENAME_NOREPLACE`` (nothing moved); FileNotFoundError when *name* is gone, Changed
    when every name drawn was taken (returned, as unlink_all reports them). Any other
    failure raises."""
    for _attempt in range(3):
        priv = f"{QUARANTINE}{os.urandom(8).hex()}.{name}"
        try:
            _rename_noreplace(d.fd, name, priv)
            return priv
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                return None
            if exc.errno == errno.EEXIST:
                continue
            if exc.errno == errno.ENOENT:
                return FileNotFoundError(errno.ENOENT, exc.strerror, d.join(name))
            raise
    return Changed(f"{display(d.join(name))}: every private name drawn for its removal was "
                   "taken; left alone")


def _unlink_moved(d: Dir, name: str, priv: str, was: os.stat_result) -> Exception | None:
    """Unlink what :func:`_move_aside` moved to *priv* if it is the judged file *was* (same
    device, inode, mtime and size: the rename itself moves ctime; never a directory), else
    rename it back to *name* and report it Changed."""
    fd = d.fd
    path = d.join(name)
    got = os.stat(priv, dir_fd=fd, follow_symlinks=False)
    if ((got.st_dev, got.st_ino, got.st_mtime_ns, got.st_size)
            == (was.st_dev, was.st_ino, was.st_mtime_ns, was.st_size)
            and not stat.S_ISDIR(got.st_mode)):
        os.unlink(priv, dir_fd=fd)
        return None
    try:
        _rename_noreplace(fd, priv, name)
    except OSError as exc:
        return Changed(f"{display(path)}: replaced at the moment of its removal; left alone "
                       f"as {display(d.join(priv))} ({exc.strerror})")
    return Changed(f"{display(path)}: replaced at the moment of its removal; left alone")


def unlink_all(d: Dir, judged: list[tuple[str, os.stat_result]]) -> list[Exception | None]:
    """:func:`unlink_checked` for each of one directory's judged files, in one tight loop.

    Each file is re-checked right before its own unlink; the outcome of each (None when it is
    gone, else the exception unlink_checked would raise: FileNotFoundError, Changed or another
    OSError) is returned in order, and the caller does the accounting afterwards. On a disk
    where every unlink waits for the device (ext4 with ``discard``), what runs between two
    unlinks is what a deletion costs beyond the disk's own time, so that is kept to the
    minimum. In a directory someone else can write (:func:`shared_dir`), the unlink itself
    goes through :func:`_unlink_guarded`, which closes the moment between check and unlink."""
    out: list[Exception | None] = []
    if not judged:
        return out
    fd = d.fd
    guarded = shared_dir(d)
    if not guarded and FSOPS is not None:
        done = _unlink_all_in_c(d, judged)
        if done is not None:
            return done
    isdir = stat.S_ISDIR
    for name, was in judged:
        try:
            now = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not same_file(now, was) or isdir(now.st_mode):
                out.append(_changed(d, name))
                continue
            if guarded:
                out.append(_unlink_guarded(d, name, was))
                continue
            os.unlink(name, dir_fd=fd)
        except OSError as exc:
            out.append(exc)
            continue
        out.append(None)
    return out


def _changed(d: Dir, name: str) -> Changed:
    """What unlink_all reports for a file that is no longer the one judged."""
    return Changed(f"{display(d.join(name))}: changed since it was checked")


def _unlink_all_in_c(d: Dir, judged: list[tuple[str, os.stat_result]]
                     ) -> list[Exception | None] | None:
    """:func:`unlink_all`'s loop in C (same checks, same order, same outcomes); None when it
    did nothing (a judged time beyond 64 bits of nanoseconds: the Python loop does it)."""
    assert FSOPS is not None
    rcs = FSOPS.unlink_many(d.fd, [(name, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
                                   for name, st in judged])
    if rcs is None:
        return None
    changed = FSOPS.CHANGED
    out: list[Exception | None] = []
    for (name, _), rc in zip(judged, rcs, strict=True):
        if rc == 0:
            out.append(None)
        elif rc == changed:
            out.append(_changed(d, name))
        else:
            out.append(OSError(rc, os.strerror(rc), name))
    return out


@dataclass(slots=True)
class TreeResult:
    """What removing (or pretending to remove) a directory tree did."""

    files: int = 0
    bytes: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)
    removed_dir: bool = False
    #: the first path whose removal failed with EROFS (a read-only file system), if any,
    #: and how many did
    readonly: str | None = None
    readonly_count: int = 0
    #: (path, reason) of entries kept by a rule of the walk (keep_name, a browser profile);
    #: a directory kept this way is not entered, and its parents stay
    held: list[tuple[str, str]] = field(default_factory=list)

    def hold(self, path: str, reason: str) -> None:
        self.kept += 1
        if len(self.held) < 100:
            self.held.append((path, reason))


def remove_tree(root: Root, parent: Dir, name: str, *, dry_run: bool,
                keep: Callable[[os.stat_result], str | None] | None = None,
                keep_name: Callable[[str, bool], str | None] | None = None,
                listed: Listed | None = None) -> TreeResult:
    """Remove directory *name* below *parent* with everything in it, fd-relative, bottom-up.

    Files for which *keep* returns a reason stay (so their directories stay too). Every rule
    the walk honours holds inside the tree as well: *keep_name* (called with each entry's
    path and whether it is a directory, the directory *name* itself first) keeps what it
    names a reason for: an excluded directory, a protected file, another target's backup or
    database; a directory holding Chromium's ``Local State`` (a browser profile) is never
    entered; a directory kept is not entered, and the directories above it stay. In a dry run
    nothing changes and the result counts what a real run would remove. The tree never leaves
    the root's mount and symlinks inside are removed as links, never followed.

    *listed*: the directory already opened (``root.open_dir``) and listed (a dry run's walk
    lists it ahead on another thread: :meth:`ListAhead.submit_all`); it is this call's to
    close. Only the top directory's listing is taken from it; what the result says is the
    same."""
    res = TreeResult()
    top_path = parent.join(name)
    why_top = keep_name(top_path, True) if keep_name is not None else None
    if why_top is not None:
        if listed is not None:
            listed.dir.close()
        res.hold(top_path, why_top)
        return res
    if listed is not None:
        top = listed.dir
    else:
        try:
            top = root.open_dir(parent, name)
        except FileNotFoundError:
            return res
        except FsError as exc:
            res.errors.append(str(exc))
            res.kept += 1
            return res
    if is_profile_dir(top):
        top.close()
        res.hold(top_path, PROFILE_REASON)
        return res
    _TreeRemoval(root, parent, res, dry_run=dry_run, keep=keep, keep_name=keep_name
                 ).run(top, listed)
    return res


@dataclass(slots=True)
class _Pending:
    """A directory of a tree being removed: open, its sub-directories still to visit, and
    whether anything inside it stays (then it stays too, and so do the directories above)."""

    dir: Dir
    subdirs: list[str] = field(default_factory=list)
    kept: bool = False


class _TreeRemoval:
    """One :func:`remove_tree` below its top directory, depth first: each directory is listed
    when it is entered (its files removed or kept there and then), and removed itself when
    the last of its sub-directories has been left, unless something inside it stays.

    It holds the result so far and the stack of open directories (at most ``FD_WINDOW * 8``
    deep: a deeper one is left alone and reported)."""

    def __init__(self, root: Root, parent: Dir, res: TreeResult, *, dry_run: bool,
                 keep: Callable[[os.stat_result], str | None] | None,
                 keep_name: Callable[[str, bool], str | None] | None) -> None:
        self.root = root
        self.parent = parent
        self.res = res
        self.dry_run = dry_run
        self.keep = keep
        self.keep_name = keep_name
        self.stack: list[_Pending] = []

    def run(self, top: Dir, listed: Listed | None = None) -> None:
        """Remove what *top* holds, then *top* itself; every directory is closed at the end.
        *listed*: *top*'s listing, taken ahead."""
        stack = self.stack
        stack.append(self._list(top) if listed is None else self._listed(listed))
        try:
            while stack:
                level = stack[-1]
                if level.subdirs:
                    self._enter(level, level.subdirs.pop())
                else:
                    self._leave()
        finally:
            for level in stack:
                level.dir.close()

    def _list(self, d: Dir) -> _Pending:
        """List a directory just entered: its files go (or stay) now, its sub-directories
        are noted to visit."""
        level = _Pending(d)
        try:
            with os.scandir(d.fd) as it:
                for entry in it:
                    self._judge(level, entry)
        except OSError as exc:
            level.kept = True
            self.res.errors.append(f"{display(d.path)}: cannot list: {exc.strerror}")
        return level

    def _listed(self, listed: Listed) -> _Pending:
        """:meth:`_list` of a directory listed ahead: its names in the listing's order, each
        judged as :meth:`_judge` does with the lstat the listing took (a name whose lstat
        failed is passed over, as an entry whose ``stat`` fails there)."""
        d = listed.dir
        level = _Pending(d)
        if listed.error is not None:
            level.kept = True
            self.res.errors.append(f"{display(d.path)}: {listed.error}")
            return level
        for name, st in listed.known.items():
            if st is not None and self._sort(level, name, stat.S_ISDIR(st.st_mode)):
                self._judge_file(level, name, st)
        return level

    def _judge(self, level: _Pending, entry: os.DirEntry[str]) -> None:
        """One entry of a listed directory: held by name, a sub-directory to visit, kept by
        *keep*, or removed."""
        try:
            if not self._sort(level, entry.name, entry.is_dir(follow_symlinks=False)):
                return
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        self._judge_file(level, entry.name, st)

    def _sort(self, level: _Pending, name: str, is_dir: bool) -> bool:
        """An entry by its name: held (*keep_name*), or a sub-directory to visit (both noted
        here), or a file to judge by its lstat (True)."""
        keep_name = self.keep_name
        if is_dir and keep_name is None:
            level.subdirs.append(name)
            return False
        why = keep_name(level.dir.join(name), is_dir) if keep_name is not None else None
        if why is not None:
            level.kept = True
            self.res.hold(level.dir.join(name), why)
            return False
        if is_dir:
            level.subdirs.append(name)
            return False
        return True

    def _judge_file(self, level: _Pending, name: str, st: os.stat_result) -> None:
        """A file: kept by *keep*, or removed."""
        why = self.keep(st) if self.keep is not None else None
        if why is not None:
            level.kept = True
            self.res.kept += 1
            return
        self._remove_file(level, name, st)

    def _remove_file(self, level: _Pending, name: str, st: os.stat_result) -> None:
        """Unlink one judged file (:func:`unlink_checked`: the last-moment check), or only
        count it in a dry run."""
        res, d = self.res, level.dir
        nbytes = freed_bytes(st)
        if not self.dry_run:
            try:
                unlink_checked(d, name, st)
            except FileNotFoundError:
                return
            except Changed as exc:  # replaced since the listing: kept
                level.kept = True
                res.kept += 1
                res.errors.append(str(exc))
                return
            except OSError as exc:
                self._refused(exc, d.join(name))
                level.kept = True
                res.kept += 1
                res.errors.append(f"{display(d.join(name))}: {exc.strerror or exc}")
                return
        res.files += 1
        res.bytes += nbytes

    def _enter(self, level: _Pending, sub: str) -> None:
        """Open sub-directory *sub* of the directory on top and list it, unless it may not
        be entered (then it stays, and so does its parent)."""
        d, res = level.dir, self.res
        if too_long(d.join(sub)):
            level.kept = True
            res.errors.append(f"{display(d.join(sub))}: path longer than {MAX_PATH} "
                              "bytes, left alone")
            return
        try:
            child = self.root.open_dir(d, sub)
        except FileNotFoundError:
            return
        except FsError as exc:
            level.kept = True
            res.errors.append(str(exc))
            return
        if len(self.stack) >= FD_WINDOW * 8:
            child.close()
            level.kept = True
            res.errors.append(f"{display(child.path)}: nested too deeply, left alone")
            return
        if is_profile_dir(child):
            child.close()
            level.kept = True
            res.hold(d.join(sub), PROFILE_REASON)
            return
        self.stack.append(self._list(child))

    def _leave(self) -> None:
        """Close the directory on top, all of its sub-directories done, and remove it unless
        something inside stays (then its parent stays too)."""
        stack = self.stack
        level = stack.pop()
        d = level.dir
        parent_dir = stack[-1].dir if stack else self.parent
        name = os.path.basename(d.path)
        d.close()
        if level.kept:
            self._parent_keeps()
            return
        if not self.dry_run:
            try:
                os.rmdir(name, dir_fd=parent_dir.fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._refused(exc, d.path)
                self._parent_keeps()
                self.res.errors.append(f"{display(d.path)}: {exc.strerror}")
                return
        if not stack:
            self.res.removed_dir = True

    def _parent_keeps(self) -> None:
        if self.stack:
            self.stack[-1].kept = True

    def _refused(self, exc: OSError, path: str) -> None:
        """Note a removal a read-only file system refused (the first path, and how many)."""
        if exc.errno == errno.EROFS:
            self.res.readonly = self.res.readonly or path
            self.res.readonly_count += 1


# --- open files ------------------------------------------------------------------------------


class OpenFiles:
    """The set of (device, inode) that some process holds open, from one scan of /proc/*/fd.

    The scan runs on first use, once per run. A process we may not inspect is counted in
    ``unreadable`` (with ``ProtectProc=`` or without ``CAP_SYS_PTRACE`` that can happen)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._ids: dict[tuple[int, int], int] | None = None
        self.unreadable = 0
        self._scanning = threading.Lock()  # the deleting threads ask at once

    def _scan(self) -> dict[tuple[int, int], int]:
        ids: dict[tuple[int, int], int] = {}
        try:
            pids = [p for p in os.listdir(self.proc) if p.isdigit()]
        except OSError:
            return ids
        for pid in pids:
            fddir = f"{self.proc}/{pid}/fd"
            try:
                fds = os.listdir(fddir)
            except FileNotFoundError:
                continue
            except OSError:
                self.unreadable += 1
                continue
            for fd in fds:
                try:
                    st = os.stat(f"{fddir}/{fd}")
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                    ids.setdefault((st.st_dev, st.st_ino), int(pid))
        return ids

    def is_open(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) in self.index()

    def holder(self, st: os.stat_result) -> int | None:
        """The PID of a process that holds the file open (the first one found), or None."""
        return self.index().get((st.st_dev, st.st_ino))

    def index(self) -> Mapping[tuple[int, int], int]:
        """(device, inode) -> the PID of a process that holds it open (scanned on first use)."""
        ids = self._ids
        if ids is None:
            with self._scanning:  # the pool's threads ask at once
                if self._ids is None:
                    self._ids = self._scan()
                ids = self._ids
        return ids

    def describe(self, st: os.stat_result) -> str | None:
        """"open by PID 1234 (gunicorn)" for a file some process holds open, else None."""
        if not self.is_open(st):
            return None
        pid = self.holder(st) or 0
        try:
            with open(f"{self.proc}/{pid}/comm", encoding="utf-8", errors="replace") as fh:
                comm = fh.read().strip()
        except OSError:
            comm = ""
        return f"open by PID {pid} ({display(comm)})" if comm else f"open by PID {pid}"
