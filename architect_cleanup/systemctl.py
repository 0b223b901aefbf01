"""The timer and service as systemd sees them (``systemctl show``), and enabling the timer.

Without a running systemd (a container build host, a chroot) every field is None and
``reason`` says why; nothing here raises for that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

TIMER = "architect-cleanup.timer"
SERVICE = "architect-cleanup.service"
_TIMEOUT = 10


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
    return os.path.isdir("/run/systemd/system")


def _unavailable_reason() -> str | None:
    if shutil.which("systemctl") is None:
        return "systemctl is not installed"
    if not systemd_running():
        return "systemd is not running on this machine (PID 1 is not systemd)"
    return None


TIMER_PROPERTIES = ("LoadState", "UnitFileState", "ActiveState", "NextElapseUSecRealtime",
                    "LastTriggerUSec")
SERVICE_PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "MainPID")


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show`` output (``Key=value`` lines) as a dict."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = value
    return result


def show(unit: str, *props: str) -> dict[str, str]:
    """``systemctl show UNIT -p …`` as a dict.

    Timestamps come as ``Thu 2026-11-26 07:11:08 UTC`` (systemd 252 ignores ``--timestamp=``
    in ``show``), so systemctl runs with TZ=UTC and the C locale: see :func:`_timestamp`."""
    env = dict(os.environ, TZ="UTC", LC_ALL="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    out = subprocess.run(
        ["systemctl", "show", "--timestamp=unix", unit, *(f"--property={p}" for p in props)],
        capture_output=True, text=True, timeout=_TIMEOUT, check=True, env=env).stdout
    return parse_show(out)


def _timestamp(value: str | None) -> str | None:
    """A ``systemctl show`` timestamp as ISO 8601 UTC; empty, zero or unknown -> None.

    Accepts ``Thu 2026-11-26 07:11:08 UTC`` (systemd 252 with TZ=UTC) and ``@1732600800``
    (``--timestamp=unix``, honoured by later systemd versions)."""
    if not value or value in ("n/a", "0"):
        return None
    if value.startswith("@"):
        try:
            secs = float(value[1:])
        except ValueError:
            return None
        if secs <= 0:
            return None
        return datetime.fromtimestamp(secs, UTC).isoformat(timespec="seconds")
    try:
        dt = datetime.strptime(value, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    except ValueError:
        return None
    return dt.isoformat(timespec="seconds")


@dataclass
class SystemdStatus:
    timer_enabled: bool | None = None
    timer_active: bool | None = None
    next_run: str | None = None
    last_trigger: str | None = None
    service_state: str | None = None
    service_result: str | None = None
    service_pid: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status() -> SystemdStatus:
    """What systemd says about the timer and the service right now."""
    reason = _unavailable_reason()
    if reason:
        return SystemdStatus(reason=reason)
    try:
        timer = show(TIMER, *TIMER_PROPERTIES)
        service = show(SERVICE, *SERVICE_PROPERTIES)
    except (OSError, subprocess.SubprocessError) as exc:
        return SystemdStatus(reason=f"systemctl show failed: {exc}")
    return from_properties(timer, service)


def from_properties(timer: dict[str, str], service: dict[str, str]) -> SystemdStatus:
    """The status from ``systemctl show`` properties of the timer and the service."""
    if timer.get("LoadState") == "not-found":
        return SystemdStatus(reason=f"{TIMER} is not installed")
    pid_text = service.get("MainPID", "0")
    pid = int(pid_text) if pid_text.isdigit() else 0
    return SystemdStatus(
        timer_enabled=timer.get("UnitFileState") in ("enabled", "enabled-runtime"),
        timer_active=timer.get("ActiveState") == "active",
        next_run=_timestamp(timer.get("NextElapseUSecRealtime")),
        last_trigger=_timestamp(timer.get("LastTriggerUSec")),
        service_state=service.get("ActiveState"),
        service_result=service.get("Result"),
        service_pid=pid or None,
    )


def set_timer(enable: bool) -> tuple[bool, str]:
    """``systemctl enable --now`` / ``disable --now`` the timer; (ok, message)."""
    reason = _unavailable_reason()
    if reason:
        return False, reason
    verb = "enable" if enable else "disable"
    proc = subprocess.run(["systemctl", verb, "--now", TIMER], capture_output=True, text=True,
                          timeout=_TIMEOUT * 3, check=False)
    if proc.returncode != 0:
        return False, (proc.stderr.strip() or f"systemctl {verb} failed")
    return True, f"{TIMER} {verb}d" + (" and started" if enable else " and stopped")
