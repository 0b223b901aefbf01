"""The history wired into a run: every removed item streamed with its reason, the figures and
space samples, pruning, the forecast in state.json and ``status``, the metrics file, and a
broken history database that never stops a cleanup."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from collections import Counter
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from architect_cleanup import CleanupWorker, itemwrite, reports
from architect_cleanup import history as h
from architect_cleanup.cli import main
from architect_cleanup.state import StateStore

from conftest import DAY, NOW, make_config, touch
from demo import build_tree

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SINCE = NOW - timedelta(days=1)


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, Path]:
    root, tmp = tmp_path / "srv" / "architect", tmp_path / "tmp"
    build_tree(root, tmp, now=NOW.timestamp())
    return root, tmp


def state_dir() -> Path:
    return Path(os.environ["STATE_DIRECTORY"])


def reader() -> sqlite3.Connection:
    conn = h.open_reader(str(state_dir()))
    assert conn is not None, "no history database was written"
    return conn


def items() -> list[reports.ItemRow]:
    with closing(reader()) as conn:
        return list(reports.items_since(conn, SINCE))


def run(root: Path, tmp: Path, *, dry: bool, **sections: object) -> object:
    cfg = make_config(root, tmp, **sections)  # type: ignore[arg-type]
    return CleanupWorker(dry_run=dry, config=cfg, now=NOW).run_cleanup()


def test_a_real_run_records_every_removed_item_of_every_target_with_its_reason(
        demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    stats = CleanupWorker(dry_run=False, config=make_config(root, tmp), now=NOW).run_cleanup()
    assert stats.success
    rows = items()
    by_target = Counter(r.target for r in rows)
    # one item per file for the file targets, exactly what the run counted
    assert by_target["logs"] == stats.logs_deleted > 0
    assert by_target["backups"] == stats.backups_deleted > 80
    assert by_target["temp"] > 0
    assert not any(r.dry_run for r in rows)
    for r in rows:
        assert r.reason, r
        if r.target in ("logs", "backups", "temp"):
            assert r.path.startswith(str(root)) or r.path.startswith(str(tmp)), r.path
            assert not os.path.lexists(r.path.rstrip("/")), f"{r.path} recorded but still there"
            assert r.mtime is not None
    logs = [r for r in rows if r.target == "logs"]
    assert all("> 30d" in r.reason and r.action == "removed" for r in logs)
    backups = [r for r in rows if r.target == "backups"]
    assert {r.env for r in backups} >= {"prod", "qa"} and all(r.size > 0 for r in backups)
    # a whole __pycache__ is one item, its files counted in the reason
    assert any(r.path.endswith("/__pycache__/") and "files" in r.reason
               for r in rows if r.target == "temp")
    # rows: one item per database and table, the count and the rule in the reason
    tasks = [r for r in rows if r.target == "tasks"]
    assert tasks and all(":task_queue" in r.path and "finished tasks" in r.reason
                         and r.env in ("prod", "qa", "dev", "test") for r in tasks)
    prompts = [r for r in rows if r.target == "prompts"]
    assert prompts and all(r.action == "archived" and r.env == "assigner" for r in prompts)


def test_a_dry_run_records_what_it_would_remove_and_the_real_run_the_same(
        demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    run(root, tmp, dry=True)
    dry = items()
    assert dry and all(r.dry_run for r in dry)
    run(root, tmp, dry=False)
    with closing(reader()) as conn:
        real = list(reports.items_since(conn, SINCE, dry_run=False))
    assert sorted((r.target, r.path) for r in dry) == sorted((r.target, r.path) for r in real)
    # and each with the same figures and reason (a dry run's items take a loop of their own)
    def whole(rows: list[reports.ItemRow]) -> list[tuple[object, ...]]:
        return sorted((r.target, r.env, r.path, r.size, r.mtime, r.reason) for r in rows)

    assert whole(dry) == whole(real)


@pytest.mark.parametrize("dry", [True, False])
def test_files_whose_names_are_not_utf8_are_recorded_and_the_run_is_whole(
        demo: tuple[Path, Path], dry: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile tree: old logs whose names (and directory) are not UTF-8, among more than a
    batch of others. Every item is recorded, those names as the journal shows them (\\xNN),
    and the run's record is finished (it used to stay "running": SQLite cannot hold the
    name, and the write failed). More than a batch: a process of their own writes them
    (from the first batch here: h.OFFLOAD_AFTER)."""
    monkeypatch.setattr(h, "OFFLOAD_AFTER", 1)
    started: list[int] = []
    start = itemwrite.Sink.start.__func__  # type: ignore[attr-defined]

    def spy(cls: type[itemwrite.Sink], path: str, run_id: int) -> itemwrite.Sink:
        started.append(run_id)
        return start(cls, path, run_id)  # type: ignore[no-any-return]
    monkeypatch.setattr(itemwrite.Sink, "start", classmethod(spy))
    root, tmp = demo
    bad = os.fsencode(root / "logs") + b"/d\xe9j\xe0"
    for i in range(3):
        touch(Path(os.fsdecode(bad + b"/caf\xe9-%d.log" % i)), 40 * DAY)
    for i in range(h.BATCH + 5):
        touch(root / "logs" / "many" / f"old-{i}.log", 40 * DAY)
    stats = run(root, tmp, dry=dry)
    assert stats.success  # type: ignore[attr-defined]
    rows = [r for r in items() if r.target == "logs"]
    assert len(rows) == stats.logs_deleted  # type: ignore[attr-defined]
    escaped = sorted(r.path for r in rows if "caf" in r.path)
    assert escaped == [f"{root}/logs/d\\xe9j\\xe0/caf\\xe9-{i}.log" for i in range(3)]
    with closing(reader()) as conn:
        assert conn.execute("SELECT result FROM runs").fetchall() == [("success",)]
    assert len(started) == 1


def test_the_runs_figures_backups_and_space_samples_are_recorded(
        demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    stats = CleanupWorker(dry_run=False, config=make_config(root, tmp), now=NOW).run_cleanup()
    with closing(reader()) as conn:
        last = reports.latest_run(conn)
        assert last is not None and last.result == "success" and not last.dry_run
        assert last.removed == sum(t.removed for t in stats.targets.values())
        assert last.items_recorded == len(list(reports.items_since(conn, SINCE)))
        targets = {t.target: t for t in reports.run_targets(conn, last.id)}
        assert targets["logs"].removed == stats.logs_deleted
        backups = {b.env: b for b in reports.run_backups(conn, last.id)}
        # the newest 10 and the one still being written
        assert backups["prod"].count == 11 and backups["prod"].bytes > 10 * 3_700_000 + 1_000_000
        samples = {(s.kind, s.name): s.value for s in reports.run_samples(conn, last.id)}
    assert ("fs_free", str(root)) in samples and ("fs_total", str(root)) in samples
    assert samples[("bytes", "backups:prod")] == backups["prod"].bytes
    young_logs = sum(p.stat().st_size for d in (root / "data", root / "logs")
                     for p in d.rglob("*.log*") if p.is_file() and "chrome" not in str(p)
                     and "browser" not in str(p) and not p.name.endswith("worker.log"))
    # the logs the rule looked at and kept (the protected worker logs are never looked at)
    assert samples[("bytes", "logs")] == young_logs > 0
    # the database file and its -wal at the time (the activity row may have left one)
    assert samples[("db_bytes", "prod")] >= os.path.getsize(root / "data/prod/architect.db")
    rows = sqlite3.connect(root / "data/prod/architect.db").execute(
        "SELECT count(*) FROM task_queue").fetchone()[0]
    assert samples[("rows", "prod:task_queue")] == rows


def test_a_corrupt_history_database_is_set_aside_and_the_run_goes_on(
        demo: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    root, tmp = demo
    state_dir().mkdir(parents=True)
    (state_dir() / h.DB_NAME).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        stats = CleanupWorker(dry_run=False, config=make_config(root, tmp),
                              now=NOW).run_cleanup()
    assert stats.success and stats.logs_deleted > 0
    aside = list(state_dir().glob(h.DB_NAME + ".corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert Counter(r.target for r in items())["logs"] == stats.logs_deleted
    assert StateStore().load()["last_run"]["result"] == "success"


def test_damage_the_check_finds_beside_a_run_sets_the_file_aside_when_the_run_ends(
        demo: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    # damage where the opening does not read (items pages): the run goes on, recording into
    # the file; the whole file's quick_check (beside the run) finds it, and the run sets the
    # file aside when it closes the history. The next run starts a new one.
    root, tmp = demo
    history = h.open_history(str(state_dir()), now=NOW).history
    assert history is not None
    w = history.begin_run(started_at=NOW, dry_run=True, source="timer")
    w.items(h.Item("logs", f"/srv/x/{i}.log", i, 0.0, "old") for i in range(3000))
    w.flush()
    assert history.close() is None
    path = state_dir() / h.DB_NAME
    with open(path, "r+b") as fh:
        fh.seek(3 * 4096)
        fh.write(os.urandom(3 * 4096))
    with caplog.at_level(logging.WARNING):
        stats = CleanupWorker(dry_run=False, config=make_config(root, tmp),
                              now=NOW).run_cleanup()
    assert stats.success and stats.logs_deleted > 0
    aside = list(state_dir().glob(h.DB_NAME + ".corrupt-*"))
    assert len(aside) == 1 and not path.exists()
    warning = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warning) == 1 and str(aside[0]) in warning[0]
    assert StateStore().load()["last_run"]["result"] == "success"
    touch(root / "logs" / "late.log", 40 * DAY)
    again = CleanupWorker(dry_run=False, config=make_config(root, tmp), now=NOW).run_cleanup()
    assert again.success and [r.path for r in items()] == [str(root / "logs" / "late.log")]


def test_a_history_that_cannot_be_written_never_fails_the_run_or_its_exit_code(
        demo: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, tmp = demo
    (state_dir() / h.DB_NAME).mkdir(parents=True)  # a directory where the file should be
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root = "{root}"\n[logs]\ntmp_dir = "{tmp}"\n')
    monkeypatch.setenv("ARCHITECT_CLEANUP_CONFIG", str(cfg))
    assert main(["run", "--force"], out=io.StringIO()) == 0
    warnings = [x for x in capsys.readouterr().err.splitlines() if "history" in x]
    assert len(warnings) == 1 and "this run is not recorded" in warnings[0]
    assert StateStore().load()["last_run"]["result"] == "success"


def test_a_write_failing_during_the_run_is_contained(
        demo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, tmp = demo

    def broken(self: itemwrite.ItemWriter, groups: object, first: int, recorded: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(itemwrite.ItemWriter, "write", broken)
    stats = CleanupWorker(dry_run=False, config=make_config(root, tmp), now=NOW).run_cleanup()
    assert stats.success and stats.logs_deleted > 0
    assert StateStore().load()["last_run"]["result"] == "success"


def test_history_enabled_false_records_nothing(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    run(root, tmp, dry=False, history={"enabled": False})
    assert not (state_dir() / h.DB_NAME).exists()


def test_the_run_prunes_by_the_history_tables_retention(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    opened = h.open_history(str(state_dir()), now=NOW)
    assert opened.history is not None
    old = NOW - timedelta(days=40)
    w = opened.history.begin_run(started_at=old, dry_run=False, source="timer")
    w.item(h.Item("logs", "/srv/architect/logs/ancient.log", 10, old.timestamp(), "old"))
    w.finish(finished_at=old, result="success", duration_s=1, items=1, bytes=10)
    opened.history.close()

    def old_items() -> int:
        with closing(reader()) as conn:
            return sum(1 for r in reports.items_since(conn, old - timedelta(days=1))
                       if r.path.endswith("ancient.log"))
    run(root, tmp, dry=True)  # the default 90 days keeps it
    assert old_items() == 1
    run(root, tmp, dry=True, history={"items_max_age": "30d"})
    assert old_items() == 0
    with closing(reader()) as conn:  # the run itself stays (runs_max_age 730d)
        assert any(r.started_at.startswith(old.date().isoformat())
                   for r in reports.runs_since(conn, old - timedelta(days=1)))


def test_the_forecast_goes_to_state_json_and_status_shows_it(
        demo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, tmp = demo
    # two weeks of hourly samples of the root's file system losing 1 GB a day
    opened = h.open_history(str(state_dir()), now=NOW)
    assert opened.history is not None
    free0 = float(os.statvfs(root).f_bavail * os.statvfs(root).f_frsize) + 14e9
    for i in range(14 * 24, 0, -1):
        t = NOW - timedelta(hours=i)
        w = opened.history.begin_run(started_at=t, dry_run=True, source="timer")
        w.samples([h.Sample("fs_free", str(root), free0 - (14 * 24 - i) * 1e9 / 24),
                   h.Sample("fs_total", str(root), 1e15)])
        w.finish(finished_at=t, result="success", duration_s=1, items=0, bytes=0)
    opened.history.close()
    run(root, tmp, dry=True)
    forecast = StateStore().load()["forecast"]
    mine = [f for f in forecast if f["name"] == str(root)]
    assert mine and mine[0]["state"] == "filling" and mine[0]["seconds"] > 0
    assert mine[0]["low"] <= mine[0]["seconds"] <= mine[0]["high"]
    assert f"{root} fills in about" in mine[0]["line"]
    out = io.StringIO()
    assert main(["status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["forecast"] == forecast
    out = io.StringIO()
    assert main(["status"], out=out) == 0
    line = next(x for x in out.getvalue().splitlines() if x.startswith("Forecast:"))
    assert f"{root} fills in about" in out.getvalue() and line


def test_status_without_a_forecast_has_an_empty_list(demo: tuple[Path, Path]) -> None:
    out = io.StringIO()
    assert main(["status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["forecast"] == []


def test_the_metrics_textfile_is_written_after_each_run_and_passes_promtool(
        demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    textfile = Path(os.environ["ARCHITECT_CLEANUP_TEXTFILE_DIR"])
    run(root, tmp, dry=True)
    assert not textfile.exists()  # no collector directory: no file, no error
    textfile.mkdir()
    run(root, tmp, dry=False)
    prom = textfile / "architect_cleanup.prom"
    text = prom.read_text()
    assert 'architect_cleanup_last_run_removed_items{env="",target="logs"}' in text
    assert "architect_cleanup_last_run_success 1.0" in text
    assert "architect_cleanup_last_run_dry_run 0.0" in text
    assert f'architect_cleanup_filesystem_avail_bytes{{path="{root}"}}' in text
    assert 'architect_cleanup_table_rows{database="prod",table="task_queue"}' in text
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_an_unexpected_failure_in_the_history_steps_is_one_warning_not_a_failed_run(
        demo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    root, tmp = demo
    from architect_cleanup import metrics

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("boom")
    monkeypatch.setattr(metrics, "snapshot", boom)
    monkeypatch.setattr(reports, "forecasts", boom)
    with caplog.at_level(logging.WARNING):
        stats = CleanupWorker(dry_run=False, config=make_config(root, tmp),
                              now=NOW).run_cleanup()
    assert stats.success and not stats.state_error
    warned = [r for r in caplog.records if "history" in r.getMessage()]
    assert len(warned) == 1 and "boom" in warned[0].getMessage()
    assert StateStore().load()["forecast"] == []
    assert Counter(r.target for r in items())["logs"] == stats.logs_deleted


@pytest.mark.parametrize("odd", ["soon", {"line": "x"}, [1, None, {"line": 3}]])
def test_a_forecast_edited_by_hand_keeps_its_type_in_status(odd: object) -> None:
    state_dir().mkdir(parents=True)
    (state_dir() / "state.json").write_text(json.dumps({"history": [], "forecast": odd}))
    out = io.StringIO()
    assert main(["status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["forecast"] == []
    out = io.StringIO()
    assert main(["status"], out=out) == 0 and "Forecast:" not in out.getvalue()
