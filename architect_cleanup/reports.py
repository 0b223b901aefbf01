"""Reading the history database: runs, removed items, freed space, growth, forecasts.

Every function takes a connection (``history.open_reader`` or the run's own) and returns
small frozen rows, so ``report --since 30d --target X --env E --items --grep NAME --json``
is a thin layer: parse the options, call one function, hand the rows to :func:`to_json`,
:func:`render_csv` or a table. Times in rows are ISO 8601 UTC strings; *since* and *now* are
aware datetimes. :func:`items_since` streams (a generator over the cursor): a report of a
million items holds one row at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from architect_cleanup import forecast
from architect_cleanup.history import BackupRecord, PartRecord, Sample, TargetRecord

Period = Literal["day", "week"]


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run; with a *target* (and *env*) filter, ``removed``/``bytes``/``kept``/``status``
    are that target's (environment's) figures, else the run's totals."""

    id: int
    started_at: str
    finished_at: str | None
    dry_run: bool
    source: str
    result: str
    duration_s: float | None
    target: str | None
    env: str | None
    status: str
    removed: int
    bytes: int
    kept: int
    items_recorded: int
    message: str
    imported: bool


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One item a run removed or archived (or a dry run would have)."""

    run_id: int
    run_started_at: str
    dry_run: bool
    target: str
    env: str | None
    path: str
    size: int
    mtime: str | None
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class FreedRow:
    """Space freed by one target (in one environment, with an *env* filter) in one day or
    week (*period*: its first day)."""

    period: str
    target: str
    env: str | None
    runs: int
    items: int
    bytes: int


@dataclass(frozen=True, slots=True)
class GrowthRow:
    """A category's size on one day (its last sample that day) and its change per day since
    the previous day with a sample (None on the first)."""

    day: str
    category: str
    bytes: int
    growth_per_day: float | None


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _ts(dt: datetime) -> float:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: give a time zone")
    return dt.timestamp()


# -- runs and items -------------------------------------------------------------------------

_RUN_COLUMNS = ("r.id, r.started_at, r.finished_at, r.dry_run, r.source, r.result, "
                "r.duration_s")


def runs_since(conn: sqlite3.Connection, since: datetime, *, target: str | None = None,
               env: str | None = None) -> list[RunRow]:
    """The runs started at or after *since*, oldest first. With *target*, only the runs
    where it did something or failed (not skipped or disabled) and its figures; with *env*
    as well, its figures in that environment (runs without that environment left out).
    *env* alone: the runs with that environment in any target, summed over targets."""
    start = _ts(since)
    tail = "r.items_recorded, r.message, r.imported"
    if target is None and env is None:
        sql = (f"SELECT {_RUN_COLUMNS}, NULL, NULL, r.result, r.items, r.bytes, "
               f"(SELECT COALESCE(SUM(kept), 0) FROM target_results WHERE run_id = r.id), "
               f"{tail} FROM runs r WHERE r.started_at >= ? ORDER BY r.started_at, r.id")
        args: tuple[Any, ...] = (start,)
    elif env is None:
        sql = (f"SELECT {_RUN_COLUMNS}, t.target, NULL, t.status, t.removed, t.bytes, t.kept, "
               f"{tail} FROM runs r JOIN target_results t ON t.run_id = r.id "
               "WHERE r.started_at >= ? AND t.target = ? "
               "AND t.status NOT IN ('skipped', 'disabled') ORDER BY r.started_at, r.id")
        args = (start, target)
    else:
        where = "AND p.target = ?" if target is not None else ""
        sql = (f"SELECT {_RUN_COLUMNS}, ?, p.part, r.result, SUM(p.removed), SUM(p.bytes), "
               f"SUM(p.kept), {tail} FROM runs r JOIN target_parts p ON p.run_id = r.id "
               f"WHERE r.started_at >= ? AND p.part = ? {where} "
               "GROUP BY r.id ORDER BY r.started_at, r.id")
        args = (target, start, env) + ((target,) if target is not None else ())
    return [_run_row(row) for row in conn.execute(sql, args)]


def _run_row(row: Sequence[Any]) -> RunRow:
    (rid, started, finished, dry, source, result, duration, target, env, status, removed,
     nbytes, kept, recorded, message, imported) = row
    return RunRow(rid, iso(started) or "", iso(finished), bool(dry), source, result, duration,
                  target, env, status, int(removed or 0), int(nbytes or 0), int(kept or 0),
                  int(recorded), message, bool(imported))


def latest_run(conn: sqlite3.Connection, *, result: str | None = None) -> RunRow | None:
    """The newest finished run (with *result*, when given: e.g. "success")."""
    where = "r.result = ?" if result else "r.result != 'running'"
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS}, NULL, NULL, r.result, r.items, r.bytes, "
        "(SELECT COALESCE(SUM(kept), 0) FROM target_results WHERE run_id = r.id), "
        f"r.items_recorded, r.message, r.imported FROM runs r WHERE {where} "
        "ORDER BY r.started_at DESC, r.id DESC LIMIT 1", (result,) if result else ()).fetchone()
    return _run_row(row) if row else None


def items_since(conn: sqlite3.Connection, since: datetime, *, target: str | None = None,
                env: str | None = None, grep: str | None = None,
                dry_run: bool | None = None, limit: int | None = None) -> Iterator[ItemRow]:
    """The items of the runs started at or after *since*, oldest run first, in the order
    they were decided. *grep*: only paths containing that text (case-sensitive, no
    wildcards: "what removed this file?"); *dry_run*: only dry (True) or real (False) runs."""
    sql = ["SELECT i.run_id, r.started_at, r.dry_run, k.target, NULLIF(k.env, ''), "
           "d.text || i.name, i.size, i.mtime, k.action, x.text FROM runs r JOIN items i "
           "ON i.id >= r.first_item AND i.id < r.first_item + r.items_recorded "
           "JOIN kinds k ON k.id = i.kind JOIN texts d ON d.id = i.dir "
           "JOIN texts x ON x.id = i.reason WHERE r.started_at >= ? AND r.items_recorded > 0"]
    args: list[Any] = [_ts(since)]
    for cond, value in (("k.target = ?", target), ("k.env = ?", env),
                        ("instr(d.text || i.name, ?) > 0", grep)):
        if value is not None:
            sql.append(f"AND {cond}")
            args.append(value)
    if dry_run is not None:
        sql.append("AND r.dry_run = ?")
        args.append(int(dry_run))
    sql.append("ORDER BY r.started_at, r.id, i.id")
    if limit is not None:
        sql.append("LIMIT ?")
        args.append(int(limit))
    for row in conn.execute(" ".join(sql), args):
        run_id, started, dry, tgt, e, path, size, mtime, action, reason = row
        yield ItemRow(run_id, iso(started) or "", bool(dry), tgt, e, path, int(size),
                      iso(mtime), action, reason)


# -- trends ---------------------------------------------------------------------------------

def freed_per_period(conn: sqlite3.Connection, since: datetime, *, period: Period = "day",
                     target: str | None = None, env: str | None = None,
                     dry_run: bool = False) -> list[FreedRow]:
    """Items and bytes removed per *period* and target by the real runs (dry runs with
    *dry_run*) since *since*; with *env*, in that environment only (from the per-environment
    figures). Periods without runs are absent. A week starts on Monday."""
    if period not in ("day", "week"):
        raise ValueError(f"period must be day or week, not {period!r}")
    day = "date(r.started_at, 'unixepoch')"
    key = day if period == "day" else f"date({day}, 'weekday 0', '-6 days')"
    table = "target_parts" if env is not None else "target_results"
    sql = [f"SELECT {key} AS period, p.target, COUNT(DISTINCT r.id), SUM(p.removed), "
           f"SUM(p.bytes) FROM runs r JOIN {table} p ON p.run_id = r.id "
           "WHERE r.started_at >= ? AND r.dry_run = ?"]
    args: list[Any] = [_ts(since), int(dry_run)]
    if target is not None:
        sql.append("AND p.target = ?")
        args.append(target)
    if env is not None:
        sql.append("AND p.part = ?")
        args.append(env)
    else:
        sql.append("AND p.status NOT IN ('skipped', 'disabled')")
    sql.append("GROUP BY period, p.target ORDER BY period, p.target")
    return [FreedRow(p, t, env, int(n), int(items or 0), int(b or 0))
            for p, t, n, items, b in conn.execute(" ".join(sql), args)]


def growth_per_day(conn: sqlite3.Connection, since: datetime, *,
                   category: str | None = None) -> list[GrowthRow]:
    """Each category's size per day since *since* and its growth per day: the ``bytes``
    samples (``backups:<env>``, ``logs``, ``temp``) and the database files
    (``database:<path>``), by category, then day."""
    rows = conn.execute(
        "SELECT day, kind, name, value FROM (SELECT date(r.started_at, 'unixepoch') AS day, "
        "s.kind, s.name, s.value, ROW_NUMBER() OVER (PARTITION BY "
        "date(r.started_at, 'unixepoch'), s.kind, s.name ORDER BY r.started_at DESC, r.id DESC"
        ") AS n FROM samples s JOIN runs r ON r.id = s.run_id WHERE r.started_at >= ? "
        "AND s.kind IN ('bytes', 'db_bytes')) WHERE n = 1 ORDER BY kind, name, day",
        (_ts(since),))
    out: list[GrowthRow] = []
    prev: tuple[str, datetime, float] | None = None
    for day, kind, name, value in rows:
        cat = name if kind == "bytes" else f"database:{name}"
        if category is not None and cat != category:
            continue
        when = datetime.fromisoformat(day)
        growth = None
        if prev is not None and prev[0] == cat:
            growth = (value - prev[2]) / max(1, (when - prev[1]).days)
        out.append(GrowthRow(day, cat, int(value), growth))
        prev = (cat, when, value)
    return sorted(out, key=lambda g: (g.category, g.day))


def free_series(conn: sqlite3.Connection, name: str,
                since: datetime) -> list[tuple[float, float]]:
    """``(unix time, free bytes)`` of file system *name* since *since*, oldest first."""
    return [(t, v) for t, v in conn.execute(
        "SELECT r.started_at, s.value FROM samples s JOIN runs r ON r.id = s.run_id "
        "WHERE s.kind = 'fs_free' AND s.name = ? AND r.started_at >= ? ORDER BY r.started_at",
        (name, _ts(since)))]


def forecasts(conn: sqlite3.Connection, *, now: datetime,
              window: float = forecast.WINDOW) -> list[forecast.Forecast]:
    """The fill forecast of every file system sampled in the last *window* seconds."""
    start = datetime.fromtimestamp(_ts(now) - window, UTC)
    names = [n for (n,) in conn.execute(
        "SELECT DISTINCT s.name FROM samples s JOIN runs r ON r.id = s.run_id "
        "WHERE s.kind = 'fs_free' AND r.started_at >= ? ORDER BY s.name", (_ts(start),))]
    out = []
    for name in names:
        total = conn.execute(
            "SELECT s.value FROM samples s JOIN runs r ON r.id = s.run_id WHERE "
            "s.kind = 'fs_total' AND s.name = ? ORDER BY r.started_at DESC LIMIT 1",
            (name,)).fetchone()
        out.append(forecast.fit(free_series(conn, name, start), now=_ts(now), name=name,
                                total=total[0] if total else None, window=window))
    return out


# -- one run's records (metrics) ------------------------------------------------------------

def run_targets(conn: sqlite3.Connection, run_id: int) -> list[TargetRecord]:
    return [TargetRecord(*row) for row in conn.execute(
        "SELECT target, status, removed, bytes, kept, skipped, checked, errors, duration_s, "
        "message FROM target_results WHERE run_id = ? ORDER BY target", (run_id,))]


def run_parts(conn: sqlite3.Connection, run_id: int) -> list[PartRecord]:
    return [PartRecord(*row) for row in conn.execute(
        "SELECT target, part, removed, bytes, kept FROM target_parts WHERE run_id = ? "
        "ORDER BY target, part", (run_id,))]


def run_backups(conn: sqlite3.Connection, run_id: int) -> list[BackupRecord]:
    return [BackupRecord(env, count, nbytes, None if ok is None else bool(ok))
            for env, count, nbytes, ok in conn.execute(
                "SELECT env, count, bytes, newest_ok FROM backups WHERE run_id = ? "
                "ORDER BY env", (run_id,))]


def run_samples(conn: sqlite3.Connection, run_id: int) -> list[Sample]:
    return [Sample(kind, name, value) for kind, name, value in conn.execute(
        "SELECT kind, name, value FROM samples WHERE run_id = ? ORDER BY kind, name",
        (run_id,))]


# -- output ---------------------------------------------------------------------------------

def as_dict(row: Any) -> dict[str, Any]:
    """A row (or a :class:`~architect_cleanup.forecast.Forecast`) as a JSON-ready dict."""
    to_dict = getattr(row, "to_dict", None)
    if callable(to_dict):
        out: dict[str, Any] = to_dict()
        return out
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    raise TypeError(f"not a report row: {type(row).__name__}")


def to_json(rows: Iterable[Any], **extra: Any) -> str:
    """``{"<key>": [rows...], **extra}`` is the caller's shape; this gives the list alone
    when *extra* is empty, else an object with *extra* and ``rows``."""
    data = [as_dict(r) for r in rows]
    if not extra:
        return json.dumps(data, indent=2)
    return json.dumps({**extra, "rows": data}, indent=2)


def render_csv(rows: Iterable[Any], out: TextIO, row_type: type) -> int:
    """Write *rows* (instances of the dataclass *row_type*) as CSV with a header line, one
    row at a time; the number of rows written."""
    names = [f.name for f in dataclasses.fields(row_type)]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    n = 0
    for row in rows:
        d = as_dict(row)
        writer.writerow(["" if d.get(k) is None else d.get(k) for k in names])
        n += 1
    return n
