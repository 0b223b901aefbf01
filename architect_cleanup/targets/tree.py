"""One walk of the root for every name-based target (logs and temp).

Each tree target says where it looks (directories relative to ``root``), which file names it
wants and which directory names it takes whole. The shared walk enters every directory once,
matches each name against one combined regular expression of the targets active there, and
hands a matching entry to the first target (in run order) whose rule matched — so a file
belongs to exactly one target and a dry run counts it once. A million-file tree is read once
per run instead of once per target.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from architect_cleanup.fs import Dir, FsError, Root, Scope, Walker, patterns_regex
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    FileTarget,
    Interrupted,
    RunContext,
    under,
    unique_dirs,
)
from architect_cleanup.targets.owners import BackupNames, Owners, not_backups, walk_exclusions

log = logging.getLogger(__name__)

#: How many directories' answers _Scopes keeps (the current path and recent siblings).
_BELOW_MEMO = 1024
#: A target judges at most this many names of one directory between two stop checks.
CHUNK = 1024


class TreeTarget(FileTarget):
    """A target judged by name during the shared walk of the root."""

    def starts(self, ctx: RunContext) -> tuple[str, ...]:
        """Directories (relative to root) below which this target looks."""
        raise NotImplementedError

    def file_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        raise NotImplementedError

    def dir_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        return ()

    def prepare(self, ctx: RunContext, result: TargetResult) -> None:
        """Set up per-run state before the walk."""

    def on_files(self, ctx: RunContext, result: TargetResult, d: Dir, names: list[str]
                 ) -> None:
        """Judge the files of one directory whose names this target's patterns matched."""
        raise NotImplementedError

    def on_dir(self, ctx: RunContext, result: TargetResult, d: Dir, name: str) -> None:
        """A directory this target claimed by name (not entered by the walk)."""

    def finish(self, ctx: RunContext, result: TargetResult) -> None:
        """Work after the shared walk (e.g. the logs target's top level of /tmp)."""

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        scan_tree(ctx, Owners.of(ctx.config, [self]), {self.name: result})


@dataclass
class _Member:
    target: TreeTarget
    result: TargetResult
    starts: frozenset[str]  # absolute paths
    group: str
    failed: bool = False
    passive: bool = False  # enabled but not selected (--only): owns its names, does nothing


@dataclass
class _Scopes:
    """Combined matchers per set of active targets, built on first use."""

    members: list[_Member]
    exclude: re.Pattern[str] | None
    ctx: RunContext
    cache: dict[tuple[int, ...], Scope] = field(default_factory=dict)
    #: directory path -> members whose start directories hold it (recent directories only)
    below: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def for_dir(self, d: Dir) -> Scope:
        active = tuple(i for i in self._below(d.path) if not self.members[i].failed)
        sc = self.cache.get(active)
        if sc is None:
            sc = self._build(active)
            self.cache[active] = sc
        return sc

    def _below(self, path: str) -> tuple[int, ...]:
        """The members whose start directories hold *path*: the parent's answer (the walk is
        depth first, so it is at hand) plus the members that start here. Working it out from
        the path alone costs a step per level, which a hostile chain of thousands of nested
        directories would pay at every level."""
        memo = self.below
        parent = memo.get(os.path.dirname(path))
        if parent is None:
            out = tuple(i for i, m in enumerate(self.members) if under(path, m.starts))
        else:
            out = tuple(i for i, m in enumerate(self.members)
                        if i in parent or path in m.starts)
        if len(memo) >= _BELOW_MEMO:
            memo.clear()
        memo[path] = out
        return out

    def _build(self, active: tuple[int, ...]) -> Scope:
        files, dirs = [], []
        for i in active:
            m = self.members[i]
            pats = m.target.file_patterns(self.ctx)
            if pats:
                files.append(f"(?P<{m.group}>{patterns_regex(pats)})")
            dpats = m.target.dir_patterns(self.ctx)
            if dpats:
                dirs.append(f"(?P<{m.group}>{patterns_regex(dpats)})")
        return Scope(
            files=re.compile("|".join(files)).match if files else None,
            claim=re.compile("|".join(dirs)).match if dirs else None,
            exclude=self.exclude.match if self.exclude is not None else None,
        )


def scan_tree(ctx: RunContext, owners: Owners, results: Mapping[str, TargetResult]) -> None:
    """Run the tree targets of *owners* over one shared walk of the root, each filling its
    result in *results*.

    Names go to their owners (see :mod:`~architect_cleanup.targets.owners`); a passive member
    owns its names but does nothing. A failure of one target's judgement marks that target
    failed and the walk goes on for the others; a failure of the walk itself (a missing root)
    fails them all."""
    root = ctx.root()
    members = []
    for i, target in enumerate(owners.members):
        result = results[target.name]
        is_passive = target.name in owners.passive
        if not is_passive:
            target.prepare(ctx, result)
        starts = frozenset(ctx.config.resolve(s) for s in unique_dirs(target.starts(ctx)))
        members.append(_Member(target, result, starts, f"t{i}", passive=is_passive))
    by_group = {m.group: m for m in members}
    excl = walk_exclusions(ctx.config)
    scopes = _Scopes(members, re.compile(patterns_regex(excl)) if excl else None, ctx)
    all_starts = unique_dirs(tuple(
        os.path.relpath(s, root.dir.path) for m in members for s in m.starts))
    label = "/".join(m.target.name for m in members)
    for rel in all_starts:
        _walk_one(ctx, root, rel, scopes, by_group, label, owners.backups)
    for m in members:
        if not m.failed and not m.passive:
            _guard(m, m.target.finish, ctx, m.result)


def _walk_one(ctx: RunContext, root: Root, rel: str, scopes: _Scopes,
              by_group: dict[str, _Member], label: str, backups: BackupNames) -> None:
    members = scopes.members
    try:
        start = root.open_path(rel)
    except FileNotFoundError:
        for m in members:
            if ctx.config.resolve(rel) in m.starts:
                m.result.note(f"{rel}: does not exist")
        return
    except FsError as exc:
        for m in members:
            m.result.error(str(exc))
        return

    def on_skip(path: str, why: str) -> None:
        for m in members:
            if under(path, m.starts) or any(s.startswith(path + "/") for s in m.starts):
                m.result.note(f"{path}: {why}")

    with contextlib.closing(start):
        walker = Walker(root, start, scope=scopes.for_dir, on_skip=on_skip)

        def tick() -> None:
            ctx.check_stop()
            ctx.status(f"{label}: {walker.entries_seen:,} files checked")

        walker.on_dir = tick
        first = members[0]
        for d, files, dirs in walker.batches():
            # one directory's matching names, handed to their targets a list at a time
            per: dict[str | None, list[str]] = {}
            for name, match in files:
                group = match.lastgroup
                names = per.get(group)
                if names is None:
                    per[group] = [name]
                else:
                    names.append(name)
            for group, names in per.items():
                m = by_group[group] if group is not None else first
                for i in range(0, len(names), CHUNK):
                    if i:  # also inside one huge directory: stop (SIGTERM) and progress
                        tick()
                    if not (m.failed or m.passive):
                        chunk = not_backups(backups, d.path, names[i:i + CHUNK])
                        _guard(m, m.target.on_files, ctx, m.result, d, chunk)
            for name, match in dirs:
                group = match.lastgroup
                m = by_group[group] if group is not None else first
                if not (m.failed or m.passive):
                    _guard(m, m.target.on_dir, ctx, m.result, d, name)
        for m in members:  # the shared walk looked at these entries for every target
            m.result.checked += walker.entries_seen


def _guard(m: _Member, fn: Callable[..., None], *args: object) -> None:
    """Call one target's hook; an exception fails that target only."""
    try:
        fn(*args)
    except Interrupted:
        raise
    except Exception as exc:
        _fail(m, exc)


def _fail(m: _Member, exc: Exception) -> None:
    m.failed = True
    m.result.fail(str(exc) or type(exc).__name__)
    log.debug("tree target %s failed", m.target.name, exc_info=True)
