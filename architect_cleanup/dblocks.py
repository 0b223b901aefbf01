"""SQLite's file locks on a dashboard database: keep ours from deleting the dashboard's WAL,
and find dashboard processes that have lost theirs.

**The hazard.** A WAL-mode connection holds a POSIX read lock on its database file's SHARED
range (bytes ``0x40000002``, 510 long) while it is connected. When a connection closes, SQLite
tries an EXCLUSIVE lock on that range: if it gets it, no other process is connected, so it
checkpoints and *unlinks* ``-wal`` and ``-shm``. POSIX locks belong to the process and the
inode, and closing *any* descriptor of the file drops all of them: a dashboard that copies its
own live database (``shutil.copy2`` for a backup at start) keeps its connections but loses its
locks (``/proc/locks`` shows none on the file). Our close then believes it is the last one and
unlinks the files the dashboard keeps writing into: I/O errors, lost commits.

**The guard** (:class:`Guard`): before SQLite opens the database, an open-file-description
lock (``F_OFD_SETLK``, ``F_RDLCK``) on the SHARED range, on a descriptor of our own; closed
only after the connection is. OFD locks belong to the open file description, not the process,
so they conflict with SQLite's POSIX locks even in this process: SQLite's EXCLUSIVE probe at
close fails, it treats the database as still in use, and leaves ``-wal`` and ``-shm`` alone
(it neither checkpoints nor deletes them on close; the explicit ``wal_checkpoint(TRUNCATE)``
before, coordinated through the ``-shm`` locks the dashboard still holds, stays). A read lock
does not get in the way of a WAL database's readers, writers or checkpoints, which never lock
the SHARED range exclusively. A rollback-journal database's writers do, at each commit: there
the lock is not taken when the file's header says so and no ``-wal`` lies beside it (SQLite
opens a ``-wal`` it finds whatever the header says, and would delete it at its close), and
dropped as soon as SQLite reports the journal mode otherwise (the descriptor stays open,
since closing it would drop this process's own POSIX locks on the file; no WAL, nothing to
delete). Taking it there would deadlock: a dashboard committing holds PENDING and waits for
the SHARED range to be free of readers, while our connection's first read waits for PENDING
to go, both until their busy timeouts (found by the reliability suite: one insert waited
5 s, then failed).

**Our own side files.** When the run found neither ``-wal`` nor ``-shm`` beside the database
as it opened it (no WAL client was connected), SQLite created them for our connection, and
they are ours to remove: at close, if no other process has the database file open
(:func:`opened_elsewhere`, a scan of ``/proc/*/fd``; a process we may not inspect counts as
having it open), the guard's lock is dropped just before the connection closes, so SQLite's
own close removes what it made and a dry run leaves the tree as it found it. A process that
opens the database after that scan holds its own locks (it has just connected), so SQLite's
probe still sees it.

**Lost locks** (:func:`inspect`): a process that has the database *and* its ``-shm`` open
(``/proc/PID/fd``: a connected WAL client) but holds no lock on the database file
(``/proc/locks``, by device and inode; where that file is hidden, ``F_OFD_GETLK``) has lost
its locks. The run reports it (a journal
warning, ``status``); it still purges safely thanks to the guard. A process whose descriptors
we may not read, and which holds no lock we can see, is reported as unknown.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from architect_cleanup.fs import display
from architect_cleanup.journal import fields

log = logging.getLogger(__name__)

#: SQLite's lock bytes (os_unix.c): PENDING, RESERVED, then the SHARED range that an EXCLUSIVE
#: lock must write-lock whole.
PENDING_BYTE = 0x40000000
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_FIRST = PENDING_BYTE + 2
SHARED_SIZE = 510

#: Test-only switch: False runs without the guard, to show what the tests catch. Never
#: changed by the product.
PROTECT = True

#: How long to retry the guard's lock while someone holds the SHARED range exclusively (a
#: rollback-journal writer committing), at most (seconds) and between tries.
GUARD_RETRY = 0.005

#: A WAL database's header says so: bytes 18 and 19 (write and read version) are 2.
_WAL_VERSION = 2
#: The first 16 bytes of every SQLite database file.
_MAGIC = b"SQLite format 3\0"
#: At most this many processes per database listed by PID in a report.
LIST_LIMIT = 10
#: Command lines are cut to this many characters.
COMMAND_LIMIT = 200


class GuardError(Exception):
    """The guard's lock cannot be taken; the message says why in plain words."""


def _flock(kind: int) -> bytes:
    """A ``struct flock`` over the SHARED range (``l_pid`` 0, as OFD locks require)."""
    return struct.pack("@hhqqi4x", kind, os.SEEK_SET, SHARED_FIRST, SHARED_SIZE, 0)


def ofd_lock_shared(fd: int) -> None:
    """An OFD read lock on *fd*'s SHARED range (raises OSError: EAGAIN when someone holds the
    range exclusively, EINVAL where OFD locks are not available)."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_RDLCK))


def ofd_unlock_shared(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK))


def _header(fd: int) -> bytes:
    """The first 20 bytes of the database file open at *fd* (fewer, or none, when it is
    short or cannot be read), read through that descriptor: opening the file again and
    closing it would drop this process's locks."""
    try:
        return os.pread(fd, 20, 0)
    except OSError:
        return b""


def header_says_wal(fd: int) -> bool:
    """Whether the database file open at *fd* is in WAL mode, by its header."""
    head = _header(fd)
    return len(head) == 20 and head[18] == _WAL_VERSION and head[19] == _WAL_VERSION


def header_says_rollback(fd: int) -> bool:
    """Whether the file open at *fd* is a SQLite database in a rollback-journal mode, by its
    header (the magic string, and 1 as write and read version); False for anything else (a
    short, unreadable or foreign file)."""
    head = _header(fd)
    return len(head) == 20 and head[:16] == _MAGIC and head[18] == 1 and head[19] == 1


class Guard:
    """An OFD read lock on a database file's SHARED range, held on a descriptor of its own
    from before the connection opens until after it closes (see the module docstring).

    *fd* must be open for reading on the database file (the same inode SQLite opens). The
    guard owns it from then on: :meth:`close` closes it, and must come after the connection's
    close."""

    def __init__(self, fd: int, label: str, *, wait: float = 0.0, lock: bool = True) -> None:
        self.fd = fd
        self.label = label
        self.locked = False
        if not lock:
            return
        try:
            self.lock(wait)
        except BaseException:  # an error, or a signal while waiting: the descriptor goes
            self.close()
            raise

    def lock(self, wait: float) -> None:
        """Take the lock, retrying for up to *wait* seconds while the range is held
        exclusively (GuardError after that)."""
        if not PROTECT or self.locked:
            return
        end = time.monotonic() + wait
        while True:
            try:
                ofd_lock_shared(self.fd)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES) and time.monotonic() < end:
                    time.sleep(GUARD_RETRY)
                    continue
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise GuardError("database is locked: another connection held it "
                                     "exclusively longer than busy_timeout") from None
                raise GuardError(
                    f"cannot take the lock that keeps SQLite from deleting the dashboard's "
                    f"WAL on close (OFD lock: {exc.strerror}); not touched") from None
            self.locked = True
            return

    def release_lock(self) -> None:
        """Drop the lock but keep the descriptor (a rollback-journal database: its writers
        need the SHARED range exclusively at each commit)."""
        if self.locked and self.fd >= 0:
            try:
                ofd_unlock_shared(self.fd)
            except OSError as exc:  # pragma: no cover - unlocking an own OFD lock
                log.debug("%s: cannot drop the guard's lock: %s", self.label, exc)
            self.locked = False

    def close(self) -> None:
        """After the connection's close: drop the lock and the descriptor."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.locked = False
            os.close(fd)


def opened_elsewhere(db: os.stat_result, proc: str = "/proc") -> bool:
    """Whether a process other than this one has the file *db* open (``/proc/*/fd``, by
    device and inode); a process whose descriptors cannot be read counts as having it open."""
    ident = (db.st_dev, db.st_ino)
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        if pid == me:
            continue
        fddir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fddir)
        except FileNotFoundError:
            continue
        except OSError:
            return True
        for n in fds:
            try:
                st = os.stat(f"{fddir}/{n}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == ident:
                return True
    return False


# --- lost locks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """A process that has a dashboard database open: its PID, command line, and ``state``:
    ``"lost"`` (a connected WAL client without a lock on the file) or ``"unknown"`` (its
    descriptors could not be read)."""

    database: str
    pid: int
    command: str
    state: str

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "pid": self.pid, "command": self.command,
                "state": self.state}


@dataclass
class Findings:
    """What one inspection of one database found."""

    lost: list[Holder] = field(default_factory=list)
    unknown: list[Holder] = field(default_factory=list)
    #: uninspectable processes beyond those listed in ``unknown``
    unknown_more: int = 0


def _proc_locks(proc: str) -> Iterator[tuple[str, int, str]]:
    """(kind, pid, "maj:min:ino") of every lock in /proc/locks (waiters left out)."""
    with open(f"{proc}/locks", encoding="ascii", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 6 or parts[1] == "->":
                continue
            try:
                yield parts[1], int(parts[4]), parts[5]
            except ValueError:
                continue


def lock_key(st: os.stat_result) -> str:
    """How /proc/locks names a file: ``major:minor:inode`` (hex device numbers)."""
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def command_line(pid: int, proc: str = "/proc") -> str:
    """*pid*'s command line, printable and cut short ("?" when it cannot be read)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as fh:
            raw = fh.read(COMMAND_LIMIT * 4)
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "backslashreplace")
    if not text:
        try:
            with open(f"{proc}/{pid}/comm", "rb") as fh:
                text = "[" + fh.read(64).strip().decode("utf-8", "backslashreplace") + "]"
        except OSError:
            return "?"
    text = display(text)
    return text if len(text) <= COMMAND_LIMIT else text[:COMMAND_LIMIT - 1] + "…"


def _lockers(label: str, db: os.stat_result, proc: str,
             fd: int | None) -> tuple[set[int], bool]:
    """The PIDs holding a POSIX lock on the database file, and whether that list is complete
    (False: a process without one in the list may still hold a lock).

    From ``/proc/locks``; where it cannot be read (``ProcSubset=pid``), from ``F_OFD_GETLK``
    on *fd* (a descriptor of the database, not locked yet by this process), which names one
    holder of the SHARED range, or none at all: then nobody holds one, for sure."""
    key = lock_key(db)
    locking: set[int] = set()
    try:
        for kind, pid, where in _proc_locks(proc):
            if where != key:
                continue
            if kind == "POSIX":
                locking.add(pid)
            elif kind == "OFDLCK":
                return locking, False  # an OFD lock we cannot attribute
        return locking, True
    except OSError as exc:
        log.debug("%s: cannot read %s/locks: %s", label, proc, exc)
    if fd is None:
        return locking, False
    try:
        res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK))
    except OSError as exc:
        log.debug("%s: F_OFD_GETLK: %s", label, exc)
        return locking, False
    kind, _whence, _start, _len, pid = struct.unpack("@hhqqi4x", res)
    if kind == fcntl.F_UNLCK:
        return locking, True
    if pid > 0:
        locking.add(pid)
    return locking, False


def inspect(label: str, db: os.stat_result, shm: os.stat_result | None,
            proc: str = "/proc", fd: int | None = None) -> Findings:
    """The processes that have the database *db* (a WAL database, whose ``-shm`` is *shm*)
    open without a lock on it (see the module docstring). Reads ``/proc/*/fd`` and
    ``/proc/locks`` (or asks ``F_OFD_GETLK`` on *fd*, see :func:`_lockers`): it never opens
    the database (closing that would drop this process's own locks)."""
    out = Findings()
    if shm is None:
        return out  # no -shm: nobody is connected in WAL mode
    db_id, shm_id = (db.st_dev, db.st_ino), (shm.st_dev, shm.st_ino)
    locking, certain = _lockers(label, db, proc, fd)
    me = os.getpid()
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return out
    unreadable = listed = 0
    for pid in pids:
        if pid == me or pid in locking:
            continue
        try:
            connected = _connected(f"{proc}/{pid}/fd", db_id, shm_id)
        except FileNotFoundError:
            continue
        except OSError:
            unreadable += 1
            if listed < LIST_LIMIT:
                listed += 1
                out.unknown.append(Holder(label, pid, command_line(pid, proc), "unknown"))
            continue
        if connected:
            # Without the whole list of lock holders it may hold one: unknown, then.
            state = "lost" if certain else "unknown"
            holder = Holder(label, pid, command_line(pid, proc), state)
            (out.lost if certain else out.unknown).append(holder)
    out.unknown_more = unreadable - listed
    return out


def _connected(fddir: str, db_id: tuple[int, int], shm_id: tuple[int, int]) -> bool:
    """Whether the process whose descriptors *fddir* lists has both the database and its
    ``-shm`` open (a connected WAL client). Raises OSError when *fddir* cannot be listed."""
    has_db = has_shm = False
    for n in os.listdir(fddir):
        try:
            st = os.stat(f"{fddir}/{n}")
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        ident = (st.st_dev, st.st_ino)
        has_db = has_db or ident == db_id
        has_shm = has_shm or ident == shm_id
    return has_db and has_shm


class LockWatch:
    """The lost-lock findings of one run: each database inspected once, each lost lock
    warned about once (journal entry ``db_lock_lost``)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.lost: list[Holder] = []
        self.unknown: list[Holder] = []
        self.unknown_more = 0
        self._seen: set[tuple[int, int]] = set()

    def check(self, label: str, path: str, db: os.stat_result,
              shm: os.stat_result | None, fd: int | None = None) -> None:
        """Inspect the database *db* (at *path*, for messages; *fd*: see :func:`inspect`)
        unless done already."""
        ident = (db.st_dev, db.st_ino)
        if ident in self._seen:
            return
        self._seen.add(ident)
        found = inspect(label, db, shm, self.proc, fd)
        for h in found.lost:
            self.lost.append(h)
            log.warning("%s: PID %d (%s) has the database open without its SQLite locks "
                        "(lost when it closed a copy of the file?); its WAL is protected "
                        "during this run, but restart it to restore its locks",
                        display(path), h.pid, h.command,
                        extra=fields("db_lock_lost", cleanup_path=path, cleanup_pid=h.pid,
                                     cleanup_command=h.command))
        self.unknown.extend(found.unknown)
        self.unknown_more += found.unknown_more
        if found.unknown or found.unknown_more:
            log.info("%s: %d process(es) could not be inspected: whether they hold their "
                     "SQLite locks is unknown", display(path),
                     len(found.unknown) + found.unknown_more)

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``, the state file and ``status``."""
        return {"lost": [h.to_dict() for h in self.lost],
                "unknown": [h.to_dict() for h in self.unknown],
                "unknown_more": self.unknown_more}

    def __bool__(self) -> bool:
        return bool(self.lost or self.unknown or self.unknown_more)
