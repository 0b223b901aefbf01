"""[notify]: channels declared in the configuration, every problem reported at once; the
conditions a run raises and when they are news; the weekly digest from the history."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from architect_cleanup import history
from architect_cleanup.alerts import events
from architect_cleanup.config import ConfigError, parse_config
from architect_cleanup.stats import CleanupStats, TargetResult

from conftest import NOW, make_config


def _problems(notify: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config({"notify": notify})
    return err.value.problems


def test_channels_default_to_failure_and_warning_and_are_named_by_kind_and_place() -> None:
    cfg = parse_config({"notify": {
        "email": [{"to": ["ops@example.org"], "from": "c@example.org"}],
        "webhook": [{"url": "https://hooks.example.org/x", "secret": "/etc/s"},
                    {"url": "https://hooks.example.org/y", "secret": "/etc/s",
                     "on": ["digest"], "name": "weekly"}]}})
    assert [(c.name, c.on) for c in cfg.notify.channels] == [
        ("email1", ("failure", "warning")), ("webhook1", ("failure", "warning")),
        ("weekly", ("digest",))]
    assert cfg.notify.email[0].sendmail == "/usr/sbin/sendmail" and not cfg.notify.email[0].smtp


def test_every_channel_problem_is_reported_at_once() -> None:
    problems = _problems({
        "email": [{"to": ["not-an-address"], "from": "c@example.org", "smtp": "mail",
                   "on": ["failure", "sometimes"]}],
        "webhook": [{"url": "ftp://x", "secret": "relative/secret", "colour": "red"}]})
    assert problems == [
        "notify.email: [0].to: 'not-an-address' is not an e-mail address",
        "notify.email: [0].on: unknown event 'sometimes' (choose from failure, warning, "
        "success, digest)",
        "notify.email: [0].smtp: 'mail': must be \"host:port\" (e.g. \"mail.example.org:587\")",
        "notify.webhook: [0].url: 'ftp://x': must be an http:// or https:// URL",
        "notify.webhook: [0].secret: 'relative/secret': must be an absolute path",
        "notify.webhook: [0].colour: unknown key",
    ]


def test_a_secret_is_a_path_never_a_value_in_the_file() -> None:
    problems = _problems({"webhook": [{"url": "https://x.example/h",
                                       "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]})
    assert problems == ["notify.webhook: [0].secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'"
                        ": must be an absolute path"]


def test_required_keys_are_named() -> None:
    assert _problems({"email": [{"to": ["a@b.example"]}], "webhook": [{}]}) == [
        "notify.email: [0].from: is required",
        "notify.webhook: [0].url: is required", "notify.webhook: [0].secret: is required"]


def test_apprise_without_debians_package_is_a_config_error_naming_it() -> None:
    import importlib.util
    if importlib.util.find_spec("apprise") is not None:
        pytest.skip("apprise is installed here")
    assert _problems({"apprise": [{"urls": ["ntfy://example/topic"]}]}) == [
        "notify.apprise: [0]: needs Debian's apprise package (apt install apprise)"]


def test_config_check_shows_the_channels_in_the_files_shape() -> None:
    cfg = parse_config({"notify": {"webhook": [{"url": "https://x.example/h",
                                                "secret": "/etc/s"}], "digest": "weekly"}})
    doc = cfg.to_dict()["notify"]
    assert doc["webhook"] == [{"name": "webhook1", "url": "https://x.example/h",
                               "secret": "/etc/s", "on": ["failure", "warning"]}]
    assert doc["digest"] == "weekly" and doc["max_time"] == "1m"


# --- conditions ---------------------------------------------------------------------------


def _stats(**targets: TargetResult) -> CleanupStats:
    s = CleanupStats()
    for t in targets.values():
        s.add(t)
    return s


def test_a_target_reports_a_warning_of_its_own_through_its_detail(tmp_path: Path) -> None:
    backups = TargetResult("backups")
    backups.part("prod")["warnings"] = [{
        "key": "corrupt_newest:prod", "text": "prod: newest backup is corrupt",
        "file": "data/prod/backups/architect-20261126.db"}]
    facts = events.RunFacts(make_config(tmp_path), _stats(backups=backups), NOW, {},
                            str(tmp_path))
    (c,) = [c for c in events.run_conditions(facts) if c.event == "warning"]
    assert c.key == "backups:corrupt_newest:prod" and c.scope == "backups"
    assert c.detail["file"] == "data/prod/backups/architect-20261126.db"


def test_a_dashboard_process_without_its_sqlite_locks_is_a_warning(tmp_path: Path) -> None:
    stats = CleanupStats()
    stats.dashboard_locks = {"lost": [{"database": "/srv/architect/data/prod/architect.db",
                                       "pid": 4242, "command": "gunicorn app:app",
                                       "state": "lost"}], "unknown": [], "unknown_more": 0}
    facts = events.RunFacts(make_config(tmp_path), stats, NOW, {}, str(tmp_path))
    (c,) = [c for c in events.run_conditions(facts) if c.event == "warning"]
    assert c.key == "db_lock_lost:/srv/architect/data/prod/architect.db:4242"
    assert "process 4242 (gunicorn app:app) has lost its SQLite locks" in c.text
    assert c.detail["pid"] == 4242
    # the holder's own "state" never hides whether the warning is new or recovered
    (change,) = events.transitions({}, [c], NOW, lambda _scope: True)
    assert change.to_dict()["state"] == "new"


def test_a_condition_is_news_when_new_changed_or_cleared_only_where_its_target_ran() -> None:
    state: dict[str, object] = {}
    a = events.Condition("target:logs", "failure", "logs failed: EIO", "logs")
    ran_all = lambda _scope: True  # noqa: E731
    assert [c.state for c in events.transitions(state, [a], NOW, ran_all)] == ["new"]
    assert events.transitions(state, [a], NOW + timedelta(hours=1), ran_all) == []
    b = events.Condition("target:logs", "failure", "logs failed: ENOSPC", "logs")
    (changed,) = events.transitions(state, [b], NOW + timedelta(hours=2), ran_all)
    assert changed.state == "changed" and changed.since == NOW.isoformat()
    assert events.transitions(state, [], NOW, lambda scope: scope != "logs") == [], \
        "logs did not run (--only): its failure has not cleared"
    (gone,) = events.transitions(state, [], NOW, ran_all)
    assert gone.state == "recovered"


def test_the_weekly_digest_reads_the_history_and_is_skipped_without_one(
        tmp_path: Path) -> None:
    cfg = make_config(tmp_path, notify={"digest": "weekly"})
    state: dict[str, object] = {}
    assert events.digest_message(cfg, state, str(tmp_path), NOW) is None
    assert state["digest_due"] == (NOW + timedelta(days=7)).isoformat()
    week = NOW + timedelta(days=7)
    assert events.digest_message(cfg, state, str(tmp_path), week) is None, "no history"
    opened = history.open_history(str(tmp_path), now=NOW)
    assert opened.history is not None
    for day in range(1, 4):
        opened.history.import_run(started_at=week + timedelta(days=day),
                                  finished_at=week + timedelta(days=day, minutes=1),
                                  dry_run=False, result="success" if day < 3 else "failed",
                                  stats={"backups_deleted": 2, "space_freed": 3 << 20})
    opened.history.close()
    msg = events.digest_message(cfg, state, str(tmp_path), week + timedelta(days=7))
    assert msg is not None and msg.event == "digest"
    d = msg.body["digest"]
    assert (d["runs"], d["failed_runs"], d["dry_runs"]) == (3, 1, 0)
    assert d["freed_bytes"] == 3 * (3 << 20)
    assert msg.title == "weekly digest: 3 runs, 1 failed, 9.0 MB freed"
