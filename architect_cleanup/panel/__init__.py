"""The cleanup panel: status, charts, the last run's items, the configuration with a preview.

A Flask blueprint of server-rendered pages (``templates/``) whose script (``static/panel.js``,
no inline script anywhere) reads and changes everything through the JSON endpoints below
:data:`PANEL_PATH`. The charts use Chart.js from Debian's ``libjs-chart.js``
(:data:`CHART_JS`), served by the panel itself: no CDN, the page works offline.

Mounted in the dashboard, behind its own login (the dashboard's session carries the panel's
CSRF token, so the app needs its ``secret_key``)::

    from architect_cleanup.panel import panel_blueprint
    panel = panel_blueprint(actor=lambda: {"user_id": current_user.id,
                                           "user": current_user.username,
                                           "ip_address": request.remote_addr})
    panel.before_request(require_login)   # the dashboard's check
    app.register_blueprint(panel)         # pages at /system/cleanup/

Standalone (``architect-cleanup-api.service``), :func:`architect_cleanup.api.create_app`
mounts it with a login form that takes the API token (:func:`install_standalone`): the token
is posted once, compared in constant time, and exchanged for a session cookie (HttpOnly,
SameSite=Strict, Secure when the request came over HTTPS: see :class:`_SessionInterface`);
it never appears in a page or a URL.

Security: every POST carries the session's CSRF token in ``X-CSRF-Token`` (the login form in
a hidden field) and, when the browser sends one, an ``Origin`` of this host; every response
has a Content-Security-Policy that allows scripts, styles and connections from this origin
only; only the settings of :func:`settings.allowed_fields` can be changed; values of keys
that name secrets are never sent (:data:`data.SECRET_KEY_RX`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from architect_cleanup import activity
from architect_cleanup.config import Config, ConfigError, load_config
from architect_cleanup.journal import fields
from architect_cleanup.lock import LockHeld
from architect_cleanup.status import status_doc
from architect_cleanup.targets import Actor, ordered

from . import data, settings
from .runs import Runs, sentence

log = logging.getLogger(__name__)

PANEL_PATH = "/system/cleanup"
#: Chart.js 3 as Debian's libjs-chart.js installs it (a Depends: of architect-cleanup-api).
CHART_JS = "/usr/share/javascript/chart.js/chart.min.js"
CSRF_SESSION_KEY = "architect_cleanup_csrf"
USER_SESSION_KEY = "architect_cleanup_user"
CSRF_HEADER = "X-CSRF-Token"
#: The panel user's name when logged in with the API token (standalone).
TOKEN_USER = "panel (api token)"  # noqa: S105 (a user name, not the token)
SESSION_LIFETIME = timedelta(hours=8)
MAX_BODY = 64 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HERE = Path(__file__).resolve().parent


def _json(doc: Mapping[str, Any] | list[Any], status: int = 200) -> Response:
    return Response(json.dumps(doc) + "\n", status=status, mimetype="application/json")


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def _csrf_ok() -> bool:
    expected = session.get(CSRF_SESSION_KEY)
    given = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token") or ""
    if not isinstance(expected, str) or not expected:
        return False
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _load(config_path: str | None) -> tuple[Config | None, list[str]]:
    try:
        return load_config(config_path), []
    except ConfigError as exc:
        return None, exc.problems


def panel_blueprint(*, actor: Callable[[], Actor] | None = None,
                    config_path: str | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    name: str = "architect_cleanup_panel") -> Blueprint:
    """The panel's pages and JSON endpoints under :data:`PANEL_PATH`.

    *actor* says who is using it (the dashboard passes its logged-in user); it names the
    user in the journal and the activity log. The blueprint checks no login itself: add the
    host's check with ``bp.before_request`` (standalone: :func:`install_standalone`)."""
    bp = Blueprint(name, __name__, url_prefix=PANEL_PATH, template_folder="templates",
                   static_folder="static", static_url_path="/static")
    _Panel(bp, actor=actor, config_path=config_path, should_stop=should_stop).register()
    return bp


def _check_csrf() -> Response | None:
    """Refuse a changing request that is too large or lacks this session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _json({"ok": False, "message": "request body too large"}, 413)
    if not _csrf_ok():
        log.warning("panel: %s %s refused: missing or wrong CSRF token (from %s)",
                    request.method, request.path, request.remote_addr)
        return _json({"ok": False, "message": "missing or wrong CSRF token: reload the "
                      "page"}, 403)
    return None


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _http_error(exc: HTTPException) -> Response:
    return _json({"ok": False, "message": exc.description or exc.name}, exc.code or 500)


def _page_window() -> tuple[int, int]:
    """The items page's ``offset`` and ``limit`` query arguments, bounded."""
    try:
        offset = max(0, int(request.args.get("offset", "0")))
        limit = min(200, max(1, int(request.args.get("limit", "25"))))
    except ValueError:
        abort(400, "offset and limit are whole numbers")
    return offset, limit


def chart_js() -> Response:
    """Debian's Chart.js, served by the panel itself (no CDN)."""
    path = os.environ.get("ARCHITECT_CLEANUP_CHART_JS", CHART_JS)
    if not os.path.isfile(path):
        abort(404, f"{path} is missing: install libjs-chart.js")
    return send_file(path, mimetype="text/javascript", max_age=86400)


class _Panel:
    """The views of one panel blueprint: who uses it, which config it reads, its runs.

    Each public method below is one endpoint, registered by :meth:`register` under the
    method's name (the templates' ``url_for`` names)."""

    def __init__(self, bp: Blueprint, *, actor: Callable[[], Actor] | None,
                 config_path: str | None, should_stop: Callable[[], bool] | None) -> None:
        self.bp = bp
        self.config_path = config_path
        self.runs = Runs(should_stop=should_stop)
        self.get_actor = actor or (lambda: Actor(user_id=None, ip_address=request.remote_addr))

    def register(self) -> None:
        """Hook the checks and every page and endpoint onto the blueprint."""
        bp = self.bp
        bp.before_request(_check_csrf)
        bp.after_request(_security_headers)
        bp.register_error_handler(HTTPException, _http_error)
        routes: list[tuple[str, str, Callable[[], Any]]] = [
            ("GET", "/", self.page_status), ("GET", "/charts", self.page_charts),
            ("GET", "/items", self.page_items), ("GET", "/config", self.page_config),
            ("GET", "/vendor/chart.js", chart_js),
            ("GET", "/api/status", self.api_status), ("GET", "/api/charts", self.api_charts),
            ("GET", "/api/items", self.api_items), ("GET", "/api/backups", self.api_backups),
            ("GET", "/api/config", self.api_config),
            ("POST", "/api/validate", self.api_validate),
            ("POST", "/api/preview", self.api_preview), ("POST", "/api/save", self.api_save),
            ("POST", "/api/plan", self.api_plan), ("POST", "/api/run", self.api_run),
            ("GET", "/api/run", self.api_run_state),
        ]
        for method, rule, view in routes:
            bp.add_url_rule(rule, view_func=view, methods=[method])

    def who(self) -> str:
        a = self.get_actor()
        return str(a.get("user") or (f"user {a['user_id']}" if a.get("user_id") else "?"))

    def load(self) -> tuple[Config | None, list[str]]:
        return _load(self.config_path)

    def render(self, template: str, page: str) -> str:
        return render_template(template, page=page, csrf=csrf_token(), bp=self.bp.name,
                               user=self.who(), logout=USER_SESSION_KEY in session)

    # -- pages --------------------------------------------------------------------------------

    def page_status(self) -> str:
        return self.render("status.html", "status")

    def page_charts(self) -> str:
        return self.render("charts.html", "charts")

    def page_items(self) -> str:
        return self.render("items.html", "items")

    def page_config(self) -> str:
        return self.render("config.html", "config")

    # -- reading ------------------------------------------------------------------------------

    def api_status(self) -> Response:
        cfg, problems = self.load()
        doc = data.status(status_doc(), cfg, problems)
        doc["panel_run"] = self.runs.current.to_dict() if self.runs.current is not None else None
        return _json(doc)

    def api_charts(self) -> Response:
        cfg, _ = self.load()
        return _json(data.charts(cfg))

    def api_items(self) -> Response:
        run = self.runs.current
        panel_run = run.to_dict() if run is not None and run.finished is not None else None
        about, items = data.last_items(run.items if run is not None else None, panel_run)
        offset, limit = _page_window()
        doc = data.page(items, query=request.args.get("q", "")[:200],
                        target=request.args.get("target", "")[:40], offset=offset,
                        limit=limit)
        return _json({"run": about, "targets": list(ordered()), **doc})

    def api_backups(self) -> Response:
        cfg, problems = self.load()
        if cfg is None:
            return _json({"ok": False, "message": "; ".join(problems)}, 500)
        try:
            _, _, decisions = self.runs.dry_run(cfg, limit=0, only=["backups"])
        except LockHeld as exc:
            return _json({"ok": False, "message": str(exc)}, 409)
        return _json({"ok": True, "environments": data.backups_by_env(cfg, decisions)})

    def api_config(self) -> Response:
        try:
            layers = settings.Layers.read(self.config_path)
        except ConfigError as exc:
            return _json({"ok": False, "message": str(exc)}, 500)
        cfg, problems = self.load()
        envs = settings.environments(layers)
        return _json({
            "ok": cfg is not None, "problems": problems,
            "files": [s for s, _ in layers.all], "dropin": layers.dropin,
            "effective": data.config_view(cfg, layers.all) if cfg is not None else [],
            "environments": list(envs), "form": settings.form_values(layers),
            "fields": settings.allowed_fields(envs), "labels": settings.LABELS,
            "policy_fields": list(settings.POLICY_FIELDS),
            "age_fields": list(settings.AGE_FIELDS)})

    # -- the form -----------------------------------------------------------------------------

    def proposed(self) -> tuple[settings.Layers, settings.Outcome]:
        """The posted settings, checked against the configuration files they would join."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("settings"), dict):
            abort(400, 'send {"settings": {...}} as application/json')
        layers = settings.Layers.read(self.config_path)
        return layers, settings.propose(layers, body["settings"])

    @staticmethod
    def outcome_doc(layers: settings.Layers, outcome: settings.Outcome) -> dict[str, Any]:
        envs = settings.environments(layers)
        return outcome.to_dict(settings.allowed_fields(envs))

    def api_validate(self) -> Response:
        layers, outcome = self.proposed()
        return _json(self.outcome_doc(layers, outcome))

    def api_preview(self) -> Response:
        layers, outcome = self.proposed()
        doc = self.outcome_doc(layers, outcome)
        if not outcome.ok or outcome.config is None:
            return _json(doc, 400)
        try:
            stats, items, _ = self.runs.dry_run(outcome.config, limit=20)
        except LockHeld as exc:
            return _json(doc | {"ok": False, "message": f"{exc}; preview again after it"}, 409)
        doc["preview"] = {"sentence": "With these settings the next run "
                                      + sentence(stats, dry_run=True),
                          "counts": stats.counts(), "failed": stats.failed_targets,
                          "items": [i.to_dict() for i in items]}
        return _json(doc)

    def api_save(self) -> Response:
        layers, outcome = self.proposed()
        doc = self.outcome_doc(layers, outcome)
        if not outcome.ok or outcome.config is None:
            return _json(doc, 400)
        header = (f"# Written by the architect-cleanup panel ({self.who()}). Changes here are "
                  "shown in the panel;\n# a drop-in named after this one wins over it.\n")
        try:
            previous = settings.write_dropin(layers, outcome, header)
        except OSError as exc:
            return _json(doc | {"ok": False, "message": f"cannot write {layers.dropin}: "
                                f"{exc.strerror or exc}"}, 500)
        try:
            cfg = load_config(self.config_path)  # what every run will read: must accept it
        except ConfigError as exc:
            settings.restore(layers, previous)
            return _json(doc | {"ok": False, "general": exc.problems,
                                "message": "the saved configuration was refused; the "
                                           "previous drop-in is back"}, 400)
        changed = self.record_save(cfg, layers, outcome, previous)
        return _json(doc | {"ok": True, "saved": layers.dropin, "changes": changed})

    def record_save(self, cfg: Config, layers: settings.Layers, outcome: settings.Outcome,
                    previous: str | None) -> dict[str, Any]:
        """Journal and log in the activity table what a save changed; return the changes."""
        user, a = self.who(), self.get_actor()
        changed = settings.changes(settings_doc(previous) if previous else None,
                                   outcome.dropin)
        text = json.dumps(changed, sort_keys=True)
        log.info("panel: %s saved %s: %s", user, layers.dropin, text,
                 extra=fields("config_changed", cleanup_user=user,
                              cleanup_ip=a.get("ip_address"), cleanup_path=layers.dropin,
                              cleanup_changes=text[:2000]))
        activity.record_change(cfg, {"dropin": layers.dropin, "changes": changed},
                               actor=a)
        return changed

    # -- running ------------------------------------------------------------------------------

    def api_plan(self) -> Response:
        cfg, problems = self.load()
        if cfg is None:
            return _json({"ok": False, "message": "; ".join(problems)}, 500)
        try:
            plan = self.runs.plan(cfg)
        except LockHeld as exc:
            return _json({"ok": False, "message": str(exc)}, 409)
        return _json({"ok": True, "plan": plan.id, "sentence": plan.sentence.replace(
            "would remove", "This real run will remove", 1), "counts": plan.counts})

    def api_run(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("dry_run", True), bool):
            abort(400, 'send {"dry_run": true} or {"dry_run": false, "plan": "<id>"}')
        dry_run = body.get("dry_run", True)
        cfg, problems = self.load()
        if cfg is None:
            return _json({"ok": False, "message": "; ".join(problems)}, 500)
        if not dry_run:
            plan = self.runs.take_plan(str(body.get("plan", "")))
            if plan is None:
                return _json({"ok": False, "message": "a real run needs a confirmed plan: "
                              "ask for one and confirm what it names"}, 400)
            log.info("panel: %s confirmed a real run: %s", self.who(), plan.sentence)
        state = self.runs.start(cfg, dry_run=dry_run, actor=self.get_actor())
        if state is None:
            return _json({"ok": False, "message": "a run started here is still going on"},
                         409)
        log.info("panel: %s started a %s", self.who(), "dry run" if dry_run else "real run")
        return _json({"ok": True, "run": state.to_dict()}, 202)

    def api_run_state(self) -> Response:
        return _json({"run": self.runs.current.to_dict() if self.runs.current is not None
                      else None})


def settings_doc(text: str) -> dict[str, Any]:
    """A drop-in's text as a document ({} when it is not TOML any more)."""
    import tomllib  # noqa: PLC0415

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


# --- standalone: a login form taking the API token ---------------------------------------------


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, HttpOnly and SameSite=Strict, with ``Secure`` when the
    request came over HTTPS.

    The standalone API listens on 127.0.0.1 over plain HTTP (reached on the machine, through
    an SSH tunnel, or through a reverse proxy): a ``Secure`` cookie would never be sent back
    there, so the flag follows the request's scheme. Behind a TLS proxy on the same machine
    that sets ``X-Forwarded-Proto: https`` (gunicorn trusts it from 127.0.0.1), the cookie is
    Secure."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def session_key(token: bytes) -> bytes:
    """The session-signing key, derived from the API token: a new token ends every session."""
    return hmac.new(token, b"architect-cleanup panel session v1", hashlib.sha256).digest()


def install_standalone(app: Flask, bp: Blueprint, token: bytes) -> None:
    """Mount *bp* in the standalone app behind a login form that takes the API token."""
    app.secret_key = session_key(token)
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME="architect_cleanup_session",
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_PATH=PANEL_PATH, PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)
    open_endpoints = {f"{bp.name}.login", f"{bp.name}.static"}

    def require_login() -> BaseResponse | None:
        if request.endpoint in open_endpoints or session.get(USER_SESSION_KEY):
            return None
        if request.path.startswith(PANEL_PATH + "/api/") or request.method != "GET":
            return _json({"ok": False, "message": "log in first"}, 401)
        return redirect(url_for(f"{bp.name}.login"))

    # before the CSRF check: a caller without a session is told to log in
    bp.before_request_funcs.setdefault(None, []).insert(0, require_login)

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | str:
        error = None
        if request.method == "POST":
            # ASCII blanks only (a pasted line's newline): str.strip() would also drop Unicode
            # spaces, and the token plus a no-break space must not match
            given = request.form.get("token", "").strip(" \t\r\n").encode("utf-8", "replace")
            if hmac.compare_digest(given, token):
                session.clear()  # a new session: nothing from before the login survives
                session.permanent = True
                session[USER_SESSION_KEY] = TOKEN_USER
                csrf_token()
                log.info("panel: login from %s", request.remote_addr)
                return redirect(url_for(f"{bp.name}.page_status"), 303)
            log.warning("panel: failed login from %s", request.remote_addr)
            error = "That is not the API token."
        return render_template("login.html", csrf=csrf_token(), error=error, bp=bp.name,
                               page="login", logout=False)

    @bp.post("/logout")
    def logout() -> BaseResponse:
        session.clear()
        return redirect(url_for(f"{bp.name}.login"), 303)

    app.register_blueprint(bp)


__all__ = ["CHART_JS", "PANEL_PATH", "install_standalone", "panel_blueprint"]
