#!/usr/bin/python3
"""A simulated dashboard writer: one INSERT into task_queue every 10 ms, each timed.

Run as its own process (``dashboard.py DB OUT [--interval S]``), with its own connection opened
the way the dashboard's code opens one (Python's sqlite3, a 5 s busy timeout, default
``synchronous``), each insert its own transaction. The transaction is spelled ``BEGIN
IMMEDIATE; INSERT; COMMIT`` rather than an autocommit INSERT — for one statement SQLite does
the same (take the write lock through its busy handler, write, commit with an fsync) — so the
time waiting for the lock and the time committing can be told apart. It stops on SIGTERM and
writes one line per insert to OUT: ``start`` (CLOCK_MONOTONIC seconds), ``latency``, ``ok`` (1,
or 0 when it failed), ``lock wait`` and ``commit`` (seconds). A slow insert is not made up for
with a burst: the next one starts at the next free 10 ms slot.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import time

STOP = False


def _stop(_signum: int, _frame: object) -> None:
    global STOP  # noqa: PLW0603 (a signal handler's flag)
    STOP = True


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("out")
    p.add_argument("--interval", type=float, default=0.010)
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    con = sqlite3.connect(a.db, timeout=a.timeout, isolation_level=None)
    records: list[tuple[float, float, int, float, float]] = []
    sql = ("INSERT INTO task_queue (task_type, task_data, status, priority) "
           "VALUES (?, ?, 'pending', ?)")
    n = 0
    nxt = time.monotonic()
    print("ready", flush=True)
    while not STOP:
        n += 1
        t0 = tb = tc = time.monotonic()
        try:
            con.execute("BEGIN IMMEDIATE")
            tb = time.monotonic()
            con.execute(sql, ("dashboard_request", f'{{"request": {n}}}', n % 5))
            tc = time.monotonic()
            con.execute("COMMIT")
            ok = 1
        except sqlite3.OperationalError:
            if con.in_transaction:
                con.execute("ROLLBACK")
            ok = 0
        t1 = time.monotonic()
        records.append((t0, t1 - t0, ok, tb - t0, t1 - tc if ok else 0.0))
        nxt = max(nxt + a.interval, t1)
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    con.close()
    with open(a.out, "w", encoding="ascii") as fh:
        fh.writelines(f"{t:.6f} {lat:.6f} {ok} {w:.6f} {c:.6f}\n"
                      for t, lat, ok, w, c in records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
