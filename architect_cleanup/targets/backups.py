"""backups: apply each environment's retention policy to its database backups.

Three steps, so a dry run and a real run decide the same: *plan* every backup directory
(scan, then the policy's calendar rules and size budget, see :mod:`architect_cleanup.retention`),
then the *free-space floor* over the directories of each filesystem, then *apply* (remove, or
only count in a dry run).

A backup's ``-wal``, ``-shm`` and ``-journal`` siblings go with it and count in its size; a
sibling whose backup is gone is left alone and reported. Backups younger than ``min_age`` may
still be being written, and files modified in the future have a wrong clock: both are kept and
do not count in any rule, budget or floor.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from architect_cleanup.config import Config
from architect_cleanup.fs import Dir, FsError, compile_patterns, display, free_space
from architect_cleanup.retention import (
    Backup,
    FloorGroup,
    FreeSpace,
    Policy,
    PolicyError,
    PolicyKind,
    Verdict,
    format_size,
    keep_newest,
    newest_first,
    select,
)
from architect_cleanup.retention import free_space_pass as floor_pass
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    FileTarget,
    Hold,
    RunContext,
    age_text,
    register,
)

log = logging.getLogger(__name__)

SIBLING_SUFFIXES = ("-wal", "-shm", "-journal")
SHARED = "shared"
LOCALTIME = "/etc/localtime"


def backup_dirs(cfg: Config) -> list[tuple[str, str, str]]:
    """(label, relative dir, policy name) for every environment, then the shared directory."""
    out = [(env, rel, env) for env, rel in
           ((e, cfg.backups.dir.replace("{env}", e)) for e in cfg.environments)]
    if cfg.backups.shared_dir:
        out.append((SHARED, cfg.backups.shared_dir, "default"))
    return out


def local_zone(environ: Mapping[str, str] | None = None,
               localtime: str = LOCALTIME) -> tzinfo:
    """The server's local time zone with its DST rules, as the C library picks it: ``$TZ``
    (a zone name or a zoneinfo file), else ``/etc/localtime``, else UTC."""
    environ = os.environ if environ is None else environ
    tz = environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            if tz.startswith("/"):
                with open(tz, "rb") as fh:
                    return ZoneInfo.from_file(fh, key=tz)
            return ZoneInfo(tz)
        except (OSError, ValueError, ZoneInfoNotFoundError):
            log.warning("TZ=%s is not a zone this tool can read; using %s", tz, localtime)
    try:
        with open(localtime, "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC


@dataclass
class _Plan:
    """One backup directory, opened and judged, waiting to be applied."""

    label: str
    d: Dir
    policy: Policy
    source: str
    files: dict[str, os.stat_result] = field(default_factory=dict)
    siblings: dict[str, list[tuple[str, os.stat_result]]] = field(default_factory=dict)
    held: list[tuple[str, str]] = field(default_factory=list)  # kept before any rule
    verdicts: list[Verdict[str]] = field(default_factory=list)
    problem: str | None = None


@register
class Backups(FileTarget):
    name = "backups"

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        root = ctx.root()
        self._is_backup = compile_patterns(ctx.config.backups.patterns)
        tz = local_zone()
        plans: list[_Plan] = []
        try:
            for label, rel, policy_name in backup_dirs(ctx.config):
                ctx.check_stop()
                try:
                    d = root.open_path(rel)
                except FileNotFoundError:
                    result.note(f"{rel}: does not exist (no backups for {label} yet)")
                    continue
                except FsError as exc:
                    result.error(f"{label}: {exc}")
                    continue
                policy, source = ctx.config.backups.policy_for(policy_name)
                plan = _Plan(label, d, policy, source)
                plans.append(plan)
                self._plan(ctx, result, plan, tz)
            self._free_space_floor(ctx, result, plans)
            for plan in plans:
                ctx.check_stop()
                self._apply(ctx, result, plan)
                ctx.status(f"backups: {plan.label} done, {result.removed:,} to remove so far")
        finally:
            for plan in plans:
                plan.d.close()
        problems = [p.problem for p in plans if p.problem]
        if problems:
            result.fail("; ".join(problems))

    # --- plan ---------------------------------------------------------------------------------

    def _plan(self, ctx: RunContext, result: TargetResult, plan: _Plan, tz: tzinfo) -> None:
        cfg = ctx.config.backups
        d, files, siblings = plan.d, plan.files, plan.siblings
        candidates: list[str] = []
        with os.scandir(d.fd) as it:
            for entry in it:
                name = entry.name
                if self._is_backup(name):
                    candidates.append(name)
                elif not name.endswith(SIBLING_SUFFIXES):
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

        ready: list[Backup[str]] = []
        for name in candidates:
            if name not in files:
                continue
            st = files[name]
            if not stat.S_ISREG(st.st_mode):
                plan.held.append((name, "not a regular file"))
                continue
            age = ctx.now_ts - st.st_mtime
            if age < cfg.min_age.total_seconds() and st.st_mtime <= ctx.future_limit:
                plan.held.append((name, f"{age_text(max(age, 0))}, younger than min_age: may "
                                        "still be being written (not counted)"))
                continue
            if self.last_moment_keep(ctx, st) is Hold.FUTURE:
                self._warn_future(d.join(name), st, ctx)
                plan.held.append((name, f"{Hold.FUTURE} (not counted)"))
                continue
            sibs = [s for _, s in siblings.get(name, ())]
            size = st.st_size + sum(s.st_size for s in sibs)
            frees = sum(_allocated(s) for s in (st, *sibs))
            ready.append(Backup(name, st.st_mtime, size, name, frees))

        if plan.policy.kind is PolicyKind.NEWEST:
            # the plain number keeps its original code path and reasons, exactly as before
            plan.verdicts = keep_newest(ready, plan.policy.keep_last, plan.label)
            return
        try:
            plan.verdicts = select(ready, plan.policy, tz, plan.label)
        except PolicyError as exc:
            plan.problem = str(exc)
            log.error("backups: %s: nothing removed in %s", exc, plan.label)
            plan.verdicts = [Verdict(b, True, f"not judged: {exc}") for b in newest_first(ready)]

    # --- free-space floor ---------------------------------------------------------------------

    def _free_space_floor(self, ctx: RunContext, result: TargetResult,
                          plans: list[_Plan]) -> None:
        """min_free_space over the backup directories of each filesystem together."""
        by_fs: dict[int, list[_Plan]] = {}
        for plan in plans:
            by_fs.setdefault(plan.d.dev, []).append(plan)
        for group in by_fs.values():
            if not any(p.policy.min_free_space is not None and not p.problem for p in group):
                continue
            try:
                free, total = free_space(group[0].d)
            except OSError as exc:
                result.error(f"{group[0].label}: cannot read free space: {exc.strerror}")
                continue
            floors = [FloorGroup(p.label, p.verdicts,
                                 None if p.problem else p.policy.min_free_space,
                                 p.policy.keep_min) for p in group]
            outcome = floor_pass(floors, free, total)
            for plan, fg in zip(group, floors, strict=True):
                plan.verdicts = fg.verdicts
                if fg.floor is not None:
                    self._report_floor(ctx, result, fg, outcome)

    def _report_floor(self, ctx: RunContext, result: TargetResult, fg: FloorGroup[str],
                      outcome: FreeSpace) -> None:
        part = result.part(fg.label)
        part["free_space"] = {
            "min_free_space": str(fg.floor), "need_bytes": fg.need,
            "total_bytes": outcome.total, "free_bytes": outcome.free_before,
            "projected_free_bytes": outcome.free_after,
            "removed_for_space": fg.removed, "stopped_at_keep_min": fg.at_keep_min,
        }
        if outcome.free_before >= fg.need:
            return
        floor = str(fg.floor)
        if fg.floor is not None and fg.floor.percent:
            floor += f" ({format_size(fg.need)})"
        go = "would go" if ctx.dry_run else "go"
        text = (f"{fg.label}: free space {outcome.text(outcome.free_before)} is below "
                f"min_free_space {floor}: {fg.removed} backup(s) beyond the rules {go}, "
                f"reaching {outcome.text(outcome.free_after)}")
        if fg.at_keep_min:
            text += f"; still below, stopped at keep_min = {fg.keep_min}"
            log.warning("backups: %s", text)
        else:
            log.info("backups: %s", text)
        result.note(text)

    # --- apply --------------------------------------------------------------------------------

    def _apply(self, ctx: RunContext, result: TargetResult, plan: _Plan) -> None:
        d, label = plan.d, plan.label
        for name, reason in plan.held:
            self._kept_bytes(result, label, plan.files[name].st_size)
            self.keep(ctx, result, d.join(name), reason, label)
        kept = removed = 0
        verb = "would remove" if ctx.dry_run else "removing"
        for v in plan.verdicts:
            name = v.backup.ref
            if v.keep:
                kept += 1
                self._kept_bytes(result, label, v.backup.size)
                self.keep(ctx, result, d.join(name), v.reason, label)
            elif self.remove(ctx, result, d, name, plan.files[name], v.reason, part=label,
                             siblings=tuple(plan.siblings.get(name, ()))):
                removed += 1
                log.info("backups: %s %s (%s)", verb, display(d.join(name)), v.reason)
            else:
                kept += 1
                self._kept_bytes(result, label, v.backup.size)
        if plan.verdicts:
            log.info("backups: %s: kept %d, %s %d by %s (%s)", label, kept,
                     "would remove" if ctx.dry_run else "removed", removed, plan.source,
                     plan.policy.describe())


    @staticmethod
    def _kept_bytes(result: TargetResult, label: str, size: int) -> None:
        """The bytes of the backups an environment keeps (the history's samples)."""
        part = result.part(label)
        part["kept_bytes"] = part.get("kept_bytes", 0) + size


def _allocated(st: os.stat_result) -> int:
    """What unlinking this file gives back: its blocks, nothing while other links remain."""
    return st.st_blocks * 512 if st.st_nlink <= 1 else 0
