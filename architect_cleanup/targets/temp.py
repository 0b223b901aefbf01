"""temp: delete temporary files and whole ``__pycache__``/``.pytest_cache`` directories.

Only what is older than ``min_age`` goes (the original worker had no age limit, and a file
being written died). Files the logs or backups targets own are left to them, so a file is
judged by one target only and a dry run's counts are exact.
"""

from __future__ import annotations

import contextlib
import os
import stat

from architect_cleanup.config import format_duration
from architect_cleanup.fs import Dir, FsError, Walker, remove_tree
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.backups import backup_dirs
from architect_cleanup.targets.base import (
    Decision,
    FileTarget,
    RunContext,
    age_text,
    exclusion_filter,
    matcher,
    register,
    under,
    unique_dirs,
)


@register
class Temp(FileTarget):
    name = "temp"

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        cfg = ctx.config
        self._min_age = cfg.temp.min_age.total_seconds()
        self._limit = format_duration(cfg.temp.min_age)
        is_temp = matcher(cfg.temp.patterns)
        self._is_log = matcher(cfg.logs.patterns) if cfg.logs.enabled else None
        self._log_dirs = frozenset(cfg.resolve(x) for x in cfg.logs.dirs)
        self._is_backup = matcher(cfg.backups.patterns) if cfg.backups.enabled else None
        self._backup_dirs = frozenset(cfg.resolve(rel) for _, rel, _ in backup_dirs(ctx))
        root = ctx.root()
        claim = matcher(cfg.temp.dir_patterns)
        for rel in unique_dirs(cfg.temp.dirs):
            try:
                start = root.open_path(rel)
            except FileNotFoundError:
                result.note(f"{rel}: does not exist")
                continue
            except FsError as exc:
                result.error(str(exc))
                continue
            with contextlib.closing(start):
                walker = Walker(root, start, dir_filter=exclusion_filter(ctx, claim),
                                on_skip=lambda p, why: result.note(f"{p}: {why}"))
                for n, (d, entry) in enumerate(walker, 1):
                    if n & 1023 == 0:
                        ctx.check_stop()
                        ctx.status(f"temp: {walker.entries_seen:,} files checked")
                    name = entry.name
                    if claim(name) and entry.is_dir(follow_symlinks=False):
                        self._tree(ctx, result, d, entry)
                    elif is_temp(name) and not self._owned_elsewhere(d, name):
                        self._file(ctx, result, d, entry)
                result.checked += walker.entries_seen

    def _owned_elsewhere(self, d: Dir, name: str) -> bool:
        if self._is_log is not None and self._is_log(name) and under(d.path, self._log_dirs):
            return True
        return (self._is_backup is not None and self._is_backup(name)
                and under(d.path, self._backup_dirs))

    def _file(self, ctx: RunContext, result: TargetResult, d: Dir,
              entry: os.DirEntry[str]) -> None:
        path = d.join(entry.name)
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            self.keep(ctx, result, path, "not a regular file")
            return
        age = ctx.now_ts - st.st_mtime
        if age <= self._min_age:
            why = "modified in the future" if st.st_mtime > ctx.now_ts + 300 \
                else f"{age_text(max(age, 0))}, younger than {self._limit}"
            if why == "modified in the future":
                self._warn_future(path, st, ctx)
            self.keep(ctx, result, path, why)
            return
        self.remove(ctx, result, d, entry.name, st, f"{age_text(age)} > {self._limit}")

    def _tree(self, ctx: RunContext, result: TargetResult, d: Dir,
              entry: os.DirEntry[str]) -> None:
        path = d.join(entry.name)
        try:
            st = entry.stat(follow_symlinks=False)
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

        tree = remove_tree(ctx.root(), d, entry.name, dry_run=ctx.dry_run, keep=keep)
        result.removed += tree.files
        result.bytes += tree.bytes
        result.skipped += tree.kept
        for err in tree.errors:
            result.error(err)
        reason = f"{age_text(age)} > {self._limit}, {tree.files} files"
        if tree.kept:
            reason += f", {tree.kept} kept inside"
        ctx.decide(Decision(self.name, path + "/", tree.files > 0 or tree.removed_dir,
                            reason, tree.bytes))
