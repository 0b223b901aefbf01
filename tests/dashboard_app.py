"""A dashboard ``app.py`` written like the Architect Dashboard's two cleanup routes (seed section
"API Endpoints"), and the two ways to move it to architect-cleanup.

:data:`ORIGINAL` imports the original worker (``workers/cleanup_worker.py``), which this
repository does not have; :func:`with_compat` swaps that one import line for the
compatibility module, :func:`with_blueprint` replaces the two routes by our blueprint behind
the dashboard's own login. Both are plain source text, written to a file and imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ORIGINAL_IMPORT = ("from workers.cleanup_worker import CleanupWorker, DEFAULT_BACKUP_RETENTION, "
                   "PID_FILE, load_state")
COMPAT_IMPORT = ("from architect_cleanup.compat import CleanupWorker, DEFAULT_BACKUP_RETENTION, "
                 "PID_FILE, load_state")
USER, PASSWORD = "admin", "architect-test-password"

_HEAD = '''\
import os
from functools import wraps

from flask import Flask, jsonify, request, session

app = Flask(__name__)
app.secret_key = "dashboard-test-secret"
USERS = {"@USER@": "@PASSWORD@"}


def logged_in():
    return bool(session.get("user"))


def require_auth(view):
    @wraps(view)
    def inner(*args, **kwargs):
        if not logged_in():
            return jsonify({"success": False, "error": "Authentication required"}), 401
        return view(*args, **kwargs)
    return inner


@app.route("/login", methods=["POST"])
def login():
    form = request.get_json(silent=True) or request.form
    if USERS.get(form.get("username")) == form.get("password"):
        session["user"] = form["username"]
        return jsonify({"success": True})
    return jsonify({"success": False, "error": "Invalid credentials"}), 401
'''.replace("@USER@", USER).replace("@PASSWORD@", PASSWORD)

_ROUTES = '''

# --- storage cleanup (workers/cleanup_worker.py) ---
@IMPORT@


@app.route("/api/system/cleanup", methods=["POST"])
@require_auth
def api_system_cleanup():
    try:
        data = request.get_json() or {}
        dry_run = data.get("dry_run", True)
        backup_retention = data.get("backup_retention")
        if isinstance(backup_retention, int):
            backup_retention = {env: backup_retention for env in DEFAULT_BACKUP_RETENTION}
        worker = CleanupWorker(
            dry_run=dry_run,
            backup_retention=backup_retention,
            log_age_days=data.get("log_age_days", 30),
            task_age_days=data.get("task_age_days", 7),
            error_age_days=data.get("error_age_days", 30),
            prompt_age_days=data.get("prompt_age_days", 14),
        )
        stats = worker.run_cleanup()
        return jsonify({"success": True, "dry_run": dry_run, "stats": stats.to_dict(),
                        "message": "Cleanup completed"})
    except Exception as e:
        return jsonify({"success": False, "error": str(e)}), 500


@app.route("/api/system/cleanup/status", methods=["GET"])
@require_auth
def api_system_cleanup_status():
    try:
        daemon_running = False
        daemon_pid = None
        if PID_FILE.exists():
            daemon_pid = int(PID_FILE.read_text().strip())
            try:
                os.kill(daemon_pid, 0)
                daemon_running = True
            except ProcessLookupError:
                daemon_running = False
        state = load_state()
        return jsonify({
            "success": True,
            "daemon_running": daemon_running,
            "daemon_pid": daemon_pid,
            "last_run": state["last_run"] if state else None,
            "last_stats": state["stats"] if state else None,
        })
    except Exception as e:
        return jsonify({"success": False, "error": str(e)}), 500
'''

ORIGINAL = _HEAD + _ROUTES.replace("@IMPORT@", ORIGINAL_IMPORT)

BLUEPRINT = '''

# --- storage cleanup: architect-cleanup's blueprint behind the dashboard's login ---
from architect_cleanup.api import cleanup_blueprint

bp = cleanup_blueprint(actor=lambda: {"user_id": None, "user": session.get("user"),
                                      "ip_address": request.remote_addr})


@bp.before_request
def cleanup_requires_login():
    if not logged_in():
        return jsonify({"success": False, "error": "Authentication required"}), 401
    return None


app.register_blueprint(bp)
'''


def with_compat(source: str) -> str:
    """The dashboard with its import line switched to the compatibility module."""
    assert source.count(ORIGINAL_IMPORT) == 1
    return source.replace(ORIGINAL_IMPORT, COMPAT_IMPORT)


def with_blueprint(source: str) -> str:
    """The dashboard with its two cleanup routes replaced by the blueprint."""
    head, sep, _routes = source.partition("\n\n# --- storage cleanup")
    assert sep
    return head + BLUEPRINT


def load(source: str, directory: Path, name: str) -> ModuleType:
    """Import *source* as module *name* from *directory*/app.py."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "app.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
