"""The dashboard's own API test script passes against both ways of moving the dashboard.

``tests/dashboard_app.py`` is an ``app.py`` written like the dashboard's two cleanup routes.
It runs twice: with its import line switched to :mod:`architect_cleanup.compat` (the routes
stay the dashboard's), and with the routes replaced by our blueprint behind the dashboard's
login. :class:`ApiScript` does what the dashboard's ``test_cleanup_api.py`` does: log in, check
the status keys and types, a dry run's ``message`` and ``stats``, a run with custom settings.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_app import (
    COMPAT_IMPORT,
    ORIGINAL,
    ORIGINAL_IMPORT,
    PASSWORD,
    USER,
    load,
    with_blueprint,
    with_compat,
)
from flask.testing import FlaskClient
from gunicorn_server import Site

STATUS, CLEANUP = "/api/system/cleanup/status", "/api/system/cleanup"
#: The status keys and types the dashboard's test script and UI rely on.
SEED_STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "success": (bool,), "daemon_running": (bool,), "daemon_pid": (int, type(None)),
    "last_run": (str, type(None)), "last_stats": (dict, type(None))}
SEED_STATS = ("backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
              "prompts_deleted", "temp_files_deleted", "space_freed_mb")
_names = itertools.count()


class ApiScript:
    """What the dashboard's test_cleanup_api.py does, as a test client."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self) -> None:
        r = self.client.post("/login", json={"username": USER, "password": PASSWORD})
        assert r.status_code == 200, r.get_data(as_text=True)

    def status(self) -> dict[str, Any]:
        r = self.client.get(STATUS)
        assert r.status_code == 200, r.get_data(as_text=True)
        doc: dict[str, Any] = r.get_json()
        for key, types in SEED_STATUS_TYPES.items():
            assert key in doc, f"status lacks {key}"
            assert isinstance(doc[key], types), f"status {key} = {doc[key]!r}"
        assert doc["success"] is True
        return doc

    def cleanup(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post(CLEANUP, json=body)
        assert r.status_code == 200, r.get_data(as_text=True)
        doc: dict[str, Any] = r.get_json()
        assert doc["success"] is True
        assert isinstance(doc["message"], str) and "Cleanup completed" in doc["message"]
        stats = doc["stats"]
        assert set(SEED_STATS) <= set(stats)
        for key in SEED_STATS[:-1]:
            assert isinstance(stats[key], int) and not isinstance(stats[key], bool)
        assert isinstance(stats["space_freed_mb"], int | float)
        return doc

    def dry_run(self) -> dict[str, Any]:
        doc = self.cleanup({"dry_run": True})
        assert doc["dry_run"] is True
        return doc

    def custom_settings(self) -> dict[str, Any]:
        doc = self.cleanup({"dry_run": True, "backup_retention": 15, "log_age_days": 60,
                            "task_age_days": 14})
        assert doc["dry_run"] is True
        return doc


def snapshot(*dirs: Path) -> dict[str, Any]:
    """Every file under *dirs* (size, mtime) and the dashboard databases' rows (but the
    activity log's, which an API call writes even on a dry run); SQLite's -wal/-shm files and
    directory mtimes are the database engine's business."""
    out: dict[str, Any] = {}
    for top in dirs:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                p = Path(dirpath, name)
                if name.endswith(("-wal", "-shm")) and (p.parent / name[:-4]).exists():
                    continue
                if name in ("architect.db", "assigner.db"):
                    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                    dump = "\n".join(line for line in con.iterdump()
                                     if '"activity_log"' not in line
                                     and '"sqlite_sequence"' not in line)
                    con.close()
                    out[str(p)] = hashlib.sha256(dump.encode()).hexdigest()
                else:
                    st = p.lstat()
                    out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    for key, value in s.env().items():
        monkeypatch.setenv(key, value)
    return s


@pytest.fixture(params=["compat", "blueprint"])
def dashboard(request: pytest.FixtureRequest, site: Site) -> Iterator[FlaskClient]:
    change = with_compat if request.param == "compat" else with_blueprint
    module = load(change(ORIGINAL), site.base / f"dashboard-{request.param}",
                  f"dashboard_app_{request.param}_{next(_names)}")
    with module.app.test_client() as client:
        yield client


def test_switching_the_import_line_is_the_whole_compat_change() -> None:
    changed = with_compat(ORIGINAL)
    assert ORIGINAL_IMPORT not in changed and COMPAT_IMPORT in changed
    diff = [(a, b) for a, b in zip(ORIGINAL.splitlines(), changed.splitlines(), strict=True)
            if a != b]
    assert diff == [(ORIGINAL_IMPORT, COMPAT_IMPORT)]


def test_the_dashboards_api_test_script_passes(dashboard: FlaskClient, site: Site) -> None:
    before = snapshot(site.root, site.tmp)
    script = ApiScript(dashboard)
    script.login()
    script.status()
    dry = script.dry_run()
    assert dry["stats"]["backups_deleted"] > 0  # the demo tree has more than the policy keeps
    custom = script.custom_settings()
    assert custom["stats"]["backups_deleted"] < dry["stats"]["backups_deleted"]  # keeps 15
    assert snapshot(site.root, site.tmp) == before, "a dry run changed the tree"


def test_nothing_answers_before_the_login(dashboard: FlaskClient, site: Site) -> None:
    before = snapshot(site.root, site.tmp)
    assert dashboard.get(STATUS).status_code == 401
    assert dashboard.post(CLEANUP, json={"dry_run": False}).status_code == 401
    assert snapshot(site.root, site.tmp) == before
    assert site.state_doc()["history"] == []


def test_a_dry_run_of_0_cleans_nothing(dashboard: FlaskClient, site: Site) -> None:
    # The original worker cleaned on any false value; the compat worker only on False, and
    # the blueprint refuses the wrong type outright.
    before = snapshot(site.root, site.tmp)
    script = ApiScript(dashboard)
    script.login()
    r = dashboard.post(CLEANUP, json={"dry_run": 0})
    assert r.status_code in (200, 400)
    assert snapshot(site.root, site.tmp) == before
    assert all(h["dry_run"] is True for h in site.state_doc()["history"])


def test_a_real_run_shows_in_the_status_afterwards(dashboard: FlaskClient, site: Site) -> None:
    script = ApiScript(dashboard)
    script.login()
    assert script.status()["last_run"] is None
    before = snapshot(site.root, site.tmp)
    doc = script.cleanup({"dry_run": False})
    assert doc["dry_run"] is False and doc["stats"]["backups_deleted"] > 0
    assert snapshot(site.root, site.tmp) != before
    status = script.status()
    assert isinstance(status["last_run"], str)
    assert status["last_stats"]["backups_deleted"] == doc["stats"]["backups_deleted"]
    assert status["last_stats"]["space_freed_mb"] == doc["stats"]["space_freed_mb"]
