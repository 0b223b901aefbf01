"""Writing the history's items: one batch per transaction, in this process or in a process of
its own.

A dry run of a million files records 300,000 items; their inserts took a third of a second of
the run's own thread (`make bench`), time the walk waits for. :class:`Sink` hands the batches
to a child process instead (``python3 -I -S itemwrite.py DATABASE RUN_ID``, this file run as a
script: it imports the standard library only, so it starts in about 20 ms), which writes them
with its own connection on the other core while the walk goes on; the run's thread only
marshals each batch into a pipe (0.1 us an item).

The protocol on the child's stdin: frames of a 4-byte big-endian length and a
:mod:`marshal`-ed tuple: a group of items (``(kind, directory, rows)``, one directory's), or
a batch's end (``(first_id, recorded)``: the groups since the last end are one batch of
:meth:`ItemWriter.write`); end of file ends it. The child ignores SIGINT and SIGTERM (the
run it writes for decides when to stop: a stopped run's items up to the stop are recorded)
and answers on stdout, once, with the marshalled first failure's message, or None. After a
failure it reads on without writing, so the run never blocks on it. It imports what it uses
and little else (with ``json``, ``subprocess`` and ``typing`` it took 21 ms to start, on the
core the walk's listing thread needs), and ends with ``os._exit`` once it has answered.

Safety: the child only ever opens the history database the run opened, by the path it was
given, and writes rows of the ``items``, ``texts`` and ``kinds`` tables and the run's
``items_recorded``; it never touches a cleanup target.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # typing's, without importing it in the child
if TYPE_CHECKING:
    import subprocess
    from typing import IO, Any

#: one item of a directory (:meth:`history.RunWriter.dir_items`): name, size, mtime (Unix
#: seconds) and reason
ItemRow = tuple[str, int, float | None, str]
#: items of one kind and directory, as a writer buffers them: (target, env, action), the
#: directory's path with its final ``/``, and the items
Group = tuple[tuple[str, str, str], str, Sequence[ItemRow]]

#: the ids of at most this many reasons and kinds are remembered between batches
TEXT_CACHE = 4096
#: texts looked up per query (SQLite allows 32,766 parameters)
IN_CHUNK = 500
#: how long a history connection waits for another's write lock (ms)
BUSY_TIMEOUT_MS = 5000
#: SQLite's page cache per history connection (KiB; SQLite's default is 2,000). The run's
#: connection prunes the items of older runs, up to a few hundred thousand rows: with the
#: default cache its peak RSS grew 1.4 MB from a 100k-file tree to a 1M-file one (the cache
#: fills only on a big prune), with 500 KiB 0.5 MB, at the same speed (`make bench` part 3).
CACHE_KIB = 512
#: the pipe to the child holds this many bytes (about 18,000 items): the run's thread writes
#: a batch without waiting while the child is busy with the one before
PIPE_BYTES = 1 << 20
#: how long the end of a run waits for the child to write what it was handed (seconds)
FINISH_TIMEOUT = 120.0
_FRAME = struct.Struct(">I")
#: the signals the child ignores: the run it writes for decides when it ends
_IGNORED = {signal.SIGINT, signal.SIGTERM}
#: the child's niceness above the run's while the walk goes on: on a busy machine the walk
#: it records goes first, and the run's thread waits for it only when the pipe is full. Under
#: the unit (Nice=19, the most there is) both are equal. A dry run of 1M files from a shell:
#: 2.31 -> 2.13 s. Once the run waits for it (Sink.finish) it gets the run's priority back
#: where the run may give it (root): the end of a 100k-file dry run waited 4-16 ms for it
#: at +5, 4-5 ms at the run's.
NICER = 5


def escape_char(ch: str) -> str:
    """How a character that is not printable is written (``fs.display``, the history): a
    byte of a name that is not UTF-8 (``os.fsdecode`` gives it as a lone surrogate) as
    ``\\xNN``, any other as Python writes it (``\\n``, ``\\x01``, ``\\ud800``)."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape'd byte
        return f"\\x{code - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii")


def storable(text: str) -> str:
    """*text* as SQLite's UTF-8 text can hold it: each lone surrogate (a byte of a file name
    that is not UTF-8, as ``os.fsdecode`` gives it) escaped as the journal shows it
    (:func:`escape_char`: ``\\xNN``). Other texts are unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(escape_char(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


class transaction:
    """One ``BEGIN IMMEDIATE`` transaction on *conn*: committed at the end of the block,
    rolled back when the block raises (anything, also KeyboardInterrupt)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: object,
                 tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # SQLite already rolled back after e.g. SQLITE_FULL
            self.conn.execute("ROLLBACK")


class ItemWriter:
    """The items of one run, a batch at a time: each batch in one transaction, with the ids
    of its kinds, directories and reasons (stored once each in ``kinds`` and ``texts``).

    It remembers the ids of up to :data:`TEXT_CACHE` reasons and kinds (a few hundred repeat
    over a run) and a directory's only for its batch (its items come together): memory stays
    flat whatever the tree."""

    _ITEM_SQL = ("INSERT INTO items (id, run_id, kind, dir, name, size, mtime, reason) "
                 "VALUES (?,?,?,?,?,?,?,?)")

    def __init__(self, conn: sqlite3.Connection, run_id: int) -> None:
        self.conn = conn
        self.run_id = run_id
        self._texts: dict[str, int] = {}
        self._kinds: dict[tuple[str, str, str], int] = {}

    def write(self, groups: Sequence[Group], first: int, recorded: int) -> None:
        """One batch: items with the ids *first* onwards, and the run's ``items_recorded``
        set to *recorded*. A name that is not UTF-8 makes the batch go again, such texts
        escaped (:func:`storable`)."""
        try:
            self._write(groups, first, recorded, clean=False)
        except UnicodeEncodeError:
            # os.fsdecode gives a byte that is not UTF-8 as a lone surrogate, which SQLite's
            # text cannot hold. The ids remembered may be of texts the failed transaction
            # rolled back.
            self._texts.clear()
            self._kinds.clear()
            self._write(groups, first, recorded, clean=True)

    def _write(self, groups: Sequence[Group], first: int, recorded: int, *,
               clean: bool) -> None:
        with transaction(self.conn):
            texts, kinds = self._resolve(groups, clean=clean)
            run_id = self.run_id
            rows: list[tuple[Any, ...]] = []
            for kind, folder, items in groups:
                k, d, i = kinds[kind], texts[folder], first + len(rows)
                rows += [(i + j, run_id, k, d, storable(name) if clean else name, size, mtime,
                          texts[why]) for j, (name, size, mtime, why) in enumerate(items)]
            self.conn.executemany(self._ITEM_SQL, rows)
            self.conn.execute("UPDATE runs SET items_recorded = ? WHERE id = ?",
                              (recorded, run_id))

    def _resolve(self, groups: Sequence[Group], *, clean: bool
                 ) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
        """The ids of the kinds, directories and reasons of a batch's *groups*, the new ones
        added (inside the batch's transaction)."""
        conn = self.conn
        reasons, kinds = self._texts, self._kinds
        wanted = {r[3] for _k, _f, rows in groups for r in rows}
        new = [t for t in wanted if t not in reasons]
        if len(reasons) + len(new) > TEXT_CACHE:
            reasons.clear()
            new = list(wanted)
        folders = {folder for _k, folder, _r in groups}
        ids = self._text_ids([*new, *folders], clean=clean)
        reasons.update((t, ids[t]) for t in new)
        texts = {**reasons, **{f: ids[f] for f in folders}}
        new_kinds = [k for k in {k for k, _f, _r in groups} if k not in kinds]
        if len(kinds) + len(new_kinds) > TEXT_CACHE:
            kinds.clear()
            new_kinds = list({k for k, _f, _r in groups})
        conn.executemany("INSERT OR IGNORE INTO kinds (target, env, action) VALUES (?, ?, ?)",
                         new_kinds)
        for kind in new_kinds:
            kinds[kind] = int(conn.execute(
                "SELECT id FROM kinds WHERE target = ? AND env = ? AND action = ?",
                kind).fetchone()[0])
        return texts, kinds

    def _text_ids(self, wanted: list[str], *, clean: bool) -> dict[str, int]:
        """The id of each text of *wanted* in ``texts``, added where new (escaped where
        SQLite cannot hold it when *clean*)."""
        conn = self.conn
        stored = [storable(t) for t in wanted] if clean else wanted
        conn.executemany("INSERT OR IGNORE INTO texts (text) VALUES (?)", [(t,) for t in stored])
        out: dict[str, int] = {}
        for i in range(0, len(wanted), IN_CHUNK):
            part = stored[i:i + IN_CHUNK]
            ids = dict(conn.execute(
                f"SELECT text, id FROM texts WHERE text IN ({','.join('?' * len(part))})",
                part).fetchall())
            for t, st in zip(wanted[i:i + IN_CHUNK], part, strict=True):
                out[t] = int(ids[st])
        return out


def connect(path: str) -> sqlite3.Connection:
    """A connection to the history database as a run writes it (the file exists: the run
    opened it, and set it to WAL)."""
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


class SinkError(Exception):
    """The child process cannot take or did not write the items; the message says why."""


class Sink:
    """The child process that writes a run's item batches (see the module's docstring).
    :meth:`start` it, :meth:`send` batches, :meth:`finish` to wait for them to be written."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, path: str, run_id: int) -> Sink:
        """Start the child; raises OSError when no process can be started (``TasksMax=``,
        memory): the caller then writes the items itself."""
        # The child starts with SIGINT and SIGTERM blocked (it inherits this thread's mask),
        # and ignores them before it unblocks them: one sent while it starts is dropped,
        # never its death. Here they wait, blocked, until the child runs.
        import fcntl  # noqa: PLC0415 - the run's side only: the child starts without them
        import subprocess  # noqa: PLC0415
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _IGNORED)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), path, str(run_id)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                process_group=0)  # a terminal's Ctrl-C is the run's to handle
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # a smaller pipe only makes the run wait sooner
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return cls(proc)

    def send(self, groups: Sequence[Group], first: int, recorded: int) -> None:
        """Hand one batch over (blocks while the pipe is full). Raises :class:`SinkError`
        when the child has ended.

        A frame per directory, then the batch's end: small pieces, each freed before the
        next is made (one marshalled batch of 60-100 KB at a time left the real run's heap
        2 MB larger at 1M files, `make bench` part 3)."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            for kind, folder, rows in groups:
                data = marshal.dumps((kind, folder, rows if isinstance(rows, list | tuple)
                                      else list(rows)))
                stdin.write(_FRAME.pack(len(data)) + data)
            data = marshal.dumps((first, recorded))
            stdin.write(_FRAME.pack(len(data)) + data)
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise SinkError(f"the item writer (pid {self.proc.pid}) ended: "
                            f"{self._ended()}") from exc

    def finish(self, timeout: float = FINISH_TIMEOUT) -> str | None:
        """End the input, wait for the child to write what it was handed; its problem, or
        None when every batch was written."""
        import subprocess  # noqa: PLC0415 - see start
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        # the run waits for it now: at the run's own priority (root may raise it back)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return (f"the item writer (pid {proc.pid}) did not finish within "
                    f"{timeout:.0f} s; stopped")
        answer = proc.stdout.read()
        proc.stdout.close()
        try:
            problem = marshal.loads(answer)  # noqa: S302 - from the child this run started
        except (ValueError, EOFError, TypeError):
            problem = False
        if problem is not None and not isinstance(problem, str):
            return f"the item writer (pid {proc.pid}) ended: {self._ended()}"
        return problem

    def _ended(self) -> str:
        code = self.proc.wait()
        if code < 0:
            return f"killed by signal {-code}"
        return f"exit status {code}"


def _read_frame(stdin: IO[bytes]) -> Any | None:
    head = stdin.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    data = stdin.read(size)
    if len(data) < size:
        return None
    return marshal.loads(data)  # noqa: S302 - from the run that started this process


def serve(path: str, run_id: int, stdin: IO[bytes]) -> str | None:
    """The child's loop: write each batch read from *stdin* until its end; the first
    problem (then the rest is read and dropped), or None."""
    problem: str | None = None
    writer: ItemWriter | None = None
    try:
        writer = ItemWriter(connect(path), run_id)
    except (sqlite3.Error, OSError) as exc:
        problem = f"cannot open {path}: {exc}"
    groups: list[Group] = []
    while (frame := _read_frame(stdin)) is not None:
        if problem is not None or writer is None:
            continue
        if len(frame) == 3:  # one directory's items
            groups.append(frame)
            continue
        first, recorded = frame  # the batch's end
        batch, groups = groups, []
        try:
            writer.write(batch, first, recorded)
        except (sqlite3.Error, OSError) as exc:
            problem = str(exc)
    if writer is not None:
        writer.conn.close()
    return problem


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError):
        os.nice(NICER)
    for sig in _IGNORED:
        signal.signal(sig, signal.SIG_IGN)  # drops one sent while it started
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _IGNORED)
    try:
        problem = serve(argv[1], int(argv[2]), sys.stdin.buffer)
    except Exception as exc:  # answered to the run, which logs it
        problem = f"{exc.__class__.__name__}: {exc}"
    sys.stdout.buffer.write(marshal.dumps(problem))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # Nothing is left to clean up: the connection is closed and the answer flushed. The
    # interpreter's own teardown took 10 ms, which the run waits for at its end.
    os._exit(main(sys.argv))
