"""Races: an unprivileged attacker process changes the tree *while* real runs walk it.

The attacker (tests/reliability/attacker.py, running as its own account) owns the dashboard's
data and flips directories for symlinks to victims outside the root in a tight loop, or
replaces old files with young ones under the same name. Real runs (CleanupWorker, dry_run
False) repeat meanwhile. Victims are watched with inotify for the whole race and compared
with their snapshot after every run: not one may change, or even be opened.

The quick mode races for a few seconds each; ``make stress`` (RELIABILITY_LONG=1) for minutes.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbkit import digest  # tests/unit (on sys.path: conftest)

from architect_cleanup import fs
from architect_cleanup import worker as worker_mod
from architect_cleanup.config import Config, parse_config
from architect_cleanup.notify import Notifier
from architect_cleanup.state import StateStore
from architect_cleanup.stats import CleanupStats
from architect_cleanup.worker import CleanupWorker

import kit
from conftest import needs_root
from kit import DAY, FIGURES, Arena, Attacker, Inotify, User

NOW = time.time()
OLD = NOW - 90 * DAY
RACE_SECONDS = kit.scale(6, 150)
WATCH = (kit.IN_OPEN | kit.IN_ACCESS | kit.IN_MODIFY | kit.IN_ATTRIB | kit.IN_CREATE
         | kit.IN_DELETE | kit.IN_MOVED_FROM | kit.IN_MOVED_TO | kit.IN_DELETE_SELF)


def config(arena: Arena, **sections: Any) -> Config:
    raw: dict[str, Any] = {"root": str(arena.root), "dry_run": False,
                           "logs": {"tmp_dir": str(arena.tmp)}}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(raw)


def run_once(arena: Arena, cfg: Config, only: list[str], **kw: Any) -> CleanupStats:
    w = CleanupWorker(dry_run=False, config=cfg, only=only, source="python",
                      lock_file=arena.lock, state=StateStore(str(arena.state)),
                      notifier=Notifier({}), **kw)
    return w.run_cleanup()


class Race:
    """The attacker racing repeated runs; victims checked after every run."""

    def __init__(self, name: str, arena: Arena, user: User, spec: dict[str, Any],
                 victims: list[Path], mode: str = "flip") -> None:
        self.name = name
        self.arena = arena
        self.victims = victims
        self.before = kit.snapshot(*victims)
        self.ino = Inotify()
        for v in victims:
            self.ino.watch_tree(v, WATCH)
        self.ino.start()
        import json
        self.attacker = Attacker(user, mode, json.dumps(spec))
        self.runs = 0
        self.errors = 0
        self.removed = 0
        self.changed: list[str] = []

    def repeat(self, once: Callable[[], CleanupStats], seconds: float = RACE_SECONDS) -> None:
        """Runs until time is up. inotify sees every run (the victims are not even read by
        this process meanwhile); the snapshot is compared once the attacker has stopped."""
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                stats = once()
                self.runs += 1
                self.removed += sum(t.removed for t in stats.targets.values())
                self.errors += sum(len(t.errors) for t in stats.targets.values())
                if self.writes() or not self.attacker.alive():
                    break
        finally:
            iterations = self.attacker.stop()
            self.events = self.ino.stop()
            self.changed = kit.changes(self.before, kit.snapshot(*self.victims))
            FIGURES.race(self.name, iterations, self.runs)
            FIGURES.attack(f"race: {self.name}", iterations)
            FIGURES.outside(self.changed)

    def writes(self) -> list[tuple[str, str, str]]:
        return [e for e in self.ino.events if e[2] not in ("OPEN", "ACCESS")]

    def reads(self) -> list[tuple[str, str, str]]:
        return [e for e in self.events if e[2] in ("OPEN", "ACCESS")]

    def check(self, *, reads_allowed: frozenset[str] = frozenset()) -> None:
        """Nothing outside changed; nothing was even read, but the files in *reads_allowed*
        (a database SQLite opened in the race window and was refused before any statement)."""
        assert self.changed == [], self.changed[:10]
        assert self.writes() == [], self.writes()[:10]
        reads = [e for e in self.reads()
                 if os.path.join(e[0], e[1]).rstrip("/") not in reads_allowed]
        assert reads == [], reads[:10]
        assert self.runs >= 3 and self.attacker.iterations >= 100, \
            (self.runs, self.attacker.iterations)


def _victims(v: Path) -> None:
    for sub in ("logs", "__pycache__", "cache"):
        for i in range(6):
            kit.touch(v / sub / f"v{i}.log", OLD, b"victim\n")
            kit.touch(v / sub / f"v{i}.pyc", OLD, b"victim\n")
            kit.touch(v / sub / f"v{i}.tmp", OLD, b"victim\n")
        kit.touch(v / sub / "inner" / "deep.log", OLD, b"victim\n")
    for p in v.rglob("*"):
        kit.age(p, OLD)


@needs_root
def test_directories_swapped_for_symlinks_during_real_runs_never_redirect_a_delete(
        arena: Arena, attacker_user: User) -> None:
    """The attacker flips directories at depth 1, 2 and 4 and a cache directory the temp
    target removes whole; every flip puts a symlink to a victim where a directory was."""
    v, data = arena.victim, arena.root / "data"
    _victims(v)
    dirs = {
        data / "l1": v / "logs",
        data / "x" / "l2": v,
        data / "x" / "y" / "z" / "l4": v / "cache",
        arena.root / "app" / "__pycache__": v / "__pycache__",
    }
    files = {d: ([f"a{i}.log" for i in range(20)] if "pycache" not in str(d)
                 else [f"m{i}.pyc" for i in range(20)]) for d in dirs}
    for d, names in files.items():
        for n in names:
            kit.touch(d / n, OLD, b"attacker's own\n")
        kit.touch(d / "sub" / "s.log", OLD)
        kit.touch(d / "sub" / "s.tmp", OLD)
    kit.age(arena.root / "app" / "__pycache__", OLD)
    kit.chown_tree(data, attacker_user.uid, attacker_user.gid)
    kit.chown_tree(arena.root / "app", attacker_user.uid, attacker_user.gid)
    spec = {"pairs": [{"dir": str(d), "victim": str(t), "files": files[d], "mtime": OLD,
                       "old_dir": "pycache" in str(d)} for d, t in dirs.items()]}
    cfg = config(arena)
    race = Race("directory swapped for a symlink (logs, temp)", arena, attacker_user, spec,
                [v])
    race.repeat(lambda: run_once(arena, cfg, ["logs", "temp"]))
    race.check()
    assert race.removed > 0  # the runs did real work meanwhile


@needs_root
def test_a_backup_directory_swapped_for_a_symlink_during_real_runs_loses_nothing_outside(
        arena: Arena, attacker_user: User) -> None:
    v, data = arena.victim, arena.root / "data"
    for i in range(12):
        kit.touch(v / "backups" / f"architect_2020010{i % 9}_00000{i % 10}_{i}.db", OLD - i,
                  b"victim backup\n")
    bdir = data / "prod" / "backups"
    names = [f"architect_2021{m:02d}01_000000.db" for m in range(1, 13)]
    for i, n in enumerate(names):
        kit.touch(bdir / n, OLD + i * DAY, b"own")
    kit.chown_tree(data, attacker_user.uid, attacker_user.gid)
    spec = {"pairs": [{"dir": str(bdir), "victim": str(v / "backups"), "files": names,
                       "mtime": OLD},
                      {"dir": str(data / "prod"), "victim": str(v)}]}
    cfg = config(arena, backups={"retention": {"prod": 2}, "min_age": "0s"})
    race = Race("backup directory swapped for a symlink", arena, attacker_user, spec, [v])
    race.repeat(lambda: run_once(arena, cfg, ["backups"]))
    race.check()


@needs_root
def test_a_database_directory_swapped_for_a_symlink_never_changes_the_victim_database(
        arena: Arena, attacker_user: User) -> None:
    """data/prod (the attacker's) flips to a symlink to a directory holding a victim database
    full of rows the rules would delete; the runs purge prod and record themselves in every
    activity_log."""
    v, data = arena.victim, arena.root / "data"
    kit.make_main_db(v / "proddir" / "architect.db", NOW, doomed=200, keep=20,
                     errors_doomed=50, errors_keep=5)
    kit.make_main_db(data / "prod" / "architect.db", NOW, doomed=200, keep=20,
                     errors_doomed=50, errors_keep=5)
    victim_digest = digest(v / "proddir" / "architect.db")
    kit.chown_tree(data, attacker_user.uid, attacker_user.gid)
    spec = {"pairs": [{"dir": str(data / "prod"), "victim": str(v / "proddir")}]}
    cfg = config(arena, environments=["prod"], database={"busy_timeout": "1s"})
    race = Race("database directory swapped for a symlink", arena, attacker_user, spec,
                [v / "proddir"])
    race.repeat(lambda: run_once(arena, cfg, ["tasks", "errors"]))
    # SQLite opens a database by path and reads its header inside sqlite3_open, and its
    # -wal and -shm at the first read; when the swap lands in those moments the product sees
    # the wrong files and refuses them before any write (dbfile.py), working as the database's
    # owner meanwhile, who may read (but not write) the victim's files. SQLite also opens
    # the database's directory by path to fsync it after it deletes a -wal or -journal (by
    # path too: as the owner, that unlink is refused in a directory that is not the owner's).
    # Reading is all that may happen.
    victim_db = str(v / "proddir" / "architect.db")
    race.check(reads_allowed=frozenset({str(v / "proddir")} | {
        victim_db + s for s in ("", "-wal", "-shm", "-journal")}))
    FIGURES.measure("victim database opened by SQLite and refused (race window)",
                    len([e for e in race.reads() if e[2] == "OPEN"]))
    FIGURES.measure("database runs refused for a swap", race.errors)
    assert digest(v / "proddir" / "architect.db") == victim_digest
    rows = kit.read_rows(data / "prod" / "architect.db")
    assert rows.integrity == "ok"
    assert rows.tasks_keep == 20 and rows.errors_keep == 5
    FIGURES.lost(20 - rows.tasks_keep + 5 - rows.errors_keep)


@needs_root
def test_files_replaced_between_scan_and_unlink_by_young_ones_survive(
        arena: Arena, attacker_user: User) -> None:
    """The attacker writes an old log, then renames a young one over it after a random
    moment; the young file must survive whatever the run saw. In a directory another user can
    write the product renames each file to a private name before checking it one last time
    and unlinking it (see the README of this suite)."""
    d = arena.root / "data" / "churn"
    d.mkdir(parents=True)
    # A control set the attacker never touches, in the same (attacker-owned, so shared)
    # directory: old logs the first run must remove through the private rename, whatever the
    # race does to the r*.log names. (How many of those the runs catch old is luck: the
    # attacker leaves each old for at most 3 ms.)
    control = [f"control{i}.log" for i in range(10)]
    for n in control:
        kit.touch(d / n, OLD, b"old, never replaced")
    kit.chown_tree(arena.root / "data", attacker_user.uid, attacker_user.gid)
    spec = {"dir": str(d), "old_mtime": OLD, "young_mtime": NOW + 60, "seed": 7}
    cfg = config(arena)
    race = Race("file replaced between scan and unlink", arena, attacker_user, spec,
                [arena.victim], mode="replace")
    race.repeat(lambda: run_once(arena, cfg, ["logs"]))
    race.check()
    young = race.attacker.info["young"]
    lost = [n for n in young if not (d / n).exists()]
    FIGURES.measure("young replacements deleted in the unlink window", len(lost))
    assert lost == [], f"{len(lost)} of {len(young)} young files deleted: {lost[:5]}"
    left = [n for n in control if os.path.lexists(d / n)]
    assert left == [], f"old control files not removed: {left}"
    assert race.removed >= len(control)  # the runs did real work meanwhile


# --- deterministic: the replacement at the exact moment -------------------------------------


class _Replacer(fs.OpenFiles):
    """The open-file check runs right before each unlink: the fault is injected there, at
    the exact moment between the judgement and the deletion."""

    action: Callable[[os.stat_result], None] = staticmethod(lambda st: None)

    def is_open(self, st: os.stat_result) -> bool:
        type(self).action(st)
        return False


@pytest.fixture
def replacer(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Replacer]]:
    monkeypatch.setattr(worker_mod, "OpenFiles", _Replacer)
    yield _Replacer
    _Replacer.action = staticmethod(lambda st: None)


def _by_inode(d: Path) -> dict[int, str]:
    return {os.lstat(d / n).st_ino: n for n in os.listdir(d)}


@pytest.mark.parametrize("replacement", ["young file", "same-mtime file", "directory",
                                         "symlink to victim", "fifo", "hard link elsewhere",
                                         "vanished"])
def test_an_item_replaced_between_judgement_and_unlink_is_left_alone(
        arena: Arena, replacer: type[_Replacer], replacement: str) -> None:
    d = arena.root / "data"
    for i in range(6):
        kit.touch(d / f"f{i}.log", OLD, b"old")
    kit.touch(arena.victim / "target.log", OLD, b"victim")
    before_victim = kit.snapshot(arena.victim)
    names = _by_inode(d)
    done: list[str] = []

    def act(st: os.stat_result) -> None:
        name = names.get(st.st_ino)
        if name is None or name not in ("f1.log", "f4.log") or name in done:
            return
        done.append(name)
        p = d / name
        os.unlink(p)
        if replacement == "young file":
            kit.touch(p, NOW, b"young")
        elif replacement == "same-mtime file":
            kit.touch(p, st.st_mtime, b"same mtime, new inode")
        elif replacement == "directory":
            p.mkdir()
        elif replacement == "symlink to victim":
            p.symlink_to(arena.victim / "target.log")
            os.utime(p, (OLD, OLD), follow_symlinks=False)
        elif replacement == "fifo":
            os.mkfifo(p)
            kit.age(p, OLD)
        elif replacement == "hard link elsewhere":
            os.link(arena.victim / "target.log", p)

    replacer.action = staticmethod(act)
    stats = run_once(arena, config(arena), ["logs"])
    FIGURES.fault(f"item replaced between judgement and unlink: {replacement}", 2)
    if replacement == "hard link elsewhere":  # the test's own links: kept by the run
        for n in ("f1.log", "f4.log"):
            assert os.path.samefile(d / n, arena.victim / "target.log")
            os.unlink(d / n)
    assert kit.changes(before_victim, kit.snapshot(arena.victim),
                       [os.stat(arena.victim / "target.log").st_ino]) == []
    logs = stats.targets["logs"]
    assert done == ["f1.log", "f4.log"] or sorted(done) == ["f1.log", "f4.log"]
    assert logs.removed == 4
    assert logs.skipped == 2
    for n in ("f1.log", "f4.log"):
        p = d / n
        assert os.path.lexists(p) == (replacement not in ("vanished", "hard link elsewhere"))
        if replacement == "young file":
            assert p.read_bytes() == b"young"
        if replacement == "fifo":
            assert stat.S_ISFIFO(os.lstat(p).st_mode)
    if replacement != "vanished":
        assert len(logs.errors) == 2 and all("changed since" in e for e in logs.errors)
    assert stats.success
