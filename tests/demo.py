#!/usr/bin/python3
"""A demo Architect Dashboard data tree, and `make run` on it.

``build_tree(root, tmp, now)`` lays a tree out the way the dashboard's own code does (SPEC
section 3): four environments with backups (about 90 in prod, some with -wal/-shm siblings,
one still being written), main databases and the assigner's database with the real schema,
logs of many ages under data/, logs/ and a private "/tmp", the workers' active logs, temp files
and caches, and a Chromium profile. Tests use it too.

``demo.py run --dir DIR`` builds a fresh tree under DIR and runs the main job three times: a
dry run, a real run, and a second real run that frees nothing (the seed's maintenance result).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAY = 86400
ENVS = {"prod": 93, "qa": 12, "dev": 9, "test": 6}


@functools.cache
def sqlite_bytes() -> bytes:
    """A small, good SQLite database: the demo's backups start with it (the rest of their
    apparent size is a sparse hole), so verification finds them good, as real ones are."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE backup_marker (id INTEGER PRIMARY KEY, note TEXT)")
    con.execute("INSERT INTO backup_marker (note) VALUES ('demo backup')")
    con.commit()
    data = con.serialize()
    con.close()
    return data


def _touch(path: Path, mtime: float, size: int = 0, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        if data is not None:
            fh.write(data)
        elif path.name.endswith(".db"):
            fh.write(sqlite_bytes())
        if size and data is None:
            fh.truncate(size)  # sparse: the demo's apparent sizes cost no disk
    os.utime(path, (mtime, mtime))
    return path


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def make_main_db(path: Path, now: float, rng: random.Random, tasks: int = 400) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript((HERE / "data" / "dashboard_schema.sql").read_text())
    statuses = ["completed"] * 6 + ["failed", "cancelled", "pending", "running"]
    rows = []
    for i in range(tasks):
        st = rng.choice(statuses)
        created = now - rng.uniform(0, 40) * DAY
        done = min(now, created + rng.uniform(60, 3 * DAY)) if st in (
            "completed", "failed", "cancelled") else None
        rows.append((f"task_{i % 7}", "{}", st, _ts(created), _ts(done) if done else None,
                     _ts(done or created)))
    con.executemany("INSERT INTO task_queue (task_type, task_data, status, created_at, "
                    "completed_at, updated_at) VALUES (?,?,?,?,?,?)", rows)
    errs = []
    for i in range(120):
        first = now - rng.uniform(0, 90) * DAY
        resolved = rng.random() < 0.6
        res_at = min(now, first + rng.uniform(0, 20) * DAY) if resolved else None
        errs.append(("runtime", f"error {i}", "resolved" if resolved else "open",
                     _ts(first), _ts(res_at) if res_at else None))
    con.executemany("INSERT INTO errors (error_type, message, status, first_seen, "
                    "resolved_at) VALUES (?,?,?,?,?)", errs)
    con.commit()
    con.close()


def make_assigner_db(path: Path, now: float, rng: random.Random, prompts: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript((HERE / "data" / "assigner_schema.sql").read_text())
    rows = []
    for i in range(prompts):
        st = rng.choice(["completed", "completed", "failed", "cancelled", "pending"])
        created = now - rng.uniform(0, 45) * DAY
        done = min(now, created + rng.uniform(60, DAY)) if st == "completed" else None
        rows.append((f"prompt {i}", st, _ts(created), _ts(done) if done else None))
    con.executemany("INSERT INTO prompts (content, status, created_at, completed_at) "
                    "VALUES (?,?,?,?)", rows)
    con.commit()
    con.close()


def build_tree(root: Path, tmp: Path, now: float | None = None, seed: int = 7,
               databases: bool = True) -> None:
    """Lay out a demo dashboard tree under *root* and its /tmp logs under *tmp*."""
    now = time.time() if now is None else now
    rng = random.Random(seed)
    data = root / "data"
    for env, count in ENVS.items():
        bdir = data / env / "backups"
        for i in range(count):
            t = now - (i + 1) * 6 * 3600 - rng.uniform(0, 600)
            name = datetime.fromtimestamp(t, UTC).strftime("architect_%Y%m%d_%H%M%S")
            if i % 17 == 3:
                name += "_pre_migration"
            b = _touch(bdir / f"{name}.db", t, size=3_700_000 + rng.randrange(200_000))
            if i % 11 == 5:
                _touch(b.with_name(b.name + "-wal"), t, size=400_000)
                _touch(b.with_name(b.name + "-shm"), t, size=32_768)
        if databases:
            make_main_db(data / env / "architect.db", now, rng)
        _touch(data / env / f"architect.db.backup.{int(now - 20 * DAY)}", now - 20 * DAY,
               size=2_000_000)
    # a prod backup still being written (10 minutes old): never removed, not counted
    _touch(data / "prod" / "backups" / "architect_inprogress.db", now - 600, size=1_000_000)
    # an orphaned -wal whose backup is gone: left alone and reported
    _touch(data / "qa" / "backups" / "architect_20200101_000000.db-wal", now - 400 * DAY, 1000)
    shared = data / "backups"
    for i in range(9):
        t = now - (i + 1) * DAY
        _touch(shared / f"architect_{datetime.fromtimestamp(t, UTC):%Y%m%d_%H%M%S}.db", t,
               size=1_500_000)
    if databases:
        make_assigner_db(data / "assigner" / "assigner.db", now, rng)

    # logs of many ages
    logs = root / "logs"
    for i, age in enumerate([1, 5, 12, 29, 31, 45, 60, 90, 120]):
        _touch(logs / f"app.log.{i}", now - age * DAY, size=250_000)
        _touch(data / f"dashboard_{i}.log", now - age * DAY, size=120_000)
    _touch(logs / "app.log", now - 60, size=80_000)
    for worker in ("architect_worker.log", "architect_cleanup_worker.log",
                   "architect_assigner_worker.log", "architect_milestone_worker.log"):
        _touch(logs / worker, now - 90 * DAY, size=500_000)  # old, but active: protected
        _touch(tmp / worker, now - 90 * DAY, size=500_000)
    _touch(tmp / "architect_session_1234.log", now - 40 * DAY, size=70_000)
    _touch(tmp / "architect_api.log.1", now - 35 * DAY, size=70_000)
    _touch(tmp / "somebody_elses.log", now - 200 * DAY, size=70_000)  # not ours
    _touch(tmp / "subdir" / "architect_nested.log", now - 200 * DAY, size=10)  # not top level

    # temp files and caches
    for pkg in ("app", "workers", "services"):
        for j in range(4):
            _touch(root / pkg / "__pycache__" / f"m{j}.cpython-311.pyc", now - 3 * DAY, 9000)
        os.utime(root / pkg / "__pycache__", (now - 3 * DAY, now - 3 * DAY))
    _touch(root / ".pytest_cache" / "v" / "cache" / "lastfailed", now - 2 * DAY, 120)
    os.utime(root / ".pytest_cache" / "v" / "cache", (now - 2 * DAY,) * 2)
    os.utime(root / ".pytest_cache" / "v", (now - 2 * DAY,) * 2)
    os.utime(root / ".pytest_cache", (now - 2 * DAY,) * 2)
    _touch(data / "export.tmp", now - 5 * 3600, 40_000)
    _touch(data / "upload.temp", now - 2 * DAY, 40_000)
    _touch(data / "render.cache", now - 3 * DAY, 40_000)
    _touch(data / "writing_now.tmp", now - 30, 40_000)  # being written: younger than 1h

    # a Chromium profile (matched by name) and one found by its "Local State" file
    prof = data / "chrome_profile_worker1"
    _touch(prof / "Default" / "chrome_debug.log", now - 100 * DAY, 5000)
    _touch(prof / "Default" / "Cache" / "data_1.tmp", now - 100 * DAY, 5000)
    other = data / "browser" / "session_a"
    _touch(other / "Local State", now - 100 * DAY, data=b"{}")
    _touch(other / "Default" / "old.log", now - 100 * DAY, 5000)


DEMO_CONFIG = """\
# Demo configuration written by tools/demo.py (see /etc/architect-cleanup/config.toml).
root = "{root}"
dry_run = true

[logs]
tmp_dir = "{tmp}"
"""


def run_demo(base: Path) -> int:
    if base.exists():
        shutil.rmtree(base)
    root, tmp = base / "srv" / "architect", base / "tmp"
    build_tree(root, tmp)
    cfg = base / "config.toml"
    cfg.write_text(DEMO_CONFIG.format(root=root, tmp=tmp))
    (base / "metrics").mkdir()  # the node_exporter textfile, here rather than the host's
    env = dict(os.environ, STATE_DIRECTORY=str(base / "state"),
               RUNTIME_DIRECTORY=str(base / "run"), ARCHITECT_CLEANUP_CONFIG=str(cfg),
               ARCHITECT_CLEANUP_TEXTFILE_DIR=str(base / "metrics"))
    cli = [sys.executable, "-m", "architect_cleanup"]
    steps = [
        ("1. dry run (the default): nothing changes", ["run"]),
        ("2. real run (--force; --yes: no question)", ["run", "--force", "--yes"]),
        ("3. second real run: retention holds, nothing more to free",
         ["run", "--force", "--yes"]),
        ("4. history", ["report"]),
    ]
    print(f"Demo tree: {root}  (its /tmp: {tmp})\n")
    for title, args in steps:
        print(f"=== {title}: architect-cleanup {' '.join(args)}", flush=True)
        proc = subprocess.run(cli + args, env=env, check=False)
        print(flush=True)
        if proc.returncode != 0:
            print(f"step failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="only build the tree")
    b.add_argument("--dir", type=Path, required=True)
    r = sub.add_parser("run", help="build the tree and run the demo")
    r.add_argument("--dir", type=Path, required=True)
    args = p.parse_args()
    if args.cmd == "build":
        build_tree(args.dir / "srv" / "architect", args.dir / "tmp")
        return 0
    return run_demo(args.dir)


if __name__ == "__main__":
    sys.exit(main())
