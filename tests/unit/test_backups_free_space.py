"""min_free_space on a real, small filesystem (an 8 MiB tmpfs mounted for each test): the floor
stops at the threshold and at keep_min, a dry run reports the free space a real run reaches,
and directories on one filesystem give up their oldest backups first. Needs root to mount."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from architect_cleanup.config import Config
from architect_cleanup.targets.base import Decision
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, NOW, make_config, snapshot, touch

KIB = 1024
MIB = 1024 * KIB
FS_SIZE = 8 * MIB
BACKUP = 512 * KIB


def _mount_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


pytestmark = pytest.mark.skipif(_mount_skip_reason() is not None,
                                reason=_mount_skip_reason() or "")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted whatever happens; used as the dashboard's root."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755",
                           "tmpfs", str(mnt)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        (mnt / "data").mkdir()
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(root: Path, env: str, count: int, *, newest_age: float = DAY) -> list[Path]:
    """*count* daily backups of 512 KiB real data in *env*, the newest *newest_age* old."""
    return [touch(root / "data" / env / "backups" / f"architect_{env}_{i:02d}.db",
                  newest_age + i * DAY, BACKUP) for i in range(count)]


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def run(cfg: Config, *, dry: bool) -> tuple[list[Decision], Any]:
    seen: list[Decision] = []
    stats = CleanupWorker(dry_run=dry, config=cfg, only=["backups"], now=NOW,
                          on_decision=seen.append).run_cleanup()
    return seen, stats


def config(root: Path, **policies: dict[str, object]) -> Config:
    return make_config(root, backups={"policy": policies, "shared_dir": ""})


def removed(decisions: list[Decision]) -> list[str]:
    return sorted(os.path.basename(d.path) for d in decisions if d.remove)


def test_the_floor_stops_at_the_threshold_and_the_dry_run_predicts_the_real_run(
        small_fs: Path) -> None:
    fill(small_fs, "prod", 12)  # 6 MiB of 8: about 25% free
    cfg = config(small_fs, prod={"keep_last": 12, "min_free_space": "45%"})
    before, total = free(small_fs), os.statvfs(small_fs).f_blocks * os.statvfs(
        small_fs).f_frsize
    assert before < 0.45 * total
    files = snapshot(small_fs)
    dry, stats = run(cfg, dry=True)
    assert snapshot(small_fs) == files and free(small_fs) == before  # nothing touched
    # the four oldest go: each frees 512 KiB until 45% is reached
    assert removed(dry) == [f"architect_prod_{i:02d}.db" for i in (8, 9, 10, 11)]
    assert all(d.reason.startswith("free space ") and d.reason.endswith(
        "below min_free_space 45%") for d in dry if d.remove)
    detail = stats.targets["backups"].detail["prod"]["free_space"]
    projected = detail["projected_free_bytes"]
    assert projected == before + 4 * BACKUP >= 0.45 * total > projected - BACKUP
    assert detail["removed_for_space"] == 4 and not detail["stopped_at_keep_min"]
    (note,) = [n for n in stats.targets["backups"].notes if "min_free_space" in n]
    assert note.startswith("prod: free space ")
    assert "is below min_free_space 45% (3.6 MiB): 4 backup(s) beyond the rules would go, " \
        "reaching 4.0 MiB (50.0%)" in note

    real, stats = run(cfg, dry=False)
    assert removed(real) == removed(dry)
    assert free(small_fs) == projected  # what the dry run said, to the byte
    assert len(os.listdir(small_fs / "data" / "prod" / "backups")) == 8
    assert "4 backup(s) beyond the rules go, reaching" in next(
        n for n in stats.targets["backups"].notes if "min_free_space" in n)
    again, _ = run(cfg, dry=False)  # the floor is met now: nothing more goes
    assert removed(again) == []


def test_the_floor_stops_at_keep_min_and_warns_in_dry_and_real_runs(small_fs: Path) -> None:
    fill(small_fs, "prod", 12)
    cfg = config(small_fs, prod={"keep_last": 12, "min_free_space": "90%", "keep_min": 3})
    before = free(small_fs)
    dry, stats = run(cfg, dry=True)
    assert len(removed(dry)) == 9
    detail = stats.targets["backups"].detail["prod"]["free_space"]
    assert detail["stopped_at_keep_min"] is True
    assert detail["projected_free_bytes"] == before + 9 * BACKUP
    (note,) = [n for n in stats.targets["backups"].notes if "min_free_space" in n]
    assert note.endswith("; still below, stopped at keep_min = 3")

    real, stats = run(cfg, dry=False)
    assert removed(real) == removed(dry)
    assert sorted(os.listdir(small_fs / "data" / "prod" / "backups")) == [
        "architect_prod_00.db", "architect_prod_01.db", "architect_prod_02.db"]
    assert free(small_fs) == before + 9 * BACKUP
    assert stats.targets["backups"].status == "ok"  # a full disk is not a failed run


def test_a_size_floor_and_the_rules_removals_add_up(small_fs: Path) -> None:
    fill(small_fs, "prod", 12)
    # the rules keep 10 (2 go anyway); then 5 MiB free is asked for
    cfg = config(small_fs, prod={"keep_last": 10, "min_free_space": "5M"})
    before = free(small_fs)
    need_more = -(-(5 * MIB - before - 2 * BACKUP) // BACKUP)
    dry, _ = run(cfg, dry=True)
    rules = [d for d in dry if d.remove and d.reason.startswith("no rule")]
    floor = [d for d in dry if d.remove and d.reason.startswith("free space")]
    assert len(rules) == 2 and len(floor) == need_more
    run(cfg, dry=False)
    assert free(small_fs) >= 5 * MIB


def test_directories_on_one_filesystem_give_up_their_oldest_backups_first(
        small_fs: Path) -> None:
    fill(small_fs, "prod", 6)                       # 1 .. 6 days old
    fill(small_fs, "qa", 6, newest_age=10 * DAY)    # 10 .. 15 days old
    cfg = config(small_fs, prod={"keep_last": 6, "min_free_space": "45%"},
                 qa={"keep_last": 6, "min_free_space": "45%"})
    dry, _ = run(cfg, dry=True)
    # 4 must go: qa's 3 oldest (keep_min 3 stops qa there), then prod's oldest
    assert removed(dry) == ["architect_prod_05.db", "architect_qa_03.db",
                            "architect_qa_04.db", "architect_qa_05.db"]
    real, _ = run(cfg, dry=False)
    assert removed(real) == removed(dry)
    assert len(os.listdir(small_fs / "data" / "qa" / "backups")) == 3
