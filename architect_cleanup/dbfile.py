"""Opening a dashboard database without being redirected outside the root.

SQLite opens files by path and resolves symlinks in it itself: the database when the
connection opens, its ``-wal`` and ``-shm`` (WAL mode) at the first read, and a ``-journal``
for each write transaction (rollback-journal mode). Whoever owns a directory on that path (the
dashboard's user owns ``data/``) can swap it for a symlink at any moment. So a database is
opened in three checked steps:

1. :func:`locate` looks it up from the root's descriptor, one component at a time
   (:meth:`fs.Root.open_path`: no symlink followed, no mount crossed). It must be a regular
   file with a single link (another name, perhaps outside the root, would change too). Its
   directory stays open and its device and inode are kept.
2. Right after ``sqlite3.connect``, before any statement, :meth:`Pinned.check` proves from
   ``/proc/self/fd`` that the process holds that device and inode, and that no file of the
   database's name opened since is another one. (The guard's own descriptor of the file,
   opened from the pinned directory by :meth:`Pinned.open_file` before the connection, see
   dblocks.py, does not count as SQLite's.)
3. After the first read, which opens ``-wal`` and ``-shm``, the same check proves those are
   the entries of the pinned directory.

Between open and close, the thread works on the file system as the database's owner
(:meth:`Pinned.become_owner`: ``setfsuid``/``setfsgid``, which the kernel keeps per thread and
which drops the capabilities that override file permissions). SQLite then creates ``-wal``,
``-shm`` and ``-journal`` as the owner, as the dashboard would (no ``chown`` needed), and a path
swapped under it reaches only what the owner could reach anyway: as root, SQLite would open a
victim's ``-shm`` beside the swapped path and hand it to the database's owner with ``fchown``.

When a check fails, :meth:`Pinned.close_without_checkpoint` closes the connection while an
OFD read lock on the database's shared-lock bytes keeps SQLite from checkpointing on close
(which would copy one database's WAL into another file and delete it); the database is refused
for this run.

What the checks cannot close (SQLite offers no descriptor-relative open) is left to the
owner's identity: a swap in the microseconds between step 2 and SQLite's open of
``-wal``/``-shm``, or during a rollback-journal database's write transaction (its ``-journal``
is created by path each time), reaches only files the database's owner may write.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from dataclasses import dataclass

from architect_cleanup.dblocks import ofd_lock_shared
from architect_cleanup.fs import Dir, FsError, Root, display, libc

log = logging.getLogger(__name__)

#: Suffixes of the files SQLite keeps beside a database.
SIDE_FILES = ("-wal", "-shm", "-journal")


#: setfsuid/setfsgid ignore an invalid id and return the current one: how to read it.
_INVALID_ID = 0xFFFFFFFF


def _set_fs_ids(uid: int, gid: int) -> bool:
    """Set this thread's file-system uid and gid; True when both took (the kernel says
    nothing on failure, so ask back)."""
    c = libc()
    c.setfsgid(gid)
    c.setfsuid(uid)
    now_uid: int = c.setfsuid(_INVALID_ID)
    now_gid: int = c.setfsgid(_INVALID_ID)
    return (now_uid, now_gid) == (uid, gid)


class Refused(Exception):
    """The database may not be opened; the message says why in plain words."""


@dataclass
class Pinned:
    """A database file found from the root's descriptor: its directory, still open, and its
    identity."""

    dir: Dir
    name: str
    dev: int
    ino: int
    uid: int = 0
    gid: int = 0
    #: the file-system ids to go back to, while acting as the owner
    _saved: tuple[int, int] | None = None

    def become_owner(self) -> None:
        """Work on the file system as the database's owner from now on (this thread only),
        until :meth:`close`. Raises Refused when a privileged process cannot: opening the
        database as root would let a swapped path hand others' files to the owner."""
        c = libc()
        cur_uid: int = c.setfsuid(_INVALID_ID)
        cur_gid: int = c.setfsgid(_INVALID_ID)
        if (cur_uid, cur_gid) == (self.uid, self.gid):
            return
        if _set_fs_ids(self.uid, self.gid):
            self._saved = (cur_uid, cur_gid)
            return
        _set_fs_ids(cur_uid, cur_gid)
        if os.geteuid() == 0:
            raise Refused(f"cannot act as its owner (uid {self.uid}, gid {self.gid}): "
                          "setfsuid/setfsgid need CAP_SETUID and CAP_SETGID; not touched")
        log.debug("%s: working as uid %d, not as its owner %d", self.path, cur_uid, self.uid)

    @property
    def acting_as(self) -> int | None:
        """The owner's uid while this thread acts as the owner, else None."""
        return self.uid if self._saved is not None else None

    @property
    def path(self) -> str:
        return self.dir.join(self.name)

    def close(self) -> None:
        if self._saved is not None:
            if not _set_fs_ids(*self._saved):  # pragma: no cover - the kernel allows it
                raise RuntimeError("cannot restore the file-system uid/gid")
            self._saved = None
        self.dir.close()

    def fds(self) -> set[int]:
        """The process's open descriptors (empty when /proc is not there to ask)."""
        try:
            return {int(n) for n in os.listdir("/proc/self/fd")}
        except OSError:
            return set()

    def open_file(self) -> int:
        """A descriptor of the pinned file, open for reading (the guard's, see dblocks.py);
        Refused when the directory entry is another file by now."""
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
                         | os.O_NONBLOCK, dir_fd=self.dir.fd)
        except OSError as exc:
            raise Refused(f"cannot open it: {exc.strerror}") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            os.close(fd)
            raise Refused("changed while it was being opened: replaced by another file; "
                          "not touched")
        return fd

    def check(self, before: set[int], when: str, *, own: int = -1) -> None:
        """Raise Refused unless the process holds the pinned database, and every file of its
        name opened since *before* is the pinned directory's entry of that name. The
        descriptor *own* (the guard's) does not count as SQLite's."""
        if not before:
            return  # no /proc: nothing to compare with (the open-time checks still held)
        family = {self.name, *(self.name + s for s in SIDE_FILES)}
        held = False
        strangers = []
        for fd in self.fds():
            if fd == own:
                continue
            try:
                st = os.fstat(fd)
            except OSError:
                continue  # closed meanwhile (another thread)
            if (st.st_dev, st.st_ino) == (self.dev, self.ino):
                held = True
                continue
            if fd in before or not stat.S_ISREG(st.st_mode):
                continue
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            base = os.path.basename(target.removesuffix(" (deleted)"))
            if base not in family:
                continue  # another thread's file
            try:
                ours = os.stat(base, dir_fd=self.dir.fd, follow_symlinks=False)
            except OSError:
                ours = None
            if ours is None or (ours.st_dev, ours.st_ino) != (st.st_dev, st.st_ino):
                strangers.append(target)
        if strangers or not held:
            what = (f"SQLite opened {display(strangers[0])} instead"
                    if strangers else "SQLite did not open the file that was checked")
            raise Refused(f"changed while it was being opened ({when}): {what}; a directory "
                          "on its path was swapped (for a symlink?); not touched")

    def close_without_checkpoint(self, con: sqlite3.Connection) -> None:
        """Close *con* so that SQLite cannot checkpoint on close (into files that may not be
        this database's): an OFD read lock on the shared-lock bytes of the pinned file makes
        the EXCLUSIVE lock SQLite's close needs for that fail."""
        fd = -1
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=self.dir.fd)
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (self.dev, self.ino):
                ofd_lock_shared(fd)
        except OSError as exc:
            log.debug("%s: no lock against the checkpoint on close: %s", self.path, exc)
        try:
            con.close()
        finally:
            if fd >= 0:
                os.close(fd)


def locate(rel: str, root: str, *, follow: bool = True) -> Pinned:
    """Find the database at *rel* below *root* from the root's descriptor (see the module
    docstring, step 1). A symlink is followed only when its target lies inside the root, and
    that target is checked the same way. Raises Refused (or FileNotFoundError)."""
    try:
        r = Root.open(root)
    except FsError as exc:
        raise Refused(str(exc)) from None
    with r:
        directory, name = os.path.split(os.path.normpath(rel))
        try:
            d = r.open_path(directory or ".")
        except FsError as exc:
            raise Refused(f"{exc}; not touched") from None
        try:
            st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        except BaseException:
            d.close()
            raise
        if stat.S_ISLNK(st.st_mode):
            d.close()
            real = os.path.realpath(os.path.join(r.dir.path, rel))
            if os.path.commonpath([real, r.dir.path]) != r.dir.path:
                raise Refused(f"resolves to {display(real)}, outside root {display(root)}; "
                              "not touched")
            if not follow:
                raise Refused("a symlink to a symlink; not followed")
            return locate(os.path.relpath(real, r.dir.path), root, follow=False)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "not a regular file; not touched"
        elif st.st_nlink > 1:
            problem = (f"has {st.st_nlink} hard links: its other names, perhaps outside root, "
                       "would change too; not touched")
        if problem:
            d.close()
            raise Refused(problem)
        return Pinned(d, name, st.st_dev, st.st_ino, st.st_uid, st.st_gid)

