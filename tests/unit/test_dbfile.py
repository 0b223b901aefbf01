"""dbfile: a database is found from the root's descriptor, proven to be the file SQLite opened,
and worked on as its owner."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbkit import (
    ago,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    insert,
    make_db,
    run,
    text,
)

from architect_cleanup import db as dbmod
from architect_cleanup.db import Database, DbError, DbFile, find_databases, glob_below
from architect_cleanup.dbfile import Refused, locate

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (other owners)")


def fs_ids() -> tuple[int, int]:
    """This thread's file-system uid and gid (the 4th field of Uid:/Gid:)."""
    with open("/proc/thread-self/status", encoding="ascii") as fh:
        rows = dict(line.split(":", 1) for line in fh)
    return int(rows["Uid"].split()[3]), int(rows["Gid"].split()[3])


def _old_task(con: sqlite3.Connection) -> None:
    insert(con, "task_queue", [{"task_type": "t", "status": "completed",
                                "completed_at": text(ago(100))}])


def test_a_glob_never_lists_a_directory_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    make_db(root / "data" / "prod" / "architect.db").close()
    make_db(tmp_path / "victim" / "architect.db").close()
    (root / "data" / "qa").symlink_to(tmp_path / "victim")
    (root / "data" / ".hidden").mkdir()
    make_db(root / "data" / ".hidden" / "architect.db").close()
    assert glob_below(str(root), "data/*/architect.db") == ["data/prod/architect.db"]
    assert glob_below(str(root), "data/.*/architect.db") == ["data/.hidden/architect.db"]
    files, _ = find_databases(config(root, database={"paths": ["data/*/*.db"]}))
    assert [f.rel for f in files] == ["data/prod/architect.db"]


def test_a_database_with_a_second_hard_link_is_not_touched(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    outside = make_db(tmp_path / "elsewhere" / "architect.db")
    _old_task(outside)
    (root / "data" / "prod").mkdir(parents=True)
    os.link(tmp_path / "elsewhere" / "architect.db", root / "data" / "prod" / "architect.db")
    stats = run(config(root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.failed and "2 hard links" in t.detail["prod"]["error"]
    assert outside.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 1


def test_a_symlinked_directory_on_the_way_is_refused_before_sqlite_sees_it(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    make_db(tmp_path / "elsewhere" / "architect.db").close()
    (root / "data").mkdir(parents=True)
    (root / "data" / "prod").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Refused, match="a symlink, not followed"):
        locate("data/prod/architect.db", str(root))


def test_a_symlink_inside_the_root_is_followed_and_checked_again(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    make_db(root / "data" / "shared" / "architect.db").close()
    (root / "data" / "prod").mkdir()
    (root / "data" / "prod" / "architect.db").symlink_to("../shared/architect.db")
    p = locate("data/prod/architect.db", str(root))
    try:
        assert p.path == str(root / "data" / "shared" / "architect.db")
    finally:
        p.close()


def test_sqlite_opening_another_file_than_the_one_checked_is_refused_before_any_statement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap between the check and SQLite's open, made deterministic: the checked file is
    replaced right after it was found."""
    root = tmp_path / "srv"
    make_db(root / "data" / "prod" / "architect.db").close()
    swapped = make_db(tmp_path / "other.db")
    _old_task(swapped)
    swapped.close()
    real_locate = dbmod.locate

    def locate_then_swap(rel: str, r: str) -> object:
        p = real_locate(rel, r)
        os.replace(tmp_path / "other.db", root / rel)  # another inode under the same name
        return p

    monkeypatch.setattr(dbmod, "locate", locate_then_swap)
    f = DbFile("prod", "data/prod/architect.db", str(root / "data" / "prod" / "architect.db"))
    with pytest.raises(DbError, match="changed while it was being opened"):
        Database(f, config(root).database, dry_run=False, root=str(root))
    con = sqlite3.connect(root / "data" / "prod" / "architect.db")
    try:
        assert con.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 1
    finally:
        con.close()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's own tmp dir is root's only)."""
    d = Path(tempfile.mkdtemp(prefix="ac-dbfile-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@needs_root
def test_a_database_is_worked_on_as_its_owner_and_the_process_is_root_again_after(
        open_dir: Path, tmp_path: Path) -> None:
    root = open_dir / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")  # WAL
    _old_task(con)
    con.close()
    owner = (54321, 54322)
    for p in (root / "data" / "prod", root / "data" / "prod" / "architect.db"):
        os.chown(p, *owner)
    seen: list[tuple[int, int]] = []
    real_transaction = dbmod._Run._transaction

    def spy(self: dbmod._Run, lo: int, hi: int, *, split: bool) -> float | None:
        seen.append(fs_ids())
        # SQLite created the -wal and -shm at the first read, as the owner
        for side in ("-wal", "-shm"):
            st = os.stat(root / "data" / "prod" / f"architect.db{side}")
            seen.append((st.st_uid, st.st_gid))
        return real_transaction(self, lo, hi, split=split)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dbmod._Run, "_transaction", spy)
        stats = run(config(root), tmp_path, dry_run=False)
    assert stats.targets["tasks"].removed == 1
    assert seen and set(seen) == {owner}
    assert fs_ids() == (0, 0)  # restored after the database was closed


@needs_root
def test_a_database_its_owner_cannot_reach_says_so(tmp_path: Path) -> None:
    root = tmp_path / "srv"  # below pytest's tmp dir, which only root may enter
    make_db(root / "data" / "prod" / "architect.db").close()
    os.chown(root / "data" / "prod" / "architect.db", 54321, 54321)
    stats = run(config(root), tmp_path, dry_run=False)
    assert "as its owner, uid 54321" in stats.targets["tasks"].detail["prod"]["error"]


# --- Database._fail_open, _read_only_fs: a database on a read-only file system ----------------


@pytest.fixture
def readonly_root(open_dir: Path) -> Iterator[Path]:
    """A root on a small tmpfs holding a WAL database (no -wal, no -shm) of another owner,
    remounted read-only, as a path outside the service's ReadWritePaths= is."""
    import subprocess
    root = open_dir / "srv"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", str(root)],
                   check=True)
    try:
        con = make_db(root / "data" / "prod" / "architect.db")
        _old_task(con)
        con.close()
        os.chown(root / "data" / "prod" / "architect.db", 54321, 54321)
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


@needs_root
def test_a_database_on_a_read_only_file_system_says_to_add_it_to_the_writable_paths(
        readonly_root: Path, tmp_path: Path) -> None:
    assert dbmod._read_only_fs(str(readonly_root / "data"))
    assert not dbmod._read_only_fs(str(tmp_path))
    assert not dbmod._read_only_fs(str(tmp_path / "missing"))
    stats = run(config(readonly_root), tmp_path, dry_run=False)
    t = stats.targets["tasks"]
    assert t.status == "failed"
    prod = readonly_root / "data" / "prod"
    assert t.errors == [
        f"data/prod/architect.db: cannot open it: unable to open database file: {prod} is on a "
        "read-only file system (outside the service's writable paths: add it with "
        "`systemctl edit architect-cleanup.service` (ReadWritePaths=))"]


@needs_root
def test_without_a_root_a_read_only_file_system_leaves_sqlites_own_error(
        readonly_root: Path) -> None:
    path = readonly_root / "data" / "prod" / "architect.db"
    with pytest.raises(sqlite3.OperationalError, match=r"^unable to open database file$"):
        Database(DbFile("prod", "architect.db", str(path)), config(readonly_root).database,
                 dry_run=False)


# --- Database._abandon: a swap between the guard's open and SQLite's -------------------------


def test_a_file_swapped_in_after_the_guards_open_is_closed_unchanged_with_every_descriptor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "srv"
    make_db(root / "data" / "prod" / "architect.db").close()
    swapped = make_db(tmp_path / "other.db")
    _old_task(swapped)
    swapped.close()
    real_guard = Database._guard

    def guard_then_swap(self: Database, *args: object) -> object:
        g = real_guard(self, *args)  # type: ignore[arg-type]
        os.replace(tmp_path / "other.db", root / "data" / "prod" / "architect.db")
        return g

    monkeypatch.setattr(Database, "_guard", guard_then_swap)
    f = DbFile("prod", "data/prod/architect.db", str(root / "data" / "prod" / "architect.db"))
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(DbError, match=r"^changed while it was being opened \(open\): SQLite "
                                      "did not open the file that was checked"):
        Database(f, config(root).database, dry_run=False, root=str(root))
    assert set(os.listdir("/proc/self/fd")) <= fds  # the guard's and the directory's closed
    con = make_db(root / "data" / "prod" / "architect.db", "")
    assert con.execute("SELECT count(*) FROM task_queue").fetchone()[0] == 1


# --- Database.__init__: a failed open closes everything it opened -----------------------------


def test_a_file_that_is_not_a_database_fails_its_open_and_leaves_no_descriptor(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    path = root / "data" / "prod" / "architect.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database at all" * 100)
    f = DbFile("prod", "data/prod/architect.db", str(path))
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(sqlite3.DatabaseError, match=r"^file is not a database$"):
        Database(f, config(root).database, dry_run=False, root=str(root))
    assert set(os.listdir("/proc/self/fd")) <= fds
    assert sorted(os.listdir(path.parent)) == ["architect.db"]


def test_a_database_opened_below_the_root_and_closed_leaves_no_descriptor(
        tmp_path: Path) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    _old_task(con)
    con.close()  # (SQLite keeps a closed connection's descriptor while another one has locks)
    cfg = config(root)
    fds = set(os.listdir("/proc/self/fd"))
    assert glob_below(str(root), "data/*/architect.db") == ["data/prod/architect.db"]
    (f,), _ = find_databases(cfg)
    for dry_run in (True, False):
        with Database(f, cfg.database, dry_run=dry_run, root=str(root)) as d:
            assert d.pinned is not None and d.guard is not None
    assert set(os.listdir("/proc/self/fd")) <= fds


# --- Database._prepare: the check after the first read --------------------------------------


def test_a_wal_swapped_after_sqlite_opened_it_is_refused_at_the_first_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap made deterministic: once SQLite has the -wal open (the journal mode's read),
    another file takes its name; the check after the first read finds SQLite's -wal is not
    the directory's."""
    root = tmp_path / "srv"
    path = root / "data" / "prod" / "architect.db"
    make_db(path).close()  # no -wal: SQLite makes one when it first reads
    wal = f"{path}-wal"
    real_prepare = Database._prepare

    def wal_open() -> bool:
        for n in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{n}").endswith("architect.db-wal"):
                    return True
            except OSError:
                continue
        return False

    def prepare_with_swap(self: Database, *args: object) -> None:
        swapped: list[bool] = []

        def swap() -> int:
            if not swapped and wal_open():
                swapped.append(True)
                shutil.copyfile(wal, f"{wal}.copy")
                os.replace(f"{wal}.copy", wal)
            return 0

        self.con.set_progress_handler(swap, 1)
        real_prepare(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Database, "_prepare", prepare_with_swap)
    f = DbFile("prod", "data/prod/architect.db", str(path))
    with pytest.raises(DbError, match=r"^changed while it was being opened \(first read\): "
                                      r"SQLite opened .*architect\.db-wal \(deleted\) instead"):
        Database(f, config(root).database, dry_run=False, root=str(root))
