"""Configuration: TOML files -> validated, frozen objects.

The main file (``/etc/architect-cleanup/config.toml`` unless ``--config`` or
``$ARCHITECT_CLEANUP_CONFIG`` names another) is read first, then every ``*.toml`` in the
``config.d/`` directory beside it, in name order; tables merge key by key and a drop-in's value
replaces the one before it. Every problem found is collected and reported together as
``section.key: message``: an unknown key is an error, because a typo must not silently turn a
safety rule off.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import translate
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from architect_cleanup.fs import display, is_forbidden_root, system_tree, untrusted
from architect_cleanup.retention import (
    COUNT_RULES,
    POLICY_KEYS,
    SIZE_UNITS,
    FreeFloor,
    Policy,
    Span,
)

DEFAULT_CONFIG = "/etc/architect-cleanup/config.toml"
ENV_VAR = "ARCHITECT_CLEANUP_CONFIG"

_DURATION_RX = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_FULL_RX = re.compile(r"(?:\d+\s*[smhdw]\s*)+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# --- bounds: the config file, the overrides and the REST API's schema check these -----------
#: The longest duration (and age in days) accepted: 100 years. A longer one means "never",
#: which the enabled = false switch says better; and a cutoff before year 1 cannot be computed.
MAX_DAYS = 36500
MAX_DURATION_S = MAX_DAYS * 86400
#: The fewest backups a retention number (and keep_min) may keep: the newest is always kept.
MIN_KEEP = 1
BATCH_SIZE = (1, 100_000)
#: safety.workers: threads of the file walk's pool
WORKERS = (1, 64)

_SIZE_RX = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:iB)?)?", re.IGNORECASE)
_ENV_NAME_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IDENT_RX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Problem:
    """One configuration problem: the key it is about (``section.key``, or a file) and what
    is wrong. Rendered ``key: message``."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(ValueError):
    """One or more configuration problems: ``found`` as values, ``problems`` as their texts
    (``section.key: message``)."""

    def __init__(self, problems: Iterable[Problem | str], source: str | None = None) -> None:
        self.found = tuple(p if isinstance(p, Problem) else Problem("", p) for p in problems)
        self.problems = [str(p) for p in self.found]
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n  " + "\n  ".join(self.problems))

    def log_args(self) -> tuple[str, ...]:
        """``log.error(*exc.log_args())``: the message as a format string and its arguments,
        so the log's escaping (journal.EscapingFormatter) keeps one line per problem while
        it escapes what each problem quotes (a file name, a pattern)."""
        where = " in %s" if self.source else "%s"
        return ("invalid configuration" + where + ":" + "\n  %s" * len(self.problems),
                self.source or "", *self.problems)

    def lines(self) -> list[str]:
        """The message's lines, each escaped for a terminal (fs.display)."""
        return [display(line) for line in str(self).split("\n")]


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or combined (``"1h30m"``)."""
    s = text.strip().lower()
    if not _DURATION_FULL_RX.fullmatch(s):
        raise ValueError(f'{text!r} is not a duration (use e.g. "30d", "12h", "90m", "45s")')
    total = sum(int(n) * _UNITS[u] for n, u in _DURATION_RX.findall(s))
    if total > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than {MAX_DAYS}d (100 years)")
    return timedelta(seconds=total)


def parse_span(text: str) -> Span:
    """A ``keep_within`` duration: days and weeks as calendar days, the rest exact."""
    parse_duration(text)  # same syntax, same messages
    days = seconds = 0
    for n, u in _DURATION_RX.findall(text.strip().lower()):
        if u in "dw":
            days += int(n) * _UNITS[u] // 86400
        else:
            seconds += int(n) * _UNITS[u]
    return Span(days, seconds)


def parse_size(value: object) -> int:
    """``"500M"``, ``"5G"``, ``"1.5T"`` (binary: 1G = 1024³ bytes; ``"5GiB"`` too) or a whole
    number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RX.fullmatch(value.strip())
        if not m:
            hint = (" (binary units: write \"5G\" or \"5GiB\")"
                    if value.strip().upper().endswith("B") else "")
            raise ValueError(f"{value!r} is not a size (use e.g. \"500M\", \"5G\", "
                             f"\"1.5T\"){hint}")
        f = float(m.group(1)) * SIZE_UNITS.get((m.group(2) or "").upper(), 1)
        if not math.isfinite(f) or f >= 2**63:
            raise ValueError(f"{value!r} is too large")
        n = int(f)
    else:
        raise ValueError(f"must be a size string like \"5G\", not {_tname(value)}")
    if n <= 0:
        raise ValueError("must be larger than 0")
    return n


def parse_free_space(value: object) -> FreeFloor:
    """``"15%"`` of the filesystem or a size (``"20G"``)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
        if not 0 < pct < 100:
            raise ValueError(f"{value!r}: a percentage must be above 0% and below 100%")
        return FreeFloor(percent=pct)
    return FreeFloor(bytes=parse_size(value))


def format_duration(td: timedelta) -> str:
    """The shortest exact spelling of a duration in the config's syntax."""
    secs = int(td.total_seconds())
    if secs == 0:
        return "0s"
    for unit in ("w", "d", "h", "m"):
        if secs % _UNITS[unit] == 0:
            return f"{secs // _UNITS[unit]}{unit}"
    return f"{secs}s"


# --- value kinds: each reads one TOML value, or raises ValueError saying what is wrong -------


class Invalid(ValueError):
    """A refused value: its messages (one per bad list entry), and the *value* to go on with
    when the problem must not change what later checks see (``environments``)."""

    def __init__(self, *messages: str, value: Any = None) -> None:
        super().__init__(*messages)
        self.messages = messages
        self.value = value


Reader = Callable[[Any], Any]
#: A check of a string: the message when it is wrong, else None.
Check = Callable[[str], str | None]


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid(f"must be true or false, not {_tname(v)}")
    return v


def whole(lo: int | None = None, hi: int | None = None) -> Reader:
    """A whole number within [lo, hi]."""
    def read(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(f"must be a whole number, not {_tname(v)}")
        if lo is not None and v < lo:
            raise Invalid(f"must be >= {lo}")
        if hi is not None and v > hi:
            raise Invalid(f"must be <= {hi}")
        return v
    return read


def kept(consequence: str, *, typed: bool = True) -> Reader:
    """A number of backups to keep: below MIN_KEEP it *consequence* (said in plain words)."""
    def read(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid("must be a whole number" + (f", not {_tname(v)}" if typed else ""))
        if v < MIN_KEEP:
            raise Invalid(f"{v} {consequence}; must be >= {MIN_KEEP} "
                          "(the newest backup is always kept)")
        return v
    return read


def text(*checks: Check) -> Reader:
    """A string that passes every check, in order."""
    def read(v: Any) -> str:
        if not isinstance(v, str):
            raise Invalid(f"must be a string, not {_tname(v)}")
        for check in checks:
            problem = check(v)
            if problem is not None:
                raise Invalid(problem)
        return v
    return read


def strings(*, nonempty: bool = True, rx: re.Pattern[str] | None = None, what: str = "entry",
            each: Check | None = None) -> Reader:
    """A list of non-empty strings (matching *rx*); *each* checks every entry."""
    def read(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise Invalid("must be a list of strings")
        if nonempty and not v:
            raise Invalid("must not be empty")
        bad = [x for x in v if not x or (rx is not None and not rx.fullmatch(x))]
        if bad:
            raise Invalid(f"invalid {what}: {', '.join(repr(b) for b in bad)}")
        problems = [p for p in map(each, v) if p is not None] if each is not None else []
        if problems:
            raise Invalid(*problems, value=tuple(v))
        return tuple(v)
    return read


def file_patterns(*, nonempty: bool = True) -> Reader:
    """File-name patterns: a list of strings, none with '/' and none a bare '*'."""
    listed = strings(nonempty=nonempty, what="pattern")

    def read(v: Any) -> tuple[str, ...]:
        pats: tuple[str, ...] = listed(v)
        bad = [p for p in pats if "/" in p or p in ("*", ".*")]
        if bad:
            raise Invalid("patterns match file names: no '/' and not a bare '*': "
                          + ", ".join(repr(b) for b in bad))
        return pats
    return read


def duration(*, positive: bool = True, example: str = "30d",
             parse: Callable[[str], Any] = parse_duration) -> Reader:
    """A duration string (``parse_span`` for ``keep_within``); *positive*: not ``0s``."""
    def read(v: Any) -> Any:
        if not isinstance(v, str):
            raise Invalid(f"must be a duration string like \"{example}\", not {_tname(v)}")
        value = parse(v)
        if positive and not value:
            raise Invalid("must be longer than 0s")
        return value
    return read


def days(v: Any) -> timedelta:
    """An override's age in days (CLI, API, Python): a number above 0, at most MAX_DAYS."""
    if (isinstance(v, bool) or not isinstance(v, int | float)
            or not math.isfinite(v) or v <= 0):
        raise Invalid(f"{v!r} days must be a number > 0")
    if v * 86400 > MAX_DURATION_S:
        raise Invalid(f"{v!r} days is longer than {MAX_DAYS} days (100 years)")
    return timedelta(days=v)


def _relative(v: str) -> str | None:
    """Paths in the config are relative to root; '..' could escape it."""
    if v.startswith("/"):
        return f"{v!r}: must be relative to root"
    if ".." in v.split("/"):
        return f"{v!r}: '..' is not allowed"
    return None


def _per_env(v: str) -> str | None:
    return None if "{env}" in v else f"{v!r} must contain {{env}} (one directory per environment)"


def _tmp_dir(v: str) -> str | None:
    if not v:
        return None
    if not v.startswith("/"):
        return f"{v!r}: must be an absolute path (or \"\" for none)"
    return f"{v!r}: a system directory may not be cleaned" if is_forbidden_root(v) else None


def _root(v: Any) -> str:
    root: str = text()(v)
    if not root.startswith("/"):
        raise Invalid(f"{root!r}: must be an absolute path")
    if is_forbidden_root(root) or is_forbidden_root(os.path.realpath(root)):
        raise Invalid(f"{root!r}: refusing to clean a system directory; "
                      "point root at the dashboard's install directory")
    if (tree := system_tree(root) or system_tree(os.path.realpath(root))) is not None:
        raise Invalid(f"{root!r}: lies in the system tree {tree}, which belongs to the "
                      "system and its packages; point root at the dashboard's install "
                      "directory (/srv/<name>, or exactly /opt/<name>)")
    return os.path.normpath(root)


def _environments(v: Any) -> tuple[str, ...]:
    envs: tuple[str, ...] = strings(rx=_ENV_NAME_RX, what="environment name")(v)
    if len(set(envs)) != len(envs):
        raise Invalid("names must be unique", value=envs)
    return envs


def _identifier(v: str) -> str | None:
    return None if _IDENT_RX.fullmatch(v) else f"{v!r} is not a valid name"


def _not_configured(environments: tuple[str, ...]) -> str:
    return f"not a configured environment (environments = {list(environments)})"


def _refuse(message: str) -> Reader:
    def read(_v: Any) -> Any:
        raise Invalid(message)
    return read


# --- the typed configuration: every key declares how it is read, its default and its help ---


def key(read: Reader | None, default: Any, help: str) -> Any:
    """One configuration key. *read* None: the section reads it itself (a table)."""
    meta = {"read": read, "help": help}
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type[Any], help: str) -> Any:
    """One ``[section]`` table of the configuration."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "help": help})


#: The built-in ``backups.retention`` numbers (the shipped file's).
DEFAULT_RETENTION = {"prod": 10, "qa": 5, "dev": 5, "test": 3, "default": 5}
_RELATIVE_DIRS = strings(nonempty=False, what="directory", each=_relative)


def _one_of(*choices: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in choices else (
            f"{v!r}: must be " + " or ".join(f'"{c}"' for c in choices))
    return check


def _s3_url(v: str) -> str | None:
    if not v:
        return None
    from architect_cleanup.offload import OffloadError, parse_url  # noqa: PLC0415

    try:
        parse_url(v)
    except OffloadError as exc:
        return str(exc)
    return None


def _http_url(v: str) -> str | None:
    if not v or re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
        return None
    return f"{v!r}: must be an http:// or https:// URL (the S3 service's endpoint)"


def _absolute(v: str) -> str | None:
    return None if v.startswith("/") else f"{v!r}: must be an absolute path"


@dataclass(frozen=True)
class VerifyConfig:
    check: str = key(text(_one_of("quick", "full", "off")), "quick",
                     "quick (PRAGMA quick_check), full (integrity_check) or off")
    remove_corrupt_after: timedelta | None = key(
        duration(), None, "corrupt backups older than this are removed (unset: kept)")


@dataclass(frozen=True)
class CompressConfig:
    after: timedelta | None = key(duration(positive=False), None,
                                  "compress kept backups older than this (unset: never)")
    level: int = key(whole(1, 19), 3, "zstd level (1-19)")


#: Where the unit's LoadCredential= reads the offload credentials from (the documented path).
DEFAULT_CREDENTIALS = "/etc/architect-cleanup/credentials/s3"


@dataclass(frozen=True)
class OffloadConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("url",)

    url: str = key(text(_s3_url), "", "s3://BUCKET/PREFIX (\"\": no offload)")
    endpoint: str = key(text(_http_url), "", "the S3-compatible service (\"\": AWS S3)")
    region: str = key(text(), "", "the bucket's region (\"\": us-east-1)")
    credentials: str = key(text(_absolute), DEFAULT_CREDENTIALS,
                           "AWS shared-credentials file, root-only (the unit's LoadCredential=)")
    upload: str = key(text(_one_of("before_delete", "all")), "before_delete",
                      "before_delete: what local retention removes; all: every good backup")
    bandwidth: int | None = key(parse_size, None, "upload limit in bytes per second (\"10M\")")
    policy: Mapping[str, Policy] = key(None, {}, "[backups.offload.policy.<env>]: remote "
                                                 "retention (none: remote copies are kept)")

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def policy_for(self, env: str) -> tuple[Policy, str] | None:
        """The remote policy of *env* (or ``default``), None: remote copies are never deleted."""
        for name in (env, "default"):
            if name in self.policy:
                return self.policy[name], f"backups.offload.policy.{name}"
        return None


@dataclass(frozen=True)
class BackupsConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("dir", "shared_dir")

    enabled: bool = key(boolean, True, "apply the retention policies")
    dir: str = key(text(_relative, _per_env), "data/{env}/backups",
                   "each environment's backup directory, relative to root")
    shared_dir: str = key(text(lambda v: _relative(v) if v else None), "data/backups",
                          "backups of no environment (policy \"default\"); \"\" for none")
    patterns: tuple[str, ...] = key(file_patterns(), (
        "*.db", "*.sqlite", "*.sqlite3", "*.bak", "*.db.gz", "*.sql.gz", "*.db.backup.*",
        "*.db.zst", "*.sqlite.zst", "*.sqlite3.zst", "*.bak.zst"),
        "names of backup files")
    min_age: timedelta = key(duration(positive=False), timedelta(hours=1),
                             "younger backups may still be being written: kept, not counted")
    retention: Mapping[str, int] = key(None, DEFAULT_RETENTION,
                                       "newest N kept per environment (and default)")
    policy: Mapping[str, Policy] = key(None, {}, "[backups.policy.<env>] tables (and default)")
    verify: VerifyConfig = key(None, VerifyConfig(), "[backups.verify]")
    compress: CompressConfig = key(None, CompressConfig(), "[backups.compress]")
    offload: OffloadConfig = key(None, OffloadConfig(), "[backups.offload]")

    def keep_for(self, env: str) -> int:
        """How many backups the policy keeps for *env* (``default`` when not listed)."""
        return self.retention.get(env, self.retention["default"])

    def policy_for(self, env: str) -> tuple[Policy, str]:
        """The policy of *env* and the key it comes from: the first that exists of
        ``backups.policy.<env>``, ``backups.retention.<env>``, ``backups.policy.default``,
        ``backups.retention.default``."""
        if env in self.policy:
            return self.policy[env], f"backups.policy.{env}"
        if env in self.retention:
            return Policy.newest(self.retention[env]), f"backups.retention.{env}"
        if "default" in self.policy:
            return self.policy["default"], "backups.policy.default"
        return Policy.newest(self.retention["default"]), "backups.retention.default"


@dataclass(frozen=True)
class LogsConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("dirs", "tmp_dir")

    enabled: bool = key(boolean, True, "remove old log files")
    max_age: timedelta = key(duration(), timedelta(days=30), "older logs go")
    dirs: tuple[str, ...] = key(_RELATIVE_DIRS, ("data", "logs"), "where, below root")
    patterns: tuple[str, ...] = key(file_patterns(), ("*.log", "*.log.*"), "names of logs")
    tmp_dir: str = key(text(_tmp_dir), "/tmp", "our own logs at its top level; \"\" for none")  # noqa: S108
    tmp_patterns: tuple[str, ...] = key(file_patterns(nonempty=False),
                                        ("architect*.log", "architect*.log.*"),
                                        "names of our own logs in tmp_dir")
    protect: tuple[str, ...] = key(file_patterns(nonempty=False),
                                   ("architect_worker.log", "architect_*_worker.log"),
                                   "active worker logs, never removed")


@dataclass(frozen=True)
class TempConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("dirs",)

    enabled: bool = key(boolean, True, "remove temporary files and cache directories")
    min_age: timedelta = key(duration(positive=False), timedelta(hours=1), "younger ones stay")
    dirs: tuple[str, ...] = key(_RELATIVE_DIRS, (".",), "where, below root")
    patterns: tuple[str, ...] = key(file_patterns(nonempty=False),
                                    ("*.tmp", "*.temp", "*.cache", "*.pyc"), "file names")
    dir_patterns: tuple[str, ...] = key(file_patterns(nonempty=False),
                                        ("__pycache__", ".pytest_cache"),
                                        "directories removed whole")


@dataclass(frozen=True)
class DatabaseConfig:
    paths: tuple[str, ...] = key(strings(nonempty=False, what="path", each=_relative),
                                 ("data/{env}/architect.db", "data/assigner/assigner.db"),
                                 "the dashboard's databases, below root")
    naive_timezone: str = key(
        text(lambda v: None if v in ("utc", "local") else f"{v!r}: must be \"utc\" or \"local\""),
        "utc", "the zone of timestamps stored without one")
    batch_size: int = key(whole(*BATCH_SIZE), 1000, "rows changed per transaction")
    busy_timeout: timedelta = key(duration(), timedelta(seconds=5),
                                  "how long to wait for the dashboard's lock")


@dataclass(frozen=True)
class TasksConfig:
    enabled: bool = key(boolean, True, "remove old finished tasks")
    max_age: timedelta = key(duration(), timedelta(days=7), "older finished tasks go")
    tables: tuple[str, ...] = key(strings(rx=_IDENT_RX, what="table name"),
                                  ("task_queue", "tasks"), "tables to try")
    statuses: tuple[str, ...] = key(strings(), ("completed", "cancelled", "failed"),
                                    "statuses of finished tasks")


@dataclass(frozen=True)
class ErrorsConfig:
    enabled: bool = key(boolean, True, "remove old error rows")
    max_age: timedelta = key(duration(), timedelta(days=30), "older errors go")
    table: str = key(text(_identifier), "errors", "the errors table")


@dataclass(frozen=True)
class PromptsConfig:
    enabled: bool = key(boolean, True, "archive old finished prompts")
    max_age: timedelta = key(duration(), timedelta(days=14), "older finished prompts go")
    tables: tuple[str, ...] = key(strings(rx=_IDENT_RX, what="table name"),
                                  ("prompts", "assigner_prompts"), "tables to try")
    statuses: tuple[str, ...] = key(strings(), ("completed", "cancelled", "failed"),
                                    "statuses of finished prompts")


@dataclass(frozen=True)
class SafetyConfig:
    exclude_dirs: tuple[str, ...] = key(file_patterns(nonempty=False),
                                        ("*chrome_profile*", "*chrome-profile*"),
                                        "directories never entered")
    skip_open_files: bool = key(boolean, True, "keep files a process holds open")
    workers: int = key(whole(*WORKERS), 4,
                       "threads that list, check and delete files (1: one at a time)")


#: What a file rule's ``type`` and ``action`` and a table rule's ``action`` may say.
FILE_TYPES = ("file", "dir", "any")
FILE_ACTIONS = ("delete", "compress")
TABLE_ACTIONS = ("delete", "archive")


def one_of(*choices: str) -> Reader:
    def read(v: Any) -> str:
        if v not in choices:
            raise Invalid(f"{v!r}: must be one of {', '.join(repr(c) for c in choices)}")
        return str(v)
    return read


def _rule_dir(v: str) -> str | None:
    """A rule's directory: relative to root, or absolute (allowed when also listed in
    ``rules.allowed_outside_root``, checked with the whole configuration)."""
    if ".." in v.split("/"):
        return f"{v!r}: '..' is not allowed"
    return None


def _outside_dir(v: str) -> str | None:
    """``rules.allowed_outside_root``: absolute, and never a system directory or tree (the
    checks ``root`` gets)."""
    if not v.startswith("/"):
        return f"{v!r}: must be an absolute path"
    if ".." in v.split("/"):
        return f"{v!r}: '..' is not allowed"
    if is_forbidden_root(v) or is_forbidden_root(os.path.realpath(v)):
        return f"{v!r}: a system directory may not be cleaned"
    if (tree := system_tree(v) or system_tree(os.path.realpath(v))) is not None:
        return f"{v!r}: lies in the system tree {tree}, which belongs to the system"
    return None


@dataclass(frozen=True)
class FileRule:
    """One ``[[rules.files]]`` entry: files (or directories) below *dirs* whose names match
    *patterns*, judged per directory: the newest ``keep_newest`` stay, then whatever is older
    than ``max_age`` or beyond ``max_total_size`` (newest first) goes."""

    name: str = key(text(lambda v: None if _ENV_NAME_RX.fullmatch(v)
                         else f"{v!r} is not a valid rule name"), "", "the rule's name")
    dirs: tuple[str, ...] = key(strings(what="directory", each=_rule_dir), (),
                                "where: below root, or absolute when in allowed_outside_root")
    patterns: tuple[str, ...] = key(file_patterns(), (), "names the rule is about")
    type: str = key(one_of(*FILE_TYPES), "file", "file, dir (removed whole) or any")
    max_age: timedelta | None = key(duration(), None, "older ones go")
    keep_newest: int = key(whole(0), 0, "the newest N per directory always stay")
    max_total_size: int | None = key(parse_size, None,
                                     "per directory: the oldest go until the rest fit")
    action: str = key(one_of(*FILE_ACTIONS), "delete",
                      "delete, or compress (zstd, verified, mtime kept)")


@dataclass(frozen=True)
class Condition:
    """One ``where`` entry of a table rule: ``column IN (values)``."""

    column: str = key(text(_identifier), "", "a column of the table")
    values: tuple[str | int, ...] = ()

    def to_config(self) -> dict[str, Any]:
        return {"column": self.column, "in": list(self.values)}


def _condition_values(v: Any) -> tuple[str | int, ...]:
    if (not isinstance(v, list) or not v
            or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in v)):
        raise Invalid("must be a non-empty list of strings or whole numbers")
    return tuple(v)


@dataclass(frozen=True)
class TableRule:
    """One ``[[rules.tables]]`` entry: rows of *table* in *database* whose *time_column* is
    older than *max_age* (and that match every ``where`` condition) are deleted, or archived
    by setting ``archive_column = 1`` (and ``archive_time_column`` = now), as prompts are."""

    name: str = key(text(lambda v: None if _ENV_NAME_RX.fullmatch(v)
                         else f"{v!r} is not a valid rule name"), "", "the rule's name")
    database: str = key(text(), "", "one of database.paths")
    table: str = key(text(_identifier), "", "the table")
    time_column: str = key(text(_identifier), "", "the column whose age decides")
    max_age: timedelta = key(duration(), timedelta(days=30), "older rows go")
    where: tuple[Condition, ...] = key(None, (), "conditions: [{column, in = [...]}]")
    action: str = key(one_of(*TABLE_ACTIONS), "delete", "delete, or archive")
    archive_column: str = key(text(_identifier), "", "archive: the column set to 1")
    archive_time_column: str = key(text(_identifier), "", "archive: the column set to now")


@dataclass(frozen=True)
class RulesConfig:
    """``[rules]``: user-defined targets run through the same engine as the built-in ones."""

    enabled: bool = key(boolean, True, "run the [[rules.files]] and [[rules.tables]]")
    allowed_outside_root: tuple[str, ...] = key(
        strings(nonempty=False, what="directory", each=_outside_dir), (),
        "absolute directories a file rule may name (never a system tree)")
    files: tuple[FileRule, ...] = key(None, (), "[[rules.files]]")
    tables: tuple[TableRule, ...] = key(None, (), "[[rules.tables]]")


@dataclass(frozen=True)
class UploadReference:
    """``[[orphans.references]]``: a column whose values name upload files."""

    table: str = key(text(_identifier), "", "the table")
    column: str = key(text(_identifier), "", "the column holding a file's name or path")


@dataclass(frozen=True)
class OrphansConfig:
    """``[orphans]``: uploads no row references, moved to a quarantine first."""

    READ_FIRST: ClassVar[tuple[str, ...]] = ("enabled", "dirs", "database")

    enabled: bool = key(boolean, False, "quarantine unreferenced uploads")
    dirs: tuple[str, ...] = key(strings(nonempty=False, what="directory", each=_relative),
                                ("data/{env}/uploads",), "upload directories, below root")
    database: str = key(text(), "data/{env}/architect.db",
                        "one of database.paths: where the references are")
    references: tuple[UploadReference, ...] = key(None, (), "[[orphans.references]] table/column")
    grace: timedelta = key(duration(), timedelta(days=1), "younger files are never orphans")
    quarantine_dir: str = key(text(_relative), "data/.architect-cleanup-quarantine",
                              "below root, on the uploads' file system")
    quarantine_for: timedelta = key(duration(), timedelta(days=7),
                                    "quarantined files are deleted after this")


# --- [notify]: who hears about what (SPEC section 11) ----------------------------------------

#: The events a channel can subscribe to with ``on = [...]``.
NOTIFY_EVENTS = ("failure", "warning", "success", "digest")
DEFAULT_ON = ("failure", "warning")
_SMTP_RX = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_ADDRESS_RX = re.compile(r"[^@\s<>,]+@[^@\s<>,]+")
_CHANNEL_NAME_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class EmailChannel:
    """One ``[[notify.email]]``: through ``sendmail -oi -t`` unless ``smtp`` is set."""

    name: str
    to: tuple[str, ...]
    sender: str
    on: tuple[str, ...] = DEFAULT_ON
    smtp: str = ""
    starttls: bool = True
    credentials: str = ""
    tls_ca: str = ""
    sendmail: str = "/usr/sbin/sendmail"

    kind: ClassVar[str] = "email"

    def to_config(self) -> dict[str, Any]:
        out = {"name": self.name, "to": list(self.to), "from": self.sender,
               "on": list(self.on), "starttls": self.starttls, "sendmail": self.sendmail}
        out |= {k: v for k, v in (("smtp", self.smtp), ("credentials", self.credentials),
                                  ("tls_ca", self.tls_ca)) if v}
        return out


@dataclass(frozen=True)
class WebhookChannel:
    """One ``[[notify.webhook]]``: a JSON POST signed per the Standard Webhooks spec."""

    name: str
    url: str
    secret: str
    on: tuple[str, ...] = DEFAULT_ON
    tls_ca: str = ""

    kind: ClassVar[str] = "webhook"

    def to_config(self) -> dict[str, Any]:
        out = {"name": self.name, "url": self.url, "secret": self.secret, "on": list(self.on)}
        return out | ({"tls_ca": self.tls_ca} if self.tls_ca else {})


@dataclass(frozen=True)
class AppriseChannel:
    """One ``[[notify.apprise]]``: Debian's apprise (a Suggests) and the services it knows."""

    name: str
    urls: tuple[str, ...]
    on: tuple[str, ...] = DEFAULT_ON

    kind: ClassVar[str] = "apprise"

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "urls": list(self.urls), "on": list(self.on)}


Channel = EmailChannel | WebhookChannel | AppriseChannel


def _on(v: Any) -> tuple[str, ...]:
    events: tuple[str, ...] = strings()(v)
    bad = [e for e in events if e not in NOTIFY_EVENTS]
    if bad:
        raise Invalid(f"unknown event {', '.join(map(repr, bad))} "
                      f"(choose from {', '.join(NOTIFY_EVENTS)})")
    return tuple(dict.fromkeys(events))


def _smtp(v: str) -> str | None:
    m = _SMTP_RX.fullmatch(v)
    if not m or not 0 < int(m.group(2)) < 65536:
        return f"{v!r}: must be \"host:port\" (e.g. \"mail.example.org:587\")"
    return None


def _url(v: str) -> str | None:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
        return f"{v!r}: must be an http:// or https:// URL"
    return None


def _address(v: str) -> str | None:
    return None if _ADDRESS_RX.fullmatch(v) else f"{v!r} is not an e-mail address"


def _apprise_installed() -> bool:
    import importlib.util  # noqa: PLC0415  (only when [[notify.apprise]] is configured)
    return importlib.util.find_spec("apprise") is not None


_CHANNEL_KEYS: dict[str, dict[str, Reader]] = {
    "email": {"name": text(), "to": strings(each=_address), "from": text(_address),
              "on": _on, "smtp": text(_smtp), "starttls": boolean,
              "credentials": text(_absolute), "tls_ca": text(_absolute),
              "sendmail": text(_absolute)},
    "webhook": {"name": text(), "url": text(_url), "secret": text(_absolute), "on": _on,
                "tls_ca": text(_absolute)},
    "apprise": {"name": text(), "urls": strings(what="URL"), "on": _on},
}
_REQUIRED = {"email": ("to", "from"), "webhook": ("url", "secret"), "apprise": ("urls",)}
_CHANNEL_CLASS: dict[str, type[Any]] = {"email": EmailChannel, "webhook": WebhookChannel,
                                        "apprise": AppriseChannel}


def _channels(kind: str) -> Reader:
    """A ``[[notify.<kind>]]`` array of tables: every problem of every entry at once."""
    def read(v: Any) -> tuple[Any, ...]:
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
            raise Invalid(f"must be an array of tables ([[notify.{kind}]]), not {_tname(v)}")
        problems: list[str] = []
        out = []
        for i, entry in enumerate(v):
            found: list[Problem] = []
            t = _Table(entry, f"[{i}]", found)
            values = t.read(_CHANNEL_KEYS[kind])
            t.finish()
            for req in _REQUIRED[kind]:
                if req not in entry:
                    found.append(Problem(f"[{i}].{req}", "is required"))
            name = values.pop("name", f"{kind}{i + 1}")
            if not _CHANNEL_NAME_RX.fullmatch(name):
                found.append(Problem(f"[{i}].name", f"{name!r} is not a valid channel name"))
            if kind == "apprise" and not _apprise_installed():
                found.append(Problem(f"[{i}]", "needs Debian's apprise package "
                                               "(apt install apprise)"))
            if kind == "email" and "from" in values:
                values["sender"] = values.pop("from")
            problems.extend(str(p) for p in found)
            if not found:
                out.append(_CHANNEL_CLASS[kind](name=name, **values))
        if problems:
            raise Invalid(*problems)
        return tuple(out)
    return read


def _digest(v: str) -> str | None:
    return None if v in ("off", "weekly") else f"{v!r}: must be \"weekly\" or \"off\""


@dataclass(frozen=True)
class NotifyConfig:
    email: tuple[EmailChannel, ...] = key(_channels("email"), (),
                                          "[[notify.email]]: to, from, on, smtp, starttls, "
                                          "credentials")
    webhook: tuple[WebhookChannel, ...] = key(_channels("webhook"), (),
                                              "[[notify.webhook]]: url, secret, on")
    apprise: tuple[AppriseChannel, ...] = key(_channels("apprise"), (),
                                              "[[notify.apprise]]: urls, on")
    digest: str = key(text(_digest), "off", "\"weekly\": a digest event once a week")
    dry_run_warning: timedelta = key(duration(), timedelta(days=7),
                                     "warn when the configuration still dry-runs this long")
    timeout: timedelta = key(duration(), timedelta(seconds=10), "per delivery attempt")
    max_time: timedelta = key(duration(), timedelta(seconds=60),
                              "for all deliveries of one run (the rest wait in the outbox)")

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (*self.email, *self.webhook, *self.apprise)


@dataclass(frozen=True)
class HistoryConfig:
    enabled: bool = key(boolean, True, "record every run, its removed items and space "
                        "figures in the history database, and write the metrics file")
    items_max_age: timedelta = key(duration(), timedelta(days=90),
                                   "removed items recorded longer ago are pruned")
    runs_max_age: timedelta = key(duration(), timedelta(days=730),
                                  "runs (their figures and samples) older than this are pruned")


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Build one with :func:`load_config`,
    :func:`parse_config` or ``Config()`` for the shipped defaults."""

    root: str = key(_root, "/srv/architect", "the dashboard's install directory")
    environments: tuple[str, ...] = key(_environments, ("prod", "qa", "dev", "test"),
                                        "environment names ({env} in paths)")
    dry_run: bool = key(boolean, True, "only report, unless the run says --force")
    backups: BackupsConfig = section(BackupsConfig, "database backups")
    logs: LogsConfig = section(LogsConfig, "log files")
    temp: TempConfig = section(TempConfig, "temporary files")
    database: DatabaseConfig = section(DatabaseConfig, "the dashboard's databases")
    tasks: TasksConfig = section(TasksConfig, "finished task rows")
    errors: ErrorsConfig = section(ErrorsConfig, "error rows")
    prompts: PromptsConfig = section(PromptsConfig, "finished prompt rows")
    safety: SafetyConfig = section(SafetyConfig, "rules above every target")
    rules: RulesConfig = section(RulesConfig, "user-defined file and table rules")
    orphans: OrphansConfig = section(OrphansConfig, "unreferenced uploads")
    history: HistoryConfig = section(HistoryConfig, "the run history, reports and metrics")
    notify: NotifyConfig = section(NotifyConfig, "notifications: e-mail, webhooks, apprise")
    #: Files the configuration was read from, in order (for ``config check``).
    sources: tuple[str, ...] = ()

    def resolve(self, path: str) -> str:
        """An absolute path for a config path relative to ``root``."""
        return os.path.normpath(os.path.join(self.root, path))

    def expand_env(self, template: str) -> list[tuple[str | None, str]]:
        """``(env, path)`` for each environment when *template* has ``{env}``, else once."""
        if "{env}" in template:
            return [(env, template.replace("{env}", env)) for env in self.environments]
        return [(None, template)]

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration in the file's own shape (durations as strings)."""
        def conv(value: Any) -> Any:
            if hasattr(value, "to_config"):
                return value.to_config()
            if isinstance(value, timedelta):
                return format_duration(value)
            if isinstance(value, tuple):
                return [conv(v) for v in value]
            if isinstance(value, Mapping):
                return {k: conv(v) for k, v in value.items()}
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {f.name: conv(getattr(value, f.name)) for f in dataclasses.fields(value)
                        if getattr(value, f.name) is not None}
            return value
        out = conv(self)
        out.pop("sources", None)
        assert isinstance(out, dict)
        return out


# --- reading and validating: one walk over the declared keys ---------------------------------

_MISSING: Any = object()


class _Table:
    """One TOML table being read: its problems go to a shared list (every problem at once)."""

    def __init__(self, raw: Any, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        if raw is _MISSING or raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.error("", f"must be a table, not {_tname(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.key(key) if key else self.path, message))

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.raw.get(key, _MISSING)

    def table(self, key: str) -> _Table:
        return _Table(self.get(key), self.key(key), self.problems)

    def read(self, readers: Mapping[str, Reader]) -> dict[str, Any]:
        """The keys of *readers* this table has (and was not asked for before), each read;
        a refused value is recorded and left out, so the default stands."""
        out: dict[str, Any] = {}
        for name, read in readers.items():
            if name in self.seen:
                continue
            raw = self.get(name)
            if raw is _MISSING:
                continue
            try:
                out[name] = read(raw)
            except ValueError as exc:
                for message in exc.messages if isinstance(exc, Invalid) else (str(exc),):
                    self.error(name, message)
                if isinstance(exc, Invalid) and exc.value is not None:
                    out[name] = exc.value
        return out

    def finish(self) -> None:
        known = sorted(self.seen)
        for k in sorted(set(self.raw) - self.seen):
            close = difflib.get_close_matches(k, known, n=1, cutoff=0.6)
            self.error(k, "unknown key" + (f" (did you mean {close[0]}?)" if close else ""))


def _readers(cls: type[Any], names: Iterable[str] | None = None) -> dict[str, Reader]:
    """The declared readers of *cls* (of *names* only, in that order, when given)."""
    declared = {f.name: f.metadata["read"] for f in dataclasses.fields(cls)
                if f.metadata.get("read") is not None}
    return declared if names is None else {n: declared[n] for n in names}


def _parse_section(cls: type[Any], t: _Table, environments: tuple[str, ...]) -> Any:
    """One section: its declared keys (``READ_FIRST`` first: the order problems are listed
    in), the backups' tables, then every key the file has that none declares."""
    values = t.read(_readers(cls, getattr(cls, "READ_FIRST", ())))
    if cls is BackupsConfig:
        policies = _parse_policies(t.table("policy"), environments)
        values["retention"] = MappingProxyType(
            _parse_retention(t.table("retention"), environments, policies))
        values["policy"] = MappingProxyType(policies)
        values["verify"] = _parse_plain(VerifyConfig, t.table("verify"))
        values["compress"] = _parse_plain(CompressConfig, t.table("compress"))
        values["offload"] = _parse_offload(t.table("offload"), environments)
    if cls is RulesConfig:
        values["files"] = tuple(_parse_list(FileRule, t, "files"))
        values["tables"] = tuple(_parse_list(TableRule, t, "tables"))
    if cls is OrphansConfig:
        values["references"] = tuple(_parse_list(UploadReference, t, "references"))
    values |= t.read(_readers(cls))
    t.finish()
    return cls(**values)


#: The keys each list entry must have.
_RULE_REQUIRED: dict[type[Any], tuple[str, ...]] = {
    FileRule: ("name", "dirs", "patterns"),
    TableRule: ("name", "database", "table", "time_column", "max_age"),
    UploadReference: ("table", "column"),
}


def _parse_list(cls: type[Any], t: _Table, name: str) -> list[Any]:
    """An array of tables (``[[rules.files]]``): each entry read by *cls*'s declared keys;
    an entry with a problem is recorded and left out."""
    raw = t.get(name)
    if raw is _MISSING:
        return []
    if not isinstance(raw, list):
        t.error(name, f"must be an array of tables ([[{t.key(name)}]]), not {_tname(raw)}")
        return []
    out = []
    for i, item in enumerate(raw):
        sub = _Table(item, f"{t.key(name)}[{i}]", t.problems)
        if not isinstance(item, dict):
            continue
        before = len(t.problems)
        values = sub.read(_readers(cls))
        if cls is TableRule:
            values["where"] = tuple(_parse_where(sub))
        sub.finish()
        for k in _RULE_REQUIRED[cls]:
            if k not in item:
                sub.error(k, "missing (required)")
        if len(t.problems) == before:
            out.append(cls(**values))
    return out


def _parse_where(t: _Table) -> list[Condition]:
    raw = t.get("where")
    if raw is _MISSING:
        return []
    if not isinstance(raw, list):
        t.error("where", 'must be a list of tables: [{column = "status", in = ["done"]}]')
        return []
    out = []
    for i, item in enumerate(raw):
        sub = _Table(item, f"{t.key('where')}[{i}]", t.problems)
        if not isinstance(item, dict):
            continue
        read = sub.read({"column": text(_identifier), "in": _condition_values})
        sub.finish()
        for k in ("column", "in"):
            if k not in item:
                sub.error(k, "missing (required)")
        if "column" in read and "in" in read:
            out.append(Condition(read["column"], read["in"]))
    return out


def _parse_plain(cls: type[Any], t: _Table) -> Any:
    values = t.read(_readers(cls, getattr(cls, "READ_FIRST", ())))
    values |= t.read(_readers(cls))
    t.finish()
    return cls(**values)


def _parse_offload(t: _Table, environments: tuple[str, ...]) -> OffloadConfig:
    """``[backups.offload]`` and its remote policies; a configured offload also needs boto3
    and a credentials file that only root can read."""
    before = len(t.problems)
    policies = _parse_policies(t.table("policy"), environments)
    values = t.read(_readers(OffloadConfig, OffloadConfig.READ_FIRST))
    values |= t.read(_readers(OffloadConfig))
    t.finish()
    cfg = OffloadConfig(**values, policy=MappingProxyType(policies))
    if cfg.enabled and len(t.problems) == before:
        problem = offload_problem(cfg)
        if problem is not None:
            t.problems.append(problem)
    return cfg


def offload_problem(cfg: OffloadConfig, environ: Mapping[str, str] | None = None
                    ) -> Problem | None:
    """What keeps a configured offload from working before any request is made: boto3
    missing, or a credentials file that is missing or readable by others."""
    from architect_cleanup.offload import (  # noqa: PLC0415
        OffloadError,
        credentials_path,
        require_boto3,
    )

    try:
        require_boto3()
    except OffloadError as exc:
        return Problem("backups.offload.url", str(exc))
    path = credentials_path(cfg.credentials, environ)
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return Problem("backups.offload.credentials",
                       f"{path}: no such file (an AWS shared-credentials file, mode 0600, "
                       "owned by root)")
    except OSError:
        return None  # not ours to read here (e.g. `config check` as another user)
    if not stat.S_ISREG(st.st_mode):
        return Problem("backups.offload.credentials", f"{path}: not a regular file")
    if st.st_uid not in (0, os.geteuid()):
        return Problem("backups.offload.credentials",
                       f"{path}: owned by uid {st.st_uid}, not by root; refused")
    if st.st_mode & 0o077:
        return Problem("backups.offload.credentials",
                       f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others "
                       "read it; refused (chmod 600)")
    return None


def _parse_retention(rt: _Table, environments: tuple[str, ...],
                     policies: Mapping[str, Policy]) -> dict[str, int]:
    # [backups.policy.default] stands in for the built-in per-environment numbers: only a
    # backups.retention.<env> written in a file is more specific than it.
    retention = dict(DEFAULT_RETENTION)
    if "default" in policies:
        retention = {"default": retention["default"]}
    number = kept("would delete every backup")
    refused = _refuse(_not_configured(environments))
    retention |= rt.read({env: number if env == "default" or env in environments else refused
                          for env in rt.raw})
    rt.finish()
    return retention


def _parse_policies(pt: _Table, environments: tuple[str, ...]) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for env, raw in pt.raw.items():
        pt.seen.add(env)
        if env != "default" and env not in environments:
            pt.error(env, _not_configured(environments))
            continue
        sub = _Table(raw, pt.key(env), pt.problems)
        if not isinstance(raw, dict):
            continue
        policy = _parse_policy(sub)
        sub.finish()
        if policy is not None:
            policies[env] = policy
    pt.finish()
    return policies


#: ``[backups.policy.<env>]``: how each key is read (the defaults are Policy's).
_POLICY: dict[str, Reader] = {
    **{name: whole(0) for name, _ in COUNT_RULES},
    "keep_within": duration(example="7d", parse=parse_span),
    "max_total_size": parse_size,
    "min_free_space": parse_free_space,
    "keep_min": kept("would let min_free_space delete every backup"),
}


def _parse_policy(t: _Table) -> Policy | None:
    """One ``[backups.policy.<env>]`` table; None (with the problems recorded) when invalid."""
    before = len(t.problems)
    values = t.read(_POLICY)
    if len(t.problems) > before:
        return None
    policy = Policy(**values)
    if not policy.has_rules:
        t.error("", "keeps nothing but the newest backup: set at least one of "
                    + ", ".join(k for k in POLICY_KEYS[:7])
                    + " (to keep as many as fit in max_total_size, use a large keep_last)")
        return None
    return policy


def parse_config(raw: Mapping[str, Any], sources: tuple[str, ...] = ()) -> Config:
    """Validate a merged TOML document; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    top = _Table(dict(raw), "", problems)
    values = top.read(_readers(Config))
    envs = values.get("environments", Config.environments)
    for f in dataclasses.fields(Config):
        if "section" in f.metadata:
            values[f.name] = _parse_section(f.metadata["section"], top.table(f.name), envs)
    top.finish()
    cfg = Config(**values, sources=sources)
    problems.extend(_broad_patterns(cfg))
    problems.extend(_rule_problems(cfg))
    if problems:
        raise ConfigError(problems, ", ".join(sources) or None)
    return cfg


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


def _never_match(cfg: Config) -> list[str]:
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


def _broad_patterns(cfg: Config) -> list[Problem]:
    """A problem per temp or log pattern that matches a name in :func:`_never_match`: such a
    pattern is judged by what it matches, not by how it is spelled."""
    names = _never_match(cfg)
    problems = []
    for key in _REMOVING_PATTERNS:
        section, field_name = key.split(".")
        for pattern in getattr(getattr(cfg, section), field_name):
            rx = re.compile(translate(pattern))
            hits = [n for n in names if rx.match(n)]
            if hits:
                problems.append(Problem(
                    key, f"{pattern!r} matches {', '.join(repr(h) for h in hits[:4])}"
                    f"{' ...' if len(hits) > 4 else ''}, names the product must never remove "
                    "wholesale; name the temporary files or directories themselves "
                    '(e.g. "*.tmp", "__pycache__")'))
    return problems


def _rule_problems(cfg: Config) -> list[Problem]:
    """What a rule or [orphans] says that the rest of the configuration contradicts: a
    directory outside root not listed in ``rules.allowed_outside_root``, a database not in
    ``database.paths``, a removing pattern as broad as :func:`_broad_patterns` refuses, a
    name used twice, an action a rule's type cannot do."""
    problems: list[Problem] = []
    names = _never_match(cfg)
    allowed = {os.path.normpath(a) for a in cfg.rules.allowed_outside_root}
    seen: set[str] = set()
    for i, rule in enumerate(cfg.rules.files):
        at = f"rules.files[{i}]"
        if rule.name in seen:
            problems.append(Problem(f"{at}.name", f"{rule.name!r} is used by an earlier rule"))
        seen.add(rule.name)
        for d in rule.dirs:
            if d.startswith("/") and os.path.normpath(d) not in allowed:
                problems.append(Problem(f"{at}.dirs", f"{d!r} is outside root: list it in "
                                        "rules.allowed_outside_root to allow it"))
        for pattern in rule.patterns:
            rx = re.compile(translate(pattern))
            hits = [n for n in names if rx.match(n)]
            if hits:
                problems.append(Problem(
                    f"{at}.patterns", f"{pattern!r} matches "
                    f"{', '.join(repr(h) for h in hits[:4])}{' ...' if len(hits) > 4 else ''}, "
                    "names the product must never remove wholesale; name the files themselves "
                    '(e.g. "architect.db.backup.*", "* 2.db")'))
        if rule.max_age is None and rule.max_total_size is None:
            problems.append(Problem(at, "set max_age or max_total_size (a rule with neither "
                                        "would remove nothing, or everything)"))
        if rule.type != "file" and (rule.action == "compress" or rule.max_total_size):
            problems.append(Problem(at, f'type = "{rule.type}": only type = "file" may use '
                                        'action = "compress" or max_total_size'))
    for i, trule in enumerate(cfg.rules.tables):
        at = f"rules.tables[{i}]"
        if trule.name in seen:
            problems.append(Problem(f"{at}.name", f"{trule.name!r} is used by an earlier rule"))
        seen.add(trule.name)
        if trule.database not in cfg.database.paths:
            problems.append(Problem(f"{at}.database", f"{trule.database!r} is not one of "
                                    f"database.paths ({list(cfg.database.paths)})"))
        if trule.action == "archive" and not trule.archive_column:
            problems.append(Problem(f"{at}.archive_column",
                                    'action = "archive" needs the column to set'))
        if trule.action == "delete" and (trule.archive_column or trule.archive_time_column):
            problems.append(Problem(at, 'archive_column is for action = "archive"'))
    o = cfg.orphans
    if o.enabled:
        if o.database not in cfg.database.paths:
            problems.append(Problem("orphans.database", f"{o.database!r} is not one of "
                                    f"database.paths ({list(cfg.database.paths)})"))
        if not o.references:
            problems.append(Problem("orphans.references", "at least one table and column "
                                    "that names uploads is needed"))
        if not o.dirs:
            problems.append(Problem("orphans.dirs", "no upload directory"))
        if "{env}" in o.database and any("{env}" not in d for d in o.dirs):
            problems.append(Problem("orphans.dirs", "with a per-environment database every "
                                    "upload directory must contain {env}"))
        q = os.path.normpath(o.quarantine_dir)
        for d in o.dirs:
            for _env, raw_rel in cfg.expand_env(d):
                rel = os.path.normpath(raw_rel)
                if q == rel or q.startswith(rel + "/") or rel.startswith(q + "/"):
                    problems.append(Problem("orphans.quarantine_dir",
                                            f"{o.quarantine_dir!r} overlaps {rel!r}"))
    return problems


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge *over* into a copy of *base*: tables key by key, other values replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def config_files(path: str) -> Iterator[Path]:
    """The main file (if present) then its ``config.d/*.toml`` drop-ins in name order."""
    main = Path(path)
    if main.is_file():
        yield main
    dropins = main.parent / "config.d"
    if dropins.is_dir():
        yield from sorted(p for p in dropins.glob("*.toml") if p.is_file())


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the configuration.

    *path* (``--config``) wins over ``$ARCHITECT_CLEANUP_CONFIG``, which wins over
    ``/etc/architect-cleanup/config.toml``. A path given explicitly must exist; when the default
    file is missing the built-in defaults apply (they are the shipped file's values)."""
    environ = os.environ if environ is None else environ
    explicit = path or environ.get(ENV_VAR) or None
    chosen = explicit or DEFAULT_CONFIG
    if explicit and not Path(chosen).is_file():
        raise ConfigError([Problem(chosen, "no such configuration file")])
    merged: dict[str, Any] = {}
    sources = []
    dropins = Path(chosen).parent / "config.d"
    docs: list[tuple[str, dict[str, Any]]] = []
    for f in config_files(chosen):
        if f.parent == dropins:
            _check_trusted(dropins, "its directory")
        try:
            with _open_trusted(f) as fh:
                doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Problem(str(f), f"not valid TOML: {exc}")]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([Problem(str(f), f"not valid TOML: not UTF-8 text ({exc.reason} "
                                               f"at byte {exc.start})")]) from None
        except OSError as exc:
            raise ConfigError([Problem(str(f), f"cannot read: {exc.strerror}")]) from None
        merged = merge(merged, doc)
        sources.append(str(f))
        docs.append((str(f), doc))
    try:
        return parse_config(merged, tuple(sources))
    except ConfigError as exc:
        if len(docs) < 2:
            raise
        # with drop-ins, name the file that holds each unknown key
        raise ConfigError([_where(p, docs) for p in exc.problems], exc.source) from None


def _where(problem: str, docs: list[tuple[str, dict[str, Any]]]) -> str:
    """*problem* ("a.b: unknown key ...") with the file that sets a.b, the last one wins."""
    key, _, rest = problem.partition(": ")
    if not rest.startswith("unknown key"):
        return problem
    for name, doc in reversed(docs):
        node: Any = doc
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return f"{problem} (in {name})"
    return problem


def _check_trusted(path: Path, what: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError([f"{display(str(path))}: cannot read: {exc.strerror}"]) from None
    why = untrusted(st)
    if why is not None:
        raise ConfigError([f"{display(str(path))}: refused ({what}): {why}; anyone who can "
                           "write it could change what this tool removes"])


def _open_trusted(f: Path) -> Any:
    """A configuration file opened for reading, once it is found to be a regular file only
    root or this user can write (checked on the open descriptor); ConfigError else."""
    try:
        fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError([f"{display(str(f))}: cannot read: {exc.strerror}"]) from None
    st = os.fstat(fd)
    why = "not a regular file" if not stat.S_ISREG(st.st_mode) else untrusted(st)
    if why is not None:
        os.close(fd)
        raise ConfigError([f"{display(str(f))}: refused: {why}; anyone who can write it "
                           "could change what this tool removes"])
    return os.fdopen(fd, "rb")


def with_overrides(cfg: Config, *, keep: int | Mapping[str, int] | None = None,
                   log_days: float | None = None, task_days: float | None = None,
                   error_days: float | None = None, prompt_days: float | None = None
                   ) -> Config:
    """The CLI's and the API's overrides applied to a configuration, read by the same
    :class:`_Table` as the file (ages in days instead of duration strings).

    *keep* is one number for every environment (``--keep``) or a per-environment table merged
    over the configured retention. It means what the seed's --keep meant: the newest N, for
    this run, in place of whatever policy the environment (or every one) has."""
    problems: list[Problem] = []
    changes: dict[str, Any] = {}
    if keep is not None:
        b = cfg.backups
        wanted = dict.fromkeys(b.retention, keep) if isinstance(keep, int) else dict(keep)
        number = kept("would delete every backup", typed=False)
        read = _Table(wanted, "backups.retention", problems).read(dict.fromkeys(wanted, number))
        policies = {} if isinstance(keep, int) else {
            env: p for env, p in b.policy.items() if env not in read}
        changes["backups"] = dataclasses.replace(
            b, retention=MappingProxyType(dict(b.retention) | read),
            policy=MappingProxyType(policies))
    ages = {"logs": log_days, "tasks": task_days, "errors": error_days, "prompts": prompt_days}
    for name, value in ages.items():
        if value is not None:
            read = _Table({"max_age": value}, name, problems).read({"max_age": days})
            changes[name] = dataclasses.replace(getattr(cfg, name), **read)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(cfg, **changes)


# --- where each value comes from (the panel's configuration page, its drop-in) ---------------

#: The origin of a value no file sets.
DEFAULT_ORIGIN = "default"


def chosen_path(path: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The main configuration file :func:`load_config` reads (it may not exist)."""
    environ = os.environ if environ is None else environ
    return path or environ.get(ENV_VAR) or DEFAULT_CONFIG


def read_layers(path: str | None = None, environ: Mapping[str, str] | None = None
                ) -> list[tuple[str, dict[str, Any]]]:
    """Each file :func:`load_config` merges, in its order, with its TOML document (not
    validated). Raises ConfigError for a file that cannot be read or is not TOML."""
    out: list[tuple[str, dict[str, Any]]] = []
    for f in config_files(chosen_path(path, environ)):
        try:
            with f.open("rb") as fh:
                out.append((str(f), tomllib.load(fh)))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Problem(str(f), f"not valid TOML: {exc}")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([Problem(str(f), f"cannot read: {exc}")]) from None
    return out


def leaves(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, value)`` of every value of a TOML document that is not a table."""
    for k, v in doc.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            yield from leaves(v, name)
        else:
            yield name, v


def origins(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """``dotted.key`` -> the file whose value the merge keeps (the last one setting it);
    keys no file sets are absent (their origin is :data:`DEFAULT_ORIGIN`)."""
    out: dict[str, str] = {}
    for source, doc in layers:
        for name, _ in leaves(doc):
            out[name] = source
    return out


def merged(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The layers' documents merged as :func:`load_config` merges them."""
    out: dict[str, Any] = {}
    for _, doc in layers:
        out = merge(out, dict(doc))
    return out
