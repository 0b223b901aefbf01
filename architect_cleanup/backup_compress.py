"""Compress a backup with zstd, and hand back the originals only once the copy is proven.

The invariant: **at every moment, the backup exists as its original files or as a verified
compressed copy, and nothing is deleted before its copy is verified.** This module never
unlinks an original: :func:`compress_backup` returns the originals (with the ``stat`` they were
judged by) and the caller removes them through :func:`architect_cleanup.fs.unlink_all`, which
re-checks each one at the last moment.

One backup ``X.db`` with side files becomes one ``.zst`` per file: ``X.db-wal`` →
``X.db-wal.zst``, ``X.db-journal`` → ``X.db-journal.zst``, then ``X.db`` → ``X.db.zst``, so a
restore (``zstd -d`` on each, by hand if need be) gives back exactly what was there. ``X.db-shm``
holds no data (SQLite rebuilds it from the WAL) and is only handed back for removal. Side
files are done first and ``X.db.zst`` last: when ``X.db.zst`` exists, its side files' copies
exist too.

Each file is compressed (zstd, frame checksum and content size written) into a temporary file
``.architect-cleanup-zst.<random>.<name>.zst`` in the same directory (through the directory's
descriptor), given the original's mtime, mode and owner, fsync'd, then decompressed again from
disk and its SHA-256 and length compared with the original's, and only then renamed to its
final name with ``RENAME_NOREPLACE`` (never over an existing file), and the directory fsync'd.
The original must keep its identity from the first read to the end, or nothing is handed back.

A crash leaves at most a temporary file (removed by the next call in that directory, see
:func:`sweep`) or some finished ``.zst`` files beside their originals: the next call finds a
final name taken, proves that file decompresses to the original, reuses it and goes on.
A full disk or a stop request fails the call, removes the temporary file, and leaves the
original as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from architect_cleanup.fs import display, libc

log = logging.getLogger(__name__)

SUFFIX = ".zst"
#: Side files compressed with their backup, in this order (the backup itself comes last).
DATA_SIDES = ("-wal", "-journal")
#: Side files only removed with their backup (no data a restore needs).
DROP_SIDES = ("-shm",)
SIDES = DATA_SIDES + DROP_SIDES
TMP_PREFIX = ".architect-cleanup-zst."
DEFAULT_LEVEL = 3
CHUNK = 1 << 20
_RENAME_NOREPLACE = 1


class CompressError(Exception):
    """The backup was not compressed; the message names it and says why. Originals intact."""


class Stopped(CompressError):
    """A stop was requested; the temporary file is gone and the original intact."""


# --- names -----------------------------------------------------------------------------------


def compressed_name(name: str) -> str:
    """``architect_X.db`` → ``architect_X.db.zst``."""
    return name + SUFFIX


def original_name(name: str) -> str:
    """The name a backup had before compression: ``architect_X.db.zst`` → ``architect_X.db``
    (a name without ``.zst`` is returned as it is). Retention judges both names as one backup,
    with the same time and the same rules."""
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def is_compressed(name: str) -> bool:
    return name.endswith(SUFFIX)


def sibling_of(name: str) -> tuple[str, str] | None:
    """For a side file, ``(backup name, suffix)``: ``X.db-wal`` → ``("X.db", "-wal")``,
    ``X.db-wal.zst`` → ``("X.db.zst", "-wal")``. None for anything else."""
    zst = name.endswith(SUFFIX)
    plain = original_name(name)
    for suffix in SIDES:
        if plain.endswith(suffix) and len(plain) > len(suffix):
            base = plain[: -len(suffix)]
            return (compressed_name(base) if zst else base), suffix
    return None


def is_temporary(name: str) -> bool:
    """A name this module gives a file that is not finished yet."""
    return name.startswith(TMP_PREFIX)


# --- result ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompressedFile:
    """One file of a backup and its compressed copy."""

    source: str
    target: str
    size: int
    compressed_size: int
    sha256: str  #: of the original content (hex)
    zst_sha256: str  #: of the compressed file (hex): what an upload of it will be checked by
    reused: bool  #: the copy was already there (an interrupted earlier call) and proven


@dataclass(frozen=True, slots=True)
class Compressed:
    """A backup compressed and verified. *remove* lists the originals (name, judged stat) the
    caller may now remove with :func:`architect_cleanup.fs.unlink_all`, the backup itself
    last; *files* the copies, the backup's own last."""

    name: str
    files: tuple[CompressedFile, ...]
    remove: tuple[tuple[str, os.stat_result], ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def compressed_size(self) -> int:
        return sum(f.compressed_size for f in self.files)


# --- compressing -----------------------------------------------------------------------------


def _zstd() -> Any:
    try:
        import zstandard  # noqa: PLC0415 -- optional: Debian's python3-zstandard
    except ImportError:
        raise CompressError("compression needs zstd support: install python3-zstandard"
                            ) from None
    return zstandard


def sweep(dir_fd: int) -> list[str]:
    """Remove the temporary files an interrupted call left in directory *dir_fd*; their
    names. (They are never a backup's only copy: the original stays until its final ``.zst``
    exists and is verified.)"""
    gone: list[str] = []
    with contextlib.suppress(OSError), os.scandir(dir_fd) as it:
        for entry in it:
            if is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.name, dir_fd=dir_fd)
                except OSError as exc:
                    log.warning("compress: cannot remove leftover %s: %s",
                                display(entry.name), exc.strerror)
                    continue
                log.info("compress: removed %s left by an interrupted run", display(entry.name))
                gone.append(entry.name)
    return gone


def compress_backup(dir_fd: int, name: str, *, level: int = DEFAULT_LEVEL, threads: int = -1,
                    should_stop: Callable[[], bool] | None = None) -> Compressed:
    """Compress backup *name* (and its side files) in directory *dir_fd*; see the module doc.

    *level* is zstd's (1-19; 3 is zstd's default), *threads* its worker threads (-1: one per
    CPU, as ``zstd -T0``; 0: none). *should_stop* is asked between chunks. Raises
    :class:`CompressError` (:class:`Stopped`) or OSError (a full disk, a read error); in every
    case the originals are untouched and no temporary file is left."""
    zstandard = _zstd()
    if not 1 <= level <= zstandard.MAX_COMPRESSION_LEVEL:
        raise CompressError(f"zstd level {level} is out of range 1-"
                            f"{zstandard.MAX_COMPRESSION_LEVEL}")
    if is_compressed(name) or sibling_of(name) is not None:
        raise CompressError(f"{display(name)}: not a backup to compress")
    sweep(dir_fd)
    try:
        main = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise CompressError(f"{display(name)}: does not exist") from None
    if not stat.S_ISREG(main.st_mode):
        raise CompressError(f"{display(name)}: not a regular file")
    sides: list[tuple[str, os.stat_result]] = []
    drop: list[tuple[str, os.stat_result]] = []
    for suffix in SIDES:
        try:
            st = os.stat(name + suffix, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise CompressError(f"{display(name + suffix)}: not a regular file; {display(name)} "
                                "left as it is")
        (sides if suffix in DATA_SIDES else drop).append((name + suffix, st))
    done = [_compress_one(zstandard, dir_fd, src, st, level, threads, should_stop)
            for src, st in (*sides, (name, main))]
    remove = (*drop, *sides, (name, main))
    for src, st in remove:
        now = os.stat(src, dir_fd=dir_fd, follow_symlinks=False)
        if not _same(now, st):
            raise CompressError(f"{display(src)}: changed while it was being compressed; "
                                "left as it is")
    return Compressed(compressed_name(name), tuple(done), remove)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return ((a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns)
            == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns))


class _Hashed:
    """The SHA-256 and length of the bytes that went through."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def _count(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)

    def digest(self) -> tuple[int, bytes]:
        return self.size, self.sha.digest()


class _HashingReader(_Hashed):
    """A file's bytes as read by the (de)compressor, hashed on the way; asks *should_stop*.
    Never reads past *limit* bytes (the size it was judged with: a file growing meanwhile
    is caught by its identity afterwards, not read for ever)."""

    def __init__(self, fh: BinaryIO, should_stop: Callable[[], bool] | None = None,
                 limit: int | None = None) -> None:
        super().__init__()
        self.fh = fh
        self.should_stop = should_stop
        self.limit = limit

    def read(self, n: int = -1) -> bytes:
        if self.should_stop is not None and self.should_stop():
            raise Stopped("stop requested")
        if self.limit is not None:
            left = self.limit - self.size
            n = left if n < 0 else min(n, left)
            if n <= 0:
                return b""
        data = self.fh.read(n)
        self._count(data)
        return data

    def read_all(self) -> _HashingReader:
        """Read (and hash) the rest of the file; itself."""
        while self.read(CHUNK):
            pass
        return self


class _HashingWriter(_Hashed):
    """A sink that hashes and counts what is written to it (and optionally passes it on)."""

    def __init__(self, out: BinaryIO | None = None) -> None:
        super().__init__()
        self.out = out

    def write(self, data: bytes) -> int:
        self._count(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)


def _decompressed(zstandard: Any, fh: Any) -> tuple[int, bytes]:
    """What *fh* decompresses to: (length, SHA-256). Raises ``zstandard.ZstdError``."""
    sink = _HashingWriter()
    zstandard.ZstdDecompressor().copy_stream(fh, sink, read_size=CHUNK, write_size=CHUNK)
    return sink.digest()


@contextlib.contextmanager
def _removed_on_failure(dir_fd: int, tmp: str) -> Iterator[None]:
    """Whatever stops the block (an error, a stop request, a full disk), temporary file
    *tmp* of *dir_fd* is gone after it."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _temporary_name(target: str) -> str:
    tmp = f"{TMP_PREFIX}{os.urandom(4).hex()}.{target}"
    if len(os.fsencode(tmp)) > 255:
        tmp = f"{TMP_PREFIX}{os.urandom(8).hex()}{SUFFIX}"
    return tmp


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _compress_one(zstandard: Any, dir_fd: int, src: str, st: os.stat_result, level: int,
                  threads: int, should_stop: Callable[[], bool] | None) -> CompressedFile:
    """*src* into its verified ``.zst`` (or the one an interrupted run left, proven)."""
    target = compressed_name(src)
    if _exists(dir_fd, target):
        return _reuse(zstandard, dir_fd, src, st, target)
    with _open_at(dir_fd, src, buffering=0) as raw:
        if not _same(os.fstat(raw.fileno()), st):
            raise CompressError(f"{display(src)}: changed since it was judged; left as it is")
        tmp = _temporary_name(target)
        out_fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dir_fd)
        with _removed_on_failure(dir_fd, tmp):
            with os.fdopen(out_fd, "w+b") as out:
                reader = _HashingReader(raw, should_stop, st.st_size)
                zsink = _compress_stream(zstandard, reader, out, src, st, level, threads)
                _copy_metadata(out.fileno(), st)
                os.fsync(out.fileno())
                _prove_copy(zstandard, out, src, reader)
            rename_noreplace(dir_fd, tmp, target)
    os.fsync(dir_fd)
    log.info("compress: %s -> %s (%d -> %d bytes, verified)", display(src), display(target),
             st.st_size, zsink.size)
    return CompressedFile(src, target, st.st_size, zsink.size, reader.sha.hexdigest(),
                          zsink.sha.hexdigest(), False)


def _compress_stream(zstandard: Any, reader: _HashingReader, out: BinaryIO, src: str,
                     st: os.stat_result, level: int, threads: int) -> _HashingWriter:
    """Compress what *reader* gives into *out*; the original must not change meanwhile.
    Returns what was written (its length and hash)."""
    zsink = _HashingWriter(out)
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                    write_content_size=True, threads=threads)
    try:
        cctx.copy_stream(reader, zsink, size=st.st_size, read_size=CHUNK, write_size=CHUNK)
    except zstandard.ZstdError as exc:  # "Src size is incorrect": it grew
        raise CompressError(f"{display(src)}: changed while it was being "
                            f"compressed ({exc}); left as it is") from None
    out.flush()
    if reader.size != st.st_size or not _same(os.fstat(reader.fh.fileno()), st):
        raise CompressError(f"{display(src)}: changed while it was being "
                            "compressed; left as it is")
    return zsink


def _prove_copy(zstandard: Any, out: BinaryIO, src: str, original: _HashingReader) -> None:
    """Read back what is on disk and prove it gives the original."""
    out.seek(0)
    try:
        copy = _decompressed(zstandard, out)
    except zstandard.ZstdError as exc:
        raise CompressError(f"{display(src)}: the compressed copy does not read "
                            f"back ({exc}); left as it is") from None
    if copy != original.digest():
        raise CompressError(f"{display(src)}: the compressed copy does not give "
                            "back the original; left as it is")


def _reuse(zstandard: Any, dir_fd: int, src: str, st: os.stat_result,
           target: str) -> CompressedFile:
    """*target* exists already: accept it only when it decompresses to *src* exactly."""
    with _open_at(dir_fd, src) as fh:
        if not _same(os.fstat(fh.fileno()), st):
            raise CompressError(f"{display(src)}: changed since it was judged; left as it is")
        orig = _HashingReader(fh).read_all()
    try:
        with _open_at(dir_fd, target) as zf:
            tst = os.fstat(zf.fileno())
            if not stat.S_ISREG(tst.st_mode):
                raise CompressError(f"{display(target)}: in the way and not a regular file; "
                                    f"{display(src)} left as it is")
            zsha = _HashingReader(zf)
            copy = _decompressed(zstandard, zsha)
    except zstandard.ZstdError as exc:
        raise CompressError(f"{display(target)}: in the way and not a good zstd file ({exc}); "
                            f"{display(src)} left as it is") from None
    if copy != orig.digest():
        raise CompressError(f"{display(target)}: in the way and not a copy of {display(src)}; "
                            "both left as they are")
    log.info("compress: %s: found a verified %s from an interrupted run", display(src),
             display(target))
    return CompressedFile(src, target, orig.size, tst.st_size, orig.sha.hexdigest(),
                          zsha.sha.hexdigest(), True)


def _open_at(dir_fd: int, name: str, buffering: int = -1) -> BinaryIO:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    return os.fdopen(fd, "rb", buffering=buffering)


def _copy_metadata(fd: int, st: os.stat_result) -> None:
    """The original's owner, mode and times on the copy (owner first: chown clears set-id
    bits)."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    """Rename *old* to *new* in one directory, failing (EEXIST) if *new* exists. Where the
    file system lacks ``RENAME_NOREPLACE``, link(2) (which never replaces) then unlink."""
    if libc().renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new),
                        _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(err, os.strerror(err), new)
    os.link(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    os.unlink(old, dir_fd=dir_fd)


# --- decompressing (restore) -----------------------------------------------------------------


def decompress_to(src_dir_fd: int, name: str, dest_dir_fd: int, dest_name: str, *,
                  should_stop: Callable[[], bool] | None = None) -> str:
    """Decompress *name* into *dest_name* of *dest_dir_fd* (never over an existing file):
    temporary file, frame checksum checked by libzstd, the ``.zst``'s mtime and mode, fsync,
    rename. Returns the content's SHA-256 (hex). Raises CompressError or OSError; no
    temporary file is left behind."""
    zstandard = _zstd()
    tmp = f"{TMP_PREFIX}{os.urandom(6).hex()}.restore"
    with _open_at(src_dir_fd, name) as zf:
        st = os.fstat(zf.fileno())
        out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dest_dir_fd)
        with _removed_on_failure(dest_dir_fd, tmp):
            with os.fdopen(out_fd, "wb") as out:
                sink = _HashingWriter(out)
                reader = _HashingReader(zf, should_stop)
                try:
                    zstandard.ZstdDecompressor().copy_stream(reader, sink, read_size=CHUNK,
                                                             write_size=CHUNK)
                except zstandard.ZstdError as exc:
                    raise CompressError(f"{display(name)}: not a good zstd file ({exc})"
                                        ) from None
                out.flush()
                _copy_metadata(out.fileno(), st)
                os.fsync(out.fileno())
            rename_noreplace(dest_dir_fd, tmp, dest_name)
    os.fsync(dest_dir_fd)
    return sink.sha.hexdigest()
