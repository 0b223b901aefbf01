"""The configuration form: which settings the panel may change, its drop-in, validation.

The panel writes one drop-in, ``config.d/60-panel.toml``, and only the settings of
:func:`allowed_fields` (dry run, retention per environment with the calendar rules and the
free-space floor, the ages). The drop-in holds the values that differ from the files merged
before it (the defaults, ``config.toml``, lower drop-ins); a drop-in named after it still
wins, and the form says so. Validation is :func:`~architect_cleanup.config.parse_config` of
the merged result, the parser ``architect-cleanup config check`` runs, so the form and the
command accept and refuse the same values with the same messages.

Form values arrive as JSON: ``dry_run`` a boolean, every other field a string as typed
(``""`` for "not set"). Counts written as digits become numbers; anything else is handed to
the parser as typed, which names what is wrong with it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from architect_cleanup.config import (
    DEFAULT_ORIGIN,
    Config,
    ConfigError,
    Problem,
    chosen_path,
    leaves,
    merged,
    origins,
    parse_config,
    read_layers,
)
from architect_cleanup.retention import COUNT_RULES

#: The panel's drop-in, in ``config.d/`` beside the main file.
DROPIN = "60-panel.toml"
COUNT_KEYS = tuple(k for k, _ in COUNT_RULES)
#: ``[backups.policy.<env>]`` keys the form shows, in its order.
POLICY_FIELDS = (*COUNT_KEYS, "keep_within", "min_free_space", "keep_min")
#: Whole numbers (digits typed become TOML integers).
_WHOLE = frozenset({*COUNT_KEYS, "keep_min"})
AGE_FIELDS = ("backups.min_age", "logs.max_age", "tasks.max_age", "errors.max_age",
              "prompts.max_age")
#: Labels of the form's fields (the page's and the error messages').
LABELS = {"keep_last": "Keep last", "keep_hourly": "Hourly", "keep_daily": "Daily",
          "keep_weekly": "Weekly", "keep_monthly": "Monthly", "keep_yearly": "Yearly",
          "keep_within": "Keep all within", "min_free_space": "Free-space floor",
          "keep_min": "Keep at least (floor)", "backups.min_age": "Backups younger than this "
          "are kept", "logs.max_age": "Logs older than this go",
          "tasks.max_age": "Finished tasks older than this go",
          "errors.max_age": "Resolved errors older than this go",
          "prompts.max_age": "Finished prompts older than this are archived"}


def allowed_fields(environments: Iterable[str]) -> list[str]:
    """The settings the form may change (dotted keys), in the form's order."""
    out = ["dry_run"]
    for env in (*environments, "default"):
        out.append(f"backups.retention.{env}")
        out.extend(f"backups.policy.{env}.{k}" for k in POLICY_FIELDS)
    out.extend(AGE_FIELDS)
    return out


@dataclass
class Layers:
    """The configuration files split around the panel's drop-in."""

    main: str
    dropin: str
    lower: list[tuple[str, dict[str, Any]]]
    panel: dict[str, Any] | None
    upper: list[tuple[str, dict[str, Any]]]

    @classmethod
    def read(cls, path: str | None = None) -> Layers:
        main = chosen_path(path)
        dropin = str(Path(main).parent / "config.d" / DROPIN)
        lower: list[tuple[str, dict[str, Any]]] = []
        upper: list[tuple[str, dict[str, Any]]] = []
        panel = None
        for source, doc in read_layers(main):
            if source == dropin:
                panel = doc
            elif source == main or Path(source).name < DROPIN:
                lower.append((source, doc))
            else:
                upper.append((source, doc))
        return cls(main, dropin, lower, panel, upper)

    def with_panel(self, doc: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
        mine = [(self.dropin, dict(doc))] if doc else []
        return [*self.lower, *mine, *self.upper]

    @property
    def all(self) -> list[tuple[str, dict[str, Any]]]:
        return self.with_panel(self.panel)


def _default_leaves() -> dict[str, Any]:
    return dict(leaves(Config().to_dict()))


def environments(layers: Layers) -> tuple[str, ...]:
    """The environments the merged files name (the default ones when that is not a list of
    strings: the parser reports it)."""
    envs = merged(layers.all).get("environments")
    if isinstance(envs, list) and envs and all(isinstance(e, str) for e in envs):
        return tuple(dict.fromkeys(envs))
    return Config.environments


def form_values(layers: Layers) -> dict[str, Any]:
    """Each allowed field's effective value as the form shows it (``""`` when unset)."""
    effective = dict(leaves(merged(layers.all)))
    defaults = _default_leaves()
    out: dict[str, Any] = {}
    for name in allowed_fields(environments(layers)):
        value = effective.get(name, defaults.get(name))
        if name == "dry_run":
            out[name] = value if isinstance(value, bool) else True
        else:
            out[name] = "" if value is None else str(value)
    return out


@dataclass
class Outcome:
    """A proposed form: the drop-in it makes, the configuration it gives, what is wrong."""

    dropin: dict[str, Any]
    config: Config | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.problems

    def to_dict(self, form_fields: Iterable[str]) -> dict[str, Any]:
        known = set(form_fields)
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for p in self.problems:
            if p.key in known:
                by_field.setdefault(p.key, []).append(p.message)
            elif p.key.startswith("backups.policy.") and p.key.count(".") == 2:
                by_field.setdefault(p.key, []).append(p.message)  # the environment's rules
            else:
                general.append(str(p))
        return {"ok": self.ok, "errors": by_field, "general": general,
                "warnings": self.warnings, "dropin": tomli_w.dumps(self.dropin)}


def _typed(name: str, value: Any) -> Any:
    """A form value as the TOML value the drop-in would hold (None: not set)."""
    if name == "dry_run":
        return value
    if not isinstance(value, str):
        return value  # the parser names the wrong type
    text = value.strip()
    if not text:
        return None
    last = name.rsplit(".", 1)[-1]
    if (last in _WHOLE or name.startswith("backups.retention.")) and text.isdigit():
        return int(text)
    return text


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, last = dotted.split(".")
    for t in tables:
        doc = doc.setdefault(t, {})
    doc[last] = value


def propose(layers: Layers, settings: Mapping[str, Any]) -> Outcome:
    """The drop-in the form's *settings* make, validated merged with every other file."""
    allowed = allowed_fields(environments(layers))
    problems = [Problem(k, "not a setting the panel may change") for k in settings
                if k not in allowed]
    below = _default_leaves() | dict(leaves(merged(layers.lower)))
    below_origin = origins(layers.lower)
    dropin: dict[str, Any] = {}
    for name in allowed:
        if name not in settings:
            continue
        value = _typed(name, settings[name])
        before = below.get(name)
        if value is None:
            if before is None:
                continue
            if name.rsplit(".", 1)[-1] in COUNT_KEYS:
                value = 0  # "no such rule", as a drop-in can say it
            else:
                problems.append(Problem(name, "cannot be left empty: "
                                        f"{below_origin.get(name, DEFAULT_ORIGIN)} sets it"))
                continue
        if value == before and type(value) is type(before):
            continue
        _set(dropin, name, value)
    if problems:
        return Outcome(dropin, problems=problems)
    layered = layers.with_panel(dropin)
    try:
        cfg = parse_config(merged(layered), tuple(s for s, _ in layered))
    except ConfigError as exc:
        return Outcome(dropin, problems=list(exc.found))
    where = origins(layered)
    warnings = [f"{name}: {where[name]} is read after {DROPIN} and sets it: the panel's value "
                "has no effect" for name, _ in leaves(dropin)
                if where.get(name, layers.dropin) != layers.dropin]
    return Outcome(dropin, cfg, warnings=warnings)


def write_dropin(layers: Layers, outcome: Outcome, header: str) -> str | None:
    """Replace the panel's drop-in with *outcome*'s atomically (a temporary file in the same
    directory, fsync'd, renamed over it); no drop-in at all when it would be empty. Returns
    the previous content (None: there was none), for :func:`restore`."""
    path = Path(layers.dropin)
    try:
        previous: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        previous = None
    if not outcome.dropin:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return previous
    _atomic_write(path, header + tomli_w.dumps(outcome.dropin))
    return previous


def restore(layers: Layers, previous: str | None) -> None:
    """Put the drop-in back as it was before :func:`write_dropin`."""
    path = Path(layers.dropin)
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        _atomic_write(path, previous)


def _atomic_write(path: Path, content: str) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".60-panel.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: [old, new]}`` between two drop-ins (None: not in that one)."""
    old = dict(leaves(before or {}))
    new = dict(leaves(after))
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)}
