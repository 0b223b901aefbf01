"""Notifications from the packaged units in a booted container: a run that fails reports
itself through the OnFailure= unit's delivery, and a run killed with ``systemctl kill -s
KILL`` is reported by ``architect-cleanup-failure@architect-cleanup.service`` with its last
journal lines. The receiver is a small HTTP server inside the container (it has only a
loopback) that keeps every request as it came; the test verifies each one on the host with
the independent ``standardwebhooks`` package and refuses duplicates of a webhook-id."""

from __future__ import annotations

import base64
import json
import shlex
import time
from typing import Any

from nspawn import Container
from standardwebhooks.webhooks import Webhook

SERVICE = "architect-cleanup.service"
FAILURE_UNIT = "architect-cleanup-failure@architect-cleanup.service.service"  # %n: the full name
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_FILE = "/etc/architect-cleanup/credentials/webhook.secret"
DROPIN = "/etc/architect-cleanup/config.d/notify.toml"
PORT = 8099
RECEIVED = "/root/received"
DB = "/srv/architect/data/prod/architect.db"

RECEIVER = """\
import base64, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        doc = {"headers": {k.lower(): v for k, v in self.headers.items()},
               "body": base64.b64encode(body).decode()}
        name = os.path.join(out, "%020d.json" % time.time_ns())
        with open(name + ".tmp", "w") as fh:
            json.dump(doc, fh)
        os.rename(name + ".tmp", name)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _setup(box: Container, extra: str = "") -> None:
    box.write_file(SECRET_FILE, SECRET + "\n", mode=0o600)
    box.write_file(DROPIN, f"{extra}[[notify.webhook]]\nurl = \"http://127.0.0.1:{PORT}/hook\"\n"
                           f"secret = \"{SECRET_FILE}\"\n")
    box.write_file("/root/receiver.py", RECEIVER)
    box.run(["systemd-run", "--unit=hook-receiver", "/usr/bin/python3", "/root/receiver.py",
             str(PORT), RECEIVED])
    _wait_for(lambda: box.run(f"python3 -c 'import socket; socket.create_connection("
                              f"(\"127.0.0.1\", {PORT}), 1)'", check=False).returncode == 0,
              30, "the receiver to listen")


def _received(box: Container) -> list[dict[str, Any]]:
    """Every delivery so far, each verified with standardwebhooks (signature, timestamp) and
    refused when its webhook-id was seen before."""
    names = box.sh(f"ls -1 {RECEIVED} 2>/dev/null | grep '.json$' || true").split()
    out, seen = [], set()
    for name in names:
        doc = json.loads(box.read_file(f"{RECEIVED}/{name}"))
        body = base64.b64decode(doc["body"])
        payload = Webhook(SECRET).verify(body, doc["headers"])
        assert doc["headers"]["webhook-id"] not in seen, "a replayed webhook-id"
        seen.add(doc["headers"]["webhook-id"])
        out.append(payload)
    return out


def _unit_done(box: Container, unit: str) -> bool:
    out = box.sh(shlex.join(["systemctl", "show", "-p", "ActiveState,Result", unit]))
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return props.get("ActiveState") in ("inactive", "failed") and bool(props.get("Result"))


def test_the_packaged_units_enable_only_the_timer(installed: Container) -> None:
    box = installed
    for unit in ("architect-cleanup-notify.service", "architect-cleanup-failure@.service"):
        state = box.run(["systemctl", "is-enabled", unit], check=False).stdout.strip()
        assert state == "static", (unit, state)
    props = box.sh(f"systemctl show -p OnFailure -p OnSuccess {SERVICE}").split()
    assert sorted(props) == [f"OnFailure={FAILURE_UNIT}",
                             "OnSuccess=architect-cleanup-notify.service"]


def test_a_run_that_fails_on_an_unreadable_database_sends_its_failure_message(
        installed: Container) -> None:
    box = installed
    _setup(box)
    box.write_file(DB, "this is not an SQLite database\n" * 100)
    assert box.run(["systemctl", "start", SERVICE], check=False).returncode != 0
    _wait_for(lambda: _received(box), 60, "the failure message")
    _wait_for(lambda: _unit_done(box, FAILURE_UNIT), 60, "the failure unit to finish")
    (msg,) = _received(box)
    assert msg["event"] == "failure"
    keys = {c["key"] for c in msg["conditions"]}
    assert keys & {"target:tasks", "target:errors", "target:prompts"}, keys
    assert msg["run"]["success"] is False and msg["run"]["source"] == "systemctl"
    assert msg["host"] and "targets" in msg["run"]
    last = json.loads(box.read_file("/var/lib/architect-cleanup/state.json"))["last_run"]
    assert last["result"] == "failed" and last["invocation_id"]
    assert box.sh("ls -A /var/lib/architect-cleanup/outbox").strip() == ""
    # the failure unit saw that the run had reported itself: no second message
    assert "its run reported itself" in box.sh(
        f"journalctl -u {FAILURE_UNIT} --no-pager -o cat")


def test_a_run_killed_with_sigkill_is_reported_by_the_on_failure_unit(
        installed: Container) -> None:
    box = installed
    # slow, deterministically: a real run (a dry run only reads) waits for the write lock
    # another process holds on a dashboard database
    _setup(box, extra='dry_run = false\n[database]\nbusy_timeout = "5m"\n')
    box.write_file("/root/hold.py", "import sqlite3, sys, time\n"
                   "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                   "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\n"
                   "time.sleep(600)\n")
    box.run(["systemd-run", "--unit=db-holder", "/usr/bin/python3", "/root/hold.py", DB])
    _wait_for(lambda: "locked" in box.sh("journalctl -u db-holder --no-pager -o cat"), 30,
              "the lock holder")
    box.run(["systemctl", "start", "--no-block", SERVICE])
    _wait_for(lambda: "Starting cleanup" in box.sh(
        f"journalctl -u {SERVICE} --no-pager -o cat"), 60, "the run to start")
    time.sleep(2)
    assert box.sh(f"systemctl show -p ActiveState {SERVICE}").strip() == "ActiveState=activating"
    # In the nspawn container systemd 252 may report EIO for the "auxiliary processes" of the
    # cgroup after killing the main process; what counts is that the run died by SIGKILL.
    killed = box.run(["systemctl", "kill", "-s", "KILL", SERVICE], check=False)
    _wait_for(lambda: box.sh(f"systemctl show -p Result {SERVICE}").strip() == "Result=signal",
              30, f"{SERVICE} to die by SIGKILL ({killed.stderr.strip()})")
    _wait_for(lambda: _received(box), 60, "the failure unit's message")
    (msg,) = _received(box)
    assert msg["event"] == "failure" and msg["run"] is None
    (c,) = msg["conditions"]
    assert c["key"] == f"unit:{SERVICE}" and c["state"] == "new"
    assert c["result"] == "signal" and c["unit"] == SERVICE
    lines = c["journal"]  # the unit's last 20 journal lines: the run's, then systemd's
    ours = [line for line in lines if line.startswith(("backups: ", "removed "))]
    assert len(lines) == 20 and ours, lines
    assert any("status=9/KILL" in line for line in lines), lines
    assert msg["title"] == f"failure: {SERVICE} failed (signal) before the run could report"
