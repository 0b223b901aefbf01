"""Logging to journald with structured fields, or to stderr outside systemd.

Per-target and summary entries carry ``CLEANUP_*`` fields and a fixed ``MESSAGE_ID`` per kind
of message; ``/usr/lib/systemd/catalog/architect-cleanup.catalog`` explains each one, so
``journalctl -x`` shows the explanation and ``journalctl MESSAGE_ID=…  -o json`` is how a
script reads the run history.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any

SYSLOG_IDENTIFIER = "architect-cleanup"

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
}


def fields(kind: str, **values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the message id of *kind* plus ``CLEANUP_*`` fields."""
    out: dict[str, Any] = {"MESSAGE_ID": MESSAGE_IDS[kind]}
    for key, value in values.items():
        out[key.upper()] = int(value) if isinstance(value, bool) else value
    return out


def journal_available(environ: Mapping[str, str] | None = None) -> bool:
    """True when journald is reachable through its native socket."""
    environ = os.environ if environ is None else environ
    return os.path.exists("/run/systemd/journal/socket") and (
        "JOURNAL_STREAM" in environ or "INVOCATION_ID" in environ)


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


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler  # noqa: PLC0415  (optional)
    except ImportError:
        return None

    class _Handler(JournalHandler):  # type: ignore[misc]
        """Sends only upper-case (journal-valid) extra fields, not LogRecord internals."""

        def emit(self, record: logging.LogRecord) -> None:
            try:
                msg = self.format(record)
                extra = {k: v for k, v in record.__dict__.items() if k.isupper()}
                self.send(msg, PRIORITY=str(self.map_priority(record.levelno)),
                          LOGGER=record.name, CODE_FILE=record.pathname,
                          CODE_LINE=record.lineno, CODE_FUNC=record.funcName,
                          SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, **extra)
            except Exception:
                self.handleError(record)

    return _Handler()


def setup_logging(level: int = logging.INFO, *, journal: bool | None = None,
                  stderr_level: int = logging.WARNING) -> str:
    """Route the package's logs to journald (under systemd) or stderr; returns which.

    On a terminal the human output already tells the story, so stderr gets warnings and
    errors only (*stderr_level*); the journal gets everything from *level* up."""
    logger = logging.getLogger("architect_cleanup")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.setLevel(level)
    logger.propagate = False
    handler: logging.Handler | None = None
    use_journal = journal_available() if journal is None else journal
    if use_journal:
        handler = _journal_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler.setLevel(stderr_level)
        where = "stderr"
    else:
        where = "journal"
    logger.addHandler(handler)
    return where
