"""Who owns a file name that more than one target's rules match: decided here, once.

The backups target and the name-based tree targets (logs, temp) look at the same directories,
and their patterns overlap (``architect_x.db.backup.log`` is a backup and a log). A name is
judged by exactly one target, so a dry run counts it once:

1. **Backups first.** In a backup directory or below, a name the backups patterns match is the
   backups target's; the tree targets pass over it (while the backups target is enabled).
2. **Then run order.** Among the tree targets, the first in run order whose patterns match a
   name takes it (logs before temp): the shared walk tries them in :attr:`Owners.members`
   order.
3. **Selection moves nothing.** An enabled tree target left out by ``--only`` still owns the
   names it matches; it is *passive* and does nothing with them (``--only temp`` never takes a
   file the logs target owns).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from architect_cleanup.config import Config
from architect_cleanup.fs import compile_patterns
from architect_cleanup.targets.backups import backup_dirs
from architect_cleanup.targets.base import under

if TYPE_CHECKING:
    from architect_cleanup.targets.tree import TreeTarget

#: Given a directory's path: the matcher of the names the backups target owns there, or None.
BackupNames = Callable[[str], Callable[[str], bool] | None]


def backup_names(cfg: Config) -> BackupNames:
    """Rule 1: for a directory's path, the matcher of the names the backups target owns there
    (its patterns, in a backup directory or below), or None where it owns nothing."""
    if not cfg.backups.enabled:
        return lambda _path: None
    is_backup = compile_patterns(cfg.backups.patterns)
    dirs = frozenset(cfg.resolve(rel) for _, rel, _ in backup_dirs(cfg))

    # asked for every file of a directory taken whole (temp's keep_name): one answer per
    # directory, not a walk up its path per file
    @functools.lru_cache(maxsize=256)
    def theirs(path: str) -> Callable[[str], bool] | None:
        return is_backup if under(path, dirs) else None

    return theirs


def not_backups(theirs: BackupNames, path: str, names: list[str]) -> list[str]:
    """*names* of the directory *path* without the ones rule 1 gives to the backups target."""
    is_backup = theirs(path)
    return names if is_backup is None else [n for n in names if not is_backup(n)]


@dataclass(frozen=True)
class Owners:
    """The owners of the names one shared walk meets: rules 2 and 3 (members in run order,
    the passive ones named), and rule 1 as :func:`backup_names` built for the run."""

    members: tuple[TreeTarget, ...]
    passive: frozenset[str]
    backups: BackupNames

    @classmethod
    def of(cls, cfg: Config, members: Sequence[TreeTarget],
           passive: frozenset[str] = frozenset()) -> Owners:
        return cls(tuple(members), passive, backup_names(cfg))

    @property
    def active(self) -> list[str]:
        """The members that do work (not passive), in run order."""
        return [t.name for t in self.members if t.name not in self.passive]
