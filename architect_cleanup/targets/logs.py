"""logs: delete old ``*.log`` and rotated ``*.log.*`` files.

Under the configured directories (``data/`` and ``logs/``) every matching log older than
``max_age`` goes; in ``tmp_dir`` (``/tmp``) only the top level is looked at, and only our own
``architect*`` logs (the original worker deleted every log in /tmp). The workers' active logs
(``protect``) and files a process holds open are never removed, and nothing inside a browser
profile or an excluded directory is looked at.
"""

from __future__ import annotations

import contextlib
import re

from architect_cleanup.config import format_duration
from architect_cleanup.fs import Dir, FsError, Scope, Walker, compile_patterns, patterns_regex
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import RunContext, Step
from architect_cleanup.targets.owners import backup_names, not_backups
from architect_cleanup.targets.tree import TreeTarget


class Logs(TreeTarget):
    name = "logs"

    def starts(self, ctx: RunContext) -> tuple[str, ...]:
        return ctx.config.logs.dirs

    def file_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        return ctx.config.logs.patterns

    def prepare(self, ctx: RunContext, result: TargetResult) -> None:
        cfg = ctx.config
        self._max_age = cfg.logs.max_age.total_seconds()
        self._limit = format_duration(cfg.logs.max_age)
        self._protected = compile_patterns(cfg.logs.protect)

    def on_files(self, ctx: RunContext, result: TargetResult, d: Dir, names: list[str]
                 ) -> None:
        self.files_work(ctx, d, names)(result)

    def files_work(self, ctx: RunContext, d: Dir, names: list[str]) -> Step:
        return self.age_work(ctx, d, names, max_age=self._max_age, limit=self._limit,
                             young="within", protected=self._protected,
                             protected_reason="active worker log (logs.protect)")

    def finish(self, ctx: RunContext, result: TargetResult) -> None:
        """Our own logs at the top level of tmp_dir (never below it: not ours)."""
        cfg = ctx.config.logs
        if not cfg.tmp_dir or not cfg.tmp_patterns:
            return
        try:
            tmp = ctx.root(cfg.tmp_dir)
        except FsError as exc:
            result.note(f"tmp_dir {exc}")
            return
        start = tmp.open_path(".")
        scope = Scope(files=re.compile(patterns_regex(cfg.tmp_patterns)).match)
        backups = backup_names(ctx.config)
        with contextlib.closing(start):
            walker = Walker(tmp, start, scope=lambda _d: scope, max_depth=0)
            for d, files, _dirs in walker.batches():
                self.on_files(ctx, result, d,
                              not_backups(backups, d.path, [name for name, _m in files]))
            result.checked += walker.entries_seen
