"""The panel's runs: a preview of a proposed configuration, and "Run now" in the background.

Both are the worker's own dry or real run (:class:`~architect_cleanup.worker.CleanupWorker`)
under the run lock, in this process: a preview waits for its answer (it never records state,
history, metrics, notifications or an activity row: it is not a run of the system's
configuration, see :func:`quiet`), a run started
from the panel goes on in a thread while the page polls its progress. A real run needs the id
of a plan the user was shown (:meth:`Runs.plan`), naming what it will remove, and confirmed
within :data:`PLAN_TTL` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from architect_cleanup.config import Config
from architect_cleanup.notify import Notifier
from architect_cleanup.retention import format_size
from architect_cleanup.stats import STAT_FIELDS, CleanupStats
from architect_cleanup.targets import Actor, Decision
from architect_cleanup.worker import CleanupWorker

log = logging.getLogger(__name__)

#: Items kept in memory of the panel's last run (and shown when there is no history database).
MAX_ITEMS = 100_000
#: How long a plan shown to the user may be confirmed (seconds).
PLAN_TTL = 600.0
#: Target -> the noun of its removed items in a sentence.
NOUNS = {"backups": "backups", "logs": "log files", "tasks": "tasks", "errors": "errors",
         "prompts": "prompts (archived)", "temp": "temporary files"}


@dataclass(frozen=True, slots=True)
class Item:
    """One item a run removed (or would): what the items table shows."""

    target: str
    path: str
    size: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "path": self.path, "size": self.size,
                "reason": self.reason}


def sentence(stats: CleanupStats, *, dry_run: bool = True) -> str:
    """``would remove 45 backups (12.3 GB), 1,200 tasks, ...`` (targets with nothing left
    out; "nothing" when all are empty)."""
    parts = []
    for name in STAT_FIELDS:
        result = stats.targets.get(name)
        if result is None or not result.removed:
            continue
        size = f" ({format_size(result.bytes)})" if result.bytes else ""
        parts.append(f"{result.removed:,} {NOUNS.get(name, name)}{size}")
    verb = "would remove" if dry_run else "removed"
    return f"{verb} {', '.join(parts)}" if parts else f"{verb} nothing"


def quiet(cfg: Config) -> Config:
    """*cfg* for a preview: no history record, no metrics file, no notification (a preview
    is not a run of the system's configuration; the state file is left alone by the worker's
    ``record_state=False``)."""
    return cfg.replace(history=dataclasses.replace(cfg.history, enabled=False),
                       notify=type(cfg.notify)())


class _Progress(Notifier):
    """The worker's STATUS= progress, kept for the page instead of sent to systemd."""

    def __init__(self) -> None:
        super().__init__(environ={})
        self.text = ""

    def status(self, text: str) -> None:
        self.text = " ".join(text.splitlines())


@dataclass
class RunState:
    """A run started from the panel (one at a time in this process)."""

    id: str
    dry_run: bool
    user: str
    started: float
    progress: _Progress = field(default_factory=_Progress)
    decided: int = 0
    items: list[Item] = field(default_factory=list)
    stats: CleanupStats | None = None
    error: str | None = None
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "dry_run": self.dry_run, "user": self.user,
            "running": self.finished is None, "started": self.started,
            "progress": self.progress.text, "items_so_far": self.decided,
            "error": self.error,
        }
        if self.stats is not None:
            out["result"] = self.stats.to_dict()
            out["sentence"] = sentence(self.stats, dry_run=self.dry_run)
        return out


@dataclass(frozen=True)
class Plan:
    """What a real run would remove, shown to the user before they confirm it."""

    id: str
    sentence: str
    made: float
    counts: dict[str, Any]


class Runs:
    """Previews, plans and the panel's background run, for one app."""

    def __init__(self, *, should_stop: Callable[[], bool] | None = None) -> None:
        self.should_stop = should_stop or (lambda: False)
        self._lock = threading.Lock()
        self.current: RunState | None = None
        self._plans: dict[str, Plan] = {}

    # -- a dry run answered at once -----------------------------------------------------------

    def dry_run(self, cfg: Config, *, limit: int = 200, only: list[str] | None = None
                ) -> tuple[CleanupStats, list[Item], list[Decision]]:
        """A dry run of *cfg*: its stats, the first *limit* items it would remove, and every
        decision of the backups target (kept ones too). Raises LockHeld."""
        items: list[Item] = []
        backups: list[Decision] = []

        def decided(d: Decision) -> None:
            if d.target == "backups":
                backups.append(d)
            if d.remove and len(items) < limit:
                items.append(Item(d.target, d.path, d.size, d.reason))

        worker = CleanupWorker(dry_run=True, config=quiet(cfg), source="panel", only=only,
                               on_decision=decided, notifier=Notifier(environ={}),
                               record_state=False, should_stop=self.should_stop)
        return worker.run_cleanup(), items, backups

    def plan(self, cfg: Config) -> Plan:
        """A dry run of *cfg* remembered as a plan the user may confirm."""
        stats, _, _ = self.dry_run(cfg, limit=0)
        plan = Plan(secrets.token_urlsafe(16), sentence(stats, dry_run=True), time.time(),
                    stats.counts())
        with self._lock:
            now = time.time()
            self._plans = {k: p for k, p in self._plans.items() if now - p.made < PLAN_TTL}
            self._plans[plan.id] = plan
        return plan

    def take_plan(self, plan_id: str) -> Plan | None:
        """The plan *plan_id* if it was made here less than PLAN_TTL ago (used once)."""
        with self._lock:
            plan = self._plans.pop(plan_id, None)
        if plan is None or time.time() - plan.made >= PLAN_TTL:
            return None
        return plan

    # -- a run in the background ----------------------------------------------------------------

    def start(self, cfg: Config, *, dry_run: bool, actor: Actor) -> RunState | None:
        """Start a run in a thread; None when one started here is still going on."""
        with self._lock:
            if self.current is not None and self.current.finished is None:
                return None
            state = RunState(secrets.token_hex(8), dry_run, actor.get("user") or "?",
                             time.time())
            self.current = state

        def decided(d: Decision) -> None:
            if d.remove:
                state.decided += 1
                if len(state.items) < MAX_ITEMS:
                    state.items.append(Item(d.target, d.path, d.size, d.reason))

        def work() -> None:
            try:
                worker = CleanupWorker(dry_run=dry_run, config=cfg, source="api",
                                       actor=actor, on_decision=decided,
                                       notifier=state.progress,
                                       should_stop=self.should_stop)
                state.stats = worker.run_cleanup()
            except Exception as exc:  # the page shows it; the journal has the run's own lines
                state.error = str(exc)
                log.warning("panel: run failed to start: %s", exc)
            finally:
                state.finished = time.time()

        threading.Thread(target=work, name=f"panel-run-{state.id}", daemon=True).start()
        return state
