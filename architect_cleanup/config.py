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
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from architect_cleanup.fs import is_forbidden_root
from architect_cleanup.retention import (
    COUNT_RULES,
    DEFAULT_KEEP_MIN,
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
#: The longest duration (and age in days) accepted: 100 years. A longer one means "never",
#: which the enabled = false switch says better; and a cutoff before year 1 cannot be computed.
MAX_DURATION_S = 36500 * 86400
_SIZE_RX = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:iB)?)?", re.IGNORECASE)
_ENV_NAME_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IDENT_RX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """One or more configuration problems, each ``section.key: message``."""

    def __init__(self, problems: Iterable[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n  " + "\n  ".join(self.problems))


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or combined (``"1h30m"``)."""
    s = text.strip().lower()
    if not _DURATION_FULL_RX.fullmatch(s):
        raise ValueError(f'{text!r} is not a duration (use e.g. "30d", "12h", "90m", "45s")')
    total = sum(int(n) * _UNITS[u] for n, u in _DURATION_RX.findall(s))
    if total > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION_S // 86400}d (100 years)")
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


# --- the typed configuration -----------------------------------------------------------------


#: The built-in ``backups.retention`` numbers (the shipped file's).
DEFAULT_RETENTION = {"prod": 10, "qa": 5, "dev": 5, "test": 3, "default": 5}


@dataclass(frozen=True)
class BackupsConfig:
    enabled: bool = True
    dir: str = "data/{env}/backups"
    shared_dir: str = "data/backups"
    patterns: tuple[str, ...] = ("*.db", "*.sqlite", "*.sqlite3", "*.bak", "*.db.gz",
                                 "*.sql.gz", "*.db.backup.*")
    min_age: timedelta = timedelta(hours=1)
    retention: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType(
        dict(DEFAULT_RETENTION)))
    #: ``[backups.policy.<env>]`` tables (and ``default``)
    policy: Mapping[str, Policy] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))

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
    enabled: bool = True
    max_age: timedelta = timedelta(days=30)
    dirs: tuple[str, ...] = ("data", "logs")
    patterns: tuple[str, ...] = ("*.log", "*.log.*")
    tmp_dir: str = "/tmp"  # noqa: S108  (we clean our own logs there)
    tmp_patterns: tuple[str, ...] = ("architect*.log", "architect*.log.*")
    protect: tuple[str, ...] = ("architect_worker.log", "architect_*_worker.log")


@dataclass(frozen=True)
class TempConfig:
    enabled: bool = True
    min_age: timedelta = timedelta(hours=1)
    dirs: tuple[str, ...] = (".",)
    patterns: tuple[str, ...] = ("*.tmp", "*.temp", "*.cache", "*.pyc")
    dir_patterns: tuple[str, ...] = ("__pycache__", ".pytest_cache")


@dataclass(frozen=True)
class DatabaseConfig:
    paths: tuple[str, ...] = ("data/{env}/architect.db", "data/assigner/assigner.db")
    naive_timezone: str = "utc"
    batch_size: int = 1000
    busy_timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class TasksConfig:
    enabled: bool = True
    max_age: timedelta = timedelta(days=7)
    tables: tuple[str, ...] = ("task_queue", "tasks")
    statuses: tuple[str, ...] = ("completed", "cancelled", "failed")


@dataclass(frozen=True)
class ErrorsConfig:
    enabled: bool = True
    max_age: timedelta = timedelta(days=30)
    table: str = "errors"


@dataclass(frozen=True)
class PromptsConfig:
    enabled: bool = True
    max_age: timedelta = timedelta(days=14)
    tables: tuple[str, ...] = ("prompts", "assigner_prompts")
    statuses: tuple[str, ...] = ("completed", "cancelled", "failed")


@dataclass(frozen=True)
class SafetyConfig:
    exclude_dirs: tuple[str, ...] = ("*chrome_profile*", "*chrome-profile*")
    skip_open_files: bool = True


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Build one with :func:`load_config`,
    :func:`parse_config` or ``Config()`` for the shipped defaults."""

    root: str = "/srv/architect"
    environments: tuple[str, ...] = ("prod", "qa", "dev", "test")
    dry_run: bool = True
    backups: BackupsConfig = dataclasses.field(default_factory=BackupsConfig)
    logs: LogsConfig = dataclasses.field(default_factory=LogsConfig)
    temp: TempConfig = dataclasses.field(default_factory=TempConfig)
    database: DatabaseConfig = dataclasses.field(default_factory=DatabaseConfig)
    tasks: TasksConfig = dataclasses.field(default_factory=TasksConfig)
    errors: ErrorsConfig = dataclasses.field(default_factory=ErrorsConfig)
    prompts: PromptsConfig = dataclasses.field(default_factory=PromptsConfig)
    safety: SafetyConfig = dataclasses.field(default_factory=SafetyConfig)
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
                return {f.name: conv(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return value
        out = conv(self)
        out.pop("sources", None)
        assert isinstance(out, dict)
        return out


# --- reading and validating ------------------------------------------------------------------

_MISSING: Any = object()


class _Table:
    """Reads typed keys out of one TOML table, recording every problem instead of stopping."""

    def __init__(self, raw: Any, path: str, problems: list[str]) -> None:
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
        where = self.key(key) if key else self.path
        self.problems.append(f"{where}: {message}")

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.raw.get(key, _MISSING)

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.get(key)
        if v is _MISSING:
            return default
        if not isinstance(v, bool):
            self.error(key, f"must be true or false, not {_tname(v)}")
            return default
        return v

    def get_int(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        v = self.get(key)
        if v is _MISSING:
            return default
        return self.check_int(key, v, default, lo, hi)

    def check_int(self, key: str, v: Any, default: int, lo: int | None, hi: int | None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(key, f"must be a whole number, not {_tname(v)}")
            return default
        if lo is not None and v < lo:
            self.error(key, f"must be >= {lo}")
            return default
        if hi is not None and v > hi:
            self.error(key, f"must be <= {hi}")
            return default
        return v

    def get_str(self, key: str, default: str, rx: re.Pattern[str] | None = None) -> str:
        v = self.get(key)
        if v is _MISSING:
            return default
        if not isinstance(v, str):
            self.error(key, f"must be a string, not {_tname(v)}")
            return default
        if rx is not None and not rx.fullmatch(v):
            self.error(key, f"{v!r} is not a valid name")
            return default
        return v

    def get_duration(self, key: str, default: timedelta, positive: bool = True) -> timedelta:
        v = self.get(key)
        if v is _MISSING:
            return default
        if not isinstance(v, str):
            self.error(key, f"must be a duration string like \"30d\", not {_tname(v)}")
            return default
        try:
            td = parse_duration(v)
        except ValueError as exc:
            self.error(key, str(exc))
            return default
        if positive and td <= timedelta(0):
            self.error(key, "must be longer than 0s")
            return default
        return td

    def str_list(self, key: str, default: tuple[str, ...], *, nonempty: bool = True,
                 rx: re.Pattern[str] | None = None, what: str = "entry"
                 ) -> tuple[str, ...]:
        v = self.get(key)
        if v is _MISSING:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.error(key, "must be a list of strings")
            return default
        if nonempty and not v:
            self.error(key, "must not be empty")
            return default
        bad = [x for x in v if not x or (rx is not None and not rx.fullmatch(x))]
        if bad:
            self.error(key, f"invalid {what}: {', '.join(repr(b) for b in bad)}")
            return default
        return tuple(v)

    def patterns(self, key: str, default: tuple[str, ...], nonempty: bool = True
                 ) -> tuple[str, ...]:
        pats = self.str_list(key, default, nonempty=nonempty, what="pattern")
        bad = [p for p in pats if "/" in p or p in ("*", ".*")]
        if bad:
            self.error(key, "patterns match file names: no '/' and not a bare '*': "
                       + ", ".join(repr(b) for b in bad))
            return default
        return pats

    def relpath(self, key: str, value: str) -> bool:
        """Paths in the config are relative to root; '..' could escape it."""
        if value.startswith("/"):
            self.error(key, f"{value!r}: must be relative to root")
            return False
        if ".." in value.split("/"):
            self.error(key, f"{value!r}: '..' is not allowed")
            return False
        return True

    def table(self, key: str) -> _Table:
        return _Table(self.get(key), self.key(key), self.problems)

    def finish(self) -> None:
        known = sorted(self.seen)
        for k in sorted(set(self.raw) - self.seen):
            close = difflib.get_close_matches(k, known, n=1, cutoff=0.6)
            self.error(k, "unknown key" + (f" (did you mean {close[0]}?)" if close else ""))


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _parse_backups(t: _Table, environments: tuple[str, ...]) -> BackupsConfig:
    d = BackupsConfig()
    dir_ = t.get_str("dir", d.dir)
    if t.relpath("dir", dir_) and "{env}" not in dir_:
        t.error("dir", f"{dir_!r} must contain {{env}} (one directory per environment)")
    shared = t.get_str("shared_dir", d.shared_dir)
    if shared:
        t.relpath("shared_dir", shared)
    policies = _parse_policies(t.table("policy"), environments)
    retention = dict(d.retention)
    if "default" in policies:
        # [backups.policy.default] stands in for the built-in per-environment numbers: only
        # a backups.retention.<env> written in a file is more specific than it.
        retention = {"default": retention["default"]}
    rt = t.table("retention")
    for env, n in rt.raw.items():
        rt.seen.add(env)
        if env != "default" and env not in environments:
            rt.error(env, f"not a configured environment (environments = {list(environments)})")
            continue
        if isinstance(n, int) and not isinstance(n, bool) and n < 1:
            rt.error(env, f"{n} would delete every backup; must be >= 1 "
                          "(the newest backup is always kept)")
            continue
        retention[env] = rt.check_int(env, n, retention.get(env, 5), 1, None)
    rt.finish()
    return BackupsConfig(
        enabled=t.get_bool("enabled", d.enabled),
        dir=dir_,
        shared_dir=shared,
        patterns=t.patterns("patterns", d.patterns),
        min_age=t.get_duration("min_age", d.min_age, positive=False),
        retention=MappingProxyType(retention),
        policy=MappingProxyType(policies),
    )


def _parse_policies(pt: _Table, environments: tuple[str, ...]) -> dict[str, Policy]:
    policies: dict[str, Policy] = {}
    for env, raw in pt.raw.items():
        pt.seen.add(env)
        if env != "default" and env not in environments:
            pt.error(env, f"not a configured environment (environments = {list(environments)})")
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


def _parse_policy(t: _Table) -> Policy | None:
    """One ``[backups.policy.<env>]`` table; None (with the problems recorded) when invalid."""
    before = len(t.problems)
    counts = {key: t.get_int(key, 0, 0, None) for key, _ in COUNT_RULES}
    within = None
    raw = t.get("keep_within")
    if raw is not _MISSING:
        if not isinstance(raw, str):
            t.error("keep_within", f"must be a duration string like \"7d\", not {_tname(raw)}")
        else:
            try:
                within = parse_span(raw)
            except ValueError as exc:
                t.error("keep_within", str(exc))
            else:
                if not within:
                    t.error("keep_within", "must be longer than 0s")
    budget = floor = None
    raw = t.get("max_total_size")
    if raw is not _MISSING:
        try:
            budget = parse_size(raw)
        except ValueError as exc:
            t.error("max_total_size", str(exc))
    raw = t.get("min_free_space")
    if raw is not _MISSING:
        try:
            floor = parse_free_space(raw)
        except ValueError as exc:
            t.error("min_free_space", str(exc))
    keep_min = DEFAULT_KEEP_MIN
    raw = t.get("keep_min")
    if raw is not _MISSING:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw < 1:
            t.error("keep_min", f"{raw} would let min_free_space delete every backup; must be "
                                ">= 1 (the newest backup is always kept)")
        else:
            keep_min = t.check_int("keep_min", raw, DEFAULT_KEEP_MIN, 1, None)
    if len(t.problems) > before:
        return None
    policy = Policy(**counts, keep_within=within, max_total_size=budget, min_free_space=floor,
                    keep_min=keep_min)
    if not policy.has_rules:
        t.error("", "keeps nothing but the newest backup: set at least one of "
                    + ", ".join(k for k in POLICY_KEYS[:7])
                    + " (to keep as many as fit in max_total_size, use a large keep_last)")
        return None
    return policy


def _parse_logs(t: _Table) -> LogsConfig:
    d = LogsConfig()
    dirs = t.str_list("dirs", d.dirs, nonempty=False, what="directory")
    for x in dirs:
        t.relpath("dirs", x)
    tmp_dir = t.get_str("tmp_dir", d.tmp_dir)
    if tmp_dir:
        if not tmp_dir.startswith("/"):
            t.error("tmp_dir", f"{tmp_dir!r}: must be an absolute path (or \"\" for none)")
        elif is_forbidden_root(tmp_dir):
            t.error("tmp_dir", f"{tmp_dir!r}: a system directory may not be cleaned")
    return LogsConfig(
        enabled=t.get_bool("enabled", d.enabled),
        max_age=t.get_duration("max_age", d.max_age),
        dirs=dirs,
        patterns=t.patterns("patterns", d.patterns),
        tmp_dir=tmp_dir,
        tmp_patterns=t.patterns("tmp_patterns", d.tmp_patterns, nonempty=False),
        protect=t.patterns("protect", d.protect, nonempty=False),
    )


def _parse_temp(t: _Table) -> TempConfig:
    d = TempConfig()
    dirs = t.str_list("dirs", d.dirs, nonempty=False, what="directory")
    for x in dirs:
        t.relpath("dirs", x)
    return TempConfig(
        enabled=t.get_bool("enabled", d.enabled),
        min_age=t.get_duration("min_age", d.min_age, positive=False),
        dirs=dirs,
        patterns=t.patterns("patterns", d.patterns, nonempty=False),
        dir_patterns=t.patterns("dir_patterns", d.dir_patterns, nonempty=False),
    )


def _parse_database(t: _Table) -> DatabaseConfig:
    d = DatabaseConfig()
    paths = t.str_list("paths", d.paths, nonempty=False, what="path")
    for p in paths:
        t.relpath("paths", p)
    tz = t.get_str("naive_timezone", d.naive_timezone)
    if tz not in ("utc", "local"):
        t.error("naive_timezone", f"{tz!r}: must be \"utc\" or \"local\"")
        tz = d.naive_timezone
    return DatabaseConfig(
        paths=paths,
        naive_timezone=tz,
        batch_size=t.get_int("batch_size", d.batch_size, 1, 100_000),
        busy_timeout=t.get_duration("busy_timeout", d.busy_timeout),
    )


_FinishedRows = TypeVar("_FinishedRows", TasksConfig, PromptsConfig)


def _parse_finished_rows(t: _Table, cls: type[_FinishedRows]) -> _FinishedRows:
    """[tasks] and [prompts] share their shape: tables to try, finished statuses, an age."""
    d = cls()
    return cls(
        enabled=t.get_bool("enabled", d.enabled),
        max_age=t.get_duration("max_age", d.max_age),
        tables=t.str_list("tables", d.tables, rx=_IDENT_RX, what="table name"),
        statuses=t.str_list("statuses", d.statuses),
    )


def _parse_errors(t: _Table) -> ErrorsConfig:
    d = ErrorsConfig()
    return ErrorsConfig(
        enabled=t.get_bool("enabled", d.enabled),
        max_age=t.get_duration("max_age", d.max_age),
        table=t.get_str("table", d.table, rx=_IDENT_RX),
    )


def _parse_safety(t: _Table) -> SafetyConfig:
    d = SafetyConfig()
    return SafetyConfig(
        exclude_dirs=t.patterns("exclude_dirs", d.exclude_dirs, nonempty=False),
        skip_open_files=t.get_bool("skip_open_files", d.skip_open_files),
    )


def parse_config(raw: Mapping[str, Any], sources: tuple[str, ...] = ()) -> Config:
    """Validate a merged TOML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    top = _Table(dict(raw), "", problems)
    d = Config()
    root = top.get_str("root", d.root)
    if not root.startswith("/"):
        top.error("root", f"{root!r}: must be an absolute path")
    elif is_forbidden_root(root) or is_forbidden_root(os.path.realpath(root)):
        top.error("root", f"{root!r}: refusing to clean a system directory; "
                          "point root at the dashboard's install directory")
    envs = top.str_list("environments", d.environments, rx=_ENV_NAME_RX,
                        what="environment name")
    if len(set(envs)) != len(envs):
        top.error("environments", "names must be unique")
    cfg = Config(
        root=os.path.normpath(root) if root.startswith("/") else root,
        environments=envs,
        dry_run=top.get_bool("dry_run", d.dry_run),
        backups=_finish(_parse_backups, top.table("backups"), envs),
        logs=_finish(_parse_logs, top.table("logs")),
        temp=_finish(_parse_temp, top.table("temp")),
        database=_finish(_parse_database, top.table("database")),
        tasks=_finish(_parse_finished_rows, top.table("tasks"), TasksConfig),
        errors=_finish(_parse_errors, top.table("errors")),
        prompts=_finish(_parse_finished_rows, top.table("prompts"), PromptsConfig),
        safety=_finish(_parse_safety, top.table("safety")),
        sources=sources,
    )
    top.finish()
    if problems:
        raise ConfigError(problems, ", ".join(sources) or None)
    return cfg


def _finish(fn: Any, table: _Table, *args: Any) -> Any:
    value = fn(table, *args)
    table.finish()
    return value


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
        raise ConfigError([f"{chosen}: no such configuration file"])
    merged: dict[str, Any] = {}
    sources = []
    docs: list[tuple[str, dict[str, Any]]] = []
    for f in config_files(chosen):
        try:
            with f.open("rb") as fh:
                doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{f}: not valid TOML: {exc}"]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{f}: not valid TOML: not UTF-8 text ({exc.reason} at byte "
                               f"{exc.start})"]) from None
        except OSError as exc:
            raise ConfigError([f"{f}: cannot read: {exc.strerror}"]) from None
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


def with_overrides(cfg: Config, *, keep: int | Mapping[str, int] | None = None,
                   log_days: float | None = None, task_days: float | None = None,
                   error_days: float | None = None, prompt_days: float | None = None
                   ) -> Config:
    """The CLI's and the API's overrides applied to a configuration, validated the same way.

    *keep* is one number for every environment (``--keep``) or a per-environment table merged
    over the configured retention."""
    problems: list[str] = []
    backups = cfg.backups
    if keep is not None:
        # An override means what the seed's --keep meant: the newest N, for this run, in place
        # of whatever policy the environment (or every one, for a single number) has.
        table = dict(backups.retention)
        policies = {} if isinstance(keep, int) else dict(backups.policy)
        items = ({e: keep for e in table} if isinstance(keep, int) else dict(keep))
        for env, n in items.items():
            if isinstance(n, bool) or not isinstance(n, int):
                problems.append(f"backups.retention.{env}: must be a whole number")
            elif n < 1:
                problems.append(f"backups.retention.{env}: {n} would delete every backup; "
                                "must be >= 1 (the newest backup is always kept)")
            else:
                table[env] = n
                policies.pop(env, None)
        backups = dataclasses.replace(backups, retention=MappingProxyType(table),
                                      policy=MappingProxyType(policies))

    def days(name: str, value: float | None, current: timedelta) -> timedelta:
        if value is None:
            return current
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value <= 0):
            problems.append(f"{name}.max_age: {value!r} days must be a number > 0")
            return current
        if value * 86400 > MAX_DURATION_S:
            problems.append(f"{name}.max_age: {value!r} days is longer than "
                            f"{MAX_DURATION_S // 86400} days (100 years)")
            return current
        return timedelta(days=value)

    out = dataclasses.replace(
        cfg,
        backups=backups,
        logs=dataclasses.replace(cfg.logs, max_age=days("logs", log_days, cfg.logs.max_age)),
        tasks=dataclasses.replace(cfg.tasks, max_age=days("tasks", task_days,
                                                          cfg.tasks.max_age)),
        errors=dataclasses.replace(cfg.errors, max_age=days("errors", error_days,
                                                            cfg.errors.max_age)),
        prompts=dataclasses.replace(cfg.prompts, max_age=days("prompts", prompt_days,
                                                              cfg.prompts.max_age)),
    )
    if problems:
        raise ConfigError(problems)
    return out
