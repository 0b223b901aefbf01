"""Logging to journald with structured fields, or to stderr outside systemd.

Per-target and summary entries carry ``CLEANUP_*`` fields and a fixed ``MESSAGE_ID`` per kind
of message; ``/usr/lib/systemd/catalog/architect-cleanup.catalog`` explains each one, so
``journalctl -x`` shows the explanation and ``journalctl MESSAGE_ID=…  -o json`` is how a
script reads the run history.

The fields each kind carries (all values are text in the journal; booleans are 0/1):

* ``run_started``: CLEANUP_DRY_RUN, CLEANUP_SOURCE (timer, cli, api, python), CLEANUP_ROOT
* ``target_done``: CLEANUP_TARGET, CLEANUP_RESULT=ok, CLEANUP_ITEMS (removed, or would be),
  CLEANUP_BYTES, CLEANUP_KEPT, CLEANUP_SKIPPED, CLEANUP_ERRORS, CLEANUP_CHECKED,
  CLEANUP_DRY_RUN, CLEANUP_DURATION (seconds)
* ``target_failed``: CLEANUP_TARGET, CLEANUP_RESULT=failed, CLEANUP_ERROR, CLEANUP_ITEMS,
  CLEANUP_BYTES, CLEANUP_DRY_RUN
* ``run_summary`` (the last entry of a run): CLEANUP_RESULT (success, failed),
  CLEANUP_DRY_RUN, CLEANUP_ITEMS, CLEANUP_BYTES, CLEANUP_DURATION, CLEANUP_SOURCE,
  CLEANUP_FAILED_TARGETS, and the seed's stats names BACKUPS_DELETED, LOGS_DELETED,
  TASKS_DELETED, ERRORS_DELETED, PROMPTS_DELETED, TEMP_FILES_DELETED, SPACE_FREED_MB
* ``readonly_path``: CLEANUP_TARGET, CLEANUP_PATH
* ``lock_held``: CLEANUP_LOCK_PID, CLEANUP_LOCK_PATH
* ``state_error``: CLEANUP_STATE_FILE, CLEANUP_ERROR
* ``config_error``: CLEANUP_ERROR
* ``backup_corrupt``: CLEANUP_TARGET, CLEANUP_ENV, CLEANUP_PATH, CLEANUP_ERROR (the check's
  detail, e.g. ``quick_check: ...``)
* ``db_lock_lost``: CLEANUP_PATH (the database), CLEANUP_PID, CLEANUP_COMMAND
* ``notify_sent``, ``notify_failed``, ``notify_dropped`` (one per delivery attempt, and per
  message given up): CLEANUP_CHANNEL, CLEANUP_CHANNEL_KIND, CLEANUP_EVENT, CLEANUP_NOTIFY_ID
  (the webhook-id), CLEANUP_ATTEMPT, CLEANUP_ANSWER (sent), CLEANUP_ERROR (failed, dropped),
  CLEANUP_NEXT_ATTEMPT (failed, when it is retried)
* ``item_removed`` (a real run only, debug priority): CLEANUP_TARGET, CLEANUP_PATH,
  CLEANUP_BYTES, CLEANUP_REASON

``target_done`` and ``run_summary`` carry CLEANUP_ACTION besides: what the run did in words
("would remove" or "removed", "would archive" or "archived"; "would free" or "freed"), so
the catalog never says "removed" of a dry run. ``target_done`` has CLEANUP_RESULT=stopped
(warning priority) when ``systemctl stop`` ended the run while the target worked, and the
summary CLEANUP_RESULT=stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from architect_cleanup.fs import display

SYSLOG_IDENTIFIER = "architect-cleanup"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

#: One fixed id per kind of message (documented in systemd/architect-cleanup.catalog).
MESSAGE_IDS = {
    "run_started": uuid.UUID("1d3a905294534c8eb84c29837b28a5d1"),
    "target_done": uuid.UUID("d480f218d3d1410e90caed1c38f65415"),
    "target_failed": uuid.UUID("15b9a24899ed493690914ee32a0b4749"),
    "run_summary": uuid.UUID("3726a68e1ecc49c3a86281297a030576"),
    "lock_held": uuid.UUID("d927a64212464eb386d7b80bbac61a35"),
    "state_error": uuid.UUID("8d42c1b53344425da93d5ee31b3b3c0d"),
    "readonly_path": uuid.UUID("5b0de9e7c3254aca9adb54a98a727329"),
    "api_call": uuid.UUID("bef959ae69254897a309128aad8b07f8"),
    "config_error": uuid.UUID("eb4c3d8cb37f49c5a990127e178581e5"),
    "backup_corrupt": uuid.UUID("283d9071c3664858af45810a38e90773"),
    "db_lock_lost": uuid.UUID("8f629d281003442f8d7717efe2119e0d"),
    "notify_sent": uuid.UUID("a9a855e71cb844f3a7b1c4f2b2848089"),
    "notify_failed": uuid.UUID("8fb56140e9e348a88a76ed0d02e19bb0"),
    "notify_dropped": uuid.UUID("c56725c1ce3d4d788e3fe9e2d7d2509f"),
    "item_removed": uuid.UUID("9a6582e0492c4a0c840e99f198fc3af2"),
}

#: Sends one journal entry: ``sender(MESSAGE, **FIELDS)`` (python3-systemd's journal.send).
Sender = Callable[..., Any]


def fields(kind: str, **values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the message id of *kind* plus upper-cased fields.

    The id is given in journald's own spelling (32 hex digits), so ``journalctl
    MESSAGE_ID=…`` matches it; booleans become 0/1 and None values are left out."""
    out: dict[str, Any] = {"MESSAGE_ID": MESSAGE_IDS[kind].hex}
    for key, value in values.items():
        if value is None:
            continue
        out[key.upper()] = int(value) if isinstance(value, bool) else value
    return out


def journal_available(socket_path: str = JOURNAL_SOCKET) -> bool:
    """True when journald's native socket exists (and python3-systemd can talk to it)."""
    return os.path.exists(socket_path) and _journal_send() is not None


def stream_is_journal(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """True when *stream* is connected to the journal (systemd sets ``$JOURNAL_STREAM``)."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _journal_send() -> Sender | None:
    try:
        from systemd.journal import send  # noqa: PLC0415  (optional: python3-systemd)
    except ImportError:
        return None
    sender: Sender = send
    return sender


def _escaped(value: Any) -> Any:
    """A log argument as it may be shown: numbers as they are (for ``%d``), anything else as
    its text with control characters and undecodable bytes escaped (:func:`fs.display`)."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    return display(str(value))


class EscapingFormatter(logging.Formatter):
    """Renders every record so that nothing it interpolates can start a line or a terminal
    sequence: each argument (a file name, a table name, an exception's text, a request's
    path...) is escaped with :func:`fs.display` before ``msg % args``, and a message logged
    without arguments is escaped whole. Only the product's own format strings (literals in
    the code) may hold a newline. Tracebacks are escaped line by line.

    Both sinks use it: the stderr handler and the journal handler (``MESSAGE``); the journal
    handler escapes every ``CLEANUP_*`` field as well."""

    def format(self, record: logging.LogRecord) -> str:
        msg, args = record.msg, record.args
        try:
            if args:
                if isinstance(args, Mapping):
                    record.args = {k: _escaped(v) for k, v in args.items()}
                else:
                    record.args = tuple(_escaped(a) for a in args)
            else:
                record.msg = display(str(msg))
            return super().format(record)
        finally:
            record.msg, record.args = msg, args

    def formatException(self, ei: Any) -> str:
        return "\n".join(display(line) for line in super().formatException(ei).splitlines())


class JournalHandler(logging.Handler):
    """A logging handler that writes one journal entry per record.

    It sends the message, the priority, the code location, ``SYSLOG_IDENTIFIER`` and the
    record's upper-case ``extra=`` fields (:func:`fields`) — not the LogRecord's internals,
    which python3-systemd's own JournalHandler would send as well. *sender* is the function
    that talks to journald (python3-systemd's ``journal.send``); tests may pass another.
    """

    #: logging level -> syslog priority
    PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                  (logging.INFO, 6))

    def __init__(self, sender: Sender, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.sender = sender
        self.setFormatter(EscapingFormatter())

    @classmethod
    def priority(cls, levelno: int) -> int:
        for threshold, prio in cls.PRIORITIES:
            if levelno >= threshold:
                return prio
        return 7

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """The journal fields for *record* (MESSAGE included)."""
        out: dict[str, Any] = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(self.priority(record.levelno)),
            "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
        }
        if record.exc_info:
            out["EXCEPTION_TEXT"] = EscapingFormatter().formatException(record.exc_info)
        # Every field is text in the journal: one that holds a name from the tree (a path, a
        # table, an error's text) is escaped like the message.
        out.update((k, v if isinstance(v, bool | int | float) else display(str(v)))
                   for k, v in record.__dict__.items() if k.isupper() and v is not None)
        return out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            doc = self.entry(record)
            message = doc.pop("MESSAGE")
            self.sender(message, **doc)
        except Exception:
            self.handleError(record)


class OncePerRun(logging.Filter):
    """For a terminal: an error every target hits alike (a missing root) is shown once, and
    the summary entry not at all (the command prints its summary); the journal still gets
    every entry."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "MESSAGE_ID", None) == MESSAGE_IDS["run_summary"].hex:
            return False  # the command prints the summary itself (or its JSON)
        error = getattr(record, "CLEANUP_ERROR", None)
        if error is None:
            return True
        if error in self.seen:
            return False
        self.seen.add(str(error))
        return True


def setup_logging(level: int = logging.INFO, *, journal: bool | None = None,
                  stderr: TextIO | None = None, stderr_level: int = logging.WARNING,
                  sender: Sender | None = None) -> str:
    """Route the package's logs to journald and/or stderr; returns "journal", "stderr" or both.

    The journal (when its socket exists, or *journal* says so) gets every entry from *level*
    up, with its fields. stderr gets *stderr_level* and up — on a terminal the human output
    already tells the story — unless stderr is itself connected to the journal (the service),
    where that would log everything twice. *sender* replaces python3-systemd's ``journal.send``
    (and turns the journal on): an embedding program's, or a test's that reads the entries."""
    stderr = sys.stderr if stderr is None else stderr
    logger = logging.getLogger("architect_cleanup")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(level)
    logger.propagate = False
    where = []
    if sender is None and (journal_available() if journal is None else journal):
        sender = _journal_send()
    if sender is not None:
        logger.addHandler(JournalHandler(sender, level))
        where.append("journal")
    if sender is None or not stream_is_journal(stderr):
        handler = logging.StreamHandler(stderr)
        handler.setFormatter(EscapingFormatter("%(levelname)s: %(message)s"))
        handler.setLevel(stderr_level)
        handler.addFilter(OncePerRun())
        logger.addHandler(handler)
        where.append("stderr")
    return "+".join(where)
