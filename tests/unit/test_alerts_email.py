"""E-mail to a real SMTP server on loopback (Debian's aiosmtpd): through ``sendmail -oi -t``
and through SMTP with STARTTLS and a login.

The sendmail path is exercised with a real MTA client: Debian's ``msmtp``, the program behind
msmtp-mta's /usr/sbin/sendmail, given as the channel's ``sendmail`` and configured (its
~/.msmtprc) to relay to the test server; the product runs it exactly as it runs
/usr/sbin/sendmail."""

from __future__ import annotations

import logging
import shutil
from email.message import Message
from pathlib import Path

import pytest
from alerts_kit import journal_kinds, no_secrets_in, outbox_entries, run
from notify_receivers import self_signed, smtp_server

from architect_cleanup import alerts, cli
from architect_cleanup.config import Config

from conftest import make_config

MSMTP = shutil.which("msmtp") or "/usr/bin/msmtp"
PASSWORD = "correct horse battery staple"


def _body(m: Message) -> str:
    payload = m.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


@pytest.fixture
def msmtp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not Path(MSMTP).exists():
        pytest.fail("msmtp is missing: make setup (APT_PACKAGES)")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _msmtprc(home: Path, port: int) -> None:
    rc = home / ".msmtprc"
    rc.write_text(f"account default\nhost 127.0.0.1\nport {port}\nauth off\ntls off\n"
                  "from cleanup@server.example\n")
    rc.chmod(0o600)


def test_without_smtp_mail_goes_through_sendmail_oi_t_to_the_server(
        tmp_path: Path, msmtp_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "architect_cleanup")
    with smtp_server() as box:
        _msmtprc(msmtp_home, box.port)
        cfg = make_config(tmp_path / "srv" / "gone", None, notify={"email": [{
            "to": ["ops@example.org", "oncall@example.org"], "from": "cleanup@server.example",
            "sendmail": MSMTP}]})
        stats = run(cfg)
        (mail,) = box.wait(1)
    assert not stats.success
    assert mail["Subject"].startswith("[architect-cleanup] ")
    assert "failure: backups failed" in mail["Subject"]
    assert mail["To"] == "ops@example.org, oncall@example.org"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert box.envelopes == [("cleanup@server.example",
                              ["ops@example.org", "oncall@example.org"])]
    text = _body(mail)
    assert "[new] backups failed" in text and "Run: Dry run: would free" in text
    assert journal_kinds(caplog) == ["notify_sent"]


def test_a_sendmail_that_fails_keeps_the_message_for_a_retry(tmp_path: Path,
                                                            msmtp_home: Path) -> None:
    _msmtprc(msmtp_home, 9)  # nothing listens on port 9
    cfg = make_config(tmp_path / "srv" / "gone", None, notify={"email": [{
        "to": ["ops@example.org"], "from": "cleanup@server.example", "sendmail": MSMTP}]})
    run(cfg)
    (entry,) = outbox_entries()
    assert entry["attempts"] == 1 and "exited with" in entry["last_error"]


def _smtp_config(tmp_path: Path, port: int, cert: Path, **extra: object) -> Config:
    creds = tmp_path / "smtp.credentials"
    creds.write_text(f"cleanup:{PASSWORD}\n")
    creds.chmod(0o600)
    email = {"to": ["ops@example.org"], "from": "cleanup@server.example",
             "smtp": f"localhost:{port}", "credentials": str(creds), "tls_ca": str(cert),
             "on": ["failure", "warning", "success"]} | extra
    return make_config(tmp_path / "srv" / "gone", None, notify={"email": [email]})


def test_smtp_uses_starttls_and_logs_in_with_the_credentials_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cert, key = self_signed(tmp_path)
    with smtp_server(tls=(cert, key), login=("cleanup", PASSWORD)) as box:
        cfg = _smtp_config(tmp_path, box.port, cert)
        run(cfg)
        (mail,) = box.wait(1)
    assert box.tls == [True] and box.logins == ["cleanup"]
    assert "failure" in mail["Subject"]
    assert outbox_entries() == []
    no_secrets_in(caplog, PASSWORD)


def test_smtp_refuses_a_server_whose_certificate_it_cannot_verify(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")
    with smtp_server(tls=(cert, key), login=("cleanup", PASSWORD)) as box:
        run(_smtp_config(tmp_path, box.port, other))
        assert box.messages == [] and box.logins == []
    (entry,) = outbox_entries()
    assert "CERTIFICATE_VERIFY_FAILED" in entry["last_error"]


def test_without_starttls_the_password_is_never_sent_in_clear(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with smtp_server(tls=(cert, key), login=("cleanup", PASSWORD)) as box:
        run(_smtp_config(tmp_path, box.port, cert, starttls=False))
        assert box.messages == [] and box.logins == []
    (entry,) = outbox_entries()
    assert entry["attempts"] == 1


def test_notify_test_sends_to_one_named_channel(tmp_path: Path, msmtp_home: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with smtp_server() as box:
        _msmtprc(msmtp_home, box.port)
        conf = tmp_path / "config.toml"
        conf.write_text(f'root = "{tmp_path}"\n'
                        '[[notify.email]]\nname = "ops"\nto = ["ops@example.org"]\n'
                        f'from = "cleanup@server.example"\nsendmail = "{MSMTP}"\n'
                        '[[notify.webhook]]\nurl = "http://127.0.0.1:9/x"\n'
                        f'secret = "{tmp_path}/nope"\n')
        assert cli.main(["--config", str(conf), "notify", "--test", "ops"]) == 0
        (mail,) = box.wait(1)
        assert "test message" in mail["Subject"]
        assert capsys.readouterr().out == "ops: sent\n"
        assert cli.main(["--config", str(conf), "notify", "--test"]) == 1
        out = capsys.readouterr().out
        assert "ops: sent\n" in out and "webhook1: FAILED: " in out
        assert cli.main(["--config", str(conf), "notify", "--test", "nope"]) == 2
        assert "no channel 'nope' (channels: ops, webhook1)" in capsys.readouterr().err
    assert outbox_entries() == [], "a test message does not wait in the outbox"


def test_a_failed_unit_that_could_not_report_is_announced_once_with_its_journal(
        tmp_path: Path, msmtp_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with smtp_server() as box:
        _msmtprc(msmtp_home, box.port)
        conf = tmp_path / "config.toml"
        conf.write_text(f'root = "{tmp_path}"\n[[notify.email]]\nto = ["ops@example.org"]\n'
                        f'from = "cleanup@server.example"\nsendmail = "{MSMTP}"\n')
        unit = "architect-cleanup.service"
        assert cli.main(["--config", str(conf), "notify", "--unit-failed", unit]) == 0
        (mail,) = box.wait(1)
        assert cli.main(["--config", str(conf), "notify", "--unit-failed", unit]) == 0
    assert len(box.messages) == 1, "the same failure again is not news"
    assert f"failure: {unit} failed" in mail["Subject"]
    assert "Last journal lines:" in _body(mail)
    out = capsys.readouterr().out
    assert "failure message queued; 1 sent" in out


def test_a_unit_whose_run_reported_itself_is_not_announced_twice(
        tmp_path: Path, msmtp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup.state import StateStore
    StateStore().record({"invocation_id": "0123456789abcdef0123456789abcdef",
                         "result": "failed"})
    monkeypatch.setattr(alerts, "_unit_properties",
                        lambda unit: {"InvocationID": "0123456789abcdef0123456789abcdef",
                                      "Result": "exit-code"})
    cfg = make_config(tmp_path, None, notify={"email": [{
        "to": ["ops@example.org"], "from": "cleanup@server.example", "sendmail": MSMTP}]})
    queued, done = alerts.unit_failed(cfg, "architect-cleanup.service",
                                      str(Path(StateStore().directory)))
    assert not queued and done.sent == 0 and outbox_entries() == []
