"""The status document shared by ``architect-cleanup status --json`` and the REST API.

The seed's keys come first and keep their meaning for the dashboard: ``daemon_running`` is the
timer being active (there is no home-made daemon any more), ``daemon_pid`` the PID of a cleanup
running right now (whoever started it: timer, CLI or API) or None, ``last_run`` and
``last_stats`` the last recorded run. ``next_run``, ``timer_enabled`` and ``last_result`` (the
whole last-run record) follow, then the details ``status`` prints.
"""

from __future__ import annotations

from typing import Any

from architect_cleanup import systemctl
from architect_cleanup.lock import holder, lock_path
from architect_cleanup.state import StateStore


def status_doc() -> dict[str, Any]:
    """Last run (state file), timer (systemctl show) and a run in progress (the lock)."""
    store = StateStore()
    state = store.load()
    last = state.get("last_run") if isinstance(state.get("last_run"), dict) else None
    sd = systemctl.status()
    # The lock holder covers CLI and API runs too; the service's MainPID a run under systemd.
    running = holder(lock_path()) or sd.service_pid
    return {
        "success": True,
        "daemon_running": sd.timer_active,
        "daemon_pid": running,
        "last_run": last.get("started_at") if last else None,
        "last_stats": last.get("stats") if last else None,
        "last_result": last,
        # dashboard processes the last run found without their SQLite locks (dblocks.py)
        "dashboard_locks": last.get("dashboard_locks") if last else None,
        "next_run": sd.next_run,
        "timer_enabled": sd.timer_enabled,
        "last_trigger": sd.last_trigger,
        "service_state": sd.service_state,
        "systemd": sd.to_dict(),
        "state_file": store.path,
        "state_problem": store.problem,
    }
