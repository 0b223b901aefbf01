"""gunicorn settings for ``architect-cleanup-api.service``.

``gunicorn --config python:architect_cleanup.gunicorn_conf``. Under systemd the listening
socket comes from ``architect-cleanup-api.socket`` (127.0.0.1:8787): gunicorn uses the file
descriptors systemd passes (``LISTEN_FDS``/``LISTEN_PID``) and then ignores ``bind``, which
only applies when it is started by hand.

Why one ``gthread`` worker: a cleanup can run for minutes and the POST answers when it is done.
A sync worker blocked in such a request stops sending gunicorn's heartbeat, so ``timeout`` would
kill it mid-run (and timeout = 0 would never kill a really hung worker). A gthread worker keeps
beating from its main loop while a request thread runs the cleanup, so the timeout stays a
hang detector and never ends a working cleanup; the other threads keep answering
``GET .../status`` (``daemon_pid`` shows the run) and a second POST, which gets 409 from the
run lock at once. One process is enough: runs are serialised by the lock anyway.

``systemctl stop`` (SIGTERM) clears the worker's ``alive`` flag; the app's stop switch watches
it, so a running cleanup stops between two items, records its state and answers, well within
``graceful_timeout``.
"""

from __future__ import annotations

import os
from typing import Any

from architect_cleanup.api import EXTENSION

wsgi_app = "architect_cleanup.api:create_app()"
bind = ["127.0.0.1:8787"]
workers = 1
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 30
keepalive = 5
# Create the app in the arbiter: a missing token stops gunicorn at once with our message,
# before it tells systemd it is ready.
preload_app = True
# Our own journal entry per call (architect_cleanup.api.log_call) names the caller and the
# parameters; gunicorn's access log would only repeat it.
accesslog = None
errorlog = "-"
loglevel = "info"
proc_name = "architect-cleanup-api"
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
# The worker's heartbeat file: in our runtime directory (a tmpfs) under systemd rather than
# in the dashboard's /tmp, which this service may write only to clean it.
_runtime_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
worker_tmp_dir = _runtime_dir if _runtime_dir and os.path.isdir(_runtime_dir) else None


def post_worker_init(worker: Any) -> None:
    """Point the app's stop switch at this worker's ``alive`` flag (see the module doc)."""
    switch = getattr(worker.wsgi, "extensions", {}).get(EXTENSION)
    if switch is not None:
        switch.check = lambda: not worker.alive
