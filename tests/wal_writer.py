#!/usr/bin/python3
"""A dashboard that has lost its SQLite locks, as the real one does: a WAL-mode writer with a
small pool of connections used by worker threads, which at start copies its own live database
file (``shutil.copy2``, the dashboard's backup at every start). Closing the copy's descriptor
drops every POSIX lock the process holds on the file, while its connections stay open.

    wal_writer.py DB REPORT [THREADS] [INTERVAL_S]

Each thread takes a connection from the pool, inserts one row tagged ``writer-T-N`` into
``task_queue`` (the dashboard's database) or ``prompts`` (the assigner's), status ``pending``
(no cleanup rule touches it), commits, and only then counts the row as acknowledged.
Meanwhile a watcher records every moment ``-wal`` or ``-shm`` is not the file it was at start
(unlinked under the writer). On SIGTERM it writes REPORT (JSON: ok, failed, failures, acked
tags, replaced) and exits *without closing its connections*, as a service that is stopped or
killed does: only what it committed durably survives.

Prints ``ready`` once the copy is made and the pool's connections have lost their locks.
:class:`Writer` runs it from a test and reads its report.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: table -> (the INSERT of one tagged row, the column holding the tag)
TABLES = {
    "task_queue": ("INSERT INTO task_queue (task_type, task_data, status) "
                   "VALUES ('writer', ?, 'pending')", "task_data"),
    "prompts": ("INSERT INTO prompts (content, status) VALUES (?, 'pending')", "content"),
}


def _table(con: sqlite3.Connection) -> str:
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return next(t for t in TABLES if t in names)


def identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def main() -> int:
    db, report = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.003
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    pool: queue.Queue[sqlite3.Connection] = queue.Queue()
    for _ in range(threads):
        con = sqlite3.connect(db, timeout=5.0, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        table = _table(con)  # a read: the connection is in, its locks taken
        pool.put(con)
    insert = TABLES[table][0]
    shutil.copy2(db, db + ".bak")  # the backup at start: every POSIX lock on db is gone
    side = {s: identity(db + s) for s in ("-wal", "-shm")}
    lock = threading.Lock()
    ok = failed = 0
    failures: list[str] = []
    acked: list[str] = []
    replaced: list[str] = []

    def work(t: int) -> None:
        nonlocal ok, failed
        n = 0
        while not stop.is_set():
            n += 1
            tag = f"writer-{t}-{n}"
            con = pool.get()
            try:
                with con:
                    con.execute(insert, (tag,))
                with lock:
                    ok += 1
                    acked.append(tag)
            except sqlite3.Error as exc:
                with lock:
                    failed += 1
                    if len(failures) < 50:
                        failures.append(f"{tag}: {exc}")
            finally:
                pool.put(con)
            time.sleep(interval)

    def watch() -> None:
        while not stop.is_set():
            for suffix, was in side.items():
                now = identity(db + suffix)
                if now != was and len(replaced) < 50:
                    replaced.append(f"{suffix}: {'unlinked' if now is None else 'replaced'}")
                    side[suffix] = now
            time.sleep(0.001)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    watcher = threading.Thread(target=watch)
    for w in [*workers, watcher]:
        w.start()
    print("ready", flush=True)
    stop.wait()
    for w in [*workers, watcher]:
        w.join()
    with open(report, "w", encoding="utf-8") as fh:
        json.dump({"ok": ok, "failed": failed, "failures": failures, "acked": acked,
                   "replaced": replaced}, fh)
    os._exit(0)  # no close: the connections die with the process, as a stopped service's do


# --- the test's side -------------------------------------------------------------------------


@dataclass
class WriterReport:
    """What the writer saw, and what its restart finds."""

    ok: int
    failed: int
    failures: list[str]
    acked: list[str]
    replaced: list[str]
    died: str = ""
    found: int = 0
    integrity: str = ""

    @property
    def expected(self) -> int:
        return len(self.acked)

    def damage(self) -> list[str]:
        """Everything that went wrong for the writer (empty: nothing)."""
        out = []
        if self.died:
            out.append(f"the writer died: {self.died}")
        if self.failed:
            out.append(f"{self.failed} writes failed: {self.failures[:3]}")
        if self.found != self.expected:
            out.append(f"{self.expected - self.found} acknowledged rows missing")
        if self.replaced:
            out.append(f"-wal/-shm unlinked under the writer: {self.replaced[:3]}")
        if self.integrity != "ok":
            out.append(f"integrity_check: {self.integrity[:200]}")
        return out

    def figures(self) -> str:
        died = f"; DIED: {self.died}" if self.died else ""
        return (f"writes ok {self.ok}, failed {self.failed}; rows expected {self.expected}, "
                f"found {self.found}; -wal/-shm unlinked {len(self.replaced)}x{died}")


class Writer:
    """This script in its own process, started on *db*; :meth:`stop` ends it and checks."""

    def __init__(self, db: Path, report: Path, python: str = sys.executable) -> None:
        self.db = db
        self.report = report
        self.proc = subprocess.Popen([python, __file__, str(db), str(report)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.kill()
            raise AssertionError(f"the writer did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> WriterReport:
        """Stop it (it exits without closing its connections), then look, as its next start
        would, for every row it acknowledged, and check the database's integrity."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        try:
            doc = json.loads(self.report.read_text())
            self.report.unlink()
        except (OSError, ValueError) as exc:  # it died (a signal?) before its report
            doc = {"ok": 0, "failed": 0, "failures": [], "acked": [], "replaced": [],
                   "died": f"exit status {code}, no report ({exc})"}
        rep = WriterReport(doc["ok"], doc["failed"], doc["failures"], doc["acked"],
                           doc["replaced"], died=doc.get("died", ""))
        con = sqlite3.connect(self.db, timeout=30)
        try:
            table = _table(con)
            col = TABLES[table][1]
            rows = {r[0] for r in con.execute(
                f"SELECT {col} FROM {table} WHERE {col} LIKE 'writer-%'")}
            rep.found = sum(1 for tag in rep.acked if tag in rows)
            rep.integrity = str(con.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.DatabaseError as exc:  # what a broken WAL can leave: malformed
            rep.integrity = f"cannot read it: {exc}"
        finally:
            con.close()
        return rep

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)


if __name__ == "__main__":
    sys.exit(main())
