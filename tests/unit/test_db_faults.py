"""Faults in the database purge that no unit test caught (issue 24): a row whose finish time is
exactly the cutoff. ``max_age`` means "older than": that row stays, in every spelling of the
time the dashboard may have written, and a row one second older goes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from dbkit import (
    DAY,
    NOW,
    close_databases,  # noqa: F401  (autouse fixture)
    config,
    ids,
    insert,
    make_db,
    run,
    text,
)

from architect_cleanup.db import cutoff, epoch_sql

SECOND = timedelta(seconds=1)
CUTOFF = NOW - 7 * DAY


def task(completed: object) -> dict[str, object]:
    return {"task_type": "t", "status": "completed", "created_at": text(NOW - 400 * DAY),
            "completed_at": completed}


SPELLINGS = {
    "text": text,
    "iso with T and Z": lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "with an offset": lambda t: (t + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S+05:00"),
    "offset without a colon": lambda t: (t - timedelta(hours=5)).strftime(
        "%Y-%m-%d %H:%M:%S-0500"),
    "epoch integer": lambda t: int(t.timestamp()),
    "epoch real": lambda t: float(t.timestamp()),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_row_finished_exactly_at_the_cutoff_is_kept_and_one_a_second_older_goes(
        tmp_path: Path, spelling: str, dry_run: bool) -> None:
    root = tmp_path / "srv"
    con = make_db(root / "data" / "prod" / "architect.db")
    spell = SPELLINGS[spelling]
    (at,) = insert(con, "task_queue", [task(spell(CUTOFF))])
    (older,) = insert(con, "task_queue", [task(spell(CUTOFF - SECOND))])
    (newer,) = insert(con, "task_queue", [task(spell(CUTOFF + SECOND))])
    stats = run(config(root), tmp_path, dry_run=dry_run)
    assert stats.tasks_deleted == 1
    assert ids(con, "task_queue") == ({at, newer} if not dry_run else {at, older, newer})
    assert stats.targets["tasks"].kept == 2


def test_the_cutoff_is_now_minus_max_age() -> None:
    assert cutoff(NOW, timedelta(days=7)) == (NOW - 7 * DAY).timestamp()


def test_a_timestamp_reads_as_the_same_epoch_second_in_every_spelling(tmp_path: Path) -> None:
    con = make_db(tmp_path / "x.db")
    expected = CUTOFF.timestamp()
    for name, spell in SPELLINGS.items():
        (value,) = con.execute(f"SELECT {epoch_sql(':v')}", {"v": spell(CUTOFF)}).fetchone()
        assert value == pytest.approx(expected, abs=1e-3), name
    for undated in (None, "", "yesterday", 0, -5, b"blob"):
        assert con.execute(f"SELECT {epoch_sql(':v')}", {"v": undated}).fetchone() == (None,)
