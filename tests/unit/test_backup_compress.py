"""backup_compress: a backup is compressed, proven, and only then may its original go."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard
from backupkit import (
    backup_with_wal,
    compressible,
    make_db,
    rows_in,
    sha256,
    zstd_decompress,
    zstd_test,
)

from architect_cleanup import backup_compress
from architect_cleanup.backup_compress import (
    CompressError,
    Stopped,
    compress_backup,
    compressed_name,
    decompress_to,
    original_name,
    sibling_of,
    sweep,
)
from architect_cleanup.backup_verify import verify
from architect_cleanup.fs import Root, unlink_all

REPO = Path(__file__).resolve().parents[2]


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --- names -----------------------------------------------------------------------------------


def test_a_compressed_backup_has_the_name_of_the_original_plus_zst() -> None:
    assert compressed_name("architect_20261201_030000.db") == "architect_20261201_030000.db.zst"
    assert original_name("architect_20261201_030000.db.zst") == "architect_20261201_030000.db"
    assert original_name("architect_20261201_030000.db") == "architect_20261201_030000.db"


def test_side_files_map_to_their_backup_compressed_or_not() -> None:
    assert sibling_of("X.db-wal") == ("X.db", "-wal")
    assert sibling_of("X.db-wal.zst") == ("X.db.zst", "-wal")
    assert sibling_of("X.db-journal.zst") == ("X.db.zst", "-journal")
    assert sibling_of("X.db-shm") == ("X.db", "-shm")
    assert sibling_of("X.db.zst") is None and sibling_of("-wal") is None


# --- compressing -----------------------------------------------------------------------------


def test_a_backup_is_compressed_verified_and_its_original_only_handed_back(
        bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    db = make_db(d / "architect_1.db", rows=3000)
    os.chmod(db, 0o640)
    os.utime(db, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    digest = sha256(db)
    res = compress_backup(fd, db.name)
    assert names(d) == ["architect_1.db", "architect_1.db.zst"]  # the original is still there
    zst = d / "architect_1.db.zst"
    zstd_test(zst)
    zstd_decompress(zst, tmp_path / "back.db")
    assert sha256(tmp_path / "back.db") == digest
    st = zst.stat()
    assert st.st_mtime_ns == 1_700_000_000_123_456_789 and stat.S_IMODE(st.st_mode) == 0o640
    assert [n for n, _ in res.remove] == ["architect_1.db"]
    assert res.files[0].sha256 == digest and res.files[0].zst_sha256 == sha256(zst)
    assert res.compressed_size == st.st_size < res.size


def test_the_frame_carries_its_checksum_and_content_size(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    db = make_db(d / "a.db")
    compress_backup(fd, db.name)
    params = zstandard.get_frame_parameters((d / "a.db.zst").read_bytes()[:18])
    assert params.has_checksum and params.content_size == db.stat().st_size


def test_the_caller_removes_the_originals_through_fs_and_the_backup_is_still_restorable(
        bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    db, wal = backup_with_wal(d, rows=3000)
    (d / (db.name + "-shm")).write_bytes(b"\0" * 32768)
    rows = 3000
    res = compress_backup(fd, db.name)
    assert [n for n, _ in res.remove] == [db.name + "-shm", wal.name, db.name]
    assert [f.target for f in res.files] == [wal.name + ".zst", db.name + ".zst"]
    with Root.open(str(d)) as root:
        assert unlink_all(root.dir, list(res.remove)) == [None, None, None]
    assert names(d) == sorted([db.name + ".zst", wal.name + ".zst"])
    for p in d.iterdir():
        zstd_test(p)
    out = tmp_path / "restore"
    out.mkdir()
    zstd_decompress(d / (db.name + ".zst"), out / "r.db")
    zstd_decompress(d / (wal.name + ".zst"), out / "r.db-wal")
    assert rows_in(out / "r.db") == rows  # the rows that lived only in the WAL came back


def test_a_leftover_temporary_file_is_removed_by_the_next_call(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "a.db")
    (d / f"{backup_compress.TMP_PREFIX}1234.a.db.zst").write_bytes(b"half")
    compress_backup(fd, "a.db")
    assert names(d) == ["a.db", "a.db.zst"]


def test_a_verified_copy_left_by_an_interrupted_run_is_reused(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "a.db")
    first = compress_backup(fd, "a.db")
    zst_ino = (d / "a.db.zst").stat().st_ino
    again = compress_backup(fd, "a.db")  # the run died before removing a.db
    assert again.files[0].reused and (d / "a.db.zst").stat().st_ino == zst_ino
    assert again.files[0].sha256 == first.files[0].sha256
    assert again.files[0].zst_sha256 == first.files[0].zst_sha256


def test_a_crash_between_the_side_file_and_the_backup_is_finished_by_the_next_call(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    db, _wal = backup_with_wal(d)
    compress_backup(fd, db.name)
    (d / (db.name + ".zst")).unlink()  # as if killed after the -wal's rename
    res = compress_backup(fd, db.name)
    assert [f.reused for f in res.files] == [True, False]
    zstd_test(d / (db.name + ".zst"))


def test_a_file_in_the_way_that_is_not_the_copy_is_left_and_so_is_the_original(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "a.db")
    (d / "a.db.zst").write_bytes(zstandard.ZstdCompressor().compress(b"another backup"))
    before = sha256(d / "a.db"), sha256(d / "a.db.zst")
    with pytest.raises(CompressError, match=r"not a copy of a\.db"):
        compress_backup(fd, "a.db")
    assert (sha256(d / "a.db"), sha256(d / "a.db.zst")) == before


def test_a_name_taken_during_compression_is_never_replaced(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(compressible(3 << 20))
    calls = []

    def intruder() -> bool:
        calls.append(1)
        if len(calls) == 2:
            (d / "a.bak.zst").write_bytes(b"someone else's file")
        return False

    with pytest.raises(OSError, match="File exists"):
        compress_backup(fd, "a.bak", should_stop=intruder)
    assert (d / "a.bak.zst").read_bytes() == b"someone else's file"
    assert names(d) == ["a.bak", "a.bak.zst"]


@pytest.mark.parametrize("rot", ["a flipped byte", "another valid frame"])
def test_a_copy_that_does_not_read_back_as_the_original_is_never_renamed(
        bdir: tuple[Path, int], monkeypatch: pytest.MonkeyPatch, rot: str) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(compressible(1 << 20))
    real_fsync = os.fsync
    other = zstandard.ZstdCompressor(write_checksum=True).compress(compressible(1 << 20))

    def rotting_fsync(f: int) -> None:  # the disk gives back other bytes than were written
        if stat.S_ISREG(os.fstat(f).st_mode) and os.fstat(f).st_size > 100:
            if rot == "a flipped byte":  # zstd's frame checksum catches this one
                b = os.pread(f, 1, 60)
                os.pwrite(f, bytes([b[0] ^ 1]), 60)
            else:  # only the SHA-256 comparison with the original catches this one
                os.ftruncate(f, 0)
                os.pwrite(f, other, 0)
        real_fsync(f)

    monkeypatch.setattr(backup_compress.os, "fsync", rotting_fsync)
    with pytest.raises(CompressError):
        compress_backup(fd, "a.bak")
    assert names(d) == ["a.bak"]


def test_a_backup_that_changes_while_compressed_is_not_handed_back(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(compressible(3 << 20))

    def writer() -> bool:
        with open(d / "a.bak", "ab") as fh:
            fh.write(b"more")
        return False

    with pytest.raises(CompressError, match="changed"):
        compress_backup(fd, "a.bak", should_stop=writer)
    assert names(d) == ["a.bak"]


def test_a_stop_request_leaves_the_original_and_no_temporary_file(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(compressible(3 << 20))
    digest = sha256(d / "a.bak")
    calls = []
    with pytest.raises(Stopped):
        compress_backup(fd, "a.bak", should_stop=lambda: bool(calls.append(1)) or len(calls) > 1)
    assert names(d) == ["a.bak"] and sha256(d / "a.bak") == digest


def test_compressed_and_side_names_are_refused_as_backups(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"x")
    (d / "a.db-wal").write_bytes(b"x")
    for n in ("a.db.zst", "a.db-wal"):
        with pytest.raises(CompressError, match="not a backup to compress"):
            compress_backup(fd, n)


def test_decompress_to_gives_back_the_original_and_never_overwrites(
        bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    db = make_db(d / "a.db")
    res = compress_backup(fd, "a.db")
    out = tmp_path / "out"
    out.mkdir()
    ofd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert decompress_to(fd, "a.db.zst", ofd, "a.db") == res.files[0].sha256
        assert sha256(out / "a.db") == sha256(db)
        assert (out / "a.db").stat().st_mtime_ns == db.stat().st_mtime_ns
        with pytest.raises(FileExistsError):
            decompress_to(fd, "a.db.zst", ofd, "a.db")
        assert names(out) == ["a.db"]
    finally:
        os.close(ofd)


# --- faults ----------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import os, sys, time
    from architect_cleanup.backup_compress import compress_backup
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    if len(sys.argv) > 3:
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
    from architect_cleanup import backup_compress as bc
    def slow():
        print("chunk", flush=True)
        time.sleep(0.01)
        return False
    def step(name, real):
        def wrapped(*a):
            print(name, flush=True)
            time.sleep(0.2)
            return real(*a)
        return wrapped
    bc.rename_noreplace = step("rename", bc.rename_noreplace)  # verified, not yet renamed
    os.fsync = step("fsync", os.fsync)  # written, not yet read back
    try:
        compress_backup(fd, sys.argv[2], threads=0, should_stop=slow)
    except OSError as exc:
        print("error", exc.errno, flush=True)
        sys.exit(3)
    print("done", flush=True)
""")


def _child(d: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(d), name, *extra],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)


@pytest.mark.parametrize("at", ["chunk 1", "chunk 4", "chunk 9", "fsync 1", "rename 1",
                                "fsync 2"])
def test_a_sigkill_during_compression_leaves_the_original_and_a_rerun_completes(
        bdir: tuple[Path, int], at: str) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(compressible(10 << 20))
    digest = sha256(d / "a.bak")
    child = _child(d, "a.bak")
    assert child.stdout is not None
    step, count = at.split()
    seen = 0
    for line in child.stdout:
        seen += line.strip() == step
        if seen >= int(count):
            break
    else:
        pytest.fail(f"the child never reached {at}")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert sha256(d / "a.bak") == digest
    left = names(d)
    assert left in (["a.bak"], ["a.bak", "a.bak.zst"]) or (
        len(left) == 2 and left[0].startswith(backup_compress.TMP_PREFIX)), left
    res = compress_backup(fd, "a.bak")
    assert names(d) == ["a.bak", "a.bak.zst"]
    zstd_test(d / "a.bak.zst")
    assert res.files[0].sha256 == digest


def test_a_file_size_limit_during_compression_leaves_the_original(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.bak").write_bytes(os.urandom(3 << 20))  # incompressible: the copy needs 3 MiB
    child = _child(d, "a.bak", str(1 << 20))
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 3 and "error 27" in out  # EFBIG
    assert names(d) == ["a.bak"]
    compress_backup(fd, "a.bak")
    zstd_test(d / "a.bak.zst")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_during_compression_leaves_the_original_and_no_temporary_file(
        tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "a.bak").write_bytes(os.urandom(3 << 20))  # 3 MiB + a 3 MiB copy > 4 MiB
        digest = sha256(mnt / "a.bak")
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(OSError) as err:
                compress_backup(fd, "a.bak")
            assert err.value.errno == 28  # ENOSPC
            assert names(mnt) == ["a.bak"] and sha256(mnt / "a.bak") == digest
            with open(mnt / "a.bak", "r+b") as fh:  # room made: the rerun completes
                fh.truncate(1 << 20)
            compress_backup(fd, "a.bak")
            zstd_test(mnt / "a.bak.zst")
        finally:
            os.close(fd)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_verification_of_the_original_and_copy_agree_after_compression(
        bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    make_db(d / "a.db")
    compress_backup(fd, "a.db")
    assert verify(fd, "a.db").good and verify(fd, "a.db.zst").good


def test_sweep_removes_only_its_own_temporary_files(bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / f"{backup_compress.TMP_PREFIX}x.a.db.zst").write_bytes(b"x")
    (d / ".other.tmp").write_bytes(b"x")
    (d / "a.db").write_bytes(b"x")
    assert sweep(fd) == [f"{backup_compress.TMP_PREFIX}x.a.db.zst"]
    assert names(d) == [".other.tmp", "a.db"]

