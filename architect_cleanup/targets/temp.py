"""temp: delete temporary files and whole ``__pycache__``/``.pytest_cache`` directories.

Only what is older than ``min_age`` goes (the original worker had no age limit, and a file
being written died). The shared walk hands a name to the logs target first, so a file is
judged by one target only and a dry run's counts are exact; backups in backup directories are
left to the backups target.
"""

from __future__ import annotations

import os

from architect_cleanup.config import format_duration
from architect_cleanup.fs import Dir, lstat_at, remove_tree
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    Decision,
    RunContext,
    age_text,
    register,
)
from architect_cleanup.targets.tree import TreeTarget


@register
class Temp(TreeTarget):
    name = "temp"

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

    def on_files(self, ctx: RunContext, result: TargetResult, d: Dir, names: list[str]
                 ) -> None:
        self.judge_by_age(ctx, result, d, names, max_age=self._min_age, limit=self._limit,
                          young="younger than")

    def on_dir(self, ctx: RunContext, result: TargetResult, d: Dir, name: str) -> None:
        path = d.join(name)
        try:
            st = lstat_at(d, name)
        except OSError:
            return
        age = ctx.now_ts - st.st_mtime
        if age <= self._min_age:
            self.keep(ctx, result, path + "/",
                      f"directory changed {age_text(max(age, 0))} ago, within {self._limit}")
            return

        def keep(s: os.stat_result) -> str | None:
            if ctx.now_ts - s.st_mtime <= self._min_age:
                return "younger than min_age"  # e.g. a .pyc rewritten in place
            return self.last_moment_keep(ctx, s)

        tree = remove_tree(ctx.root(), d, name, dry_run=ctx.dry_run, keep=keep)
        result.removed += tree.files
        result.bytes += tree.bytes
        result.skipped += tree.kept
        hint = (ctx.readonly(self.name, tree.readonly, tree.readonly_count)
                if tree.readonly else "")
        for i, err in enumerate(tree.errors):
            result.error(err + hint if i == 0 else err)
        reason = f"{age_text(age)} > {self._limit}, {tree.files} files"
        if tree.kept:
            reason += f", {tree.kept} kept inside"
        ctx.decide(Decision(self.name, path + "/", tree.files > 0 or tree.removed_dir,
                            reason, tree.bytes))
