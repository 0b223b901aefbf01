#!/usr/bin/python3
"""A busy dashboard: inserts a task, an error and an activity row every few milliseconds into
each database, as the dashboard's Flask handlers do (sqlite3's default 5 s timeout, one short
transaction each), until SIGTERM; then reports every insert's latency and every failure.

    dashboard.py REPORT INTERVAL_S DB...
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time


class _Stop:
    requested = False


def _stop(_signum: int, _frame: object) -> None:
    _Stop.requested = True


def main() -> int:
    report, interval, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    signal.signal(signal.SIGTERM, _stop)
    cons = [sqlite3.connect(p, timeout=5.0) for p in paths]  # Flask's usual connect()
    ok = [0] * len(cons)
    failures: list[str] = []
    latencies: list[float] = []
    print("ready", flush=True)
    i = 0
    while not _Stop.requested:
        for n, con in enumerate(cons):
            t0 = time.perf_counter()
            try:
                with con:
                    con.execute("INSERT INTO task_queue (task_type, task_data, status) "
                                "VALUES ('dash', 'dash', 'pending')")
                    con.execute("INSERT INTO errors (error_type, message) "
                                "VALUES ('dash', 'dash')")
                    con.execute("INSERT INTO activity_log (action, details) "
                                "VALUES ('dash', ?)", (str(i),))
                ok[n] += 1
            except sqlite3.Error as exc:
                failures.append(f"{paths[n]}: {exc}")
            latencies.append(time.perf_counter() - t0)
        i += 1
        time.sleep(interval)
    for con in cons:
        con.close()
    with open(report, "w", encoding="utf-8") as fh:
        json.dump({"ok": ok, "failures": failures, "latencies": latencies}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
