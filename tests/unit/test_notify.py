"""sd_notify against a real AF_UNIX datagram socket set as $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sd_helpers import build_tree, notify_socket

from architect_cleanup.config import Config, LogsConfig
from architect_cleanup.notify import Notifier
from architect_cleanup.state import StateStore
from architect_cleanup.targets import base
from architect_cleanup.targets.base import RunContext
from architect_cleanup.worker import CleanupWorker


def test_notifier_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.send("STATUS=hello") is False
    n.status("hello")
    assert n.sent == 0


def test_libsystemd_sd_notify_delivers_status_to_the_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with notify_socket() as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", rx.path)
        n = Notifier()
        assert n._sd_notify is not None, "python3-systemd's sd_notify is used under Debian"
        n.status("logs: 120,000 files checked")
        assert rx.wait_for(lambda m: m == "STATUS=logs: 120,000 files checked")
        assert n.sent == 1


def test_fallback_sender_speaks_to_path_and_abstract_sockets() -> None:
    with notify_socket() as rx:
        n = Notifier({"NOTIFY_SOCKET": rx.path})
        assert n._sd_notify is None
        n.status("first")
        assert rx.wait_for(lambda m: m == "STATUS=first")
    import socket
    name = f"ac-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("abstract")
        assert sock.recv(100) == b"STATUS=abstract"


def test_status_text_is_kept_on_one_line() -> None:
    with notify_socket() as rx:
        Notifier({"NOTIFY_SOCKET": rx.path}).status("two\nlines")
        assert rx.wait_for(lambda m: m == "STATUS=two lines")


def test_a_dead_socket_is_logged_at_debug_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # setup_logging() (run by other tests) stops propagation to the root logger caplog uses
    monkeypatch.setattr(logging.getLogger("architect_cleanup"), "propagate", True)
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="architect_cleanup.notify"):
        assert n.send("STATUS=x") is False
    assert n.failed == 1
    assert "sd_notify" in caplog.text and "nobody-listens" in caplog.text


def test_progress_is_throttled_but_forced_messages_always_go() -> None:
    sent: list[str] = []
    ctx = RunContext(config=Config(), now=datetime.now(UTC), dry_run=True,
                     on_status=sent.append)
    for i in range(1000):
        ctx.status(f"logs: {i} files checked")
    assert sent == ["logs: 0 files checked"]
    ctx.status("temp: starting", force=True)
    assert sent[-1] == "temp: starting"


def _worker(tmp_path: Path, **kw: object) -> CleanupWorker:
    root, tmp = tmp_path / "srv", tmp_path / "tmp"
    cfg = Config(root=str(root), logs=LogsConfig(tmp_dir=str(tmp)))
    return CleanupWorker(dry_run=True, config=cfg, lock_file=str(tmp_path / "run" / "lock"),
                         state=StateStore(str(tmp_path / "state")), **kw)  # type: ignore[arg-type]


def test_a_real_run_reports_each_target_and_thousands_of_files_then_the_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    build_tree(tmp_path / "srv", tmp_path / "tmp", now, databases=False)
    many = tmp_path / "srv" / "logs" / "many"
    many.mkdir(parents=True)
    for i in range(5000):
        (many / f"f{i}.txt").touch()
    monkeypatch.setattr(base, "PROGRESS_INTERVAL", 0.0)  # every progress point, not 1/s
    with notify_socket() as rx:
        monkeypatch.setenv("NOTIFY_SOCKET", rx.path)
        stats = _worker(tmp_path).run_cleanup()
        assert rx.wait_for(lambda m: m == "STATUS=" + stats.summary_line())
        statuses = rx.statuses()
    assert statuses[-1] == stats.summary_line()
    assert statuses[-1].startswith("Dry run: would free ")
    # logs and temp share one walk of the tree
    assert "backups: starting" in statuses and "logs/temp: starting" in statuses
    assert "backups: prod done, " in " | ".join(statuses)
    counts = [int(s.split()[1].replace(",", "")) for s in statuses
              if s.startswith("logs/temp: ") and s.endswith(" files checked")]
    assert len(counts) >= 5, "progress per directory and per 1,024 files"
    assert counts == sorted(counts) and counts[-1] > 5000


def test_a_run_without_notify_socket_sends_nothing_and_still_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    build_tree(tmp_path / "srv", tmp_path / "tmp", time.time(), databases=False)
    worker = _worker(tmp_path)
    stats = worker.run_cleanup()
    assert stats.success
    assert worker.notifier.sent == 0
