"""backups with offload, against a real S3 server (SeaweedFS on loopback): nothing is deleted
locally before its copy in the bucket is verified; remote retention; list and restore."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backupkit import backup_with_wal, make_db, rows_in, sha256, zstd_test
from seaweed import ACCESS_KEY, READER_KEY, READER_SECRET, SECRET_KEY, Seaweed, credentials_file

from architect_cleanup import cli
from architect_cleanup.backup_offload import OffloadCache
from architect_cleanup.fs import Dir
from architect_cleanup.notify import Notifier
from architect_cleanup.offload import META_MTIME, Credentials, Offload, RemoteObject, Settings
from architect_cleanup.retention import Backup, Policy, Verdict
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.backups import (
    Backups,
    _bucket_backups,
    _data_side,
    _Plan,
    _UploadProgress,
)
from architect_cleanup.targets.base import Interrupted, RunContext
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, NOW, NOW_TS, make_config

_ids = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    sw = Seaweed(str(tmp_path_factory.mktemp("seaweed"))).start()
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("tpl") / "good.db", rows=1500)


def client(endpoint: str, bucket: str) -> Offload:
    return Offload(Settings(url=f"s3://{bucket}/arch", credentials=Credentials(
        ACCESS_KEY, SECRET_KEY), endpoint=endpoint, max_attempts=1), hostname="web1")


@pytest.fixture
def bucket(server: Seaweed) -> str:
    name = f"i15-{next(_ids)}"
    client(server.endpoint, name).client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def creds(tmp_path: Path) -> str:
    return credentials_file(str(tmp_path / "s3"))


@pytest.fixture(autouse=True)
def _hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "web1")


def put(src: Path, d: Path, name: str, age: float) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    shutil.copyfile(src, p)
    os.utime(p, (NOW_TS - age, NOW_TS - age))
    return p


def name(i: int) -> str:
    return f"architect_202611{26 - i:02d}_030000.db"


def config(srv: Path, server: Seaweed, bucket: str, creds: str, **kw: object) -> object:
    offload: dict[str, object] = {"url": f"s3://{bucket}/arch", "endpoint": server.endpoint,
                                  "credentials": creds}
    offload.update(kw.pop("offload", {}))  # type: ignore[call-overload]
    backups: dict[str, object] = {"verify": {"check": "quick"}, "retention": {"prod": 2},
                                  "offload": offload}
    backups.update(kw)
    return make_config(srv, backups=backups)


def run(cfg: object, dry_run: bool = False) -> object:
    return CleanupWorker(dry_run=dry_run, config=cfg, now=NOW,  # type: ignore[arg-type]
                         only=["backups"]).run_cleanup()


def keys(server: Seaweed, bucket: str) -> list[str]:
    c = client(server.endpoint, bucket)
    return sorted(o.name for o in c.list("prod"))


def test_a_backup_retention_removes_is_uploaded_verified_then_removed(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(4)]
    digests = {p.name: sha256(p) for p in files}
    cfg = config(srv, server, bucket, creds)
    stats = run(cfg, dry_run=True)
    assert all(p.exists() for p in files) and keys(server, bucket) == []
    stats = run(cfg)
    assert stats.success and stats.backups_deleted == 2  # type: ignore[attr-defined]
    assert [p.exists() for p in files] == [True, True, False, False]
    assert keys(server, bucket) == sorted([files[2].name, files[3].name])
    c = client(server.endpoint, bucket)
    for p in files[2:]:
        assert c.verify_remote("prod", p.name).sha256 == digests[p.name]


def test_a_failed_upload_verification_keeps_the_local_backup_and_fails_the_target(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(3)]
    # another content already at the oldest backup's key: its copy cannot be verified
    c = client(server.endpoint, bucket)
    c.client.put_object(Bucket=bucket, Key=c.key("prod", files[2].name), Body=b"not it",
                        Metadata={"sha256": "0" * 64})
    conf = srv.parent / "config.toml"
    conf.write_text(json_toml(srv, server, bucket, creds))
    code = cli.main(["--config", str(conf), "run", "--force", "--only", "backups"])
    err = capsys.readouterr().err
    assert code == 1
    assert files[2].exists()  # the invariant: no verified copy, no delete
    assert files[2].name in err and "upload failed" in err
    assert [p.exists() for p in files[:2]] == [True, True]


def test_a_server_that_is_down_keeps_every_backup_and_a_rerun_completes(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        tmp_path: Path) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(3)]
    down = config(srv, server, bucket, creds, offload={"endpoint": "http://127.0.0.1:9"})
    stats = run(down)
    assert not stats.success and all(p.exists() for p in files)  # type: ignore[attr-defined]
    assert name(2) in stats.targets["backups"].message  # type: ignore[attr-defined]
    stats = run(config(srv, server, bucket, creds))
    assert stats.success and not files[2].exists()  # type: ignore[attr-defined]
    assert keys(server, bucket) == [files[2].name]


def test_wrong_credentials_keep_every_backup(
        srv: Path, server: Seaweed, bucket: str, good_db: Path, tmp_path: Path) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(3)]
    bad = credentials_file(str(tmp_path / "bad"), secret="wrong-secret")
    stats = run(config(srv, server, bucket, bad))
    assert not stats.success and all(p.exists() for p in files)  # type: ignore[attr-defined]
    assert "access denied" in stats.targets["backups"].message  # type: ignore[attr-defined]


def test_upload_all_sends_every_good_backup_once_with_its_wal(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    d.mkdir(parents=True)
    db, wal = backup_with_wal(d, name(1), rows=300)
    for p in (db, wal):
        os.utime(p, (NOW_TS - DAY, NOW_TS - DAY))
    put(good_db, d, name(0), DAY / 2)
    cfg = config(srv, server, bucket, creds, offload={"upload": "all"}, retention={"prod": 5})
    assert run(cfg).success  # type: ignore[attr-defined]
    assert keys(server, bucket) == sorted([name(0), name(1), name(1) + "-wal"])
    # the second run uploads nothing (cached as verified), and nothing local changed
    c = client(server.endpoint, bucket)
    before = {o.name: o.last_modified for o in c.list("prod")}
    assert run(cfg).success and db.exists() and wal.exists()  # type: ignore[attr-defined]
    assert {o.name: o.last_modified for o in c.list("prod")} == before


def test_upload_all_sends_an_older_backup_copied_in_after_the_newer_ones_went_up(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    """The backups already in the bucket (newest first) are passed over, not the end of the
    list: one restored from elsewhere, older than them, still goes up."""
    d = srv / "data/prod/backups"
    for i in range(2):
        put(good_db, d, name(i), DAY * (i + 1))
    cfg = config(srv, server, bucket, creds, offload={"upload": "all"}, retention={"prod": 5})
    assert run(cfg).success  # type: ignore[attr-defined]
    assert keys(server, bucket) == sorted([name(0), name(1)])
    put(good_db, d, name(5), DAY * 6)
    assert run(cfg).success  # type: ignore[attr-defined]
    assert keys(server, bucket) == sorted([name(0), name(1), name(5)])


def test_remote_retention_applies_the_offload_policy_after_a_dry_run(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "data/prod/backups"
    for i in range(4):
        put(good_db, d, name(i), DAY * (i + 1))
    keep_all = config(srv, server, bucket, creds, offload={"upload": "all"},
                      retention={"prod": 10})
    assert run(keep_all).success  # type: ignore[attr-defined]
    assert len(keys(server, bucket)) == 4
    remote = config(srv, server, bucket, creds, retention={"prod": 10},
                    offload={"upload": "all", "policy": {"prod": {"keep_last": 2}}})
    caplog.set_level("INFO", logger="architect_cleanup.targets.backups")
    stats = run(remote, dry_run=True)
    assert len(keys(server, bucket)) == 4
    assert stats.targets["backups"].detail["prod"]["remote_removed"] == 2  # type: ignore[attr-defined]
    said = "backups: prod (bucket): {} 2 of 4 by backups.offload.policy.prod"
    assert said.format("would delete") in [r.getMessage() for r in caplog.records]
    caplog.clear()
    run(remote)
    assert keys(server, bucket) == sorted([name(0), name(1)])
    assert len(list(d.iterdir())) == 4  # local copies untouched by remote retention
    assert said.format("deleted") in [r.getMessage() for r in caplog.records]


def test_a_bucket_that_refuses_deletes_fails_remote_retention_and_keeps_every_copy(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        tmp_path: Path) -> None:
    d = srv / "data/prod/backups"
    for i in range(3):
        put(good_db, d, name(i), DAY * (i + 1))
    assert run(config(srv, server, bucket, creds, offload={"upload": "all"},
                      retention={"prod": 10})).success  # type: ignore[attr-defined]
    reader = credentials_file(str(tmp_path / "reader"), access_key=READER_KEY,
                              secret=READER_SECRET)
    stats = run(config(srv, server, bucket, reader, retention={"prod": 10},
                       offload={"policy": {"prod": {"keep_last": 1}}}))
    t = stats.targets["backups"]  # type: ignore[attr-defined]
    assert not t.failed and len(t.errors) == 2  # one item's error: the target goes on
    for n, e in zip((name(1), name(2)), t.errors, strict=True):
        assert e.startswith(f"prod (bucket): {n}: not deleted: ") and "denied" in e
    assert t.detail["prod"]["remote_removed"] == 0
    assert len(keys(server, bucket)) == 3


def test_a_remote_policy_the_bucket_cannot_meet_fails_the_target_and_deletes_nothing(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    for i in range(2):
        put(good_db, d, name(i), DAY * (i + 1))
    assert run(config(srv, server, bucket, creds, offload={"upload": "all"},
                      retention={"prod": 10})).success  # type: ignore[attr-defined]
    stats = run(config(srv, server, bucket, creds, retention={"prod": 10}, offload={
        "policy": {"prod": {"keep_last": 1, "max_total_size": "1K"}}}))
    t = stats.targets["backups"]  # type: ignore[attr-defined]
    assert t.failed
    assert t.message.startswith("prod: remote retention: max_total_size 1.0 KiB of prod "
                                f"(bucket) is smaller than its newest backup {name(0)} (")
    assert len(keys(server, bucket)) == 2


def test_without_a_remote_policy_remote_copies_are_never_deleted(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(5)]
    run(config(srv, server, bucket, creds, retention={"prod": 1}))
    assert keys(server, bucket) == sorted(p.name for p in files[1:])
    run(config(srv, server, bucket, creds, retention={"prod": 1}))
    assert len(keys(server, bucket)) == 4


def test_backups_list_shows_state_compression_upload_and_verdict(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = srv / "data/prod/backups"
    for i in range(3):
        put(good_db, d, name(i), DAY * (i + 1))
    (d / name(5)).write_bytes(b"torn copy")
    os.utime(d / name(5), (NOW_TS - 6 * DAY,) * 2)
    conf = srv.parent / "config.toml"
    conf.write_text(json_toml(srv, server, bucket, creds, upload="all"))
    assert cli.main(["--config", str(conf), "run", "--force", "--only", "backups"]) == 0
    capsys.readouterr()
    assert cli.main(["--config", str(conf), "backups", "list", "--json", "--remote"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["backups"]}
    assert rows[name(0)]["state"] == "good" and rows[name(0)]["verdict"] == "keep"
    assert rows[name(0)]["uploaded"] and rows[name(0)]["remote_verified"] is True
    assert rows[name(5)]["state"] == "corrupt" and "not counted" in rows[name(5)]["reason"]
    assert rows[name(2)]["where"] == "bucket"  # removed locally, still in the bucket
    assert cli.main(["--config", str(conf), "backups", "list", "--env", "prod"]) == 0
    text = capsys.readouterr().out
    assert name(0) in text and "corrupt" in text


def test_restore_from_the_bucket_gives_back_the_backup_with_its_wal(
        srv: Path, server: Seaweed, bucket: str, creds: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = srv / "data/prod/backups"
    d.mkdir(parents=True)
    db, wal = backup_with_wal(d, name(3), rows=500)
    for p in (db, wal):
        os.utime(p, (NOW_TS - 4 * DAY,) * 2)
    put(make_db(tmp_path / "x.db", rows=10), d, name(0), DAY)
    digests = {p.name: sha256(p) for p in (db, wal)}
    conf = srv.parent / "config.toml"
    conf.write_text(json_toml(srv, server, bucket, creds, keep=1, after="1d"))
    assert cli.main(["--config", str(conf), "run", "--force", "--only", "backups"]) == 0
    assert not db.exists() and not wal.exists()
    out_dir = tmp_path / "restored"
    out_dir.mkdir()
    capsys.readouterr()
    assert cli.main(["--config", str(conf), "backups", "restore", name(3),
                     "--to", str(out_dir)]) == 0
    assert {p.name: sha256(p) for p in out_dir.iterdir()} == digests
    assert rows_in(out_dir / name(3)) == 500
    # never over an existing file
    assert cli.main(["--config", str(conf), "backups", "restore", name(3),
                     "--to", str(out_dir)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_restore_of_a_compressed_local_backup_decompresses_and_checks_it(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    d = srv / "data/prod/backups"
    old = put(good_db, d, name(2), 3 * DAY)
    put(good_db, d, name(0), DAY / 2)
    digest = sha256(old)
    conf = srv.parent / "config.toml"
    conf.write_text(json_toml(srv, server, bucket, creds, keep=5, after="1d"))
    assert cli.main(["--config", str(conf), "run", "--force", "--only", "backups"]) == 0
    zst = Path(str(old) + ".zst")
    assert zst.exists() and not old.exists()
    zstd_test(zst)
    assert cli.main(["--config", str(conf), "backups", "restore", zst.name]) == 0
    assert sha256(old) == digest and zst.exists()  # restored beside it, in its directory
    live = srv / "data/prod/architect.db"
    make_db(live, rows=5)
    shutil.copyfile(good_db, tmp_path / "architect.db")
    assert cli.main(["--config", str(conf), "backups", "restore", "architect.db",
                     "--to", str(live.parent)]) == 1
    assert sqlite3.connect(live).execute("select count(*) from t").fetchone()[0] == 5


def json_toml(srv: Path, server: Seaweed, bucket: str, creds: str, *, upload: str =
              "before_delete", keep: int = 2, after: str | None = None) -> str:
    text = (f'root = "{srv}"\n[logs]\ntmp_dir = ""\n[backups.retention]\nprod = {keep}\n'
            f'[backups.offload]\nurl = "s3://{bucket}/arch"\nendpoint = "{server.endpoint}"\n'
            f'credentials = "{creds}"\nupload = "{upload}"\n')
    if after:
        text += f'[backups.compress]\nafter = "{after}"\n'
    return text


class Recorder(Notifier):
    def __init__(self, stop_at: str | None = None) -> None:
        super().__init__(environ={})
        self.lines: list[str] = []
        self.stop_at = stop_at
        self.stop = False

    def status(self, text: str) -> None:
        self.lines.append(text)
        if self.stop_at is not None and self.stop_at in text:
            self.stop = True


def test_uploads_show_progress_in_status_and_a_stop_between_files_loses_nothing(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(4)]
    rec = Recorder(stop_at="uploading 2/2")
    stats = CleanupWorker(dry_run=False, config=config(srv, server, bucket, creds),  # type: ignore[arg-type]
                          now=NOW, only=["backups"], notifier=rec,
                          should_stop=lambda: rec.stop).run_cleanup()
    assert any(line.startswith("backups: uploading 1/2, 0.0 of 0.0 GB") for line in rec.lines)
    assert stats.targets["backups"].status != "ok"  # stopped
    assert all(p.exists() for p in files)  # the uploaded one waits for the next run
    assert keys(server, bucket) == [files[3].name] or keys(server, bucket) == [files[2].name]
    assert run(config(srv, server, bucket, creds)).success  # type: ignore[attr-defined]
    assert [p.exists() for p in files] == [True, True, False, False]
    assert keys(server, bucket) == sorted([files[2].name, files[3].name])


def test_a_copy_damaged_in_the_bucket_since_its_upload_keeps_the_local_backup(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # SeaweedFS notices the damage (its needle CRC) and stalls the GET: a short read timeout
    monkeypatch.setattr("architect_cleanup.backup_offload.Settings",
                        functools.partial(Settings, read_timeout=2.0, max_attempts=1))
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(3)]
    for p in files:  # one content per backup, so the damaged bytes are this one's
        con = sqlite3.connect(p)
        con.execute("CREATE TABLE marker(v)")
        con.execute("INSERT INTO marker VALUES (?)", (p.name * 50,))
        con.commit()
        con.close()
        os.utime(p, (NOW_TS - DAY * (files.index(p) + 1),) * 2)
    assert run(config(srv, server, bucket, creds, retention={"prod": 5},
                      offload={"upload": "all"})).success  # type: ignore[attr-defined]
    content = files[2].read_bytes()
    needle = (files[2].name * 50).encode()
    at = content.find(needle)
    assert at >= 0
    server.flip(content[at:at + 64])
    stats = run(config(srv, server, bucket, creds, retention={"prod": 2}))
    assert not stats.success and files[2].exists()  # type: ignore[attr-defined]
    assert files[2].name in stats.targets["backups"].message  # type: ignore[attr-defined]


def test_a_sigkill_during_an_upload_loses_nothing_and_the_rerun_completes(
        srv: Path, server: Seaweed, bucket: str, creds: str, tmp_path: Path) -> None:
    d = srv / "data/prod/backups"
    d.mkdir(parents=True)
    big = d / name(3)
    con = sqlite3.connect(big)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    with con:
        con.executemany("INSERT INTO t(v) VALUES (?)",
                        ((os.urandom(4096),) for _ in range(10_000)))  # 40 MB: three parts
    con.close()
    os.utime(big, (time.time() - 4 * DAY,) * 2)
    digest = sha256(big)
    newer = [put(make_db(tmp_path / f"n{i}.db", rows=10), d, name(i), DAY * (i + 1) - 3600)
             for i in range(2)]
    for p in newer:
        os.utime(p, (time.time() - DAY * (newer.index(p) + 1),) * 2)
    conf = tmp_path / "config.toml"
    conf.write_text(json_toml(srv, server, bucket, creds).replace(
        'upload = "before_delete"\n', 'upload = "before_delete"\nbandwidth = "2M"\n'))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "architect_cleanup", "--config", str(conf),
                             "run", "--force", "--only", "backups"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # at 2 MB/s the 40 MB upload takes about 20 s: kill it in the middle
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not client(server.endpoint, bucket).client.\
            list_multipart_uploads(Bucket=bucket).get("Uploads"):
        time.sleep(0.2)
    time.sleep(2.0)
    assert proc.poll() is None, "the run ended before it could be killed mid-upload"
    proc.kill()
    proc.wait(timeout=30)
    assert big.exists() and sha256(big) == digest  # nothing lost
    conf.write_text(json_toml(srv, server, bucket, creds))
    rerun = subprocess.run([sys.executable, "-m", "architect_cleanup", "--config", str(conf),
                            "run", "--force", "--only", "backups"], env=env, check=False,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not big.exists()
    c = client(server.endpoint, bucket)
    c.hostname = os.uname().nodename  # the runs' own host name (not this process's patch)
    assert c.verify_remote("prod", big.name).sha256 == digest
    assert not c.client.list_multipart_uploads(Bucket=bucket).get("Uploads")  # cleaned up


# --- Backups._delete_remote and _bucket_backups: one backup deleted from the bucket ----------


@pytest.fixture
def plan(srv: Path) -> Iterator[_Plan]:
    d = srv / "data/prod/backups"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    st = os.fstat(fd)
    p = _Plan("prod", Dir(fd, str(d), st.st_dev, st.st_ino), Policy.newest(2), "test")
    try:
        yield p
    finally:
        p.d.close()


def ctx_of(srv: Path, server: Seaweed, bucket: str, creds: str, *,
           dry_run: bool = False) -> RunContext:
    return RunContext(config(srv, server, bucket, creds), NOW, dry_run)  # type: ignore[arg-type]


def doomed(ref: str, reason: str = "beyond keep_last 2") -> Verdict[str]:
    return Verdict(Backup(ref, NOW_TS - 9 * DAY, 10, ref), False, reason)


def in_bucket(c: Offload, *names: str) -> None:
    for n in names:
        c.client.put_object(Bucket=c.location.bucket, Key=c.key("prod", n), Body=n.encode())


def test_deleting_a_backup_from_the_bucket_deletes_its_side_files_logs_and_records_it(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan,
        caplog: pytest.LogCaptureFixture) -> None:
    c = client(server.endpoint, bucket)
    in_bucket(c, name(5), name(5) + "-wal", name(4))
    target, result = Backups(), TargetResult("backups")
    caplog.set_level("INFO", logger="architect_cleanup")
    assert target._delete_remote(ctx_of(srv, server, bucket, creds), result, c, plan,
                                 "prod (bucket)", doomed(name(5)),
                                 [name(5), name(5) + "-wal"]) is True
    assert keys(server, bucket) == [name(4)] and result.errors == []
    assert (f"backups: deleted {name(5)} from the bucket (beyond keep_last 2)"
            in [r.getMessage() for r in caplog.records])
    assert target.inventory == [{"env": "prod", "name": name(5), "remote": True,
                                 "verdict": "remove", "reason": "beyond keep_last 2"}]


def test_a_dry_run_deletes_nothing_from_the_bucket_but_logs_and_records_what_it_would(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan,
        caplog: pytest.LogCaptureFixture) -> None:
    c = client(server.endpoint, bucket)
    in_bucket(c, name(5), name(5) + "-wal")
    target, result = Backups(), TargetResult("backups")
    caplog.set_level("INFO", logger="architect_cleanup")
    assert target._delete_remote(ctx_of(srv, server, bucket, creds, dry_run=True), result, c,
                                 plan, "prod (bucket)", doomed(name(5), "older than 30 days"),
                                 [name(5), name(5) + "-wal"]) is True
    assert keys(server, bucket) == sorted([name(5), name(5) + "-wal"])
    assert (f"backups: would delete {name(5)} from the bucket (older than 30 days)"
            in [r.getMessage() for r in caplog.records])
    assert target.inventory == [{"env": "prod", "name": name(5), "remote": True,
                                 "verdict": "remove", "reason": "older than 30 days"}]


def test_a_refused_delete_names_the_side_file_tried_first_and_stops_that_backup(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan,
        caplog: pytest.LogCaptureFixture) -> None:
    c = client(server.endpoint, bucket)
    in_bucket(c, name(5), name(5) + "-wal")
    refused = Offload(Settings(url=f"s3://{bucket}/arch", credentials=Credentials(
        ACCESS_KEY, "wrong-secret"), endpoint=server.endpoint, max_attempts=1),
        hostname="web1")
    target, result = Backups(), TargetResult("backups")
    caplog.set_level("INFO", logger="architect_cleanup")
    assert target._delete_remote(ctx_of(srv, server, bucket, creds), result, refused, plan,
                                 "prod (bucket)", doomed(name(5)),
                                 [name(5), name(5) + "-wal"]) is False
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"prod (bucket): {name(5)}-wal: not deleted: ")
    assert "access denied" in result.errors[0]
    assert keys(server, bucket) == sorted([name(5), name(5) + "-wal"])
    assert target.inventory == []
    assert not any("from the bucket" in r.getMessage() for r in caplog.records)


def obj(n: str, size: int, modified: float, mtime_ns: int | None = None) -> RemoteObject:
    return RemoteObject(f"arch/web1/prod/{n}", n, size, modified, mtime_ns=mtime_ns)


def test_the_buckets_side_files_go_with_their_backup_in_its_size_and_its_time() -> None:
    zst = name(3) + ".zst"
    groups, mains = _bucket_backups([
        obj(name(5), 100, NOW_TS - DAY, mtime_ns=1_700_000_000_500_000_000),
        obj(name(5) + "-wal", 20, NOW_TS - DAY),
        obj(zst, 7, NOW_TS - 2 * DAY),  # its time from the listing: no mtime recorded
        obj(name(3) + "-wal.zst", 3, NOW_TS),
        obj(name(1) + "-wal", 5, NOW_TS - 3 * DAY),  # its backup is not in the bucket
    ])
    assert groups == {name(5): [name(5), name(5) + "-wal"],
                      zst: [zst, name(3) + "-wal.zst"],
                      name(1) + "-wal": [name(1) + "-wal"]}
    assert mains == [Backup(name(5), 1_700_000_000.5, 120, name(5)),
                     Backup(name(3), NOW_TS - 2 * DAY, 10, zst),
                     Backup(name(1) + "-wal", NOW_TS - 3 * DAY, 5, name(1) + "-wal")]


# --- Backups._client, _upload_client and _data_side: the bucket's client, before uploads -----


def test_unreadable_credentials_keep_every_backup_and_say_how_many_would_have_gone(
        srv: Path, server: Seaweed, bucket: str, good_db: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(4)]
    missing = credentials_file(str(tmp_path / "gone"))
    cfg = config(srv, server, bucket, missing, retention={"prod": 1}, offload={"upload": "all"})
    os.unlink(missing)  # removed since the configuration was read
    caplog.set_level("INFO", logger="architect_cleanup")
    stats = run(cfg)
    why = f"credentials {missing}: cannot open: No such file or directory"
    assert stats.targets["backups"].message == (  # type: ignore[attr-defined]
        f"prod: offload unavailable, 3 backup(s) kept: {why}")
    assert f"backups: prod: offload unavailable: {why}" in [
        r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert all(p.exists() for p in files) and keys(server, bucket) == []


def stale_upload(c: Offload, env: str) -> None:
    c.client.create_multipart_upload(Bucket=c.location.bucket, Key=c.key(env, name(9)))


def uploads_left(c: Offload) -> list[str]:
    return sorted(u["Key"] for u in
                  c.client.list_multipart_uploads(Bucket=c.location.bucket).get("Uploads", ()))


def test_unfinished_uploads_a_crash_left_in_the_directory_are_aborted_first(
        srv: Path, server: Seaweed, bucket: str, creds: str) -> None:
    c = client(server.endpoint, bucket)
    for env in ("prod", "qa"):
        stale_upload(c, env)
    got = Backups()._upload_client(ctx_of(srv, server, bucket, creds), "prod", [], set())
    assert got is not None and got.location.bucket == bucket
    assert uploads_left(c) == [c.key("qa", name(9))]  # another directory's: its own turn


def test_unfinished_uploads_that_cannot_be_listed_are_a_warning_not_a_failure(
        srv: Path, server: Seaweed, bucket: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    c = client(server.endpoint, bucket)
    stale_upload(c, "prod")
    wrong = credentials_file(str(tmp_path / "wrong"), secret="wrong-secret")
    target = Backups()
    got = target._upload_client(ctx_of(srv, server, bucket, wrong), "prod", [], set())
    assert got is not None and got.location.bucket == bucket
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("backups: prod: ") and "access denied" in warning
    assert uploads_left(c) == [c.key("prod", name(9))]


def test_only_the_side_files_a_restore_needs_go_up_with_a_backup() -> None:
    assert [_data_side(n) for n in (
        "X.db-wal", "X.db-journal", "X.db-wal.zst", "X.db-journal.zst", "X.db-shm",
        "X.db-shm.zst", "X.db", "X.db.zst")] == [True] * 4 + [False] * 4


# --- Backups._upload, _upload_jobs, _upload_one, _known_upload, _UploadProgress and
# _remote_retention: what goes up, what is counted and said ----------------------------------


def test_a_dry_run_says_what_it_would_upload_and_counts_the_backups_it_could_then_remove(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(3)]
    caplog.set_level("INFO", logger="architect_cleanup")
    stats = run(config(srv, server, bucket, creds, retention={"prod": 1},
                       offload={"upload": "all"}), dry_run=True)
    url = f"s3://{bucket}/arch"
    assert [r.getMessage() for r in caplog.records if "would upload" in r.getMessage()] == [
        f"backups: would upload {files[1]} to {url} and verify it, then remove it",
        f"backups: would upload {files[2]} to {url} and verify it, then remove it",
        f"backups: would upload {files[0]} to {url} and verify it"]
    assert stats.targets["backups"].detail["prod"]["to_upload"] == 3  # type: ignore[attr-defined]
    assert stats.backups_deleted == 2 and keys(server, bucket) == []  # type: ignore[attr-defined]


def test_uploads_are_counted_and_remote_retention_says_what_it_deleted_by_which_policy(
        srv: Path, server: Seaweed, bucket: str, creds: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    d = srv / "data/prod/backups"
    small = make_db(tmp_path / "small.db", rows=10)
    for i in range(4):
        put(small, d, name(i), DAY * (i + 1))
    caplog.set_level("INFO", logger="architect_cleanup")
    stats = run(config(srv, server, bucket, creds, retention={"prod": 1},
                       offload={"policy": {"prod": {"keep_last": 1}}}))
    part = stats.targets["backups"].detail["prod"]  # type: ignore[attr-defined]
    assert (part["uploaded"], part["remote_removed"], part["remote_kept"]) == (3, 2, 1)
    assert keys(server, bucket) == [name(1)]
    assert ("backups: prod (bucket): deleted 2 of 3 by backups.offload.policy.prod"
            in [r.getMessage() for r in caplog.records])


def test_remote_retention_dates_each_copy_by_its_backups_time_not_its_upload(
        srv: Path, server: Seaweed, bucket: str, creds: str) -> None:
    (srv / "data/prod/backups").mkdir(parents=True)
    c = client(server.endpoint, bucket)
    # the newer backup went up first; names tell nothing (a later upload, a greater name)
    for n, age in (("architect_a.db", DAY), ("architect_b.db", 9 * DAY)):
        ns = int((NOW_TS - age) * 1e9)
        c.client.put_object(Bucket=bucket, Key=c.key("prod", n), Body=b"copy", Metadata={
            META_MTIME: f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"})
    run(config(srv, server, bucket, creds, offload={"policy": {"prod": {"keep_last": 1}}}))
    assert keys(server, bucket) == ["architect_a.db"]


def test_a_failed_upload_is_named_kept_or_not_uploaded_and_recorded_as_a_failure(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan, good_db: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    p = put(good_db, Path(plan.d.path), name(3), 4 * DAY)
    refused = Offload(Settings(url=f"s3://{bucket}/arch", credentials=Credentials(
        ACCESS_KEY, "wrong-secret"), endpoint=server.endpoint, max_attempts=1),
        hostname="web1")
    target, result = Backups(), TargetResult("backups")
    target._failures = []
    ctx = ctx_of(srv, server, bucket, creds)
    for doomed in (True, False):
        assert target._upload_one(ctx, result, refused, plan, p.name, [(p.name, p.stat())],
                                  doomed, lambda sent, total: None) is False
    assert [e.split(": upload failed, ")[0] for e in result.errors] == [f"prod: {p.name}"] * 2
    assert [e.split(": upload failed, ")[1].split(":")[0] for e in result.errors] == [
        "kept", "not uploaded"]
    assert "access denied" in result.errors[0] and target._failures == result.errors
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"backups: {e}" for e in result.errors]


def test_a_verified_upload_is_remembered_by_the_files_identity(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan, good_db: Path,
        tmp_path: Path) -> None:
    p = put(good_db, Path(plan.d.path), name(3), 4 * DAY)
    target, result = Backups(), TargetResult("backups")
    target._uploaded = OffloadCache(str(tmp_path))
    target._url = f"s3://{bucket}/arch"
    st = p.stat()
    assert target._known_upload(st) == {"uploaded": None, "uploaded_sha256": None}
    seen: list[tuple[int, int]] = []
    assert target._upload_one(ctx_of(srv, server, bucket, creds), result,
                              client(server.endpoint, bucket), plan, p.name, [(p.name, st)],
                              True, lambda sent, total: seen.append((sent, total))) is True
    assert result.errors == [] and seen and seen[-1][0] == st.st_size
    assert target._known_upload(st) == {"uploaded": f"arch/web1/prod/{p.name}",
                                        "uploaded_sha256": sha256(p)}


def test_upload_progress_shows_each_backup_and_the_bytes_sent_of_the_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    ctx = RunContext(make_config(Path("/nonexistent")), NOW, False, on_status=shown.append)
    monkeypatch.setattr("architect_cleanup.targets.base.PROGRESS_INTERVAL", 3600.0)
    gb = 1024**3
    progress = _UploadProgress(ctx, 2, 100 * gb)  # GiB, as 1024**3, shown to 0.1
    first = progress.start(1)
    first(gb // 2, gb)  # within the interval: not shown
    progress.done = 50 * gb
    second = progress.start(2)  # a new backup: always shown
    monkeypatch.setattr("architect_cleanup.targets.base.PROGRESS_INTERVAL", 0.0)
    second(gb, 50 * gb)
    assert shown == ["backups: uploading 1/2, 0.0 of 100.0 GB",
                     "backups: uploading 2/2, 50.0 of 100.0 GB",
                     "backups: uploading 2/2, 51.0 of 100.0 GB"]


class _StopAfter(logging.Handler):
    """Asks for a stop once a log message containing *text* was emitted."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.stop = text, False

    def emit(self, record: logging.LogRecord) -> None:
        self.stop = self.stop or self.text in record.getMessage()


def test_a_stop_while_an_earlier_copy_is_read_back_interrupts_the_run(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan, good_db: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="architect_cleanup")
    p = put(good_db, Path(plan.d.path), name(3), 4 * DAY)
    c = client(server.endpoint, bucket)
    c.upload(plan.d.fd, p.name, "prod")  # the copy from an earlier run
    stopper = _StopAfter("is already at")
    logging.getLogger("architect_cleanup").addHandler(stopper)
    try:
        ctx = RunContext(config(srv, server, bucket, creds), NOW, False,  # type: ignore[arg-type]
                         should_stop=lambda: stopper.stop)
        with pytest.raises(Interrupted) as stop:
            Backups()._upload_one(ctx, TargetResult("backups"), c, plan, p.name,
                                  [(p.name, p.stat())], True, lambda sent, total: None)
    finally:
        logging.getLogger("architect_cleanup").removeHandler(stopper)
    assert str(stop.value) == "stopped on request"


def test_a_backup_gone_before_its_upload_is_named_with_the_systems_reason(
        srv: Path, server: Seaweed, bucket: str, creds: str, plan: _Plan, good_db: Path) -> None:
    p = put(good_db, Path(plan.d.path), name(3), 4 * DAY)
    st = p.stat()
    p.unlink()
    target, result = Backups(), TargetResult("backups")
    target._failures = []
    assert target._upload_one(ctx_of(srv, server, bucket, creds), result,
                              client(server.endpoint, bucket), plan, p.name, [(p.name, st)],
                              True, lambda sent, total: None) is False
    assert result.errors == [f"prod: {p.name}: upload failed, kept: No such file or directory"]


# --- Backups._upload and _upload_jobs: each backup on its own, under its name now ------------


def test_a_failed_upload_does_not_stop_the_next_backups_upload_and_progress_adds_up(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    files = [put(good_db, d, name(i), DAY * (i + 1)) for i in range(4)]
    rec = Recorder()
    real = Backups._upload_one
    refused: list[str] = []

    def first_fails(self: Backups, ctx: RunContext, result: TargetResult, c: Offload,
                    plan: _Plan, n: str, *rest: object) -> bool:
        if not refused:  # the first backup's copy is refused
            refused.append(n)
            result.error(f"prod: {n}: upload failed, kept: refused for the test")
            return False
        return real(self, ctx, result, c, plan, n, *rest)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Backups, "_upload_one", first_fails)
        stats = CleanupWorker(dry_run=False, config=config(srv, server, bucket, creds),  # type: ignore[arg-type]
                              now=NOW, only=["backups"], notifier=rec).run_cleanup()
    [other] = {files[2].name, files[3].name} - set(refused)
    assert [p.exists() for p in files[:2]] == [True, True]
    assert (d / refused[0]).exists() and not (d / other).exists()
    assert keys(server, bucket) == [other]
    assert stats.targets["backups"].detail["prod"]["uploaded"] == 1
    shown = [line for line in rec.lines if line.startswith("backups: uploading")]
    assert [s.split(",")[0] for s in shown] == ["backups: uploading 1/2",
                                                "backups: uploading 2/2"]
    assert not any("-0.0" in s for s in shown)  # the bytes done only grow


def test_upload_all_sends_nothing_twice_and_a_backup_compressed_in_the_run_goes_up_as_zst(
        srv: Path, server: Seaweed, bucket: str, creds: str, good_db: Path) -> None:
    d = srv / "data/prod/backups"
    old = put(good_db, d, name(3), 4 * DAY)
    put(good_db, d, name(0), DAY / 2)
    cfg = config(srv, server, bucket, creds, offload={"upload": "all"},
                 retention={"prod": 5}, compress={"after": "1d"})
    first = run(cfg)
    assert first.success  # type: ignore[attr-defined]
    assert keys(server, bucket) == sorted([name(0), old.name + ".zst"])
    assert first.targets["backups"].detail["prod"]["uploaded"] == 2  # type: ignore[attr-defined]
    second = run(cfg)
    assert second.success  # type: ignore[attr-defined]
    assert second.targets["backups"].detail["prod"].get("uploaded", 0) == 0  # type: ignore[attr-defined]


# --- Backups._remote_retention: a policy of rules over the bucket's copies --------------------


def test_remote_retention_applies_the_whole_policy_with_its_daily_rule_and_names_the_bucket(
        srv: Path, server: Seaweed, bucket: str, creds: str,
        caplog: pytest.LogCaptureFixture) -> None:
    (srv / "data/prod/backups").mkdir(parents=True)
    c = client(server.endpoint, bucket)
    ages = {f"architect_{i}.db": (i + 1) * DAY for i in range(5)}  # one copy a day
    for n, age in ages.items():
        ns = int((NOW_TS - age) * 1e9)
        c.client.put_object(Bucket=bucket, Key=c.key("prod", n), Body=b"copy", Metadata={
            META_MTIME: f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"})
    caplog.set_level("INFO", logger="architect_cleanup")
    stats = run(config(srv, server, bucket, creds,
                       offload={"policy": {"prod": {"keep_last": 1, "keep_daily": 3}}}))
    part = stats.targets["backups"].detail["prod"]  # type: ignore[attr-defined]
    assert (part["remote_removed"], part["remote_kept"]) == (2, 3)
    assert keys(server, bucket) == ["architect_0.db", "architect_1.db", "architect_2.db"]
    deleted = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("backups: deleted architect_")]
    assert len(deleted) == 2 and all("prod (bucket)" in m for m in deleted), deleted
