"""The lost-POSIX-lock hazard (dblocks.py): a dashboard that copied its own live database has
no lock on it any more, and our close must still never unlink its ``-wal``/``-shm``.

The writer is a real process (tests/wal_writer.py: WAL, a pool of connections used by threads,
``shutil.copy2`` of its own file at start); the run is a real worker run. The same test with
the guard switched off (``dblocks.PROTECT``, a test-only switch) must find the damage, which
shows that the test can fail.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbkit import DASHBOARD_SQL, ago, config, held_by, run, text
from wal_writer import Writer

from architect_cleanup import dblocks
from architect_cleanup.cli import main
from architect_cleanup.db import Database, DbError, DbFile
from architect_cleanup.dblocks import LockWatch, inspect, lock_key
from architect_cleanup.journal import MESSAGE_IDS
from architect_cleanup.targets.base import Interrupted


def make_dashboard_db(path: Path, *, tasks: int, errors: int = 0,
                      journal: str = "wal") -> None:
    """A dashboard database with *tasks* finished tasks and *errors* resolved errors old
    enough to be purged; the connection is closed (the test process holds nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA journal_mode={journal}")
        con.executescript(DASHBOARD_SQL)
        con.execute("BEGIN")
        done = text(ago(30))
        con.executemany("INSERT INTO task_queue (task_type, task_data, status, created_at, "
                        "completed_at) VALUES ('t', 'old', 'completed', ?, ?)",
                        [(done, done)] * tasks)
        con.executemany("INSERT INTO errors (error_type, message, status, first_seen, "
                        "resolved_at) VALUES ('e', 'old', 'resolved', ?, ?)",
                        [(text(ago(90)), text(ago(60)))] * errors)
        con.execute("COMMIT")
    finally:
        con.close()


@pytest.fixture
def writer_at(tmp_path: Path) -> Iterator[Any]:
    started: list[Writer] = []

    def start(db: Path) -> Writer:
        w = Writer(db, tmp_path / f"report-{len(started)}.json")
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def our_locks(path: Path) -> list[str]:
    """The OFD locks this process holds on *path* (only the guard takes them): the ``lock:``
    lines of its descriptors' fdinfo, which name the locks of that open file description
    alone. (/proc/locks would also list another process's: an OFD lock shows no PID.)"""
    key = lock_key(os.stat(path))
    out = []
    for fd in our_fds(path):
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as fh:
            out += [line for line in fh if line.startswith("lock:") and "OFDLCK" in line
                    and key in line.split()]
    return out


def our_fds(path: Path) -> list[int]:
    """This process's descriptors of *path*."""
    st = os.stat(path)
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            s = os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
            out.append(int(fd))
    return out


# --- the writer test -------------------------------------------------------------------------


@pytest.mark.parametrize("protect", [True, False], ids=["guarded", "guard-off"])
def test_a_purge_never_breaks_a_writer_that_lost_its_locks(
        tmp_path: Path, writer_at: Any, monkeypatch: pytest.MonkeyPatch, protect: bool) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=6000, errors=2000)
    cfg = config(tmp_path, environments=["prod"])
    monkeypatch.setattr(dblocks, "PROTECT", protect)
    writer = writer_at(db)
    time.sleep(0.1)
    try:
        stats = run(cfg, tmp_path, dry_run=False, only=("tasks", "errors"))
        time.sleep(0.2)  # the writer goes on after the run, as the dashboard does
    finally:
        rep = writer.stop()
    print(f"guard {'on' if protect else 'off'}: {rep.figures()}")
    if protect:
        assert stats.tasks_deleted == 6000 and stats.errors_deleted == 2000
        assert rep.damage() == []
        assert rep.ok > 20  # it really wrote during the run
        lost = stats.dashboard_locks["lost"]
        assert [h["pid"] for h in lost] == [writer.pid]
    else:
        # The same run without the guard unlinks the writer's -wal/-shm: the test sees it.
        # (The run's own figures are not asserted: it may lose its deletes too.)
        assert rep.damage() != []


# --- the guard -------------------------------------------------------------------------------


def test_the_guard_is_held_while_a_database_is_open_and_gone_after_close(
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10)
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with Database(f, cfg.database, dry_run=True, root=str(tmp_path)) as d:
        assert len(our_locks(db)) == 1
        assert d.guard is not None and d.guard.fd in our_fds(db)
    assert our_locks(db) == [] and our_fds(db) == []


def test_a_dry_run_close_leaves_the_wal_of_a_writer_that_lost_its_locks(
        tmp_path: Path, writer_at: Any) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=100)
    cfg = config(tmp_path, environments=["prod"])
    writer = writer_at(db)
    stats = run(cfg, tmp_path, dry_run=True, only=("tasks",))
    time.sleep(0.05)
    rep = writer.stop()
    assert stats.tasks_deleted == 100
    assert rep.damage() == []


def _sides(db: Path) -> list[str]:
    return sorted(s for s in ("-wal", "-shm") if Path(f"{db}{s}").exists())


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry", "real"])
def test_a_run_alone_removes_the_side_files_sqlite_made_for_it(
        tmp_path: Path, dry_run: bool) -> None:
    # No -wal/-shm before the run and nobody else has the database open: SQLite made them
    # for our connection, and its own close removes them (a dry run leaves the tree as found).
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10)
    assert _sides(db) == []
    run(config(tmp_path, environments=["prod"]), tmp_path, dry_run=dry_run, only=("tasks",))
    assert _sides(db) == []


def test_side_files_found_beside_the_database_are_never_removed(tmp_path: Path) -> None:
    # A dashboard that stopped without closing leaves its -wal/-shm: not ours to remove.
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10)
    subprocess.run([sys.executable, "-c",
                    "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute('CREATE TABLE IF NOT EXISTS x (y)'); c.commit(); os._exit(0)",
                    str(db)], check=True)
    assert _sides(db) == ["-shm", "-wal"]
    run(config(tmp_path, environments=["prod"]), tmp_path, dry_run=True, only=("tasks",))
    assert _sides(db) == ["-shm", "-wal"]


def test_side_files_stay_while_another_process_has_the_database_open(tmp_path: Path) -> None:
    # No side files at the open, but a process (whose locks we cannot judge) has the file
    # open at the close: the guard stays to the end, and SQLite leaves them.
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; f = open(sys.argv[1], 'rb'); "
                               "print('open', flush=True); time.sleep(60)", str(db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        run(config(tmp_path, environments=["prod"]), tmp_path, dry_run=True, only=("tasks",))
        assert _sides(db) == ["-shm", "-wal"]
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupted_purge_closes_the_connection_before_the_guard(
        tmp_path: Path, writer_at: Any) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=3000)
    cfg = config(tmp_path, environments=["prod"], database={"batch_size": 100})
    writer = writer_at(db)
    calls = [0]

    def stop_soon() -> bool:
        calls[0] += 1
        return calls[0] > 5

    stats = run(cfg, tmp_path, dry_run=False, only=("tasks",), should_stop=stop_soon)
    rep = writer.stop()
    assert stats.targets["tasks"].message == "stopped on request"
    assert 0 < stats.tasks_deleted < 3000
    assert rep.damage() == []
    assert our_locks(db) == [] and our_fds(db) == []


def test_a_database_that_fails_to_open_leaves_no_guard_behind(tmp_path: Path) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database" * 100)
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with pytest.raises(sqlite3.DatabaseError):
        Database(f, cfg.database, dry_run=False, root=str(tmp_path))
    assert our_locks(db) == [] and our_fds(db) == []


def test_the_guard_stays_open_until_the_end_of_an_exception_inside_the_with_block(
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10)
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with pytest.raises(Interrupted), Database(f, cfg.database, dry_run=False,
                                              root=str(tmp_path)):
        raise Interrupted("stopped on request")
    assert our_locks(db) == [] and our_fds(db) == []
    # As the last user, the -wal/-shm SQLite made for us are removed by its own close.
    assert _sides(db) == []


def test_a_rollback_journal_database_lets_other_writers_commit_while_open(
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10, journal="delete")
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with Database(f, cfg.database, dry_run=False, root=str(tmp_path)) as d:
        assert d.journal_mode == "delete"
        assert our_locks(db) == []  # dropped: a commit needs the range exclusively
        other = sqlite3.connect(db, timeout=0.2, isolation_level=None)
        try:
            other.execute("INSERT INTO errors (error_type, message) VALUES ('x', 'y')")
        finally:
            other.close()


_READER = """import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('BEGIN'); c.execute('SELECT count(*) FROM task_queue').fetchone()
print('reading', flush=True); sys.stdin.readline(); c.execute('COMMIT')
"""
_WRITER = """import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=3.0, isolation_level=None)
c.execute('BEGIN IMMEDIATE')
c.execute("INSERT INTO errors (error_type, message) VALUES ('dash', 'dash')")
print('committing', flush=True)
try:
    c.execute('COMMIT')
    print('committed', flush=True)
except sqlite3.Error as exc:
    print('failed:', exc, flush=True)
"""


def test_opening_a_rollback_journal_database_never_deadlocks_a_committing_writer(
        tmp_path: Path) -> None:
    """A dashboard's COMMIT holds PENDING and waits for the readers to leave the SHARED
    range; our open, arriving then, waits for PENDING to go at its first read. Had the guard
    locked the SHARED range before that read, the COMMIT could never get it: both would wait
    out their busy timeouts and one would fail (the reliability suite saw an insert wait 5 s
    and fail). A rollback-journal file's header says so, and the guard takes no lock."""
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10, journal="delete")
    cfg = config(tmp_path, environments=["prod"], database={"busy_timeout": "3s"})
    f = DbFile("prod", "data/prod/architect.db", str(db))
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    writer = None
    opened: list[tuple[str, bool, int] | BaseException] = []
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdout.readline().strip() == "committing"
        time.sleep(0.3)  # the writer holds PENDING and waits for the reader

        def open_db() -> None:
            try:
                with Database(f, cfg.database, dry_run=False, root=str(tmp_path)) as d:
                    assert d.guard is not None
                    opened.append((d.journal_mode, d.guard.locked, d.con.execute(
                        "SELECT count(*) FROM errors WHERE message = 'dash'").fetchone()[0]))
            except BaseException as exc:  # reported below
                opened.append(exc)

        t = threading.Thread(target=open_db)
        t.start()
        time.sleep(0.3)  # our open waits at its first read
        assert reader.stdin is not None
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert writer.stdout.readline().strip() == "committed"
        t.join(10)
    finally:
        for p in (reader, writer):
            if p is not None:
                p.kill()
                p.wait(10)
    assert opened == [("delete", False, 1)]


@pytest.mark.parametrize(("head", "rollback"), [
    (b"SQLite format 3\0" + b"\x10\x00\x01\x01", True),
    (b"SQLite format 3\0" + b"\x10\x00\x02\x02", False),  # WAL
    (b"SQLite format 4\0" + b"\x10\x00\x01\x01", False),  # not SQLite's magic
    (b"SQLite format 3\0" + b"\x10\x00\x01", False),  # short
    (b"", False),
])
def test_only_a_sqlite_header_with_rollback_versions_says_rollback(
        tmp_path: Path, head: bytes, rollback: bool) -> None:
    path = tmp_path / "f"
    path.write_bytes(head + b"\x00" * (100 - len(head)) if len(head) == 20 else head)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert dblocks.header_says_rollback(fd) is rollback
    finally:
        os.close(fd)


def test_a_rollback_journal_database_with_a_wal_beside_it_is_guarded_from_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite opens a -wal it finds whatever the header says (and deletes it at the close
    of its last connection, even one that failed at its first read): the guard locks before
    the connection opens, as for a WAL database."""
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=1, journal="delete")
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    Path(f"{db}-wal").write_bytes(b"not a wal header yet")
    at_open: list[bool] = []
    prepare = Database._prepare

    def spy(self: Database, guard: Any, *args: Any) -> None:
        at_open.append(guard.locked)
        prepare(self, guard, *args)

    monkeypatch.setattr(Database, "_prepare", spy)
    with Database(f, cfg.database, dry_run=True, root=str(tmp_path)) as d:
        assert d.journal_mode == "wal" and d.guard is not None and d.guard.locked
    assert at_open == [True]
    assert Path(f"{db}-wal").exists()  # not ours to delete


def test_a_database_whose_header_turned_to_wal_during_the_open_is_guarded_from_then_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard goes by the header it read; when SQLite then finds the file in WAL mode
    (the dashboard switched it in between), the lock is taken before anything else."""
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10)
    monkeypatch.setattr("architect_cleanup.db.header_says_rollback", lambda _fd: True)
    monkeypatch.setattr(Database, "_side_stat", lambda *_a: None)
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with Database(f, cfg.database, dry_run=False, root=str(tmp_path)) as d:
        assert d.journal_mode == "wal"
        assert d.guard is not None and d.guard.locked
        assert our_locks(db) != []


def test_a_late_guard_that_cannot_lock_fails_the_database_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=1)
    monkeypatch.setattr("architect_cleanup.db.header_says_rollback", lambda _fd: True)
    monkeypatch.setattr(Database, "_side_stat", lambda *_a: None)

    def refuse(_self: object, _wait: float) -> None:
        raise dblocks.GuardError("the reason")

    monkeypatch.setattr(dblocks.Guard, "lock", refuse)
    cfg = config(tmp_path, environments=["prod"])
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with pytest.raises(DbError, match=r"^the reason$"):
        Database(f, cfg.database, dry_run=True, root=str(tmp_path))
    assert our_fds(db) == []


_EXCLUSIVE_WAL = """import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA locking_mode = EXCLUSIVE')
c.execute("INSERT INTO errors (error_type, message) VALUES ('x', 'y')")
print('held', flush=True)
time.sleep(float(sys.argv[2]))
c.close()
time.sleep(30)
"""


@pytest.mark.parametrize(("hold", "busy", "opens"), [(0.3, "5s", True), (30, "1s", False)])
def test_the_guard_of_a_wal_database_waits_up_to_busy_timeout_for_an_exclusive_holder(
        tmp_path: Path, hold: float, busy: str, opens: bool) -> None:
    """A WAL connection in exclusive locking mode (or one closing as the last) holds the
    SHARED range exclusively: the guard retries until busy_timeout, then fails clearly."""
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=1)
    cfg = config(tmp_path, environments=["prod"], database={"busy_timeout": busy})
    f = DbFile("prod", "data/prod/architect.db", str(db))
    with held_by(_EXCLUSIVE_WAL, str(db), str(hold)):
        if opens:
            with Database(f, cfg.database, dry_run=True, root=str(tmp_path)) as d:
                assert d.journal_mode == "wal" and d.guard is not None and d.guard.locked
        else:
            with pytest.raises(DbError, match=r"^database is locked: another connection "
                                              r"held it exclusively longer than busy_timeout$"):
                Database(f, cfg.database, dry_run=True, root=str(tmp_path))
    assert our_fds(db) == []


def test_a_database_locked_exclusively_past_busy_timeout_is_a_clear_error(
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=10, journal="delete")
    cfg = config(tmp_path, environments=["prod"], database={"busy_timeout": "1s"})
    with held_by("import sqlite3, sys, time\n"
                 f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                 "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(30)"):
        f = DbFile("prod", "data/prod/architect.db", str(db))
        # SQLite's own busy timeout at the first read (the guard takes no lock on a
        # rollback-journal file); the run reports it in these words
        with pytest.raises(DbError, match=r"^database is locked: another connection held "
                                          r"it longer than busy_timeout$"):
            Database(f, cfg.database, dry_run=False, root=str(tmp_path))
    assert our_fds(db) == []


# --- finding lost locks ----------------------------------------------------------------------


def test_inspect_names_the_writer_that_lost_its_locks_and_not_a_healthy_one(
        tmp_path: Path, writer_at: Any) -> None:
    lost_db = tmp_path / "lost.db"
    make_dashboard_db(lost_db, tasks=1)
    healthy_db = tmp_path / "healthy.db"
    make_dashboard_db(healthy_db, tasks=1)
    writer = writer_at(lost_db)
    healthy = _healthy(healthy_db)
    try:
        found = inspect("lost", os.stat(lost_db), os.stat(str(lost_db) + "-shm"))
        assert [h.pid for h in found.lost] == [writer.pid]
        assert "wal_writer.py" in found.lost[0].command
        ok = inspect("healthy", os.stat(healthy_db), os.stat(str(healthy_db) + "-shm"))
        assert ok.lost == [] and ok.unknown == []
    finally:
        healthy.kill()
        healthy.wait(10)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs the scan as another user)")
def test_processes_that_cannot_be_inspected_are_unknown_not_healthy(
        tmp_path: Path, writer_at: Any) -> None:
    db = tmp_path / "lost.db"
    make_dashboard_db(db, tasks=1)
    writer_at(db)
    st, shm = os.stat(db), os.stat(str(db) + "-shm")
    script = ("import json, os, sys\n"
              "from architect_cleanup.dblocks import inspect\n"
              "st, shm = (os.stat_result(json.loads(a)) for a in sys.argv[1:3])\n"
              "f = inspect('x', st, shm)\n"
              "print(json.dumps([len(f.lost), len(f.unknown) + f.unknown_more]))\n")
    # The package staged where that user can read it (a checkout may be root's only).
    stage = Path(tempfile.mkdtemp(prefix="ac-locks-", dir="/tmp"))
    try:
        stage.chmod(0o755)
        shutil.copytree(Path(dblocks.__file__).parent, stage / "architect_cleanup",
                        ignore=shutil.ignore_patterns("__pycache__"))
        proc = subprocess.run(
            ["/usr/bin/python3", "-c", script, json.dumps(list(st)), json.dumps(list(shm))],
            user=65534, group=65534, extra_groups=[], capture_output=True, text=True,
            env={"PYTHONPATH": str(stage), "PYTHONDONTWRITEBYTECODE": "1"}, cwd="/",
            check=False, timeout=60)
    finally:
        shutil.rmtree(stage)
    assert proc.returncode == 0, proc.stderr
    lost, unknown = json.loads(proc.stdout)
    assert lost == 0 and unknown >= 1  # root's writer cannot be looked at: unknown


def test_a_lost_lock_is_warned_once_per_run_and_shown_in_json_state_and_status(
        tmp_path: Path, writer_at: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=50, errors=50)
    cfg = config(tmp_path, environments=["prod"])
    writer = writer_at(db)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.WARNING)
    logging.getLogger("architect_cleanup.dblocks").addHandler(handler)
    try:
        stats = run(cfg, tmp_path, dry_run=False, only=("tasks", "errors"))
    finally:
        logging.getLogger("architect_cleanup.dblocks").removeHandler(handler)
        writer.stop()
    warned = [r for r in records
              if getattr(r, "MESSAGE_ID", None) == MESSAGE_IDS["db_lock_lost"].hex]
    assert len(warned) == 1  # tasks, errors and the activity log open it: one warning
    assert writer.pid == warned[0].CLEANUP_PID
    assert "wal_writer.py" in warned[0].CLEANUP_COMMAND
    doc = stats.to_dict()["dashboard_locks"]
    assert [(h["pid"], h["state"], h["database"]) for h in doc["lost"]] == [
        (writer.pid, "lost", "prod")]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["last_run"]["dashboard_locks"]["lost"][0]["pid"] == writer.pid
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    out = io.StringIO()
    assert main(["status"], out=out) == 0
    assert f"PID {writer.pid} (" in out.getvalue()
    assert "open without its SQLite locks" in out.getvalue()
    out = io.StringIO()
    assert main(["status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["dashboard_locks"]["lost"][0]["pid"] == writer.pid


def test_a_run_without_a_lost_lock_reports_none(tmp_path: Path) -> None:
    db = tmp_path / "data" / "prod" / "architect.db"
    make_dashboard_db(db, tasks=5)
    cfg = config(tmp_path, environments=["prod"])
    stats = run(cfg, tmp_path, dry_run=False, only=("tasks",))
    assert stats.to_dict()["dashboard_locks"] == {"lost": [], "unknown": [],
                                                  "unknown_more": 0}


def test_lock_watch_inspects_each_database_once(tmp_path: Path, writer_at: Any) -> None:
    db = tmp_path / "lost.db"
    make_dashboard_db(db, tasks=1)
    writer_at(db)
    watch = LockWatch()
    for _ in range(3):
        watch.check("x", str(db), os.stat(db), os.stat(str(db) + "-shm"))
    assert len(watch.lost) == 1


def _healthy(db: Path) -> subprocess.Popen[str]:
    """A process connected to *db* the ordinary way (it holds its SQLite locks)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(db)!r})\n"
         "c.execute('SELECT count(*) FROM task_queue').fetchone()\n"
         "print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_without_proc_locks_the_lone_lock_test_still_finds_a_lost_writer(
        tmp_path: Path, writer_at: Any) -> None:
    # As under ProcSubset=pid: /proc/PID directories but no /proc/locks.
    db = tmp_path / "lost.db"
    make_dashboard_db(db, tasks=1)
    writer = writer_at(db)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / str(writer.pid)).symlink_to(f"/proc/{writer.pid}")
    fd = os.open(db, os.O_RDONLY)
    try:
        found = inspect("x", os.stat(db), os.stat(str(db) + "-shm"), str(proc), fd)
        assert [h.pid for h in found.lost] == [writer.pid] and found.unknown == []
        # A healthy process beside it holds the SHARED range: who else does is unknown.
        healthy = _healthy(db)
        try:
            (proc / str(healthy.pid)).symlink_to(f"/proc/{healthy.pid}")
            found = inspect("x", os.stat(db), os.stat(str(db) + "-shm"), str(proc), fd)
            assert found.lost == []
            assert [(h.pid, h.state) for h in found.unknown] == [(writer.pid, "unknown")]
            assert inspect("x", os.stat(db), os.stat(str(db) + "-shm"), str(proc)).lost == []
        finally:
            healthy.kill()
            healthy.wait(10)
    finally:
        os.close(fd)
