"""logs: delete old ``*.log`` and rotated ``*.log.*`` files.

Under the configured directories (``data/`` and ``logs/``) every matching log older than
``max_age`` goes; in ``tmp_dir`` (``/tmp``) only the top level is looked at, and only our own
``architect*`` logs (the original worker deleted every log in /tmp). The workers' active logs
(``protect``) and files a process holds open are never removed, and nothing inside a browser
profile or an excluded directory is looked at.
"""

from __future__ import annotations

import contextlib
import os
import stat

from architect_cleanup.config import format_duration
from architect_cleanup.fs import Dir, FsError, Root, Walker
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.backups import backup_dirs
from architect_cleanup.targets.base import (
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
class Logs(FileTarget):
    name = "logs"

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        cfg = ctx.config
        self._max_age = cfg.logs.max_age.total_seconds()
        self._limit = format_duration(cfg.logs.max_age)
        self._protected = matcher(cfg.logs.protect)
        self._is_backup = matcher(cfg.backups.patterns)
        self._backup_dirs = frozenset(cfg.resolve(rel) for _, rel, _ in backup_dirs(ctx)) \
            if cfg.backups.enabled else frozenset()
        root = ctx.root()
        is_log = matcher(cfg.logs.patterns)
        for rel in unique_dirs(cfg.logs.dirs):
            self._walk(ctx, result, root, rel, is_log, depth=None)
        if cfg.logs.tmp_dir and cfg.logs.tmp_patterns:
            try:
                tmp = ctx.root(cfg.logs.tmp_dir)
            except FsError as exc:
                result.note(f"tmp_dir {exc}")
                return
            self._walk(ctx, result, tmp, ".", matcher(cfg.logs.tmp_patterns), depth=0)

    def _walk(self, ctx: RunContext, result: TargetResult, root: Root, rel: str,
              is_log: object, depth: int | None) -> None:
        assert callable(is_log)
        try:
            start = root.open_path(rel)
        except FileNotFoundError:
            result.note(f"{rel}: does not exist")
            return
        except FsError as exc:
            result.error(str(exc))
            return
        with contextlib.closing(start):
            walker = Walker(root, start, dir_filter=exclusion_filter(ctx),
                            on_skip=lambda p, why: result.note(f"{p}: {why}"), max_depth=depth)
            for n, (d, entry) in enumerate(walker, 1):
                if n & 1023 == 0:
                    ctx.check_stop()
                    ctx.status(f"logs: {walker.entries_seen:,} files checked")
                name = entry.name
                if not is_log(name):
                    continue
                self._judge(ctx, result, d, entry)
            result.checked += walker.entries_seen

    def _judge(self, ctx: RunContext, result: TargetResult, d: Dir,
               entry: os.DirEntry[str]) -> None:
        name = entry.name
        if self._backup_dirs and self._is_backup(name) and under(d.path, self._backup_dirs):
            return  # a backup, judged by the backups target
        path = d.join(name)
        if self._protected(name):
            self.keep(ctx, result, path, "active worker log (logs.protect)")
            return
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            self.keep(ctx, result, path, "not a regular file")
            return
        age = ctx.now_ts - st.st_mtime
        if age <= self._max_age:
            if st.st_mtime > ctx.now_ts + 300:
                self._warn_future(path, st, ctx)
                self.keep(ctx, result, path, "modified in the future")
            else:
                self.keep(ctx, result, path, f"{age_text(age)}, within {self._limit}")
            return
        self.remove(ctx, result, d, name, st, f"{age_text(age)} > {self._limit}")
