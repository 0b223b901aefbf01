"""The orphans' quarantine: files moved aside before they are deleted, and moved back.

Layout: ``<root>/<orphans.quarantine_dir>/<stamp>/<the file's path relative to root>``, where
*stamp* is the UTC time of the run that moved it (``20261206T230500Z``): the relative path is
kept, so a restore knows where the file goes, and the stamp says when its ``quarantine_for``
runs out (the file's own mtime is kept by the rename). Every move is a ``renameat2`` between
two open directories with ``RENAME_NOREPLACE`` (never over an existing name) after a last
check that the name is still the file judged; both directories must be on one file system
(a rename never copies). Directories are created fd-relative, mode 0700, never through a
symlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from architect_cleanup.fs import Dir, FsError, Root, Scope, Walker, libc, same_file, untrusted

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_RENAME_NOREPLACE = 1


def stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def rename_between(src: Dir, name: str, dst: Dir, new: str) -> None:
    """renameat2(src, name, dst, new, RENAME_NOREPLACE)."""
    if libc().renameat2(src.fd, os.fsencode(name), dst.fd, os.fsencode(new),
                        _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


def open_dirs(root: Root, rel: str, *, create: bool) -> Dir:
    """Enter *rel* below the root one component at a time (no symlink, no mount crossed),
    creating missing components (mode 0700) when *create*. FileNotFoundError when missing."""
    cur = root.open_path(".")
    try:
        for part in [p for p in rel.strip("/").split("/") if p not in ("", ".")]:
            if part == "..":
                raise FsError(f"{rel}: '..' is not allowed")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=cur.fd)
            nxt = root.open_dir(cur, part)
            cur.close()
            cur = nxt
    except BaseException:
        cur.close()
        raise
    return cur


def open_quarantine(root: Root, qrel: str, *, create: bool) -> Dir:
    """The quarantine directory, created (mode 0700) when *create*; refused (FsError) when
    anyone but root or this user could write it: files wait there to be deleted."""
    q = open_dirs(root, qrel, create=create)
    why = untrusted(os.fstat(q.fd))
    if why is not None:
        q.close()
        raise FsError(f"{q.path}: refused as the quarantine: {why}")
    return q


def move(root: Root, src: Dir, name: str, judged: os.stat_result, dest: str,
         qrel: str | None = None) -> None:
    """Move file *name* of *src*, still the file *judged*, to *dest* (relative to root: the
    directories are created) under the same name; *qrel*, when given, is the quarantine
    *dest* lies in, which must be trusted (:func:`open_quarantine`). Raises OSError (EEXIST:
    the name is taken there; EXDEV: another file system) or FsError; nothing moves then.

    The name is checked right before the rename and the file again right after it, in its
    new place: a file someone renamed over the name in that moment is moved back at once,
    so the quarantine holds only files that were judged."""
    if qrel is not None:
        open_quarantine(root, qrel, create=True).close()
    dst = open_dirs(root, dest, create=True)
    try:
        if os.fstat(dst.fd).st_dev != judged.st_dev:
            raise OSError(errno.EXDEV, "not on the same file system as the file", name)
        now = os.stat(name, dir_fd=src.fd, follow_symlinks=False)
        if not same_file(now, judged):
            raise FsError(f"{src.join(name)}: changed since it was checked; left in place")
        rename_between(src, name, dst, name)
        moved = os.stat(name, dir_fd=dst.fd, follow_symlinks=False)
        if _identity(moved) != _identity(judged):
            try:
                rename_between(dst, name, src, name)
            except OSError as exc:
                raise FsError(f"{src.join(name)}: replaced while it was being moved; the "
                              f"replacement stays in {dst.join(name)}: {exc.strerror}"
                              ) from None
            raise FsError(f"{src.join(name)}: changed since it was checked; left in place")
    finally:
        dst.close()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What a rename leaves as it was (it changes the ctime, so :func:`same_file` cannot
    tell): inode, size, mtime, links, owner and mode. A file swapped in under a reused inode
    number still differs in one of them unless it is a copy of the judged one in all."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_nlink, st.st_uid,
            st.st_mode)


@dataclass(frozen=True)
class Entry:
    """One quarantined file: its stamp (when it was moved), its original path relative to
    root, and its path in the quarantine relative to root."""

    stamp: str
    moved_at: datetime
    original: str
    path: str
    size: int
    mtime: float


def walk(root: Root, qrel: str) -> Iterator[tuple[Dir, str, os.stat_result, Entry]]:
    """Every regular file in the quarantine with its open directory (valid until the next
    item) and its :class:`Entry`; nothing when the quarantine does not exist."""
    try:
        start = root.open_path(qrel)
    except FileNotFoundError:
        return
    every = Scope(files=lambda _n: True)
    base = os.path.normpath(os.path.join(root.dir.path, qrel))
    with contextlib.closing(start):
        for d, files, _dirs in Walker(root, start, scope=lambda _d: every).batches():
            rel = os.path.relpath(d.path, base)
            if rel == ".":
                continue  # files directly in the quarantine are not ours
            first, _, rest = rel.partition("/")
            moved_at = parse_stamp(first)
            if moved_at is None:
                continue
            for name, _m in files:
                try:
                    st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
                except OSError:
                    continue
                original = os.path.join(rest, name) if rest else name
                yield d, name, st, Entry(first, moved_at, original,
                                         os.path.join(qrel, rel, name), st.st_size, st.st_mtime)


def entries(root: Root, qrel: str) -> list[Entry]:
    return [e for _d, _n, _st, e in walk(root, qrel)]


def restore(root: Root, d: Dir, name: str, st: os.stat_result, original: str) -> None:
    """Move a quarantined file back to *original* (relative to root). OSError EEXIST when a
    file of that name is there again (both stay as they are)."""
    move(root, d, name, st, os.path.dirname(original))


def prune_empty(root: Root, qrel: str) -> None:
    """Remove the quarantine's empty directories (the stamps' trees), bottom-up."""
    try:
        top = root.open_path(qrel)
    except (FileNotFoundError, FsError):
        return

    def prune(d: Dir) -> bool:
        empty = True
        with os.scandir(d.fd) as it:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in names:
            if not is_dir:
                empty = False
                continue
            try:
                sub = root.open_dir(d, name)
            except (OSError, FsError):
                empty = False
                continue
            with contextlib.closing(sub):
                gone = prune(sub)
            if gone:
                try:
                    os.rmdir(name, dir_fd=d.fd)
                except OSError:
                    empty = False
            else:
                empty = False
        return empty

    with contextlib.closing(top):
        prune(top)


# --- the operator's commands: `architect-cleanup quarantine list|restore NAME` ---------------


class NotQuarantined(LookupError):
    """No quarantined file answers to the name asked for."""


def _open_root(root_path: str) -> Root:
    return Root.open(root_path)


def list_entries(root_path: str, qrel: str) -> list[Entry]:
    """Every quarantined file, oldest quarantine first."""
    with _open_root(root_path) as root:
        return sorted(entries(root, qrel), key=lambda e: (e.stamp, e.original))


def restore_named(root_path: str, qrel: str, name: str) -> Entry:
    """Move the quarantined file *name* back: its original path relative to root (as
    ``quarantine list`` shows it), that path made absolute, or its path in the quarantine.
    The most recent quarantine of that path is restored. Raises NotQuarantined, or OSError
    (EEXIST: a file of that name is back in its place; both are left as they are)."""
    want = os.path.normpath(name)
    if want.startswith("/"):
        want = os.path.relpath(want, os.path.realpath(root_path))
    with _open_root(root_path) as root:
        chosen = None
        for d, fname, st, e in walk(root, qrel):
            if want in (e.original, os.path.normpath(e.path)) and (
                    chosen is None or e.stamp > chosen[3].stamp):
                if chosen is not None:
                    chosen[0].close()
                chosen = (Dir(os.dup(d.fd), d.path, d.dev, d.ino), fname, st, e)
        if chosen is None:
            raise NotQuarantined(f"{name}: not in the quarantine (see `quarantine list`)")
        d, fname, st, e = chosen
        try:
            restore(root, d, fname, st, e.original)
        finally:
            d.close()
        return e
