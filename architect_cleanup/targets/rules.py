"""rules: the operator's ``[[rules.files]]`` and ``[[rules.tables]]``, through the same engine.

A **file rule** walks each of its directories (fd-relative, never following a symlink or
crossing a mount, ``safety.exclude_dirs`` not entered) and judges the names its patterns match,
one directory at a time: the newest ``keep_newest`` stay; of the rest, one older than
``max_age`` goes, and so does one beyond ``max_total_size`` when the directory's matching files
are counted newest first. A name another target owns (:func:`owners.claimed_before`: the
built-in targets, the databases and their side files, the quarantine, an earlier rule) is
never looked at. Removal is the built-in targets': the last-moment checks (a file some
process holds open, an mtime in the future) keep a file, every unlink re-checks the file's
identity, and a directory (``type = "dir"``) goes with :func:`fs.remove_tree` under the same
keep rules as temp's. ``action = "compress"`` compresses a file with zstd (verified, mtime
kept, :mod:`backup_compress`) and removes the original only then. A database's ``-wal``,
``-shm`` or ``-journal`` beside a matching file goes with it and never alone.

A **table rule** is a database target of its own: the same batched purge with the pause after
each batch, the same foreign-key handling and the same schema checks as tasks, errors and
prompts (:mod:`dbtarget`). A table or column that does not exist is a note; nothing is guessed.

Each rule's counts are a part of this target's result (``rules.parts[<rule name>]``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import Any, NamedTuple

from architect_cleanup.backup_compress import CompressError, compress_backup, is_compressed
from architect_cleanup.config import Config, FileRule, TableRule, format_duration
from architect_cleanup.db import (
    Database,
    DbError,
    Plan,
    cutoff,
    describe,
    epoch_sql,
    find_databases,
    in_list,
    quote,
    sql_timestamp,
)
from architect_cleanup.fs import (
    Dir,
    FsError,
    Root,
    Scope,
    Walker,
    freed_bytes,
    lstat_at,
    patterns_regex,
    remove_tree,
    unlink_all,
)
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    Decision,
    FileTarget,
    Interrupted,
    RunContext,
    age_text,
    unique_dirs,
)
from architect_cleanup.targets.dbtarget import DatabaseTarget, Skip
from architect_cleanup.targets.owners import (
    Claimed,
    backup_names,
    claimed_before,
    rule_dir,
    walk_exclusions,
)
from architect_cleanup.targets.temp import inside_rules

log = logging.getLogger(__name__)

#: Side files of a SQLite database: removed with the file they belong to, never alone.
SIDES = ("-wal", "-shm", "-journal")


class _Entry(NamedTuple):
    """A name a file rule judges, with its status and whether it is a directory."""

    name: str
    st: os.stat_result
    is_dir: bool


def _side_of(name: str) -> str | None:
    for suffix in SIDES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


class Rules(FileTarget):
    name = "rules"

    def enabled(self, cfg: Config) -> bool:
        return cfg.rules.enabled

    def configured(self, cfg: Config) -> bool:
        return bool(cfg.rules.files or cfg.rules.tables)

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        cfg = ctx.config
        ctx.root()  # a missing root fails the target, as it does the others
        failed = []
        for i, rule in enumerate(cfg.rules.files):
            ctx.check_stop()
            try:
                FileRuleRun(self, rule, claimed_before(cfg, i)).run(ctx, result)
            except Interrupted:
                raise
            except Exception as exc:  # one rule's failure must not stop the others
                result.part(rule.name)["error"] = str(exc) or type(exc).__name__
                result.error(f"rule {rule.name}: {str(exc) or type(exc).__name__}")
                log.debug("rule %s failed", rule.name, exc_info=True)
                failed.append(rule.name)
        for trule in cfg.rules.tables:
            ctx.check_stop()
            if not TableRuleRun(trule).run_rule(ctx, result):
                failed.append(trule.name)
        if failed:
            result.fail(f"rule(s) failed: {', '.join(failed)}")


class FileRuleRun:
    """One file rule over its directories, judged with its target's (``rules``) helpers."""

    def __init__(self, target: Rules, rule: FileRule, owner: Claimed) -> None:
        self.t = target
        self.rule = rule
        self.owner = owner

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        rule, cfg = self.rule, ctx.config
        part = result.part(rule.name)
        part.update(kind="files", action=rule.action)
        self.max_age = rule.max_age.total_seconds() if rule.max_age is not None else None
        self.limit = format_duration(rule.max_age) if rule.max_age is not None else ""
        self.keep_name = inside_rules(ctx, backup_names(cfg))
        rx = re.compile(patterns_regex(rule.patterns)).match
        # a database's side files are matched with the file they belong to
        def files_match(n: str) -> re.Match[str] | None:
            m = rx(n)
            if m is None and (base := _side_of(n)) is not None:
                m = rx(base)
            return m

        files = None if rule.type == "dir" else files_match
        claim = rx if rule.type in ("dir", "any") else None
        excl = walk_exclusions(cfg)
        exclude = re.compile(patterns_regex(excl)).match if excl else None
        scope = Scope(files=files, claim=claim, exclude=exclude)
        before = (result.removed, result.bytes, result.kept, result.skipped)
        absolute = [d for d in rule.dirs if d.startswith("/")]
        relative = unique_dirs(tuple(d for d in rule.dirs if not d.startswith("/")))
        for d in [*relative, *unique_dirs(tuple(absolute))]:
            self._walk(ctx, result, d, scope)
        part["removed"] += result.removed - before[0]
        part["bytes"] += result.bytes - before[1]
        part["kept"] += result.kept - before[2]
        part["skipped"] = part.get("skipped", 0) + result.skipped - before[3]

    def _walk(self, ctx: RunContext, result: TargetResult, where: str, scope: Scope) -> None:
        try:
            if where.startswith("/"):
                root = ctx.root(where)
                start = root.open_path(".")
            else:
                root = ctx.root()
                start = root.open_path(where)
        except FileNotFoundError:
            result.note(f"rule {self.rule.name}: {where}: does not exist")
            return
        except FsError as exc:
            result.note(f"rule {self.rule.name}: {exc}")
            return

        def on_skip(path: str, why: str) -> None:
            result.note(f"rule {self.rule.name}: {path}: {why}")

        with contextlib.closing(start):
            walker = Walker(root, start, scope=lambda _d: scope, on_skip=on_skip,
                            on_dir=ctx.check_stop)
            for d, files, dirs in walker.batches():
                self._judge_dir(ctx, result, root, d, [n for n, _ in files],
                                [n for n, _ in dirs])
            result.checked += walker.entries_seen

    def _judge_dir(self, ctx: RunContext, result: TargetResult, root: Root, d: Dir,
                   files: list[str], dirs: list[str]) -> None:
        """One directory's matching names: newest first, each kept or acted on (the running
        total of their sizes is what ``max_total_size`` is measured against)."""
        entries, sides = self._candidates(ctx, result, d, files, dirs)
        entries.sort(key=lambda e: (e.st.st_mtime, e.name), reverse=True)
        total = 0
        for i, e in enumerate(entries):
            total += e.st.st_size if not e.is_dir else 0
            why = self._why_act(ctx, result, d, e, i, total)
            if why is None:
                continue
            if e.is_dir:
                self._remove_dir(ctx, result, root, d, e.name, why)
            elif self.rule.action == "compress":
                self._compress(ctx, result, d, e.name, e.st, why, tuple(sides.get(e.name, ())))
            else:
                self.t.remove(ctx, result, d, e.name, e.st, why,
                              siblings=tuple(sides.get(e.name, ())))

    def _candidates(self, ctx: RunContext, result: TargetResult, d: Dir, files: list[str],
                    dirs: list[str]
                    ) -> tuple[list[_Entry], dict[str, list[tuple[str, os.stat_result]]]]:
        """The names this rule judges (not another owner's, of the kind it matched, not
        already compressed), and the database side files going with a matching file."""
        rule, t = self.rule, self.t
        matched = set(files)
        entries: list[_Entry] = []
        sides: dict[str, list[tuple[str, os.stat_result]]] = {}
        for name, is_dir in [*((n, False) for n in files), *((n, True) for n in dirs)]:
            theirs = self.owner(d.path, name, is_dir)
            if theirs is not None:
                if ctx.wants_kept:
                    ctx.decide(Decision(t.name, d.join(name), False,
                                        f"rule {rule.name}: owned by {theirs}"))
                continue
            try:
                st = lstat_at(d, name)
            except OSError:
                continue
            if is_dir != S_ISDIR(st.st_mode):
                if not is_dir:
                    t.keep(ctx, result, d.join(name), "not a regular file")
                continue
            if not is_dir and not (S_ISREG(st.st_mode) or S_ISLNK(st.st_mode)):
                t.keep(ctx, result, d.join(name), "not a regular file")
                continue
            base = None if is_dir else _side_of(name)
            if base is not None and base in matched:
                sides.setdefault(base, []).append((name, st))
                continue
            if not is_dir and rule.action == "compress" and is_compressed(name):
                continue  # already done
            entries.append(_Entry(name, st, is_dir))
        return entries, sides

    def _why_act(self, ctx: RunContext, result: TargetResult, d: Dir, e: _Entry, i: int,
                 total: int) -> str | None:
        """The rule's reason to act on the *i*-th newest entry (*total*: the sizes so far),
        or None when it is kept (and reported so)."""
        rule, t = self.rule, self.t
        path = d.join(e.name) + ("/" if e.is_dir else "")
        age = ctx.now_ts - e.st.st_mtime
        if i < rule.keep_newest:
            t.keep(ctx, result, path, f"rule {rule.name}: newest {rule.keep_newest} in "
                                      "this directory")
            return None
        if self.max_age is not None and age > self.max_age:
            return f"rule {rule.name}: {age_text(age)} > {self.limit}"
        if rule.max_total_size is not None and total > rule.max_total_size:
            return (f"rule {rule.name}: beyond max_total_size "
                    f"{rule.max_total_size:,} bytes of this directory")
        if e.st.st_mtime > ctx.future_limit:
            t.keep(ctx, result, path, "modified in the future")
        else:
            t.keep(ctx, result, path, f"rule {rule.name}: {age_text(max(age, 0))}, "
                                      "within its limits")
        return None

    def _remove_dir(self, ctx: RunContext, result: TargetResult, root: Root, d: Dir,
                    name: str, why: str) -> None:
        path = d.join(name)
        max_age = self.max_age

        def keep(s: os.stat_result) -> str | None:
            if max_age is not None and ctx.now_ts - s.st_mtime <= max_age:
                return "younger than the rule's max_age"
            return self.t.last_moment_keep(ctx, s)

        tree = remove_tree(root, d, name, dry_run=ctx.dry_run, keep=keep,
                           keep_name=self.keep_name)
        if tree.held and tree.held[0][0] == path:
            self.t.keep(ctx, result, path + "/", tree.held[0][1])
            return
        result.removed += tree.files
        result.bytes += tree.bytes
        result.skipped += tree.kept
        if ctx.wants_kept:
            for held, reason in tree.held:
                ctx.decide(Decision(self.t.name, held, False, reason))
        for err in tree.errors:
            result.error(err)
        ctx.decide(Decision(self.t.name, path + "/", tree.files > 0 or tree.removed_dir,
                            f"{why}, {tree.files} files", tree.bytes))

    def _compress(self, ctx: RunContext, result: TargetResult, d: Dir, name: str,
                  st: os.stat_result, why: str,
                  sides: tuple[tuple[str, os.stat_result], ...]) -> None:
        t = self.t
        hold = t.last_moment_keep(ctx, st)
        for _n, sst in sides:
            hold = hold or t.last_moment_keep(ctx, sst)
        if hold is not None:
            t.keep(ctx, result, d.join(name), f"{hold}; a rule would compress it: {why}")
            result.skipped += 1
            return
        if ctx.dry_run:
            result.removed += 1
            ctx.decide(Decision(t.name, d.join(name), True, f"compress: {why}"))
            return
        try:
            done = compress_backup(d.fd, name, should_stop=ctx.should_stop)
        except (CompressError, OSError) as exc:
            result.skipped += 1
            result.error(f"{d.join(name)}: not compressed: {exc}")
            return
        outcomes = unlink_all(d, list(done.remove))
        freed = 0
        for (orig, rst), failure in zip(done.remove, outcomes, strict=True):
            if failure is None:
                freed += freed_bytes(rst)
            elif not (isinstance(failure, OSError) and failure.errno == errno.ENOENT):
                result.error(f"{d.join(orig)}: compressed, original not removed: {failure}")
        result.removed += 1
        result.bytes += max(freed - done.compressed_size, 0)
        ctx.decide(Decision(t.name, d.join(name), True,
                            f"compressed to {done.name}: {why}", freed))


class TableRuleRun(DatabaseTarget):
    """One table rule: a database target over the databases its ``database`` path names."""

    name = "rules"

    def __init__(self, rule: TableRule) -> None:
        self.rule = rule
        self.done = "archived" if rule.action == "archive" else "deleted"

    def max_age_text(self, ctx: RunContext) -> str:
        return format_duration(self.rule.max_age)

    def run_rule(self, ctx: RunContext, result: TargetResult) -> bool:
        """Run over each database; False when one failed (its error recorded)."""
        rule, cfg = self.rule, ctx.config
        wanted = {os.path.normpath(rel) for _env, rel in cfg.expand_env(rule.database)}
        files, _notes = find_databases(cfg)
        files = [f for f in files if f.rel in wanted]
        if not files:
            result.note(f"rule {rule.name}: no database {rule.database} exists")
        ok = True
        for f in files:
            ctx.check_stop()
            part = result.part(f"{rule.name}/{f.label}")
            part.update(kind="table", path=f.rel, skipped=0, checked=0)
            try:
                self._one(ctx, result, f, part)
            except (sqlite3.Error, DbError) as exc:
                msg = describe(exc)
                part["error"] = msg
                result.error(f"rule {rule.name}: {f.rel}: {msg}")
                ok = False
        return ok

    def plan(self, ctx: RunContext, db: Database) -> Plan | Skip:
        rule = self.rule
        tz = ctx.config.database.naive_timezone
        table = db.find_table([rule.table])
        if table is None:
            return Skip(f"rule {rule.name}: no table {rule.table}")
        cols = db.columns(table)
        needed = [rule.time_column, *(c.column for c in rule.where)]
        if rule.action == "archive":
            needed += [c for c in (rule.archive_column, rule.archive_time_column) if c]
        missing = [c for c in needed if c.lower() not in cols]
        if missing:
            return Skip(f"rule {rule.name}: {table} has no column "
                        f"{', '.join(dict.fromkeys(missing))} (nothing is guessed)")
        scope: list[str] = []
        params: dict[str, Any] = {}
        for i, cond in enumerate(rule.where):
            sql, p = in_list(f"_t.{quote(cols[cond.column.lower()])}",
                             cond.values, f"w{i}_")  # type: ignore[arg-type]
            scope.append(sql)
            params |= p
        set_sql = None
        if rule.action == "archive":
            arch = quote(cols[rule.archive_column.lower()])
            scope.append(f"(_t.{arch} IS NULL OR _t.{arch} = 0)")
            set_sql = f"{arch} = 1"
            if rule.archive_time_column:
                set_sql += f", {quote(cols[rule.archive_time_column.lower()])} = :archived_at"
                params["archived_at"] = sql_timestamp(ctx.now, tz)
        time_col = cols[rule.time_column.lower()]
        return Plan(
            table=table,
            scope=" AND ".join(scope) or "1",
            time_expr=epoch_sql(f"_t.{quote(time_col)}", tz),
            cutoff=cutoff(ctx.now, rule.max_age),
            params=params,
            set_sql=set_sql,
            what=f"rows (rule {rule.name})",
            time_desc=time_col,
        )


# --- `config check`: every rule with what it owns --------------------------------------------


def _overlaps(a: frozenset[str], b: frozenset[str]) -> bool:
    return any(x == y or x.startswith(y + "/") or y.startswith(x + "/") for x in a for y in b)


#: A built-in target's names in some directories: (target, its directories, its patterns).
_Builtin = tuple[str, frozenset[str], tuple[str, ...]]


def describe_rules(cfg: Config) -> list[str]:
    """One paragraph per rule (and ``[orphans]``) for ``config check``: what it does, where,
    and which owners come before it there (one owner per name: see targets.owners)."""
    out: list[str] = []
    abs_dirs = {i: frozenset(rule_dir(cfg, d) for d in r.dirs)
                for i, r in enumerate(cfg.rules.files)}
    builtin = _builtin_owners(cfg)
    dbs = frozenset(os.path.dirname(cfg.resolve(rel)) for t in cfg.database.paths
                    for _e, rel in cfg.expand_env(t))
    for i, rule in enumerate(cfg.rules.files):
        out.append(_describe_file_rule(i, rule))
        before = [f"{name} ({', '.join(pats)})" for name, dirs, pats in builtin
                  if _overlaps(dirs, abs_dirs[i])]
        if _overlaps(dbs, abs_dirs[i]):
            before.append("the configured databases and their -wal/-shm/-journal")
        before += [f"rule {cfg.rules.files[j].name}" for j in range(i)
                   if _overlaps(abs_dirs[j], abs_dirs[i])]
        out.append("  owns the names it matches there, except those of: "
                   + ("; ".join(before) if before else "nobody (no other owner there)"))
    out += [_describe_table_rule(cfg, i, trule) for i, trule in enumerate(cfg.rules.tables)]
    o = cfg.orphans
    if o.enabled:
        dirs = ", ".join(rel for t in o.dirs for _e, rel in cfg.expand_env(t))
        refs = ", ".join(f"{r.table}.{r.column}" for r in o.references)
        out.append(f"orphans: quarantine files in {dirs} older than {format_duration(o.grace)} "
                   f"that no {refs} in {o.database} names; delete them from "
                   f"{o.quarantine_dir} after {format_duration(o.quarantine_for)}")
    return out


def _builtin_owners(cfg: Config) -> list[_Builtin]:
    """The built-in targets that own names before any rule, where, and by which patterns."""
    builtin: list[_Builtin] = []
    if cfg.backups.enabled:
        bdirs = [rel for t in (cfg.backups.dir, cfg.backups.shared_dir) if t
                 for _e, rel in cfg.expand_env(t)]
        builtin.append(("backups", frozenset(cfg.resolve(d) for d in bdirs),
                        cfg.backups.patterns))
    if cfg.logs.enabled:
        builtin.append(("logs", frozenset(cfg.resolve(d) for d in cfg.logs.dirs),
                        (*cfg.logs.patterns, *cfg.logs.protect)))
        if cfg.logs.tmp_dir:
            builtin.append(("logs", frozenset({os.path.normpath(cfg.logs.tmp_dir)}),
                            cfg.logs.tmp_patterns))
    if cfg.temp.enabled:
        builtin.append(("temp", frozenset(cfg.resolve(d) for d in cfg.temp.dirs),
                        (*cfg.temp.patterns, *cfg.temp.dir_patterns)))
    return builtin


def _describe_file_rule(i: int, rule: FileRule) -> str:
    """``rules.files[0] name: delete files named *.tmp below data; older than 7d``."""
    limits = []
    if rule.max_age is not None:
        limits.append(f"older than {format_duration(rule.max_age)}")
    if rule.max_total_size is not None:
        limits.append(f"beyond {rule.max_total_size:,} bytes per directory")
    if rule.keep_newest:
        limits.append(f"keeping the newest {rule.keep_newest} per directory")
    kind = {"file": "files", "dir": "directories (whole)", "any": "files and directories"}
    return (f"rules.files[{i}] {rule.name}: {rule.action} {kind[rule.type]} named "
            f"{', '.join(rule.patterns)} below {', '.join(rule.dirs)}; " + ", ".join(limits))


def _describe_table_rule(cfg: Config, i: int, trule: TableRule) -> str:
    """``rules.tables[0] name: delete rows of T in data/x.db whose created_at is older...``."""
    where = "".join(f" and {c.column} in ({', '.join(map(repr, c.values))})"
                    for c in trule.where)
    dbs_of = ", ".join(rel for _e, rel in cfg.expand_env(trule.database))
    verb = ("archive (set " + trule.archive_column
            + (f", {trule.archive_time_column}" if trule.archive_time_column else "")
            + ")") if trule.action == "archive" else "delete"
    return (f"rules.tables[{i}] {trule.name}: {verb} rows of {trule.table} in {dbs_of} "
            f"whose {trule.time_column} is older than "
            f"{format_duration(trule.max_age)}{where}")
