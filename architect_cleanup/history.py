"""The history database: every run, what each target did, every item removed, space samples.

``history.sqlite3`` in the state directory (beside ``state.json``) is a SQLite database in WAL
mode. It is **written only by a cleanup run, under the run lock** (``lock.RunLock``), so there
is one writer at a time; reports, ``status`` and the API only read it (:func:`open_reader`),
and WAL lets them read while a run writes.

What it holds (schema version :data:`SCHEMA_VERSION`, times are Unix seconds, UTC):

* ``runs``: one row per run (start, end, dry or real, source, result, totals, ``imported``
  for a run taken over from the original worker's record);
* ``target_results`` and ``target_parts``: each target's figures, and per environment or
  database (``part``) what it removed and kept;
* ``backups``: per run and environment the backups there are after the run (count, bytes,
  whether the newest one is known good);
* ``samples``: per run the space figures, one row per (kind, name): see :class:`Sample`;
* ``items``: every item removed or archived, or that a dry run would remove: path, size,
  mtime, action, reason, target, environment. A run's items are written as they are decided,
  in batches (:class:`RunWriter`), so a run with a million items holds only one batch. They
  are appended in id order, a run's items being one id range (``runs.first_item`` and
  ``items_recorded``), so no index is maintained; directories and reasons (``texts``) and
  (target, environment, action) (``kinds``) are stored once: about 45 bytes an item.

Retention (:meth:`History.prune`, by the run): items 90 days, runs 2 years (the ``[history]``
table will pass its values), and the items of dry runs only for the newest three dry runs.
The file is created with the process's umask (the service's ``UMask=0077``: root only, as
the paths of removed files are); readers that are not root get their figures from what the
run writes elsewhere (state.json, the metrics file).

Faults never stop a cleanup: a corrupt or unreadable database is set aside (renamed with a
timestamp, its ``-wal``/``-shm`` with it: they are our own files, no other process opens them)
and a new one is created; :func:`open_history` returns a warning for the run to report. The
whole file's ``PRAGMA quick_check`` (O(file): ~2 s for the 180 MB of 90 days of a
million-file tree) runs once a day (:data:`CHECK_EVERY`), beside the run, on a connection and
a thread of its own (SQLite works without the GIL); damage it finds is reported and the file
set aside when the run closes the history (:meth:`History.close`), so the next run starts a
new one. A
write that fails during a run disables the writer for the rest of the run (one warning, kept in
:attr:`RunWriter.problem`); the cleanup goes on.

The schema changes only through :data:`MIGRATIONS`: step *n* takes ``PRAGMA user_version`` from
*n* to *n+1*, in one transaction. A database from a newer version (``user_version`` beyond the
list) is left alone and not written (a downgrade must not lose the history).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from architect_cleanup.fs import untrusted
from architect_cleanup.itemwrite import (
    BUSY_TIMEOUT_MS,
    CACHE_KIB,
    Group,
    ItemRow,
    ItemWriter,
    Sink,
    SinkError,
    transaction,
)
from architect_cleanup.stats import STAT_FIELDS, CleanupStats, TargetResult

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
#: items written per transaction: bounds memory (one batch of tuples) and the work a crash loses.
#: 1,000 keeps a run removing 1,000,000 files within its 40 MB (`make bench` 5c: 5,000 took
#: 3 MB more, for about 5 % less time)
BATCH = 1000
#: A run's items go to a process of their own (RunWriter, itemwrite.Sink) once it has
#: handed over this many batches: a run that records fewer writes them itself. The process
#: costs a few milliseconds to start and end, and it shares the second core with the walk's
#: listing thread: a 100k-file dry run (30,000 items) took 0.330 s with it, 0.317 s without
#: (11 alternated runs); a 1M-file run (300,000) gains from it.
OFFLOAD_AFTER = 32
#: The whole file's ``quick_check`` runs at most this often (seconds): it reads the whole file
#: (~1 s of a core per 70 MB), and the hourly timer would pay that 24 times a day. When it
#: found the file sound is kept beside it in :data:`CHECKED_SUFFIX` (the file's inode and the
#: run's time); damage any run meets in what it reads or writes is still found at once.
CHECK_EVERY = 86400.0
CHECKED_SUFFIX = ".checked"
#: default retention (the ``[history]`` table's defaults)
ITEMS_DAYS = 90.0
RUNS_DAYS = 730.0
#: the items of dry runs are kept for this many of the newest dry runs (a preview of an hourly
#: dry-run timer would otherwise record every candidate again every hour)
DRY_ITEM_RUNS = 3
#: pruning gives the free pages back to the file system when they are more than 1/this of
#: the file; fewer are left for the next runs' items. An hourly dry run drops the items of one
#: run of the last DRY_ITEM_RUNS + 1 at every prune, which the next one writes again: giving
#: them back and growing the file again cost a 1M-file dry run 0.07 s of its 1.9 s.
VACUUM_SHARE = 3
#: unused texts are swept when pruning items and there are more than this many
TEXTS_SWEEP = 50_000

Action = Literal["removed", "archived"]
#: :meth:`RunWriter.dir_items`: a file target's name, a directory's path with its final ``/``,
#: and the items removed in it, in the order decided
DirItems = Callable[[str, str, Sequence[ItemRow]], None]
RunResult = Literal["running", "success", "failed", "interrupted"]
#: ``fs_free``/``fs_total``: a file system's available and total bytes (name: its mount
#: point or the configured path); ``bytes``: bytes of a category (``backups:<env>``, ``logs``,
#: ``temp``); ``db_bytes``: a database file's size (name: its path); ``rows``: rows of a purged
#: table (name: ``<database>:<table>``)
SampleKind = Literal["fs_free", "fs_total", "bytes", "db_bytes", "rows"]
SAMPLE_KINDS: tuple[SampleKind, ...] = ("fs_free", "fs_total", "bytes", "db_bytes", "rows")


@dataclass(frozen=True, slots=True)
class Item:
    """One item a target removed or archived (or would, in a dry run), handed over as it is
    decided. *mtime* is Unix seconds (None when not known, e.g. a database row); *env* the
    environment or database it belongs to, when there is one."""

    target: str
    path: str
    size: int
    mtime: float | None
    reason: str
    env: str | None = None
    action: Action = "removed"


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target's figures in one run (the fields of ``stats.TargetResult``)."""

    target: str
    status: str
    removed: int = 0
    bytes: int = 0
    kept: int = 0
    skipped: int = 0
    checked: int = 0
    errors: int = 0
    duration_s: float = 0.0
    message: str = ""

    @classmethod
    def from_result(cls, result: TargetResult) -> TargetRecord:
        return cls(result.name, result.status, result.removed, result.bytes, result.kept,
                   result.skipped, result.checked, len(result.errors), result.duration,
                   result.message)


@dataclass(frozen=True, slots=True)
class PartRecord:
    """What one target did in one environment or database (``TargetResult.detail``)."""

    target: str
    part: str
    removed: int = 0
    bytes: int = 0
    kept: int = 0


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """The backups of one environment after a run; *newest_ok* None when not verified."""

    env: str
    count: int
    bytes: int
    newest_ok: bool | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One space figure of a run (see :data:`SampleKind`)."""

    kind: SampleKind
    name: str
    value: float


def filesystem_samples(paths: Iterable[str]) -> list[Sample]:
    """``fs_free`` (bytes available to unprivileged users) and ``fs_total`` of the file
    system of each path in *paths*, named by the path as given; paths that cannot be read
    are left out."""
    out: list[Sample] = []
    for path in paths:
        try:
            st = os.statvfs(path)
        except OSError as exc:
            log.debug("history: no space figures for %s: %s", path, exc)
            continue
        out.append(Sample("fs_free", path, float(st.f_bavail * st.f_frsize)))
        out.append(Sample("fs_total", path, float(st.f_blocks * st.f_frsize)))
    return out


class Opened(NamedTuple):
    """What :func:`open_history` gives: the history (None when it cannot be written this run)
    and a warning for the run's report (None when all is well)."""

    history: History | None
    warning: str | None


class PruneResult(NamedTuple):
    """What :meth:`History.prune` removed; *problem* when it could not finish."""

    items: int
    runs: int
    problem: str | None = None


# -- schema ---------------------------------------------------------------------------------

_V1 = (
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        finished_at REAL,
        dry_run INTEGER NOT NULL,
        source TEXT NOT NULL,
        result TEXT NOT NULL DEFAULT 'running',
        duration_s REAL,
        items INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        items_recorded INTEGER NOT NULL DEFAULT 0,
        first_item INTEGER,
        message TEXT NOT NULL DEFAULT '',
        imported INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX runs_started ON runs (started_at)",
    """CREATE TABLE target_results (
        run_id INTEGER NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL,
        removed INTEGER NOT NULL, bytes INTEGER NOT NULL, kept INTEGER NOT NULL,
        skipped INTEGER NOT NULL, checked INTEGER NOT NULL, errors INTEGER NOT NULL,
        duration_s REAL NOT NULL, message TEXT NOT NULL,
        PRIMARY KEY (run_id, target)) WITHOUT ROWID""",
    """CREATE TABLE target_parts (
        run_id INTEGER NOT NULL, target TEXT NOT NULL, part TEXT NOT NULL,
        removed INTEGER NOT NULL, bytes INTEGER NOT NULL, kept INTEGER NOT NULL,
        PRIMARY KEY (run_id, target, part)) WITHOUT ROWID""",
    """CREATE TABLE backups (
        run_id INTEGER NOT NULL, env TEXT NOT NULL,
        count INTEGER NOT NULL, bytes INTEGER NOT NULL, newest_ok INTEGER,
        PRIMARY KEY (run_id, env)) WITHOUT ROWID""",
    """CREATE TABLE samples (
        run_id INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
        PRIMARY KEY (run_id, kind, name)) WITHOUT ROWID""",
    # directories and reasons, each stored once
    "CREATE TABLE texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE)",
    # target, environment ('' for none) and action of items, each combination stored once
    """CREATE TABLE kinds (id INTEGER PRIMARY KEY, target TEXT NOT NULL, env TEXT NOT NULL,
        action TEXT NOT NULL, UNIQUE (target, env, action))""",
    # appended in the order decided: a run's items are the ids first_item ..
    # first_item + items_recorded - 1 (no index to maintain); path = dir's text || name
    """CREATE TABLE items (
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, kind INTEGER NOT NULL,
        dir INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL,
        reason INTEGER NOT NULL)""",
)

#: step n takes the schema from user_version n to n+1 (append only; never edit a shipped step)
MIGRATIONS: list[Sequence[str]] = [_V1]
SCHEMA_VERSION = len(MIGRATIONS)


class NewerSchema(Exception):
    """The database was written by a newer version of this program."""


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring *conn*'s schema to ``len(migrations)``, one transaction per step; the version
    it had before. Raises :class:`NewerSchema` for a version beyond the list."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise NewerSchema(f"schema version {version}, newer than this program's "
                          f"{len(migrations)}")
    for step in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return version


# -- opening --------------------------------------------------------------------------------

def db_path(directory: str) -> str:
    return os.path.join(directory, DB_NAME)


def open_history(directory: str, *, now: datetime | None = None) -> Opened:
    """Open (or create) the history database in *directory* for a run, which holds the run
    lock. A corrupt file (not a database, a failed ``quick_check``, tables missing) is set
    aside as ``history.sqlite3.corrupt-<UTC time>`` and replaced; runs a crash left
    ``running`` are marked ``interrupted``. Never raises for a database problem: when the
    file cannot be opened or created (permissions, read-only or full file system, a newer
    schema) the run goes on without history, and the warning says why."""
    path = db_path(directory)
    when = (now or datetime.now(UTC)).astimezone(UTC)
    stamp, now_ts = when.strftime("%Y%m%dT%H%M%SZ"), when.timestamp()
    warning: str | None = None
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        untrusted_place(directory)
    except OSError as exc:
        return _without(f"cannot use {directory}: {exc.strerror or exc}")
    except ValueError as exc:
        return _without(str(exc))
    try:
        return Opened(_open(path, stamp, now_ts), None)
    except Corrupt as exc:
        warning = (f"history: {path} is unreadable or corrupt ({exc}); kept as "
                   f"{_aside(path, stamp)}, starting a new one")
        log.warning("%s", warning)
        try:
            _set_aside(path, stamp)
        except OSError as err:
            return _without(f"cannot set {path} aside: {err}")
    except NewerSchema as exc:
        return _without(f"{path}: {exc}")
    except (sqlite3.Error, OSError) as exc:
        return _without(f"cannot open {path}: {exc}")
    try:
        return Opened(_open(path, stamp, now_ts), warning)
    except (Corrupt, NewerSchema, sqlite3.Error, OSError) as exc:
        return _without(f"cannot create {path}: {exc}")


def _without(why: str) -> Opened:
    msg = f"history: {why}; this run is not recorded"
    log.warning("%s", msg)
    return Opened(None, msg)


def open_reader(directory: str) -> sqlite3.Connection | None:
    """A read-only connection for reports, status and the API; None when there is no
    history yet. Raises sqlite3.Error for an unreadable database."""
    path = db_path(directory)
    if not _exists(path):
        return None
    try:
        untrusted_place(directory)
    except ValueError as exc:
        raise sqlite3.DatabaseError(str(exc)) from None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def untrusted_place(directory: str) -> None:
    """Raise ValueError unless *directory* belongs to root or this user and nobody else may
    write it, and the database in it (if any) is a regular file, not a symlink: SQLite opens
    the path (following links), which is safe only where nobody else can place one (the
    state file's rule, state.py)."""
    why = untrusted(os.stat(directory))
    if why is not None:
        raise ValueError(f"{directory}: refused: {why}")
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        try:
            st = os.lstat(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{os.path.join(directory, name)}: refused: not a regular file "
                             "(a symlink is never followed)")


class Corrupt(Exception):
    """The history file is not a usable database (set aside and replaced)."""


#: SQLite's words for a file that is not a usable database
_CORRUPT_ERRORS = ("SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_FORMAT")
_TABLES = frozenset({"runs", "target_results", "target_parts", "backups", "samples",
                     "texts", "kinds", "items"})


def _open(path: str, stamp: str, now_ts: float) -> History:
    """Open (or create) the database: what a run reads first is checked here (the header, the
    schema version, the tables); the whole file's ``quick_check`` starts beside the run
    (:class:`_QuickCheck`) when one is due (:func:`_check_due`), its verdict taken at
    :meth:`History.close`. *stamp* names the copy a failed check sets aside."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            if 0 < version <= SCHEMA_VERSION:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if missing := sorted(_TABLES - tables):
                    raise Corrupt(f"schema version {version} without table(s) "
                                  f"{', '.join(missing)}")
            if pages == 0:
                # only on a new file: lets prune give pages back (incremental_vacuum)
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            migrate(conn)
            conn.execute("UPDATE runs SET result = 'interrupted' WHERE result = 'running'")
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                raise Corrupt(str(exc)) from exc
            raise
    except BaseException:
        conn.close()
        raise
    check = _QuickCheck(path, now_ts) if pages and _check_due(path, now_ts) else None
    return History(conn, path, check, stamp)


def _check_due(path: str, now_ts: float) -> bool:
    """Is the whole file's check due: no sound check of this file (its inode) on record in
    ``<path>.checked``, or the last one CHECK_EVERY or more ago (or in the future)?"""
    try:
        fd = os.open(path + CHECKED_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            ino, at = os.read(fd, 100).decode("ascii").split()
        finally:
            os.close(fd)
        return int(ino) != os.stat(path).st_ino or not 0 <= now_ts - float(at) < CHECK_EVERY
    except (OSError, ValueError):
        return True


def _checked(path: str, at: float) -> None:
    """Record a sound check of *path* (its inode) at *at*; a failure only means the next run
    checks again."""
    try:
        ino = os.stat(path).st_ino
        fd = os.open(path + CHECKED_SUFFIX,
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{ino} {at:.0f}\n".encode("ascii"))
        finally:
            os.close(fd)
    except OSError as exc:
        log.debug("history: cannot record the check of %s: %s", path, exc)


class _QuickCheck:
    """``PRAGMA quick_check`` of the whole database on a read-only connection and a thread of
    its own, beside the run: SQLite reads and checks without holding the GIL, so on a second
    core the run does not wait for it. :meth:`verdict` waits for it: None when the file is
    sound (or could not be checked, e.g. busy: no verdict, no action), else what is wrong."""

    def __init__(self, path: str, now_ts: float) -> None:
        self.path = path
        self.now_ts = now_ts
        self.problem: str | None = None
        #: the check ran and found the file sound
        self.sound = False
        self.thread = threading.Thread(target=self._check, name="history-check", daemon=True)
        self.thread.start()

    def _check(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   isolation_level=None, check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                rows = conn.execute("PRAGMA quick_check").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                self.problem = str(exc)
            else:
                log.debug("history: %s not checked: %s", self.path, exc)
            return
        if rows != [("ok",)]:
            self.problem = "quick_check: " + "; ".join(str(r[0]) for r in rows[:3])
        else:
            self.sound = True

    def verdict(self) -> str | None:
        self.thread.join()
        return self.problem


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Is *exc* SQLite saying the file is not a usable database (:data:`_CORRUPT_ERRORS`)?"""
    return str(getattr(exc, "sqlite_errorname", "")).startswith(_CORRUPT_ERRORS)


def _aside(path: str, stamp: str) -> str:
    """The name a corrupt database is kept under: ``<path>.corrupt-<UTC time>``."""
    return f"{path}.corrupt-{stamp}"


def _set_aside(path: str, stamp: str) -> str:
    """Rename the database and its ``-wal``/``-shm`` to :func:`_aside`'s name; that name."""
    aside = _aside(path, stamp)
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    return aside


def _ts(dt: datetime) -> float:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: give a time zone")
    return dt.timestamp()


# -- writing --------------------------------------------------------------------------------

class History:
    """The open history database of one run (see :func:`open_history`)."""

    def __init__(self, conn: sqlite3.Connection, path: str, check: _QuickCheck | None,
                 stamp: str) -> None:
        self.conn = conn
        self.path = path
        self._check = check
        self._stamp = stamp

    def begin_run(self, *, started_at: datetime, dry_run: bool, source: str,
                  batch: int = BATCH, offload: bool = False) -> RunWriter:
        """Record the start of a run; its writer (*offload*: its item batches may be written
        by a process of their own, see :class:`RunWriter`). Never raises for the database:
        when the run cannot be recorded, the writer comes back disabled (its
        :attr:`RunWriter.problem` says why, every call is a no-op)."""
        when = _ts(started_at)
        try:
            first = int(self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM items"
                                          ).fetchone()[0])
            cur = self.conn.execute(
                "INSERT INTO runs (started_at, dry_run, source, first_item) VALUES (?,?,?,?)",
                (when, int(dry_run), source, first))
        except (sqlite3.Error, OSError) as exc:
            writer = RunWriter(self.conn, 0, batch=batch)
            writer.problem = f"history: cannot record this run: {exc}"
            log.warning("%s", writer.problem)
            return writer
        run_id = cur.lastrowid
        assert run_id is not None
        return RunWriter(self.conn, run_id, first, batch=batch,
                         path=self.path if offload else None)

    def prune(self, *, now: datetime, items_days: float = ITEMS_DAYS,
              runs_days: float = RUNS_DAYS, dry_item_runs: int = DRY_ITEM_RUNS,
              batch: int = 20 * BATCH) -> PruneResult:
        """Drop items older than *items_days* (and those of dry runs beyond the newest
        *dry_item_runs*), runs older than *runs_days* with all they recorded; in short
        transactions of *batch* rows, then give free pages back to the file system. Never
        raises for the database: a failure is logged and returned as ``problem`` (what was
        committed before it stays pruned; the next run goes on from there)."""
        counts = [0, 0]
        try:
            self._prune(now, items_days, runs_days, dry_item_runs, batch, counts)
        except (sqlite3.Error, OSError) as exc:
            problem = f"history: pruning failed: {exc}"
            log.warning("%s", problem)
            return PruneResult(counts[0], counts[1], problem)
        if any(counts):
            log.info("history: pruned %d items and %d runs", *counts)
        return PruneResult(counts[0], counts[1])

    def _prune(self, now: datetime, items_days: float, runs_days: float, dry_item_runs: int,
               batch: int, counts: list[int]) -> None:
        conn = self.conn
        run_cut = _ts(now - timedelta(days=runs_days))
        item_cut = max(_ts(now - timedelta(days=items_days)), run_cut)
        doomed = conn.execute(
            "SELECT first_item, items_recorded, id FROM runs WHERE items_recorded > 0 AND "
            "(started_at < ? OR dry_run AND id NOT IN (SELECT id FROM runs WHERE dry_run "
            "ORDER BY started_at DESC, id DESC LIMIT ?)) ORDER BY id",
            (item_cut, max(0, dry_item_runs))).fetchall()
        for first, count, run_id in doomed:
            for lo in range(first, first + count, batch):
                hi = min(lo + batch, first + count)
                with transaction(conn):
                    counts[0] += conn.execute("DELETE FROM items WHERE id >= ? AND id < ?",
                                              (lo, hi)).rowcount
                    if hi == first + count:
                        conn.execute("UPDATE runs SET items_recorded = 0 WHERE id = ?",
                                     (run_id,))
        old = [r for (r,) in conn.execute("SELECT id FROM runs WHERE started_at < ?",
                                          (run_cut,))]
        for i in range(0, len(old), 500):
            chunk = old[i:i + 500]
            marks = ",".join("?" * len(chunk))
            with transaction(conn):
                for table in ("target_results", "target_parts", "backups", "samples"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", chunk)
            counts[1] += len(chunk)
        many = counts[0] > 0 and int(
            conn.execute("SELECT COUNT(*) FROM texts").fetchone()[0]) > TEXTS_SWEEP
        if old or many:
            # texts no item uses any more: rare (directories and reasons repeat), so swept
            # with the runs or when there are many, not on every prune (a scan of the items)
            with transaction(conn):
                conn.execute("DELETE FROM texts WHERE id NOT IN (SELECT dir FROM items "
                             "UNION SELECT reason FROM items)")
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        if free * VACUUM_SHARE > int(conn.execute("PRAGMA page_count").fetchone()[0]):
            # executescript steps it to the end (execute() would free a single page)
            conn.executescript("PRAGMA incremental_vacuum;")

    def import_run(self, *, started_at: datetime, finished_at: datetime | None,
                   dry_run: bool, result: str, stats: Mapping[str, Any],
                   source: str = "imported", message: str = "",
                   duration_s: float | None = None) -> int | None:
        """Record a past run (the original worker's last run) as ``imported``; its id, or
        None when a run with that start time was imported before. *stats* is the seed's
        stats object (``backups_deleted``, ..., ``space_freed_mb`` or ``space_freed``)."""
        start = _ts(started_at)
        if self.conn.execute("SELECT 1 FROM runs WHERE imported AND started_at = ?",
                             (start,)).fetchone():
            return None
        freed = stats.get("space_freed")
        if not isinstance(freed, int | float):
            mb = stats.get("space_freed_mb", 0)
            freed = float(mb) * 1048576 if isinstance(mb, int | float) else 0
        counts = {t: stats.get(f, 0) for t, f in STAT_FIELDS.items()}
        counts = {t: int(v) for t, v in counts.items() if isinstance(v, int | float)}
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO runs (started_at, finished_at, dry_run, source, result, "
                "duration_s, items, bytes, message, imported) VALUES (?,?,?,?,?,?,?,?,?,1)",
                (start, _ts(finished_at) if finished_at else None, int(dry_run), source,
                 result, duration_s, sum(counts.values()), int(freed), message))
            run_id = cur.lastrowid
            assert run_id is not None
            self.conn.executemany(
                "INSERT INTO target_results VALUES (?, ?, 'ok', ?, 0, 0, 0, 0, 0, 0, '')",
                [(run_id, t, n) for t, n in counts.items()])
        return run_id

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it (the end of a run)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> str | None:
        """Close the database; when the check begun at its opening found it damaged, set it
        aside (as :func:`open_history` does a file it cannot read) and return the warning
        (logged), else None."""
        check, self._check = self._check, None
        problem = check.verdict() if check is not None else None
        with contextlib.suppress(sqlite3.Error):
            self.checkpoint()
        self.conn.close()
        if problem is None:
            if check is not None and check.sound:
                _checked(self.path, check.now_ts)
            return None
        try:
            aside = _set_aside(self.path, self._stamp)
        except OSError as exc:
            warning = (f"history: {self.path} is corrupt ({problem}) and cannot be set aside: "
                       f"{exc.strerror or exc}")
        else:
            warning = (f"history: {self.path} is corrupt ({problem}); kept as {aside}, the "
                       "next run starts a new one")
        log.warning("%s", warning)
        return warning


class RunWriter:
    """Writes one run's records. Items are buffered and written :data:`BATCH` at a time in
    one transaction each (:class:`~architect_cleanup.itemwrite.ItemWriter`); everything else
    is written at once. A failing write (full disk, I/O error) logs one warning, sets
    :attr:`problem` and turns every later call into a no-op: the cleanup never stops for its
    history.

    With *offload* (a run's writer: :meth:`History.begin_run`), a run that records more than
    :data:`OFFLOAD_AFTER` batches hands the rest to a process of their own
    (:class:`~architect_cleanup.itemwrite.Sink`), which writes them while the run goes on;
    :meth:`finish` (or :meth:`close`) waits for it. Where no process can be started, the
    writer writes them itself. A problem of that process is known when it ends."""

    def __init__(self, conn: sqlite3.Connection, run_id: int, first_item: int = 1, *,
                 batch: int = BATCH, path: str | None = None) -> None:
        self.conn = conn
        self.run_id = run_id
        self.batch = max(1, batch)
        self.problem: str | None = None
        #: items handed over so far (written or buffered)
        self.items_recorded = 0
        self.finished = False
        self._next = first_item
        #: items handed over and not yet written: (kind, directory, rows) in order
        self._buffer: list[Group] = []
        self._buffered = 0
        self._items = ItemWriter(conn, run_id)
        #: the database's path when batches may go to a process of their own
        self._offload_to = path
        self._sink: Sink | None = None

    def item(self, item: Item) -> None:
        """Record one item (buffered)."""
        if self.problem is not None:
            return
        path = item.path
        cut = path.rfind("/") + 1
        self._add((item.target, item.env or "", item.action), path[:cut],
                  ((path[cut:], item.size, item.mtime, item.reason),))

    def items(self, items: Iterable[Item]) -> None:
        for it in items:
            self.item(it)

    def dir_items(self, target: str, folder: str, rows: Sequence[ItemRow]) -> None:
        """Record one directory's items at once, as :meth:`item` would one by one: *folder*
        is their directory's path with its final ``/`` (``Dir.join("")``), each row a
        name, size, mtime and reason (removed, no environment: a file target's items).

        A dry run of a million files hands over 300,000 items; one call per directory
        spares each of them an :class:`Item`, a call and the split of its path."""
        if self.problem is not None or not rows:
            return
        self._add((target, "", "removed"), folder, rows)

    def _add(self, kind: tuple[str, str, str], folder: str, rows: Sequence[ItemRow]) -> None:
        self._buffer.append((kind, folder, rows))
        self._buffered += len(rows)
        self.items_recorded += len(rows)
        if self._buffered >= self.batch:
            self._flush(full=True)

    def flush(self) -> None:
        """Write the buffered items in one transaction (or hand them to the process that
        writes them)."""
        self._flush(full=False)

    def _flush(self, *, full: bool) -> None:
        if not self._buffer or self.problem is not None:
            return
        groups, self._buffer, self._buffered = self._buffer, [], 0
        first, recorded = self._next, self.items_recorded
        self._next += sum(len(rows) for _k, _f, rows in groups)
        if (full and self._sink is None and self._offload_to is not None
                and self.items_recorded >= OFFLOAD_AFTER * self.batch):
            path, self._offload_to = self._offload_to, None  # one try
            try:
                self._sink = Sink.start(path, self.run_id)
            except (OSError, ValueError) as exc:  # no process to be had: written here
                log.debug("history: items written by the run itself: %s", exc)
        if self._sink is not None:
            try:
                self._sink.send(groups, first, recorded)
            except SinkError as exc:
                self._sink = None
                self._fail("items", str(exc))
            return
        self._guard("items", lambda: self._items.write(groups, first, recorded))

    def close(self) -> None:
        """Wait for the process writing the items, if any (:meth:`finish` does): a problem
        it had is the writer's :attr:`problem` (logged)."""
        sink, self._sink = self._sink, None
        if sink is None:
            return
        problem = sink.finish()
        if problem is not None:
            self._fail("items", problem)

    def target(self, record: TargetRecord, parts: Iterable[PartRecord] = ()) -> None:
        """Record one target's figures and its per-environment parts."""
        rid = self.run_id
        r = record
        part_rows = [(rid, p.target, p.part, p.removed, p.bytes, p.kept) for p in parts]
        self._guard("targets", lambda: self._write(
            ("INSERT OR REPLACE INTO target_results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
             [(rid, r.target, r.status, r.removed, r.bytes, r.kept, r.skipped, r.checked,
               r.errors, r.duration_s, r.message)]),
            ("INSERT OR REPLACE INTO target_parts VALUES (?,?,?,?,?,?)", part_rows)))

    def backups(self, records: Iterable[BackupRecord]) -> None:
        rows = [(self.run_id, b.env, b.count, b.bytes,
                 None if b.newest_ok is None else int(b.newest_ok)) for b in records]
        self._guard("backups", lambda: self._write(
            ("INSERT OR REPLACE INTO backups VALUES (?,?,?,?,?)", rows)))

    def samples(self, samples: Iterable[Sample]) -> None:
        rows = []
        for s in samples:
            if s.kind not in SAMPLE_KINDS:
                raise ValueError(f"unknown sample kind {s.kind!r}")
            rows.append((self.run_id, s.kind, s.name, float(s.value)))
        self._guard("samples", lambda: self._write(
            ("INSERT OR REPLACE INTO samples VALUES (?,?,?,?)", rows)))

    def record_stats(self, stats: CleanupStats) -> None:
        """Every target of *stats* with its parts (``TargetResult.detail``)."""
        for result in stats.targets.values():
            parts = [PartRecord(result.name, key, int(d.get("removed", 0)),
                                int(d.get("bytes", 0)), int(d.get("kept", 0)))
                     for key, d in result.detail.items()]
            self.target(TargetRecord.from_result(result), parts)

    def finish(self, *, finished_at: datetime, result: RunResult, duration_s: float,
               items: int, bytes: int, message: str = "") -> None:
        """Write the last items and the run's outcome."""
        self.flush()
        self.close()
        self._guard("finish", lambda: self._write(
            ("UPDATE runs SET finished_at = ?, result = ?, duration_s = ?, items = ?, "
             "bytes = ?, message = ?, items_recorded = ? WHERE id = ?",
             [(_ts(finished_at), result, duration_s, items, bytes, message,
               self.items_recorded, self.run_id)])))
        self.finished = True

    def finish_stats(self, stats: CleanupStats, *, finished_at: datetime,
                     interrupted: bool = False) -> None:
        """:meth:`finish` with the figures of *stats*."""
        result: RunResult = ("interrupted" if interrupted
                             else "success" if stats.success else "failed")
        self.finish(finished_at=finished_at, result=result, duration_s=stats.duration,
                    items=sum(t.removed for t in stats.targets.values()),
                    bytes=stats.space_freed, message=stats.message)

    def _write(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None:
        with transaction(self.conn):
            for sql, rows in statements:
                if rows:
                    self.conn.executemany(sql, rows)

    def _guard(self, what: str, write: Callable[[], None]) -> None:
        if self.problem is not None:
            return
        try:
            write()
        except (sqlite3.Error, OSError) as exc:
            self._fail(what, str(exc))

    def _fail(self, what: str, why: str) -> None:
        if self.problem is not None:
            return
        self.problem = f"history: cannot record {what}: {why}; the rest of this run is " \
            "not recorded"
        self._buffer, self._buffered = [], 0
        log.warning("%s", self.problem)
