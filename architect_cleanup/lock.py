"""One run at a time: an exclusive ``flock`` on a lock file in the runtime directory.

The service's ``RuntimeDirectory=`` sets ``$RUNTIME_DIRECTORY`` (``/run/architect-cleanup``);
the CLI and the API use the same directory, so all three exclude each other. The holder writes
its PID into the file; a second run fails at once with that PID. The kernel drops the lock when
the holder dies, however it dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping

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
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
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
