"""The unit files, checked with systemd's own tools, and what their settings must keep.

``systemd-analyze verify`` must print nothing and ``security --offline=true`` must score at
most 2.0 (tests/check_units.py; ``make test`` runs it on the built package as well). The
hardening may not break the product: the service sees the real /tmp, reads every process's
/proc/PID/fd, and may delete files of the dashboard's user."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sd_helpers import REPO, TESTS, check_units

from architect_cleanup.journal import MESSAGE_IDS

SYSTEMD = REPO / "systemd"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (make setup)")


def _unit(name: str) -> dict[str, list[str]]:
    """Section.Key -> values (a key may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unit-root")
    check_units.root_from_repo(root, REPO / ".venv" / "bin" / "architect-cleanup")
    return root


def test_systemd_analyze_verify_prints_nothing(repo_root: Path) -> None:
    assert check_units.verify(repo_root) == ""


def test_verify_would_catch_a_broken_unit_or_a_missing_command(repo_root: Path,
                                                               tmp_path: Path) -> None:
    broken = tmp_path / "root"
    shutil.copytree(repo_root, broken, symlinks=True)
    service = check_units.unit_dir(broken) / check_units.SERVICE
    service.write_text(service.read_text() + "PrivateTmpp=yes\n")
    assert "Unknown key" in check_units.verify(broken)
    service.write_text(service.read_text().replace("PrivateTmpp=yes\n", ""))
    (broken / "usr/bin/architect-cleanup").unlink()
    assert "is not executable" in check_units.verify(broken)


def test_the_service_scores_at_most_2_0_in_systemd_analyze_security() -> None:
    score, report = check_units.security(SYSTEMD / check_units.SERVICE)
    assert score <= check_units.MAX_EXPOSURE, report


def test_the_service_is_a_oneshot_with_notify_state_and_runtime_directories() -> None:
    s = _unit(check_units.SERVICE)
    assert s["Service.Type"] == ["oneshot"]
    assert s["Service.NotifyAccess"] == ["main"]
    assert s["Service.ExecStart"] == ["/usr/bin/architect-cleanup run --scheduled"]
    assert s["Service.StateDirectory"] == ["architect-cleanup"]
    assert s["Service.RuntimeDirectory"] == ["architect-cleanup"]
    assert s["Service.RuntimeDirectoryPreserve"] == ["yes"], "a CLI run may hold the lock"
    assert s["Service.Nice"] == ["19"]
    assert s["Service.IOSchedulingClass"] == ["idle"]
    assert "Install.WantedBy" not in s, "only the timer is enabled"


def test_the_service_writes_only_to_the_data_roots_and_sees_the_real_tmp() -> None:
    s = _unit(check_units.SERVICE)
    assert s["Service.ProtectSystem"] == ["strict"]
    # and the metrics file for node_exporter's textfile collector, when it is installed
    assert s["Service.ReadWritePaths"] == ["-/srv/architect -/tmp",
                                           "-/var/lib/prometheus/node-exporter"]
    assert s.get("Service.PrivateTmp", ["no"]) == ["no"]


def test_the_service_can_see_open_files_and_delete_other_users_files() -> None:
    s = _unit(check_units.SERVICE)
    assert s.get("Service.ProtectProc", ["default"]) == ["default"]
    caps = set(" ".join(s["Service.CapabilityBoundingSet"]).split())
    assert {"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SYS_PTRACE"} <= caps
    # databases are opened as their owner (setfsuid), never chown'ed into shape
    assert {"CAP_SETUID", "CAP_SETGID"} <= caps and "CAP_CHOWN" not in caps
    assert "Service.User" not in s and "Service.DynamicUser" not in s
    assert "Service.PrivateUsers" not in s


def test_every_relaxed_setting_is_explained_in_a_comment() -> None:
    text = (SYSTEMD / check_units.SERVICE).read_text().splitlines()
    for setting in ("PrivateTmp=no", "ProtectProc=default", "CapabilityBoundingSet=",
                    "SystemCallFilter=setfsuid setfsgid"):
        at = next(i for i, line in enumerate(text) if line.startswith(setting))
        comment = []
        for line in reversed(text[:at]):
            if not line.startswith("#"):
                break
            comment.append(line)
        assert any("Relaxed on purpose" in c for c in comment), setting


def test_the_timer_runs_hourly_persistently_with_a_random_delay() -> None:
    t = _unit(check_units.TIMER)
    assert t["Timer.OnCalendar"] == ["hourly"]
    assert t["Timer.Persistent"] == ["true"]
    assert t["Timer.RandomizedDelaySec"] and t["Timer.RandomizedDelaySec"][0] != "0"
    assert t["Install.WantedBy"] == ["timers.target"]


def _catalog_ids() -> list[str]:
    return [line[3:].strip() for line in (SYSTEMD / "architect-cleanup.catalog").read_text()
            .splitlines() if line.startswith("-- ")]


def test_the_catalog_explains_every_message_id_once() -> None:
    ids = _catalog_ids()
    assert sorted(ids) == sorted(u.hex for u in MESSAGE_IDS.values())


def test_journalctl_compiles_the_catalog(tmp_path: Path) -> None:
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed")
    cat = tmp_path / "usr/lib/systemd/catalog"
    cat.mkdir(parents=True)
    shutil.copy2(SYSTEMD / "architect-cleanup.catalog", cat)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True)
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"],
                            check=True, capture_output=True, text=True).stdout
    rows = dict(line.split(" ", 1) for line in listed.splitlines())
    assert set(rows) == {u.hex for u in MESSAGE_IDS.values()}
    assert all(r.startswith("architect-cleanup: ") for r in rows.values())
    summary = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--dump-catalog", MESSAGE_IDS["run_summary"].hex],
        check=True, capture_output=True, text=True).stdout
    assert "Subject: Storage cleanup finished: @CLEANUP_RESULT@" in summary


def test_check_units_script_passes_on_the_repository() -> None:
    proc = subprocess.run([str(REPO / ".venv/bin/python"), str(TESTS / "check_units.py")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "architect-cleanup.service 2.0 <= 2.0" in proc.stdout
    assert "architect-cleanup-api.service" in proc.stdout


def test_the_offload_drop_in_adds_only_network_and_credentials_and_scores_at_most_3_0(
        tmp_path: Path) -> None:
    dropin = (Path(__file__).resolve().parents[2] / "packaging/examples/offload.conf")
    body = dropin.read_text().split("[Service]\n", 1)[1]
    keys = {line.split("=", 1)[0] for line in body.splitlines()
            if line and not line.startswith("#")}
    assert keys == {"PrivateNetwork", "RestrictAddressFamilies", "IPAddressAllow",
                    "LoadCredential"}
    assert "LoadCredential=offload-s3:/etc/architect-cleanup/credentials/s3" in body
    combined = tmp_path / check_units.SERVICE
    combined.write_text((SYSTEMD / check_units.SERVICE).read_text() + body)
    score, report = check_units.security(combined)
    assert score <= 3.0, report


# --- notifications: the units that deliver (the cleanup service itself has no network) -------

NOTIFY_UNITS = (check_units.NOTIFY_SERVICE, check_units.FAILURE_SERVICE)


def test_the_service_queues_notifications_and_hands_them_to_the_notify_units() -> None:
    s = _unit(check_units.SERVICE)
    assert s["Unit.OnFailure"] == ["architect-cleanup-failure@%n.service"]
    assert s["Unit.OnSuccess"] == ["architect-cleanup-notify.service"]
    assert s["Service.Environment"] == ["ARCHITECT_CLEANUP_NOTIFY=queue"]
    assert s["Service.PrivateNetwork"] == ["yes"], "the cleanup itself never reaches the network"


@pytest.mark.parametrize("name", NOTIFY_UNITS)
def test_each_notify_unit_scores_at_most_2_0_in_systemd_analyze_security(name: str) -> None:
    score, report = check_units.security(SYSTEMD / name)
    assert score <= check_units.MAX_EXPOSURE, report


def test_the_failure_unit_reports_the_failed_unit_named_by_its_instance() -> None:
    s = _unit(check_units.FAILURE_SERVICE)
    assert s["Service.ExecStart"] == ["/usr/bin/architect-cleanup notify --unit-failed %i"]
    assert s["Service.Type"] == ["oneshot"]
    assert "Install.WantedBy" not in s, "started by OnFailure=, never enabled"


def test_the_notify_unit_delivers_the_outbox_only_when_it_holds_something() -> None:
    s = _unit(check_units.NOTIFY_SERVICE)
    assert s["Service.ExecStart"] == ["/usr/bin/architect-cleanup notify --deliver"]
    assert s["Unit.ConditionDirectoryNotEmpty"] == ["/var/lib/architect-cleanup/outbox"]
    assert "Install.WantedBy" not in s


@pytest.mark.parametrize("name", NOTIFY_UNITS)
def test_the_notify_units_reach_the_network_and_the_state_directory_only(name: str) -> None:
    s = _unit(name)
    assert s["Service.PrivateNetwork"] == ["no"]
    assert s["Service.RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert s["Service.StateDirectory"] == ["architect-cleanup"]
    assert s["Service.ProtectSystem"] == ["strict"]
    assert s["Service.CapabilityBoundingSet"] == ["CAP_DAC_OVERRIDE"]
    assert s["Service.NoNewPrivileges"] == ["yes"]
    text = (SYSTEMD / name).read_text().splitlines()
    for setting in ("PrivateNetwork=no", "CapabilityBoundingSet=", "ReadWritePaths="):
        at = next(i for i, line in enumerate(text) if line.startswith(setting))
        comment = []
        for line in reversed(text[:at]):
            if not line.startswith("#"):
                break
            comment.append(line)
        assert any("Relaxed on purpose" in c for c in comment), (name, setting)


def test_the_package_installs_the_notify_units_but_enables_only_the_timer() -> None:
    install = (REPO / "packaging/debian/architect-cleanup.install").read_text()
    for name in NOTIFY_UNITS:
        assert f"systemd/{name} lib/systemd/system/" in install
    rules = (REPO / "packaging/debian/rules").read_text()
    line = next(x for x in rules.splitlines() if "dh_installsystemd -parchitect-cleanup " in x)
    assert line.split()[2:] == ["architect-cleanup.timer"]
