"""The dashboard's SQLite databases: find them, open them with care, change rows in batches.

This is the only code that writes to a dashboard database. Everything here is shaped by one
goal: the dashboard keeps writing while a purge runs (SPEC sections 4.5 and 10).

- Each configured path (``{env}`` expanded, globs allowed) is opened read-write without ever
  creating it, with ``busy_timeout`` and ``PRAGMA foreign_keys = ON``; a dry run's connection
  is ``query_only``. Tables, columns, indexes and foreign keys are looked up, never assumed.
- Rows change in batches of at most ``batch_size`` (one short ``BEGIN IMMEDIATE``
  transaction each; in a WAL database fewer rows while a batch would hold the write lock
  over :data:`HOLD_TARGET`); after each, the write lock stays free at least as long as the batch
  held it, and at least as long as the longest sleep of SQLite's busy handler that a writer
  waiting since the batch began can be in (:func:`pause_after`), so the dashboard's writer
  gets in at its next try (the read for the next batch and the WAL checkpoints, which this
  connection runs itself between batches, count toward that pause).
  A batch is a rowid range found by a read that walks the table in rowid order
  (``NOT INDEXED``: through the status index the planner would sort every remaining candidate
  per batch, "USE TEMP B-TREE", measured 12x slower). No id list is ever fetched.
- The deciding timestamp is compared in SQL (:func:`epoch_sql`), so the purge streams.
- A dry run walks the same batches and counts what the same statements would change.
- Rows that a foreign key protects (``ON DELETE RESTRICT`` / ``NO ACTION``) are kept and counted
  as skipped. ``ON DELETE SET NULL`` references are cleared. When a referencing column has no
  index (the real schema's ``task_queue.parent_id``), SQLite's own enforcement scans the whole
  child table for every deleted row (measured: 52 s for 1,000 of 200,000 rows instead of 7 ms);
  then the references are looked up through a per-connection TEMP map of the child keys and
  the actions are applied in the same transaction as the delete, with ``foreign_keys`` off for
  that connection only (:class:`Reference`).
- A real run ends with a WAL checkpoint (``PASSIVE``, then a short ``TRUNCATE``); never VACUUM.

Threat model: what may break the dashboard, and what keeps it from happening.

- *Our close deleting the dashboard's WAL.* When a WAL connection closes, SQLite takes an
  EXCLUSIVE lock on the database file's SHARED range (bytes ``0x40000002``, 510 long) to learn
  whether it is the last connection; if it gets it, it checkpoints and unlinks ``-wal`` and
  ``-shm``. A dashboard that closed any descriptor of its database (``shutil.copy2`` of its
  live file for a backup) has lost every POSIX lock on it while its connections stay open, so
  our close would unlink the files it keeps writing into (I/O errors, commits lost). Every
  :class:`Database` therefore holds a :class:`~architect_cleanup.dblocks.Guard` from before
  ``sqlite3.connect`` until after ``close``, on every exit path (open failures, refused files,
  errors and stops inside a purge): an open-file-description read lock (``F_OFD_SETLK``) on
  that range, through a descriptor of its own. OFD locks conflict with SQLite's POSIX locks
  even inside this process, so the probe fails and SQLite leaves both files alone; the guard
  never blocks WAL readers, writers or checkpoints. The explicit ``wal_checkpoint(TRUNCATE)``
  stays: it is coordinated through the ``-shm`` locks, which such a dashboard still holds. A
  rollback-journal database (its writers need that range exclusively at each commit; it has
  no WAL to protect) gets no lock when its header says so, or has it dropped once SQLite
  reports the journal mode (holding it while SQLite waits for a committing writer's PENDING
  lock would deadlock both until their busy timeouts); the descriptor
  stays open until the connection is closed, since closing one drops this process's POSIX
  locks on the file. For the same reason nothing here opens a database file besides SQLite
  and the guard: the header is read through the guard's descriptor.
- *A dashboard that has lost its locks* is in danger from any other program that opens its
  database. Before opening a WAL database the run looks for processes that have it and its
  ``-shm`` open (``/proc/PID/fd``) but hold no lock on it (``/proc/locks``), and reports each
  once per run (journal entry ``db_lock_lost``, ``--json``, ``status``); processes it may not
  inspect are reported as unknown.
- *Paths swapped under SQLite* (it opens files by path): see dbfile.py.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from architect_cleanup.config import Config, DatabaseConfig, format_duration
from architect_cleanup.dbfile import Pinned, Refused, locate
from architect_cleanup.dblocks import (
    Guard,
    GuardError,
    LockWatch,
    header_says_rollback,
    header_says_wal,
    opened_elsewhere,
)
from architect_cleanup.fs import Dir, FsError, Root

log = logging.getLogger(__name__)

#: After a batch the write lock stays free this times as long as the batch held it ...
PAUSE_RATIO = 1.0
#: ... and at least this long (seconds) ...
MIN_PAUSE = 0.001
#: ... and at least as long as a writer that began waiting during the batch may sleep before
#: its next try: SQLite's own busy handler (``sqlite3_busy_timeout``, what the dashboard's
#: ``sqlite3.connect(timeout=...)`` uses) sleeps these many ms between tries, then 100 ms.
BUSY_SLEEPS_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
#: (plus this much: the writer's sleep may overrun, and its try must find the lock free).
#: A batch's time is taken from before its BEGIN to after its COMMIT, so a writer that found
#: the lock taken has waited no longer than the batch when it ends. Measured (`make bench`,
#: 2M rows): with 1 ms here and the batch's time plus 1 ms looked up in the busy handler's
#: table, a pause after a 1.5 ms batch was 3 ms and the purge took 4.06-4.38x a plain DELETE;
#: with 0.5 ms and the batch's own time, 2.5 ms and 3.0-3.3x, the inserts' waits the same.
BUSY_SLACK = 0.0005
#: Rows per read when counting what a table holds (a read never blocks a WAL writer, but a long
#: one would block a rollback-journal writer's commit).
SCAN_CHUNK = 50_000
#: During a purge, copy the WAL back into the database about every this many WAL frames (so
#: the dashboard's own commits seldom find the WAL over SQLite's autocheckpoint threshold and
#: pay for a checkpoint themselves). Small and often: the checkpoint syncs the WAL the purge
#: wrote (its commits do not: ``synchronous = NORMAL``), and a dashboard commit that syncs the
#: same file waits for every frame still unsynced. Measured (`make bench`, 2M rows): with
#: 500 frames an insert's commit took up to 20 ms during a purge, with 100 up to 9 ms, with 30
#: 2.8-3.9 ms (the dashboard alone: up to 1.2-4.5 ms), for a purge about 7 % slower.
CHECKPOINT_FRAMES = 30
#: A real run's batch in a WAL database holds the write lock at most about this long
#: (seconds; a rollback-journal database keeps ``batch_size``, see ``_Run._fit``): a dashboard
#: writer that began waiting as the batch began gets in at its second try (SQLite's busy
#: handler tries again after 1, then 2 more ms), and one batch that overruns it twice over
#: still lets it in at its third (3 ms), not at its fourth (8 ms). ``batch_size`` is the most
#: rows a batch takes; after a batch that held the lock longer the next one takes half as
#: many, and after one that held it less than half as long a quarter more (up to
#: ``batch_size`` again). Measured (`make bench`, 2M rows): a fixed 1,000-row batch held it
#: 4-6 ms, and the inserts that waited behind one waited 8.4 ms (their fourth try); with 3 ms
#: an overrunning batch still cost one insert 10 ms in about one purge of three; with 1.5 ms
#: the longest wait was 3.6 ms, and the purge took 3.1-3.4x a plain DELETE (1.7x with 3 ms).
HOLD_TARGET = 0.0015
#: The fewest rows a batch takes, whatever it held (the read that finds a batch is not free).
MIN_BATCH = 16
#: The busy timeout (ms) for the final TRUNCATE checkpoint, which blocks new writers while it
#: waits for readers: it gives up quickly rather than stall the dashboard.
CHECKPOINT_WAIT_MS = 20

ROWID_MIN = -(2**63)
ROWID_MAX = 2**63 - 1
_UNIX_EPOCH_JD = 2440587.5

#: ON DELETE actions the emulated path applies itself.
_EMULATED_ACTIONS = frozenset({"SET NULL", "RESTRICT", "NO ACTION"})
#: ON DELETE actions that forbid deleting a referenced row.
_PROTECTING = frozenset({"RESTRICT", "NO ACTION"})


class DbError(Exception):
    """One database cannot be used or changed; the message says why, in plain words."""


def quote(name: str) -> str:
    """An SQL identifier, quoted (names come from the configuration or from PRAGMAs)."""
    return '"' + name.replace('"', '""') + '"'


def busy_gap(waited: float) -> float:
    """How long (seconds) a writer whose busy handler has been retrying for *waited* seconds
    sleeps before its next try (SQLite's back-off: 1, 2, 5, 10, 15, 20, 25 ... 100 ms)."""
    tried = 0.0
    for ms in BUSY_SLEEPS_MS:
        tried += ms / 1000
        if waited < tried:
            return ms / 1000
    return BUSY_SLEEPS_MS[-1] / 1000


def pause_after(held: float) -> float:
    """How long the write lock stays free after a batch that held it *held* seconds.

    As long as the batch, so the purge takes at most half of the lock's time; and at least
    as long as the longest sleep of a writer that began waiting during the batch: it then
    tries again inside the pause and gets in, instead of finding the next batch running at
    each try (with a pause shorter than the busy handler's back-off the tries can keep
    falling on batches: measured 40-75 ms inserts behind 4 ms batches)."""
    return max(held * PAUSE_RATIO, busy_gap(held) + BUSY_SLACK, MIN_PAUSE)


# --- finding the databases -------------------------------------------------------------------


@dataclass(frozen=True)
class DbFile:
    """One configured database: a short label (the environment, or its path), its path
    relative to root, and the absolute path."""

    label: str
    rel: str
    path: str


def find_databases(cfg: Config) -> tuple[list[DbFile], list[str]]:
    """The configured databases that exist, and notes for those that do not (skipped, not an
    error: an environment may have no database yet)."""
    found: list[tuple[str | None, str]] = []
    notes: list[str] = []
    for template in cfg.database.paths:
        for env, rel in cfg.expand_env(template):
            if glob.has_magic(rel):
                matches = glob_below(cfg.root, rel)
                if not matches:
                    notes.append(f"{rel}: no database matches (skipped)")
                found.extend((env, os.path.normpath(m)) for m in matches)
            else:
                found.append((env, os.path.normpath(rel)))
    seen: set[str] = set()
    unique: list[tuple[str | None, str]] = []
    for env, rel in found:
        if rel not in seen:
            seen.add(rel)
            unique.append((env, rel))
    # Labels: the environment for "{env}" paths, the file's stem for others ("assigner"),
    # the relative path when that would be ambiguous.
    wanted = [env if env is not None else os.path.splitext(os.path.basename(rel))[0]
              for env, rel in unique]
    out: list[DbFile] = []
    for (_env, rel), label in zip(unique, wanted, strict=True):
        path = cfg.resolve(rel)
        if not os.path.lexists(path):
            notes.append(f"{rel}: does not exist (skipped)")
            continue
        out.append(DbFile(label if wanted.count(label) == 1 else rel, rel, path))
    return out, notes


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def glob_below(root: str, pattern: str) -> list[str]:
    """``glob.glob(pattern, root_dir=root)``, but listed from the root's descriptor: a
    symlinked directory is never followed and a mount never crossed, so no directory outside
    the root is ever listed. Relative paths, sorted."""
    try:
        r = Root.open(root)
    except FsError:
        return []
    parts = [p for p in os.path.normpath(pattern).split("/") if p not in ("", ".")]
    found: list[str] = []

    def visit(d: Dir, rel: str, i: int) -> None:
        part, last = parts[i], i == len(parts) - 1
        if glob.has_magic(part):
            try:
                names = sorted(n for n in os.listdir(d.fd) if fnmatch.fnmatchcase(n, part)
                               and (part.startswith(".") or not n.startswith(".")))
            except OSError:
                return
        else:
            names = [part]
        for name in names:
            sub = os.path.join(rel, name)
            if last:
                try:
                    os.stat(name, dir_fd=d.fd, follow_symlinks=False)
                except OSError:
                    continue
                found.append(sub)
                continue
            try:
                child = r.open_dir(d, name)
            except (OSError, FsError):
                continue
            try:
                visit(child, sub, i + 1)
            finally:
                child.close()

    with r:
        if parts:
            visit(r.dir, "", 0)
    return found


# --- timestamps ------------------------------------------------------------------------------


def epoch_sql(expr: str, naive_timezone: str = "utc") -> str:
    """SQL for *expr* (a column or expression) as Unix epoch seconds, NULL when it is NULL or
    not a timestamp, so ``epoch_sql(x) < :cutoff`` is false for those rows.

    - text must look like a date (``YYYY-``): SQLite's date parser reads the space or ``T``
      form, fractions of any length, and ``Z`` / ``+HH:MM`` offsets; ``+HHMM`` gets its colon
      (only tried when the text did not parse as it is, so the common case costs one parse);
      text without an offset is UTC, or local time when *naive_timezone* is ``"local"`` (the
      ``utc`` modifier leaves text with an offset alone);
    - integers and reals are Unix epoch seconds (0 and below are sentinels, not times);
    - anything else (other text, a blob) is not a timestamp.
    """
    modifier = ", 'utc'" if naive_timezone == "local" else ""
    colon = (f"CASE WHEN {expr} GLOB '????-??-??[T ]*[0-9][+-][0-9][0-9][0-9][0-9]' "
             f"THEN substr({expr}, 1, length({expr}) - 2) || ':' || substr({expr}, -2) END")
    jd = f"COALESCE(julianday({expr}{modifier}), julianday({colon}{modifier}))"
    return (f"(CASE typeof({expr}) "
            f"WHEN 'text' THEN CASE WHEN substr({expr}, 5, 1) = '-' "
            f"THEN ({jd} - {_UNIX_EPOCH_JD}) * 86400.0 END "
            f"WHEN 'integer' THEN CASE WHEN {expr} > 0 THEN {expr} END "
            f"WHEN 'real' THEN CASE WHEN {expr} > 0 THEN {expr} END END)")


def sql_timestamp(when: datetime, naive_timezone: str = "utc") -> str:
    """*when* the way SQLite's ``CURRENT_TIMESTAMP`` writes it (in local time when the
    database's naive timestamps are local)."""
    local = when.astimezone() if naive_timezone == "local" else when.astimezone(UTC)
    return local.strftime("%Y-%m-%d %H:%M:%S")


def in_list(column: str, values: Iterable[str], prefix: str) -> tuple[str, dict[str, Any]]:
    """``column IN (:p0, :p1, …)`` and its parameters."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return f"{column} IN ({', '.join(':' + k for k in params)})", params


# --- what a target asks for, and what came of it ---------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One table's change: rows in ``scope`` whose ``time_expr`` is before ``cutoff`` are
    deleted, or updated with ``set_sql`` when it is given (archiving). SQL fragments refer to
    the table as ``_t``; ``params`` are their named parameters."""

    table: str
    scope: str
    time_expr: str
    cutoff: float
    params: dict[str, Any] = field(default_factory=dict)
    set_sql: str | None = None
    #: words for reports: "finished tasks", and the column(s) that decide ("completed_at")
    what: str = "rows"
    time_desc: str = ""


@dataclass
class Outcome:
    """Counts for one table; filled as batches commit, so they are exact even when a later
    batch fails."""

    checked: int = 0      # rows in the table (before the run)
    kept: int = 0         # rows the rule is about (finished tasks, ...) that stay
    undated: int = 0      # ... of which the deciding time is NULL or not a timestamp
    changed: int = 0      # deleted / archived (or that would be, in a dry run)
    skipped: int = 0      # wanted, but protected (a foreign key refers to them) or refused
    cleared: int = 0      # references set NULL in other rows (ON DELETE SET NULL)
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    """A foreign key in ``child`` pointing at the table being purged."""

    child: str
    columns: tuple[str, ...]
    parent_columns: tuple[str, ...]
    on_delete: str
    indexed: bool
    child_has_rowid: bool

    @property
    def protects(self) -> bool:
        return self.on_delete in _PROTECTING

    @property
    def clears(self) -> bool:
        return self.on_delete == "SET NULL"

    def describe(self) -> str:
        return f"{self.child}({', '.join(self.columns)}) ON DELETE {self.on_delete}"


# --- one open database -----------------------------------------------------------------------


class Database:
    """One dashboard database, opened for a dry run (``query_only``) or a real run."""

    def __init__(self, f: DbFile, cfg: DatabaseConfig, *, dry_run: bool,
                 root: str | None = None, locks: LockWatch | None = None) -> None:
        self.file = f
        self.cfg = cfg
        self.dry_run = dry_run
        self.changed = 0
        #: the file as found from the root's descriptor (see dbfile.py), when a root is given
        self.pinned: Pinned | None = None
        #: the lock that keeps our close from deleting the dashboard's WAL (see dblocks.py)
        self.guard: Guard | None = None
        path = self._pin(f.rel, root) if root is not None else f.path
        uri = "file:" + urllib.parse.quote(path) + "?mode=rw"
        busy = cfg.busy_timeout.total_seconds()
        try:
            guard = self.guard = self._guard(path, busy, locks)
        except BaseException as exc:
            self._fail_open(exc)
            raise
        own = guard.fd
        #: neither -wal nor -shm was there: whatever SQLite makes for us is ours (dblocks.py)
        self._sides_ours = all(self._side_stat(s, path) is None for s in ("-wal", "-shm"))
        before: set[int] = self.pinned.fds() if self.pinned is not None else set()
        try:
            self.con = sqlite3.connect(uri, uri=True, timeout=busy, isolation_level=None)
        except BaseException as exc:
            self._fail_open(exc)
            raise
        try:
            self._prepare(guard, busy, before, own)
        except Refused as exc:
            self._abandon()
            raise DbError(str(exc)) from None
        except BaseException as exc:
            try:
                self.con.close()
            finally:
                self._fail_open(exc)
            raise

    def _pin(self, rel: str, root: str) -> str:
        """Find the database from the root's descriptor and act as its owner (dbfile.py);
        the path to open it by."""
        try:
            self.pinned = locate(rel, root)
        except Refused as exc:
            raise DbError(str(exc)) from None
        except FileNotFoundError:
            raise DbError("does not exist (any more)") from None
        try:
            self.pinned.become_owner()
        except Refused as exc:
            self._unpin()
            raise DbError(str(exc)) from None
        return self.pinned.path

    def _prepare(self, guard: Guard, busy: float, before: set[int], own: int) -> None:
        """Set the connection up for the run: busy timeout, foreign keys, the journal mode
        (the guard's lock is dropped unless it is WAL), a first read, then ``query_only``
        for a dry run or the WAL settings of a real one. A pinned file is checked to be
        the one found after the open and after the first read (Refused otherwise)."""
        con = self.con
        if self.pinned is not None:
            self.pinned.check(before, "open", own=own)
        con.execute(f"PRAGMA busy_timeout = {int(busy * 1000)}")
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA temp_store = MEMORY")
        self.journal_mode = str(con.execute("PRAGMA journal_mode").fetchone()[0])
        if self.journal_mode != "wal":
            guard.release_lock()  # no WAL to protect; its writers need the range
        elif not guard.locked:  # the file said otherwise a moment ago (its mode changed)
            try:
                guard.lock(busy)
            except GuardError as exc:
                raise DbError(str(exc)) from None
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if self.pinned is not None:
            self.pinned.check(before, "first read", own=own)
        if self.dry_run:
            con.execute("PRAGMA query_only = ON")
        elif self.journal_mode == "wal":
            # Safe in WAL mode; saves an fsync per batch while holding the write lock.
            con.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints run between batches (_Run._checkpoint), outside the time that
            # sets the pause; otherwise one would run inside COMMIT every few batches.
            con.execute("PRAGMA wal_autocheckpoint = 0")

    def _abandon(self) -> None:
        """Close a connection to a file that is not the one found (a swap during the open)
        without a checkpoint, then the guard and the pinned directory."""
        assert self.pinned is not None
        try:
            self.pinned.close_without_checkpoint(self.con)
        finally:
            try:
                self._close_guard()
            finally:
                self._unpin()

    def _guard(self, path: str, busy: float, locks: LockWatch | None) -> Guard:
        """Open the guard's descriptor of the database file and take its lock, before SQLite
        opens the file; a WAL database is first inspected for lost locks (see dblocks.py)."""
        if self.pinned is not None:
            try:
                fd = self.pinned.open_file()
            except Refused as exc:
                raise DbError(str(exc)) from None
        else:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                raise DbError(f"cannot open it: {exc.strerror}") from None
        try:
            if locks is not None and header_says_wal(fd):
                db = os.fstat(fd)
                shm = self._side_stat("-shm", path)
                locks.check(self.file.label, self.file.path, db, shm, fd)
            # a rollback-journal database: no lock (it would deadlock a committing writer);
            # a -wal beside it is opened by SQLite whatever the header says
            rollback = header_says_rollback(fd) and self._side_stat("-wal", path) is None
        except BaseException:
            os.close(fd)
            raise
        try:
            return Guard(fd, self.file.label, wait=busy, lock=not rollback)
        except GuardError as exc:
            raise DbError(str(exc)) from None

    def _side_stat(self, suffix: str, path: str) -> os.stat_result | None:
        """The ``-shm`` (or another side file) beside the database, not following a symlink."""
        try:
            if self.pinned is not None:
                return os.stat(self.pinned.name + suffix, dir_fd=self.pinned.dir.fd,
                               follow_symlinks=False)
            return os.stat(path + suffix, follow_symlinks=False)
        except OSError:
            return None

    def _fail_open(self, exc: BaseException) -> None:
        """Clean up after a failed open; an error while acting as the owner says so."""
        owner = self.pinned.acting_as if self.pinned is not None else None
        self._close_guard()
        self._unpin()
        if isinstance(exc, sqlite3.OperationalError) and is_locked(exc):
            # a writer held it past busy_timeout (a rollback-journal file: SQLite's own wait)
            raise DbError(describe(exc)) from exc
        if owner is not None and isinstance(exc, sqlite3.OperationalError):
            if _read_only_fs(os.path.dirname(self.file.path)):
                # under the service: outside its ReadWritePaths=, not a question of owners
                raise DbError(f"{describe(exc)}: {os.path.dirname(self.file.path)} is on a "
                              "read-only file system (outside the service's writable paths: "
                              "add it with `systemctl edit architect-cleanup.service` "
                              "(ReadWritePaths=))") from exc
            raise DbError(f"{describe(exc)} (opened as its owner, uid {owner}, as the "
                          "dashboard would: may that user reach and write it?)") from exc

    def _unpin(self) -> None:
        if self.pinned is not None:
            self.pinned.close()

    def _close_guard(self) -> None:
        """Only after the connection's close (see dblocks.py)."""
        if self.guard is not None:
            self.guard.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        try:
            self._release_own_sides()
            self.con.close()
        finally:
            try:
                self._close_guard()
            finally:
                self._unpin()

    def _release_own_sides(self) -> None:
        """Drop the guard's lock just before the close when the -wal/-shm are ours and no
        other process has the database open, so SQLite removes what it made (dblocks.py)."""
        guard = self.guard
        if guard is None or not guard.locked or not self._sides_ours:
            return
        try:
            if opened_elsewhere(os.fstat(guard.fd)):
                return
        except OSError:
            return
        guard.release_lock()

    # --- schema ---------------------------------------------------------------------------

    def tables(self) -> dict[str, str]:
        """lower-case name -> name of every table."""
        rows = self.con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return {str(n).lower(): str(n) for (n,) in rows}

    def find_table(self, names: Iterable[str]) -> str | None:
        """The first of *names* that exists (SQLite names are case-insensitive)."""
        tables = self.tables()
        return next((tables[n.lower()] for n in names if n.lower() in tables), None)

    def columns(self, table: str) -> dict[str, str]:
        """lower-case name -> name of the table's columns (``PRAGMA table_info``)."""
        rows = self.con.execute("SELECT name FROM pragma_table_info(?)", (table,))
        return {str(n).lower(): str(n) for (n,) in rows}

    def column_type(self, table: str, column: str) -> str:
        """The declared type of a column ("" when it has none)."""
        row = self.con.execute("SELECT type FROM pragma_table_info(?) WHERE name = ? "
                               "COLLATE NOCASE", (table, column)).fetchone()
        return str(row[0]) if row is not None else ""

    def has_rowid(self, table: str) -> bool:
        try:
            self.con.execute(f"SELECT _rowid_ FROM main.{quote(table)} LIMIT 0")
        except sqlite3.OperationalError:
            return False
        return True

    def rowid_alias(self, table: str) -> str | None:
        """The table's INTEGER PRIMARY KEY column (another name for its rowid), if any."""
        rows = self.con.execute(
            "SELECT name, type FROM pragma_table_info(?) WHERE pk > 0", (table,)).fetchall()
        if len(rows) == 1 and str(rows[0][1]).upper() == "INTEGER" and self.has_rowid(table):
            return str(rows[0][0])
        return None

    def _primary_key(self, table: str) -> tuple[str, ...]:
        rows = self.con.execute(
            "SELECT name, pk FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,))
        return tuple(str(n) for n, _ in rows)

    def _indexed(self, table: str, cols: tuple[str, ...]) -> bool:
        """Whether a lookup by *cols* in *table* can use an index (or is a rowid lookup)."""
        want = {c.lower() for c in cols}
        pk = self._primary_key(table)
        if len(cols) == 1 and len(pk) == 1 and pk[0].lower() in want:
            return True  # the primary key has its own index (or is the rowid)
        for name, partial in self.con.execute(
                "SELECT name, partial FROM pragma_index_list(?)", (table,)).fetchall():
            if partial:
                continue
            lead = [str(r[0]).lower() for r in self.con.execute(
                "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,))][:len(cols)]
            if set(lead) == want:
                return True
        return False

    def references(self, table: str) -> list[Reference]:
        """Every foreign key in this database that points at *table*."""
        out: list[Reference] = []
        pk = self._primary_key(table)
        for child in self.tables().values():
            groups: dict[int, list[tuple[Any, ...]]] = {}
            for row in self.con.execute(
                    'SELECT id, seq, "table", "from", "to", on_delete '
                    "FROM pragma_foreign_key_list(?)", (child,)):
                if str(row[2]).lower() == table.lower():
                    groups.setdefault(int(row[0]), []).append(row)
            for rows in groups.values():
                rows.sort(key=lambda r: int(r[1]))
                cols = tuple(str(r[3]) for r in rows)
                parent = tuple(str(r[4]) for r in rows) if all(r[4] for r in rows) else pk
                if len(parent) != len(cols):
                    log.warning("%s: foreign key %s(%s) -> %s does not match a key; ignored",
                                self.file.label, child, ", ".join(cols), table)
                    continue
                out.append(Reference(child, cols, parent, str(rows[0][5]).upper(),
                                     self._indexed(child, cols), self.has_rowid(child)))
        return out

    def column_values(self, table: str, column: str) -> Iterator[str]:
        """Every non-NULL value of *column* in *table*, as text (the orphans' references):
        read through this connection, so the guard of the dashboard's WAL holds."""
        cur = self.con.execute(f"SELECT {quote(column)} FROM main.{quote(table)} "
                               f"WHERE {quote(column)} IS NOT NULL")
        for (value,) in cur:
            yield value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    # --- changing rows --------------------------------------------------------------------

    def apply(self, plan: Plan, out: Outcome, *, batch_size: int | None = None,
              check_stop: Callable[[], None] = lambda: None,
              progress: Callable[[Outcome], None] = lambda _o: None) -> None:
        """Delete (or archive) the rows *plan* selects, batch by batch; in a dry run count them.

        *out* is filled as batches commit, so it stays exact when a batch fails; errors raise
        (``sqlite3.Error`` or :class:`DbError`) after the batches before them committed."""
        run = _Run(self, plan, out, batch_size or self.cfg.batch_size)
        run.execute(check_stop, progress)
        run.count_table(check_stop)

    def insert(self, table: str, values: dict[str, Any]) -> None:
        """Insert one row in its own short transaction (the activity log)."""
        if self.dry_run:
            raise DbError("a dry run's connection does not write")
        cols = ", ".join(quote(k) for k in values)
        marks = ", ".join("?" for _ in values)
        self.con.execute("BEGIN IMMEDIATE")
        try:
            self.con.execute(f"INSERT INTO main.{quote(table)} ({cols}) VALUES ({marks})",
                             tuple(values.values()))
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def checkpoint(self) -> str | None:
        """After a real run changed rows: copy the WAL back into the database and truncate it.

        A PASSIVE checkpoint first (it never blocks the dashboard), then TRUNCATE, which blocks
        new writers while it waits, with a short wait. Returns a note when the WAL stays."""
        if self.dry_run or not self.changed or self.journal_mode != "wal":
            return None
        busy_ms = int(self.cfg.busy_timeout.total_seconds() * 1000)
        self.con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.con.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
        try:
            busy, frames, done = self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.con.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if busy:
            return (f"{self.file.label}: WAL not truncated ({done} of {frames} pages copied): "
                    "the dashboard was busy; SQLite finishes it on a later checkpoint")
        return None

    def _scratch(self) -> _Scratch:
        return _Scratch(self)


class _Scratch:
    """Lets a dry run's ``query_only`` connection write to its own TEMP tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> None:
        if self.db.dry_run:
            self.db.con.execute("PRAGMA query_only = OFF")

    def __exit__(self, *exc: object) -> None:
        if self.db.dry_run:
            self.db.con.execute("PRAGMA query_only = ON")


class _ChildMap:
    """child rowid -> referenced key, for a referencing column without an index, kept in a
    TEMP table of this connection (the dashboard's schema is never touched).

    Built once, then brought up to date inside each batch's transaction from the rows added
    since (rowids above the high-water mark), so a child the dashboard adds during the purge is
    seen. Every use checks the child row itself, so stale entries do no harm."""

    def __init__(self, db: Database, ref: Reference, n: int) -> None:
        self.db = db
        self.ref = ref
        self.name = f"temp._architect_cleanup_refs_{n}"
        self.hwm: int | None = None
        with db._scratch():
            db.con.execute(f"DROP TABLE IF EXISTS {self.name}")
            db.con.execute(f"CREATE TABLE {self.name} (child INTEGER PRIMARY KEY, parent)")
            db.con.execute(f"CREATE INDEX {self.name}_parent ON "
                           f"_architect_cleanup_refs_{n} (parent)")

    def refresh(self) -> None:
        child = f"main.{quote(self.ref.child)}"
        col = quote(self.ref.columns[0])
        top = self.db.con.execute(f"SELECT max(_rowid_) FROM {child}").fetchone()[0]
        if top is None or (self.hwm is not None and top <= self.hwm):
            return
        low = ROWID_MIN if self.hwm is None else self.hwm + 1
        with self.db._scratch():
            self.db.con.execute(
                f"INSERT OR REPLACE INTO {self.name} (child, parent) "
                f"SELECT _rowid_, {col} FROM {child} "
                f"WHERE _rowid_ BETWEEN :lo AND :hi AND {col} IS NOT NULL",
                {"lo": low, "hi": top})
        self.hwm = int(top)

    def rows_sql(self, parents: str) -> str:
        """WHERE clause over the child (alias ``_c``) for rows referring to *parents*."""
        col = quote(self.ref.columns[0])
        return (f"_c._rowid_ IN (SELECT _k.child FROM {self.name} AS _k "
                f"WHERE _k.parent IN ({parents})) AND _c.{col} IN ({parents})")


class _Run:
    """One :meth:`Database.apply`: the SQL for the plan and the batch loop."""

    def __init__(self, db: Database, plan: Plan, out: Outcome, batch_size: int) -> None:
        self.db = db
        self.con = db.con
        self.plan = plan
        self.out = out
        self.batch_size = batch_size
        #: rows the next batch takes: batch_size at most, fewer while batches hold the
        #: write lock longer than HOLD_TARGET (see _fit)
        self.rows = batch_size
        self.table = f"main.{quote(plan.table)}"
        self.params = dict(plan.params, cutoff=plan.cutoff)
        if not db.has_rowid(plan.table):
            raise DbError(f"{plan.table} is a WITHOUT ROWID table; not supported")
        self.refs = db.references(plan.table) if plan.set_sql is None else []
        self.rowid_key = db.rowid_alias(plan.table)
        #: references whose column has INTEGER affinity: its values compare with rowids as
        #: numbers (a TEXT column's '10' sorts below 9; SQLite's own lookup converts it)
        self.integer_refs = {r for r in self.refs
                             if "INT" in db.column_type(r.child, r.columns[0]).upper()}
        self.emulate = self._choose_mode()
        self.maps: dict[Reference, _ChildMap] = {}
        self._since_checkpoint = 0
        self._checkpoint_every = 1
        self._wal_frames = 0
        self._wal_copied_all = False  # the last checkpoint copied every frame of the WAL
        self._free_until = 0.0  # monotonic time before which no batch takes the write lock
        if self.emulate:
            for i, r in enumerate(x for x in self.refs if not x.indexed):
                self.maps[r] = _ChildMap(db, r, i)
        self.cand = f"({plan.scope}) AND ({plan.time_expr}) < :cutoff"
        self.protect = " OR ".join(self._refers(r) for r in self.refs if r.protects)
        self.keep_protected = f" AND NOT ({self.protect})" if self.protect else ""

    def _choose_mode(self) -> bool:
        """True when the ON DELETE actions are applied here rather than by SQLite (see the
        module docstring): only when SQLite would scan a child table per deleted row."""
        slow = [r for r in self.refs if not r.indexed]
        if not slow:
            return False
        if all(r.on_delete in _EMULATED_ACTIONS and len(r.columns) == 1
               and (r.indexed or r.child_has_rowid) for r in self.refs):
            log.debug("%s: %s: applying %s here (no index on the referencing column)",
                      self.db.file.label, self.plan.table,
                      "; ".join(r.describe() for r in slow))
            return True
        self.out.notes.append(
            f"{self.plan.table}: no index on " + ", ".join(r.describe() for r in slow)
            + ": SQLite scans that table for every deleted row; this can be very slow "
              "(an index on the referencing column fixes it)")
        return False

    # SQL pieces; the purged table is _t, a referencing one _c.

    def _parents(self, r: Reference, where: str) -> str:
        cols = ", ".join(f"_t.{quote(c)}" for c in r.parent_columns)
        return f"SELECT {cols} FROM {self.table} AS _t WHERE {where}"

    def _child_where(self, r: Reference, parents: str) -> str:
        m = self.maps.get(r)
        if m is not None:
            return m.rows_sql(parents)
        cols = ", ".join(f"_c.{quote(c)}" for c in r.columns)
        return f"({cols}) IN ({parents})"

    def _refers(self, r: Reference) -> str:
        """SQL over ``_t``: some row of *r*'s table refers to this row."""
        match = " AND ".join(f"_c.{quote(c)} = _t.{quote(p)}"
                             for c, p in zip(r.columns, r.parent_columns, strict=True))
        m = self.maps.get(r)
        if m is not None:
            return (f"EXISTS (SELECT 1 FROM {m.name} AS _k JOIN main.{quote(r.child)} AS _c "
                    f"ON _c._rowid_ = _k.child WHERE _k.parent = _t.{quote(r.parent_columns[0])}"
                    f" AND {match})")
        return f"EXISTS (SELECT 1 FROM main.{quote(r.child)} AS _c WHERE {match})"

    def next_batch_sql(self) -> str:
        """The next batch: the rowid range holding the next ``batch_size`` candidates, walked in
        rowid order (``NOT INDEXED``, so no sort), and (in a dry run; a real run counts them in
        its transaction) how many of them a reference protects."""
        protected = (self.protect or "0") if self.db.dry_run else "0"
        return (f"SELECT max(r), count(*), total(p) FROM (SELECT _t._rowid_ AS r, "
                f"({protected}) AS p FROM {self.table} AS _t NOT INDEXED "
                f"WHERE _t._rowid_ >= :lo AND {self.cand} ORDER BY _t._rowid_ LIMIT :n)")

    def change_sql(self, where: str) -> str:
        if self.plan.set_sql is not None:
            return f"UPDATE {self.table} AS _t SET {self.plan.set_sql} WHERE {where}"
        return f"DELETE FROM {self.table} AS _t WHERE {where}"

    # --- the loop ---------------------------------------------------------------------------

    def count_table(self, check_stop: Callable[[], None]) -> None:
        """After the purge: how many rows the rule is about stay, and how many of those have no
        usable time; read in chunks of SCAN_CHUNK rows. (Counting after the purge rather than
        before reads fewer rows; undated rows are never changed, so the numbers are the same.)
        """
        scope, t = self.plan.scope, self.plan.time_expr
        agg = (f"SELECT count(*), total(CASE WHEN ({scope}) THEN 1 ELSE 0 END), "
               f"total(CASE WHEN ({scope}) THEN (CASE WHEN ({t}) IS NULL THEN 1 ELSE 0 END) "
               f"ELSE 0 END) FROM {self.table} AS _t WHERE _t._rowid_ BETWEEN :lo AND :hi")
        step = (f"SELECT _t._rowid_ FROM {self.table} AS _t NOT INDEXED "
                f"WHERE _t._rowid_ >= :lo ORDER BY _t._rowid_ LIMIT 1 OFFSET :k")
        rows = in_scope = 0
        lo = ROWID_MIN
        while True:
            check_stop()
            row = self.con.execute(step, {"lo": lo, "k": SCAN_CHUNK - 1}).fetchone()
            hi = ROWID_MAX if row is None else int(row[0])
            n, s, u = self.con.execute(agg, dict(self.params, lo=lo, hi=hi)).fetchone()
            rows += int(n)
            in_scope += int(s)
            self.out.undated += int(u)
            if hi == ROWID_MAX:
                break
            lo = hi + 1
        if self.db.dry_run:  # nothing changed: what stays is what the run would not change
            self.out.checked += rows
            self.out.kept += max(in_scope - self.out.changed, 0)
        else:
            self.out.checked += rows + (self.out.changed if self.plan.set_sql is None else 0)
            self.out.kept += in_scope

    def execute(self, check_stop: Callable[[], None],
                progress: Callable[[Outcome], None]) -> None:
        self._refresh()  # the first, full read of the child keys: never inside a batch
        nxt = self.next_batch_sql()
        lo = ROWID_MIN
        while True:
            check_stop()
            if self.db.dry_run:
                self._refresh()
            hi, n, p = self.con.execute(
                nxt, dict(self.params, lo=lo, n=self.rows)).fetchone()
            if hi is None:
                return
            hi = int(hi)
            if self.db.dry_run:
                self.out.changed += int(n) - int(p)
                self.out.skipped += int(p)
                self.out.cleared += self._clear(lo, hi, count_only=True)
            else:
                self._batch(lo, hi, split=True)
            self.out.batches += 1
            progress(self.out)
            if hi >= ROWID_MAX:
                return
            lo = hi + 1

    def _refresh(self) -> None:
        for m in self.maps.values():
            m.refresh()

    def children_sql(self, r: Reference) -> str:
        """SQL over ``_c`` (a row of *r*'s table): it refers to a row this batch (``:lo`` ..
        ``:hi``) deletes.

        When the reference points at the rowid (``INTEGER PRIMARY KEY``, as ``parent_id``
        does), the referring value itself must lie in the batch's range, so only the children
        of this batch are looked at (through the index, or the TEMP map); otherwise the
        batch's keys are collected first."""
        m = self.maps.get(r)
        if (self.rowid_key is not None and len(r.parent_columns) == 1
                and r.parent_columns[0].lower() == self.rowid_key.lower()
                and r in self.integer_refs):
            col = f"_c.{quote(r.columns[0])}"
            owner = (f"EXISTS (SELECT 1 FROM {self.table} AS _t WHERE _t._rowid_ = {col} "
                     f"AND {self.cand}{self.keep_protected})")
            rows = f"{col} BETWEEN :lo AND :hi AND {owner}"
            if m is not None:
                rows = (f"_c._rowid_ IN (SELECT _k.child FROM {m.name} AS _k "
                        f"WHERE _k.parent BETWEEN :lo AND :hi) AND {rows}")
            return rows
        where = f"_t._rowid_ BETWEEN :lo AND :hi AND {self.cand}{self.keep_protected}"
        return self._child_where(r, self._parents(r, where))

    def _clear(self, lo: int, hi: int, *, count_only: bool) -> int:
        """ON DELETE SET NULL for the rows about to go: counted (a dry run, or when SQLite
        applies it itself) or applied here (emulated)."""
        params = dict(self.params, lo=lo, hi=hi)
        total = 0
        for r in self.refs:
            if not r.clears:
                continue
            rows = self.children_sql(r)
            child = f"main.{quote(r.child)}"
            if count_only or not self.emulate:
                total += int(self.con.execute(
                    f"SELECT count(*) FROM {child} AS _c WHERE {rows}", params).fetchone()[0])
            else:
                sets = ", ".join(f"{quote(c)} = NULL" for c in r.columns)
                total += self.con.execute(
                    f"UPDATE {child} AS _c SET {sets} WHERE {rows}", params).rowcount
        return total

    def _batch(self, lo: int, hi: int, *, split: bool) -> None:
        """The pause, one short write transaction over rowids lo..hi, a WAL checkpoint.

        Between two transactions the write lock stays free at least as long as the first one
        held it (the checkpoint and the read that finds the next batch count toward that):
        without the pause the dashboard's writer starves, because its busy retries back off
        while this loop re-takes the lock at once."""
        wait = self._free_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if self.emulate:
            self.con.execute("PRAGMA foreign_keys = OFF")  # the actions are applied here
        try:
            held = self._transaction(lo, hi, split=split)
        finally:
            if self.emulate:
                self.con.execute("PRAGMA foreign_keys = ON")
        if held is None:
            return
        self._free_until = time.monotonic() + pause_after(held)
        self._fit(held)
        self._checkpoint()

    def _fit(self, held: float) -> None:
        """Rows for the next batch, from how long this one held the write lock (HOLD_TARGET).

        WAL databases only: a rollback-journal commit writes and syncs the journal and the
        database file, which takes as long for 16 rows as for 1,000, so smaller batches only
        multiply the syncs (measured: 120,000 rows took 52 s in 16-row batches, 2 s in batches
        of 1,000) and the moments at which the dashboard's writer finds the lock taken."""
        if self.db.journal_mode != "wal":
            return
        if held > HOLD_TARGET:
            self.rows = max(min(MIN_BATCH, self.batch_size), self.rows // 2)
        elif held < HOLD_TARGET / 2:
            self.rows = min(self.batch_size, self.rows + max(1, self.rows // 4))

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint (it never blocks the dashboard) every few batches, about every
        CHECKPOINT_FRAMES new WAL frames, learning how many frames a batch writes."""
        if self.db.journal_mode != "wal":
            return
        self._since_checkpoint += 1
        if self._since_checkpoint < self._checkpoint_every:
            return
        _busy, frames, copied = self.con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        frames = max(int(frames), 0)
        # Once a checkpoint copied the whole WAL, the next write starts it again from its
        # first frame (unless a reader still used it: then this counts too many, the safe side).
        restarted = self._wal_copied_all or frames < self._wal_frames
        new = frames if restarted else frames - self._wal_frames
        per_batch = max(new, 1) / self._since_checkpoint
        self._checkpoint_every = max(1, min(100, int(CHECKPOINT_FRAMES / per_batch)))
        self._since_checkpoint = 0
        self._wal_frames = frames
        self._wal_copied_all = int(copied) >= frames

    def _transaction(self, lo: int, hi: int, *, split: bool) -> float | None:
        """The batch's transaction; returns how long it held the write lock (None when it
        was split into single rows, which pause on their own)."""
        where = f"_t._rowid_ BETWEEN :lo AND :hi AND {self.cand}"
        params = dict(self.params, lo=lo, hi=hi)
        con = self.con
        t0 = time.monotonic()
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise DbError(locked_message(exc, self.db.cfg, self.out, self.plan)) from exc
        try:
            self._refresh()
            skipped = 0
            if self.protect:
                skipped = int(con.execute(
                    f"SELECT count(*) FROM {self.table} AS _t WHERE {where} AND ({self.protect})",
                    params).fetchone()[0])
            cleared = self._clear(lo, hi, count_only=False)
            changed = con.execute(self.change_sql(where + self.keep_protected),
                                  params).rowcount
            con.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            con.execute("ROLLBACK")
            if split:
                self._one_by_one(lo, hi, where, params)
                return None
            self.out.skipped += 1
            if len(self.out.errors) < 20:
                self.out.errors.append(f"{self.plan.table} row {lo}: {exc}; kept")
            return time.monotonic() - t0
        except sqlite3.OperationalError as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise DbError(locked_message(exc, self.db.cfg, self.out, self.plan)) from exc
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        self.out.changed += changed
        self.out.skipped += skipped
        self.out.cleared += cleared
        self.db.changed += changed
        return time.monotonic() - t0

    def _one_by_one(self, lo: int, hi: int, where: str, params: dict[str, Any]) -> None:
        """A batch the schema refused (a trigger, a reference this code does not foresee):
        each of its rows in its own transaction, refused ones kept and counted as skipped."""
        ids = [int(r) for (r,) in self.con.execute(
            f"SELECT _t._rowid_ FROM {self.table} AS _t WHERE {where}{self.keep_protected}",
            params)]
        for rid in ids:
            self._batch(rid, rid, split=False)


def is_locked(exc: BaseException) -> bool:
    """Whether *exc* says another connection held the database past busy_timeout."""
    low = str(exc).lower()
    return "locked" in low or "busy" in low


def locked_message(exc: sqlite3.Error, cfg: DatabaseConfig, out: Outcome, plan: Plan) -> str:
    if is_locked(exc):
        verb = "archived" if plan.set_sql is not None else "deleted"
        return (f"database is locked: another connection held its write lock longer than "
                f"busy_timeout ({format_duration(cfg.busy_timeout)}); {out.changed:,} "
                f"{plan.what} {verb} before that")
    return describe(exc)


def describe(exc: BaseException) -> str:
    """A database error in plain words."""
    if isinstance(exc, DbError):
        return str(exc)
    text = str(exc)
    low = text.lower()
    if "file is not a database" in low or "malformed" in low:
        return f"cannot read it: {text} (corrupt, or not a SQLite database)"
    if "readonly" in low or "read-only" in low:
        return (f"{text} (outside the service's writable paths? add it with "
                "`systemctl edit architect-cleanup.service` (ReadWritePaths=))")
    if "unable to open" in low:
        return f"cannot open it: {text}"
    if is_locked(exc):
        return f"{text}: another connection held it longer than busy_timeout"
    return text


def cutoff(now: datetime, max_age: timedelta) -> float:
    """The Unix time before which a row is old enough."""
    return (now - max_age).timestamp()
