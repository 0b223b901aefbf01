"""The API as it runs in production: gunicorn, socket-activated (LISTEN_FDS), real HTTP.

Every status code of the contract, the seed's exact keys, a dry run that changes nothing, a
real run that cleans, the lock (409) against a run in another process and against a run in
progress in the server itself, a clean stop during a run, and the journal line per call.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from gunicorn_server import API, STATUS, Server, Site

from architect_cleanup.lock import RunLock

HERE = Path(__file__).resolve().parent
SEED_RUN_KEYS = {"success", "dry_run", "stats", "message"}
SEED_STATS_KEYS = {"backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
                   "prompts_deleted", "temp_files_deleted", "space_freed_mb"}
SEED_STATUS_KEYS = {"success", "daemon_running", "daemon_pid", "last_run", "last_stats"}
STATUS_KEYS = SEED_STATUS_KEYS | {"next_run", "timer_enabled", "last_result"}


def fingerprint(*dirs: Path) -> dict[str, Any]:
    """Every entry under *dirs*: type, size, mtime; SQLite databases by their rows (but the
    activity log's)."""
    out: dict[str, Any] = {}
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames:
                p = Path(dirpath, name)
                out[str(p)] = ("dir", p.lstat().st_mtime_ns)
            for name in filenames:
                p = Path(dirpath, name)
                if name.endswith(("architect.db-wal", "architect.db-shm", "assigner.db-wal",
                                  "assigner.db-shm")):
                    continue  # SQLite's own files beside a live database
                st = p.lstat()
                if name in ("architect.db", "assigner.db"):
                    con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                    # An API call is recorded in activity_log even when it is a dry run
                    # (SPEC 3): that row is the one change a dry run makes on purpose.
                    dump = "\n".join(line for line in con.iterdump()
                                     if '"activity_log"' not in line
                                     and '"sqlite_sequence"' not in line)
                    con.close()
                    out[str(p)] = ("db", hashlib.sha256(dump.encode()).hexdigest())
                else:
                    out[str(p)] = ("file", st.st_size, st.st_mtime_ns)
    # the directories of live databases change mtime when SQLite makes its -shm/-wal files
    return {k: v for k, v in out.items() if v[0] != "dir"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server for the tests that only send requests that must not run anything."""
    site = Site(tmp_path_factory.mktemp("shared")).build()
    with Server(site) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Any:
    site = Site(tmp_path).build()
    with Server(site) as srv:
        yield srv


def activity(site: Site) -> list[tuple[Any, Any, bool]]:
    """(user_id, ip_address, dry_run) of the cleanup rows in prod's activity_log."""
    con = sqlite3.connect(site.root / "data" / "prod" / "architect.db")
    try:
        rows = con.execute("SELECT user_id, ip_address, details FROM activity_log "
                           "WHERE action = 'system_cleanup' ORDER BY id").fetchall()
    finally:
        con.close()
    return [(u, ip, json.loads(d)["dry_run"]) for u, ip, d in rows]


def history(server: Server) -> list[dict[str, Any]]:
    hist: list[dict[str, Any]] = server.site.state_doc()["history"]
    return hist


# --- 401 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [("GET", STATUS), ("POST", API), ("GET", "/nowhere")])
def test_a_request_without_a_token_gets_401_with_www_authenticate(shared: Server, method: str,
                                                                   path: str) -> None:
    r = shared.request(method, path, b"{}", headers={"Content-Type": "application/json"})
    assert r.status == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="architect-cleanup"'
    assert r.json()["success"] is False
    assert history(shared) == []


@pytest.mark.parametrize("auth", ["Bearer wrong-token-0123456789", "Basic dXNlcjpwYXNz",
                                  "Bearer", "bearer  ", "Token {token}", "{token}",
                                  "Bearer {token}x", "Bearer x{token}"])
def test_a_wrong_token_or_scheme_gets_401(shared: Server, auth: str) -> None:
    header = auth.format(token=shared.site.token)
    r = shared.post_json({"dry_run": True}, token=None, headers={"Authorization": header})
    assert r.status == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="architect-cleanup"')
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert history(shared) == []


def test_the_bearer_scheme_is_case_insensitive(shared: Server) -> None:
    r = shared.get(STATUS, headers={"Authorization": f"bEaReR {shared.site.token}"})
    assert r.status == 200


# --- 400, 413, 415, 404, 405 -----------------------------------------------------------------

BAD_BODIES = [
    ({"dry_run": 0}, ["dry_run"]),
    ({"dry_run": 1}, ["dry_run"]),
    ({"dry_run": 0.0}, ["dry_run"]),
    ({"dry_run": "false"}, ["dry_run"]),
    ({"dry_run": None}, ["dry_run"]),
    ({"dryrun": False}, ["dryrun"]),
    ({"backup_retention": 0}, ["backup_retention"]),
    ({"backup_retention": -3}, ["backup_retention"]),
    ({"backup_retention": True}, ["backup_retention"]),
    ({"backup_retention": "10"}, ["backup_retention"]),
    ({"backup_retention": 10.0}, ["backup_retention"]),
    ({"backup_retention": 100001}, ["backup_retention"]),
    ({"backup_retention": {"prod": 0}}, ["backup_retention"]),
    ({"backup_retention": {"staging": 3}}, ["backup_retention"]),
    ({"backup_retention": {"prod": "3"}}, ["backup_retention"]),
    ({"backup_retention": [10]}, ["backup_retention"]),
    ({"log_age_days": 0}, ["log_age_days"]),
    ({"log_age_days": 1.5}, ["log_age_days"]),
    ({"task_age_days": True}, ["task_age_days"]),
    ({"error_age_days": 36501}, ["error_age_days"]),
    ({"prompt_age_days": None}, ["prompt_age_days"]),
    ({"log_age_days": 10**30}, ["log_age_days"]),
    ({"targets": []}, ["targets"]),
    ({"targets": ["bogus"]}, ["targets"]),
    ({"targets": "logs"}, ["targets"]),
    ({"targets": ["logs", "logs"]}, ["targets"]),
    ({"dry_run": False, "log_age_days": 0}, ["log_age_days"]),
    ({"dry_run": 0, "keep": 3, "backup_retention": 0, "log_age_days": "30", "targets": [1]},
     ["dry_run", "keep", "backup_retention", "log_age_days", "targets"]),
    ([], ["body"]),
    ([{"dry_run": False}], ["body"]),
    ("dry_run", ["body"]),
    (None, ["body"]),
    (False, ["body"]),
]


@pytest.mark.parametrize("body,keys", BAD_BODIES, ids=[json.dumps(b)[:40] for b, _ in BAD_BODIES])
def test_an_invalid_body_gets_400_naming_every_offending_key(shared: Server, body: Any,
                                                             keys: list[str]) -> None:
    r = shared.post_json(body)
    assert r.status == 400, r.body
    doc = r.json()
    assert doc["success"] is False
    assert doc["invalid_keys"] == keys
    assert [e.split(":", 1)[0] for e in doc["errors"]] == keys
    assert history(shared) == []


@pytest.mark.parametrize("raw", [b"{", b"{'dry_run': false}", b'{"dry_run": NaN}',
                                 b'{"log_age_days": Infinity}', b"\xff\xfe{}",
                                 b"[" * 60_000, b'{"dry_run": false} x'],
                         ids=["truncated", "single-quotes", "NaN", "Infinity", "not-utf8",
                              "deeply-nested", "trailing-garbage"])
def test_a_body_that_is_not_strict_json_gets_400(shared: Server, raw: bytes) -> None:
    r = shared.request("POST", API, raw, token=shared.site.token,
                       headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert r.json()["invalid_keys"] == ["body"]
    assert history(shared) == []


def test_a_body_over_64_kib_gets_413_and_one_of_64_kib_is_read(shared: Server) -> None:
    # The biggest body accepted is exactly 64 KiB ({"targets": [...]} padded with spaces) ...
    doc = json.dumps({"targets": ["bogus"]}).encode()
    r = shared.request("POST", API, doc + b" " * (65536 - len(doc)), token=shared.site.token,
                       headers={"Content-Type": "application/json"})
    assert (r.status, r.json()["invalid_keys"]) == (400, ["targets"])
    # ... one byte more is refused before it is parsed.
    r = shared.request("POST", API, doc + b" " * (65537 - len(doc)), token=shared.site.token,
                       headers={"Content-Type": "application/json"})
    assert r.status == 413
    assert r.json() == {"success": False, "message": "request body larger than 64 KiB",
                        "error": "Request Entity Too Large"}
    assert history(shared) == []


@pytest.mark.parametrize("size", [100_000, 1_000_000, 3_000_000])
def test_a_client_that_sends_all_of_a_big_body_and_closes_still_reads_the_413(
        shared: Server, size: int) -> None:
    # http.client writes the whole body before it reads; without draining, gunicorn closed
    # on it mid-write about one time in ten at 1 MB ("Broken pipe", "Connection reset").
    for _ in range(10):
        r = shared.request("POST", API, b" " * size, token=shared.site.token,
                           headers={"Content-Type": "application/json",
                                    "Connection": "close"})
        assert r.status == 413
    assert history(shared) == []


def test_a_chunked_body_over_64_kib_gets_413_too(shared: Server) -> None:
    # No Content-Length: werkzeug 2.2 would read it all; the API stops at 64 KiB + 1.
    chunks = [b'{"targets": ["logs"]' + b" " * 8192] + [b" " * 8192] * 12 + [b"}"]
    r = shared.request("POST", API, iter(chunks), token=shared.site.token, chunked=True,
                       headers={"Content-Type": "application/json",
                                "Transfer-Encoding": "chunked"})
    assert r.status == 413
    assert history(shared) == []


def test_a_post_that_is_not_json_gets_415(shared: Server) -> None:
    r = shared.request("POST", API, b'{"dry_run": true}', token=shared.site.token,
                       headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert r.json()["success"] is False
    assert history(shared) == []


def test_unknown_paths_and_methods_answer_json(shared: Server) -> None:
    r = shared.get("/api/system/nowhere", token=shared.site.token)
    assert (r.status, r.headers["content-type"]) == (404, "application/json")
    r = shared.get(API, token=shared.site.token)
    assert (r.status, r.json()["error"]) == (405, "Method Not Allowed")
    r = shared.request("DELETE", STATUS, token=shared.site.token)
    assert r.status == 405


# --- 200: status, dry run, real run ----------------------------------------------------------


def test_the_status_has_the_seeds_keys_before_any_run(server: Server) -> None:
    r = server.get(STATUS, token=server.site.token)
    assert r.status == 200
    doc = r.json()
    assert set(doc) >= STATUS_KEYS
    assert doc["success"] is True
    assert doc["daemon_pid"] is None
    assert doc["last_run"] is None and doc["last_stats"] is None and doc["last_result"] is None
    # no systemd on the build host: no timer is active (the reason is in "systemd")
    assert doc["daemon_running"] is False and doc["timer_enabled"] is False


def test_a_dry_run_post_changes_nothing_and_a_false_one_cleans(server: Server) -> None:
    site = server.site
    before = fingerprint(site.base / "srv", site.tmp)

    r = server.post_json({"dry_run": True, "backup_retention": 10, "log_age_days": 30,
                          "task_age_days": 7, "error_age_days": 30, "prompt_age_days": 14})
    assert r.status == 200
    dry = r.json()
    assert set(dry) >= SEED_RUN_KEYS
    assert set(dry["stats"]) >= SEED_STATS_KEYS
    assert dry["success"] is True and dry["dry_run"] is True and dry["source"] == "api"
    assert dry["message"] == "Cleanup completed (dry run)"
    assert dry["stats"]["backups_deleted"] > 0 and dry["stats"]["logs_deleted"] > 0
    assert fingerprint(site.base / "srv", site.tmp) == before

    # ... but it is the API caller's activity (SPEC 3), recorded in each main database.
    assert activity(site) == [(None, "127.0.0.1", True)]

    # Missing dry_run is a dry run too.
    r = server.post_json({})
    assert r.status == 200 and r.json()["dry_run"] is True
    assert fingerprint(site.base / "srv", site.tmp) == before

    r = server.post_json({"dry_run": False, "backup_retention": 10, "log_age_days": 30,
                          "task_age_days": 7, "error_age_days": 30, "prompt_age_days": 14})
    assert r.status == 200, r.body
    real = r.json()
    assert real["dry_run"] is False and real["success"] is True
    assert real["message"] == "Cleanup completed"
    assert real["stats"] == dry["stats"]  # a dry run reports exactly what a real run does
    after = fingerprint(site.base / "srv", site.tmp)
    removed = set(before) - set(after)
    assert len(removed) >= dry["stats"]["backups_deleted"] + dry["stats"]["logs_deleted"]
    prod = [p for p in after if "/data/prod/backups/architect_2" in p and p.endswith(".db")]
    assert len(prod) == 10
    assert not (site.root / "app" / "__pycache__").exists()

    # The status now shows that run, with the seed's keys.
    st = server.get(STATUS, token=site.token).json()
    assert st["last_run"] == real["started_at"]
    assert st["last_stats"]["backups_deleted"] == real["stats"]["backups_deleted"]
    assert set(st["last_stats"]) >= SEED_STATS_KEYS
    assert st["last_result"]["dry_run"] is False and st["last_result"]["source"] == "api"
    assert [h["dry_run"] for h in history(server)] == [True, True, False]

    # The maintenance run of the seed: the same request again frees nothing.
    again = server.post_json({"dry_run": False, "backup_retention": 10}).json()
    assert again["stats"]["backups_deleted"] == 0 and again["stats"]["space_freed_mb"] == 0


def test_targets_limits_the_run(server: Server) -> None:
    doc = server.post_json({"dry_run": False, "targets": ["logs"]}).json()
    assert doc["targets"]["logs"]["status"] == "ok"
    assert doc["targets"]["backups"]["status"] == "skipped"
    assert doc["stats"]["backups_deleted"] == 0 and doc["stats"]["logs_deleted"] > 0


def test_a_per_environment_retention_table_applies_over_the_configured_one(
        server: Server) -> None:
    doc = server.post_json({"backup_retention": {"prod": 80, "default": 2}}).json()
    prod = doc["targets"]["backups"]["detail"]["prod"]
    assert prod["kept"] >= 80
    assert doc["dry_run"] is True


# --- 409 -------------------------------------------------------------------------------------


def test_a_run_while_another_process_holds_the_lock_gets_409(server: Server) -> None:
    site = server.site
    before = fingerprint(site.base / "srv", site.tmp)
    with RunLock(str(site.run / "cleanup.lock")):
        r = server.post_json({"dry_run": False})
        assert r.status == 409
        doc = r.json()
        assert doc["success"] is False and doc["locked_by"] == os.getpid()
        assert str(os.getpid()) in doc["message"]
        st = server.get(STATUS, token=site.token).json()
        assert st["daemon_pid"] == os.getpid()
    assert fingerprint(site.base / "srv", site.tmp) == before
    assert history(server) == []
    assert server.get(STATUS, token=site.token).json()["daemon_pid"] is None


@pytest.fixture
def slow_server(tmp_path: Path) -> Any:
    site = Site(tmp_path).build()
    with Server(site, config=str(HERE / "slow_target_gunicorn_conf.py")) as srv:
        yield srv


def _post_in_thread(server: Server, doc: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["reply"] = server.post_json(doc)
        except Exception as exc:  # reported by the test
            out["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, out


def _wait_running(server: Server) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = server.get(STATUS, token=server.site.token).json()["daemon_pid"]
        if pid:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("the run did not start")


def test_status_and_a_second_post_are_answered_while_a_run_goes_on(
        slow_server: Server) -> None:
    t, out = _post_in_thread(slow_server, {"dry_run": True})
    try:
        pid = _wait_running(slow_server)  # the status answers during the run ...
        r = slow_server.post_json({"dry_run": False})  # ... and a second run is refused
        assert r.status == 409
        assert r.json()["locked_by"] == pid
        assert slow_server.proc is not None and pid != slow_server.proc.pid  # a worker runs it
    finally:
        slow_server.stop()
        t.join(30)
    assert out["reply"].status == 200  # the first run, stopped with the server, answered
    assert history(slow_server)[-1]["dry_run"] is True


def test_stopping_the_service_stops_a_running_cleanup_cleanly(slow_server: Server) -> None:
    t, out = _post_in_thread(slow_server, {"dry_run": True})
    _wait_running(slow_server)
    mark = slow_server.site.run / "slow-target-running"
    deadline = time.monotonic() + 10
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    assert slow_server.proc is not None
    slow_server.proc.send_signal(signal.SIGTERM)  # what systemctl stop sends
    t.join(30)
    code = slow_server.stop()
    assert time.monotonic() - started < 10  # well within graceful_timeout (30 s)
    assert code == 0
    reply = out["reply"]
    assert reply.status == 200
    doc = reply.json()
    assert doc["success"] is False, json.dumps(doc)
    # the target running at the signal stopped between two items; the rest did not start
    messages = [t["message"] for t in doc["targets"].values()]
    assert messages.count("stopped on request") == 1, json.dumps(doc["targets"])
    assert doc["targets"]["slow"]["status"] != "ok"
    last = slow_server.site.state_doc()["last_run"]
    assert last["result"] == "stopped" and "stopped on request" in last["message"]


# --- start-up and the journal ----------------------------------------------------------------


def test_gunicorn_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    site = Site(tmp_path).build()
    env = site.env()
    del env["CREDENTIALS_DIRECTORY"]
    server = Server(site, env=env).start(wait=False)
    assert server.proc is not None
    code = server.proc.wait(timeout=30)
    assert code != 0
    assert "no API token: $CREDENTIALS_DIRECTORY is not set" in server.log()


def test_gunicorn_refuses_a_short_token(tmp_path: Path) -> None:
    site = Site(tmp_path, token="short").build()
    server = Server(site).start(wait=False)
    assert server.proc is not None
    assert server.proc.wait(timeout=30) != 0
    assert "at least 16 characters" in server.log()


def test_every_call_is_logged_with_the_caller_and_the_parameters(server: Server) -> None:
    server.post_json({"dry_run": True, "log_age_days": 45})
    server.post_json({"dry_run": 0})
    server.get(STATUS)
    lines = [x for x in server.log().splitlines() if " API " in x]
    assert any("API POST /api/system/cleanup by api-token@127.0.0.1: 200 Dry run: would free"
               in x and 'parameters {"dry_run": true, "log_age_days": 45}' in x for x in lines)
    assert any("API POST /api/system/cleanup by api-token@127.0.0.1: 400" in x
               and "dry_run: must be true or false" in x and 'parameters {"dry_run": 0}' in x
               for x in lines)
    assert any("API GET /api/system/cleanup/status by unauthenticated@127.0.0.1: 401" in x
               for x in lines)
