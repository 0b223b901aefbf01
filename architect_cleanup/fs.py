"""The safe file-system layer: the only code in the product that unlinks.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

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
    out = []
    for ch in path:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape'd byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def too_long(path: str) -> bool:
    """True when *path* is longer than :data:`MAX_PATH` bytes (names are often multibyte)."""
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


def _unescape_mountinfo(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def mounts_below(path: str) -> list[str]:
    """Mount points strictly below *path*, from /proc/self/mountinfo."""
    prefix = path.rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
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

    def join(self, name: str) -> str:
        return name if not self.path else f"{self.path.rstrip('/')}/{name}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
    """A directory holding Chromium's 'Local State' file is a browser profile (not ours)."""
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
    like any other, and the consumer's ``lstat`` sees it is no file.
    """

    def __init__(self, root: Root, start: Dir, *, scope: ScopeFn,
                 on_skip: SkipSink | None = None, max_depth: int | None = None,
                 on_dir: Callable[[], None] | None = None) -> None:
        self.root = root
        self.start = start
        self.scope = scope
        self.on_skip = on_skip or (lambda _path, _why: None)
        self.max_depth = max_depth
        self.on_dir = on_dir
        self.entries_seen = 0

    def __iter__(self) -> Iterator[tuple[Dir, str, bool, Any]]:
        for d, files, dirs in self.batches():
            for name, m in files:
                yield d, name, False, m
            for name, m in dirs:
                yield d, name, True, m

    def batches(self) -> Iterator[Batch]:
        stack: list[_Level] = [_Level(self.start)]
        on_skip = self.on_skip
        try:
            level: _Level | None = stack[0]
            while True:
                if level is not None:
                    # --- list one directory, handing out matching names ----------------
                    d = level.dir
                    sc = self.scope(d)
                    files = sc.files
                    if d.nlink == 2 and files is not None:
                        try:
                            names = os.listdir(d.fd)
                        except OSError as exc:
                            on_skip(d.path, f"cannot list: {exc.strerror}")
                            names = []
                        self.entries_seen += len(names)
                        found = [(n, m) for n in names if (m := files(n)) is not None]
                        if found:
                            yield d, found, []
                    elif d.nlink != 2:
                        descend = self.max_depth is None or len(stack) <= self.max_depth
                        found, claimed = self._scan(level, sc, descend)
                        if found or claimed:
                            yield d, found, claimed
                    if self.on_dir is not None:
                        self.on_dir()
                    level = None
                # --- move on: the next sub-directory, or back up ---------------------------
                top = stack[-1]
                if not top.subdirs:
                    stack.pop()
                    if not stack:
                        break
                    self._ensure_open(stack, top)
                    if top.dir is not self.start:
                        top.dir.close()
                    continue
                name = top.subdirs.pop()
                if too_long(top.dir.join(name)):
                    on_skip(top.dir.join(name), f"path longer than {MAX_PATH} bytes, not entered")
                    continue
                try:
                    child = self.root.open_dir(top.dir, name)
                except FileNotFoundError:
                    continue  # vanished since the listing
                except FsError as exc:
                    on_skip(top.dir.join(name), str(exc).rsplit(": ", 1)[-1])
                    continue
                if is_profile_dir(child):
                    on_skip(child.path, "browser profile (holds 'Local State')")
                    child.close()
                    continue
                level = _Level(child)
                stack.append(level)
                if len(stack) > FD_WINDOW:
                    old = stack[-FD_WINDOW - 1].dir
                    if old is not self.start and old.fd >= 0:
                        old.close()
        finally:
            for lvl in stack:
                if lvl.dir is not self.start:
                    lvl.dir.close()

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
        files, claim, exclude = sc.files, sc.claim, sc.exclude
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
                    continue
                if not descend:
                    continue
                if exclude is not None and exclude(name):
                    self.on_skip(d.join(name), "excluded by safety.exclude_dirs")
                    continue
                if claim is not None:
                    m = claim(name)
                    if m is not None:
                        claimed.append((name, m))
                        continue
                subdirs.append(name)
        self.entries_seen += seen
        subdirs.reverse()  # pop() then visits them in listing order
        return found, claimed


# --- deleting --------------------------------------------------------------------------------


class Changed(FsError):
    """The entry is no longer the one that was judged; it is left alone."""


def lstat_at(d: Dir, name: str) -> os.stat_result:
    return os.stat(name, dir_fd=d.fd, follow_symlinks=False)


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
    path = d.join(name)
    fd = d.fd
    if len(os.fsencode(name)) > _NAME_MAX - _QUARANTINE_EXTRA:
        os.unlink(name, dir_fd=fd)
        return None
    for _attempt in range(3):
        priv = f"{QUARANTINE}{os.urandom(8).hex()}.{name}"
        try:
            _rename_noreplace(fd, name, priv)
            break
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                os.unlink(name, dir_fd=fd)  # no RENAME_NOREPLACE here (NFS...): plain check
                return None
            if exc.errno == errno.EEXIST:
                continue
            if exc.errno == errno.ENOENT:
                return FileNotFoundError(errno.ENOENT, exc.strerror, path)
            raise
    else:
        return Changed(f"{display(path)}: every private name drawn for its removal was taken; "
                       "left alone")
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
    isdir = stat.S_ISDIR
    for name, was in judged:
        try:
            now = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not same_file(now, was) or isdir(now.st_mode):
                out.append(Changed(f"{display(d.join(name))}: changed since it was checked"))
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
                keep_name: Callable[[str, bool], str | None] | None = None) -> TreeResult:
    """Remove directory *name* below *parent* with everything in it, fd-relative, bottom-up.

    Files for which *keep* returns a reason stay (so their directories stay too). Every rule
    the walk honours holds inside the tree as well: *keep_name* (called with each entry's
    path and whether it is a directory, the directory *name* itself first) keeps what it
    names a reason for: an excluded directory, a protected file, another target's backup or
    database; a directory holding Chromium's ``Local State`` (a browser profile) is never
    entered; a directory kept is not entered, and the directories above it stay. In a dry run
    nothing changes and the result counts what a real run would remove. The tree never leaves
    the root's mount and symlinks inside are removed as links, never followed."""
    res = TreeResult()
    top_path = parent.join(name)
    why_top = keep_name(top_path, True) if keep_name is not None else None
    if why_top is not None:
        res.hold(top_path, why_top)
        return res
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
        res.hold(top_path, "browser profile (holds 'Local State')")
        return res
    # (dir, subdirs still to visit, anything kept inside?)
    stack: list[tuple[Dir, list[str], list[bool]]] = []

    def scan(d: Dir) -> tuple[Dir, list[str], list[bool]]:
        subdirs: list[str] = []
        kept = [False]
        try:
            with os.scandir(d.fd) as it:
                for entry in it:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        if is_dir and keep_name is None:
                            subdirs.append(entry.name)
                            continue
                        why = (keep_name(d.join(entry.name), is_dir)
                               if keep_name is not None else None)
                        if why is not None:
                            kept[0] = True
                            res.hold(d.join(entry.name), why)
                            continue
                        if is_dir:
                            subdirs.append(entry.name)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    why = keep(st) if keep is not None else None
                    if why is not None:
                        kept[0] = True
                        res.kept += 1
                        continue
                    nbytes = freed_bytes(st)
                    if not dry_run:
                        try:
                            unlink_checked(d, entry.name, st)
                        except FileNotFoundError:
                            continue
                        except Changed as exc:  # replaced since the listing: kept
                            kept[0] = True
                            res.kept += 1
                            res.errors.append(str(exc))
                            continue
                        except OSError as exc:
                            if exc.errno == errno.EROFS:
                                res.readonly = res.readonly or d.join(entry.name)
                                res.readonly_count += 1
                            kept[0] = True
                            res.kept += 1
                            res.errors.append(f"{display(d.join(entry.name))}: "
                                              f"{exc.strerror or exc}")
                            continue
                    res.files += 1
                    res.bytes += nbytes
        except OSError as exc:
            kept[0] = True
            res.errors.append(f"{display(d.path)}: cannot list: {exc.strerror}")
        return d, subdirs, kept

    stack.append(scan(top))
    try:
        while stack:
            d, subdirs, kept = stack[-1]
            if subdirs:
                sub = subdirs.pop()
                if too_long(d.join(sub)):
                    kept[0] = True
                    res.errors.append(f"{display(d.join(sub))}: path longer than {MAX_PATH} "
                                      "bytes, left alone")
                    continue
                try:
                    child = root.open_dir(d, sub)
                except FileNotFoundError:
                    continue
                except FsError as exc:
                    kept[0] = True
                    res.errors.append(str(exc))
                    continue
                if len(stack) >= FD_WINDOW * 8:
                    child.close()
                    kept[0] = True
                    res.errors.append(f"{display(child.path)}: nested too deeply, left alone")
                    continue
                if is_profile_dir(child):
                    child.close()
                    kept[0] = True
                    res.hold(d.join(sub), "browser profile (holds 'Local State')")
                    continue
                stack.append(scan(child))
                continue
            stack.pop()
            parent_dir = stack[-1][0] if stack else parent
            child_kept = kept[0]
            child_name = os.path.basename(d.path)
            d.close()
            if child_kept:
                if stack:
                    stack[-1][2][0] = True
                continue
            if not dry_run:
                try:
                    os.rmdir(child_name, dir_fd=parent_dir.fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno == errno.EROFS:
                        res.readonly = res.readonly or d.path
                        res.readonly_count += 1
                    if stack:
                        stack[-1][2][0] = True
                    res.errors.append(f"{display(d.path)}: {exc.strerror}")
                    continue
            if not stack:
                res.removed_dir = True
    finally:
        for d, _, _ in stack:
            d.close()
    return res


# --- open files ------------------------------------------------------------------------------


class OpenFiles:
    """The set of (device, inode) that some process holds open, from one scan of /proc/*/fd.

    The scan runs on first use, once per run. A process we may not inspect is counted in
    ``unreadable`` (with ``ProtectProc=`` or without ``CAP_SYS_PTRACE`` that can happen)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._ids: dict[tuple[int, int], int] | None = None
        self.unreadable = 0

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
        return self.holder(st) is not None

    def holder(self, st: os.stat_result) -> int | None:
        """The PID of a process that holds the file open (the first one found), or None."""
        if self._ids is None:
            self._ids = self._scan()
        return self._ids.get((st.st_dev, st.st_ino))

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
