# The C extension's interface (architect_cleanup/_fsops.c), for mypy.
import os

CHANGED: int
UNDECIDED: int

def listdir_filter(fd: int, tails: tuple[bytes, ...] | None, needles: tuple[bytes, ...]
                   ) -> tuple[list[str], int]: ...
def lstat_many(fd: int, names: list[str]) -> list[os.stat_result | None]: ...
def unlink_many(fd: int, items: list[tuple[str, int, int, int, int]]) -> list[int] | None: ...

class Stat:
    """Prefetch's lstat: every attribute the walk reads of an os.stat_result, made when read
    (typed below as os.stat_result, whose place it takes in fs.Dir.known)."""
    st_mode: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime: float
    st_mtime: float
    st_ctime: float
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blksize: int
    st_blocks: int
    st_rdev: int
    def full(self) -> os.stat_result: ...

class Prefetch:
    def __init__(self) -> None: ...
    def submit(self, fd: int, classes: tuple[tuple[tuple[bytes, ...], tuple[bytes, ...],
                                                   tuple[bytes, ...] | None], ...] | None
               ) -> None: ...
    def take(self) -> tuple[list[tuple[int, list[str]]], dict[str, os.stat_result | None],
                            int]: ...
    def close(self) -> None: ...
