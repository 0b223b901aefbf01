"""The real API under gunicorn on a loopback port, socket-activated the way systemd does it.

:class:`Site` is a demo dashboard tree (``demo.build_tree``) with its own configuration, state,
runtime and credentials directories. :class:`Server` binds a listening socket on 127.0.0.1 (port
0: the kernel picks a free one, no race), starts ``python -m gunicorn --config
python:architect_cleanup.gunicorn_conf`` through a tiny launcher that moves the socket to fd 3,
sets ``LISTEN_FDS=1`` and ``LISTEN_PID`` to its own PID and then execs gunicorn (keeping that
PID) — exactly what systemd does for ``architect-cleanup-api.socket`` — and stops it with
SIGTERM (SIGKILL to its process group only if it does not stop).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo import build_tree

API = "/api/system/cleanup"
STATUS = API + "/status"

# Runs in the child: socket -> fd 3, LISTEN_* for *this* PID, then exec (same PID).
_LAUNCHER = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""

_SYSTEMD_VARS = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID", "LISTEN_FDS", "LISTEN_PID",
                 "LISTEN_FDNAMES", "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY",
                 "STATE_DIRECTORY", "ARCHITECT_CLEANUP_CONFIG")


@dataclass
class Site:
    """A demo dashboard tree and everything a run needs, under *base*."""

    base: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))

    def __post_init__(self) -> None:
        self.root = self.base / "srv" / "architect"
        self.tmp = self.base / "tmp"
        self.config = self.base / "config.toml"
        self.state = self.base / "state"
        self.run = self.base / "run"
        self.creds = self.base / "creds"

    def build(self, now: float | None = None) -> Site:
        build_tree(self.root, self.tmp, now=now)
        self.config.write_text(f'root = "{self.root}"\n\n[logs]\ntmp_dir = "{self.tmp}"\n')
        self.creds.mkdir(mode=0o700)
        tok = self.creds / "token"
        tok.write_text(self.token + "\n")
        tok.chmod(0o600)
        return self

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        # the metrics textfile below base, never the host's node_exporter directory (a
        # module-scoped server starts before the per-test environment is set)
        env.update(ARCHITECT_CLEANUP_CONFIG=str(self.config), STATE_DIRECTORY=str(self.state),
                   RUNTIME_DIRECTORY=str(self.run), CREDENTIALS_DIRECTORY=str(self.creds),
                   ARCHITECT_CLEANUP_TEXTFILE_DIR=str(self.base / "textfile"))
        env.update(extra)
        return env

    def state_doc(self) -> dict[str, Any]:
        path = self.state / "state.json"
        if not path.exists():
            return {"last_run": None, "history": []}
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """gunicorn serving the API for *site*; use as a context manager."""

    def __init__(self, site: Site, *, config: str = "python:architect_cleanup.gunicorn_conf",
                 env: Mapping[str, str] | None = None) -> None:
        self.site = site
        self.config = config
        self.env = dict(env) if env is not None else site.env()
        self.log_path = site.base / "gunicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    # -- process ------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> Server:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        fd = listener.fileno()
        cmd = [sys.executable, "-c", _LAUNCHER, str(fd), sys.executable, "-m", "gunicorn",
               "--config", self.config]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, pass_fds=(fd,),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        listener.close()  # the child has its own copy, as with systemd
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get(STATUS, token=self.site.token).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gunicorn not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.proc = None
        return proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None, *,
                token: str | None = None, headers: Mapping[str, str] | None = None,
                chunked: bool = False, timeout: float = 60.0) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs.setdefault("Authorization", f"Bearer {token}")
            conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post_json(self, doc: Any, *, token: str | None = "", **kw: Any) -> Reply:
        """POST *doc* as JSON with the site's token (``token=None``: no Authorization)."""
        tok = self.site.token if token == "" else token
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", API, json.dumps(doc).encode(), token=tok, headers=headers,
                            **kw)
