"""How a configuration key declares itself, and the one reader of a TOML table against them.

A section is a frozen dataclass whose fields say how they are read: :func:`key` (a value
and its :data:`~architect_cleanup.settings.readers.Reader`), :func:`section` (a table read
the same way) or :func:`nested` (a table or array of tables with its own parser). Every
problem goes to one shared list, so the whole file is reported at once; a refused value is
left out and the default stands."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from architect_cleanup.settings.problems import Problem, type_name
from architect_cleanup.settings.readers import Invalid, Reader

#: What a missing key reads as (None is no TOML value, but absence must differ from any).
MISSING: Any = object()


@dataclass(frozen=True)
class Scope:
    """What a nested parser may look at besides its table: the configured environments and
    the values its section has read so far."""

    environments: tuple[str, ...]
    read: Mapping[str, Any]


#: A nested table's parser: (the section's table, the key, the scope) -> the value.
Nested = Callable[["Table", str, Scope], Any]


def key(read: Reader, default: Any, help: str) -> Any:
    """One configuration key: how its value is read, its default and what it is for."""
    return _field(default, {"read": read, "help": help})


def nested(parse: Nested, default: Any, help: str) -> Any:
    """A key holding a table or an array of tables, read by *parse*."""
    return _field(default, {"read": parse, "nested": True, "help": help})


def section(cls: type[Any], help: str) -> Any:
    """One ``[section]`` table of the configuration, read by :func:`parse_section`."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "help": help})


def _field(default: Any, meta: dict[str, Any]) -> Any:
    if isinstance(default, Mapping):
        frozen = MappingProxyType(dict(default))
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Table:
    """One TOML table being read: its problems go to a shared list (every problem at once)."""

    def __init__(self, raw: Any, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        if raw is MISSING or raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.error("", f"must be a table, not {type_name(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.key(key) if key else self.path, message))

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.raw.get(key, MISSING)

    def table(self, key: str) -> Table:
        return Table(self.get(key), self.key(key), self.problems)

    def read(self, readers: Mapping[str, Reader]) -> dict[str, Any]:
        """The keys of *readers* this table has (and was not asked for before), each read;
        a refused value is recorded and left out, so the default stands."""
        out: dict[str, Any] = {}
        for name, read in readers.items():
            if name in self.seen:
                continue
            raw = self.get(name)
            if raw is MISSING:
                continue
            try:
                out[name] = read(raw)
            except ValueError as exc:
                for message in exc.messages if isinstance(exc, Invalid) else (str(exc),):
                    self.error(name, message)
                if isinstance(exc, Invalid) and exc.value is not None:
                    out[name] = exc.value
        return out

    def require(self, keys: Iterable[str], message: str = "missing (required)") -> None:
        for k in keys:
            if k not in self.raw:
                self.error(k, message)

    def finish(self) -> None:
        """Every key of the table that nothing asked for is a problem (with a guess)."""
        known = sorted(self.seen)
        for k in sorted(set(self.raw) - self.seen):
            close = difflib.get_close_matches(k, known, n=1, cutoff=0.6)
            self.error(k, "unknown key" + (f" (did you mean {close[0]}?)" if close else ""))


def readers_of(cls: type[Any], names: Iterable[str] | None = None) -> dict[str, Reader]:
    """The declared readers of *cls*'s plain keys (of *names* only, in that order)."""
    declared = {f.name: f.metadata["read"] for f in dataclasses.fields(cls)
                if "read" in f.metadata and not f.metadata.get("nested")}
    return declared if names is None else {n: declared[n] for n in names}


def nested_of(cls: type[Any]) -> dict[str, Nested]:
    """The parsers of *cls*'s nested keys and sections, in declaration order."""
    out: dict[str, Nested] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested"):
            out[f.name] = f.metadata["read"]
        elif "section" in f.metadata:
            out[f.name] = _section_parser(f.metadata["section"])
    return out


def _section_parser(cls: type[Any]) -> Nested:
    return lambda t, name, scope: parse_section(cls, t.table(name), scope.environments)


def parse_section(cls: type[Any], t: Table, environments: tuple[str, ...]) -> Any:
    """One section: the keys in ``READ_FIRST`` (the order problems are listed in), its
    nested tables, then its other keys; a key the file has and none declares is a problem."""
    values: dict[str, Any] = {}
    scope = Scope(environments, values)
    parsers = nested_of(cls)
    for name in getattr(cls, "READ_FIRST", ()):
        if name in parsers:
            values[name] = parsers.pop(name)(t, name, scope)
        else:
            values |= t.read(readers_of(cls, (name,)))
    for name, parse in parsers.items():
        values[name] = parse(t, name, scope)
    values |= t.read(readers_of(cls))
    t.finish()
    return cls(**values)


def each_entry(t: Table, name: str, not_a_list: str | None = None) -> Iterator[Table]:
    """The tables of the array *name* (``[[rules.files]]``); an entry that is no table is
    recorded as such and skipped. *not_a_list*: the problem when *name* is no array."""
    raw = t.get(name)
    if raw is MISSING:
        return
    if not isinstance(raw, list):
        t.error(name, not_a_list or
                f"must be an array of tables ([[{t.key(name)}]]), not {type_name(raw)}")
        return
    for i, item in enumerate(raw):
        sub = Table(item, f"{t.key(name)}[{i}]", t.problems)
        if isinstance(item, dict):
            yield sub


def entries(cls: type[Any]) -> Nested:
    """An array of tables of *cls* (``REQUIRED``: the keys each must have): each entry read by
    its declared keys, then its nested ones; an entry with a problem is left out."""
    def parse(t: Table, name: str, scope: Scope) -> tuple[Any, ...]:
        out = []
        for sub in each_entry(t, name):
            before = len(t.problems)
            values = sub.read(readers_of(cls))
            for field, parse_nested in nested_of(cls).items():
                values[field] = parse_nested(sub, field, Scope(scope.environments, values))
            sub.finish()
            sub.require(cls.REQUIRED)
            if len(t.problems) == before:
                out.append(cls(**values))
        return tuple(out)
    return parse
