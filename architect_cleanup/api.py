"""The REST API (SPEC section 6): a Flask blueprint, and a standalone app for gunicorn.

``POST /api/system/cleanup`` runs :class:`~architect_cleanup.worker.CleanupWorker` (source
``api``) under the same lock as the timer and the CLI and answers with the same object as
``architect-cleanup run --json``; ``GET /api/system/cleanup/status`` answers with the same
object as ``architect-cleanup status --json``; the standalone app's ``GET /metrics`` answers
with the Prometheus metrics of the run history (:mod:`metrics`, the same as the node_exporter
textfile). The body's schema is in :mod:`api_schema`.

Status codes: 200 a run finished (``success`` says whether every target did its work) or the
status; 400 the body breaks the schema (every offending key named); 401 no valid bearer token
(standalone); 409 another run holds the lock; 413 a body over 64 KiB; 415 a POST that is not
``application/json`` (so a cross-site form can never start a run); 500 the server's own
configuration is invalid.

Mounted in the dashboard, behind its own login check::

    from architect_cleanup.api import cleanup_blueprint
    bp = cleanup_blueprint(actor=lambda: {"user_id": current_user.id,
                                          "user": current_user.username,
                                          "ip_address": request.remote_addr})
    bp.before_request(require_login)   # the dashboard's check
    app.register_blueprint(bp)

Standalone, ``architect-cleanup-api.service`` runs gunicorn with
:mod:`architect_cleanup.gunicorn_conf`, which calls :func:`create_app`: it reads the bearer
token from ``$CREDENTIALS_DIRECTORY/token`` (systemd's ``LoadCredential=``) and refuses to
start without one.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, NoReturn

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, UnsupportedMediaType

from architect_cleanup import history, metrics
from architect_cleanup.api_schema import MAX_BODY, RequestInvalid, brief, parse_body, validate
from architect_cleanup.config import ConfigError, Problem, load_config
from architect_cleanup.fs import display
from architect_cleanup.journal import fields, setup_logging
from architect_cleanup.lock import LockHeld, LockUnusable
from architect_cleanup.notify import Notifier
from architect_cleanup.panel import PANEL_PATH, install_standalone, panel_blueprint
from architect_cleanup.panel import TOKEN_USER as PANEL_USER
from architect_cleanup.state import state_dir
from architect_cleanup.status import status_doc
from architect_cleanup.targets import Actor, ordered
from architect_cleanup.worker import CleanupWorker

log = logging.getLogger(__name__)

API_PATH = "/api/system/cleanup"
STATUS_PATH = API_PATH + "/status"
#: the Prometheus exposition (standalone app; bearer token like every other call)
METRICS_PATH = "/metrics"
#: The actor's ``user`` for a caller that presented the standalone bearer token.
TOKEN_USER = "api-token"  # noqa: S105 (a user name, not the token)
#: The credential's name in ``LoadCredential=token:/etc/architect-cleanup/api-token``.
CREDENTIAL = "token"
MIN_TOKEN_LENGTH = 16
#: How much of a too-large body is read (and dropped) so the 413 reaches the client.
DRAIN_LIMIT = 4 * 1024 * 1024
EXTENSION = "architect_cleanup"
_G_CALL = "architect_cleanup_call"

#: config.with_overrides' keys -> the body's keys, to name the key a ConfigError is about.
_OVERRIDE_KEYS = {"backups.retention": "backup_retention", "logs.max_age": "log_age_days",
                  "tasks.max_age": "task_age_days", "errors.max_age": "error_age_days",
                  "prompts.max_age": "prompt_age_days"}


class ApiSetupError(RuntimeError):
    """The standalone app cannot start (no usable token). gunicorn prints it and exits."""


class StopSwitch:
    """``should_stop`` for runs started in this process.

    Never true on its own; :mod:`gunicorn_conf` points it at the gunicorn worker's ``alive``
    flag, so ``systemctl stop`` ends a running cleanup cleanly between two items."""

    def __init__(self) -> None:
        self.check: Callable[[], bool] = lambda: False

    def __call__(self) -> bool:
        return self.check()


# --- responses and the journal ---------------------------------------------------------------


def _json(doc: Mapping[str, Any], status: int = 200,
          headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response independent of the host app's JSON settings (keys in our order)."""
    return Response(json.dumps(doc) + "\n", status=status, mimetype="application/json",
                    headers=dict(headers or {}))


def _call() -> dict[str, Any]:
    """What this request's journal entry will say (actor, parameters, outcome)."""
    call: dict[str, Any] | None = g.get(_G_CALL)
    if call is None:
        call = {}
        setattr(g, _G_CALL, call)
    return call


def _refuse(status: int, message: str, **extra: Any) -> Response:
    _call()["outcome"] = message
    return _json({"success": False, "message": message, **extra}, status)


def http_error(exc: HTTPException) -> Response:
    """Every HTTP error as JSON (404, 405, 413, 500, ...), never an HTML page."""
    code = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        message = f"request body larger than {MAX_BODY // 1024} KiB"
    else:
        message = exc.description or exc.name
    return _refuse(code, message, error=exc.name)


def log_call(response: Response) -> Response:
    """One journal entry per API call: who, what, with which parameters, and the answer."""
    call = _call()
    actor: Mapping[str, Any] = call.get("actor") or {"ip_address": request.remote_addr}
    user = actor.get("user") or (f"user {actor['user_id']}" if actor.get("user_id") else
                                 "unauthenticated")
    user = display(str(user))
    who = display(f"{user}@{actor.get('ip_address') or '?'}")
    params = call.get("params")
    params_text = "-" if params is None else json.dumps(brief(params), sort_keys=True)[:2000]
    outcome = call.get("outcome") or _phrase(response.status_code)
    level = logging.INFO if response.status_code < 400 else logging.WARNING
    # Escaped here as well as by our log handlers: mounted in a dashboard, the record goes
    # through the host's handlers, and the path and the outcome are the client's text.
    path, method, outcome = display(request.path), display(request.method), display(outcome)
    values = {"cleanup_api_method": method, "cleanup_api_path": path,
              "cleanup_api_status": response.status_code, "cleanup_api_user": user,
              "cleanup_api_user_id": actor.get("user_id"),
              "cleanup_api_ip": actor.get("ip_address"), "cleanup_api_params": params_text,
              "cleanup_source": "api", "cleanup_dry_run": call.get("dry_run")}
    log.log(level, "API %s %s by %s: %d %s; parameters %s", method, path, who,
            response.status_code, outcome, params_text,
            extra=fields("api_call", **{k: v for k, v in values.items() if v is not None}))
    return response


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "unknown status"


# --- the endpoints ---------------------------------------------------------------------------


def _peer_actor() -> Actor:
    return Actor(user_id=None, ip_address=request.remote_addr)


def _read_body() -> bytes:
    """At most MAX_BODY bytes of the body, or 413 — also for chunked bodies, which carry no
    Content-Length (werkzeug 2.2 applies MAX_CONTENT_LENGTH to form parsing only)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        _too_large()
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        _too_large()
    return raw


def _too_large() -> NoReturn:
    """413, after reading and dropping up to DRAIN_LIMIT bytes of the body: gunicorn has no
    lingering close, so closing on a client still sending would reset the connection and the
    client would see a broken pipe instead of the 413."""
    stream, left = request.stream, DRAIN_LIMIT
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        left -= len(chunk)
    raise RequestEntityTooLarge()


def _config_problem_key(problem: Problem) -> str:
    for prefix, key in _OVERRIDE_KEYS.items():
        if problem.key.startswith(prefix):
            return key
    return problem.key


def run_request(actor: Actor, config_path: str | None,
                should_stop: Callable[[], bool] | None) -> Response:
    """``POST /api/system/cleanup``: validate, run under the lock, answer with the stats."""
    call = _call()
    call["actor"] = actor
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the body as Content-Type: application/json")
    raw = _read_body()
    try:
        doc = parse_body(raw)
    except RequestInvalid as exc:
        return _refuse(400, str(exc), errors=exc.problems, invalid_keys=exc.keys)
    call["params"] = doc
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        log.error(*exc.log_args(), extra=fields("config_error"))
        return _refuse(500, "the server's architect-cleanup configuration is invalid",
                       errors=exc.problems)
    try:
        req = validate(doc, environments=cfg.environments, targets=ordered())
    except RequestInvalid as exc:
        return _refuse(400, str(exc), errors=exc.problems, invalid_keys=exc.keys)
    call["dry_run"] = req.dry_run
    try:
        # No sd_notify: the run is in a gunicorn worker (or the dashboard's process), not the
        # main process of a service of ours; its progress is in the journal.
        worker = CleanupWorker(**req.worker_args(), config=cfg, source="api", actor=actor,
                               should_stop=should_stop, notifier=Notifier(environ={}))
    except ConfigError as exc:
        keys = list(dict.fromkeys(_config_problem_key(p) for p in exc.found))
        return _refuse(400, str(exc), errors=exc.problems, invalid_keys=keys)
    try:
        stats = worker.run_cleanup()
    except LockHeld as exc:
        return _refuse(409, str(exc), dry_run=req.dry_run, locked_by=exc.pid)
    except LockUnusable as exc:
        return _refuse(500, str(exc), dry_run=req.dry_run)
    call["outcome"] = stats.summary_line()
    return _json(stats.to_dict())


def metrics_response() -> Response:
    """``GET /metrics``: the Prometheus exposition of the history (the same as the
    node_exporter textfile the runs write); 501 without python3-prometheus-client."""
    directory = state_dir()
    try:
        conn = history.open_reader(directory)
        try:
            snap = (metrics.snapshot(conn, now=datetime.now(UTC)) if conn is not None
                    else metrics.Snapshot())
        finally:
            if conn is not None:
                conn.close()
    except sqlite3.Error as exc:
        log.error("cannot read the history database in %s: %s", directory, exc)
        return _refuse(500, f"cannot read the history database: {exc}")
    data = metrics.exposition(snap)
    if data is None:
        return _refuse(501, "python3-prometheus-client is not installed")
    from prometheus_client import CONTENT_TYPE_LATEST  # noqa: PLC0415 (a Recommends:)
    _call()["outcome"] = "metrics"
    return Response(data, status=200, content_type=CONTENT_TYPE_LATEST)


def cleanup_blueprint(*, actor: Callable[[], Actor] | None = None,
                      config_path: str | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      name: str = "architect_cleanup",
                      metrics_path: str | None = None) -> Blueprint:
    """The two endpoints, with JSON errors and a journal entry per call.

    *actor* says who is calling (the dashboard passes its logged-in user; the default is the
    peer address only); it reaches the activity log through the run context. *config_path*
    defaults to ``$ARCHITECT_CLEANUP_CONFIG`` or /etc/architect-cleanup/config.toml, read for
    every run so an edited configuration applies at once. The blueprint checks no login
    itself: add the host's check with ``bp.before_request``. With *metrics_path* (the
    standalone app: ``/metrics``) it also serves :func:`metrics_response` there."""
    bp = Blueprint(name, __name__)
    get_actor = actor or _peer_actor

    @bp.post(API_PATH)
    def run_cleanup() -> Response:
        return run_request(get_actor(), config_path, should_stop)

    @bp.get(STATUS_PATH)
    def cleanup_status() -> Response:
        _call()["actor"] = get_actor()
        return _json(status_doc())

    if metrics_path is not None:
        @bp.get(metrics_path)
        def cleanup_metrics() -> Response:
            _call()["actor"] = get_actor()
            return metrics_response()

    bp.register_error_handler(HTTPException, http_error)
    bp.after_request(log_call)
    return bp


# --- standalone ------------------------------------------------------------------------------


def read_token(environ: Mapping[str, str] | None = None) -> str:
    """The bearer token from ``$CREDENTIALS_DIRECTORY/token``; ApiSetupError without one."""
    environ = os.environ if environ is None else environ
    creds = environ.get("CREDENTIALS_DIRECTORY", "")
    if not creds:
        raise ApiSetupError(
            "no API token: $CREDENTIALS_DIRECTORY is not set. Run the API as "
            "architect-cleanup-api.service (LoadCredential=token:/etc/architect-cleanup/"
            "api-token) or pass token= to create_app()")
    path = os.path.join(creds, CREDENTIAL)
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiSetupError(f"no API token: cannot read {path}: {exc}") from None
    return token


def check_token(token: str) -> bytes:
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ApiSetupError(
            f"the API token must be at least {MIN_TOKEN_LENGTH} characters without spaces "
            "(the package writes a random one to /etc/architect-cleanup/api-token)")
    return token.encode("utf-8")


#: What may surround the header's parts: ASCII space and tab only (RFC 9110's OWS). str.strip()
#: would also drop Unicode whitespace (NEL \x85, NBSP \xa0...), so a token with those added
#: would match.
_OWS = " \t"


def bearer_matches(header: str | None, token: bytes) -> bool:
    """``Authorization: Bearer <token>``, the exact bytes compared in constant time."""
    scheme, _, given = (header or "").strip(_OWS).partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip(_OWS).encode("utf-8", "replace"), token)


def _token_check(secret: bytes) -> Callable[[], Response | None]:
    """The standalone app's ``before_request``: every call but the panel's (which has its
    own login, a session from the token) carries ``Authorization: Bearer <token>``."""

    def require_token() -> Response | None:
        if request.path == PANEL_PATH or request.path.startswith(PANEL_PATH + "/"):
            return None  # the panel's own login (a session from the token), not a header
        if not bearer_matches(request.headers.get("Authorization"), secret):
            _call().update(actor=_peer_actor(), outcome="missing or invalid bearer token")
            error = ', error="invalid_token"' if request.headers.get("Authorization") else ""
            return _json({"success": False, "message": "missing or invalid bearer token"},
                         401, {"WWW-Authenticate": f'Bearer realm="architect-cleanup"{error}'})
        g.architect_cleanup_actor = Actor(user_id=None, user=TOKEN_USER,
                                          ip_address=request.remote_addr)
        # for the journal entry of a call the blueprint does not route (404, 405)
        _call()["actor"] = g.architect_cleanup_actor
        return None

    return require_token


def create_app(*, token: str | None = None, config_path: str | None = None,
               environ: Mapping[str, str] | None = None,
               configure_logging: bool = True) -> Flask:
    """The standalone API: the blueprint behind an ``Authorization: Bearer`` check.

    *token* defaults to the systemd credential (:func:`read_token`). With
    *configure_logging* the package logs to the journal (or stderr, INFO and up)."""
    secret = check_token(read_token(environ) if token is None else token)
    if configure_logging:
        setup_logging(logging.INFO, stderr_level=logging.INFO)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    stop = StopSwitch()
    app.extensions[EXTENSION] = stop
    bp = cleanup_blueprint(actor=lambda: g.get("architect_cleanup_actor") or _peer_actor(),
                           config_path=config_path, should_stop=stop,
                           metrics_path=METRICS_PATH)

    panel = panel_blueprint(
        actor=lambda: Actor(user_id=None, user=PANEL_USER, ip_address=request.remote_addr),
        config_path=config_path, should_stop=stop)

    app.before_request(_token_check(secret))

    @app.after_request
    def log_other_calls(response: Response) -> Response:
        # The blueprint logs its own routes; this covers 404/405 and the like.
        return response if request.blueprint in (bp.name, panel.name) else log_call(response)

    app.register_error_handler(HTTPException, http_error)
    app.register_blueprint(bp)
    install_standalone(app, panel, secret)
    log.info("architect-cleanup API ready: POST %s, GET %s, GET %s, the panel at %s/",
             API_PATH, STATUS_PATH, METRICS_PATH, PANEL_PATH)
    return app
