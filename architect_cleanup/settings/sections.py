"""The sections of the built-in file and row targets (logs, temp, database, tasks, errors,
prompts) and ``[safety]``, the rules above every target."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from architect_cleanup.fs import is_forbidden_root
from architect_cleanup.settings.readers import (
    IDENT_RX,
    RELATIVE_DIRS,
    boolean,
    choice,
    duration,
    file_patterns,
    identifier,
    optional,
    relative,
    strings,
    text,
    whole,
)
from architect_cleanup.settings.tables import key
from architect_cleanup.settings.units import BATCH_SIZE, WORKERS

#: The statuses of a finished task or prompt.
FINISHED = ("completed", "cancelled", "failed")


def _tmp_dir(v: str) -> str | None:
    if not v.startswith("/"):
        return f"{v!r}: must be an absolute path (or \"\" for none)"
    return f"{v!r}: a system directory may not be cleaned" if is_forbidden_root(v) else None


@dataclass(frozen=True)
class LogsConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("dirs", "tmp_dir")

    enabled: bool = key(boolean, True, "remove old log files")
    max_age: timedelta = key(duration(), timedelta(days=30), "older logs go")
    dirs: tuple[str, ...] = key(RELATIVE_DIRS, ("data", "logs"), "where, below root")
    patterns: tuple[str, ...] = key(file_patterns(), ("*.log", "*.log.*"), "names of logs")
    tmp_dir: str = key(text(optional(_tmp_dir)), "/tmp",  # noqa: S108
                       "our own logs at its top level; \"\" for none")
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
    dirs: tuple[str, ...] = key(RELATIVE_DIRS, (".",), "where, below root")
    patterns: tuple[str, ...] = key(file_patterns(nonempty=False),
                                    ("*.tmp", "*.temp", "*.cache", "*.pyc"), "file names")
    dir_patterns: tuple[str, ...] = key(file_patterns(nonempty=False),
                                        ("__pycache__", ".pytest_cache"),
                                        "directories removed whole")


@dataclass(frozen=True)
class DatabaseConfig:
    paths: tuple[str, ...] = key(strings(nonempty=False, what="path", each=relative),
                                 ("data/{env}/architect.db", "data/assigner/assigner.db"),
                                 "the dashboard's databases, below root")
    naive_timezone: str = key(text(choice("utc", "local")), "utc",
                              "the zone of timestamps stored without one")
    batch_size: int = key(whole(*BATCH_SIZE), 1000, "most rows changed per transaction")
    busy_timeout: timedelta = key(duration(), timedelta(seconds=5),
                                  "how long to wait for the dashboard's lock")


TABLE_NAMES = strings(rx=IDENT_RX, what="table name")


@dataclass(frozen=True)
class TasksConfig:
    enabled: bool = key(boolean, True, "remove old finished tasks")
    max_age: timedelta = key(duration(), timedelta(days=7), "older finished tasks go")
    tables: tuple[str, ...] = key(TABLE_NAMES, ("task_queue", "tasks"), "tables to try")
    statuses: tuple[str, ...] = key(strings(), FINISHED, "statuses of finished tasks")


@dataclass(frozen=True)
class ErrorsConfig:
    enabled: bool = key(boolean, True, "remove old error rows")
    max_age: timedelta = key(duration(), timedelta(days=30), "older errors go")
    table: str = key(text(identifier), "errors", "the errors table")


@dataclass(frozen=True)
class PromptsConfig:
    enabled: bool = key(boolean, True, "archive old finished prompts")
    max_age: timedelta = key(duration(), timedelta(days=14), "older finished prompts go")
    tables: tuple[str, ...] = key(TABLE_NAMES, ("prompts", "assigner_prompts"), "tables to try")
    statuses: tuple[str, ...] = key(strings(), FINISHED, "statuses of finished prompts")


@dataclass(frozen=True)
class SafetyConfig:
    exclude_dirs: tuple[str, ...] = key(file_patterns(nonempty=False),
                                        ("*chrome_profile*", "*chrome-profile*"),
                                        "directories never entered")
    skip_open_files: bool = key(boolean, True, "keep files a process holds open")
    workers: int = key(whole(*WORKERS), 4,
                       "threads that check and delete files (1: one at a time; a dry run: one, "
                       "and one listing ahead)")
