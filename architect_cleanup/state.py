"""Last-run state and a bounded run history, as atomic JSON in the state directory.

``$STATE_DIRECTORY`` (set by the service's ``StateDirectory=``) or /var/lib/architect-cleanup
holds ``state.json``. It is written whole to a temporary file, fsync'd and renamed over the old
one, so a crash or a full disk leaves the previous state intact. A corrupt file is reported,
kept aside as ``state.json.corrupt`` and replaced, never a crash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from typing import Any

from architect_cleanup.fs import untrusted

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/architect-cleanup"
STATE_FILE = "state.json"
HISTORY_LIMIT = 100
FORMAT = 1
#: an interrupted write's leftover: ``.state.<random>.tmp``
TMP_PREFIX, TMP_SUFFIX = ".state.", ".tmp"


def state_dir(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    value = environ.get("STATE_DIRECTORY", "")
    return value.split(":")[0] if value else DEFAULT_STATE_DIR


class StateStore:
    """Reads and writes ``state.json`` in one directory."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = os.path.join(self.directory, STATE_FILE)
        #: why the last load found no usable state (missing, corrupt), for status output
        self.problem: str | None = None

    def open_dir(self) -> int:
        """A descriptor of the state directory, once it is found trustworthy: owned by root
        or by the user running this, writable by nobody else (else ``state.json`` could be
        swapped for a link to any file this process may read or write). OSError else."""
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        why = untrusted(os.fstat(dfd))
        if why is not None:
            os.close(dfd)
            raise OSError(errno.EPERM, f"state directory {why}; refused", self.directory)
        return dfd

    def _read(self) -> bytes:
        """state.json's bytes: a regular file, never followed through a symlink."""
        dfd = self.open_dir()
        try:
            fd = os.open(STATE_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                         dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "a symlink, not followed", self.path) from None
            raise
        finally:
            os.close(dfd)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.path)
            data: bytes = fh.read()
        return data

    def load(self) -> dict[str, Any]:
        """The state document; an empty one when the file is missing or unusable."""
        self.problem = None
        try:
            doc = json.loads(self._read())
        except FileNotFoundError:
            self.problem = "no run recorded yet"
            return _empty()
        except OSError as exc:
            where = exc.filename or self.path
            self.problem = f"{where}: {exc.strerror or exc}"
            return _empty()
        except (ValueError, UnicodeDecodeError) as exc:
            self.problem = f"{self.path} is unreadable or corrupt ({exc})"
            return _empty()
        if not isinstance(doc, dict) or not isinstance(doc.get("history", []), list):
            self.problem = f"{self.path} does not hold a state object"
            return _empty()
        history = doc.get("history", [])
        runs = [h for h in history if isinstance(h, dict)]
        if len(runs) != len(history):
            self.problem = (f"{self.path}: {len(history) - len(runs)} unreadable history "
                            "entries ignored")
        doc["history"] = runs
        if not isinstance(doc.get("last_run"), dict):
            doc["last_run"] = None
        return doc

    def record(self, run: Mapping[str, Any], **extra: Any) -> None:
        """Make *run* the last run and append it to the history (bounded); *extra* are
        top-level keys of the document about the latest run only (``forecast``: the fill
        forecasts, for ``status``). Raises OSError."""
        doc = self.load()
        if self.problem and os.path.isdir(self.directory):
            os.close(self.open_dir())  # an untrusted directory: refused before any change
        if self.problem and os.path.lexists(self.path):
            log.warning("state: %s; keeping it as %s.corrupt and starting a new one",
                        self.problem, self.path)
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path + ".corrupt")
        history = [h for h in doc.get("history", []) if isinstance(h, dict)]
        history.append(dict(run))
        doc = {"format": FORMAT, "last_run": dict(run), "history": history[-HISTORY_LIMIT:],
               **extra}
        self.write(doc)

    def write(self, doc: Mapping[str, Any]) -> None:
        """Replace state.json with *doc*: written and fsync'd under no name (``O_TMPFILE``),
        given a temporary name only once it is whole, renamed over state.json. A run killed
        while writing leaves nothing behind; one killed in the microseconds between the link
        and the rename leaves a ``.state.*.tmp``, removed by the next write (state is written
        only under the run lock). Where ``O_TMPFILE`` or ``/proc`` is missing, the temporary
        file has its name from the start."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        dfd = self.open_dir()
        try:
            _sweep(dfd)
            tmp = _unnamed(dfd, data) or self._named(data)
            try:
                os.replace(tmp, STATE_FILE, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _named(self, data: bytes) -> str:
        """*data* in a temporary file named from the start; its name."""
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                _write_all(fh, data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return os.path.basename(tmp)


def _unnamed(dfd: int, data: bytes) -> str | None:
    """*data* in a file of directory *dfd* with no name until it is on disk; its temporary
    name, or None where this file system or /proc does not allow it."""
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise
    with os.fdopen(fd, "wb") as fh:
        _write_all(fh, data)
        name = f"{TMP_PREFIX}{os.urandom(6).hex()}{TMP_SUFFIX}"
        try:
            # linkat(AT_SYMLINK_FOLLOW) of the /proc magic link: a dst_dir_fd makes Python
            # call linkat, not link(2), which would link the symlink itself
            os.link(f"/proc/self/fd/{fh.fileno()}", name, dst_dir_fd=dfd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM):  # no usable /proc
                return None
            raise
    return name


def _sweep(dfd: int) -> None:
    """Remove the temporary files an interrupted write left in directory *dfd*."""
    with contextlib.suppress(OSError), os.scandir(dfd) as it:
        for entry in it:
            if (entry.name.startswith(TMP_PREFIX) and entry.name.endswith(TMP_SUFFIX)
                    and entry.is_file(follow_symlinks=False)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=dfd)


def _write_all(fh: Any, data: bytes) -> None:
    fh.write(data)
    fh.flush()
    os.fchmod(fh.fileno(), 0o644)  # readable for `status` whatever the umask (service: 0077)
    os.fsync(fh.fileno())


def _empty() -> dict[str, Any]:
    return {"format": FORMAT, "last_run": None, "history": []}
