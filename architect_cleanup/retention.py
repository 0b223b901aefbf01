"""Pure selection of which backups to keep: no I/O, every decision with its reason.

A retention policy is applied in three named steps, each a pure function of what it is given:

1. :func:`apply_rules` — the calendar rules (``keep_last``, ``keep_hourly`` … ``keep_yearly``,
   ``keep_within``) with the semantics of restic's ``forget`` as Debian bookworm ships it
   (0.14): backups are taken newest first; a bucket rule (hourly, daily, ISO-weekly, monthly,
   yearly, in the local time zone passed in) keeps a backup when its bucket differs from the
   bucket of the last backup that rule kept, and each such keep uses up one of the rule's
   count; ``keep_last`` counts every backup as its own bucket; ``keep_within`` keeps what is
   strictly newer than the newest backup minus the span; a backup kept by any rule is kept
   (the union); a rule whose count is not used up keeps nothing more.
2. :func:`apply_budget` — ``max_total_size``: while the kept set is over the budget, the oldest
   kept backup goes, never the newest.
3. :func:`free_space_pass` — ``min_free_space``: over every backup directory on one filesystem,
   while the projected free space is below a directory's floor, its oldest kept backup beyond
   ``keep_min`` goes (oldest first across directories); the projected free space is returned.

Whatever a policy says, the newest backup of a directory is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from enum import Enum
from typing import Any, Generic, TypeVar

T = TypeVar("T")

KIB = 1024
#: Binary size units of the configuration ("500M", "5G", "1.5T").
SIZE_UNITS = {"K": KIB, "M": KIB**2, "G": KIB**3, "T": KIB**4}


@dataclass(frozen=True, slots=True)
class Backup(Generic[T]):
    """One backup as retention sees it: a name, a modification time and its size.

    ``size`` is the apparent size (with its -wal/-shm/-journal siblings), which
    ``max_total_size`` adds up; ``frees`` is what removing it gives back to the filesystem
    (allocated blocks, 0 for a file with other hard links), ``size`` when not given."""

    name: str
    mtime: float
    size: int
    ref: T
    frees: int | None = None

    @property
    def freed(self) -> int:
        return self.size if self.frees is None else self.frees


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    backup: Backup[T]
    keep: bool
    reason: str


class PolicyError(ValueError):
    """A policy that cannot be applied to what was found (e.g. a budget below the newest)."""


# --- policy values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """A ``keep_within`` span: whole calendar days (``d``/``w``, counted on the local wall
    clock, as restic's ``AddDate``) plus exact seconds (``h``/``m``/``s``)."""

    days: int = 0
    seconds: int = 0

    def __bool__(self) -> bool:
        return self.days > 0 or self.seconds > 0

    def __str__(self) -> str:
        hours, rest = divmod(self.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        out = f"{self.days}d" if self.days else ""
        for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")):
            if n:
                out += f"{n}{unit}"
        return out or "0s"

    def to_config(self) -> str:
        return str(self)

    def cutoff(self, newest: float, tz: tzinfo) -> float:
        """The instant *span* before *newest*: calendar days back on *tz*'s wall clock (the
        same wall time, 23 or 25 hours per day across a DST change), then exact seconds."""
        wall = datetime.fromtimestamp(newest, tz)
        back = (wall - timedelta(days=self.days)) if self.days else wall
        return back.timestamp() - self.seconds


@dataclass(frozen=True, slots=True)
class FreeFloor:
    """A ``min_free_space``: a percentage of the filesystem's size, or a number of bytes."""

    bytes: int = 0
    percent: float = 0.0

    def need(self, total: int) -> int:
        """The free bytes this floor asks for on a filesystem of *total* bytes."""
        if self.percent:
            return math.ceil(total * self.percent / 100)
        return self.bytes

    def __str__(self) -> str:
        if self.percent:
            return f"{self.percent:g}%"
        return format_size(self.bytes)

    def to_config(self) -> str:
        return f"{self.percent:g}%" if self.percent else size_text(self.bytes)


#: The count rules in restic's order, with their short names for reasons and descriptions.
COUNT_RULES = (("keep_last", "last"), ("keep_hourly", "hourly"), ("keep_daily", "daily"),
               ("keep_weekly", "weekly"), ("keep_monthly", "monthly"),
               ("keep_yearly", "yearly"))
POLICY_KEYS = (*(k for k, _ in COUNT_RULES), "keep_within", "max_total_size",
               "min_free_space", "keep_min")
#: The hard floor of the free-space pass when a policy does not set ``keep_min``.
DEFAULT_KEEP_MIN = 3


class PolicyKind(Enum):
    """Where a policy comes from, and so which engine judges it."""

    #: a ``[backups.policy.<env>]`` table: :func:`select` (rules, budget)
    RULES = "rules"
    #: a plain ``backups.retention.<env> = N``: :func:`keep_newest`, with its own reasons
    NEWEST = "newest"


@dataclass(frozen=True, slots=True)
class Policy:
    """One environment's retention policy (see the module docstring for the semantics)."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Span | None = None
    max_total_size: int | None = None
    min_free_space: FreeFloor | None = None
    keep_min: int = DEFAULT_KEEP_MIN
    #: not part of what the policy keeps (two policies keeping the same are equal)
    kind: PolicyKind = field(default=PolicyKind.RULES, compare=False)

    @classmethod
    def newest(cls, n: int) -> Policy:
        """``backups.retention.<env> = N``: keep the newest N, nothing else."""
        return cls(keep_last=n, kind=PolicyKind.NEWEST)

    @property
    def has_rules(self) -> bool:
        return any(getattr(self, k) > 0 for k, _ in COUNT_RULES) or bool(self.keep_within)

    def describe_rules(self) -> str:
        """``last 10, daily 7, weekly 4, within 2d``."""
        parts = [f"{short} {getattr(self, key)}" for key, short in COUNT_RULES
                 if getattr(self, key) > 0]
        if self.keep_within:
            parts.append(f"within {self.keep_within}")
        return ", ".join(parts) or "no rules"

    def describe(self) -> str:
        """The rules, then ``max_total_size 5.0 GB, min_free_space 15% (keep_min 3)``."""
        parts = [self.describe_rules()] if self.has_rules else []
        if self.max_total_size is not None:
            parts.append(f"max_total_size {format_size(self.max_total_size)}")
        if self.min_free_space is not None:
            parts.append(f"min_free_space {self.min_free_space} (keep_min {self.keep_min})")
        return ", ".join(parts) or "no rules"

    def to_config(self) -> dict[str, Any]:
        """The policy as its TOML table (keys left at their default are left out)."""
        out: dict[str, Any] = {k: getattr(self, k) for k, _ in COUNT_RULES if getattr(self, k)}
        if self.keep_within:
            out["keep_within"] = self.keep_within.to_config()
        if self.max_total_size is not None:
            out["max_total_size"] = size_text(self.max_total_size)
        if self.min_free_space is not None:
            out["min_free_space"] = self.min_free_space.to_config()
        if self.keep_min != DEFAULT_KEEP_MIN:
            out["keep_min"] = self.keep_min
        return out


def format_size(n: float) -> str:
    """Bytes for people, in binary units as the rest of the output: ``5.0 GiB``, ``512.0 MiB``."""
    for unit, div in (("TiB", KIB**4), ("GiB", KIB**3), ("MiB", KIB**2), ("KiB", KIB)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def size_text(n: int) -> str:
    """Bytes in the configuration's own spelling: ``5G``, ``500M``, or a plain number."""
    for unit in ("T", "G", "M", "K"):
        if n and n % SIZE_UNITS[unit] == 0:
            return f"{n // SIZE_UNITS[unit]}{unit}"
    return str(n)


# --- step 1: the calendar rules --------------------------------------------------------------

BucketKey = tuple[int, ...]


def _hourly(t: datetime) -> tuple[BucketKey, str]:
    return (t.year, t.month, t.day, t.hour), f"hourly {t:%Y-%m-%d %H}:00"


def _daily(t: datetime) -> tuple[BucketKey, str]:
    return (t.year, t.month, t.day), f"daily {t:%Y-%m-%d}"


def _weekly(t: datetime) -> tuple[BucketKey, str]:
    year, week, _ = t.isocalendar()
    return (year, week), f"weekly {year:04d}-W{week:02d}"


def _monthly(t: datetime) -> tuple[BucketKey, str]:
    return (t.year, t.month), f"monthly {t:%Y-%m}"


def _yearly(t: datetime) -> tuple[BucketKey, str]:
    return (t.year,), f"yearly {t.year:04d}"


_BUCKETS: dict[str, Callable[[datetime], tuple[BucketKey, str]]] = {
    "keep_hourly": _hourly, "keep_daily": _daily, "keep_weekly": _weekly,
    "keep_monthly": _monthly, "keep_yearly": _yearly,
}


def newest_first(backups: Sequence[Backup[T]]) -> list[Backup[T]]:
    """Newest first by mtime; identical mtimes are ordered by name, the greater name first
    (``architect_20261120_030001`` before ``…_030000``), so every run picks the same one."""
    return sorted(backups, key=lambda b: (b.mtime, b.name), reverse=True)


def apply_rules(backups: Sequence[Backup[T]], policy: Policy, tz: tzinfo,
                label: str) -> list[Verdict[T]]:
    """The calendar rules of *policy* (restic 0.14's ``ApplyPolicy``), newest first.

    Buckets are read on *tz*'s wall clock. A kept backup's reason lists every rule that keeps
    it (``daily 2026-11-20, weekly 2026-W47``)."""
    ordered = newest_first(backups)
    if not ordered:
        return []
    if not policy.has_rules:  # config validation refuses this; keep everything, as restic
        return [Verdict(b, True, "policy has no rules: everything is kept") for b in ordered]
    left = {key: getattr(policy, key) for key, _ in COUNT_RULES}
    last_bucket: dict[str, BucketKey | None] = dict.fromkeys(_BUCKETS)
    within_after = (policy.keep_within.cutoff(ordered[0].mtime, tz)
                    if policy.keep_within else None)
    out: list[Verdict[T]] = []
    for nr, b in enumerate(ordered):
        reasons: list[str] = []
        if within_after is not None and b.mtime > within_after:
            reasons.append(f"within {policy.keep_within} of newest")
        if left["keep_last"] > 0:
            left["keep_last"] -= 1
            reasons.append(f"last {nr + 1} of {policy.keep_last}")
        local = datetime.fromtimestamp(b.mtime, tz)
        for key, bucket in _BUCKETS.items():
            if left[key] <= 0:
                continue
            value, text = bucket(local)
            if value != last_bucket[key]:
                last_bucket[key] = value
                left[key] -= 1
                reasons.append(text)
        if reasons:
            out.append(Verdict(b, True, ", ".join(reasons)))
        else:
            out.append(Verdict(b, False,
                               f"no rule of {label} keeps it ({policy.describe_rules()})"))
    return _keep_newest_always(out, label)


def _keep_newest_always(verdicts: list[Verdict[T]], label: str) -> list[Verdict[T]]:
    """The first (newest) verdict is a keep, whatever came before (SPEC §4.4)."""
    if verdicts and not verdicts[0].keep:
        verdicts[0] = Verdict(verdicts[0].backup, True, f"newest backup of {label}")
    return verdicts


# --- step 2: the size budget -----------------------------------------------------------------


def apply_budget(verdicts: Sequence[Verdict[T]], budget: int | None,
                 label: str) -> list[Verdict[T]]:
    """``max_total_size``: while the kept backups add up to more than *budget*, the oldest kept
    one goes — never the newest. *verdicts* are newest first (as :func:`apply_rules` gives).

    Raises PolicyError when the newest backup alone is larger than the budget: keeping only
    the newest would still break it, so the policy is wrong for what is on disk."""
    out = list(verdicts)
    if budget is None or not out:
        return out
    newest = out[0].backup
    if newest.size > budget:
        raise PolicyError(
            f"max_total_size {format_size(budget)} of {label} is smaller than its newest "
            f"backup {newest.name} ({format_size(newest.size)}); raise it or drop it")
    total = sum(v.backup.size for v in out if v.keep)
    for i in range(len(out) - 1, 0, -1):
        if total <= budget:
            break
        v = out[i]
        if v.keep:
            out[i] = Verdict(v.backup, False, f"over max_total_size {format_size(budget)} "
                                              f"(kept set {format_size(total)})")
            total -= v.backup.size
    return out


def select(backups: Sequence[Backup[T]], policy: Policy, tz: tzinfo,
           label: str) -> list[Verdict[T]]:
    """Steps 1 and 2 for one directory: the rules, then the size budget. Newest first."""
    return apply_budget(apply_rules(backups, policy, tz, label), policy.max_total_size, label)


def keep_newest(backups: Sequence[Backup[T]], keep: int, label: str) -> list[Verdict[T]]:
    """Keep the newest *keep* backups (by mtime, then name), remove the rest.

    The newest backup is kept whatever *keep* says: retention can never empty a directory."""
    ordered = newest_first(backups)
    keep = max(keep, 1)
    out: list[Verdict[T]] = []
    for i, b in enumerate(ordered):
        if i == 0:
            out.append(Verdict(b, True, f"newest backup of {label}"))
        elif i < keep:
            out.append(Verdict(b, True, f"newest {keep} of {label}"))
        else:
            out.append(Verdict(b, False, f"beyond the newest {keep} of {label}"))
    return out


# --- step 3: the free-space floor ------------------------------------------------------------


@dataclass
class FloorGroup(Generic[T]):
    """One backup directory on the filesystem: its verdicts so far (newest first) and its
    floor (None: the directory only frees space, it gives nothing more up)."""

    label: str
    verdicts: list[Verdict[T]]
    floor: FreeFloor | None = None
    keep_min: int = DEFAULT_KEEP_MIN
    #: filled by free_space_pass: backups this pass removed, and whether keep_min stopped it
    removed: int = 0
    at_keep_min: bool = False
    need: int = 0


@dataclass
class FreeSpace:
    """The outcome of :func:`free_space_pass` on one filesystem."""

    total: int
    free_before: int
    #: free space once everything removed so far (rules, budgets, this pass) is gone
    free_after: int
    groups: list[FloorGroup[Any]] = field(default_factory=list)

    def percent(self, free: int) -> float:
        return 100.0 * free / self.total if self.total else 0.0

    def text(self, free: int) -> str:
        return f"{format_size(free)} ({self.percent(free):.1f}%)"


def free_space_pass(groups: Sequence[FloorGroup[T]], free: int, total: int) -> FreeSpace:
    """``min_free_space`` over the backup directories of one filesystem of *total* bytes with
    *free* bytes available now.

    The projection starts from *free* plus what the removals already decided will give back.
    Then, while some directory's floor is above the projected free space and it keeps more
    than its ``keep_min`` backups, the oldest such kept backup (across those directories) is
    removed and its freed bytes added. Groups' verdicts are replaced in place."""
    projected = free + sum(v.backup.freed for g in groups for v in g.verdicts if not v.keep)
    result = FreeSpace(total=total, free_before=free, free_after=projected, groups=list(groups))
    for g in groups:
        g.need = g.floor.need(total) if g.floor is not None else 0
        g.removed = 0
    while True:
        best: tuple[tuple[float, str, int], FloorGroup[T], int] | None = None
        for gi, g in enumerate(groups):
            if g.floor is None or projected >= g.need:
                continue
            kept = [i for i, v in enumerate(g.verdicts) if v.keep]
            if len(kept) <= max(g.keep_min, 1):
                continue
            i = kept[-1]  # the oldest kept: verdicts are newest first
            b = g.verdicts[i].backup
            key = (b.mtime, b.name, -gi)
            if best is None or key < best[0]:
                best = (key, g, i)
        if best is None:
            break
        _, g, i = best
        v = g.verdicts[i]
        g.verdicts[i] = replace(v, keep=False, reason=(
            f"free space {result.text(projected)} below min_free_space {g.floor}"))
        g.removed += 1
        projected += v.backup.freed
    for g in groups:
        g.at_keep_min = g.floor is not None and projected < g.need
    result.free_after = projected
    return result
