"""architect_cleanup.compat: the original worker's names, types and meanings."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from gunicorn_server import Site

from architect_cleanup import cli, compat
from architect_cleanup.config import ConfigError

SEED_STATS = ["backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
              "prompts_deleted", "temp_files_deleted", "space_freed_mb"]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    for key, value in s.env().items():
        monkeypatch.setenv(key, value)
    return s


def test_the_four_names_the_dashboard_imports_keep_their_types_and_values() -> None:
    from architect_cleanup.compat import (  # the dashboard's line, switched
        DEFAULT_BACKUP_RETENTION,
        PID_FILE,
        CleanupWorker,
        load_state,
    )
    assert DEFAULT_BACKUP_RETENTION == {"prod": 10, "qa": 5, "dev": 5, "test": 3, "default": 5}
    assert type(DEFAULT_BACKUP_RETENTION) is dict
    assert isinstance(PID_FILE, Path) and str(PID_FILE) == "/tmp/architect_cleanup_worker.pid"
    assert isinstance(CleanupWorker, type) and callable(load_state)
    assert (compat.DEFAULT_LOG_AGE_DAYS, compat.DEFAULT_TASK_AGE_DAYS,
            compat.DEFAULT_ERROR_AGE_DAYS, compat.DEFAULT_PROMPT_AGE_DAYS,
            compat.CLEANUP_INTERVAL) == (30, 7, 30, 14, 3600)


def test_a_worker_made_with_no_arguments_is_a_dry_run_and_changes_nothing(site: Site) -> None:
    before = sorted(p.name for p in (site.root / "data" / "prod" / "backups").iterdir())
    worker = compat.CleanupWorker()
    assert worker.dry_run is True
    stats = worker.run_cleanup()
    assert stats is worker.stats and stats.backups_deleted > 0
    assert stats.result is not None and stats.result.dry_run is True
    assert sorted(p.name for p in (site.root / "data" / "prod" / "backups").iterdir()) == before


def test_run_cleanup_returns_the_originals_stats_shape(site: Site) -> None:
    stats = compat.CleanupWorker(dry_run=True, backup_retention={"prod": 15, "default": 5},
                                 log_age_days=60, task_age_days=14).run_cleanup()
    doc = stats.to_dict()
    assert list(doc) == SEED_STATS
    assert all(isinstance(doc[k], int) and not isinstance(doc[k], bool) for k in SEED_STATS[:-1])
    assert isinstance(doc["space_freed_mb"], float)
    assert isinstance(stats.space_freed, int) and stats.space_freed > 0
    assert str(stats).startswith("Cleanup Summary:\n  Backups deleted: ")
    assert str(stats).endswith(f"Space freed: {doc['space_freed_mb']} MB")


def test_the_constructor_keeps_the_originals_attributes(site: Site) -> None:
    w = compat.CleanupWorker(dry_run=True, backup_retention={"prod": 15}, log_age_days=60,
                             task_age_days=14, error_age_days=45, prompt_age_days=21)
    assert w.backup_retention["prod"] == 15 and w.backup_retention["qa"] == 5
    assert (w.log_age_days, w.task_age_days, w.error_age_days, w.prompt_age_days) == (
        60, 14, 45, 21)
    assert w.data_dir == site.root / "data"


def test_ages_left_out_are_the_configured_ones(site: Site) -> None:
    site.config.write_text(site.config.read_text() + '\n[tasks]\nmax_age = "10d"\n')
    assert compat.CleanupWorker().task_age_days == 10


@pytest.mark.parametrize("value", [0, "", None, "false"])
def test_only_a_literal_false_cleans(site: Site, value: object) -> None:
    # The original cleaned on any false value; a dashboard passing the request's value
    # straight through must not delete on {"dry_run": 0}.
    assert compat.CleanupWorker(dry_run=value).dry_run is True  # type: ignore[arg-type]
    assert compat.CleanupWorker(dry_run=False).dry_run is False


def test_a_retention_of_zero_is_refused_before_anything_runs(site: Site) -> None:
    with pytest.raises(ConfigError, match="would delete every backup"):
        compat.CleanupWorker(dry_run=False, backup_retention={"prod": 0})
    assert site.state_doc()["history"] == []


def test_load_state_is_none_until_a_real_run_like_the_originals(site: Site) -> None:
    assert compat.load_state() is None
    assert cli.main(["run"], out=io.StringIO()) == 0  # a dry run: the original saved none
    assert compat.load_state() is None
    stats = compat.CleanupWorker(dry_run=False).run_cleanup()
    state = compat.load_state()
    assert state is not None and list(state) == ["last_run", "stats"]
    assert isinstance(state["last_run"], str)
    assert state["stats"] == stats.to_dict()
    assert cli.main(["run"], out=io.StringIO()) == 0  # a later dry run does not replace it
    assert compat.load_state() == state
