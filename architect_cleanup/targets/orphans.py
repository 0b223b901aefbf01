"""orphans: uploads no row references, moved to a quarantine first, deleted from there later.

For each upload directory (``orphans.dirs``, per environment), the values of every configured
``[[orphans.references]]`` column are read from the environment's database (through
:class:`~architect_cleanup.db.Database`, so the guard of the dashboard's WAL holds). A file is
*referenced* when a value is its name or ends with ``/<its name>`` (a stored path or URL): a
loose match on purpose, since a file wrongly called referenced only stays. A regular file no
value references, older than ``grace``, and not held open, is moved into the quarantine
(:mod:`architect_cleanup.quarantine`), its path kept; nothing is deleted from an upload
directory directly. When a reference table or column is missing or the database cannot be
read, that directory is left alone (nothing can be called an orphan without its references).

Each run first goes through the quarantine: a file referenced again is **restored**
automatically (moved back to its place; reported, and if its name is taken there again it
stays and the clash is reported), and a file whose quarantine is older than
``quarantine_for`` is deleted (the last-moment checks apply). A dry run moves, restores and
deletes nothing and reports what it would do.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
from stat import S_ISREG

from architect_cleanup import quarantine
from architect_cleanup.config import Config, format_duration
from architect_cleanup.db import Database, DbError, DbFile, describe
from architect_cleanup.fs import Dir, FsError, Scope, Walker, patterns_regex
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import Decision, FileTarget, RunContext, age_text
from architect_cleanup.targets.owners import walk_exclusions

log = logging.getLogger(__name__)

def read_references(ctx: RunContext, db_rel: str) -> dict[str, str] | str:
    """The names the references of ``db_rel`` hold (name -> ``table.column``), or why they
    cannot be read (then no file of that directory may be called an orphan)."""
    cfg = ctx.config
    path = cfg.resolve(db_rel)
    if not os.path.lexists(path):
        return f"{db_rel}: database does not exist"
    names: dict[str, str] = {}
    try:
        with Database(DbFile(db_rel, db_rel, path), cfg.database, dry_run=True,
                      root=cfg.root, locks=ctx.db_locks) as db:
            for ref in cfg.orphans.references:
                table = db.find_table([ref.table])
                if table is None:
                    return f"{db_rel}: no table {ref.table}"
                cols = db.columns(table)
                if ref.column.lower() not in cols:
                    return f"{db_rel}: {table} has no column {ref.column}"
                where = f"{table}.{cols[ref.column.lower()]}"
                for value in db.column_values(table, cols[ref.column.lower()]):
                    v = value.strip().split("?", 1)[0].rstrip("/")
                    if v:
                        names.setdefault(os.path.basename(v), where)
    except (sqlite3.Error, DbError) as exc:
        return f"{db_rel}: {describe(exc)}"
    return names


def upload_dirs(cfg: Config) -> list[tuple[str, str]]:
    """``(upload dir, its database)`` relative to root, per environment."""
    o = cfg.orphans
    out = []
    for template in o.dirs:
        for env, rel in cfg.expand_env(template):
            db = o.database.replace("{env}", env) if env is not None else o.database
            out.append((os.path.normpath(rel), os.path.normpath(db)))
    return out


def _any_name(_name: str) -> bool:
    return True


class Orphans(FileTarget):
    name = "orphans"

    def enabled(self, cfg: Config) -> bool:
        return cfg.orphans.enabled

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        cfg = ctx.config
        o = cfg.orphans
        root = ctx.root()
        refs: dict[str, dict[str, str]] = {}
        for rel, db_rel in upload_dirs(cfg):
            got = read_references(ctx, db_rel)
            if isinstance(got, str):
                result.note(f"{rel}: left alone: {got}")
                continue
            refs[rel] = got
        q = result.part("quarantine")
        q.update(moved=0, restored=0, deleted=0)
        self._quarantine_pass(ctx, result, refs)
        stamp = quarantine.stamp(ctx.now)
        grace = o.grace.total_seconds()
        excl = walk_exclusions(cfg)
        scope = Scope(files=_any_name,
                      exclude=re.compile(patterns_regex(excl)).match if excl else None)
        for rel, names in refs.items():
            ctx.check_stop()
            try:
                start = root.open_path(rel)
            except FileNotFoundError:
                result.note(f"{rel}: does not exist")
                continue
            except FsError as exc:
                result.error(str(exc))
                continue
            with contextlib.closing(start):
                walker = Walker(root, start, scope=lambda _d: scope, on_dir=ctx.check_stop,
                                on_skip=lambda p, why: result.note(f"{p}: {why}"))
                for d, files, _dirs in walker.batches():
                    for name, _m in files:
                        self._judge(ctx, result, d, name, names, grace, stamp, q)
                result.checked += walker.entries_seen
        if not ctx.dry_run:
            quarantine.prune_empty(root, o.quarantine_dir)

    def _judge(self, ctx: RunContext, result: TargetResult, d: Dir, name: str,
               names: dict[str, str], grace: float, stamp: str, q: dict[str, int]) -> None:
        path = d.join(name)
        try:
            st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        except OSError:
            return
        if not S_ISREG(st.st_mode):
            self.keep(ctx, result, path, "not a regular file")
            return
        where = names.get(name)
        if where is not None:
            self.keep(ctx, result, path, f"referenced by {where}")
            return
        age = ctx.now_ts - st.st_mtime
        limit = format_duration(ctx.config.orphans.grace)
        if age <= grace:
            self.keep(ctx, result, path, f"{age_text(max(age, 0))}, within grace {limit}")
            return
        hold = self.last_moment_keep(ctx, st)
        reason = f"referenced by no row, {age_text(age)} > grace {limit}"
        if hold is not None:
            self._kept_at_last_moment(ctx, result, path, st, hold, reason)
            return
        root = ctx.root()
        rel = os.path.relpath(d.path, root.dir.path)
        dest = os.path.join(ctx.config.orphans.quarantine_dir, stamp, rel)
        if not ctx.dry_run:
            try:
                quarantine.move(root, d, name, st, dest, ctx.config.orphans.quarantine_dir)
            except (OSError, FsError) as exc:
                result.skipped += 1
                result.error(f"{path}: not quarantined: {getattr(exc, 'strerror', None) or exc}")
                return
        result.removed += 1
        q["moved"] += 1
        ctx.decide(Decision(self.name, path, True, f"quarantine: {reason}", 0))

    def _quarantine_pass(self, ctx: RunContext, result: TargetResult,
                         refs: dict[str, dict[str, str]]) -> None:
        """Restore what is referenced again; delete what has been quarantined long enough."""
        o = ctx.config.orphans
        root = ctx.root()
        keep_for = o.quarantine_for.total_seconds()
        limit = format_duration(o.quarantine_for)
        q = result.part("quarantine")
        for d, name, st, e in quarantine.walk(root, o.quarantine_dir):
            ctx.check_stop()
            upload = next((rel for rel in refs if e.original.startswith(rel + "/")), None)
            where = refs[upload].get(name) if upload is not None else None
            if where is not None:
                if not ctx.dry_run:
                    try:
                        quarantine.restore(root, d, name, st, e.original)
                    except (OSError, FsError) as exc:
                        taken = isinstance(exc, OSError) and exc.errno == errno.EEXIST
                        why = ("its name is taken again" if taken
                               else getattr(exc, "strerror", None) or exc)
                        result.error(f"{e.path}: referenced again by {where} but not "
                                     f"restored: {why}")
                        continue
                q["restored"] += 1
                log.warning("orphans: %s %s to %s: referenced again by %s",
                            "would restore" if ctx.dry_run else "restored", e.path,
                            e.original, where)
                ctx.decide(Decision(self.name, e.original, False,
                                    f"restored from quarantine: referenced again by {where}"))
                continue
            held = (ctx.now - e.moved_at).total_seconds()
            if held <= keep_for:
                self.keep(ctx, result, e.path, f"in quarantine since {e.stamp}, "
                                               f"within quarantine_for {limit}")
                continue
            before = result.removed
            self.remove(ctx, result, d, name, st,
                        f"in quarantine since {e.stamp}, longer than {limit}")
            if result.removed > before:
                q["deleted"] += 1
                result.removed -= 1  # counted once: when it was moved

