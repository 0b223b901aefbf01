"""What a run did: per-target results and the seed's ``CleanupStats``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024
#: at most this many items in ``--json``'s ``items`` (the rest are counted in items_omitted)
ITEMS_LIMIT = 10_000

#: target name -> the seed's stats field, in the order runs and summaries list them.
STAT_FIELDS = {
    "backups": "backups_deleted",
    "logs": "logs_deleted",
    "tasks": "tasks_deleted",
    "errors": "errors_deleted",
    "prompts": "prompts_deleted",
    "temp": "temp_files_deleted",
}

# Words for the one-line summary ("84 backups, 0 logs, ...").
_NOUNS = {
    "backups": "backups",
    "logs": "logs",
    "tasks": "tasks",
    "errors": "errors",
    "prompts": "prompts archived",
    "temp": "temp files",
}

#: Targets outside the seed's stats, named in the summary only when they did something.
_MORE_NOUNS = {"rules": "by rules", "orphans": "orphans quarantined"}


#: target -> (dry-run verb, real-run verb) for what it does to an item.
_ACTIONS = {
    "prompts": ("would archive", "archived"),
    "tasks": ("would delete", "deleted"),
    "errors": ("would delete", "deleted"),
}


def action(target: str, dry_run: bool) -> str:
    """What a run does to *target*'s items, said so that a preview never reads as done:
    "would remove" / "removed" ("would archive" / "archived" for prompts)."""
    dry, real = _ACTIONS.get(target, ("would remove", "removed"))
    return dry if dry_run else real


def mib(n: int) -> str:
    """Bytes as MiB for people: "12.3 MiB"."""
    return f"{n / MB:.1f} MiB"


@dataclass
class TargetResult:
    """The outcome of one target.

    ``removed`` counts items removed (archived, for prompts) — or that a real run would remove,
    in a dry run; ``kept`` items a rule looked at and kept; ``skipped`` items a rule wanted to
    remove but that were protected at the last moment (open, vanished, refused)."""

    name: str
    status: str = "ok"  # ok | failed | stopped | skipped | disabled
    removed: int = 0
    bytes: int = 0
    kept: int = 0
    skipped: int = 0
    checked: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    detail: dict[str, dict[str, Any]] = field(default_factory=dict)
    duration: float = 0.0
    message: str = ""
    #: bytes of the files the age rule kept (logs, temp): the history's size of the category
    #: (not in to_dict)
    kept_bytes: int = 0

    def note(self, text: str) -> None:
        """Something skipped on purpose (a missing directory, a table without a column)."""
        self.notes.append(text)

    def error(self, text: str) -> None:
        """Something that went wrong with one item; the target goes on."""
        self.errors.append(text)

    def fail(self, text: str) -> None:
        """The whole target could not do its work."""
        self.status = "failed"
        self.message = text

    def stop(self, text: str = "stopped on request") -> None:
        """The run was asked to stop (SIGTERM: `systemctl stop`) while this target worked."""
        self.status = "stopped"
        self.message = text

    def part(self, key: str) -> dict[str, Any]:
        """Per-environment / per-database counters, created on first use."""
        return self.detail.setdefault(key, {"removed": 0, "bytes": 0, "kept": 0})

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "removed": self.removed,
            "bytes": self.bytes,
            "space_mb": round(self.bytes / MB, 2),
            "kept": self.kept,
            "skipped": self.skipped,
            "checked": self.checked,
            "errors": self.errors[:100],
            "error_count": len(self.errors),
            "notes": self.notes[:100],
            "detail": self.detail,
            "duration_s": round(self.duration, 3),
            "message": self.message,
        }


@dataclass
class CleanupStats:
    """The seed's statistics object, plus errors, timing and per-target detail."""

    backups_deleted: int = 0
    logs_deleted: int = 0
    tasks_deleted: int = 0
    errors_deleted: int = 0
    prompts_deleted: int = 0
    temp_files_deleted: int = 0
    space_freed: int = 0
    dry_run: bool = True
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    source: str = "python"
    targets: dict[str, TargetResult] = field(default_factory=dict)
    #: set when the state file could not be written (the run still reported itself)
    state_error: str | None = None
    #: dashboard processes found without their SQLite locks: ``{"lost": [...], "unknown":
    #: [...], "unknown_more": n}`` (see dblocks.LockWatch.to_dict)
    dashboard_locks: dict[str, Any] = field(default_factory=lambda: {
        "lost": [], "unknown": [], "unknown_more": 0})
    #: the items removed (or that would be), for ``--json``: target -> [{path, reason, bytes}]
    #: (filled only when the caller collects decisions; at most ITEMS_LIMIT in all)
    items: dict[str, list[dict[str, Any]]] | None = None
    items_omitted: int = 0
    items_listed: int = 0

    @property
    def space_freed_mb(self) -> float:
        return round(self.space_freed / MB, 2)

    @property
    def failed_targets(self) -> list[str]:
        return [name for name, t in self.targets.items() if t.failed]

    @property
    def stopped(self) -> bool:
        """The run was asked to stop (SIGTERM) before it was done."""
        return any(t.status == "stopped" for t in self.targets.values())

    @property
    def success(self) -> bool:
        return not self.failed_targets and not self.stopped

    @property
    def result(self) -> str:
        """success, failed or stopped: what the state file and the journal record."""
        if self.failed_targets:
            return "failed"
        return "stopped" if self.stopped else "success"

    def add(self, result: TargetResult) -> None:
        """Fold one target's result into the totals."""
        self.targets[result.name] = result
        stat_field = STAT_FIELDS.get(result.name)
        if stat_field is not None:
            setattr(self, stat_field, getattr(self, stat_field) + result.removed)
        self.space_freed += result.bytes
        if result.failed or result.status == "stopped":
            self.errors.append(f"{result.name}: {result.message}")

    def add_item(self, target: str, path: str, reason: str, size: int,
                 siblings: tuple[str, ...] = ()) -> None:
        """Record one item removed (or that a real run would remove), for ``--json``."""
        if self.items is None:
            self.items = {}
        if self.items_listed >= ITEMS_LIMIT:
            self.items_omitted += 1
            return
        self.items_listed += 1
        item: dict[str, Any] = {"path": path, "reason": reason, "bytes": size}
        if siblings:
            item["siblings"] = list(siblings)
        self.items.setdefault(target, []).append(item)

    def counts(self) -> dict[str, Any]:
        """The seed's ``stats`` object (with ``space_freed`` in bytes besides)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in STAT_FIELDS.values()}
        out["space_freed_mb"] = self.space_freed_mb
        out["space_freed"] = self.space_freed
        return out

    def summary_line(self) -> str:
        """The one line ``systemctl status`` shows: "Freed 271.9 MiB: 84 backups, …", or
        "Dry run: would free 271.9 MiB: 84 backups, …, 95 prompts to archive, …"."""
        nouns = dict(_NOUNS, prompts="prompts to archive") if self.dry_run else _NOUNS
        parts = [f"{getattr(self, STAT_FIELDS[n])} {nouns[n]}" for n in STAT_FIELDS]
        parts += [f"{t.removed} {_MORE_NOUNS[n]}" for n, t in self.targets.items()
                  if n in _MORE_NOUNS and t.removed]
        size = mib(self.space_freed)
        head = f"Dry run: would free {size}" if self.dry_run else f"Freed {size}"
        line = f"{head}: {', '.join(parts)}"
        if self.failed_targets:
            # targets that failed alike (a missing root) are named together, the reason once
            by_reason: dict[str, list[str]] = {}
            for n in self.failed_targets:
                by_reason.setdefault(self.targets[n].message, []).append(n)
            line += "; failed: " + ", ".join(
                f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())
        if self.stopped:
            line += "; stopped on request before the end"
        return line

    @property
    def message(self) -> str:
        if self.stopped and not self.failed_targets:
            return "Cleanup stopped on request" + (" (dry run)" if self.dry_run else "")
        if self.success:
            return "Cleanup completed" + (" (dry run)" if self.dry_run else "")
        return "Cleanup completed with errors: " + "; ".join(self.errors)

    def warnings(self) -> list[str]:
        """What a person must look at though the run succeeded: a corrupt newest backup
        ("prod: newest backup X is corrupt (quick_check: ...); newest good one is from ...")."""
        return [str(part["warning"]) for t in self.targets.values()
                for part in t.detail.values() if part.get("warning")]

    def to_dict(self) -> dict[str, Any]:
        """The CLI's ``--json`` object and the API's response: the seed's shape, and more."""
        return {
            "success": self.success,
            "dry_run": self.dry_run,
            "stats": self.counts(),
            "message": self.message,
            "summary": self.summary_line(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": round(self.duration, 3),
            "source": self.source,
            "failed_targets": self.failed_targets,
            "warnings": self.warnings(),
            "errors": self.errors,
            "state_error": self.state_error,
            "dashboard_locks": self.dashboard_locks,
            "targets": {n: t.to_dict() for n, t in self.targets.items()},
            **({"items": self.items, "items_omitted": self.items_omitted}
               if self.items is not None else {}),
        }
