"""prompts: archive, never delete, the assigner's finished prompts older than ``max_age``.

In ``prompts`` (or ``assigner_prompts``), a prompt whose status is one of ``statuses`` and that
is not archived yet gets ``archived = 1, archived_at = now`` when ``COALESCE(completed_at,
created_at)`` is older than ``max_age``, as the dashboard's own archiver does (archival can be
undone, and failed prompts often have no ``completed_at``). The two archive columns come from a
dashboard migration: without them the target does not apply (the schema is never altered).
"""

from __future__ import annotations

from architect_cleanup.db import (
    Database,
    Plan,
    cutoff,
    epoch_sql,
    in_list,
    quote,
    sql_timestamp,
)
from architect_cleanup.targets.base import RunContext
from architect_cleanup.targets.dbtarget import DatabaseTarget, Skip


class Prompts(DatabaseTarget):
    name = "prompts"
    done = "archived"

    def plan(self, ctx: RunContext, db: Database) -> Plan | Skip:
        cfg = ctx.config.prompts
        tz = ctx.config.database.naive_timezone
        table = db.find_table(cfg.tables)
        if table is None:
            return Skip(f"no {' or '.join(cfg.tables)} table", note=False)
        cols = db.columns(table)
        missing = [c for c in ("archived", "archived_at") if c not in cols]
        if missing:
            return Skip(f"{table} has no {' or '.join(missing)} column (the dashboard's archive "
                        "migration has not run; the schema is not altered)")
        if "status" not in cols:
            return Skip(f"{table} has no status column")
        times = [cols[c] for c in ("completed_at", "created_at") if c in cols]
        if not times:
            return Skip(f"{table} has neither completed_at nor created_at")
        when = (f"COALESCE({', '.join(f'_t.{quote(c)}' for c in times)})" if len(times) > 1
                else f"_t.{quote(times[0])}")
        finished, params = in_list(f"_t.{quote(cols['status'])}", cfg.statuses, "status")
        archived = f"_t.{quote(cols['archived'])}"
        return Plan(
            table=table,
            scope=f"{finished} AND ({archived} IS NULL OR {archived} = 0)",
            time_expr=epoch_sql(when, tz),
            cutoff=cutoff(ctx.now, cfg.max_age),
            params=dict(params, archived_at=sql_timestamp(ctx.now, tz)),
            set_sql=f"{quote(cols['archived'])} = 1, {quote(cols['archived_at'])} = :archived_at",
            what="finished prompts",
            time_desc=" else ".join(times),
        )
