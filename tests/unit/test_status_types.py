"""The status document keeps one type per key in every environment (the dashboard's code was
written against the original worker, whose ``daemon_running`` was always a boolean).

Pinned for both doors: ``architect-cleanup status --json`` and the API's GET status, before any
run, after one, with a run in progress, and with a state file edited into odd shapes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from gunicorn_server import STATUS, Site

from architect_cleanup import cli
from architect_cleanup.api import cleanup_blueprint
from architect_cleanup.lock import RunLock
from architect_cleanup.status import FIELD_TYPES

#: The types, written out here: a change to status.FIELD_TYPES must change this test too.
PINNED: dict[str, tuple[type, ...]] = {
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


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    for key, value in s.env().items():
        monkeypatch.setenv(key, value)
    return s


def from_cli() -> dict[str, Any]:
    out = io.StringIO()
    assert cli.main(["status", "--json"], out=out) == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def from_api() -> dict[str, Any]:
    app = Flask("dashboard")
    app.register_blueprint(cleanup_blueprint())
    r = app.test_client().get(STATUS)
    assert r.status_code == 200
    doc: dict[str, Any] = r.get_json()
    return doc


DOORS = {"cli": from_cli, "api": from_api}


def check_types(doc: dict[str, Any]) -> None:
    assert set(doc) == set(PINNED), "every status key has its types pinned here"
    for key, types in PINNED.items():
        value = doc[key]
        assert isinstance(value, types), f"{key} = {value!r} is not {types}"
        if bool not in types:
            assert not isinstance(value, bool), f"{key} = {value!r}: a bool is not an int"


def test_the_pinned_types_are_the_modules_own() -> None:
    assert dict(FIELD_TYPES) == PINNED


@pytest.mark.parametrize("door", DOORS)
def test_before_any_run_every_key_has_its_type(site: Site, door: str) -> None:
    doc = DOORS[door]()
    check_types(doc)
    assert doc["last_run"] is None and doc["last_stats"] is None
    if not os.path.isdir("/run/systemd/system"):
        # no systemd: the timer cannot be active, and the reason says why
        assert doc["daemon_running"] is False and doc["timer_enabled"] is False
        assert doc["systemd"]["reason"]


@pytest.mark.parametrize("door", DOORS)
def test_after_a_run_and_during_one_every_key_has_its_type(site: Site, door: str) -> None:
    assert cli.main(["run"], out=io.StringIO()) == 0
    doc = DOORS[door]()
    check_types(doc)
    assert doc["last_stats"]["backups_deleted"] > 0
    with RunLock(str(site.run / "cleanup.lock")):
        doc = DOORS[door]()
    check_types(doc)
    assert doc["daemon_pid"] == os.getpid()


ODD_STATES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "started_at is a number": lambda run: run.update(started_at=1732600800),
    "stats is a list": lambda run: run.update(stats=[1, 2]),
    "stats is missing": lambda run: run.pop("stats"),
}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("odd", ODD_STATES)
def test_a_state_file_edited_by_hand_does_not_change_a_type(site: Site, door: str,
                                                             odd: str) -> None:
    assert cli.main(["run"], out=io.StringIO()) == 0
    path = site.state / "state.json"
    doc = json.loads(path.read_text())
    ODD_STATES[odd](doc["last_run"])
    path.write_text(json.dumps(doc))
    check_types(DOORS[door]())


@pytest.mark.parametrize("door", DOORS)
def test_a_corrupt_state_file_leaves_every_type_in_place(site: Site, door: str) -> None:
    site.state.mkdir(exist_ok=True)
    (site.state / "state.json").write_text("{not json")
    doc = DOORS[door]()
    check_types(doc)
    assert doc["state_problem"]
