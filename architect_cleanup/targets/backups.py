"""backups: keep the newest N database backups per environment, remove the rest.

A backup's ``-wal``, ``-shm`` and ``-journal`` siblings go with it and count in its size; a
sibling whose backup is gone is left alone and reported. Backups younger than ``min_age`` may
still be being written: they are kept and do not count toward N.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat

from architect_cleanup.fs import Dir, FsError, display
from architect_cleanup.retention import Backup, keep_newest
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import FileTarget, RunContext, age_text, matcher, register

log = logging.getLogger(__name__)

SIBLING_SUFFIXES = ("-wal", "-shm", "-journal")
SHARED = "shared"


def backup_dirs(ctx: RunContext) -> list[tuple[str, str, str]]:
    """(label, relative dir, policy name) for every environment, then the shared directory."""
    cfg = ctx.config
    out = [(env, rel, env) for env, rel in
           ((e, cfg.backups.dir.replace("{env}", e)) for e in cfg.environments)]
    if cfg.backups.shared_dir:
        out.append((SHARED, cfg.backups.shared_dir, "default"))
    return out


@register
class Backups(FileTarget):
    name = "backups"

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        root = ctx.root()
        self._is_backup = matcher(ctx.config.backups.patterns)
        for label, rel, policy in backup_dirs(ctx):
            ctx.check_stop()
            try:
                d = root.open_path(rel)
            except FileNotFoundError:
                result.note(f"{rel}: does not exist (no backups for {label} yet)")
                continue
            except FsError as exc:
                result.error(f"{label}: {exc}")
                continue
            with contextlib.closing(d):
                self._one_dir(ctx, result, d, label, policy)
            ctx.status(f"backups: {label} done, {result.removed:,} to remove so far")

    def _one_dir(self, ctx: RunContext, result: TargetResult, d: Dir, label: str,
                 policy: str) -> None:
        cfg = ctx.config.backups
        files: dict[str, os.stat_result] = {}
        siblings: dict[str, list[tuple[str, os.stat_result]]] = {}
        candidates: list[str] = []
        with os.scandir(d.fd) as it:
            for entry in it:
                name = entry.name
                if self._is_backup(name):
                    candidates.append(name)
                elif name.endswith(SIBLING_SUFFIXES):
                    pass
                else:
                    continue
                try:
                    files[name] = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
        result.checked += len(files)
        for name, st in files.items():
            for suffix in SIBLING_SUFFIXES:
                if name.endswith(suffix):
                    base = name[: -len(suffix)]
                    if base in files and base in candidates:
                        siblings.setdefault(base, []).append((name, st))
                    elif self._is_backup(base) or base.endswith((".db", ".sqlite")):
                        result.note(f"{display(d.join(name))}: its backup is gone; left alone")
                    break

        keep_n = cfg.keep_for(policy)
        ready: list[Backup[str]] = []
        for name in candidates:
            st = files[name]
            path = d.join(name)
            if not stat.S_ISREG(st.st_mode):
                self.keep(ctx, result, path, "not a regular file", label)
                continue
            age = ctx.now_ts - st.st_mtime
            if age < cfg.min_age.total_seconds() and st.st_mtime <= ctx.future_limit:
                self.keep(ctx, result, path,
                          f"{age_text(max(age, 0))}, younger than min_age: may still be "
                          "being written (not counted)", label)
                continue
            if self.last_moment_keep(ctx, st) == "modified in the future":
                self._warn_future(path, st, ctx)
                self.keep(ctx, result, path, "modified in the future (not counted)", label)
                continue
            size = st.st_size + sum(s.st_size for _, s in siblings.get(name, ()))
            ready.append(Backup(name, st.st_mtime, size, name))

        for v in keep_newest(ready, keep_n, label):
            name = v.backup.ref
            if v.keep:
                self.keep(ctx, result, d.join(name), v.reason, label)
            else:
                self.remove(ctx, result, d, name, files[name], v.reason, part=label,
                            siblings=tuple(siblings.get(name, ())))
