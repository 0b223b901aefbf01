"""The lost-POSIX-lock hazard, end to end: a dashboard that copied its own live database at
start (``shutil.copy2``) holds no lock on it any more; a real run purging tens of thousands of
rows must still never unlink its ``-wal``/``-shm``, fail one of its writes or lose a row it
acknowledged (see architect_cleanup/dblocks.py).

The writer is tests/wal_writer.py (WAL, a pool of connections used by threads, the copy at
start), one per database: the dashboard's and the assigner's. The run is the real CLI in its
own process, or the API under gunicorn (the cleanup runs inside the API process). The same CLI
run with the guard switched off (``dblocks.PROTECT``, set in the run's own process) must show
the damage: the test can fail.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from wal_writer import Writer, WriterReport

import kit
from conftest import needs_root
from kit import FIGURES, Arena

NOW = time.time()
HERE = Path(__file__).resolve().parent
TASKS, ERRORS, PROMPTS = kit.scale(30_000, 200_000), kit.scale(10_000, 50_000), 5_000

#: The CLI with the guard switched off in its own process (test-only switch).
_UNGUARDED = ("import sys\n"
              "import architect_cleanup.dblocks as d\n"
              "d.PROTECT = False\n"
              "from architect_cleanup.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")


def _run_cli(arena: Arena) -> dict[str, Any]:
    code, doc = kit.run_json(arena, "--force", "--only", "tasks,errors,prompts", timeout=900)
    assert code == 0, doc
    return doc


def _run_unguarded(arena: Arena) -> str:
    """The CLI run with the guard off. What becomes of the run itself is not asserted: it
    shares the databases with a writer whose WAL it unlinks, and may fail or lose its own
    deletes too. Returns its exit status, for the figures."""
    proc = subprocess.run([kit.VENV_PY, "-c", _UNGUARDED, "run", "--json", "--force",
                           "--only", "tasks,errors,prompts"], env=arena.env(),
                          capture_output=True, text=True, timeout=900, check=False, cwd="/")
    return f"exit {proc.returncode}"


def _run_api(arena: Arena) -> dict[str, Any]:
    from gunicorn_server import Server, Site
    site = Site(arena.base, token=secrets.token_hex(32))
    site.creds.mkdir(mode=0o700, exist_ok=True)
    (site.creds / "token").write_text(site.token + "\n")
    (site.creds / "token").chmod(0o600)
    with Server(site, env=site.env()) as server:
        r = server.post_json({"dry_run": False, "targets": ["tasks", "errors", "prompts"]},
                             timeout=900)
        log = server.log()
    assert r.status == 200, (r.body[:2000], log[-3000:])
    doc: dict[str, Any] = r.json()
    assert "Traceback" not in log, log[-5000:]
    return doc


@needs_root
@pytest.mark.parametrize("how", ["cli", "api", "cli-guard-off"])
def test_a_dashboard_that_lost_its_locks_keeps_every_write_through_a_real_purge(
        arena: Arena, how: str) -> None:
    main = arena.root / "data" / "prod" / "architect.db"
    assigner = arena.root / "data" / "assigner" / "assigner.db"
    kit.make_main_db(main, NOW, doomed=TASKS, keep=500, errors_doomed=ERRORS, errors_keep=100)
    kit.make_assigner_db(assigner, NOW, doomed=PROMPTS, keep=100)
    arena.write_config(environments=["prod"], database={"busy_timeout": "30s"})
    writers = [Writer(main, arena.base / "main.json"),
               Writer(assigner, arena.base / "assigner.json")]
    reports: list[WriterReport] = []
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        if how == "cli-guard-off":
            unguarded = _run_unguarded(arena)
        else:
            doc = _run_api(arena) if how == "api" else _run_cli(arena)
        took = time.monotonic() - t0
        time.sleep(0.3)  # the dashboard goes on writing after the run
    finally:
        for w in writers:
            try:
                reports.append(w.stop())
            finally:
                w.kill()
    FIGURES.attack(f"writers that lost their locks ({how})", len(writers))
    for name, rep in zip(("dashboard", "assigner"), reports, strict=True):
        FIGURES.measure(f"lost locks {how}, {name}", rep.figures())
    FIGURES.measure(f"lost locks {how}, run took s", round(took, 1))
    if how == "cli-guard-off":
        FIGURES.measure(f"lost locks {how}, the run", unguarded)
        # Without the guard the run's close unlinks the writers' -wal/-shm: the test sees it.
        assert all(rep.damage() for rep in reports), [r.figures() for r in reports]
        return
    stats = doc["stats"]
    assert stats["tasks_deleted"] == TASKS and stats["errors_deleted"] == ERRORS
    assert stats["prompts_deleted"] == PROMPTS
    rows = kit.read_rows(main)
    assert rows.tasks_keep == 500 and rows.tasks_doomed == 0 and rows.errors_keep == 100
    assert rows.integrity == "ok" and kit.read_rows(assigner).prompts_keep == 100
    FIGURES.lost(sum(rep.expected - rep.found for rep in reports))
    assert [rep.damage() for rep in reports] == [[], []]
    assert all(rep.ok > 50 for rep in reports)  # it really wrote during the run
    lost = doc["dashboard_locks"]["lost"]
    assert sorted(h["pid"] for h in lost) == sorted(w.pid for w in writers)
    assert {h["database"] for h in lost} == {"prod", "assigner"}
    state = kit.state_doc(arena)
    assert state is not None
    assert len(state["last_run"]["dashboard_locks"]["lost"]) == 2
