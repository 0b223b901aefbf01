"""What one part of a configuration says that another contradicts, checked on the whole
:class:`~architect_cleanup.config.Config` once every section is read: a removing pattern that
matches a name the product relies on, a rule outside root or on an unknown database, a name
used twice, an ``[orphans]`` that cannot work."""

from __future__ import annotations

import os
import re
from fnmatch import translate
from typing import TYPE_CHECKING

from architect_cleanup.settings.problems import Problem

if TYPE_CHECKING:
    from architect_cleanup.config import Config
    from architect_cleanup.settings.rules import FileRule, TableRule

#: Names no temp or log pattern may match, whatever its spelling (``?*``, ``*?``, ``[!.]*``
#: and ``**`` all match everything): the dashboard's own directories and databases, and
#: any one-letter name (a pattern that matches one matches far too much). The configured
#: environments, the directories and files the configuration names (backups, databases,
#: logs) and the databases' -wal/-shm/-journal are added per configuration.
NEVER_MATCH = ("data", "logs", "backups", "assigner", "architect.db", "assigner.db",
               "config.toml", "Local State", "Default", "a", "z", "A", "Z", "0", "_", "-")
#: The keys whose patterns remove what they match (exclude_dirs and protect only keep more).
_REMOVING_PATTERNS = ("temp.patterns", "temp.dir_patterns", "logs.patterns",
                      "logs.tmp_patterns")


def problems(cfg: Config) -> list[Problem]:
    """Every contradiction in *cfg*: broad patterns, then the rules', then ``[orphans]``'."""
    never = never_match(cfg)
    return [*_broad_patterns(cfg, never), *_RuleCheck(cfg, never).problems(),
            *_orphans_problems(cfg)]


def never_match(cfg: Config) -> list[str]:
    """NEVER_MATCH plus every name the configuration itself relies on."""
    names = list(NEVER_MATCH) + list(cfg.environments)
    paths = [rel for template in (cfg.backups.dir, cfg.backups.shared_dir, *cfg.database.paths,
                                  *cfg.logs.dirs)
             if template for _env, rel in cfg.expand_env(template)]
    for rel in paths:
        names.extend(part for part in rel.split("/") if part not in ("", "."))
    for template in cfg.database.paths:
        for _env, rel in cfg.expand_env(template):
            base = os.path.basename(rel)
            names.extend(base + suffix for suffix in ("-wal", "-shm", "-journal"))
    return list(dict.fromkeys(names))


def _too_broad(key: str, pattern: str, names: list[str], instead: str) -> Problem | None:
    """A problem when *pattern* matches any of *names*: a pattern is judged by what it
    matches, not by how it is spelled. *instead*: what to name."""
    rx = re.compile(translate(pattern))
    hits = [n for n in names if rx.match(n)]
    if not hits:
        return None
    return Problem(key, f"{pattern!r} matches {', '.join(repr(h) for h in hits[:4])}"
                        f"{' ...' if len(hits) > 4 else ''}, names the product must never "
                        f"remove wholesale; name {instead}")


def _broad_patterns(cfg: Config, never: list[str]) -> list[Problem]:
    """A problem per temp or log pattern that matches a name in :func:`never_match`."""
    found = []
    for key in _REMOVING_PATTERNS:
        section, field_name = key.split(".")
        for pattern in getattr(getattr(cfg, section), field_name):
            found.append(_too_broad(key, pattern, never, "the temporary files or directories "
                                    'themselves (e.g. "*.tmp", "__pycache__")'))
    return [p for p in found if p is not None]


class _RuleCheck:
    """The rules, each against the rest of the configuration and the rules before it: a
    directory outside root not listed in ``rules.allowed_outside_root``, a database not in
    ``database.paths``, a removing pattern as broad as :func:`_broad_patterns` refuses, a
    name used twice, an action a rule's type cannot do."""

    def __init__(self, cfg: Config, never: list[str]) -> None:
        self.cfg = cfg
        self.never = never
        self.allowed = {os.path.normpath(a) for a in cfg.rules.allowed_outside_root}
        self.seen: set[str] = set()

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        for i, rule in enumerate(self.cfg.rules.files):
            found += self.file_rule(f"rules.files[{i}]", rule)
        for i, trule in enumerate(self.cfg.rules.tables):
            found += self.table_rule(f"rules.tables[{i}]", trule)
        return found

    def name(self, at: str, name: str) -> list[Problem]:
        """A name an earlier rule (a file or a table rule) has is a problem."""
        earlier = name in self.seen
        self.seen.add(name)
        return [Problem(f"{at}.name", f"{name!r} is used by an earlier rule")] if earlier else []

    def file_rule(self, at: str, rule: FileRule) -> list[Problem]:
        found = self.name(at, rule.name)
        found += [Problem(f"{at}.dirs", f"{d!r} is outside root: list it in "
                          "rules.allowed_outside_root to allow it")
                  for d in rule.dirs
                  if d.startswith("/") and os.path.normpath(d) not in self.allowed]
        found += [p for p in (_too_broad(f"{at}.patterns", pattern, self.never,
                                         'the files themselves (e.g. "architect.db.backup.*", '
                                         '"* 2.db")') for pattern in rule.patterns)
                  if p is not None]
        if rule.max_age is None and rule.max_total_size is None:
            found.append(Problem(at, "set max_age or max_total_size (a rule with neither "
                                     "would remove nothing, or everything)"))
        if rule.type != "file" and (rule.action == "compress" or rule.max_total_size):
            found.append(Problem(at, f'type = "{rule.type}": only type = "file" may use '
                                     'action = "compress" or max_total_size'))
        return found

    def table_rule(self, at: str, rule: TableRule) -> list[Problem]:
        found = self.name(at, rule.name)
        if rule.database not in self.cfg.database.paths:
            found.append(_not_a_database(f"{at}.database", rule.database, self.cfg))
        if rule.action == "archive" and not rule.archive_column:
            found.append(Problem(f"{at}.archive_column",
                                 'action = "archive" needs the column to set'))
        if rule.action == "delete" and (rule.archive_column or rule.archive_time_column):
            found.append(Problem(at, 'archive_column is for action = "archive"'))
        return found


def _not_a_database(key: str, database: str, cfg: Config) -> Problem:
    return Problem(key, f"{database!r} is not one of database.paths "
                        f"({list(cfg.database.paths)})")


def _orphans_problems(cfg: Config) -> list[Problem]:
    """An enabled ``[orphans]`` needs a configured database, a reference, upload
    directories paired with the database's environments, and a quarantine apart from them."""
    o = cfg.orphans
    if not o.enabled:
        return []
    found = []
    if o.database not in cfg.database.paths:
        found.append(_not_a_database("orphans.database", o.database, cfg))
    if not o.references:
        found.append(Problem("orphans.references", "at least one table and column that "
                                                   "names uploads is needed"))
    if not o.dirs:
        found.append(Problem("orphans.dirs", "no upload directory"))
    if "{env}" in o.database and any("{env}" not in d for d in o.dirs):
        found.append(Problem("orphans.dirs", "with a per-environment database every upload "
                                             "directory must contain {env}"))
    return found + _quarantine_overlaps(cfg)


def _quarantine_overlaps(cfg: Config) -> list[Problem]:
    q = os.path.normpath(cfg.orphans.quarantine_dir)
    found = []
    for d in cfg.orphans.dirs:
        for _env, raw_rel in cfg.expand_env(d):
            rel = os.path.normpath(raw_rel)
            if q == rel or q.startswith(rel + "/") or rel.startswith(q + "/"):
                found.append(Problem("orphans.quarantine_dir",
                                     f"{cfg.orphans.quarantine_dir!r} overlaps {rel!r}"))
    return found
