"""Property: arbitrary JSON thrown at the real POST endpoint under gunicorn.

It never answers 500; it accepts exactly the bodies the contract allows (and names exactly the
offending keys of the others); and it never runs a real cleanup unless ``dry_run`` is
literally ``false`` — checked three ways: the response, the recorded run history, and bait
files (an old log and an old temp file planted before every request) that any real run
over the logs and temp targets would remove.
"""

from __future__ import annotations

import json
import os
import time
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from api_bodies import bodies, is_real_run, offending_keys
from gunicorn_server import API, Server, Site
from hypothesis import event, given, settings

from architect_cleanup.targets import ordered

DAY = 86400
TARGETS = ordered()  # the server imports the same package: the same registered targets


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    site = Site(tmp_path_factory.mktemp("property")).build()
    with Server(site) as srv:
        yield srv


def plant_bait(server: Server, n: int) -> list[Path]:
    now = time.time()
    old_log = server.site.root / "logs" / f"bait_{n}.log"
    old_tmp = server.site.root / "data" / f"bait_{n}.tmp"
    for path, age in ((old_log, 400 * DAY), (old_tmp, 3 * DAY)):
        path.write_bytes(b"bait")
        os.utime(path, (now - age, now - age))
    return [old_log, old_tmp]


_examples = count()


@settings(max_examples=200, deadline=None)
@given(doc=bodies(TARGETS))
def test_arbitrary_json_never_gets_500_and_never_cleans_unless_dry_run_is_false(
        server: Server, doc: Any) -> None:
    bait = plant_bait(server, next(_examples))
    runs_before = len(server.site.state_doc()["history"])
    raw = json.dumps(doc).encode()  # NaN/Infinity come out as such: not JSON, must be 400
    r = server.request("POST", API, raw, token=server.site.token,
                       headers={"Content-Type": "application/json"})
    history = server.site.state_doc()["history"]
    expected = offending_keys(doc, TARGETS)

    assert r.status in (200, 400), (r.status, r.body)
    answer = r.json()
    event(f"{r.status} {'real' if is_real_run(doc) else 'dry'}")
    if r.status == 400:
        assert answer["invalid_keys"] == expected
        assert answer["success"] is False
        assert len(history) == runs_before  # nothing ran
        assert all(p.exists() for p in bait)
        return
    assert expected == [], f"accepted an invalid body: {answer}"
    real = is_real_run(doc)
    assert answer["dry_run"] is (not real)
    assert len(history) == runs_before + 1
    assert history[-1]["dry_run"] is (not real)
    if not real:
        assert all(p.exists() for p in bait), "a dry run removed a file"
