#!/usr/bin/python3
"""What the history database costs a run: 1,000,000 removed items recorded, RSS and time.

Standalone for now (``make bench`` will call it once the history is wired into a run):

    .venv/bin/python tests/bench/history.py [--items N] [--dir DIR]

Two child processes, each under GNU time (a command's own peak RSS, see proc.py):

* ``baseline``: imports the package and makes the N item records one at a time, as a target
  hands them over, and drops them: the part a run pays anyway;
* ``write``: the same, and records them in a new history database (open, begin_run, item()
  per record, finish, close with the WAL checkpoint).

The difference is what the history writes add. Then, in this process: the database's size,
the time of opening the full database again (``quick_check``), of reading the items back
with a ``--grep``, and of pruning them all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc import run

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from architect_cleanup import history, reports  # noqa: E402

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
#: the goal the engine has (SPEC section 10): a whole run, history writes included
RSS_GOAL_MB = 40.0


def items(n: int) -> Iterator[history.Item]:
    """Records shaped like a logs run's: a realistic path, size, mtime and reason each."""
    base = NOW.timestamp() - 40 * 86400
    for i in range(n):
        yield history.Item("logs", f"/srv/architect/logs/{i // 10000:03d}/worker-{i:07d}.log.gz",
                           4096 + i % 50000, base - i, "31 days old > 30d")


def child(mode: str, n: int, directory: str) -> None:
    if mode == "baseline":
        count = 0
        for _ in items(n):
            count += 1
        print(json.dumps({"items": count}))
        return
    opened = history.open_history(directory, now=NOW)
    assert opened.history is not None, opened.warning
    hist = opened.history
    w = hist.begin_run(started_at=NOW, dry_run=False, source="bench")
    for it in items(n):
        w.item(it)
    w.finish(finished_at=NOW, result="success", duration_s=0.0, items=n, bytes=0)
    assert w.problem is None, w.problem
    hist.close()
    print(json.dumps({"items": w.items_recorded}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dir", help="where the database goes (default: a temporary directory "
                   "under .cache/bench, same file system as the repository)")
    p.add_argument("--child", choices=("baseline", "write"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.items, args.dir)
        return 0
    cache = REPO / ".cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="history-", dir=args.dir or cache) as d:
        me = [sys.executable, os.path.abspath(__file__), "--items", str(args.items),
              "--dir", d]
        base = run([*me, "--child", "baseline"])
        write = run([*me, "--child", "write"])
        db = history.db_path(d)
        size = os.path.getsize(db)
        t0 = time.perf_counter()
        opened = history.open_history(d, now=NOW)
        t_open = time.perf_counter() - t0
        assert opened.history is not None
        conn = opened.history.conn
        t0 = time.perf_counter()
        found = sum(1 for _ in reports.items_since(conn, NOW - timedelta(days=1),
                                                   grep="worker-0999999"))
        t_grep = time.perf_counter() - t0
        t0 = time.perf_counter()
        pruned = opened.history.prune(now=NOW + timedelta(days=91)).items
        t_prune = time.perf_counter() - t0
        opened.history.close()  # the WAL checkpoint truncates the freed pages
        size_after = os.path.getsize(db)
    added_rss = (write.rss_kb - base.rss_kb) / 1024
    added_s = write.wall - base.wall
    rows = [
        ("items recorded", f"{args.items:,}"),
        ("peak RSS, making the records only", f"{base.rss_kb / 1024:.1f} MB"),
        ("peak RSS, making and recording them", f"{write.rss_kb / 1024:.1f} MB"),
        ("RSS the history writes add", f"{added_rss:+.1f} MB"),
        ("time, making the records only", f"{base.wall:.1f} s"),
        ("time, making and recording them", f"{write.wall:.1f} s"),
        ("time the history writes add", f"{added_s:.1f} s ({added_s / args.items * 1e6:.1f} "
                                        "us per item)"),
        ("CPU time they add (user + system)", f"{write.cpu - base.cpu:.1f} s "
                                              f"({(write.cpu - base.cpu) / args.items * 1e6:.1f}"
                                              " us per item)"),
        ("database size", f"{size / 1e6:.1f} MB ({size / args.items:.0f} bytes per item)"),
        ("opening it again (quick_check)", f"{t_open:.2f} s"),
        ("--grep over all items", f"{t_grep:.2f} s ({found} found)"),
        ("pruning all items", f"{t_prune:.1f} s ({pruned:,} items; file "
                              f"{size_after / 1e6:.1f} MB after)"),
        ("CPU/IO stall of other work during the write (PSI)",
         f"{write.cpu_stall:.1f} s / {write.io_stall:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    ok = write.rss_kb / 1024 <= RSS_GOAL_MB
    print(f"peak RSS with the history writes {'within' if ok else 'OVER'} the engine's "
          f"{RSS_GOAL_MB:.0f} MB goal")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
