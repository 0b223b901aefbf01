"""What the database targets (tasks, errors, prompts) share: the loop over the configured
databases, with each database's failure contained.

A target says, for one open database, which rows its rule is about (a :class:`~db.Plan`) or
why it does not apply there (a missing table or column: a note, not an error). The loop here
runs the plan, folds the counts into the result per database, and turns a database that cannot
be read or stays locked past ``busy_timeout`` into an error of that database alone: the other
databases still run, and the target is marked failed (exit status 1) once any database failed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from architect_cleanup.config import format_duration
from architect_cleanup.db import (
    Database,
    DbError,
    DbFile,
    Outcome,
    Plan,
    describe,
    find_databases,
    quote,
)
from architect_cleanup.history import Item
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    READONLY_HINT,
    Decision,
    RunContext,
    Target,
    on_readonly_fs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skip:
    """Why a target does not apply to a database. A missing table is normal (the assigner's
    database has no tasks) and only logged; a table without a needed column is worth a note."""

    reason: str
    note: bool = True


class DatabaseTarget(Target):
    """A target that changes rows in the dashboard's databases."""

    unit = "rows"
    #: past participle for reports: "deleted", "archived"
    done = "deleted"

    def plan(self, ctx: RunContext, db: Database) -> Plan | Skip:
        """The change for this database, or the reason this target does not apply to it."""
        raise NotImplementedError

    def max_age_text(self, ctx: RunContext) -> str:
        return format_duration(getattr(ctx.config, self.name).max_age)

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        ctx.root()  # a missing root fails the target, as it does the file targets
        files, notes = find_databases(ctx.config)
        for note in notes:
            result.note(note)
        failed: list[str] = []
        reasons: list[str] = []
        for f in files:
            ctx.check_stop()
            part = result.part(f.label)
            part.update(path=f.rel, skipped=0, checked=0)
            try:
                self._one(ctx, result, f, part)
            except (sqlite3.Error, DbError) as exc:
                msg = describe(exc)
                where = os.path.dirname(f.path)
                if "ReadWritePaths=" not in msg and on_readonly_fs(where):
                    # under the service: outside its ReadWritePaths= (said once per target)
                    ctx.readonly(self.name, where)
                    msg += READONLY_HINT
                part["error"] = msg
                failed.append(f.label)
                reasons.append(msg)
                result.error(f"{f.rel}: {msg}")
                log.debug("%s: %s failed", self.name, f.rel, exc_info=True)
        if failed:
            text = f"{len(failed)} of {len(files)} databases failed: " + ", ".join(failed)
            if len(set(reasons)) == 1:
                text += f" ({reasons[0]})"
            elif any("ReadWritePaths=" in r for r in reasons):
                text += (" (read-only file system, outside the service's writable paths "
                         "(ReadWritePaths=))")
            result.fail(text)

    def _one(self, ctx: RunContext, result: TargetResult, f: DbFile,
             part: dict[str, Any]) -> None:
        with Database(f, ctx.config.database, dry_run=ctx.dry_run, root=ctx.config.root,
                      locks=ctx.db_locks) as db:
            plan = self.plan(ctx, db)
            if isinstance(plan, Plan) and not db.has_rowid(plan.table):
                plan = Skip(f"{plan.table} is a WITHOUT ROWID table (not supported)")
            if isinstance(plan, Skip):
                part["reason"] = plan.reason
                if plan.note:
                    result.note(f"{f.label}: {plan.reason}; skipped")
                log.info("%s: %s: %s; skipped", self.name, f.label, plan.reason)
                return
            part.update(table=plan.table, time=plan.time_desc)
            out = Outcome()
            verb = f"would be {self.done}" if ctx.dry_run else self.done

            def progress(o: Outcome) -> None:
                ctx.status(f"{self.name}: {f.label} {o.changed:,} {self.unit} {verb}")

            try:
                db.apply(plan, out, check_stop=ctx.check_stop, progress=progress)
            finally:
                self._fold(ctx, result, f, part=part, plan=plan, out=out)
            part["rows"] = self._rows(db, plan.table)
            note = db.checkpoint()
            if note:
                result.note(note)

    @staticmethod
    def _rows(db: Database, table: str) -> int | None:
        """The table's rows after the run (for the history's samples); None when the count
        fails (it must not fail the target)."""
        try:
            return int(db.con.execute(f"SELECT count(*) FROM main.{quote(table)}").fetchone()[0])
        except sqlite3.Error as exc:
            log.debug("cannot count the rows of %s: %s", table, exc)
            return None

    def _fold(self, ctx: RunContext, result: TargetResult, f: DbFile, *,
              part: dict[str, Any], plan: Plan, out: Outcome) -> None:
        kept = out.kept
        result.removed += out.changed
        result.kept += kept
        result.skipped += out.skipped
        result.checked += out.checked
        part["removed"] += out.changed
        part["kept"] += kept
        part["skipped"] += out.skipped
        part["checked"] += out.checked
        if out.cleared:
            part["references_cleared"] = part.get("references_cleared", 0) + out.cleared
        for note in out.notes:
            result.note(f"{f.label}: {note}")
        for err in out.errors:
            result.error(f"{f.label}: {err}")
        if out.undated:
            result.note(f"{f.label}: {out.undated:,} {plan.what} kept: {plan.time_desc} "
                        "is NULL or not a timestamp")
        limit = self.max_age_text(ctx)
        if out.changed:
            rule = (f"{out.changed:,} {plan.what} in {plan.table}: {plan.time_desc} "
                    f"older than {limit}")
            ctx.decide(Decision(self.name, f.path, True, rule))
            if ctx.on_item is not None:  # rows are recorded per database and table
                ctx.on_item(Item(self.name, f"{f.path}:{plan.table}", 0, None, rule, f.label,
                                 "archived" if self.done == "archived" else "removed"))
        if kept:
            why = [f"{kept - out.undated - out.skipped:,} within {limit}"]
            if out.undated:
                why.append(f"{out.undated:,} without a usable {plan.time_desc}")
            if out.skipped:
                why.append(f"{out.skipped:,} referred to by other rows")
            ctx.decide(Decision(self.name, f.path, False,
                                f"{kept:,} {plan.what} in {plan.table}: " + ", ".join(why)))
        verb = f"would be {self.done}" if ctx.dry_run else self.done
        log.info("%s: %s: %d %s %s from %s (%s older than %s), %d kept, %d skipped",
                 self.name, f.label, out.changed, plan.what, verb, plan.table,
                 plan.time_desc, limit, kept, out.skipped)
