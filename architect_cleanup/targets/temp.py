"""temp: delete temporary files and whole ``__pycache__``/``.pytest_cache`` directories.

Only what is older than ``min_age`` goes (the original worker had no age limit, and a file
being written died). The shared walk hands a name to the logs target first, so a file is
judged by one target only and a dry run's counts are exact; backups in backup directories are
left to the backups target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from architect_cleanup.config import format_duration
from architect_cleanup.fs import Dir, TreeResult, compile_patterns, lstat_at, remove_tree
from architect_cleanup.history import Item
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.backups import SIBLING_SUFFIXES
from architect_cleanup.targets.base import (
    Decision,
    RunContext,
    Step,
    age_text,
    under,
)
from architect_cleanup.targets.owners import BackupNames, backup_names
from architect_cleanup.targets.tree import TreeTarget


def inside_rules(ctx: RunContext, backups_in: BackupNames) -> Callable[[str, bool], str | None]:
    """What a directory the temp target takes whole must keep: what the shared walk would
    keep or hand to another target there (``keep_name`` of :func:`fs.remove_tree`).

    Directories: ``safety.exclude_dirs``; a directory that is, or holds, a configured
    directory of another target (a backup directory, a database's directory, a log
    directory) is kept whole. Files: ``logs.protect``; a configured database and its
    ``-wal``/``-shm``/``-journal``; a backup in a backup directory; a log the logs target
    owns (its patterns, below its directories)."""
    cfg = ctx.config
    databases = frozenset(cfg.resolve(rel) for template in cfg.database.paths
                          for _env, rel in cfg.expand_env(template))
    reserved = {os.path.dirname(p) for p in databases}
    for template in (cfg.backups.dir, cfg.backups.shared_dir):
        if template:
            reserved.update(cfg.resolve(rel) for _env, rel in cfg.expand_env(template))
    logs_on = cfg.logs.enabled
    log_dirs = frozenset(cfg.resolve(rel) for rel in cfg.logs.dirs) if logs_on else frozenset()
    reserved.update(log_dirs)
    return _InsideRules(
        excluded=compile_patterns(cfg.safety.exclude_dirs),
        protected=compile_patterns(cfg.logs.protect),
        databases=databases, reserved=frozenset(reserved), log_dirs=log_dirs,
        is_log=compile_patterns(cfg.logs.patterns) if logs_on else None,
        backups_in=backups_in)


@dataclass(frozen=True, slots=True)
class _InsideRules:
    """The ``keep_name`` :func:`inside_rules` builds: called with an entry's path and
    whether it is a directory, the reason it stays, or None."""

    excluded: Callable[[str], bool]
    protected: Callable[[str], bool]
    databases: frozenset[str]
    #: other targets' directories (backups, databases' directories, logs)
    reserved: frozenset[str]
    log_dirs: frozenset[str]
    is_log: Callable[[str], bool] | None
    backups_in: BackupNames

    def __call__(self, path: str, is_dir: bool) -> str | None:
        parent, name = os.path.split(path)
        if is_dir:
            return self._dir_reason(path, name)
        return self._file_reason(path, parent, name)

    def _dir_reason(self, path: str, name: str) -> str | None:
        if self.excluded(name):
            return "excluded by safety.exclude_dirs"
        reserved = self.reserved
        if path in reserved or any(r.startswith(path + "/") for r in reserved):
            return "holds another target's directory (backups, databases or logs)"
        return None

    def _file_reason(self, path: str, parent: str, name: str) -> str | None:
        if self.protected(name):
            return "active worker log (logs.protect)"
        base = path
        for suffix in SIBLING_SUFFIXES:
            base = base.removesuffix(suffix)
        if path in self.databases or base in self.databases:
            return "a configured database (database.paths)"
        owned = self.backups_in(parent)
        if owned is not None and owned(name):
            return "a backup (the backups target's)"
        if self.is_log is not None and self.is_log(name) and under(parent, self.log_dirs):
            return "a log (the logs target's)"
        return None


class Temp(TreeTarget):
    name = "temp"
    lists_ahead = True

    def starts(self, ctx: RunContext) -> tuple[str, ...]:
        return ctx.config.temp.dirs

    def file_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        return ctx.config.temp.patterns

    def dir_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        return ctx.config.temp.dir_patterns

    def prepare(self, ctx: RunContext, result: TargetResult) -> None:
        cfg = ctx.config
        self._min_age = cfg.temp.min_age.total_seconds()
        self._limit = format_duration(cfg.temp.min_age)
        self._keep_name = inside_rules(ctx, backup_names(cfg))

    def on_files(self, ctx: RunContext, result: TargetResult, d: Dir, names: list[str]
                 ) -> None:
        self.files_work(ctx, d, names)(result)

    def files_work(self, ctx: RunContext, d: Dir, names: list[str]) -> Step:
        return self.age_work(ctx, d, names, max_age=self._min_age, limit=self._limit,
                             young="younger than")

    def on_dir(self, ctx: RunContext, result: TargetResult, d: Dir, name: str) -> None:
        self.dir_work(ctx, d, name)(result)

    def dir_work(self, ctx: RunContext, d: Dir, name: str) -> Step:
        """A claimed directory: its age, then the whole tree's removal (any thread); the
        report counts and decides (see TreeTarget.dir_work)."""
        path = d.join(name)
        try:
            st = lstat_at(d, name)
        except OSError:
            return lambda result: None
        age = ctx.now_ts - st.st_mtime
        if age <= self._min_age:
            return lambda result: self.keep(
                ctx, result, path + "/",
                f"directory changed {age_text(max(age, 0))} ago, within {self._limit}")

        def keep(s: os.stat_result) -> str | None:
            if ctx.now_ts - s.st_mtime <= self._min_age:
                return "younger than min_age"  # e.g. a .pyc rewritten in place
            return self.last_moment_keep(ctx, s)

        tree = remove_tree(ctx.root(), d, name, dry_run=ctx.dry_run, keep=keep,
                           keep_name=self._keep_name,
                           listed=d.ahead.pop(name, None) if d.ahead else None)
        return lambda result: self._report_tree(ctx, result, path, age, st, tree)

    def _report_tree(self, ctx: RunContext, result: TargetResult, path: str, age: float,
                     st: os.stat_result, tree: TreeResult) -> None:
        if tree.held and tree.held[0][0] == path:  # the directory itself: left whole
            self.keep(ctx, result, path + "/", tree.held[0][1])
            return
        result.removed += tree.files
        result.bytes += tree.bytes
        result.skipped += tree.kept
        if ctx.wants_kept:
            for held, why in tree.held:
                ctx.decide(Decision(self.name, held, False, why))
        hint = (ctx.readonly(self.name, tree.readonly, tree.readonly_count)
                if tree.readonly else "")
        for i, err in enumerate(tree.errors):
            result.error(err + hint if i == 0 else err)
        reason = f"{age_text(age)} > {self._limit}, {tree.files} files"
        if tree.kept:
            reason += f", {tree.kept} kept inside"
        gone = tree.files > 0 or tree.removed_dir
        ctx.decide(Decision(self.name, path + "/", gone, reason, tree.bytes))
        if gone and ctx.on_item is not None:  # the directory is the item (its files counted)
            ctx.on_item(Item(self.name, path + "/", tree.bytes, st.st_mtime, reason))
