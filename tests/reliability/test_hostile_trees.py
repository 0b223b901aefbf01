"""Hostile trees: what an unprivileged user who owns part of the dashboard's tree can build
there. Every test runs the real CLI (``run --force --json``) and checks that nothing outside
the root changed (victims are snapshotted before and compared after, and watched with inotify
while the product runs: not even an open(2) of a victim is allowed), that no special file was
opened, and that the run finished with a report.
"""

from __future__ import annotations

import os
import resource
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kit
from conftest import needs_root
from kit import DAY, FIGURES, Arena, Inotify, User

NOW = time.time()
OLD = NOW - 90 * DAY
#: every test at the pool's default size and at 1 (conftest.pool)
pytestmark = pytest.mark.usefixtures("pool")
WATCH = (kit.IN_OPEN | kit.IN_ACCESS | kit.IN_MODIFY | kit.IN_ATTRIB | kit.IN_CREATE
         | kit.IN_DELETE | kit.IN_MOVED_FROM | kit.IN_MOVED_TO | kit.IN_DELETE_SELF)


def victim_world(v: Path) -> None:
    """Things outside the root a cleanup would love to delete: old logs, temp files, caches,
    backups, and databases full of old finished rows."""
    for i in range(5):
        kit.touch(v / "logs" / f"v{i}.log", OLD, b"victim log\n")
        kit.touch(v / "logs" / "deeper" / f"v{i}.log.1", OLD, b"victim log\n")
        kit.touch(v / "cache" / f"v{i}.tmp", OLD, b"victim tmp\n")
        kit.touch(v / "__pycache__" / f"v{i}.pyc", OLD, b"victim pyc\n")
    for i in range(12):
        kit.touch(v / "backups" / f"architect_2020010{i % 9}_00000{i % 10}_{i}.db", OLD - i,
                  b"victim backup\n")
    kit.touch(v / "secret.log", OLD, b"root's secret\n")
    kit.make_main_db(v / "qa" / "architect.db", NOW, doomed=50, keep=10, errors_doomed=5)
    kit.make_main_db(v / "dev.db", NOW, doomed=50, keep=10)
    kit.make_assigner_db(v / "assigner.db", NOW, doomed=30, keep=5)
    for p in v.rglob("*"):
        if p.is_dir():
            kit.age(p, OLD)


class Watch:
    """Snapshot + inotify on the victims around a product run."""

    def __init__(self, *paths: Path, linked: tuple[int, ...] = ()) -> None:
        self.paths = paths
        self.linked = linked
        self.before = kit.snapshot(*paths)
        self.ino = Inotify()
        for p in paths:
            self.ino.watch_tree(p, WATCH)
        self.ino.start()

    def finish(self) -> tuple[list[str], list[tuple[str, str, str]]]:
        events = self.ino.stop()
        after = kit.snapshot(*self.paths)
        changed = kit.changes(self.before, after, self.linked)
        FIGURES.outside(changed)
        return changed, events


def real_run(arena: Arena, *extra: str, timeout: float = 300) -> tuple[int, dict]:
    code, doc = kit.run_json(arena, "--force", *extra, timeout=timeout)
    assert code in (0, 1), (code, doc)
    return code, doc


def own(arena: Arena, user: User, *parts: str) -> None:
    """Hand part of the tree to the attacker (as the dashboard's user owns data/)."""
    for p in parts:
        kit.chown_tree(arena.root / p, user.uid, user.gid)


# --- symlinks at every level ----------------------------------------------------------------


@needs_root
def test_symlinks_to_outside_files_and_directories_at_every_level_change_nothing_outside(
        arena: Arena, attacker_user: User) -> None:
    v, r, data = arena.victim, arena.root, arena.root / "data"
    victim_world(v)
    links = {
        # configured directories themselves
        r / "logs": v / "logs",
        data / "prod" / "backups": v / "backups",
        data / "backups": v / "backups",
        data / "qa": v / "qa",                                  # an environment
        data / "assigner" / "assigner.db": v / "assigner.db",   # a database file
        data / "dev" / "architect.db": Path("../../../../victim/dev.db"),  # relative
        # names the rules match
        data / "old.log": v / "secret.log",
        data / "rotated.log.3": v / "logs",
        data / "x.tmp": v / "cache" / "v0.tmp",
        r / "app" / "__pycache__": v / "__pycache__",           # a claimed directory
        r / ".pytest_cache": v / "cache",
        # deeper down, and inside claimed directories
        data / "a" / "b" / "c" / "d" / "down": v,
        data / "a" / "b" / "c" / "d" / "deep.log": v / "secret.log",
        r / "svc" / "__pycache__" / "link_dir": v / "logs",
        r / "svc" / "__pycache__" / "link.pyc": v / "secret.log",
        # the stand-in for /tmp
        arena.tmp / "architect_link.log": v / "secret.log",
        arena.tmp / "architect_dir.log": v / "logs",
    }
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    kit.touch(data / "prod" / "architect.db.placeholder", NOW)
    kit.touch(r / "svc" / "__pycache__" / "real.pyc", OLD, b"pyc")
    for link in links:
        os.utime(link, (OLD, OLD), follow_symlinks=False)
    kit.age(r / "svc" / "__pycache__", OLD)
    own(arena, attacker_user, "data", "app", "svc")
    arena.write_config(database={"paths": ["data/{env}/architect.db",
                                           "data/assigner/assigner.db", "data/*/*.db"]})
    FIGURES.attack("symlink to an outside file or directory", len(links))

    w = Watch(v)
    code, doc = real_run(arena)
    changed, events = w.finish()
    assert changed == []
    assert events == [], "\n".join(map(repr, events))
    assert doc["stats"]["backups_deleted"] == 0
    assert doc["stats"]["tasks_deleted"] == doc["stats"]["errors_deleted"] == 0
    assert doc["stats"]["prompts_deleted"] == 0
    # the links that match a rule went as links; their targets are where they were
    for gone in (data / "old.log", data / "rotated.log.3", data / "x.tmp",
                 arena.tmp / "architect_link.log", arena.tmp / "architect_dir.log",
                 data / "a" / "b" / "c" / "d" / "deep.log"):
        assert not os.path.lexists(gone), gone
    assert not os.path.lexists(r / "svc" / "__pycache__")
    assert os.path.islink(r / "app" / "__pycache__")  # a link, not a directory: not claimed
    # databases behind links are refused, in words
    text = str(doc)
    assert "outside root" in text
    assert code == 1  # those databases failed; the run finished


# --- hard links -----------------------------------------------------------------------------


@needs_root
def test_hard_links_to_outside_files_leave_their_contents_and_names_alone(
        arena: Arena, attacker_user: User) -> None:
    v, data = arena.victim, arena.root / "data"
    victim_world(v)
    # the attacker's own files outside the root (protected_hardlinks lets it link only
    # files it owns or may write)
    kit.touch(v / "mine.log", OLD, b"attacker's precious log\n")
    kit.touch(v / "mine.tmp", OLD, b"attacker's precious tmp\n")
    kit.touch(v / "mine_backup.db", OLD, b"attacker's backup\n")
    for name in ("mine.log", "mine.tmp", "mine_backup.db"):
        os.chown(v / name, attacker_user.uid, attacker_user.gid)
    os.chown(v / "dev.db", attacker_user.uid, attacker_user.gid)
    (data / "prod" / "backups").mkdir(parents=True)
    (data / "dev").mkdir(parents=True)
    pairs = {
        data / "hl.log": v / "mine.log",
        data / "hl.tmp": v / "mine.tmp",
        data / "prod" / "backups" / "architect_20200101_000000.db": v / "mine_backup.db",
        data / "dev" / "architect.db": v / "dev.db",  # a database with a second name outside
    }
    for link, target in pairs.items():
        os.link(target, link)
    for i in range(3):
        kit.touch(data / "prod" / "backups" / f"architect_2021010{i}_000000.db", OLD + i * DAY,
                  b"b")
    own(arena, attacker_user, "data")
    arena.write_config(backups={"retention": {"prod": 1}})
    linked = tuple(os.stat(t).st_ino for t in pairs.values())
    FIGURES.attack("hard link to an outside file", len(pairs))

    w = Watch(v, linked=linked)
    code, doc = real_run(arena)
    changed, _events = w.finish()
    assert changed == []
    assert kit.read_rows(v / "dev.db").tasks_doomed == 50
    # the names inside the root went; the files themselves are intact outside
    assert not (data / "hl.log").exists() and not (data / "hl.tmp").exists()
    assert (v / "mine.log").read_bytes() == b"attacker's precious log\n"
    assert doc["targets"]["tasks"]["status"] == "failed"
    assert "hard link" in str(doc["targets"]["tasks"])
    assert code == 1


# --- names ----------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "new\nline", "\nlead", "tab\there", "-rf", "--force", "-", " ", "  spaced  ",
    "\x1b]0;owned\x07", "\x1b[2J", "back\\slash", "star*", "q?", "[bracket]",
    "quote'\"", "$(touch pwned)", "`id`", "a;b", "%s%n", "\u202eevil", "\ufeffbom",
]


def _bytes_names() -> list[bytes]:
    return [b"bad\xff\xfeutf8", b"\xc0\xaf", b"latin1-\xe9", b"x" * 251]


@needs_root
def test_hostile_names_are_judged_and_reported_without_harm(arena: Arena,
                                                            attacker_user: User) -> None:
    data = arena.root / "data"
    made = 0
    names = [n.encode() for n in HOSTILE_NAMES] + _bytes_names()
    for i, raw in enumerate(names):
        d = os.fsencode(str(data / "names")) + b"/" + raw
        os.makedirs(d, exist_ok=True)
        for suffix, mtime in ((b".log", OLD), (b".tmp", OLD), (b".keep.log", NOW)):
            stem = raw[: 255 - len(suffix)] if len(raw) + len(suffix) > 255 else raw
            p = d + b"/" + stem + suffix
            with open(p, "wb") as fh:
                fh.write(b"x")
            os.utime(p, (mtime, mtime))
            made += 1
        pyc = d + b"/__pycache__"
        os.makedirs(pyc, exist_ok=True)
        with open(pyc + b"/" + raw[:240] + b".pyc", "wb"):
            pass
        os.utime(pyc + b"/" + raw[:240] + b".pyc", (OLD, OLD))
        os.utime(pyc, (OLD, OLD))
        # 255-byte names, the longest a name can be
        long = d + b"/" + ((b"L%03d" % i) * 63)[:251] + b".log"
        assert len(os.path.basename(long)) == 255
        with open(long, "wb"):
            pass
        os.utime(long, (OLD, OLD))
        made += 2
    kit.touch(arena.tmp / "architect_\n\x1b[31mred.log", OLD)
    (data / "prod" / "backups").mkdir(parents=True)
    for i, raw in enumerate(names[:10]):
        p = os.fsencode(str(data / "prod" / "backups")) + b"/architect_" + raw[:200] + b".db"
        with open(p, "wb"):
            pass
        os.utime(p, (OLD + i, OLD + i))
    own(arena, attacker_user, "data")
    arena.write_config(backups={"retention": {"prod": 2}})
    FIGURES.attack("hostile file name", made)

    proc = kit.run_cli(arena, "run", "--force", "-v")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # one line per item: no name may break a line or smuggle a terminal escape
    for line in proc.stdout.splitlines():
        assert "\x1b" not in line and "\u202e" not in line, repr(line)
        if line.startswith(("remove ", "keep ")):
            assert line.rstrip().endswith(")"), repr(line)
    assert "\x1b" not in proc.stderr
    left = [os.fsencode(p) for p in kit.snapshot_paths(data / "names")]
    assert not [p for p in left if p.endswith((b".tmp", b".pyc"))]
    assert not [p for p in left if p.endswith(b".log") and not p.endswith(b".keep.log")]
    assert len([p for p in left if p.endswith(b".keep.log")]) == len(names)
    assert sorted(os.listdir(data / "prod" / "backups")) .__len__() == 2
    state = kit.state_doc(arena)
    assert state is not None and state["last_run"]["result"] == "success"
    # the JSON output survives every name as well
    kit.touch(data / "names" / "again\n.log", OLD)
    code, doc = real_run(arena)
    assert code == 0 and doc["stats"]["logs_deleted"] == 1


# --- depth ----------------------------------------------------------------------------------


@needs_root
def test_trees_deeper_than_the_recursion_limit_finish_in_bounded_time_and_memory(
        arena: Arena, attacker_user: User) -> None:
    data = arena.root / "data"
    depth = max(sys.getrecursionlimit() * 3, kit.scale(3000, 20000))
    for d in ("deep", "wide"):
        (data / d).mkdir()
    kit.deep_chain(data / "deep", depth, leaf="bottom.log", leaf_mtime=OLD)
    # a deep cache directory, removed whole
    pyc = arena.root / "pkg" / "__pycache__"
    pyc.mkdir(parents=True)
    kit.deep_chain(pyc, depth // 2, leaf="m.pyc", leaf_mtime=OLD)
    kit.age(pyc, OLD)
    # the longest names at every level: a path of megabytes
    kit.deep_chain(data / "wide", kit.scale(1500, 6000), name="n" * 255, leaf="w.log",
                   leaf_mtime=OLD)
    kit.touch(data / "shallow.log", OLD)
    own(arena, attacker_user, "data", "pkg")
    FIGURES.attack("directory chain deeper than the recursion limit", 3)

    t0 = time.monotonic()
    proc = kit.run_cli(arena, "run", "--force", "--json", timeout=600)
    took = time.monotonic() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    FIGURES.measure(f"deep tree ({depth} levels) run, s", round(took, 1))
    FIGURES.measure("deep tree run peak RSS, MB", round(rss_mb, 1))
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (data / "shallow.log").exists()
    assert "path longer than 4096 bytes, not entered" in proc.stdout  # reported, left alone
    assert rss_mb < 200, f"peak RSS {rss_mb:.0f} MB"
    assert took < kit.scale(120, 600)


# --- special files --------------------------------------------------------------------------


def _specials(base: Path, stem: str) -> dict[str, Path]:
    """A FIFO, a listening socket's file, and character devices with /dev/null's and
    /dev/zero's numbers, all named to match a rule."""
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    fifo = base / f"{stem}_fifo"
    os.mkfifo(fifo)
    out["fifo"] = fifo
    out["null"] = base / f"{stem}_null"
    os.mknod(out["null"], 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    out["zero"] = base / f"{stem}_zero"
    os.mknod(out["zero"], 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    return out


@needs_root
def test_fifos_sockets_and_device_nodes_matching_a_pattern_are_never_opened(
        arena: Arena, attacker_user: User) -> None:
    r, data = arena.root, arena.root / "data"
    specials: list[Path] = []
    for d, names in (
            (data, ["f.log", "g.log.1", "h.tmp", "i.cache"]),
            (data / "prod" / "backups", ["architect_20200101_000000.db",
                                         "architect_20200102_000000.db-wal"]),
            (arena.tmp, ["architect_f.log"])):
        d.mkdir(parents=True, exist_ok=True)
        for n in names:
            for kind, p in _specials(d / ".mk", n).items():
                dest = d / f"{kind}-{n}" if not n.startswith("architect_") else \
                    d / n.replace("architect_", f"architect_{kind}_")
                os.rename(p, dest)
                specials.append(dest)
            (d / ".mk").rmdir()
    # as the databases themselves
    (data / "qa").mkdir()
    os.mkfifo(data / "qa" / "architect.db")
    (data / "assigner").mkdir()
    os.mknod(data / "assigner" / "assigner.db", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    specials += [data / "qa" / "architect.db", data / "assigner" / "assigner.db"]
    # sockets: listening, so a connect() would be seen as well as an open()
    socks = []
    for p in (data / "s.log", data / "s.tmp", arena.tmp / "architect_s.log"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(p))
        s.listen(8)
        s.settimeout(0.1)
        socks.append(s)
        specials.append(p)
    # a cache directory holding specials: removed whole, by unlink only
    inside = _specials(r / "app" / "__pycache__", "m.pyc")
    for p in specials + list(inside.values()):
        kit.age(p, OLD)
    kit.age(r / "app" / "__pycache__", OLD)
    kit.touch(data / "prod" / "backups" / "architect_20210101_000000.db", OLD, b"real")
    own(arena, attacker_user, "data", "app")
    FIGURES.attack("FIFO, socket or device node matching a rule",
                   len(specials) + len(inside))

    ino = Inotify()
    for p in specials + list(inside.values()):
        ino.watch(p, kit.IN_OPEN | kit.IN_ACCESS | kit.IN_MODIFY)
    ino.start()
    connected: list[str] = []
    stop = threading.Event()

    def acceptor() -> None:
        while not stop.is_set():
            for s in socks:
                try:
                    c, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                connected.append(s.getsockname())
                c.close()

    t = threading.Thread(target=acceptor, daemon=True)
    t.start()
    try:
        # an open() of the FIFO would block: the timeout turns a hang into a failure
        code, doc = real_run(arena, timeout=120)
    finally:
        stop.set()
        t.join(5)
        events = ino.stop()
        for s in socks:
            s.close()
    opened = [e for e in events if e[2] in ("OPEN", "ACCESS", "MODIFY")]
    FIGURES.special_opened += len(opened) + len(connected)
    assert opened == [] and connected == []
    # judged by name, kept because they are not regular files (or refused as databases)
    for p in specials:
        assert os.path.lexists(p), p
    assert not (r / "app" / "__pycache__").exists()  # unlinked, never opened
    assert doc["targets"]["tasks"]["status"] == "failed"
    assert "not a regular file" in str(doc["targets"]["tasks"])
    assert code == 1


# --- unreadable directories and refused deletions -------------------------------------------


@needs_root
def test_unreadable_directories_and_refused_deletions_are_counted_and_the_run_goes_on(
        arena: Arena, attacker_user: User) -> None:
    """An operator's run without root (the attacker's account here) over a tree where root
    owns some directories (0700: unreadable) and some files (EACCES), and a sticky directory
    holds another user's file (EPERM)."""
    data = arena.root / "data"
    for i in range(20):
        kit.touch(data / "mine" / f"ok{i}.log", OLD)
    kit.touch(data / "closed" / "hidden.log", OLD)
    kit.touch(data / "closed" / "sub" / "hidden2.log", OLD)
    kit.touch(data / "ro" / "root_owned.log", OLD)
    kit.touch(data / "sticky" / "others.log", OLD)
    kit.touch(data / "sticky" / "own.log", OLD)
    kit.touch(arena.root / "pkg" / "__pycache__" / "a.pyc", OLD)
    kit.touch(arena.root / "pkg" / "__pycache__" / "locked" / "b.pyc", OLD)
    kit.age(arena.root / "pkg" / "__pycache__", OLD)
    kit.chown_tree(arena.root, attacker_user.uid, attacker_user.gid)
    os.chown(arena.root / "pkg" / "__pycache__" / "locked", 0, 0)
    (arena.root / "pkg" / "__pycache__" / "locked").chmod(0o755)
    for p in (data / "closed", data / "closed" / "sub"):
        kit.chown_tree(p, 0, 0)
        p.chmod(0o700)
    kit.chown_tree(data / "ro", 0, 0)
    (data / "ro").chmod(0o755)
    (data / "sticky").chmod(0o1777)
    os.chown(data / "sticky", 0, 0)
    os.chown(data / "sticky" / "others.log", 0, 0)
    for p in (arena.state, arena.run):
        p.mkdir()
        os.chown(p, attacker_user.uid, attacker_user.gid)
    arena.config.chmod(0o644)
    FIGURES.fault("EACCES/EPERM on an item (unprivileged run)", 5)

    proc = kit.run_cli(arena, "run", "--force", "--json", user=attacker_user)
    assert "Traceback" not in proc.stderr, proc.stderr
    import json
    doc = json.loads(proc.stdout)
    assert proc.returncode in (0, 1)
    assert doc["stats"]["logs_deleted"] == 21  # mine/*.log and sticky/own.log
    logs = doc["targets"]["logs"]
    text = str(logs)
    assert "Permission denied" in text
    assert (data / "closed" / "hidden.log").exists()
    assert (data / "ro" / "root_owned.log").exists()
    assert (data / "sticky" / "others.log").exists()
    assert not (data / "sticky" / "own.log").exists()
    assert (arena.root / "pkg" / "__pycache__" / "locked" / "b.pyc").exists()
    assert logs["error_count"] >= 2


@needs_root
def test_immutable_and_append_only_items_are_refused_counted_and_the_rest_removed(
        arena: Arena) -> None:
    data = arena.root / "data"
    for i in range(10):
        kit.touch(data / f"l{i}.log", OLD)
    kit.touch(data / "ad" / "in_appendonly_dir.tmp", OLD)
    kit.touch(arena.root / "pkg" / "__pycache__" / "frozen.pyc", OLD)
    kit.touch(arena.root / "pkg" / "__pycache__" / "free.pyc", OLD)
    kit.age(arena.root / "pkg" / "__pycache__", OLD)
    (data / "prod" / "backups").mkdir(parents=True)
    for i in range(4):
        kit.touch(data / "prod" / "backups" / f"architect_2020010{i}_000000.db", OLD + i)
    frozen = [data / "l0.log", data / "l1.log", arena.root / "pkg" / "__pycache__" /
              "frozen.pyc", data / "prod" / "backups" / "architect_20200100_000000.db"]
    subprocess.run(["chattr", "+i", *map(str, frozen)], check=True)
    subprocess.run(["chattr", "+a", str(data / "ad")], check=True)
    arena.write_config(backups={"retention": {"prod": 1}})
    FIGURES.fault("EPERM: immutable or append-only item", len(frozen) + 1)
    try:
        code, doc = real_run(arena)
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], check=False)
        subprocess.run(["chattr", "-a", str(data / "ad")], check=False)
    assert doc["stats"]["logs_deleted"] == 8
    assert doc["stats"]["backups_deleted"] == 2
    assert doc["stats"]["temp_files_deleted"] == 1  # free.pyc
    for p in frozen:
        assert p.exists()
    assert (data / "ad" / "in_appendonly_dir.tmp").exists()
    errors = doc["targets"]["logs"]["errors"] + doc["targets"]["temp"]["errors"] + \
        doc["targets"]["backups"]["errors"]
    assert sum("Operation not permitted" in e for e in errors) == 5, errors
    assert code == 0


# --- mounts ---------------------------------------------------------------------------------


@needs_root
def test_bind_and_tmpfs_mounts_below_the_root_are_never_crossed(arena: Arena) -> None:
    v, r, data = arena.victim, arena.root, arena.root / "data"
    victim_world(v)
    arena.mount("bind", data / "bound", source=str(v))               # same file system
    arena.mount("bind", data / "logs_bound", source=str(v / "logs"))
    arena.mount("tmpfs", r / "logs" / "tmpfs", options="size=4m")      # another one
    for i in range(5):
        kit.touch(r / "logs" / "tmpfs" / f"t{i}.log", OLD)
    arena.mount("tmpfs", r / "pkg" / "__pycache__", options="size=1m")  # a claimed dir
    kit.touch(r / "pkg" / "__pycache__" / "m.pyc", OLD)
    kit.age(r / "pkg" / "__pycache__", OLD)
    # a single file bind-mounted over a name the rules match
    kit.touch(data / "file_mount.log", OLD)
    subprocess.run(["mount", "--bind", str(v / "secret.log"), str(data / "file_mount.log")],
                   check=True)
    arena.mounts.append(data / "file_mount.log")
    kit.touch(data / "own.log", OLD)
    FIGURES.attack("bind or tmpfs mount below the root", 5)
    tmpfs_before = kit.snapshot(r / "logs" / "tmpfs", r / "pkg" / "__pycache__")

    w = Watch(v)
    code, doc = real_run(arena)
    changed, events = w.finish()
    assert changed == []
    # The walk opens a directory (O_DIRECTORY|O_NOFOLLOW, nothing read) to learn that it is
    # a mount point; through the bind mounts that is the victim directory itself. Nothing in
    # it is listed, opened or changed.
    sources = {str(v), str(v / "logs")}
    assert [e for e in events
            if not (e[2] == "OPEN" and os.path.join(e[0], e[1]).rstrip("/") in sources)] \
        == [], events
    assert kit.changes(tmpfs_before, kit.snapshot(r / "logs" / "tmpfs",
                                                  r / "pkg" / "__pycache__")) == []
    assert not (data / "own.log").exists()
    assert "mount point" in str(doc["targets"])
    assert code in (0, 1)
