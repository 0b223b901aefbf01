"""Backups as the dashboard makes them, for the backup verify/compress/offload tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path


def make_db(path: Path, rows: int = 2000, *, wal: bool = False) -> Path:
    """A database with a table and an index; with *wal*, left in WAL mode."""
    con = sqlite3.connect(path)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    con.execute("CREATE INDEX IF NOT EXISTS t_v ON t(v)")
    with con:
        con.executemany("INSERT INTO t(v) VALUES (?)",
                        ((hashlib.sha256(str(i).encode()).hexdigest() * 3,)
                         for i in range(rows)))
    con.close()
    return path


def backup_with_wal(dir_: Path, name: str = "architect_20261201_030000.db",
                    rows: int = 2000) -> tuple[Path, Path]:
    """A backup copied the way the dashboard does it, while the app holds the database open
    with committed rows still in its WAL: ``name`` and ``name-wal``. The rows exist only in
    the WAL copy."""
    live = dir_ / ".live" / "live.db"
    live.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(live)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with con:
        con.executemany("INSERT INTO t(v) VALUES (?)", ((f"row {i}" * 10,) for i in range(rows)))
    db, wal = dir_ / name, dir_ / (name + "-wal")
    shutil.copyfile(live, db)
    shutil.copyfile(str(live) + "-wal", wal)
    con.close()
    shutil.rmtree(live.parent)
    return db, wal


def corrupt_db(path: Path) -> None:
    """Overwrite the middle of a database's pages with garbage (header intact)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(4096 * 2))


def flip_byte(path: Path, offset: int | None = None) -> None:
    size = path.stat().st_size
    off = size // 2 if offset is None else offset
    with open(path, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)
        fh.seek(off)
        fh.write(bytes([b[0] ^ 0xFF]))


def listing(dir_: Path) -> dict[str, tuple[int, int, int]]:
    """Every name in *dir_* with (inode, size, mtime_ns): what must not change."""
    return {p.name: (p.lstat().st_ino, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in dir_.iterdir()}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def zstd_test(path: Path) -> None:
    """The real ``zstd -t``: raises when the file is not a good zstd file."""
    subprocess.run(["zstd", "-q", "-t", str(path)], check=True, capture_output=True)


def zstd_decompress(path: Path, dest: Path) -> None:
    subprocess.run(["zstd", "-q", "-d", "-f", str(path), "-o", str(dest)], check=True,
                   capture_output=True)


def rows_in(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        con.close()


def compressible(size: int) -> bytes:
    """Data that compresses like a database does (some repetition, some noise)."""
    block = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() + b"\0" * 32
                     for i in range(1024))
    out = bytearray()
    i = 0
    while len(out) < size:
        out += block[: size - len(out)]
        out += os.urandom(min(64, max(0, size - len(out))))
        i += 1
    return bytes(out[:size])
