"""The panel's test kit: a dashboard-like site with a history, the app served on loopback, and
a small HTTP client that keeps cookies (tests/unit/test_panel*.py, tests/browser).

Everything is real: files in a temporary directory, the dashboard's SQLite schema, the history
database written by :mod:`architect_cleanup.history`, the standalone app served by werkzeug on
127.0.0.1 in a thread (bounded: stopped by :meth:`Served.stop`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from architect_cleanup import history
from architect_cleanup.history import BackupRecord, Item, PartRecord, Sample, TargetRecord
from architect_cleanup.state import StateStore

TOKEN = "panel-test-token-0123456789abcdef"
SCHEMA = Path(__file__).resolve().parent / "data" / "dashboard_schema.sql"
DAY = 86400.0
PANEL = "/system/cleanup"


@dataclass
class Site:
    """A dashboard install: 20 daily prod backups, 8 qa backups, old logs, a database with an
    activity_log; config.toml with one environment setting, and a history of 14 daily runs."""

    base: Path
    now: float = field(default_factory=time.time)

    @property
    def root(self) -> Path:
        return self.base / "srv" / "architect"

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def config(self) -> Path:
        return self.etc / "config.toml"

    @property
    def dropin(self) -> Path:
        return self.etc / "config.d" / "60-panel.toml"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def db(self) -> Path:
        return self.root / "data" / "prod" / "architect.db"

    def build(self) -> Site:
        for env, n in (("prod", 20), ("qa", 8)):
            d = self.root / "data" / env / "backups"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                t = self.now - (i + 1) * DAY
                stamp = datetime.fromtimestamp(t, UTC).strftime("%Y%m%d_%H%M%S")
                self._backup(d / f"architect_{stamp}.db", t, 4096 * (i + 1))
        logs = self.root / "logs"
        for i in range(40):
            self._file(logs / f"worker-{i:02d}.log", self.now - (10 + i * 2) * DAY, 2048)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.db) as conn:
            conn.executescript(SCHEMA.read_text())
        self.etc.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'root = "{self.root}"\nenvironments = ["prod", "qa"]\n\n[logs]\ntmp_dir = ""\n'
            '\n[backups.retention]\nqa = 4\n')
        self.state.mkdir(parents=True, exist_ok=True)
        return self

    @staticmethod
    def _backup(path: Path, mtime: float, size: int) -> None:
        """A real SQLite database (backups are verified before they count)."""
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE t (b BLOB)")
            conn.execute("INSERT INTO t VALUES (zeroblob(?))", (size,))
            conn.commit()
        os.utime(path, (mtime, mtime))

    @staticmethod
    def _file(path: Path, mtime: float, size: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
        os.utime(path, (mtime, mtime))

    def environ(self) -> dict[str, str]:
        return {"STATE_DIRECTORY": str(self.state), "RUNTIME_DIRECTORY": str(self.base / "run"),
                "ARCHITECT_CLEANUP_CONFIG": str(self.config)}

    def seed_history(self, runs: int = 14) -> None:
        """*runs* daily real runs: free space falling 1 GiB a day, logs and backups freed,
        the backups per environment, and the items of the newest run."""
        opened = history.open_history(str(self.state), now=datetime.fromtimestamp(self.now, UTC))
        h = opened.history
        assert h is not None, opened.warning
        total = 100 * 1024**3
        for k in range(runs):
            started = datetime.fromtimestamp(self.now - (runs - k) * DAY, UTC)
            w = h.begin_run(started_at=started, dry_run=False, source="timer")
            free = 60 * 1024**3 - k * 1024**3
            w.samples([Sample("fs_free", str(self.root), float(free)),
                       Sample("fs_total", str(self.root), float(total)),
                       Sample("bytes", "backups:prod", float(300 * 1024**2))])
            w.backups([BackupRecord("prod", 10 + k % 3, 300 * 1024**2, True),
                       BackupRecord("qa", 4 + k % 2, 100 * 1024**2, True)])
            freed_logs, freed_backups = (k + 1) * 5 * 1024**2, (k % 4) * 40 * 1024**2
            w.target(TargetRecord("logs", "ok", 3 + k, freed_logs),
                     [PartRecord("logs", "logs", 3 + k, freed_logs)])
            w.target(TargetRecord("backups", "ok", k % 4, freed_backups),
                     [PartRecord("backups", "prod", k % 4, freed_backups)])
            if k == runs - 1:
                w.items(Item("logs", str(self.root / "logs" / f"old-{i:03d}.log"), 1024,
                             self.now - 40 * DAY, "40 days old > 30d", None)
                        for i in range(60))
                w.item(Item("backups", str(self.root / "data/prod/backups/"
                                           "architect_20260101_000000.db"), 4096,
                            self.now - 300 * DAY, "newest 10 of prod: beyond them", "prod"))
            w.finish(finished_at=started + timedelta(seconds=30), result="success",
                     duration_s=30.0, items=3 + k + k % 4, bytes=freed_logs + freed_backups)
            StateStore(str(self.state)).record({
                "started_at": started.isoformat(timespec="seconds"),
                "finished_at": (started + timedelta(seconds=30)).isoformat(timespec="seconds"),
                "dry_run": False, "result": "success", "duration_s": 30.0, "source": "timer",
                "pid": 4242, "stats": {"backups_deleted": k % 4, "logs_deleted": 3 + k,
                                       "space_freed": freed_logs + freed_backups},
                "failed_targets": [], "message": "Cleanup completed",
                "summary": f"Freed {(freed_logs + freed_backups) / 1024**2:.1f} MB: "
                           f"{k % 4} backups, {3 + k} logs, 0 tasks, 0 errors, "
                           "0 prompts archived, 0 temp files"})
        h.close()

    def activity(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT user_id, action, details, ip_address FROM activity_log"
                                " ORDER BY id").fetchall()


class Served:
    """A WSGI app on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@contextmanager
def served(app: Any) -> Iterator[Served]:
    s = Served(app)
    try:
        yield s
    finally:
        s.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """HTTP/1.1 to the served app, keeping its cookies (like a browser, without one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        hdrs = dict(headers or {})
        if self.jar:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        cookies = resp.headers.get_all("Set-Cookie") or []
        for raw in cookies:
            c = SimpleCookie()
            c.load(raw)
            for k, morsel in c.items():
                if morsel.value:
                    self.jar[k] = morsel.value
                else:
                    self.jar.pop(k, None)
        conn.close()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, cookies, text)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post_json(self, path: str, doc: Any, csrf: str | None = None,
                  headers: dict[str, str] | None = None) -> Reply:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if csrf is not None:
            hdrs["X-CSRF-Token"] = csrf
        return self.request("POST", path, json.dumps(doc).encode(), hdrs)

    def post_form(self, path: str, form: dict[str, str]) -> Reply:
        from urllib.parse import urlencode
        return self.request("POST", path, urlencode(form).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def csrf(self, page: str = PANEL + "/") -> str:
        r = self.get(page)
        m = (re.search(r'name="csrf-token" content="([^"]+)"', r.body)
             or re.search(r'name="csrf_token" value="([^"]+)"', r.body))
        assert m, r.body[:500]
        return m.group(1)

    def login(self, token: str = TOKEN) -> Reply:
        csrf = self.csrf(PANEL + "/login")
        return self.post_form(PANEL + "/login", {"token": token, "csrf_token": csrf})
