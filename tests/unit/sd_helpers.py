"""Shared helpers for the systemd-integration tests: a real AF_UNIX notify socket, a journal
entry collector, and a small dashboard tree (tests/demo.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import check_units  # noqa: E402  (tests/check_units.py)

from architect_cleanup.journal import JournalHandler  # noqa: E402

import demo  # noqa: E402  (tests/demo.py)

build_tree = demo.build_tree
__all__ = ["REPO", "TESTS", "Collector", "NotifyReceiver", "build_tree", "check_units",
           "journal_collector", "notify_socket"]


class NotifyReceiver:
    """A bound AF_UNIX datagram socket, drained by a thread (a full queue would block the
    sender, as systemd's own socket would if PID 1 stopped reading)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self.arrived = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.arrived:
                self.messages.append(data.decode())
                self.arrived.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: any(predicate(m) for m in self.messages),
                                         timeout)

    def statuses(self) -> list[str]:
        with self.arrived:
            return [m.removeprefix("STATUS=") for m in self.messages
                    if m.startswith("STATUS=")]

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


@contextlib.contextmanager
def notify_socket() -> Iterator[NotifyReceiver]:
    """A real notify socket at a short path (sun_path holds 108 bytes)."""
    d = tempfile.mkdtemp(prefix="ac-notify-", dir="/tmp")
    rx = NotifyReceiver(os.path.join(d, "notify"))
    try:
        yield rx
    finally:
        rx.close()
        shutil.rmtree(d, ignore_errors=True)


class Collector:
    """What journald would receive: one dict of fields per entry (MESSAGE included)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, message: str, **fields: Any) -> None:
        self.entries.append({"MESSAGE": message, **fields})

    def by_id(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("MESSAGE_ID") == message_id]


@contextlib.contextmanager
def journal_collector(level: int = logging.INFO) -> Iterator[Collector]:
    """Our JournalHandler on the package logger, sending to a Collector."""
    logger = logging.getLogger("architect_cleanup")
    collector = Collector()
    handler = JournalHandler(collector, level)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield collector
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
