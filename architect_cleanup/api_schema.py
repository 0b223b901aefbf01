"""The REST API's request body: strict JSON parsing and a small explicit schema (no Flask here).

``POST /api/system/cleanup`` takes the seed's body, every key optional::

    {"dry_run": true, "backup_retention": 10, "log_age_days": 30, "task_age_days": 7,
     "error_age_days": 30, "prompt_age_days": 14, "targets": ["backups", "logs"]}

- ``dry_run``: ``true`` or ``false``; only a literal ``false`` cleans. Missing means a dry run.
- ``backup_retention``: newest N backups to keep, one whole number for every environment or an
  object ``{"prod": 15, "default": 5}`` over the configured table (1 .. 100000; names must be
  configured environments or ``default``).
- ``*_age_days``: whole days, 1 .. 36500 (override ``logs``/``tasks``/``errors``/``prompts``
  ``max_age``).
- ``targets``: a non-empty list of distinct target names (default: every target).

Validation is strict on purpose — a typo must not silently turn a safety rule off: unknown
keys, ``null``, wrong types, a boolean given as a number (``"dry_run": 0`` is not a dry run) and
a number out of range are all refused, and every offending key is reported at once. The body
must be one JSON object (an empty body counts as ``{}``), UTF-8, without ``NaN``/``Infinity``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from architect_cleanup.config import MAX_DAYS, MIN_KEEP

#: The largest body accepted (HTTP 413 above it).
MAX_BODY = 64 * 1024
#: The API's own cap on a retention number (the configuration file has none).
MAX_KEEP = 100_000
#: The most characters of a client's value (a number, a key, a name) a message echoes.
ECHO_LIMIT = 40

AGE_KEYS = ("log_age_days", "task_age_days", "error_age_days", "prompt_age_days")
KEYS = ("dry_run", "backup_retention", *AGE_KEYS, "targets")


class RequestInvalid(ValueError):
    """The body breaks the schema; ``problems`` are ``key: message``, ``keys`` the keys."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.keys = list(dict.fromkeys(key for key, _ in problems))
        self.problems = [f"{key}: {message}" for key, message in problems]
        super().__init__("invalid request: " + "; ".join(self.problems))


@dataclass(frozen=True)
class CleanupRequest:
    """A validated POST body; :meth:`worker_args` are CleanupWorker's keyword arguments."""

    dry_run: bool = True
    backup_retention: int | Mapping[str, int] | None = None
    log_age_days: int | None = None
    task_age_days: int | None = None
    error_age_days: int | None = None
    prompt_age_days: int | None = None
    targets: tuple[str, ...] | None = None

    def worker_args(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "backup_retention": self.backup_retention,
            "log_age_days": self.log_age_days,
            "task_age_days": self.task_age_days,
            "error_age_days": self.error_age_days,
            "prompt_age_days": self.prompt_age_days,
            "only": self.targets,
        }


def echo(value: Any) -> str:
    """A client's value as a message quotes it: ``repr`` (control characters escaped), cut
    to ECHO_LIMIT characters, so a 4,000-digit number or a 60 KiB key is not sent back (and
    logged) in full. A huge integer is described, not converted (Python refuses to turn one
    of more than 4,300 digits into text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    return _cut(repr(value))


def brief(value: Any) -> Any:
    """A parsed body with every number and text cut as :func:`echo` cuts them (for the log's
    copy of the parameters: a body may hold a 4,000-digit number or a 60 KiB key)."""
    if isinstance(value, dict):
        return {_cut(str(k)): brief(v) for k, v in value.items()}
    if isinstance(value, list):
        return [brief(v) for v in value[:20]]
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return echo(value)
    if isinstance(value, str):
        return _cut(value)
    return value


def _cut(text: str) -> str:
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT - 3] + "..."


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_body(raw: bytes) -> Any:
    """The JSON document in *raw* (``{}`` when empty); RequestInvalid when it is not JSON."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestInvalid([("body", "not UTF-8 text")]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestInvalid([("body", "JSON nested too deeply")]) from None
    except ValueError as exc:
        raise RequestInvalid([("body", f"not valid JSON ({exc})")]) from None


# --- the schema: one small checker per key, each returning (value, problem) ------------------

Check = Callable[[Any], tuple[Any, str | None]]


def _whole(value: Any, lo: int, hi: int) -> tuple[int | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float):
            return None, f"must be a whole number, not {echo(value)}"
        return None, f"must be a whole number, not {json_type(value)}"
    if value < lo:
        return None, f"{echo(value)} is below the minimum of {lo}"
    if value > hi:
        return None, f"{echo(value)} is above the maximum of {hi}"
    return value, None


def _check_dry_run(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int | float):
        return None, (f"must be true or false, not the number {echo(value)} "
                      "(a real run needs a literal false)")
    return None, f"must be true or false, not {json_type(value)}"


def _check_days(value: Any) -> tuple[Any, str | None]:
    return _whole(value, 1, MAX_DAYS)


def _retention_checker(environments: Collection[str]) -> Check:
    allowed = [*environments, "default"]

    def check(value: Any) -> tuple[Any, str | None]:
        if isinstance(value, dict):
            table: dict[str, int] = {}
            bad: list[str] = []
            for env, n in value.items():
                if env not in allowed:
                    bad.append(f"{echo(env)} is not a configured environment "
                               f"(choose from {', '.join(allowed)})")
                    continue
                keep, problem = _whole(n, MIN_KEEP, MAX_KEEP)
                if problem is not None:
                    bad.append(f"{env}: {problem}")
                elif keep is not None:
                    table[env] = keep
            return (None, "; ".join(bad)) if bad else (table, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, ("must be a whole number or an object of environment: number, "
                          f"not {json_type(value)}")
        return _whole(value, MIN_KEEP, MAX_KEEP)

    return check


def _targets_checker(known: Collection[str]) -> Check:
    def check(value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None, f"must be an array of target names, not {json_type(value)}"
        if not value:
            return None, "must name at least one target"
        unknown = [v for v in value if v not in known]
        if unknown:
            return None, (f"unknown target(s) {', '.join(echo(u) for u in unknown[:5])} "
                          f"(choose from {', '.join(known)})")
        if len(set(value)) != len(value):
            return None, "names a target twice"
        return tuple(value), None

    return check


def validate(doc: Any, *, environments: Collection[str],
             targets: Collection[str]) -> CleanupRequest:
    """Check a parsed body against the schema; RequestInvalid lists every offending key.

    *environments* are the configured ones (for a per-environment ``backup_retention``),
    *targets* the registered target names."""
    if not isinstance(doc, dict):
        raise RequestInvalid([("body", f"must be a JSON object, not {json_type(doc)}")])
    checks: dict[str, Check] = {
        "dry_run": _check_dry_run,
        "backup_retention": _retention_checker(environments),
        **{key: _check_days for key in AGE_KEYS},
        "targets": _targets_checker(list(targets)),
    }
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in doc.items():
        check = checks.get(key)
        if check is None:
            problems.append((_cut(key), f"unknown key (known: {', '.join(KEYS)})"))
            continue
        checked, problem = check(value)
        if problem is not None:
            problems.append((key, problem))
        else:
            values[key] = checked
    if problems:
        raise RequestInvalid(problems)
    return CleanupRequest(**values)
