#!/usr/bin/python3
"""A quick check of SPEC section 10's database goal (not the benchmark suite).

Builds a task_queue of N rows (the dashboard's real schema; 60 % finished and old, the rest
pending or recent, interleaved), then, while a separate "dashboard" process inserts one row
every 10 ms and times each insert, purges it twice on fresh copies: once with one plain
DELETE, once with architect-cleanup's tasks target. Prints insert latency p50/p99/max and the
purge's wall time for both.

    .venv/bin/python tests/perf/db_purge_check.py --rows 2000000 --dir /var/tmp/purge
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = (HERE.parent / "data" / "dashboard_schema.sql").read_text()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def build(path: Path, rows: int) -> int:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    old = (NOW - timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    new = (NOW - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    doomed = 0
    con.execute("BEGIN")
    batch = []
    for i in range(rows):
        if i % 5 < 3:
            batch.append(("t", "{}", "completed", old, old, old))
            doomed += 1
        elif i % 5 == 3:
            batch.append(("t", "{}", "pending", old, None, old))
        else:
            batch.append(("t", "{}", "completed", old, new, new))
        if len(batch) == 50_000:
            con.executemany("INSERT INTO task_queue (task_type, task_data, status, created_at, "
                            "completed_at, updated_at) VALUES (?,?,?,?,?,?)", batch)
            batch.clear()
    if batch:
        con.executemany("INSERT INTO task_queue (task_type, task_data, status, created_at, "
                        "completed_at, updated_at) VALUES (?,?,?,?,?,?)", batch)
    con.execute("COMMIT")
    con.close()
    return doomed


def dashboard(path: str, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    lat = []
    while not stop.is_set():
        t0 = time.perf_counter()
        ts = time.time()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO task_queue (task_type, status) VALUES ('live', 'pending')")
        con.execute("COMMIT")
        lat.append((ts, time.perf_counter() - t0))
        time.sleep(max(0.0, 0.010 - (time.perf_counter() - t0)))
    con.close()
    out.put(lat)


def measure(path: Path, purge) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    stop, q = mp.Event(), mp.Queue()
    p = mp.Process(target=dashboard, args=(str(path), stop, q))
    p.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    start = time.time()
    purge(path)
    wall = time.monotonic() - t0
    measure.window = (start, time.time())  # type: ignore[attr-defined]
    time.sleep(0.5)
    stop.set()
    lat = q.get()
    p.join()
    return wall, lat


def plain(path: Path) -> None:
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    cutoff = (NOW - timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")
    con.execute("DELETE FROM task_queue WHERE status IN ('completed','cancelled','failed') "
                "AND completed_at < ?", (cutoff,))
    con.close()


def ours(path: Path) -> None:
    sys.path.insert(0, str(HERE.parent))
    from unit.dbkit import config

    from architect_cleanup.notify import Notifier
    from architect_cleanup.state import StateStore
    from architect_cleanup.worker import CleanupWorker
    # path is root/data/prod/architect.db, the same name the "dashboard" uses (a hard link
    # would not do: the WAL is named after the path, and two WALs corrupt the database)
    root = path.parents[2]
    w = CleanupWorker(dry_run=False, config=config(root), only=["tasks"], now=NOW,
                      lock_file=str(root / "lock"), state=StateStore(str(root / "state")),
                      notifier=Notifier({}))
    stats = w.run_cleanup()
    ours.deleted = stats.tasks_deleted  # type: ignore[attr-defined]


def report(name: str, wall: float, samples: list[tuple[float, float]]) -> None:
    lat = [x for _, x in samples]
    start, end = measure.window  # type: ignore[attr-defined]
    slow = [(t - start, x * 1000) for t, x in samples if x > 0.05]
    if slow:
        print("  slow inserts (s after the purge started, ms):",
              ", ".join(f"{t:.2f}s/{x:.0f}" for t, x in slow[:20]),
              f"(purge ended {end - start:.2f}s)")
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[int(len(lat_ms) * 0.99) - 1]
    print(f"{name:<14} wall {wall:8.2f} s   inserts {len(lat_ms):6d}  p50 "
          f"{statistics.median(lat_ms):7.2f} ms  p99 {p99:8.2f} ms  max {lat_ms[-1]:8.2f} ms",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/architect-purge-check"))
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    src = args.dir / "source.db"
    t0 = time.monotonic()
    doomed = build(src, args.rows)
    print(f"built {args.rows:,} rows ({doomed:,} to purge) in {time.monotonic() - t0:.1f} s")
    for name, fn in (("plain DELETE", plain), ("architect", ours)):
        db = args.dir / name.replace(" ", "_") / "data" / "prod" / "architect.db"
        db.parent.mkdir(parents=True)
        shutil.copy(src, db)
        wall, lat = measure(db, fn)
        report(name, wall, lat)
        con = sqlite3.connect(db)
        left = con.execute("SELECT count(*) FROM task_queue WHERE task_type = 't'").fetchone()[0]
        con.close()
        print(f"{'':<14} rows left {left:,} (expected {args.rows - doomed:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
