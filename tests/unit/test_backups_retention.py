"""The backups target with retention policies, on real files: reasons, dry vs real run,
min_age, siblings, the size budget's runtime error, the local time zone, and ``-v``."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from architect_cleanup import cli
from architect_cleanup.config import Config
from architect_cleanup.targets.backups import local_zone
from architect_cleanup.targets.base import Decision
from architect_cleanup.worker import CleanupWorker

from conftest import NOW, NOW_TS, make_config, snapshot, touch

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def berlin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's zone, whatever the host's: the target reads $TZ like the C library."""
    monkeypatch.setenv("TZ", "Europe/Berlin")


def backup(root: Path, env: str, local: str, size: int = 100, *, suffix: str = "",
           zone: ZoneInfo = BERLIN, siblings: tuple[str, ...] = ()) -> Path:
    """A backup named like the dashboard's whose mtime is *local* ("2026-11-20 03:00")."""
    t = datetime.fromisoformat(local).replace(tzinfo=zone).timestamp()
    name = f"architect_{datetime.fromtimestamp(t, zone):%Y%m%d_%H%M%S}{suffix}.db"
    path = touch(root / "data" / env / "backups" / name, NOW_TS - t, size)
    for s in siblings:
        touch(path.with_name(path.name + s), NOW_TS - t, size)
    return path


def dailies(root: Path, env: str, first: str, last: str, size: int = 100) -> list[Path]:
    out = []
    day = datetime.fromisoformat(first)
    while day <= datetime.fromisoformat(last):
        out.append(backup(root, env, f"{day:%Y-%m-%d} 03:00", size))
        day += timedelta(days=1)
    return out


def run(cfg: Config, *, dry: bool, where: str = "prod/backups"
        ) -> tuple[dict[str, Decision], object]:
    """Run the backups target; the decisions on backups in data/*where*, by file name."""
    seen: dict[str, Decision] = {}

    def collect(d: Decision) -> None:
        if os.path.dirname(d.path).endswith(f"/data/{where}"):
            seen[os.path.basename(d.path)] = d

    worker = CleanupWorker(dry_run=dry, config=cfg, only=["backups"], now=NOW,
                           on_decision=collect)
    stats = worker.run_cleanup()
    return seen, stats


def with_policy(srv: Path, **policy: dict[str, object]) -> Config:
    return make_config(srv, backups={"policy": policy, "min_age": "1h"})


def test_a_calendar_policy_keeps_its_survivors_and_says_which_rules_keep_each(
        srv: Path) -> None:
    dailies(srv, "prod", "2026-10-17", "2026-11-25")
    cfg = with_policy(srv, prod={"keep_daily": 3, "keep_weekly": 3})
    seen, _ = run(cfg, dry=True)
    kept = {n: d.reason for n, d in seen.items() if not d.remove}
    assert kept == {
        "architect_20261125_030000.db": "daily 2026-11-25, weekly 2026-W48",
        "architect_20261124_030000.db": "daily 2026-11-24",
        "architect_20261123_030000.db": "daily 2026-11-23",
        "architect_20261122_030000.db": "weekly 2026-W47",
        "architect_20261115_030000.db": "weekly 2026-W46",
    }
    gone = [d for d in seen.values() if d.remove]
    assert len(gone) == 40 - 5
    assert {d.reason for d in gone} == {"no rule of prod keeps it (daily 3, weekly 3)"}


def test_a_real_run_removes_exactly_what_the_dry_run_reported(srv: Path) -> None:
    dailies(srv, "prod", "2026-09-01", "2026-11-25")
    cfg = with_policy(srv, prod={"keep_daily": 5, "keep_monthly": 2,
                                 "max_total_size": "900"})
    before = snapshot(srv)
    dry, dry_stats = run(cfg, dry=True)
    assert snapshot(srv) == before  # a dry run changes nothing
    real, real_stats = run(cfg, dry=False)
    assert {n for n, d in dry.items() if d.remove} == {n for n, d in real.items() if d.remove}
    left = sorted(os.listdir(srv / "data" / "prod" / "backups"))
    assert left == sorted(n for n, d in dry.items() if not d.remove)
    # keep_daily 5 + monthly 2 keep 6 backups (600 bytes), within the 900 budget
    assert len(left) == 6
    assert dry_stats.backups_deleted == real_stats.backups_deleted == 86 - 6  # type: ignore[attr-defined]


def test_the_budget_removes_the_oldest_survivors_and_says_so(srv: Path) -> None:
    dailies(srv, "prod", "2026-11-16", "2026-11-25", size=1024 * 1024)
    cfg = with_policy(srv, prod={"keep_last": 10, "max_total_size": "4M"})
    seen, _ = run(cfg, dry=True)
    assert sorted(n for n, d in seen.items() if not d.remove) == [
        f"architect_202611{d}_030000.db" for d in (22, 23, 24, 25)]
    assert seen["architect_20261121_030000.db"].reason == (
        "over max_total_size 4.0 MiB (kept set 5.0 MiB)")


def test_siblings_count_in_the_budget_and_go_with_their_backup(srv: Path) -> None:
    old = backup(srv, "prod", "2026-11-24 03:00", 300, siblings=("-wal", "-shm"))
    backup(srv, "prod", "2026-11-25 03:00", 300)
    cfg = with_policy(srv, prod={"keep_last": 5, "max_total_size": "1000"})
    seen, stats = run(cfg, dry=False)
    assert seen[old.name].reason == "over max_total_size 1000 B (kept set 1.2 KiB)"
    assert not any(p.name.startswith(old.name) for p in old.parent.iterdir())
    assert stats.space_freed == 900  # type: ignore[attr-defined]


def test_young_backups_are_kept_and_count_in_no_rule(srv: Path) -> None:
    dailies(srv, "prod", "2026-11-20", "2026-11-25")
    young = touch(srv / "data" / "prod" / "backups" / "architect_now.db", 600, 100)
    cfg = with_policy(srv, prod={"keep_last": 2, "max_total_size": "250"})
    seen, _ = run(cfg, dry=True)
    assert seen[young.name].reason.endswith("younger than min_age: may still be being "
                                            "written (not counted)")
    kept = sorted(n for n, d in seen.items() if not d.remove and n != young.name)
    assert kept == ["architect_20261124_030000.db", "architect_20261125_030000.db"]


def test_a_budget_below_the_newest_backup_fails_the_target_and_spares_that_environment(
        srv: Path) -> None:
    big = dailies(srv, "prod", "2026-11-20", "2026-11-25", size=2000)
    dailies(srv, "qa", "2026-11-20", "2026-11-25")
    cfg = with_policy(srv, prod={"keep_last": 3, "max_total_size": "1000"},
                      qa={"keep_last": 2})
    seen, stats = run(cfg, dry=False)
    assert all(p.exists() for p in big)
    assert len(os.listdir(srv / "data" / "qa" / "backups")) == 2  # qa still cleaned
    result = stats.targets["backups"]  # type: ignore[attr-defined]
    assert result.status == "failed"
    assert result.message == ("max_total_size 1000 B of prod is smaller than its newest backup "
                              "architect_20261125_030000.db (2.0 KiB); raise it or drop it")
    assert seen[big[0].name].reason.startswith("not judged: max_total_size 1000 B of prod")


def test_the_plain_number_keeps_the_newest_n_as_before(srv: Path) -> None:
    dailies(srv, "prod", "2026-11-10", "2026-11-25")
    cfg = make_config(srv, backups={"retention": {"prod": 4}})
    seen, _ = run(cfg, dry=True)
    assert [n for n, d in sorted(seen.items(), reverse=True) if not d.remove] == [
        f"architect_202611{d}_030000.db" for d in (25, 24, 23, 22)]
    assert seen["architect_20261125_030000.db"].reason == "newest backup of prod"
    assert seen["architect_20261122_030000.db"].reason == "newest 4 of prod"
    assert seen["architect_20261121_030000.db"].reason == "beyond the newest 4 of prod"


def test_the_shared_directory_follows_the_default_policy(srv: Path) -> None:
    shared = srv / "data" / "backups"
    for d in range(20, 26):
        touch(shared / f"architect_202611{d}_030000.db", NOW_TS - datetime(
            2026, 11, d, 3, tzinfo=BERLIN).timestamp(), 10)
    cfg = with_policy(srv, default={"keep_daily": 2})
    seen, _ = run(cfg, dry=True, where="backups")
    assert seen["architect_20261125_030000.db"].reason == "daily 2026-11-25"
    assert seen["architect_20261123_030000.db"].reason == (
        "no rule of default keeps it (daily 2)")


def test_buckets_follow_the_servers_time_zone(srv: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ny = ZoneInfo("America/New_York")
    for day in (24, 25):  # 23:30 New York time = 04:30 UTC the next day
        backup(srv, "prod", f"2026-11-{day} 23:30", zone=ny)
    cfg = with_policy(srv, prod={"keep_daily": 2})
    monkeypatch.setenv("TZ", "America/New_York")
    seen, _ = run(cfg, dry=True)
    assert sorted(d.reason for d in seen.values()) == ["daily 2026-11-24", "daily 2026-11-25"]
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    seen, _ = run(cfg, dry=True)
    assert sorted(d.reason for d in seen.values()) == ["daily 2026-11-25", "daily 2026-11-26"]


def test_local_zone_reads_tz_then_etc_localtime_then_falls_back_to_utc(tmp_path: Path) -> None:
    assert local_zone({"TZ": "Europe/Berlin"}).utcoffset(datetime(2026, 7, 1)) is not None
    assert str(local_zone({"TZ": ":America/New_York"})) == "America/New_York"
    assert str(local_zone({"TZ": "/usr/share/zoneinfo/Asia/Tokyo"})) == (
        "/usr/share/zoneinfo/Asia/Tokyo")
    assert str(local_zone({}, localtime="/usr/share/zoneinfo/Europe/Berlin")) == "localtime"
    assert str(local_zone({"TZ": "Nowhere/Special"}, localtime=str(tmp_path / "none"))) == "UTC"
    assert str(local_zone({}, localtime=str(tmp_path / "none"))) == "UTC"


@pytest.fixture
def backups_log() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda r: lines.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("architect_cleanup.targets.backups")
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_a_dry_run_logs_a_line_per_environment_and_no_line_per_backup(
        srv: Path, backups_log: list[str]) -> None:
    """Issue 21: the hourly dry run wrote 163 "would remove" lines to the journal every hour;
    a real run's removals are journaled one by one by the worker (test_journal)."""
    dailies(srv, "prod", "2026-11-22", "2026-11-25")
    run(with_policy(srv, prod={"keep_daily": 2}), dry=True)
    assert not any("architect_20261122_030000.db" in line for line in backups_log)
    assert backups_log == [
        "backups: prod: kept 2, would remove 2 by backups.policy.prod (daily 2)"]


def test_verbose_output_lists_every_backup_with_the_rules_that_keep_it(srv: Path,
                                                                       tmp_path: Path) -> None:
    dailies(srv, "prod", "2026-11-01", "2026-11-25")
    conf = tmp_path / "config.toml"
    conf.write_text(f'root = "{srv}"\n[logs]\ntmp_dir = ""\n[backups.verify]\ncheck = "off"\n'
                    '[backups.policy.prod]\nkeep_daily = 2\nkeep_weekly = 2\n'
                    'max_total_size = "300"\n')
    out = io.StringIO()
    assert cli.main(["--config", str(conf), "run", "--dry-run", "-v", "--only", "backups"],
                    out=out) == 0
    text = out.getvalue()
    assert "architect_20261125_030000.db (daily 2026-11-25, weekly 2026-W48)" in text
    assert "architect_20261124_030000.db (daily 2026-11-24)" in text
    assert "architect_20261122_030000.db (weekly 2026-W47)" in text  # 300 B: budget met
    assert "architect_20261123_030000.db (no rule of prod keeps it (daily 2, weekly 2))" in text


# --- local_zone: no $TZ is no warning --------------------------------------------------------


def test_without_tz_the_local_zone_comes_from_etc_localtime_without_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="architect_cleanup.targets.backups")
    berlin = "/usr/share/zoneinfo/Europe/Berlin"
    assert str(local_zone({}, localtime=berlin)) == "localtime"
    assert str(local_zone({"TZ": ""}, localtime=berlin)) == "localtime"
    assert str(local_zone({"TZ": ":"}, localtime=berlin)) == "localtime"
    assert caplog.records == []
