"""Shared helpers for the systemd-integration tests: a real AF_UNIX notify socket, a journal
entry collector, and a small dashboard tree (tests/demo.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
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


#: The notify socket's drain, in a process of its own: it binds the path and writes each
#: datagram as one JSON line to the file named second.
_DRAIN = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
with open(sys.argv[2], "a", encoding="utf-8") as fh:
    while True:
        fh.write(json.dumps(sock.recv(65536).decode(errors="replace")) + "\\n")
        fh.flush()
"""


class NotifyReceiver:
    """A bound AF_UNIX datagram socket, drained by a process of its own.

    Not by a thread of this process: libsystemd's ``sd_notify`` (python3-systemd) keeps the
    GIL while its send waits on a full queue (ten datagrams: ``net.unix.max_dgram_qlen``), so
    a draining thread that needs the GIL would never run again (a run in this process sending
    a burst of progress, as test_notify's does with the throttle off, hung CI once)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.out = path + ".received"
        Path(self.out).touch()
        self.proc = subprocess.Popen([sys.executable, "-c", _DRAIN, path, self.out])
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the notify socket {path} was not bound")
            time.sleep(0.01)

    @property
    def messages(self) -> list[str]:
        with open(self.out, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if any(predicate(m) for m in self.messages):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def statuses(self) -> list[str]:
        return [m.removeprefix("STATUS=") for m in self.messages if m.startswith("STATUS=")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its PID
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
