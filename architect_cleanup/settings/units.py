"""Durations, sizes and free-space floors as the configuration spells them, and their bounds.

Each parser raises ValueError saying what is wrong with the text."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from architect_cleanup.retention import SIZE_UNITS, FreeFloor, Span
from architect_cleanup.settings.problems import type_name

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

_DURATION_RX = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_FULL_RX = re.compile(r"(?:\d+\s*[smhdw]\s*)+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RX = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:iB)?)?", re.IGNORECASE)


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


def format_duration(td: timedelta) -> str:
    """The shortest exact spelling of a duration in the config's syntax."""
    secs = int(td.total_seconds())
    if secs == 0:
        return "0s"
    for unit in ("w", "d", "h", "m"):
        if secs % _UNITS[unit] == 0:
            return f"{secs // _UNITS[unit]}{unit}"
    return f"{secs}s"


def parse_size(value: object) -> int:
    """``"500M"``, ``"5G"``, ``"1.5T"`` (binary: 1G = 1024³ bytes; ``"5GiB"`` too) or a whole
    number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str):
        n = _size_text(value)
    else:
        raise ValueError(f"must be a size string like \"5G\", not {type_name(value)}")
    if n <= 0:
        raise ValueError("must be larger than 0")
    return n


def _size_text(value: str) -> int:
    m = _SIZE_RX.fullmatch(value.strip())
    if not m:
        hint = (" (binary units: write \"5G\" or \"5GiB\")"
                if value.strip().upper().endswith("B") else "")
        raise ValueError(f"{value!r} is not a size (use e.g. \"500M\", \"5G\", \"1.5T\"){hint}")
    f = float(m.group(1)) * SIZE_UNITS.get((m.group(2) or "").upper(), 1)
    if not math.isfinite(f) or f >= 2**63:
        raise ValueError(f"{value!r} is too large")
    return int(f)


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
