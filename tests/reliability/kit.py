"""Tools of the reliability suite: an arena outside pytest's private tmp dir (so an
unprivileged attacker can reach it), victim snapshots, an inotify witness, the attacker's
account, dashboard databases whose rows say what must become of them, and the CLI as a
subprocess.

Nothing here is a mock: the product runs as it runs in production (the real CLI in a process
of its own, or CleanupWorker in the test process where many quick runs are needed), against
real files, real SQLite databases, real mounts and a real unprivileged user.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import pwd
import select
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
DATA = TESTS / "data"
VENV_PY = str(REPO / ".venv" / "bin" / "python")
#: Debian's interpreter for the attacker (an unprivileged user must be able to run it).
SYSTEM_PY = "/usr/bin/python3"
#: Where the package is staged for an unprivileged run (see :func:`staged_package`).
_STAGED: list[str] = []

DAY = 86400.0
HOUR = 3600.0

#: ``make stress`` (RELIABILITY_LONG=1) raises every iteration count.
LONG = os.environ.get("RELIABILITY_LONG", "") not in ("", "0")
IS_ROOT = os.geteuid() == 0


def scale(quick: int, long: int) -> int:
    """An iteration count: *quick* for ``make test``, *long* for ``make stress``."""
    return long if LONG else quick


# --- the figures the suite reports ----------------------------------------------------------


@dataclass
class Figures:
    """Counters the tests record; printed at the end of the session (see conftest.py)."""

    attacks: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    races: Counter[str] = field(default_factory=Counter)      # name -> attacker iterations
    race_runs: Counter[str] = field(default_factory=Counter)  # name -> product runs during it
    outside_changed: int = 0
    rows_lost: int = 0
    special_opened: int = 0
    measures: dict[str, Any] = field(default_factory=dict)

    def attack(self, name: str, n: int = 1) -> None:
        self.attacks[name] += n

    def fault(self, name: str, n: int = 1) -> None:
        self.faults[name] += n

    def race(self, name: str, iterations: int, runs: int) -> None:
        self.races[name] += iterations
        self.race_runs[name] += runs

    def outside(self, changes: Iterable[object]) -> None:
        self.outside_changed += len(list(changes))

    def lost(self, n: int) -> None:
        self.rows_lost += n

    def measure(self, name: str, value: Any) -> None:
        self.measures[name] = value

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "long" if LONG else "quick",
            "attacks_tried": sum(self.attacks.values()),
            "faults_injected": sum(self.faults.values()),
            "attacks": dict(sorted(self.attacks.items())),
            "faults": dict(sorted(self.faults.items())),
            "race_iterations": dict(sorted(self.races.items())),
            "race_runs": dict(sorted(self.race_runs.items())),
            "files_outside_root_changed": self.outside_changed,
            "special_files_opened": self.special_opened,
            "rows_lost": self.rows_lost,
            "measures": self.measures,
        }


FIGURES = Figures()


# --- the arena ------------------------------------------------------------------------------


@dataclass
class Arena:
    """A test's world, under /tmp with mode 0755 all the way (pytest's own tmp dir is 0700,
    which would keep the attacker out): the dashboard root, victims outside it, a stand-in
    for /tmp, and the service's state and runtime directories."""

    base: Path
    root: Path
    victim: Path
    tmp: Path
    state: Path
    run: Path
    config: Path
    mounts: list[Path] = field(default_factory=list)

    @property
    def lock(self) -> str:
        return str(self.run / "cleanup.lock")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a CLI run in this arena."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID",
                            "PYTEST_CURRENT_TEST")}
        env.update(STATE_DIRECTORY=str(self.state), RUNTIME_DIRECTORY=str(self.run),
                   ARCHITECT_CLEANUP_CONFIG=str(self.config), PYTHONDONTWRITEBYTECODE="1",
                   ARCHITECT_CLEANUP_TEXTFILE_DIR=str(self.state) + "-textfile")
        env.update(extra)
        return env

    def write_config(self, **sections: Any) -> Path:
        """The configuration file: this arena's root and tmp, plus *sections*."""
        raw: dict[str, Any] = {"root": str(self.root), "dry_run": False}
        logs = {"tmp_dir": str(self.tmp)}
        for key, value in sections.items():
            if key == "logs":
                logs.update(value)
            else:
                raw[key] = value
        raw["logs"] = logs
        # Trees here hold placeholder backups, which verification would rightly call corrupt;
        # build_world's are real databases and turn it on.
        backups = dict(raw.get("backups", {}))
        backups.setdefault("verify", {"check": "off"})
        raw["backups"] = backups
        self.config.write_text(tomli_w.dumps(raw))
        return self.config

    def mount(self, kind: str, target: Path, source: str | None = None,
              options: str = "") -> None:
        """Mount (as root) and remember it for the clean-up."""
        target.mkdir(parents=True, exist_ok=True)
        args = ["mount"]
        if kind == "bind":
            args += ["--bind", str(source), str(target)]
        else:
            args += ["-t", kind] + (["-o", options] if options else []) + [kind, str(target)]
        subprocess.run(args, check=True)
        self.mounts.append(target)


def make_arena() -> Arena:
    base = Path(tempfile.mkdtemp(prefix="ac-rel-", dir="/tmp"))
    base.chmod(0o755)
    root = base / "srv" / "architect"
    (root / "data").mkdir(parents=True)
    (base / "srv").chmod(0o755)
    victim = base / "victim"
    victim.mkdir()
    tmp = base / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    arena = Arena(base, root, victim, tmp, base / "state", base / "run", base / "config.toml")
    arena.write_config()
    return arena


def destroy_arena(arena: Arena) -> None:
    """Unmount what the test mounted, lift immutable flags, remove the tree without ever
    crossing into another file system."""
    for m in _mounts_below(arena.base)[::-1]:
        subprocess.run(["umount", "-l", m], check=False)
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-f", "-i", "-a", str(arena.base)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", "--one-file-system", str(arena.base)], check=False)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                out.append(point)
    return out


# --- building trees -------------------------------------------------------------------------


def touch(path: Path | str, mtime: float, data: bytes = b"", *, parents: bool = True) -> Path:
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.utime(path, (mtime, mtime), follow_symlinks=False)
    return path


def age(path: Path | str, mtime: float) -> None:
    """Set mtime without following a final symlink (works on FIFOs, sockets, devices)."""
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks (coreutils copes with any depth)."""
    subprocess.run(["chown", "-R", "--no-dereference", f"{uid}:{gid}", str(path)],
                   check=True)


def deep_chain(base: Path, depth: int, name: str = "d", leaf: str | None = None,
               leaf_mtime: float | None = None) -> None:
    """A chain of *depth* nested directories below *base*, made fd-relative (its path is
    far longer than PATH_MAX), with an optional file at the bottom."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if leaf is not None:
            f = os.open(leaf, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
            os.close(f)
            if leaf_mtime is not None:
                os.utime(leaf, (leaf_mtime, leaf_mtime), dir_fd=fd)
    finally:
        os.close(fd)


def deep_chain_leaf_exists(base: Path, depth: int, leaf: str, name: str = "d") -> bool:
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        try:
            os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


# --- victims: what must not change ----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int
    nlink: int
    content: str  # sha256 of a regular file, target of a symlink, sorted names of a directory


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "link"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev")):
        if test(mode):
            return name
    return "other"


def snapshot(*paths: Path | str) -> dict[str, Entry]:
    """Every entry below (and including) *paths*, without following symlinks and without
    opening anything but regular files and directories."""
    out: dict[str, Entry] = {}

    def one(p: str) -> None:
        st = os.lstat(p)
        kind = _kind(st.st_mode)
        if kind == "file":
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            content = h.hexdigest()
        elif kind == "link":
            content = os.readlink(p)
        elif kind == "dir":
            content = "\0".join(sorted(os.listdir(p)))
        else:
            content = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind.endswith(
                "dev") else ""
        out[p] = Entry(kind, st.st_ino, st.st_size if kind != "dir" else 0, st.st_mtime_ns,
                       st.st_ctime_ns, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                       st.st_nlink, content)

    for path in paths:
        top = str(path)
        if not os.path.lexists(top):
            continue
        one(top)
        if os.path.isdir(top) and not os.path.islink(top):
            for dirpath, dirnames, filenames in os.walk(top):
                for n in dirnames + filenames:
                    one(os.path.join(dirpath, n))
    return out


def changes(before: Mapping[str, Entry], after: Mapping[str, Entry],
            linked_inodes: Iterable[int] = ()) -> list[str]:
    """What changed outside the root, in words (empty: nothing).

    A change is: an entry appearing or disappearing, or a different type, inode, size, mtime,
    mode, owner, content (regular files), target (symlinks) or listing (directories), or a
    different ctime. The exception, by design: a victim file that also had a hard link
    inside the root may lose that link, which moves its ctime and lowers its link count —
    its name, inode, content and mtime must still be the same."""
    linked = set(linked_inodes)
    out = []
    for p in sorted(set(before) | set(after)):
        a, b = before.get(p), after.get(p)
        if a is None:
            out.append(f"appeared: {p!r}")
        elif b is None:
            out.append(f"vanished: {p!r}")
        elif a != b:
            same = (a.kind, a.size, a.mtime_ns, a.mode, a.uid, a.gid, a.content) == (
                b.kind, b.size, b.mtime_ns, b.mode, b.uid, b.gid, b.content)
            if a.ino in linked and a.ino == b.ino and same and b.nlink <= a.nlink:
                continue
            diffs = [f"{f}: {getattr(a, f)!r} -> {getattr(b, f)!r}"
                     for f in Entry.__dataclass_fields__ if getattr(a, f) != getattr(b, f)]
            out.append(f"changed: {p!r} ({'; '.join(diffs)})")
    return out


# --- inotify: proof that nothing was opened -------------------------------------------------

IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x1, 0x2, 0x4, 0x8
IN_OPEN, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x20, 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED, IN_Q_OVERFLOW = 0x400, 0x800, 0x8000, 0x4000
IN_DONT_FOLLOW, IN_NONBLOCK, IN_CLOEXEC = 0x02000000, 0o4000, 0o2000000
_NAMES = {IN_ACCESS: "ACCESS", IN_MODIFY: "MODIFY", IN_ATTRIB: "ATTRIB",
          IN_CLOSE_WRITE: "CLOSE_WRITE", 0x10: "CLOSE_NOWRITE", IN_OPEN: "OPEN",
          IN_MOVED_FROM: "MOVED_FROM", IN_MOVED_TO: "MOVED_TO", IN_CREATE: "CREATE",
          IN_DELETE: "DELETE", IN_DELETE_SELF: "DELETE_SELF", IN_MOVE_SELF: "MOVE_SELF",
          IN_IGNORED: "IGNORED", IN_Q_OVERFLOW: "Q_OVERFLOW"}
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Inotify:
    """The kernel's inotify(7) through libc: a watch on each path (symlinks themselves, never
    their targets) and a thread collecting events.

    Any open(2) of a watched file or directory — a FIFO, a device node, a victim — shows up
    as IN_OPEN, whoever made it; the tests start the watch after building the tree and stop
    it before looking at the result, so during the watch only the product runs."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        self.paths: dict[int, str] = {}
        self.events: list[tuple[str, str, str]] = []  # (watched path, name, event)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, path: str | Path, mask: int) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(str(path)), mask | IN_DONT_FOLLOW)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.paths[wd] = str(path)

    def watch_tree(self, top: str | Path, mask: int) -> int:
        n = 0
        for p in snapshot_paths(top):
            self.watch(p, mask)
            n += 1
        return n

    def start(self) -> Inotify:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop.is_set():
            if poller.poll(20):
                self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            i = 0
            while i < len(buf):
                wd, mask, _cookie, length = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + length].rstrip(b"\0").decode("utf-8",
                                                                          "surrogateescape")
                i += 16 + length
                for bit, word in _NAMES.items():
                    if mask & bit:
                        self.events.append((self.paths.get(wd, "?"), name, word))

    def stop(self) -> list[tuple[str, str, str]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        os.close(self.fd)
        return self.events

    def opened(self) -> list[tuple[str, str, str]]:
        return [e for e in self.events if e[2] in ("OPEN", "ACCESS", "MODIFY", "CLOSE_WRITE")]


def snapshot_paths(top: str | Path) -> list[str]:
    top = str(top)
    out = [top]
    if os.path.isdir(top) and not os.path.islink(top):
        for dirpath, dirnames, filenames in os.walk(top):
            out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return out


# --- the attacker ---------------------------------------------------------------------------

ATTACKER_NAME = "acrel-attacker"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def ensure_attacker() -> tuple[User, bool]:
    """The unprivileged account the attacker runs as; (user, created by us)."""
    try:
        pw = pwd.getpwnam(ATTACKER_NAME)
        return User(pw.pw_name, pw.pw_uid, pw.pw_gid), False
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                    "--shell", "/usr/sbin/nologin", ATTACKER_NAME], check=True)
    pw = pwd.getpwnam(ATTACKER_NAME)
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid), True


def remove_attacker() -> None:
    subprocess.run(["userdel", ATTACKER_NAME], check=False, stderr=subprocess.DEVNULL)


class Attacker:
    """tests/reliability/attacker.py running as the unprivileged user: it flips paths in a
    tight loop until told to stop, then reports how many times it did."""

    def __init__(self, user: User, mode: str, *args: str) -> None:
        self.report = tempfile.mktemp(prefix="ac-rel-attacker-", dir="/tmp")
        # The script goes as -c text: a checkout may live where only root can enter
        # (a clone under /root or in `mktemp -d`, mode 0700).
        source = (HERE / "attacker.py").read_text(encoding="utf-8")
        cmd = [SYSTEM_PY, "-c", source, mode, self.report, *args]
        self.proc = subprocess.Popen(cmd, user=user.uid, group=user.gid, extra_groups=[],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd="/", env={"PATH": "/usr/bin:/bin"})
        self.iterations = 0
        self.info: dict[str, Any] = {}
        # the attacker says "ready" once its first flip is done
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if line.strip() != b"ready":
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"attacker did not start: {line!r} {err}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"attacker failed ({self.proc.returncode}): {err.decode()}")
        with open(self.report, encoding="utf-8") as fh:
            self.info = json.load(fh)
        os.unlink(self.report)
        self.iterations = int(self.info["iterations"])
        return self.iterations


# --- dashboard databases whose rows say what must become of them ----------------------------


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def make_main_db(path: Path, now: float, *, doomed: int, keep: int,
                 errors_doomed: int = 0, errors_keep: int = 0, journal: str = "wal") -> None:
    """A dashboard database: *doomed* finished tasks older than 7 days (the rule deletes
    them; task_data = 'doomed') and *keep* that must stay (young, unfinished, or finished
    with no finish time; task_data = 'keep'); the same for errors (30 days)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA journal_mode={journal}")
    con.executescript((DATA / "dashboard_schema.sql").read_text())
    con.execute("BEGIN")
    rows = []
    for i in range(doomed):
        done = now - (8 + i % 50) * DAY
        rows.append(("t", "doomed", ["completed", "failed", "cancelled"][i % 3],
                     ts(done - 3600), ts(done), ts(done)))
    for i in range(keep):
        kind = i % 4
        if kind == 0:    # finished yesterday, created long ago (the seed's bug)
            rows.append(("t", "keep", "completed", ts(now - 60 * DAY), ts(now - DAY),
                         ts(now - DAY)))
        elif kind == 1:  # still running
            rows.append(("t", "keep", "running", ts(now - 90 * DAY), None,
                         ts(now - 90 * DAY)))
        elif kind == 2:  # finished, no finish time
            rows.append(("t", "keep", "completed", ts(now - 90 * DAY), None, None))
        else:            # pending
            rows.append(("t", "keep", "pending", ts(now - 20 * DAY), None, None))
    con.executemany("INSERT INTO task_queue (task_type, task_data, status, created_at, "
                    "completed_at, updated_at) VALUES (?,?,?,?,?,?)", rows)
    erows = []
    for i in range(errors_doomed):
        erows.append(("e", "doomed", "resolved", ts(now - (40 + i % 30) * DAY),
                      ts(now - (31 + i % 30) * DAY)))
    for i in range(errors_keep):
        if i % 2:
            erows.append(("e", "keep", "open", ts(now - 90 * DAY), None))
        else:
            erows.append(("e", "keep", "resolved", ts(now - 40 * DAY), ts(now - 5 * DAY)))
    con.executemany("INSERT INTO errors (error_type, message, status, first_seen, "
                    "resolved_at) VALUES (?,?,?,?,?)", erows)
    con.execute("COMMIT")
    con.close()


def make_assigner_db(path: Path, now: float, *, doomed: int, keep: int) -> None:
    """The assigner's database: *doomed* finished prompts older than 14 days, not archived
    (the rule archives them; content 'doomed') and *keep* that must stay unarchived."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript((DATA / "assigner_schema.sql").read_text())
    con.execute("BEGIN")
    rows = []
    for i in range(doomed):
        done = now - (15 + i % 40) * DAY
        rows.append(("doomed", ["completed", "failed", "cancelled"][i % 3],
                     ts(done - 60), ts(done) if i % 3 == 0 else None))
    for i in range(keep):
        if i % 2:
            rows.append(("keep", "pending", ts(now - 90 * DAY), None))
        else:
            rows.append(("keep", "completed", ts(now - 30 * DAY), ts(now - 2 * DAY)))
    con.executemany("INSERT INTO prompts (content, status, created_at, completed_at) "
                    "VALUES (?,?,?,?)", rows)
    con.execute("COMMIT")
    con.close()


@dataclass
class RowCheck:
    """What a database holds, by the tags its builder wrote."""

    tasks_doomed: int = 0
    tasks_keep: int = 0
    errors_doomed: int = 0
    errors_keep: int = 0
    prompts_doomed_open: int = 0   # doomed prompts not yet archived
    prompts_keep: int = 0          # keep prompts, not archived
    prompts_keep_archived: int = 0  # keep prompts wrongly archived (must stay 0)
    prompts_total: int = 0
    integrity: str = ""


def read_rows(path: Path) -> RowCheck:
    """Counts by tag, and PRAGMA integrity_check, read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        out = RowCheck(integrity=str(con.execute("PRAGMA integrity_check").fetchone()[0]))
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "task_queue" in tables:
            for tag, n in con.execute("SELECT task_data, count(*) FROM task_queue GROUP BY 1"):
                setattr(out, f"tasks_{tag}", n) if tag in ("doomed", "keep") else None
            for tag, n in con.execute("SELECT message, count(*) FROM errors GROUP BY 1"):
                setattr(out, f"errors_{tag}", n) if tag in ("doomed", "keep") else None
        if "prompts" in tables:
            q = "SELECT count(*) FROM prompts WHERE content = ? AND archived = ?"
            out.prompts_doomed_open = con.execute(q, ("doomed", 0)).fetchone()[0]
            out.prompts_keep = con.execute(q, ("keep", 0)).fetchone()[0]
            out.prompts_keep_archived = con.execute(q, ("keep", 1)).fetchone()[0]
            out.prompts_total = con.execute("SELECT count(*) FROM prompts").fetchone()[0]
        return out
    finally:
        con.close()


# --- the CLI as a subprocess ----------------------------------------------------------------


def cli_cmd(*args: str) -> list[str]:
    return [VENV_PY, "-m", "architect_cleanup", *args]


def staged_package() -> str:
    """A copy of ``architect_cleanup`` in a directory every user can read, made once per
    session and removed at exit: an unprivileged run cannot use the checkout's .venv or
    package when the checkout lives where only root can enter (a clone under /root or in
    ``mktemp -d``). Debian's python3 has the runtime dependencies (python3-systemd,
    python3-tomli-w) the venv uses too."""
    if not _STAGED:
        stage = tempfile.mkdtemp(prefix="ac-rel-package-", dir="/tmp")
        os.chmod(stage, 0o755)
        shutil.copytree(REPO / "architect_cleanup", Path(stage) / "architect_cleanup",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for dirpath, dirnames, filenames in os.walk(stage):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        atexit.register(shutil.rmtree, stage, True)
        _STAGED.append(stage)
    return _STAGED[0]


def run_cli(arena: Arena, *args: str, timeout: float = 300, user: User | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    kw: dict[str, Any] = {}
    cmd = cli_cmd(*args)
    run_env = dict(env or arena.env())
    if user is not None:
        kw.update(user=user.uid, group=user.gid, extra_groups=[])
        cmd = [SYSTEM_PY, "-m", "architect_cleanup", *args]
        run_env["PYTHONPATH"] = staged_package()
    return subprocess.run(cmd, env=run_env, capture_output=True,
                          text=True, timeout=timeout, check=False, cwd="/",
                          errors="backslashreplace", **kw)


def run_json(arena: Arena, *args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    """``run --json`` (and *args*); the exit code and the parsed object."""
    proc = run_cli(arena, "run", "--json", *args, **kw)
    assert "Traceback" not in proc.stderr, proc.stderr
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}): {proc.stdout!r} "
                             f"{proc.stderr[-3000:]}") from None
    return proc.returncode, doc


def state_doc(arena: Arena) -> dict[str, Any] | None:
    """state.json parsed (it must always be complete JSON), or None when absent."""
    p = arena.state / "state.json"
    if not p.exists():
        return None
    return json.loads(p.read_bytes())


def leftovers(arena: Arena) -> list[str]:
    """Temporary state files a crash may have left."""
    if not arena.state.exists():
        return []
    return sorted(n for n in os.listdir(arena.state) if n.startswith(".state."))


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    FIGURES.measure(name, round(time.monotonic() - t0, 2))


def is_mountpoint(path: Path) -> bool:
    return str(path) in _mounts_below(path.parent)


def has_errno(exc: BaseException, *codes: int) -> bool:
    return isinstance(exc, OSError) and exc.errno in codes


__all__ = ["DAY", "FIGURES", "HOUR", "IS_ROOT", "LONG", "Arena", "Attacker", "Inotify",
           "changes", "errno", "scale", "snapshot", "sys"]


# --- a whole dashboard world with known outcomes --------------------------------------------


@dataclass
class World:
    """A dashboard tree in an arena whose every item is known to be doomed (a finished run
    removes it) or kept (no run may remove it), and its databases."""

    arena: Arena
    doomed: list[Path] = field(default_factory=list)
    keep: list[Path] = field(default_factory=list)
    #: target -> its doomed files
    by_target: dict[str, list[Path]] = field(default_factory=dict)
    databases: list[Path] = field(default_factory=list)
    assigner: Path | None = None
    tasks_keep: int = 0
    errors_keep: int = 0
    prompts_keep: int = 0

    def missing_keepers(self) -> list[Path]:
        return [p for p in self.keep if not os.path.lexists(p)]

    def doomed_left(self, target: str | None = None) -> list[Path]:
        paths = self.doomed if target is None else self.by_target[target]
        return [p for p in paths if os.path.lexists(p)]

    def doom(self, target: str, path: Path) -> None:
        self.doomed.append(path)
        self.by_target.setdefault(target, []).append(path)

    def rows(self) -> dict[Path, RowCheck]:
        out = {p: read_rows(p) for p in self.databases}
        if self.assigner is not None:
            out[self.assigner] = read_rows(self.assigner)
        return out

    def rows_lost(self) -> int:
        """Rows no rule selects that are gone or were archived."""
        lost = 0
        for p, r in self.rows().items():
            if p == self.assigner:
                lost += (self.prompts_keep - r.prompts_keep) + r.prompts_keep_archived
            else:
                lost += (self.tasks_keep - r.tasks_keep) + (self.errors_keep - r.errors_keep)
        return lost

    def integrity(self) -> dict[str, str]:
        return {str(p): r.integrity for p, r in self.rows().items()}


def build_world(arena: Arena, now: float, *, backups: int = 20, logs: int = 100,
                temp: int = 100, caches: int = 5, tasks: int = 500, errors: int = 100,
                prompts: int = 200, keep_rows: int = 50) -> World:
    """Every target has work: prod and qa keep 3 and 2 backups (with -wal/-shm siblings on
    some), old and young logs and temp files, __pycache__ directories, our logs in tmp, and
    two dashboard databases plus the assigner's."""
    w = World(arena)
    data = arena.root / "data"
    old = now - 90 * DAY
    for env, keep in (("prod", 3), ("qa", 2)):
        bdir = data / env / "backups"
        for i in range(backups):
            t = old + i * 60
            tag = "keep" if i >= backups - keep else "doomed"
            b = touch(bdir / f"architect_{i:06d}_{tag}.db", t, backup_bytes(i))
            w.keep.append(b) if tag == "keep" else w.doom("backups", b)
            if i % 7 == 3:
                for side in ("-wal", "-shm"):
                    s = touch(bdir / (b.name + side), t, b"s")
                    w.keep.append(s) if tag == "keep" else w.doom("backups", s)
        w.keep.append(touch(bdir / "architect_inprogress_keep.db", now - 60, b"writing"))
    for where in (data / "logs", arena.root / "logs"):
        for i in range(logs):
            w.doom("logs", touch(where / f"doomed_{i}.log", old, b"l"))
            w.doom("logs", touch(where / "rot" / f"doomed_{i}.log.{i % 5 + 1}", old, b"l"))
        for i in range(max(logs // 10, 1)):
            w.keep.append(touch(where / f"keep_{i}.log", now - DAY, b"l"))
        w.keep.append(touch(where / "architect_worker.log", old, b"active"))
    for i in range(temp):
        w.doom("temp", touch(data / "cache" / f"doomed_{i}.tmp", old, b"t"))
    for i in range(max(temp // 10, 1)):
        w.keep.append(touch(data / "cache" / f"keep_{i}.tmp", now - 60, b"t"))
    for c in range(caches):
        pyc = arena.root / f"pkg{c}" / "__pycache__"
        for j in range(8):
            w.doom("temp", touch(pyc / f"m{j}.cpython-311.pyc", old, b"p"))
        age(pyc, old)
        w.doom("temp", pyc)
    w.doom("logs", touch(arena.tmp / "architect_session.log", old, b"l"))
    w.keep.append(touch(arena.tmp / "someone_elses.log", old, b"l"))
    w.keep.append(touch(arena.tmp / "architect_cleanup_worker.log", old, b"l"))
    for env in ("prod", "qa"):
        p = data / env / "architect.db"
        make_main_db(p, now, doomed=tasks, keep=keep_rows, errors_doomed=errors,
                     errors_keep=keep_rows)
        w.databases.append(p)
    w.tasks_keep = w.errors_keep = keep_rows
    w.assigner = data / "assigner" / "assigner.db"
    make_assigner_db(w.assigner, now, doomed=prompts, keep=keep_rows)
    w.prompts_keep = keep_rows
    arena.write_config(environments=["prod", "qa"],
                       backups={"retention": {"prod": 3, "qa": 2}, "verify": {"check": "quick"}})
    return w


def backup_bytes(i: int) -> bytes:
    """A small, good database (one row telling *i*): a backup that verifies as good."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE backup(i INTEGER)")
    con.execute("INSERT INTO backup VALUES (?)", (i,))
    con.commit()
    data = con.serialize()
    con.close()
    return data


def watch_deletes(dirs: Iterable[Path]) -> Inotify:
    """An inotify watch counting deletions in *dirs* (started)."""
    ino = Inotify()
    for d in sorted({str(x) for x in dirs}):
        if os.path.isdir(d):
            ino.watch(d, IN_DELETE)
    return ino.start()


def deletes(ino: Inotify) -> int:
    return sum(1 for e in ino.events if e[2] == "DELETE")


def holder_free(arena: Arena) -> bool:
    from architect_cleanup.lock import holder
    return holder(arena.lock) is None
