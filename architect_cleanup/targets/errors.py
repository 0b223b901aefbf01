"""errors: delete resolved errors whose ``resolved_at`` is older than ``max_age``.

Resolved means a true ``resolved`` column where the table has one, else ``status =
'resolved'`` (the dashboard's real schema has no ``resolved`` column, so the original cleanup
never ran). Unresolved errors are kept forever; so is a resolved one whose ``resolved_at`` is
NULL or not a timestamp. Without either column, or without ``resolved_at``, the target does not
apply to that database (a note says why).
"""

from __future__ import annotations

from architect_cleanup.db import Database, Plan, cutoff, epoch_sql, quote
from architect_cleanup.targets.base import RunContext
from architect_cleanup.targets.dbtarget import DatabaseTarget, Skip

#: Spellings of true in a ``resolved`` column besides 1.
TRUE_TEXT = ("true", "t", "yes", "y")


def resolved_sql(column: str) -> str:
    """SQL over ``_t``: the ``resolved`` column holds a true value."""
    col = f"_t.{quote(column)}"
    words = ", ".join(f"'{w}'" for w in TRUE_TEXT)
    return f"({col} = 1 OR lower({col}) IN ({words}))"


class Errors(DatabaseTarget):
    name = "errors"

    def plan(self, ctx: RunContext, db: Database) -> Plan | Skip:
        cfg = ctx.config.errors
        table = db.find_table([cfg.table])
        if table is None:
            return Skip(f"no {cfg.table} table", note=False)
        cols = db.columns(table)
        if "resolved" in cols:
            scope, what = resolved_sql(cols["resolved"]), "resolved errors"
        elif "status" in cols:
            scope, what = f"_t.{quote(cols['status'])} = 'resolved'", "resolved errors"
        else:
            return Skip(f"{table} has neither a resolved nor a status column")
        if "resolved_at" not in cols:
            return Skip(f"{table} has no resolved_at column")
        return Plan(
            table=table,
            scope=scope,
            time_expr=epoch_sql(f"_t.{quote(cols['resolved_at'])}",
                                ctx.config.database.naive_timezone),
            cutoff=cutoff(ctx.now, cfg.max_age),
            what=what,
            time_desc=cols["resolved_at"],
        )
