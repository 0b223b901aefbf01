"""Pure selection of which backups to keep: no I/O, every decision with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backup(Generic[T]):
    """One backup as retention sees it: a name, a modification time and its size."""

    name: str
    mtime: float
    size: int
    ref: T


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    backup: Backup[T]
    keep: bool
    reason: str


def keep_newest(backups: Sequence[Backup[T]], keep: int, label: str) -> list[Verdict[T]]:
    """Keep the newest *keep* backups (by mtime, then name), remove the rest.

    The newest backup is kept whatever *keep* says: retention can never empty a directory."""
    ordered = sorted(backups, key=lambda b: (b.mtime, b.name), reverse=True)
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
