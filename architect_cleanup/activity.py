"""The dashboard's ``activity_log``: every real run records itself there, like the dashboard's
own actions do.

A final step of every run (the worker calls :func:`record_run` after the targets). A run
writes one row to each configured database that has an ``activity_log`` table, using the
columns the table has (real schema: ``user_id, action, entity_type, entity_id, details,
ip_address, created_at``):
``action = 'system_cleanup'``, ``entity_type = 'system'`` and ``details`` a JSON string of the
dry-run flag, the stats and the source. A dry run from the timer or the CLI writes nothing; an
API call is the caller's activity and is recorded, dry or not. The caller comes from the run
context (``CleanupWorker(actor=...)``, which the REST API fills in: ``user_id`` and
``ip_address`` go to their columns, the caller's name — ``"api-token"`` for the standalone
API — into ``details`` as ``user``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any

from architect_cleanup.config import Config
from architect_cleanup.db import Database, DbError, describe, find_databases, sql_timestamp
from architect_cleanup.dblocks import LockWatch
from architect_cleanup.stats import CleanupStats
from architect_cleanup.targets.base import Actor, RunContext

log = logging.getLogger(__name__)

TABLE = "activity_log"
ACTION = "system_cleanup"
#: A configuration change saved in the panel.
CONFIG_ACTION = "system_cleanup_config"
ENTITY_TYPE = "system"
#: Sources whose dry runs are recorded too (the caller's own activity).
RECORD_DRY_RUNS = frozenset({"api"})


def details(stats: CleanupStats, user: str | None = None) -> str:
    """The ``details`` column: a JSON string, as the dashboard stores it (with the caller's
    name when the run has one)."""
    doc = {
        "dry_run": stats.dry_run,
        "source": stats.source,
        "success": stats.success,
        "stats": stats.counts(),
        "failed_targets": stats.failed_targets,
        "summary": stats.summary_line(),
        "started_at": stats.started_at,
        "duration_s": round(stats.duration, 3),
    }
    if user:
        doc["user"] = user
    return json.dumps(doc, sort_keys=True)


def record_activity(cfg: Config, stats: CleanupStats, *, actor: Actor | None = None,
                    when: datetime | None = None, locks: LockWatch | None = None) -> list[str]:
    """Write the run into every configured database that has an activity_log; returns the
    labels of the databases written. Problems are logged, never raised. *locks* collects the
    run's lost-lock findings (see dblocks.py)."""
    actor = actor or Actor()
    return _record(cfg, ACTION, details(stats, actor.get("user")), actor, when, "the run")


def record_change(cfg: Config, change: dict[str, Any], *, actor: Actor | None = None,
                  when: datetime | None = None) -> list[str]:
    """A configuration change made in the panel (action :data:`CONFIG_ACTION`, ``details``
    the JSON of *change* and the user), like :func:`record_activity`."""
    actor = actor or Actor()
    doc = dict(change)
    if actor.get("user"):
        doc["user"] = actor.get("user")
    return _record(cfg, CONFIG_ACTION, json.dumps(doc, sort_keys=True), actor, when,
                   "the configuration change")


def _record(cfg: Config, action: str, text: str, actor: Actor, when: datetime | None,
            what: str, locks: LockWatch | None = None) -> list[str]:
    now = sql_timestamp(when or datetime.now(UTC), cfg.database.naive_timezone)
    row: dict[str, Any] = {
        "user_id": actor.get("user_id"),
        "action": action,
        "entity_type": ENTITY_TYPE,
        "entity_id": None,
        "details": text,
        "ip_address": actor.get("ip_address"),
        "created_at": now,
    }
    written: list[str] = []
    files, _ = find_databases(cfg)
    for f in files:
        try:
            with Database(f, cfg.database, dry_run=False, root=cfg.root, locks=locks) as db:
                table = db.find_table([TABLE])
                if table is None:
                    continue
                cols = db.columns(table)
                values = {cols[k]: v for k, v in row.items() if k in cols}
                if "action" not in cols:
                    log.warning("%s: %s has no action column; %s not recorded there",
                                f.rel, table, what.removeprefix("the "))
                    continue
                db.insert(table, values)
                written.append(f.label)
        except (sqlite3.Error, DbError) as exc:
            log.warning("%s: cannot record %s in %s: %s", f.rel, what, TABLE, describe(exc))
    return written


def record_run(ctx: RunContext, stats: CleanupStats) -> None:
    """The run's activity-row step: real runs, and an API caller's dry runs."""
    if ctx.dry_run and ctx.source not in RECORD_DRY_RUNS:
        return
    written = record_activity(ctx.config, stats, actor=ctx.actor, locks=ctx.db_locks)
    if written:
        log.debug("run recorded in %s of %s", TABLE, ", ".join(written))
