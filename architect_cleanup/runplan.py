"""The run plan: what one run will do, decided before anything runs.

One slot per registered target, in run order. A slot either names the *step* that does its
work, or says (as a :class:`NotRun` value) why it does none. A step is one unit of contained
work: one target's ``run``, or the shared walk of the tree targets (logs and temp), which runs
at the first of them; the later members' slots report what the walk did for them. After the
slots come the run's final steps (the activity row, hooks passed in, the state record, the
summary), which the worker supplies.

Who owns a file name several targets match is decided in :mod:`~architect_cleanup.targets.owners`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from architect_cleanup.config import Config
from architect_cleanup.stats import CleanupStats, TargetResult
from architect_cleanup.targets import REGISTRY, RunContext, Target, ordered
from architect_cleanup.targets.owners import Owners
from architect_cleanup.targets.tree import TreeTarget, scan_tree


class NotRun(Enum):
    """Why a target's slot does no work: the result's status and message."""

    NOT_SELECTED = ("skipped", "not selected")
    DISABLED = ("disabled", "{name}.enabled = false")
    #: enabled, but there is nothing to do: no rule written ([[rules.files]], ...)
    NOT_CONFIGURED = ("disabled", "nothing configured")
    #: a stop (SIGTERM) landed earlier in the run
    INTERRUPTED = ("skipped", "run interrupted")

    def mark(self, result: TargetResult) -> None:
        status, message = self.value
        result.status, result.message = status, message.format(name=result.name)


@dataclass(eq=False)
class Step:
    """Work that fills the results of *names*; a failure fails those targets only."""

    names: tuple[str, ...]
    work: Callable[[RunContext, Mapping[str, TargetResult]], None]
    #: for the debug line of a failure ("target backups", "tree walk")
    what: str

    @property
    def label(self) -> str:
        return "/".join(self.names)


@dataclass(frozen=True)
class Slot:
    """One target's place in the run: the step doing its work, or why there is none."""

    name: str
    step: Step | None = None
    not_run: NotRun | None = None


@dataclass(frozen=True)
class FinalStep:
    """A step after the targets, handed the finished stats. A *contained* step's failure is
    logged and the run goes on to the next one (a hook must not lose the run's report)."""

    name: str
    run: Callable[[RunContext, CleanupStats], None]
    contained: bool = True


@dataclass
class RunPlan:
    slots: list[Slot]
    results: dict[str, TargetResult]
    final: tuple[FinalStep, ...] = ()

    def describe(self) -> list[str]:
        """The plan in words, one line per slot (``logs: logs/temp``, ``tasks: disabled``)."""
        return [f"{s.name}: {s.step.label}" if s.step is not None
                else f"{s.name}: {s.not_run.name.lower() if s.not_run else '-'}"
                for s in self.slots]


def plan_run(cfg: Config, only: Collection[str] | None,
             final: Sequence[FinalStep] = ()) -> RunPlan:
    """Which targets run (and which steps run them), which do not and why."""
    targets = {name: REGISTRY[name]() for name in ordered()}
    enabled = {name for name, t in targets.items() if t.enabled(cfg)}
    selected = {name for name in targets if only is None or name in only}
    walk = _shared_walk(cfg, [t for n, t in targets.items() if n in enabled],
                        enabled & selected)
    slots = []
    for name, target in targets.items():
        if name not in selected:
            slots.append(Slot(name, not_run=NotRun.NOT_SELECTED))
        elif name not in enabled:
            slots.append(Slot(name, not_run=NotRun.DISABLED))
        elif not target.configured(cfg):
            slots.append(Slot(name, not_run=NotRun.NOT_CONFIGURED))
        elif walk is not None and name in walk.names:
            slots.append(Slot(name, step=walk))
        else:
            slots.append(Slot(name, step=_single(target)))
    return RunPlan(slots, {name: TargetResult(name) for name in targets}, tuple(final))


def _single(target: Target) -> Step:
    def work(ctx: RunContext, results: Mapping[str, TargetResult]) -> None:
        target.run(ctx, results[target.name])
    return Step((target.name,), work, f"target {target.name}")


def _shared_walk(cfg: Config, enabled: list[Target], chosen: set[str]) -> Step | None:
    """One walk of the root for the chosen tree targets; the enabled but unchosen ones take
    part passively (their names stay theirs). None when no tree target is chosen."""
    members = [t for t in enabled if isinstance(t, TreeTarget)]
    owners = Owners.of(cfg, members, frozenset(t.name for t in members) - chosen)
    if not owners.active:
        return None

    def work(ctx: RunContext, results: Mapping[str, TargetResult]) -> None:
        scan_tree(ctx, owners, results)
    return Step(tuple(owners.active), work, "tree walk")
