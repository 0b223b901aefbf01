"""Configuration: TOML files -> validated, frozen objects.

The main file (``/etc/architect-cleanup/config.toml`` unless ``--config`` or
``$ARCHITECT_CLEANUP_CONFIG`` names another) is read first, then every ``*.toml`` in the
``config.d/`` directory beside it, in name order; tables merge key by key and a drop-in's value
replaces the one before it. Every problem found is collected and reported together as
``section.key: message``: an unknown key is an error, because a typo must not silently turn a
safety rule off.

This module is the public face; the parts live in :mod:`architect_cleanup.settings`: the
value kinds and units, the generic table reader, each section's declared keys, the checks
across sections and the files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from architect_cleanup.settings import consistency
from architect_cleanup.settings.backups import (
    DEFAULT_CREDENTIALS,
    DEFAULT_RETENTION,
    BackupsConfig,
    CompressConfig,
    OffloadConfig,
    VerifyConfig,
    offload_problem,
)
from architect_cleanup.settings.consistency import NEVER_MATCH
from architect_cleanup.settings.files import (
    DEFAULT_CONFIG,
    DEFAULT_ORIGIN,
    ENV_VAR,
    chosen_path,
    config_files,
    explicit_path,
    leaves,
    merge,
    merged,
    origins,
    read_layers,
    read_trusted,
    where_set,
)
from architect_cleanup.settings.notify import (
    DEFAULT_ON,
    NOTIFY_EVENTS,
    AppriseChannel,
    Channel,
    EmailChannel,
    HistoryConfig,
    NotifyConfig,
    WebhookChannel,
)
from architect_cleanup.settings.problems import ConfigError, Problem
from architect_cleanup.settings.readers import (
    Invalid,
    boolean,
    days,
    environment_names,
    kept,
    root_dir,
)
from architect_cleanup.settings.rules import (
    FILE_ACTIONS,
    FILE_TYPES,
    TABLE_ACTIONS,
    Condition,
    FileRule,
    OrphansConfig,
    RulesConfig,
    TableRule,
    UploadReference,
)
from architect_cleanup.settings.sections import (
    DatabaseConfig,
    ErrorsConfig,
    LogsConfig,
    PromptsConfig,
    SafetyConfig,
    TasksConfig,
    TempConfig,
)
from architect_cleanup.settings.tables import Scope, Table, key, nested_of, readers_of, section
from architect_cleanup.settings.units import (
    BATCH_SIZE,
    MAX_DAYS,
    MAX_DURATION_S,
    MIN_KEEP,
    WORKERS,
    format_duration,
    parse_duration,
    parse_free_space,
    parse_size,
    parse_span,
)

__all__ = [
    "BATCH_SIZE", "DEFAULT_CONFIG", "DEFAULT_CREDENTIALS", "DEFAULT_ON", "DEFAULT_ORIGIN",
    "DEFAULT_RETENTION", "ENV_VAR", "FILE_ACTIONS", "FILE_TYPES", "MAX_DAYS", "MAX_DURATION_S",
    "MIN_KEEP", "NEVER_MATCH", "NOTIFY_EVENTS", "TABLE_ACTIONS", "WORKERS", "AppriseChannel",
    "BackupsConfig", "Channel", "CompressConfig", "Condition", "Config", "ConfigError",
    "DatabaseConfig", "EmailChannel", "ErrorsConfig", "FileRule", "HistoryConfig", "Invalid",
    "LogsConfig", "NotifyConfig", "OffloadConfig", "OrphansConfig", "Problem", "PromptsConfig",
    "RulesConfig", "SafetyConfig", "TableRule", "TasksConfig", "TempConfig", "UploadReference",
    "VerifyConfig", "WebhookChannel", "chosen_path", "config_files", "format_duration",
    "leaves", "load_config", "merge", "merged", "offload_problem", "origins", "parse_config",
    "parse_duration", "parse_free_space", "parse_size", "parse_span", "read_layers",
    "with_overrides",
]


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Build one with :func:`load_config`,
    :func:`parse_config` or ``Config()`` for the shipped defaults."""

    root: str = key(root_dir, "/srv/architect", "the dashboard's install directory")
    environments: tuple[str, ...] = key(environment_names, ("prod", "qa", "dev", "test"),
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
        out = _in_file_shape(self)
        out.pop("sources", None)
        assert isinstance(out, dict)
        return out


def _in_file_shape(value: Any) -> Any:
    """*value* as the configuration file spells it: tables, lists, duration strings."""
    if hasattr(value, "to_config"):
        return value.to_config()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return [_in_file_shape(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _in_file_shape(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _in_file_shape(getattr(value, f.name))
                for f in dataclasses.fields(value) if getattr(value, f.name) is not None}
    return value


def parse_config(raw: Mapping[str, Any], sources: tuple[str, ...] = ()) -> Config:
    """Validate a merged TOML document; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    top = Table(dict(raw), "", problems)
    values = top.read(readers_of(Config))
    scope = Scope(values.get("environments", Config.environments), values)
    for name, parse in nested_of(Config).items():
        values[name] = parse(top, name, scope)
    top.finish()
    cfg = Config(**values, sources=sources)
    problems.extend(consistency.problems(cfg))
    if problems:
        raise ConfigError(problems, ", ".join(sources) or None)
    return cfg


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the configuration.

    *path* (``--config``) wins over ``$ARCHITECT_CLEANUP_CONFIG``, which wins over
    ``/etc/architect-cleanup/config.toml``. A path given explicitly must exist; when the default
    file is missing the built-in defaults apply (they are the shipped file's values)."""
    explicit = explicit_path(path, environ)
    chosen = explicit or DEFAULT_CONFIG
    if explicit and not Path(chosen).is_file():
        raise ConfigError([Problem(chosen, "no such configuration file")])
    docs = read_trusted(chosen)
    try:
        return parse_config(merged(docs), tuple(name for name, _ in docs))
    except ConfigError as exc:
        if len(docs) < 2:
            raise
        # with drop-ins, name the file that holds each unknown key
        raise ConfigError([where_set(p, docs) for p in exc.problems], exc.source) from None


def with_overrides(cfg: Config, *, keep: int | Mapping[str, int] | None = None,
                   log_days: float | None = None, task_days: float | None = None,
                   error_days: float | None = None, prompt_days: float | None = None
                   ) -> Config:
    """The CLI's and the API's overrides applied to a configuration, read by the same
    :class:`~architect_cleanup.settings.tables.Table` as the file (ages in days instead of
    duration strings).

    *keep* is one number for every environment (``--keep``) or a per-environment table merged
    over the configured retention. It means what the seed's --keep meant: the newest N, for
    this run, in place of whatever policy the environment (or every one) has."""
    problems: list[Problem] = []
    changes: dict[str, Any] = {}
    if keep is not None:
        changes["backups"] = _keep_override(cfg.backups, keep, problems)
    ages = {"logs": log_days, "tasks": task_days, "errors": error_days, "prompts": prompt_days}
    for name, value in ages.items():
        if value is not None:
            read = Table({"max_age": value}, name, problems).read({"max_age": days})
            changes[name] = dataclasses.replace(getattr(cfg, name), **read)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(cfg, **changes)


def _keep_override(b: BackupsConfig, keep: int | Mapping[str, int],
                   problems: list[Problem]) -> BackupsConfig:
    """``--keep N`` (every environment) or a table of environments: the newest N, in place of
    the policy of each environment it names."""
    wanted = dict.fromkeys(b.retention, keep) if isinstance(keep, int) else dict(keep)
    number = kept("would delete every backup", typed=False)
    read = Table(wanted, "backups.retention", problems).read(dict.fromkeys(wanted, number))
    policies = {} if isinstance(keep, int) else {
        env: p for env, p in b.policy.items() if env not in read}
    return dataclasses.replace(b, retention=MappingProxyType(dict(b.retention) | read),
                               policy=MappingProxyType(policies))
