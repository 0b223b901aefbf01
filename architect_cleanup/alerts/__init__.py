"""Notifications: e-mail, signed webhooks and apprise, through an outbox that loses nothing.

One run: after its record is written, the ``notify`` final step finds the conditions
(:mod:`.events`), keeps the new, changed and recovered ones, makes at most one message per
event kind (plus ``success`` and the weekly ``digest``), puts one entry per subscribed channel
into the outbox (:mod:`.outbox`) and delivers what is due within ``notify.max_time``
(:mod:`.channels`). Nothing here changes the run's exit code or its record.

In ``architect-cleanup.service`` (no network: ``ARCHITECT_CLEANUP_NOTIFY=queue``) the run only
queues; ``architect-cleanup-notify.service`` (``OnSuccess=``) and
``architect-cleanup-failure@.service`` (``OnFailure=``, ``notify --unit-failed``) deliver.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from architect_cleanup.alerts import events
from architect_cleanup.alerts.channels import DeliveryError, Message, send
from architect_cleanup.alerts.outbox import MAX_AGE_S, MAX_ENTRIES, Entry, Outbox, backoff
from architect_cleanup.alerts.outbox import fingerprint as channel_fingerprint
from architect_cleanup.config import Channel, Config
from architect_cleanup.fs import display
from architect_cleanup.journal import fields
from architect_cleanup.state import StateStore
from architect_cleanup.stats import CleanupStats

log = logging.getLogger(__name__)

__all__ = ["Delivery", "after_record", "deliver", "send_test", "unit_failed"]

MODE_VAR = "ARCHITECT_CLEANUP_NOTIFY"
JOURNAL_LINES = 20


@dataclass
class Delivery:
    """What one delivery pass did."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    waiting: int = 0


def queue_only(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(MODE_VAR, "") == "queue"


def after_record(cfg: Config, stats: CleanupStats, directory: str, *,
                 now: datetime | None = None) -> Delivery:
    """The run's ``notify`` step: queue what is news, then deliver (unless queue-only)."""
    now = now or datetime.now(UTC)
    n = cfg.notify
    with Outbox(directory) as box:
        state = box.load_state()
        facts = events.RunFacts(cfg, stats, now, state, directory)
        current = events.run_conditions(facts)

        def ran(scope: str | None) -> bool:
            if scope is None:
                return True
            t = stats.targets.get(scope)
            return t is not None and t.status == "ok"
        changes = events.transitions(state, current, now, ran)
        messages = events.run_messages(changes, stats, success=_wants(n.channels, "success"),
                                       now=now)
        digest = events.digest_message(cfg, state, directory, now)
        if digest is not None:
            messages.append(digest)
        box.save_state(state)
        for m in messages:
            _enqueue(box, cfg, m, now)
        if queue_only():
            return Delivery(waiting=len(box.entries()))
        return _deliver(box, cfg, now)


def deliver(cfg: Config, directory: str, *, now: datetime | None = None) -> Delivery:
    """Deliver what waits in the outbox (``notify --deliver``, the notify units)."""
    with Outbox(directory) as box:
        return _deliver(box, cfg, now or datetime.now(UTC))


def unit_failed(cfg: Config, unit: str, directory: str, *,
                now: datetime | None = None) -> tuple[bool, Delivery]:
    """``notify --unit-failed UNIT``: when *unit*'s run died before it could report (killed,
    out of memory, timed out, crashed), queue a failure message with its last journal lines;
    then deliver the outbox. Returns (whether a message was queued, the delivery)."""
    now = now or datetime.now(UTC)
    props = _unit_properties(unit)
    last = StateStore(directory).load().get("last_run") or {}
    invocation = props.get("InvocationID", "")
    reported = bool(invocation) and last.get("invocation_id") == invocation
    queued = False
    with Outbox(directory) as box:
        if not reported:
            state = box.load_state()
            result = props.get("Result", "") or "unknown"
            lines = _journal(unit)
            text = f"{unit} failed ({result}) before the run could report"
            cond = events.Condition(f"unit:{unit}", "failure", text, None, {
                "unit": unit, "result": result,
                "exit_code": props.get("ExecMainCode", ""),
                "exit_status": props.get("ExecMainStatus", ""),
                "invocation_id": invocation, "journal": lines})
            known = state.setdefault("conditions", {})
            changes = events.transitions({"conditions": dict(known)}, [cond], now,
                                         lambda _s: False)
            if changes:
                known[cond.key] = {"text": cond.text, "event": "failure", "scope": None,
                                   "since": changes[0].since}
                msg = events.message("failure", f"failure: {text}",
                                     ["Last journal lines:", *(f"  {x}" for x in lines)], now,
                                     run=None, conditions=[c.to_dict() for c in changes])
                _enqueue(box, cfg, msg, now)
                queued = True
            box.save_state(state)
        return queued, _deliver(box, cfg, now)


def send_test(cfg: Config, name: str | None = None) -> list[tuple[str, str | None]]:
    """``notify --test [CHANNEL]``: a test message straight to each channel (or one), not
    through the outbox; (channel, None when delivered or the error)."""
    now = datetime.now(UTC)
    chosen = [c for c in cfg.notify.channels if name is None or c.name == name]
    if name is not None and not chosen:
        names = ", ".join(c.name for c in cfg.notify.channels) or "none configured"
        raise LookupError(f"no channel {name!r} (channels: {names})")
    msg = events.message("test", "test message from architect-cleanup",
                         ["If you can read this, the channel works."], now, run=None,
                         conditions=[])
    out: list[tuple[str, str | None]] = []
    for channel in chosen:
        try:
            answer = send(channel, msg, cfg.notify.timeout.total_seconds())
        except DeliveryError as exc:
            _log_attempt("notify_failed", channel, msg, 1, str(exc))
            out.append((channel.name, str(exc)))
        else:
            _log_attempt("notify_sent", channel, msg, 1, answer)
            out.append((channel.name, None))
    return out


# --- the outbox -------------------------------------------------------------------------------


def _wants(channels: tuple[Channel, ...], event: str) -> bool:
    return any(event in c.on for c in channels)


def _enqueue(box: Outbox, cfg: Config, msg: Message, now: datetime) -> None:
    for channel in cfg.notify.channels:
        if msg.event in channel.on:
            box.add(Entry(channel.name, channel_fingerprint(channel), msg, now.timestamp()))
    entries = box.entries()
    for entry in entries[:max(0, len(entries) - MAX_ENTRIES)]:
        _drop(box, entry, f"the outbox holds more than {MAX_ENTRIES} messages")


#: Why a channel's messages are dropped after its receiver answered 410 Gone.
_GONE = "the receiver answered 410 Gone; change its configuration to enable it again"


def _deliver(box: Outbox, cfg: Config, now: datetime) -> Delivery:
    """One delivery pass over the outbox, within ``notify.max_time``."""
    state = box.load_state()
    gone: dict[str, Any] = state.setdefault("gone", {})
    channels = {c.name: c for c in cfg.notify.channels}
    live = {channel_fingerprint(c) for c in channels.values()}
    for fp in [fp for fp in gone if fp not in live]:
        del gone[fp]  # its configuration changed: enabled again
    courier = _Courier(box, channels, gone, now,
                       deadline=time.monotonic() + cfg.notify.max_time.total_seconds(),
                       timeout=cfg.notify.timeout.total_seconds())
    for entry in box.entries():
        courier.handle(entry)
    box.save_state(state)
    return courier.done


@dataclass
class _Courier:
    """One delivery pass: each entry is dropped (its channel gone, or too old), left
    waiting (not due, or out of time), or sent; *done* counts them."""

    box: Outbox
    channels: dict[str, Channel]
    gone: dict[str, Any]  # fingerprint -> when and where the receiver answered 410 Gone
    now: datetime
    deadline: float  # time.monotonic()'s
    timeout: float
    done: Delivery = field(default_factory=Delivery)

    def handle(self, entry: Entry) -> None:
        channel = self.channels.get(entry.channel)
        if channel is None:
            self.drop(entry, "the channel is no longer configured")
            return
        why = self.undeliverable(entry, channel)
        if why is not None:
            self.drop(entry, why)
            return
        left = self.deadline - time.monotonic()
        if entry.next_at > self.now.timestamp() or left <= 0:
            self.done.waiting += 1
            return
        entry.attempts += 1
        try:
            answer = send(channel, entry.message, min(self.timeout, max(1.0, left)))
        except DeliveryError as exc:
            self.failed(entry, channel, exc)
            return
        self.box.remove(entry)
        _log_attempt("notify_sent", channel, entry.message, entry.attempts, answer)
        self.done.sent += 1

    def undeliverable(self, entry: Entry, channel: Channel) -> str | None:
        """Why *entry* is dropped before any attempt (None: it may be sent)."""
        entry.fingerprint = channel_fingerprint(channel)
        if entry.fingerprint in self.gone:
            return _GONE
        if self.now.timestamp() - entry.created > MAX_AGE_S:
            return f"undelivered for 3 days ({entry.last_error})"
        return None

    def failed(self, entry: Entry, channel: Channel, exc: DeliveryError) -> None:
        """A failed attempt: the channel is gone (410), the error is final, or a retry is
        scheduled after the backoff."""
        if exc.gone:
            self.gone[entry.fingerprint] = {"at": self.now.isoformat(timespec="seconds"),
                                            "url": getattr(channel, "url", "")}
        if exc.gone or not exc.retry:
            _log_attempt("notify_failed", channel, entry.message, entry.attempts, str(exc))
            self.drop(entry, _GONE if exc.gone else str(exc))
            return
        entry.last_error = str(exc)
        entry.next_at = self.now.timestamp() + backoff(entry.attempts)
        self.box.save(entry)
        _log_attempt("notify_failed", channel, entry.message, entry.attempts, str(exc),
                     next_at=entry.next_at)
        self.done.failed += 1

    def drop(self, entry: Entry, why: str) -> None:
        _drop(self.box, entry, why)
        self.done.dropped += 1


def _drop(box: Outbox, entry: Entry, why: str) -> None:
    box.remove(entry)
    log.error("notify %s: %s message %s dropped: %s", entry.channel, entry.message.event,
              entry.message.id, why,
              extra=fields("notify_dropped", cleanup_channel=entry.channel,
                           cleanup_event=entry.message.event,
                           cleanup_notify_id=entry.message.id,
                           cleanup_attempt=entry.attempts, cleanup_error=why))


def _log_attempt(kind: str, channel: Channel, msg: Message, attempt: int, detail: str,
                 next_at: float | None = None) -> None:
    extra = fields(kind, cleanup_channel=channel.name, cleanup_channel_kind=channel.kind,
                   cleanup_event=msg.event, cleanup_notify_id=msg.id,
                   cleanup_attempt=attempt,
                   cleanup_error=detail if kind == "notify_failed" else None,
                   cleanup_answer=detail if kind == "notify_sent" else None,
                   cleanup_next_attempt=(datetime.fromtimestamp(next_at, UTC)
                                         .isoformat(timespec="seconds")
                                         if next_at is not None else None))
    if kind == "notify_sent":
        log.info("notify %s: %s message %s sent (attempt %d): %s", channel.name, msg.event,
                 msg.id, attempt, detail, extra=extra)
    else:
        retry = (f"; next attempt after {extra['CLEANUP_NEXT_ATTEMPT']}"
                 if next_at is not None else "")
        log.warning("notify %s: %s message %s failed (attempt %d): %s%s", channel.name,
                    msg.event, msg.id, attempt, detail, retry, extra=extra)


# --- the failed unit --------------------------------------------------------------------------


def _unit_properties(unit: str) -> dict[str, str]:
    try:
        proc = subprocess.run(
            ["systemctl", "show", "--no-pager", "-p", "InvocationID,Result,ExecMainCode,"
             "ExecMainStatus,ActiveState", "--", unit],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("notify: cannot ask systemd about %s: %s", unit, exc)
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def _journal(unit: str) -> list[str]:
    """The unit's last journal lines, each escaped to one printable line."""
    try:
        proc = subprocess.run(
            ["journalctl", "--no-pager", "-u", unit, "-n", str(JOURNAL_LINES), "-o", "cat"],
            capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"(journal unavailable: {exc})"]
    text = proc.stdout.decode(errors="surrogateescape")
    return [display(line)[:500] for line in text.splitlines()[-JOURNAL_LINES:]]
