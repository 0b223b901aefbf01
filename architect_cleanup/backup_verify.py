"""Is a backup known good? A check that can never change the backup, and a cache of results.

What is checked is what a restore would give back:

* **SQLite** (the file starts with ``SQLite format 3``): ``PRAGMA quick_check`` (``check =
  "quick"``) or ``PRAGMA integrity_check`` (``"full"``). A backup with no ``-wal`` or
  ``-journal`` beside it is opened as ``file:…?immutable=1``: SQLite then takes no lock, reads no
  side file and writes nothing, not even a ``-shm``. A backup *with* a ``-wal`` (or a hot
  ``-journal``) is different: its content is the database plus that file, and any connection
  that reads the WAL creates a ``-shm`` beside it and may checkpoint into the database on close
  (``mode=ro`` on SQLite 3.40 still creates ``X.db-shm``; ``immutable=1`` ignores the WAL and so
  checks the wrong content). So the database and its side files are copied into a private
  directory (mode 0700, under *scratch*) and checked there, where SQLite may do whatever a
  restore would do. The copy costs one read of the backup; ``copy_file_range`` makes it a
  reflink where the file system can.
* **gzip** (``.gz``): decompressed to nowhere; zlib checks each member's CRC-32 and length.
* **zstd** (``.zst``): decompressed to nowhere; libzstd checks the frame's content checksum. A
  frame written without one decodes but proves nothing: "unverified".
* anything else: "unverified" (counted as before this module existed).

The backup is read through a descriptor opened with ``O_NOFOLLOW`` relative to its directory,
and its identity (device, inode, size, mtime, ctime) is compared before and after the check; a
file that changed meanwhile gets no verdict ("unverified", not cached).

:class:`VerifyCache` keeps verdicts per file identity in ``backup-verify.json`` in the state
directory, so each backup is checked once, not every run. A verdict is reused only for the
same identity of the backup *and* of its side files, and a "quick" verdict never answers a
"full" request.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import gzip
import json
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Check = Literal["quick", "full", "off"]
CHECKS: tuple[Check, ...] = ("quick", "full", "off")
SQLITE_MAGIC = b"SQLite format 3\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
#: Side files a restore gives back with the database (``-shm`` is an index SQLite rebuilds).
DATA_SIDE_FILES = ("-wal", "-journal")
CHUNK = 1 << 20
#: The first lines of an integrity report kept in a verdict's detail.
DETAIL_LINES = 3


class State(enum.StrEnum):
    """A backup's verdict."""

    GOOD = "good"
    CORRUPT = "corrupt"
    UNVERIFIED = "unverified"


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of one check: *state*, the *kind* of file it was judged as ("sqlite",
    "gzip", "zstd", "other"), the *check* that ran, and a one-line *detail* for people
    ("quick_check: ok", "gzip: CRC check failed", "not a SQLite database")."""

    state: State
    kind: str
    detail: str
    check: Check = "quick"

    @property
    def good(self) -> bool:
        return self.state is State.GOOD


@dataclass(frozen=True, slots=True)
class Identity:
    """What makes a file "the same file" for the cache: any rewrite, rename over, or touch
    moves at least one of these."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def as_list(self) -> list[int]:
        return [self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns]


class _Changed(Exception):
    """The file changed while it was being checked."""


def kind_of(name: str, head: bytes) -> str:
    """How a backup is checked, from its first bytes (the name only breaks ties)."""
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(ZSTD_MAGIC) or name.endswith(".zst"):
        return "zstd"
    if head.startswith(GZIP_MAGIC) or name.endswith(".gz"):
        return "gzip"
    if name.endswith((".db", ".sqlite", ".sqlite3")):
        return "sqlite"  # a database by name that does not start like one: corrupt
    return "other"


def side_files(dir_fd: int, name: str) -> dict[str, os.stat_result]:
    """The data side files (``-wal``, ``-journal``) beside *name* that are regular files and
    not empty (an empty ``-wal`` or ``-journal`` changes nothing in a restore)."""
    out: dict[str, os.stat_result] = {}
    for suffix in DATA_SIDE_FILES:
        try:
            st = os.stat(name + suffix, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            out[suffix] = st
    return out


def verify(dir_fd: int, name: str, *, check: Check = "quick", scratch: str | None = None,
           sides: Mapping[str, os.stat_result] | None = None) -> Verification:
    """Check backup *name* in directory *dir_fd* without any way of changing it.

    *sides* are its data side files as the caller saw them (default: looked up now, see
    :func:`side_files`); *scratch* is where a database with side files is copied for its
    check (default: the system's temporary directory; the copy needs room for the backup).
    Never raises for a bad backup: an unreadable one is "unverified" with the reason."""
    if check == "off":
        return Verification(State.UNVERIFIED, "other", "verification is off", check)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY,
                     dir_fd=dir_fd)
    except OSError as exc:
        return Verification(State.UNVERIFIED, "other", f"cannot open: {exc.strerror}", check)
    try:
        return _verify_open(dir_fd, name, fd, check, scratch, sides)
    finally:
        os.close(fd)


def _verify_open(dir_fd: int, name: str, fd: int, check: Check, scratch: str | None,
                 sides: Mapping[str, os.stat_result] | None) -> Verification:
    """:func:`verify` on the open file *fd*: check it by its kind, then make sure neither
    it nor its side files changed meanwhile."""
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        return Verification(State.UNVERIFIED, "other", "not a regular file", check)
    head = os.pread(fd, len(SQLITE_MAGIC), 0)
    kind = kind_of(name, head)
    if sides is None:
        sides = side_files(dir_fd, name) if kind == "sqlite" else {}
    try:
        if kind == "sqlite":
            result = _check_sqlite(dir_fd, name, fd, head, check, scratch, sides)
        elif kind == "gzip":
            result = _check_gzip(fd, check)
        elif kind == "zstd":
            result = _check_zstd(fd, check)
        else:
            result = Verification(State.UNVERIFIED, kind, "no check for this kind of file",
                                  check)
        if not _unchanged(dir_fd, name, fd, before, sides):
            raise _Changed
    except _Changed:
        return Verification(State.UNVERIFIED, kind, "changed while it was being checked",
                            check)
    except OSError as exc:
        return Verification(State.UNVERIFIED, kind, f"cannot read: {exc.strerror}", check)
    return result


def _unchanged(dir_fd: int, name: str, fd: int, before: os.stat_result,
               sides: Mapping[str, os.stat_result]) -> bool:
    """The file (open as *fd* and by its name) and its side files are as they were."""
    if not _same(before, os.fstat(fd)) or not _still(dir_fd, name, before):
        return False
    return all(_still(dir_fd, name + suffix, was) for suffix, was in sides.items())


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return Identity.of(a) == Identity.of(b)


def _still(dir_fd: int, name: str, was: os.stat_result) -> bool:
    try:
        return _same(was, os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except OSError:
        return False


# --- SQLite ----------------------------------------------------------------------------------


def _check_sqlite(dir_fd: int, name: str, fd: int, head: bytes, check: Check,
                  scratch: str | None, sides: Mapping[str, os.stat_result]) -> Verification:
    if head != SQLITE_MAGIC:
        return Verification(State.CORRUPT, "sqlite", "not a SQLite database (no SQLite header)",
                            check)
    pragma = "integrity_check" if check == "full" else "quick_check"
    if not sides:
        # immutable=1: no lock, no side file read or created, nothing written. The path is
        # our own descriptor's /proc link, which SQLite resolves to the file we opened.
        uri = f"file:/proc/self/fd/{fd}?immutable=1"
        return _run_check(uri, pragma, check)
    work = tempfile.mkdtemp(prefix="architect-cleanup-verify.", dir=scratch)
    try:
        base = "backup.db"
        _copy_fd(fd, os.path.join(work, base))
        for suffix in sides:
            src = os.open(name + suffix, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dir_fd)
            try:
                if not _same(os.fstat(src), sides[suffix]):
                    raise _Changed
                _copy_fd(src, os.path.join(work, base + suffix))
            finally:
                os.close(src)
        result = _run_check("file:" + os.path.join(work, base), pragma, check)
        what = " + ".join(s.lstrip("-") for s in sides)
        return Verification(result.state, result.kind, f"{result.detail} (with its {what})",
                            check)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_fd(src: int, dest: str) -> None:
    """Copy all of descriptor *src* into a new file *dest* (kernel-side where possible)."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(src).st_size
        off = 0
        while off < size:
            try:
                n = os.copy_file_range(src, out, size - off, off, off)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                n = os.write(out, os.pread(src, min(CHUNK, size - off), off))
            if n == 0:
                break
            off += n
    finally:
        os.close(out)


def _run_check(uri: str, pragma: str, check: Check) -> Verification:
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        return Verification(State.CORRUPT, "sqlite", f"cannot open: {exc}", check)
    try:
        rows = [str(r[0]) for r in con.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as exc:
        return Verification(State.CORRUPT, "sqlite", f"{pragma}: {exc}", check)
    finally:
        con.close()
    if rows == ["ok"]:
        return Verification(State.GOOD, "sqlite", f"{pragma}: ok", check)
    shown = "; ".join(rows[:DETAIL_LINES])
    more = f" (+{len(rows) - DETAIL_LINES} more)" if len(rows) > DETAIL_LINES else ""
    return Verification(State.CORRUPT, "sqlite", f"{pragma}: {shown}{more}", check)


# --- streams ---------------------------------------------------------------------------------


def _check_gzip(fd: int, check: Check) -> Verification:
    raw = os.fdopen(os.dup(fd), "rb")
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            while gz.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        return Verification(State.CORRUPT, "gzip", f"gzip: {exc or 'truncated'}", check)
    finally:
        raw.close()
    return Verification(State.GOOD, "gzip", "gzip: CRC-32 and length ok", check)


def _check_zstd(fd: int, check: Check) -> Verification:
    try:
        import zstandard  # noqa: PLC0415 -- optional: Debian's python3-zstandard
    except ImportError:
        return Verification(State.UNVERIFIED, "zstd",
                            "cannot check zstd: python3-zstandard is not installed", check)
    header = os.pread(fd, 18, 0)
    try:
        params = zstandard.get_frame_parameters(header)
    except zstandard.ZstdError as exc:
        return Verification(State.CORRUPT, "zstd", f"zstd: {exc}", check)
    raw = os.fdopen(os.dup(fd), "rb")
    try:
        with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as rd:
            while rd.read(CHUNK):
                pass
    except zstandard.ZstdError as exc:
        return Verification(State.CORRUPT, "zstd", f"zstd: {exc}", check)
    finally:
        raw.close()
    if not params.has_checksum:
        return Verification(State.UNVERIFIED, "zstd",
                            "zstd: decodes, but its frame has no checksum", check)
    return Verification(State.GOOD, "zstd", "zstd: frame checksum ok", check)


# --- cache -----------------------------------------------------------------------------------

CACHE_FILE = "backup-verify.json"
CACHE_FORMAT = 1
#: At most this many verdicts are kept (the oldest checks go first).
CACHE_LIMIT = 20_000
_TMP_PREFIX, _TMP_SUFFIX = ".backup-verify.", ".tmp"
_STRENGTH = {"off": 0, "quick": 1, "full": 2}


def _key(ident: Identity) -> str:
    return f"{ident.dev}:{ident.ino}"


class VerifyCache:
    """Verdicts per file identity, as atomic JSON in *directory* (the state directory).

    :meth:`lookup` answers only when the backup and its side files have exactly the identity
    they had when checked, and the cached check is at least as strong as the one asked for.
    :meth:`save` drops entries whose path now names another file or nothing (vanished
    backups), keeps the newest :data:`CACHE_LIMIT`, and writes a temporary file, fsyncs it and
    renames it over the old one; a leftover temporary file from a crash is removed by the next
    save. An unreadable cache is an empty one (checks run again), never an error."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, CACHE_FILE)
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self.problem: str | None = None
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                doc = json.loads(fh.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.problem = f"{self.path} is unreadable ({exc}); backups are checked again"
            log.warning("%s", self.problem)
            return
        entries = doc.get("entries") if isinstance(doc, dict) else None
        if not isinstance(entries, dict):
            self.problem = f"{self.path} holds no cache; backups are checked again"
            return
        self._entries = {k: v for k, v in entries.items() if isinstance(v, dict)}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, st: os.stat_result, check: Check,
               sides: Mapping[str, os.stat_result] | None = None) -> Verification | None:
        """The cached verdict for this exact file (and side files), or None."""
        ident = Identity.of(st)
        e = self._entries.get(_key(ident))
        if e is None or e.get("id") != ident.as_list():
            return None
        if e.get("sides", {}) != _sides_doc(sides):
            return None
        cached = e.get("check")
        if cached not in _STRENGTH or _STRENGTH[str(cached)] < _STRENGTH[check]:
            return None
        try:
            return Verification(State(e["state"]), str(e["kind"]), str(e["detail"]),
                                cached)
        except (KeyError, ValueError):
            return None

    def store(self, path: str, st: os.stat_result, result: Verification,
              sides: Mapping[str, os.stat_result] | None = None,
              now: float | None = None) -> None:
        """Remember *result* for the file at *path* with identity *st*. A verdict that a
        change during the check prevented, or a disabled check, is not stored."""
        if result.check == "off" or result.detail == "changed while it was being checked":
            return
        ident = Identity.of(st)
        self._entries[_key(ident)] = {
            "path": path, "id": ident.as_list(), "sides": _sides_doc(sides),
            "state": result.state.value, "kind": result.kind, "detail": result.detail,
            "check": result.check, "at": time.time() if now is None else now,
        }
        self._dirty = True

    def save(self) -> None:
        """Prune and write the cache if anything changed. Raises OSError (e.g. a full disk):
        the old file is then left as it was."""
        self._prune()
        if not self._dirty:
            return
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        doc = {"format": CACHE_FORMAT, "entries": self._entries}
        write_json_atomic(self.directory, CACHE_FILE, doc, _TMP_PREFIX, _TMP_SUFFIX)
        self._dirty = False

    def _prune(self) -> None:
        gone = []
        for key, e in self._entries.items():
            path = e.get("path")
            try:
                now = Identity.of(os.stat(str(path), follow_symlinks=False)).as_list()
            except (OSError, ValueError):
                now = None
            if now is None or now != e.get("id"):
                gone.append(key)
        for key in gone:
            del self._entries[key]
        if len(self._entries) > CACHE_LIMIT:
            newest = sorted(self._entries.items(), key=lambda kv: float(kv[1].get("at", 0)),
                            reverse=True)[:CACHE_LIMIT]
            self._entries = dict(newest)
            gone.append("")
        if gone:
            self._dirty = True


def _sides_doc(sides: Mapping[str, os.stat_result] | None) -> dict[str, list[int]]:
    return {k: Identity.of(v).as_list() for k, v in sorted((sides or {}).items())}


def verify_cached(cache: VerifyCache | None, dir_fd: int, name: str, path: str, *,
                  check: Check = "quick", scratch: str | None = None) -> Verification:
    """:func:`verify` through *cache*: a known file is not checked again. *path* is the
    backup's full path (what the cache keys its pruning on)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        return Verification(State.UNVERIFIED, "other", f"cannot stat: {exc.strerror}", check)
    sides = side_files(dir_fd, name) if stat.S_ISREG(st.st_mode) else {}
    if cache is not None and check != "off":
        hit = cache.lookup(st, check, sides)
        if hit is not None:
            return hit
    result = verify(dir_fd, name, check=check, scratch=scratch, sides=sides)
    if cache is not None:
        cache.store(path, st, result, sides)
    return result


def write_json_atomic(directory: str, name: str, doc: Any, tmp_prefix: str,
                      tmp_suffix: str) -> None:
    """Write *doc* as JSON to *directory*/*name*: temporary file, fsync, rename, fsync of the
    directory. Leftover temporary files (``tmp_prefix*tmp_suffix``) are removed first."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError), os.scandir(dfd) as it:
            for entry in it:
                if (entry.name.startswith(tmp_prefix) and entry.name.endswith(tmp_suffix)
                        and entry.is_file(follow_symlinks=False)):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.name, dir_fd=dfd)
        tmp = f"{tmp_prefix}{os.urandom(6).hex()}{tmp_suffix}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644,
                     dir_fd=dfd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def summarize(results: Iterable[Verification]) -> dict[str, int]:
    """How many verdicts of each state (for status output)."""
    out = {s.value: 0 for s in State}
    for r in results:
        out[r.state.value] += 1
    return out


__all__: Sequence[str] = (
    "CHECKS", "Check", "Identity", "State", "Verification", "VerifyCache", "kind_of",
    "side_files", "summarize", "verify", "verify_cached", "write_json_atomic",
)
