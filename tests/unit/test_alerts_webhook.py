"""Signed webhooks from real runs to a real receiver on loopback, which verifies every
delivery with the independent ``standardwebhooks`` package and refuses replays and stale
timestamps; 500, 410 and a hang exercise the outbox."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alerts_kit import (
    journal_kinds,
    last_run,
    no_secrets_in,
    outbox_entries,
    run,
    secret_file,
    webhook_config,
)
from notify_receivers import SECRET, post, webhook_receiver

from architect_cleanup import alerts
from architect_cleanup.alerts import signing
from architect_cleanup.state import state_dir

from conftest import NOW
from demo import build_tree


@pytest.fixture
def missing_root(tmp_path: Path) -> Path:
    return tmp_path / "srv" / "gone"


def test_a_failed_run_posts_one_signed_failure_message_with_the_runs_json_object(
        tmp_path: Path, missing_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "architect_cleanup")
    with webhook_receiver() as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path))
        stats = run(cfg)
    assert not stats.success and rec.rejected == []
    (d,) = rec.accepted
    body = json.loads(d.body)
    assert body["event"] == "failure" and body["type"] == "architect-cleanup.failure"
    assert body["host"] == socket.gethostname()
    assert body["run"] == json.loads(json.dumps(stats.to_dict()))  # the `run --json` object
    keys = {c["key"] for c in body["conditions"]}
    assert {"target:backups", "target:logs", "target:temp"} <= keys
    assert all(c["state"] == "new" for c in body["conditions"])
    assert d.headers["webhook-id"].startswith("msg_")
    assert d.headers["webhook-signature"].startswith("v1,")
    assert last_run()["result"] == "failed", "the record is the run's, before any delivery"
    assert journal_kinds(caplog) == ["notify_sent"]
    assert outbox_entries() == []
    no_secrets_in(caplog, SECRET, SECRET[len("whsec_"):])


def test_the_same_failure_is_announced_once_and_again_when_it_recovers(
        tmp_path: Path, missing_root: Path) -> None:
    with webhook_receiver() as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path))
        run(cfg)
        run(cfg, NOW + timedelta(hours=1))
        run(cfg, NOW + timedelta(hours=2))
        assert len(rec.accepted) == 1, "an hourly repeat is not news"
        (missing_root / "data").mkdir(parents=True)
        stats = run(cfg, NOW + timedelta(hours=3))
    assert stats.success
    assert len(rec.accepted) == 2
    body = rec.accepted[1].payload
    assert body["event"] == "failure" and body["title"].startswith("recovered: ")
    assert {c["state"] for c in body["conditions"]} == {"recovered"}
    assert {c["since"] for c in body["conditions"]} == {NOW.isoformat()}


def test_success_goes_only_to_channels_that_ask_for_it(tmp_path: Path, srv: Path) -> None:
    with webhook_receiver() as quiet, webhook_receiver() as chatty:
        s = secret_file(tmp_path)
        cfg = webhook_config(srv, None, quiet.url, s, notify={"webhook": [
            {"url": quiet.url, "secret": str(s)},
            {"url": chatty.url, "secret": str(s), "on": ["success"], "name": "chatty"}]})
        stats = run(cfg)
    assert stats.success and quiet.accepted == []
    (d,) = chatty.accepted
    assert d.payload["event"] == "success"
    assert d.payload["title"] == stats.summary_line()


def test_a_receiver_answering_500_gets_the_same_message_again_after_the_backoff(
        tmp_path: Path, missing_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "architect_cleanup")
    with webhook_receiver(mode="500") as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path))
        stats = run(cfg)
        assert rec.answered == [500]
        assert not stats.success and last_run()["result"] == "failed"
        (entry,) = outbox_entries()
        assert entry["attempts"] == 1 and entry["last_error"] == "HTTP 500"
        assert entry["next_at"] == (NOW + timedelta(seconds=60)).timestamp()
        rec.mode = "ok"
        early = alerts.deliver(cfg, state_dir(), now=NOW + timedelta(seconds=30))
        assert (early.sent, early.waiting, rec.answered) == (0, 1, [500])
        done = alerts.deliver(cfg, state_dir(), now=NOW + timedelta(seconds=61))
    assert done.sent == 1 and rec.answered == [500, 200]
    assert rec.accepted[0].headers["webhook-id"] == entry["message"]["id"], \
        "a retry keeps its webhook-id, so a receiver can drop duplicates"
    assert outbox_entries() == []
    assert journal_kinds(caplog) == ["notify_failed", "notify_sent"]


def test_the_backoff_doubles_up_to_six_hours() -> None:
    from architect_cleanup.alerts.outbox import backoff
    assert [backoff(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff(30) == 6 * 3600


def test_a_message_undelivered_for_three_days_is_given_up_with_a_journal_entry(
        tmp_path: Path, missing_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "architect_cleanup")
    with webhook_receiver(mode="500") as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path))
        run(cfg)
        alerts.deliver(cfg, state_dir(), now=NOW + timedelta(days=2, hours=23))
        assert len(outbox_entries()) == 1
        gave_up = alerts.deliver(cfg, state_dir(), now=NOW + timedelta(days=3, seconds=1))
    assert gave_up.dropped == 1 and outbox_entries() == []
    assert journal_kinds(caplog) == ["notify_failed", "notify_failed", "notify_dropped"]
    assert rec.answered == [500, 500]


def test_a_receiver_that_hangs_costs_one_timeout_and_the_message_waits(
        tmp_path: Path, missing_root: Path) -> None:
    with webhook_receiver(mode="hang", hang_s=4) as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path),
                             notify={"timeout": "1s"})
        stats = run(cfg)
    assert not stats.success and last_run()["result"] == "failed"
    (entry,) = outbox_entries()
    assert "timed out" in entry["last_error"]


def test_410_gone_disables_the_webhook_until_its_configuration_changes(
        tmp_path: Path, missing_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "architect_cleanup")
    secret = secret_file(tmp_path)
    with webhook_receiver(mode="410") as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret)
        run(cfg)
        assert rec.answered == [410] and outbox_entries() == []
        rec.mode = "ok"
        (missing_root / "data").mkdir(parents=True)
        run(cfg, NOW + timedelta(hours=1))  # "recovered": news, but the webhook is gone
        assert rec.answered == [410]
        changed = webhook_config(missing_root, None, rec.url, secret,
                                 hook={"on": ["failure", "warning", "success"]})
        run(changed, NOW + timedelta(hours=2))
    assert rec.answered == [410, 200]
    assert rec.accepted[0].payload["event"] == "success"
    assert journal_kinds(caplog) == ["notify_failed", "notify_dropped", "notify_dropped",
                                     "notify_sent"]


def test_the_outbox_is_bounded_dropping_the_oldest(tmp_path: Path, missing_root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "MAX_ENTRIES", 2)
    monkeypatch.setenv(alerts.MODE_VAR, "queue")
    cfg = webhook_config(missing_root, None, "http://127.0.0.1:9/x", secret_file(tmp_path))
    run(cfg)
    (missing_root / "data").mkdir(parents=True)
    run(cfg, NOW + timedelta(hours=1))
    shutil.rmtree(missing_root)
    run(cfg, NOW + timedelta(hours=2))
    titles = [e["message"]["title"] for e in outbox_entries()]
    assert len(titles) == 2, "the first failure message went"
    assert titles[0].startswith("recovered: ") and titles[1].startswith("failure: ")


def test_in_the_service_the_run_only_queues_and_notify_deliver_sends(
        tmp_path: Path, missing_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup import cli
    monkeypatch.setenv(alerts.MODE_VAR, "queue")
    with webhook_receiver() as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path))
        run(cfg, datetime.now(UTC))  # `notify --deliver` runs on the real clock
        assert rec.answered == [] and len(outbox_entries()) == 1
        conf = tmp_path / "config.toml"
        conf.write_text(f'root = "{missing_root}"\n[[notify.webhook]]\nurl = "{rec.url}"\n'
                        f'secret = "{tmp_path / "credentials" / "webhook.secret"}"\n')
        assert cli.main(["--config", str(conf), "notify", "--deliver"]) == 0
    assert len(rec.accepted) == 1 and outbox_entries() == []


def test_a_torn_outbox_file_is_set_aside_and_the_rest_delivered(
        tmp_path: Path, missing_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(alerts.MODE_VAR, "queue")
    with webhook_receiver() as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path))
        run(cfg)
        box = Path(state_dir()) / "outbox"
        (box / "00000000000000000001-webhook1-msg_torn.json").write_bytes(b'{"channel": "we')
        (box / ".tmp-leftover").write_bytes(b"half")
        done = alerts.deliver(cfg, state_dir(), now=NOW)
    assert done.sent == 1 and len(rec.accepted) == 1
    assert sorted(p.name for p in box.iterdir()) == [
        ".00000000000000000001-webhook1-msg_torn.json.corrupt"]


def test_a_secret_readable_by_others_is_refused_and_never_sent(
        tmp_path: Path, missing_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "architect_cleanup")
    with webhook_receiver() as rec:
        cfg = webhook_config(missing_root, None, rec.url, secret_file(tmp_path, mode=0o644))
        stats = run(cfg)
    assert rec.answered == [] and not stats.success
    assert journal_kinds(caplog) == ["notify_failed", "notify_dropped"]
    assert "readable by others" in caplog.text
    no_secrets_in(caplog, SECRET)


def test_a_secret_passed_by_load_credential_is_read_from_the_credentials_directory(
        tmp_path: Path, missing_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook.secret").write_text(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with webhook_receiver() as rec:
        cfg = webhook_config(missing_root, None, rec.url,
                             tmp_path / "not-there" / "webhook.secret")
        run(cfg)
    assert len(rec.accepted) == 1


def test_the_receiver_refuses_a_replay_a_stale_timestamp_and_a_wrong_secret() -> None:
    body = b'{"event":"failure"}'
    with webhook_receiver() as rec:
        import time
        now = int(time.time())
        good = signing.headers(SECRET, "msg_a", now, body)
        assert post(rec.url, good, body) == 200
        assert post(rec.url, good, body) == 409, "a replay"
        assert post(rec.url, signing.headers(SECRET, "msg_b", now - 600, body), body) == 401
        other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
        assert post(rec.url, signing.headers(other, "msg_c", now, body), body) == 401
        tampered = signing.headers(SECRET, "msg_d", now, body)
        assert post(rec.url, tampered, body.replace(b"failure", b"success")) == 401
    assert len(rec.accepted) == 1


def test_a_secret_without_whsec_prefix_is_refused() -> None:
    with pytest.raises(signing.BadSecret, match="whsec_"):
        signing.sign("s3cret", "msg_1", 1, b"{}")


def test_a_free_space_floor_stopped_at_keep_min_warns_with_the_specifics(
        tmp_path: Path) -> None:
    root, tmp = tmp_path / "srv" / "architect", tmp_path / "tmp"
    build_tree(root, tmp, now=NOW.timestamp(), databases=False)
    with webhook_receiver() as rec:
        cfg = webhook_config(root, tmp, rec.url, secret_file(tmp_path), backups={
            "policy": {"prod": {"keep_last": 12, "min_free_space": "99.9%", "keep_min": 2}}})
        stats = run(cfg)
        run(cfg, NOW + timedelta(hours=1))
    assert stats.success
    (d,) = rec.accepted
    assert d.payload["event"] == "warning"
    (c,) = d.payload["conditions"]
    assert c["key"] == "free_space:prod" and c["state"] == "new"
    assert c["free_space"]["stopped_at_keep_min"] is True
    assert c["free_space"]["free_bytes"] > 0 and "forecast" in c


def test_a_configuration_still_dry_running_after_the_limit_warns_once(
        tmp_path: Path, srv: Path) -> None:
    with webhook_receiver() as rec:
        cfg = webhook_config(srv, None, rec.url, secret_file(tmp_path),
                             notify={"dry_run_warning": "7d"})
        run(cfg)
        run(cfg, NOW + timedelta(days=6))
        assert rec.accepted == []
        run(cfg, NOW + timedelta(days=7))
        run(cfg, NOW + timedelta(days=8))
    (d,) = rec.accepted
    (c,) = d.payload["conditions"]
    assert c["key"] == "dry_run" and c["dry_run_since"] == NOW.isoformat()


def test_delivery_comes_after_the_record_and_never_changes_the_exit_code(
        tmp_path: Path, srv: Path) -> None:
    from architect_cleanup import cli
    from architect_cleanup.state import StateStore
    recorded_first: list[bool] = []

    def check(payload: dict[str, object]) -> None:
        run_doc = payload["run"]
        assert isinstance(run_doc, dict)
        last = StateStore().load()["last_run"] or {}
        recorded_first.append(last.get("started_at") == run_doc["started_at"])

    with webhook_receiver(mode="500", on_receive=check) as rec:
        conf = tmp_path / "config.toml"
        conf.write_text(f'root = "{srv}"\n[logs]\ntmp_dir = ""\n[[notify.webhook]]\n'
                        f'url = "{rec.url}"\nsecret = "{secret_file(tmp_path)}"\n'
                        'on = ["success"]\n')
        assert cli.main(["--config", str(conf), "run", "--force"]) == 0
    assert rec.answered == [500] and recorded_first == [True]
    assert last_run()["result"] == "success"
    assert len(outbox_entries()) == 1
