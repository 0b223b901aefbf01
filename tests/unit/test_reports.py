"""Reports from the history: runs, items with --grep, freed space, growth, forecasts, output."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import types
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from architect_cleanup import history as h
from architect_cleanup import reports as r

from conftest import NOW

# NOW is Thursday 2026-11-26 12:00 UTC
MONDAY_BEFORE_LAST = NOW - timedelta(days=10)  # 2026-11-16
TUESDAY = NOW - timedelta(days=2)  # 2026-11-24
OLD_LOG = "/srv/architect/logs/app.log.3"
OLD_BACKUP = "/srv/architect/data/prod/backups/architect-2026-10-01.db"


def _run(hist: h.History, at: datetime, *, dry: bool = False, logs: int = 0,
         prod: int = 0, temp: str = "ok", result: h.RunResult = "success",
         items: list[h.Item] | None = None,
         samples: list[h.Sample] | None = None) -> int:
    w = hist.begin_run(started_at=at, dry_run=dry, source="timer")
    w.items(items or [])
    w.target(h.TargetRecord("logs", "ok", logs, 100 * logs, 10))
    w.target(h.TargetRecord("backups", "ok", prod, 1000 * prod, 7 + 3),
             [h.PartRecord("backups", "prod", prod, 1000 * prod, 7),
              h.PartRecord("backups", "dev", 0, 0, 3)])
    w.target(h.TargetRecord("temp", temp, message="temp.enabled = false"
                            if temp == "disabled" else ""))
    w.samples(samples or [])
    w.finish(finished_at=at + timedelta(seconds=30), result=result, duration_s=30.0,
             items=logs + prod, bytes=100 * logs + 1000 * prod)
    return w.run_id


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    hist = h.open_history(str(tmp_path), now=NOW).history
    assert hist is not None
    _run(hist, NOW - timedelta(days=40), logs=1)
    _run(hist, MONDAY_BEFORE_LAST, logs=5, prod=2,
         samples=[h.Sample("bytes", "logs", 1000), h.Sample("db_bytes", "/srv/a.db", 50)])
    _run(hist, TUESDAY, logs=3, prod=1, temp="disabled", items=[
        h.Item("logs", "/srv/architect/logs/app.log.2", 100, TUESDAY.timestamp() - 40 * 86400,
               "40 days old > 30d"),
        h.Item("logs", OLD_LOG, 120, TUESDAY.timestamp() - 31 * 86400, "31 days old > 30d"),
        h.Item("backups", OLD_BACKUP, 1000, None, "beyond the newest 7 of prod", env="prod"),
    ], samples=[h.Sample("bytes", "logs", 1300), h.Sample("db_bytes", "/srv/a.db", 80)])
    _run(hist, TUESDAY + timedelta(hours=1), dry=True, logs=7, result="failed", items=[
        h.Item("logs", OLD_LOG + ".gz", 70, None, "31 days old > 30d")],
         samples=[h.Sample("bytes", "logs", 1350)])
    hist.close()
    reader = h.open_reader(str(tmp_path))
    assert reader is not None
    yield reader
    reader.close()


SINCE_30D = NOW - timedelta(days=30)


def test_runs_since_a_time_are_listed_oldest_first(conn: sqlite3.Connection) -> None:
    runs = r.runs_since(conn, SINCE_30D)
    assert [x.started_at for x in runs] == ["2026-11-16T12:00:00+00:00",
                                            "2026-11-24T12:00:00+00:00",
                                            "2026-11-24T13:00:00+00:00"]
    assert [(x.removed, x.bytes, x.kept, x.dry_run) for x in runs] == [
        (7, 2500, 20, False), (4, 1300, 20, False), (7, 700, 20, True)]
    assert runs[1].items_recorded == 3 and runs[1].finished_at == "2026-11-24T12:00:30+00:00"
    assert runs[2].result == "failed"


def test_runs_of_one_target_leave_out_the_runs_where_it_did_not_run(
        conn: sqlite3.Connection) -> None:
    temp = r.runs_since(conn, SINCE_30D, target="temp")
    assert [x.started_at[:10] for x in temp] == ["2026-11-16", "2026-11-24"]
    assert {x.status for x in temp} == {"ok"}
    logs = r.runs_since(conn, SINCE_30D, target="logs")
    assert [(x.target, x.removed, x.bytes) for x in logs] == [
        ("logs", 5, 500), ("logs", 3, 300), ("logs", 7, 700)]


def test_runs_of_one_environment_carry_its_figures(conn: sqlite3.Connection) -> None:
    prod = r.runs_since(conn, SINCE_30D, target="backups", env="prod")
    assert [(x.env, x.removed, x.bytes, x.kept) for x in prod] == [
        ("prod", 2, 2000, 7), ("prod", 1, 1000, 7), ("prod", 0, 0, 7)]
    anywhere = r.runs_since(conn, SINCE_30D, env="prod")  # summed over the targets
    assert [(x.target, x.env, x.removed) for x in anywhere] == [
        (None, "prod", 2), (None, "prod", 1), (None, "prod", 0)]
    assert r.runs_since(conn, SINCE_30D, env="staging") == []


def test_what_removed_this_file_last_tuesday_is_answered_by_grep(
        conn: sqlite3.Connection) -> None:
    rows = list(r.items_since(conn, SINCE_30D, grep="app.log.3", dry_run=False))
    assert len(rows) == 1
    row = rows[0]
    assert row.path == OLD_LOG and row.reason == "31 days old > 30d"
    assert row.run_started_at == "2026-11-24T12:00:00+00:00" and not row.dry_run
    assert row.target == "logs" and row.size == 120 and row.action == "removed"
    assert row.mtime == "2026-10-24T12:00:00+00:00"
    # with the dry run's preview too
    assert [x.dry_run for x in r.items_since(conn, SINCE_30D, grep="app.log.3")] == [
        False, True]


def test_items_are_streamed_in_the_order_they_were_decided(conn: sqlite3.Connection) -> None:
    items = r.items_since(conn, SINCE_30D)
    assert isinstance(items, types.GeneratorType)
    assert [x.path.rsplit("/", 1)[1] for x in items] == [
        "app.log.2", "app.log.3", "architect-2026-10-01.db", "app.log.3.gz"]


def test_items_are_filtered_by_target_environment_and_limit(conn: sqlite3.Connection) -> None:
    assert [x.path for x in r.items_since(conn, SINCE_30D, env="prod")] == [OLD_BACKUP]
    assert [x.path for x in r.items_since(conn, SINCE_30D, target="backups")] == [OLD_BACKUP]
    assert len(list(r.items_since(conn, SINCE_30D, limit=2))) == 2
    assert list(r.items_since(conn, NOW)) == []
    # grep is a plain substring, not a pattern
    assert list(r.items_since(conn, SINCE_30D, grep="app.log.%")) == []


def test_freed_space_per_day_counts_the_real_runs_only(conn: sqlite3.Connection) -> None:
    rows = r.freed_per_period(conn, SINCE_30D)
    assert [(x.period, x.target, x.items, x.bytes) for x in rows] == [
        ("2026-11-16", "backups", 2, 2000), ("2026-11-16", "logs", 5, 500),
        ("2026-11-16", "temp", 0, 0),
        ("2026-11-24", "backups", 1, 1000), ("2026-11-24", "logs", 3, 300)]
    dry = r.freed_per_period(conn, SINCE_30D, dry_run=True, target="logs")
    assert [(x.period, x.items) for x in dry] == [("2026-11-24", 7)]


def test_freed_space_per_week_starts_on_monday(conn: sqlite3.Connection) -> None:
    rows = r.freed_per_period(conn, NOW - timedelta(days=60), period="week", target="logs")
    assert [(x.period, x.runs, x.items) for x in rows] == [
        ("2026-10-12", 1, 1), ("2026-11-16", 1, 5), ("2026-11-23", 1, 3)]
    with pytest.raises(ValueError, match="day or week"):
        r.freed_per_period(conn, SINCE_30D, period="month")  # type: ignore[arg-type]


def test_freed_space_of_one_environment(conn: sqlite3.Connection) -> None:
    rows = r.freed_per_period(conn, SINCE_30D, env="prod")
    assert [(x.period, x.target, x.env, x.bytes) for x in rows] == [
        ("2026-11-16", "backups", "prod", 2000), ("2026-11-24", "backups", "prod", 1000)]


def test_growth_per_day_takes_each_days_last_sample(conn: sqlite3.Connection) -> None:
    rows = r.growth_per_day(conn, SINCE_30D)
    assert [(x.day, x.category, x.bytes, x.growth_per_day) for x in rows] == [
        ("2026-11-16", "database:/srv/a.db", 50, None),
        ("2026-11-24", "database:/srv/a.db", 80, 30 / 8),
        ("2026-11-16", "logs", 1000, None),
        ("2026-11-24", "logs", 1350, 350 / 8)]
    assert [x.day for x in r.growth_per_day(conn, SINCE_30D, category="logs")] == [
        "2026-11-16", "2026-11-24"]


def test_forecasts_come_from_the_free_space_samples(tmp_path: Path) -> None:
    hist = h.open_history(str(tmp_path / "f"), now=NOW).history
    assert hist is not None
    for i in range(48):
        w = hist.begin_run(started_at=NOW - timedelta(hours=i), dry_run=False, source="timer")
        w.samples([h.Sample("fs_free", "/srv", 100e9 + i * 1e9 / 24),
                   h.Sample("fs_total", "/srv", 1e12)])
        w.finish(finished_at=NOW, result="success", duration_s=1, items=0, bytes=0)
    (f,) = r.forecasts(hist.conn, now=NOW)
    assert f.name == "/srv" and f.state == "filling"
    assert f.seconds == pytest.approx(100 * 86400)
    assert len(r.free_series(hist.conn, "/srv", NOW - timedelta(days=1))) == 25


def test_the_newest_run_and_the_newest_success(conn: sqlite3.Connection) -> None:
    last = r.latest_run(conn)
    good = r.latest_run(conn, result="success")
    assert last is not None and last.result == "failed" and last.dry_run
    assert good is not None and good.started_at == "2026-11-24T12:00:00+00:00"


def test_one_runs_records_are_read_back(conn: sqlite3.Connection) -> None:
    run = r.runs_since(conn, TUESDAY)[0]
    assert [t.target for t in r.run_targets(conn, run.id)] == ["backups", "logs", "temp"]
    assert r.run_parts(conn, run.id)[1] == h.PartRecord("backups", "prod", 1, 1000, 7)
    assert r.run_samples(conn, run.id) == [h.Sample("bytes", "logs", 1300),
                                           h.Sample("db_bytes", "/srv/a.db", 80)]
    assert r.run_backups(conn, run.id) == []


def test_rows_render_as_csv_with_a_header_and_as_json(conn: sqlite3.Connection) -> None:
    out = io.StringIO()
    n = r.render_csv(r.items_since(conn, SINCE_30D, env="prod"), out, r.ItemRow)
    assert n == 1
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0][:3] == ["run_id", "run_started_at", "dry_run"]
    assert dict(zip(rows[0], rows[1], strict=True))["mtime"] == ""  # None -> empty
    assert dict(zip(rows[0], rows[1], strict=True))["path"] == OLD_BACKUP
    empty = io.StringIO()
    assert r.render_csv([], empty, r.RunRow) == 0
    assert empty.getvalue().startswith("id,started_at,")
    data = json.loads(r.to_json(r.runs_since(conn, SINCE_30D)))
    assert data[0]["removed"] == 7 and data[0]["finished_at"].endswith("+00:00")
    wrapped = json.loads(r.to_json([], since="2026-10-27"))
    assert wrapped == {"since": "2026-10-27", "rows": []}
    with pytest.raises(TypeError):
        r.as_dict(42)


def test_a_naive_since_is_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="naive"):
        r.runs_since(conn, datetime(2026, 1, 1))
