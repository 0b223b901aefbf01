"""The original worker's Python interface, for dashboards that keep their own routes.

The dashboard's ``app.py`` imported four names from ``workers/cleanup_worker.py``; replacing
that import line is the whole change::

    from architect_cleanup.compat import (CleanupWorker, DEFAULT_BACKUP_RETENTION, PID_FILE,
                                          load_state)

Each name keeps the original's type and meaning:

- ``CleanupWorker(dry_run=True, backup_retention=None, log_age_days=..., task_age_days=...,
  error_age_days=..., prompt_age_days=...)``; ``.run_cleanup()`` returns a
  :class:`CleanupStats` whose attributes and ``to_dict()`` are the original's (the seven
  counters, ``space_freed`` in bytes). The run is ours: the configuration in
  /etc/architect-cleanup, its safety rules, the run lock, the state file and the journal.
  An age or retention left out means the configured value (whose default is the original's).
- ``DEFAULT_BACKUP_RETENTION``: the original's table, a plain ``dict``.
- ``PID_FILE``: the original daemon's PID file, a ``pathlib.Path``. There is no home-made
  daemon any more, so nothing writes it: a route that reads it reports an original daemon
  still left running, and ``daemon_running: false`` once it is stopped (``architect-cleanup
  migrate`` finds it). The timer's state is in ``architect-cleanup status --json`` and the
  blueprint's status route.
- ``load_state()``: ``{"last_run": str, "stats": {...}}`` of the last real run (an imported
  run of the original worker counts), or ``None`` when there is none — the original saved its
  state after real runs only.

Two differences are deliberate: only ``dry_run=False`` itself cleans (the original cleaned on
any false value, ``0`` or ``""`` too), and a run while another holds the lock raises
:class:`~architect_cleanup.lock.LockHeld` instead of running twice at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from architect_cleanup.state import StateStore
from architect_cleanup.stats import MB, STAT_FIELDS
from architect_cleanup.stats import CleanupStats as _Stats
from architect_cleanup.worker import CleanupWorker as _Worker

log = logging.getLogger(__name__)

__all__ = ["CLEANUP_INTERVAL", "DEFAULT_BACKUP_RETENTION", "DEFAULT_ERROR_AGE_DAYS",
           "DEFAULT_LOG_AGE_DAYS", "DEFAULT_PROMPT_AGE_DAYS", "DEFAULT_TASK_AGE_DAYS",
           "LOG_FILE", "PID_FILE", "STATE_FILE", "CleanupStats", "CleanupWorker",
           "load_state", "save_state"]

# The original worker's module constants, with their values and types.
PID_FILE = Path("/tmp/architect_cleanup_worker.pid")  # noqa: S108 (the original's path)
LOG_FILE = Path("/tmp/architect_cleanup_worker.log")  # noqa: S108
STATE_FILE = Path("/tmp/architect_cleanup_worker_state.json")  # noqa: S108
DEFAULT_BACKUP_RETENTION: dict[str, int] = {"prod": 10, "qa": 5, "dev": 5, "test": 3,
                                            "default": 5}
DEFAULT_LOG_AGE_DAYS = 30
DEFAULT_TASK_AGE_DAYS = 7
DEFAULT_ERROR_AGE_DAYS = 30
DEFAULT_PROMPT_AGE_DAYS = 14
CLEANUP_INTERVAL = 3600

#: The original's ``stats`` object: its seven keys, in its order.
STATS_KEYS = (*STAT_FIELDS.values(), "space_freed_mb")


class CleanupStats:
    """The original's statistics object: seven counters and ``space_freed`` in bytes.

    ``result`` holds our whole :class:`~architect_cleanup.stats.CleanupStats` (per-target
    detail, errors, the dry-run flag) for callers that want more."""

    def __init__(self) -> None:
        self.backups_deleted = 0
        self.logs_deleted = 0
        self.tasks_deleted = 0
        self.errors_deleted = 0
        self.prompts_deleted = 0
        self.temp_files_deleted = 0
        self.space_freed = 0
        self.result: _Stats | None = None

    @classmethod
    def from_result(cls, result: _Stats) -> CleanupStats:
        stats = cls()
        for name in STAT_FIELDS.values():
            setattr(stats, name, getattr(result, name))
        stats.space_freed = result.space_freed
        stats.result = result
        return stats

    def add_file(self, size: int) -> None:
        self.space_freed += size

    def to_dict(self) -> dict[str, Any]:
        """The original's ``stats`` object (``space_freed_mb`` rounded to 2 places)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in STAT_FIELDS.values()}
        out["space_freed_mb"] = round(self.space_freed / MB, 2)
        return out

    def __str__(self) -> str:
        d = self.to_dict()
        return ("Cleanup Summary:\n"
                f"  Backups deleted: {d['backups_deleted']}\n"
                f"  Logs deleted: {d['logs_deleted']}\n"
                f"  Tasks deleted: {d['tasks_deleted']}\n"
                f"  Errors deleted: {d['errors_deleted']}\n"
                f"  Prompts deleted: {d['prompts_deleted']}\n"
                f"  Temp files deleted: {d['temp_files_deleted']}\n"
                f"  Space freed: {d['space_freed_mb']} MB")


class CleanupWorker:
    """The original's constructor and ``run_cleanup()``, running our cleanup.

    Dry run unless ``dry_run is False``. ``backup_retention`` is a per-environment table
    merged over the configured one (or one number for all); an age of ``None`` is the
    configured one. Invalid values raise :class:`~architect_cleanup.config.ConfigError`
    (a ``ValueError``) here, before anything runs."""

    def __init__(self, dry_run: bool = True,
                 backup_retention: Mapping[str, int] | int | None = None,
                 log_age_days: float | None = None, task_age_days: float | None = None,
                 error_age_days: float | None = None,
                 prompt_age_days: float | None = None) -> None:
        self._worker = _Worker(dry_run=dry_run, backup_retention=backup_retention,
                               log_age_days=log_age_days, task_age_days=task_age_days,
                               error_age_days=error_age_days, prompt_age_days=prompt_age_days)
        cfg = self._worker.config
        self.dry_run: bool = self._worker.dry_run
        self.backup_retention: dict[str, int] = dict(cfg.backups.retention)
        self.log_age_days = _days(cfg.logs.max_age.total_seconds())
        self.task_age_days = _days(cfg.tasks.max_age.total_seconds())
        self.error_age_days = _days(cfg.errors.max_age.total_seconds())
        self.prompt_age_days = _days(cfg.prompts.max_age.total_seconds())
        self.data_dir = Path(cfg.root) / "data"
        self.stats = CleanupStats()

    def run_cleanup(self) -> CleanupStats:
        """Run the cleanup once; the original's stats. Raises LockHeld when another run is
        going on."""
        self.stats = CleanupStats.from_result(self._worker.run_cleanup())
        return self.stats


def _days(seconds: float) -> float | int:
    days = seconds / 86400
    return int(days) if days == int(days) else days


def load_state(store: StateStore | None = None) -> dict[str, Any] | None:
    """The original's state object, ``{"last_run": str, "stats": {...}}``, of the newest real
    run in our run history, or None when there is none (or the state cannot be read)."""
    doc = (store or StateStore()).load()
    runs = [r for r in doc.get("history", []) if r.get("dry_run") is False]
    last = doc.get("last_run")
    if isinstance(last, dict) and last.get("dry_run") is False and last not in runs:
        runs.append(last)
    for run in reversed(runs):
        when = run.get("finished_at") or run.get("started_at")
        stats = run.get("stats")
        if isinstance(when, str) and isinstance(stats, dict):
            return {"last_run": when,
                    "stats": {k: stats[k] for k in STATS_KEYS if k in stats}}
    return None


def save_state(stats: CleanupStats) -> None:
    """The original's ``save_state``: nothing to do, a run records itself in our state."""
    log.debug("compat.save_state: the run was recorded when it finished (%s)",
              stats.to_dict())
