"""What the panel's pages show, read from the history database or, without one, state.json.

The history database (:mod:`~architect_cleanup.history`, read through
:mod:`~architect_cleanup.reports`) has every run's figures, the removed items, the backups
per environment and the free-space samples the forecast is fitted to. Until a run has
written it (or when the panel cannot read it), the pages fall back to ``state.json``'s
bounded run history: the status and the freed-space chart work from that, the free-space
chart shows the space free now, and the items table shows the panel's own last run.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from architect_cleanup import history, reports
from architect_cleanup.config import DEFAULT_ORIGIN, Config, leaves, origins
from architect_cleanup.retention import format_size
from architect_cleanup.state import StateStore, state_dir
from architect_cleanup.stats import STAT_FIELDS
from architect_cleanup.targets import Decision
from architect_cleanup.targets.backups import backup_dirs

from .runs import Item

log = logging.getLogger(__name__)

#: How far back the charts look.
CHART_DAYS = 30
#: Keys whose values are never sent to the browser (paths of secrets included: a secret is a
#: path to a root-only file, and the panel has no reason to show where it is).
SECRET_KEY_RX = re.compile(r"(secret|password|passwd|token|credential|api_key|access_key|"
                           r"private)", re.IGNORECASE)
HIDDEN = "(hidden)"
#: A forecast that says the disk fills sooner than this is a warning.
FILL_WARNING = timedelta(days=14)


@contextmanager
def history_reader() -> Iterator[sqlite3.Connection | None]:
    """The history database read-only, or None (none yet, or unreadable: logged)."""
    try:
        conn = history.open_reader(state_dir())
    except sqlite3.Error as exc:
        log.warning("panel: cannot read the history database: %s", exc)
        conn = None
    try:
        yield conn
    finally:
        if conn is not None:
            conn.close()


def _safe(conn: sqlite3.Connection | None, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """*fn*(conn, ...) or None when there is no history or it cannot be read."""
    if conn is None:
        return None
    try:
        return fn(conn, *args, **kw)
    except sqlite3.Error as exc:
        log.warning("panel: history: %s: %s", what, exc)
        return None


# --- status ----------------------------------------------------------------------------------


def status(doc: Mapping[str, Any], cfg: Config | None, config_problems: list[str],
           now: datetime | None = None) -> dict[str, Any]:
    """The status page: the status document's figures, the forecast and the warnings."""
    now = now or datetime.now(UTC)
    last = doc.get("last_result")
    warnings: list[str] = []
    if config_problems:
        warnings.append("the configuration is invalid: " + "; ".join(config_problems))
    if cfg is not None and cfg.dry_run:
        warnings.append("the configuration is in dry-run mode (dry_run = true): the timer's "
                        "runs only report what they would remove")
    if doc.get("state_problem"):
        warnings.append(str(doc["state_problem"]))
    if isinstance(last, dict) and last.get("result") not in (None, "success"):
        warnings.append(f"the last run failed: {last.get('message') or last.get('summary')}")
    locks = doc.get("dashboard_locks")
    for h in (locks.get("lost") or []) if isinstance(locks, dict) else []:
        if isinstance(h, dict):
            warnings.append(f"dashboard process {h.get('pid', '?')} ({h.get('command', '?')}) "
                            f"has {h.get('database', '?')} open without its SQLite locks: "
                            "restart it (journalctl -x explains)")
    forecasts: list[dict[str, Any]] = []
    with history_reader() as conn:
        for f in _safe(conn, "forecast", reports.forecasts, now=now) or []:
            forecasts.append(f.to_dict())
            if f.filling and f.seconds is not None and f.seconds < FILL_WARNING.total_seconds():
                warnings.append(f.line())
        latest = _safe(conn, "latest run", reports.latest_run)
        if latest is not None:
            for b in _safe(conn, "backups", reports.run_backups, latest.id) or []:
                if b.newest_ok is False:
                    warnings.append(f"the newest backup of {b.env} is corrupt")
    return {
        "last_run": last,
        "next_run": doc.get("next_run"),
        "timer_enabled": doc.get("timer_enabled"),
        "running_pid": doc.get("daemon_pid"),
        "service_state": doc.get("service_state"),
        "systemd_reason": (doc.get("systemd") or {}).get("reason"),
        "forecasts": forecasts,
        "free_now": free_now(cfg),
        "warnings": warnings,
        "history": "database" if _has_history() else "state.json",
    }


def _has_history() -> bool:
    return os.path.exists(history.db_path(state_dir()))


def free_now(cfg: Config | None) -> dict[str, Any] | None:
    """The space free now where the dashboard's data lives."""
    if cfg is None:
        return None
    try:
        st = os.statvfs(cfg.root)
    except OSError:
        return None
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return {"path": cfg.root, "free": free, "total": total,
            "text": f"{format_size(free)} free of {format_size(total)}"}


# --- charts ----------------------------------------------------------------------------------


def charts(cfg: Config | None, now: datetime | None = None) -> dict[str, Any]:
    """The three charts' series: free space (with the forecast), freed per day per target,
    backups per environment. Times are ISO 8601 UTC."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=CHART_DAYS)
    with history_reader() as conn:
        if conn is not None:
            try:
                return _charts_from_history(conn, since, now)
            except sqlite3.Error as exc:
                log.warning("panel: history: charts: %s", exc)
    return _charts_from_state(cfg, since)


def _charts_from_history(conn: sqlite3.Connection, since: datetime,
                         now: datetime) -> dict[str, Any]:
    free: list[dict[str, Any]] = []
    for f in reports.forecasts(conn, now=now, window=CHART_DAYS * 86400.0):
        series = reports.free_series(conn, f.name, since)
        points = [{"t": reports.iso(t), "v": v} for t, v in series]
        line = []
        if f.slope is not None and f.free is not None and series:
            # the fitted line from the first sample it used to its crossing of zero (at most
            # 90 days ahead)
            horizon = min(f.seconds or 30 * 86400.0, 90 * 86400.0)
            first = series[0][0]
            start = max(first, f.jump_at or first) - now.timestamp()
            line = [{"t": reports.iso(now.timestamp() + s), "v": max(f.free + f.slope * s, 0)}
                    for s in (start, 0.0, horizon)]
        free.append({"name": f.name, "points": points, "forecast": line, "line": f.line()})
    freed: dict[str, dict[str, int]] = defaultdict(dict)
    for row in reports.freed_per_period(conn, since, period="day"):
        freed[row.target][row.period] = row.bytes
    per_env: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for started, env, count in conn.execute(
            "SELECT r.started_at, b.env, b.count FROM backups b JOIN runs r ON r.id = b.run_id "
            "WHERE r.started_at >= ? ORDER BY r.started_at, b.env", (since.timestamp(),)):
        per_env[env].append({"t": reports.iso(started), "v": count})
    return {"source": "database", "free": free, "freed": _days(freed),
            "backups": [{"env": e, "points": p} for e, p in sorted(per_env.items())]}


def _charts_from_state(cfg: Config | None, since: datetime) -> dict[str, Any]:
    freed: dict[str, dict[str, int]] = defaultdict(dict)
    for run in StateStore().load().get("history", []):
        started = str(run.get("started_at") or "")
        if run.get("dry_run") or started < since.isoformat(timespec="seconds"):
            continue
        stats = run.get("stats") if isinstance(run.get("stats"), dict) else {}
        day = started[:10]
        freed["all targets"][day] = (freed["all targets"].get(day, 0)
                                     + int(stats.get("space_freed") or 0))
    now_free = free_now(cfg)
    free = []
    if now_free is not None:
        free.append({"name": now_free["path"], "forecast": [], "line":
                     "no forecast yet: the history database has no samples",
                     "points": [{"t": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "v": now_free["free"]}]})
    return {"source": "state.json", "free": free, "freed": _days(freed), "backups": []}


def _days(per_target: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    days = sorted({d for series in per_target.values() for d in series})
    return {"days": days, "series": [{"target": t, "bytes": [s.get(d, 0) for d in days]}
                                     for t, s in sorted(per_target.items())]}


# --- the last run's items --------------------------------------------------------------------


def last_items(panel_items: list[Item] | None, panel_run: Mapping[str, Any] | None
               ) -> tuple[dict[str, Any], Iterable[Item]]:
    """The last run's description and its items: the newest run in the history database,
    else the panel's own last run (kept in memory)."""
    with history_reader() as conn:
        latest = _safe(conn, "latest run", reports.latest_run)
        if conn is not None and latest is not None and (panel_run is None
                                                         or not _newer(panel_run, latest)):
            started = datetime.fromisoformat(latest.started_at)
            rows = [Item(r.target, r.path, r.size, r.reason) for r in
                    reports.items_since(conn, started) if r.run_id == latest.id]
            return ({"source": "database", "started_at": latest.started_at,
                     "dry_run": latest.dry_run, "result": latest.result,
                     "recorded": latest.items_recorded}, rows)
    if panel_run is not None and panel_items is not None:
        return {"source": "panel", **panel_run}, panel_items
    return {"source": None}, []


def _newer(panel_run: Mapping[str, Any], latest: reports.RunRow) -> bool:
    started = datetime.fromtimestamp(float(panel_run.get("started", 0)), UTC)
    return started.isoformat(timespec="seconds") > latest.started_at


def page(items: Iterable[Item], *, query: str = "", target: str = "", offset: int = 0,
         limit: int = 50) -> dict[str, Any]:
    """One page of *items* matching *query* (in the path or the reason, any case) and
    *target*; the number of matches."""
    q = query.casefold()
    rows: list[dict[str, Any]] = []
    total = 0
    for it in items:
        if target and it.target != target:
            continue
        if q and q not in it.path.casefold() and q not in it.reason.casefold():
            continue
        if offset <= total < offset + limit:
            rows.append(it.to_dict() | {"size_text": format_size(it.size)})
        total += 1
    return {"total": total, "offset": offset, "limit": limit, "rows": rows}


def backups_by_env(cfg: Config, decisions: Iterable[Decision]) -> list[dict[str, Any]]:
    """Per environment, its backups with their state (kept and why, or would be removed)."""
    dirs = [(label, cfg.resolve(rel) + os.sep) for label, rel, _ in backup_dirs(cfg)]
    out: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in dirs}
    for d in decisions:
        label = next((lb for lb, prefix in dirs if d.path.startswith(prefix)), "other")
        name = os.path.basename(d.path)
        nbytes = d.size
        if not nbytes:
            try:
                nbytes = os.lstat(d.path).st_size
            except OSError:
                nbytes = 0
        state = ["kept" if not d.remove else "would be removed"]
        if name.endswith((".gz", ".zst", ".xz", ".bz2")):
            state.append("compressed")
        for word in ("corrupt", "uploaded", "verified"):
            if word in d.reason:
                state.append(word)
        out.setdefault(label, []).append({"name": name, "size": nbytes,
                                          "size_text": format_size(nbytes),
                                          "state": ", ".join(state), "reason": d.reason})
    return [{"env": env, "backups": rows} for env, rows in out.items()]


# --- the effective configuration ---------------------------------------------------------------


def redact(name: str, value: Any) -> Any:
    return HIDDEN if SECRET_KEY_RX.search(name.rsplit(".", 1)[-1]) else value


def config_view(cfg: Config, layers: Iterable[tuple[str, Mapping[str, Any]]]
                ) -> list[dict[str, Any]]:
    """Every effective value with the file it comes from (or "default"); secrets hidden."""
    where = origins(layers)
    return [{"key": name, "value": redact(name, value),
             "origin": where.get(name, DEFAULT_ORIGIN)}
            for name, value in leaves(cfg.to_dict())]


def counts_text(counts: Mapping[str, Any]) -> str:
    """``45 backups, 1,200 tasks`` from a stats object's counts."""
    parts = [f"{int(counts.get(f) or 0):,} {n}" for n, f in STAT_FIELDS.items()
             if counts.get(f)]
    return ", ".join(parts) or "nothing"
