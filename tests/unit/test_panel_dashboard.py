"""The panel mounted in a dashboard app, behind the dashboard's own login (the README's
snippet), served on 127.0.0.1: the dashboard's user reaches the journal and activity_log."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, jsonify, request, session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panel_kit import PANEL, Client, Served, Site, served

from architect_cleanup.panel import panel_blueprint
from architect_cleanup.targets import Actor


def dashboard(config: Path) -> Flask:
    """A dashboard with a session login, mounting the panel as the README shows."""
    app = Flask("dashboard")
    app.secret_key = "dashboard-test-secret"

    @app.post("/login")
    def login() -> object:
        session["user_id"], session["user"] = 7, request.form["username"]
        return jsonify({"success": True})

    def require_login() -> object:
        if not session.get("user"):
            return jsonify({"success": False, "error": "Authentication required"}), 401
        return None

    panel = panel_blueprint(actor=lambda: Actor(user_id=session.get("user_id"),
                                                user=session.get("user", "?"),
                                                ip_address=request.remote_addr),
                            config_path=str(config))
    panel.before_request(require_login)
    app.register_blueprint(panel)
    return app


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    for k, v in s.environ().items():
        monkeypatch.setenv(k, v)
    return s


@pytest.fixture
def server(site: Site) -> Iterator[Served]:
    with served(dashboard(site.config)) as s:
        yield s


def test_the_dashboard_s_login_guards_every_page_and_endpoint(server: Served) -> None:
    c = Client(server.port)
    for path in ("/", "/charts", "/config", "/api/status", "/api/config"):
        assert c.get(PANEL + path).status == 401
    assert c.post_json(PANEL + "/api/run", {"dry_run": True}).status in (401, 403)


def test_a_dashboard_user_saves_settings_in_their_own_name(
        site: Site, server: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="architect_cleanup")
    c = Client(server.port)
    c.post_form("/login", {"username": "alice"})
    csrf = c.csrf()
    assert c.post_json(PANEL + "/api/save", {"settings": {"logs.max_age": "20d"}}).status == 403
    r = c.post_json(PANEL + "/api/save", {"settings": {"logs.max_age": "20d"}}, csrf=csrf)
    assert r.status == 200, r.body
    assert 'max_age = "20d"' in site.dropin.read_text()
    (row,) = site.activity()
    assert row[0] == 7
    assert row[1] == "system_cleanup_config"
    assert '"user": "alice"' in row[2]
    assert any("panel: alice saved" in rec.getMessage() for rec in caplog.records)
    page = c.get(PANEL + "/").body
    assert "Log out" not in page  # the dashboard owns the session, not the panel
