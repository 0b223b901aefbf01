"""Offload under the hardened unit: the package installed in a booted container, a real S3
server (SeaweedFS's ``weed``, bind-mounted from the test venv) on the container's loopback,
the documented drop-in (network + LoadCredential=) and a root-only credentials file; then
``systemctl start architect-cleanup.service`` uploads the backup retention removes, verifies
it, and only then removes it locally.

The container has its own network namespace (``--private-network``: only loopback), so the
server runs inside it, as a transient unit, and listens on 127.0.0.1 there.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import nspawn
import pytest
from harness import SHARE_INSIDE
from nspawn import Container
from seaweed import ACCESS_KEY, SECRET_KEY, weed_binary

ROOT = "/srv/architect"
WEED = "/usr/local/bin/weed"
S3_PORT = 8333
BUCKET = "architect-offload"
DROPIN = "/etc/systemd/system/architect-cleanup.service.d/offload.conf"
EXAMPLE = "/usr/share/doc/architect-cleanup/examples/offload.conf"


@pytest.fixture
def box(rootfs_dir: Path, session_dir: Path, share: Path, debs: dict[str, Path],
        request: pytest.FixtureRequest) -> Iterator[Container]:
    binds = [nspawn.Bind(share, SHARE_INSIDE), nspawn.Bind(Path(weed_binary()), WEED)]
    c = nspawn.Container(rootfs_dir, session_dir, binds=binds)
    c.start()
    try:
        harness.seed_tree(c)
        harness.apt_install(c, debs[harness.PACKAGE])
        yield c
    finally:
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
                     for w in ("setup", "call"))
        try:
            if c.running and failed:
                harness.dump_journal(c, 250)
        finally:
            c.stop()


def start_weed(box: Container) -> None:
    box.run(["mkdir", "-p", "/var/lib/weed/data"])
    box.write_file("/var/lib/weed/s3.json", json.dumps({"identities": [{
        "name": "architect-cleanup",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    box.run(["systemd-run", "--unit=weed", "--property=WorkingDirectory=/var/lib/weed",
             WEED, "mini", "-dir=/var/lib/weed/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.port={S3_PORT}", "-s3.config=/var/lib/weed/s3.json", "-webdav=false",
             "-admin.ui=false", "-master.telemetry=false", "-s3.port.iceberg=0",
             "-s3.port.lance=0", "-master.volumeSizeLimitMB=64"])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if box.run(s3py(f"c.create_bucket(Bucket={BUCKET!r})"), check=False).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError("weed did not come up: "
                         + box.run("journalctl -u weed --no-pager | tail -30", check=False).stdout)


def s3py(code: str) -> list[str]:
    """A python3 (the container's, with Debian's boto3) with ``c``, an S3 client."""
    prog = ("import boto3,json,sys\n"
            f"c = boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}', "
            f"region_name='us-east-1', aws_access_key_id={ACCESS_KEY!r}, "
            f"aws_secret_access_key={SECRET_KEY!r})\n" + code)
    return ["python3", "-c", prog]


def test_offload_through_the_hardened_unit_uploads_verifies_then_removes(
        box: Container) -> None:
    start_weed(box)
    # credentials: root-only, where the drop-in's LoadCredential= reads them
    box.run(["install", "-d", "-m", "0700", "/etc/architect-cleanup/credentials"])
    box.write_file("/etc/architect-cleanup/credentials/s3",
                   f"[default]\naws_access_key_id = {ACCESS_KEY}\n"
                   f"aws_secret_access_key = {SECRET_KEY}\n", mode=0o600)
    # keep everything but the oldest prod backup, and that one goes to the bucket first
    box.run(["mkdir", "-p", "/etc/architect-cleanup/config.d"])
    box.write_file("/etc/architect-cleanup/config.d/50-offload.toml",
                   "dry_run = false\n"
                   "[backups.retention]\nprod = 92\nqa = 20\ndev = 20\ntest = 20\n"
                   "default = 20\n"
                   f'[backups.offload]\nurl = "s3://{BUCKET}/arch"\n'
                   f'endpoint = "http://127.0.0.1:{S3_PORT}"\n')
    listing = box.sh(f"ls -1tr {ROOT}/data/prod/backups/architect_2*.db").split()
    oldest = listing[0]
    digest = box.sh(f"sha256sum {oldest}").split()[0]

    # the unit as shipped has no network: the upload fails, the backup stays, the unit fails
    rc = box.run(["systemctl", "start", "architect-cleanup.service"], check=False).returncode
    assert rc != 0 and box.exists(oldest)
    failed = box.run("journalctl -u architect-cleanup --no-pager -o cat", check=False).stdout
    assert f"{Path(oldest).name}: upload failed, kept" in failed, failed
    box.run(["systemctl", "reset-failed", "architect-cleanup.service"], check=False)

    # the documented drop-in, with the endpoint's address
    assert box.exists(EXAMPLE)
    dropin = box.read_file(EXAMPLE).replace("IPAddressAllow=192.0.2.10",
                                            "IPAddressAllow=127.0.0.1")
    box.run(["mkdir", "-p", str(Path(DROPIN).parent)])
    box.write_file(DROPIN, dropin)
    box.run(["systemctl", "daemon-reload"])
    rc = box.run(["systemctl", "start", "architect-cleanup.service"], check=False).returncode
    log = box.run("journalctl -u architect-cleanup --no-pager -o cat", check=False).stdout
    assert rc == 0, log
    name = Path(oldest).name
    assert not box.exists(oldest), log
    host = box.sh("hostname").strip()
    head = json.loads(box.sh(shlex.join(s3py(
        f"h = c.head_object(Bucket={BUCKET!r}, Key='arch/{host}/prod/{name}', "
        "ChecksumMode='ENABLED')\n"
        "print(json.dumps({'meta': h['Metadata'], 'size': h['ContentLength']}))"))))
    assert head["meta"]["sha256"] == digest
    body_sha = box.sh(shlex.join(s3py(
        f"import hashlib\nprint(hashlib.sha256(c.get_object(Bucket={BUCKET!r}, "
        f"Key='arch/{host}/prod/{name}')['Body'].read()).hexdigest())"))).strip()
    assert body_sha == digest
    assert f"uploaded {name}" in log or "verified by" in log, log
    # the newer backups are all still there, and `backups list` says the service's story
    assert box.exists(listing[1]) and box.exists(listing[-1])
    out = box.sh("architect-cleanup backups list --env prod --json")
    rows = json.loads(out)["backups"]
    assert all(r["state"] in ("good", "unverified") for r in rows)
