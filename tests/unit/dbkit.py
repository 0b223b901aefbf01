"""Shared helpers for the database tests: real SQLite files (WAL) with the dashboard's schema,
a fixed clock, and a worker run confined to a tmp dir."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from architect_cleanup.config import Config, parse_config
from architect_cleanup.notify import Notifier
from architect_cleanup.state import StateStore
from architect_cleanup.stats import CleanupStats
from architect_cleanup.worker import CleanupWorker

DATA = Path(__file__).resolve().parent.parent / "data"
DASHBOARD_SQL = (DATA / "dashboard_schema.sql").read_text()
ASSIGNER_SQL = (DATA / "assigner_schema.sql").read_text()

#: The run's fixed "now".
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def text(dt: datetime) -> str:
    """SQLite CURRENT_TIMESTAMP text (UTC, space separator)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


_open: list[sqlite3.Connection] = []


@pytest.fixture(autouse=True)
def close_databases() -> Iterator[None]:
    """Closes the test's connections (a test module imports this to use it): a connection
    left to the garbage collector would close its descriptors during some later test."""
    yield
    while _open:
        _open.pop().close()


def make_db(path: Path, schema: str = DASHBOARD_SQL) -> sqlite3.Connection:
    """A fresh WAL database with *schema*; the connection stays open for the test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    _open.append(con)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(schema)
    return con


def insert(con: sqlite3.Connection, table: str, rows: Iterable[dict[str, Any]]) -> list[int]:
    """Insert *rows* in one transaction; returns their ids."""
    ids = []
    con.execute("BEGIN")
    for row in rows:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cur = con.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))
        ids.append(int(cur.lastrowid or 0))
    con.execute("COMMIT")
    return ids


def ids(con: sqlite3.Connection, table: str, where: str = "1") -> set[int]:
    return {int(r[0]) for r in con.execute(f"SELECT id FROM {table} WHERE {where}")}


def digest(path: Path) -> str:
    """The database's content (every row of every table), independent of page layout;
    read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        for line in con.iterdump():
            h.update(line.encode())
        return h.hexdigest()
    finally:
        con.close()


def config(root: Path, **sections: Any) -> Config:
    """A configuration for a tmp root: only the database targets, prod and qa."""
    raw: dict[str, Any] = {
        "root": str(root),
        "environments": ["prod", "qa"],
        "logs": {"tmp_dir": ""},
        "database": {"busy_timeout": "2s"},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


def run(cfg: Config, tmp: Path, *, dry_run: bool, only: Sequence[str] = ("tasks",),
        source: str = "python", now: datetime = NOW, **kw: Any) -> CleanupStats:
    """One worker run, its lock and state inside *tmp*."""
    worker = CleanupWorker(dry_run=dry_run, config=cfg, only=only, source=source, now=now,
                           lock_file=str(tmp / "lock"), state=StateStore(str(tmp / "state")),
                           notifier=Notifier({}), **kw)
    return worker.run_cleanup()


@contextlib.contextmanager
def held_by(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Another process running *code* (``python -c``, with *args*), from the moment it prints
    ``held`` (it has taken its lock) until it is killed when the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
