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

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from architect_cleanup.config import Config
from architect_cleanup.fs import compile_patterns
from architect_cleanup.targets.backups import backup_dirs
from architect_cleanup.targets.base import Under, under

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

    # asked for every directory of the walk and every file of a directory taken whole
    # (temp's keep_name): a step up from the nearest directory answered before, not a walk
    # up the whole path each time
    inside = Under(dirs)

    def theirs(path: str) -> Callable[[str], bool] | None:
        return is_backup if inside(path) else None

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


# --- the user-defined rules: rule 4 ----------------------------------------------------------
#
# 4. **Rules come last.** A ``[[rules.files]]`` rule never takes a name a built-in target owns
#    (rules 1 and 2: a backup in a backup directory, a log below the logs directories or at
#    the top of ``logs.tmp_dir``, a temporary file or directory below the temp directories),
#    nor a configured database or its ``-wal``/``-shm``/``-journal``, nor anything in the
#    orphans' quarantine; and among the rules, the first in the file owns a name. Ownership
#    does not depend on ``--only``: a disabled target owns nothing, a deselected one still does.

#: Given a directory's absolute path, a name in it and whether it is a directory: the owner
#: other than the asking rule ("logs", "rule request-log", ...), or None.
Claimed = Callable[[str, str, bool], str | None]

_SIDES = ("-wal", "-shm", "-journal")


def claimed_before(cfg: Config, index: int) -> Claimed:
    """Who owns a name before ``rules.files[index]``: the built-in targets, the databases,
    the quarantine, then the rules listed earlier."""
    backups = backup_names(cfg)
    databases = frozenset(cfg.resolve(rel) for template in cfg.database.paths
                          for _env, rel in cfg.expand_env(template))
    logs_on, temp_on = cfg.logs.enabled, cfg.temp.enabled
    log_dirs = frozenset(cfg.resolve(d) for d in cfg.logs.dirs)
    is_log = compile_patterns((*cfg.logs.patterns, *cfg.logs.protect))
    tmp_dir = os.path.normpath(cfg.logs.tmp_dir) if cfg.logs.tmp_dir else None
    is_tmp_log = compile_patterns((*cfg.logs.tmp_patterns, *cfg.logs.protect))
    temp_dirs = frozenset(cfg.resolve(d) for d in cfg.temp.dirs)
    is_temp = compile_patterns(cfg.temp.patterns)
    is_temp_dir = compile_patterns(cfg.temp.dir_patterns)
    quarantine = cfg.resolve(cfg.orphans.quarantine_dir) if cfg.orphans.enabled else None
    earlier = [(rule, frozenset(rule_dir(cfg, d) for d in rule.dirs),
                compile_patterns(rule.patterns)) for rule in cfg.rules.files[:index]]

    def owner(path: str, name: str, is_dir: bool) -> str | None:
        full = os.path.join(path, name)
        if quarantine is not None and (full == quarantine or under(path, frozenset({quarantine}))):
            return "orphans (quarantine)"
        base = full
        for suffix in _SIDES:
            base = base.removesuffix(suffix)
        if full in databases or base in databases:
            return "a configured database (database.paths)"
        if not is_dir:
            theirs = backups(path)
            if theirs is not None and theirs(name):
                return "backups"
            if logs_on and ((is_log(name) and under(path, log_dirs))
                            or (path == tmp_dir and is_tmp_log(name))):
                return "logs"
            if temp_on and is_temp(name) and under(path, temp_dirs):
                return "temp"
        elif temp_on and is_temp_dir(name) and under(path, temp_dirs):
            return "temp"
        for rule, dirs, matches in earlier:
            kind_fits = rule.type == "any" or (rule.type == "dir") == is_dir
            if kind_fits and matches(name) and under(path, dirs):
                return f"rule {rule.name}"
        return None

    return owner


def rule_dir(cfg: Config, d: str) -> str:
    """A rule's directory as an absolute path (relative ones are below root)."""
    return os.path.normpath(d) if d.startswith("/") else cfg.resolve(d)


def walk_exclusions(cfg: Config) -> tuple[str, ...]:
    """Directory names no walk enters: ``safety.exclude_dirs``, and the orphans' quarantine
    (its files belong to the orphans target alone: a quarantined ``x.log`` is no log)."""
    extra = (os.path.basename(os.path.normpath(cfg.orphans.quarantine_dir)),) \
        if cfg.orphans.enabled else ()
    return (*cfg.safety.exclude_dirs, *extra)
