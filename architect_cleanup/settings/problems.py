"""A configuration problem as a value, and the error that carries every problem found."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from architect_cleanup.fs import display


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


def type_name(v: Any) -> str:
    """How a problem names the type of a TOML value: "a number", "a list", ..."""
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)
