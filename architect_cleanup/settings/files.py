"""The configuration's files: the main file, then ``config.d/*.toml`` in name order, each
refused unless only root (or this user) can write it; merged table by table. Also each
file's own document and which file each value comes from (the panel's configuration page)."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from architect_cleanup.fs import display, untrusted
from architect_cleanup.settings.problems import ConfigError, Problem

DEFAULT_CONFIG = "/etc/architect-cleanup/config.toml"
ENV_VAR = "ARCHITECT_CLEANUP_CONFIG"
#: The origin of a value no file sets.
DEFAULT_ORIGIN = "default"
#: A document read from one file: (the file's name, its TOML document).
Layer = tuple[str, dict[str, Any]]


def explicit_path(path: str | None, environ: Mapping[str, str] | None) -> str | None:
    """The configuration file named by ``--config`` (*path*) or ``$ARCHITECT_CLEANUP_CONFIG``,
    None when neither names one."""
    environ = os.environ if environ is None else environ
    return path or environ.get(ENV_VAR) or None


def chosen_path(path: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The main configuration file :func:`load_config` reads (it may not exist)."""
    return explicit_path(path, environ) or DEFAULT_CONFIG


def config_files(path: str) -> Iterator[Path]:
    """The main file (if present) then its ``config.d/*.toml`` drop-ins in name order."""
    main = Path(path)
    if main.is_file():
        yield main
    dropins = main.parent / "config.d"
    if dropins.is_dir():
        yield from sorted(p for p in dropins.glob("*.toml") if p.is_file())


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge *over* into a copy of *base*: tables key by key, other values replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def merged(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The layers' documents merged as :func:`load_config` merges them."""
    out: dict[str, Any] = {}
    for _, doc in layers:
        out = merge(out, dict(doc))
    return out


# --- reading the files to load them ----------------------------------------------------------


def read_trusted(chosen: str) -> list[Layer]:
    """Each file of the configuration whose main file is *chosen*, with its TOML document;
    ConfigError for a file that cannot be read, is not TOML, or that others could write
    (a drop-in's directory too)."""
    dropins = Path(chosen).parent / "config.d"
    docs = []
    for f in config_files(chosen):
        if f.parent == dropins:
            _check_trusted(dropins, "its directory")
        docs.append((str(f), _load_trusted(f)))
    return docs


def _load_trusted(f: Path) -> dict[str, Any]:
    try:
        with _open_trusted(f) as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(f), f"not valid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(f), f"not valid TOML: not UTF-8 text ({exc.reason} "
                                           f"at byte {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(f), f"cannot read: {exc.strerror}")]) from None


def _refused(path: Path, why: str, what: str = "") -> ConfigError:
    return ConfigError([f"{display(str(path))}: refused{f' ({what})' if what else ''}: {why}; "
                        "anyone who can write it could change what this tool removes"])


def _cannot_read(path: Path, exc: OSError) -> ConfigError:
    return ConfigError([f"{display(str(path))}: cannot read: {exc.strerror}"])


def _check_trusted(path: Path, what: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    why = untrusted(st)
    if why is not None:
        raise _refused(path, why, what)


def _open_trusted(f: Path) -> BinaryIO:
    """A configuration file opened for reading, once it is found to be a regular file only
    root or this user can write (checked on the open descriptor); ConfigError else."""
    try:
        fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise _cannot_read(f, exc) from None
    st = os.fstat(fd)
    why = "not a regular file" if not stat.S_ISREG(st.st_mode) else untrusted(st)
    if why is not None:
        os.close(fd)
        raise _refused(f, why)
    return os.fdopen(fd, "rb")


def where_set(problem: str, docs: list[Layer]) -> str:
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


# --- each file's own values (not validated) --------------------------------------------------


def read_layers(path: str | None = None, environ: Mapping[str, str] | None = None
                ) -> list[Layer]:
    """Each file :func:`load_config` merges, in its order, with its TOML document (not
    validated). Raises ConfigError for a file that cannot be read or is not TOML."""
    out: list[Layer] = []
    for f in config_files(chosen_path(path, environ)):
        try:
            with f.open("rb") as fh:
                out.append((str(f), tomllib.load(fh)))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Problem(str(f), f"not valid TOML: {exc}")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([Problem(str(f), f"cannot read: {exc}")]) from None
    return out


def leaves(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, value)`` of every value of a TOML document that is not a table."""
    for k, v in doc.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            yield from leaves(v, name)
        else:
            yield name, v


def origins(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """``dotted.key`` -> the file whose value the merge keeps (the last one setting it);
    keys no file sets are absent (their origin is :data:`DEFAULT_ORIGIN`)."""
    out: dict[str, str] = {}
    for source, doc in layers:
        for name, _ in leaves(doc):
            out[name] = source
    return out
