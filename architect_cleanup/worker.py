"""CleanupWorker: take the lock, then plan, run each step, finish.

One run: lock -> open the history and begin the run's record -> plan
(:func:`~architect_cleanup.runplan.plan_run`: which targets run, which do not and why, which
share one walk) -> each target's slot in run order: its step runs with its failure contained (a
dry run and a real run walk the same code; only the final delete
differs), its result goes into the stats and the journal -> the final steps: the activity
row, the ``after_run`` hooks passed in, the history (the run's figures and space samples,
pruning, the forecast and the metrics file: :mod:`~architect_cleanup.runhistory`, whose
failures never fail the run), the state file, the notifications (when ``[notify]`` has
channels: :mod:`~architect_cleanup.alerts`), and last the one-line summary that
``systemctl status`` shows. Every item removed is streamed to the history as it is decided
(``RunContext.on_item``).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from architect_cleanup import activity, alerts, preflight
from architect_cleanup.config import Config, load_config, with_overrides
from architect_cleanup.fs import OpenFiles, raise_nofile_limit
from architect_cleanup.history import DirItems, Item
from architect_cleanup.journal import fields
from architect_cleanup.lock import LockHeld, LockUnusable, RunLock, lock_path
from architect_cleanup.notify import Notifier
from architect_cleanup.runhistory import RunHistory, forecast_state
from architect_cleanup.runplan import FinalStep, NotRun, RunPlan, Step, plan_run
from architect_cleanup.state import StateStore
from architect_cleanup.stats import CleanupStats, TargetResult, action, mib
from architect_cleanup.targets import REGISTRY, Actor, Decision, Interrupted, RunContext, ordered
from architect_cleanup.targets.base import on_readonly_fs

log = logging.getLogger(__name__)

__all__ = ["CleanupWorker", "LockHeld", "LockUnusable"]

#: Journal entries of removed items per target and run (the rest are counted in one entry).
ITEM_LOG_LIMIT = 10_000
#: Targets that change database rows: their results have no size worth showing.
ROW_TARGETS = frozenset({"tasks", "errors", "prompts"})

#: A step after the targets (``after_run=``): it gets the context and the finished stats.
AfterRun = Callable[[RunContext, CleanupStats], None]


def utc_iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def _selected_targets(only: Iterable[str] | None) -> frozenset[str] | None:
    """``only=``'s targets (None: every one); ValueError naming an unknown one."""
    if only is None:
        return None
    chosen = list(only)
    unknown = [n for n in chosen if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown target(s): {', '.join(unknown)} "
                         f"(known: {', '.join(ordered())})")
    return frozenset(chosen)


class CleanupWorker:
    """Runs the cleanup targets once, safely. Dry run unless told ``dry_run=False``.

    The keyword arguments are the seed's: ``backup_retention`` is one number for every
    environment or a per-environment table merged over the configured one; the ``*_age_days``
    override the matching ``max_age``. ``config`` defaults to the system configuration
    (``/etc/architect-cleanup/config.toml`` or ``$ARCHITECT_CLEANUP_CONFIG``).
    ``source`` names the caller kind (timer, cli, api, python) and ``actor`` who it is
    (:class:`~architect_cleanup.targets.base.Actor`: user_id, user, ip_address); both reach
    the activity row (and the ``after_run`` hooks, called after it) through the run context.
    Invalid values raise :class:`~architect_cleanup.config.ConfigError`.
    """

    def __init__(
        self,
        dry_run: bool = True,
        backup_retention: int | Mapping[str, int] | None = None,
        log_age_days: float | None = None,
        task_age_days: float | None = None,
        error_age_days: float | None = None,
        prompt_age_days: float | None = None,
        config: Config | None = None,
        *,
        only: Iterable[str] | None = None,
        source: str = "python",
        actor: Actor | None = None,
        now: datetime | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        notifier: Notifier | None = None,
        lock_file: str | None = None,
        state: StateStore | None = None,
        record_state: bool = True,
        should_stop: Callable[[], bool] | None = None,
        after_run: Sequence[AfterRun] = (),
        collect_items: bool = False,
    ) -> None:
        base = config if config is not None else load_config()
        self.config = with_overrides(
            base, keep=backup_retention, log_days=log_age_days, task_days=task_age_days,
            error_days=error_age_days, prompt_days=prompt_age_days)
        self.dry_run = bool(dry_run) if isinstance(dry_run, bool) else True
        self.only = _selected_targets(only)
        self.source = source
        self.actor: Actor | None = actor.copy() if actor is not None else None
        self.now = now
        self.on_decision = on_decision
        self.notifier = notifier if notifier is not None else Notifier()
        self.lock_file = lock_file or lock_path()
        self.state = state if state is not None else StateStore()
        self.record_state = record_state
        self.should_stop = should_stop or (lambda: False)
        self.after_run = tuple(after_run)
        self.collect_items = collect_items
        self._items_logged: dict[str, int] = {}
        self.last_stats: CleanupStats | None = None
        #: the history steps of the current (or last) run
        self._history: RunHistory | None = None
        self._started = 0.0  # time.monotonic() at the run's start

    def run_cleanup(self) -> CleanupStats:
        """Run every selected target once; raises LockHeld when another run is going on,
        LockUnusable when the lock file is not one a run may use (logged)."""
        lock = RunLock(self.lock_file)
        try:
            lock.acquire()
        except LockUnusable as exc:
            log.error("%s", exc)
            raise
        except LockHeld as exc:
            log.warning("%s", exc, extra=fields("lock_held", cleanup_lock_pid=exc.pid or 0,
                                                cleanup_lock_path=exc.path))
            raise
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> CleanupStats:
        """Open the history, plan, run each step, finish."""
        raise_nofile_limit()
        now = self.now or datetime.now(UTC)
        hist = RunHistory.start(self.config, self.state.directory, now=now,
                                dry_run=self.dry_run, source=self.source)
        self._history = hist
        try:
            plan = plan_run(self.config, self.only, self._final_steps(hist))
            ctx, stats = self._start(now, hist.on_item, hist.on_dir_items)
            try:
                self._run_slots(ctx, plan, stats)
            finally:
                ctx.close()
            self._finish(ctx, plan, stats)
        finally:
            hist.close()  # a run that raised stays "running": the next one marks it interrupted
        return stats

    def _final_steps(self, hist: RunHistory) -> list[FinalStep]:
        """After the targets: the activity row, the hooks passed in, the history (the run's
        figures and samples, pruning, the forecast and the metrics file, closing it), the
        state record, the journal summary."""
        hooks = (activity.record_run, *self.after_run)
        steps = [FinalStep(getattr(hook, "__name__", str(hook)), hook) for hook in hooks]
        # what the run learnt of the dashboards' SQLite locks (after the activity row, whose
        # database is guarded and inspected too), for the state record and the API's answer
        steps.append(FinalStep("dashboard_locks", _note_locks, False))
        steps += [
            FinalStep("history", lambda _ctx, stats: hist.record(
                stats, interrupted=self.should_stop())),
            FinalStep("history prune", lambda _ctx, stats: hist.prune(stats)),
            FinalStep("metrics", lambda _ctx, stats: hist.metrics(stats)),
            FinalStep("history close", lambda _ctx, stats: hist.close(stats)),
        ]
        if self.record_state:
            steps.append(FinalStep("state", lambda _ctx, stats: self._record(stats), False))
        if self.config.notify.channels:  # after the record: it never changes it
            steps.append(FinalStep("notify", self._notify))
        steps.append(FinalStep("summary", lambda _ctx, stats: self._summary(stats), False))
        return steps

    def _start(self, now: datetime, on_item: Callable[[Item], None] | None,
               on_dir_items: DirItems | None = None) -> tuple[RunContext, CleanupStats]:
        self._started = time.monotonic()
        stats = CleanupStats(dry_run=self.dry_run, source=self.source,
                             started_at=utc_iso(now))
        if self.collect_items:
            stats.items = {}
        ctx = RunContext(config=self.config, now=now, dry_run=self.dry_run, source=self.source,
                         actor=self.actor, on_decision=self._decisions(stats),
                         kept_decisions=self.on_decision is not None,
                         on_status=self.notifier.status, should_stop=self.should_stop,
                         on_item=on_item, on_dir_items=on_dir_items,
                         open_files=OpenFiles() if self.config.safety.skip_open_files else None)
        mode = "dry run" if self.dry_run else "real run"
        log.info("Starting cleanup (%s, from %s) of %s", mode, self.source, self.config.root,
                 extra=fields("run_started", cleanup_dry_run=self.dry_run,
                              cleanup_source=self.source, cleanup_root=self.config.root))
        self._preflight()
        return ctx, stats

    def _run_slots(self, ctx: RunContext, plan: RunPlan, stats: CleanupStats) -> None:
        """Each target's slot in run order: its step runs once (a shared walk at its first
        member; the later members report what it did). A stop (SIGTERM) between two steps
        marks the slot where it landed "stopped"; the steps not yet run are skipped."""
        stopped = False
        done: set[Step] = set()
        for slot in plan.slots:
            result = plan.results[slot.name]
            if slot.step not in done and (stopped or self.should_stop()):
                if stopped:
                    NotRun.INTERRUPTED.mark(result)
                else:  # the run is not reported as complete
                    stopped = True
                    result.stop()
                    self._report_target(ctx, result)
            elif slot.not_run is not None:
                slot.not_run.mark(result)
            elif slot.step is not None:
                if slot.step not in done:
                    done.add(slot.step)
                    stopped = self._contain(ctx, slot.step, plan.results)
                self._report_target(ctx, result)
            stats.add(result)

    def _contain(self, ctx: RunContext, step: Step, results: Mapping[str, TargetResult]
                 ) -> bool:
        """Run one step, containing any failure to its targets; True when it was stopped."""
        ctx.status(f"{step.label}: starting", force=True)
        t0 = time.monotonic()
        stopped = False
        try:
            step.work(ctx, results)
        except Interrupted as exc:
            for name in step.names:
                results[name].stop(str(exc))
            stopped = True
        except Exception as exc:  # one failing step must not stop the others
            for name in step.names:
                if not results[name].failed:
                    results[name].fail(_describe(exc) + self._readonly_hint(ctx, name, exc))
            log.debug("%s failed", step.what, exc_info=True)
        for name in step.names:
            results[name].duration = time.monotonic() - t0
        return stopped

    def _finish(self, ctx: RunContext, plan: RunPlan, stats: CleanupStats) -> None:
        stats.duration = time.monotonic() - self._started
        stats.finished_at = utc_iso(datetime.now(UTC))
        for step in plan.final:
            if not step.contained:
                step.run(ctx, stats)
                continue
            try:
                step.run(ctx, stats)
            except Exception as exc:  # a hook must not lose the run's report
                log.error("after-run hook %s failed: %s", step.name, exc)
        self.last_stats = stats

    def _preflight(self) -> None:
        """Say once, at the start, what every target would otherwise run into: a missing
        root, missing databases, a root the service may not write."""
        for finding in preflight.check(self.config):
            if finding.level == "error":
                log.error("%s", finding.text, extra=fields(
                    "config_error", cleanup_error=f"{finding.text}; nothing to clean"))
            else:
                log.warning("%s", finding.text)
        # A real run reports a read-only root per target, with the hint, when a removal is
        # refused; a dry run removes nothing, so it says at its start what a real one would meet.
        if self.dry_run and os.path.isdir(self.config.root) and on_readonly_fs(
                self.config.root):
            log.warning("root %s is on a read-only file system: a real run could not clean it "
                        "(outside the service's writable paths? %s)", self.config.root,
                        preflight.READ_WRITE_HINT)

    def _decisions(self, stats: CleanupStats) -> Callable[[Decision], None] | None:
        """What a run does with each judged item: the caller's on_decision (``-v``), the
        items list of ``--json``, and in a real run one journal entry per removed item (at
        debug priority, so `journalctl -p info` is not flooded; at most ITEM_LOG_LIMIT per
        target, then one entry with the count not listed). None when nobody reads them."""
        caller = self.on_decision
        collect = self.collect_items
        journal = not self.dry_run
        if caller is None and not collect and not journal:
            return None
        logged: dict[str, int] = {}

        def on_decision(d: Decision) -> None:
            if caller is not None:
                caller(d)
            if not d.remove:
                return
            if collect:
                stats.add_item(d.target, d.path, d.reason, d.size, d.siblings)
            if journal:
                n = logged[d.target] = logged.get(d.target, 0) + 1
                if n <= ITEM_LOG_LIMIT:
                    log.info("%s", d, extra=fields(
                        "item_removed", cleanup_target=d.target, cleanup_path=d.path,
                        cleanup_bytes=d.size, cleanup_reason=d.reason, priority="7"))

        self._items_logged = logged
        return on_decision

    def _report_target(self, ctx: RunContext, result: TargetResult) -> None:
        name = result.name
        refused = ctx.readonly_refused.get(name, 0)
        if refused and not result.failed:
            # The configuration asks for work the sandbox forbids: a failure, said briefly
            # (the summary line lists it per target); the readonly_path entry and the first
            # item's error carry the whole hint.
            result.fail(f"{refused} item(s) not removed: read-only file system, outside the "
                        "service's writable paths (ReadWritePaths=)")
        verb = action(name, ctx.dry_run)
        size = f" ({mib(result.bytes)})" if result.bytes or name not in ROW_TARGETS else ""
        more = self._items_logged.get(name, 0) - ITEM_LOG_LIMIT
        if more > 0:
            log.info("%s: %d more removed items not listed in the journal", name, more)
        if result.status == "stopped":
            log.warning("%s: stopped on request after it %s %d%s", name, verb, result.removed,
                        size, extra=fields("target_done", cleanup_target=name,
                                           cleanup_result="stopped", cleanup_action=verb,
                                           cleanup_dry_run=ctx.dry_run,
                                           cleanup_items=result.removed,
                                           cleanup_bytes=result.bytes))
        elif result.failed:
            log.error("%s: failed: %s", name, result.message,
                      extra=fields("target_failed", cleanup_target=name,
                                   cleanup_result="failed", cleanup_dry_run=ctx.dry_run,
                                   cleanup_error=result.message,
                                   cleanup_items=result.removed, cleanup_bytes=result.bytes))
        else:
            log.info("%s: %s %d%s, kept %d, %d errors, in %.1fs", name, verb,
                     result.removed, size, result.kept, len(result.errors),
                     result.duration,
                     extra=fields("target_done", cleanup_target=name, cleanup_result="ok",
                                  cleanup_action=verb,
                                  cleanup_items=result.removed, cleanup_bytes=result.bytes,
                                  cleanup_kept=result.kept, cleanup_skipped=result.skipped,
                                  cleanup_errors=len(result.errors),
                                  cleanup_checked=result.checked,
                                  cleanup_dry_run=ctx.dry_run,
                                  cleanup_duration=f"{result.duration:.3f}"))
        for err in result.errors[:20]:
            if err != result.message:  # (the failed entry says it already)
                log.warning("%s: %s", name, err)
        if len(result.errors) > 20:
            log.warning("%s: %d more errors not shown", name, len(result.errors) - 20)

    def _record(self, stats: CleanupStats) -> None:
        run = {
            "started_at": stats.started_at,
            "finished_at": stats.finished_at,
            "dry_run": stats.dry_run,
            "result": stats.result,
            "duration_s": round(stats.duration, 3),
            "source": stats.source,
            "pid": os.getpid(),
            "stats": stats.counts(),
            "failed_targets": stats.failed_targets,
            "message": stats.message,
            "summary": stats.summary_line(),
            "warnings": stats.warnings(),
            "dashboard_locks": stats.dashboard_locks,
            # which service run this was: `notify --unit-failed` tells a run that reported
            # itself from one that died before it could
            "invocation_id": os.environ.get("INVOCATION_ID") or None,
        }
        hist = self._history
        forecast = forecast_state(hist.forecasts) if hist is not None else []
        try:
            self.state.record(run, forecast=forecast)
        except OSError as exc:
            stats.state_error = f"cannot write {self.state.path}: {exc.strerror or exc}"
            log.error("%s", stats.state_error,
                      extra=fields("state_error", cleanup_state_file=self.state.path,
                                   cleanup_error=exc.strerror or str(exc)))

    def _notify(self, ctx: RunContext, stats: CleanupStats) -> None:
        alerts.after_record(ctx.config, stats, self.state.directory, now=ctx.now)

    @staticmethod
    def _readonly_hint(ctx: RunContext, name: str, exc: Exception) -> str:
        """The ReadWritePaths= hint when a whole target failed on a read-only file system:
        EROFS itself, or SQLite refusing to write a database on a read-only mount."""
        path: str | None = None
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            path = str(exc.filename or ctx.config.root)
        elif (isinstance(exc, sqlite3.Error)
              and getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY")
              and on_readonly_fs(ctx.config.root)):
            path = ctx.config.root
        return ctx.readonly(name, path) if path else ""

    def _summary(self, stats: CleanupStats) -> None:
        line = stats.summary_line()
        result = "failed" if stats.state_error else stats.result
        extra = fields("run_summary", cleanup_dry_run=stats.dry_run, cleanup_result=result,
                       cleanup_action="would free" if stats.dry_run else "freed",
                       cleanup_bytes=stats.space_freed,
                       cleanup_items=sum(t.removed for t in stats.targets.values()),
                       cleanup_duration=f"{stats.duration:.3f}", cleanup_source=stats.source,
                       cleanup_failed_targets=",".join(stats.failed_targets),
                       **{k: v for k, v in stats.counts().items() if k != "space_freed"})
        self.notifier.status(line)
        if result == "success":
            log.info("%s", line, extra=extra)
        elif result == "stopped":  # `systemctl stop`: asked for, not a failure
            log.warning("%s", line, extra=extra)
        else:
            log.error("%s", line, extra=extra)


def _note_locks(ctx: RunContext, stats: CleanupStats) -> None:
    stats.dashboard_locks = ctx.db_locks.to_dict()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc) or type(exc).__name__
