"""The outbox: every message waits here until a channel took it, survives crashes, is bounded.

``<state dir>/outbox/`` holds one JSON file per (message, channel), named so that name order
is age order. Each is written whole under a temporary name, fsync'd and renamed (a crash
leaves the previous version or nothing, never half a file). A failed attempt is retried on
later runs with exponential backoff (1 min, 2, 4 ... at most 6 h between attempts) until the
message is three days old; then, or when the outbox holds more than :data:`MAX_ENTRIES`, the
oldest are dropped, each with a journal entry. ``<state dir>/notify.json`` keeps what must be
remembered between runs (conditions announced, webhooks answered 410 Gone, the last digest),
written the same way. Everything here happens under ``notify.lock`` (flock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from architect_cleanup.alerts.channels import Message
from architect_cleanup.config import Channel

log = logging.getLogger(__name__)

OUTBOX = "outbox"
NOTIFY_STATE = "notify.json"
LOCK = "notify.lock"
MAX_ENTRIES = 500
MAX_AGE_S = 3 * 86400
FIRST_RETRY_S = 60
MAX_RETRY_S = 6 * 3600
_TMP = ".tmp-"


def fingerprint(channel: Channel) -> str:
    """A channel's identity: its kind and configuration (a changed config is a new channel)."""
    doc = json.dumps({"kind": channel.kind, **channel.to_config()}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def backoff(attempts: int) -> int:
    """Seconds to wait after the *attempts*-th failed attempt."""
    return int(min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(0, attempts - 1)))


@dataclass
class Entry:
    """One message waiting for one channel."""

    channel: str
    fingerprint: str
    message: Message
    created: float
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""
    file: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "fingerprint": self.fingerprint,
                "message": self.message.to_dict(), "created": self.created,
                "attempts": self.attempts, "next_at": self.next_at,
                "last_error": self.last_error}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], file: str) -> Entry:
        return cls(str(doc["channel"]), str(doc["fingerprint"]),
                   Message.from_dict(doc["message"]), float(doc["created"]),
                   int(doc.get("attempts", 0)), float(doc.get("next_at", 0.0)),
                   str(doc.get("last_error", "")), file)


class Outbox:
    """The outbox and the notification state of one state directory. Use as a context
    manager: it holds ``notify.lock`` while open."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, OUTBOX)
        self._lock_fd = -1

    def __enter__(self) -> Outbox:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, LOCK),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        self._sweep()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- entries ------------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        # name order is age order: the message's time, then the moment it was queued
        entry.file = (f"{int(entry.created * 1e9):020d}-{time.time_ns():020d}-"
                      f"{entry.channel}-{entry.message.id}.json")
        self.save(entry)

    def save(self, entry: Entry) -> None:
        _atomic_write(self.path, entry.file, entry.to_dict())

    def remove(self, entry: Entry) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, entry.file))

    def entries(self) -> list[Entry]:
        """Every readable entry, oldest first; an unreadable file is set aside."""
        out = []
        for name in sorted(os.listdir(self.path)):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.path, name), "rb") as fh:
                    out.append(Entry.from_dict(json.loads(fh.read()), name))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("outbox: %s is unreadable (%s); set aside as .%s.corrupt",
                            name, exc, name)
                with contextlib.suppress(OSError):
                    os.replace(os.path.join(self.path, name),
                               os.path.join(self.path, f".{name}.corrupt"))
        return out

    # --- the notification state ---------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.directory, NOTIFY_STATE), "rb") as fh:
                doc = json.loads(fh.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("notify: %s is unreadable (%s); starting afresh", NOTIFY_STATE, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def save_state(self, doc: dict[str, Any]) -> None:
        _atomic_write(self.directory, NOTIFY_STATE, doc)

    def _sweep(self) -> None:
        for d in (self.path, self.directory):
            with contextlib.suppress(OSError), os.scandir(d) as it:
                for e in it:
                    if e.name.startswith(_TMP) and e.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            os.unlink(e.path)


def _atomic_write(directory: str, name: str, doc: dict[str, Any]) -> None:
    data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=_TMP, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def opened(directory: str) -> Iterator[Outbox]:
    with Outbox(directory) as box:
        yield box
