"""Hostile input, second round: what a local user who can write into the dashboard's tree, a
database, a configuration drop-in or the state directory, or who can reach the API port, can
feed the product — and what it must never get out of it.

- every message path (failures, warnings, reasons, summaries, the journal's fields, the API's
  log) shows a hostile string escaped: no raw newline, CR, escape sequence, BEL, bidi
  override, line or next-line separator, or undecodable byte reaches stdout, stderr, the
  journal or the API log;
- no temp or log pattern may match what the product must never take whole, however it is
  spelled, and a directory taken whole keeps what the walk would have kept;
- roots in system trees, untrusted drop-ins, state and runtime directories are refused;
- the lock file is used only when it is a regular file with one link, ours;
- smaller API matters: echoed values are capped, an authenticated 404 is logged as
  authenticated, the token is compared byte for byte.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from architect_cleanup.config import ConfigError, load_config, parse_config
from architect_cleanup.journal import setup_logging
from architect_cleanup.state import StateStore
from architect_cleanup.worker import CleanupWorker

import kit
from conftest import needs_root
from kit import DAY, FIGURES, Arena, User

NOW = time.time()
OLD = NOW - 90 * DAY
MARK = "FORGED"

#: The hostile strings: each puts MARK right after its control character(s), so a raw one
#: would start a forged line, rewrite the terminal, or reorder what is shown.
HOSTILE: dict[str, str] = {
    "newline": f"\n{MARK}  backups  ok      removed 0 (0.0 MB), kept 3",
    "carriage return": f"\r{MARK}",
    "OSC title + BEL": f"\x1b]0;{MARK}\x07",
    "CSI clear + colour": f"\x1b[2J\x1b[31m{MARK}: fake",
    "BEL": f"\x07{MARK}",
    "U+202E right-to-left override": f"\u202e{MARK}",
    "U+2028 line separator": f"\u2028{MARK}",
    "U+0085 next line (NEL)": f"\x85{MARK}",
    "invalid UTF-8 (surrogateescape)": f"\udcff\udcfe{MARK}",
}
#: The ones SQLite can hold (its text is UTF-8).
TEXT_HOSTILE = {k: v for k, v in HOSTILE.items() if "UTF-8" not in k}
#: What must never appear raw in captured output bytes.
RAW_BYTES = (b"\r", b"\x1b", b"\x07", "\x85".encode(), "\u2028".encode(), "\u202e".encode(),
             b"\xff", b"\xfe")
RAW_CHARS = ("\r", "\x1b", "\x07", "\x85", "\u2028", "\u2029", "\u202e")


def raw_in_bytes(data: bytes) -> list[str]:
    """Raw control characters in captured output, and lines a hostile string started."""
    found = [repr(b) for b in RAW_BYTES if b in data]
    found += [repr(line[:80]) for line in data.split(b"\n")
              if line.lstrip().startswith(MARK.encode())]
    return found


def raw_in_text(value: str, *, newlines: bool = False) -> list[str]:
    """The same for a journal field's text (a newline is allowed only where *newlines*: the
    product's own multi-line messages; a line may still never start with MARK)."""
    found = [repr(c) for c in RAW_CHARS if c in value]
    found += [f"surrogate {c!r}" for c in value if 0xDC80 <= ord(c) <= 0xDCFF]
    if newlines:
        found += [repr(line[:80]) for line in value.split("\n")
                  if line.lstrip().startswith(MARK)]
    elif "\n" in value:
        found.append("newline")
    return found


class Journal:
    """The journal handler's sender: every entry's MESSAGE and fields, as journald gets them
    (no journald runs here: PID 1 is not systemd)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, message: str, **fields: Any) -> None:
        self.entries.append({"MESSAGE": message, **fields})

    def problems(self) -> list[str]:
        out = []
        for e in self.entries:
            for key, value in e.items():
                if not isinstance(value, str) or key in ("CODE_FILE", "CODE_FUNC"):
                    continue
                for p in raw_in_text(value, newlines=key in ("MESSAGE", "EXCEPTION_TEXT")):
                    out.append(f"{key}={value[:100]!r}: {p}")
        return out


@pytest.fixture
def logs_to() -> Iterator[tuple[Journal, io.StringIO]]:
    """The package's logging set up as the product does it, with the journal handler's
    entries and stderr captured; restored afterwards."""
    logger = logging.getLogger("architect_cleanup")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    journal, stderr = Journal(), io.StringIO()
    setup_logging(logging.DEBUG, sender=journal, stderr=stderr, stderr_level=logging.INFO)
    try:
        yield journal, stderr
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        handlers, level, propagate = saved
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(level)
        logger.propagate = propagate


# --- 1. every message path escaped ----------------------------------------------------------


def hostile_world(arena: Arena) -> list[str]:
    """A tree whose every message path carries the hostile strings; the environments.

    - one environment per hostile string, whose newest backup is named with it and is larger
      than the policy's ``max_total_size`` (a PolicyError quoting the name fails the target);
    - old logs and temp files named with them (decisions and removals), one immutable (a
      refused removal: an error naming it);
    - a database whose ``task_queue`` refuses each delete with a trigger's RAISE message made
      of them, and a table named with them whose foreign key matches no key (the warning);
    """
    data = arena.root / "data"
    envs = [f"e{i}" for i in range(len(HOSTILE))]
    for env, h in zip(envs, HOSTILE.values(), strict=True):
        bdir = data / env / "backups"
        kit.touch(bdir / f"architect_a{env}.db", OLD, b"b" * 100)
        kit.touch(bdir / f"architect_z{h}.db", OLD + 60, b"b" * 4096)
        kit.touch(data / "logs" / f"old{h}.log", OLD, b"l")
        kit.touch(data / "cache" / f"old{h}.tmp", OLD, b"t")
    frozen = kit.touch(data / "logs" / f"frozen{HOSTILE['newline']}.log", OLD, b"l")
    subprocess.run(["chattr", "+i", str(frozen)], check=True)
    db = data / envs[0] / "architect.db"
    kit.make_main_db(db, NOW, doomed=5, keep=2)
    message = "".join(TEXT_HOSTILE.values()).replace("'", "")
    table = "child" + "".join(TEXT_HOSTILE.values()).replace('"', "")
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("CREATE TRIGGER refuse BEFORE DELETE ON task_queue "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
    con.execute(f'CREATE TABLE "{table}" (a INTEGER, b INTEGER, '
                "FOREIGN KEY (a, b) REFERENCES task_queue)")
    con.close()
    arena.write_config(
        environments=envs,
        backups={"policy": {"default": {"keep_last": 5, "max_total_size": "1K"}}},
        temp={"min_age": "1h"},
        logs={"max_age": "1d"})
    return envs


def unfreeze(arena: Arena) -> None:
    subprocess.run(["chattr", "-R", "-f", "-i", str(arena.root)], check=False)


@needs_root
def test_hostile_strings_reach_no_terminal_and_no_journal_field_raw(
        arena: Arena, logs_to: tuple[Journal, io.StringIO]) -> None:
    """Through the real CLI (stdout and stderr, as bytes: a dry run, a real run, `report`,
    `status`, a configuration path) and through the same run in this process with the
    journal handler's entries captured: no raw control character, no forged line."""
    journal, stderr = logs_to
    try:
        hostile_world(arena)
        for mode in ([], ["--force"]):
            cfg = load_config(str(arena.config))
            CleanupWorker(dry_run=not mode, config=cfg, source="cli", lock_file=arena.lock,
                          state=StateStore(str(arena.state))).run_cleanup()
    finally:
        unfreeze(arena)
    shutil.rmtree(arena.root / "data")
    (arena.root / "data").mkdir()
    # the in-process run really went through the paths: failures, warnings, the FK warning
    messages = "\n".join(e["MESSAGE"] for e in journal.entries)
    assert "smaller than its newest backup" in messages
    assert "does not match a key" in messages
    assert any(e.get("CLEANUP_ERROR") for e in journal.entries)
    assert "\\x1b" in messages and "\\u202e" in messages and "\\xff" in messages
    assert journal.problems() == []
    assert raw_in_bytes(stderr.getvalue().encode("utf-8", "surrogateescape")) == []

    outputs: list[tuple[str, bytes]] = []
    try:
        hostile_world(arena)
        for args in (["run", "-v"], ["run", "-v", "--force"], ["report"], ["status"]):
            proc = subprocess.run(kit.cli_cmd(*args), env=arena.env(), capture_output=True,
                                  timeout=300, check=False, cwd="/")
            assert proc.returncode in (0, 1), (args, proc.stderr[-2000:])
            assert b"Traceback" not in proc.stderr
            outputs += [(f"{args} stdout", proc.stdout), (f"{args} stderr", proc.stderr)]
    finally:
        unfreeze(arena)
    for h in HOSTILE.values():
        bad = os.fsencode(str(arena.base / f"missing{h}.toml"))
        proc = subprocess.run([*kit.cli_cmd(), "--config", bad, "config", "check"],
                              env=arena.env(), capture_output=True, timeout=60, check=False)
        assert proc.returncode == 2 and b"no such configuration file" in proc.stderr
        outputs += [(f"--config {h!r} stdout", proc.stdout),
                    (f"--config {h!r} stderr", proc.stderr)]
    everything = b"".join(data for _, data in outputs)
    assert b"smaller than its newest backup" in everything
    assert b"does not match a key" in everything
    assert b"Cleanup Summary:" in everything
    problems = {where: found for where, data in outputs if (found := raw_in_bytes(data))}
    FIGURES.attack("hostile strings x message paths", len(HOSTILE) * (len(outputs) + 2))
    assert problems == {}


TOKEN = "t0k3n-for-the-hostile-input-tests"


def api_client(arena: Arena) -> Any:
    from architect_cleanup.api import create_app
    app = create_app(token=TOKEN, config_path=str(arena.config), configure_logging=False)
    return app.test_client()


def test_hostile_requests_reach_the_api_log_escaped_and_echoes_are_capped(
        arena: Arena, logs_to: tuple[Journal, io.StringIO]) -> None:
    """Request paths without a token, unknown JSON keys with a token, a 4,000-digit number:
    the API's log (its stderr and its journal entries) holds no raw control character, and
    neither the 400 body nor the log echoes the number in full."""
    journal, stderr = logs_to
    client = api_client(arena)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for h in HOSTILE.values():
        quoted = urllib.parse.quote(h.encode("utf-8", "surrogateescape"), safe="")
        r = client.get(f"/api/system/cleanup/status{quoted}Freed%200.0%20MB")
        assert r.status_code == 401
        r = client.post("/api/system/cleanup", json={h: 1, "dry_run": True}, headers=auth)
        assert r.status_code == 400
    huge = "9" * 4000
    r = client.post("/api/system/cleanup", data=f'{{"backup_retention": {huge}}}',
                    content_type="application/json", headers=auth)
    assert r.status_code == 400
    assert huge[:100] not in r.get_data(as_text=True) and len(r.get_data()) < 1000
    logged = stderr.getvalue()
    assert "unauthenticated" in logged and "unknown key" in logged
    assert huge[:100] not in logged
    assert all(huge[:100] not in str(v) for e in journal.entries for v in e.values())
    assert raw_in_bytes(logged.encode("utf-8", "surrogateescape")) == []
    assert journal.problems() == []
    FIGURES.attack("hostile API requests", 2 * len(HOSTILE) + 1)


def test_an_authenticated_404_is_logged_as_the_token_user(
        arena: Arena, logs_to: tuple[Journal, io.StringIO]) -> None:
    journal, _ = logs_to
    client = api_client(arena)
    r = client.get("/api/system/nothing-here", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404
    [entry] = [e for e in journal.entries if e.get("CLEANUP_API_STATUS") == 404]
    assert entry["CLEANUP_API_USER"] == "api-token"
    assert "unauthenticated" not in entry["MESSAGE"]


@pytest.mark.parametrize("extra", ["\x85", "\xa0", "\x1c", "\x0b"])
def test_the_token_with_unicode_whitespace_around_it_is_refused(
        arena: Arena, logs_to: tuple[Journal, io.StringIO], extra: str) -> None:
    """Only ASCII space (and tab) may surround the token: the exact bytes are compared."""
    client = api_client(arena)
    for header in (f"Bearer {TOKEN}{extra}", f"Bearer {extra}{TOKEN}"):
        r = client.get("/api/system/cleanup/status", headers={"Authorization": header})
        assert r.status_code == 401, repr(header)
    r = client.get("/api/system/cleanup/status", headers={"Authorization": f"Bearer  {TOKEN} "})
    assert r.status_code == 200


# --- 2. patterns judged by what they match; whole directories keep what the walk keeps -------

BROAD = ["?*", "*?", "[!.]*", "**", "?", "*a*", "d*", "*.db", "*-wal", "[a-z]*", "e?"]
PATTERN_KEYS = [("temp", "dir_patterns"), ("temp", "patterns"), ("logs", "patterns"),
                ("logs", "tmp_patterns")]


@pytest.mark.parametrize(("section", "key"), PATTERN_KEYS)
def test_a_pattern_matching_what_must_never_be_removed_is_a_config_error(
        arena: Arena, section: str, key: str) -> None:
    """Judged by what it matches (data, architect.db, a one-letter name, an environment...),
    not by its spelling; each refused pattern is named with its key."""
    for pattern in BROAD:
        arena.write_config(environments=["prod", "e1"], **{section: {key: [pattern]}})
        with pytest.raises(ConfigError) as err:
            load_config(str(arena.config))
        assert any(p.startswith(f"{section}.{key}: {pattern!r} matches")
                   for p in err.value.problems), (pattern, err.value.problems)
    # what the shipped configuration and the usual spellings say is still fine
    arena.write_config(temp={"patterns": ["*.tmp", "*.temp", "*.cache", "*.pyc", "~*"],
                             "dir_patterns": ["__pycache__", ".pytest_cache", "*.egg-info"]},
                       logs={"patterns": ["*.log", "*.log.*"],
                             "tmp_patterns": ["architect*.log"]})
    load_config(str(arena.config))


@needs_root
def test_one_config_line_no_longer_empties_the_root(arena: Arena) -> None:
    """``[temp] dir_patterns = ["?*"]``: the real CLI refuses the configuration (exit 2,
    naming key and pattern) and nothing under the root changes."""
    kit.build_world(arena, NOW, backups=4, logs=3, temp=3, caches=1, tasks=5, errors=5,
                    prompts=5)
    arena.write_config(environments=["prod", "qa"], backups={"retention": {"prod": 3, "qa": 2}},
                       temp={"dir_patterns": ["?*"]})
    before = kit.snapshot(arena.root)
    proc = kit.run_cli(arena, "run", "--force")
    assert proc.returncode == 2, proc.stderr
    assert "temp.dir_patterns: '?*' matches" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert kit.changes(before, kit.snapshot(arena.root)) == []


@needs_root
def test_a_directory_taken_whole_keeps_everything_the_walk_would_keep(
        arena: Arena, logs_to: tuple[Journal, io.StringIO]) -> None:
    """Even a configuration that slips past the pattern guard (built in Python, where no file
    is parsed) with ``dir_patterns = ["?*"]``: a real run keeps every database, backup,
    protected log, browser profile, excluded directory, open file, another target's logs —
    and removes a plain temporary directory whole."""
    from architect_cleanup.config import Config, TempConfig

    w = kit.build_world(arena, NOW, backups=4, logs=3, temp=3, caches=2, tasks=5, errors=5,
                        prompts=5)
    root = arena.root
    cache = root / "scratch"  # a temp directory the rule rightly takes whole
    for i in range(3):
        kit.touch(cache / f"junk{i}", OLD, b"x")
    inner = root / "data" / "tmpwork"  # taken whole by "tmp*" inside data/
    keepers = [
        kit.touch(inner / "prof" / "Local State", OLD, b"{}"),
        kit.touch(inner / "prof" / "Default" / "Cookies", OLD, b"c"),
        kit.touch(inner / "x_chrome_profile_y" / "state", OLD, b"s"),
        kit.touch(inner / "architect_worker.log", OLD, b"active"),
        kit.touch(inner / "held.bin", OLD, b"open"),
    ]
    doomed_inner = kit.touch(inner / "plain.bin", OLD, b"gone")
    top_profile = root / "browser"
    keepers.append(kit.touch(top_profile / "Local State", OLD, b"{}"))
    for p in [cache, inner, *inner.rglob("*"), top_profile, root / "data" / "logs"]:
        if p.is_dir():
            kit.age(p, OLD)
    cfg = load_config(str(arena.config))
    cfg = cfg.replace(temp=TempConfig(dir_patterns=("?*",), patterns=()))
    cfg_inner = cfg.replace(temp=TempConfig(dir_patterns=("tmp*",), patterns=(),
                                            dirs=("data",)))
    assert isinstance(cfg, Config)
    with open(inner / "held.bin", "rb"):
        for c in (cfg, cfg_inner):
            CleanupWorker(dry_run=False, config=c, only=["temp"], lock_file=arena.lock,
                          state=StateStore(str(arena.state))).run_cleanup()
    missing = [str(p) for p in [*w.keep, *keepers, *w.databases, w.assigner]
               if p is not None and not os.path.lexists(p)]
    assert missing == []
    assert not cache.exists() and not doomed_inner.exists()
    # the logs target's old logs stay its own (the logs target did not run)
    assert len(w.doomed_left("logs")) == len(w.by_target["logs"])


# --- 3. trusted paths ------------------------------------------------------------------------

SYSTEM_ROOTS = ["/usr/lib/architect", "/var/lib/architect", "/var/log/architect",
                "/root/architect", "/opt", "/opt/vendor/architect", "/usr/local/architect",
                "/boot/efi", "/etc/ssl", "/lib64/x", "//usr//local/x"]


def test_roots_in_system_trees_are_refused_and_an_exact_opt_directory_is_allowed(
        arena: Arena) -> None:
    for root in SYSTEM_ROOTS:
        arena.config.write_text(f'root = "{root}"\n')
        proc = kit.run_cli(arena, "config", "check")
        assert proc.returncode == 2, (root, proc.stdout)
        assert "root: " in proc.stderr and "system tree" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    for root in ("/opt/architect", "/srv/architect", "/var/www/architect", "/home/a/dash"):
        assert parse_config({"root": root}).root == root


@needs_root
def test_an_untrusted_config_drop_in_is_refused(arena: Arena, attacker_user: User) -> None:
    """Owned by another user, or group/other-writable (as in a 0777 config.d): exit 2 with
    the file named; never merged silently."""
    arena.write_config()
    dropins = arena.config.parent / "config.d"
    dropins.mkdir()
    evil = dropins / "50-evil.toml"
    evil.write_text('[temp]\npatterns = ["*.evil"]\n')
    cases = [("another user's", lambda: os.chown(evil, attacker_user.uid, attacker_user.gid)),
             ("group-writable", lambda: evil.chmod(0o664)),
             ("other-writable", lambda: evil.chmod(0o646)),
             ("in a 0777 config.d", lambda: dropins.chmod(0o777))]
    for what, spoil in cases:
        os.chown(evil, 0, 0)
        evil.chmod(0o644)
        dropins.chmod(0o755)
        proc = kit.run_cli(arena, "config", "check")
        assert proc.returncode == 0 and "*.evil" in proc.stdout  # trusted: merged
        spoil()
        proc = kit.run_cli(arena, "config", "check")
        assert proc.returncode == 2, (what, proc.stdout)
        assert "refused" in proc.stderr and "config.d" in proc.stderr, (what, proc.stderr)
        assert "*.evil" not in proc.stdout and "Traceback" not in proc.stderr


def secret_state(path: Path) -> None:
    """A root-only file that looks like a state document."""
    run = {"started_at": "SECRET-CONTENT", "summary": "SECRET-CONTENT", "result": "success"}
    path.write_text(json.dumps({"format": 1, "last_run": run, "history": [run]}))
    path.chmod(0o600)


@needs_root
def test_state_json_is_never_followed_and_an_untrusted_state_directory_is_refused(
        arena: Arena, attacker_user: User) -> None:
    secret = arena.base / "root-only.json"
    secret_state(secret)
    before = (secret.read_bytes(), secret.stat().st_mode)
    # another user's state directory with state.json a symlink to the root-only file
    arena.state.mkdir()
    (arena.state / "state.json").symlink_to(secret)
    os.chown(arena.state, attacker_user.uid, attacker_user.gid)
    for args in (["report"], ["status"], ["report", "--json"]):
        proc = kit.run_cli(arena, *args)
        assert "SECRET" not in proc.stdout + proc.stderr, args
        assert "Traceback" not in proc.stderr
    proc = kit.run_cli(arena, "run", "--force")
    assert proc.returncode == 1 and "State: cannot write" in proc.stdout, proc.stdout
    assert (secret.read_bytes(), secret.stat().st_mode) == before
    # a directory others can write, owned by root: refused too
    os.chown(arena.state, 0, 0)
    arena.state.chmod(0o777)
    assert "SECRET" not in kit.run_cli(arena, "report").stdout
    assert kit.run_cli(arena, "run", "--force").returncode == 1
    assert (secret.read_bytes(), secret.stat().st_mode) == before
    # a trusted directory: the symlink itself is still not followed
    arena.state.chmod(0o755)
    proc = kit.run_cli(arena, "report")
    assert "SECRET" not in proc.stdout and "symlink" in proc.stdout, proc.stdout
    assert (secret.read_bytes(), secret.stat().st_mode) == before


@needs_root
def test_an_untrusted_runtime_directory_is_refused(arena: Arena, attacker_user: User) -> None:
    """The lock's directory owned by root but writable by others, or owned by another user:
    exit 2 saying so, and no lock file made there."""
    arena.run.mkdir()
    for uid, mode in ((0, 0o777), (0, 0o1777), (attacker_user.uid, 0o755)):
        os.chown(arena.run, uid, 0)
        arena.run.chmod(mode)
        proc = kit.run_cli(arena, "run")
        assert proc.returncode == 2, (uid, mode, proc.stderr)
        assert "runtime directory" in proc.stderr and "Traceback" not in proc.stderr
        assert not (arena.run / "cleanup.lock").exists()


# --- 4. the lock file ------------------------------------------------------------------------


def _lock_cases(arena: Arena) -> Iterator[tuple[str, Path | None]]:
    lock = Path(arena.lock)
    arena.run.mkdir(exist_ok=True)
    lock.mkdir()
    yield "a directory", None
    lock.rmdir()
    os.mkfifo(lock)
    yield "a FIFO", None
    lock.unlink()
    target = arena.base / "elsewhere"
    target.write_text("keep me\n")
    target.chmod(0o600)
    lock.symlink_to(target)
    yield "a symlink", target
    lock.unlink()
    os.link(target, lock)
    yield "a hard link", target
    lock.unlink()
    shutil.rmtree(arena.run)
    arena.run.write_text("not a directory\n")
    yield "a file where the runtime directory should be", arena.run
    arena.run.unlink()


def test_a_lock_file_that_is_not_a_plain_file_of_ours_is_a_one_line_error(arena: Arena) -> None:
    """A directory, FIFO, symlink or hard link at cleanup.lock, or a file where the runtime
    directory should be: exit 2, one line naming the problem, no traceback; and a file
    reached through the name is neither truncated nor chmod'ed."""
    tried = 0
    for what, victim in _lock_cases(arena):
        before = (victim.read_bytes(), victim.stat().st_mode) if victim else None
        proc = kit.run_cli(arena, "run", "--force", timeout=60)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (what, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and len(lines) == 1, (what, proc.stderr)
        assert "lock" in lines[0], (what, lines)
        if victim is not None:
            assert (victim.read_bytes(), victim.stat().st_mode) == before, what
        tried += 1
    FIGURES.attack("hostile lock files", tried)
    assert tried == 5
