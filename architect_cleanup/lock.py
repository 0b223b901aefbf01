"""One run at a time: an exclusive ``flock`` on a lock file in the runtime directory.

The service's ``RuntimeDirectory=`` sets ``$RUNTIME_DIRECTORY`` (``/run/architect-cleanup``);
the CLI and the API use the same directory, so all three exclude each other. The holder writes
its PID into the file; a second run fails at once with that PID. The kernel drops the lock when
the holder dies, however it dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Mapping

from architect_cleanup.fs import untrusted

DEFAULT_RUNTIME_DIR = "/run/architect-cleanup"
LOCK_NAME = "cleanup.lock"
#: flock tries when the lock is found busy and then free (its holder just finished)
_ATTEMPTS = 3


class LockHeld(Exception):
    """Another run holds the lock (exit code 75, HTTP 409)."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"another cleanup is running ({who} holds {path})")


class LockUnusable(Exception):
    """The lock file (or its directory) is not one this run may use: exit code 2."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot use the run lock {path}: {problem}; remove it "
                         "(or fix its directory) and run again")


def runtime_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$RUNTIME_DIRECTORY`` (its first entry) when systemd set it, else /run/architect-cleanup."""
    environ = os.environ if environ is None else environ
    value = environ.get("RUNTIME_DIRECTORY", "")
    return value.split(":")[0] if value else DEFAULT_RUNTIME_DIR


def lock_path(environ: Mapping[str, str] | None = None) -> str:
    return os.path.join(runtime_dir(environ), LOCK_NAME)


class RunLock:
    """``with RunLock(path):`` holds the run lock or raises LockHeld."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> None:
        fd = self._open()
        try:
            for attempt in range(_ATTEMPTS):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # The holder writes its PID right after it takes the lock; a run that
                    # starts in that instant asks the kernel instead. Nobody at all: the
                    # holder let go in the meantime, and this run may go ahead.
                    pid = _read_pid(fd) or flock_owner(os.fstat(fd))
                    if pid is None and attempt + 1 < _ATTEMPTS:
                        continue
                    raise LockHeld(self.path, pid or None) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)  # readable for `status` whatever the umask (service: 0077)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def _open(self) -> int:
        """The lock file, opened and checked: in a directory owned by root or this user that
        nobody else may write, a regular file with one link, owned by this user. Anything
        else (a directory, FIFO, symlink or hard link at the name, a file where the directory
        should be) is LockUnusable, before the file is written or its mode changed."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            raise
        except OSError as exc:
            raise LockUnusable(directory, exc.strerror or str(exc)) from None
        try:
            why = untrusted(os.fstat(dfd))
            if why is not None:
                raise LockUnusable(directory, f"runtime directory {why}")
            try:
                fd = os.open(os.path.basename(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                             | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, 0o644, dir_fd=dfd)
            except PermissionError as exc:  # named by its whole path (opened by dir_fd)
                raise PermissionError(exc.errno, exc.strerror, self.path) from None
            except OSError as exc:
                what = "a symlink, not followed" if exc.errno == errno.ELOOP else exc.strerror
                raise LockUnusable(self.path, what or str(exc)) from None
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "not a regular file"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links"
        elif st.st_uid != os.geteuid():
            problem = f"owned by uid {st.st_uid}, not by the user running this"
        if problem is not None:
            os.close(fd)
            raise LockUnusable(self.path, problem)
        return fd

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = -1

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def holder(path: str) -> int | None:
    """PID of the run holding the lock now, or None — without touching the lock.

    Looks the lock file's inode up in /proc/locks (so a status query can never make a starting
    run fail), then takes the PID the holder wrote."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    owner = flock_owner(st)
    if owner is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return owner or None
    try:
        return _read_pid(fd) or owner or None
    finally:
        os.close(fd)


def flock_owner(st: os.stat_result) -> int | None:
    """The PID /proc/locks gives for a flock on the file *st* describes (0 when the kernel
    does not say), or None when nobody holds one."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return None
    for row in rows:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF" (a "->" marks blocked waiters)
        if "->" in row or len(row) < 6 or row[1] != "FLOCK":
            continue
        if row[5] == want:
            return int(row[4]) if row[4].isdigit() else 0
    return None
