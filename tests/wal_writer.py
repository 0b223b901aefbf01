#!/usr/bin/python3
"""A dashboard that has lost its SQLite locks, as the real one does: a WAL-mode writer with a
small pool of connections used by worker threads, which at start copies its own live database
file (``shutil.copy2``, the dashboard's backup at every start). Closing the copy's descriptor
drops every POSIX lock the process holds on the file, while its connections stay open.

    wal_writer.py DB REPORT [THREADS] [INTERVAL_S]

Each thread takes a connection from the pool, inserts one ``task_queue`` row tagged
``writer-T-N`` (status ``pending``: no cleanup rule touches it), commits, and only then counts
the row as acknowledged. Meanwhile a watcher records every moment ``-wal`` or ``-shm`` is not
the file it was at start (unlinked under the writer). On SIGTERM it writes REPORT (JSON: ok,
failed, failures, acked tags, replaced) and exits *without closing its connections*, as a
service that is stopped or killed does: only what it committed durably survives.

Prints ``ready`` once the copy is made and the pool's connections have lost their locks.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import sys
import threading
import time

stop = threading.Event()


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
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    pool: queue.Queue[sqlite3.Connection] = queue.Queue()
    for _ in range(threads):
        con = sqlite3.connect(db, timeout=5.0, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("SELECT count(*) FROM task_queue").fetchone()  # connected: locks taken
        pool.put(con)
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
                    con.execute("INSERT INTO task_queue (task_type, task_data, status) "
                                "VALUES ('writer', ?, 'pending')", (tag,))
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


if __name__ == "__main__":
    sys.exit(main())
