"""offload: copies in a real S3 server (SeaweedFS on loopback), verified before anyone may rely
on them; every failure leaves the local backup as it was."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from backupkit import compressible, sha256
from seaweed import ACCESS_KEY, SECRET_KEY, Seaweed, credentials_file

from architect_cleanup import offload
from architect_cleanup.offload import (
    CREDENTIAL_NAME,
    MIB,
    Credentials,
    Offload,
    OffloadError,
    Settings,
    Stopped,
    load_credentials,
    parse_url,
)

REPO = Path(__file__).resolve().parents[2]
CRED = Credentials(ACCESS_KEY, SECRET_KEY)
_bucket_ids = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    sw = Seaweed(str(tmp_path_factory.mktemp("seaweed"))).start()
    try:
        yield sw
    finally:
        sw.stop()


def settings(endpoint: str, bucket: str, **kw: object) -> Settings:
    base: dict[str, object] = {"url": f"s3://{bucket}/architect", "credentials": CRED,
                               "endpoint": endpoint, "part_size": 5 * MIB, "max_attempts": 1,
                               "connect_timeout": 3.0, "read_timeout": 20.0}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def bucket(server: Seaweed) -> str:
    name = f"backups-{next(_bucket_ids)}"
    Offload(settings(server.endpoint, name), hostname="h").client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def off(server: Seaweed, bucket: str) -> Offload:
    return Offload(settings(server.endpoint, bucket), hostname="web1")


def head(o: Offload, key: str) -> dict[str, object]:
    h: dict[str, object] = o.client.head_object(Bucket=o.location.bucket, Key=key,
                                                ChecksumMode="ENABLED")
    return h


# --- names and configuration -----------------------------------------------------------------


def test_an_s3_url_gives_the_bucket_and_the_prefix() -> None:
    assert parse_url("s3://my-bucket/a/b/") == offload.Location("my-bucket", "a/b")
    assert parse_url("s3://my-bucket") == offload.Location("my-bucket", "")
    for bad in ("http://x/y", "s3://", "s3://B/x", "s3://ab", "s3://bucket/a//b",
                "s3://bucket/../x"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_the_key_ends_in_host_env_and_file_name(off: Offload) -> None:
    assert off.key("prod", "architect_1.db.zst") == "architect/web1/prod/architect_1.db.zst"
    with pytest.raises(OffloadError):
        off.key("prod", "../x")


def test_credentials_are_read_from_an_aws_credentials_file(tmp_path: Path) -> None:
    c = load_credentials(credentials_file(str(tmp_path / "s3")))
    assert (c.access_key_id, c.secret_access_key) == (ACCESS_KEY, SECRET_KEY)
    assert SECRET_KEY not in repr(c)


def test_credentials_readable_by_others_are_refused(tmp_path: Path) -> None:
    path = credentials_file(str(tmp_path / "s3"), mode=0o640)
    with pytest.raises(OffloadError, match="mode 0640 lets group or others read it"):
        load_credentials(path)


def test_credentials_owned_by_someone_else_are_refused(tmp_path: Path) -> None:
    path = credentials_file(str(tmp_path / "s3"))
    os.chown(path, 4242, 4242)
    with pytest.raises(OffloadError, match="owned by uid 4242"):
        load_credentials(path)


def test_a_symlink_to_credentials_is_refused(tmp_path: Path) -> None:
    credentials_file(str(tmp_path / "real"))
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OffloadError, match="cannot open"):
        load_credentials(str(tmp_path / "link"))


def test_credentials_without_the_keys_are_refused_without_echoing_them(tmp_path: Path) -> None:
    p = tmp_path / "s3"
    p.write_text("[default]\naws_access_key_id = only-the-id\n")
    p.chmod(0o600)
    with pytest.raises(OffloadError, match="needs aws_access_key_id and aws_secret") as err:
        load_credentials(str(p))
    assert "only-the-id" not in str(err.value)


def test_the_units_loaded_credential_is_preferred(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    credentials_file(str(creds / CREDENTIAL_NAME), access_key="FROM-SYSTEMD", mode=0o400)
    c = load_credentials("/nonexistent/s3", environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert c.access_key_id == "FROM-SYSTEMD"


def test_without_boto3_the_error_names_the_debian_package() -> None:
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from architect_cleanup.offload import require_boto3, OffloadError\n"
            "try:\n    require_boto3()\nexcept OffloadError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "offload needs boto3: install the Debian package python3-boto3"


# --- uploading and verifying -----------------------------------------------------------------


def test_an_upload_is_verified_by_the_services_sha256_and_carries_its_metadata(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(compressible(300_000))
    os.utime(d / "a.db.zst", ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    done: list[tuple[int, int]] = []
    up = off.upload(fd, "a.db.zst", "prod", progress=lambda a, b: done.append((a, b)))
    assert (up.skipped, up.verified_by, up.sha256) == (False, "checksum", sha256(d / "a.db.zst"))
    h = head(off, up.key)
    assert h["Metadata"] == {"sha256": up.sha256, "mtime": "1700000000.000000001"}
    assert done[-1] == (300_000, 300_000)


def test_a_large_file_goes_in_parts_and_is_verified_by_the_composite_checksum(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "big.db.zst").write_bytes(compressible(12 * MIB + 7))
    done: list[int] = []
    up = off.upload(fd, "big.db.zst", "prod", progress=lambda a, _b: done.append(a))
    assert up.verified_by == "checksum"
    assert str(head(off, up.key)["ChecksumSHA256"]).endswith("-3")
    assert sorted(done)[-1] == 12 * MIB + 7 and len(done) == 3


def test_an_object_already_there_with_the_same_sha256_is_not_sent_again(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(compressible(100_000))
    first = off.upload(fd, "a.db.zst", "prod")
    modified = head(off, first.key)["LastModified"]
    again = off.upload(fd, "a.db.zst", "prod")
    assert again.skipped and again.verified_by == "checksum"
    assert head(off, first.key)["LastModified"] == modified


def test_an_object_with_another_content_is_never_replaced(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"first")
    first = off.upload(fd, "a.db.zst", "prod")
    (d / "a.db.zst").write_bytes(b"second")
    with pytest.raises(OffloadError, match="another content is already there"):
        off.upload(fd, "a.db.zst", "prod")
    assert off.read_sha256(first.key) == first.sha256


def test_a_service_that_keeps_no_checksum_gets_the_copy_read_back(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(compressible(50_000))
    # an object as a service that drops checksums leaves it: our metadata, no checksum
    body = (d / "a.db.zst").read_bytes()
    key = off.key("prod", "a.db.zst")
    off.client.put_object(Bucket=off.location.bucket, Key=key, Body=body,
                          Metadata={"sha256": sha256(d / "a.db.zst"), "mtime": "1.0"})
    assert "ChecksumSHA256" not in head(off, key)
    up = off.upload(fd, "a.db.zst", "prod")
    assert (up.skipped, up.verified_by) == (True, "re-read")


def test_list_gives_one_environment_with_its_metadata(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    for n in ("b.db.zst", "a.db.zst"):
        (d / n).write_bytes(n.encode() * 100)
        off.upload(fd, n, "prod")
    off.upload(fd, "a.db.zst", "dev")
    listed = off.list("prod", metadata=True)
    assert [o.name for o in listed] == ["a.db.zst", "b.db.zst"]
    assert listed[0].sha256 == sha256(d / "a.db.zst")
    assert listed[0].mtime_ns == (d / "a.db.zst").stat().st_mtime_ns
    assert [o.name for o in off.list("dev")] == ["a.db.zst"]


def test_delete_removes_the_object(off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"x" * 10)
    off.upload(fd, "a.db.zst", "prod")
    off.delete("prod", "a.db.zst")
    assert off.list("prod") == [] and off.find("prod", "a.db.zst") is None


def test_download_round_trips_byte_equal_with_the_mtime_and_never_overwrites(
        off: Offload, bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    (d / "big.db.zst").write_bytes(compressible(11 * MIB))
    off.upload(fd, "big.db.zst", "prod")
    out = tmp_path / "restore"
    out.mkdir()
    ofd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        off.download("prod", "big.db.zst", ofd, "big.db.zst")
        assert sha256(out / "big.db.zst") == sha256(d / "big.db.zst")
        assert (out / "big.db.zst").stat().st_mtime_ns == (d / "big.db.zst").stat().st_mtime_ns
        with pytest.raises(FileExistsError):
            off.download("prod", "big.db.zst", ofd, "big.db.zst")
        assert [p.name for p in out.iterdir()] == ["big.db.zst"]
    finally:
        os.close(ofd)


def test_a_stop_between_parts_leaves_no_object_and_no_unfinished_upload(
        off: Offload, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "big.db.zst").write_bytes(compressible(16 * MIB))
    asked = []
    with pytest.raises(Stopped):
        off.upload(fd, "big.db.zst", "prod",
                   should_stop=lambda: bool(asked.append(1)) or len(asked) > 5)
    assert off.find("prod", "big.db.zst") is None
    r = off.client.list_multipart_uploads(Bucket=off.location.bucket)
    assert r.get("Uploads", []) == []
    assert off.upload(fd, "big.db.zst", "prod").verified_by == "checksum"


# --- faults ----------------------------------------------------------------------------------


def test_a_corrupted_object_is_never_restored_and_is_found_by_a_re_read(
        server: Seaweed, bucket: str, bdir: tuple[Path, int], tmp_path: Path) -> None:
    # SeaweedFS notices the damage (its needle CRC) and stalls the GET: a read timeout; a
    # service that sends the damaged bytes fails the SHA-256 comparison instead
    off = Offload(settings(server.endpoint, bucket, read_timeout=2.0), hostname="web1")
    d, fd = bdir
    content = os.urandom(200_000)
    (d / "a.db.zst").write_bytes(content)
    off.upload(fd, "a.db.zst", "prod")
    server.flip(content[100_000:100_064])
    out = tmp_path / "restore"
    out.mkdir()
    ofd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OffloadError):
            off.download("prod", "a.db.zst", ofd, "a.db.zst")
        assert list(out.iterdir()) == []
    finally:
        os.close(ofd)
    with pytest.raises(OffloadError):
        off.verify_remote("prod", "a.db.zst")
    with pytest.raises(OffloadError):  # a re-reading upload does not trust the stored checksum
        off.upload(fd, "a.db.zst", "prod", reread=True)
    assert sha256(d / "a.db.zst") == offload.hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("stored", [True, False], ids=["checksum kept", "no checksum"])
def test_an_object_overwritten_out_of_band_fails_verification(
        off: Offload, bdir: tuple[Path, int], stored: bool) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"ours" * 1000)
    up = off.upload(fd, "a.db.zst", "prod")
    theirs = b"ourz" * 1000  # same size; the metadata lies about the content
    extra = {"ChecksumSHA256": offload._b64(offload.hashlib.sha256(theirs).digest())
             } if stored else {}
    off.client.put_object(Bucket=off.location.bucket, Key=up.key, Body=theirs,
                          Metadata={"sha256": up.sha256}, **extra)
    why = (r"the checksum the service stores \(\S+\) is not the file's" if stored
           else r"read back, its SHA-256 is \w+, not the file's")
    with pytest.raises(OffloadError, match=why):
        off.upload(fd, "a.db.zst", "prod")


def test_wrong_credentials_are_refused_by_the_server(
        server: Seaweed, bucket: str, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"x" * 100)
    wrong = Offload(settings(server.endpoint, bucket,
                             credentials=Credentials(ACCESS_KEY, "not-the-secret")),
                    hostname="web1")
    with pytest.raises(OffloadError, match="access denied"):
        wrong.upload(fd, "a.db.zst", "prod")
    assert (d / "a.db.zst").read_bytes() == b"x" * 100


def test_a_missing_bucket_is_named(server: Seaweed, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"x")
    o = Offload(settings(server.endpoint, "no-such-bucket"), hostname="web1")
    with pytest.raises(OffloadError, match="bucket no-such-bucket does not exist"):
        o.upload(fd, "a.db.zst", "prod")


def test_a_server_that_is_down_is_named_and_the_rerun_completes(
        tmp_path: Path, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(compressible(100_000))
    sw = Seaweed(str(tmp_path / "sw"))
    sw.ports = {}
    sw.start()
    try:
        o = Offload(settings(sw.endpoint, "backups"), hostname="web1")
        o.client.create_bucket(Bucket="backups")
        sw.stop()
        with pytest.raises(OffloadError, match="cannot reach"):
            o.upload(fd, "a.db.zst", "prod")
        sw.start()
        assert o.upload(fd, "a.db.zst", "prod").verified_by == "checksum"
    finally:
        sw.stop()


def test_a_server_killed_during_an_upload_fails_it_and_the_rerun_completes(
        tmp_path: Path, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "big.db.zst").write_bytes(compressible(26 * MIB))
    digest = sha256(d / "big.db.zst")
    sw = Seaweed(str(tmp_path / "sw")).start()
    try:
        o = Offload(settings(sw.endpoint, "backups", concurrency=1), hostname="web1")
        o.client.create_bucket(Bucket="backups")

        def kill_midway(done: int, _total: int) -> None:
            if done >= 10 * MIB and sw.proc is not None:
                sw.kill()

        with pytest.raises(OffloadError):
            o.upload(fd, "big.db.zst", "prod", progress=kill_midway)
        assert sha256(d / "big.db.zst") == digest
        sw.start()
        o.abort_stale_uploads("prod")
        assert o.upload(fd, "big.db.zst", "prod").verified_by == "checksum"
    finally:
        sw.stop()


_UPLOADER = textwrap.dedent("""
    import os, sys
    from architect_cleanup.offload import Credentials, Offload, Settings
    s = Settings(url=f"s3://{sys.argv[3]}/architect", endpoint=sys.argv[2],
                 credentials=Credentials(sys.argv[4], sys.argv[5]), part_size=5 << 20,
                 concurrency=1, bandwidth=8 << 20)
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    Offload(s, hostname="web1").upload(
        fd, "big.db.zst", "prod", progress=lambda a, b: print("part", a, flush=True))
    print("done", flush=True)
""")


def test_a_sigkill_during_an_upload_leaves_no_object_and_the_rerun_completes(
        server: Seaweed, off: Offload, bucket: str, bdir: tuple[Path, int]) -> None:
    d, fd = bdir
    (d / "big.db.zst").write_bytes(compressible(21 * MIB))
    digest = sha256(d / "big.db.zst")
    child = subprocess.Popen(
        [sys.executable, "-c", _UPLOADER, str(d), server.endpoint, bucket, ACCESS_KEY,
         SECRET_KEY], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("part"):
            break
    else:
        pytest.fail("the uploader sent no part")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert off.find("prod", "big.db.zst") is None  # an unfinished upload is no object
    assert sha256(d / "big.db.zst") == digest
    assert off.abort_stale_uploads("prod") == 1
    up = off.upload(fd, "big.db.zst", "prod")
    assert (up.skipped, up.verified_by) == (False, "checksum")


def test_a_download_whose_bytes_are_not_the_recorded_sha256_leaves_nothing(
        off: Offload, bdir: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = bdir
    (d / "a.db.zst").write_bytes(b"ours" * 1000)
    up = off.upload(fd, "a.db.zst", "prod")
    off.client.put_object(Bucket=off.location.bucket, Key=up.key, Body=b"ourz" * 1000,
                          Metadata={"sha256": up.sha256})  # same size, other bytes
    out = tmp_path / "restore"
    out.mkdir()
    ofd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OffloadError, match="corrupt"):
            off.download("prod", "a.db.zst", ofd, "a.db.zst")
        assert list(out.iterdir()) == []
    finally:
        os.close(ofd)


def test_the_bandwidth_limit_waits_for_the_bytes_already_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 3))
        clock[0] += s

    monkeypatch.setattr(offload.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(offload.time, "sleep", sleep)
    t = offload._Throttle(1 * MIB)  # 1 MiB/s
    t.take(2 * MIB, None)  # the first part goes at once
    t.take(2 * MIB, None)  # the second waits until the first's 2 MiB took 2 s
    assert slept == [0.5, 0.5, 0.5, 0.5] and clock[0] == 102.0
    with pytest.raises(Stopped):  # a stop is noticed while waiting
        t.take(1, lambda: True)
    offload._Throttle(None).take(10 * MIB, None)
    assert len(slept) == 4
