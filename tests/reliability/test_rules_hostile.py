"""The hostile-tree and race scenarios of this suite, run on [[rules.files]] rules: a rule
reaches nothing outside its directories, whatever an unprivileged owner of the tree builds
there or changes while runs go on (issue 19). The helpers are test_hostile_trees' and
test_races' own; only the configuration differs (the built-in file targets are switched off,
so the rule owns every name it matches).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from test_hostile_trees import NOW, OLD, Watch, own, real_run, victim_world
from test_races import Race, _by_inode, _Replacer, config, replacer, run_once  # noqa: F401

import kit
from conftest import needs_root
from kit import FIGURES, Arena, User

#: The built-in file targets off: every name below is the rule's to judge.
NO_BUILTINS: dict[str, Any] = {"logs": {"enabled": False}, "temp": {"enabled": False},
                               "backups": {"enabled": False}}


def greedy_rules(arena: Arena) -> dict[str, Any]:
    """Rules as greedy as the configuration allows: every log, temp file, backup copy and
    duplicate below data/, whole "s-*[0-9]" directories, and the stand-in for /tmp."""
    return {"allowed_outside_root": [str(arena.tmp)], "files": [
        {"name": "everything", "dirs": ["data"], "type": "any",
         "patterns": ["*.log", "*.log.*", "*.tmp", "*.bak", "* 2.db", "architect.db.backup.*",
                      "*.pyc", "s-*[0-9]"], "max_age": "1d"},
        {"name": "outside", "dirs": [str(arena.tmp)], "patterns": ["architect_*"],
         "max_age": "1d"},
    ]}


@needs_root
def test_a_rule_follows_no_symlink_at_any_level_and_changes_nothing_outside(
        arena: Arena, attacker_user: User) -> None:
    v, data = arena.victim, arena.root / "data"
    victim_world(v)
    kit.touch(v / "copy.db", OLD, b"victim copy\n")
    links = {
        data / "old.log": v / "secret.log",
        data / "old.bak": v / "secret.log",
        data / "bugs 2.db": v / "copy.db",
        data / "architect.db.backup.20200101": v / "copy.db",
        data / "linked": v / "logs",                             # a directory
        data / "s-session1": v / "logs",                          # a claimed directory
        data / "a" / "b" / "c" / "down": v,
        data / "a" / "b" / "c" / "deep.log": v / "secret.log",
        data / "s-real1" / "inner": v / "cache",                  # inside a claimed directory
        data / "s-real1" / "x.log": v / "secret.log",
        arena.tmp / "architect_link.log": v / "secret.log",
        arena.tmp / "architect_dir": v / "logs",
    }
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    kit.touch(data / "s-real1" / "real.bin", OLD, b"own")
    for link in links:
        os.utime(link, (OLD, OLD), follow_symlinks=False)
    kit.age(data / "s-real1", OLD)
    own(arena, attacker_user, "data")
    arena.write_config(rules=greedy_rules(arena), **NO_BUILTINS)
    FIGURES.attack("symlink to an outside file or directory (rule)", len(links))

    w = Watch(v)
    code, doc = real_run(arena, "--only", "rules")
    changed, events = w.finish()
    assert changed == []
    assert events == [], "\n".join(map(repr, events))
    assert code == 0, doc
    for gone in (data / "old.log", data / "old.bak", data / "bugs 2.db",
                 data / "architect.db.backup.20200101", arena.tmp / "architect_link.log",
                 data / "a" / "b" / "c" / "deep.log"):
        assert not os.path.lexists(gone), gone  # removed as links
    assert not os.path.lexists(data / "s-real1")  # removed whole, its links as links
    # a link is no directory: type "any" removes it as a link, its target stays (above)
    assert not os.path.lexists(data / "s-session1")
    assert doc["targets"]["rules"]["removed"] > 0


@needs_root
def test_a_rule_removes_a_hard_link_name_and_leaves_the_file_outside_intact(
        arena: Arena, attacker_user: User) -> None:
    v, data = arena.victim, arena.root / "data"
    kit.touch(v / "mine.bak", OLD, b"attacker's precious file\n")
    os.chown(v / "mine.bak", attacker_user.uid, attacker_user.gid)
    data.mkdir(parents=True, exist_ok=True)
    os.link(v / "mine.bak", data / "hl.bak")
    own(arena, attacker_user, "data")
    arena.write_config(rules=greedy_rules(arena), **NO_BUILTINS)
    linked = (os.stat(v / "mine.bak").st_ino,)
    FIGURES.attack("hard link to an outside file (rule)")

    w = Watch(v, linked=linked)
    code, _doc = real_run(arena, "--only", "rules")
    changed, _events = w.finish()
    assert changed == [] and code == 0
    assert not (data / "hl.bak").exists()
    assert (v / "mine.bak").read_bytes() == b"attacker's precious file\n"


@needs_root
def test_a_rule_never_opens_a_fifo_socket_or_device_that_matches_it(
        arena: Arena, attacker_user: User) -> None:
    data = arena.root / "data"
    data.mkdir(parents=True, exist_ok=True)
    specials = [data / "f.log", data / "n.bak", data / "z 2.db"]
    os.mkfifo(specials[0])
    os.mknod(specials[1], 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(specials[2], 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    for p in specials:
        kit.age(p, OLD)
    own(arena, attacker_user, "data")
    arena.write_config(rules=greedy_rules(arena), **NO_BUILTINS)
    FIGURES.attack("FIFO or device node matching a rule", len(specials))
    ino = kit.Inotify()
    for p in specials:
        ino.watch(p, kit.IN_OPEN | kit.IN_ACCESS | kit.IN_MODIFY)
    ino.start()
    code, _doc = real_run(arena, "--only", "rules", timeout=120)
    events = ino.stop()
    assert [e for e in events if e[2] in ("OPEN", "ACCESS", "MODIFY")] == []
    assert all(os.path.lexists(p) for p in specials) and code == 0


# --- races ------------------------------------------------------------------------------------


def _victims(v: Path) -> None:
    for sub in ("logs", "cache"):
        for i in range(6):
            kit.touch(v / sub / f"v{i}.bak", OLD, b"victim\n")
            kit.touch(v / sub / f"v{i}.log", OLD, b"victim\n")
        kit.touch(v / sub / "inner" / "deep.bak", OLD, b"victim\n")
    for p in v.rglob("*"):
        kit.age(p, OLD)


def _rule_config(arena: Arena) -> Any:
    return config(arena, rules=greedy_rules(arena), **NO_BUILTINS)


@needs_root
def test_directories_swapped_for_symlinks_during_rule_runs_never_redirect_a_delete(
        arena: Arena, attacker_user: User) -> None:
    v, data = arena.victim, arena.root / "data"
    _victims(v)
    dirs = {data / "l1": v / "logs", data / "x" / "y" / "l3": v / "cache",
            data / "s-flip1": v / "cache"}
    files = {d: [f"a{i}.bak" for i in range(20)] for d in dirs}
    for d, names in files.items():
        for n in names:
            kit.touch(d / n, OLD, b"attacker's own\n")
        kit.touch(d / "sub" / "s.bak", OLD)
    kit.age(data / "s-flip1", OLD)
    kit.chown_tree(data, attacker_user.uid, attacker_user.gid)
    spec = {"pairs": [{"dir": str(d), "victim": str(t), "files": files[d], "mtime": OLD,
                       "old_dir": d.name.startswith("s-")} for d, t in dirs.items()]}
    cfg = _rule_config(arena)
    race = Race("directory swapped for a symlink (rule)", arena, attacker_user, spec, [v])
    race.repeat(lambda: run_once(arena, cfg, ["rules"]))
    race.check()
    assert race.removed > 0


@needs_root
def test_files_replaced_by_young_ones_between_a_rules_scan_and_unlink_survive(
        arena: Arena, attacker_user: User) -> None:
    d = arena.root / "data" / "churn"
    d.mkdir(parents=True)
    for i in range(20):  # plain old files: the runs' real work (the race's are luck)
        kit.touch(d / f"k{i}.log", OLD, b"old")
    kit.chown_tree(arena.root / "data", attacker_user.uid, attacker_user.gid)
    spec = {"dir": str(d), "old_mtime": OLD, "young_mtime": NOW + 60, "seed": 11}
    cfg = _rule_config(arena)
    race = Race("file replaced between scan and unlink (rule)", arena, attacker_user, spec,
                [arena.victim], mode="replace")
    race.repeat(lambda: run_once(arena, cfg, ["rules"]))
    race.check()
    young = race.attacker.info["young"]
    lost = [n for n in young if not (d / n).exists()]
    assert lost == [], f"{len(lost)} of {len(young)} young files deleted: {lost[:5]}"
    assert race.removed > 0


@pytest.mark.parametrize("replacement", ["young file", "symlink to victim", "fifo",
                                         "hard link elsewhere"])
def test_an_item_a_rule_judged_and_that_is_replaced_before_its_unlink_is_left_alone(
        arena: Arena, replacer: type[_Replacer], replacement: str) -> None:  # noqa: F811
    d = arena.root / "data"
    for i in range(6):
        kit.touch(d / f"f{i}.bak", OLD, b"old")
    kit.touch(arena.victim / "target.bak", OLD, b"victim")
    before_victim = kit.snapshot(arena.victim)
    names = _by_inode(d)
    done: list[str] = []

    def act(st: os.stat_result) -> None:
        name = names.get(st.st_ino)
        if name not in ("f1.bak", "f4.bak") or name in done:
            return
        done.append(name)
        p = d / name
        os.unlink(p)
        if replacement == "young file":
            kit.touch(p, NOW, b"young")
        elif replacement == "symlink to victim":
            p.symlink_to(arena.victim / "target.bak")
            os.utime(p, (OLD, OLD), follow_symlinks=False)
        elif replacement == "fifo":
            os.mkfifo(p)
            kit.age(p, OLD)
        elif replacement == "hard link elsewhere":
            os.link(arena.victim / "target.bak", p)

    replacer.action = staticmethod(act)
    stats = run_once(arena, _rule_config(arena), ["rules"])
    FIGURES.fault(f"item replaced between a rule's judgement and unlink: {replacement}", 2)
    if replacement == "hard link elsewhere":
        for n in ("f1.bak", "f4.bak"):
            assert os.path.samefile(d / n, arena.victim / "target.bak")
            os.unlink(d / n)
    assert kit.changes(before_victim, kit.snapshot(arena.victim),
                       [os.stat(arena.victim / "target.bak").st_ino]) == []
    rules = stats.targets["rules"]
    assert sorted(done) == ["f1.bak", "f4.bak"]
    assert rules.removed == 4 and rules.skipped == 2
    assert len(rules.errors) == 2 and all("changed since" in e for e in rules.errors)
    if replacement == "young file":
        assert (d / "f1.bak").read_bytes() == b"young"


# --- orphans ----------------------------------------------------------------------------------


@needs_root
def test_the_orphans_quarantine_moves_no_symlink_target_and_nothing_outside(
        arena: Arena, attacker_user: User) -> None:
    """Uploads are the attacker's: links to victims at every level of data/prod/uploads,
    a linked sub-directory, a quarantine pre-made as a symlink. Nothing outside changes;
    links are not regular files and stay; the quarantine is refused."""
    import sqlite3

    v, data = arena.victim, arena.root / "data"
    victim_world(v)
    up = data / "prod" / "uploads"
    (data / "prod").mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(data / "prod" / "architect.db")
    con.executescript("CREATE TABLE attachments (id INTEGER PRIMARY KEY, file_path TEXT);"
                      "INSERT INTO attachments (file_path) VALUES ('kept.png');")
    con.close()
    links = {up / "a.png": v / "secret.log", up / "sub": v / "logs",
             up / "x" / "y" / "deep.png": v / "secret.log"}
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        os.utime(link, (OLD, OLD), follow_symlinks=False)
    kit.touch(up / "kept.png", OLD, b"referenced")
    kit.touch(up / "own.png", OLD, b"an orphan")
    own(arena, attacker_user, "data")
    orphans = {"enabled": True, "dirs": ["data/{env}/uploads"],
               "references": [{"table": "attachments", "column": "file_path"}]}
    arena.write_config(environments=["prod"], orphans=orphans)
    FIGURES.attack("symlink in an upload directory (orphans)", len(links))

    w = Watch(v)
    code, doc = real_run(arena, "--only", "orphans")
    changed, events = w.finish()
    assert changed == [] and events == [], events
    assert all(os.path.islink(p) for p in links)
    assert (up / "kept.png").exists() and not (up / "own.png").exists()
    q = data / ".architect-cleanup-quarantine"
    assert [p.name for p in q.rglob("*") if p.is_file()] == ["own.png"]
    assert code == 0, doc

    # a quarantine the attacker made a symlink to a victim directory: refused
    q.rename(data / "q.old")
    q.symlink_to(v / "logs")
    kit.touch(up / "own2.png", OLD, b"another orphan")
    w = Watch(v)
    code, doc = real_run(arena, "--only", "orphans")
    changed, events = w.finish()
    assert changed == [] and events == [], events
    assert (up / "own2.png").exists()
    result = doc["targets"]["orphans"]
    assert result["status"] == "failed" and "a symlink, not followed" in result["message"]
    assert code == 1
