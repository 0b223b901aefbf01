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
import functools
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from architect_cleanup.fs import (
    UNLISTED,
    Dir,
    FsError,
    ListAhead,
    Root,
    Scope,
    Walker,
    by_group,
    group_classes,
    group_matcher,
    group_prefilter,
    is_profile_dir,
    list_ahead,
    list_leaf,
    patterns_regex,
)
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.base import (
    FileTarget,
    Interrupted,
    RunContext,
    Step,
    under,
    unique_dirs,
)
from architect_cleanup.targets.owners import BackupNames, Owners, not_backups, walk_exclusions

log = logging.getLogger(__name__)

#: How many directories' answers _Scopes keeps (the current path and recent siblings).
_BELOW_MEMO = 1024
#: A target judges at most this many names of one directory between two stop checks.
CHUNK = 1024
#: Directories handed to the pool and not yet reported, per thread of it: what bounds the
#: memory (their names and the reports waiting: about 1.5 MB per 1,024 names judged) and the
#: descriptors (one each) the pool holds, whatever the tree. Two keep every thread busy
#: while the run's thread reports (8 cost 5 MB more, no faster, in `make bench`).
WINDOW_PER_WORKER = 2
#: How often (seconds) the run's thread, waiting for a directory's work, asks for a stop.
STOP_POLL = 0.25
#: A dry run's leaf directories listed ahead of the one being judged (one descriptor each,
#: and their listings: about 20 KB per 100 names). The C thread's work comes in bursts (a
#: big directory): with 16 the run's thread waited for it in 300 of 20,000 takes, 0.25 s of
#: a 2.3 s dry run of 1M files; 48: 2.28 -> 2.11 s (7 alternated runs), peak RSS +0.9 MB;
#: 128: no faster, +3 MB.
AHEAD = 48


class TreeTarget(FileTarget):
    """A target judged by name during the shared walk of the root."""

    def starts(self, ctx: RunContext) -> tuple[str, ...]:
        """Directories (relative to root) below which this target looks."""
        raise NotImplementedError

    def file_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        raise NotImplementedError

    def dir_patterns(self, ctx: RunContext) -> tuple[str, ...]:
        return ()

    #: its :meth:`on_dir` takes the directory's listing from ``Dir.ahead`` when a dry run's
    #: walk listed it ahead (see _AheadWalk)
    lists_ahead = False

    def prepare(self, ctx: RunContext, result: TargetResult) -> None:
        """Set up per-run state before the walk."""

    def on_files(self, ctx: RunContext, result: TargetResult, d: Dir, names: list[str]
                 ) -> None:
        """Judge the files of one directory whose names this target's patterns matched."""
        raise NotImplementedError

    def on_dir(self, ctx: RunContext, result: TargetResult, d: Dir, name: str) -> None:
        """A directory this target claimed by name (not entered by the walk)."""

    def files_work(self, ctx: RunContext, d: Dir, names: list[str]) -> Step:
        """:meth:`on_files` split in two for the pool (``safety.workers``): the system calls,
        run here on a pool thread, and the report returned, run on the run's thread in walk
        order (counts, decisions, logs). Only what is safe on any thread may run here. By
        default everything waits for the report: a target that does not split its work
        keeps to the run's thread."""
        return lambda result: self.on_files(ctx, result, d, names)

    def dir_work(self, ctx: RunContext, d: Dir, name: str) -> Step:
        """:meth:`on_dir` split in two for the pool, as :meth:`files_work`."""
        return lambda result: self.on_dir(ctx, result, d, name)

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
        files: list[tuple[str, tuple[str, ...]]] = []
        dirs = []
        for i in active:
            m = self.members[i]
            pats = m.target.file_patterns(self.ctx)
            if pats:
                files.append((m.group, pats))
            dpats = m.target.dir_patterns(self.ctx)
            if dpats:
                dirs.append(f"(?P<{m.group}>{patterns_regex(dpats)})")
        return Scope(
            files=group_matcher(files) if files else None,
            prefilter=group_prefilter(files) if files else None,
            groups=tuple(group for group, _pats in files),
            classes=group_classes(files) if files else None,
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
    excl = walk_exclusions(ctx.config)
    scopes = _Scopes(members, re.compile(patterns_regex(excl)) if excl else None, ctx)
    all_starts = unique_dirs(tuple(
        os.path.relpath(s, root.dir.path) for m in members for s in m.starts))
    walk = _SharedWalk(ctx, root, scopes, {m.group: m for m in members},
                       "/".join(m.target.name for m in members), owners.backups)
    for rel in all_starts:
        walk.below(rel)
    for m in members:
        if not m.failed and not m.passive:
            _guard(m, m.target.finish, ctx, m.result)


@dataclass
class _SharedWalk:
    """What one shared walk of the root hands its work with: the run, the members' scopes,
    the member behind each pattern group, the label of its progress and the backups' names
    (which no tree target may take)."""

    ctx: RunContext
    root: Root
    scopes: _Scopes
    by_group: dict[str, _Member]
    label: str
    backups: BackupNames

    @property
    def members(self) -> list[_Member]:
        return self.scopes.members

    def owner(self, group: str | None) -> _Member:
        """The member whose pattern group matched (the first member when none is named)."""
        return self.by_group[group] if group is not None else self.scopes.members[0]

    def below(self, rel: str) -> None:
        """Walk one start directory (relative to the root), on the run's thread or with its
        directories' work on the pool (``safety.workers``)."""
        members = self.members
        try:
            start = self.root.open_path(rel)
        except FileNotFoundError:
            for m in members:
                if self.ctx.config.resolve(rel) in m.starts:
                    m.result.note(f"{rel}: does not exist")
            return
        except FsError as exc:
            for m in members:
                m.result.error(str(exc))
            return
        # the pool pays for deletions (unlinkat waits for the disk, off the GIL); a dry run
        # only lists and stats, which Python threads do slower than one (the GIL, and a
        # futex per hand-over: 2x the time of one thread on 1M files), so it judges here
        # while a C thread lists and stats ahead of it (no GIL at all)
        workers = self.ctx.config.safety.workers
        ahead = list_ahead() if workers > 1 and self.ctx.dry_run else None
        with contextlib.closing(start):
            if ahead is not None:
                _AheadWalk(self, start, ahead).run()
            elif workers > 1 and not self.ctx.dry_run:
                _PooledWalk(self, start, workers).run()
            else:
                self._sequential(start)

    def _sequential(self, start: Dir) -> None:
        """The walk with every directory's work done here, as it is listed."""
        ctx, label, members = self.ctx, self.label, self.members
        walker = Walker(self.root, start, scope=self.scopes.for_dir,
                        on_skip=functools.partial(_skipped, members))

        def tick() -> None:
            ctx.check_stop()
            ctx.status(f"{label}: {walker.entries_seen:,} files checked")

        walker.on_dir = tick
        for d, files, dirs in walker.batches():
            self._hand_out(d, files, dirs, tick)
        for m in members:  # the shared walk looked at these entries for every target
            m.result.checked += walker.entries_seen

    def _hand_out(self, d: Dir, files: list[tuple[str, Any]], dirs: list[tuple[str, Any]],
                  tick: Callable[[], None]) -> None:
        """One directory's matching names, handed to their targets a list at a time."""
        self._hand_groups(d, by_group(files), dirs, tick)

    def _hand_groups(self, d: Dir, per: dict[str | None, list[str]],
                     dirs: list[tuple[str, Any]], tick: Callable[[], None]) -> None:
        """:meth:`_hand_out` with the names already by group (:func:`fs.by_group`)."""
        ctx = self.ctx
        for group, names in per.items():
            m = self.owner(group)
            for i in range(0, len(names), CHUNK):
                if i:  # also inside one huge directory: stop (SIGTERM) and progress
                    tick()
                if not (m.failed or m.passive):
                    chunk = not_backups(self.backups, d.path, names[i:i + CHUNK])
                    _guard(m, m.target.on_files, ctx, m.result, d, chunk)
        for name, match in dirs:
            m = self.owner(match.lastgroup)
            if not (m.failed or m.passive):
                _guard(m, m.target.on_dir, ctx, m.result, d, name)


def _skipped(members: list[_Member], path: str, why: str) -> None:
    for m in members:
        if under(path, m.starts) or any(s.startswith(path + "/") for s in m.starts):
            m.result.note(f"{path}: {why}")


class _Pool:
    """Directories' work on a few threads, their reports applied on the run's thread in the
    order the work was handed in: a reorder window of at most *window* directories.

    A job returns the function that applies its report; a job never raises (it carries its
    exception to its report). Once :attr:`stopping` is set, a job not yet started does no
    work: what started finishes, and every report of work done is applied (a file removed
    is always counted)."""

    def __init__(self, workers: int, window: int, should_stop: Callable[[], bool]) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="architect-cleanup")
        self.window = window
        self.queue: deque[Future[Callable[[], None]] | Callable[[], None]] = deque()
        self.stopping = threading.Event()
        self.should_stop = should_stop
        #: a stop was asked for while this thread waited for the pool
        self.stop_asked = False

    def submit(self, job: Callable[[], Callable[[], None]]) -> None:
        while len(self.queue) >= self.window:
            self._apply_first()
        self.queue.append(self.executor.submit(job))

    def then(self, step: Callable[[], None]) -> None:
        """A report with no work (a skipped directory's note), in its place in the order."""
        if self.queue:
            self.queue.append(step)
        else:
            step()

    def _apply_first(self) -> None:
        item = self.queue.popleft()
        if isinstance(item, Future):
            item = self._wait(item)
        item()

    def _wait(self, fut: Future[Callable[[], None]]) -> Callable[[], None]:
        """The result of one job; meanwhile a stop is asked for now and then, so that a job
        in a huge directory stops between its chunks as the walk would."""
        while True:
            try:
                return fut.result(timeout=STOP_POLL)
            except TimeoutError:
                if not self.stopping.is_set() and self.should_stop():
                    self.stop_asked = True
                    self.stopping.set()

    def finish(self) -> None:
        while self.queue:
            self._apply_first()

    def close(self) -> None:
        """Wait for the work handed in and apply its reports (after a stop, only the work
        that had started), then end the threads."""
        try:
            self.finish()
        finally:
            self.executor.shutdown(wait=True)


class _PooledWalk:
    """The shared walk with its directories' work on a pool of *workers* threads.

    The walk itself (entering directories, listing those with sub-directories) stays on this
    thread and decides the order. Each directory with work goes to a pool thread through a
    descriptor of its own (``dup``): a leaf directory is listed there, then each target's
    ``files_work``/``dir_work`` does its system calls (``lstat``, the last-moment checks,
    the unlinks: every invariant is the sequential walk's, in the same functions). Reports
    (counts, decisions, notes, errors) are applied here strictly in walk order, so counts
    and ``-v`` output are the same as with one thread. Real runs only: a dry run judges on
    the run's own thread (:class:`_AheadWalk`, :meth:`_SharedWalk.below`)."""

    def __init__(self, walk: _SharedWalk, start: Dir, workers: int) -> None:
        self.walk = walk
        self.pool = _Pool(workers, workers * WINDOW_PER_WORKER, walk.ctx.should_stop)
        #: entries of the leaf directories the pool listed, as their reports came in
        self.seen = 0
        self.walker = Walker(walk.root, start, scope=walk.scopes.for_dir,
                             on_skip=self._on_skip, lazy_leaves=True, on_dir=self._tick)

    def run(self) -> None:
        walk, walker, pool = self.walk, self.walker, self.pool
        try:
            for d, files, dirs in walker.batches():
                scope = walk.scopes.for_dir(d) if files is UNLISTED else None
                own = d.dup()
                listed = files if scope is None else []
                pool.submit(functools.partial(self._job, own, listed, dirs, scope))
        except BaseException:
            pool.stopping.set()  # stopped, or the walk failed: no more work starts
            raise
        finally:
            pool.close()  # the work done is reported, whatever happened
        if pool.stop_asked:
            raise Interrupted("stopped on request")
        self.seen += walker.entries_seen
        walk.ctx.status(f"{walk.label}: {self.seen:,} files checked")  # with the pool's leaves
        for m in walk.members:  # the shared walk looked at these entries for every target
            m.result.checked += self.seen

    def _on_skip(self, path: str, why: str) -> None:
        self.pool.then(functools.partial(_skipped, self.walk.members, path, why))

    def _tick(self) -> None:
        ctx = self.walk.ctx
        if ctx.should_stop():
            self.pool.stopping.set()
            raise Interrupted("stopped on request")
        ctx.status(f"{self.walk.label}: {self.walker.entries_seen + self.seen:,} files checked")

    def _job(self, d: Dir, files: list[tuple[str, Any]], dirs: list[tuple[str, Any]],
             scope: Scope | None) -> Callable[[], None]:
        """On a pool thread: list a leaf directory handed out unlisted (with its *scope*),
        then run each target's work on its names; returns the report, for the run's
        thread."""
        steps: list[tuple[_Member, Step | Exception]] = []
        listed, why = 0, None
        try:
            if self.pool.stopping.is_set():
                return d.close
            if scope is not None and scope.files is not None:
                files, listed, why = list_leaf(d, scope.files, scope.prefilter)
            self._work_on(d, files, dirs, steps)
        except Exception as exc:  # a fault of the walk's own code: fail the first target
            steps.append((self.walk.members[0], exc))
        return functools.partial(self._report, d, listed, why, steps)

    def _work_on(self, d: Dir, files: list[tuple[str, Any]], dirs: list[tuple[str, Any]],
                 steps: list[tuple[_Member, Step | Exception]]) -> None:
        """Each target's work on one directory's names (a list at a time, no new list once
        a stop is asked for), its report appended to *steps*."""
        walk, stopping = self.walk, self.pool.stopping
        for group, names in by_group(files).items():
            m = walk.owner(group)
            for i in range(0, len(names), CHUNK):
                if m.failed or m.passive or (i and stopping.is_set()):
                    continue
                chunk = not_backups(walk.backups, d.path, names[i:i + CHUNK])
                steps.append((m, _work(m, m.target.files_work, walk.ctx, d, chunk)))
        for name, match in dirs:
            m = walk.owner(match.lastgroup)
            if not (m.failed or m.passive or stopping.is_set()):
                steps.append((m, _work(m, m.target.dir_work, walk.ctx, d, name)))

    def _report(self, d: Dir, listed: int, why: str | None,
                steps: list[tuple[_Member, Step | Exception]]) -> None:
        """On the run's thread, in walk order: one directory's counts, notes and reports."""
        try:
            self.seen += listed
            if why is not None:
                _skipped(self.walk.members, d.path, why)
            for m, step in steps:
                if isinstance(step, Exception):
                    _fail(m, step)
                else:
                    _guard(m, step, m.result)
        finally:
            d.close()


class _AheadWalk:
    """A dry run's shared walk with its leaf directories listed and lstat()ed ahead of it on
    a C thread (:class:`~architect_cleanup.fs.ListAhead`), at most :data:`AHEAD` of them.

    Everything else is the sequential walk's, on this thread and in walk order: the matcher,
    each target's judgement and report (``_hand_out``), the notes of skipped directories.
    Counts, decisions and ``-v`` output are the same as with one thread."""

    def __init__(self, walk: _SharedWalk, start: Dir, ahead: ListAhead) -> None:
        self.walk = walk
        self.ahead = ahead
        #: in walk order: a directory (its own descriptor, the scope of a leaf handed
        #: ahead or None, its files and claimed directories, those of them opened and
        #: handed ahead), or a skipped one's note
        self.queue: deque[tuple[Dir, Scope | None, list[tuple[str, Any]],
                                list[tuple[str, Any]], list[tuple[str, Dir]]]
                          | Callable[[], None]] = deque()
        #: entries of the leaves listed ahead, as they were taken
        self.seen = 0
        self.walker = Walker(walk.root, start, scope=walk.scopes.for_dir,
                             on_skip=self._on_skip, lazy_leaves=True, on_dir=self._tick)

    def run(self) -> None:
        walk, walker, ahead = self.walk, self.walker, self.ahead
        try:
            for d, files, dirs in walker.batches():
                own = d.dup()
                scope = walk.scopes.for_dir(d) if files is UNLISTED else None
                # handed over in the order _next takes them back
                claimed = self._claimed_ahead(own, dirs) if dirs else []
                if scope is not None:
                    ahead.submit(own, scope)
                self.queue.append((own, scope, files, dirs, claimed))
                while len(self.queue) > AHEAD:
                    self._next(ahead)
            while self.queue:
                self._next(ahead)
        finally:
            ahead.close()  # the thread is done with the descriptors: they may be closed
            for item in self.queue:
                if not callable(item):
                    item[0].close()
                    for _name, sub in item[4]:
                        sub.close()
        seen = walker.entries_seen + self.seen
        walk.ctx.status(f"{walk.label}: {seen:,} files checked")  # with the last leaves
        for m in walk.members:  # the shared walk looked at these entries for every target
            m.result.checked += seen

    def _claimed_ahead(self, own: Dir, dirs: list[tuple[str, Any]]) -> list[tuple[str, Dir]]:
        """Open and hand ahead the directories of *dirs* a rule takes whole, where their
        target takes a listing made ahead (``lists_ahead``: the temp target's
        ``__pycache__``): their lstat()s then run on the C thread. One that cannot be
        opened, or is a browser profile, is left to the target, which opens it itself and
        reports what it finds."""
        walk, out = self.walk, []
        for name, match in dirs:
            m = walk.owner(match.lastgroup)
            if m.failed or m.passive or not m.target.lists_ahead:
                continue
            try:
                sub = walk.root.open_dir(own, name)
            except (OSError, FsError):
                continue
            if is_profile_dir(sub):
                sub.close()
                continue
            self.ahead.submit_all(sub)
            out.append((name, sub))
        return out

    def _next(self, ahead: ListAhead) -> None:
        item = self.queue.popleft()
        if callable(item):
            item()
            return
        d, scope, files, dirs, claimed = item
        if claimed:  # taken first, whatever happens next: the thread is done with them
            d.ahead = {name: ahead.take_all(sub) for name, sub in claimed}
        try:
            if scope is None:
                if files or dirs:
                    self.walk._hand_out(d, files, dirs, self._tick)
                return
            per, listed, why = ahead.take(d, scope)
            self.seen += listed
            if why is not None:
                _skipped(self.walk.members, d.path, why)
            if per:
                self.walk._hand_groups(d, per, dirs, self._tick)
        finally:
            for left in (d.ahead or {}).values():  # not taken by its target (e.g. young)
                left.dir.close()
            d.ahead = None
            d.close()

    def _on_skip(self, path: str, why: str) -> None:
        self.queue.append(functools.partial(_skipped, self.walk.members, path, why))

    def _tick(self) -> None:
        ctx = self.walk.ctx
        ctx.check_stop()
        ctx.status(f"{self.walk.label}: {self.walker.entries_seen + self.seen:,} files "
                   "checked")


def _work(m: _Member, fn: Callable[..., Step], *args: object) -> Step | Exception:
    """Run one target's work on a pool thread; an exception fails that target (at once:
    no more of its work starts) and is reported in its place."""
    try:
        return fn(*args)
    except Exception as exc:
        m.failed = True
        return exc


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
