"""``architect-cleanup migrate``: moving a dashboard off the original ``cleanup_worker.py``.

One survey of what the original worker left on the machine, each finding a value the CLI
renders (or prints as JSON):

1. *its process*: the PID file ``/tmp/architect_cleanup_worker.pid`` and every process whose
   command line runs ``cleanup_worker.py`` (from ``/proc``), with how to stop it;
2. *what started it*: cron lines (``/etc/crontab``, ``/etc/cron.d/*``, the user crontabs in
   ``/var/spool/cron/crontabs/*``, the ``/etc/cron.{hourly,daily,weekly,monthly}`` scripts) and
   unit or supervisor files that name it;
3. *its state*: ``/tmp/architect_cleanup_worker_state.json``, whose last run is imported into
   our run history, marked ``"source": "imported"`` (``report`` and ``status`` show it);
4. *the dashboard change*: the lines of the dashboard's code that import the original worker,
   with the compatibility import that replaces them, or the blueprint snippet;
5. *the configuration* against what the original did (its defaults, or the flags its cron line
   passed), and every safety rule that differs.

Only :func:`apply` changes anything (``--force``): it imports the last run (under the run
lock, once: an imported run is recognised) and removes a PID file whose process is gone. It
stops no process and edits no crontab or dashboard file: those steps are printed for the
operator. Every path is read below *rootdir* (:class:`Places`), so tests and chroots use
another root, as unattended-upgrades' ``rootdir`` does; ``/proc`` is its own setting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from architect_cleanup import history
from architect_cleanup.config import Config, format_duration
from architect_cleanup.lock import RunLock, lock_path
from architect_cleanup.retention import Policy
from architect_cleanup.state import HISTORY_LIMIT, StateStore
from architect_cleanup.stats import MB, STAT_FIELDS

log = logging.getLogger(__name__)

SCRIPT = "cleanup_worker.py"
PID_FILE = "/tmp/architect_cleanup_worker.pid"  # noqa: S108 (the original's paths)
STATE_FILE = "/tmp/architect_cleanup_worker_state.json"  # noqa: S108
LOG_FILE = "/tmp/architect_cleanup_worker.log"  # noqa: S108
#: Files with crontab lines (``/etc/crontab`` and ``cron.d`` have a user field).
SYSTEM_CRONTABS = ("/etc/crontab",)
CRON_DIRS = ("/etc/cron.d",)
USER_CRON_DIR = "/var/spool/cron/crontabs"
#: Scripts run by run-parts, and units or supervisor programs that may run the worker.
SCRIPT_DIRS = ("/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly",
               "/etc/systemd/system", "/etc/supervisor/conf.d", "/etc/init.d")
SOURCE = "imported"

# The original worker's defaults (workers/cleanup_worker.py).
ORIGINAL_RETENTION = {"prod": 10, "qa": 5, "dev": 5, "test": 3, "default": 5}
ORIGINAL_ENVIRONMENTS = ("prod", "qa", "dev", "test")
ORIGINAL_AGES = {"logs": 30, "tasks": 7, "errors": 30, "prompts": 14}
ORIGINAL_INTERVAL = "hourly (its --daemon loop slept 3600 s between runs)"
#: The names the dashboard imported and the compatibility module provides.
COMPAT_NAMES = frozenset({"CleanupWorker", "CleanupStats", "DEFAULT_BACKUP_RETENTION",
                          "PID_FILE", "STATE_FILE", "LOG_FILE", "load_state", "save_state",
                          "DEFAULT_LOG_AGE_DAYS", "DEFAULT_TASK_AGE_DAYS",
                          "DEFAULT_ERROR_AGE_DAYS", "DEFAULT_PROMPT_AGE_DAYS",
                          "CLEANUP_INTERVAL"})
_IMPORT_RX = re.compile(r"^\s*from\s+(?:[\w.]+\.)?cleanup_worker\s+import\s+(.+)$")
_PLAIN_IMPORT_RX = re.compile(r"^\s*import\s+(?:[\w.]+\.)?cleanup_worker\b")

BLUEPRINT_SNIPPET = """\
from architect_cleanup.api import cleanup_blueprint
bp = cleanup_blueprint(actor=lambda: {"user_id": current_user.id, "user": current_user.username,
                                      "ip_address": request.remote_addr})
bp.before_request(require_login)          # the dashboard's own login check
app.register_blueprint(bp)                # in place of its two /api/system/cleanup routes"""


@dataclass(frozen=True)
class Places:
    """Where to look: every path below *rootdir*; processes in *proc*."""

    rootdir: str = "/"
    proc: str = "/proc"

    def path(self, path: str) -> str:
        return os.path.join(self.rootdir, path.lstrip("/"))


# --- what the original worker was told ---------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """The original worker's command line: its flags and what they meant to it."""

    script: str
    base_dir: str | None = None  # the dashboard directory (the script's ../), when known
    force: bool = False
    dry_run_flag: bool = False
    daemon: bool = False
    stop: bool = False
    status: bool = False
    keep: int | None = None
    days: int | None = None

    @property
    def cleans(self) -> bool:
        """A real cleanup: the daemon always cleaned; a run only with --force."""
        if self.stop or self.status:
            return False
        return self.daemon or (self.force and not self.dry_run_flag)

    def retention(self) -> dict[str, int]:
        """What the original kept: --keep N (when not 0) for every environment; the daemon
        ignored --keep and --days."""
        if self.keep and not self.daemon:
            return dict.fromkeys(ORIGINAL_RETENTION, self.keep)
        return dict(ORIGINAL_RETENTION)

    def ages(self) -> dict[str, int]:
        """--days N applied to logs, tasks, errors and prompts alike."""
        if self.days and not self.daemon:
            return dict.fromkeys(ORIGINAL_AGES, self.days)
        return dict(ORIGINAL_AGES)

    def describe(self) -> str:
        if self.daemon:
            return "--daemon (real runs every hour, original defaults)"
        if self.stop or self.status:
            return "--stop" if self.stop else "--status"
        parts = ["--force" if self.cleans else "dry run"]
        if self.keep:
            parts.append(f"--keep {self.keep}")
        if self.days:
            parts.append(f"--days {self.days}")
        return " ".join(parts)


def parse_invocation(argv: Sequence[str], cwd: str | None = None) -> Invocation | None:
    """The worker's invocation in a command (argv or shell words), or None when it does not
    run ``cleanup_worker.py``. A ``cd DIR`` before it, or *cwd*, places a relative script."""
    words = list(argv)
    at = next((i for i, w in enumerate(words) if os.path.basename(w) == SCRIPT), None)
    if at is None:
        return None
    script = words[at]
    where = cwd
    for i, w in enumerate(words[:at]):
        if w == "cd" and i + 1 < at:
            where = words[i + 1]
    full = script if script.startswith("/") else (
        os.path.normpath(os.path.join(where, script)) if where else None)
    base = os.path.dirname(os.path.dirname(full)) if full else None
    inv: dict[str, Any] = {}
    rest = words[at + 1:]
    i = 0
    while i < len(rest):
        w = rest[i]
        if w in ("&&", ";", "||", "|", ">", ">>", "2>&1"):
            break
        key, _, value = w.partition("=")
        if key in ("--keep", "--days"):
            if not value and i + 1 < len(rest):
                i += 1
                value = rest[i]
            with contextlib.suppress(ValueError):
                inv[key[2:]] = int(value)
        elif w in ("--force", "--daemon", "--stop", "--status"):
            inv[w[2:]] = True
        elif w == "--dry-run":
            inv["dry_run_flag"] = True
        i += 1
    return Invocation(script=full or script, base_dir=base, **inv)


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote: cron does not care, nor do we
        return command.split()


# --- 1. the process --------------------------------------------------------------------------


@dataclass(frozen=True)
class OldProcess:
    pid: int
    command: str
    invocation: Invocation


def find_processes(proc: str = "/proc") -> list[OldProcess]:
    """Every process running ``cleanup_worker.py`` (ourselves excepted)."""
    found = []
    try:
        names = [n for n in os.listdir(proc) if n.isdigit()]
    except OSError:
        return []
    for name in sorted(names, key=int):
        pid = int(name)
        if pid == os.getpid():
            continue
        try:
            with open(os.path.join(proc, name, "cmdline"), "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        if not any(os.path.basename(a) == SCRIPT for a in argv):
            continue
        cwd = None
        with contextlib.suppress(OSError):
            cwd = os.readlink(os.path.join(proc, name, "cwd"))
        inv = parse_invocation(argv, cwd)
        if inv is not None:
            found.append(OldProcess(pid, shlex.join(argv), inv))
    return found


@dataclass(frozen=True)
class PidFile:
    path: str
    exists: bool
    pid: int | None = None
    #: the PID names a live process running cleanup_worker.py
    live: bool = False
    problem: str | None = None


def read_pid_file(places: Places, processes: Iterable[OldProcess]) -> PidFile:
    path = places.path(PID_FILE)
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(64).strip()
    except FileNotFoundError:
        return PidFile(path, exists=False)
    except OSError as exc:
        return PidFile(path, exists=True, problem=f"cannot read it: {exc.strerror}")
    if not text.isdigit():
        return PidFile(path, exists=True, problem=f"it does not hold a PID ({text[:20]!r})")
    pid = int(text)
    live = any(p.pid == pid for p in processes)
    problem = None
    if not live:
        try:
            with open(os.path.join(places.proc, str(pid), "cmdline"), "rb") as fh:
                other = bool(fh.read(1))  # a zombie has an empty command line
        except OSError:
            other = False
        problem = (f"PID {pid} runs another program now: a stale PID file" if other
                   else f"no process {pid}: a stale PID file")
    return PidFile(path, exists=True, pid=pid, live=live, problem=problem)


# --- 2. what started it ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleLine:
    path: str  # as the machine names it (without rootdir)
    lineno: int
    text: str
    kind: str  # crontab | user-crontab | script
    user: str | None = None
    schedule: str | None = None
    invocation: Invocation | None = None

    def how_to_remove(self) -> str:
        if self.kind == "user-crontab":
            return (f"remove it with `crontab -u {self.user} -e` (line {self.lineno}), or "
                    "comment it out")
        if self.kind == "crontab":
            return f"delete or comment out line {self.lineno} of {self.path}"
        return f"remove the worker from {self.path} (line {self.lineno})"


def _lines(path: str) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from enumerate(fh.read(1 << 20).splitlines(), 1)
    except OSError:
        return


def _files(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return sorted(e.path for e in it if e.is_file(follow_symlinks=False))
    except OSError:
        return []


def _crontab_line(shown: str, lineno: int, line: str, kind: str, user: str | None
                  ) -> ScheduleLine | None:
    text = line.strip()
    if not text or text.startswith("#") or SCRIPT not in text:
        return None
    fields = text.split()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", text):
        return None  # an environment line
    nsched = 1 if fields[0].startswith("@") else 5
    schedule = " ".join(fields[:nsched])
    rest = fields[nsched:]
    if kind == "crontab" and rest:
        user, rest = rest[0], rest[1:]
    command = text.split(None, nsched + (1 if kind == "crontab" else 0))[-1]
    return ScheduleLine(shown, lineno, text, kind, user, schedule,
                        parse_invocation(_words(command)))


def find_schedules(places: Places) -> list[ScheduleLine]:
    """Cron lines, run-parts scripts and unit files that run ``cleanup_worker.py``."""
    found: list[ScheduleLine] = []
    crontabs: list[tuple[str, str, str | None]] = [(p, "crontab", None)
                                                   for p in SYSTEM_CRONTABS]
    for d in CRON_DIRS:
        crontabs += [(f"{d}/{os.path.basename(f)}", "crontab", None)
                     for f in _files(places.path(d))]
    crontabs += [(f"{USER_CRON_DIR}/{os.path.basename(f)}", "user-crontab",
                  os.path.basename(f)) for f in _files(places.path(USER_CRON_DIR))]
    for shown, kind, user in crontabs:
        for lineno, line in _lines(places.path(shown)):
            entry = _crontab_line(shown, lineno, line, kind, user)
            if entry:
                found.append(entry)
    for d in SCRIPT_DIRS:
        for f in _files(places.path(d)):
            shown = f"{d}/{os.path.basename(f)}"
            for lineno, line in _lines(f):
                text = line.strip()
                if SCRIPT in text and not text.startswith(("#", ";")):
                    found.append(ScheduleLine(shown, lineno, text, "script",
                                              invocation=parse_invocation(_words(
                                                  text.partition("=")[2]
                                                  if text.startswith(("ExecStart", "command"))
                                                  else text))))
    return found


# --- 3. its state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OldState:
    path: str
    exists: bool
    last_run: str | None = None
    stats: Mapping[str, Any] | None = None
    dry_run: bool = False
    problem: str | None = None

    def run_record(self) -> dict[str, Any]:
        """The last run as a record of our run history, marked imported."""
        assert self.last_run is not None and self.stats is not None
        when = utc_from_original(self.last_run)
        counts: dict[str, Any] = {k: int(self.stats.get(k, 0)) for k in STAT_FIELDS.values()}
        mb = float(self.stats.get("space_freed_mb", 0.0))
        counts["space_freed_mb"] = round(mb, 2)
        counts["space_freed"] = round(mb * MB)
        words = ", ".join(f"{counts[f]} {n}" for n, f in STAT_FIELDS.items())
        head = "would free" if self.dry_run else "freed"
        return {
            "started_at": when,
            "finished_at": when,
            "dry_run": self.dry_run,
            "result": "success",
            "duration_s": None,
            "source": SOURCE,
            "imported": True,
            "imported_from": self.path,
            "original_last_run": self.last_run,
            "pid": None,
            "stats": counts,
            "failed_targets": [],
            "message": "Cleanup completed (imported from the original worker's state)",
            "summary": f"Imported from the original worker: {head} {mb:.1f} MB: {words}",
        }


def utc_from_original(text: str) -> str:
    """The original's ``datetime.now().isoformat()`` (local time, naive) as our UTC text."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.astimezone()  # the machine's local time, as the original wrote it
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def read_old_state(places: Places) -> OldState:
    path = places.path(STATE_FILE)
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(1 << 20))
    except FileNotFoundError:
        return OldState(path, exists=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return OldState(path, exists=True, problem=f"unreadable or not JSON ({exc})")
    if not isinstance(doc, dict):
        return OldState(path, exists=True, problem="not a JSON object")
    last, stats = doc.get("last_run"), doc.get("stats")
    problems = []
    if not isinstance(last, str):
        problems.append("no last_run time")
    else:
        try:
            utc_from_original(last)
        except ValueError:
            problems.append(f"last_run {last[:40]!r} is not an ISO time")
    if not isinstance(stats, dict):
        problems.append("no stats object")
    else:
        bad = [k for k, v in stats.items()
               if k in STAT_FIELDS.values() and (isinstance(v, bool) or not isinstance(v, int)
                                                 or v < 0)]
        mb = stats.get("space_freed_mb", 0)
        if (isinstance(mb, bool) or not isinstance(mb, int | float) or not math.isfinite(mb)
                or mb < 0):
            bad.append("space_freed_mb")
        if bad:
            problems.append("stats with values that are not counts: " + ", ".join(bad))
    if problems:
        return OldState(path, exists=True, problem="; ".join(problems))
    assert isinstance(last, str) and isinstance(stats, dict)
    return OldState(path, exists=True, last_run=last, stats=stats,
                    dry_run=doc.get("dry_run") is True)


def already_imported(history: Iterable[Mapping[str, Any]], old: OldState) -> bool:
    return any(h.get("source") == SOURCE and h.get("original_last_run") == old.last_run
               for h in history)


# --- 4. the dashboard's code -----------------------------------------------------------------


@dataclass(frozen=True)
class ImportLine:
    path: str
    lineno: int
    text: str
    replacement: str | None  # None: names the compatibility module does not have
    missing: tuple[str, ...] = ()


def find_dashboard_imports(places: Places, roots: Iterable[str]) -> list[ImportLine]:
    """Lines of the dashboards' top-level ``*.py`` files that import the original worker."""
    found = []
    for root in dict.fromkeys(roots):
        for f in _files(places.path(root)):
            if not f.endswith(".py"):
                continue
            shown = os.path.join(root, os.path.basename(f))
            for lineno, line in _lines(f):
                m = _IMPORT_RX.match(line)
                if m:
                    names = [n.strip() for n in m.group(1).strip("()\\ ").split(",")
                             if n.strip()]
                    bare = [n.split(" as ")[0].strip() for n in names]
                    missing = tuple(n for n in bare if n not in COMPAT_NAMES)
                    indent = line[:len(line) - len(line.lstrip())]
                    repl = (None if missing or not names else
                            f"{indent}from architect_cleanup.compat import {', '.join(names)}")
                    found.append(ImportLine(shown, lineno, line.rstrip(), repl, missing))
                elif _PLAIN_IMPORT_RX.match(line):
                    found.append(ImportLine(shown, lineno, line.rstrip(),
                                            "import architect_cleanup.compat as cleanup_worker"))
    return found


# --- 5. the configuration against the original -----------------------------------------------


@dataclass(frozen=True)
class Difference:
    topic: str
    original: str
    ours: str
    #: "action": the operator should change something; "default": a value differs from
    #: what the original did; "rule": a safety rule that differs; "same": nothing differs
    kind: str
    advice: str = ""


def compare_config(cfg: Config, runs: Sequence[tuple[str, Invocation]], roots: Sequence[str]
                   ) -> list[Difference]:
    """Every place where *cfg* and our rules differ from what the original did: its defaults,
    or what each of *runs* (``(where, invocation)``: the commands its schedules ran) told it."""
    out = _root_differences(cfg, roots)
    cleaning = [(where, inv) for where, inv in runs if inv.cleans]
    out.append(_mode_difference(cfg, cleaning))
    envs = tuple(cfg.environments)
    if envs != ORIGINAL_ENVIRONMENTS:
        out.append(Difference("environments", ", ".join(ORIGINAL_ENVIRONMENTS),
                              ", ".join(envs), "default"))
    sources: list[tuple[str, Invocation | None]] = [*cleaning] or [("its defaults", None)]
    out += _retention_differences(cfg, sources)
    out += _age_differences(cfg, sources)
    out += _rules(cfg)
    return out


def _root_differences(cfg: Config, roots: Sequence[str]) -> list[Difference]:
    """The dashboard directory the original cleaned against our ``root`` (none: unknown)."""
    if roots and cfg.root not in roots:
        return [Difference(
            "root", f"cleaned {', '.join(roots)}", f"root = {cfg.root!r}", "action",
            f'set root = "{roots[0]}" in /etc/architect-cleanup/config.toml')]
    if roots:
        return [Difference("root", cfg.root, cfg.root, "same")]
    return []


def _mode_difference(cfg: Config, cleaning: Sequence[tuple[str, Invocation]]) -> Difference:
    """Real runs against previews: *cleaning* are the original's runs that cleaned."""
    if cleaning and cfg.dry_run:
        return Difference(
            "dry_run", "cleaned for real (" + "; ".join(w for w, _ in cleaning) + ")",
            "dry_run = true: the timer only previews", "action",
            "check `architect-cleanup run` (a preview), then set dry_run = false")
    return Difference("dry_run", "real runs" if cleaning else "dry run unless --force",
                      f"dry_run = {str(cfg.dry_run).lower()}",
                      "same" if bool(cleaning) != cfg.dry_run else "default")


def _told(value: Iterable[tuple[str, Any]]) -> str:
    """What each of the original's runs was told: ``value (where); ...``."""
    return "; ".join(f"{v} ({where})" for where, v in value)


def _retention_differences(cfg: Config, sources: Sequence[tuple[str, Invocation | None]]
                           ) -> list[Difference]:
    """The backups each environment keeps, against what each of *sources* kept."""
    out = []
    envs = tuple(cfg.environments)
    for env in (*dict.fromkeys((*ORIGINAL_ENVIRONMENTS, *envs)), "default"):
        if env != "default" and env not in envs:
            continue
        policy, key = cfg.backups.policy_for(env)
        plain = policy == Policy.newest(policy.keep_last)
        ours = f"{key} = {policy.keep_last}" if plain else f"{key}: {policy.describe()}"
        kept = [(where, (inv.retention() if inv else ORIGINAL_RETENTION).get(
            env, ORIGINAL_RETENTION["default"])) for where, inv in sources]
        same = all(policy == Policy.newest(n) for _, n in kept)
        out.append(Difference(f"backups kept ({env})",
                              _told([(w, f"newest {n}") for w, n in kept]), ours,
                              "same" if same else "default"))
    return out


def _age_differences(cfg: Config, sources: Sequence[tuple[str, Invocation | None]]
                     ) -> list[Difference]:
    """The age limits of logs, tasks, errors and prompts, against what *sources* used."""
    out = []
    for name, current in (("logs", cfg.logs.max_age), ("tasks", cfg.tasks.max_age),
                          ("errors", cfg.errors.max_age), ("prompts", cfg.prompts.max_age)):
        ages = [(where, (inv.ages() if inv else ORIGINAL_AGES)[name]) for where, inv in sources]
        same = all(current.total_seconds() == d * 86400 for _, d in ages)
        out.append(Difference(f"{name}.max_age", _told([(w, f"{d} days") for w, d in ages]),
                              f'"{format_duration(current)}"', "same" if same else "default"))
    return out


#: A safety rule or behaviour that differs: (topic, what the original did, what we do).
_Rule = tuple[str, str, str]


def _rules(cfg: Config) -> list[Difference]:
    """The safety rules and behaviours that differ from the original's, whatever the config."""
    rows = [*_backup_rules(cfg), *_log_rules(cfg), *_database_rules(cfg), *_file_rules(cfg),
            *_run_rules()]
    return [Difference(topic, orig, ours, "rule") for topic, orig, ours in rows]


def _backup_rules(cfg: Config) -> list[_Rule]:
    b = cfg.backups
    return [
        ("backups: which files", "*.db only",
         "backups.patterns: " + ", ".join(b.patterns)
         + "; a backup's -wal, -shm and -journal files go with it"),
        ("backups: young backups", "no minimum age",
         f"backups.min_age = \"{format_duration(b.min_age)}\": younger backups are kept and "
         "do not count toward the newest N"),
        ("backups: the newest", "a retention of 0 deleted them all",
         "the newest backup of each environment is always kept; a retention below 1 is a "
         "configuration error"),
        ("backups: directories", "data/{prod,qa,dev,test}/backups and data/backups",
         f"{b.dir} for each of {', '.join(cfg.environments)}, and {b.shared_dir}"),
    ]


def _log_rules(cfg: Config) -> list[_Rule]:
    lg = cfg.logs
    tmp = (f"only the top level of {lg.tmp_dir}, only {', '.join(lg.tmp_patterns)}"
           if lg.tmp_dir else "not cleaned (logs.tmp_dir is empty)")
    return [
        ("logs in /tmp", "every *.log and *.log.* below /tmp, recursively", tmp),
        ("logs: protected", "4 named worker logs",
         "logs.protect: " + ", ".join(lg.protect) + "; and any file a process has open"
         if cfg.safety.skip_open_files else "logs.protect: " + ", ".join(lg.protect)),
        ("logs in a dry run", "a dry run reported logs_deleted 0 whatever it would delete",
         "a dry run counts the logs a real run would delete"),
    ]


def _database_rules(cfg: Config) -> list[_Rule]:
    return [
        ("tasks: age", "by created_at (a long task that finished yesterday was deleted)",
         "by the finish time: completed_at, else updated_at, else created_at; a finished "
         "task without a finish time is kept"),
        ("tasks: databases", "task_queue in the one database its db module named",
         f"{' or '.join(cfg.tasks.tables)} in every database of database.paths "
         f"({', '.join(cfg.database.paths)})"),
        ("errors: resolved", "only with a `resolved` column, which the real schema lacks: it "
         "never deleted an error",
         "a true `resolved` column, else status = 'resolved': the first real run deletes "
         f"resolved errors older than {format_duration(cfg.errors.max_age)}"),
        ("prompts", "prompts table", f"{' or '.join(cfg.prompts.tables)}; archived, never "
         "deleted, as before; skipped without the archive columns"),
    ]


def _file_rules(cfg: Config) -> list[_Rule]:
    t = cfg.temp
    return [
        ("temp files: age", "none (a file being written was deleted)",
         f"temp.min_age = \"{format_duration(t.min_age)}\""),
        ("temp files: where", "below data/",
         "below " + ", ".join("root" if d == "." else d for d in t.dirs)
         + f" ({cfg.root}), browser profiles excluded"),
        ("timestamps", "compared with the local time",
         f"naive database times read as {cfg.database.naive_timezone} "
         "(database.naive_timezone)"),
        ("traversal", "followed symlinks, crossed mount points",
         "never follows a symlink, stays on the root's file system, re-checks each file "
         "right before removing it, keeps files modified in the future"),
    ]


def _run_rules() -> list[_Rule]:
    return [
        ("--days", "set the age of logs, tasks, errors and prompts",
         "sets logs and tasks (errors.max_age and prompts.max_age stay as configured)"),
        ("--keep 0", "ignored (defaults used)", "refused: --keep must be at least 1"),
        ("dry_run in the API and CleanupWorker", "any false value (0, \"\") cleaned",
         "only a literal false cleans; the API answers 400 to \"dry_run\": 0"),
        ("runs at the same time", "nothing stopped two runs",
         "one run at a time (a lock in /run/architect-cleanup; exit 75, HTTP 409)"),
        ("schedule", ORIGINAL_INTERVAL + " or its cron line",
         "architect-cleanup.timer: hourly with a random delay, Persistent=true "
         "(`systemctl edit architect-cleanup.timer` to change OnCalendar=)"),
        ("state and log", f"{STATE_FILE} (last real run), {LOG_FILE}",
         "/var/lib/architect-cleanup/state.json (every run, with a history) and the journal "
         "(`journalctl -u architect-cleanup`); a real run writes the dashboard's activity_log"),
    ]


# --- the survey and what --force applies ------------------------------------------------------


@dataclass
class Report:
    """What ``migrate`` found, and (with ``--force``) what it did."""

    rootdir: str
    pid_file: PidFile
    processes: list[OldProcess]
    schedules: list[ScheduleLine]
    old_state: OldState
    imports: list[ImportLine]
    roots: list[str]
    differences: list[Difference]
    state_file: str
    imported: bool = False  # the last run is in our history (now or before)
    applied: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["steps"] = steps(self)
        return doc


def survey(cfg: Config, places: Places | None = None,
           store: StateStore | None = None) -> Report:
    """Look for the original worker everywhere; change nothing."""
    places = places or Places()
    store = store or StateStore()
    processes = find_processes(places.proc)
    pid_file = read_pid_file(places, processes)
    schedules = find_schedules(places)
    invocations = [p.invocation for p in processes] + [
        s.invocation for s in schedules if s.invocation is not None]
    roots = list(dict.fromkeys(i.base_dir for i in invocations if i.base_dir))
    old = read_old_state(places)
    imported = bool(old.last_run) and already_imported(store.load().get("history", []), old)
    # What the original did on this machine: what its daemon and its schedules ran.
    runs = [(f"its daemon, PID {p.pid}" if p.invocation.daemon else f"PID {p.pid}",
             p.invocation) for p in processes]
    runs += [(f"{s.path}:{s.lineno}", s.invocation) for s in schedules
             if s.invocation is not None]
    if old.last_run is not None and not old.dry_run and not any(i.cleans for _, i in runs):
        # The original saved its state after real runs only: it cleaned, even when what
        # started it is gone (stopped, its cron line removed) and its flags are unknown.
        runs.append((f"its state file: a real run at {old.last_run}",
                     Invocation(script=SCRIPT, force=True)))
    imports = find_dashboard_imports(places, [cfg.root, *roots])
    return Report(rootdir=places.rootdir, pid_file=pid_file, processes=processes,
                  schedules=schedules, old_state=old, imports=imports, roots=roots,
                  differences=compare_config(cfg, runs, roots), state_file=store.path,
                  imported=imported)


def apply(report: Report, places: Places | None = None, store: StateStore | None = None,
          lock_file: str | None = None) -> Report:
    """``--force``: import the last run (once, under the run lock) and remove a stale PID
    file. Raises LockHeld when a cleanup is running."""
    places = places or Places()
    store = store or StateStore()
    report.forced = True
    old = report.old_state
    if old.last_run is not None and not report.imported:
        with RunLock(lock_file or lock_path()):
            _import_state(report, store, old)
            if report.imported:
                _import_history(report, store, old)
    if stale_pid_file(report):
        _remove_pid_file(report)
    return report


def _import_state(report: Report, store: StateStore, old: OldState) -> None:
    """The original's last run into state.json's history (chronologically), once."""
    doc = store.load()
    if store.problem and os.path.exists(store.path):
        report.problems.append(f"not imported: {store.problem} (fix or move it away "
                               "first)")
        return
    if already_imported(doc["history"], old):
        report.imported = True
        return
    history = [*doc["history"], old.run_record()]
    # chronological, so `report` lists it where it happened
    history.sort(key=lambda h: str(h.get("started_at") or ""))
    history = history[-HISTORY_LIMIT:]
    doc = {**doc, "history": history, "last_run": history[-1]}
    try:
        store.write(doc)
    except OSError as exc:
        report.problems.append(f"not imported: cannot write {store.path}: "
                               f"{exc.strerror or exc}")
        return
    report.imported = True
    report.applied.append(f"imported the last run of {old.last_run} from "
                          f"{old.path} into {store.path}")
    log.info("migrate: imported the original worker's last run (%s)", old.last_run)


def _remove_pid_file(report: Report) -> None:
    """Remove the stale PID file (see :func:`stale_pid_file`)."""
    pf = report.pid_file
    try:
        os.unlink(pf.path)
    except OSError as exc:
        report.problems.append(f"cannot remove the stale {pf.path}: {exc.strerror}")
    else:
        report.applied.append(f"removed the stale PID file {pf.path} ({pf.problem})")
        report.pid_file = PidFile(pf.path, exists=False)


def _import_history(report: Report, store: StateStore, old: OldState) -> None:
    """The imported run in the history database too (``report`` reads it), once."""
    opened = history.open_history(store.directory)
    if opened.history is None:
        report.problems.append(f"not imported into the history database: {opened.warning}")
        return
    try:
        rec = old.run_record()
        when = datetime.fromisoformat(rec["started_at"])
        if opened.history.import_run(started_at=when, finished_at=when, dry_run=rec["dry_run"],
                                     result="success", stats=rec["stats"],
                                     message=rec["summary"]) is not None:
            report.applied.append(f"imported it into {opened.history.path} too")
    finally:
        opened.history.close()


def stale_pid_file(report: Report) -> bool:
    """The PID file is left over: it names no running worker, and no worker runs at all
    (a PID file that does not hold a PID is left for the operator to look at)."""
    pf = report.pid_file
    return pf.exists and pf.pid is not None and not pf.live and not report.processes


def steps(report: Report) -> list[str]:
    """What is left for the operator to do, in order."""
    out = []
    stop_at = {p.pid for p in report.processes}
    for p in report.processes:
        how = (f"`cd {p.invocation.base_dir} && python3 workers/{SCRIPT} --stop`"
               if p.invocation.daemon and p.invocation.base_dir else f"`kill -TERM {p.pid}`")
        what = "its daemon" if p.invocation.daemon else "a run in progress"
        out.append(f"stop the original worker ({what}, PID {p.pid}): {how}")
    pf = report.pid_file
    if stale_pid_file(report):
        out.append(f"remove the stale {pf.path} ({pf.problem}): `migrate --force` does it")
    elif pf.exists and not pf.live and pf.pid not in stop_at:
        out.append(f"remove {pf.path} once the worker is stopped ({pf.problem})")
    for s in report.schedules:
        out.append(f"{s.how_to_remove()} — the timer replaces it: {s.text}")
    if report.old_state.last_run is not None and not report.imported:
        out.append("import the original's last run: `architect-cleanup migrate --force`")
    for i in report.imports:
        if i.replacement:
            out.append(f"{i.path}:{i.lineno}: replace `{i.text.strip()}` with "
                       f"`{i.replacement.strip()}` (or mount the blueprint)")
        else:
            out.append(f"{i.path}:{i.lineno}: `{i.text.strip()}` imports "
                       f"{', '.join(i.missing)}, which architect_cleanup.compat lacks: "
                       "mount the blueprint instead")
    for d in report.differences:
        if d.kind == "action":
            out.append(f"{d.topic}: {d.advice}")
    return out


def render(report: Report) -> list[str]:
    """The report as text lines, for the terminal: a heading, the five findings, then what
    was done and what is left."""
    mode = ("--force: what can be done here is done" if report.forced else
            "dry run, nothing changed (--force imports the state, removes a stale PID file)")
    out = [f"Migrating from workers/{SCRIPT}: {mode}", ""]
    for section in (_render_process, _render_schedules, _render_state, _render_imports,
                    _render_config):
        out += [*section(report), ""]
    out += _render_outcome(report)
    return out


def _render_process(report: Report) -> list[str]:
    out = ["1. The original worker's process"]
    pf = report.pid_file
    if not pf.exists:
        out.append(f"   PID file: none ({pf.path})")
    elif pf.live:
        out.append(f"   PID file: {pf.path}: PID {pf.pid}, running")
    else:
        out.append(f"   PID file: {pf.path}: {pf.problem}")
    for p in report.processes:
        kind = "daemon" if p.invocation.daemon else "run"
        out.append(f"   running: PID {p.pid} ({kind}): {p.command}")
    if not report.processes:
        out.append(f"   running: no process runs {SCRIPT}")
    return out


def _render_schedules(report: Report) -> list[str]:
    out = ["2. What started it"]
    for s in report.schedules:
        who = f" as {s.user}" if s.user else ""
        what = s.invocation.describe() if s.invocation else "?"
        out.append(f"   {s.path}:{s.lineno}{who}: {s.text}")
        out.append(f"      ({s.kind}; {what})")
    if not report.schedules:
        out.append("   no cron line, run-parts script, unit or supervisor file names "
                   f"{SCRIPT}")
    return out


def _render_state(report: Report) -> list[str]:
    old = report.old_state
    if not old.exists:
        return ["3. Its state", f"   {old.path}: none"]
    if old.problem:
        return ["3. Its state", f"   {old.path}: not imported: {old.problem}"]
    assert old.stats is not None
    stats = ", ".join(f"{k} {v}" for k, v in old.stats.items())
    where = report.state_file
    return ["3. Its state", f"   {old.path}: last run {old.last_run}: {stats}",
            f"   imported into {where} (source \"imported\")" if report.imported
            else f"   would be imported into {where} as a run with source "
                 "\"imported\" (`report` and `status` show it)"]


def _render_imports(report: Report) -> list[str]:
    out = ["4. The dashboard's code"]
    for i in report.imports:
        out.append(f"   {i.path}:{i.lineno}: {i.text.strip()}")
        if i.replacement:
            out.append(f"      ->  {i.replacement.strip()}")
        else:
            out.append(f"      architect_cleanup.compat lacks {', '.join(i.missing)}")
    if not report.imports:
        out.append(f"   no import of {SCRIPT} found in the top-level *.py of "
                   f"{', '.join(dict.fromkeys(report.roots)) or 'root'}")
    out.append("   keeping its routes, replace the import with:")
    out.append("      from architect_cleanup.compat import CleanupWorker, "
               "DEFAULT_BACKUP_RETENTION, PID_FILE, load_state")
    out.append("   or replace its two /api/system/cleanup routes with the blueprint:")
    out += [f"      {line}" for line in BLUEPRINT_SNIPPET.splitlines()]
    return out


def _render_config(report: Report) -> list[str]:
    out = ["5. Configuration against the original"]
    for d in report.differences:
        if d.kind == "rule":
            continue
        mark = {"action": "CHANGE", "default": "differs", "same": "same"}[d.kind]
        out.append(f"   {mark:<8}{d.topic}: original {d.original}; now {d.ours}")
        if d.advice:
            out.append(f"           -> {d.advice}")
    out.append("   Safety rules and behaviour that differ:")
    out += [f"   - {d.topic}: original {d.original}; now {d.ours}"
            for d in report.differences if d.kind == "rule"]
    return out


def _render_outcome(report: Report) -> list[str]:
    """What ``--force`` did, its problems, and the steps left for the operator."""
    out = [f"Done: {a}" for a in report.applied]
    out += [f"Problem: {p}" for p in report.problems]
    todo = steps(report)
    out.append("Steps left:" if todo else "Nothing left to do.")
    out += [f"  {n}. {s}" for n, s in enumerate(todo, 1)]
    return out
