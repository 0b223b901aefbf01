"""tasks: delete finished task rows whose finish time is older than ``max_age``.

In each database's ``task_queue`` (or ``tasks``), a row whose status is one of ``statuses``
goes when its finish time is older than ``max_age``. The finish time is ``completed_at`` (else
``updated_at``, else ``created_at``, by the columns the table has): the original worker aged
tasks by ``created_at`` and deleted long tasks that had finished the day before. A finished row
whose finish time is NULL or not a timestamp is kept: a deletion cannot be undone.
Child tasks' ``parent_id`` is set NULL (the schema's ``ON DELETE SET NULL``).
"""

from __future__ import annotations

from architect_cleanup.db import Database, Plan, cutoff, epoch_sql, in_list, quote
from architect_cleanup.targets.base import RunContext
from architect_cleanup.targets.dbtarget import DatabaseTarget, Skip

#: Which column holds the finish time, best first.
FINISH_COLUMNS = ("completed_at", "updated_at", "created_at")


class Tasks(DatabaseTarget):
    name = "tasks"

    def plan(self, ctx: RunContext, db: Database) -> Plan | Skip:
        cfg = ctx.config.tasks
        table = db.find_table(cfg.tables)
        if table is None:
            return Skip(f"no {' or '.join(cfg.tables)} table", note=False)
        cols = db.columns(table)
        if "status" not in cols:
            return Skip(f"{table} has no status column")
        finish = next((cols[c] for c in FINISH_COLUMNS if c in cols), None)
        if finish is None:
            return Skip(f"{table} has none of the columns {', '.join(FINISH_COLUMNS)}")
        finished, params = in_list(f"_t.{quote(cols['status'])}", cfg.statuses, "status")
        return Plan(
            table=table,
            scope=finished,
            time_expr=epoch_sql(f"_t.{quote(finish)}", ctx.config.database.naive_timezone),
            cutoff=cutoff(ctx.now, cfg.max_age),
            params=params,
            what="finished tasks",
            time_desc=finish,
        )
