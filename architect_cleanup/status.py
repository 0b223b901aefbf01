"""The status document shared by ``architect-cleanup status --json`` and the REST API.

The seed's keys come first and keep their meaning for the dashboard: ``daemon_running`` is the
timer being active (there is no home-made daemon any more), ``daemon_pid`` the PID of a cleanup
running right now (whoever started it: timer, CLI or API) or None, ``last_run`` and
``last_stats`` the last recorded run. ``next_run``, ``timer_enabled`` and ``last_result`` (the
whole last-run record) follow, then the details ``status`` prints, and ``forecast``: the
fill forecast of each file system after the last run (from state.json, which the run writes
readable for everyone; the history database itself is root only).

Every key keeps one type in every environment (:data:`FIELD_TYPES`): the dashboard's code was
written against the original worker, which always answered ``daemon_running`` with a boolean.
Without a running systemd the timer is not active, so ``daemon_running`` and
``timer_enabled`` are ``false`` there; the ``systemd`` object keeps ``null`` for what could
not be asked, and its ``reason`` says why.
"""

from __future__ import annotations

from typing import Any

from architect_cleanup import systemctl
from architect_cleanup.lock import holder, lock_path
from architect_cleanup.state import StateStore

#: The status document's keys and the types each may take (the seed's five first).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "success": (bool,),
    "daemon_running": (bool,),
    "daemon_pid": (int, type(None)),
    "last_run": (str, type(None)),
    "last_stats": (dict, type(None)),
    "last_result": (dict, type(None)),
    "dashboard_locks": (dict, type(None)),
    "next_run": (str, type(None)),
    "timer_enabled": (bool,),
    "last_trigger": (str, type(None)),
    "service_state": (str, type(None)),
    "systemd": (dict,),
    "state_file": (str,),
    "state_problem": (str, type(None)),
    "warnings": (list,),
    "forecast": (list,),
}


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
        "daemon_running": sd.timer_active is True,
        "daemon_pid": running,
        "last_run": _typed(last, "started_at", str),
        "last_stats": _typed(last, "stats", dict),
        "last_result": last,
        # dashboard processes the last run found without their SQLite locks (dblocks.py)
        "dashboard_locks": _typed(last, "dashboard_locks", dict),
        "next_run": sd.next_run,
        "timer_enabled": sd.timer_enabled is True,
        "last_trigger": sd.last_trigger,
        "service_state": sd.service_state,
        "systemd": sd.to_dict(),
        "state_file": store.path,
        "state_problem": store.problem,
        # the last run's warnings: a corrupt newest backup ("prod: newest backup ... is corrupt")
        "warnings": [w for w in (last or {}).get("warnings", ()) if isinstance(w, str)]
        if isinstance((last or {}).get("warnings"), list) else [],
        "forecast": _forecast(state.get("forecast")),
    }


def _forecast(value: Any) -> list[dict[str, Any]]:
    """The fill forecasts the last run wrote to state.json (each with its ``line``, the
    numbers of :class:`~architect_cleanup.forecast.Forecast`); [] when there are none."""
    if not isinstance(value, list):
        return []
    return [f for f in value if isinstance(f, dict) and isinstance(f.get("line"), str)]


def _typed(record: dict[str, Any] | None, key: str, kind: type) -> Any:
    """*record*[*key*] when it has the type the document promises, else None (a state file
    edited by hand must not change the types a dashboard reads)."""
    value = record.get(key) if record else None
    return value if isinstance(value, kind) else None
