"""backups: newest N per environment by mtime, siblings with their backup, min_age, newest kept."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from architect_cleanup.config import Config, ConfigError
from architect_cleanup.fs import OpenFiles
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets import Decision
from architect_cleanup.targets.backups import Backups
from architect_cleanup.targets.base import RunContext
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, make_config, snapshot, touch


def backups(d: Path, n: int, *, start_age: float = DAY, step: float = DAY,
            size: int = 100) -> list[Path]:
    """*n* backups, newest first, named the way the dashboard names them."""
    out = []
    for i in range(n):
        age = start_age + i * step
        out.append(touch(d / f"architect_2026{i:04d}_000000.db", age=age, size=size))
    return out


def run(cfg: object, dry_run: bool = True, **kw: object) -> tuple[object, list[Decision]]:
    seen: list[Decision] = []
    stats = CleanupWorker(dry_run=dry_run, config=cfg, now=NOW, only=["backups"],  # type: ignore[arg-type]
                          on_decision=seen.append, **kw).run_cleanup()  # type: ignore[arg-type]
    return stats, seen


def test_keeps_the_newest_n_per_environment_and_removes_the_rest(srv: Path) -> None:
    prod = backups(srv / "data/prod/backups", 14)
    test = backups(srv / "data/test/backups", 5)
    cfg = make_config(srv)
    stats, _ = run(cfg, dry_run=False)
    assert stats.backups_deleted == 4 + 2  # type: ignore[attr-defined]
    assert [p.exists() for p in prod] == [True] * 10 + [False] * 4
    assert [p.exists() for p in test] == [True] * 3 + [False] * 2
    detail = stats.targets["backups"].detail  # type: ignore[attr-defined]
    assert detail["prod"]["removed"] == 4 and detail["test"]["removed"] == 2


def test_order_is_by_mtime_not_by_name(srv: Path) -> None:
    d = srv / "data/dev/backups"
    newest_by_mtime = touch(d / "architect_20200101_000000.db", age=HOUR * 2)
    others = [touch(d / f"architect_2026110{i}_000000.db", age=DAY * (i + 1)) for i in range(6)]
    run(make_config(srv), dry_run=False)
    assert newest_by_mtime.exists()
    assert [p.exists() for p in others] == [True] * 4 + [False] * 2


def test_the_shared_directory_uses_the_default_number(srv: Path) -> None:
    shared = backups(srv / "data/backups", 8)
    cfg = make_config(srv, backups={"retention": {"default": 6}})
    stats, _ = run(cfg, dry_run=False)
    assert [p.exists() for p in shared] == [True] * 6 + [False] * 2
    assert stats.targets["backups"].detail["default"]["removed"] == 2  # type: ignore[attr-defined]


def test_an_unlisted_environment_uses_the_default_number(srv: Path) -> None:
    stage = backups(srv / "data/staging/backups", 7)
    cfg = make_config(srv, environments=["prod", "staging"])
    run(cfg, dry_run=False)
    assert [p.exists() for p in stage] == [True] * 5 + [False] * 2


def test_siblings_go_with_their_backup_and_count_in_its_size(srv: Path) -> None:
    d = srv / "data/test/backups"
    bs = backups(d, 4, size=1000)
    old = bs[-1]
    wal = touch(old.with_name(old.name + "-wal"), age=10 * DAY, size=300)
    shm = touch(old.with_name(old.name + "-shm"), age=10 * DAY, size=30)
    kept_wal = touch(bs[0].with_name(bs[0].name + "-wal"), age=DAY, size=7)
    stats, _ = run(make_config(srv), dry_run=False)
    assert stats.backups_deleted == 1  # type: ignore[attr-defined]
    assert stats.space_freed == 1330  # type: ignore[attr-defined]
    assert not old.exists() and not wal.exists() and not shm.exists()
    assert kept_wal.exists()
    assert stats.targets["backups"].detail["test"]["kept_bytes"] == 3 * 1000 + 7  # type: ignore[attr-defined]


def test_a_young_backup_held_out_of_the_rules_counts_its_side_files_in_the_bytes_kept(
        srv: Path) -> None:
    d = srv / "data/test/backups"
    writing = touch(d / "architect_20261126_115500.db", age=300, size=100)
    touch(d / (writing.name + "-wal"), age=300, size=20)
    stats, _ = run(make_config(srv), dry_run=True)
    assert stats.targets["backups"].detail["test"]["kept_bytes"] == 120  # type: ignore[attr-defined]


def test_a_sibling_whose_backup_is_gone_is_left_alone_and_reported(srv: Path) -> None:
    d = srv / "data/qa/backups"
    backups(d, 6)
    orphan = touch(d / "architect_20000101_000000.db-wal", age=900 * DAY)
    stats, _ = run(make_config(srv), dry_run=False)
    assert orphan.exists()
    assert any("its backup is gone" in n for n in stats.targets["backups"].notes)  # type: ignore[attr-defined]


def test_young_backups_are_kept_and_do_not_count_toward_n(srv: Path) -> None:
    d = srv / "data/test/backups"
    writing = touch(d / "architect_20261126_115500.db", age=300)
    complete = backups(d, 5)
    _, seen = run(make_config(srv), dry_run=False)
    assert writing.exists()
    assert [p.exists() for p in complete] == [True] * 3 + [False] * 2  # 3 complete ones stay
    assert any("younger than min_age" in s.reason for s in seen if not s.remove)


def test_the_newest_backup_survives_even_a_retention_of_one(srv: Path) -> None:
    bs = backups(srv / "data/prod/backups", 3)
    run(make_config(srv, backups={"retention": {"prod": 1}}), dry_run=False)
    assert [p.exists() for p in bs] == [True, False, False]


def test_a_retention_of_zero_is_a_config_error(srv: Path) -> None:
    with pytest.raises(ConfigError, match="prod: 0 would delete every backup"):
        make_config(srv, backups={"retention": {"prod": 0}})
    with pytest.raises(ConfigError, match="would delete every backup"):
        CleanupWorker(config=make_config(srv), backup_retention=0)


def test_only_matching_names_are_backups(srv: Path) -> None:
    d = srv / "data/test/backups"
    backups(d, 3)
    keepers = [touch(d / n, age=400 * DAY) for n in ("README.txt", "notes.md", "x.db.part")]
    adhoc = touch(d / "architect.db.backup.20250101", age=400 * DAY)
    run(make_config(srv), dry_run=False)
    assert all(p.exists() for p in keepers)
    assert not adhoc.exists()  # *.db.backup.* is a backup, and the oldest


def test_future_backups_are_kept_with_a_warning(srv: Path, caplog: pytest.LogCaptureFixture
                                                ) -> None:
    d = srv / "data/test/backups"
    future = touch(d / "architect_29990101_000000.db", age=-30 * DAY)
    bs = backups(d, 4)
    run(make_config(srv), dry_run=False)
    assert future.exists()
    assert [p.exists() for p in bs] == [True] * 3 + [False]
    assert "in the future" in caplog.text


def test_a_symlinked_backup_directory_is_not_followed(srv: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    backups(victim, 12)
    (srv / "data/prod").mkdir(parents=True)
    (srv / "data/prod/backups").symlink_to(victim)
    before = snapshot(victim)
    stats, _ = run(make_config(srv), dry_run=False)
    assert snapshot(victim) == before
    assert any("a symlink, not followed" in e
               for e in stats.targets["backups"].errors)  # type: ignore[attr-defined]


def test_missing_backup_directories_are_reported_not_failures(srv: Path) -> None:
    stats, _ = run(make_config(srv), dry_run=False)
    res = stats.targets["backups"]  # type: ignore[attr-defined]
    assert res.status == "ok"
    assert any("data/prod/backups: does not exist" in n for n in res.notes)


def test_every_decision_says_why(srv: Path) -> None:
    backups(srv / "data/test/backups", 4)
    _, seen = run(make_config(srv))
    reasons = [(d.remove, d.reason) for d in seen]
    assert reasons == [(False, "newest backup of test"), (False, "newest 3 of test"),
                       (False, "newest 3 of test"), (True, "beyond the newest 3 of test")]


# --- Backups._row, _apply_verdict, _kept_bytes: the inventory rows (``backups list``) ---------


def judge(cfg: Config, *, dry_run: bool = True, open_files: bool = False,
          decisions: list[Decision] | None = None
          ) -> tuple[list[dict[str, object]], TargetResult]:
    """The backups target itself, on the test clock (as ``backups list`` runs it): its
    inventory rows and its result (and its decisions into *decisions*, when given)."""
    target = Backups()
    ctx = RunContext(config=cfg, now=NOW, dry_run=dry_run, source="test",
                     open_files=OpenFiles() if open_files else None,
                     on_decision=None if decisions is None else decisions.append)
    result = TargetResult("backups")
    try:
        target.run(ctx, result)
    finally:
        ctx.close()
    return target.inventory, result


def test_each_backup_has_one_inventory_row_with_its_files_size_state_and_verdict(
        srv: Path) -> None:
    d = srv / "data/prod/backups"
    young = touch(d / "architect_20261126_115000.db", age=600, size=5)
    newest = touch(d / "architect_20261125_000000.db", age=DAY, size=10)
    wal = touch(d / (newest.name + "-wal"), age=DAY, size=3)
    zst = touch(d / "architect_20261120_000000.db.zst", age=6 * DAY, size=20)
    shm = touch(d / (zst.name + "-shm"), age=6 * DAY, size=4)
    rows, result = judge(make_config(srv, backups={"retention": {"prod": 1},
                                                   "shared_dir": ""}))

    def row(p: Path, files: list[Path], verdict: str, reason: str,
            detail: str = "verification is off") -> dict[str, object]:
        return {"env": "prod", "name": p.name, "backup": p.name.removesuffix(".zst"),
                "path": str(p), "mtime": p.stat().st_mtime,
                "size": sum(f.stat().st_size for f in files),
                "files": [f.name for f in files], "state": "unverified",
                "detail": detail, "compressed": p.suffix == ".zst",
                "uploaded": None, "uploaded_sha256": None,
                "verdict": verdict, "reason": reason}

    assert rows == [  # the held ones first (never checked), then by the policy's order
        row(young, [young], "keep", "10 minutes old, younger than min_age: may still be "
                                    "being written (not counted)", "not checked"),
        row(newest, [newest, wal], "keep", "newest backup of prod"),
        row(zst, [zst, shm], "remove", "beyond the newest 1 of prod"),
    ]
    assert result.detail["prod"] == {"removed": 1, "bytes": 24, "kept": 2,
                                     "kept_bytes": 5 + 10 + 3}


def test_a_dry_run_row_says_which_kept_backups_would_be_compressed(srv: Path) -> None:
    d = srv / "data/prod/backups"
    recent = touch(d / "architect_20261126_000000.db", age=12 * HOUR, size=10)
    old = touch(d / "architect_20261123_000000.db", age=3 * DAY, size=10)
    rows, result = judge(make_config(srv, backups={
        "retention": {"prod": 5}, "shared_dir": "", "compress": {"after": "1d"}}))
    assert {r["name"]: r["reason"] for r in rows} == {
        recent.name: "newest backup of prod",
        old.name: "newest 5 of prod; would be compressed"}
    assert result.detail["prod"]["compressed"] == 1


# --- Backups._list: what is listed as a backup or a side file ---------------------------------


def test_unfinished_copies_of_compression_and_download_are_neither_listed_nor_noted(
        srv: Path) -> None:
    d = srv / "data/prod/backups"
    bs = backups(d, 12, size=10)
    temps = [touch(d / n, age=DAY, size=1) for n in (
        ".architect-cleanup-zst.0a1b2c3d.architect_20261101_000000.db-wal.zst",
        ".architect-cleanup-zst.0a1b2c3d4e5f.architect_20261101_000000.db",
        ".architect-cleanup-download.0a1b.architect_20261101_000000.db-wal")]
    rows, result = judge(make_config(srv, backups={"retention": {"prod": 12},
                                                   "shared_dir": ""}))
    assert sorted(r["name"] for r in rows) == sorted(p.name for p in bs)
    assert result.checked == 12
    assert [n for n in result.notes if "does not exist" not in n] == []
    assert all(p.exists() for p in temps)


def test_a_backup_deleted_between_the_listing_and_its_stat_is_skipped_and_the_rest_listed(
        srv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's own rotation may delete a backup while the directory is being read:
    that one is passed over, every other one is still judged."""
    import architect_cleanup.targets.backups as mod

    d = srv / "data/prod/backups"
    bs = backups(d, 6, size=10)
    real = os.scandir
    gone: list[str] = []

    class Racing:
        """The directory's entries, the first backup deleted just after it is read."""

        def __init__(self, fd: int) -> None:
            self.it = real(fd)

        def __enter__(self) -> Racing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.it.close()

        def __iter__(self) -> Racing:
            return self

        def __next__(self) -> os.DirEntry[str]:
            entry = next(self.it)
            if not gone:
                gone.append(entry.name)
                os.unlink(d / entry.name)
            return entry

    monkeypatch.setattr(mod.os, "scandir", Racing)
    rows, result = judge(make_config(srv, backups={"retention": {"prod": 2},
                                                   "shared_dir": ""}))
    monkeypatch.undo()
    assert sorted(r["name"] for r in rows) == sorted(p.name for p in bs if p.name not in gone)
    assert result.checked == 5


# --- Backups._pair_siblings: side files and compressed twins under their backup ---------------


def test_side_files_go_with_their_backup_whichever_of_the_two_is_compressed(srv: Path) -> None:
    d = srv / "data/prod/backups"
    names = {
        "architect_20261101_000000.db.zst": ["architect_20261101_000000.db-wal.zst"],
        "architect_20261102_000000.db.zst": ["architect_20261102_000000.db-wal"],
        "architect_20261103_000000.db": ["architect_20261103_000000.db-journal.zst"],
        # a crash between compressing and removing the original: one backup
        "architect_20261104_000000.db": ["architect_20261104_000000.db.zst",
                                         "architect_20261104_000000.db-shm",
                                         "architect_20261104_000000.db-wal.zst"],
    }
    for i, (main, sides) in enumerate(sorted(names.items())):
        for n in (main, *sides):
            touch(d / n, age=(10 - i) * DAY, size=1)
    rows, result = judge(make_config(srv, backups={"retention": {"prod": 10},
                                                   "shared_dir": ""}))
    assert {str(r["name"]): (r["files"][0], sorted(r["files"][1:]), r["size"])  # type: ignore[index]
            for r in rows} == {m: (m, sorted(s), 1 + len(s)) for m, s in names.items()}
    assert [n for n in result.notes if "does not exist" not in n] == []


# --- Backups._apply_verdict: a backup to remove without a verified copy in the bucket ---------


def test_backups_to_remove_stay_with_the_reason_when_the_bucket_cannot_be_reached(
        srv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bs = backups(srv / "data/prod/backups", 3, size=10)
    creds = tmp_path / "s3"
    creds.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    creds.chmod(0o600)
    cfg = make_config(srv, backups={"retention": {"prod": 1}, "shared_dir": "", "offload": {
        "url": "s3://nowhere/x", "endpoint": "http://127.0.0.1:9", "credentials": str(creds)}})
    creds.unlink()  # offload is unavailable: no client, no request
    seen: list[Decision] = []
    with caplog.at_level(logging.INFO, logger="architect_cleanup.targets.backups"):
        rows, result = judge(cfg, dry_run=False, decisions=seen)
    why = "beyond the newest 1 of prod; kept: no verified copy in the bucket"
    assert [(r["name"], r["verdict"], r["reason"]) for r in rows] == [
        (bs[0].name, "keep", "newest backup of prod"),
        *((p.name, "keep", why) for p in bs[1:])]
    assert [(d.path, d.remove, d.reason) for d in seen] == [
        (str(bs[0]), False, "newest backup of prod"), *((str(p), False, why) for p in bs[1:])]
    assert "backups: prod: kept 3, removed 0 by backups.retention.prod (last 1)" in [
        r.getMessage() for r in caplog.records]
    assert result.detail["prod"] == {"removed": 0, "bytes": 0, "kept": 3, "kept_bytes": 30}
    assert result.message == (f"prod: offload unavailable, 2 backup(s) kept: credentials "
                              f"{creds}: cannot open: No such file or directory")
    assert all(p.exists() for p in bs)


# --- Backups.run: the caches in the state directory ------------------------------------------


def test_with_verification_and_offload_off_their_caches_are_neither_read_nor_written(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    backups(srv / "data/prod/backups", 4)
    state = Path(os.environ["STATE_DIRECTORY"])
    state.mkdir(parents=True)
    for n in ("backup-verify.json", "backup-offload.json"):  # left from when they were on
        (state / n).write_text("{not json")
    caplog.set_level(logging.WARNING, logger="architect_cleanup")
    _, result = judge(make_config(srv, backups={"retention": {"prod": 2}}))
    assert result.removed == 2
    assert sorted(p.name for p in state.iterdir()) == ["backup-offload.json",
                                                       "backup-verify.json"]
    assert all(p.read_text() == "{not json" for p in state.iterdir())
    assert caplog.records == []


def test_without_remote_the_target_asks_nothing_of_the_bucket(srv: Path, tmp_path: Path
                                                               ) -> None:
    """``backups list`` without ``--remote`` (``remote = False``): remote retention is not
    even tried; with it, a bucket that cannot be reached fails the run."""
    backups(srv / "data/prod/backups", 3, size=10)
    creds = tmp_path / "s3"
    creds.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    creds.chmod(0o600)
    cfg = make_config(srv, backups={"retention": {"prod": 1}, "shared_dir": "", "offload": {
        "url": "s3://nowhere/x", "endpoint": "http://127.0.0.1:9", "credentials": str(creds),
        "policy": {"prod": {"keep_last": 1}}}})
    creds.unlink()
    results = []
    for remote in (False, True):
        target = Backups()
        target.remote = remote
        ctx = RunContext(config=cfg, now=NOW, dry_run=True, source="test")
        result = TargetResult("backups")
        try:
            target.run(ctx, result)
        finally:
            ctx.close()
        results.append(result)
        assert result.detail["prod"]["to_upload"] == 2
    assert results[0].status == "ok" and "remote_removed" not in results[0].detail["prod"]
    assert results[1].status == "failed"
    assert results[1].message.startswith("prod: remote retention: credentials ")
