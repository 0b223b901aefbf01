"""The Flask side of the API: the blueprint in a host app, the actor, the token, the factory.

(Everything over real HTTP under gunicorn is in test_api_gunicorn.py.)
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from gunicorn_server import API, STATUS, Site

from architect_cleanup import activity
from architect_cleanup.api import (
    ApiSetupError,
    StopSwitch,
    bearer_matches,
    cleanup_blueprint,
    create_app,
    read_token,
)
from architect_cleanup.journal import MESSAGE_IDS
from architect_cleanup.stats import CleanupStats
from architect_cleanup.targets import RunContext


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    for key, value in s.env().items():
        monkeypatch.setenv(key, value)
    return s


@pytest.fixture
def hook_calls(monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[list[tuple[RunContext, CleanupStats]]]:
    """What the run's activity-row step (the activity-log writer) is handed."""
    calls: list[tuple[RunContext, CleanupStats]] = []

    def hook(ctx: RunContext, stats: CleanupStats) -> None:
        calls.append((ctx, stats))

    monkeypatch.setattr(activity, "record_run", hook)
    yield calls


def dashboard_app() -> Flask:
    """A stand-in for the dashboard: its own login (a session header here), its user."""
    app = Flask("dashboard")

    def current_user() -> dict[str, Any] | None:
        name = request.headers.get("X-Session-User")
        return {"id": 42, "username": name} if name else None

    def require_login() -> Response | None:
        if current_user() is None:
            return Response('{"error": "login required"}', 302,
                            {"Location": "/login"}, mimetype="application/json")
        return None

    def actor() -> dict[str, Any]:
        user = current_user() or {}
        return {"user_id": user.get("id"), "user": user.get("username"),
                "ip_address": request.remote_addr}

    bp = cleanup_blueprint(actor=actor)  # type: ignore[arg-type]
    bp.before_request(require_login)
    app.register_blueprint(bp)
    return app


def test_the_blueprint_runs_behind_the_dashboards_own_login_check(
        site: Site, hook_calls: list[tuple[RunContext, CleanupStats]]) -> None:
    client = dashboard_app().test_client()
    assert client.post(API, json={"dry_run": True}).status_code == 302
    assert client.get(STATUS).status_code == 302
    assert hook_calls == []

    r = client.post(API, json={"dry_run": True}, headers={"X-Session-User": "alice"},
                    environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 200
    assert r.get_json()["dry_run"] is True
    r = client.get(STATUS, headers={"X-Session-User": "alice"})
    assert r.status_code == 200 and r.get_json()["last_result"]["source"] == "api"


def test_the_caller_reaches_the_after_run_hooks_for_the_activity_log(
        site: Site, hook_calls: list[tuple[RunContext, CleanupStats]]) -> None:
    client = dashboard_app().test_client()
    client.post(API, json={"dry_run": True, "log_age_days": 45},
                headers={"X-Session-User": "alice"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    [(ctx, stats)] = hook_calls
    assert ctx.source == "api" and stats.source == "api"
    assert ctx.dry_run is True  # an API call is recorded even when it is a dry run
    assert ctx.actor == {"user_id": 42, "user": "alice", "ip_address": "10.1.2.3"}


def test_the_standalone_caller_is_the_api_token_at_its_address(
        site: Site, hook_calls: list[tuple[RunContext, CleanupStats]]) -> None:
    app = create_app(configure_logging=False)
    r = app.test_client().post(API, json={}, headers={"Authorization": f"Bearer {site.token}"},
                               environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 200
    [(ctx, _stats)] = hook_calls
    assert ctx.actor == {"user_id": None, "user": "api-token", "ip_address": "127.0.0.1"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_call_is_logged_with_the_message_id_and_fields_for_the_journal(site: Site) -> None:
    app = create_app(configure_logging=False)
    logger = logging.getLogger("architect_cleanup.api")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        app.test_client().post(API, json={"dry_run": True, "targets": ["logs"]},
                               headers={"Authorization": f"Bearer {site.token}"},
                               environ_base={"REMOTE_ADDR": "127.0.0.1"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    [rec] = [r for r in handler.records if r.getMessage().startswith("API POST")]
    assert str(rec.MESSAGE_ID).replace("-", "") == MESSAGE_IDS["api_call"].hex
    assert rec.CLEANUP_API_USER == "api-token" and rec.CLEANUP_API_IP == "127.0.0.1"
    assert rec.CLEANUP_API_STATUS == 200 and rec.CLEANUP_DRY_RUN == 1
    assert rec.CLEANUP_API_PARAMS == '{"dry_run": true, "targets": ["logs"]}'


def activity_rows(site: Site) -> list[dict[str, Any]]:
    con = sqlite3.connect(site.root / "data" / "prod" / "architect.db")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(
            "SELECT user_id, action, entity_type, details, ip_address FROM activity_log "
            "WHERE action = 'system_cleanup' ORDER BY id")]
    finally:
        con.close()


def test_a_dashboard_users_call_is_recorded_in_the_activity_log_even_when_dry(
        site: Site) -> None:
    client = dashboard_app().test_client()
    r = client.post(API, json={"dry_run": True}, headers={"X-Session-User": "alice"},
                    environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 200
    [row] = activity_rows(site)
    assert (row["user_id"], row["ip_address"], row["entity_type"]) == (42, "10.1.2.3", "system")
    details = json.loads(row["details"])
    assert (details["dry_run"], details["source"], details["user"]) == (True, "api", "alice")
    # a refused call ran nothing and records nothing
    assert client.post(API, json={"dry_run": 0}, headers={"X-Session-User": "alice"}
                       ).status_code == 400
    assert len(activity_rows(site)) == 1


def test_a_standalone_call_is_recorded_as_the_api_tokens_activity(site: Site) -> None:
    app = create_app(configure_logging=False)
    app.test_client().post(API, json={"dry_run": True},
                           headers={"Authorization": f"Bearer {site.token}"},
                           environ_base={"REMOTE_ADDR": "127.0.0.1"})
    [row] = activity_rows(site)
    assert (row["user_id"], row["ip_address"]) == (None, "127.0.0.1")
    assert json.loads(row["details"])["user"] == "api-token"


def test_a_broken_server_configuration_is_a_500_naming_the_problems(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.config.write_text('root = "/"\n')
    app = create_app(configure_logging=False)
    r = app.test_client().post(API, json={}, headers={"Authorization": f"Bearer {site.token}"})
    assert r.status_code == 500
    assert r.get_json()["errors"][0].startswith("root: '/': refusing to clean a system")


def test_the_token_comes_from_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token-0123456789\n")
    assert read_token({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "s3cret-token-0123456789"
    with pytest.raises(ApiSetupError, match=r"CREDENTIALS_DIRECTORY is not set"):
        read_token({})
    with pytest.raises(ApiSetupError, match=r"cannot read .*/missing/token"):
        read_token({"CREDENTIALS_DIRECTORY": str(tmp_path / "missing")})


@pytest.mark.parametrize("token", ["", "short", "sixteen chars ok", "x" * 15])
def test_the_factory_refuses_an_empty_short_or_spaced_token(token: str) -> None:
    with pytest.raises(ApiSetupError, match="at least 16 characters without spaces"):
        create_app(token=token, configure_logging=False)


def test_bearer_matches_only_the_exact_token() -> None:
    tok = b"0123456789abcdef0123"
    assert bearer_matches("Bearer 0123456789abcdef0123", tok)
    assert bearer_matches("bearer 0123456789abcdef0123 ", tok)
    for header in (None, "", "Bearer", "Bearer 0123456789abcdef012", "Basic 0123456789abcdef0123",
                   "Bearer 0123456789abcdef01234", "Bearer ünïcödé"):
        assert not bearer_matches(header, tok)


def test_the_stop_switch_is_off_until_gunicorn_points_it_at_its_worker() -> None:
    # (the wiring to gunicorn's worker is tested under gunicorn: test_api_gunicorn.py)
    assert StopSwitch()() is False


def test_the_core_package_works_without_flask_or_gunicorn(tmp_path: Path) -> None:
    """architect-cleanup must not depend on python3-flask or gunicorn (the -api package does):
    every module but the API's imports, and the CLI runs, with both made unimportable."""
    code = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flask", "werkzeug", "gunicorn"):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
import architect_cleanup
api_only = {"architect_cleanup.api", "architect_cleanup.gunicorn_conf",
            "architect_cleanup.__main__"}  # (__main__ would run the CLI)
for mod in pkgutil.walk_packages(architect_cleanup.__path__, "architect_cleanup."):
    # the panel ships with the API package too (packaging/debian/rules)
    if mod.name not in api_only and not mod.name.startswith("architect_cleanup.panel"):
        importlib.import_module(mod.name)
from architect_cleanup import cli
sys.exit(cli.main(["run", "--json"]))
"""
    (tmp_path / "srv").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'root = "{tmp_path / "srv"}"\n[logs]\ntmp_dir = ""\n')
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path), "RUNTIME_DIRECTORY": str(tmp_path),
           "ARCHITECT_CLEANUP_CONFIG": str(config)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dry_run"] is True
