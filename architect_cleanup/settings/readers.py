"""Value kinds: each reads one TOML value, or raises :class:`Invalid` saying what is wrong.

A :data:`Reader` takes the raw value and returns what the configuration holds; a
:data:`Check` looks at a string and returns the message when it is wrong (None when it is
fine), so :func:`text` and :func:`strings` can combine them."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from architect_cleanup.fs import is_forbidden_root, system_tree
from architect_cleanup.settings.problems import type_name
from architect_cleanup.settings.units import MAX_DAYS, MAX_DURATION_S, MIN_KEEP, parse_duration

#: Environment, rule and channel names.
NAME_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: SQL identifiers (tables, columns).
IDENT_RX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HTTP_URL_RX = re.compile(r"https?://[^\s/]+(/\S*)?")


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


# --- readers ---------------------------------------------------------------------------------


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid(f"must be true or false, not {type_name(v)}")
    return v


def whole(lo: int | None = None, hi: int | None = None) -> Reader:
    """A whole number within [lo, hi]."""
    def read(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise Invalid(f"must be a whole number, not {type_name(v)}")
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
            raise Invalid("must be a whole number" + (f", not {type_name(v)}" if typed else ""))
        if v < MIN_KEEP:
            raise Invalid(f"{v} {consequence}; must be >= {MIN_KEEP} "
                          "(the newest backup is always kept)")
        return v
    return read


def text(*checks: Check) -> Reader:
    """A string that passes every check, in order."""
    first_problem = all_of(*checks)

    def read(v: Any) -> str:
        if not isinstance(v, str):
            raise Invalid(f"must be a string, not {type_name(v)}")
        problem = first_problem(v)
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
            raise Invalid(f"must be a duration string like \"{example}\", not {type_name(v)}")
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


def one_of(*choices: str) -> Reader:
    """Exactly one of *choices* (a rule's ``type`` and ``action``)."""
    def read(v: Any) -> str:
        if v not in choices:
            raise Invalid(f"{v!r}: must be one of {', '.join(repr(c) for c in choices)}")
        return str(v)
    return read


def refuse(message: str) -> Reader:
    """Whatever the value, *message* (a key that names no configured environment)."""
    def read(_v: Any) -> Any:
        raise Invalid(message)
    return read


def root_dir(v: Any) -> str:
    """``root``: absolute, neither a system directory nor inside a system tree."""
    root: str = text(absolute)(v)
    if is_system_dir(root):
        raise Invalid(f"{root!r}: refusing to clean a system directory; "
                      "point root at the dashboard's install directory")
    if (tree := system_tree_of(root)) is not None:
        raise Invalid(f"{root!r}: lies in the system tree {tree}, which belongs to the "
                      "system and its packages; point root at the dashboard's install "
                      "directory (/srv/<name>, or exactly /opt/<name>)")
    return os.path.normpath(root)


def environment_names(v: Any) -> tuple[str, ...]:
    """``environments``: unique names; duplicates are refused but still stand for the checks
    that follow (a key naming one of them is not also "not a configured environment")."""
    envs: tuple[str, ...] = strings(rx=NAME_RX, what="environment name")(v)
    if len(set(envs)) != len(envs):
        raise Invalid("names must be unique", value=envs)
    return envs


def not_configured(environments: tuple[str, ...]) -> str:
    return f"not a configured environment (environments = {list(environments)})"


# --- checks of a string ----------------------------------------------------------------------


def all_of(*checks: Check) -> Check:
    """The first problem any of *checks* finds, in order."""
    def check(v: str) -> str | None:
        for one in checks:
            problem = one(v)
            if problem is not None:
                return problem
        return None
    return check


def optional(check: Check) -> Check:
    """*check*, except that ``""`` (none) is fine."""
    return lambda v: check(v) if v else None


def choice(*choices: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in choices else (
            f"{v!r}: must be " + " or ".join(f'"{c}"' for c in choices))
    return check


def named(rx: re.Pattern[str], what: str) -> Check:
    """A name that *rx* matches whole (``"'x y' is not a valid rule name"``)."""
    return lambda v: None if rx.fullmatch(v) else f"{v!r} is not a valid {what}"


identifier = named(IDENT_RX, "name")


def no_dotdot(v: str) -> str | None:
    return f"{v!r}: '..' is not allowed" if ".." in v.split("/") else None


def relative(v: str) -> str | None:
    """Paths in the config are relative to root; '..' could escape it."""
    return f"{v!r}: must be relative to root" if v.startswith("/") else no_dotdot(v)


#: Directories below root (an empty list: none).
RELATIVE_DIRS = strings(nonempty=False, what="directory", each=relative)


def absolute(v: str) -> str | None:
    return None if v.startswith("/") else f"{v!r}: must be an absolute path"


def per_env(v: str) -> str | None:
    return None if "{env}" in v else f"{v!r} must contain {{env}} (one directory per environment)"


def http_url(purpose: str = "") -> Check:
    """An http:// or https:// URL; *purpose* is said after the message."""
    return lambda v: (None if HTTP_URL_RX.fullmatch(v)
                      else f"{v!r}: must be an http:// or https:// URL{purpose}")


def is_system_dir(path: str) -> bool:
    """A system directory itself, as written or once symlinks are resolved."""
    return is_forbidden_root(path) or is_forbidden_root(os.path.realpath(path))


def system_tree_of(path: str) -> str | None:
    """The system tree *path* lies in, as written or once symlinks are resolved."""
    return system_tree(path) or system_tree(os.path.realpath(path))
