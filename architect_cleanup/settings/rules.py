"""``[rules]`` (the operator's own file and table targets) and ``[orphans]`` (uploads no row
references): arrays of tables, each entry read by its declared keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from architect_cleanup.settings.readers import (
    NAME_RX,
    RELATIVE_DIRS,
    Invalid,
    absolute,
    all_of,
    boolean,
    duration,
    file_patterns,
    identifier,
    is_system_dir,
    named,
    no_dotdot,
    one_of,
    relative,
    strings,
    system_tree_of,
    text,
    whole,
)
from architect_cleanup.settings.tables import (
    Scope,
    Table,
    each_entry,
    entries,
    key,
    nested,
    readers_of,
)
from architect_cleanup.settings.units import parse_size

#: What a file rule's ``type`` and ``action`` and a table rule's ``action`` may say.
FILE_TYPES = ("file", "dir", "any")
FILE_ACTIONS = ("delete", "compress")
TABLE_ACTIONS = ("delete", "archive")

_RULE_NAME = text(named(NAME_RX, "rule name"))


def _not_system(v: str) -> str | None:
    if is_system_dir(v):
        return f"{v!r}: a system directory may not be cleaned"
    if (tree := system_tree_of(v)) is not None:
        return f"{v!r}: lies in the system tree {tree}, which belongs to the system"
    return None


#: ``rules.allowed_outside_root``: absolute, and never a system directory or tree (the
#: checks ``root`` gets).
_outside_dir = all_of(absolute, no_dotdot, _not_system)


@dataclass(frozen=True)
class FileRule:
    """One ``[[rules.files]]`` entry: files (or directories) below *dirs* whose names match
    *patterns*, judged per directory: the newest ``keep_newest`` stay, then whatever is older
    than ``max_age`` or beyond ``max_total_size`` (newest first) goes."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "dirs", "patterns")

    name: str = key(_RULE_NAME, "", "the rule's name")
    # relative to root, or absolute (allowed when also listed in rules.allowed_outside_root,
    # checked with the whole configuration)
    dirs: tuple[str, ...] = key(strings(what="directory", each=no_dotdot), (),
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

    column: str = key(text(identifier), "", "a column of the table")
    values: tuple[str | int, ...] = ()

    def to_config(self) -> dict[str, Any]:
        return {"column": self.column, "in": list(self.values)}


def _condition_values(v: Any) -> tuple[str | int, ...]:
    if (not isinstance(v, list) or not v
            or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in v)):
        raise Invalid("must be a non-empty list of strings or whole numbers")
    return tuple(v)


def _where(t: Table, name: str, _scope: Scope) -> tuple[Condition, ...]:
    """A table rule's ``where = [{column = ..., in = [...]}, ...]``."""
    out = []
    for sub in each_entry(t, name, 'must be a list of tables: '
                                   '[{column = "status", in = ["done"]}]'):
        read = sub.read(readers_of(Condition) | {"in": _condition_values})
        sub.finish()
        sub.require(("column", "in"))
        if "column" in read and "in" in read:
            out.append(Condition(read["column"], read["in"]))
    return tuple(out)


@dataclass(frozen=True)
class TableRule:
    """One ``[[rules.tables]]`` entry: rows of *table* in *database* whose *time_column* is
    older than *max_age* (and that match every ``where`` condition) are deleted, or archived
    by setting ``archive_column = 1`` (and ``archive_time_column`` = now), as prompts are."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "database", "table", "time_column",
                                           "max_age")

    name: str = key(_RULE_NAME, "", "the rule's name")
    database: str = key(text(), "", "one of database.paths")
    table: str = key(text(identifier), "", "the table")
    time_column: str = key(text(identifier), "", "the column whose age decides")
    max_age: timedelta = key(duration(), timedelta(days=30), "older rows go")
    where: tuple[Condition, ...] = nested(_where, (), "conditions: [{column, in = [...]}]")
    action: str = key(one_of(*TABLE_ACTIONS), "delete", "delete, or archive")
    archive_column: str = key(text(identifier), "", "archive: the column set to 1")
    archive_time_column: str = key(text(identifier), "", "archive: the column set to now")


@dataclass(frozen=True)
class RulesConfig:
    """``[rules]``: user-defined targets run through the same engine as the built-in ones."""

    enabled: bool = key(boolean, True, "run the [[rules.files]] and [[rules.tables]]")
    allowed_outside_root: tuple[str, ...] = key(
        strings(nonempty=False, what="directory", each=_outside_dir), (),
        "absolute directories a file rule may name (never a system tree)")
    files: tuple[FileRule, ...] = nested(entries(FileRule), (), "[[rules.files]]")
    tables: tuple[TableRule, ...] = nested(entries(TableRule), (), "[[rules.tables]]")


@dataclass(frozen=True)
class UploadReference:
    """``[[orphans.references]]``: a column whose values name upload files."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("table", "column")

    table: str = key(text(identifier), "", "the table")
    column: str = key(text(identifier), "", "the column holding a file's name or path")


@dataclass(frozen=True)
class OrphansConfig:
    """``[orphans]``: uploads no row references, moved to a quarantine first."""

    READ_FIRST: ClassVar[tuple[str, ...]] = ("enabled", "dirs", "database")

    enabled: bool = key(boolean, False, "quarantine unreferenced uploads")
    dirs: tuple[str, ...] = key(RELATIVE_DIRS, ("data/{env}/uploads",),
                                "upload directories, below root")
    database: str = key(text(), "data/{env}/architect.db",
                        "one of database.paths: where the references are")
    references: tuple[UploadReference, ...] = nested(
        entries(UploadReference), (), "[[orphans.references]] table/column")
    grace: timedelta = key(duration(), timedelta(days=1), "younger files are never orphans")
    quarantine_dir: str = key(text(relative), "data/.architect-cleanup-quarantine",
                              "below root, on the uploads' file system")
    quarantine_for: timedelta = key(duration(), timedelta(days=7),
                                    "quarantined files are deleted after this")
