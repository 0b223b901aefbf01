"""backups: only known-good backups count; corrupt ones are reported and kept; compressed
backups are the same backups; kept old ones are compressed, proven before the original goes."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard
from backupkit import (
    backup_with_wal,
    compressible,
    corrupt_db,
    make_db,
    sha256,
    zstd_decompress,
    zstd_test,
)
from test_backups import judge

from architect_cleanup import cli
from architect_cleanup.backup_compress import TMP_PREFIX
from architect_cleanup.fs import OpenFiles
from architect_cleanup.journal import MESSAGE_IDS
from architect_cleanup.retention import format_size
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets import Decision
from architect_cleanup.targets.backups import Backups
from architect_cleanup.targets.base import Interrupted, RunContext
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, NOW, NOW_TS, make_config, touch


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tpl")
    good = make_db(d / "good.db", rows=2000)
    bad = make_db(d / "bad.db", rows=2000)
    corrupt_db(bad)
    return good, bad


def put(src: Path, d: Path, name: str, age: float) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    shutil.copyfile(src, p)
    os.utime(p, (NOW_TS - age, NOW_TS - age))
    return p


def name(i: int) -> str:
    return f"architect_202611{26 - i:02d}_030000.db"


def cfg(srv: Path, **backups: object) -> object:
    backups.setdefault("verify", {"check": "quick"})
    return make_config(srv, backups=backups)


def run(config: object, dry_run: bool = False) -> tuple[object, dict[str, Decision]]:
    seen: dict[str, Decision] = {}
    stats = CleanupWorker(dry_run=dry_run, config=config, now=NOW,  # type: ignore[arg-type]
                          only=["backups"],
                          on_decision=lambda d: seen.__setitem__(Path(d.path).name, d)
                          ).run_cleanup()
    return stats, seen


def test_a_corrupt_newest_backup_is_not_the_protected_newest_and_uses_no_keep_count(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, bad = template
    d = srv / "data/prod/backups"
    newest = put(bad, d, name(0), DAY)
    goods = [put(good, d, name(i), DAY * (i + 1)) for i in range(1, 6)]
    stats, seen = run(cfg(srv, retention={"prod": 2}))
    assert newest.exists()  # kept, reported, not counted
    assert "corrupt" in seen[newest.name].reason and not seen[newest.name].remove
    # keep 2 means the two newest GOOD ones: the corrupt one used up no count
    assert [p.exists() for p in goods] == [True, True, False, False, False]
    assert seen[goods[0].name].reason == "newest backup of prod"
    assert stats.backups_deleted == 3  # type: ignore[attr-defined]


def test_older_good_backups_are_never_removed_because_corrupt_newer_ones_exist(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, bad = template
    d = srv / "data/prod/backups"
    corrupt = [put(bad, d, name(i), DAY * (i + 1)) for i in range(5)]
    goods = [put(good, d, name(i), DAY * (i + 1)) for i in range(5, 8)]
    run(cfg(srv, retention={"prod": 3}))
    assert all(p.exists() for p in corrupt + goods)


def test_a_corrupt_newest_backup_is_a_journal_warning_a_note_and_in_status(
        srv: Path, template: tuple[Path, Path], caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = template
    d = srv / "data/prod/backups"
    put(bad, d, "architect_20261126_030000.db", DAY / 2)
    put(good, d, "architect_20261125_030000.db", DAY * 1.5)
    with caplog.at_level(logging.WARNING):
        stats, _ = run(cfg(srv, retention={"prod": 2}), dry_run=True)
    rec = [r for r in caplog.records
           if getattr(r, "MESSAGE_ID", None) == MESSAGE_IDS["backup_corrupt"].hex]
    assert len(rec) == 1
    text = rec[0].getMessage()
    assert "prod: newest backup architect_20261126_030000.db is corrupt (" in text
    assert "newest good one is from 2026-11-25" in text
    assert rec[0].CLEANUP_PATH.endswith("architect_20261126_030000.db")
    assert any("is corrupt" in w for w in stats.warnings())  # type: ignore[attr-defined]
    assert "newest backup architect_20261126_030000.db is corrupt" in json.dumps(
        stats.to_dict())  # type: ignore[attr-defined]
    capsys.readouterr()
    assert cli.main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any("prod: newest backup architect_20261126_030000.db is corrupt" in w
               for w in doc["warnings"])
    assert cli.main(["status"]) == 0
    assert "Warning:     prod: newest backup" in capsys.readouterr().out


def test_corrupt_backups_go_only_after_remove_corrupt_after_with_their_side_files(
        srv: Path, template: tuple[Path, Path]) -> None:
    """SPEC: a side file goes with its backup; one whose backup is gone would be an orphan."""
    good, bad = template
    d = srv / "data/prod/backups"
    young = put(bad, d, name(0), DAY)
    old = put(bad, d, name(9), DAY * 10)
    put(good, d, name(3), DAY * 4)
    sides = [touch(Path(f"{p}{s}"), age=a, size=7)
             for p, a in ((young, DAY), (old, 10 * DAY)) for s in ("-wal", "-shm")]
    stats, seen = run(cfg(srv, verify={"check": "quick", "remove_corrupt_after": "7d"}))
    assert [n for n, x in seen.items() if x.remove] == [old.name]
    assert [p.exists() for p in (young, *sides[:2], old, *sides[2:])] == [
        True, True, True, False, False, False]
    detail = stats.targets["backups"].detail["prod"]  # type: ignore[attr-defined]
    assert detail["kept_bytes"] == (
        good.stat().st_size + bad.stat().st_size + 2 * 7)  # the young one with its sides
    assert detail["bytes"] == bad.stat().st_size + 2 * 7


def test_each_backup_is_checked_once_the_verdict_is_cached_by_identity(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    p = put(good, d, name(1), DAY)
    run(cfg(srv), dry_run=True)
    cache = json.loads((Path(os.environ["STATE_DIRECTORY"]) / "backup-verify.json").read_text())
    assert [e["state"] for e in cache["entries"].values()] == ["good"]
    # the same identity is not read again: a cached verdict answers even if content changed
    # without the identity changing (here: replaced in place keeping inode, size and times is
    # impossible to fake, so check the cache file is not rewritten on the second run)
    before = (Path(os.environ["STATE_DIRECTORY"]) / "backup-verify.json").stat().st_mtime_ns
    run(cfg(srv), dry_run=True)
    assert (Path(os.environ["STATE_DIRECTORY"]) / "backup-verify.json"
            ).stat().st_mtime_ns == before
    assert p.exists()


def test_a_compressed_backup_is_the_same_backup_same_time_rules_and_reasons(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    plain_dir, zst_dir = srv / "data/prod/backups", srv / "data/qa/backups"
    for i in range(6):
        put(good, plain_dir, name(i), DAY * (i + 1))
        p = put(good, zst_dir, name(i), DAY * (i + 1))
        if i % 2:
            os.system(f"zstd -q --rm {p}")
            os.utime(str(p) + ".zst", (NOW_TS - DAY * (i + 1),) * 2)
    _, seen = run(cfg(srv, policy={"prod": {"keep_daily": 3}, "qa": {"keep_daily": 3}}),
                  dry_run=True)
    for i in range(6):
        zname = name(i) + (".zst" if i % 2 else "")
        a, b = seen[name(i)], seen[zname]
        assert (a.remove, a.reason.replace("prod", "qa")) == (b.remove, b.reason)


def test_kept_backups_older_than_after_are_compressed_and_proven_first(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    new = put(good, d, name(0), DAY / 2)
    old = put(good, d, name(2), DAY * 3)
    wal = d / (old.name + "-wal")
    wal.write_bytes(b"")  # an empty -wal: a side file that goes with it
    os.utime(wal, (NOW_TS - DAY * 3,) * 2)
    digest = sha256(old)
    config = cfg(srv, retention={"prod": 5}, compress={"after": "1d"})
    stats, _ = run(config, dry_run=True)
    assert old.exists() and not Path(str(old) + ".zst").exists()
    assert stats.targets["backups"].detail["prod"]["compressed"] == 1  # type: ignore[attr-defined]
    run(config)
    zst = Path(str(old) + ".zst")
    assert new.exists() and not old.exists() and zst.exists()
    zstd_test(zst)
    out = d / "restored.db"
    zstd_decompress(zst, out)
    assert sha256(out) == digest
    assert zst.stat().st_mtime == pytest.approx(NOW_TS - DAY * 3)
    out.unlink()
    # the next run sees the same backup, good, and leaves it alone
    _, seen = run(config)
    assert zst.name in seen and not seen[zst.name].remove and zst.exists()


def test_a_dry_run_with_compression_and_offload_changes_nothing(
        srv: Path, template: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    for i in range(4):
        put(good, d, name(i), DAY * (i + 1))
    before = {p.name: sha256(p) for p in d.iterdir()}
    creds = tmp_path / "s3"
    creds.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    creds.chmod(0o600)
    run(cfg(srv, retention={"prod": 1}, compress={"after": "1h"},
            offload={"url": "s3://nowhere/x", "endpoint": "http://127.0.0.1:9",
                     "credentials": str(creds)}), dry_run=True)
    assert {p.name: sha256(p) for p in d.iterdir()} == before


def test_each_environment_says_whether_its_newest_backup_is_good(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, bad = template
    put(bad, srv / "data/prod/backups", name(0), DAY)
    put(good, srv / "data/prod/backups", name(1), 2 * DAY)
    put(good, srv / "data/qa/backups", name(0), DAY)
    (srv / "data/dev/backups").mkdir(parents=True)
    (srv / "data/dev/backups" / "architect_x.bak").write_bytes(b"other")
    os.utime(srv / "data/dev/backups" / "architect_x.bak", (NOW_TS - DAY,) * 2)
    stats, _ = run(cfg(srv), dry_run=True)
    detail = stats.targets["backups"].detail  # type: ignore[attr-defined]
    assert (detail["prod"]["newest_ok"], detail["qa"]["newest_ok"],
            detail["dev"]["newest_ok"]) == (False, True, None)


def test_the_history_records_whether_each_newest_backup_is_good(
        srv: Path, template: tuple[Path, Path]) -> None:
    from architect_cleanup.runhistory import backup_records

    good, bad = template
    put(bad, srv / "data/prod/backups", name(0), DAY)
    put(good, srv / "data/prod/backups", name(1), 2 * DAY)
    put(good, srv / "data/qa/backups", name(0), DAY)
    stats, _ = run(cfg(srv), dry_run=True)
    records = {r.env: r.newest_ok for r in backup_records(stats)}  # type: ignore[arg-type]
    assert records["prod"] is False and records["qa"] is True


# --- Backups._compress and _compress_one: which kept backups are compressed, and how ---------


def direct(config: object, *, dry_run: bool, open_files: OpenFiles | None = None,
           status: list[str] | None = None) -> tuple[Backups, TargetResult]:
    """The backups target run by itself (its inventory rows are read)."""
    target, result = Backups(), TargetResult("backups")
    ctx = RunContext(config, NOW, dry_run, open_files=open_files,  # type: ignore[arg-type]
                     on_status=None if status is None else status.append)
    try:
        target.run(ctx, result)
    finally:
        ctx.close()
    return target, result


def rows(target: Backups) -> dict[str, dict[str, object]]:
    return {str(r["name"]): r for r in target.inventory}


def test_a_dry_run_counts_logs_and_lists_only_the_kept_backups_older_than_after(
        srv: Path, template: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    put(good, d, name(0), DAY / 2)  # younger than after
    put(good, d, name(1), DAY)  # exactly after: not older
    old = [put(good, d, name(i), DAY * (i + 1)) for i in (2, 3)]
    # already compressed by their content: never compressed again
    gz = d / "architect_20261101_030000.db.gz"
    gz.write_bytes(gzip.compress(good.read_bytes()[:4096]))
    bak = d / "architect_20261102_030000.bak"
    bak.write_bytes(zstandard.ZstdCompressor().compress(b"x" * 4096))
    for p in (gz, bak):
        os.utime(p, (NOW_TS - 20 * DAY,) * 2)
    caplog.set_level("INFO", logger="architect_cleanup")
    target, result = direct(cfg(srv, retention={"prod": 10}, compress={"after": "1d"}),
                            dry_run=True)
    assert result.detail["prod"]["compressed"] == 2
    assert [m for m in (r.getMessage() for r in caplog.records) if "would compress" in m] == [
        f"backups: would compress {p} (older than 1d)" for p in old]
    compressed = sorted(n for n, r in rows(target).items()
                        if str(r["reason"]).endswith("; would be compressed"))
    assert compressed == sorted(p.name for p in old)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [name(0), name(1), *(p.name for p in old), gz.name, bak.name])


def test_compression_shows_its_progress_skips_a_backup_held_open_and_goes_on(
        srv: Path, template: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("architect_cleanup.targets.base.PROGRESS_INTERVAL", 0.0)
    good, _ = template
    d = srv / "data/prod/backups"
    put(good, d, name(0), DAY / 2)
    held, old = put(good, d, name(2), 3 * DAY), put(good, d, name(3), 4 * DAY)
    status: list[str] = []
    with open(held, "rb"):
        target, result = direct(cfg(srv, retention={"prod": 10}, compress={"after": "1d"}),
                                dry_run=False, open_files=OpenFiles(), status=status)
    assert [s for s in status if "compressing" in s] == [
        "backups: prod: compressing 1/2", "backups: prod: compressing 2/2"]
    assert held.exists() and not old.exists() and Path(f"{old}.zst").exists()
    assert result.detail["prod"]["compressed"] == 1
    assert rows(target)[old.name + ".zst"]["compressed"] is True  # the row under its new name
    assert rows(target)[held.name]["compressed"] is False


def test_a_compressed_backup_is_recorded_with_its_new_files_check_and_sizes(
        srv: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "data/prod/backups"
    d.mkdir(parents=True)
    db, wal = backup_with_wal(d, name(3), rows=300)
    for p in (db, wal):
        os.utime(p, (NOW_TS - 4 * DAY,) * 2)
    before = db.stat().st_size + wal.stat().st_size
    put(make_db(srv / "young.db", rows=10), d, name(0), DAY / 2)
    put(make_db(srv / "older.db", rows=10), d, name(5), 6 * DAY)
    caplog.set_level("INFO", logger="architect_cleanup")
    target, result = direct(cfg(srv, retention={"prod": 5}, compress={"after": "1d"},
                                verify={"check": "full"}), dry_run=False)
    zst, wal_zst = Path(f"{db}.zst"), Path(f"{wal}.zst")
    assert not db.exists() and zst.exists() and wal_zst.exists() and result.errors == []
    assert result.detail["prod"]["compressed"] == 2
    after = zst.stat().st_size + wal_zst.stat().st_size
    row = rows(target)[zst.name]
    assert (row["files"], row["size"], row["mtime"], row["state"]) == (
        [zst.name, wal_zst.name], after, NOW_TS - 4 * DAY, "good")
    assert (f"backups: compressed {db} to {zst.name} ({format_size(before)} -> "
            f"{format_size(after)})") in [r.getMessage() for r in caplog.records]
    cache = json.loads((Path(os.environ["STATE_DIRECTORY"]) / "backup-verify.json"
                        ).read_text())["entries"]
    [entry] = [e for e in cache.values() if e["path"] == str(zst)]
    assert (entry["state"], entry["kind"], entry["check"]) == ("good", "zstd", "full")


def test_the_configured_zstd_level_is_the_one_used(tmp_path: Path) -> None:
    sizes = []
    data = compressible(256 << 10)  # the same bytes for both (it has random noise in it)
    for level in (1, 19):
        root = tmp_path / f"level{level}"
        d = root / "data/prod/backups"
        d.mkdir(parents=True)
        (d / name(3)).write_bytes(data)
        os.utime(d / name(3), (NOW_TS - 4 * DAY,) * 2)
        direct(make_config(root, backups={"retention": {"prod": 5},
                                          "compress": {"after": "1d", "level": level}}),
               dry_run=False)
        sizes.append((d / f"{name(3)}.zst").stat().st_size)
    assert sizes[1] < sizes[0]


def test_a_stop_request_during_compression_interrupts_the_run_and_keeps_the_original(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    old = put(good, d, name(3), 4 * DAY)
    digest = sha256(old)
    target, result = Backups(), TargetResult("backups")
    ctx = RunContext(cfg(srv, retention={"prod": 5}, compress={"after": "1d"}),  # type: ignore[arg-type]
                     NOW, False, should_stop=lambda: any(
                         p.name.startswith(TMP_PREFIX) for p in d.iterdir()))
    with pytest.raises(Interrupted) as stop:
        target.run(ctx, result)
    ctx.close()
    assert str(stop.value) == "stopped on request"
    assert [p.name for p in d.iterdir()] == [old.name] and sha256(old) == digest


def test_a_backup_that_cannot_be_compressed_is_kept_and_named_with_why(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    old = put(good, d, name(3), 4 * DAY)
    (d / f"{old.name}-wal").mkdir()  # not a regular file: compression refuses the backup
    _, result = direct(cfg(srv, retention={"prod": 5}, compress={"after": "1d"}),
                            dry_run=False)
    assert result.errors == [f"prod: {old.name}: not compressed: {old.name}-wal: not a "
                             f"regular file; {old.name} left as it is"]
    assert old.exists() and not Path(f"{old}.zst").exists()
    assert "compressed" not in result.detail["prod"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_during_compression_is_named_by_its_reason_and_keeps_the_backup(
        tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        d = mnt / "data/prod/backups"
        d.mkdir(parents=True)
        bak = d / "architect_20261120_030000.bak"
        bak.write_bytes(os.urandom(3 << 20))  # 3 MiB + a 3 MiB copy > 4 MiB
        os.utime(bak, (NOW_TS - 4 * DAY,) * 2)
        _, result = direct(make_config(mnt, backups={"retention": {"prod": 5},
                                                     "compress": {"after": "1d"}}),
                           dry_run=False)
        assert result.errors == [f"prod: {bak.name}: not compressed: No space left on device"]
        assert [p.name for p in d.iterdir()] == [bak.name]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs root")
def test_an_original_that_cannot_be_removed_after_compression_is_named_and_kept(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    old = put(good, d, name(3), 4 * DAY)
    subprocess.run(["chattr", "+i", str(old)], check=True)
    try:
        target, result = direct(cfg(srv, retention={"prod": 5}, compress={"after": "1d"}),
                                dry_run=False)
    finally:
        subprocess.run(["chattr", "-i", str(old)], check=True)
    assert result.errors == [f"prod: {old.name}: compressed, but the original stays: [Errno 1] "
                             f"Operation not permitted: '{old.name}'"]
    assert old.exists() and Path(f"{old}.zst").exists()
    assert "compressed" not in result.detail["prod"]
    assert old.name in rows(target) and f"{old.name}.zst" not in rows(target)


# --- Backups._apply_corrupt, _kept_bytes, _row: what happens to each corrupt backup -----------


def test_a_corrupt_backup_is_kept_up_to_remove_corrupt_after_inclusive_and_says_why(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, bad = template
    d = srv / "data/prod/backups"
    newest = put(good, d, name(0), DAY)
    at = put(bad, d, name(5), 5 * DAY)  # exactly remove_corrupt_after old: kept
    older = put(bad, d, name(6), 6 * DAY)
    held = put(bad, d, name(7), 7 * DAY)  # would go, but a process holds it open
    with open(held, "ab") as fh:  # (of another size than the one that goes)
        fh.write(b"x" * 1000)
    os.utime(held, (NOW_TS - 7 * DAY,) * 2)
    config = cfg(srv, shared_dir="", verify={"check": "quick", "remove_corrupt_after": "5d"})
    fd = os.open(held, os.O_RDONLY)
    try:
        rows, result = judge(config, dry_run=False, open_files=True)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    by_name = {r["name"]: r for r in rows}
    detail = by_name[at.name]["detail"]
    assert by_name[at.name]["state"] == by_name[held.name]["state"] == "corrupt"
    assert by_name[held.name]["detail"] == detail and detail
    assert {n: (r["verdict"], r["reason"]) for n, r in by_name.items()} == {
        newest.name: ("keep", "newest backup of prod"),
        at.name: ("keep", f"corrupt ({detail}): not counted, kept (younger than "
                          "remove_corrupt_after 5d)"),
        older.name: ("remove", f"corrupt ({detail}), 6 days old > remove_corrupt_after 5d"),
        held.name: ("keep", f"corrupt ({detail}), 7 days old > remove_corrupt_after 5d"),
    }
    assert (by_name[newest.name]["state"], by_name[newest.name]["detail"]) == (
        "good", "quick_check: ok")
    assert newest.exists() and at.exists() and held.exists() and not older.exists()
    sizes = sum(p.stat().st_size for p in (newest, at, held))
    assert result.detail["prod"]["kept_bytes"] == sizes
    assert (result.removed, result.detail["prod"]["corrupt"]) == (1, 3)
    assert {k: result.detail["prod"][k] for k in ("removed", "bytes", "kept")} == {
        "removed": 1, "bytes": bad.stat().st_size, "kept": 3}


def test_without_remove_corrupt_after_every_corrupt_backup_is_kept_and_counts_as_kept_bytes(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, bad = template
    d = srv / "data/prod/backups"
    put(good, d, name(0), DAY)
    old = put(bad, d, name(9), 400 * DAY)
    rows, result = judge(cfg(srv, shared_dir=""), dry_run=True)  # type: ignore[arg-type]
    (row,) = [r for r in rows if r["name"] == old.name]
    assert (row["verdict"], row["reason"]) == (
        "keep", f"corrupt ({row['detail']}): not counted, kept (remove_corrupt_after is "
                "not set)")
    assert result.detail["prod"]["kept_bytes"] == 2 * old.stat().st_size
    assert result.removed == 0


# --- Backups._report_corrupt: the warning when the newest backups are corrupt -----------------


def test_only_corrupt_backups_warn_that_there_is_no_good_backup_naming_the_newest(
        srv: Path, template: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    _, bad = template
    d = srv / "data/prod/backups"
    older = put(bad, d, "architect_zz_old.db", 3 * DAY)  # last by name, not by time
    twin_a = d / "architect_20261125_030000.db"
    twin_a.write_bytes(b"torn copy")  # corrupt in another way
    os.utime(twin_a, (NOW_TS - DAY,) * 2)
    twin_b = put(bad, d, "architect_20261125_030000.db.bak", DAY)  # the same time: by name
    with caplog.at_level(logging.WARNING, logger="architect_cleanup.targets.backups"):
        rows, result = judge(cfg(srv, shared_dir=""))  # type: ignore[arg-type]
    detail = next(r["detail"] for r in rows if r["name"] == twin_b.name)
    text = f"prod: newest backup {twin_b.name} is corrupt ({detail}); there is no good backup"
    assert result.detail["prod"] == {"removed": 0, "bytes": 0, "kept": 3,
                                     "kept_bytes": sum(p.stat().st_size
                                                       for p in (older, twin_a, twin_b)),
                                     "newest_ok": False, "corrupt": 3, "warning": text}
    assert text in result.notes
    (rec,) = [r for r in caplog.records if r.getMessage().startswith("backups: prod: newest")]
    assert rec.getMessage() == f"backups: {text}"
    journal = (rec.MESSAGE_ID, rec.CLEANUP_TARGET, rec.CLEANUP_ENV, rec.CLEANUP_PATH,
               rec.CLEANUP_ERROR)
    assert journal == (MESSAGE_IDS["backup_corrupt"].hex, "backups", "prod", str(twin_b),
                       detail)
    assert twin_a.exists() and twin_b.exists() and older.exists()


def test_a_corrupt_backup_as_old_as_the_newest_good_one_is_not_newer_and_not_warned_about(
        srv: Path, template: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    good, bad = template
    d = srv / "data/prod/backups"
    put(good, d, "architect_20261125_030000.db", DAY)
    put(bad, d, "architect_20261125_030000.db.bak", DAY)
    put(bad, d, name(4), 4 * DAY)
    with caplog.at_level(logging.WARNING, logger="architect_cleanup.targets.backups"):
        _, result = judge(cfg(srv, shared_dir=""))  # type: ignore[arg-type]
    assert result.detail["prod"]["corrupt"] == 2
    assert "warning" not in result.detail["prod"]
    assert not any("is corrupt" in n for n in result.notes)
    assert not any("is corrupt" in r.getMessage() for r in caplog.records)


def test_a_directory_with_only_a_young_backup_says_nothing_of_its_newest_backup(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    young = put(good, srv / "data/prod/backups", name(0), 600)
    rows, result = judge(cfg(srv, shared_dir=""))  # type: ignore[arg-type]
    assert [(r["name"], r["state"]) for r in rows] == [(young.name, "unverified")]
    assert "newest_ok" not in result.detail["prod"] and result.status == "ok"


# --- Backups._save_caches: a verdict cache that cannot be written -----------------------------


def test_a_verdict_cache_that_cannot_be_saved_is_a_note_naming_it_and_why(
        srv: Path, template: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good, _ = template
    put(good, srv / "data/prod/backups", name(0), DAY)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("STATE_DIRECTORY", str(blocker / "state"))
    _, result = judge(cfg(srv, shared_dir=""))  # type: ignore[arg-type]
    path = blocker / "state" / "backup-verify.json"
    assert f"cannot save {path}: Not a directory" in result.notes
    assert result.status == "ok" and result.detail["prod"]["newest_ok"] is True


# --- Backups._removable: what goes up with offload on ----------------------------------------


def test_upload_all_sends_the_good_kept_backups_too_but_no_unverified_one(
        srv: Path, template: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    for i in (0, 2, 3, 4):
        put(good, d, name(i), DAY * (i + 1))
    other = d / "architect_20261124_030000.bak"  # no database: unverified, counted
    other.write_bytes(b"a dump of some other kind")
    os.utime(other, (NOW_TS - 2 * DAY,) * 2)
    creds = tmp_path / "s3"
    creds.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    creds.chmod(0o600)
    for upload, count in (("before_delete", 2), ("all", 2 + 2)):
        config = cfg(srv, shared_dir="", retention={"prod": 3}, offload={
            "url": "s3://nowhere/x", "endpoint": "http://127.0.0.1:9",
            "credentials": str(creds), "upload": upload})
        rows, result = judge(config, dry_run=True)  # type: ignore[arg-type]
        assert result.detail["prod"]["to_upload"] == count, upload
        assert [r["name"] for r in rows if r["verdict"] == "remove"] == [name(3), name(4)]


# --- Backups._apply: a backup compressed in this run is kept under its new name --------------


def test_a_backup_compressed_in_this_run_is_kept_and_listed_under_its_new_name(
        srv: Path, template: tuple[Path, Path]) -> None:
    good, _ = template
    d = srv / "data/prod/backups"
    put(good, d, name(0), DAY / 2)
    old = put(good, d, name(2), DAY * 3)
    config = cfg(srv, shared_dir="", retention={"prod": 5}, compress={"after": "1d"})
    rows, result = judge(config, dry_run=False)  # type: ignore[arg-type]
    zst = old.name + ".zst"
    assert [(r["name"], r["backup"], r["compressed"], r["verdict"], r["reason"])
            for r in rows] == [
        (name(0), name(0), False, "keep", "newest backup of prod"),
        (zst, old.name, True, "keep", "newest 5 of prod")]
    assert rows[1]["path"] == str(d / zst) and rows[1]["state"] == "good"
    assert result.detail["prod"]["compressed"] == 1
    assert not old.exists() and (d / zst).exists()
    # the bytes kept are what is on disk now: the compressed copy, not the original
    assert result.detail["prod"]["kept_bytes"] == (d / name(0)).stat().st_size + (
        d / zst).stat().st_size
