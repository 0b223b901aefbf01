"""backup_verify: a backup counts only when known good, and checking it changes nothing."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import struct
from pathlib import Path

import pytest
import zstandard
from backupkit import (
    backup_with_wal,
    corrupt_db,
    flip_byte,
    listing,
    make_db,
)

from architect_cleanup import backup_verify
from architect_cleanup.backup_verify import State, VerifyCache, verify, verify_cached

# --- SQLite ----------------------------------------------------------------------------------


def test_a_good_database_backup_is_good_by_quick_check(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "architect_1.db")
    r = verify(fd, "architect_1.db")
    assert (r.state, r.kind, r.detail) == (State.GOOD, "sqlite", "quick_check: ok")


def test_the_full_check_runs_integrity_check(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "architect_1.db")
    r = verify(fd, "architect_1.db", check="full")
    assert r.good and r.detail == "integrity_check: ok" and r.check == "full"


def test_checking_a_database_without_side_files_changes_nothing_in_its_directory(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "architect_1.db", wal=True)  # WAL mode in its header, no -wal beside it
    before = listing(d)
    assert verify(fd, "architect_1.db").good
    assert listing(d) == before  # no -shm, no -wal, no journal, mtime unchanged


def test_a_backup_with_its_wal_is_checked_as_a_restore_gives_it_and_left_untouched(
        bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    db, wal = backup_with_wal(d)
    before = listing(d)
    wal_bytes = wal.read_bytes()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    r = verify(fd, db.name, scratch=str(scratch))
    assert r.good and r.detail == "quick_check: ok (with its wal)"
    assert listing(d) == before and wal.read_bytes() == wal_bytes  # no -shm, no checkpoint
    assert list(scratch.iterdir()) == []  # the private copy is gone


def test_a_wal_that_breaks_the_database_makes_the_backup_corrupt(
        bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    db, wal = backup_with_wal(d, rows=4000)
    # a frame's page content damaged, its checksum no longer matching: SQLite ignores the
    # WAL from there on, so the rows in it are gone: quick_check of the database alone
    # would pass; here the page the WAL still gives is garbage
    data = bytearray(wal.read_bytes())
    page = 4096
    frame = 24 + page
    for i in range(2, min(6, (len(data) - 32) // frame)):
        start = 32 + i * frame + 24
        data[start + 100:start + 400] = os.urandom(300)
    # re-stamp the damaged frames' checksums so SQLite applies them (what a torn copy gives)
    wal.write_bytes(_rechecksum(bytes(data), page))
    assert verify(fd, db.name, sides={}).good  # the database alone is fine
    r = verify(fd, db.name, scratch=str(tmp_path))
    assert r.state is State.CORRUPT, r


def _rechecksum(wal: bytes, page: int) -> bytes:
    """Recompute a WAL's frame checksums (SQLite's algorithm, big-endian magic)."""
    magic = struct.unpack(">I", wal[:4])[0]
    big = magic & 1
    fmt = ">" if big else "<"

    def cksum(buf: bytes, s0: int, s1: int) -> tuple[int, int]:
        words = struct.unpack(f"{fmt}{len(buf) // 4}I", buf)
        for i in range(0, len(words), 2):
            s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
            s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
        return s0, s1

    out = bytearray(wal)
    s0, s1 = struct.unpack(">II", wal[24:32])
    off = 32
    while off + 24 + page <= len(out):
        s0, s1 = cksum(bytes(out[off:off + 8]), s0, s1)
        s0, s1 = cksum(bytes(out[off + 24:off + 24 + page]), s0, s1)
        out[off + 16:off + 24] = struct.pack(">II", s0, s1)
        off += 24 + page
    return bytes(out)


def test_a_damaged_database_is_corrupt_with_sqlites_words(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "architect_1.db", rows=5000)
    corrupt_db(d / "architect_1.db")
    r = verify(fd, "architect_1.db")
    assert r.state is State.CORRUPT
    assert r.detail.startswith(("quick_check: ", "cannot open"))


def test_a_truncated_database_is_corrupt(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    p = make_db(d / "architect_1.db", rows=5000)
    os.truncate(p, p.stat().st_size // 2)
    assert verify(fd, "architect_1.db").state is State.CORRUPT


def test_a_db_file_that_is_no_database_is_corrupt(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "architect_1.db").write_text("half a copy\n")
    r = verify(fd, "architect_1.db")
    assert (r.state, r.detail) == (State.CORRUPT, "not a SQLite database (no SQLite header)")


def test_an_empty_db_file_is_corrupt(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "architect_1.db").write_bytes(b"")
    assert verify(fd, "architect_1.db").state is State.CORRUPT


# --- streams and others ----------------------------------------------------------------------


def test_a_gzip_backup_is_good_by_its_crc(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.gz").write_bytes(gzip.compress(os.urandom(100_000)))
    r = verify(fd, "a.db.gz")
    assert (r.state, r.kind) == (State.GOOD, "gzip")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_gzip_backup_is_corrupt(bdir: tuple[Path, int], damage: str) -> None:
    d, fd = bdir
    p = d / "a.db.gz"
    p.write_bytes(gzip.compress(os.urandom(100_000)))
    if damage == "flip":
        flip_byte(p)
    else:
        os.truncate(p, p.stat().st_size - 10)
    r = verify(fd, "a.db.gz")
    assert (r.state, r.kind) == (State.CORRUPT, "gzip"), r


def test_a_zstd_backup_is_good_by_its_frame_checksum(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(
        zstandard.ZstdCompressor(write_checksum=True).compress(os.urandom(100_000)))
    r = verify(fd, "a.db.zst")
    assert (r.state, r.detail) == (State.GOOD, "zstd: frame checksum ok")


def test_a_zstd_backup_with_a_flipped_byte_is_corrupt(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    p = d / "a.db.zst"
    p.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(b"abc" * 100_000))
    flip_byte(p, p.stat().st_size - 6)
    assert verify(fd, "a.db.zst").state is State.CORRUPT


def test_a_zstd_frame_without_checksum_is_unverified(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(
        zstandard.ZstdCompressor(write_checksum=False).compress(b"abc" * 1000))
    r = verify(fd, "a.db.zst")
    assert r.state is State.UNVERIFIED and "no checksum" in r.detail


def test_other_files_are_unverified(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(b"whatever")
    assert verify(fd, "a.bak").state is State.UNVERIFIED


def test_check_off_verifies_nothing(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "architect_1.db").write_text("not a db")
    assert verify(fd, "architect_1.db", check="off").state is State.UNVERIFIED


def test_a_symlink_named_like_a_backup_is_not_followed(bdir: tuple[Path, int],
                                                       tmp_path: Path) -> None:
    d, fd = bdir
    make_db(tmp_path / "elsewhere.db")
    (d / "architect_1.db").symlink_to(tmp_path / "elsewhere.db")
    r = verify(fd, "architect_1.db")
    assert r.state is State.UNVERIFIED and "cannot open" in r.detail


# --- cache -----------------------------------------------------------------------------------


def test_a_verdict_is_reused_for_the_same_file_and_not_after_it_changes(
        bdir: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, fd = bdir
    make_db(d / "architect_1.db")
    calls: list[str] = []
    real = backup_verify.verify

    def counting(dir_fd: int, name: str, **kw: object) -> backup_verify.Verification:
        calls.append(name)
        return real(dir_fd, name, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_verify, "verify", counting)
    cache = VerifyCache(str(tmp_path / "state"))
    path = str(d / "architect_1.db")
    assert verify_cached(cache, fd, "architect_1.db", path).good
    assert verify_cached(cache, fd, "architect_1.db", path).good
    assert calls == ["architect_1.db"]
    cache.save()
    again = VerifyCache(str(tmp_path / "state"))  # from disk
    assert verify_cached(again, fd, "architect_1.db", path).good
    assert calls == ["architect_1.db"]
    corrupt_db(d / "architect_1.db")  # new mtime, ctime
    assert verify_cached(again, fd, "architect_1.db", path).state is State.CORRUPT
    assert len(calls) == 2


def test_a_quick_verdict_does_not_answer_a_full_check(bdir: tuple[Path, int],
                                                      tmp_path: Path) -> None:
    d, fd = bdir
    make_db(d / "a.db")
    st = os.stat(d / "a.db")
    cache = VerifyCache(str(tmp_path))
    cache.store(str(d / "a.db"), st, verify(fd, "a.db", check="quick"))
    assert cache.lookup(st, "quick") is not None
    assert cache.lookup(st, "full") is None
    cache.store(str(d / "a.db"), st, verify(fd, "a.db", check="full"))
    assert cache.lookup(st, "quick") is not None


def test_a_new_wal_beside_the_backup_makes_the_verdict_stale(bdir: tuple[Path, int],
                                                             tmp_path: Path) -> None:
    d, fd = bdir
    db, wal = backup_with_wal(d)
    cache = VerifyCache(str(tmp_path / "state"))
    assert verify_cached(cache, fd, db.name, str(db), scratch=str(tmp_path)).good
    st = os.stat(db)
    sides = backup_verify.side_files(fd, db.name)
    assert cache.lookup(st, "quick", sides) is not None
    wal.write_bytes(b"\0" * 100)
    assert cache.lookup(st, "quick", backup_verify.side_files(fd, db.name)) is None


def test_the_cache_drops_vanished_files_and_stays_bounded(
        bdir: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, fd = bdir
    monkeypatch.setattr(backup_verify, "CACHE_LIMIT", 3)
    cache = VerifyCache(str(tmp_path / "state"))
    for i in range(5):
        (d / f"{i}.bak").write_bytes(b"x")
        r = verify(fd, f"{i}.bak")
        cache.store(str(d / f"{i}.bak"), os.stat(d / f"{i}.bak"), r, now=1000.0 + i)
    (d / "4.bak").unlink()
    cache.save()
    doc = json.loads((tmp_path / "state" / backup_verify.CACHE_FILE).read_text())
    assert sorted(e["path"] for e in doc["entries"].values()) == [
        str(d / "1.bak"), str(d / "2.bak"), str(d / "3.bak")]


def test_a_corrupt_cache_file_is_an_empty_cache(tmp_path: Path) -> None:
    (tmp_path / backup_verify.CACHE_FILE).write_text("{not json")
    cache = VerifyCache(str(tmp_path))
    assert len(cache) == 0 and cache.problem is not None


def test_the_cache_is_written_atomically_and_sweeps_leftover_temporary_files(
        bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    state = tmp_path / "state"
    state.mkdir()
    (state / ".backup-verify.deadbeef.tmp").write_text("left by a crash")
    (d / "a.bak").write_bytes(b"x")
    cache = VerifyCache(str(state))
    cache.store(str(d / "a.bak"), os.stat(d / "a.bak"), verify(fd, "a.bak"))
    cache.save()
    assert sorted(p.name for p in state.iterdir()) == [backup_verify.CACHE_FILE]


def test_a_change_during_the_check_gives_no_verdict_and_is_not_cached(
        bdir: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, fd = bdir
    make_db(d / "a.db")
    real = backup_verify._run_check

    def touching(uri: str, pragma: str, check: backup_verify.Check
                 ) -> backup_verify.Verification:
        out = real(uri, pragma, check)
        with sqlite3.connect(d / "a.db") as con:  # the backup is written meanwhile
            con.execute("INSERT INTO t(v) VALUES ('late')")
        return out

    monkeypatch.setattr(backup_verify, "_run_check", touching)
    cache = VerifyCache(str(tmp_path / "state"))
    r = verify_cached(cache, fd, "a.db", str(d / "a.db"))
    assert (r.state, r.detail) == (State.UNVERIFIED, "changed while it was being checked")
    assert len(cache) == 0
