"""architect-cleanup-api in a booted systemd: apt, the socket, curl, the journal.

Both packages are installed with ``apt`` into a fresh container holding the demo dashboard
tree; the API is then used the way the dashboard or an operator uses it: ``curl`` to
127.0.0.1:8787, which systemd answers by starting the service (socket activation), with the
bearer token from the credential file the package created.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from harness import API_PACKAGE, APT_ENV, PACKAGE, SHARE_INSIDE, apt_install, seed_tree
from nspawn import Container

from architect_cleanup.journal import MESSAGE_IDS

SOCKET = "architect-cleanup-api.socket"
SERVICE = "architect-cleanup-api.service"
TOKEN = "/etc/architect-cleanup/api-token"
URL = "http://127.0.0.1:8787/api/system/cleanup"
ROOT = "/srv/architect"
SEED_RUN_KEYS = {"success", "dry_run", "stats", "message"}
SEED_STATS_KEYS = {"backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
                   "prompts_deleted", "temp_files_deleted", "space_freed_mb"}
SEED_STATUS_KEYS = {"success", "daemon_running", "daemon_pid", "last_run", "last_stats",
                    "next_run", "timer_enabled", "last_result"}


@pytest.fixture
def api(container: Container, debs: dict[str, Path]) -> Container:
    """A fresh container with the demo tree and both packages installed with apt."""
    if API_PACKAGE not in debs:
        pytest.fail(f"no {API_PACKAGE}_*.deb: build it with `make deb`")
    seed_tree(container)
    container.apt_output = apt_install(  # type: ignore[attr-defined]
        container, debs[PACKAGE], debs[API_PACKAGE])
    return container


def curl(box: Container, method: str, url: str, body: str | None = None, *,
         token: bool = True) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body) of one call with curl inside the container."""
    args = ["curl", "-sS", "-D", "/root/api-headers", "-o", "/root/api-body", "-w", "%{http_code}",
            "-X", method]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    cmd = shlex.join(args)
    if token:
        cmd += f' -H "Authorization: Bearer $(cat {TOKEN})"'
    status = int(box.sh(f"{cmd} {shlex.quote(url)}"))
    headers = {}
    for line in box.read_file("/root/api-headers").splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return status, headers, json.loads(box.read_file("/root/api-body"))


#: The live databases: an API call writes its activity_log row there, even a dry run.
LIVE_DBS = " ".join(f"! -name {n}{x}" for n in ("architect.db", "assigner.db")
                    for x in ("", "-wal", "-shm", "-journal"))


def tree(box: Container) -> list[str]:
    """Every file below the root and /tmp (but the live databases) with size and mtime."""
    return box.sh(rf"find {ROOT} /tmp -maxdepth 6 -type f {LIVE_DBS} -printf '%s %T@ %p\n'"
                  " | sort -k3").splitlines()


def rows(box: Container, table: str) -> int:
    code = (f"import sqlite3; print(sqlite3.connect('{ROOT}/data/prod/architect.db')"
            f".execute('SELECT count(*) FROM {table}').fetchone()[0])")
    return int(box.sh(shlex.join(["python3", "-c", code])))


def activity(box: Container) -> Any:
    """(user_id, ip_address, dry_run, user) of the cleanup rows in prod's activity_log."""
    code = ("import json, sqlite3\n"
            f"con = sqlite3.connect('{ROOT}/data/prod/architect.db')\n"
            "rows = con.execute(\"SELECT user_id, ip_address, details FROM activity_log "
            "WHERE action = 'system_cleanup' ORDER BY id\").fetchall()\n"
            "print(json.dumps([[u, ip, json.loads(d)['dry_run'], json.loads(d).get('user')] "
            "for u, ip, d in rows]))\n")
    return json.loads(box.sh(shlex.join(["python3", "-c", code])))


def api_journal(box: Container) -> list[dict[str, str]]:
    out = box.sh(f"journalctl -u {SERVICE} -o json --no-pager "
                 f"MESSAGE_ID={MESSAGE_IDS['api_call'].hex}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_apt_installs_both_packages_and_enables_only_the_socket(api: Container) -> None:
    box = api
    assert "0 upgraded, 2 newly installed" in box.apt_output  # type: ignore[attr-defined]
    for package in (PACKAGE, API_PACKAGE):
        assert box.sh(f"dpkg-query -W -f '${{Status}}' {package}") == "install ok installed"
    assert box.sh(f"systemctl is-enabled {SOCKET}").strip() == "enabled"
    assert box.sh(f"systemctl is-active {SOCKET}").strip() == "active"
    assert "127.0.0.1:8787" in box.sh(f"systemctl show -p Listen {SOCKET}")
    # the service waits for its first connection
    assert box.run(["systemctl", "is-active", SERVICE], check=False).stdout.strip() == "inactive"
    # the token: random, root only
    assert box.sh(f"stat -c '%a %U %G' {TOKEN}").strip() == "600 root root"
    assert re.fullmatch(r"[0-9a-f]{64}\n", box.read_file(TOKEN))
    # the core package carries none of the API's modules
    core_files = box.sh(f"dpkg -L {PACKAGE}")
    assert "api.py" not in core_files and "gunicorn_conf" not in core_files


def test_curl_without_the_token_gets_401_and_with_it_the_seeds_response(api: Container) -> None:
    box = api
    before = tree(box)

    status, headers, body = curl(box, "GET", f"{URL}/status", token=False)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="architect-cleanup"'
    assert body["success"] is False
    assert box.sh(f"systemctl is-active {SERVICE}").strip() == "active"  # socket-activated

    status, _, body = curl(box, "POST", URL, '{"dry_run": false}', token=False)
    assert status == 401
    assert tree(box) == before

    status, _, doc = curl(box, "GET", f"{URL}/status")
    assert status == 200
    assert set(doc) >= SEED_STATUS_KEYS
    assert doc["daemon_running"] is True and doc["timer_enabled"] is True  # the timer
    assert doc["daemon_pid"] is None and doc["next_run"]

    tasks, errors = rows(box, "task_queue"), rows(box, "errors")
    status, _, dry = curl(box, "POST", URL, json.dumps({
        "dry_run": True, "backup_retention": 10, "log_age_days": 30, "task_age_days": 7,
        "error_age_days": 30, "prompt_age_days": 14}))
    assert status == 200
    assert set(dry) >= SEED_RUN_KEYS and set(dry["stats"]) >= SEED_STATS_KEYS
    assert dry["success"] is True and dry["dry_run"] is True and dry["source"] == "api"
    assert dry["stats"]["backups_deleted"] > 0
    assert tree(box) == before  # a dry run changes nothing
    assert (rows(box, "task_queue"), rows(box, "errors")) == (tasks, errors)

    # the call is the caller's activity in the dashboard's activity_log, dry or not
    assert activity(box) == [[None, "127.0.0.1", True, "api-token"]]

    status, _, real = curl(box, "POST", URL, '{"dry_run": false, "backup_retention": 10}')
    assert status == 200
    assert real["dry_run"] is False and real["success"] is True
    assert real["stats"]["backups_deleted"] == dry["stats"]["backups_deleted"]
    assert int(box.sh(f"ls {ROOT}/data/prod/backups | grep -c '^architect_2.*\\.db$'")) == 10
    assert rows(box, "task_queue") == tasks - real["targets"]["tasks"]["detail"]["prod"]["removed"]

    status, _, doc = curl(box, "GET", f"{URL}/status")
    assert doc["last_run"] == real["started_at"]
    assert doc["last_result"]["source"] == "api" and doc["last_result"]["dry_run"] is False


def test_every_call_is_in_the_journal_with_the_caller_and_the_parameters(
        api: Container) -> None:
    box = api
    curl(box, "GET", f"{URL}/status", token=False)
    curl(box, "POST", URL, '{"dry_run": true, "log_age_days": 45}')
    curl(box, "POST", URL, '{"dry_run": 0}')
    entries = api_journal(box)
    calls = [(e["CLEANUP_API_METHOD"], e["CLEANUP_API_STATUS"], e["CLEANUP_API_USER"],
              e["CLEANUP_API_IP"], e["CLEANUP_API_PARAMS"]) for e in entries]
    assert calls == [
        ("GET", "401", "unauthenticated", "127.0.0.1", "-"),
        ("POST", "200", "api-token", "127.0.0.1", '{"dry_run": true, "log_age_days": 45}'),
        ("POST", "400", "api-token", "127.0.0.1", '{"dry_run": 0}'),
    ]
    assert entries[1]["CLEANUP_DRY_RUN"] == "1" and entries[1]["CLEANUP_SOURCE"] == "api"


def test_a_run_while_another_holds_the_lock_gets_409(api: Container) -> None:
    box = api
    curl(box, "GET", f"{URL}/status")  # the API is up; now a CLI run holds the lock
    out = box.sh(
        "flock /run/architect-cleanup/cleanup.lock sh -c '"
        "echo $$ > /run/architect-cleanup/cleanup.lock; "
        "curl -s -o /root/api-body -w %{http_code} -X POST "
        "-H \"Content-Type: application/json\" "
        f"-H \"Authorization: Bearer $(cat {TOKEN})\" -d \"{{}}\" {URL}; echo \" $$\"'")
    status, pid = out.split()
    body = json.loads(box.read_file("/root/api-body"))
    assert status == "409"
    assert body["locked_by"] == int(pid)


def test_the_api_service_scores_at_most_2_5_in_systemd_analyze_security(
        api: Container) -> None:
    out = api.sh(f"systemd-analyze security --no-pager {SERVICE} | tail -n 1")
    score = float(re.search(r"exposure level for \S+: (\d+\.\d+)", out).group(1))  # type: ignore[union-attr]
    assert score <= 2.5, out


def test_an_upgrade_keeps_the_token_and_the_api_answers_after_it(
        api: Container, debs: dict[str, Path]) -> None:
    box = api
    token = box.read_file(TOKEN)
    assert curl(box, "GET", f"{URL}/status")[0] == 200
    pid = box.sh(f"systemctl show -p MainPID --value {SERVICE}").strip()
    box.run(["apt-get", "install", "-y", "--reinstall",
             f"{SHARE_INSIDE}/debs/{debs[API_PACKAGE].name}"], env=APT_ENV)
    assert box.read_file(TOKEN) == token
    assert box.sh(f"systemctl is-active {SOCKET}").strip() == "active"
    assert curl(box, "GET", f"{URL}/status")[0] == 200
    assert box.sh(f"systemctl show -p MainPID --value {SERVICE}").strip() != pid  # new code


def test_purge_removes_the_token_and_stops_the_api(api: Container) -> None:
    box = api
    assert curl(box, "GET", f"{URL}/status")[0] == 200
    box.run(["apt-get", "purge", "-y", API_PACKAGE], env=APT_ENV)
    assert not box.exists(TOKEN)
    assert box.run(["systemctl", "is-active", SERVICE], check=False).stdout.strip() != "active"
    assert box.run(["systemctl", "is-active", SOCKET], check=False).stdout.strip() != "active"
    assert box.exists("/etc/architect-cleanup/config.toml")  # the core package's
    assert box.run(["curl", "-s", f"{URL}/status"], check=False).returncode != 0


PANEL = "http://127.0.0.1:8787/system/cleanup"


def test_the_panel_is_served_through_the_socket_behind_a_token_login(api: Container) -> None:
    jar = "/root/panel-cookies"
    # without a session: the login form
    assert api.sh(f"curl -sS -o /dev/null -w '%{{http_code}}' {PANEL}/") == "302"
    page = api.sh(f"curl -sS -c {jar} {PANEL}/login")
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, page[:500]
    # the token is posted from its root-only file (never in a URL) for a session cookie
    out = api.sh(f"curl -sS -D - -o /dev/null -b {jar} -c {jar} "
                 f"--data-urlencode csrf_token={m.group(1)} --data-urlencode token@{TOKEN} "
                 f"{PANEL}/login")
    assert out.startswith("HTTP/1.1 303")
    cookie = next(line for line in out.splitlines() if line.lower().startswith("set-cookie:"))
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    status = api.sh(f"curl -sS -D - -b {jar} {PANEL}/")
    assert "<h1>Status</h1>" in status
    assert "script-src 'self'" in status
    doc = json.loads(api.sh(f"curl -sS -b {jar} {PANEL}/api/status"))
    assert any("dry-run mode" in w for w in doc["warnings"])
    # Chart.js from libjs-chart.js (a Depends), the panel's own script and style
    head = api.sh(f"curl -sS -b {jar} {PANEL}/vendor/chart.js | head -c 200")
    assert "Chart.js v3" in head
    for path in ("static/panel.js", "static/panel.css", "charts", "items", "config"):
        code = api.sh(f"curl -sS -o /dev/null -w '%{{http_code}}' -b {jar} {PANEL}/{path}")
        assert code == "200", path
    assert api.sh("dpkg -S /usr/share/javascript/chart.js/chart.min.js").startswith(
        "libjs-chart.js")
    # every step is in the service's journal, the token nowhere
    journal = api.sh(f"journalctl -u {SERVICE} -o cat")
    assert "panel: login from 127.0.0.1" in journal
    assert api.sh(f"cat {TOKEN}").strip() not in journal
