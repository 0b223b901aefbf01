"""The REST API's units: a loopback socket, and a gunicorn service hardened like the cleanup.

``systemd-analyze verify`` of all four units is in test_units.py (check_units verifies every
unit it finds); here: the API service's exposure score (at most 2.5), and the settings the API
depends on — socket activation, the credential, and the cleanup service's lock, state and
rights, so that a run through the API is the same run as the timer's."""

from __future__ import annotations

import shutil

import pytest
from sd_helpers import REPO, check_units

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


def test_the_api_service_scores_at_most_2_5_in_systemd_analyze_security() -> None:
    score, report = check_units.security(SYSTEMD / check_units.API_SERVICE)
    assert score <= 2.5, report
    assert check_units.MAX_EXPOSURES[check_units.API_SERVICE] == 2.5


def test_the_socket_listens_on_loopback_port_8787_only() -> None:
    s = _unit(check_units.API_SOCKET)
    assert s["Socket.ListenStream"] == ["127.0.0.1:8787"]
    assert s["Socket.IPAddressAllow"] == ["localhost"]
    assert s["Socket.IPAddressDeny"] == ["any"]
    assert "Socket.Accept" not in s, "one gunicorn gets the listening socket"
    assert s["Install.WantedBy"] == ["sockets.target"]


def test_the_service_runs_gunicorn_socket_activated_with_the_token_credential() -> None:
    s = _unit(check_units.API_SERVICE)
    assert s["Service.ExecStart"] == [
        "/usr/bin/gunicorn --config python:architect_cleanup.gunicorn_conf"]
    assert s["Unit.Requires"] == [check_units.API_SOCKET]
    assert s["Service.Type"] == ["notify"]  # gunicorn's arbiter sends READY=1
    assert s["Service.NotifyAccess"] == ["main"]
    assert s["Service.LoadCredential"] == ["token:/etc/architect-cleanup/api-token"]
    assert s["Service.KillMode"] == ["mixed"]
    assert "Install.WantedBy" not in s, "started by its socket, never enabled on its own"


def test_the_service_shares_the_cleanups_lock_state_and_rights() -> None:
    api, core = _unit(check_units.API_SERVICE), _unit(check_units.SERVICE)
    for key in ("Service.StateDirectory", "Service.RuntimeDirectory",
                "Service.RuntimeDirectoryPreserve",
                "Service.ProtectSystem", "Service.ProtectHome", "Service.PrivateTmp",
                "Service.CapabilityBoundingSet", "Service.SystemCallFilter",
                "Service.Nice", "Service.IOSchedulingClass", "Service.UMask"):
        assert api[key] == core[key], key
    assert api["Service.RuntimeDirectory"] == ["architect-cleanup"]  # the run lock's home
    # and the panel's drop-in directory, nothing else of /etc
    assert api["Service.ReadWritePaths"] == [*core["Service.ReadWritePaths"],
                                             "-/etc/architect-cleanup/config.d"]
    assert api["Service.RuntimeDirectoryPreserve"] == ["yes"]


def test_the_service_needs_no_network_of_its_own() -> None:
    s = _unit(check_units.API_SERVICE)
    assert s["Service.PrivateNetwork"] == ["yes"]  # the socket comes from systemd
    assert s["Service.RestrictAddressFamilies"] == ["AF_UNIX"]
    assert s["Service.IPAddressDeny"] == ["any"]


def test_the_service_may_read_proc_locks_for_the_running_pid() -> None:
    s = _unit(check_units.API_SERVICE)
    assert s.get("Service.ProcSubset", ["all"]) == ["all"], "status reads /proc/locks"
    assert s.get("Service.ProtectProc", ["default"]) == ["default"]


def test_every_relaxed_setting_of_the_api_service_is_explained_in_a_comment() -> None:
    text = (SYSTEMD / check_units.API_SERVICE).read_text().splitlines()
    for setting in ("PrivateTmp=no", "ProtectProc=default", "CapabilityBoundingSet=",
                    "SystemCallFilter=setfsuid setfsgid"):
        at = next(i for i, line in enumerate(text) if line.startswith(setting))
        comment = []
        for line in reversed(text[:at]):
            if not line.startswith("#"):
                break
            comment.append(line)
        assert any("Relaxed on purpose" in c for c in comment), setting
