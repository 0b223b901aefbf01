"""backups: apply each environment's retention policy to its database backups.

Three steps, so a dry run and a real run decide the same: *plan* every backup directory
(scan, then the policy's calendar rules and size budget, see :mod:`architect_cleanup.retention`),
then the *free-space floor* over the directories of each filesystem, then *apply* (remove, or
only count in a dry run).

A backup's ``-wal``, ``-shm`` and ``-journal`` siblings go with it and count in its size; a
sibling whose backup is gone is left alone and reported. Backups younger than ``min_age`` may
still be being written, and files modified in the future have a wrong clock: both are kept and
do not count in any rule, budget or floor.

**Known good** (``[backups.verify]``, :mod:`architect_cleanup.backup_verify`, cached per file
identity in the state directory): a *corrupt* backup takes no part in any rule, budget or
floor, so it is never "the newest backup" that is always kept and never uses up a keep rule's
count; the newest *good* one is what is protected. A corrupt backup is reported (a
``backup_corrupt`` journal warning, a note, the status) and kept, unless
``remove_corrupt_after`` says otherwise. "Unverified" backups (other kinds of files, or
``check = "off"``) count as before.

**Compressed** backups (``architect_X.db.zst``, from ``[backups.compress]``) are the same
backup as ``architect_X.db``: same time, same rules, same reasons; when a crash left both, the
``.zst`` goes with the original as one of its siblings. Kept backups older than ``after`` are
compressed (good or unverified ones; the copy is proven before the original goes).

**Offload** (``[backups.offload]``): a backup local retention removes is uploaded and its
copy verified first; when that fails, the backup is kept and the target fails, naming it and
why. With ``upload = "all"`` every good kept backup is uploaded once too. Remote retention
(``[backups.offload.policy.<env>]``) is applied to the bucket's listing; without one, remote
copies are never deleted.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from architect_cleanup import backup_compress as bc
from architect_cleanup.backup_offload import OffloadCache, make_offload
from architect_cleanup.backup_verify import State, Verification, VerifyCache, verify_cached
from architect_cleanup.config import Config, format_duration
from architect_cleanup.fs import Dir, FsError, compile_patterns, display, free_space, unlink_all
from architect_cleanup.journal import fields
from architect_cleanup.offload import DL_TMP_PREFIX, Offload, OffloadError, RemoteObject
from architect_cleanup.offload import Stopped as UploadStopped
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
from architect_cleanup.state import state_dir
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    FileTarget,
    Hold,
    Interrupted,
    RunContext,
    age_text,
    future_text,
)

log = logging.getLogger(__name__)

SIBLING_SUFFIXES = ("-wal", "-shm", "-journal")
SHARED = "default"  # the shared directory, named as its config entries
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
    checks: dict[str, Verification] = field(default_factory=dict)
    corrupt: list[tuple[str, Verification]] = field(default_factory=list)


#: One backup to upload: its name, and its files a restore needs (the backup last) with their
#: status.
_Upload = tuple[str, list[tuple[str, os.stat_result]]]


class Backups(FileTarget):
    name = "backups"
    #: ``backups list`` sets False: no request to the bucket unless asked (--remote)
    remote = True

    def __init__(self) -> None:
        super().__init__()
        #: one row per backup judged in the last run (``backups list`` reads them)
        self.inventory: list[dict[str, object]] = []
        self._offload: Offload | OffloadError | None = None
        self._uploaded: OffloadCache | None = None

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        root = ctx.root()
        cfg = ctx.config.backups
        self._is_backup = compile_patterns(cfg.patterns)
        self._verify_cache = VerifyCache(state_dir()) if cfg.verify.check != "off" else None
        self._uploaded = OffloadCache(state_dir()) if cfg.offload.enabled else None
        self._failures: list[str] = []
        self._would_compress: set[str] = set()
        self._url = cfg.offload.url
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
                policy, source = cfg.policy_for(policy_name)
                plan = _Plan(label, d, policy, source)
                plans.append(plan)
                self._plan(ctx, result, plan, tz)
            self._free_space_floor(ctx, result, plans)
            for plan in plans:
                ctx.check_stop()
                self._apply(ctx, result, plan)
                ctx.status(f"backups: {plan.label} done, {result.removed:,} to remove so far")
            if cfg.offload.enabled and self.remote:
                for plan in plans:
                    ctx.check_stop()
                    self._remote_retention(ctx, result, plan, tz)
        finally:
            for plan in plans:
                plan.d.close()
            self._save_caches(result)
        problems = [p.problem for p in plans if p.problem] + self._failures
        if problems:
            result.fail("; ".join(problems))

    def _save_caches(self, result: TargetResult) -> None:
        for cache in (self._verify_cache, self._uploaded):
            if cache is None:
                continue
            try:
                cache.save()
            except OSError as exc:
                result.note(f"cannot save {cache.path}: {exc.strerror}")

    # --- plan ---------------------------------------------------------------------------------

    def _plan(self, ctx: RunContext, result: TargetResult, plan: _Plan, tz: tzinfo) -> None:
        """Judge one backup directory: list it, pair each backup with its side files, hold
        what takes no part in the rules, verify the rest, then apply the policy."""
        candidates = self._pair_siblings(result, plan, self._list(result, plan))
        ready = self._ready(ctx, plan, candidates)
        self._report_corrupt(ctx, result, plan, ready)
        self._judge(plan, ready, tz)

    def _list(self, result: TargetResult, plan: _Plan) -> list[str]:
        """Stat every backup and every side file of the directory (into ``plan.files``);
        the backups' names, in listing order."""
        files = plan.files
        candidates: list[str] = []
        with os.scandir(plan.d.fd) as it:
            for entry in it:
                name = entry.name
                if bc.is_temporary(name) or name.startswith(DL_TMP_PREFIX):
                    continue  # an unfinished copy of ours: compression sweeps it
                if self._is_backup(name):
                    candidates.append(name)
                elif bc.sibling_of(name) is None:
                    continue
                try:
                    files[name] = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
        result.checked += len(files)
        return candidates

    def _pair_siblings(self, result: TargetResult, plan: _Plan,
                       candidates: list[str]) -> list[str]:
        """File each side file (and a compressed twin) under the backup it goes with, in
        ``plan.siblings``; a side file whose backup is gone is noted and left alone. The
        candidates that are backups of their own."""
        d, files, siblings = plan.d, plan.files, plan.siblings
        chosen = set(candidates)
        # a crash between compressing and removing the original leaves X.db and X.db.zst:
        # one backup, the .zst going with the original
        for name in list(candidates):
            if bc.is_compressed(name) and bc.original_name(name) in chosen and name in files:
                chosen.discard(name)
                siblings.setdefault(bc.original_name(name), []).append((name, files[name]))
        for name, st in files.items():
            sib = bc.sibling_of(name)
            if sib is None:
                continue
            base = sib[0]
            for owner in (base, bc.original_name(base), bc.compressed_name(base)):
                if owner in chosen and owner in files:
                    siblings.setdefault(owner, []).append((name, st))
                    chosen.discard(name)  # a pattern matching side files too: not a backup
                    break
            else:
                # a pattern matching side files too makes no backup of one whose backup is gone
                if (name in chosen or self._is_backup(base)
                        or bc.original_name(base).endswith((".db", ".sqlite"))):
                    chosen.discard(name)
                    result.note(f"{display(d.join(name))}: its backup is gone; left alone")
        return [n for n in candidates if n in chosen]

    def _ready(self, ctx: RunContext, plan: _Plan, candidates: list[str]) -> list[Backup[str]]:
        """The backups that take part in the rules: not held (``plan.held``), verified
        (``plan.checks``) and not corrupt (``plan.corrupt``), with their side files' size."""
        cfg = ctx.config.backups
        d, files, siblings = plan.d, plan.files, plan.siblings
        ready: list[Backup[str]] = []
        for name in candidates:
            if name not in files:
                continue
            st = files[name]
            held = self._held_before_rules(ctx, plan, name, st)
            if held is not None:
                plan.held.append((name, held))
                continue
            ctx.check_stop()
            check = verify_cached(self._verify_cache, d.fd, name, d.join(name),
                                  check=cfg.verify.check)  # type: ignore[arg-type]
            plan.checks[name] = check
            if check.state is State.CORRUPT:
                plan.corrupt.append((name, check))
                continue
            sibs = [s for _, s in siblings.get(name, ())]
            size = st.st_size + sum(s.st_size for s in sibs)
            frees = sum(_allocated(s) for s in (st, *sibs))
            ready.append(Backup(bc.original_name(name), st.st_mtime, size, name, frees))
        return ready

    def _held_before_rules(self, ctx: RunContext, plan: _Plan, name: str,
                           st: os.stat_result) -> str | None:
        """Why a backup is kept without counting in any rule, budget or floor (not a regular
        file, younger than min_age, modified in the future: warned about), or None."""
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        age = ctx.now_ts - st.st_mtime
        if age < ctx.config.backups.min_age.total_seconds() and st.st_mtime <= ctx.future_limit:
            return (f"{age_text(max(age, 0))}, younger than min_age: may still be being "
                    "written (not counted)")
        if self.last_moment_keep(ctx, st) is Hold.FUTURE:
            self._warn_future(plan.d.join(name), st, ctx)
            return f"{future_text(st.st_mtime - ctx.now_ts)} (not counted)"
        return None

    @staticmethod
    def _judge(plan: _Plan, ready: list[Backup[str]], tz: tzinfo) -> None:
        """The policy over the ready backups (``plan.verdicts``); a policy that cannot be
        applied (``plan.problem``) keeps them all."""
        if plan.policy.kind is PolicyKind.NEWEST:
            # the plain number keeps its original code path and reasons, exactly as before
            plan.verdicts = keep_newest(ready, plan.policy.keep_last, plan.label)
            return
        try:
            plan.verdicts = select(ready, plan.policy, tz, plan.label)
        except PolicyError as exc:
            plan.problem = str(exc)
            log.debug("backups: %s: nothing removed in %s", exc, plan.label)  # the worker says it
            plan.verdicts = [Verdict(b, True, f"not judged: {exc}") for b in newest_first(ready)]

    def _report_corrupt(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                        ready: list[Backup[str]]) -> None:
        """A corrupt backup newer than the newest good one: the warning of issue 15."""
        judged = [(plan.files[b.ref].st_mtime, b.ref) for b in ready]
        judged += [(plan.files[n].st_mtime, n) for n, _ in plan.corrupt]
        if judged and ctx.config.backups.verify.check != "off":
            # for the history and the backup_newest_ok metric: True good, False corrupt,
            # None unverified (and nothing at all while verification is off)
            state = plan.checks[max(judged)[1]].state
            result.part(plan.label)["newest_ok"] = (
                True if state is State.GOOD else False if state is State.CORRUPT else None)
        if not plan.corrupt:
            return
        newest_good = max((b.mtime for b in ready
                           if plan.checks[b.ref].state is State.GOOD), default=None)
        newer = [(n, v) for n, v in plan.corrupt
                 if newest_good is None or plan.files[n].st_mtime > newest_good]
        part = result.part(plan.label)
        part["corrupt"] = len(plan.corrupt)
        if not newer:
            return
        name, check = max(newer, key=lambda nv: (plan.files[nv[0]].st_mtime, nv[0]))
        if newest_good is None:
            good = "there is no good backup"
        else:
            when = datetime.fromtimestamp(newest_good, UTC).astimezone()
            good = f"newest good one is from {when:%Y-%m-%d %H:%M:%S %Z}"
        text = (f"{plan.label}: newest backup {display(name)} is corrupt ({check.detail}); "
                f"{good}")
        part["warning"] = text
        result.note(text)
        log.warning("backups: %s", text,
                    extra=fields("backup_corrupt", cleanup_target="backups",
                                 cleanup_env=plan.label, cleanup_path=plan.d.join(name),
                                 cleanup_error=check.detail))

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
        label = plan.label
        cfg = ctx.config.backups
        for name, reason in plan.held:
            self._kept_bytes(result, label, _size_of(plan, name))
            self.keep(ctx, result, plan.d.join(name), reason, label)
            self._row(plan, name, "keep", reason)
        self._apply_corrupt(ctx, result, plan)
        doomed = [v for v in plan.verdicts if not v.keep]
        keep = [v for v in plan.verdicts if v.keep]
        renamed = self._compress(ctx, result, plan, keep) if cfg.compress.after is not None else {}
        safe = self._removable(ctx, result, plan, doomed, keep, renamed)
        kept = removed = 0
        for v in plan.verdicts:
            if self._apply_verdict(ctx, result, plan, v, renamed.get(v.backup.ref, v.backup.ref),
                                   safe):
                removed += 1  # (a real run's journal gets one entry per item: the worker)
            else:
                kept += 1
        if plan.verdicts:
            log.info("backups: %s: kept %d, %s %d by %s (%s)", label, kept,
                     "would remove" if ctx.dry_run else "removed", removed, plan.source,
                     plan.policy.describe())

    def _removable(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                   doomed: list[Verdict[str]], keep: list[Verdict[str]],
                   renamed: dict[str, str]) -> set[str]:
        """The doomed backups that may go: all of them, or with offload on, those with a
        verified copy in the bucket (uploading what needs it, and with ``upload = "all"``
        the good kept ones too)."""
        cfg = ctx.config.backups
        if not cfg.offload.enabled:
            return {v.backup.ref for v in doomed}
        wanted = list(doomed)
        if cfg.offload.upload == "all":
            wanted += [v for v in keep if plan.checks.get(v.backup.ref) is not None
                       and plan.checks[v.backup.ref].state is State.GOOD]
        return self._upload(ctx, result, plan, wanted, {v.backup.ref for v in doomed}, renamed)

    def _apply_verdict(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                       v: Verdict[str], name: str, safe: set[str]) -> bool:
        """Keep or remove one judged backup (under its name now: *name*); True when it is
        (or would be) gone."""
        d, label = plan.d, plan.label
        size = _size_of(plan, name)  # compressed in this run: its .zst files
        if v.keep:
            self._kept_bytes(result, label, size)
            self.keep(ctx, result, d.join(name), v.reason, label)
            self._row(plan, name, "keep", v.reason + (
                "; would be compressed" if name in self._would_compress else ""))
            return False
        if name not in safe:
            self._kept_bytes(result, label, size)
            reason = f"{v.reason}; kept: no verified copy in the bucket"
            self.keep(ctx, result, d.join(name), reason, label)
            self._row(plan, name, "keep", reason)
            return False
        if self.remove(ctx, result, d, name, plan.files[name], v.reason, part=label,
                       siblings=tuple(plan.siblings.get(name, ()))):
            self._row(plan, name, "remove", v.reason)
            return True
        self._kept_bytes(result, label, size)
        self._row(plan, name, "keep", f"{v.reason}; kept at the last moment")
        return False

    def _apply_corrupt(self, ctx: RunContext, result: TargetResult, plan: _Plan) -> None:
        after = ctx.config.backups.verify.remove_corrupt_after
        for name, check in plan.corrupt:
            st = plan.files[name]
            age = ctx.now_ts - st.st_mtime
            if after is None or age <= after.total_seconds():
                why = ("remove_corrupt_after is not set" if after is None else
                       f"younger than remove_corrupt_after {format_duration(after)}")
                reason = f"corrupt ({check.detail}): not counted, kept ({why})"
                self._kept_bytes(result, plan.label, _size_of(plan, name))
                self.keep(ctx, result, plan.d.join(name), reason, plan.label)
                self._row(plan, name, "keep", reason)
                continue
            reason = (f"corrupt ({check.detail}), {age_text(age)} > remove_corrupt_after "
                      f"{format_duration(after)}")
            gone = self.remove(ctx, result, plan.d, name, st, reason, part=plan.label,
                               siblings=tuple(plan.siblings.get(name, ())))
            if not gone:
                self._kept_bytes(result, plan.label, _size_of(plan, name))
            self._row(plan, name, "remove" if gone else "keep", reason)

    def _row(self, plan: _Plan, name: str, verdict: str, reason: str) -> None:
        st = plan.files[name]  # every name judged was stat'ed (_list, _compress_one)
        check = plan.checks.get(name)
        self.inventory.append({
            "env": plan.label, "name": name, "backup": bc.original_name(name),
            "path": plan.d.join(name),
            "mtime": st.st_mtime,
            "size": _size_of(plan, name),
            "files": [name, *(n for n, _ in plan.siblings.get(name, ()))],
            "state": check.state.value if check is not None else "unverified",
            "detail": check.detail if check is not None else "not checked",
            "compressed": bc.is_compressed(name),
            **self._known_upload(st),
            "verdict": verdict, "reason": reason,
        })

    def _known_upload(self, st: os.stat_result) -> dict[str, object]:
        """``uploaded`` (the key of a verified copy, or None) and its SHA-256."""
        e = self._uploaded.lookup(st, self._url) if self._uploaded is not None else None
        return {"uploaded": str(e["key"]) if e else None,
                "uploaded_sha256": str(e["sha256"]) if e else None}

    # --- compression --------------------------------------------------------------------------

    def _compress(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                  keep: list[Verdict[str]]) -> dict[str, str]:
        """Compress kept backups older than ``after``; the names they have now."""
        cfg = ctx.config.backups.compress
        assert cfg.after is not None
        renamed: dict[str, str] = {}
        todo = [v.backup.ref for v in keep
                if not bc.is_compressed(v.backup.ref)
                and ctx.now_ts - plan.files[v.backup.ref].st_mtime > cfg.after.total_seconds()
                and (plan.checks.get(v.backup.ref) is None
                     or plan.checks[v.backup.ref].kind not in ("gzip", "zstd"))]
        if ctx.dry_run:
            for name in todo:
                self._would_compress.add(name)
                result.part(plan.label).setdefault("compressed", 0)
                result.part(plan.label)["compressed"] += 1
                log.info("backups: would compress %s (older than %s)",
                         display(plan.d.join(name)), format_duration(cfg.after))
            return renamed
        for i, name in enumerate(todo, 1):
            ctx.check_stop()
            ctx.status(f"backups: {plan.label}: compressing {i}/{len(todo)}")
            if self.last_moment_keep(ctx, plan.files[name]) is not None:
                continue
            new = self._compress_one(ctx, result, plan, name)
            if new is not None:
                renamed[name] = new
        return renamed

    def _compress_one(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                      name: str) -> str | None:
        """Compress one backup, then remove its original (:func:`fs.unlink_all`); the name
        it has now (its new files stat'ed and verified into *plan*), or None when it stays
        as it was."""
        cfg = ctx.config.backups.compress
        d = plan.d
        try:
            done = bc.compress_backup(d.fd, name, level=cfg.level,
                                      should_stop=ctx.should_stop)
        except bc.Stopped:
            raise Interrupted("stopped on request") from None
        except (bc.CompressError, OSError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.error(f"{label_of(plan)}: {display(name)}: not compressed: {text}")
            return None
        outcomes = unlink_all(d, list(done.remove))
        failed = [str(e) for e in outcomes if e is not None]
        if failed:
            result.error(f"{label_of(plan)}: {display(name)}: compressed, but the original stays: "
                         f"{failed[0]}")
            return None
        new = done.name
        st = os.stat(new, dir_fd=d.fd, follow_symlinks=False)
        plan.files[new] = st
        plan.siblings[new] = [(f.target, os.stat(f.target, dir_fd=d.fd,
                                                 follow_symlinks=False))
                              for f in done.files if f.target != new]
        check = verify_cached(self._verify_cache, d.fd, new, d.join(new),
                              check=ctx.config.backups.verify.check)  # type: ignore[arg-type]
        plan.checks[new] = check
        part = result.part(plan.label)
        part["compressed"] = part.get("compressed", 0) + 1
        log.info("backups: compressed %s to %s (%s -> %s)", display(d.join(name)), new,
                 format_size(done.size), format_size(done.compressed_size))
        return new

    # --- offload ------------------------------------------------------------------------------

    def _client(self, ctx: RunContext) -> Offload:
        if self._offload is None:
            try:
                self._offload = make_offload(ctx.config.backups.offload)
            except OffloadError as exc:
                self._offload = exc
        if isinstance(self._offload, OffloadError):
            raise self._offload
        return self._offload

    def _upload(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                wanted: list[Verdict[str]], doomed: set[str],
                renamed: dict[str, str]) -> set[str]:
        """Upload and verify each wanted backup's data files; the names (of *doomed*) that
        have a verified copy and so may be removed."""
        label = plan.label
        jobs = self._upload_jobs(plan, wanted, doomed, renamed)
        if not jobs:
            return set()
        if ctx.dry_run:
            for name, _ in jobs:
                log.info("backups: would upload %s to %s and verify it%s",
                         display(plan.d.join(name)), self._url,
                         ", then remove it" if name in doomed else "")
            result.part(label)["to_upload"] = len(jobs)
            return {name for name, _ in jobs if name in doomed}
        client = self._upload_client(ctx, label, jobs, doomed)
        if client is None:
            return set()
        progress = _UploadProgress(ctx, len(jobs), sum(st.st_size for _, parts in jobs
                                                       for _, st in parts))
        safe: set[str] = set()
        part = result.part(label)
        for i, (name, parts) in enumerate(jobs, 1):
            ctx.check_stop()
            ok = self._upload_one(ctx, result, client, plan, name, parts, name in doomed,
                                  progress.start(i))
            progress.done += sum(st.st_size for _, st in parts)
            if not ok:
                continue
            part["uploaded"] = part.get("uploaded", 0) + 1
            if name in doomed:
                safe.add(name)
        return safe

    def _upload_jobs(self, plan: _Plan, wanted: list[Verdict[str]], doomed: set[str],
                     renamed: dict[str, str]) -> list[_Upload]:
        """Each wanted backup (under its name now) with the files a restore needs, but for a
        kept one whose every file went up (and was verified) before."""
        jobs: list[_Upload] = []
        for name in [renamed.get(v.backup.ref, v.backup.ref) for v in wanted]:
            parts = [(n, st) for n, st in plan.siblings.get(name, ()) if _data_side(n)]
            parts.append((name, plan.files[name]))
            if name not in doomed and self._uploaded is not None and all(
                    self._uploaded.lookup(st, self._url) for _, st in parts):
                continue  # upload = "all": this one went up (and was verified) before
            jobs.append((name, parts))
        return jobs

    def _upload_client(self, ctx: RunContext, label: str,
                       jobs: list[_Upload],
                       doomed: set[str]) -> Offload | None:
        """The bucket's client, its stale multipart uploads aborted; None (the backups to
        remove kept, the failure recorded) when offload is unavailable."""
        try:
            client = self._client(ctx)
        except OffloadError as exc:
            n = sum(1 for name, _ in jobs if name in doomed)
            self._failures.append(f"{label}: offload unavailable, {n} backup(s) kept: {exc}")
            log.error("backups: %s: offload unavailable: %s", label, exc)
            return None
        try:  # unfinished multipart uploads a crash left (we hold the run lock)
            client.abort_stale_uploads(label)
        except OffloadError as exc:
            log.warning("backups: %s: %s", label, exc)
        return client

    def _upload_one(self, ctx: RunContext, result: TargetResult, client: Offload, plan: _Plan,
                    name: str, parts: list[tuple[str, os.stat_result]], doomed: bool,
                    progress: Callable[[int, int], None]) -> bool:
        """Upload one backup's files (a copy from an earlier run of one about to go is read
        back whole first); False, the failure recorded, when one of them did not go up."""
        d, label = plan.d, plan.label
        try:
            for fname, st in parts:
                up = client.upload(d.fd, fname, label, should_stop=ctx.should_stop,
                                   progress=progress)
                if up.skipped and doomed:
                    # the copy is from an earlier run: before the local one goes, read
                    # it back whole (damage at rest does not show in a stored checksum)
                    client.verify_remote(label, fname, should_stop=ctx.should_stop)
                if self._uploaded is not None:
                    self._uploaded.store(d.join(fname), st, self._url, up.key, up.sha256)
        except UploadStopped:
            raise Interrupted("stopped on request") from None
        except (OffloadError, OSError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            why = "kept" if doomed else "not uploaded"
            msg = f"{label}: {display(name)}: upload failed, {why}: {text}"
            result.error(msg)
            self._failures.append(msg)
            log.error("backups: %s", msg)
            return False
        return True

    def _remote_retention(self, ctx: RunContext, result: TargetResult, plan: _Plan,
                          tz: tzinfo) -> None:
        """``[backups.offload.policy.<env>]`` over the bucket's copies of one directory."""
        chosen = ctx.config.backups.offload.policy_for(plan.label)
        if chosen is None:
            return
        policy, source = chosen
        try:
            client = self._client(ctx)
            objects = client.list(plan.label, metadata=True)
        except OffloadError as exc:
            self._failures.append(f"{plan.label}: remote retention: {exc}")
            return
        groups, mains = _bucket_backups(objects)
        label = f"{plan.label} (bucket)"
        try:
            # a remote policy is always a table of rules (never a bare number: PolicyKind.NEWEST)
            verdicts = select(mains, policy, tz, label)
        except PolicyError as exc:
            self._failures.append(f"{plan.label}: remote retention: {exc}")
            return
        removed = sum(self._delete_remote(ctx, result, client, plan, label, v,
                                          groups[v.backup.ref])
                      for v in verdicts if not v.keep)
        result.part(plan.label)["remote_removed"] = removed
        result.part(plan.label)["remote_kept"] = sum(1 for v in verdicts if v.keep)
        log.info("backups: %s: %s %d of %d by %s", label,
                 "would delete" if ctx.dry_run else "deleted", removed, len(verdicts), source)

    def _delete_remote(self, ctx: RunContext, result: TargetResult, client: Offload,
                       plan: _Plan, label: str, v: Verdict[str], members: list[str]) -> bool:
        """Delete one backup's objects from the bucket (its side files first, or only count
        in a dry run); False when one of them could not be deleted."""
        for member in sorted(members, key=lambda m: m == v.backup.ref):
            if ctx.dry_run:
                continue
            try:
                client.delete(plan.label, member)
            except OffloadError as exc:
                result.error(f"{label}: {member}: not deleted: {exc}")
                return False
        log.info("backups: %s %s from the bucket (%s)",
                 "would delete" if ctx.dry_run else "deleted", v.backup.ref, v.reason)
        self.inventory.append({"env": plan.label, "name": v.backup.ref,
                               "remote": True, "verdict": "remove",
                               "reason": v.reason})
        return True

    @staticmethod
    def _kept_bytes(result: TargetResult, label: str, size: int) -> None:
        """The bytes of the backups an environment keeps (the history's samples)."""
        part = result.part(label)
        part["kept_bytes"] = part.get("kept_bytes", 0) + size


def _size_of(plan: _Plan, name: str) -> int:
    """The bytes of backup *name* and its side files, as they were listed or made."""
    return plan.files[name].st_size + sum(st.st_size for _, st in plan.siblings.get(name, ()))


def label_of(plan: _Plan) -> str:
    return plan.label


@dataclass
class _UploadProgress:
    """STATUS= lines while one directory's backups go up: ``uploading 2/5, 1.2 of 3.4 GB``."""

    ctx: RunContext
    count: int
    total: int
    #: bytes of the backups before the one going up now
    done: int = 0

    def start(self, i: int) -> Callable[[int, int], None]:
        """Show backup *i* starting (always); the callback for its bytes sent so far."""
        base = self.done
        self._show(i, base, force=True)

        def progress(sent: int, _all: int) -> None:
            self._show(i, base + sent)

        return progress

    def _show(self, i: int, at: int, *, force: bool = False) -> None:
        self.ctx.status(f"backups: uploading {i}/{self.count}, {at / 1024**3:.1f} of "
                        f"{self.total / 1024**3:.1f} GB", force=force)


def _bucket_backups(objects: Sequence[RemoteObject]
                    ) -> tuple[dict[str, list[str]], list[Backup[str]]]:
    """The bucket's objects of one directory as backups: each side file grouped with its
    backup (the object names of each backup), and each backup's time and total size."""
    groups: dict[str, list[str]] = {}
    by_name = {o.name: o for o in objects}
    for o in objects:
        sib = bc.sibling_of(o.name)
        owner = sib[0] if sib is not None and sib[0] in by_name else o.name
        groups.setdefault(owner, []).append(o.name)
    mains: list[Backup[str]] = []
    for owner, members in groups.items():
        o = by_name[owner]
        mtime = o.mtime_ns / 1e9 if o.mtime_ns is not None else o.last_modified
        size = sum(by_name[m].size for m in members)
        mains.append(Backup(bc.original_name(owner), mtime, size, owner))
    return groups, mains


def _data_side(name: str) -> bool:
    """A side file a restore needs (``-wal``, ``-journal``, compressed or not)."""
    sib = bc.sibling_of(name)
    return sib is not None and sib[1] in bc.DATA_SIDES


def _allocated(st: os.stat_result) -> int:
    """What unlinking this file gives back: its blocks, nothing while other links remain."""
    return st.st_blocks * 512 if st.st_nlink <= 1 else 0
