"""What every target shares: the run context, decisions with reasons, and the registry."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from stat import S_ISLNK, S_ISREG
from typing import ClassVar, Literal, TypedDict

from architect_cleanup.config import Config
from architect_cleanup.dblocks import LockWatch
from architect_cleanup.fs import (
    Changed,
    Dir,
    FsError,
    OpenFiles,
    Root,
    display,
    freed_bytes,
    lstat_many,
    unlink_all,
    unlink_checked,
)
from architect_cleanup.history import DirItems, Item
from architect_cleanup.itemwrite import ItemRow
from architect_cleanup.journal import fields
from architect_cleanup.stats import TargetResult, action

log = logging.getLogger(__name__)

#: A file modified more than this far in the future is never deleted (clock trouble).
FUTURE_SLACK = 300.0
#: How often (seconds) live progress may be sent.
PROGRESS_INTERVAL = 1.0


class Hold(StrEnum):
    """Why an item a rule would remove is kept at the last moment (the text is the reason)."""

    #: modified more than FUTURE_SLACK ahead of ``now``: clock trouble
    FUTURE = "modified in the future"
    #: some process holds it open (``safety.skip_open_files``)
    OPEN = "open by a running process"


class Interrupted(Exception):
    """The run was asked to stop (SIGTERM); targets stop between items or batches."""


@dataclass(slots=True)
class Decision:
    """One item judged by a target: removed (or would be), or kept, and why."""

    target: str
    path: str
    remove: bool
    reason: str
    size: int = 0
    #: set by the run (RunContext.decide): a removal is "would remove" or "removed"
    dry_run: bool = True
    #: names removed with the item (a backup's -wal/-shm/-journal)
    siblings: tuple[str, ...] = ()

    def __str__(self) -> str:
        verb = action(self.target, self.dry_run) if self.remove else "keep"
        line = f"{verb:<12} {self.target:<7} {display(self.path)} ({display(self.reason)})"
        if self.siblings:
            line += f" with {', '.join(display(s) for s in self.siblings)}"
        return line


class Actor(TypedDict, total=False):
    """Who asked for a run, for the activity log and the journal (all keys optional).

    The API fills it in for every call: standalone, ``user`` is ``"api-token"`` (the caller
    proved it holds the bearer token) and ``user_id`` is None; mounted in the dashboard, the
    dashboard's own ``actor`` callable supplies its logged-in user. ``ip_address`` is the peer
    address of the HTTP request. The timer and the CLI pass no actor (None)."""

    user_id: int | None   # the dashboard's users.id (activity_log.user_id), when known
    user: str             # a name for the journal and the activity details ("api-token")
    ip_address: str | None  # activity_log.ip_address


@dataclass
class RunContext:
    """Everything a target needs from the run; passed in, never global.

    ``actor`` says who asked for the run (see :class:`Actor`); None for the timer and the CLI.
    The run's activity-row step (:func:`architect_cleanup.activity.record_run`) reads
    ``ctx.source`` and ``ctx.actor``. ``on_item`` receives every item removed or archived
    (or that a dry run would remove) with its size, mtime and reason, one at a time: the
    history writer streams them to its database (see :mod:`~architect_cleanup.runhistory`)."""

    config: Config
    now: datetime
    dry_run: bool
    source: str = "python"
    actor: Actor | None = None
    on_decision: Callable[[Decision], None] | None = None
    on_status: Callable[[str], None] | None = None
    should_stop: Callable[[], bool] = lambda: False
    open_files: OpenFiles | None = None
    #: every item removed or archived (or that a dry run would remove), as it is decided:
    #: the run's history writer (None: no history this run)
    on_item: Callable[[Item], None] | None = None
    #: the same for a directory's files at once (``RunWriter.dir_items``): what the file
    #: targets use when set, with ``on_item`` (None: item by item through ``on_item``)
    on_dir_items: DirItems | None = None
    #: on_decision reads the decisions to keep as well (``-v``); the journal's list of
    #: removed items does not, and a real run must not build 700,000 of them for nothing
    kept_decisions: bool = True
    _roots: dict[str, Root | FsError] = field(default_factory=dict)
    _last_status: float = 0.0
    #: ``now`` as a Unix timestamp (compared with every candidate's mtime)
    now_ts: float = field(init=False)
    #: mtimes beyond this are "in the future" (clock trouble): never deleted
    future_limit: float = field(init=False)
    #: someone reads per-item decisions (-v, the journal, or debug logging): build them
    wants_decisions: bool = field(init=False)
    #: someone reads the decisions to keep a file (-v, or debug logging)
    wants_kept: bool = field(init=False)
    #: target -> how many writes a read-only file system refused (see readonly())
    readonly_refused: dict[str, int] = field(default_factory=dict)
    #: dashboard processes found without their SQLite locks (see dblocks.py)
    db_locks: LockWatch = field(default_factory=LockWatch)

    def __post_init__(self) -> None:
        self.now_ts = self.now.timestamp()
        self.future_limit = self.now_ts + FUTURE_SLACK
        debug = log.isEnabledFor(logging.DEBUG)
        self.wants_decisions = self.on_decision is not None or debug
        self.wants_kept = (self.on_decision is not None and self.kept_decisions) or debug

    def root(self, path: str | None = None) -> Root:
        """The opened root (the configured ``root`` unless *path* names another, e.g. /tmp).

        Raises FsError when it is missing or may not be used; opened once per run."""
        path = path or self.config.root
        cached = self._roots.get(path)
        if cached is None:
            try:
                cached = Root.open(path)
            except FsError as exc:
                cached = exc
            self._roots[path] = cached
        if isinstance(cached, FsError):
            raise cached
        return cached

    def close(self) -> None:
        for r in self._roots.values():
            if isinstance(r, Root):
                r.close()
        self._roots.clear()

    def check_stop(self) -> None:
        if self.should_stop():
            raise Interrupted("stopped on request")

    def status(self, text: str, *, force: bool = False) -> None:
        """Live progress (sd_notify STATUS=), at most once per PROGRESS_INTERVAL."""
        if self.on_status is None:
            return
        t = time.monotonic()
        if force or t - self._last_status >= PROGRESS_INTERVAL:
            self._last_status = t
            self.on_status(text)

    def readonly(self, target: str, path: str, count: int = 1) -> str:
        """Report a write refused because *path* is on a read-only file system; the text to
        append to the item's error.

        Under the service that means the path is outside its ReadWritePaths=. The first time
        per target and run this logs a ``readonly_path`` journal entry and returns the hint;
        after that the hint is not repeated (a read-only root fails every file). The worker
        marks the target failed at its end: the configuration asks for work the sandbox
        forbids."""
        seen = self.readonly_refused.get(target, 0)
        self.readonly_refused[target] = seen + count
        if seen:
            return ""
        log.error("%s: %s is on a read-only file system%s", target, display(path),
                  READONLY_HINT,
                  extra=fields("readonly_path", cleanup_target=target, cleanup_path=path))
        return READONLY_HINT

    def decide(self, d: Decision) -> None:
        d.dry_run = self.dry_run
        if self.on_decision is not None:
            self.on_decision(d)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", d)


class Target:
    """A cleanup target. Subclasses set ``name`` and implement :meth:`run`.

    ``run`` fills the result in; it raises only when the whole target cannot work (the worker
    then marks it failed and goes on with the others)."""

    name: ClassVar[str]
    #: Words for STATUS= progress ("files checked", "rows checked").
    unit: ClassVar[str] = "files checked"

    def enabled(self, cfg: Config) -> bool:
        section = getattr(cfg, self.name, None)
        return bool(getattr(section, "enabled", True))

    def configured(self, cfg: Config) -> bool:
        """False when the configuration gives this target nothing to do (no rule written):
        the plan then does not run it."""
        return True

    def run(self, ctx: RunContext, result: TargetResult) -> None:
        raise NotImplementedError


#: target name -> class; filled by :mod:`architect_cleanup.targets` from its list of targets
#: (tests add their own).
REGISTRY: dict[str, type[Target]] = {}


# --- helpers for the file targets ------------------------------------------------------------


_SPANS = (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
          ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def human_duration(seconds: float) -> str:
    """A span for people, in its largest whole unit: "4 months", "1 day", "45 seconds"."""
    secs = max(int(seconds), 0)
    for unit, size in _SPANS:
        if secs >= size or unit == "second":
            n = secs // size
            return f"{n} {unit}{'' if n == 1 else 's'}"
    raise AssertionError("unreachable")


def hold_text(ctx: RunContext, st: os.stat_result, why: Hold) -> str:
    """A last-moment reason said exactly: "modified 4 months in the future", "open by PID
    1234 (gunicorn)"."""
    if why is Hold.FUTURE:
        return future_text(st.st_mtime - ctx.now_ts)
    if why is Hold.OPEN and ctx.open_files is not None:
        return ctx.open_files.describe(st) or str(why)
    return str(why)


def future_text(ahead: float) -> str:
    """The reason a file with a future mtime is kept: "modified 4 months in the future"."""
    return f"modified {human_duration(ahead)} in the future"


def age_text(seconds: float) -> str:
    days = seconds / 86400
    if days >= 2:
        return f"{days:.0f} days old"
    hours = seconds / 3600
    if hours >= 2:
        return f"{hours:.0f} hours old"
    return f"{seconds / 60:.0f} minutes old"


class AgeReasons:
    """The reason of each file the age rule removes, ``"45 days old > 30d"`` (``age_text``
    of its age, then the limit), made once per whole number of days: a dry run of a million
    files gives 300,000 of them, a few hundred different ones (their formatting was 4 % of
    its time). Ages under two days (hours, minutes) are formatted each time. Holds at most
    :data:`AGE_REASONS` texts."""

    __slots__ = ("_texts", "limit", "now")

    def __init__(self, now: float, limit: str) -> None:
        self.now = now
        self.limit = limit
        self._texts: dict[int, str] = {}

    def __call__(self, st: os.stat_result) -> str:
        return self.text(st.st_mtime)

    def text(self, mtime: float) -> str:
        """The reason of a file last modified at *mtime*."""
        age = self.now - mtime
        if age < 2 * 86400:
            return f"{age_text(age)} > {self.limit}"
        # round() is "{:.0f}"'s rounding (half to even, of the exact value): the same days
        days = round(age / 86400)
        text = self._texts.get(days)
        if text is None:
            if len(self._texts) >= AGE_REASONS:
                self._texts.clear()
            text = self._texts[days] = f"{age_text(age)} > {self.limit}"
        return text


#: the most texts an AgeReasons holds (one per day of age: 11 years)
AGE_REASONS = 4096


class FileTarget(Target):
    """Shared per-file judgement and deletion for the backups, logs and temp targets."""

    def __init__(self) -> None:
        self._warned_future = 0
        self._age_reasons: AgeReasons | None = None

    def age_reasons(self, now: float, limit: str) -> AgeReasons:
        """The run's :class:`AgeReasons` for *limit* (made anew when the run or limit
        changes)."""
        got = self._age_reasons
        if got is None or got.now != now or got.limit != limit:
            got = self._age_reasons = AgeReasons(now, limit)
        return got

    def last_moment_keep(self, ctx: RunContext, st: os.stat_result) -> Hold | None:
        """Reasons that override any rule: a future mtime, a file some process holds open
        (``ctx.open_files`` is None when ``safety.skip_open_files`` is off)."""
        return _hold(st, ctx.future_limit,
                     ctx.open_files.is_open if ctx.open_files is not None else None)

    def age_work(self, ctx: RunContext, d: Dir, names: list[str], *, max_age: float,
                 limit: str, young: str, protected: Callable[[str], bool] | None = None,
                 protected_reason: str = "") -> Step:
        """The age rule over one directory's matching names: a file (or symlink) whose own
        mtime is more than *max_age* seconds before ``now`` is removed, a younger one kept.

        Names *protected* says are kept with *protected_reason*; only the rest pay for an
        ``lstat`` (names another target owns never reach here: see ``targets.owners``).
        This does the system calls (``lstat``, the last-moment reasons, every unlink), safe
        on any thread: it touches no result, decision or log. It returns the report, to run
        on the run's own thread in walk order, which counts and decides exactly as the
        one-pass loop did, in the same order."""
        judged = _by_age(ctx, d, names, max_age, protected)
        removal = self.removal_work(ctx, d, judged.doomed) if judged.doomed else None

        def report(result: TargetResult) -> None:
            for name, st, what in judged.held:
                self._keep_held(ctx, result, d.join(name), st, what,
                                protected_reason, f"{young} {limit}")
            result.kept += judged.quiet
            result.kept_bytes += judged.young_bytes
            if removal is not None:
                removal(result, self.age_reasons(ctx.now_ts, limit))

        return report

    def _keep_held(self, ctx: RunContext, result: TargetResult, path: str,
                   st: os.stat_result | None, what: int, protected_reason: str,
                   young: str) -> None:
        """Report one file the age rule keeps (see :class:`_AgeSort`): protected, not a
        file, modified in the future (warned about) or young (*young*: "younger than 30d")."""
        if what == _PROTECTED:
            self.keep(ctx, result, path, protected_reason)
        elif what == _NOT_A_FILE:
            self.keep(ctx, result, path, "not a regular file")
        elif what == _FUTURE:
            assert st is not None
            self._warn_future(path, st, ctx)
            self.keep(ctx, result, path, future_text(st.st_mtime - ctx.now_ts))
        else:
            assert st is not None
            age = ctx.now_ts - st.st_mtime
            self.keep(ctx, result, path, f"{age_text(max(age, 0))}, {young}")

    def removal_work(self, ctx: RunContext, d: Dir, judged: list[tuple[str, os.stat_result]]
                     ) -> Callable[[TargetResult, Callable[[os.stat_result], str]], None]:
        """Remove one directory's judged files, as :meth:`remove` would one by one: the
        last-moment reasons first, then every unlink (each re-checked right before) in one
        loop; safe on any thread (see :meth:`age_work`). The report it returns does the
        counts and decisions on the run's own thread; its *reason* builds a file's reason
        from its stat, only when someone reads decisions or items."""
        go, kept = last_moment_sort(ctx, judged)
        outcomes: list[Exception | None] = [None] * len(go) if ctx.dry_run else unlink_all(d, go)

        def report(result: TargetResult, reason: Callable[[os.stat_result], str]) -> None:
            for name, st, why_keep in kept:
                self._kept_at_last_moment(ctx, result, d.join(name), st, why_keep, reason(st))
            wants = ctx.wants_decisions
            record = ctx.on_item
            # the items of the directory in one call, unless decisions are read too
            rows: list[ItemRow] | None = (
                [] if record is not None and ctx.on_dir_items is not None and not wants
                else None)
            removed = nbytes = 0
            if rows is not None and ctx.dry_run:
                nbytes, removed = _dry_run_rows(go, reason, rows), len(go)
            else:
                for (name, st), exc in zip(go, outcomes, strict=True):
                    if exc is None:
                        size = freed_bytes(st)
                        removed += 1
                        nbytes += size
                        if rows is not None:
                            rows.append((name, size, st.st_mtime, reason(st)))
                        elif wants or record is not None:
                            why = reason(st)
                            path = d.join(name)
                            if wants:
                                ctx.decide(Decision(self.name, path, True, why, size))
                            if record is not None:
                                record(Item(self.name, path, size, st.st_mtime, why))
                        continue
                    self._not_removed(ctx, result, d.join(name), exc)
            if rows and ctx.on_dir_items is not None:
                ctx.on_dir_items(self.name, d.join(""), rows)
            result.removed += removed
            result.bytes += nbytes

        return report

    def _kept_at_last_moment(self, ctx: RunContext, result: TargetResult, path: str,
                             st: os.stat_result, why_keep: Hold, rule: str,
                             part: str | None = None,
                             culprit: tuple[str, os.stat_result] | None = None) -> None:
        """Count and report a file a rule would remove that a last-moment reason keeps
        (*culprit*: the sibling the reason is about, when it is not the file itself)."""
        if why_keep is Hold.FUTURE:
            self._warn_future(*(culprit or (path, st)), ctx)
        result.skipped += 1
        why = hold_text(ctx, culprit[1] if culprit else st, why_keep)  # the sibling's, if it
        self.keep(ctx, result, path, f"{why}; a rule would remove it: {rule}", part)

    def _not_removed(self, ctx: RunContext, result: TargetResult, path: str,
                     exc: Exception) -> None:
        """Count and report a judged file whose unlink did not happen (see fs.unlink_all)."""
        result.skipped += 1
        if isinstance(exc, FileNotFoundError):
            ctx.decide(Decision(self.name, path, False, "vanished before removal"))
        elif isinstance(exc, OSError):
            hint = ctx.readonly(self.name, path) if exc.errno == errno.EROFS else ""
            result.error(f"{display(path)}: {exc.strerror or exc}{hint}")
            ctx.decide(Decision(self.name, path, False, f"removal failed: {exc.strerror}"))
        else:  # Changed
            result.error(str(exc))
            ctx.decide(Decision(self.name, path, False, "changed since it was checked"))

    def keep(self, ctx: RunContext, result: TargetResult, path: str, reason: str,
             part: str | None = None) -> None:
        result.kept += 1
        if part is not None:
            result.part(part)["kept"] += 1
        if ctx.wants_kept:
            ctx.decide(Decision(self.name, path, False, reason))

    def remove(self, ctx: RunContext, result: TargetResult, d: Dir, name: str,
               st: os.stat_result, reason: Reason, *, part: str | None = None,
               siblings: tuple[tuple[str, os.stat_result], ...] = ()) -> bool:
        """Remove one file (and its siblings first) unless a last-moment reason keeps it.

        *reason* may be a function, called only when someone reads decisions (a million
        files must not pay for a million formatted strings). Counts the file in *result*
        (also in a dry run); returns True when it is (would be) gone."""
        why_keep = self.last_moment_keep(ctx, st)
        culprit = None
        for sib_name, sib_st in siblings:
            if why_keep is None:
                why_keep = self.last_moment_keep(ctx, sib_st)
                culprit = (d.join(sib_name), sib_st)
        if why_keep is not None:
            self._kept_at_last_moment(ctx, result, d.join(name), st, why_keep, _text(reason),
                                      part, culprit)
            return False
        size = freed_bytes(st)
        for _, sib_st in siblings:
            size += freed_bytes(sib_st)
        if not ctx.dry_run:
            try:
                for sib_name, sib_st in siblings:
                    unlink_checked(d, sib_name, sib_st)
                unlink_checked(d, name, st)
            except (OSError, Changed) as exc:
                self._not_removed(ctx, result, d.join(name), exc)
                return False
        result.removed += 1
        result.bytes += size
        if part is not None:
            p = result.part(part)
            p["removed"] += 1
            p["bytes"] += size
        if ctx.wants_decisions or ctx.on_item is not None:
            why = _text(reason)
            if ctx.wants_decisions:
                ctx.decide(Decision(self.name, d.join(name), True, why, size,
                                    siblings=tuple(s for s, _ in siblings)))
            if ctx.on_item is not None:
                ctx.on_item(Item(self.name, d.join(name), size, st.st_mtime, why, part))
        return True

    def _warn_future(self, path: str, st: os.stat_result, ctx: RunContext) -> None:
        self._warned_future += 1
        if self._warned_future <= 10:
            ahead = st.st_mtime - ctx.now_ts
            log.warning("%s: %s is %s; kept", self.name, display(path), future_text(ahead))


def _dry_run_rows(go: list[tuple[str, os.stat_result]],
                  reason: Callable[[os.stat_result], str], rows: list[ItemRow]) -> int:
    """A dry run's items of one directory (nothing was unlinked, nothing failed) added to
    *rows* in one loop; the bytes they hold."""
    text = reason.text if isinstance(reason, AgeReasons) else None
    nbytes = 0
    for name, st in go:
        size = freed_bytes(st)
        nbytes += size
        mtime = st.st_mtime
        rows.append((name, size, mtime, reason(st) if text is None else text(mtime)))
    return nbytes


def last_moment_sort(ctx: RunContext, judged: list[tuple[str, os.stat_result]]
                     ) -> tuple[list[tuple[str, os.stat_result]],
                                list[tuple[str, os.stat_result, Hold]]]:
    """:meth:`FileTarget.last_moment_keep` of each judged file, in one loop: those no reason
    keeps, and those one does with the reason, each in their order."""
    go: list[tuple[str, os.stat_result]] = []
    kept: list[tuple[str, os.stat_result, Hold]] = []
    future = ctx.future_limit
    is_open = ctx.open_files.is_open if ctx.open_files is not None else None
    for name, st in judged:
        why = _hold(st, future, is_open)
        if why is None:
            go.append((name, st))
        else:
            kept.append((name, st, why))
    return go, kept


def _hold(st: os.stat_result, future_limit: float,
          is_open: Callable[[os.stat_result], bool] | None) -> Hold | None:
    """The last-moment reason that keeps a file (:meth:`FileTarget.last_moment_keep`), or
    None: modified after *future_limit*, or held open (*is_open*; None: not asked)."""
    if st.st_mtime > future_limit:
        return Hold.FUTURE
    if is_open is not None and is_open(st):
        return Hold.OPEN
    return None


#: Why the age rule keeps a file (:class:`_AgeSort`): protected by name, not a regular file,
#: modified in the future, younger than the limit.
_PROTECTED, _NOT_A_FILE, _FUTURE, _YOUNG = range(4)


@dataclass(slots=True)
class _AgeSort:
    """One directory's matching names sorted by the age rule (:func:`_by_age`)."""

    #: (name, its status or None, why it stays: _PROTECTED, _NOT_A_FILE, _FUTURE or _YOUNG)
    held: list[tuple[str, os.stat_result | None, int]] = field(default_factory=list)
    #: young files nobody reads a decision about (only counted)
    quiet: int = 0
    young_bytes: int = 0
    #: older than the limit: what the last-moment checks and the unlinks get
    doomed: list[tuple[str, os.stat_result]] = field(default_factory=list)


def _by_age(ctx: RunContext, d: Dir, names: list[str], max_age: float,
            protected: Callable[[str], bool] | None) -> _AgeSort:
    """``lstat`` each name that is not *protected* and sort it by its own mtime: more than
    *max_age* seconds before ``now`` is doomed, younger is kept. Safe on any thread.

    This loop runs once per candidate file, so it keeps to locals and keeps what the report
    needs only when someone reads decisions."""
    now = ctx.now_ts
    future = ctx.future_limit
    wants = ctx.wants_kept
    out = _AgeSort()
    held, doomed = out.held, out.doomed
    quiet = young_bytes = 0
    # one call for the directory's lstat()s (in C, without the GIL: fs.lstat_many), then
    # the names in their order, the protected ones in their places (False: not asked)
    flags = [protected(n) for n in names] if protected is not None else None
    stats: Sequence[os.stat_result | Literal[False] | None]
    if flags is None or not any(flags):
        stats = lstat_many(d, names)
    else:
        asked = iter(lstat_many(d, [n for n, p in zip(names, flags, strict=True) if not p]))
        stats = [False if p else next(asked) for p in flags]
    for name, st in zip(names, stats, strict=True):
        if not st:  # protected, or vanished since the listing
            if st is False:
                held.append((name, None, _PROTECTED))
            continue
        mode = st.st_mode
        if not (S_ISREG(mode) or S_ISLNK(mode)):
            held.append((name, None, _NOT_A_FILE))
            continue
        if now - st.st_mtime <= max_age:
            young_bytes += st.st_size
            if st.st_mtime > future:
                held.append((name, st, _FUTURE))
            elif wants:
                held.append((name, st, _YOUNG))
            else:
                quiet += 1
            continue
        doomed.append((name, st))
    out.quiet, out.young_bytes = quiet, young_bytes
    return out


#: A target's report of work done on a pool thread: it counts and decides on the run's own
#: thread, in walk order (see targets.tree).
Step = Callable[[TargetResult], None]

#: A reason, or a function that builds it only when someone reads it.
Reason = str | Callable[[], str]


def _text(reason: Reason) -> str:
    return reason if isinstance(reason, str) else reason()


#: What to do about EROFS under the service (ProtectSystem=strict makes everything read-only
#: but the unit's ReadWritePaths=).
READONLY_HINT = (" (outside the service's writable paths: add it with "
                 "`systemctl edit architect-cleanup.service` (ReadWritePaths=))")


def on_readonly_fs(path: str) -> bool:
    """True when *path* lies on a file system mounted read-only (for errors that carry no
    EROFS, such as SQLite's "attempt to write a readonly database")."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def unique_dirs(dirs: tuple[str, ...]) -> list[str]:
    """Configured relative directories without duplicates or ones nested in another listed one
    (a file must be judged once, or a dry run would count it twice)."""
    # "." (the whole root) first: it holds every other one ("-x" sorts before ".")
    norm = sorted({os.path.normpath(x) for x in dirs},
                  key=lambda p: (p != ".", p.count("/"), p))
    out: list[str] = []
    for p in norm:
        if any(q in (".", p) or p.startswith(q + "/") for q in out):
            continue
        out.append(p)
    return out


class Under:
    """:func:`under` for one set of *dirs*, asked of many paths: it walks up a path only to
    the nearest directory it has answered for (the walk is depth first, so that is mostly the
    parent). Remembers up to :data:`UNDER_MEMO` directories; safe on any thread."""

    def __init__(self, dirs: frozenset[str]) -> None:
        self.dirs = dirs
        self._memo: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        memo, dirs = self._memo, self.dirs
        below: list[str] = []
        p = path
        while True:
            got = memo.get(p)
            if got is not None:
                break
            if p in dirs:
                got = True
                break
            parent = os.path.dirname(p)
            if parent == p:
                got = False
                break
            below.append(p)
            p = parent
        if len(memo) + len(below) > UNDER_MEMO:
            memo.clear()
        for q in below:
            memo[q] = got
        return got


#: how many directories an :class:`Under` remembers (the walk is depth first: the current
#: path and its recent siblings; 4,096 cost 0.6 MB more peak at 1M files in `make bench`)
UNDER_MEMO = 1024


def under(path: str, dirs: frozenset[str]) -> bool:
    """True when *path* (a directory) is one of *dirs* or below one of them."""
    while True:
        if path in dirs:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
