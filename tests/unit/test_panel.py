"""The panel over HTTP: login with the API token, sessions, CSRF, CSP, the whitelist, the
preview, saving the drop-in, runs; the app served on 127.0.0.1 by werkzeug in a thread."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panel_kit import PANEL, TOKEN, Client, Served, Site, served

from architect_cleanup import cli
from architect_cleanup.api import create_app
from architect_cleanup.config import Config, ConfigError, merge, parse_config
from architect_cleanup.panel import data, settings

from conftest import snapshot

PAGES = ("/", "/charts", "/items", "/config")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    for k, v in s.environ().items():
        monkeypatch.setenv(k, v)
    return s


@pytest.fixture
def server(site: Site) -> Iterator[Served]:
    app = create_app(token=TOKEN, config_path=str(site.config), configure_logging=False)
    with served(app) as s:
        yield s


@pytest.fixture
def client(server: Served) -> Client:
    return Client(server.port)


@pytest.fixture
def logged_in(client: Client) -> tuple[Client, str]:
    r = client.login()
    assert r.status == 303
    return client, client.csrf()


# --- login and sessions ----------------------------------------------------------------------


def test_a_page_without_a_session_sends_the_browser_to_the_login_form(client: Client) -> None:
    for page in PAGES:
        r = client.get(PANEL + page)
        assert r.status == 302
        assert r.headers["location"].endswith(PANEL + "/login")


def test_the_panel_s_json_without_a_session_is_401(client: Client) -> None:
    for path in ("status", "charts", "items", "config", "run"):
        assert client.get(f"{PANEL}/api/{path}").status == 401
    assert client.post_json(PANEL + "/api/run", {"dry_run": True}).status == 401


def test_a_wrong_token_is_refused_and_gives_no_session(client: Client) -> None:
    r = client.login("not-the-token-at-all-0000")
    assert r.status == 200
    assert "That is not the API token." in r.body
    assert client.get(PANEL + "/").status == 302


def test_the_token_with_unicode_spaces_around_it_is_refused(client: Client) -> None:
    for wrong in (TOKEN + "\xa0", "\u2003" + TOKEN, TOKEN[:-1], TOKEN + "x"):
        assert "That is not the API token." in client.login(wrong).body
    assert client.get(PANEL + "/").status == 302
    assert client.login(TOKEN + "\n").status == 303  # a pasted line's newline is fine


def test_the_right_token_gives_an_httponly_samesite_strict_cookie(client: Client) -> None:
    r = client.login()
    assert r.status == 303
    assert r.headers["location"].endswith(PANEL + "/")
    cookie = next(c for c in r.cookies if c.startswith("architect_cleanup_session="))
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs
    assert "samesite=strict" in attrs
    assert f"path={PANEL}" in attrs
    assert "secure" not in attrs  # plain HTTP on loopback: a Secure cookie would never return
    assert client.get(PANEL + "/").status == 200


def test_the_cookie_is_secure_when_a_local_tls_proxy_forwards_https(site: Site) -> None:
    app = create_app(token=TOKEN, config_path=str(site.config), configure_logging=False)
    c = app.test_client()
    page = c.get(PANEL + "/login", base_url="https://127.0.0.1")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    r = c.post(PANEL + "/login", data={"token": TOKEN, "csrf_token": csrf.group(1)},
               base_url="https://127.0.0.1")
    assert r.status_code == 303
    assert "Secure" in r.headers["Set-Cookie"]


def test_the_token_never_appears_in_a_page_a_url_or_an_answer(logged_in: tuple[Client, str]
                                                              ) -> None:
    client, _ = logged_in
    bodies = [client.get(PANEL + p) for p in (*PAGES, "/login")]
    bodies += [client.get(f"{PANEL}/api/{p}") for p in ("status", "charts", "items", "config")]
    for r in bodies:
        assert TOKEN not in r.body
        assert TOKEN not in r.headers.get("location", "")
        assert all(TOKEN not in c for c in r.cookies)


def test_logging_out_ends_the_session(logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    r = client.post_form(PANEL + "/logout", {"csrf_token": csrf})
    assert r.status == 303
    assert client.get(PANEL + "/").status == 302


def test_the_session_does_not_open_the_bearer_api(logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    assert client.get("/api/system/cleanup/status").status == 401
    r = client.get("/api/system/cleanup/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200


# --- CSRF and the Content-Security-Policy -----------------------------------------------------

STATE_CHANGING = (("/api/run", {"dry_run": True}), ("/api/save", {"settings": {}}),
                  ("/api/plan", {}), ("/api/preview", {"settings": {}}),
                  ("/api/validate", {"settings": {}}))


@pytest.mark.parametrize(("path", "doc"), STATE_CHANGING)
def test_a_post_without_the_csrf_token_is_refused(logged_in: tuple[Client, str], path: str,
                                                  doc: dict[str, object]) -> None:
    client, csrf = logged_in
    assert client.post_json(PANEL + path, doc).status == 403
    wrong = ("y" if csrf[0] == "x" else "x") + csrf[1:]
    assert client.post_json(PANEL + path, doc, csrf=wrong).status == 403


@pytest.mark.parametrize(("path", "doc"), STATE_CHANGING)
def test_a_post_from_another_origin_is_refused_even_with_the_token(
        logged_in: tuple[Client, str], path: str, doc: dict[str, object]) -> None:
    client, csrf = logged_in
    r = client.post_json(PANEL + path, doc, csrf=csrf,
                         headers={"Origin": "http://evil.example"})
    assert r.status == 403


def test_the_login_form_itself_needs_its_csrf_token(client: Client) -> None:
    client.get(PANEL + "/login")
    r = client.post_form(PANEL + "/login", {"token": TOKEN})
    assert r.status == 403
    assert client.get(PANEL + "/").status == 302


def test_logging_out_needs_the_csrf_token(logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    assert client.post_form(PANEL + "/logout", {}).status == 403
    assert client.get(PANEL + "/").status == 200


def test_every_page_has_a_csp_without_inline_scripts_and_none_are_inline(
        logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    for page in (*PAGES, "/login"):
        r = client.get(PANEL + page)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        scripts = re.findall(r"<script\b([^>]*)>", r.body)
        assert scripts, page
        assert all('src="' in attrs for attrs in scripts)
        assert not re.search(r"\son[a-z]+\s*=", r.body)  # no inline event handlers
        assert not re.search(r"\sstyle\s*=", r.body)


def test_chart_js_is_served_from_debian_s_libjs_chart_js(logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    r = client.get(PANEL + "/vendor/chart.js")
    assert r.status == 200
    assert "Chart.js v3" in r.body[:200]
    assert r.body == Path("/usr/share/javascript/chart.js/chart.min.js").read_text()
    charts = client.get(PANEL + "/charts").body
    assert f'src="{PANEL}/vendor/chart.js"' in charts
    assert "http://" not in charts and "https://" not in charts  # nothing from elsewhere


# --- reading ----------------------------------------------------------------------------------


def test_the_status_warns_of_a_configuration_in_dry_run_mode(logged_in: tuple[Client, str]
                                                             ) -> None:
    client, _ = logged_in
    doc = client.get(PANEL + "/api/status").json()
    assert any("dry-run mode" in w for w in doc["warnings"])
    assert doc["free_now"]["total"] > 0


def test_the_status_warns_of_lost_dashboard_locks_and_a_failed_run(
        site: Site, logged_in: tuple[Client, str]) -> None:
    from architect_cleanup.state import StateStore
    StateStore(str(site.state)).record({
        "started_at": "2026-12-01T10:00:00+00:00", "dry_run": False, "result": "failed",
        "message": "Cleanup completed with errors: tasks: database is locked", "stats": {},
        "dashboard_locks": {"lost": [{"pid": 4321, "command": "python3 app.py",
                                      "database": "data/prod/architect.db"}]}})
    client, _ = logged_in
    warnings = client.get(PANEL + "/api/status").json()["warnings"]
    assert any("the last run failed: Cleanup completed with errors" in w for w in warnings)
    assert any("dashboard process 4321 (python3 app.py) has data/prod/architect.db open "
               "without its SQLite locks" in w for w in warnings)


def test_the_charts_come_from_the_history_database_when_there_is_one(
        site: Site, logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    assert client.get(PANEL + "/api/charts").json()["source"] == "state.json"
    site.seed_history()
    doc = client.get(PANEL + "/api/charts").json()
    assert doc["source"] == "database"
    free = doc["free"][0]
    assert len(free["points"]) == 14
    assert free["forecast"], free["line"]
    assert "fills in about" in free["line"]
    assert {s["target"] for s in doc["freed"]["series"]} == {"logs", "backups"}
    assert {b["env"] for b in doc["backups"]} == {"prod", "qa"}
    status = client.get(PANEL + "/api/status").json()
    assert status["forecasts"][0]["state"] == "filling"


def test_the_items_table_searches_and_pages_the_last_run_s_items(
        site: Site, logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    site.seed_history()
    doc = client.get(PANEL + "/api/items?limit=25").json()
    assert doc["run"]["source"] == "database"
    assert doc["total"] == 61
    assert len(doc["rows"]) == 25
    second = client.get(PANEL + "/api/items?limit=25&offset=50").json()
    assert len(second["rows"]) == 11
    hit = client.get(PANEL + "/api/items?q=ARCHITECT_2026").json()
    assert hit["total"] == 1
    assert hit["rows"][0]["reason"] == "newest 10 of prod: beyond them"
    assert client.get(PANEL + "/api/items?target=backups").json()["total"] == 1


def test_the_backups_of_each_environment_show_what_is_kept_and_why(
        logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    doc = client.get(PANEL + "/api/backups").json()
    envs = {e["env"]: e["backups"] for e in doc["environments"]}
    assert len(envs["prod"]) == 20
    assert len(envs["qa"]) == 8
    qa_states = [b["state"] for b in envs["qa"]]
    assert qa_states.count("kept") == 4
    assert qa_states.count("would be removed") == 4
    assert all(b["reason"] for b in envs["qa"])


def test_the_effective_configuration_says_where_each_value_comes_from(
        site: Site, logged_in: tuple[Client, str]) -> None:
    client, _ = logged_in
    (site.etc / "config.d").mkdir()
    (site.etc / "config.d" / "20-logs.toml").write_text('[logs]\nmax_age = "45d"\n')
    doc = client.get(PANEL + "/api/config").json()
    origin = {row["key"]: row["origin"] for row in doc["effective"]}
    value = {row["key"]: row["value"] for row in doc["effective"]}
    assert origin["backups.retention.qa"] == str(site.config)
    assert origin["logs.max_age"] == str(site.etc / "config.d" / "20-logs.toml")
    assert value["logs.max_age"] == "45d"
    assert origin["tasks.max_age"] == "default"
    assert doc["form"]["backups.retention.qa"] == "4"
    assert doc["form"]["backups.retention.prod"] == "10"


def test_values_of_secret_keys_are_never_shown() -> None:
    rows = data.config_view(Config(), [])
    hidden = {r["key"] for r in rows if r["value"] == data.HIDDEN}
    assert hidden == {"backups.offload.credentials"}  # a path to a root-only file: not shown
    for name in ("backups.offload.credentials", "notify.webhook.secret", "notify.email.password",
                 "notify.email.smtp_password", "x.api_token", "x.access_key"):
        assert data.redact(name, "/etc/architect-cleanup/secret-file") == data.HIDDEN
    assert data.redact("backups.offload.url", "s3://bucket") == "s3://bucket"


# --- the form: validation, preview, saving ----------------------------------------------------


def test_validation_gives_the_messages_config_check_gives(site: Site,
                                                          logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    bad = {"backups.policy.prod.keep_daily": "many", "logs.max_age": "30 days",
           "backups.retention.qa": "0", "backups.policy.qa.min_free_space": "150%"}
    doc = client.post_json(PANEL + "/api/validate", {"settings": bad}, csrf=csrf).json()
    assert doc["ok"] is False
    outcome = settings.propose(settings.Layers.read(str(site.config)), bad)
    raw = merge(parse_toml(site.config), outcome.dropin)
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    expected: dict[str, list[str]] = {}
    for p in exc.value.found:
        expected.setdefault(p.key, []).append(p.message)
    assert doc["errors"] == expected
    assert set(expected) == set(bad)


def parse_toml(path: Path) -> dict[str, object]:
    import tomllib
    return tomllib.loads(path.read_text())


def test_only_the_whitelisted_settings_can_be_changed(site: Site,
                                                      logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    for key, value in (("root", "/"), ("backups.dir", "x/{env}"), ("safety.skip_open_files",
                                                                    False),
                       ("backups.policy.prod.max_total_size", "1G"), ("environments", ["a"])):
        r = client.post_json(PANEL + "/api/save", {"settings": {key: value}}, csrf=csrf)
        assert r.status == 400
        assert "not a setting the panel may change" in r.json()["general"][0]
        assert key in r.json()["general"][0]
    assert not site.dropin.exists()


def test_the_preview_changes_with_keep_daily_and_changes_nothing(
        site: Site, logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in

    def state() -> dict[str, tuple[int, int, int, str]]:
        # the backups' verification cache is a cache any dry run fills (backup_verify.py)
        return {k: v for k, v in snapshot(site.root, site.etc, site.state).items()
                if not k.endswith("/backup-verify.json")}

    before = state()
    three = client.post_json(PANEL + "/api/preview",
                             {"settings": {"backups.policy.prod.keep_daily": "3"}}, csrf=csrf)
    seven = client.post_json(PANEL + "/api/preview",
                             {"settings": {"backups.policy.prod.keep_daily": "7"}}, csrf=csrf)
    assert three.status == seven.status == 200
    p3, p7 = three.json()["preview"], seven.json()["preview"]
    # prod: 20 backups, 3 or 7 daily kept; qa: 8, the newest 4 kept
    assert p3["counts"]["backups_deleted"] == 17 + 4
    assert p7["counts"]["backups_deleted"] == 13 + 4
    assert p3["sentence"].startswith("With these settings the next run would remove 21 backups")
    assert "log files" in p3["sentence"]
    assert state() == before
    assert site.activity() == []


def test_saving_writes_one_drop_in_that_config_check_accepts(
        site: Site, logged_in: tuple[Client, str], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    client, csrf = logged_in
    caplog.set_level(logging.INFO, logger="architect_cleanup")
    form = client.get(PANEL + "/api/config").json()["form"]
    form["backups.policy.prod.keep_daily"] = "7"
    form["backups.policy.prod.keep_weekly"] = "4"
    form["logs.max_age"] = "14d"
    form["dry_run"] = False
    r = client.post_json(PANEL + "/api/save", {"settings": form}, csrf=csrf)
    assert r.status == 200, r.body
    assert r.json()["changes"] == {"backups.policy.prod.keep_daily": [None, 7],
                                   "backups.policy.prod.keep_weekly": [None, 4],
                                   "dry_run": [None, False], "logs.max_age": [None, "14d"]}
    text = site.dropin.read_text()
    assert site.dropin.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in site.dropin.parent.iterdir()] == ["60-panel.toml"]  # no temp left
    doc = parse_toml(site.dropin)
    assert doc == {"dry_run": False, "backups": {"policy": {"prod": {"keep_daily": 7,
                                                                     "keep_weekly": 4}}},
                   "logs": {"max_age": "14d"}}
    assert text.startswith("# Written by the architect-cleanup panel")
    # the journal and the dashboard's activity_log name the user
    assert any("panel (api token) saved" in rec.getMessage() for rec in caplog.records)
    (row,) = site.activity()
    assert row[1] == "system_cleanup_config"
    assert '"user": "panel (api token)"' in row[2]
    assert row[3] == "127.0.0.1"
    # the form now shows the saved values
    again = client.get(PANEL + "/api/config").json()
    assert again["form"]["backups.policy.prod.keep_daily"] == "7"
    assert again["form"]["dry_run"] is False
    # and `architect-cleanup config check` accepts what was saved
    assert cli.main(["--config", str(site.config), "config", "check"]) == 0
    assert "60-panel.toml" in capsys.readouterr().out


def test_an_invalid_form_is_never_saved(site: Site, logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    r = client.post_json(PANEL + "/api/save",
                         {"settings": {"backups.retention.prod": "0"}}, csrf=csrf)
    assert r.status == 400
    assert "would delete every backup" in r.json()["errors"]["backups.retention.prod"][0]
    assert not site.dropin.exists()


def test_a_later_drop_in_that_overrides_the_panel_is_named(site: Site,
                                                           logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    (site.etc / "config.d").mkdir()
    (site.etc / "config.d" / "90-site.toml").write_text('[logs]\nmax_age = "60d"\n')
    r = client.post_json(PANEL + "/api/save", {"settings": {"logs.max_age": "10d"}}, csrf=csrf)
    assert r.status == 200
    assert any("90-site.toml" in w and "no effect" in w for w in r.json()["warnings"])


def test_clearing_a_calendar_rule_set_in_config_toml_writes_zero(site: Site,
                                                                 logged_in: tuple[Client, str]
                                                                 ) -> None:
    client, csrf = logged_in
    site.config.write_text(site.config.read_text()
                           + "\n[backups.policy.prod]\nkeep_daily = 7\nkeep_weekly = 4\n")
    r = client.post_json(PANEL + "/api/save",
                         {"settings": {"backups.policy.prod.keep_weekly": ""}}, csrf=csrf)
    assert r.status == 200, r.body
    assert parse_toml(site.dropin) == {"backups": {"policy": {"prod": {"keep_weekly": 0}}}}


# --- running -----------------------------------------------------------------------------------


def wait_run(client: Client) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = client.get(PANEL + "/api/run").json()["run"]
        if run and not run["running"]:
            return dict(run)
        time.sleep(0.1)
    raise AssertionError("the run did not finish in 60 s")


def test_a_dry_run_from_the_panel_removes_nothing_and_fills_the_items_table(
        site: Site, logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    files = (site.root / "data" / "prod" / "backups", site.root / "data" / "qa" / "backups",
             site.root / "logs")
    before = snapshot(*files)
    r = client.post_json(PANEL + "/api/run", {"dry_run": True}, csrf=csrf)
    assert r.status == 202
    run = wait_run(client)
    assert run["error"] is None
    assert snapshot(*files) == before
    # an API caller's dry run is its activity, as the REST API records it
    (row,) = site.activity()
    assert '"dry_run": true' in row[2]
    items = client.get(PANEL + "/api/items?target=backups").json()
    assert items["run"]["source"] == "database"  # the run recorded itself in the history
    assert items["run"]["dry_run"] is True
    assert items["total"] == 10 + 4  # prod keeps 10 of 20, qa 4 of 8


def test_without_a_history_the_items_are_the_panel_s_own_last_run(
        site: Site, logged_in: tuple[Client, str]) -> None:
    site.config.write_text(site.config.read_text() + "\n[history]\nenabled = false\n")
    client, csrf = logged_in
    assert client.get(PANEL + "/api/items").json()["run"]["source"] is None
    assert client.post_json(PANEL + "/api/run", {"dry_run": True}, csrf=csrf).status == 202
    wait_run(client)
    items = client.get(PANEL + "/api/items?target=backups").json()
    assert items["run"]["source"] == "panel"
    assert items["total"] == 10 + 4
    assert client.get(PANEL + "/api/charts").json()["source"] == "state.json"


def test_a_real_run_needs_a_plan_that_names_what_it_removes(
        site: Site, logged_in: tuple[Client, str]) -> None:
    client, csrf = logged_in
    before = snapshot(site.root)
    for body in ({"dry_run": False}, {"dry_run": False, "plan": "made-up"}):
        r = client.post_json(PANEL + "/api/run", body, csrf=csrf)
        assert r.status == 400
        assert "confirmed plan" in r.json()["message"]
    assert snapshot(site.root) == before
    plan = client.post_json(PANEL + "/api/plan", {}, csrf=csrf).json()
    assert plan["sentence"].startswith("This real run will remove 14 backups")
    assert snapshot(site.root) == before
    r = client.post_json(PANEL + "/api/run", {"dry_run": False, "plan": plan["plan"]},
                         csrf=csrf)
    assert r.status == 202
    run = wait_run(client)
    assert run["result"]["dry_run"] is False  # type: ignore[index]
    assert len(list((site.root / "data" / "prod" / "backups").iterdir())) == 10
    assert len(list((site.root / "data" / "qa" / "backups").iterdir())) == 4
    # a plan is used once
    again = client.post_json(PANEL + "/api/run", {"dry_run": False, "plan": plan["plan"]},
                             csrf=csrf)
    assert again.status == 400
    # the run is the caller's activity, with the panel's user
    assert any('"user": "panel (api token)"' in row[2] for row in site.activity())
