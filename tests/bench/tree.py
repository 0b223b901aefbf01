"""The benchmark's file tree: deterministic, so deleted files can be put back cheaply.

The tree looks like a busy dashboard install: job directories under ``data/{env}/jobs`` with
job logs, rotated logs, results, temp files and caches; service logs under ``logs/`` by month;
Python sources under ``src/`` with ``__pycache__`` directories; uploads under
``data/{env}/uploads``. About 100 small files (100-3000 bytes, one block each) per directory,
four to five levels deep, with a few files in non-leaf directories too.

Every file is one of three kinds, and the kinds are what make the contestants' work equal:

* ``old``: older than 30 days (31.5 to 400 days) *and* named so that a rule takes it —
  ``*.log``/``*.log.*`` under ``data/`` and ``logs/``, ``*.tmp``/``*.temp``/``*.cache``, or a
  ``*.pyc`` in a ``__pycache__`` directory (which then holds only old files and is itself
  old, so it is removed whole). About 30% of all files.
* ``young``: 0.1 to 29 days old: logs, sources, results, images. No rule takes them.
* ``fresh``: temp files a few minutes old (re-stamped before every measured run, so a long
  benchmark never ages them past the 1 hour rule).

So "older than 30 days" (systemd-tmpfiles' only rule: age, by mtime) selects exactly the files
the log and temp rules select, and a real run of any contestant must remove exactly the ``old``
files and the ``__pycache__`` directories, nothing else. The generator is driven by one seed
per directory, so :func:`restore` re-creates exactly what a run deleted, and reports anything
that should have been deleted but was not.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DAY = 86400.0
#: Bump when the layout changes: a cached tree of another version is rebuilt.
VERSION = 3
#: Share of files that are old (and deletable).
OLD_SHARE = 0.3
#: A cached tree is reused only while its young files (at most 29 days old when built) stay
#: clear of the 30 day limit, with the benchmark's own duration to spare.
REUSE_FOR = 0.5 * DAY

ENVS = ("prod", "qa", "dev", "test")
# unit index % 5 -> category
CATEGORIES = ("jobs", "jobs", "logs", "src", "uploads")

# (stem, ext) choices per category for old (deletable) and young files; fresh files are temp
OLD_NAMES = {
    "jobs": [("job", ".log")] * 5 + [("job", ".log.1"), ("job", ".log.2.gz")]
            + [("part", ".tmp")] * 2 + [("render", ".cache")],
    "logs": [("app", ".log")] * 3 + [("app", ".log.1"), ("access", ".log.3.gz")] * 3
            + [("worker", ".log.7")],
    "uploads": [("chunk", ".tmp")] * 5 + [("upload", ".temp")] * 2 + [("thumb", ".cache")] * 3,
}
YOUNG_NAMES = {
    "jobs": [("job", ".log")] * 4 + [("result", ".json")] * 4 + [("output", ".txt")] * 3,
    "logs": [("app", ".log")] * 6 + [("access", ".log.1")] * 3 + [("notes", ".txt")],
    "src": [("mod", ".py")] * 8 + [("data", ".json")] * 2,
    "uploads": [("image", ".png")] * 6 + [("meta", ".json")] * 3 + [("doc", ".pdf")],
}
FRESH_NAMES = [("work", ".tmp"), ("spool", ".temp"), ("state", ".cache")]
FRESH_SHARE = {"jobs": 0.08, "logs": 0.0, "src": 0.05, "uploads": 0.10}


@dataclass(slots=True)
class File:
    name: str
    size: int
    kind: str  # old | young | fresh
    age: float  # seconds before the tree's "now" (fresh: before the re-stamp)


@dataclass(slots=True)
class Unit:
    """One directory's worth of files (plus, for sources, its ``__pycache__``)."""

    dir: str
    files: list[File] = field(default_factory=list)
    cache: list[File] = field(default_factory=list)  # in dir/__pycache__ (all old)


def _unit_dir(cat: str, j: int) -> str:
    env = ENVS[j % 4]
    k = j // 4
    if cat == "jobs":
        return f"data/{env}/jobs/{k // 20:03d}/{k % 20:02d}"
    if cat == "uploads":
        return f"data/{env}/uploads/{k // 20:03d}/{k % 20:02d}"
    if cat == "logs":
        svc, m = j % 16, j // 16
        return f"logs/svc{svc:02d}/{2000 + m // 12}/{m % 12 + 1:02d}"
    return f"src/pkg{j // 50:03d}/mod{j % 50:02d}"


def units(total: int, seed: int = 1) -> Iterator[Unit]:
    """The tree of *total* files, one directory at a time (the same every time)."""
    made = 0
    u = 0
    per_cat = dict.fromkeys(CATEGORIES, 0)
    while made < total:
        cat = CATEGORIES[u % len(CATEGORIES)]
        j = per_cat[cat]
        per_cat[cat] += 1
        rng = random.Random(f"{seed}:{u}")
        u += 1
        unit = Unit(_unit_dir(cat, j))
        n = min(rng.randint(60, 140), total - made)
        # a few files one level up (a non-leaf directory with files of its own)
        n_up = 2 if cat == "jobs" and j % 80 < 4 and n > 2 else 0
        for i in range(n):
            r = rng.random()
            size = rng.randint(100, 3000)
            if r < OLD_SHARE:
                age = rng.uniform(31.5, 400) * DAY
                if cat == "src":
                    unit.cache.append(File(f"mod_{i}.cpython-311.pyc", size, "old", age))
                    continue
                stem, ext = rng.choice(OLD_NAMES[cat])
                f = File(f"{stem}_{i}{ext}", size, "old", age)
            elif r < OLD_SHARE + FRESH_SHARE[cat]:
                stem, ext = rng.choice(FRESH_NAMES)
                f = File(f"{stem}_{i}{ext}", size, "fresh", rng.uniform(0, 600))
            else:
                stem, ext = rng.choice(YOUNG_NAMES[cat])
                f = File(f"{stem}_{i}{ext}", size, "young", rng.uniform(0.1, 29) * DAY)
            if i < n_up:
                f.name = "up_" + f.name
            unit.files.append(f)
        made += n
        yield unit


def _split_up(unit: Unit) -> tuple[str, list[File], list[File]]:
    """The unit's parent directory and the files that live there ("up_*") vs in the unit."""
    up = [f for f in unit.files if f.name.startswith("up_")]
    own = [f for f in unit.files if not f.name.startswith("up_")]
    return os.path.dirname(unit.dir), up, own


@dataclass
class Counts:
    files: int = 0
    old: int = 0
    fresh: int = 0
    dirs: int = 0
    caches: int = 0  # __pycache__ directories (removed whole)
    bytes_old: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Tree:
    """A generated tree of *total* files at *path* (``path/root`` is the dashboard root)."""

    def __init__(self, path: Path, total: int, seed: int = 1) -> None:
        self.path = path.resolve()
        self.root = self.path / "root"
        self.total = total
        self.seed = seed
        self.stamp = path / "stamp.json"
        self.now = 0.0
        self.counts = Counts()
        self._plan_cache: list[tuple[str, list[File], list[File]]] | None = None

    # --- building ----------------------------------------------------------------------------

    def ensure(self, log: Callable[[str], None] = print) -> str:
        """Reuse a complete cached tree, or build it; returns what was done."""
        meta = self._read_stamp()
        if meta is not None:
            self.now = meta["now"]
            self.counts = Counts(**meta["counts"])
            missing = self.restore()
            if self.count_entries() == (self.counts.files, self.counts.dirs):
                return f"reused (restored {missing.files:,} files)"
            log(f"  cached tree at {self.root} is not complete; rebuilding")
        if self.path.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)], check=True)
        self.root.mkdir(parents=True)
        t0 = time.monotonic()
        self.now = time.time()
        self.counts = self._build()
        os.sync()
        self.stamp.write_text(json.dumps({
            "version": VERSION, "total": self.total, "seed": self.seed, "now": self.now,
            "counts": self.counts.to_dict()}))
        return f"built in {time.monotonic() - t0:.0f}s"

    def _read_stamp(self) -> dict | None:  # type: ignore[type-arg]
        try:
            meta = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return None
        if (meta.get("version"), meta.get("total"), meta.get("seed")) != (
                VERSION, self.total, self.seed):
            return None
        if time.time() - meta.get("now", 0) > REUSE_FOR:
            return None
        return meta  # type: ignore[no-any-return]

    def _build(self) -> Counts:
        c = Counts()
        made_dirs: set[str] = set()
        for unit in units(self.total, self.seed):
            parent, up, own = _split_up(unit)
            for d in (unit.dir,):
                p = self.root / d
                if d not in made_dirs:
                    p.mkdir(parents=True, exist_ok=True)
                    # count every directory level once
                    part = d
                    while part and part not in made_dirs:
                        made_dirs.add(part)
                        part = os.path.dirname(part)
            self._write_files(self.root / parent, up, c, only_old=False)
            self._write_files(self.root / unit.dir, own, c, only_old=False)
            if unit.cache:
                self._write_cache(unit, c)
        c.dirs = len(made_dirs) + c.caches
        return c

    def _write_files(self, dirpath: Path, files: list[File], c: Counts, *,
                     only_old: bool) -> int:
        """Create *files* in *dirpath*; with *only_old*, just the old ones, reporting any that
        still exist (a contestant failed to delete it) in ``c.old``."""
        if not files:
            return 0
        made = 0
        dfd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for f in files:
                if only_old and f.kind != "old":
                    continue
                try:
                    fd = os.open(f.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                                 dir_fd=dfd)
                except FileExistsError:
                    if only_old:
                        c.old += 1  # should have been deleted
                        continue
                    raise
                try:
                    os.write(fd, b"x" * f.size)
                    t = self.now - f.age
                    os.utime(fd, (t, t))
                finally:
                    os.close(fd)
                made += 1
                if not only_old:
                    c.files += 1
                    if f.kind == "old":
                        c.old += 1
                        c.bytes_old += f.size
                    elif f.kind == "fresh":
                        c.fresh += 1
        finally:
            os.close(dfd)
        return made

    def _write_cache(self, unit: Unit, c: Counts | None) -> None:
        p = self.root / unit.dir / "__pycache__"
        p.mkdir()
        scratch = Counts()
        self._write_files(p, unit.cache, scratch, only_old=False)
        if c is not None:
            c.files += scratch.files
            c.old += scratch.old
            c.bytes_old += scratch.bytes_old
            c.caches += 1
        t = self.now - 40 * DAY  # the cache directory itself is old: removed whole
        os.utime(p, (t, t))

    # --- between runs ------------------------------------------------------------------------

    @dataclass
    class Restored:
        files: int = 0  # re-created (they had been deleted)
        stray: int = 0  # old files or caches still present: not deleted by the contestant

    def _plan(self) -> list[tuple[str, list[File], list[File]]]:
        """Per directory: the files a run deletes and the fresh files; computed once."""
        if self._plan_cache is None:
            plan = []
            for unit in units(self.total, self.seed):
                parent, up, own = _split_up(unit)
                for d, files in ((parent, up), (unit.dir, own)):
                    old = [f for f in files if f.kind == "old"]
                    fresh = [f for f in files if f.kind == "fresh"]
                    if old or fresh:
                        plan.append((d, old, fresh))
                if unit.cache:
                    plan.append((unit.dir + "/__pycache__", unit.cache, []))
            self._plan_cache = plan
        return self._plan_cache

    def restore(self) -> Tree.Restored:
        """Put back every old file and ``__pycache__`` a real run deleted.

        Counts in ``stray`` what should have been deleted but was still there (a cache
        directory counts once, not its files)."""
        res = Tree.Restored()
        for d, old, _fresh in self._plan():
            if not old:
                continue
            if d.endswith("/__pycache__"):
                p = self.root / d
                try:
                    p.mkdir()
                except FileExistsError:
                    res.stray += 1
                    continue
                res.files += self._write_files(p, old, Counts(), only_old=False)
                t = self.now - 40 * DAY
                os.utime(p, (t, t))
                continue
            c = Counts()
            res.files += self._write_files(self.root / d, old, c, only_old=True)
            res.stray += c.old
        return res

    def refresh_fresh(self) -> int:
        """Re-stamp the fresh temp files to a few minutes old (they must stay under 1 hour)."""
        now = time.time()
        n = 0
        for d, _old, fresh in self._plan():
            for f in fresh:
                t = now - f.age
                os.utime(self.root / d / f.name, (t, t))
                n += 1
        return n

    def count_entries(self) -> tuple[int, int]:
        """(files, directories) below the root, the root itself not counted."""
        out = subprocess.run(["find", str(self.root), "-mindepth", "1", "-printf", "%y"],
                             check=True, capture_output=True).stdout
        return out.count(b"f"), out.count(b"d")

    def check_after_delete(self) -> tuple[bool, str]:
        """After a real run: did it delete exactly the old files and the caches?

        What remains is a subset of the tree; when none of the old files or caches remains
        (``restore`` finds none of them present) and the number of files and directories left
        is the number of young and fresh ones, what remains is exactly the rest."""
        files, dirs = self.count_entries()
        want_files = self.counts.files - self.counts.old
        want_dirs = self.counts.dirs - self.counts.caches
        restored = self.restore()
        ok = (files, dirs) == (want_files, want_dirs) and restored.stray == 0
        why = (f"left {files:,} files and {dirs:,} dirs (want {want_files:,} and {want_dirs:,}); "
               f"{restored.stray} old entries not deleted; restored {restored.files:,}")
        return ok, why
