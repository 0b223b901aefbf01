"""What is worth telling: conditions found in a run, announced once, again when they change
or clear ("recovered"), and the messages they make.

A *condition* is a fact with a key (``target:backups``, ``free_space:prod``, ``dry_run``,
``unit:architect-cleanup.service``), the event kind it belongs to (failure or warning) and a
*text* that is its fingerprint: the same key with the same text next hour is not news. A
condition whose scope (a target) ran and no longer reports it has cleared.

Warnings come from :data:`SOURCES`; a target reports a warning of its own by adding
``{"key": ..., "text": ..., ...specifics}`` to ``result.detail[part]["warnings"]`` (the hook
for a corrupt newest backup); a dashboard process that lost its SQLite locks comes from the
run's ``dashboard_locks``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from architect_cleanup import history, reports
from architect_cleanup.alerts.channels import Message
from architect_cleanup.config import Config
from architect_cleanup.stats import CleanupStats

log = logging.getLogger(__name__)

SCHEMA = "architect-cleanup.notify/1"


@dataclass(frozen=True)
class Condition:
    key: str
    event: str  #: failure | warning
    text: str
    #: the target whose run can clear it; None: any completed run clears it
    scope: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    condition: Condition
    state: str  #: new | changed | recovered
    since: str

    def to_dict(self) -> dict[str, Any]:
        # the specifics first: a detail never hides the change's own key, state or text
        return {**self.condition.detail, "key": self.condition.key, "state": self.state,
                "text": self.condition.text, "since": self.since}


@dataclass
class RunFacts:
    """What the condition sources look at."""

    config: Config
    stats: CleanupStats
    now: datetime
    state: dict[str, Any]
    history_dir: str


Source = Callable[[RunFacts], Iterable[Condition]]


def _failures(f: RunFacts) -> Iterable[Condition]:
    for name in f.stats.failed_targets:
        t = f.stats.targets[name]
        yield Condition(f"target:{name}", "failure", f"{name} failed: {t.message}", name,
                        {"target": name, "message": t.message})
    if f.stats.state_error:
        yield Condition("state", "failure", f.stats.state_error, None,
                        {"message": f.stats.state_error})


def _free_space(f: RunFacts) -> Iterable[Condition]:
    backups = f.stats.targets.get("backups")
    if backups is None:
        return
    for part, d in backups.detail.items():
        fs = d.get("free_space") if isinstance(d, dict) else None
        if not isinstance(fs, dict) or not fs.get("stopped_at_keep_min"):
            continue
        text = (f"backups {part}: free space below min_free_space {fs.get('min_free_space')} "
                "even at keep_min")
        yield Condition(f"free_space:{part}", "warning", text, "backups",
                        {"part": part, "free_space": fs, "forecast": _forecasts(f)})


def _dry_run(f: RunFacts) -> Iterable[Condition]:
    if not f.config.dry_run:
        f.state.pop("dry_run_since", None)
        return
    since = _parse(f.state.setdefault("dry_run_since", _iso(f.now)))
    limit = f.config.notify.dry_run_warning
    if since is not None and f.now - since >= limit:
        yield Condition("dry_run", "warning",
                        f"the configuration still dry-runs (dry_run = true since {_iso(since)})"
                        "; nothing is removed until dry_run = false", None,
                        {"dry_run_since": _iso(since), "after_days": limit.days})


def _lost_locks(f: RunFacts) -> Iterable[Condition]:
    found = f.stats.dashboard_locks if isinstance(f.stats.dashboard_locks, dict) else {}
    for h in found.get("lost", ()):
        if not isinstance(h, dict):
            continue
        db, pid = h.get("database", "?"), h.get("pid", "?")
        yield Condition(f"db_lock_lost:{db}:{pid}", "warning",
                        f"process {pid} ({h.get('command', '?')}) has lost its SQLite locks on "
                        f"{db}: restart it", None,
                        {k: v for k, v in h.items() if k != "state"})


def _reported(f: RunFacts) -> Iterable[Condition]:
    for name, t in f.stats.targets.items():
        for part, d in t.detail.items():
            for w in (d.get("warnings", ()) if isinstance(d, dict) else ()):
                if isinstance(w, dict) and w.get("key") and w.get("text"):
                    extra = {k: v for k, v in w.items() if k not in ("key", "text")}
                    yield Condition(f"{name}:{w['key']}", "warning", str(w["text"]), name,
                                    {"target": name, "part": part, **extra})


#: Where conditions come from, in order; extend with :func:`register`.
SOURCES: list[Source] = [_failures, _free_space, _dry_run, _lost_locks, _reported]


def register(source: Source) -> None:
    SOURCES.append(source)


def run_conditions(facts: RunFacts) -> list[Condition]:
    out: list[Condition] = []
    for source in SOURCES:
        try:
            out.extend(source(facts))
        except Exception as exc:  # a broken source must not cost the other messages
            log.error("notify: condition source %s failed: %s",
                      getattr(source, "__name__", source), exc)
    return out


def transitions(state: dict[str, Any], current: Iterable[Condition], now: datetime,
                ran: Callable[[str | None], bool]) -> list[Change]:
    """New and changed conditions, and cleared ones whose scope *ran*; *state*
    (``conditions``) is updated to match."""
    known: dict[str, Any] = state.setdefault("conditions", {})
    changes: list[Change] = []
    seen = set()
    for c in current:
        seen.add(c.key)
        old = known.get(c.key)
        if isinstance(old, dict) and old.get("text") == c.text:
            continue
        since = old["since"] if isinstance(old, dict) and "since" in old else _iso(now)
        changes.append(Change(c, "changed" if old else "new", since))
        known[c.key] = {"text": c.text, "event": c.event, "scope": c.scope, "since": since}
    for k, old in list(known.items()):
        if k in seen or not isinstance(old, dict):
            continue
        scope = old.get("scope")
        if ran(scope if isinstance(scope, str) else None):
            del known[k]
            gone = Condition(k, str(old.get("event", "warning")), str(old.get("text", "")),
                             scope if isinstance(scope, str) else None)
            changes.append(Change(gone, "recovered", str(old.get("since", ""))))
    return changes


# --- messages ---------------------------------------------------------------------------------


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def hostname() -> str:
    return socket.gethostname()


def message(event: str, title: str, lines: Iterable[str], now: datetime,
            **body: Any) -> Message:
    """A message: the webhook body carries *body* besides the common fields."""
    host = hostname()
    text_lines = [title, "", *lines]
    run = body.get("run")
    if isinstance(run, dict):
        text_lines += ["", f"Run: {run.get('summary', '')}", *_target_lines(run)]
    doc = {"schema": SCHEMA, "type": f"architect-cleanup.{event}", "event": event,
           "timestamp": _iso(now), "host": host, "title": title, **body}
    return Message(new_id(), event, title, "\n".join(text_lines), doc)


def _target_lines(run: dict[str, Any]) -> list[str]:
    out = []
    for name, t in run.get("targets", {}).items():
        if not isinstance(t, dict):
            continue
        status = t.get("status", "?")
        tail = (f": {t.get('message')}" if status == "failed"
                else f": {t.get('removed', 0)} removed ({t.get('space_mb', 0)} MB), "
                f"kept {t.get('kept', 0)}" if status == "ok" else "")
        out.append(f"  {name}: {status}{tail}")
    return out


def run_messages(changes: list[Change], stats: CleanupStats, *, success: bool,
                 now: datetime) -> list[Message]:
    """At most one message per event kind for one run."""
    run = stats.to_dict()
    out = []
    for event in ("failure", "warning"):
        mine = [c for c in changes if c.condition.event == event]
        if not mine:
            continue
        fresh = [c for c in mine if c.state != "recovered"]
        if fresh:
            head = fresh[0].condition.text
            title = f"{event}: {head}" + (f" (+{len(mine) - 1} more)" if len(mine) > 1 else "")
        else:
            title = f"recovered: {mine[0].condition.text}" + (
                f" (+{len(mine) - 1} more)" if len(mine) > 1 else "")
        lines = [f"[{c.state}] {c.condition.text}" for c in mine]
        out.append(message(event, title, lines, now, run=run,
                           conditions=[c.to_dict() for c in mine]))
    if success and stats.success and not stats.state_error:
        out.append(message("success", stats.summary_line(), [], now, run=run, conditions=[]))
    return out


def digest_message(cfg: Config, state: dict[str, Any], history_dir: str,
                   now: datetime) -> Message | None:
    """The weekly digest when one is due and a history database exists."""
    if cfg.notify.digest != "weekly":
        state.pop("digest_due", None)
        return None
    due = _parse(state.get("digest_due"))
    if due is None:
        state["digest_due"] = _iso(now + timedelta(days=7))
        return None
    if now < due:
        return None
    state["digest_due"] = _iso(now + timedelta(days=7))
    since = now - timedelta(days=7)
    try:
        conn = history.open_reader(history_dir)
    except sqlite3.Error as exc:
        log.warning("notify: no digest: history unreadable (%s)", exc)
        return None
    if conn is None:
        log.info("notify: no digest: no history database in %s", history_dir)
        return None
    with contextlib.closing(conn):
        runs = reports.runs_since(conn, since)
        freed = reports.freed_per_period(conn, since, period="day")
        fc = [reports.as_dict(x) for x in reports.forecasts(conn, now=now)]
    per_target: dict[str, dict[str, int]] = {}
    for row in freed:
        t = per_target.setdefault(row.target, {"items": 0, "bytes": 0})
        t["items"] += row.items
        t["bytes"] += row.bytes
    failed = sum(1 for r in runs if r.result != "success")
    real = [r for r in runs if not r.dry_run]
    freed_bytes = sum(r.bytes for r in real)
    digest = {"since": _iso(since), "until": _iso(now), "runs": len(runs),
              "failed_runs": failed, "dry_runs": len(runs) - len(real),
              "freed_items": sum(r.removed for r in real), "freed_bytes": freed_bytes,
              "per_target": per_target, "forecasts": fc}
    title = (f"weekly digest: {len(runs)} runs, {failed} failed, "
             f"{freed_bytes / 1048576:.1f} MB freed")
    lines = [f"  {n}: {t['items']} items, {t['bytes'] / 1048576:.1f} MB"
             for n, t in per_target.items()]
    lines += [f"  {f['name']}: {f['state']}" for f in fc]
    return message("digest", title, lines, now, digest=digest)


def _forecasts(f: RunFacts) -> list[dict[str, Any]]:
    try:
        conn = history.open_reader(f.history_dir)
    except sqlite3.Error:
        return []
    if conn is None:
        return []
    with contextlib.closing(conn):
        try:
            return [reports.as_dict(x) for x in reports.forecasts(conn, now=f.now)]
        except sqlite3.Error:
            return []


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
