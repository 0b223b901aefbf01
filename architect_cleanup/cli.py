"""The ``architect-cleanup`` command: argparse, exit codes, and the only place that prints.

A person can never delete by looking (SPEC 4.1): ``run`` and ``plan`` are previews whatever
the configuration says; only ``run --force`` cleans, and on a terminal it shows the preview
and asks first (``--yes`` skips the question). The service passes ``--scheduled``: only
then does the configuration's ``dry_run`` decide.

Exit codes: 0 every target ok; 1 some target failed (or the state could not be written);
2 usage or configuration error; 75 another run holds the lock (EX_TEMPFAIL); 77 not permitted
(run by a user who may not take the run lock, e.g. the dashboard's: EX_NOPERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

import tomli_w

from architect_cleanup import (
    __version__,
    alerts,
    backup_cli,
    history,
    migrate,
    preflight,
    quarantine,
    reports,
    systemctl,
)
from architect_cleanup.config import Config, ConfigError, load_config, parse_duration
from architect_cleanup.fs import FsError, display
from architect_cleanup.journal import fields, setup_logging, stream_is_journal
from architect_cleanup.lock import LockHeld, LockUnusable, RunLock, lock_path
from architect_cleanup.state import StateStore, state_dir
from architect_cleanup.stats import CleanupStats, TargetResult, action, mib
from architect_cleanup.status import status_doc
from architect_cleanup.targets import REGISTRY, Decision, ordered
from architect_cleanup.targets.rules import describe_rules
from architect_cleanup.worker import ROW_TARGETS, CleanupWorker

log = logging.getLogger("architect_cleanup.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_NOPERM = 0, 1, 2, 75, 77


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _since(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _targets(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown target {', '.join(unknown) or repr(text)} "
            f"(choose from {', '.join(ordered())})")
    return names


def _run_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, prefix: str = "",
                 *, modes: bool = True) -> None:
    if modes:
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--dry-run", dest=prefix + "dry_run", action="store_true",
                          default=None,
                          help="only show what would be removed (the default, whatever the "
                               "configuration says)")
        mode.add_argument("--force", dest=prefix + "force", action="store_true", default=None,
                          help="really remove; on a terminal the preview is shown and you "
                               "are asked first")
        mode.add_argument("--scheduled", dest=prefix + "scheduled", action="store_true",
                          default=None,
                          help="a scheduled run (the service passes it): the configuration's "
                               "dry_run decides")
        p.add_argument("-y", "--yes", dest=prefix + "yes", action="store_true",
                       help="with --force: do not ask for confirmation")
    p.add_argument("--keep", dest=prefix + "keep", type=_positive, metavar="N",
                   help="keep the newest N backups in every environment (replaces any "
                        "backups.policy for this run)")
    p.add_argument("--days", dest=prefix + "days", type=_positive, metavar="N",
                   help="age limit in days for logs and tasks")
    p.add_argument("--json", dest=prefix + "json", action="store_true",
                   help="print one JSON object (the API's response)")
    p.add_argument("-v", "--verbose", dest=prefix + "verbose", action="store_true",
                   help="list every item with the reason it is kept or removed")


if TYPE_CHECKING:
    _SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="architect-cleanup",
        description="Storage retention for Architect Dashboard servers. `run` and `plan` only "
                    "preview; `run --force` cleans.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH",
                   help="configuration file (default $ARCHITECT_CLEANUP_CONFIG or "
                        "/etc/architect-cleanup/config.toml); config.d/ beside it is merged")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _legacy_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    commands = [_run_parser(sub), _plan_parser(sub), _status_parser(sub), _config_parser(sub),
                _report_parser(sub), _migrate_parser(sub)]
    backups = backup_cli.add_parser(sub)  # listed after notify in the epilog, before it here
    commands += [_notify_parser(sub), *backups, *_quarantine_parser(sub)]
    p.epilog = _epilog(commands)
    return p


def _epilog(commands: Sequence[argparse.ArgumentParser]) -> str:
    """`--help`'s list of each command's options (the manual page, made from it by help2man,
    shows them too) and the exit codes."""
    lines = [f"  {' '.join(sp.format_usage().split()[2:]).replace(' [-h]', '')}\n"
             f"      {sp.description}\n" for sp in commands]
    return ("command options:\n" + "".join(lines)
            + "\nexit codes: 0 ok, 1 a target failed, 2 usage or config error, "
            "75 already running, 77 not permitted (run as root)")


def _legacy_options(p: argparse.ArgumentParser) -> None:
    legacy = p.add_argument_group("legacy options (the original worker's flags)")
    _run_options(legacy, prefix="legacy_")
    legacy.add_argument("--status", dest="legacy_status", action="store_true",
                        help="same as `status`")
    legacy.add_argument("--daemon", dest="legacy_daemon", action="store_true",
                        help="enable and start architect-cleanup.timer")
    legacy.add_argument("--stop", dest="legacy_stop", action="store_true",
                        help="disable and stop architect-cleanup.timer")


def _only_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", type=_targets, metavar="TARGET,...",
                   help=f"only these targets ({', '.join(ordered())})")


def _run_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    run = sub.add_parser("run", help="preview the cleanup; with --force, clean",
                         description="preview the cleanup (nothing is changed); with --force, "
                                     "clean")
    _run_options(run)
    _only_option(run)
    return run


def _plan_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    plan = sub.add_parser("plan", help="preview the cleanup (same as `run` without --force)",
                          description="preview the cleanup: what a real run would remove, "
                                      "and why; nothing is changed")
    _run_options(plan, modes=False)
    _only_option(plan)
    return plan


def _status_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    st = sub.add_parser("status", help="last run, timer and a run in progress",
                        description="last run, timer and a run in progress")
    st.add_argument("--json", action="store_true")
    return st


def _config_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    """``config check``; the check's parser is returned for the epilog."""
    cfg = sub.add_parser("config", help="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="check", required=True)
    chk = cfg_sub.add_parser("check", help="validate and print the effective configuration",
                             description="validate and print the effective configuration")
    chk.add_argument("--json", action="store_true")
    return chk


def _report_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    rep = sub.add_parser(
        "report", help="runs, removed items, trends and the fill forecast",
        description="runs, removed items, trends and the fill forecast (from the history "
                    "database)")
    rep.add_argument("--since", type=_since, default=_since("30d"), metavar="AGE",
                     help="runs started within AGE (default 30d; e.g. 12h, 2w)")
    rep.add_argument("--target", choices=ordered(), help="only this target")
    rep.add_argument("--env", metavar="ENV",
                     help="only this environment (or database label)")
    rep.add_argument("--items", action="store_true",
                     help="the items removed (or that dry runs would remove), with reasons")
    rep.add_argument("--grep", metavar="TEXT",
                     help="with --items: only paths containing TEXT (implies --items)")
    rep.add_argument("--per", choices=("day", "week"), default="day",
                     help="freed space per day (default) or week")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true", help="the runs (or items) as CSV")
    rep.add_argument("-n", "--limit", type=_positive, metavar="N",
                     help="at most N rows (default: the newest 20 runs; every item)")
    return rep


def _migrate_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    mig = sub.add_parser(
        "migrate", help="move from the original workers/cleanup_worker.py",
        description="move from the original workers/cleanup_worker.py (dry run unless "
                    "--force)")
    mig.add_argument("--force", action="store_true",
                     help="import its last run and remove its stale PID file")
    mig.add_argument("--json", action="store_true")
    mig.add_argument("--rootdir", default="/", metavar="DIR",
                     help="look for the original worker's files below DIR (default /)")
    return mig


def _notify_parser(sub: _SubParsers) -> argparse.ArgumentParser:
    ntf = sub.add_parser(
        "notify", help="send notifications ([notify] in the configuration)",
        description="send notifications: a test message, a failed unit's, or the outbox")
    what = ntf.add_mutually_exclusive_group(required=True)
    what.add_argument("--test", nargs="?", const="", metavar="CHANNEL",
                      help="send a test message to every channel (or CHANNEL)")
    what.add_argument("--unit-failed", metavar="UNIT",
                      help="UNIT failed: report it unless its run did (OnFailure=)")
    what.add_argument("--deliver", action="store_true",
                      help="deliver what waits in the outbox")
    return ntf


def _quarantine_parser(sub: _SubParsers) -> tuple[argparse.ArgumentParser, ...]:
    """``quarantine list|restore NAME``: the orphans' quarantine (issue 19)."""
    q = sub.add_parser("quarantine", help="uploads the orphans target moved aside",
                       description="uploads the orphans target moved aside")
    q_sub = q.add_subparsers(dest="quarantine_command", metavar="list|restore", required=True)
    ql = q_sub.add_parser("list", help="list quarantined files",
                          description="list quarantined files (oldest first)")
    ql.add_argument("--json", action="store_true")
    qr = q_sub.add_parser("restore", help="move a quarantined file back",
                          description="move a quarantined file back to its place")
    qr.add_argument("name", metavar="NAME",
                    help="its original path (relative to root, as `quarantine list` shows)")
    return ql, qr


# --- commands --------------------------------------------------------------------------------


class _Stop:
    """SIGTERM/SIGINT ask the run to stop between items; the handler only sets a flag.

    A context manager: the handlers are ours inside the ``with``, the previous ones after."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, _frame: object) -> None:
        self.signum = signum

    def __enter__(self) -> _Stop:
        self._previous = {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *_exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def requested(self) -> bool:
        return self.signum != 0

    def die_if_requested(self, out: TextIO) -> None:
        """Stopped cleanly between items: die by the same signal, as systemd expects."""
        if self.signum:
            out.flush()
            signal.signal(self.signum, signal.SIG_DFL)
            os.kill(os.getpid(), self.signum)


def run_mode(args: argparse.Namespace, cfg: Config,
             environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(dry run?, source) of a run command.

    A person's ``run`` previews unless ``--force`` (SPEC 4.1: the configuration's ``dry_run``
    never makes a typed command delete). ``--scheduled`` (the service's flag) follows the
    configuration; the source is "timer" when a timer started the service (systemd sets
    ``$TRIGGER_UNIT`` then), else "systemctl" (``systemctl start``)."""
    if getattr(args, "scheduled", None):
        environ = os.environ if environ is None else environ
        trigger = environ.get("TRIGGER_UNIT", "")
        return cfg.dry_run, "timer" if trigger.endswith(".timer") else "systemctl"
    return not getattr(args, "force", None), "cli"


def _interactive(out: TextIO) -> bool:
    try:
        return sys.stdin.isatty() and out.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_run(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    dry, source = run_mode(args, cfg)
    if not dry and source == "cli" and not getattr(args, "yes", False) and _interactive(out):
        code = _preview_and_confirm(args, cfg, out)
        if code is not None:
            return code
    return _run(args, cfg, out, dry=dry, source=source)


def _preview_and_confirm(args: argparse.Namespace, cfg: Config, out: TextIO) -> int | None:
    """``run --force`` on a terminal: the preview, then a question. None to go ahead, else
    the exit code (nothing was changed)."""
    print("Preview (nothing is changed yet):", file=out)
    code = _run(args, cfg, out, dry=True, source="cli", record=False, hint=False)
    stats = _LAST.get("stats")
    if code == EXIT_LOCKED or stats is None:
        return code
    items = sum(t.removed for t in stats.targets.values())
    if not items:
        print("\nNothing to remove: nothing was changed.", file=out)
        return code
    out.write(f"\nRemove these {items:,} items ({mib(stats.space_freed)}) now? "
              "Each is checked again first. [y/N] ")
    out.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        print("Nothing was removed.", file=out)
        return EXIT_OK
    return None


#: the stats of the last run of _run (for the confirmation, which reads the preview's)
_LAST: dict[str, CleanupStats] = {}


def _run(args: argparse.Namespace, cfg: Config, out: TextIO, *, dry: bool, source: str,
         record: bool = True, hint: bool = True) -> int:
    to_journal = stream_is_journal(out)
    _LAST.clear()
    with _Stop() as stop:
        try:
            worker = CleanupWorker(dry_run=dry, backup_retention=args.keep,
                                   log_age_days=args.days, task_age_days=args.days, config=cfg,
                                   only=args.only, source=source, record_state=record,
                                   on_decision=_decision_printer(args, out, to_journal),
                                   should_stop=stop.requested, collect_items=args.json)
            stats = worker.run_cleanup()
        except (ConfigError, LockUnusable, LockHeld, PermissionError) as exc:
            return _run_refused(exc, args, dry, out)
    _LAST["stats"] = stats
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2), file=out)
    elif not to_journal:
        print_summary(stats, out, replaced=_replaced_policies(cfg, args.keep), hint=hint)
    code = EXIT_OK if stats.success and not stats.state_error else EXIT_FAILED
    stop.die_if_requested(out)
    return code


def _decision_printer(args: argparse.Namespace, out: TextIO, to_journal: bool
                      ) -> Callable[[Decision], None] | None:
    """``-v``: print every decision (to stderr beside ``--json``); None without it."""
    if not args.verbose:
        return None
    verbose_out = sys.stderr if args.json else out

    def show_decision(d: Decision) -> None:
        # Flushed at once into the journal, or the buffered lines would land after the
        # summary, which must stay the run's last line.
        print(str(d), file=verbose_out, flush=to_journal)

    return show_decision


def _run_refused(exc: Exception, args: argparse.Namespace, dry: bool, out: TextIO) -> int:
    """The exit code (and ``--json`` answer) of a run that could not start."""
    if isinstance(exc, ConfigError):
        _error("\n".join(exc.lines()))
        return EXIT_USAGE
    if isinstance(exc, LockUnusable):  # the worker has logged it
        if args.json:
            print(json.dumps({"success": False, "dry_run": dry, "message": str(exc)}),
                  file=out)
        return EXIT_USAGE
    if isinstance(exc, LockHeld):  # the worker has logged it (stderr and/or the journal)
        if args.json:
            print(json.dumps({"success": False, "dry_run": dry, "message": str(exc),
                              "locked_by": exc.pid}), file=out)
        return EXIT_LOCKED
    if isinstance(exc, PermissionError):  # e.g. the lock, run as the dashboard's user
        return _permission_error(exc, args, dry, out)
    raise exc


def _permission_error(exc: PermissionError, args: argparse.Namespace, dry: bool,
                      out: TextIO) -> int:
    where = f" {exc.filename}" if exc.filename else ""
    text = (f"cannot take the run lock{where}: {exc.strerror or exc}; run it as root "
            "(sudo architect-cleanup ...), as the service does")
    _error(text)
    if args.json:
        print(json.dumps({"success": False, "dry_run": dry, "message": text}), file=out)
    return EXIT_NOPERM


def _replaced_policies(cfg: Config, keep: int | None) -> list[str]:
    """The environments whose backups.policy table ``--keep`` replaces for this run."""
    return [] if keep is None else sorted(cfg.backups.policy)


def print_summary(stats: CleanupStats, out: TextIO, *, replaced: Sequence[str] = (),
                  hint: bool = True) -> None:
    """A line per target (with its first notes and errors), then the "Cleanup Summary"."""
    _print_target_lines(stats, out)
    for env in replaced:
        print(f"  note: --keep replaced backups.policy.{env} for this run", file=out)
    print(file=out)
    _print_totals(stats, out, hint=hint)


def _print_target_lines(stats: CleanupStats, out: TextIO) -> None:
    failures: dict[str, str] = {}  # message -> the first target that failed with it
    said: set[str] = set()  # notes and errors already printed (a missing database: 3 targets)
    for name, t in stats.targets.items():
        print(_target_line(name, t, stats.dry_run, failures), file=out)
        notes = [n for n in t.notes if n not in said]
        said.update(notes)
        for note in notes[:5]:
            print(f"           note: {display(note)}", file=out)
        if len(notes) > 5:
            print(f"           ({len(notes) - 5} more notes: --json lists them)", file=out)
        errors = [e for e in t.errors if e not in said and e != t.message]
        said.update(errors)
        for err in errors[:5]:
            print(f"           error: {display(err)}", file=out)


def _target_line(name: str, t: TargetResult, dry_run: bool, failures: dict[str, str]) -> str:
    """A target's summary line; a failure already said by another target is not repeated
    (*failures*: message -> the first target that failed with it, updated here)."""
    if t.status not in ("ok", "failed", "stopped"):
        return f"  {name:<8} {t.status:<7} {display(t.message)}"
    if t.failed:
        first = failures.setdefault(t.message, name)
        return (f"  {name:<8} FAILED  {display(t.message)}" if first == name
                else f"  {name:<8} FAILED  (as {first})")
    size = f" ({mib(t.bytes)})" if t.bytes or name not in ROW_TARGETS else ""
    line = f"  {name:<8} {t.status:<7} {action(name, dry_run)} {t.removed:,}{size}, kept {t.kept:,}"
    return line + (f", {len(t.errors)} errors" if t.errors else "")


#: The "Cleanup Summary" counts: (a preview's label, a real run's label, the stats attribute).
_TOTALS = (("Would delete backups", "Backups deleted", "backups_deleted"),
           ("Would delete logs", "Logs deleted", "logs_deleted"),
           ("Would delete tasks", "Tasks deleted", "tasks_deleted"),
           ("Would delete errors", "Errors deleted", "errors_deleted"),
           ("Would archive prompts", "Prompts archived", "prompts_deleted"),
           ("Would delete temp files", "Temp files deleted", "temp_files_deleted"))


def _print_totals(stats: CleanupStats, out: TextIO, *, hint: bool) -> None:
    """The "Cleanup Summary" block, worded for a preview or a real run."""
    dry = stats.dry_run
    print("Cleanup Summary:", file=out)
    if dry:
        print("  Mode: PREVIEW (dry run) - nothing was changed", file=out)
    for would, did, attr in _TOTALS:
        print(f"  {would if dry else did}: {getattr(stats, attr)}", file=out)
    print(f"  {'Would free' if dry else 'Space freed'}: {mib(stats.space_freed)}", file=out)
    if stats.state_error:
        print(f"  State: {display(stats.state_error)}", file=out)
    if stats.stopped:
        print("  Stopped on request before the end", file=out)
    if stats.failed_targets:
        print(f"  Failed: {', '.join(stats.failed_targets)}", file=out)
    if dry and hint:
        print("  To clean: architect-cleanup run --force", file=out)


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    doc = status_doc()
    if args.json:
        print(json.dumps(doc, indent=2), file=out)
        return EXIT_OK
    last = doc["last_result"]
    if last:
        mode = "dry run" if last.get("dry_run") else "real run"
        print(f"Last run:    {_cell(last.get('started_at'))} ({mode}, "
              f"{_cell(last.get('result'))}, {_cell(last.get('duration_s'))}s, "
              f"from {_cell(last.get('source'))})", file=out)
        print(f"             {_cell(last.get('summary'), '')}", file=out)
    else:
        print(f"Last run:    none ({_cell(doc['state_problem'])})", file=out)
    sd = doc["systemd"]
    if sd["reason"]:
        print(f"Timer:       unknown ({sd['reason']})", file=out)
    else:
        enabled = "enabled" if sd["timer_enabled"] else "disabled"
        active = "active" if sd["timer_active"] else "inactive"
        print(f"Timer:       {enabled}, {active}; next run {sd['next_run'] or 'not scheduled'}",
              file=out)
        print(f"Service:     {sd['service_state']} (last result: {sd['service_result']})",
              file=out)
    for warning in doc["warnings"]:
        print(f"Warning:     {display(warning)}", file=out)
    pid = doc["daemon_pid"]
    print(f"Running now: {f'yes, PID {pid}' if pid else 'no'}", file=out)
    for i, fc in enumerate(doc["forecast"]):
        print(f"{'Forecast:' if not i else '':<13}{_cell(fc.get('line'))}", file=out)
    for line in dashboard_lock_lines(doc.get("dashboard_locks")):
        print(line, file=out)
    print(f"State file:  {doc['state_file']}", file=out)
    return EXIT_OK


def dashboard_lock_lines(locks: object) -> list[str]:
    """``status`` lines for the dashboard processes the last run found without their SQLite
    locks (see dblocks.py); nothing when the last run did not record it."""
    if not isinstance(locks, dict):
        return []
    lost = [h for h in locks.get("lost") or [] if isinstance(h, dict)]
    unknown = [h for h in locks.get("unknown") or [] if isinstance(h, dict)]
    more = locks.get("unknown_more")
    n_unknown = len(unknown) + (more if isinstance(more, int) else 0)
    lines = [f"Dashboard:   PID {_cell(h.get('pid'))} ({_cell(h.get('command'))}) has "
             f"{_cell(h.get('database'))} open without its SQLite locks: restart it "
             "(journalctl -x explains)" for h in lost]
    if n_unknown:
        pids = ", ".join(_cell(h.get("pid")) for h in unknown)
        if pids:
            pids = f" (PID {pids}{', ...' if n_unknown > len(unknown) else ''})"
        lines.append(f"Dashboard:   {n_unknown} process(es) could not be inspected{pids}: "
                     "whether they hold their SQLite locks is unknown")
    if not lines:
        lines.append("Dashboard:   no process without its SQLite locks (last run)")
    return lines


def cmd_config_check(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    """The effective configuration, after the checks a run would otherwise meet late: the
    root exists, the databases exist, the root lies in the service's ReadWritePaths=."""
    doc = cfg.to_dict()
    rules = describe_rules(cfg)
    findings = preflight.check(cfg, preflight.service_writable_paths())
    errors = [f.text for f in findings if f.level == "error"]
    warnings = [f.text for f in findings if f.level == "warning"]
    if args.json:
        print(json.dumps({"valid": not errors, "sources": list(cfg.sources), "config": doc,
                          "errors": errors, "warnings": warnings, "rules": rules},
                         indent=2), file=out)
        return EXIT_USAGE if errors else EXIT_OK
    for text in errors:
        _error(text)
    for text in warnings:
        print(f"architect-cleanup: warning: {display(text)}", file=sys.stderr)
    if errors:
        return EXIT_USAGE
    srcs = ", ".join(cfg.sources) or "built-in defaults (no configuration file found)"
    print(f"# configuration is valid; read from: {srcs}", file=out)
    print(tomli_w.dumps(doc), end="", file=out)
    _print_rules(rules, out)
    return EXIT_OK


def _print_rules(rules: list[str], out: TextIO) -> None:
    """``config check``: every rule with what it owns, as comments after the TOML."""
    if rules:
        print("\n# rules, in the order they own names (after the built-in targets):", file=out)
    for line in rules:
        print(f"# {display(line)}", file=out)


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    """The history database's runs (or items), trends and forecast; without a readable
    database (none yet, or not root: it is root only), state.json's last runs."""
    store = StateStore()
    now = datetime.now(UTC)
    since = now - args.since
    try:
        conn = history.open_reader(store.directory)
    except (sqlite3.Error, OSError) as exc:
        conn, why = None, f"cannot read the history database: {exc}"
    else:
        why = "no history database yet"
    if conn is None:
        return _report_state(args, store, why, out)
    try:
        if args.items or args.grep is not None:
            return _report_items(args, conn, since, out)
        return _report_runs(args, conn, since, now, store, out)
    except sqlite3.Error as exc:
        _error(f"cannot read the history database: {exc}")
        return EXIT_FAILED
    finally:
        conn.close()


def _report_runs(args: argparse.Namespace, conn: sqlite3.Connection, since: datetime,
                 now: datetime, store: StateStore, out: TextIO) -> int:
    runs = reports.runs_since(conn, since, target=args.target, env=args.env)
    runs = runs[-(args.limit or 20):]
    if args.csv:
        reports.render_csv(runs, out, reports.RunRow)
        return EXIT_OK
    freed = reports.freed_per_period(conn, since, period=args.per, target=args.target,
                                     env=args.env)
    growth = reports.growth_per_day(conn, since)
    forecasts = reports.forecasts(conn, now=now)
    if args.json:
        doc = {"since": reports.iso(since.timestamp()), "target": args.target,
               "env": args.env, "runs": [reports.as_dict(r) for r in runs],
               "freed": [reports.as_dict(f) for f in freed], "per": args.per,
               "growth": [reports.as_dict(g) for g in growth],
               "forecast": [f.to_dict() for f in forecasts],
               "history": store.load().get("history", [])[-(args.limit or 20):],
               "state_problem": store.problem}
        print(json.dumps(doc, indent=2), file=out)
        return EXIT_OK
    _print_runs(args, since, runs, out)
    _print_freed(args.per, freed, out)
    _print_growth(growth, out)
    store.load()  # a state file that cannot be read (e.g. a symlink: never followed) is said
    if store.problem and os.path.lexists(store.path):
        print(f"\nState: {_cell(store.problem)}", file=out)
    print("\nForecast:", file=out)
    if not forecasts:
        print("  no space samples yet", file=out)
    for fc in forecasts:
        print(f"  {_cell(fc.line())}", file=out)
    return EXIT_OK


def _print_runs(args: argparse.Namespace, since: datetime, runs: Sequence[reports.RunRow],
                out: TextIO) -> None:
    """``report``'s table of runs (with the target and environment it is limited to)."""
    what = " ".join(x for x in (args.target, f"env {args.env}" if args.env else None) if x)
    print(f"Runs since {_cell(reports.iso(since.timestamp()))}"
          f"{f' ({what})' if what else ''}:", file=out)
    if not runs:
        print("  none", file=out)
        return
    print(f"  {'started (UTC)':<26}{'mode':<9}{'source':<10}{'result':<12}{'items':>9}"
          f"{'freed MiB':>11}{'would free MiB':>16}  {'kept':>8}", file=out)
    for r in runs:
        size = f"{r.bytes / 1048576:.1f}"
        real, preview = ("", size) if r.dry_run else (size, "")
        print(f"  {r.started_at:<26}{'preview' if r.dry_run else 'real':<9}"
              f"{_cell(r.source):<10}{_cell(r.status):<12}{r.removed:>9,}"
              f"{real:>11}{preview:>16}  {r.kept:>8,}", file=out)


def _print_freed(per: str, freed: Sequence[reports.FreedRow], out: TextIO) -> None:
    print(f"\nFreed per {per} (real runs):", file=out)
    if not freed:
        print("  nothing", file=out)
    for f in freed:
        print(f"  {f.period:<12}{f.target:<9}{f.runs:>4} runs{f.items:>10,} items"
              f"{f.bytes / 1048576:>10.1f} MiB", file=out)


def _print_growth(growth: Sequence[reports.GrowthRow], out: TextIO) -> None:
    print("\nGrowth per day:", file=out)
    if not growth:
        print("  no samples", file=out)
    for g in growth:
        change = ("" if g.growth_per_day is None
                  else f"{g.growth_per_day / 1048576:+10.1f} MiB/day")
        print(f"  {g.day:<12}{_cell(g.category):<24}{g.bytes / 1048576:>10.1f} MiB{change}",
              file=out)


#: what a preview's recorded item says it would have done
_WOULD = {"removed": "would remove", "archived": "would archive"}


def _report_items(args: argparse.Namespace, conn: sqlite3.Connection, since: datetime,
                  out: TextIO) -> int:
    rows = reports.items_since(conn, since, target=args.target, env=args.env,
                               grep=args.grep, limit=args.limit)
    if args.csv:
        reports.render_csv(rows, out, reports.ItemRow)
        return EXIT_OK
    if args.json:  # streamed: a million items are never held at once
        head = json.dumps(reports.iso(since.timestamp()))
        out.write('{"since": ' + head + ', "items": [')
        for i, row in enumerate(rows):
            out.write(("," if i else "") + "\n  " + json.dumps(reports.as_dict(row)))
        out.write("\n]}\n")
        return EXIT_OK
    n = 0
    for row in rows:
        if not n:
            print(f"{'run started (UTC)':<26}{'mode':<9}{'action':<14}{'target':<9}"
                  f"{'env':<9}{'size':>12}  path  (reason)", file=out)
        n += 1
        verb = _WOULD.get(row.action, row.action) if row.dry_run else row.action
        print(f"{row.run_started_at:<26}{'preview' if row.dry_run else 'real':<9}"
              f"{verb:<14}"
              f"{row.target:<9}{_cell(row.env, '-'):<9}{row.size:>12,}  "
              f"{display(row.path)}  ({display(row.reason)})", file=out)
    if not n:
        print("No items recorded" + (f" with {args.grep!r} in their path" if args.grep
                                     else "") + f" since {_cell(reports.iso(since.timestamp()))}.",
              file=out)
    return EXIT_OK


def _report_state(args: argparse.Namespace, store: StateStore, why: str, out: TextIO) -> int:
    """``report`` from state.json's bounded history (no history database to read)."""
    history = store.load().get("history", [])[-(args.limit or 20):]
    if args.json:
        print(json.dumps({"history": history, "state_problem": store.problem,
                          "history_problem": why}, indent=2), file=out)
        return EXIT_OK
    if args.items or args.grep is not None or args.csv:
        _error(f"{why}: --items, --grep and --csv need it (as root: sudo)")
        return EXIT_FAILED
    print(f"({why}; the last runs from {store.path})", file=out)
    if not history:
        print(f"No runs recorded ({_cell(store.problem or 'empty history')}).", file=out)
        return EXIT_OK
    print(f"{'started (UTC)':<26}{'mode':<9}{'source':<10}{'result':<9}{'freed MiB':>10}"
          f"{'would free MiB':>16}  summary", file=out)
    for h in history:
        s = h.get("stats")
        size = s.get("space_freed_mb") if isinstance(s, dict) else None
        dry = h.get("dry_run") is not False
        freed, would = ("", _cell(size)) if dry else (_cell(size), "")
        print(f"{_cell(h.get('started_at')):<26}{'preview' if dry else 'real':<9}"
              f"{_cell(h.get('source')):<10}{_cell(h.get('result')):<9}"
              f"{freed:>10}{would:>16}  {_cell(h.get('summary'), '')}", file=out)
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    if not os.path.isdir(args.rootdir):
        _error(f"--rootdir {args.rootdir}: no such directory")
        return EXIT_USAGE
    places = migrate.Places(rootdir=args.rootdir)
    report = migrate.survey(cfg, places)
    if args.force:
        try:
            migrate.apply(report, places)
        except LockHeld as exc:
            _error(f"{exc}; nothing imported, try again when it has finished")
            return EXIT_LOCKED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        for line in migrate.render(report):
            print(display(line) if line else line, file=out)
    return EXIT_FAILED if report.problems else EXIT_OK


def cmd_quarantine(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    """``quarantine list``: every quarantined file, when it was moved and its size;
    ``quarantine restore NAME``: move it back (under the run lock, so no run moves files
    meanwhile)."""
    qrel = cfg.orphans.quarantine_dir
    try:
        if args.quarantine_command == "list":
            found = quarantine.list_entries(cfg.root, qrel)
            if args.json:
                print(json.dumps([{"original": e.original, "quarantined_at":
                                   e.moved_at.isoformat(), "path": e.path, "size": e.size}
                                  for e in found], indent=2), file=out)
                return EXIT_OK
            if not found:
                print(f"quarantine ({display(qrel)}) is empty", file=out)
            for e in found:
                print(f"{e.moved_at:%Y-%m-%d %H:%M}Z {e.size:>12,}  {display(e.original)}",
                      file=out)
            return EXIT_OK
        lock = RunLock(lock_path())
        try:
            lock.acquire()
        except (LockHeld, LockUnusable) as exc:
            _error(f"quarantine restore: {exc}")
            return EXIT_LOCKED if isinstance(exc, LockHeld) else EXIT_USAGE
        try:
            e = quarantine.restore_named(cfg.root, qrel, args.name)
        finally:
            lock.release()
    except quarantine.NotQuarantined as exc:
        _error(str(exc))
        return EXIT_FAILED
    except FileExistsError:
        _error(f"{display(args.name)}: a file of that name is in its place again; "
               "both are left as they are")
        return EXIT_FAILED
    except (OSError, FsError) as exc:
        _error(f"quarantine {args.quarantine_command}: "
               f"{display(getattr(exc, 'strerror', None) or str(exc))}")
        return EXIT_FAILED
    print(f"restored {display(e.original)} (quarantined {e.moved_at:%Y-%m-%d %H:%M}Z)",
          file=out)
    return EXIT_OK


def cmd_notify(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    directory = state_dir()
    if args.test is None and not cfg.notify.channels:
        print("no notification channel configured ([notify]): nothing to do", file=out)
        return EXIT_OK
    try:
        if args.test is not None:
            try:
                results = alerts.send_test(cfg, args.test or None)
            except LookupError as exc:
                _error(str(exc.args[0]))
                return EXIT_USAGE
            if not results:
                _error("no channel configured ([[notify.email]], [[notify.webhook]], "
                       "[[notify.apprise]])")
                return EXIT_USAGE
            for name, problem in results:
                print(f"{name}: {'sent' if problem is None else 'FAILED: ' + display(problem)}",
                      file=out)
            return EXIT_OK if all(p is None for _, p in results) else EXIT_FAILED
        if args.unit_failed is not None:
            queued, done = alerts.unit_failed(cfg, args.unit_failed, directory)
            print(f"{display(args.unit_failed)}: "
                  f"{'failure message queued' if queued else 'its run reported itself'}; "
                  f"{_delivery(done)}", file=out)
            return EXIT_OK
        print(_delivery(alerts.deliver(cfg, directory)), file=out)
        return EXIT_OK
    except OSError as exc:
        _error(f"notify: {directory}: {exc.strerror or exc}")
        return EXIT_FAILED


def _delivery(done: alerts.Delivery) -> str:
    return (f"{done.sent} sent, {done.failed} failed (kept for a retry), "
            f"{done.dropped} given up, {done.waiting} waiting")


def _cell(value: object, default: str = "?") -> str:
    """A recorded value for a table cell, whatever the state file holds."""
    return default if value is None else display(str(value))


def _error(text: str) -> None:
    print(f"architect-cleanup: {text}", file=sys.stderr)


def _legacy_to_run(args: argparse.Namespace) -> None:
    for key in ("dry_run", "force", "scheduled", "yes", "keep", "days", "json", "verbose"):
        setattr(args, key, getattr(args, "legacy_" + key))
    args.only = None


#: The commands that need the configuration, by name (``run`` and ``plan`` are the default).
_WITH_CONFIG: dict[str, Callable[[argparse.Namespace, Config, TextIO], int]] = {
    "config": cmd_config_check, "migrate": cmd_migrate, "quarantine": cmd_quarantine,
    "backups": backup_cli.cmd_backups, "notify": cmd_notify,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    command = args.command
    if command is None:
        if not args.legacy_status and (args.legacy_daemon or args.legacy_stop):
            return _legacy_timer(parser, args, out)
        command = _legacy_command(args)
    if command == "status":
        return cmd_status(args, out)
    if command == "report":
        return cmd_report(args, out)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        log.error(*exc.log_args(),
                  extra=fields("config_error", cleanup_error="; ".join(exc.problems)))
        if getattr(args, "json", False):
            print(json.dumps({"valid": False, "success": False, "errors": exc.problems}),
                  file=out)
        return EXIT_USAGE
    if command in _WITH_CONFIG:
        return _WITH_CONFIG[command](args, cfg, out)
    if command == "plan":
        args.dry_run, args.force, args.scheduled, args.yes = True, None, None, False
    return cmd_run(args, cfg, out)


def _legacy_command(args: argparse.Namespace) -> str:
    """The command the original worker's flags name (no COMMAND given): ``--status`` or a
    run; the run options are moved to where ``run`` keeps them."""
    if args.legacy_status:
        args.json = args.legacy_json
        return "status"
    _legacy_to_run(args)
    return "run"


def _legacy_timer(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  out: TextIO) -> int:
    """``--daemon`` / ``--stop``: enable and start, or disable and stop, the timer."""
    if args.legacy_daemon and args.legacy_stop:
        parser.error("--daemon and --stop exclude each other")
    ok, msg = systemctl.set_timer(args.legacy_daemon)
    print(msg, file=out if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED
